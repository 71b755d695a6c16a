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
        cfg["streams"]["locked"] = json!({"name": "locked", "source": "push://@s3cret"});
    });
    assert!(
        poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some(),
        "RTSP listener on {port}: {}",
        srv.stderr_tail(20)
    );
    (srv, port)
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
    let src = fixture_streams("bframes.flv");
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
        assert!(
            r.eos && r.error.is_none(),
            "{proto}: {r:?}\n{}\nserver:\n{}",
            g.describe(),
            srv.stderr_tail(30)
        );
        // The session outlives the stream until rtspsrc's TEARDOWN: a server that closes
        // the connection at the end makes rtspsrc warn, reconnect and sometimes fail.
        assert!(
            !r.warnings
                .iter()
                .any(|w| w.contains("closed the connection")),
            "{proto}: {:?}",
            r.warnings
        );
        assert_eq!(
            (r.sinks["video"].buffers, r.sinks["video"].keyframes),
            (250, 5),
            "{proto}: {r:?}"
        );
        assert_eq!(r.sinks["audio"].buffers, 432, "{proto}: {r:?}");
    }
    // rtspsrc sends RTCP receiver reports; Sluice reads them (over UDP and interleaved)
    // and names what they say when the session ends: nothing was lost here (rtspsrc may
    // count one packet below zero: it starts counting at RTP-Info's sequence number).
    let text = srv.stderr_text();
    let reports: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("receiver reports: track"))
        .collect();
    assert!(reports.len() >= 2, "{}", srv.stderr_tail(30));
    let lost = |l: &str| -> Vec<i64> {
        l.split(" lost")
            .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    assert!(
        reports.iter().all(|l| {
            let v = lost(l);
            !v.is_empty() && v.iter().all(|&n| n <= 0)
        }),
        "{reports:?}"
    );

    // HEVC (RFC 7798) and several tracks: every frame of every track.
    let (got, diag) = over(&srv, &format!("rtsp://127.0.0.1:{port}/hevc"), "tcp");
    let hevc = fixture_streams("hevc.ts");
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
    // A publisher that sends interleaved data on a channel it never set up: ignored and
    // named in the log; its session goes on.
    let mut p = Raw::connect(port);
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=fmtp:97 config=1210;sizelength=13;indexlength=3\r\na=control:streamid=0\r\n";
    let r = p.request(
        "ANNOUNCE",
        &format!("{base}/live+stray"),
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    let session = header(&r, "Session").split(';').next().unwrap().to_string();
    let r = p.request(
        "SETUP",
        &format!("{base}/live+stray/streamid=0"),
        &format!(
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\nSession: {session}\r\n"
        ),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    let r = p.request(
        "RECORD",
        &format!("{base}/live+stray"),
        &format!("Session: {session}\r\n"),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    p.s.write_all(b"$\x07\x00\x04abcd").unwrap();
    let r = p.request(
        "OPTIONS",
        &format!("{base}/live+stray"),
        &format!("Session: {session}\r\n"),
    );
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    assert!(
        poll(Duration::from_secs(3), || srv
            .stderr_text()
            .contains("channel 7, which was never set up")
            .then_some(()))
        .is_some(),
        "{}",
        srv.stderr_tail(10)
    );
    drop(p);
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

/// A hand-driven RTSP/TCP session: requests and their responses, interleaved frames counted.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
    /// Interleaved frames seen so far (channel, first RTP timestamp of channel 0).
    frames: usize,
    first_ts: Option<u32>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Raw {
            s,
            buf: Vec::new(),
            cseq: 0,
            frames: 0,
            first_ts: None,
        }
    }

    /// Reads for `d`, taking interleaved frames off the buffer; returns a response if one
    /// completed.
    fn pump(&mut self, d: Duration) -> Option<String> {
        let end = std::time::Instant::now() + d;
        let mut chunk = [0u8; 65536];
        loop {
            // Take complete interleaved frames and responses off the front.
            loop {
                if self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                    let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                    if self.buf.len() < 4 + len {
                        break;
                    }
                    if self.buf[1] == 0 && self.first_ts.is_none() && len >= 12 {
                        self.first_ts =
                            Some(u32::from_be_bytes(self.buf[8..12].try_into().unwrap()));
                    }
                    self.frames += 1;
                    self.buf.drain(..4 + len);
                } else if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&self.buf[..at + 4]).into_owned();
                    self.buf.drain(..at + 4);
                    return Some(text);
                } else {
                    break;
                }
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    fn request(&mut self, method: &str, url: &str, extra: &str) -> String {
        self.cseq += 1;
        let req = format!(
            "{method} {url} RTSP/1.0\r\nCSeq: {}\r\n{extra}\r\n",
            self.cseq
        );
        self.s.write_all(req.as_bytes()).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if let Some(r) = self.pump(Duration::from_millis(200)) {
                if r.contains(&format!("CSeq: {}\r\n", self.cseq)) {
                    if let Some(len) = r
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    {
                        while self.buf.len() < len {
                            self.pump(Duration::from_millis(100));
                        }
                        let body = String::from_utf8_lossy(&self.buf[..len]).into_owned();
                        self.buf.drain(..len);
                        return r + &body;
                    }
                    return r;
                }
            }
        }
        panic!("no response to {method}");
    }
}

fn header<'a>(resp: &'a str, name: &str) -> &'a str {
    resp.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {resp}"))
}

