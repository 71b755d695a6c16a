//! The RTMP connector: one process per connection. The protocol is `dtsc::rtmp` (sans-IO);
//! this file is the thin loop around it. A publisher's media goes through `dtsc::flv`'s
//! ingest into DTP2 frames written to the stream's buffer; a player is served from shared
//! memory with `writev`, its payloads never copied in user space (FLV body header and chunk
//! headers are built per packet, the payload is a slice of the mapped page).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use buffer::shmem::{self, Mode};
use dtsc::flv::{self, FlvToDtsc, TagKind};
use dtsc::machine::{self, Input, Machine};
use dtsc::rtmp::chunk::Span;
use dtsc::rtmp::session::{
    Event, MediaKind, ServerConfig, ServerSession, SessionError, DEFAULT_MAX_QUEUED_REPLIES,
};
use dtsc::rtmp::MediaSender;
use dtsc::{Codec, PacketRef, Track, TrackKind};

use crate::core::control::{self, OpenError};
use crate::core::cursor::{Cursor, StartPolicy};
use crate::core::listener::set_process_name;
use crate::core::publisher::Publisher;
use crate::core::streaming::{self, Asked, Batch, Ended, Framing, Output};
use crate::core::tracksel::{self, Selection};
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
    let stream = stream.rsplit('/').next().unwrap_or(stream);
    // Flash Media Server's file-type prefix, which players (ffmpeg among them) add for a
    // name ending in `.mp4`, `.mov`, `.f4v` or `.mp3`: `mp4:S.mp4` plays `S.mp4`.
    let stream = ["mp4:", "flv:", "mp3:", "f4v:", "mov:"]
        .iter()
        .find_map(|p| stream.strip_prefix(p))
        .unwrap_or(stream)
        .to_string();
    let key = query.map(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .unwrap_or(q)
            .to_string()
    });
    (stream, key.filter(|k| !k.is_empty()))
}

fn flush(sock: &mut TcpStream, session: &mut ServerSession) -> Result<()> {
    let out = session.take_output();
    if !out.is_empty() {
        sock.write_all(&out).context("writing to the client")?;
    }
    Ok(())
}

/// The session's next event; what it has to send on the way goes to the client.
fn next_event(sock: &mut TcpStream, session: &mut ServerSession) -> Result<Option<Event>> {
    loop {
        match session.poll_output() {
            machine::Output::Transmit(b) => sock.write_all(&b).context("writing to the client")?,
            machine::Output::Event(e) => return Ok(Some(e)),
            machine::Output::Timeout(_) => return Ok(None),
        }
    }
}

