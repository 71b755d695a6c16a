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

use dtsc::hls::{
    render_master, render_master_with_media, AudioRendition, MediaPlaylist, Segment, Variant,
    VariantStream,
};
use dtsc::shm::{self, StreamReader};

use crate::core::window;
use dtsc::ts::TsMuxer;
use dtsc::{Codec, Track, TrackKind};

use crate::http::routes::{Endpoint, Route};

/// The URLs HLS with TS segments serves (see the module docs).
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "hls/$/index.m3u8",
        output: "HLS",
        endpoint: Endpoint::HlsMaster,
    },
    Route {
        pattern: "hls/$/*/index.m3u8",
        output: "HLS",
        endpoint: Endpoint::HlsMedia,
    },
    Route {
        pattern: "hls/$/*/*.ts",
        output: "HLS",
        endpoint: Endpoint::HlsSegment,
    },
];

/// Tracks HLS with TS segments can carry, in stream order: every H.264 or HEVC (stream type
/// 0x24) video track and every AAC or MP3 audio track.
pub fn hls_tracks(tracks: &[Track]) -> Vec<&Track> {
    tracks
        .iter()
        .filter(|t| match t.kind {
            TrackKind::Video => matches!(t.codec, Codec::H264 | Codec::Hevc),
            TrackKind::Audio => matches!(t.codec, Codec::Aac | Codec::Mp3),
            TrackKind::Meta => false,
        })
        .collect()
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

/// The canonical form of the track set `ids` for a stream whose track ids are `present`: the
/// ids that are present, sorted, each once, and the path element naming them ([`track_set`]'s
/// form: decimal ids joined by `_`). `None` when no id is present. The muxers keep tracks in
/// stream order whatever the order of the set, so `1_2`, `2_1`, `01_2`, `+1_2_2` and `1_2_99`
/// all mux the same bytes; segment cache names are made from this form so that they are
/// stored once.
pub fn canonical_track_set(ids: &[u32], present: &[u32]) -> Option<(Vec<u32>, String)> {
    let mut v: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|i| present.contains(i))
        .collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return None;
    }
    let name = v.iter().map(u32::to_string).collect::<Vec<_>>().join("_");
    Some((v, name))
}

/// The master playlist of the tracks `sel` (those one format carries), each track's codec
/// named by `codec`:
/// * at most one audio track: one variant per video track, each with that audio muxed in
///   (track set `V_A`), or one audio-only variant;
/// * several audio tracks: each an `#EXT-X-MEDIA` audio rendition (group `audio`, named by
///   its language, the first the default) with its own playlist, and one video-only variant
///   per video track that refers to the group (RFC 8216 §4.3.4.1.1), or, without video, one
///   audio-only variant per audio track.
///
/// `BANDWIDTH` is 1.25 × the measured bit rate of the variant's tracks (and of the largest
/// rendition), the peak of these GOP-structured streams. `None` when `sel` is empty.
pub fn master_playlist(
    r: &StreamReader,
    sel: &[&Track],
    codec: impl Fn(&Track) -> Option<String>,
) -> Option<String> {
    if sel.is_empty() {
        return None;
    }
    let peak = |ids: &[u32]| window::track_bandwidth(r, ids).unwrap_or(0) * 5 / 4;
    let of_kind =
        |k: TrackKind| -> Vec<&Track> { sel.iter().copied().filter(|t| t.kind == k).collect() };
    let (videos, audios) = (of_kind(TrackKind::Video), of_kind(TrackKind::Audio));
    let variant = |ts: &[&Track], bandwidth: u64| {
        let mut names: Vec<String> = Vec::new();
        for n in ts.iter().filter_map(|t| codec(t)) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        Variant {
            bandwidth: bandwidth.max(1),
            codecs: names.join(","),
            resolution: ts
                .iter()
                .find(|t| t.kind == TrackKind::Video)
                .map(|t| (t.width, t.height)),
            uri: format!("{}/index.m3u8", track_set(ts)),
        }
    };
    let mut out = String::new();
    if audios.len() <= 1 || videos.is_empty() {
        let mut variants = Vec::new();
        for v in &videos {
            let ts: Vec<&Track> = std::iter::once(*v).chain(audios.iter().copied()).collect();
            let ids: Vec<u32> = ts.iter().map(|t| t.id).collect();
            variants.push(variant(&ts, peak(&ids)));
        }
        for a in audios.iter().filter(|_| videos.is_empty()) {
            variants.push(variant(&[*a], peak(&[a.id])));
        }
        render_master(&variants, &mut out);
        return Some(out);
    }
    let mut renditions: Vec<AudioRendition> = Vec::new();
    for (i, a) in audios.iter().enumerate() {
        let lang = a.lang.clone().filter(|l| !l.is_empty() && l != "und");
        let mut name = lang.clone().unwrap_or_else(|| format!("audio {}", i + 1));
        if renditions.iter().any(|r| r.name == name) {
            name = format!("{name} {}", a.id);
        }
        renditions.push(AudioRendition {
            group_id: "audio".into(),
            name,
            language: lang,
            default: i == 0,
            autoselect: true,
            channels: a.channels,
            uri: format!("{}/index.m3u8", a.id),
        });
    }
    let loudest = audios.iter().map(|a| peak(&[a.id])).max().unwrap_or(0);
    let variants: Vec<VariantStream> = videos
        .iter()
        .map(|v| {
            let with_audio: Vec<&Track> =
                std::iter::once(*v).chain(audios.iter().copied()).collect();
            let mut vs = variant(&with_audio, peak(&[v.id]) + loudest);
            vs.uri = format!("{}/index.m3u8", v.id);
            VariantStream {
                variant: vs,
                audio_group: Some("audio".into()),
            }
        })
        .collect();
    render_master_with_media(&renditions, &variants, &mut out);
    Some(out)
}

