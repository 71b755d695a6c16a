//! The RTSP pull input: plays a camera (`rtsp://[user:pass@]host[:port]/path`) into a
//! stream's buffer, as MistServer's RTSP input does. Started by the stream's buffer as
//! `sluice pull --stream S --url URL --rundir DIR` (its own process, so that a camera that
//! sends garbage can crash nothing but this), attached to the buffer as its publisher.
//!
//! The loop around [`RtspClient`] (requests) and [`RtpIngest`] (RTP to DTSC packets):
//! * RTP over TCP interleaved by default; `--transport udp` binds two UDP ports per track,
//!   puts each track's packets back in order with a [`JitterBuffer`] (waits up to
//!   [`JITTER_MS`] for a missing packet), and sends the camera an RTCP receiver report
//!   every [`RR_INTERVAL`].
//! * Reconnects with backoff (1 s doubling to [`MAX_BACKOFF`], 5 s; back to 1 s after a
//!   session that played for 10 s) when the camera refuses, drops the connection, or sends nothing for
//!   [`SILENCE`] (RTCP alone does not count). The buffer's publisher connection stays up across reconnects, and each
//!   new session's times start after the last packet of the previous one, so viewers see
//!   one stream with increasing timestamps. New parameter sets (another resolution) give
//!   the buffer new init data.
//! * Loss (RTP packets missing, unreadable, access units dropped while waiting for a
//!   keyframe, late packets), reconnects and the state are written every second to
//!   `RUNDIR/NAME.pull.json` for the controller's stats, and logged when they change.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::rtp::JitterBuffer;

use dtsc::machine::{self, Input, Machine};
use dtsc::rtp::ingest::RtpIngest;
use dtsc::rtsp::client::{ClientEvent, Lower, RtspClient};

use crate::ingest::supervisor::{self, Outcome, Pull};

const PROTO: &str = "pull";
/// A session that received nothing for this long is given up and reconnected.
pub const SILENCE: Duration = Duration::from_secs(8);
/// How long a UDP packet ahead of a gap waits for the missing one, ms.
pub const JITTER_MS: u64 = 150;
/// How often a UDP session sends RTCP receiver reports.
pub const RR_INTERVAL: Duration = Duration::from_secs(5);
/// After this long without media, the reorder windows are emptied.
pub const QUIET: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between attempts: a camera that comes back is played again within it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the buffer passes to a pull process.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// The stream pulled into.
    #[arg(long)]
    pub stream: String,
    /// The camera's URL.
    #[arg(long)]
    pub url: String,
    /// Folder of the Unix sockets.
    #[arg(long)]
    pub rundir: PathBuf,
    /// `tcp` (interleaved, the default) or `udp`.
    #[arg(long, default_value = "tcp")]
    pub transport: String,
    /// DTS (ms) the first packet is placed after: a restarted pull continues the stream.
    #[arg(long, default_value_t = 0)]
    pub after_ms: u64,
}

/// Counters of one pull, over all its sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    lost: u64,
    bad: u64,
    skipped: u64,
    late: u64,
    reordered: u64,
    jumps: u64,
    /// Connection attempts.
    attempts: u64,
    /// Sessions that reached PLAY.
    sessions: u64,
}

/// Runs the pull until SIGTERM.
pub fn run(args: PullArgs) -> Result<()> {
    let term = ipc::process::install_term_handler();
    let lower = match args.transport.as_str() {
        "tcp" => Lower::Tcp,
        "udp" => Lower::Udp,
        other => bail!("transport {other:?}: tcp or udp"),
    };
    // Checked once: a URL that cannot work is not retried.
    let shown = RtspClient::new(&args.url, lower)
        .map_err(|e| anyhow!(e))?
        .url()
        .to_string();
    let camera_host = rtsp_types::Url::parse(&shown)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let what = format!("{shown} over {}", args.transport);
    let attached = supervisor::attach(&args, "RTSP pull", &camera_host, &what)?;
    let mut pull = RtspPull {
        stats_path: args.rundir.join(format!("{}.pull.json", args.stream)),
        after: args.after_ms,
        totals: Counters::default(),
        args: &args,
        lower,
        attached,
        shown: shown.clone(),
    };
    supervisor::supervise(&args.stream, &shown, term, MAX_BACKOFF, &mut pull);
    Ok(())
}

/// The RTSP pull's state across its sessions.
struct RtspPull<'a> {
    args: &'a PullArgs,
    lower: Lower,
    attached: buffer::shmem::Attached,
    shown: String,
    stats_path: PathBuf,
    /// The DTS the next session's first packet goes after.
    after: u64,
    totals: Counters,
}

