//! The origin/edge cascade over DTSC: ffmpeg publishes to an origin; edge 1 pulls
//! `dtsc://ORIGIN/live`; edge 2 pulls `dtsc://EDGE1/live`; 20 RTMP and 20 HLS viewers (ffmpeg)
//! on edge 2 get every frame from where they joined to the end of the publish, without a
//! gap, with the origin's codecs. The origin serves one DTSC connection (edge 1), edge 1 one
//! (edge 2), whatever the number of viewers at the end of the chain. A DTSC push (ingest
//! with the stream's key) is refused with a wrong key and accepted with the right one. An
//! origin whose processes are all killed and which is started again: the edge's viewer
//! resumes within 5 s of the origin being live again, its timestamps going on.
use serde_json::json;
use sluice_e2e::*;
use std::io::{Read, Write};
use std::time::Duration;

/// A server with a DTSC listener on a free port, `edit` applied to its config.
fn with_dtsc(edit: impl FnOnce(&mut serde_json::Value)) -> (Server, u16) {
    with_dtsc_on(free_port(), edit)
}

/// A server with a DTSC listener on `port`.
fn with_dtsc_on(port: u16, edit: impl FnOnce(&mut serde_json::Value)) -> (Server, u16) {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({"connector": "DTSC", "port": port, "interface": "127.0.0.1"}));
        edit(cfg);
    });
    assert!(
        poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some(),
        "DTSC listener on {port}: {}",
        srv.stderr_tail(20)
    );
    (srv, port)
}

/// DTSC sessions a server reports in `clients`.
fn dtsc_sessions(srv: &Server) -> usize {
    let v = srv
        .api(&json!({"clients": {"fields": ["stream", "protocol", "kind"]}}))
        .expect("clients");
    v["clients"]["data"]
        .as_array()
        .map(|rows| rows.iter().filter(|r| r[1] == "DTSC").count())
        .unwrap_or(0)
}

