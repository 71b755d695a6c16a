//! `aac`: an ADTS stream (ISO/IEC 14496-3 §1.A.2.2: one header per frame: profile, sampling
//! rate, channels, frame length, CRC presence), or a raw AudioSpecificConfig (§1.6.2.1,
//! read by `dtsc::aac::parse_asc`).
//!
//! Rules checked (ADTS):
//! * §1.A.2.2.1 `syncword` 0xFFF at every frame start, `layer` 0, and a `frame_length` that
//!   holds its own header.
//! * §1.A.3.2: the sampling rate and channel configuration do not change mid-stream.

use dtsc::aac::{parse_adts_header, AdtsHeader, ADTS_HEADER_LEN};
use serde::Serialize;

use crate::report::{ReadError, Violation};

/// One ADTS frame header (§1.A.2.2.1, §1.A.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdtsFrame {
    /// Byte offset of the header.
    pub offset: u64,
    /// `profile_ObjectType` + 1: the audio object type (2 = AAC LC).
    pub object_type: u8,
    /// Sampling rate, Hz.
    pub sample_rate: u32,
    /// `channel_configuration`.
    pub channel_config: u8,
    /// `frame_length`: bytes of the frame, header included.
    pub frame_length: usize,
    /// `protection_absent` is 0: a CRC follows the header.
    pub crc: bool,
    /// Raw data blocks in the frame (`number_of_raw_data_blocks_in_frame` + 1), 1024
    /// samples each.
    pub raw_blocks: u8,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdtsReport {
    /// Frames read.
    pub frame_count: usize,
    /// Audio object type of the first frame.
    pub object_type: Option<u8>,
    /// Sampling rate of the first frame, Hz.
    pub sample_rate: Option<u32>,
    /// Channel configuration of the first frame.
    pub channel_config: Option<u8>,
    /// Duration of all frames, ms (1024 samples per raw data block).
    pub duration_ms: f64,
    /// Every frame.
    pub frames: Vec<AdtsFrame>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// An AudioSpecificConfig's fields (§1.6.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AscReport {
    /// Bytes given.
    pub size: usize,
    /// `audioObjectType`.
    pub object_type: Option<u8>,
    /// Its name.
    pub object_type_name: Option<&'static str>,
    /// Sampling rate, Hz.
    pub sample_rate: Option<u32>,
    /// `channelConfiguration`.
    pub channel_config: Option<u8>,
    /// Channels.
    pub channels: Option<u8>,
    /// SBR/PS output rate, Hz.
    pub ext_sample_rate: Option<u32>,
    /// RFC 6381 codec string (`mp4a.40.2`).
    pub codec_string: Option<String>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Why it could not be read.
    pub error: Option<ReadError>,
}

/// The name of an audio object type (Table 1.17).
pub fn object_type_name(t: u8) -> &'static str {
    match t {
        1 => "AAC Main",
        2 => "AAC LC",
        3 => "AAC SSR",
        4 => "AAC LTP",
        5 => "SBR (HE-AAC)",
        29 => "PS (HE-AAC v2)",
        _ => "other",
    }
}

impl AdtsFrame {
    /// The frame whose header `h` (read by `dtsc::aac::parse_adts_header`) is at `offset`.
    fn new(offset: u64, h: &AdtsHeader) -> AdtsFrame {
        AdtsFrame {
            offset,
            object_type: h.object_type,
            sample_rate: h.sample_rate().unwrap_or(0),
            channel_config: h.channel_config,
            frame_length: h.frame_length,
            crc: !h.protection_absent,
            raw_blocks: h.raw_blocks,
        }
    }
}

const RULE_SYNC: &str =
    "ISO/IEC 14496-3 §1.A.2.2.1 adts_fixed_header (syncword, layer 0, frame_length)";
const RULE_CHANGE: &str = "ISO/IEC 14496-3 §1.A.3.2 (sampling rate and channels constant)";

