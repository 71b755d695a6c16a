//! RTP (RFC 3550), sans-IO: [`Packetizer`] turns one access unit of a track into RTP packets
//! appended to a caller-owned buffer, [`Depacketizer`] turns received packets back into
//! access units, [`JitterBuffer`] puts UDP packets back in order before it, [`DtsFromPts`]
//! gives the units decode times, [`sender_report`] and [`report_blocks`] write and read the
//! RTCP, and [`rtpmap`], [`fmtp`] and [`payload_type`] say in an SDP how each track is sent.
//!
//! One file per payload format, each with a packetizer and a depacketizer that
//! [`Packetizer`] and [`Depacketizer`] choose between by codec (an enum each, as the retina
//! crate lays out its `codec` module), and its SDP parameters:
//! * `h264`: H.264, RFC 6184 — single NAL unit packets (§5.6), STAP-A (§5.7.1) with the SPS
//!   and PPS before every keyframe, FU-A (§5.8).
//! * `h265`: HEVC, RFC 7798 — single NAL unit packets (§4.4.1), aggregation packets (type 48,
//!   §4.4.2) with the VPS/SPS/PPS before every IRAP picture, fragmentation units (type 49,
//!   §4.4.3). What both share is in `h26x`.
//! * `aac`: AAC, RFC 3640 `mpeg4-generic` in AAC-hbr mode (§3.3.6).
//! * `mpa`: MP3, RFC 2250 §3.5: a 4-byte header (MBZ, fragment offset), then whole frames.
//! * `g711`: G.711 A-law and µ-law, RFC 3551 §4.5.14 (PCMA, PCMU): the samples as they are,
//!   cut on whole sample frames to fit the MTU.
//!
//! and one file each for `rtcp` (RFC 3550 §6), `sdp`, `jitter` (the reorder buffer) and
//! `dts` (decode times). Everything public is here at `dtsc::rtp::Name`.
//!
//! RTP timestamps: presentation time in the track's clock (90 kHz for video and MP3, the
//! sample rate for other audio) plus a random-looking base chosen by the caller, modulo 2^32.
//! Received timestamps are extended past 32 bits ([`Unit::timestamp`]).
//!
//! Received packets, and the SDP parameters a receiver is built from, are untrusted:
//! nothing here panics or indexes out of bounds on any input; what cannot be read is an
//! [`RtpError`] and counted.

use std::collections::VecDeque;

use crate::model::{Codec, PacketRef, Track, TrackKind};

mod aac;
mod dts;
mod g711;
mod h264;
mod h265;
mod h26x;
pub mod ingest;
mod jitter;
mod mpa;
mod rtcp;
mod sdp;
#[cfg(test)]
mod test_util;

pub use dts::DtsFromPts;
pub use jitter::JitterBuffer;
pub use rtcp::{bye, report_blocks, sender_report, ReportBlock};
pub use sdp::{base64, base64_decode, fmtp, payload_type, rtpmap};

/// Size of the fixed RTP header (RFC 3550 §5.1) this module writes (no CSRC, no extension),
/// and the least a received packet has, bytes.
pub const RTP_HEADER_LEN: usize = 12;
/// Default largest RTP packet, header included, bytes: fits a 1500-byte Ethernet MTU with
/// IPv4/UDP headers and the 4-byte RTSP interleaved frame to spare.
pub const DEFAULT_MTU: usize = 1400;

/// Where each RTP packet of a [`Packetizer::packetize`] call lies in the output buffer
/// (byte ranges, in sending order).
pub type PacketSpans = Vec<std::ops::Range<usize>>;

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

/// The payload formats here, one per file: the single place a [`Codec`] is mapped to how it
/// goes over RTP, for the packetizer, the depacketizer and the SDP alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// H.264, RFC 6184 (`h264`).
    H264,
    /// H.265, RFC 7798 (`h265`).
    H265,
    /// AAC, RFC 3640 AAC-hbr (`aac`).
    Aac,
    /// MP3, RFC 2250 (`mpa`).
    Mpa,
    /// G.711 A-law and µ-law, RFC 3551 (`g711`).
    G711,
}

impl Format {
    /// The payload format of `codec`; `None` for codecs without one here.
    fn of(codec: &Codec) -> Option<Format> {
        match codec {
            Codec::H264 => Some(Format::H264),
            Codec::Hevc => Some(Format::H265),
            Codec::Aac => Some(Format::Aac),
            Codec::Mp3 => Some(Format::Mpa),
            Codec::Alaw | Codec::Ulaw => Some(Format::G711),
            Codec::Other(_) => None,
        }
    }
}

