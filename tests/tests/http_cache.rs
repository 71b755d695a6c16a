//! An HTTP cache in front of Sluice (Debian's nginx with `proxy_cache`, started by the test):
//! 50 HLS players through it make Sluice serve each segment once, because segments are
//! immutable and say so (`Cache-Control: public, max-age=…, immutable`) while playlists are
//! `no-cache`; ffmpeg through the cache still gets every frame.
use sluice_e2e::*;
use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn fifty_hls_players_through_nginx_fetch_each_segment_from_sluice_once() {
    require_tools(&["nginx", "ffmpeg", "timeout"]);
    let bench = sluice_bin().with_file_name("sluice-bench");
    assert!(bench.is_file(), "{} not built", bench.display());
    let srv = Server::start();
    let http = srv
        .http_url("/")
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let dir = srv.dir.join("nginx");
    fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    // Every path nginx writes is under the test's folder; one worker. Segments go through
    // the cache, whose lock makes concurrent misses of one segment wait for the first fetch;
    // playlists are passed through (a lock on an uncacheable playlist would hold players up
    // to the lock timeout).
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nerror_log {d}/logs/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  log_format cache '$uri $upstream_cache_status $status';\n\
           access_log {d}/logs/access.log cache;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           proxy_cache_path {d}/cache keys_zone=hls:10m;\n\
           server {{\n    listen 127.0.0.1:{port};\n\
             proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n\
             location / {{\n      proxy_pass http://127.0.0.1:{http};\n    }}\n\
             location ~ \\.ts$ {{\n      proxy_pass http://127.0.0.1:{http};\n\
               proxy_cache hls;\n      proxy_cache_lock on;\n\
               proxy_cache_lock_timeout 10s;\n    }}\n  }}\n}}\n",
        d = dir.display()
    );
    fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stderr(fs::File::create(dir.join("logs/stderr")).unwrap())
        .spawn()
        .expect("start nginx");
    assert!(
        poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some(),
        "nginx did not listen: {}",
        fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
    );

    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        "publisher",
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        1,
        40,
    );
    let via = format!("http://127.0.0.1:{port}/hls/live/index.m3u8");
    assert!(
        poll(Duration::from_secs(15), || {
            http_get(port, "/hls/live/index.m3u8")
                .ok()
                .filter(|r| r.status == 200)
        })
        .is_some(),
        "no playlist through nginx"
    );
    // 50 players that fetch the playlist, each new segment once, and wait a target duration
    // (issue 3's load client), plus ffmpeg counting frames, all through nginx.
    let players = spawn_client(
        &srv.dir,
        "hls-players",
        40,
        bench.to_str().unwrap(),
        &[
            "load".to_string(),
            "--publishers".to_string(),
            "0".to_string(),
            "--hls-url".to_string(),
            via.clone(),
            "--hls-players".to_string(),
            "50".to_string(),
            "--seconds".to_string(),
            "10".to_string(),
            "--warmup-ms".to_string(),
            "0".to_string(),
        ],
    );
    let ff = ffmpeg_framecrc(
        &srv.dir,
        "ffmpeg-via-nginx",
        &via,
        &["-live_start_index", "0", "-m3u8_hold_counters", "3"],
        40,
    );
    let players = players.wait();
    let pub_out = publisher.wait();
    assert!(pub_out.status.success(), "{}", pub_out.describe());
    let out = ff.wait();
    // SIGTERM: nginx's master stops its workers; a SIGKILL would leave them running.
    sigterm(nginx.id());
    let _ = nginx.wait();

    let log = fs::read_to_string(dir.join("logs/access.log")).unwrap();
    // Per segment: how many requests, and how many went on to Sluice (MISS).
    let mut segs: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut playlists_cached = 0;
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (uri, status) = (f[0], f.get(1).copied().unwrap_or("-"));
        // 206: nginx answers ffmpeg's range requests from the whole cached segment.
        if uri.ends_with(".ts") && matches!(f.get(2), Some(&"200") | Some(&"206")) {
            let e = segs.entry(uri.to_string()).or_default();
            e.0 += 1;
            // Anything but a cache hit was fetched from Sluice (MISS, EXPIRED, UPDATING…).
            if status != "HIT" {
                e.1 += 1;
            }
        } else if uri.ends_with(".m3u8") && status == "HIT" {
            playlists_cached += 1;
        }
    }
    let requests: usize = segs.values().map(|v| v.0).sum();
    let diag = format!(
        "{segs:?}\nplayers:\n{}\n{}",
        players.describe(),
        players.stdout_text()
    );
    assert!(segs.len() >= 4, "segments seen through nginx: {diag}");
    assert!(
        requests >= 50 * 3,
        "only {requests} segment requests from 50 players: {diag}"
    );
    for (uri, (n, from_sluice)) in &segs {
        assert_eq!(
            *from_sluice, 1,
            "{uri}: {n} requests, {from_sluice} of them fetched from Sluice: {diag}"
        );
    }
    assert_eq!(
        playlists_cached, 0,
        "a live playlist was served from the cache"
    );

    let cap = Capture::from_output(&out);
    let diag = format!("{}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.video().len(), 500, "ffmpeg through nginx: {diag}");
    assert_eq!(cap.audio().len(), 864, "ffmpeg through nginx: {diag}");
}
