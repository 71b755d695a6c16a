//! RTP (RFC 3550) packetization of DTSC packets, sans-IO: [`Packetizer`] turns one access
//! unit into RTP packets appended to a caller-owned buffer, and [`sender_report`] writes the
//! RTCP sender report each track sends. Payload formats:
//! * H.264, RFC 6184: a NAL unit that fits is one packet (§5.6), a larger one is cut into
//!   FU-A fragments (§5.8); before every keyframe the SPS and PPS of the init data go out
//!   together in one STAP-A (§5.7.1).
//! * HEVC, RFC 7798: single NAL unit packets (§4.4.1), fragmentation units (type 49, §4.4.3),
//!   VPS/SPS/PPS in one aggregation packet (type 48, §4.4.2) before every IRAP picture.
//! * AAC, RFC 3640 `mpeg4-generic` in AAC-hbr mode (§3.3.6): one access unit per packet
//!   after a 16-bit AU-headers-length and one AU-header (13-bit size, 3-bit index 0).
//! * MP3, RFC 2250 §3.5: a 4-byte header (MBZ, fragment offset 0), then whole frames.
//! * G.711 A-law and µ-law, RFC 3551 §4.5.14 (PCMA, PCMU): the samples as they are, cut on
//!   whole samples to fit the MTU.
//!
//! RTP timestamps: presentation time in the track's clock (90 kHz for video, the sample rate
//! for audio) plus a random-looking base chosen by the caller, modulo 2^32.

use crate::h264;
use crate::hevc;
use crate::model::{Codec, PacketRef, Track, TrackKind};

mod dts;
mod jitter;
mod rtcp;

pub use dts::DtsFromPts;
pub use jitter::JitterBuffer;
pub use rtcp::{bye, report_blocks, sender_report, ReportBlock};

/// Size of the fixed RTP header this module writes (no CSRC, no extension), bytes.
pub const RTP_HEADER_LEN: usize = 12;
/// Default largest RTP packet, header included, bytes: fits a 1500-byte Ethernet MTU with
/// IPv4/UDP headers and the 4-byte RTSP interleaved frame to spare.
pub const DEFAULT_MTU: usize = 1400;

/// Where each RTP packet of a [`Packetizer::packetize`] call lies in the output buffer.
pub type PacketSpans = Vec<std::ops::Range<usize>>;

/// The payload format of one track.
#[derive(Debug, Clone)]
enum Format {
    /// H.264 (`hevc` false) or HEVC: the sample's NAL length size and the parameter sets of
    /// the init data, sent before keyframes that lack them.
    Video {
        hevc: bool,
        length_size: u8,
        parameter_sets: Vec<Vec<u8>>,
    },
    Aac,
    Mp3,
    /// G.711 (RFC 3551 §4.5.14): the samples as they are, one byte per sample and channel.
    G711 {
        channels: u32,
    },
}

/// Packetizes one track.
#[derive(Debug, Clone)]
pub struct Packetizer {
    format: Format,
    payload_type: u8,
    ssrc: u32,
    clock_rate: u32,
    ts_base: u32,
    seq: u16,
    mtu: usize,
    /// Packets and payload bytes sent, for sender reports.
    pub packets: u32,
    /// Payload octets sent (RFC 3550 §6.4.1 sender's octet count).
    pub octets: u32,
    /// RTP timestamp of the last packet sent.
    pub last_ts: u32,
}

impl Packetizer {
    /// A packetizer for `track` with payload type `payload_type`, SSRC `ssrc`, first sequence
    /// number `seq` and RTP timestamp base `ts_base`; `None` for codecs without a payload
    /// format here (anything but H.264, HEVC, AAC and MP3) or unreadable init data.
    pub fn new(
        track: &Track,
        payload_type: u8,
        ssrc: u32,
        seq: u16,
        ts_base: u32,
    ) -> Option<Packetizer> {
        let format = match track.codec {
            Codec::H264 => {
                let cfg = h264::parse_avcc(&track.init).ok()?;
                let sets: Vec<Vec<u8>> = cfg
                    .sps
                    .iter()
                    .chain(&cfg.pps)
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect();
                Format::Video {
                    hevc: false,
                    length_size: cfg.nal_length_size,
                    parameter_sets: sets,
                }
            }
            Codec::Hevc => {
                let cfg = hevc::parse_hvcc(&track.init).ok()?;
                let sets = cfg
                    .nal_units
                    .iter()
                    .filter(|(k, n)| {
                        matches!(*k, hevc::NAL_VPS | hevc::NAL_SPS | hevc::NAL_PPS) && n.len() >= 2
                    })
                    .map(|(_, n)| n.clone())
                    .collect();
                Format::Video {
                    hevc: true,
                    length_size: cfg.nal_length_size,
                    parameter_sets: sets,
                }
            }
            Codec::Aac if track.rate > 0 => Format::Aac,
            Codec::Mp3 => Format::Mp3,
            Codec::Alaw | Codec::Ulaw => Format::G711 {
                channels: track.channels.max(1),
            },
            _ => return None,
        };
        Some(Packetizer {
            clock_rate: clock_rate(track)?,
            format,
            payload_type,
            ssrc,
            ts_base,
            seq,
            mtu: DEFAULT_MTU,
            packets: 0,
            octets: 0,
            last_ts: ts_base,
        })
    }

    /// The track's RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The sequence number the next packet gets.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// The payload type of this track's packets.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// The SSRC of this track's packets.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The RTP timestamp of presentation time `ms` (ms from the stream's zero).
    pub fn rtp_time(&self, ms: u64) -> u32 {
        let ticks = u128::from(ms) * u128::from(self.clock_rate) / 1000;
        self.ts_base.wrapping_add(ticks as u32)
    }