/// The RTP clock rate of `track`, Hz: 90 000 for video, 90 000 for MP3 (RFC 3551 payload
/// type 14's clock), the sample rate for G.711 (at least 8000) and for other audio with one.
/// `None` for other tracks.
pub fn clock_rate(track: &Track) -> Option<u32> {
    match (track.kind, &track.codec) {
        (TrackKind::Video, _) => Some(90_000),
        (_, Codec::Mp3) => Some(90_000),
        (_, Codec::Alaw | Codec::Ulaw) => Some(track.rate.max(8000)),
        (TrackKind::Audio, _) if track.rate > 0 => Some(track.rate),
        _ => None,
    }
}

/// Why an RTP packet was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its header, not version 2, or its padding/extension runs past the end.
    #[error("malformed RTP packet")]
    Malformed,
    /// A payload this depacketizer cannot read (an aggregation or fragment that is cut);
    /// the payload format's or packet type's name.
    #[error("malformed {0} payload")]
    Payload(&'static str),
}

/// The fields of an RTP header (RFC 3550 §5.1) a receiver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// `M`: the last packet of an access unit (video) or frame.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp, in ticks of the track's clock.
    pub timestamp: u32,
    /// Synchronization source: the sender's stream identifier.
    pub ssrc: u32,
}

/// Reads an RTP packet (RFC 3550 §5.1): its header, and its payload after the CSRCs and
/// the header extension (§5.3.1) and without the padding.
///
/// # Errors
/// [`RtpError::Malformed`] when `b` is shorter than [`RTP_HEADER_LEN`], is not version 2,
/// or its CSRCs, extension or padding run past the end.
pub fn parse_rtp(b: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    let Some(fixed) = b.first_chunk::<RTP_HEADER_LEN>() else {
        return Err(RtpError::Malformed);
    };
    let [first, m_pt, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3] = *fixed;
    if first >> 6 != 2 {
        return Err(RtpError::Malformed);
    }
    let cc = usize::from(first & 0x0f);
    let mut at = RTP_HEADER_LEN + 4 * cc;
    if first & 0x10 != 0 {
        // The extension header: 16 bits profile-defined, 16 bits length in 32-bit words.
        let words = b.get(at + 2..).and_then(|e| e.first_chunk::<2>());
        let words = words.ok_or(RtpError::Malformed)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes(*words));
    }
    let mut end = b.len();
    if first & 0x20 != 0 {
        // The last byte counts the padding, itself included.
        end = end
            .checked_sub(usize::from(b.last().copied().unwrap_or(0)))
            .ok_or(RtpError::Malformed)?;
    }
    let payload = b.get(at..end).ok_or(RtpError::Malformed)?;
    Ok((
        RtpHeader {
            marker: m_pt & 0x80 != 0,
            payload_type: m_pt & 0x7f,
            seq: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
        },
        payload,
    ))
}

/// Writes the RTP packets of one [`Packetizer::packetize`] call for a payload format's
/// packetizer: each packet's fixed header (RFC 3550 §5.1), the counts a sender report needs
/// (§6.4.1), and where the packet lies in the output.
struct PacketWriter<'a> {
    payload_type: u8,
    ssrc: u32,
    /// Largest payload of one packet, bytes.
    max_payload: usize,
    seq: &'a mut u16,
    packets: &'a mut u32,
    octets: &'a mut u32,
    out: &'a mut Vec<u8>,
    spans: &'a mut PacketSpans,
}

impl PacketWriter<'_> {
    /// Largest payload of one packet, bytes: the MTU less [`RTP_HEADER_LEN`].
    fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Appends one packet: the fixed header (V=2, no padding, extension or CSRC) with
    /// `marker`, RTP timestamp `ts` and the next sequence number, then what `payload`
    /// writes (at most [`max_payload`](Self::max_payload) bytes, which the payload formats
    /// see to, except a single G.711 sample frame larger than that).
    fn packet(&mut self, marker: bool, ts: u32, payload: impl FnOnce(&mut Vec<u8>)) {
        let start = self.out.len();
        self.out.push(0x80);
        self.out
            .push(u8::from(marker) << 7 | (self.payload_type & 0x7f));
        self.out.extend_from_slice(&self.seq.to_be_bytes());
        self.out.extend_from_slice(&ts.to_be_bytes());
        self.out.extend_from_slice(&self.ssrc.to_be_bytes());
        *self.seq = self.seq.wrapping_add(1);
        payload(self.out);
        *self.packets = self.packets.wrapping_add(1);
        *self.octets = self
            .octets
            .wrapping_add((self.out.len() - start - RTP_HEADER_LEN) as u32);
        self.spans.push(start..self.out.len());
    }
}

