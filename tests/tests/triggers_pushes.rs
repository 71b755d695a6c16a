//! Triggers and pushes out, with real peers: a Python `http.server` as the trigger handler
//! (`tests/hook_server.py`), ffmpeg as publisher and player, and Debian's nginx-rtmp as the
//! server Sluice pushes to.
//! * PUSH_REWRITE refuses a publish whose URL lacks the good key (ffmpeg fails) and lets the
//!   good one in; USER_NEW refuses a viewer (403); a blocking STREAM_PUSH handler that cannot
//!   be reached applies its default, refusal.
//! * `push_start` to nginx-rtmp: ffmpeg reads every frame back from nginx-rtmp with its
//!   timestamps; PUSH_OUT_START and PUSH_END reach the hook; an auto-push rule pushes a
//!   stream as soon as it is live.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1 and localhost made by `openssl`: (cert, key).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    require_tools(&["openssl"]);
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn blocking_triggers_decide_who_publishes_and_plays() {
    require_tools(&["ffmpeg", "curl"]);
    let dir = unique_temp_dir("hooks");
    let hook = Hook::start(&dir, json!({"PUSH_REWRITE": "keyed", "USER_NEW": "false"}));
    let url = hook.url();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[
            ("PUSH_REWRITE", json!({"handler": url, "sync": true})),
            (
                "USER_NEW",
                json!({"handler": url, "sync": true, "streams": ["live"]}),
            ),
            ("STREAM_READY", json!({"handler": url})),
        ]);
    });
    // A bad key: the handler answers false and ffmpeg is refused.
    let bad = ffmpeg_publish(
        &srv.dir,
        "bad-key",
        &fixture("bframes.flv"),
        &format!("{}?key=bad", srv.rtmp_url("live")),
        10,
    )
    .wait();
    assert!(
        !bad.status.success(),
        "a publish with a bad key went through"
    );
    let seen = hook
        .wait_for("PUSH_REWRITE", "live")
        .expect("PUSH_REWRITE called");
    assert!(
        seen[0].starts_with("rtmp://") && seen[0].contains("key=bad"),
        "{seen:?}"
    );
    assert_eq!(seen[1], "127.0.0.1");
    assert!(srv
        .stderr_text()
        .contains("refused by the PUSH_REWRITE trigger"));
    // The good key: accepted, the stream goes live (STREAM_READY reaches the hook).
    let good = ffmpeg_publish(
        &srv.dir,
        "good-key",
        &fixture("bframes.flv"),
        &format!("{}?key=good", srv.rtmp_url("live")),
        20,
    );
    let ready = hook.wait_for("STREAM_READY", "live");
    assert!(ready.is_some(), "no STREAM_READY: {}", srv.stderr_tail(20));
    // USER_NEW answers false for live: the viewer gets 403, and the handler saw it.
    let r = srv.get("/live.flv").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let user = hook.wait_for("USER_NEW", "live").expect("USER_NEW called");
    assert_eq!(user[1], "127.0.0.1", "{user:?}");
    assert_eq!(user[3], "FLV", "{user:?}");
    stop_client(good);

    // A blocking handler nobody answers: its default (refuse) applies.
    let closed = free_port();
    let srv2 = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[(
            "STREAM_PUSH",
            json!({"handler": format!("http://127.0.0.1:{closed}/down"), "sync": true}),
        )]);
    });
    let refused = ffmpeg_publish(
        &srv2.dir,
        "handler-down",
        &fixture("bframes.flv"),
        &srv2.rtmp_url("live"),
        10,
    )
    .wait();
    assert!(
        !refused.status.success(),
        "published although the handler was down"
    );
    assert!(
        srv2.stderr_text()
            .contains("applying its default \"false\""),
        "{}",
        srv2.stderr_tail(10)
    );

    // PLAY_REWRITE sends viewers of `alias` to `live`; DEFAULT_STREAM gives viewers of a
    // stream that does not exist `live` instead.
    let hook3 = Hook::start(
        &dir,
        json!({"PLAY_REWRITE": "rewrite:alias:live", "DEFAULT_STREAM": "live"}),
    );
    let url3 = hook3.url();
    let srv3 = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[
            ("PLAY_REWRITE", json!({"handler": url3, "sync": true})),
            ("DEFAULT_STREAM", json!({"handler": url3, "sync": true})),
        ]);
    });
    let publisher = publish_fixture(&srv3, "live");
    srv3.wait_live("live");
    for path in ["/alias.ts", "/nosuch.ts"] {
        let info = ffprobe(&srv3.dir, "rewritten", &srv3.http_url(path), &[], 15)
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", srv3.stderr_tail(20)));
        let codecs: Vec<&str> = info.iter().map(|s| s.codec_name.as_str()).collect();
        assert_eq!(codecs, ["h264", "aac"], "{path}");
    }
    assert!(hook3.wait_for("PLAY_REWRITE", "alias").is_some());
    assert!(srv3
        .stderr_text()
        .contains("DEFAULT_STREAM: nosuch plays live"));
    stop_client(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn https_handlers_answer_over_tls_checked_against_the_trusted_roots() {
    require_tools(&["ffmpeg", "curl"]);
    let dir = unique_temp_dir("hooks-tls");
    let trusted = self_signed(&dir, "trusted");
    let stranger = self_signed(&dir, "stranger");
    let hook = Hook::start_tls(&dir, json!({"PUSH_REWRITE": "keyed"}), Some(&trusted));
    let unknown = Hook::start_tls(&dir, json!({"USER_NEW": "true"}), Some(&stranger));
    let (url, unknown_url) = (hook.url(), unknown.url());
    // The controller trusts the first hook's certificate only.
    let ca = trusted.0.to_str().unwrap().to_string();
    let srv = Server::start_with_env(&[("SSL_CERT_FILE", &ca)], |cfg| {
        cfg["config"]["triggers"] = triggers(&[
            ("PUSH_REWRITE", json!({"handler": url, "sync": true})),
            ("STREAM_READY", json!({"handler": url})),
            ("USER_NEW", json!({"handler": unknown_url, "sync": true})),
        ]);
    });
    // The HTTPS handler's answers decide: a bad key is refused, the good one goes live.
    let bad = ffmpeg_publish(
        &srv.dir,
        "bad-key",
        &fixture("bframes.flv"),
        &format!("{}?key=bad", srv.rtmp_url("live")),
        10,
    )
    .wait();
    assert!(
        !bad.status.success(),
        "a publish with a bad key went through"
    );
    let good = ffmpeg_publish(
        &srv.dir,
        "good-key",
        &fixture("bframes.flv"),
        &format!("{}?key=good", srv.rtmp_url("live")),
        20,
    );
    srv.wait_live("live");
    let ready = hook.wait_for("STREAM_READY", "live");
    assert!(ready.is_some(), "no STREAM_READY over HTTPS");
    let calls = hook.calls();
    assert!(
        calls
            .iter()
            .any(|(t, l)| t == "PUSH_REWRITE" && l[0].contains("key=bad")),
        "{calls:?}"
    );
    // The other handler's certificate is not trusted: the TLS handshake fails, nothing
    // reaches it, and USER_NEW's default (refuse) applies.
    let r = srv.get("/live.flv").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(unknown.calls().is_empty(), "{:?}", unknown.calls());
    let err = srv.stderr_text();
    let line = err
        .lines()
        .find(|l| l.contains("trigger USER_NEW: handler https://"))
        .unwrap_or_else(|| panic!("no failure line\n{}", srv.stderr_tail(20)));
    assert!(
        line.to_lowercase().contains("certificate") && line.contains("applying its default"),
        "{line}"
    );
    stop_client(good);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_push_to_nginx_rtmp_delivers_every_frame_and_auto_push_follows_a_live_stream() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("push");
    let hook = Hook::start(&dir, json!({}));
    let url = hook.url();
    let nginx = NginxRtmp::start(&dir);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod", "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
        cfg["config"]["triggers"] = triggers(&[
            ("PUSH_OUT_START", json!({"handler": url})),
            ("PUSH_END", json!({"handler": url})),
        ]);
    });
    // The player waits at nginx-rtmp before the push starts, so it gets it from the start.
    let target = format!("rtmp://127.0.0.1:{}/live/out", nginx.port);
    let player = ffmpeg_framecrc(&srv.dir, "from-nginx", &target, &[], 40);
    std::thread::sleep(Duration::from_millis(1500));
    let v = srv
        .api(&json!({"push_start": ["vod", target]}))
        .expect("push_start");
    let id = v["push_start"]["id"].as_u64().expect("an id");
    let listed = srv.api(&json!({"push_list": true})).unwrap();
    assert_eq!(listed["push_list"][0][0], id, "{listed}");
    assert_eq!(listed["push_list"][0][1], "vod", "{listed}");
    let out = player.wait();
    let got = Capture::from_output(&out).per_stream();
    let want = fixture_streams("bframes.flv");
    assert_eq!(got.len(), 2, "{}\n{}", out.describe(), srv.stderr_tail(20));
    got[0].assert_matches(&want[0], 1, "video pushed to nginx-rtmp");
    got[1].assert_matches(&want[1], 1, "audio pushed to nginx-rtmp");
    let start = hook
        .wait_for("PUSH_OUT_START", "vod")
        .expect("PUSH_OUT_START");
    assert_eq!(start[1], target);
    let end = hook.wait_for("PUSH_END", "vod").expect("PUSH_END");
    assert_eq!(end[0], id.to_string(), "{end:?}");
    // The push ended with its stream.
    assert!(
        poll(Duration::from_secs(5), || {
            let l = srv.api(&json!({"push_list": true})).ok()?;
            l["push_list"].as_array()?.is_empty().then_some(())
        })
        .is_some(),
        "the push is still listed"
    );

    // An auto-push rule: a publish into live+cam goes on to nginx-rtmp as cam.
    let rule = json!([
        "live",
        format!("rtmp://127.0.0.1:{}/live/$stream", nginx.port)
    ]);
    let v = srv.api(&json!({"push_auto_add": rule})).unwrap();
    assert_eq!(v["push_auto_add"], json!([rule]), "{v}");
    let publisher = publish_fixture(&srv, "live+cam");
    let relayed = format!("rtmp://127.0.0.1:{}/live/live+cam", nginx.port);
    let probe = poll(Duration::from_secs(20), || {
        ffprobe(&srv.dir, "auto", &relayed, &[], 8)
            .ok()
            .filter(|s| s.len() == 2)
    });
    let probe = probe.unwrap_or_else(|| {
        panic!(
            "auto push never reached nginx-rtmp: {}",
            srv.stderr_tail(20)
        )
    });
    let codecs: Vec<&str> = probe.iter().map(|s| s.codec_name.as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"]);
    let v = srv.api(&json!({"push_auto_remove": rule})).unwrap();
    assert_eq!(v["push_auto_remove"], json!([]), "{v}");
    // Bad targets are refused with a reason.
    let r = srv.api(&json!({"push_start": ["vod", "gopher://x/y"]}));
    assert!(r.is_err_and(|e| e.to_string().contains("scheme")));
    stop_client(publisher);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stream's own triggers during a publish: LIVE_TRACK_LIST with its tracks,
/// STREAM_BUFFER FULL while data comes and EMPTY when the publish ended, and LIVE_BANDWIDTH
/// once the input's rate passes the handler's `params` (bytes/s).
#[test]
fn stream_triggers_follow_a_publish() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("stream-triggers");
    let hook = Hook::start(&dir, json!({}));
    let url = hook.url();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[
            ("LIVE_TRACK_LIST", json!({"handler": url})),
            ("STREAM_BUFFER", json!({"handler": url})),
            ("LIVE_BANDWIDTH", json!({"handler": url, "params": 20000})),
        ]);
    });
    let publisher = publish_fixture(&srv, "live");
    let tracks = hook
        .wait_for("LIVE_TRACK_LIST", "live")
        .expect("LIVE_TRACK_LIST");
    let list: Value = serde_json::from_str(&tracks[1]).expect("a JSON track list");
    let codecs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["codec"].as_str())
        .collect();
    assert_eq!(codecs, ["H264", "AAC"], "{list}");
    let full = hook
        .wait_for("STREAM_BUFFER", "live")
        .expect("STREAM_BUFFER");
    assert_eq!(full[1], "FULL", "{full:?}");
    let bw = hook
        .wait_for("LIVE_BANDWIDTH", "live")
        .expect("LIVE_BANDWIDTH");
    let rate: u64 = bw[1].parse().unwrap();
    assert!(rate > 20_000, "{bw:?}");
    assert!(publisher.wait().status.success());
    let empty = poll(Duration::from_secs(10), || {
        hook.calls()
            .into_iter()
            .find(|(t, l)| t == "STREAM_BUFFER" && l.get(1).map(String::as_str) == Some("EMPTY"))
    });
    assert!(
        empty.is_some(),
        "no STREAM_BUFFER EMPTY: {:?}",
        hook.calls()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// STREAM_SOURCE: a `push://` stream whose handler answers with a file plays that file.
#[test]
fn stream_source_decides_where_a_stream_comes_from() {
    require_tools(&["ffprobe"]);
    let dir = unique_temp_dir("stream-source");
    let file = fixture("bframes.flv");
    let hook = Hook::start(&dir, json!({"STREAM_SOURCE": file.to_str().unwrap()}));
    let url = hook.url();
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["dyn"] = json!({"name": "dyn", "source": "push://"});
        cfg["config"]["triggers"] = triggers(&[(
            "STREAM_SOURCE",
            json!({"handler": url, "sync": true, "streams": ["dyn"]}),
        )]);
    });
    let info = ffprobe(&srv.dir, "dyn", &srv.http_url("/dyn.ts"), &[], 15)
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_tail(20)));
    let codecs: Vec<&str> = info.iter().map(|s| s.codec_name.as_str()).collect();
    assert_eq!(codecs, ["h264", "aac"]);
    let asked = hook
        .wait_for("STREAM_SOURCE", "dyn")
        .expect("STREAM_SOURCE asked");
    assert_eq!(asked, ["dyn"]);
    assert!(srv
        .stderr_text()
        .contains(&format!("STREAM_SOURCE: dyn from {}", file.display())));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pull whose upstream refuses the connection, one whose upstream sends garbage, and a
