//! RTSP pull (`"source": "rtsp://…"`): gst-rtsp-server from Python stands in for an IP
//! camera (`tests/camera.py`). Sluice pulls it over TCP and UDP with every frame; a camera
//! that is killed and restarted is played again within 5 s with timestamps that keep
//! increasing; 1% packet loss and some reordering over UDP are counted, reordering is undone
//! and loss costs whole GOPs instead of broken pictures (ffmpeg decodes the output without
//! an error); Digest credentials in the URL
//! are used, and wrong ones are reported.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stand-in camera; killed (SIGKILL) when dropped.
struct Camera {
    child: Child,
    port: u16,
}

impl Camera {
    fn start(port: u16, args: &[&str]) -> Camera {
        require_tools(&["/usr/bin/python3"]);
        let script = workspace_root().join("tests/camera.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/camera.py");
        let mut line = String::new();
        let out = child.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "camera.py did not start");
        Camera { child, port }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }

    /// Whether the camera process has ended by itself. gst-rtsp-server sometimes aborts
    /// on its own assertion (`gst_rtsp_media_get_rates`, data before the segment event)
    /// while a client sets up: a run it spoiled is tried once more.
    fn crashed(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        sigkill(self.child.id());
        let _ = self.child.wait();
    }
}

/// A GStreamer element the camera needs (openh264enc is in gstreamer1.0-plugins-bad).
fn require_gst_element(name: &str) {
    require_gst();
    let ok = Command::new("gst-inspect-1.0")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "GStreamer element {name} missing: run scripts/install-test-deps.sh"
    );
}

