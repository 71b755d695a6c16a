//! H.265 / HEVC over RTP, RFC 7798 without DON (`sprop-max-don-diff` 0): single NAL unit
//! packets (§4.4.1), aggregation packets (type 48, §4.4.2) and fragmentation units (type
//! 49, §4.4.3). Sending, the VPS, SPS and PPS of the hvcC record go out in one AP before
//! every IRAP picture that does not carry its own; receiving, PACI packets (type 50,
//! §4.4.4) are refused (the shared machinery is in [`h26x`]).

use super::h26x::{self, NalSyntax};
use super::{RtpError, Sink};
use crate::hevc::{self, NAL_AUD, NAL_PPS, NAL_SPS, NAL_VPS};
use crate::model::Track;

/// The SDP `a=rtpmap` encoding (RFC 7798 §7.1): the clock is always 90 kHz.
pub(super) const RTPMAP: &str = "H265/90000";

/// Aggregation packet (§4.4.2).
const AP: u8 = 48;
/// Fragmentation unit (§4.4.3).
const FU: u8 = 49;
/// PACI packet (§4.4.4).
const PACI: u8 = 50;

/// The H.265 NAL unit syntax (H.265 §7.3.1.2, Table 7-1) for [`h26x`].
#[derive(Debug, Clone, Copy)]
pub(super) struct H265;

impl NalSyntax for H265 {
    const HEADER_LEN: usize = 2;
    const SPS: u8 = NAL_SPS;
    const AUD: u8 = NAL_AUD;

    fn nal_type(nal: &[u8]) -> u8 {
        hevc::nal_type(nal).unwrap_or(0)
    }

    fn is_parameter_set(nal_type: u8) -> bool {
        matches!(nal_type, NAL_VPS | NAL_SPS | NAL_PPS)
    }

    fn is_keyframe(nal_type: u8) -> bool {
        hevc::is_irap(nal_type)
    }

    /// PayloadHdr: type 48, layer 0, TID 1.
    fn write_aggregation_header(_sets: &[Vec<u8>], out: &mut Vec<u8>) {
        out.extend_from_slice(&[AP << 1, 1]);
    }

    /// PayloadHdr of type 49 with the unit's F bit, layer and TID; then the FU header: S, E
    /// and the unit's type.
    fn write_fragment_header(head: &[u8], first: bool, last: bool, out: &mut Vec<u8>) {
        let (h0, h1) = match *head {
            [h0, h1, ..] => (h0, h1),
            _ => (0, 0),
        };
        out.push((h0 & 0x81) | (FU << 1));
        out.push(h1);
        out.push(u8::from(first) << 7 | u8::from(last) << 6 | Self::nal_type(head));
    }
}

/// Sends an H.265 track.
pub(super) type Packetizer = h26x::Packetizer<H265>;

/// Receives an H.265 track.
pub(super) type Depacketizer = h26x::Depacketizer<H265>;

/// A packetizer for the H.265 `track`, which sends the VPS, SPS and PPS (at least a
/// header's 2 bytes each) of its hvcC record before IRAP pictures; `None` when the hvcC
/// record cannot be read.
pub(super) fn packetizer(track: &Track) -> Option<Packetizer> {
    let cfg = hevc::parse_hvcc(&track.init).ok()?;
    let sets = cfg
        .nal_units
        .iter()
        .filter(|(k, n)| H265::is_parameter_set(*k) && n.len() >= 2)
        .map(|(_, n)| n.clone())
        .collect();
    Some(Packetizer::new(cfg.nal_length_size, sets))
}

impl Depacketizer {
    /// The payload `p` of one packet of the access unit at `ts` (extended, 90 kHz): an AP, a
    /// FU, or else a single NAL unit. An AP's units before a cut one are kept.
    ///
    /// # Errors
    /// [`RtpError::Payload`] for a payload under 3 bytes (a PayloadHdr and one more), a
    /// PACI packet, or an AP unit that runs past the end.
    pub(super) fn push(&mut self, ts: u64, p: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        let Some((&[p0, p1], rest)) = p.split_first_chunk::<2>() else {
            return Err(RtpError::Payload("HEVC"));
        };
        let Some((&fh, chunk)) = rest.split_first() else {
            return Err(RtpError::Payload("HEVC"));
        };
        match (p0 >> 1) & 0x3f {
            AP => {
                for nal in h26x::aggregated(rest, "AP") {
                    self.nal(ts, nal?, sink);
                }
            }
            FU => {
                if fh & 0x80 != 0 {
                    self.start_fragment(ts, &[(p0 & 0x81) | ((fh & 0x3f) << 1), p1]);
                }
                self.fragment(ts, chunk, fh & 0x40 != 0, sink);
            }
            PACI => return Err(RtpError::Payload("HEVC PACI")),
            _ => self.nal(ts, p, sink),
        }
        Ok(())
    }
}

