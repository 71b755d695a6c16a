//! Pulls of sources that arrive as one byte stream of a container, as MistServer's TS and
//! FLV inputs read them:
//! * `tsudp://HOST:PORT`: MPEG-TS over UDP, as broadcast encoders and ffmpeg send it (any
//!   number of 188-byte packets per datagram). A multicast group (`tsudp://239.1.2.3:5000`)
//!   is joined on every interface; a unicast or wildcard host is the address bound.
//! * `http(s)://…/x.ts` and `http(s)://…/x.flv`: HTTP-TS and HTTP-FLV, a daisy chain from
//!   another Sluice (`/S.ts`, `/S.flv`), MistServer or HTTP Stream Pump.
//! * `dtsc://HOST[:4200]/S`: stream S of another Sluice's or MistServer's DTSC connector
//!   (`play`, `crate::serve::dtsc`): an edge pulling from its origin.
//! * `rtmp://HOST[:1935]/APP/S`: stream S played from another RTMP server (nginx-rtmp, SRS,
//!   a MistServer, a Sluice), through `dtsc::rtmp::client::RtmpClient` (sans-IO).
//! * `http(s)://…/x.m3u8`: a live HLS stream of MPEG-TS or fragmented MP4 segments
//!   (`dtsc::hls::parse_playlist` reads the playlists, `dtsc::mp4demux::Fragmented` the
//!   fMP4 segments), from its newest segment on.
//!
//! Started by the stream's buffer as `sluice pull --stream S --url URL --rundir DIR` (a
//! process of its own, so garbage from upstream crashes nothing but this), attached to the
//! buffer as its publisher. [`ContainerDemux`] (sans-IO) turns the bytes into DTSC frames;
//! the loop around it reconnects with backoff (1 s, 2 s, then every [`MAX_BACKOFF`]) when the upstream
//! refuses, ends, sends garbage or goes quiet ([`SILENCE`]; for UDP, where there is no
//! connection, a quiet spell of [`UDP_GAP`] starts a new session). Each session's times are
//! placed after the last packet of the one before, so viewers see one stream with
//! increasing timestamps. State and counters go to `RUNDIR/NAME.pull.json` every second.
//!
//! An HTTP upstream that sends far more than real time allows at the start of a session
//! ([`MAX_AHEAD_MS`] ahead within its first 10 s) serves an ended or stored stream (a
//! Sluice or MistServer origin serves a finished publish from its start while it lingers):
//! pulling it would replay old media as live, so the session is dropped before any of it
//! reaches the buffer (the first [`PROBE`] of every session is held for that) and retried.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::flv::{self, FlvIngest, IngestEvent};
use dtsc::tsdemux::{TsDemuxer, TsEvent};
use dtsc::wire::{self, Header};
use dtsc::PacketRef;

use crate::ingest::rtsp_pull::PullArgs;

const PROTO: &str = "pull";
/// A connection that brought nothing for this long is given up and made again.
pub const SILENCE: Duration = Duration::from_secs(8);
/// UDP: after this long without a datagram, the next one starts a new session (its
/// timestamps are placed after the last packet, whatever the sender's clock says now).
pub const UDP_GAP: Duration = Duration::from_secs(2);
/// Longest wait between attempts: an upstream that comes back is played again within it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The container a pull reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MPEG-TS (ISO/IEC 13818-1), 188-byte packets.
    Ts,
    /// FLV (FLV spec v10.1 Annex E): the file header, then tags.
    Flv,
    /// DTSC frames (`docs/DTSC.md`): a `DTSC` header, then `DTP2` packets,
    /// as a Sluice or MistServer DTSC connector sends them after `play`.
    Dtsc,
    /// Fragmented MP4 (ISO/IEC 14496-12 §8.8): HLS segments after an `#EXT-X-MAP` init
    /// segment ([`ContainerDemux::set_init`]); each [`ContainerDemux::push`] is one whole
    /// media segment.
    Fmp4,
}

/// How a pull reaches its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams on a bound UDP socket (`tsudp://`).
    Udp,
    /// An HTTP(S) GET (`http(s)://`).
    Http,
    /// A TCP connection to a DTSC connector, `play` sent first (`dtsc://`).
    DtscTcp,
    /// An RTMP connection that plays (`rtmp://`): FLV tag bodies in RTMP messages.
    Rtmp,
    /// HLS (`http(s)://…/x.m3u8`): the playlist reloaded, each new MPEG-TS segment fetched.
    Hls,
}

/// Which container and transport a pull URL names: `tsudp://` is TS over UDP; an
/// `http(s)://` URL whose path ends in `.ts` / `.flv` is HTTP-TS / HTTP-FLV;
/// `dtsc://HOST[:PORT]/S` is stream S of a DTSC connector (port 4200 by default);
/// `rtmp://HOST[:PORT]/APP/S` is stream S played from an RTMP server; an `http(s)://` URL
/// whose path ends in `.m3u8` is a live HLS stream (MPEG-TS segments). `None` for anything
/// else.
pub fn kind_of(url: &str) -> Option<(Container, Transport)> {
    if url.starts_with("tsudp://") {
        return Some((Container::Ts, Transport::Udp));
    }
    if url.starts_with("rtmp://") {
        return dtsc::rtmp::client::RtmpClient::parse_url(url)
            .map(|_| (Container::Flv, Transport::Rtmp));
    }
    if let Some(rest) = url.strip_prefix("dtsc://") {
        let (host, stream) = rest.split_once('/')?;
        return (!host.is_empty() && !stream.is_empty())
            .then_some((Container::Dtsc, Transport::DtscTcp));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.to_ascii_lowercase();
    if path.ends_with(".m3u8") {
        Some((Container::Ts, Transport::Hls))
    } else if path.ends_with(".ts") {
        Some((Container::Ts, Transport::Http))
    } else if path.ends_with(".flv") {
        Some((Container::Flv, Transport::Http))
    } else {
        None
    }
}

/// What a pull carries from one session to the next: where its timeline is and, for DTSC,
/// which upstream timeline it followed (the header's `unixzero`, the Unix ms of the
/// upstream's DTS 0) and how far, so that a reconnect to the same upstream buffer goes on
/// exactly where it was instead of repeating the upstream's newest GOP.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Placed DTS of the newest packet written, ms (0: nothing yet).
    pub last: u64,
    /// Placed DTS minus source DTS of the last session.
    offset: Option<i64>,
    /// The last session's upstream `unixzero` (DTSC only).
    unixzero: Option<i64>,
    /// Per track, the newest source DTS written.
    last_src: Vec<(u32, u64)>,
}

