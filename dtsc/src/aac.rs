//! AAC helpers: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the ADTS frame header
//! (ISO/IEC 14496-3 §1.A.2.2) and RFC 6381 codec strings.
//!
//! [`parse_asc`] reads untrusted bytes: it never panics and never indexes out of bounds.

use thiserror::Error;

/// The sampling frequencies of `samplingFrequencyIndex` 0..=12, in Hz
/// (ISO/IEC 14496-3 §1.6.3.4, Table 1.18).
pub const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Length in bytes of an ADTS header without CRC (`protection_absent` = 1).
pub const ADTS_HEADER_LEN: usize = 7;

/// Errors from the AAC readers and writers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AacError {
    /// The AudioSpecificConfig ended early.
    #[error("truncated AudioSpecificConfig")]
    Truncated,
    /// `samplingFrequencyIndex` 13 or 14 (reserved).
    #[error("reserved sampling frequency index {0}")]
    ReservedSamplingIndex(u8),
    /// The configuration cannot be expressed in an ADTS header (object type above 4 other
    /// than SBR/PS, a rate outside the index table, or channel configuration above 7).
    #[error("configuration not expressible in ADTS: {0}")]
    NotAdts(&'static str),
    /// `raw_len + 7` does not fit the 13-bit ADTS `frame_length` (max 8191 bytes).
    #[error("AAC frame of {0} bytes too large for ADTS")]
    FrameTooLarge(usize),
}

/// The parts of an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) this server uses.
/// This is `Track::init` for AAC tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// `audioObjectType` as signalled (2 = AAC LC, 5 = SBR/HE-AAC, 29 = PS/HE-AACv2, with
    /// the escape 31 → 32 + 6 bits resolved).
    pub object_type: u8,
    /// Sampling rate in Hz of the core AAC stream (for SBR/PS, the rate before SBR).
    pub sample_rate: u32,
    /// `samplingFrequencyIndex` as coded (0..=12, or 15 when the rate was given explicitly
    /// as a 24-bit value).
    pub sampling_index: u8,
    /// Number of channels (channel configurations 1–6 map to themselves, 7 to 8 channels;
    /// 0 when the configuration is 0, i.e. defined in the bitstream's PCE).
    pub channels: u8,
    /// `channelConfiguration` as coded (0..=15).
    pub channel_config: u8,
    /// For SBR/PS (object type 5 or 29), the output sampling rate in Hz from
    /// `extensionSamplingFrequencyIndex`; `None` otherwise.
    pub ext_sample_rate: Option<u32>,
}

impl AudioSpecificConfig {
    /// An AAC LC (object type 2) config for `sample_rate` Hz and `channels` channels, as
    /// used when a track has no init data. The rate is coded by index when it is in
    /// [`SAMPLE_RATES`], else escaped (index 15).
    pub fn lc(sample_rate: u32, channels: u8) -> AudioSpecificConfig {
        let idx = SAMPLE_RATES.iter().position(|&r| r == sample_rate);
        let channel_config = match channels {
            0..=6 => channels,
            8 => 7,
            _ => 0,
        };
        AudioSpecificConfig {
            object_type: 2,
            sample_rate,
            sampling_index: idx.map_or(15, |i| i as u8),
            channels,
            channel_config,
            ext_sample_rate: None,
        }
    }
}

/// MSB-first bit reader that never reads past its slice.
struct Bits<'a> {
    buf: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn u(&mut self, n: u32) -> Result<u32, AacError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.buf.get(self.bit / 8).ok_or(AacError::Truncated)?;
            v = (v << 1) | ((byte >> (7 - (self.bit % 8))) & 1) as u32;
            self.bit += 1;
        }
        Ok(v)
    }

    /// `GetAudioObjectType()` (§1.6.2.1.1): 5 bits, escape 31 → 32 + 6 bits.
    fn object_type(&mut self) -> Result<u8, AacError> {
        let t = self.u(5)? as u8;
        Ok(if t == 31 { 32 + self.u(6)? as u8 } else { t })
    }

    /// A sampling frequency index and rate: 4 bits, escape 15 → 24-bit rate in Hz.
    fn rate(&mut self) -> Result<(u8, u32), AacError> {
        let idx = self.u(4)? as u8;
        match idx {
            0..=12 => Ok((idx, SAMPLE_RATES[idx as usize])),
            15 => Ok((15, self.u(24)?)),
            _ => Err(AacError::ReservedSamplingIndex(idx)),
        }
    }
}

