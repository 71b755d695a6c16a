//! `sluice-analyse` against real files and servers: its packet lists agree with ffprobe's on
//! every fixture (FLV, MPEG-TS, and MP4 made from them by ffmpeg: regular, `moov` first, and
//! fragmented), `hls --validate` passes on Sluice's and nginx-rtmp's playlists and fails,
//! naming the RFC 8216 rule, on hand-broken ones, the elementary stream kinds (H.264, HEVC,
//! AAC in ADTS, cut from the fixtures by ffmpeg) agree with ffprobe and fail `--validate` on
//! damaged copies, and the live kinds (RTMP, RTSP, DTSC) read a running Sluice.
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

/// One stream as ffprobe lists it: codec_type, id, time base numerator and denominator.
type ProbedStream = (String, String, i64, i64);

/// ffprobe's streams (by index) and packets.
fn ffprobe(file: &Path) -> (Vec<ProbedStream>, Vec<Probed>) {
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
    // A .dtsh index: a header with tracks and the index members. This test makes its own
    // (sluice-convert writes one beside its DTSC output) rather than relying on one a server
    // left beside the fixture in another test.
    let dir = unique_temp_dir("analyse-bad");
    let to_dtsc = |name: &str| {
        let out = dir.join(format!("{name}.dtsc"));
        let conv = Command::new(sluice_bin().with_file_name("sluice-convert"))
            .arg(fixture(name))
            .arg(&out)
            .output()
            .expect("run sluice-convert");
        assert!(
            conv.status.success(),
            "sluice-convert {name}: {}",
            String::from_utf8_lossy(&conv.stderr)
        );
        out
    };
    let multi = to_dtsc("multi.ts");
    let r = analyse_json("dtsc", &multi.with_extension("dtsc.dtsh"));
    let tracks = r["headers"][0]["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 4);
    let index = r["index"].as_array().unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(index[0]["parts"], 250, "video parts");
    // TS carries no frame rate: the HEVC track's comes from its SPS's VUI timing.
    let r = analyse_json("dtsc", &to_dtsc("hevc.ts"));
    let video = &r["headers"][0]["tracks"][0];
    assert_eq!(
        (&video["codec"], &video["fpks"]),
        (&"HEVC".into(), &25_000.into())
    );
    // A truncated FLV: reported up to the cut, the error at the cut tag's offset, exit 1
    // under --validate, 0 without.
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

/// `ffmpeg -i INPUT ARGS… OUT`, which must succeed: an elementary stream cut from a fixture.
fn ffmpeg_extract(input: &Path, args: &[&str], out: &Path) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg {args:?} {}", out.display());
}

/// ffprobe's first stream of `file` with its packets counted (`nb_read_packets`), and how
/// many of those packets it flags as keyframes.
fn probe_elementary(file: &Path) -> (Value, usize) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {}", file.display());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, packets) = ffprobe(file);
    (
        v["streams"][0].clone(),
        packets.iter().filter(|p| p.key).count(),
    )
}

/// A copy of `file` as `name` in `dir` with `len` bytes zeroed from `at`.
fn zeroed_copy(file: &Path, dir: &Path, name: &str, at: usize, len: usize) -> PathBuf {
    let mut b = std::fs::read(file).unwrap();
    b[at..at + len].fill(0);
    let out = dir.join(name);
    std::fs::write(&out, b).unwrap();
    out
}

/// `sluice-analyse KIND FILE --json --validate` on a damaged file: exit 1, and the offsets
/// of its violations and read error.
fn analyse_broken(kind: &str, file: &Path) -> (Vec<u64>, Option<u64>) {
    let f = file.to_str().unwrap();
    let (code, out, err) = run_analyse(&[kind, f, "--json", "--validate"]);
    assert_eq!(code, 1, "{kind} {f} --validate: {}\n{err}", tail(&out, 20));
    let v: Value = serde_json::from_str(&out).unwrap();
    let offsets = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["offset"].as_u64())
        .collect();
    (offsets, v["error"]["offset"].as_u64())
}

