//! `hls`: RFC 8216 rules checked on a media playlist as it is reloaded and on its segments,
//! sans-IO: [`MediaChecker`] takes each playlist text with the time it was fetched and each
//! segment's bytes, and keeps the report; the HTTP loop is in [`crate::live`]. Playlists are
//! read by `dtsc::hls::parse_playlist`, MPEG-TS segments by this crate's TS walk (over
//! `dtsc::tsdemux`), fMP4 segments by `dtsc::mp4demux::Fragmented` against the `EXT-X-MAP`.
//!
//! Rules checked, each violation naming its section:
//! * §4.3.3.1 `EXT-X-TARGETDURATION`: each `EXTINF` duration, rounded to the nearest
//!   integer, is at most the target duration (which must be present and not change).
//! * §6.2.1 / §6.3.2: across reloads a segment keeps its media sequence number, the media
//!   sequence never decreases, and segments are only removed from the start.
//! * §6.2.2 / §4.3.3.3 `EXT-X-DISCONTINUITY-SEQUENCE`: it grows by the number of
//!   `EXT-X-DISCONTINUITY` tags removed with their segments.
//! * §4.3.3.4 `EXT-X-ENDLIST`: once it is there, the playlist does not change.
//! * §6.2.1 reload timing: a live playlist changes within 1.5 × the target duration (as seen
//!   by reloads at the intervals of §6.3.4).
//! * §3.2: a TS segment carries its program's PAT and PMT.
//! * §4.3.5.1 independent segments: each segment starts with a keyframe (a video IDR/IRAP
//!   access unit first in its video track), checked for TS and fMP4 segments.

use bytes::Bytes;
use dtsc::hls::{parse_playlist, Parsed, ReadPlaylist};
use serde::Serialize;

use crate::report::{ReadError, Violation};

/// One load of the playlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reload {
    /// When it was fetched, ms since the first fetch.
    pub at_ms: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// Segments listed.
    pub segments: usize,
    /// True when it differs from the previous load.
    pub changed: bool,
    /// `EXT-X-ENDLIST` present.
    pub ended: bool,
}

/// One segment fetched and read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentCheck {
    /// Media sequence number.
    pub msn: u64,
    /// URI as listed.
    pub uri: String,
    /// `EXTINF` duration, ms.
    pub duration_ms: u64,
    /// Bytes fetched.
    pub bytes: usize,
    /// `ts` or `fmp4`.
    pub container: &'static str,
    /// Video access units read.
    pub video_frames: usize,
    /// Audio access units read.
    pub audio_frames: usize,
    /// The first video access unit is a keyframe (absent: no video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_with_keyframe: Option<bool>,
    /// DTS of the first access unit, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_dts_ms: Option<u64>,
}

/// The report on one media playlist.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaReport {
    /// The playlist's URL.
    pub url: String,
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration_s: u64,
    /// `EXT-X-PLAYLIST-TYPE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playlist_type: Option<String>,
    /// `EXT-X-MAP` URI (fMP4 segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_uri: Option<String>,
    /// `EXT-X-ENDLIST` seen.
    pub ended: bool,
    /// Every load.
    pub reloads: Vec<Reload>,
    /// Every segment fetched.
    pub segments: Vec<SegmentCheck>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Why checking stopped early (a fetch or parse failure).
    pub error: Option<ReadError>,
}

/// The report of the `hls` kind: a master playlist's variants (or one media playlist).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HlsReport {
    /// The URL given.
    pub url: String,
    /// A master playlist's variants: (BANDWIDTH, URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<(u64, String)>>,
    /// Each media playlist checked.
    pub media: Vec<MediaReport>,
    /// Every media playlist's violations, together.
    pub violations: Vec<Violation>,
    /// The first error of any media playlist.
    pub error: Option<ReadError>,
}

