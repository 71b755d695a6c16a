//! Adobe HTTP Dynamic Streaming under `/dynamic/S/`, cut from the stream's keyframe index as
//! the HLS output is ([`crate::core::window::segments`]): fragment `N + 1` holds the packets from
//! keyframe N of the main track to keyframe N+1, as FLV tags in an F4F fragment (Adobe F4V/F4F
//! File Format Specification 10.1, §1.3 and §2.11: `afra`, `moof`, `mdat`), muxed on request
//! and kept in the shared segment cache. All fragments are in segment 1.
//!
//! URLs (S = stream, T = track set, ids joined by `_`): `manifest.f4m` (F4M 1.0, the
//! `onMetaData` of the tracks in `<metadata>`), `T.abst` (the bootstrap: clients of a live
//! stream fetch it again for new fragments), `T_Seg1-FragM` (fragment M).

use dtsc::flv::{self, TagKind};
use dtsc::hds::{self, Bootstrap, BootstrapInfo, BootstrapSource, F4mManifest, F4mMedia, Fragment};
use dtsc::shm::{self, StreamReader};
use dtsc::{Track, TrackKind};

use crate::core::window;
use crate::http::hls::{self, track_set};

use crate::http::routes::{Endpoint, Route};

/// The URLs HDS serves, under `/dynamic/S/`.
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "dynamic/$/manifest.f4m",
        output: "HDS",
        endpoint: Endpoint::HdsManifest,
    },
    Route {
        pattern: "dynamic/$/*",
        output: "HDS",
        endpoint: Endpoint::HdsFile,
    },
];

/// Tracks HDS carries (as FLV tags): the first H.264 video and the first AAC or MP3 audio.
pub fn flv_tracks(tracks: &[Track]) -> Vec<&Track> {
    let (video, audio) = flv::flv_tracks(tracks);
    video.into_iter().chain(audio).collect()
}

/// The manifest (`None` when no track FLV can carry: HDS carries H.264, AAC and MP3).
pub fn manifest(stream: &str, r: &StreamReader, tracks: &[Track]) -> Option<String> {
    let sel = flv_tracks(tracks);
    if sel.is_empty() {
        return None;
    }
    let set = track_set(&sel);
    let owned: Vec<Track> = sel.iter().map(|t| (*t).clone()).collect();
    let video = sel.iter().find(|t| t.kind == TrackKind::Video);
    let ended = r.meta().state() == shm::STATE_ENDED;
    let duration: u64 = window::segments(r, tracks)
        .iter()
        .map(|s| s.duration_ms)
        .sum();
    let mut metadata = Vec::new();
    for v in flv::on_metadata(&owned, ended.then_some(duration)) {
        dtsc::amf0::encode(&v, &mut metadata);
    }
    let m = F4mManifest {
        id: stream.to_string(),
        live: !ended,
        duration_ms: ended.then_some(duration),
        bootstraps: vec![BootstrapInfo {
            id: format!("boot_{set}"),
            source: BootstrapSource::Url(format!("{set}.abst")),
        }],
        media: vec![F4mMedia {
            stream_id: set.clone(),
            url: format!("{set}_"),
            bitrate_kbps: window::bandwidth(r) / 1000,
            width: video.map_or(0, |t| t.width),
            height: video.map_or(0, |t| t.height),
            bootstrap_info_id: format!("boot_{set}"),
            metadata,
        }],
    };
    Some(m.to_xml())
}

/// Parses `T.abst` into the track set.
pub fn parse_bootstrap_name(name: &str) -> Option<Vec<u32>> {
    hls::parse_track_set(name.strip_suffix(".abst")?)
}

/// Parses `T_Seg1-FragM` into (track set, fragment number M). Only segment 1 exists.
pub fn parse_fragment_name(name: &str) -> Option<(Vec<u32>, u32)> {
    let (prefix, seg, frag) = hds::parse_fragment_url(name)?;
    let ids = hls::parse_track_set(prefix.strip_suffix('_')?)?;
    (seg == 1 && frag > 0).then_some((ids, frag))
}

