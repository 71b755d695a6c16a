//! The DTSC connector (MistServer's port 4200): DTSC over TCP between servers, both ways
//! (`docs/DTSC.md`, "TCP protocol").
//!
//! 1. The server sends `DTCM {"cmd":"hi","version":…,"pack_method":2,"salt":…}`.
//! 2. The client sends `DTCM {"cmd":"play","stream":S}` to pull a stream (an edge), or
//!    `DTCM {"cmd":"push","stream":S,"password":P}` to send one in (P is the stream's key
//!    when its source is `push://@KEY`; the stream's address rules apply as for RTMP).
//! 3. Play: the server sends a `DTSC` header without index members, then `DTP2` frames from
//!    a keyframe (the newest of a live stream, the first of an ended one), a new header
//!    whenever the tracks change; the shared connection loop ([`streaming::stream_resuming`])
//!    sends each payload straight from the shared pages. Push: the client sends a header and
//!    `DTP2` frames, which go to the stream's buffer as they are (checked frame by frame: a
//!    frame that does not parse ends the connection with an `error` command).
//!
//! `ping` is answered with `ok` on both sides; other commands are ignored while streaming.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use dtsc::wire::{self, Frame, FrameSink, Header, Value};
use dtsc::{PacketRef, Track};

use crate::core::control::{self, OpenError, PushAuth};
use crate::core::cursor::{Cursor, StartPolicy};
use crate::core::publisher::Publisher;
use crate::core::streaming::{self, Asked, Batch, Ended, Framing, Output};
use crate::Ctx;

const PROTO: &str = "DTSC";
/// How long a client has to send its command after `hi`.
const COMMAND_WAIT: Duration = Duration::from_secs(10);
/// A pushing client that sends nothing for this long is gone.
const PUSH_SILENCE: Duration = Duration::from_secs(30);

/// The `hi` command the server opens with.
pub fn hi(out: &mut Vec<u8>) {
    let salt = format!("{:016x}", crate::seed());
    wire::write_command(
        &Value::obj([
            ("cmd", Value::str("hi")),
            (
                "version",
                Value::str(concat!("Sluice ", env!("CARGO_PKG_VERSION"))),
            ),
            ("pack_method", Value::Int(2)),
            ("salt", Value::str(&salt)),
        ]),
        out,
    );
}

/// A command frame `{"cmd": NAME, …}` appended to `out`.
pub fn command(name: &str, members: &[(&str, Value)], out: &mut Vec<u8>) {
    let mut all = vec![("cmd".to_string(), Value::str(name))];
    all.extend(members.iter().map(|(k, v)| (k.to_string(), v.clone())));
    wire::write_command(&Value::Object(all), out);
}

/// The `cmd` of a command value and the value.
fn cmd_of(v: &Value) -> &str {
    v.get("cmd").and_then(|c| c.as_str()).unwrap_or("")
}

fn send_error(sock: &mut TcpStream, msg: &str) {
    let mut out = Vec::new();
    command("error", &[("msg", Value::str(msg))], &mut out);
    let _ = sock.write_all(&out);
}

/// Most bytes a client may send before its first command, and the largest frame a push
/// may hold unfinished (a DTP2 packet is at most a few MiB of media).
const MAX_BEFORE_COMMAND: usize = 1 << 20;
/// The largest push frame held while it is incomplete.
const MAX_PUSH_FRAME: usize = 64 << 20;

/// The first command in `buf` (sans-IO): frames before it are skipped and consumed. Returns
/// the command with the bytes it and the frames before it took, `Ok(None)` when more bytes
/// are needed, or an error for bytes that are not DTSC or for [`MAX_BEFORE_COMMAND`] bytes
/// without a command (MistServer's DTSC protocol: a client's first frame is a `DTCM`).
pub fn first_command_in(buf: &[u8]) -> Result<Option<(Value, usize)>> {
    let mut at = 0;
    while let Some(rest) = buf.get(at..) {
        match wire::parse_frame(rest) {
            Ok(Some((Frame::Command(v), used))) => return Ok(Some((v, at + used))),
            Ok(Some((_, used))) => at += used,
            Ok(None) => break,
            Err(e) => bail!("not DTSC: {e}"),
        }
    }
    if buf.len() > MAX_BEFORE_COMMAND {
        bail!("no command in the first MiB");
    }
    Ok(None)
}

