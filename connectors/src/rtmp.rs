//! The RTMP connector: one process per connection. The protocol is `dtsc::rtmp` (sans-IO);
//! this file is the thin loop around it. A publisher's media goes through `dtsc::flv`'s
//! ingest into DTP2 frames written to the stream's buffer; a player is served from shared
//! memory with `writev`, its payloads never copied in user space (FLV body header and chunk
//! headers are built per packet, the payload is a slice of the mapped page).

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use buffer::ipc::{self, Mode};
use dtsc::flv::{self, FlvIngest, IngestEvent, TagKind};
use dtsc::rtmp::chunk::Span;
use dtsc::rtmp::session::{Event, MediaKind, ServerConfig, ServerSession};
use dtsc::wire::{self, Header};
use dtsc::{Codec, PacketRef, Track, TrackKind};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::control::{self, OpenError};
use crate::cursor::{Cursor, Next};
use crate::listener::set_process_name;
use crate::Ctx;

const PROTO: &str = "RTMP";
/// How long a player of a configured but idle stream waits for a publisher.
const PLAY_WAIT: Duration = Duration::from_secs(10);
/// How long the command phase may take before the client is dropped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// Splits a publish/play name into the stream name and the key from its query string
/// (`name?key=K`, or MistServer-style `name?K`).
pub fn split_name(name: &str) -> (String, Option<String>) {
    let (stream, query) = match name.split_once('?') {
        Some((s, q)) => (s, Some(q)),
        None => (name, None),
    };
    // Some encoders put app/stream into the name; the stream is the last path element.
    let stream = stream.rsplit('/').next().unwrap_or(stream).to_string();
    let key = query.map(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .unwrap_or(q)
            .to_string()
    });
    (stream, key.filter(|k| !k.is_empty()))
}

fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 32)
}

fn flush(sock: &mut TcpStream, session: &mut ServerSession) -> Result<()> {
    let out = session.take_output();
    if !out.is_empty() {
        sock.write_all(&out).context("writing to the client")?;
    }
    Ok(())
}

/// Serves one RTMP connection.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    let peer = sock
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let mut session = ServerSession::new(ServerConfig {
        random_seed: seed(),
        ..ServerConfig::default()
    });
    // Small: a forked viewer's private memory is mostly its buffers (docs/PERFORMANCE.md);
    // a player sends a few hundred bytes of commands. A publisher's loop grows it.
    let mut buf = vec![0u8; 4 << 10];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("{peer}: no command within {COMMAND_TIMEOUT:?}")
            }
            Err(e) => return Err(e.into()),
        };
        let fed = session.handle_input(&buf[..n]);
        // Whatever the session answered goes out first, even before an error closes it.
        flush(&mut sock, &mut session)?;
        fed.map_err(|e| anyhow!("{peer}: {e}"))?;
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Publish { name, .. } => {
                    return publish(sock, session, ctx, &peer, &name, buf);
                }
                Event::Play { name, .. } => return play(sock, session, ctx, &peer, &name),
                Event::DeleteStream { .. } | Event::CloseStream { .. } => {}
                _ => {}
            }
        }
    }
}

