//! The stream info and the player page, in MistServer's shapes so that MistServer's embed
//! player and scripts read them (MistServer `src/output/output_http_internal.cpp`,
//! `getStatusJSON`; `lib/dtsc.cpp` for the track keys):
//!
//! * `/json_S.js`: JSON `{type, width, height, selver, meta: {tracks, live|vod, bframes},
//!   source: [{url, relurl, type, priority, simul_tracks, total_matches, hrn}]}`, the sources
//!   sorted by `simul_tracks`, `priority`, `total_matches` (descending) and `url`; a stream
//!   that is configured but not live gives `{"error":"Stream is offline"}`, an unknown one a
//!   404 with `{"error":"Could not retrieve stream. Sorry.", "error_guru": …}`.
//! * `/info_S.js`: the same object as JavaScript, `mistvideo['S'] = {…};`.
//! * `/S.html`: a page that picks a player for the browser (native HLS, else hls.js on the
//!   HLS output, or the one asked for with `?player=`: `hlsjs`, `hlsjs-cmaf`, `hlsjs-ll`,
//!   `dashjs`, `dashjs-mss`, `mpegts-flv`, `mpegts-ts`, `native-mp4`, `native-hls`) and logs
//!   its progress to the console as `sluice-player {json}` lines.
//! * `/hlsjs.js`, `/dashjs.js` (+ `/dashjs-mss.js`), `/mpegts.js`: hls.js 1.7.4, dash.js 5.2.1
//!   (and its Smooth Streaming module) and mpegts.js 1.8.2, vendored from the npm registry
//!   (`scripts/vendor-players.sh`) and served by Sluice itself, never from a CDN.

use serde_json::{json, Map, Value};

use dtsc::shm::{self, StreamReader};
use dtsc::{Codec, Track, TrackKind};

use crate::http::{cmaf, smooth};

/// hls.js, minified (Apache-2.0).
pub const HLS_JS: &[u8] = include_bytes!("../../player/vendor/hls.min.js");
/// dash.js with Smooth Streaming, minified (BSD-3-Clause).
pub const DASH_JS: &[u8] = include_bytes!("../../player/vendor/dash.all.min.js");
/// dash.js's Smooth Streaming module, loaded after [`DASH_JS`] (BSD-3-Clause).
pub const DASH_MSS_JS: &[u8] = include_bytes!("../../player/vendor/dash.mss.min.js");
/// mpegts.js, minified (Apache-2.0).
pub const MPEGTS_JS: &[u8] = include_bytes!("../../player/vendor/mpegts.js");
/// The player page; `{{STREAM_JSON}}` and `{{STREAM_HTML}}` are filled in.
const PAGE: &str = include_str!("../../player/page.html");

/// A vendored script by request path (`/hlsjs.js`, `/dashjs.js`, `/dashjs-mss.js`,
/// `/mpegts.js`).
pub fn script(path: &str) -> Option<&'static [u8]> {
    match path {
        "/hlsjs.js" => Some(HLS_JS),
        "/dashjs.js" => Some(DASH_JS),
        "/dashjs-mss.js" => Some(DASH_MSS_JS),
        "/mpegts.js" => Some(MPEGTS_JS),
        _ => None,
    }
}

/// MistServer's track key: `video_H264_640x360_25fps_1`, `audio_AAC_2ch_44100hz_2` (the
/// language before the index when set), `meta_CODEC_ID`.
pub fn track_key(t: &Track) -> String {
    let lang = t
        .lang
        .as_deref()
        .filter(|l| !l.is_empty() && *l != "und")
        .map(|l| format!("_{l}"))
        .unwrap_or_default();
    let codec = t.codec.as_str().to_ascii_uppercase();
    match t.kind {
        TrackKind::Video => {
            let fps = f64::from(t.fpks) / 1000.0;
            format!(
                "video_{codec}_{}x{}_{fps}fps{lang}_{}",
                t.width, t.height, t.id
            )
        }
        TrackKind::Audio => format!("audio_{codec}_{}ch_{}hz{lang}_{}", t.channels, t.rate, t.id),
        TrackKind::Meta => format!("meta_{codec}{lang}_{}", t.id),
    }
}

/// One track as MistServer's `meta.tracks` lists it. `init` is the raw init data with each
/// byte as the character of that code point, as MistServer's player reads it
/// (`init.charCodeAt(i)`).
fn track_json(t: &Track) -> Value {
    let mut o = Map::new();
    let kind = match t.kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
        TrackKind::Meta => "meta",
    };
    o.insert("type".into(), kind.into());
    o.insert("codec".into(), t.codec.as_str().to_ascii_uppercase().into());
    if let Some(c) = dtsc::dash::rfc6381_codec(t) {
        o.insert("codecstring".into(), c.into());
    }
    o.insert("trackid".into(), t.id.into());
    o.insert("idx".into(), t.id.into());
    let init: String = t.init.iter().map(|&b| char::from(b)).collect();
    o.insert("init".into(), init.into());
    o.insert("firstms".into(), t.firstms.into());
    o.insert("lastms".into(), t.lastms.into());
    o.insert("bps".into(), t.bps.into());
    o.insert("maxbps".into(), t.maxbps.max(t.bps).into());
    if let Some(l) = t.lang.as_deref().filter(|l| !l.is_empty() && *l != "und") {
        o.insert("lang".into(), l.into());
    }
    match t.kind {
        TrackKind::Video => {
            o.insert("width".into(), t.width.into());
            o.insert("height".into(), t.height.into());
            o.insert("fpks".into(), t.fpks.into());
        }
        TrackKind::Audio => {
            o.insert("rate".into(), t.rate.into());
            o.insert("channels".into(), t.channels.into());
            o.insert("size".into(), (if t.bits > 0 { t.bits } else { 16 }).into());
        }
        TrackKind::Meta => {}
    }
    Value::Object(o)
}

