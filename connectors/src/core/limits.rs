//! Connection limits: how many connection processes a listener runs (in all, per client
//! address, and with every listener counted together), how long a client may take to say
//! what it wants, and how long a viewer's socket may refuse to drain.
//!
//! The listener enforces the counts before it forks ([`Children`], [`Totals`]); a connection
//! process enforces the deadlines on itself: [`arm`] starts a whole-request deadline (a
//! one-shot `SIGALRM`: when it fires, the process writes its log line and exits, wherever it
//! is blocked), [`disarm`] stops it once the client's request was read; the streaming loop
//! (`crate::core::streaming`) drops a viewer whose socket took nothing for [`Limits::stall`] or that
//! has more than [`Limits::max_queued`] bytes waiting.
//!
//! Every limit that bites writes a log line naming the limit and the peer.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use memmap2::MmapMut;
use nix::unistd::Pid;

/// The limits of one listener and its connection processes (config `limits`, and a
/// protocol entry's own `max_connections` / `max_per_address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connection processes of this listener at once.
    pub per_listener: u32,
    /// Most connection processes of this listener for one client address.
    pub per_address: u32,
    /// Most connection processes of this listener still reading their client's request
    /// (before [`disarm`]): what a crowd of slow clients can hold at once.
    pub requests: u32,
    /// Most connection processes of every listener together.
    pub total: u32,
    /// Whole-request deadline: from the accept until the client's request is read (HTTP
    /// request head, RTMP handshake through `play`/`publish`, RTSP up to `PLAY`/`RECORD`,
    /// DTSC `play`/`push`). On an HTTP keep-alive connection each further request has its
    /// own, from its first byte; an idle keep-alive connection is closed after 15 s.
    pub request: Duration,
    /// How long a viewer's socket may take no byte before the viewer is dropped.
    pub stall: Duration,
    /// Most bytes a viewer's process keeps queued for a socket that does not drain.
    pub max_queued: usize,
    /// The send buffer of a streaming viewer's socket, bytes (`SO_SNDBUF`; the kernel
    /// doubles it for its bookkeeping); 0 leaves the kernel's autotuning, which grows a
    /// buffer up to `tcp_wmem`'s maximum (4 MiB) even for a client that reads nothing.
    pub send_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let total = default_total();
        Limits {
            per_listener: total,
            per_address: 200,
            requests: 512,
            total,
            request: Duration::from_secs(10),
            stall: Duration::from_secs(15),
            max_queued: 4 << 20,
            send_buffer: 256 << 10,
        }
    }
}

/// The default cap on connection processes of the whole server: one per 2 MiB of the
/// machine's memory (a viewer's process costs about 150 KiB; the rest is headroom for what
/// it maps and for bursts), at most half of `RLIMIT_NPROC` and at most 10,000, at least 64.
pub fn default_total() -> u32 {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib / 2048)
        .unwrap_or(4096);
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit.
    let nproc = if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) } == 0 {
        rl.rlim_cur / 2
    } else {
        u64::MAX
    };
    mem.min(nproc).clamp(64, 10_000) as u32
}

/// A listener's limits on its command line (`sluice connector PROTO … --max-connections N`),
/// as the controller passes them from the config; each unset one takes [`Limits::default`]'s
/// value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Most connections of this listener at once.
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// Most connections of this listener from one client address.
    #[arg(long)]
    pub max_per_address: Option<u32>,
    /// Most connections of every listener together.
    #[arg(long)]
    pub max_total: Option<u32>,
    /// Most connections of this listener still sending their request.
    #[arg(long)]
    pub max_requests: Option<u32>,
    /// Seconds a client has to send its whole request.
    #[arg(long)]
    pub request_timeout: Option<u64>,
    /// Seconds a viewer's socket may take nothing before the viewer is dropped.
    #[arg(long)]
    pub stall_timeout: Option<u64>,
    /// Bytes a viewer may have waiting for its socket before it is dropped.
    #[arg(long)]
    pub max_queued: Option<usize>,
    /// A streaming viewer's socket send buffer, bytes (0: the kernel's autotuning).
    #[arg(long)]
    pub send_buffer: Option<usize>,
}

impl LimitArgs {
    /// The limits these arguments set, the rest by default.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let total = self.max_total.unwrap_or(d.total).max(1);
        Limits {
            per_listener: self.max_connections.unwrap_or(total).max(1),
            per_address: self.max_per_address.unwrap_or(d.per_address).max(1),
            requests: self.max_requests.unwrap_or(d.requests).max(1),
            total,
            request: self
                .request_timeout
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.request),
            stall: self
                .stall_timeout
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.stall),
            max_queued: self.max_queued.unwrap_or(d.max_queued).max(64 << 10),
            send_buffer: self.send_buffer.unwrap_or(d.send_buffer),
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// The limits this process runs with (set once by the listener, inherited by its forks;
/// other processes, such as a push, get the defaults, worked out once).
pub fn get() -> Limits {
    *LIMITS.get_or_init(Limits::default)
}

