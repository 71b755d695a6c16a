//! Connection limits against misbehaving clients: the per-address cap answers 503 and lets
//! other addresses in, a request trickled in byte by byte is cut at its whole-request
//! deadline (HTTP, RTMP, RTSP), and a viewer that stops reading is dropped and its process
//! exits. Other clients are served throughout. Attackers connect from 127.0.0.2, standing in
//! for another machine.
use serde_json::json;
use sluice_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Waits up to `limit` for the server's log to contain `what`.
fn wait_log(srv: &Server, what: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if srv.stderr_text().contains(what) {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The HTTP listener's connection processes (comm `HTTP`).
fn http_children(srv: &Server) -> usize {
    srv.procs().iter().filter(|p| p.comm == "HTTP").count()
}

/// Waits until the start-up's port checks are gone: their processes may not even be
/// forked yet when the server starts answering.
fn settle(srv: &Server) {
    thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    while http_children(srv) > 0 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_per_address_cap_answers_503_and_other_addresses_carry_on() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"][1]["max_per_address"] = json!(3);
    });
    settle(&srv);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| connect_from("127.0.0.2", srv.http_port, None).unwrap())
        .collect();
    // The listener counts a connection once it has forked for it.
    let start = Instant::now();
    while http_children(&srv) < 3 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_children(&srv), 3, "three connections held");

    let mut fourth = connect_from("127.0.0.2", srv.http_port, None).unwrap();
    fourth
        .write_all(b"GET /hls/demo/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = fourth.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the cap: 503, got {answer:?}"
    );
    assert!(answer.contains("Retry-After: 5"), "{answer}");
    assert_eq!(
        http_children(&srv),
        3,
        "no process for the refused connection"
    );
    assert!(wait_log(&srv, "127.0.0.2", Duration::from_secs(3)));
    assert!(
        srv.stderr_text()
            .contains("refused: the limit of 3 connections per address reached"),
        "the refusal is logged with its limit:\n{}",
        srv.stderr_tail(20)
    );

    // Another address is served meanwhile.
    let r = srv.get("/hls/nosuch/index.m3u8").unwrap();
    assert_eq!(
        r.status, 404,
        "127.0.0.1 is served while 127.0.0.2 is capped"
    );

    // Once the held connections close, the address is served again.
    drop(held);
    let start = Instant::now();
    let status = loop {
        let mut s = connect_from("127.0.0.2", srv.http_port, None).unwrap();
        s.write_all(b"GET /hls/nosuch/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 404") || start.elapsed() > Duration::from_secs(5) {
            break text;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.starts_with("HTTP/1.1 404"),
        "served again: {status:?}"
    );
}

