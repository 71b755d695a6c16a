//! The buffer: one process per live stream. It owns the stream's shared memory (see
//! `dtsc::shm` for the layout and [`ipc`] for the regions and the socket handshake), takes
//! packets from one publisher (or from its own file input), keeps them for the stream's window
//! (`DVR`, default 50 s), and lets any number of connectors map the pages and read packets
//! straight from them. It ends itself when the stream has been idle for a while.
//!
//! Started by the controller as `sluice buffer --stream NAME --source SRC --rundir DIR`.

pub mod input;
pub mod shmem;

use ipc::messages::{AttachMode, BufferReply, BufferRequest, Message};
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use dtsc::shm::{self, Geometry, Meta, StreamWriter};
use dtsc::wire::{self, Frame, Header};
use dtsc::{PacketRef, Track, TrackKind};
use memmap2::MmapMut;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

/// The window of an event stream: "all of it" as a real duration that manifests can state
/// (DASH `timeShiftBufferDepth`, Smooth `DVRWindowLength`) and caches can sweep by; the
/// packet ring holds less than this (about 45 min at 100 packets/s).
pub const EVENT_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// What the controller passes to a buffer.
#[derive(Debug, Clone, clap::Args)]
pub struct BufferArgs {
    /// Stream name.
    #[arg(long)]
    pub stream: String,
    /// Source: `push://…` (publishers write into it), `rtsp://…` (a pull process is started
    /// and kept running), or a file path (looped live).
    #[arg(long, default_value = "push://")]
    pub source: String,
    /// Window (DVR) length in ms.
    #[arg(long, default_value_t = 50_000)]
    pub dvr_ms: u64,
    /// Folder of the Unix sockets.
    #[arg(long)]
    pub rundir: PathBuf,
    /// End after this many ms with neither publisher nor viewers.
    #[arg(long, default_value_t = 20_000)]
    pub idle_ms: u64,
    /// After the publisher left, keep serving the ended stream this many ms (HLS players
    /// still fetch the last segments and the playlist with `#EXT-X-ENDLIST`).
    #[arg(long, default_value_t = 30_000)]
    pub linger_ms: u64,
    /// A publisher that leaves without ending its publish (its connection dropped, its
    /// encoder killed) may come back within this many ms: meanwhile the stream stays live
    /// and its viewers wait; a publisher that attaches in time continues the stream, its
    /// timestamps moved on to follow the last packet by the time it was away. 0: the stream
    /// ends as the publisher leaves. (The stream config's `reconnect_grace`.)
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Size of the data ring in MiB (sparse: memory follows the window).
    #[arg(long, default_value_t = 1024)]
    pub ring_mib: u64,
    /// Keep the stream's data in an unnamed file in this folder instead of memory, with at
    /// most `memory_mib` of it resident: a DVR window larger than the memory budget spills
    /// its older pages to disk, and viewers read them back transparently.
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// The memory budget of a spilled stream's data, MiB (with `spill_dir`).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// Play a file source once, all of it at once, instead of as a live loop: the stream is
    /// then the whole file, ended (a VOD stream: HLS with `#EXT-X-ENDLIST`, a static DASH
    /// presentation, a progressive MP4 with `moov` first), and the window is made long enough
    /// to hold it. The stream config's `"loop": false`.
    #[arg(long)]
    pub once: bool,
    /// Never end for lack of viewers (the stream config's `always_on`).
    #[arg(long)]
    pub always_on: bool,
    /// An event (the stream config's `"dvr_playlist": "event"`): the window keeps the whole
    /// stream as far as the rings hold it, and HLS playlists say
    /// `#EXT-X-PLAYLIST-TYPE:EVENT`.
    #[arg(long)]
    pub event: bool,
    /// How a pull source receives RTP: `tcp` (interleaved) or `udp` (the stream config's
    /// `rtsp_transport`).
    #[arg(long, default_value = "tcp")]
    pub pull_transport: String,
}

