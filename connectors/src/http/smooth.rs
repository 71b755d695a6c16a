//! Microsoft Smooth Streaming under `/cmaf/S/` (MS-SSTR), cut from the same keyframe index as
//! the HLS and DASH outputs: fragment N of a track holds its packets from keyframe N of the
//! main track to keyframe N+1 (the DASH timeline, [`crate::http::cmaf::dash_timeline`]), muxed on
//! request as a PIFF movie fragment with `tfxd` and `tfrf` by `dtsc::mp4`, timed
//! in the manifest's 10 MHz time scale.
//!
//! URLs (S = stream): `Manifest` (the client manifest, `dtsc::smooth`), and
//! `BOOT/QualityLevels(BITRATE)/Fragments(NAME=TIME)` (BOOT: the buffer's boot time, so a
//! restarted stream never reuses a fragment URL; accepted without it too) where NAME is a StreamIndex name (`video`,
//! `audio`, `video_2` for a second video track, …) and TIME the fragment's start in hns, as
//! the manifest lists it (every StreamIndex's first chunk carries `t=`, MS-SSTR §2.2.2.5).

use dtsc::mp4::FragmentBuilder;
use dtsc::shm::{self, StreamReader};
use dtsc::smooth::{self, Manifest, QualityLevel, SmoothLive, StreamIndex};
use dtsc::{Track, TrackKind};

use crate::core::window;
use crate::http::cmaf::dash_timeline;

use crate::http::routes::{Endpoint, Route};

/// The URLs Smooth Streaming serves, under `/cmaf/S/` (tried before CMAF's own).
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "cmaf/$/Manifest",
        output: "HSS",
        endpoint: Endpoint::SmoothManifest,
    },
    Route {
        pattern: "cmaf/$/QualityLevels(*/*",
        output: "HSS",
        endpoint: Endpoint::SmoothFragment,
    },
    Route {
        pattern: "cmaf/$/*/QualityLevels(*/*",
        output: "HSS",
        endpoint: Endpoint::SmoothFragmentAtBoot,
    },
];

/// How many following fragments a live fragment's `tfrf` announces at most.
const LOOKAHEAD: usize = 2;

/// The tracks Smooth Streaming carries (H.264 video and AAC audio; MS-SSTR has no HEVC or
/// MP3 FourCC that common clients take), each with its StreamIndex name: the kind, then
/// `_2`, `_3`, … for further tracks of the same kind.
pub fn smooth_tracks(tracks: &[Track]) -> Vec<(String, &Track, QualityLevel)> {
    let mut out: Vec<(String, &Track, QualityLevel)> = Vec::new();
    for t in tracks {
        let Some(q) = QualityLevel::from_track(t) else {
            continue;
        };
        let kind = match t.kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
            TrackKind::Meta => continue,
        };
        let n = out.iter().filter(|(_, o, _)| o.kind == t.kind).count();
        let name = if n == 0 {
            kind.to_string()
        } else {
            format!("{kind}_{}", n + 1)
        };
        out.push((name, t, q));
    }
    out
}

/// One StreamIndex: its name, its chunks (start, duration in hns) and its quality levels,
/// each with the track it is made of.
struct Group<'a> {
    name: String,
    kind: TrackKind,
    chunks: Vec<(u64, u64, u64)>,
    levels: Vec<(&'a Track, QualityLevel)>,
}

/// The StreamIndexes of the stream. Video tracks whose fragments start at the same times (a
/// bit rate ladder cut from one GOP structure) are the quality levels of one `video`
/// StreamIndex, with distinct bit rates (measured from the window when the track has none;
/// the bit rate names the level in fragment URLs); any other track is a StreamIndex of its
/// own ([`smooth_tracks`] names), an audio track per language.
fn groups<'a>(r: &StreamReader, tracks: &'a [Track]) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = Vec::new();
    for (name, t, mut q) in smooth_tracks(tracks) {
        if q.bitrate == 0 {
            q.bitrate = window::track_bandwidth(r, &[t.id]).unwrap_or(1).max(1);
        }
        let chunks = timeline_hns(r, tracks, t.id);
        let starts = |c: &[(u64, u64, u64)]| c.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>();
        if let Some(g) = out.iter_mut().find(|g| {
            g.kind == TrackKind::Video
                && t.kind == TrackKind::Video
                && starts(&g.chunks) == starts(&chunks)
        }) {
            while g.levels.iter().any(|(_, l)| l.bitrate == q.bitrate) {
                q.bitrate += 1;
            }
            g.levels.push((t, q));
            continue;
        }
        out.push(Group {
            name,
            kind: t.kind,
            chunks,
            levels: vec![(t, q)],
        });
    }
    out
}

/// The fragments of track `id` in the window as (key number, start hns, duration hns).
fn timeline_hns(r: &StreamReader, tracks: &[Track], id: u32) -> Vec<(u64, u64, u64)> {
    dash_timeline(r, tracks, id)
        .into_iter()
        .map(|(k, t, d)| (k, smooth::ms_to_hns(t), smooth::ms_to_hns(d)))
        .collect()
}

