//! The angel: SIGKILL the controller during playback. The angel starts a new controller at
//! once; it adopts the listeners and buffers that kept running (their pids unchanged), the
//! viewer and the publisher never notice (frames keep arriving, no gap over a second), the
//! new controller reports both in `clients`, new viewers are served, and the adopted
//! processes' log lines reach the new controller.
use serde_json::json;
use sluice_e2e::*;
use std::time::{Duration, Instant};

#[test]
fn a_killed_controller_is_restarted_and_adopts_what_runs() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let srv = Server::start();
    let angel = proc_info(srv.pid).expect("the angel");
    assert_eq!(angel.comm, "sluice-angel");
    let controller = || {
        descendants(srv.pid)
            .into_iter()
            .find(|p| p.ppid == srv.pid && p.comm == "sluice")
    };
    let old = controller().expect("a controller under the angel");
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        2,
        40,
    );
    srv.wait_live("live");
    let viewer = ffmpeg_framecrc(&srv.dir, "viewer", &srv.rtmp_url("live"), &[], 14);
    std::thread::sleep(Duration::from_secs(3));
    let listener_pid = |proto: &str, port: u16| {
        std::fs::read_to_string(srv.rundir.join(format!("listener-{proto}-{port}.pid")))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    let rtmp_before = listener_pid("RTMP", srv.rtmp_port).expect("RTMP pid file");
    let buffer_before = descendants(srv.pid)
        .into_iter()
        .find(|p| p.comm == "buffer")
        .expect("the buffer");
    assert!(sigkill(old.pid));
    let killed = Instant::now();
    let new = poll(Duration::from_secs(5), || {
        controller().filter(|c| c.pid != old.pid)
    })
    .unwrap_or_else(|| panic!("no new controller: {}", srv.stderr_tail(20)));
    // The new controller answers and has taken over the running processes.
    let clients = poll(Duration::from_secs(5), || {
        let v = srv
            .api(&json!({"clients": {"fields": ["stream", "protocol", "kind"]}}))
            .ok()?;
        let rows = v["clients"]["data"].as_array()?.clone();
        let has = |r: serde_json::Value| rows.contains(&r);
        (has(json!(["live", "RTMP", "viewer"])) && has(json!(["live", "RTMP", "input"])))
            .then_some(rows)
    });
    assert!(
        clients.is_some(),
        "the new controller does not report the viewer and the publisher: {}",
        srv.stderr_tail(30)
    );
    let text = srv.stderr_text();
    assert!(
        text.contains("the controller ended (signal: SIGKILL)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "adopted the RTMP listener on port {} (pid {rtmp_before})",
            srv.rtmp_port
        )),
        "{}",
        srv.stderr_tail(30)
    );
    assert!(
        text.contains(&format!(
            "adopted the buffer of live (pid {})",
            buffer_before.pid
        )),
        "{}",
        srv.stderr_tail(30)
    );
    assert_eq!(listener_pid("RTMP", srv.rtmp_port), Some(rtmp_before));
    assert!(
        proc_info(buffer_before.pid).is_some(),
        "the buffer was replaced"
    );
    // A new viewer is served by the adopted listener and buffer.
    let info = ffprobe(&srv.dir, "after", &srv.http_url("/live.ts"), &[], 15).unwrap_or_else(|e| {
        panic!(
            "no new viewer after the restart: {e}\n{}",
            srv.stderr_tail(20)
        )
    });
    assert_eq!(info.len(), 2, "{info:?}");
    // The viewer that was playing never noticed: frames kept coming, without a gap.
    let out = viewer.wait();
    let cap = Capture::from_output(&out);
    let after: Vec<_> = cap.video().into_iter().filter(|p| p.at > killed).collect();
    assert!(
        after.len() >= 100,
        "only {} video frames after the kill: {}",
        after.len(),
        out.describe()
    );
    let arrivals: Vec<Instant> = cap.video().iter().map(|p| p.at).collect();
    let gap = arrivals
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    assert!(
        gap < Duration::from_secs(1),
        "a {gap:?} gap in the viewer's frames"
    );
    assert!(new.pid != old.pid);
    // The publisher's connection process was forked before the kill: its last line (written
    // when the publisher leaves) still reaches the new controller's log.
    stop_client(publisher);
    let line = poll(Duration::from_secs(5), || {
        let v = srv.api(&json!({"log": {"binary": "RTMP"}})).ok()?;
        v["log"]
            .as_array()?
            .iter()
            .filter_map(|l| l[2].as_str())
            .find(|t| t.contains("stopped publishing live"))
            .map(str::to_string)
    });
    assert!(
        line.is_some(),
        "the adopted publisher's last line did not reach the log: {}",
        srv.stderr_tail(20)
    );
}