    /// Appends the RTP packets of access unit `p` to `out`, each packet's range to `spans`.
    /// A video payload that is not valid length-prefixed NAL units gives no packet.
    pub fn packetize(&mut self, p: &PacketRef, out: &mut Vec<u8>, spans: &mut PacketSpans) {
        let ts = self.rtp_time(p.pts());
        self.last_ts = ts;
        let max_payload = self.mtu - RTP_HEADER_LEN;
        match &self.format {
            Format::Video {
                hevc, length_size, ..
            } => {
                let (hevc, header_len) = (*hevc, if *hevc { 2 } else { 1 });
                let nals: Vec<&[u8]> = match h264::nal_units(p.data, *length_size).collect() {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let nals: Vec<&[u8]> = nals.into_iter().filter(|n| n.len() >= header_len).collect();
                let is_sps = |n: &[u8]| match hevc {
                    true => hevc::nal_type(n) == Some(hevc::NAL_SPS),
                    false => h264::nal_type(n) == Some(h264::NAL_SPS),
                };
                let send_sets = p.keyframe && !nals.iter().any(|n| is_sps(n));
                // The parameter sets are lent out of `self` for the call (no copy per keyframe).
                let sets = if send_sets {
                    std::mem::take(parameter_sets_mut(&mut self.format))
                } else {
                    Vec::new()
                };
                self.video(ts, &sets, &nals, header_len, max_payload, out, spans);
                if send_sets {
                    *parameter_sets_mut(&mut self.format) = sets;
                }
            }
            Format::Aac => {
                // One AU per packet; an AU larger than a packet is fragmented, each fragment
                // with the AU-header of the whole AU and the marker on the last (RFC 3640
                // §3.2.3). AU-size is 13 bits: AAC frames are at most 8191 bytes (ADTS).
                let au = &p.data[..p.data.len().min(0x1fff)];
                let size = au.len() as u16;
                let chunks: Vec<&[u8]> = if au.is_empty() {
                    vec![au]
                } else {
                    au.chunks(max_payload - 4).collect()
                };
                for (i, chunk) in chunks.iter().enumerate() {
                    let start = self.header(i + 1 == chunks.len(), ts, out);
                    out.extend_from_slice(&16u16.to_be_bytes());
                    out.extend_from_slice(&(size << 3).to_be_bytes());
                    out.extend_from_slice(chunk);
                    self.close(start, out, spans);
                }
            }
            Format::G711 { channels } => {
                // Whole samples per packet; each packet's timestamp is its first sample's.
                let channels = *channels as usize;
                let per = (max_payload / channels).max(1) * channels;
                for (i, chunk) in p.data.chunks(per).enumerate() {
                    let at = ts.wrapping_add((i * per / channels) as u32);
                    let start = self.header(false, at, out);
                    out.extend_from_slice(chunk);
                    self.close(start, out, spans);
                }
            }
            Format::Mp3 => {
                // RFC 2250 §3.5: MBZ, then the offset of this fragment in the frame.
                let chunks: Vec<&[u8]> = if p.data.is_empty() {
                    vec![p.data]
                } else {
                    p.data.chunks(max_payload - 4).collect()
                };
                let mut offset = 0usize;
                for (i, chunk) in chunks.iter().enumerate() {
                    let start = self.header(i + 1 == chunks.len(), ts, out);
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&(offset.min(0xffff) as u16).to_be_bytes());
                    out.extend_from_slice(chunk);
                    offset += chunk.len();
                    self.close(start, out, spans);
                }
            }
        }
    }

    /// H.264 (`header_len` 1) or HEVC (2) NAL units of one access unit, with the parameter
    /// sets `sets` first as one aggregation packet; the marker bit on the last packet.
    #[allow(clippy::too_many_arguments)]
    fn video(
        &mut self,
        ts: u32,
        sets: &[Vec<u8>],
        nals: &[&[u8]],
        header_len: usize,
        max_payload: usize,
        out: &mut Vec<u8>,
        spans: &mut PacketSpans,
    ) {
        let hevc = header_len == 2;
        if !sets.is_empty() {
            let total: usize = sets.iter().map(|s| 2 + s.len()).sum::<usize>() + header_len;
            if total <= max_payload {
                let start = self.header(nals.is_empty(), ts, out);
                if hevc {
                    // PayloadHdr: type 48, layer 0, TID 1 (RFC 7798 §4.4.2).
                    out.extend_from_slice(&[48 << 1, 1]);
                } else {
                    // STAP-A: F and NRI of the strongest unit (parameter sets are NRI 3).
                    let nri = sets.iter().map(|s| s[0] & 0x60).max().unwrap_or(0x60);
                    out.push(nri | 24);
                }
                for s in sets {
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend_from_slice(s);
                }
                self.close(start, out, spans);
            } else {
                for s in sets {
                    self.nal(ts, s, false, header_len, max_payload, out, spans);
                }
            }
        }
        for (i, nal) in nals.iter().enumerate() {
            self.nal(
                ts,
                nal,
                i + 1 == nals.len(),
                header_len,
                max_payload,
                out,
                spans,
            );
        }
    }

    /// One NAL unit: a single NAL unit packet, or fragmentation units (FU-A, RFC 6184 §5.8;
    /// HEVC FU, RFC 7798 §4.4.3) when it does not fit.
    #[allow(clippy::too_many_arguments)]
    fn nal(
        &mut self,
        ts: u32,
        nal: &[u8],
        last_of_au: bool,
        header_len: usize,
        max_payload: usize,
        out: &mut Vec<u8>,
        spans: &mut PacketSpans,
    ) {
        if nal.len() <= max_payload {
            let start = self.header(last_of_au, ts, out);
            out.extend_from_slice(nal);
            self.close(start, out, spans);
            return;
        }
        let (head, body) = nal.split_at(header_len);
        let fu_type = if header_len == 2 {
            hevc::nal_type(head).unwrap_or(0)
        } else {
            head[0] & 0x1f
        };
        let room = max_payload - header_len - 1;
        let chunks: Vec<&[u8]> = body.chunks(room).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == chunks.len());
            let start = self.header(last && last_of_au, ts, out);
            if header_len == 2 {
                // PayloadHdr type 49 with the unit's layer and TID; FU header S/E + type.
                out.push((head[0] & 0x81) | (49 << 1));
                out.push(head[1]);
            } else {
                out.push((head[0] & 0xe0) | 28);
            }
            out.push(u8::from(first) << 7 | u8::from(last) << 6 | fu_type);
            out.extend_from_slice(chunk);
            self.close(start, out, spans);
        }
    }

    /// Writes the fixed header (V=2, no padding, extension or CSRC) and returns where the
    /// packet starts.
    fn header(&mut self, marker: bool, ts: u32, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.push(0x80);
        out.push(u8::from(marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        start
    }

    fn close(&mut self, start: usize, out: &[u8], spans: &mut PacketSpans) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self
            .octets
            .wrapping_add((out.len() - start - RTP_HEADER_LEN) as u32);
        spans.push(start..out.len());
    }
}

