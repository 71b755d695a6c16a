//! `sluice-analyse` against real files and servers: its packet lists agree with ffprobe's on
//! every fixture (FLV, MPEG-TS, and MP4 made from them by ffmpeg: regular, `moov` first, and
//! fragmented), `hls --validate` passes on Sluice's and nginx-rtmp's playlists and fails,
//! naming the RFC 8216 rule, on hand-broken ones, and the live kinds (RTMP, RTSP, DTSC) read
//! a running Sluice.
use serde_json::Value;
use sluice_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn analyse_bin() -> PathBuf {
    let p = std::env::var_os("SLUICE_ANALYSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/sluice-analyse"));
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --release --workspace`",
        p.display()
    );
    p
}

/// Runs `sluice-analyse ARGS`; returns the exit code, stdout and stderr.
fn run_analyse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(analyse_bin())
        .args(args)
        .output()
        .expect("run sluice-analyse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice-analyse KIND FILE --json -D 10 --validate`, which must pass; its report.
fn analyse_json(kind: &str, file: &Path) -> Value {
    let f = file.to_str().unwrap();
    let (code, out, err) = run_analyse(&[kind, f, "--json", "-D", "10", "--validate"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{kind} {f}: not JSON ({e}): {err}\n{}", tail(&out, 20)));
    assert_eq!(
        code, 0,
        "{kind} {f} --validate failed: {}\n{err}",
        v["violations"]
    );
    v
}

/// One packet as ffprobe lists it.
#[derive(Debug, Clone)]
struct Probed {
    stream: usize,
    pts: Option<i64>,
    dts: Option<i64>,
    size: usize,
    key: bool,
}

/// ffprobe's streams (index → (codec_type, id, time base num/den)) and packets.
fn ffprobe(file: &Path) -> (Vec<(String, String, i64, i64)>, Vec<Probed>) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("packet=stream_index,pts,dts,size,flags:stream=index,codec_type,id,time_base")
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {}", file.display());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tb = s["time_base"].as_str().unwrap();
            let (n, d) = tb.split_once('/').unwrap();
            (
                s["codec_type"].as_str().unwrap().to_string(),
                s["id"].as_str().unwrap_or("").to_string(),
                n.parse().unwrap(),
                d.parse().unwrap(),
            )
        })
        .collect();
    let packets = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Probed {
            stream: p["stream_index"].as_u64().unwrap() as usize,
            pts: p["pts"].as_i64(),
            dts: p["dts"].as_i64(),
            size: p["size"].as_str().unwrap().parse().unwrap(),
            key: p["flags"].as_str().unwrap().contains('K'),
        })
        .collect();
    (streams, packets)
}

fn of_stream(p: &[Probed], s: usize) -> Vec<&Probed> {
    p.iter().filter(|p| p.stream == s).collect()
}

#[test]
fn flv_packets_agree_with_ffprobe() {
    require_tools(&["ffprobe"]);
    for name in ["bframes.flv", "nobframes.flv"] {
        let file = fixture(name);
        let r = analyse_json("flv", &file);
        let (streams, probed) = ffprobe(&file);
        let tags = r["tags"].as_array().unwrap();
        for (i, (kind, ..)) in streams.iter().enumerate() {
            let want = of_stream(&probed, i);
            // Media tags: coded frames, not sequence headers or end-of-sequence.
            let got: Vec<&Value> = match kind.as_str() {
                "video" => tags
                    .iter()
                    .filter(|t| t["video"]["packet_type"] == "nalu")
                    .collect(),
                "audio" => tags
                    .iter()
                    .filter(|t| t["audio"]["packet_type"] == "raw")
                    .collect(),
                other => panic!("{name}: stream of type {other}"),
            };
            assert!(
                want.len() > 100,
                "{name} {kind}: ffprobe lists {}",
                want.len()
            );
            assert_eq!(got.len(), want.len(), "{name} {kind}: packet count");
            for (g, w) in got.iter().zip(&want) {
                let ts = g["timestamp_ms"].as_i64().unwrap();
                let (body, cts) = if kind == "video" {
                    let v = &g["video"];
                    (v, v["composition_offset_ms"].as_i64().unwrap())
                } else {
                    (&g["audio"], 0)
                };
                assert_eq!(Some(ts), w.dts, "{name} {kind}: DTS at {}", g["offset"]);
                assert_eq!(
                    Some(ts + cts),
                    w.pts,
                    "{name} {kind}: PTS at {}",
                    g["offset"]
                );
                assert_eq!(
                    body["payload_size"].as_u64().unwrap() as usize,
                    w.size,
                    "{name} {kind}: size at {}",
                    g["offset"]
                );
                if kind == "video" {
                    assert_eq!(
                        body["frame_type"] == "key",
                        w.key,
                        "{name}: keyframe at {}",
                        g["offset"]
                    );
                }
            }
        }
        assert_eq!(r["summary"]["keyframes"], 5, "{name}");
        assert_eq!(r["metadata"]["width"], 640.0, "{name}");
    }
}