impl Pull for RtspPull<'_> {
    fn session(&mut self, term: &std::sync::atomic::AtomicBool) -> Outcome {
        self.totals.attempts += 1;
        let started = Instant::now();
        let mut s = Session {
            args: self.args,
            lower: self.lower,
            out: &mut self.attached.sock,
            after: self.after,
            totals: self.totals,
            stats_path: &self.stats_path,
            played: false,
        };
        let r = s.run(term);
        let played = s.played;
        self.after = s.after;
        self.totals = s.totals;
        match r {
            Ok(()) => Outcome::Stopped,
            Err(e) => Outcome::Ended {
                why: format!("{e:#}"),
                healthy: played && started.elapsed() >= Duration::from_secs(10),
            },
        }
    }

    fn stats(&mut self, state: &str, why: Option<&str>) {
        write_stats(&self.stats_path, &self.shown, state, &self.totals, why);
    }
}

fn write_stats(path: &std::path::Path, url: &str, state: &str, c: &Counters, why: Option<&str>) {
    let v = serde_json::json!({
        "url": url,
        "pid": std::process::id(),
        "state": state,
        "packets_lost": c.lost,
        "packets_bad": c.bad,
        "packets_late": c.late,
        "packets_reordered": c.reordered,
        "units_dropped": c.skipped,
        "timestamp_jumps": c.jumps,
        "attempts": c.attempts,
        "sessions": c.sessions,
        "last_error": why,
    });
    supervisor::write_stats_file(path, &v);
}

/// Writes `bytes` to the camera's non-blocking socket, blocking for it.
fn write_blocking(sock: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    sock.set_nonblocking(false)?;
    let w = sock.write_all(bytes);
    sock.set_nonblocking(true)?;
    w.context("writing to the camera")
}

/// Sends what the client has to send (a TEARDOWN at the end), leaving its events.
fn send_requests(sock: &mut TcpStream, client: &mut RtspClient) -> Result<()> {
    while let machine::Output::Transmit(tx) = client.poll_output() {
        write_blocking(sock, &tx)?;
    }
    Ok(())
}

fn now_ms(zero: Instant) -> u64 {
    zero.elapsed().as_millis() as u64
}

/// A track received over UDP: our sockets, the camera's addresses, the reorder buffer.
struct UdpTrack {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    jitter: JitterBuffer,
    server: Option<(SocketAddr, SocketAddr)>,
    ssrc: Option<u32>,
    highest_seq: u16,
}

struct Session<'a> {
    args: &'a PullArgs,
    lower: Lower,
    out: &'a mut std::os::unix::net::UnixStream,
    /// The DTS this session's first packet goes after; at the end, this session's last.
    after: u64,
    totals: Counters,
    stats_path: &'a std::path::Path,
    played: bool,
}

