//! HTTP connection handling with raw bytes: keep-alive, a request body that must be skipped,
//! and garbage that gets a 400 without hurting the listener.
use sluice_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn read_responses(s: &mut TcpStream, want: usize) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&all).to_string();
        if text.matches("HTTP/1.1 ").count() >= want {
            return text.split("HTTP/1.1 ").skip(1).map(String::from).collect();
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text.split("HTTP/1.1 ").skip(1).map(String::from).collect(),
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn keep_alive_skips_request_bodies_and_bad_requests_get_400() {
    let srv = Server::start();
    let mut s = TcpStream::connect(("127.0.0.1", srv.http_port)).unwrap();
    // A request with a body, then a second request on the same connection.
    s.write_all(
        b"POST /hls/nosuch/index.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /hls/nosuch/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let r = read_responses(&mut s, 2);
    assert_eq!(r.len(), 2, "two responses on one connection: {r:?}");
    assert!(r[0].starts_with("405"), "POST is not served: {}", r[0]);
    assert!(
        r[1].starts_with("404"),
        "the second request was parsed: {}",
        r[1]
    );
    assert!(r[1].contains("Access-Control-Allow-Origin: *"), "{}", r[1]);

    // Garbage: 400 and the connection closes; the listener serves the next client.
    let mut g = TcpStream::connect(("127.0.0.1", srv.http_port)).unwrap();
    g.write_all(b"\x01\x02 NOT HTTP\r\n\r\n").unwrap();
    let r = read_responses(&mut g, 1);
    assert!(r.first().is_some_and(|x| x.starts_with("400")), "{r:?}");
    let ok = srv
        .get("/hls/nosuch/index.m3u8")
        .expect("listener still serves");
    assert_eq!(ok.status, 404);
}
