//! H.264 / AVC helpers: the avcC decoder configuration record (ISO/IEC 14496-15 §5.3.3.1),
//! AVCC ↔ Annex B conversion (ITU-T H.264 Annex B), a sequence parameter set reader
//! (ITU-T H.264 §7.3.2.1.1 and Annex E.1.1) and RFC 6381 codec strings.
//!
//! Everything here reads untrusted bytes: no function panics or indexes out of bounds on any
//! input; malformed input gives an [`H264Error`].

use thiserror::Error;

/// NAL unit type of a coded slice of a non-IDR picture (H.264 Table 7-1).
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of a coded slice of an IDR picture (H.264 Table 7-1).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of supplemental enhancement information (H.264 Table 7-1).
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set (H.264 Table 7-1).
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set (H.264 Table 7-1).
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter (H.264 Table 7-1).
pub const NAL_AUD: u8 = 9;

/// The Annex B start code this module writes before every NAL unit (4 bytes, H.264 B.1.1).
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Errors from the H.264 readers and writers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum H264Error {
    /// The input ended before the structure did.
    #[error("truncated H.264 data")]
    Truncated,
    /// avcC `configurationVersion` is not 1 (ISO/IEC 14496-15 §5.3.3.1.2).
    #[error("unsupported avcC configurationVersion {0}")]
    UnsupportedVersion(u8),
    /// A NAL length size outside 1..=4 bytes.
    #[error("invalid NAL unit length size {0}")]
    BadNalLengthSize(u8),
    /// A NAL unit length prefix runs past the end of the payload.
    #[error("NAL unit of {len} bytes at offset {offset} overruns the payload")]
    NalOverrun {
        /// Byte offset of the length prefix in the payload.
        offset: usize,
        /// The length the prefix claims, in bytes.
        len: usize,
    },
    /// The NAL unit given to [`parse_sps`] is not a sequence parameter set (type 7).
    #[error("not a sequence parameter set (NAL type {0})")]
    NotSps(u8),
    /// A syntax element of the SPS is out of its allowed range.
    #[error("invalid SPS: {0}")]
    InvalidSps(&'static str),
    /// Too many or too large parameter sets to fit an avcC record.
    #[error("parameter sets do not fit an avcC record")]
    TooLarge,
}

/// The AVCDecoderConfigurationRecord (`avcC`, ISO/IEC 14496-15 §5.3.3.1): what a decoder
/// needs before the first access unit. This is `Track::init` for H.264 tracks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AvcConfig {
    /// `AVCProfileIndication`: `profile_idc` of the SPS (66 baseline, 77 main, 100 high…).
    pub profile: u8,
    /// `profile_compatibility`: the constraint_set flags byte of the SPS.
    pub compat: u8,
    /// `AVCLevelIndication`: `level_idc` of the SPS (31 = level 3.1).
    pub level: u8,
    /// Size in bytes (1, 2 or 4; 3 is accepted when reading) of the length prefix of every
    /// NAL unit in samples: `lengthSizeMinusOne + 1`.
    pub nal_length_size: u8,
    /// Sequence parameter set NAL units, each with its 1-byte NAL header, without start code.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter set NAL units, each with its 1-byte NAL header, without start code.
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Builds a record from one SPS and one PPS NAL unit (each with its NAL header): profile,
    /// compatibility and level come from SPS bytes 1..4; `nal_length_size` is 4.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<AvcConfig, H264Error> {
        if sps.len() < 4 {
            return Err(H264Error::Truncated);
        }
        Ok(AvcConfig {
            profile: sps[1],
            compat: sps[2],
            level: sps[3],
            nal_length_size: 4,
            sps: vec![sps.to_vec()],
            pps: vec![pps.to_vec()],
        })
    }
}

/// Reads a big-endian unsigned integer of `n` bytes (1..=4) at `pos`, `None` past the end.
fn read_be(buf: &[u8], pos: usize, n: usize) -> Option<usize> {
    let bytes = buf.get(pos..pos.checked_add(n)?)?;
    Some(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize))
}