impl Timeline {
    /// A timeline that goes on after `last` ms (a restarted pull process continues its
    /// buffer's stream).
    pub fn after(last: u64) -> Timeline {
        Timeline {
            last,
            ..Timeline::default()
        }
    }
}

/// Bytes of one container session in, DTSC frames out (a `DTSC` header whenever the tracks
/// change, then `DTP2` packets), with every DTS placed after the timeline's `last` ms: the
/// first packet at `last + 40` (1000 for the first session of a pull), the others at the same
/// distance from it as in the source; a packet that would land at or before `last` (audio
/// that starts before the video of a TS) is moved just after it. A DTSC session from the same
/// upstream timeline as the last one (the same `unixzero`, within 1 s) keeps the last
/// session's placement instead, and skips per track what was written already.
pub struct ContainerDemux {
    container: Container,
    /// FLV: bytes not parsed yet; `flv_body` once the file header was read.
    pending: Vec<u8>,
    flv_body: bool,
    flv: FlvIngest,
    ts: TsDemuxer,
    events: Vec<TsEvent>,
    /// The timeline as the session started.
    prev: Timeline,
    /// This session follows the last one's upstream timeline.
    same: bool,
    offset: Option<i64>,
    unixzero: Option<i64>,
    last_src: Vec<(u32, u64)>,
    /// Packets the caller has sent on (see [`ContainerDemux::commit`]).
    committed: u64,
    /// Packets skipped because the last session had written them.
    pub repeated: u64,
    /// The first DTS written, ms.
    first: Option<u64>,
    /// The newest DTS written, ms (`after` until a packet was).
    pub last: u64,
    /// Packets written.
    pub packets: u64,
    /// FLV tags that could not be used (named by the error), for the stats.
    pub bad_tags: u64,
    /// Fragmented MP4: the init segment's tracks; `fmp4_header` while their header is
    /// still to be written.
    fmp4: Option<dtsc::mp4demux::Fragmented>,
    fmp4_header: bool,
}

/// Most bytes of an FLV tag waited for (a larger announced size is garbage).
const MAX_PENDING: usize = 16 << 20;

impl ContainerDemux {
    /// A demuxer for one session going on from `prev`.
    pub fn new(container: Container, prev: Timeline) -> ContainerDemux {
        let after = prev.last;
        ContainerDemux {
            container,
            pending: Vec::new(),
            flv_body: false,
            flv: FlvIngest::new(),
            ts: TsDemuxer::new(),
            events: Vec::new(),
            last_src: prev.last_src.clone(),
            prev,
            same: false,
            offset: None,
            unixzero: None,
            committed: 0,
            repeated: 0,
            first: None,
            last: after,
            packets: 0,
            bad_tags: 0,
            fmp4: None,
            fmp4_header: false,
        }
    }

    /// Switches to fragmented MP4 with an initialization segment (`ftyp` + `moov`, HLS's
    /// `#EXT-X-MAP`); the tracks' header goes out before the next segment's packets when
    /// they differ from the last init segment's. Errors: not an init segment Sluice can
    /// read (no `moov`, no track it carries).
    pub fn set_init(&mut self, init: &[u8]) -> std::result::Result<(), String> {
        let f = dtsc::mp4demux::Fragmented::read_init(init)
            .map_err(|e| format!("the init segment: {e}"))?;
        if self.fmp4.as_ref().is_none_or(|old| old.tracks != f.tracks) {
            self.fmp4_header = true;
        }
        self.fmp4 = Some(f);
        self.container = Container::Fmp4;
        Ok(())
    }

    /// Takes `bytes` of the container and appends the DTSC frames they complete to
    /// `frames`. Errors: the bytes are not of this container (an FLV without its signature,
    /// a tag that cannot be framed); the session should end. TS garbage is skipped to the
    /// next sync byte instead (counted in the demuxer's stats).
    pub fn push(&mut self, bytes: &[u8], frames: &mut Vec<u8>) -> std::result::Result<(), String> {
        match self.container {
            Container::Ts => {
                self.ts.push(bytes, &mut self.events);
                self.drain_ts(frames);
                Ok(())
            }
            Container::Flv => {
                self.pending.extend_from_slice(bytes);
                self.drain_flv(frames)
            }
            Container::Dtsc => {
                self.pending.extend_from_slice(bytes);
                self.drain_dtsc(frames)
            }
            Container::Fmp4 => self.fmp4_segment(bytes, frames),
        }
    }

