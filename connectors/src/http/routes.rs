//! The HTTP server's route table: each output declares the URL patterns it serves (as
//! MistServer's outputs declare theirs), with the output's name for statistics, and the
//! server tries them in order ([`find`]). `http/mod.rs` dispatches an [`Endpoint`] to its
//! handler; a handler may decline (a live stream's `/S.mp4` goes on to the progressive
//! route), and the search goes on after that route.
//!
//! A pattern is the path's elements joined by `/`, without the leading one. Each element is
//! literal text, or text around one wildcard: `$` is the stream name (at least one byte,
//! percent-decoded for the handler), `*` lets the element be anything with that prefix and
//! suffix (the handler gets the whole element). `hls/$/*.ts` matches `/hls/live/1_2/x.ts`;
//! `json_$.js` matches `/json_live.js`.

use super::Progressive;

/// What a route leads to: one handler of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A vendored player script (`/hls.min.js` …); declines other names.
    PlayerScript,
    /// `/S.html`, the player page.
    PlayerPage,
    /// `/json_S.js`, stream info as JSON.
    PlayerJson,
    /// `/info_S.js`, stream info as a script.
    PlayerInfo,
    /// `/S.mp4` of an ended stream: one file with `moov` first; declines a live stream.
    VodMp4,
    /// `/S.jpg`, the latest keyframe as a JPEG.
    Thumbnail,
    /// `/S.mjpg`, Motion JPEG.
    Mjpeg,
    /// A progressive stream (`/S.flv`, `/S.ts`, `/S.mp4`, …).
    Progressive(Progressive),
    /// HLS (TS) master playlist.
    HlsMaster,
    /// HLS (TS) media playlist of a track set.
    HlsMedia,
    /// HLS (TS) segment.
    HlsSegment,
    /// CMAF HLS master playlist.
    CmafMaster,
    /// CMAF HLS media playlist (LL-HLS).
    CmafMedia,
    /// CMAF HLS init segment, segment or part.
    CmafHlsFile,
    /// DASH MPD.
    DashMpd,
    /// DASH init segment or chunk.
    DashFile,
    /// Smooth Streaming manifest.
    SmoothManifest,
    /// Smooth Streaming fragment, without the boot element.
    SmoothFragment,
    /// Smooth Streaming fragment under the buffer's boot time.
    SmoothFragmentAtBoot,
    /// HDS F4M manifest.
    HdsManifest,
    /// HDS bootstrap or fragment.
    HdsFile,
}

/// One URL pattern of an output.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The pattern (see the module docs).
    pub pattern: &'static str,
    /// The output's name in statistics and `clients` (MistServer's: `HLS`, `DASH`, `HSS`,
    /// `CMAF`, `HDS`, `FLV`, `HTTPTS`, `MP4`, `MKV`, `JPEG`, `AAC`, `MP3`, `HTTP`).
    pub output: &'static str,
    /// Its handler.
    pub endpoint: Endpoint,
}

const fn route(pattern: &'static str, output: &'static str, endpoint: Endpoint) -> Route {
    Route {
        pattern,
        output,
        endpoint,
    }
}

/// The player's routes (`http/player.rs`).
pub const PLAYER: &[Route] = &[
    route("*.js", "HTTP", Endpoint::PlayerScript),
    route("$.html", "HTTP", Endpoint::PlayerPage),
    route("json_$.js", "HTTP", Endpoint::PlayerJson),
    route("info_$.js", "HTTP", Endpoint::PlayerInfo),
];

/// Thumbnails (`http/thumbs.rs`).
pub const THUMBS: &[Route] = &[
    route("$.jpg", "JPEG", Endpoint::Thumbnail),
    route("$.mjpg", "JPEG", Endpoint::Mjpeg),
];

/// The progressive outputs (`core/progressive.rs`), a stored stream's `/S.mp4` first.
pub const PROGRESSIVE: &[Route] = &[
    route("$.mp4", "MP4", Endpoint::VodMp4),
    route("$.flv", "FLV", Endpoint::Progressive(Progressive::Flv)),
    route("$.ts", "HTTPTS", Endpoint::Progressive(Progressive::Ts)),
    route("$.mp4", "MP4", Endpoint::Progressive(Progressive::Mp4)),
    route("$.fmp4", "MP4", Endpoint::Progressive(Progressive::Mp4)),
    route("$.mkv", "MKV", Endpoint::Progressive(Progressive::Mkv)),
    route("$.aac", "AAC", Endpoint::Progressive(Progressive::Aac)),
    route("$.mp3", "MP3", Endpoint::Progressive(Progressive::Mp3)),
];

/// Every output's routes, in the order they are tried.
pub const TABLES: &[&[Route]] = &[
    PLAYER,
    THUMBS,
    PROGRESSIVE,
    super::hls::ROUTES,
    super::smooth::ROUTES,
    super::cmaf::ROUTES,
    super::hds::ROUTES,
];

