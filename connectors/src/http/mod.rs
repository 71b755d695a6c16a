//! The HTTP connector: one process per TCP connection, HTTP/1.1 keep-alive, request parsing by
//! `httparse`. Serves HLS (see [`crate::http::hls`]) under MistServer's URL layout
//! (`/hls/S/index.m3u8`). Every response carries CORS (`Access-Control-Allow-Origin: *`) and a
//! Cache-Control that lets an HTTP cache front it: playlists short-lived, segments long-lived.

pub mod cmaf;
pub mod hds;
pub mod hls;
pub mod player;
pub mod routes;
pub mod smooth;
pub mod thumbs;

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::core::control::OpenError;
use crate::core::cursor::{Cursor, StartPolicy};
use crate::core::segcache::{self, SegmentCache};
use crate::core::tracksel::{self, Selection};
use crate::core::url::{percent_decode, percent_decode_utf8};
use crate::core::window;
use crate::core::{progressive, streaming};
use crate::Ctx;
use dtsc::{Codec, TrackKind};
pub use routes::protocol_of;
use routes::Endpoint;

/// Largest request head accepted, bytes.
const MAX_HEAD: usize = 16 << 10;
/// Largest request body accepted (and skipped), bytes.
const MAX_BODY: usize = 1 << 20;
/// How long an idle keep-alive connection is kept, and how long a request may take to arrive.
const IDLE: Duration = Duration::from_secs(15);
/// How long a blocking LL-HLS request (playlist reload, preload hint) waits at most: three
/// target durations of a stream with 2 s GOPs (RFC 8216bis §6.2.5.2).
const BLOCK_WAIT: Duration = Duration::from_secs(6);
/// How long a stream info request waits for a stream that is starting.
const INFO_WAIT: Duration = Duration::from_secs(1);
/// How long a playlist request waits for a stream to have enough segments.
const READY_WAIT: Duration = Duration::from_secs(15);

/// The answer when the controller did not open a stream: 404 with the reason (no such
/// stream, or its input failed: a missing or unreadable file), 403, or 503.
fn open_refusal(stream: &str, e: OpenError) -> Response {
    match e {
        OpenError::NotFound(r) => Response::text(404, &format!("Stream {stream} not found: {r}")),
        OpenError::Forbidden(r) | OpenError::Unauthorized(r) => Response::text(403, &r),
        OpenError::Failed(r) => Response::text(503, &format!("Stream {stream} unavailable: {r}")),
    }
}

/// The answer when a stream has no data after [`READY_WAIT`]: 404 naming the reason when its
/// input failed (a pull's upstream refused or sent garbage), else 503 (not live yet).
fn not_ready(stream: &str, c: &Cursor) -> Response {
    match c.input_failure() {
        Some(why) => Response::text(
            404,
            &format!("Stream {stream} is not available: its input failed: {why}"),
        ),
        None => Response::text(503, &format!("Stream {stream} is not live (no data yet)")),
    }
}

/// One response.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Cache-Control.
    pub cache: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, msg: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            cache: "no-store",
            body: format!("{msg}\n").into_bytes(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Serializes a response head for `resp` with `Content-Length`.
pub fn write_head(resp: &Response, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
    write_head_len(resp, resp.body.len() as u64, keep_alive, out);
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
}

/// Serializes the head of `resp` with `Content-Length: len` (`resp.body` is not used).
fn write_head_len(resp: &Response, len: u64, keep_alive: bool, out: &mut Vec<u8>) {
    write_head_extra(resp, len, keep_alive, "", out);
}

/// As [`write_head_len`], with `extra` (whole header lines, each ending in CRLF) added.
fn write_head_extra(resp: &Response, len: u64, keep_alive: bool, extra: &str, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {}\r\n\
         Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
         Access-Control-Allow-Headers: *\r\nAccess-Control-Expose-Headers: *\r\n\
         Server: Sluice\r\nDate: {}\r\n{extra}Connection: {}\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        len,
        resp.cache,
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        if keep_alive { "keep-alive" } else { "close" }
    );
}

/// A progressive (endless) response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progressive {
    /// `/S.flv`
    Flv,
    /// `/S.ts`
    Ts,
    /// `/S.mp4`, `/S.fmp4` (fragmented MP4 for a live stream)
    Mp4,
    /// `/S.mkv`: Matroska
    Mkv,
    /// `/S.aac`: the AAC track in ADTS
    Aac,
    /// `/S.mp3`: the MP3 track
    Mp3,
}

impl Progressive {
    fn content_type(self) -> &'static str {
        match self {
            Progressive::Flv => "video/x-flv",
            Progressive::Ts => "video/mp2t",
            Progressive::Mp4 => "video/mp4",
            Progressive::Mkv => "video/x-matroska",
            Progressive::Aac => "audio/aac",
            Progressive::Mp3 => "audio/mpeg",
        }
    }
}

/// A progressive request's `?start=` and `?end=` (MistServer's progressive parameters): where
/// it starts (the keyframe at or before) and where it stops. A positive value is a DTS on the
/// stream's timeline, ms (for a file, ms from its start); a negative `start` is that far
/// behind the live edge (`?start=-60000`: a minute ago, within the DVR window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// `start`, ms.
    pub start_ms: Option<i64>,
    /// `end`, ms.
    pub end_ms: Option<u64>,
}

impl Span {
    /// Reads `start` and `end` from a query string (whole ms; other values are ignored).
    pub fn from_query(query: &str) -> Span {
        let get = |k: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .and_then(|(_, v)| v.parse::<i64>().ok())
        };
        Span {
            start_ms: get("start"),
            end_ms: get("end").and_then(|e| u64::try_from(e).ok()),
        }
    }
}

/// What a request gets.
enum Reply {
    /// A whole response.
    Full(Response),
    /// A progressive stream of this stream name: the connection ends with it.
    Stream(Progressive, String, Selection, Span),
    /// An immutable segment, perhaps from the shared segment cache (sent with `sendfile`).
    Segment(&'static str, segcache::Body),
    /// `/S.mjpg`: a JPEG per keyframe of this stream, this wide; the connection ends with it.
    Mjpeg(String, Option<u32>),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Full(r)
    }
}

