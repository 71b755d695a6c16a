//! `sluice-analyse FILE`: prints a media file's tracks and packets, in the shape of
//! MistServer's analysers (positional file or `-` for stdin, `-D` detail level, `-V` validate).
//! Formats come from the converters' one format table (FLV, DTSC).

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sluice-analyse",
    about = "Print and validate FLV and DTSC files"
)]
struct Cli {
    /// File to read, or `-` for stdin (then `--format` is required).
    file: String,
    /// Format name when it cannot be told from the file name (flv, dtsc).
    #[arg(long)]
    format: Option<String>,
    /// Detail: 0 tracks and totals, 1 and up one line per packet.
    #[arg(short = 'D', long = "detail", default_value_t = 0)]
    detail: u8,
    /// Validate: DTS never goes backwards within a track and every video track starts on a
    /// keyframe; exits 1 when not.
    #[arg(short = 'V', long = "validate")]
    validate: bool,
}

fn run(cli: &Cli) -> Result<bool> {
    let fmt = match &cli.format {
        Some(name) => sluice_converters::FORMATS
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("unknown format {name}"))?,
        None => sluice_converters::format_for(&cli.file)
            .with_context(|| format!("{}: unknown format (use --format)", cli.file))?,
    };
    let bytes = if cli.file == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        b
    } else {
        std::fs::read(&cli.file).with_context(|| format!("reading {}", cli.file))?
    };
    let (tracks, packets) = (fmt.read)(&bytes)?;
    for t in &tracks {
        let n = packets.iter().filter(|p| p.track == t.id).count();
        let keys = packets
            .iter()
            .filter(|p| p.track == t.id && p.keyframe)
            .count();
        println!(
            "track {} {} {} {}x{} {} Hz {} ch, init {} bytes: {n} packets, {keys} keyframes",
            t.id,
            t.kind.as_str(),
            t.codec.as_str(),
            t.width,
            t.height,
            t.rate,
            t.channels,
            t.init.len()
        );
    }
    let mut ok = true;
    let mut last: Vec<(u32, u64)> = Vec::new();
    for p in &packets {
        if cli.detail > 0 {
            println!(
                "packet track {} dts {} offset {} {}{} bytes",
                p.track,
                p.dts,
                p.offset,
                if p.keyframe { "key " } else { "" },
                p.data.len()
            );
        }
        if cli.validate {
            match last.iter_mut().find(|(t, _)| *t == p.track) {
                Some((_, d)) => {
                    if p.dts < *d {
                        println!(
                            "INVALID: track {} DTS goes back {} -> {}",
                            p.track, d, p.dts
                        );
                        ok = false;
                    }
                    *d = p.dts;
                }
                None => {
                    let video = tracks
                        .iter()
                        .any(|t| t.id == p.track && t.kind == dtsc::TrackKind::Video);
                    if video && !p.keyframe {
                        println!(
                            "INVALID: video track {} does not start on a keyframe",
                            p.track
                        );
                        ok = false;
                    }
                    last.push((p.track, p.dts));
                }
            }
        }
    }
    if tracks.is_empty() {
        bail!("no tracks");
    }
    println!("{} packets", packets.len());
    Ok(ok)
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("sluice-analyse: {e:#}");
            std::process::exit(2);
        }
    }
}
