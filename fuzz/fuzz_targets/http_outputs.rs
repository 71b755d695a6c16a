//! What the HTTP outputs read from a request, and the ISO BMFF box reader: the Smooth
//! Streaming fragment URL (`dtsc::smooth::parse_fragment_url`, MS-SSTR §2.2.3), the HDS
//! fragment URL (`dtsc::hds::parse_fragment_url`), the LL-HLS blocking reload query
//! (`dtsc::hls::parse_blocking_request`, RFC 8216bis §6.2.5.2), each on the input as text;
//! and `dtsc::mp4::boxes` / `find_box` / `full_box` on it as bytes. None may panic, and what
//! parses must print back to the same values.
#![no_main]

use dtsc::{hds, hls, mp4, smooth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some((bitrate, name, t)) = smooth::parse_fragment_url(&text) {
        let url = format!("QualityLevels({bitrate})/Fragments({name}={t})");
        assert_eq!(smooth::parse_fragment_url(&url), Some((bitrate, name, t)));
    }
    if let Some((prefix, seg, frag)) = hds::parse_fragment_url(&text) {
        assert!(text.starts_with(prefix));
        let url = format!("{prefix}Seg{seg}-Frag{frag}");
        assert_eq!(hds::parse_fragment_url(&url), Some((prefix, seg, frag)));
    }
    if let Some((msn, part)) = hls::parse_blocking_request(&text) {
        let q = match part {
            Some(p) => format!("_HLS_msn={msn}&_HLS_part={p}"),
            None => format!("_HLS_msn={msn}"),
        };
        assert_eq!(hls::parse_blocking_request(&q), Some((msn, part)));
    }
    let mut it = mp4::boxes(data);
    for (_, payload) in it.by_ref() {
        let _ = mp4::full_box(payload);
        for (_, inner) in mp4::boxes(payload) {
            let _ = mp4::full_box(inner);
        }
    }
    assert!(it.rest().len() <= data.len());
    let _ = mp4::find_box(data, &[b"moov", b"trak", b"mdia"]);
    let _ = mp4::find_box(data, &[b"moof", b"traf", b"trun"]);
});
