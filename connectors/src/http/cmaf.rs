//! CMAF outputs under `/cmaf/S/`: HLS with fragmented-MP4 segments and DASH, both cut from the
//! stream's keyframe index exactly as the MPEG-TS HLS output is ([`crate::core::window::segments`]):
//! segment N holds the packets from keyframe N of the main track to keyframe N+1, muxed on
//! request by `dtsc::mp4` (ISO/IEC 23000-19 fragments, one `moof`/`mdat` per segment).
//!
//! URLs (S = stream):
//! * HLS and LL-HLS: `index.m3u8` (master), `T/index.m3u8` (media playlist of track set `T`,
//!   ids joined by `_`; `?_HLS_msn=M&_HLS_part=P` blocks until it holds that part),
//!   `T/BOOT_init.mp4`, `T/BOOT_N.m4s` (segment N of the buffer started at Unix ms BOOT),
//!   `T/BOOT_N.P.m4s` (part P of segment N: [`PART_GRID_MS`] of media, one movie fragment;
//!   a segment is its parts back to back).
//! * DASH: `index.mpd`, `BOOT_init_ID.mp4` (one track), `BOOT_chunk_ID_T.m4s` (the segment of track ID
//!   starting at T ms: the `$Time$` of the MPD's SegmentTimeline, timescale 1000).

use dtsc::dash::{LiveTiming, Mpd, Presentation, Representation, SegmentTemplate};
use dtsc::hls::{Fmp4Playlist, Fmp4Segment, LowLatency, Part};
use dtsc::mp4::{self, FragmentBuilder};
use dtsc::shm::{self, StreamReader};
use dtsc::Track;

use crate::core::window::{self, frame_ms};
use crate::http::hls;

use crate::http::routes::{Endpoint, Route};

/// The URLs CMAF serves: HLS with fMP4 segments (LL-HLS) and DASH, under `/cmaf/S/`.
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "cmaf/$/index.m3u8",
        output: "CMAF",
        endpoint: Endpoint::CmafMaster,
    },
    Route {
        pattern: "cmaf/$/index.mpd",
        output: "DASH",
        endpoint: Endpoint::DashMpd,
    },
    Route {
        pattern: "cmaf/$/*",
        output: "CMAF",
        endpoint: Endpoint::DashFile,
    },
    Route {
        pattern: "cmaf/$/*/index.m3u8",
        output: "CMAF",
        endpoint: Endpoint::CmafMedia,
    },
    Route {
        pattern: "cmaf/$/*/*",
        output: "CMAF",
        endpoint: Endpoint::CmafHlsFile,
    },
];

/// Tracks CMAF can carry: every H.264/HEVC video and AAC/MP3 audio track, in stream order.
pub fn cmaf_tracks(tracks: &[Track]) -> Vec<&Track> {
    hls::hls_tracks(tracks)
}

/// The tracks `ids` of `tracks`, in stream order, renumbered 1, 2, … for the init segment
/// and fragments of a track set, with the stream's ids they stand for. Every CMAF track of a
/// one-track set is therefore `track_ID` 1, so a player that switches between the video
/// representations of a DASH adaptation set (or HLS variants) finds the same track id in the
/// new init segment (DASH-IF IOP: the Representations of an Adaptation Set share one
/// track_ID).
fn selected(tracks: &[Track], ids: &[u32]) -> (Vec<Track>, Vec<u32>) {
    let mut out = Vec::new();
    let mut orig = Vec::new();
    for t in tracks.iter().filter(|t| ids.contains(&t.id)) {
        let mut t = t.clone();
        orig.push(t.id);
        t.id = out.len() as u32 + 1;
        out.push(t);
    }
    (out, orig)
}

/// The HLS master playlist of the CMAF tracks ([`hls::master_playlist`]: variants per video
/// track, audio renditions when there are several audio tracks).
pub fn hls_master(r: &StreamReader, tracks: &[Track]) -> Option<String> {
    hls::master_playlist(r, &cmaf_tracks(tracks), dtsc::dash::rfc6381_codec)
}

