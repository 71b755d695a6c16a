//! MistServer's DTSC binary format: values, frames (`DTSC`, `DTP2`, `DTPD`, `DTCM`) and the
//! header ↔ [`Track`] mapping, byte-compatible with MistServer.
//!
//! Every fact used here comes from `docs/DTSC.md` (read from MistServer's
//! `lib/dtsc.cpp` and `lib/json.cpp`). All integers on the wire are big-endian.
//!
//! Sans-IO: [`parse_frame`] takes whatever bytes have arrived and answers `Ok(None)` until a
//! whole frame is there, so a reader can call it on its receive buffer after every read.
//! The media hot path ([`parse_packet`], [`write_packet`]) never builds a [`Value`] and
//! never copies the payload.
//!
//! Parsers here take untrusted bytes: they never panic, check that the bytes a length field
//! announces are present before using it, limit nesting to [`MAX_DEPTH`] and frames to
//! [`MAX_FRAME_LEN`].

use crate::model::{Codec, PacketRef, Track, TrackKind};

/// Frame magic of a header (stream or file metadata): one object follows (docs/DTSC.md, "Frames").
pub const MAGIC_HEADER: [u8; 4] = *b"DTSC";
/// Frame magic of a version-2 media packet: `u32` track id, `u64` time in ms, one object.
pub const MAGIC_PACKET: [u8; 4] = *b"DTP2";
/// Frame magic of a version-1 (legacy) media packet: one object with `trackid` and `time`.
pub const MAGIC_LEGACY_PACKET: [u8; 4] = *b"DTPD";
/// Frame magic of a command (`hi`, `play`, `push`, …): one object follows.
pub const MAGIC_COMMAND: [u8; 4] = *b"DTCM";

/// Largest frame body (the `u32` length after the magic) accepted, in bytes: 64 MiB.
/// Anything larger is rejected with [`WireError::TooLarge`] before any byte is awaited.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// Deepest nesting of objects and arrays a parser accepts (a header needs 3).
pub const MAX_DEPTH: usize = 32;

/// Bytes of a `DTP2` frame without optional members and payload: magic 4 + length 4 +
/// track id 4 + time 8 + object marker 1 + `data` key and string header 11 minus the 11
/// counted apart + terminator `00 00 EE` 3 (docs/DTSC.md, "Frame size").
const PACKET_BASE_LEN: usize = 24;
/// Bytes of an `offset` member: key length 2 + `offset` 6 + type 1 + i64 8.
const OFFSET_MEMBER_LEN: usize = 17;
/// Bytes of a `bpos` member: 2 + 4 + 1 + 8.
const BPOS_MEMBER_LEN: usize = 15;
/// Bytes of a `keyframe` member: 2 + 8 + 1 + 8.
const KEYFRAME_MEMBER_LEN: usize = 19;
/// Bytes of a `data` member before the payload: 2 + 4 + 1 + `u32` length 4.
const DATA_MEMBER_LEN: usize = 11;

const TYPE_INT: u8 = 0x01;
const TYPE_STRING: u8 = 0x02;
const TYPE_NULL: u8 = 0x03;
const TYPE_DOUBLE: u8 = 0x04;
const TYPE_ARRAY: u8 = 0x0A;
const TYPE_OBJECT: u8 = 0xE0;
const TYPE_LEGACY_OBJECT: u8 = 0xFF;
const TERMINATOR: [u8; 3] = [0x00, 0x00, 0xEE];

/// What went wrong reading DTSC bytes; offsets count from the start of the buffer given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A value, member or frame needs more bytes than the buffer (or frame) holds.
    #[error("DTSC data truncated at byte {offset}: {need} more bytes needed for {what}")]
    Truncated {
        /// Where the incomplete item starts.
        offset: usize,
        /// How many bytes are missing.
        need: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A value starts with a type byte that is not in docs/DTSC.md's table.
    #[error("unknown DTSC value type 0x{byte:02x} at byte {offset}")]
    UnknownType {
        /// The type byte.
        byte: u8,
        /// Its position.
        offset: usize,
    },
    /// Objects or arrays nested deeper than [`MAX_DEPTH`].
    #[error("DTSC values nested deeper than {max} levels at byte {offset}", max = MAX_DEPTH)]
    TooDeep {
        /// Position of the container that went too deep.
        offset: usize,
    },
    /// A zero key length (or a zero type byte in an array) not followed by `EE`.
    #[error("bad DTSC object/array terminator at byte {offset}: expected 00 00 EE")]
    BadTerminator {
        /// Position of the terminator.
        offset: usize,
    },
    /// An object key that is not UTF-8.
    #[error("DTSC object key at byte {offset} is not UTF-8")]
    BadKey {
        /// Position of the key bytes.
        offset: usize,
    },
    /// The first 4 bytes of a frame are none of `DTSC`, `DTP2`, `DTPD`, `DTCM`.
    #[error("unknown DTSC frame magic {magic:02x?} at byte 0")]
    UnknownMagic {
        /// The 4 bytes found.
        magic: [u8; 4],
    },
    /// A frame announces a body larger than [`MAX_FRAME_LEN`].
    #[error("DTSC frame body of {len} bytes exceeds the {max}-byte limit", max = MAX_FRAME_LEN)]
    TooLarge {
        /// The announced body length, bytes.
        len: usize,
    },
    /// A `DTP2` frame whose object is not what a media packet holds.
    #[error("bad DTP2 packet at byte {offset}: {what}")]
    BadPacket {
        /// What was wrong.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// A `DTSC` header value that cannot be turned into tracks.
    #[error("bad DTSC header: {0}")]
    BadHeader(String),
}

/// One DTSC value (docs/DTSC.md, "Value encoding"). Objects keep their members in wire order.
///
/// Booleans are [`Value::Int`] 0/1; strings are binary-safe (media payloads are strings).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Type `0x01`: signed 64-bit integer.
    Int(i64),
    /// Type `0x02`: `u32` length, then raw bytes.
    Str(Vec<u8>),
    /// Type `0x03`: null.
    Null,
    /// Type `0x04`: IEEE-754 double.
    Double(f64),
    /// Type `0xE0` (or legacy `0xFF`): members `(key, value)`, closed by `00 00 EE`.
    /// Keys are non-empty and at most 65535 bytes (a `u16` length; 0 is the end marker).
    Object(Vec<(String, Value)>),
    /// Type `0x0A`: values, closed by `00 00 EE`.
    Array(Vec<Value>),
}