/// The connection's state: streams it already attached to (a player asks for many segments of
/// the same stream over one connection).
struct Conn<'a> {
    ctx: &'a Ctx,
    addr: String,
    /// The `Host` of the current request (for absolute URLs), else this socket's address.
    host: String,
    /// The `Range` header of the current request, if any.
    range: Option<String>,
    streams: HashMap<String, Cursor>,
}

impl Conn<'_> {
    fn cursor(&mut self, stream: &str) -> std::result::Result<&mut Cursor, Response> {
        if !self.streams.contains_key(stream) {
            let c = Cursor::open(&self.ctx.rundir, stream, &self.addr)
                .map_err(|e| open_refusal(stream, e))?;
            self.streams.insert(stream.to_string(), c);
        }
        Ok(self.streams.get_mut(stream).expect("inserted above"))
    }

    fn route(&mut self, path: &str) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        // A path element that does not decode to UTF-8 names nothing here.
        if path
            .trim_start_matches('/')
            .split('/')
            .any(|p| percent_decode_utf8(p).is_none())
        {
            return Response::text(404, "Not found").into();
        }
        for m in routes::find(path) {
            if let Some(reply) = self.dispatch(&m, query) {
                return reply;
            }
        }
        Response::text(404, "Not found").into()
    }

    /// Runs the handler of a matched route; `None` when it declines (the next route that
    /// matches is tried).
    fn dispatch(&mut self, m: &routes::Matched, query: &str) -> Option<Reply> {
        let stream = percent_decode(m.stream);
        // The elements after the stream's: a track set, a file, a boot time.
        let at = |i: usize| m.parts.get(i).copied().unwrap_or("");
        Some(match m.endpoint {
            Endpoint::PlayerScript => self.player_script(at(0))?.into(),
            Endpoint::PlayerPage => self.player_page(&stream).into(),
            Endpoint::PlayerJson => self.player_info(&stream, false).into(),
            Endpoint::PlayerInfo => self.player_info(&stream, true).into(),
            Endpoint::VodMp4 => self.vod_mp4(&stream)?,
            Endpoint::Thumbnail => self.thumbnail(&stream, query).into(),
            Endpoint::Mjpeg => Reply::Mjpeg(stream, thumbs::width_of(query)),
            Endpoint::Progressive(kind) => Reply::Stream(
                kind,
                stream,
                Selection::from_query(query),
                Span::from_query(query),
            ),
            Endpoint::HlsMaster => self.hls_master(&stream).into(),
            Endpoint::HlsMedia => self.hls_media(&stream, at(2)).into(),
            Endpoint::HlsSegment => self.hls_segment(&stream, at(2), at(3)),
            Endpoint::CmafMaster => self.cmaf_master(&stream).into(),
            Endpoint::CmafMedia => self.cmaf_media(&stream, at(2), query).into(),
            Endpoint::CmafHlsFile => self.cmaf_hls_file(&stream, at(2), at(3)),
            Endpoint::DashMpd => self.cmaf_mpd(&stream).into(),
            Endpoint::DashFile => self.cmaf_dash_file(&stream, at(2)),
            Endpoint::SmoothManifest => self.smooth_manifest(&stream).into(),
            Endpoint::SmoothFragment => self.smooth_fragment(&stream, None, at(2), at(3)),
            Endpoint::SmoothFragmentAtBoot => match at(2).parse() {
                Ok(boot) => self.smooth_fragment(&stream, Some(boot), at(3), at(4)),
                Err(_) => Response::text(404, "Not found").into(),
            },
            Endpoint::HdsManifest => self.hds_manifest(&stream).into(),
            Endpoint::HdsFile => self.hds_file(&stream, at(2)),
        })
    }

    /// `/S.jpg`: the latest keyframe as a JPEG ([`thumbs`]), `?width=` wide.
    fn thumbnail(&mut self, stream: &str, query: &str) -> Response {
        let rundir = self.ctx.rundir.clone();
        let c = match self.cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if !c.wait_ready(READY_WAIT, 1) {
            return not_ready(stream, c);
        }
        let meta = *c.reader().meta();
        let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
        match thumbs::latest_jpeg(c, &cache, stream, thumbs::width_of(query)) {
            Ok((_, jpeg)) => Response {
                status: 200,
                content_type: "image/jpeg",
                cache: "no-cache",
                body: jpeg,
            },
            Err((status, why)) => Response::text(status, &format!("{stream}: {why}")),
        }
    }

    /// `/S.mp4` of an ended stream: the whole window as one progressive MP4 file with `moov`
    /// first (ISO/IEC 14496-12), built once per server run of the stream and kept in the
    /// segment cache, so Range requests and HEAD work as on a file. `None` while the stream
    /// is live (then `/S.mp4` is fragmented and endless).
    fn vod_mp4(&mut self, stream: &str) -> Option<Reply> {
        let rundir = self.ctx.rundir.clone();
        let c = match self.cursor(stream) {
            Ok(c) => c,
            Err(r) => return Some(r.into()),
        };
        if !c.wait_ready(INFO_WAIT, 1) || c.reader().meta().state() != dtsc::shm::STATE_ENDED {
            return None;
        }
        let (r, tracks) = (c.reader(), c.tracks());
        let meta = r.meta();
        let sel: Vec<dtsc::Track> = cmaf::cmaf_tracks(tracks).into_iter().cloned().collect();
        if sel.is_empty() {
            return Some(
                Response::text(415, &format!("Stream {stream} has no track MP4 can carry")).into(),
            );
        }
        let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
        let set = hls::track_set(&sel.iter().collect::<Vec<_>>());
        let body = cache.get_or_make(&format!("vod_{set}.mp4"), |out| {
            let first = meta.key(meta.first_key())?.seq;
            let packets: Vec<dtsc::PacketRef> = (first..meta.write_seq())
                .filter_map(|s| r.packet(s))
                .filter(|p| sel.iter().any(|t| t.id == p.track))
                .collect();
            dtsc::mp4::write_progressive(&sel, &packets, out).ok()?;
            r.still_valid(first).then_some(())
        });
        Some(match body {
            Some(b) => Reply::Segment("video/mp4", b),
            None => Response::text(404, "Stream window changed while writing the file").into(),
        })
    }

    /// A vendored player script by its file name; `None` for other names.
    fn player_script(&self, file: &str) -> Option<Response> {
        let body = player::script(&format!("/{file}"))?;
        Some(Response {
            status: 200,
            content_type: "application/javascript; charset=utf-8",
            cache: "public, max-age=86400",
            body: body.to_vec(),
        })
    }

    /// `/S.html`: 404 for a stream that does not exist; the page itself waits for an
    /// offline one.
    fn player_page(&mut self, stream: &str) -> Response {
        if let Err(r) = self.cursor(stream) {
            return r;
        }
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            cache: "no-cache",
            body: player::page(stream).into_bytes(),
        }
    }

    /// `/json_S.js` (`js` false: JSON) and `/info_S.js` (`js`: a script that sets it).
    fn player_info(&mut self, stream: &str, js: bool) -> Response {
        let host = self.host.clone();
        let (status, value) = match self.cursor(stream) {
            Err(r) => (
                404,
                player::not_found(String::from_utf8_lossy(&r.body).trim()),
            ),
            Ok(c) => {
                if c.wait_ready(INFO_WAIT, 1) {
                    (200, player::info(stream, &host, c.reader(), c.tracks()))
                } else {
                    (200, player::offline())
                }
            }
        };
        if js {
            Response {
                status,
                content_type: "application/javascript; charset=utf-8",
                cache: "no-cache",
                body: player::info_js(stream, &value).into_bytes(),
            }
        } else {
            Response {
                status,
                content_type: "application/json",
                cache: "no-cache",
                body: value.to_string().into_bytes(),
            }
        }
    }

    fn cmaf_master(&mut self, stream: &str) -> Response {
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match cmaf::hls_master(c.reader(), c.tracks()) {
            Some(body) => playlist(body.into_bytes()),
            None => Response::text(415, "Stream has no track CMAF can carry"),
        }
    }

    /// The LL-HLS media playlist; with `_HLS_msn` (and `_HLS_part`) in the query, a
    /// blocking reload (RFC 8216bis §6.2.5.2): answered once the playlist holds that
    /// segment (or part), at most three target durations later.
    fn cmaf_media(&mut self, stream: &str, set: &str, query: &str) -> Response {
        if hls::parse_track_set(set).is_none() {
            return Response::text(404, "Bad track set");
        }
        let block = dtsc::hls::parse_blocking_request(query);
        if block.is_none() && (query.contains("_HLS_msn") || query.contains("_HLS_part")) {
            return Response::text(400, "Bad _HLS_msn/_HLS_part");
        }
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some((msn, part)) = block {
            let last = c.reader().meta().key_count();
            // §6.2.5.2: a request more than two segments ahead of the playlist is an error.
            if msn > last + 2 {
                return Response::text(400, "_HLS_msn is more than two segments ahead");
            }
            c.wait_until(BLOCK_WAIT, |r, t| cmaf::playlist_reaches(r, t, msn, part));
        }
        playlist(cmaf::hls_media(c.reader(), c.tracks()).into_bytes())
    }

    fn cmaf_hls_file(&mut self, stream: &str, set: &str, file: &str) -> Reply {
        let Some(ids) = hls::parse_track_set(set) else {
            return Response::text(404, "Bad track set").into();
        };
        let rundir = self.ctx.rundir.clone();
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r.into(),
        };
        // Cache names take the set's canonical form: `1_2`, `2_1` and `01_2` are one file.
        let present: Vec<u32> = c.tracks().iter().map(|t| t.id).collect();
        let Some((ids, set)) = hls::canonical_track_set(&ids, &present) else {
            return Response::text(404, "No such tracks").into();
        };
        let mut body = Vec::new();
        if let Some(boot) = cmaf::parse_hls_init(file) {
            return init_response(c, boot, cmaf::init(c.tracks(), &ids, &mut body), body).into();
        }
        if let Some((boot, key, index)) = cmaf::parse_part_name(file) {
            if c.reader().meta().boot_ms() != boot {
                return Response::text(404, "Part of an earlier run of this stream").into();
            }
            // A part not complete yet (the preload hint) is answered when it is.
            c.wait_until(BLOCK_WAIT, |r, t| cmaf::has_part(r, t, key, Some(index)));
            let (r, tracks) = (c.reader(), c.tracks());
            let meta = r.meta();
            let cache = SegmentCache::new(&rundir, stream, boot, meta.dvr_ms());
            return match cache.get_or_make(&format!("cmaf_{set}_{key}.{index}.m4s"), |out| {
                cmaf::part(r, tracks, &ids, key, index, out)
            }) {
                Some(body) => Reply::Segment("video/mp4", body),
                None => Response::text(404, "Part not in the window").into(),
            };
        }
        let Some((boot, key)) = cmaf::parse_segment_name(file) else {
            return Response::text(404, "Bad segment name").into();
        };
        let (r, tracks) = (c.reader(), c.tracks());
        let name = format!("cmaf_{set}_{key}.m4s");
        serve_segment(&rundir, stream, c, boot, key, &name, "video/mp4", |out| {
            cmaf::fragment(r, tracks, &ids, key, out)
        })
    }

    fn hds_manifest(&mut self, stream: &str) -> Response {
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some(r) = video_refusal(c.tracks(), "HDS (FLV tags)", |c| *c == Codec::H264) {
            return r;
        }
        match hds::manifest(stream, c.reader(), c.tracks()) {
            Some(body) => Response {
                status: 200,
                content_type: "application/f4m+xml",
                cache: "no-cache",
                body: body.into_bytes(),
            },
            None => Response::text(
                415,
                &format!("Stream {stream} has no track HDS can carry (H.264, AAC, MP3)"),
            ),
        }
    }

    fn hds_file(&mut self, stream: &str, file: &str) -> Reply {
        let rundir = self.ctx.rundir.clone();
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r.into(),
        };
        let (r, tracks) = (c.reader(), c.tracks());
        if hds::parse_bootstrap_name(file).is_some() {
            return Response {
                status: 200,
                content_type: "application/octet-stream",
                cache: "no-cache",
                body: hds::bootstrap(stream, r, tracks),
            }
            .into();
        }
        let Some((ids, number)) = hds::parse_fragment_name(file) else {
            return Response::text(404, "Not found").into();
        };
        if !window::in_window(r, tracks, u64::from(number) - 1) {
            return Response::text(404, "Fragment not in the window").into();
        }
        let present: Vec<u32> = tracks.iter().map(|t| t.id).collect();
        let Some((ids, set)) = hls::canonical_track_set(&ids, &present) else {
            return Response::text(404, "No such tracks").into();
        };
        let meta = r.meta();
        let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
        match cache.get_or_make(&format!("hds_{set}_{number}.f4f"), |out| {
            hds::fragment(r, tracks, &ids, number, out)
        }) {
            Some(body) => Reply::Segment("video/f4f", body),
            None => Response::text(404, "Fragment not in the window").into(),
        }
    }

    fn smooth_manifest(&mut self, stream: &str) -> Response {
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some(r) = video_refusal(c.tracks(), "Smooth Streaming", |c| *c == Codec::H264) {
            return r;
        }
        match smooth::manifest(c.reader(), c.tracks()) {
            Some(body) => Response {
                status: 200,
                content_type: "text/xml; charset=utf-8",
                cache: "no-cache",
                body: body.into_bytes(),
            },
            None => Response::text(
                415,
                &format!("Stream {stream} has no track Smooth Streaming can carry (H.264, AAC)"),
            ),
        }
    }

    fn smooth_fragment(
        &mut self,
        stream: &str,
        boot: Option<u64>,
        levels: &str,
        frag: &str,
    ) -> Reply {
        let Some((bitrate, name, t)) = smooth::parse_fragment(levels, frag) else {
            return Response::text(404, "Bad fragment URL").into();
        };
        let rundir = self.ctx.rundir.clone();
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r.into(),
        };
        let (r, tracks) = (c.reader(), c.tracks());
        if boot.is_some_and(|b| b != r.meta().boot_ms()) {
            return Response::text(404, "Fragment of an earlier run of this stream").into();
        }
        let Some((id, key)) = smooth::locate(r, tracks, &name, bitrate, t) else {
            return Response::text(404, "Fragment not in the window").into();
        };
        let meta = r.meta();
        let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
        match cache.get_or_make(&format!("smooth_{id}_{key}.m4s"), |out| {
            smooth::fragment(r, tracks, id, key, out)
        }) {
            Some(body) => Reply::Segment("video/mp4", body),
            None => Response::text(404, "Fragment not in the window").into(),
        }
    }

    fn cmaf_mpd(&mut self, stream: &str) -> Response {
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        match cmaf::mpd(c.reader(), c.tracks(), now) {
            Some(body) => Response {
                status: 200,
                content_type: "application/dash+xml",
                cache: "no-cache",
                body: body.into_bytes(),
            },
            None => Response::text(415, "Stream has no track CMAF can carry"),
        }
    }

    fn cmaf_dash_file(&mut self, stream: &str, file: &str) -> Reply {
        let rundir = self.ctx.rundir.clone();
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r.into(),
        };
        let mut body = Vec::new();
        if let Some((boot, id)) = cmaf::parse_dash_init(file) {
            return init_response(c, boot, cmaf::init(c.tracks(), &[id], &mut body), body).into();
        }
        let Some((boot, id, t)) = cmaf::parse_dash_chunk(file) else {
            return Response::text(404, "Not found").into();
        };
        let meta = c.reader().meta();
        if boot.is_some_and(|b| b != meta.boot_ms()) {
            return Response::text(404, "Segment of an earlier run of this stream").into();
        }
        let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
        let (r, tracks) = (c.reader(), c.tracks());
        // A chunk is named by its start time; the cache by the segment it is in.
        let Some(key) = cmaf::dash_chunk_key(r, tracks, id, t) else {
            return Response::text(404, "Segment not in the window").into();
        };
        match cache.get_or_make(&format!("cmaf_{id}_{key}.m4s"), |out| {
            cmaf::fragment(r, tracks, &[id], key, out)
        }) {
            Some(body) => Reply::Segment("video/mp4", body),
            None => Response::text(404, "Segment not in the window").into(),
        }
    }

    fn ready_cursor(&mut self, stream: &str) -> std::result::Result<&mut Cursor, Response> {
        let c = self.cursor(stream)?;
        // One complete segment (two keyframes) before a player gets a playlist.
        if !c.wait_ready(READY_WAIT, 2) {
            return Err(not_ready(stream, c));
        }
        Ok(c)
    }

    fn hls_master(&mut self, stream: &str) -> Response {
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match hls::master(c.reader(), c.tracks()) {
            Some(body) => Response {
                status: 200,
                content_type: "application/vnd.apple.mpegurl",
                cache: "no-cache",
                body: body.into_bytes(),
            },
            None => Response::text(404, "Stream has no track HLS can carry"),
        }
    }

    fn hls_media(&mut self, stream: &str, set: &str) -> Response {
        if hls::parse_track_set(set).is_none() {
            return Response::text(404, "Bad track set");
        }
        let c = match self.ready_cursor(stream) {
            Ok(c) => c,
            Err(r) => return r,
        };
        Response {
            status: 200,
            content_type: "application/vnd.apple.mpegurl",
            cache: "no-cache",
            body: hls::media_playlist(c.reader(), c.tracks()).into_bytes(),
        }
    }

    fn hls_segment(&mut self, stream: &str, set: &str, name: &str) -> Reply {
        let (Some(ids), Some((boot, key))) =
            (hls::parse_track_set(set), hls::parse_segment_name(name))
        else {
            return Response::text(404, "Bad segment name").into();
        };
        let rundir = self.ctx.rundir.clone();
        let c = match self.cursor(stream) {
            Ok(c) => c,
            Err(r) => return r.into(),
        };
        c.reload_tracks();
        let (r, tracks) = (c.reader(), c.tracks());
        let present: Vec<u32> = tracks.iter().map(|t| t.id).collect();
        let Some((ids, set)) = hls::canonical_track_set(&ids, &present) else {
            return Response::text(404, "No such tracks").into();
        };
        let name = format!("hls_{set}_{key}.ts");
        serve_segment(&rundir, stream, c, boot, key, &name, "video/mp2t", |out| {
            hls::segment(r, tracks, &ids, key, out)
        })
    }
}

