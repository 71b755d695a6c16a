//! The RTMP chunk stream (Adobe RTMP spec 1.0 (Dec 2012) §5.3), both directions, sans-IO.
//!
//! A message (type, stream id, timestamp, payload) travels as chunks of at most the chunk size
//! bytes of payload, each behind a basic header (§5.3.1.1: format + chunk stream id in 1, 2 or
//! 3 bytes) and a message header of type 0 (11 bytes: timestamp, length, type, stream id),
//! 1 (7 bytes: timestamp delta, length, type), 2 (3 bytes: timestamp delta) or 3 (none)
//! (§5.3.1.2), plus a 4-byte extended timestamp when the 3-byte field is 0xFFFFFF (§5.3.1.3).
//!
//! * [`ChunkDecoder`]: push received bytes, poll complete [`Message`]s. It applies Set Chunk
//!   Size (type 1) and Abort (type 2) itself (§5.4.1, §5.4.2) and still reports them. What a
//!   peer can make it hold is bounded by [`Limits`], which a server tightens until the peer
//!   is connected and its publish or play accepted ([`Phase`]).
//! * [`ChunkEncoder`]: messages to bytes with header compression, either copied into one
//!   `Vec` ([`ChunkEncoder::write_message`]) or as a header buffer plus a [`Span`] plan that
//!   points into the caller's payload parts, for `writev` without copying the payload
//!   ([`ChunkEncoder::write_message_parts`]).
//!
//! Timestamps are ms. On the wire they are 32 bits (wrapping); the decoder unwraps them into a
//! `u64` (a type 0 timestamp is taken as the value closest to the previous one), so a publish
//! can run far past 2^24 ms (4.66 h, where extended timestamps start) and past 2^32 ms.

use std::collections::HashMap;
use std::ops::Range;
use thiserror::Error;

/// Chunk size both directions start with (§5.4.1), bytes.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size accepted or sent: 16 MiB (0x1000000), bytes. (§5.4.1 allows up to
/// 2^31 − 1, but a chunk can never carry more than a message's 24-bit length anyway.)
pub const MAX_CHUNK_SIZE: u32 = 0x100_0000;
/// Largest value a Set Chunk Size may carry at all: its first bit must be zero (§5.4.1).
pub const SPEC_MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Largest message the 24-bit length field can express, bytes (§5.3.1.2).
pub const MAX_MESSAGE_LEN: usize = 0xFF_FFFF;
/// Default limit on a received message's length once the peer is trusted: 8 MiB, bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 8 << 20;
/// Default limit on distinct chunk stream ids a trusted peer may use.
pub const DEFAULT_MAX_CHUNK_STREAMS: usize = 64;
/// Default limit on the bytes held across all partly received messages of a trusted peer:
/// 16 MiB, bytes (more than one message of [`MAX_MESSAGE_LEN`]).
pub const DEFAULT_MAX_PARTIAL: usize = 16 << 20;
/// Longest message accepted before the peer's publish or play is accepted (before `connect`
/// too): 64 KiB, bytes. A `connect` command object is a few hundred bytes.
pub const PRE_AUTH_MAX_MESSAGE: usize = 64 << 10;
/// Distinct chunk stream ids a peer may use before `connect` succeeded: 4 (clients use 2 for
/// protocol control and 3 for commands).
pub const BEFORE_CONNECT_MAX_CHUNK_STREAMS: usize = 4;
/// Bytes held across partly received messages before `connect` succeeded: 128 KiB, bytes.
pub const BEFORE_CONNECT_MAX_PARTIAL: usize = 128 << 10;
/// Largest Set Chunk Size accepted before `connect` succeeded: 64 KiB, bytes (a chunk never
/// carries more than one message, and no message may be longer at that stage).
pub const BEFORE_CONNECT_MAX_CHUNK_SIZE: u32 = PRE_AUTH_MAX_MESSAGE as u32;
/// Distinct chunk stream ids a connected peer may use before its publish or play is
/// accepted: 8.
pub const BEFORE_ACCEPT_MAX_CHUNK_STREAMS: usize = 8;
/// Bytes held across partly received messages of a connected peer before its publish or
/// play is accepted: 256 KiB, bytes.
pub const BEFORE_ACCEPT_MAX_PARTIAL: usize = 256 << 10;
/// Room reserved for a new message before its chunks arrive: at most 64 KiB, bytes; the
/// buffer then doubles as chunks come, never past the message's length.
const INITIAL_RESERVE: usize = 64 << 10;
/// The 3-byte timestamp value that announces an extended timestamp (§5.3.1.3).
const EXTENDED: u32 = 0xFF_FFFF;

/// RTMP message type ids (§5.4, §6.2, §7.1).
pub mod msg_type {
    /// Set Chunk Size (§5.4.1), 4-byte payload.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (§5.4.2), 4-byte chunk stream id.
    pub const ABORT: u8 = 2;
    /// Acknowledgement (§5.4.3), 4-byte sequence number (bytes received).
    pub const ACK: u8 = 3;
    /// User Control Message (§6.2), u16 event type + event data.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (§5.4.4), 4 bytes.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (§5.4.5), 4-byte window + 1-byte limit type.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (§7.1.4), an FLV audio tag body.
    pub const AUDIO: u8 = 8;
    /// Video data (§7.1.5), an FLV video tag body.
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3 (§7.1.2).
    pub const DATA_AMF3: u8 = 15;
    /// Shared object, AMF3 (§7.1.3).
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    /// Command, AMF3 (§7.1.1).
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 (§7.1.2).
    pub const DATA_AMF0: u8 = 18;
    /// Shared object, AMF0 (§7.1.3).
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    /// Command, AMF0 (§7.1.1).
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate (§7.1.6).
    pub const AGGREGATE: u8 = 22;
}

/// How far a server's peer has come, for [`Limits`] and error messages. Ordered: each phase
/// is later (and trusted more) than the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// `connect` (§7.2.1.1) has not succeeded yet.
    BeforeConnect,
    /// Connected; no publish or play accepted yet (the host has not authorized the peer).
    BeforeAccept,
    /// A publish or play was accepted; also any decoder that does not tighten its limits
    /// (a client reading a server).
    Open,
}

impl Phase {
    /// The words an error message adds after what was too large (with a leading space), or
    /// nothing for [`Phase::Open`].
    pub fn when(self) -> &'static str {
        match self {
            Phase::BeforeConnect => " before connect",
            Phase::BeforeAccept => " before a publish or play is accepted",
            Phase::Open => "",
        }
    }
}

