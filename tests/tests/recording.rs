//! Recording to files (push targets that are paths), checked with ffprobe:
//! * a 30 s live publish recorded with `?split=10` to TS, FLV, MP4 and Matroska at once: three
//!   files each, every one ffprobe-valid and 10 s ± one GOP long, the MP4s rewritten with `moov`
//!   first; across the TS files every frame of the recording once, DTS 40 ms apart at every
//!   cut; RECORDING_END reaches a hook server for each file, and the API lists them.
//! * the recording processes (two auto-push rules and the stream's own `record` setting)
//!   SIGKILLed mid-recording: the TS, FLV, Matroska and (fragmented) MP4 files play to within
//!   a second and a half of the kill, and the FLV's `onMetaData` says how long it is up to
//!   its last sync.
//! * a target outside `recording_folders` is refused (403), one in a folder that cannot be
//!   made ends the push with PUSH_END naming the reason, and the stream plays on.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// ffprobe's video packets of a file: (DTS ms, PTS ms, keyframe).
fn video_packets(path: &Path) -> Vec<(i64, i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=dts_time,pts_time,flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let pts: f64 = f.next()?.parse().ok()?;
            // Matroska stores presentation times only: its DTS is N/A.
            let dts: f64 = f.next()?.parse().unwrap_or(pts);
            let key = f.next()?.contains('K');
            Some((
                (dts * 1000.0).round() as i64,
                (pts * 1000.0).round() as i64,
                key,
            ))
        })
        .collect()
}

