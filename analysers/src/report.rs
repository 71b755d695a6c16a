//! What every report shares: rule violations, the read error that stopped a walk, and the
//! one text renderer every kind prints through (so text and `--json` carry the same facts).

use serde::Serialize;
use serde_json::Value;

/// A rule the input breaks: `rule` names the spec and section (for example
/// `"ISO/IEC 13818-1 §2.4.3.3 continuity_counter"`), `offset` is the input byte where it
/// was seen (when it has one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The spec, section and field or rule broken.
    pub rule: String,
    /// Byte offset in the input, when the violation has a place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// What was found.
    pub message: String,
}

impl Violation {
    /// A violation of `rule` at byte `offset`.
    pub fn at(rule: &str, offset: u64, message: impl Into<String>) -> Violation {
        Violation {
            rule: rule.to_string(),
            offset: Some(offset),
            message: message.into(),
        }
    }

    /// A violation of `rule` with no single place in the input.
    pub fn new(rule: &str, message: impl Into<String>) -> Violation {
        Violation {
            rule: rule.to_string(),
            offset: None,
            message: message.into(),
        }
    }
}

/// Why reading stopped before the end of the input: the byte offset where the bad or
/// missing bytes start, and what was expected there. Everything before it is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadError {
    /// Byte offset in the input.
    pub offset: u64,
    /// What was expected or wrong there.
    pub message: String,
}

impl ReadError {
    /// An error at byte `offset`.
    pub fn at(offset: u64, message: impl Into<String>) -> ReadError {
        ReadError {
            offset,
            message: message.into(),
        }
    }
}

/// Names of list members holding one entry per item (tag, packet, NAL unit…): printed only
/// from detail level 2 on, and as one line per entry.
const ITEM_LISTS: &[&str] = &[
    "tags",
    "packets",
    "pes",
    "pcr",
    "access_units",
    "nal_units",
    "frames",
    "messages",
    "boxes",
    "fragments",
    "keys",
    "segments",
    "reloads",
];

/// Renders a report (as its JSON value) as text: scalars as `name: value`, objects
/// indented, lists of objects one line per entry (`name=value …`; an entry with a `depth`
/// member is indented by it, as MP4 boxes). Item lists ([`ITEM_LISTS`]) only at `detail` ≥ 2.
pub fn render_text(v: &Value, detail: u8, out: &mut String) {
    render_members(v, detail, 0, out);
}

fn render_members(v: &Value, detail: u8, indent: usize, out: &mut String) {
    let Value::Object(map) = v else {
        out.push_str(&format!("{}{}\n", " ".repeat(indent), scalar(v)));
        return;
    };
    let pad = " ".repeat(indent);
    for (k, val) in map {
        match val {
            Value::Null => {}
            Value::Object(_) => {
                out.push_str(&format!("{pad}{k}:\n"));
                render_members(val, detail, indent + 2, out);
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                if ITEM_LISTS.contains(&k.as_str()) && detail < 2 {
                    out.push_str(&format!("{pad}{k}: {} (-D 2 lists them)\n", items.len()));
                    continue;
                }
                out.push_str(&format!("{pad}{k} ({}):\n", items.len()));
                for item in items {
                    let depth = item.get("depth").and_then(Value::as_u64).unwrap_or(0) as usize;
                    out.push_str(&" ".repeat(indent + 2 + 2 * depth));
                    out.push_str(&one_line(item));
                    out.push('\n');
                }
            }
            _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
        }
    }
}

/// An object's members on one line, `name=value`, nested values as compact JSON.
fn one_line(v: &Value) -> String {
    match v {
        Value::Object(map) => map
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "depth")
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => scalar(v),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// True when a report (as its JSON value) lists violations or a read error: what makes
/// `--validate` exit 1.
pub fn has_problems(v: &Value) -> bool {
    let violations = v
        .get("violations")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let error = v.get("error").is_some_and(|e| !e.is_null());
    violations || error
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_scalars_objects_and_lists() {
        let v = json!({"kind":"flv","header":{"version":1},"tags":[{"kind":"video","size":5}],
            "violations":[{"rule":"R","message":"m"}]});
        let mut s = String::new();
        render_text(&v, 0, &mut s);
        assert!(s.contains("kind: flv\nheader:\n  version: 1\n"), "{s}");
        assert!(s.contains("tags: 1 (-D 2 lists them)"), "{s}");
        assert!(s.contains("violations (1):\n  rule=R message=m"), "{s}");
        let mut s = String::new();
        render_text(&v, 2, &mut s);
        assert!(s.contains("tags (1):\n  kind=video size=5"), "{s}");
        assert!(has_problems(&v));
        assert!(!has_problems(&json!({"violations":[], "error": null})));
    }
}

/// A track as the `dtsc` readers announce it (the DTSC header's members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    /// Track id.
    pub id: u32,
    /// `video`, `audio` or `meta`.
    pub kind: String,
    /// DTSC codec name (`H264`, `HEVC`, `AAC`, `MP3`…).
    pub codec: String,
    /// Bytes of init data (avcC, hvcC, AudioSpecificConfig).
    pub init_size: usize,
    /// Video width, pixels.
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u32,
    /// Video height, pixels.
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u32,
    /// Frames per 1000 s.
    #[serde(skip_serializing_if = "is_zero")]
    pub fpks: u32,
    /// Audio sample rate, Hz.
    #[serde(skip_serializing_if = "is_zero")]
    pub rate: u32,
    /// Audio channels.
    #[serde(skip_serializing_if = "is_zero")]
    pub channels: u32,
    /// Language (ISO 639-2), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl From<&dtsc::Track> for TrackInfo {
    fn from(t: &dtsc::Track) -> TrackInfo {
        TrackInfo {
            id: t.id,
            kind: t.kind.as_str().to_string(),
            codec: t.codec.as_str().to_string(),
            init_size: t.init.len(),
            width: t.width,
            height: t.height,
            fpks: t.fpks,
            rate: t.rate,
            channels: t.channels,
            lang: t.lang.clone(),
        }
    }
}

/// One packet (access unit) of a track as a `dtsc` reader delivers it, times in ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessUnit {
    /// Track id.
    pub track: u32,
    /// Decode timestamp, ms.
    pub dts_ms: u64,
    /// Presentation timestamp (DTS + composition offset), ms.
    pub pts_ms: i64,
    /// Keyframe (an IDR/IRAP picture; audio per the reader).
    pub keyframe: bool,
    /// Payload bytes (AVCC for video, raw frames for audio).
    pub size: usize,
    /// Byte position in the input where it starts (where the reader knows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl AccessUnit {
    /// The access unit of a `dtsc` packet; `offset` from its `bpos` when `with_offset`.
    pub fn of(p: &dtsc::PacketRef, with_offset: bool) -> AccessUnit {
        AccessUnit {
            track: p.track,
            dts_ms: p.dts,
            pts_ms: p.dts as i64 + p.offset,
            keyframe: p.keyframe,
            size: p.data.len(),
            offset: with_offset.then_some(p.bpos),
        }
    }
}
