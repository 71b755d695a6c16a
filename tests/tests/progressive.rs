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