/// 415 naming the codec and the format when the stream's video is in a codec `format`
/// cannot carry (`carries` says which it can): such a format would send the audio alone,
/// which no viewer asked for.
fn video_refusal(
    tracks: &[dtsc::Track],
    format: &str,
    carries: fn(&Codec) -> bool,
) -> Option<Response> {
    let videos: Vec<&dtsc::Track> = tracks
        .iter()
        .filter(|t| t.kind == TrackKind::Video)
        .collect();
    if videos.is_empty() || videos.iter().any(|t| carries(&t.codec)) {
        return None;
    }
    Some(Response::text(
        415,
        &format!("{format} cannot carry {} video", videos[0].codec.as_str()),
    ))
}

/// An init segment: immutable when its name carries the buffer's boot time (a restarted
/// stream, perhaps with other tracks, gets new names), `no-cache` under the old boot-less
/// names; 404 for an earlier run, 415 when CMAF cannot carry the tracks.
fn init_response(
    c: &Cursor,
    boot: Option<u64>,
    made: std::result::Result<(), dtsc::mp4::Mp4Error>,
    body: Vec<u8>,
) -> Response {
    if boot.is_some_and(|b| b != c.reader().meta().boot_ms()) {
        return Response::text(404, "Init segment of an earlier run of this stream");
    }
    match made {
        Ok(()) if boot.is_some() => media(body, "video/mp4"),
        Ok(()) => Response {
            cache: "no-cache",
            ..media(body, "video/mp4")
        },
        Err(e) => Response::text(415, &format!("CMAF cannot carry these tracks: {e}")),
    }
}

