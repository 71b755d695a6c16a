//! Bad input is refused without harming anyone else: a bad RTMP handshake, a chunk size of
//! 0, an unknown stream over RTMP and HLS, a config file that does not parse.
use sluice_e2e::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn c1_bytes() -> Vec<u8> {
    let mut c1 = vec![0u8; 1536];
    // time 0, zero 0, then pseudo-random filler
    let mut x: u32 = 0x1234_5678;
    for b in c1[8..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    c1
}

#[test]
fn bad_rtmp_bytes_are_disconnected_while_a_viewer_plays_on() {
    require_tools(&["ffmpeg", "timeout"]);
    let file = fixture("bframes.flv");
    let srv = Server::start();
    let url = srv.rtmp_url("live");

    let player = ffmpeg_framecrc(&srv.dir, "player", &url, &[], 40);
    srv.wait_rtmp_players(1, Duration::from_secs(2));
    let publisher = ffmpeg_publish(&srv.dir, "publisher", &file, &url, 40);
    thread::sleep(Duration::from_secs(2));

    // 1. C0 = 0x07 (not RTMP version 3): disconnected.
    let mut s = rtmp_socket(&srv);
    let mut hs = vec![0x07u8];
    hs.extend(c1_bytes());
    let _ = s.write_all(&hs);
    if let Err(e) = read_until_closed(&mut s, Duration::from_secs(5)) {
        panic!(
            "bad handshake (C0=0x07) not disconnected: {e}\n--- server ---\n{}",
            srv.stderr_tail(30)
        );
    }

    // 2. A valid handshake, then Set Chunk Size 0: disconnected.
    let mut s = rtmp_socket(&srv);
    let c1 = c1_bytes();
    let mut hs = vec![0x03u8];
    hs.extend(&c1);
    s.write_all(&hs).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    s.read_exact(&mut s0s1s2)
        .unwrap_or_else(|e| panic!("reading S0S1S2 after a valid C0C1: {e}"));
    assert_eq!(s0s1s2[0], 3, "S0 is not version 3");
    let s1 = s0s1s2[1..1537].to_vec();
    s.write_all(&s1).unwrap(); // C2 echoes S1
                               // basic header fmt 0 csid 2; ts 0; length 4; type 1 (Set Chunk Size); stream id 0 (LE)
    let chunk: [u8; 16] = [0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
    s.write_all(&chunk).unwrap();
    if let Err(e) = read_until_closed(&mut s, Duration::from_secs(5)) {
        panic!(
            "Set Chunk Size 0 not disconnected: {e}\n--- server ---\n{}",
            srv.stderr_tail(30)
        );
    }

    // 3. A garbage flood on a third connection, closed by us: no effect on anyone.
    let mut s = rtmp_socket(&srv);
    let _ = s.write_all(&[0xffu8; 4096]);
    drop(s);

    let pub_out = publisher.wait();
    assert!(
        pub_out.status.success(),
        "publisher failed:\n{}",
        pub_out.describe()
    );
    let out = player.wait();
    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(
        cap.video().len(),
        250,
        "the concurrent viewer lost video: {diag}"
    );
    assert_eq!(
        cap.audio().len(),
        432,
        "the concurrent viewer lost audio: {diag}"
    );
    assert!(
        srv.rtmp_listener().is_some(),
        "RTMP listener gone: {:?}",
        srv.procs()
    );
}

#[test]
fn unknown_streams_are_refused() {
    require_tools(&["ffmpeg", "rtmpdump", "timeout"]);
    let srv = Server::start();

    // RTMP: ffmpeg fails, and fails fast (the server says so; not the 5 s read timeout).
    let url = srv.rtmp_url("nosuch");
    let out = ffmpeg_framecrc(&srv.dir, "ffmpeg-nosuch", &url, &[], 20).wait();
    let took = out.ended - out.started;
    assert!(
        !out.status.success(),
        "ffmpeg playing an unknown stream exited 0:\n{}",
        out.describe()
    );
    assert!(
        Capture::from_output(&out).packets.is_empty(),
        "unknown stream delivered packets:\n{}",
        out.describe()
    );
    assert!(
        took < Duration::from_secs(4),
        "refusal took {took:?} (rw_timeout is 5 s): not refused actively:\n{}",
        out.describe()
    );
    eprintln!("ffmpeg on an unknown stream:\n{}", out.describe());

    // librtmp shows the status code: NetStream.Play.StreamNotFound.
    let out = rtmpdump(&srv.dir, "rtmpdump-nosuch", &url, "/dev/null", 20).wait();
    assert!(out.stdout().is_empty(), "{}", out.describe());
    assert!(
        out.stderr.contains("StreamNotFound"),
        "rtmpdump does not report NetStream.Play.StreamNotFound:\n{}",
        out.describe()
    );
    assert!(!out.status.success(), "{}", out.describe());

    // HLS: 404.
    let r = srv
        .get("/hls/nosuch/index.m3u8")
        .expect("GET /hls/nosuch/index.m3u8");
    assert_eq!(
        r.status,
        404,
        "unknown HLS stream: {:?}\n{}",
        r.headers,
        r.text()
    );

    // The configured but unpublished push stream and the server are still fine.
    srv.active_streams().expect("API after refusals");
    assert!(port_accepts(srv.rtmp_port) && port_accepts(srv.http_port));
}

#[test]
fn unparseable_config_is_reported_and_left_alone() {
    let dir = unique_temp_dir("badcfg");
    let path = dir.join("broken-config.json");
    let text = "{\n  \"config\": {\n    \"controller\": {\"interface\": \"127.0.0.1\", \"port\": 4242,,}\n  },\n  \"streams\": {}\n}\n";
    std::fs::write(&path, text).unwrap();
    let err = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
    let (line, col) = (err.line(), err.column());
    let rundir = dir.join("run");
    std::fs::create_dir_all(&rundir).unwrap();

    let mut child = Command::new(sluice_bin())
        .arg("-c")
        .arg(&path)
        .arg("--rundir")
        .arg(&rundir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        // kill it by pid (and its group, should it have made one)
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let status =
        status.unwrap_or_else(|| panic!("sluice kept running with a broken config:\n{stderr}"));
    assert!(
        !status.success(),
        "sluice exited 0 on a broken config:\n{stderr}"
    );
    assert!(
        stderr.contains("broken-config.json"),
        "the error does not name the file:\n{stderr}"
    );
    let pos_a = format!("{line}:{col}");
    let pos_b = format!("line {line} column {col}");
    assert!(
        stderr.contains(&pos_a) || stderr.contains(&pos_b),
        "the error does not give line:column {pos_a}:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "sluice changed the broken config file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
