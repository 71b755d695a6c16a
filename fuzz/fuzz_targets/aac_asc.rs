//! AAC AudioSpecificConfig (FLV / RTMP AAC sequence headers, DTSC `init`): `parse_asc` never
//! panics; a config `write_asc` can express (object type 1..=30 without SBR/PS extension)
//! writes back to bytes that parse to the same config; ADTS headers and codec strings for
//! any parsed config do not panic and are 7 bytes when written.
#![no_main]

use dtsc::aac;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(asc) = aac::parse_asc(data) else {
        return;
    };
    let _ = aac::codec_string(&asc);
    if (1..=30).contains(&asc.object_type) && asc.object_type != 5 && asc.object_type != 29 {
        let mut out = Vec::new();
        aac::write_asc(&asc, &mut out);
        let back = aac::parse_asc(&out).expect("write_asc output must parse");
        assert_eq!(asc, back, "written as {out:02x?}");
    }
    for raw_len in [0usize, 1, 8184, 8185, usize::MAX - 7] {
        let mut out = Vec::new();
        if aac::write_adts_header(&asc, raw_len, &mut out).is_ok() {
            assert_eq!(out.len(), aac::ADTS_HEADER_LEN);
            assert_eq!(&out[..2], &[0xff, 0xf1]);
        }
    }
});