    /// One whole fragmented-MP4 media segment.
    fn fmp4_segment(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        let Some(f) = &self.fmp4 else {
            return Err("a media segment before its init segment".into());
        };
        let mut packets = Vec::new();
        f.read_segment(&bytes::Bytes::copy_from_slice(bytes), &mut packets)
            .map_err(|e| format!("a media segment: {e}"))?;
        if std::mem::take(&mut self.fmp4_header) {
            Self::header(&f.tracks, frames);
        }
        for p in &packets {
            if let Some(dts) = self.place(p.track, p.dts) {
                wire::write_packet(&PacketRef { dts, ..p.as_ref() }, frames);
                self.packets += 1;
            }
        }
        Ok(())
    }

    fn drain_dtsc(&mut self, frames: &mut Vec<u8>) -> std::result::Result<(), String> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.dtsc_frames(&pending, frames);
        pending.drain(..r.as_ref().map_or(0, |&n| n));
        self.pending = pending;
        r.map(|_| ())
    }

    /// Writes the whole frames at the start of `bytes`; returns the bytes used.
    fn dtsc_frames(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<usize, String> {
        let mut at = 0;
        loop {
            match wire::parse_frame(&bytes[at..]) {
                Ok(Some((f, used))) => {
                    match f {
                        wire::Frame::Header(v) => {
                            let h = Header::from_value(&v).map_err(|e| format!("header: {e}"))?;
                            if self.offset.is_none() {
                                // The session's first header: the same upstream timeline?
                                self.same = self.prev.offset.is_some()
                                    && matches!((h.unixzero, self.prev.unixzero),
                                        (Some(a), Some(b)) if (a - b).abs() <= 1000);
                                if self.same {
                                    self.offset = self.prev.offset;
                                }
                            }
                            self.unixzero = h.unixzero;
                            Self::header(&h.tracks, frames);
                        }
                        wire::Frame::Packet(p) => {
                            if let Some(dts) = self.place(p.track, p.dts) {
                                wire::write_packet(&PacketRef { dts, ..p }, frames);
                                self.packets += 1;
                            }
                        }
                        wire::Frame::Command(v) => {
                            if v.get("cmd").and_then(|c| c.as_str()) == Some("error") {
                                let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
                                return Err(format!("the upstream refused: {msg}"));
                            }
                        }
                        wire::Frame::LegacyPacket(_) => self.bad_tags += 1,
                    }
                    at += used;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("DTSC at byte {at}: {e}")),
            }
        }
        Ok(at)
    }

    /// The end of the session: what the TS demuxer still holds (the last PES of each
    /// stream) is written.
    pub fn finish(&mut self, frames: &mut Vec<u8>) {
        if self.container == Container::Ts {
            self.ts.finish(&mut self.events);
            self.drain_ts(frames);
        }
    }

    /// The TS demuxer's counters (sync losses, continuity errors, …).
    pub fn ts_stats(&self) -> dtsc::tsdemux::DemuxStats {
        self.ts.stats()
    }

    /// The placed DTS of a packet of `track` at source DTS `dts`; `None` when the last
    /// session on the same upstream timeline already wrote it.
    fn place(&mut self, track: u32, dts: u64) -> Option<u64> {
        let dts = dts.min(i64::MAX as u64 / 2);
        if self.same
            && self
                .prev
                .last_src
                .iter()
                .any(|&(t, l)| t == track && dts <= l)
        {
            self.repeated += 1;
            return None;
        }
        let after = self.prev.last;
        let start = if after == 0 { 1000 } else { after + 40 };
        let off = *self.offset.get_or_insert(start as i64 - dts as i64);
        let floor = if self.same { 0 } else { after as i64 + 1 };
        let placed = (dts as i64).saturating_add(off).max(floor).max(0) as u64;
        match self.last_src.iter_mut().find(|(t, _)| *t == track) {
            Some(e) => e.1 = e.1.max(dts),
            None => self.last_src.push((track, dts)),
        }
        self.first.get_or_insert(placed);
        self.last = self.last.max(placed);
        Some(placed)
    }

    /// The caller sent on everything written so far (the timeline then moves on; a session
    /// whose frames were all dropped leaves it where it was).
    pub fn commit(&mut self) {
        self.committed = self.packets;
    }

    /// The timeline for the next session: this one's if it sent anything on, else the one it
    /// started from.
    pub fn timeline(&self) -> Timeline {
        if self.committed == 0 {
            return self.prev.clone();
        }
        Timeline {
            last: self.last,
            offset: self.offset,
            unixzero: self.unixzero,
            last_src: self.last_src.clone(),
        }
    }

    /// How much media this session has written, ms of DTS (0 before its second packet).
    pub fn span_ms(&self) -> u64 {
        self.first.map_or(0, |f| self.last - f)
    }

    fn header(tracks: &[dtsc::Track], frames: &mut Vec<u8>) {
        let h = Header {
            live: true,
            unixzero: None,
            tracks: tracks.to_vec(),
        };
        wire::write_header(&h, frames);
    }

    fn drain_ts(&mut self, frames: &mut Vec<u8>) {
        let events = std::mem::take(&mut self.events);
        for e in &events {
            match e {
                TsEvent::TracksChanged => Self::header(self.ts.tracks(), frames),
                TsEvent::Packet(p) => {
                    if let Some(dts) = self.place(p.track, p.dts) {
                        let r = PacketRef { dts, ..p.as_ref() };
                        wire::write_packet(&r, frames);
                        self.packets += 1;
                    }
                }
                TsEvent::Unsupported { pid, stream_type } => crate::log!(
                    PROTO,
                    "PID {pid:#x}: stream type {stream_type:#04x} is not supported, skipped"
                ),
            }
        }
        self.events = events;
        self.events.clear();
    }

    fn drain_flv(&mut self, frames: &mut Vec<u8>) -> std::result::Result<(), String> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.flv_tags(&pending, frames);
        if let Ok(used) = r {
            pending.drain(..used);
        }
        self.pending = pending;
        match r {
            Ok(_) if self.pending.len() > MAX_PENDING => {
                Err(format!("an FLV tag over {MAX_PENDING} bytes"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the packets of the whole tags at the start of `bytes` (after the file header,
    /// the first time); returns the bytes used.
    fn flv_tags(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<usize, String> {
        let mut at = 0;
        if !self.flv_body {
            match flv::parse_file_header(bytes) {
                Ok(Some((_, used))) => {
                    at = used;
                    self.flv_body = true;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(format!("not FLV: {e}")),
            }
        }
        loop {
            let tag = match flv::parse_tag(&bytes[at..]) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => return Err(format!("FLV tag at byte {at}: {e}")),
            };
            let ((kind, ts, body), used) = ((tag.0.kind, tag.0.timestamp, tag.0.body), tag.1);
            self.push_tag(kind, u64::from(ts), body, frames);
            at += used;
        }
        Ok(at)
    }

    /// One FLV tag's body (an RTMP media message: RTMP carries FLV tag bodies), of `kind`
    /// at `timestamp` ms, for the RTMP pull (an [`Container::Flv`] session). A tag that
    /// cannot be used is counted in [`ContainerDemux::bad_tags`].
    pub fn push_tag(
        &mut self,
        kind: flv::TagKind,
        timestamp: u64,
        body: &[u8],
        frames: &mut Vec<u8>,
    ) {
        match self.flv.push_tag(kind, timestamp, body) {
            Ok(Some(IngestEvent::TracksChanged)) => Self::header(self.flv.tracks(), frames),
            Ok(Some(IngestEvent::Packet(p))) => {
                if let Some(dts) = self.place(p.track, p.dts) {
                    wire::write_packet(&PacketRef { dts, ..p }, frames);
                    self.packets += 1;
                }
            }
            Ok(None) => {}
            Err(_) => self.bad_tags += 1,
        }
    }
}

/// Runs the pull until SIGTERM.
pub fn run(args: PullArgs) -> Result<()> {
    let term = buffer::install_term_handler();
    let Some((container, transport)) = kind_of(&args.url) else {
        bail!(
            "{}: not a tsudp://, dtsc://, rtmp:// or http(s)://…(.ts|.flv) URL",
            args.url
        );
    };
    let udp = transport == Transport::Udp;
    let socket = buffer::ipc::socket_path(&args.rundir, &args.stream);
    let mut attached = buffer::ipc::attach(&socket, buffer::ipc::Mode::Push)
        .context("attaching to the stream's buffer")?;
    let shown = crate::core::url::redact(&args.url);
    crate::log!(PROTO, "{}: pulling {shown}", args.stream);
    let stats_path = args.rundir.join(format!("{}.pull.json", args.stream));
    let host = shown
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '@']).next())
        .unwrap_or("")
        .to_string();
    buffer::sessions::begin(
        &args.rundir,
        match transport {
            Transport::Udp => "TS-UDP pull",
            Transport::Http => "HTTP pull",
            Transport::DtscTcp => "DTSC pull",
            Transport::Rtmp => "RTMP pull",
            Transport::Hls => "HLS pull",
        },
        &host,
    );
    buffer::sessions::set_stream(&args.stream, buffer::sessions::Kind::Input, None);
    let mut st = Stats {
        path: stats_path,
        url: shown.clone(),
        ..Stats::default()
    };
    let mut timeline = Timeline::after(args.after_ms);
    let mut backoff = Duration::from_secs(1);
    let udp_sock = if udp {
        Some(bind_udp(&args.url)?)
    } else {
        None
    };
    while !term.load(Ordering::SeqCst) {
        st.attempts += 1;
        let started = Instant::now();
        let mut demux = ContainerDemux::new(container, timeline.clone());
        let r = match (&udp_sock, transport) {
            (Some(s), _) => udp_session(s, &mut demux, &mut attached.sock, term, &mut st),
            (None, Transport::DtscTcp) => {
                dtsc_session(&args.url, &mut demux, &mut attached.sock, term, &mut st)
            }
            (None, Transport::Rtmp) => {
                rtmp_session(&args.url, &mut demux, &mut attached.sock, term, &mut st)
            }
            (None, Transport::Hls) => {
                hls_session(&args.url, &mut demux, &mut attached.sock, term, &mut st)
            }
            (None, _) => http_session(&args.url, &mut demux, &mut attached.sock, term, &mut st),
        };
        let mut tail = Vec::new();
        demux.finish(&mut tail);
        if demux.committed > 0 {
            attached
                .sock
                .write_all(&tail)
                .context("writing to the buffer")?;
        }
        timeline = demux.timeline();
        st.packets += demux.packets;
        st.repeated += demux.repeated;
        let ts = demux.ts_stats();
        st.bad += demux.bad_tags + ts.sync_losses + ts.cc_errors + ts.bad_sections + ts.dropped;
        let why = match r {
            Ok(()) if term.load(Ordering::SeqCst) => break,
            Ok(()) => "the upstream ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if demux.packets > 0 && started.elapsed() >= Duration::from_secs(10) {
            backoff = Duration::from_secs(1);
        }
        if udp {
            // No connection to make again: the next datagram starts a new session.
            crate::log!(
                PROTO,
                "{}: {shown}: {why}; the next datagram starts a new session",
                args.stream
            );
            st.write("waiting", Some(&why));
            continue;
        }
        crate::log!(
            PROTO,
            "{}: {shown}: {why}; reconnecting in {} ms",
            args.stream,
            backoff.as_millis()
        );
        st.write("reconnecting", Some(&why));
        let until = Instant::now() + backoff;
        while Instant::now() < until && !term.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    st.write("stopped", None);
    buffer::sessions::end(None);
    Ok(())
}

/// Counters of one pull over all its sessions, written to `RUNDIR/NAME.pull.json`.
#[derive(Default)]
struct Stats {
    path: std::path::PathBuf,
    url: String,
    attempts: u64,
    sessions: u64,
    packets: u64,
    bytes: u64,
    /// Unusable input: FLV tags, TS sync losses, continuity gaps, bad sections, dropped PES.
    bad: u64,
    /// Packets skipped on a reconnect because the last session had sent them (DTSC).
    repeated: u64,
    last_write: Option<Instant>,
}

impl Stats {
    fn write(&mut self, state: &str, why: Option<&str>) {
        self.last_write = Some(Instant::now());
        let v = serde_json::json!({
            "url": self.url,
            "pid": std::process::id(),
            "state": state,
            "attempts": self.attempts,
            "sessions": self.sessions,
            "packets": self.packets,
            "packets_bad": self.bad,
            "packets_repeated_skipped": self.repeated,
            "bytes": self.bytes,
            "last_error": why,
        });
        crate::ingest::rtsp_pull::write_stats_file(&self.path, &v);
    }

    fn tick(&mut self) {
        if self
            .last_write
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.write("playing", None);
        }
    }
}

/// Binds the UDP socket of a `tsudp://HOST:PORT` URL: a multicast group is joined on every
/// interface (bound to the group's port on 0.0.0.0); any other host is bound as given.
fn bind_udp(url: &str) -> Result<UdpSocket> {
    let hostport = url
        .strip_prefix("tsudp://")
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let addr: SocketAddr = hostport
        .to_socket_addrs()
        .with_context(|| format!("{hostport}: not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport}: no address"))?;
    let sock = match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, a.port()))
                .with_context(|| format!("binding UDP port {}", a.port()))?;
            s.join_multicast_v4(a.ip(), &Ipv4Addr::UNSPECIFIED)
                .with_context(|| format!("joining {}", a.ip()))?;
            s
        }
        a => UdpSocket::bind(a).with_context(|| format!("binding {a}"))?,
    };
    // Room for a burst (a 20 Mb/s stream fills 64 KiB in 25 ms).
    let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(sock)
}

