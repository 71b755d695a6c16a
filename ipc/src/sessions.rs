//! The session table: one slot per connection, publisher, pull and push process, in a
//! shared file (`RUNDIR/sessions.shm`) that the controller creates and reads, and that every
//! such process writes its own slot of. The controller answers `clients`, `totals`,
//! `active_streams` and `/metrics` from it without asking any process, so the figures are as
//! fresh as the last update (at most [`UPDATE_EVERY`] old for a streaming session; MistServer's
//! lag up to 15 s). A restarted controller finds the table as it was, so sessions that
//! outlived it are still counted.
//!
//! Layout: [`SLOTS`] slots of [`SLOT_SIZE`] bytes, all fields little-endian atomics:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | u32 | pid of the owning process; 0 = free (claimed by compare-and-swap) |
//! | 4 | u32 | state: 1 open, 2 closed (final counters written) |
//! | 8 | u32 | generation: odd while the text fields are being written (a seqlock) |
//! | 12 | u32 | kind: 0 unknown, 1 viewer, 2 input (publisher or pull), 3 output (push out) |
//! | 16 | u64 | start, Unix ms |
//! | 24 | u64 | last update, Unix ms |
//! | 32 | u64 | bytes sent to the peer (acknowledged, from `TCP_INFO.tcpi_bytes_acked`) |
//! | 40 | u64 | bytes received from the peer (`tcpi_bytes_received`) |
//! | 48 | u64 | packets lost (where the protocol knows: RTCP receiver reports, RTP pulls) |
//! | 56 | u64 | TCP segments retransmitted (`tcpi_total_retrans`) |
//! | 64 | 112 | stream name (length byte, then bytes) |
//! | 176 | 16 | protocol (length byte, then bytes): `RTMP`, `HLS`, `RTSP`, … |
//! | 192 | 48 | peer address (length byte, then bytes) |
//! | 240 | u64 | session id: unique per connection (pid and start time) |

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use memmap2::MmapMut;

/// Slots in the table: the most sessions counted at once.
pub const SLOTS: usize = 16384;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 256;
/// How often a streaming session refreshes its counters.
pub const UPDATE_EVERY: Duration = Duration::from_millis(500);

const O_PID: usize = 0;
const O_STATE: usize = 4;
const O_GEN: usize = 8;
const O_KIND: usize = 12;
const O_START: usize = 16;
const O_UPDATED: usize = 24;
const O_DOWN: usize = 32;
const O_UP: usize = 40;
const O_LOST: usize = 48;
const O_RETRANS: usize = 56;
const O_STREAM: usize = 64;
const L_STREAM: usize = 112;
const O_PROTO: usize = 176;
const L_PROTO: usize = 16;
const O_HOST: usize = 192;
const L_HOST: usize = 48;
const O_ID: usize = 240;

/// Slot states.
pub const STATE_OPEN: u32 = 1;
/// The process ended and wrote its final counters.
pub const STATE_CLOSED: u32 = 2;

/// What a session is to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not attached to a stream (yet).
    Unknown = 0,
    /// Plays a stream.
    Viewer = 1,
    /// Brings a stream in: a publisher or a pull.
    Input = 2,
    /// Sends a stream to another server (a push out).
    Output = 3,
}

impl Kind {
    fn from_u32(v: u32) -> Kind {
        match v {
            1 => Kind::Viewer,
            2 => Kind::Input,
            3 => Kind::Output,
            _ => Kind::Unknown,
        }
    }

    /// MistServer's name for the kind in stats (`clients`, `/metrics`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown",
            Kind::Viewer => "viewer",
            Kind::Input => "input",
            Kind::Output => "output",
        }
    }
}

