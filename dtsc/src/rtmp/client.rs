//! The client side of an RTMP connection that publishes or plays (Adobe RTMP spec 1.0 (Dec
//! 2012) §5.2 handshake, §7.2.1.1 `connect`, §7.2.1.3 `createStream`, §7.2.2.6 `publish`,
//! §7.2.2.1 `play`), sans-IO: what Sluice's pushes out speak to another server (nginx-rtmp,
//! MistServer, a CDN's ingest), and what its RTMP pull input plays from one.
//!
//! Playing ([`RtmpClient::player`]): the same handshake and `connect`, then `createStream`,
//! `play(name, -1000)` (live or recorded, from the start) and a Set Buffer Length of 1 s;
//! `NetStream.Play.Start` gives [`ClientEvent::Playing`], and each audio, video and data
//! message of the played stream a [`ClientEvent::Media`] (FLV tag bodies, FLV spec v10.1
//! §E.4.2–E.4.4). `NetStream.Play.Stop`, `…UnpublishNotify` and `…Play.Complete` give
//! [`ClientEvent::Stopped`]; `…StreamNotFound` and errors [`ClientEvent::Failed`].
//!
//! Observing: with [`RtmpClient::set_observe_messages`] on, every message received (protocol
//! control §5.4, user control §6.2, commands, data and media §7.1) is also given whole as a
//! [`ClientEvent::Message`], before the client acts on it: what an analyser prints. Off by
//! default, so the server's pull and push paths copy nothing more.
//!
//! Publishing:
//! Driving it: [`PublishClient::start`] once, then as every machine
//! ([`crate::machine::Machine`]): send what `poll_output` transmits, feed the server's bytes
//! to `handle_input`, and act on the events until [`ClientEvent::Publishing`]; then send metadata and media with
//! [`PublishClient::send_metadata`] and [`PublishClient::write_media_parts`] (zero-copy: chunk
//! headers and a [`Span`] plan, as the server side does). Keep feeding the server's bytes:
//! acknowledgements and ping responses go to the output.
//!
//! Sequence sent: C0+C1, C2, Set Chunk Size (4096), `connect` (app, tcUrl, flashVer),
//! Window Ack Size, `releaseStream` + `FCPublish` (as FFmpeg and OBS send, which some servers
//! wait for), `createStream`, then `publish(name, "live")` on the new message stream. The
//! server's `onStatus` `NetStream.Publish.Start` gives [`ClientEvent::Publishing`]; an error
//! status or a `_error` reply gives [`ClientEvent::Failed`] with its code and description.

use std::collections::VecDeque;

use super::chunk::{msg_type, ChunkDecoder, ChunkEncoder, Message, Span, MAX_MESSAGE_LEN};
use super::handshake::ClientHandshake;
use super::session::{MediaKind, SessionError, CSID_COMMAND, CSID_CONTROL, CSID_STATUS};
use crate::amf0::{self, Amf0};

/// Chunk size the client sends with, bytes.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// Window Ack Size the client announces, bytes.
pub const WINDOW: u32 = 2_500_000;

const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE: f64 = 2.0;
const TXN_FCPUBLISH: f64 = 3.0;
const TXN_CREATE: f64 = 4.0;

/// What the server told the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connect` succeeded.
    Connected,
    /// `publish` was accepted: media may be sent.
    Publishing,
    /// The server refused or failed the session: the reason (status code and description).
    Failed(String),
    /// The server ended the publish or the played stream (`NetStream.Unpublish.*`,
    /// `NetStream.Play.Stop`, `…UnpublishNotify`, an EOF or close status).
    Stopped(String),
    /// `play` was accepted (`NetStream.Play.Start`): media follows.
    Playing,
    /// One media message of the played stream: its kind, timestamp in ms (unwrapped past
    /// 2^32) and body (an FLV tag body).
    Media {
        /// Audio, video or data.
        kind: MediaKind,
        /// Timestamp, ms.
        timestamp: u64,
        /// The message body.
        payload: Vec<u8>,
    },
    /// One message as received, only with [`RtmpClient::set_observe_messages`] on: its chunk
    /// stream id (§5.3.1.1), message stream id, type id (§5.4 protocol control 1–6, §6.2 user
    /// control 4, §7.1 commands, data and media), timestamp in ms (unwrapped past 2^32) and
    /// whole body (its length is the message length, bytes). Comes before the events the
    /// message causes; an audio, video or data message of the played stream is also a
    /// [`ClientEvent::Media`].
    Message(Message),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Handshake,
    Connecting,
    Creating,
    Requested,
    Live,
    Failed,
}

