//! MPEG-DASH media presentation descriptions (ISO/IEC 23009-1, "the MPD"), written as text
//! from a description of the segments the server holds. Pure functions: the caller passes
//! wall-clock times (Unix ms) and segment times; nothing here reads a clock.
//!
//! The MPD uses the ISO BMFF live profile (`urn:mpeg:dash:profile:isoff-live:2011`,
//! ISO/IEC 23009-1 §8.4): one Period, one AdaptationSet per track kind (and language), one
//! Representation per track, each with a `SegmentTemplate` (§5.3.9.4) whose `media` template
//! uses `$Time$` and whose `SegmentTimeline` (§5.3.9.6) lists the segments with runs of
//! equal, contiguous segments compressed into `r` repeat counts.
//!
//! Also here, because every manifest writer needs them: [`format_duration_ms`] (ISO 8601
//! durations, `xs:duration`), [`format_datetime`] (UTC `xs:dateTime` from Unix ms, no
//! calendar library needed) and [`rfc6381_codec`] (the `codecs` value for a [`Track`]).

use std::fmt::Write as _;

use crate::model::{Codec, Track, TrackKind};
use crate::{aac, h264};

/// Appends `s` with the five XML special characters escaped (for attribute values and text).
/// Control characters other than tab are dropped, since XML 1.0 cannot carry them.
pub(crate) fn push_xml_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
}

/// Formats a duration in ms as an ISO 8601 duration (`xs:duration`, ISO/IEC 23009-1 §5.3.1.2
/// uses it for `mediaPresentationDuration`, `minBufferTime` and the like): `PT0S` for zero,
/// else hours, minutes and seconds with zero parts left out and the seconds' fraction written
/// without trailing zeros, for example `PT2S`, `PT1.5S`, `PT1H1M1.001S`, `PT10M`.
pub fn format_duration_ms(ms: u64) -> String {
    let mut out = String::from("PT");
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    if h > 0 {
        let _ = write!(out, "{h}H");
    }
    if m > 0 {
        let _ = write!(out, "{m}M");
    }
    if rest > 0 || ms == 0 {
        let _ = write!(out, "{s}");
        push_ms_fraction(&mut out, frac, false);
        out.push('S');
    }
    out
}