/// Sets the limits for this process and the connection processes it forks.
pub fn set(l: Limits) {
    let _ = LIMITS.set(l);
}

/// The line [`arm`]'s deadline writes: kept ready before the alarm, since a signal handler
/// may only call `write` and `_exit`.
static mut ALARM_LINE: [u8; 256] = [0; 256];
static ALARM_LEN: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    let n = ALARM_LEN.load(Ordering::Acquire) as usize;
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the line was written before the
    // alarm was armed and is not changed while it is armed (arm and disarm run on the one
    // thread, between alarms).
    unsafe {
        let p = std::ptr::addr_of!(ALARM_LINE) as *const u8;
        libc::write(2, p as *const libc::c_void, n.min(256));
        libc::_exit(3);
    }
}

/// Starts this connection process's whole-request deadline: unless [`disarm`] is called
/// within `limit` (rounded up to whole seconds), the process logs `"[PROTO PID] PEER: WHAT
/// not done within N s; closing"` and exits, however its reads are going (one byte every
/// few seconds does not extend it). Arming again replaces the previous deadline.
pub fn arm(proto: &str, peer: &str, what: &str, limit: Duration) {
    let secs = limit.as_secs().max(1) + u64::from(limit.subsec_nanos() > 0);
    let line = format!(
        "[{proto} {}] {peer}: {what} not done within {secs} s; closing\n",
        std::process::id()
    );
    let bytes = line.as_bytes();
    let n = bytes.len().min(256);
    // SAFETY: no alarm is pending while the line is rewritten (cancelled first), and only
    // this thread touches it.
    unsafe {
        libc::alarm(0);
        let dst = std::ptr::addr_of_mut!(ALARM_LINE) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
        ALARM_LEN.store(n as u32, Ordering::Release);
        libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t);
        libc::alarm(secs.min(u64::from(u32::MAX)) as libc::c_uint);
    }
}

/// Stops the deadline [`arm`] started (the client's request is in). The first time, the
/// listener is told ([`Children::ready`]), so that this process no longer counts against
/// [`Limits::requests`].
pub fn disarm() {
    // SAFETY: cancelling a pending alarm has no other effect.
    unsafe {
        libc::alarm(0);
    }
    let fd = READY_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        let pid = std::process::id().to_ne_bytes();
        // SAFETY: a 4-byte write to the pipe the listener reads (atomic below PIPE_BUF); a
        // full pipe loses the note, which the listener's reaping makes up for.
        unsafe {
            libc::write(fd, pid.as_ptr().cast(), pid.len());
        }
    }
}

/// The listener's pipe of "request is in" notes, in a connection process that has not
/// sent its note yet (-1 afterwards, and outside connection processes).
static READY_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// A connection process's end of the listener's [`ReadyPipe`]: [`disarm`] writes to it once.
pub fn set_ready_fd(fd: std::os::fd::RawFd) {
    READY_FD.store(fd, Ordering::Release);
}

/// The pipe on which a listener's connection processes say their request is in (each its
/// pid, 4 bytes), read without blocking by the listener.
pub struct ReadyPipe {
    /// The listener's end.
    pub read: std::os::fd::OwnedFd,
    /// The connection processes' end.
    pub write: std::os::fd::OwnedFd,
}

impl ReadyPipe {
    /// A non-blocking pipe.
    pub fn new() -> std::io::Result<ReadyPipe> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(std::io::Error::from)?;
        Ok(ReadyPipe { read, write })
    }

    /// Every pid noted since the last call.
    pub fn drain(&self) -> Vec<Pid> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: a read into a buffer of ours.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            for c in buf[..n as usize].chunks_exact(4) {
                let mut b = [0u8; 4];
                b.copy_from_slice(c);
                out.push(Pid::from_raw(i32::from_ne_bytes(b)));
            }
        }
        out
    }
}

/// Why the listener refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// [`Limits::per_listener`] reached.
    Listener,
    /// [`Limits::per_address`] reached for this address.
    Address,
    /// [`Limits::total`] reached, every listener counted.
    Total,
    /// [`Limits::requests`] reached: that many connections are still sending their request.
    Requests,
}

impl Refusal {
    /// The limit's name and value, for the log line.
    pub fn describe(self, l: &Limits) -> String {
        match self {
            Refusal::Listener => format!("this listener's limit of {} connections", l.per_listener),
            Refusal::Address => format!("the limit of {} connections per address", l.per_address),
            Refusal::Total => format!("the server's limit of {} connections", l.total),
            Refusal::Requests => format!(
                "this listener's limit of {} connections still sending their request",
                l.requests
            ),
        }
    }
}

