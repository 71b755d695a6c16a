//! The server side of one RTMP connection (Adobe RTMP spec 1.0 (Dec 2012) §5–§7), sans-IO:
//! handshake, chunk stream, protocol control, NetConnection and NetStream commands, for both
//! publishers and players.
//!
//! Driving it: as every machine ([`crate::machine::Machine`]): feed received bytes with
//! `handle_input`, then drain `poll_output` (bytes to send to the peer, then events). The host
//! answers [`Event::Publish`] with [`ServerSession::accept_publish`] /
//! [`ServerSession::reject_publish`] and [`Event::Play`] with [`ServerSession::accept_play`] /
//! [`ServerSession::reject_play_not_found`]; those append to the same output.
//!
//! Output ordering: every method that sends appends to one internal buffer, except
//! [`ServerSession::write_media_parts`], which writes headers and a [`Span`] plan into the
//! caller's buffers. Write what [`ServerSession::take_output`] returns before the bytes of a
//! plan made after it, so that chunk size changes and headers reach the peer in order.
//!
//! Chunk streams used when sending: 2 protocol control, 3 NetConnection command replies,
//! 5 NetStream status and data messages, 4 audio, 6 video.
//!
//! Hostile peers: until `connect` succeeds the chunk decoder takes at most 4 chunk streams,
//! messages of 64 KiB and 128 KiB held across partly received messages, and the only command
//! decoded past its name is `connect`; until the host accepts a publish or play, 8 chunk
//! streams, 64 KiB messages and 256 KiB held; then [`ServerConfig::max_message`], 64 chunk
//! streams and 16 MiB held (see [`Limits`]). Media sent before the publish is answered must
//! fit in 64 KiB messages (ffmpeg, OBS and GStreamer wait for `NetStream.Publish.Start`).
//!
//! Replies the peer's input causes (handshake, acknowledgements, ping responses, command
//! answers) count until the host takes the output; past [`ServerConfig::max_queued_replies`]
//! bytes, `handle_input` fails with [`SessionError::OutputBacklog`], so a
//! peer that sends without reading is dropped instead of buffered for. A host that keeps its
//! own send buffer should leave the session's output where it is while that buffer is not
//! empty ([`ServerSession::queued_output`] says how much waits there).

use std::collections::VecDeque;

use thiserror::Error;

use super::chunk::{
    msg_type, ChunkDecoder, ChunkEncoder, ChunkError, Limits, Message, Phase, Span,
    DEFAULT_MAX_MESSAGE, MAX_CHUNK_SIZE, MAX_MESSAGE_LEN,
};
use super::handshake::{Handshake, HandshakeError};
use crate::amf0::{self, Amf0, Amf0Error};

/// Chunk stream for protocol control and user control messages (§5.4, §6.2).
pub const CSID_CONTROL: u32 = 2;
/// Chunk stream for NetConnection command replies.
pub const CSID_COMMAND: u32 = 3;
/// Chunk stream for audio sent to players.
pub const CSID_AUDIO: u32 = 4;
/// Chunk stream for NetStream onStatus and data (metadata) messages.
pub const CSID_STATUS: u32 = 5;
/// Chunk stream for video sent to players.
pub const CSID_VIDEO: u32 = 6;

/// Default bound on the replies the peer's input may queue before the host takes the
/// output: 1 MiB, bytes (see [`ServerConfig::max_queued_replies`]).
pub const DEFAULT_MAX_QUEUED_REPLIES: usize = 1 << 20;

/// User control event types (§6.2, §7.1.7).
mod uc {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// Settings of a [`ServerSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Window Acknowledgement Size we announce and the Set Peer Bandwidth window, bytes
    /// (§5.4.4, §5.4.5). Also the window we acknowledge with until the peer announces its own.
    pub window_ack_size: u32,
    /// Chunk size we send with after `connect`, bytes, clamped to 1..=16 MiB (§5.4.1).
    pub out_chunk_size: u32,
    /// Largest message accepted from the peer once its publish or play is accepted, bytes
    /// (before that, at most 64 KiB: [`Limits::before_connect`], [`Limits::before_accept`]).
    pub max_message: usize,
    /// Seed for the handshake's random block (S1).
    pub random_seed: u64,
    /// Most bytes of replies to the peer's input (handshake, acknowledgements, ping
    /// responses, command answers) that may wait in the output between two
    /// [`ServerSession::take_output`] calls; more is [`SessionError::OutputBacklog`].
    pub max_queued_replies: usize,
    /// When set, `connect` is answered `_error` with `NetConnection.Connect.Rejected` and
    /// this description, and the session ends with [`SessionError::ConnectRejected`] (the
    /// host sends the output, then closes): a server over its connection limits says so
    /// instead of dropping the connection unanswered.
    pub reject_connect: Option<String>,
}

impl Default for ServerConfig {
    /// 2 500 000-byte window, 4096-byte chunks, 8 MiB messages, seed 0, 1 MiB of replies,
    /// connections accepted.
    fn default() -> Self {
        ServerConfig {
            window_ack_size: 2_500_000,
            out_chunk_size: 4096,
            max_message: DEFAULT_MAX_MESSAGE,
            random_seed: 0,
            max_queued_replies: DEFAULT_MAX_QUEUED_REPLIES,
            reject_connect: None,
        }
    }
}

/// What a media message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Message type 8: an FLV audio tag body.
    Audio,
    /// Message type 9: an FLV video tag body.
    Video,
    /// Message type 18 (or 15): an AMF0 data message such as `onMetaData`.
    Data,
}

impl MediaKind {
    /// The RTMP message type used when sending (8, 9 or 18).
    pub fn msg_type(self) -> u8 {
        match self {
            MediaKind::Audio => msg_type::AUDIO,
            MediaKind::Video => msg_type::VIDEO,
            MediaKind::Data => msg_type::DATA_AMF0,
        }
    }

    /// The chunk stream used when sending (4, 6 or 5).
    pub fn csid(self) -> u32 {
        match self {
            MediaKind::Audio => CSID_AUDIO,
            MediaKind::Video => CSID_VIDEO,
            MediaKind::Data => CSID_STATUS,
        }
    }
}

/// Something the host has to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` was answered with success. `app` is the command object's `app` ("" when
    /// absent), `tc_url` its `tcUrl`.
    Connect {
        /// Application name, e.g. `live`.
        app: String,
        /// `rtmp://host/app` as the client sent it.
        tc_url: Option<String>,
    },
    /// `publish`: answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`]. Media that follows is reported until rejected.
    Publish {
        /// Message stream id the publish came on.
        stream_id: u32,
        /// Stream name as sent, query string included (`name?key=…`).
        name: String,
        /// Publishing type: `live`, `record` or `append` (`live` when absent).
        kind: String,
    },
    /// `play`: answer with [`ServerSession::accept_play`] or
    /// [`ServerSession::reject_play_not_found`].
    Play {
        /// Message stream id the play came on (media is sent on it).
        stream_id: u32,
        /// Stream name as sent, query string included.
        name: String,
        /// Start as sent (§7.2.2.1): −2000 live or recorded (ffmpeg/Flash send ms), −1000 live
        /// only, ≥ 0 a position; −2000 when absent.
        start: f64,
    },
    /// Audio, video or a data message from the publisher. For data, a leading
    /// `@setDataFrame` string is removed, so an `onMetaData` payload starts with the
    /// `"onMetaData"` AMF0 string as in an FLV script tag.
    Media {
        /// Audio, video or data.
        kind: MediaKind,
        /// Timestamp, ms.
        timestamp: u64,
        /// The message body (FLV tag body for audio/video; AMF0 values for data).
        payload: Vec<u8>,
    },
    /// `FCUnpublish` for a stream name.
    Unpublish {
        /// Stream name as sent.
        name: String,
    },
    /// `deleteStream`: the publish or play on that stream is over.
    DeleteStream {
        /// The message stream id deleted.
        stream_id: u32,
    },
    /// `closeStream` on a message stream: stop playing / publishing on it.
    CloseStream {
        /// The message stream id.
        stream_id: u32,
    },
    /// `seek` on the accepted play (§7.2.2.7): move to `ms` (a DTS on the timeline the
    /// viewer was sent), then answer with [`ServerSession::seek_done`].
    Seek {
        /// The position asked for, ms.
        ms: u64,
    },
    /// `pause` on the accepted play (§7.2.2.8): `paused` true stops media, false resumes it
    /// from `ms` (the position the client had when it paused). Answer with
    /// [`ServerSession::pause_done`].
    Pause {
        /// True to pause, false to resume.
        paused: bool,
        /// The client's position, ms.
        ms: u64,
    },
}

