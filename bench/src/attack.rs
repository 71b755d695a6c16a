//! `sluice-bench attack`: hostile clients against a running server while honest viewers watch.
//!
//! For each attack, in turn: honest viewers (the `load` engine's RTMP players and the HLS
//! engine's players, from 127.0.0.1) start; after [`WARM`] the attack runs for `--seconds`
//! from other loopback addresses (127.0.0.2 … 127.0.0.254: each hostile socket is bound to
//! its source address before `connect`, so the server's per-address cap applies as it would
//! to other machines); then a drain (no new hostile connections) of the attack's deadline +
//! 1 s; the honest viewers stop at the end of the drain. A sampler thread reads every
//! process of the server's process group from /proc every 500 ms (PSS from `smaps_rollup`,
//! process count).
//!
//! Every hostile connection runs in one mio event loop on the main thread (the connect
//! storm is a blocking loop on the same thread). A connection the bench reads from counts as
//! closed by the server when a read returns EOF or an error; one it never reads from (the
//! stalled viewers) when the server's end of it, in `/proc/net/tcp`, is no longer
//! ESTABLISHED or CLOSE_WAIT (checked every second). At the end of each drain, the server's
//! sockets still ESTABLISHED or CLOSE_WAIT with a hostile peer are the connections still
//! open.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::amf0::{self, Amf0};
use dtsc::rtmp::chunk::{msg_type, ChunkEncoder};
use dtsc::rtmp::handshake::ClientHandshake;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::load;

/// Honest viewers play alone this long before an attack starts.
const WARM: Duration = Duration::from_secs(4);
/// How often the sampler reads /proc.
const SAMPLE: Duration = Duration::from_millis(500);
/// Slack on the server's deadlines: a connection closed within deadline + this is on time.
const SLACK: Duration = Duration::from_secs(2);
/// New hostile connections per second at most (a SYN flood is not the point).
const OPEN_RATE: f64 = 1500.0;
/// Hostile source addresses: 127.0.0.2 ..= 127.0.0.254.
const FIRST_SRC: u8 = 2;
const LAST_SRC: u8 = 254;

pub const ATTACKS: [&str; 7] = [
    "baseline",
    "slowloris",
    "stalled-viewers",
    "garbage",
    "rtmp-preconnect",
    "wildcard-names",
    "connect-storm",
];

/// What `sluice-bench attack` is asked to do (its command line).
#[derive(Debug, clap::Args)]
pub struct AttackConfig {
    /// Address the server listens on (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: Ipv4Addr,
    #[arg(long = "http-port")]
    pub http: u16,
    #[arg(long = "rtmp-port")]
    pub rtmp: u16,
    #[arg(long = "rtsp-port")]
    pub rtsp: u16,
    #[arg(long = "dtsc-port")]
    pub dtsc: u16,
    /// The stream being published (honest viewers watch it; RTMP app `live`).
    #[arg(long, default_value = "live")]
    pub stream: String,
    /// Process group of the server (the controller's pid): sampled from /proc.
    #[arg(long)]
    pub pgid: i32,
    /// Length of each attack, seconds (the baseline runs at most 15 s).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Attacks to run, comma-separated (default: all, in this order).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,slowloris,stalled-viewers,garbage,rtmp-preconnect,wildcard-names,connect-storm"
    )]
    pub attacks: Vec<String>,
    #[arg(long, default_value_t = 50)]
    pub honest_rtmp: usize,
    #[arg(long, default_value_t = 50)]
    pub honest_hls: usize,
    /// Slowloris connections kept open on each of HTTP, RTMP and RTSP.
    #[arg(long, default_value_t = 2000)]
    pub slowloris: usize,
    /// Seconds between two slowloris bytes.
    #[arg(long, default_value_t = 3.0)]
    pub trickle_s: f64,
    /// Viewers that request the stream (HTTP-FLV and RTMP play) and never read.
    #[arg(long, default_value_t = 500)]
    pub stalled: usize,
    /// Garbage / truncated-handshake connections kept open (over every port).
    #[arg(long, default_value_t = 400)]
    pub garbage: usize,
    /// RTMP connections holding pre-connect messages at (and just over) the limits.
    #[arg(long, default_value_t = 500)]
    pub preconnect: usize,
    /// Distinct `live+N` names requested over HTTP.
    #[arg(long, default_value_t = 1000)]
    pub names: usize,
    /// Name requests in flight at once.
    #[arg(long, default_value_t = 250)]
    pub names_parallel: usize,
    /// Source addresses the connect storm cycles through (1-253).
    #[arg(long, default_value_t = 253)]
    pub storm_addrs: usize,
    /// The server's whole-request deadline, seconds (config `limits.request_timeout`).
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,
    /// The server's stalled-viewer limit, seconds (config `limits.stall_timeout`).
    #[arg(long, default_value_t = 15.0)]
    pub stall_timeout: f64,
    /// How long the server holds a playlist request for a stream that is not ready,
    /// seconds (READY_WAIT in connectors/src/http/mod.rs).
    #[arg(long, default_value_t = 15.0)]
    pub ready_wait: f64,
    /// The server's cap on connection processes (config `limits.connections`).
    #[arg(long)]
    pub max_connections: u64,
    /// Target: peak PSS of every server process together, MiB.
    #[arg(long, default_value_t = 512.0)]
    pub max_mem_mib: f64,
    /// The server's limits in words, for the report.
    #[arg(long, default_value = "")]
    pub limits_note: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Nominal video frame rate of the stream.
    #[arg(long, default_value_t = 25.0)]
    pub fps: f64,
}

// ---------------------------------------------------------------------------------------------
// Sockets bound to a source address

fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer.
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

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP socket bound to `src` (port chosen at connect), connecting to `dst`; non-blocking
/// unless `blocking`. `rcvbuf`: SO_RCVBUF, set before connect so the window stays small.
fn connect_from(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    blocking: bool,
    rcvbuf: Option<i32>,
) -> std::io::Result<std::net::TcpStream> {
    let flags =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if blocking { 0 } else { libc::SOCK_NONBLOCK };
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr structs
    // outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, flags, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // IP_BIND_ADDRESS_NO_PORT: the port is picked at connect, per destination.
        libc::setsockopt(fd, libc::IPPROTO_IP, 24, &one as *const _ as *const _, sz);
        if let Some(b) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &b as *const _ as *const _,
                sz,
            );
        }
        let s = sockaddr(SocketAddrV4::new(src, 0));
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &s as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = sockaddr(dst);
        if libc::connect(fd, &d as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(sock)
    }
}