#[test]
fn a_two_level_dtsc_cascade_feeds_forty_viewers_every_frame() {
    require_tools(&["ffmpeg"]);
    let (origin, origin_dtsc) = with_dtsc(|_| {});
    let (edge1, edge1_dtsc) = with_dtsc(|cfg| {
        cfg["streams"]["live"] = json!({
            "name": "live",
            "source": format!("dtsc://127.0.0.1:{origin_dtsc}/live"),
            "always_on": true
        });
    });
    let edge2 = Server::start_with_config(|cfg| {
        cfg["streams"]["live"] = json!({
            "name": "live",
            "source": format!("dtsc://127.0.0.1:{edge1_dtsc}/live"),
            "always_on": true
        });
    });
    // Three plays of the 10 s fixture.
    let publisher = ffmpeg_publish_loop(
        &origin.dir,
        "publisher",
        &fixture("bframes.flv"),
        &origin.rtmp_url("live"),
        2,
        45,
    );
    origin.wait_live("live");
    edge1.wait_live("live");
    edge2.wait_live("live");
    let mut viewers = Vec::new();
    // The reference: a viewer of the origin itself.
    viewers.push((
        "origin RTMP".to_string(),
        ffmpeg_framecrc(
            &origin.dir,
            "origin-rtmp",
            &origin.rtmp_url("live"),
            &[],
            45,
        ),
    ));
    for i in 0..20 {
        viewers.push((
            format!("RTMP {i}"),
            ffmpeg_framecrc(
                &edge2.dir,
                &format!("rtmp-{i}"),
                &edge2.rtmp_url("live"),
                &[],
                45,
            ),
        ));
    }
    for i in 0..20 {
        viewers.push((
            format!("HLS {i}"),
            ffmpeg_framecrc(
                &edge2.dir,
                &format!("hls-{i}"),
                &edge2.http_url("/hls/live/index.m3u8"),
                &[],
                45,
            ),
        ));
    }
    std::thread::sleep(Duration::from_secs(5));
    // One DTSC connection per hop, however many viewers edge 2 has.
    assert_eq!(dtsc_sessions(&origin), 1, "{}", origin.stderr_tail(10));
    assert_eq!(dtsc_sessions(&edge1), 1, "{}", edge1.stderr_tail(10));
    let out = publisher.wait();
    assert!(out.status.success(), "publisher: {}", out.describe());
    let mut counts = Vec::new();
    for (label, c) in viewers {
        let out = c.wait();
        let cap = Capture::from_output(&out);
        let codecs: Vec<&str> = cap.streams.values().map(|(_, c)| c.as_str()).collect();
        assert_eq!(codecs, ["h264", "aac"], "{label}: {}", out.describe());
        let ms = cap.video_ms();
        assert!(
            ms.len() >= 250,
            "{label}: {} video frames: {}\n{}",
            ms.len(),
            cap.summary(),
            edge2.stderr_tail(10)
        );
        // Every frame from the join: 25 fps, DTS never back, and no step over one frame but
        // at the two joins of the publisher's loop (ffmpeg's `-stream_loop` leaves a gap of
        // the audio's overhang there, under 200 ms): the count matches the span exactly.
        assert!(
            ms.windows(2).all(|w| w[1] >= w[0]),
            "{label}: video DTS went back: {}",
            cap.summary()
        );
        let big: Vec<i64> = ms
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&d| d > 41)
            .collect();

        assert!(
            big.len() <= 2 && big.iter().all(|&d| d < 200),
            "{label}: steps in video DTS over one frame: {big:?}: {}",
            cap.summary()
        );
        let span =
            ms.last().unwrap() - ms.first().unwrap() - big.iter().map(|d| d - 40).sum::<i64>();
        assert!(
            (ms.len() as i64 - (span / 40 + 1)).abs() <= 1,
            "{label}: {} frames over {span} ms of frame steps",
            ms.len()
        );
        counts.push(ms.len());
    }
    eprintln!("video frames per viewer (the origin's first): {counts:?}");
    // Edge 2 went quiet with its upstream and reconnected: what it had was not repeated.
    let text = edge2.stderr_text();
    assert!(
        text.contains("reconnecting in"),
        "{}",
        edge2.stderr_tail(20)
    );
}

