//! The reorder buffer in front of a [`Depacketizer`](super::Depacketizer) for RTP received
//! over UDP.

use std::collections::BTreeMap;

use super::{RtpError, RTP_HEADER_LEN};

/// Puts the RTP packets of one track received over UDP back in sequence order (RFC 3550
/// §A.1 extended sequence numbers). A packet that arrives ahead of a gap is held until the
/// gap fills, or until it has waited `max_delay_ms` or `max_packets` are held; then the gap
/// is given up and what follows is released (the [`Depacketizer`](super::Depacketizer)
/// counts the loss).
/// Duplicates and packets older than what was released are dropped and counted in
/// [`JitterBuffer::late`]. Times are the caller's clock in ms.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    held: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Extended sequence number expected next.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    highest: Option<u64>,
    max_delay_ms: u64,
    max_packets: usize,
    /// Packets that came after their place was released, or twice.
    pub late: u64,
    /// Packets released out of arrival order (reordered by the network).
    pub reordered: u64,
}

impl JitterBuffer {
    /// A buffer that waits at most `max_delay_ms` (ms) for a missing packet and holds at most
    /// `max_packets` (at least 1).
    pub fn new(max_delay_ms: u64, max_packets: usize) -> JitterBuffer {
        JitterBuffer {
            held: BTreeMap::new(),
            next: None,
            highest: None,
            max_delay_ms,
            max_packets: max_packets.max(1),
            late: 0,
            reordered: 0,
        }
    }

    /// Takes one datagram received at `now_ms` (the caller's clock, ms). Only its fixed
    /// header is read; a duplicate or a packet behind what was released is dropped and
    /// counted in [`late`](Self::late), not an error.
    ///
    /// # Errors
    /// [`RtpError::Malformed`] when it is shorter than [`RTP_HEADER_LEN`] or not version 2.
    pub fn push(&mut self, packet: Vec<u8>, now_ms: u64) -> Result<(), RtpError> {
        let seq = match packet.first_chunk::<RTP_HEADER_LEN>() {
            Some(&[first, _, s0, s1, ..]) if first >> 6 == 2 => u16::from_be_bytes([s0, s1]),
            _ => return Err(RtpError::Malformed),
        };
        let ext = match self.highest {
            None => u64::from(seq) + (1 << 16),
            Some(h) => {
                let d = i64::from(seq.wrapping_sub(h as u16) as i16);
                (h as i64 + d).max(0) as u64
            }
        };
        if self.highest.is_some_and(|h| ext < h) {
            self.reordered += 1;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.held.contains_key(&ext) {
            self.late += 1;
            return Ok(());
        }
        self.held.insert(ext, (now_ms, packet));
        Ok(())
    }

    /// The next packet in sequence order, if it may leave at `now_ms` (ms): it is the one
    /// expected next, or the gap before it has waited `max_delay_ms`, or more than
    /// `max_packets` are held.
    pub fn pop(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        let next = self.next.unwrap_or(first);
        if first != next
            && self.held.len() <= self.max_packets
            && now_ms < arrived + self.max_delay_ms
        {
            return None;
        }
        let (_, packet) = self.held.remove(&first)?;
        self.next = Some(first + 1);
        Some(packet)
    }

    /// When (the caller's clock, ms) a held packet may leave although its predecessor is
    /// missing; `None` when nothing waits on a gap.
    pub fn deadline(&self) -> Option<u64> {
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        (Some(first) != self.next).then_some(arrived + self.max_delay_ms)
    }

    /// Everything held, in sequence order, gaps or not (the end of the stream).
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let out: Vec<Vec<u8>> = std::mem::take(&mut self.held)
            .into_values()
            .map(|x| x.1)
            .collect();
        self.next = self.highest.map(|h| h + 1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp_seq(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.push(seq as u8);
        p
    }

    #[test]
    fn jitter_buffer_reorders_and_gives_up_on_gaps() {
        let mut j = JitterBuffer::new(100, 50);
        let seqs = |v: Vec<Vec<u8>>| {
            v.iter()
                .map(|p| u16::from_be_bytes([p[2], p[3]]))
                .collect::<Vec<_>>()
        };
        // 65534, 65535, then 1 before 0 (across the wrap): released in order.
        for (s, t) in [(65534u16, 0u64), (65535, 1), (1, 2), (0, 3)] {
            j.push(rtp_seq(s), t).unwrap();
        }
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| j.pop(3)).collect();
        assert_eq!(seqs(got), [65534, 65535, 0, 1]);
        assert_eq!(j.reordered, 1);
        // 2 is lost: 3 waits until its deadline, then leaves.
        j.push(rtp_seq(3), 10).unwrap();
        assert_eq!(j.pop(50), None);
        assert_eq!(j.deadline(), Some(110));
        assert_eq!(seqs(j.pop(110).into_iter().collect()), [3]);
        // 2 arriving now is late; a duplicate of 3 too.
        j.push(rtp_seq(2), 120).unwrap();
        j.push(rtp_seq(3), 120).unwrap();
        assert_eq!(j.late, 2);
        assert_eq!(j.pop(500), None);
        assert!(j.push(vec![0; 4], 0).is_err());
    }
}