/// Segment `key` of the run `boot` of `stream`, from the shared segment cache as `name`, muxed
/// by `make` when no process has yet: 404 for a segment of an earlier run of the stream or
/// one that is not (or no longer) in the window.
#[allow(clippy::too_many_arguments)]
fn serve_segment(
    rundir: &std::path::Path,
    stream: &str,
    c: &Cursor,
    boot: u64,
    key: u64,
    name: &str,
    content_type: &'static str,
    make: impl FnOnce(&mut Vec<u8>) -> Option<()>,
) -> Reply {
    let meta = c.reader().meta();
    if meta.boot_ms() != boot {
        return Response::text(404, "Segment of an earlier run of this stream").into();
    }
    if !window::in_window(c.reader(), c.tracks(), key) {
        return Response::text(404, "Segment not in the window").into();
    }
    let cache = SegmentCache::new(rundir, stream, boot, meta.dvr_ms());
    match cache.get_or_make(name, make) {
        Some(body) => Reply::Segment(content_type, body),
        None => Response::text(404, "Segment not in the window").into(),
    }
}

/// Serves a progressive stream on `sock` until it ends or the client leaves; the connection
/// closes afterwards (the response has no length). `Err` is a response to send instead
/// (stream not found or not live).
fn progressive(
    sock: &mut TcpStream,
    conn: &mut Conn,
    kind: Progressive,
    stream: &str,
    (selection, span): (Selection, Span),
    head_only: bool,
    framing: streaming::Framing,
) -> std::result::Result<(), Response> {
    crate::core::listener::set_process_name(match kind {
        Progressive::Flv => "HTTP FLV",
        Progressive::Ts => "HTTP TS",
        Progressive::Mp4 => "HTTP MP4",
        Progressive::Mkv => "HTTP MKV",
        Progressive::Aac | Progressive::Mp3 => "HTTP audio",
    });
    let mut cursor = match conn.streams.remove(stream) {
        Some(c) => c,
        None => Cursor::open(&conn.ctx.rundir, stream, &conn.addr)
            .map_err(|e| open_refusal(stream, e))?,
    };
    if !cursor.wait_ready(READY_WAIT, 1) {
        return Err(not_ready(stream, &cursor));
    }
    if !selection.is_default() {
        cursor.select(selection);
        if cursor.tracks().is_empty() {
            return Err(Response::text(
                404,
                &format!("Stream {stream} has no track the selection asks for"),
            ));
        }
    }
    let audio_codec = match kind {
        Progressive::Aac => Some(Codec::Aac),
        Progressive::Mp3 => Some(Codec::Mp3),
        _ => None,
    };
    if kind == Progressive::Flv {
        if let Some(r) = video_refusal(cursor.tracks(), "FLV", |c| *c == Codec::H264) {
            return Err(r);
        }
        // FLV carries one video and one audio track: the first of each kind selected.
        cursor.narrow_to(tracksel::flv_carried);
    }
    if let Some(codec) = &audio_codec {
        if !cursor
            .tracks()
            .iter()
            .any(|t| t.kind == TrackKind::Audio && &t.codec == codec)
        {
            return Err(Response::text(
                415,
                &format!("Stream {stream} has no {} audio track", codec.as_str()),
            ));
        }
    }
    // Live: from the newest keyframe (the first picture at once). Ended: the whole window,
    // as a file would be. `?start=`: from the keyframe at or before that DTS, or that far
    // behind live when negative; `?end=`: up to that DTS.
    cursor.start(match span.start_ms {
        Some(ms) if ms < 0 => StartPolicy::BehindLive(ms.unsigned_abs()),
        Some(ms) => StartPolicy::AtOrBefore(ms as u64),
        None => StartPolicy::Usual,
    });
    if let Some(end) = span.end_ms {
        cursor.end_at(end);
    }
    let mut head = Vec::new();
    let _ = write!(
        head,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-store\r\n\
         Access-Control-Allow-Origin: *\r\nServer: Sluice\r\n{}Connection: close\r\n\r\n",
        kind.content_type(),
        if framing == streaming::Framing::HttpChunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        }
    );
    if head_only {
        let _ = sock.write_all(&head);
        return Ok(());
    }
    let reader = *cursor.reader();
    let reader = &reader;
    // An ended stream's FLV says how long it is (players draw their seek bar from it): up to
    // the last DTS of the tracks sent plus a frame, or to `?end=`.
    let flv_end = window::ended_span(reader, cursor.tracks())
        .map(|s| span.end_ms.map_or(s.end, |x| x.min(s.end)));
    let result = match kind {
        // FLV, TS and MP4 go on from a new buffer when the stream's buffer dies.
        Progressive::Flv => streaming::stream_resuming(
            sock,
            &mut cursor,
            &mut progressive::FlvOutput::ending_at(flv_end),
            head,
            framing,
        ),
        Progressive::Ts => streaming::stream_resuming(
            sock,
            &mut cursor,
            &mut progressive::TsOutput::default(),
            head,
            framing,
        ),
        Progressive::Mkv => streaming::stream_resuming(
            sock,
            &mut cursor,
            &mut progressive::MkvOutput::default(),
            head,
            framing,
        ),
        Progressive::Mp4 => streaming::stream_resuming(
            sock,
            &mut cursor,
            &mut progressive::Fmp4Progressive::default(),
            head,
            framing,
        ),
        Progressive::Aac | Progressive::Mp3 => streaming::stream(
            sock,
            &mut cursor,
            reader,
            &mut progressive::AudioOutput::new(audio_codec.unwrap_or(Codec::Aac)),
            head,
            framing,
        ),
    };
    if let Err(e) = result {
        crate::log!("HTTP", "{}: {stream}: {e:#}", conn.addr);
    }
    Ok(())
}