/// The audio packet count of a file.
fn audio_packets(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    // MPEG-TS adds a program section: the count is the line that is a number.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_split_recording_keeps_every_frame_once_across_its_files() {
    require_tools(&["ffmpeg", "ffprobe", "/usr/bin/python3"]);
    let dir = unique_temp_dir("rec-split");
    let rec = dir.join("rec");
    let hook = Hook::start(&dir, json!({}));
    let url = hook.url();
    let targets: Vec<String> = ["ts", "flv", "mp4", "mkv"]
        .iter()
        .map(|ext| {
            format!(
                "{}/$stream/{ext}-$segmentCounter.{ext}?split=10",
                rec.display()
            )
        })
        .collect();
    let rules: Vec<Value> = targets.iter().map(|t| json!(["live", t])).collect();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[("RECORDING_END", json!({"handler": url}))]);
        cfg["config"]["recording_folders"] = json!([dir.to_str().unwrap()]);
        cfg["autopushes"] = json!(rules);
    });
    // Three plays of the 10 s file.
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        2,
        60,
    );
    let _ = publisher.wait();
    // Every file reported.
    let ends = poll(Duration::from_secs(30), || {
        let calls: Vec<Vec<String>> = hook
            .calls()
            .into_iter()
            .filter(|(t, _)| t == "RECORDING_END")
            .map(|(_, l)| l)
            .collect();
        (calls.len() >= 12).then_some(calls)
    })
    .unwrap_or_else(|| {
        panic!(
            "RECORDING_END calls: {:?}\n{}",
            hook.calls(),
            srv.stderr_tail(30)
        )
    });
    assert_eq!(ends.len(), 12, "{ends:?}");
    for e in &ends {
        assert_eq!(e[0], "live", "{e:?}");
        assert!(Path::new(&e[1]).is_file(), "{e:?}");
        assert_eq!(
            e[3].parse::<u64>().unwrap(),
            std::fs::metadata(&e[1]).unwrap().len(),
            "bytes: {e:?}"
        );
    }
    let mut totals = Vec::new();
    for ext in ["ts", "flv", "mp4", "mkv"] {
        let files: Vec<PathBuf> = (1..=3)
            .map(|n| rec.join(format!("live/{ext}-{n}.{ext}")))
            .collect();
        assert!(
            !rec.join(format!("live/{ext}-4.{ext}")).exists(),
            "a fourth {ext} file"
        );
        let mut frames = 0;
        let mut audio = 0;
        let mut all = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let v = video_packets(f);
            assert!(v[0].2, "{}: starts without a keyframe", f.display());
            // Presentation times (Matroska has no others): from the first to the last shown.
            let span =
                v.iter().map(|p| p.1).max().unwrap() - v.iter().map(|p| p.1).min().unwrap() + 40;
            // The last file ends with the publish: shorter than 10 s by up to a GOP.
            let want = if i < 2 {
                10_000..=12_000
            } else {
                6_000..=12_000
            };
            assert!(want.contains(&span), "{}: {span} ms", f.display());
            if ext == "flv" {
                // The length in onMetaData (what a player reading it as a stream has): the
                // file's DTS span plus a frame, audio included (the fixture's audio runs on
                // 105 ms past its last video frame: the last file ends there).
                let dts = v.iter().map(|p| p.0).max().unwrap() - v[0].0 + 40;
                let d = flv_duration_on_pipe(f).map(|d| (d * 1000.0).round() as i64);
                assert!(
                    d.is_some_and(|d| (dts..=dts + 150).contains(&d)),
                    "{}: duration {d:?} ms, video {dts} ms",
                    f.display()
                );
            }
            frames += v.len();
            audio += audio_packets(f);
            all.extend(v);
            if ext == "mp4" {
                assert!(mp4_moov_first(f), "{} was not finalized", f.display());
            }
        }
        if ext == "ts" {
            // TS keeps the stream's timestamps: 40 ms steps throughout, cuts included, but
            // for the publisher's own loop joins (the 10.03 s file: a 49 ms step, twice; the
            // cuts fall on them, at the keyframe that starts each play). A frame lost at a
            // cut would be an 80 ms (or 89 ms) step, a doubled one a repeated DTS.
            let mut dts: Vec<i64> = all.iter().map(|p| p.0).collect();
            let n = dts.len();
            dts.dedup();
            assert_eq!(dts.len(), n, "a frame was recorded twice");
            let odd: Vec<i64> = dts
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|&s| s != 40)
                .collect();
            assert!(
                odd.len() <= 2 && odd.iter().all(|&s| s == 49),
                "a frame missing: steps {odd:?}"
            );
        }
        totals.push((ext, frames, audio));
    }
    // The same frames in every format; at least the last 26 s of the 30 s publish.
    let (_, f0, a0) = totals[0];
    assert!((650..=750).contains(&f0), "{totals:?}");
    for &(ext, f, a) in &totals {
        assert_eq!(f, f0, "{ext}: {totals:?}");
        assert!(a.abs_diff(a0) <= 2, "{ext} audio: {totals:?}");
    }
    let list = srv.api(&json!({"recordings": true})).unwrap();
    let list = list["recordings"].as_array().unwrap();
    assert_eq!(list.len(), 12, "{list:?}");
    for r in list {
        let d = r["duration_ms"].as_u64().unwrap();
        assert!((5_000..=12_000).contains(&d), "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 100_000, "{r}");
    }
}

