//! VOD file sources: FLV, TS, MP4 with `moov` after `mdat` (as ffmpeg writes it), MP4 with
//! `moov` first (`-movflags +faststart`), MOV, and DTSC (written by `sluice-convert`), each
//! made from the B-frame fixture and played whole over RTMP, HLS, DASH and progressive MP4
//! with every frame (250 video with their composition offsets, 432 audio). A file that is
//! not what its extension says is refused with a reason, and the server goes on.
use serde_json::json;
use sluice_e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture remuxed by ffmpeg into `dir/name` with `extra` output options.
fn remux(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(fixture("bframes.flv"))
        .args(["-c", "copy"])
        .args(extra)
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(st.success(), "ffmpeg remux to {name}");
    out
}

#[test]
fn every_file_format_plays_whole_over_rtmp_hls_dash_and_mp4() {
    require_tools(&["ffmpeg"]);
    require_gst();
    let dir = unique_temp_dir("vod-files");
    let ts = remux(&dir, "clip.ts", &[]);
    let mp4_end = remux(&dir, "end.mp4", &[]);
    let mp4_start = remux(&dir, "start.mp4", &["-movflags", "+faststart"]);
    let mov = remux(&dir, "clip.mov", &[]);
    assert!(!mp4_moov_first(&mp4_end) && mp4_moov_first(&mp4_start));
    let dtsc_file = dir.join("clip.dtsc");
    sluice_convert(&fixture("bframes.flv"), &dtsc_file);
    let files = [
        ("flv", fixture("bframes.flv")),
        ("ts", ts),
        ("mp4end", mp4_end),
        ("mp4start", mp4_start),
        ("mov", mov),
        ("dtsc", dtsc_file),
    ];
    let srv = Server::start_with_config(|cfg| {
        for (name, path) in &files {
            cfg["streams"][*name] =
                json!({"name": name, "source": path.to_str().unwrap(), "loop": false});
        }
    });
    for (name, _) in &files {
        // The four players of a format at once; RTMP goes at real time plus the client's
        // buffer, the others as fast as they read.
        let players = [
            ("RTMP", srv.rtmp_url(name)),
            ("HLS", srv.http_url(&format!("/hls/{name}/index.m3u8"))),
            ("progressive MP4", srv.http_url(&format!("/{name}.mp4"))),
        ]
        .map(|(what, url)| {
            (
                what,
                ffmpeg_framecrc(&srv.dir, &format!("{name}-{what}"), &url, &[], 40),
            )
        });
        // DASH with GStreamer: ffmpeg's DASH demuxer drops the last AAC frame of a static
        // MPD (431 of 432), GStreamer's dashdemux does not.
        let dash = gst_count(
            &srv.dir,
            &format!("{name}-dash"),
            40,
            &format!(
                "souphttpsrc location={} ! dashdemux name=d d.video_00 ! queue ! qtdemux ! \
                 h264parse ! fakesink name=video d.audio_00 ! queue ! qtdemux ! aacparse ! \
                 fakesink name=audio",
                srv.http_url(&format!("/cmaf/{name}/index.mpd"))
            ),
        );
        for (what, client) in players {
            assert_every_frame(&client.wait(), &format!("{name} over {what}"));
        }
        let r = parse_gst(&dash.wait()).expect("gst result");
        assert!(r.eos && r.error.is_none(), "{name} over DASH: {r:?}");
        assert_eq!(r.sinks["video"].buffers, 250, "{name} over DASH: {r:?}");
        assert_eq!(r.sinks["video"].keyframes, 5, "{name} over DASH: {r:?}");
        assert_eq!(r.sinks["audio"].buffers, 432, "{name} over DASH: {r:?}");
    }
}