/// One output a player may use: MIME-like `type` (MistServer's), priority, path (no leading
/// slash; `$` is the stream name) and how many of the tracks it carries.
struct Method {
    kind: &'static str,
    hrn: &'static str,
    priority: u32,
    path: &'static str,
    carries: fn(&Track) -> bool,
}

fn flv_like(t: &Track) -> bool {
    matches!(
        (t.kind, &t.codec),
        (TrackKind::Video, Codec::H264) | (TrackKind::Audio, Codec::Aac | Codec::Mp3)
    )
}

fn cmaf_like(t: &Track) -> bool {
    matches!(
        (t.kind, &t.codec),
        (TrackKind::Video, Codec::H264 | Codec::Hevc) | (TrackKind::Audio, Codec::Aac | Codec::Mp3)
    )
}

fn smooth_like(t: &Track) -> bool {
    dtsc::smooth::QualityLevel::from_track(t).is_some()
}

const METHODS: &[Method] = &[
    Method {
        kind: "html5/application/vnd.apple.mpegurl",
        hrn: "HLS (TS)",
        priority: 9,
        path: "hls/$/index.m3u8",
        carries: flv_like,
    },
    Method {
        kind: "html5/video/mp4",
        hrn: "MP4 WebM",
        priority: 9,
        path: "$.mp4",
        carries: cmaf_like,
    },
    Method {
        kind: "html5/application/vnd.apple.mpegurl;version=7",
        hrn: "HLS (CMAF)",
        priority: 8,
        path: "cmaf/$/index.m3u8",
        carries: cmaf_like,
    },
    Method {
        kind: "dash/video/mp4",
        hrn: "DASH (CMAF)",
        priority: 8,
        path: "cmaf/$/index.mpd",
        carries: cmaf_like,
    },
    Method {
        kind: "html5/application/vnd.ms-sstr+xml",
        hrn: "Smooth Streaming (CMAF)",
        priority: 8,
        path: "cmaf/$/Manifest",
        carries: smooth_like,
    },
    Method {
        kind: "flash/11",
        hrn: "Flash Dynamic (HDS)",
        priority: 6,
        path: "dynamic/$/manifest.f4m",
        carries: flv_like,
    },
    Method {
        kind: "flash/7",
        hrn: "Flash progressive (FLV)",
        priority: 5,
        path: "$.flv",
        carries: flv_like,
    },
    Method {
        kind: "html5/video/mpeg",
        hrn: "TS HTTP progressive",
        priority: 1,
        path: "$.ts",
        carries: flv_like,
    },
    Method {
        kind: "html5/audio/aac",
        hrn: "AAC progressive",
        priority: 8,
        path: "$.aac",
        carries: |t| t.codec == Codec::Aac,
    },
    Method {
        kind: "html5/audio/mp3",
        hrn: "MP3 progressive",
        priority: 8,
        path: "$.mp3",
        carries: |t| t.codec == Codec::Mp3,
    },
];

