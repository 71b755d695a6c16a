//! CMAF outputs under `/cmaf/S/`: HLS with fragmented-MP4 segments and DASH, both cut from the
//! stream's keyframe index exactly as the MPEG-TS HLS output is ([`crate::hls::segments`]):
//! segment N holds the packets from keyframe N of the main track to keyframe N+1, muxed on
//! request by `dtsc::mp4` (ISO/IEC 23000-19 fragments, one `moof`/`mdat` per segment).
//!
//! URLs (S = stream):
//! * HLS: `index.m3u8` (master), `T/index.m3u8` (media playlist of track set `T`, ids joined
//!   by `_`), `T/init.mp4`, `T/BOOT_N.m4s` (segment N of the buffer started at Unix ms BOOT).
//! * DASH: `index.mpd`, `init_ID.mp4` (one track), `chunk_ID_T.m4s` (the segment of track ID
//!   starting at T ms: the `$Time$` of the MPD's SegmentTimeline, timescale 1000).

use dtsc::dash::{LiveTiming, Mpd, Presentation, Representation, SegmentTemplate};
use dtsc::hls::{render_master, Fmp4Playlist, Fmp4Segment, Variant};
use dtsc::mp4::{self, FragmentBuilder};
use dtsc::shm::{self, StreamReader};
use dtsc::{Codec, Track, TrackKind};

use crate::hls::{self, track_set};

/// Tracks CMAF can carry: the first H.264/HEVC video and the first AAC/MP3 audio track.
pub fn cmaf_tracks(tracks: &[Track]) -> Vec<&Track> {
    let video = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video && matches!(t.codec, Codec::H264 | Codec::Hevc));
    let audio = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Audio && matches!(t.codec, Codec::Aac | Codec::Mp3));
    video.into_iter().chain(audio).collect()
}

fn selected(tracks: &[Track], ids: &[u32]) -> Vec<Track> {
    tracks
        .iter()
        .filter(|t| ids.contains(&t.id))
        .cloned()
        .collect()
}

/// The HLS master playlist: one variant with every CMAF track.
pub fn hls_master(r: &StreamReader, tracks: &[Track]) -> Option<String> {
    let sel = cmaf_tracks(tracks);
    if sel.is_empty() {
        return None;
    }
    let codecs: Vec<String> = sel
        .iter()
        .filter_map(|t| dtsc::dash::rfc6381_codec(t))
        .collect();
    let video = sel.iter().find(|t| t.kind == TrackKind::Video);
    let v = Variant {
        bandwidth: hls::bandwidth(r) * 5 / 4,
        codecs: codecs.join(","),
        resolution: video.map(|t| (t.width, t.height)),
        uri: format!("{}/index.m3u8", track_set(&sel)),
    };
    let mut out = String::new();
    render_master(&[v], &mut out);
    Some(out)
}

/// The HLS media playlist of a track set, with fMP4 segments (`#EXT-X-MAP` init segment).
pub fn hls_media(r: &StreamReader, tracks: &[Track]) -> String {
    let segs = hls::segments(r, tracks);
    let boot = r.meta().boot_ms();
    let pl = Fmp4Playlist {
        target_duration_s: 0,
        media_sequence: segs.first().map(|s| s.0).unwrap_or(0),
        map_uri: "init.mp4".into(),
        segments: segs
            .iter()
            .map(|&(k, _, _, _, dur)| Fmp4Segment {
                msn: k,
                duration_ms: dur,
                uri: format!("{boot}_{k}.m4s"),
                parts: Vec::new(),
                program_date_time_ms: None,
            })
            .collect(),
        ended: r.meta().state() == shm::STATE_ENDED,
        vod: false,
        low_latency: None,
    };
    let mut out = String::new();
    pl.render(&mut out);
    out
}

/// Parses an HLS fMP4 segment name `BOOT_N.m4s`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".m4s")?;
    let (boot, key) = stem.split_once('_')?;
    Some((boot.parse().ok()?, key.parse().ok()?))
}