/// Parses an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1): `audioObjectType` (with
/// escape), `samplingFrequencyIndex` (with the 24-bit explicit rate for index 0xF),
/// `channelConfiguration`, and for SBR/PS (types 5 and 29) the extension sampling frequency
/// and the underlying object type. The GASpecificConfig and later fields are not read.
pub fn parse_asc(buf: &[u8]) -> Result<AudioSpecificConfig, AacError> {
    let mut r = Bits { buf, bit: 0 };
    let object_type = r.object_type()?;
    let (sampling_index, sample_rate) = r.rate()?;
    let channel_config = r.u(4)? as u8;
    let mut ext_sample_rate = None;
    if object_type == 5 || object_type == 29 {
        ext_sample_rate = Some(r.rate()?.1);
        let _core_object_type = r.object_type()?;
    }
    let channels = match channel_config {
        1..=6 => channel_config,
        7 => 8,
        _ => 0,
    };
    Ok(AudioSpecificConfig {
        object_type,
        sample_rate,
        sampling_index,
        channels,
        channel_config,
        ext_sample_rate,
    })
}

/// Appends the 2-byte (or, for an escaped rate, 5-byte) AudioSpecificConfig for an object
/// type below 31 with no extension (ISO/IEC 14496-3 §1.6.2.1), for example `12 10` for AAC
/// LC 44100 Hz stereo.
pub fn write_asc(asc: &AudioSpecificConfig, out: &mut Vec<u8>) {
    let ot = (asc.object_type.min(30)) as u64;
    let cc = (asc.channel_config & 0xf) as u64;
    if asc.sampling_index < 13 {
        let v = (ot << 11) | ((asc.sampling_index as u64) << 7) | (cc << 3);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else {
        // 5 + 4 + 24 + 4 = 37 bits, padded to 40.
        let v = (ot << 35) | (15 << 31) | (((asc.sample_rate & 0xff_ffff) as u64) << 7) | (cc << 3);
        out.extend_from_slice(&v.to_be_bytes()[3..]);
    }
}

/// Appends a 7-byte ADTS header without CRC (ISO/IEC 14496-3 §1.A.2.2.1) for one raw AAC
/// frame of `raw_len` bytes: syncword 0xFFF, MPEG-4, `protection_absent` = 1, profile =
/// object type − 1 (SBR/PS streams are signalled as LC at the core rate, implicit
/// signalling), the sampling frequency index (an escaped rate is mapped back to its index
/// when it is in the table), channel configuration, `frame_length` = `raw_len` + 7,
/// buffer fullness 0x7FF (VBR), one raw data block.
pub fn write_adts_header(
    asc: &AudioSpecificConfig,
    raw_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), AacError> {
    let profile = match asc.object_type {
        1..=4 => asc.object_type - 1,
        5 | 29 => 1,
        _ => return Err(AacError::NotAdts("object type has no ADTS profile")),
    };
    let sfi = if asc.sampling_index < 13 {
        asc.sampling_index
    } else {
        SAMPLE_RATES
            .iter()
            .position(|&r| r == asc.sample_rate)
            .ok_or(AacError::NotAdts("sampling rate not in the index table"))? as u8
    };
    if asc.channel_config > 7 {
        return Err(AacError::NotAdts("channel configuration above 7"));
    }
    let len = raw_len + ADTS_HEADER_LEN;
    if len > 0x1fff {
        return Err(AacError::FrameTooLarge(raw_len));
    }
    let ch = asc.channel_config;
    out.extend_from_slice(&[
        0xff,
        0xf1,
        (profile << 6) | (sfi << 2) | (ch >> 2),
        ((ch & 3) << 6) | ((len >> 11) as u8 & 3),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1f,
        0xfc,
    ]);
    Ok(())
}

/// One ADTS frame header (ISO/IEC 14496-3 §1.A.2.2: `adts_fixed_header`, §1.A.2.2.1, and
/// `adts_variable_header`, §1.A.2.2.2), the fields as coded. [`parse_adts_header`] checks
/// only the syncword; whether the rest makes a usable frame (layer 0, a sampling frequency
/// index in the table, a `frame_length` that holds the header) is the caller's to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// `ID`: 0 for MPEG-4 AAC, 1 for MPEG-2 AAC.
    pub mpeg2: bool,
    /// `layer` (2 bits), 0 in every valid stream.
    pub layer: u8,
    /// `protection_absent`: when false a 16-bit `crc_check` follows, making the header 9
    /// bytes instead of 7.
    pub protection_absent: bool,
    /// The audio object type, `profile_ObjectType` + 1 (1 AAC Main, 2 AAC LC, 3 SSR, 4 LTP).
    pub object_type: u8,
    /// `sampling_frequency_index` (0..=15; 0..=12 index [`SAMPLE_RATES`], 13..=15 are
    /// reserved or escape values ADTS cannot use).
    pub sampling_index: u8,
    /// `channel_configuration` (0..=7; 7 is 8 channels, 0 means a PCE in the payload).
    pub channel_config: u8,
    /// `frame_length`: bytes of the whole frame, this header included (13 bits).
    pub frame_length: usize,
    /// Raw data blocks in the frame, `number_of_raw_data_blocks_in_frame` + 1 (1..=4), each
    /// 1024 samples.
    pub raw_blocks: u8,
}

