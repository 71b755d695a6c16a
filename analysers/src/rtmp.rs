//! `rtmp`: what an RTMP play session delivers, sans-IO: [`RtmpWatcher`] takes the events of
//! `dtsc::rtmp::client::RtmpClient` (which does the handshake, `connect`, `createStream`
//! and `play`, RTMP spec 1.0 §7.2) with the time they arrived, the client observing every
//! message ([`ClientEvent::Message`]), and describes each message the server sent: chunk
//! stream id (§5.3.1.1), message stream id, type id and name (§7.1), timestamp (ms), size
//! (bytes), and what it says: protocol control values (§5.4: chunk size, window, peer
//! bandwidth and its limit type), the user control event (§6.2, e.g. `StreamBegin`), a
//! command's name, transaction id, `code` and AMF0 values (§7.2, e.g. `_result`,
//! `onStatus` `NetStream.Play.Start`), a data message's AMF0 values (`onMetaData`), and a
//! media message's FLV body header (codec, frame type, packet type, composition offset).
//! The TCP loop is in [`crate::live`].
//!
//! Rules checked: RTMP spec 1.0 §7.1.5 / FLV spec v10.1 §E.4.3.1: the first video message
//! is the AVC sequence header and the first coded frame after it a keyframe; per message
//! type, timestamps never go back.

use dtsc::amf0::Amf0;
use dtsc::rtmp::chunk::msg_type;
use dtsc::rtmp::client::ClientEvent;
use dtsc::rtmp::session::MediaKind;
use serde::Serialize;

use crate::flv::{audio_header, video_header, AudioHeader, VideoHeader};
use crate::report::{ReadError, Violation};

