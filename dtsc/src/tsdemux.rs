//! MPEG-2 transport stream demuxer (ISO/IEC 13818-1), sans-IO: [`TsDemuxer`] takes bytes
//! in any chunking (a file read, a TCP push) and returns [`TsEvent`]s: track list changes and
//! [`Packet`]s in the DTSC model (ms times, length-prefixed NAL units, raw AAC frames).
//!
//! What it reads:
//! * PAT (§2.4.4.3) and PMT (§2.4.4.8) sections, CRC-checked; the first program of the PAT.
//!   A new PMT version updates the track list (a PID whose stream type is unchanged keeps its
//!   track id).
//! * Elementary streams by `stream_type` (Table 2-34): 0x1B H.264 and 0x24 HEVC (Annex B,
//!   one access unit per PES, as every common muxer writes), 0x0F AAC in ADTS, 0x03/0x04
//!   MPEG audio (Layer III only). The ISO 639 language descriptor (tag 0x0A, §2.6.18) gives
//!   a track's language. Other stream types are reported once ([`TsEvent::Unsupported`]) and
//!   skipped.
//! * PES headers (§2.4.3.6) for PTS and DTS. Times are unwrapped across the 33-bit wrap
//!   against the last time seen on any PID, so every track stays on one timeline, and
//!   converted to ms (90 kHz ticks / 90, rounded down).
//!
//! What it makes of them:
//! * Video: AUD NAL units are dropped; parameter sets (SPS/PPS, and VPS for HEVC) are taken
//!   out of the access unit into the track's init data (an avcC or hvcC record built here).
//!   A track appears once its parameter sets are known, and new parameter sets (a camera
//!   that changes resolution) change its init data and raise [`TsEvent::TracksChanged`].
//!   Access units before that are dropped. A keyframe is an access unit with an IDR (H.264)
//!   or IRAP (HEVC) picture.
//! * AAC: one packet per ADTS frame, its AudioSpecificConfig from the first ADTS header;
//!   frames after the first in a PES get the PES time plus 1024 samples each.
//! * MP3: one packet per frame, split by the frame headers.
//!
//! Bad input never panics: bytes that do not start with the sync byte are skipped until the
//! next sync byte ([`DemuxStats::sync_losses`]); a continuity counter gap drops the PES being
//! assembled on that PID ([`DemuxStats::cc_errors`]); sections with a bad CRC and PES packets
//! that do not parse are counted and skipped. A PES is capped at [`MAX_PES_LEN`] bytes.

use std::collections::HashMap;

use bytes::Bytes;

use crate::aac::{self, AudioSpecificConfig};
use crate::h264::{self, AvcConfig};
use crate::hevc;
use crate::model::{Codec, Packet, Track, TrackKind};
use crate::mp3;
use crate::ts::{crc32_mpeg2, SYNC_BYTE, TS_PACKET_LEN};

/// Largest PES packet assembled, bytes; a longer one is dropped as broken.
pub const MAX_PES_LEN: usize = 16 << 20;
/// Most elementary streams taken from one PMT (the rest are ignored).
pub const MAX_STREAMS: usize = 32;

const MASK_33: u64 = (1 << 33) - 1;
/// Half the 33-bit range: a jump larger than this across the wrap is taken as a wrap.
const HALF_33: u64 = 1 << 32;

/// What the demuxer reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TsEvent {
    /// [`TsDemuxer::tracks`] changed: a track appeared, went away or got new init data.
    TracksChanged,
    /// One access unit of a track (ids as in [`TsDemuxer::tracks`]). `bpos` is the byte
    /// offset, in the input, of the TS packet where its PES started.
    Packet(Packet),
    /// An elementary stream this demuxer does not carry, reported once per PID and type.
    Unsupported {
        /// The PID of the stream.
        pid: u16,
        /// Its `stream_type` (ISO/IEC 13818-1 Table 2-34).
        stream_type: u8,
    },
}

/// Counters of what was skipped, for logs and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// TS packets read.
    pub packets: u64,
    /// Times the input lost sync and bytes were skipped to the next sync byte.
    pub sync_losses: u64,
    /// Continuity counter gaps (each dropped the PES being assembled).
    pub cc_errors: u64,
    /// PSI sections refused (bad CRC or malformed).
    pub bad_sections: u64,
    /// PES packets or access units that could not be used (malformed, too long, no time,
    /// or video before its parameter sets).
    pub dropped: u64,
}

/// The per-codec state of one elementary stream.
#[derive(Debug, Clone)]
enum EsCodec {
    H264 {
        sps: Option<Vec<u8>>,
        pps: Option<Vec<u8>>,
    },
    Hevc {
        vps: Option<Vec<u8>>,
        sps: Option<Vec<u8>>,
        pps: Option<Vec<u8>>,
    },
    Aac {
        /// Bytes of an ADTS frame cut by the end of the last PES, and its time (90 kHz).
        carry: Vec<u8>,
        carry_time: u64,
    },
    Mp3 {
        carry: Vec<u8>,
        carry_time: u64,
    },
}

/// One elementary stream of the program.
#[derive(Debug, Clone)]
struct Es {
    pid: u16,
    stream_type: u8,
    /// The track as it will be (or is) announced; `ready` once its init data is known.
    track: Track,
    ready: bool,
    codec: EsCodec,
    /// The PES being assembled and the input offset where it started.
    pes: Vec<u8>,
    pes_bpos: u64,
    assembling: bool,
    /// Continuity counter of the last payload-carrying packet.
    cc: Option<u8>,
}

/// A PSI section being assembled (PAT or PMT).
#[derive(Debug, Clone, Default)]
struct Section {
    buf: Vec<u8>,
    active: bool,
}