/// One UDP session: datagrams until [`UDP_GAP`] passes without one after the first.
fn udp_session(
    sock: &UdpSocket,
    demux: &mut ContainerDemux,
    out: &mut std::os::unix::net::UnixStream,
    term: &AtomicBool,
    st: &mut Stats,
) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut frames = Vec::new();
    let mut last: Option<Instant> = None;
    while !term.load(Ordering::SeqCst) {
        match sock.recv(&mut buf) {
            Ok(n) => {
                if last.is_none() {
                    st.sessions += 1;
                }
                last = Some(Instant::now());
                st.bytes += n as u64;
                buffer::sessions::add_bytes(0, n as u64);
                let _ = demux.push(&buf[..n], &mut frames);
                if !frames.is_empty() {
                    out.write_all(&frames).context("writing to the buffer")?;
                    frames.clear();
                }
                demux.commit();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last.is_some_and(|t| t.elapsed() >= UDP_GAP) {
                    bail!("no datagram for {} s", UDP_GAP.as_secs());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow!("receiving: {e}")),
        }
        if last.is_some() {
            st.tick();
        }
    }
    Ok(())
}

/// One HTTP session: a GET whose body is read until it ends, goes quiet for [`SILENCE`],
/// or is not of the container.
fn http_session(
    url: &str,
    demux: &mut ContainerDemux,
    out: &mut std::os::unix::net::UnixStream,
    term: &AtomicBool,
    st: &mut Stats,
) -> Result<()> {
    let resp = http_agent()
        .get(url)
        .header("User-Agent", "Sluice pull")
        .call()
        .map_err(|e| anyhow!("{e}"))?;
    st.sessions += 1;
    let body = resp.into_body();
    // The body is read on a thread of its own, so that a quiet upstream (a read that never
    // returns) is noticed here and the session given up.
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(64);
    std::thread::spawn(move || {
        let mut r = body.into_reader();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let got = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) => Err(e),
            };
            let failed = got.is_err();
            if tx.send(got).is_err() || failed {
                break;
            }
        }
    });
    let mut feed = Feed::new();
    while !term.load(Ordering::SeqCst) {
        let got = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err(e)) => bail!("reading: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
        };
        feed.take(got.as_deref(), demux, out, st)
            .map_err(|e| anyhow!("{e:#}"))?;
    }
    Ok(())
}