/// file source that is not what its name says: INPUT_ABORT reaches the handler with the
/// stream, the source and the reason, once per failed attempt (the pulls retry with
/// backoff); the viewer gets a 404 naming the reason, and the server's other streams play
/// on.
#[test]
fn failing_pulls_fire_input_abort_with_the_reason() {
    require_tools(&["ffmpeg", "/usr/bin/python3"]);
    let dir = unique_temp_dir("input-abort");
    let hook = Hook::start(&dir, json!({}));
    let url = hook.url();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("junk.flv"), vec![0x5a; 64 << 10]).unwrap();
    let web_port = free_port();
    let mut web = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &web_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    assert!(poll(Duration::from_secs(10), || port_accepts(web_port)
        .then_some(()))
    .is_some());
    let dead = format!("http://127.0.0.1:{}/cam.ts", free_port());
    let fake = dir.join("fake.mp4");
    std::fs::write(&fake, b"<html>not a movie</html>").unwrap();
    let junk = format!("http://127.0.0.1:{web_port}/junk.flv");
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[("INPUT_ABORT", json!({"handler": url}))]);
        cfg["streams"]["dead"] = json!({"name": "dead", "source": dead});
        cfg["streams"]["junk"] = json!({"name": "junk", "source": junk});
        cfg["streams"]["badfile"] =
            json!({"name": "badfile", "source": fake.to_str().unwrap(), "loop": false});
    });
    let r = srv.get("/dead.ts").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("its input failed") && r.text().contains("refused"),
        "{}",
        r.text()
    );
    // An RTMP player is told StreamNotFound with the reason.
    let out = ffmpeg_framecrc(&srv.dir, "junk-rtmp", &srv.rtmp_url("junk"), &[], 20).wait();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("its input failed"),
        "{}",
        out.describe()
    );
    let seen = hook
        .wait_for("INPUT_ABORT", "dead")
        .unwrap_or_else(|| panic!("no INPUT_ABORT for dead: {}", srv.stderr_tail(30)));
    assert_eq!(seen[1], dead, "{seen:?}");
    assert_eq!(seen[2], "sluice pull", "{seen:?}");
    assert!(seen[3].parse::<u32>().is_ok(), "pid: {seen:?}");
    assert!(seen[5].contains("refused"), "reason: {seen:?}");
    let seen = hook
        .wait_for("INPUT_ABORT", "junk")
        .unwrap_or_else(|| panic!("no INPUT_ABORT for junk: {}", srv.stderr_tail(30)));
    assert_eq!(seen[1], junk, "{seen:?}");
    assert!(seen[5].contains("FLV"), "reason: {seen:?}");
    // A file source that cannot be read: the buffer's own reason.
    let r = srv.get("/badfile.ts").unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("no moov box"), "{}", r.text());
    let seen = hook
        .wait_for("INPUT_ABORT", "badfile")
        .unwrap_or_else(|| panic!("no INPUT_ABORT for badfile: {}", srv.stderr_tail(30)));
    assert_eq!(seen[2], "sluice buffer", "{seen:?}");
    assert!(seen[5].contains("no moov box"), "reason: {seen:?}");
    // Retried with backoff: another attempt is reported.
    assert!(
        poll(Duration::from_secs(10), || (hook
            .calls()
            .iter()
            .filter(|(t, l)| t == "INPUT_ABORT" && l[0] == "dead")
            .count()
            >= 2)
            .then_some(()))
        .is_some(),
        "no second attempt reported"
    );
    let info = ffprobe(&srv.dir, "demo", &srv.http_url("/demo.ts"), &[], 15).unwrap();
    assert_eq!(info.len(), 2, "the demo stream plays on");
    sigkill(web.id());
    let _ = web.wait();
}
