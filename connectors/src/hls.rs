//! HLS with MPEG-TS segments (RFC 8216), produced on demand from the stream's buffer: the
//! keyframe index is the segment list (segment N runs from keyframe N of the main track to
//! keyframe N+1), and a segment's bytes are muxed from the packets in shared memory when a
//! player asks for them. Nothing is written to disk.
//!
//! URLs under `/hls/S/`: `index.m3u8` (master playlist, one variant per track set),
//! `T/index.m3u8` (media playlist of track set `T`, track ids joined by `_`, e.g. `1_2`),
//! `T/BOOT_N.ts` (segment `N` of the buffer started at Unix ms `BOOT`: a restarted stream
//! never reuses a segment URL, so segments can be cached for long).

use std::fmt::Write as _;

use dtsc::hls::{render_master, MediaPlaylist, Segment, Variant};
use dtsc::shm::{self, StreamReader};
use dtsc::ts::TsMuxer;
use dtsc::{Codec, Track, TrackKind};

/// Tracks HLS with TS segments can carry: H.264 or HEVC (stream type 0x24), AAC and MP3.
pub fn hls_tracks(tracks: &[Track]) -> Vec<&Track> {
    let video = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video && matches!(t.codec, Codec::H264 | Codec::Hevc));
    let audio = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Audio && matches!(t.codec, Codec::Aac | Codec::Mp3));
    video.into_iter().chain(audio).collect()
}

/// RFC 6381 codec names of `tracks` (`avc1.64001f,mp4a.40.2`).
pub fn codecs(tracks: &[&Track]) -> String {
    let mut out = Vec::new();
    for t in tracks {
        match t.codec {
            Codec::H264 => {
                if let Ok(cfg) = dtsc::h264::parse_avcc(&t.init) {
                    out.push(dtsc::h264::codec_string(&cfg));
                }
            }
            Codec::Aac => {
                if let Ok(asc) = dtsc::aac::parse_asc(&t.init) {
                    out.push(dtsc::aac::codec_string(&asc));
                }
            }
            Codec::Mp3 => out.push("mp4a.40.34".into()),
            Codec::Hevc => out.extend(dtsc::dash::rfc6381_codec(t)),
            _ => {}
        }
    }
    out.join(",")
}

/// The track-set path element: ids joined by `_`.
pub fn track_set(tracks: &[&Track]) -> String {
    let ids: Vec<String> = tracks.iter().map(|t| t.id.to_string()).collect();
    ids.join("_")
}

/// Parses a track-set path element; `None` if it is not ids joined by `_`.
pub fn parse_track_set(s: &str) -> Option<Vec<u32>> {
    s.split('_').map(|x| x.parse().ok()).collect()
}

/// Bits per second of the window, measured over the complete segments in it.
pub fn bandwidth(r: &StreamReader) -> u64 {
    let m = r.meta();
    let (first, count) = (m.first_key(), m.key_count());
    if count < first + 2 {
        return 2_000_000;
    }
    let (Some(a), Some(b)) = (m.key(first), m.key(count - 1)) else {
        return 2_000_000;
    };
    let bytes: u64 = (a.seq..b.seq)
        .filter_map(|s| m.packet(s))
        .map(|e| e.len as u64)
        .sum();
    let ms = b.dts.saturating_sub(a.dts).max(1);
    bytes * 8 * 1000 / ms
}

/// The master playlist: one variant with every HLS-capable track.
pub fn master(r: &StreamReader, tracks: &[Track]) -> Option<String> {
    let sel = hls_tracks(tracks);
    if sel.is_empty() {
        return None;
    }
    let video = sel.iter().find(|t| t.kind == TrackKind::Video);
    let v = Variant {
        // Peak is about 1.25 times the average for these GOP-structured streams.
        bandwidth: bandwidth(r) * 5 / 4,
        codecs: codecs(&sel),
        resolution: video.map(|t| (t.width, t.height)),
        uri: format!("{}/index.m3u8", track_set(&sel)),
    };
    let mut out = String::new();
    render_master(&[v], &mut out);
    Some(out)
}

/// One frame's duration of the main track in ms (for the length of an ended stream's last
/// segment).
fn frame_ms(tracks: &[Track]) -> u64 {
    tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video && t.fpks > 0)
        .map(|t| 1_000_000 / t.fpks as u64)
        .unwrap_or(40)
}

