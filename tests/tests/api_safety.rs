//! The API against web pages and DNS rebinding, as a browser would send the requests: a
//! foreign `Host` or `Origin` is refused (and leaves a log line), a `GET` runs read-only
//! calls only, the first account cannot be made by a page but can by curl and by
//! `sluice --account`; stream names with a newline never reach a trigger; wildcard buffers
//! are capped.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A reply: status, headers, body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::String(self.body.clone()))
    }
}

/// Sends one HTTP/1.1 request to the API with exactly `headers` (no Host added) and
/// `body`, and reads the reply to the end (`Connection: close`).
fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("reading the reply");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn md5_hex(s: &str) -> String {
    require_tools(&["md5sum"]);
    let out = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(32)
        .collect()
}

/// A server with no account and no token: the state of a fresh install.
fn fresh_server() -> Server {
    Server::start_with_config(|cfg| {
        if let Some(c) = cfg["config"].as_object_mut() {
            c.remove("api_tokens");
        }
    })
}

fn accounts(srv: &Server) -> Value {
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    let cfg: Value = serde_json::from_str(&text).unwrap();
    cfg.get("account").cloned().unwrap_or(Value::Null)
}

const FIRST: &str = r#"{"authorize":{"new_username":"admin","new_password":"pw"}}"#;