/// Parses an avcC record (ISO/IEC 14496-15 §5.3.3.1.1): version, profile, compatibility,
/// level, `lengthSizeMinusOne`, then the SPS and PPS arrays, each entry a 16-bit byte length
/// and a NAL unit. Reserved bits are not checked and the High-profile extension fields after
/// the PPS array are ignored.
pub fn parse_avcc(buf: &[u8]) -> Result<AvcConfig, H264Error> {
    let head = buf.get(..6).ok_or(H264Error::Truncated)?;
    if head[0] != 1 {
        return Err(H264Error::UnsupportedVersion(head[0]));
    }
    let mut cfg = AvcConfig {
        profile: head[1],
        compat: head[2],
        level: head[3],
        nal_length_size: (head[4] & 3) + 1,
        sps: Vec::new(),
        pps: Vec::new(),
    };
    let mut pos = 6;
    let num_sps = (head[5] & 0x1f) as usize;
    for _ in 0..num_sps {
        let len = read_be(buf, pos, 2).ok_or(H264Error::Truncated)?;
        let nal = buf
            .get(pos + 2..pos + 2 + len)
            .ok_or(H264Error::Truncated)?;
        cfg.sps.push(nal.to_vec());
        pos += 2 + len;
    }
    let num_pps = *buf.get(pos).ok_or(H264Error::Truncated)? as usize;
    pos += 1;
    for _ in 0..num_pps {
        let len = read_be(buf, pos, 2).ok_or(H264Error::Truncated)?;
        let nal = buf
            .get(pos + 2..pos + 2 + len)
            .ok_or(H264Error::Truncated)?;
        cfg.pps.push(nal.to_vec());
        pos += 2 + len;
    }
    Ok(cfg)
}

/// Appends the avcC record for `cfg` to `out` (ISO/IEC 14496-15 §5.3.3.1.1), reserved bits
/// set to 1. For High profiles (100, 110, 122, 144) the chroma format and bit depth fields
/// are added when the first SPS parses, as the 2010 and later editions require.
/// Fails when there are more than 31 SPS or 255 PPS, a parameter set is over 65535 bytes, or
/// `nal_length_size` is not 1..=4. On error `out` is unchanged.
pub fn write_avcc(cfg: &AvcConfig, out: &mut Vec<u8>) -> Result<(), H264Error> {
    if !(1..=4).contains(&cfg.nal_length_size) {
        return Err(H264Error::BadNalLengthSize(cfg.nal_length_size));
    }
    if cfg.sps.len() > 31
        || cfg.pps.len() > 255
        || cfg
            .sps
            .iter()
            .chain(cfg.pps.iter())
            .any(|p| p.len() > 0xffff)
    {
        return Err(H264Error::TooLarge);
    }
    out.extend_from_slice(&[
        1,
        cfg.profile,
        cfg.compat,
        cfg.level,
        0xfc | (cfg.nal_length_size - 1),
        0xe0 | cfg.sps.len() as u8,
    ]);
    for s in &cfg.sps {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }
    out.push(cfg.pps.len() as u8);
    for p in &cfg.pps {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    if matches!(cfg.profile, 100 | 110 | 122 | 144) {
        if let Some(info) = cfg.sps.first().and_then(|s| parse_sps(s).ok()) {
            out.extend_from_slice(&[
                0xfc | (info.chroma_format_idc & 3),
                0xf8 | (info.bit_depth_luma.saturating_sub(8) & 7),
                0xf8 | (info.bit_depth_chroma.saturating_sub(8) & 7),
                0,
            ]);
        }
    }
    Ok(())
}

/// Iterator over the NAL units of an AVCC payload (each NAL unit preceded by a big-endian
/// length of `nal_length_size` bytes, ISO/IEC 14496-15 §5.3.4.2). Yields each NAL unit
/// (header byte included) as a borrowed slice; yields one `Err` and then stops on a
/// malformed payload. Zero-length NAL units are yielded as empty slices.
#[derive(Debug, Clone)]
pub struct AvccNalus<'a> {
    buf: &'a [u8],
    pos: usize,
    len_size: usize,
    failed: bool,
}

/// Iterates over the NAL units of the AVCC `payload` whose length prefixes are
/// `nal_length_size` bytes (1..=4). See [`AvccNalus`].
pub fn nal_units(payload: &[u8], nal_length_size: u8) -> AvccNalus<'_> {
    AvccNalus {
        buf: payload,
        pos: 0,
        len_size: nal_length_size as usize,
        failed: false,
    }
}