/// The HTTP client of the pulls: connect within [`CONNECT_TIMEOUT`], response head within
/// [`SILENCE`], TLS checked against the system's roots (`SSL_CERT_FILE` for others).
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(SILENCE))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into()
}

/// GETs `url` whole (at most `limit` bytes), within `timeout`.
fn http_get(url: &str, limit: u64, timeout: Duration) -> Result<Vec<u8>> {
    let mut resp = http_agent()
        .get(url)
        .header("User-Agent", "Sluice pull")
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| anyhow!("{url}: {e}"))?;
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| anyhow!("{url}: {e}"))
}

/// One HLS session: the playlist (a master playlist's highest-bandwidth variant) reloaded
/// (RFC 8216 §6.3.4), each new segment fetched and fed on, starting at the newest segment
/// listed. MPEG-TS segments go to the TS demuxer; with `#EXT-X-MAP` (RFC 8216 §4.3.2.5) the
/// init segment is fetched first (again when its URI changes) and the segments are read as
/// fragmented MP4. Ends when the playlist ends (`#EXT-X-ENDLIST`), fails, or brings nothing
/// new for [`SILENCE`] (or three target durations, if longer).
fn hls_session(
    url: &str,
    demux: &mut ContainerDemux,
    out: &mut std::os::unix::net::UnixStream,
    term: &AtomicBool,
    st: &mut Stats,
) -> Result<()> {
    use dtsc::hls::{parse_playlist, resolve_uri, Parsed};
    let mut playlist_url = url.to_string();
    let mut next: Option<u64> = None;
    let mut map_url: Option<String> = None;
    let mut feed = Feed::new();
    st.sessions += 1;
    while !term.load(Ordering::SeqCst) {
        let text = http_get(&playlist_url, 1 << 20, SILENCE)?;
        let text = String::from_utf8_lossy(&text);
        let media = match parse_playlist(&text).map_err(|e| anyhow!("{playlist_url}: {e}"))? {
            Parsed::Master(variants) => {
                let (_, uri) = variants
                    .iter()
                    .max_by_key(|(bw, _)| *bw)
                    .ok_or_else(|| anyhow!("a master playlist without variants"))?;
                playlist_url = resolve_uri(&playlist_url, uri);
                continue;
            }
            Parsed::Media(m) => m,
        };
        if media.ended && next.is_none() {
            bail!("the playlist has ended (#EXT-X-ENDLIST): a stored stream; not pulled");
        }
        // Fragmented MP4 segments: the init segment first, again whenever its URI changes.
        if let Some(map) = &media.map_uri {
            let map = resolve_uri(&playlist_url, map);
            if map_url.as_deref() != Some(map.as_str()) {
                let init = http_get(&map, 1 << 20, SILENCE)?;
                demux.set_init(&init).map_err(|e| anyhow!("{map}: {e}"))?;
                map_url = Some(map);
            }
        }
        let target = Duration::from_secs(media.target_duration_s.clamp(1, 60));
        feed.silence = SILENCE.max(3 * target);
        let newest = media.segments.last().map(|s| s.0);
        let from = match next {
            None => newest.unwrap_or(0),
            Some(n) if n < media.media_sequence => {
                crate::log!(
                    PROTO,
                    "{}: fell behind the playlist: segments {n}..{} skipped",
                    crate::core::url::redact(url),
                    media.media_sequence
                );
                media.media_sequence
            }
            Some(n) => n,
        };
        let mut got = false;
        for (msn, _, uri) in media.segments.iter().filter(|s| s.0 >= from) {
            if term.load(Ordering::SeqCst) {
                return Ok(());
            }
            let seg = http_get(
                &resolve_uri(&playlist_url, uri),
                64 << 20,
                SILENCE.max(2 * target),
            )?;
            feed.take(Some(&seg), demux, out, st)?;
            next = Some(msn + 1);
            got = true;
        }
        if next.is_none() {
            next = Some(from);
        }
        if media.ended {
            // What the demuxer holds goes out at the session's end (`finish`).
            return Ok(());
        }
        // RFC 8216 §6.3.4: a target duration after a reload that brought something, half of
        // one after one that did not.
        let until = Instant::now() + if got { target } else { target / 2 };
        while Instant::now() < until && !term.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            feed.settle(false, demux, out, st)?;
        }
    }
    Ok(())
}

