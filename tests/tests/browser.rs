//! Headless Chromium plays every browser output through Sluice's own player page
//! (`/S.html?player=…`, with hls.js, dash.js and mpegts.js served by Sluice): an ended
//! stream to `ended` with every frame decoded, and a live one for 10 s without a stall. The
//! LL-HLS run reports hls.js's latency behind the live edge.
use serde_json::Value;
use sluice_e2e::*;
use std::time::Duration;

/// Every player of the page, by its `?player=` name.
const PLAYERS: &[&str] = &[
    "hlsjs",
    "hlsjs-cmaf",
    "hlsjs-ll",
    "dashjs",
    "dashjs-mss",
    "mpegts-flv",
    "mpegts-ts",
    "native-mp4",
];

fn last<'a>(ev: &'a [Value], event: &str) -> Option<&'a Value> {
    ev.iter().rev().find(|e| e["event"] == event)
}

fn summary(ev: &[Value]) -> String {
    ev.iter()
        .filter(|e| e["event"] != "progress")
        .chain(last(ev, "progress"))
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Plays the ended stream `stream` with `player` to `ended`; returns the events.
fn play_ended(srv: &Server, stream: &str, player: &str) -> Vec<Value> {
    let c = chromium(
        &srv.dir,
        &format!("chromium-ended-{}", player.replace(['&', '='], "-")),
        40,
        &srv.http_url(&format!("/{stream}.html?player={player}&live=0")),
    );
    // The clip is 10 s: a run that has not ended after 22 s has failed, and waiting longer
    // would let the next pair's ended stream run out of its 30 s (as once in CI, when dash.js
    // played Smooth on for 33 s).
    let ev = wait_player(&c, Duration::from_secs(22), |ev| {
        last(ev, "ended").is_some() || last(ev, "error").is_some()
    });
    stop_chromium(c);
    ev
}

/// Makes sure `stream` is an ended stream still held by its buffer (HLS playlist with
/// `#EXT-X-ENDLIST`): when it has run out of its 30 s, the clip is published to it again and
/// waited for.
fn ensure_ended(srv: &Server, stream: &str, file: &std::path::Path) {
    let held = srv
        .get(&format!("/hls/{stream}/index.m3u8"))
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| {
            let master = r.text();
            let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
            srv.get(&format!("/hls/{stream}/{variant}")).ok()
        })
        .is_some_and(|r| r.text().contains("#EXT-X-ENDLIST"));
    if !held {
        eprintln!("{stream} ran out of its time; publishing it again");
        let p = ffmpeg_publish(
            &srv.dir,
            &format!("re-{stream}"),
            file,
            &srv.rtmp_url(stream),
            30,
        );
        assert!(p.wait().status.success());
    }
}

/// Plays the live stream `live` with `player` until 10 s have played (or an error).
fn play_live(srv: &Server, player: &str, label: &str) -> Vec<Value> {
    let c = chromium(
        &srv.dir,
        &format!("chromium-live-{label}"),
        45,
        &srv.http_url(&format!("/live.html?player={player}")),
    );
    let ev = wait_player(&c, Duration::from_secs(35), |ev| {
        last(ev, "error").is_some()
            || last(ev, "progress").is_some_and(|e| e["playing_ms"].as_u64() >= Some(10_000))
    });
    stop_chromium(c);
    ev
}

/// What is wrong with a live run: an error, less than 10 s played, a stall, frames missing,
/// or (for the page's own pick) a player that is not an HLS one.
fn live_problem(player: &str, ev: &[Value]) -> Option<String> {
    let p = last(ev, "progress").cloned().unwrap_or_default();
    let played = p["playing_ms"].as_u64().unwrap_or(0);
    let frames = p["frames"].as_u64().unwrap_or(0);
    let why = if last(ev, "error").is_some() || played < 10_000 {
        "did not play 10 s of live"
    } else if p["stalls"].as_u64() != Some(0) {
        "stalled on live"
    } else if frames < 240 {
        "decoded under 240 frames in 10 s of live"
    } else if player == "auto" && p["player"] != "hlsjs" && p["player"] != "native-hls" {
        // Chromium plays HLS natively since version 141; older ones take hls.js.
        "picked a player that is not HLS"
    } else {
        return None;
    };
    Some(format!("{player} {why}:\n{}", summary(ev)))
}

/// What is wrong with a run of an ended stream: not played to `ended`, an error, or not
/// the 250 frames, give or take what the players themselves do: one that seeks over the
/// 57 ms between the audio and the video start decodes a few frames twice; dash.js starts a
/// static presentation at the later track's first sample and ends it at the shorter
/// track's end, which skips frames (244-254 of 250 seen over eight runs, DASH and Smooth).
fn ended_problem(player: &str, ev: &[Value]) -> Option<String> {
    let ended = last(ev, "ended");
    let frames = ended.and_then(|e| e["frames"].as_u64()).unwrap_or(0);
    let range = if player.starts_with("dashjs") {
        240..=255
    } else {
        248..=255
    };
    if ended.is_none() || last(ev, "error").is_some() {
        Some(format!(
            "{player} did not play the ended stream to its end:\n{}",
            summary(ev)
        ))
    } else if !range.contains(&frames) {
        Some(format!(
            "{player} decoded {frames} of 250 frames:\n{}",
            summary(ev)
        ))
    } else {
        None
    }
}

