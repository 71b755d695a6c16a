//! HLS playlists (RFC 8216): media playlists listing MPEG-TS segments ([`MediaPlaylist`])
//! and master playlists listing variants ([`render_master`]). Pure text rendering into a
//! caller-supplied `String`.
//!
//! For CMAF (fragmented MP4) output there is also [`Fmp4Playlist`], a media playlist with
//! `#EXT-X-MAP` that can carry the Low-Latency HLS tags of RFC 8216bis (partial segments,
//! blocking reloads, preload hints; [`parse_blocking_request`] reads the `_HLS_msn` and
//! `_HLS_part` query values), and [`render_master_with_media`], a master playlist that lists
//! separate audio renditions with `#EXT-X-MEDIA`.
//!
//! URIs are written as given except that CR and LF are dropped, so a hostile stream name
//! cannot inject playlist lines; callers percent-encode URIs themselves.
//!
//! The reading side, for the HLS pull input: [`parse_playlist`] reads a master playlist's
//! variants or a media playlist's segments ([`Parsed`]), and [`resolve_uri`] makes a URI in
//! a playlist absolute.

use std::fmt::Write as _;

/// One media segment of a media playlist (RFC 8216 §3, §4.3.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number of this segment (RFC 8216 §3).
    pub msn: u64,
    /// Duration in ms, written as the `#EXTINF` duration in seconds with 3 decimals.
    pub duration_ms: u64,
    /// URI of the segment, relative to the playlist or absolute.
    pub uri: String,
}

/// A media playlist (RFC 8216 §4.3.3, §4.3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// Minimum `#EXT-X-TARGETDURATION` in seconds; the rendered value is the larger of this
    /// and the longest segment rounded up to whole seconds (see [`MediaPlaylist::target_duration`]).
    /// Keep it constant for a live stream (RFC 8216 §6.2.1).
    pub target_duration_s: u64,
    /// `#EXT-X-MEDIA-SEQUENCE`: the msn of the first segment listed (RFC 8216 §4.3.3.2).
    pub media_sequence: u64,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// True when no more segments will be added: writes `#EXT-X-ENDLIST` (§4.3.3.4).
    pub ended: bool,
    /// True for video on demand: writes `#EXT-X-PLAYLIST-TYPE:VOD` (§4.3.3.5) and, since a
    /// VOD playlist cannot change, also `#EXT-X-ENDLIST`.
    pub vod: bool,
    /// True for an event: `#EXT-X-PLAYLIST-TYPE:EVENT` (§4.3.3.5): segments are only ever
    /// added, the first one stays (the stream's window keeps it).
    pub event: bool,
}

/// Appends `s` minus any CR/LF characters.
fn push_line_safe(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|&c| c != '\r' && c != '\n'));
}

impl MediaPlaylist {
    /// The `#EXT-X-TARGETDURATION` value in seconds: the largest of `target_duration_s` and
    /// every segment duration rounded up to a whole second, so every `#EXTINF` rounded to the
    /// nearest integer is at most this value (RFC 8216 §4.3.3.1).
    pub fn target_duration(&self) -> u64 {
        // RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest integer must not exceed it.
        // Rounding up instead would move the value (and every player's reload period) as
        // soon as a segment runs a few ms long, which §6.2.1 forbids.
        self.segments
            .iter()
            .map(|s| (s.duration_ms + 500) / 1000)
            .fold(self.target_duration_s.max(1), u64::max)
    }

    /// Appends the playlist text to `out` (lines end in `\n`):
    /// `#EXTM3U`, `#EXT-X-VERSION:3`, `#EXT-X-TARGETDURATION:<s>`,
    /// `#EXT-X-MEDIA-SEQUENCE:<n>`, `#EXT-X-PLAYLIST-TYPE:VOD` when `vod` (`EVENT` when
    /// `event`), then per segment
    /// `#EXTINF:<s.mmm>,` and its URI, and `#EXT-X-ENDLIST` when `ended` or `vod`.
    /// Version 3 is the first that allows decimal `#EXTINF` durations (RFC 8216 §7).
    pub fn render(&self, out: &mut String) {
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration());
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.vod {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        } else if self.event {
            out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
        }
        for seg in &self.segments {
            let _ = writeln!(
                out,
                "#EXTINF:{}.{:03},",
                seg.duration_ms / 1000,
                seg.duration_ms % 1000
            );
            push_line_safe(out, &seg.uri);
            out.push('\n');
        }
        if self.ended || self.vod {
            out.push_str("#EXT-X-ENDLIST\n");
        }
    }
}