#[test]
fn play_from_a_range_pause_and_resume() {
    let (mut srv, port) = server();
    let url = format!("rtsp://127.0.0.1:{port}/vod");
    let mut c = Raw::connect(port);
    let sdp = c.request("DESCRIBE", &url, "Accept: application/sdp\r\n");
    assert!(sdp.starts_with("RTSP/1.0 200"), "{sdp}");
    assert!(
        sdp.contains("a=rtpmap:96 H264/90000") && sdp.contains("a=rtpmap:97 MPEG4-GENERIC/44100/2"),
        "{sdp}"
    );
    assert!(
        sdp.contains("sprop-parameter-sets=") && sdp.contains("config=1210"),
        "{sdp}"
    );
    assert!(
        sdp.contains("a=range:npt=0-10."),
        "a stored stream has a length: {sdp}"
    );
    let s1 = c.request(
        "SETUP",
        &format!("{url}/trackID=1"),
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
    );
    assert!(s1.starts_with("RTSP/1.0 200"), "{s1}");
    let session = header(&s1, "Session")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let s2 = c.request(
        "SETUP",
        &format!("{url}/trackID=2"),
        &format!("Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\nSession: {session}\r\n"),
    );
    assert!(header(&s2, "Transport").contains("interleaved=2-3"), "{s2}");
    let wrong = c.request("GET_PARAMETER", &url, "Session: 0123\r\n");
    assert!(wrong.starts_with("RTSP/1.0 454"), "{wrong}");

    // From 4 s: the keyframe there, and RTP-Info gives the first packet's timestamp.
    let play = c.request(
        "PLAY",
        &url,
        &format!("Session: {session}\r\nRange: npt=4.5-\r\n"),
    );
    assert!(play.starts_with("RTSP/1.0 200"), "{play}");
    assert!(
        header(&play, "Range").starts_with("npt=4.000-10."),
        "{play}"
    );
    let info = header(&play, "RTP-Info");
    let rtptime: u32 = info
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .find_map(|p| p.strip_prefix("rtptime="))
        .unwrap()
        .parse()
        .unwrap();
    c.pump(Duration::from_millis(1500));
    assert!(c.frames > 20, "frames after PLAY: {}", c.frames);
    // The first video packet is the keyframe at 4 s: PTS 4.08 s (B-frame delay) in 90 kHz.
    let first = c.first_ts.expect("a video packet");
    assert_eq!(
        first.wrapping_sub(rtptime),
        80 * 90,
        "first RTP time against RTP-Info"
    );

    // PAUSE: the media stops; PLAY: it resumes.
    let pause = c.request("PAUSE", &url, &format!("Session: {session}\r\n"));
    assert!(pause.starts_with("RTSP/1.0 200"), "{pause}");
    c.pump(Duration::from_millis(300));
    let before = c.frames;
    c.pump(Duration::from_millis(1500));
    assert_eq!(c.frames, before, "media while paused");
    let resume = c.request("PLAY", &url, &format!("Session: {session}\r\n"));
    assert!(resume.starts_with("RTSP/1.0 200"), "{resume}");
    c.pump(Duration::from_millis(1500));
    assert!(
        c.frames > before + 20,
        "no media after resuming: {} then {}",
        before,
        c.frames
    );
    let bye = c.request("TEARDOWN", &url, &format!("Session: {session}\r\n"));
    assert!(bye.starts_with("RTSP/1.0 200"), "{bye}");
    srv.stop();
}

