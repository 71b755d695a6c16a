//! `flv`: an FLV file (FLV spec v10.1 Annex E) tag by tag. Tags are read by
//! `dtsc::flv::parse_tag`, `onMetaData` by `dtsc::amf0`; this module only describes the
//! audio and video tag body headers and checks the rules below.
//!
//! Rules checked (each violation names its section):
//! * §E.3 PreviousTagSize: each equals the size of the tag before it (11 + DataSize), and
//!   PreviousTagSize0 is 0.
//! * §E.4.1 Timestamp: per track (audio, video), timestamps never go back.
//! * §E.4.1 StreamID: always 0.
//! * §E.4.3.1 AVCPacketType: the first AVC video tag is the sequence header (the
//!   AVCDecoderConfigurationRecord), and the first coded frame after it is a keyframe.

use dtsc::amf0::{self, Amf0};
use dtsc::flv::{self, TagKind};
use serde::Serialize;
use serde_json::Value;

use crate::report::{ReadError, Violation};

/// The file header (§E.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Version byte (1).
    pub version: u8,
    /// TypeFlagsAudio.
    pub has_audio: bool,
    /// TypeFlagsVideo.
    pub has_video: bool,
    /// Bytes before PreviousTagSize0 (DataOffset, 9).
    pub data_offset: u32,
}

/// What a video tag body header says (§E.4.3.1 VIDEODATA, AVCVIDEOPACKET; the enhanced
/// RTMP `ExVideoTagHeader` when its top bit is set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VideoHeader {
    /// CodecID name (`AVC`, `H263`, `VP6`…) or the enhanced header's FourCC (`hvc1`…).
    pub codec: String,
    /// FrameType: `key`, `inter`, `disposable`, `generated`, `command`.
    pub frame_type: &'static str,
    /// AVCPacketType (or the enhanced PacketType): `sequence_header`, `nalu`,
    /// `end_of_sequence`, `nalu_no_cts`; absent for other codecs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_type: Option<&'static str>,
    /// CompositionTime: PTS − DTS in ms (AVC NALU and enhanced coded frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composition_offset_ms: Option<i32>,
    /// Bytes of coded data after the body header.
    pub payload_size: usize,
}

/// What an audio tag body header says (§E.4.2.1 AUDIODATA, AACAUDIODATA).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AudioHeader {
    /// SoundFormat name (`AAC`, `MP3`, `PCM`, `G711A`…).
    pub format: String,
    /// SoundRate as coded, Hz (5512, 11025, 22050, 44100; AAC always says 44100).
    pub rate_hz: u32,
    /// SoundSize, bits per sample (8 or 16).
    pub sample_bits: u8,
    /// SoundType: 1 mono, 2 stereo.
    pub channels: u8,
    /// AACPacketType: `sequence_header` or `raw`; absent for other formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_type: Option<&'static str>,
    /// Bytes of coded data after the body header.
    pub payload_size: usize,
}

/// One tag (§E.4.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagInfo {
    /// Byte offset of the tag header in the file.
    pub offset: u64,
    /// `audio`, `video` or `script`.
    pub kind: &'static str,
    /// Timestamp (with TimestampExtended), ms: the DTS of audio and video tags.
    pub timestamp_ms: u32,
    /// DataSize: bytes of the tag body.
    pub size: usize,
    /// The video body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoHeader>,
    /// The audio body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioHeader>,
    /// A script tag's first value (its name, such as `onMetaData`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// Totals over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Tags read.
    pub tags: u64,
    /// Video tags.
    pub video_tags: u64,
    /// Audio tags.
    pub audio_tags: u64,
    /// Script data tags.
    pub script_tags: u64,
    /// Video tags with FrameType key that carry coded frames (not sequence headers).
    pub keyframes: u64,
    /// Smallest and largest timestamp of audio and video tags, ms.
    pub first_ms: Option<u32>,
    /// Largest timestamp, ms.
    pub last_ms: Option<u32>,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlvReport {
    /// The file header, when it could be read.
    pub header: Option<Header>,
    /// `onMetaData`'s object (the first one), as JSON.
    pub metadata: Option<Value>,
    /// Totals.
    pub summary: Summary,
    /// Every tag in file order.
    pub tags: Vec<TagInfo>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// An AMF0 value as JSON (numbers as numbers, objects and ECMA arrays as objects, dates as
/// ms numbers, undefined as null).
pub fn amf0_json(v: &Amf0) -> Value {
    match v {
        Amf0::Number(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Amf0::Boolean(b) => Value::Bool(*b),
        Amf0::String(s) => Value::String(s.clone()),
        Amf0::Object(m) | Amf0::EcmaArray(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), amf0_json(v))).collect())
        }
        Amf0::Null | Amf0::Undefined => Value::Null,
        Amf0::StrictArray(a) => Value::Array(a.iter().map(amf0_json).collect()),
        Amf0::Date(ms, _) => amf0_json(&Amf0::Number(*ms)),
    }
}