/// The client manifest; `None` when no track can be carried. Live (`IsLive`, a DVR window as
/// long as the stream's) until the stream ends, then a presentation with a `Duration`.
pub fn manifest(r: &StreamReader, tracks: &[Track]) -> Option<String> {
    let groups = groups(r, tracks);
    if groups.is_empty() {
        return None;
    }
    let m = r.meta();
    let ended = m.state() == shm::STATE_ENDED;
    let mut streams = Vec::new();
    let mut duration = 0;
    for g in groups {
        let chunks: Vec<(u64, u64)> = g.chunks.iter().map(|&(_, s, d)| (s, d)).collect();
        if let (Some(f), Some(l)) = (chunks.first(), chunks.last()) {
            duration = duration.max(l.0 + l.1 - f.0);
        }
        let lang = g.levels[0].0.lang.clone();
        streams.push(StreamIndex {
            kind: g.kind,
            name: g.name,
            language: lang.filter(|l| !l.is_empty() && l != "und"),
            quality_levels: g.levels.into_iter().map(|(_, q)| q).collect(),
            chunks,
        });
    }
    let manifest = Manifest {
        duration: if ended { duration } else { 0 },
        live: (!ended).then(|| SmoothLive {
            look_ahead_fragment_count: LOOKAHEAD as u32,
            dvr_window_length: smooth::ms_to_hns(m.dvr_ms()),
        }),
        streams,
        // The buffer's boot time in every fragment URL: a restarted stream never reuses one.
        url_prefix: format!("{}/", m.boot_ms()),
    };
    Some(manifest.to_xml())
}

/// Parses a fragment path element pair `QualityLevels(B)` + `Fragments(NAME=T)` into
/// (bitrate, name, time in hns).
pub fn parse_fragment(levels: &str, fragments: &str) -> Option<(u64, String, u64)> {
    smooth::parse_fragment_url(&format!("{levels}/{fragments}"))
}

/// Which track and segment the fragment of StreamIndex `name` at `bitrate` starting at `t`
/// hns is, as (track id, key number); `None` when there is no such fragment in the window.
/// A StreamIndex with one quality level takes any bitrate (URLs of an earlier manifest).
pub fn locate(
    r: &StreamReader,
    tracks: &[Track],
    name: &str,
    bitrate: u64,
    t: u64,
) -> Option<(u32, u64)> {
    let groups = groups(r, tracks);
    let g = groups.iter().find(|g| g.name == name)?;
    let track = match g.levels.as_slice() {
        [(only, _)] => *only,
        levels => levels.iter().find(|(_, q)| q.bitrate == bitrate)?.0,
    };
    let key = timeline_hns(r, tracks, track.id)
        .into_iter()
        .find(|x| x.1 == t)?
        .0;
    Some((track.id, key))
}

/// Muxes fragment `key` of track `id` (see [`locate`]) into `out`: `moof` (`mfhd` sequence
/// number `key + 1`, one `traf` with `tfxd` and a `tfrf` announcing up to two following
/// fragments already in the window, none after an ended stream's last) and `mdat`. `None` when the fragment is not
/// (or no longer) in the window.
pub fn fragment(
    r: &StreamReader,
    tracks: &[Track],
    id: u32,
    key: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let track = tracks.iter().find(|t| t.id == id)?;
    let segs = window::segments(r, tracks);
    let i = segs.iter().position(|s| s.key == key)?;
    let (start, end) = segs.get(i).map(|s| (s.start_seq, s.end_seq))?;
    // Every fragment is track_ID 1: a client switching quality levels (or building one moov
    // from the manifest, as mssdemux and dash.js do) sees one track.
    let mut one = track.clone();
    one.id = 1;
    let mut fb = FragmentBuilder::with_timescale(std::slice::from_ref(&one), 10_000_000).ok()?;
    for s in start..end {
        let mut p = r.packet(s)?;
        if p.track == id {
            p.track = 1;
            fb.add(&p).ok()?;
        }
    }
    if fb.is_empty() {
        return None;
    }
    if let Some(next) = segs.get(i + 1) {
        if let Some(d) = (next.start_seq..next.end_seq)
            .filter_map(|s| r.meta().packet(s))
            .find(|e| e.track == id)
            .map(|e| e.dts)
        {
            let _ = fb.set_end_dts(1, d);
        }
    }
    // Every fragment carries a `tfrf`, an ended stream's too (empty after its last
    // fragment): a client that loaded the manifest while the stream was live stays in live
    // mode, and mssdemux fails a live fragment without one, keeps its `moof` parsed, and
    // aborts on the next (`parser->moof == NULL`). Players of a stored stream ignore it.
    let next: Vec<(u64, u64)> = timeline_hns(r, tracks, id)
        .into_iter()
        .filter(|x| x.0 > key)
        .take(LOOKAHEAD)
        .map(|(_, s, d)| (s, d))
        .collect();
    fb.finish_smooth((key + 1) as u32, Some(&next[..]), out)
        .ok()?;
    r.still_valid(start).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::Codec;

    #[test]
    fn names_are_unique_per_kind_and_fragment_urls_parse() {
        // x264 High profile SPS for 640x360, and a PPS.
        const SPS: &[u8] = &[
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        let cfg = dtsc::h264::AvcConfig::from_parameter_sets(SPS, PPS).unwrap();
        dtsc::h264::write_avcc(&cfg, &mut v.init).unwrap();
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.init = vec![0x12, 0x10];
        a.rate = 44_100;
        a.channels = 2;
        let mut a2 = a.clone();
        a2.id = 3;
        let mp3 = Track::new(4, TrackKind::Audio, Codec::Mp3);
        let tracks = [v, a, a2, mp3];
        let names: Vec<String> = smooth_tracks(&tracks)
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names, ["video", "audio", "audio_2"]);
        assert_eq!(
            parse_fragment("QualityLevels(128000)", "Fragments(audio_2=20000000)"),
            Some((128_000, "audio_2".to_string(), 20_000_000))
        );
        assert_eq!(parse_fragment("QualityLevels(x)", "Fragments(a=1)"), None);
    }
}
