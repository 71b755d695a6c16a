//! Progressive HTTP outputs (`/S.flv`, `/S.ts`, `/S.mp4`) with ffmpeg and GStreamer: players that start
//! before the publish get every frame, and the response ends when the stream does.
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

#[test]
fn progressive_flv_and_ts_carry_every_frame() {
    require_tools(&["ffmpeg", "timeout"]);
    require_gst();
    let srv = Server::start();
    let flv = ffmpeg_framecrc(&srv.dir, "flv", &srv.http_url("/live.flv"), &[], 40);
    let ts = ffmpeg_framecrc(&srv.dir, "ts", &srv.http_url("/live.ts"), &[], 40);
    let mp4 = ffmpeg_framecrc(&srv.dir, "mp4", &srv.http_url("/live.mp4"), &[], 40);
    let gst = gst_count(
        &srv.dir,
        "gst-flv",
        40,
        &format!(
            "souphttpsrc location={} ! flvdemux name=d d.video ! queue ! h264parse ! \
             fakesink name=video d.audio ! queue ! aacparse ! fakesink name=audio",
            srv.http_url("/live.flv")
        ),
    );
    thread::sleep(Duration::from_millis(800));
    let publisher = ffmpeg_publish(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        40,
    );
    assert!(publisher.wait().status.success());
    for (name, client) in [("flv", flv), ("ts", ts), ("mp4", mp4)] {
        let out = client.wait();
        let cap = Capture::from_output(&out);
        let diag = format!("{name}: {}\n{}", cap.summary(), out.describe());
        assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
        assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
        assert_eq!(cap.video().len(), 250, "{diag}");
        assert_eq!(cap.video_keyframes(), 5, "{diag}");
        assert_eq!(cap.audio().len(), 432, "{diag}");
        assert!(cap.video()[0].key, "starts on a keyframe: {diag}");
        assert!(cap.reordered() >= 150, "composition offsets kept: {diag}");
        // framecrc prints TS and MP4 video timestamps in 90 kHz ticks, FLV in ms.
        let tick = if name == "flv" { 1 } else { 90 };
        let (gap, monotonic) = cap.video_dts_check();
        assert!(monotonic && gap <= 80 * tick, "{diag}");
        assert!(
            !out.stderr.contains("prematurely"),
            "the response ends cleanly (chunked): {diag}"
        );
    }
    let g = gst.wait();
    let r = parse_gst(&g).expect("gst result");
    assert!(r.eos, "GStreamer sees the end of the response: {r:?}");
    assert_eq!(r.sinks["video"].buffers, 250, "{r:?}");
    assert_eq!(r.sinks["audio"].buffers, 432, "{r:?}");

    let missing = srv.get("/nosuch.flv").expect("HTTP");
    assert_eq!(missing.status, 404);
}

/// `/S.mp4` of an ended stream is a whole file: `moov` before `mdat`, a Content-Length, byte
/// ranges (206, and 416 past the end) and HEAD, so ffmpeg and GStreamer's qtdemux read every
/// frame and a browser can seek.
#[test]
fn vod_mp4_is_one_file_with_moov_first_ranges_and_head() {
    require_tools(&["ffmpeg", "timeout"]);
    require_gst();
    let srv = Server::start();
    publish_fixture_to_end(&srv, "live");

    let whole = srv.get("/live.mp4").expect("GET /live.mp4");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let len = whole.body.len();
    assert_eq!(
        whole.header("content-length").and_then(|v| v.parse().ok()),
        Some(len)
    );
    assert_eq!(&whole.body[4..8], b"ftyp");
    let moov = whole.body.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = whole.body.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov must come before mdat");
    assert!(
        !whole.body.windows(4).any(|w| w == b"moof"),
        "not fragmented"
    );

    let head = http_request(srv.http_port, "HEAD", "/live.mp4", None).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length").and_then(|v| v.parse().ok()),
        Some(len)
    );
    let part = http_request_headers(
        srv.http_port,
        "GET",
        "/live.mp4",
        &[("Range", "bytes=1000-1999")],
        None,
    )
    .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range").map(str::to_string),
        Some(format!("bytes 1000-1999/{len}"))
    );
    assert!(part.body == whole.body[1000..2000]);
    let tail = http_request_headers(
        srv.http_port,
        "GET",
        "/live.mp4",
        &[("Range", "bytes=-500")],
        None,
    )
    .unwrap();
    assert_eq!(tail.status, 206);
    assert!(tail.body == whole.body[len - 500..]);
    let past = http_request_headers(
        srv.http_port,
        "GET",
        "/live.mp4",
        &[("Range", &format!("bytes={len}-"))],
        None,
    )
    .unwrap();
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range").map(str::to_string),
        Some(format!("bytes */{len}"))
    );

    let file = srv.dir.join("vod.mp4");
    std::fs::write(&file, &whole.body).unwrap();
    let out = ffmpeg_framecrc(&srv.dir, "vod-mp4", &srv.http_url("/live.mp4"), &[], 30).wait();
    assert_every_frame(&out, "ffmpeg on the VOD MP4");
    let g = gst_count(
        &srv.dir,
        "gst-qtdemux",
        30,
        &format!(
            "filesrc location={} ! qtdemux name=d d.video_0 ! queue ! h264parse ! fakesink name=video \
             d.audio_0 ! queue ! aacparse ! fakesink name=audio",
            file.display()
        ),
    )
    .wait();
    let r = parse_gst(&g).unwrap_or_else(|e| panic!("{e}\n{}", g.describe()));
    assert!(r.eos && r.error.is_none(), "{r:?}");
    assert_eq!(r.sinks["video"].buffers, 250, "{r:?}");
    assert_eq!(r.sinks["audio"].buffers, 432, "{r:?}");
}
