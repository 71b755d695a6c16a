//! Untrusted files through every file analyser of `sluice-analyse` (the first byte picks
//! FLV, MPEG-TS, MP4, DTSC, H.264, HEVC, ADTS or an AudioSpecificConfig): nothing panics,
//! every report serializes, and an error's byte offset lies within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_analysers::{aac, dtsc, flv, h264, hevc, mp4, ts};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, input)) = data.split_first() else {
        return;
    };
    let len = input.len() as u64;
    let err = match kind % 8 {
        0 => flv::analyse(input).error,
        1 => ts::analyse(input, None).error,
        2 => ts::analyse(input, Some(0x100)).error,
        3 => mp4::analyse(input, 10).error,
        4 => dtsc::analyse(input).error,
        5 => {
            let _ = h264::analyse(input);
            hevc::analyse(input).error
        }
        6 => aac::analyse(input).error,
        _ => aac::analyse_asc(input).error,
    };
    if let Some(e) = err {
        assert!(e.offset <= len, "error offset {} past {len} bytes", e.offset);
    }
});