/// The parameter sets of a video format (an empty slot for audio).
fn parameter_sets_mut(f: &mut Format) -> &mut Vec<Vec<u8>> {
    match f {
        Format::Video { parameter_sets, .. } => parameter_sets,
        _ => unreachable!("only video formats send parameter sets"),
    }
}

/// The RTP clock rate of `track`: 90 000 Hz for video, the sample rate for AAC and G.711
/// (8000 unless told), 90 000 for MP3 (RFC 3551 payload type 14's clock). `None` for tracks
/// without one.
pub fn clock_rate(track: &Track) -> Option<u32> {
    match (track.kind, &track.codec) {
        (TrackKind::Video, _) => Some(90_000),
        (_, Codec::Mp3) => Some(90_000),
        (_, Codec::Alaw | Codec::Ulaw) => Some(track.rate.max(8000)),
        (TrackKind::Audio, _) if track.rate > 0 => Some(track.rate),
        _ => None,
    }
}

/// The SDP media-level `a=fmtp` parameters of `track` (after `a=fmtp:PT `): H.264
/// `packetization-mode=1`, `profile-level-id` and `sprop-parameter-sets` (RFC 6184 §8.1);
/// HEVC `sprop-vps/sps/pps` (RFC 7798 §7.1); AAC the RFC 3640 AAC-hbr parameters with the
/// AudioSpecificConfig as hex `config`. `None` when the format has no parameters (MP3).
pub fn fmtp(track: &Track) -> Option<String> {
    let b64 = |b: &[u8]| base64(b);
    match track.codec {
        Codec::H264 => {
            let cfg = h264::parse_avcc(&track.init).ok()?;
            let sets: Vec<String> = cfg.sps.iter().chain(&cfg.pps).map(|s| b64(s)).collect();
            Some(format!(
                "packetization-mode=1;profile-level-id={:02X}{:02X}{:02X};sprop-parameter-sets={}",
                cfg.profile,
                cfg.compat,
                cfg.level,
                sets.join(",")
            ))
        }
        Codec::Hevc => {
            let cfg = hevc::parse_hvcc(&track.init).ok()?;
            let of = |k: u8| -> String {
                cfg.nal_units
                    .iter()
                    .filter(|(t, _)| *t == k)
                    .map(|(_, n)| b64(n))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            Some(format!(
                "sprop-vps={};sprop-sps={};sprop-pps={}",
                of(hevc::NAL_VPS),
                of(hevc::NAL_SPS),
                of(hevc::NAL_PPS)
            ))
        }
        Codec::Aac => {
            let hex: String = track.init.iter().map(|b| format!("{b:02X}")).collect();
            Some(format!(
                "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;\
                 indexdeltalength=3;config={hex}"
            ))
        }
        _ => None,
    }
}

/// The SDP `a=rtpmap` encoding (after `a=rtpmap:PT `): `H264/90000`, `H265/90000`,
/// `MPEG4-GENERIC/RATE/CHANNELS`, `MPA/90000`, `PCMA/8000`, `PCMU/8000` (RFC 3551 §6).
pub fn rtpmap(track: &Track) -> Option<String> {
    match track.codec {
        Codec::H264 => Some("H264/90000".into()),
        Codec::Hevc => Some("H265/90000".into()),
        Codec::Aac if track.rate > 0 => Some(format!(
            "MPEG4-GENERIC/{}/{}",
            track.rate,
            track.channels.max(1)
        )),
        Codec::Mp3 => Some("MPA/90000".into()),
        Codec::Alaw | Codec::Ulaw => {
            let name = if track.codec == Codec::Alaw {
                "PCMA"
            } else {
                "PCMU"
            };
            let rate = track.rate.max(8000);
            Some(match track.channels {
                0 | 1 => format!("{name}/{rate}"),
                n => format!("{name}/{rate}/{n}"),
            })
        }
        _ => None,
    }
}

/// The payload type of `track` in an SDP where it is the `place`th medium (from 0): RFC
/// 3551's static types for G.711 at 8 kHz mono (PCMU 0, PCMA 8), else the dynamic 96 +
/// `place`.
pub fn payload_type(track: &Track, place: usize) -> u8 {
    let mono_8k = track.rate <= 8000 && track.channels <= 1;
    match track.codec {
        Codec::Ulaw if mono_8k => 0,
        Codec::Alaw if mono_8k => 8,
        _ => 96 + place.min(31) as u8,
    }
}

/// Standard base64 (RFC 4648 §4) with padding, for `sprop-parameter-sets`.
pub fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes standard base64 (a received `sprop-parameter-sets` entry); `None` when invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

/// Why an RTP packet was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its header, not version 2, or its padding/extension runs past the end.
    #[error("malformed RTP packet")]
    Malformed,
    /// A payload this depacketizer cannot read (an aggregation or fragment that is cut).
    #[error("malformed {0} payload")]
    Payload(&'static str),
}

/// The fields of an RTP header (RFC 3550 §5.1) a receiver needs, and where the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// `M`: the last packet of an access unit (video) or frame.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp, in the track's clock.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
}

/// Reads an RTP packet: its header and payload (after CSRCs, extension and without padding).
pub fn parse_rtp(b: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    if b.len() < RTP_HEADER_LEN || b[0] >> 6 != 2 {
        return Err(RtpError::Malformed);
    }
    let cc = usize::from(b[0] & 0x0f);
    let mut at = RTP_HEADER_LEN + 4 * cc;
    if b[0] & 0x10 != 0 {
        let ext = b.get(at + 2..at + 4).ok_or(RtpError::Malformed)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        end = end
            .checked_sub(usize::from(*b.last().unwrap_or(&0)))
            .ok_or(RtpError::Malformed)?;
    }
    let payload = b.get(at..end).ok_or(RtpError::Malformed)?;
    Ok((
        RtpHeader {
            marker: b[1] & 0x80 != 0,
            payload_type: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        },
        payload,
    ))
}