/// The HLS media playlist of a track set, with fMP4 segments (`#EXT-X-MAP` init segment),
/// as Low-Latency HLS (RFC 8216bis): every segment's parts (`BOOT_N.P.m4s`, listed by the
/// renderer for the newest segments only), the complete parts of the segment being built,
/// a preload hint for the next part and `CAN-BLOCK-RELOAD`. Players without LL-HLS support
/// ignore those tags and play the segments.
pub fn hls_media(r: &StreamReader, tracks: &[Track]) -> String {
    let segs = window::segments(r, tracks);
    let m = r.meta();
    let boot = m.boot_ms();
    let ended = m.state() == shm::STATE_ENDED;
    let part_list = |k: u64, spans: &[PartSpan]| -> Vec<Part> {
        spans
            .iter()
            .map(|p| Part {
                duration_ms: p.duration_ms,
                uri: format!("{boot}_{k}.{}.m4s", p.index),
                independent: p.index == 0,
            })
            .collect()
    };
    // The renderer lists parts only for segments starting within three target durations of
    // the playlist's end: cut parts for those alone, not for the whole DVR window.
    let target_ms = segs
        .iter()
        .map(|s| (s.duration_ms + 500) / 1000)
        .max()
        .unwrap_or(1)
        .max(1)
        * 1000;
    let total_ms: u64 = segs.iter().map(|s| s.duration_ms).sum();
    let mut start_ms = 0;
    let segments: Vec<Fmp4Segment> = segs
        .iter()
        .map(|s| {
            let (k, dur) = (s.key, s.duration_ms);
            let recent = total_ms - start_ms < 3 * target_ms;
            start_ms += dur;
            Fmp4Segment {
                msn: k,
                duration_ms: dur,
                uri: format!("{boot}_{k}.m4s"),
                parts: if recent {
                    part_list(k, &parts(r, tracks, k))
                } else {
                    Vec::new()
                },
                program_date_time_ms: None,
            }
        })
        .collect();
    // The segment being built: the newest keyframe, when its segment is not complete.
    let building = m
        .key_count()
        .checked_sub(1)
        .filter(|k| !ended && segs.last().is_none_or(|s| s.key < *k));
    let (pending_parts, preload_hint) = match building {
        Some(k) => {
            let spans = parts(r, tracks, k);
            let hint = format!("{boot}_{k}.{}.m4s", spans.len());
            (part_list(k, &spans), Some(hint))
        }
        None => (Vec::new(), None),
    };
    let pl = Fmp4Playlist {
        target_duration_s: 0,
        media_sequence: segs.first().map(|s| s.key).unwrap_or(0),
        map_uri: format!("{boot}_init.mp4"),
        segments,
        ended,
        vod: false,
        event: r.meta().flags() & shm::FLAG_EVENT != 0,
        low_latency: Some(LowLatency {
            part_target_ms: PART_TARGET_MS,
            part_hold_back_ms: None,
            pending_parts,
            preload_hint,
            rendition_reports: Vec::new(),
        }),
    };
    let mut out = String::new();
    pl.render(&mut out);
    out
}

/// True when the playlist holds segment `msn` (complete) or, with `part`, at least that
/// part of it: the condition a blocking playlist reload (`_HLS_msn`, `_HLS_part`) waits for.
pub fn playlist_reaches(r: &StreamReader, tracks: &[Track], msn: u64, part: Option<u64>) -> bool {
    has_part(r, tracks, msn, None)
        || part.is_some_and(|p| has_part(r, tracks, msn, Some(p as usize)))
}

/// Parses an LL-HLS part name `BOOT_N.P.m4s` into (boot, key, part index).
pub fn parse_part_name(name: &str) -> Option<(u64, u64, usize)> {
    let stem = name.strip_suffix(".m4s")?;
    let (boot, rest) = stem.split_once('_')?;
    let (key, part) = rest.split_once('.')?;
    Some((boot.parse().ok()?, key.parse().ok()?, part.parse().ok()?))
}

/// Parses an HLS fMP4 segment name `BOOT_N.m4s`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".m4s")?;
    let (boot, key) = stem.split_once('_')?;
    Some((boot.parse().ok()?, key.parse().ok()?))
}

