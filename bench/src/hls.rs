//! `hls`: many HLS players in one process, on one `mio` event loop, that behave like live
//! players (the way SRS's `sb_hls_load` does): load the playlist (following the first variant
//! of a master playlist), start with the newest 3 segments, then fetch every segment once, in
//! order, and reload the playlist one target duration after the previous load began (half a
//! target duration when the playlist did not change, RFC 8216 §6.3.4).
//!
//! Each player keeps one HTTP/1.1 keep-alive connection and reconnects when the server closes
//! it. Works against any HLS server: Sluice (`/hls/S/index.m3u8`, a master playlist with a
//! relative variant URI) and static servers such as nginx (a media playlist, `Content-Length`
//! bodies). Chunked bodies and bodies delimited by the connection closing are read too.
//!
//! Measured: fetch times (request sent → last byte) of segments and playlists, errors by
//! kind, segments the playlist listed but the server answered 4xx/5xx for
//! (`listed_but_missing`), segments that are not MPEG-TS (`bad_ts`: first byte not 0x47 or
//! length not a multiple of 188), and stalls: a player that had a listed-but-unfetched segment
//! and did not complete a segment within one target duration.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

/// What `run` is asked to do.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Playlist URL, `http://HOST[:PORT]/PATH`; `{i}` is replaced by `j % max(publishers, 1)`
    /// for player `j`.
    pub url_template: String,
    /// Number of players.
    pub players: usize,
    /// How long the run lasts after the ramp, seconds.
    pub seconds: f64,
    /// The players start evenly spread over this many ms (0: all at once).
    pub ramp_ms: u64,
    /// Number of distinct streams `{i}` cycles through.
    pub publishers: usize,
}

/// No progress on a request (connect, send, or receive) for this long is a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait after a refused connection, a failed playlist or a protocol error before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// How often timeouts and stalls are checked.
const SWEEP: Duration = Duration::from_millis(100);
/// Segments a player starts with on its first load (counted from the newest).
const START_SEGMENTS: usize = 3;
/// Largest response head or playlist body accepted.
const MAX_TEXT: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// URLs and playlists (pure; unit-tested below)
// ---------------------------------------------------------------------------------------------

/// An `http://` URL split into what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host` or `host:port` as written (for the Host header).
    pub authority: String,
    /// Host name without the port.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http://authority/path`. `https` is not supported.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(format!("{s}: no host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
                Ok(p) => (h.trim_matches(['[', ']']).to_string(), p),
                Err(_) => return Err(format!("{s}: bad port")),
            },
            _ => (authority.trim_matches(['[', ']']).to_string(), 80),
        };
        Ok(Url {
            authority: authority.to_string(),
            host,
            port,
            path,
        })
    }

    /// Resolves `reference` (absolute `http://` URL, host-relative `/x`, or relative `x`,
    /// `./x`, `../x`) against this URL (RFC 3986 §5.2, enough for playlists).
    pub fn join(&self, reference: &str) -> Result<Url, String> {
        let reference = reference.trim();
        if reference.contains("://") {
            return Url::parse(reference);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Url::parse(&format!("http://{rest}"));
        }
        let (ref_path, query) = match reference.find('?') {
            Some(i) => (&reference[..i], &reference[i..]),
            None => (reference, ""),
        };
        let merged = if ref_path.starts_with('/') {
            ref_path.to_string()
        } else if ref_path.is_empty() {
            // Same document, maybe another query.
            let base = self.path.split('?').next().unwrap_or("/");
            if query.is_empty() {
                return Ok(self.clone());
            }
            base.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!("{dir}{ref_path}")
        };
        // Remove dot segments.
        let mut out: Vec<&str> = Vec::new();
        let segs: Vec<&str> = merged.split('/').collect();
        for (n, seg) in segs.iter().enumerate() {
            let last = n + 1 == segs.len();
            match *seg {
                "." => {
                    if last {
                        out.push("");
                    }
                }
                ".." => {
                    if out.len() > 1 {
                        out.pop();
                    }
                    if last {
                        out.push("");
                    }
                }
                s => out.push(s),
            }
        }
        let mut path = out.join("/");
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        path.push_str(query);
        Ok(Url {
            authority: self.authority.clone(),
            host: self.host.clone(),
            port: self.port,
            path,
        })
    }
}

/// One segment of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct PlSegment {
    /// Media sequence number.
    pub msn: u64,
    /// `#EXTINF` duration, seconds.
    pub duration: f64,
    /// URI as written.
    pub uri: String,
}

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// A master playlist: the variant URIs as written, in order.
    Master(Vec<String>),
    /// A media playlist.
    Media(MediaPl),
}

/// A parsed media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPl {
    /// `#EXT-X-TARGETDURATION`, seconds (the longest `#EXTINF` if the tag is missing).
    pub target_duration: f64,
    /// `#EXT-X-MEDIA-SEQUENCE` (0 when absent).
    pub media_sequence: u64,
    /// The segments, in order.
    pub segments: Vec<PlSegment>,
    /// `#EXT-X-ENDLIST` was present.
    pub ended: bool,
}