impl AdtsHeader {
    /// Bytes of the header: 7, or 9 when a CRC follows (`protection_absent` = 0).
    pub fn header_len(&self) -> usize {
        if self.protection_absent {
            ADTS_HEADER_LEN
        } else {
            ADTS_HEADER_LEN + 2
        }
    }

    /// The sampling rate in Hz of `sampling_index` (Table 1.18); `None` for 13..=15.
    pub fn sample_rate(&self) -> Option<u32> {
        SAMPLE_RATES.get(usize::from(self.sampling_index)).copied()
    }

    /// Samples per channel the frame decodes to: 1024 per raw data block.
    pub fn samples(&self) -> u32 {
        1024 * u32::from(self.raw_blocks)
    }
}

/// Reads the ADTS header at the start of `b` (ISO/IEC 14496-3 §1.A.2.2.1, §1.A.2.2.2);
/// `None` when `b` is shorter than [`ADTS_HEADER_LEN`] bytes or does not start with the
/// 12-bit syncword 0xFFF. Only the syncword is checked (see [`AdtsHeader`]). Never panics.
pub fn parse_adts_header(b: &[u8]) -> Option<AdtsHeader> {
    let h = b.get(..ADTS_HEADER_LEN)?;
    if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
        return None;
    }
    Some(AdtsHeader {
        mpeg2: h[1] & 0x08 != 0,
        layer: (h[1] >> 1) & 3,
        protection_absent: h[1] & 1 == 1,
        object_type: (h[2] >> 6) + 1,
        sampling_index: (h[2] >> 2) & 0xf,
        channel_config: ((h[2] & 1) << 2) | (h[3] >> 6),
        frame_length: (usize::from(h[3] & 3) << 11)
            | (usize::from(h[4]) << 3)
            | usize::from(h[5] >> 5),
        raw_blocks: (h[6] & 3) + 1,
    })
}

