//! Runs the HLS load generator without the CLI:
//! `cargo run --release -p sluice-bench --example hls_try -- URL [PLAYERS] [SECONDS] [RAMP_MS]`.
//! `cargo test -p sluice-bench --example hls_try` runs the module's unit tests.

#[path = "../src/hls.rs"]
#[allow(dead_code)]
mod hls;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first().cloned() else {
        eprintln!("usage: hls_try URL [PLAYERS] [SECONDS] [RAMP_MS]");
        std::process::exit(2);
    };
    let num = |i: usize, d: f64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = hls::HlsConfig {
        url_template: url,
        players: num(1, 10.0) as usize,
        seconds: num(2, 30.0),
        ramp_ms: num(3, 0.0) as u64,
        publishers: 1,
    };
    let out = hls::run(cfg);
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