/// Largest video access unit a [`Depacketizer`] assembles, bytes (its NAL units with their
/// 4-byte lengths), and so also the largest fragmented NAL unit (FU-A, RFC 6184 §5.8; HEVC
/// FU, RFC 7798 §4.4.3). 8 MiB is several times a 4K intra picture at broadcast quality
/// (1–3 MiB); a sender that goes past it loses that access unit, not the session.
pub const MAX_AU_BYTES: usize = 8 << 20;

/// Most NAL units in one video access unit. Encoders write one to a few dozen (slices,
/// SEI, parameter sets); 1024 leaves room for many-slice low-latency streams while a
/// flood of one-byte NAL units (STAP-A can carry thousands per packet) cannot pile up.
pub const MAX_AU_NALS: usize = 1024;

/// Largest parameter set (VPS, SPS, PPS) kept, bytes: real ones are tens to a few hundred
/// bytes (an SPS with scaling lists stays under 1 KiB).
pub const MAX_PARAMETER_SET_BYTES: usize = 4 << 10;

/// One access unit reassembled from RTP: its RTP timestamp (unwrapped past 32 bits), a
/// keyframe flag, and the payload in DTSC form (length-prefixed NAL units, raw AAC frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// RTP timestamp extended to 64 bits (the track's clock).
    pub timestamp: u64,
    /// An IDR (H.264) or IRAP (HEVC) picture; always true for audio.
    pub keyframe: bool,
    /// The payload.
    pub data: Vec<u8>,
}

/// Reassembles the access units of one received track (the inverse of [`Packetizer`]):
/// H.264 single NAL, STAP-A and FU-A (RFC 6184), HEVC single, AP and FU (RFC 7798), AAC-hbr
/// with several AUs per packet (RFC 3640), MP3 (RFC 2250, whole frames), G.711 (each packet
/// one unit, RFC 3551 §4.5.14). Parameter sets found
/// in the stream are taken out of the access units and kept for the track's init data
/// ([`Depacketizer::parameter_sets`]). A sequence gap counts as loss and drops the access
/// unit it broke; after a loss on a video track every unit up to the next keyframe is
/// dropped too (counted in [`Depacketizer::skipped`]), since a decoder cannot use pictures
/// that refer to a broken one.
///
/// Memory is bounded: a video access unit over [`MAX_AU_BYTES`] or [`MAX_AU_NALS`], and a
/// fragmented NAL unit over [`MAX_AU_BYTES`], is dropped whole (counted in
/// [`Depacketizer::oversized`] and [`Depacketizer::skipped`]) and, as after a loss, video
/// resumes at the next keyframe. Audio units are never reassembled across packets (AAC-hbr
/// whole AUs, MP3 whole frames, G.711), so one is at most a packet.
#[derive(Debug, Clone)]
pub struct Depacketizer {
    codec: Codec,
    /// H.264 / HEVC parameter sets seen in-band (VPS, SPS, PPS), newest of each kind.
    sets: Vec<(u8, Vec<u8>)>,
    /// The access unit being built: its timestamp, NAL units, keyframe flag and count of
    /// NAL units.
    au: Option<(u64, Vec<u8>, bool, usize)>,
    /// A fragmented NAL unit being built; `None` after a loss until its next start.
    fu: Option<Vec<u8>>,
    last_seq: Option<u16>,
    last_ts: Option<u64>,
    /// Packets missing from the sequence numbers.
    pub lost: u64,
    /// Packets whose payload could not be read.
    pub bad: u64,
    /// Access units a loss broke, those dropped after it while waiting for a keyframe, and
    /// those over the size caps.
    pub skipped: u64,
    /// Access units dropped for going over [`MAX_AU_BYTES`] or [`MAX_AU_NALS`] (a NAL unit
    /// fragmented past [`MAX_AU_BYTES`] included).
    pub oversized: u64,
    /// Video after a loss: units are dropped until a keyframe.
    need_key: bool,
    /// The RTP timestamp (extended) of an access unit a loss broke: its NAL units are dropped.
    broken_ts: Option<u64>,
    /// Whether the previous packet ended an access unit (marker bit).
    last_marker: bool,
    /// The extended timestamp of the previous packet.
    au_ts: Option<u64>,
    out: std::collections::VecDeque<Unit>,
    /// For AAC: AU-size and AU-index bits of the AU-headers (`sizelength`, `indexlength`).
    aac_bits: (u32, u32),
    sets_version: u64,
}

impl Depacketizer {
    /// A depacketizer for `codec`; `aac_bits` are the SDP's `sizelength` and `indexlength`
    /// (13, 3 for AAC-hbr).
    pub fn new(codec: Codec, aac_bits: (u32, u32)) -> Depacketizer {
        Depacketizer {
            codec,
            sets: Vec::new(),
            au: None,
            fu: None,
            last_seq: None,
            last_ts: None,
            lost: 0,
            bad: 0,
            skipped: 0,
            oversized: 0,
            need_key: false,
            broken_ts: None,
            last_marker: false,
            au_ts: None,
            out: std::collections::VecDeque::new(),
            aac_bits,
            sets_version: 0,
        }
    }

    /// The parameter sets seen in the stream so far, as (NAL unit type, unit).
    pub fn parameter_sets(&self) -> &[(u8, Vec<u8>)] {
        &self.sets
    }

    /// Counts changes to [`parameter_sets`](Self::parameter_sets): a receiver rebuilds its
    /// init data only when this moved.
    pub fn sets_version(&self) -> u64 {
        self.sets_version
    }

    /// The next complete access unit.
    pub fn poll(&mut self) -> Option<Unit> {
        self.out.pop_front()
    }

    /// Completes the access unit being built (at the end of the stream).
    pub fn flush(&mut self) {
        self.finish_au();
    }

    fn extend_ts(&mut self, ts: u32) -> u64 {
        let v = match self.last_ts {
            None => u64::from(ts),
            Some(last) => {
                let delta = ts.wrapping_sub(last as u32) as i32;
                (last as i64 + i64::from(delta)).max(0) as u64
            }
        };
        self.last_ts = Some(v);
        v
    }