#[test]
fn chromium_plays_every_browser_output() {
    require_tools(&["ffmpeg", "chromium", "timeout"]);
    let srv = Server::start_with_config(|cfg| {
        cfg["streams"]["multi"] = serde_json::json!({
            "name": "multi", "source": fixture("multi.ts").to_str().unwrap(), "loop": false
        });
    });
    let file = fixture("bframes.flv");

    // Ended streams (the buffer keeps one 30 s after its publisher leaves): one stream per
    // pair of players, the next one published while the previous pair plays.
    let mut failures = Vec::new();
    let mut publisher = Some(ffmpeg_publish(
        &srv.dir,
        "pub-0",
        &file,
        &srv.rtmp_url("live+vod0"),
        30,
    ));
    for (n, pair) in PLAYERS.chunks(2).enumerate() {
        assert!(publisher.take().unwrap().wait().status.success());
        let stream = format!("live+vod{n}");
        if n + 1 < PLAYERS.len().div_ceil(2) {
            publisher = Some(ffmpeg_publish(
                &srv.dir,
                &format!("pub-{}", n + 1),
                &file,
                &srv.rtmp_url(&format!("live+vod{}", n + 1)),
                30,
            ));
        }
        ensure_ended(&srv, &stream, &file);
        let results: Vec<(String, Vec<Value>)> = std::thread::scope(|s| {
            let handles: Vec<_> = pair
                .iter()
                .map(|p| {
                    let (srv, stream) = (&srv, &stream);
                    s.spawn(move || (p.to_string(), play_ended(srv, stream, p)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (player, ev) in results {
            eprintln!("ended {player} (attempt 1):\n{}", summary(&ev));
            let mut problem = ended_problem(&player, &ev);
            // One retry, as for live runs (the stream stays 30 s after its publish; published
            // again if a slow first run outlasted it).
            if problem.is_some() {
                ensure_ended(&srv, &stream, &file);
                let ev = play_ended(&srv, &stream, &player);
                eprintln!("ended {player} (attempt 2):\n{}", summary(&ev));
                problem = ended_problem(&player, &ev);
            }
            failures.extend(problem);
        }
    }

    // Live: 10 s of playback each, one player at a time (two would share these two cores
    // with the server and the publisher), on one long publish that players join once it
    // has a few segments, as viewers of a running stream do; the page without ?player=
    // picks a player itself.
    let live = ffmpeg_publish_loop(&srv.dir, "pub-live", &file, &srv.rtmp_url("live"), 17, 200);
    let established = poll(Duration::from_secs(20), || {
        srv.get("/hls/live/1_2/index.m3u8")
            .ok()
            .filter(|r| r.text().matches("#EXTINF").count() >= 4)
    });
    assert!(
        established.is_some(),
        "the live stream never had 4 segments"
    );
    let mut all: Vec<&str> = PLAYERS.to_vec();
    all.push("");
    let mut latency = None;
    for p in all {
        let label = if p.is_empty() { "auto" } else { p };
        // One retry: on this shared 2-core machine a burst of other work can starve one run
        // of a player; a second failure in a row fails the test.
        let mut problem = None;
        for attempt in 0..2 {
            let ev = play_live(&srv, p, &format!("{label}-{attempt}"));
            let last_progress = last(&ev, "progress").cloned().unwrap_or_default();
            eprintln!("live {label} (attempt {}):\n{}", attempt + 1, summary(&ev));
            problem = live_problem(label, &ev);
            if label == "hlsjs-ll" {
                latency = last_progress["latency"].as_f64();
            }
            if problem.is_none() {
                break;
            }
        }
        failures.extend(problem);
    }
    stop_client(live);

    // Several tracks (multi.ts held whole: two video renditions, English and Swedish audio):
    // hls.js with audio renditions beside video-only variants, on TS and on fMP4 segments,
    // and dash.js with two audio adaptation sets. Each offers both audio tracks, plays the
    // one the page asks for (?audio=) or the default (the first), and decodes every frame.
    for (player, audio) in [("hlsjs", "swe"), ("hlsjs-cmaf", ""), ("dashjs", "swe")] {
        let query = if audio.is_empty() {
            player.to_string()
        } else {
            format!("{player}&audio={audio}")
        };
        // dash.js reports languages in their BCP 47 form (the two-letter code).
        let (want, short) = if audio.is_empty() {
            ("eng", "en")
        } else {
            ("swe", "sv")
        };
        let mut problem = None;
        for attempt in 0..2 {
            let ev = play_ended(&srv, "multi", &query);
            eprintln!(
                "several tracks, {query} (attempt {}):\n{}",
                attempt + 1,
                summary(&ev)
            );
            problem = ended_problem(player, &ev).or_else(|| {
                let e = last(&ev, "ended")?;
                let lang = e["audio_lang"].as_str().unwrap_or("");
                (e["audio_tracks"] != 2 || (lang != want && lang != short)).then(|| {
                    format!(
                        "{query}: audio tracks {} playing {} (want 2, {want})",
                        e["audio_tracks"], e["audio_lang"]
                    )
                })
            });
            if problem.is_none() {
                break;
            }
        }
        failures.extend(problem);
    }
    eprintln!("LL-HLS latency behind the live edge in hls.js: {latency:?} s");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let latency = latency.expect("hls.js reported its latency");
    assert!(latency > 0.0 && latency < 4.0, "LL-HLS latency {latency} s");
}