/// One RTMP client connection, publishing or playing. See the module docs.
#[derive(Debug)]
pub struct RtmpClient {
    /// Plays instead of publishing.
    play: bool,
    app: String,
    tc_url: String,
    name: String,
    handshake: ClientHandshake,
    dec: ChunkDecoder,
    enc: ChunkEncoder,
    out: Vec<u8>,
    events: VecDeque<ClientEvent>,
    step: Step,
    stream_id: u32,
    received: u64,
    acked: u64,
    peer_window: u32,
    observe: bool,
}

fn status_text(info: Option<&Amf0>) -> (String, String) {
    let s = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Amf0::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("code"), s("description"))
}

/// The name Sluice's pushes use.
pub type PublishClient = RtmpClient;

impl RtmpClient {
    /// A client that will publish stream `name` (the play path's last part, query included:
    /// `key?x=y`) in application `app`, announcing `tc_url` (`rtmp://host[:port]/app`).
    /// `seed` fills the handshake's random block.
    pub fn new(tc_url: &str, app: &str, name: &str, seed: u64) -> RtmpClient {
        RtmpClient {
            play: false,
            app: app.to_string(),
            tc_url: tc_url.to_string(),
            name: name.to_string(),
            handshake: ClientHandshake::new(seed),
            dec: ChunkDecoder::new(super::chunk::DEFAULT_MAX_MESSAGE),
            enc: ChunkEncoder::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            step: Step::Handshake,
            stream_id: 0,
            received: 0,
            acked: 0,
            peer_window: WINDOW,
            observe: false,
        }
    }

    /// A client that will play stream `name` of application `app` (see [`RtmpClient::new`]).
    pub fn player(tc_url: &str, app: &str, name: &str, seed: u64) -> RtmpClient {
        RtmpClient {
            play: true,
            ..RtmpClient::new(tc_url, app, name, seed)
        }
    }