/// The packetizer of each payload format.
#[derive(Debug, Clone)]
enum PacketizerInner {
    H264(h264::Packetizer),
    H265(h265::Packetizer),
    Aac(aac::Packetizer),
    Mpa(mpa::Packetizer),
    G711(g711::Packetizer),
}

/// Packetizes one track: its payload format's packets, with the RTP header, sequence
/// numbers and timestamps of the track, and the counts its sender reports give.
#[derive(Debug, Clone)]
pub struct Packetizer {
    inner: PacketizerInner,
    payload_type: u8,
    ssrc: u32,
    clock_rate: u32,
    ts_base: u32,
    seq: u16,
    mtu: usize,
    /// RTP packets sent (RFC 3550 §6.4.1 sender's packet count; wraps at 2^32).
    pub packets: u32,
    /// Payload octets sent (RFC 3550 §6.4.1 sender's octet count; wraps at 2^32).
    pub octets: u32,
    /// RTP timestamp of the last access unit packetized.
    pub last_ts: u32,
}

impl Packetizer {
    /// A packetizer for `track` with payload type `payload_type` (7 bits), SSRC `ssrc`,
    /// first sequence number `seq` and RTP timestamp base `ts_base` (in the track's clock,
    /// [`clock_rate`]), sending packets of at most [`DEFAULT_MTU`] bytes. `None` for codecs
    /// without a payload format here (anything but H.264, HEVC, AAC, MP3 and G.711), H.264
    /// or HEVC init data that cannot be read, and tracks without a clock rate (AAC without a
    /// sample rate).
    pub fn new(
        track: &Track,
        payload_type: u8,
        ssrc: u32,
        seq: u16,
        ts_base: u32,
    ) -> Option<Packetizer> {
        let inner = match Format::of(&track.codec)? {
            Format::H264 => PacketizerInner::H264(h264::packetizer(track)?),
            Format::H265 => PacketizerInner::H265(h265::packetizer(track)?),
            Format::Aac => PacketizerInner::Aac(aac::Packetizer::new(track)?),
            Format::Mpa => PacketizerInner::Mpa(mpa::Packetizer),
            Format::G711 => PacketizerInner::G711(g711::Packetizer::new(track)),
        };
        Some(Packetizer {
            inner,
            clock_rate: clock_rate(track)?,
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

    /// The RTP timestamp of presentation time `ms` (ms from the stream's zero): the base
    /// plus `ms` in clock ticks, modulo 2^32.
    pub fn rtp_time(&self, ms: u64) -> u32 {
        let ticks = u128::from(ms) * u128::from(self.clock_rate) / 1000;
        self.ts_base.wrapping_add(ticks as u32)
    }

    /// Appends the RTP packets of access unit `p` (its payload in DTSC form, its
    /// presentation time giving the RTP timestamp, [`rtp_time`](Self::rtp_time)) to `out`,
    /// in the track's payload format (see the module's list), and each packet's byte range
    /// to `spans`; every packet is at most [`DEFAULT_MTU`] bytes (except G.711 with so many
    /// channels that one sample frame is larger), sequence numbers run on by one, and
    /// [`packets`](Self::packets), [`octets`](Self::octets) and [`last_ts`](Self::last_ts)
    /// move. A video payload that is not valid length-prefixed NAL units gives no packet;
    /// an empty AAC or MP3 payload one packet of headers only, an empty G.711 payload none.
    pub fn packetize(&mut self, p: &PacketRef, out: &mut Vec<u8>, spans: &mut PacketSpans) {
        let ts = self.rtp_time(p.pts());
        self.last_ts = ts;
        let mut w = PacketWriter {
            payload_type: self.payload_type,
            ssrc: self.ssrc,
            max_payload: self.mtu - RTP_HEADER_LEN,
            seq: &mut self.seq,
            packets: &mut self.packets,
            octets: &mut self.octets,
            out,
            spans,
        };
        match &self.inner {
            PacketizerInner::H264(f) => f.packetize(ts, p, &mut w),
            PacketizerInner::H265(f) => f.packetize(ts, p, &mut w),
            PacketizerInner::Aac(f) => f.packetize(ts, p, &mut w),
            PacketizerInner::Mpa(f) => f.packetize(ts, p, &mut w),
            PacketizerInner::G711(f) => f.packetize(ts, p, &mut w),
        }
    }
}

/// One access unit reassembled from RTP: its RTP timestamp (unwrapped past 32 bits), a
/// keyframe flag, and the payload in DTSC form (length-prefixed NAL units, raw AAC frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// RTP timestamp extended to 64 bits, in ticks of the track's clock (90 kHz for video
    /// and MP3, the sample rate for AAC and G.711); the first packet's 32-bit value is the
    /// starting point, not zero.
    pub timestamp: u64,
    /// An IDR (H.264) or IRAP (HEVC) picture; always true for audio.
    pub keyframe: bool,
    /// The payload: length-prefixed NAL units (4-byte lengths, parameter sets and access
    /// unit delimiters taken out) for video, one raw AAC frame, or MP3 frames or G.711
    /// samples as they came; never empty.
    pub data: Vec<u8>,
}

/// Where a payload format's depacketizer puts what it completes, and the counts of
/// [`Depacketizer`] it keeps.
struct Sink<'a> {
    units: &'a mut VecDeque<Unit>,
    bad: &'a mut u64,
    skipped: &'a mut u64,
    oversized: &'a mut u64,
}

/// The depacketizer of each payload format.
#[derive(Debug, Clone)]
enum DepacketizerInner {
    H264(h264::Depacketizer),
    H265(h265::Depacketizer),
    Aac(aac::Depacketizer),
    Mpa(mpa::Depacketizer),
    G711(g711::Depacketizer),
}

impl DepacketizerInner {
    /// The depacketizer of `codec`'s payload format; MPEG audio for a codec without one.
    fn new(codec: &Codec, aac_bits: (u32, u32)) -> DepacketizerInner {
        match Format::of(codec) {
            Some(Format::H264) => DepacketizerInner::H264(h264::Depacketizer::new()),
            Some(Format::H265) => DepacketizerInner::H265(h265::Depacketizer::new()),
            Some(Format::Aac) => DepacketizerInner::Aac(aac::Depacketizer::new(aac_bits)),
            Some(Format::G711) => DepacketizerInner::G711(g711::Depacketizer),
            Some(Format::Mpa) | None => DepacketizerInner::Mpa(mpa::Depacketizer),
        }
    }