/// Round-robin over the hostile source addresses (`spread` of them).
struct Sources {
    next: u32,
    spread: u32,
}

impl Sources {
    fn new(spread: usize) -> Sources {
        Sources {
            next: 0,
            spread: (spread as u32).clamp(1, u32::from(LAST_SRC - FIRST_SRC) + 1),
        }
    }
    fn take(&mut self) -> Ipv4Addr {
        let a = Ipv4Addr::new(127, 0, 0, FIRST_SRC + (self.next % self.spread) as u8);
        self.next = self.next.wrapping_add(1);
        a
    }
}

// ---------------------------------------------------------------------------------------------
// The server's side of hostile connections, from /proc/net/tcp

/// (peer address, peer port) of every server socket on `ports` of `host` that is still
/// ESTABLISHED or CLOSE_WAIT (or in the accept queue) with a hostile peer (127.0.0.2+).
fn server_open(host: Ipv4Addr, ports: &[u16]) -> HashSet<(Ipv4Addr, u16)> {
    let mut open = HashSet::new();
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return open;
    };
    let parse = |s: &str| -> Option<(Ipv4Addr, u16)> {
        let (a, p) = s.split_once(':')?;
        // The address is the network-order u32 printed as a (little-endian) host number.
        let a = u32::from_str_radix(a, 16).ok()?;
        Some((
            Ipv4Addr::from(a.to_le_bytes()),
            u16::from_str_radix(p, 16).ok()?,
        ))
    };
    for line in text.lines().skip(1) {
        let mut f = line.split_whitespace();
        let (Some(_), Some(local), Some(remote), Some(st)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        // 01 ESTABLISHED, 03 SYN_RECV, 08 CLOSE_WAIT.
        if !matches!(st, "01" | "03" | "08") {
            continue;
        }
        let (Some((lip, lport)), Some((rip, rport))) = (parse(local), parse(remote)) else {
            continue;
        };
        if lip != host || !ports.contains(&lport) {
            continue;
        }
        let o = rip.octets();
        if o[0] == 127 && o[3] >= FIRST_SRC && !(o[1] == 0 && o[2] == 0 && o[3] == 1) {
            open.insert((rip, rport));
        }
    }
    open
}

// ---------------------------------------------------------------------------------------------
// Sampler

#[derive(Default, Clone)]
struct Peaks {
    pss_kib: u64,
    procs: u64,
    conn_procs: u64,
    samples: u64,
    sweep_ms_max: f64,
    /// Longest listing pass (the process counts are a snapshot this long).
    list_ms_max: f64,
    /// Exited connection processes not reaped yet (left out of `procs`).
    zombies: u64,
    /// Kernel TCP memory of the whole machine (every socket, the bench's too), KiB.
    tcp_kib: u64,
}

/// Samples every process of process group `pgid` until `stop`: PSS sum (smaps_rollup) and
/// process counts; a connection process is one whose name is a bare protocol (`HTTP`,
/// `RTMP`, …: listeners are `sluice-PROTO`).
fn sampler(pgid: i32, stop: Arc<AtomicBool>) -> Peaks {
    // Reading thousands of smaps_rollup files costs CPU: the server and the honest viewers
    // go first (nice 19 for this thread only).
    // SAFETY: gettid and setpriority on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
    let mut p = Peaks::default();
    let mut buf = String::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let (mut pss, mut procs, mut conns, mut zombies) = (0u64, 0u64, 0u64, 0u64);
        // First the group's processes (a quick pass over /proc/*/stat: the counts), then
        // their PSS. Reading thousands of smaps_rollup takes seconds: were the two done in
        // one pass, processes that ended and their successors would both be counted.
        let mut pids = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                buf.clear();
                let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                if f.read_to_string(&mut buf).is_err() {
                    continue;
                }
                // pid (comm) state ppid pgrp ...
                let Some(close) = buf.rfind(')') else {
                    continue;
                };
                let comm = buf.find('(').map(|o| &buf[o + 1..close]).unwrap_or("");
                // state ppid pgrp ...
                let mut rest = buf[close + 2..].split(' ');
                let state = rest.next().unwrap_or("");
                let pg = rest.nth(1).and_then(|s| s.parse::<i32>().ok());
                if pg != Some(pgid) {
                    continue;
                }
                if state == "Z" {
                    // Exited, not reaped yet by its listener: no memory, not counted.
                    zombies += 1;
                    continue;
                }
                procs += 1;
                if is_conn(comm) {
                    conns += 1;
                }
                pids.push(pid);
            }
        }
        let listed = t.elapsed();
        for pid in pids {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
                if let Some(v) = s
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                {
                    pss += v;
                }
            }
        }
        p.pss_kib = p.pss_kib.max(pss);
        p.tcp_kib = p.tcp_kib.max(tcp_mem_kib());
        p.procs = p.procs.max(procs);
        p.conn_procs = p.conn_procs.max(conns);
        p.zombies = p.zombies.max(zombies);
        p.samples += 1;
        let took = t.elapsed();
        p.sweep_ms_max = p.sweep_ms_max.max(took.as_secs_f64() * 1000.0);
        p.list_ms_max = p.list_ms_max.max(listed.as_secs_f64() * 1000.0);
        let until = t + SAMPLE;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    p
}

/// A connection process: its name starts with its protocol (`RTMP`, `RTMP play`, `HTTP`,
/// …); listeners are `sluice-PROTO`, buffers `buffer …`.
fn is_conn(comm: &str) -> bool {
    matches!(
        comm.split(' ').next().unwrap_or(""),
        "HTTP" | "RTMP" | "RTSP" | "DTSC" | "TS" | "SRT" | "WebRTC"
    )
}

/// Kernel memory of every TCP socket on the machine, KiB (`/proc/net/sockstat`, pages).
fn tcp_mem_kib() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("TCP:"))?;
            let mut w = l.split_whitespace();
            w.position(|x| x == "mem")?;
            w.next()?.parse::<u64>().ok()
        })
        .map(|pages| pages * 4)
        .unwrap_or(0)
}

