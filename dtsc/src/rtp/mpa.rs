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