#[test]
fn ffmpeg_pushes_over_rtsp_and_every_output_has_every_frame() {
    require_tools(&["ffmpeg"]);
    let src = fixture_streams("bframes.flv");
    let (mut srv, port) = server();
    for transport in ["tcp", "udp"] {
        let stream = format!("live+{transport}");
        // ANNOUNCE/SETUP/RECORD at real time, to the end of the file.
        let push = spawn_client(
            &srv.dir,
            &format!("rtsp-push-{transport}"),
            40,
            "ffmpeg",
            &[
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "warning",
                "-re",
                "-i",
                fixture("bframes.flv").to_str().unwrap(),
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                transport,
                &format!("rtsp://127.0.0.1:{port}/{stream}"),
            ]
            .map(String::from),
        )
        .wait();
        assert!(push.status.success(), "{}", push.describe());
        // RTMP: every frame, from the start of the ended stream.
        let out =
            ffmpeg_framecrc(&srv.dir, "rtmp-after-push", &srv.rtmp_url(&stream), &[], 40).wait();
        let got = Capture::from_output(&out).per_stream();
        assert_eq!(
            got.len(),
            2,
            "RTMP: {}\n{}",
            out.describe(),
            srv.stderr_tail(10)
        );
        assert_eq!(
            (got[0].packets, got[0].keyframes),
            (250, 5),
            "RTMP: {}",
            out.describe()
        );
        assert!(got[1].packets >= 431, "RTMP: {}", out.describe());
        // The ended stream: every frame, times as in the file (RTP carries presentation
        // times only; decode order and times are rebuilt).
        for path in [
            format!("/hls/{stream}/index.m3u8"),
            format!("/{stream}.mp4"),
        ] {
            let out = ffmpeg_framecrc(&srv.dir, "after-push", &srv.http_url(&path), &[], 40).wait();
            let got = Capture::from_output(&out).per_stream();
            let what = format!("{path} after an RTSP/{transport} push");
            assert_eq!(got.len(), 2, "{what}: {}", out.describe());
            got[0].assert_matches(&src[0], 1, &format!("{what}, video"));
            // ffmpeg 5.1's RTSP muxer never sends the file's last AAC frame: its own RTSP
            // listener (`-rtsp_flags listen`) receives 431 of 432 from the same push. Every
            // frame it sends must arrive.
            let mut sent = src[1].clone();
            if got[1].packets + 1 == sent.packets {
                sent.packets -= 1;
                sent.keyframes -= 1;
                sent.pts_ms.pop();
            }
            // Audio went ms → 44.1 kHz ticks (ffmpeg) → ms (Sluice): 2 ms of rounding at most.
            got[1].assert_matches(&sent, 2, &format!("{what}, audio"));
        }
        // And back out over RTSP: every frame again. (Stored streams go out at real time,
        // and an ended push is kept 30 s: ffmpeg over TCP after the UDP push; ffmpeg over
        // UDP and GStreamer's rtspsrc after the TCP push.)
        let url = format!("rtsp://127.0.0.1:{port}/{stream}");
        let t = if transport == "tcp" { "udp" } else { "tcp" };
        let (got, diag) = over(&srv, &url, t);
        assert_eq!(
            (got[0].packets, got[0].keyframes),
            (250, 5),
            "RTSP/{t}: {diag}"
        );
        assert!(got[1].packets >= 431, "RTSP/{t}: {diag}");
        if transport == "udp" {
            continue;
        }
        let g = gst_count(
            &srv.dir,
            "gst-after-push",
            40,
            &format!(
                "rtspsrc location={url} protocols=tcp name=s \
                 s. ! application/x-rtp,media=video ! rtph264depay ! h264parse ! fakesink name=video \
                 s. ! application/x-rtp,media=audio ! rtpmp4gdepay ! aacparse ! fakesink name=audio"
            ),
        )
        .wait();
        let r = parse_gst(&g).expect("gst result");
        assert_eq!(
            (r.sinks["video"].buffers, r.sinks["video"].keyframes),
            (250, 5),
            "{r:?}"
        );
        assert!(r.sinks["audio"].buffers >= 431, "{r:?}");
    }
    assert_eq!(
        srv.stderr_text()
            .matches("push ended (0 RTP packets lost, 0 unreadable, 0 access units dropped, 0 foreign datagrams dropped)")
            .count(),
        2,
        "{}",
        srv.stderr_tail(20)
    );
    srv.stop();
}