impl Session<'_> {
    /// One connection to the camera: `Ok` when told to stop, `Err` with the reason it ended.
    fn run(&mut self, term: &std::sync::atomic::AtomicBool) -> Result<()> {
        let zero = Instant::now();
        let mut client = RtspClient::new(&self.args.url, self.lower).map_err(|e| anyhow!(e))?;
        let url = rtsp_types::Url::parse(client.url()).map_err(|e| anyhow!("{e}"))?;
        let host = url.host_str().unwrap_or("").to_string();
        let port = url.port().unwrap_or(554);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host}: no address"))?;
        let mut sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        client.start(Instant::now());
        let mut ingest: Option<RtpIngest> = None;
        let mut udp: Vec<UdpTrack> = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let mut frames = Vec::new();
        let mut last_media = Instant::now();
        let mut last_stats = Instant::now();
        let mut last_rr = Instant::now();
        let mut logged = self.totals;
        let mut flushed = false;
        let result = loop {
            if term.load(Ordering::SeqCst) {
                client.teardown(Instant::now());
                let _ = send_requests(&mut sock, &mut client);
                break Ok(());
            }
            // Wait for the camera (TCP and every UDP socket), at most until a jitter deadline.
            let now = now_ms(zero);
            let wait = udp
                .iter()
                .filter_map(|u| u.jitter.deadline())
                .min()
                .map_or(200, |d| d.saturating_sub(now).min(200));
            {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
                for u in &udp {
                    fds.push(PollFd::new(u.rtp.as_fd(), PollFlags::POLLIN));
                    fds.push(PollFd::new(u.rtcp.as_fd(), PollFlags::POLLIN));
                }
                let _ = poll(&mut fds, PollTimeout::from(wait as u16));
            }
            let now = now_ms(zero);
            let mut closed = false;
            loop {
                match sock.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        let _ = client.handle_input(Instant::now(), Input::Bytes(&chunk[..n]));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            let _ = client.handle_input(Instant::now(), Input::Timeout);
            ipc::sessions::update(Some(&sock), false);
            let mut failed = None;
            loop {
                let ev = match client.poll_output() {
                    machine::Output::Transmit(tx) => {
                        write_blocking(&mut sock, &tx)?;
                        continue;
                    }
                    machine::Output::Event(ev) => ev,
                    machine::Output::Timeout(_) => break,
                };
                match ev {
                    ClientEvent::Described(tracks) => {
                        if self.lower == Lower::Udp {
                            let local = sock.local_addr()?.ip();
                            udp.clear();
                            for _ in &tracks {
                                let (rtp, rtcp) = bind_pair(local)?;
                                udp.push(UdpTrack {
                                    rtp,
                                    rtcp,
                                    jitter: JitterBuffer::new(JITTER_MS, 500),
                                    server: None,
                                    ssrc: None,
                                    highest_seq: 0,
                                });
                            }
                            let ports = udp
                                .iter()
                                .map(|u| {
                                    let p = |s: &UdpSocket| {
                                        s.local_addr().map(|a| a.port()).unwrap_or(0)
                                    };
                                    (p(&u.rtp), p(&u.rtcp))
                                })
                                .collect();
                            client.set_client_ports(ports, Instant::now());
                        }
                        // Times go on after the previous session's last packet: the reorder
                        // delay given to video and one frame of margin.
                        let start = if self.after == 0 {
                            1000
                        } else {
                            self.after + dtsc::rtp::ingest::REORDER_DELAY_MS + 40
                        };
                        ingest = Some(RtpIngest::new(tracks, start));
                    }
                    ClientEvent::SetUp {
                        track,
                        channel,
                        server_ports,
                    } => {
                        if let Some(ing) = &mut ingest {
                            if let Some(t) = ing.tracks.get_mut(track) {
                                t.channel = Some(channel);
                            }
                        }
                        if let (Some(u), Some((a, b))) = (udp.get_mut(track), server_ports) {
                            let ip = sock.peer_addr()?.ip();
                            u.server = Some(((ip, a).into(), (ip, b).into()));
                        }
                    }
                    ClientEvent::Playing => {
                        if let Some(ing) = &ingest {
                            ing.header(&mut frames);
                            let ids: Vec<String> = ing
                                .tracks
                                .iter()
                                .filter(|t| t.channel.is_some())
                                .map(|t| format!("{} {}", t.track.id, t.track.codec.as_str()))
                                .collect();
                            crate::log!(
                                PROTO,
                                "{}: playing {} ({})",
                                self.args.stream,
                                client.url(),
                                ids.join(", ")
                            );
                        }
                        self.played = true;
                        self.totals.sessions += 1;
                        last_media = Instant::now();
                        write_stats(
                            self.stats_path,
                            client.url(),
                            "playing",
                            &self.counters(&ingest, &udp),
                            None,
                        );
                    }
                    ClientEvent::Data { channel, bytes } => {
                        if let Some(ing) = &mut ingest {
                            // RTP is media; RTCP (which cameras send on after their media
                            // ended) is not.
                            if take(ing, channel, &bytes, &mut frames) {
                                last_media = Instant::now();
                                flushed = false;
                            }
                        }
                    }
                    ClientEvent::Failed(why) => failed = Some(why),
                }
            }
            // UDP: datagrams into the jitter buffers (RTCP straight to the ingest), then
            // what may leave them.
            if let Some(ing) = &mut ingest {
                for (i, u) in udp.iter_mut().enumerate() {
                    let ch = 2 * i as u8;
                    while let Ok(n) = u.rtcp.recv(&mut chunk) {
                        let _ = take(ing, ch + 1, &chunk[..n], &mut frames);
                    }
                    while let Ok(n) = u.rtp.recv(&mut chunk) {
                        ipc::sessions::add_bytes(0, n as u64);
                        last_media = Instant::now();
                        flushed = false;
                        let pkt = chunk[..n].to_vec();
                        if n >= 12 {
                            u.ssrc = Some(u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]));
                            u.highest_seq = u16::from_be_bytes([pkt[2], pkt[3]]);
                        }
                        if u.jitter.push(pkt, now).is_err() {
                            ing.tracks[i].depay.bad += 1;
                        }
                    }
                    while let Some(p) = u.jitter.pop(now) {
                        let _ = take(ing, ch, &p, &mut frames);
                    }
                }
            }
            // A camera that went quiet (the end of its media, a stall): what the reorder
            // windows hold goes out now instead of when the session ends.
            if last_media.elapsed() >= QUIET && !flushed {
                if let Some(ing) = &mut ingest {
                    ing.finish(&mut frames);
                }
                flushed = true;
            }
            if !frames.is_empty() {
                self.out
                    .write_all(&frames)
                    .context("writing to the buffer")?;
                frames.clear();
            }
            if last_rr.elapsed() >= RR_INTERVAL && !udp.is_empty() {
                last_rr = Instant::now();
                for u in &udp {
                    if let (Some((_, to)), Some(ssrc)) = (u.server, u.ssrc) {
                        let _ = u.rtcp.send_to(&receiver_report(ssrc, u.highest_seq), to);
                    }
                }
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                let c = self.counters(&ingest, &udp);
                let state = if client.playing() {
                    "playing"
                } else {
                    "connecting"
                };
                write_stats(self.stats_path, client.url(), state, &c, None);
                ipc::sessions::set_lost(c.lost);
                if (c.lost, c.bad, c.skipped, c.late, c.jumps)
                    != (
                        logged.lost,
                        logged.bad,
                        logged.skipped,
                        logged.late,
                        logged.jumps,
                    )
                {
                    crate::log!(
                        PROTO,
                        "{}: {} RTP packets lost, {} unreadable, {} late; {} access units dropped; {} timestamp jumps",
                        self.args.stream,
                        c.lost,
                        c.bad,
                        c.late,
                        c.skipped,
                        c.jumps
                    );
                    logged = c;
                }
            }
            if let Some(why) = failed {
                break Err(anyhow!(why));
            }
            if closed {
                break Err(anyhow!("the camera closed the connection"));
            }
            if last_media.elapsed() >= SILENCE {
                client.teardown(Instant::now());
                let _ = send_requests(&mut sock, &mut client);
                break Err(anyhow!(
                    "nothing from the camera for {} s",
                    SILENCE.as_secs()
                ));
            }
        };
        // This connection's bytes stay in the session's counters after it closes.
        if let Some((down, up, _)) = ipc::sessions::tcp_info(&sock) {
            ipc::sessions::add_bytes(down, up);
        }
        // What the session still holds, then its counters into the totals.
        if let Some(ing) = &mut ingest {
            for (i, u) in udp.iter_mut().enumerate() {
                for p in u.jitter.drain() {
                    let _ = take(ing, 2 * i as u8, &p, &mut frames);
                }
            }
            ing.finish(&mut frames);
            let _ = self.out.write_all(&frames);
            let per: Vec<String> = ing
                .tracks
                .iter()
                .filter(|t| t.channel.is_some())
                .map(|t| format!("track {}: {} packets", t.track.id, t.units))
                .collect();
            crate::log!(
                PROTO,
                "{}: session ended ({})",
                self.args.stream,
                per.join(", ")
            );
            if let Some(d) = ing.last_dts() {
                self.after = d;
            }
        }
        self.totals = self.counters(&ingest, &udp);
        result
    }

    /// The pull's counters: earlier sessions' plus this one's.
    fn counters(&self, ingest: &Option<RtpIngest>, udp: &[UdpTrack]) -> Counters {
        let mut c = self.totals;
        if let Some(ing) = ingest {
            let (lost, bad, skipped) = ing.losses();
            c.lost += lost;
            c.bad += bad;
            c.skipped += skipped;
            c.jumps += ing.jumps();
        }
        c.late += udp.iter().map(|u| u.jitter.late).sum::<u64>();
        c.reordered += udp.iter().map(|u| u.jitter.reordered).sum::<u64>();
        c
    }
}