fn publish(
    mut sock: TcpStream,
    mut session: ServerSession,
    ctx: &Ctx,
    peer: &str,
    name: &str,
    mut buf: Vec<u8>,
) -> Result<()> {
    set_process_name("RTMP publish");
    let (stream, key) = split_name(name);
    let attached = control::open(&ctx.rundir, &stream, true, peer, key.as_deref())
        .map_err(|e| anyhow!("{e}"))
        .and_then(|path| ipc::attach(&path, Mode::Push));
    let mut attached = match attached {
        Ok(a) => a,
        Err(e) => {
            let code = if e.to_string().contains("publisher is live") {
                "NetStream.Publish.BadName"
            } else {
                "NetStream.Publish.Denied"
            };
            let _ = session.reject_publish(code, &format!("{e:#}"));
            let _ = flush(&mut sock, &mut session);
            bail!("{peer}: publish to {stream} refused: {e:#}");
        }
    };
    session.accept_publish()?;
    flush(&mut sock, &mut session)?;
    crate::log!(PROTO, "{peer} publishes {stream}");
    buf.resize(64 << 10, 0);
    // An encoder that stops sending for this long is gone.
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut ingest = FlvIngest::new();
    let mut header_sent = false;
    let mut frames = Vec::with_capacity(256 << 10);
    let mut packets = 0u64;
    loop {
        // Events first: the session may hold media that came with the publish command.
        let mut done = false;
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    let tag = match kind {
                        MediaKind::Audio => TagKind::Audio,
                        MediaKind::Video => TagKind::Video,
                        MediaKind::Data => TagKind::Script,
                    };
                    match ingest.push_tag(tag, timestamp, &payload) {
                        Ok(Some(IngestEvent::TracksChanged)) => {
                            let h = Header {
                                live: true,
                                unixzero: None,
                                tracks: ingest.tracks().to_vec(),
                            };
                            wire::write_header(&h, &mut frames);
                            header_sent = true;
                        }
                        Ok(Some(IngestEvent::Packet(p))) if header_sent => {
                            wire::write_packet(&p, &mut frames);
                            packets += 1;
                        }
                        Ok(_) => {}
                        Err(e) => crate::log!(PROTO, "{peer}: {stream}: dropped a message: {e}"),
                    }
                }
                Event::Unpublish { .. }
                | Event::DeleteStream { .. }
                | Event::CloseStream { .. } => done = true,
                _ => {}
            }
        }
        if !frames.is_empty() {
            attached
                .sock
                .write_all(&frames)
                .context("writing to the buffer")?;
            frames.clear();
        }
        if done {
            break;
        }
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("{peer}: publisher of {stream} sent nothing for 30 s")
            }
            Err(e) => return Err(anyhow!("{peer}: reading from the publisher: {e}")),
        };
        let fed = session.handle_input(&buf[..n]);
        flush(&mut sock, &mut session)?;
        fed.map_err(|e| anyhow!("{peer}: {e}"))?;
    }
    crate::log!(
        PROTO,
        "{peer} stopped publishing {stream} after {packets} packets"
    );
    Ok(())
}

fn not_found(sock: &mut TcpStream, session: &mut ServerSession, stream: &str) -> Result<()> {
    session.reject_play_not_found(stream)?;
    flush(sock, session)
}

/// Sends init data: onMetaData and the sequence headers of every track.
fn send_init(session: &mut ServerSession, tracks: &[Track], ts: u64) -> Result<()> {
    let md = flv::on_metadata(tracks);
    session.send_metadata(&md[1..])?;
    let mut body = Vec::new();
    for t in tracks {
        body.clear();
        let kind = match (t.kind, &t.codec) {
            (TrackKind::Video, Codec::H264) => {
                flv::video_sequence_header(t, &mut body)?;
                MediaKind::Video
            }
            (TrackKind::Audio, Codec::Aac) => {
                flv::audio_sequence_header(t, &mut body)?;
                MediaKind::Audio
            }
            _ => continue,
        };
        session.send_media(kind, ts, &[&body])?;
    }
    Ok(())
}