/// One message the server sent (RTMP spec 1.0 §7.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageInfo {
    /// When it arrived, ms after connecting.
    pub at_ms: u64,
    /// Chunk stream id it arrived on (§5.3.1.1).
    pub csid: u32,
    /// Message stream id (0: the NetConnection and protocol control).
    pub msid: u32,
    /// Message type id (§7.1; 1–6 protocol control §5.4 and user control §6.2).
    pub type_id: u8,
    /// Its name: `set_chunk_size` (1), `abort` (2), `ack` (3), `user_control` (4),
    /// `window_ack_size` (5), `set_peer_bandwidth` (6), `audio` (8), `video` (9),
    /// `data_amf3` (15), `shared_object_amf3` (16), `command_amf3` (17), `data` (18),
    /// `shared_object` (19), `command` (20), `aggregate` (22), else `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Message timestamp, ms.
    pub timestamp_ms: u64,
    /// Message length, bytes.
    pub size: usize,
    /// A protocol control or user control message's values (§5.4, §6.2): `chunk_size`,
    /// `csid` (abort), `sequence` (ack), `window` (bytes), `limit` (`hard`, `soft`,
    /// `dynamic`), `event` (`StreamBegin`…) with `event_id` and `stream`, `buffer_ms`,
    /// `time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<serde_json::Value>,
    /// A command's name (types 20 and 17, §7.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A command's transaction id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<f64>,
    /// The `code` of a command's information object (`NetStream.Play.Start`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A command's AMF0 values after its name and transaction id (command object, then
    /// the arguments), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// The video body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoHeader>,
    /// The audio body header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioHeader>,
    /// A data message's AMF0 values (its name and, for `onMetaData`, the object), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Why the body could not be decoded (a short control message, bad AMF0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Protocol control and user control messages (types 1–6).
    pub control_messages: u64,
    /// Command messages (types 20 and 17).
    pub command_messages: u64,
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
    /// Every message received after the handshake, in order.
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
    start: crate::flv::StartCheck,
    ended: bool,
    media: usize,
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

    /// Media messages (audio, video, data) seen.
    pub fn media_count(&self) -> usize {
        self.media
    }

    /// Takes one client event that arrived at `at_ms`. Messages are described from
    /// [`ClientEvent::Message`] (the client must observe them); [`ClientEvent::Media`] repeats
    /// the played stream's media messages and is not counted again.
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
            ClientEvent::Media { .. } => {}
            ClientEvent::Message(msg) => {
                let mut m = MessageInfo {
                    at_ms,
                    csid: msg.csid,
                    msid: msg.stream_id,
                    type_id: msg.msg_type,
                    kind: type_name(msg.msg_type),
                    timestamp_ms: msg.timestamp,
                    size: msg.payload.len(),
                    control: None,
                    command: None,
                    transaction_id: None,
                    code: None,
                    values: None,
                    video: None,
                    audio: None,
                    data: None,
                    error: None,
                };
                let media = match msg.msg_type {
                    msg_type::AUDIO => Some((MediaKind::Audio, 0)),
                    msg_type::VIDEO => Some((MediaKind::Video, 1)),
                    msg_type::DATA_AMF0 => Some((MediaKind::Data, 2)),
                    _ => None,
                };
                match msg.msg_type {
                    1..=6 => {
                        r.summary.control_messages += 1;
                        match control(msg.msg_type, &msg.payload) {
                            Ok(v) => m.control = Some(v),
                            Err(e) => m.error = Some(e),
                        }
                    }
                    msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => {
                        r.summary.command_messages += 1;
                        let body = match (msg.msg_type, msg.payload.first()) {
                            (msg_type::COMMAND_AMF3, Some(0)) => &msg.payload[1..],
                            _ => &msg.payload[..],
                        };
                        describe_command(body, &mut m);
                    }
                    _ => {}
                }
                if let Some((kind, slot)) = media {
                    self.media += 1;
                    self.media_message(kind, slot, &msg.payload, &mut m);
                }
                self.report.messages.push(m);
            }
        }
    }

    /// Counts and checks one audio, video or data message (`slot`: its timestamp order).
    fn media_message(&mut self, kind: MediaKind, slot: usize, payload: &[u8], m: &mut MessageInfo) {
        let r = &mut self.report;
        let (name, timestamp) = (m.kind, m.timestamp_ms);
        if let Some(last) = self.last_ts[slot] {
            if timestamp < last {
                r.violations.push(Violation::new(
                    R_TS,
                    format!("{name} timestamp {timestamp} ms after {last} ms"),
                ));
            }
        }
        self.last_ts[slot] = Some(timestamp);
        let s = &mut r.summary;
        match kind {
            MediaKind::Video => {
                s.video_messages += 1;
                m.video = video_header(payload);
                if let Some(v) = &m.video {
                    s.video_codec.get_or_insert_with(|| v.codec.clone());
                    let seq = v.packet_type == Some("sequence_header");
                    s.video_sequence_headers += u64::from(seq);
                    let coded = matches!(v.packet_type, None | Some("nalu" | "nalu_no_cts"));
                    s.keyframes += u64::from(coded && v.frame_type == "key");
                    if let Some(broken) = self.start.video(v) {
                        r.violations.push(Violation::new(R_SEQ, broken));
                    }
                }
            }
            MediaKind::Audio => {
                s.audio_messages += 1;
                m.audio = audio_header(payload);
                if let Some(a) = &m.audio {
                    s.audio_codec.get_or_insert_with(|| a.format.clone());
                    s.audio_sequence_headers += u64::from(a.packet_type == Some("sequence_header"));
                }
            }
            MediaKind::Data => {
                s.data_messages += 1;
                m.data = dtsc::amf0::decode_all(payload).ok().map(|v| {
                    serde_json::Value::Array(v.iter().map(crate::flv::amf0_json).collect())
                });
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

/// The name of message type `t` (RTMP spec 1.0 §5.4, §6.2, §7.1).
pub fn type_name(t: u8) -> &'static str {
    match t {
        1 => "set_chunk_size",
        2 => "abort",
        3 => "ack",
        4 => "user_control",
        5 => "window_ack_size",
        6 => "set_peer_bandwidth",
        8 => "audio",
        9 => "video",
        15 => "data_amf3",
        16 => "shared_object_amf3",
        17 => "command_amf3",
        18 => "data",
        19 => "shared_object",
        20 => "command",
        22 => "aggregate",
        _ => "unknown",
    }
}

/// The name of user control event `e` (§6.2, §7.1.7; 31 and 32 as Flash Player sends them).
fn event_name(e: u16) -> &'static str {
    match e {
        0 => "StreamBegin",
        1 => "StreamEOF",
        2 => "StreamDry",
        3 => "SetBufferLength",
        4 => "StreamIsRecorded",
        6 => "PingRequest",
        7 => "PingResponse",
        31 => "BufferEmpty",
        32 => "BufferReady",
        _ => "unknown",
    }
}

/// The values of protocol control message type `t` (1–3, 5, 6: §5.4.1–§5.4.5) or a user
/// control message (4: §6.2), as a JSON object; an error when the body is too short.
fn control(t: u8, p: &[u8]) -> Result<serde_json::Value, String> {
    use serde_json::json;
    let u32_at = |i: usize| {
        p.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let short = || format!("{} bytes is too short for {}", p.len(), type_name(t));
    let v = match t {
        4 => {
            let id = p
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(short)?;
            let mut o = json!({"event": event_name(id), "event_id": id});
            match id {
                0..=4 => o["stream"] = json!(u32_at(2).ok_or_else(short)?),
                6 | 7 => o["time"] = json!(u32_at(2).ok_or_else(short)?),
                _ => {}
            }
            if id == 3 {
                o["buffer_ms"] = json!(u32_at(6).ok_or_else(short)?);
            }
            o
        }
        6 => {
            let window = u32_at(0).ok_or_else(short)?;
            let limit = match p.get(4).ok_or_else(short)? {
                0 => "hard",
                1 => "soft",
                2 => "dynamic",
                _ => "unknown",
            };
            json!({"window": window, "limit": limit})
        }
        _ => {
            let n = u32_at(0).ok_or_else(short)?;
            let key = match t {
                1 => "chunk_size",
                2 => "csid",
                3 => "sequence",
                _ => "window",
            };
            json!({ key: n })
        }
    };
    Ok(v)
}

/// Fills a command message's name, transaction id, information `code` and other values
/// (§7.2: name, transaction id, command object, arguments) from its AMF0 body.
fn describe_command(body: &[u8], m: &mut MessageInfo) {
    let vals = match dtsc::amf0::decode_all(body) {
        Ok(v) => v,
        Err(e) => {
            m.error = Some(format!("AMF0: {e}"));
            return;
        }
    };
    m.command = vals.first().and_then(Amf0::as_str).map(str::to_string);
    m.transaction_id = vals.get(1).and_then(Amf0::as_f64);
    m.code = vals
        .iter()
        .skip(2)
        .find_map(|v| v.get("code").and_then(Amf0::as_str))
        .map(str::to_string);
    let rest: Vec<serde_json::Value> = vals.iter().skip(2).map(crate::flv::amf0_json).collect();
    m.values = Some(serde_json::Value::Array(rest));
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::rtmp::chunk::Message;

    fn msg(csid: u32, msid: u32, t: u8, timestamp: u64, payload: &[u8]) -> ClientEvent {
        ClientEvent::Message(Message {
            csid,
            msg_type: t,
            stream_id: msid,
            timestamp,
            payload: payload.to_vec(),
        })
    }

    fn amf(vals: &[Amf0]) -> Vec<u8> {
        let mut b = Vec::new();
        dtsc::amf0::encode_all(vals, &mut b);
        b
    }

    fn status(name: &str, txn: f64, code: &str) -> Vec<u8> {
        let info = Amf0::object([
            ("level", Amf0::string("status")),
            ("code", Amf0::string(code)),
        ]);
        amf(&[Amf0::string(name), Amf0::Number(txn), Amf0::Null, info])
    }

    /// A play session as the client observes it: protocol control, commands, metadata,
    /// then media (each media message also as a Media event, which is not counted twice).
    fn session() -> RtmpWatcher {
        let mut w = RtmpWatcher::new("rtmp://h/app/s");
        w.event(msg(2, 0, 5, 0, &2_500_000u32.to_be_bytes()), 1);
        w.event(msg(2, 0, 6, 0, &[0, 0x26, 0x25, 0xa0, 2]), 1);
        w.event(msg(2, 0, 1, 0, &4096u32.to_be_bytes()), 1);
        w.event(
            msg(
                3,
                0,
                20,
                0,
                &status("_result", 1.0, "NetConnection.Connect.Success"),
            ),
            2,
        );
        w.event(ClientEvent::Connected, 2);
        w.event(msg(2, 0, 4, 0, &[0, 0, 0, 0, 0, 1]), 3);
        w.event(
            msg(
                5,
                1,
                20,
                0,
                &status("onStatus", 0.0, "NetStream.Play.Start"),
            ),
            4,
        );
        w.event(ClientEvent::Playing, 4);
        let meta = amf(&[
            Amf0::string("onMetaData"),
            Amf0::object([("width", Amf0::Number(640.0))]),
        ]);
        w.event(msg(5, 1, 18, 0, &meta), 5);
        for (t, ts, body) in [
            (9, 0, &[0x17u8, 0, 0, 0, 0, 1][..]),
            (8, 0, &[0xaf, 0, 0x12, 0x10]),
            (9, 0, &[0x17, 1, 0, 0, 0, 5]),
            (8, 23, &[0xaf, 1, 5]),
        ] {
            let csid = if t == 9 { 6 } else { 4 };
            w.event(msg(csid, 1, t, ts, body), 6);
            let kind = if t == 9 {
                MediaKind::Video
            } else {
                MediaKind::Audio
            };
            w.event(
                ClientEvent::Media {
                    kind,
                    timestamp: ts,
                    payload: body.to_vec(),
                },
                6,
            );
        }
        w.event(
            msg(5, 1, 20, 0, &status("onStatus", 0.0, "NetStream.Play.Stop")),
            9,
        );
        w.event(ClientEvent::Stopped("NetStream.Play.Stop".into()), 9);
        w
    }

    #[test]
    fn describes_every_message_and_checks_order() {
        let w = session();
        assert!(w.ended());
        assert_eq!(w.media_count(), 5);
        let r = w.finish();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let s = &r.summary;
        assert_eq!(
            (s.video_messages, s.audio_messages, s.data_messages),
            (2, 2, 1)
        );
        assert_eq!((s.control_messages, s.command_messages), (4, 3));
        assert_eq!(
            (
                s.video_sequence_headers,
                s.audio_sequence_headers,
                s.keyframes
            ),
            (1, 1, 1)
        );
        assert_eq!(s.video_codec.as_deref(), Some("AVC"));
        assert_eq!(
            r.status,
            vec!["connected", "playing", "stopped: NetStream.Play.Stop"]
        );
        let m = &r.messages;
        assert_eq!(m.len(), 12);
        let heads: Vec<(u32, u32, u8, &str)> = m
            .iter()
            .map(|m| (m.csid, m.msid, m.type_id, m.kind))
            .collect();
        assert_eq!(
            heads[..7],
            [
                (2, 0, 5, "window_ack_size"),
                (2, 0, 6, "set_peer_bandwidth"),
                (2, 0, 1, "set_chunk_size"),
                (3, 0, 20, "command"),
                (2, 0, 4, "user_control"),
                (5, 1, 20, "command"),
                (5, 1, 18, "data"),
            ]
        );
        assert_eq!(heads[7], (6, 1, 9, "video"));
        assert_eq!(heads[8], (4, 1, 8, "audio"));
        assert_eq!(m[0].control, Some(serde_json::json!({"window": 2_500_000})));
        assert_eq!(
            m[1].control,
            Some(serde_json::json!({"window": 2_500_000, "limit": "dynamic"}))
        );
        assert_eq!(m[2].control, Some(serde_json::json!({"chunk_size": 4096})));
        assert_eq!(
            m[4].control,
            Some(serde_json::json!({"event": "StreamBegin", "event_id": 0, "stream": 1}))
        );
        assert_eq!(
            (
                m[3].command.as_deref(),
                m[3].transaction_id,
                m[3].code.as_deref()
            ),
            (
                Some("_result"),
                Some(1.0),
                Some("NetConnection.Connect.Success")
            )
        );
        assert_eq!(
            (m[5].command.as_deref(), m[5].code.as_deref()),
            (Some("onStatus"), Some("NetStream.Play.Start"))
        );
        assert_eq!(m[5].values.as_ref().unwrap()[1]["level"], "status");
        assert_eq!(m[6].data.as_ref().unwrap()[0], "onMetaData");
        assert_eq!(m[6].data.as_ref().unwrap()[1]["width"], 640.0);
        assert_eq!(m[7].video.as_ref().unwrap().codec, "AVC");
        assert_eq!((m[10].timestamp_ms, m[10].size), (23, 3));

        let mut w = RtmpWatcher::new("u");
        w.event(msg(6, 1, 9, 40, &[0x27, 1, 0, 0, 0, 5]), 0);
        w.event(msg(6, 1, 9, 0, &[0x27, 1, 0, 0, 0, 5]), 0);
        w.event(msg(2, 0, 1, 0, &[0, 1]), 0);
        w.event(msg(3, 0, 20, 0, &[2, 0, 9]), 0);
        let r = w.finish();
        assert!(
            r.messages[2]
                .error
                .as_deref()
                .unwrap()
                .contains("too short"),
            "{:?}",
            r.messages[2]
        );
        assert!(
            r.messages[3].error.as_deref().unwrap().starts_with("AMF0"),
            "{:?}",
            r.messages[3]
        );
        let rules: Vec<String> = r.violations.into_iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec![R_SEQ.to_string(), R_TS.to_string()]);
    }

    /// Text and JSON carry the same facts: each message on one line at -D 2 with its ids,
    /// type, timestamp, size and what it says.
    #[test]
    fn renders_messages_as_text_and_json() {
        let v = serde_json::to_value(session().finish()).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs[5]["type"], "command");
        assert_eq!(msgs[5]["type_id"], 20);
        assert_eq!(msgs[5]["command"], "onStatus");
        assert_eq!(msgs[5]["code"], "NetStream.Play.Start");
        assert_eq!(msgs[2]["control"]["chunk_size"], 4096);
        assert!(msgs[2].get("command").is_none(), "{}", msgs[2]);
        let mut text = String::new();
        crate::report::render_text(&v, 2, &mut text);
        for line in [
            "at_ms=1 csid=2 msid=0 type_id=1 type=set_chunk_size timestamp_ms=0 size=4 \
             control={\"chunk_size\":4096}",
            "at_ms=3 csid=2 msid=0 type_id=4 type=user_control timestamp_ms=0 size=6 \
             control={\"event\":\"StreamBegin\",\"event_id\":0,\"stream\":1}",
            "csid=5 msid=1 type_id=20 type=command timestamp_ms=0 size=",
            "command=onStatus transaction_id=0.0 code=NetStream.Play.Start values=[null,",
            "csid=5 msid=1 type_id=18 type=data timestamp_ms=0",
            "data=[\"onMetaData\",{\"width\":640.0}]",
            "csid=6 msid=1 type_id=9 type=video timestamp_ms=0 size=6 video=",
            "control_messages: 4",
            "command_messages: 3",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        let mut brief = String::new();
        crate::report::render_text(&v, 0, &mut brief);
        assert!(brief.contains("messages: 12 (-D 2 lists them)"), "{brief}");
    }
}
