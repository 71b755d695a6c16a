//! One viewer's connection process dies; the other viewer, the publisher and the listener
//! are unaffected, and a new viewer is still served.
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

#[test]
fn killing_one_viewer_leaves_the_other_intact() {
    require_tools(&["ffmpeg", "timeout"]);
    let file = fixture("bframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    let mut a = ffmpeg_framecrc(&srv.dir, "player-a", &url, &[], 40);
    let mut b = ffmpeg_framecrc(&srv.dir, "player-b", &url, &[], 40);
    srv.wait_rtmp_players(2, Duration::from_secs(2));
    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);
    thread::sleep(Duration::from_secs(3));

    let listener = srv.rtmp_listener().unwrap_or_else(|| {
        panic!(
            "no `sluice-RTMP` listener under pid {}: {:?}",
            srv.pid,
            srv.procs()
        )
    });
    let players = srv.rtmp_children("RTMP play");
    assert_eq!(
        players.len(),
        2,
        "want exactly 2 `RTMP play` children of the listener, got {players:?}; all: {:?}",
        srv.procs()
    );
    let publishers = srv.rtmp_children("RTMP publish");
    assert_eq!(
        publishers.len(),
        1,
        "want 1 `RTMP publish` child, got {publishers:?}"
    );
    assert!(sigkill(players[0].pid), "SIGKILL {:?}", players[0]);
    let killed_at = std::time::Instant::now();
    eprintln!("killed {:?}", players[0]);
    // The kill must close that viewer's TCP connection at once, so its ffmpeg ends long
    // before its 5 s read timeout; if another process still held the socket it would not.
    let one_ended = poll(Duration::from_secs(3), || {
        (!a.is_running() || !b.is_running()).then_some(killed_at.elapsed())
    });
    assert!(
        one_ended.is_some(),
        "no player ended within 3 s of killing its viewer process: the socket is still open \
         in another process; {:?}",
        srv.procs()
    );
    eprintln!("a player ended {:?} after the kill", one_ended.unwrap());

    // A third viewer joins after the kill (source at ~4 s).
    thread::sleep(Duration::from_millis(700));
    let c = ffmpeg_framecrc(&srv.dir, "player-c", &url, &[], 40);

    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed after a viewer was killed:\n{}",
        pub_out.describe()
    );
    let outs = [a.wait(), b.wait()];
    let caps: Vec<Capture> = outs.iter().map(Capture::from_output).collect();
    let diag = format!(
        "A: {}\n{}\nB: {}\n{}",
        caps[0].summary(),
        outs[0].describe(),
        caps[1].summary(),
        outs[1].describe()
    );
    let mut counts: Vec<usize> = caps.iter().map(|c| c.video().len()).collect();
    counts.sort();
    assert_eq!(counts[1], 250, "the surviving viewer lost frames: {diag}");
    assert!(
        counts[0] < 200,
        "the killed viewer's connection did not end early: {diag}"
    );
    let full = caps.iter().find(|c| c.video().len() == 250).unwrap();
    assert_eq!(
        full.audio().len(),
        432,
        "the surviving viewer lost audio: {diag}"
    );
    assert_eq!(full.video_keyframes(), 5, "{diag}");
    // The listener survived, and the third viewer got whole GOPs to the end.
    assert_eq!(
        srv.rtmp_listener().map(|l| l.pid),
        Some(listener.pid),
        "the RTMP listener died or was replaced"
    );
    let out = c.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    let n = cap.video().len();
    assert!(n >= 100, "late viewer got only {n} frames: {diag}");
    assert_eq!(
        n % 50,
        0,
        "late viewer did not start on a keyframe (GOP 50) or missed frames: {diag}"
    );
    assert!(
        cap.video()[0].key,
        "late viewer's first frame is not a keyframe: {diag}"
    );
    assert!(
        cap.audio().len() >= 432 * n / 250 - 6,
        "late viewer audio: {diag}"
    );

    // The server is still healthy.
    srv.active_streams().expect("API after a viewer was killed");
}