impl Value {
    /// An object built from `(key, value)` pairs, in that order.
    pub fn obj<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A string value from UTF-8 text.
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    /// The first member named `key` of an object; `None` for a missing key or a non-object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The integer, or a double truncated toward zero; `None` for other types.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Double(d) if d.is_finite() => Some(d as i64),
            _ => None,
        }
    }

    /// The raw bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) => Some(b),
            _ => None,
        }
    }

    /// A string value as UTF-8 text; `None` if not a string or not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The members of an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

fn put_key(key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
}

fn put_int_member(key: &str, v: i64, out: &mut Vec<u8>) {
    put_key(key.as_bytes(), out);
    out.push(TYPE_INT);
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends the DTSC encoding of `v` to `out` (docs/DTSC.md, "Value encoding").
///
/// Members that DTSC cannot represent are skipped: empty keys (a zero key length is the end
/// marker) and keys longer than 65535 bytes. Strings are limited to `u32::MAX` bytes (longer
/// ones are cut); frames are limited to [`MAX_FRAME_LEN`] anyway.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            out.push(TYPE_INT);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Value::Str(s) => {
            let len = s.len().min(u32::MAX as usize);
            out.push(TYPE_STRING);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(&s[..len]);
        }
        Value::Null => out.push(TYPE_NULL),
        Value::Double(d) => {
            out.push(TYPE_DOUBLE);
            out.extend_from_slice(&d.to_bits().to_be_bytes());
        }
        Value::Object(members) => {
            out.push(TYPE_OBJECT);
            for (k, v) in members {
                if k.is_empty() || k.len() > u16::MAX as usize {
                    continue;
                }
                put_key(k.as_bytes(), out);
                encode_value(v, out);
            }
            out.extend_from_slice(&TERMINATOR);
        }
        Value::Array(items) => {
            out.push(TYPE_ARRAY);
            for v in items {
                encode_value(v, out);
            }
            out.extend_from_slice(&TERMINATOR);
        }
    }
}

/// The number of bytes [`encode_value`] appends for `v`.
pub fn encoded_len(v: &Value) -> usize {
    match v {
        Value::Int(_) | Value::Double(_) => 9,
        Value::Null => 1,
        Value::Str(s) => 5 + s.len().min(u32::MAX as usize),
        Value::Object(m) => {
            1 + 3
                + m.iter()
                    .filter(|(k, _)| !k.is_empty() && k.len() <= u16::MAX as usize)
                    .map(|(k, v)| 2 + k.len() + encoded_len(v))
                    .sum::<usize>()
        }
        Value::Array(a) => 1 + 3 + a.iter().map(encoded_len).sum::<usize>(),
    }
}

