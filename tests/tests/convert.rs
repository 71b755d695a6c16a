//! `sluice-convert` on the real fixtures, checked by clients nobody here wrote: every fixture
//! to every format (and back), read by ffmpeg with the same codecs, packets, keyframes and
//! presentation times as the fixture itself; the MP4 played by Chromium's own `<video>`; the
//! DTSC output read against the shared DTSC document, and DTSC bytes built by hand from that
//! document converted to an FLV ffprobe reads; bad input refused with the byte offset and
//! nothing left under the output's name.
use sluice_e2e::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn convert_bin() -> PathBuf {
    sluice_bin().with_file_name("sluice-convert")
}

/// Runs `sluice-convert ARGS…`.
fn run_convert(args: &[&str]) -> Output {
    Command::new(convert_bin())
        .args(args)
        .output()
        .expect("run sluice-convert")
}

/// Runs `sluice-convert ARGS` through `sh`, so that ARGS may redirect its stdin and stdout
/// (`- - --to ts < IN > OUT`); asserts that it succeeded.
fn convert_in_shell(args: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' {args}", convert_bin().display()))
        .status()
        .unwrap();
    assert!(st.success(), "sluice-convert {args}");
}

fn converted(from: &Path, to: &Path, extra: &[&str]) {
    let mut args = vec![from.to_str().unwrap(), to.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_convert(&args);
    assert!(
        out.status.success(),
        "sluice-convert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ffmpeg reads of a file: per stream, codec, packets, keyframes, presentation times.
fn streams_of(dir: &Path, label: &str, file: &Path) -> Vec<StreamPackets> {
    let out = ffmpeg_framecrc(dir, label, file.to_str().unwrap(), &[], 30).wait();
    Capture::from_output(&out).per_stream()
}

/// Per stream (ffprobe's order), the codec type and earliest presentation time in ms: how the
/// tracks sit against each other.
fn first_pts_ms(file: &Path) -> Vec<(String, i64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,codec_type,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    let mut firsts: Vec<(u32, String, i64)> = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split(',').collect();
        let (Some(kind), Some(idx), Some(pts)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let (Ok(idx), Ok(pts)) = (idx.parse::<u32>(), pts.parse::<f64>()) else {
            continue;
        };
        let ms = (pts * 1000.0).round() as i64;
        match firsts.iter_mut().find(|x| x.0 == idx) {
            Some(x) => x.2 = x.2.min(ms),
            None => firsts.push((idx, kind.to_string(), ms)),
        }
    }
    firsts.sort();
    firsts.into_iter().map(|(_, k, ms)| (k, ms)).collect()
}

/// The gap from the first video's first presentation to each audio's, ms.
fn av_offsets(file: &Path) -> Vec<i64> {
    let f = first_pts_ms(file);
    let Some(v) = f.iter().find(|(k, _)| k == "video").map(|x| x.1) else {
        return Vec::new();
    };
    f.iter()
        .filter(|(k, _)| k == "audio")
        .map(|(_, a)| a - v)
        .collect()
}

/// Every fixture to FLV, MPEG-TS, MP4, fragmented MP4 and DTSC (read back through another
/// conversion, since no other tool reads DTSC), and each of those outputs on to every format
/// again: ffmpeg reads the same codecs, packet and keyframe counts and presentation times
/// (within 1 ms, the coarsest timestamp unit among the formats) as from the fixture itself,
/// and the audio sits where it sat against the video (within 2 ms). FLV refuses HEVC and a
/// second video track, naming them, and takes the first rendition of multi.ts with --tracks.
#[test]
fn every_fixture_to_every_format_keeps_codecs_frames_and_timestamps() {
    require_tools(&["ffmpeg", "ffprobe"]);
    let dir = unique_temp_dir("convert-all");
    let formats = ["flv", "ts", "mp4", "m4s", "dtsc"];
    let mut checked = 0;
    for name in ["bframes.flv", "nobframes.flv", "hevc.ts", "multi.ts"] {
        let src = fixture(name);
        let all = fixture_streams(name);
        let all_av = av_offsets(&src);
        let stem = name.replace('.', "_");
        // Checks what ffmpeg reads of `file` against the fixture's streams `keep` (indexes
        // into `all`; video streams first, as framecrc lists them).
        let mut check = |file: &Path, keep: &[usize]| {
            if file.extension().is_some_and(|e| e == "dtsc") {
                return; // read through the next conversion
            }
            let what = file.file_name().unwrap().to_string_lossy().into_owned();
            let got = streams_of(&dir, "probe", file);
            assert_eq!(got.len(), keep.len(), "{what}: streams");
            for (g, &w) in got.iter().zip(keep) {
                g.assert_matches(&all[w], 1, &what);
            }
            let av = av_offsets(file);
            let audios = keep.iter().filter(|&&i| all[i].codec == "aac").count();
            let want_av = &all_av[..audios];
            assert_eq!(av.len(), want_av.len(), "{what}: audio tracks");
            for (x, y) in av.iter().zip(want_av) {
                assert!(
                    (x - y).abs() <= 2,
                    "{what}: audio starts {x} ms from the video, in the fixture {y} ms"
                );
            }
            checked += 1;
        };
        let every: Vec<usize> = (0..all.len()).collect();
        // FLV carries one H.264 and one audio track: HEVC is refused, and multi.ts's first
        // rendition and first audio (tracks 1 and 3) are chosen with --tracks.
        let flv_tracks: Option<(&[&str], Vec<usize>)> = match name {
            "hevc.ts" => None,
            "multi.ts" => Some((&["--tracks", "1,3"], vec![0, 2])),
            _ => Some((&[], every.clone())),
        };
        let refused = |need: &str| {
            let out = run_convert(&[src.to_str().unwrap(), dir.join("x.flv").to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!out.status.success() && err.contains(need), "{name}: {err}");
            assert!(!dir.join("x.flv").exists());
        };
        match name {
            "hevc.ts" => refused("HEVC"),
            "multi.ts" => refused("one video and one audio track"),
            _ => {}
        }
        for first in formats {
            let (extra, keep): (&[&str], Vec<usize>) = match (first, &flv_tracks) {
                ("flv", None) => continue,
                ("flv", Some((args, keep))) => (args, keep.clone()),
                _ => (&[], every.clone()),
            };
            let a = dir.join(format!("{stem}.{first}"));
            converted(&src, &a, extra);
            check(&a, &keep);
            for second in formats {
                let flv_ok = match &flv_tracks {
                    None => false,
                    Some((_, k)) => keep.len() <= k.len(),
                };
                if second == "flv" && !flv_ok {
                    continue;
                }
                let b = dir.join(format!("{stem}.{first}.{second}"));
                converted(&a, &b, &[]);
                check(&b, &keep);
            }
        }
    }
    assert!(checked >= 70, "{checked} files checked");
    let _ = fs::remove_dir_all(&dir);
}

/// The MP4 `sluice-convert` writes (`moov` first) plays whole in Chromium's own `<video>`
/// element: it ends at 10 s having shown every frame at 640x360.
#[test]
fn converted_mp4_plays_in_chromiums_native_video_element() {
    require_tools(&["chromium", "python3", "timeout"]);
    let dir = unique_temp_dir("convert-chromium");
    let mp4 = dir.join("clip.mp4");
    converted(&fixture("bframes.flv"), &mp4, &[]);
    // moov first; a free box may pad the head to whole file-system blocks.
    let top: Vec<String> = mp4_top_boxes(&mp4)
        .into_iter()
        .filter(|b| b != "free")
        .collect();
    assert_eq!(top, ["ftyp", "moov", "mdat"]);
    let page = r#"<!doctype html><video id="v" muted autoplay src="clip.mp4"></video><script>
const v = document.getElementById('v');
const log = (event) => {
  const q = v.getVideoPlaybackQuality();
  console.log('sluice-player ' + JSON.stringify({event, time: v.currentTime,
    duration: v.duration, frames: q.totalVideoFrames, dropped: q.droppedVideoFrames,
    width: v.videoWidth, height: v.videoHeight,
    error: v.error ? v.error.code + ' ' + v.error.message : null}));
};
for (const e of ['loadedmetadata', 'playing', 'ended', 'error']) v.addEventListener(e, () => log(e));
setInterval(() => log('tick'), 1000);
</script>"#;
    fs::write(dir.join("index.html"), page).unwrap();
    let port = free_port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    assert!(
        poll(Duration::from_secs(10), || port_accepts(port).then_some(())).is_some(),
        "http.server did not start"
    );
    let browser = chromium(
        &dir,
        "chromium",
        40,
        &format!("http://127.0.0.1:{port}/index.html"),
    );
    let ev = wait_player(&browser, Duration::from_secs(35), |ev| {
        ev.iter()
            .any(|e| e["event"] == "ended" || e["event"] == "error")
    });
    stop_chromium(browser);
    sigterm(server.id());
    let _ = server.wait();
    let ended = ev
        .iter()
        .find(|e| e["event"] == "ended")
        .unwrap_or_else(|| panic!("no ended event: {:?}", ev.last()));
    assert_eq!(ended["error"], serde_json::Value::Null);
    assert_eq!(
        (ended["width"].as_i64(), ended["height"].as_i64()),
        (Some(640), Some(360))
    );
    let end = ended["time"].as_f64().unwrap();
    assert!((end - 10.0).abs() < 0.2, "ended at {end} s");
    let frames = ended["frames"].as_i64().unwrap();
    let dropped = ended["dropped"].as_i64().unwrap();
    assert!(frames >= 245, "{frames} frames decoded ({dropped} dropped)");
    let _ = fs::remove_dir_all(&dir);
}

/// A `.dtsc` file as the shared DTSC document describes it: one `DTSC` header frame (`vod`,
/// `tracks` with `trackid`, `type`, `codec`, `init`, `firstms`, `lastms`), then `DTP2` frames
/// (track id, DTS, an object with `keyframe` and `data`) back to back to the end; and beside
/// it a `.dtsh` whose keys point at the keyframes' `DTP2` frames in the file.
#[test]
fn dtsc_output_has_the_documented_bytes_and_an_index_that_points_into_it() {
    require_tools(&["ffprobe"]);
    let dir = unique_temp_dir("convert-dtsc");
    let file = dir.join("b.dtsc");
    converted(&fixture("bframes.flv"), &file, &[]);
    let b = fs::read(&file).unwrap();
    assert_eq!(&b[..4], b"DTSC");
    let head_len = 8 + be_uint(&b[4..8]) as usize;
    let mut at = 8;
    let top = dtsc_value(&b, &mut at);
    assert_eq!(at, head_len, "the header value fills its frame");
    assert!(matches!(top.get("vod"), Dv::Int(1)));
    let Dv::Obj(tracks) = top.get("tracks") else {
        panic!("tracks is not an object");
    };
    assert_eq!(tracks.len(), 2);
    let mut ids = Vec::new();
    for (_, t) in tracks {
        let Dv::Int(id) = t.get("trackid") else {
            panic!("trackid")
        };
        ids.push(*id as u32);
        let kind = String::from_utf8_lossy(t.get("type").bytes()).into_owned();
        let codec = String::from_utf8_lossy(t.get("codec").bytes()).into_owned();
        match kind.as_str() {
            "video" => {
                assert_eq!(codec, "H264");
                assert_eq!(t.get("init").bytes()[0], 1, "avcC configurationVersion");
                assert!(matches!(t.get("width"), Dv::Int(640)));
                assert!(matches!(t.get("lastms"), Dv::Int(9960)));
            }
            "audio" => {
                assert_eq!(codec, "AAC");
                assert_eq!(
                    t.get("init").bytes()[..2],
                    [0x12, 0x10],
                    "AAC-LC 44.1 kHz stereo"
                );
                assert!(matches!(t.get("rate"), Dv::Int(44100)));
            }
            k => panic!("track type {k}"),
        }
    }
    // DTP2 frames to the end: 250 + 432 of them, 5 video keyframes.
    let (mut video, mut audio, mut keys) = (0, 0, Vec::new());
    let vid = ids[0];
    while at < b.len() {
        assert_eq!(&b[at..at + 4], b"DTP2", "frame at byte {at}");
        let len = be_uint(&b[at + 4..at + 8]) as usize;
        let track = be_uint(&b[at + 8..at + 12]) as u32;
        let dts = be_uint(&b[at + 12..at + 20]);
        let mut o = at + 20;
        let obj = dtsc_value(&b, &mut o);
        assert_eq!(o, at + 8 + len, "the packet object fills its frame");
        assert!(!obj.get("data").bytes().is_empty());
        if track == vid {
            video += 1;
            if let Dv::Obj(m) = &obj {
                if m.iter().any(|(k, _)| k == "keyframe") {
                    keys.push((at as u64, dts));
                }
            }
        } else {
            audio += 1;
        }
        at += 8 + len;
    }
    assert_eq!((video, audio), (250, 432));
    assert_eq!(
        keys.iter().map(|k| k.1).collect::<Vec<_>>(),
        [0, 2000, 4000, 6000, 8000]
    );
    // The index: the video track's keys hold the byte positions of those frames.
    let idx = fs::read(dir.join("b.dtsc.dtsh")).expect("a .dtsh beside the .dtsc");
    let mut at = 8;
    let itop = dtsc_value(&idx, &mut at);
    let Dv::Obj(itracks) = itop.get("tracks") else {
        panic!("index tracks");
    };
    let v = itracks
        .iter()
        .map(|(_, t)| t)
        .find(|t| t.get("type").bytes() == b"video")
        .unwrap();
    let raw = v.get("keys").bytes();
    let entries: Vec<(u64, u64)> = raw
        .chunks(25)
        .map(|k| (be_uint(&k[0..8]), be_uint(&k[17..25])))
        .collect();
    assert_eq!(
        entries, keys,
        "index keys: (bpos, time) of each keyframe's frame"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Appends a DTSC string member `key: bytes` (0x02, u32 length) with its u16 key length.
fn put_member(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
}

fn dstr(b: &[u8]) -> Vec<u8> {
    let mut v = vec![0x02];
    v.extend_from_slice(&(b.len() as u32).to_be_bytes());
    v.extend_from_slice(b);
    v
}

fn dint(i: i64) -> Vec<u8> {
    let mut v = vec![0x01];
    v.extend_from_slice(&i.to_be_bytes());
    v
}

/// A `.dtsc` file assembled here byte by byte from the shared document (header object of
/// tracks, `DTP2` frames whose object holds `offset`, `keyframe` and `data`), with the
/// fixture's own H.264 and AAC payloads taken from its FLV tags, converts to an FLV that
/// ffprobe reads whole: 250 H.264 640x360 frames with their composition offsets, 432 AAC.
#[test]
fn dtsc_built_by_hand_from_the_document_converts_to_flv_that_ffprobe_reads() {
    require_tools(&["ffprobe"]);
    let dir = unique_temp_dir("convert-hand-dtsc");
    let flv = fs::read(fixture("bframes.flv")).unwrap();
    // The fixture's tags (FLV spec v10.1 §E.4.1): kind, timestamp, body.
    let mut tags: Vec<(u8, u32, &[u8])> = Vec::new();
    let mut at = 13;
    while at + 11 <= flv.len() {
        let size = be_uint(&flv[at + 1..at + 4]) as usize;
        let ts = (be_uint(&flv[at + 4..at + 7]) | u64::from(flv[at + 7]) << 24) as u32;
        tags.push((flv[at], ts, &flv[at + 11..at + 11 + size]));
        at += 11 + size + 4;
    }
    let seq = |kind: u8| {
        tags.iter()
            .find(|t| t.0 == kind && t.2.get(1) == Some(&0))
            .map(|t| t.2[if kind == 9 { 5 } else { 2 }..].to_vec())
            .unwrap()
    };
    let (avcc, asc) = (seq(9), seq(8));
    let track = |id: i64, kind: &str, codec: &str, init: &[u8], extra: &[(&str, i64)]| {
        let mut t = vec![0xE0];
        put_member(&mut t, "trackid", &dint(id));
        put_member(&mut t, "type", &dstr(kind.as_bytes()));
        put_member(&mut t, "codec", &dstr(codec.as_bytes()));
        put_member(&mut t, "init", &dstr(init));
        for (k, v) in extra {
            put_member(&mut t, k, &dint(*v));
        }
        t.extend_from_slice(&[0, 0, 0xEE]);
        t
    };
    let mut tracks = vec![0xE0];
    put_member(
        &mut tracks,
        "video_H264_1",
        &track(
            1,
            "video",
            "H264",
            &avcc,
            &[("width", 640), ("height", 360), ("fpks", 25000)],
        ),
    );
    put_member(
        &mut tracks,
        "audio_AAC_2",
        &track(
            2,
            "audio",
            "AAC",
            &asc,
            &[("rate", 44100), ("channels", 2), ("size", 16)],
        ),
    );
    tracks.extend_from_slice(&[0, 0, 0xEE]);
    let mut header = vec![0xE0];
    put_member(&mut header, "vod", &dint(1));
    put_member(&mut header, "version", &dint(4));
    put_member(&mut header, "tracks", &tracks);
    header.extend_from_slice(&[0, 0, 0xEE]);
    let mut file = b"DTSC".to_vec();
    file.extend_from_slice(&(header.len() as u32).to_be_bytes());
    file.extend_from_slice(&header);
    let (mut video, mut audio) = (0, 0);
    for &(kind, ts, body) in &tags {
        let (track, key, offset, data) = match kind {
            9 if body[1] == 1 => {
                video += 1;
                // CompositionTime: SI24 (§E.4.3.1).
                let cts = ((be_uint(&body[2..5]) as u32) << 8) as i32 >> 8;
                (1u32, body[0] >> 4 == 1, cts, &body[5..])
            }
            8 if body[1] == 1 => {
                audio += 1;
                (2, false, 0, &body[2..])
            }
            _ => continue,
        };
        let mut obj = vec![0xE0];
        if offset != 0 {
            put_member(&mut obj, "offset", &dint(i64::from(offset)));
        }
        if key {
            put_member(&mut obj, "keyframe", &dint(1));
        }
        put_member(&mut obj, "data", &dstr(data));
        obj.extend_from_slice(&[0, 0, 0xEE]);
        file.extend_from_slice(b"DTP2");
        file.extend_from_slice(&((12 + obj.len()) as u32).to_be_bytes());
        file.extend_from_slice(&track.to_be_bytes());
        file.extend_from_slice(&u64::from(ts).to_be_bytes());
        file.extend_from_slice(&obj);
    }
    assert_eq!((video, audio), (250, 432));
    let src = dir.join("hand.dtsc");
    fs::write(&src, &file).unwrap();
    let out = dir.join("hand.flv");
    converted(&src, &out, &[]);
    let got = streams_of(&dir, "probe", &out);
    let want = fixture_streams("bframes.flv");
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        g.assert_matches(w, 0, "hand-built DTSC as FLV");
    }
    let info = ffprobe(&dir, "info", &out.to_string_lossy(), &[], 20).unwrap();
    let v = find_stream(&info, "video").expect("a video stream");
    assert_eq!(
        (v.codec_name.as_str(), v.width, v.height),
        ("h264", 640, 360)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Truncated, corrupt and unknown inputs: exit status 1, a message naming the byte offset and
/// what was expected there (or the supported formats), and nothing under the output's name
/// (nor a temporary file left in its folder).
#[test]
fn bad_input_is_refused_with_its_byte_offset_and_leaves_no_output() {
    let dir = unique_temp_dir("convert-bad");
    let flv = fs::read(fixture("bframes.flv")).unwrap();
    let ts = fs::read(fixture("hevc.ts")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Cut in the middle of a tag: the tag's offset and its size.
        ("cut.flv", flv[..600_000].to_vec(), "FLV tag of"),
        // A tag header with garbage where a tag should start.
        (
            "garbage.flv",
            {
                let mut b = flv[..200_000].to_vec();
                b.extend_from_slice(&[0xAB; 5000]);
                b
            },
            "expected",
        ),
        (
            "cut.ts",
            ts[..188 * 3000 + 100].to_vec(),
            "whole 188-byte TS packet",
        ),
        (
            "nosync.ts",
            {
                let mut b = ts[..188 * 4000].to_vec();
                b[188 * 2000] = 0x00;
                b
            },
            "sync byte",
        ),
        ("empty.dtsc", b"DTSC\0\0\0\x10garbage".to_vec(), "at byte"),
        ("notmp4.mp4", vec![0x55; 4000], "at byte 0"),
    ];
    for (name, bytes, needle) in &cases {
        let src = dir.join(name);
        fs::write(&src, bytes).unwrap();
        for to in ["out.ts", "out.mp4", "out.dtsc"] {
            let dst = dir.join(to);
            let out = run_convert(&[src.to_str().unwrap(), dst.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} -> {to}: {err}");
            assert!(
                err.contains("at byte"),
                "{name} -> {to}: no offset in {err}"
            );
            assert!(err.contains(needle), "{name} -> {to}: {err}");
            assert!(!dst.exists(), "{name} -> {to}: an output was left");
        }
    }
    // Where the FLV was cut: the last tag's offset is named.
    let out = run_convert(&[
        dir.join("cut.flv").to_str().unwrap(),
        dir.join("x.ts").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let at: u64 = err
        .split("at byte ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(at < 600_000 && at > 590_000, "{err}");
    // Unknown formats list the supported ones.
    let out = run_convert(&[fixture("bframes.flv").to_str().unwrap(), "x.avi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for f in ["flv", "ts", "mp4", "fmp4", "dtsc"] {
        assert!(err.contains(&format!("{f} (")), "{err}");
    }
    let leftovers: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.starts_with("out") || n.starts_with("x."))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let _ = fs::remove_dir_all(&dir);
}

/// Pipes: FLV on stdin to MPEG-TS on stdout (and MP4, whose index may be at the end, on
/// stdin); a cut by tracks and time; the JSON summary.
#[test]
fn pipes_track_selection_and_cuts() {
    require_tools(&["ffprobe", "sh"]);
    let dir = unique_temp_dir("convert-pipes");
    let src = fixture("bframes.flv");
    let ts = dir.join("piped.ts");
    convert_in_shell(&format!(
        "- - --to ts -q < '{}' > '{}'",
        src.display(),
        ts.display()
    ));
    let got = streams_of(&dir, "piped", &ts);
    let want = fixture_streams("bframes.flv");
    for (g, w) in got.iter().zip(&want) {
        g.assert_matches(w, 1, "FLV on stdin to TS on stdout");
    }
    // MP4 with moov at the end, on stdin.
    let mp4 = dir.join("end.mp4");
    converted(&src, &dir.join("first.mp4"), &[]);
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(dir.join("first.mp4"))
        .args(["-c", "copy"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mp4_top_boxes(&mp4).last().unwrap(), "moov");
    let back = dir.join("back.flv");
    convert_in_shell(&format!("- '{}' -q < '{}'", back.display(), mp4.display()));
    assert_eq!(streams_of(&dir, "back", &back)[0].packets, 250);

    // Video only, from 4 s (a keyframe) to before 8 s: 100 frames, 2 keyframes, from 0.
    let cut = dir.join("cut.mp4");
    let out = run_convert(&[
        src.to_str().unwrap(),
        cut.to_str().unwrap(),
        "--tracks",
        "video",
        "--start",
        "4000",
        "--end",
        "8000",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["packets"], 100);
    assert_eq!(summary["tracks"][0]["keyframes"], 2);
    assert_eq!(summary["tracks"].as_array().unwrap().len(), 1);
    let got = streams_of(&dir, "cut", &cut);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].packets, got[0].keyframes), (100, 2));
    // From 5 s: output starts at the keyframe at 4 s, the one at or before it.
    let out = run_convert(&[
        src.to_str().unwrap(),
        dir.join("from5.flv").to_str().unwrap(),
        "--start",
        "5000",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["tracks"][0]["packets"], 150, "{summary}");
    assert_eq!(summary["tracks"][0]["first_ms"], 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn flv_files_written_carry_their_duration_and_pipes_none() {
    require_tools(&["ffprobe", "sh"]);
    let dir = unique_temp_dir("convert-flv-duration");
    // 250 frames at 25 fps and 432 AAC frames of 1024 samples at 44.1 kHz: 10.03 s.
    let ts = dir.join("x.ts");
    converted(&fixture("bframes.flv"), &ts, &[]);
    let flv = dir.join("x.flv");
    converted(&ts, &flv, &[]);
    let d = flv_duration_on_pipe(&flv).expect("no duration in onMetaData");
    assert!((d - 10.03).abs() < 0.01, "{d} s");
    // From the keyframe at 4 s (and the audio around it) to the end: 6 s and a little.
    let cut = dir.join("cut.flv");
    converted(&ts, &cut, &["--start", "5000"]);
    let d = flv_duration_on_pipe(&cut).expect("no duration in onMetaData");
    assert!((6.0..6.1).contains(&d), "{d} s");
    // Written to a pipe, the length is not known when onMetaData goes out: no duration
    // member at all (not a wrong one).
    let piped = dir.join("piped.flv");
    convert_in_shell(&format!(
        "'{}' - --to flv -q > '{}'",
        ts.display(),
        piped.display()
    ));
    assert_eq!(flv_duration_on_pipe(&piped), None);
    let _ = fs::remove_dir_all(&dir);
}

/// MP4 with `moov` first is written both ways the converter has: the head inserted in front
/// of payloads already written (file systems with `FALLOC_FL_INSERT_RANGE`, such as ext4: a
/// `free` box pads the head to whole blocks), and the payloads spooled and copied back after
/// the head (tmpfs, which cannot insert blocks). ffmpeg reads every frame from both.
#[test]
fn mp4_moov_first_on_a_file_system_with_and_without_block_insertion() {
    require_tools(&["ffmpeg"]);
    let dir = unique_temp_dir("convert-mp4-fs");
    let want = fixture_streams("bframes.flv");
    let shm = Path::new("/dev/shm");
    let mut places = vec![dir.clone()];
    if shm.is_dir() {
        let d = shm.join(format!("sluice-convert-test-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        places.push(d);
    }
    for place in &places {
        let mp4 = place.join("clip.mp4");
        converted(&fixture("bframes.flv"), &mp4, &[]);
        let top: Vec<String> = mp4_top_boxes(&mp4)
            .into_iter()
            .filter(|b| b != "free")
            .collect();
        assert_eq!(top, ["ftyp", "moov", "mdat"], "{}", mp4.display());
        let got = streams_of(&dir, "probe", &mp4);
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want) {
            g.assert_matches(w, 1, &mp4.display().to_string());
        }
    }
    for place in places {
        let _ = fs::remove_dir_all(place);
    }
}
