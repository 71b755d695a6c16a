//! MPEG audio frame headers (ISO/IEC 11172-3 §2.4.2.3, with the ISO/IEC 13818-3 lower
//! sampling frequencies and the unofficial but universal MPEG 2.5 extension): what a demuxer
//! needs to split an elementary stream into frames and to describe its track. Only Layer III
//! is [`Codec::Mp3`](crate::Codec::Mp3); Layers I and II are read so that they can be named
//! and refused.

/// One MPEG audio frame header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// 1 for MPEG-1, 2 for MPEG-2, 25 for MPEG 2.5.
    pub version: u8,
    /// 1, 2 or 3 (Layer III is MP3).
    pub layer: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// 1 (mode 3, single channel) or 2.
    pub channels: u8,
    /// Bit rate in bits per second.
    pub bitrate: u32,
    /// Length of the whole frame in bytes, header included.
    pub frame_len: usize,
    /// PCM samples per channel the frame decodes to (384, 576 or 1152).
    pub samples: u32,
}

/// Bit rates in kbit/s by bitrate_index 1..=14: MPEG-1 Layer I, II, III, then MPEG-2/2.5
/// Layer I and Layers II/III (ISO/IEC 11172-3 Table 3-B.1, ISO/IEC 13818-3 Table 3-B.1).
const BITRATES: [[u16; 14]; 5] = [
    [
        32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    [
        32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    [
        32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    [
        32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// Reads the 4-byte frame header at the start of `b`; `None` when `b` is shorter than 4
/// bytes or is not a header this reader accepts (no 11-bit sync, a reserved version, layer,
/// sampling frequency or the `free`/`bad` bit rate indexes 0 and 15).
pub fn parse_header(b: &[u8]) -> Option<FrameHeader> {
    let h = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    if h >> 21 != 0x7ff {
        return None;
    }
    let version = match (h >> 19) & 3 {
        0 => 25,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let layer = match (h >> 17) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let br_index = ((h >> 12) & 0xf) as usize;
    if br_index == 0 || br_index == 15 {
        return None;
    }
    let base_rate = match (h >> 10) & 3 {
        0 => 44100,
        1 => 48000,
        2 => 32000,
        _ => return None,
    };
    let sample_rate = match version {
        1 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let padding = ((h >> 9) & 1) as usize;
    let channels = if (h >> 6) & 3 == 3 { 1 } else { 2 };
    let table = match (version, layer) {
        (1, l) => l as usize - 1,
        (_, 1) => 3,
        _ => 4,
    };
    let bitrate = u32::from(BITRATES[table][br_index - 1]) * 1000;
    let (samples, frame_len) = match (layer, version) {
        (1, _) => (384, (12 * bitrate / sample_rate) as usize * 4 + padding * 4),
        (3, v) if v != 1 => (576, (72 * bitrate / sample_rate) as usize + padding),
        _ => (1152, (144 * bitrate / sample_rate) as usize + padding),
    };
    Some(FrameHeader {
        version,
        layer,
        sample_rate,
        channels,
        bitrate,
        frame_len,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_common_headers() {
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, joint stereo, no padding.
        let h = parse_header(&[0xff, 0xfb, 0x90, 0x44]).unwrap();
        assert_eq!(
            (h.version, h.layer, h.sample_rate, h.channels),
            (1, 3, 44100, 2)
        );
        assert_eq!((h.bitrate, h.frame_len, h.samples), (128_000, 417, 1152));
        // Same with padding: one byte more.
        assert_eq!(
            parse_header(&[0xff, 0xfb, 0x92, 0x44]).unwrap().frame_len,
            418
        );
        // MPEG-2 Layer III, 64 kbit/s, 22.05 kHz, mono: 72 * 64000 / 22050 = 208.
        let h = parse_header(&[0xff, 0xf3, 0x80, 0xc4]).unwrap();
        assert_eq!(
            (h.version, h.sample_rate, h.channels, h.frame_len, h.samples),
            (2, 22050, 1, 208, 576)
        );
        assert!(parse_header(&[0xff, 0xfb, 0xf0, 0x44]).is_none()); // bad bitrate index
        assert!(parse_header(&[0xff, 0xfb, 0x9c, 0x44]).is_none()); // reserved rate
        assert!(parse_header(&[0xff, 0xe9, 0x90, 0x44]).is_none()); // reserved layer
        assert!(parse_header(&[0xff, 0xfb]).is_none());
    }

    proptest! {
        #[test]
        fn any_header_has_a_sane_frame(b in any::<[u8; 4]>()) {
            if let Some(h) = parse_header(&b) {
                prop_assert!(h.frame_len >= 4 && h.frame_len < 3000, "{:?}", h);
            }
        }
    }
}