#[test]
fn a_file_that_is_not_what_its_extension_says_is_refused() {
    let dir = unique_temp_dir("vod-bad");
    let fake = dir.join("fake.mp4");
    std::fs::write(&fake, b"<html>not a movie</html>").unwrap();
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["fake"] =
            json!({"name": "fake", "source": fake.to_str().unwrap(), "loop": false});
    });
    let r = srv.get("/fake.ts").unwrap();
    assert!(r.status >= 400, "{}: {}", r.status, r.text());
    assert!(
        poll(std::time::Duration::from_secs(5), || srv
            .stderr_text()
            .contains("no moov box")
            .then_some(()))
        .is_some(),
        "{}",
        srv.stderr_tail(20)
    );
    // The server goes on: the demo stream plays.
    let info = ffprobe(&srv.dir, "demo", &srv.http_url("/demo.ts"), &[], 15).unwrap();
    assert_eq!(info.len(), 2);
}

#[test]
fn a_folder_serves_each_file_as_base_plus_name_within_the_media_folders() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("vod-folder");
    let media = dir.join("media");
    std::fs::create_dir_all(&media).unwrap();
    remux(&media, "clip.mp4", &[]);
    std::fs::copy(fixture("bframes.flv"), media.join("clip.flv")).unwrap();
    let outside = dir.join("outside.flv");
    std::fs::copy(fixture("bframes.flv"), &outside).unwrap();
    let folder = format!("{}/", media.display());
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["media_folders"] = json!([media.to_str().unwrap()]);
        cfg["streams"]["vod"] = json!({"name": "vod", "source": folder, "loop": false});
        cfg["streams"]["sneaky"] =
            json!({"name": "sneaky", "source": outside.to_str().unwrap(), "loop": false});
    });
    // Each file of the folder is a stream of its own, played whole.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "folder-mp4",
        &srv.rtmp_url("vod+clip.mp4"),
        &[],
        30,
    )
    .wait();
    assert_every_frame(&out, "vod+clip.mp4 over RTMP");
    let out = ffmpeg_framecrc(
        &srv.dir,
        "folder-flv",
        &srv.http_url("/hls/vod+clip.flv/index.m3u8"),
        &[],
        30,
    )
    .wait();
    assert_every_frame(&out, "vod+clip.flv over HLS");
    // The folder itself, a missing file and a hidden name are not streams.
    for path in ["/vod.ts", "/vod+missing.mp4.ts", "/vod+.hidden.ts"] {
        let r = srv.get(path).unwrap();
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    // A configured source outside the media folders is refused, with the reason.
    let r = srv.get("/sneaky.ts").unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("outside the media folders"),
        "{}",
        r.text()
    );
    // And cannot be added through the API; nothing changes.
    let err = srv
        .api(&json!({"addstream": {"evil": {"source": "/etc/passwd"}}}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the media folders"), "{err}");
    let streams = srv.api(&json!({"streams": true})).unwrap();
    assert!(streams["streams"].get("evil").is_none(), "{streams}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `?start=` and `?end=` (ms) on the progressive outputs of a stored stream: from the
/// keyframe at 6 s (the fixture has one every 2 s) to the end, or to 8 s.
#[test]
fn progressive_outputs_start_and_end_where_asked() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod", "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
        cfg["streams"]["loop"] =
            json!({"name": "loop", "source": fixture("bframes.flv").to_str().unwrap()});
    });
    // An ended stream's FLV gives its length in onMetaData, which is all ffprobe has to go by
    // over HTTP (it cannot seek to the last tag): from where the response starts to where it
    // ends. The file's last packet (AAC) is at 10.065 s, and a video frame (40 ms) is added
    // for the length of the last, as in the HLS playlist. A live one (the looped file) has no
    // length.
    for (path, want) in [
        ("/vod.flv", Some(10.105)),
        ("/vod.flv?start=6000", Some(4.105)),
        ("/vod.flv?end=4000", Some(4.0)),
        ("/loop.flv", None),
    ] {
        let (got, out) = probed_duration(&srv, &srv.http_url(path));
        match want {
            Some(w) => assert!(
                got.is_some_and(|g| (g - w).abs() < 0.001),
                "{path}: duration {got:?}, not {w}: {}",
                out.describe()
            ),
            None => assert!(
                out.status.success() && out.stdout_text().trim() == "N/A",
                "{path}: {}",
                out.describe()
            ),
        }
    }
    for (path, frames) in [
        ("/vod.flv?start=6000", 100),
        ("/vod.ts?start=6000", 100),
        ("/vod.flv?start=6500", 100),
        ("/vod.ts?start=6000&end=8000", 50),
        ("/vod.flv?end=4000", 100),
    ] {
        let out = ffmpeg_framecrc(&srv.dir, "seek", &srv.http_url(path), &[], 20).wait();
        let cap = Capture::from_output(&out);
        let v = cap.video();
        assert_eq!(v.len(), frames, "{path}: {}", cap.summary());
        assert!(v[0].key, "{path}: the first frame is not a keyframe");
        assert_eq!(
            cap.video_keyframes(),
            frames / 50,
            "{path}: {}",
            cap.summary()
        );
    }
}