/// A listener's live connection processes, by pid and by client address.
#[derive(Debug, Default)]
pub struct Children {
    by_pid: HashMap<Pid, IpAddr>,
    by_addr: HashMap<IpAddr, u32>,
    /// Those whose request is not in yet.
    requesting: std::collections::HashSet<Pid>,
}

impl Children {
    /// Connection processes alive.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Connection processes of `addr`.
    pub fn of(&self, addr: &IpAddr) -> u32 {
        self.by_addr.get(addr).copied().unwrap_or(0)
    }

    /// Whether one more connection from `addr` fits, with `total` processes alive on every
    /// listener together.
    pub fn admit(&self, addr: &IpAddr, total: u32, l: &Limits) -> Result<(), Refusal> {
        if self.by_pid.len() as u64 >= u64::from(l.per_listener) {
            Err(Refusal::Listener)
        } else if self.of(addr) >= l.per_address {
            Err(Refusal::Address)
        } else if total >= l.total {
            Err(Refusal::Total)
        } else if self.requesting.len() as u64 >= u64::from(l.requests) {
            Err(Refusal::Requests)
        } else {
            Ok(())
        }
    }

    /// A connection process was started (its request not in yet).
    pub fn add(&mut self, pid: Pid, addr: IpAddr) {
        if self.by_pid.insert(pid, addr).is_none() {
            *self.by_addr.entry(addr).or_insert(0) += 1;
            self.requesting.insert(pid);
        }
    }

    /// A connection process has its client's request ([`disarm`]).
    pub fn ready(&mut self, pid: Pid) {
        self.requesting.remove(&pid);
    }

    /// Connection processes whose request is not in yet.
    pub fn requesting(&self) -> usize {
        self.requesting.len()
    }

    /// A connection process ended.
    pub fn remove(&mut self, pid: Pid) {
        self.requesting.remove(&pid);
        if let Some(addr) = self.by_pid.remove(&pid) {
            if let Some(n) = self.by_addr.get_mut(&addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_addr.remove(&addr);
                }
            }
        }
    }

    /// Collects every ended child process of this one (`waitpid(-1, WNOHANG)`), forgetting
    /// it in whichever of `sets` counts it.
    pub fn reap(sets: &mut [&mut Children]) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => {
                    if let Some(pid) = s.pid() {
                        for set in sets.iter_mut() {
                            set.remove(pid);
                        }
                    }
                }
            }
        }
    }
}

/// Most processes a listener runs at once only to say "no" in its protocol's words (RTMP
/// `NetConnection.Connect.Rejected`, RTSP `503`) to connections over its caps; past that,
/// connections over the caps are closed unanswered.
pub const MAX_REFUSERS: usize = 16;

/// How long a refusing process may take (handshake and the client's first request).
pub const REFUSE_DEADLINE: Duration = Duration::from_secs(3);

static REFUSING: OnceLock<String> = OnceLock::new();

/// Marks this connection process as one that only refuses, with the reason the client is
/// told ([`refusing`]).
pub fn set_refusing(why: String) {
    let _ = REFUSING.set(why);
}

/// The reason to give when this connection process only refuses (the server is over a
/// connection cap): the protocol answers its first request with it and closes.
pub fn refusing() -> Option<&'static str> {
    REFUSING.get().map(String::as_str)
}

/// Slots in [`Totals`]' file: the most listeners counted together.
const TOTAL_SLOTS: usize = 64;

/// Every listener's count of connection processes, in a shared file
/// (`RUNDIR/connections.shm`: [`TOTAL_SLOTS`] slots of (pid u32, count u32), little-endian
/// atomics), so that each listener can check the server-wide [`Limits::total`]. A listener
/// claims a free slot, or one whose process is gone, by its pid.
pub struct Totals {
    map: Option<MmapMut>,
    slot: usize,
}