fn s24(b: &[u8]) -> i32 {
    (i32::from_be_bytes([b[0], b[1], b[2], 0])) >> 8
}

/// How a video stream must start (FLV spec v10.1 §E.4.3.1, and enhanced RTMP's coded
/// frames alike): the sequence header first, then a keyframe. Codecs without packet types
/// (H.263, VP6) have no sequence header and are not checked. Shared by the FLV file and the
/// RTMP stream analysers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartCheck {
    /// 0: nothing seen, 1: sequence header seen, 2: decided.
    state: u8,
}

impl StartCheck {
    /// Feeds one video tag's header; returns the rule broken, if any.
    pub fn video(&mut self, v: &VideoHeader) -> Option<&'static str> {
        let packet_type = v.packet_type?;
        let seq = packet_type == "sequence_header";
        let coded = matches!(packet_type, "nalu" | "nalu_no_cts");
        match (self.state, seq, coded) {
            (0, true, _) => {
                self.state = 1;
                None
            }
            (0, false, _) => {
                self.state = 2;
                Some("the first video tag is not the sequence header")
            }
            (1, _, true) => {
                self.state = 2;
                (v.frame_type != "key").then_some("the first coded frame is not a keyframe")
            }
            _ => None,
        }
    }
}

/// Describes a video tag body header (§E.4.3.1; also RTMP video message bodies). `None` when
/// the body is too short for its header.
pub fn video_header(body: &[u8]) -> Option<VideoHeader> {
    let b0 = *body.first()?;
    let frame_type = match (b0 >> 4) & 0x7 {
        1 => "key",
        2 => "inter",
        3 => "disposable",
        4 => "generated",
        5 => "command",
        _ => "reserved",
    };
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, FrameType (3 bits), PacketType (4 bits), FourCC.
        let fourcc = body.get(1..5)?;
        let (packet_type, cts, head) = match b0 & 0x0f {
            0 => (Some("sequence_header"), None, 5),
            1 => (Some("nalu"), Some(s24(body.get(5..8)?)), 8),
            2 => (Some("end_of_sequence"), None, 5),
            3 => (Some("nalu_no_cts"), Some(0), 5),
            _ => (None, None, 5),
        };
        return Some(VideoHeader {
            codec: String::from_utf8_lossy(fourcc).into_owned(),
            frame_type,
            packet_type,
            composition_offset_ms: cts,
            payload_size: body.len().saturating_sub(head),
        });
    }
    let codec = match b0 & 0x0f {
        2 => "H263",
        3 => "ScreenVideo",
        4 => "VP6",
        5 => "VP6A",
        6 => "ScreenVideo2",
        7 => "AVC",
        12 => "HEVC",
        n => {
            return Some(VideoHeader {
                codec: format!("codec {n}"),
                frame_type,
                payload_size: body.len() - 1,
                ..VideoHeader::default()
            })
        }
    };
    if matches!(codec, "AVC" | "HEVC") {
        let head = body.get(1..5)?;
        let packet_type = match head[0] {
            0 => "sequence_header",
            1 => "nalu",
            2 => "end_of_sequence",
            _ => "reserved",
        };
        return Some(VideoHeader {
            codec: codec.to_string(),
            frame_type,
            packet_type: Some(packet_type),
            composition_offset_ms: Some(s24(&head[1..4])),
            payload_size: body.len() - 5,
        });
    }
    Some(VideoHeader {
        codec: codec.to_string(),
        frame_type,
        payload_size: body.len() - 1,
        ..VideoHeader::default()
    })
}

