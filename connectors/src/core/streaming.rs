//! The one connection loop every streaming output shares (MistServer's `Output` base, as a
//! trait and a function): after a protocol has opened the stream ([`crate::core::cursor::Cursor`])
//! and answered its client, [`stream`] pumps packets from shared memory to the socket until
//! the stream ends or the client leaves.
//!
//! An [`Output`] turns a packet into bytes of its format by adding to a [`Batch`]: small
//! headers it builds are copied into the batch, payloads are added as slices of the shared
//! pages. A batch holds every packet available at one wake-up and leaves in one `writev`, so
//! a viewer costs one `writev` and one futex wait per wake, whatever the format. What the
//! socket does not take is copied aside and sent first on the next round.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use dtsc::shm::StreamReader;
use dtsc::{PacketRef, Track};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::core::cursor::{Cursor, Next, StartPolicy};

/// One streaming format, driven by [`stream`]. `'m` is the lifetime of the stream's shared
/// mapping: an output may keep packets of the current batch until [`Output::flush`].
pub trait Output<'m> {
    /// Init data for `tracks`: at the start (`first` true) and again whenever the stream's
    /// tracks change. `start_ms` is the DTS of the first packet that will follow.
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()>;

    /// One packet of track `t`.
    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()>;

    /// The batch is complete: add whatever was held back (for example a movie fragment
    /// built from the batch's packets). Called before init data for new tracks too.
    fn flush(&mut self, _b: &mut Batch<'m>) -> Result<()> {
        Ok(())
    }

    /// How long packet `p` must wait before it may go, for outputs sent at real time (RTSP
    /// of a stored stream); `None` (the default): now. A packet that must wait ends the
    /// batch, and the loop sleeps (reading client input every 100 ms) until it is due.
    fn pace(&mut self, _p: &PacketRef<'m>) -> Option<Duration> {
        None
    }

    /// Bytes the client sent, and what they ask of the loop (RTMP `deleteStream` is
    /// [`Asked::Stop`], its `seek` [`Asked::Seek`]). The default ignores input.
    fn input(&mut self, _bytes: &[u8]) -> Result<Asked> {
        Ok(Asked::Nothing)
    }

    /// The loop moved to the keyframe at `dts` (ms) after an [`Asked::Seek`]: the answer to
    /// the client (RTMP `NetStream.Seek.Notify`) goes into [`Output::control`]'s bytes. Init
    /// data follows, then the packets from that keyframe.
    fn seeked(&mut self, _dts: u64) -> Result<()> {
        Ok(())
    }

    /// Bytes to send that are not packets (RTMP acknowledgements, ping responses), appended
    /// to `out`. Sent before the next batch.
    fn control(&mut self, _out: &mut Vec<u8>) {}

    /// The end of the stream (appended to `out`; sent after every packet was acknowledged).
    fn end(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// An output borrowed for a while (the form [`Resumable`] lends a long-lived output in).
impl<'m, O: Output<'m> + ?Sized> Output<'m> for &mut O {
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        (**self).init(tracks, start_ms, first, b)
    }
    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        (**self).packet(t, p, b)
    }
    fn flush(&mut self, b: &mut Batch<'m>) -> Result<()> {
        (**self).flush(b)
    }
    fn pace(&mut self, p: &PacketRef<'m>) -> Option<Duration> {
        (**self).pace(p)
    }
    fn input(&mut self, bytes: &[u8]) -> Result<Asked> {
        (**self).input(bytes)
    }
    fn seeked(&mut self, dts: u64) -> Result<()> {
        (**self).seeked(dts)
    }
    fn control(&mut self, out: &mut Vec<u8>) {
        (**self).control(out)
    }
    fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        (**self).end(out)
    }
}

/// An output that goes on from a new buffer after the stream's buffer died
/// ([`stream_resuming`]): for each buffer's mapping (`'m`), it lends an [`Output`] made from
/// the state that carries over (sequence numbers, the tracks announced).
///
/// Every output that keeps no packet across batches (`for<'m> Output<'m>`) is one as it is;
/// an output that holds packets until [`Output::flush`] (fragmented MP4) keeps its lasting
/// state apart and builds the holding part anew per mapping.
pub trait Resumable {
    /// The output for one mapping.
    type Out<'m>: Output<'m>
    where
        Self: 'm;
    /// An output for the next mapping, carrying on from this state.
    fn output<'m>(&'m mut self) -> Self::Out<'m>;
}

