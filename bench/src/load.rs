//! `sluice-bench load`: one mio event loop driving every RTMP connection of a load test.
//!
//! * Publishers (`--publishers M`) loop an FLV fixture at real time with continuous
//!   timestamps; every coded audio/video message they send is remembered as
//!   `(payload length, 16 bytes from the middle of the payload, message type)` → (send
//!   instant, video sequence number), newest send wins.
//! * Players (`--players N`) play `template({j % M})`; every coded frame they receive is
//!   looked up by the same key: latency = arrival of the read that completed the message −
//!   publisher send instant. The matched video sequence number of a player's first frame tells
//!   how many frames the publisher sent from there on: that is the delivered-% denominator.
//! * Errors are classified per connection: refused, reset (RST, EPIPE, or the server closing
//!   the TCP connection), timeout (no data for 10 s), protocol (bad bytes, `_error`, a failing
//!   `onStatus`), other (local: EMFILE, EADDRNOTAVAIL, ...).
//!
//! Timeline (t0 = start): publishers connect at t0; players start at t0 + warmup + j × ramp;
//! the HLS engine (if any) starts at t0 + warmup. With an in-process publisher, publishers stop
//! sending at `t_stop` = t0 + warmup + (N−1) × ramp + seconds and players stay until they have
//! received the last frame sent (or `DRAIN` passes), so in-flight frames are not counted as
//! lost. Without one, each player plays `seconds` from its own TCP connect.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::amf0::{self, Amf0};
use dtsc::flv::{self, TagKind};
use dtsc::rtmp::chunk::{msg_type, ChunkDecoder, ChunkEncoder, Message};
use dtsc::rtmp::handshake::ClientHandshake;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::hls;

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_AUDIO: u32 = 4;
const CSID_DATA: u32 = 5;
const CSID_VIDEO: u32 = 6;
const CSID_STREAM: u32 = 8;
/// No data for this long: a timeout error.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the publishers stop, how long players may take to receive the last frame sent.
const DRAIN: Duration = Duration::from_secs(5);
/// A wall-clock gap between two video frames' arrivals longer than this is a stall.
const STALL: Duration = Duration::from_secs(1);
/// Per-read buffer shared by every connection (keeps each decoder's buffer small too).
const READ_BUF: usize = 16 << 10;
const PUBLISH_CHUNK_SIZE: u32 = 4096;

pub struct LoadConfig {
    pub publish_url: Option<String>,
    pub publishers: usize,
    pub file: Option<PathBuf>,
    pub play_url: Option<String>,
    pub players: usize,
    pub hls_url: Option<String>,
    pub hls_players: usize,
    pub seconds: f64,
    pub ramp_ms: u64,
    pub warmup_ms: u64,
    pub json: Option<PathBuf>,
    pub fps: f64,
    /// No human summary on stdout (the caller reports from the returned document).
    pub quiet: bool,
}

// ---------------------------------------------------------------------------------------------
// URLs

/// Parts of an rtmp:// URL.
pub struct Url {
    pub addr: SocketAddr,
    pub app: String,
    pub stream: String,
    pub tc_url: String,
}

pub fn parse_url(url: &str) -> Result<Url> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| anyhow!("{url}: not an rtmp:// URL"))?;
    let (hostport, path) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("{url}: no /APP/STREAM"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().context("port")?),
        None => (hostport.to_string(), 1935),
    };
    // APP may contain a slash (app/instance) with some servers: the stream is the last part.
    let (app, stream) = path
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("{url}: no STREAM after APP"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host}: no address"))?;
    Ok(Url {
        tc_url: format!("rtmp://{hostport}/{app}"),
        addr,
        app: app.to_string(),
        stream: stream.to_string(),
    })
}

fn expand(template: &str, i: usize) -> String {
    template.replace("{i}", &i.to_string())
}

// ---------------------------------------------------------------------------------------------
// Packet keys

/// Identifies a media payload independently of the server's timestamp handling.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    len: u32,
    mid: [u8; 16],
    typ: u8,
}

fn key_of(typ: u8, payload: &[u8]) -> Key {
    let mut mid = [0u8; 16];
    let start = (payload.len() / 2).saturating_sub(8);
    let end = (start + 16).min(payload.len());
    mid[..end - start].copy_from_slice(&payload[start..end]);
    Key {
        len: payload.len() as u32,
        mid,
        typ,
    }
}

/// FxHash-style hasher: the key bytes are already high-entropy.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(a))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Video/audio sequence headers (and video info frames) are not coded frames.
fn is_config(typ: u8, p: &[u8]) -> bool {
    let Some(&b0) = p.first() else {
        return true;
    };
    if typ == msg_type::VIDEO {
        if b0 & 0x80 != 0 {
            // Enhanced RTMP: packet type 0 = sequence start, 5 = metadata, 2 = sequence end.
            return matches!(b0 & 0x0f, 0 | 2 | 4 | 5);
        }
        b0 >> 4 == 5 || (matches!(b0 & 0x0f, 7 | 12) && p.get(1).is_none_or(|&t| t != 1))
    } else {
        b0 >> 4 == 10 && p.get(1) == Some(&0)
    }
}

fn is_key(p: &[u8]) -> bool {
    p.first().is_some_and(|b| (b >> 4) & 7 == 1)
}

// ---------------------------------------------------------------------------------------------
// Fixture

struct FixTag {
    typ: u8,
    csid: u32,
    /// ms from the first tag.
    ts: u64,
    body: Range<usize>,
    /// Script / sequence header: sent on the first pass only.
    first_pass_only: bool,
}

struct Fixture {
    data: Vec<u8>,
    tags: Vec<FixTag>,
    /// Added to the timestamps on each loop.
    duration: u64,
    video_frames: usize,
    distinct_keys: usize,
    coded: usize,
}