/// The master playlist of the TS outputs: [`master_playlist`] of [`hls_tracks`].
pub fn master(r: &StreamReader, tracks: &[Track]) -> Option<String> {
    master_playlist(r, &hls_tracks(tracks), |t| {
        Some(codecs(&[t])).filter(|c| !c.is_empty())
    })
}

/// The media playlist of a track set.
pub fn media_playlist(r: &StreamReader, tracks: &[Track]) -> String {
    let segs = window::segments(r, tracks);
    let boot = r.meta().boot_ms();
    let pl = MediaPlaylist {
        target_duration_s: 0,
        media_sequence: segs.first().map(|s| s.key).unwrap_or(0),
        segments: segs
            .iter()
            .map(|s| Segment {
                msn: s.key,
                duration_ms: s.duration_ms,
                uri: format!("{boot}_{}.ts", s.key),
            })
            .collect(),
        ended: r.meta().state() == shm::STATE_ENDED,
        vod: false,
        event: r.meta().flags() & shm::FLAG_EVENT != 0,
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

/// Muxes segment `key` of the given tracks into `out`. `None` when the segment is not (or no
/// longer) in the window, or not complete yet.
pub fn segment(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    key: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let seg = window::segment(r, tracks, key)?;
    let (start, end) = (seg.start_seq, seg.end_seq);
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
    let segs = window::segments(r, tracks);
    let mut s = String::new();
    let total: u64 = segs.iter().map(|x| x.duration_ms).sum();
    let _ = write!(s, "{} segments, {} ms", segs.len(), total);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_sets_have_one_canonical_name() {
        let present = [1, 2, 3];
        let canon = |s: &str| {
            parse_track_set(s).and_then(|ids| canonical_track_set(&ids, &present).map(|x| x.1))
        };
        for s in ["1", "01", "+1", "1_1", "001_+1_1", "1_99"] {
            assert_eq!(canon(s).as_deref(), Some("1"), "{s}");
        }
        for s in ["1_2", "2_1", "02_1", "2_1_2_1", "1_2_7"] {
            assert_eq!(canon(s).as_deref(), Some("1_2"), "{s}");
        }
        assert_eq!(canon("9"), None, "no track of the set is in the stream");
        assert_eq!(canon("1__2"), None, "not a track set");
        assert_eq!(canon("-1"), None);
        // What the server itself writes in its playlists is already canonical.
        let tracks = [
            Track::new(1, dtsc::TrackKind::Video, dtsc::Codec::H264),
            Track::new(3, dtsc::TrackKind::Audio, dtsc::Codec::Aac),
        ];
        let set = track_set(&tracks.iter().collect::<Vec<_>>());
        assert_eq!(canon(&set), Some(set));
    }
}