/// The init segment of the tracks `ids` (`ftyp` + `moov`).
pub fn init(tracks: &[Track], ids: &[u32], out: &mut Vec<u8>) -> Result<(), mp4::Mp4Error> {
    mp4::write_init(&selected(tracks, ids).0, out)
}

/// Part grid in ms: a new part starts at the first main-track packet at or after each
/// multiple of this after the segment's keyframe. With the frame durations of common
/// streams (up to 100 ms) every part then lasts at most [`PART_TARGET_MS`].
pub const PART_GRID_MS: u64 = 400;
/// `PART-TARGET` of the LL-HLS playlist, ms (RFC 8216bis §4.4.3.7; the issue's "at most
/// 0.5 s").
pub const PART_TARGET_MS: u64 = 500;
/// Most parts in one segment (the movie fragment sequence number is key × 100 + part + 1);
/// a longer GOP keeps adding to its last part.
const MAX_PARTS: usize = 100;

/// One partial segment: packets `start..end` (sequence numbers, all tracks), the first at
/// `dts` ms (a main-track packet), lasting `duration_ms` to the next part (or segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    /// Index in its segment, from 0.
    pub index: usize,
    /// First packet.
    pub start: u64,
    /// One past the last packet.
    pub end: u64,
    /// DTS of the first main-track packet, ms.
    pub dts: u64,
    /// Duration, ms.
    pub duration_ms: u64,
}

/// The complete parts of the segment that opens with keyframe `key`: all of them when the
/// segment is complete (the next keyframe exists, or the stream ended), else those already
/// followed by the next part (the last one listed is the newest complete part). Part `i`
/// starts at the first main-track packet at or after `key DTS + i × PART_GRID_MS` (a gap
/// skips grid lines, never indexes).
pub fn parts(r: &StreamReader, tracks: &[Track], key: u64) -> Vec<PartSpan> {
    let m = r.meta();
    let Some(main) = dtsc::main_track(tracks).map(|t| t.id) else {
        return Vec::new();
    };
    let Some(k) = m.key(key) else {
        return Vec::new();
    };
    let ended = m.state() == shm::STATE_ENDED;
    let write_seq = m.write_seq();
    let next = m.key(key.saturating_add(1));
    let limit = next.map_or(write_seq, |n| n.seq);
    let mut out = Vec::new();
    let (mut start, mut dts) = (k.seq, k.dts);
    let mut line = k.dts + PART_GRID_MS;
    let mut last_dts = k.dts;
    for s in k.seq..limit {
        let Some(e) = m.packet(s) else { continue };
        if e.track != main {
            continue;
        }
        last_dts = last_dts.max(e.dts);
        if e.dts >= line && out.len() + 1 < MAX_PARTS {
            out.push(PartSpan {
                index: out.len(),
                start,
                end: s,
                dts,
                duration_ms: e.dts - dts,
            });
            (start, dts) = (s, e.dts);
            line = k.dts + ((e.dts - k.dts) / PART_GRID_MS + 1) * PART_GRID_MS;
        }
    }
    let end_dts = match next {
        Some(n) => Some(n.dts),
        // The ended stream's last segment lasts one frame past its last main packet.
        None if ended && write_seq > start => Some(last_dts + frame_ms(tracks)),
        None => None,
    };
    if let Some(end_dts) = end_dts {
        out.push(PartSpan {
            index: out.len(),
            start,
            end: limit,
            dts,
            duration_ms: end_dts.saturating_sub(dts).max(1),
        });
    }
    out
}