/// A bounds-checked big-endian reader over a byte slice; positions are absolute within it.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(WireError::Truncated {
                offset: self.pos,
                need: n - left,
                what,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Reads the `EE` that ends a terminator whose two zero bytes were already consumed.
    fn end_marker(&mut self, start: usize) -> Result<(), WireError> {
        if self.u8("terminator")? != 0xEE {
            return Err(WireError::BadTerminator { offset: start });
        }
        Ok(())
    }

    /// Reads one object key; `None` at the `00 00 EE` terminator (consumed).
    fn key(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let start = self.pos;
        let len = self.u16("object key length")? as usize;
        if len == 0 {
            self.end_marker(start)?;
            return Ok(None);
        }
        Ok(Some(self.take(len, "object key")?))
    }

    /// True (and the terminator consumed) when an array's next bytes are `00 00 EE`.
    fn array_end(&mut self) -> Result<bool, WireError> {
        let start = self.pos;
        if self.buf.get(self.pos) != Some(&0) {
            return Ok(false);
        }
        self.take(2, "array terminator")?;
        self.end_marker(start)?;
        Ok(true)
    }

    fn value(&mut self, depth: usize) -> Result<Value, WireError> {
        let start = self.pos;
        let ty = self.u8("value type")?;
        Ok(match ty {
            TYPE_INT => Value::Int(self.u64("integer")? as i64),
            TYPE_STRING => {
                let len = self.u32("string length")? as usize;
                Value::Str(self.take(len, "string")?.to_vec())
            }
            TYPE_NULL => Value::Null,
            TYPE_DOUBLE => Value::Double(f64::from_bits(self.u64("double")?)),
            TYPE_OBJECT | TYPE_LEGACY_OBJECT => {
                if depth >= MAX_DEPTH {
                    return Err(WireError::TooDeep { offset: start });
                }
                let mut members = Vec::new();
                loop {
                    let key_pos = self.pos + 2;
                    let Some(key) = self.key()? else { break };
                    let key = std::str::from_utf8(key)
                        .map_err(|_| WireError::BadKey { offset: key_pos })?
                        .to_owned();
                    members.push((key, self.value(depth + 1)?));
                }
                Value::Object(members)
            }
            TYPE_ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(WireError::TooDeep { offset: start });
                }
                let mut items = Vec::new();
                while !self.array_end()? {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            byte => {
                return Err(WireError::UnknownType {
                    byte,
                    offset: start,
                })
            }
        })
    }

    /// Skips one value without building it (used by the packet scan).
    fn skip_value(&mut self, depth: usize) -> Result<(), WireError> {
        let start = self.pos;
        match self.u8("value type")? {
            TYPE_INT | TYPE_DOUBLE => {
                self.take(8, "number")?;
            }
            TYPE_STRING => {
                let len = self.u32("string length")? as usize;
                self.take(len, "string")?;
            }
            TYPE_NULL => {}
            TYPE_OBJECT | TYPE_LEGACY_OBJECT => {
                if depth >= MAX_DEPTH {
                    return Err(WireError::TooDeep { offset: start });
                }
                while self.key()?.is_some() {
                    self.skip_value(depth + 1)?;
                }
            }
            TYPE_ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(WireError::TooDeep { offset: start });
                }
                while !self.array_end()? {
                    self.skip_value(depth + 1)?;
                }
            }
            byte => {
                return Err(WireError::UnknownType {
                    byte,
                    offset: start,
                })
            }
        }
        Ok(())
    }
}

/// Decodes one value from the start of `buf`; returns it and the bytes it used.
///
/// Errors carry the byte offset within `buf`. Never panics; nesting is limited to
/// [`MAX_DEPTH`]; a string's bytes are checked to be present before they are copied.
pub fn decode_value(buf: &[u8]) -> Result<(Value, usize), WireError> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// One complete DTSC frame as read by [`parse_frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// `DTSC`: a header value (see [`Header::from_value`]).
    Header(Value),
    /// `DTP2`: a media packet, payload borrowed from the input buffer.
    Packet(PacketRef<'a>),
    /// `DTCM`: a command value such as `{"cmd":"hi",…}`.
    Command(Value),
    /// `DTPD`: a legacy (version 1) packet: an object with `trackid`, `time`, `data`, ….
    LegacyPacket(Value),
}

/// Reads the 8-byte frame prefix: the magic and the body length (bytes after the 8).
/// `Ok(None)` when fewer than 8 bytes are there.
fn frame_prefix(buf: &[u8]) -> Result<Option<([u8; 4], usize)>, WireError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let magic = [buf[0], buf[1], buf[2], buf[3]];
    if ![
        MAGIC_HEADER,
        MAGIC_PACKET,
        MAGIC_LEGACY_PACKET,
        MAGIC_COMMAND,
    ]
    .contains(&magic)
    {
        return Err(WireError::UnknownMagic { magic });
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge { len });
    }
    Ok(Some((magic, len)))
}

/// Parses one frame from the start of `buf` (a stream receive buffer or a file).
///
/// Returns `Ok(None)` while `buf` holds less than a whole frame (call again when more bytes
/// arrived), else the frame and its total length in bytes (8 + the announced length).
/// Rejects an unknown magic ([`WireError::UnknownMagic`]) and a body over
/// [`MAX_FRAME_LEN`] ([`WireError::TooLarge`]) as soon as the first 8 bytes are there.
/// Error offsets count from the start of `buf`.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some((magic, len)) = frame_prefix(buf)? else {
        return Ok(None);
    };
    let total = 8 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = &buf[..total];
    if magic == MAGIC_PACKET {
        return Ok(Some((Frame::Packet(parse_packet(frame)?), total)));
    }
    let mut r = Reader { buf: frame, pos: 8 };
    let v = r.value(0)?;
    let f = match magic {
        MAGIC_HEADER => Frame::Header(v),
        MAGIC_COMMAND => Frame::Command(v),
        _ => Frame::LegacyPacket(v),
    };
    Ok(Some((f, total)))
}

