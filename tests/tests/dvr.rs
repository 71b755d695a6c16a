//! DVR timeshift on a live stream with a 60 s window: a progressive viewer asking for
//! `?start=-30000` gets frames from 30 s behind live (the keyframe at or before), every one
//! of them from there on, while a viewer without it starts at the live edge; the HLS playlist
//! covers the window.
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
