//! Receiving RTP from an encoder or a camera (untrusted): the input is cut into packets by
//! one length byte each and fed to a depacketizer of the codec its first byte picks; the
//! units it returns go through the decode-time rebuilder. Nothing panics, units are never
//! empty, and decode times increase.
#![no_main]

use dtsc::rtp::{Depacketizer, DtsFromPts};
use dtsc::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, mut rest)) = data.split_first() else {
        return;
    };
    let codec = [Codec::H264, Codec::Hevc, Codec::Aac, Codec::Mp3][usize::from(b & 3)].clone();
    let mut d = Depacketizer::new(codec, (u32::from(b >> 2 & 15), 3));
    let mut r = DtsFromPts::new(5, 200);
    let mut last = None;
    let mut check = |out: Vec<(u64, i64, bool, Vec<u8>)>| {
        for (dts, _, _, _) in out {
            assert!(last.is_none_or(|l| dts > l), "DTS went backwards");
            last = Some(dts);
        }
    };
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let _ = d.push(&tail[..n]);
        rest = &tail[n..];
        while let Some(u) = d.poll() {
            assert!(!u.data.is_empty());
            check(r.push(u.timestamp % (1 << 40) + 1000, u.keyframe, u.data));
        }
    }
    d.flush();
    while let Some(u) = d.poll() {
        check(r.push(u.timestamp % (1 << 40) + 1000, u.keyframe, u.data));
    }
    check(r.flush());
});
