//! DVR timeshift on a live stream with a 60 s window: a progressive viewer asking for
//! `?start=-30000` gets frames from 30 s behind live (the keyframe at or before), every one
//! of them from there on, while a viewer without it starts at the live edge; rtmpdump asking
//! for 10 s into the stream (RTMP play's start) gets the keyframe nearest it; the HLS playlist
//! covers the window. A 10-minute window with a 16 MiB memory budget spills to disk (the
//! buffer's resident memory stays near the budget) and its start and middle still play.
use serde_json::json;
use sluice_e2e::*;
use std::time::Duration;

#[test]
fn a_viewer_starts_30_s_behind_live_within_the_dvr_window() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["live"] = json!({"name": "live", "source": "push://", "DVR": 60000});
    });
    // Four plays of the 10 s fixture, at real time.
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        3,
        60,
    );
    srv.wait_live("live");
    std::thread::sleep(Duration::from_secs(34));
    let behind = ffmpeg_framecrc(
        &srv.dir,
        "behind",
        &srv.http_url("/live.ts?start=-30000"),
        &["-copyts"],
        6,
    );
    // -copyts: the stream's own timestamps, comparable between the two.
    let at_live = ffmpeg_framecrc(&srv.dir, "live", &srv.http_url("/live.ts"), &["-copyts"], 6);
    // RTMP: rtmpdump asks for 10 s into the stream (play's start), within the window.
    let args: Vec<String> = [
        "-m",
        "5",
        "-r",
        &srv.rtmp_url("live"),
        "-A",
        "10",
        "-B",
        "14",
        "-o",
        "-",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let dump = spawn_client(&srv.dir, "rtmpdump-dvr", 10, "rtmpdump", &args);
    let pl = srv.get("/hls/live/index.m3u8").unwrap();
    let text = pl.text();
    let variant = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    let media = srv.get(&format!("/hls/live/{variant}")).unwrap().text();
    let covered: f64 = media
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum();
    let dump = dump.wait();
    let tags = parse_flv_timed(&dump.chunks).expect("rtmpdump's FLV");
    let video = flv_frames(&tags, 9);
    // librtmp writes the stream's timestamps plus its --start: the keyframe nearest 10 s.
    assert!(
        video.len() >= 50 && video[0].key && (19_000..=21_000).contains(&video[0].ts),
        "{} frames, first {:?}\n{}",
        video.len(),
        video.first(),
        dump.describe()
    );
    let behind = Capture::from_output(&behind.wait());
    let at_live = Capture::from_output(&at_live.wait());
    stop_client(publisher);
    let (b, l) = (behind.video_ms(), at_live.video_ms());
    assert!(
        !b.is_empty() && !l.is_empty(),
        "{} / {}",
        behind.summary(),
        at_live.summary()
    );
    let lag = l[0] - b[0];
    eprintln!("DVR viewer starts {lag} ms behind the live viewer; HLS covers {covered:.1} s");
    assert!((28_000..=33_000).contains(&lag), "{lag} ms behind live");
    assert!(behind.video()[0].key, "starts on a keyframe");
    // From there on, every frame: 40 ms steps (49 at the publisher's loop joins).
    assert!(
        b.windows(2).all(|w| matches!(w[1] - w[0], 40 | 49)),
        "{}",
        behind.summary()
    );
    // It catches up faster than real time: more frames in 6 s than the live viewer.
    assert!(b.len() > l.len() + 50, "{} vs {}", b.len(), l.len());
    assert!(covered >= 32.0, "the playlist covers {covered} s:\n{media}");
}

