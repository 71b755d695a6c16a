//! H.264 parameter parsing from untrusted streams: `parse_sps` on the input as a NAL unit,
//! `parse_avcc` on it as an avcC record (then `parse_sps` on its SPS, and `write_avcc` →
//! `parse_avcc` gives the same record), `avcc_to_annexb` with a length size taken from
//! the first byte (0..=7, invalid sizes included), and `hevc::parse_hvcc` on it as an HEVC
//! decoder configuration record (its NAL units fit in the input), and `hevc::parse_sps` on
//! the input and on each SPS of that record (through the VUI timing, which is never 0).
#![no_main]

use dtsc::{h264, hevc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let hevc_sps = |nal: &[u8]| {
        if let Ok(s) = hevc::parse_sps(nal) {
            if let Some((tick, scale)) = s.timing {
                assert!(tick > 0 && scale > 0);
            }
        }
    };
    hevc_sps(data);
    if let Ok(cfg) = hevc::parse_hvcc(data) {
        let total: usize = cfg.nal_units.iter().map(|(_, n)| n.len()).sum();
        assert!(total <= data.len());
        for (kind, nal) in &cfg.nal_units {
            assert!(*kind < 64);
            let _ = hevc::nal_type(nal);
            hevc_sps(nal);
        }
    }
    if let Ok(info) = h264::parse_sps(data) {
        let _ = info.fpks();
    }

    if let Ok(cfg) = h264::parse_avcc(data) {
        let _ = h264::codec_string(&cfg);
        for sps in &cfg.sps {
            if let Ok(info) = h264::parse_sps(sps) {
                let _ = info.fpks();
            }
        }
        let mut out = Vec::new();
        h264::write_avcc(&cfg, &mut out).expect("a parsed avcC must be writable");
        let back = h264::parse_avcc(&out).expect("write_avcc output must parse");
        assert_eq!(cfg, back);
    }

    if let Some((&b, payload)) = data.split_first() {
        let size = b & 7;
        let mut out = vec![0xAA];
        match h264::avcc_to_annexb(payload, size, &mut out) {
            Ok(()) => {
                let nals: Vec<&[u8]> = h264::nal_units(payload, size)
                    .map(|n| n.expect("avcc_to_annexb accepted the payload"))
                    .collect();
                let want: usize = nals
                    .iter()
                    .filter(|n| !n.is_empty())
                    .map(|n| 4 + n.len())
                    .sum();
                assert_eq!(out.len(), 1 + want);
                for n in nals {
                    let _ = h264::nal_type(n);
                }
            }
            Err(_) => assert_eq!(out, [0xAA], "output not restored after an error"),
        }
        if payload.len() >= 4 {
            let (sps, pps) = payload.split_at(payload.len() / 2);
            if let Ok(cfg) = h264::AvcConfig::from_parameter_sets(sps, pps) {
                let mut out = Vec::new();
                if h264::write_avcc(&cfg, &mut out).is_ok() {
                    assert_eq!(h264::parse_avcc(&out).as_ref(), Ok(&cfg));
                }
            }
        }
    }
});
