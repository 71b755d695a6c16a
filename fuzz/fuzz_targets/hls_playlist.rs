//! An HLS playlist from an upstream (untrusted) read by the HLS pull input
//! (`dtsc::hls::parse_playlist`), and every URI in it resolved against a base
//! (`dtsc::hls::resolve_uri`). Nothing panics; segment numbers count up from the media
//! sequence.
#![no_main]

use dtsc::hls::{parse_playlist, resolve_uri, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_playlist(&text) {
        Ok(Parsed::Media(m)) => {
            for (i, (msn, _, uri)) in m.segments.iter().enumerate() {
                assert_eq!(*msn, m.media_sequence + i as u64);
                let _ = resolve_uri("http://h:1/a/b.m3u8?x", uri);
            }
        }
        Ok(Parsed::Master(v)) => {
            for (_, uri) in &v {
                let _ = resolve_uri("https://h/a.m3u8", uri);
            }
        }
        Err(_) => {}
    }
});
