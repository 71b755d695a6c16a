//! The built-in demo (the committed fixtures/demo.flv looped live) plays over RTMP and HLS;
//! a missing config file gets the default written.
use serde_json::Value;
use sluice_e2e::*;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn demo_plays_over_rtmp_and_hls() {
    require_tools(&["ffmpeg", "ffprobe", "timeout"]);
    let srv = Server::start(); // streams: live = push://, demo = <repo>/fixtures/demo.flv

    // RTMP: a player for 8 s wall clock; >= 50 frames within 3 s of the first one.
    let player = ffmpeg_framecrc(&srv.dir, "ffmpeg-demo", &srv.rtmp_url("demo"), &[], 8);
    let out = player.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    let v = cap.video();
    assert!(!v.is_empty(), "demo over RTMP gave no video: {diag}");
    assert!(v[0].key, "demo's first frame is not a keyframe: {diag}");
    let first = v[0].at;
    let in_3s = v
        .iter()
        .filter(|p| p.at <= first + Duration::from_secs(3))
        .count();
    assert!(
        in_3s >= 50,
        "only {in_3s} demo frames within 3 s of the first: {diag}"
    );
    assert!(
        !cap.audio().is_empty(),
        "demo over RTMP gave no audio: {diag}"
    );
    let (max_gap, mono) = cap.video_dts_check();
    assert!(
        mono && max_gap <= 200,
        "demo video timestamps not continuous (max gap {max_gap}, monotonic {mono}): {diag}"
    );

    let (probe, streams) = ffprobe_full(
        &srv.dir,
        "ffprobe-demo-rtmp",
        &srv.rtmp_url("demo"),
        &[],
        false,
        20,
    );
    let diag = format!("{streams:?}\n{}", probe.describe());
    let vs = find_stream(&streams, "video").unwrap_or_else(|| panic!("{diag}"));
    assert_eq!(
        (vs.codec_name.as_str(), vs.width, vs.height),
        ("h264", 640, 360),
        "{diag}"
    );
    let a = find_stream(&streams, "audio").unwrap_or_else(|| panic!("{diag}"));
    assert_eq!(
        (a.codec_name.as_str(), a.sample_rate, a.channels),
        ("aac", 44100, 2),
        "{diag}"
    );

    // HLS: the playlist may need a moment (segments are cut on the 2 s keyframes).
    let hls = srv.hls_url("demo");
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut last = String::new();
    loop {
        let (probe, streams) = ffprobe_full(&srv.dir, "ffprobe-demo-hls", &hls, &[], false, 20);
        let v = find_stream(&streams, "video").map(|s| s.codec_name.clone());
        let a = find_stream(&streams, "audio").map(|s| s.codec_name.clone());
        if v.as_deref() == Some("h264") && a.as_deref() == Some("aac") {
            break;
        }
        last = format!("{streams:?}\n{}", probe.describe());
        assert!(
            Instant::now() < deadline,
            "ffprobe never found h264+aac in {hls}: {last}"
        );
        thread::sleep(Duration::from_secs(1));
    }
    let _ = last;
    srv.active_streams()
        .map(|a| assert!(a.iter().any(|s| s == "demo"), "demo not active: {a:?}"))
        .expect("API");
}

#[test]
fn missing_config_gets_the_default_written() {
    let dir = unique_temp_dir("defcfg");
    let path = dir.join("sub").join("sluice.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let rundir = dir.join("run");
    std::fs::create_dir_all(&rundir).unwrap();
    let errpath = dir.join("server.stderr");
    let mut child = Command::new(sluice_bin())
        .arg("-c")
        .arg(&path)
        .arg("--rundir")
        .arg(&rundir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errpath).unwrap())
        .spawn()
        .expect("spawn sluice");
    let pid = child.id() as i32;
    // The default ports (4242/1935/8080) may be taken on this machine: only the file counts.
    let written = poll(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str::<Value>(&t).ok()
    });
    // Stop it by pid: SIGTERM, up to 5 s, then SIGKILL the group.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) && matches!(child.try_wait(), Ok(None)) {
        thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&errpath).unwrap_or_default();

    let cfg = written
        .unwrap_or_else(|| panic!("no default config written to {}:\n{stderr}", path.display()));
    let diag = format!(
        "{}\n--- stderr ---\n{}",
        serde_json::to_string_pretty(&cfg).unwrap(),
        tail(&stderr, 20)
    );
    assert_eq!(
        cfg["config"]["controller"]["port"].as_u64(),
        Some(4242),
        "{diag}"
    );
    let protos = cfg["config"]["protocols"]
        .as_array()
        .unwrap_or_else(|| panic!("no protocols: {diag}"));
    let port_of = |name: &str| {
        protos
            .iter()
            .find(|p| p["connector"].as_str() == Some(name))
            .map(|p| p["port"].as_u64())
    };
    assert_eq!(port_of("RTMP"), Some(Some(1935)), "{diag}");
    assert_eq!(port_of("HTTP"), Some(Some(8080)), "{diag}");
    assert_eq!(port_of("RTSP"), Some(Some(5554)), "{diag}");
    assert_eq!(
        cfg["streams"]["live"]["source"].as_str(),
        Some("push://"),
        "{diag}"
    );
    let demo_src = cfg["streams"]["demo"]["source"]
        .as_str()
        .unwrap_or_else(|| panic!("no demo stream: {diag}"));
    assert!(
        demo_src.ends_with("demo.flv"),
        "demo source {demo_src}: {diag}"
    );
    for name in ["live", "demo"] {
        assert_eq!(cfg["streams"][name]["name"].as_str(), Some(name), "{diag}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
