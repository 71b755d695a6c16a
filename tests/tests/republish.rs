//! A publisher that drops and comes back (an encoder killed, then started again 2 s later)
//! continues the same stream: an RTMP viewer and an HLS viewer that stayed get frames of
//! both publishes with increasing DTS and no end of stream between them. A publisher that
//! ends its publish on purpose still ends the stream at once.
use sluice_e2e::*;
use std::thread;
use std::time::{Duration, Instant};

/// Kills (SIGKILL) the ffmpeg that `client` runs under `timeout`: an encoder that dies
/// without a word.
fn kill_encoder(client: &Client) {
    let ffmpeg = descendants(client.pid())
        .into_iter()
        .find(|p| p.comm == "ffmpeg")
        .expect("the publisher's ffmpeg process");
    assert!(sigkill(ffmpeg.pid), "killing ffmpeg {}", ffmpeg.pid);
}

/// `#EXT-X-MEDIA-SEQUENCE` and the number of segments of a media playlist.
fn sequence(playlist: &str) -> (u64, usize) {
    let seq = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (
        seq,
        playlist
            .lines()
            .filter(|l| l.starts_with("#EXTINF"))
            .count(),
    )
}

#[test]
fn a_publisher_that_drops_and_returns_continues_the_stream_for_its_viewers() {
    require_tools(&["ffmpeg", "timeout"]);
    let file = fixture("nobframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &[], 40);
    srv.wait_rtmp_players(1, Duration::from_secs(2));
    let first = ffmpeg_publish(&srv.dir, "publisher1", &file, &url, 40);
    srv.wait_live("live");
    thread::sleep(Duration::from_secs(4));

    // The HLS viewer's playlist, before the drop.
    let master_path = Server::hls_path("live");
    let master = srv.get(&master_path).unwrap().text();
    let media = media_playlist_path(&master_path, &master);
    let before = srv.get(&media).unwrap().text();
    let (seq_before, segs_before) = sequence(&before);
    assert!(segs_before >= 1, "segments before the drop:\n{before}");

    // The encoder dies without ending its publish.
    kill_encoder(&first);
    let killed = Instant::now();
    let _ = first.wait();
    // While it is away: no end for HLS, and the RTMP viewer stays connected.
    while killed.elapsed() < Duration::from_secs(2) {
        let pl = srv.get(&media).unwrap();
        assert_eq!(pl.status, 200, "the playlist stays served during the gap");
        assert!(
            !pl.text().contains("#EXT-X-ENDLIST"),
            "no end of stream during the gap:\n{}",
            pl.text()
        );
        thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !srv.stderr_text().contains("stream ended"),
        "the stream did not end:\n{}",
        srv.stderr_tail(20)
    );
    let second = ffmpeg_publish(&srv.dir, "publisher2", &file, &url, 40);
    let out2 = second.wait();
    assert!(
        out2.status.success(),
        "second publish:\n{}",
        out2.describe()
    );
    let after = srv.get(&media).unwrap().text();
    let (seq_after, segs_after) = sequence(&after);
    assert!(
        seq_after + segs_after as u64 > seq_before + segs_before as u64 + 3,
        "the playlist went on with the second publish: before {seq_before}+{segs_before}, \
         after {seq_after}+{segs_after}:\n{after}"
    );

    // The RTMP viewer saw both publishes on one timeline, and then the clean end (ffmpeg's
    // second publish ended with deleteStream).
    let out = player.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    let v = cap.video();
    // About 4 s of the first publish, all 10 s of the second.
    assert!(
        v.len() >= 250 + 75,
        "video frames of both publishes: {} ({diag})",
        v.len()
    );
    let (_, monotonic) = cap.video_dts_check();
    assert!(monotonic, "video DTS increase across the reconnect: {diag}");
    // The gap: where the DTS jumps by more than a frame, it jumps by about the time away.
    let jumps: Vec<i64> = v
        .windows(2)
        .map(|w| w[1].dts - w[0].dts)
        .filter(|d| *d > 200)
        .collect();
    assert_eq!(
        jumps.len(),
        1,
        "one gap in the DTS, at the reconnect: {jumps:?} ({diag})"
    );
    assert!(
        (1500..=15_000).contains(&jumps[0]),
        "the gap is the time away: {} ms ({diag})",
        jumps[0]
    );
    let log = srv.stderr_text();
    assert!(
        log.contains("publisher came back after"),
        "{}",
        srv.stderr_tail(30)
    );
    // Ended by the second publisher's deleteStream, at once (not after the grace time).
    assert!(
        out.ended.saturating_duration_since(out2.ended) < Duration::from_secs(8),
        "the viewer ended with the publish: {diag}"
    );
}

#[test]
fn a_publisher_that_does_not_return_ends_the_stream_after_the_grace_time() {
    require_tools(&["ffmpeg", "timeout"]);
    let file = fixture("nobframes.flv");
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["live"]["reconnect_grace"] = serde_json::json!(3000);
    });
    let url = srv.rtmp_url("live");
    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &[], 40);
    srv.wait_rtmp_players(1, Duration::from_secs(2));
    let first = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);
    srv.wait_live("live");
    thread::sleep(Duration::from_secs(3));
    kill_encoder(&first);
    let killed = Instant::now();
    let _ = first.wait();
    let out = player.wait();
    let ended = out.ended.saturating_duration_since(killed);
    assert!(
        ended >= Duration::from_millis(2500) && ended < Duration::from_secs(10),
        "the viewer's stream ended {ended:?} after the kill (grace 3 s)\n{}",
        out.describe()
    );
    assert!(srv
        .stderr_text()
        .contains("publisher did not come back within 3000 ms; stream ended"));
    let cap = Capture::from_output(&out);
    assert!(cap.video().len() >= 50, "{}", cap.summary());
}