impl Totals {
    /// Opens (creating) the file in `rundir` and claims a slot for this process. Without
    /// the file, counts are this listener's alone.
    pub fn open(rundir: &Path) -> Totals {
        let none = Totals { map: None, slot: 0 };
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(rundir.join("connections.shm"))
        else {
            return none;
        };
        if file.set_len((TOTAL_SLOTS * 8) as u64).is_err() {
            return none;
        }
        // SAFETY: a file of this server's run folder, only ever accessed through atomics.
        let Ok(map) = (unsafe { MmapMut::map_mut(&file) }) else {
            return none;
        };
        let mut t = Totals {
            map: Some(map),
            slot: 0,
        };
        let me = std::process::id();
        for s in 0..TOTAL_SLOTS {
            let pid = t
                .word(s, 0)
                .map(|w| w.load(Ordering::Acquire))
                .unwrap_or(me);
            let free = pid == 0 || pid == me || !pid_alive(pid);
            if free
                && t.word(s, 0).is_some_and(|w| {
                    w.compare_exchange(pid, me, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                })
            {
                t.slot = s;
                t.set(0);
                return t;
            }
        }
        t.map = None;
        t
    }

    fn word(&self, slot: usize, half: usize) -> Option<&AtomicU32> {
        let map = self.map.as_ref()?;
        let off = slot * 8 + half * 4;
        if off + 4 > map.len() {
            return None;
        }
        // SAFETY: in bounds (checked), 4-aligned (the mapping is page-aligned), and the
        // mapping lives as long as `self`.
        Some(unsafe { &*(map.as_ptr().add(off) as *const AtomicU32) })
    }

    /// Publishes this listener's count.
    pub fn set(&self, count: u32) {
        if let Some(w) = self.word(self.slot, 1) {
            w.store(count, Ordering::Release);
        }
    }

    /// The count of every listener whose process is alive, this one's being `mine`.
    pub fn sum(&self, mine: u32) -> u32 {
        if self.map.is_none() {
            return mine;
        }
        let me = std::process::id();
        let mut total = mine;
        for s in 0..TOTAL_SLOTS {
            let pid = self
                .word(s, 0)
                .map(|w| w.load(Ordering::Acquire))
                .unwrap_or(0);
            if pid != 0 && pid != me && pid_alive(pid) {
                total = total.saturating_add(
                    self.word(s, 1)
                        .map(|w| w.load(Ordering::Acquire))
                        .unwrap_or(0),
                );
            }
        }
        total
    }
}

fn pid_alive(pid: u32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_counted_per_address_and_freed_when_they_end() {
        let l = Limits {
            per_listener: 3,
            per_address: 2,
            total: 10,
            ..Limits::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut c = Children::default();
        assert_eq!(c.admit(&a, 0, &l), Ok(()));
        c.add(Pid::from_raw(10), a);
        c.add(Pid::from_raw(11), a);
        assert_eq!(c.admit(&a, 2, &l), Err(Refusal::Address));
        assert_eq!(c.admit(&b, 2, &l), Ok(()));
        c.add(Pid::from_raw(12), b);
        assert_eq!(c.admit(&b, 3, &l), Err(Refusal::Listener));
        c.remove(Pid::from_raw(10));
        assert_eq!(c.of(&a), 1);
        assert_eq!(c.admit(&a, 2, &l), Ok(()));
        assert_eq!(c.admit(&a, 10, &l), Err(Refusal::Total));
        c.remove(Pid::from_raw(10));
        assert_eq!(c.len(), 2, "removing twice changes nothing");
    }

    #[test]
    fn connections_still_sending_their_request_have_a_cap_of_their_own() {
        let l = Limits {
            requests: 2,
            ..Limits::default()
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut c = Children::default();
        c.add(Pid::from_raw(20), a);
        c.add(Pid::from_raw(21), b);
        assert_eq!(c.admit(&a, 2, &l), Err(Refusal::Requests));
        c.ready(Pid::from_raw(20));
        assert_eq!(c.requesting(), 1);
        assert_eq!(
            c.admit(&a, 2, &l),
            Ok(()),
            "a viewer past its request does not count"
        );
        c.remove(Pid::from_raw(21));
        assert_eq!(c.requesting(), 0);
    }

    #[test]
    fn the_ready_pipe_carries_pids() {
        let p = ReadyPipe::new().unwrap();
        set_ready_fd(std::os::fd::AsRawFd::as_raw_fd(&p.write));
        disarm();
        disarm();
        assert_eq!(
            p.drain(),
            [Pid::from_raw(std::process::id() as i32)],
            "once only"
        );
        assert!(p.drain().is_empty());
    }

    #[test]
    fn totals_add_up_every_live_listener() {
        let dir = std::env::temp_dir().join(format!("sluice-totals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Totals::open(&dir);
        t.set(5);
        assert_eq!(t.sum(5), 5, "only this listener");
        // Another live listener (this test's parent process stands in for it).
        let other = std::os::unix::process::parent_id();
        let map = t.map.as_ref().unwrap();
        let slot = (t.slot + 1) % TOTAL_SLOTS;
        let w =
            |half: usize| unsafe { &*(map.as_ptr().add(slot * 8 + half * 4) as *const AtomicU32) };
        w(0).store(other, Ordering::Release);
        w(1).store(7, Ordering::Release);
        assert_eq!(t.sum(5), 12);
        // A listener that died no longer counts.
        w(0).store(0x7fff_fff0, Ordering::Release);
        assert_eq!(t.sum(5), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_total_is_within_its_bounds() {
        let t = default_total();
        assert!((64..=10_000).contains(&t), "{t}");
    }
}