/// Appends part `span` of segment `key` of the tracks `ids` as one movie fragment (`mfhd`
/// sequence number `key × 100 + index + 1`). Each track's last sample lasts until that
/// track's next packet when it is already in the buffer. `None` when a packet has left the
/// window.
fn write_part(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    span: &PartSpan,
    out: &mut Vec<u8>,
) -> Option<()> {
    let (sel, orig) = selected(tracks, ids);
    let mut fb = FragmentBuilder::new(&sel).ok()?;
    for s in span.start..span.end {
        let mut p = r.packet(s)?;
        if let Some(i) = orig.iter().position(|&id| id == p.track) {
            p.track = i as u32 + 1;
            fb.add(&p).ok()?;
        }
    }
    if fb.is_empty() {
        return Some(());
    }
    let write_seq = r.meta().write_seq();
    for (t, id) in sel.iter().zip(&orig) {
        if let Some(d) = (span.end..write_seq.min(span.end + 256))
            .filter_map(|s| r.meta().packet(s))
            .find(|e| e.track == *id)
            .map(|e| e.dts)
        {
            let _ = fb.set_end_dts(t.id, d);
        }
    }
    fb.finish((key * MAX_PARTS as u64 + span.index as u64 + 1) as u32, out)
        .ok()?;
    r.still_valid(span.start).then_some(())
}

/// Segment `key` of the tracks `ids`: its parts' movie fragments back to back (so the
/// segment is exactly the concatenation of its LL-HLS parts, RFC 8216bis §4.4.4.9). `None`
/// when the segment is not (or no longer) in the window, or not complete.
pub fn fragment(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    if !window::in_window(r, tracks, key) {
        return None;
    }
    let start = out.len();
    for span in parts(r, tracks, key) {
        write_part(r, tracks, ids, key, &span, out)?;
    }
    (out.len() > start).then_some(())
}

/// Part `index` of segment `key` of the tracks `ids`, once complete. `None` when it is not
/// complete (yet) or no longer in the window.
pub fn part(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    index: usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    if key < r.meta().first_key() {
        return None;
    }
    let span = *parts(r, tracks, key).get(index)?;
    write_part(r, tracks, ids, key, &span, out)
}

/// True when part `index` of segment `key` is complete (`index` `None`: the whole segment).
pub fn has_part(r: &StreamReader, tracks: &[Track], key: u64, index: Option<usize>) -> bool {
    match index {
        None => window::in_window(r, tracks, key) || r.meta().key(key.saturating_add(1)).is_some(),
        Some(i) => parts(r, tracks, key).len() > i,
    }
}

/// Per track, the DASH segments in the window: (key number, start ms, duration ms), where a
/// track's segment starts at its first packet after the keyframe that opens the segment.
pub fn dash_timeline(r: &StreamReader, tracks: &[Track], id: u32) -> Vec<(u64, u64, u64)> {
    let segs = window::segments(r, tracks);
    let m = r.meta();
    let first_of = |start: u64, end: u64| {
        (start..end)
            .filter_map(|s| m.packet(s))
            .find(|e| e.track == id)
            .map(|e| e.dts)
    };
    let starts: Vec<(u64, Option<u64>, u64, u64)> = segs
        .iter()
        .map(|s| {
            (
                s.key,
                first_of(s.start_seq, s.end_seq),
                s.dts,
                s.duration_ms,
            )
        })
        .collect();
    let mut out = Vec::new();
    for (i, &(k, t, key_dts, dur)) in starts.iter().enumerate() {
        let Some(t) = t else { continue };
        let next = starts.get(i + 1).and_then(|x| x.1);
        let d = match next {
            Some(n) => n.saturating_sub(t),
            None => (key_dts + dur).saturating_sub(t),
        };
        out.push((k, t, d.max(1)));
    }
    out
}