/// Why the session cannot go on (close the connection), or why a host call was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SessionError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The chunk stream is broken.
    #[error("RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A command message is not valid AMF0.
    #[error("RTMP command: {0}")]
    Amf(#[from] Amf0Error),
    /// A command is malformed or out of order.
    #[error("RTMP command {command:?}: {problem}")]
    BadCommand {
        /// Command name.
        command: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A host answer with nothing to answer (e.g. `accept_play` without a pending play).
    #[error("no {0} is waiting for an answer")]
    NothingPending(&'static str),
    /// Media sent before `accept_play`.
    #[error("cannot send media: no play was accepted on this connection")]
    NotPlaying,
    /// A media message longer than RTMP can express.
    #[error("media message of {0} bytes exceeds RTMP's 16777215-byte message limit")]
    MediaTooLong(usize),
    /// The peer's input made the session queue more replies than
    /// [`ServerConfig::max_queued_replies`] without the host taking the output: the peer
    /// sends but does not read.
    #[error(
        "{queued} bytes of replies wait for a peer that does not read them (limit {limit} bytes)"
    )]
    OutputBacklog {
        /// Reply bytes queued since the output was last taken.
        queued: usize,
        /// The limit, bytes.
        limit: usize,
    },
    /// `connect` was answered `NetConnection.Connect.Rejected`
    /// ([`ServerConfig::reject_connect`]); the output holds the answer.
    #[error("connect rejected: {0}")]
    ConnectRejected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Pending,
    Accepted,
    Rejected,
}

#[derive(Debug)]
struct StreamUse {
    stream_id: u32,
    name: String,
    state: Answer,
}

/// The protocol state of one server-side RTMP connection. See the module docs.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    handshake: Handshake,
    dec: ChunkDecoder,
    enc: ChunkEncoder,
    out: Vec<u8>,
    events: VecDeque<Event>,
    connected: bool,
    next_stream_id: u32,
    publish: Option<StreamUse>,
    play: Option<StreamUse>,
    /// Bytes received, handshake included (the acknowledgement sequence number, §5.4.3).
    received: u64,
    /// `received` when the last Acknowledgement was sent.
    acked: u64,
    /// The peer's acknowledgement window, bytes.
    peer_window: u32,
    /// The client's buffer length from Set Buffer Length, ms.
    client_buffer_ms: Option<u32>,
    /// Bytes the peer's input added to `out` since the host last took it.
    replies_queued: usize,
}

fn err(command: &str, problem: &'static str) -> SessionError {
    SessionError::BadCommand {
        command: command.to_string(),
        problem,
    }
}

fn status(level: &str, code: &str, description: &str) -> Amf0 {
    Amf0::object([
        ("level", Amf0::string(level)),
        ("code", Amf0::string(code)),
        ("description", Amf0::string(description)),
    ])
}

impl ServerSession {
    /// A session waiting for the client's C0+C1.
    pub fn new(mut config: ServerConfig) -> ServerSession {
        config.out_chunk_size = config.out_chunk_size.clamp(1, MAX_CHUNK_SIZE);
        ServerSession {
            handshake: Handshake::new(config.random_seed),
            dec: ChunkDecoder::with_limits(Limits::before_connect(config.max_message)),
            enc: ChunkEncoder::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            connected: false,
            next_stream_id: 1,
            publish: None,
            play: None,
            received: 0,
            acked: 0,
            peer_window: config.window_ack_size,
            client_buffer_ms: None,
            replies_queued: 0,
            config,
        }
    }

    /// True once the handshake is complete.
    pub fn is_handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// Bytes received so far, handshake included.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// The message stream id of the accepted play, if any.
    pub fn play_stream_id(&self) -> Option<u32> {
        match &self.play {
            Some(p) if p.state == Answer::Accepted => Some(p.stream_id),
            _ => None,
        }
    }

    /// The buffer length the client announced (user control Set Buffer Length, §7.1.7), ms:
    /// how far ahead of its playback it wants media. `None` until it says.
    pub fn client_buffer_ms(&self) -> Option<u32> {
        self.client_buffer_ms
    }

    /// Whether message stream `sid` carries the accepted play.
    fn playing_on(&self, sid: u32) -> bool {
        self.play_stream_id() == Some(sid)
    }

    /// Feeds bytes received from the peer: handshake first, then chunks. Replies (handshake,
    /// acknowledgements, command results) go to the output, events to the queue. After an
    /// error the connection must be closed.
    ///
    /// Errors include input beyond the current [`Limits`] (a [`ChunkError`]), a command other
    /// than `connect` before `connect`, and [`SessionError::OutputBacklog`] once the replies
    /// queued since the last [`ServerSession::take_output`] exceed
    /// [`ServerConfig::max_queued_replies`].
    pub(crate) fn receive(&mut self, input: &[u8]) -> Result<(), SessionError> {
        let start = self.out.len();
        let result = self.feed(input, start);
        let added = self.out.len().saturating_sub(start);
        self.replies_queued = self.replies_queued.saturating_add(added);
        result
    }

    /// [`ServerSession::receive`]; `start` is the output length before it.
    fn feed(&mut self, input: &[u8], start: usize) -> Result<(), SessionError> {
        self.check_backlog(start)?;
        self.received += input.len() as u64;
        let mut rest = input;
        if !self.handshake.is_done() {
            let p = self.handshake.push(rest, &mut self.out)?;
            rest = rest.get(p.consumed..).unwrap_or_default();
            if !p.done {
                return Ok(());
            }
        }
        if !rest.is_empty() {
            self.dec.push(rest);
        }
        while let Some(msg) = self.dec.poll()? {
            self.on_message(msg)?;
            self.check_backlog(start)?;
        }
        if self.peer_window > 0 && self.received - self.acked >= u64::from(self.peer_window) {
            self.acked = self.received;
            let seq = (self.received as u32).to_be_bytes();
            self.control(msg_type::ACK, &seq);
        }
        self.check_backlog(start)
    }

    /// Fails once the replies queued since the output was last taken, those of this input
    /// (what `out` gained since `start`) included, exceed the configured bound.
    fn check_backlog(&self, start: usize) -> Result<(), SessionError> {
        let queued = self
            .replies_queued
            .saturating_add(self.out.len().saturating_sub(start));
        if queued > self.config.max_queued_replies {
            return Err(SessionError::OutputBacklog {
                queued,
                limit: self.config.max_queued_replies,
            });
        }
        Ok(())
    }

    /// Bytes waiting in the output for [`ServerSession::take_output`], bytes: replies to the
    /// peer and whatever the host's calls (answers, metadata, copied media) added.
    pub fn queued_output(&self) -> usize {
        self.out.len()
    }

    /// Of [`ServerSession::queued_output`], the bytes the peer's input caused (the part
    /// bounded by [`ServerConfig::max_queued_replies`]), bytes.
    pub fn queued_replies(&self) -> usize {
        self.replies_queued
    }

    /// The [`Phase`] the peer is in: what the chunk decoder's limits are.
    pub fn phase(&self) -> Phase {
        self.dec.limits().phase
    }

    /// Moves the chunk decoder's limits to `phase`'s, never back to a stricter phase.
    fn enter(&mut self, phase: Phase) {
        if phase <= self.phase() {
            return;
        }
        let max = self.config.max_message;
        self.dec.set_limits(match phase {
            Phase::BeforeConnect => Limits::before_connect(max),
            Phase::BeforeAccept => Limits::before_accept(max),
            Phase::Open => Limits::open(max),
        });
    }