fn load_fixture(path: &std::path::Path) -> Result<Fixture> {
    let file = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let (_, mut off) = flv::parse_file_header(&file)?
        .ok_or_else(|| anyhow!("{}: truncated FLV header", path.display()))?;
    let mut data = Vec::with_capacity(file.len());
    let mut tags = Vec::new();
    let mut first_ts = None;
    let mut last_v = None::<u64>;
    let mut nv = 0usize;
    let mut coded = 0;
    while let Some((tag, used)) = flv::parse_tag(&file[off..])? {
        off += used;
        let ts0 = *first_ts.get_or_insert(u64::from(tag.timestamp));
        let ts = u64::from(tag.timestamp).saturating_sub(ts0);
        let start = data.len();
        let (typ, csid, first_only) = match tag.kind {
            TagKind::Script => {
                // As ffmpeg and OBS send it: @setDataFrame onMetaData {...}.
                amf0::encode(&Amf0::string("@setDataFrame"), &mut data);
                (msg_type::DATA_AMF0, CSID_DATA, true)
            }
            TagKind::Audio => (
                msg_type::AUDIO,
                CSID_AUDIO,
                is_config(msg_type::AUDIO, tag.body),
            ),
            TagKind::Video => (
                msg_type::VIDEO,
                CSID_VIDEO,
                is_config(msg_type::VIDEO, tag.body),
            ),
        };
        data.extend_from_slice(tag.body);
        if !first_only {
            coded += 1;
            if typ == msg_type::VIDEO {
                nv += 1;
                last_v = Some(ts);
            }
        }
        tags.push(FixTag {
            typ,
            csid,
            ts,
            body: start..data.len(),
            first_pass_only: first_only,
        });
    }
    if nv == 0 {
        bail!("{}: no video frames", path.display());
    }
    // The loop length is the video duration (last frame + one frame interval), so video stays
    // continuous across loops; audio frames at or past it are dropped so audio timestamps do
    // not go backwards at the loop point (the audio gap there is at most about one frame).
    let vint = last_v.unwrap_or(0) / (nv as u64 - 1).max(1);
    let duration = last_v.unwrap_or(0) + vint.max(1);
    let before = tags.len();
    tags.retain(|t| !(t.typ == msg_type::AUDIO && !t.first_pass_only && t.ts >= duration));
    let dropped = before - tags.len();
    let keys: std::collections::HashSet<Key> = tags
        .iter()
        .filter(|t| !t.first_pass_only)
        .map(|t| key_of(t.typ, &data[t.body.clone()]))
        .collect();
    let coded = coded - dropped;
    Ok(Fixture {
        data,
        tags,
        duration,
        video_frames: nv,
        distinct_keys: keys.len(),
        coded,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ErrKind {
    Refused,
    Reset,
    Timeout,
    Protocol,
    Other,
}

const KINDS: [(ErrKind, &str); 5] = [
    (ErrKind::Refused, "refused"),
    (ErrKind::Reset, "reset"),
    (ErrKind::Timeout, "timeout"),
    (ErrKind::Protocol, "protocol"),
    (ErrKind::Other, "other"),
];

struct ConnErr {
    kind: ErrKind,
    msg: String,
}

fn io_err(what: &str, e: io::Error) -> ConnErr {
    let kind = match e.kind() {
        ErrorKind::ConnectionRefused => ErrKind::Refused,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => ErrKind::Reset,
        ErrorKind::TimedOut => ErrKind::Timeout,
        _ => ErrKind::Other,
    };
    ConnErr {
        kind,
        msg: format!("{what}: {e}"),
    }
}

fn proto(msg: impl Into<String>) -> ConnErr {
    ConnErr {
        kind: ErrKind::Protocol,
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Per-connection and per-role state

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshake,
    /// connect sent, waiting for its _result.
    Connect,
    /// createStream sent.
    CreateStream,
    /// play / publish sent, waiting for / past onStatus.
    Started,
    /// Publisher: Publish.Start received, media flowing.
    Streaming,
}

#[derive(Clone, Copy)]
enum Role {
    Publisher(usize),
    Player(usize),
}

struct Conn {
    sock: TcpStream,
    role: Role,
    phase: Phase,
    hs: Option<Box<ClientHandshake>>,
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    out: Vec<u8>,
    out_pos: usize,
    received: u64,
    acked: u64,
    window: u32,
    stream_id: u32,
    t_start: Instant,
    last_rx: Instant,
    last_tx: Instant,
    /// Index into the parsed URLs.
    url: usize,
}

#[derive(Default)]
struct PlayerStats {
    /// When the play command was queued: packets published before it came from the server's
    /// buffer (join backlog) and are kept out of the live latency distribution.
    play_sent: Option<Instant>,
    started: bool,
    connected: bool,
    finished: bool,
    error: Option<ErrKind>,
    connect_ms: Option<f64>,
    first_frame_ms: Option<f64>,
    first_key_ms: Option<f64>,
    video: u64,
    audio: u64,
    video_bytes: u64,
    audio_bytes: u64,
    bytes: u64,
    backwards: u64,
    gaps: u64,
    last_ts: [Option<u64>; 2],
    video_ts_first: Option<u64>,
    video_ts_last: u64,
    /// Publisher sequence number of the first matched video frame, and video frames counted
    /// from there.
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    since_first_seq: u64,
    /// Matched frames whose sequence number was not larger than the previous one.
    reordered: u64,
    matched: u64,
    unmatched: u64,
    /// Received the last frame its publisher sent.
    got_last: bool,
    /// Arrival of the last video frame, for stalls (wall-clock gaps between two frames).
    last_video_at: Option<Instant>,
    /// Gaps of more than [`STALL`] between two video frames' arrivals (or after the last one,
    /// until the player's end).
    stalls: u64,
    max_stall_ms: f64,
    /// Video frames missing in timestamp gaps (no in-process publisher).
    missing: u64,
}

#[derive(Default)]
struct PubState {
    /// key → (newest send instant, video sequence number or u64::MAX for audio).
    sent: FxMap<Key, (Instant, u64)>,
    start: Option<Instant>,
    next: usize,
    pass: u64,
    video_sent: u64,
    messages: u64,
    bytes: u64,
    stopped: bool,
    error: Option<ErrKind>,
}

/// Latency histogram: 10 µs buckets to 100 ms, then 1 ms buckets to 120 s.
struct Hist {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            fine: vec![0; 10_000],
            coarse: vec![0; 120_000],
            count: 0,
            max_us: 0,
        }
    }
    fn record(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        self.count += 1;
        self.max_us = self.max_us.max(us);
        if us < 100_000 {
            self.fine[(us / 10) as usize] += 1;
        } else {
            let i = ((us / 1000) as usize).min(self.coarse.len() - 1);
            self.coarse[i] += 1;
        }
    }
    /// Upper bound of the bucket holding the p-th percentile, ms.
    fn pct(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, n) in self.fine.iter().enumerate() {
            acc += n;
            if acc >= rank {
                return Some(((i as u64 + 1) * 10).min(self.max_us) as f64 / 1000.0);
            }
        }
        for (i, n) in self.coarse.iter().enumerate() {
            acc += n;
            if acc >= rank {
                return Some(((i as u64 + 1) * 1000).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }
}

struct Ctx {
    t0: Instant,
    fixture: Option<Fixture>,
    pubs: Vec<PubState>,
    players: Vec<PlayerStats>,
    /// Publisher index of each player (None: no in-process publisher).
    pub_of: Vec<Option<usize>>,
    urls: Vec<Url>,
    pub_urls: usize,
    hist: Hist,
    backlog: Hist,
    gap_ms: u64,
    frame_ms: f64,
    errors: Vec<(ErrKind, String)>,
    t_stop: Instant,
    play_seconds: Duration,
}

// ---------------------------------------------------------------------------------------------
// Connection driving

impl Conn {
    fn command(&mut self, csid: u32, stream_id: u32, vals: &[Amf0]) {
        let mut body = Vec::new();
        amf0::encode_all(vals, &mut body);
        self.enc.write_message(
            csid,
            msg_type::COMMAND_AMF0,
            stream_id,
            0,
            &body,
            &mut self.out,
        );
    }

    fn flush(&mut self, now: Instant) -> Result<(), ConnErr> {
        while self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io_err("write", ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_tx = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("write", e)),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 64 << 10 {
                self.out.shrink_to(16 << 10);
            }
        } else if self.out_pos > 256 << 10 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

fn on_event(conn: &mut Conn, rbuf: &mut [u8], ctx: &mut Ctx, now: Instant) -> Result<(), ConnErr> {
    if conn.phase == Phase::Connecting {
        match conn.sock.take_error() {
            Ok(Some(e)) | Err(e) => return Err(io_err("connect", e)),
            Ok(None) => {}
        }
        match conn.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(()),
            Err(e) => return Err(io_err("connect", e)),
        }
        let _ = conn.sock.set_nodelay(true);
        conn.phase = Phase::Handshake;
        conn.last_rx = now;
        if let Role::Player(j) = conn.role {
            ctx.players[j].connected = true;
            ctx.players[j].connect_ms = Some((now - conn.t_start).as_secs_f64() * 1000.0);
        }
        let mut hs = Box::new(ClientHandshake::new(
            0x5eed ^ conn.t_start.elapsed().as_nanos() as u64,
        ));
        hs.start(0, &mut conn.out);
        conn.hs = Some(hs);
    }
    loop {
        let n = match conn.sock.read(rbuf) {
            Ok(0) => {
                return Err(ConnErr {
                    kind: ErrKind::Reset,
                    msg: "server closed the connection".into(),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", e)),
        };
        let now = Instant::now();
        conn.last_rx = now;
        conn.received += n as u64;
        if let Role::Player(j) = conn.role {
            ctx.players[j].bytes += n as u64;
        }
        let mut data = &rbuf[..n];
        if let Some(hs) = conn.hs.as_mut() {
            let p = hs
                .push(data, &mut conn.out)
                .map_err(|e| proto(format!("handshake: {e}")))?;
            data = &data[p.consumed..];
            if p.done {
                conn.hs = None;
                connect_app(conn, ctx);
            }
        }
        if !data.is_empty() {
            conn.dec.push(data);
            while let Some(m) = conn
                .dec
                .poll()
                .map_err(|e| proto(format!("chunk stream: {e}")))?
            {
                on_message(conn, m, ctx, now)?;
            }
        }
        if conn.window > 0 && conn.received - conn.acked >= u64::from(conn.window) / 2 {
            conn.acked = conn.received;
            let seq = (conn.received as u32).to_be_bytes();
            conn.enc
                .write_message(CSID_CONTROL, msg_type::ACK, 0, 0, &seq, &mut conn.out);
        }
    }
    conn.flush(now)
}

fn connect_app(conn: &mut Conn, ctx: &Ctx) {
    let url = &ctx.urls[conn.url];
    let publish = matches!(conn.role, Role::Publisher(_));
    if publish {
        let _ = conn.enc.set_chunk_size(PUBLISH_CHUNK_SIZE, &mut conn.out);
    }
    let obj = Amf0::object([
        ("app", Amf0::string(url.app.clone())),
        ("type", Amf0::string("nonprivate")),
        (
            "flashVer",
            Amf0::string(if publish {
                "FMLE/3.0 (compatible; sluice-bench)"
            } else {
                "LNX 9,0,124,2"
            }),
        ),
        ("tcUrl", Amf0::string(url.tc_url.clone())),
        ("fpad", Amf0::Boolean(false)),
        ("capabilities", Amf0::Number(15.0)),
        ("audioCodecs", Amf0::Number(4071.0)),
        ("videoCodecs", Amf0::Number(252.0)),
        ("videoFunction", Amf0::Number(1.0)),
    ]);
    conn.command(
        CSID_COMMAND,
        0,
        &[Amf0::string("connect"), Amf0::Number(1.0), obj],
    );
    conn.phase = Phase::Connect;
}

fn on_message(conn: &mut Conn, m: Message, ctx: &mut Ctx, now: Instant) -> Result<(), ConnErr> {
    match m.msg_type {
        msg_type::VIDEO | msg_type::AUDIO => {
            if let Role::Player(j) = conn.role {
                on_media(conn, j, m.msg_type, m.timestamp, &m.payload, ctx, now);
            }
        }
        msg_type::AGGREGATE => {
            if let Role::Player(j) = conn.role {
                let mut off = 0;
                let mut base = None;
                while let Ok(Some((tag, used))) = flv::parse_tag(&m.payload[off..]) {
                    off += used;
                    let b = *base.get_or_insert(tag.timestamp);
                    let ts = m.timestamp + u64::from(tag.timestamp.wrapping_sub(b));
                    match tag.kind {
                        TagKind::Video => {
                            on_media(conn, j, msg_type::VIDEO, ts, tag.body, ctx, now)
                        }
                        TagKind::Audio => {
                            on_media(conn, j, msg_type::AUDIO, ts, tag.body, ctx, now)
                        }
                        TagKind::Script => {}
                    }
                }
            }
        }
        msg_type::WINDOW_ACK_SIZE if m.payload.len() >= 4 => {
            conn.window = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
        }
        msg_type::USER_CONTROL
            if m.payload.len() >= 6 && u16::from_be_bytes([m.payload[0], m.payload[1]]) == 6 =>
        {
            let mut p = [0u8; 6];
            p[1] = 7;
            p[2..6].copy_from_slice(&m.payload[2..6]);
            conn.enc.write_message(
                CSID_CONTROL,
                msg_type::USER_CONTROL,
                0,
                0,
                &p,
                &mut conn.out,
            );
        }
        msg_type::COMMAND_AMF0 | msg_type::COMMAND_AMF3 => {
            let body = if m.msg_type == msg_type::COMMAND_AMF3 {
                m.payload.get(1..).unwrap_or(&[])
            } else {
                &m.payload[..]
            };
            let vals = amf0::decode_all(body).map_err(|e| proto(format!("AMF0: {e}")))?;
            on_command(conn, &vals, ctx, now)?;
        }
        _ => {}
    }
    Ok(())
}

fn on_command(conn: &mut Conn, vals: &[Amf0], ctx: &mut Ctx, now: Instant) -> Result<(), ConnErr> {
    let name = vals.first().and_then(Amf0::as_str).unwrap_or("");
    let txn = vals.get(1).and_then(Amf0::as_f64).unwrap_or(0.0) as u32;
    let url = &ctx.urls[conn.url];
    match (name, txn) {
        ("_error", _) => {
            let desc = vals
                .get(3)
                .and_then(|o| o.get("description").or_else(|| o.get("code")))
                .and_then(Amf0::as_str)
                .unwrap_or("?");
            return Err(proto(format!("_error to command {txn}: {desc}")));
        }
        ("_result", 1) if conn.phase == Phase::Connect => {
            if matches!(conn.role, Role::Publisher(_)) {
                let s = Amf0::string(url.stream.clone());
                conn.command(
                    CSID_COMMAND,
                    0,
                    &[
                        Amf0::string("releaseStream"),
                        Amf0::Number(2.0),
                        Amf0::Null,
                        s.clone(),
                    ],
                );
                conn.command(
                    CSID_COMMAND,
                    0,
                    &[Amf0::string("FCPublish"), Amf0::Number(3.0), Amf0::Null, s],
                );
            }
            conn.command(
                CSID_COMMAND,
                0,
                &[Amf0::string("createStream"), Amf0::Number(4.0), Amf0::Null],
            );
            conn.phase = Phase::CreateStream;
        }
        ("_result", 4) if conn.phase == Phase::CreateStream => {
            let sid = vals
                .get(3)
                .and_then(Amf0::as_f64)
                .ok_or_else(|| proto("createStream answer without a stream id"))?
                as u32;
            conn.stream_id = sid;
            let stream = Amf0::string(url.stream.clone());
            match conn.role {
                Role::Player(j) => {
                    ctx.players[j].play_sent = Some(now);
                    conn.command(
                        CSID_STREAM,
                        sid,
                        &[
                            Amf0::string("play"),
                            Amf0::Number(0.0),
                            Amf0::Null,
                            stream,
                            Amf0::Number(-2000.0),
                        ],
                    );
                    // Set Buffer Length (user control 3): stream id, 1000 ms.
                    let mut p = [0u8; 10];
                    p[1] = 3;
                    p[2..6].copy_from_slice(&sid.to_be_bytes());
                    p[6..10].copy_from_slice(&1000u32.to_be_bytes());
                    conn.enc.write_message(
                        CSID_CONTROL,
                        msg_type::USER_CONTROL,
                        0,
                        0,
                        &p,
                        &mut conn.out,
                    );
                }
                Role::Publisher(_) => {
                    conn.command(
                        CSID_STREAM,
                        sid,
                        &[
                            Amf0::string("publish"),
                            Amf0::Number(5.0),
                            Amf0::Null,
                            stream,
                            Amf0::string("live"),
                        ],
                    );
                }
            }
            conn.phase = Phase::Started;
        }
        ("onStatus", _) => {
            let info = vals.get(3);
            let code = info
                .and_then(|o| o.get("code"))
                .and_then(Amf0::as_str)
                .unwrap_or("");
            let level = info
                .and_then(|o| o.get("level"))
                .and_then(Amf0::as_str)
                .unwrap_or("");
            if level == "error"
                || code.contains("NotFound")
                || code.contains("Failed")
                || code.contains("BadName")
                || code.contains("Rejected")
            {
                let desc = info
                    .and_then(|o| o.get("description"))
                    .and_then(Amf0::as_str)
                    .unwrap_or("");
                return Err(proto(format!("onStatus {code} {desc}")));
            }
            if code == "NetStream.Publish.Start" {
                if let Role::Publisher(p) = conn.role {
                    if conn.phase != Phase::Streaming {
                        conn.phase = Phase::Streaming;
                        ctx.pubs[p].start = Some(now);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn on_media(conn: &Conn, j: usize, typ: u8, ts: u64, payload: &[u8], ctx: &mut Ctx, now: Instant) {
    let st = &mut ctx.players[j];
    let video = typ == msg_type::VIDEO;
    if video {
        st.video_bytes += payload.len() as u64;
    } else {
        st.audio_bytes += payload.len() as u64;
    }
    if is_config(typ, payload) {
        return;
    }
    let track = usize::from(video);
    if let Some(prev) = st.last_ts[track] {
        if ts < prev {
            st.backwards += 1;
        } else if video && ts - prev > ctx.gap_ms {
            st.gaps += 1;
        }
        if video && ts > prev {
            // Frames missing in a timestamp gap, at the nominal frame rate (a gap of up to
            // 1.5 frame durations is jitter or a source's loop point, not a loss).
            let frames = ((ts - prev) as f64 / ctx.frame_ms).round() as u64;
            st.missing += frames.saturating_sub(1);
        }
    }
    st.last_ts[track] = Some(ts);
    let since = || (now - conn.t_start).as_secs_f64() * 1000.0;
    if video {
        st.video += 1;
        if let Some(prev) = st.last_video_at {
            note_gap(st, now.saturating_duration_since(prev));
        }
        st.last_video_at = Some(now);
        if st.first_frame_ms.is_none() {
            st.first_frame_ms = Some(since());
        }
        if st.first_key_ms.is_none() && is_key(payload) {
            st.first_key_ms = Some(since());
        }
        st.video_ts_first.get_or_insert(ts);
        st.video_ts_last = ts;
        if st.first_seq.is_some() {
            st.since_first_seq += 1;
        }
    } else {
        st.audio += 1;
    }
    let Some(p) = ctx.pub_of[j] else { return };
    let pubst = &ctx.pubs[p];
    match pubst.sent.get(&key_of(typ, payload)) {
        Some(&(at, seq)) => {
            st.matched += 1;
            if st.play_sent.is_some_and(|p| at < p) {
                ctx.backlog.record(now.saturating_duration_since(at));
            } else {
                ctx.hist.record(now.saturating_duration_since(at));
            }
            if video {
                if st.first_seq.is_none() {
                    st.first_seq = Some(seq);
                    st.since_first_seq = 1;
                }
                if st.last_seq.is_some_and(|l| seq <= l) {
                    st.reordered += 1;
                }
                st.last_seq = Some(seq);
                if pubst.stopped && seq + 1 == pubst.video_sent {
                    st.got_last = true;
                }
            }
        }
        None => st.unmatched += 1,
    }
}

/// Counts a wall-clock gap in a player's video as a stall if it is longer than [`STALL`].
fn note_gap(st: &mut PlayerStats, gap: Duration) {
    let ms = gap.as_secs_f64() * 1000.0;
    st.max_stall_ms = st.max_stall_ms.max(ms);
    if gap > STALL {
        st.stalls += 1;
    }
}

/// Sends the publisher's due tags.
fn pump(
    conn: &mut Conn,
    p: usize,
    ctx: &mut Ctx,
    now: Instant,
) -> Result<Option<Instant>, ConnErr> {
    let Some(fx) = ctx.fixture.as_ref() else {
        return Ok(None);
    };
    let ps = &mut ctx.pubs[p];
    let Some(start) = ps.start else {
        return Ok(None);
    };
    if ps.stopped {
        return Ok(None);
    }
    if now >= ctx.t_stop {
        ps.stopped = true;
        return Ok(None);
    }
    let next_due;
    loop {
        if ps.next == fx.tags.len() {
            ps.next = 0;
            ps.pass += 1;
        }
        let tag = &fx.tags[ps.next];
        if ps.pass > 0 && tag.first_pass_only {
            ps.next += 1;
            continue;
        }
        let ts = ps.pass * fx.duration + tag.ts;
        let due = start + Duration::from_millis(ts);
        if due > now {
            next_due = Some(due);
            break;
        }
        let body = &fx.data[tag.body.clone()];
        conn.enc
            .write_message(tag.csid, tag.typ, conn.stream_id, ts, body, &mut conn.out);
        ps.messages += 1;
        ps.bytes += body.len() as u64;
        if !tag.first_pass_only {
            let seq = if tag.typ == msg_type::VIDEO {
                ps.video_sent += 1;
                ps.video_sent - 1
            } else {
                u64::MAX
            };
            // Record just before the write; the write follows within this call.
            ps.sent.insert(key_of(tag.typ, body), (Instant::now(), seq));
        }
        ps.next += 1;
        if conn.pending() > 32 << 20 {
            return Err(proto("publisher: server not reading (32 MiB queued)"));
        }
    }
    conn.flush(now)?;
    Ok(next_due)
}

// ---------------------------------------------------------------------------------------------
// The engine

fn raise_nofile() -> u64 {
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
            return rl.rlim_cur;
        }
    }
    0
}

fn cpu_seconds() -> f64 {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn max_rss_kb() -> i64 {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss as i64
    }
}

fn dist(v: &mut [f64]) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> Value {
        if v.is_empty() {
            return Value::Null;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        json!(round3(v[rank.clamp(1, v.len()) - 1]))
    };
    json!({"n": v.len(), "p50": pct(50.0), "p99": pct(99.0), "max": v.last().map(|x| round3(*x))})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn kinds_json(errs: impl Iterator<Item = ErrKind>) -> (Value, usize) {
    let mut counts = [0usize; 5];
    for e in errs {
        counts[KINDS.iter().position(|k| k.0 == e).unwrap()] += 1;
    }
    let mut m = serde_json::Map::new();
    for (i, (_, name)) in KINDS.iter().enumerate() {
        m.insert(name.to_string(), json!(counts[i]));
    }
    (Value::Object(m), counts.iter().sum())
}

// Connections are addressed by index (= mio token) throughout; the `fail!` macro needs it.
pub fn run(cfg: LoadConfig) -> Result<i32> {
    Ok(run_doc(cfg)?.0)
}

/// [`run`], returning the exit code and the JSON report.
#[allow(clippy::needless_range_loop)]
pub fn run_doc(cfg: LoadConfig) -> Result<(i32, Value)> {
    let nofile = raise_nofile();
    let m = if cfg.publish_url.is_some() {
        cfg.publishers
    } else {
        0
    };
    let n = if cfg.play_url.is_some() {
        cfg.players
    } else {
        0
    };
    let k = if cfg.hls_url.is_some() {
        cfg.hls_players
    } else {
        0
    };
    if m == 0 && n == 0 && k == 0 {
        bail!("nothing to do: give --publish-url/--publishers, --play-url/--players or --hls-url/--hls-players");
    }
    let fixture = if m > 0 {
        let f = cfg
            .file
            .as_ref()
            .ok_or_else(|| anyhow!("--publishers needs --file"))?;
        Some(load_fixture(f)?)
    } else {
        None
    };
    if (m + n) as u64 + 64 > nofile {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}, below {} connections",
            m + n
        );
    }
    // URLs: publishers 0..m, then play URLs for each of max(m,1) streams.
    let mut urls = Vec::new();
    if let Some(t) = &cfg.publish_url {
        for i in 0..m {
            urls.push(parse_url(&expand(t, i))?);
        }
    }
    let streams = m.max(1);
    if let Some(t) = &cfg.play_url {
        if n > 0 {
            for i in 0..streams {
                urls.push(parse_url(&expand(t, i))?);
            }
        }
    }
    let t0 = Instant::now();
    let warm = Duration::from_millis(cfg.warmup_ms);
    let ramp = Duration::from_millis(cfg.ramp_ms);
    let seconds = Duration::from_secs_f64(cfg.seconds);
    let t_stop = t0 + warm + ramp * (n.saturating_sub(1) as u32) + seconds;
    let mut ctx = Ctx {
        t0,
        fixture,
        pubs: (0..m).map(|_| PubState::default()).collect(),
        players: (0..n).map(|_| PlayerStats::default()).collect(),
        pub_of: (0..n).map(|j| (m > 0).then(|| j % m)).collect(),
        urls,
        pub_urls: m,
        hist: Hist::new(),
        backlog: Hist::new(),
        gap_ms: (2.5 * 1000.0 / cfg.fps).round() as u64,
        frame_ms: 1000.0 / cfg.fps,
        errors: Vec::new(),
        t_stop,
        play_seconds: seconds,
    };
    if let Some(fx) = ctx.fixture.as_ref().filter(|_| !cfg.quiet) {
        println!(
            "# fixture: {} tags, {} video frames, loop every {} ms, {} distinct keys / {} coded frames",
            fx.tags.len(),
            fx.video_frames,
            fx.duration,
            fx.distinct_keys,
            fx.coded
        );
    }

    let mut poll = Poll::new().context("mio Poll")?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = (0..m + n).map(|_| None).collect();
    let rb = std::env::var("SB_RBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(READ_BUF);
    let mut rbuf = vec![0u8; rb];

    let open =
        |poll: &Poll, idx: usize, role: Role, url: usize, ctx: &Ctx| -> Result<Conn, ConnErr> {
            let now = Instant::now();
            let mut sock =
                TcpStream::connect(ctx.urls[url].addr).map_err(|e| io_err("connect", e))?;
            poll.registry()
                .register(
                    &mut sock,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| io_err("register", e))?;
            Ok(Conn {
                sock,
                role,
                phase: Phase::Connecting,
                hs: None,
                enc: ChunkEncoder::new(),
                dec: ChunkDecoder::default(),
                out: Vec::new(),
                out_pos: 0,
                received: 0,
                acked: 0,
                window: 2_500_000,
                stream_id: 0,
                t_start: now,
                last_rx: now,
                last_tx: now,
                url,
            })
        };

    macro_rules! fail {
        ($idx:expr, $err:expr) => {{
            let err: ConnErr = $err;
            if let Some(mut c) = conns[$idx].take() {
                let _ = poll.registry().deregister(&mut c.sock);
            }
            let who = if $idx < m {
                ctx.pubs[$idx].error = Some(err.kind);
                format!("publisher {}", $idx)
            } else {
                let j = $idx - m;
                ctx.players[j].error = Some(err.kind);
                ctx.players[j].finished = true;
                format!("player {j}")
            };
            ctx.errors.push((err.kind, format!("{who}: {}", err.msg)));
        }};
    }

    for p in 0..m {
        match open(&poll, p, Role::Publisher(p), p, &ctx) {
            Ok(c) => conns[p] = Some(c),
            Err(e) => fail!(p, e),
        }
    }
    let mut hls_thread = None;
    let mut next_player = 0usize;
    let mut last_sweep = t0;
    let cpu0 = cpu_seconds();
    let mut drain_logged = false;
    loop {
        let now = Instant::now();
        // HLS engine after the warmup.
        if k > 0 && hls_thread.is_none() && now >= t0 + warm {
            let hcfg = hls::HlsConfig {
                url_template: cfg.hls_url.clone().unwrap_or_default(),
                players: k,
                seconds: cfg.seconds,
                ramp_ms: cfg.ramp_ms,
                publishers: m,
            };
            hls_thread = Some(
                std::thread::Builder::new()
                    .name("hls".into())
                    .spawn(move || hls::run(hcfg))?,
            );
        }
        // Start players.
        while next_player < n && now >= t0 + warm + ramp * next_player as u32 {
            let j = next_player;
            next_player += 1;
            ctx.players[j].started = true;
            let url = ctx.pub_urls + j % streams;
            match open(&poll, m + j, Role::Player(j), url, &ctx) {
                Ok(c) => conns[m + j] = Some(c),
                Err(e) => fail!(m + j, e),
            }
        }
        // Publishers.
        let mut wake = now + Duration::from_millis(100);
        for p in 0..m {
            let Some(c) = conns[p].as_mut() else { continue };
            match pump(c, p, &mut ctx, now) {
                Ok(Some(due)) => wake = wake.min(due),
                Ok(None) => {}
                Err(e) => fail!(p, e),
            }
        }
        if next_player < n {
            wake = wake.min(t0 + warm + ramp * next_player as u32);
        }
        // Sweep: timeouts, player ends.
        let pub_mode = m > 0;
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            for idx in 0..m + n {
                let Some(c) = conns[idx].as_ref() else {
                    continue;
                };
                let streaming_pub = idx < m && c.phase == Phase::Streaming;
                let idle = if streaming_pub {
                    if c.pending() > 0 {
                        now - c.last_tx
                    } else {
                        Duration::ZERO
                    }
                } else {
                    now - c.last_rx
                };
                if idle > IDLE_TIMEOUT {
                    let phase = match c.phase {
                        Phase::Connecting => "TCP connect",
                        Phase::Handshake => "handshake",
                        Phase::Connect => "connect",
                        Phase::CreateStream => "createStream",
                        Phase::Started => "play/publish",
                        Phase::Streaming => "write",
                    };
                    fail!(
                        idx,
                        ConnErr {
                            kind: ErrKind::Timeout,
                            msg: format!("no data for {} s ({phase})", IDLE_TIMEOUT.as_secs())
                        }
                    );
                    continue;
                }
                if idx >= m {
                    let j = idx - m;
                    let end = if pub_mode {
                        let p = ctx.pub_of[j].unwrap();
                        let ps = &ctx.pubs[p];
                        let pl = &ctx.players[j];
                        pl.got_last
                            || (ps.stopped
                                && ps.video_sent > 0
                                && pl.last_seq == Some(ps.video_sent - 1))
                            || (ps.error.is_some() && now >= t_stop)
                            || now >= t_stop + DRAIN
                    } else {
                        now >= c.t_start + ctx.play_seconds
                    };
                    if end {
                        if let Some(mut c) = conns[idx].take() {
                            let _ = poll.registry().deregister(&mut c.sock);
                        }
                        let st = &mut ctx.players[j];
                        st.finished = true;
                        if let Some(prev) = st.last_video_at {
                            if !pub_mode {
                                note_gap(st, now.saturating_duration_since(prev));
                            }
                        }
                    }
                }
            }
            if pub_mode && now >= t_stop && !drain_logged {
                drain_logged = true;
                for p in 0..m {
                    ctx.pubs[p].stopped = true;
                }
            }
        }
        let players_done = next_player == n && ctx.players.iter().all(|p| p.finished);
        let done = if pub_mode {
            now >= t_stop && (players_done || n == 0)
                || conns[..m].iter().all(Option::is_none) && players_done
        } else {
            players_done
        };
        if done {
            break;
        }
        let timeout = wake.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e).context("poll");
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            let idx = ev.token().0;
            let Some(c) = conns[idx].as_mut() else {
                continue;
            };
            if let Err(e) = on_event(c, &mut rbuf, &mut ctx, now) {
                fail!(idx, e);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    for slot in conns.iter_mut() {
        if let Some(mut c) = slot.take() {
            let _ = poll.registry().deregister(&mut c.sock);
        }
    }
    let hls_report = match hls_thread {
        Some(h) => h
            .join()
            .unwrap_or_else(|_| json!({"ok": false, "error": "hls thread panicked"})),
        None => Value::Null,
    };
    report(&cfg, &ctx, m, n, wall, cpu, hls_report)
}

fn report(
    cfg: &LoadConfig,
    ctx: &Ctx,
    m: usize,
    n: usize,
    wall: f64,
    cpu: f64,
    hls: Value,
) -> Result<(i32, Value)> {
    let pl = &ctx.players;
    let connected = pl.iter().filter(|p| p.connected).count();
    // Delivered % per player.
    let mut delivered = Vec::with_capacity(n);
    let (mut got_sum, mut exp_sum) = (0f64, 0f64);
    for (j, p) in pl.iter().enumerate() {
        let (got, exp) = match ctx.pub_of[j] {
            Some(pi) => {
                let pubst = &ctx.pubs[pi];
                match p.first_seq {
                    Some(s) => (p.since_first_seq as f64, (pubst.video_sent - s) as f64),
                    None => (0.0, 1.0),
                }
            }
            // Without a publisher: the frames received and those missing in timestamp
            // gaps (a span × fps estimate is off whenever the source's clock is not exactly
            // --fps, as with a file looped by ffmpeg).
            None => match p.video_ts_first {
                Some(_) => (p.video as f64, (p.video + p.missing) as f64),
                None => (0.0, 1.0),
            },
        };
        got_sum += got;
        exp_sum += exp;
        delivered.push(100.0 * got / exp.max(1.0));
    }
    let min_delivered = delivered.iter().copied().fold(f64::INFINITY, f64::min);
    let below = delivered.iter().filter(|d| **d < 100.0).count();
    let agg = if exp_sum > 0.0 {
        100.0 * got_sum / exp_sum
    } else {
        0.0
    };
    let gaps: u64 = pl.iter().map(|p| p.gaps).sum();
    let stalls: u64 = pl.iter().map(|p| p.stalls).sum();
    let max_stall_ms = pl.iter().map(|p| p.max_stall_ms).fold(0.0, f64::max);
    let backwards: u64 = pl.iter().map(|p| p.backwards).sum();
    let reordered: u64 = pl.iter().map(|p| p.reordered).sum();
    let unmatched: u64 = pl.iter().map(|p| p.unmatched).sum();
    let bytes: u64 = pl.iter().map(|p| p.bytes).sum();
    let media_bytes: u64 = pl.iter().map(|p| p.video_bytes + p.audio_bytes).sum();
    let vframes: u64 = pl.iter().map(|p| p.video).sum();
    let aframes: u64 = pl.iter().map(|p| p.audio).sum();
    let mut cm: Vec<f64> = pl.iter().filter_map(|p| p.connect_ms).collect();
    let mut ff: Vec<f64> = pl.iter().filter_map(|p| p.first_frame_ms).collect();
    let mut fk: Vec<f64> = pl.iter().filter_map(|p| p.first_key_ms).collect();
    let (perr, perr_n) = kinds_json(pl.iter().filter_map(|p| p.error));
    let (puberr, puberr_n) = kinds_json(ctx.pubs.iter().filter_map(|p| p.error));
    let h = &ctx.hist;
    let lat = json!({
        "p50": h.pct(50.0).map(round3), "p99": h.pct(99.0).map(round3),
        "max": (h.count > 0).then(|| round3(h.max_us as f64 / 1000.0)),
        "samples": h.count, "unmatched": unmatched,
    });
    let b = &ctx.backlog;
    let backlog = json!({
        "p50": b.pct(50.0).map(round3), "p99": b.pct(99.0).map(round3),
        "max": (b.count > 0).then(|| round3(b.max_us as f64 / 1000.0)),
        "samples": b.count,
    });
    let ff_j = dist(&mut ff);
    let fk_j = dist(&mut fk);
    let hls_ok = hls.is_null() || hls.get("ok").and_then(Value::as_bool).unwrap_or(false);
    let messages: u64 = ctx.pubs.iter().map(|p| p.messages).sum();
    let fail_delivery = n > 0 && below > 0;
    let fail_lat = m > 0 && n > 0 && h.count == 0;
    let ok = !fail_delivery && perr_n == 0 && puberr_n == 0 && !fail_lat && hls_ok;
    let doc = json!({
        "ok": ok,
        "rtmp": {
            "players": n, "connected": connected, "errors": perr,
            "delivered_pct": round3(agg),
            "min_delivered_pct": if n > 0 { json!(round3(min_delivered)) } else { Value::Null },
            "below_100": below,
            "gaps": gaps, "backwards": backwards, "reordered": reordered,
            "stalls_over_1s": stalls, "max_stall_ms": round3(max_stall_ms),
            "connect_ms": dist(&mut cm),
            "first_frame_ms": ff_j, "first_key_ms": fk_j,
            "latency_ms": lat,
            "join_backlog_ms": backlog,
            "bytes": bytes, "media_bytes": media_bytes,
            "video_frames": vframes, "audio_frames": aframes,
        },
        "publishers": {
            "count": m, "messages": messages,
            "video_frames": ctx.pubs.iter().map(|p| p.video_sent).sum::<u64>(),
            "bytes": ctx.pubs.iter().map(|p| p.bytes).sum::<u64>(),
            "errors": puberr,
        },
        "hls": hls,
        "client": {"wall_s": round3(wall), "cpu_s": round3(cpu), "cpu_pct": round3(100.0 * cpu / wall.max(1e-9)), "max_rss_kb": max_rss_kb()},
    });

    if let Some(path) = &cfg.json {
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("{}", path.display()))?;
    }
    let code = if ok { 0 } else { 1 };
    if cfg.quiet {
        return Ok((code, doc));
    }
    // Human summary.
    let r = &doc["rtmp"];
    println!(
        "# sluice-bench load: {m} publishers, {n} RTMP players, {} HLS players, {:.1} s",
        cfg.hls_players, wall
    );
    if m > 0 {
        println!(
            "publishers      messages={} video={} bytes={} errors={}",
            messages, doc["publishers"]["video_frames"], doc["publishers"]["bytes"], puberr
        );
    }
    if n > 0 {
        println!("players         requested={n} connected={connected} errors={perr}");
        println!(
            "delivered       {:.3}% overall, min {:.3}%, {} players below 100% ({})",
            agg,
            min_delivered,
            below,
            if m > 0 {
                "frames received / frames the publisher sent from the player's first frame on"
            } else {
                "frames / (frames + frames missing in timestamp gaps at --fps)"
            }
        );
        println!("frames          video={vframes} audio={aframes}  gaps={gaps} backwards={backwards} reordered={reordered}");
        println!("stalls          {stalls} gaps over 1 s between two video frames' arrivals (longest {max_stall_ms:.0} ms)");
        println!("TCP connect     {}", r["connect_ms"]);
        println!("first frame     {}", r["first_frame_ms"]);
        println!("first keyframe  {}", r["first_key_ms"]);
        if m > 0 {
            println!("latency ms      {}", r["latency_ms"]);
            println!(
                "join backlog ms {} (packets published before the player's play command)",
                r["join_backlog_ms"]
            );
        }
        println!(
            "throughput      {:.1} Mbit/s received in total",
            bytes as f64 * 8.0 / 1e6 / wall.max(1e-9)
        );
    }
    if !doc["hls"].is_null() {
        println!("hls             {}", doc["hls"]);
    }
    println!(
        "client          cpu {:.1}% of one core ({:.1} s), max RSS {} MB",
        100.0 * cpu / wall.max(1e-9),
        cpu,
        max_rss_kb() / 1024
    );
    let mut shown = std::collections::HashSet::new();
    for (kind, msg) in &ctx.errors {
        // One sample per kind and message text (player numbers stripped).
        let text = msg.split_once(": ").map_or(msg.as_str(), |x| x.1);
        if shown.insert((*kind as u8, text.to_string())) && shown.len() <= 10 {
            println!("error           [{kind:?}] {msg}");
        }
    }
    if ctx.errors.len() > shown.len().min(10) {
        println!("error           ... {} errors in all", ctx.errors.len());
    }
    println!("result          {}", if ok { "OK" } else { "FAIL" });
    let _ = ctx.t0;
    Ok((code, doc))
}