/// One DTSC session: connect, send `play`, read frames until the upstream closes, refuses,
/// sends garbage or goes quiet. `ping` commands are not answered (Sluice sends none).
fn dtsc_session(
    url: &str,
    demux: &mut ContainerDemux,
    out: &mut std::os::unix::net::UnixStream,
    term: &AtomicBool,
    st: &mut Stats,
) -> Result<()> {
    let rest = url.strip_prefix("dtsc://").unwrap_or(url);
    let (hostport, stream) = rest.split_once('/').unwrap_or((rest, ""));
    let stream = stream.split(['?', '#']).next().unwrap_or("");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:4200")
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport}: no address"))?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    let mut play = Vec::new();
    wire::write_command(
        &wire::Value::obj([
            ("cmd", wire::Value::str("play")),
            ("stream", wire::Value::str(stream)),
        ]),
        &mut play,
    );
    sock.write_all(&play)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    st.sessions += 1;
    let mut feed = Feed::new();
    let mut buf = vec![0u8; 64 << 10];
    while !term.load(Ordering::SeqCst) {
        let got = match sock.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => Some(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Err(e) => bail!("reading: {e}"),
        };
        feed.take(got, demux, out, st)
            .map_err(|e| anyhow!("{e:#}"))?;
    }
    Ok(())
}