/// What a peer may make a [`ChunkDecoder`] hold (Adobe RTMP spec 1.0 §5.3 chunking, §5.4.1
/// Set Chunk Size). Checked as headers arrive, before anything is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The phase these limits belong to, named in errors.
    pub phase: Phase,
    /// Distinct chunk stream ids the peer may use (an id counts from its first chunk on).
    pub max_chunk_streams: usize,
    /// Longest message, bytes: the length in a type 0 or 1 message header (§5.3.1.2).
    pub max_message: usize,
    /// Bytes reserved across all partly received messages, on all chunk streams together.
    pub max_partial: usize,
    /// Largest chunk size a Set Chunk Size may set, bytes (§5.4.1; at most
    /// [`SPEC_MAX_CHUNK_SIZE`], and this decoder never takes more than [`MAX_CHUNK_SIZE`]).
    pub max_chunk_size: u32,
}

impl Limits {
    /// Before `connect`: 4 chunk streams, messages of at most 64 KiB (or `max_message`
    /// if smaller), 128 KiB held, chunk size at most 64 KiB.
    pub fn before_connect(max_message: usize) -> Limits {
        Limits {
            phase: Phase::BeforeConnect,
            max_chunk_streams: BEFORE_CONNECT_MAX_CHUNK_STREAMS,
            max_message: max_message.min(PRE_AUTH_MAX_MESSAGE),
            max_partial: BEFORE_CONNECT_MAX_PARTIAL,
            max_chunk_size: BEFORE_CONNECT_MAX_CHUNK_SIZE,
        }
    }

    /// Connected, before a publish or play is accepted: 8 chunk streams, messages of at most
    /// 64 KiB (or `max_message` if smaller), 256 KiB held. The chunk size may go up to
    /// 16 MiB: clients announce the chunk size they will send media with at this stage, and
    /// a chunk never holds more than the rest of its message.
    pub fn before_accept(max_message: usize) -> Limits {
        Limits {
            phase: Phase::BeforeAccept,
            max_chunk_streams: BEFORE_ACCEPT_MAX_CHUNK_STREAMS,
            max_message: max_message.min(PRE_AUTH_MAX_MESSAGE),
            max_partial: BEFORE_ACCEPT_MAX_PARTIAL,
            max_chunk_size: MAX_CHUNK_SIZE,
        }
    }

    /// A trusted peer: 64 chunk streams, messages of at most `max_message` bytes (capped at
    /// the 24-bit [`MAX_MESSAGE_LEN`]), 16 MiB held, chunk size at most 16 MiB.
    pub fn open(max_message: usize) -> Limits {
        Limits {
            phase: Phase::Open,
            max_chunk_streams: DEFAULT_MAX_CHUNK_STREAMS,
            max_message: max_message.min(MAX_MESSAGE_LEN),
            max_partial: DEFAULT_MAX_PARTIAL,
            max_chunk_size: MAX_CHUNK_SIZE,
        }
    }
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream id it arrived on (2..=65599).
    pub csid: u32,
    /// Message type id (see [`msg_type`]).
    pub msg_type: u8,
    /// Message stream id (0 for NetConnection / protocol control).
    pub stream_id: u32,
    /// Timestamp in ms, unwrapped past 2^32.
    pub timestamp: u64,
    /// The message body.
    pub payload: Vec<u8>,
}

/// Why the chunk stream cannot be read. After an error the decoder's state is undefined: the
/// connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// A chunk size of 0, or one the spec does not allow (§5.4.1: its first bit is zero);
    /// from the encoder, one above [`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} is invalid (valid: 1..=16777216)")]
    BadChunkSize(u32),
    /// The peer's Set Chunk Size is above what the current [`Limits`] allow.
    #[error("Set Chunk Size of {size} bytes{} (limit {limit} bytes)", .phase.when())]
    ChunkSizeTooLarge {
        /// The chunk size asked for, bytes.
        size: u32,
        /// The limit, bytes.
        limit: u32,
        /// The phase whose limit it is.
        phase: Phase,
    },
    /// A message header announced more than the current [`Limits`] allow.
    #[error("message of {len} bytes on chunk stream {csid}{} (limit {limit} bytes)", .phase.when())]
    MessageTooLong {
        /// Announced length, bytes.
        len: usize,
        /// The chunk stream it came on.
        csid: u32,
        /// The limit, bytes.
        limit: usize,
        /// The phase whose limit it is.
        phase: Phase,
    },
    /// Partly received messages, on all chunk streams together, would hold more than the
    /// current [`Limits`] allow.
    #[error(
        "chunk stream {csid}: partly received messages would hold {total} bytes{} (limit {limit} bytes)",
        .phase.when()
    )]
    TooMuchPartial {
        /// The chunk stream whose chunk would go past the limit.
        csid: u32,
        /// Bytes they would hold, reservations included.
        total: usize,
        /// The limit, bytes.
        limit: usize,
        /// The phase whose limit it is.
        phase: Phase,
    },
    /// A type 1, 2 or 3 header on a chunk stream that never had a type 0 header.
    #[error("chunk stream {csid}: header type {fmt} without a previous type 0 header")]
    NoPreviousHeader {
        /// The chunk stream id.
        csid: u32,
        /// The header format (1, 2 or 3).
        fmt: u8,
    },
    /// The peer opened more chunk streams than allowed.
    #[error("chunk stream {csid} exceeds the limit of {max} chunk streams{}", .phase.when())]
    TooManyChunkStreams {
        /// The chunk stream id that would be one too many.
        csid: u32,
        /// The limit.
        max: usize,
        /// The phase whose limit it is.
        phase: Phase,
    },
    /// A protocol control message too short for its fields.
    #[error("{what} message has {len} bytes, needs {need}")]
    ShortControl {
        /// Which message.
        what: &'static str,
        /// Its length, bytes.
        len: usize,
        /// Bytes it needs.
        need: usize,
    },
}

/// Per chunk stream state of the decoder (§5.3.1.2: later headers inherit from earlier ones).
#[derive(Debug, Default)]
struct InStream {
    /// Timestamp of the current / last message, ms, unwrapped.
    timestamp: u64,
    /// Last timestamp field: absolute for type 0, delta for type 1/2 (full 32 bits).
    ts_field: u32,
    /// The last type 0/1/2 header used an extended timestamp.
    extended: bool,
    len: u32,
    msg_type: u8,
    stream_id: u32,
    /// Payload of the message being assembled.
    partial: Vec<u8>,
    /// Bytes reserved for `partial` while in progress, counted in the decoder's total.
    reserved: usize,
    /// A message is partly received.
    in_progress: bool,
}