/// Whether a source is pulled by a process of its own: `rtsp://` (a camera), `tsudp://`
/// (MPEG-TS over UDP), `dtsc://` (another server's DTSC connector), `rtmp://` (another RTMP
/// server), `http(s)://` (HTTP-TS or
/// HTTP-FLV).
pub fn is_pull_source(source: &str) -> bool {
    [
        "rtsp://", "rtmp://", "tsudp://", "dtsc://", "http://", "https://",
    ]
    .iter()
    .any(|s| source.starts_with(s))
}

/// The pull process of a pulled source, restarted with backoff (1 s doubling to 30 s)
/// when it exits.
struct Puller {
    child: Option<std::process::Child>,
    next_start: Instant,
    backoff: Duration,
    started: Instant,
}

impl Puller {
    fn new() -> Puller {
        Puller {
            child: None,
            next_start: Instant::now(),
            backoff: Duration::from_secs(1),
            started: Instant::now(),
        }
    }

    /// Starts the pull process when none runs and its time has come; notes an exit.
    fn keep(&mut self, b: &Buffer) {
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(None) => return,
                Ok(Some(st)) => {
                    if self.started.elapsed() >= Duration::from_secs(30) {
                        self.backoff = Duration::from_secs(1);
                    }
                    b.log(&format!(
                        "pull process exited ({st}); restarting in {} ms",
                        self.backoff.as_millis()
                    ));
                    self.child = None;
                    self.next_start = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                    return;
                }
                Err(_) => return,
            }
        }
        if Instant::now() < self.next_start {
            return;
        }
        let m = b.writer.meta();
        let after = m
            .write_seq()
            .checked_sub(1)
            .and_then(|s| m.packet(s))
            .map_or(0, |e| e.dts);
        let exe = std::fs::read_link("/proc/self/exe")
            .or_else(|_| std::env::current_exe())
            .unwrap_or_else(|_| "sluice".into());
        let spawned = std::process::Command::new(exe)
            .arg("pull")
            .arg("--stream")
            .arg(&b.args.stream)
            .arg("--url")
            .arg(&b.args.source)
            .arg("--rundir")
            .arg(&b.args.rundir)
            .arg("--transport")
            .arg(&b.args.pull_transport)
            .arg("--after-ms")
            .arg(after.to_string())
            .stdin(std::process::Stdio::null())
            .spawn();
        self.started = Instant::now();
        match spawned {
            Ok(c) => self.child = Some(c),
            Err(e) => {
                b.log(&format!("starting the pull process: {e}"));
                self.next_start = Instant::now() + self.backoff;
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum Role {
    New,
    Viewer,
    Publisher,
    Observer,
}

struct Conn {
    sock: UnixStream,
    role: Role,
    inbuf: Vec<u8>,
    /// A publisher that said its publish ended (`{"cmd":"unpublish"}`).
    finished: bool,
}

/// A publisher left without ending its publish: the stream waits for it until `until`.
struct Grace {
    until: Instant,
    left: Instant,
    /// The newest DTS written before it left, ms.
    last_dts: u64,
}

const LISTENER: Token = Token(0);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Buffer {
    args: BufferArgs,
    writer: StreamWriter,
    /// The data region, read-write: the buffer punches and spills through it.
    data_fd: OwnedFd,
    /// Read-only descriptors of the two regions ([`shmem::read_only`]), the only ones sent to
    /// clients.
    meta_ro: OwnedFd,
    data_ro: OwnedFd,
    geo: Geometry,
    _maps: (MmapMut, MmapMut),
    /// With a spill file: the bytes of data that may stay resident.
    spill_budget: Option<u64>,
    /// Absolute data position up to which pages were spilled.
    spilled_to: u64,
    /// Absolute data position up to which write-back was started.
    writeback_to: u64,
    /// DTS → wall clock offset is fixed by the first packet of a run.
    zero_set: bool,
    dirty: bool,
    /// A publisher left without ending its publish and may come back.
    grace: Option<Grace>,
    /// The DTS the next publisher's first packet takes (after it came back in its grace
    /// time), ms.
    rebase_to: Option<u64>,
    /// Added to every DTS of the current publisher (non-zero after it came back), ms.
    dts_shift: i64,
    /// The source is pulled by a process of ours: its publisher leaving does not end the
    /// stream (the process is restarted), and times run on across its sessions.
    pulled: bool,
}

impl Buffer {
    fn log(&self, msg: &str) {
        // One write per line: lines of processes sharing stderr stay whole.
        let line = format!(
            "[buffer {} {}] {msg}\n",
            self.args.stream,
            std::process::id()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }

    /// The DTS of the newest packet written, ms (0 before any).
    fn last_dts(&self) -> u64 {
        let m = self.writer.meta();
        m.write_seq()
            .checked_sub(1)
            .and_then(|s| m.packet(s))
            .map(|e| e.dts)
            .unwrap_or(0)
    }

    fn set_tracks(&mut self, tracks: &[Track]) {
        let header = Header {
            live: true,
            unixzero: Some(self.writer.meta().unixzero()),
            tracks: tracks.to_vec(),
        };
        let mut frame = Vec::new();
        wire::write_header(&header, &mut frame);
        if !self.writer.set_header(
            &frame,
            dtsc::main_track(tracks).map(|t| (t.id, t.kind == TrackKind::Video)),
        ) {
            self.log("track header too large; ignored");
        }
        self.dirty = true;
    }

    fn append(&mut self, p: &PacketRef, wall: i64) {
        if !self.zero_set {
            self.writer.set_unixzero(wall - p.dts as i64);
            self.zero_set = true;
        }
        if let Some(ranges) = self.writer.append(p) {
            for r in ranges {
                if let Err(e) = shmem::punch_hole(&self.data_fd, r.offset, r.len) {
                    self.log(&format!("freeing pages: {e:#}"));
                }
            }
            self.spill_old();
        } else {
            self.log(&format!(
                "dropped a packet of {} bytes: larger than a quarter of the ring",
                p.data.len()
            ));
        }
        self.dirty = true;
    }

    /// With a spill file: writes back and drops from memory what lies more than the memory
    /// budget behind the write position, in steps of at least [`SPILL_STEP`] bytes (whole
    /// pages, split where the ring wraps). Pipelined so that ingest never waits for the disk:
    /// each step starts the write-back of the newest range and drops the range started the
    /// step before, whose write is by then done (at most one step more stays resident).
    fn spill_old(&mut self) {
        let Some(budget) = self.spill_budget else {
            return;
        };
        let write = self.writer.meta().write_pos();
        let until = write.saturating_sub(budget) & !(PAGE - 1);
        if until < self.writeback_to + SPILL_STEP {
            return;
        }
        let size = self.geo.data_size;
        let (fd, map) = (&self.data_fd, &mut self._maps.1);
        let done = Self::ranges(size, self.writeback_to, until)
            .try_for_each(|(off, len)| shmem::start_writeback(fd, off, len))
            .and_then(|()| {
                Self::ranges(size, self.spilled_to, self.writeback_to)
                    .try_for_each(|(off, len)| shmem::spill(fd, map, off, len))
            });
        if let Err(e) = done {
            self.log(&format!("spilling to disk: {e:#}"));
            self.spill_budget = None;
            return;
        }
        self.spilled_to = self.writeback_to;
        self.writeback_to = until;
    }

    /// The (offset, length) pieces of absolute data positions `from..until` in a ring of
    /// `size` bytes (split where it wraps; what is older than one ring is gone anyway).
    fn ranges(size: u64, from: u64, until: u64) -> impl Iterator<Item = (u64, u64)> {
        let mut from = from.max(until.saturating_sub(size));
        std::iter::from_fn(move || {
            (from < until).then(|| {
                let off = from % size;
                let len = (until - from).min(size - off);
                from += len;
                (off, len)
            })
        })
    }

    fn wake(&mut self) {
        if self.dirty {
            self.writer.bump_notify();
            shmem::futex_wake(self.writer.meta().notify_word());
            self.dirty = false;
        }
    }
}

/// Pages of the data region.
const PAGE: u64 = 4096;

/// Least bytes spilled at once (fewer, larger system calls).
const SPILL_STEP: u64 = 4 << 20;

/// Runs a buffer until it is idle, ended, or told to stop. The socket is removed on exit.
///
/// An error (a file source that is missing, unreadable or of an unknown format) is also
/// written to `RUNDIR/NAME.error`, one line, for the controller: it becomes INPUT_ABORT's
/// reason and what viewers of the stream are told.
pub fn run(args: BufferArgs) -> Result<()> {
    let error_path = error_path(&args.rundir, &args.stream);
    let _ = std::fs::remove_file(&error_path);
    let r = run_buffer(args);
    if let Err(e) = &r {
        let _ = std::fs::write(&error_path, format!("{e:#}"));
    }
    r
}

/// Where a buffer that failed leaves its reason ([`run`]).
pub fn error_path(rundir: &std::path::Path, stream: &str) -> std::path::PathBuf {
    rundir.join(format!("{stream}.error"))
}

fn run_buffer(args: BufferArgs) -> Result<()> {
    let term = ipc::process::install_term_handler();
    let pulled = is_pull_source(&args.source);
    let file = if args.source.starts_with("push://") || pulled {
        None
    } else {
        Some(input::LoopedFile::open(&args.source, 6000, Instant::now())?)
    };
    let mut args = args;
    if let (true, Some(f)) = (args.once, &file) {
        args.dvr_ms = args.dvr_ms.max(f.duration_ms() + 1000);
    }
    if args.event {
        args.dvr_ms = EVENT_WINDOW_MS;
    }
    let geo = Geometry {
        data_size: args.ring_mib.max(8) << 20,
        ..Geometry::default()
    };
    let (meta_fd, mut meta_map) = shmem::create_region(
        "sluice-meta",
        geo.meta_size() as u64,
        shmem::Sealing::SizeAndWrites,
    )?;
    let (data_fd, mut data_map) = match &args.spill_dir {
        Some(dir) => shmem::create_file_region(dir, geo.data_size)?,
        None => shmem::create_region("sluice-data", geo.data_size, shmem::Sealing::Size)?,
    };
    // What every client gets: descriptors that can only be read and mapped read-only.
    let meta_ro = shmem::read_only(&meta_fd)?;
    let data_ro = shmem::read_only(&data_fd)?;
    // The buffer writes the meta region through its mapping only.
    drop(meta_fd);
    let boot = now_ms() as u64;
    // SAFETY: fresh zeroed mappings that live in `_maps` as long as the writer.
    let writer = unsafe {
        let meta = Meta::init(
            meta_map.as_mut_ptr(),
            meta_map.len(),
            geo,
            boot,
            args.dvr_ms,
        )?;
        StreamWriter::new(meta, data_map.as_mut_ptr())
    };
    let path = shmem::socket_path(&args.rundir, &args.stream);
    let _ = std::fs::remove_file(&path);
    let mut listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let mut b = Buffer {
        args: args.clone(),
        writer,
        data_fd,
        meta_ro,
        data_ro,
        geo,
        _maps: (meta_map, data_map),
        spill_budget: args
            .spill_dir
            .as_ref()
            .map(|_| args.memory_mib.max(8) << 20),
        spilled_to: 0,
        writeback_to: 0,
        zero_set: false,
        dirty: false,
        grace: None,
        rebase_to: None,
        dts_shift: 0,
        pulled,
    };
    if args.event {
        b.writer.set_flags(shm::FLAG_EVENT);
    }
    let mut puller = pulled.then(Puller::new);
    if pulled {
        b.writer.set_state(shm::STATE_LIVE);
    }

    if let Some(ix) = file.as_ref().and_then(|f| f.index.as_ref()) {
        b.log(&ix.to_string());
    }
    let mut input = match file {
        None => None,
        Some(f) if args.once => {
            b.set_tracks(&f.tracks.clone());
            let wall = now_ms();
            for p in f.packets_from_zero() {
                b.append(&p.as_ref(), wall);
            }
            b.writer.set_state(shm::STATE_ENDED);
            b.log(&format!(
                "holding all of {} ({} ms) as an ended stream",
                args.source,
                f.duration_ms()
            ));
            None
        }
        Some(f) => {
            b.set_tracks(&f.tracks.clone());
            b.writer.set_state(shm::STATE_LIVE);
            b.log(&format!("playing {} as a live loop", args.source));
            Some(f)
        }
    };

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1usize;
    let mut events = Events::with_capacity(64);
    let mut idle_since = Some(Instant::now());
    let mut ended_at: Option<Instant> = None;
    let mut buf = vec![0u8; 256 << 10];
    b.log("ready");

    loop {
        let now = Instant::now();
        let mut timeout = Duration::from_millis(250);
        if let Some(f) = &input {
            timeout = timeout.min(f.next_due().saturating_duration_since(now));
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        if term.load(Ordering::SeqCst) {
            b.log("stopping");
            break;
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let t = Token(next_token);
                            next_token += 1;
                            poll.registry().register(&mut sock, t, Interest::READABLE)?;
                            conns.insert(
                                t,
                                Conn {
                                    sock,
                                    role: Role::New,
                                    inbuf: Vec::new(),
                                    finished: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let t = ev.token();
            let mut close = false;
            if let Some(c) = conns.get_mut(&t) {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if let Some(mut c) = conns.remove(&t) {
                if let Err(e) = handle_input(&mut b, &mut c, input.is_some(), &mut ended_at) {
                    b.log(&format!("dropping a client: {e:#}"));
                    close = true;
                }
                if close {
                    if matches!(c.role, Role::Publisher) && b.pulled {
                        b.log("pull process left");
                    } else if matches!(c.role, Role::Publisher)
                        && !c.finished
                        && args.grace_ms > 0
                        && b.writer.meta().state() == shm::STATE_LIVE
                    {
                        b.log(&format!(
                            "publisher left without ending its publish; the stream stays live \
                             for {} ms for it to come back",
                            args.grace_ms
                        ));
                        let now = Instant::now();
                        b.grace = Some(Grace {
                            until: now + Duration::from_millis(args.grace_ms),
                            left: now,
                            last_dts: b.last_dts(),
                        });
                    } else if matches!(c.role, Role::Publisher) {
                        b.log("publisher left; stream ended");
                        b.writer.set_state(shm::STATE_ENDED);
                        b.dirty = true;
                        ended_at = Some(Instant::now());
                    }
                    let _ = poll.registry().deregister(&mut c.sock);
                } else {
                    conns.insert(t, c);
                }
            }
        }
        if let Some(f) = &mut input {
            let now = Instant::now();
            while let Some(p) = f.poll(now) {
                let wall = now_ms() - now.saturating_duration_since(f.start()).as_millis() as i64;
                b.append(&p.as_ref(), wall);
            }
        }
        let viewers = conns
            .values()
            .filter(|c| matches!(c.role, Role::Viewer))
            .count() as u32;
        let publishers = conns
            .values()
            .filter(|c| matches!(c.role, Role::Publisher))
            .count() as u32;
        b.writer.set_counts(viewers, publishers);
        b.wake();

        // Idle and end-of-stream bookkeeping.
        let now = Instant::now();
        // An ended stream is served for linger_ms whatever the viewer count (HLS players
        // fetch with short connections); the idle rule applies otherwise.
        if let Some(p) = &mut puller {
            p.keep(&b);
        }
        if publishers == 0 && b.grace.as_ref().is_some_and(|g| now >= g.until) {
            b.grace = None;
            b.log(&format!(
                "publisher did not come back within {} ms; stream ended",
                args.grace_ms
            ));
            b.writer.set_state(shm::STATE_ENDED);
            b.dirty = true;
            b.wake();
            ended_at = Some(now);
        }
        let idle = viewers == 0 && (publishers == 0 || b.pulled) && !args.always_on;
        if idle && ended_at.is_none() && b.grace.is_none() {
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_millis(args.idle_ms) {
                b.log("idle; exiting");
                break;
            }
        } else {
            idle_since = None;
        }
        if let Some(at) = ended_at {
            if publishers == 0 && now.duration_since(at) >= Duration::from_millis(args.linger_ms) {
                b.log("ended stream served long enough; exiting");
                break;
            }
        }
    }
    if let Some(p) = &mut puller {
        p.stop();
    }
    b.writer.set_state(shm::STATE_ENDED);
    b.dirty = true;
    b.wake();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn handle_input(
    b: &mut Buffer,
    c: &mut Conn,
    has_input: bool,
    ended_at: &mut Option<Instant>,
) -> Result<()> {
    let mut used = 0;
    let wall = now_ms();
    while let Some((frame, n)) = wire::parse_frame(&c.inbuf[used..])? {
        used += n;
        match (&c.role, frame) {
            (Role::New, Frame::Command(v)) => {
                let fds = [b.meta_ro.as_raw_fd(), b.data_ro.as_raw_fd()];
                let ok = BufferReply::Attached {
                    meta_size: b.geo.meta_size() as u64,
                    data_size: b.geo.data_size,
                };
                let mode = match BufferRequest::from_value(&v) {
                    Ok(BufferRequest::Attach(mode)) => mode,
                    Ok(other) => anyhow::bail!("{other:?} before attaching"),
                    Err(e) => anyhow::bail!("attach: {e}"),
                };
                match mode {
                    AttachMode::Play => {
                        ipc::socket::send(&c.sock, &ok, &fds)?;
                        c.role = Role::Viewer;
                    }
                    AttachMode::Observe => {
                        ipc::socket::send(&c.sock, &ok, &fds)?;
                        c.role = Role::Observer;
                    }
                    AttachMode::Push => {
                        let refuse = if has_input {
                            Some("the stream has a file source")
                        } else if b.writer.meta().publishers() > 0 {
                            Some("another publisher is live on this stream")
                        } else {
                            None
                        };
                        if let Some(reason) = refuse {
                            let err = BufferReply::Error {
                                reason: reason.into(),
                            };
                            let _ = ipc::socket::send(&c.sock, &err, &[]);
                            anyhow::bail!("push refused: {reason}");
                        }
                        if b.writer.meta().state() == shm::STATE_ENDED {
                            b.writer.reset_window();
                        }
                        // A pull process that comes back continues the stream's times; so
                        // does a publisher back within its grace time (moved on by the time
                        // it was away).
                        b.dts_shift = 0;
                        b.rebase_to = None;
                        if let Some(g) = b.grace.take() {
                            let away = g.left.elapsed().as_millis() as u64;
                            b.rebase_to = Some(g.last_dts.saturating_add(away.max(1)));
                            b.log(&format!(
                                "publisher came back after {away} ms; the stream goes on from \
                                 {} ms",
                                g.last_dts.saturating_add(away.max(1))
                            ));
                        } else {
                            b.zero_set &= b.pulled;
                        }
                        *ended_at = None;
                        ipc::socket::send(&c.sock, &ok, &fds)?;
                        c.role = Role::Publisher;
                        b.writer.set_counts(b.writer.meta().viewers(), 1);
                        b.log("publisher attached");
                    }
                }
            }
            (Role::Publisher, Frame::Header(v)) => {
                let h = Header::from_value(&v)?;
                b.set_tracks(&h.tracks);
                if b.writer.meta().state() != shm::STATE_LIVE {
                    b.writer.set_state(shm::STATE_LIVE);
                }
            }
            (Role::Publisher, Frame::Packet(mut p)) => {
                if let Some(to) = b.rebase_to.take() {
                    b.dts_shift = to as i64 - p.dts as i64;
                }
                if b.dts_shift != 0 {
                    p.dts = (p.dts as i64).saturating_add(b.dts_shift).max(0) as u64;
                }
                b.append(&p, wall);
            }
            (role, Frame::Command(v)) => match BufferRequest::from_value(&v) {
                Ok(BufferRequest::Unpublish) if matches!(role, Role::Publisher) => {
                    c.finished = true;
                }
                Ok(BufferRequest::Ping) => {}
                _ => anyhow::bail!("unexpected command for this client's role"),
            },
            _ => anyhow::bail!("unexpected frame for this client's role"),
        }
    }
    c.inbuf.drain(..used);
    if c.inbuf.len() > 64 << 20 {
        anyhow::bail!("more than 64 MiB of unparsed input");
    }
    Ok(())
}