/// One RTMP session: connect, `play`, media messages until the server stops the stream,
/// refuses, closes or goes quiet ([`dtsc::rtmp::client::RtmpClient`], sans-IO).
fn rtmp_session(
    url: &str,
    demux: &mut ContainerDemux,
    out: &mut std::os::unix::net::UnixStream,
    term: &AtomicBool,
    st: &mut Stats,
) -> Result<()> {
    use crate::core::drive::{drive, Drive, Flow, Step};
    use dtsc::rtmp::client::{ClientEvent, RtmpClient};
    use dtsc::rtmp::session::MediaKind;
    let (host, port, app, name, tc_url) =
        RtmpClient::parse_url(url).ok_or_else(|| anyhow!("not rtmp://HOST[:PORT]/APP/S"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host}: no address"))?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    let mut client = RtmpClient::player(&tc_url, &app, &name, crate::seed());
    client.start(0);
    let mut feed = Feed::new();
    let how = Drive {
        deadline: None,
        poll: Duration::from_millis(100),
        what: "the RTMP server",
    };
    drive(&mut sock, &mut client, how, |_, step| {
        match step {
            Step::Event(ClientEvent::Playing) => {
                st.sessions += 1;
                crate::log!(PROTO, "{}: playing", crate::core::url::redact(url));
            }
            Step::Event(ClientEvent::Media {
                kind,
                timestamp,
                payload,
            }) => {
                let tag = match kind {
                    MediaKind::Audio => flv::TagKind::Audio,
                    MediaKind::Video => flv::TagKind::Video,
                    MediaKind::Data => flv::TagKind::Script,
                };
                demux.push_tag(tag, timestamp, &payload, &mut feed.frames);
            }
            Step::Event(ClientEvent::Failed(why)) => bail!("refused: {why}"),
            Step::Event(ClientEvent::Stopped(why)) => {
                crate::log!(
                    PROTO,
                    "{}: the server stopped: {why}",
                    crate::core::url::redact(url)
                );
                return Ok(Flow::Done);
            }
            Step::Event(_) => {}
            Step::Woke(got) => {
                st.bytes += got as u64;
                buffer::sessions::add_bytes(0, got as u64);
                feed.settle(got > 0, demux, out, st)?;
            }
        }
        Ok(if term.load(Ordering::SeqCst) {
            Flow::Done
        } else {
            Flow::Continue
        })
    })?;
    Ok(())
}

/// What a connection-based session does with what it read: demux it, hold the first
/// [`PROBE`], refuse an upstream far ahead of real time, write to the buffer, give up after
/// [`SILENCE`].
struct Feed {
    frames: Vec<u8>,
    started: Instant,
    quiet_since: Instant,
    /// How long without input ends the session ([`SILENCE`] unless set).
    silence: Duration,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            frames: Vec::new(),
            started: Instant::now(),
            quiet_since: Instant::now(),
            silence: SILENCE,
        }
    }

    /// `bytes` read (or `None`: nothing within the poll interval).
    fn take(
        &mut self,
        bytes: Option<&[u8]>,
        demux: &mut ContainerDemux,
        out: &mut std::os::unix::net::UnixStream,
        st: &mut Stats,
    ) -> Result<()> {
        if let Some(b) = bytes {
            st.bytes += b.len() as u64;
            buffer::sessions::add_bytes(0, b.len() as u64);
            demux.push(b, &mut self.frames).map_err(|e| anyhow!(e))?;
        }
        self.settle(bytes.is_some(), demux, out, st)
    }

    /// After input (`got`: some came) was demuxed into `self.frames`: the checks and the
    /// write.
    fn settle(
        &mut self,
        got: bool,
        demux: &mut ContainerDemux,
        out: &mut std::os::unix::net::UnixStream,
        st: &mut Stats,
    ) -> Result<()> {
        if got {
            self.quiet_since = Instant::now();
        } else if self.quiet_since.elapsed() >= self.silence {
            bail!("nothing for {} s", self.silence.as_secs())
        }
        // A live upstream sends at most a GOP or so ahead of real time; one that sends far
        // more at once serves an ended (or stored) stream, such as a finished publish in its
        // linger time: pulling it would replay old media as live, so it is not pulled. What
        // comes in the first PROBE is held until that is known. (Checked in a session's
        // first 10 s only: over hours, an upstream's clock may drift ahead of ours.)
        let elapsed = self.started.elapsed();
        let ahead = demux.span_ms().saturating_sub(elapsed.as_millis() as u64);
        if elapsed < Duration::from_secs(10) && ahead > MAX_AHEAD_MS {
            bail!(
                "the upstream sent {} ms of media in {} ms: its stream has ended or is stored; not pulled",
                demux.span_ms(),
                elapsed.as_millis()
            );
        }
        if elapsed >= PROBE {
            if !self.frames.is_empty() {
                out.write_all(&self.frames)
                    .context("writing to the buffer")?;
                self.frames.clear();
            }
            demux.commit();
        }
        st.tick();
        Ok(())
    }
}

