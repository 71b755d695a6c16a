//! `hevc`: an H.265 Annex B byte stream (ITU-T H.265 Annex B): every NAL unit (§7.3.1.2:
//! type, `nuh_layer_id`, `TemporalId`, size), pictures counted by
//! `first_slice_segment_in_pic_flag`, and each SPS's fields (§7.3.2.2.1: profile, tier,
//! level, size, chroma format, bit depth; VUI timing and frame rate, §E.2.1). NAL units are split by
//! `dtsc::h264::annexb_nal_units` and SPSs read by `dtsc::hevc::parse_sps`.
//!
//! Rules checked:
//! * §7.4.2.2 `forbidden_zero_bit` is 0 and `nuh_temporal_id_plus1` is not 0.
//! * §7.4.2: no 0x000000 or 0x000002 within a NAL unit (a damaged or zeroed stretch).
//! * §7.4.2.4.4: a VPS, SPS and PPS come before the first slice segment.
//! * §7.3.2.2.1: every SPS parses.

use serde::Serialize;

use crate::h264::{forbidden_sequence, no_start_code, offset_in};
use crate::report::{ReadError, Violation};

/// One NAL unit (§7.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NalUnit {
    /// Byte offset of its first byte (after the start code).
    pub offset: u64,
    /// Bytes, header included.
    pub size: usize,
    /// `nal_unit_type`.
    #[serde(rename = "type")]
    pub nal_type: u8,
    /// What the type means (Table 7-1).
    pub name: &'static str,
    /// `nuh_layer_id`.
    pub layer_id: u8,
    /// `TemporalId` (`nuh_temporal_id_plus1` − 1).
    pub temporal_id: i8,
}

/// An SPS's fields (§7.3.2.2.1, §7.3.3, VUI timing §E.2.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sps {
    /// Byte offset of the NAL unit.
    pub offset: u64,
    /// `general_profile_idc` (1 Main, 2 Main 10, 3 Main Still Picture, 4 RExt).
    pub profile_idc: u8,
    /// The profile's name.
    pub profile: &'static str,
    /// `general_tier_flag`: `Main` or `High`.
    pub tier: &'static str,
    /// `general_level_idc` (level × 30).
    pub level_idc: u8,
    /// Width in luma samples after the conformance window.
    pub width: u32,
    /// Height in luma samples after the conformance window.
    pub height: u32,
    /// `chroma_format_idc`.
    pub chroma_format_idc: u8,
    /// Luma bit depth.
    pub bit_depth: u8,
    /// `sps_max_sub_layers_minus1` + 1.
    pub max_sub_layers: u8,
    /// `vui_num_units_in_tick`, when the VUI has timing.
    pub num_units_in_tick: Option<u32>,
    /// `vui_time_scale` (Hz), when the VUI has timing.
    pub time_scale: Option<u32>,
    /// Frames per second, `time_scale / num_units_in_tick`.
    pub fps: Option<f64>,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HevcReport {
    /// NAL units read.
    pub nal_unit_count: usize,
    /// Pictures (slice segments with `first_slice_segment_in_pic_flag`).
    pub access_units: usize,
    /// IRAP pictures (BLA, IDR, CRA).
    pub irap_pictures: usize,
    /// Each SPS.
    pub sps: Vec<Sps>,
    /// Every NAL unit.
    pub nal_units: Vec<NalUnit>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// The name of an HEVC `nal_unit_type` (Table 7-1).
pub fn nal_name(t: u8) -> &'static str {
    match t {
        0 => "TRAIL_N",
        1 => "TRAIL_R",
        2 => "TSA_N",
        3 => "TSA_R",
        4 => "STSA_N",
        5 => "STSA_R",
        6 => "RADL_N",
        7 => "RADL_R",
        8 => "RASL_N",
        9 => "RASL_R",
        16 => "BLA_W_LP",
        17 => "BLA_W_RADL",
        18 => "BLA_N_LP",
        19 => "IDR_W_RADL",
        20 => "IDR_N_LP",
        21 => "CRA_NUT",
        32 => "VPS",
        33 => "SPS",
        34 => "PPS",
        35 => "AUD",
        36 => "EOS",
        37 => "EOB",
        38 => "FD",
        39 => "prefix SEI",
        40 => "suffix SEI",
        _ => "reserved/unspecified",
    }
}

const RULE_EMULATION: &str =
    "ITU-T H.265 §7.4.2 (no 0x000000, 0x000001 or 0x000002 within a NAL unit)";
