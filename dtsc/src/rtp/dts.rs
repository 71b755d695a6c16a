//! Decode times for access units received over RTP, which carries presentation times only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Gives packets received with presentation times only (RTP carries no DTS) decode times: a
/// window of `depth` access units is held, and each leaving unit gets as its DTS the smallest
/// presentation time still waiting, less `delay_ms` — which is that unit's decode slot when
/// the stream reorders by fewer than `depth` frames. The composition offset (PTS − DTS) is
/// then never negative while the reorder distance stays under `delay_ms`; presentation times
/// are kept as they came, so other tracks need no shift. Times must be at least `delay_ms`.
#[derive(Debug, Clone)]
pub struct DtsFromPts {
    depth: usize,
    delay_ms: u64,
    window: VecDeque<(u64, bool, Vec<u8>)>,
    pending_pts: BinaryHeap<Reverse<u64>>,
    last_dts: Option<u64>,
}

impl DtsFromPts {
    /// A window of `depth` access units; `delay_ms` (ms) at least the largest reorder
    /// distance in time.
    pub fn new(depth: usize, delay_ms: u64) -> DtsFromPts {
        DtsFromPts {
            depth,
            delay_ms,
            window: VecDeque::new(),
            pending_pts: BinaryHeap::new(),
            last_dts: None,
        }
    }

    /// Adds a unit presented at `pts_ms` (ms); returns the units that leave the window, in
    /// the order they came, as (DTS ms, composition offset PTS − DTS ms, keyframe, payload).
    /// Each DTS is above the one before.
    pub fn push(
        &mut self,
        pts_ms: u64,
        keyframe: bool,
        data: Vec<u8>,
    ) -> Vec<(u64, i64, bool, Vec<u8>)> {
        self.window.push_back((pts_ms, keyframe, data));
        self.pending_pts.push(Reverse(pts_ms));
        let mut out = Vec::new();
        while self.window.len() > self.depth {
            out.extend(self.take());
        }
        out
    }

    /// Everything still held (the end of the stream), as [`push`](Self::push) gives them.
    pub fn flush(&mut self) -> Vec<(u64, i64, bool, Vec<u8>)> {
        let mut out = Vec::new();
        while !self.window.is_empty() {
            out.extend(self.take());
        }
        out
    }

    fn take(&mut self) -> Option<(u64, i64, bool, Vec<u8>)> {
        let (pts, key, data) = self.window.pop_front()?;
        let Reverse(min) = self.pending_pts.pop()?;
        let mut dts = min.saturating_sub(self.delay_ms);
        if let Some(last) = self.last_dts {
            dts = dts.max(last + 1);
        }
        self.last_dts = Some(dts);
        Some((dts, pts as i64 - dts as i64, key, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_times_from_presentation_times() {
        // x264 -bf 3 style: decode order I0 P120 B40 B80 P240 B160 B200 …, 40 ms frames.
        let pts = [
            1000u64, 1120, 1040, 1080, 1240, 1160, 1200, 1360, 1280, 1320,
        ];
        let mut r = DtsFromPts::new(5, 200);
        let mut out = Vec::new();
        for (i, p) in pts.iter().enumerate() {
            out.extend(r.push(*p, i == 0, vec![i as u8]));
        }
        out.extend(r.flush());
        assert_eq!(out.len(), pts.len());
        for (i, (dts, offset, _, data)) in out.iter().enumerate() {
            assert_eq!(data, &vec![i as u8], "decode order kept");
            assert!(*offset >= 0, "offset {offset} at {i}");
            assert_eq!(
                *dts as i64 + offset,
                pts[i] as i64,
                "presentation time kept"
            );
            if i > 0 {
                assert!(*dts > out[i - 1].0, "DTS increases");
            }
        }
    }
}
