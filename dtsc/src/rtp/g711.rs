//! G.711 A-law and µ-law over RTP, RFC 3551 §4.5.14 (`PCMA`, `PCMU`): the samples as they
//! are, one byte per sample and channel, cut on whole sample frames to fit a packet. Each
//! packet's timestamp is its first sample's; every packet received is one unit.

use super::{PacketWriter, RtpError, Sink, Unit};
use crate::model::{Codec, PacketRef, Track};

/// Static payload type of PCMU, 8 kHz mono (RFC 3551 §6, Table 4).
const PT_PCMU: u8 = 0;
/// Static payload type of PCMA, 8 kHz mono (RFC 3551 §6, Table 4).
const PT_PCMA: u8 = 8;

/// Sends a G.711 track.
#[derive(Debug, Clone)]
pub(super) struct Packetizer {
    /// Interleaved channels (at least 1): bytes per sample frame.
    channels: u32,
}

impl Packetizer {
    /// A packetizer for the G.711 `track` (no channel count is taken as mono).
    pub(super) fn new(track: &Track) -> Packetizer {
        Packetizer {
            channels: track.channels.max(1),
        }
    }

    /// Samples `p` from RTP time `ts`: as many whole sample frames per packet as fit (at
    /// least one), each packet at its first frame's time (one tick per frame); no marker.
    pub(super) fn packetize(&self, ts: u32, p: &PacketRef, w: &mut PacketWriter) {
        let channels = self.channels as usize;
        let per = (w.max_payload() / channels).max(1) * channels;
        for (i, chunk) in p.data.chunks(per).enumerate() {
            let at = ts.wrapping_add((i * per / channels) as u32);
            w.packet(false, at, |out| out.extend_from_slice(chunk));
        }
    }
}

/// Receives a G.711 track.
#[derive(Debug, Clone)]
pub(super) struct Depacketizer;

impl Depacketizer {
    /// The payload `p` of one packet at `ts` (extended, in the sample-rate clock): one unit.
    ///
    /// # Errors
    /// [`RtpError::Payload`] for an empty payload.
    pub(super) fn push(&mut self, ts: u64, p: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        if p.is_empty() {
            return Err(RtpError::Payload("G.711"));
        }
        sink.units.push_back(Unit {
            timestamp: ts,
            keyframe: true,
            data: p.to_vec(),
        });
        Ok(())
    }
}

/// The SDP `a=rtpmap` encoding of the G.711 `track` (RFC 3551 §4.5.14): `PCMA` or `PCMU`,
/// the sample rate (at least 8000), and the channel count when more than one.
pub(super) fn rtpmap(track: &Track) -> String {
    let name = if track.codec == Codec::Alaw {
        "PCMA"
    } else {
        "PCMU"
    };
    let rate = track.rate.max(8000);
    match track.channels {
        0 | 1 => format!("{name}/{rate}"),
        n => format!("{name}/{rate}/{n}"),
    }
}

/// RFC 3551's static payload type of `track` when it is G.711 at 8 kHz (or no rate) and
/// mono (or no channel count): PCMU 0, PCMA 8. `None` otherwise.
pub(super) fn static_payload_type(track: &Track) -> Option<u8> {
    let mono_8k = track.rate <= 8000 && track.channels <= 1;
    match track.codec {
        Codec::Ulaw if mono_8k => Some(PT_PCMU),
        Codec::Alaw if mono_8k => Some(PT_PCMA),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Codec, PacketRef, Track, TrackKind};
    use crate::rtp::{payload_type, rtpmap, Depacketizer, Packetizer, Unit, RTP_HEADER_LEN};

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
}
