//! DVR timeshift on a live stream with a 60 s window: a progressive viewer asking for
//! `?start=-30000` gets frames from 30 s behind live (the keyframe at or before), every one
//! of them from there on, while a viewer without it starts at the live edge; the HLS playlist
//! covers the window. A 10-minute window with a 16 MiB memory budget spills to disk (the
//! buffer's resident memory stays near the budget) and its start and middle still play.
use serde_json::json;
use sluice_e2e::*;
use std::time::Duration;

#[test]
fn a_viewer_starts_30_s_behind_live_within_the_dvr_window() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["live"] = json!({"name": "live", "source": "push://", "DVR": 60000});
    });
    // Four plays of the 10 s fixture, at real time.
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        3,
        60,
    );
    srv.wait_live("live");
    std::thread::sleep(Duration::from_secs(34));
    let behind = ffmpeg_framecrc(
        &srv.dir,
        "behind",
        &srv.http_url("/live.ts?start=-30000"),
        &["-copyts"],
        6,
    );
    // -copyts: the stream's own timestamps, comparable between the two.
    let at_live = ffmpeg_framecrc(&srv.dir, "live", &srv.http_url("/live.ts"), &["-copyts"], 6);
    let pl = srv.get("/hls/live/index.m3u8").unwrap();
    let text = pl.text();
    let variant = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    let media = srv.get(&format!("/hls/live/{variant}")).unwrap().text();
    let covered: f64 = media
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum();
    let behind = Capture::from_output(&behind.wait());
    let at_live = Capture::from_output(&at_live.wait());
    stop_client(publisher);
    let (b, l) = (behind.video_ms(), at_live.video_ms());
    assert!(
        !b.is_empty() && !l.is_empty(),
        "{} / {}",
        behind.summary(),
        at_live.summary()
    );
    let lag = l[0] - b[0];
    eprintln!("DVR viewer starts {lag} ms behind the live viewer; HLS covers {covered:.1} s");
    assert!((28_000..=33_000).contains(&lag), "{lag} ms behind live");
    assert!(behind.video()[0].key, "starts on a keyframe");
    // From there on, every frame: 40 ms steps (49 at the publisher's loop joins).
    assert!(
        b.windows(2).all(|w| matches!(w[1] - w[0], 40 | 49)),
        "{}",
        behind.summary()
    );
    // It catches up faster than real time: more frames in 6 s than the live viewer.
    assert!(b.len() > l.len() + 50, "{} vs {}", b.len(), l.len());
    assert!(covered >= 32.0, "the playlist covers {covered} s:\n{media}");
}

/// The resident set of a process (kB, from /proc).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A 10-minute DVR window with a 16 MiB memory budget: ten minutes of media (about 75 MB,
/// published faster than real time) are held, the buffer's resident memory stays near the
/// budget (the rest was spilled to its file on disk), and a viewer that starts at the
/// window's first keyframe gets its frames, read back from disk.
#[test]
fn a_long_window_spills_to_disk_and_its_start_still_plays() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["dvr_memory_mib"] = json!(16);
        cfg["streams"]["live"] = json!({"name": "live", "source": "push://", "DVR": 600_000});
    });
    // 60 plays of the 10 s fixture, as fast as ffmpeg sends.
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-stream_loop",
        "59",
        "-i",
        fixture("bframes.flv").to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "flv",
        &srv.rtmp_url("live"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let publish = spawn_client(&srv.dir, "fast-publisher", 120, "ffmpeg", &args).wait();
    assert!(publish.status.success(), "{}", publish.describe());
    let buffer = srv
        .procs()
        .into_iter()
        .find(|p| p.comm == "buffer")
        .unwrap_or_else(|| panic!("no buffer: {:?}", srv.procs()));
    let rss = rss_kib(buffer.pid);
    eprintln!("buffer RSS after 600 s of media with a 16 MiB budget: {rss} KiB");
    assert!(rss < 48 * 1024, "RSS {rss} KiB");
    // The window's start: DTS 0 (the first keyframe), absolute.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "start",
        &srv.http_url("/live.ts?start=0"),
        &["-copyts"],
        6,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let v = cap.video_ms();
    assert!(v.len() >= 250, "{}", cap.summary());
    let first = v[0];
    assert!(
        first < 2_000,
        "the window starts at {first} ms: {}",
        cap.summary()
    );
    // And a time in the middle of the spilled part, behind live.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "middle",
        &srv.http_url("/live.flv?start=-300000"),
        &[],
        6,
    )
    .wait();
    assert!(
        Capture::from_output(&out).video().len() >= 250,
        "{}",
        out.describe()
    );
}