/// One variant stream of a master playlist (RFC 8216 §4.3.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Peak bit rate in bits per second (`BANDWIDTH`; note `Track::bps` is bytes per second).
    pub bandwidth: u64,
    /// RFC 6381 codec list, comma separated, for example `avc1.64001f,mp4a.40.2`
    /// (`CODECS`; omitted when empty; double quotes are dropped).
    pub codecs: String,
    /// Width and height in pixels (`RESOLUTION`), `None` for audio-only variants.
    pub resolution: Option<(u32, u32)>,
    /// URI of the variant's media playlist.
    pub uri: String,
}

/// Appends a master playlist listing `variants` to `out`: `#EXTM3U`, `#EXT-X-VERSION:3`,
/// then per variant `#EXT-X-STREAM-INF:BANDWIDTH=<bps>[,CODECS="…"][,RESOLUTION=WxH]` and
/// its URI (RFC 8216 §4.3.4.2).
pub fn render_master(variants: &[Variant], out: &mut String) {
    out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if !v.codecs.is_empty() {
            out.push_str(",CODECS=\"");
            out.extend(
                v.codecs
                    .chars()
                    .filter(|&c| c != '"' && c != '\r' && c != '\n'),
            );
            out.push('"');
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        out.push('\n');
        push_line_safe(out, &v.uri);
        out.push('\n');
    }
}

/// Appends `s` minus CR, LF and double quotes, for a quoted-string attribute value
/// (RFC 8216 §4.2: a quoted-string cannot contain `"`, CR or LF).
fn push_quoted_safe(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|&c| c != '\r' && c != '\n' && c != '"'));
}

/// Appends a duration in ms as decimal seconds with 3 decimals (`2.000`, `0.333`).
fn push_seconds(out: &mut String, ms: u64) {
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

/// One partial segment of a Low-Latency HLS playlist (`#EXT-X-PART`, RFC 8216bis
/// §4.4.4.9): a run of samples of the segment being built, addressable on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Duration in ms (`DURATION`, at most the playlist's part target).
    pub duration_ms: u64,
    /// URI of the part (`URI`); double quotes, CR and LF are dropped.
    pub uri: String,
    /// True when the part starts with an independent frame (a keyframe): writes
    /// `INDEPENDENT=YES`.
    pub independent: bool,
}

/// One complete media segment of an fMP4 playlist (RFC 8216 §3.3, §4.3.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmp4Segment {
    /// Media sequence number (RFC 8216 §3).
    pub msn: u64,
    /// Duration in ms, written as `#EXTINF` seconds with 3 decimals.
    pub duration_ms: u64,
    /// URI of the segment (a CMAF fragment, `moof` + `mdat`).
    pub uri: String,
    /// The partial segments this segment was published as, in order (LL-HLS only; ignored
    /// without [`Fmp4Playlist::low_latency`]). See [`Fmp4Playlist::render`] for which
    /// segments list them.
    pub parts: Vec<Part>,
    /// Wall-clock time (Unix ms) of the segment's first sample: writes
    /// `#EXT-X-PROGRAM-DATE-TIME` (RFC 8216bis §4.4.4.6) before the segment.
    pub program_date_time_ms: Option<u64>,
}

/// A rendition report (`#EXT-X-RENDITION-REPORT`, RFC 8216bis §4.4.5.4): where another
/// rendition of the same presentation is, so an LL-HLS client can switch without waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// URI of the other rendition's media playlist, relative to this one.
    pub uri: String,
    /// `LAST-MSN`: the msn of the last segment (or partial segment) in that playlist.
    pub last_msn: u64,
    /// `LAST-PART`: index of its last partial segment, when it has parts.
    pub last_part: Option<u64>,
}

/// The Low-Latency HLS part of an [`Fmp4Playlist`] (RFC 8216bis §4.4.3.7, §4.4.3.8,
/// §4.4.5.3, §6.2.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowLatency {
    /// `#EXT-X-PART-INF:PART-TARGET` in ms: the part target duration. Every part must be at
    /// most this long and the value must not change during the stream.
    pub part_target_ms: u64,
    /// `PART-HOLD-BACK` in ms of `#EXT-X-SERVER-CONTROL`; `None` writes three times the part
    /// target (the spec's recommended value; it must be at least two).
    pub part_hold_back_ms: Option<u64>,
    /// Parts of the segment being built (msn = last listed msn + 1), in order: written as
    /// `#EXT-X-PART` lines after the last complete segment.
    pub pending_parts: Vec<Part>,
    /// URI of the next part, not yet complete: writes
    /// `#EXT-X-PRELOAD-HINT:TYPE=PART,URI="…"` (§4.4.5.3) unless the playlist has ended.
    /// The server answers a request for it once the part is complete (blocking).
    pub preload_hint: Option<String>,
    /// Reports for the other renditions, written last.
    pub rendition_reports: Vec<RenditionReport>,
}