/// The bootstrap (`abst`): every fragment in the window, numbered key + 1, times in ms;
/// its version is the number of keyframes seen, so it grows whenever a fragment is added.
pub fn bootstrap(stream: &str, r: &StreamReader, tracks: &[Track]) -> Vec<u8> {
    let m = r.meta();
    let ended = m.state() == shm::STATE_ENDED;
    let fragments = window::segments(r, tracks)
        .iter()
        .map(|s| Fragment {
            number: (s.key + 1) as u32,
            timestamp: s.dts,
            duration: s.duration_ms.clamp(1, u64::from(u32::MAX)) as u32,
        })
        .collect();
    Bootstrap::single_segment(m.key_count() as u32, !ended, stream, fragments).to_abst()
}

/// Size of the `afra` box with one entry, bytes.
const AFRA_LEN: usize = 12 + 1 + 4 + 4 + 16;
/// Size of the `moof` box (one `mfhd`), bytes.
const MOOF_LEN: usize = 8 + 16;

/// Muxes fragment `number` (key `number - 1`) of the tracks `ids` into `out`: `afra` (one
/// random access point: the keyframe that opens the fragment, at its byte offset), `moof`
/// with `mfhd` (sequence number = fragment number), `mdat` holding FLV tags (§E.4): the
/// sequence headers of the tracks, then every packet with its body header, timestamps the
/// packets' DTS in ms. `None` when the fragment is not (or no longer) in the window.
pub fn fragment(
    r: &StreamReader,
    tracks: &[Track],
    ids: &[u32],
    number: u32,
    out: &mut Vec<u8>,
) -> Option<()> {
    let key = u64::from(number.checked_sub(1)?);
    let seg = window::segment(r, tracks, key)?;
    let (start, end, key_dts) = (seg.start_seq, seg.end_seq, seg.dts);
    let sel: Vec<&Track> = flv_tracks(tracks)
        .into_iter()
        .filter(|t| ids.contains(&t.id))
        .collect();
    if sel.is_empty() {
        return None;
    }
    let mut mdat = Vec::new();
    let mut body = Vec::new();
    for t in &sel {
        body.clear();
        if let Some(kind) = flv::sequence_header(t, &mut body) {
            flv::write_tag(kind, key_dts as u32, &body, &mut mdat);
        }
    }
    let mut random_access = None;
    for s in start..end {
        let p = r.packet(s)?;
        let Some(t) = sel.iter().find(|t| t.id == p.track) else {
            continue;
        };
        body.clear();
        let Some(kind) = flv::media_body_header(t, &p, &mut body) else {
            continue;
        };
        let len = body.len() + p.data.len();
        if len > flv::MAX_TAG_BODY {
            continue;
        }
        if kind == TagKind::Video && p.keyframe && random_access.is_none() {
            random_access = Some((p.dts, mdat.len()));
        }
        flv::write_tag_header(kind, p.dts as u32, len, &mut mdat);
        mdat.extend_from_slice(&body);
        mdat.extend_from_slice(p.data);
        flv::write_prev_tag_size(len, &mut mdat);
    }
    if !r.still_valid(start) {
        return None;
    }
    let (ra_time, ra_at) = random_access.unwrap_or((key_dts, 0));
    let head = AFRA_LEN + MOOF_LEN + 8;
    let before = out.len();
    hds::write_afra(1000, &[(ra_time, (head + ra_at) as u64)], out);
    debug_assert_eq!(out.len() - before, AFRA_LEN);
    out.extend_from_slice(&(MOOF_LEN as u32).to_be_bytes());
    out.extend_from_slice(b"moof");
    out.extend_from_slice(&16u32.to_be_bytes());
    out.extend_from_slice(b"mfhd");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&((8 + mdat.len()) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&mdat);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_bootstrap_name("1_2.abst"), Some(vec![1, 2]));
        assert_eq!(parse_bootstrap_name("1_2.f4m"), None);
        assert_eq!(parse_fragment_name("1_2_Seg1-Frag7"), Some((vec![1, 2], 7)));
        assert_eq!(parse_fragment_name("1_Seg2-Frag7"), None);
        assert_eq!(parse_fragment_name("1_Seg1-Frag0"), None);
        assert_eq!(parse_fragment_name("x_Seg1-Frag1"), None);
    }
}