/// Describes an audio tag body header (§E.4.2.1; also RTMP audio message bodies). `None`
/// when the body is too short for its header.
pub fn audio_header(body: &[u8]) -> Option<AudioHeader> {
    let b0 = *body.first()?;
    let format = match b0 >> 4 {
        0 => "PCM",
        1 => "ADPCM",
        2 => "MP3",
        3 => "PCM_LE",
        4 => "Nellymoser16k",
        5 => "Nellymoser8k",
        6 => "Nellymoser",
        7 => "G711A",
        8 => "G711U",
        10 => "AAC",
        11 => "Speex",
        14 => "MP3_8k",
        15 => "DeviceSpecific",
        _ => "reserved",
    };
    let (packet_type, head) = if b0 >> 4 == 10 {
        let t = match *body.get(1)? {
            0 => "sequence_header",
            1 => "raw",
            _ => "reserved",
        };
        (Some(t), 2)
    } else {
        (None, 1)
    };
    Some(AudioHeader {
        format: format.to_string(),
        rate_hz: [5512, 11025, 22050, 44100][usize::from((b0 >> 2) & 3)],
        sample_bits: if b0 & 2 != 0 { 16 } else { 8 },
        channels: if b0 & 1 != 0 { 2 } else { 1 },
        packet_type,
        payload_size: body.len() - head,
    })
}

const RULE_PREV: &str = "FLV spec v10.1 §E.3 PreviousTagSize";
const RULE_TS: &str = "FLV spec v10.1 §E.4.1 Timestamp (per track, never back)";
const RULE_SID: &str = "FLV spec v10.1 §E.4.1 StreamID (always 0)";
const RULE_AVC: &str = "FLV spec v10.1 §E.4.3.1 AVCPacketType (sequence header, then a keyframe)";

