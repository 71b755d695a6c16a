//! Raw MPEG-TS over TCP (the TS connector) and the audio-only HTTP outputs (`/S.aac` in ADTS,
//! `/S.mp3`), with ffmpeg.
use serde_json::json;
use sluice_e2e::*;
use std::thread;
use std::time::Duration;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn raw_ts_over_tcp_and_adts_carry_every_frame() {
    require_tools(&["ffmpeg", "timeout"]);
    let ts_port = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["config"]["protocols"].as_array_mut().unwrap().push(
            json!({"connector": "TS", "port": ts_port, "interface": "127.0.0.1", "stream": "live"}),
        );
    });
    // ffmpeg sends nothing on a tcp:// input: the connector plays the configured stream.
    let ts = ffmpeg_framecrc(
        &srv.dir,
        "tcp-ts",
        &format!("tcp://127.0.0.1:{ts_port}"),
        &[],
        40,
    );
    let aac = ffmpeg_framecrc(&srv.dir, "aac", &srv.http_url("/live.aac"), &[], 40);
    thread::sleep(Duration::from_millis(1500));
    let publisher = ffmpeg_publish(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        40,
    );
    assert!(publisher.wait().status.success());

    let out = ts.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.video().len(), 250, "{diag}");
    assert_eq!(cap.video_keyframes(), 5, "{diag}");
    assert_eq!(cap.audio().len(), 432, "{diag}");

    let out = aac.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    assert_eq!(cap.video().len(), 0, "{diag}");
    assert_eq!(cap.audio().len(), 432, "{diag}");
}

#[test]
fn mp3_audio_and_a_codec_the_output_cannot_carry() {
    require_tools(&["ffmpeg", "timeout"]);
    let srv = Server::start();
    let mp3 = ffmpeg_framecrc(&srv.dir, "mp3", &srv.http_url("/live.mp3"), &[], 40);
    thread::sleep(Duration::from_millis(800));
    // The fixture with its audio re-encoded to MP3 on the way in.
    let args = s(&[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-i",
        fixture("bframes.flv").to_str().unwrap(),
        "-c:v",
        "copy",
        "-c:a",
        "libmp3lame",
        "-ar",
        "44100",
        "-b:a",
        "128k",
        "-f",
        "flv",
        &srv.rtmp_url("live"),
    ]);
    let publisher = spawn_client(&srv.dir, "publisher", 40, "ffmpeg", &args);
    thread::sleep(Duration::from_secs(4));
    // Mid-publish: the stream has MP3 audio, so /S.aac cannot be served.
    let r = srv.get("/live.aac").expect("HTTP");
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.text().contains("AAC"), "{}", r.text());
    assert!(publisher.wait().status.success());
    let out = mp3.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("audio").as_deref(), Some("mp3"), "{diag}");
    // 10 s of 1152-sample frames at 44.1 kHz: about 383.
    assert!((370..=390).contains(&cap.audio().len()), "{diag}");
}

/// An ended stream (a stored file) over raw TS starts at its first keyframe, as every other
/// output starts it: all 5 GOPs arrive, not only the last one.
#[test]
fn raw_ts_plays_a_stored_file_from_its_start() {
    require_tools(&["ffmpeg", "timeout"]);
    let ts_port = free_port();
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["vod"] = json!({"name": "vod",
            "source": fixture("bframes.flv").to_str().unwrap(), "loop": false});
        cfg["config"]["protocols"].as_array_mut().unwrap().push(
            json!({"connector": "TS", "port": ts_port, "interface": "127.0.0.1", "stream": "vod"}),
        );
    });
    let out = ffmpeg_framecrc(
        &srv.dir,
        "tcp-ts-vod",
        &format!("tcp://127.0.0.1:{ts_port}"),
        &[],
        40,
    )
    .wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.video_keyframes(), 5, "{diag}");
    assert_eq!(cap.video().len(), 250, "{diag}");
    assert_eq!(cap.audio().len(), 432, "{diag}");
}
