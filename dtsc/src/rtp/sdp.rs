//! What an SDP (RFC 4566) says of each track's RTP payload format: the `a=rtpmap` encoding,
//! the `a=fmtp` parameters and the payload type, each given by the format's own file; and
//! the base64 of `sprop-parameter-sets` and its kin.

use super::{aac, g711, h264, h265, mpa, Format};
use crate::model::Track;

/// The SDP media-level `a=fmtp` parameters of `track` (what follows `a=fmtp:PT `): H.264
/// `packetization-mode=1`, `profile-level-id` and `sprop-parameter-sets` (RFC 6184 §8.1);
/// HEVC `sprop-vps/sps/pps` (RFC 7798 §7.1); AAC the RFC 3640 AAC-hbr parameters with the
/// AudioSpecificConfig as hex `config`. `None` when the format has no parameters (MP3,
/// G.711), for codecs without a payload format here, and when the avcC or hvcC init data
/// cannot be read.
pub fn fmtp(track: &Track) -> Option<String> {
    match Format::of(&track.codec)? {
        Format::H264 => h264::fmtp(track),
        Format::H265 => h265::fmtp(track),
        Format::Aac => aac::fmtp(track),
        Format::Mpa | Format::G711 => None,
    }
}

/// The SDP `a=rtpmap` encoding of `track` (what follows `a=rtpmap:PT `): `H264/90000`,
/// `H265/90000`, `MPEG4-GENERIC/RATE/CHANNELS`, `MPA/90000`, `PCMA/RATE`, `PCMU/RATE` (with
/// `/CHANNELS` when more than one; RFC 3551 §6). `None` for codecs without a payload format
/// here, and for AAC without a sample rate.
pub fn rtpmap(track: &Track) -> Option<String> {
    match Format::of(&track.codec)? {
        Format::H264 => Some(h264::RTPMAP.into()),
        Format::H265 => Some(h265::RTPMAP.into()),
        Format::Aac => aac::rtpmap(track),
        Format::Mpa => Some(mpa::RTPMAP.into()),
        Format::G711 => Some(g711::rtpmap(track)),
    }
}

/// The payload type (7 bits) of `track` in an SDP where it is the `place`th medium (from
/// 0): RFC 3551's static types for G.711 at 8 kHz mono (PCMU 0, PCMA 8), else the dynamic
/// 96 + `place` (at most 127).
pub fn payload_type(track: &Track, place: usize) -> u8 {
    g711::static_payload_type(track).unwrap_or(96 + place.min(31) as u8)
}

/// Standard base64 (RFC 4648 §4) with padding, for `sprop-parameter-sets`.
pub fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes standard base64 (a received `sprop-parameter-sets` entry; surrounding
/// whitespace is ignored); `None` when invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::test_util::avc_track;

    #[test]
    fn sdp_parameters() {
        let t = avc_track();
        let f = fmtp(&t).unwrap();
        assert!(f.starts_with("packetization-mode=1;profile-level-id=64001E;sprop-parameter-sets=Z2QAHqzZQKAv+XARAAADAAEAAAMAMg8WLZY=,aOvssiw="), "{f}");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
