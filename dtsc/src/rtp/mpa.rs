//! MPEG audio (MP3) over RTP, RFC 2250 §3.5 (`MPA`, RFC 3551 static payload type 14's
//! format): each packet a 4-byte header (16 bits MBZ, 16-bit fragment offset) and then
//! whole frames, or a fragment of one frame too large for a packet.

use super::{PacketWriter, RtpError, Sink, Unit};
use crate::model::PacketRef;

/// The SDP `a=rtpmap` encoding (RFC 3551 §4.5.13): the clock is always 90 kHz.
pub(super) const RTPMAP: &str = "MPA/90000";

/// Sends an MP3 track.
#[derive(Debug, Clone)]
pub(super) struct Packetizer;

impl Packetizer {
    /// Frame(s) `p` at RTP time `ts`: one packet, or fragments each with its offset in
    /// the frame (bytes, saturating at 65535) and the marker on the last.
    pub(super) fn packetize(&self, ts: u32, p: &PacketRef, w: &mut PacketWriter) {
        let chunks: Vec<&[u8]> = if p.data.is_empty() {
            vec![p.data]
        } else {
            p.data.chunks(w.max_payload() - 4).collect()
        };
        let mut offset = 0usize;
        for (i, chunk) in chunks.iter().enumerate() {
            w.packet(i + 1 == chunks.len(), ts, |out| {
                // MBZ, then the offset of this fragment in the frame.
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(offset.min(0xffff) as u16).to_be_bytes());
                out.extend_from_slice(chunk);
            });
            offset += chunk.len();
        }
    }
}

/// Receives an MPEG audio track: whole frames only (fragments are not reassembled).
#[derive(Debug, Clone)]
pub(super) struct Depacketizer;

impl Depacketizer {
    /// The payload `p` of one packet at `ts` (extended, 90 kHz): its frames, as they are,
    /// become one unit.
    ///
    /// # Errors
    /// [`RtpError::Payload`] when `p` is not a header with fragment offset 0 followed by
    /// at least one byte.
    pub(super) fn push(&mut self, ts: u64, p: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        match p {
            [_, _, 0, 0, frames @ ..] if !frames.is_empty() => {
                sink.units.push_back(Unit {
                    timestamp: ts,
                    keyframe: true,
                    data: frames.to_vec(),
                });
                Ok(())
            }
            _ => Err(RtpError::Payload("MPEG audio")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Codec, PacketRef, Track, TrackKind};
    use crate::rtp::test_util::rtp_packet;
    use crate::rtp::{rtpmap, Depacketizer, Packetizer, RtpError, RTP_HEADER_LEN};

    #[test]
    fn frames_go_out_after_the_rfc2250_header_and_come_back() {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Mp3);
        t.rate = 44_100;
        t.channels = 2;
        assert_eq!(rtpmap(&t).as_deref(), Some("MPA/90000"));
        let mut p = Packetizer::new(&t, 14, 5, 0, 0).unwrap();
        let mut d = Depacketizer::new(Codec::Mp3, (13, 3));
        let frame = vec![0xffu8; 417];
        let pr = PacketRef {
            track: 2,
            dts: 26,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &frame,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(&out[RTP_HEADER_LEN..RTP_HEADER_LEN + 4], &[0, 0, 0, 0]);
        d.push(&out).unwrap();
        let u = d.poll().unwrap();
        assert_eq!((u.timestamp, &u.data), (26 * 90, &frame));
        // A frame too big for a packet: fragments with their offsets, the marker last.
        let big = vec![7u8; 3000];
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&PacketRef { data: &big, ..pr }, &mut out, &mut spans);
        let heads: Vec<(bool, u16)> = spans
            .iter()
            .map(|s| {
                let h = &out[s.start..];
                (h[1] & 0x80 != 0, u16::from_be_bytes([h[14], h[15]]))
            })
            .collect();
        assert_eq!(heads, [(false, 0), (false, 1384), (true, 2768)]);
        // A payload without a frame after its header is refused.
        let empty = rtp_packet(9, 0, true, &[0, 0, 0, 0]);
        assert_eq!(d.push(&empty), Err(RtpError::Payload("MPEG audio")));
    }
}