/// Appends `.f`, `.ff` or `.fff` for `frac` ms (trailing zeros dropped unless `fixed`);
/// nothing for 0 unless `fixed`.
fn push_ms_fraction(out: &mut String, frac: u64, fixed: bool) {
    if fixed {
        let _ = write!(out, ".{frac:03}");
    } else if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Splits days since 1970-01-01 into a proleptic Gregorian (year, month 1..=12, day 1..=31).
///
/// Shifts the calendar to start on 1 March so the leap day ends a year, then counts whole
/// 400-year eras (146097 days), years in the era (365 days each plus the leap days before
/// them) and months of the shifted year (the 153-days-per-5-months pattern of Mar..Jul and
/// Aug..Dec).
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `unix_ms` as a UTC `xs:dateTime`; see [`format_datetime`]. With `fixed_ms` the
/// milliseconds are always written (as HLS `EXT-X-PROGRAM-DATE-TIME` examples do).
pub(crate) fn push_datetime(out: &mut String, unix_ms: u64, fixed_ms: bool) {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    push_ms_fraction(out, unix_ms % 1000, fixed_ms);
    out.push('Z');
}

/// Formats Unix time in ms as a UTC date and time (`xs:dateTime`, ISO 8601 extended format,
/// as ISO/IEC 23009-1 §5.3.1.2 uses for `availabilityStartTime` and `publishTime`):
/// `1970-01-01T00:00:00Z` for 0, with a fraction of a second only when there is one, for
/// example `2024-02-29T12:34:56.5Z`. Proleptic Gregorian calendar, no leap seconds.
pub fn format_datetime(unix_ms: u64) -> String {
    let mut out = String::new();
    push_datetime(&mut out, unix_ms, false);
    out
}

/// The RFC 6381 §3.3 `codecs` value for `track`, from its init data where the codec needs it:
/// `avc1.PPCCLL` for H.264 (from the avcC), `hvc1.…` for HEVC (from the hvcC, ISO/IEC
/// 14496-15 Annex E.3), `mp4a.40.N` for AAC (from the AudioSpecificConfig, or AAC LC when
/// there is none), `mp4a.40.34` for MP3, `opus`, `ac-3`, `ec-3`; `None` when the init data is
/// missing or unreadable or the codec is not known here.
pub fn rfc6381_codec(track: &Track) -> Option<String> {
    match &track.codec {
        Codec::H264 => h264::parse_avcc(&track.init)
            .ok()
            .map(|cfg| h264::codec_string(&cfg)),
        Codec::Hevc => hevc_codec_string(&track.init),
        Codec::Aac => {
            let asc = if track.init.is_empty() {
                aac::AudioSpecificConfig::lc(track.rate, track.channels.min(255) as u8)
            } else {
                aac::parse_asc(&track.init).ok()?
            };
            Some(aac::codec_string(&asc))
        }
        Codec::Mp3 => Some("mp4a.40.34".into()),
        Codec::Alaw | Codec::Ulaw => None,
        Codec::Other(name) => match name.as_str() {
            "opus" => Some("opus".into()),
            "AC3" => Some("ac-3".into()),
            "EAC3" => Some("ec-3".into()),
            _ => None,
        },
    }
}

/// `hvc1.<space><profile>.<compat>.<tier><level>[.<constraint bytes>]` from an hvcC record
/// (ISO/IEC 14496-15 §8.3.3.1 for the fields, Annex E.3 for the string): the profile space
/// as `A`/`B`/`C` or nothing, the 32 compatibility flags bit-reversed in hex, `L` or `H` and
/// the level, then the six constraint bytes in hex with trailing zero bytes left out.
fn hevc_codec_string(hvcc: &[u8]) -> Option<String> {
    let b = hvcc.get(..13)?;
    let space = ["", "A", "B", "C"][usize::from(b[1] >> 6)];
    let tier = if b[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = b[1] & 0x1f;
    let compat = u32::from_be_bytes([b[2], b[3], b[4], b[5]]).reverse_bits();
    let mut s = format!("hvc1.{space}{profile}.{compat:X}.{tier}{}", b[12]);
    let constraints = &b[6..12];
    let used = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in &constraints[..used] {
        let _ = write!(s, ".{c:X}");
    }
    Some(s)
}

/// The live timing of a `type="dynamic"` MPD (ISO/IEC 23009-1 §5.3.1.2, Table 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTiming {
    /// `availabilityStartTime`, Unix ms: the wall-clock time of media time 0 of the Period
    /// (a segment with `t` in the timeline is available once `availabilityStartTime + (t −
    /// presentationTimeOffset)/timescale + d/timescale` has passed, §5.3.9.5.3).
    pub availability_start_ms: u64,
    /// `publishTime`, Unix ms: when this MPD was generated (normally "now").
    pub publish_ms: u64,
    /// `minimumUpdatePeriod` in ms: how long the client may wait before fetching the MPD
    /// again (usually one segment duration).
    pub minimum_update_period_ms: u64,
    /// `timeShiftBufferDepth` in ms: how far behind the live edge segments stay available.
    pub time_shift_buffer_depth_ms: u64,
    /// `suggestedPresentationDelay` in ms: how far behind the live edge clients should play.
    pub suggested_presentation_delay_ms: u64,
    /// Writes `<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="<publishTime>"/>`
    /// (§5.8.5.7) so clients sync their clock to the server's without a time server.
    pub utc_timing: bool,
}

/// Whether the presentation is live or on demand (`MPD@type`, ISO/IEC 23009-1 §5.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    /// `type="dynamic"`: segments appear and expire; see [`LiveTiming`].
    Live(LiveTiming),
    /// `type="static"` with `mediaPresentationDuration` in ms.
    Vod {
        /// Total duration in ms.
        duration_ms: u64,
    },
}

/// A `SegmentTemplate` with a `SegmentTimeline` (ISO/IEC 23009-1 §5.3.9.4, §5.3.9.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentTemplate {
    /// `timescale`: units per second of `timeline` and `presentation_time_offset`.
    pub timescale: u32,
    /// `initialization` template, for example `init_$RepresentationID$.mp4` (§5.3.9.4.4;
    /// written XML-escaped, otherwise as given).
    pub initialization: String,
    /// `media` template, for example `chunk_$RepresentationID$_$Time$.m4s`; it should use
    /// `$Time$` since the timeline gives times, not numbers.
    pub media: String,
    /// `presentationTimeOffset` (§5.3.9.2), in `timescale` units; written when not 0.
    pub presentation_time_offset: u64,
    /// The segments as `(start, duration)` in `timescale` units, in order. Written as
    /// `<S t= d= r=>` elements: a run of segments with equal duration each starting where
    /// the previous ends becomes one `S` with `r` = run length − 1; `t` is written on the
    /// first `S` and wherever a segment does not start where the previous one ended.
    pub timeline: Vec<(u64, u64)>,
}