impl<O: for<'m> Output<'m>> Resumable for O {
    type Out<'m>
        = &'m mut O
    where
        Self: 'm;
    fn output(&mut self) -> &mut O {
        self
    }
}

/// One byte range of a batch, in send order.
#[derive(Debug, Clone)]
enum Seg {
    /// Bytes of `Batch::own`.
    Own(Range<usize>),
    /// Bytes of payload `n`.
    Data(usize, Range<usize>),
}

/// The bytes of one `writev`: headers copied in, payloads borrowed from the shared pages
/// (`'m`: the mapping's lifetime).
#[derive(Default)]
pub struct Batch<'m> {
    own: Vec<u8>,
    payloads: Vec<&'m [u8]>,
    segs: Vec<Seg>,
    bytes: usize,
    first_seq: Option<u64>,
}

/// Most iovecs one batch uses (Linux allows 1024 per writev).
const MAX_SEGS: usize = 512;
/// Most bytes one batch sends.
const MAX_BATCH_BYTES: usize = 512 << 10;

impl<'m> Batch<'m> {
    fn clear(&mut self) {
        self.own.clear();
        self.payloads.clear();
        self.segs.clear();
        self.bytes = 0;
        self.first_seq = None;
    }

    /// True when the batch holds as much as one `writev` should take.
    pub fn full(&self) -> bool {
        self.segs.len() + 32 > MAX_SEGS || self.bytes > MAX_BATCH_BYTES
    }

    /// Notes that the batch holds (from) the packet numbered `seq`, so that a writer can
    /// check afterwards that its payloads were not overwritten meanwhile
    /// ([`Batch::first_seq`], `Cursor::still_valid`).
    pub fn note_seq(&mut self, seq: u64) {
        self.first_seq.get_or_insert(seq);
    }

    /// The first packet number noted since the batch was last emptied.
    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// Writes the whole batch to `w` (a recording's file), in order, with one `writev` per
    /// [`MAX_SEGS`] segments (more only when `w` takes part of them), then empties it.
    /// Returns the bytes written.
    pub fn drain_to(&mut self, w: &mut impl Write) -> std::io::Result<u64> {
        let (mut seg, mut off) = (0, 0);
        while seg < self.segs.len() {
            let empty: &[u8] = &[];
            let mut iov = [IoSlice::new(empty); MAX_SEGS];
            let mut n = 0;
            for (slot, s) in iov.iter_mut().zip(&self.segs[seg..]) {
                let b = self.slice(s);
                *slot = IoSlice::new(if n == 0 { &b[off..] } else { b });
                n += 1;
            }
            let mut written = match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while written > 0 {
                let rest = self.slice(&self.segs[seg]).len() - off;
                if written >= rest {
                    written -= rest;
                    (seg, off) = (seg + 1, 0);
                } else {
                    off += written;
                    written = 0;
                }
            }
        }
        let n = self.bytes as u64;
        self.clear();
        Ok(n)
    }

    /// Copies `bytes` into the batch (merged with a directly preceding copy).
    pub fn own(&mut self, bytes: &[u8]) {
        let start = self.own.len();
        self.own.extend_from_slice(bytes);
        self.bytes += bytes.len();
        self.extend_own(start);
    }