const RULE_HEADER: &str =
    "ITU-T H.265 §7.4.2.2 nal_unit_header (forbidden_zero_bit 0, nuh_temporal_id_plus1 > 0)";
const RULE_ORDER: &str = "ITU-T H.265 §7.4.2.4.4 (VPS, SPS and PPS before the first slice segment)";
const RULE_SPS: &str = "ITU-T H.265 §7.3.2.2.1 seq_parameter_set_rbsp";

/// Reads an Annex B byte stream. Never panics.
pub fn analyse(buf: &[u8]) -> HevcReport {
    let mut r = HevcReport::default();
    let (mut ps, mut slice_seen) = ([false; 3], false);
    for nal in dtsc::h264::annexb_nal_units(buf) {
        let offset = offset_in(buf, nal);
        let t = (nal[0] >> 1) & 0x3f;
        let b1 = nal.get(1).copied().unwrap_or(0);
        let temporal_id = (b1 & 7) as i8 - 1;
        if nal[0] & 0x80 != 0 || temporal_id < 0 {
            r.violations
                .push(Violation::at(RULE_HEADER, offset, "bad NAL unit header"));
        }
        if let Some(at) = forbidden_sequence(nal) {
            r.violations.push(Violation::at(
                RULE_EMULATION,
                offset + at as u64,
                format!("0x0000{:02x} in a NAL unit of type {t}", nal[at + 2]),
            ));
        }
        match t {
            32 => ps[0] = true,
            33 => {
                ps[1] = true;
                match dtsc::hevc::parse_sps(nal) {
                    Ok(s) => r.sps.push(Sps {
                        offset,
                        profile_idc: s.profile_byte & 0x1f,
                        profile: match s.profile_byte & 0x1f {
                            1 => "Main",
                            2 => "Main 10",
                            3 => "Main Still Picture",
                            4 => "Range Extensions",
                            _ => "other",
                        },
                        tier: if s.profile_byte & 0x20 != 0 {
                            "High"
                        } else {
                            "Main"
                        },
                        level_idc: s.level_idc,
                        width: s.width,
                        height: s.height,
                        chroma_format_idc: s.chroma_format_idc,
                        bit_depth: s.bit_depth_luma,
                        max_sub_layers: s.max_sub_layers,
                        num_units_in_tick: s.timing.map(|t| t.0),
                        time_scale: s.timing.map(|t| t.1),
                        fps: s
                            .timing
                            .map(|(tick, scale)| f64::from(scale) / f64::from(tick)),
                    }),
                    Err(e) => r
                        .violations
                        .push(Violation::at(RULE_SPS, offset, e.to_string())),
                }
            }
            34 => ps[2] = true,
            0..=31 => {
                if !slice_seen && ps != [true; 3] {
                    r.violations.push(Violation::at(
                        RULE_ORDER,
                        offset,
                        "a slice segment before the parameter sets",
                    ));
                }
                slice_seen = true;
                if nal.get(2).is_some_and(|b| b & 0x80 != 0) {
                    r.access_units += 1;
                    r.irap_pictures += usize::from(dtsc::hevc::is_irap(t));
                }
            }
            _ => {}
        }
        r.nal_units.push(NalUnit {
            offset,
            size: nal.len(),
            nal_type: t,
            name: nal_name(t),
            layer_id: ((nal[0] & 1) << 5) | (b1 >> 3),
            temporal_id,
        });
    }
    r.nal_unit_count = r.nal_units.len();
    r.error = no_start_code(buf, r.nal_unit_count);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nal_units_and_headers() {
        let mut s = Vec::new();
        for n in [
            &[0x40u8, 0x01, 0x0c][..],
            &[0x26, 0x01, 0xaf, 0x00],
            &[0x02, 0x01, 0x80],
            &[0x02, 0x01, 0x00],
        ] {
            s.extend_from_slice(&[0, 0, 1]);
            s.extend_from_slice(n);
        }
        let r = analyse(&s);
        assert_eq!(r.nal_unit_count, 4);
        assert_eq!(r.nal_units[0].name, "VPS");
        assert_eq!(
            (r.nal_units[1].name, r.nal_units[1].temporal_id),
            ("IDR_W_RADL", 0)
        );
        assert_eq!((r.access_units, r.irap_pictures), (2, 1));
        assert!(r.violations.iter().any(|v| v.rule == RULE_ORDER));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = analyse(&data);
            let mut s = vec![0, 0, 1, 0x42, 0x01];
            s.extend_from_slice(&data);
            let _ = analyse(&s);
        }
    }
}