    fn finish_au(&mut self) {
        if let Some((ts, data, key, _)) = self.au.take() {
            if self.need_key && !key {
                self.skipped += 1;
                return;
            }
            self.need_key &= !key;
            if !data.is_empty() {
                self.out.push_back(Unit {
                    timestamp: ts,
                    keyframe: key,
                    data,
                });
            }
        }
    }

    /// One NAL unit of the access unit at `ts`.
    fn nal(&mut self, ts: u64, nal: &[u8]) {
        let hevc = self.codec == Codec::Hevc;
        let (kind, is_set, key) = if hevc {
            let t = hevc::nal_type(nal).unwrap_or(0);
            (
                t,
                matches!(t, hevc::NAL_VPS | hevc::NAL_SPS | hevc::NAL_PPS),
                hevc::is_irap(t),
            )
        } else {
            let t = h264::nal_type(nal).unwrap_or(0);
            (
                t,
                matches!(t, h264::NAL_SPS | h264::NAL_PPS),
                t == h264::NAL_IDR,
            )
        };
        if nal.len() < if hevc { 2 } else { 1 } {
            return;
        }
        if is_set {
            if nal.len() > MAX_PARAMETER_SET_BYTES {
                self.bad += 1;
                return;
            }
            match self.sets.iter_mut().find(|(k, _)| *k == kind) {
                Some(slot) if slot.1 == nal => {}
                Some(slot) => {
                    slot.1 = nal.to_vec();
                    self.sets_version += 1;
                }
                None => {
                    self.sets.push((kind, nal.to_vec()));
                    self.sets_version += 1;
                }
            }
            return;
        }
        if (hevc && kind == hevc::NAL_AUD) || (!hevc && kind == h264::NAL_AUD) {
            return;
        }
        if self.broken_ts == Some(ts) {
            return;
        }
        if self.au.as_ref().is_some_and(|a| a.0 != ts) {
            self.finish_au();
        }
        let (bytes, count) = self.au.as_ref().map_or((0, 0), |a| (a.1.len(), a.3));
        if bytes + 4 + nal.len() > MAX_AU_BYTES || count >= MAX_AU_NALS {
            self.drop_oversized(ts);
            return;
        }
        let au = self.au.get_or_insert((ts, Vec::new(), false, 0));
        au.1.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        au.1.extend_from_slice(nal);
        au.2 |= key;
        au.3 += 1;
    }

    /// Drops the access unit at `ts`, which went over a cap: what was built of it, the NAL
    /// unit being reassembled, and its NAL units still to come; video then waits for a
    /// keyframe. Counted once per access unit.
    fn drop_oversized(&mut self, ts: u64) {
        self.fu = None;
        if self.au.as_ref().is_some_and(|a| a.0 == ts) {
            self.au = None;
        }
        if self.broken_ts != Some(ts) {
            self.oversized += 1;
            self.skipped += 1;
        }
        self.broken_ts = Some(ts);
        self.need_key = true;
    }

    /// Appends one fragment to the NAL unit being reassembled (if its start came) at `ts`,
    /// dropping the access unit when the NAL unit would go over [`MAX_AU_BYTES`]; the whole
    /// NAL unit when `end`.
    fn fragment(&mut self, ts: u64, chunk: &[u8], end: bool) {
        let Some(fu) = self.fu.as_mut() else {
            return; // the start was lost, or the access unit was dropped
        };
        if fu.len() + chunk.len() > MAX_AU_BYTES {
            self.drop_oversized(ts);
            return;
        }
        fu.extend_from_slice(chunk);
        if end {
            let nal = self.fu.take().unwrap_or_default();
            self.nal(ts, &nal);
        }
    }