/// ffmpeg pushes into a stream with a key (`push://@KEY`) by putting the key in the URL as
/// the password: it answers Sluice's 401 with Digest. A wrong password is refused with 401
/// and a log line, and the stream stays offline; Basic credentials sent up front work too.
#[test]
fn a_push_into_a_stream_with_a_key_authenticates_with_digest() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let (srv, port) = server();
    let push = |label: &str, user_pass: &str| {
        spawn_client(
            &srv.dir,
            label,
            30,
            "ffmpeg",
            &[
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "warning",
                "-re",
                "-i",
                fixture("bframes.flv").to_str().unwrap(),
                "-t",
                "3",
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                "tcp",
                &format!("rtsp://{user_pass}@127.0.0.1:{port}/locked"),
            ]
            .map(String::from),
        )
    };
    let bad = push("wrong-password", "pub:guess").wait();
    assert!(
        !bad.status.success(),
        "a wrong password was let in: {}",
        bad.describe()
    );
    assert!(
        srv.stderr_text().contains("ANNOUNCE needs credentials"),
        "{}",
        srv.stderr_tail(20)
    );
    assert!(
        !srv.stderr_text().contains("guess"),
        "the password was logged"
    );
    let good = push("right-password", "pub:s3cret");
    // While it pushes, the stream plays.
    let info = ffprobe(
        &srv.dir,
        "locked",
        &format!("rtsp://127.0.0.1:{port}/locked"),
        &["-rtsp_transport", "tcp"],
        20,
    )
    .unwrap();
    assert_eq!(info.len(), 2, "{info:?}");
    let good = good.wait();
    assert!(good.status.success(), "{}", good.describe());
    assert!(
        srv.stderr_text().contains("127.0.0.1 publishes locked"),
        "{}",
        srv.stderr_tail(20)
    );
    // Basic, sent with the ANNOUNCE: the 401 is not needed.
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=fmtp:97 config=1210;sizelength=13;indexlength=3\r\na=control:streamid=0\r\n";
    let announce = |auth: &str| {
        raw(
            port,
            format!(
                "ANNOUNCE rtsp://127.0.0.1:{port}/locked RTSP/1.0\r\nCSeq: 1\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
            .as_bytes(),
        )
    };
    // base64("pub:s3cret")
    let ok = announce("Authorization: Basic cHViOnMzY3JldA==\r\n");
    assert!(ok.starts_with("RTSP/1.0 200"), "{ok}");
    let no = announce("Authorization: Basic cHViOm5vcGU=\r\n");
    assert!(
        no.starts_with("RTSP/1.0 401") && no.contains("Digest realm="),
        "{no}"
    );
}