/// How long the start of an HTTP session is held before it goes to the buffer.
pub const PROBE: Duration = Duration::from_millis(500);
/// How far ahead of real time an HTTP upstream may send (a live server's first burst is a
/// GOP or two), ms.
pub const MAX_AHEAD_MS: u64 = 6000;

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::wire::Frame;

    #[test]
    fn urls_name_their_container_and_transport() {
        assert_eq!(
            kind_of("tsudp://239.1.1.1:5000"),
            Some((Container::Ts, Transport::Udp))
        );
        assert_eq!(
            kind_of("http://h:8080/live.ts?x=1"),
            Some((Container::Ts, Transport::Http))
        );
        assert_eq!(
            kind_of("https://h/a/b.FLV"),
            Some((Container::Flv, Transport::Http))
        );
        assert_eq!(
            kind_of("dtsc://origin:4200/live"),
            Some((Container::Dtsc, Transport::DtscTcp))
        );
        assert_eq!(kind_of("dtsc://origin"), None);
        assert_eq!(
            kind_of("rtmp://h:1935/live/cam"),
            Some((Container::Flv, Transport::Rtmp))
        );
        assert_eq!(kind_of("rtmp://h/cam"), None);
        assert_eq!(
            kind_of("https://cdn/live/index.m3u8?t=1"),
            Some((Container::Ts, Transport::Hls))
        );
        assert_eq!(kind_of("http://h/x.mpd"), None);
        assert_eq!(kind_of("rtsp://h/x"), None);
    }

    /// An FLV stream with an AVC sequence header and two frames at `t0`, `t0 + 40`.
    fn flv_bytes(t0: u32) -> Vec<u8> {
        let mut out = Vec::new();
        flv::write_file_header(false, true, &mut out);
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut rec = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        rec.extend_from_slice(&sps);
        rec.extend_from_slice(&[1, 0, pps.len() as u8]);
        rec.extend_from_slice(&pps);
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(&rec);
        flv::write_tag(flv::TagKind::Video, t0, &seq, &mut out);
        let frame = |key: bool| {
            let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            b.extend_from_slice(&[0, 0, 0, 2, 0x65, 0x88]);
            b
        };
        flv::write_tag(flv::TagKind::Video, t0, &frame(true), &mut out);
        flv::write_tag(flv::TagKind::Video, t0 + 40, &frame(false), &mut out);
        out
    }

    fn dts_of(frames: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Ok(Some((f, used))) = wire::parse_frame(&frames[at..]) {
            if let Frame::Packet(p) = f {
                out.push(p.dts);
            }
            at += used;
        }
        out
    }

    #[test]
    fn each_session_goes_on_after_the_last() {
        // A first session of an upstream whose clock is at 5 000 000 ms, fed byte by byte.
        let mut d = ContainerDemux::new(Container::Flv, Timeline::default());
        let mut frames = Vec::new();
        for b in flv_bytes(5_000_000) {
            d.push(&[b], &mut frames).unwrap();
        }
        assert_eq!(dts_of(&frames), [1000, 1040]);
        assert_eq!(d.last, 1040);
        d.commit();
        // The upstream restarted at 0: the next session goes on after 1040.
        let mut d2 = ContainerDemux::new(Container::Flv, d.timeline());
        let mut frames = Vec::new();
        d2.push(&flv_bytes(0), &mut frames).unwrap();
        assert_eq!(dts_of(&frames), [1080, 1120]);
    }

    #[test]
    fn bytes_that_are_not_flv_end_the_session() {
        let mut d = ContainerDemux::new(Container::Flv, Timeline::default());
        let mut frames = Vec::new();
        assert!(d.push(b"<html>nope</html>", &mut frames).is_err());
        assert!(frames.is_empty());
    }

    /// DTSC frames: a header with `unixzero`, then one video packet per DTS (keyframes at 0
    /// and every 1000).
    fn dtsc_bytes(unixzero: i64, dts: &[u64]) -> Vec<u8> {
        let mut v = dtsc::Track::new(1, dtsc::TrackKind::Video, dtsc::Codec::H264);
        v.init = vec![1, 0x42, 0xc0, 0x1e];
        let mut out = Vec::new();
        wire::write_header(
            &Header {
                live: true,
                unixzero: Some(unixzero),
                tracks: vec![v],
            },
            &mut out,
        );
        for &t in dts {
            let p = PacketRef {
                track: 1,
                dts: t,
                offset: 0,
                keyframe: t % 1000 == 0,
                bpos: 0,
                data: &[0, 0, 0, 1, 0x65],
            };
            wire::write_packet(&p, &mut out);
        }
        out
    }

    #[test]
    fn a_reconnect_to_the_same_upstream_timeline_goes_on_where_it_was() {
        let mut d = ContainerDemux::new(Container::Dtsc, Timeline::default());
        let mut frames = Vec::new();
        d.push(
            &dtsc_bytes(1_700_000_000_000, &[5000, 5040, 5080]),
            &mut frames,
        )
        .unwrap();
        assert_eq!(dts_of(&frames), [1000, 1040, 1080]);
        d.commit();
        // The same upstream buffer again, from its newest keyframe (already had): only what
        // is new goes on, at the same placement.
        let mut d2 = ContainerDemux::new(Container::Dtsc, d.timeline());
        let mut frames = Vec::new();
        d2.push(
            &dtsc_bytes(1_700_000_000_300, &[5000, 5040, 5080, 5120, 5160]),
            &mut frames,
        )
        .unwrap();
        assert_eq!(dts_of(&frames), [1120, 1160]);
        assert_eq!(d2.repeated, 3);
        d2.commit();
        // Another upstream timeline (its buffer restarted): placed after the last.
        let mut d3 = ContainerDemux::new(Container::Dtsc, d2.timeline());
        let mut frames = Vec::new();
        d3.push(&dtsc_bytes(1_700_000_999_000, &[0, 40]), &mut frames)
            .unwrap();
        assert_eq!(dts_of(&frames), [1200, 1240]);
        // A session that sent nothing on leaves the timeline where it was.
        let d4 = ContainerDemux::new(Container::Dtsc, d2.timeline());
        assert_eq!(d4.timeline().last, 1160);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..400), 0..8),
            which in 0usize..3,
        ) {
            let c = [Container::Flv, Container::Ts, Container::Dtsc][which];
            let mut d = ContainerDemux::new(c, Timeline::after(500));
            let mut frames = Vec::new();
            for ch in &chunks {
                if d.push(ch, &mut frames).is_err() {
                    break;
                }
            }
            d.finish(&mut frames);
            for t in dts_of(&frames) {
                proptest::prop_assert!(t > 500);
            }
        }
    }
}