/// Parses a complete `DTP2` frame (magic included) without building a [`Value`]; the
/// payload is borrowed from `frame`.
///
/// Layout (docs/DTSC.md, "Frames" and "Media packet"): `DTP2`, `u32` length, `u32` track id,
/// `u64` time (ms, the DTS), then an object scanned for `offset` (composition offset, ms),
/// `bpos` (bytes), `keyframe` (non-zero = keyframe), `Keyframe` (MistServer's cleared flag:
/// 0 = not a keyframe) and `data` (the payload string). Other members are skipped; members
/// may come in any order. A packet without `data` is an error. Bytes after the announced
/// length are ignored.
pub fn parse_packet(frame: &[u8]) -> Result<PacketRef<'_>, WireError> {
    match frame_prefix(frame)? {
        None => Err(WireError::Truncated {
            offset: 0,
            need: 8 - frame.len(),
            what: "DTP2 frame prefix",
        }),
        Some((MAGIC_PACKET, len)) => {
            if frame.len() < 8 + len {
                return Err(WireError::Truncated {
                    offset: 0,
                    need: 8 + len - frame.len(),
                    what: "DTP2 frame",
                });
            }
            scan_packet(&frame[..8 + len])
        }
        Some((magic, _)) => Err(WireError::UnknownMagic { magic }),
    }
}

fn scan_packet(frame: &[u8]) -> Result<PacketRef<'_>, WireError> {
    let mut r = Reader { buf: frame, pos: 8 };
    let track = r.u32("track id")?;
    let dts = r.u64("time")?;
    let obj_pos = r.pos;
    let ty = r.u8("packet object")?;
    if ty != TYPE_OBJECT && ty != TYPE_LEGACY_OBJECT {
        return Err(WireError::BadPacket {
            what: "body is not an object",
            offset: obj_pos,
        });
    }
    let mut p = PacketRef {
        track,
        dts,
        offset: 0,
        keyframe: false,
        bpos: 0,
        data: &[],
    };
    let mut have_data = false;
    while let Some(key) = r.key()? {
        let value_pos = r.pos;
        let ty = frame.get(value_pos).copied();
        match key {
            b"offset" | b"bpos" | b"keyframe" | b"Keyframe" => {
                if ty != Some(TYPE_INT) {
                    r.skip_value(1)?;
                    continue;
                }
                r.pos += 1;
                let i = r.u64("integer")? as i64;
                match key {
                    b"offset" => p.offset = i,
                    b"bpos" => p.bpos = i as u64,
                    _ => p.keyframe = i != 0,
                }
            }
            b"data" => {
                if ty != Some(TYPE_STRING) {
                    return Err(WireError::BadPacket {
                        what: "data member is not a string",
                        offset: value_pos,
                    });
                }
                r.pos += 1;
                let len = r.u32("string length")? as usize;
                p.data = r.take(len, "payload")?;
                have_data = true;
            }
            _ => r.skip_value(1)?,
        }
    }
    if !have_data {
        return Err(WireError::BadPacket {
            what: "no data member",
            offset: obj_pos,
        });
    }
    Ok(p)
}

/// Where DTSC frames go as a producer makes them (the FLV and RTP ingests, a DTSC push):
/// appended as bytes to a `Vec<u8>` ([`write_header`], [`write_packet`]), or handed as values
/// to a sink that encodes each once and reads what it needs (track, keyframe) from the value
/// instead of parsing the bytes again (a publisher keeping its GOP).
pub trait FrameSink {
    /// A `DTSC` header: the stream's tracks.
    fn header(&mut self, h: &Header);
    /// A `DTP2` packet.
    fn packet(&mut self, p: &PacketRef);
}

impl FrameSink for Vec<u8> {
    fn header(&mut self, h: &Header) {
        write_header(h, self);
    }

    fn packet(&mut self, p: &PacketRef) {
        write_packet(p, self);
    }
}

/// The size in bytes of the `DTP2` frame [`write_packet`] writes for `p`:
/// 24 + 17 (if `offset` ≠ 0) + 15 (if `bpos` ≠ 0) + 19 (if keyframe) + 11 + payload
/// (docs/DTSC.md, "Media packet").
pub fn packet_frame_len(p: &PacketRef) -> usize {
    PACKET_BASE_LEN
        + if p.offset != 0 { OFFSET_MEMBER_LEN } else { 0 }
        + if p.bpos != 0 { BPOS_MEMBER_LEN } else { 0 }
        + if p.keyframe { KEYFRAME_MEMBER_LEN } else { 0 }
        + DATA_MEMBER_LEN
        + p.data.len()
}