const R_TARGET: &str = "RFC 8216 §4.3.3.1 EXT-X-TARGETDURATION (EXTINF rounded <= target)";
const R_MSN: &str = "RFC 8216 §6.2.1/§6.3.2 media sequence continuity across reloads";
const R_DISC: &str = "RFC 8216 §6.2.2/§4.3.3.3 EXT-X-DISCONTINUITY-SEQUENCE";
const R_END: &str = "RFC 8216 §4.3.3.4 EXT-X-ENDLIST (no change after it)";
const R_RELOAD: &str = "RFC 8216 §6.2.1 live playlist changes within 1.5 x target duration";
const R_PSI: &str = "RFC 8216 §3.2 (a TS segment carries a PAT and a PMT)";
const R_KEY: &str = "RFC 8216 §4.3.5.1 independent segments (a segment starts with a keyframe)";

/// Checks one media playlist across reloads and its segments (sans-IO). See the module docs.
#[derive(Debug, Default)]
pub struct MediaChecker {
    report: MediaReport,
    last: Option<ReadPlaylist>,
    last_text: String,
    last_change_ms: u64,
    stall_reported: bool,
    init: Option<dtsc::mp4demux::Fragmented>,
}

impl MediaChecker {
    /// A checker for the playlist at `url`.
    pub fn new(url: &str) -> MediaChecker {
        MediaChecker {
            report: MediaReport {
                url: url.to_string(),
                ..MediaReport::default()
            },
            ..MediaChecker::default()
        }
    }

    /// Takes one load of the playlist, fetched at `now_ms` (ms since the first); checks it
    /// against the previous one. Returns the playlist, or `None` when it does not parse or
    /// is a master playlist (then the report's error says so).
    pub fn playlist(&mut self, text: &str, now_ms: u64) -> Option<ReadPlaylist> {
        let pl = match parse_playlist(text) {
            Ok(Parsed::Media(m)) => m,
            Ok(Parsed::Master(_)) => {
                self.fail("a master playlist where a media playlist belongs");
                return None;
            }
            Err(e) => {
                self.fail(&format!("playlist: {e}"));
                return None;
            }
        };
        let changed = self.last.is_none() || text != self.last_text;
        let r = &mut self.report;
        r.reloads.push(Reload {
            at_ms: now_ms,
            media_sequence: pl.media_sequence,
            segments: pl.segments.len(),
            changed,
            ended: pl.ended,
        });
        r.playlist_type = pl.playlist_type.clone();
        r.map_uri = pl.map_uri.clone();
        let target = pl.target_duration_s;
        if self.last.is_none() {
            r.target_duration_s = target;
            if target == 0 {
                r.violations
                    .push(Violation::new(R_TARGET, "no EXT-X-TARGETDURATION"));
            }
        } else if target != r.target_duration_s {
            r.violations.push(Violation::new(
                R_TARGET,
                format!(
                    "target duration changed from {} s to {target} s",
                    r.target_duration_s
                ),
            ));
        }
        // §4.3.3.1: each new segment's EXTINF, rounded, within the target.
        let seen_upto = self
            .last
            .as_ref()
            .and_then(|l| l.segments.last())
            .map(|s| s.0);
        for (msn, ms, uri) in &pl.segments {
            if seen_upto.is_some_and(|u| *msn <= u) {
                continue;
            }
            let rounded = (ms + 500) / 1000;
            if target > 0 && rounded > target {
                r.violations.push(Violation::new(
                    R_TARGET,
                    format!("segment {msn} ({uri}): EXTINF {:.3} s rounds to {rounded} s > target {target} s", *ms as f64 / 1000.0),
                ));
            }
        }
        if let Some(last) = &self.last {
            if last.ended && changed {
                r.violations.push(Violation::new(
                    R_END,
                    "the playlist changed after EXT-X-ENDLIST",
                ));
            }
            if pl.media_sequence < last.media_sequence {
                r.violations.push(Violation::new(
                    R_MSN,
                    format!(
                        "media sequence went back from {} to {}",
                        last.media_sequence, pl.media_sequence
                    ),
                ));
            }
            // A segment listed in both keeps its number.
            let mut moved = false;
            for (msn, _, uri) in &pl.segments {
                if let Some((old, _, _)) = last.segments.iter().find(|s| &s.2 == uri) {
                    if old != msn && !moved {
                        r.violations.push(Violation::new(
                            R_MSN,
                            format!("segment {uri} was number {old}, now {msn}"),
                        ));
                        moved = true;
                    }
                }
            }
            // Segments are removed only from the start: the old ones still numbered in the new
            // playlist's range are there, with the same URI.
            for (msn, _, uri) in &last.segments {
                if *msn >= pl.media_sequence {
                    if let Some((_, _, now)) = pl.segments.iter().find(|s| s.0 == *msn) {
                        if now != uri && !moved {
                            r.violations.push(Violation::new(
                                R_MSN,
                                format!("segment {msn} was {uri}, now {now}"),
                            ));
                            moved = true;
                        }
                    }
                }
            }
            // §6.2.2: removed discontinuity tags raise the discontinuity sequence.
            let removed = last
                .discontinuities
                .iter()
                .filter(|&&d| d < pl.media_sequence && d >= last.media_sequence)
                .count() as u64;
            if pl.discontinuity_sequence != last.discontinuity_sequence.saturating_add(removed) {
                r.violations.push(Violation::new(
                    R_DISC,
                    format!(
                        "discontinuity sequence {} after {} with {removed} EXT-X-DISCONTINUITY removed",
                        pl.discontinuity_sequence, last.discontinuity_sequence
                    ),
                ));
            }
        }
        if changed {
            self.last_change_ms = now_ms;
            self.stall_reported = false;
        } else if !pl.ended && !self.stall_reported {
            // Reloads come every half target when nothing changes (§6.3.4): allow for that.
            // (A hostile target duration saturates rather than overflow.)
            let allowed = target.saturating_mul(2000).saturating_add(500);
            let unchanged = now_ms.saturating_sub(self.last_change_ms);
            if unchanged > allowed {
                r.violations.push(Violation::new(
                    R_RELOAD,
                    format!("unchanged for {unchanged} ms (target duration {target} s)"),
                ));
                self.stall_reported = true;
            }
        }
        r.ended = pl.ended;
        self.last = Some(pl.clone());
        self.last_text = text.to_string();
        Some(pl)
    }