/// MPEG-TS demuxer for one program. See the module docs.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// Bytes of an incomplete TS packet left from the last [`push`](TsDemuxer::push).
    partial: Vec<u8>,
    /// Input offset of the first byte of `partial` (or of the next byte, when empty).
    offset: u64,
    pmt_pid: Option<u16>,
    pmt_version: Option<u8>,
    sections: HashMap<u16, Section>,
    streams: Vec<Es>,
    next_track_id: u32,
    tracks: Vec<Track>,
    /// The last unwrapped time (90 kHz) seen on any PID.
    clock: Option<u64>,
    reported: Vec<(u16, u8)>,
    stats: DemuxStats,
    in_sync: bool,
}

impl TsDemuxer {
    /// A demuxer that has seen nothing.
    pub fn new() -> TsDemuxer {
        TsDemuxer {
            next_track_id: 1,
            in_sync: true,
            ..TsDemuxer::default()
        }
    }

    /// The tracks announced so far, in PMT order, with ids from 1.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// What was skipped so far.
    pub fn stats(&self) -> DemuxStats {
        self.stats
    }

    /// Feeds the next bytes of the transport stream and appends what they complete to
    /// `events`. Any chunking is accepted; an incomplete trailing TS packet is kept.
    pub fn push(&mut self, mut data: &[u8], events: &mut Vec<TsEvent>) {
        if !self.partial.is_empty() {
            let need = TS_PACKET_LEN - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < TS_PACKET_LEN {
                return;
            }
            let pkt = std::mem::take(&mut self.partial);
            if pkt[0] == SYNC_BYTE {
                let at = self.offset;
                self.offset += TS_PACKET_LEN as u64;
                self.packet(&pkt, at, events);
            } else {
                // Lost sync inside the kept bytes: rescan them with the rest.
                let mut joined = pkt[1..].to_vec();
                joined.extend_from_slice(data);
                self.offset += 1;
                self.lost_sync();
                return self.push_aligned(&joined, events);
            }
        }
        self.push_aligned(data, events);
    }

    fn lost_sync(&mut self) {
        if self.in_sync {
            self.stats.sync_losses += 1;
            self.in_sync = false;
        }
    }

    fn push_aligned(&mut self, data: &[u8], events: &mut Vec<TsEvent>) {
        let mut at = 0;
        while at < data.len() {
            if data[at] != SYNC_BYTE {
                self.lost_sync();
                let skip = data[at..]
                    .iter()
                    .position(|&b| b == SYNC_BYTE)
                    .unwrap_or(data.len() - at);
                at += skip;
                self.offset += skip as u64;
                continue;
            }
            if data.len() - at < TS_PACKET_LEN {
                self.partial.extend_from_slice(&data[at..]);
                return;
            }
            self.in_sync = true;
            let pos = self.offset;
            self.offset += TS_PACKET_LEN as u64;
            self.packet(&data[at..at + TS_PACKET_LEN], pos, events);
            at += TS_PACKET_LEN;
        }
    }

    /// Ends the input: completes the PES packets still being assembled (a video access unit
    /// is otherwise only complete when the next one starts).
    pub fn finish(&mut self, events: &mut Vec<TsEvent>) {
        for i in 0..self.streams.len() {
            self.complete_pes(i, events);
        }
    }

    /// One 188-byte TS packet starting with the sync byte, at input offset `pos`.
    fn packet(&mut self, p: &[u8], pos: u64, events: &mut Vec<TsEvent>) {
        self.stats.packets += 1;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0xf;
        if p[1] & 0x80 != 0 {
            // transport_error_indicator: the packet is known to be damaged.
            if let Some(i) = self.streams.iter().position(|s| s.pid == pid) {
                self.drop_pes(i);
            }
            return;
        }
        let mut at = 4;
        let mut discontinuity = false;
        if afc & 2 != 0 {
            let len = p[4] as usize;
            if len > 183 {
                self.stats.dropped += 1;
                return;
            }
            discontinuity = len > 0 && p[5] & 0x80 != 0;
            at = 5 + len;
        }
        if afc & 1 == 0 || at >= TS_PACKET_LEN {
            return; // no payload
        }
        let payload = &p[at..];
        if pid == 0 || Some(pid) == self.pmt_pid {
            self.section_bytes(pid, pusi, payload, events);
            return;
        }
        let Some(i) = self.streams.iter().position(|s| s.pid == pid) else {
            return;
        };
        let es = &mut self.streams[i];
        if let Some(last) = es.cc {
            if cc == last && !discontinuity {
                return; // a duplicate packet (§2.4.3.3): ignored
            }
            if cc != (last + 1) & 0xf && !discontinuity {
                self.stats.cc_errors += 1;
                es.cc = Some(cc);
                self.drop_pes(i);
                if !pusi {
                    return;
                }
            }
        }
        let es = &mut self.streams[i];
        es.cc = Some(cc);
        if pusi {
            self.complete_pes(i, events);
            let es = &mut self.streams[i];
            es.pes.clear();
            es.pes.extend_from_slice(payload);
            es.pes_bpos = pos;
            es.assembling = true;
        } else if es.assembling {
            if es.pes.len() + payload.len() > MAX_PES_LEN {
                self.stats.dropped += 1;
                self.drop_pes(i);
                return;
            }
            es.pes.extend_from_slice(payload);
        } else {
            return;
        }
        // A PES with a length is complete as soon as all of it is here.
        let es = &self.streams[i];
        if es.pes.len() >= 6 {
            let len = usize::from(u16::from_be_bytes([es.pes[4], es.pes[5]]));
            if len != 0 && es.pes.len() >= 6 + len {
                self.complete_pes(i, events);
            }
        }
    }

    fn drop_pes(&mut self, i: usize) {
        let es = &mut self.streams[i];
        if es.assembling {
            self.stats.dropped += 1;
        }
        es.assembling = false;
        es.pes.clear();
    }