#[test]
fn a_foreign_host_is_refused_and_logged() {
    let srv = Server::start();
    let auth = format!("Bearer {TEST_TOKEN}");
    let own = format!("127.0.0.1:{}", srv.api_port);
    let add = r#"{"addstream":{"rebound":{"source":"push://"}}}"#;
    for host in ["evil.example", &format!("evil.example:{}", srv.api_port)] {
        let r = raw(
            srv.api_port,
            "POST",
            "/api",
            &[("Host", host), ("Authorization", &auth)],
            add,
        );
        assert_eq!(r.status, 403, "Host {host}: {}", r.body);
        assert!(r.json().get("addstream").is_none(), "{}", r.body);
    }
    // Even a read, even /metrics.
    let r = raw(
        srv.api_port,
        "GET",
        "/metrics",
        &[("Host", "evil.example"), ("Authorization", &auth)],
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let streams = srv.api(&json!({"streams": true})).expect("API");
    assert!(streams["streams"].get("rebound").is_none(), "{streams}");
    // The log names the peer and the Host.
    let logged = poll(Duration::from_secs(3), || {
        let t = srv.stderr_text();
        t.lines()
            .find(|l| l.contains("refused a request from 127.0.0.1") && l.contains("evil.example"))
            .map(str::to_string)
    });
    assert!(logged.is_some(), "{}", srv.stderr_tail(20));
    // The API's own names pass: 127.0.0.1, localhost, [::1], with or without the port.
    for host in [own.as_str(), "localhost", "127.0.0.1", "[::1]"] {
        let r = raw(
            srv.api_port,
            "POST",
            "/api",
            &[("Host", host), ("Authorization", &auth)],
            r#"{"capabilities":true}"#,
        );
        assert_eq!(r.status, 200, "Host {host}: {}", r.body);
    }
}

#[test]
fn config_hostnames_are_accepted_as_the_api_s_names() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["controller"]["hostnames"] = json!(["sluice.lan"]);
    });
    let auth = format!("Bearer {TEST_TOKEN}");
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[("Host", "sluice.lan"), ("Authorization", &auth)],
        r#"{"capabilities":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[("Host", "other.lan"), ("Authorization", &auth)],
        r#"{"capabilities":true}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn a_web_page_cannot_make_the_first_account_but_curl_can() {
    let srv = fresh_server();
    let port = srv.api_port;
    let own = format!("127.0.0.1:{port}");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    // The audit's request: a page on evil.example, through DNS rebinding or not.
    let r = raw(
        port,
        "POST",
        "/api",
        &[
            ("Host", "evil.example"),
            ("Origin", "http://evil.example"),
            form,
        ],
        FIRST,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // A page on evil.example posting to 127.0.0.1 (a form or fetch): its Origin.
    let r = raw(
        port,
        "POST",
        "/api",
        &[("Host", &own), ("Origin", "http://evil.example"), form],
        FIRST,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_ne!(r.json()["authorize"]["status"], "ACC_MADE", "{}", r.body);
    // A page on another port of this machine is another origin too; so is `null`.
    for origin in ["http://127.0.0.1:1", "null"] {
        let r = raw(
            port,
            "POST",
            "/api",
            &[("Host", &own), ("Origin", origin), form],
            FIRST,
        );
        assert_eq!(r.status, 403, "Origin {origin}: {}", r.body);
    }
    // A browser that sends Fetch Metadata but no Origin.
    let r = raw(
        port,
        "POST",
        "/api",
        &[("Host", &own), ("Sec-Fetch-Site", "cross-site"), form],
        FIRST,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // `GET /api?command=` (an <img> can send it): refused, it changes the server.
    let path = format!(
        "/api?command={}",
        FIRST
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let r = raw(port, "GET", &path, &[("Host", &own)], "");
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(
        r.head.to_ascii_lowercase().contains("allow: post"),
        "{}",
        r.head
    );
    assert_eq!(
        accounts(&srv),
        Value::Null,
        "no account may have been written"
    );
    // Nothing else is possible yet, GET or POST.
    let r = raw(
        port,
        "GET",
        "/api?command=%7B%22streams%22%3Atrue%7D",
        &[("Host", &own)],
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // curl's POST (no Origin, curl's default form content type, a JSON body) makes it.
    require_tools(&["curl"]);
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "--data-binary", FIRST])
        .arg(format!("http://127.0.0.1:{port}/api"))
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["authorize"]["status"], "ACC_MADE", "{v}");
    assert_eq!(accounts(&srv)["admin"]["password"], md5_hex("pw"));
}

#[test]
fn the_api_s_own_origin_and_mistserver_s_form_body_work() {
    let srv = fresh_server();
    let own = format!("127.0.0.1:{}", srv.api_port);
    let origin = format!("http://127.0.0.1:{}", srv.api_port);
    // A page of the API's own origin may make the account; the body is a `command=` form.
    let body = format!(
        "command={}",
        FIRST
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[
            ("Host", &own),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorize"]["status"], "ACC_MADE", "{}", r.body);
    assert!(accounts(&srv)["admin"].is_object());
}

#[test]
fn get_runs_only_read_only_calls() {
    let srv = Server::start();
    let own = format!("127.0.0.1:{}", srv.api_port);
    let auth = format!("Bearer {TEST_TOKEN}");
    let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let get = |calls: &str| {
        raw(
            srv.api_port,
            "GET",
            &format!("/api?command={}", enc(calls)),
            &[("Host", &own), ("Authorization", &auth)],
            "",
        )
    };
    let r = get(r#"{"streams":true,"capabilities":true,"log":{"last":1},"active_streams":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["streams"]["live"]["source"],
        "push://",
        "{}",
        r.body
    );
    for write in [
        r#"{"addstream":{"viaget":{"source":"push://"}}}"#,
        r#"{"streams":{"viaget":{"source":"push://"}}}"#,
        r#"{"config":{"log_level":"WARN"}}"#,
        r#"{"api_token_add":"viaget"}"#,
        r#"{"config_backup":true}"#,
        r#"{"streams":true,"deletestream":"live"}"#,
    ] {
        let r = get(write);
        assert_eq!(r.status, 405, "{write}: {}", r.body);
    }
    let v = srv
        .api(&json!({"streams": true, "api_tokens": true}))
        .expect("API");
    assert!(v["streams"].get("viaget").is_none(), "{v}");
    assert!(v["streams"].get("live").is_some(), "{v}");
    assert_eq!(v["api_tokens"], json!(["tests"]), "{v}");
    // The same write as a POST works.
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[("Host", &own), ("Authorization", &auth)],
        r#"{"addstream":{"viapost":{"source":"push://"}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Other methods: 405.
    let r = raw(srv.api_port, "PUT", "/api", &[("Host", &own)], "{}");
    assert_eq!(r.status, 405, "{}", r.body);
}

#[test]
fn an_account_from_the_command_line_logs_in() {
    let srv = Server::start_with_args(&["--account", "ops:pa:ss w0rd"], &[], |cfg| {
        if let Some(c) = cfg["config"].as_object_mut() {
            c.remove("api_tokens");
        }
    });
    let stored = accounts(&srv);
    assert_eq!(stored["ops"]["password"], md5_hex("pa:ss w0rd"), "{stored}");
    let own = format!("127.0.0.1:{}", srv.api_port);
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[("Host", &own)],
        r#"{"authorize":{"username":"ops","password":""}}"#,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let chall = r.json()["authorize"]["challenge"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!chall.is_empty(), "{}", r.body);
    let resp = md5_hex(&format!("{}{chall}", md5_hex("pa:ss w0rd")));
    let body = json!({"authorize": {"username": "ops", "password": resp}, "streams": true});
    let r = raw(
        srv.api_port,
        "POST",
        "/api",
        &[("Host", &own)],
        &body.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorize"]["status"], "OK", "{}", r.body);
    // The log names the user, never the password; the config has its MD5 only.
    let log = srv.stderr_text();
    assert!(log.contains("\"ops\""), "{}", srv.stderr_tail(20));
    assert!(!log.contains("ss w0rd"), "the password is in the log");
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    assert!(!text.contains("ss w0rd"), "the password is in the config");
}

#[test]
fn a_stream_name_with_a_newline_never_reaches_a_trigger() {
    let dir = unique_temp_dir("api-safety-hook");
    // PLAY_REWRITE answers the stream it was given (no rewrite); USER_NEW answers true.
    let hook = Hook::start(&dir, json!({"PLAY_REWRITE": "rewrite:none:none"}));
    let h = json!({"handler": hook.url(), "sync": true});
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["triggers"] = triggers(&[("PLAY_REWRITE", h.clone()), ("USER_NEW", h)]);
    });
    // `demo%0Afalse`: the name would add a line `false` to the payload.
    let r = srv.get("/hls/demo%0Afalse/index.m3u8").expect("HTTP");
    assert!(
        r.status == 404 || r.status == 403,
        "{} {}",
        r.status,
        r.text()
    );
    // A good name's PLAY_REWRITE has its four lines (stream, address, connector, URL).
    let _ = srv.get(&Server::hls_path("demo"));
    let lines = hook
        .wait_for("PLAY_REWRITE", "demo")
        .expect("PLAY_REWRITE for demo");
    assert_eq!(lines.len(), 4, "{lines:?}");
    std::thread::sleep(Duration::from_millis(500));
    for (t, l) in hook.calls() {
        assert!(
            !l.iter().any(|x| x == "false"),
            "{t} got a forged payload: {l:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wildcard_buffers_are_capped() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["max_wildcard_buffers"] = json!(2);
    });
    // Each playlist request starts its stream's buffer (the reply may wait for the first
    // segment, or time out: only a refusal for the limit matters here).
    let refused = |name: &str| {
        srv.get(&Server::hls_path(name))
            .ok()
            .filter(|r| r.status == 503 && r.text().contains("limit of"))
            .map(|r| r.text())
    };
    for name in ["demo+a", "demo+b"] {
        assert_eq!(refused(name), None, "{name}");
    }
    let r = srv.get(&Server::hls_path("demo+c")).expect("HTTP");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("limit of 2"), "{}", r.text());
    // Streams already running, and the base's own stream, still open.
    assert_eq!(refused("demo+a"), None);
    assert_eq!(refused("demo"), None);
    assert!(
        srv.stderr_text()
            .contains("not starting a buffer for demo+c"),
        "{}",
        srv.stderr_tail(20)
    );
}
