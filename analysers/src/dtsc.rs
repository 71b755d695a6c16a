//! `dtsc`: DTSC files (`.dtsc`: a header frame, then `DTP2` packets), `.dtsh` indexes, and
//! the DTSC TCP protocol's byte stream (`hi`, header, packets), per `docs/DTSC.md`.
//! Frames are read by `dtsc::wire::parse_frame`, indexes by `dtsc::dtsh::decode`.
//!
//! [`DtscReader`] is sans-IO: [`DtscReader::push`] takes bytes in any chunking (a whole file,
//! or what a socket gave) and adds what they complete to its report.
//!
//! Rules checked:
//! * docs/DTSC.md "Frames": every frame has a known magic and a whole, well-formed body.
//! * docs/DTSC.md "Media packet": DTS never goes back within a track, and every packet's track
//!   is in the header.

use dtsc::wire::{self, Frame, Value};
use serde::Serialize;
use serde_json::Value as Json;

use crate::report::{ReadError, TrackInfo, Violation};

/// The header frame (docs/DTSC.md "Header (DTSC)").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderInfo {
    /// Byte offset of the frame.
    pub offset: u64,
    /// `live: 1` (else `vod`).
    pub live: bool,
    /// `unixzero`, Unix time in ms of time zero (live).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unixzero: Option<i64>,
    /// The tracks.
    pub tracks: Vec<TrackInfo>,
}

/// A track's index (docs/DTSC.md "Index members"), from a full header or `.dtsh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexInfo {
    /// Track id.
    pub track: u32,
    /// `keys` entries.
    pub keys: usize,
    /// `fragments` entries.
    pub fragments: usize,
    /// `parts` entries (one per packet).
    pub parts: usize,
    /// Time of the first key, ms.
    pub first_key_ms: Option<u64>,
    /// Time of the last key, ms.
    pub last_key_ms: Option<u64>,
    /// Sum of the parts' sizes, bytes.
    pub bytes: u64,
}

/// One `DTP2` packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PacketInfo {
    /// Byte offset of the frame in the input.
    pub offset: u64,
    /// Track id.
    pub track: u32,
    /// DTS, ms.
    pub dts_ms: u64,
    /// Composition offset (PTS − DTS), ms.
    pub offset_ms: i64,
    /// `keyframe` member set.
    pub keyframe: bool,
    /// Payload bytes.
    pub size: usize,
}

/// Counts per track.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrackCount {
    /// Track id.
    pub track: u32,
    /// Packets.
    pub packets: u64,
    /// Keyframes.
    pub keyframes: u64,
    /// First DTS, ms.
    pub first_ms: u64,
    /// Last DTS, ms.
    pub last_ms: u64,
}

/// The report of [`DtscReader`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DtscReport {
    /// Every header frame (a stream may send a new one when its tracks change).
    pub headers: Vec<HeaderInfo>,
    /// The index members of the first header, when it has them (`.dtsh`, full headers).
    pub index: Vec<IndexInfo>,
    /// `DTCM` commands, as JSON (binary strings lossily as text).
    pub commands: Vec<Json>,
    /// Counts per track.
    pub counts: Vec<TrackCount>,
    /// Every packet.
    pub packets: Vec<PacketInfo>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// A DTSC value as JSON.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Int(i) => Json::from(*i),
        Value::Str(s) => Json::String(String::from_utf8_lossy(s).into_owned()),
        Value::Null => Json::Null,
        Value::Double(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::Object(m) => {
            Json::Object(m.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
        }
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
    }
}

const RULE_DTS: &str = "docs/DTSC.md \"Media packet\": DTS never goes back within a track";
const RULE_TRACK: &str = "docs/DTSC.md \"Header\": a packet's track is in the header";

/// Reads DTSC frames from bytes in any chunking (sans-IO). See the module docs.
#[derive(Debug, Default)]
pub struct DtscReader {
    buf: Vec<u8>,
    /// Input offset of `buf[0]`.
    offset: u64,
    report: DtscReport,
    /// Stop reading (after an error).
    stopped: bool,
}