/// Reassembles messages from received chunk-stream bytes (§5.3).
///
/// `push` appends bytes to an internal buffer (consumed from an offset, compacted now and
/// then); `poll` returns the next complete message. A chunk is taken only once its header and
/// payload (at most the chunk size, and never more than the rest of its message) are all
/// buffered, so the buffer holds at most one chunk plus whatever the caller pushed ahead.
///
/// [`Limits`] bound the chunk streams, each message's length, the bytes reserved for partly
/// received messages together, and Set Chunk Size; input beyond them is an error, found from
/// the headers before anything is reserved.
#[derive(Debug)]
pub struct ChunkDecoder {
    buf: Vec<u8>,
    pos: usize,
    chunk_size: u32,
    limits: Limits,
    /// Bytes reserved for partly received messages, all chunk streams (the sum of
    /// `InStream::reserved` over those in progress).
    partial_total: usize,
    streams: HashMap<u32, InStream>,
    /// Timestamp of the last message started on any chunk stream (for unwrapping a type 0 on
    /// a new chunk stream).
    last_timestamp: u64,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder::new(DEFAULT_MAX_MESSAGE)
    }
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The u64 timestamp whose low 32 bits are `field`, closest to `reference`.
fn unwrap_ts(field: u32, reference: u64) -> u64 {
    const WRAP: u64 = 1 << 32;
    let cand = (reference & !(WRAP - 1)) | u64::from(field);
    if cand > reference && cand - reference > WRAP / 2 && cand >= WRAP {
        cand - WRAP
    } else if cand < reference && reference - cand > WRAP / 2 {
        cand + WRAP
    } else {
        cand
    }
}

impl ChunkDecoder {
    /// A decoder with chunk size 128 and [`Limits::open`]: at most `max_message` bytes per
    /// message, [`DEFAULT_MAX_CHUNK_STREAMS`] chunk streams, [`DEFAULT_MAX_PARTIAL`] bytes
    /// held.
    pub fn new(max_message: usize) -> ChunkDecoder {
        ChunkDecoder::with_limits(Limits::open(max_message))
    }

    /// A decoder with chunk size 128 and the given limits.
    pub fn with_limits(limits: Limits) -> ChunkDecoder {
        ChunkDecoder {
            buf: Vec::new(),
            pos: 0,
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            partial_total: 0,
            streams: HashMap::new(),
            last_timestamp: 0,
        }
    }

    /// Changes the limits, e.g. to the next [`Phase`]'s once the peer is connected or its
    /// publish accepted. They apply to headers and Set Chunk Size read from then on; chunk
    /// streams already in use stay usable, and a chunk size already in force stays.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limit on distinct chunk stream ids (default 64).
    pub fn set_max_chunk_streams(&mut self, max: usize) {
        self.limits.max_chunk_streams = max;
    }

    /// Bytes reserved for partly received messages, all chunk streams together.
    pub fn partial_bytes(&self) -> usize {
        self.partial_total
    }

    /// The chunk size currently expected from the peer, bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes pushed but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes. Call [`ChunkDecoder::poll`] until it returns `Ok(None)`.
    pub fn push(&mut self, input: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(input);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Set Chunk Size and
    /// Abort are applied before they are returned.
    pub fn poll(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let buf = &self.buf[self.pos..];
            let Some(&b0) = buf.first() else {
                return Ok(None);
            };
            let fmt = b0 >> 6;
            let (csid, mut p) = match b0 & 0x3f {
                0 => match buf.get(1) {
                    Some(&b1) => (64 + u32::from(b1), 2),
                    None => return Ok(None),
                },
                1 => match buf.get(1..3) {
                    Some(b) => (64 + u32::from(b[0]) + (u32::from(b[1]) << 8), 3),
                    None => return Ok(None),
                },
                c => (u32::from(c), 1),
            };
            let hdr_len = [11, 7, 3, 0][fmt as usize];
            let Some(h) = buf.get(p..p + hdr_len) else {
                return Ok(None);
            };
            p += hdr_len;
            let empty = InStream::default();
            let prev = match self.streams.get(&csid) {
                Some(s) => s,
                None if fmt != 0 => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
                None if self.streams.len() >= self.limits.max_chunk_streams => {
                    return Err(ChunkError::TooManyChunkStreams {
                        csid,
                        max: self.limits.max_chunk_streams,
                        phase: self.limits.phase,
                    })
                }
                None => &empty,
            };
            let (raw, len, typ, sid) = match fmt {
                0 => (
                    be24(h),
                    be24(&h[3..]),
                    h[6],
                    u32::from_le_bytes([h[7], h[8], h[9], h[10]]),
                ),
                1 => (be24(h), be24(&h[3..]), h[6], prev.stream_id),
                2 => (be24(h), prev.len, prev.msg_type, prev.stream_id),
                _ => (0, prev.len, prev.msg_type, prev.stream_id),
            };
            let (ts_field, extended) = if fmt < 3 {
                if raw == EXTENDED {
                    let Some(e) = buf.get(p..p + 4) else {
                        return Ok(None);
                    };
                    p += 4;
                    (be32(e), true)
                } else {
                    (raw, false)
                }
            } else {
                if prev.extended {
                    // §5.3.1.3: type 3 chunks repeat the extended timestamp. Some senders do
                    // not; skip the 4 bytes only when they equal the value in force.
                    let Some(e) = buf.get(p..p + 4) else {
                        return Ok(None);
                    };
                    if be32(e) == prev.ts_field {
                        p += 4;
                    }
                }
                (prev.ts_field, prev.extended)
            };
            let continuing = fmt == 3 && prev.in_progress;
            if !continuing && len as usize > self.limits.max_message {
                return Err(ChunkError::MessageTooLong {
                    len: len as usize,
                    csid,
                    limit: self.limits.max_message,
                    phase: self.limits.phase,
                });
            }
            let timestamp = if continuing {
                prev.timestamp
            } else if fmt == 0 {
                let reference = if self.streams.contains_key(&csid) {
                    prev.timestamp
                } else {
                    self.last_timestamp
                };
                unwrap_ts(ts_field, reference)
            } else {
                prev.timestamp + u64::from(ts_field)
            };
            let got = if continuing { prev.partial.len() } else { 0 };
            let take = (self.chunk_size as usize).min((len as usize).saturating_sub(got));
            // What this message will have reserved once the chunk is in, against the total
            // over all chunk streams (a message in progress here that this header replaces
            // gives its reservation back).
            let held = if prev.in_progress { prev.reserved } else { 0 };
            let reserved = reservation(if continuing { held } else { 0 }, got, take, len as usize);
            let total = self.partial_total.saturating_sub(held) + reserved;
            if total > self.limits.max_partial {
                return Err(ChunkError::TooMuchPartial {
                    csid,
                    total,
                    limit: self.limits.max_partial,
                    phase: self.limits.phase,
                });
            }
            let Some(data) = buf.get(p..p + take) else {
                return Ok(None);
            };
            // The whole chunk is here: commit.
            let st = self.streams.entry(csid).or_default();
            if !continuing {
                // A new header while a message was in progress drops that message (lenient),
                // and its buffer with it.
                st.partial = Vec::new();
                st.timestamp = timestamp;
                self.last_timestamp = timestamp;
            }
            if fmt < 3 || !continuing {
                st.ts_field = ts_field;
                st.extended = extended;
            }
            st.len = len;
            st.msg_type = typ;
            st.stream_id = sid;
            if st.partial.capacity() < reserved {
                st.partial.reserve_exact(reserved - st.partial.len());
            }
            st.partial.extend_from_slice(data);
            self.pos += p + take;
            if st.partial.len() < len as usize {
                st.in_progress = true;
                st.reserved = reserved;
                self.partial_total = total;
                continue;
            }
            // Complete: its bytes leave with the message.
            st.in_progress = false;
            st.reserved = 0;
            self.partial_total = self.partial_total.saturating_sub(held);
            let msg = Message {
                csid,
                msg_type: typ,
                stream_id: sid,
                timestamp,
                payload: std::mem::take(&mut st.partial),
            };
            self.control(&msg)?;
            return Ok(Some(msg));
        }
    }

