//! Pull inputs with real peers:
//! * MPEG-TS over UDP sent by ffmpeg to 127.0.0.1 (`tsudp://`), the sender stopped and
//!   started again: viewers get every frame of both runs with timestamps that go on.
//! * HTTP-FLV and HTTP-TS pulled from another Sluice (`http://ORIGIN/S.flv`, `/S.ts`, a daisy
//!   chain): RTMP viewers of the edge get the origin's media; when the origin's publisher
//!   stops and comes back, an edge viewer that stayed resumes within 5 s, its timestamps going
//!   on.
//! * HLS (MPEG-TS segments, and fragmented MP4 segments) written by ffmpeg and served by a
//!   static HTTP server (Python's `http.server`): an RTMP viewer of Sluice gets every frame
//!   from where it joined, with composition offsets.
//! * RTMP pulled from Debian's nginx-rtmp (ffmpeg publishes to nginx-rtmp, Sluice plays it
//!   from there): ffprobe reads the stream back over Sluice's HLS, and an RTMP viewer of
//!   Sluice gets every frame from where it joined.
use serde_json::json;
use sluice_e2e::*;
use std::time::Duration;

fn codecs(cap: &Capture) -> Vec<String> {
    cap.streams.values().map(|(_, c)| c.clone()).collect()
}

/// Largest step between consecutive values, and whether they never go back.
fn steps(ms: &[i64]) -> (i64, bool) {
    let max = ms.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let mono = ms.windows(2).all(|w| w[1] >= w[0]);
    (max, mono)
}

/// A viewer's capture: H.264 and AAC, at least `min` video frames, video DTS never going
/// back nor stepping over `max_step` ms. Returns the frame count.
fn assert_smooth(
    label: &str,
    out: &ClientOutput,
    min: usize,
    max_step: i64,
    srv: &Server,
) -> usize {
    let cap = Capture::from_output(out);
    assert_eq!(codecs(&cap), ["h264", "aac"], "{label}: {}", out.describe());
    let ms = cap.video_ms();
    assert!(
        ms.len() >= min,
        "{label}: {} video frames: {}\n{}",
        ms.len(),
        cap.summary(),
        srv.stderr_tail(20)
    );
    let (step, mono) = steps(&ms);
    assert!(
        mono && step <= max_step,
        "{label}: video DTS steps up to {step} ms, monotonic {mono}: {}",
        cap.summary()
    );
    eprintln!("{label}: {} video frames", ms.len());
    ms.len()
}

fn send_udp(dir: &std::path::Path, label: &str, port: u16) -> Client {
    let file = fixture("bframes.flv");
    let args = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-i",
        file.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
    ]
    .map(String::from);
    spawn_client(dir, label, 20, "ffmpeg", &args)
}

#[test]
fn mpeg_ts_over_udp_is_pulled_and_goes_on_across_a_sender_restart() {
    require_tools(&["ffmpeg"]);
    let port = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["sat"] = json!({
            "name": "sat",
            "source": format!("tsudp://127.0.0.1:{port}"),
            "always_on": true
        });
    });
    assert!(
        poll(Duration::from_secs(10), || srv
            .stderr_text()
            .contains("sat: pulling tsudp://")
            .then_some(()))
        .is_some(),
        "the pull did not start: {}",
        srv.stderr_tail(20)
    );
    let first = send_udp(&srv.dir, "sender-1", port);
    srv.wait_live("sat");
    let viewer = ffmpeg_framecrc(&srv.dir, "viewer", &srv.rtmp_url("sat"), &[], 32);
    let out = first.wait();
    assert!(out.status.success(), "sender 1: {}", out.describe());
    // Longer than a UDP session's gap: the second run is a new session, its clock from 0.
    std::thread::sleep(Duration::from_secs(3));
    let out = send_udp(&srv.dir, "sender-2", port).wait();
    assert!(out.status.success(), "sender 2: {}", out.describe());
    // The viewer joined the first run at a keyframe (2 s GOPs) and saw all of the second;
    // the 3 s pause is not in the timestamps (the second run goes on 40 ms after the first).
    assert_smooth("TS over UDP", &viewer.wait(), 250 + 180, 200, &srv);
    let text = srv.stderr_text();
    assert!(
        text.contains("no datagram for 2 s"),
        "{}",
        srv.stderr_tail(20)
    );
}

