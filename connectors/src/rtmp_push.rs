//! Pushing a stream out over RTMP (to nginx-rtmp, MistServer, SRS, a CDN's ingest): one
//! process per push, `sluice push --stream S --target rtmp://host[:port]/app/name`. The
//! stream is read like any viewer's ([`Cursor`]: a live stream from its newest keyframe,
//! an ended one from its start, sent at real time); the connection is
//! [`dtsc::rtmp::client::PublishClient`] (sans-IO), and the media goes out through the
//! shared loop ([`session::stream`]) as RTMP play does: onMetaData and sequence headers,
//! then per packet an FLV body header and chunk headers, the payload a slice of the shared
//! pages. One video and one audio track (what FLV carries).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::flv;
use dtsc::rtmp::client::{ClientEvent, PublishClient};
use dtsc::rtmp::{MediaKind, Span};
use dtsc::{Codec, PacketRef, Track, TrackKind};

use crate::cursor::Cursor;
use crate::push::PushArgs;
use crate::session::{self, Batch, Ended, Framing, Output};
use crate::tracksel;

const PROTO: &str = "RTMP push";
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Pushes `args.stream` to `args.target` (`rtmp://…`) until the stream ends or the target
/// leaves.
pub fn push(args: &PushArgs) -> Result<()> {
    let (host, port, app, name, tc_url) = PublishClient::parse_url(&args.target)
        .ok_or_else(|| anyhow!("not an RTMP URL of the form rtmp://host[:port]/app/name"))?;
    let mut cursor = Cursor::open(&args.rundir, &args.stream, "127.0.0.1")
        .map_err(|e| anyhow!("{}: {e}", args.stream))?;
    buffer::sessions::set_stream(&args.stream, buffer::sessions::Kind::Output, None);
    if !cursor.wait_ready(Duration::from_secs(15), 1) {
        bail!("{}: no media within 15 s", args.stream);
    }
    cursor.narrow_to(tracksel::flv_carried);
    let ended = cursor.reader().meta().state() == dtsc::shm::STATE_ENDED;
    if ended {
        cursor.seek_first_key();
    } else {
        cursor.seek_latest_key();
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host}: no address"))?;
    let mut sock = TcpStream::connect_timeout(&addr, HANDSHAKE)
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    let seed = u64::from(std::process::id()) ^ Instant::now().elapsed().as_nanos() as u64;
    let mut client = PublishClient::new(&tc_url, &app, &name, seed);
    client.start(0);
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let zero = Instant::now();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        sock.write_all(&client.take_output())
            .context("writing to the target")?;
        match client.poll_event() {
            Some(ClientEvent::Publishing) => break,
            Some(ClientEvent::Failed(why)) => bail!("refused: {why}"),
            Some(_) => continue,
            None => {}
        }
        if zero.elapsed() > HANDSHAKE {
            bail!("no answer to the publish within {HANDSHAKE:?}");
        }
        match sock.read(&mut buf) {
            Ok(0) => bail!("the target closed the connection"),
            Ok(n) => client
                .handle_input(&buf[..n])
                .map_err(|e| anyhow!("the target's messages: {e}"))?,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading from the target"),
        }
    }
    crate::log!(
        PROTO,
        "{}: publishing to {} ({} tracks)",
        args.stream,
        crate::push::redact(&args.target),
        cursor.tracks().len()
    );
    sock.set_read_timeout(None)?;
    let mut out = RtmpPushOut {
        client,
        hdrs: Vec::with_capacity(256),
        plan: Vec::with_capacity(16),
        body: Vec::with_capacity(16),
        clock: None,
        stopped: None,
    };
    let pending = out.client.take_output();
    // A buffer that dies is replaced and the push goes on from the new one.
    let ended = session::stream_resuming(&mut sock, &mut cursor, &mut out, pending, Framing::Raw)?;
    if let Some(why) = out.stopped {
        bail!("the target ended the publish: {why}");
    }
    crate::log!(
        PROTO,
        "{}: push to {} ended ({})",
        args.stream,
        crate::push::redact(&args.target),
        match ended {
            Ended::StreamEnded => "the stream ended",
            Ended::ClientLeft | Ended::BufferGone => "the target left",
        }
    );
    if ended == Ended::ClientLeft {
        bail!("the target closed the connection");
    }
    Ok(())
}

/// The push as an output of the shared loop (see the module docs). Packets leave at real
/// time from the first one sent: a live stream is at real time anyway, and a stored stream
/// must not flood the target.
struct RtmpPushOut {
    client: PublishClient,
    hdrs: Vec<u8>,
    plan: Vec<Span>,
    body: Vec<u8>,
    /// (wall clock, DTS) of the first packet sent.
    clock: Option<(Instant, u64)>,
    /// Why the target ended the publish, if it did.
    stopped: Option<String>,
}

impl<'m> Output<'m> for RtmpPushOut {
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        _first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        let md = flv::on_metadata(tracks);
        self.client.send_metadata(&md[1..])?;
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
            self.client.send_media(kind, start_ms, &[&body])?;
        }
        b.own(&self.client.take_output());
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
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
        self.client
            .write_media_parts(kind, p.dts, &parts, &mut self.hdrs, &mut self.plan)?;
        for span in &self.plan {
            match span {
                Span::Own(r) => b.own(&self.hdrs[r.clone()]),
                Span::Part(0, r) => b.own(&self.body[r.clone()]),
                Span::Part(_, r) => b.data_range(p.data, r.clone()),
            }
        }
        Ok(())
    }

    fn pace(&mut self, p: &PacketRef<'m>) -> Option<Duration> {
        let (t0, d0) = *self.clock.get_or_insert((Instant::now(), p.dts));
        let due = t0 + Duration::from_millis(p.dts.saturating_sub(d0));
        due.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn input(&mut self, bytes: &[u8]) -> Result<bool> {
        self.client.handle_input(bytes)?;
        while let Some(ev) = self.client.poll_event() {
            if let ClientEvent::Failed(why) | ClientEvent::Stopped(why) = ev {
                self.stopped = Some(why);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn control(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.client.take_output());
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.client.unpublish();
        out.extend_from_slice(&self.client.take_output());
        Ok(())
    }
}