    /// The next event, oldest first.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes the bytes to send to the peer (leaving the internal buffer empty, and the
    /// count of queued replies at 0).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.replies_queued = 0;
        std::mem::take(&mut self.out)
    }

    /// Answers the pending publish with onStatus `NetStream.Publish.Start` (after a
    /// StreamBegin user control event). The peer's input is then read with
    /// [`Limits::open`]: messages of up to [`ServerConfig::max_message`] bytes.
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        let (sid, name) = self.pending(false)?;
        self.enter(Phase::Open);
        self.user_control(uc::STREAM_BEGIN, sid);
        let desc = format!("{name} is now published.");
        self.on_status(sid, status("status", "NetStream.Publish.Start", &desc));
        self.set_answer(false, Answer::Accepted);
        Ok(())
    }

    /// Answers the pending (or accepted) publish with an error onStatus, e.g. `code`
    /// `NetStream.Publish.BadName` (name in use or not allowed) or
    /// `NetStream.Publish.Denied`. Media from this publisher is dropped from then on; the
    /// host normally closes the connection after sending the output.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        let sid = match &self.publish {
            Some(p) if p.state != Answer::Rejected => p.stream_id,
            _ => return Err(SessionError::NothingPending("publish")),
        };
        self.on_status(sid, status("error", code, description));
        self.set_answer(false, Answer::Rejected);
        Ok(())
    }

    /// Answers the pending play: StreamBegin (user control 0), onStatus
    /// `NetStream.Play.Reset` and `NetStream.Play.Start`, and the `|RtmpSampleAccess` data
    /// message. Media may be sent from then on, and the peer's input is read with
    /// [`Limits::open`].
    pub fn accept_play(&mut self) -> Result<(), SessionError> {
        let (sid, name) = self.pending(true)?;
        self.enter(Phase::Open);
        self.user_control(uc::STREAM_BEGIN, sid);
        let reset = format!("Playing and resetting {name}.");
        self.on_status(sid, status("status", "NetStream.Play.Reset", &reset));
        let start = format!("Started playing {name}.");
        self.on_status(sid, status("status", "NetStream.Play.Start", &start));
        let mut body = Vec::new();
        amf0::encode_all(
            &[
                Amf0::string("|RtmpSampleAccess"),
                Amf0::Boolean(true),
                Amf0::Boolean(true),
            ],
            &mut body,
        );
        self.enc.write_message(
            CSID_STATUS,
            msg_type::DATA_AMF0,
            sid,
            0,
            &body,
            &mut self.out,
        );
        self.set_answer(true, Answer::Accepted);
        Ok(())
    }

    /// Answers the pending play with onStatus level `error`, code
    /// `NetStream.Play.StreamNotFound`.
    pub fn reject_play_not_found(&mut self, name: &str) -> Result<(), SessionError> {
        self.reject_play_with(name, "no such stream")
    }

    /// Answers the pending play with onStatus level `error`, code
    /// `NetStream.Play.StreamNotFound`, and `why` in the description (a stream that exists
    /// but has nothing to play: its input failed, or no data came in time).
    pub fn reject_play_with(&mut self, name: &str, why: &str) -> Result<(), SessionError> {
        let (sid, _) = self.pending(true)?;
        let desc = format!("{name}: {why}");
        self.on_status(sid, status("error", "NetStream.Play.StreamNotFound", &desc));
        self.play = None;
        Ok(())
    }

    /// Ends the accepted play: StreamEOF (user control 1), onStatus
    /// `NetStream.Play.UnpublishNotify` and `NetStream.Play.Stop`.
    pub fn end_of_stream(&mut self) -> Result<(), SessionError> {
        let Some(p) = self.play.take().filter(|p| p.state == Answer::Accepted) else {
            return Err(SessionError::NotPlaying);
        };
        self.user_control(uc::STREAM_EOF, p.stream_id);
        let desc = format!("{} is now unpublished.", p.name);
        self.on_status(
            p.stream_id,
            status("status", "NetStream.Play.UnpublishNotify", &desc),
        );
        let desc = format!("Stopped playing {}.", p.name);
        self.on_status(p.stream_id, status("status", "NetStream.Play.Stop", &desc));
        Ok(())
    }

    /// Answers a [`Event::Seek`] once the media source moved to `ms`: Stream Begin, then
    /// onStatus `NetStream.Seek.Notify` and `NetStream.Play.Start`. Media of the new position
    /// follows; a client drops what it receives between its seek and the notify (ffmpeg's
    /// `rtmpproto` waits for `NetStream.Seek.Notify`).
    pub fn seek_done(&mut self, ms: u64) -> Result<(), SessionError> {
        let sid = self.play_stream_id().ok_or(SessionError::NotPlaying)?;
        self.user_control(uc::STREAM_BEGIN, sid);
        let desc = format!("Seeking {ms} (stream ID: {sid}).");
        self.on_status(sid, status("status", "NetStream.Seek.Notify", &desc));
        self.on_status(
            sid,
            status("status", "NetStream.Play.Start", "Playing after a seek."),
        );
        Ok(())
    }

    /// Answers a [`Event::Pause`]: onStatus `NetStream.Pause.Notify` (with Stream EOF) or
    /// `NetStream.Unpause.Notify` (with Stream Begin).
    pub fn pause_done(&mut self, paused: bool) -> Result<(), SessionError> {
        let sid = self.play_stream_id().ok_or(SessionError::NotPlaying)?;
        let (event, code, desc) = if paused {
            (uc::STREAM_EOF, "NetStream.Pause.Notify", "Paused.")
        } else {
            (uc::STREAM_BEGIN, "NetStream.Unpause.Notify", "Unpaused.")
        };
        self.user_control(event, sid);
        self.on_status(sid, status("status", code, desc));
        Ok(())
    }

    /// Sends an `onMetaData` data message (type 18, timestamp 0) whose values follow the
    /// name, usually one ECMA array: `["onMetaData", values…]`. When `values` already starts
    /// with the string `"onMetaData"` (as an FLV script tag's values do), it is not repeated.
    pub fn send_metadata(&mut self, values: &[Amf0]) -> Result<(), SessionError> {
        let sid = self.play_stream_id().ok_or(SessionError::NotPlaying)?;
        let mut body = Vec::new();
        if values.first().and_then(Amf0::as_str) != Some("onMetaData") {
            amf0::encode(&Amf0::string("onMetaData"), &mut body);
        }
        amf0::encode_all(values, &mut body);
        if body.len() > MAX_MESSAGE_LEN {
            return Err(SessionError::MediaTooLong(body.len()));
        }
        self.enc.write_message(
            CSID_STATUS,
            msg_type::DATA_AMF0,
            sid,
            0,
            &body,
            &mut self.out,
        );
        Ok(())
    }

    /// Zero-copy media to the player: one message whose payload is `parts` concatenated
    /// (e.g. a 5-byte FLV video header and the frame in shared memory), on chunk stream 6
    /// (video), 4 (audio) or 5 (data) and the play's message stream id, `timestamp` in ms.
    /// Chunk headers are appended to `hdrs` and the send order to `plan`
    /// (see [`ChunkEncoder::write_message_parts`]); send [`ServerSession::take_output`] first.
    pub fn write_media_parts(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
        hdrs: &mut Vec<u8>,
        plan: &mut Vec<Span>,
    ) -> Result<(), SessionError> {
        let sid = self.media_checks(parts)?;
        self.enc.write_message_parts(
            kind.csid(),
            kind.msg_type(),
            sid,
            timestamp,
            parts,
            hdrs,
            plan,
        );
        Ok(())
    }

    /// Like [`ServerSession::write_media_parts`] but copies the message into the output.
    pub fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
    ) -> Result<(), SessionError> {
        let sid = self.media_checks(parts)?;
        let mut hdrs = Vec::new();
        let mut plan = Vec::new();
        self.enc.write_message_parts(
            kind.csid(),
            kind.msg_type(),
            sid,
            timestamp,
            parts,
            &mut hdrs,
            &mut plan,
        );
        super::chunk::append_plan(&plan, &hdrs, parts, &mut self.out);
        Ok(())
    }

    fn media_checks(&self, parts: &[&[u8]]) -> Result<u32, SessionError> {
        let sid = self.play_stream_id().ok_or(SessionError::NotPlaying)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_MESSAGE_LEN {
            return Err(SessionError::MediaTooLong(len));
        }
        Ok(sid)
    }

    /// The pending publish (`play == false`) or play: its stream id and name.
    fn pending(&self, play: bool) -> Result<(u32, String), SessionError> {
        let (slot, what) = if play {
            (&self.play, "play")
        } else {
            (&self.publish, "publish")
        };
        match slot {
            Some(s) if s.state == Answer::Pending => Ok((s.stream_id, s.name.clone())),
            _ => Err(SessionError::NothingPending(what)),
        }
    }

    fn set_answer(&mut self, play: bool, a: Answer) {
        let slot = if play {
            &mut self.play
        } else {
            &mut self.publish
        };
        if let Some(s) = slot {
            s.state = a;
        }
    }

    fn control(&mut self, typ: u8, payload: &[u8]) {
        self.enc
            .write_message(CSID_CONTROL, typ, 0, 0, payload, &mut self.out);
    }

    fn user_control(&mut self, event: u16, stream_id: u32) {
        let mut p = [0u8; 6];
        p[..2].copy_from_slice(&event.to_be_bytes());
        p[2..].copy_from_slice(&stream_id.to_be_bytes());
        self.control(msg_type::USER_CONTROL, &p);
    }

    /// A command message (type 20) on `csid` / message stream `sid`.
    fn command(&mut self, csid: u32, sid: u32, values: &[Amf0]) {
        let mut body = Vec::new();
        amf0::encode_all(values, &mut body);
        self.enc
            .write_message(csid, msg_type::COMMAND_AMF0, sid, 0, &body, &mut self.out);
    }

    fn on_status(&mut self, sid: u32, info: Amf0) {
        self.command(
            CSID_STATUS,
            sid,
            &[
                Amf0::string("onStatus"),
                Amf0::Number(0.0),
                Amf0::Null,
                info,
            ],
        );
    }

    fn result(&mut self, txn: f64, values: Vec<Amf0>) {
        let mut v = vec![Amf0::string("_result"), Amf0::Number(txn)];
        v.extend(values);
        self.command(CSID_COMMAND, 0, &v);
    }

    fn on_message(&mut self, msg: Message) -> Result<(), SessionError> {
        match msg.msg_type {
            msg_type::COMMAND_AMF0 => self.on_command(&msg, &msg.payload),
            msg_type::COMMAND_AMF3 => {
                // An AMF3 command message starts with a format byte 0, then AMF0 values.
                let body = match msg.payload.first() {
                    Some(0) => &msg.payload[1..],
                    _ => &msg.payload[..],
                };
                self.on_command(&msg, body)
            }
            msg_type::AUDIO | msg_type::VIDEO | msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => {
                self.on_media(msg);
                Ok(())
            }
            msg_type::WINDOW_ACK_SIZE => {
                if let Some(b) = msg.payload.get(..4) {
                    self.peer_window = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                }
                Ok(())
            }
            msg_type::USER_CONTROL => {
                let p = &msg.payload;
                let event = p.get(..2).map(|e| u16::from_be_bytes([e[0], e[1]]));
                if p.len() >= 6 && event == Some(uc::PING_REQUEST) {
                    let mut r = [0u8; 6];
                    r[..2].copy_from_slice(&uc::PING_RESPONSE.to_be_bytes());
                    r[2..].copy_from_slice(&p[2..6]);
                    self.control(msg_type::USER_CONTROL, &r);
                }
                if let (Some(uc::SET_BUFFER_LENGTH), Some(b)) = (event, p.get(6..10)) {
                    self.client_buffer_ms = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                Ok(())
            }
            // Set Chunk Size and Abort are applied by the decoder; Acknowledgement, Set Peer
            // Bandwidth, shared objects and aggregates are ignored.
            _ => Ok(()),
        }
    }

    fn on_media(&mut self, msg: Message) {
        if !matches!(&self.publish, Some(p) if p.state != Answer::Rejected) {
            return;
        }
        let Message {
            msg_type: typ,
            timestamp,
            mut payload,
            ..
        } = msg;
        let kind = match typ {
            msg_type::AUDIO => MediaKind::Audio,
            msg_type::VIDEO => MediaKind::Video,
            _ => {
                if typ == msg_type::DATA_AMF3 && payload.first() == Some(&0) {
                    payload.remove(0);
                }
                if let Ok((Amf0::String(s), n)) = amf0::decode(&payload) {
                    if s == "@setDataFrame" {
                        payload.drain(..n);
                    }
                }
                MediaKind::Data
            }
        };
        self.events.push_back(Event::Media {
            kind,
            timestamp,
            payload,
        });
    }

    fn on_command(&mut self, msg: &Message, body: &[u8]) -> Result<(), SessionError> {
        // The name alone first (§7.1.1: a command starts with its name, an AMF0 string), so
        // that before `connect` nothing else is decoded.
        let no_name = || err("", "command message without a command name");
        if body.is_empty() {
            return Err(no_name());
        }
        let Amf0::String(first) = amf0::decode(body)?.0 else {
            return Err(no_name());
        };
        if first != "connect" && !self.connected {
            return Err(err(&first, "received before connect"));
        }
        let vals = amf0::decode_all(body)?;
        let Some(name) = vals.first().and_then(Amf0::as_str) else {
            return Err(no_name());
        };
        let txn = vals.get(1).and_then(Amf0::as_f64).unwrap_or(0.0);
        let arg = |i: usize| vals.get(3 + i);
        if name == "connect" {
            return self.on_connect(txn, vals.get(2));
        }
        match name {
            "createStream" => {
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.saturating_add(1);
                self.result(txn, vec![Amf0::Null, Amf0::Number(f64::from(id))]);
            }
            "releaseStream" | "_checkbw" if txn > 0.0 => self.result(txn, vec![Amf0::Null]),
            "getStreamLength" => self.result(txn, vec![Amf0::Null, Amf0::Number(0.0)]),
            "FCPublish" | "FCUnpublish" => {
                let stream = arg(0).and_then(Amf0::as_str).unwrap_or("").to_string();
                let (reply, code) = if name == "FCPublish" {
                    ("onFCPublish", "NetStream.Publish.Start")
                } else {
                    ("onFCUnpublish", "NetStream.Unpublish.Success")
                };
                let info = Amf0::object([
                    ("code", Amf0::string(code)),
                    ("description", Amf0::string(stream.clone())),
                ]);
                self.command(
                    CSID_COMMAND,
                    0,
                    &[Amf0::string(reply), Amf0::Number(0.0), Amf0::Null, info],
                );
                if txn > 0.0 {
                    self.result(txn, vec![Amf0::Null]);
                }
                if name == "FCUnpublish" {
                    self.events.push_back(Event::Unpublish { name: stream });
                }
            }
            "publish" => {
                let Some(stream) = arg(0).and_then(Amf0::as_str) else {
                    return Err(err(name, "missing stream name"));
                };
                if self.publish.is_some() {
                    return Err(err(name, "this connection already publishes"));
                }
                let kind = arg(1).and_then(Amf0::as_str).unwrap_or("live").to_string();
                self.publish = Some(StreamUse {
                    stream_id: msg.stream_id,
                    name: stream.to_string(),
                    state: Answer::Pending,
                });
                self.events.push_back(Event::Publish {
                    stream_id: msg.stream_id,
                    name: stream.to_string(),
                    kind,
                });
            }
            "play" => {
                let Some(stream) = arg(0).and_then(Amf0::as_str) else {
                    return Err(err(name, "missing stream name"));
                };
                if self.play.is_some() {
                    return Err(err(name, "this connection already plays"));
                }
                let start = arg(1).and_then(Amf0::as_f64).unwrap_or(-2000.0);
                self.play = Some(StreamUse {
                    stream_id: msg.stream_id,
                    name: stream.to_string(),
                    state: Answer::Pending,
                });
                self.events.push_back(Event::Play {
                    stream_id: msg.stream_id,
                    name: stream.to_string(),
                    start,
                });
            }
            "deleteStream" => {
                let sid = arg(0).and_then(Amf0::as_f64).unwrap_or(0.0) as u32;
                self.end_stream(sid);
                self.events
                    .push_back(Event::DeleteStream { stream_id: sid });
            }
            "closeStream" => {
                self.end_stream(msg.stream_id);
                self.events.push_back(Event::CloseStream {
                    stream_id: msg.stream_id,
                });
            }
            "seek" | "pause" if self.playing_on(msg.stream_id) => {
                // seek: (txn, null, ms); pause: (txn, null, paused, ms).
                let (paused, at) = if name == "pause" {
                    (arg(0).and_then(Amf0::as_bool), arg(1))
                } else {
                    (None, arg(0))
                };
                let ms = at.and_then(Amf0::as_f64).unwrap_or(0.0).max(0.0) as u64;
                self.events.push_back(match paused {
                    Some(paused) => Event::Pause { paused, ms },
                    None if name == "seek" => Event::Seek { ms },
                    None => return Err(err(name, "missing pause flag")),
                });
            }
            // receiveAudio, receiveVideo, replies, seek or pause without an accepted play,
            // and anything else: ignored.
            _ => {}
        }
        Ok(())
    }

    /// Forgets a publish / play on message stream `sid`.
    fn end_stream(&mut self, sid: u32) {
        if self.publish.as_ref().is_some_and(|p| p.stream_id == sid) {
            self.publish = None;
        }
        if self.play.as_ref().is_some_and(|p| p.stream_id == sid) {
            self.play = None;
        }
    }

    /// `connect` (§7.2.1.1): Window Ack Size, Set Peer Bandwidth (dynamic), Set Chunk Size,
    /// then `_result` with NetConnection.Connect.Success.
    fn on_connect(&mut self, txn: f64, obj: Option<&Amf0>) -> Result<(), SessionError> {
        let Some(obj @ Amf0::Object(_)) = obj else {
            return Err(err("connect", "missing command object"));
        };
        let app = obj
            .get("app")
            .and_then(Amf0::as_str)
            .unwrap_or("")
            .to_string();
        let tc_url = obj.get("tcUrl").and_then(Amf0::as_str).map(str::to_string);
        if let Some(why) = self.config.reject_connect.clone() {
            let info = Amf0::object([
                ("level", Amf0::string("error")),
                ("code", Amf0::string("NetConnection.Connect.Rejected")),
                ("description", Amf0::string(&why)),
            ]);
            self.command(
                CSID_COMMAND,
                0,
                &[Amf0::string("_error"), Amf0::Number(txn), Amf0::Null, info],
            );
            return Err(SessionError::ConnectRejected(why));
        }
        let encoding = obj
            .get("objectEncoding")
            .and_then(Amf0::as_f64)
            .unwrap_or(0.0);
        let window = self.config.window_ack_size.to_be_bytes();
        self.control(msg_type::WINDOW_ACK_SIZE, &window);
        let mut bw = window.to_vec();
        bw.push(2); // limit type: dynamic
        self.control(msg_type::SET_PEER_BANDWIDTH, &bw);
        if self.enc.chunk_size() != self.config.out_chunk_size {
            // Cannot fail: clamped to the valid range in `new`.
            let _ = self
                .enc
                .set_chunk_size(self.config.out_chunk_size, &mut self.out);
        }
        let props = Amf0::object([
            ("fmsVer", Amf0::string("FMS/3,5,7,7009")),
            ("capabilities", Amf0::Number(31.0)),
            ("mode", Amf0::Number(1.0)),
        ]);
        let info = Amf0::object([
            ("level", Amf0::string("status")),
            ("code", Amf0::string("NetConnection.Connect.Success")),
            ("description", Amf0::string("Connection succeeded.")),
            ("objectEncoding", Amf0::Number(encoding)),
        ]);
        self.result(txn, vec![props, info]);
        self.connected = true;
        self.enter(Phase::BeforeAccept);
        self.events.push_back(Event::Connect { app, tc_url });
        Ok(())
    }
}