    /// When to reload next, ms after the load just taken (RFC 8216 §6.3.4): the target
    /// duration after a load that changed the playlist, half of it after one that did not.
    pub fn reload_after_ms(&self) -> u64 {
        let t = self.report.target_duration_s.clamp(1, 60) * 1000;
        match self.report.reloads.last() {
            Some(r) if !r.changed => t / 2,
            _ => t,
        }
    }

    /// Takes the `EXT-X-MAP` init segment for the fMP4 segments that follow.
    pub fn init_segment(&mut self, bytes: &[u8]) {
        match dtsc::mp4demux::Fragmented::read_init(bytes) {
            Ok(f) => self.init = Some(f),
            Err(e) => self.fail(&format!("EXT-X-MAP init segment: {e}")),
        }
    }

    /// Takes a segment's bytes: reads its access units and checks that it starts with a
    /// keyframe.
    pub fn segment(&mut self, msn: u64, uri: &str, duration_ms: u64, bytes: &[u8]) {
        let fmp4 = self.report.map_uri.is_some();
        let mut check = SegmentCheck {
            msn,
            uri: uri.to_string(),
            duration_ms,
            bytes: bytes.len(),
            container: if fmp4 { "fmp4" } else { "ts" },
            video_frames: 0,
            audio_frames: 0,
            starts_with_keyframe: None,
            first_dts_ms: None,
        };
        if fmp4 {
            let Some(init) = &self.init else {
                self.report.segments.push(check);
                return;
            };
            let mut out = Vec::new();
            if let Err(e) = init.read_segment(&Bytes::copy_from_slice(bytes), &mut out) {
                self.report.violations.push(Violation::new(
                    R_KEY,
                    format!("segment {msn} ({uri}) unreadable: {e}"),
                ));
            }
            let video: Vec<u32> = init
                .tracks
                .iter()
                .filter(|t| t.kind == dtsc::TrackKind::Video)
                .map(|t| t.id)
                .collect();
            for p in &out {
                if video.contains(&p.track) {
                    if check.video_frames == 0 {
                        check.starts_with_keyframe = Some(p.keyframe);
                    }
                    check.video_frames += 1;
                } else {
                    check.audio_frames += 1;
                }
            }
            check.first_dts_ms = out.iter().map(|p| p.dts).min();
        } else {
            let r = crate::ts::analyse(bytes, None);
            let video: Vec<u32> = r
                .tracks
                .iter()
                .filter(|t| t.kind == "video")
                .map(|t| t.id)
                .collect();
            // The first video PES must be the first video access unit (the demuxer drops
            // access units before the parameter sets) and a keyframe.
            let vpids: Vec<u16> = r
                .pmt
                .iter()
                .flat_map(|p| p.streams.iter())
                .filter(|s| matches!(s.stream_type, 0x1B | 0x24))
                .map(|s| s.pid)
                .collect();
            let first_vpes = r
                .pes
                .iter()
                .find(|p| vpids.contains(&p.pid))
                .map(|p| p.offset);
            for au in &r.access_units {
                if video.contains(&au.track) {
                    if check.video_frames == 0 {
                        check.starts_with_keyframe = Some(au.keyframe && au.offset == first_vpes);
                    }
                    check.video_frames += 1;
                } else {
                    check.audio_frames += 1;
                }
            }
            if r.pmt.is_empty() {
                self.report.violations.push(Violation::new(
                    R_PSI,
                    format!("segment {msn} ({uri}) has no PMT"),
                ));
            }
            if check.video_frames == 0 && first_vpes.is_some() {
                check.starts_with_keyframe = Some(false);
            }
            check.first_dts_ms = r.access_units.iter().map(|a| a.dts_ms).min();
            if let Some(e) = r.error {
                self.report.violations.push(Violation::at(
                    "ISO/IEC 13818-1 §2.4.3.2 (whole TS packets)",
                    e.offset,
                    format!("segment {msn} ({uri}): {}", e.message),
                ));
            }
        }
        if check.starts_with_keyframe == Some(false) {
            self.report.violations.push(Violation::new(
                R_KEY,
                format!("segment {msn} ({uri}) does not start with a keyframe"),
            ));
        }
        self.report.segments.push(check);
    }