/// Serves one RTMP connection.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    let peer = crate::core::tls::peer_addr(&sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let mut session = ServerSession::new(ServerConfig {
        random_seed: crate::seed(),
        reject_connect: crate::core::limits::refusing().map(str::to_string),
        ..ServerConfig::default()
    });
    // Small: a forked viewer's private memory is mostly its buffers (docs/PERFORMANCE.md);
    // a player sends a few hundred bytes of commands. A publisher's loop grows it.
    let mut buf = vec![0u8; 4 << 10];
    let mut base_url = String::new();
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("{peer}: no command within {COMMAND_TIMEOUT:?}")
            }
            Err(e) => return Err(e.into()),
        };
        let fed = session.handle_input(Instant::now(), Input::Bytes(&buf[..n]));
        // Whatever the session answered goes out first, even before an error closes it.
        flush(&mut sock, &mut session)?;
        match fed {
            // Over the server's caps: the listener logged it; the client was told.
            Err(SessionError::ConnectRejected(_)) => return Ok(()),
            r => r.map_err(|e| anyhow!("{peer}: {e}"))?,
        }
        while let Some(ev) = next_event(&mut sock, &mut session)? {
            match ev {
                Event::Connect { app, tc_url } => {
                    base_url = tc_url.unwrap_or_else(|| {
                        let local = crate::core::tls::local_addr(&sock)
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        let scheme = if crate::core::tls::is_tls() {
                            "rtmps"
                        } else {
                            "rtmp"
                        };
                        format!("{scheme}://{local}/{app}")
                    });
                }
                Event::Publish { name, .. } => {
                    // The client's request is in: what follows waits on us, not on it.
                    crate::core::limits::disarm();
                    // The URL the encoder published to, for the PUSH_REWRITE and
                    // STREAM_PUSH triggers.
                    control::set_request_url(&format!("{}/{name}", base_url.trim_end_matches('/')));
                    return publish(sock, session, ctx, &peer, &name, buf);
                }
                Event::Play { name, start, .. } => {
                    crate::core::limits::disarm();
                    return play(sock, session, ctx, &peer, &name, start);
                }
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
        .and_then(|path| shmem::attach(&path, Mode::Push));
    let attached = match attached {
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
    // A buffer that dies is replaced under the publisher (`Publisher::flush`).
    let mut publisher = Publisher::new(
        PROTO,
        attached,
        ctx.rundir.clone(),
        &stream,
        peer,
        control::PushAuth::Key(key.clone()),
    );
    let stream = control::stream_name(&stream);
    crate::log!(PROTO, "{peer} publishes {stream}");
    buf.resize(64 << 10, 0);
    // An encoder that stops sending for this long is gone.
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut ingest = FlvToDtsc::new();
    loop {
        // Events first: the session may hold media that came with the publish command.
        let mut done = false;
        while let Some(ev) = next_event(&mut sock, &mut session)? {
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
                    if let Err(e) = ingest.push_tag(tag, timestamp, &payload, &mut publisher) {
                        crate::log!(PROTO, "{peer}: {stream}: dropped a message: {e}");
                    }
                }
                Event::Unpublish { .. }
                | Event::DeleteStream { .. }
                | Event::CloseStream { .. } => done = true,
                _ => {}
            }
        }
        publisher.flush()?;
        if done {
            publisher.finish();
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
        ipc::sessions::update(Some(&sock), false);
        let fed = session.handle_input(Instant::now(), Input::Bytes(&buf[..n]));
        flush(&mut sock, &mut session)?;
        fed.map_err(|e| anyhow!("{peer}: {e}"))?;
    }
    crate::log!(
        PROTO,
        "{peer} stopped publishing {stream} after {} packets",
        ingest.packets
    );
    Ok(())
}

/// Answers the play with StreamNotFound and `why` (the controller's reason: no such stream,
/// a refusal, or an input that failed).
fn not_found(
    sock: &mut TcpStream,
    session: &mut ServerSession,
    stream: &str,
    why: &str,
) -> Result<()> {
    session.reject_play_with(stream, why)?;
    flush(sock, session)
}

fn play(
    mut sock: TcpStream,
    mut session: ServerSession,
    ctx: &Ctx,
    peer: &str,
    name: &str,
    start_ms: f64,
) -> Result<()> {
    set_process_name("RTMP play");
    let (stream, _key) = split_name(name);
    let mut cursor = match Cursor::open(&ctx.rundir, &stream, peer) {
        Ok(c) => c,
        Err(e) => {
            let why = match &e {
                OpenError::NotFound(r) | OpenError::Forbidden(r) | OpenError::Unauthorized(r) => {
                    r.clone()
                }
                OpenError::Failed(_) => "unavailable".to_string(),
            };
            not_found(&mut sock, &mut session, &stream, &why)?;
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
        let why = cursor.not_ready_reason();
        not_found(&mut sock, &mut session, &stream, &why)?;
        crate::log!(PROTO, "{peer}: play {stream}: {why}");
        return Ok(());
    }
    if let Some((_, query)) = name.split_once('?') {
        let selection = Selection::from_query(query);
        if !selection.is_default() {
            cursor.select(selection);
        }
    }
    // RTMP carries one video and one audio track (FLV tags): the first of each kind selected.
    cursor.narrow_to(tracksel::flv_carried);
    // `play`'s start > 0 (ms, as ffmpeg and Flash send it) asks for that position: the
    // keyframe nearest it, on a stored stream or within a live one's DVR window. 0 is what
    // rtmpdump sends for "not live": the usual start.
    let policy = if start_ms > 0.0 {
        StartPolicy::Nearest(start_ms as u64)
    } else {
        StartPolicy::Usual
    };
    let start = cursor.start(policy).unwrap_or(0);
    session.accept_play()?;
    let pending = session.take_output();
    crate::log!(
        PROTO,
        "{peer} plays {stream} from {start} ms (ready after {} ms)",
        connected.elapsed().as_millis()
    );
    // An ended stream's onMetaData says how long it is: from the window's first keyframe to
    // its end (RTMP timestamps are the stream's DTS: a player adds this length to the first
    // one it gets when the play starts there).
    let mut out = RtmpPlay {
        session,
        msgs: FlvMessages::default(),
        paused: false,
        clock: None,
        duration_ms: crate::core::window::ended_span(cursor.reader(), cursor.tracks())
            .map(|span| span.end - span.start),
        seeked: false,
        replies: Vec::new(),
    };
    // A buffer that dies is replaced and the viewer goes on from the new one.
    match streaming::stream_resuming(&mut sock, &mut cursor, &mut out, pending, Framing::Raw) {
        Ok(Ended::StreamEnded) => crate::log!(PROTO, "{peer}: {stream} ended"),
        Ok(Ended::ClientLeft | Ended::BufferGone) => {}
        Err(e) => return Err(anyhow!("{peer}: play {stream}: {e:#}")),
    }
    Ok(())
}

/// How long an ended stream's end notice waits after the last media was acknowledged.
const END_GRACE: Duration = Duration::from_millis(300);

/// RTMP play as an output of the shared loop: FLV body headers and chunk headers built per
/// packet, the payload passed through as a slice of the shared pages.
struct RtmpPlay {
    session: ServerSession,
    msgs: FlvMessages,
    /// Between `pause(true)` and `pause(false)`: no media goes.
    paused: bool,
    /// When the first packet since the start (or the last seek) went, and its DTS (ms).
    clock: Option<(Instant, u64)>,
    /// The ended stream's length (ms), for onMetaData at the start and after each seek (not
    /// after a new buffer: that is another stream's).
    duration_ms: Option<u64>,
    /// A seek was answered: its init data gives the duration again.
    seeked: bool,
    /// The session's answers to the client's messages, until the client reads.
    replies: Vec<u8>,
}

/// How far ahead of real time a stored stream goes to a client that did not announce its
/// buffer length, ms (plus a second).
const DEFAULT_LEAD_MS: u32 = 3000;

/// How often a paused play looks at the client's input.
const PAUSED_POLL: Duration = Duration::from_millis(100);

/// Media as RTMP messages with FLV bodies, over either end of a connection
/// ([`MediaSender`]: RTMP play here, the RTMP push in `rtmp_push`): onMetaData and sequence
/// headers as init data, then per packet a 5- or 2-byte FLV body header and chunk headers
/// built into the batch, the payload a slice of the shared pages.
#[derive(Default)]
pub(crate) struct FlvMessages {
    hdrs: Vec<u8>,
    plan: Vec<Span>,
    body: Vec<u8>,
}

impl FlvMessages {
    /// onMetaData (with `duration_ms`, when the stream's length is known) and the H.264/AAC
    /// sequence headers of `tracks` at `ts` ms, into `b`.
    pub(crate) fn init<S: MediaSender>(
        &mut self,
        s: &mut S,
        tracks: &[Track],
        ts: u64,
        duration_ms: Option<u64>,
        b: &mut Batch<'_>,
    ) -> Result<()> {
        let md = flv::on_metadata(tracks, duration_ms);
        s.send_metadata(&md[1..])?;
        for t in tracks {
            self.body.clear();
            let kind = match (t.kind, &t.codec) {
                (TrackKind::Video, Codec::H264) => {
                    flv::video_sequence_header(t, &mut self.body)?;
                    MediaKind::Video
                }
                (TrackKind::Audio, Codec::Aac) => {
                    flv::audio_sequence_header(t, &mut self.body)?;
                    MediaKind::Audio
                }
                _ => continue,
            };
            s.send_media(kind, ts, &[&self.body])?;
        }
        b.own(&s.take_output());
        Ok(())
    }

    /// One packet of track `t`; tracks FLV cannot carry are passed over.
    pub(crate) fn packet<'m, S: MediaSender>(
        &mut self,
        s: &mut S,
        t: &Track,
        p: PacketRef<'m>,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        self.body.clear();
        let kind = match t.kind {
            TrackKind::Video => {
                if flv::video_body_header(&t.codec, p.keyframe, p.offset as i32, &mut self.body)
                    .is_err()
                {
                    return Ok(());
                }
                MediaKind::Video
            }
            TrackKind::Audio => {
                if flv::audio_body_header(t, &mut self.body).is_err() {
                    return Ok(());
                }
                MediaKind::Audio
            }
            TrackKind::Meta => return Ok(()),
        };
        self.hdrs.clear();
        self.plan.clear();
        let parts: [&[u8]; 2] = [&self.body, p.data];
        s.write_media_parts(kind, p.dts, &parts, &mut self.hdrs, &mut self.plan)?;
        for span in &self.plan {
            match span {
                Span::Own(r) => b.own(&self.hdrs[r.clone()]),
                Span::Part(0, r) => b.own(&self.body[r.clone()]),
                Span::Part(_, r) => b.data_range(p.data, r.clone()),
            }
        }
        Ok(())
    }
}

impl<'m> Output<'m> for RtmpPlay {
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        let duration = self
            .duration_ms
            .filter(|_| first || std::mem::take(&mut self.seeked));
        self.msgs
            .init(&mut self.session, tracks, start_ms, duration, b)
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        self.msgs.packet(&mut self.session, t, p, b)
    }

    fn pace(&mut self, p: &PacketRef<'m>) -> Option<Duration> {
        if self.paused {
            return Some(PAUSED_POLL);
        }
        // Real time, at most the client's buffer length (ffmpeg: 3 s; rtmpdump: hours)
        // plus a second ahead, as nginx-rtmp paces recorded streams: a live stream never
        // waits here, a stored one is not written whole into the socket, so a `seek` or
        // `pause` still finds the client listening.
        let lead = u64::from(self.session.client_buffer_ms().unwrap_or(DEFAULT_LEAD_MS)) + 1000;
        let (t0, d0) = *self.clock.get_or_insert((Instant::now(), p.dts));
        let ahead = p.dts.saturating_sub(d0).saturating_sub(lead);
        (t0 + Duration::from_millis(ahead))
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Asked> {
        self.session
            .handle_input(Instant::now(), Input::Bytes(bytes))?;
        let mut asked = Asked::Nothing;
        loop {
            let ev = match self.session.poll_output() {
                machine::Output::Transmit(b) => {
                    // Replies wait here while the client does not read (see `control`); a
                    // client that sends but never reads is dropped past the bound.
                    self.replies.extend_from_slice(&b);
                    if self.replies.len() > DEFAULT_MAX_QUEUED_REPLIES {
                        return Err(SessionError::OutputBacklog {
                            queued: self.replies.len(),
                            limit: DEFAULT_MAX_QUEUED_REPLIES,
                        }
                        .into());
                    }
                    continue;
                }
                machine::Output::Event(ev) => ev,
                machine::Output::Timeout(_) => break,
            };
            match ev {
                Event::DeleteStream { .. } | Event::CloseStream { .. } => return Ok(Asked::Stop),
                Event::Seek { ms } => asked = Asked::Seek(ms),
                Event::Pause { paused: true, .. } => {
                    self.paused = true;
                    self.session.pause_done(true)?;
                }
                Event::Pause { paused: false, ms } => {
                    // Resumes from the keyframe at or before where the client stopped.
                    self.paused = false;
                    self.clock = None;
                    self.session.pause_done(false)?;
                    asked = Asked::Seek(ms);
                }
                _ => {}
            }
        }
        Ok(asked)
    }

    fn seeked(&mut self, dts: u64) -> Result<()> {
        crate::log!(PROTO, "RTMP play: seek to {dts} ms");
        self.clock = None;
        self.seeked = true;
        Ok(self.session.seek_done(dts)?)
    }

    fn control(&mut self, out: &mut Vec<u8>) {
        // While the client is not reading, its acknowledgements and ping answers stay in the
        // session, which refuses more input once they pass its bound
        // (`ServerConfig::max_queued_replies`): a stalled peer is dropped, not buffered.
        if out.len() < 64 << 10 {
            out.append(&mut self.replies);
            out.extend_from_slice(&self.session.take_output());
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        // Every packet was acknowledged by the client's TCP stack by now, but GStreamer's
        // rtmp2src hands messages to its pipeline from another thread and, at the end notice,
        // dropped the last audio frame in about one run in ten (431 of 432). A moment's wait
        // lets it take that frame first.
        std::thread::sleep(END_GRACE);
        self.session.end_of_stream()?;
        out.extend_from_slice(&self.session.take_output());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn play_names_lose_their_path_file_type_prefix_and_key() {
        assert_eq!(
            split_name("live/cam?key=k"),
            ("cam".into(), Some("k".into()))
        );
        assert_eq!(
            split_name("mp4:vod+clip.mp4"),
            ("vod+clip.mp4".into(), None)
        );
        assert_eq!(
            split_name("cam?s3cret"),
            ("cam".into(), Some("s3cret".into()))
        );
        assert_eq!(split_name("mp4x:cam"), ("mp4x:cam".into(), None));
    }
}