/// Sends `head` then one byte of `trickle` every 300 ms, and returns how long the server
/// took to close the connection (None: still open after 8 s).
fn trickle(port: u16, head: &[u8], trickle: &[u8]) -> Option<Duration> {
    let mut s = connect_from("127.0.0.2", port, None).unwrap();
    s.write_all(head).unwrap();
    let start = Instant::now();
    for b in trickle.iter().cycle() {
        if start.elapsed() > Duration::from_secs(8) {
            return None;
        }
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut probe = [0u8; 1024];
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match s.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    Some(start.elapsed())
}

#[test]
fn a_request_trickled_in_is_cut_at_its_deadline_on_every_protocol() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["limits"] = json!({"request_timeout": 2});
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({"connector": "RTSP", "port": free_port(), "interface": "127.0.0.1"}));
    });
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&srv.config_path).unwrap()).unwrap();
    let rtsp = cfg["config"]["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["connector"] == "RTSP")
        .and_then(|p| p["port"].as_u64())
        .unwrap() as u16;
    let start = Instant::now();
    while !port_accepts(rtsp) && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
    }

    // HTTP: a header that never ends (one byte every 300 ms keeps every single read in time).
    let http = trickle(
        srv.http_port,
        b"GET /hls/demo/index.m3u8 HTTP/1.1\r\nX-Slow: ",
        b"a",
    );
    // RTMP: the handshake's C0, then C1 a byte at a time.
    let rtmp = trickle(srv.rtmp_port, &[3], &[0]);
    // RTSP: a request line a byte at a time.
    let rtsp_t = trickle(
        rtsp,
        b"OPTIONS rtsp://127.0.0.1/demo RTSP/1.0\r\nX-Slow: ",
        b"a",
    );
    for (name, t) in [("HTTP", http), ("RTMP", rtmp), ("RTSP", rtsp_t)] {
        let t =
            t.unwrap_or_else(|| panic!("{name}: still open after 8 s\n{}", srv.stderr_tail(30)));
        assert!(
            t >= Duration::from_millis(1500) && t <= Duration::from_millis(4500),
            "{name}: closed after {t:?}, the deadline is 2 s"
        );
    }
    let log = srv.stderr_text();
    for proto in ["HTTP", "RTMP", "RTSP"] {
        assert!(
            log.lines().any(|l| l.starts_with(&format!("[{proto} "))
                && l.contains("127.0.0.2")
                && l.contains("not done within 2 s; closing")),
            "{proto}: the deadline is logged with the peer:\n{}",
            srv.stderr_tail(30)
        );
    }
    // An honest client is unaffected.
    let r = srv.get("/hls/nosuch/index.m3u8").unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn a_viewer_that_stops_reading_is_dropped_and_its_process_exits() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("limits-stall");
    // About 23 MB: far more than the kernel's socket buffers hold.
    let long = dir.join("long.flv");
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-stream_loop",
            "29",
            "-i",
        ])
        .arg(demo_flv())
        .args(["-c", "copy", "-f", "flv"])
        .arg(&long)
        .status()
        .unwrap();
    assert!(st.success());
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["limits"] = json!({"stall_timeout": 2});
        cfg["streams"]["vod"] =
            json!({"name": "vod", "source": long.to_str().unwrap(), "loop": false});
    });
    let before = http_children(&srv);
    let mut s = connect_from("127.0.0.2", srv.http_port, Some(4096)).unwrap();
    // The live demo at real time (well under 1 Mb/s): the kernel's send buffer alone would
    // take its writes for many seconds.
    s.write_all(b"GET /demo.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    // Never read. The process must give up on it: the client acknowledged nothing for 2 s
    // (writes the kernel still takes are not progress; only acknowledgements are).
    assert!(
        wait_log(
            &srv,
            "stalled: took nothing for 2 s",
            Duration::from_secs(30)
        ),
        "a stalled viewer is dropped with a log line:\n{}",
        srv.stderr_tail(30)
    );
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "dropped {took:?} after its request, with a 2 s stall limit"
    );
    let start = Instant::now();
    while http_children(&srv) > before && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_children(&srv), before, "its process exited");
    let line = srv
        .stderr_text()
        .lines()
        .find(|l| l.contains("stalled"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("127.0.0.2"),
        "the line names the peer: {line}"
    );
    // Another viewer plays the same stream meanwhile.
    let r = srv.get("/vod.flv?end=1000").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"FLV"), "an FLV file");
    drop(s);
}

#[test]
fn listeners_without_an_interface_serve_ipv4_and_ipv6_and_loopback_stays_loopback() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start_with_config(|cfg| {
        for p in cfg["config"]["protocols"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("interface");
        }
    });
    let log = srv.stderr_text();
    assert!(
        log.contains(&format!("listening on :::{}", srv.http_port))
            || log.contains(&format!("listening on 0.0.0.0:{}", srv.http_port)),
        "every interface by default:\n{}",
        srv.stderr_tail(10)
    );
    let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists()
        && std::net::TcpStream::connect(("::1", srv.http_port)).is_ok();
    // An IPv4 publisher on loopback may publish into `push://` (its address is 127.0.0.1,
    // not ::ffff:127.0.0.1), and viewers over IPv4 and IPv6 both play.
    let v4 = ffmpeg_framecrc(&srv.dir, "v4", &srv.rtmp_url("live"), &[], 30);
    let v6 = ipv6.then(|| {
        ffmpeg_framecrc(
            &srv.dir,
            "v6",
            &format!("rtmp://[::1]:{}/live/live", srv.rtmp_port),
            &[],
            30,
        )
    });
    srv.wait_rtmp_players(if ipv6 { 2 } else { 1 }, Duration::from_secs(3));
    let publisher = ffmpeg_publish(
        &srv.dir,
        "pub",
        &fixture("nobframes.flv"),
        &srv.rtmp_url("live"),
        30,
    );
    let pub_out = publisher.wait();
    assert!(pub_out.status.success(), "{}", pub_out.describe());
    for c in std::iter::once(v4).chain(v6) {
        let out = c.wait();
        let cap = Capture::from_output(&out);
        assert_eq!(
            cap.video().len(),
            250,
            "{}\n{}",
            cap.summary(),
            out.describe()
        );
    }
    assert!(
        srv.stderr_text().contains("127.0.0.1 publishes live"),
        "the publisher is seen as 127.0.0.1:\n{}",
        srv.stderr_tail(20)
    );
    if ipv6 {
        assert!(
            srv.stderr_text().contains("::1 plays live"),
            "{}",
            srv.stderr_tail(20)
        );
    }
}

