//! The segment window: a stream's keyframe index read as the list of segments every
//! segmented output serves (HLS, CMAF/DASH, Smooth, HDS) and the figures taken from it
//! (bit rate, an ended stream's span). Segment `k` runs from keyframe `k` of the main track
//! to keyframe `k + 1`; an ended stream's last segment runs to its last packet plus one
//! frame.

use dtsc::shm::{self, StreamReader};
use dtsc::{Track, TrackKind};

/// One complete segment in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSegment {
    /// Key number: the index of the keyframe that opens it (the HLS media sequence number).
    pub key: u64,
    /// Ring sequence number of its first packet.
    pub start_seq: u64,
    /// Ring sequence number one past its last packet.
    pub end_seq: u64,
    /// DTS of its keyframe, ms.
    pub dts: u64,
    /// Duration, ms.
    pub duration_ms: u64,
}

impl WindowSegment {
    /// DTS where the segment ends, ms.
    pub fn end_dts(&self) -> u64 {
        self.dts + self.duration_ms
    }
}

/// One frame's duration of the main track in ms (40 when no video track gives its frame
/// rate), for the length of an ended stream's last segment.
pub fn frame_ms(tracks: &[Track]) -> u64 {
    tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video && t.fpks > 0)
        .map(|t| 1_000_000 / u64::from(t.fpks))
        .unwrap_or(40)
}

/// An ended stream's span in its window, in ms: from the DTS of its first keyframe to the
/// last DTS of `tracks` (the tracks an output carries) plus a frame, as the HLS playlist
/// counts its last segment. `None` while it is live, or when its window holds no keyframe.
/// The FLV outputs give their `duration` from it.
pub fn ended_span(r: &StreamReader, tracks: &[Track]) -> Option<std::ops::Range<u64>> {
    let m = r.meta();
    if m.state() != shm::STATE_ENDED || m.key_count() <= m.first_key() {
        return None;
    }
    let first = m.key(m.first_key())?;
    let last_key = m.key(m.key_count() - 1)?;
    let last = (last_key.seq..m.write_seq())
        .filter_map(|s| m.packet(s))
        .filter(|e| tracks.iter().any(|t| t.id == e.track))
        .map(|e| e.dts)
        .max()
        .unwrap_or(last_key.dts);
    Some(first.dts..last.max(first.dts) + frame_ms(tracks))
}

/// The segments currently in the window, oldest first. The oldest segments are held back
/// once the window has been trimmed, so a player never fetches a segment that is about to
/// leave it.
pub fn segments(r: &StreamReader, tracks: &[Track]) -> Vec<WindowSegment> {
    let m = r.meta();
    let ended = m.state() == shm::STATE_ENDED;
    let (first, count) = (m.first_key(), m.key_count());
    let write_seq = m.write_seq();
    let mut out = Vec::new();
    for k in first..count {
        let Some(start) = m.key(k) else { continue };
        let segment = |end_seq, duration_ms| WindowSegment {
            key: k,
            start_seq: start.seq,
            end_seq,
            dts: start.dts,
            duration_ms,
        };
        if let Some(next) = m.key(k + 1) {
            out.push(segment(next.seq, next.dts - start.dts));
        } else if ended && write_seq > start.seq {
            let last = (start.seq..write_seq)
                .filter_map(|s| m.packet(s))
                .map(|e| e.dts)
                .max()
                .unwrap_or(start.dts);
            out.push(segment(write_seq, last - start.dts + frame_ms(tracks)));
        }
    }
    // Hold back segments within two segment lengths of leaving the window (the writer drops
    // segment k once keyframe k+1 is dvr_ms old), so a player never asks for a vanished one.
    let newest = out.last().map(WindowSegment::end_dts).unwrap_or(0);
    let longest = out.iter().map(|s| s.duration_ms).max().unwrap_or(0);
    out.retain(|s| s.end_dts() + m.dvr_ms() > newest + 2 * longest);
    out
}

/// The segment that opens with keyframe `key`, when it is complete and in the window (a
/// player may fetch it).
pub fn segment(r: &StreamReader, tracks: &[Track], key: u64) -> Option<WindowSegment> {
    segments(r, tracks).into_iter().find(|s| s.key == key)
}

/// True when segment `key` is complete and in the window.
pub fn in_window(r: &StreamReader, tracks: &[Track], key: u64) -> bool {
    segment(r, tracks, key).is_some()
}

/// Bits per second of the window, measured over the complete segments in it (2 Mbit/s
/// before any packet).
pub fn bandwidth(r: &StreamReader) -> u64 {
    window_bandwidth(r, None).unwrap_or(2_000_000)
}

/// Bits per second of the tracks `ids` alone over the complete segments in the window (the
/// whole window while it holds less than two segments); `None` with no packet of theirs.
pub fn track_bandwidth(r: &StreamReader, ids: &[u32]) -> Option<u64> {
    window_bandwidth(r, Some(ids))
}

fn window_bandwidth(r: &StreamReader, ids: Option<&[u32]>) -> Option<u64> {
    let m = r.meta();
    let (first, count) = (m.first_key(), m.key_count());
    let start = m.key(first)?;
    let (end_seq, end_dts) = match m.key(count.saturating_sub(1)) {
        Some(b) if count >= first + 2 => (b.seq, b.dts),
        _ => {
            let last = m.write_seq().checked_sub(1).and_then(|s| m.packet(s))?;
            (m.write_seq(), last.dts.max(start.dts + 1000))
        }
    };
    let bytes: u64 = (start.seq..end_seq)
        .filter_map(|s| m.packet(s))
        .filter(|e| ids.is_none_or(|ids| ids.contains(&e.track)))
        .map(|e| e.len as u64)
        .sum();
    let ms = end_dts.saturating_sub(start.dts).max(1);
    (bytes > 0).then(|| bytes * 8 * 1000 / ms)
}