impl<'a> Iterator for AvccNalus<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        if !(1..=4).contains(&self.len_size) {
            self.failed = true;
            return Some(Err(H264Error::BadNalLengthSize(self.len_size as u8)));
        }
        let offset = self.pos;
        let Some(len) = read_be(self.buf, offset, self.len_size) else {
            self.failed = true;
            return Some(Err(H264Error::Truncated));
        };
        let start = offset + self.len_size;
        match start
            .checked_add(len)
            .and_then(|end| self.buf.get(start..end))
        {
            Some(nal) => {
                self.pos = start + len;
                Some(Ok(nal))
            }
            None => {
                self.failed = true;
                Some(Err(H264Error::NalOverrun { offset, len }))
            }
        }
    }
}

/// The `nal_unit_type` (low 5 bits of the first byte, H.264 §7.3.1) of a NAL unit, `None`
/// for an empty slice.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// The NAL units of an Annex B byte stream (H.264 Annex B.1, the same for H.265 Annex B):
/// the bytes between start codes (`00 00 01`, or `00 00 00 01`), without the start codes and
/// without trailing zero bytes (`trailing_zero_8bits`). Bytes before the first start code
/// are skipped; empty units are not yielded. Never panics.
pub fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|s| s + 3);
    std::iter::from_fn(move || loop {
        let start = pos?;
        let next = find_start_code(data, start);
        let end = next.unwrap_or(data.len());
        pos = next.map(|s| s + 3);
        let mut nal = &data[start..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            return Some(nal);
        }
        pos?;
    })
}

/// Position of the next three-byte start code `00 00 01` at or after `from`: each `01` byte
/// (found with the `memchr` crate's vectorised search) preceded by two zero bytes.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from.checked_add(2)?;
    while i < data.len() {
        let k = i + memchr::memchr(1, &data[i..])?;
        if data[k - 1] == 0 && data[k - 2] == 0 {
            return Some(k - 2);
        }
        i = k + 1;
    }
    None
}

/// Appends the AVCC `payload` to `out` in Annex B form: every NAL unit prefixed with the
/// 4-byte start code `00 00 00 01`. Empty NAL units are dropped. On error `out` is restored
/// to its length before the call.
pub fn avcc_to_annexb(
    payload: &[u8],
    nal_length_size: u8,
    out: &mut Vec<u8>,
) -> Result<(), H264Error> {
    let before = out.len();
    for nal in nal_units(payload, nal_length_size) {
        match nal {
            Ok([]) => {}
            Ok(nal) => {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
            }
            Err(e) => {
                out.truncate(before);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// What [`parse_sps`] learns from a sequence parameter set (H.264 §7.4.2.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct SpsInfo {
    /// Displayed width in pixels, after frame cropping.
    pub width: u32,
    /// Displayed height in pixels, after frame cropping (frames, not fields).
    pub height: u32,
    /// `profile_idc` (66 baseline, 77 main, 100 high, …).
    pub profile_idc: u8,
    /// The constraint_set flags byte following `profile_idc`.
    pub constraint_flags: u8,
    /// `level_idc` (level × 10).
    pub level_idc: u8,
    /// `chroma_format_idc`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (1 when not coded).
    pub chroma_format_idc: u8,
    /// Luma bit depth in bits (`bit_depth_luma_minus8 + 8`; 8 when not coded).
    pub bit_depth_luma: u8,
    /// Chroma bit depth in bits (`bit_depth_chroma_minus8 + 8`; 8 when not coded).
    pub bit_depth_chroma: u8,
    /// `frame_mbs_only_flag`: false when the stream may carry interlaced fields.
    pub frame_mbs_only: bool,
    /// Frames per second from the VUI timing info (`time_scale / (2 · num_units_in_tick)`,
    /// H.264 E.2.1), `None` when the VUI carries no timing info.
    pub fps: Option<f64>,
    /// The VUI timing info as (`num_units_in_tick`, `time_scale` in Hz), both non-zero
    /// (H.264 E.1.1, E.2.1); `None` when the VUI carries none.
    pub timing: Option<(u32, u32)>,
}

impl SpsInfo {
    /// The frame rate in frames per 1000 seconds (the model's `Track::fpks`), rounded.
    pub fn fpks(&self) -> Option<u32> {
        self.fps
            .filter(|f| f.is_finite() && *f > 0.0 && *f < 4_000_000.0)
            .map(|f| (f * 1000.0).round() as u32)
    }
}

/// Bit reader over an RBSP (emulation prevention already removed), MSB first. Shared with
/// the HEVC SPS reader, whose syntax uses the same descriptors (`u(n)`, `ue(v)`).
pub(crate) struct Bits<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) bit: usize,
}

impl Bits<'_> {
    pub(crate) fn u1(&mut self) -> Result<bool, H264Error> {
        let byte = self.buf.get(self.bit / 8).ok_or(H264Error::Truncated)?;
        let v = (byte >> (7 - (self.bit % 8))) & 1;
        self.bit += 1;
        Ok(v == 1)
    }

    pub(crate) fn u(&mut self, n: u32) -> Result<u32, H264Error> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.u1()? as u32;
        }
        Ok(v)
    }

    /// `ue(v)`, H.264 §9.1; values above 2^32 − 2 are rejected.
    pub(crate) fn ue(&mut self) -> Result<u32, H264Error> {
        let mut zeros = 0;
        while !self.u1()? {
            zeros += 1;
            if zeros > 31 {
                return Err(H264Error::InvalidSps("exp-Golomb code too long"));
            }
        }
        let rest = self.u(zeros)? as u64;
        let v = (1u64 << zeros) - 1 + rest;
        u32::try_from(v).map_err(|_| H264Error::InvalidSps("exp-Golomb value too large"))
    }

    /// `se(v)`, H.264 §9.1.1.
    pub(crate) fn se(&mut self) -> Result<i64, H264Error> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Removes emulation prevention bytes (the `03` of every `00 00 03`, H.264 §7.4.1),