    /// Lets `f` append bytes to the batch's own buffer (for writers that take a `Vec`).
    pub fn own_with<T>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        let start = self.own.len();
        let r = f(&mut self.own);
        self.bytes += self.own.len() - start;
        self.extend_own(start);
        r
    }

    fn extend_own(&mut self, start: usize) {
        let end = self.own.len();
        if start == end {
            return;
        }
        if let Some(Seg::Own(r)) = self.segs.last_mut() {
            if r.end == start {
                r.end = end;
                return;
            }
        }
        self.segs.push(Seg::Own(start..end));
    }

    /// Adds `bytes` (a slice of the shared pages) without copying it.
    pub fn data(&mut self, bytes: &'m [u8]) {
        if bytes.is_empty() {
            return;
        }
        let n = match self.payloads.last() {
            Some(last) if std::ptr::eq(*last, bytes) => self.payloads.len() - 1,
            _ => {
                self.payloads.push(bytes);
                self.payloads.len() - 1
            }
        };
        self.segs.push(Seg::Data(n, 0..bytes.len()));
        self.bytes += bytes.len();
    }

    /// Adds `bytes[range]` of a payload already added with [`Batch::data`] or new.
    pub fn data_range(&mut self, bytes: &'m [u8], range: Range<usize>) {
        self.data(&bytes[range])
    }

    fn slice(&self, s: &Seg) -> &[u8] {
        match s {
            Seg::Own(r) => &self.own[r.clone()],
            Seg::Data(n, r) => &self.payloads[*n][r.clone()],
        }
    }

    /// Frames the batch as one HTTP/1.1 chunk (RFC 9112 §7.1): size line first, CRLF last.
    fn frame_chunked(&mut self) {
        let len = self.bytes;
        let start = self.own.len();
        let _ = write!(self.own, "{len:x}\r\n");
        self.segs.insert(0, Seg::Own(start..self.own.len()));
        self.own(b"\r\n");
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Writes the batch with one writev (when nothing is pending); what the socket does not
    /// take is copied to `pending`. Errors with [`PeerGone`] when the client left.
    fn send(&self, sock: &mut TcpStream, pending: &mut Vec<u8>) -> Result<()> {
        let written = if pending.is_empty() {
            let empty: &[u8] = &[];
            let mut iov = [IoSlice::new(empty); MAX_SEGS];
            let n = self.segs.len().min(MAX_SEGS);
            for (slot, s) in iov.iter_mut().zip(&self.segs) {
                *slot = IoSlice::new(self.slice(s));
            }
            match sock.write_vectored(&iov[..n]) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
                Err(e) if peer_gone(&e) => return Err(PeerGone.into()),
                Err(e) => return Err(anyhow!("writing to the client: {e}")),
            }
        } else {
            0
        };
        let mut skip = written;
        for s in &self.segs {
            let b = self.slice(s);
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            pending.extend_from_slice(&b[skip..]);
            skip = 0;
        }
        Ok(())
    }
}

/// The client closed its connection: the session ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("the client left")]
pub struct PeerGone;

/// Whether a client is taking what it is sent: its TCP socket's acknowledged byte count
/// (`TCP_INFO.tcpi_bytes_acked`) grew, or nothing waits for it, in the kernel (`SIOCOUTQ`)
/// or in the process. The kernel keeps growing a socket's send buffer (up to `tcp_wmem`'s
/// maximum, 4 MiB) for a client whose window is shut, so a `write` that succeeds says
/// nothing: only an acknowledgement is progress. Asked at most every 250 ms. A socket that
/// is not TCP (a TLS connection's plaintext pair without its TCP socket noted) counts
/// accepted writes instead.
struct Drain {
    fd: std::os::fd::RawFd,
    acked: Option<u64>,
    checked: Instant,
    last: bool,
}

impl Drain {
    fn new(sock: &TcpStream) -> Drain {
        let fd = sock.as_raw_fd();
        Drain {
            fd,
            acked: acked_bytes(fd),
            checked: Instant::now(),
            last: true,
        }
    }

    /// True when the socket is TCP (acknowledgements are known).
    fn is_tcp(&self) -> bool {
        self.acked.is_some()
    }

    /// True when the client made progress since the last call (or has nothing waiting);
    /// `nothing_pending`: the process holds no bytes for it.
    fn progressed(&mut self, nothing_pending: bool) -> bool {
        if self.checked.elapsed() < Duration::from_millis(250) {
            return self.last;
        }
        self.checked = Instant::now();
        let acked = acked_bytes(self.fd);
        self.last = match (acked, self.acked) {
            (Some(now), Some(before)) => {
                let mut queued: libc::c_int = 0;
                // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket.
                let r = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued) };
                now > before || (nothing_pending && (r != 0 || queued == 0))
            }
            // Not TCP: what the socket accepted is all there is to go by.
            _ => nothing_pending,
        };
        self.acked = acked.or(self.acked);
        self.last
    }
}