    /// The payload of one packet at `ts` (extended).
    fn push(&mut self, ts: u64, payload: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        match self {
            DepacketizerInner::H264(d) => d.push(ts, payload, sink),
            DepacketizerInner::H265(d) => d.push(ts, payload, sink),
            DepacketizerInner::Aac(d) => d.push(ts, payload, sink),
            DepacketizerInner::Mpa(d) => d.push(ts, payload, sink),
            DepacketizerInner::G711(d) => d.push(ts, payload, sink),
        }
    }

    /// Packets were lost before one at `ts`; `clean` when the one before the loss ended an
    /// access unit and `ts` starts another. True when a unit being built was dropped (audio
    /// builds none).
    fn lose(&mut self, ts: u64, clean: bool) -> bool {
        match self {
            DepacketizerInner::H264(d) => d.lose(ts, clean),
            DepacketizerInner::H265(d) => d.lose(ts, clean),
            _ => false,
        }
    }

    /// After each packet: a payload that could not be read (`failed`) drops the fragment
    /// being built, and a marker bit completes the access unit (video).
    fn end_of_packet(&mut self, failed: bool, marker: bool, sink: &mut Sink) {
        match self {
            DepacketizerInner::H264(d) => {
                if failed {
                    d.payload_error();
                }
                if marker {
                    d.finish(sink);
                }
            }
            DepacketizerInner::H265(d) => {
                if failed {
                    d.payload_error();
                }
                if marker {
                    d.finish(sink);
                }
            }
            _ => {}
        }
    }

    /// Completes the access unit being built (video).
    fn finish(&mut self, sink: &mut Sink) {
        match self {
            DepacketizerInner::H264(d) => d.finish(sink),
            DepacketizerInner::H265(d) => d.finish(sink),
            _ => {}
        }
    }