/// G.711 passes through: ffmpeg pushes H.264 and A-law (PCMA, RTP payload type 8) over
/// RTSP; the stream plays back over RTSP and as FLV (SoundFormat 7) with every audio sample
/// and every video frame.
#[test]
fn g711_audio_passes_through_rtsp_and_flv() {
    require_tools(&["ffmpeg"]);
    let (srv, port) = server();
    let file = srv.dir.join("alaw.mkv");
    let made = spawn_client(
        &srv.dir,
        "make-alaw",
        30,
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            fixture("bframes.flv").to_str().unwrap(),
            "-c:v",
            "copy",
            "-c:a",
            "pcm_alaw",
            "-ar",
            "8000",
            "-ac",
            "1",
            file.to_str().unwrap(),
        ]
        .map(String::from),
    )
    .wait();
    assert!(made.status.success(), "{}", made.describe());
    let bytes = |cap: &Capture, m: Media| -> u64 {
        cap.packets
            .iter()
            .filter(|p| p.media == m)
            .map(|p| p.size)
            .sum()
    };
    let src = Capture::from_output(
        &ffmpeg_framecrc(&srv.dir, "src", file.to_str().unwrap(), &[], 30).wait(),
    );
    let samples = bytes(&src, Media::Audio);
    assert!(samples > 79_000, "{samples} A-law samples in the source");
    let push = spawn_client(
        &srv.dir,
        "push-alaw",
        40,
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-re",
            "-i",
            file.to_str().unwrap(),
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
            &format!("rtsp://127.0.0.1:{port}/live+alaw"),
        ]
        .map(String::from),
    )
    .wait();
    assert!(push.status.success(), "{}", push.describe());
    for url in [
        format!("rtsp://127.0.0.1:{port}/live+alaw"),
        srv.http_url("/live+alaw.flv"),
    ] {
        let out = ffmpeg_framecrc(
            &srv.dir,
            "play-alaw",
            &url,
            &["-rtsp_transport", "tcp"][..if url.starts_with("rtsp") { 2 } else { 0 }],
            40,
        )
        .wait();
        let cap = Capture::from_output(&out);
        let codecs: Vec<&str> = cap.streams.values().map(|(_, c)| c.as_str()).collect();
        assert_eq!(codecs, ["h264", "pcm_alaw"], "{url}: {}", out.describe());
        assert_eq!(cap.video().len(), 250, "{url}: video frames");
        assert_eq!(bytes(&cap, Media::Audio), samples, "{url}: A-law samples");
    }
}

/// Sluice pushes out over RTSP (ANNOUNCE/RECORD, the push process `sluice push`): to ffmpeg
/// listening (`-rtsp_flags listen`), every frame of a stored stream arrives; to Sluice's own
/// RTSP connector, into a stream with a key, with the credentials in the target URL
/// (Digest), every frame again.
#[test]
fn sluice_pushes_out_over_rtsp_with_every_frame() {
    require_tools(&["ffmpeg"]);
    let src = fixture_streams("bframes.flv");
    let (srv, port) = server();
    let push = |target: &str| {
        let out = std::process::Command::new(sluice_bin())
            .args(["push", "--stream", "vod", "--target", target, "--rundir"])
            .arg(&srv.rundir)
            .output()
            .expect("sluice push");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let listen = free_port();
    let target = format!("rtsp://127.0.0.1:{listen}/in");
    let receiver = ffmpeg_framecrc(
        &srv.dir,
        "listener",
        &target,
        &["-rtsp_flags", "listen"],
        40,
    );
    std::thread::sleep(Duration::from_millis(800));
    let log = push(&target);
    assert!(log.contains("recording to"), "{log}");
    let got = Capture::from_output(&receiver.wait()).per_stream();
    assert_eq!(got.len(), 2, "{log}");
    assert_eq!(
        (got[0].codec.as_str(), got[0].packets, got[0].keyframes),
        ("h264", 250, 5)
    );
    got[1].assert_matches(&src[1], 2, "pushed to ffmpeg, audio");
    // Into Sluice's own push://@s3cret stream, over its RTSP connector.
    let log = push(&format!("rtsp://pub:s3cret@127.0.0.1:{port}/locked"));
    assert!(!log.contains("s3cret"), "the password was logged: {log}");
    let (got, diag) = over(&srv, &format!("rtsp://127.0.0.1:{port}/locked"), "tcp");
    assert_eq!((got[0].packets, got[0].keyframes), (250, 5), "{diag}");
    assert!(got[1].packets >= 431, "{diag}");
}