impl crate::machine::Machine for ServerSession {
    type Event = Event;
    type Error = SessionError;

    /// Bytes from the peer: handshake, then chunks. RTMP runs no timers, so
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
    fn poll_output(&mut self) -> crate::machine::Output<Event> {
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
    use crate::rtmp::handshake::ClientHandshake;
    use proptest::prelude::*;

    /// A hand-driven client: its own chunk encoder/decoder and AMF0 encoding.
    struct Client {
        enc: ChunkEncoder,
        dec: ChunkDecoder,
        wire: Vec<u8>,
    }

    impl Client {
        fn handshake(s: &mut ServerSession) -> Client {
            let mut hs = ClientHandshake::new(99);
            let mut c0c1 = Vec::new();
            hs.start(0, &mut c0c1);
            s.receive(&c0c1).unwrap();
            let s0s1s2 = s.take_output();
            assert_eq!(s0s1s2.len(), 3073);
            let mut c2 = Vec::new();
            assert!(hs.push(&s0s1s2, &mut c2).unwrap().done);
            s.receive(&c2).unwrap();
            assert!(s.is_handshake_done());
            Client {
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::default(),
                wire: Vec::new(),
            }
        }

        fn cmd(&mut self, sid: u32, vals: &[Amf0]) {
            let mut body = Vec::new();
            amf0::encode_all(vals, &mut body);
            self.enc.write_message(3, 20, sid, 0, &body, &mut self.wire);
        }

        fn send(&mut self, s: &mut ServerSession) {
            let w = std::mem::take(&mut self.wire);
            s.receive(&w).unwrap();
        }

        fn read(&mut self, bytes: &[u8]) -> Vec<Message> {
            self.dec.push(bytes);
            let mut v = Vec::new();
            while let Some(m) = self.dec.poll().unwrap() {
                v.push(m);
            }
            v
        }
    }

    fn connect_obj() -> Amf0 {
        Amf0::object([
            ("app", Amf0::string("live")),
            ("type", Amf0::string("nonprivate")),
            ("tcUrl", Amf0::string("rtmp://localhost/live")),
            ("objectEncoding", Amf0::Number(0.0)),
        ])
    }

    /// (command name, transaction id, code of the info object if any, first extra number).
    fn commands(msgs: &[Message]) -> Vec<(String, f64, Option<String>, Option<f64>)> {
        msgs.iter()
            .filter(|m| m.msg_type == 20)
            .map(|m| {
                let v = amf0::decode_all(&m.payload).unwrap();
                let code = v
                    .iter()
                    .skip(2)
                    .find_map(|x| x.get("code").and_then(Amf0::as_str).map(str::to_string));
                let num = v.get(3).and_then(Amf0::as_f64);
                (
                    v[0].as_str().unwrap().to_string(),
                    v[1].as_f64().unwrap(),
                    code,
                    num,
                )
            })
            .collect()
    }

    fn connected(s: &mut ServerSession) -> Client {
        let mut c = Client::handshake(s);
        c.cmd(
            0,
            &[Amf0::string("connect"), Amf0::Number(1.0), connect_obj()],
        );
        c.send(s);
        assert_eq!(
            s.poll_event(),
            Some(Event::Connect {
                app: "live".into(),
                tc_url: Some("rtmp://localhost/live".into())
            })
        );
        let msgs = c.read(&s.take_output());
        let types: Vec<u8> = msgs.iter().map(|m| m.msg_type).collect();
        assert_eq!(types, [5, 6, 1, 20]);
        assert_eq!(msgs[0].payload, 2_500_000u32.to_be_bytes());
        assert_eq!(c.dec.chunk_size(), 4096);
        let cmds = commands(&msgs);
        assert_eq!(cmds[0].0, "_result");
        assert_eq!(cmds[0].1, 1.0);
        assert_eq!(cmds[0].2.as_deref(), Some("NetConnection.Connect.Success"));
        let v = amf0::decode_all(&msgs[3].payload).unwrap();
        assert_eq!(v[2].get("capabilities"), Some(&Amf0::Number(31.0)));
        assert_eq!(v[3].get("objectEncoding"), Some(&Amf0::Number(0.0)));
        c
    }

    fn create_stream(s: &mut ServerSession, c: &mut Client, txn: f64) {
        c.cmd(
            0,
            &[Amf0::string("createStream"), Amf0::Number(txn), Amf0::Null],
        );
        c.send(s);
        let cmds = commands(&c.read(&s.take_output()));
        assert_eq!(cmds, [("_result".into(), txn, None, Some(1.0))]);
    }

    #[test]
    fn a_rejected_connect_is_answered_then_ends_the_session() {
        let mut s = ServerSession::new(ServerConfig {
            reject_connect: Some("too many connections".into()),
            ..ServerConfig::default()
        });
        let mut c = Client::handshake(&mut s);
        c.cmd(
            0,
            &[Amf0::string("connect"), Amf0::Number(1.0), connect_obj()],
        );
        let w = std::mem::take(&mut c.wire);
        let e = s.receive(&w).unwrap_err();
        assert!(
            matches!(e, SessionError::ConnectRejected(ref why) if why == "too many connections")
        );
        assert_eq!(s.poll_event(), None, "no Connect event");
        let msgs = c.read(&s.take_output());
        let cmds = commands(&msgs);
        assert_eq!(
            cmds,
            [(
                "_error".into(),
                1.0,
                Some("NetConnection.Connect.Rejected".into()),
                None
            )]
        );
    }

    #[test]
    fn publish_session() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        c.enc.set_chunk_size(60_000, &mut c.wire).unwrap();
        c.cmd(
            0,
            &[
                Amf0::string("releaseStream"),
                Amf0::Number(2.0),
                Amf0::Null,
                Amf0::string("cam?key=s3cret"),
            ],
        );
        c.cmd(
            0,
            &[
                Amf0::string("FCPublish"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("cam?key=s3cret"),
            ],
        );
        c.send(&mut s);
        let cmds = commands(&c.read(&s.take_output()));
        let names: Vec<&str> = cmds.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["_result", "onFCPublish", "_result"]);
        create_stream(&mut s, &mut c, 4.0);
        c.cmd(
            1,
            &[
                Amf0::string("publish"),
                Amf0::Number(5.0),
                Amf0::Null,
                Amf0::string("cam?key=s3cret"),
                Amf0::string("live"),
            ],
        );
        c.send(&mut s);
        assert_eq!(
            s.poll_event(),
            Some(Event::Publish {
                stream_id: 1,
                name: "cam?key=s3cret".into(),
                kind: "live".into()
            })
        );
        s.accept_publish().unwrap();
        let msgs = c.read(&s.take_output());
        assert_eq!(msgs[0].msg_type, 4);
        assert_eq!(msgs[0].payload, [0, 0, 0, 0, 0, 1]);
        let cmds = commands(&msgs);
        assert_eq!(cmds[0].0, "onStatus");
        assert_eq!(cmds[0].2.as_deref(), Some("NetStream.Publish.Start"));
        assert_eq!(msgs[1].stream_id, 1);

        // Metadata, then media past 2^24 ms, fed in 7-byte pieces.
        let mut meta = Vec::new();
        amf0::encode_all(
            &[
                Amf0::string("@setDataFrame"),
                Amf0::string("onMetaData"),
                Amf0::EcmaArray(vec![("width".into(), Amf0::Number(1280.0))]),
            ],
            &mut meta,
        );
        c.enc.write_message(4, 18, 1, 0, &meta, &mut c.wire);
        let video: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut want = Vec::new();
        for i in 0..6u64 {
            let ts = 0xFF_FF00 + i * 100;
            c.enc
                .write_message(6, 9, 1, ts, &video[..50_000 + i as usize], &mut c.wire);
            c.enc
                .write_message(4, 8, 1, ts + 3, b"\xaf\x01aac", &mut c.wire);
            want.push((MediaKind::Video, ts, 50_000 + i as usize));
            want.push((MediaKind::Audio, ts + 3, 5));
        }
        let wire = std::mem::take(&mut c.wire);
        for piece in wire.chunks(7) {
            s.receive(piece).unwrap();
        }
        let Some(Event::Media {
            kind: MediaKind::Data,
            timestamp: 0,
            payload,
        }) = s.poll_event()
        else {
            panic!("metadata expected");
        };
        let v = amf0::decode_all(&payload).unwrap();
        assert_eq!(v[0].as_str(), Some("onMetaData"));
        assert_eq!(v[1].get("width").and_then(Amf0::as_f64), Some(1280.0));
        for (kind, ts, len) in want {
            match s.poll_event() {
                Some(Event::Media {
                    kind: k,
                    timestamp,
                    payload,
                }) => {
                    assert_eq!((k, timestamp, payload.len()), (kind, ts, len));
                    if kind == MediaKind::Video {
                        assert_eq!(payload[..], video[..len]);
                    }
                }
                other => panic!("media expected, got {other:?}"),
            }
        }
        // Less than the 2.5 MB default window was received: no Acknowledgement yet.
        assert!(s.bytes_received() < 2 * 2_500_000);
        let msgs = c.read(&s.take_output());
        let acks: Vec<_> = msgs.iter().filter(|m| m.msg_type == 3).collect();
        assert!(acks.is_empty(), "only ~300 kB so far");

        c.cmd(
            0,
            &[
                Amf0::string("FCUnpublish"),
                Amf0::Number(6.0),
                Amf0::Null,
                Amf0::string("cam?key=s3cret"),
            ],
        );
        c.cmd(
            0,
            &[
                Amf0::string("deleteStream"),
                Amf0::Number(7.0),
                Amf0::Null,
                Amf0::Number(1.0),
            ],
        );
        c.send(&mut s);
        assert_eq!(
            s.poll_event(),
            Some(Event::Unpublish {
                name: "cam?key=s3cret".into()
            })
        );
        assert_eq!(s.poll_event(), Some(Event::DeleteStream { stream_id: 1 }));
        assert_eq!(s.poll_event(), None);
        // Media after deleteStream is dropped.
        c.enc.write_message(4, 8, 1, 5, b"late", &mut c.wire);
        c.send(&mut s);
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn rejected_publish_drops_media() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        create_stream(&mut s, &mut c, 2.0);
        c.cmd(
            1,
            &[
                Amf0::string("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("taken"),
            ],
        );
        c.send(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Publish { ref kind, .. }) if kind == "live"));
        s.reject_publish("NetStream.Publish.BadName", "taken is already published")
            .unwrap();
        let cmds = commands(&c.read(&s.take_output()));
        assert_eq!(cmds[0].2.as_deref(), Some("NetStream.Publish.BadName"));
        c.enc.write_message(6, 9, 1, 0, b"\x17\x00", &mut c.wire);
        c.send(&mut s);
        assert_eq!(s.poll_event(), None);
        assert!(s.accept_publish().is_err());
    }

    #[test]
    fn seek_and_pause_on_the_accepted_play_only() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        create_stream(&mut s, &mut c, 2.0);
        let seek = [
            Amf0::string("seek"),
            Amf0::Number(0.0),
            Amf0::Null,
            Amf0::Number(6080.0),
        ];
        // Before a play is accepted, a seek is ignored.
        c.cmd(1, &seek);
        c.send(&mut s);
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.seek_done(0), Err(SessionError::NotPlaying));
        c.cmd(
            1,
            &[
                Amf0::string("play"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::string("vod"),
            ],
        );
        c.send(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Play { .. })));
        s.accept_play().unwrap();
        c.read(&s.take_output());
        c.cmd(1, &seek);
        // On another message stream: ignored.
        c.cmd(3, &seek);
        c.cmd(
            1,
            &[
                Amf0::string("pause"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::Boolean(true),
                Amf0::Number(7000.0),
            ],
        );
        c.send(&mut s);
        assert_eq!(s.poll_event(), Some(Event::Seek { ms: 6080 }));
        assert_eq!(
            s.poll_event(),
            Some(Event::Pause {
                paused: true,
                ms: 7000
            })
        );
        assert_eq!(s.poll_event(), None);
        s.seek_done(6000).unwrap();
        s.pause_done(true).unwrap();
        let msgs = c.read(&s.take_output());
        assert_eq!(msgs[0].payload, [0, 0, 0, 0, 0, 1], "Stream Begin");
        let codes: Vec<_> = commands(&msgs).into_iter().filter_map(|c| c.2).collect();
        assert_eq!(
            codes,
            [
                "NetStream.Seek.Notify",
                "NetStream.Play.Start",
                "NetStream.Pause.Notify"
            ]
        );
    }

    #[test]
    fn play_session_accept() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        create_stream(&mut s, &mut c, 2.0);
        assert_eq!(
            s.send_media(MediaKind::Video, 0, &[b"x"]),
            Err(SessionError::NotPlaying)
        );
        c.cmd(
            1,
            &[
                Amf0::string("play"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::string("cam"),
                Amf0::Number(-2000.0),
            ],
        );
        c.send(&mut s);
        assert_eq!(
            s.poll_event(),
            Some(Event::Play {
                stream_id: 1,
                name: "cam".into(),
                start: -2000.0
            })
        );
        s.accept_play().unwrap();
        s.send_metadata(&[Amf0::EcmaArray(vec![(
            "duration".into(),
            Amf0::Number(0.0),
        )])])
        .unwrap();
        s.send_metadata(&[Amf0::string("onMetaData"), Amf0::EcmaArray(vec![])])
            .unwrap();
        let out = s.take_output();
        let msgs = c.read(&out);
        assert_eq!(msgs[0].msg_type, 4);
        assert_eq!(msgs[0].payload, [0, 0, 0, 0, 0, 1]);
        let codes: Vec<_> = commands(&msgs).into_iter().filter_map(|c| c.2).collect();
        assert_eq!(codes, ["NetStream.Play.Reset", "NetStream.Play.Start"]);
        let data: Vec<_> = msgs.iter().filter(|m| m.msg_type == 18).collect();
        assert_eq!(
            amf0::decode_all(&data[0].payload).unwrap()[0].as_str(),
            Some("|RtmpSampleAccess")
        );
        let meta = amf0::decode_all(&data[1].payload).unwrap();
        assert_eq!(meta[0].as_str(), Some("onMetaData"));
        assert_eq!(meta.len(), 2);
        let meta = amf0::decode_all(&data[2].payload).unwrap();
        assert_eq!(meta, [Amf0::string("onMetaData"), Amf0::EcmaArray(vec![])]);
        assert!(msgs.iter().all(|m| m.msg_type == 4 || m.stream_id == 1));

        // Zero-copy media: headers + plan, materialized the way writev would send them.
        let frame: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (mut hdrs, mut plan) = (Vec::new(), Vec::new());
        let mut wire = Vec::new();
        for i in 0..5u64 {
            let ts = 0xFF_FFF0 + i * 40;
            s.write_media_parts(
                MediaKind::Video,
                ts,
                &[&[0x17, 1, 0, 0, 0], &frame],
                &mut hdrs,
                &mut plan,
            )
            .unwrap();
            s.send_media(MediaKind::Audio, ts, &[&[0xaf, 1], b"aac"])
                .unwrap();
            // Ordering rule: internal output first, then the plan.
            wire.extend(s.take_output());
            let parts: [&[u8]; 2] = [&[0x17, 1, 0, 0, 0], &frame];
            for span in plan.drain(..) {
                match span {
                    Span::Own(r) => wire.extend_from_slice(&hdrs[r]),
                    Span::Part(p, r) => wire.extend_from_slice(&parts[p][r]),
                }
            }
            hdrs.clear();
        }
        let msgs = c.read(&wire);
        assert_eq!(msgs.len(), 10);
        for (i, pair) in msgs.chunks(2).enumerate() {
            let ts = 0xFF_FFF0 + i as u64 * 40;
            assert_eq!(
                (pair[0].msg_type, pair[0].timestamp, pair[0].stream_id),
                (8, ts, 1)
            );
            assert_eq!(pair[0].payload, b"\xaf\x01aac");
            assert_eq!(
                (pair[1].msg_type, pair[1].timestamp, pair[1].csid),
                (9, ts, 6)
            );
            assert_eq!(pair[1].payload.len(), 10_005);
            assert_eq!(pair[1].payload[5..], frame[..]);
        }

        s.end_of_stream().unwrap();
        let msgs = c.read(&s.take_output());
        assert_eq!(msgs[0].payload, [0, 1, 0, 0, 0, 1]);
        let codes: Vec<_> = commands(&msgs).into_iter().filter_map(|c| c.2).collect();
        assert_eq!(
            codes,
            ["NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"]
        );
        assert_eq!(s.end_of_stream(), Err(SessionError::NotPlaying));
    }

    #[test]
    fn play_session_not_found() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        create_stream(&mut s, &mut c, 2.0);
        c.cmd(
            1,
            &[
                Amf0::string("play"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::string("nope"),
            ],
        );
        c.send(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Play { start, .. }) if start == -2000.0));
        s.reject_play_not_found("nope").unwrap();
        let msgs = c.read(&s.take_output());
        let v = amf0::decode_all(&msgs[0].payload).unwrap();
        assert_eq!(v[0].as_str(), Some("onStatus"));
        assert_eq!(v[3].get("level").and_then(Amf0::as_str), Some("error"));
        assert_eq!(
            v[3].get("code").and_then(Amf0::as_str),
            Some("NetStream.Play.StreamNotFound")
        );
        assert_eq!(
            s.send_media(MediaKind::Audio, 0, &[]),
            Err(SessionError::NotPlaying)
        );
        assert_eq!(s.accept_play(), Err(SessionError::NothingPending("play")));
    }

    #[test]
    fn broken_amf_in_connect_is_an_error() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        let mut body = Vec::new();
        amf0::encode_all(&[Amf0::string("connect"), Amf0::Number(1.0)], &mut body);
        body.extend_from_slice(b"\x03\x00\x03app\x02\x00\x40li");
        c.enc.write_message(3, 20, 0, 0, &body, &mut c.wire);
        let e = s.receive(&c.wire).unwrap_err();
        assert!(
            matches!(e, SessionError::Amf(Amf0Error::Truncated { .. })),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("RTMP command: AMF0: truncated at byte"));

        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        c.cmd(0, &[Amf0::string("connect"), Amf0::Number(1.0), Amf0::Null]);
        assert!(matches!(
            s.receive(&c.wire),
            Err(SessionError::BadCommand { .. })
        ));

        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        c.cmd(
            1,
            &[
                Amf0::string("publish"),
                Amf0::Number(0.0),
                Amf0::Null,
                Amf0::string("x"),
            ],
        );
        let e = s.receive(&c.wire).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RTMP command \"publish\": received before connect"
        );
    }

    #[test]
    fn amf3_command_ping_and_ack() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        // connect as an AMF3-wrapped command (type 17, leading 0 byte).
        let mut body = vec![0u8];
        amf0::encode_all(
            &[Amf0::string("connect"), Amf0::Number(1.0), connect_obj()],
            &mut body,
        );
        c.enc.write_message(3, 17, 0, 0, &body, &mut c.wire);
        // Peer window of 1000 bytes.
        c.enc
            .write_message(2, 5, 0, 0, &1000u32.to_be_bytes(), &mut c.wire);
        // Ping request with timestamp 0x01020304.
        c.enc
            .write_message(2, 4, 0, 0, &[0, 6, 1, 2, 3, 4], &mut c.wire);
        c.send(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Connect { .. })));
        let msgs = c.read(&s.take_output());
        let pong: Vec<_> = msgs.iter().filter(|m| m.msg_type == 4).collect();
        assert_eq!(pong[0].payload, [0, 7, 1, 2, 3, 4]);
        // Handshake (3073 + 1536... from the client: 1537 + 1536) already exceeds 1000.
        let ack: Vec<_> = msgs.iter().filter(|m| m.msg_type == 3).collect();
        assert_eq!(ack.len(), 1);
        let seq = u32::from_be_bytes(ack[0].payload[..4].try_into().unwrap());
        assert_eq!(u64::from(seq), s.bytes_received());
    }

    /// A type 0 chunk header on `csid` (< 64) for a message of `len` bytes of `typ`.
    fn type0(csid: u8, typ: u8, len: u32) -> Vec<u8> {
        let l = len.to_be_bytes();
        vec![csid, 0, 0, 0, l[1], l[2], l[3], typ, 0, 0, 0, 0]
    }

    /// Window Acknowledgement Size messages (harmless, 4 bytes) on chunk streams `csids`.
    fn on_chunk_streams(c: &mut Client, csids: std::ops::RangeInclusive<u32>) {
        for csid in csids {
            c.enc
                .write_message(csid, 5, 0, 0, &2_500_000u32.to_be_bytes(), &mut c.wire);
        }
    }

    #[test]
    fn chunk_streams_per_phase() {
        // Before connect: 9 chunk streams, the 5th is refused.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        assert_eq!(s.phase(), Phase::BeforeConnect);
        on_chunk_streams(&mut c, 2..=10);
        let e = s.receive(&c.wire).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RTMP chunk stream: chunk stream 6 exceeds the limit of 4 chunk streams before connect"
        );
        // Connected (chunk stream 3 used by connect): 8 in all, the 9th is refused.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        assert_eq!(s.phase(), Phase::BeforeAccept);
        on_chunk_streams(&mut c, 4..=10);
        c.send(&mut s);
        on_chunk_streams(&mut c, 11..=11);
        assert!(matches!(
            s.receive(&c.wire),
            Err(SessionError::Chunk(ChunkError::TooManyChunkStreams {
                csid: 11,
                max: 8,
                phase: Phase::BeforeAccept
            }))
        ));
        // Once a publish is accepted: 64.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        publishing(&mut s, &mut c);
        assert_eq!(s.phase(), Phase::Open);
        on_chunk_streams(&mut c, 4..=60);
        c.send(&mut s);
    }

    /// createStream and publish "cam" on message stream 1, accepted.
    fn publishing(s: &mut ServerSession, c: &mut Client) {
        create_stream(s, c, 2.0);
        c.cmd(
            1,
            &[
                Amf0::string("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("cam"),
            ],
        );
        c.send(s);
        assert!(matches!(s.poll_event(), Some(Event::Publish { .. })));
        s.accept_publish().unwrap();
        c.read(&s.take_output());
    }

    #[test]
    fn message_length_per_phase() {
        // Before connect, a 1 MiB message is refused from its 12-byte header.
        let mut s = ServerSession::new(ServerConfig::default());
        Client::handshake(&mut s);
        let e = s.receive(&type0(3, 20, 1 << 20)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RTMP chunk stream: message of 1048576 bytes on chunk stream 3 before connect \
             (limit 65536 bytes)"
        );
        // Connected, publish asked but not accepted: a 100 kB video message is refused.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        create_stream(&mut s, &mut c, 2.0);
        c.cmd(
            1,
            &[
                Amf0::string("publish"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("cam"),
            ],
        );
        c.enc
            .write_message(6, 9, 1, 0, &vec![0x17; 100_000], &mut c.wire);
        let e = s.receive(&c.wire).unwrap_err();
        assert_eq!(
            e,
            SessionError::Chunk(ChunkError::MessageTooLong {
                len: 100_000,
                csid: 6,
                limit: 64 << 10,
                phase: Phase::BeforeAccept
            })
        );
        // Accepted: a 1 MiB video message comes through.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        publishing(&mut s, &mut c);
        let frame = vec![0x27; 1 << 20];
        c.enc.write_message(6, 9, 1, 40, &frame, &mut c.wire);
        c.send(&mut s);
        assert!(matches!(
            s.poll_event(),
            Some(Event::Media { kind: MediaKind::Video, timestamp: 40, ref payload })
                if *payload == frame
        ));
    }

    #[test]
    fn set_chunk_size_before_connect_is_range_checked() {
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        c.enc.set_chunk_size(1 << 20, &mut c.wire).unwrap();
        assert!(matches!(
            s.receive(&c.wire),
            Err(SessionError::Chunk(ChunkError::ChunkSizeTooLarge {
                size: 0x10_0000,
                limit: 0x1_0000,
                phase: Phase::BeforeConnect
            }))
        ));
        let mut s = ServerSession::new(ServerConfig::default());
        Client::handshake(&mut s);
        let mut msg = type0(2, 1, 4);
        msg.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        assert_eq!(
            s.receive(&msg),
            Err(SessionError::Chunk(ChunkError::BadChunkSize(0x8000_0000)))
        );
    }

    #[test]
    fn only_connect_is_decoded_before_connect() {
        // "createStream" then bytes that are not AMF0: refused for coming before connect,
        // without the rest being read.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = Client::handshake(&mut s);
        let mut body = Vec::new();
        amf0::encode(&Amf0::string("createStream"), &mut body);
        body.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x1f]);
        c.enc.write_message(3, 20, 0, 0, &body, &mut c.wire);
        assert_eq!(
            s.receive(&c.wire).unwrap_err().to_string(),
            "RTMP command \"createStream\": received before connect"
        );
        // Once connected the same body is decoded, and its AMF0 is refused.
        let mut s = ServerSession::new(ServerConfig::default());
        let mut c = connected(&mut s);
        c.enc.write_message(3, 20, 0, 0, &body, &mut c.wire);
        assert!(matches!(
            s.receive(&c.wire),
            Err(SessionError::Amf(Amf0Error::ArrayTooLong { .. }))
        ));
        // A command without a name, or an empty one.
        for body in [&b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"[..], b""] {
            let mut s = ServerSession::new(ServerConfig::default());
            let mut c = Client::handshake(&mut s);
            c.enc.write_message(3, 20, 0, 0, body, &mut c.wire);
            assert_eq!(
                s.receive(&c.wire),
                Err(err("", "command message without a command name"))
            );
        }
    }

    /// `n` ping requests (user control 6) from the client.
    fn pings(c: &mut Client, n: u32) {
        for i in 0..n {
            let mut p = vec![0, 6];
            p.extend_from_slice(&i.to_be_bytes());
            c.enc.write_message(2, 4, 0, 0, &p, &mut c.wire);
        }
    }

    #[test]
    fn replies_to_a_peer_that_does_not_read_are_bounded() {
        let mut s = ServerSession::new(ServerConfig {
            max_queued_replies: 4096,
            ..ServerConfig::default()
        });
        let mut c = connected(&mut s);
        assert_eq!((s.queued_output(), s.queued_replies()), (0, 0));
        // 400 pings: 400 responses of 7 to 18 bytes each, under 4096.
        pings(&mut c, 400);
        c.send(&mut s);
        let first = s.queued_replies();
        assert!((2800..4096).contains(&first), "{first}");
        assert_eq!(s.queued_output(), first);
        c.read(&s.take_output());
        // What the host queues (the play's answer, 10 kB of media) does not count.
        create_stream(&mut s, &mut c, 2.0);
        c.cmd(
            1,
            &[
                Amf0::string("play"),
                Amf0::Number(3.0),
                Amf0::Null,
                Amf0::string("cam"),
            ],
        );
        c.send(&mut s);
        assert!(matches!(s.poll_event(), Some(Event::Play { .. })));
        c.read(&s.take_output());
        s.accept_play().unwrap();
        s.send_media(MediaKind::Video, 0, &[&[0x17; 10_000]])
            .unwrap();
        assert_eq!(s.queued_replies(), 0);
        pings(&mut c, 400);
        c.send(&mut s);
        assert!(s.queued_replies() < 4096);
        assert!(s.queued_output() > 10_000 + s.queued_replies());
        // 400 more without the output being taken: over the bound, refused.
        pings(&mut c, 400);
        let e = s.receive(&c.wire).unwrap_err();
        assert!(
            matches!(e, SessionError::OutputBacklog { queued, limit: 4096 } if queued > 4096),
            "{e}"
        );
        assert!(e.to_string().ends_with(
            "bytes of replies wait for a peer that does not read them (limit 4096 bytes)"
        ));
        // It stopped reading at the message that went over: 4096 bytes of replies and at
        // most one response more.
        assert!(s.queued_replies() <= 4096 + 18, "{}", s.queued_replies());
    }

    #[test]
    fn replies_bound_resets_when_the_output_is_taken() {
        let mut s = ServerSession::new(ServerConfig {
            max_queued_replies: 4096,
            ..ServerConfig::default()
        });
        let mut c = connected(&mut s);
        for _ in 0..20 {
            pings(&mut c, 400);
            c.send(&mut s);
            let msgs = c.read(&s.take_output());
            assert_eq!(msgs.len(), 400);
            assert_eq!(s.queued_replies(), 0);
        }
    }

    fn after_handshake() -> ServerSession {
        let mut s = ServerSession::new(ServerConfig {
            max_message: 4096,
            ..ServerConfig::default()
        });
        Client::handshake(&mut s);
        s
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_after_handshake_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            step in 1usize..200,
            connect_first in any::<bool>(),
        ) {
            let mut s = after_handshake();
            if connect_first {
                let mut c = Client { enc: ChunkEncoder::new(), dec: ChunkDecoder::default(), wire: Vec::new() };
                c.cmd(0, &[Amf0::string("connect"), Amf0::Number(1.0), connect_obj()]);
                c.send(&mut s);
            }
            for piece in bytes.chunks(step) {
                if s.receive(piece).is_err() {
                    break;
                }
            }
            while s.poll_event().is_some() {}
            let _ = s.accept_publish();
            let _ = s.accept_play();
            let _ = s.take_output();
        }

        #[test]
        fn arbitrary_commands_never_panic(
            vals in prop::collection::vec(prop_oneof![
                Just(Amf0::string("connect")), Just(Amf0::string("publish")),
                Just(Amf0::string("play")), Just(Amf0::string("createStream")),
                Just(Amf0::string("deleteStream")), Just(Amf0::string("FCUnpublish")),
                any::<f64>().prop_map(Amf0::Number), Just(Amf0::Null), Just(connect_obj()),
            ], 0..6),
            times in 1usize..4,
        ) {
            let mut s = after_handshake();
            let mut c = Client { enc: ChunkEncoder::new(), dec: ChunkDecoder::default(), wire: Vec::new() };
            for _ in 0..times {
                c.cmd(1, &vals);
            }
            let _ = s.receive(&c.wire);
            while s.poll_event().is_some() {}
        }
    }
}