/// One Representation (ISO/IEC 23009-1 §5.3.5): one track, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Representation {
    /// `id`, also what `$RepresentationID$` expands to. Keep it to URL-safe characters.
    pub id: String,
    /// Which AdaptationSet the representation goes into (with `lang`).
    pub kind: TrackKind,
    /// RFC 6381 `codecs`, for example `avc1.64001f`; omitted when empty.
    pub codecs: String,
    /// `bandwidth` in bits per second (required by §5.3.5.2; `Track::bps` is bytes/s).
    pub bandwidth: u64,
    /// Video `width` and `height` in pixels; written when both are non-zero.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Video frame rate in frames per 1000 s (as `Track::fpks`); `frameRate` is written as
    /// an integer when whole, else as `fpks/1000`; omitted when 0.
    pub fpks: u32,
    /// Audio `audioSamplingRate` in Hz; omitted when 0.
    pub sample_rate: u32,
    /// Audio channel count for `AudioChannelConfiguration` (scheme
    /// `urn:mpeg:dash:23003:3:audio_channel_configuration:2011`, §5.8.4.7); omitted when 0.
    pub channels: u32,
    /// Language (RFC 5646 / ISO 639-2) written as `AdaptationSet@lang`.
    pub lang: Option<String>,
    /// How the segments are addressed.
    pub segments: SegmentTemplate,
}

impl Representation {
    /// A representation for `track` with id `track.id`, codecs from [`rfc6381_codec`] (empty
    /// when unknown), bandwidth `8 × max(maxbps, bps)` and the track's picture, frame-rate,
    /// sample-rate, channel and language values.
    pub fn from_track(track: &Track, segments: SegmentTemplate) -> Representation {
        let video = track.kind == TrackKind::Video;
        let audio = track.kind == TrackKind::Audio;
        Representation {
            id: track.id.to_string(),
            kind: track.kind,
            codecs: rfc6381_codec(track).unwrap_or_default(),
            bandwidth: 8 * u64::from(track.maxbps.max(track.bps)),
            width: if video { track.width } else { 0 },
            height: if video { track.height } else { 0 },
            fpks: if video { track.fpks } else { 0 },
            sample_rate: if audio { track.rate } else { 0 },
            channels: if audio { track.channels } else { 0 },
            lang: track.lang.clone().filter(|l| !l.is_empty() && l != "und"),
            segments,
        }
    }
}

/// A whole MPD: one Period starting at 0 holding every representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mpd {
    /// Live or on demand.
    pub presentation: Presentation,
    /// `minBufferTime` in ms (§5.3.1.2, required): usually one or two segment durations.
    pub min_buffer_time_ms: u64,
    /// The representations; AdaptationSets are formed by grouping them by `(kind, lang)`
    /// in order of first appearance.
    pub representations: Vec<Representation>,
}

/// Appends `name="value"` with the value XML-escaped.
fn attr(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, " {name}=\"");
    push_xml_escaped(out, value);
    out.push('"');
}

/// Appends the `<S>` elements of `timeline` with runs compressed (§5.3.9.6.1, Table 22).
fn render_timeline(out: &mut String, timeline: &[(u64, u64)], indent: &str) {
    let mut i = 0;
    let mut expected_start: Option<u64> = None;
    while i < timeline.len() {
        let (t, d) = timeline[i];
        let mut end = t.saturating_add(d);
        let mut repeats = 0u64;
        while let Some(&(nt, nd)) = timeline.get(i + 1 + repeats as usize) {
            if nt != end || nd != d {
                break;
            }
            end = end.saturating_add(d);
            repeats += 1;
        }
        let _ = write!(out, "{indent}<S");
        if expected_start != Some(t) {
            let _ = write!(out, " t=\"{t}\"");
        }
        let _ = write!(out, " d=\"{d}\"");
        if repeats > 0 {
            let _ = write!(out, " r=\"{repeats}\"");
        }
        out.push_str("/>\n");
        expected_start = Some(end);
        i += 1 + repeats as usize;
    }
}

