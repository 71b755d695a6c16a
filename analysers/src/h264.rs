//! `h264`: an H.264 Annex B byte stream (ITU-T H.264 Annex B; also a raw file of start-code
//! NAL units): every NAL unit (§7.3.1: type, `nal_ref_idc`, size), access units counted by
//! the first slice of each picture, and each SPS's fields (§7.3.2.1.1: profile, level,
//! size, VUI timing as a frame rate). NAL units are split by `dtsc::h264::annexb_nal_units`
//! and SPSs read by `dtsc::h264::parse_sps`.
//!
//! Rules checked:
//! * §7.4.1 `forbidden_zero_bit` is 0, and no 0x000000 or 0x000002 within a NAL unit (a
//!   damaged or zeroed stretch of the stream).
//! * §7.4.1.2.1: an SPS and a PPS come before the first slice.
//! * §7.3.2.1.1: every SPS parses.

use serde::Serialize;

use crate::report::{ReadError, Violation};

/// One NAL unit (§7.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NalUnit {
    /// Byte offset of its first byte (after the start code).
    pub offset: u64,
    /// Bytes, header included, start code excluded.
    pub size: usize,
    /// `nal_unit_type`.
    #[serde(rename = "type")]
    pub nal_type: u8,
    /// What the type means (Table 7-1).
    pub name: &'static str,
    /// `nal_ref_idc` (0: not used for reference).
    pub nal_ref_idc: u8,
}

/// An SPS's fields (§7.3.2.1.1, E.2.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sps {
    /// Byte offset of the NAL unit.
    pub offset: u64,
    /// `profile_idc` (66 Baseline, 77 Main, 100 High…).
    pub profile_idc: u8,
    /// The profile's name.
    pub profile: &'static str,
    /// `level_idc` (level × 10).
    pub level_idc: u8,
    /// Width in pixels after cropping.
    pub width: u32,
    /// Height in pixels after cropping.
    pub height: u32,
    /// `chroma_format_idc`.
    pub chroma_format_idc: u8,
    /// Luma bit depth.
    pub bit_depth: u8,
    /// `frame_mbs_only_flag`.
    pub frame_mbs_only: bool,
    /// `num_units_in_tick`, when the VUI has timing info (H.264 E.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_units_in_tick: Option<u32>,
    /// `time_scale` (Hz), when the VUI has timing info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<u32>,
    /// Frames per second from the VUI timing (`time_scale / (2 · num_units_in_tick)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct H264Report {
    /// NAL units read.
    pub nal_unit_count: usize,
    /// Access units (pictures: slices with `first_mb_in_slice` 0).
    pub access_units: usize,
    /// IDR pictures.
    pub idr_pictures: usize,
    /// Each SPS.
    pub sps: Vec<Sps>,
    /// Every NAL unit.
    pub nal_units: Vec<NalUnit>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// The name of an H.264 `nal_unit_type` (Table 7-1).
pub fn nal_name(t: u8) -> &'static str {
    match t {
        1 => "non-IDR slice",
        2 => "slice data A",
        3 => "slice data B",
        4 => "slice data C",
        5 => "IDR slice",
        6 => "SEI",
        7 => "SPS",
        8 => "PPS",
        9 => "AUD",
        10 => "end of sequence",
        11 => "end of stream",
        12 => "filler",
        13 => "SPS extension",
        14 => "prefix NAL unit",
        15 => "subset SPS",
        19 => "auxiliary slice",
        20 => "slice extension",
        _ => "reserved/unspecified",
    }
}

/// The name of an H.264 `profile_idc`.
pub fn profile_name(p: u8) -> &'static str {
    match p {
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4 Predictive",
        _ => "other",
    }
}

/// Offset of `part` inside `whole` (a subslice of it).
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> u64 {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize) as u64
}

/// The read error of an Annex B stream of `buf.len()` bytes in which `nal_units` NAL units
/// were found: none found in a non-empty input means it has no start code (Annex B.1).
pub(crate) fn no_start_code(buf: &[u8], nal_units: usize) -> Option<ReadError> {
    (nal_units == 0 && !buf.is_empty())
        .then(|| ReadError::at(0, "no Annex B start code (00 00 01) found"))
}

/// Where, inside `nal` (a NAL unit as `annexb_nal_units` gives it), the first of the
/// three-byte sequences 0x000000 and 0x000002 stands: a NAL unit may hold none of them, nor
/// 0x000001 (which would end it), at any byte-aligned position (H.264 §7.4.1, H.265 §7.4.2).
/// A zeroed or damaged stretch of a stream shows up as one.
pub(crate) fn forbidden_sequence(nal: &[u8]) -> Option<usize> {
    nal.windows(3)
        .position(|w| w[0] == 0 && w[1] == 0 && (w[2] == 0 || w[2] == 2))
}

const RULE_EMULATION: &str =
    "ITU-T H.264 §7.4.1 (no 0x000000, 0x000001 or 0x000002 within a NAL unit)";