/// Waits until the kernel's send queue of `sock` is empty (every byte acknowledged by the
/// peer), at most `limit`.
fn wait_until_sent(sock: &TcpStream, limit: Duration) {
    use std::os::fd::AsRawFd;
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

/// True for the errors that mean the peer went away (not worth an error log line).
fn peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

/// The viewer closed its connection: end the session quietly.
#[derive(Debug, thiserror::Error)]
#[error("the viewer left")]
struct ViewerLeft;

fn play(
    mut sock: TcpStream,
    mut session: ServerSession,
    ctx: &Ctx,
    peer: &str,
    name: &str,
) -> Result<()> {
    set_process_name("RTMP play");
    let (stream, _key) = split_name(name);
    let mut cursor = match Cursor::open(&ctx.rundir, &stream, peer) {
        Ok(c) => c,
        Err(e) => {
            not_found(&mut sock, &mut session, &stream)?;
            return match e {
                OpenError::NotFound(r) => {
                    crate::log!(PROTO, "{peer}: play {stream}: not found ({r})");
                    Ok(())
                }
                e => Err(anyhow!("{peer}: play {stream}: {e}")),
            };
        }
    };
    let connected = Instant::now();
    if !cursor.wait_ready(PLAY_WAIT, 1) {
        not_found(&mut sock, &mut session, &stream)?;
        crate::log!(PROTO, "{peer}: play {stream}: no data within {PLAY_WAIT:?}");
        return Ok(());
    }
    let start = cursor.seek_latest_key().unwrap_or(0);
    session.accept_play()?;
    send_init(&mut session, cursor.tracks(), start)?;
    let mut pending = session.take_output();
    crate::log!(
        PROTO,
        "{peer} plays {stream} from {start} ms (ready after {} ms)",
        connected.elapsed().as_millis()
    );

    sock.set_nonblocking(true)?;
    let reader = *cursor.reader();
    let mut batch = Batch::default();
    let mut rbuf = vec![0u8; 2 << 10];
    let mut tracks: Vec<Track> = cursor.tracks().to_vec();
    // A player only sends acknowledgements, pings and deleteStream: read its input every
    // 100 ms (or when the socket is full), not once per packet.
    let mut next_read = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_read || !pending.is_empty() {
            next_read = now + Duration::from_millis(100);
            loop {
                match sock.read(&mut rbuf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => session
                        .handle_input(&rbuf[..n])
                        .map_err(|e| anyhow!("{peer}: {e}"))?,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if peer_gone(&e) => return Ok(()),
                    Err(e) => return Err(anyhow!("{peer}: {e}")),
                }
            }
            while let Some(ev) = session.poll_event() {
                if matches!(ev, Event::DeleteStream { .. } | Event::CloseStream { .. }) {
                    return Ok(());
                }
            }
        }
        pending.extend_from_slice(&session.take_output());
        if !pending.is_empty() {
            match sock.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) if peer_gone(&e) => return Ok(()),
                Err(e) => return Err(anyhow!("{peer}: writing to the player: {e}")),
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
        let stop = loop {
            if batch.full() {
                break Stop::Full;
            }
            match cursor.next_packet() {
                Next::Packet(seq, _) => {
                    let Some(p) = reader.packet(seq) else {
                        continue;
                    };
                    let Some(t) = tracks.iter().find(|t| t.id == p.track) else {
                        continue;
                    };
                    batch.add(&mut session, t, seq, p)?;
                }
                Next::TracksChanged => break Stop::TracksChanged,
                Next::Wait(seen) => break Stop::Wait(seen),
                Next::Ended => break Stop::Ended,
            }
        };
        if let Some(first) = batch.first_seq {
            match batch.send(&mut sock, &mut pending) {
                Err(e) if e.is::<ViewerLeft>() => return Ok(()),
                r => r?,
            }
            if !cursor.still_valid(first) {
                bail!("{peer}: fell out of the window while sending; dropping the viewer");
            }
        }
        match stop {
            Stop::Full => {}
            Stop::TracksChanged => {
                tracks = cursor.tracks().to_vec();
                send_init(&mut session, &tracks, 0)?;
            }
            Stop::Wait(seen) => {
                if pending.is_empty() {
                    cursor.wait(seen, Duration::from_millis(100));
                }
            }
            Stop::Ended => {
                // Every packet first, acknowledged by the player's TCP stack, and only then
                // StreamEOF: some players (GStreamer's rtmp2src) stop at the end notice even
                // with media still queued ahead of it.
                sock.set_nonblocking(false)?;
                sock.set_write_timeout(Some(Duration::from_secs(5)))?;
                pending.extend_from_slice(&session.take_output());
                if sock.write_all(&pending).is_err() {
                    return Ok(());
                }
                pending.clear();
                wait_until_sent(&sock, Duration::from_secs(2));
                session.end_of_stream()?;
                let _ = sock.write_all(&session.take_output());
                crate::log!(PROTO, "{peer}: {stream} ended");
                return Ok(());
            }
        }
    }
}

/// What ended a batch.
enum Stop {
    /// The batch is as large as one writev should be.
    Full,
    /// New tracks: send init data.
    TracksChanged,
    /// Caught up: sleep on the futex with this value.
    Wait(u32),
    /// The stream ended.
    Ended,
}