#[test]
fn rtmp_and_rtsp_clients_over_the_cap_are_told_so_in_their_protocol() {
    require_tools(&["ffprobe", "timeout"]);
    let rtsp = free_port();
    let srv = Server::start_with_config(|cfg| {
        let ps = cfg["config"]["protocols"].as_array_mut().unwrap();
        ps[0]["max_connections"] = json!(1);
        ps.push(json!({"connector": "RTSP", "port": rtsp, "interface": "127.0.0.1", "max_connections": 1}));
    });
    let start = Instant::now();
    while !port_accepts(rtsp) && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(100));
    }
    // Each listener's one connection is taken (a port check's connection is gone by now).
    thread::sleep(Duration::from_millis(300));
    let _rtmp_held = connect_from("127.0.0.2", srv.rtmp_port, None).unwrap();
    let _rtsp_held = connect_from("127.0.0.2", rtsp, None).unwrap();
    thread::sleep(Duration::from_millis(300));
    let probe = |url: &str| {
        let out = Command::new("timeout")
            .args(["15", "ffprobe", "-v", "info", url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} refused");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let rtmp_err = probe(&srv.rtmp_url("demo"));
    assert!(
        rtmp_err.contains("server busy: this listener's limit of 1 connections reached"),
        "RTMP: NetConnection.Connect.Rejected with the reason:\n{rtmp_err}"
    );
    let rtsp_err = probe(&format!("rtsp://127.0.0.1:{rtsp}/demo"));
    assert!(
        rtsp_err.contains("503"),
        "RTSP: 503 Service Unavailable:\n{rtsp_err}"
    );
    let log = srv.stderr_text();
    for proto in ["RTMP", "RTSP"] {
        assert!(
            log.lines().any(|l| l.starts_with(&format!("[{proto} "))
                && l.contains("refused: this listener's limit of 1 connections reached")),
            "{proto}: the refusal is logged:\n{}",
            srv.stderr_tail(20)
        );
    }
}

#[test]
fn connections_still_sending_their_request_are_capped_whatever_their_address() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"][1]["max_requests"] = json!(3);
    });
    settle(&srv);
    // Three slow clients from three addresses: each under the per-address cap.
    let mut held: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|a| {
            let mut s = connect_from(a, srv.http_port, None).unwrap();
            s.write_all(b"GET /hls/nosuch/index.m3u8 HTTP/1.1\r\n")
                .unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    while http_children(&srv) < 3 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
    }
    let ask = |from: &str| {
        let mut s = connect_from(from, srv.http_port, None).unwrap();
        s.write_all(b"GET /hls/nosuch/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let fourth = ask("127.0.0.5");
    assert!(
        fourth.starts_with("HTTP/1.1 503"),
        "a fourth slow client's slot: {fourth:?}"
    );
    assert!(wait_log(
        &srv,
        "refused: this listener's limit of 3 connections still sending their request reached",
        Duration::from_secs(3)
    ));
    // One of them finishes its request: it no longer counts, and a new client is served.
    held[0].write_all(b"Host: x\r\n\r\n").unwrap();
    held[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 12];
    held[0].read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 404");
    thread::sleep(Duration::from_millis(300));
    let again = ask("127.0.0.5");
    assert!(
        again.starts_with("HTTP/1.1 404"),
        "served once a slot is free: {again:?}"
    );
}

#[test]
fn the_servers_total_counts_every_listener() {
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["limits"] = json!({"connections": 2});
    });
    settle(&srv);
    thread::sleep(Duration::from_millis(300));
    // One connection on each listener: the server's two.
    let _rtmp = connect_from("127.0.0.2", srv.rtmp_port, None).unwrap();
    let _http = connect_from("127.0.0.3", srv.http_port, None).unwrap();
    // Both listeners publish their counts at least once a second.
    thread::sleep(Duration::from_millis(1500));
    let mut third = connect_from("127.0.0.4", srv.http_port, None).unwrap();
    third
        .write_all(b"GET /hls/nosuch/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the total: {answer:?}"
    );
    assert!(
        wait_log(
            &srv,
            "refused: the server's limit of 2 connections reached",
            Duration::from_secs(3)
        ),
        "{}",
        srv.stderr_tail(20)
    );
}