/// Writes `head` then `body`, with as few system calls as the socket allows.
fn write_all_vectored(sock: &mut TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    let total = head.len() + body.len();
    while done < total {
        let n = if done < head.len() {
            sock.write_vectored(&[IoSlice::new(&head[done..]), IoSlice::new(body)])?
        } else {
            sock.write(&body[done - head.len()..])?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The boundary between the JPEGs of `/S.mjpg`.
const MJPEG_BOUNDARY: &str = "sluicejpeg";

/// `/S.mjpg`: `multipart/x-mixed-replace` (a part per keyframe: `Content-Type: image/jpeg`,
/// `Content-Length`, the JPEG), from the latest keyframe on, until the stream ends or the
/// client leaves. Errors before the head was sent are the response to give instead.
fn mjpeg(
    sock: &mut TcpStream,
    conn: &mut Conn,
    stream: &str,
    width: Option<u32>,
) -> std::result::Result<(), Response> {
    let rundir = conn.ctx.rundir.clone();
    let c = conn.cursor(stream)?;
    if !c.wait_ready(READY_WAIT, 1) {
        return Err(not_ready(stream, c));
    }
    thumbs::thumbnail_track(c.tracks()).map_err(|(s, why)| Response::text(s, &why))?;
    let meta = *c.reader().meta();
    let cache = SegmentCache::new(&rundir, stream, meta.boot_ms(), meta.dvr_ms());
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary={MJPEG_BOUNDARY}\r\n\
         Cache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\nServer: Sluice\r\n\
         Connection: close\r\n\r\n"
    );
    if sock.write_all(head.as_bytes()).is_err() {
        return Ok(());
    }
    let mut last = None;
    loop {
        let ended = c.reader().meta().state() == dtsc::shm::STATE_ENDED;
        if let Ok((seq, jpeg)) = thumbs::latest_jpeg(c, &cache, stream, width) {
            if last != Some(seq) {
                last = Some(seq);
                let part = format!(
                    "--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                );
                let sent = sock
                    .write_all(part.as_bytes())
                    .and_then(|()| sock.write_all(&jpeg))
                    .and_then(|()| sock.write_all(b"\r\n"));
                if sent.is_err() {
                    return Ok(());
                }
            }
        }
        if ended {
            let _ = sock.write_all(format!("--{MJPEG_BOUNDARY}--\r\n").as_bytes());
            return Ok(());
        }
        // The next keyframe, or the stream's end.
        let before = c.reader().meta().key_count();
        c.wait_until(Duration::from_secs(1), |r, _| {
            r.meta().key_count() != before || r.meta().state() == dtsc::shm::STATE_ENDED
        });
        if c.buffer_gone() {
            return Ok(());
        }
    }
}

/// Sends `head` then a segment: a cached file with `sendfile(2)` (page cache to socket, no
/// copy through this process), bytes with one `writev`.
fn send_body(
    sock: &mut TcpStream,
    head: &[u8],
    body: segcache::Body,
    range: std::ops::Range<u64>,
) -> std::io::Result<()> {
    match body {
        segcache::Body::Bytes(b) => {
            write_all_vectored(sock, head, &b[range.start as usize..range.end as usize])
        }
        segcache::Body::File(f, _) => {
            sock.write_all(head)?;
            let mut offset = range.start as i64;
            let end = range.end;
            while (offset as u64) < end {
                let left = (end - offset as u64) as usize;
                let n =
                    nix::sys::sendfile::sendfile(sock.as_fd(), f.as_fd(), Some(&mut offset), left)
                        .map_err(std::io::Error::from)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            Ok(())
        }
    }
}

/// What a `Range` header asks of a body of `len` bytes (RFC 9110 §14.1.2, §14.2).
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// One satisfiable range, as a half-open byte range.
    Bytes(std::ops::Range<u64>),
    /// The range starts past the end: 416.
    Unsatisfiable,
    /// Not a single byte range this server understands (another unit, several ranges,
    /// malformed): the whole body is sent, as the RFC allows.
    Ignore,
}

/// Parses `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX` for a body of `len` bytes
/// (RFC 9110 §14.1.2); the range returned is never empty and ends at most at `len`.
pub fn parse_range(header: &str, len: u64) -> RangeReq {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeReq::Ignore;
    };
    if spec.contains(',') {
        return RangeReq::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeReq::Unsatisfiable,
            Some(n) if len > 0 => RangeReq::Bytes(len.saturating_sub(n)..len),
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Ignore,
        },
        (first, last) => {
            let Some(first) = num(first) else {
                return RangeReq::Ignore;
            };
            if first >= len {
                return RangeReq::Unsatisfiable;
            }
            match last {
                "" => RangeReq::Bytes(first..len),
                l => match num(l) {
                    Some(l) if l >= first => RangeReq::Bytes(first..l.saturating_add(1).min(len)),
                    _ => RangeReq::Ignore,
                },
            }
        }
    }
}

/// A playlist or manifest response: short-lived.
fn playlist(body: Vec<u8>) -> Response {
    Response {
        status: 200,
        content_type: "application/vnd.apple.mpegurl",
        cache: "no-cache",
        body,
    }
}

/// A segment or init response: immutable (its URL names the buffer's run), cacheable.
fn media(body: Vec<u8>, content_type: &'static str) -> Response {
    Response {
        status: 200,
        content_type,
        cache: "public, max-age=3600, immutable",
        body,
    }
}

/// `https` on a TLS connection, else `http`: the scheme of the URLs this process writes.
pub fn scheme() -> &'static str {
    if crate::core::tls::is_tls() {
        "https"
    } else {
        "http"
    }
}

