//! `sluice-bench`: load generators for Sluice (and any RTMP/HLS server).
//!
//! * `load`: one event-driven process with M RTMP publishers (looping an FLV fixture at real
//!   time), N RTMP players and K HLS players; per-packet publish→play latency, delivery,
//!   first-frame times, errors by kind; JSON report; non-zero exit on any loss or error.
//!   See `load.rs`.
//! * `rtmp-play`: N RTMP players of an external stream (the `load` engine without a
//!   publisher): each plays `--seconds` from its TCP connect.
//! * `attack`: hostile clients (slowloris, stalled viewers, garbage, RTMP pre-connect
//!   messages, wildcard names, a connect storm) from 127.0.0.2+ while honest RTMP and HLS
//!   players watch from 127.0.0.1; one table row per attack, non-zero exit on a missed target.
//!   See `attack.rs` and `bench/attack.sh`.
//! * `publish`: publishes an FLV file at real time over RTMP, looping with continuous
//!   timestamps (the benchmark script uses ffmpeg instead; this is the dependency-free option).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

mod attack;
mod hls;
mod load;
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
    /// Publishers, RTMP players and HLS players in one event loop; exits 1 on loss or errors.
    Load {
        /// rtmp://HOST:PORT/APP/STREAM, `{i}` = publisher index.
        #[arg(long)]
        publish_url: Option<String>,
        /// Number of publishers (needs --file).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// FLV fixture the publishers loop (H.264/AAC).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// rtmp://HOST:PORT/APP/STREAM, `{i}` = j % max(publishers, 1).
        #[arg(long)]
        play_url: Option<String>,
        /// Number of RTMP players.
        #[arg(long, default_value_t = 0)]
        players: usize,
        /// HLS playlist URL template, `{i}` as for --play-url.
        #[arg(long)]
        hls_url: Option<String>,
        /// Number of HLS players.
        #[arg(long, default_value_t = 0)]
        hls_players: usize,
        /// Measurement length: players play this long (after the ramp), seconds.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Delay between starting two players, ms (0: all at once).
        #[arg(long, default_value_t = 0)]
        ramp_ms: u64,
        /// Publishers run alone this long before players start, ms.
        #[arg(long, default_value_t = 3000)]
        warmup_ms: u64,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Nominal video frame rate (gap threshold, delivery without a publisher).
        #[arg(long, default_value_t = 25.0)]
        fps: f64,
    },
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
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Hostile clients against a running server while honest viewers watch; exits 1 on a
    /// missed target.
    Attack(attack::AttackConfig),
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
            self.received += n as u64;
            self.pushed += n as u64;
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
    let cfg = match Cli::parse().cmd {
        Cmd::Load {
            publish_url,
            publishers,
            file,
            play_url,
            players,
            hls_url,
            hls_players,
            seconds,
            ramp_ms,
            warmup_ms,
            json,
            fps,
        } => load::LoadConfig {
            publish_url,
            publishers,
            file,
            play_url,
            players,
            hls_url,
            hls_players,
            seconds,
            ramp_ms,
            warmup_ms,
            json,
            fps,
            quiet: false,
        },
        Cmd::RtmpPlay {
            url,
            viewers,
            seconds,
            stagger_ms,
            fps,
            json,
        } => load::LoadConfig {
            publish_url: None,
            publishers: 0,
            file: None,
            play_url: Some(url),
            players: viewers,
            hls_url: None,
            hls_players: 0,
            seconds,
            ramp_ms: stagger_ms,
            warmup_ms: 0,
            json,
            fps,
            quiet: false,
        },
        Cmd::Publish { url, file, looped } => return publish(&url, &file, looped),
        Cmd::Attack(cfg) => {
            let code = attack::run(cfg)?;
            std::process::exit(code);
        }
    };
    let code = load::run(cfg)?;
    std::process::exit(code);
}
