//! Several video and audio tracks end to end. The source is `multi.ts` (scripts/
//! make-fixtures.sh): H.264 640x360 and 320x180 cut on the same GOPs, AAC English (stereo,
//! 44.1 kHz) and AAC Swedish (mono, 48 kHz), held whole as an ended stream. Each format
//! carries what it can: TS and MP4 every track; HLS a variant per video track with the audio
//! tracks as renditions; DASH a representation per track; Smooth a two-level video
//! StreamIndex and an audio StreamIndex per language; FLV and RTMP one track of each kind,
//! chosen with `?video=` / `?audio=`.
use serde_json::json;
use sluice_e2e::*;

/// The source's streams as ffmpeg reads the file itself: video, video, audio, audio.
fn source() -> Vec<StreamPackets> {
    let src = fixture_streams("multi.ts");
    let shape: Vec<(&str, usize)> = src.iter().map(|s| (s.codec.as_str(), s.packets)).collect();
    assert_eq!(
        shape,
        [("h264", 250), ("h264", 250), ("aac", 432), ("aac", 470)]
    );
    src
}

/// ffprobe's (codec, width or channels, language) per stream of `url`.
fn probe(srv: &Server, url: &str) -> Vec<(String, i64, String)> {
    let out = spawn_client(
        &srv.dir,
        "probe",
        30,
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,channels:stream_tags=language",
            "-of",
            "json",
            url,
        ]
        .map(String::from),
    )
    .wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout()).unwrap_or_default();
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                        s["width"].as_i64().or(s["channels"].as_i64()).unwrap_or(0),
                        s["tags"]["language"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn captured(srv: &Server, path: &str) -> Vec<StreamPackets> {
    let out = ffmpeg_framecrc(&srv.dir, "multi", &srv.http_url(path), &[], 60).wait();
    Capture::from_output(&out).per_stream()
}

fn assert_all_tracks(got: &[StreamPackets], src: &[StreamPackets], path: &str) {
    assert_eq!(got.len(), 4, "{path}: {got:?}");
    // Match each source stream to an output stream of the same codec and packet count.
    let mut used = [false; 4];
    for (i, want) in src.iter().enumerate() {
        let j = (0..4)
            .find(|&j| !used[j] && got[j].codec == want.codec && got[j].packets == want.packets)
            .unwrap_or_else(|| {
                panic!(
                    "{path}: no stream like source stream {i} ({}, {})",
                    want.codec, want.packets
                )
            });
        used[j] = true;
        got[j].assert_matches(want, 1, &format!("{path} stream {i}"));
    }
}

#[test]
fn every_format_carries_the_tracks_it_can() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let src = source();
    let mut srv = Server::start_with_streams(json!({
        "multi": {"name": "multi", "source": fixture("multi.ts").to_str().unwrap(), "loop": false}
    }));

    // TS and MP4: every track, languages kept (PMT ISO 639 descriptor, mdhd).
    for path in ["/multi.ts", "/multi.mp4"] {
        assert_all_tracks(&captured(&srv, path), &src, path);
        let streams = probe(&srv, &srv.http_url(path));
        let audio: Vec<(i64, &str)> = streams
            .iter()
            .filter(|s| s.0 == "aac")
            .map(|s| (s.1, s.2.as_str()))
            .collect();
        assert_eq!(audio, [(2, "eng"), (1, "swe")], "{path}: {streams:?}");
        let widths: Vec<i64> = streams
            .iter()
            .filter(|s| s.0 == "h264")
            .map(|s| s.1)
            .collect();
        assert_eq!(widths, [640, 320], "{path}: {streams:?}");
    }

    // HLS, TS and fMP4 segments: a variant per video track, the audio tracks as renditions.
    for base in ["/hls/multi", "/cmaf/multi"] {
        let master = srv.get(&format!("{base}/index.m3u8")).unwrap().text();
        let media: Vec<&str> = master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MEDIA:"))
            .collect();
        assert_eq!(media.len(), 2, "{master}");
        assert!(
            media[0].contains("LANGUAGE=\"eng\"") && media[0].contains("DEFAULT=YES"),
            "{master}"
        );
        assert!(
            media[1].contains("LANGUAGE=\"swe\"") && media[1].contains("DEFAULT=NO"),
            "{master}"
        );
        let variants: Vec<&str> = master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
            .collect();
        assert_eq!(variants.len(), 2, "{master}");
        assert!(
            variants[0].contains("RESOLUTION=640x360") && variants[0].contains("AUDIO=\"audio\""),
            "{master}"
        );
        assert!(variants[1].contains("RESOLUTION=320x180"), "{master}");
        let bw = |l: &str| -> u64 {
            l.split("BANDWIDTH=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            bw(variants[0]) > 2 * bw(variants[1]),
            "bandwidth per variant: {master}"
        );
        // ffmpeg opens every variant and rendition: all four tracks, every packet.
        let path = format!("{base}/index.m3u8");
        assert_all_tracks(&captured(&srv, &path), &src, &path);
    }

    // DASH: one adaptation set for the two video representations, one per audio language.
    // GStreamer plays both audio sets and the video set, switching representation once it
    // has measured the bandwidth (before the two shared one track_ID, it lost every frame
    // after the switch: 50 of 250).
    let mpd = srv.get("/cmaf/multi/index.mpd").unwrap().text();
    assert_eq!(mpd.matches("<AdaptationSet").count(), 3, "{mpd}");
    assert_eq!(mpd.matches("<Representation").count(), 4, "{mpd}");
    assert!(
        mpd.contains("lang=\"eng\"") && mpd.contains("lang=\"swe\""),
        "{mpd}"
    );
    let g = gst_count(
        &srv.dir,
        "gst-dash",
        60,
        &format!(
            "souphttpsrc location={} ! dashdemux name=d \
             d.video_00 ! queue ! qtdemux ! h264parse ! fakesink name=video \
             d.audio_00 ! queue ! qtdemux ! aacparse ! fakesink name=eng \
             d.audio_01 ! queue ! qtdemux ! aacparse ! fakesink name=swe",
            srv.http_url("/cmaf/multi/index.mpd")
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
    assert_eq!(
        (r.sinks["eng"].buffers, r.sinks["swe"].buffers),
        (432, 470),
        "{r:?}"
    );

    // Smooth: one video StreamIndex with both levels, one audio StreamIndex per language;
    // each level's fragments are its own, and mssdemux plays all three StreamIndexes.
    let manifest = srv.get("/cmaf/multi/Manifest").unwrap().text();
    assert_eq!(
        manifest.matches("<StreamIndex Type=\"video\"").count(),
        1,
        "{manifest}"
    );
    assert_eq!(
        manifest.matches("<StreamIndex Type=\"audio\"").count(),
        2,
        "{manifest}"
    );
    assert!(
        manifest.contains("QualityLevels=\"2\"") && manifest.contains("MaxWidth=\"320\""),
        "{manifest}"
    );
    let bitrates: Vec<&str> = manifest
        .split("<QualityLevel Index=")
        .skip(1)
        .filter(|q| q.contains("FourCC=\"H264\""))
        .map(|q| {
            q.split("Bitrate=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(bitrates.len(), 2, "{manifest}");
    let boot = manifest
        .split("Url=\"")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let sizes: Vec<usize> = bitrates
        .iter()
        .map(|b| {
            let r = srv
                .get(&format!(
                    "/cmaf/multi/{boot}/QualityLevels({b})/Fragments(video=0)"
                ))
                .unwrap();
            assert_eq!(r.status, 200, "level {b}");
            r.body.len()
        })
        .collect();
    assert!(
        sizes[0] > 2 * sizes[1],
        "the levels are different tracks: {sizes:?}"
    );
    let r = srv
        .get(&format!(
            "/cmaf/multi/{boot}/QualityLevels(7)/Fragments(video=0)"
        ))
        .unwrap();
    assert_eq!(r.status, 404, "a bit rate no level has");
    let g = gst_count(
        &srv.dir,
        "gst-mss",
        60,
        &format!(
            "souphttpsrc location={} ! mssdemux name=d \
             d.video_00 ! queue ! qtdemux ! h264parse ! fakesink name=video \
             d.audio_00 ! queue ! qtdemux ! aacparse ! fakesink name=eng \
             d.audio_01 ! queue ! qtdemux ! aacparse ! fakesink name=swe",
            srv.http_url("/cmaf/multi/Manifest")
        ),
    )
    .wait();
    let r = parse_gst(&g).expect("gst result");
    assert!(r.eos && r.error.is_none(), "{r:?}");
    assert_eq!(r.sinks["video"].buffers, 250, "{r:?}");
    assert_eq!(
        (r.sinks["eng"].buffers, r.sinks["swe"].buffers),
        (432, 470),
        "{r:?}"
    );

    // FLV carries one track of each kind: the first by default, or the ones selected.
    let flv = captured(&srv, "/multi.flv");
    assert_eq!(
        (flv.len(), flv[0].packets, flv[1].packets),
        (2, 250, 432),
        "{flv:?}"
    );
    flv[0].assert_matches(&src[0], 1, "/multi.flv video");
    let flv = captured(&srv, "/multi.flv?video=2&audio=swe");
    assert_eq!(
        (flv.len(), flv[0].packets, flv[1].packets),
        (2, 250, 470),
        "{flv:?}"
    );
    flv[1].assert_matches(&src[3], 1, "/multi.flv?audio=swe audio");
    let streams = probe(&srv, &srv.http_url("/multi.flv?video=2&audio=swe"));
    assert_eq!(
        streams
            .iter()
            .map(|s| (s.0.as_str(), s.1))
            .collect::<Vec<_>>(),
        [("h264", 320), ("aac", 1)],
        "{streams:?}"
    );
    let aac = captured(&srv, "/multi.aac?audio=swe");
    assert_eq!((aac.len(), aac[0].packets), (1, 470), "{aac:?}");
    let none = srv.get("/multi.ts?video=none&audio=fre").unwrap();
    assert_eq!(none.status, 404, "a selection of nothing");
    // RTMP play takes the same selectors in the stream name.
    let streams = probe(
        &srv,
        &format!("{}?video=2&audio=swe", srv.rtmp_url("multi")),
    );
    assert_eq!(
        streams
            .iter()
            .map(|s| (s.0.as_str(), s.1))
            .collect::<Vec<_>>(),
        [("h264", 320), ("aac", 1)],
        "RTMP: {streams:?}"
    );
    srv.stop();
}