/// Reads frames until the first command; bytes after it are returned too (a pushing client
/// may send its header right behind the command).
fn first_command(sock: &mut TcpStream) -> Result<(Value, Vec<u8>)> {
    sock.set_read_timeout(Some(COMMAND_WAIT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((v, used)) = first_command_in(&buf)? {
            buf.drain(..used);
            return Ok((v, buf));
        }
        match sock.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(ClosedQuietly.into()),
            Ok(0) => bail!("closed before a command"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => bail!("no command within {COMMAND_WAIT:?}: {e}"),
        }
    }
}

/// What a DTSC push sends after its `push` command, taken apart (sans-IO): header and
/// packet frames go on to the stream's buffer as they are, a `ping` gets an `ok`. A packet
/// before the first header is dropped (the buffer needs the tracks first).
#[derive(Debug, Default)]
pub struct PushIngest {
    header_seen: bool,
    /// Packets passed on.
    pub packets: u64,
}

impl PushIngest {
    /// Takes every whole frame from the front of `buf`: headers and packets for the buffer go
    /// to `frames` as values (each frame is parsed here once), answers to `replies`. Errors: a header that does not parse, bytes that
    /// are not DTSC, or an unfinished frame over [`MAX_PUSH_FRAME`] bytes.
    pub fn feed(
        &mut self,
        buf: &mut Vec<u8>,
        frames: &mut impl FrameSink,
        replies: &mut Vec<u8>,
    ) -> Result<()> {
        let mut at = 0;
        let result = loop {
            let Some(rest) = buf.get(at..) else {
                break Ok(());
            };
            match wire::parse_frame(rest) {
                Ok(Some((f, used))) => {
                    match f {
                        Frame::Header(v) => match Header::from_value(&v) {
                            Ok(h) => {
                                self.header_seen = true;
                                frames.header(&h);
                            }
                            Err(e) => break Err(anyhow!("bad header: {e}")),
                        },
                        Frame::Packet(p) if self.header_seen => {
                            frames.packet(&p);
                            self.packets += 1;
                        }
                        Frame::Command(v) if cmd_of(&v) == "ping" => command("ok", &[], replies),
                        _ => {}
                    }
                    at += used;
                }
                Ok(None) if rest.len() > MAX_PUSH_FRAME => {
                    break Err(anyhow!("a frame over {MAX_PUSH_FRAME} bytes"))
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(anyhow!("malformed DTSC: {e}")),
            }
        };
        buf.drain(..at.min(buf.len()));
        result
    }
}

/// A client that connected and closed without a byte (a port check): not worth a log line.
#[derive(Debug, thiserror::Error)]
#[error("closed without a byte")]
struct ClosedQuietly;

/// Serves one DTSC client.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    let peer = crate::core::tls::peer_addr(&sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut out = Vec::new();
    hi(&mut out);
    sock.write_all(&out)?;
    let (cmd, rest) = match first_command(&mut sock) {
        Ok(c) => {
            crate::core::limits::disarm();
            c
        }
        Err(e) if e.is::<ClosedQuietly>() => return Ok(()),
        Err(e) => {
            send_error(&mut sock, &format!("{e:#}"));
            bail!("{peer}: {e:#}");
        }
    };
    let stream = cmd
        .get("stream")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    match cmd_of(&cmd) {
        "play" if !stream.is_empty() => play(sock, ctx, &peer, &stream),
        "push" if !stream.is_empty() => {
            let password = cmd
                .get("password")
                .and_then(|p| p.as_str())
                .map(str::to_string);
            push(sock, ctx, &peer, &stream, password, rest)
        }
        "play" | "push" => {
            send_error(&mut sock, "no stream named");
            bail!("{peer}: {} without a stream", cmd_of(&cmd));
        }
        other => {
            send_error(&mut sock, &format!("unknown command {other:?}"));
            bail!("{peer}: unknown first command {other:?}");
        }
    }
}

fn play(mut sock: TcpStream, ctx: &Ctx, peer: &str, stream: &str) -> Result<()> {
    crate::core::listener::set_process_name("DTSC play");
    let mut cursor = match Cursor::open(&ctx.rundir, stream, peer) {
        Ok(c) => c,
        Err(e) => {
            send_error(&mut sock, &e.to_string());
            return match e {
                OpenError::NotFound(r) => {
                    crate::log!(PROTO, "{peer}: play {stream}: not found ({r})");
                    Ok(())
                }
                e => Err(anyhow!("{peer}: play {stream}: {e}")),
            };
        }
    };
    if !cursor.wait_ready(Duration::from_secs(10), 1) {
        send_error(&mut sock, "no data within 10 s");
        crate::log!(PROTO, "{peer}: play {stream}: no data within 10 s");
        return Ok(());
    }
    let live = cursor.reader().meta().state() != dtsc::shm::STATE_ENDED;
    cursor.start(StartPolicy::Usual);
    sock.set_read_timeout(None)?;
    crate::log!(PROTO, "{peer} plays {stream}");
    let unixzero = live.then(|| cursor.reader().meta().unixzero());
    let mut out = DtscPlay {
        unixzero,
        input: Vec::new(),
        replies: Vec::new(),
        head: Vec::new(),
    };
    match streaming::stream_resuming(&mut sock, &mut cursor, &mut out, Vec::new(), Framing::Raw) {
        Ok(Ended::StreamEnded) => crate::log!(PROTO, "{peer}: {stream} ended"),
        Ok(_) => crate::log!(PROTO, "{peer}: left {stream}"),
        Err(e) => return Err(anyhow!("{peer}: play {stream}: {e:#}")),
    }
    Ok(())
}

/// DTSC out, as an output of the shared connection loop.
struct DtscPlay {
    /// Live: the buffer's `unixzero` (Unix ms of DTS 0), which tells a pulling edge that a
    /// reconnect found the same timeline. `None`: an ended stream (`vod: 1`).
    unixzero: Option<i64>,
    /// Client bytes not parsed yet.
    input: Vec<u8>,
    /// Answers to the client's commands.
    replies: Vec<u8>,
    /// Scratch for one packet's frame head.
    head: Vec<u8>,
}

impl<'m> Output<'m> for DtscPlay {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        _first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        let h = Header {
            live: self.unixzero.is_some(),
            unixzero: self.unixzero,
            tracks: tracks.to_vec(),
        };
        b.own_with(|out| {
            wire::write_header(&h, out);
            Ok::<(), anyhow::Error>(())
        })
    }

    fn packet(&mut self, _t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        self.head.clear();
        wire::write_packet_head(&p, &mut self.head);
        b.own(&self.head);
        b.data(p.data);
        b.own(wire::PACKET_TAIL);
        Ok(())
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Asked> {
        self.input.extend_from_slice(bytes);
        loop {
            match wire::parse_frame(&self.input) {
                Ok(Some((f, used))) => {
                    let ping = matches!(&f, Frame::Command(v) if cmd_of(v) == "ping");
                    self.input.drain(..used);
                    if ping {
                        command("ok", &[], &mut self.replies);
                    }
                }
                Ok(None) if self.input.len() <= 1 << 20 => return Ok(Asked::Nothing),
                Ok(None) => bail!("a client frame over 1 MiB"),
                Err(e) => bail!("malformed input from the client: {e}"),
            }
        }
    }

    fn control(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.replies);
    }
}