/// A media playlist of fragmented-MP4 segments (CMAF), optionally Low-Latency HLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmp4Playlist {
    /// Minimum `#EXT-X-TARGETDURATION` in seconds, as [`MediaPlaylist::target_duration_s`].
    pub target_duration_s: u64,
    /// `#EXT-X-MEDIA-SEQUENCE`: the msn of the first segment listed.
    pub media_sequence: u64,
    /// URI of the initialization segment (`ftyp` + `moov`): `#EXT-X-MAP:URI="…"`
    /// (RFC 8216bis §4.4.4.5).
    pub map_uri: String,
    /// The complete segments, in order.
    pub segments: Vec<Fmp4Segment>,
    /// True when no more segments will be added: writes `#EXT-X-ENDLIST`.
    pub ended: bool,
    /// True for video on demand: `#EXT-X-PLAYLIST-TYPE:VOD` and `#EXT-X-ENDLIST`.
    pub vod: bool,
    /// True for an event: `#EXT-X-PLAYLIST-TYPE:EVENT` (RFC 8216 §4.3.3.5).
    pub event: bool,
    /// Low-Latency HLS tags; `None` for a plain fMP4 playlist.
    pub low_latency: Option<LowLatency>,
}

impl Fmp4Playlist {
    /// The `#EXT-X-TARGETDURATION` value in seconds: the largest of `target_duration_s` and
    /// every segment duration rounded up to a whole second (RFC 8216 §4.3.3.1).
    pub fn target_duration(&self) -> u64 {
        // RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest integer must not exceed it.
        // Rounding up instead would move the value (and every player's reload period) as
        // soon as a segment runs a few ms long, which §6.2.1 forbids.
        self.segments
            .iter()
            .map(|s| (s.duration_ms + 500) / 1000)
            .fold(self.target_duration_s.max(1), u64::max)
    }