    /// Splits `rtmp://host[:port]/app[/inst]/name` into (host, port, app, name, tcUrl): the
    /// name is the last path segment (with any query), the app everything before it.
    pub fn parse_url(url: &str) -> Option<(String, u16, String, String, String)> {
        let rest = url.strip_prefix("rtmp://")?;
        let (hostport, path) = rest.split_once('/')?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 1935),
        };
        let (app, name) = path.rsplit_once('/')?;
        if host.is_empty() || app.is_empty() || name.is_empty() {
            return None;
        }
        let tc = format!("rtmp://{hostport}/{app}");
        Some((host, port, app.to_string(), name.to_string(), tc))
    }

    /// Writes C0+C1 (`time_ms` in C1). Call once.
    pub fn start(&mut self, time_ms: u32) {
        self.handshake.start(time_ms, &mut self.out);
    }

    /// Turns [`ClientEvent::Message`] on or off: a copy of every message received, protocol
    /// control and commands included (off by default).
    pub fn set_observe_messages(&mut self, on: bool) {
        self.observe = on;
    }

    /// True once the server accepted the publish.
    pub fn is_publishing(&self) -> bool {
        self.step == Step::Live
    }

    /// Takes the bytes to send to the server.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event, oldest first.
    pub(crate) fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes received from the server. After an error the connection must be closed.
    pub(crate) fn receive(&mut self, input: &[u8]) -> Result<(), SessionError> {
        self.received += input.len() as u64;
        let mut rest = input;
        if self.step == Step::Handshake {
            let p = self.handshake.push(rest, &mut self.out)?;
            rest = &rest[p.consumed..];
            if !p.done {
                return Ok(());
            }
            self.after_handshake();
        }
        if !rest.is_empty() {
            self.dec.push(rest);
        }
        while let Some(msg) = self.dec.poll()? {
            if self.observe {
                self.events.push_back(ClientEvent::Message(msg.clone()));
            }
            let media = match msg.msg_type {
                msg_type::AUDIO => Some(MediaKind::Audio),
                msg_type::VIDEO => Some(MediaKind::Video),
                msg_type::DATA_AMF0 => Some(MediaKind::Data),
                _ => None,
            };
            if let Some(kind) = media {
                if self.play && self.step == Step::Live && msg.stream_id == self.stream_id {
                    self.events.push_back(ClientEvent::Media {
                        kind,
                        timestamp: msg.timestamp,
                        payload: msg.payload,
                    });
                }
                continue;
            }
            match msg.msg_type {
                msg_type::COMMAND_AMF0 => self.on_command(&msg.payload)?,
                msg_type::COMMAND_AMF3 => {
                    let body = match msg.payload.first() {
                        Some(0) => &msg.payload[1..],
                        _ => &msg.payload[..],
                    };
                    self.on_command(body)?
                }
                msg_type::WINDOW_ACK_SIZE => {
                    if let Some(b) = msg.payload.get(..4) {
                        self.peer_window = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
                msg_type::USER_CONTROL => {
                    let p = &msg.payload;
                    // Ping request (6) gets a ping response (7) with the same time.
                    if p.len() >= 6 && u16::from_be_bytes([p[0], p[1]]) == 6 {
                        let mut r = [0u8; 6];
                        r[..2].copy_from_slice(&7u16.to_be_bytes());
                        r[2..].copy_from_slice(&p[2..6]);
                        self.control(msg_type::USER_CONTROL, &r);
                    }
                }
                _ => {}
            }
        }
        if self.peer_window > 0 && self.received - self.acked >= u64::from(self.peer_window) {
            self.acked = self.received;
            let seq = (self.received as u32).to_be_bytes();
            self.control(msg_type::ACK, &seq);
        }
        Ok(())
    }

    fn control(&mut self, typ: u8, payload: &[u8]) {
        self.enc
            .write_message(CSID_CONTROL, typ, 0, 0, payload, &mut self.out);
    }

    fn command(&mut self, csid: u32, sid: u32, values: &[Amf0]) {
        let mut body = Vec::new();
        amf0::encode_all(values, &mut body);
        self.enc
            .write_message(csid, msg_type::COMMAND_AMF0, sid, 0, &body, &mut self.out);
    }

    fn after_handshake(&mut self) {
        self.step = Step::Connecting;
        // Cannot fail: a valid size.
        let _ = self.enc.set_chunk_size(OUT_CHUNK_SIZE, &mut self.out);
        let obj = Amf0::object([
            ("app", Amf0::string(self.app.clone())),
            ("type", Amf0::string("nonprivate")),
            ("flashVer", Amf0::string("FMLE/3.0 (compatible; Sluice)")),
            ("tcUrl", Amf0::string(self.tc_url.clone())),
        ]);
        self.command(
            CSID_COMMAND,
            0,
            &[Amf0::string("connect"), Amf0::Number(TXN_CONNECT), obj],
        );
    }

    /// `createStream` (§7.2.1.3): the message stream the publish or play goes on.
    fn create_stream(&mut self) {
        self.command(
            CSID_COMMAND,
            0,
            &[
                Amf0::string("createStream"),
                Amf0::Number(TXN_CREATE),
                Amf0::Null,
            ],
        );
        self.step = Step::Creating;
    }

    fn fail(&mut self, why: String) {
        self.step = Step::Failed;
        self.events.push_back(ClientEvent::Failed(why));
    }

    fn on_command(&mut self, body: &[u8]) -> Result<(), SessionError> {
        let vals = amf0::decode_all(body)?;
        let name = vals.first().and_then(Amf0::as_str).unwrap_or("");
        let txn = vals.get(1).and_then(Amf0::as_f64).unwrap_or(0.0);
        match name {
            "_result" if txn == TXN_CONNECT && self.step == Step::Connecting && self.play => {
                self.events.push_back(ClientEvent::Connected);
                self.control(msg_type::WINDOW_ACK_SIZE, &WINDOW.to_be_bytes());
                self.create_stream();
            }
            "_result" if txn == TXN_CONNECT && self.step == Step::Connecting => {
                self.events.push_back(ClientEvent::Connected);
                self.control(msg_type::WINDOW_ACK_SIZE, &WINDOW.to_be_bytes());
                let n = Amf0::string(self.name.clone());
                self.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Amf0::string("releaseStream"),
                        Amf0::Number(TXN_RELEASE),
                        Amf0::Null,
                        n.clone(),
                    ],
                );
                self.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Amf0::string("FCPublish"),
                        Amf0::Number(TXN_FCPUBLISH),
                        Amf0::Null,
                        n,
                    ],
                );
                self.create_stream();
            }
            "_result" if txn == TXN_CREATE && self.step == Step::Creating && self.play => {
                self.stream_id = vals.get(3).and_then(Amf0::as_f64).unwrap_or(1.0) as u32;
                self.command(
                    CSID_STATUS,
                    self.stream_id,
                    &[
                        Amf0::string("play"),
                        Amf0::Number(0.0),
                        Amf0::Null,
                        Amf0::string(self.name.clone()),
                        Amf0::Number(-1000.0),
                    ],
                );
                // Set Buffer Length (user control event 3): stream id, 1000 ms.
                let mut sbl = [0u8; 10];
                sbl[..2].copy_from_slice(&3u16.to_be_bytes());
                sbl[2..6].copy_from_slice(&self.stream_id.to_be_bytes());
                sbl[6..].copy_from_slice(&1000u32.to_be_bytes());
                self.control(msg_type::USER_CONTROL, &sbl);
                self.step = Step::Requested;
            }
            "_result" if txn == TXN_CREATE && self.step == Step::Creating => {
                self.stream_id = vals.get(3).and_then(Amf0::as_f64).unwrap_or(1.0) as u32;
                self.command(
                    CSID_STATUS,
                    self.stream_id,
                    &[
                        Amf0::string("publish"),
                        Amf0::Number(0.0),
                        Amf0::Null,
                        Amf0::string(self.name.clone()),
                        Amf0::string("live"),
                    ],
                );
                self.step = Step::Requested;
            }
            "_error" if txn == TXN_CONNECT || txn == TXN_CREATE => {
                let (code, desc) = status_text(vals.get(3));
                self.fail(format!("{code}: {desc}"));
            }
            "onStatus" => {
                let (code, desc) = status_text(vals.get(3));
                let level = vals
                    .get(3)
                    .and_then(|i| i.get("level"))
                    .and_then(Amf0::as_str)
                    .unwrap_or("");
                if code == "NetStream.Publish.Start" && self.step == Step::Requested && !self.play {
                    self.step = Step::Live;
                    self.events.push_back(ClientEvent::Publishing);
                } else if code == "NetStream.Play.Start"
                    && self.step == Step::Requested
                    && self.play
                {
                    self.step = Step::Live;
                    self.events.push_back(ClientEvent::Playing);
                } else if self.play
                    && (code == "NetStream.Play.Stop"
                        || code == "NetStream.Play.Complete"
                        || code == "NetStream.Play.UnpublishNotify")
                {
                    self.events
                        .push_back(ClientEvent::Stopped(format!("{code}: {desc}")));
                } else if level == "error"
                    || code.ends_with(".BadName")
                    || code.ends_with(".Denied")
                    || code.ends_with(".Failed")
                    || code.ends_with(".StreamNotFound")
                {
                    self.fail(format!("{code}: {desc}"));
                } else if code.starts_with("NetStream.Unpublish") || code.ends_with(".Stop") {
                    self.events
                        .push_back(ClientEvent::Stopped(format!("{code}: {desc}")));
                }
            }
            // onBWDone, onFCPublish, other replies: nothing to do.
            _ => {}
        }
        Ok(())
    }

    /// `@setDataFrame("onMetaData", values…)` on the publish stream (type 18, timestamp 0),
    /// as encoders send it (FLV spec v10.1 §E.5 onMetaData).
    pub fn send_metadata(&mut self, values: &[Amf0]) -> Result<(), SessionError> {
        if self.step != Step::Live {
            return Err(SessionError::NotPlaying);
        }
        let mut body = Vec::new();
        amf0::encode(&Amf0::string("@setDataFrame"), &mut body);
        if values.first().and_then(Amf0::as_str) != Some("onMetaData") {
            amf0::encode(&Amf0::string("onMetaData"), &mut body);
        }
        amf0::encode_all(values, &mut body);
        self.enc.write_message(
            CSID_STATUS,
            msg_type::DATA_AMF0,
            self.stream_id,
            0,
            &body,
            &mut self.out,
        );
        Ok(())
    }

    /// One media message whose payload is `parts` concatenated (an FLV body header and the
    /// frame), `timestamp` in ms: chunk headers go to `hdrs`, the send order to `plan`
    /// ([`ChunkEncoder::write_message_parts`]). Send [`PublishClient::take_output`] first.
    pub fn write_media_parts(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
        hdrs: &mut Vec<u8>,
        plan: &mut Vec<Span>,
    ) -> Result<(), SessionError> {
        if self.step != Step::Live {
            return Err(SessionError::NotPlaying);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_MESSAGE_LEN {
            return Err(SessionError::MediaTooLong(len));
        }
        self.enc.write_message_parts(
            kind.csid(),
            kind.msg_type(),
            self.stream_id,
            timestamp,
            parts,
            hdrs,
            plan,
        );
        Ok(())
    }

    /// Like [`PublishClient::write_media_parts`] but copies the message into the output
    /// (sequence headers).
    pub fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
    ) -> Result<(), SessionError> {
        let (mut hdrs, mut plan) = (Vec::new(), Vec::new());
        self.write_media_parts(kind, timestamp, parts, &mut hdrs, &mut plan)?;
        super::chunk::append_plan(&plan, &hdrs, parts, &mut self.out);
        Ok(())
    }

    /// `FCUnpublish` and `deleteStream`: the polite end of a publish.
    pub fn unpublish(&mut self) {
        if self.stream_id == 0 {
            return;
        }
        let n = Amf0::string(self.name.clone());
        self.command(
            CSID_COMMAND,
            0,
            &[
                Amf0::string("FCUnpublish"),
                Amf0::Number(0.0),
                Amf0::Null,
                n,
            ],
        );
        self.command(
            CSID_COMMAND,
            0,
            &[
                Amf0::string("deleteStream"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::Number(f64::from(self.stream_id)),
            ],
        );
    }
}

