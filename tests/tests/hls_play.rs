//! HLS out of an RTMP publish: ffmpeg and GStreamer hlsdemux play it; headers, playlist
//! structure, `#EXT-X-ENDLIST` after the publish and for at least 20 s after.
use sluice_e2e::*;
use std::thread;
use std::time::{Duration, Instant};

fn segments(media: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut dur = None;
    for l in media.lines().map(str::trim) {
        if let Some(d) = l.strip_prefix("#EXTINF:") {
            dur = d
                .split(',')
                .next()
                .and_then(|x| x.trim().parse::<f64>().ok());
        } else if !l.is_empty() && !l.starts_with('#') {
            out.push((dur.take().unwrap_or(-1.0), l.to_string()));
        }
    }
    out
}

fn max_age(cc: &str) -> Option<u64> {
    cc.split(',').map(str::trim).find_map(|d| {
        d.strip_prefix("max-age=")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn assert_hls_headers(r: &HttpResponse, what: &str, ctype: &str) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with(ctype),
        "{what}: Content-Type {ct:?}, want {ctype}: {:?}",
        r.headers
    );
    let cors = r.header("access-control-allow-origin");
    assert!(
        cors.is_some(),
        "{what}: no Access-Control-Allow-Origin header: {:?}",
        r.headers
    );
}

#[test]
fn hls_play_ffmpeg_and_gstreamer() {
    require_tools(&["ffmpeg", "ffprobe", "timeout"]);
    require_gst();
    let file = fixture("bframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");
    let master_path = Server::hls_path("live");

    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);

    // The master playlist appears once the stream is live.
    let master = poll(Duration::from_secs(10), || {
        srv.get(&master_path).ok().filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "GET {master_path} never gave 200 during the publish: {:?}",
            srv.get(&master_path)
        )
    });
    assert_hls_headers(&master, "master playlist", "application/vnd.apple.mpegurl");
    let master_text = master.text();
    assert!(
        master_text.starts_with("#EXTM3U"),
        "master playlist:\n{master_text}"
    );
    assert!(
        master_text.contains("#EXT-X-STREAM-INF"),
        "master playlist has no variant:\n{master_text}"
    );
    let media_path = media_playlist_path(&master_path, &master_text);

    // Wait for the first segment, then start the live readers.
    let live_media = poll(Duration::from_secs(10), || {
        srv.get(&media_path)
            .ok()
            .filter(|r| r.status == 200 && !segments(&r.text()).is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "media playlist {media_path} has no segment during the publish: {:?}",
            srv.get(&media_path)
        )
    });
    assert_hls_headers(
        &live_media,
        "media playlist",
        "application/vnd.apple.mpegurl",
    );
    let live_text = live_media.text();
    assert!(
        !live_text.contains("#EXT-X-ENDLIST"),
        "ENDLIST while the publisher is still sending:\n{live_text}"
    );
    let target: f64 = live_text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no #EXT-X-TARGETDURATION:\n{live_text}"));
    let pl_cc = live_media
        .header("cache-control")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        pl_cc.contains("no-cache")
            || pl_cc.contains("no-store")
            || max_age(&pl_cc).is_some_and(|a| (a as f64) <= target),
        "a live playlist must not be cached longer than a segment; Cache-Control {pl_cc:?}"
    );

    let hls_url = srv.hls_url("live");
    let ff_live = ffmpeg_framecrc(
        &srv.dir,
        "ffmpeg-hls-live",
        &hls_url,
        &["-live_start_index", "0", "-m3u8_hold_counters", "3"],
        60,
    );
    let gst_pipeline = format!(
        "souphttpsrc location={hls_url} ! hlsdemux ! tsdemux name=d \
         d. ! video/x-h264 ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! h264parse ! fakesink name=video \
         d. ! audio/mpeg ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! aacparse ! fakesink name=audio"
    );
    let gst = gst_count(&srv.dir, "gst-hlsdemux", 30, &gst_pipeline);

    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed:\n{}",
        pub_out.describe()
    );
    let unpublished = Instant::now();

    // After the publish: ENDLIST, keyframe-aligned segments covering 10 s.
    let ended = poll(Duration::from_secs(12), || {
        srv.get(&media_path)
            .ok()
            .filter(|r| r.status == 200 && r.text().contains("#EXT-X-ENDLIST"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no #EXT-X-ENDLIST within 12 s of the publish ending: {:?}",
            srv.get(&media_path).map(|r| r.text())
        )
    });
    let text = ended.text();
    let segs = segments(&text);
    let total: f64 = segs.iter().map(|s| s.0).sum();
    assert!(
        (total - 10.0).abs() <= 0.3,
        "segment durations add up to {total} s, want 10:\n{text}"
    );
    for (d, uri) in &segs {
        // cut on keyframes, which are 2 s apart
        // (the last segment may run on to the end of the audio, ~0.1 s past the last frame)
        let k = (d / 2.0).round();
        let slack = if uri == &segs.last().unwrap().1 {
            0.25
        } else {
            0.1
        };
        assert!(
            k >= 1.0 && (d - 2.0 * k).abs() <= slack,
            "segment {uri} lasts {d} s, not a whole number of 2 s GOPs:\n{text}"
        );
        assert!(
            *d <= target + 0.5,
            "segment {uri} lasts {d} s > TARGETDURATION {target}:\n{text}"
        );
    }

    // A segment: MPEG-TS bytes, headers.
    let seg_path = resolve(&media_path, &segs[0].1);
    let seg = srv.get(&seg_path).expect("GET segment");
    assert_eq!(seg.status, 200, "GET {seg_path}: {:?}", seg.headers);
    assert_hls_headers(&seg, "segment", "video/mp2t");
    assert!(
        !seg.body.is_empty() && seg.body[0] == 0x47 && seg.body.len().is_multiple_of(188),
        "segment {seg_path} is not MPEG-TS: {} bytes, first byte {:?}",
        seg.body.len(),
        seg.body.first()
    );
    let seg_cc = seg
        .header("cache-control")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        !seg_cc.is_empty() && !seg_cc.contains("no-cache") && !seg_cc.contains("no-store"),
        "segments never change and should be cacheable; Cache-Control {seg_cc:?}"
    );
    if let (Some(s), Some(p)) = (max_age(&seg_cc), max_age(&pl_cc)) {
        assert!(
            s > p,
            "segment max-age {s} not longer than the live playlist's {p}"
        );
    }

    // Muxed once, served from the shared segment cache: a second GET (a new connection, so
    // another process) gets the same bytes, and they are the file in the run folder.
    let again = srv.get(&seg_path).expect("GET segment again");
    assert_eq!(again.status, 200, "second GET {seg_path}");
    assert!(
        again.body == seg.body,
        "segment {seg_path} changed between two GETs ({} vs {} bytes)",
        seg.body.len(),
        again.body.len()
    );
    let seg_file = seg_path.rsplit('/').next().unwrap();
    let key = seg_file.trim_end_matches(".ts").rsplit('_').next().unwrap();
    let set = seg_path.rsplit('/').nth(1).unwrap();
    let cached: Vec<_> = std::fs::read_dir(srv.rundir.join("segments").join("live"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(format!("hls_{set}_{key}.ts")))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        cached
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b == seg.body)),
        "segment {seg_path} not in the segment cache: looked at {cached:?}"
    );

    // ffmpeg that read it live from the first segment.
    let out = ff_live.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    assert_eq!(cap.video().len(), 250, "live HLS video frames: {diag}");
    assert_eq!(cap.video_keyframes(), 5, "live HLS keyframes: {diag}");
    assert_eq!(cap.audio().len(), 432, "live HLS audio frames: {diag}");
    assert!(
        cap.reordered() >= 150,
        "B-frame composition offsets lost in HLS: {diag}"
    );

    // ffmpeg reading the finished playlist.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "ffmpeg-hls-ended",
        &hls_url,
        &["-live_start_index", "0"],
        30,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.video().len(), 250, "ended HLS video frames: {diag}");
    assert_eq!(cap.video_keyframes(), 5, "ended HLS keyframes: {diag}");
    assert_eq!(cap.audio().len(), 432, "ended HLS audio frames: {diag}");
    assert!(
        cap.video()[0].key,
        "ended HLS: first frame not a keyframe: {diag}"
    );

    let (probe, streams) = ffprobe_full(
        &srv.dir,
        "ffprobe-hls",
        &hls_url,
        &["-live_start_index", "0"],
        false,
        30,
    );
    let diag = format!("{streams:?}\n{}", probe.describe());
    let v = find_stream(&streams, "video").unwrap_or_else(|| panic!("{diag}"));
    assert_eq!(
        (v.codec_name.as_str(), v.width, v.height),
        ("h264", 640, 360),
        "{diag}"
    );
    let a = find_stream(&streams, "audio").unwrap_or_else(|| panic!("{diag}"));
    assert_eq!(
        (a.codec_name.as_str(), a.sample_rate, a.channels),
        ("aac", 44100, 2),
        "{diag}"
    );

    // GStreamer hlsdemux (may not end on a live playlist: stopped by time).
    let out = gst.wait();
    let r = parse_gst(&out).unwrap_or_else(|e| panic!("gst_count.py: {e}\n{}", out.describe()));
    let diag = format!("{r:?}\n{}", out.describe());
    let video = r.sinks.get("video").cloned().unwrap_or_default();
    let audio = r.sinks.get("audio").cloned().unwrap_or_default();
    assert!(r.error.is_none(), "hlsdemux error: {diag}");
    assert!(video.buffers > 200, "hlsdemux video frames: {diag}");
    assert!(audio.buffers > 300, "hlsdemux audio frames: {diag}");
    assert_eq!(
        video.first_key,
        Some(true),
        "hlsdemux first frame not a keyframe: {diag}"
    );

    // Still served (with ENDLIST) 20 s after the publisher left.
    let since = unpublished.elapsed();
    if since < Duration::from_secs(21) {
        thread::sleep(Duration::from_secs(21) - since);
    }
    let late = srv
        .get(&media_path)
        .expect("GET media playlist 21 s after the publish");
    assert_eq!(
        late.status, 200,
        "media playlist gone 21 s after the publish ended"
    );
    assert!(
        late.text().contains("#EXT-X-ENDLIST"),
        "21 s later:\n{}",
        late.text()
    );
    let late_master = srv.get(&master_path).expect("GET master 21 s later");
    assert_eq!(
        late_master.status, 200,
        "master playlist gone 21 s after the publish ended"
    );
}