/// The resident set of a process (kB, from /proc).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A 10-minute DVR window with a 16 MiB memory budget: ten minutes of media (about 75 MB,
/// published faster than real time) are held, the buffer's resident memory stays near the
/// budget (the rest was spilled to its file on disk), and a viewer that starts at the
/// window's first keyframe gets its frames, read back from disk.
#[test]
fn a_long_window_spills_to_disk_and_its_start_still_plays() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["dvr_memory_mib"] = json!(16);
        cfg["streams"]["live"] = json!({"name": "live", "source": "push://", "DVR": 600_000});
    });
    // 60 plays of the 10 s fixture, as fast as ffmpeg sends.
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-stream_loop",
        "59",
        "-i",
        fixture("bframes.flv").to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "flv",
        &srv.rtmp_url("live"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let publish = spawn_client(&srv.dir, "fast-publisher", 120, "ffmpeg", &args).wait();
    assert!(publish.status.success(), "{}", publish.describe());
    let buffer = srv
        .procs()
        .into_iter()
        .find(|p| p.comm == "buffer")
        .unwrap_or_else(|| panic!("no buffer: {:?}", srv.procs()));
    let rss = rss_kib(buffer.pid);
    eprintln!("buffer RSS after 600 s of media with a 16 MiB budget: {rss} KiB");
    assert!(rss < 48 * 1024, "RSS {rss} KiB");
    // The window's start: DTS 0 (the first keyframe), absolute.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "start",
        &srv.http_url("/live.ts?start=0"),
        &["-copyts"],
        6,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let v = cap.video_ms();
    assert!(v.len() >= 250, "{}", cap.summary());
    let first = v[0];
    assert!(
        first < 2_000,
        "the window starts at {first} ms: {}",
        cap.summary()
    );
    // And a time in the middle of the spilled part, behind live.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "middle",
        &srv.http_url("/live.flv?start=-300000"),
        &[],
        6,
    )
    .wait();
    assert!(
        Capture::from_output(&out).video().len() >= 250,
        "{}",
        out.describe()
    );
}

/// The media playlist a master playlist at `base/index.m3u8` names first.
fn first_media_playlist(srv: &Server, base: &str) -> String {
    let master = srv.get(&format!("{base}/index.m3u8")).unwrap().text();
    let uri = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap_or_else(|| panic!("{master}"))
        .to_string();
    srv.get(&format!("{base}/{uri}")).unwrap().text()
}

fn media_sequence(pl: &str) -> u64 {
    pl.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{pl}"))
}

fn seconds_listed(pl: &str) -> f64 {
    pl.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum()
}

/// `"dvr_playlist": "event"`: the HLS playlists (TS and fMP4 segments) say
/// `#EXT-X-PLAYLIST-TYPE:EVENT` and keep their first segment while new ones are added,
/// although the stream's `DVR` of 6 s would have dropped it; a sliding stream's playlist
/// moves on and names no type.
#[test]
fn an_event_playlist_keeps_its_start() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["live"] = json!({
            "name": "live", "source": "push://", "DVR": 6000, "dvr_playlist": "event"
        });
        cfg["streams"]["slide"] = json!({"name": "slide", "source": "push://", "DVR": 6000});
    });
    let publishers: Vec<Client> = ["live", "slide"]
        .iter()
        .map(|s| {
            ffmpeg_publish_loop(
                &srv.dir,
                &format!("publisher-{s}"),
                &fixture("bframes.flv"),
                &srv.rtmp_url(s),
                1,
                30,
            )
        })
        .collect();
    srv.wait_live("live");
    srv.wait_live("slide");
    std::thread::sleep(Duration::from_secs(5));
    let early = first_media_playlist(&srv, "/hls/live");
    let early_slide = first_media_playlist(&srv, "/hls/slide");
    std::thread::sleep(Duration::from_secs(10));
    let late = first_media_playlist(&srv, "/hls/live");
    let late_slide = first_media_playlist(&srv, "/hls/slide");
    let cmaf = first_media_playlist(&srv, "/cmaf/live");
    for p in publishers {
        stop_client(p);
    }
    assert!(early.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{early}");
    assert!(late.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{late}");
    assert!(cmaf.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{cmaf}");
    assert_eq!(
        media_sequence(&late),
        media_sequence(&early),
        "{early}\n{late}"
    );
    assert!(seconds_listed(&late) >= 12.0, "{late}");
    assert!(!late_slide.contains("PLAYLIST-TYPE"), "{late_slide}");
    assert!(
        media_sequence(&late_slide) > media_sequence(&early_slide),
        "{early_slide}\n{late_slide}"
    );
    assert!(seconds_listed(&late_slide) < 12.0, "{late_slide}");
}