/// Appends `p` as a `DTP2` frame of exactly [`packet_frame_len`] bytes: `DTP2`, `u32`
/// length, `u32` track id, `u64` DTS (ms), then an object with, in this order and only where
/// stated, `offset` (≠ 0), `bpos` (≠ 0), `keyframe: 1` (keyframes) and `data`
/// (docs/DTSC.md, "Media packet": some MistServer code finds members by position).
///
/// The payload must fit the frame limit ([`MAX_FRAME_LEN`]); a larger one is written but
/// [`parse_frame`] will refuse it.
pub fn write_packet(p: &PacketRef, out: &mut Vec<u8>) {
    out.reserve(packet_frame_len(p));
    write_packet_head(p, out);
    out.extend_from_slice(p.data);
    out.extend_from_slice(&TERMINATOR);
}

/// The bytes of `p`'s `DTP2` frame before its payload: [`write_packet`] is this, then
/// `p.data`, then [`PACKET_TAIL`] (for writers that send the payload from where it lies).
pub fn write_packet_head(p: &PacketRef, out: &mut Vec<u8>) {
    let total = packet_frame_len(p);
    out.extend_from_slice(&MAGIC_PACKET);
    out.extend_from_slice(&((total - 8) as u32).to_be_bytes());
    out.extend_from_slice(&p.track.to_be_bytes());
    out.extend_from_slice(&p.dts.to_be_bytes());
    out.push(TYPE_OBJECT);
    if p.offset != 0 {
        put_int_member("offset", p.offset, out);
    }
    if p.bpos != 0 {
        put_int_member("bpos", p.bpos as i64, out);
    }
    if p.keyframe {
        put_int_member("keyframe", 1, out);
    }
    put_key(b"data", out);
    out.push(TYPE_STRING);
    out.extend_from_slice(&(p.data.len() as u32).to_be_bytes());
}

/// The bytes of a `DTP2` frame after its payload (the object's end marker).
pub const PACKET_TAIL: &[u8] = &TERMINATOR;

fn write_value_frame(magic: [u8; 4], v: &Value, out: &mut Vec<u8>) {
    let len = encoded_len(v);
    out.reserve(8 + len);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    encode_value(v, out);
}

/// Appends a `DTCM` command frame holding `v` (normally an object with `cmd`).
pub fn write_command(v: &Value, out: &mut Vec<u8>) {
    write_value_frame(MAGIC_COMMAND, v, out);
}

/// Appends a `DTSC` header frame holding `v` (see [`Header::to_value`]).
pub fn write_header_value(v: &Value, out: &mut Vec<u8>) {
    write_value_frame(MAGIC_HEADER, v, out);
}

/// A stream's DTSC header without index members (docs/DTSC.md, "Header (DTSC)").
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// `live: 1` when true, `vod: 1` when false.
    pub live: bool,
    /// Unix time in ms of the stream's time zero (`unixzero`, live only).
    pub unixzero: Option<i64>,
    /// The tracks, in the order written.
    pub tracks: Vec<Track>,
}

fn int(v: impl TryInto<i64>) -> Value {
    Value::Int(v.try_into().unwrap_or(i64::MAX))
}

fn track_to_value(t: &Track) -> Value {
    let mut m: Vec<(String, Value)> = vec![
        ("trackid".into(), int(t.id)),
        ("firstms".into(), int(t.firstms)),
        ("lastms".into(), int(t.lastms)),
        ("bps".into(), int(t.bps)),
        ("maxbps".into(), int(t.maxbps)),
        ("init".into(), Value::Str(t.init.clone())),
        ("codec".into(), Value::str(t.codec.as_str())),
        ("type".into(), Value::str(t.kind.as_str())),
    ];
    if let Some(lang) = &t.lang {
        m.push(("lang".into(), Value::str(lang)));
    }
    match t.kind {
        TrackKind::Audio => {
            m.push(("rate".into(), int(t.rate)));
            m.push(("size".into(), int(t.bits)));
            m.push(("channels".into(), int(t.channels)));
        }
        TrackKind::Video => {
            m.push(("width".into(), int(t.width)));
            m.push(("height".into(), int(t.height)));
            m.push(("fpks".into(), int(t.fpks)));
        }
        TrackKind::Meta => {}
    }
    Value::Object(m)
}

fn track_from_value(name: &str, v: &Value) -> Result<Track, WireError> {
    let bad = |what: &str| WireError::BadHeader(format!("track {name:?}: {what}"));
    if v.as_object().is_none() {
        return Err(bad("not an object"));
    }
    let id = v
        .get("trackid")
        .and_then(Value::as_int)
        .ok_or_else(|| bad("no integer trackid"))?;
    let id = u32::try_from(id).map_err(|_| bad("trackid out of range"))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no type"))?;
    let kind = TrackKind::parse(kind).ok_or_else(|| bad("unknown type"))?;
    let codec = v
        .get("codec")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no codec"))?;
    let mut t = Track::new(id, kind, Codec::parse(codec));
    let num = |k: &str| v.get(k).and_then(Value::as_int).unwrap_or(0).max(0) as u64;
    let n32 = |k: &str| num(k).min(u32::MAX as u64) as u32;
    t.init = v
        .get("init")
        .and_then(Value::as_bytes)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    t.width = n32("width");
    t.height = n32("height");
    t.fpks = n32("fpks");
    t.rate = n32("rate");
    t.channels = n32("channels");
    t.bits = n32("size");
    t.lang = v.get("lang").and_then(Value::as_str).map(str::to_owned);
    t.bps = n32("bps");
    t.maxbps = n32("maxbps");
    t.firstms = num("firstms");
    t.lastms = num("lastms");
    Ok(t)
}

