//! What a browser can and cannot do: Chromium plays the player page over HTTPS (the test
//! certificate trusted by its key), and a page of another origin cannot make the first
//! account or run an API call, whatever way it asks (a CORS "simple" POST, a GET with
//! `?command=`, an image or a form), while curl from the same machine still can.
use serde_json::{json, Value};
use sluice_e2e::*;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

fn last<'a>(ev: &'a [Value], event: &str) -> Option<&'a Value> {
    ev.iter().rev().find(|e| e["event"] == event)
}

#[test]
fn chromium_plays_the_player_page_over_https() {
    require_tools(&["chromium", "ffmpeg", "openssl", "timeout"]);
    let dir = unique_temp_dir("https-browser");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    // Chromium trusts the certificate by the SHA-256 of its public key (base64).
    let spki = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64")
        .current_dir(&dir)
        .output()
        .unwrap();
    let spki = String::from_utf8_lossy(&spki.stdout).trim().to_string();
    assert!(!spki.is_empty());
    let https = free_port();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "connector": "HTTPS", "port": https, "interface": "127.0.0.1",
                "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()
            }));
    });
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "pub",
        &fixture("nobframes.flv"),
        &srv.rtmp_url("live"),
        3,
        60,
    );
    srv.wait_live("live");
    let c = chromium_with(
        &srv.dir,
        "chromium-https",
        45,
        &format!("https://127.0.0.1:{https}/live.html?player=hlsjs"),
        &[format!("--ignore-certificate-errors-spki-list={spki}")],
    );
    let ev = wait_player(&c, Duration::from_secs(30), |ev| {
        last(ev, "error").is_some()
            || last(ev, "progress").is_some_and(|e| e["playing_ms"].as_u64() >= Some(6_000))
    });
    let out = stop_chromium(c);
    drop(publisher);
    let p = last(&ev, "progress").cloned().unwrap_or_default();
    assert!(
        last(&ev, "error").is_none() && p["playing_ms"].as_u64() >= Some(6_000),
        "6 s played over HTTPS: {ev:?}\n{}",
        out.describe()
    );
    assert!(p["frames"].as_u64() >= Some(120), "frames decoded: {p}");
    // Access lines are written as connections end (Chromium has just stopped).
    let served = || {
        srv.stderr_text()
            .lines()
            .any(|l| l.starts_with("[access") && l.contains("HLS viewer"))
    };
    let start = std::time::Instant::now();
    while !served() && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        served(),
        "the HLS requests went through the HTTPS listener:\n{}",
        srv.stderr_tail(20)
    );
}

#[test]
fn a_page_of_another_origin_cannot_make_the_first_account_or_call_the_api() {
    require_tools(&["chromium", "python3", "curl", "timeout"]);
    let srv = Server::start_with_config(|cfg| {
        if let Some(c) = cfg["config"].as_object_mut() {
            c.remove("api_tokens");
        }
    });
    let api = format!("http://127.0.0.1:{}/api", srv.api_port);
    let first = r#"{"authorize":{"new_username":"evil","new_password":"pw"}}"#;
    let encoded: String = first
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    // The attacking page, served from another origin (another port).
    let site = unique_temp_dir("evil-site");
    std::fs::write(
        site.join("index.html"),
        format!(
            r#"<!doctype html><html><body>
<form id="f" method="POST" action="{api}" enctype="text/plain" target="sink">
<input name='{{"authorize":{{"new_username":"evil","new_password":"pw","x":"' value='"}}}}'></form>
<iframe name="sink"></iframe>
<img src="{api}?command={encoded}">
<script>
const body = '{first}';
const log = (what, r) => console.log("evil-page " + what + " " + r);
fetch("{api}", {{method: "POST", mode: "no-cors", body}}).then(r => log("post", "sent"), e => log("post", e));
fetch("{api}", {{method: "POST", body, headers: {{"Content-Type": "application/json"}}}}).then(r => r.text().then(t => log("cors-post", t)), e => log("cors-post", "blocked " + e));
fetch("{api}?command={encoded}", {{mode: "no-cors"}}).then(r => log("get", "sent"), e => log("get", e));
document.getElementById("f").submit();
setTimeout(() => log("done", "yes"), 3000);
</script></body></html>"#
        ),
    )
    .unwrap();
    let site_port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &site_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !port_accepts(site_port) && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    let c = chromium(
        &srv.dir,
        "chromium-evil",
        30,
        &format!("http://127.0.0.1:{site_port}/"),
    );
    let start = std::time::Instant::now();
    while !c.stderr_now().contains("evil-page done") && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(200));
    }
    let out = stop_chromium(c);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.stderr.contains("evil-page done"),
        "the page ran:\n{}",
        out.describe()
    );
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&srv.config_path).unwrap()).unwrap();
    assert!(
        cfg.get("account").is_none_or(|a| a.get("evil").is_none()),
        "no account was made by the page: {:?}",
        cfg.get("account")
    );
    let log = srv.stderr_text();
    assert!(
        log.contains("127.0.0.1") && log.contains("Origin"),
        "the refused requests are logged with their Origin:\n{}",
        srv.stderr_tail(30)
    );
    // curl on the same machine (no Origin, as scripts send) still makes the first account.
    let ok = Command::new("curl")
        .args(["-s", "--data-binary", first, &api])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&srv.config_path).unwrap()).unwrap();
    assert!(
        cfg["account"]["evil"].is_object(),
        "curl made the account: {text}"
    );
}