/// The duration ffprobe finds at `url` (s; `None` when it finds none), and its run. Over
/// HTTP and RTMP an FLV's `onMetaData` is all it has to go by.
fn probed_duration(srv: &Server, url: &str) -> (Option<f64>, ClientOutput) {
    let args = [
        "-v",
        "error",
        "-show_entries",
        "format=duration",
        "-of",
        "csv=p=0",
        url,
    ];
    let out = spawn_client(&srv.dir, "duration", 20, "ffprobe", &args.map(String::from)).wait();
    (out.stdout_text().trim().parse::<f64>().ok(), out)
}

/// RTMP seeking on a stored stream with ffmpeg as the player: `-ss 6` makes ffmpeg send a
/// `seek` after `play` (its `rtmpproto` drops what arrives until `NetStream.Seek.Notify`),
/// and the media then starts at the keyframe at 6 s: the 100 frames of the last two GOPs.
/// rtmpdump's `--start` asks the same through `play`'s start argument.
#[test]
fn rtmp_seek_starts_at_the_keyframe_at_6s() {
    require_tools(&["ffmpeg", "ffprobe", "rtmpdump"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod", "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
    });
    // The stream's length in onMetaData: where it ends (RTMP timestamps are the stream's).
    let (d, out) = probed_duration(&srv, &srv.rtmp_url("vod"));
    assert_eq!(d, Some(10.105), "{}", out.describe());
    let out = ffmpeg_framecrc(&srv.dir, "ss", &srv.rtmp_url("vod"), &["-ss", "6"], 30).wait();
    let cap = Capture::from_output(&out);
    let ms = cap.video_ms();
    let v = cap.video();
    assert_eq!(v.len(), 100, "{}\n{}", cap.summary(), out.describe());
    assert!(v[0].key, "the first frame is not a keyframe");
    assert_eq!(cap.video_keyframes(), 2, "{}", cap.summary());
    // ffmpeg's output clock starts at the -ss point.
    assert!((-200..=200).contains(&ms[0]), "first video at {} ms", ms[0]);
    assert!(cap.audio().len() > 150, "{}", cap.summary());
    assert!(
        srv.stderr_text().contains("seek to 6000 ms"),
        "{}",
        srv.stderr_tail(20)
    );

    let args: Vec<String> = ["-m", "5", "-r", &srv.rtmp_url("vod"), "-A", "6", "-o", "-"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let dump = spawn_client(&srv.dir, "rtmpdump-start", 30, "rtmpdump", &args).wait();
    let tags = parse_flv_timed(&dump.chunks).expect("rtmpdump's FLV");
    let video: Vec<_> = flv_frames(&tags, 9);
    assert_eq!(video.len(), 100, "{}", dump.describe());
    // rtmpdump writes the stream's timestamps plus its --start (librtmp rebases a resumed
    // download), so the keyframe at 6 s comes out at 12 s.
    assert!(video[0].key && video[0].ts == 12000, "{:?}", video[0]);
    assert_eq!(video.iter().filter(|t| t.key).count(), 2);
}

/// The `.dtsh` index: written beside the file on the first open, with the facts of the
/// shared DTSC document (on ffmpeg's MP4 with `moov` at the end, the first video key is at
/// byte 48, lasts 2000 ms, is key number 0 with 50 parts at time 0, and its first part is
/// the first frame's size, 40 ms, offset 80 ms); reused, unchanged, on the next open; written
/// again when the file changes.
#[test]
fn dtsh_index_is_written_once_reused_and_renewed_when_the_file_changes() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("vod-dtsh");
    let mp4 = remux(&dir, "clip.mp4", &[]);
    let dtsh = dir.join("clip.mp4.dtsh");
    let open = |label: &str| -> String {
        let mut srv = Server::start_with_config(|cfg| {
            cfg["streams"]["clip"] =
                json!({"name": "clip", "source": mp4.to_str().unwrap(), "loop": false});
        });
        let out = ffmpeg_framecrc(&srv.dir, label, &srv.http_url("/clip.ts"), &[], 30).wait();
        assert_every_frame(&out, label);
        let log = srv.stderr_text();
        srv.stop();
        log
    };
    let log = open("first");
    assert!(
        log.contains("clip.mp4.dtsh written (none was there)"),
        "{log}"
    );
    let first = std::fs::read(&dtsh).expect("the .dtsh beside the file");
    let first_mtime = std::fs::metadata(&dtsh).unwrap().modified().unwrap();

    // The facts, read with a decoder written from the document.
    assert_eq!(&first[..4], b"DTSC");
    assert_eq!(be_uint(&first[4..8]) as usize, first.len() - 8);
    let mut at = 8;
    let top = dtsc_value(&first, &mut at);
    assert_eq!(at, first.len());
    assert!(matches!(top.get("vod"), Dv::Int(1)));
    let Dv::Obj(tracks) = top.get("tracks") else {
        panic!("tracks")
    };
    let (name, video) = tracks
        .iter()
        .find(|(n, _)| n.starts_with("video_H264"))
        .expect("a video track");
    assert!(name.starts_with("video_H264_640x360_25fps_"), "{name}");
    let keys = video.get("keys").bytes();
    assert_eq!(keys.len(), 5 * 25, "5 keys of 25 bytes");
    let k0 = &keys[..25];
    assert_eq!(be_uint(&k0[0..8]), 48, "first key bpos");
    assert_eq!(be_uint(&k0[8..11]), 2000, "first key duration");
    assert_eq!(be_uint(&k0[11..15]), 0, "first key number");
    assert_eq!(be_uint(&k0[15..17]), 50, "first key parts");
    assert_eq!(be_uint(&k0[17..25]), 0, "first key time");
    for (i, k) in keys.chunks(25).enumerate() {
        assert_eq!(be_uint(&k[17..25]), 2000 * i as u64, "key {i} time");
    }
    let parts = video.get("parts").bytes();
    assert_eq!(parts.len(), 250 * 9, "one 9-byte part per frame");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=size",
        ])
        .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(&mp4)
        .output()
        .unwrap();
    let size0: u64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        (
            be_uint(&parts[0..3]),
            be_uint(&parts[3..6]),
            be_uint(&parts[6..9])
        ),
        (size0, 40, 80),
        "first part: size, duration, offset"
    );
    let keysizes = video.get("keysizes").bytes();
    assert_eq!(keysizes.len(), 5 * 4);
    let frags = video.get("fragments").bytes();
    assert_eq!(frags.len() % 13, 0);
    assert_eq!(
        be_uint(&frags[5..9]),
        1,
        "the first fragment starts at key 1 (1-based)"
    );

    // Second open: reused, not rewritten.
    let log = open("second");
    assert!(log.contains("clip.mp4.dtsh reused"), "{log}");
    assert_eq!(std::fs::read(&dtsh).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&dtsh).unwrap().modified().unwrap(),
        first_mtime
    );

    // The file changes (here: rewritten with faststart, so every byte position moves): the
    // index is older than the file and is written again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    remux(&dir, "clip.mp4", &["-movflags", "+faststart"]);
    let log = open("third");
    assert!(
        log.contains("clip.mp4.dtsh written (the file is newer)"),
        "{log}"
    );
    let third = std::fs::read(&dtsh).unwrap();
    assert_ne!(third, first);

    // A damaged index (newer than the file) is not trusted: written again, and the file
    // still plays whole.
    std::fs::write(&dtsh, &third[..third.len() / 2]).unwrap();
    let log = open("fourth");
    assert!(
        log.contains("clip.mp4.dtsh written (it was unreadable)"),
        "{log}"
    );
    assert_eq!(std::fs::read(&dtsh).unwrap(), third);
}

