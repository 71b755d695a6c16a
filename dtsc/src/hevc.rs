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
    /// A sequence parameter set that cannot be read (H.265 §7.3.2.2.1).
    #[error("HEVC SPS: {0}")]
    InvalidSps(&'static str),
    /// A parameter set array would not fit the record (over 65535 units or bytes).
    #[error("HEVC parameter set too large for hvcC")]
    TooLarge,
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

/// What [`parse_sps`] reads from a sequence parameter set (H.265 §7.3.2.2.1): the
/// `profile_tier_level()` general fields that `hvcC` repeats, and the picture format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcSps {
    /// `general_profile_space` (2 bits), `general_tier_flag` and `general_profile_idc`
    /// (5 bits) as the first byte of `hvcC` packs them.
    pub profile_byte: u8,
    /// `general_profile_compatibility_flag[32]`, first flag in the top bit.
    pub compat_flags: u32,
    /// The 48 bits of `general_progressive_source_flag` … `general_inbld_flag`, as 6 bytes.
    pub constraint_flags: [u8; 6],
    /// `general_level_idc` (level × 30; 93 = level 3.1).
    pub level_idc: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub max_sub_layers: u8,
    /// `sps_temporal_id_nesting_flag`.
    pub temporal_id_nesting: bool,
    /// `chroma_format_idc`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    /// Luma bit depth in bits.
    pub bit_depth_luma: u8,
    /// Chroma bit depth in bits.
    pub bit_depth_chroma: u8,
    /// Displayed width in luma samples, after the conformance window.
    pub width: u32,
    /// Displayed height in luma samples, after the conformance window.
    pub height: u32,
    /// VUI timing (§E.2.1): `(vui_num_units_in_tick, vui_time_scale)`, the frame rate being
    /// `time_scale / num_units_in_tick` frames per second. `None` when the SPS has no VUI
    /// timing, or the syntax before it cannot be read.
    pub timing: Option<(u32, u32)>,
}

impl HevcSps {
    /// The frame rate in frames per 1000 seconds (the model's `Track::fpks`) from the VUI
    /// timing, rounded; `None` without timing or outside 1..4 000 000 000.
    pub fn fpks(&self) -> Option<u32> {
        let (tick, scale) = self.timing?;
        let fpks = (u64::from(scale) * 1000 + u64::from(tick) / 2) / u64::from(tick);
        u32::try_from(fpks).ok().filter(|f| *f > 0)
    }
}