/// The `mimeType` and `contentType` (§5.3.3.2) of an AdaptationSet of `kind`.
fn kind_types(kind: TrackKind) -> (&'static str, Option<&'static str>) {
    match kind {
        TrackKind::Video => ("video/mp4", Some("video")),
        TrackKind::Audio => ("audio/mp4", Some("audio")),
        TrackKind::Meta => ("application/mp4", None),
    }
}

fn render_representation(out: &mut String, rep: &Representation) {
    out.push_str("      <Representation");
    attr(out, "id", &rep.id);
    if !rep.codecs.is_empty() {
        attr(out, "codecs", &rep.codecs);
    }
    let _ = write!(out, " bandwidth=\"{}\"", rep.bandwidth);
    if rep.width > 0 && rep.height > 0 {
        let _ = write!(out, " width=\"{}\" height=\"{}\"", rep.width, rep.height);
    }
    if rep.fpks > 0 {
        if rep.fpks.is_multiple_of(1000) {
            let _ = write!(out, " frameRate=\"{}\"", rep.fpks / 1000);
        } else {
            let _ = write!(out, " frameRate=\"{}/1000\"", rep.fpks);
        }
    }
    if rep.sample_rate > 0 {
        let _ = write!(out, " audioSamplingRate=\"{}\"", rep.sample_rate);
    }
    out.push_str(">\n");
    if rep.channels > 0 {
        let _ = writeln!(
            out,
            "        <AudioChannelConfiguration \
             schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" \
             value=\"{}\"/>",
            rep.channels
        );
    }
    let st = &rep.segments;
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{}\"",
        st.timescale
    );
    if st.presentation_time_offset != 0 {
        let _ = write!(
            out,
            " presentationTimeOffset=\"{}\"",
            st.presentation_time_offset
        );
    }
    attr(out, "initialization", &st.initialization);
    attr(out, "media", &st.media);
    out.push_str(">\n          <SegmentTimeline>\n");
    render_timeline(out, &st.timeline, "            ");
    out.push_str(
        "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n",
    );
}

impl Mpd {
    /// Appends the MPD document to `out` (UTF-8, lines end in `\n`, two-space indent):
    /// the XML declaration, `<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"
    /// profiles="urn:mpeg:dash:profile:isoff-live:2011" type=…>` with the timing attributes
    /// of §5.3.1.2, one `<Period id="0" start="PT0S">`, the AdaptationSets (§5.3.3: `id`,
    /// `contentType`, `mimeType`, `lang`, `segmentAlignment="true"`, `startWithSAP="1"`) with
    /// their Representations, and for live with `utc_timing` a `UTCTiming` element.
    pub fn render(&self, out: &mut String) {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
             profiles=\"urn:mpeg:dash:profile:isoff-live:2011\"",
        );
        match &self.presentation {
            Presentation::Live(live) => {
                out.push_str(" type=\"dynamic\" availabilityStartTime=\"");
                push_datetime(out, live.availability_start_ms, false);
                out.push_str("\" publishTime=\"");
                push_datetime(out, live.publish_ms, false);
                let _ = write!(
                    out,
                    "\" minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" \
                     suggestedPresentationDelay=\"{}\"",
                    format_duration_ms(live.minimum_update_period_ms),
                    format_duration_ms(live.time_shift_buffer_depth_ms),
                    format_duration_ms(live.suggested_presentation_delay_ms)
                );
            }
            Presentation::Vod { duration_ms } => {
                let _ = write!(
                    out,
                    " type=\"static\" mediaPresentationDuration=\"{}\"",
                    format_duration_ms(*duration_ms)
                );
            }
        }
        let _ = writeln!(
            out,
            " minBufferTime=\"{}\">",
            format_duration_ms(self.min_buffer_time_ms)
        );
        out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");

