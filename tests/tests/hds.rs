//! HDS (`/dynamic/S/manifest.f4m`): yt-dlp, the one HDS client there is, downloads every
//! fragment of an ended stream and the FLV it assembles has every frame of the source; live,
//! it follows the bootstrap and gets frames while the publisher runs.
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

fn yt_dlp(srv: &Server, label: &str, out: &std::path::Path, secs: u64) -> Client {
    spawn_client(
        &srv.dir,
        label,
        secs,
        "yt-dlp",
        &[
            "--no-progress".to_string(),
            "--no-part".to_string(),
            "-o".to_string(),
            out.display().to_string(),
            srv.http_url("/dynamic/live/manifest.f4m"),
        ],
    )
}

/// The `u32` at `at` of `b`.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn hds_yt_dlp_downloads_every_fragment() {
    require_tools(&["ffmpeg", "timeout", "yt-dlp"]);
    let srv = Server::start();
    let (publisher, live) = publish_fixture_until(&srv, "live", "/dynamic/live/manifest.f4m");
    assert!(
        live.text().contains("<streamType>live</streamType>"),
        "{}",
        live.text()
    );
    assert_eq!(live.header("content-type"), Some("application/f4m+xml"));
    // The bootstrap: an abst with the live flag.
    let boot = srv.get("/dynamic/live/1_2.abst").expect("bootstrap");
    assert_eq!(boot.status, 200);
    assert_eq!(&boot.body[4..8], b"abst");
    assert_eq!(boot.body[16] & 0x20, 0x20, "live flag");
    let live_out = srv.dir.join("hds-live.flv");
    let yt_live = yt_dlp(&srv, "yt-dlp-live", &live_out, 14);
    assert!(publisher.wait().status.success());
    thread::sleep(Duration::from_millis(300));

    // Ended: recorded, with a duration; the bootstrap ends the presentation.
    let m = srv.get("/dynamic/live/manifest.f4m").expect("manifest");
    let text = m.text();
    assert!(text.contains("<streamType>recorded</streamType>"), "{text}");
    assert!(text.contains("<duration>10."), "{text}");
    let boot = srv.get("/dynamic/live/1_2.abst").expect("bootstrap");
    assert_eq!(boot.body[16] & 0x20, 0, "not live once ended");
    // A fragment: afra, moof, mdat of FLV tags; afra's one entry points at a keyframe tag.
    let f = srv.get("/dynamic/live/1_2_Seg1-Frag2").expect("fragment");
    assert_eq!(f.status, 200, "{}", f.text());
    assert_eq!(f.header("content-type"), Some("video/f4f"));
    assert_eq!(&f.body[4..8], b"afra");
    let afra_len = u32_at(&f.body, 0) as usize;
    assert_eq!(&f.body[afra_len + 4..afra_len + 8], b"moof");
    let key_at = u64::from_be_bytes(f.body[afra_len - 8..afra_len].try_into().unwrap()) as usize;
    assert_eq!(f.body[key_at], 9, "random access point is a video tag");
    assert_eq!(
        f.body[key_at + 11] >> 4,
        1,
        "random access point is a keyframe"
    );
    assert_eq!(
        srv.get("/dynamic/live/1_2_Seg1-Frag99").unwrap().status,
        404,
        "a fragment past the end"
    );

    let out = srv.dir.join("hds.flv");
    let dl = yt_dlp(&srv, "yt-dlp", &out, 60).wait();
    assert!(dl.status.success(), "yt-dlp failed:\n{}", dl.describe());
    let probe = ffmpeg_framecrc(&srv.dir, "probe-hds", &out.display().to_string(), &[], 30);
    assert_every_frame(&probe.wait(), &format!("yt-dlp's FLV\n{}", dl.describe()));

    // Live: yt-dlp joined at the live edge and kept following the bootstrap until stopped
    // (it waits minutes for more fragments after the end); what it wrote plays.
    let l = yt_live.wait();
    let cap = Capture::from_output(
        &ffmpeg_framecrc(
            &srv.dir,
            "probe-hds-live",
            &live_out.display().to_string(),
            &[],
            30,
        )
        .wait(),
    );
    let diag = format!("{}\n{}", cap.summary(), l.describe());
    assert!(cap.video().len() >= 50, "live HDS video frames: {diag}");
    assert!(cap.video()[0].key, "live HDS starts on a keyframe: {diag}");

    assert_eq!(srv.get("/dynamic/nosuch/manifest.f4m").unwrap().status, 404);
}
