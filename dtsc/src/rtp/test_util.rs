//! Helpers the payload formats' tests share.

use crate::h264::{write_avcc, AvcConfig};
use crate::model::{Codec, Track, TrackKind};

/// An H.264 track whose init data is the avcC record of an encoder's High-profile, level
/// 3.0 SPS and its PPS.
pub(super) fn avc_track() -> Track {
    let sps = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
    ];
    let pps = [0x68, 0xeb, 0xec, 0xb2, 0x2c];
    let mut t = Track::new(1, TrackKind::Video, Codec::H264);
    let cfg = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
    write_avcc(&cfg, &mut t.init).unwrap();
    t
}

/// `nals` in DTSC form: each after a 4-byte length.
pub(super) fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nals {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}

/// An RTP packet (payload type 96, SSRC 1) with `payload`.
pub(super) fn rtp_packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, u8::from(marker) << 7 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1]);
    p.extend_from_slice(payload);
    p
}