/// One byte range of a batch, in send order.
enum Seg {
    /// Chunk headers, in `Batch::hdrs`.
    Hdr(std::ops::Range<usize>),
    /// FLV body headers, in `Batch::bodies`.
    Body(std::ops::Range<usize>),
    /// Payload bytes of message `n`, a slice of the shared pages.
    Data(usize, std::ops::Range<usize>),
}

/// The messages of one writev: chunk and FLV body headers built here, payloads borrowed from
/// the shared pages (`'m`: the mapping's lifetime), never copied unless the socket is full.
#[derive(Default)]
struct Batch<'m> {
    hdrs: Vec<u8>,
    bodies: Vec<u8>,
    payloads: Vec<&'m [u8]>,
    segs: Vec<Seg>,
    plan: Vec<Span>,
    bytes: usize,
    first_seq: Option<u64>,
}

/// Most iovecs one batch uses (Linux allows 1024 per writev).
const MAX_SEGS: usize = 512;
/// Most bytes one batch sends.
const MAX_BATCH_BYTES: usize = 512 << 10;

impl<'m> Batch<'m> {
    fn clear(&mut self) {
        self.hdrs.clear();
        self.bodies.clear();
        self.payloads.clear();
        self.segs.clear();
        self.bytes = 0;
        self.first_seq = None;
    }

    fn full(&self) -> bool {
        self.segs.len() + 16 > MAX_SEGS || self.bytes > MAX_BATCH_BYTES
    }

    /// Adds packet `seq` as one RTMP message: FLV body header, chunk headers, payload.
    fn add(
        &mut self,
        session: &mut ServerSession,
        t: &Track,
        seq: u64,
        p: PacketRef<'m>,
    ) -> Result<()> {
        let body_start = self.bodies.len();
        let kind = match t.kind {
            TrackKind::Video => {
                if flv::video_body_header(&t.codec, p.keyframe, p.offset as i32, &mut self.bodies)
                    .is_err()
                {
                    return Ok(());
                }
                MediaKind::Video
            }
            TrackKind::Audio => {
                if flv::audio_body_header(t, &mut self.bodies).is_err() {
                    return Ok(());
                }
                MediaKind::Audio
            }
            TrackKind::Meta => return Ok(()),
        };
        let body = body_start..self.bodies.len();
        self.plan.clear();
        let parts: [&[u8]; 2] = [&self.bodies[body.clone()], p.data];
        session.write_media_parts(kind, p.dts, &parts, &mut self.hdrs, &mut self.plan)?;
        let n = self.payloads.len();
        self.payloads.push(p.data);
        for span in self.plan.drain(..) {
            self.segs.push(match span {
                Span::Own(r) => Seg::Hdr(r),
                Span::Part(0, r) => Seg::Body(body.start + r.start..body.start + r.end),
                Span::Part(_, r) => Seg::Data(n, r),
            });
        }
        self.bytes += p.data.len() + 16;
        self.first_seq.get_or_insert(seq);
        Ok(())
    }

    fn slice(&self, s: &Seg) -> &[u8] {
        match s {
            Seg::Hdr(r) => &self.hdrs[r.clone()],
            Seg::Body(r) => &self.bodies[r.clone()],
            Seg::Data(n, r) => &self.payloads[*n][r.clone()],
        }
    }

    /// Writes the batch with one writev (when nothing is pending); what the socket does not
    /// take is copied to `pending`.
    fn send(&self, sock: &mut TcpStream, pending: &mut Vec<u8>) -> Result<()> {
        let written = if pending.is_empty() {
            let empty: &[u8] = &[];
            let mut iov = [IoSlice::new(empty); MAX_SEGS];
            for (slot, s) in iov.iter_mut().zip(&self.segs) {
                *slot = IoSlice::new(self.slice(s));
            }
            match sock.write_vectored(&iov[..self.segs.len()]) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
                Err(e) if peer_gone(&e) => return Err(ViewerLeft.into()),
                Err(e) => return Err(anyhow!("writing to the player: {e}")),
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