/// The DASH MPD: one representation per CMAF track, `SegmentTemplate` with a
/// `SegmentTimeline` in ms. Live while the stream is live (dynamic, `availabilityStartTime` =
/// the stream's `unixzero`), static once it ended.
pub fn mpd(r: &StreamReader, tracks: &[Track], now_ms: u64) -> Option<String> {
    let sel = cmaf_tracks(tracks);
    if sel.is_empty() {
        return None;
    }
    let m = r.meta();
    let boot = m.boot_ms();
    let ended = m.state() == shm::STATE_ENDED;
    let mut reps = Vec::new();
    let mut total = 0;
    let mut longest = 0;
    for t in &sel {
        let tl = dash_timeline(r, tracks, t.id);
        if let (Some(f), Some(l)) = (tl.first(), tl.last()) {
            total = total.max(l.1 + l.2 - f.1);
        }
        longest = longest.max(tl.iter().map(|x| x.2).max().unwrap_or(0));
        let mut rep = Representation::from_track(
            t,
            SegmentTemplate {
                timescale: 1000,
                initialization: format!("{boot}_init_$RepresentationID$.mp4"),
                media: format!("{boot}_chunk_$RepresentationID$_$Time$.m4s"),
                presentation_time_offset: 0,
                timeline: tl.iter().map(|&(_, t, d)| (t, d)).collect(),
            },
        );
        if rep.bandwidth == 0 {
            rep.bandwidth = window::track_bandwidth(r, &[t.id]).unwrap_or(1) * 5 / 4;
        }
        reps.push(rep);
    }
    let presentation = if ended {
        Presentation::Vod { duration_ms: total }
    } else {
        Presentation::Live(LiveTiming {
            availability_start_ms: m.unixzero().max(0) as u64,
            publish_ms: now_ms,
            minimum_update_period_ms: longest.max(1000),
            time_shift_buffer_depth_ms: m.dvr_ms(),
            suggested_presentation_delay_ms: 3 * longest.max(1000),
            utc_timing: true,
        })
    };
    let mpd = Mpd {
        presentation,
        min_buffer_time_ms: longest.max(1000),
        representations: reps,
    };
    Some(mpd.to_xml())
}

/// Splits a leading `BOOT_` (the buffer's boot time, as the MPD names its files) off `name`.
fn split_boot(name: &str) -> (Option<u64>, &str) {
    match name.split_once('_') {
        Some((b, rest)) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
            (b.parse().ok(), rest)
        }
        _ => (None, name),
    }
}

/// Parses `BOOT_init_ID.mp4` (or, from older manifests, `init_ID.mp4`) into (boot, id).
pub fn parse_dash_init(name: &str) -> Option<(Option<u64>, u32)> {
    let (boot, name) = split_boot(name);
    let id = name
        .strip_prefix("init_")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()?;
    Some((boot, id))
}

/// Parses `BOOT_chunk_ID_T.m4s` (or `chunk_ID_T.m4s`) into (boot, id, T ms).
pub fn parse_dash_chunk(name: &str) -> Option<(Option<u64>, u32, u64)> {
    let (boot, name) = split_boot(name);
    let (id, t) = name
        .strip_prefix("chunk_")?
        .strip_suffix(".m4s")?
        .split_once('_')?;
    Some((boot, id.parse().ok()?, t.parse().ok()?))
}

/// Parses the HLS init segment name `BOOT_init.mp4` (`None` for the boot in `init.mp4`).
pub fn parse_hls_init(name: &str) -> Option<Option<u64>> {
    match split_boot(name) {
        (boot, "init.mp4") => Some(boot),
        _ => None,
    }
}

/// The segment (key) number of the DASH segment of track `id` that starts at `t` ms; `None`
/// when no segment in the window starts there.
pub fn dash_chunk_key(r: &StreamReader, tracks: &[Track], id: u32, t: u64) -> Option<u64> {
    dash_timeline(r, tracks, id)
        .into_iter()
        .find(|x| x.1 == t)
        .map(|x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_segment_name("17_4.m4s"), Some((17, 4)));
        assert_eq!(parse_dash_init("init_2.mp4"), Some((None, 2)));
        assert_eq!(parse_dash_init("17_init_2.mp4"), Some((Some(17), 2)));
        assert_eq!(
            parse_dash_chunk("chunk_1_40000.m4s"),
            Some((None, 1, 40000))
        );
        assert_eq!(
            parse_dash_chunk("17_chunk_1_40000.m4s"),
            Some((Some(17), 1, 40000))
        );
        assert_eq!(parse_dash_chunk("chunk_x_1.m4s"), None);
        assert_eq!(parse_hls_init("init.mp4"), Some(None));
        assert_eq!(parse_hls_init("17_init.mp4"), Some(Some(17)));
        assert_eq!(parse_hls_init("17_4.m4s"), None);
        assert_eq!(parse_segment_name("a_b.m4s"), None);
    }
}