/// Bad file sources: a truncated FLV, TS and MP4 (`moov` first) serve what is there and end
/// cleanly; a missing file, a file of an unknown format and an MP4 cut before its `moov` are
/// refused with a 404 naming the reason, INPUT_ABORT-style, and the server goes on.
#[test]
fn truncated_files_play_what_is_there_and_bad_ones_are_refused_with_the_reason() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("vod-bad-files");
    let cut = |src: &Path, name: &str| -> PathBuf {
        let b = std::fs::read(src).unwrap();
        let out = dir.join(name);
        std::fs::write(&out, &b[..b.len() * 6 / 10]).unwrap();
        out
    };
    let flv = cut(&fixture("bframes.flv"), "cut.flv");
    let ts = cut(&remux(&dir, "whole.ts", &[]), "cut.ts");
    let mp4 = cut(
        &remux(&dir, "start.mp4", &["-movflags", "+faststart"]),
        "cut.mp4",
    );
    let nomoov = cut(&remux(&dir, "end.mp4", &[]), "nomoov.mp4");
    let unknown = dir.join("clip.xyz");
    std::fs::copy(fixture("bframes.flv"), &unknown).unwrap();
    let missing = dir.join("missing.flv");
    let streams = [
        ("cutflv", &flv),
        ("cutts", &ts),
        ("cutmp4", &mp4),
        ("nomoov", &nomoov),
        ("unknown", &unknown),
        ("missing", &missing),
    ];
    let srv = Server::start_with_config(|cfg| {
        for (name, path) in &streams {
            cfg["streams"][*name] =
                json!({"name": name, "source": path.to_str().unwrap(), "loop": false});
        }
    });
    for name in ["cutflv", "cutts", "cutmp4"] {
        let out = ffmpeg_framecrc(
            &srv.dir,
            name,
            &srv.http_url(&format!("/{name}.ts")),
            &[],
            20,
        )
        .wait();
        assert!(out.status.success(), "{}", out.describe());
        let cap = Capture::from_output(&out);
        let n = cap.video().len();
        assert!(
            (100..250).contains(&n),
            "{name}: {n} frames: {}",
            cap.summary()
        );
    }
    for (name, why) in [
        ("nomoov", "no moov box"),
        ("unknown", "unsupported file source"),
        ("missing", "missing.flv of missing does not exist"),
    ] {
        let r = srv.get(&format!("/{name}.ts")).unwrap();
        assert_eq!(r.status, 404, "{name}: {}", r.text());
        assert!(r.text().contains(why), "{name}: {}", r.text());
        assert!(
            !r.text().contains("/tmp/"),
            "a server path reached the viewer: {}",
            r.text()
        );
    }
    let info = ffprobe(&srv.dir, "demo", &srv.http_url("/demo.ts"), &[], 15).unwrap();
    assert_eq!(info.len(), 2, "the demo stream plays on");
}

/// Progressive Matroska (`/S.mkv`) of a stored stream: ffmpeg reads every frame, H.264 and
/// AAC, the five keyframes flagged, presentation times from 80 ms (the B-frame delay).
#[test]
fn matroska_plays_every_frame() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod", "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
    });
    let r = srv.get("/vod.mkv").unwrap();
    assert_eq!(r.header("content-type"), Some("video/x-matroska"));
    let out = ffmpeg_framecrc(&srv.dir, "mkv", &srv.http_url("/vod.mkv"), &[], 20).wait();
    let cap = Capture::from_output(&out);
    let d = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{d}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{d}");
    assert_eq!(cap.video().len(), 250, "{d}");
    assert_eq!(cap.video_keyframes(), 5, "{d}");
    assert_eq!(cap.audio().len(), 432, "{d}");
}