        let mut groups: Vec<(TrackKind, Option<&str>)> = Vec::new();
        for rep in &self.representations {
            let key = (rep.kind, rep.lang.as_deref());
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        for (set_id, &(kind, lang)) in groups.iter().enumerate() {
            let (mime, content) = kind_types(kind);
            let _ = write!(out, "    <AdaptationSet id=\"{set_id}\"");
            if let Some(content) = content {
                let _ = write!(out, " contentType=\"{content}\"");
            }
            let _ = write!(out, " mimeType=\"{mime}\"");
            if let Some(lang) = lang {
                attr(out, "lang", lang);
            }
            out.push_str(" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
            for rep in &self.representations {
                if rep.kind == kind && rep.lang.as_deref() == lang {
                    render_representation(out, rep);
                }
            }
            out.push_str("    </AdaptationSet>\n");
        }
        out.push_str("  </Period>\n");
        if let Presentation::Live(live) = &self.presentation {
            if live.utc_timing {
                out.push_str("  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"");
                push_datetime(out, live.publish_ms, false);
                out.push_str("\"/>\n");
            }
        }
        out.push_str("</MPD>\n");
    }

    /// The rendered MPD as a new `String`.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            (0, "PT0S"),
            (1, "PT0.001S"),
            (10, "PT0.01S"),
            (1500, "PT1.5S"),
            (2000, "PT2S"),
            (60_000, "PT1M"),
            (600_000, "PT10M"),
            (3_600_000, "PT1H"),
            (3_661_001, "PT1H1M1.001S"),
            (3_600_120, "PT1H0.12S"),
            (90_061_000, "PT25H1M1S"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_duration_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn datetimes() {
        // Expected values checked with `date -u -d @<seconds>`.
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (999, "1970-01-01T00:00:00.999Z"),
            (86_399_000, "1970-01-01T23:59:59Z"),
            (68_169_600_000, "1972-02-29T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (951_868_800_000, "2000-03-01T00:00:00Z"),
            (1_709_210_096_500, "2024-02-29T12:34:56.5Z"),
            (1_735_689_599_000, "2024-12-31T23:59:59Z"),
            (1_735_689_600_000, "2025-01-01T00:00:00Z"),
            (4_107_456_000_000, "2100-02-28T00:00:00Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
            (253_402_300_799_000, "9999-12-31T23:59:59Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_datetime(ms), want, "{ms}");
        }
        let mut fixed = String::new();
        push_datetime(&mut fixed, 1_000, true);
        assert_eq!(fixed, "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn datetime_days_are_consecutive() {
        // Walk 1970..2500 day by day: every day follows the previous one in the calendar.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..(530 * 366) {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let leap = py % 4 == 0 && (py % 100 != 0 || py % 400 == 0);
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][pm as usize - 1];
            let want = if pd < month_len {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), want, "day {days}");
            prev = (y, m, d);
        }
    }

    #[test]
    fn codec_strings() {
        let mut t = Track::new(1, TrackKind::Video, Codec::H264);
        assert_eq!(rfc6381_codec(&t), None);
        t.init = vec![
            1, 0x4d, 0x40, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x4d, 0x40, 0x1e, 1, 0, 1, 0x68,
        ];
        assert_eq!(rfc6381_codec(&t).as_deref(), Some("avc1.4d401e"));
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.rate = 48_000;
        a.channels = 2;
        assert_eq!(rfc6381_codec(&a).as_deref(), Some("mp4a.40.2"));
        a.init = vec![0x2b, 0x92, 0x08, 0x00]; // HE-AAC (object type 5) 24 kHz → 48 kHz
        assert_eq!(rfc6381_codec(&a).as_deref(), Some("mp4a.40.5"));
        // hvcC: Main profile, compat flags 0x60000000, no constraint bytes set beyond the
        // first (0x90), level 93 (3.1).
        let hvcc = [
            1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93, 0xf0, 0, 0xfc,
        ];
        let mut h = Track::new(3, TrackKind::Video, Codec::Hevc);
        h.init = hvcc.to_vec();
        assert_eq!(rfc6381_codec(&h).as_deref(), Some("hvc1.1.6.L93.90"));
    }

    fn video_template(timeline: Vec<(u64, u64)>) -> SegmentTemplate {
        SegmentTemplate {
            timescale: 1000,
            initialization: "init_$RepresentationID$.mp4".into(),
            media: "chunk_$RepresentationID$_$Time$.m4s".into(),
            presentation_time_offset: 0,
            timeline,
        }
    }

    #[test]
    fn live_mpd_with_compressed_timeline() {
        let mut video = Track::new(1, TrackKind::Video, Codec::H264);
        video.init = vec![
            1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee,
        ];
        video.width = 1280;
        video.height = 720;
        video.fpks = 25_000;
        video.bps = 250_000;
        let mut audio = Track::new(2, TrackKind::Audio, Codec::Aac);
        audio.init = vec![0x11, 0x90];
        audio.rate = 48_000;
        audio.channels = 2;
        audio.bps = 16_000;
        audio.lang = Some("eng".into());
        let mpd = Mpd {
            presentation: Presentation::Live(LiveTiming {
                availability_start_ms: 1_700_000_000_000,
                publish_ms: 1_700_000_012_345,
                minimum_update_period_ms: 2000,
                time_shift_buffer_depth_ms: 30_000,
                suggested_presentation_delay_ms: 6000,
                utc_timing: true,
            }),
            min_buffer_time_ms: 4000,
            representations: vec![
                Representation::from_track(
                    &video,
                    video_template(vec![(4000, 2000), (6000, 2000), (8000, 1960)]),
                ),
                Representation::from_track(
                    &audio,
                    SegmentTemplate {
                        timescale: 48_000,
                        presentation_time_offset: 0,
                        timeline: vec![(192_000, 96_000), (290_048, 96_000), (386_048, 96_000)],
                        ..video_template(vec![])
                    },
                ),
            ],
        };
        assert_eq!(
            mpd.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="2023-11-14T22:13:20Z" publishTime="2023-11-14T22:13:32.345Z" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT30S" suggestedPresentationDelay="PT6S" minBufferTime="PT4S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="1" codecs="avc1.64001f" bandwidth="2000000" width="1280" height="720" frameRate="25">
        <SegmentTemplate timescale="1000" initialization="init_$RepresentationID$.mp4" media="chunk_$RepresentationID$_$Time$.m4s">
          <SegmentTimeline>
            <S t="4000" d="2000" r="1"/>
            <S d="1960"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="eng" segmentAlignment="true" startWithSAP="1">
      <Representation id="2" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SegmentTemplate timescale="48000" initialization="init_$RepresentationID$.mp4" media="chunk_$RepresentationID$_$Time$.m4s">
          <SegmentTimeline>
            <S t="192000" d="96000"/>
            <S t="290048" d="96000" r="1"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="2023-11-14T22:13:32.345Z"/>
</MPD>
"#
        );
    }

    #[test]
    fn vod_mpd() {
        let rep = Representation {
            id: "v&1".into(),
            kind: TrackKind::Video,
            codecs: "avc1.42c01e".into(),
            bandwidth: 800_000,
            width: 640,
            height: 360,
            fpks: 29_970,
            sample_rate: 0,
            channels: 0,
            lang: None,
            segments: SegmentTemplate {
                presentation_time_offset: 90,
                ..video_template(vec![(0, 4000), (4000, 4000), (8000, 4000), (12_000, 1500)])
            },
        };
        let mpd = Mpd {
            presentation: Presentation::Vod {
                duration_ms: 13_500,
            },
            min_buffer_time_ms: 1500,
            representations: vec![rep],
        };
        assert_eq!(
            mpd.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT13.5S" minBufferTime="PT1.5S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="v&amp;1" codecs="avc1.42c01e" bandwidth="800000" width="640" height="360" frameRate="29970/1000">
        <SegmentTemplate timescale="1000" presentationTimeOffset="90" initialization="init_$RepresentationID$.mp4" media="chunk_$RepresentationID$_$Time$.m4s">
          <SegmentTimeline>
            <S t="0" d="4000" r="2"/>
            <S d="1500"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#
        );
    }

    #[test]
    fn timeline_runs_and_gaps() {
        let mut out = String::new();
        render_timeline(&mut out, &[], "");
        assert_eq!(out, "");
        render_timeline(
            &mut out,
            &[
                (10, 5),
                (15, 5),
                (20, 5),
                (30, 5),
                (35, 6),
                (41, 6),
                (40, 6),
            ],
            "",
        );
        assert_eq!(
            out,
            "<S t=\"10\" d=\"5\" r=\"2\"/>\n<S t=\"30\" d=\"5\"/>\n<S d=\"6\" r=\"1\"/>\n\
             <S t=\"40\" d=\"6\"/>\n"
        );
    }
}