    /// Collects PSI bytes on `pid` and handles each complete section.
    fn section_bytes(&mut self, pid: u16, pusi: bool, payload: &[u8], events: &mut Vec<TsEvent>) {
        let sec = self.sections.entry(pid).or_default();
        let mut data = payload;
        if pusi {
            let pointer = payload[0] as usize;
            let Some(rest) = payload.get(1 + pointer..) else {
                self.stats.bad_sections += 1;
                sec.active = false;
                return;
            };
            if sec.active {
                // The bytes before the pointer end the previous section.
                sec.buf.extend_from_slice(&payload[1..1 + pointer]);
            }
            let done = std::mem::take(&mut sec.buf);
            let was_active = sec.active;
            sec.buf.extend_from_slice(rest);
            sec.active = true;
            if was_active && !done.is_empty() {
                self.section(pid, &done, events);
            }
            data = &[];
        } else if !sec.active {
            return;
        }
        let sec = self.sections.entry(pid).or_default();
        sec.buf.extend_from_slice(data);
        if sec.buf.len() >= 3 {
            let len = 3 + (usize::from(u16::from_be_bytes([sec.buf[1], sec.buf[2]])) & 0xfff);
            if sec.buf.len() >= len {
                let done: Vec<u8> = sec.buf[..len].to_vec();
                sec.buf.clear();
                sec.active = false;
                self.section(pid, &done, events);
            }
        }
        if let Some(sec) = self.sections.get_mut(&pid) {
            if sec.buf.len() > 4096 {
                sec.buf.clear();
                sec.active = false;
                self.stats.bad_sections += 1;
            }
        }
    }

    /// One complete PSI section (table_id onwards) on `pid`.
    fn section(&mut self, pid: u16, s: &[u8], events: &mut Vec<TsEvent>) {
        if s.first() == Some(&0xff) {
            return; // stuffing
        }
        let Some(sec) = parse_section(s) else {
            self.stats.bad_sections += 1;
            return;
        };
        if !sec.current {
            return;
        }
        match (pid, sec.table_id) {
            (0, 0x00) => {
                // The first program; program 0 is the NIT.
                let pmt = pat_programs(sec.body)
                    .find(|&(program, _)| program != 0)
                    .map(|(_, pid)| pid);
                if pmt != self.pmt_pid {
                    self.pmt_pid = pmt;
                    self.pmt_version = None;
                }
            }
            (p, 0x02) if Some(p) == self.pmt_pid => {
                if self.pmt_version != Some(sec.version) {
                    self.pmt_version = Some(sec.version);
                    self.pmt(sec.body, events);
                }
            }
            _ => self.stats.bad_sections += 1,
        }
    }

    /// A PMT's body after `last_section_number`: PCR_PID, program_info, then the ES loop.
    fn pmt(&mut self, body: &[u8], events: &mut Vec<TsEvent>) {
        if body.len() < 4 {
            self.stats.bad_sections += 1;
            return;
        }
        let mut next: Vec<Es> = Vec::new();
        for entry in pmt_streams(body) {
            if next.len() >= MAX_STREAMS {
                break;
            }
            let PmtStream {
                stream_type,
                pid,
                descriptors,
            } = entry;
            let lang = language(descriptors);
            if let Some(old) = self
                .streams
                .iter()
                .position(|s| s.pid == pid && s.stream_type == stream_type)
            {
                let mut es = self.streams.remove(old);
                es.track.lang = lang;
                next.push(es);
                continue;
            }
            let codec = match stream_type {
                0x1b => Some((
                    TrackKind::Video,
                    Codec::H264,
                    EsCodec::H264 {
                        sps: None,
                        pps: None,
                    },
                )),
                0x24 => Some((
                    TrackKind::Video,
                    Codec::Hevc,
                    EsCodec::Hevc {
                        vps: None,
                        sps: None,
                        pps: None,
                    },
                )),
                0x0f => Some((
                    TrackKind::Audio,
                    Codec::Aac,
                    EsCodec::Aac {
                        carry: Vec::new(),
                        carry_time: 0,
                    },
                )),
                0x03 | 0x04 => Some((
                    TrackKind::Audio,
                    Codec::Mp3,
                    EsCodec::Mp3 {
                        carry: Vec::new(),
                        carry_time: 0,
                    },
                )),
                _ => None,
            };
            let Some((kind, codec, state)) = codec else {
                if !self.reported.contains(&(pid, stream_type)) {
                    self.reported.push((pid, stream_type));
                    events.push(TsEvent::Unsupported { pid, stream_type });
                }
                continue;
            };
            let mut track = Track::new(self.next_track_id, kind, codec);
            self.next_track_id += 1;
            track.lang = lang;
            next.push(Es {
                pid,
                stream_type,
                track,
                ready: false,
                codec: state,
                pes: Vec::new(),
                pes_bpos: 0,
                assembling: false,
                cc: None,
            });
        }
        self.streams = next;
        self.refresh_tracks(events);
    }

    /// Rebuilds the announced track list from the ready streams; raises `TracksChanged` when
    /// it differs.
    fn refresh_tracks(&mut self, events: &mut Vec<TsEvent>) {
        let tracks: Vec<Track> = self
            .streams
            .iter()
            .filter(|s| s.ready)
            .map(|s| s.track.clone())
            .collect();
        if tracks != self.tracks {
            self.tracks = tracks;
            events.push(TsEvent::TracksChanged);
        }
    }

    /// Turns the assembled PES of stream `i` into packets.
    fn complete_pes(&mut self, i: usize, events: &mut Vec<TsEvent>) {
        let es = &mut self.streams[i];
        if !es.assembling {
            return;
        }
        es.assembling = false;
        let pes = std::mem::take(&mut es.pes);
        let bpos = es.pes_bpos;
        match parse_pes_header(&pes) {
            Some(PesHeader {
                pts, dts, payload, ..
            }) => {
                let times = pts.map(|pts| {
                    let dts = dts.unwrap_or(pts);
                    let d = self.unwrap(dts);
                    // PTS is at or after DTS in any sane stream; keep the raw difference.
                    let off = (pts.wrapping_sub(dts) & MASK_33) as i64;
                    let off = if off > HALF_33 as i64 {
                        off - (1 << 33)
                    } else {
                        off
                    };
                    (d, off)
                });
                self.elementary(i, times, payload, bpos, events);
            }
            None => self.stats.dropped += 1,
        }
        let es = &mut self.streams[i];
        if es.pes.capacity() == 0 {
            es.pes = pes;
            es.pes.clear();
        }
    }