impl crate::machine::Machine for RtmpClient {
    type Event = ClientEvent;
    type Error = SessionError;

    /// Bytes from the server: handshake, then chunks. RTMP runs no timers, so
    /// [`Input::Timeout`](crate::machine::Input::Timeout) changes nothing.
    fn handle_input(
        &mut self,
        _now: std::time::Instant,
        input: crate::machine::Input<'_>,
    ) -> Result<(), SessionError> {
        match input {
            crate::machine::Input::Bytes(b) => self.receive(b),
            crate::machine::Input::Timeout => Ok(()),
        }
    }

    /// The queued output (replies, and what the host's own calls added) as one
    /// `Transmit`, then the events, then `Timeout(None)`.
    fn poll_output(&mut self) -> crate::machine::Output<ClientEvent> {
        use crate::machine::Output;
        if !self.out.is_empty() {
            return Output::Transmit(self.take_output());
        }
        match self.poll_event() {
            Some(e) => Output::Event(e),
            None => Output::Timeout(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::session::{Event, ServerConfig, ServerSession};

    fn server() -> ServerSession {
        ServerSession::new(ServerConfig {
            window_ack_size: 2_500_000,
            out_chunk_size: 4096,
            max_message: 8 << 20,
            random_seed: 9,
            ..ServerConfig::default()
        })
    }

    /// Runs both sides until neither has output; returns the server's events.
    fn pump(c: &mut PublishClient, s: &mut ServerSession, split: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..50 {
            let c2s = c.take_output();
            for part in c2s.chunks(split.max(1)) {
                s.receive(part).unwrap();
            }
            while let Some(e) = s.poll_event() {
                if matches!(e, Event::Publish { .. }) {
                    s.accept_publish().unwrap();
                }
                events.push(e);
            }
            let s2c = s.take_output();
            for part in s2c.chunks(split.max(1)) {
                c.receive(part).unwrap();
            }
            if c2s.is_empty() && s2c.is_empty() {
                break;
            }
        }
        events
    }

    #[test]
    fn publishes_to_our_own_server_side_and_media_arrives() {
        for split in [1, 7, 4096] {
            let mut c = PublishClient::new("rtmp://127.0.0.1/live", "live", "cam?key=k", 3);
            let mut s = server();
            c.start(0);
            let ev = pump(&mut c, &mut s, split);
            assert!(
                ev.iter()
                    .any(|e| matches!(e, Event::Publish { name, .. } if name == "cam?key=k")),
                "{ev:?}"
            );
            assert_eq!(c.poll_event(), Some(ClientEvent::Connected));
            assert_eq!(c.poll_event(), Some(ClientEvent::Publishing));
            assert!(c.is_publishing());
            // A 10 000-byte video frame in two parts, zero-copy plan.
            let head = [0x17u8, 1, 0, 0, 0];
            let frame = vec![0xabu8; 10_000];
            let (mut hdrs, mut plan) = (Vec::new(), Vec::new());
            c.write_media_parts(
                MediaKind::Video,
                1234,
                &[&head, &frame],
                &mut hdrs,
                &mut plan,
            )
            .unwrap();
            let mut wire = c.take_output();
            for span in plan {
                match span {
                    Span::Own(r) => wire.extend_from_slice(&hdrs[r]),
                    Span::Part(0, r) => wire.extend_from_slice(&head[r]),
                    Span::Part(_, r) => wire.extend_from_slice(&frame[r]),
                }
            }
            s.receive(&wire).unwrap();
            let got: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
            let media = got
                .iter()
                .find_map(|e| match e {
                    Event::Media {
                        kind: MediaKind::Video,
                        timestamp,
                        payload,
                    } => Some((*timestamp, payload.len())),
                    _ => None,
                })
                .expect("video reached the server");
            assert_eq!(media, (1234, 10_005));
        }
    }

    #[test]
    fn plays_from_our_own_server_side_and_media_arrives() {
        for split in [1, 7, 4096] {
            let mut c = RtmpClient::player("rtmp://127.0.0.1/live", "live", "cam", 5);
            let mut s = server();
            c.start(0);
            let mut events = Vec::new();
            for _ in 0..50 {
                let c2s = c.take_output();
                for part in c2s.chunks(split) {
                    s.receive(part).unwrap();
                }
                while let Some(e) = s.poll_event() {
                    if matches!(e, Event::Play { .. }) {
                        s.accept_play().unwrap();
                    }
                    events.push(e);
                }
                let s2c = s.take_output();
                for part in s2c.chunks(split) {
                    c.receive(part).unwrap();
                }
                if c2s.is_empty() && s2c.is_empty() {
                    break;
                }
            }
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Play { name, .. } if name == "cam")),
                "{events:?}"
            );
            assert_eq!(c.poll_event(), Some(ClientEvent::Connected));
            assert_eq!(c.poll_event(), Some(ClientEvent::Playing));
            // The server sends a video frame: it arrives whole with its timestamp.
            let frame = vec![0x27u8; 9_000];
            s.send_media(MediaKind::Video, 4_000_000_000, &[&frame])
                .unwrap();
            for part in s.take_output().chunks(split) {
                c.receive(part).unwrap();
            }
            // (|RtmpSampleAccess, a data message of the play's start, comes first.)
            let video = std::iter::from_fn(|| c.poll_event()).find(|e| {
                matches!(
                    e,
                    ClientEvent::Media {
                        kind: MediaKind::Video,
                        ..
                    }
                )
            });
            match video {
                Some(ClientEvent::Media {
                    kind: MediaKind::Video,
                    timestamp,
                    payload,
                }) => {
                    assert_eq!(timestamp, 4_000_000_000);
                    assert_eq!(payload, frame);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// The bytes a server sends a player, scripted: S0+S1+S2, then Window Ack Size,
    /// Set Peer Bandwidth, Set Chunk Size (§5.4.4, §5.4.5, §5.4.1), User Control StreamBegin
    /// (§6.2), `_result` for `connect` and for `createStream` (§7.2.1), `onStatus`
    /// `NetStream.Play.Start` (§7.2.2.1), `onMetaData` (§7.1.2) and a video message (§7.1.5).
    fn scripted_play() -> Vec<u8> {
        use crate::rtmp::handshake::HANDSHAKE_SIZE;
        let mut out = vec![3u8];
        out.extend(std::iter::repeat_n(0u8, 2 * HANDSHAKE_SIZE));
        let mut enc = ChunkEncoder::new();
        let cmd = |vals: &[Amf0]| {
            let mut b = Vec::new();
            amf0::encode_all(vals, &mut b);
            b
        };
        enc.write_message(
            2,
            msg_type::WINDOW_ACK_SIZE,
            0,
            0,
            &WINDOW.to_be_bytes(),
            &mut out,
        );
        enc.write_message(
            2,
            msg_type::SET_PEER_BANDWIDTH,
            0,
            0,
            &[0, 0x26, 0x25, 0xa0, 2],
            &mut out,
        );
        enc.set_chunk_size(4096, &mut out).unwrap();
        enc.write_message(
            2,
            msg_type::USER_CONTROL,
            0,
            0,
            &[0, 0, 0, 0, 0, 1],
            &mut out,
        );
        let info = Amf0::object([("code", Amf0::string("NetConnection.Connect.Success"))]);
        let b = cmd(&[
            Amf0::string("_result"),
            Amf0::Number(TXN_CONNECT),
            Amf0::Null,
            info,
        ]);
        enc.write_message(3, msg_type::COMMAND_AMF0, 0, 0, &b, &mut out);
        let b = cmd(&[
            Amf0::string("_result"),
            Amf0::Number(TXN_CREATE),
            Amf0::Null,
            Amf0::Number(1.0),
        ]);
        enc.write_message(3, msg_type::COMMAND_AMF0, 0, 0, &b, &mut out);
        let info = Amf0::object([
            ("level", Amf0::string("status")),
            ("code", Amf0::string("NetStream.Play.Start")),
        ]);
        let b = cmd(&[
            Amf0::string("onStatus"),
            Amf0::Number(0.0),
            Amf0::Null,
            info,
        ]);
        enc.write_message(5, msg_type::COMMAND_AMF0, 1, 0, &b, &mut out);
        let b = cmd(&[
            Amf0::string("onMetaData"),
            Amf0::object([("width", Amf0::Number(640.0))]),
        ]);
        enc.write_message(5, msg_type::DATA_AMF0, 1, 0, &b, &mut out);
        enc.write_message(6, msg_type::VIDEO, 1, 40, &[0x17, 1, 0, 0, 0, 9], &mut out);
        out
    }

    #[test]
    fn observing_gives_every_message_with_its_ids_and_body() {
        for split in [1, 5, 1 << 16] {
            let mut c = RtmpClient::player("rtmp://h/live", "live", "s", 2);
            c.set_observe_messages(true);
            c.start(0);
            for part in scripted_play().chunks(split) {
                c.receive(part).unwrap();
            }
            let ev: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
            let msgs: Vec<&Message> = ev
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Message(m) => Some(m),
                    _ => None,
                })
                .collect();
            let ids: Vec<(u32, u32, u8, u64, usize)> = msgs
                .iter()
                .map(|m| {
                    (
                        m.csid,
                        m.stream_id,
                        m.msg_type,
                        m.timestamp,
                        m.payload.len(),
                    )
                })
                .collect();
            assert_eq!(
                ids[..4],
                [
                    (2, 0, 5, 0, 4),
                    (2, 0, 6, 0, 5),
                    (2, 0, 1, 0, 4),
                    (2, 0, 4, 0, 6)
                ]
            );
            assert_eq!(
                ids[4..].iter().map(|i| (i.0, i.1, i.2)).collect::<Vec<_>>(),
                [(3, 0, 20), (3, 0, 20), (5, 1, 20), (5, 1, 18), (6, 1, 9)]
            );
            assert_eq!(ids[8].3, 40);
            let commands: Vec<(String, f64)> = msgs
                .iter()
                .filter(|m| m.msg_type == msg_type::COMMAND_AMF0)
                .map(|m| {
                    let v = amf0::decode_all(&m.payload).unwrap();
                    (v[0].as_str().unwrap().to_string(), v[1].as_f64().unwrap())
                })
                .collect();
            assert_eq!(
                commands,
                [
                    ("_result".to_string(), TXN_CONNECT),
                    ("_result".to_string(), TXN_CREATE),
                    ("onStatus".to_string(), 0.0)
                ]
            );
            let status = amf0::decode_all(&msgs[6].payload).unwrap();
            assert_eq!(
                status[3].get("code").and_then(Amf0::as_str),
                Some("NetStream.Play.Start")
            );
            // Each message comes before what it causes: Connected after connect's `_result`,
            // Playing after the `onStatus`, Media after its own Message.
            let pos = |f: &dyn Fn(&ClientEvent) -> bool| ev.iter().position(f).unwrap();
            let connected = pos(&|e| *e == ClientEvent::Connected);
            let playing = pos(&|e| *e == ClientEvent::Playing);
            let video = pos(&|e| {
                matches!(
                    e,
                    ClientEvent::Media {
                        kind: MediaKind::Video,
                        ..
                    }
                )
            });
            let msg_at = |i: usize| pos(&|e| e == &ClientEvent::Message(msgs[i].clone()));
            assert!(
                msg_at(4) < connected && msg_at(6) < playing && msg_at(8) < video,
                "{ev:?}"
            );
            // Off (the default): the same bytes give no Message events.
            let mut c = RtmpClient::player("rtmp://h/live", "live", "s", 2);
            c.start(0);
            c.receive(&scripted_play()).unwrap();
            let ev: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
            assert!(
                !ev.iter().any(|e| matches!(e, ClientEvent::Message(_))),
                "{ev:?}"
            );
            assert!(ev.contains(&ClientEvent::Playing), "{ev:?}");
        }
    }

    #[test]
    fn a_refusal_is_an_event_with_its_reason() {
        let mut c = PublishClient::new("rtmp://h/live", "live", "x", 1);
        let mut s = server();
        c.start(0);
        for _ in 0..10 {
            let o = c.take_output();
            s.receive(&o).unwrap();
            while let Some(e) = s.poll_event() {
                if matches!(e, Event::Publish { .. }) {
                    s.reject_publish("NetStream.Publish.BadName", "taken")
                        .unwrap();
                }
            }
            let o = s.take_output();
            c.receive(&o).unwrap();
        }
        let ev: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(
            ev.iter()
                .any(|e| matches!(e, ClientEvent::Failed(w) if w.contains("BadName"))),
            "{ev:?}"
        );
        assert!(!c.is_publishing());
    }

    proptest::proptest! {
        /// Whatever a server sends after the handshake, the client answers without
        /// panicking, and what it writes is a chunk stream.
        #[test]
        fn any_server_bytes_are_handled(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), piece in 1usize..64) {
            let mut c = PublishClient::new("rtmp://h/live", "live", "s", 1);
            c.start(0);
            let mut hs = vec![3u8];
            hs.extend(std::iter::repeat_n(0u8, 2 * crate::rtmp::handshake::HANDSHAKE_SIZE));
            c.receive(&hs).unwrap();
            let mut out = c.take_output();
            for part in input.chunks(piece) {
                if c.receive(part).is_err() {
                    break;
                }
                while c.poll_event().is_some() {}
                out.extend(c.take_output());
            }
            let skip = 1 + 2 * crate::rtmp::handshake::HANDSHAKE_SIZE;
            let mut dec = ChunkDecoder::new(1 << 20);
            dec.push(&out[skip.min(out.len())..]);
            while dec.poll().unwrap().is_some() {}
        }
    }

    #[test]
    fn urls_split_into_app_and_name() {
        assert_eq!(
            PublishClient::parse_url("rtmp://127.0.0.1:1936/live/cam"),
            Some((
                "127.0.0.1".into(),
                1936,
                "live".into(),
                "cam".into(),
                "rtmp://127.0.0.1:1936/live".into()
            ))
        );
        assert_eq!(
            PublishClient::parse_url("rtmp://h/app/inst/k?x=1").map(|u| (u.2, u.3)),
            Some(("app/inst".into(), "k?x=1".into()))
        );
        assert!(PublishClient::parse_url("rtmp://h/onlyname").is_none());
        assert!(PublishClient::parse_url("http://h/a/b").is_none());
    }
}