/// The SDP `a=fmtp` parameters of the H.265 `track` (RFC 7798 §7.1): `sprop-vps`,
/// `sprop-sps` and `sprop-pps`, each the units of that type in the hvcC record in base64,
/// comma-separated (empty when there is none). `None` when the hvcC record cannot be read.
pub(super) fn fmtp(track: &Track) -> Option<String> {
    let cfg = hevc::parse_hvcc(&track.init).ok()?;
    let of = |k: u8| -> String {
        cfg.nal_units
            .iter()
            .filter(|(t, _)| *t == k)
            .map(|(_, n)| super::base64(n))
            .collect::<Vec<_>>()
            .join(",")
    };
    Some(format!(
        "sprop-vps={};sprop-sps={};sprop-pps={}",
        of(NAL_VPS),
        of(NAL_SPS),
        of(NAL_PPS)
    ))
}

#[cfg(test)]
mod tests {
    use crate::hevc;
    use crate::model::{Codec, PacketRef, Track, TrackKind};
    use crate::rtp::test_util::{avcc, rtp_packet};
    use crate::rtp::{Depacketizer, Packetizer, RtpError, Unit, DEFAULT_MTU, RTP_HEADER_LEN};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// An HEVC track whose hvcC holds an x265 encoder's VPS, SPS and PPS.
    fn hevc_track() -> (Track, [Vec<u8>; 3]) {
        let sets = [
            hex("40010c01ffff01600000030090000003000003003f959809"),
            hex("42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321"),
            hex("4401c172b46240"),
        ];
        let mut t = Track::new(1, TrackKind::Video, Codec::Hevc);
        t.init = hevc::build_hvcc(&sets[..1], &sets[1..2], &sets[2..]).unwrap();
        (t, sets)
    }

    #[test]
    fn irap_gets_an_ap_then_fus_and_comes_back() {
        let (t, sets) = hevc_track();
        let mut p = Packetizer::new(&t, 96, 3, 10, 0).unwrap();
        let mut d = Depacketizer::new(Codec::Hevc, (13, 3));
        // An IDR_W_RADL slice (type 19) too big for a packet, then a TRAIL_R (type 1).
        let idr: Vec<u8> = [0x26, 0x01]
            .into_iter()
            .chain((0..4000).map(|i| (i % 241) as u8))
            .collect();
        let units = [avcc(&[&idr]), avcc(&[&[0x02, 0x01, 0xd0, 0x0f]])];
        let mut types = Vec::new();
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
            assert!(spans.iter().all(|s| s.len() <= DEFAULT_MTU));
            for (k, s) in spans.iter().enumerate() {
                let pkt = &out[s.clone()];
                types.push((pkt[RTP_HEADER_LEN] >> 1) & 0x3f);
                assert_eq!(
                    pkt[1] & 0x80 != 0,
                    k + 1 == spans.len(),
                    "marker on the last"
                );
                d.push(pkt).unwrap();
            }
        }
        // AP with the parameter sets, three FUs of the IDR, the TRAIL_R whole.
        assert_eq!(types, [48, 49, 49, 49, 1]);
        let got: Vec<Unit> = std::iter::from_fn(|| d.poll()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!((&got[0].data, got[0].keyframe), (&units[0], true));
        assert_eq!((&got[1].data, got[1].keyframe), (&units[1], false));
        assert_eq!(got[1].timestamp - got[0].timestamp, 40 * 90);
        let kept: Vec<&Vec<u8>> = d.parameter_sets().iter().map(|s| &s.1).collect();
        assert_eq!(kept, [&sets[0], &sets[1], &sets[2]]);
        assert_eq!((d.lost, d.bad, d.sets_version()), (0, 0, 3));
    }

    #[test]
    fn paci_and_short_payloads_are_refused() {
        let mut d = Depacketizer::new(Codec::Hevc, (13, 3));
        let paci = rtp_packet(0, 0, true, &[50 << 1, 1, 0, 0]);
        assert_eq!(d.push(&paci), Err(RtpError::Payload("HEVC PACI")));
        let short = rtp_packet(1, 0, true, &[0x02, 0x01]);
        assert_eq!(d.push(&short), Err(RtpError::Payload("HEVC")));
        // An AP whose second unit runs past the end: the first is kept.
        let ap = [48 << 1, 1, 0, 3, 0x02, 0x01, 0xaa, 0, 9, 0x02];
        assert_eq!(
            d.push(&rtp_packet(2, 3000, true, &ap)),
            Err(RtpError::Payload("AP"))
        );
        assert_eq!(
            d.poll().map(|u| u.data),
            Some(vec![0, 0, 0, 3, 0x02, 0x01, 0xaa])
        );
        assert_eq!(d.bad, 3);
    }
}
