//! MistServer's stream info (`/json_S.js`, `/info_S.js`) and the player page: the tracks
//! under MistServer's keys, a source for every output that serves the stream (sorted as
//! MistServer sorts them, each URL answering), the offline and not-found errors, and the
//! vendored player scripts.
use serde_json::Value;
use sluice_e2e::*;

#[test]
fn stream_info_lists_tracks_and_working_sources() {
    let srv = Server::start();
    // Configured but nobody publishes: MistServer's offline error, which its player polls on.
    let off = srv.get("/json_live.js").expect("json_live.js");
    assert_eq!(off.status, 200);
    let v: Value = serde_json::from_slice(&off.body).unwrap();
    assert_eq!(v["error"], "Stream is offline", "{v}");
    let missing = srv.get("/json_nosuch.js").expect("json_nosuch.js");
    assert_eq!(missing.status, 404);
    let v: Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(v["error"], "Could not retrieve stream. Sorry.", "{v}");
    assert_eq!(srv.get("/nosuch.html").unwrap().status, 404);

    let (publisher, _) = publish_fixture_until(&srv, "live", "/hls/live/index.m3u8");
    let r = srv.get("/json_live.js").unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["type"], "live", "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    let video = &v["meta"]["tracks"]["video_H264_640x360_25fps_1"];
    let audio = &v["meta"]["tracks"]["audio_AAC_2ch_44100hz_2"];
    assert_eq!(video["codec"], "H264", "{v}");
    assert_eq!(
        video["init"].as_str().map(|s| s.chars().next()),
        Some(Some('\u{1}'))
    );
    assert_eq!(audio["codec"], "AAC", "{v}");
    assert_eq!(audio["rate"], 44100, "{v}");
    assert!(video["lastms"].as_u64() > video["firstms"].as_u64(), "{v}");
    assert_eq!(v["meta"]["bframes"], 1, "{v}");
    let sources = v["source"].as_array().expect("source list");
    let types: Vec<&str> = sources.iter().filter_map(|s| s["type"].as_str()).collect();
    for want in [
        "html5/application/vnd.apple.mpegurl",
        "html5/application/vnd.apple.mpegurl;version=7",
        "dash/video/mp4",
        "html5/application/vnd.ms-sstr+xml",
        "flash/11",
        "flash/7",
        "html5/video/mp4",
        "html5/video/mpeg",
        "html5/audio/aac",
    ] {
        assert!(types.contains(&want), "no {want} source: {types:?}");
    }
    // Sorted by simul_tracks, then priority, descending.
    let keys: Vec<(u64, u64)> = sources
        .iter()
        .map(|s| {
            (
                s["simul_tracks"].as_u64().unwrap(),
                s["priority"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{keys:?}");
    assert_eq!(sources[0]["type"], "html5/application/vnd.apple.mpegurl");
    // Every manifest or playlist source answers at its URL.
    for s in sources {
        let rel = s["relurl"].as_str().unwrap();
        assert_eq!(
            s["url"].as_str().unwrap(),
            srv.http_url(&format!("/{rel}")),
            "{s}"
        );
        if rel.ends_with(".m3u8")
            || rel.ends_with(".mpd")
            || rel.ends_with("Manifest")
            || rel.ends_with(".f4m")
        {
            let r = srv.get(&format!("/{rel}")).unwrap();
            assert_eq!(r.status, 200, "{rel}: {}", r.text());
        }
    }

    let js = srv.get("/info_live.js").unwrap();
    assert_eq!(
        js.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    let text = js.text();
    assert!(
        text.starts_with("// Generating info code for stream live"),
        "{text}"
    );
    assert!(
        text.contains("if (!mistvideo){var mistvideo = {};}"),
        "{text}"
    );
    let body = text
        .split_once("mistvideo[\"live\"] = ")
        .map(|x| x.1.trim_end().trim_end_matches(';'))
        .expect("mistvideo assignment");
    let again: Value = serde_json::from_str(body).unwrap();
    // The same tracks; their ends and rates may have moved on between the two requests
    // (the last packets of the publish may still be arriving).
    let fixed = |v: &Value| {
        let mut t = v["meta"]["tracks"].clone();
        for (_, track) in t.as_object_mut().unwrap().iter_mut() {
            for k in ["lastms", "bps", "maxbps"] {
                track.as_object_mut().unwrap().remove(k);
            }
        }
        t
    };
    assert_eq!(fixed(&again), fixed(&v));

    let page = srv.get("/live.html").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("var stream = \"live\";"),
        "{}",
        page.text()
    );
    for (script, marker) in [
        ("/hlsjs.js", "Hls"),
        ("/dashjs.js", "dashjs"),
        ("/mpegts.js", "mpegts"),
    ] {
        let r = srv.get(script).unwrap();
        assert_eq!(r.status, 200, "{script}");
        assert!(
            r.body.len() > 100_000 && r.text().contains(marker),
            "{script}"
        );
    }
    assert!(publisher.wait().status.success());
}