/// Reads an ADTS stream. Never panics.
pub fn analyse(buf: &[u8]) -> AdtsReport {
    let mut r = AdtsReport::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        let Some(h) = parse_adts_header(&buf[pos..]) else {
            if buf.len() - pos < ADTS_HEADER_LEN && buf[pos] == 0xFF {
                r.error = Some(ReadError::at(
                    pos as u64,
                    "truncated ADTS header: 7 bytes needed",
                ));
                break;
            }
            r.violations.push(Violation::at(
                RULE_SYNC,
                pos as u64,
                "no syncword; skipping to the next",
            ));
            match buf[pos + 1..]
                .windows(2)
                .position(|w| w[0] == 0xFF && w[1] & 0xF6 == 0xF0)
            {
                Some(n) => {
                    pos += 1 + n;
                    continue;
                }
                None => break,
            }
        };
        let f = AdtsFrame::new(pos as u64, &h);
        if h.layer != 0 || f.frame_length < h.header_len() || f.sample_rate == 0 {
            r.violations.push(Violation::at(
                RULE_SYNC,
                pos as u64,
                format!(
                    "bad header: layer {}, frame_length {}, sampling_frequency_index {}",
                    h.layer, f.frame_length, h.sampling_index
                ),
            ));
            if f.frame_length < h.header_len() {
                break;
            }
        }
        if let (Some(rate), Some(ch)) = (r.sample_rate, r.channel_config) {
            if rate != f.sample_rate || ch != f.channel_config {
                r.violations.push(Violation::at(
                    RULE_CHANGE,
                    pos as u64,
                    format!(
                        "{} Hz, configuration {} after {rate} Hz, {ch}",
                        f.sample_rate, f.channel_config
                    ),
                ));
            }
        } else {
            r.object_type = Some(f.object_type);
            r.sample_rate = Some(f.sample_rate);
            r.channel_config = Some(f.channel_config);
        }
        if buf.len() - pos < f.frame_length {
            r.error = Some(ReadError::at(
                pos as u64,
                format!(
                    "truncated ADTS frame: {} bytes needed, {} present",
                    f.frame_length,
                    buf.len() - pos
                ),
            ));
            break;
        }
        pos += f.frame_length;
        if f.sample_rate > 0 {
            r.duration_ms += f64::from(h.samples()) * 1000.0 / f64::from(f.sample_rate);
        }
        r.frames.push(f);
    }
    r.duration_ms = (r.duration_ms * 1000.0).round() / 1000.0;
    r.frame_count = r.frames.len();
    r
}

/// Reads `s` as hex digits (spaces and `0x` allowed); `None` when it is not hex.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if digits.is_empty() || digits.len() & 1 == 1 || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}

/// Reads an AudioSpecificConfig. Never panics.
pub fn analyse_asc(buf: &[u8]) -> AscReport {
    let mut r = AscReport {
        size: buf.len(),
        object_type: None,
        object_type_name: None,
        sample_rate: None,
        channel_config: None,
        channels: None,
        ext_sample_rate: None,
        codec_string: None,
        violations: Vec::new(),
        error: None,
    };
    match dtsc::aac::parse_asc(buf) {
        Ok(a) => {
            r.object_type = Some(a.object_type);
            r.object_type_name = Some(object_type_name(a.object_type));
            r.sample_rate = Some(a.sample_rate);
            r.channel_config = Some(a.channel_config);
            r.channels = Some(a.channels);
            r.ext_sample_rate = a.ext_sample_rate;
            r.codec_string = Some(dtsc::aac::codec_string(&a));
        }
        Err(e) => {
            r.error = Some(ReadError::at(0, format!("AudioSpecificConfig: {e}")));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::aac::{write_adts_header, AudioSpecificConfig};
    use proptest::prelude::*;

    fn adts(frames: usize, len: usize) -> Vec<u8> {
        let asc = AudioSpecificConfig::lc(48000, 2);
        let mut out = Vec::new();
        for _ in 0..frames {
            write_adts_header(&asc, len, &mut out).unwrap();
            out.extend(std::iter::repeat_n(0x21, len));
        }
        out
    }

    #[test]
    fn reads_adts_frames() {
        let r = analyse(&adts(3, 100));
        assert!(r.violations.is_empty() && r.error.is_none(), "{r:?}");
        assert_eq!(r.frame_count, 3);
        assert_eq!(
            (r.object_type, r.sample_rate, r.channel_config),
            (Some(2), Some(48000), Some(2))
        );
        assert_eq!(
            r.frames[1],
            AdtsFrame {
                offset: 107,
                object_type: 2,
                sample_rate: 48000,
                channel_config: 2,
                frame_length: 107,
                crc: false,
                raw_blocks: 1
            }
        );
        assert_eq!(r.duration_ms, 64.0);
    }

    #[test]
    fn truncated_and_garbage() {
        let s = adts(2, 50);
        let r = analyse(&s[..s.len() - 5]);
        assert_eq!(r.error.unwrap().offset, 57);
        let mut g = vec![1, 2, 3];
        g.extend(adts(1, 10));
        let r = analyse(&g);
        assert_eq!(r.frame_count, 1);
        assert_eq!(r.violations[0].offset, Some(0));
    }

    #[test]
    fn reads_an_asc() {
        assert_eq!(parse_hex("1190"), Some(vec![0x11, 0x90]));
        assert_eq!(parse_hex("file.asc"), None);
        let r = analyse_asc(&[0x11, 0x90]);
        assert_eq!(
            (r.object_type, r.sample_rate, r.channels),
            (Some(2), Some(48000), Some(2))
        );
        assert_eq!(r.codec_string.as_deref(), Some("mp4a.40.2"));
        assert!(analyse_asc(&[0x11]).error.is_some());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = analyse(&data);
            let _ = analyse_asc(&data);
            let mut s = adts(1, 20);
            s.extend_from_slice(&data);
            let _ = analyse(&s);
        }
    }
}