    /// Appends the playlist text to `out` (lines end in `\n`), in this order:
    ///
    /// `#EXTM3U`, `#EXT-X-VERSION:6` (the lowest version allowing `#EXT-X-MAP` in a playlist
    /// that is not I-frames only, RFC 8216 §7; the LL-HLS tags need no higher one),
    /// `#EXT-X-TARGETDURATION`, with `low_latency`
    /// `#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=<s>` and
    /// `#EXT-X-PART-INF:PART-TARGET=<s>`, `#EXT-X-MEDIA-SEQUENCE`,
    /// `#EXT-X-PLAYLIST-TYPE:VOD` when `vod` (`EVENT` when `event`), `#EXT-X-MAP:URI="<map_uri>"`;
    /// then per segment
    /// its `#EXT-X-PROGRAM-DATE-TIME`, its `#EXT-X-PART` lines, `#EXTINF:<s>,` and URI; then
    /// the pending parts, the preload hint, the rendition reports and `#EXT-X-ENDLIST`.
    ///
    /// A segment's parts are listed only while the segment starts less than three target
    /// durations before the end of the playlist (the end of the last pending part): RFC
    /// 8216bis §6.2.2 lets a server drop older parts, and listing them all would make the
    /// playlist grow with every part.
    pub fn render(&self, out: &mut String) {
        let target = self.target_duration();
        out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let ll = self.low_latency.as_ref();
        if let Some(ll) = ll {
            out.push_str("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=");
            push_seconds(
                out,
                ll.part_hold_back_ms
                    .unwrap_or(ll.part_target_ms.saturating_mul(3)),
            );
            out.push_str("\n#EXT-X-PART-INF:PART-TARGET=");
            push_seconds(out, ll.part_target_ms);
            out.push('\n');
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.vod {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        } else if self.event {
            out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
        }
        out.push_str("#EXT-X-MAP:URI=\"");
        push_quoted_safe(out, &self.map_uri);
        out.push_str("\"\n");

        // Start of each segment relative to the first, and the end of the playlist, in ms.
        let pending_ms: u64 =
            ll.map_or(0, |ll| ll.pending_parts.iter().map(|p| p.duration_ms).sum());
        let total_ms = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .sum::<u64>()
            .saturating_add(pending_ms);
        let parts_window_ms = target.saturating_mul(3000);
        let mut start_ms = 0u64;
        for seg in &self.segments {
            if let Some(pdt) = seg.program_date_time_ms {
                out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
                crate::dash::push_datetime(out, pdt, true);
                out.push('\n');
            }
            if ll.is_some() && total_ms.saturating_sub(start_ms) < parts_window_ms {
                for part in &seg.parts {
                    push_part(out, part);
                }
            }
            out.push_str("#EXTINF:");
            push_seconds(out, seg.duration_ms);
            out.push_str(",\n");
            push_line_safe(out, &seg.uri);
            out.push('\n');
            start_ms = start_ms.saturating_add(seg.duration_ms);
        }
        let ended = self.ended || self.vod;
        if let Some(ll) = ll {
            for part in &ll.pending_parts {
                push_part(out, part);
            }
            if let (Some(hint), false) = (&ll.preload_hint, ended) {
                out.push_str("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"");
                push_quoted_safe(out, hint);
                out.push_str("\"\n");
            }
            for report in &ll.rendition_reports {
                out.push_str("#EXT-X-RENDITION-REPORT:URI=\"");
                push_quoted_safe(out, &report.uri);
                let _ = write!(out, "\",LAST-MSN={}", report.last_msn);
                if let Some(part) = report.last_part {
                    let _ = write!(out, ",LAST-PART={part}");
                }
                out.push('\n');
            }
        }
        if ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
    }
}

/// Appends `#EXT-X-PART:DURATION=<s>,URI="…"[,INDEPENDENT=YES]` (RFC 8216bis §4.4.4.9).
fn push_part(out: &mut String, part: &Part) {
    out.push_str("#EXT-X-PART:DURATION=");
    push_seconds(out, part.duration_ms);
    out.push_str(",URI=\"");
    push_quoted_safe(out, &part.uri);
    out.push('"');
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

/// Reads the blocking playlist reload query of RFC 8216bis §6.2.5.2 from a URL query string
/// (without the `?`): `_HLS_msn=<M>` and optionally `_HLS_part=<N>`, both decimal integers.
///
/// Returns `Some((msn, part))` for a blocking request, `None` when there is no `_HLS_msn`
/// or the request is invalid: a value that is not a decimal integer (up to `u64`), a
/// repeated parameter, or `_HLS_part` without `_HLS_msn` (the spec has the server answer
/// these with 400 Bad Request; the caller can tell the cases apart by checking whether
/// `_HLS_` occurs in the query). Other parameters (`_HLS_skip`, anything else) are ignored.
pub fn parse_blocking_request(query: &str) -> Option<(u64, Option<u64>)> {
    fn number(v: &str) -> Option<u64> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
    let mut msn = None;
    let mut part = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "_HLS_msn" => &mut msn,
            "_HLS_part" => &mut part,
            _ => continue,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(number(value)?);
    }
    Some((msn?, part))
}

/// One alternative rendition in a master playlist (`#EXT-X-MEDIA`, RFC 8216 §4.3.4.1):
/// here always `TYPE=AUDIO`, an audio-only media playlist that variants refer to by group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRendition {
    /// `GROUP-ID`: the name variants use in their `AUDIO` attribute.
    pub group_id: String,
    /// `NAME`: human-readable, unique within the group.
    pub name: String,
    /// `LANGUAGE` (RFC 5646 tag), omitted when `None`.
    pub language: Option<String>,
    /// `DEFAULT=YES`: play this one unless the user chose otherwise (one per group).
    pub default: bool,
    /// `AUTOSELECT=YES`: the client may pick it by language without the user.
    pub autoselect: bool,
    /// `CHANNELS="<n>"` (RFC 8216bis §4.4.6.1), omitted when 0.
    pub channels: u32,
    /// URI of the rendition's media playlist.
    pub uri: String,
}

/// A variant of a master playlist that may use a group of audio renditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantStream {
    /// Bandwidth, codecs, resolution and URI, as for [`render_master`]. With `audio_group`
    /// set, `bandwidth` and `codecs` must cover the audio rendition too (RFC 8216 §4.3.4.2).
    pub variant: Variant,
    /// `AUDIO="<group>"`: the `GROUP-ID` of the audio renditions to play with this variant.
    pub audio_group: Option<String>,
}