/// Escapes a stream name for a URL path element (`+` and such stay as they are; what is not
/// a safe path byte becomes `%XX`).
fn url_element(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+!$&'()*,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stream info object of `/json_S.js`; `host` is the `Host` the request named (with the
/// port), for the absolute `url` of each source.
pub fn info(stream: &str, host: &str, r: &StreamReader, tracks: &[Track]) -> Value {
    let m = r.meta();
    let ended = m.state() == shm::STATE_ENDED;
    // The window's first and last DTS per track (the header does not keep them).
    let (from, to) = (m.first_seq(), m.write_seq());
    let mut ts = Map::new();
    for t in tracks {
        let mut j = track_json(t);
        let dts = (from..to)
            .filter_map(|s| m.packet(s))
            .filter(|e| e.track == t.id);
        let (first, last) = dts.fold((None, 0), |(f, l), e| (f.or(Some(e.dts)), e.dts.max(l)));
        if let Some(first) = first {
            j["firstms"] = first.into();
            j["lastms"] = last.into();
        }
        ts.insert(track_key(t), j);
    }
    let video = tracks.iter().find(|t| t.kind == TrackKind::Video);
    let (width, height) = match video {
        Some(v) if v.width > 0 && v.height > 0 => (v.width, v.height),
        Some(_) => (640, 480),
        None => (640, 20),
    };
    let name = url_element(stream);
    let mut sources: Vec<Value> = Vec::new();
    for method in METHODS {
        let n = tracks.iter().filter(|t| (method.carries)(t)).count();
        if n == 0 {
            continue;
        }
        // Formats with one track of a kind at a time: as many as there are kinds.
        let kinds = [TrackKind::Video, TrackKind::Audio]
            .iter()
            .filter(|k| tracks.iter().any(|t| t.kind == **k && (method.carries)(t)))
            .count();
        let relurl = method.path.replace('$', &name);
        sources.push(json!({
            "type": method.kind,
            "hrn": method.hrn,
            "priority": method.priority,
            "simul_tracks": kinds,
            "total_matches": n,
            "relurl": relurl,
            "url": format!("{}://{host}/{relurl}", crate::http::scheme()),
        }));
    }
    sources.sort_by(|a, b| {
        let key = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        key(b, "simul_tracks")
            .cmp(&key(a, "simul_tracks"))
            .then(key(b, "priority").cmp(&key(a, "priority")))
            .then(key(b, "total_matches").cmp(&key(a, "total_matches")))
            .then(a["url"].as_str().cmp(&b["url"].as_str()))
    });
    let mut meta = json!({
        "tracks": ts,
        "bframes": u8::from(has_bframes(r, tracks)),
        "version": 4,
    });
    meta[if ended { "vod" } else { "live" }] = 1.into();
    json!({
        "selver": 2,
        "type": if ended { "vod" } else { "live" },
        "width": width,
        "height": height,
        "meta": meta,
        "source": sources,
        // Segments and parts available, for scripts that poll (not in MistServer).
        "sluice": {
            "segments": crate::core::window::segments(r, tracks).len(),
            "part_target_ms": cmaf::PART_TARGET_MS,
            "smooth_streams": smooth::smooth_tracks(tracks).len(),
        },
    })
}

/// True when a video packet in the window has a composition offset (B-frames).
fn has_bframes(r: &StreamReader, tracks: &[Track]) -> bool {
    let m = r.meta();
    let video: Vec<u32> = tracks
        .iter()
        .filter(|t| t.kind == TrackKind::Video)
        .map(|t| t.id)
        .collect();
    let from = m.first_seq();
    let to = m.write_seq().min(from + 500);
    (from..to)
        .filter_map(|s| r.packet(s))
        .any(|p| video.contains(&p.track) && p.offset != 0)
}

/// The error object of a stream that is configured but not live (MistServer's text, which
/// its player polls on).
pub fn offline() -> Value {
    json!({"error": "Stream is offline"})
}

/// The error object of a stream that cannot be opened.
pub fn not_found(reason: &str) -> Value {
    json!({"error": "Could not retrieve stream. Sorry.", "error_guru": reason})
}

/// `info_S.js`: `value` as a JavaScript assignment to `mistvideo[S]`.
pub fn info_js(stream: &str, value: &Value) -> String {
    let key = Value::String(stream.to_string());
    format!(
        "// Generating info code for stream {}\nif (!mistvideo){{var mistvideo = {{}};}}\nmistvideo[{key}] = {value};\n",
        stream.replace(['\n', '\r'], " ")
    )
}

/// The player page of `stream`.
pub fn page(stream: &str) -> String {
    let js = Value::String(stream.to_string())
        .to_string()
        .replace('<', "\\u003c");
    let mut html = String::new();
    for c in stream.chars() {
        match c {
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '&' => html.push_str("&amp;"),
            '"' => html.push_str("&quot;"),
            c => html.push(c),
        }
    }
    PAGE.replace("{{STREAM_JSON}}", &js)
        .replace("{{STREAM_HTML}}", &html)
        .replace("{{STREAM_URL}}", &url_element(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_keys_follow_mistserver() {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        (v.width, v.height, v.fpks) = (640, 360, 25_000);
        assert_eq!(track_key(&v), "video_H264_640x360_25fps_1");
        v.fpks = 29_970;
        assert_eq!(track_key(&v), "video_H264_640x360_29.97fps_1");
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        (a.channels, a.rate) = (2, 44_100);
        a.lang = Some("eng".into());
        assert_eq!(track_key(&a), "audio_AAC_2ch_44100hz_eng_2");
    }

    #[test]
    fn page_and_info_js_escape_the_stream_name() {
        let p = page("a<b>\"c");
        assert!(p.contains("a&lt;b&gt;&quot;c"));
        assert!(!p.contains("a<b>"));
        assert!(p.contains("\"a\\u003cb>\\\"c\""), "{p}");
        assert!(p.contains("a%3Cb%3E%22c"));
        let js = info_js("x'y", &offline());
        assert!(js.contains("mistvideo[\"x'y\"] = {\"error\":\"Stream is offline\"};"));
        assert_eq!(script("/hlsjs.js").map(|s| s.len() > 100_000), Some(true));
        assert!(script("/nope.js").is_none());
    }
}