/// A `DTCM` command frame with string members, encoded by hand from docs/DTSC.md ("Frames",
/// "Value encoding"): `DTCM`, `u32` length, object `0xE0`, members (`u16` key length, key,
/// `0x02`, `u32` length, bytes), `00 00 EE`.
fn dtcm(members: &[(&str, &str)]) -> Vec<u8> {
    let mut body = vec![0xE0];
    for (k, v) in members {
        body.extend_from_slice(&(k.len() as u16).to_be_bytes());
        body.extend_from_slice(k.as_bytes());
        body.push(0x02);
        body.extend_from_slice(&(v.len() as u32).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    body.extend_from_slice(&[0, 0, 0xEE]);
    let mut out = b"DTCM".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads the next whole frame from `s`: (magic, body).
fn read_frame(s: &mut std::net::TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).expect("a frame head");
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("a frame body");
    (head[..4].to_vec(), body)
}

/// Whether a `DTCM` body names command `cmd` (its `cmd` member's string).
fn is_cmd(body: &[u8], cmd: &str) -> bool {
    let mut want = vec![0, 3];
    want.extend_from_slice(b"cmd");
    want.push(0x02);
    want.extend_from_slice(&(cmd.len() as u32).to_be_bytes());
    want.extend_from_slice(cmd.as_bytes());
    body.windows(want.len()).any(|w| w == want)
}

#[test]
fn a_dtsc_push_needs_the_streams_key() {
    require_tools(&["ffmpeg"]);
    let (srv, port) = with_dtsc(|cfg| {
        cfg["streams"]["in"] = json!({"name": "in", "source": "push://@s3cret"});
    });
    // The fixture as DTSC frames (the converter writes a .dtsc file: header, then packets).
    let dtsc_file = srv.dir.join("fixture.dtsc");
    sluice_convert(&fixture("bframes.flv"), &dtsc_file);
    let frames = std::fs::read(&dtsc_file).unwrap();
    let push = |password: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (magic, hi) = read_frame(&mut s);
        assert_eq!(magic, b"DTCM");
        assert!(is_cmd(&hi, "hi"), "{hi:?}");
        s.write_all(&dtcm(&[
            ("cmd", "push"),
            ("stream", "in"),
            ("password", password),
        ]))
        .unwrap();
        s
    };
    // A wrong key: an error command, and the connection ends.
    let mut bad = push("wrong");
    let (magic, answer) = read_frame(&mut bad);
    assert_eq!(magic, b"DTCM");
    assert!(
        is_cmd(&answer, "error"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The right key: the stream goes live and plays over RTMP with both tracks.
    let mut good = push("s3cret");
    good.write_all(&frames).unwrap();
    srv.wait_live("in");
    let info = ffprobe(&srv.dir, "after-push", &srv.rtmp_url("in"), &[], 15)
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_tail(20)));
    let codecs: Vec<&str> = info.iter().map(|s| s.codec_name.as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"]);
    drop(good);
    assert!(srv.stderr_text().contains("pushes in"));
}

/// Kill the upstream during a pull and restart it: every process of the origin is killed
/// (SIGKILL, a crash rather than a stop) while a viewer plays the stream on the edge; a new
/// origin starts on the same DTSC port and its publisher comes back. The edge's pull
/// retries with backoff (INPUT_ABORT-worthy failures in between), and the viewer that stayed
/// gets frames again within 5 s of the new origin being live, with DTS that never go back.
#[test]
fn an_edge_resumes_within_5_s_after_its_origin_is_killed_and_restarted() {
    require_tools(&["ffmpeg"]);
    let (origin, port) = with_dtsc(|_| {});
    let publisher = ffmpeg_publish_loop(
        &origin.dir,
        "publisher",
        &fixture("bframes.flv"),
        &origin.rtmp_url("live"),
        2,
        30,
    );
    origin.wait_live("live");
    let edge = Server::start_with_config(|cfg| {
        cfg["streams"]["live"] = json!({
            "name": "live",
            "source": format!("dtsc://127.0.0.1:{port}/live"),
            "always_on": true
        });
    });
    edge.wait_live("live");
    let viewer = ffmpeg_framecrc(&edge.dir, "staying", &edge.rtmp_url("live"), &[], 24);
    std::thread::sleep(Duration::from_secs(3));
    let mut pids: Vec<u32> = origin.procs().iter().map(|p| p.pid).collect();
    pids.push(origin.pid);
    for pid in pids {
        sigkill(pid);
    }
    stop_client(publisher);
    drop(origin);
    std::thread::sleep(Duration::from_secs(3));
    let (origin, _) = with_dtsc_on(port, |_| {});
    let (publisher, back) = publish_again(&origin, "publisher-2");
    let out = viewer.wait();
    stop_client(publisher);
    let cap = Capture::from_output(&out);
    let v = cap.video();
    let first_after = cap.first_video_after(back).unwrap_or_else(|| {
        panic!(
            "no frame after the origin came back: {}\n{}",
            cap.summary(),
            edge.stderr_tail(30)
        )
    });
    eprintln!("the edge viewer resumed {first_after:?} after the new origin was live");
    assert!(
        first_after < Duration::from_secs(5),
        "resumed after {first_after:?}\n{}",
        edge.stderr_tail(20)
    );
    let after = v.iter().filter(|p| p.at > back).count();
    assert!(
        after >= 150,
        "{after} frames after the restart: {}",
        cap.summary()
    );
    let ms = cap.video_ms();
    assert!(
        ms.windows(2).all(|w| w[1] >= w[0]),
        "video DTS went back across the restart: {}",
        cap.summary()
    );
    let text = edge.stderr_text();
    assert!(text.contains("reconnecting in"), "{}", edge.stderr_tail(20));
    assert!(
        text.contains("input dtsc://"),
        "no INPUT_ABORT log line: {}",
        edge.stderr_tail(20)
    );
}