/// turning NAL unit payload bytes into an RBSP.
pub(crate) fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Skips a `scaling_list()` of `size` coefficients (H.264 §7.3.2.1.1.1).
fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Result<(), H264Error> {
    let mut last = 8i64;
    let mut next = 8i64;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::InvalidSps("delta_scale out of range"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Parses a sequence parameter set NAL unit (with its 1-byte NAL header, without start code;
/// emulation prevention bytes are removed here) per H.264 §7.3.2.1.1: profile and level,
/// the High-profile chroma/bit-depth/scaling-list fields, picture order count fields, size in
/// macroblocks, `frame_mbs_only_flag`, frame cropping (§7.4.2.1.1, CropUnitX/CropUnitY) and
/// the VUI up to its timing info (Annex E.1.1).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, H264Error> {
    let t = nal_type(nal).ok_or(H264Error::Truncated)?;
    if t != NAL_SPS {
        return Err(H264Error::NotSps(t));
    }
    let rbsp = unescape(nal.get(1..).unwrap_or(&[]));
    let mut r = Bits { buf: &rbsp, bit: 0 };
    let profile_idc = r.u(8)? as u8;
    let constraint_flags = r.u(8)? as u8;
    let level_idc = r.u(8)? as u8;
    if r.ue()? > 31 {
        return Err(H264Error::InvalidSps("seq_parameter_set_id > 31"));
    }
    let mut chroma_format_idc = 1u32;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8u32;
    let mut bit_depth_chroma = 8u32;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(H264Error::InvalidSps("chroma_format_idc > 3"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.u1()?;
        }
        bit_depth_luma = r.ue()?.saturating_add(8);
        bit_depth_chroma = r.ue()?.saturating_add(8);
        if bit_depth_luma > 14 || bit_depth_chroma > 14 {
            return Err(H264Error::InvalidSps("bit depth > 14"));
        }
        let _qpprime_y_zero_transform_bypass = r.u1()?;
        if r.u1()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.u1()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    if r.ue()? > 12 {
        return Err(H264Error::InvalidSps("log2_max_frame_num_minus4 > 12"));
    }
    match r.ue()? {
        0 => {
            if r.ue()? > 12 {
                return Err(H264Error::InvalidSps(
                    "log2_max_pic_order_cnt_lsb_minus4 > 12",
                ));
            }
        }
        1 => {
            let _delta_pic_order_always_zero = r.u1()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(H264Error::InvalidSps(
                    "num_ref_frames_in_pic_order_cnt_cycle",
                ));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return Err(H264Error::InvalidSps("pic_order_cnt_type > 2")),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.u1()?;
    let width_mbs = r.ue()? as u64 + 1;
    let height_map_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.u1()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.u1()?;
    }
    let _direct_8x8_inference = r.u1()?;
    let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
    if r.u1()? {
        crop_l = r.ue()? as u64;
        crop_r = r.ue()? as u64;
        crop_t = r.ue()? as u64;
        crop_b = r.ue()? as u64;
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let full_w = width_mbs * 16;
    let full_h = height_map_units * 16 * field_factor;
    let width = full_w
        .checked_sub(crop_x * (crop_l + crop_r))
        .ok_or(H264Error::InvalidSps(
            "horizontal cropping exceeds the width",
        ))?;
    let height = full_h
        .checked_sub(crop_y * (crop_t + crop_b))
        .ok_or(H264Error::InvalidSps(
            "vertical cropping exceeds the height",
        ))?;
    let width = u32::try_from(width).map_err(|_| H264Error::InvalidSps("width too large"))?;
    let height = u32::try_from(height).map_err(|_| H264Error::InvalidSps("height too large"))?;

    // VUI (Annex E.1.1), up to and including the timing info. A truncated VUI is tolerated:
    // the picture size is already known, so only the frame rate is lost.
    let timing = if r.u1().unwrap_or(false) {
        parse_vui_timing(&mut r).ok().flatten()
    } else {
        None
    };
    Ok(SpsInfo {
        width,
        height,
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma: bit_depth_luma as u8,
        bit_depth_chroma: bit_depth_chroma as u8,
        frame_mbs_only,
        fps: timing.map(|(tick, scale)| f64::from(scale) / (2.0 * f64::from(tick))),
        timing,
    })
}

/// Reads VUI parameters up to the timing info; `Some((num_units_in_tick, time_scale))` when
/// timing info is present and neither is zero (H.264 E.1.1, E.2.1).
fn parse_vui_timing(r: &mut Bits<'_>) -> Result<Option<(u32, u32)>, H264Error> {
    skip_vui_picture_format(r)?;
    if !r.u1()? {
        return Ok(None);
    }
    let num_units_in_tick = r.u(32)?;
    let time_scale = r.u(32)?;
    if num_units_in_tick == 0 || time_scale == 0 {
        return Ok(None);
    }
    Ok(Some((num_units_in_tick, time_scale)))
}

/// Skips the VUI fields that H.264 and H.265 share at its start (H.264 §E.1.1, H.265
/// §E.2.1): aspect ratio, overscan, video signal type and chroma sample location.
pub(crate) fn skip_vui_picture_format(r: &mut Bits<'_>) -> Result<(), H264Error> {
    if r.u1()? {
        // aspect_ratio_info_present_flag
        if r.u(8)? == 255 {
            r.u(32)?; // sar_width, sar_height
        }
    }
    if r.u1()? {
        r.u1()?; // overscan_appropriate_flag
    }
    if r.u1()? {
        r.u(4)?; // video_format, video_full_range_flag
        if r.u1()? {
            r.u(24)?; // colour_primaries, transfer_characteristics, matrix_coefficients
        }
    }
    if r.u1()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    Ok(())
}

/// The RFC 6381 §3.3 codec string for `cfg`: `avc1.` and the profile, compatibility and level
/// bytes as six lowercase hex digits, for example `avc1.64001f` (High, level 3.1).
pub fn codec_string(cfg: &AvcConfig) -> String {
    format!(
        "avc1.{:02x}{:02x}{:02x}",
        cfg.profile, cfg.compat, cfg.level
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_bit_depth_is_an_error_not_an_overflow() {
        // Found by fuzzing: High profile with bit_depth_luma_minus8 = 2^32 - 2.
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0x64, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(parse_sps(&sps).is_err());
    }
    use proptest::prelude::*;

    /// Writes bits MSB first, for building test SPS NAL units.
    struct BitWriter {
        out: Vec<u8>,
        nbits: usize,
    }

    impl BitWriter {
        fn new() -> Self {
            BitWriter {
                out: Vec::new(),
                nbits: 0,
            }
        }
        fn bit(&mut self, b: bool) {
            if self.nbits & 7 == 0 {
                self.out.push(0);
            }
            if b {
                let last = self.out.len() - 1;
                self.out[last] |= 0x80 >> (self.nbits % 8);
            }
            self.nbits += 1;
        }
        fn u(&mut self, n: u32, v: u64) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u64) {
            let x = v + 1;
            let len = 64 - x.leading_zeros();
            self.u(len - 1, 0);
            self.u(len, x);
        }
        fn finish(mut self) -> Vec<u8> {
            self.bit(true); // rbsp_stop_one_bit
            self.out
        }
    }

    /// Adds emulation prevention bytes to an RBSP.
    fn escape(rbsp: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }

    /// A 1280x720 High-profile SPS with cropping, 25 fps timing and a scaling matrix.
    fn high_sps() -> Vec<u8> {
        let mut w = BitWriter::new();
        w.u(8, 100);
        w.u(8, 0);
        w.u(8, 31);
        w.ue(0); // sps id
        w.ue(1); // chroma 4:2:0
        w.ue(0);
        w.ue(0);
        w.bit(false); // qpprime
        w.bit(true); // seq_scaling_matrix_present
        w.bit(true); // list 0 present
        for _ in 0..16 {
            w.ue(1); // delta_scale = +1
        }
        for _ in 1..8 {
            w.bit(false);
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(0); // poc type 0
        w.ue(2);
        w.ue(4); // max refs
        w.bit(false);
        w.ue(79); // 80 mbs = 1280
        w.ue(44); // 45 mbs = 720
        w.bit(true); // frame_mbs_only
        w.bit(true); // direct8x8
        w.bit(false); // no cropping
        w.bit(true); // vui
        w.bit(true); // aspect ratio
        w.u(8, 1);
        w.bit(false); // overscan
        w.bit(true); // video signal
        w.u(4, 5 << 1);
        w.bit(true);
        w.u(24, 0x010101);
        w.bit(false); // chroma loc
        w.bit(true); // timing
        w.u(32, 1);
        w.u(32, 50);
        w.bit(true);
        let mut nal = vec![0x67];
        nal.extend(escape(&w.finish()));
        nal
    }

    /// A 1920x1080 baseline SPS (1088 coded, cropped by 8), no VUI.
    fn baseline_1080_sps() -> Vec<u8> {
        let mut w = BitWriter::new();
        w.u(8, 66);
        w.u(8, 0xc0);
        w.u(8, 40);
        w.ue(0);
        w.ue(0);
        w.ue(2); // poc type 2
        w.ue(1);
        w.bit(false);
        w.ue(119);
        w.ue(67);
        w.bit(true);
        w.bit(true);
        w.bit(true); // cropping
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4); // 4 * 2 = 8 lines
        w.bit(false); // no vui
        let mut nal = vec![0x67];
        nal.extend(escape(&w.finish()));
        nal
    }

    #[test]
    fn parses_high_profile_sps_with_scaling_lists_and_timing() {
        let info = parse_sps(&high_sps()).unwrap();
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.profile_idc, 100);
        assert_eq!(info.level_idc, 31);
        assert_eq!(info.chroma_format_idc, 1);
        assert!(info.frame_mbs_only);
        assert_eq!(info.fps, Some(25.0));
        assert_eq!(info.timing, Some((1, 50)));
        assert_eq!(info.fpks(), Some(25000));
    }

    #[test]
    fn parses_cropped_baseline_sps() {
        let info = parse_sps(&baseline_1080_sps()).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!((info.fps, info.timing), (None, None));
    }

    #[test]
    fn parses_interlaced_sps() {
        let mut w = BitWriter::new();
        w.u(8, 77);
        w.u(8, 0);
        w.u(8, 30);
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(2);
        w.bit(false);
        w.ue(44); // 720
        w.ue(17); // 18 map units * 2 * 16 = 576
        w.bit(false); // field coding
        w.bit(false); // mb adaptive
        w.bit(true);
        w.bit(false);
        w.bit(false);
        let mut nal = vec![0x67];
        nal.extend(escape(&w.finish()));
        let info = parse_sps(&nal).unwrap();
        assert_eq!((info.width, info.height), (720, 576));
        assert!(!info.frame_mbs_only);
    }

    #[test]
    fn rejects_non_sps_and_garbage() {
        assert_eq!(parse_sps(&[0x68, 1, 2]), Err(H264Error::NotSps(8)));
        assert_eq!(parse_sps(&[]), Err(H264Error::Truncated));
        assert!(parse_sps(&[0x67, 100]).is_err());
        assert!(parse_sps(&[0x67, 66, 0, 30, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn avcc_round_trip_and_codec_string() {
        let sps = high_sps();
        let cfg = AvcConfig::from_parameter_sets(&sps, &[0x68, 0xeb, 0xe3, 0xcb]).unwrap();
        let mut buf = Vec::new();
        write_avcc(&cfg, &mut buf).unwrap();
        assert_eq!(&buf[..6], &[1, 100, 0, 31, 0xff, 0xe1]);
        // High profile: chroma_format / bit depth trailer present.
        assert_eq!(&buf[buf.len() - 4..], &[0xfd, 0xf8, 0xf8, 0]);
        let back = parse_avcc(&buf).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(codec_string(&back), "avc1.64001f");
    }

    #[test]
    fn avcc_errors() {
        assert_eq!(parse_avcc(&[1, 2, 3]), Err(H264Error::Truncated));
        assert_eq!(
            parse_avcc(&[0, 66, 0, 30, 0xff, 0xe1]),
            Err(H264Error::UnsupportedVersion(0))
        );
        assert_eq!(
            parse_avcc(&[1, 66, 0, 30, 0xff, 0xe1, 0, 9, 0x67]),
            Err(H264Error::Truncated)
        );
    }

    #[test]
    fn converts_avcc_to_annexb() {
        let payload = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 0, 0, 0, 0, 3, 0x65, 1, 2];
        let mut out = vec![0xaa];
        avcc_to_annexb(&payload, 4, &mut out).unwrap();
        assert_eq!(
            out,
            [0xaa, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 1, 2].to_vec()
        );
        let types: Vec<u8> = nal_units(&payload, 4)
            .map(|n| n.unwrap().first().copied().unwrap_or(0) & 0x1f)
            .collect();
        assert_eq!(types, [9, 0, 5]);
        let mut out = vec![0xaa];
        assert_eq!(
            avcc_to_annexb(&[0, 0, 0, 9, 1], 4, &mut out),
            Err(H264Error::NalOverrun { offset: 0, len: 9 })
        );
        assert_eq!(out, [0xaa]);
        assert!(avcc_to_annexb(&[1], 0, &mut out).is_err());
        let mut out = Vec::new();
        avcc_to_annexb(&[2, 0x41, 7], 1, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x41, 7]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), n in 0u8..6) {
            let _ = parse_avcc(&data);
            let mut sps = vec![0x67];
            sps.extend_from_slice(&data);
            let _ = parse_sps(&sps);
            let _ = parse_sps(&data);
            let mut out = Vec::new();
            let _ = avcc_to_annexb(&data, n, &mut out);
            for nal in nal_units(&data, n) { let _ = nal; }
        }

        /// The start-code search finds what a byte-by-byte scan finds (bytes drawn mostly
        /// from 0 and 1, so that start codes and near misses are common).
        #[test]
        fn annexb_split_matches_a_plain_scan(
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..200),
        ) {
            let mut starts = Vec::new();
            let mut i = 0;
            while i + 3 <= data.len() {
                if data[i..i + 3] == [0, 0, 1] {
                    starts.push(i);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            let mut want: Vec<&[u8]> = Vec::new();
            for (k, &s) in starts.iter().enumerate() {
                let end = starts.get(k + 1).copied().unwrap_or(data.len());
                let mut nal = &data[s + 3..end];
                while let [rest @ .., 0] = nal {
                    nal = rest;
                }
                if !nal.is_empty() {
                    want.push(nal);
                }
            }
            let got: Vec<&[u8]> = annexb_nal_units(&data).collect();
            prop_assert_eq!(got, want);
        }
    }
}