/// `tcpi_bytes_acked` of the TCP socket `fd` (None: not a TCP socket).
fn acked_bytes(fd: std::os::fd::RawFd) -> Option<u64> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` stays open for the borrow (the caller's socket outlives the loop), and
    // ManuallyDrop keeps this temporary from closing it.
    let sock = std::mem::ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    ipc::sessions::tcp_info(&sock).map(|i| i.0)
}

/// A viewer that does not take what it is sent is dropped ([`crate::core::limits::Limits::stall`],
/// [`crate::core::limits::Limits::max_queued`]): a stalled reader costs one process's bounded
/// buffer, never the buffer's memory or other viewers' time.
#[derive(Debug, thiserror::Error)]
pub enum Stalled {
    /// Its socket took no byte for this many seconds, with this many bytes waiting.
    #[error("stalled: took nothing for {0} s with {1} bytes waiting; dropping the viewer")]
    NotReading(u64, usize),
    /// More bytes (first) waited for its socket than the limit (second).
    #[error("stalled: {0} bytes waiting for the socket (limit {1}); dropping the viewer")]
    Queued(usize, usize),
}

/// True for the errors that mean the peer went away (not worth an error log line).
pub fn peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// Waits until the kernel's send queue of `sock` is empty (every byte acknowledged by the
/// peer), at most `limit`.
pub fn wait_until_sent(sock: &TcpStream, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if r != 0 || queued == 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How the bytes of a stream are framed on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// As they are (RTMP, raw TCP, HTTP/1.0 responses ended by closing).
    Raw,
    /// HTTP/1.1 chunked transfer coding: one chunk per batch, the last chunk at the end.
    HttpChunked,
}

/// What a client's input asks of [`stream`]'s loop ([`Output::input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Nothing: go on.
    Nothing,
    /// Stop streaming (RTMP `deleteStream`, RTSP `TEARDOWN`).
    Stop,
    /// Go on from the keyframe nearest this DTS, ms on the stream's timeline (RTMP `seek`;
    /// a stored stream, or a live one within its DVR window).
    Seek(u64),
}

/// How a streaming session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The source ended; the output's end was sent.
    StreamEnded,
    /// The client left or asked to stop.
    ClientLeft,
    /// The stream's buffer died ([`stream_resuming`] then reattaches).
    BufferGone,
}

/// Pumps packets from `cursor` (already positioned; `reader` is a copy of its
/// [`Cursor::reader`], which the caller keeps for as long as `output` may hold packets) to
/// `sock` through `output`, starting with
/// `pending` (bytes the protocol already has to send, such as a response head), until the
/// stream ends or the client leaves. Client input is read every 100 ms (or while the socket
/// is full), not once per packet.
pub fn stream<'m, O: Output<'m>>(
    sock: &mut TcpStream,
    cursor: &mut Cursor,
    reader: &'m StreamReader,
    output: &mut O,
    pending: Vec<u8>,
    framing: Framing,
) -> Result<Ended> {
    stream_from(sock, cursor, reader, output, pending, framing, Start::First)
}

/// [`stream`], and when the stream's buffer dies (its process crashed or was killed), the
/// stream is opened again ([`Cursor::reattach`]: the controller starts a new buffer and the
/// publisher reattaches to it) and the output goes on from the new buffer's first keyframe,
/// with init data again (not a new file header). A publisher sends its current GOP to the new
/// buffer again (`publisher::Publisher`): packets of a track up to the DTS this viewer already
/// had are skipped, so the viewer goes on where it was, without a repeat or a wait for the
/// next keyframe. Gives up, as an error, when no new buffer has media within 5 s.
pub fn stream_resuming<R: Resumable>(
    sock: &mut TcpStream,
    cursor: &mut Cursor,
    output: &mut R,
    pending: Vec<u8>,
    framing: Framing,
) -> Result<Ended> {
    let mut pending = pending;
    let mut start = Start::First;
    loop {
        let reader = *cursor.reader();
        let ended = stream_from(
            sock,
            cursor,
            &reader,
            &mut output.output(),
            std::mem::take(&mut pending),
            framing,
            start,
        )?;
        if ended != Ended::BufferGone {
            return Ok(ended);
        }
        start = Start::Resumed(cursor.newest_read_dts());
        match cursor.reattach(Duration::from_secs(5)) {
            Some(c) => {
                *cursor = c;
            }
            None => bail!("the stream's buffer is gone and no new one had media within 5 s"),
        }
    }
}

