//! HEVC end to end. The source is `hevc.ts` (x265 Main with B-frames + AAC in MPEG-TS, made
//! by scripts/make-fixtures.sh): a file source held whole as an ended stream (`"loop":
//! false`) and the same file looped as a live stream. Every output that can carry HEVC gives
//! ffmpeg, ffprobe and GStreamer every frame of the source with its presentation time;
//! those that cannot (FLV, HDS, Smooth) answer 415 naming the codec and the format.
use serde_json::json;
use sluice_e2e::*;

/// The source's streams as ffmpeg reads the file itself.
fn source() -> Vec<StreamPackets> {
    let src = fixture_streams("hevc.ts");
    assert_eq!(src.len(), 2, "{src:?}");
    assert_eq!(
        (src[0].codec.as_str(), src[0].packets, src[0].keyframes),
        ("hevc", 250, 5)
    );
    assert_eq!((src[1].codec.as_str(), src[1].packets), ("aac", 432));
    src
}

fn server() -> Server {
    Server::start_with_streams(json!({
        "hevc": {"name": "hevc", "source": fixture("hevc.ts").to_str().unwrap(), "loop": false},
        "hevclive": {"name": "hevclive", "source": fixture("hevc.ts").to_str().unwrap()}
    }))
}

#[test]
fn hevc_reaches_every_output_that_can_carry_it() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let src = source();
    let mut srv = server();

    // Every packet with its presentation time, through each output that carries HEVC.
    for path in [
        "/hls/hevc/index.m3u8",
        "/cmaf/hevc/index.m3u8",
        "/hevc.ts",
        "/hevc.mp4",
    ] {
        let out = ffmpeg_framecrc(&srv.dir, "hevc", &srv.http_url(path), &[], 60).wait();
        let got = Capture::from_output(&out).per_stream();
        let what = format!("{path}: {}", out.describe());
        assert_eq!(got.len(), 2, "{what}");
        got[0].assert_matches(&src[0], 1, &format!("{path} video"));
        got[1].assert_matches(&src[1], 1, &format!("{path} audio"));
        let reordered = {
            let p = &got[0].pts_ms;
            p.windows(2).filter(|w| w[1] < w[0]).count()
        };
        assert!(
            reordered >= 40,
            "{path}: B-frame order lost ({reordered} reorderings)"
        );
    }

    // Decoded, not just demuxed: the parameter sets and hvcC are right.
    for path in ["/hevc.mp4", "/hls/hevc/index.m3u8"] {
        let url = srv.http_url(path);
        let out = spawn_client(
            &srv.dir,
            "decode",
            60,
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-count_frames",
                "-show_entries",
                "stream=codec_name,codec_tag_string,width,height,nb_read_frames",
                "-of",
                "csv=p=0",
                &url,
            ]
            .map(String::from),
        )
        .wait();
        let text = out.stdout_text();
        let line = text.lines().find(|l| !l.is_empty()).unwrap_or("");
        assert!(
            line.starts_with("hevc,") && line.ends_with(",640,360,250"),
            "{path}: {line}\n{}",
            out.describe()
        );
        if path.ends_with(".mp4") {
            assert!(line.contains(",hvc1,"), "{path}: sample entry {line}");
        }
    }

    // DASH through GStreamer: dashdemux, qtdemux, h265parse.
    let g = gst_count(
        &srv.dir,
        "gst-dash",
        60,
        &format!(
            "souphttpsrc location={} ! dashdemux name=d d.video_00 ! queue ! qtdemux ! \
             h265parse ! fakesink name=video d.audio_00 ! queue ! qtdemux ! aacparse ! \
             fakesink name=audio",
            srv.http_url("/cmaf/hevc/index.mpd")
        ),
    )
    .wait();
    let r = parse_gst(&g).expect("gst result");
    assert!(r.eos && r.error.is_none(), "{r:?}");
    assert_eq!(
        (r.sinks["video"].buffers, r.sinks["video"].keyframes),
        (250, 5),
        "{r:?}"
    );
    assert_eq!(r.sinks["audio"].buffers, 432, "{r:?}");

    // Manifests name the codec as RFC 6381 / ISO/IEC 14496-15 Annex E do.
    let master = srv.get("/hls/hevc/index.m3u8").unwrap().text();
    assert!(
        master.contains("CODECS=\"hvc1.1.6.L63.90,mp4a.40.2\""),
        "{master}"
    );
    let mpd = srv.get("/cmaf/hevc/index.mpd").unwrap().text();
    assert!(mpd.contains("codecs=\"hvc1.1.6.L63.90\""), "{mpd}");

    // Formats without HEVC refuse it, naming codec and format.
    for (path, format) in [
        ("/hevc.flv", "FLV"),
        ("/dynamic/hevc/manifest.f4m", "HDS"),
        ("/cmaf/hevc/Manifest", "Smooth"),
    ] {
        let r = srv.get(path).unwrap();
        assert_eq!(r.status, 415, "{path}");
        let body = r.text();
        assert!(
            body.contains("HEVC") && body.contains(format),
            "{path}: {body}"
        );
    }
    srv.stop();
}

#[test]
fn looped_hevc_file_plays_live_across_the_loop() {
    require_tools(&["ffmpeg"]);
    let mut srv = server();
    // 13 s of the live stream crosses the end of the 10 s file at least once.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "live",
        &srv.http_url("/hevclive.ts"),
        &["-t", "13"],
        40,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("hevc"), "{diag}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    let v = cap.video();
    assert!(v.len() >= 300, "{diag}");
    assert!(v[0].key, "live viewer starts on a keyframe: {diag}");
    let (gap, monotonic) = cap.video_dts_check();
    // 25 fps in 90 kHz: 3600 ticks a frame; the loop point adds no gap beyond a frame.
    assert!(monotonic && gap <= 2 * 3600, "gap {gap}: {diag}");
    srv.stop();
}