/// Connection processes of the group now (between attacks: waits for them to go).
fn conn_procs_now(pgid: i32) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(buf) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = buf.rfind(')') else {
                continue;
            };
            let comm = buf.find('(').map(|o| &buf[o + 1..close]).unwrap_or("");
            let pg = buf[close + 2..]
                .split(' ')
                .nth(2)
                .and_then(|s| s.parse::<i32>().ok());
            if pg == Some(pgid) && is_conn(comm) {
                n += 1;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Hostile connections

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Port {
    Http,
    Rtmp,
    Rtsp,
    Dtsc,
}

/// What one hostile connection does.
struct Spec {
    port: Port,
    variant: String,
    /// Sent once connected (after the RTMP handshake if `handshake`).
    initial: Vec<u8>,
    /// After `initial`: one byte of this every `trickle` (slowloris).
    trickle: Option<(Duration, &'static [u8])>,
    /// Read (and discard) what the server sends; a stalled viewer reads nothing once its
    /// request is out.
    read: bool,
    rcvbuf: Option<i32>,
    /// Do the RTMP handshake (reading) before `initial`.
    handshake: bool,
    /// The server must have closed the connection this long after `initial` was queued.
    deadline: Duration,
    /// Parse the HTTP status line of the answer.
    http_status: bool,
}

struct Conn {
    sock: TcpStream,
    spec: usize,
    local: Option<(Ipv4Addr, u16)>,
    connected: bool,
    out: Vec<u8>,
    out_pos: usize,
    hs: Option<Box<ClientHandshake>>,
    /// When `initial` was queued: the deadline counts from here.
    t_ref: Instant,
    next_trickle: Option<Instant>,
    trickle_pos: usize,
    head: Vec<u8>,
    reading: bool,
}

#[derive(Default, Clone)]
struct VariantStats {
    opened: u64,
    connect_failed: u64,
    closed_in_time: u64,
    closed_late: u64,
    close_s_max: f64,
    close_s_sum: f64,
    /// Still open at the end, older than their deadline.
    outlived: u64,
    /// Still open at the end, younger than their deadline (left out of the verdict).
    young: u64,
}

struct Engine {
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    specs: Vec<Spec>,
    stats: Vec<VariantStats>,
    srcs: Sources,
    host: Ipv4Addr,
    ports: [u16; 4],
    statuses: HashMap<String, u64>,
    rbuf: Vec<u8>,
    errors: HashMap<String, u64>,
}

impl Engine {
    fn port(&self, p: Port) -> u16 {
        self.ports[p as usize]
    }

    fn open(&mut self, spec: usize) {
        let sp = &self.specs[spec];
        let dst = SocketAddrV4::new(self.host, self.port(sp.port));
        let src = self.srcs.take();
        self.stats[spec].opened += 1;
        let sock = match connect_from(src, dst, false, sp.rcvbuf) {
            Ok(s) => TcpStream::from_std(s),
            Err(e) => {
                self.stats[spec].connect_failed += 1;
                *self.errors.entry(format!("connect: {e}")).or_default() += 1;
                return;
            }
        };
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut c = Conn {
            sock,
            spec,
            local: None,
            connected: false,
            out: Vec::new(),
            out_pos: 0,
            hs: None,
            t_ref: Instant::now(),
            next_trickle: None,
            trickle_pos: 0,
            head: Vec::new(),
            reading: true,
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.sock,
            Token(idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.stats[spec].connect_failed += 1;
            *self.errors.entry(format!("register: {e}")).or_default() += 1;
            self.free.push(idx);
            return;
        }
        self.conns[idx] = Some(c);
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// The server closed connection `idx` (or it failed): account and forget it.
    fn closed(&mut self, idx: usize, now: Instant, why: Option<String>) {
        let Some(mut c) = self.conns[idx].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.free.push(idx);
        let st = &mut self.stats[c.spec];
        if !c.connected {
            st.connect_failed += 1;
            if let Some(w) = why {
                *self.errors.entry(w).or_default() += 1;
            }
            return;
        }
        let age = now.saturating_duration_since(c.t_ref);
        let s = age.as_secs_f64();
        st.close_s_max = st.close_s_max.max(s);
        st.close_s_sum += s;
        if age <= self.specs[c.spec].deadline + SLACK {
            st.closed_in_time += 1;
        } else {
            st.closed_late += 1;
        }
    }

    fn queue_initial(&mut self, idx: usize, now: Instant) {
        let c = self.conns[idx].as_mut().unwrap();
        let sp = &self.specs[c.spec];
        c.out.extend_from_slice(&sp.initial);
        c.t_ref = now;
        c.reading = sp.read;
        if let Some((every, _)) = sp.trickle {
            c.next_trickle = Some(now + every);
        }
    }

    fn flush(&mut self, idx: usize, now: Instant) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        while c.out_pos < c.out.len() {
            match c.sock.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let why = format!("write: {e}");
                    self.closed(idx, now, Some(why));
                    return;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
        }
    }

    fn on_event(&mut self, idx: usize, now: Instant) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        if !c.connected {
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.closed(idx, now, Some(format!("connect: {e}")));
                    return;
                }
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    self.closed(idx, now, Some(format!("connect: {e}")));
                    return;
                }
            }
            c.connected = true;
            if let Ok(SocketAddr::V4(a)) = c.sock.local_addr() {
                c.local = Some((*a.ip(), a.port()));
            }
            if self.specs[c.spec].handshake {
                let mut hs = Box::new(ClientHandshake::new(idx as u64 ^ 0x5eed));
                hs.start(0, &mut c.out);
                c.hs = Some(hs);
                c.t_ref = now;
            } else {
                self.queue_initial(idx, now);
            }
        }
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let gone = self.read_all(idx, now, &mut rbuf);
        self.rbuf = rbuf;
        if gone {
            return;
        }
        self.flush(idx, now);
    }

    /// Reads what is there (while the connection reads); true if it was closed.
    fn read_all(&mut self, idx: usize, now: Instant, rbuf: &mut [u8]) -> bool {
        loop {
            let Some(c) = self.conns[idx].as_mut() else {
                return true;
            };
            if !c.reading {
                return false;
            }
            let n = match c.sock.read(rbuf) {
                Ok(0) => {
                    self.closed(idx, now, None);
                    return true;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.closed(idx, now, Some(format!("read: {e}")));
                    return true;
                }
            };
            if self.specs[c.spec].http_status && c.head.len() < 64 {
                c.head.extend_from_slice(&rbuf[..n.min(64)]);
                if let Some(end) = c.head.iter().position(|&b| b == b'\r') {
                    let line = String::from_utf8_lossy(&c.head[..end]).to_string();
                    let code = line.split(' ').nth(1).unwrap_or("?").to_string();
                    *self.statuses.entry(code).or_default() += 1;
                    c.head.resize(64, 0);
                }
            }
            if let Some(hs) = c.hs.as_mut() {
                match hs.push(&rbuf[..n], &mut c.out) {
                    Ok(p) if p.done => {
                        c.hs = None;
                        self.queue_initial(idx, now);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.closed(idx, now, Some(format!("handshake: {e}")));
                        return true;
                    }
                }
            }
        }
    }

    /// Trickles due bytes.
    fn tick(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            let Some(due) = c.next_trickle else { continue };
            if due > now {
                continue;
            }
            let Some((every, bytes)) = self.specs[c.spec].trickle else {
                continue;
            };
            c.out.push(bytes[c.trickle_pos % bytes.len()]);
            c.trickle_pos += 1;
            c.next_trickle = Some(now + every);
            self.flush(idx, now);
        }
    }

    /// Non-reading connections: closed once the server's end is gone from /proc/net/tcp.
    fn scan(&mut self, now: Instant) {
        if !self
            .conns
            .iter()
            .flatten()
            .any(|c| c.connected && !c.reading && c.hs.is_none())
        {
            return;
        }
        let open = server_open(self.host, &self.ports);
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_ref() else {
                continue;
            };
            if c.connected && !c.reading && c.hs.is_none() {
                if let Some(l) = c.local {
                    if !open.contains(&l) {
                        self.closed(idx, now, None);
                    }
                }
            }
        }
    }

    /// Runs until `until`, keeping `target(spec)` connections of each spec open while
    /// `opening` (new ones at most [`OPEN_RATE`] a second), or, once not, until every
    /// connection is closed.
    fn run(&mut self, until: Instant, opening: bool, want: &dyn Fn(&Engine) -> Vec<usize>) {
        let mut events = Events::with_capacity(4096);
        let mut last_scan = Instant::now();
        let mut last_open = Instant::now();
        let mut budget = 0.0f64;
        loop {
            let now = Instant::now();
            if now >= until || (!opening && self.live() == 0) {
                break;
            }
            if opening {
                budget = (budget + now.duration_since(last_open).as_secs_f64() * OPEN_RATE)
                    .min(OPEN_RATE / 10.0);
                last_open = now;
                for spec in want(self) {
                    if budget < 1.0 {
                        break;
                    }
                    budget -= 1.0;
                    self.open(spec);
                }
            }
            self.tick(now);
            if now.duration_since(last_scan) >= Duration::from_secs(1) {
                last_scan = now;
                self.scan(now);
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            let now = Instant::now();
            let idxs: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for idx in idxs {
                self.on_event(idx, now);
            }
        }
    }

    /// Accounts every connection still open (outlived or young) and closes them.
    fn finish(&mut self, now: Instant) {
        self.scan(now);
        for idx in 0..self.conns.len() {
            let Some(mut c) = self.conns[idx].take() else {
                continue;
            };
            let _ = self.poll.registry().deregister(&mut c.sock);
            let st = &mut self.stats[c.spec];
            if !c.connected {
                st.connect_failed += 1;
            } else if now.saturating_duration_since(c.t_ref) > self.specs[c.spec].deadline + SLACK {
                st.outlived += 1;
            } else {
                st.young += 1;
            }
        }
        self.free.clear();
        self.conns.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// The attacks' connections

fn rtmp_chunk0(csid: u8, typ: u8, len: usize, sid: u32, body: &[u8], out: &mut Vec<u8>) {
    out.push(csid & 0x3f);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(typ);
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(body);
}

fn rtmp_chunk3(csid: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(0xc0 | (csid & 0x3f));
    out.extend_from_slice(body);
}

/// Pre-connect messages: Set Chunk Size `cs`, then messages of `len` bytes started on each
/// of `csids`, sent round-robin in chunks of `cs` until each holds `hold` bytes.
fn preconnect(cs: u32, csids: &[u8], len: usize, hold: usize) -> Vec<u8> {
    let mut out = Vec::new();
    rtmp_chunk0(
        2,
        msg_type::SET_CHUNK_SIZE,
        4,
        0,
        &cs.to_be_bytes(),
        &mut out,
    );
    let cs = cs as usize;
    let body = connect_body(len);
    let mut sent = vec![0usize; csids.len()];
    loop {
        let mut any = false;
        for (i, &id) in csids.iter().enumerate() {
            if sent[i] >= hold {
                continue;
            }
            let n = cs.min(hold - sent[i]).min(len - sent[i]);
            if n == 0 {
                continue;
            }
            let part = &body[sent[i]..sent[i] + n];
            if sent[i] == 0 {
                rtmp_chunk0(id, msg_type::COMMAND_AMF0, len, 0, part, &mut out);
            } else {
                rtmp_chunk3(id, part, &mut out);
            }
            sent[i] += n;
            any = true;
        }
        if !any {
            return out;
        }
    }
}

/// A `len`-byte message body that is a valid start of a `connect` command all the way
/// (name, transaction id, an object whose `app` is an AMF0 long string running to the end of
/// the message), so that the server, which decodes `connect` as it arrives, holds it until
/// it is complete rather than refusing it early.
fn connect_body(len: usize) -> Vec<u8> {
    let mut b = vec![0x02, 0x00, 0x07];
    b.extend_from_slice(b"connect");
    b.push(0x00);
    b.extend_from_slice(&1f64.to_be_bytes());
    b.extend_from_slice(&[0x03, 0x00, 0x03]);
    b.extend_from_slice(b"app");
    b.push(0x0c);
    let rest = len.saturating_sub(b.len() + 4);
    b.extend_from_slice(&(rest as u32).to_be_bytes());
    b.resize(len.max(b.len()), b'A');
    b
}

/// [`preconnect`] with a length per chunk stream, each sent but for its last chunk.
fn preconnect_lens(cs: u32, streams: &[(u8, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    rtmp_chunk0(
        2,
        msg_type::SET_CHUNK_SIZE,
        4,
        0,
        &cs.to_be_bytes(),
        &mut out,
    );
    let cs = cs as usize;
    let mut sent = vec![0usize; streams.len()];
    loop {
        let mut any = false;
        for (i, &(id, len)) in streams.iter().enumerate() {
            // Whole chunks only, never the message's last one: a short chunk would make the
            // server read the next chunk's header as this message's end.
            if len - sent[i] <= cs {
                continue;
            }
            let n = cs;
            let body = connect_body(len);
            let part = &body[sent[i]..sent[i] + n];
            if sent[i] == 0 {
                rtmp_chunk0(id, msg_type::COMMAND_AMF0, len, 0, part, &mut out);
            } else {
                rtmp_chunk3(id, part, &mut out);
            }
            sent[i] += n;
            any = true;
        }
        if !any {
            return out;
        }
    }
}

fn rtmp_play_commands(app: &str, tc_url: &str, stream: &str) -> Vec<u8> {
    let mut enc = ChunkEncoder::new();
    let mut out = Vec::new();
    let mut cmd = |csid: u32, sid: u32, vals: &[Amf0], out: &mut Vec<u8>| {
        let mut body = Vec::new();
        amf0::encode_all(vals, &mut body);
        enc.write_message(csid, msg_type::COMMAND_AMF0, sid, 0, &body, out);
    };
    let obj = Amf0::object([
        ("app", Amf0::string(app)),
        ("flashVer", Amf0::string("LNX 9,0,124,2")),
        ("tcUrl", Amf0::string(tc_url)),
        ("fpad", Amf0::Boolean(false)),
        ("capabilities", Amf0::Number(15.0)),
        ("audioCodecs", Amf0::Number(4071.0)),
        ("videoCodecs", Amf0::Number(252.0)),
        ("videoFunction", Amf0::Number(1.0)),
    ]);
    cmd(
        3,
        0,
        &[Amf0::string("connect"), Amf0::Number(1.0), obj],
        &mut out,
    );
    cmd(
        3,
        0,
        &[Amf0::string("createStream"), Amf0::Number(2.0), Amf0::Null],
        &mut out,
    );
    // Sluice numbers message streams from 1: the play is pipelined, answers never read.
    cmd(
        8,
        1,
        &[
            Amf0::string("play"),
            Amf0::Number(0.0),
            Amf0::Null,
            Amf0::string(stream),
            Amf0::Number(-2000.0),
        ],
        &mut out,
    );
    out
}

/// Pseudo-random bytes (xorshift), deterministic per seed.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn specs_for(attack: &str, cfg: &AttackConfig) -> Vec<Spec> {
    let req = Duration::from_secs_f64(cfg.request_timeout);
    let stall = Duration::from_secs_f64(cfg.stall_timeout);
    let host = format!("{}", cfg.host);
    let base = |port: Port, variant: &str, initial: Vec<u8>| Spec {
        port,
        variant: variant.to_string(),
        initial,
        trickle: None,
        read: true,
        rcvbuf: None,
        handshake: false,
        deadline: req,
        http_status: false,
    };
    let every = Duration::from_secs_f64(cfg.trickle_s);
    match attack {
        "slowloris" => {
            let mut c0c1 = vec![3u8];
            c0c1.extend(noise(7, 1000));
            vec![
                Spec {
                    trickle: Some((every, b"X-a: b\r\n")),
                    ..base(
                        Port::Http,
                        "http",
                        format!("GET /{}.flv HTTP/1.1\r\nHost: {host}\r\n", cfg.stream).into(),
                    )
                },
                Spec {
                    trickle: Some((every, b"\x00")),
                    ..base(Port::Rtmp, "rtmp", c0c1)
                },
                Spec {
                    trickle: Some((every, b"X-a: b\r\n")),
                    ..base(
                        Port::Rtsp,
                        "rtsp",
                        format!(
                            "DESCRIBE rtsp://{host}:{}/{} RTSP/1.0\r\nCSeq: 1\r\n",
                            cfg.rtsp, cfg.stream
                        )
                        .into(),
                    )
                },
            ]
        }
        "stalled-viewers" => {
            let tc = format!("rtmp://{host}:{}/live", cfg.rtmp);
            vec![
                Spec {
                    read: false,
                    rcvbuf: Some(4096),
                    deadline: stall + Duration::from_secs(5),
                    ..base(
                        Port::Http,
                        "http-flv",
                        format!("GET /{}.flv HTTP/1.1\r\nHost: {host}\r\n\r\n", cfg.stream).into(),
                    )
                },
                Spec {
                    read: false,
                    rcvbuf: Some(4096),
                    handshake: true,
                    deadline: stall + Duration::from_secs(5),
                    ..base(
                        Port::Rtmp,
                        "rtmp-play",
                        rtmp_play_commands("live", &tc, &cfg.stream),
                    )
                },
            ]
        }
        "garbage" => {
            let mut v = Vec::new();
            let mut big = b"GET /".to_vec();
            big.extend(vec![b'a'; 20 << 10]);
            let mut longhdr = format!("GET /{}.flv HTTP/1.1\r\nX-long: ", cfg.stream).into_bytes();
            longhdr.extend(vec![b'b'; 17 << 10]);
            v.push(base(Port::Http, "http-noise", noise(1, 4096)));
            v.push(base(
                Port::Http,
                "http-truncated",
                format!("GET /hls/{}/index.m3u8 HTTP/1.1\r\nHo", cfg.stream).into(),
            ));
            v.push(base(Port::Http, "http-20KiB-line", big));
            v.push(base(Port::Http, "http-17KiB-header", longhdr));
            v.push(base(Port::Http, "http-bad-chunked", b"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzzzz\r\n".to_vec()));
            let mut bad_ver = vec![0x42u8];
            bad_ver.extend(noise(2, 1536));
            v.push(base(Port::Rtmp, "rtmp-bad-version", bad_ver));
            let mut trunc = vec![3u8];
            trunc.extend(noise(3, 700));
            v.push(base(Port::Rtmp, "rtmp-truncated-c1", trunc));
            let mut c0c1c2 = vec![3u8];
            c0c1c2.extend(noise(4, 1536 * 2 + 4096));
            v.push(base(Port::Rtmp, "rtmp-noise-after-c1", c0c1c2));
            v.push(Spec {
                handshake: true,
                ..base(Port::Rtmp, "rtmp-noise-chunks", noise(5, 8192))
            });
            v.push(base(Port::Rtsp, "rtsp-noise", noise(6, 4096)));
            v.push(base(
                Port::Rtsp,
                "rtsp-truncated",
                format!("OPTIONS rtsp://{host}/{} RTSP/1.0\r\nCSe", cfg.stream).into(),
            ));
            v.push(base(
                Port::Rtsp,
                "rtsp-short-body",
                format!(
                    "ANNOUNCE rtsp://{host}/{} RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 100000\r\n\r\nv=0\r\n",
                    cfg.stream
                )
                .into(),
            ));
            v.push(base(
                Port::Rtsp,
                "rtsp-interleaved",
                b"$\x00\xff\xffabc".to_vec(),
            ));
            v.push(base(Port::Dtsc, "dtsc-noise", noise(8, 4096)));
            let mut huge = b"DTCM".to_vec();
            huge.extend_from_slice(&u32::MAX.to_be_bytes());
            v.push(base(Port::Dtsc, "dtsc-huge-length", huge));
            let mut short = b"DTCM".to_vec();
            short.extend_from_slice(&1000u32.to_be_bytes());
            short.extend_from_slice(b"{\"cmd\":\"play\",");
            v.push(base(Port::Dtsc, "dtsc-truncated", short));
            v
        }
        "rtmp-preconnect" => {
            let max = 64 << 10;
            vec![
                Spec {
                    handshake: true,
                    ..base(
                        Port::Rtmp,
                        "one-64KiB-message-1-byte-short",
                        preconnect(max as u32, &[3], max, max - 1),
                    )
                },
                // 4 chunk streams (2 for Set Chunk Size), 127 KiB of messages, 124 KiB held.
                Spec {
                    handshake: true,
                    ..base(
                        Port::Rtmp,
                        "4-streams-124KiB-held",
                        preconnect_lens(1024, &[(3, max), (4, 32 << 10), (5, 31 << 10)]),
                    )
                },
                Spec {
                    handshake: true,
                    ..base(
                        Port::Rtmp,
                        "5th-chunk-stream",
                        preconnect_lens(1024, &[(3, 4096), (4, 4096), (5, 4096), (6, 4096)]),
                    )
                },
                Spec {
                    handshake: true,
                    ..base(
                        Port::Rtmp,
                        "message-64KiB+1",
                        preconnect(4096, &[3], max + 1, 4096),
                    )
                },
                Spec {
                    handshake: true,
                    ..base(
                        Port::Rtmp,
                        "3-streams-138KiB-held",
                        preconnect(2048, &[3, 4, 5], max, 46 << 10),
                    )
                },
            ]
        }
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// One attack, honest viewers around it

struct Outcome {
    name: String,
    honest: Value,
    peaks: Peaks,
    hostile: Value,
    open_at_end: usize,
    in_time: u64,
    with_deadline: u64,
    late: u64,
    outlived: u64,
    missed: Vec<String>,
}

fn honest_cfg(cfg: &AttackConfig, seconds: f64) -> load::LoadConfig {
    load::LoadConfig {
        publish_url: None,
        publishers: 0,
        file: None,
        play_url: Some(format!(
            "rtmp://{}:{}/live/{}",
            cfg.host, cfg.rtmp, cfg.stream
        )),
        players: cfg.honest_rtmp,
        hls_url: Some(format!(
            "http://{}:{}/hls/{}/index.m3u8",
            cfg.host, cfg.http, cfg.stream
        )),
        hls_players: cfg.honest_hls,
        seconds,
        ramp_ms: 20,
        warmup_ms: 0,
        json: None,
        fps: cfg.fps,
        quiet: true,
    }
}

/// The connect storm: blocking connect + close in a loop on this thread until `until`.
fn storm(cfg: &AttackConfig, until: Instant) -> Value {
    let ports = [cfg.http, cfg.rtmp, cfg.rtsp, cfg.dtsc];
    let mut srcs = Sources::new(cfg.storm_addrs);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let t0 = Instant::now();
    let mut i = 0usize;
    while Instant::now() < until {
        let dst = SocketAddrV4::new(cfg.host, ports[i % 4]);
        i += 1;
        match connect_from(srcs.take(), dst, true, None) {
            Ok(s) => {
                ok += 1;
                drop(s);
            }
            Err(e) => {
                failed += 1;
                *errors.entry(e.to_string()).or_default() += 1;
                if failed % 1000 == 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    json!({"connects": ok, "failed": failed, "per_s": (ok as f64 / secs.max(1e-9)).round(),
           "source_addresses": srcs.spread, "errors": errors})
}

fn run_attack(cfg: &AttackConfig, name: &str) -> Result<Outcome> {
    let secs = if name == "baseline" {
        cfg.seconds.min(15.0)
    } else {
        cfg.seconds
    };
    let mut specs = specs_for(name, cfg);
    if name == "wildcard-names" {
        specs.push(Spec {
            port: Port::Http,
            variant: String::new(),
            initial: Vec::new(),
            trickle: None,
            read: true,
            rcvbuf: None,
            handshake: false,
            deadline: Duration::from_secs_f64(cfg.request_timeout.max(cfg.ready_wait)),
            http_status: true,
        });
    }
    let max_deadline = specs
        .iter()
        .map(|s| s.deadline)
        .max()
        .unwrap_or(Duration::from_secs_f64(cfg.request_timeout))
        + SLACK;
    let drain = match name {
        "baseline" => Duration::ZERO,
        // Long enough to see when the server does drop them, if late.
        "stalled-viewers" => max_deadline * 2 + Duration::from_secs(15),
        "connect-storm" => Duration::from_secs(5),
        _ => max_deadline + Duration::from_secs(1),
    };
    let attack_len = Duration::from_secs_f64(secs);
    let honest_secs = (WARM + attack_len + drain).as_secs_f64() + 1.0;
    let hcfg = honest_cfg(cfg, honest_secs);
    let honest = std::thread::Builder::new()
        .name("honest".into())
        .spawn(move || load::run_doc(hcfg))?;
    let stop = Arc::new(AtomicBool::new(false));
    let pgid = cfg.pgid;
    let s2 = stop.clone();
    let sampler = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sampler(pgid, s2))?;
    std::thread::sleep(WARM);
    eprintln!(
        "[attack] {name}: {secs} s, then a drain of up to {} s",
        drain.as_secs()
    );
    let t_attack = Instant::now();
    let ports = [cfg.http, cfg.rtmp, cfg.rtsp, cfg.dtsc];
    let mut eng = Engine {
        poll: Poll::new()?,
        conns: Vec::new(),
        free: Vec::new(),
        specs,
        stats: Vec::new(),
        srcs: Sources::new(usize::from(LAST_SRC - FIRST_SRC) + 1),
        host: cfg.host,
        ports,
        statuses: HashMap::new(),
        rbuf: vec![0u8; 64 << 10],
        errors: HashMap::new(),
    };
    let mut extra = json!({});
    let until = t_attack + attack_len;
    match name {
        "baseline" => std::thread::sleep(attack_len),
        "connect-storm" => extra = storm(cfg, until),
        "wildcard-names" => {
            let names = cfg.names.max(1);
            eng.specs = (0..names)
                .map(|n| Spec {
                    port: Port::Http,
                    variant: "hls-live+N".into(),
                    initial: format!(
                        "GET /hls/live+{n}/index.m3u8 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        cfg.host
                    )
                    .into_bytes(),
                    trickle: None,
                    read: true,
                    rcvbuf: None,
                    handshake: false,
                    // The request is read at once; the server then waits up to its playlist
                    // wait (READY_WAIT in connectors/src/http/mod.rs) for the stream.
                    deadline: Duration::from_secs_f64(cfg.request_timeout.max(cfg.ready_wait)),
                    http_status: true,
                })
                .collect();
            eng.stats = vec![VariantStats::default(); names];
            let par = cfg.names_parallel;
            let next = std::cell::Cell::new(0usize);
            eng.run(until, true, &|e: &Engine| {
                let live = e.live();
                (live..par)
                    .map(|_| {
                        let n = next.get();
                        next.set(n + 1);
                        n % names
                    })
                    .collect()
            });
            extra = json!({"requests": eng.stats.iter().map(|s| s.opened).sum::<u64>(),
                           "distinct_names": eng.stats.iter().filter(|s| s.opened > 0).count()});
        }
        _ => {
            eng.stats = vec![VariantStats::default(); eng.specs.len()];
            let n = eng.specs.len();
            let target: Vec<usize> = match name {
                "slowloris" => vec![cfg.slowloris; n],
                "stalled-viewers" => (0..n)
                    .map(|i| cfg.stalled / n + usize::from(i < cfg.stalled % n))
                    .collect(),
                "garbage" => (0..n)
                    .map(|i| cfg.garbage / n + usize::from(i < cfg.garbage % n))
                    .collect(),
                "rtmp-preconnect" => (0..n)
                    .map(|i| cfg.preconnect / n + usize::from(i < cfg.preconnect % n))
                    .collect(),
                _ => vec![0; n],
            };
            // Open what is missing, interleaving the specs.
            eng.run(until, true, &|e: &Engine| {
                let mut have = vec![0usize; e.specs.len()];
                for c in e.conns.iter().flatten() {
                    have[c.spec] += 1;
                }
                let mut v = Vec::new();
                let mut more = true;
                while more && v.len() < 512 {
                    more = false;
                    for s in 0..e.specs.len() {
                        if have[s] < target[s] {
                            have[s] += 1;
                            v.push(s);
                            more = true;
                        }
                    }
                }
                v
            });
        }
    }
    // Drain: no new connections; wait for the server to close what is left.
    let t_drain = Instant::now();
    eng.run(t_drain + drain, false, &|_| Vec::new());
    if name == "connect-storm" {
        std::thread::sleep(drain.saturating_sub(t_drain.elapsed()));
    }
    let open_at_end = server_open(cfg.host, &ports).len();
    eng.finish(Instant::now());
    let honest_doc = honest
        .join()
        .map_err(|_| anyhow!("honest viewers' thread panicked"))??
        .1;
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler
        .join()
        .map_err(|_| anyhow!("sampler thread panicked"))?;

    // Per variant (names: one line for all).
    let mut variants = serde_json::Map::new();
    let (mut in_time, mut late, mut outlived, mut with_deadline) = (0, 0, 0, 0);
    let mut agg: HashMap<String, VariantStats> = HashMap::new();
    for (i, s) in eng.stats.iter().enumerate() {
        let a = agg.entry(eng.specs[i].variant.clone()).or_default();
        a.opened += s.opened;
        a.connect_failed += s.connect_failed;
        a.closed_in_time += s.closed_in_time;
        a.closed_late += s.closed_late;
        a.close_s_max = a.close_s_max.max(s.close_s_max);
        a.close_s_sum += s.close_s_sum;
        a.outlived += s.outlived;
        a.young += s.young;
    }
    let mut dl = HashMap::new();
    for s in &eng.specs {
        dl.insert(s.variant.clone(), s.deadline.as_secs_f64());
    }
    for (v, s) in &agg {
        in_time += s.closed_in_time;
        late += s.closed_late;
        outlived += s.outlived;
        with_deadline += s.closed_in_time + s.closed_late + s.outlived;
        let closed = s.closed_in_time + s.closed_late;
        variants.insert(
            v.clone(),
            json!({"opened": s.opened, "connect_failed": s.connect_failed,
                   "closed_in_time": s.closed_in_time, "closed_late": s.closed_late,
                   "outlived": s.outlived, "open_younger_than_deadline": s.young,
                   "deadline_s": dl[v] + SLACK.as_secs_f64(),
                   "close_s_mean": if closed > 0 { json!((s.close_s_sum / closed as f64 * 100.0).round() / 100.0) } else { Value::Null },
                   "close_s_max": (s.close_s_max * 100.0).round() / 100.0}),
        );
    }
    let mut errs: Vec<(String, u64)> = eng.errors.into_iter().collect();
    errs.sort_by_key(|e| std::cmp::Reverse(e.1));
    errs.truncate(6);
    let hostile = json!({
        "seconds": secs,
        "drain_s": drain.as_secs_f64(),
        "variants": variants,
        "http_statuses": eng.statuses,
        "client_errors": errs.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(),
        "extra": extra,
    });

    // Verdict.
    let mut missed = Vec::new();
    let r = &honest_doc["rtmp"];
    let below = r["below_100"].as_u64().unwrap_or(0);
    let stalls = r["stalls_over_1s"].as_u64().unwrap_or(0);
    let rtmp_err: u64 = r["errors"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let h = &honest_doc["hls"];
    let hls_fail = hls_failures(h);
    if below > 0 || rtmp_err > 0 || r["connected"].as_u64() != Some(cfg.honest_rtmp as u64) {
        missed.push(format!(
            "honest RTMP: {below} of {} players below 100% ({}% overall, min {}%), {rtmp_err} errors",
            cfg.honest_rtmp, r["delivered_pct"], r["min_delivered_pct"]
        ));
    }
    if stalls > 0 {
        missed.push(format!(
            "honest RTMP: {stalls} stalls over 1 s (longest {} ms)",
            r["max_stall_ms"]
        ));
    }
    if hls_fail > 0 || h["stalls"].as_u64().unwrap_or(0) > 0 {
        missed.push(format!(
            "honest HLS: {hls_fail} failed fetches, {} stalls",
            h["stalls"]
        ));
    }
    let mem_mib = peaks.pss_kib as f64 / 1024.0;
    if mem_mib >= cfg.max_mem_mib {
        missed.push(format!("memory: peak {mem_mib:.0} MiB PSS"));
    }
    if peaks.conn_procs > cfg.max_connections {
        missed.push(format!(
            "processes: {} connection processes, cap {}",
            peaks.conn_procs, cfg.max_connections
        ));
    }
    if late > 0 || outlived > 0 {
        missed.push(format!(
            "deadlines: {late} closed late, {outlived} still open past their deadline"
        ));
    }
    if open_at_end > 0 {
        missed.push(format!(
            "{open_at_end} hostile connections still open on the server after the drain"
        ));
    }
    Ok(Outcome {
        name: name.to_string(),
        honest: honest_doc,
        peaks,
        hostile,
        open_at_end,
        in_time,
        with_deadline,
        late,
        outlived,
        missed,
    })
}

fn hls_failures(h: &Value) -> u64 {
    let e: u64 = h["errors"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    e + h["listed_but_missing"].as_u64().unwrap_or(0) + h["bad_ts"].as_u64().unwrap_or(0)
}

/// Waits (up to 30 s) until the previous attack's connection processes are gone.
fn settle(cfg: &AttackConfig) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if conn_procs_now(cfg.pgid) <= 4 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "[attack] warning: {} connection processes still up before the next attack",
        conn_procs_now(cfg.pgid)
    );
}

pub fn run(cfg: AttackConfig) -> Result<i32> {
    let nofile = raise_nofile();
    for a in &cfg.attacks {
        if !ATTACKS.contains(&a.as_str()) {
            bail!("unknown attack {a:?} (known: {})", ATTACKS.join(", "));
        }
    }
    if !cfg.host.is_loopback() {
        bail!("the attacks only target loopback addresses");
    }
    let need = cfg.slowloris * 3 + cfg.honest_rtmp + cfg.honest_hls + 512;
    if (nofile as usize) < need {
        eprintln!("[attack] warning: RLIMIT_NOFILE is {nofile}, below the {need} descriptors the largest attack needs");
    }
    let mut outcomes = Vec::new();
    for a in &cfg.attacks {
        settle(&cfg);
        let o = run_attack(&cfg, a).with_context(|| format!("attack {a}"))?;
        eprintln!(
            "[attack] {}: {}",
            o.name,
            if o.missed.is_empty() {
                "ok".to_string()
            } else {
                o.missed.join("; ")
            }
        );
        outcomes.push(o);
    }
    // Table.
    println!("\n# sluice-bench attack: {} honest RTMP + {} honest HLS players from 127.0.0.1; attackers from 127.0.0.2-254; {} s per attack", cfg.honest_rtmp, cfg.honest_hls, cfg.seconds);
    println!("# server limits: {}", cfg.limits_note);
    println!();
    println!("| attack | honest RTMP frames | stalls > 1 s | HLS fetch failures | peak PSS (MiB) | peak kernel TCP (MiB) | peak processes (connections) | hostile open at end | closed within deadline | result |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut all_ok = true;
    let mut docs = Vec::new();
    for o in &outcomes {
        let r = &o.honest["rtmp"];
        let ok = o.missed.is_empty();
        all_ok &= ok;
        let deadline = if o.with_deadline > 0 {
            format!("{}/{}", o.in_time, o.with_deadline)
        } else {
            "n/a".into()
        };
        println!(
            "| {} | {}% (min {}%) | {} | {} | {:.0} | {:.0} | {} ({}) | {} | {} | {} |",
            o.name,
            r["delivered_pct"],
            r["min_delivered_pct"],
            r["stalls_over_1s"],
            hls_failures(&o.honest["hls"]),
            o.peaks.pss_kib as f64 / 1024.0,
            o.peaks.tcp_kib as f64 / 1024.0,
            o.peaks.procs,
            o.peaks.conn_procs,
            o.open_at_end,
            deadline,
            if ok { "ok" } else { "MISSED" }
        );
        docs.push(json!({
            "attack": o.name, "ok": ok, "missed": o.missed,
            "honest": o.honest,
            "server": {"peak_pss_mib": (o.peaks.pss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
                       "peak_kernel_tcp_mib_machine": (o.peaks.tcp_kib as f64 / 1024.0 * 10.0).round() / 10.0,
                       "peak_processes": o.peaks.procs, "peak_connection_processes": o.peaks.conn_procs,
                       "samples": o.peaks.samples, "slowest_sample_ms": (o.peaks.sweep_ms_max).round(),
                       "slowest_listing_ms": o.peaks.list_ms_max.round()},
            "hostile": o.hostile,
            "hostile_open_at_end": o.open_at_end,
            "closed_within_deadline": o.in_time, "with_deadline": o.with_deadline,
            "closed_late": o.late, "outlived": o.outlived,
        }));
    }
    for o in &outcomes {
        for m in &o.missed {
            println!("MISSED {}: {m}", o.name);
        }
    }
    println!("result: {}", if all_ok { "OK" } else { "FAIL" });
    if let Some(p) = &cfg.json {
        let doc = json!({
            "ok": all_ok,
            "seconds": cfg.seconds,
            "limits": cfg.limits_note,
            "targets": {"honest_delivery_pct": 100, "stall_s": 1, "max_pss_mib": cfg.max_mem_mib,
                        "max_connection_processes": cfg.max_connections,
                        "deadline_slack_s": SLACK.as_secs_f64()},
            "attacks": docs,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("{}", p.display()))?;
    }
    Ok(if all_ok { 0 } else { 1 })
}
