//! A viewer joining mid-GOP starts at the latest keyframe, at once (no wait for the next one).
use sluice_e2e::*;
use std::time::{Duration, Instant};

#[test]
fn mid_stream_join_starts_on_latest_keyframe_immediately() {
    require_tools(&["ffmpeg", "rtmpdump", "timeout"]);
    let file = fixture("bframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    // An observer from the start (rtmpdump writes raw FLV to stdout, no probing delay):
    // its tag timestamps and arrival times tell where the live source is.
    let observer = rtmpdump(&srv.dir, "observer", &url, "-", 40);
    srv.wait_rtmp_players(1, Duration::from_secs(2));
    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);

    // Join once the observer has seen source time >= 3.0 s (between keyframes at 2 and 4 s).
    let joined_at = poll(Duration::from_secs(15), || {
        let tags = parse_flv_timed(&observer.snapshot()).ok()?;
        let v = flv_frames(&tags, 9);
        let first = v.first()?.ts;
        (v.last()?.ts.saturating_sub(first) >= 3000).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "observer never reached 3 s of video: {}",
            observer.stderr_now()
        )
    });
    let joiner_raw = rtmpdump(&srv.dir, "joiner-rtmpdump", &url, "-", 40);
    let joiner_ff = ffmpeg_framecrc(&srv.dir, "joiner-ffmpeg", &url, &[], 40);

    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed:\n{}",
        pub_out.describe()
    );
    let obs = observer.wait();
    let obs_tags = parse_flv_timed(&obs.chunks).expect("observer FLV");
    let obs_v = flv_frames(&obs_tags, 9);
    let diag_obs = format!("observer video tags {}\n{}", obs_v.len(), obs.describe());
    assert_eq!(
        obs_v.len(),
        250,
        "observer (from the start) video frames: {diag_obs}"
    );
    let t0 = obs_v[0].ts;
    let kf4 = obs_v
        .iter()
        .find(|t| t.key && t.ts - t0 >= 3900)
        .unwrap_or_else(|| panic!("observer has no keyframe at 4 s: {diag_obs}"));
    let kf2_ts = obs_v
        .iter()
        .find(|t| t.key && t.ts - t0 >= 1900)
        .unwrap()
        .ts;
    assert!(
        joined_at < kf4.at,
        "the join happened after the 4 s keyframe reached the observer: test timing broken"
    );

    // Raw FLV as it arrived at the joiner.
    let j = joiner_raw.wait();
    let tags = parse_flv_timed(&j.chunks).expect("joiner FLV");
    let v = flv_frames(&tags, 9);
    let diag = format!(
        "joiner video tags {} (first ts {:?}, key {:?}; observer 2 s keyframe ts {kf2_ts}, 4 s keyframe ts {})\n{}",
        v.len(), v.first().map(|t| t.ts), v.first().map(|t| t.key), kf4.ts, j.describe()
    );
    assert!(!v.is_empty(), "joiner got no video: {diag}");
    assert!(
        v[0].key,
        "joiner's first video frame is not a keyframe: {diag}"
    );
    // Sequence header before the first frame.
    let first_video_idx = tags
        .iter()
        .position(|t| t.kind == 9 && !t.seq_header)
        .unwrap();
    assert!(
        tags[..first_video_idx]
            .iter()
            .any(|t| t.kind == 9 && t.seq_header),
        "no AVC sequence header before the first frame: {diag}"
    );
    assert!(
        tags[..first_video_idx].iter().any(|t| t.kind == 18),
        "no onMetaData before the first frame: {diag}"
    );
    // Started from the GOP at 2 s: 200 frames (2 s .. 10 s), 4 keyframes.
    assert_eq!(
        v.len(),
        200,
        "joiner should get the 2 s GOP through the end: {diag}"
    );
    assert_eq!(v.iter().filter(|t| t.key).count(), 4, "{diag}");
    // At once: the first frame arrived within 1 s of connecting, before the next keyframe
    // even reached the observer.
    let delay = v[0].at.saturating_duration_since(j.started);
    assert!(
        delay < Duration::from_secs(1),
        "first frame took {delay:?} after connecting: {diag}"
    );
    assert!(
        v[0].at < kf4.at,
        "joiner's first frame arrived after the next keyframe was sent: {diag}"
    );

    // ffmpeg joined at the same moment: first packet a keyframe, the same 200 frames.
    let out = joiner_ff.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert!(
        cap.video().first().is_some_and(|p| p.key),
        "ffmpeg joiner's first packet is not a keyframe: {diag}"
    );
    assert_eq!(cap.video().len(), 200, "ffmpeg joiner frames: {diag}");
    assert!(
        cap.reordered() >= 100,
        "ffmpeg joiner lost composition offsets: {diag}"
    );
}