/// The init segment of the tracks `ids` (`ftyp` + `moov`).
pub fn init(tracks: &[Track], ids: &[u32], out: &mut Vec<u8>) -> Result<(), mp4::Mp4Error> {
    mp4::write_init(&selected(tracks, ids), out)
}

/// Segment `key` of the tracks `ids` as one movie fragment (sequence number `key + 1`).
/// `None` when the segment is not (or no longer) in the window.
pub fn fragment(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let segs = hls::segments(r, tracks);
    let i = segs.iter().position(|s| s.0 == key)?;
    let (_, start, end, _, _) = segs[i];
    let sel = selected(tracks, ids);
    let mut fb = FragmentBuilder::new(&sel).ok()?;
    for s in start..end {
        let p = r.packet(s)?;
        if ids.contains(&p.track) {
            fb.add(&p).ok()?;
        }
    }
    // Each track's last sample lasts until that track's first packet of the next segment.
    if let Some(&(_, next_start, next_end, _, _)) = segs.get(i + 1) {
        for t in &sel {
            if let Some(d) = (next_start..next_end)
                .filter_map(|s| r.meta().packet(s))
                .find(|e| e.track == t.id)
                .map(|e| e.dts)
            {
                let _ = fb.set_end_dts(t.id, d);
            }
        }
    }
    if fb.is_empty() {
        return None;
    }
    fb.finish((key + 1) as u32, out).ok()?;
    r.still_valid(start).then_some(())
}

/// Per track, the DASH segments in the window: (key number, start ms, duration ms), where a
/// track's segment starts at its first packet after the keyframe that opens the segment.
pub fn dash_timeline(r: &StreamReader, tracks: &[Track], id: u32) -> Vec<(u64, u64, u64)> {
    let segs = hls::segments(r, tracks);
    let m = r.meta();
    let first_of = |start: u64, end: u64| {
        (start..end)
            .filter_map(|s| m.packet(s))
            .find(|e| e.track == id)
            .map(|e| e.dts)
    };
    let starts: Vec<(u64, Option<u64>, u64, u64)> = segs
        .iter()
        .map(|&(k, s, e, kd, d)| (k, first_of(s, e), kd, d))
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
                initialization: "init_$RepresentationID$.mp4".into(),
                media: "chunk_$RepresentationID$_$Time$.m4s".into(),
                presentation_time_offset: 0,
                timeline: tl.iter().map(|&(_, t, d)| (t, d)).collect(),
            },
        );
        if rep.bandwidth == 0 {
            rep.bandwidth = hls::bandwidth(r) / sel.len() as u64;
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

/// Parses `init_ID.mp4`.
pub fn parse_dash_init(name: &str) -> Option<u32> {
    name.strip_prefix("init_")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()
}

/// Parses `chunk_ID_T.m4s`.
pub fn parse_dash_chunk(name: &str) -> Option<(u32, u64)> {
    let (id, t) = name
        .strip_prefix("chunk_")?
        .strip_suffix(".m4s")?
        .split_once('_')?;
    Some((id.parse().ok()?, t.parse().ok()?))
}

/// The segment (key) number of the DASH segment of track `id` that starts at `t` ms; `None`
/// when no segment in the window starts there.
pub fn dash_chunk_key(r: &StreamReader, tracks: &[Track], id: u32, t: u64) -> Option<u64> {
    dash_timeline(r, tracks, id)
        .into_iter()
        .find(|x| x.1 == t)
        .map(|x| x.0)
}

/// The DASH segment of track `id` that starts at `t` ms.
pub fn dash_chunk(
    r: &StreamReader,
    tracks: &[Track],
    id: u32,
    t: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let key = dash_chunk_key(r, tracks, id, t)?;
    fragment(r, tracks, &[id], key, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_segment_name("17_4.m4s"), Some((17, 4)));
        assert_eq!(parse_dash_init("init_2.mp4"), Some(2));
        assert_eq!(parse_dash_chunk("chunk_1_40000.m4s"), Some((1, 40000)));
        assert_eq!(parse_dash_chunk("chunk_x_1.m4s"), None);
        assert_eq!(parse_segment_name("a_b.m4s"), None);
    }
}