/// Reads an HEVC sequence parameter set NAL unit (2-byte NAL header included, no start code;
/// emulation prevention bytes are removed here) up to the bit depths (H.265 §7.3.2.2.1 with
/// `profile_tier_level()` of §7.3.3; the conformance window per §7.4.3.2.1, SubWidthC and
/// SubHeightC of Table 6-1), then on to the VUI timing when it can (an error past the bit
/// depths only leaves `timing` `None`). Never panics on any input.
pub fn parse_sps(nal: &[u8]) -> Result<HevcSps, HevcError> {
    use crate::h264::{unescape, Bits};
    if nal_type(nal) != Some(NAL_SPS) {
        return Err(HevcError::InvalidSps("not an SPS NAL unit"));
    }
    let rbsp = unescape(nal.get(2..).unwrap_or(&[]));
    let mut r = Bits { buf: &rbsp, bit: 0 };
    let bad = |_| HevcError::InvalidSps("truncated");
    let _vps_id = r.u(4).map_err(bad)?;
    let max_sub_layers_minus1 = r.u(3).map_err(bad)? as u8;
    if max_sub_layers_minus1 > 6 {
        return Err(HevcError::InvalidSps("sps_max_sub_layers_minus1 above 6"));
    }
    let temporal_id_nesting = r.u1().map_err(bad)?;
    let profile_byte = r.u(8).map_err(bad)? as u8;
    let compat_flags = r.u(32).map_err(bad)?;
    let mut constraint_flags = [0u8; 6];
    for b in &mut constraint_flags {
        *b = r.u(8).map_err(bad)? as u8;
    }
    let level_idc = r.u(8).map_err(bad)? as u8;
    let mut present = [(false, false); 7];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (r.u1().map_err(bad)?, r.u1().map_err(bad)?);
    }
    if max_sub_layers_minus1 > 0 {
        r.u(2 * (8 - u32::from(max_sub_layers_minus1)))
            .map_err(bad)?;
    }
    for (profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
        if *profile {
            // sub_layer profile space … inbld flag: 88 bits.
            r.u(32).map_err(bad)?;
            r.u(32).map_err(bad)?;
            r.u(24).map_err(bad)?;
        }
        if *level {
            r.u(8).map_err(bad)?;
        }
    }
    let _sps_id = r.ue().map_err(bad)?;
    let chroma_format_idc = r.ue().map_err(bad)?;
    if chroma_format_idc > 3 {
        return Err(HevcError::InvalidSps("chroma_format_idc above 3"));
    }
    if chroma_format_idc == 3 {
        r.u1().map_err(bad)?; // separate_colour_plane_flag
    }
    let pic_w = r.ue().map_err(bad)?;
    let pic_h = r.ue().map_err(bad)?;
    let (mut crop_w, mut crop_h) = (0u64, 0u64);
    if r.u1().map_err(bad)? {
        let (l, rt, t, b) = (
            r.ue().map_err(bad)?,
            r.ue().map_err(bad)?,
            r.ue().map_err(bad)?,
            r.ue().map_err(bad)?,
        );
        let sub_w = if matches!(chroma_format_idc, 1 | 2) {
            2
        } else {
            1
        };
        let sub_h = if chroma_format_idc == 1 { 2 } else { 1 };
        crop_w = sub_w * (u64::from(l) + u64::from(rt));
        crop_h = sub_h * (u64::from(t) + u64::from(b));
    }
    let depth_l = r.ue().map_err(bad)?;
    let depth_c = r.ue().map_err(bad)?;
    if depth_l > 8 || depth_c > 8 {
        return Err(HevcError::InvalidSps("bit depth above 16"));
    }
    let timing = vui_timing(&mut r, max_sub_layers_minus1)
        .ok()
        .flatten()
        .filter(|&(tick, scale)| tick > 0 && scale > 0);
    let width = u64::from(pic_w)
        .checked_sub(crop_w)
        .ok_or(HevcError::InvalidSps(
            "conformance window wider than the picture",
        ))?;
    let height = u64::from(pic_h)
        .checked_sub(crop_h)
        .ok_or(HevcError::InvalidSps(
            "conformance window taller than the picture",
        ))?;
    Ok(HevcSps {
        profile_byte,
        compat_flags,
        constraint_flags,
        level_idc,
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma: depth_l as u8 + 8,
        bit_depth_chroma: depth_c as u8 + 8,
        width: width as u32,
        height: height as u32,
        timing,
    })
}