    /// Unwraps a 33-bit time against the demuxer's clock.
    fn unwrap(&mut self, raw: u64) -> u64 {
        let raw = raw & MASK_33;
        let v = match self.clock {
            None => raw,
            Some(last) => {
                let mut v = (last & !MASK_33) | raw;
                if v + HALF_33 < last {
                    v += 1 << 33;
                } else if v > last + HALF_33 && v >= 1 << 33 {
                    v -= 1 << 33;
                }
                v
            }
        };
        self.clock = Some(v);
        v
    }

    /// The payload of one PES of stream `i`, with its DTS (unwrapped, 90 kHz) and
    /// composition offset (90 kHz ticks), `None` when the PES had no PTS.
    fn elementary(
        &mut self,
        i: usize,
        times: Option<(u64, i64)>,
        payload: &[u8],
        bpos: u64,
        events: &mut Vec<TsEvent>,
    ) {
        let es = &mut self.streams[i];
        let id = es.track.id;
        match &mut es.codec {
            EsCodec::H264 { .. } | EsCodec::Hevc { .. } => {
                let Some((dts, off)) = times else {
                    self.stats.dropped += 1;
                    return;
                };
                let Some((data, keyframe, changed)) = video_access_unit(es, payload) else {
                    self.stats.dropped += 1;
                    return;
                };
                if changed {
                    self.refresh_tracks(events);
                }
                let es = &self.streams[i];
                if !es.ready || data.is_empty() {
                    self.stats.dropped += 1;
                    return;
                }
                let dts_ms = dts / 90;
                let pts_ms = (dts as i64 + off).max(0) as u64 / 90;
                events.push(TsEvent::Packet(Packet {
                    track: id,
                    dts: dts_ms,
                    offset: pts_ms as i64 - dts_ms as i64,
                    keyframe,
                    bpos,
                    data: Bytes::from(data),
                }));
            }
            EsCodec::Aac { carry, carry_time } | EsCodec::Mp3 { carry, carry_time } => {
                let aac = matches!(es.track.codec, Codec::Aac);
                let mut buf = std::mem::take(carry);
                let mut time = match (times, buf.is_empty()) {
                    (_, false) => *carry_time,
                    (Some((dts, off)), true) => (dts as i64 + off).max(0) as u64,
                    (None, true) => {
                        self.stats.dropped += 1;
                        return;
                    }
                };
                buf.extend_from_slice(payload);
                let mut at = 0;
                let mut frames = Vec::new();
                let mut changed = false;
                while at < buf.len() {
                    let rest = &buf[at..];
                    let frame = if aac {
                        adts_frame(rest)
                    } else {
                        mp3_frame(rest)
                    };
                    match frame {
                        Frame::Ok {
                            len,
                            raw,
                            samples,
                            track,
                        } => {
                            if !es.ready
                                || es.track.init != track.init
                                || es.track.rate != track.rate
                            {
                                es.track.init = track.init;
                                es.track.rate = track.rate;
                                es.track.channels = track.channels;
                                es.track.bits = 16;
                                es.ready = true;
                                changed = true;
                            }
                            frames.push((time, rest[raw.0..raw.1].to_vec()));
                            if es.track.rate > 0 {
                                time += u64::from(samples) * 90_000 / u64::from(es.track.rate);
                            }
                            at += len;
                        }
                        Frame::Partial => break,
                        Frame::Bad => {
                            // Resynchronise on the next possible header.
                            self.stats.dropped += 1;
                            at += 1 + rest[1..]
                                .iter()
                                .position(|&b| b == 0xff)
                                .unwrap_or(rest.len() - 1);
                        }
                    }
                }
                let es = &mut self.streams[i];
                if let EsCodec::Aac { carry, carry_time } | EsCodec::Mp3 { carry, carry_time } =
                    &mut es.codec
                {
                    *carry = buf[at.min(buf.len())..].to_vec();
                    *carry_time = time;
                }
                if changed {
                    self.refresh_tracks(events);
                }
                for (t, data) in frames {
                    events.push(TsEvent::Packet(Packet {
                        track: id,
                        dts: t / 90,
                        offset: 0,
                        keyframe: false,
                        bpos,
                        data: Bytes::from(data),
                    }));
                }
            }
        }
    }
}

/// One audio frame found at the start of a buffer.
enum Frame {
    /// A whole frame of `len` bytes whose raw payload is `raw` (a byte range), decoding to
    /// `samples` samples, with the track facts its header gives.
    Ok {
        len: usize,
        raw: (usize, usize),
        samples: u32,
        track: AudioFacts,
    },
    /// A valid header, but the frame runs past the buffer.
    Partial,
    /// Not a frame header.
    Bad,
}

struct AudioFacts {
    init: Vec<u8>,
    rate: u32,
    channels: u32,
}