/// Starts the whole-request deadline of the request whose first byte just arrived.
fn arm_request(peer: &str) {
    crate::core::limits::arm(
        "HTTP",
        peer,
        "the request",
        crate::core::limits::get().request,
    );
}

/// What [`parse_head`] read of a request head: what the connection needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method (`GET`, `HEAD`, …).
    pub method: String,
    /// The request target as sent (origin form: path and query, still percent-encoded).
    pub path: String,
    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// HTTP/1.1 (else 1.0).
    pub v11: bool,
    /// Bytes the head and its declared body take at the start of the buffer.
    pub used: usize,
    /// The `Range` header (RFC 9110 §14.2), trimmed.
    pub range: Option<String>,
    /// The `Host` header when it is usable in absolute URLs (no `/`, space, quote or
    /// backslash).
    pub host: Option<String>,
}

/// The outcome of [`parse_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// A whole head.
    Complete(Head),
    /// More bytes are needed (the buffer holds at most [`MAX_HEAD`] bytes so far).
    Partial,
    /// The request is refused with `status` and `body` text; `why` is for the log, and the
    /// connection closes after the answer.
    Refused {
        /// 400, 411, 413 or 431.
        status: u16,
        /// The response text.
        body: String,
        /// The log line.
        why: String,
    },
}

