//! Receiving RTP from an encoder or a camera (untrusted): the input is cut into packets by
//! one length byte each and fed to a depacketizer of the codec its first byte picks; the
//! units it returns go through the decode-time rebuilder. With bit 6 of the first byte set
//! the packets pass a jitter buffer first (time moves 10 ms a packet), as over UDP. Nothing
//! panics, units are never empty, decode times increase, and the jitter buffer releases
//! sequence numbers in increasing order. With bit 7 set, AAC's SDP `sizelength` and
//! `indexlength` are any two u32s taken from the input.
#![no_main]

use dtsc::rtp::{Depacketizer, DtsFromPts, JitterBuffer};
use dtsc::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, mut rest)) = data.split_first() else {
        return;
    };
    let codec = [Codec::H264, Codec::Hevc, Codec::Aac, Codec::Mp3][usize::from(b & 3)].clone();
    // AAC's sizelength and indexlength come from the SDP (untrusted too): with bit 7 set,
    // any two u32s from the next 8 bytes; else a small sizelength and indexlength 3.
    let lengths = match rest.get(..8) {
        Some(w) if b & 0x80 != 0 => {
            rest = &rest[8..];
            let u = |i: usize| u32::from_be_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]);
            (u(0), u(4))
        }
        _ => (u32::from(b >> 2 & 15), 3),
    };
    let mut d = Depacketizer::new(codec, lengths);
    let mut jitter = (b & 0x40 != 0).then(|| JitterBuffer::new(50, 8));
    let mut now = 0u64;
    let mut released: Vec<u16> = Vec::new();
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
        match &mut jitter {
            None => {
                let _ = d.push(&tail[..n]);
            }
            Some(j) => {
                now += 10;
                let _ = j.push(tail[..n].to_vec(), now);
                while let Some(p) = j.pop(now) {
                    released.push(u16::from_be_bytes([p[2], p[3]]));
                    let _ = d.push(&p);
                }
            }
        }
        rest = &tail[n..];
        while let Some(u) = d.poll() {
            assert!(!u.data.is_empty());
            check(r.push(u.timestamp % (1 << 40) + 1000, u.keyframe, u.data));
        }
    }
    if let Some(j) = &mut jitter {
        for p in j.drain() {
            released.push(u16::from_be_bytes([p[2], p[3]]));
            let _ = d.push(&p);
        }
    }
    // In order, modulo the 16-bit wrap (a jump of more than half the space is a new run).
    for w in released.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        assert!(d != 0, "a sequence number released twice");
    }
    d.flush();
    while let Some(u) = d.poll() {
        check(r.push(u.timestamp % (1 << 40) + 1000, u.keyframe, u.data));
    }
    check(r.flush());
});
