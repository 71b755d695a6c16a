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
    publish_fixture_to_end(&srv, "live");

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
    // The init segment's name carries the buffer's boot time, so it can be cached for long.
    let map = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no EXT-X-MAP:\n{text}"));
    assert!(map.ends_with("_init.mp4"), "{text}");
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
    let init = srv
        .get(&format!(
            "/cmaf/live/{}{map}",
            variant.trim_end_matches("index.m3u8")
        ))
        .unwrap();
    assert_eq!(init.status, 200);
    assert!(init
        .header("cache-control")
        .unwrap_or("")
        .contains("immutable"));
    assert_eq!(&init.body[4..8], b"ftyp");
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
    );
    assert_every_frame(&out.wait(), "ffmpeg on HLS-fMP4");

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

/// `#EXT-X-PART` URIs and durations (s) of an LL-HLS playlist, in order.
fn parts_of(playlist: &str) -> Vec<(String, f64, bool)> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .map(|a| {
            let dur = a
                .split(',')
                .find_map(|kv| kv.strip_prefix("DURATION="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0);
            let uri = a.split("URI=\"").nth(1).unwrap().split('"').next().unwrap();
            (uri.to_string(), dur, a.contains("INDEPENDENT=YES"))
        })
        .collect()
}

fn preload_hint(playlist: &str) -> Option<String> {
    let l = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))?;
    Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_string())
}

#[test]
fn ll_hls_parts_preload_hint_and_blocking_reload() {
    require_tools(&["ffmpeg", "ffprobe", "timeout"]);
    let srv = Server::start();
    let publisher = ffmpeg_publish(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        40,
    );
    let media = "/cmaf/live/1_2/index.m3u8";
    let first = poll(Duration::from_secs(10), || {
        srv.get(media)
            .ok()
            .filter(|r| r.status == 200 && preload_hint(&r.text()).is_some())
    })
    .expect("a live LL-HLS playlist with a preload hint");
    let text = first.text();
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500"), "{text}");
    let parts = parts_of(&text);
    assert!(!parts.is_empty(), "{text}");
    for (uri, d, _) in &parts {
        assert!(*d > 0.0 && *d <= 0.5, "part {uri} lasts {d} s:\n{text}");
    }
    assert!(
        parts.iter().any(|p| p.0.ends_with(".0.m4s") && p.2),
        "a segment's first part is INDEPENDENT:\n{text}"
    );

    // The preload hint is answered once that part is complete, and then the playlist lists it.
    let hint = preload_hint(&text).unwrap();
    let p = srv
        .get(&format!("/cmaf/live/1_2/{hint}"))
        .expect("hinted part");
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(&p.body[4..8], b"moof");
    let after = srv.get(media).unwrap().text();
    assert!(
        parts_of(&after).iter().any(|x| x.0 == hint)
            || after.contains(&hint.replace(".0.m4s", ".m4s")),
        "part {hint} served but not in the next playlist:\n{after}"
    );

    // Blocking reload: ask for the segment after the newest complete one; the answer holds it.
    let msn = after
        .lines()
        .filter(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .count() as u64
        + after
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
    let boot = hint.split('_').next().unwrap().to_string();
    let want = format!("{boot}_{msn}.m4s");
    assert!(!after.lines().any(|l| l == want), "{after}");
    let blocked = srv
        .get(&format!("{media}?_HLS_msn={msn}"))
        .expect("blocking reload");
    assert_eq!(blocked.status, 200);
    assert!(
        blocked.text().lines().any(|l| l == want),
        "blocking reload for msn {msn} answered without it:\n{}",
        blocked.text()
    );
    assert_eq!(
        srv.get(&format!("{media}?_HLS_msn={}", msn + 10))
            .unwrap()
            .status,
        400,
        "msn far ahead"
    );
    assert_eq!(
        srv.get(&format!("{media}?_HLS_part=1")).unwrap().status,
        400
    );

    assert!(publisher.wait().status.success());
    thread::sleep(Duration::from_millis(300));

    // Ended: each segment is exactly its parts back to back; init + every part plays.
    let text = srv.get(media).unwrap().text();
    assert!(
        text.contains("#EXT-X-ENDLIST") && preload_hint(&text).is_none(),
        "{text}"
    );
    let seg1 = srv.get(&format!("/cmaf/live/1_2/{boot}_1.m4s")).unwrap();
    assert_eq!(seg1.status, 200);
    let mut joined = Vec::new();
    for i in 0.. {
        let r = srv
            .get(&format!("/cmaf/live/1_2/{boot}_1.{i}.m4s"))
            .unwrap();
        if r.status != 200 {
            break;
        }
        joined.extend_from_slice(&r.body);
    }
    assert!(
        joined == seg1.body,
        "segment 1 is not the concatenation of its parts"
    );
    let mut all = srv.get("/cmaf/live/1_2/init.mp4").unwrap().body;
    for k in 0..5 {
        for i in 0.. {
            let r = srv
                .get(&format!("/cmaf/live/1_2/{boot}_{k}.{i}.m4s"))
                .unwrap();
            if r.status != 200 {
                assert!(i >= 5, "segment {k} has only {i} parts");
                break;
            }
            all.extend_from_slice(&r.body);
        }
    }
    let file = srv.dir.join("parts.mp4");
    std::fs::write(&file, &all).unwrap();
    let out = ffmpeg_framecrc(&srv.dir, "parts", &file.display().to_string(), &[], 30).wait();
    assert_every_frame(&out, "ffmpeg on init + every LL-HLS part");
}