/// SIGKILL a stream's buffer while a publisher and viewers run: the controller starts a
/// new buffer on the publisher's next write, the publisher goes on into it (its current GOP
/// first), and every viewer goes on where it was, without a restart of their own. Each
/// viewer's frames after the kill are counted, the largest wall-clock gap between two frames
/// is under 2 s, and no video is repeated or missing.
fn buffer_killed_under(srv: &Server, publisher: Client, viewers: Vec<(&str, Client)>) {
    std::thread::sleep(Duration::from_secs(4));
    let buffer = |not: u32| {
        descendants(srv.pid)
            .into_iter()
            .find(|p| p.comm == "buffer" && p.pid != not)
    };
    let old = buffer(0).expect("the buffer");
    assert!(sigkill(old.pid));
    let killed = Instant::now();
    let new = poll(Duration::from_secs(3), || buffer(old.pid));
    assert!(new.is_some(), "no new buffer: {}", srv.stderr_tail(30));
    for (label, client) in viewers {
        let out = client.wait();
        let cap = Capture::from_output(&out);
        let v = cap.video();
        let after = v.iter().filter(|p| p.at > killed).count();
        assert!(
            after >= 100,
            "{label}: {after} video frames after the kill: {}\n{}",
            out.describe(),
            srv.stderr_tail(30)
        );
        let gap = v
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .max()
            .unwrap_or_default();
        // Noticing (within 250 ms) and a new buffer, which starts with the publisher's
        // current GOP: no wait for the next keyframe (GOPs are 2 s).
        assert!(gap < Duration::from_secs(2), "{label}: a {gap:?} gap");
        // Nothing repeated, nothing lost: the video DTS never goes back and never jumps by
        // more than a few frames (25 fps).
        let (_, monotonic) = cap.video_dts_check();
        let ms = cap.video_ms();
        let dts_gap_ms = ms.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        eprintln!(
            "{label}: largest gap between frames {gap:?} ({dts_gap_ms} ms of DTS), {after} frames after the kill"
        );
        assert!(
            monotonic,
            "{label}: video DTS went backwards: {}",
            out.describe()
        );
        assert!(
            dts_gap_ms <= 250,
            "{label}: {dts_gap_ms} ms of video missing around the new buffer"
        );
    }
    let text = srv.stderr_text();
    assert!(
        text.contains("reattached to a new buffer"),
        "{}",
        srv.stderr_tail(30)
    );
    let out = publisher.wait();
    assert!(
        out.status.success(),
        "the publisher failed: {}",
        out.describe()
    );
}

/// An RTMP publisher; RTMP, HTTP-TS and progressive MP4 viewers.
#[test]
fn a_killed_buffer_is_replaced_and_the_rtmp_publisher_and_viewers_go_on() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start();
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        2,
        40,
    );
    srv.wait_live("live");
    let rtmp = ffmpeg_framecrc(&srv.dir, "rtmp-viewer", &srv.rtmp_url("live"), &[], 16);
    let ts = ffmpeg_framecrc(&srv.dir, "ts-viewer", &srv.http_url("/live.ts"), &[], 16);
    let mp4 = ffmpeg_framecrc(&srv.dir, "mp4-viewer", &srv.http_url("/live.mp4"), &[], 16);
    buffer_killed_under(
        &srv,
        publisher,
        vec![("RTMP", rtmp), ("HTTP-TS", ts), ("MP4", mp4)],
    );
}

/// An RTSP publisher (ffmpeg, TCP interleaved); an RTSP viewer (same SSRCs, sequence
/// numbers and RTP clocks across the new buffer) and an RTMP viewer.
#[test]
fn a_killed_buffer_is_replaced_and_the_rtsp_publisher_and_viewers_go_on() {
    require_tools(&["ffmpeg"]);
    let port = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({"connector": "RTSP", "port": port, "interface": "127.0.0.1"}));
    });
    assert!(poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some());
    let url = format!("rtsp://127.0.0.1:{port}/live");
    let file = fixture("bframes.flv");
    let args = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-stream_loop",
        "2",
        "-i",
        file.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        &url,
    ]
    .map(String::from);
    let publisher = spawn_client(&srv.dir, "rtsp-publisher", 40, "ffmpeg", &args);
    srv.wait_live("live");
    let rtsp = ffmpeg_framecrc(
        &srv.dir,
        "rtsp-viewer",
        &url,
        &["-rtsp_transport", "tcp"],
        16,
    );
    let rtmp = ffmpeg_framecrc(&srv.dir, "rtmp-viewer", &srv.rtmp_url("live"), &[], 16);
    buffer_killed_under(&srv, publisher, vec![("RTSP", rtsp), ("RTMP", rtmp)]);
}