/// Appends a master playlist for fMP4 media to `out`: `#EXTM3U`, `#EXT-X-VERSION:6`,
/// `#EXT-X-INDEPENDENT-SEGMENTS` (every segment starts with a keyframe, RFC 8216 §4.3.5.1),
/// one `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=…,NAME=…[,LANGUAGE=…],DEFAULT=YES|NO,
/// AUTOSELECT=YES|NO[,CHANNELS=…],URI=…` per audio rendition (§4.3.4.1), then per variant
/// `#EXT-X-STREAM-INF:BANDWIDTH=…[,CODECS=…][,RESOLUTION=…][,AUDIO=…]` and its URI.
pub fn render_master_with_media(
    audio: &[AudioRendition],
    variants: &[VariantStream],
    out: &mut String,
) {
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let yes_no = |b: bool| if b { "YES" } else { "NO" };
    for r in audio {
        out.push_str("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"");
        push_quoted_safe(out, &r.group_id);
        out.push_str("\",NAME=\"");
        push_quoted_safe(out, &r.name);
        out.push('"');
        if let Some(lang) = &r.language {
            out.push_str(",LANGUAGE=\"");
            push_quoted_safe(out, lang);
            out.push('"');
        }
        let _ = write!(
            out,
            ",DEFAULT={},AUTOSELECT={}",
            yes_no(r.default),
            yes_no(r.autoselect)
        );
        if r.channels > 0 {
            let _ = write!(out, ",CHANNELS=\"{}\"", r.channels);
        }
        out.push_str(",URI=\"");
        push_quoted_safe(out, &r.uri);
        out.push_str("\"\n");
    }
    for vs in variants {
        let v = &vs.variant;
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if !v.codecs.is_empty() {
            out.push_str(",CODECS=\"");
            push_quoted_safe(out, &v.codecs);
            out.push('"');
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(group) = &vs.audio_group {
            out.push_str(",AUDIO=\"");
            push_quoted_safe(out, group);
            out.push('"');
        }
        out.push('\n');
        push_line_safe(out, &v.uri);
        out.push('\n');
    }
}

/// A playlist read by [`parse_playlist`].
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A master playlist (RFC 8216 §4.3.4.2): each variant's `BANDWIDTH` (bits/s, 0 when
    /// missing) and URI.
    Master(Vec<(u64, String)>),
    /// A media playlist (RFC 8216 §4.3.3).
    Media(ReadPlaylist),
}

/// A media playlist as read (RFC 8216 §4.3.3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadPlaylist {
    /// `#EXT-X-TARGETDURATION`, seconds (0 when missing).
    pub target_duration_s: u64,
    /// `#EXT-X-MEDIA-SEQUENCE` (0 when missing): the first segment's media sequence number.
    pub media_sequence: u64,
    /// The segments in order: (media sequence number, duration in ms from `#EXTINF`, URI).
    pub segments: Vec<(u64, u64, String)>,
    /// `#EXT-X-ENDLIST`: no segment will be added.
    pub ended: bool,
    /// `#EXT-X-MAP`'s URI: the segments are fragmented MP4 with this init segment.
    pub map_uri: Option<String>,
    /// `#EXT-X-DISCONTINUITY-SEQUENCE` (0 when missing, RFC 8216 §4.3.3.3): the
    /// discontinuity sequence number of the first segment.
    pub discontinuity_sequence: u64,
    /// Media sequence numbers of the segments with an `#EXT-X-DISCONTINUITY` tag before
    /// them (RFC 8216 §4.3.2.3), in order.
    pub discontinuities: Vec<u64>,
    /// `#EXT-X-PLAYLIST-TYPE` (`EVENT` or `VOD`, RFC 8216 §4.3.3.5), when present.
    pub playlist_type: Option<String>,
}

/// Why a text is not a playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaylistError {
    /// The first line is not `#EXTM3U` (RFC 8216 §4.3.1.1).
    #[error("not a playlist: the first line is not #EXTM3U")]
    NotM3u,
    /// An `#EXTINF` duration that is not a number.
    #[error("line {0}: a bad #EXTINF duration")]
    BadDuration(usize),
}

/// The value of attribute `name` in an attribute list (RFC 8216 §4.2), quotes removed.
fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// Reads a master or media playlist (RFC 8216 §4). Unknown tags are skipped, as the RFC asks
/// of clients (§4.1); blank lines are ignored.
pub fn parse_playlist(text: &str) -> Result<Parsed, PlaylistError> {
    let mut lines = text.lines().map(str::trim).enumerate();
    match lines.next() {
        Some((_, l)) if l.trim_start_matches('\u{feff}') == "#EXTM3U" => {}
        _ => return Err(PlaylistError::NotM3u),
    }
    let mut media = ReadPlaylist::default();
    let mut variants = Vec::new();
    let mut pending_bw: Option<u64> = None;
    let mut pending_dur: Option<u64> = None;
    let mut master = false;
    let mut seq = None;
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            media.target_duration_s = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            // It must come before the first segment (RFC 8216 §4.3.3.2); a late one would
            // renumber segments already read, so it is ignored.
            if media.segments.is_empty() {
                media.media_sequence = v.trim().parse().unwrap_or(0);
            }
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("").trim();
            let secs: f64 = d.parse().map_err(|_| PlaylistError::BadDuration(n + 1))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(PlaylistError::BadDuration(n + 1));
            }
            pending_dur = Some((secs * 1000.0).round().min(u64::MAX as f64 / 2.0) as u64);
        } else if let Some(v) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            master = true;
            pending_bw = Some(
                attribute(v, "BANDWIDTH")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0),
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            media.map_uri = attribute(v, "URI").map(str::to_string);
        } else if line == "#EXT-X-ENDLIST" {
            media.ended = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            if media.segments.is_empty() {
                media.discontinuity_sequence = v.trim().parse().unwrap_or(0);
            }
        } else if line == "#EXT-X-DISCONTINUITY" {
            let next = seq.unwrap_or(media.media_sequence);
            if media.discontinuities.last() != Some(&next) {
                media.discontinuities.push(next);
            }
        } else if let Some(v) = line.strip_prefix("#EXT-X-PLAYLIST-TYPE:") {
            media.playlist_type = Some(v.trim().to_string());
        } else if line.starts_with('#') {
            // Other tags and comments.
        } else if let Some(bw) = pending_bw.take() {
            variants.push((bw, line.to_string()));
        } else {
            let s = *seq.get_or_insert(media.media_sequence);
            media
                .segments
                .push((s, pending_dur.take().unwrap_or(0), line.to_string()));
            seq = Some(s.saturating_add(1));
        }
    }
    Ok(if master {
        Parsed::Master(variants)
    } else {
        Parsed::Media(media)
    })
}

