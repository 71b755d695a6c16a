//! Untrusted playlists and segments through `sluice-analyse`'s RFC 8216 checker
//! (`sluice_analysers::hls::MediaChecker`): the input is split at `\0` into successive
//! loads of a playlist, then an init segment and a segment. Nothing panics and the reload
//! interval stays within 0.5..=60 s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_analysers::hls::MediaChecker;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let mut c = MediaChecker::new("http://127.0.0.1/a/index.m3u8");
    let mut t = 0;
    for text in parts.by_ref().take(4) {
        let _ = c.playlist(&String::from_utf8_lossy(text), t);
        let after = c.reload_after_ms();
        assert!((500..=60_000).contains(&after), "reload after {after} ms");
        t += after;
    }
    if let Some(init) = parts.next() {
        c.init_segment(init);
    }
    if let Some(seg) = parts.next() {
        c.segment(0, "s.ts", 2000, seg);
    }
    let _ = c.finish();
});
