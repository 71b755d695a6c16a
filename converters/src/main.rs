//! `sluice-convert IN OUT`: converts between container formats by extension (FLV ↔ DTSC).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sluice-convert",
    about = "Convert media files between FLV and DTSC"
)]
struct Cli {
    /// Input file (.flv or .dtsc).
    input: String,
    /// Output file (.flv or .dtsc).
    output: String,
}

fn main() {
    let cli = Cli::parse();
    match sluice_converters::convert(&cli.input, &cli.output) {
        Ok(n) => eprintln!("{} -> {}: {n} packets", cli.input, cli.output),
        Err(e) => {
            eprintln!("sluice-convert: {e:#}");
            std::process::exit(1);
        }
    }
}