fn pull_stats(rundir: &Path, stream: &str) -> Value {
    std::fs::read(rundir.join(format!("{stream}.pull.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn server(streams: Value) -> Server {
    Server::start_with_config(|cfg| {
        for (k, v) in streams.as_object().unwrap() {
            cfg["streams"][k] = v.clone();
        }
    })
}

/// The packets of the camera's first session: the camera plays its file once per session,
/// and a new session's times start at least 240 ms after the last packet of the one before
/// (a gap no audio frame has within a session).
fn first_session(mut cap: Capture) -> Capture {
    let audio: Vec<i64> = cap.audio().iter().map(|p| p.pts).collect();
    let tb = |m: Media| {
        let idx = cap
            .packets
            .iter()
            .find(|p| p.media == m)
            .map_or(0, |p| p.stream);
        cap.timebases
            .get(&idx)
            .and_then(|t| t.split_once('/'))
            .and_then(|(n, d)| Some((n.parse::<i64>().ok()?, d.parse::<i64>().ok()?)))
            .map_or(1.0, |(n, d)| n as f64 * 1000.0 / d as f64)
    };
    let a_ms = tb(Media::Audio);
    let v_ms = tb(Media::Video);
    let Some(cut) = audio
        .windows(2)
        .find(|w| (w[1] - w[0]) as f64 * a_ms > 150.0)
        .map(|w| (w[0] + w[1]) as f64 / 2.0 * a_ms)
    else {
        return cap;
    };
    // Video is cut at the same place, moved by how far its times run from audio's.
    let first = |m: Media| cap.packets.iter().find(|p| p.media == m).map(|p| p.pts);
    let shift = match (first(Media::Video), first(Media::Audio)) {
        (Some(v), Some(a)) => v as f64 * v_ms - a as f64 * a_ms,
        _ => 0.0,
    };
    cap.packets.retain(|p| match p.media {
        Media::Audio => p.pts as f64 * a_ms < cut,
        _ => (p.pts as f64 * v_ms) < cut + shift,
    });
    cap
}

#[test]
fn a_camera_pulled_over_tcp_and_udp_gives_every_frame() {
    require_tools(&["ffmpeg"]);
    let src = fixture_streams("bframes.flv");
    for transport in ["tcp", "udp"] {
        for attempt in 0..2 {
            // Each session plays the file once from its start, at real time.
            let mut cam = Camera::start(
                free_port(),
                &["--file", fixture("bframes.flv").to_str().unwrap()],
            );
            let srv = server(json!({
                "cam": {"name": "cam", "source": cam.url(), "rtsp_transport": transport}
            }));
            // On demand: the viewer starts the pull, and is there for the first keyframe. The
            // file lasts 10 s; the camera's session ends 8 s after (silence), and the next
            // starts a second later: 18 s hold the first session whole (the rest is cut off).
            // The viewer is curl (unbuffered: `-N`, so that what arrived is on disk when
            // `timeout` stops it), and ffmpeg reads what it saved to the end: ffmpeg's H.264
            // parser holds an access unit until the next one starts (or the input ends), so a
            // live ffmpeg stopped while the camera is quiet never shows the last frame the
            // server sent (the "249 of 250" of earlier runs: the server had sent it).
            let saved = srv.dir.join(format!("cam-{transport}.ts"));
            let url = srv.http_url("/cam.ts");
            let saved_arg = saved.to_str().unwrap().to_string();
            spawn_client(
                &srv.dir,
                &format!("curl-{transport}"),
                18,
                "curl",
                &["-sSN".to_string(), "-o".into(), saved_arg.clone(), url],
            )
            .wait();
            let out = ffmpeg_framecrc(&srv.dir, transport, &saved_arg, &[], 30).wait();
            // gst-rtsp-server from Python sometimes aborts on its first client (seen about once
            // in ten runs): that is the stand-in camera failing, not Sluice; one retry.
            if attempt == 0 && matches!(cam.child.try_wait(), Ok(Some(_))) {
                eprintln!("camera.py exited during the {transport} run; retrying once");
                continue;
            }
            let got = first_session(Capture::from_output(&out)).per_stream();
            let what = format!("pulled over {transport}, played as /cam.ts");
            assert_eq!(
                got.len(),
                2,
                "{what}: {}\n{}",
                out.describe(),
                srv.stderr_tail(20)
            );
            got[0].assert_matches(&src[0], 1, &format!("{what}, video"));
            // rtpmp4gpay holds the file's last AAC frame back (it waits for the next one to
            // finish its packet): 431 of 432 arrive.
            let mut sent = src[1].clone();
            if got[1].packets + 1 == sent.packets {
                sent.packets -= 1;
                sent.keyframes -= 1;
                sent.pts_ms.pop();
            }
            got[1].assert_matches(&sent, 2, &format!("{what}, audio"));
            let st = pull_stats(&srv.rundir, "cam");
            // Still playing, or (the viewer having held on past the file's end) waiting out
            // the camera's silence before the next session.
            assert!(
                st["state"] == "playing"
                    || (st["state"] == "reconnecting"
                        && st["last_error"] == "nothing from the camera for 8 s"),
                "{st}"
            );
            assert_eq!(st["packets_lost"], 0, "{st}");
            assert!(st["sessions"].as_u64() >= Some(1), "{st}");
            assert!(
                srv.stderr_text()
                    .contains(&format!("cam: pulling {} over {transport}", cam.url())),
                "{}",
                srv.stderr_tail(20)
            );
            // The stream goes out over HLS and RTMP too (the pulled H.264 and AAC).
            for (label, url) in [("hls", srv.hls_url("cam")), ("rtmp", srv.rtmp_url("cam"))] {
                let info = ffprobe(&srv.dir, label, &url, &[], 20).unwrap();
                let codecs: Vec<&str> = info.iter().map(|s| s.codec_name.as_str()).collect();
                assert_eq!(codecs, ["h264", "aac"], "{label}: {info:?}");
            }
            break;
        }
    }
}

#[test]
fn a_camera_that_restarts_is_played_again_within_5_s_with_increasing_timestamps() {
    require_tools(&["ffmpeg"]);
    require_gst_element("openh264enc");
    let port = free_port();
    let mut cam = Camera::start(port, &["--live"]);
    // Always on: pulled from the start, before any viewer.
    let srv = server(json!({
        "cam": {"name": "cam", "source": cam.url(), "always_on": true}
    }));
    let playing = |sessions: u64| {
        let st = pull_stats(&srv.rundir, "cam");
        (st["state"] == "playing" && st["sessions"] == sessions).then_some(st)
    };
    assert!(
        poll(Duration::from_secs(15), || playing(1)).is_some(),
        "always-on stream not pulled: {}",
        srv.stderr_tail(20)
    );
    let viewer = ffmpeg_framecrc(&srv.dir, "viewer", &srv.http_url("/cam.ts"), &[], 22);
    std::thread::sleep(Duration::from_secs(5));
    drop(cam);
    std::thread::sleep(Duration::from_secs(3));
    cam = Camera::start(port, &["--live"]);
    let restarted = Instant::now();
    let st = poll(Duration::from_secs(10), || playing(2));
    let took = restarted.elapsed();
    assert!(st.is_some(), "not played again: {}", srv.stderr_tail(20));
    assert!(
        took <= Duration::from_secs(6),
        "played again after {took:?}"
    );
    let out = viewer.wait();
    let cap = Capture::from_output(&out);
    let (gap, monotonic) = cap.video_dts_check();
    assert!(monotonic, "video DTS went backwards: {}", out.describe());
    // Times continue: the restart shows as a step of a few hundred ms, not a jump.
    let tb = cap
        .video()
        .first()
        .map(|p| p.stream)
        .and_then(|i| cap.timebases.get(&i).cloned());
    assert_eq!(tb.as_deref(), Some("1/90000"), "MPEG-TS times");
    assert!(gap < 90_000, "largest DTS step {} ms", gap / 90);
    let v = cap.video();
    let after: Vec<_> = v.iter().filter(|p| p.at >= restarted + took).collect();
    assert!(
        after.len() >= 50,
        "{} video frames after the camera came back: {}",
        after.len(),
        out.describe()
    );
    assert!(after.iter().any(|p| p.key), "no keyframe after the restart");
    let a = cap.audio();
    assert!(
        a.windows(2).all(|w| w[1].dts > w[0].dts),
        "audio DTS not increasing"
    );
    drop(cam);
}

#[test]
fn udp_loss_is_counted_and_costs_gops_not_broken_pictures() {
    require_tools(&["ffmpeg"]);
    require_gst_element("openh264enc");
    for attempt in 1..=2 {
        if udp_loss_run(attempt) {
            return;
        }
        eprintln!("the stand-in camera crashed (gst-rtsp-server's assertion); once more");
    }
    panic!("the stand-in camera crashed twice");
}

/// One run of [`udp_loss_is_counted_and_costs_gops_not_broken_pictures`]; false when the
/// camera crashed under it (then nothing was asserted).
fn udp_loss_run(attempt: u32) -> bool {
    let mut cam = Camera::start(free_port(), &["--live", "--drop", "1"]);
    let srv = server(json!({
        "cam": {"name": "cam", "source": cam.url(), "rtsp_transport": "udp"}
    }));
    // Decode what the viewer gets: every picture it receives must decode cleanly.
    let out = spawn_client(
        &srv.dir,
        "decode",
        14,
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            &srv.http_url("/cam.ts"),
            "-map",
            "0:v",
            "-f",
            "framecrc",
            "-",
        ]
        .map(String::from),
    )
    .wait();
    let frames = timed_lines(&out.chunks)
        .iter()
        .filter(|(_, l)| l.starts_with("0,"))
        .count();
    // The pull writes its stats once a second: wait up to 3 s for a file that shows the
    // losses' effects (a lost packet is counted before its access unit is dropped).
    let settled = |st: &serde_json::Value| {
        ["packets_lost", "units_dropped", "packets_reordered"]
            .iter()
            .all(|k| st[*k].as_u64().unwrap_or(0) > 0)
    };
    let st = poll(Duration::from_secs(3), || {
        let st = pull_stats(&srv.rundir, "cam");
        settled(&st).then_some(st)
    })
    .unwrap_or_else(|| pull_stats(&srv.rundir, "cam"));
    if cam.crashed() && attempt < 2 {
        return false;
    }
    let lost = st["packets_lost"].as_u64().unwrap_or(0);
    assert!(lost > 0, "1% loss not counted: {st}");
    assert!(st["units_dropped"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(
        st["packets_reordered"].as_u64().unwrap_or(0) > 0,
        "no reordering: {st}"
    );
    // The H.264 decoder's complaints (missing references, concealed macroblocks); the
    // lines of ffmpeg's own exit at the time limit are not about the stream.
    let errors = out.stderr.lines().filter(|l| l.contains("[h264 @")).count();
    assert!(
        errors <= 2,
        "decoder errors with loss ({lost} packets): {}",
        out.describe()
    );
    // 25 fps for about 12 s, less the GOPs loss cost.
    assert!(
        frames >= 100,
        "{frames} pictures decoded: {}",
        out.describe()
    );
    assert!(
        srv.stderr_text().contains("RTP packets lost"),
        "no log line names the loss: {}",
        srv.stderr_tail(20)
    );
    true
}

#[test]
fn digest_credentials_in_the_url_are_used_and_wrong_ones_reported() {
    require_tools(&["ffprobe"]);
    require_gst_element("openh264enc");
    // A live camera: it sends for as long as the test needs.
    let cam = Camera::start(
        free_port(),
        &["--live", "--user", "admin", "--password", "s3cret:x"],
    );
    let good = cam.url().replace("rtsp://", "rtsp://admin:s3cret%3Ax@");
    let bad = cam.url().replace("rtsp://", "rtsp://admin:wrong@");
    let srv = server(json!({
        "cam": {"name": "cam", "source": good},
        "bad": {"name": "bad", "source": bad}
    }));
    let info = ffprobe(&srv.dir, "good", &srv.http_url("/cam.ts"), &[], 20).unwrap();
    assert_eq!(info.len(), 2, "{info:?}: {}", srv.stderr_tail(20));
    // Wrong credentials: the reason is in the stats and the log, and the other stream plays
    // on. A viewer of `bad` gets a 404 naming the reason once the first attempt failed.
    let r = srv.get("/bad.ts").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("401") && !r.text().contains("wrong"),
        "{}",
        r.text()
    );
    let st = poll(Duration::from_secs(10), || {
        let st = pull_stats(&srv.rundir, "bad");
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
            .then_some(st)
    });
    assert!(st.is_some(), "no 401 reported: {}", srv.stderr_tail(20));
    assert!(
        !srv.stderr_text().contains("wrong"),
        "the password was logged: {}",
        srv.stderr_tail(20)
    );
    let info = ffprobe(&srv.dir, "good-again", &srv.http_url("/cam.ts"), &[], 20).unwrap();
    assert_eq!(info.len(), 2, "{info:?}");
}