/// The table's file in a run folder.
pub fn table_path(rundir: &Path) -> PathBuf {
    rundir.join("sessions.shm")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A mapping of the table.
pub struct Table {
    map: MmapMut,
}

impl Table {
    /// Opens the table at `path`, creating it (sparse, [`SLOTS`] × [`SLOT_SIZE`] bytes) when
    /// `create` and it is missing. An existing table keeps its contents.
    pub fn open(path: &Path, create: bool) -> Result<Table> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let len = (SLOTS * SLOT_SIZE) as u64;
        if f.metadata()?.len() != len {
            f.set_len(len)?;
        }
        // SAFETY: a shared mapping of a file of the right size; every field is accessed
        // through atomics.
        let map = unsafe { MmapMut::map_mut(&f) }.context("mapping the session table")?;
        Ok(Table { map })
    }

    fn u32(&self, slot: usize, off: usize) -> &AtomicU32 {
        debug_assert!(slot < SLOTS && off + 4 <= SLOT_SIZE);
        // SAFETY: in bounds (checked above and by the constants), 4-aligned, and the mapping
        // lives as long as `self`.
        unsafe { &*(self.map.as_ptr().add(slot * SLOT_SIZE + off) as *const AtomicU32) }
    }

    fn u64(&self, slot: usize, off: usize) -> &AtomicU64 {
        // SAFETY: as for `u32`, 8-aligned.
        unsafe { &*(self.map.as_ptr().add(slot * SLOT_SIZE + off) as *const AtomicU64) }
    }

    fn write_text(&self, slot: usize, off: usize, cap: usize, text: &str) {
        let bytes = text.as_bytes();
        let n = bytes.len().min(cap - 1);
        // SAFETY: the range lies inside the slot; only the slot's owner writes it, under the
        // generation seqlock that readers check.
        unsafe {
            let p = self.map.as_ptr().add(slot * SLOT_SIZE + off) as *mut u8;
            std::ptr::write_volatile(p, n as u8);
            for (i, b) in bytes[..n].iter().enumerate() {
                std::ptr::write_volatile(p.add(1 + i), *b);
            }
        }
    }

    fn read_text(&self, slot: usize, off: usize, cap: usize) -> String {
        // SAFETY: the range lies inside the slot; torn reads are caught by the seqlock.
        unsafe {
            let p = self.map.as_ptr().add(slot * SLOT_SIZE + off);
            let n = (std::ptr::read_volatile(p) as usize).min(cap - 1);
            let v: Vec<u8> = (0..n)
                .map(|i| std::ptr::read_volatile(p.add(1 + i)))
                .collect();
            String::from_utf8_lossy(&v).into_owned()
        }
    }

    /// Claims a free slot for `pid` (compare-and-swap of the pid word from 0), looking from
    /// slot `pid % SLOTS` on: each process then touches its own page of the table, not
    /// every page before a free slot (a viewer's memory stays its own).
    fn claim(&self, pid: u32) -> Option<usize> {
        let first = pid as usize % SLOTS;
        (0..SLOTS).map(|i| (first + i) % SLOTS).find(|&s| {
            self.u32(s, O_PID).load(Ordering::Relaxed) == 0
                && self
                    .u32(s, O_PID)
                    .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// Reads one slot, or `None` when it is free or its text was being rewritten twice over.
    pub fn read(&self, slot: usize) -> Option<Entry> {
        for _ in 0..4 {
            let pid = self.u32(slot, O_PID).load(Ordering::Acquire);
            if pid == 0 {
                return None;
            }
            let g1 = self.u32(slot, O_GEN).load(Ordering::Acquire);
            if g1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let e = Entry {
                slot,
                pid,
                state: self.u32(slot, O_STATE).load(Ordering::Acquire),
                kind: Kind::from_u32(self.u32(slot, O_KIND).load(Ordering::Relaxed)),
                start_ms: self.u64(slot, O_START).load(Ordering::Relaxed),
                updated_ms: self.u64(slot, O_UPDATED).load(Ordering::Relaxed),
                down: self.u64(slot, O_DOWN).load(Ordering::Relaxed),
                up: self.u64(slot, O_UP).load(Ordering::Relaxed),
                lost: self.u64(slot, O_LOST).load(Ordering::Relaxed),
                retransmits: self.u64(slot, O_RETRANS).load(Ordering::Relaxed),
                stream: self.read_text(slot, O_STREAM, L_STREAM),
                protocol: self.read_text(slot, O_PROTO, L_PROTO),
                host: self.read_text(slot, O_HOST, L_HOST),
                id: self.u64(slot, O_ID).load(Ordering::Relaxed),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if self.u32(slot, O_GEN).load(Ordering::Relaxed) == g1 {
                return Some(e);
            }
        }
        None
    }

    /// Every used slot.
    pub fn entries(&self) -> Vec<Entry> {
        (0..SLOTS).filter_map(|s| self.read(s)).collect()
    }

    /// Frees slot `slot` if it still belongs to `pid` (the controller, once it has counted a
    /// closed session).
    pub fn free(&self, slot: usize, pid: u32) {
        if slot < SLOTS {
            let _ = self.u32(slot, O_STATE).swap(0, Ordering::AcqRel);
            let _ =
                self.u32(slot, O_PID)
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// One session as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Slot index.
    pub slot: usize,
    /// The owning process.
    pub pid: u32,
    /// [`STATE_OPEN`] or [`STATE_CLOSED`].
    pub state: u32,
    /// Viewer, input or output.
    pub kind: Kind,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Last update, Unix ms.
    pub updated_ms: u64,
    /// Bytes sent to the peer.
    pub down: u64,
    /// Bytes received from the peer.
    pub up: u64,
    /// Media packets lost, where known.
    pub lost: u64,
    /// TCP segments retransmitted.
    pub retransmits: u64,
    /// Stream name (empty before the session named one).
    pub stream: String,
    /// Protocol: `RTMP`, `HLS`, `RTSP`, …
    pub protocol: String,
    /// Peer address.
    pub host: String,
    /// Session id, unique per connection.
    pub id: u64,
}

/// This process's own slot.
struct Mine {
    table: Table,
    slot: usize,
    pid: u32,
    last: Instant,
    base_down: u64,
    base_up: u64,
}

static MINE: Mutex<Option<Mine>> = Mutex::new(None);

/// Takes a slot for this process's session (called once by a connection process after its
/// fork, or by a pull or push process): `protocol` and `host` are shown in stats. Without a
/// table (no controller made one) the session is simply not counted.
pub fn begin(rundir: &Path, protocol: &str, host: &str) {
    let Ok(table) = Table::open(&table_path(rundir), false) else {
        return;
    };
    let pid = std::process::id();
    let Some(slot) = table.claim(pid) else {
        return;
    };
    let now = unix_ms();
    let g = table.u32(slot, O_GEN);
    g.fetch_add(1, Ordering::AcqRel);
    for off in [O_DOWN, O_UP, O_LOST, O_RETRANS] {
        table.u64(slot, off).store(0, Ordering::Relaxed);
    }
    table.u32(slot, O_KIND).store(0, Ordering::Relaxed);
    table.u64(slot, O_START).store(now, Ordering::Relaxed);
    table.u64(slot, O_UPDATED).store(now, Ordering::Relaxed);
    table.u64(slot, O_ID).store(
        (u64::from(pid) << 32) ^ (now & 0xffff_ffff),
        Ordering::Relaxed,
    );
    table.write_text(slot, O_STREAM, L_STREAM, "");
    table.write_text(slot, O_PROTO, L_PROTO, protocol);
    table.write_text(slot, O_HOST, L_HOST, host);
    g.fetch_add(1, Ordering::AcqRel);
    table
        .u32(slot, O_STATE)
        .store(STATE_OPEN, Ordering::Release);
    *MINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Mine {
        table,
        slot,
        pid,
        last: Instant::now(),
        base_down: 0,
        base_up: 0,
    });
}

/// Names the stream this session plays (`Viewer`) or brings in (`Input`), and optionally a
/// more precise protocol (the HTTP connector's `HLS`, `DASH`, …). A keep-alive HTTP
/// connection that moves to another stream is shown with the newest.
pub fn set_stream(stream: &str, kind: Kind, protocol: Option<&str>) {
    let guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = guard.as_ref() else {
        return;
    };
    let g = m.table.u32(m.slot, O_GEN);
    g.fetch_add(1, Ordering::AcqRel);
    m.table.write_text(m.slot, O_STREAM, L_STREAM, stream);
    if let Some(p) = protocol {
        m.table.write_text(m.slot, O_PROTO, L_PROTO, p);
    }
    m.table
        .u32(m.slot, O_KIND)
        .store(kind as u32, Ordering::Relaxed);
    g.fetch_add(1, Ordering::AcqRel);
}

/// Names the protocol more precisely than the listener did (the HTTP connector's `HLS`,
/// `DASH`, `FLV`, … per request).
pub fn set_protocol(protocol: &str) {
    let guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = guard.as_ref() else {
        return;
    };
    let g = m.table.u32(m.slot, O_GEN);
    g.fetch_add(1, Ordering::AcqRel);
    m.table.write_text(m.slot, O_PROTO, L_PROTO, protocol);
    g.fetch_add(1, Ordering::AcqRel);
}

/// This process's session: (protocol, session id), when it has a slot.
pub fn current() -> Option<(String, u64)> {
    let guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let m = guard.as_ref()?;
    let e = m.table.read(m.slot)?;
    Some((e.protocol, e.id))
}

/// Sets the media packets lost so far (RTCP receiver reports, a pull's RTP loss count).
pub fn set_lost(lost: u64) {
    if let Some(m) = MINE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        m.table.u64(m.slot, O_LOST).store(lost, Ordering::Relaxed);
    }
}

/// Adds bytes moved outside a TCP socket of the session (a pull's UDP datagrams): `down`
/// sent, `up` received.
pub fn add_bytes(down: u64, up: u64) {
    let mut guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = guard.as_mut() {
        m.base_down += down;
        m.base_up += up;
    }
}

/// The client's TCP socket, when the handler's socket is not it (a TLS connection's
/// plaintext end): counters are read from this one instead.
static COUNTED: std::sync::OnceLock<TcpStream> = std::sync::OnceLock::new();

/// The client's TCP socket noted by [`count_from`] (a TLS connection), if any.
pub fn counted() -> Option<&'static TcpStream> {
    COUNTED.get()
}

/// Counts this process's bytes from `sock` whatever socket [`update`] is given (a TLS
/// connection: the handler writes plaintext to a socket pair; the client's TCP socket
/// carries what is counted).
pub fn count_from(sock: TcpStream) {
    let _ = COUNTED.set(sock);
}

/// Refreshes the counters from `sock`'s `TCP_INFO` when [`UPDATE_EVERY`] has passed (or
/// `force`). Cheap to call often: a clock read when nothing is due.
pub fn update(sock: Option<&TcpStream>, force: bool) {
    let mut guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = guard.as_mut() else {
        return;
    };
    if !force && m.last.elapsed() < UPDATE_EVERY {
        return;
    }
    m.last = Instant::now();
    let (mut down, mut up, mut retrans) = (m.base_down, m.base_up, 0);
    if let Some(info) = COUNTED.get().or(sock).and_then(tcp_info) {
        down += info.0;
        up += info.1;
        retrans = info.2;
    }
    m.table.u64(m.slot, O_DOWN).store(down, Ordering::Relaxed);
    m.table.u64(m.slot, O_UP).store(up, Ordering::Relaxed);
    m.table
        .u64(m.slot, O_RETRANS)
        .store(retrans, Ordering::Relaxed);
    m.table
        .u64(m.slot, O_UPDATED)
        .store(unix_ms(), Ordering::Release);
}

/// The session ends: final counters from `sock`, and the slot marked closed for the
/// controller to count and free.
pub fn end(sock: Option<&TcpStream>) {
    update(sock, true);
    let mut guard = MINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = guard.take() {
        if m.table.u32(m.slot, O_PID).load(Ordering::Acquire) == m.pid {
            m.table
                .u32(m.slot, O_STATE)
                .store(STATE_CLOSED, Ordering::Release);
        }
    }
}

/// (bytes acked, bytes received, total retransmits) of a TCP socket, from `TCP_INFO`
/// (Linux `struct tcp_info`: `tcpi_total_retrans` at byte 100, `tcpi_bytes_acked` at 120,
/// `tcpi_bytes_received` at 128; kernels since 4.2).
pub fn tcp_info(sock: &TcpStream) -> Option<(u64, u64, u64)> {
    let mut buf = [0u8; 232];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 || (len as usize) < 136 {
        return None;
    }
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap_or_default());
    let retrans = u32::from_ne_bytes(buf[100..104].try_into().unwrap_or_default());
    Some((u64_at(120), u64_at(128), u64::from(retrans)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_claimed_named_counted_and_freed() {
        let dir = std::env::temp_dir().join(format!("sluice-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Table::open(&table_path(&dir), true).unwrap();
        assert!(t.entries().is_empty());
        // A loopback connection, so that TCP_INFO has something to count.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        begin(&dir, "HTTP", "127.0.0.1");
        set_stream("live", Kind::Viewer, Some("HLS"));
        use std::io::{Read, Write};
        s.write_all(&[7u8; 5000]).unwrap();
        let mut got = vec![0u8; 5000];
        c.read_exact(&mut got).unwrap();
        c.write_all(b"GET").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        set_lost(3);
        update(Some(&s), true);
        let e = t.entries();
        assert_eq!(e.len(), 1);
        let e = &e[0];
        assert_eq!(
            (
                e.pid,
                e.state,
                e.kind,
                e.stream.as_str(),
                e.protocol.as_str(),
                e.host.as_str()
            ),
            (
                std::process::id(),
                STATE_OPEN,
                Kind::Viewer,
                "live",
                "HLS",
                "127.0.0.1"
            )
        );
        assert_eq!((e.down, e.up, e.lost), (5000, 3, 3));
        end(Some(&s));
        let e = t.read(e.slot).unwrap();
        assert_eq!(e.state, STATE_CLOSED);
        t.free(e.slot, e.pid);
        assert!(t.entries().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_text_is_cut_to_its_field() {
        let dir = std::env::temp_dir().join(format!("sluice-sessions-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Table::open(&table_path(&dir), true).unwrap();
        let s = t.claim(42).unwrap();
        t.write_text(s, O_PROTO, L_PROTO, "A-PROTOCOL-NAME-LONGER-THAN-16");
        assert_eq!(t.read_text(s, O_PROTO, L_PROTO), "A-PROTOCOL-NAME");
        t.free(s, 42);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