/// The RFC 6381 §3.3 codec string for `asc`: `mp4a.40.` and the decimal object type, for
/// example `mp4a.40.2` (AAC LC) or `mp4a.40.5` (HE-AAC).
pub fn codec_string(asc: &AudioSpecificConfig) -> String {
    format!("mp4a.40.{}", asc.object_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_lc_stereo_44100() {
        let asc = parse_asc(&[0x12, 0x10]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 44100);
        assert_eq!(asc.sampling_index, 4);
        assert_eq!(asc.channels, 2);
        assert_eq!(codec_string(&asc), "mp4a.40.2");
        let mut out = Vec::new();
        write_asc(&asc, &mut out);
        assert_eq!(out, [0x12, 0x10]);
    }

    #[test]
    fn parses_escaped_rate() {
        // LC, index 15, rate 0x00_BB80 (48000), channel config 1.
        let asc = AudioSpecificConfig::lc(48000, 1);
        assert_eq!(asc.sampling_index, 3);
        let mut esc = asc;
        esc.sampling_index = 15;
        esc.sample_rate = 44000;
        let mut buf = Vec::new();
        write_asc(&esc, &mut buf);
        assert_eq!(buf.len(), 5);
        let back = parse_asc(&buf).unwrap();
        assert_eq!(back.sampling_index, 15);
        assert_eq!(back.sample_rate, 44000);
        assert_eq!(back.channels, 1);
        let mut out = Vec::new();
        assert!(matches!(
            write_adts_header(&back, 10, &mut out),
            Err(AacError::NotAdts(_))
        ));
    }

    #[test]
    fn parses_he_aac_and_escaped_object_type() {
        // HE-AAC: object 5, index 6 (24000), 2 channels, ext index 3 (48000), core type 2.
        // 00101 0110 0010 0011 00010 -> 0x2B 0x11 0x88 (padded)
        let asc = parse_asc(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(asc.object_type, 5);
        assert_eq!(asc.sample_rate, 24000);
        assert_eq!(asc.ext_sample_rate, Some(48000));
        assert_eq!(codec_string(&asc), "mp4a.40.5");
        // Escape: 11111 000010 (=34) index 3 channel 2.
        let asc = parse_asc(&[0xf8, 0x46, 0x40]).unwrap();
        assert_eq!(asc.object_type, 34);
        assert_eq!(asc.sample_rate, 48000);
    }

    #[test]
    fn rejects_bad_configs() {
        assert_eq!(parse_asc(&[]), Err(AacError::Truncated));
        assert_eq!(parse_asc(&[0x12]), Err(AacError::Truncated));
        assert_eq!(
            parse_asc(&[0x16, 0x90]),
            Err(AacError::ReservedSamplingIndex(13))
        );
    }

    #[test]
    fn writes_adts_header() {
        let asc = parse_asc(&[0x11, 0x90]).unwrap(); // LC 48000 stereo
        let mut out = Vec::new();
        write_adts_header(&asc, 100, &mut out).unwrap();
        // frame_length 107 = 0b000_0000_1101_011
        assert_eq!(out, [0xff, 0xf1, 0x4c, 0x80, 0x0d, 0x7f, 0xfc]);
        assert_eq!(
            write_adts_header(&asc, 8185, &mut out),
            Err(AacError::FrameTooLarge(8185))
        );
        write_adts_header(&asc, 8184, &mut out).unwrap();
    }

    #[test]
    fn reads_adts_headers() {
        let asc = parse_asc(&[0x11, 0x90]).unwrap(); // LC 48000 stereo
        let mut out = Vec::new();
        write_adts_header(&asc, 100, &mut out).unwrap();
        let h = parse_adts_header(&out).unwrap();
        assert_eq!(
            h,
            AdtsHeader {
                mpeg2: false,
                layer: 0,
                protection_absent: true,
                object_type: 2,
                sampling_index: 3,
                channel_config: 2,
                frame_length: 107,
                raw_blocks: 1,
            }
        );
        assert_eq!(
            (h.header_len(), h.sample_rate(), h.samples()),
            (7, Some(48000), 1024)
        );
        // MPEG-2, layer 1, CRC present, index 13, three raw data blocks.
        let h = parse_adts_header(&[0xff, 0xfa, 0x74, 0x80, 0x0d, 0x7f, 0xfe]).unwrap();
        assert!(h.mpeg2 && !h.protection_absent);
        assert_eq!((h.layer, h.sampling_index, h.raw_blocks), (1, 13, 3));
        assert_eq!(
            (h.header_len(), h.sample_rate(), h.samples()),
            (9, None, 3072)
        );
        assert_eq!(parse_adts_header(&out[..6]), None);
        assert_eq!(parse_adts_header(&[0xff, 0xe1, 0, 0, 0, 0, 0]), None);
    }

    proptest! {
        #[test]
        fn parse_asc_never_panics(data in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok(asc) = parse_asc(&data) {
                let mut out = Vec::new();
                let _ = write_adts_header(&asc, data.len(), &mut out);
                write_asc(&asc, &mut out);
            }
            if let Some(h) = parse_adts_header(&data) {
                assert!(h.raw_blocks >= 1 && h.frame_length < 8192);
            }
        }
    }
}
