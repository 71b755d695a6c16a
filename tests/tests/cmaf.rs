//! CMAF outputs: HLS with fMP4 segments (ffmpeg) and DASH (GStreamer dashdemux, ffmpeg), cut
//! from the same keyframe index as the TS segments, with every frame of the source.
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

#[test]
fn hls_fmp4_and_dash_carry_every_frame() {
    require_tools(&["ffmpeg", "ffprobe", "timeout"]);
    require_gst();
    let srv = Server::start();
    let publisher = ffmpeg_publish(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        40,
    );
    assert!(publisher.wait().status.success());
    thread::sleep(Duration::from_millis(300));

    // The ended stream's manifests: HLS gets #EXT-X-ENDLIST, DASH becomes static.
    let master = srv.get("/cmaf/live/index.m3u8").expect("master");
    assert_eq!(master.status, 200, "{}", master.text());
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let variant = master
        .text()
        .lines()
        .find(|l| l.ends_with(".m3u8"))
        .expect("a variant")
        .to_string();
    let media = srv.get(&format!("/cmaf/live/{variant}")).expect("media");
    let text = media.text();
    assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{text}");
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(text.matches("#EXTINF").count(), 5, "{text}");
    let seg = text.lines().find(|l| l.ends_with(".m4s")).unwrap();
    let base = variant.trim_end_matches("index.m3u8");
    let s = srv
        .get(&format!("/cmaf/live/{base}{seg}"))
        .expect("segment");
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("video/mp4"));
    assert!(s.header("cache-control").unwrap_or("").contains("max-age"));
    assert_eq!(&s.body[4..8], b"moof", "a segment is a movie fragment");
    let mpd = srv.get("/cmaf/live/index.mpd").expect("mpd");
    assert_eq!(mpd.header("content-type"), Some("application/dash+xml"));
    assert!(mpd.text().contains("type=\"static\""), "{}", mpd.text());

    // ffmpeg through HLS-fMP4: every packet, offsets kept.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "hls-fmp4",
        &srv.http_url("/cmaf/live/index.m3u8"),
        &[],
        40,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.video().len(), 250, "{diag}");
    assert_eq!(cap.video_keyframes(), 5, "{diag}");
    assert_eq!(cap.audio().len(), 432, "{diag}");
    assert!(cap.reordered() >= 150, "{diag}");

    // GStreamer through DASH.
    let g = gst_count(
        &srv.dir,
        "gst-dash",
        40,
        &format!(
            "souphttpsrc location={} ! dashdemux name=d d.video_00 ! queue ! qtdemux ! \
             h264parse ! fakesink name=video d.audio_00 ! queue ! qtdemux ! aacparse ! \
             fakesink name=audio",
            srv.http_url("/cmaf/live/index.mpd")
        ),
    )
    .wait();
    let r = parse_gst(&g).expect("gst result");
    assert!(r.eos && r.error.is_none(), "{r:?}");
    assert_eq!(r.sinks["video"].buffers, 250, "{r:?}");
    assert_eq!(r.sinks["video"].keyframes, 5, "{r:?}");
    assert_eq!(r.sinks["audio"].buffers, 432, "{r:?}");

    let missing = srv.get("/cmaf/nosuch/index.mpd").expect("HTTP");
    assert_eq!(missing.status, 404);
}
