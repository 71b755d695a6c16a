//! RTP packetization of untrusted stream data (a publisher's init data and access units):
//! the first byte picks the codec and splits the rest into init data and payload. Every
//! packet fits the MTU, has a version-2 header, and sequence numbers run on by one.
#![no_main]

use dtsc::rtp::{self, Packetizer};
use dtsc::{Codec, PacketRef, Track, TrackKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else {
        return;
    };
    let split = (usize::from(b >> 2) * 4).min(rest.len());
    let (init, payload) = rest.split_at(split);
    let (kind, codec) = match b & 3 {
        0 => (TrackKind::Video, Codec::H264),
        1 => (TrackKind::Video, Codec::Hevc),
        2 => (TrackKind::Audio, Codec::Aac),
        _ => (TrackKind::Audio, Codec::Mp3),
    };
    let mut t = Track::new(1, kind, codec);
    t.init = init.to_vec();
    t.rate = 44_100;
    t.channels = 2;
    let _ = rtp::fmtp(&t);
    let _ = rtp::rtpmap(&t);
    let Some(mut p) = Packetizer::new(&t, 96, 7, 65_530, 0) else {
        return;
    };
    let pr = PacketRef { track: 1, dts: 40, offset: 40, keyframe: b & 4 != 0, bpos: 0, data: payload };
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    p.packetize(&pr, &mut out, &mut spans);
    let mut seq = 65_530u16;
    for s in &spans {
        let pkt = &out[s.clone()];
        assert!(pkt.len() <= rtp::DEFAULT_MTU && pkt.len() >= rtp::RTP_HEADER_LEN);
        assert_eq!(pkt[0] >> 6, 2);
        assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]), seq);
        seq = seq.wrapping_add(1);
    }
});
