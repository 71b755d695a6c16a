//! `rtmp`: what an RTMP play session delivers, sans-IO: [`RtmpWatcher`] takes the events of
//! `dtsc::rtmp::client::RtmpClient` (which does the handshake, `connect`, `createStream`
//! and `play`, RTMP spec 1.0 §7.2) with the time they arrived, and describes each media
//! message (type, timestamp, size, and its FLV body header: codec, frame type, packet
//! type, composition offset). The TCP loop is in [`crate::live`].
//!
//! Rules checked: RTMP spec 1.0 §7.1.5 / FLV spec v10.1 §E.4.3.1: the first video message
//! is the AVC sequence header and the first coded frame after it a keyframe; per message
//! type, timestamps never go back.

use dtsc::rtmp::client::ClientEvent;
use dtsc::rtmp::session::MediaKind;
use serde::Serialize;

use crate::flv::{audio_header, video_header, AudioHeader, VideoHeader};
use crate::report::{ReadError, Violation};

/// One media message (RTMP message types 8, 9, 18).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageInfo {
    /// When it arrived, ms after connecting.
    pub at_ms: u64,
    /// `audio` (type 8), `video` (9) or `data` (18).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Message timestamp, ms.
    pub timestamp_ms: u64,
    /// Message length, bytes.
    pub size: usize,
    /// The video body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoHeader>,
    /// The audio body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioHeader>,
    /// A data message's AMF0 values (its name and, for `onMetaData`, the object), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Video messages.
    pub video_messages: u64,
    /// Audio messages.
    pub audio_messages: u64,
    /// Data messages.
    pub data_messages: u64,
    /// Video sequence headers (AVCDecoderConfigurationRecord…).
    pub video_sequence_headers: u64,
    /// Audio sequence headers (AudioSpecificConfig).
    pub audio_sequence_headers: u64,
    /// Video keyframes (coded frames).
    pub keyframes: u64,
    /// Video codec of the first video message.
    pub video_codec: Option<String>,
    /// Audio format of the first audio message.
    pub audio_codec: Option<String>,
}

/// The report of the `rtmp` kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RtmpReport {
    /// The URL played.
    pub url: String,
    /// Session events in order (`connected`, `playing`, `stopped: …`, `failed: …`).
    pub status: Vec<String>,
    /// Totals.
    pub summary: Summary,
    /// Every media message.
    pub messages: Vec<MessageInfo>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Why it stopped early.
    pub error: Option<ReadError>,
}

const R_SEQ: &str = "FLV spec v10.1 §E.4.3.1 (RTMP video: sequence header first, then a keyframe)";
const R_TS: &str = "RTMP spec 1.0 §5.3.1.2 timestamps (never back per message type)";

/// Collects the events of an RTMP play session (sans-IO). See the module docs.
#[derive(Debug, Default)]
pub struct RtmpWatcher {
    report: RtmpReport,
    last_ts: [Option<u64>; 3],
    avc_state: u8,
    ended: bool,
}

impl RtmpWatcher {
    /// A watcher of `url`.
    pub fn new(url: &str) -> RtmpWatcher {
        RtmpWatcher {
            report: RtmpReport {
                url: url.to_string(),
                ..RtmpReport::default()
            },
            ..RtmpWatcher::default()
        }
    }

    /// True once the server stopped or failed the session.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Media messages seen.
    pub fn media_count(&self) -> usize {
        self.report.messages.len()
    }

