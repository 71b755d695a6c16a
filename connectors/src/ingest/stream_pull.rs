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
//! buffer as its publisher. [`ContainerDemux`] (`dtsc::container`, sans-IO) turns the bytes into DTSC frames;
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
use dtsc::flv;
use dtsc::wire;

use dtsc::container::{Container, ContainerDemux, Timeline};

use crate::ingest::rtsp_pull::PullArgs;
use crate::ingest::supervisor::{self, Outcome, Pull};

const PROTO: &str = "pull";
/// A connection that brought nothing for this long is given up and made again.
pub const SILENCE: Duration = Duration::from_secs(8);
/// UDP: after this long without a datagram, the next one starts a new session (its
/// timestamps are placed after the last packet, whatever the sender's clock says now).
pub const UDP_GAP: Duration = Duration::from_secs(2);
/// Longest wait between attempts: an upstream that comes back is played again within it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Runs the pull until SIGTERM.
pub fn run(args: PullArgs) -> Result<()> {
    let term = ipc::process::install_term_handler();
    let Some((container, transport)) = kind_of(&args.url) else {
        bail!(
            "{}: not a tsudp://, dtsc://, rtmp:// or http(s)://…(.ts|.flv) URL",
            args.url
        );
    };
    let shown = crate::core::url::redact(&args.url);
    let host = shown
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '@']).next())
        .unwrap_or("")
        .to_string();
    let proto = match transport {
        Transport::Udp => "TS-UDP pull",
        Transport::Http => "HTTP pull",
        Transport::DtscTcp => "DTSC pull",
        Transport::Rtmp => "RTMP pull",
        Transport::Hls => "HLS pull",
    };
    let attached = supervisor::attach(&args, proto, &host, &shown)?;
    let udp = match transport {
        Transport::Udp => Some(bind_udp(&args.url)?),
        _ => None,
    };
    let mut pull = StreamPull {
        st: Stats {
            path: args.rundir.join(format!("{}.pull.json", args.stream)),
            url: shown.clone(),
            ..Stats::default()
        },
        timeline: Timeline::after(args.after_ms),
        url: &args.url,
        container,
        transport,
        udp,
        attached,
    };
    supervisor::supervise(&args.stream, &shown, term, MAX_BACKOFF, &mut pull);
    Ok(())
}

/// A byte-stream pull's state across its sessions.
struct StreamPull<'a> {
    url: &'a str,
    container: Container,
    transport: Transport,
    /// The bound socket of a `tsudp://` pull (kept across sessions).
    udp: Option<UdpSocket>,
    attached: buffer::shmem::Attached,
    timeline: Timeline,
    st: Stats,
}

impl Pull for StreamPull<'_> {
    fn session(&mut self, term: &AtomicBool) -> Outcome {
        self.st.attempts += 1;
        let started = Instant::now();
        let mut demux = ContainerDemux::new(self.container, self.timeline.clone());
        let (url, out, st) = (self.url, &mut self.attached.sock, &mut self.st);
        let r = match (&self.udp, self.transport) {
            (Some(s), _) => udp_session(s, &mut demux, out, term, st),
            (None, Transport::DtscTcp) => dtsc_session(url, &mut demux, out, term, st),
            (None, Transport::Rtmp) => rtmp_session(url, &mut demux, out, term, st),
            (None, Transport::Hls) => hls_session(url, &mut demux, out, term, st),
            (None, _) => http_session(url, &mut demux, out, term, st),
        };
        let mut tail = Vec::new();
        demux.finish(&mut tail);
        // What the demuxer still held goes to the buffer whatever ended the session.
        let wrote = match demux.committed() {
            0 => Ok(()),
            _ => out.write_all(&tail).context("writing to the buffer"),
        };
        let r = r.and(wrote);
        self.timeline = demux.timeline();
        st.packets += demux.packets;
        st.repeated += demux.repeated;
        let ts = demux.ts_stats();
        st.bad += demux.bad_tags + ts.sync_losses + ts.cc_errors + ts.bad_sections + ts.dropped;
        let why = match r {
            Ok(()) if term.load(Ordering::SeqCst) => return Outcome::Stopped,
            Ok(()) => "the upstream ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if self.udp.is_some() {
            // No connection to make again: the next datagram starts a new session.
            return Outcome::Waiting { why };
        }
        Outcome::Ended {
            why,
            healthy: demux.packets > 0 && started.elapsed() >= Duration::from_secs(10),
        }
    }

    fn stats(&mut self, state: &str, why: Option<&str>) {
        self.st.write(state, why);
    }
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
        supervisor::write_stats_file(&self.path, &v);
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
                ipc::sessions::add_bytes(0, n as u64);
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
                ipc::sessions::add_bytes(0, got as u64);
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
            ipc::sessions::add_bytes(0, b.len() as u64);
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
        for note in demux.take_notes() {
            crate::log!(PROTO, "{note}");
        }
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
}
