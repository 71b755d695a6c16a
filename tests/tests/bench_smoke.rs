//! A short run of the load harness against Sluice, as CI runs it: a few RTMP and HLS players
//! for a few seconds with an in-process publisher. The figures must be produced, and delivery
//! must be complete (the harness itself exits non-zero below 100 %).
use sluice_e2e::*;
use std::process::Command;

#[test]
fn load_harness_measures_delivery_latency_and_first_frame() {
    let srv = Server::start();
    let json = srv.dir.join("load.json");
    let out = Command::new(sluice_bin().with_file_name("sluice-bench"))
        .args([
            "load",
            "--publishers",
            "1",
            "--players",
            "5",
            "--hls-players",
            "3",
        ])
        .args(["--seconds", "8", "--warmup-ms", "3000"])
        .arg("--publish-url")
        .arg(srv.rtmp_url("live"))
        .arg("--file")
        .arg(fixture("bframes.flv"))
        .arg("--play-url")
        .arg(srv.rtmp_url("live"))
        .arg("--hls-url")
        .arg(srv.hls_url("live"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run sluice-bench");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sluice-bench failed:\n{text}\n{}",
        srv.stderr_tail(20)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON");
    let rtmp = &v["rtmp"];
    assert_eq!(rtmp["connected"], 5, "{v}");
    assert_eq!(rtmp["delivered_pct"].as_f64(), Some(100.0), "{v}");
    assert_eq!(rtmp["gaps"], 0, "{v}");
    assert_eq!(rtmp["backwards"], 0, "{v}");
    assert!(
        rtmp["latency_ms"]["samples"].as_u64().unwrap_or(0) > 500,
        "{v}"
    );
    let p99 = rtmp["latency_ms"]["p99"].as_f64().expect("latency p99");
    assert!(p99 > 0.0, "{v}");
    assert!(rtmp["first_frame_ms"]["p50"].as_f64().is_some(), "{v}");
    for kind in ["refused", "reset", "timeout", "protocol"] {
        assert_eq!(rtmp["errors"][kind], 0, "{kind}: {v}");
    }
    let hls = &v["hls"];
    assert_eq!(hls["ok"], true, "{v}");
    assert!(hls["segments"].as_u64().unwrap_or(0) >= 3, "{v}");
    assert_eq!(hls["listed_but_missing"], 0, "{v}");
    assert!(
        v["publishers"]["messages"].as_u64().unwrap_or(0) > 500,
        "{v}"
    );
}