/// Parses the request head at the start of `buf` (RFC 9112 §2–3, by `httparse`), without
/// I/O: a head over [`MAX_HEAD`] bytes is 431, a chunked request body 411, a body over
/// [`MAX_BODY`] bytes or a malformed `Content-Length` 413, anything `httparse` refuses 400.
/// Bytes that are not UTF-8 in the target are kept as they are (lossily) for the router to
/// refuse.
pub fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => {
            let v11 = req.version == Some(1);
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            };
            let keep_alive = match header("connection").map(|v| v.to_ascii_lowercase()) {
                Some(v) if v.contains("close") => false,
                Some(v) if v.contains("keep-alive") => true,
                _ => v11,
            };
            // A request body is not used by any route, but must be skipped so the next
            // request on the connection starts where it should.
            if header("transfer-encoding").is_some() {
                return HeadParse::Refused {
                    status: 411,
                    body: "Chunked request bodies are not accepted".into(),
                    why: "chunked request body".into(),
                };
            }
            let body_len = match header("content-length").map(|v| v.parse::<usize>()) {
                None => 0,
                Some(Ok(n)) if n <= MAX_BODY => n,
                Some(_) => {
                    return HeadParse::Refused {
                        status: 413,
                        body: "Request body too large or malformed".into(),
                        why: format!("request body over {MAX_BODY} bytes or malformed length"),
                    }
                }
            };
            HeadParse::Complete(Head {
                method: req.method.unwrap_or("").to_string(),
                path: req.path.unwrap_or("/").to_string(),
                keep_alive,
                v11,
                used: used + body_len,
                range: header("range"),
                host: header("host")
                    .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '\\'])),
            })
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => HeadParse::Refused {
            status: 431,
            body: "Request head too large".into(),
            why: format!("request head over {MAX_HEAD} bytes"),
        },
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(e) => HeadParse::Refused {
            status: 400,
            body: format!("Bad request: {e}"),
            why: format!("bad request: {e}"),
        },
    }
}