/// Parses an M3U8 playlist (RFC 8216 §4). A playlist with `#EXT-X-STREAM-INF` is a master
/// playlist; otherwise a media playlist.
pub fn parse_playlist(text: &str) -> Result<Playlist, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(first) if first.trim_start_matches('\u{feff}') == "#EXTM3U" => {}
        _ => return Err("playlist does not start with #EXTM3U".into()),
    }
    let mut variants = Vec::new();
    let mut is_master = false;
    let mut want_variant_uri = false;
    let mut target: Option<f64> = None;
    let mut seq = 0u64;
    let mut ended = false;
    let mut segments = Vec::new();
    let mut extinf: Option<f64> = None;
    let mut longest = 0f64;
    for line in lines {
        if let Some(tag) = line.strip_prefix('#') {
            if tag.starts_with("EXT-X-STREAM-INF") {
                is_master = true;
                want_variant_uri = true;
            } else if let Some(v) = tag.strip_prefix("EXT-X-TARGETDURATION:") {
                target = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("bad #EXT-X-TARGETDURATION {v:?}"))?,
                );
            } else if let Some(v) = tag.strip_prefix("EXT-X-MEDIA-SEQUENCE:") {
                seq = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad #EXT-X-MEDIA-SEQUENCE {v:?}"))?;
            } else if let Some(v) = tag.strip_prefix("EXTINF:") {
                let d = v.split(',').next().unwrap_or("").trim();
                let d: f64 = d.parse().map_err(|_| format!("bad #EXTINF {v:?}"))?;
                longest = longest.max(d);
                extinf = Some(d);
            } else if tag == "EXT-X-ENDLIST" {
                ended = true;
            }
            // Other tags and comments are ignored.
            continue;
        }
        // A URI line.
        if want_variant_uri {
            variants.push(line.to_string());
            want_variant_uri = false;
        } else if !is_master {
            let duration = extinf
                .take()
                .ok_or_else(|| format!("segment {line:?} without #EXTINF"))?;
            segments.push(PlSegment {
                msn: seq + segments.len() as u64,
                duration,
                uri: line.to_string(),
            });
        }
    }
    if is_master {
        if variants.is_empty() {
            return Err("master playlist without a variant URI".into());
        }
        return Ok(Playlist::Master(variants));
    }
    let target_duration = match target {
        Some(t) if t > 0.0 => t,
        _ if longest > 0.0 => longest.ceil(),
        _ => 1.0,
    };
    Ok(Playlist::Media(MediaPl {
        target_duration,
        media_sequence: seq,
        segments,
        ended,
    }))
}

/// The segments a player should fetch after loading `pl`: on the first load (`next` is
/// `None`) the newest `START_SEGMENTS`, afterwards every segment from msn `next` on. Also
/// returns how many segments were skipped because they left the playlist before they were
/// fetched (the player fell behind, or the sequence restarted).
pub fn to_fetch(pl: &MediaPl, next: Option<u64>) -> (Vec<PlSegment>, u64) {
    let segs = &pl.segments;
    match next {
        None => (
            segs[segs.len().saturating_sub(START_SEGMENTS)..].to_vec(),
            0,
        ),
        Some(next) => {
            let first = pl.media_sequence;
            let end = first + segs.len() as u64;
            if next >= first {
                if next > end {
                    // The sequence went backwards (a restarted stream): start over.
                    return (
                        segs[segs.len().saturating_sub(START_SEGMENTS)..].to_vec(),
                        0,
                    );
                }
                (segs[(next - first) as usize..].to_vec(), 0)
            } else {
                (segs.to_vec(), first - next)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP response reading
// ---------------------------------------------------------------------------------------------

/// How the body of the current response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Content-Length: this many bytes are left.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked(ChunkState),
    /// Until the server closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the size line; the value so far, and whether an extension (`;...`) started.
    Size(u64, bool),
    /// In chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data (`true`: CR seen).
    DataEnd(bool),
    /// Reading trailer lines after the last chunk; `true` when the current line is empty so far.
    Trailer(bool),
    /// Done.
    Done,
}

/// Result of feeding bytes to a chunked decoder.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// `n` bytes consumed; `data` is the range of those that is body data.
    Data { used: usize, data: (usize, usize) },
    /// The body ended after `used` bytes.
    End { used: usize },
}

impl ChunkState {
    /// Advances through `buf`, stopping after one contiguous run of body data or at the end.
    fn feed(&mut self, buf: &[u8]) -> Result<Chunk, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            match *self {
                ChunkState::Size(v, ext) => {
                    let b = buf[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            *self = if v == 0 {
                                ChunkState::Trailer(true)
                            } else {
                                ChunkState::Data(v)
                            };
                        }
                        b'\r' => {}
                        _ if ext => {}
                        b';' | b' ' | b'\t' => *self = ChunkState::Size(v, true),
                        _ => {
                            let d = (b as char).to_digit(16).ok_or("bad chunk size")? as u64;
                            if v > (u64::MAX >> 8) {
                                return Err("chunk size overflow");
                            }
                            *self = ChunkState::Size(v * 16 + d, false);
                        }
                    }
                }
                ChunkState::Data(left) => {
                    let n = ((buf.len() - i) as u64).min(left) as usize;
                    let start = i;
                    *self = if left == n as u64 {
                        ChunkState::DataEnd(false)
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Chunk::Data {
                        used: start + n,
                        data: (start, start + n),
                    });
                }
                ChunkState::DataEnd(cr) => {
                    let b = buf[i];
                    i += 1;
                    match (b, cr) {
                        (b'\r', false) => *self = ChunkState::DataEnd(true),
                        (b'\n', _) => *self = ChunkState::Size(0, false),
                        _ => return Err("no CRLF after chunk data"),
                    }
                }
                ChunkState::Trailer(empty) => {
                    let b = buf[i];
                    i += 1;
                    match b {
                        b'\n' if empty => {
                            *self = ChunkState::Done;
                            return Ok(Chunk::End { used: i });
                        }
                        b'\n' => *self = ChunkState::Trailer(true),
                        b'\r' => {}
                        _ => *self = ChunkState::Trailer(false),
                    }
                }
                ChunkState::Done => return Ok(Chunk::End { used: i }),
            }
        }
        Ok(Chunk::Data {
            used: i,
            data: (i, i),
        })
    }
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes of the head.
    len: usize,
    status: u16,
    framing: Framing,
    /// The server closes the connection after this response.
    close: bool,
}