    /// Applies Set Chunk Size and Abort (§5.4.1, §5.4.2).
    fn control(&mut self, msg: &Message) -> Result<(), ChunkError> {
        match msg.msg_type {
            msg_type::SET_CHUNK_SIZE => {
                let size = control_u32(msg, "set chunk size")?;
                if size == 0 || size > SPEC_MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                let limit = self.limits.max_chunk_size.min(MAX_CHUNK_SIZE);
                if size > limit {
                    return Err(ChunkError::ChunkSizeTooLarge {
                        size,
                        limit,
                        phase: self.limits.phase,
                    });
                }
                self.chunk_size = size;
            }
            msg_type::ABORT => {
                let csid = control_u32(msg, "abort")?;
                if let Some(st) = self.streams.get_mut(&csid) {
                    if st.in_progress {
                        self.partial_total = self.partial_total.saturating_sub(st.reserved);
                    }
                    st.partial = Vec::new();
                    st.reserved = 0;
                    st.in_progress = false;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Bytes a message of `len` bytes has reserved once `add` more arrive after the `have` it
/// holds, given `reserved` so far (0 for a new message): [`INITIAL_RESERVE`] at first, then
/// doubling when full, never more than `len`.
fn reservation(reserved: usize, have: usize, add: usize, len: usize) -> usize {
    let mut r = if reserved == 0 {
        len.min(INITIAL_RESERVE)
    } else {
        reserved
    };
    let need = have.saturating_add(add);
    if r < need {
        r = len.min(r.saturating_mul(2).max(need));
    }
    r
}

/// The first 4 bytes (BE) of a protocol control message.
fn control_u32(msg: &Message, what: &'static str) -> Result<u32, ChunkError> {
    match msg.payload.get(..4) {
        Some(b) => Ok(be32(b)),
        None => Err(ChunkError::ShortControl {
            what,
            len: msg.payload.len(),
            need: 4,
        }),
    }
}

/// One piece of an encoded message, see [`ChunkEncoder::write_message_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// Bytes `hdrs[range]` of the header buffer.
    Own(Range<usize>),
    /// Bytes `parts[index][range]` of the caller's payload parts.
    Part(usize, Range<usize>),
}

/// Per chunk stream state of the encoder.
#[derive(Debug)]
struct OutStream {
    timestamp: u64,
    ts_field: u32,
    len: u32,
    msg_type: u8,
    stream_id: u32,
    /// Format of the last message's first chunk.
    fmt: u8,
}

/// Appends the bytes of a send plan ([`ChunkEncoder::write_message_parts`]) to `out`:
/// chunk headers from `hdrs`, payload pieces from `parts`. For callers that copy instead of
/// sending the plan zero-copy.
pub fn append_plan(plan: &[Span], hdrs: &[u8], parts: &[&[u8]], out: &mut Vec<u8>) {
    for span in plan {
        match span {
            Span::Own(r) => out.extend_from_slice(&hdrs[r.clone()]),
            Span::Part(i, r) => out.extend_from_slice(&parts[*i][r.clone()]),
        }
    }
}

/// Turns messages into chunk-stream bytes with header compression (§5.3.1.2).
///
/// Per chunk stream: type 0 for the first message, when the message stream id changes or the
/// timestamp goes backwards (or jumps by 2^32 ms or more); type 2 when length and type repeat;
/// type 3 when the delta repeats too (never straight after a type 0, which some decoders get
/// wrong); type 1 otherwise. Continuation chunks are type 3 and repeat an extended timestamp.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: HashMap<u32, OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder::new()
    }
}

impl ChunkEncoder {
    /// An encoder with chunk size 128 (§5.4.1).
    pub fn new() -> ChunkEncoder {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: HashMap::new(),
        }
    }

    /// The chunk size in use, bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Writes a Set Chunk Size message (csid 2, type 1, stream 0) to `out` and uses `size` for
    /// every later chunk. Errors (writing nothing) unless `1 <= size <= 16 MiB`.
    pub fn set_chunk_size(&mut self, size: u32, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.write_message(2, msg_type::SET_CHUNK_SIZE, 0, 0, &size.to_be_bytes(), out);
        self.chunk_size = size;
        Ok(())
    }

    /// Appends one message, chunked, to `out`. `timestamp` is in ms (sent mod 2^32).
    ///
    /// # Panics
    /// If `csid` is outside 2..=65599 or the payload is longer than [`MAX_MESSAGE_LEN`].
    pub fn write_message(
        &mut self,
        csid: u32,
        msg_type: u8,
        stream_id: u32,
        timestamp: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.emit(
            csid,
            msg_type,
            stream_id,
            timestamp,
            payload.len(),
            out,
            |out, _, r| {
                out.extend_from_slice(&payload[r]);
            },
        );
    }

    /// Like [`ChunkEncoder::write_message`] for a payload made of `parts` (concatenated),
    /// without copying them: chunk headers are appended to `hdrs` and `plan` gets the order
    /// in which to send `hdrs` ranges and `parts` ranges (e.g. as `IoSlice`s for `writev`).
    /// Both are appended to, so several messages can share one `hdrs` / `plan`.
    ///
    /// # Panics
    /// As [`ChunkEncoder::write_message`].
    #[allow(clippy::too_many_arguments)]
    pub fn write_message_parts(
        &mut self,
        csid: u32,
        msg_type: u8,
        stream_id: u32,
        timestamp: u64,
        parts: &[&[u8]],
        hdrs: &mut Vec<u8>,
        plan: &mut Vec<Span>,
    ) {
        let total = parts.iter().map(|p| p.len()).sum();
        // Cursor into `parts`: (part index, offset in it); ranges come in order.
        let (mut idx, mut off) = (0usize, 0usize);
        self.emit(
            csid,
            msg_type,
            stream_id,
            timestamp,
            total,
            hdrs,
            |_, h, r| {
                plan.push(Span::Own(h));
                let mut need = r.len();
                while need > 0 {
                    let avail = parts[idx].len() - off;
                    if avail == 0 {
                        idx += 1;
                        off = 0;
                        continue;
                    }
                    let n = avail.min(need);
                    plan.push(Span::Part(idx, off..off + n));
                    off += n;
                    need -= n;
                }
            },
        );
    }

    /// Chooses the headers and calls `payload(out, header_range, payload_range)` after each
    /// chunk header has been appended to `out`.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        csid: u32,
        msg_type: u8,
        stream_id: u32,
        timestamp: u64,
        len: usize,
        out: &mut Vec<u8>,
        mut payload: impl FnMut(&mut Vec<u8>, Range<usize>, Range<usize>),
    ) {
        assert!(
            (2..=65599).contains(&csid),
            "chunk stream id {csid} out of 2..=65599"
        );
        assert!(
            len <= MAX_MESSAGE_LEN,
            "message of {len} bytes is too long for RTMP"
        );
        let len32 = len as u32;
        let (fmt, ts_field) = match self.streams.get(&csid) {
            Some(s)
                if s.stream_id == stream_id
                    && timestamp >= s.timestamp
                    && timestamp - s.timestamp <= u64::from(u32::MAX) =>
            {
                let delta = (timestamp - s.timestamp) as u32;
                if s.len == len32 && s.msg_type == msg_type {
                    if delta == s.ts_field && s.fmt != 0 {
                        (3, delta)
                    } else {
                        (2, delta)
                    }
                } else {
                    (1, delta)
                }
            }
            _ => (0, timestamp as u32),
        };
        self.streams.insert(
            csid,
            OutStream {
                timestamp,
                ts_field,
                len: len32,
                msg_type,
                stream_id,
                fmt,
            },
        );
        let extended = ts_field >= EXTENDED;
        let field24 = ts_field.min(EXTENDED);
        let mut sent = 0;
        let mut first = true;
        loop {
            let start = out.len();
            basic_header(if first { fmt } else { 3 }, csid, out);
            if first {
                if fmt < 3 {
                    out.extend_from_slice(&field24.to_be_bytes()[1..]);
                }
                if fmt < 2 {
                    out.extend_from_slice(&len32.to_be_bytes()[1..]);
                    out.push(msg_type);
                }
                if fmt == 0 {
                    out.extend_from_slice(&stream_id.to_le_bytes());
                }
            }
            if extended {
                out.extend_from_slice(&ts_field.to_be_bytes());
            }
            let n = (self.chunk_size as usize).min(len - sent);
            let h = start..out.len();
            payload(out, h, sent..sent + n);
            sent += n;
            first = false;
            if sent >= len {
                break;
            }
        }
    }
}