/// Serves one HTTP connection until the client closes it or it idles out.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    let addr = crate::core::tls::peer_addr(&sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    sock.set_read_timeout(Some(IDLE))?;
    let _ = sock.set_nodelay(true);
    let local = crate::core::tls::local_addr(&sock)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut conn = Conn {
        ctx,
        addr,
        host: local.clone(),
        range: None,
        streams: HashMap::new(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out = Vec::new();
    // The first request's deadline runs from the accept (armed by the listener).
    let mut first = true;
    loop {
        // The counters of what was sent so far, before waiting for the next request.
        ipc::sessions::update(Some(&sock), true);
        // A request has one deadline in all from its first byte, however its bytes trickle
        // in (a connection's first request: from the accept). An idle keep-alive connection
        // is closed quietly after IDLE.
        if !buf.is_empty() {
            arm_request(&conn.addr);
        }
        // Read until a whole head is there.
        let head = loop {
            match parse_head(&buf) {
                HeadParse::Complete(h) => break h,
                HeadParse::Partial => {}
                HeadParse::Refused { status, body, why } => {
                    let r = Response::text(status, &body);
                    out.clear();
                    write_head(&r, false, false, &mut out);
                    let _ = sock.write_all(&out);
                    bail!("{why}");
                }
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if buf.is_empty() && !first {
                        arm_request(&conn.addr);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            }
        };
        let Head {
            method,
            path,
            keep_alive,
            used,
            v11,
            range,
            host,
        } = head;
        conn.range = range;
        conn.host = host.unwrap_or_else(|| local.clone());
        // Wait for the rest of a declared body, then drop it with the head.
        while buf.len() < used {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.into()),
            }
        }
        buf.drain(..used);
        crate::core::limits::disarm();
        first = false;
        ipc::sessions::set_protocol(protocol_of(&path));
        crate::core::control::set_request_url(&format!("{}://{}{path}", scheme(), conn.host));
        let reply = match method.as_str() {
            "GET" | "HEAD" => conn.route(&path),
            "OPTIONS" => Reply::Full(Response {
                status: 204,
                content_type: "text/plain",
                cache: "no-store",
                body: Vec::new(),
            }),
            _ => Reply::Full(Response::text(405, "Method not allowed")),
        };
        let resp = match reply {
            Reply::Full(r) => r,
            Reply::Segment(content_type, body) => {
                let mut head_resp = media(Vec::new(), content_type);
                let total = body.len();
                let range = match conn.range.as_deref().map(|r| parse_range(r, total)) {
                    None | Some(RangeReq::Ignore) => 0..total,
                    Some(RangeReq::Bytes(r)) => r,
                    Some(RangeReq::Unsatisfiable) => {
                        let r = Response::text(416, "Range beyond the end");
                        out.clear();
                        let extra = format!("Content-Range: bytes */{total}\r\n");
                        write_head_extra(&r, r.body.len() as u64, keep_alive, &extra, &mut out);
                        out.extend_from_slice(&r.body);
                        crate::log!("HTTP", "{method} {path}: 416 (Range {:?})", conn.range);
                        sock.write_all(&out)?;
                        if !keep_alive {
                            return Ok(());
                        }
                        continue;
                    }
                };
                let partial = range != (0..total);
                let mut extra = String::from("Accept-Ranges: bytes\r\n");
                if partial {
                    head_resp.status = 206;
                    extra.push_str(&format!(
                        "Content-Range: bytes {}-{}/{total}\r\n",
                        range.start,
                        range.end - 1
                    ));
                }
                out.clear();
                write_head_extra(
                    &head_resp,
                    range.end - range.start,
                    keep_alive,
                    &extra,
                    &mut out,
                );
                if method == "HEAD" {
                    sock.write_all(&out)?;
                } else {
                    send_body(&mut sock, &out, body, range)?;
                }
                if !keep_alive {
                    return Ok(());
                }
                continue;
            }
            Reply::Mjpeg(stream, width) => match mjpeg(&mut sock, &mut conn, &stream, width) {
                Ok(()) => return Ok(()),
                Err(r) => r,
            },
            Reply::Stream(kind, stream, selection, span) => {
                let framing = if v11 {
                    streaming::Framing::HttpChunked
                } else {
                    streaming::Framing::Raw
                };
                match progressive(
                    &mut sock,
                    &mut conn,
                    kind,
                    &stream,
                    (selection, span),
                    method == "HEAD",
                    framing,
                ) {
                    Ok(()) => return Ok(()),
                    Err(r) => r,
                }
            }
        };
        if resp.status >= 400 {
            crate::log!("HTTP", "{method} {path}: {}", resp.status);
        }
        // Head and body in one writev: the body (a whole segment) is not copied again.
        out.clear();
        write_head(&resp, keep_alive, true, &mut out);
        let body: &[u8] = if method == "HEAD" { &[] } else { &resp.body };
        write_all_vectored(&mut sock, &out, body)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_refuses_video_it_cannot_carry() {
        let hevc = dtsc::Track::new(1, TrackKind::Video, Codec::Hevc);
        let h264 = dtsc::Track::new(2, TrackKind::Video, Codec::H264);
        let aac = dtsc::Track::new(3, TrackKind::Audio, Codec::Aac);
        let flv = |c: &Codec| *c == Codec::H264;
        let r = video_refusal(&[hevc.clone(), aac.clone()], "FLV", flv).expect("refused");
        assert_eq!(r.status, 415);
        let text = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            text.contains("FLV") && text.contains(Codec::Hevc.as_str()),
            "{text}"
        );
        assert!(
            video_refusal(&[hevc, h264], "FLV", flv).is_none(),
            "one carriable video"
        );
        assert!(video_refusal(&[aac], "FLV", flv).is_none(), "audio only");
    }

    /// The audit's request: `%a` followed by a two-byte character cut the old decoder's
    /// `&str` slice in the middle of `é`, and the process aborted.
    #[test]
    fn a_cut_escape_before_a_multibyte_character_is_no_panic() {
        let req = "GET /%a\u{e9}.flv HTTP/1.1\r\nHost: example\r\n\r\n";
        let HeadParse::Complete(h) = parse_head(req.as_bytes()) else {
            panic!("the head parses");
        };
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("GET", "/%a\u{e9}.flv")
        );
        assert_eq!(h.host.as_deref(), Some("example"));
        assert_eq!(percent_decode("%a\u{e9}"), "%a\u{e9}");
        assert_eq!(percent_decode("\u{e9}%\u{e9}%"), "\u{e9}%\u{e9}%");
        assert_eq!(percent_decode("%\u{e9}\u{e9}"), "%\u{e9}\u{e9}");
        // Through the router too (no stream is opened for a progressive URL's name).
        let ctx = Ctx {
            rundir: std::path::PathBuf::from("/nonexistent-sluice-rundir"),
            default_stream: None,
        };
        let mut conn = Conn {
            ctx: &ctx,
            addr: "192.0.2.1".into(),
            host: "example".into(),
            range: None,
            streams: HashMap::new(),
        };
        match conn.route(&h.path) {
            Reply::Stream(Progressive::Flv, name, _, _) => assert_eq!(name, "%a\u{e9}"),
            _ => panic!("a progressive FLV request"),
        }
        // A name that decodes to bytes that are not UTF-8 names nothing.
        match conn.route("/%e9%ff.flv") {
            Reply::Full(r) => assert_eq!(r.status, 404),
            _ => panic!("refused"),
        }
        for path in [
            "/hls/%a\u{e9}/%\u{e9}/x.ts",
            "/cmaf/\u{e9}%/1_\u{e9}/1_2.m4s",
            "/%",
        ] {
            let _ = conn.route(path);
        }
    }

    #[test]
    fn request_heads_are_refused_without_io() {
        let refused = |b: &[u8]| match parse_head(b) {
            HeadParse::Refused { status, .. } => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 413);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\xff\r\n\r\n"), 400);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(refused(&long), 431);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n"), HeadParse::Partial);
        let HeadParse::Complete(h) =
            parse_head(b"GET /a HTTP/1.0\r\nContent-Length: 3\r\nRange: bytes=1-\r\n\r\nabc")
        else {
            panic!("complete");
        };
        assert_eq!((h.used, h.keep_alive, h.v11), (58, false, false));
        assert_eq!(h.range.as_deref(), Some("bytes=1-"));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 1000),
            RangeReq::Bytes(0..1000)
        );
        use RangeReq::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Bytes(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), Bytes(900..1000));
        assert_eq!(parse_range("bytes=900-5000", 1000), Bytes(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), Bytes(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Bytes(0..1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 1000), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=x-1", 1000), Ignore);
    }

    proptest::proptest! {
        /// Whatever the header, a range handed out lies inside the body and is not empty.
        #[test]
        fn a_range_is_always_inside_the_body(h in "\\PC{0,40}", len in 0u64..10_000) {
            if let RangeReq::Bytes(r) = parse_range(&h, len) {
                proptest::prop_assert!(r.start < r.end && r.end <= len);
            }
        }

        #[test]
        fn explicit_ranges_round_trip(a in 0u64..5000, n in 1u64..5000, len in 1u64..10_000) {
            let want = if a >= len { RangeReq::Unsatisfiable } else { RangeReq::Bytes(a..(a + n).min(len)) };
            proptest::prop_assert_eq!(parse_range(&format!("bytes={a}-{}", a + n - 1), len), want);
        }
    }
}