impl Header {
    /// The DTSC header value: `live: 1` or `vod: 1`, `version: 4`, `unixzero` (live, when
    /// known), then `tracks`, an object keyed by [`Track::dtsc_name`] whose members are
    /// `trackid`, `firstms`, `lastms`, `bps`, `maxbps`, `init`, `codec`, `type`, `lang` (if
    /// set), then `rate`, `size`, `channels` (audio) or `width`, `height`, `fpks` (video).
    pub fn to_value(&self) -> Value {
        let mut top: Vec<(String, Value)> = Vec::new();
        top.push((if self.live { "live" } else { "vod" }.into(), Value::Int(1)));
        top.push(("version".into(), Value::Int(4)));
        if self.live {
            if let Some(z) = self.unixzero {
                top.push(("unixzero".into(), Value::Int(z)));
            }
        }
        let tracks = self
            .tracks
            .iter()
            .map(|t| (t.dtsc_name(), track_to_value(t)))
            .collect();
        top.push(("tracks".into(), Value::Object(tracks)));
        Value::Object(top)
    }

    /// Reads a header value, tolerantly: `live` is true when a non-zero `live` member is
    /// there, missing numeric members are 0, a missing `tracks` means no tracks. Each track
    /// needs an integer `trackid` (0 ..= `u32::MAX`), a known `type` and a `codec` string;
    /// index members (`keys`, `fragments`, …) are ignored.
    pub fn from_value(v: &Value) -> Result<Header, WireError> {
        if v.as_object().is_none() {
            return Err(WireError::BadHeader("top level is not an object".into()));
        }
        let live = v.get("live").and_then(Value::as_int).unwrap_or(0) != 0;
        let unixzero = v.get("unixzero").and_then(Value::as_int);
        let mut tracks = Vec::new();
        match v.get("tracks") {
            None | Some(Value::Null) => {}
            Some(Value::Object(members)) => {
                for (name, t) in members {
                    tracks.push(track_from_value(name, t)?);
                }
            }
            Some(_) => return Err(WireError::BadHeader("tracks is not an object".into())),
        }
        Ok(Header {
            live,
            unixzero,
            tracks,
        })
    }
}