/// Parses a response head at the start of `buf`: `None` when it is not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<u64>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = v.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let framing = if status == 204 || status == 304 || status < 200 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(ChunkState::Size(0, false))
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::Close
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        close,
    }))
}

// ---------------------------------------------------------------------------------------------
// Players
// ---------------------------------------------------------------------------------------------

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The URL the player was given (master or media playlist).
    Top,
    /// The media playlist (after a master playlist).
    Media,
    /// A segment with this msn.
    Segment(u64),
}

/// Where a response is.
#[derive(Debug)]
enum Rx {
    /// Reading the head.
    Head,
    /// Reading the body.
    Body {
        status: u16,
        framing: Framing,
        close_after: bool,
    },
}

/// The request in flight.
struct Request {
    kind: Kind,
    /// When the request was written (fetch time starts).
    sent: Instant,
    /// Last time anything happened.
    progress: Instant,
    /// Request bytes not written yet.
    out: Vec<u8>,
    out_pos: usize,
    rx: Rx,
    /// Bytes of the response received (head included).
    got: u64,
    /// Body bytes received.
    body_len: u64,
    /// First body byte (TS check).
    first: Option<u8>,
    /// The connection had served a response before (a close before any byte is then the
    /// keep-alive race, retried once silently).
    reused: bool,
    retried: bool,
}

struct Conn {
    sock: TcpStream,
    /// Token generation (stale events of a previous socket are ignored).
    gen: u32,
    addr: SocketAddr,
    connecting: bool,
    /// Responses completed on this connection.
    served: u32,
}

#[derive(Default)]
struct Player {
    conn: Option<Conn>,
    gen: u32,
    top: Option<Url>,
    media: Option<Url>,
    req: Option<Request>,
    /// Head bytes, or a playlist body.
    text: Vec<u8>,
    /// Segments still to fetch: (msn, URL).
    queue: VecDeque<(u64, Url, f64)>,
    /// Next msn not yet queued (None before the first media playlist).
    next_msn: Option<u64>,
    target: f64,
    last_playlist: Vec<u8>,
    /// When the last playlist load began.
    loaded_at: Option<Instant>,
    /// Whether the last playlist changed.
    changed: bool,
    /// Since when a listed segment has been waiting (None: nothing waiting).
    waiting_since: Option<Instant>,
    stalled: bool,
    ended: bool,
    ever_connected: bool,
    /// Reload due (the timer that is current for this player).
    due: Option<Instant>,
    /// When the player started, until its first segment arrived.
    started: Option<Instant>,
    got_first: bool,
}

#[derive(Default)]
struct Errors {
    refused: u64,
    reset: u64,
    timeout: u64,
    protocol: u64,
    http_4xx: u64,
    http_5xx: u64,
}

#[derive(Default)]
struct Stats {
    errors: Errors,
    connections: u64,
    keepalive_retries: u64,
    playlists: u64,
    segments: u64,
    bytes: u64,
    listed_but_missing: u64,
    bad_ts: u64,
    stalls: u64,
    skipped: u64,
    ended_players: u64,
    seg_us: Vec<u32>,
    pl_us: Vec<u32>,
    startup_us: Vec<u32>,
    /// A few error messages, for the report.
    samples: Vec<String>,
}

impl Stats {
    fn note(&mut self, msg: String) {
        if self.samples.len() < 8 && !self.samples.contains(&msg) {
            self.samples.push(msg);
        }
    }
}

/// Kinds of failure of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Refused,
    Reset,
    Timeout,
    Protocol,
}

struct Bench {
    poll: Poll,
    players: Vec<Player>,
    stats: Stats,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    addrs: HashMap<(String, u16), SocketAddr>,
    end: Instant,
}

fn token(idx: usize, gen: u32) -> Token {
    Token(((gen as usize & 0xff) << 24) | idx)
}

impl Bench {
    fn resolve(&mut self, url: &Url) -> Result<SocketAddr, String> {
        let key = (url.host.clone(), url.port);
        if let Some(a) = self.addrs.get(&key) {
            return Ok(*a);
        }
        let a = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", url.host))?;
        self.addrs.insert(key, a);
        Ok(a)
    }

    fn schedule(&mut self, idx: usize, at: Instant) {
        self.players[idx].due = Some(at);
        self.timers.push(Reverse((at, idx)));
    }