/// Reads on from `log2_max_pic_order_cnt_lsb_minus4` through the VUI to its timing
/// (H.265 §7.3.2.2.1, `scaling_list_data()` §7.3.4, `st_ref_pic_set()` §7.3.7, and
/// `vui_parameters()` §E.2.1): `Some((num_units_in_tick, time_scale))`, or `None` without
/// VUI or VUI timing.
fn vui_timing(
    r: &mut crate::h264::Bits,
    max_sub_layers_minus1: u8,
) -> Result<Option<(u32, u32)>, crate::h264::H264Error> {
    use crate::h264::H264Error;
    let log2_max_poc_lsb_minus4 = r.ue()?;
    if log2_max_poc_lsb_minus4 > 12 {
        return Err(H264Error::InvalidSps("log2_max_pic_order_cnt_lsb above 16"));
    }
    let log2_max_poc_lsb = log2_max_poc_lsb_minus4 + 4;
    let ordering_info_for_all = r.u1()?;
    let first = if ordering_info_for_all {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?; // sps_max_dec_pic_buffering_minus1
        r.ue()?; // sps_max_num_reorder_pics
        r.ue()?; // sps_max_latency_increase_plus1
    }
    for _ in 0..6 {
        // log2_min_luma_coding_block_size_minus3 … max_transform_hierarchy_depth_intra
        r.ue()?;
    }
    if r.u1()? && r.u1()? {
        // scaling_list_enabled_flag, sps_scaling_list_data_present_flag: scaling_list_data()
        for size_id in 0..4u32 {
            let step = if size_id == 3 { 3 } else { 1 };
            for _ in (0..6).step_by(step) {
                if !r.u1()? {
                    r.ue()?; // scaling_list_pred_matrix_id_delta
                } else {
                    let coefs = 64.min(1 << (4 + (size_id << 1)));
                    if size_id > 1 {
                        r.se()?; // scaling_list_dc_coef_minus8
                    }
                    for _ in 0..coefs {
                        r.se()?; // scaling_list_delta_coef
                    }
                }
            }
        }
    }
    r.u1()?; // amp_enabled_flag
    r.u1()?; // sample_adaptive_offset_enabled_flag
    if r.u1()? {
        // pcm_enabled_flag: sample bit depths (4 + 4), block sizes, loop filter flag
        r.u(8)?;
        r.ue()?;
        r.ue()?;
        r.u1()?;
    }
    let sets = r.ue()?;
    if sets > 64 {
        return Err(H264Error::InvalidSps(
            "num_short_term_ref_pic_sets above 64",
        ));
    }
    // NumDeltaPocs of each set so far (§7.4.8): an inter-predicted set reads one flag
    // (or two) per entry of the set before it.
    let mut num_delta_pocs: Vec<u32> = Vec::with_capacity(sets as usize);
    for idx in 0..sets as usize {
        let inter = idx != 0 && r.u1()?;
        let n = if inter {
            r.u1()?; // delta_rps_sign
            r.ue()?; // abs_delta_rps_minus1
            let mut n = 0;
            for _ in 0..=num_delta_pocs[idx - 1] {
                let used = r.u1()?;
                if used || r.u1()? {
                    n += 1;
                }
            }
            n
        } else {
            let negative = r.ue()?;
            let positive = r.ue()?;
            if negative > 16 || positive > 16 {
                return Err(H264Error::InvalidSps("more than 16 reference pictures"));
            }
            for _ in 0..negative + positive {
                r.ue()?; // delta_poc_sX_minus1
                r.u1()?; // used_by_curr_pic_sX_flag
            }
            negative + positive
        };
        num_delta_pocs.push(n);
    }
    if r.u1()? {
        // long_term_ref_pics_present_flag
        let count = r.ue()?;
        if count > 32 {
            return Err(H264Error::InvalidSps("num_long_term_ref_pics_sps above 32"));
        }
        for _ in 0..count {
            r.u(log2_max_poc_lsb)?; // lt_ref_pic_poc_lsb_sps
            r.u1()?; // used_by_curr_pic_lt_sps_flag
        }
    }
    r.u1()?; // sps_temporal_mvp_enabled_flag
    r.u1()?; // strong_intra_smoothing_enabled_flag
    if !r.u1()? {
        return Ok(None); // vui_parameters_present_flag
    }
    crate::h264::skip_vui_picture_format(r)?;
    r.u(3)?; // neutral_chroma_indication, field_seq, frame_field_info_present
    if r.u1()? {
        for _ in 0..4 {
            r.ue()?; // default_display_window offsets
        }
    }
    if !r.u1()? {
        return Ok(None); // vui_timing_info_present_flag
    }
    Ok(Some((r.u(32)?, r.u(32)?)))
}

