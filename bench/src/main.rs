//! `sluice-bench`: load generators for Sluice.
//!
//! * `rtmp-play`: N RTMP players in one process (a thread each), built from `dtsc`'s own
//!   client pieces (client handshake, chunk encoder/decoder, AMF0). Each records the time
//!   from the start of its TCP connect to the first byte of the first video message (and of
//!   the first keyframe), counts audio/video messages and bytes, and checks that timestamps
//!   never go backwards per track.
//! * `publish`: publishes an FLV file at real time over RTMP, looping with continuous
//!   timestamps (the benchmark script uses ffmpeg instead; this is the dependency-free option).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use dtsc::amf0::{self, Amf0};
use dtsc::flv::{self, TagKind};
use dtsc::rtmp::chunk::{msg_type, ChunkDecoder, ChunkEncoder, Message};
use dtsc::rtmp::handshake::ClientHandshake;

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Load generators for Sluice")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N RTMP players of one stream; prints first-video-byte latency and delivery.
    RtmpPlay {
        /// rtmp://HOST:PORT/APP/STREAM
        #[arg(long)]
        url: String,
        /// Number of concurrent players.
        #[arg(long, default_value_t = 100)]
        viewers: usize,
        /// How long each player plays, seconds (from its TCP connect).
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Delay between starting two players, ms (0: all at once).
        #[arg(long, default_value_t = 0)]
        stagger_ms: u64,
        /// Nominal video frame rate, for the delivered-frames percentage.
        #[arg(long, default_value_t = 25.0)]
        fps: f64,
    },
    /// Publishes an FLV file at real time over RTMP.
    Publish {
        /// rtmp://HOST:PORT/APP/STREAM
        #[arg(long)]
        url: String,
        /// FLV file (H.264/AAC).
        #[arg(long)]
        file: std::path::PathBuf,
        /// Loop the file forever with continuous timestamps.
        #[arg(long = "loop")]
        looped: bool,
    },
}

/// Parts of an rtmp:// URL.
struct Url {
    host: String,
    port: u16,
    app: String,
    stream: String,
    tc_url: String,
}

fn parse_url(url: &str) -> Result<Url> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| anyhow!("{url}: not an rtmp:// URL"))?;
    let (hostport, path) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("{url}: no /APP/STREAM"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().context("port")?),
        None => (hostport.to_string(), 1935),
    };
    let (app, stream) = path
        .split_once('/')
        .ok_or_else(|| anyhow!("{url}: no STREAM after APP"))?;
    Ok(Url {
        tc_url: format!("rtmp://{hostport}/{app}"),
        host,
        port,
        app: app.to_string(),
        stream: stream.to_string(),
    })
}

/// A blocking RTMP client connection: handshake done, chunk codec, ack bookkeeping.
struct Client {
    sock: TcpStream,
    enc: ChunkEncoder,
    dec: ChunkDecoder,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    /// Bytes received (handshake included): the acknowledgement sequence number.
    received: u64,
    acked: u64,
    window: u32,
    /// (end offset in the chunk stream after the handshake, arrival time) of recent reads,
    /// kept while `track_reads` is set, to find when a message's first byte arrived.
    reads: Vec<(u64, Instant)>,
    track_reads: bool,
    /// Chunk-stream bytes pushed into the decoder.
    pushed: u64,
}

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_STREAM: u32 = 8;

