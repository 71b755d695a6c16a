//! HLS playlists (RFC 8216): media playlists listing MPEG-TS segments ([`MediaPlaylist`])
//! and master playlists listing variants ([`render_master`]). Pure text rendering into a
//! caller-supplied `String`.
//!
//! URIs are written as given except that CR and LF are dropped, so a hostile stream name
//! cannot inject playlist lines; callers percent-encode URIs themselves.

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
        self.segments
            .iter()
            .map(|s| s.duration_ms.div_ceil(1000))
            .fold(self.target_duration_s, u64::max)
    }

    /// Appends the playlist text to `out` (lines end in `\n`):
    /// `#EXTM3U`, `#EXT-X-VERSION:3`, `#EXT-X-TARGETDURATION:<s>`,
    /// `#EXT-X-MEDIA-SEQUENCE:<n>`, `#EXT-X-PLAYLIST-TYPE:VOD` when `vod`, then per segment
    /// `#EXTINF:<s.mmm>,` and its URI, and `#EXT-X-ENDLIST` when `ended` or `vod`.
    /// Version 3 is the first that allows decimal `#EXTINF` durations (RFC 8216 §7).
    pub fn render(&self, out: &mut String) {
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration());
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.vod {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
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
        };
        let mut out = String::new();
        pl.render(&mut out);
        assert_eq!(
            out,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-TARGETDURATION:5\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXTINF:4.001,\n0.ts\n\
             #EXTINF:0.045,\n1.ts\n\
             #EXT-X-ENDLIST\n"
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
            };
            let rounded = (ms + 500) / 1000;
            assert!(rounded <= pl.target_duration(), "{ms}");
        }
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
}