/// What a path matched: the route, the stream name as it is in the path (still
/// percent-encoded) and the path's elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'p> {
    /// The route.
    pub endpoint: Endpoint,
    /// Its output's name.
    pub output: &'static str,
    /// The stream name, percent-encoded as in the path.
    pub stream: &'p str,
    /// The path's elements (`/hls/S/1_2/x.ts` → `hls`, `S`, `1_2`, `x.ts`).
    pub parts: Vec<&'p str>,
}

/// One element against one pattern element; the stream part when the pattern has `$`.
fn element<'p>(pat: &str, el: &'p str) -> Option<Option<&'p str>> {
    let Some(at) = pat.find(['$', '*']) else {
        return (pat == el).then_some(None);
    };
    // `pat` is one of this file's ASCII patterns (never a client's bytes): slicing it at the
    // wildcard's byte offset is safe; the client's element is only stripped, never sliced.
    let (prefix, wild, suffix) = (&pat[..at], &pat[at..at + 1], &pat[at + 1..]);
    let middle = el.strip_prefix(prefix)?.strip_suffix(suffix)?;
    match wild {
        "$" if !middle.is_empty() => Some(Some(middle)),
        "$" => None,
        _ => Some(None),
    }
}

/// Whether `path` (without the query) matches `route`, and how.
fn matches<'p>(route: &Route, parts: &[&'p str]) -> Option<Matched<'p>> {
    let pats: Vec<&str> = route.pattern.split('/').collect();
    if pats.len() != parts.len() {
        return None;
    }
    let mut stream = "";
    for (pat, el) in pats.iter().zip(parts) {
        if let Some(s) = element(pat, el)? {
            stream = s;
        }
    }
    Some(Matched {
        endpoint: route.endpoint,
        output: route.output,
        stream,
        parts: parts.to_vec(),
    })
}

/// The routes `path` (without its query) matches, in table order.
pub fn find(path: &str) -> impl Iterator<Item = Matched<'_>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .filter_map(move |r| matches(r, &parts))
}

/// The output a request path asks for, as MistServer names its HTTP outputs in stats: the
/// first route it matches, `HTTP` when none does.
pub fn protocol_of(path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or("");
    find(p).next().map_or("HTTP", |m| m.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(path: &str) -> Option<(Endpoint, &str)> {
        find(path).next().map(|m| (m.endpoint, m.stream))
    }

    #[test]
    fn paths_find_their_outputs() {
        assert_eq!(
            first("/hls/live/index.m3u8"),
            Some((Endpoint::HlsMaster, "live"))
        );
        assert_eq!(
            first("/hls/a%2Bb/1_2/index.m3u8"),
            Some((Endpoint::HlsMedia, "a%2Bb"))
        );
        assert_eq!(
            first("/hls/s/1_2/9_3.ts"),
            Some((Endpoint::HlsSegment, "s"))
        );
        assert_eq!(first("/cmaf/s/index.mpd"), Some((Endpoint::DashMpd, "s")));
        assert_eq!(
            first("/cmaf/s/Manifest"),
            Some((Endpoint::SmoothManifest, "s"))
        );
        assert_eq!(
            first("/cmaf/s/QualityLevels(1)/Fragments(video=0)"),
            Some((Endpoint::SmoothFragment, "s"))
        );
        assert_eq!(
            first("/cmaf/s/17/QualityLevels(1)/Fragments(video=0)"),
            Some((Endpoint::SmoothFragmentAtBoot, "s"))
        );
        assert_eq!(
            first("/dynamic/s/manifest.f4m"),
            Some((Endpoint::HdsManifest, "s"))
        );
        assert_eq!(first("/json_s.js"), Some((Endpoint::PlayerScript, "")));
        let all: Vec<Endpoint> = find("/json_s.js").map(|m| m.endpoint).collect();
        assert_eq!(all, [Endpoint::PlayerScript, Endpoint::PlayerJson]);
        let mp4: Vec<Endpoint> = find("/s.mp4").map(|m| m.endpoint).collect();
        assert_eq!(
            mp4,
            [Endpoint::VodMp4, Endpoint::Progressive(Progressive::Mp4)]
        );
        assert_eq!(first("/.flv"), None, "an empty stream name is no stream");
        assert_eq!(first("/hls/s/x/y/z"), None);
    }

    #[test]
    fn outputs_are_named_as_mistserver_names_them() {
        for (path, want) in [
            ("/hls/s/index.m3u8", "HLS"),
            ("/cmaf/s/index.mpd", "DASH"),
            ("/cmaf/s/Manifest", "HSS"),
            ("/cmaf/s/1/QualityLevels(1)/Fragments(video=0)", "HSS"),
            ("/cmaf/s/index.m3u8", "CMAF"),
            ("/cmaf/s/1_2/index.m3u8?_HLS_msn=3", "CMAF"),
            ("/dynamic/s/manifest.f4m", "HDS"),
            ("/s.flv?start=0", "FLV"),
            ("/s.ts", "HTTPTS"),
            ("/s.mp4", "MP4"),
            ("/s.mkv", "MKV"),
            ("/s.jpg", "JPEG"),
            ("/s.mp3", "MP3"),
            ("/s.html", "HTTP"),
            ("/favicon.ico", "HTTP"),
        ] {
            assert_eq!(protocol_of(path), want, "{path}");
        }
    }
}