impl Client {
    fn connect(url: &Url, seed: u64) -> Result<Client> {
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow!("{}: no address", url.host))?;
        let mut sock = TcpStream::connect(addr).context("TCP connect")?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut hs = ClientHandshake::new(seed);
        let mut out = Vec::new();
        hs.start(0, &mut out);
        sock.write_all(&out)?;
        let mut rbuf = vec![0u8; 64 << 10];
        let mut dec = ChunkDecoder::default();
        let mut received = 0u64;
        let mut pushed = 0u64;
        while !hs.is_done() {
            let n = sock.read(&mut rbuf).context("handshake read")?;
            if n == 0 {
                bail!("server closed during the handshake");
            }
            received += n as u64;
            out.clear();
            let p = hs.push(&rbuf[..n], &mut out)?;
            if !out.is_empty() {
                sock.write_all(&out)?;
            }
            if p.done && p.consumed < n {
                dec.push(&rbuf[p.consumed..n]);
                pushed += (n - p.consumed) as u64;
            }
        }
        Ok(Client {
            sock,
            enc: ChunkEncoder::new(),
            dec,
            out: Vec::new(),
            rbuf,
            received,
            acked: 0,
            window: 2_500_000,
            reads: Vec::new(),
            track_reads: false,
            pushed,
        })
    }

    fn command(&mut self, csid: u32, stream_id: u32, vals: &[Amf0]) {
        let mut body = Vec::new();
        amf0::encode_all(vals, &mut body);
        self.enc.write_message(
            csid,
            msg_type::COMMAND_AMF0,
            stream_id,
            0,
            &body,
            &mut self.out,
        );
    }

    fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.sock.write_all(&self.out).context("write")?;
            self.out.clear();
        }
        Ok(())
    }

    /// Next message; `Ok(None)` on a read timeout. Answers pings and acknowledges windows.
    fn next(&mut self) -> Result<Option<(Message, u64)>> {
        loop {
            let before = self.pushed - self.dec.buffered() as u64;
            if let Some(m) = self.dec.poll()? {
                // Messages are not interleaved by Sluice's writer, so this message began where
                // the decoder stood before it.
                self.control(&m)?;
                return Ok(Some((m, before)));
            }
            let n = match self.sock.read(&mut self.rbuf) {
                Ok(0) => bail!("server closed the connection"),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let now = Instant::now();
            self.received += n as u64;
            self.pushed += n as u64;
            if self.track_reads {
                self.reads.push((self.pushed, now));
            }
            self.dec.push(&self.rbuf[..n]);
            if self.window > 0 && self.received - self.acked >= u64::from(self.window) / 2 {
                self.acked = self.received;
                let seq = (self.received as u32).to_be_bytes();
                self.enc
                    .write_message(CSID_CONTROL, msg_type::ACK, 0, 0, &seq, &mut self.out);
                self.flush()?;
            }
        }
    }

    /// When the chunk-stream byte at `offset` arrived.
    fn arrival(&self, offset: u64) -> Option<Instant> {
        self.reads
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|r| r.1)
    }

    fn control(&mut self, m: &Message) -> Result<()> {
        match m.msg_type {
            msg_type::WINDOW_ACK_SIZE if m.payload.len() >= 4 => {
                self.window = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
            }
            // Ping request (6) -> ping response (7) with the same timestamp.
            msg_type::USER_CONTROL
                if m.payload.len() >= 6
                    && u16::from_be_bytes([m.payload[0], m.payload[1]]) == 6 =>
            {
                let mut p = vec![0, 7];
                p.extend_from_slice(&m.payload[2..6]);
                self.enc.write_message(
                    CSID_CONTROL,
                    msg_type::USER_CONTROL,
                    0,
                    0,
                    &p,
                    &mut self.out,
                );
                self.flush()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// connect + createStream; returns the message stream id.
    fn connect_app(&mut self, url: &Url, publish: bool) -> Result<u32> {
        self.enc.set_chunk_size(4096, &mut self.out)?;
        let obj = Amf0::object([
            ("app", Amf0::string(url.app.clone())),
            ("type", Amf0::string("nonprivate")),
            (
                "flashVer",
                Amf0::string(if publish { "FMLE/3.0" } else { "LNX 9,0,124,2" }),
            ),
            ("tcUrl", Amf0::string(url.tc_url.clone())),
            ("fpad", Amf0::Boolean(false)),
            ("capabilities", Amf0::Number(15.0)),
            ("audioCodecs", Amf0::Number(4071.0)),
            ("videoCodecs", Amf0::Number(252.0)),
            ("videoFunction", Amf0::Number(1.0)),
        ]);
        self.command(
            CSID_COMMAND,
            0,
            &[Amf0::string("connect"), Amf0::Number(1.0), obj],
        );
        self.command(
            CSID_COMMAND,
            0,
            &[Amf0::string("createStream"), Amf0::Number(2.0), Amf0::Null],
        );
        self.flush()?;
        loop {
            let Some((m, _)) = self.next()? else {
                bail!("no answer to connect/createStream");
            };
            if m.msg_type != msg_type::COMMAND_AMF0 {
                continue;
            }
            let vals = amf0::decode_all(&m.payload)?;
            let name = vals.first().and_then(Amf0::as_str).unwrap_or("");
            let txn = vals.get(1).and_then(Amf0::as_f64).unwrap_or(0.0);
            match (name, txn as u32) {
                ("_error", _) => bail!("server refused: {vals:?}"),
                ("_result", 2) => {
                    return vals
                        .get(3)
                        .and_then(Amf0::as_f64)
                        .map(|v| v as u32)
                        .ok_or_else(|| anyhow!("createStream answer without an id"))
                }
                _ => {}
            }
        }
    }
}

/// What one player saw.
#[derive(Default, Clone)]
struct ViewerStats {
    error: Option<String>,
    connected: bool,
    tcp_connect_ms: Option<f64>,
    /// Connect start to the first byte of the first video message (any, sequence header
    /// included) / of the first coded video frame / of the first keyframe.
    first_video_msg_ms: Option<f64>,
    first_video_frame_ms: Option<f64>,
    first_keyframe_ms: Option<f64>,
    video_frames: u64,
    audio_frames: u64,
    video_bytes: u64,
    audio_bytes: u64,
    total_bytes: u64,
    backwards: u64,
    video_ts_first: Option<u64>,
    video_ts_last: u64,
    played_s: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn play_one(url: &Url, seconds: f64, seed: u64) -> ViewerStats {
    let mut st = ViewerStats::default();
    if let Err(e) = play_inner(url, seconds, seed, &mut st) {
        st.error = Some(format!("{e:#}"));
    }
    st
}

fn play_inner(url: &Url, seconds: f64, seed: u64, st: &mut ViewerStats) -> Result<()> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(seconds);
    let mut c = Client::connect(url, seed)?;
    st.tcp_connect_ms = Some(ms(t0.elapsed()));
    let sid = c.connect_app(url, false)?;
    c.track_reads = true;
    c.command(
        CSID_STREAM,
        sid,
        &[
            Amf0::string("play"),
            Amf0::Number(0.0),
            Amf0::Null,
            Amf0::string(url.stream.clone()),
            Amf0::Number(-2000.0),
        ],
    );
    // Set Buffer Length (user control 3): stream id, 1000 ms.
    let mut p = vec![0, 3];
    p.extend_from_slice(&sid.to_be_bytes());
    p.extend_from_slice(&1000u32.to_be_bytes());
    c.enc
        .write_message(CSID_CONTROL, msg_type::USER_CONTROL, 0, 0, &p, &mut c.out);
    c.flush()?;
    c.sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    st.connected = true;
    let mut last_ts = [None::<u64>; 2];
    while Instant::now() < deadline {
        let Some((m, start)) = c.next()? else {
            continue;
        };
        match m.msg_type {
            msg_type::VIDEO | msg_type::AUDIO => {}
            msg_type::COMMAND_AMF0 => {
                if let Ok(vals) = amf0::decode_all(&m.payload) {
                    if vals.first().and_then(Amf0::as_str) == Some("onStatus") {
                        let code = vals
                            .get(3)
                            .and_then(|o| o.get("code"))
                            .and_then(Amf0::as_str)
                            .unwrap_or("");
                        if code.contains("NotFound") || code.contains("Failed") {
                            bail!("play refused: {code}");
                        }
                    }
                }
                continue;
            }
            _ => continue,
        }
        let video = m.msg_type == msg_type::VIDEO;
        let at = c.arrival(start).map(|t| ms(t - t0));
        let (seq_hdr, key) = if video {
            (
                m.payload.get(1) == Some(&0),
                m.payload.first().is_some_and(|b| b >> 4 == 1),
            )
        } else {
            (m.payload.get(1) == Some(&0), false)
        };
        if video && st.first_video_msg_ms.is_none() {
            st.first_video_msg_ms = at;
        }
        if seq_hdr {
            continue;
        }
        let i = usize::from(video);
        if let Some(prev) = last_ts[i] {
            if m.timestamp < prev {
                st.backwards += 1;
            }
        }
        last_ts[i] = Some(m.timestamp);
        if video {
            if st.first_video_frame_ms.is_none() {
                st.first_video_frame_ms = at;
            }
            if key && st.first_keyframe_ms.is_none() {
                st.first_keyframe_ms = at;
            }
            if st.first_keyframe_ms.is_some() {
                c.track_reads = false;
                c.reads = Vec::new();
            }
            st.video_frames += 1;
            st.video_bytes += m.payload.len() as u64;
            st.video_ts_first.get_or_insert(m.timestamp);
            st.video_ts_last = m.timestamp;
        } else {
            st.audio_frames += 1;
            st.audio_bytes += m.payload.len() as u64;
        }
    }
    st.played_s = t0.elapsed().as_secs_f64();
    st.total_bytes = c.received;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn dist(name: &str, v: impl Iterator<Item = Option<f64>>) {
    let mut v: Vec<f64> = v.flatten().collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<28} n={:<4} min={:.1} p50={:.1} p99={:.1} max={:.1} ms",
        v.len(),
        v.first().copied().unwrap_or(f64::NAN),
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

fn rtmp_play(url: &str, viewers: usize, seconds: f64, stagger_ms: u64, fps: f64) -> Result<()> {
    let url = std::sync::Arc::new(parse_url(url)?);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(viewers);
    for i in 0..viewers {
        let url = url.clone();
        let seed = 0x5eed_0000 + i as u64 * 7919;
        handles.push(
            std::thread::Builder::new()
                .name(format!("viewer-{i}"))
                .stack_size(256 << 10)
                .spawn(move || play_one(&url, seconds, seed))?,
        );
        if stagger_ms > 0 {
            std::thread::sleep(Duration::from_millis(stagger_ms));
        }
    }
    let stats: Vec<ViewerStats> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| ViewerStats {
                error: Some("thread panicked".into()),
                ..Default::default()
            })
        })
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let ok: Vec<&ViewerStats> = stats.iter().filter(|s| s.error.is_none()).collect();
    let connected = stats.iter().filter(|s| s.connected).count();
    println!(
        "# sluice-bench rtmp-play: {viewers} viewers x {seconds} s of {}/{}",
        url.app, url.stream
    );
    println!(
        "viewers                      requested={viewers} played={connected} clean={}",
        ok.len()
    );
    let mut errors: Vec<&str> = stats.iter().filter_map(|s| s.error.as_deref()).collect();
    errors.sort();
    errors.dedup();
    for e in errors.iter().take(5) {
        println!("error                        {e}");
    }
    let played: Vec<&ViewerStats> = stats.iter().filter(|s| s.connected).collect();
    dist("tcp+handshake", played.iter().map(|s| s.tcp_connect_ms));
    dist(
        "first video msg byte",
        played.iter().map(|s| s.first_video_msg_ms),
    );
    dist(
        "first video frame byte",
        played.iter().map(|s| s.first_video_frame_ms),
    );
    dist(
        "first keyframe byte",
        played.iter().map(|s| s.first_keyframe_ms),
    );
    let vf: Vec<u64> = played.iter().map(|s| s.video_frames).collect();
    let af: Vec<u64> = played.iter().map(|s| s.audio_frames).collect();
    let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    println!(
        "video frames per viewer      min={} avg={:.1} max={}",
        vf.iter().min().copied().unwrap_or(0),
        avg(&vf),
        vf.iter().max().copied().unwrap_or(0)
    );
    println!(
        "audio frames per viewer      min={} avg={:.1} max={}",
        af.iter().min().copied().unwrap_or(0),
        avg(&af),
        af.iter().max().copied().unwrap_or(0)
    );
    // Delivered: video frames received / frames the received timestamp span should hold.
    let mut cover: Vec<f64> = played
        .iter()
        .filter_map(|s| {
            let first = s.video_ts_first?;
            let span = (s.video_ts_last - first) as f64 / 1000.0;
            Some(100.0 * s.video_frames as f64 / (span * fps + 1.0))
        })
        .collect();
    cover.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "delivered video frames       min={:.1}% avg={:.1}% (received / timestamp span x {fps} fps)",
        cover.first().copied().unwrap_or(f64::NAN),
        cover.iter().sum::<f64>() / cover.len().max(1) as f64
    );
    let backwards: u64 = played.iter().map(|s| s.backwards).sum();
    println!("timestamps going backwards   {backwards}");
    let bytes: u64 = played.iter().map(|s| s.total_bytes).sum();
    let media: u64 = played.iter().map(|s| s.video_bytes + s.audio_bytes).sum();
    let secs = played.iter().map(|s| s.played_s).sum::<f64>() / played.len().max(1) as f64;
    println!(
        "throughput                   {:.1} Mbit/s total, {:.3} Mbit/s media per viewer (avg {:.1} s played, wall {:.1} s)",
        bytes as f64 * 8.0 / 1e6 / secs.max(1e-9),
        media as f64 * 8.0 / 1e6 / secs.max(1e-9) / played.len().max(1) as f64,
        secs,
        wall
    );
    if ok.len() < viewers {
        std::process::exit(1);
    }
    Ok(())
}