    fn close(&mut self, idx: usize) {
        if let Some(mut c) = self.players[idx].conn.take() {
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }

    /// Starts a GET of `url` for `kind`, on the kept connection when it goes to the same
    /// address.
    fn request(&mut self, idx: usize, kind: Kind, url: &Url) {
        let now = Instant::now();
        let addr = match self.resolve(url) {
            Ok(a) => a,
            Err(e) => {
                self.stats.errors.refused += 1;
                self.stats.note(e);
                self.schedule(idx, now + RETRY);
                return;
            }
        };
        if self.players[idx]
            .conn
            .as_ref()
            .is_some_and(|c| c.addr != addr)
        {
            self.close(idx);
        }
        let mut out = Vec::with_capacity(128 + url.path.len());
        let _ = write!(
            out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-bench-hls\r\nAccept: */*\r\n\r\n",
            url.path, url.authority
        );
        let reused = self.players[idx]
            .conn
            .as_ref()
            .is_some_and(|c| c.served > 0);
        self.players[idx].req = Some(Request {
            kind,
            sent: now,
            progress: now,
            out,
            out_pos: 0,
            rx: Rx::Head,
            got: 0,
            body_len: 0,
            first: None,
            reused,
            retried: false,
        });
        self.players[idx].text.clear();
        self.send(idx);
    }

    /// Connects if needed and writes what is left of the request.
    fn send(&mut self, idx: usize) {
        if self.players[idx].conn.is_none() {
            let url = match self.players[idx].req.as_ref().map(|r| r.kind) {
                Some(Kind::Segment(_)) => self.players[idx].queue.front().map(|q| q.1.clone()),
                Some(Kind::Media) => self.players[idx].media.clone(),
                _ => self.players[idx].top.clone(),
            };
            let Some(url) = url else { return };
            let addr = match self.resolve(&url) {
                Ok(a) => a,
                Err(_) => return,
            };
            match TcpStream::connect(addr) {
                Ok(mut sock) => {
                    let p = &mut self.players[idx];
                    p.gen = p.gen.wrapping_add(1);
                    let gen = p.gen;
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        token(idx, gen),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.stats.note(format!("register: {e}"));
                        self.fail(idx, Fail::Refused);
                        return;
                    }
                    let _ = sock.set_nodelay(true);
                    self.stats.connections += 1;
                    self.players[idx].conn = Some(Conn {
                        sock,
                        gen,
                        addr,
                        connecting: true,
                        served: 0,
                    });
                    if let Some(r) = self.players[idx].req.as_mut() {
                        r.reused = false;
                    }
                }
                Err(e) => {
                    self.stats.note(format!("connect: {e}"));
                    let f = if e.kind() == ErrorKind::ConnectionRefused {
                        Fail::Refused
                    } else {
                        Fail::Reset
                    };
                    self.fail(idx, f);
                }
            }
            // Writable when connected.
            return;
        }
        let p = &mut self.players[idx];
        let (Some(c), Some(r)) = (p.conn.as_mut(), p.req.as_mut()) else {
            return;
        };
        if c.connecting {
            return;
        }
        while r.out_pos < r.out.len() {
            match c.sock.write(&r.out[r.out_pos..]) {
                Ok(n) => {
                    r.out_pos += n;
                    r.progress = Instant::now();
                    if r.out_pos == r.out.len() {
                        r.sent = r.progress;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!("send: {e}");
                    self.conn_lost(idx, msg);
                    return;
                }
            }
        }
    }

    /// The connection broke (reset or closed) while `req` was in flight.
    fn conn_lost(&mut self, idx: usize, msg: String) {
        self.close(idx);
        let p = &mut self.players[idx];
        let Some(r) = p.req.as_mut() else { return };
        if r.got == 0 && r.reused && !r.retried {
            // The server closed an idle keep-alive connection as the request went out:
            // browsers retry such a request on a new connection, and so do we.
            r.retried = true;
            r.out_pos = 0;
            r.progress = Instant::now();
            self.stats.keepalive_retries += 1;
            self.send(idx);
            return;
        }
        self.stats.note(msg);
        self.fail(idx, Fail::Reset);
    }

    /// A request failed: count it, drop the connection, and try again later.
    fn fail(&mut self, idx: usize, f: Fail) {
        let e = &mut self.stats.errors;
        match f {
            Fail::Refused => e.refused += 1,
            Fail::Reset => e.reset += 1,
            Fail::Timeout => e.timeout += 1,
            Fail::Protocol => e.protocol += 1,
        }
        self.close(idx);
        self.players[idx].req = None;
        self.players[idx].text.clear();
        // The same request is tried again (segments stay queued).
        self.schedule(idx, Instant::now() + RETRY);
    }

    /// What a player does next when it has no request in flight: fetch the next segment, or
    /// wait for the reload.
    fn next(&mut self, idx: usize) {
        let now = Instant::now();
        if now >= self.end {
            self.close(idx);
            return;
        }
        let p = &self.players[idx];
        if p.req.is_some() {
            return;
        }
        if let Some((msn, url, _)) = p.queue.front() {
            let (msn, url) = (*msn, url.clone());
            self.request(idx, Kind::Segment(msn), &url);
            return;
        }
        if p.ended {
            self.close(idx);
            return;
        }
        match (p.media.clone(), p.loaded_at) {
            (Some(media), Some(at)) => {
                let wait = if p.changed { p.target } else { p.target / 2.0 };
                let due = at + Duration::from_secs_f64(wait);
                if due <= now {
                    self.request(idx, Kind::Media, &media);
                } else {
                    self.schedule(idx, due);
                }
            }
            _ => {
                let top = p.top.clone().expect("players have a URL");
                if p.started.is_none() {
                    self.players[idx].started = Some(now);
                }
                self.request(idx, Kind::Top, &top);
            }
        }
    }

    fn on_event(&mut self, idx: usize, gen: u8, ev: &mio::event::Event, buf: &mut [u8]) {
        let Some(c) = self.players[idx].conn.as_mut() else {
            return;
        };
        if (c.gen & 0xff) as u8 != gen {
            return;
        }
        if c.connecting {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed() || ev.is_write_closed()) {
                return;
            }
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.stats.note(format!("connect: {e}"));
                    let f = if e.kind() == ErrorKind::ConnectionRefused {
                        Fail::Refused
                    } else {
                        Fail::Reset
                    };
                    self.fail(idx, f);
                    return;
                }
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => {
                    c.connecting = false;
                    self.players[idx].ever_connected = true;
                    if let Some(r) = self.players[idx].req.as_mut() {
                        r.progress = Instant::now();
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    self.stats.note(format!("connect: {e}"));
                    self.fail(idx, Fail::Refused);
                    return;
                }
            }
        }
        if ev.is_writable() {
            self.send(idx);
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(idx, buf);
        }
    }

    /// Reads until the socket would block.
    fn read(&mut self, idx: usize, buf: &mut [u8]) {
        loop {
            let Some(c) = self.players[idx].conn.as_mut() else {
                return;
            };
            match c.sock.read(buf) {
                Ok(0) => {
                    self.on_eof(idx);
                    return;
                }
                Ok(n) => {
                    if !self.on_bytes(idx, &buf[..n]) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.players[idx].req.is_some() {
                        self.conn_lost(idx, format!("recv: {e}"));
                    } else {
                        self.close(idx);
                    }
                    return;
                }
            }
        }
    }

    fn on_eof(&mut self, idx: usize) {
        let p = &mut self.players[idx];
        match p.req.as_mut() {
            None => self.close(idx), // an idle keep-alive connection closed
            Some(r) => {
                if let Rx::Body {
                    framing: Framing::Close,
                    ..
                } = r.rx
                {
                    self.close(idx);
                    self.complete(idx);
                } else {
                    self.conn_lost(idx, "connection closed mid-response".into());
                }
            }
        }
    }

    /// Handles received bytes; false when the connection was dropped.
    fn on_bytes(&mut self, idx: usize, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let p = &mut self.players[idx];
            let Some(r) = p.req.as_mut() else {
                self.stats
                    .note("bytes from the server with no request in flight".into());
                self.stats.errors.protocol += 1;
                self.close(idx);
                return false;
            };
            r.got += data.len() as u64;
            r.progress = Instant::now();
            match r.rx {
                Rx::Head => {
                    // Usually the whole head arrives in one read: parse it in place, and keep
                    // bytes only of a head that is not complete yet.
                    let old = p.text.len();
                    let parsed = if old == 0 {
                        parse_head(data)
                    } else {
                        p.text.extend_from_slice(data);
                        parse_head(&p.text)
                    };
                    match parsed {
                        Ok(None) => {
                            if old == 0 {
                                p.text.extend_from_slice(data);
                            }
                            if p.text.len() > 64 << 10 {
                                self.stats.note("response head over 64 KiB".into());
                                self.fail(idx, Fail::Protocol);
                                return false;
                            }
                            return true;
                        }
                        Err(e) => {
                            self.stats.note(e);
                            self.fail(idx, Fail::Protocol);
                            return false;
                        }
                        Ok(Some(Head {
                            len: used,
                            status,
                            framing,
                            close,
                        })) => {
                            r.rx = Rx::Body {
                                status,
                                framing,
                                close_after: close,
                            };
                            // The body starts `used - old` bytes into `data`.
                            let rest = used - old;
                            p.text.clear();
                            if p.text.capacity() > 64 << 10 {
                                p.text = Vec::new();
                            }
                            data = &data[rest..];
                            if matches!(framing, Framing::Length(0)) {
                                self.complete(idx);
                                if !data.is_empty() {
                                    return self.extra_bytes(idx);
                                }
                                return self.players[idx].conn.is_some();
                            }
                        }
                    }
                }
                Rx::Body {
                    status,
                    ref mut framing,
                    close_after: _,
                } => {
                    let keep = status == 200 && !matches!(r.kind, Kind::Segment(_));
                    let (body, used, done) = match framing {
                        Framing::Length(left) => {
                            let n = (data.len() as u64).min(*left) as usize;
                            *left -= n as u64;
                            (&data[..n], n, *left == 0)
                        }
                        Framing::Close => (data, data.len(), false),
                        Framing::Chunked(st) => match st.feed(data) {
                            Ok(Chunk::Data { used, data: (a, b) }) => (&data[a..b], used, false),
                            Ok(Chunk::End { used }) => (&data[..0], used, true),
                            Err(e) => {
                                self.stats.note(format!("chunked body: {e}"));
                                self.fail(idx, Fail::Protocol);
                                return false;
                            }
                        },
                    };
                    if r.first.is_none() && !body.is_empty() {
                        r.first = Some(body[0]);
                    }
                    r.body_len += body.len() as u64;
                    if keep {
                        if p.text.len() + body.len() > MAX_TEXT {
                            self.stats.note("playlist over 4 MiB".into());
                            self.fail(idx, Fail::Protocol);
                            return false;
                        }
                        p.text.extend_from_slice(body);
                    }
                    data = &data[used..];
                    if done {
                        self.complete(idx);
                        if !data.is_empty() {
                            return self.extra_bytes(idx);
                        }
                        return self.players[idx].conn.is_some();
                    }
                }
            }
        }
        true
    }

    /// Bytes after a complete response although only one request was sent.
    fn extra_bytes(&mut self, idx: usize) -> bool {
        self.stats
            .note("bytes after the end of a response (wrong Content-Length?)".into());
        self.stats.errors.protocol += 1;
        self.close(idx);
        false
    }

    /// The response to the request in flight is complete.
    fn complete(&mut self, idx: usize) {
        let now = Instant::now();
        let p = &mut self.players[idx];
        let Some(r) = p.req.take() else { return };
        let Rx::Body {
            status,
            close_after,
            ..
        } = r.rx
        else {
            return;
        };
        if let Some(c) = p.conn.as_mut() {
            c.served += 1;
        }
        if close_after {
            self.close(idx);
        }
        let us = now.duration_since(r.sent).as_micros().min(u32::MAX as u128) as u32;
        let p = &mut self.players[idx];
        if !(200..300).contains(&status) {
            let what = match r.kind {
                Kind::Segment(msn) => format!("segment {msn}"),
                _ => "playlist".to_string(),
            };
            self.stats.note(format!("HTTP {status} for {what}"));
            if status >= 500 {
                self.stats.errors.http_5xx += 1;
            } else {
                self.stats.errors.http_4xx += 1;
            }
            match r.kind {
                Kind::Segment(_) => {
                    self.stats.listed_but_missing += 1;
                    p.queue.pop_front();
                    self.segment_done(idx, now);
                    self.next(idx);
                }
                _ => self.schedule(idx, now + RETRY),
            }
            return;
        }
        match r.kind {
            Kind::Segment(_) => {
                self.stats.segments += 1;
                self.stats.bytes += r.body_len;
                self.stats.seg_us.push(us);
                if r.first != Some(0x47) || r.body_len % 188 != 0 {
                    self.stats.bad_ts += 1;
                    self.stats.note(format!(
                        "not MPEG-TS: {} bytes, first byte {:?}",
                        r.body_len, r.first
                    ));
                }
                if !p.got_first {
                    p.got_first = true;
                    if let Some(t) = p.started {
                        let us = now.duration_since(t).as_micros().min(u32::MAX as u128) as u32;
                        self.stats.startup_us.push(us);
                    }
                }
                p.queue.pop_front();
                self.segment_done(idx, now);
                self.next(idx);
            }
            Kind::Top | Kind::Media => {
                self.stats.playlists += 1;
                self.stats.bytes += r.body_len;
                self.stats.pl_us.push(us);
                let text = std::mem::take(&mut p.text);
                self.on_playlist(idx, r.kind, r.sent, text);
            }
        }
    }

    fn segment_done(&mut self, idx: usize, now: Instant) {
        let p = &mut self.players[idx];
        p.stalled = false;
        p.waiting_since = if p.queue.is_empty() { None } else { Some(now) };
    }

    fn on_playlist(&mut self, idx: usize, kind: Kind, sent: Instant, text: Vec<u8>) {
        let now = Instant::now();
        let parsed = std::str::from_utf8(&text)
            .map_err(|_| "playlist is not UTF-8".to_string())
            .and_then(parse_playlist);
        let p = &mut self.players[idx];
        let base = match kind {
            Kind::Top => p.top.clone(),
            _ => p.media.clone(),
        }
        .expect("a playlist was requested from a URL");
        match parsed {
            Err(e) => {
                self.stats.note(e);
                self.stats.errors.protocol += 1;
                self.schedule(idx, now + RETRY);
            }
            Ok(Playlist::Master(variants)) => {
                if kind == Kind::Media {
                    self.stats
                        .note("variant playlist is a master playlist".into());
                    self.stats.errors.protocol += 1;
                    self.schedule(idx, now + RETRY);
                    return;
                }
                match base.join(&variants[0]) {
                    Ok(u) => {
                        p.media = Some(u.clone());
                        self.request(idx, Kind::Media, &u);
                    }
                    Err(e) => {
                        self.stats.note(e);
                        self.stats.errors.protocol += 1;
                        self.schedule(idx, now + RETRY);
                    }
                }
            }
            Ok(Playlist::Media(pl)) => {
                if p.media.is_none() {
                    p.media = Some(base.clone());
                }
                p.target = pl.target_duration;
                p.changed = text != p.last_playlist;
                p.last_playlist = text;
                p.loaded_at = Some(sent);
                p.ended = pl.ended;
                let (new, skipped) = to_fetch(&pl, p.next_msn);
                // Segments queued from the previous load but not fetched yet stay first.
                let queued_end = p.queue.back().map(|q| q.0 + 1);
                let mut add = 0;
                for s in new {
                    if queued_end.is_some_and(|e| s.msn < e) {
                        continue;
                    }
                    match base.join(&s.uri) {
                        Ok(u) => {
                            p.queue.push_back((s.msn, u, s.duration));
                            add += 1;
                        }
                        Err(e) => {
                            self.stats.note(e);
                            self.stats.errors.protocol += 1;
                        }
                    }
                }
                let p = &mut self.players[idx];
                if skipped > 0 && p.next_msn.is_some() {
                    self.stats.skipped += skipped;
                }
                if let Some(last) = pl.segments.last() {
                    p.next_msn = Some(last.msn + 1);
                } else if p.next_msn.is_none() {
                    p.next_msn = Some(pl.media_sequence);
                }
                if add > 0 && p.waiting_since.is_none() {
                    p.waiting_since = Some(now);
                }
                if p.ended && p.queue.is_empty() {
                    self.stats.ended_players += 1;
                }
                self.next(idx);
            }
        }
    }

    /// Timeouts and stalls.
    fn sweep(&mut self, now: Instant) {
        for idx in 0..self.players.len() {
            let p = &mut self.players[idx];
            if let (Some(since), false) = (p.waiting_since, p.stalled) {
                if p.target > 0.0 && now.duration_since(since).as_secs_f64() > p.target {
                    p.stalled = true;
                    self.stats.stalls += 1;
                }
            }
            let timed_out = p
                .req
                .as_ref()
                .is_some_and(|r| now.duration_since(r.progress) > REQUEST_TIMEOUT);
            if timed_out {
                let what = match p.req.as_ref().map(|r| r.kind) {
                    Some(Kind::Segment(m)) => format!("segment {m}"),
                    _ => "playlist".into(),
                };
                self.stats
                    .note(format!("no progress for 10 s on a request for {what}"));
                self.fail(idx, Fail::Timeout);
            }
        }
    }
}

fn percentiles(v: &mut [u32]) -> Value {
    if v.is_empty() {
        return json!({"p50": null, "p99": null, "max": null});
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] as f64 / 10.0).round() / 100.0
    };
    json!({"p50": at(0.50), "p99": at(0.99), "max": at(1.0)})
}

/// Raises the soft open-files limit to cover `need` descriptors (up to the hard limit).
fn raise_nofile(need: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_cur < need as libc::rlim_t
        {
            lim.rlim_cur = (need as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs `cfg.players` HLS players for `cfg.ramp_ms` ms + `cfg.seconds` s on one event loop on
/// the calling thread and returns the measurements (see the module documentation).
pub fn run(cfg: HlsConfig) -> Value {
    let n = cfg.players;
    raise_nofile(n as u64 + 256);
    let streams = cfg.publishers.max(1);
    let mut players = Vec::with_capacity(n);
    let mut bad_url = None;
    for j in 0..n {
        let url = cfg.url_template.replace("{i}", &(j % streams).to_string());
        match Url::parse(&url) {
            Ok(u) => players.push(Player {
                top: Some(u),
                ..Player::default()
            }),
            Err(e) => {
                bad_url = Some(e);
                break;
            }
        }
    }
    if let Some(e) = bad_url {
        return json!({"ok": false, "players": n, "error": e});
    }
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => return json!({"ok": false, "players": n, "error": format!("poll: {e}")}),
    };
    let start = Instant::now();
    let ramp = Duration::from_millis(cfg.ramp_ms);
    let end = start + ramp + Duration::from_secs_f64(cfg.seconds.max(0.0));
    let mut b = Bench {
        poll,
        players,
        stats: Stats::default(),
        timers: BinaryHeap::new(),
        addrs: HashMap::new(),
        end,
    };
    for j in 0..n {
        let at = start + ramp.mul_f64(j as f64 / n.max(1) as f64);
        b.schedule(j, at);
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 << 10];
    let mut next_sweep = start + SWEEP;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Due timers.
        while let Some(&Reverse((at, idx))) = b.timers.peek() {
            if at > now {
                break;
            }
            b.timers.pop();
            if b.players[idx].due != Some(at) {
                continue; // superseded
            }
            b.players[idx].due = None;
            if b.players[idx].req.is_some() {
                continue;
            }
            b.next(idx);
        }
        if now >= next_sweep {
            b.sweep(now);
            next_sweep = now + SWEEP;
        }
        let mut wake = next_sweep.min(end);
        if let Some(&Reverse((at, _))) = b.timers.peek() {
            wake = wake.min(at);
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        if let Err(e) = b.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            b.stats.note(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            let t = ev.token().0;
            let idx = t & 0xff_ffff;
            let gen = (t >> 24) as u8;
            if idx < b.players.len() {
                b.on_event(idx, gen, ev, &mut buf);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let connected = b.players.iter().filter(|p| p.ever_connected).count();
    // Requests still in flight at the end are neither errors nor fetches; a waiting segment
    // counts as a stall only if it waited longer than a target duration already.
    b.sweep(Instant::now());
    let s = &mut b.stats;
    let e = &s.errors;
    let errors = e.refused + e.reset + e.timeout + e.protocol + e.http_4xx + e.http_5xx;
    let ok = errors == 0
        && s.listed_but_missing == 0
        && s.bad_ts == 0
        && s.stalls == 0
        && s.segments > 0;
    json!({
        "ok": ok,
        "players": n,
        "connected": connected,
        "playlists": s.playlists,
        "segments": s.segments,
        "bytes": s.bytes,
        "errors": {
            "refused": e.refused,
            "reset": e.reset,
            "timeout": e.timeout,
            "protocol": e.protocol,
            "http_4xx": e.http_4xx,
            "http_5xx": e.http_5xx,
        },
        "listed_but_missing": s.listed_but_missing,
        "bad_ts": s.bad_ts,
        "segment_fetch_ms": percentiles(&mut s.seg_us),
        "playlist_fetch_ms": percentiles(&mut s.pl_us),
        "stalls": s.stalls,
        "startup_ms": percentiles(&mut s.startup_us),
        "mbit_s": ((s.bytes as f64 * 8.0 / elapsed.max(1e-9) / 1e6) * 100.0).round() / 100.0,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "connections": s.connections,
        "keepalive_retries": s.keepalive_retries,
        "skipped": s.skipped,
        "ended_players": s.ended_players,
        "error_samples": s.samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(text: &str) -> MediaPl {
        match parse_playlist(text).unwrap() {
            Playlist::Media(m) => m,
            other => panic!("not media: {other:?}"),
        }
    }

    #[test]
    fn master_playlist_first_variant_resolved() {
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n\
                    #EXT-X-STREAM-INF:BANDWIDTH=1250000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360\n\
                    1_2/index.m3u8\n\
                    #EXT-X-STREAM-INF:BANDWIDTH=500000\nlow/index.m3u8\n";
        let Playlist::Master(v) = parse_playlist(text).unwrap() else {
            panic!("not master")
        };
        assert_eq!(v, vec!["1_2/index.m3u8", "low/index.m3u8"]);
        let base = Url::parse("http://127.0.0.1:8080/hls/live/index.m3u8").unwrap();
        let u = base.join(&v[0]).unwrap();
        assert_eq!(u.path, "/hls/live/1_2/index.m3u8");
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.port, 8080);
    }

    #[test]
    fn media_playlist_live() {
        let m = media(
            "#EXTM3U\r\n#EXT-X-VERSION:3\r\n#EXT-X-TARGETDURATION:3\r\n#EXT-X-MEDIA-SEQUENCE:7\r\n\
             #EXTINF:2.000,\r\n1700_7.ts\r\n#EXTINF:2.500,\r\n1700_8.ts\r\n\
             #EXTINF:1.960,title\r\n1700_9.ts\r\n",
        );
        assert_eq!(m.target_duration, 3.0);
        assert_eq!(m.media_sequence, 7);
        assert!(!m.ended);
        let msns: Vec<u64> = m.segments.iter().map(|s| s.msn).collect();
        assert_eq!(msns, vec![7, 8, 9]);
        assert_eq!(m.segments[1].uri, "1700_8.ts");
        assert_eq!(m.segments[2].duration, 1.96);
    }

    #[test]
    fn media_playlist_endlist_and_defaults() {
        let m = media("#EXTM3U\n#EXTINF:4.2,\na.ts\n#EXTINF:3,\nb.ts\n#EXT-X-ENDLIST\n");
        assert!(m.ended);
        assert_eq!(m.media_sequence, 0);
        assert_eq!(m.target_duration, 5.0); // longest EXTINF rounded up when the tag is missing
        assert_eq!(m.segments[1].msn, 1);
    }

    #[test]
    fn rejects_non_playlists() {
        assert!(parse_playlist("<html>").is_err());
        assert!(parse_playlist("#EXTM3U\nseg.ts\n").is_err()); // URI without #EXTINF
        assert!(parse_playlist("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n").is_err());
        assert!(parse_playlist("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n").is_err());
    }

    #[test]
    fn url_resolution() {
        let base = Url::parse("http://example.com/hls/test.m3u8?token=1").unwrap();
        assert_eq!(base.port, 80);
        assert_eq!(base.host, "example.com");
        assert_eq!(base.join("test-5.ts").unwrap().path, "/hls/test-5.ts");
        assert_eq!(base.join("./a/b.ts").unwrap().path, "/hls/a/b.ts");
        assert_eq!(base.join("../x.ts?s=2").unwrap().path, "/x.ts?s=2");
        assert_eq!(base.join("../../../x.ts").unwrap().path, "/x.ts");
        assert_eq!(base.join("/abs/y.ts").unwrap().path, "/abs/y.ts");
        let other = base.join("http://other:81/z.ts").unwrap();
        assert_eq!(
            (other.host.as_str(), other.port, other.path.as_str()),
            ("other", 81, "/z.ts")
        );
        assert_eq!(Url::parse("http://h:1").unwrap().path, "/");
        assert!(Url::parse("https://h/").is_err());
        let v6 = Url::parse("http://[::1]:8080/a").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
    }

    #[test]
    fn fetch_plan_follows_media_sequence() {
        let pl = |seq: u64, n: usize| MediaPl {
            target_duration: 2.0,
            media_sequence: seq,
            segments: (0..n)
                .map(|i| PlSegment {
                    msn: seq + i as u64,
                    duration: 2.0,
                    uri: format!("{}.ts", seq + i as u64),
                })
                .collect(),
            ended: false,
        };
        let msns = |v: Vec<PlSegment>| v.iter().map(|s| s.msn).collect::<Vec<_>>();
        // First load: the newest three.
        let (v, skipped) = to_fetch(&pl(10, 5), None);
        assert_eq!((msns(v), skipped), (vec![12, 13, 14], 0));
        let (v, _) = to_fetch(&pl(10, 2), None);
        assert_eq!(msns(v), vec![10, 11]);
        // Later: everything from the next one on, nothing twice.
        let (v, skipped) = to_fetch(&pl(11, 5), Some(15));
        assert_eq!((msns(v), skipped), (vec![15], 0));
        let (v, _) = to_fetch(&pl(11, 5), Some(16));
        assert!(v.is_empty());
        // Fell behind: segments 8..10 left the playlist.
        let (v, skipped) = to_fetch(&pl(11, 3), Some(8));
        assert_eq!((msns(v), skipped), (vec![11, 12, 13], 3));
        // Sequence went backwards (restarted stream): start over.
        let (v, _) = to_fetch(&pl(0, 4), Some(100));
        assert_eq!(msns(v), vec![1, 2, 3]);
    }

    #[test]
    fn response_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 376\r\n\r\nG")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.len, h.status, h.framing, h.close),
            (40, 200, Framing::Length(376), false)
        );
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked(ChunkState::Size(0, false)));
        assert!(h.close);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.close), (Framing::Close, true));
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.framing), (404, Framing::Length(0)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"<html>\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_decoding() {
        let body =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        // Fed whole and byte by byte.
        for step in [body.len(), 1, 3] {
            let mut st = ChunkState::Size(0, false);
            let mut out = Vec::new();
            let mut done = false;
            for piece in body.chunks(step) {
                let mut rest = piece;
                while !rest.is_empty() {
                    match st.feed(rest).unwrap() {
                        Chunk::Data { used, data: (a, b) } => {
                            out.extend_from_slice(&rest[a..b]);
                            rest = &rest[used..];
                        }
                        Chunk::End { used } => {
                            assert_eq!(used, rest.len());
                            rest = &rest[used..];
                            done = true;
                        }
                    }
                }
            }
            assert!(done, "step {step}");
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
        }
        let mut st = ChunkState::Size(0, false);
        assert!(st.feed(b"zz\r\n").is_err());
    }
}
