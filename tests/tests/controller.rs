//! The controller as scripts and operators see it: the API's shapes, listener supervision,
//! wildcard streams, who may publish, and RTMP timestamps past 2^24 ms.
use serde_json::json;
use sluice_e2e::*;
use std::thread;
use std::time::{Duration, Instant};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn api_answers_config_streams_and_active_streams_in_mistserver_shapes() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start();
    let v = srv
        .api(&json!({"config": true, "streams": true, "active_streams": true}))
        .expect("API");
    let protos = v["config"]["protocols"]
        .as_array()
        .expect("config.protocols");
    assert!(
        protos
            .iter()
            .any(|p| p["connector"] == "RTMP" && p["port"] == srv.rtmp_port),
        "{v}"
    );
    assert_eq!(v["streams"]["live"]["source"], "push://", "{v}");
    assert_eq!(v["active_streams"], json!([]), "nothing is live yet: {v}");

    let url = srv.rtmp_url("live");
    let publisher = ffmpeg_publish(&srv.dir, "publisher", &fixture("bframes.flv"), &url, 30);
    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &[], 30);
    let rows = poll(Duration::from_secs(8), || {
        let v = srv
            .api(&json!({"active_streams": ["clients", "lastms"]}))
            .ok()?;
        let row = v["active_streams"]["live"].as_array()?.clone();
        (row[1].as_u64()? > 2000 && row[0].as_u64()? >= 1).then_some(row)
    });
    let row = rows.unwrap_or_else(|| {
        panic!(
            "active_streams never showed live with a viewer and lastms > 2000\n{}",
            srv.stderr_tail(30)
        )
    });
    assert_eq!(row.len(), 2, "one value per requested field: {row:?}");
    assert!(publisher.wait().status.success());
    let cap = Capture::from_output(&player.wait());
    assert!(cap.video().len() >= 150, "{}", cap.summary());

    // A bad request is a clear error, not a crash.
    let r = http_request(
        srv.api_port,
        "POST",
        "/api",
        Some(("application/json", b"{nope")),
    )
    .expect("API reachable");
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn api_stream_changes_are_written_back_keeping_unknown_keys() {
    let srv = Server::start();
    let v = srv
        .api(&json!({"addstream": {"cam": {"source": "push://"}}}))
        .expect("API");
    assert_eq!(v["addstream"]["cam"]["source"], "push://", "{v}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&srv.config_path).unwrap()).unwrap();
    assert_eq!(written["streams"]["cam"]["name"], "cam", "{written}");
    assert_eq!(written["streams"]["live"]["source"], "push://", "{written}");
    let v = srv.api(&json!({"deletestream": ["cam"]})).expect("API");
    assert!(v["deletestream"].get("cam").is_none(), "{v}");
}

#[test]
fn unknown_config_keys_survive_a_write() {
    // Start from a file with keys Sluice does not know, then make it write the file.
    let srv2 = Server::start_with_config(|cfg| {
        cfg["custom_note"] = json!({"owner": "ops"});
        cfg["config"]["unknown_setting"] = json!(42);
    });
    srv2.api(&json!({"addstream": {"cam": {"source": "push://"}}}))
        .expect("API");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&srv2.config_path).unwrap()).unwrap();
    assert_eq!(written["custom_note"]["owner"], "ops", "{written}");
    assert_eq!(written["config"]["unknown_setting"], 42, "{written}");
    assert_eq!(written["streams"]["cam"]["source"], "push://", "{written}");
}

#[test]
fn a_killed_listener_is_restarted_and_serves_again() {
    require_tools(&["ffprobe", "timeout"]);
    let srv = Server::start();
    let old = srv.rtmp_listener().expect("sluice-RTMP listener");
    assert!(sigkill(old.pid));
    let t0 = Instant::now();
    let new = poll(Duration::from_secs(5), || {
        srv.rtmp_listener()
            .filter(|l| l.pid != old.pid && port_accepts(srv.rtmp_port))
    })
    .unwrap_or_else(|| panic!("no new RTMP listener\n{}", srv.stderr_tail(20)));
    eprintln!(
        "listener {} replaced by {} after {} ms",
        old.pid,
        new.pid,
        t0.elapsed().as_millis()
    );
    assert!(
        srv.stderr_text().contains("exited"),
        "the restart is logged"
    );
    // And it serves: the demo plays.
    let streams = ffprobe(&srv.dir, "probe", &srv.rtmp_url("demo"), &[], 20).expect("ffprobe");
    assert!(find_stream(&streams, "video").is_some());
}

#[test]
fn wildcard_streams_open_with_their_base_config() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start();
    let url = srv.rtmp_url("live+cam1");
    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &[], 40);
    thread::sleep(Duration::from_millis(500));
    let publisher = ffmpeg_publish(&srv.dir, "publisher", &fixture("bframes.flv"), &url, 40);
    let active = poll(Duration::from_secs(8), || {
        let a = srv.active_streams().ok()?;
        a.contains(&"live+cam1".to_string()).then_some(a)
    });
    assert!(
        active.is_some(),
        "live+cam1 never active\n{}",
        srv.stderr_tail(20)
    );
    assert!(publisher.wait().status.success());
    let cap = Capture::from_output(&player.wait());
    assert_eq!(cap.video().len(), 250, "{}", cap.summary());
}

#[test]
fn publishing_to_an_unconfigured_stream_is_refused_and_logged() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start();
    let out = ffmpeg_publish(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("nosuch"),
        20,
    )
    .wait();
    assert!(
        !out.status.success(),
        "publish to an unknown stream must fail"
    );
    let log = srv.stderr_text();
    assert!(
        log.contains("no stream nosuch is configured"),
        "the refusal names the reason:\n{}",
        tail(&log, 20)
    );
    // Publishing into a file-sourced stream is refused too.
    let out = ffmpeg_publish(
        &srv.dir,
        "publisher2",
        &fixture("bframes.flv"),
        &srv.rtmp_url("demo"),
        20,
    )
    .wait();
    assert!(!out.status.success(), "publish into the demo must fail");
    assert!(
        srv.stderr_text().contains("not push://"),
        "{}",
        srv.stderr_tail(20)
    );
}

#[test]
fn rtmp_timestamps_past_2_pow_24_ms() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start();
    let url = srv.rtmp_url("live");
    // -copyts: framecrc shows the timestamps as received, not rebased to zero.
    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &["-copyts"], 40);
    thread::sleep(Duration::from_millis(500));
    // Start the publish at 16 800 s: every timestamp is above 2^24 ms = 16 777.216 s, so each
    // chunk carries an extended timestamp.
    let args = s(&[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-i",
        fixture("bframes.flv").to_str().unwrap(),
        "-c",
        "copy",
        "-output_ts_offset",
        "16800",
        "-f",
        "flv",
        &url,
    ]);
    let publisher = spawn_client(&srv.dir, "publisher", 40, "ffmpeg", &args);
    assert!(publisher.wait().status.success());
    let cap = Capture::from_output(&player.wait());
    let v = cap.video();
    assert_eq!(v.len(), 250, "{}", cap.summary());
    assert_eq!(cap.audio().len(), 432, "{}", cap.summary());
    assert!(
        v[0].dts >= 16_777_216,
        "first video dts {} is not past 2^24 ms: {}",
        v[0].dts,
        cap.summary()
    );
    let (max_gap, monotonic) = cap.video_dts_check();
    assert!(monotonic && max_gap <= 80, "{}", cap.summary());
}