fn publish(url: &str, file: &std::path::Path, looped: bool) -> Result<()> {
    let url = parse_url(url)?;
    let data = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
    let body = data
        .get(9 + 4..)
        .filter(|_| data.starts_with(b"FLV"))
        .ok_or_else(|| anyhow!("{}: not an FLV file", file.display()))?;
    let mut c = Client::connect(&url, 1)?;
    let sid = c.connect_app(&url, true)?;
    c.command(
        CSID_STREAM,
        sid,
        &[
            Amf0::string("publish"),
            Amf0::Number(0.0),
            Amf0::Null,
            Amf0::string(url.stream.clone()),
            Amf0::string("live"),
        ],
    );
    c.flush()?;
    c.sock.set_nonblocking(true)?;
    let start = Instant::now();
    let mut base = 0u64;
    let mut last = 0u64;
    let mut first_pass = true;
    loop {
        let mut off = 0;
        while let Some((tag, used)) = flv::parse_tag(&body[off..])? {
            off += used;
            let ts = base + u64::from(tag.timestamp);
            let (typ, csid) = match tag.kind {
                TagKind::Audio => (msg_type::AUDIO, 4),
                TagKind::Video => (msg_type::VIDEO, 6),
                TagKind::Script if first_pass => (msg_type::DATA_AMF0, 5),
                TagKind::Script => continue,
            };
            // Sequence headers once: repeating them on each loop is harmless but pointless.
            if !first_pass && tag.body.get(1) == Some(&0) {
                continue;
            }
            last = last.max(ts);
            let due = start + Duration::from_millis(ts);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            c.enc
                .write_message(csid, typ, sid, ts, tag.body, &mut c.out);
            c.sock.set_nonblocking(false)?;
            c.flush()?;
            c.sock.set_nonblocking(true)?;
            // Drain whatever the server said (acks, status) without blocking.
            let mut sink = [0u8; 4096];
            while let Ok(n) = c.sock.read(&mut sink) {
                if n == 0 {
                    bail!("server closed the connection");
                }
            }
        }
        if !looped {
            return Ok(());
        }
        first_pass = false;
        base = last + 40;
    }
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::RtmpPlay {
            url,
            viewers,
            seconds,
            stagger_ms,
            fps,
        } => rtmp_play(&url, viewers, seconds, stagger_ms, fps),
        Cmd::Publish { url, file, looped } => publish(&url, &file, looped),
    }
}