/// The segments currently in the window, as (key number, start seq, end seq, start DTS,
/// duration ms). The oldest segments are held back once the window has been trimmed, so a
/// player never fetches a segment that is about to leave it.
pub fn segments(r: &StreamReader, tracks: &[Track]) -> Vec<(u64, u64, u64, u64, u64)> {
    let m = r.meta();
    let ended = m.state() == shm::STATE_ENDED;
    let (first, count) = (m.first_key(), m.key_count());
    let write_seq = m.write_seq();
    let mut out = Vec::new();
    for k in first..count {
        let Some(start) = m.key(k) else { continue };
        if let Some(next) = m.key(k + 1) {
            out.push((k, start.seq, next.seq, start.dts, next.dts - start.dts));
        } else if ended && write_seq > start.seq {
            let last = (start.seq..write_seq)
                .filter_map(|s| m.packet(s))
                .map(|e| e.dts)
                .max()
                .unwrap_or(start.dts);
            out.push((
                k,
                start.seq,
                write_seq,
                start.dts,
                last - start.dts + frame_ms(tracks),
            ));
        }
    }
    // Hold back segments within two segment lengths of leaving the window (the writer drops
    // segment k once keyframe k+1 is dvr_ms old), so a player never asks for a vanished one.
    let newest = out.last().map(|s| s.3 + s.4).unwrap_or(0);
    let longest = out.iter().map(|s| s.4).max().unwrap_or(0);
    out.retain(|s| s.3 + s.4 + m.dvr_ms() > newest + 2 * longest);
    out
}

/// The media playlist of a track set.
pub fn media_playlist(r: &StreamReader, tracks: &[Track]) -> String {
    let segs = segments(r, tracks);
    let boot = r.meta().boot_ms();
    let pl = MediaPlaylist {
        target_duration_s: 0,
        media_sequence: segs.first().map(|s| s.0).unwrap_or(0),
        segments: segs
            .iter()
            .map(|&(k, _, _, _, dur)| Segment {
                msn: k,
                duration_ms: dur,
                uri: format!("{boot}_{k}.ts"),
            })
            .collect(),
        ended: r.meta().state() == shm::STATE_ENDED,
        vod: false,
    };
    let mut out = String::new();
    pl.render(&mut out);
    out
}

/// Parses a segment name `BOOT_N.ts`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ts")?;
    let (boot, key) = stem.split_once('_')?;
    Some((boot.parse().ok()?, key.parse().ok()?))
}

/// True when segment `key` is complete and in the window (a player may fetch it).
pub fn in_window(r: &StreamReader, tracks: &[Track], key: u64) -> bool {
    segments(r, tracks).iter().any(|s| s.0 == key)
}

/// Muxes segment `key` of the given tracks into `out`. `None` when the segment is not (or no
/// longer) in the window, or not complete yet.
pub fn segment(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let (_, start, end, _, _) = segments(r, tracks).into_iter().find(|s| s.0 == key)?;
    let sel: Vec<Track> = tracks
        .iter()
        .filter(|t| ids.contains(&t.id))
        .cloned()
        .collect();
    if sel.is_empty() {
        return None;
    }
    let m = r.meta();
    // The last packet of every track in this segment gets the continuity padding.
    let mut last_of: Vec<(u32, u64)> = Vec::new();
    for s in start..end {
        let e = m.packet(s)?;
        match last_of.iter_mut().find(|(t, _)| *t == e.track) {
            Some(x) => x.1 = s,
            None => last_of.push((e.track, s)),
        }
    }
    let mut mux = TsMuxer::new(&sel);
    mux.set_segment_number(key);
    // TS adds about 4 bytes per 184 of payload, a PES header per packet, and padding.
    let payload: usize = (start..end)
        .filter_map(|s| m.packet(s))
        .map(|e| e.len as usize)
        .sum();
    out.reserve(payload + payload / 16 + 64 * 188);
    mux.write_psi(out);
    for s in start..end {
        let p = r.packet(s)?;
        if !ids.contains(&p.track) {
            continue;
        }
        let last = last_of.iter().any(|&(t, ls)| t == p.track && ls == s);
        if mux.write_packet(&p, last, out).is_err() {
            continue;
        }
    }
    // The bytes came from shared memory: they were intact only if the window did not move
    // past the segment meanwhile.
    if !r.still_valid(start) {
        return None;
    }
    Some(())
}

/// A short text for logs: how many segments and how long.
pub fn describe(r: &StreamReader, tracks: &[Track]) -> String {
    let segs = segments(r, tracks);
    let mut s = String::new();
    let total: u64 = segs.iter().map(|x| x.4).sum();
    let _ = write!(s, "{} segments, {} ms", segs.len(), total);
    s
}