/// Reads a whole FLV file (or as much of it as there is) into a report. Never panics.
pub fn analyse(buf: &[u8]) -> FlvReport {
    let mut r = FlvReport {
        header: None,
        metadata: None,
        summary: Summary::default(),
        tags: Vec::new(),
        violations: Vec::new(),
        error: None,
    };
    let mut pos = match flv::parse_file_header(buf) {
        Err(e) => {
            r.error = Some(ReadError::at(0, e.to_string()));
            return r;
        }
        Ok(None) => {
            r.error = Some(ReadError::at(0, "truncated FLV file header"));
            return r;
        }
        Ok(Some((h, used))) => {
            let data_offset = used as u32 - 4;
            r.header = Some(Header {
                version: h.version,
                has_audio: h.has_audio,
                has_video: h.has_video,
                data_offset,
            });
            let p0 = u32::from_be_bytes(buf[used - 4..used].try_into().unwrap_or([0; 4]));
            if p0 != 0 {
                r.violations.push(Violation::at(
                    RULE_PREV,
                    u64::from(data_offset),
                    format!("PreviousTagSize0 is {p0}, not 0"),
                ));
            }
            used
        }
    };
    let mut last_ts: [Option<u32>; 2] = [None, None];
    // 0: no AVC tag yet, 1: sequence header seen, 2: first coded frame seen.
    let mut start = StartCheck::default();
    while pos < buf.len() {
        let (tag, used) = match flv::parse_tag(&buf[pos..]) {
            Err(e) => {
                r.error = Some(ReadError::at(pos as u64, e.to_string()));
                break;
            }
            Ok(None) => {
                let need = if buf.len() - pos >= flv::TAG_HEADER_LEN {
                    let size = u32::from_be_bytes([0, buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
                    format!("{} bytes", flv::TAG_HEADER_LEN + size as usize + 4)
                } else {
                    format!("a {}-byte tag header", flv::TAG_HEADER_LEN)
                };
                r.error = Some(ReadError::at(
                    pos as u64,
                    format!("truncated tag: {need} needed, {} present", buf.len() - pos),
                ));
                break;
            }
            Ok(Some(t)) => t,
        };
        let offset = pos as u64;
        let body_len = tag.body.len();
        let prev = &buf[pos + used - 4..pos + used];
        let prev = u32::from_be_bytes(prev.try_into().unwrap_or([0; 4]));
        if prev as usize != flv::TAG_HEADER_LEN + body_len {
            r.violations.push(Violation::at(
                RULE_PREV,
                offset + used as u64 - 4,
                format!(
                    "PreviousTagSize {prev} after the tag at {offset}, which is {} bytes",
                    flv::TAG_HEADER_LEN + body_len
                ),
            ));
        }
        if buf[pos + 8..pos + 11] != [0, 0, 0] {
            r.violations
                .push(Violation::at(RULE_SID, offset + 8, "StreamID is not 0"));
        }
        let mut info = TagInfo {
            offset,
            kind: "script",
            timestamp_ms: tag.timestamp,
            size: body_len,
            video: None,
            audio: None,
            script: None,
        };
        r.summary.tags += 1;
        match tag.kind {
            TagKind::Script => {
                info.script = Some(String::new());
                r.summary.script_tags += 1;
                match amf0::decode_all(tag.body) {
                    Ok(values) => {
                        let name = values.first().and_then(Amf0::as_str).unwrap_or("");
                        info.script = Some(name.to_string());
                        if name == "onMetaData" && r.metadata.is_none() {
                            r.metadata = values.get(1).map(amf0_json);
                        }
                    }
                    Err(e) => info.script = Some(format!("(AMF0 error: {e})")),
                }
            }
            TagKind::Audio | TagKind::Video => {
                let video = tag.kind == TagKind::Video;
                let ti = usize::from(video);
                if let Some(prev) = last_ts[ti] {
                    if tag.timestamp < prev {
                        r.violations.push(Violation::at(
                            RULE_TS,
                            offset + 4,
                            format!(
                                "{} timestamp {} ms after {prev} ms",
                                if video { "video" } else { "audio" },
                                tag.timestamp
                            ),
                        ));
                    }
                }
                last_ts[ti] = Some(tag.timestamp);
                r.summary.first_ms = Some(
                    r.summary
                        .first_ms
                        .map_or(tag.timestamp, |f| f.min(tag.timestamp)),
                );
                r.summary.last_ms = Some(
                    r.summary
                        .last_ms
                        .map_or(tag.timestamp, |f| f.max(tag.timestamp)),
                );
                if video {
                    info.kind = "video";
                    r.summary.video_tags += 1;
                    info.video = video_header(tag.body);
                    if let Some(v) = &info.video {
                        let coded = matches!(v.packet_type, None | Some("nalu" | "nalu_no_cts"));
                        if coded && v.frame_type == "key" {
                            r.summary.keyframes += 1;
                        }
                        if let Some(broken) = start.video(v) {
                            r.violations.push(Violation::at(RULE_AVC, offset, broken));
                        }
                    }
                } else {
                    info.kind = "audio";
                    r.summary.audio_tags += 1;
                    info.audio = audio_header(tag.body);
                }
            }
        }
        r.tags.push(info);
        pos += used;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_starts_with_its_sequence_header_then_a_keyframe() {
        let v = |body: &[u8]| video_header(body).unwrap();
        let seq = v(&[0x17, 0, 0, 0, 0]);
        let key = v(&[0x17, 1, 0, 0, 0, 9]);
        let inter = v(&[0x27, 1, 0, 0, 0, 9]);
        let vp6 = v(&[0x24, 0, 9]);
        let run = |tags: &[&VideoHeader]| {
            let mut c = StartCheck::default();
            tags.iter().filter_map(|t| c.video(t)).collect::<Vec<_>>()
        };
        assert!(run(&[&seq, &key, &inter]).is_empty());
        assert_eq!(
            run(&[&key]),
            ["the first video tag is not the sequence header"]
        );
        assert_eq!(
            run(&[&seq, &inter]),
            ["the first coded frame is not a keyframe"]
        );
        // No packet types, no sequence header to expect (FLV VP6).
        assert!(run(&[&vp6, &vp6]).is_empty());
    }
    use proptest::prelude::*;

    fn file(tags: &[(TagKind, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        flv::write_file_header(true, true, &mut out);
        for (k, ts, body) in tags {
            flv::write_tag(*k, *ts, body, &mut out);
        }
        out
    }

    fn meta() -> Vec<u8> {
        let mut b = Vec::new();
        amf0::encode_all(
            &[
                Amf0::string("onMetaData"),
                Amf0::EcmaArray(vec![("width".into(), Amf0::Number(640.0))]),
            ],
            &mut b,
        );
        b
    }

    #[test]
    fn reads_tags_headers_and_metadata() {
        let f = file(&[
            (TagKind::Script, 0, meta()),
            (TagKind::Video, 0, vec![0x17, 0, 0, 0, 0, 1, 2]),
            (TagKind::Video, 0, vec![0x17, 1, 0, 0, 80, 9, 9, 9]),
            (TagKind::Audio, 0, vec![0xaf, 0, 0x12, 0x10]),
            (TagKind::Audio, 23, vec![0xaf, 1, 1, 2, 3]),
            (TagKind::Video, 40, vec![0x27, 1, 0xff, 0xff, 0xd8, 7]),
        ]);
        let r = analyse(&f);
        assert_eq!(r.error, None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.metadata, Some(serde_json::json!({"width": 640.0})));
        assert_eq!(r.summary.tags, 6);
        assert_eq!(r.summary.keyframes, 1);
        let v = r.tags[2].video.as_ref().unwrap();
        assert_eq!(
            (v.codec.as_str(), v.frame_type, v.packet_type),
            ("AVC", "key", Some("nalu"))
        );
        assert_eq!((v.composition_offset_ms, v.payload_size), (Some(80), 3));
        assert_eq!(
            r.tags[5].video.as_ref().unwrap().composition_offset_ms,
            Some(-40)
        );
        let a = r.tags[4].audio.as_ref().unwrap();
        assert_eq!(
            (a.format.as_str(), a.packet_type, a.payload_size),
            ("AAC", Some("raw"), 3)
        );
        assert_eq!((a.rate_hz, a.channels), (44100, 2));
        assert_eq!(r.tags[1].offset, 13 + 11 + meta().len() as u64 + 4);
    }

    #[test]
    fn flags_broken_rules() {
        let mut f = file(&[
            (TagKind::Video, 0, vec![0x27, 1, 0, 0, 0, 1]),
            (TagKind::Video, 40, vec![0x17, 1, 0, 0, 0, 1]),
            (TagKind::Video, 20, vec![0x17, 1, 0, 0, 0, 1]),
        ]);
        // Spoil the first PreviousTagSize.
        let at = 13 + 11 + 6;
        f[at + 3] ^= 1;
        let r = analyse(&f);
        let rules: Vec<&str> = r.violations.iter().map(|v| v.rule.as_str()).collect();
        assert!(rules.contains(&RULE_PREV), "{rules:?}");
        assert!(rules.contains(&RULE_TS), "{rules:?}");
        assert!(rules.contains(&RULE_AVC), "{rules:?}");
        assert_eq!(r.violations[0].offset, Some(at as u64));
    }

    #[test]
    fn truncated_file_reports_the_offset() {
        let f = file(&[
            (TagKind::Audio, 0, vec![0xaf, 1, 1, 2, 3]),
            (TagKind::Audio, 23, vec![0xaf, 1, 1, 2, 3]),
        ]);
        let cut = &f[..f.len() - 3];
        let r = analyse(cut);
        assert_eq!(r.tags.len(), 1);
        let e = r.error.unwrap();
        assert_eq!(e.offset, 13 + 11 + 5 + 4);
        assert!(e.message.contains("truncated tag"), "{}", e.message);
        assert!(analyse(b"FLX").error.is_some());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut f = b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec();
            f.extend_from_slice(&data);
            let r = analyse(&f);
            let _ = serde_json::to_value(&r).unwrap();
            let _ = analyse(&data);
        }
    }
}