    fn parameter_sets(&self) -> &[(u8, Vec<u8>)] {
        match self {
            DepacketizerInner::H264(d) => d.parameter_sets(),
            DepacketizerInner::H265(d) => d.parameter_sets(),
            _ => &[],
        }
    }

    fn sets_version(&self) -> u64 {
        match self {
            DepacketizerInner::H264(d) => d.sets_version(),
            DepacketizerInner::H265(d) => d.sets_version(),
            _ => 0,
        }
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        match self {
            DepacketizerInner::H264(d) => d.held_bytes(),
            DepacketizerInner::H265(d) => d.held_bytes(),
            _ => 0,
        }
    }
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
    inner: DepacketizerInner,
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
    /// Whether the previous packet ended an access unit (marker bit).
    last_marker: bool,
    /// The extended timestamp of the previous packet.
    au_ts: Option<u64>,
    out: VecDeque<Unit>,
}

impl Depacketizer {
    /// A depacketizer for `codec`; `aac_bits` are the SDP's `sizelength` and `indexlength`
    /// (13, 3 for AAC-hbr), used for AAC only. A codec without a payload format here is
    /// read as MPEG audio (RFC 2250).
    pub fn new(codec: Codec, aac_bits: (u32, u32)) -> Depacketizer {
        Depacketizer {
            inner: DepacketizerInner::new(&codec, aac_bits),
            last_seq: None,
            last_ts: None,
            lost: 0,
            bad: 0,
            skipped: 0,
            oversized: 0,
            last_marker: false,
            au_ts: None,
            out: VecDeque::new(),
        }
    }

    /// The parameter sets seen in the stream so far, as (NAL unit type, unit), newest of
    /// each type; none for audio.
    pub fn parameter_sets(&self) -> &[(u8, Vec<u8>)] {
        self.inner.parameter_sets()
    }

    /// Counts changes to [`parameter_sets`](Self::parameter_sets): a receiver rebuilds its
    /// init data only when this moved.
    pub fn sets_version(&self) -> u64 {
        self.inner.sets_version()
    }

    /// The next complete access unit, in the order they were completed; `None` when none
    /// is ready.
    pub fn poll(&mut self) -> Option<Unit> {
        self.out.pop_front()
    }

    /// Completes the access unit being built (at the end of the stream; video only, audio
    /// units are complete with their packet), subject to the same keyframe rule.
    pub fn flush(&mut self) {
        let (inner, mut sink) = self.parts();
        inner.finish(&mut sink);
    }

    /// The payload format's depacketizer, and where it puts units and counts.
    fn parts(&mut self) -> (&mut DepacketizerInner, Sink<'_>) {
        let sink = Sink {
            units: &mut self.out,
            bad: &mut self.bad,
            skipped: &mut self.skipped,
            oversized: &mut self.oversized,
        };
        (&mut self.inner, sink)
    }

    /// Extends RTP timestamp `ts` past 32 bits from the last one (as RFC 3550 §A.1 does
    /// sequence numbers): a step back of up to 2^31 ticks is a step back, not a wrap, and
    /// the result never goes below 0.
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

    /// Takes one RTP packet. Duplicates and packets older than the last one are ignored;
    /// a sequence gap counts as loss (see the type's description). Complete units are then
    /// ready for [`poll`](Self::poll).
    ///
    /// # Errors
    /// [`RtpError::Malformed`] for a packet [`parse_rtp`] refuses (not counted), and
    /// [`RtpError::Payload`] for a payload the format cannot read (counted in
    /// [`bad`](Self::bad); what came before it in the packet is kept).
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
            // The lost packets may have held the start of this packet's access unit,
            // unless the last one received ended a unit and this one starts another.
            let clean = self.last_marker && self.au_ts != Some(ts);
            // What was being built is broken: drop it.
            if self.inner.lose(ts, clean) {
                self.skipped += 1;
            }
        }
        self.au_ts = Some(ts);
        self.last_marker = h.marker;
        let (inner, mut sink) = self.parts();
        let r = inner.push(ts, payload, &mut sink);
        if r.is_err() {
            *sink.bad += 1;
        }
        inner.end_of_packet(r.is_err(), h.marker, &mut sink);
        r
    }

    /// Bytes held of the access unit being built (video).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.inner.held_bytes()
    }
}
