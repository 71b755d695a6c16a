//! Smooth Streaming (`/cmaf/S/Manifest`): GStreamer's mssdemux plays every fragment of an
//! ended stream and of a live one, with every frame of the source; the manifest follows
//! MS-SSTR (first chunk of each StreamIndex with `t=`, fragment URLs by real start times).
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

/// The `tfrf` box's extended type (d4807ef2-ca39-4695-8e54-26cb9e46a79f, MS-SSTR §2.2.4.5).
const TFRF: [u8; 16] = [
    0xd4, 0x80, 0x7e, 0xf2, 0xca, 0x39, 0x46, 0x95, 0x8e, 0x54, 0x26, 0xcb, 0x9e, 0x46, 0xa7, 0x9f,
];

fn mss_pipeline(url: &str) -> String {
    format!(
        "souphttpsrc location={url} ! mssdemux name=d \
         d.video_00 ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! qtdemux ! \
         h264parse ! fakesink name=video \
         d.audio_00 ! queue max-size-buffers=0 max-size-time=0 max-size-bytes=0 ! qtdemux ! \
         aacparse ! fakesink name=audio"
    )
}

/// The `t=` of every `<c>` of the StreamIndex of `kind`, filling in omitted ones from `d=`.
fn chunk_times(manifest: &str, kind: &str) -> Vec<(u64, u64)> {
    let start = manifest
        .find(&format!("<StreamIndex Type=\"{kind}\""))
        .unwrap_or_else(|| panic!("no {kind} StreamIndex:\n{manifest}"));
    let body = &manifest[start..];
    let body = &body[..body.find("</StreamIndex>").unwrap()];
    let attr = |el: &str, name: &str| -> Option<u64> {
        let at = el.find(&format!(" {name}=\""))? + name.len() + 3;
        el[at..].split('"').next()?.parse().ok()
    };
    let mut out = Vec::new();
    let mut next = None;
    for el in body.split("<c").skip(1) {
        let t = attr(el, "t").or(next).expect("first chunk carries t=");
        let d = attr(el, "d").expect("chunk has d=");
        out.push((t, d));
        next = Some(t + d);
    }
    out
}