#[test]
fn http_flv_and_http_ts_are_pulled_from_another_sluice_and_resume_after_an_outage() {
    require_tools(&["ffmpeg"]);
    let origin = Server::start();
    let publisher = ffmpeg_publish_loop(
        &origin.dir,
        "publisher",
        &fixture("bframes.flv"),
        &origin.rtmp_url("live"),
        1,
        25,
    );
    origin.wait_live("live");
    let up = origin.http_port;
    let edge = Server::start_with_config(|cfg| {
        cfg["streams"]["viaflv"] = json!({
            "name": "viaflv",
            "source": format!("http://127.0.0.1:{up}/live.flv"),
            "always_on": true
        });
        cfg["streams"]["viats"] = json!({
            "name": "viats",
            "source": format!("http://127.0.0.1:{up}/live.ts"),
            "always_on": true
        });
    });
    edge.wait_live("viaflv");
    edge.wait_live("viats");
    let flv = ffmpeg_framecrc(&edge.dir, "flv-viewer", &edge.rtmp_url("viaflv"), &[], 10);
    let ts = ffmpeg_framecrc(&edge.dir, "ts-viewer", &edge.rtmp_url("viats"), &[], 10);
    for (label, c) in [("HTTP-FLV", flv), ("HTTP-TS", ts)] {
        assert_smooth(label, &c.wait(), 170, 100, &edge);
    }
    // The origin's publisher stops and comes back: an edge viewer that stays resumes.
    let viewer = ffmpeg_framecrc(&edge.dir, "staying", &edge.rtmp_url("viaflv"), &[], 40);
    std::thread::sleep(Duration::from_secs(3));
    stop_client(publisher);
    std::thread::sleep(Duration::from_secs(4));
    let (publisher, back) = publish_again(&origin, "publisher-2");
    let out = viewer.wait();
    stop_client(publisher);
    let cap = Capture::from_output(&out);
    let v = cap.video();
    let first_after = cap
        .first_video_after(back)
        .unwrap_or_else(|| panic!("no frame after the origin came back: {}", cap.summary()));
    eprintln!("the edge viewer resumed {first_after:?} after the origin was live again");
    assert!(
        first_after < Duration::from_secs(5),
        "resumed after {first_after:?}\n{}",
        edge.stderr_tail(20)
    );
    let after = v.iter().filter(|p| p.at > back).count();
    assert!(
        after >= 250,
        "{after} frames after the outage: {}",
        cap.summary()
    );
    let (_, mono) = steps(&cap.video_ms());
    assert!(
        mono,
        "video DTS went back across the outage: {}",
        cap.summary()
    );
    let text = edge.stderr_text();
    for l in text.lines().filter(|l| l.contains("[pull ")) {
        eprintln!("{l}");
    }
    assert!(text.contains("reconnecting in"));
    // While the origin lingered on the ended publish, it served it from its start: the edge
    // saw that and did not pull it.
    assert!(
        text.contains("its stream has ended or is stored; not pulled"),
        "{}",
        edge.stderr_tail(30)
    );
}

#[test]
fn rtmp_is_pulled_from_nginx_rtmp() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("rtmp-pull");
    let nginx = NginxRtmp::start(&dir);
    let upstream = format!("rtmp://127.0.0.1:{}/live/cam", nginx.port);
    let publisher =
        ffmpeg_publish_loop(&dir, "publisher", &fixture("bframes.flv"), &upstream, 1, 30);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["relay"] = json!({"name": "relay", "source": upstream, "always_on": true});
    });
    srv.wait_live("relay");
    let viewer = ffmpeg_framecrc(&srv.dir, "viewer", &srv.rtmp_url("relay"), &[], 10);
    let info = ffprobe(
        &srv.dir,
        "hls",
        &srv.http_url("/hls/relay/index.m3u8"),
        &[],
        20,
    )
    .unwrap_or_else(|e| panic!("HLS of the pulled stream: {e}\n{}", srv.stderr_tail(20)));
    let codecs: Vec<&str> = info.iter().map(|s| s.codec_name.as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"]);
    let video = find_stream(&info, "video").unwrap();
    assert_eq!((video.width, video.height), (640, 360), "{video:?}");
    assert_smooth("RTMP pull, 10 s", &viewer.wait(), 170, 100, &srv);
    stop_client(publisher);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// ffmpeg writes live HLS into a folder that Python's `http.server` serves; Sluice pulls the
/// playlist. `extra`: ffmpeg's HLS options besides the defaults (MPEG-TS segments).
fn hls_pull(label: &str, extra: &[&str]) {
    require_tools(&["ffmpeg", "/usr/bin/python3"]);
    let dir = unique_temp_dir(label);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = fixture("bframes.flv");
    let playlist = www.join("live.m3u8");
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-stream_loop",
        "1",
        "-i",
        file.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_list_size",
        "6",
        "-hls_flags",
        "delete_segments",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(playlist.to_str().unwrap().to_string());
    let writer = spawn_client(&dir, "hls-writer", 30, "ffmpeg", &args);
    let port = free_port();
    let mut web = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    assert!(poll(Duration::from_secs(10), || playlist.exists().then_some(())).is_some());
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["fromhls"] = json!({
            "name": "fromhls",
            "source": format!("http://127.0.0.1:{port}/live.m3u8"),
            "always_on": true
        });
    });
    srv.wait_live("fromhls");
    let out = ffmpeg_framecrc(&srv.dir, "viewer", &srv.rtmp_url("fromhls"), &[], 10).wait();
    sigkill(web.id());
    let _ = web.wait();
    stop_client(writer);
    assert_smooth(&format!("{label}, 10 s"), &out, 150, 100, &srv);
    let cap = Capture::from_output(&out);
    assert!(
        cap.reordered() > 0,
        "composition offsets lost: {}",
        cap.summary()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_hls_from_a_static_http_server_is_pulled() {
    hls_pull("hls-ts-pull", &[]);
}

/// The same with fragmented MP4 segments (`#EXT-X-MAP` init segment, `.m4s` media segments
/// of `moof` + `mdat`).
#[test]
fn live_hls_with_fmp4_segments_is_pulled() {
    hls_pull("hls-fmp4-pull", &["-hls_segment_type", "fmp4"]);
}
