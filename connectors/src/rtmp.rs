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
use dtsc::{Codec, Track, TrackKind};
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

/// Writes as much of `plan` as the socket takes; the rest is appended to `pending`.
fn write_plan(
    sock: &mut TcpStream,
    hdrs: &[u8],
    parts: &[&[u8]],
    plan: &[Span],
    pending: &mut Vec<u8>,
) -> Result<()> {
    let slice = |s: &Span| -> &[u8] {
        match s {
            Span::Own(r) => &hdrs[r.clone()],
            Span::Part(i, r) => &parts[*i][r.clone()],
        }
    };
    let total: usize = plan.iter().map(|s| slice(s).len()).sum();
    let written = if pending.is_empty() {
        let iov: Vec<IoSlice> = plan.iter().map(|s| IoSlice::new(slice(s))).collect();
        match sock.write_vectored(&iov) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) if peer_gone(&e) => return Err(ViewerLeft.into()),
            Err(e) => return Err(anyhow!("writing to the player: {e}")),
        }
    } else {
        0
    };
    if written < total {
        let mut skip = written;
        for s in plan {
            let b = slice(s);
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            pending.extend_from_slice(&b[skip..]);
            skip = 0;
        }
    }
    Ok(())
}

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
    let mut rbuf = vec![0u8; 2 << 10];
    let mut hdrs = Vec::with_capacity(256);
    let mut plan = Vec::with_capacity(16);
    let mut body_hdr = Vec::with_capacity(8);
    let mut tracks: Vec<Track> = cursor.tracks().to_vec();
    loop {
        // Input from the player: acknowledgements, pings, deleteStream.
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
        // Packets, a batch at a time.
        for _ in 0..64 {
            match cursor.next_packet() {
                Next::Packet(seq, p) => {
                    let Some(t) = tracks.iter().find(|t| t.id == p.track) else {
                        continue;
                    };
                    body_hdr.clear();
                    let kind = match t.kind {
                        TrackKind::Video => {
                            if flv::video_body_header(
                                &t.codec,
                                p.keyframe,
                                p.offset as i32,
                                &mut body_hdr,
                            )
                            .is_err()
                            {
                                continue;
                            }
                            MediaKind::Video
                        }
                        TrackKind::Audio => {
                            if flv::audio_body_header(t, &mut body_hdr).is_err() {
                                continue;
                            }
                            MediaKind::Audio
                        }
                        TrackKind::Meta => continue,
                    };
                    hdrs.clear();
                    plan.clear();
                    let parts: [&[u8]; 2] = [&body_hdr, p.data];
                    session.write_media_parts(kind, p.dts, &parts, &mut hdrs, &mut plan)?;
                    match write_plan(&mut sock, &hdrs, &parts, &plan, &mut pending) {
                        Err(e) if e.is::<ViewerLeft>() => return Ok(()),
                        r => r?,
                    }
                    if !cursor.still_valid(seq) {
                        bail!("{peer}: fell out of the window while sending; dropping the viewer");
                    }
                    if !pending.is_empty() {
                        break;
                    }
                }
                Next::TracksChanged => {
                    tracks = cursor.tracks().to_vec();
                    send_init(&mut session, &tracks, 0)?;
                    pending.extend_from_slice(&session.take_output());
                    break;
                }
                Next::Wait(seen) => {
                    cursor.wait(seen, Duration::from_millis(50));
                    break;
                }
                Next::Ended => {
                    // Every packet first, acknowledged by the player's TCP stack, and only
                    // then StreamEOF: some players (GStreamer's rtmp2src) stop at the end
                    // notice even with media still queued ahead of it.
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
}