/// An ADTS frame (ISO/IEC 14496-3 §1.A.2.2, header read by [`aac::parse_adts_header`]):
/// 7-byte header (9 with CRC), one raw data block (frames with several blocks are taken as
/// 1024 samples each block). Layer 0, a rate in the index table and a `frame_length` that
/// holds the header are required.
fn adts_frame(b: &[u8]) -> Frame {
    let Some(h) = aac::parse_adts_header(b) else {
        return if b.len() < aac::ADTS_HEADER_LEN && b.first() == Some(&0xff) {
            Frame::Partial
        } else {
            Frame::Bad
        };
    };
    let hdr = h.header_len();
    let (Some(rate), 0) = (h.sample_rate(), h.layer) else {
        return Frame::Bad;
    };
    let len = h.frame_length;
    if len < hdr {
        return Frame::Bad;
    }
    if b.len() < len {
        return Frame::Partial;
    }
    let cc = h.channel_config;
    let mut asc = AudioSpecificConfig::lc(rate, if cc == 7 { 8 } else { cc });
    asc.object_type = h.object_type;
    let mut init = Vec::new();
    aac::write_asc(&asc, &mut init);
    Frame::Ok {
        len,
        raw: (hdr, len),
        samples: h.samples(),
        track: AudioFacts {
            init,
            rate,
            channels: u32::from(asc.channels),
        },
    }
}

/// An MPEG audio frame, Layer III only (the header stays in the payload, as FLV and MP4
/// carry MP3 frames whole).
fn mp3_frame(b: &[u8]) -> Frame {
    if b.len() < 4 {
        return if b.first() == Some(&0xff) {
            Frame::Partial
        } else {
            Frame::Bad
        };
    }
    let Some(h) = mp3::parse_header(b) else {
        return Frame::Bad;
    };
    if h.layer != 3 {
        return Frame::Bad;
    }
    if b.len() < h.frame_len {
        return Frame::Partial;
    }
    Frame::Ok {
        len: h.frame_len,
        raw: (0, h.frame_len),
        samples: h.samples,
        track: AudioFacts {
            init: Vec::new(),
            rate: h.sample_rate,
            channels: u32::from(h.channels),
        },
    }
}

/// Takes one Annex B access unit apart: parameter sets into the stream's state (and, when
/// they changed, into the track's init data, width and height), AUDs dropped, every other NAL
/// unit length-prefixed (4 bytes). Returns the payload, whether it is a keyframe and whether
/// the track changed; `None` when the access unit cannot be used (new parameter sets that do
/// not parse).
fn video_access_unit(es: &mut Es, annexb: &[u8]) -> Option<(Vec<u8>, bool, bool)> {
    let mut out = Vec::with_capacity(annexb.len() + 16);
    let mut keyframe = false;
    let mut sets_changed = false;
    for nal in h264::annexb_nal_units(annexb) {
        let set = |slot: &mut Option<Vec<u8>>, changed: &mut bool| {
            if slot.as_deref() != Some(nal) {
                *slot = Some(nal.to_vec());
                *changed = true;
            }
        };
        match &mut es.codec {
            EsCodec::H264 { sps, pps } => match h264::nal_type(nal) {
                Some(h264::NAL_AUD) => continue,
                Some(h264::NAL_SPS) => {
                    set(sps, &mut sets_changed);
                    continue;
                }
                Some(h264::NAL_PPS) => {
                    set(pps, &mut sets_changed);
                    continue;
                }
                Some(h264::NAL_IDR) => keyframe = true,
                _ => {}
            },
            EsCodec::Hevc { vps, sps, pps } => match hevc::nal_type(nal) {
                Some(hevc::NAL_AUD) => continue,
                Some(hevc::NAL_VPS) => {
                    set(vps, &mut sets_changed);
                    continue;
                }
                Some(hevc::NAL_SPS) => {
                    set(sps, &mut sets_changed);
                    continue;
                }
                Some(hevc::NAL_PPS) => {
                    set(pps, &mut sets_changed);
                    continue;
                }
                Some(t) if hevc::is_irap(t) => keyframe = true,
                _ => {}
            },
            _ => return None,
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    let mut changed = false;
    if sets_changed {
        let built = match &es.codec {
            EsCodec::H264 {
                sps: Some(sps),
                pps: Some(pps),
            } => h264::parse_sps(sps).ok().and_then(|info| {
                let cfg = AvcConfig::from_parameter_sets(sps, pps).ok()?;
                let mut init = Vec::new();
                h264::write_avcc(&cfg, &mut init).ok()?;
                Some((init, info.width, info.height, info.fpks().unwrap_or(0)))
            }),
            EsCodec::Hevc {
                vps: Some(vps),
                sps: Some(sps),
                pps: Some(pps),
            } => {
                let info = hevc::parse_sps(sps).ok();
                let rec = hevc::build_hvcc(
                    std::slice::from_ref(vps),
                    std::slice::from_ref(sps),
                    std::slice::from_ref(pps),
                )
                .ok();
                info.zip(rec)
                    .map(|(i, rec)| (rec, i.width, i.height, i.fpks().unwrap_or(0)))
            }
            _ => None, // not all parameter sets yet
        };
        if let Some((init, width, height, fpks)) = built {
            if es.track.init != init {
                es.track.init = init;
                es.track.width = width;
                es.track.height = height;
                if fpks != 0 {
                    es.track.fpks = fpks;
                }
                es.ready = true;
                changed = true;
            }
        }
    }
    Some((out, keyframe && es.ready, changed))
}

/// A PSI section in the long form (ISO/IEC 13818-1 §2.4.4.10, Table 2-30; the PAT and PMT
/// use it), as [`parse_section`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsiSection<'a> {
    /// `table_id` (0x00 PAT, 0x02 PMT; Table 2-31).
    pub table_id: u8,
    /// `table_id_extension`: the PAT's `transport_stream_id`, the PMT's `program_number`.
    pub id: u16,
    /// `version_number` (5 bits).
    pub version: u8,
    /// `current_next_indicator`: true when the table applies now, false when it is next.
    pub current: bool,
    /// The bytes after `last_section_number` and before `CRC_32`: the PAT's program loop
    /// ([`pat_programs`]) or the PMT's `PCR_PID`, program info and ES loop ([`pmt_streams`]).
    pub body: &'a [u8],
}

/// Reads the section at the start of `s` (from `table_id`): its `section_length` bytes
/// after the 3-byte head, checked with `CRC_32` (§2.4.4.11, [`crate::ts::crc32_mpeg2`]).
/// Bytes after the section are ignored. `None` when it is shorter than the 12 bytes of a
/// long-form section with an empty body, runs past `s`, or fails its CRC. Never panics.
pub fn parse_section(s: &[u8]) -> Option<PsiSection<'_>> {
    if s.len() < 12 {
        return None;
    }
    let len = 3 + (usize::from(u16::from_be_bytes([s[1], s[2]])) & 0xfff);
    let s = s.get(..len)?;
    if len < 12 || crc32_mpeg2(s) != 0 {
        return None;
    }
    Some(PsiSection {
        table_id: s[0],
        id: u16::from_be_bytes([s[3], s[4]]),
        version: (s[5] >> 1) & 0x1f,
        current: s[5] & 1 == 1,
        body: &s[8..len - 4],
    })
}