const RULE_FZB: &str = "ITU-T H.264 §7.4.1 forbidden_zero_bit";
const RULE_ORDER: &str = "ITU-T H.264 §7.4.1.2.1 (SPS and PPS before the first slice)";
const RULE_SPS: &str = "ITU-T H.264 §7.3.2.1.1 seq_parameter_set_data";

/// Reads an Annex B byte stream. Never panics.
pub fn analyse(buf: &[u8]) -> H264Report {
    let mut r = H264Report::default();
    let (mut sps_seen, mut pps_seen, mut slice_seen) = (false, false, false);
    for nal in dtsc::h264::annexb_nal_units(buf) {
        let offset = offset_in(buf, nal);
        let t = nal[0] & 0x1f;
        if nal[0] & 0x80 != 0 {
            r.violations
                .push(Violation::at(RULE_FZB, offset, "forbidden_zero_bit is 1"));
        }
        if let Some(at) = forbidden_sequence(nal) {
            r.violations.push(Violation::at(
                RULE_EMULATION,
                offset + at as u64,
                format!("0x0000{:02x} in a NAL unit of type {t}", nal[at + 2]),
            ));
        }
        match t {
            7 => {
                sps_seen = true;
                match dtsc::h264::parse_sps(nal) {
                    Ok(s) => r.sps.push(Sps {
                        offset,
                        profile_idc: s.profile_idc,
                        profile: profile_name(s.profile_idc),
                        level_idc: s.level_idc,
                        width: s.width,
                        height: s.height,
                        chroma_format_idc: s.chroma_format_idc,
                        bit_depth: s.bit_depth_luma,
                        frame_mbs_only: s.frame_mbs_only,
                        num_units_in_tick: s.timing.map(|t| t.0),
                        time_scale: s.timing.map(|t| t.1),
                        fps: s.fps,
                    }),
                    Err(e) => r
                        .violations
                        .push(Violation::at(RULE_SPS, offset, e.to_string())),
                }
            }
            8 => pps_seen = true,
            1 | 5 => {
                if !(slice_seen || sps_seen && pps_seen) {
                    r.violations.push(Violation::at(
                        RULE_ORDER,
                        offset,
                        "a slice before any SPS and PPS",
                    ));
                }
                slice_seen = true;
                // first_mb_in_slice is ue(v): 0 is coded as a single 1 bit.
                if nal.get(1).is_some_and(|b| b & 0x80 != 0) {
                    r.access_units += 1;
                    r.idr_pictures += usize::from(t == 5);
                }
            }
            _ => {}
        }
        r.nal_units.push(NalUnit {
            offset,
            size: nal.len(),
            nal_type: t,
            name: nal_name(t),
            nal_ref_idc: (nal[0] >> 5) & 3,
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

    /// x264 High profile SPS for 640x360 with VUI timing, and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn stream(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn nal_units_and_sps() {
        let s = stream(&[
            &[0x09, 0xf0],
            SPS,
            PPS,
            &[0x65, 0x88, 0x84],
            &[0x41, 0x9a, 0x02],
            &[0x41, 0x1a, 0x02],
        ]);
        let r = analyse(&s);
        assert_eq!(r.nal_unit_count, 6);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.access_units, r.idr_pictures), (2, 1));
        let sps = &r.sps[0];
        assert_eq!(
            (sps.profile, sps.level_idc, sps.width, sps.height),
            ("High", 30, 640, 360)
        );
        assert_eq!(sps.fps, Some(25.0));
        let (tick, scale) = (sps.num_units_in_tick.unwrap(), sps.time_scale.unwrap());
        assert_eq!(scale, 50 * tick, "two ticks a frame at 25 fps");
        assert_eq!(r.nal_units[1].offset, 4 + 2 + 4);
        assert_eq!(
            (r.nal_units[3].name, r.nal_units[3].nal_ref_idc),
            ("IDR slice", 3)
        );
    }

    #[test]
    fn flags_order_and_garbage() {
        let r = analyse(&stream(&[&[0x65, 0x88], SPS]));
        assert!(r.violations.iter().any(|v| v.rule == RULE_ORDER));
        assert!(analyse(b"no start code here").error.is_some());
        // A zeroed stretch inside a slice: 0x000000 at byte 3 of the NAL unit.
        let s = stream(&[SPS, PPS, &[0x65, 0x88, 0x84, 0, 0, 0, 0, 0x21]]);
        let r = analyse(&s);
        let v: Vec<_> = r
            .violations
            .iter()
            .filter(|v| v.rule == RULE_EMULATION)
            .collect();
        assert_eq!(v.len(), 1, "{:?}", r.violations);
        assert_eq!(
            v[0].offset,
            Some((4 + SPS.len() + 4 + PPS.len() + 4 + 3) as u64)
        );
        assert_eq!(forbidden_sequence(&[0x41, 0, 0, 3, 0, 0, 2]), Some(4));
        assert_eq!(forbidden_sequence(&[0x41, 0, 0, 3, 0]), None);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = analyse(&data);
            let _ = analyse(&stream(&[&data]));
        }
    }
}
