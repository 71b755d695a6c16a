//! H.264 over RTP, RFC 6184 in packetization mode 1 (non-interleaved): single NAL unit
//! packets (§5.6), STAP-A aggregation packets (§5.7.1) and FU-A fragmentation units (§5.8).
//! Sending, the SPS and PPS of the avcC record go out together in one STAP-A before every
//! keyframe that does not carry its own; receiving, the three packet types are read and the
//! parameter sets kept aside (the shared machinery is in [`h26x`]).

use super::h26x::{self, NalSyntax};
use super::{RtpError, Sink};
use crate::h264::{self as avc, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS};
use crate::model::Track;

/// The SDP `a=rtpmap` encoding (RFC 6184 §8.2.1): the clock is always 90 kHz.
pub(super) const RTPMAP: &str = "H264/90000";

/// STAP-A: one or more NAL units of one timestamp (§5.7.1).
const STAP_A: u8 = 24;
/// FU-A: a fragment of one NAL unit (§5.8).
const FU_A: u8 = 28;

/// The H.264 NAL unit syntax (H.264 §7.3.1, Table 7-1) for [`h26x`].
#[derive(Debug, Clone, Copy)]
pub(super) struct H264;

impl NalSyntax for H264 {
    const HEADER_LEN: usize = 1;
    const SPS: u8 = NAL_SPS;
    const AUD: u8 = NAL_AUD;

    fn nal_type(nal: &[u8]) -> u8 {
        avc::nal_type(nal).unwrap_or(0)
    }

    fn is_parameter_set(nal_type: u8) -> bool {
        matches!(nal_type, NAL_SPS | NAL_PPS)
    }

    fn is_keyframe(nal_type: u8) -> bool {
        nal_type == NAL_IDR
    }

    /// STAP-A header: F and NRI of the strongest unit (parameter sets are NRI 3).
    fn write_aggregation_header(sets: &[Vec<u8>], out: &mut Vec<u8>) {
        let nri = sets
            .iter()
            .filter_map(|s| s.first())
            .map(|b| b & 0x60)
            .max()
            .unwrap_or(0x60);
        out.push(nri | STAP_A);
    }

    /// FU indicator (F and NRI of the unit, type 28), then the FU header: S, E, and the
    /// unit's type.
    fn write_fragment_header(head: &[u8], first: bool, last: bool, out: &mut Vec<u8>) {
        let h = head.first().copied().unwrap_or(0);
        out.push((h & 0xe0) | FU_A);
        out.push(u8::from(first) << 7 | u8::from(last) << 6 | (h & 0x1f));
    }
}

/// Sends an H.264 track.
pub(super) type Packetizer = h26x::Packetizer<H264>;

/// Receives an H.264 track.
pub(super) type Depacketizer = h26x::Depacketizer<H264>;

/// A packetizer for the H.264 `track`, which sends the non-empty SPS and PPS of its avcC
/// record before keyframes; `None` when the avcC record cannot be read.
pub(super) fn packetizer(track: &Track) -> Option<Packetizer> {
    let cfg = avc::parse_avcc(&track.init).ok()?;
    let sets: Vec<Vec<u8>> = cfg
        .sps
        .iter()
        .chain(&cfg.pps)
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    Some(Packetizer::new(cfg.nal_length_size, sets))
}

impl Depacketizer {
    /// The payload `p` of one packet of the access unit at `ts` (extended, 90 kHz): a single
    /// NAL unit (types 1–23), a STAP-A or a FU-A. A STAP-A's units before a cut one are
    /// kept.
    ///
    /// # Errors
    /// [`RtpError::Payload`] for an empty payload, another packet type (STAP-B, MTAP,
    /// FU-B: not in mode 1), a STAP-A unit that runs past the end, or a FU-A without its
    /// FU header.
    pub(super) fn push(&mut self, ts: u64, p: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        let Some((&first, rest)) = p.split_first() else {
            return Err(RtpError::Payload("H.264"));
        };
        match first & 0x1f {
            1..=23 => self.nal(ts, p, sink),
            STAP_A => {
                for nal in h26x::aggregated(rest, "STAP-A") {
                    self.nal(ts, nal?, sink);
                }
            }
            FU_A => {
                let Some((&fh, chunk)) = rest.split_first() else {
                    return Err(RtpError::Payload("FU-A"));
                };
                if fh & 0x80 != 0 {
                    self.start_fragment(ts, &[(first & 0xe0) | (fh & 0x1f)]);
                }
                self.fragment(ts, chunk, fh & 0x40 != 0, sink);
            }
            _ => return Err(RtpError::Payload("H.264")),
        }
        Ok(())
    }
}

/// The SDP `a=fmtp` parameters of the H.264 `track` (RFC 6184 §8.1): packetization mode 1,
/// `profile-level-id` as 6 hex digits (profile, constraint flags, level of the avcC record)
/// and `sprop-parameter-sets`, the SPS and PPS in base64, comma-separated. `None` when the
/// avcC record cannot be read.
pub(super) fn fmtp(track: &Track) -> Option<String> {
    let cfg = avc::parse_avcc(&track.init).ok()?;
    let sets: Vec<String> = cfg
        .sps
        .iter()
        .chain(&cfg.pps)
        .map(|s| super::base64(s))
        .collect();
    Some(format!(
        "packetization-mode=1;profile-level-id={:02X}{:02X}{:02X};sprop-parameter-sets={}",
        cfg.profile,
        cfg.compat,
        cfg.level,
        sets.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use crate::h264;
    use crate::model::{Codec, PacketRef};
    use crate::rtp::test_util::{avc_track, avcc, rtp_packet};
    use crate::rtp::{
        parse_rtp, Depacketizer, PacketSpans, Packetizer, Unit, DEFAULT_MTU, MAX_AU_BYTES,
        RTP_HEADER_LEN,
    };
    use proptest::prelude::*;

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
            let held = d.held_bytes();
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