/// Hands one RTP or RTCP packet on `channel` to the ingest; a new header goes first when a
/// track's init data changed. True when it was RTP of a set-up track.
fn take(ing: &mut RtpIngest, channel: u8, bytes: &[u8], frames: &mut Vec<u8>) -> bool {
    let Some((i, is_rtcp)) = ing.track_on(channel) else {
        return false;
    };
    if is_rtcp {
        ing.rtcp(i, bytes);
        return false;
    }
    let _ = ing.rtp(i, bytes, frames);
    true
}

/// Two UDP sockets on consecutive ports, RTP on the even one (RFC 3550 §11).
fn bind_pair(ip: std::net::IpAddr) -> Result<(UdpSocket, UdpSocket)> {
    for _ in 0..20 {
        let a = UdpSocket::bind((ip, 0))?;
        let p = a.local_addr()?.port();
        if p % 2 == 0 && p < u16::MAX {
            if let Ok(b) = UdpSocket::bind((ip, p + 1)) {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                let _ = nix::sys::socket::setsockopt(
                    &a,
                    nix::sys::socket::sockopt::RcvBuf,
                    &(4usize << 20),
                );
                return Ok((a, b));
            }
        }
    }
    bail!("no free pair of UDP ports")
}

/// An RTCP receiver report (RFC 3550 §6.4.2) with one report block for `ssrc`: loss
/// fields zero, the highest sequence number received, no jitter or SR timing.
fn receiver_report(ssrc: u32, highest: u16) -> Vec<u8> {
    let mut v = vec![0x81, 201, 0, 7];
    v.extend_from_slice(&0x5155_4943u32.to_be_bytes()); // our SSRC: "SLUICE"-ish, fixed
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&u32::from(highest).to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}
