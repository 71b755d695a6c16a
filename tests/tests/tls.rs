//! TLS on the listeners with real clients and a test CA made here with openssl: ffprobe
//! reads HLS and progressive FLV over `https://` verifying the chain and RTSP over
//! `rtsps://`, the API answers a script over HTTPS, ffmpeg publishes over `rtmps://` and
//! plays it back, and a renewed certificate is picked up on SIGHUP while a
//! viewer that started before goes on.
use serde_json::json;
use sluice_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost signed by it
/// (`NAME.pem`, `NAME.key`), serial `serial`.
fn make_certs(dir: &Path, name: &str, serial: &str) -> (PathBuf, PathBuf) {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Sluice test CA",
            ],
        );
    }
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// The serial number of the certificate a TLS server on `port` presents (hex, upper case).
fn served_serial(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect 127.0.0.1:{port} 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while !port_accepts(port) && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(port_accepts(port), "port {port} accepts");
}

#[test]
fn hls_and_progressive_over_https_and_rtmps_publish_and_play() {
    require_tools(&["ffmpeg", "ffprobe", "openssl", "timeout"]);
    let certs = unique_temp_dir("tls-certs");
    let (cert, key) = make_certs(&certs, "server", "0x1001");
    let (https, rtmps, rtsps, api_tls) = (free_port(), free_port(), free_port(), free_port());
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["controller"]["tls_port"] = json!(api_tls);
        cfg["config"]["tls"] =
            json!({"cert": cert.to_str().unwrap(), "key": key.to_str().unwrap()});
        let ps = cfg["config"]["protocols"].as_array_mut().unwrap();
        ps.push(json!({"connector": "HTTPS", "port": https, "interface": "127.0.0.1"}));
        ps.push(json!({"connector": "RTMPS", "port": rtmps, "interface": "127.0.0.1"}));
        ps.push(json!({"connector": "RTSPS", "port": rtsps, "interface": "127.0.0.1"}));
    });
    wait_port(https);
    wait_port(rtmps);
    wait_port(rtsps);
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Publish over RTMPS; the chain is checked by the player side below.
    let url = format!("rtmps://127.0.0.1:{rtmps}/live/live");
    let player = ffmpeg_framecrc(&srv.dir, "rtmps-player", &url, &[], 40);
    let publisher = ffmpeg_publish(
        &srv.dir,
        "rtmps-publisher",
        &fixture("nobframes.flv"),
        &url,
        40,
    );
    srv.wait_live("live");

    // HLS over HTTPS, the chain verified against the test CA.
    let probe = |label: &str, url: &str| {
        let out = Command::new("timeout")
            .args([
                "30",
                "ffprobe",
                "-v",
                "error",
                "-tls_verify",
                "1",
                "-ca_file",
                ca,
            ])
            .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0", url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && text.contains("h264") && text.contains("aac"),
            "{label}: ffprobe {url}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    probe(
        "HLS",
        &format!("https://127.0.0.1:{https}/hls/live/index.m3u8"),
    );
    probe("FLV", &format!("https://127.0.0.1:{https}/live.flv"));
    // RTSP over TLS (RTP interleaved on the TLS connection).
    let out = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error", "-rtsp_transport", "tcp"])
        .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(format!("rtsps://127.0.0.1:{rtsps}/live"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("h264") && text.contains("aac"),
        "RTSPS: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The API over HTTPS, with a script's bearer token.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            ca,
            "-H",
            &format!("Authorization: Bearer {TEST_TOKEN}"),
        ])
        .args(["--data-binary", r#"{"active_streams":true}"#])
        .arg(format!("https://127.0.0.1:{api_tls}/api"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "API over HTTPS: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        v["active_streams"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == "live")),
        "API over HTTPS: {text}"
    );
    // Without the CA the same request fails: the chain is really checked.
    let bad = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error", "-tls_verify", "1"])
        .arg(format!("https://127.0.0.1:{https}/live.flv"))
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an unknown CA is refused");

    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "RTMPS publish:\n{}",
        pub_out.describe()
    );
    let out = player.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.video().len(), 250, "every frame over RTMPS: {diag}");
    assert!(cap.audio().len() >= 431, "{diag}");
    let (_, monotonic) = cap.video_dts_check();
    assert!(monotonic, "{diag}");
    assert!(
        srv.procs().iter().any(|p| p.comm == "sluice-RTMPS"),
        "an RTMPS listener runs"
    );
}

#[test]
fn a_renewed_certificate_is_used_after_sighup_while_a_viewer_goes_on() {
    require_tools(&["openssl", "curl"]);
    let certs = unique_temp_dir("tls-renew");
    let (cert, key) = make_certs(&certs, "old", "0x2001");
    let live_cert = certs.join("live.pem");
    let live_key = certs.join("live.key");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let https = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "connector": "HTTPS", "port": https, "interface": "127.0.0.1",
                "cert": live_cert.to_str().unwrap(), "key": live_key.to_str().unwrap()
            }));
    });
    wait_port(https);
    assert_eq!(served_serial(https), "serial=2001");

    // A viewer of the live demo over HTTPS for 8 s.
    let ca = certs.join("ca.pem");
    let viewer = spawn_client(
        &srv.dir,
        "curl",
        20,
        "curl",
        &[
            "-sS".into(),
            "--cacert".into(),
            ca.to_str().unwrap().into(),
            "--max-time".into(),
            "8".into(),
            format!("https://127.0.0.1:{https}/demo.flv"),
        ],
    );
    thread::sleep(Duration::from_secs(3));
    let before: usize = viewer.snapshot().iter().map(|c| c.1.len()).sum();
    assert!(
        before > 10_000,
        "the viewer gets the stream: {before} bytes"
    );

    // Renew: new files in place (keeping their modification time, so that only the signal
    // can be what makes the listener look), then SIGHUP to Sluice, as certbot's deploy hook
    // does; it reaches the HTTPS listener through the angel and the controller.
    let (new_cert, new_key) = make_certs(&certs, "new", "0x2002");
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (t_cert, t_key) = (stamp(&live_cert), stamp(&live_key));
    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    for (p, t) in [(&live_cert, t_cert), (&live_key, t_key)] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    unsafe {
        libc::kill(srv.pid as i32, libc::SIGHUP);
    }
    let start = Instant::now();
    let mut serial = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        serial = served_serial(https);
        if serial == "serial=2002" {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        serial, "serial=2002",
        "new connections get the new certificate"
    );
    assert!(srv.stderr_text().contains("TLS certificate loaded again"));

    // The viewer that started with the old certificate kept receiving.
    let out = viewer.wait();
    let after: usize = out.chunks.iter().map(|c| c.1.len()).sum();
    assert!(
        after > before + 50_000,
        "the viewer went on after the renewal: {before} then {after} bytes\n{}",
        out.describe()
    );
    // curl ends at --max-time (exit 28), not with a TLS or transfer error.
    assert_eq!(out.status.code(), Some(28), "{}", out.describe());
}