fn push(
    mut sock: TcpStream,
    ctx: &Ctx,
    peer: &str,
    stream: &str,
    password: Option<String>,
    mut buf: Vec<u8>,
) -> Result<()> {
    crate::core::listener::set_process_name("DTSC push");
    let auth = PushAuth::Key(password);
    let attached = control::open_push(&ctx.rundir, stream, peer, &auth)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|path| buffer::shmem::attach(&path, buffer::shmem::Mode::Push));
    let attached = match attached {
        Ok(a) => a,
        Err(e) => {
            send_error(&mut sock, &format!("{e:#}"));
            bail!("{peer}: push to {stream} refused: {e:#}");
        }
    };
    let mut publisher = Publisher::new(PROTO, attached, ctx.rundir.clone(), stream, peer, auth);
    crate::log!(PROTO, "{peer} pushes {stream}");
    sock.set_read_timeout(Some(PUSH_SILENCE))?;
    let mut chunk = vec![0u8; 64 << 10];
    let mut ingest = PushIngest::default();
    let mut replies = Vec::new();
    loop {
        if let Err(e) = ingest.feed(&mut buf, &mut publisher, &mut replies) {
            send_error(&mut sock, &format!("{e}"));
            bail!("{peer}: push {stream}: {e}");
        }
        if !replies.is_empty() {
            sock.write_all(&replies)?;
            replies.clear();
        }
        publisher.flush()?;
        ipc::sessions::update(Some(&sock), false);
        match sock.read(&mut chunk) {
            Ok(0) => {
                // DTSC has no end message: a sender that closes its connection is done.
                publisher.finish();
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("{peer}: push {stream}: nothing for {PUSH_SILENCE:?}")
            }
            Err(e) => bail!("{peer}: push {stream}: {e}"),
        }
    }
    crate::log!(
        PROTO,
        "{peer} stopped pushing {stream} after {} packets",
        ingest.packets
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_command_is_found_behind_other_frames_and_a_push_passes_whole_frames() {
        use dtsc::{Codec, PacketRef, Track, TrackKind};
        let mut bytes = Vec::new();
        let h = Header {
            live: true,
            unixzero: None,
            tracks: vec![Track::new(1, TrackKind::Video, Codec::H264)],
        };
        let p = PacketRef {
            track: 1,
            dts: 40,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &[1, 2, 3],
        };
        // A packet before any command is skipped; then `push`, then a packet before the
        // header (dropped), the header, a packet and a ping.
        wire::write_packet(&p, &mut bytes);
        command("push", &[("stream", Value::str("s"))], &mut bytes);
        let cmd_end = bytes.len();
        wire::write_packet(&p, &mut bytes);
        wire::write_header(&h, &mut bytes);
        wire::write_packet(&p, &mut bytes);
        command("ping", &[], &mut bytes);
        assert!(first_command_in(&bytes[..cmd_end - 1]).unwrap().is_none());
        let (v, used) = first_command_in(&bytes).unwrap().unwrap();
        assert_eq!((cmd_of(&v), used), ("push", cmd_end));
        let mut ingest = PushIngest::default();
        let (mut frames, mut replies) = (Vec::new(), Vec::new());
        // Fed a byte at a time: the same result as all at once.
        let mut buf = Vec::new();
        for b in &bytes[cmd_end..] {
            buf.push(*b);
            ingest.feed(&mut buf, &mut frames, &mut replies).unwrap();
        }
        assert!(buf.is_empty());
        assert_eq!(ingest.packets, 1, "the packet before the header is dropped");
        let mut want = Vec::new();
        wire::write_header(&h, &mut want);
        wire::write_packet(&p, &mut want);
        assert_eq!(frames, want);
        let mut ok = Vec::new();
        command("ok", &[], &mut ok);
        assert_eq!(replies, ok);
    }

    #[test]
    fn garbage_and_endless_frames_are_refused() {
        assert!(first_command_in(b"GET / HTTP/1.1\r\n\r\n").is_err());
        let mut buf = b"DTP2\xff\xff\xff\xf0".to_vec();
        buf.resize(MAX_PUSH_FRAME + 16, 0);
        let mut ingest = PushIngest::default();
        let e = ingest
            .feed(&mut buf, &mut Vec::new(), &mut Vec::new())
            .unwrap_err();
        assert!(format!("{e}").contains("4294967280"), "{e}");
    }
}