/// H.264 and HEVC Annex B streams cut from the fixtures by ffmpeg: `sluice-analyse
/// h264|hevc --json --validate` passes and agrees with ffprobe on the same file (access units
/// = ffprobe's packets, IDR/IRAP pictures = its keyframes, profile, level, size, and for
/// H.264 the VUI frame rate); 256 bytes zeroed in the middle make `--validate` exit 1 with a
/// violation (§7.4.1 / §7.4.2: 0x000000 within a NAL unit) at the zeroed bytes.
#[test]
fn h264_and_hevc_agree_with_ffprobe() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("analyse-annexb");
    let h264 = dir.join("x.h264");
    ffmpeg_extract(
        &fixture("bframes.flv"),
        &["-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"],
        &h264,
    );
    let hevc = dir.join("x.hevc");
    ffmpeg_extract(&fixture("hevc.ts"), &["-c:v", "copy", "-f", "hevc"], &hevc);
    for (kind, file, profile, keys) in [
        ("h264", &h264, "High", "idr_pictures"),
        ("hevc", &hevc, "Main", "irap_pictures"),
    ] {
        let r = analyse_json(kind, file);
        let (probed, keyframes) = probe_elementary(file);
        assert_eq!(probed["codec_name"], kind);
        let packets: u64 = probed["nb_read_packets"].as_str().unwrap().parse().unwrap();
        assert_eq!(r["access_units"], packets, "{kind}: access units");
        assert_eq!(packets, 250, "{kind}: 10 s at 25 fps");
        assert_eq!(r[keys], keyframes as u64, "{kind}: keyframes");
        assert_eq!(keyframes, 5, "{kind}: a keyframe every 2 s");
        assert_eq!(
            r["nal_unit_count"],
            r["nal_units"].as_array().unwrap().len()
        );
        let sps = r["sps"].as_array().unwrap();
        assert!(!sps.is_empty(), "{kind}: no SPS");
        for s in sps {
            assert_eq!(probed["profile"], profile, "{kind}");
            assert_eq!(s["profile"], profile, "{kind}");
            assert_eq!(s["level_idc"], probed["level"], "{kind}: level");
            assert_eq!(
                (&s["width"], &s["height"]),
                (&probed["width"], &probed["height"])
            );
            assert_eq!(
                (s["width"].as_u64(), s["height"].as_u64()),
                (Some(640), Some(360))
            );
        }
        assert_eq!(probed["r_frame_rate"], "25/1");
        assert_eq!(sps[0]["fps"], 25.0, "{kind}: VUI timing");
        // The raw timing: H.264 counts two ticks a frame (E.2.1), HEVC one (E.3.1).
        let (tick, scale) = (
            sps[0]["num_units_in_tick"].as_u64().unwrap(),
            sps[0]["time_scale"].as_u64().unwrap(),
        );
        let per_frame = if kind == "h264" { 2 } else { 1 };
        assert_eq!(scale, 25 * per_frame * tick, "{kind}: {}", sps[0]);

        // Zeroes in the middle, ending before a byte that cannot end a start code.
        let data = std::fs::read(file).unwrap();
        let mut at = data.len() / 2;
        while data[at + 256] <= 2 {
            at += 1;
        }
        let bad = zeroed_copy(file, &dir, &format!("zeroed.{kind}"), at, 256);
        let (offsets, _) = analyse_broken(kind, &bad);
        let range = at as u64 - 2..(at + 256) as u64;
        assert!(
            offsets.iter().any(|o| range.contains(o)),
            "{kind}: zeroed at {at}, violations at {offsets:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The AAC track of bframes.flv as ADTS (ffmpeg `-f adts`): `sluice-analyse aac --json
/// --validate` passes and agrees with ffprobe (AAC LC, 44100 Hz, 2 channels, 432 frames =
/// its packets, duration = frames × 1024 / 44100 ≈ 10 s); the copy with 1024 bytes zeroed in
/// the middle (at least one frame header among them) fails with a §1.A.2.2.1 violation at
/// those bytes, and the copy without its last 100 bytes fails with the read error at the
/// last frame's header.
#[test]
fn aac_adts_agrees_with_ffprobe() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("analyse-adts");
    let aac = dir.join("x.aac");
    ffmpeg_extract(
        &fixture("bframes.flv"),
        &["-c:a", "copy", "-f", "adts"],
        &aac,
    );
    let r = analyse_json("aac", &aac);
    let (probed, _) = probe_elementary(&aac);
    assert_eq!(
        (probed["codec_name"].as_str(), probed["profile"].as_str()),
        (Some("aac"), Some("LC"))
    );
    assert_eq!(r["object_type"], 2);
    assert_eq!(
        r["sample_rate"].to_string(),
        probed["sample_rate"].as_str().unwrap()
    );
    assert_eq!(r["sample_rate"], 44100);
    assert_eq!(r["channel_config"], probed["channels"]);
    assert_eq!(r["channel_config"], 2);
    let packets: u64 = probed["nb_read_packets"].as_str().unwrap().parse().unwrap();
    assert_eq!(r["frame_count"], packets);
    assert_eq!(packets, 432);
    let duration = r["duration_ms"].as_f64().unwrap();
    assert!(
        (duration - packets as f64 * 1024.0 * 1000.0 / 44100.0).abs() < 0.01,
        "duration {duration} ms"
    );
    assert!(
        (9_900.0..10_200.0).contains(&duration),
        "duration {duration} ms"
    );
    let frames = r["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 432);

    let len = std::fs::metadata(&aac).unwrap().len() as usize;
    let at = len / 2;
    let bad = zeroed_copy(&aac, &dir, "zeroed.aac", at, 1024);
    let (offsets, _) = analyse_broken("aac", &bad);
    let range = at as u64..(at + 1024) as u64;
    assert!(
        offsets.iter().any(|o| range.contains(o)),
        "zeroed at {at}, violations at {offsets:?}"
    );

    let mut b = std::fs::read(&aac).unwrap();
    b.truncate(len - 100);
    let cut = dir.join("cut.aac");
    std::fs::write(&cut, &b).unwrap();
    let (_, error) = analyse_broken("aac", &cut);
    let last = frames
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .rfind(|&o| o < (len - 100) as u64);
    assert_eq!(error, last, "truncated at {}", len - 100);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sluice-analyse ARGS --json` on a thread; its exit code and report.
fn analyse_live(args: Vec<String>) -> std::thread::JoinHandle<(i32, Value, String)> {
    std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_analyse(&a);
        let v = serde_json::from_str(&out).unwrap_or(Value::Null);
        (code, v, err)
    })
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Asserts an `hls --validate` run passed and checked segments that start on keyframes.
fn assert_hls_valid(what: &str, (code, v, err): &(i32, Value, String), min_segments: usize) {
    assert_eq!(
        *code,
        0,
        "{what}: hls --validate failed: {}\n{err}",
        serde_json::to_string_pretty(&v["violations"]).unwrap_or_default()
    );
    let media = v["media"].as_array().expect("media playlists");
    assert!(!media.is_empty(), "{what}: no media playlist");
    for m in media {
        let segs = m["segments"].as_array().unwrap();
        assert!(
            segs.len() >= min_segments,
            "{what}: {} segments checked: {m}",
            segs.len()
        );
        for s in segs {
            assert_eq!(s["starts_with_keyframe"], true, "{what}: {s}");
            assert!(s["video_frames"].as_u64().unwrap() > 0, "{what}: {s}");
        }
        assert!(
            m["reloads"].as_array().unwrap().len() >= 2,
            "{what}: reloads {}",
            m["reloads"]
        );
        assert!(m["target_duration_s"].as_u64().unwrap() >= 1, "{what}");
    }
}

#[test]
fn live_kinds_against_sluice() {
    require_tools(&["ffmpeg"]);
    let (rtsp_port, dtsc_port) = (free_port(), free_port());
    let srv = Server::start_with_config(|cfg| {
        let p = cfg["config"]["protocols"].as_array_mut().unwrap();
        p.push(
            serde_json::json!({"connector": "RTSP", "port": rtsp_port, "interface": "127.0.0.1"}),
        );
        p.push(
            serde_json::json!({"connector": "DTSC", "port": dtsc_port, "interface": "127.0.0.1"}),
        );
    });
    let (publisher, _) = publish_fixture_until(&srv, "live", &Server::hls_path("live"));
    let hls_ts = analyse_live(args(&[
        "hls",
        &srv.hls_url("live"),
        "--duration",
        "6",
        "--validate",
        "--json",
    ]));
    let cmaf = srv.http_url("/cmaf/live/index.m3u8");
    let hls_cmaf = analyse_live(args(&[
        "hls",
        &cmaf,
        "--duration",
        "6",
        "--validate",
        "--json",
    ]));
    let rtmp = analyse_live(args(&[
        "rtmp",
        &srv.rtmp_url("live"),
        "--duration",
        "3",
        "--json",
    ]));
    let rtsp = analyse_live(args(&[
        "rtsp",
        &format!("rtsp://127.0.0.1:{rtsp_port}/live"),
        "--validate",
        "--json",
    ]));
    let dtsc = analyse_live(args(&[
        "dtsc",
        &format!("dtsc://127.0.0.1:{dtsc_port}/live"),
        "--duration",
        "3",
        "--validate",
        "--json",
    ]));

    let (code, v, err) = rtmp.join().unwrap();
    assert_eq!(code, 0, "rtmp: {err}");
    let s = &v["summary"];
    assert!(s["video_messages"].as_u64().unwrap() > 20, "rtmp: {s}");
    assert!(s["audio_messages"].as_u64().unwrap() > 20, "rtmp: {s}");
    assert_eq!(s["video_sequence_headers"], 1, "rtmp: {s}");
    assert_eq!(s["audio_sequence_headers"], 1, "rtmp: {s}");
    assert!(s["keyframes"].as_u64().unwrap() >= 1, "rtmp: {s}");
    assert_eq!(
        (s["video_codec"].as_str(), s["audio_codec"].as_str()),
        (Some("AVC"), Some("AAC"))
    );
    assert!(
        v["status"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "playing"),
        "rtmp: {}",
        v["status"]
    );
    assert_eq!(
        v["violations"].as_array().unwrap().len(),
        0,
        "rtmp: {}",
        v["violations"]
    );
    // Every message, as MistServer's RTMP analyser prints them: protocol control first,
    // `_result` for connect, `onStatus` NetStream.Play.Start on the play's message stream,
    // then media on their chunk streams with that non-zero message stream id.
    let msgs = v["messages"].as_array().unwrap();
    let of_type = |t: &str| -> Vec<&Value> { msgs.iter().filter(|m| m["type"] == t).collect() };
    for (t, id, key) in [
        ("window_ack_size", 5, "window"),
        ("set_peer_bandwidth", 6, "window"),
        ("set_chunk_size", 1, "chunk_size"),
    ] {
        let m = *of_type(t)
            .first()
            .unwrap_or_else(|| panic!("rtmp: no {t} message"));
        assert_eq!(
            (
                m["type_id"].as_u64(),
                m["csid"].as_u64(),
                m["msid"].as_u64()
            ),
            (Some(id), Some(2), Some(0)),
            "{m}"
        );
        assert!(m["control"][key].as_u64().unwrap() > 0, "{m}");
    }
    let commands = of_type("command");
    let connect = commands
        .iter()
        .find(|m| m["command"] == "_result" && m["transaction_id"] == 1.0)
        .unwrap_or_else(|| panic!("rtmp: no _result for connect: {commands:?}"));
    assert_eq!(
        connect["code"], "NetConnection.Connect.Success",
        "{connect}"
    );
    assert_eq!(
        (connect["type_id"].as_u64(), connect["msid"].as_u64()),
        (Some(20), Some(0))
    );
    let start = commands
        .iter()
        .find(|m| m["command"] == "onStatus" && m["code"] == "NetStream.Play.Start")
        .unwrap_or_else(|| panic!("rtmp: no onStatus NetStream.Play.Start: {commands:?}"));
    let play_msid = start["msid"].as_u64().unwrap();
    assert!(play_msid > 0, "{start}");
    let media: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["type"] == "video" || m["type"] == "audio")
        .collect();
    assert_eq!(
        media.len() as u64,
        s["video_messages"].as_u64().unwrap() + s["audio_messages"].as_u64().unwrap()
    );
    for m in &media {
        assert_eq!(m["msid"].as_u64(), Some(play_msid), "{m}");
        assert!(m["csid"].as_u64().unwrap() >= 3, "{m}");
        assert!(m["size"].as_u64().unwrap() > 0, "{m}");
    }
    let metadata = of_type("data")
        .into_iter()
        .find(|m| m["data"][0] == "onMetaData");
    assert!(
        metadata.is_some_and(|m| m["msid"].as_u64() == Some(play_msid)),
        "rtmp: no onMetaData on the play's stream: {:?}",
        of_type("data")
    );
    let first_media = msgs
        .iter()
        .position(|m| m["type"] == "video" || m["type"] == "audio");
    let start_at = msgs
        .iter()
        .position(|m| m["code"] == "NetStream.Play.Start");
    assert!(
        start_at < first_media,
        "rtmp: media before NetStream.Play.Start"
    );

    let (code, v, err) = rtsp.join().unwrap();
    assert_eq!(code, 0, "rtsp: {err} {v}");
    assert_eq!(
        (v["options_status"].as_u64(), v["describe_status"].as_u64()),
        (Some(200), Some(200))
    );
    let sdp = v["sdp"].as_str().unwrap();
    assert!(sdp.contains("H264/90000"), "{sdp}");
    assert!(sdp.to_ascii_uppercase().contains("MPEG4-GENERIC"), "{sdp}");
    assert_eq!(v["media"].as_array().unwrap().len(), 2, "{sdp}");

    let (code, v, err) = dtsc.join().unwrap();
    assert_eq!(code, 0, "dtsc: {err} {}", v["violations"]);
    let tracks = v["headers"][0]["tracks"].as_array().expect("a DTSC header");
    let codecs: Vec<&str> = tracks
        .iter()
        .map(|t| t["codec"].as_str().unwrap())
        .collect();
    assert!(
        codecs.contains(&"H264") && codecs.contains(&"AAC"),
        "{codecs:?}"
    );
    assert_eq!(v["commands"][0]["cmd"], "hi", "{}", v["commands"]);
    let packets = v["packets"].as_array().unwrap();
    assert!(packets.len() > 50, "dtsc: {} packets", packets.len());
    assert_eq!(
        packets[0]["keyframe"], true,
        "dtsc: the first packet is a keyframe"
    );

    assert_hls_valid("Sluice HLS (TS)", &hls_ts.join().unwrap(), 2);
    assert_hls_valid("Sluice HLS (fMP4)", &hls_cmaf.join().unwrap(), 2);
    let _ = stop_client(publisher);
}

/// nginx with the RTMP module writing HLS into `dir`, served by its own HTTP server; every
/// path it writes is under `dir`. Stopped (by pid) when dropped.
struct NginxHls {
    child: std::process::Child,
    rtmp: u16,
    http: u16,
}

impl NginxHls {
    fn start(dir: &Path) -> NginxHls {
        require_tools(&["nginx"]);
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "{module} missing: run scripts/install-test-deps.sh"
        );
        for d in ["logs", "hls", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let (rtmp, http) = (free_port(), free_port());
        let root = unsafe { libc::geteuid() } == 0;
        let conf = format!(
            "load_module {module};\n{user}worker_processes 1;\ndaemon off;\n\
             error_log {d}/logs/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{rtmp}; application live {{ live on; \
             hls on; hls_path {d}/hls; hls_fragment 2s; hls_playlist_length 12s; }} }} }}\n\
             http {{ access_log {d}/logs/access.log; client_body_temp_path {d}/tmp/body; \
             proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fastcgi; \
             uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi; \
             types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }} \
             server {{ listen 127.0.0.1:{http}; location /hls {{ root {d}; \
             add_header Cache-Control no-cache; }} }} }}\n",
            user = if root { "user root;\n" } else { "" },
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("logs/stderr")).unwrap())
            .spawn()
            .expect("start nginx");
        let n = NginxHls { child, rtmp, http };
        let up = poll(std::time::Duration::from_secs(5), || {
            (port_accepts(rtmp) && port_accepts(http)).then_some(())
        });
        assert!(
            up.is_some(),
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
        );
        n
    }
}

impl Drop for NginxHls {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers; SIGKILL if it has not within 3 s.
        sigterm(self.child.id());
        let ended = poll(std::time::Duration::from_secs(3), || {
            self.child.try_wait().ok().flatten().map(|_| ())
        });
        if ended.is_none() {
            sigkill(self.child.id());
            let _ = self.child.wait();
        }
    }
}

#[test]
fn hls_validate_passes_on_nginx_rtmp() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("analyse-nginx");
    let nginx = NginxHls::start(&dir);
    let publisher = ffmpeg_publish(
        &dir,
        "publisher",
        &fixture("bframes.flv"),
        &format!("rtmp://127.0.0.1:{}/live/s", nginx.rtmp),
        40,
    );
    let url = format!("http://127.0.0.1:{}/hls/s.m3u8", nginx.http);
    let ready = poll(std::time::Duration::from_secs(15), || {
        http_get(nginx.http, "/hls/s.m3u8")
            .ok()
            .filter(|r| r.status == 200 && r.text().contains("#EXTINF"))
    });
    assert!(
        ready.is_some(),
        "nginx-rtmp wrote no playlist: {}",
        publisher.stderr_now()
    );
    let run = analyse_live(args(&[
        "hls",
        &url,
        "--duration",
        "6",
        "--validate",
        "--json",
    ]))
    .join()
    .unwrap();
    assert_hls_valid("nginx-rtmp HLS", &run, 2);
    let _ = stop_client(publisher);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `python3 -m http.server` serving `dir` on a free port of 127.0.0.1; killed by pid when
/// dropped.
struct StaticHttp {
    child: std::process::Child,
    port: u16,
}

impl StaticHttp {
    fn start(dir: &Path) -> StaticHttp {
        require_tools(&["python3"]);
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let up = poll(std::time::Duration::from_secs(5), || {
            port_accepts(port).then_some(())
        });
        assert!(up.is_some(), "python3 http.server did not listen");
        StaticHttp { child, port }
    }
}

impl Drop for StaticHttp {
    fn drop(&mut self) {
        sigkill(self.child.id());
        let _ = self.child.wait();
    }
}

fn playlist(target: u64, seq: u64, segs: &[(&str, f64)], ended: bool) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{seq}\n"
    );
    for (uri, d) in segs {
        s.push_str(&format!("#EXTINF:{d:.3},\n{uri}\n"));
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    s
}

/// `hls --validate` on a hand-made playlist: exit 1, and the violations' rules.
fn broken(url: &str, duration: &str) -> Vec<String> {
    let (code, out, err) =
        run_analyse(&["hls", url, "--duration", duration, "--validate", "--json"]);
    assert_eq!(
        code,
        1,
        "{url}: want exit 1 (violations): {err}\n{}",
        tail(&out, 30)
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["rule"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hls_validate_names_the_rule_on_broken_playlists() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("analyse-broken-hls");
    // Real TS segments cut on keyframes (2 s GOPs) by ffmpeg's HLS muxer.
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(fixture("bframes.flv"))
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
        ])
        .arg("-hls_segment_filename")
        .arg(dir.join("seg%d.ts"))
        .arg(dir.join("good.m3u8"))
        .status()
        .expect("run ffmpeg");
    assert!(st.success());
    // A segment that does not start on a keyframe: SDT, PAT and PMT, then the second half
    // of segment 1's packets.
    let seg = std::fs::read(dir.join("seg1.ts")).unwrap();
    let n = seg.len() / 188;
    let mut cut = seg[..3 * 188].to_vec();
    cut.extend_from_slice(&seg[(n / 2) * 188..]);
    std::fs::write(dir.join("nokey.ts"), cut).unwrap();
    let srv = StaticHttp::start(&dir);
    let base = format!("http://127.0.0.1:{}", srv.port);

    // ffmpeg's own playlist passes.
    let (code, out, err) =
        run_analyse(&["hls", &format!("{base}/good.m3u8"), "--validate", "--json"]);
    assert_eq!(code, 0, "ffmpeg's playlist: {err}\n{}", tail(&out, 30));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["media"][0]["segments"].as_array().unwrap().len() >= 4);

    // A segment longer than the target duration.
    std::fs::write(
        dir.join("long.m3u8"),
        playlist(2, 0, &[("seg0.ts", 2.0), ("seg1.ts", 2.6)], true),
    )
    .unwrap();
    let rules = broken(&format!("{base}/long.m3u8"), "2");
    assert!(rules.iter().any(|r| r.contains("§4.3.3.1")), "{rules:?}");

    // A segment that does not start on a keyframe.
    std::fs::write(
        dir.join("nokey.m3u8"),
        playlist(3, 0, &[("seg0.ts", 2.0), ("nokey.ts", 2.0)], true),
    )
    .unwrap();
    let rules = broken(&format!("{base}/nokey.m3u8"), "2");
    assert!(rules.iter().any(|r| r.contains("keyframe")), "{rules:?}");
    assert_eq!(rules.len(), 1, "{rules:?}");

    // A live playlist whose media sequence jumps between two loads: seg1.ts was number 11,
    // then is number 20.
    let live = dir.join("jump.m3u8");
    std::fs::write(
        &live,
        playlist(1, 10, &[("seg0.ts", 1.0), ("seg1.ts", 1.0)], false),
    )
    .unwrap();
    let url = format!("{base}/jump.m3u8");
    let run = std::thread::spawn(move || broken(&url, "3"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(
        &live,
        playlist(1, 20, &[("seg1.ts", 1.0), ("seg2.ts", 1.0)], false),
    )
    .unwrap();
    let rules = run.join().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("§6.2.1/§6.3.2 media sequence")),
        "{rules:?}"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