    /// Takes one client event that arrived at `at_ms`.
    pub fn event(&mut self, ev: ClientEvent, at_ms: u64) {
        let r = &mut self.report;
        match ev {
            ClientEvent::Connected => r.status.push("connected".into()),
            ClientEvent::Publishing => r.status.push("publishing".into()),
            ClientEvent::Playing => r.status.push("playing".into()),
            ClientEvent::Stopped(s) => {
                r.status.push(format!("stopped: {s}"));
                self.ended = true;
            }
            ClientEvent::Failed(s) => {
                r.status.push(format!("failed: {s}"));
                r.error = Some(ReadError::at(
                    0,
                    format!("the server failed the session: {s}"),
                ));
                self.ended = true;
            }
            ClientEvent::Media {
                kind,
                timestamp,
                payload,
            } => {
                let (name, slot) = match kind {
                    MediaKind::Audio => ("audio", 0),
                    MediaKind::Video => ("video", 1),
                    MediaKind::Data => ("data", 2),
                };
                if let Some(last) = self.last_ts[slot] {
                    if timestamp < last {
                        r.violations.push(Violation::new(
                            R_TS,
                            format!("{name} timestamp {timestamp} ms after {last} ms"),
                        ));
                    }
                }
                self.last_ts[slot] = Some(timestamp);
                let mut m = MessageInfo {
                    at_ms,
                    kind: name,
                    timestamp_ms: timestamp,
                    size: payload.len(),
                    video: None,
                    audio: None,
                    data: None,
                };
                let s = &mut r.summary;
                match kind {
                    MediaKind::Video => {
                        s.video_messages += 1;
                        m.video = video_header(&payload);
                        if let Some(v) = &m.video {
                            s.video_codec.get_or_insert_with(|| v.codec.clone());
                            let seq = v.packet_type == Some("sequence_header");
                            s.video_sequence_headers += u64::from(seq);
                            let coded =
                                matches!(v.packet_type, None | Some("nalu" | "nalu_no_cts"));
                            s.keyframes += u64::from(coded && v.frame_type == "key");
                            match (self.avc_state, seq, coded) {
                                (0, true, _) => self.avc_state = 1,
                                (0, false, _) => {
                                    r.violations.push(Violation::new(
                                        R_SEQ,
                                        "the first video message is not a sequence header",
                                    ));
                                    self.avc_state = 2;
                                }
                                (1, _, true) => {
                                    if v.frame_type != "key" {
                                        r.violations.push(Violation::new(
                                            R_SEQ,
                                            "the first coded frame is not a keyframe",
                                        ));
                                    }
                                    self.avc_state = 2;
                                }
                                _ => {}
                            }
                        }
                    }
                    MediaKind::Audio => {
                        s.audio_messages += 1;
                        m.audio = audio_header(&payload);
                        if let Some(a) = &m.audio {
                            s.audio_codec.get_or_insert_with(|| a.format.clone());
                            s.audio_sequence_headers +=
                                u64::from(a.packet_type == Some("sequence_header"));
                        }
                    }
                    MediaKind::Data => {
                        s.data_messages += 1;
                        m.data = dtsc::amf0::decode_all(&payload).ok().map(|v| {
                            serde_json::Value::Array(v.iter().map(crate::flv::amf0_json).collect())
                        });
                    }
                }
                r.messages.push(m);
            }
        }
    }

    /// Records an error that ended the session (a socket error, a protocol error).
    pub fn fail(&mut self, message: String) {
        self.report.error.get_or_insert(ReadError::at(0, message));
        self.ended = true;
    }

    /// The report.
    pub fn finish(self) -> RtmpReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(kind: MediaKind, timestamp: u64, payload: &[u8]) -> ClientEvent {
        ClientEvent::Media {
            kind,
            timestamp,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn describes_messages_and_checks_order() {
        let mut w = RtmpWatcher::new("rtmp://h/app/s");
        w.event(ClientEvent::Connected, 0);
        w.event(ClientEvent::Playing, 5);
        w.event(media(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 1]), 6);
        w.event(media(MediaKind::Audio, 0, &[0xaf, 0, 0x12, 0x10]), 6);
        w.event(media(MediaKind::Video, 0, &[0x17, 1, 0, 0, 0, 5]), 7);
        w.event(media(MediaKind::Audio, 23, &[0xaf, 1, 5]), 8);
        w.event(ClientEvent::Stopped("NetStream.Play.Stop".into()), 9);
        assert!(w.ended());
        let r = w.finish();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.summary.video_messages, 2);
        assert_eq!(
            (
                r.summary.video_sequence_headers,
                r.summary.audio_sequence_headers,
                r.summary.keyframes
            ),
            (1, 1, 1)
        );
        assert_eq!(r.summary.video_codec.as_deref(), Some("AVC"));
        assert_eq!(
            r.status,
            vec!["connected", "playing", "stopped: NetStream.Play.Stop"]
        );
        let mut w = RtmpWatcher::new("u");
        w.event(media(MediaKind::Video, 40, &[0x27, 1, 0, 0, 0, 5]), 0);
        w.event(media(MediaKind::Video, 0, &[0x27, 1, 0, 0, 0, 5]), 0);
        let rules: Vec<String> = w.finish().violations.into_iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![R_SEQ.to_string(), R_TS.to_string()]);
    }
}