#[test]
fn smooth_streaming_mssdemux_plays_every_frame() {
    require_tools(&["ffmpeg", "timeout"]);
    require_gst();
    let srv = Server::start();

    // Live first: mssdemux joins while the publisher runs.
    let (publisher, live) = publish_fixture_until(&srv, "live", "/cmaf/live/Manifest");
    let text = live.text();
    assert!(text.contains("IsLive=\"TRUE\""), "{text}");
    assert!(
        live.header("content-type")
            .unwrap_or("")
            .starts_with("text/xml"),
        "{:?}",
        live.headers
    );
    let gst_live = gst_count(
        &srv.dir,
        "gst-mss-live",
        12,
        &mss_pipeline(&srv.http_url("/cmaf/live/Manifest")),
    );
    assert!(publisher.wait().status.success());
    thread::sleep(Duration::from_millis(300));

    // Ended: a presentation with a Duration; every chunk of 2 s GOPs listed.
    let m = srv.get("/cmaf/live/Manifest").expect("Manifest");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(!text.contains("IsLive"), "{text}");
    assert!(text.contains("FourCC=\"H264\""), "{text}");
    assert!(text.contains("FourCC=\"AACL\""), "{text}");
    let video = chunk_times(&text, "video");
    let audio = chunk_times(&text, "audio");
    assert_eq!(video.len(), 5, "{text}");
    assert_eq!(audio.len(), 5, "{text}");
    let total: u64 = video.iter().map(|c| c.1).sum();
    assert!(
        (total as i64 - 100_000_000).abs() <= 1_500_000,
        "video chunks add up to {total} hns:\n{text}"
    );

    // A fragment by the time the manifest gives: a moof with tfxd naming that time.
    let (t, _) = video[1];
    let frag = srv
        .get(&format!("/cmaf/live/QualityLevels(1)/Fragments(video={t})"))
        .expect("fragment");
    assert_eq!(frag.status, 200, "{}", frag.text());
    assert_eq!(frag.header("content-type"), Some("video/mp4"));
    assert_eq!(&frag.body[4..8], b"moof");
    let tfxd = [
        0x6d, 0x1d, 0x9b, 0x05, 0x42, 0xd5, 0x44, 0xe6, 0x80, 0xe2, 0x14, 0x1d, 0xaf, 0xf7, 0x57,
        0xb2,
    ];
    let at = frag
        .body
        .windows(16)
        .position(|w| w == tfxd)
        .expect("tfxd box in the fragment");
    let time = u64::from_be_bytes(frag.body[at + 20..at + 28].try_into().unwrap());
    assert_eq!(time, t, "tfxd time is the manifest's t");
    // The manifest's URL template carries the buffer's boot time; that URL gives the same.
    let url = text
        .split("Url=\"")
        .nth(1)
        .and_then(|u| u.split('"').next())
        .unwrap();
    let boot = url.strip_suffix("QualityLevels({bitrate})/Fragments(video={start time})");
    let boot = boot.unwrap_or_else(|| panic!("Url {url}"));
    assert!(boot.ends_with('/') && boot.len() > 1, "Url {url}");
    let same = srv
        .get(&format!(
            "/cmaf/live/{boot}QualityLevels(1)/Fragments(video={t})"
        ))
        .unwrap();
    assert!(same.status == 200 && same.body == frag.body, "{url}");
    assert_eq!(
        srv.get(&format!(
            "/cmaf/live/1/QualityLevels(1)/Fragments(video={t})"
        ))
        .unwrap()
        .status,
        404,
        "a fragment of another run"
    );
    // The last fragment of the ended stream still carries a tfrf (announcing nothing): a
    // client that loaded the manifest while it was live is still in live mode.
    let (last, _) = video[video.len() - 1];
    let frag = srv
        .get(&format!(
            "/cmaf/live/QualityLevels(1)/Fragments(video={last})"
        ))
        .expect("fragment");
    assert_eq!(frag.status, 200, "{}", frag.text());
    assert!(
        frag.body.windows(16).any(|w| w == TFRF),
        "no tfrf box in the last fragment"
    );
    let wrong = srv
        .get(&format!(
            "/cmaf/live/QualityLevels(1)/Fragments(video={})",
            t + 1
        ))
        .expect("HTTP");
    assert_eq!(wrong.status, 404, "a time no fragment starts at");

    let g = gst_count(
        &srv.dir,
        "gst-mss",
        40,
        &mss_pipeline(&srv.http_url("/cmaf/live/Manifest")),
    )
    .wait();
    let r = parse_gst(&g).unwrap_or_else(|e| panic!("{e}\n{}", g.describe()));
    let diag = format!("{r:?}\n{}", g.describe());
    assert!(r.eos && r.error.is_none(), "{diag}");
    assert_eq!(r.sinks["video"].buffers, 250, "{diag}");
    assert_eq!(r.sinks["video"].keyframes, 5, "{diag}");
    assert_eq!(r.sinks["audio"].buffers, 432, "{diag}");
    assert_eq!(r.sinks["video"].first_key, Some(true), "{diag}");

    // The live run saw frames and no error.
    let g = gst_live.wait();
    let r = parse_gst(&g).unwrap_or_else(|e| panic!("{e}\n{}", g.describe()));
    let diag = format!("{r:?}\n{}", g.describe());
    assert!(r.error.is_none(), "live mssdemux: {diag}");
    assert!(
        r.sinks.get("video").is_some_and(|v| v.buffers >= 50),
        "live mssdemux video: {diag}"
    );

    let missing = srv.get("/cmaf/nosuch/Manifest").expect("HTTP");
    assert_eq!(missing.status, 404);
}

/// mssdemux joining a stream in its first second, and staying on past the stream's end:
/// it used to abort (`parser->moof == NULL`) about 5 s after the end, when a fragment of
/// the ended stream came without `tfrf`.
#[test]
fn mssdemux_joins_a_young_stream_and_survives_its_end() {
    require_tools(&["ffmpeg", "timeout"]);
    require_gst();
    let srv = Server::start();
    let publisher = publish_fixture(&srv, "live");
    thread::sleep(Duration::from_millis(500));
    // The manifest request waits until the stream has a complete segment; the publish
    // ends about 10 s in, and the abort came 5 s after that.
    let g = gst_count(
        &srv.dir,
        "gst-mss-young",
        24,
        &mss_pipeline(&srv.http_url("/cmaf/live/Manifest")),
    );
    assert!(publisher.wait().status.success());
    let g = g.wait();
    let r = parse_gst(&g).unwrap_or_else(|e| panic!("{e}\n{}", g.describe()));
    let diag = format!("{r:?}\n{}", g.describe());
    assert!(r.error.is_none(), "{diag}");
    assert!(
        r.sinks.get("video").is_some_and(|v| v.buffers >= 150),
        "{diag}"
    );
    assert!(
        r.sinks.get("audio").is_some_and(|a| a.buffers >= 250),
        "{diag}"
    );
}