#[test]
fn ts_packets_agree_with_ffprobe() {
    require_tools(&["ffprobe"]);
    for name in ["hevc.ts", "multi.ts"] {
        let file = fixture(name);
        let r = analyse_json("ts", &file);
        let (streams, probed) = ffprobe(&file);
        let pes = r["pes"].as_array().unwrap();
        // The access units of the demuxer, by the PID their PES came on.
        let pid_at: std::collections::HashMap<u64, u64> = pes
            .iter()
            .map(|p| (p["offset"].as_u64().unwrap(), p["pid"].as_u64().unwrap()))
            .collect();
        let aus = r["access_units"].as_array().unwrap();
        let pmt_streams = r["pmt"][0]["streams"].as_array().unwrap();
        assert_eq!(pmt_streams.len(), streams.len(), "{name}: PMT streams");
        for (i, (kind, id, ..)) in streams.iter().enumerate() {
            let pid = u64::from_str_radix(id.trim_start_matches("0x"), 16).unwrap();
            assert!(
                pmt_streams.iter().any(|s| s["pid"] == pid),
                "{name}: PID {pid} in the PMT"
            );
            let want = of_stream(&probed, i);
            assert!(
                want.len() > 100,
                "{name} {kind}: ffprobe lists {}",
                want.len()
            );
            let got: Vec<&Value> = aus
                .iter()
                .filter(|a| pid_at.get(&a["offset"].as_u64().unwrap()) == Some(&pid))
                .collect();
            assert_eq!(
                got.len(),
                want.len(),
                "{name} PID {pid} ({kind}): access units"
            );
            for (g, w) in got.iter().zip(&want) {
                // The demuxer's ms are 90 kHz ticks / 90, rounded down; audio frames after
                // the first of a PES are timed from the PES by 1024 samples each, in ms.
                let dts = g["dts_ms"].as_i64().unwrap();
                let wdts = w.dts.unwrap() / 90;
                if kind == "video" {
                    assert_eq!(dts, wdts, "{name} PID {pid}: DTS");
                } else {
                    assert!(
                        (dts - wdts).abs() <= 1,
                        "{name} PID {pid}: DTS {dts} vs {wdts}"
                    );
                }
                assert!(
                    (g["pts_ms"].as_i64().unwrap() - w.pts.unwrap() / 90).abs() <= 1,
                    "{name} PID {pid}: PTS {} vs {:?}",
                    g["pts_ms"],
                    w.pts
                );
                if kind == "video" {
                    assert_eq!(
                        g["keyframe"].as_bool(),
                        Some(w.key),
                        "{name} PID {pid}: keyframe"
                    );
                }
            }
            if kind == "video" {
                // One PES per access unit: the PES headers carry ffprobe's ticks exactly.
                let vpes: Vec<&Value> = pes.iter().filter(|p| p["pid"] == pid).collect();
                assert_eq!(vpes.len(), want.len(), "{name} PID {pid}: PES count");
                for (p, w) in vpes.iter().zip(&want) {
                    assert_eq!(p["dts"].as_i64(), w.dts, "{name} PID {pid}: PES DTS ticks");
                    assert_eq!(p["pts"].as_i64(), w.pts, "{name} PID {pid}: PES PTS ticks");
                }
                let stats = r["pids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["pid"] == pid)
                    .unwrap();
                assert_eq!(stats["cc_errors"], 0, "{name} PID {pid}");
            }
        }
        assert!(!r["pcr"].as_array().unwrap().is_empty(), "{name}: PCRs");
    }
}

#[test]
fn mp4_samples_agree_with_ffprobe() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("analyse-mp4");
    for name in ["bframes.flv", "nobframes.flv", "hevc.ts", "multi.ts"] {
        for (label, flags) in [
            ("plain", None),
            ("faststart", Some("+faststart")),
            ("fragmented", Some("frag_keyframe+empty_moov")),
        ] {
            let out = dir.join(format!("{name}.{label}.mp4"));
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-v", "error", "-y", "-i"])
                .arg(fixture(name))
                .args(["-map", "0", "-c", "copy"]);
            if name.ends_with(".ts") {
                cmd.args(["-bsf:a", "aac_adtstoasc"]);
            }
            if let Some(f) = flags {
                cmd.args(["-movflags", f]);
            }
            let st = cmd.arg(&out).status().expect("run ffmpeg");
            assert!(st.success(), "ffmpeg {name} → {label} MP4");
            let what = format!("{name} as {label} MP4");
            let r = analyse_json("mp4", &out);
            assert_eq!(r["fragmented"], label == "fragmented", "{what}");
            if label == "faststart" {
                assert_eq!(r["moov_first"], true, "{what}");
            }
            let (streams, probed) = ffprobe(&out);
            let tracks = r["tracks"].as_array().unwrap();
            assert_eq!(tracks.len(), streams.len(), "{what}: tracks");
            let aus = r["access_units"].as_array().unwrap();
            for (i, (kind, _, num, den)) in streams.iter().enumerate() {
                let want = of_stream(&probed, i);
                let got: Vec<&Value> = aus.iter().filter(|a| a["track"] == i as u64 + 1).collect();
                assert!(
                    want.len() > 100,
                    "{what} {kind}: ffprobe lists {}",
                    want.len()
                );
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{what} track {} ({kind}): samples",
                    i + 1
                );
                let ms = |t: i64| (t * num * 1000) as f64 / *den as f64;
                let (g0, w0) = (got[0]["dts_ms"].as_i64().unwrap(), ms(want[0].dts.unwrap()));
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(
                        g["size"].as_u64().unwrap() as usize,
                        w.size,
                        "{what} {kind}: size"
                    );
                    assert_eq!(
                        g["keyframe"].as_bool(),
                        Some(w.key),
                        "{what} {kind}: keyframe"
                    );
                    let dts = g["dts_ms"].as_i64().unwrap() - g0;
                    let wdts = ms(w.dts.unwrap()) - w0;
                    assert!(
                        (dts as f64 - wdts).abs() <= 1.0,
                        "{what} {kind}: DTS {dts} vs {wdts}"
                    );
                    let off = g["pts_ms"].as_i64().unwrap() - g["dts_ms"].as_i64().unwrap();
                    let woff = ms(w.pts.unwrap() - w.dts.unwrap());
                    assert!(
                        (off as f64 - woff).abs() <= 1.0,
                        "{what} {kind}: offset {off} vs {woff}"
                    );
                }
                // The sample tables (regular files) or fragments count the same samples.
                if label == "fragmented" {
                    let n: u64 = r["fragments"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|f| f["trafs"].as_array().unwrap().iter())
                        .filter(|t| t["track_id"] == i as u64 + 1)
                        .map(|t| t["samples"].as_u64().unwrap())
                        .sum();
                    assert_eq!(n as usize, want.len(), "{what}: trun samples");
                } else {
                    let st = &r["sample_tables"][i];
                    assert_eq!(
                        st["samples"].as_u64().unwrap() as usize,
                        want.len(),
                        "{what}: stsz"
                    );
                    let keys = want.iter().filter(|w| w.key).count();
                    assert_eq!(
                        st["keyframes"].as_u64().unwrap() as usize,
                        keys,
                        "{what}: stss"
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dtsc_index_and_bad_input() {
    // The .dtsh index beside a fixture: a header with tracks and the index members.
    let r = analyse_json("dtsc", &fixture("multi.ts.dtsh"));
    let tracks = r["headers"][0]["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 4);
    let index = r["index"].as_array().unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(index[0]["parts"], 250, "video parts");
    // A truncated FLV: reported up to the cut, the error at the cut tag's offset, exit 1
    // under --validate, 0 without.
    let dir = unique_temp_dir("analyse-bad");
    let bytes = std::fs::read(fixture("bframes.flv")).unwrap();
    let cut = dir.join("cut.flv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let c = cut.to_str().unwrap();
    let (code, out, _) = run_analyse(&["flv", c, "--json", "--validate"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let off = v["error"]["offset"].as_u64().unwrap();
    let last = v["tags"].as_array().unwrap().last().unwrap();
    assert_eq!(
        off,
        last["offset"].as_u64().unwrap() + 11 + last["size"].as_u64().unwrap() + 4
    );
    assert!(off <= bytes.len() as u64 / 2);
    assert_eq!(run_analyse(&["flv", c]).0, 0);
    // Missing file and bad usage: exit 2.
    assert_eq!(run_analyse(&["ts", "/nonexistent/file.ts"]).0, 2);
    assert_eq!(run_analyse(&["nosuchkind", c]).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
