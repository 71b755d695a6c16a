//! The JSON API as admins and scripts use it, driven by curl (`docs/API.md`'s examples):
//! authentication (no trust for loopback, MistServer's challenge flow, bearer tokens),
//! stream and stream-key calls with their errors (nothing changes on a bad request),
//! sessions in `clients`/`active_streams`/`totals` within a second, the access log line,
//! `stop_sessions`, `nuke_stream`, config backup/restore/reload, `shutdown`, and `/metrics`
//! read by the Prometheus client library's own parser.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// curl against the API: (HTTP status, JSON body). `auth` adds the test token.
fn curl(srv: &Server, path: &str, body: Option<&str>, auth: bool) -> (u16, Value) {
    require_tools(&["curl"]);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}"]);
    if auth {
        cmd.args(["-H", &format!("Authorization: Bearer {TEST_TOKEN}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("http://127.0.0.1:{}{path}", srv.api_port));
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let v = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code.trim().parse().unwrap_or(0), v)
}

fn call(srv: &Server, body: Value) -> (u16, Value) {
    curl(srv, "/api", Some(&body.to_string()), true)
}

fn md5_hex(s: &str) -> String {
    let out = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}

#[test]
fn only_authenticated_requests_run_and_the_challenge_flow_is_mistserver_s() {
    let srv = Server::start_with_config(|cfg| {
        cfg["account"] = json!({"admin": {"password": md5_hex("s3cret")}});
    });
    // Loopback is not trusted: no credentials, a challenge and nothing else.
    let (st, v) = curl(&srv, "/api", Some(r#"{"streams":true}"#), false);
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["authorize"]["status"], "CHALL", "{v}");
    assert!(v.get("streams").is_none(), "{v}");
    let chall = v["authorize"]["challenge"].as_str().unwrap().to_string();
    // md5(md5(password) + challenge) logs in, and the other calls of the request run.
    let resp = md5_hex(&format!("{}{chall}", md5_hex("s3cret")));
    let body = json!({"authorize": {"username": "admin", "password": resp}, "streams": true});
    let (st, v) = curl(&srv, "/api", Some(&body.to_string()), false);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["authorize"]["status"], "OK");
    assert_eq!(v["streams"]["live"]["source"], "push://", "{v}");
    // A wrong password is refused.
    let body =
        json!({"authorize": {"username": "admin", "password": md5_hex("x")}, "streams": true});
    let (st, v) = curl(&srv, "/api", Some(&body.to_string()), false);
    assert_eq!(
        (st, v["authorize"]["status"].as_str()),
        (401, Some("CHALL"))
    );
    // A bearer token: a new one works at once, is shown once, and is stored as a hash.
    let (st, v) = call(&srv, json!({"api_token_add": "grafana"}));
    assert_eq!(st, 200, "{v}");
    let token = v["api_token_add"]["token"].as_str().unwrap().to_string();
    let cfg_text = std::fs::read_to_string(&srv.config_path).unwrap();
    assert!(
        !cfg_text.contains(&token),
        "the token itself is never stored"
    );
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {token}")])
        .args(["--data-binary", r#"{"api_tokens":true}"#])
        .arg(format!("http://127.0.0.1:{}/api", srv.api_port))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["api_tokens"], json!(["tests", "grafana"]), "{v}");
    // `?command=` (URL-encoded JSON) works as a GET, as with MistServer.
    let (st, v) = curl(
        &srv,
        "/api?command=%7B%22capabilities%22%3Atrue%7D",
        None,
        true,
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["capabilities"]["connectors"]["RTSP"].is_object(), "{v}");
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let srv = Server::start();
    let before = std::fs::read_to_string(&srv.config_path).unwrap();
    let cases = [
        (
            json!({"addstream": {"a/b": {"source": "push://"}}}),
            400,
            "addstream",
        ),
        (
            json!({"addstream": {"..": {"source": "push://"}}}),
            400,
            "addstream",
        ),
        (
            json!({"addstream": {"x\u{7}y": {"source": "push://"}}}),
            400,
            "addstream",
        ),
        (
            json!({"addstream": {"cam": {"source": "gopher://h/x"}}}),
            400,
            "addstream",
        ),
        (json!({"deletestream": "nosuch"}), 404, "deletestream"),
        (json!({"nosuchcall": true}), 400, "nosuchcall"),
        (
            json!({"streamkey_add": {"k1": "nosuch"}}),
            404,
            "streamkey_add",
        ),
        (
            json!({"config_restore": "not a config"}),
            400,
            "config_restore",
        ),
        (json!({"config": {"log_level": "LOUD"}}), 400, "config"),
        // A good call beside a bad one does not run either.
        (
            json!({"addstream": {"good": {"source": "push://"}}, "deletestream": "nosuch"}),
            404,
            "deletestream",
        ),
    ];
    for (body, status, name) in cases {
        let (st, v) = call(&srv, body.clone());
        assert_eq!(st, status, "{body} -> {v}");
        let errs = v["errors"].as_array().expect("errors");
        assert!(
            errs.iter()
                .any(|e| e["call"] == name && e["error"].as_str().is_some_and(|s| !s.is_empty())),
            "{body} -> {v}"
        );
    }
    let (st, v) = curl(&srv, "/api", Some("{nope"), true);
    assert_eq!(st, 400, "{v}");
    // A body over 1 MiB is refused whole.
    let big = format!("{{\"streams\":true,\"pad\":\"{}\"}}", "x".repeat(1 << 20));
    let path = srv.dir.join("big.json");
    std::fs::write(&path, big).unwrap();
    let (st, v) = curl(&srv, "/api", Some(&format!("@{}", path.display())), true);
    assert_eq!(st, 413, "{v}");
    assert_eq!(std::fs::read_to_string(&srv.config_path).unwrap(), before);
    let (_, v) = call(&srv, json!({"streams": true}));
    assert!(v["streams"].get("good").is_none(), "{v}");
}

#[test]
fn streams_keys_and_config_calls_change_what_runs() {
    let mut srv = Server::start_with_streams(json!({
        "live": {"name": "live", "source": "push://"},
        "locked": {"name": "locked", "source": "push://@hidden"}
    }));
    // addstream / deletestream answer with the streams, as MistServer does.
    let (st, v) = call(
        &srv,
        json!({"addstream": {"cam": {"source": "push://", "DVR": 20000}}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["streams"]["cam"]["DVR"], 20000, "{v}");
    let (_, v) = call(&srv, json!({"deletestream": ["cam"]}));
    assert!(v["streams"].get("cam").is_none(), "{v}");
    // A stream key publishes into its stream from the key alone; the key never shows in
    // the stats or the log.
    let (st, v) = call(&srv, json!({"streamkey_add": {"k4Xq9": "locked"}}));
    assert_eq!(
        (st, &v["streamkey_add"]["k4Xq9"]),
        (200, &json!("locked")),
        "{v}"
    );
    let refused = ffmpeg_publish(
        &srv.dir,
        "nokey",
        &fixture("bframes.flv"),
        &srv.rtmp_url("locked"),
        10,
    )
    .wait();
    assert!(
        !refused.status.success(),
        "publishing without the key must fail"
    );
    let publisher = ffmpeg_publish(
        &srv.dir,
        "keyed",
        &fixture("bframes.flv"),
        &srv.rtmp_url("k4Xq9"),
        20,
    );
    let live = poll(Duration::from_secs(10), || {
        let (_, v) = call(&srv, json!({"active_streams": true}));
        v["active_streams"]
            .as_array()
            .filter(|a| a.iter().any(|s| s == "locked"))
            .cloned()
    });
    assert!(
        live.is_some(),
        "keyed publish never made locked live: {}",
        srv.stderr_tail(20)
    );
    let (_, v) = call(
        &srv,
        json!({"clients": {"fields": ["stream", "protocol", "kind"]}}),
    );
    assert!(
        v["clients"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &json!(["locked", "RTMP", "input"])),
        "{v}"
    );
    assert!(!v.to_string().contains("k4Xq9"), "{v}");
    // nuke_stream ends the stream and its publisher.
    let (st, _) = call(&srv, json!({"nuke_stream": "locked"}));
    assert_eq!(st, 200);
    // A publish that ran to its end would exit 0; a nuked one fails.
    let out = publisher.wait();
    assert!(
        !out.timed_out() && !out.status.success(),
        "the publisher was not stopped by nuke_stream: {}",
        out.describe()
    );
    let (_, v) = call(&srv, json!({"streamkey_del": "k4Xq9"}));
    assert_eq!(v["streamkey_del"], json!({}), "{v}");
    // config_backup, then config_restore of an edited copy, then config_reload of a file
    // edited by hand: each applies what changed.
    let (_, v) = call(&srv, json!({"config_backup": true}));
    let mut doc = v["config_backup"].clone();
    assert!(doc["config"]["protocols"].is_array(), "{doc}");
    doc["streams"]["restored"] = json!({"name": "restored", "source": "push://"});
    let (st, v) = call(&srv, json!({"config_restore": doc}));
    assert_eq!(st, 200, "{v}");
    let (_, v) = call(&srv, json!({"streams": true}));
    assert!(v["streams"]["restored"].is_object(), "{v}");
    let mut file: Value =
        serde_json::from_str(&std::fs::read_to_string(&srv.config_path).unwrap()).unwrap();
    assert!(file["streams"]["restored"].is_object(), "restore is saved");
    file["streams"]["byhand"] = json!({"name": "byhand", "source": "push://"});
    std::fs::write(&srv.config_path, file.to_string()).unwrap();
    let (st, _) = call(&srv, json!({"config_reload": true}));
    assert_eq!(st, 200);
    let (_, v) = call(&srv, json!({"streams": true}));
    assert!(v["streams"]["byhand"].is_object(), "{v}");
    // shutdown answers, then the controller stops cleanly with everything it started.
    let (st, v) = call(&srv, json!({"shutdown": true}));
    assert_eq!((st, &v["shutdown"]), (200, &json!("OK")));
    assert!(
        poll(Duration::from_secs(10), || (!srv.is_running())
            .then_some(()))
        .is_some(),
        "the controller did not stop"
    );
}

#[test]
fn sessions_show_within_a_second_and_end_with_an_access_log_line() {
    require_tools(&["ffmpeg", "/usr/bin/python3"]);
    let srv = Server::start();
    let publisher = publish_fixture(&srv, "live");
    srv.wait_live("live");
    let viewer = spawn_client(
        &srv.dir,
        "viewer",
        30,
        "curl",
        &[
            "-sSN".to_string(),
            "-o".into(),
            "/dev/null".into(),
            srv.http_url("/live.flv"),
        ],
    );
    let fields = json!(["host", "stream", "protocol", "kind", "down", "downbps", "conntime"]);
    let row = |v: &Value, proto: &str| -> Option<Vec<Value>> {
        v["clients"]["data"]
            .as_array()?
            .iter()
            .find(|r| r[2] == proto)
            .and_then(|r| r.as_array().cloned())
    };
    let first = poll(Duration::from_secs(5), || {
        let (_, v) = call(&srv, json!({"clients": {"fields": fields}}));
        row(&v, "FLV").filter(|r| r[4].as_u64() > Some(0))
    })
    .unwrap_or_else(|| {
        panic!(
            "no FLV viewer with bytes in clients: {}",
            srv.stderr_tail(20)
        )
    });
    assert_eq!(
        (&first[0], &first[1], &first[3]),
        (&json!("127.0.0.1"), &json!("live"), &json!("viewer"))
    );
    // Current to within a second: bytes down grow between two calls 1.2 s apart.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, v) = call(
        &srv,
        json!({"clients": {"fields": fields, "streams": ["live"]}}),
    );
    let second = row(&v, "FLV").expect("viewer still listed");
    assert!(
        second[4].as_u64() > first[4].as_u64(),
        "bytes down did not grow: {first:?} then {second:?}"
    );
    assert!(second[5].as_u64() > Some(10_000), "downbps {second:?}");
    let input = row(&v, "RTMP").expect("the publisher is listed");
    assert_eq!(input[3], "input");
    // active_streams counts the viewer and the input; totals have per-second samples.
    let (_, v) = call(
        &srv,
        json!({"active_streams": ["clients", "inputs", "downbps"], "totals": {"fields": ["clients", "inputs", "downbps"], "start": -5}}),
    );
    assert_eq!(v["active_streams"]["live"][0], 1, "{v}");
    assert_eq!(v["active_streams"]["live"][1], 1, "{v}");
    let data = v["totals"]["data"].as_array().unwrap();
    assert!(data.len() >= 2, "one row a second: {v}");
    assert!(data.iter().any(|r| r[0] == 1 && r[1] == 1), "{v}");
    // /metrics parses with prometheus_client's own parser.
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {TEST_TOKEN}")])
        .arg(format!("http://127.0.0.1:{}/metrics", srv.api_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = parse_prometheus(&srv, &text);
    let viewers = parsed["sluice_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["protocol"] == "FLV" && s["labels"]["kind"] == "viewer")
        .map(|s| s["value"].clone());
    assert_eq!(viewers, Some(json!(1.0)), "{parsed}\n{text}");
    assert!(
        parsed["sluice_stream_bytes_sent_total"][0]["value"].as_f64() > Some(0.0),
        "{parsed}"
    );
    // stop_sessions ends the viewer, not the publisher; its end is an access log line.
    let (st, _) = call(&srv, json!({"stop_sessions": "live"}));
    assert_eq!(st, 200);
    // A viewer that reached the stream's end would exit 0; a stopped one is cut off.
    let out = viewer.wait();
    assert!(
        !out.timed_out() && !out.status.success(),
        "viewer not stopped: {}",
        out.describe()
    );
    let line = poll(Duration::from_secs(3), || {
        let (_, v) = call(&srv, json!({"log": {"binary": "access"}}));
        v["log"]
            .as_array()?
            .iter()
            .find(|l| {
                l[2].as_str()
                    .is_some_and(|t| t.contains(" live FLV viewer "))
            })
            .cloned()
    })
    .unwrap_or_else(|| panic!("no access log line: {}", srv.stderr_tail(20)));
    assert!(line[2].as_str().unwrap().contains("bytes down"), "{line}");
    let (_, v) = call(&srv, json!({"clients": {"fields": fields}}));
    assert!(row(&v, "FLV").is_none(), "{v}");
    assert!(row(&v, "RTMP").is_some(), "the publisher goes on: {v}");
    // The log call has levels and narrows by stream.
    let (_, v) = call(&srv, json!({"log": {"stream": "live"}}));
    let lines = v["log"].as_array().unwrap();
    assert!(!lines.is_empty(), "{v}");
    assert!(lines
        .iter()
        .all(|l| ["FAIL", "ERROR", "WARN", "INFO"].contains(&l[1].as_str().unwrap())));
    stop_client(publisher);
}

/// The metric families of Prometheus text, as the `prometheus_client` package parses them:
/// `{name: [{labels, value}, …]}`.
fn parse_prometheus(srv: &Server, text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr),
        srv.stderr_tail(5)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