/// `uri` (from the playlist at `base`) made absolute: an absolute URI as it is, one starting
/// with `/` on `base`'s scheme and host, any other relative to `base`'s folder (RFC 3986 §5.2,
/// without dot segments).
pub fn resolve_uri(base: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let host_end = rest.find('/').unwrap_or(rest.len());
    let host = &rest[..host_end];
    if uri.starts_with('/') {
        return format!("{scheme}://{host}{uri}");
    }
    let path = &rest[host_end..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("{scheme}://{host}{dir}{uri}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(msn: u64, duration_ms: u64) -> Segment {
        Segment {
            msn,
            duration_ms,
            uri: format!("{msn}.ts"),
        }
    }

    #[test]
    fn renders_live_playlist() {
        let pl = MediaPlaylist {
            target_duration_s: 2,
            media_sequence: 7,
            segments: vec![seg(7, 2000), seg(8, 2500), seg(9, 1960)],
            ended: false,
            vod: false,
            event: false,
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-TARGETDURATION:3\n\
             #EXT-X-MEDIA-SEQUENCE:7\n\
             #EXTINF:2.000,\n7.ts\n\
             #EXTINF:2.500,\n8.ts\n\
             #EXTINF:1.960,\n9.ts\n"
        );
    }

    #[test]
    fn renders_vod_playlist() {
        let pl = MediaPlaylist {
            target_duration_s: 0,
            media_sequence: 0,
            segments: vec![seg(0, 4001), seg(1, 45)],
            ended: false,
            vod: true,
            event: false,
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-TARGETDURATION:4\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXTINF:4.001,\n0.ts\n\
             #EXTINF:0.045,\n1.ts\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn renders_event_playlist() {
        let pl = MediaPlaylist {
            target_duration_s: 2,
            media_sequence: 0,
            segments: vec![seg(0, 2000)],
            ended: false,
            vod: false,
            event: true,
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXTINF:2.000,\n0.ts\n"
        );
    }

    #[test]
    fn renders_ended_live_playlist_and_strips_newlines() {
        let pl = MediaPlaylist {
            target_duration_s: 6,
            media_sequence: 3,
            segments: vec![Segment {
                msn: 3,
                duration_ms: 6000,
                uri: "a\r\n#EVIL.ts".into(),
            }],
            ended: true,
            vod: false,
            event: false,
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:3\n\
             #EXTINF:6.000,\na#EVIL.ts\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn target_duration_covers_rounded_extinf() {
        for ms in [1u64, 499, 500, 999, 1000, 1001, 1499, 1500, 5999, 6000] {
            let pl = MediaPlaylist {
                target_duration_s: 0,
                media_sequence: 0,
                segments: vec![seg(0, ms)],
                ended: false,
                vod: false,
                event: false,
            };
            let rounded = (ms + 500) / 1000;
            assert!(rounded <= pl.target_duration(), "{ms}");
        }
    }

    #[test]
    fn target_duration_stays_put_for_a_slightly_long_segment() {
        // 2 s GOPs with a 2.105 s last segment (trailing audio) must not move the target
        // from 2 to 3 (RFC 8216 §6.2.1: it must not change).
        let pl = MediaPlaylist {
            target_duration_s: 0,
            media_sequence: 0,
            segments: vec![seg(0, 2000), seg(1, 2000), seg(2, 2105)],
            ended: true,
            vod: false,
            event: false,
        };
        assert_eq!(pl.target_duration(), 2);
    }

    #[test]
    fn renders_master_playlist() {
        let variants = [
            Variant {
                bandwidth: 2_500_000,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                uri: "hd/index.m3u8".into(),
            },
            Variant {
                bandwidth: 128_000,
                codecs: "mp4a.40.2".into(),
                resolution: None,
                uri: "audio/index.m3u8".into(),
            },
            Variant {
                bandwidth: 1,
                codecs: String::new(),
                resolution: None,
                uri: "x.m3u8".into(),
            },
        ];
        let mut out = String::new();
        render_master(&variants, &mut out);
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\n\
             hd/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS=\"mp4a.40.2\"\n\
             audio/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1\n\
             x.m3u8\n"
        );
    }

    fn parts(msn: u64, n: usize) -> Vec<Part> {
        (0..n)
            .map(|i| Part {
                duration_ms: 500,
                uri: format!("p{msn}.{i}.m4s"),
                independent: i == 0,
            })
            .collect()
    }

    fn fseg(msn: u64, parts_n: usize) -> Fmp4Segment {
        Fmp4Segment {
            msn,
            duration_ms: 2000,
            uri: format!("s{msn}.m4s"),
            parts: parts(msn, parts_n),
            program_date_time_ms: None,
        }
    }

    #[test]
    fn renders_ll_hls_playlist() {
        let mut first = fseg(10, 4);
        first.program_date_time_ms = Some(1_700_000_000_000);
        let pl = Fmp4Playlist {
            target_duration_s: 2,
            media_sequence: 10,
            map_uri: "init.mp4".into(),
            segments: vec![first, fseg(11, 4), fseg(12, 4)],
            ended: false,
            vod: false,
            event: false,
            low_latency: Some(LowLatency {
                part_target_ms: 500,
                part_hold_back_ms: None,
                pending_parts: parts(13, 2),
                preload_hint: Some("p13.2.m4s".into()),
                rendition_reports: vec![RenditionReport {
                    uri: "../2/index.m3u8".into(),
                    last_msn: 13,
                    last_part: Some(1),
                }],
            }),
        };
        let mut out = String::new();
        pl.render(&mut out);
        // Segment 10 starts 7 s before the end (> 3 target durations): its parts are gone.
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:6\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
             #EXT-X-PART-INF:PART-TARGET=0.500\n\
             #EXT-X-MEDIA-SEQUENCE:10\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n\
             #EXTINF:2.000,\ns10.m4s\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p11.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p11.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p11.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p11.3.m4s\"\n\
             #EXTINF:2.000,\ns11.m4s\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p12.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p12.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p12.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p12.3.m4s\"\n\
             #EXTINF:2.000,\ns12.m4s\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p13.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p13.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p13.2.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../2/index.m3u8\",LAST-MSN=13,LAST-PART=1\n"
        );
    }

    #[test]
    fn ended_ll_playlist_drops_preload_hint() {
        let pl = Fmp4Playlist {
            target_duration_s: 2,
            media_sequence: 0,
            map_uri: "in\"it.mp4".into(),
            segments: vec![fseg(0, 1)],
            ended: true,
            vod: false,
            event: false,
            low_latency: Some(LowLatency {
                part_target_ms: 1000,
                part_hold_back_ms: Some(2500),
                pending_parts: vec![],
                preload_hint: Some("next.m4s".into()),
                rendition_reports: vec![],
            }),
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=2.500\n\
             #EXT-X-PART-INF:PART-TARGET=1.000\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PART:DURATION=0.500,URI=\"p0.0.m4s\",INDEPENDENT=YES\n\
             #EXTINF:2.000,\ns0.m4s\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn renders_plain_fmp4_playlist() {
        let pl = Fmp4Playlist {
            target_duration_s: 0,
            media_sequence: 0,
            map_uri: "init.mp4".into(),
            segments: vec![fseg(0, 4), fseg(1, 0)],
            ended: false,
            vod: true,
            event: false,
            low_latency: None,
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:2.000,\ns0.m4s\n#EXTINF:2.000,\ns1.m4s\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn parses_blocking_requests() {
        assert_eq!(parse_blocking_request(""), None);
        assert_eq!(parse_blocking_request("_HLS_msn=12"), Some((12, None)));
        assert_eq!(
            parse_blocking_request("x=1&_HLS_part=3&_HLS_msn=12&_HLS_skip=YES"),
            Some((12, Some(3)))
        );
        assert_eq!(parse_blocking_request("_HLS_part=3"), None);
        assert_eq!(parse_blocking_request("_HLS_msn=-1"), None);
        assert_eq!(parse_blocking_request("_HLS_msn=+1"), None);
        assert_eq!(parse_blocking_request("_HLS_msn="), None);
        assert_eq!(parse_blocking_request("_HLS_msn"), None);
        assert_eq!(parse_blocking_request("_HLS_msn=1&_HLS_msn=2"), None);
        assert_eq!(
            parse_blocking_request("_HLS_msn=99999999999999999999"),
            None
        );
        assert_eq!(
            parse_blocking_request("_HLS_msn=18446744073709551615"),
            Some((u64::MAX, None))
        );
    }

    proptest::proptest! {
        #[test]
        fn blocking_request_parser_never_panics(q in "\\PC{0,64}") {
            let _ = parse_blocking_request(&q);
        }

        #[test]
        fn blocking_request_round_trips(msn in proptest::prelude::any::<u64>(),
                                        part in proptest::option::of(proptest::prelude::any::<u64>())) {
            let q = match part {
                Some(p) => format!("_HLS_msn={msn}&_HLS_part={p}"),
                None => format!("_HLS_msn={msn}"),
            };
            proptest::prop_assert_eq!(parse_blocking_request(&q), Some((msn, part)));
        }
    }

    #[test]
    fn renders_master_with_audio_renditions() {
        let audio = [
            AudioRendition {
                group_id: "aud".into(),
                name: "English".into(),
                language: Some("en".into()),
                default: true,
                autoselect: true,
                channels: 2,
                uri: "2/index.m3u8".into(),
            },
            AudioRendition {
                group_id: "aud".into(),
                name: "Dutch".into(),
                language: None,
                default: false,
                autoselect: false,
                channels: 0,
                uri: "3/index.m3u8".into(),
            },
        ];
        let variants = [VariantStream {
            variant: Variant {
                bandwidth: 2_628_000,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                uri: "1/index.m3u8".into(),
            },
            audio_group: Some("aud".into()),
        }];
        let mut out = String::new();
        render_master_with_media(&audio, &variants, &mut out);
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",LANGUAGE=\"en\",\
             DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"2/index.m3u8\"\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"Dutch\",DEFAULT=NO,AUTOSELECT=NO,\
             URI=\"3/index.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2628000,CODECS=\"avc1.64001f,mp4a.40.2\",\
             RESOLUTION=1280x720,AUDIO=\"aud\"\n1/index.m3u8\n"
        );
    }

    #[test]
    fn playlists_are_read_back() {
        let mut out = String::new();
        let pl = MediaPlaylist {
            target_duration_s: 2,
            media_sequence: 7,
            segments: vec![
                Segment {
                    msn: 7,
                    duration_ms: 2000,
                    uri: "7.ts".into(),
                },
                Segment {
                    msn: 8,
                    duration_ms: 1960,
                    uri: "8.ts".into(),
                },
            ],
            ended: false,
            vod: false,
            event: false,
        };
        pl.render(&mut out);
        let Parsed::Media(m) = parse_playlist(&out).unwrap() else {
            panic!("{out}")
        };
        assert_eq!(m.media_sequence, 7);
        assert_eq!(
            m.segments,
            vec![(7, 2000, "7.ts".to_string()), (8, 1960, "8.ts".to_string())]
        );
        assert!(!m.ended);
        let Parsed::Media(m) = parse_playlist(
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:2,\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb.ts\n",
        )
        .unwrap() else {
            panic!("not a media playlist")
        };
        assert_eq!(m.discontinuity_sequence, 2);
        assert_eq!(m.discontinuities, vec![5]);
        assert_eq!(m.playlist_type.as_deref(), Some("EVENT"));
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.42c01e,mp4a.40.2\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:RESOLUTION=1280x720,BANDWIDTH=2400000\nhigh/index.m3u8\n";
        assert_eq!(
            parse_playlist(master).unwrap(),
            Parsed::Master(vec![
                (800_000, "low/index.m3u8".into()),
                (2_400_000, "high/index.m3u8".into())
            ])
        );
        assert_eq!(parse_playlist("<html>"), Err(PlaylistError::NotM3u));
        assert_eq!(
            parse_playlist("#EXTM3U\n#EXTINF:abc,\nx.ts"),
            Err(PlaylistError::BadDuration(2))
        );
    }

    #[test]
    fn uris_resolve_against_the_playlist() {
        let base = "http://h:8080/hls/live/index.m3u8?token=1";
        assert_eq!(resolve_uri(base, "5.ts"), "http://h:8080/hls/live/5.ts");
        assert_eq!(resolve_uri(base, "/x/5.ts"), "http://h:8080/x/5.ts");
        assert_eq!(resolve_uri(base, "https://c/5.ts"), "https://c/5.ts");
    }

    proptest::proptest! {
        #[test]
        fn any_text_never_panics(text in "(#EXTM3U\n)?(#EXT[-A-Z]*:?[A-Z=0-9.,\"]*\n|[a-z0-9./]*\n){0,12}") {
            let _ = parse_playlist(&text);
        }
    }
}
