//! H.265/HEVC helpers for the muxers: the decoder configuration record `hvcC` (ISO/IEC
//! 14496-15 §8.3.3.1, HEVCDecoderConfigurationRecord) read into its NAL unit length size and
//! parameter set arrays, and NAL unit types (ITU-T H.265 §7.4.2.2, Table 7-1). Payloads are
//! length-prefixed NAL units as in MP4 and DTSC; [`crate::h264::nal_units`] splits them for
//! either codec, since the length prefix is the same.

use thiserror::Error;

/// NAL unit type of a video parameter set (H.265 Table 7-1).
pub const NAL_VPS: u8 = 32;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 34;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 35;

/// An access unit delimiter in Annex B form: start code, NAL header (type 35, layer 0,
/// temporal id 1), `pic_type` 2 (any slice type) with the stop bit (H.265 §7.3.2.5).
pub const AUD: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];

/// Why an `hvcC` record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HevcError {
    /// Shorter than its 23 fixed bytes, or an array or NAL unit runs past the end.
    #[error("hvcC truncated")]
    Truncated,
    /// `configurationVersion` is not 1.
    #[error("hvcC version {0}, expected 1")]
    Version(u8),
}

/// What the muxers need of an `hvcC` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// Bytes of the length prefix of each NAL unit in a sample (`lengthSizeMinusOne + 1`:
    /// 1, 2 or 4).
    pub nal_length_size: u8,
    /// The NAL units of the parameter set arrays, each as (NAL unit type, bytes), in record
    /// order (usually VPS, SPS, PPS, then SEI).
    pub nal_units: Vec<(u8, Vec<u8>)>,
}

/// Reads an `hvcC` record (ISO/IEC 14496-15 §8.3.3.1.2): 22 bytes of profile, level and
/// format fields (skipped), `lengthSizeMinusOne` in the low 2 bits of byte 21, then
/// `numOfArrays` arrays of (`NAL_unit_type` in 6 bits, `numNalus`, per NAL unit a 16-bit
/// length and its bytes).
pub fn parse_hvcc(b: &[u8]) -> Result<HevcConfig, HevcError> {
    if b.len() < 23 {
        return Err(HevcError::Truncated);
    }
    if b[0] != 1 {
        return Err(HevcError::Version(b[0]));
    }
    let nal_length_size = (b[21] & 3) + 1;
    let arrays = b[22];
    let mut at = 23;
    let mut nal_units = Vec::new();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], HevcError> {
        let s = b.get(*at..*at + n).ok_or(HevcError::Truncated)?;
        *at += n;
        Ok(s)
    };
    for _ in 0..arrays {
        let head = take(&mut at, 3)?;
        let kind = head[0] & 0x3f;
        let count = u16::from_be_bytes([head[1], head[2]]);
        for _ in 0..count {
            let len = take(&mut at, 2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            nal_units.push((kind, take(&mut at, len)?.to_vec()));
        }
    }
    Ok(HevcConfig {
        nal_length_size,
        nal_units,
    })
}

/// The NAL unit type of `nal` (the 6 bits after the forbidden zero bit of its 2-byte
/// header); `None` for an empty unit.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// True for the NAL unit types of an intra random access point picture (BLA, IDR, CRA:
/// 16..=23, H.265 §7.4.2.2), where a decoder can start.
pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// Test data shared with the muxers' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// An hvcC with a 4-byte length size and one VPS, one SPS and one PPS.
    pub(crate) fn hvcc() -> Vec<u8> {
        let mut b = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        b.extend_from_slice(&[0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 3]);
        for (kind, nal) in [
            (NAL_VPS, &[0x40u8, 0x01, 0x0c][..]),
            (NAL_SPS, &[0x42, 0x01, 0x01, 0x01]),
            (NAL_PPS, &[0x44, 0x01, 0xc1]),
        ] {
            b.push(0x80 | kind);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            b.extend_from_slice(nal);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::hvcc;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_parameter_sets_and_length_size() {
        let cfg = parse_hvcc(&hvcc()).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        let kinds: Vec<u8> = cfg.nal_units.iter().map(|n| n.0).collect();
        assert_eq!(kinds, [NAL_VPS, NAL_SPS, NAL_PPS]);
        assert_eq!(nal_type(&cfg.nal_units[1].1), Some(NAL_SPS));
        assert_eq!(nal_type(&AUD[4..]), Some(NAL_AUD));
        assert!(is_irap(19) && is_irap(21) && !is_irap(1));
        let mut v = hvcc();
        v[0] = 0;
        assert_eq!(parse_hvcc(&v), Err(HevcError::Version(0)));
        assert_eq!(parse_hvcc(&hvcc()[..30]), Err(HevcError::Truncated));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(cfg) = parse_hvcc(&b) {
                prop_assert!(matches!(cfg.nal_length_size, 1..=4));
                prop_assert!(cfg.nal_units.iter().map(|n| n.1.len() + 2).sum::<usize>() <= b.len());
            }
        }
    }
}
