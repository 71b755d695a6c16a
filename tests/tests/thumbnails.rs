//! Live thumbnails with real clients: `/S.jpg` of a stored stream is a JPEG that ffprobe reads
//! with the stream's size (or the width asked for, keeping the aspect ratio), and its pixels
//! match ffmpeg's own decode of the same keyframe (the last, at 8 s) within a small mean
//! error; 100 concurrent requests for a new thumbnail cost one decode; `/S.mjpg` of a live
//! stream is read by ffmpeg's `mpjpeg` demuxer, a JPEG per keyframe; HEVC is refused with 415.
use serde_json::json;
use sluice_e2e::*;
use std::path::Path;
use std::process::Command;

/// A picture decoded by ffmpeg to RGB24 at its own size: (width, height, bytes).
fn rgb_of(path: &Path, input_opts: &[&str]) -> (u32, u32, Vec<u8>) {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height,codec_name", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    let f: Vec<&str> = text.split(',').collect();
    assert!(f.len() >= 3, "ffprobe {}: {text}", path.display());
    let (w, h): (u32, u32) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    let out = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args(input_opts)
        .arg("-i")
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert_eq!(out.stdout.len(), (w * h * 3) as usize, "{}", path.display());
    (w, h, out.stdout)
}

#[test]
fn a_thumbnail_is_the_latest_keyframe_decoded_once() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod", "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
        cfg["streams"]["hevc"] =
            json!({"name": "hevc", "source": fixture("hevc.ts").to_str().unwrap(), "loop": false});
    });
    let r = srv.get("/vod.jpg").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    let jpg = srv.dir.join("vod.jpg");
    std::fs::write(&jpg, &r.body).unwrap();
    let codec = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&jpg)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&codec.stdout).trim(), "mjpeg");
    let (w, h, ours) = rgb_of(&jpg, &[]);
    assert_eq!((w, h), (640, 360));
    // ffmpeg's decode of the keyframe at 8 s (the stored stream's latest).
    let (fw, fh, theirs) = rgb_of(&fixture("bframes.flv"), &["-ss", "8"]);
    assert_eq!((fw, fh), (640, 360));
    let err: u64 = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    let mean = err as f64 / ours.len() as f64;
    eprintln!("mean absolute error against ffmpeg's decode: {mean:.2} levels of 255");
    assert!(mean < 8.0, "mean error {mean:.2}");
    // The same picture against another keyframe's: much further off (the check can fail).
    let (_, _, other) = rgb_of(&fixture("bframes.flv"), &["-ss", "2"]);
    let other_err: u64 = ours
        .iter()
        .zip(&other)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    assert!(other_err > 2 * err, "{other_err} vs {err}");

    // ?width= keeps the aspect ratio.
    let small = srv.get("/vod.jpg?width=320").unwrap();
    assert_eq!(small.status, 200);
    let p = srv.dir.join("small.jpg");
    std::fs::write(&p, &small.body).unwrap();
    let (sw, sh, _) = rgb_of(&p, &[]);
    assert_eq!((sw, sh), (320, 180));

    // 100 concurrent requests for a width not made yet: one decode.
    let decodes = |srv: &Server| {
        srv.stderr_text()
            .lines()
            .filter(|l| l.contains("vod: thumbnail of the keyframe"))
            .count()
    };
    let before = decodes(&srv);
    let port = srv.http_port;
    let handles: Vec<_> = (0..100)
        .map(|_| std::thread::spawn(move || http_get(port, "/vod.jpg?width=160").unwrap()))
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..2], &[0xFF, 0xD8], "a JPEG");
    }
    assert_eq!(decodes(&srv) - before, 1, "{}", srv.stderr_tail(10));

    let r = srv.get("/hevc.jpg").unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.text().contains("HEVC"), "{}", r.text());
}

#[test]
fn mjpeg_streams_a_jpeg_per_keyframe() {
    require_tools(&["ffmpeg"]);
    let srv = Server::start();
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        1,
        30,
    );
    srv.wait_live("live");
    // A keyframe every 2 s: in 7 s, the current one and three more.
    let out = ffmpeg_framecrc(
        &srv.dir,
        "mjpeg",
        &srv.http_url("/live.mjpg?width=320"),
        &["-f", "mpjpeg"],
        7,
    )
    .wait();
    stop_client(publisher);
    let cap = Capture::from_output(&out);
    assert_eq!(
        cap.codec("video").as_deref(),
        Some("mjpeg"),
        "{}",
        out.describe()
    );
    let n = cap.video().len();
    assert!(
        (3..=5).contains(&n),
        "{n} pictures in 7 s: {}",
        out.describe()
    );
}

/// A keyframe the decoder rejects: a stored DTSC file (made by `sluice-convert`) whose last
/// video keyframe's payload is zeroed in place. `/S.jpg` logs that it did not decode and gives
/// the previous keyframe's picture (the one at 6 s, matching ffmpeg's decode of it).
#[test]
fn a_keyframe_that_does_not_decode_leaves_the_previous_picture() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("thumb-bad");
    let file = dir.join("clip.dtsc");
    sluice_convert(&fixture("bframes.flv"), &file);
    // Walk the DTSC frames (magic, u32 length of what follows the first 8 bytes) and zero the
    // payload of the last large keyframe packet (`keyframe` member, `data` string > 5 kB).
    let mut bytes = std::fs::read(&file).unwrap();
    let mut at = 0;
    let mut last = None;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let frame = &bytes[at..(at + 8 + len).min(bytes.len())];
        if &frame[..4] == b"DTP2" && frame.windows(10).any(|w| w == b"\x00\x08keyframe") {
            if let Some(d) = frame.windows(7).position(|w| w == b"\x00\x04data\x02") {
                let n = u32::from_be_bytes(frame[d + 7..d + 11].try_into().unwrap()) as usize;
                if n > 5000 {
                    last = Some((at + d + 11, n));
                }
            }
        }
        at += 8 + len;
    }
    let (start, n) = last.expect("a video keyframe in the DTSC file");
    bytes[start..start + n].fill(0);
    std::fs::write(&file, &bytes).unwrap();
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["bad"] =
            json!({"name": "bad", "source": file.to_str().unwrap(), "loop": false});
    });
    let r = srv.get("/bad.jpg").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        srv.stderr_text().contains("did not decode"),
        "{}",
        srv.stderr_tail(10)
    );
    let jpg = dir.join("bad.jpg");
    std::fs::write(&jpg, &r.body).unwrap();
    let (_, _, ours) = rgb_of(&jpg, &[]);
    let mean = |theirs: &[u8]| {
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum::<u64>() as f64
            / ours.len() as f64
    };
    let (_, _, at6) = rgb_of(&fixture("bframes.flv"), &["-ss", "6"]);
    let (_, _, at8) = rgb_of(&fixture("bframes.flv"), &["-ss", "8"]);
    assert!(
        mean(&at6) < 8.0 && mean(&at8) > 2.0 * mean(&at6),
        "{} {}",
        mean(&at6),
        mean(&at8)
    );
}