    /// Records why checking stopped (a fetch failed, the playlist did not parse).
    pub fn fail(&mut self, message: &str) {
        if self.report.error.is_none() {
            self.report.error = Some(ReadError::at(0, message));
        }
    }

    /// The report so far.
    pub fn report(&self) -> &MediaReport {
        &self.report
    }

    /// Ends checking.
    pub fn finish(self) -> MediaReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pl(seq: u64, disc_seq: u64, segs: &[(&str, f64, bool)], ended: bool) -> String {
        let mut s = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:{seq}\n#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}\n");
        for (uri, d, disc) in segs {
            if *disc {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            s.push_str(&format!("#EXTINF:{d:.3},\n{uri}\n"));
        }
        if ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }

    fn rules(c: &MediaChecker) -> Vec<&str> {
        c.report()
            .violations
            .iter()
            .map(|v| v.rule.as_str())
            .collect()
    }

    #[test]
    fn a_good_live_playlist_passes() {
        let mut c = MediaChecker::new("http://h/x.m3u8");
        c.playlist(
            &pl(
                10,
                0,
                &[
                    ("a.ts", 4.0, false),
                    ("b.ts", 4.4, false),
                    ("c.ts", 3.9, true),
                ],
                false,
            ),
            0,
        );
        assert_eq!(c.reload_after_ms(), 4000);
        c.playlist(
            &pl(
                10,
                0,
                &[
                    ("a.ts", 4.0, false),
                    ("b.ts", 4.4, false),
                    ("c.ts", 3.9, true),
                ],
                false,
            ),
            4000,
        );
        assert_eq!(c.reload_after_ms(), 2000);
        c.playlist(
            &pl(
                11,
                0,
                &[
                    ("b.ts", 4.4, false),
                    ("c.ts", 3.9, true),
                    ("d.ts", 4.0, false),
                ],
                false,
            ),
            6000,
        );
        // The discontinuity before c.ts leaves: the sequence goes up by one.
        c.playlist(
            &pl(13, 1, &[("d.ts", 4.0, false), ("e.ts", 4.0, false)], false),
            10000,
        );
        c.playlist(
            &pl(13, 1, &[("d.ts", 4.0, false), ("e.ts", 4.0, false)], true),
            14000,
        );
        assert!(rules(&c).is_empty(), "{:?}", c.report().violations);
        assert_eq!(c.report().reloads.len(), 5);
        assert!(c.report().ended);
    }

    #[test]
    fn broken_playlists_name_the_rule() {
        let mut c = MediaChecker::new("u");
        c.playlist(&pl(0, 0, &[("a.ts", 4.6, false)], false), 0);
        assert_eq!(rules(&c), vec![R_TARGET]);
        let mut c = MediaChecker::new("u");
        c.playlist(
            &pl(5, 0, &[("a.ts", 4.0, false), ("b.ts", 4.0, false)], false),
            0,
        );
        c.playlist(
            &pl(9, 0, &[("b.ts", 4.0, false), ("c.ts", 4.0, false)], false),
            4000,
        );
        assert_eq!(rules(&c), vec![R_MSN]);
        let mut c = MediaChecker::new("u");
        c.playlist(
            &pl(5, 0, &[("a.ts", 4.0, true), ("b.ts", 4.0, false)], false),
            0,
        );
        c.playlist(&pl(6, 0, &[("b.ts", 4.0, false)], false), 4000);
        assert_eq!(rules(&c), vec![R_DISC]);
        let mut c = MediaChecker::new("u");
        c.playlist(&pl(5, 0, &[("a.ts", 4.0, false)], true), 0);
        c.playlist(
            &pl(5, 0, &[("a.ts", 4.0, false), ("b.ts", 4.0, false)], true),
            4000,
        );
        assert_eq!(rules(&c), vec![R_END]);
        let mut c = MediaChecker::new("u");
        for i in 0..6 {
            c.playlist(&pl(5, 0, &[("a.ts", 4.0, false)], false), i * 2000);
        }
        assert_eq!(rules(&c), vec![R_RELOAD]);
        let mut c = MediaChecker::new("u");
        assert!(c.playlist("<html>", 0).is_none());
        assert!(c.report().error.is_some());
    }

    #[test]
    fn segments_must_start_with_a_keyframe() {
        let mut c = MediaChecker::new("u");
        c.playlist(&pl(0, 0, &[("a.ts", 4.0, false)], true), 0);
        c.segment(0, "a.ts", 4000, b"");
        assert_eq!(rules(&c), vec![R_PSI]);
        assert_eq!(c.report().segments[0].starts_with_keyframe, None);
    }

    #[test]
    fn a_huge_target_duration_does_not_overflow_the_reload_rule() {
        // Found by the hls_checker fuzz target: target × 2000 ms overflowed.
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:18446744073709551615\n#EXTINF:1,\na.ts\n";
        let mut c = MediaChecker::new("u");
        c.playlist(text, 0);
        c.playlist(text, u64::MAX);
        assert!(!rules(&c).contains(&R_RELOAD));
    }

    proptest! {
        #[test]
        fn never_panics(texts in proptest::collection::vec("(#EXT[-A-Z:0-9,.]{0,30}\n|[a-z.]{1,5}\n){0,12}", 1..4), seg in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut c = MediaChecker::new("u");
            for (i, t) in texts.iter().enumerate() {
                let _ = c.playlist(&format!("#EXTM3U\n{t}"), i as u64 * 1000);
                let _ = c.reload_after_ms();
            }
            c.segment(0, "x", 0, &seg);
            c.init_segment(&seg);
            c.segment(1, "y", 0, &seg);
        }
    }
}