/// Where a run of [`stream_from`] starts.
enum Start {
    /// The response's start: init data as the first.
    First,
    /// A new buffer's first keyframe: init data again, and per track the newest DTS the
    /// viewer already had (those packets are skipped).
    Resumed(Vec<(u32, u64)>),
}

fn stream_from<'m, O: Output<'m>>(
    sock: &mut TcpStream,
    cursor: &mut Cursor,
    reader: &'m StreamReader,
    output: &mut O,
    mut pending: Vec<u8>,
    framing: Framing,
    start: Start,
) -> Result<Ended> {
    sock.set_nonblocking(true)?;
    let mut tracks: Vec<Track> = cursor.tracks().to_vec();
    let mut batch = Batch::default();
    let (mut init, mut had) = match start {
        Start::First => (Some(true), Vec::new()),
        Start::Resumed(had) => (Some(false), had),
    };
    let mut checked = Instant::now();
    let limits = crate::core::limits::get();
    // When the client last acknowledged a byte, or had nothing waiting (`Drain`).
    let tcp = ipc::sessions::counted().unwrap_or(sock);
    if limits.send_buffer > 0 {
        // A client that reads nothing then holds at most this much kernel memory.
        let n = limits.send_buffer.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: SO_SNDBUF reads one int.
        unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&n as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let mut drain = Drain::new(tcp);
    let mut progress = Instant::now();
    let mut rbuf = vec![0u8; 2 << 10];
    let mut next_read = Instant::now();
    loop {
        ipc::sessions::update(Some(sock), false);
        let now = Instant::now();
        if now >= next_read || !pending.is_empty() {
            next_read = now + Duration::from_millis(100);
            loop {
                match sock.read(&mut rbuf) {
                    Ok(0) => return Ok(Ended::ClientLeft),
                    Ok(n) => match output.input(&rbuf[..n])? {
                        Asked::Nothing => {}
                        Asked::Stop => {
                            // The client asked to stop: what the output still has to say
                            // (an RTSP TEARDOWN's response) goes out first, best effort.
                            output.control(&mut pending);
                            let _ = sock.set_nonblocking(false);
                            let _ = sock.set_write_timeout(Some(Duration::from_secs(1)));
                            let _ = sock.write_all(&pending);
                            return Ok(Ended::ClientLeft);
                        }
                        Asked::Seek(ms) => {
                            // Bytes already queued still go (the client drops them until
                            // the seek's answer), then init data and the new position.
                            let dts = cursor.start(StartPolicy::Nearest(ms)).unwrap_or(ms);
                            output.seeked(dts)?;
                            had.clear();
                            init = Some(false);
                        }
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if peer_gone(&e) => return Ok(Ended::ClientLeft),
                    Err(e) => return Err(anyhow!("reading from the client: {e}")),
                }
            }
        }
        output.control(&mut pending);
        if pending.len() > limits.max_queued {
            return Err(Stalled::Queued(pending.len(), limits.max_queued).into());
        }
        if drain.progressed(pending.is_empty()) {
            progress = Instant::now();
        } else if progress.elapsed() >= limits.stall {
            return Err(Stalled::NotReading(limits.stall.as_secs(), pending.len()).into());
        }
        if !pending.is_empty() {
            match sock.write(&pending) {
                Ok(n) => {
                    if n > 0 && !drain.is_tcp() {
                        progress = Instant::now();
                    }
                    pending.drain(..n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) if peer_gone(&e) => return Ok(Ended::ClientLeft),
                Err(e) => return Err(anyhow!("writing to the client: {e}")),
            }
            if !pending.is_empty() {
                let mut fds = [PollFd::new(
                    sock.as_fd(),
                    PollFlags::POLLIN | PollFlags::POLLOUT,
                )];
                let _ = poll(&mut fds, PollTimeout::from(200u16));
                continue;
            }
        }
        // Every packet available now, in one writev.
        batch.clear();
        let mut ended = false;
        let mut wait = None;
        let mut hold = None;
        loop {
            if batch.full() {
                break;
            }
            match cursor.next_packet() {
                Next::Packet(seq, _) => {
                    let Some(p) = reader.packet(seq) else {
                        continue;
                    };
                    // After a new buffer: what the viewer already had of a track is skipped.
                    if !had.is_empty() {
                        if let Some(i) = had.iter().position(|&(t, _)| t == p.track) {
                            if p.dts <= had[i].1 {
                                continue;
                            }
                            had.swap_remove(i);
                        }
                    }
                    if let Some(d) = output.pace(&p) {
                        cursor.seek_seq(seq);
                        hold = Some(d);
                        break;
                    }
                    if let Some(first) = init.take() {
                        output.init(&tracks, p.dts, first, &mut batch)?;
                    }
                    let Some(t) = tracks.iter().find(|t| t.id == p.track) else {
                        continue;
                    };
                    output.packet(t, p, &mut batch)?;
                    batch.note_seq(seq);
                }
                Next::TracksChanged => {
                    output.flush(&mut batch)?;
                    tracks = cursor.tracks().to_vec();
                    init = Some(false);
                    break;
                }
                Next::Wait(seen) => {
                    wait = Some(seen);
                    break;
                }
                Next::Ended => {
                    ended = true;
                    break;
                }
            }
        }
        output.flush(&mut batch)?;
        if !batch.is_empty() {
            if framing == Framing::HttpChunked {
                batch.frame_chunked();
            }
            match batch.send(sock, &mut pending) {
                Err(e) if e.is::<PeerGone>() => return Ok(Ended::ClientLeft),
                r => r?,
            }
            if let Some(first) = batch.first_seq {
                if !cursor.still_valid(first) {
                    bail!("fell out of the window while sending; dropping the client");
                }
            }
        }
        if ended {
            // Every packet first, acknowledged by the client's TCP stack, then the end: some
            // players (GStreamer's rtmp2src) stop at an end notice even with media queued
            // ahead of it.
            sock.set_nonblocking(false)?;
            sock.set_write_timeout(Some(Duration::from_secs(5)))?;
            output.control(&mut pending);
            if sock.write_all(&pending).is_err() {
                return Ok(Ended::ClientLeft);
            }
            pending.clear();
            wait_until_sent(sock, Duration::from_secs(2));
            output.end(&mut pending)?;
            if framing == Framing::HttpChunked {
                pending.extend_from_slice(b"0\r\n\r\n");
            }
            let _ = sock.write_all(&pending);
            return Ok(Ended::StreamEnded);
        }
        if let Some(seen) = wait {
            if pending.is_empty() {
                cursor.wait(seen, Duration::from_millis(100));
            }
            // Nothing new: is the buffer still there? (A dead buffer's stream never ends.)
            // Asked only once everything read was sent: what follows skips by that.
            if pending.is_empty() && checked.elapsed() >= Duration::from_millis(250) {
                checked = Instant::now();
                if cursor.buffer_gone() {
                    return Ok(Ended::BufferGone);
                }
            }
        }
        if let Some(d) = hold {
            if pending.is_empty() {
                std::thread::sleep(d.min(Duration::from_millis(100)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that takes at most `max` bytes per call, counting its calls.
    struct Slow {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drain_to_writes_every_segment_in_order_whatever_each_write_takes() {
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + i as usize % 9]).collect();
        let mut want = Vec::new();
        for max in [1, 7, 64, 1 << 20] {
            let mut batch = Batch::default();
            want.clear();
            for p in &payloads {
                batch.own(&[0xAA, p[0]]);
                batch.data(p);
                want.extend_from_slice(&[0xAA, p[0]]);
                want.extend_from_slice(p);
            }
            let mut w = Slow {
                got: Vec::new(),
                max,
                calls: 0,
            };
            assert_eq!(batch.drain_to(&mut w).unwrap(), want.len() as u64);
            assert_eq!(w.got, want, "max {max}");
            assert!(batch.is_empty());
            if max == 1 << 20 {
                assert_eq!(w.calls, 1, "one writev for the whole batch");
            }
        }
    }
}