/// Builds an `hvcC` record (ISO/IEC 14496-15 §8.3.3.1.2) from the parameter sets of a
/// stream (each a NAL unit with its 2-byte header): profile, tier, level and format fields
/// from the first SPS, `lengthSizeMinusOne` 3 (4-byte length prefixes, as DTSC stores
/// HEVC), `avgFrameRate` 0 (unspecified), and one complete array each of VPS, SPS and PPS,
/// in that order. Fails when there is no SPS that [`parse_sps`] reads, or an array is too
/// large.
pub fn build_hvcc(vps: &[Vec<u8>], sps: &[Vec<u8>], pps: &[Vec<u8>]) -> Result<Vec<u8>, HevcError> {
    let info = parse_sps(sps.first().ok_or(HevcError::InvalidSps("no SPS"))?)?;
    let mut out = vec![1, info.profile_byte];
    out.extend_from_slice(&info.compat_flags.to_be_bytes());
    out.extend_from_slice(&info.constraint_flags);
    out.push(info.level_idc);
    out.extend_from_slice(&[
        0xf0, // reserved + min_spatial_segmentation_idc (12 bits) = 0
        0x00,
        0xfc, // reserved + parallelismType 0 (unknown)
        0xfc | info.chroma_format_idc,
        0xf8 | (info.bit_depth_luma - 8),
        0xf8 | (info.bit_depth_chroma - 8),
        0,
        0, // avgFrameRate
        (info.max_sub_layers << 3) | (u8::from(info.temporal_id_nesting) << 2) | 3,
    ]);
    let arrays = [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)];
    out.push(arrays.iter().filter(|a| !a.1.is_empty()).count() as u8);
    for (kind, units) in arrays {
        if units.is_empty() {
            continue;
        }
        if units.len() > 0xffff || units.iter().any(|u| u.len() > 0xffff) {
            return Err(HevcError::TooLarge);
        }
        out.push(0x80 | kind); // array_completeness 1
        out.extend_from_slice(&(units.len() as u16).to_be_bytes());
        for u in units {
            out.extend_from_slice(&(u.len() as u16).to_be_bytes());
            out.extend_from_slice(u);
        }
    }
    Ok(out)
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

    /// Parameter sets x265 3.5 wrote for 640x360 Main at level 2.1.
    const X265_VPS: &str = "40010c01ffff01600000030090000003000003003f959809";
    const X265_SPS: &str =
        "42010101600000030090000003000003003fa00502016965959a4932bc05a02000000300200000030321";
    const X265_PPS: &str = "4401c172b46240";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reads_an_x265_sps_and_builds_its_hvcc() {
        let sps = parse_sps(&hex(X265_SPS)).unwrap();
        assert_eq!((sps.width, sps.height), (640, 360));
        assert_eq!(sps.profile_byte, 1); // Main, space 0, Main tier
        assert_eq!(sps.compat_flags, 0x6000_0000); // Main and Main 10 compatible
        assert_eq!(sps.level_idc, 63);
        assert_eq!(
            (
                sps.chroma_format_idc,
                sps.bit_depth_luma,
                sps.bit_depth_chroma
            ),
            (1, 8, 8)
        );
        assert_eq!(sps.max_sub_layers, 1);
        // x265 writes VUI timing: 25 fps as 25 / 1. Without the bytes that hold it, the
        // SPS still reads (the timing is optional), with no timing.
        assert_eq!(sps.timing, Some((1, 25)));
        assert_eq!(sps.fpks(), Some(25_000));
        let full = hex(X265_SPS);
        let cut = parse_sps(&full[..full.len() - 8]).unwrap();
        assert_eq!((cut.width, cut.timing), (640, None));
        let rec = build_hvcc(&[hex(X265_VPS)], &[hex(X265_SPS)], &[hex(X265_PPS)]).unwrap();
        assert_eq!(&rec[..13], &[1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 63]);
        assert_eq!(rec[21] & 3, 3);
        let cfg = parse_hvcc(&rec).unwrap();
        let kinds: Vec<u8> = cfg.nal_units.iter().map(|n| n.0).collect();
        assert_eq!(kinds, [NAL_VPS, NAL_SPS, NAL_PPS]);
        assert_eq!(cfg.nal_units[1].1, hex(X265_SPS));
        assert_eq!(dtsc_codec(&rec), "hvc1.1.6.L63.90");
        assert!(parse_sps(&hex(X265_VPS)).is_err());
        assert!(parse_sps(&hex(X265_SPS)[..12]).is_err());
        assert!(build_hvcc(&[], &[], &[]).is_err());
    }

    #[test]
    fn a_huge_log2_max_poc_lsb_is_refused_not_overflowed() {
        // Found by the h264_sps fuzz target: an exp-Golomb log2_max_pic_order_cnt_lsb_minus4
        // near 2^32 overflowed `+ 4`. The SPS reads up to its bit depths, without timing.
        let sps = hex("42720100000000000006017272727272727200000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000042727272722e72c042c00507ec050701727272727272ffff");
        if let Ok(s) = parse_sps(&sps) {
            assert_eq!(s.timing, None);
        }
    }

    fn dtsc_codec(hvcc: &[u8]) -> String {
        let mut t = crate::Track::new(1, crate::TrackKind::Video, crate::Codec::Hevc);
        t.init = hvcc.to_vec();
        crate::dash::rfc6381_codec(&t).unwrap()
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_sps(&b);
            if let Ok(cfg) = parse_hvcc(&b) {
                prop_assert!(matches!(cfg.nal_length_size, 1..=4));
                prop_assert!(cfg.nal_units.iter().map(|n| n.1.len() + 2).sum::<usize>() <= b.len());
            }
        }
    }
}
