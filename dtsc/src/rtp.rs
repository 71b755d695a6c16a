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
//!
//! RTP timestamps: presentation time in the track's clock (90 kHz for video, the sample rate
//! for audio) plus a random-looking base chosen by the caller, modulo 2^32.

use crate::h264;
use crate::hevc;
use crate::model::{Codec, PacketRef, Track, TrackKind};

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
    H264 {
        length_size: u8,
        parameter_sets: Vec<Vec<u8>>,
    },
    Hevc {
        length_size: u8,
        parameter_sets: Vec<Vec<u8>>,
    },
    Aac,
    Mp3,
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
                Format::H264 {
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
                Format::Hevc {
                    length_size: cfg.nal_length_size,
                    parameter_sets: sets,
                }
            }
            Codec::Aac if track.rate > 0 => Format::Aac,
            Codec::Mp3 => Format::Mp3,
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
            Format::H264 {
                length_size,
                parameter_sets,
            } => {
                let nals: Vec<&[u8]> = match h264::nal_units(p.data, *length_size).collect() {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let nals: Vec<&[u8]> = nals.into_iter().filter(|n| !n.is_empty()).collect();
                let has_sets = nals
                    .iter()
                    .any(|n| h264::nal_type(n) == Some(h264::NAL_SPS));
                let sets = if p.keyframe && !has_sets {
                    parameter_sets.clone()
                } else {
                    Vec::new()
                };
                self.video(ts, &sets, &nals, 1, max_payload, out, spans);
            }
            Format::Hevc {
                length_size,
                parameter_sets,
            } => {
                let nals: Vec<&[u8]> = match h264::nal_units(p.data, *length_size).collect() {
                    Ok(n) => n,
                    Err(_) => return,
                };
                let nals: Vec<&[u8]> = nals.into_iter().filter(|n| n.len() >= 2).collect();
                let has_sets = nals
                    .iter()
                    .any(|n| hevc::nal_type(n) == Some(hevc::NAL_SPS));
                let sets = if p.keyframe && !has_sets {
                    parameter_sets.clone()
                } else {
                    Vec::new()
                };
                self.video(ts, &sets, &nals, 2, max_payload, out, spans);
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

/// The RTP clock rate of `track`: 90 000 Hz for video, the sample rate for AAC, 90 000 for
/// MP3 (RFC 3551 payload type 14's clock). `None` for tracks without one.
pub fn clock_rate(track: &Track) -> Option<u32> {
    match (track.kind, &track.codec) {
        (TrackKind::Video, _) => Some(90_000),
        (_, Codec::Mp3) => Some(90_000),
        (TrackKind::Audio, _) if track.rate > 0 => Some(track.rate),
        _ => None,
    }
}

/// An RTCP sender report (RFC 3550 §6.4.1) with no report blocks, followed by an SDES with
/// the CNAME `cname` (§6.5; a compound packet must carry it, §6.1). `ntp` is the wall clock
/// as NTP time (seconds since 1900 in the high 32 bits, fraction in the low 32), `rtp_ts` the
/// RTP timestamp of that same instant.
pub fn sender_report(
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    cname: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&[0x80, 200, 0, 6]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_ts.to_be_bytes());
    out.extend_from_slice(&packets.to_be_bytes());
    out.extend_from_slice(&octets.to_be_bytes());
    // SDES: one chunk, CNAME item, END, padded to a 32-bit boundary.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.extend_from_slice(&[0x81, 202]);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[1, name.len() as u8]);
    out.extend_from_slice(name);
    out.resize(out.len() + padded - (chunk - 1), 0);
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
/// `MPEG4-GENERIC/RATE/CHANNELS`, `MPA/90000`.
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
        _ => None,
    }
}

/// Standard base64 (RFC 4648 §4) with padding, for `sprop-parameter-sets`.
pub fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
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
    fn sdp_parameters_and_sender_report() {
        let t = avc_track();
        let f = fmtp(&t).unwrap();
        assert!(f.starts_with("packetization-mode=1;profile-level-id=64001E;sprop-parameter-sets=Z2QAHqzZQKAv+XARAAADAAEAAAMAMg8WLZY=,aOvssiw="), "{f}");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let mut out = Vec::new();
        sender_report(9, 1 << 32, 90_000, 3, 4000, "sluice", &mut out);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..4], &[0x80, 200, 0, 6]);
        let sdes = &out[28..];
        assert_eq!(sdes[1], 202);
        assert_eq!(
            usize::from(u16::from_be_bytes([sdes[2], sdes[3]])) * 4 + 4,
            sdes.len()
        );
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
