//! Two more RTMP implementations play a publish from the start: GStreamer's rtmp2src and
//! librtmp's rtmpdump. Both must receive every video frame.
use sluice_e2e::*;
use std::time::Duration;

#[test]
fn rtmp_gstreamer_and_rtmpdump_get_every_frame() {
    require_tools(&["ffmpeg", "ffprobe", "rtmpdump", "timeout"]);
    require_gst();
    let file = fixture("bframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    let pipeline = format!(
        "rtmp2src location={url} ! flvdemux name=d \
         d.video ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! h264parse ! fakesink name=video \
         d.audio ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! aacparse ! fakesink name=audio"
    );
    let gst = gst_count(&srv.dir, "gst-rtmp2src", 40, &pipeline);
    let dump_file = srv.dir.join("rtmpdump.flv");
    let dump = rtmpdump(&srv.dir, "rtmpdump", &url, dump_file.to_str().unwrap(), 40);
    let waiting = srv.wait_rtmp_players(2, Duration::from_secs(2));
    eprintln!("{waiting} `RTMP play` children before the publish");

    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);
    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed:\n{}",
        pub_out.describe()
    );

    // Judge each client on its own (both panics are printed), then fail if either did.
    let gst_ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // GStreamer
        let out = gst.wait();
        let r = parse_gst(&out).unwrap_or_else(|e| panic!("gst_count.py: {e}\n{}", out.describe()));
        let diag = format!("{r:?}\n{}\n{}", out.stdout_text(), out.describe());
        let video = r.sinks.get("video").cloned().unwrap_or_default();
        let audio = r.sinks.get("audio").cloned().unwrap_or_default();
        assert_eq!(video.buffers, 250, "rtmp2src video frames: {diag}");
        assert_eq!(video.keyframes, 5, "rtmp2src keyframes: {diag}");
        assert_eq!(
            video.first_key,
            Some(true),
            "rtmp2src first frame not a keyframe: {diag}"
        );
        assert_eq!(audio.buffers, 432, "rtmp2src audio frames: {diag}");
        assert!(r.error.is_none(), "rtmp2src pipeline error: {diag}");
        assert!(
            r.eos && !r.timed_out,
            "rtmp2src did not get a clean end of stream after the unpublish: {diag}"
        );
    }))
    .is_ok();
    let dump_ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // rtmpdump (librtmp); its exit code for live streams is not meaningful, the file is.
        let out = dump.wait();
        assert!(
            dump_file.is_file(),
            "rtmpdump wrote no file:\n{}",
            out.describe()
        );
        let (probe, streams) = ffprobe_full(
            &srv.dir,
            "ffprobe-dump",
            dump_file.to_str().unwrap(),
            &[],
            true,
            30,
        );
        let diag = format!("{streams:?}\n{}\n{}", out.describe(), probe.describe());
        let v = find_stream(&streams, "video")
            .unwrap_or_else(|| panic!("no video in rtmpdump's file: {diag}"));
        let a = find_stream(&streams, "audio")
            .unwrap_or_else(|| panic!("no audio in rtmpdump's file: {diag}"));
        assert_eq!(v.codec_name, "h264", "{diag}");
        assert_eq!(a.codec_name, "aac", "{diag}");
        assert_eq!(
            v.nb_read_packets,
            Some(250),
            "rtmpdump video frames: {diag}"
        );
        assert_eq!(
            a.nb_read_packets,
            Some(432),
            "rtmpdump audio frames: {diag}"
        );
        let lag = out.ended.saturating_duration_since(pub_out.ended);
        assert!(
            lag < Duration::from_secs(8),
            "rtmpdump ended {lag:?} after the publisher: {diag}"
        );
    }))
    .is_ok();
    assert!(
        gst_ok && dump_ok,
        "GStreamer rtmp2src ok: {gst_ok}; rtmpdump ok: {dump_ok} (see the panics above)"
    );
}