impl DtscReader {
    /// A reader that has seen nothing.
    pub fn new() -> DtscReader {
        DtscReader::default()
    }

    /// The report so far.
    pub fn report(&self) -> &DtscReport {
        &self.report
    }

    /// Packets read so far.
    pub fn packet_count(&self) -> usize {
        self.report.packets.len()
    }

    /// Feeds the next bytes. After a bad frame, further bytes are ignored.
    pub fn push(&mut self, data: &[u8]) {
        if self.stopped {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while !self.stopped {
            let pos = self.offset + at as u64;
            match wire::parse_frame(&self.buf[at..]) {
                Ok(None) => break,
                Err(e) => {
                    self.report.error = Some(ReadError::at(pos, format!("bad DTSC frame: {e}")));
                    self.stopped = true;
                }
                Ok(Some((frame, used))) => {
                    let frame_bytes = &self.buf[at..at + used];
                    Self::frame(&mut self.report, frame, frame_bytes, pos);
                    at += used;
                }
            }
        }
        self.buf.drain(..at);
        self.offset += at as u64;
    }

    fn frame(r: &mut DtscReport, frame: Frame<'_>, bytes: &[u8], pos: u64) {
        match frame {
            Frame::Header(v) => match wire::Header::from_value(&v) {
                Ok(h) => {
                    if r.headers.is_empty() {
                        if let Ok((_, index)) = dtsc::dtsh::decode(bytes) {
                            for (t, ix) in h.tracks.iter().zip(&index) {
                                r.index.push(IndexInfo {
                                    track: t.id,
                                    keys: ix.keys.len(),
                                    fragments: ix.fragments.len(),
                                    parts: ix.parts.len(),
                                    first_key_ms: ix.keys.first().map(|k| k.time),
                                    last_key_ms: ix.keys.last().map(|k| k.time),
                                    bytes: ix.parts.iter().map(|p| u64::from(p.size)).sum(),
                                });
                            }
                        }
                    }
                    r.headers.push(HeaderInfo {
                        offset: pos,
                        live: h.live,
                        unixzero: h.unixzero,
                        tracks: h.tracks.iter().map(TrackInfo::from).collect(),
                    });
                }
                Err(e) => {
                    r.violations.push(Violation::at(
                        "docs/DTSC.md \"Header (DTSC)\"",
                        pos,
                        format!("header not readable: {e}"),
                    ));
                }
            },
            Frame::Command(v) => r.commands.push(value_json(&v)),
            Frame::LegacyPacket(v) => r.commands.push(value_json(&v)),
            Frame::Packet(p) => {
                let known = r
                    .headers
                    .last()
                    .is_none_or(|h| h.tracks.iter().any(|t| t.id == p.track));
                if !known {
                    r.violations.push(Violation::at(
                        RULE_TRACK,
                        pos,
                        format!("packet of track {}, not in the header", p.track),
                    ));
                }
                let i = match r.counts.iter().position(|c| c.track == p.track) {
                    Some(i) => i,
                    None => {
                        r.counts.push(TrackCount {
                            track: p.track,
                            first_ms: p.dts,
                            last_ms: p.dts,
                            ..TrackCount::default()
                        });
                        r.counts.len() - 1
                    }
                };
                let c = &mut r.counts[i];
                if c.packets > 0 && p.dts < c.last_ms {
                    r.violations.push(Violation::at(
                        RULE_DTS,
                        pos,
                        format!("track {}: DTS {} ms after {} ms", p.track, p.dts, c.last_ms),
                    ));
                }
                c.packets += 1;
                c.keyframes += u64::from(p.keyframe);
                c.last_ms = p.dts;
                r.packets.push(PacketInfo {
                    offset: pos,
                    track: p.track,
                    dts_ms: p.dts,
                    offset_ms: p.offset,
                    keyframe: p.keyframe,
                    size: p.data.len(),
                });
            }
        }
    }

    /// Ends the input: bytes of an unfinished frame become the report's error.
    pub fn finish(mut self) -> DtscReport {
        if !self.stopped && !self.buf.is_empty() {
            let need = match self.buf.get(4..8) {
                Some(l) => format!(
                    "{} bytes",
                    8 + u32::from_be_bytes(l.try_into().unwrap_or([0; 4]))
                ),
                None => "an 8-byte frame prefix".to_string(),
            };
            self.report.error = Some(ReadError::at(
                self.offset,
                format!("truncated frame: {need} needed, {} present", self.buf.len()),
            ));
        }
        self.report
    }
}

/// Reads a whole DTSC file (`.dtsc` or `.dtsh`). Never panics.
pub fn analyse(buf: &[u8]) -> DtscReport {
    let mut r = DtscReader::new();
    r.push(buf);
    r.finish()
}

/// The `play` command a viewer sends after the server's `hi` (docs/DTSC.md "TCP protocol").
pub fn play_command(stream: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_command(
        &Value::obj([("cmd", Value::str("play")), ("stream", Value::str(stream))]),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::{Codec, PacketRef, Track, TrackKind};
    use proptest::prelude::*;

    fn file() -> Vec<u8> {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.init = vec![1, 2, 3];
        let a = Track::new(2, TrackKind::Audio, Codec::Aac);
        let mut out = Vec::new();
        wire::write_header(
            &wire::Header {
                live: false,
                unixzero: None,
                tracks: vec![v, a],
            },
            &mut out,
        );
        for (track, dts, key) in [
            (1, 0, true),
            (2, 0, false),
            (1, 40, false),
            (2, 23, false),
            (1, 80, false),
        ] {
            let p = PacketRef {
                track,
                dts,
                offset: 0,
                keyframe: key,
                bpos: 0,
                data: &[9; 10],
            };
            wire::write_packet(&p, &mut out);
        }
        out
    }

    #[test]
    fn reads_header_and_packets_in_any_chunking() {
        let f = file();
        let r = analyse(&f);
        assert_eq!(r.error, None);
        assert!(r.violations.is_empty());
        assert_eq!(r.headers[0].tracks.len(), 2);
        assert_eq!(r.headers[0].tracks[0].init_size, 3);
        assert_eq!(r.packets.len(), 5);
        assert_eq!(
            r.counts[0],
            TrackCount {
                track: 1,
                packets: 3,
                keyframes: 1,
                first_ms: 0,
                last_ms: 80
            }
        );
        let mut rd = DtscReader::new();
        for c in f.chunks(7) {
            rd.push(c);
        }
        assert_eq!(rd.finish(), r);
    }

    #[test]
    fn flags_dts_going_back_and_truncation() {
        let mut f = file();
        let p = PacketRef {
            track: 1,
            dts: 10,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &[1],
        };
        let at = f.len();
        wire::write_packet(&p, &mut f);
        let r = analyse(&f);
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].offset, Some(at as u64));
        let r = analyse(&f[..f.len() - 2]);
        assert_eq!(r.error.unwrap().offset, at as u64);
        let mut bad = file();
        bad.extend_from_slice(b"XXXX\0\0\0\0");
        let r = analyse(&bad);
        assert!(r.error.unwrap().message.contains("bad DTSC frame"));
    }

    #[test]
    fn reads_a_dtsh_index() {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.init = vec![1];
        let packets: Vec<dtsc::Packet> = (0..4)
            .map(|i| dtsc::Packet {
                track: 1,
                dts: i * 40,
                offset: 0,
                keyframe: i % 2 == 0,
                bpos: 0,
                data: vec![0; 5].into(),
            })
            .collect();
        let index = dtsc::dtsh::build(std::slice::from_ref(&v), &packets);
        let bytes = dtsc::dtsh::encode(
            &wire::Header {
                live: false,
                unixzero: None,
                tracks: vec![v],
            },
            &index,
        );
        let r = analyse(&bytes);
        assert_eq!(r.index.len(), 1);
        assert_eq!(
            (r.index[0].keys, r.index[0].parts, r.index[0].bytes),
            (2, 4, 20)
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
            let _ = analyse(&data);
            let f = file();
            let _ = analyse(&f[..cut.min(f.len())]);
        }
    }
}
