//! What a viewer sends the HTTP connector (untrusted), through every pure step before a
//! stream is opened: the request head (`http::parse_head`), percent-decoding of the target's
//! path elements (RFC 3986 §2.1), the query parameters (`?start=`/`?end=`, `?video=`/
//! `?audio=`, `?width=` and its snapping), the `Range` header (RFC 9110 §14) against a body
//! length taken from the input, track sets and their canonical form, and the segment names
//! of HLS, CMAF, DASH and HDS. Nothing panics; ranges lie inside the body; canonical track
//! sets are sorted, unique, and canonical again when parsed back.
#![no_main]

use connectors::core::{tracksel, url};
use connectors::http::{self, cmaf, hds, hls, thumbs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len_byte, rest)) = data.split_first() else {
        return;
    };
    let body_len = u64::from(len_byte) * 97;
    let text = String::from_utf8_lossy(rest);
    // The input as a request head, and as a bare target when it is not one.
    let target = match http::parse_head(rest) {
        http::HeadParse::Complete(h) => {
            assert!(h.used <= rest.len() + (1 << 20));
            if let Some(r) = &h.range {
                check_range(r, body_len);
            }
            h.path
        }
        _ => text.to_string(),
    };
    check_range(&text, body_len);
    let _ = http::protocol_of(&target);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    for part in path.split('/') {
        let bytes = url::percent_decode_bytes(part);
        assert!(bytes.len() <= part.len());
        match url::percent_decode_utf8(part) {
            Some(s) => assert_eq!(url::percent_decode(part), s),
            None => assert!(std::str::from_utf8(&bytes).is_err()),
        }
        if let Some(ids) = hls::parse_track_set(part) {
            let present: Vec<u32> = ids.iter().copied().filter(|i| i % 3 != 0).collect();
            if let Some((canon, name)) = hls::canonical_track_set(&ids, &present) {
                assert!(canon.windows(2).all(|w| w[0] < w[1]));
                let again = hls::parse_track_set(&name).expect("a canonical set parses");
                assert_eq!(
                    hls::canonical_track_set(&again, &present),
                    Some((canon, name))
                );
            }
        }
        let _ = hls::parse_segment_name(part);
        let _ = cmaf::parse_segment_name(part);
        let _ = cmaf::parse_part_name(part);
        let _ = cmaf::parse_dash_init(part);
        let _ = cmaf::parse_dash_chunk(part);
        let _ = cmaf::parse_hls_init(part);
        let _ = hds::parse_fragment_name(part);
        let _ = hds::parse_bootstrap_name(part);
    }
    let span = http::Span::from_query(query);
    let _ = span.start_ms.map(i64::unsigned_abs);
    let _ = tracksel::Selection::from_query(query).is_default();
    if let Some(w) = thumbs::width_of(query) {
        for source in [0, 320, 1920, u32::from(len_byte) * 16] {
            if let Some(snapped) = thumbs::snap_width(w, source) {
                assert!(thumbs::WIDTHS.contains(&snapped));
                assert!(source == 0 || snapped < source);
            }
        }
    }
});

fn check_range(header: &str, len: u64) {
    if let http::RangeReq::Bytes(r) = http::parse_range(header, len) {
        assert!(r.start < r.end && r.end <= len);
    }
}
