//! `sluice-convert IN OUT`: converts between FLV, MPEG-TS, MP4 and DTSC (see the library docs).
//! Exit status 0 on success, 1 on a failed conversion (the message names the byte offset of
//! a corrupt input), 2 on a usage error.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use clap::Parser;
use sluice_converters::{convert, supported, Format, Options, Progress, TrackSel};

#[derive(Parser)]
#[command(
    name = "sluice-convert",
    about = "Convert media files between FLV, MPEG-TS, MP4 (moov first or fragmented) and DTSC",
    after_help = "Formats come from the file extensions, else --from/--to; an input's format is \
                  also recognised by its first bytes. `-` reads stdin or writes stdout."
)]
struct Cli {
    /// Input file, or `-` for stdin.
    input: String,
    /// Output file, or `-` for stdout (then --to is needed).
    output: String,
    /// Input format: flv, ts, mp4, dtsc.
    #[arg(long)]
    from: Option<String>,
    /// Output format: flv, ts, mp4 (moov first), fmp4 (fragmented), dtsc.
    #[arg(long)]
    to: Option<String>,
    /// Tracks to keep: kinds (video,audio), codecs (h264,aac) or track ids (1,3).
    #[arg(long)]
    tracks: Option<String>,
    /// Start, ms: output starts at the keyframe at or before it, timestamps from 0.
    #[arg(long)]
    start: Option<u64>,
    /// End, ms: packets from this DTS on are left out.
    #[arg(long)]
    end: Option<u64>,
    /// Print the summary as JSON (on stdout; on stderr when stdout is the output).
    #[arg(long)]
    json: bool,
    /// No summary line.
    #[arg(short, long)]
    quiet: bool,
}

fn format_arg(name: &Option<String>) -> Option<Format> {
    let n = name.as_ref()?;
    match Format::from_name(n) {
        Some(f) => Some(f),
        None => {
            eprintln!(
                "sluice-convert: unknown format '{n}'; supported: {}",
                supported()
            );
            std::process::exit(2);
        }
    }
}

/// A progress bar on stderr, redrawn at most every 100 ms, only when stderr is a terminal.
struct Bar {
    on: bool,
    began: Instant,
    drawn: bool,
}

impl Bar {
    fn draw(&mut self, p: Progress) {
        if !self.on {
            return;
        }
        let mb = p.done as f64 / 1e6;
        let rate = mb / self.began.elapsed().as_secs_f64().max(1e-3);
        let line = match p.total {
            Some(t) if t > 0 => {
                let frac = (p.done as f64 / t as f64).min(1.0);
                let filled = (frac * 30.0) as usize;
                format!(
                    "\r[{}{}] {:3.0}% {mb:.1}/{:.1} MB {rate:.0} MB/s ",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    frac * 100.0,
                    t as f64 / 1e6
                )
            }
            _ => format!("\r{mb:.1} MB {rate:.0} MB/s "),
        };
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(line.as_bytes());
        let _ = e.flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r{}\r", " ".repeat(70));
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let tracks = match cli.tracks.as_deref().map(TrackSel::parse_list) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("sluice-convert: {e:#}");
            std::process::exit(2);
        }
        None => Vec::new(),
    };
    let opts = Options {
        from: format_arg(&cli.from),
        to: format_arg(&cli.to),
        tracks,
        start_ms: cli.start,
        end_ms: cli.end,
    };
    let mut bar = Bar {
        on: std::io::stderr().is_terminal() && !cli.quiet,
        began: Instant::now(),
        drawn: false,
    };
    let result = convert(&cli.input, &cli.output, &opts, &mut |p| bar.draw(p));
    bar.clear();
    match result {
        Ok(s) => {
            if cli.json && cli.output == "-" {
                // stdout carries the media.
                eprintln!("{}", s.to_json());
            } else if cli.json {
                println!("{}", s.to_json());
            } else if !cli.quiet {
                eprintln!("{}", s.line());
            }
        }
        Err(e) => {
            eprintln!("sluice-convert: {e:#}");
            std::process::exit(1);
        }
    }
}
