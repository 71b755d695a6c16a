//! RTSP play (`rtsp://HOST:PORT/S`): ffmpeg and GStreamer's rtspsrc get every frame of a
//! stored stream over TCP interleaved and over UDP, with the source's presentation times; an
//! RTMP publish plays live over RTSP; HEVC and several tracks go out as RTP too; malformed
//! requests get the RTSP status that fits and disturb nobody.
use serde_json::json;
use sluice_e2e::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn server() -> (Server, u16) {
    let port = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"]
            .as_array_mut()
            .unwrap()
            .push(json!({"connector": "RTSP", "port": port, "interface": "127.0.0.1"}));
        let file = |f: &str| fixture(f).to_str().unwrap().to_string();
        cfg["streams"]["vod"] =
            json!({"name": "vod", "source": file("bframes.flv"), "loop": false});
        cfg["streams"]["hevc"] = json!({"name": "hevc", "source": file("hevc.ts"), "loop": false});
        cfg["streams"]["multi"] =
            json!({"name": "multi", "source": file("multi.ts"), "loop": false});
    });
    assert!(
        poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some(),
        "RTSP listener on {port}: {}",
        srv.stderr_tail(20)
    );
    (srv, port)
}

fn source(name: &str) -> Vec<StreamPackets> {
    let dir = unique_temp_dir("rtsp-src");
    let out = ffmpeg_framecrc(&dir, "source", fixture(name).to_str().unwrap(), &[], 30).wait();
    Capture::from_output(&out).per_stream()
}

fn over(srv: &Server, url: &str, transport: &str) -> (Vec<StreamPackets>, String) {
    let out = ffmpeg_framecrc(
        &srv.dir,
        &format!("rtsp-{transport}"),
        url,
        &["-rtsp_transport", transport],
        40,
    )
    .wait();
    (Capture::from_output(&out).per_stream(), out.describe())
}

/// Sends raw bytes on a new connection and returns what the server answered before closing
/// or going quiet.
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn rtsp_players_get_every_frame_over_tcp_and_udp() {
    require_tools(&["ffmpeg"]);
    let src = source("bframes.flv");
    let (mut srv, port) = server();
    let url = format!("rtsp://127.0.0.1:{port}/vod");
    for transport in ["tcp", "udp"] {
        let (got, diag) = over(&srv, &url, transport);
        assert_eq!(got.len(), 2, "{transport}: {diag}");
        assert_eq!(got[0].codec, "h264", "{diag}");
        // RTP carries presentation times only (no DTS), in 90 kHz and 44.1 kHz clocks.
        got[0].assert_matches(&src[0], 1, &format!("RTSP/{transport} video"));
        got[1].assert_matches(&src[1], 1, &format!("RTSP/{transport} audio"));
    }

    // GStreamer's rtspsrc, both transports, every frame; a stored stream goes out at real
    // time, so the buffer times span the clip.
    for proto in ["tcp", "udp"] {
        let g = gst_count(
            &srv.dir,
            &format!("gst-rtsp-{proto}"),
            40,
            &format!(
                "rtspsrc location={url} protocols={proto} name=s \
                 s. ! application/x-rtp,media=video ! rtph264depay ! h264parse ! fakesink name=video \
                 s. ! application/x-rtp,media=audio ! rtpmp4gdepay ! aacparse ! fakesink name=audio"
            ),
        )
        .wait();
        let r = parse_gst(&g).expect("gst result");
        assert!(r.eos && r.error.is_none(), "{proto}: {r:?}");
        assert_eq!(
            (r.sinks["video"].buffers, r.sinks["video"].keyframes),
            (250, 5),
            "{proto}: {r:?}"
        );
        assert_eq!(r.sinks["audio"].buffers, 432, "{proto}: {r:?}");
    }

    // HEVC (RFC 7798) and several tracks: every frame of every track.
    let (got, diag) = over(&srv, &format!("rtsp://127.0.0.1:{port}/hevc"), "tcp");
    let hevc = source("hevc.ts");
    assert_eq!(got.len(), 2, "{diag}");
    got[0].assert_matches(&hevc[0], 1, "RTSP HEVC video");
    got[1].assert_matches(&hevc[1], 1, "RTSP HEVC audio");
    let (got, diag) = over(&srv, &format!("rtsp://127.0.0.1:{port}/multi"), "tcp");
    let shape: Vec<(&str, usize)> = got.iter().map(|s| (s.codec.as_str(), s.packets)).collect();
    assert_eq!(
        shape,
        [("h264", 250), ("h264", 250), ("aac", 432), ("aac", 470)],
        "{diag}"
    );
    srv.stop();
}

#[test]
fn an_rtmp_publish_plays_live_over_rtsp() {
    require_tools(&["ffmpeg"]);
    let (mut srv, port) = server();
    let publisher = publish_fixture(&srv, "live");
    let ready = poll(Duration::from_secs(15), || {
        srv.get("/hls/live/index.m3u8")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(ready.is_some(), "the publish never became a stream");
    let out = ffmpeg_framecrc(
        &srv.dir,
        "rtsp-live",
        &format!("rtsp://127.0.0.1:{port}/live"),
        &["-rtsp_transport", "tcp", "-t", "5"],
        30,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    let v = cap.video();
    assert!(v.len() >= 100, "{diag}");
    assert!(v[0].key, "a live RTSP viewer starts on a keyframe: {diag}");
    stop_client(publisher);
    srv.stop();
}

#[test]
fn bad_requests_get_rtsp_errors_and_disturb_nobody() {
    require_tools(&["ffmpeg"]);
    let (mut srv, port) = server();
    let base = format!("rtsp://127.0.0.1:{port}");
    let cases: Vec<(String, &str)> = vec![
        (format!("OPTIONS {base}/vod RTSP/1.0\r\n\r\n"), "RTSP/1.0 400"),
        (format!("FROB {base}/vod RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "RTSP/1.0 501"),
        (format!("DESCRIBE {base}/nosuch RTSP/1.0\r\nCSeq: 2\r\n\r\n"), "RTSP/1.0 404"),
        (format!("PLAY {base}/vod RTSP/1.0\r\nCSeq: 3\r\n\r\n"), "RTSP/1.0 455"),
        (
            format!("SETUP {base}/vod/trackID=1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/SAVPF;unicast\r\n\r\n"),
            "RTSP/1.0 461",
        ),
        (
            format!("SETUP {base}/vod/trackID=9 RTSP/1.0\r\nCSeq: 5\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"),
            "RTSP/1.0 404",
        ),
        (
            format!("OPTIONS {base}/vod RTSP/1.0\r\nCSeq: 6\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)),
            "RTSP/1.0 400",
        ),
    ];
    for (req, want) in &cases {
        let got = raw(port, req.as_bytes());
        assert!(
            got.starts_with(want),
            "{}: got {got:?}",
            &req[..req.len().min(60)]
        );
    }
    let ok = raw(
        port,
        format!("OPTIONS {base}/vod RTSP/1.0\r\nCSeq: 7\r\n\r\n").as_bytes(),
    );
    assert!(
        ok.starts_with("RTSP/1.0 200") && ok.contains("CSeq: 7") && ok.contains("DESCRIBE"),
        "{ok}"
    );
    // The server still serves a whole session.
    let (got, diag) = over(&srv, &format!("{base}/vod"), "tcp");
    assert_eq!(
        (got.len(), got[0].packets, got[1].packets),
        (2, 250, 432),
        "{diag}"
    );
    assert!(
        srv.stderr_text().contains("malformed request")
            || srv.stderr_text().contains("request over 16 KiB")
    );
    srv.stop();
}