    /// Takes one RTP packet.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), RtpError> {
        let (h, payload) = parse_rtp(packet)?;
        let mut gap = 1;
        if let Some(last) = self.last_seq {
            gap = h.seq.wrapping_sub(last);
            if gap == 0 || gap > 0x8000 {
                return Ok(()); // a duplicate or a late packet
            }
        }
        self.last_seq = Some(h.seq);
        let ts = self.extend_ts(h.timestamp);
        if gap > 1 {
            self.lost += u64::from(gap - 1);
            // What was being built is broken: drop it.
            if self.au.take().is_some() | self.fu.take().is_some() {
                self.skipped += 1;
            }
            if matches!(self.codec, Codec::H264 | Codec::Hevc) {
                self.need_key = true;
                // The lost packets may have held the start of this packet's access unit,
                // unless the last one received ended a unit and this one starts another.
                let clean = self.last_marker && self.au_ts != Some(ts);
                self.broken_ts = (!clean).then_some(ts);
            }
        }
        self.au_ts = Some(ts);
        self.last_marker = h.marker;
        let r = match self.codec {
            Codec::H264 => self.h264(ts, payload),
            Codec::Hevc => self.hevc(ts, payload),
            Codec::Aac => self.aac(ts, payload),
            Codec::Alaw | Codec::Ulaw if !payload.is_empty() => {
                self.out.push_back(Unit {
                    timestamp: ts,
                    keyframe: true,
                    data: payload.to_vec(),
                });
                Ok(())
            }
            Codec::Alaw | Codec::Ulaw => Err(RtpError::Payload("G.711")),
            _ => {
                // MP3: a 4-byte header, then whole frames (fragments are not reassembled).
                match payload.get(4..) {
                    Some(f) if payload[2..4] == [0, 0] && !f.is_empty() => {
                        self.out.push_back(Unit {
                            timestamp: ts,
                            keyframe: true,
                            data: f.to_vec(),
                        });
                        Ok(())
                    }
                    _ => Err(RtpError::Payload("MPEG audio")),
                }
            }
        };
        if r.is_err() {
            self.bad += 1;
            self.fu = None;
        }
        if h.marker && matches!(self.codec, Codec::H264 | Codec::Hevc) {
            self.finish_au();
        }
        r
    }

    fn h264(&mut self, ts: u64, p: &[u8]) -> Result<(), RtpError> {
        let Some(&first) = p.first() else {
            return Err(RtpError::Payload("H.264"));
        };
        match first & 0x1f {
            1..=23 => self.nal(ts, p),
            24 => {
                let mut at = 1;
                while at < p.len() {
                    let n = usize::from(u16::from_be_bytes([
                        p[at],
                        *p.get(at + 1).ok_or(RtpError::Payload("STAP-A"))?,
                    ]));
                    let nal = p
                        .get(at + 2..at + 2 + n)
                        .ok_or(RtpError::Payload("STAP-A"))?;
                    self.nal(ts, nal);
                    at += 2 + n;
                }
            }
            28 => {
                let fh = *p.get(1).ok_or(RtpError::Payload("FU-A"))?;
                if fh & 0x80 != 0 {
                    // A NAL unit of an access unit already dropped is not collected.
                    self.fu =
                        (self.broken_ts != Some(ts)).then(|| vec![(first & 0xe0) | (fh & 0x1f)]);
                }
                self.fragment(ts, p.get(2..).unwrap_or_default(), fh & 0x40 != 0);
            }
            _ => return Err(RtpError::Payload("H.264")),
        }
        Ok(())
    }

    fn hevc(&mut self, ts: u64, p: &[u8]) -> Result<(), RtpError> {
        if p.len() < 3 {
            return Err(RtpError::Payload("HEVC"));
        }
        match (p[0] >> 1) & 0x3f {
            48 => {
                let mut at = 2;
                while at < p.len() {
                    let n = usize::from(u16::from_be_bytes([
                        p[at],
                        *p.get(at + 1).ok_or(RtpError::Payload("AP"))?,
                    ]));
                    let nal = p.get(at + 2..at + 2 + n).ok_or(RtpError::Payload("AP"))?;
                    self.nal(ts, nal);
                    at += 2 + n;
                }
            }
            49 => {
                let fh = p[2];
                if fh & 0x80 != 0 {
                    self.fu = (self.broken_ts != Some(ts))
                        .then(|| vec![(p[0] & 0x81) | ((fh & 0x3f) << 1), p[1]]);
                }
                self.fragment(ts, p.get(3..).unwrap_or_default(), fh & 0x40 != 0);
            }
            50 => return Err(RtpError::Payload("HEVC PACI")),
            _ => self.nal(ts, p),
        }
        Ok(())
    }

    fn aac(&mut self, ts: u64, p: &[u8]) -> Result<(), RtpError> {
        let bad = RtpError::Payload("MPEG4-GENERIC");
        let bits = usize::from(u16::from_be_bytes([
            *p.first().ok_or(bad.clone())?,
            *p.get(1).ok_or(bad.clone())?,
        ]));
        let (size_len, index_len) = self.aac_bits;
        let per = (size_len + index_len) as usize;
        if per == 0 || bits % per != 0 && bits % 8 != 0 {
            return Err(bad);
        }
        let hdr_bytes = bits.div_ceil(8);
        let headers = p.get(2..2 + hdr_bytes).ok_or(bad.clone())?;
        let mut data = &p[2 + hdr_bytes..];
        let count = bits / per;
        for i in 0..count {
            let mut v = 0u32;
            for b in 0..size_len as usize {
                let bit = i * per + b;
                v = (v << 1) | u32::from(headers[bit / 8] >> (7 - bit % 8) & 1);
            }
            let size = v as usize;
            if size > data.len() {
                // A fragment of a large AU: whole AUs only here (frames fit a packet).
                return Err(bad);
            }
            let (au, rest) = data.split_at(size);
            if !au.is_empty() {
                self.out.push_back(Unit {
                    timestamp: ts + 1024 * i as u64,
                    keyframe: true,
                    data: au.to_vec(),
                });
            }
            data = rest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aac::{self, AudioSpecificConfig};
    use proptest::prelude::*;

    fn avc_track() -> Track {
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xec, 0xb2, 0x2c];
        let mut t = Track::new(1, TrackKind::Video, Codec::H264);
        let cfg = h264::AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        h264::write_avcc(&cfg, &mut t.init).unwrap();
        t
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    /// Reassembles H.264 NAL units from RTP payloads (single, STAP-A, FU-A), as a receiver.
    fn depacketize(out: &[u8], spans: &PacketSpans) -> (Vec<Vec<u8>>, Vec<bool>) {
        let mut nals = Vec::new();
        let mut markers = Vec::new();
        let mut fu: Vec<u8> = Vec::new();
        for s in spans {
            let p = &out[s.clone()];
            markers.push(p[1] & 0x80 != 0);
            let pl = &p[RTP_HEADER_LEN..];
            match pl[0] & 0x1f {
                24 => {
                    let mut at = 1;
                    while at + 2 <= pl.len() {
                        let n = usize::from(u16::from_be_bytes([pl[at], pl[at + 1]]));
                        nals.push(pl[at + 2..at + 2 + n].to_vec());
                        at += 2 + n;
                    }
                }
                28 => {
                    if pl[1] & 0x80 != 0 {
                        fu = vec![(pl[0] & 0xe0) | (pl[1] & 0x1f)];
                    }
                    fu.extend_from_slice(&pl[2..]);
                    if pl[1] & 0x40 != 0 {
                        nals.push(std::mem::take(&mut fu));
                    }
                }
                _ => nals.push(pl.to_vec()),
            }
        }
        (nals, markers)
    }

    #[test]
    fn h264_keyframe_gets_stap_a_then_fu_a_with_the_marker_last() {
        let t = avc_track();
        let mut p = Packetizer::new(&t, 96, 0x1234, 100, 1000).unwrap();
        let big: Vec<u8> = std::iter::once(0x65)
            .chain((0..4000).map(|i| (i % 251) as u8))
            .collect();
        let data = avcc(&[&[0x06, 5, 1, 0x80], &big]);
        let pr = PacketRef {
            track: 1,
            dts: 40,
            offset: 40,
            keyframe: true,
            bpos: 0,
            data: &data,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        assert!(spans.iter().all(|s| s.len() <= DEFAULT_MTU));
        let (nals, markers) = depacketize(&out, &spans);
        let cfg = h264::parse_avcc(&t.init).unwrap();
        assert_eq!(nals[0], cfg.sps[0]);
        assert_eq!(nals[1], cfg.pps[0]);
        assert_eq!(nals[2], [0x06, 5, 1, 0x80]);
        assert_eq!(nals[3], big);
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert!(markers[markers.len() - 1]);
        // Sequence numbers run on; timestamp = base + PTS (80 ms) at 90 kHz.
        let seqs: Vec<u16> = spans
            .iter()
            .map(|s| u16::from_be_bytes([out[s.start + 2], out[s.start + 3]]))
            .collect();
        assert_eq!(seqs, (100..100 + spans.len() as u16).collect::<Vec<_>>());
        let ts = u32::from_be_bytes(
            out[spans[0].start + 4..spans[0].start + 8]
                .try_into()
                .unwrap(),
        );
        assert_eq!(ts, 1000 + 80 * 90);
        assert_eq!(p.packets as usize, spans.len());
        // A delta frame gets no parameter sets.
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        let d = avcc(&[&[0x41, 1, 2, 3]]);
        p.packetize(
            &PacketRef {
                keyframe: false,
                data: &d,
                ..pr
            },
            &mut out,
            &mut spans,
        );
        assert_eq!(spans.len(), 1);
        assert_eq!(&out[RTP_HEADER_LEN..], &[0x41, 1, 2, 3]);
    }

    #[test]
    fn aac_is_rfc3640_hbr_with_one_au_header() {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        aac::write_asc(&AudioSpecificConfig::lc(44100, 2), &mut t.init);
        t.rate = 44100;
        t.channels = 2;
        let mut p = Packetizer::new(&t, 97, 7, 0, 0).unwrap();
        let au = vec![0x21u8; 300];
        let pr = PacketRef {
            track: 2,
            dts: 1000,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &au,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(out[1], 0x80 | 97);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 44100);
        assert_eq!(
            &out[12..16],
            &[0, 16, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]
        );
        assert_eq!(&out[16..], &au[..]);
        assert_eq!(rtpmap(&t).as_deref(), Some("MPEG4-GENERIC/44100/2"));
        // An AU larger than a packet: fragments with the whole AU's header, marker last.
        let big = vec![7u8; 3000];
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&PacketRef { data: &big, ..pr }, &mut out, &mut spans);
        assert_eq!(spans.len(), 3);
        let payload: usize = spans.iter().map(|s| s.len() - RTP_HEADER_LEN - 4).sum();
        assert_eq!(payload, 3000);
        let markers: Vec<bool> = spans.iter().map(|s| out[s.start + 1] & 0x80 != 0).collect();
        assert_eq!(markers, [false, false, true]);
        assert!(spans
            .iter()
            .all(|s| out[s.start + 14..s.start + 16] == (3000u16 << 3).to_be_bytes()));
        assert!(fmtp(&t).unwrap().ends_with("config=1210"));
    }

    #[test]
    fn sdp_parameters() {
        let t = avc_track();
        let f = fmtp(&t).unwrap();
        assert!(f.starts_with("packetization-mode=1;profile-level-id=64001E;sprop-parameter-sets=Z2QAHqzZQKAv+XARAAADAAEAAAMAMg8WLZY=,aOvssiw="), "{f}");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn depacketizer_reassembles_what_the_packetizer_sent() {
        let t = avc_track();
        let mut p = Packetizer::new(&t, 96, 5, 65_534, 7).unwrap();
        let mut d = Depacketizer::new(Codec::H264, (13, 3));
        let big: Vec<u8> = std::iter::once(0x65)
            .chain((0..5000).map(|i| (i % 13) as u8))
            .collect();
        let units = [avcc(&[&[0x06, 1, 2], &big]), avcc(&[&[0x41, 9, 9, 9]])];
        for (i, u) in units.iter().enumerate() {
            let pr = PacketRef {
                track: 1,
                dts: 40 * i as u64,
                offset: 0,
                keyframe: i == 0,
                bpos: 0,
                data: u,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            for s in &spans {
                d.push(&out[s.clone()]).unwrap();
            }
        }
        let a = d.poll().unwrap();
        assert!(a.keyframe);
        assert_eq!(
            a.data, units[0],
            "parameter sets are taken out, the rest kept"
        );
        let b = d.poll().unwrap();
        assert_eq!(
            (b.data.as_slice(), b.keyframe),
            (units[1].as_slice(), false)
        );
        assert_eq!(b.timestamp - a.timestamp, 40 * 90);
        let cfg = h264::parse_avcc(&t.init).unwrap();
        let sets: Vec<&Vec<u8>> = d.parameter_sets().iter().map(|x| &x.1).collect();
        assert_eq!(sets, [&cfg.sps[0], &cfg.pps[0]]);
        assert_eq!((d.lost, d.bad), (0, 0));
        // A lost fragment drops that unit and counts as loss.
        let pr = PacketRef {
            track: 1,
            dts: 80,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &units[0],
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        for s in spans.iter().filter(|s| s.start != spans[2].start) {
            d.push(&out[s.clone()]).unwrap();
        }
        d.flush();
        assert!(d.poll().is_none_or(|u| u.data != units[0]));
        assert_eq!(d.lost, 1);
        assert!(parse_rtp(&[0x40, 0, 0]).is_err());
    }

    #[test]
    fn aac_units_come_back_with_their_times() {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        aac::write_asc(&AudioSpecificConfig::lc(48000, 1), &mut t.init);
        t.rate = 48000;
        t.channels = 1;
        let mut p = Packetizer::new(&t, 97, 1, 0, 0).unwrap();
        let mut d = Depacketizer::new(Codec::Aac, (13, 3));
        for i in 0..3u64 {
            let au = vec![i as u8; 200 + i as usize];
            let pr = PacketRef {
                track: 2,
                dts: i * 1024 * 1000 / 48000,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &au,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            d.push(&out[spans[0].clone()]).unwrap();
        }
        let got: Vec<Unit> = std::iter::from_fn(|| d.poll()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].data, vec![2u8; 202]);
        assert_eq!(got[1].timestamp - got[0].timestamp, 21 * 48); // 21 ms in 48 kHz ticks
    }

    #[test]
    fn g711_goes_out_in_whole_samples_and_comes_back() {
        let mut t = Track::new(3, TrackKind::Audio, Codec::Alaw);
        t.rate = 8000;
        t.channels = 1;
        assert_eq!(
            (rtpmap(&t).unwrap().as_str(), payload_type(&t, 2)),
            ("PCMA/8000", 8)
        );
        t.codec = Codec::Ulaw;
        assert_eq!(payload_type(&t, 2), 0);
        t.channels = 2;
        assert_eq!(
            (rtpmap(&t).unwrap().as_str(), payload_type(&t, 2)),
            ("PCMU/8000/2", 98)
        );
        let mut p = Packetizer::new(&t, 98, 1, 0, 0).unwrap();
        let data: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let pr = PacketRef {
            track: 3,
            dts: 1000,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &data,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        assert!(
            spans.len() >= 3
                && spans
                    .iter()
                    .all(|s| (s.len() - RTP_HEADER_LEN).is_multiple_of(2))
        );
        let mut d = Depacketizer::new(Codec::Ulaw, (13, 3));
        for s in &spans {
            d.push(&out[s.clone()]).unwrap();
        }
        let units: Vec<Unit> = std::iter::from_fn(|| d.poll()).collect();
        assert_eq!(
            units
                .iter()
                .flat_map(|u| u.data.clone())
                .collect::<Vec<u8>>(),
            data
        );
        // Timestamps count sample frames: two bytes a frame in stereo.
        let step = units[1].timestamp - units[0].timestamp;
        assert_eq!(step as usize, units[0].data.len() / 2);
        assert_eq!(units[0].timestamp, 8000);
    }

    /// An RTP packet (payload type 96) with `payload`.
    fn rtp_packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, u8::from(marker) << 7 | 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    /// 20 MiB of FU-A fragments of one IDR slice: the memory held stays under the cap, the
    /// access unit is dropped and counted once, and the next one comes out whole.
    #[test]
    fn an_access_unit_over_the_cap_is_dropped_and_the_next_comes_through() {
        let mut d = Depacketizer::new(Codec::H264, (13, 3));
        let chunk = vec![0x11u8; 60_000];
        let n = (20 << 20) / chunk.len() + 1;
        let mut seq = 0u16;
        for i in 0..n {
            let (start, end) = (i == 0, i + 1 == n);
            let mut payload = vec![0x60 | 28, u8::from(start) << 7 | u8::from(end) << 6 | 5];
            payload.extend_from_slice(&chunk);
            d.push(&rtp_packet(seq, 3000, end, &payload)).unwrap();
            seq = seq.wrapping_add(1);
            let held = d.fu.as_ref().map_or(0, Vec::len) + d.au.as_ref().map_or(0, |a| a.1.len());
            assert!(held <= MAX_AU_BYTES, "{held} bytes held");
        }
        assert_eq!((d.oversized, d.skipped, d.bad), (1, 1, 0));
        assert!(d.poll().is_none());
        // The next access unit: an IDR in a FU-A of three fragments.
        for (i, fh) in [0x85u8, 0x05, 0x45].into_iter().enumerate() {
            let mut payload = vec![0x60 | 28, fh];
            payload.extend_from_slice(&[i as u8; 1000]);
            d.push(&rtp_packet(seq, 6000, i == 2, &payload)).unwrap();
            seq = seq.wrapping_add(1);
        }
        let u = d.poll().expect("the next access unit");
        assert_eq!(
            (u.timestamp, u.keyframe, u.data.len()),
            (6000, true, 4 + 1 + 3000)
        );
        assert_eq!(d.oversized, 1);
    }

    /// Thousands of one-byte NAL units in STAP-A packets: one access unit dropped.
    #[test]
    fn too_many_nal_units_drop_the_access_unit() {
        let mut d = Depacketizer::new(Codec::H264, (13, 3));
        let mut stap = vec![24u8];
        for _ in 0..500 {
            stap.extend_from_slice(&[0, 1, 0x41]);
        }
        for seq in 0..5u16 {
            d.push(&rtp_packet(seq, 3000, seq == 4, &stap)).unwrap();
        }
        assert_eq!((d.oversized, d.skipped), (1, 1));
        assert!(d.poll().is_none());
        d.push(&rtp_packet(5, 6000, true, &[0x65, 0x88])).unwrap();
        assert_eq!(d.poll().map(|u| u.data), Some(vec![0, 0, 0, 2, 0x65, 0x88]));
    }

    #[test]
    fn loss_skips_video_to_the_next_keyframe() {
        let t = avc_track();
        let mut p = Packetizer::new(&t, 96, 1, 0, 0).unwrap();
        let mut d = Depacketizer::new(Codec::H264, (13, 3));
        let mut all = Vec::new();
        for i in 0..6u64 {
            let nal_type = if i % 3 == 0 { 5u8 } else { 1 };
            let mut unit = vec![0, 0, 0, 3, 0x60 | nal_type, i as u8, 0xaa];
            if i == 1 {
                unit = vec![0, 0, 0x0b, 0xb8, 0x41];
                unit.extend(std::iter::repeat_n(1u8, 3000 - 1)); // three fragments
            }
            let pr = PacketRef {
                track: 1,
                dts: 40 * i,
                offset: 0,
                keyframe: i % 3 == 0,
                bpos: 0,
                data: &unit,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            for s in spans {
                all.push(out[s].to_vec());
            }
        }
        // Drop the middle fragment of unit 1 (packets: STAP-A, 0, then 1's fragments …).
        let frag = all.iter().position(|p| p[12] & 0x1f == 28).unwrap();
        for (k, pkt) in all.iter().enumerate() {
            if k != frag + 1 {
                d.push(pkt).unwrap();
            }
        }
        d.flush();
        let got: Vec<Unit> = std::iter::from_fn(|| d.poll()).collect();
        // 0 (key) arrives; 1 broken, 2 skipped; 3 (key), 4, 5 arrive.
        assert_eq!(
            got.iter().map(|u| u.timestamp / 3600).collect::<Vec<_>>(),
            [0, 3, 4, 5]
        );
        assert_eq!(d.lost, 1);
        assert_eq!(d.skipped, 2);
    }

    proptest! {
        #[test]
        fn any_payload_packetizes_within_the_mtu(data in proptest::collection::vec(any::<u8>(), 0..6000), key in any::<bool>()) {
            let t = avc_track();
            let mut p = Packetizer::new(&t, 96, 1, 0, 0).unwrap();
            let pr = PacketRef { track: 1, dts: 0, offset: 0, keyframe: key, bpos: 0, data: &data };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            prop_assert!(spans.iter().all(|s| s.len() <= DEFAULT_MTU && s.len() > RTP_HEADER_LEN));
        }
    }
}