/// Appends a basic header (§5.3.1.1): 1 byte for csid 2..=63, 2 for 64..=319, 3 above.
fn basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
    let f = fmt << 6;
    if csid < 64 {
        out.push(f | csid as u8);
    } else if csid < 320 {
        out.push(f);
        out.push((csid - 64) as u8);
    } else {
        let c = csid - 64;
        out.push(f | 1);
        out.push(c as u8);
        out.push((c >> 8) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut msgs = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            dec.push(piece);
            while let Some(m) = dec.poll().unwrap() {
                msgs.push(m);
            }
        }
        msgs
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn golden_type0_header() {
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        enc.write_message(3, 20, 0, 0, b"abc", &mut out);
        assert_eq!(out, b"\x03\x00\x00\x00\x00\x00\x03\x14\x00\x00\x00\x00abc");
        // Same csid, same length and type, +40 ms: type 2; again +40: type 3.
        out.clear();
        enc.write_message(3, 20, 0, 40, b"def", &mut out);
        assert_eq!(out, b"\x83\x00\x00\x28def");
        out.clear();
        enc.write_message(3, 20, 0, 80, b"ghi", &mut out);
        assert_eq!(out, b"\xc3ghi");
        // Different length: type 1.
        out.clear();
        enc.write_message(3, 20, 0, 80, b"jk", &mut out);
        assert_eq!(out, b"\x43\x00\x00\x00\x00\x00\x02\x14jk");
        // Stream id change: type 0, stream id little endian.
        out.clear();
        enc.write_message(3, 20, 1, 80, b"jk", &mut out);
        assert_eq!(out, b"\x03\x00\x00\x50\x00\x00\x02\x14\x01\x00\x00\x00jk");
    }

    #[test]
    fn basic_header_forms() {
        for (csid, want) in [
            (2u32, vec![0x02]),
            (63, vec![0x3f]),
            (64, vec![0x00, 0x00]),
            (319, vec![0x00, 0xff]),
            (320, vec![0x01, 0x00, 0x01]),
            (65599, vec![0x01, 0xff, 0xff]),
        ] {
            let mut out = Vec::new();
            basic_header(0, csid, &mut out);
            assert_eq!(out, want, "csid {csid}");
        }
    }

    #[test]
    fn round_trip_sizes_chunk_sizes_csids() {
        for &chunk_size in &[1u32, 2, 128, 4096, 65536] {
            for &csid in &[2u32, 3, 63, 64, 100, 319, 320, 1000, 65599] {
                let mut enc = ChunkEncoder::new();
                let mut dec = ChunkDecoder::default();
                let mut bytes = Vec::new();
                enc.set_chunk_size(chunk_size, &mut bytes).unwrap();
                let mut want = Vec::new();
                for (i, &n) in [0usize, 1, 127, 128, 129, 300, 4096, 10_000, 10_000, 10_000]
                    .iter()
                    .enumerate()
                {
                    let p = payload(n, i as u8);
                    let ts = i as u64 * 33;
                    enc.write_message(csid, 9, 1, ts, &p, &mut bytes);
                    want.push((ts, p));
                }
                let msgs = decode_all(&mut dec, &bytes, 777);
                assert_eq!(msgs[0].msg_type, msg_type::SET_CHUNK_SIZE);
                assert_eq!(dec.chunk_size(), chunk_size);
                let got: Vec<_> = msgs[1..]
                    .iter()
                    .map(|m| (m.timestamp, m.payload.clone()))
                    .collect();
                assert_eq!(got, want, "chunk size {chunk_size} csid {csid}");
                assert!(msgs[1..]
                    .iter()
                    .all(|m| m.csid == csid && m.stream_id == 1 && m.msg_type == 9));
            }
        }
    }

    #[test]
    fn interleaved_chunk_streams() {
        // Chunks of two messages on different csids interleave on the wire (§5.3.2.2).
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut enc = ChunkEncoder::new();
        enc.write_message(4, 8, 1, 10, &payload(300, 1), &mut a);
        enc.write_message(6, 9, 1, 20, &payload(300, 2), &mut b);
        // a: 12+128, 1+128, 1+44; b likewise.
        let mut wire = Vec::new();
        wire.extend_from_slice(&a[..140]);
        wire.extend_from_slice(&b[..140]);
        wire.extend_from_slice(&a[140..]);
        wire.extend_from_slice(&b[140..]);
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire, 5);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].csid, msgs[0].payload.clone()),
            (4, payload(300, 1))
        );
        assert_eq!((msgs[1].csid, msgs[1].timestamp), (6, 20));
    }

    #[test]
    fn extended_timestamps_repeat_in_type3() {
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        enc.write_message(6, 9, 1, 0x0100_0000, &payload(200, 0), &mut out);
        // Type 0 with 0xFFFFFF then the 4-byte timestamp; the continuation repeats it.
        assert_eq!(&out[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(&out[12..16], &[0x01, 0, 0, 0]);
        assert_eq!(out[16 + 128], 0xc6);
        assert_eq!(&out[17 + 128..21 + 128], &[0x01, 0, 0, 0]);
        let msgs = decode_all(&mut ChunkDecoder::default(), &out, 3);
        assert_eq!(msgs[0].timestamp, 0x0100_0000);
        assert_eq!(msgs[0].payload, payload(200, 0));
    }

    #[test]
    fn extended_timestamp_not_repeated_is_tolerated() {
        // Type 0, extended ts 0x01000000, 130-byte message; the type-3 continuation does not
        // repeat the extended timestamp.
        let p = payload(130, 9);
        let mut wire = vec![0x06, 0xff, 0xff, 0xff, 0, 0, 130, 9, 1, 0, 0, 0, 1, 0, 0, 0];
        wire.extend_from_slice(&p[..128]);
        wire.push(0xc6);
        wire.extend_from_slice(&p[128..]);
        wire.extend_from_slice(&[0x06, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 7]);
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire, 1000);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].payload, p);
        assert_eq!(msgs[0].timestamp, 0x0100_0000);
    }

    #[test]
    fn timestamps_cross_24_bits_and_wrap_32() {
        let mut enc = ChunkEncoder::new();
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        // 40 ms steps around 0xFFFFFF = 16777215 ms (2^24 − 1; 4.66 h), with a few jumps,
        // then across 2^32.
        let mut ts: u64 = 0xFF_FFFF - 400;
        for i in 0..40u64 {
            let p = payload(150 + (i as usize % 3), i as u8);
            enc.write_message(6, 9, 1, ts, &p, &mut bytes);
            enc.write_message(4, 8, 1, ts + 5, &p[..20], &mut bytes);
            want.push(ts);
            ts += if i == 20 { 0x0100_0000 } else { 40 };
        }
        ts = (1u64 << 32) - 200;
        for i in 0..10u64 {
            enc.write_message(6, 9, 1, ts, &payload(10, i as u8), &mut bytes);
            want.push(ts);
            ts += 40;
        }
        // A backwards jump (seek) uses a type 0, unwrapped next to the previous timestamp.
        enc.write_message(6, 9, 1, (1 << 32) - 5000, b"x", &mut bytes);
        want.push((1 << 32) - 5000);
        let msgs = decode_all(&mut ChunkDecoder::default(), &bytes, 61);
        let got: Vec<u64> = msgs
            .iter()
            .filter(|m| m.csid == 6)
            .map(|m| m.timestamp)
            .collect();
        assert_eq!(got, want);
        assert!(msgs
            .iter()
            .filter(|m| m.csid == 4)
            .all(|m| m.payload.len() == 20));
        assert!(got.iter().any(|&t| t > 1 << 32));
    }

    #[test]
    fn type0_wrap_is_unwrapped() {
        assert_eq!(unwrap_ts(5, (1 << 32) - 10), (1 << 32) + 5);
        assert_eq!(unwrap_ts(u32::MAX - 5, (1 << 32) + 10), (1 << 32) - 6);
        assert_eq!(unwrap_ts(u32::MAX, 0), u64::from(u32::MAX));
        assert_eq!(unwrap_ts(1000, 5_000_000), 1000);
    }

    fn set_chunk_size_msg(size: u32) -> Vec<u8> {
        let mut v = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
        v.extend_from_slice(&size.to_be_bytes());
        v
    }

    #[test]
    fn bad_chunk_sizes() {
        for bad in [0u32, 17 << 20, 0x7FFF_FFFF, 0x8000_0000, u32::MAX] {
            let mut dec = ChunkDecoder::default();
            dec.push(&set_chunk_size_msg(bad));
            let e = dec.poll().unwrap_err();
            if bad == 0 || bad > SPEC_MAX_CHUNK_SIZE {
                assert_eq!(e, ChunkError::BadChunkSize(bad));
            } else {
                assert_eq!(
                    e,
                    ChunkError::ChunkSizeTooLarge {
                        size: bad,
                        limit: MAX_CHUNK_SIZE,
                        phase: Phase::Open
                    }
                );
            }
            assert!(ChunkEncoder::new()
                .set_chunk_size(bad, &mut Vec::new())
                .is_err());
        }
        assert_eq!(
            ChunkError::BadChunkSize(0).to_string(),
            "chunk size 0 is invalid (valid: 1..=16777216)"
        );
        let mut dec = ChunkDecoder::default();
        dec.push(&set_chunk_size_msg(MAX_CHUNK_SIZE));
        assert!(dec.poll().unwrap().is_some());
        assert_eq!(dec.chunk_size(), MAX_CHUNK_SIZE);
        let mut dec = ChunkDecoder::default();
        dec.push(&[0x02, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            dec.poll(),
            Err(ChunkError::ShortControl { len: 2, .. })
        ));
    }

    #[test]
    fn too_long_message() {
        let mut dec = ChunkDecoder::new(1000);
        dec.push(&[0x03, 0, 0, 0, 0, 0x03, 0xe9, 20, 0, 0, 0, 0]);
        let e = dec.poll().unwrap_err();
        assert_eq!(
            e.to_string(),
            "message of 1001 bytes on chunk stream 3 (limit 1000 bytes)"
        );
        // Exactly the limit is fine.
        let mut dec = ChunkDecoder::new(1000);
        dec.push(&[0x03, 0, 0, 0, 0, 0x03, 0xe8, 20, 0, 0, 0, 0]);
        assert_eq!(dec.poll().unwrap(), None);
    }

    #[test]
    fn header_without_type0_and_too_many_streams() {
        let mut dec = ChunkDecoder::default();
        dec.push(&[0xc5]);
        assert_eq!(
            dec.poll().unwrap_err(),
            ChunkError::NoPreviousHeader { csid: 5, fmt: 3 }
        );
        let mut dec = ChunkDecoder::default();
        dec.set_max_chunk_streams(3);
        let mut enc = ChunkEncoder::new();
        let mut out = Vec::new();
        for csid in 3..7 {
            enc.write_message(csid, 20, 0, 0, b"", &mut out);
        }
        dec.push(&out);
        for _ in 0..3 {
            assert!(dec.poll().unwrap().is_some());
        }
        assert!(matches!(
            dec.poll(),
            Err(ChunkError::TooManyChunkStreams {
                csid: 6,
                max: 3,
                phase: Phase::Open
            })
        ));
    }

    /// A type 0 chunk header on `csid` (< 64) for a message of `len` bytes, type 20.
    fn type0(csid: u8, len: u32) -> Vec<u8> {
        let l = len.to_be_bytes();
        vec![csid, 0, 0, 0, l[1], l[2], l[3], 20, 0, 0, 0, 0]
    }

    #[test]
    fn before_connect_five_chunk_streams_is_one_too_many() {
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        for csid in 2..7 {
            enc.write_message(csid, 20, 0, 0, b"x", &mut wire);
        }
        dec.push(&wire);
        for _ in 0..4 {
            assert!(dec.poll().unwrap().is_some());
        }
        let e = dec.poll().unwrap_err();
        assert_eq!(
            e.to_string(),
            "chunk stream 6 exceeds the limit of 4 chunk streams before connect"
        );
    }

    #[test]
    fn before_connect_a_1_mib_message_is_refused_from_its_header() {
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        // The 12-byte header alone: no payload needed, nothing reserved.
        dec.push(&type0(3, 1 << 20));
        let e = dec.poll().unwrap_err();
        assert_eq!(
            e,
            ChunkError::MessageTooLong {
                len: 1 << 20,
                csid: 3,
                limit: PRE_AUTH_MAX_MESSAGE,
                phase: Phase::BeforeConnect
            }
        );
        assert_eq!(
            e.to_string(),
            "message of 1048576 bytes on chunk stream 3 before connect (limit 65536 bytes)"
        );
        assert_eq!(dec.partial_bytes(), 0);
        // Before a publish or play is accepted, too; 64 KiB exactly is fine.
        let mut dec = ChunkDecoder::with_limits(Limits::before_accept(DEFAULT_MAX_MESSAGE));
        dec.push(&type0(3, 64 << 10));
        assert_eq!(dec.poll(), Ok(None));
        let mut dec = ChunkDecoder::with_limits(Limits::before_accept(DEFAULT_MAX_MESSAGE));
        dec.push(&type0(4, (64 << 10) + 1));
        assert!(dec
            .poll()
            .unwrap_err()
            .to_string()
            .ends_with("before a publish or play is accepted (limit 65536 bytes)"));
    }

    #[test]
    fn partly_received_messages_share_one_budget() {
        // Before connect: three 64 KiB messages begun on three chunk streams reserve 192 KiB,
        // over the 128 KiB budget: the third chunk stream's first chunk is refused.
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        for csid in 2..5u8 {
            let mut chunk = type0(csid, 64 << 10);
            chunk.extend_from_slice(&[0u8; 128]);
            dec.push(&chunk);
            let r = dec.poll();
            if csid < 4 {
                assert_eq!(r, Ok(None));
                assert_eq!(dec.partial_bytes(), usize::from(csid - 1) * (64 << 10));
            } else {
                assert_eq!(
                    r.unwrap_err().to_string(),
                    "chunk stream 4: partly received messages would hold 196608 bytes \
                     before connect (limit 131072 bytes)"
                );
            }
        }
        // An Abort gives a message's reservation back; so does its completion.
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        let mut wire = type0(5, 1000);
        wire.extend_from_slice(&[0u8; 128]);
        dec.push(&wire);
        assert_eq!(dec.poll(), Ok(None));
        assert_eq!(dec.partial_bytes(), 1000);
        let mut enc = ChunkEncoder::new();
        let mut abort = Vec::new();
        enc.write_message(2, msg_type::ABORT, 0, 0, &5u32.to_be_bytes(), &mut abort);
        dec.push(&abort);
        assert_eq!(
            dec.poll().unwrap().map(|m| m.msg_type),
            Some(msg_type::ABORT)
        );
        assert_eq!(dec.partial_bytes(), 0);
        let mut msg = Vec::new();
        enc.write_message(3, 20, 0, 0, &[7u8; 300], &mut msg);
        dec.push(&msg[..200]);
        assert_eq!(dec.poll(), Ok(None));
        assert_eq!(dec.partial_bytes(), 300);
        dec.push(&msg[200..]);
        assert_eq!(dec.poll().unwrap().map(|m| m.payload.len()), Some(300));
        assert_eq!(dec.partial_bytes(), 0);
    }

    #[test]
    fn the_budget_counts_growth_and_replaced_messages() {
        let limits = Limits {
            max_partial: 300_000,
            ..Limits::open(DEFAULT_MAX_MESSAGE)
        };
        let mut dec = ChunkDecoder::with_limits(limits);
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.set_chunk_size(100_000, &mut wire).unwrap();
        dec.push(&wire);
        assert!(dec.poll().unwrap().is_some());
        // A 200 000-byte message's first 100 000-byte chunk grows its reservation to 128 KiB.
        for csid in [3u8, 4] {
            let mut chunk = type0(csid, 200_000);
            chunk.extend_from_slice(&[1u8; 100_000]);
            dec.push(&chunk);
            assert_eq!(dec.poll(), Ok(None));
        }
        assert_eq!(dec.partial_bytes(), 2 * (128 << 10));
        // A new header on chunk stream 4 drops its message and its reservation.
        dec.push(&type0(4, 10));
        dec.push(&[2u8; 10]);
        assert_eq!(dec.poll().unwrap().map(|m| m.payload), Some(vec![2u8; 10]));
        assert_eq!(dec.partial_bytes(), 128 << 10);
        // Two more in progress would need 384 KiB.
        let mut chunk = type0(4, 200_000);
        chunk.extend_from_slice(&[1u8; 100_000]);
        dec.push(&chunk);
        assert_eq!(dec.poll(), Ok(None));
        let mut chunk = type0(5, 200_000);
        chunk.extend_from_slice(&[1u8; 100_000]);
        dec.push(&chunk);
        assert!(matches!(
            dec.poll(),
            Err(ChunkError::TooMuchPartial {
                csid: 5,
                total: 393_216,
                limit: 300_000,
                phase: Phase::Open
            })
        ));
    }

    #[test]
    fn set_chunk_size_is_range_checked_per_phase() {
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        dec.push(&set_chunk_size_msg(64 << 10));
        assert!(dec.poll().unwrap().is_some());
        assert_eq!(dec.chunk_size(), 64 << 10);
        dec.push(&set_chunk_size_msg((64 << 10) + 1));
        assert_eq!(
            dec.poll().unwrap_err().to_string(),
            "Set Chunk Size of 65537 bytes before connect (limit 65536 bytes)"
        );
        // Once connected, a client may announce the chunk size of its media.
        let mut dec = ChunkDecoder::with_limits(Limits::before_accept(DEFAULT_MAX_MESSAGE));
        dec.push(&set_chunk_size_msg(1 << 20));
        assert!(dec.poll().unwrap().is_some());
        // Raising the limits keeps the chunk streams in use and lets big messages through.
        let mut dec = ChunkDecoder::with_limits(Limits::before_connect(DEFAULT_MAX_MESSAGE));
        let mut enc = ChunkEncoder::new();
        let mut wire = Vec::new();
        enc.write_message(6, 9, 1, 0, &payload(100, 0), &mut wire);
        dec.push(&wire);
        assert!(dec.poll().unwrap().is_some());
        dec.set_limits(Limits::open(DEFAULT_MAX_MESSAGE));
        wire.clear();
        enc.write_message(6, 9, 1, 40, &payload(1 << 20, 1), &mut wire);
        let msgs = decode_all(&mut dec, &wire, 4096);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].payload, payload(1 << 20, 1));
        assert_eq!(dec.partial_bytes(), 0);
    }

    #[test]
    fn abort_drops_partial_message() {
        let mut enc = ChunkEncoder::new();
        let mut a = Vec::new();
        enc.write_message(4, 8, 1, 0, &payload(200, 0), &mut a);
        let mut wire = a[..140].to_vec();
        enc.write_message(2, msg_type::ABORT, 0, 0, &4u32.to_be_bytes(), &mut wire);
        enc.write_message(4, 8, 1, 0, b"new", &mut wire);
        let msgs = decode_all(&mut ChunkDecoder::default(), &wire, 1000);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].msg_type, msg_type::ABORT);
        assert_eq!(msgs[1].payload, b"new");
    }

    fn materialize(hdrs: &[u8], parts: &[&[u8]], plan: &[Span]) -> Vec<u8> {
        let mut v = Vec::new();
        for s in plan {
            match s {
                Span::Own(r) => v.extend_from_slice(&hdrs[r.clone()]),
                Span::Part(i, r) => v.extend_from_slice(&parts[*i][r.clone()]),
            }
        }
        v
    }

    #[test]
    fn parts_plan_equals_write_message() {
        let body = payload(5000, 3);
        let tag = [0x17u8, 1, 0, 0, 0];
        for chunk_size in [1u32, 5, 6, 128, 4096, 10_000] {
            let mut a = ChunkEncoder::new();
            let mut b = ChunkEncoder::new();
            let (mut wa, mut hdrs, mut plan) = (Vec::new(), Vec::new(), Vec::new());
            a.set_chunk_size(chunk_size, &mut wa).unwrap();
            b.set_chunk_size(chunk_size, &mut hdrs).unwrap();
            plan.push(Span::Own(0..hdrs.len()));
            let parts: [&[u8]; 4] = [&tag, &[], &body, &body[..7]];
            for i in 0..4u64 {
                let mut joined = tag.to_vec();
                joined.extend_from_slice(&body);
                joined.extend_from_slice(&body[..7]);
                let ts = 0xFF_FFF0 + i * 20;
                a.write_message(6, 9, 1, ts, &joined, &mut wa);
                b.write_message_parts(6, 9, 1, ts, &parts, &mut hdrs, &mut plan);
            }
            assert_eq!(
                materialize(&hdrs, &parts, &plan),
                wa,
                "chunk size {chunk_size}"
            );
            assert!(hdrs.len() < wa.len() / 2 || chunk_size < 10);
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            step in 1usize..64,
            phase in 0..3u8,
        ) {
            let limits = match phase {
                0 => Limits::before_connect(4096),
                1 => Limits::before_accept(4096),
                _ => Limits { max_partial: 8192, ..Limits::open(4096) },
            };
            let mut dec = ChunkDecoder::with_limits(limits);
            for piece in bytes.chunks(step) {
                dec.push(piece);
                // Keeps going after an error too: still no panic, still within the budget.
                while let Ok(Some(m)) = dec.poll() {
                    prop_assert!(m.payload.len() <= limits.max_message);
                }
                prop_assert!(dec.partial_bytes() <= limits.max_partial);
            }
        }

        #[test]
        fn round_trip_arbitrary(
            msgs in prop::collection::vec(
                (prop::sample::select(vec![2u32, 3, 4, 6, 63, 64, 300, 320, 5000]),
                 prop::sample::select(vec![8u8, 9, 18, 20]),
                 0u32..3,
                 0u64..0x2_0000_0000,
                 0usize..600), 1..30),
            chunk_size in prop::sample::select(vec![1u32, 7, 128, 129, 4096]),
            step in 1usize..300,
        ) {
            let mut enc = ChunkEncoder::new();
            let mut wire = Vec::new();
            enc.set_chunk_size(chunk_size, &mut wire).unwrap();
            let mut want = Vec::new();
            for (i, &(csid, typ, sid, ts, len)) in msgs.iter().enumerate() {
                let p = payload(len, i as u8);
                enc.write_message(csid, typ, sid, ts, &p, &mut wire);
                want.push((csid, typ, sid, ts, p));
            }
            let got: Vec<_> = decode_all(&mut ChunkDecoder::default(), &wire, step)
                .into_iter()
                .skip(1)
                .map(|m| (m.csid, m.msg_type, m.stream_id, m.timestamp, m.payload))
                .collect();
            // Timestamps are exact modulo 2^32 (the decoder unwraps by proximity).
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!((g.0, g.1, g.2, &g.4), (w.0, w.1, w.2, &w.4));
                prop_assert_eq!(g.3 as u32, w.3 as u32);
            }
        }
    }
}