#[test]
fn recordings_killed_mid_way_play_to_the_kill() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("rec-kill");
    // TS, FLV and Matroska by auto-push rules, MP4 by the stream's own `record` setting.
    let rules: Vec<Value> = ["ts", "flv", "mkv"]
        .iter()
        .map(|ext| json!(["live", format!("{}/live.{ext}", dir.display())]))
        .collect();
    let srv = Server::start_with_config(|cfg| {
        cfg["autopushes"] = json!(rules);
        cfg["streams"]["live"]["record"] = json!(format!("{}/live.mp4", dir.display()));
    });
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        3,
        60,
    );
    let files: Vec<PathBuf> = ["ts", "flv", "mp4", "mkv"]
        .iter()
        .map(|e| dir.join(format!("live.{e}")))
        .collect();
    assert!(
        poll(Duration::from_secs(15), || files
            .iter()
            .all(|f| f.exists())
            .then_some(()))
        .is_some(),
        "{}",
        srv.stderr_tail(20)
    );
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let pushes: Vec<u32> = srv
        .procs()
        .into_iter()
        .filter(|p| p.comm == "push")
        .map(|p| p.pid)
        .collect();
    assert_eq!(pushes.len(), 4, "{:?}", srv.procs());
    for pid in &pushes {
        sigkill(*pid);
    }
    let recorded = began.elapsed();
    stop_client(publisher);
    let want = ((recorded.as_secs_f64() - 1.5) * 25.0) as usize;
    for f in &files {
        let v = video_packets(f);
        assert!(
            v.len() >= want,
            "{}: {} frames, {want} expected for {recorded:?}",
            f.display(),
            v.len()
        );
        assert!(audio_packets(f) > 0, "{}: no audio", f.display());
    }
    // The FLV's onMetaData has the length up to its last sync (every 2 s, when the recorder
    // is not busy writing) before the kill, and no more than the file holds.
    let held = video_packets(&files[1]).len() as f64 * 0.04;
    let d = flv_duration_on_pipe(&files[1]).unwrap_or(0.0);
    assert!(
        d >= held - 3.5 && d <= held + 0.15,
        "killed FLV: duration {d} s, {held} s of video in it"
    );
    assert!(
        !mp4_moov_first(&files[2]),
        "the killed MP4 stays fragmented"
    );
}

#[test]
fn bad_recording_targets_are_refused_or_end_with_the_reason() {
    require_tools(&["ffmpeg", "/usr/bin/python3"]);
    let dir = unique_temp_dir("rec-bad");
    let hook = Hook::start(&dir, json!({}));
    let url = hook.url();
    let allowed = dir.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    // A file where the recording's folder would have to be.
    std::fs::write(allowed.join("blocked"), b"x").unwrap();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[("PUSH_END", json!({"handler": url}))]);
        cfg["config"]["recording_folders"] = json!([allowed.to_str().unwrap()]);
    });
    let answer = |v: Value| {
        srv.api(&v)
            .map(|r| r.to_string())
            .unwrap_or_else(|e| format!("{e:#}"))
    };
    let r = answer(json!({"push_start": {"stream": "demo", "target": "/etc/demo.ts"}}));
    assert!(r.contains("outside the recording folders"), "{r}");
    let mkv = format!("{}/a.mkv", allowed.display());
    let r = answer(json!({"push_start": {"stream": "demo", "target": mkv}}));
    assert!(r.contains("\"id\""), "a Matroska recording starts: {r}");
    let avi = format!("{}/a.avi", allowed.display());
    let r = answer(json!({"push_start": {"stream": "demo", "target": avi}}));
    assert!(r.contains(".flv, .ts, .mp4 or .mkv"), "{r}");
    let r = answer(json!({"addstream": {"cam": {"source": "push://", "record": "/etc/cam.ts"}}}));
    assert!(r.contains("outside the recording folders"), "{r}");
    let blocked = format!("{}/blocked/demo.ts", allowed.display());
    srv.api(&json!({"push_start": {"stream": "demo", "target": blocked}}))
        .unwrap();
    let end = hook
        .wait_for("PUSH_END", "demo")
        .unwrap_or_else(|| panic!("no PUSH_END: {}", srv.stderr_tail(20)));
    assert!(end[5].contains("blocked"), "{end:?}");
    let list = srv.api(&json!({"push_list": true})).unwrap();
    let targets: Vec<&str> = list["push_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[2].as_str())
        .collect();
    assert!(
        !targets.iter().any(|t| t.contains("blocked")),
        "the push was retried: {targets:?}"
    );
    assert!(targets.iter().any(|t| t.ends_with("a.mkv")), "{targets:?}");
    let info = ffprobe(&srv.dir, "demo", &srv.http_url("/demo.ts"), &[], 15).unwrap();
    assert_eq!(info.len(), 2, "the demo stream plays on");
}