/// The PAT's programs (§2.4.4.3) from its section body: (`program_number`, PID) pairs, the
/// PID being the program's PMT PID, or the network PID for program 0.
pub fn pat_programs(body: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    body.chunks_exact(4).map(|e| {
        (
            u16::from_be_bytes([e[0], e[1]]),
            u16::from_be_bytes([e[2] & 0x1f, e[3]]),
        )
    })
}

/// One elementary stream of a PMT (§2.4.4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtStream<'a> {
    /// `stream_type` (Table 2-34: 0x1B H.264, 0x24 HEVC, 0x0F AAC in ADTS, ...).
    pub stream_type: u8,
    /// `elementary_PID`.
    pub pid: u16,
    /// The ES descriptor loop (`ES_info_length` bytes; empty when it runs past the section).
    pub descriptors: &'a [u8],
}

/// The `PCR_PID` of a PMT section body (§2.4.4.8); `None` when the body is shorter than its
/// 4 fixed bytes.
pub fn pmt_pcr_pid(body: &[u8]) -> Option<u16> {
    let b = body.get(..4)?;
    Some(u16::from_be_bytes([b[0] & 0x1f, b[1]]))
}

/// The elementary streams of a PMT section body (§2.4.4.8), after its `program_info`
/// descriptors; stops where fewer than the 5 bytes of an entry are left. Never panics.
pub fn pmt_streams(body: &[u8]) -> impl Iterator<Item = PmtStream<'_>> + '_ {
    let info_len = body
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])) & 0xfff);
    let mut at = 4 + info_len;
    std::iter::from_fn(move || {
        let e = body.get(at..at + 5)?;
        let es_len = usize::from(u16::from_be_bytes([e[3], e[4]])) & 0xfff;
        let entry = PmtStream {
            stream_type: e[0],
            pid: u16::from_be_bytes([e[1] & 0x1f, e[2]]),
            descriptors: body.get(at + 5..at + 5 + es_len).unwrap_or(&[]),
        };
        at += 5 + es_len;
        Some(entry)
    })
}

/// A PES packet's header (ISO/IEC 13818-1 §2.4.3.6) and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader<'a> {
    /// `stream_id` (Table 2-22: 0xE0..=0xEF video, 0xC0..=0xDF audio, 0xBD
    /// private_stream_1).
    pub stream_id: u8,
    /// `PTS` (§2.4.3.7), 90 kHz ticks, 33 bits as coded (no wrap undone).
    pub pts: Option<u64>,
    /// `DTS` (§2.4.3.7), 90 kHz ticks, 33 bits; the PTS when only a PTS is coded.
    pub dts: Option<u64>,
    /// The bytes after the header: up to the end given by `PES_packet_length`, or to the
    /// end of the input when the length is 0 (unbounded, video) or runs past it.
    pub payload: &'a [u8],
}

/// Reads a PES packet (ISO/IEC 13818-1 §2.4.3.6) at the start of `b`: start code prefix
/// 0x000001, `stream_id`, `PES_packet_length`, then, for the stream ids that have it (all
/// but Table 2-22's program_stream_map, padding, private_stream_2, ECM, EMM, directory,
/// DSMCC and H.222.1 type E), the optional header: the '10' marker, `PTS_DTS_flags` and the
/// PTS/DTS fields (§2.4.3.7). `b` may be a whole PES or its first bytes (as far as the
/// header reaches). `None` when it is not a PES start or its header does not fit in `b`.
/// Never panics.
pub fn parse_pes_header(b: &[u8]) -> Option<PesHeader<'_>> {
    if b.len() < 6 || b[..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = b[3];
    let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
    let end = if len == 0 {
        b.len()
    } else {
        (6 + len).min(b.len())
    };
    if matches!(
        stream_id,
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff
    ) {
        return Some(PesHeader {
            stream_id,
            pts: None,
            dts: None,
            payload: b.get(6..end)?,
        });
    }
    if b.len() < 9 || b[6] & 0xc0 != 0x80 {
        return None;
    }
    let flags = b[7] >> 6;
    let hdr_len = usize::from(b[8]);
    let payload = b.get(9 + hdr_len..end)?;
    let ts = |at: usize| -> Option<u64> {
        let t = b.get(at..at + 5)?;
        Some(
            (u64::from(t[0] >> 1) & 7) << 30
                | u64::from(t[1]) << 22
                | (u64::from(t[2]) >> 1) << 15
                | u64::from(t[3]) << 7
                | u64::from(t[4]) >> 1,
        )
    };
    let (pts, dts) = match flags {
        2 if hdr_len >= 5 => (ts(9), None),
        3 if hdr_len >= 10 => (ts(9), ts(14)),
        _ => (None, None),
    };
    Some(PesHeader {
        stream_id,
        pts,
        dts: dts.or(pts),
        payload,
    })
}

