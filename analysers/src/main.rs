//! `sluice-analyse KIND INPUT`: shows what is inside a media file or a live stream and checks
//! it against its spec, in the manner of MistServer's analysers. The analysis is in the
//! library (`sluice_analysers`, sans-IO); this file reads the input, calls it and prints.
//!
//! Exit status: 0, or 1 under `--validate` when a rule is broken or the input could not be
//! read to its end; 2 on usage and IO errors.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::Value;
use sluice_analysers::{aac, dtsc, flv, h264, hevc, live, mp4, report, ts};

#[derive(Parser)]
#[command(
    name = "sluice-analyse",
    about = "Print and validate media files (FLV, MPEG-TS, MP4, DTSC, H.264, HEVC, AAC) and live streams (RTMP, HLS, RTSP, DTSC)"
)]
struct Cli {
    #[command(subcommand)]
    kind: Kind,
    /// Detail level 0..=10: 0 totals, 1 headers and tracks (and MP4 boxes to depth 1),
    /// 2 and up every item (tag, packet, NAL unit…; MP4 boxes to this depth).
    #[arg(short = 'D', long = "detail", global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=10))]
    detail: u8,
    /// Exit 1 when any rule is broken or the input could not be read to its end.
    #[arg(long, global = true)]
    validate: bool,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Kind {
    /// FLV file: header, tags, onMetaData (FLV spec v10.1 Annex E).
    Flv {
        /// File, or `-` for stdin.
        input: String,
    },
    /// MPEG-TS file: PAT/PMT, PIDs, PES, PCR, continuity (ISO/IEC 13818-1).
    Ts {
        /// File, or `-` for stdin.
        input: String,
        /// Only list PES headers, PCRs and access units of this PID.
        #[arg(short = 'P', long = "pid")]
        pid: Option<u16>,
    },
    /// MP4 file: box tree, sample tables, fragments (ISO/IEC 14496-12).
    Mp4 {
        /// File, or `-` for stdin.
        input: String,
    },
    /// DTSC file (`.dtsc`, `.dtsh`) or `dtsc://HOST:PORT/STREAM` (MistServer's protocol).
    Dtsc {
        /// File, `-` for stdin, or a dtsc:// URL.
        input: String,
        /// Live: stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Live: stop after this many packets.
        #[arg(long)]
        count: Option<usize>,
    },
    /// H.264 Annex B elementary stream: NAL units, SPS fields (ITU-T H.264).
    H264 {
        /// File, or `-` for stdin.
        input: String,
    },
    /// HEVC Annex B elementary stream: NAL units, SPS fields (ITU-T H.265).
    Hevc {
        /// File, or `-` for stdin.
        input: String,
    },
    /// AAC: an ADTS stream, or an AudioSpecificConfig (ISO/IEC 14496-3).
    Aac {
        /// File, or `-` for stdin; with `--asc`, the config as hex or a file holding it.
        input: String,
        /// INPUT is a raw AudioSpecificConfig (hex digits, or a file).
        #[arg(long)]
        asc: bool,
    },
    /// RTMP play: connects, plays and prints the messages (`rtmp://HOST[:PORT]/APP/STREAM`).
    Rtmp {
        /// The URL.
        url: String,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many media messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// HLS: fetches the playlist (each variant of a master) and its segments and checks
    /// RFC 8216 rules.
    Hls {
        /// The playlist URL.
        url: String,
        /// Watch a live playlist this many seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Only this variant of a master playlist (0-based).
        #[arg(long)]
        variant: Option<usize>,
    },
    /// RTSP: OPTIONS and DESCRIBE, and the SDP (RFC 2326, RFC 4566).
    Rtsp {
        /// `rtsp://HOST[:PORT]/PATH`.
        url: String,
    },
}

fn read_input(input: &str) -> Result<Vec<u8>> {
    if input == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading stdin")?;
        Ok(b)
    } else {
        std::fs::read(input).with_context(|| format!("reading {input}"))
    }
}

fn json<T: Serialize>(kind: &str, r: &T) -> Result<Value> {
    let mut v = serde_json::to_value(r)?;
    if let Value::Object(m) = &mut v {
        // `kind` first.
        let mut o = serde_json::Map::new();
        o.insert("kind".into(), Value::String(kind.into()));
        o.extend(std::mem::take(m));
        v = Value::Object(o);
    }
    Ok(v)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

fn run(cli: &Cli) -> Result<Value> {
    match &cli.kind {
        Kind::Flv { input } => json("flv", &flv::analyse(&read_input(input)?)),
        Kind::Ts { input, pid } => json("ts", &ts::analyse(&read_input(input)?, *pid)),
        Kind::Mp4 { input } => json("mp4", &mp4::analyse(&read_input(input)?, cli.detail.max(1))),
        Kind::Dtsc {
            input,
            duration,
            count,
        } => {
            if input.starts_with("dtsc://") {
                json("dtsc", &live::dtsc(input, secs(*duration), *count)?)
            } else {
                json("dtsc", &dtsc::analyse(&read_input(input)?))
            }
        }
        Kind::H264 { input } => json("h264", &h264::analyse(&read_input(input)?)),
        Kind::Hevc { input } => json("hevc", &hevc::analyse(&read_input(input)?)),
        Kind::Aac { input, asc } => {
            if *asc {
                let bytes = match aac::parse_hex(input) {
                    Some(b) => b,
                    None => read_input(input)?,
                };
                json("aac", &aac::analyse_asc(&bytes))
            } else {
                json("aac", &aac::analyse(&read_input(input)?))
            }
        }
        Kind::Rtmp {
            url,
            duration,
            count,
        } => json("rtmp", &live::rtmp(url, secs(*duration), *count)?),
        Kind::Hls {
            url,
            duration,
            variant,
        } => json("hls", &live::hls(url, secs(*duration), *variant)?),
        Kind::Rtsp { url } => json("rtsp", &live::rtsp(url)?),
    }
}

fn main() {
    let cli = Cli::parse();
    let v = match run(&cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sluice-analyse: {e:#}");
            std::process::exit(2);
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let mut s = String::new();
        report::render_text(&v, cli.detail, &mut s);
        print!("{s}");
    }
    if cli.validate && report::has_problems(&v) {
        std::process::exit(1);
    }
}