/// Appends `h` as a `DTSC` header frame ([`Header::to_value`] then [`write_header_value`]).
pub fn write_header(h: &Header, out: &mut Vec<u8>) {
    write_header_value(&h.to_value(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkt(data: &[u8]) -> PacketRef<'_> {
        PacketRef {
            track: 1,
            dts: 40,
            offset: 80,
            keyframe: true,
            bpos: 0,
            data,
        }
    }

    /// A DTP2 keyframe with an offset, assembled by hand from docs/DTSC.md.
    fn golden_keyframe() -> Vec<u8> {
        let mut g = Vec::new();
        g.extend_from_slice(b"DTP2");
        g.extend_from_slice(&[0, 0, 0, 24 + 17 + 19 + 11 + 3 - 8]);
        g.extend_from_slice(&[0, 0, 0, 1]); // track 1
        g.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 40]); // time 40 ms
        g.push(0xE0);
        g.extend_from_slice(&[0, 6]);
        g.extend_from_slice(b"offset");
        g.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 80]);
        g.extend_from_slice(&[0, 8]);
        g.extend_from_slice(b"keyframe");
        g.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 1]);
        g.extend_from_slice(&[0, 4]);
        g.extend_from_slice(b"data");
        g.extend_from_slice(&[2, 0, 0, 0, 3, 0xAA, 0xBB, 0xCC]);
        g.extend_from_slice(&[0, 0, 0xEE]);
        g
    }

    #[test]
    fn keyframe_packet_matches_golden_bytes() {
        let data = [0xAA, 0xBB, 0xCC];
        let mut out = Vec::new();
        write_packet(&pkt(&data), &mut out);
        assert_eq!(out, golden_keyframe());
        assert_eq!(out.len(), packet_frame_len(&pkt(&data)));
        assert_eq!(out.len(), 24 + 17 + 19 + 11 + 3);
        assert_eq!(parse_packet(&out).unwrap(), pkt(&data));
    }

    #[test]
    fn size_formula_for_every_member_combination() {
        let data = vec![7u8; 100];
        for mask in 0..8 {
            let p = PacketRef {
                track: 3,
                dts: 123_456_789_012,
                offset: if mask & 1 != 0 { -40 } else { 0 },
                bpos: if mask & 2 != 0 { 4096 } else { 0 },
                keyframe: mask & 4 != 0,
                data: &data,
            };
            let mut out = Vec::new();
            write_packet(&p, &mut out);
            let want = 24
                + if mask & 1 != 0 { 17 } else { 0 }
                + if mask & 2 != 0 { 15 } else { 0 }
                + if mask & 4 != 0 { 19 } else { 0 }
                + 11
                + 100;
            assert_eq!(out.len(), want);
            assert_eq!(packet_frame_len(&p), want);
            assert_eq!(&out[out.len() - 3..], &[0, 0, 0xEE]);
            let (f, used) = parse_frame(&out).unwrap().unwrap();
            assert_eq!(used, want);
            assert_eq!(f, Frame::Packet(p));
        }
    }

    #[test]
    fn cleared_keyframe_flag_is_not_a_keyframe() {
        let mut g = golden_keyframe();
        let at = g.windows(8).position(|w| w == b"keyframe").unwrap();
        g[at] = b'K';
        g[at + 8 + 8] = 0; // value 1 -> 0, size unchanged
        let p = parse_packet(&g).unwrap();
        assert!(!p.keyframe);
        assert_eq!(p.offset, 80);
        assert_eq!(p.data, &[0xAA, 0xBB, 0xCC]);
    }

    #[test]
    fn packet_scan_skips_unknown_members_and_needs_data() {
        let v = Value::obj([
            ("extra", Value::Array(vec![Value::Null, Value::str("x")])),
            ("data", Value::Str(vec![1, 2])),
            ("bpos", Value::Int(99)),
        ]);
        let mut body = vec![0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5];
        encode_value(&v, &mut body);
        let mut f = b"DTP2".to_vec();
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        let p = parse_packet(&f).unwrap();
        assert_eq!((p.track, p.dts, p.bpos, p.data), (9, 5, 99, &[1u8, 2][..]));

        let mut body = vec![0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5];
        encode_value(&Value::obj([("bpos", Value::Int(1))]), &mut body);
        let mut f = b"DTP2".to_vec();
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&body);
        assert!(matches!(
            parse_packet(&f),
            Err(WireError::BadPacket { offset: 20, .. })
        ));
    }

    #[test]
    fn hi_command_golden_bytes() {
        let v = Value::obj([("cmd", Value::str("hi")), ("pack_method", Value::Int(2))]);
        let mut out = Vec::new();
        write_command(&v, &mut out);
        let mut g = b"DTCM".to_vec();
        let body: Vec<u8> = [
            &[0xE0, 0, 3][..],
            b"cmd",
            &[2, 0, 0, 0, 2],
            b"hi",
            &[0, 11],
            b"pack_method",
            &[1, 0, 0, 0, 0, 0, 0, 0, 2],
            &[0, 0, 0xEE],
        ]
        .concat();
        g.extend_from_slice(&(body.len() as u32).to_be_bytes());
        g.extend_from_slice(&body);
        assert_eq!(out, g);
        let (f, used) = parse_frame(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(f, Frame::Command(v));
    }

    #[test]
    fn value_encodings_match_the_table() {
        let mut out = Vec::new();
        encode_value(&Value::Int(-2), &mut out);
        assert_eq!(out, [1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
        out.clear();
        encode_value(&Value::Null, &mut out);
        assert_eq!(out, [3]);
        out.clear();
        encode_value(&Value::Double(1.0), &mut out);
        assert_eq!(out, [4, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        out.clear();
        encode_value(&Value::Array(vec![Value::Null, Value::Int(0)]), &mut out);
        assert_eq!(out, [0x0A, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xEE]);
        out.clear();
        encode_value(&Value::Object(vec![]), &mut out);
        assert_eq!(out, [0xE0, 0, 0, 0xEE]);
        // Legacy 0xFF container reads like an object.
        let (v, n) = decode_value(&[0xFF, 0, 1, b'a', 3, 0, 0, 0xEE]).unwrap();
        assert_eq!((v, n), (Value::obj([("a", Value::Null)]), 8));
    }

    #[test]
    fn decode_errors_name_the_offset() {
        assert_eq!(
            decode_value(&[0xE0, 0, 1, b'a', 0x07]),
            Err(WireError::UnknownType { byte: 7, offset: 4 })
        );
        assert!(matches!(
            decode_value(&[2, 0xFF, 0xFF, 0xFF, 0xFF, 1]),
            Err(WireError::Truncated { offset: 5, .. })
        ));
        assert_eq!(
            decode_value(&[0x0A, 0, 0, 0xED]),
            Err(WireError::BadTerminator { offset: 1 })
        );
        let deep = [vec![0x0A; 40], vec![0, 0, 0xEE]].concat();
        assert!(matches!(
            decode_value(&deep),
            Err(WireError::TooDeep { offset: 32 })
        ));
    }

    #[test]
    fn frames_reject_bad_magic_and_huge_lengths() {
        assert_eq!(
            parse_frame(b"XXXX\0\0\0\0"),
            Err(WireError::UnknownMagic { magic: *b"XXXX" })
        );
        assert!(matches!(
            parse_frame(b"DTSC\x04\x00\x00\x01"),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(parse_frame(b"DTS"), Ok(None));
    }

    fn sample_header() -> Header {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.width = 640;
        v.height = 360;
        v.fpks = 25000;
        v.init = vec![1, 0x64, 0, 0x1E, 0xFF];
        v.lastms = 10_000;
        v.bps = 120_000;
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.rate = 48000;
        a.channels = 2;
        a.bits = 16;
        a.init = vec![0x11, 0x90];
        a.lang = Some("eng".into());
        Header {
            live: true,
            unixzero: Some(1_700_000_000_000),
            tracks: vec![v, a],
        }
    }

    #[test]
    fn header_round_trips_and_has_mistserver_layout() {
        let h = sample_header();
        let v = h.to_value();
        let top: Vec<&str> = v.as_object().unwrap().iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(top, ["live", "version", "unixzero", "tracks"]);
        let tracks = v.get("tracks").unwrap().as_object().unwrap();
        assert_eq!(tracks[0].0, "video_H264_640x360_25fps_1");
        assert_eq!(tracks[1].0, "audio_AAC_2ch_48000hz_2");
        let keys: Vec<&str> = tracks[1]
            .1
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, _)| &k[..])
            .collect();
        assert_eq!(
            keys,
            [
                "trackid", "firstms", "lastms", "bps", "maxbps", "init", "codec", "type", "lang",
                "rate", "size", "channels"
            ]
        );
        let mut out = Vec::new();
        write_header(&h, &mut out);
        assert_eq!(&out[..4], b"DTSC");
        let (f, n) = parse_frame(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Frame::Header(v2) = f else {
            panic!("not a header")
        };
        assert_eq!(Header::from_value(&v2).unwrap(), h);

        let vod = Header {
            live: false,
            unixzero: None,
            tracks: vec![],
        };
        let v = vod.to_value();
        assert_eq!(v.get("vod"), Some(&Value::Int(1)));
        assert_eq!(Header::from_value(&v).unwrap(), vod);
    }

    #[test]
    fn header_from_value_is_tolerant_but_needs_track_basics() {
        let v = Value::obj([(
            "tracks",
            Value::obj([(
                "x",
                Value::obj([
                    ("trackid", Value::Int(5)),
                    ("type", Value::str("audio")),
                    ("codec", Value::str("opus")),
                ]),
            )]),
        )]);
        let h = Header::from_value(&v).unwrap();
        assert_eq!(h.tracks[0].codec, Codec::Other("opus".into()));
        assert_eq!(h.tracks[0].rate, 0);
        let v = Value::obj([(
            "tracks",
            Value::obj([("x", Value::obj([("trackid", Value::Int(5))]))]),
        )]);
        assert!(Header::from_value(&v).is_err());
    }

    #[test]
    fn every_split_point_waits_then_parses() {
        let mut stream = Vec::new();
        write_header(&sample_header(), &mut stream);
        let data = [9u8; 50];
        write_packet(&pkt(&data), &mut stream);
        write_command(&Value::obj([("cmd", Value::str("ping"))]), &mut stream);
        let mut pos = 0;
        let mut frames = 0;
        while pos < stream.len() {
            let (_, n) = parse_frame(&stream[pos..]).unwrap().unwrap();
            for cut in 0..n {
                assert_eq!(parse_frame(&stream[pos..pos + cut]), Ok(None), "cut {cut}");
            }
            pos += n;
            frames += 1;
        }
        assert_eq!(frames, 3);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Str),
            Just(Value::Null),
            any::<f64>()
                .prop_filter("NaN never equals itself", |d| !d.is_nan())
                .prop_map(Value::Double),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(("[a-zA-Z_]{1,10}", inner.clone()), 0..6)
                    .prop_map(Value::Object),
                proptest::collection::vec(inner, 0..6).prop_map(Value::Array),
            ]
        })
    }

    proptest! {
        #[test]
        fn value_round_trips(v in arb_value()) {
            let mut out = Vec::new();
            encode_value(&v, &mut out);
            prop_assert_eq!(out.len(), encoded_len(&v));
            let (back, n) = decode_value(&out).unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(back, v);
        }

        #[test]
        fn packet_round_trips(track in any::<u32>(), dts in any::<u64>(), offset in any::<i64>(),
                              bpos in any::<u64>(), keyframe in any::<bool>(),
                              data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let p = PacketRef { track, dts, offset, keyframe, bpos, data: &data };
            let mut out = Vec::new();
            write_packet(&p, &mut out);
            prop_assert_eq!(out.len(), packet_frame_len(&p));
            prop_assert_eq!(parse_packet(&out).unwrap(), p);
        }

        #[test]
        fn parse_frame_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_frame(&bytes);
            let _ = parse_packet(&bytes);
            let _ = decode_value(&bytes);
        }

        #[test]
        fn parse_frame_never_panics_on_plausible_frames(
            magic in prop_oneof![Just(*b"DTSC"), Just(*b"DTP2"), Just(*b"DTPD"), Just(*b"DTCM")],
            body in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xE0), Just(0xEE), Just(1), Just(2), Just(0x0A), any::<u8>()],
                0..256),
        ) {
            let mut f = magic.to_vec();
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&body);
            let _ = parse_frame(&f);
        }
    }
}
