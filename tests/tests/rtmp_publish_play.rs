//! RTMP publish with ffmpeg, play with ffmpeg/ffprobe: every packet, codecs, B-frame
//! composition offsets.
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

const VIDEO: usize = 250;
const KEYFRAMES: usize = 5;
const AUDIO: usize = 432;

fn publish_and_play(fixture_name: &str, bframes: bool) {
    require_tools(&["ffmpeg", "ffprobe", "timeout"]);
    let file = fixture(fixture_name);
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    // Players first: a configured push stream waits up to 10 s for its publisher.
    let p1 = ffmpeg_framecrc(&srv.dir, "player1", &url, &[], 40);
    let p2 = ffmpeg_framecrc(&srv.dir, "player2", &url, &[], 40);
    let probe = ffprobe_spawn(&srv.dir, "ffprobe", &url, &[], false, 40);
    let waiting = srv.wait_rtmp_players(3, Duration::from_secs(2));
    eprintln!("{waiting} `RTMP play` children before the publish");

    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);
    thread::sleep(Duration::from_secs(4));
    let active = srv.active_streams();
    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed:\n{}",
        pub_out.describe()
    );
    let active = active.expect("API active_streams");
    assert!(
        active.iter().any(|s| s == "live"),
        "`live` not in active_streams {active:?} during the publish"
    );

    for p in [p1, p2] {
        let out = p.wait();
        let cap = Capture::from_output(&out);
        let diag = format!("{}\n{}", cap.summary(), out.describe());
        assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
        assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
        assert_eq!(cap.video().len(), VIDEO, "video packets: {diag}");
        assert_eq!(cap.video_keyframes(), KEYFRAMES, "keyframes: {diag}");
        // Without B-frames the source's first audio frame (t=0) precedes the first keyframe
        // (t=23 ms); a server that starts on a keyframe may skip that one frame.
        let audio_min = if bframes { AUDIO } else { AUDIO - 1 };
        assert!(
            (audio_min..=AUDIO).contains(&cap.audio().len()),
            "audio packets {}, want {AUDIO}: {diag}",
            cap.audio().len()
        );
        assert!(
            cap.video()[0].key,
            "first video packet is not a keyframe: {diag}"
        );
        let (max_gap, monotonic) = cap.video_dts_check();
        assert!(monotonic, "video dts goes backwards: {diag}");
        assert!(
            max_gap <= 80,
            "video dts gap {max_gap} ms (frames are 40 ms apart): {diag}"
        );
        let v = cap.video();
        let span = v.last().unwrap().dts - v.first().unwrap().dts;
        assert!(
            (9900..=10020).contains(&span),
            "video dts span {span} ms, want 9960: {diag}"
        );
        // keyframes 2 s apart in the received timeline too
        let kts: Vec<i64> = v
            .iter()
            .filter(|p| p.key)
            .map(|p| p.dts - v[0].dts)
            .collect();
        for (i, t) in kts.iter().enumerate() {
            assert!(
                (t - 2000 * i as i64).abs() <= 50,
                "keyframe {i} at {t} ms, want {}: {diag}",
                2000 * i
            );
        }
        if bframes {
            // the source has pts != dts on 190 of 250 frames
            assert!(
                cap.reordered() >= 150,
                "composition offsets lost: pts != dts on only {}: {diag}",
                cap.reordered()
            );
        } else {
            assert_eq!(cap.reordered(), 0, "pts != dts without B-frames: {diag}");
        }
        // A clean end: the player ends soon after the publisher (rw_timeout is 5 s).
        let lag = out.ended.saturating_duration_since(pub_out.ended);
        assert!(
            lag < Duration::from_secs(8),
            "player ended {lag:?} after the publisher: {diag}"
        );
    }

    let out = probe.wait();
    let streams = parse_ffprobe_streams(&out.stdout_text()).unwrap_or_default();
    let diag = format!("{streams:?}\n{}", out.describe());
    let v = find_stream(&streams, "video").unwrap_or_else(|| panic!("ffprobe: no video: {diag}"));
    assert_eq!(v.codec_name, "h264", "{diag}");
    assert_eq!(v.profile, "High", "{diag}");
    assert_eq!((v.width, v.height), (640, 360), "{diag}");
    let a = find_stream(&streams, "audio").unwrap_or_else(|| panic!("ffprobe: no audio: {diag}"));
    assert_eq!(a.codec_name, "aac", "{diag}");
    assert_eq!(a.sample_rate, 44100, "{diag}");
    assert_eq!(a.channels, 2, "{diag}");
}

#[test]
fn rtmp_publish_play_bframes() {
    publish_and_play("bframes.flv", true);
}

#[test]
fn rtmp_publish_play_no_bframes() {
    publish_and_play("nobframes.flv", false);
}