/// The ISO 639 language code of an ES descriptor loop (§2.6.18, tag 0x0A), `None` when
/// absent or `und`.
fn language(mut desc: &[u8]) -> Option<String> {
    while desc.len() >= 2 {
        let (tag, len) = (desc[0], usize::from(desc[1]));
        let body = desc.get(2..2 + len)?;
        if tag == 0x0a && len >= 3 {
            let code = std::str::from_utf8(&body[..3]).ok()?;
            if code.chars().all(|c| c.is_ascii_alphabetic()) && code != "und" {
                return Some(code.to_ascii_lowercase());
            }
        }
        desc = &desc[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::TsMuxer;
    use proptest::prelude::*;

    fn avc_track() -> Track {
        let mut t = Track::new(1, TrackKind::Video, Codec::H264);
        // SPS of a 640x360 High profile stream (from x264) and a PPS.
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xec, 0xb2, 0x2c];
        let cfg = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        h264::write_avcc(&cfg, &mut t.init).unwrap();
        t.width = 640;
        t.height = 360;
        t
    }

    fn aac_track() -> Track {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        aac::write_asc(&AudioSpecificConfig::lc(44100, 2), &mut t.init);
        t.rate = 44100;
        t.channels = 2;
        t
    }

    /// 50 video access units (keyframe every 25, B-frame style offsets) and 86 AAC frames,
    /// muxed with Sluice's own TS muxer, starting near the 33-bit wrap.
    fn sample_stream(start_ms: u64) -> (Vec<Track>, Vec<Packet>, Vec<u8>) {
        let tracks = vec![avc_track(), aac_track()];
        let mut packets = Vec::new();
        for i in 0..50u64 {
            let mut data = Vec::new();
            let nal: Vec<u8> = if i % 25 == 0 {
                vec![0x65, 0x88, i as u8, 1, 2, 3]
            } else {
                vec![0x41, 0x9a, i as u8, 4, 5]
            };
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(&nal);
            packets.push(Packet {
                track: 1,
                dts: start_ms + i * 40,
                offset: if i % 25 == 0 { 80 } else { 40 },
                keyframe: i % 25 == 0,
                bpos: 0,
                data: Bytes::from(data),
            });
        }
        for i in 0..86u64 {
            packets.push(Packet {
                track: 2,
                dts: start_ms + i * 1024 * 1000 / 44100,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: Bytes::from(vec![0x21, 0x10, i as u8, 0x55]),
            });
        }
        packets.sort_by_key(|p| (p.dts, p.track));
        let mut mux = TsMuxer::continuous(&tracks);
        let mut out = Vec::new();
        mux.write_psi(&mut out);
        for p in &packets {
            if p.keyframe {
                mux.write_psi(&mut out);
            }
            mux.write_packet(&p.as_ref(), false, &mut out).unwrap();
        }
        (tracks, packets, out)
    }

    fn demux_all(bytes: &[u8], chunk: usize) -> (TsDemuxer, Vec<TsEvent>) {
        let mut d = TsDemuxer::new();
        let mut ev = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            d.push(c, &mut ev);
        }
        d.finish(&mut ev);
        (d, ev)
    }

    fn packets_of(ev: &[TsEvent]) -> Vec<&Packet> {
        ev.iter()
            .filter_map(|e| match e {
                TsEvent::Packet(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn round_trips_sluice_ts_with_tracks_times_and_payloads() {
        for (start, chunk) in [
            (1000, 188),
            (1000, 7),
            (1000, 100_000),
            ((1 << 33) / 90 - 1000, 1000),
        ] {
            let (tracks, sent, bytes) = sample_stream(start);
            let (d, ev) = demux_all(&bytes, chunk);
            assert_eq!(
                d.stats(),
                DemuxStats {
                    packets: (bytes.len() / 188) as u64,
                    ..DemuxStats::default()
                }
            );
            let got = d.tracks();
            assert_eq!(got.len(), 2);
            assert_eq!(
                (got[0].codec.clone(), got[0].width, got[0].height),
                (Codec::H264, 640, 360)
            );
            assert_eq!(
                h264::parse_avcc(&got[0].init).unwrap().sps,
                h264::parse_avcc(&tracks[0].init).unwrap().sps
            );
            assert_eq!(
                (got[1].codec.clone(), got[1].rate, got[1].channels),
                (Codec::Aac, 44100, 2)
            );
            assert_eq!(got[1].init, tracks[1].init);
            let recv = packets_of(&ev);
            for track in [1, 2] {
                let a: Vec<_> = sent.iter().filter(|p| p.track == track).collect();
                let b: Vec<_> = recv.iter().filter(|p| p.track == track).collect();
                assert_eq!(
                    a.len(),
                    b.len(),
                    "track {track}, start {start}, chunk {chunk}"
                );
                for (x, y) in a.iter().zip(&b) {
                    // Times come back shifted by the muxer's 100 ms offset, past the wrap
                    // unwrapped; audio times to within the ms rounding of the sample count.
                    let want = x.dts + 100;
                    assert!(y.dts.abs_diff(want) <= 1, "dts {} want {want}", y.dts);
                    assert_eq!(
                        (y.offset, y.keyframe, &y.data),
                        (x.offset, x.keyframe, &x.data)
                    );
                }
            }
        }
    }

    #[test]
    fn survives_garbage_lost_packets_and_bad_crc() {
        let (_, sent, mut bytes) = sample_stream(5000);
        // Corrupt the PMT CRC of a later copy, drop one TS packet and insert junk.
        bytes.drain(188 * 40..188 * 41);
        bytes.splice(188 * 80..188 * 80, [1u8, 2, 3, 0x47, 9].iter().copied());
        let (d, ev) = demux_all(&bytes, 333);
        let st = d.stats();
        assert!(st.sync_losses >= 1, "{st:?}");
        assert!(st.cc_errors >= 1, "{st:?}");
        let recv = packets_of(&ev);
        assert!(
            recv.len() >= sent.len() - 4 && recv.len() < sent.len(),
            "{} of {}",
            recv.len(),
            sent.len()
        );
    }

    #[test]
    fn reads_language_and_reports_unsupported_streams() {
        // A PMT by hand: H.264 on 0x100, AC-3 (0x81) on 0x101, AAC with "swe" on 0x102.
        let mut body = vec![0xe1, 0x00, 0xf0, 0x00];
        body.extend_from_slice(&[0x1b, 0xe1, 0x00, 0xf0, 0x00]);
        body.extend_from_slice(&[0x81, 0xe1, 0x01, 0xf0, 0x00]);
        body.extend_from_slice(&[
            0x0f, 0xe1, 0x02, 0xf0, 0x06, 0x0a, 0x04, b's', b'w', b'e', 0,
        ]);
        let mut sec = vec![0x02, 0xb0, 0, 0, 1, 0xc1, 0, 0];
        sec.extend_from_slice(&body);
        let len = sec.len() - 3 + 4;
        sec[1] = 0xb0 | (len >> 8) as u8;
        sec[2] = len as u8;
        let crc = crc32_mpeg2(&sec);
        sec.extend_from_slice(&crc.to_be_bytes());
        let pat = {
            let mut s = vec![0x00, 0xb0, 13, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0x00];
            let crc = crc32_mpeg2(&s);
            s.extend_from_slice(&crc.to_be_bytes());
            s
        };
        let mut bytes = Vec::new();
        for (pid, s) in [(0u16, pat), (0x1000, sec)] {
            let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0];
            p.extend_from_slice(&s);
            p.resize(188, 0xff);
            bytes.extend_from_slice(&p);
        }
        let mut d = TsDemuxer::new();
        let mut ev = Vec::new();
        d.push(&bytes, &mut ev);
        assert_eq!(
            ev,
            vec![TsEvent::Unsupported {
                pid: 0x101,
                stream_type: 0x81
            }]
        );
        assert_eq!(d.streams.len(), 2);
        assert_eq!(d.streams[1].track.lang.as_deref(), Some("swe"));
        assert_eq!(d.streams[1].track.id, 2);
        assert!(d.tracks().is_empty(), "no track before its first frame");
    }

    #[test]
    fn reads_pes_headers() {
        // PTS 0x1_2345_6789 and DTS 0x0_0000_0001 coded as in §2.4.3.7, then 2 bytes.
        let code = |prefix: u8, t: u64| {
            [
                (prefix << 4) | (((t >> 30) as u8 & 7) << 1) | 1,
                (t >> 22) as u8,
                (((t >> 15) as u8) << 1) | 1,
                (t >> 7) as u8,
                ((t as u8) << 1) | 1,
            ]
        };
        let mut pes = vec![0, 0, 1, 0xe0, 0, 15, 0x80, 0xc0, 10];
        pes.extend_from_slice(&code(3, 0x1_2345_6789));
        pes.extend_from_slice(&code(1, 1));
        pes.extend_from_slice(&[0xaa, 0xbb, 0xcc]);
        let h = parse_pes_header(&pes).unwrap();
        assert_eq!(
            (h.stream_id, h.pts, h.dts, h.payload),
            (0xe0, Some(0x1_2345_6789), Some(1), &[0xaa, 0xbb][..])
        );
        // PTS only: the DTS is the PTS.
        let mut pes = vec![0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5];
        pes.extend_from_slice(&code(2, 90_000));
        let h = parse_pes_header(&pes).unwrap();
        assert_eq!(
            (h.pts, h.dts, h.payload.len()),
            (Some(90_000), Some(90_000), 0)
        );
        // Padding has no optional header; a missing '10' marker or a short header fails.
        let h = parse_pes_header(&[0, 0, 1, 0xbe, 0, 2, 0xff, 0xff]).unwrap();
        assert_eq!((h.pts, h.payload.len()), (None, 2));
        assert_eq!(
            parse_pes_header(&[0, 0, 1, 0xe0, 0, 0, 0x40, 0x80, 5]),
            None
        );
        assert_eq!(parse_pes_header(&pes[..12]), None);
        assert_eq!(parse_pes_header(&[0, 0, 2, 0xe0, 0, 0]), None);
    }

    #[test]
    fn splits_mp3_frames_and_takes_their_rate() {
        // Two MPEG-1 Layer III frames of 417 bytes in one PES.
        let mut es = Vec::new();
        for _ in 0..2 {
            let mut f = vec![0xff, 0xfb, 0x90, 0x44];
            f.resize(417, 0);
            es.extend_from_slice(&f);
        }
        let mut d = TsDemuxer::new();
        d.streams.push(Es {
            pid: 0x100,
            stream_type: 3,
            track: Track::new(1, TrackKind::Audio, Codec::Mp3),
            ready: false,
            codec: EsCodec::Mp3 {
                carry: Vec::new(),
                carry_time: 0,
            },
            pes: Vec::new(),
            pes_bpos: 0,
            assembling: false,
            cc: None,
        });
        let mut ev = Vec::new();
        d.elementary(0, Some((90_000, 0)), &es[..600], 0, &mut ev);
        d.elementary(0, Some((95_000, 0)), &es[600..], 0, &mut ev);
        let p = packets_of(&ev);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].dts, p[1].dts), (1000, 1026)); // 1152 samples at 44.1 kHz later
        assert_eq!(p[0].data.len(), 417);
        assert_eq!((d.tracks()[0].rate, d.tracks()[0].channels), (44100, 2));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..400) {
            let (d, ev) = demux_all(&b, chunk);
            prop_assert!(d.stats().packets <= (b.len() / 188) as u64);
            prop_assert!(packets_of(&ev).len() <= b.len());
        }

        #[test]
        fn never_panics_on_damaged_streams(cuts in proptest::collection::vec((0usize..40_000, any::<u8>()), 1..20)) {
            let (_, sent, mut bytes) = sample_stream(1000);
            for (at, v) in cuts {
                let at = at % bytes.len();
                bytes[at] = v;
            }
            let (_, ev) = demux_all(&bytes, 188);
            prop_assert!(packets_of(&ev).len() <= sent.len() + 4);
        }
    }
}
