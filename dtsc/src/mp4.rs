//! ISO base media file format (ISO/IEC 14496-12) writer, sans-IO: CMAF init segments and
//! movie fragments for the HLS fMP4, LL-HLS, DASH and Smooth Streaming outputs, and
//! progressive ("moov first") MP4 files for VOD, plus a minimal box reader.
//!
//! - [`write_init`] / [`write_init_single`]: `ftyp` + `moov` with empty sample tables and an
//!   `mvex` (§8.8.1), the CMAF header of ISO/IEC 23000-19 §7.3.1.
//! - [`FragmentBuilder`]: collects [`PacketRef`]s and writes one `moof` + `mdat` (§8.8.4),
//!   either copying the payloads ([`FragmentBuilder::finish`]) or writing only the headers
//!   and handing back the payload slices in `mdat` order for a vectored write
//!   ([`FragmentBuilder::write_header`] + [`FragmentBuilder::payloads`]).
//! - [`write_progressive`]: a complete file with full sample tables (§8.6, §8.7), `moov`
//!   before `mdat`.
//! - [`boxes`], [`find_box`], [`full_box`]: a reader that never panics, for tests and
//!   analysers.
//!
//! Timescales ([`timescale`]): video 90 000 Hz (every ms time is an exact number of ticks,
//! and ISO/IEC 23000-19 recommends a video timescale that represents the frame rate
//! exactly, which 90 kHz does for all common rates); audio the sample rate, so that AAC
//! frame durations are whole sample counts. The movie timescale (`mvhd`) is 1000 (ms).
//! Model times (ms) become ticks as `round(ms × timescale / 1000)` computed from the
//! absolute ms value each time, so rounding never accumulates into drift; a duration is the
//! difference of two converted timestamps.
//!
//! Sample entries: H.264 `avc1` + `avcC` (ISO/IEC 14496-15 §5.3.4), HEVC `hvc1` + `hvcC`
//! (§8.3.3; `hvc1` says the parameter sets are in the record, which DTSC init data
//! guarantees), AAC `mp4a` + `esds` with objectTypeIndication 0x40 and the
//! AudioSpecificConfig as DecoderSpecificInfo (ISO/IEC 14496-14 §5.6, ISO/IEC 14496-1
//! §7.2.6.5), MP3 `mp4a` + `esds` with objectTypeIndication 0x6B (MPEG-1 audio, ≥ 32 kHz)
//! or 0x69 (MPEG-2 audio, < 32 kHz). Other codecs and meta tracks are refused with
//! [`Mp4Error::UnsupportedCodec`].

use crate::aac;
use crate::h264;
use crate::model::{Codec, PacketRef, Track, TrackKind};
use thiserror::Error;

/// Timescale of video tracks, ticks per second.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Timescale of the movie header (`mvhd`, §8.2.2) and of edit lists and `tkhd` durations:
/// milliseconds.
pub const MOVIE_TIMESCALE: u32 = 1000;

/// `sample_flags` (§8.8.3.1) of a sync sample: `sample_depends_on` = 2 (depends on no other
/// sample), `sample_is_non_sync_sample` = 0.
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` (§8.8.3.1) of a non-sync sample: `sample_depends_on` = 1 (depends on
/// others), `sample_is_non_sync_sample` = 1.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// `tfhd` flag: `default-sample-flags-present` (§8.8.7.1).
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
/// `tfhd` flag: `default-base-is-moof` (§8.8.7.1).
const TFHD_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags (§8.8.8.1).
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_CTS: u32 = 0x00_0800;

/// Most samples [`write_progressive`] accepts: keeps `moov` (at most about 40 bytes of
/// tables per sample) well below 4 GiB.
pub const MAX_PROGRESSIVE_SAMPLES: usize = 50_000_000;

/// Errors from the MP4 writers. When one is returned, nothing was appended to `out`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Mp4Error {
    /// A track whose codec (or kind) this writer cannot put in MP4.
    #[error("track {track}: codec {codec} cannot be written to MP4")]
    UnsupportedCodec {
        /// The track id.
        track: u32,
        /// The DTSC codec name.
        codec: String,
    },
    /// Init data missing or malformed for the codec (avcC, hvcC, AudioSpecificConfig).
    #[error("track {track}: bad init data: {reason}")]
    BadInit {
        /// The track id.
        track: u32,
        /// What is wrong.
        reason: String,
    },
    /// An audio track with neither a rate nor an AudioSpecificConfig giving one.
    #[error("audio track {0} has no sample rate")]
    NoSampleRate(u32),
    /// No track given.
    #[error("no tracks")]
    NoTracks,
    /// Track id 0 (reserved in `tkhd`, §8.3.2.3) or an id used twice.
    #[error("track id {0} is 0 or used twice")]
    BadTrackId(u32),
    /// A packet for a track not in the set the writer was given.
    #[error("packet for unknown track {0}")]
    UnknownTrack(u32),
    /// A packet's DTS is before the previous DTS of its track.
    #[error("track {track}: DTS went back from {prev} ms to {dts} ms")]
    DtsBackwards {
        /// The track id.
        track: u32,
        /// The previous DTS, ms.
        prev: u64,
        /// The offending DTS, ms.
        dts: u64,
    },
    /// A single sample over 4 GiB − 1 (`trun`/`stsz` sizes are 32-bit).
    #[error("sample of {0} bytes is too large")]
    SampleTooLarge(usize),
    /// The output would exceed what the boxes can address (a fragment over 2 GiB, whose
    /// `trun` data offset is a signed 32-bit value, or more than
    /// [`MAX_PROGRESSIVE_SAMPLES`] samples in a progressive file).
    #[error("{0} too large")]
    TooLarge(&'static str),
}

// ---------------------------------------------------------------------------------------
// Box writer
// ---------------------------------------------------------------------------------------

/// Starts a box (§4.2) of type `fourcc`: appends a 4-byte size placeholder and the type.
/// Returns the box's start offset in `out`, to give to [`end`] once the payload is written.
pub fn begin(out: &mut Vec<u8>, fourcc: &[u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(fourcc);
    start
}

/// Starts a full box (§4.2, `FullBox`): like [`begin`], then the 8-bit `version` and the
/// 24-bit `flags` (the top 8 bits of `flags` are ignored). Close it with [`end`].
pub fn begin_full(out: &mut Vec<u8>, fourcc: &[u8; 4], version: u8, flags: u32) -> usize {
    let start = begin(out, fourcc);
    out.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
    start
}

/// Ends the box started at `start` by [`begin`] or [`begin_full`]: writes its size in bytes
/// (header included, everything appended since) into the 32-bit size field.
///
/// # Panics
/// When `start + 8 > out.len()` (not a box start), or the box is 4 GiB or larger. The
/// writers in this module never let that happen; `mdat` uses [`write_mdat_header`].
pub fn end(out: &mut [u8], start: usize) {
    let size = u32::try_from(out.len() - start).expect("MP4 box of 4 GiB or more");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends an `mdat` header (§8.1.1) for `payload_len` bytes of media data: 8 bytes, or 16
/// (size 1 and a 64-bit `largesize`) when the box would reach 4 GiB. Returns the header
/// length in bytes.
pub fn write_mdat_header(payload_len: u64, out: &mut Vec<u8>) -> usize {
    match u32::try_from(payload_len + 8) {
        Ok(size) => {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(b"mdat");
            8
        }
        Err(_) => {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(b"mdat");
            out.extend_from_slice(&(payload_len + 16).to_be_bytes());
            16
        }
    }
}

/// Big-endian field appenders.
trait Put {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
    fn zeros(&mut self, n: usize);
}

impl Put for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
}

/// The unity transformation matrix of `mvhd` and `tkhd` (§8.2.2.3), 16.16 and 2.30 values.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

// ---------------------------------------------------------------------------------------
// Timescales and per-track facts
// ---------------------------------------------------------------------------------------

/// Converts `ms` to ticks of `timescale` per second: `round(ms × timescale / 1000)`, halves
/// rounded up, negative values allowed. Exact (128-bit) for every `i64`/`u32` input.
fn ticks(ms: i128, timescale: u32) -> i128 {
    (ms * i128::from(timescale) * 2 + 1000).div_euclid(2000)
}

/// [`ticks`] for a non-negative time, saturating at `u64::MAX`.
fn ticks_u(ms: u64, timescale: u32) -> u64 {
    u64::try_from(ticks(i128::from(ms), timescale)).unwrap_or(u64::MAX)
}

/// The media timescale (`mdhd`, §8.4.2) this module uses for `track`, ticks per second:
/// [`VIDEO_TIMESCALE`] (90 000) for video; for audio the sample rate in Hz (`Track::rate`,
/// or the AudioSpecificConfig's rate when `rate` is 0). Fails for codecs this module does
/// not write and for audio without a rate.
pub fn timescale(track: &Track) -> Result<u32, Mp4Error> {
    Ok(TrackInfo::new(track)?.timescale)
}

/// What the writers need to know about one track.
#[derive(Debug, Clone, Copy)]
struct TrackInfo {
    id: u32,
    timescale: u32,
    video: bool,
    /// Duration of one sample in ticks when nothing better is known (one frame at `fpks`,
    /// 1024 AAC samples, 1152/576 MP3 samples), 0 when unknown.
    nominal: u32,
}

impl TrackInfo {
    fn new(t: &Track) -> Result<TrackInfo, Mp4Error> {
        let unsupported = || Mp4Error::UnsupportedCodec {
            track: t.id,
            codec: t.codec.as_str().to_string(),
        };
        if t.id == 0 {
            return Err(Mp4Error::BadTrackId(0));
        }
        match (t.kind, &t.codec) {
            (TrackKind::Video, Codec::H264 | Codec::Hevc) => {
                let nominal = if t.fpks > 0 {
                    (u64::from(VIDEO_TIMESCALE) * 1000 / u64::from(t.fpks)) as u32
                } else {
                    0
                };
                Ok(TrackInfo {
                    id: t.id,
                    timescale: VIDEO_TIMESCALE,
                    video: true,
                    nominal,
                })
            }
            (TrackKind::Audio, Codec::Aac | Codec::Mp3) => {
                let mut rate = t.rate;
                if rate == 0 && t.codec == Codec::Aac {
                    rate = aac::parse_asc(&t.init).map_or(0, |a| a.sample_rate);
                }
                if rate == 0 {
                    return Err(Mp4Error::NoSampleRate(t.id));
                }
                let nominal = match t.codec {
                    Codec::Aac => 1024,
                    _ if rate < 32_000 => 576,
                    _ => 1152,
                };
                Ok(TrackInfo {
                    id: t.id,
                    timescale: rate,
                    video: false,
                    nominal,
                })
            }
            _ => Err(unsupported()),
        }
    }
}

/// Infos for every track, checking ids are non-zero and distinct.
fn track_infos(tracks: &[Track]) -> Result<Vec<TrackInfo>, Mp4Error> {
    if tracks.is_empty() {
        return Err(Mp4Error::NoTracks);
    }
    let mut infos: Vec<TrackInfo> = Vec::with_capacity(tracks.len());
    for t in tracks {
        if infos.iter().any(|i| i.id == t.id) {
            return Err(Mp4Error::BadTrackId(t.id));
        }
        infos.push(TrackInfo::new(t)?);
    }
    Ok(infos)
}

// ---------------------------------------------------------------------------------------
// Header boxes shared by init segments and progressive files
// ---------------------------------------------------------------------------------------

/// `ftyp` (§4.3): major brand, minor version, compatible brands.
fn write_ftyp(out: &mut Vec<u8>, major: &[u8; 4], minor: u32, compatible: &[&[u8; 4]]) {
    let s = begin(out, b"ftyp");
    out.extend_from_slice(major);
    out.u32(minor);
    for b in compatible {
        out.extend_from_slice(*b);
    }
    end(out, s);
}

/// `mvhd` (§8.2.2), movie timescale [`MOVIE_TIMESCALE`]; version 1 when `duration_ms` needs
/// 64 bits.
fn write_mvhd(out: &mut Vec<u8>, duration_ms: u64, next_track_id: u32) {
    let v1 = duration_ms > u64::from(u32::MAX);
    let s = begin_full(out, b"mvhd", u8::from(v1), 0);
    if v1 {
        out.zeros(16); // creation_time, modification_time
        out.u32(MOVIE_TIMESCALE);
        out.u64(duration_ms);
    } else {
        out.zeros(8);
        out.u32(MOVIE_TIMESCALE);
        out.u32(duration_ms as u32);
    }
    out.u32(0x0001_0000); // rate 1.0
    out.u16(0x0100); // volume 1.0
    out.zeros(10); // reserved
    for m in MATRIX {
        out.u32(m);
    }
    out.zeros(24); // pre_defined
    out.u32(next_track_id);
    end(out, s);
}

/// `tkhd` (§8.3.2), flags enabled | in_movie; width and height in 16.16 pixels.
fn write_tkhd(out: &mut Vec<u8>, t: &Track, info: &TrackInfo, duration_ms: u64) {
    let v1 = duration_ms > u64::from(u32::MAX);
    let s = begin_full(out, b"tkhd", u8::from(v1), 0x3);
    if v1 {
        out.zeros(16);
        out.u32(t.id);
        out.u32(0);
        out.u64(duration_ms);
    } else {
        out.zeros(8);
        out.u32(t.id);
        out.u32(0);
        out.u32(duration_ms as u32);
    }
    out.zeros(8); // reserved
    out.u16(0); // layer
    out.u16(0); // alternate_group
    out.u16(if info.video { 0 } else { 0x0100 }); // volume
    out.u16(0);
    for m in MATRIX {
        out.u32(m);
    }
    let (w, h) = if info.video { dimensions(t) } else { (0, 0) };
    out.u32(u32::from(w) << 16);
    out.u32(u32::from(h) << 16);
    end(out, s);
}

/// Width and height in pixels, from the track or else the avcC's first SPS, clamped to 16
/// bits.
fn dimensions(t: &Track) -> (u16, u16) {
    let (mut w, mut h) = (t.width, t.height);
    if (w == 0 || h == 0) && t.codec == Codec::H264 {
        if let Some(info) = h264::parse_avcc(&t.init)
            .ok()
            .and_then(|c| c.sps.first().and_then(|s| h264::parse_sps(s).ok()))
        {
            w = info.width;
            h = info.height;
        }
    }
    (w.min(0xffff) as u16, h.min(0xffff) as u16)
}

/// `mdhd` (§8.4.2) with the track's timescale, `duration` in ticks and ISO 639-2 language
/// (`und` when absent or not three lowercase letters).
fn write_mdhd(out: &mut Vec<u8>, t: &Track, info: &TrackInfo, duration: u64) {
    let v1 = duration > u64::from(u32::MAX);
    let s = begin_full(out, b"mdhd", u8::from(v1), 0);
    if v1 {
        out.zeros(16);
        out.u32(info.timescale);
        out.u64(duration);
    } else {
        out.zeros(8);
        out.u32(info.timescale);
        out.u32(duration as u32);
    }
    let lang = t
        .lang
        .as_deref()
        .filter(|l| l.len() == 3 && l.bytes().all(|b| b.is_ascii_lowercase()))
        .unwrap_or("und")
        .as_bytes();
    let packed = lang
        .iter()
        .fold(0u16, |acc, &c| (acc << 5) | u16::from(c - 0x60));
    out.u16(packed);
    out.u16(0);
    end(out, s);
}

/// `hdlr` (§8.4.3): `vide` or `soun` with a name.
fn write_hdlr(out: &mut Vec<u8>, video: bool) {
    let s = begin_full(out, b"hdlr", 0, 0);
    out.u32(0);
    out.extend_from_slice(if video { b"vide" } else { b"soun" });
    out.zeros(12);
    out.extend_from_slice(if video {
        b"VideoHandler\0"
    } else {
        b"SoundHandler\0"
    });
    end(out, s);
}

/// `vmhd` (§12.1.2, flags 1) or `smhd` (§12.2.2), then `dinf` with one self-contained
/// `url ` entry (§8.7.1, §8.7.2).
fn write_media_header_and_dinf(out: &mut Vec<u8>, video: bool) {
    if video {
        let s = begin_full(out, b"vmhd", 0, 1);
        out.zeros(8); // graphicsmode, opcolor
        end(out, s);
    } else {
        let s = begin_full(out, b"smhd", 0, 0);
        out.zeros(4); // balance, reserved
        end(out, s);
    }
    let dinf = begin(out, b"dinf");
    let dref = begin_full(out, b"dref", 0, 0);
    out.u32(1);
    let url = begin_full(out, b"url ", 0, 1);
    end(out, url);
    end(out, dref);
    end(out, dinf);
}

/// `stsd` (§8.5.2) with the one sample entry for the track's codec.
fn write_stsd(out: &mut Vec<u8>, t: &Track, info: &TrackInfo) -> Result<(), Mp4Error> {
    let s = begin_full(out, b"stsd", 0, 0);
    out.u32(1);
    match t.codec {
        Codec::H264 => {
            h264::parse_avcc(&t.init).map_err(|e| Mp4Error::BadInit {
                track: t.id,
                reason: e.to_string(),
            })?;
            write_visual_entry(out, t, b"avc1", b"avcC");
        }
        Codec::Hevc => {
            // HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1.2): 23 fixed bytes,
            // configurationVersion 1.
            if t.init.len() < 23 || t.init[0] != 1 {
                return Err(Mp4Error::BadInit {
                    track: t.id,
                    reason: "hvcC shorter than 23 bytes or configurationVersion not 1".into(),
                });
            }
            write_visual_entry(out, t, b"hvc1", b"hvcC");
        }
        _ => write_mp4a_entry(out, t, info)?,
    }
    end(out, s);
    Ok(())
}

/// A VisualSampleEntry (§12.1.3) of type `entry` holding the track's init data verbatim as
/// a `config` box (avcC / hvcC).
fn write_visual_entry(out: &mut Vec<u8>, t: &Track, entry: &[u8; 4], config: &[u8; 4]) {
    let s = begin(out, entry);
    out.zeros(6); // reserved
    out.u16(1); // data_reference_index
    out.zeros(16); // pre_defined, reserved, pre_defined[3]
    let (w, h) = dimensions(t);
    out.u16(w);
    out.u16(h);
    out.u32(0x0048_0000); // horizresolution 72 dpi
    out.u32(0x0048_0000); // vertresolution
    out.u32(0); // reserved
    out.u16(1); // frame_count
    out.zeros(32); // compressorname: empty Pascal string
    out.u16(0x0018); // depth
    out.u16(0xffff); // pre_defined = -1
    let c = begin(out, config);
    out.extend_from_slice(&t.init);
    end(out, c);
    end(out, s);
}

/// Appends an MPEG-4 descriptor (ISO/IEC 14496-1 §8.3.3): tag, `sizeOfInstance` in the
/// minimal number of 7-bit groups, body.
fn put_descriptor(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.u8(tag);
    let len = body.len() as u32;
    let groups = (1..=4).find(|&n| n == 4 || len < 1 << (7 * n)).unwrap_or(4);
    for i in (0..groups).rev() {
        let cont = if i > 0 { 0x80 } else { 0 };
        out.u8(cont | ((len >> (7 * i)) & 0x7f) as u8);
    }
    out.extend_from_slice(body);
}

/// An `mp4a` AudioSampleEntry (§12.2.3, ISO/IEC 14496-14 §5.6.1) with its `esds`.
fn write_mp4a_entry(out: &mut Vec<u8>, t: &Track, info: &TrackInfo) -> Result<(), Mp4Error> {
    let (oti, dsi): (u8, &[u8]) = match t.codec {
        Codec::Aac => {
            aac::parse_asc(&t.init).map_err(|e| Mp4Error::BadInit {
                track: t.id,
                reason: e.to_string(),
            })?;
            (0x40, &t.init)
        }
        _ if info.timescale < 32_000 => (0x69, &[]),
        _ => (0x6B, &[]),
    };
    let mut channels = t.channels;
    if channels == 0 && t.codec == Codec::Aac {
        channels = aac::parse_asc(&t.init).map_or(0, |a| u32::from(a.channels));
    }
    if channels == 0 {
        channels = 2;
    }
    let s = begin(out, b"mp4a");
    out.zeros(6);
    out.u16(1); // data_reference_index
    out.zeros(8); // reserved
    out.u16(channels.min(0xffff) as u16);
    out.u16(16); // samplesize
    out.zeros(4); // pre_defined, reserved
                  // samplerate is 16.16; rates above 65535 Hz do not fit and are written as 0 (the
                  // decoder takes the rate from the DecoderSpecificInfo and the timescale).
    out.u32(if info.timescale <= 0xffff {
        info.timescale << 16
    } else {
        0
    });
    let e = begin_full(out, b"esds", 0, 0);
    // DecoderConfigDescriptor (ISO/IEC 14496-1 §7.2.6.6).
    let mut dcd = Vec::with_capacity(32 + dsi.len());
    dcd.u8(oti);
    dcd.u8((0x05 << 2) | 1); // streamType audio, upStream 0, reserved 1
    dcd.extend_from_slice(&[0, 0, 0]); // bufferSizeDB
    dcd.u32(t.maxbps.max(t.bps).saturating_mul(8)); // maxBitrate, bit/s
    dcd.u32(t.bps.saturating_mul(8)); // avgBitrate, bit/s
    if !dsi.is_empty() {
        put_descriptor(&mut dcd, 0x05, dsi); // DecoderSpecificInfo
    }
    // ES_Descriptor (§7.2.6.5): ES_ID 0 (ISO/IEC 14496-14 §3.1.2), no flags.
    let mut es = Vec::with_capacity(48 + dsi.len());
    es.u16(0);
    es.u8(0);
    put_descriptor(&mut es, 0x04, &dcd);
    put_descriptor(&mut es, 0x06, &[0x02]); // SLConfigDescriptor, predefined = 2 (MP4)
    put_descriptor(out, 0x03, &es);
    end(out, e);
    end(out, s);
    Ok(())
}

/// One `trak` (§8.3.1). `tables` appends the sample tables after `stsd` (empty ones for
/// fragmented files); `edit` is `Some((empty_ms, media_ms, media_time))` for an
/// `edts`/`elst` (§8.6.6): an empty edit of `empty_ms` (when non-zero) starting the track that
/// long after the movie start, then `media_ms` of the media from `media_time` (media
/// timescale ticks; the composition time of the first presented sample, so that B-frame
/// reordering does not push the start and the last frames past the track's end).
fn write_trak(
    out: &mut Vec<u8>,
    t: &Track,
    info: &TrackInfo,
    media_duration: u64,
    edit: Option<(u64, u64, u64)>,
    tables: impl FnOnce(&mut Vec<u8>),
) -> Result<(), Mp4Error> {
    let media_ms = (u128::from(media_duration) * 1000 / u128::from(info.timescale)) as u64;
    let trak = begin(out, b"trak");
    let track_ms = edit.map_or(media_ms, |(empty, media, _)| empty + media);
    write_tkhd(out, t, info, track_ms);
    if let Some((empty, media, start)) = edit {
        let edts = begin(out, b"edts");
        let v1 = empty.max(media).max(start) > i32::MAX as u64;
        let elst = begin_full(out, b"elst", u8::from(v1), 0);
        let mut entries = vec![(media, start as i64)];
        if empty > 0 {
            entries.insert(0, (empty, -1i64));
        }
        out.u32(entries.len() as u32);
        for (dur, media_time) in entries {
            if v1 {
                out.u64(dur);
                out.u64(media_time as u64);
            } else {
                out.u32(dur as u32);
                out.u32(media_time as i32 as u32);
            }
            out.u32(0x0001_0000); // media_rate 1.0
        }
        end(out, elst);
        end(out, edts);
    }
    let mdia = begin(out, b"mdia");
    write_mdhd(out, t, info, media_duration);
    write_hdlr(out, info.video);
    let minf = begin(out, b"minf");
    write_media_header_and_dinf(out, info.video);
    let stbl = begin(out, b"stbl");
    write_stsd(out, t, info)?;
    tables(out);
    end(out, stbl);
    end(out, minf);
    end(out, mdia);
    end(out, trak);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Init segments
// ---------------------------------------------------------------------------------------

/// Appends an initialization segment for `tracks` (ISO/IEC 14496-12 §8.8; the CMAF header,
/// ISO/IEC 23000-19 §7.3.1): `ftyp` (major brand `iso6`, compatible `iso6`, `cmfc` when
/// there is exactly one track as CMAF requires, `isom`, `dash`, `mp41`, and `avc1` with
/// H.264) and `moov` holding `mvhd` (timescale 1000, duration 0), one `trak` per track in
/// the given order (track_ID = [`Track::id`], media timescale from [`timescale`], empty
/// `stts`/`stsc`/`stsz`/`stco`) and `mvex` with one `trex` per track (default sample
/// description 1, other defaults 0: fragments carry their own).
///
/// Fails on an empty slice, a zero or repeated id, an unsupported codec or bad init data;
/// `out` is then unchanged.
pub fn write_init(tracks: &[Track], out: &mut Vec<u8>) -> Result<(), Mp4Error> {
    let infos = track_infos(tracks)?;
    let start = out.len();
    let r = write_init_inner(tracks, &infos, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// [`write_init`] for one track: the single-track CMAF header DASH representations, Smooth
/// Streaming quality levels and HLS renditions use (brand `cmfc` included).
pub fn write_init_single(track: &Track, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
    write_init(std::slice::from_ref(track), out)
}

fn write_init_inner(
    tracks: &[Track],
    infos: &[TrackInfo],
    out: &mut Vec<u8>,
) -> Result<(), Mp4Error> {
    let mut brands: Vec<&[u8; 4]> = vec![b"iso6"];
    if tracks.len() == 1 {
        brands.push(b"cmfc");
    }
    brands.extend([b"isom", b"dash", b"mp41"]);
    if tracks.iter().any(|t| t.codec == Codec::H264) {
        brands.push(b"avc1");
    }
    write_ftyp(out, b"iso6", 0, &brands);
    let moov = begin(out, b"moov");
    let next_id = tracks
        .iter()
        .map(|t| t.id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    write_mvhd(out, 0, next_id);
    for (t, info) in tracks.iter().zip(infos) {
        write_trak(out, t, info, 0, None, |out| {
            for fourcc in [b"stts", b"stsc", b"stco"] {
                let s = begin_full(out, fourcc, 0, 0);
                out.u32(0); // entry_count
                end(out, s);
            }
            let s = begin_full(out, b"stsz", 0, 0);
            out.zeros(8); // sample_size, sample_count
            end(out, s);
        })?;
    }
    let mvex = begin(out, b"mvex");
    for t in tracks {
        let s = begin_full(out, b"trex", 0, 0);
        out.u32(t.id);
        out.u32(1); // default_sample_description_index
        out.zeros(12); // default duration, size, flags
        end(out, s);
    }
    end(out, mvex);
    end(out, moov);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Movie fragments
// ---------------------------------------------------------------------------------------

/// What a fragment keeps of one sample (its payload is kept alongside).
#[derive(Debug, Clone, Copy)]
struct FragSample {
    dts: u64,
    offset: i64,
    sync: bool,
}

/// One track's part of a fragment.
#[derive(Debug, Clone)]
struct Traf<'a> {
    info: TrackInfo,
    end_dts: Option<u64>,
    samples: Vec<FragSample>,
    payloads: Vec<&'a [u8]>,
    /// Duration of the last sample of the previous fragment, ticks: the fallback for the
    /// last sample of this one.
    last_duration: u32,
}

impl Traf<'_> {
    /// Duration in ticks of sample `i`: to the next sample's DTS, or for the last one to
    /// `end_dts`, else the previous sample's duration, else the nominal duration.
    fn duration(&self, i: usize) -> u32 {
        let ts = self.info.timescale;
        let t = |ms: u64| ticks_u(ms, ts);
        let here = t(self.samples[i].dts);
        let clamp = |d: u64| d.min(u64::from(u32::MAX)) as u32;
        if let Some(next) = self.samples.get(i + 1) {
            return clamp(t(next.dts) - here);
        }
        if let Some(end) = self.end_dts.filter(|&e| e >= self.samples[i].dts) {
            return clamp(t(end) - here);
        }
        if i > 0 {
            return clamp(here - t(self.samples[i - 1].dts));
        }
        if self.last_duration > 0 {
            self.last_duration
        } else {
            self.info.nominal
        }
    }

    /// Composition offset of sample `i` in ticks: ticks(PTS) − ticks(DTS), saturated to i32.
    fn cts(&self, i: usize) -> i32 {
        let s = self.samples[i];
        let ts = self.info.timescale;
        let d = ticks(i128::from(s.dts) + i128::from(s.offset), ts) - ticks(i128::from(s.dts), ts);
        d.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }

    fn payload_len(&self) -> u64 {
        self.payloads.iter().map(|p| p.len() as u64).sum()
    }

    fn any_cts(&self) -> bool {
        self.samples.iter().any(|s| s.offset != 0)
    }

    /// `trun` flags: data offset, durations and sizes always; flags for video; composition
    /// offsets when any is non-zero.
    fn trun_flags(&self) -> u32 {
        TRUN_DATA_OFFSET
            | TRUN_DURATION
            | TRUN_SIZE
            | if self.info.video { TRUN_FLAGS } else { 0 }
            | if self.any_cts() { TRUN_CTS } else { 0 }
    }
}

/// Builds movie fragments (ISO/IEC 14496-12 §8.8.4; CMAF fragments, ISO/IEC 23000-19
/// §7.3.2) for a fixed set of tracks, sans-IO and without copying payloads until asked.
///
/// [`add`](Self::add) packets in decode order per track (tracks may interleave); then
/// either [`finish`](Self::finish) (appends `moof` + `mdat`, copying payloads, and clears)
/// or, for a vectored write, [`write_header`](Self::write_header) (appends `moof` and the
/// `mdat` header only), send [`payloads`](Self::payloads) after it, and
/// [`clear`](Self::clear).
///
/// Layout written: `moof` = `mfhd` (sequence number) + one `traf` per track with samples,
/// in the order of the tracks given to [`new`](Self::new): `tfhd` (`default-base-is-moof`;
/// audio adds `default_sample_flags` = sync), `tfdt` version 1 (baseMediaDecodeTime =
/// round(first DTS ms × timescale / 1000)), `trun` version 1 with a data offset (from the
/// first byte of `moof`) and per-sample duration and size, per-sample flags for video
/// (sync / non-sync from [`PacketRef::keyframe`]; audio samples are all sync), and signed
/// composition offsets when any is non-zero. `mdat` then holds each track's payloads in
/// turn, in the same order.
///
/// Sample durations are differences of converted DTS values; the last sample of a track
/// lasts until [`set_end_dts`](Self::set_end_dts) when given (the next fragment's first
/// DTS of that track), else as long as the sample before it, else as long as the last
/// sample of the previous fragment, else one nominal frame.
#[derive(Debug, Clone)]
pub struct FragmentBuilder<'a> {
    trafs: Vec<Traf<'a>>,
}

/// Which boxes a `traf` carries besides `tfhd` and `trun`.
#[derive(Debug, Clone, Copy)]
enum Layout<'x> {
    /// `tfdt` (CMAF, ISO/IEC 23000-19 §7.3.2.2).
    Cmaf,
    /// `tfxd` and, live, `tfrf` (MS-SSTR §2.2.4).
    Smooth { lookahead: Option<&'x [(u64, u64)]> },
}

impl<'a> FragmentBuilder<'a> {
    /// A builder for `tracks` (the tracks of the matching init segment). Fails like
    /// [`write_init`] on bad tracks.
    pub fn new(tracks: &[Track]) -> Result<FragmentBuilder<'a>, Mp4Error> {
        let trafs = track_infos(tracks)?
            .into_iter()
            .map(|info| Traf {
                info,
                end_dts: None,
                samples: Vec::new(),
                payloads: Vec::new(),
                last_duration: 0,
            })
            .collect();
        Ok(FragmentBuilder { trafs })
    }

    /// The same builder for payloads of another lifetime, keeping every allocation (use it
    /// when the packets of the next fragment borrow from a different buffer). Samples not
    /// yet written are dropped; the last-duration fallback is kept.
    pub fn recycle<'b>(self) -> FragmentBuilder<'b> {
        let trafs = self
            .trafs
            .into_iter()
            .map(|t| Traf {
                info: t.info,
                end_dts: None,
                samples: {
                    let mut s = t.samples;
                    s.clear();
                    s
                },
                payloads: {
                    let mut p = t.payloads;
                    p.clear();
                    // Same layout: the standard library collects this in place.
                    p.into_iter().map(|_| -> &'b [u8] { &[] }).collect()
                },
                last_duration: t.last_duration,
            })
            .collect();
        FragmentBuilder { trafs }
    }

    fn traf_mut(&mut self, id: u32) -> Result<&mut Traf<'a>, Mp4Error> {
        self.trafs
            .iter_mut()
            .find(|t| t.info.id == id)
            .ok_or(Mp4Error::UnknownTrack(id))
    }

    /// Adds one sample: the packet's payload (borrowed until the fragment is written), DTS
    /// and composition offset (ms), and keyframe flag (video only). Fails for an unknown
    /// track, a DTS before the previous one of the same track in this fragment, or a payload
    /// of 4 GiB or more.
    pub fn add(&mut self, pkt: &PacketRef<'a>) -> Result<(), Mp4Error> {
        if u32::try_from(pkt.data.len()).is_err() {
            return Err(Mp4Error::SampleTooLarge(pkt.data.len()));
        }
        let traf = self.traf_mut(pkt.track)?;
        if let Some(prev) = traf.samples.last() {
            if pkt.dts < prev.dts {
                return Err(Mp4Error::DtsBackwards {
                    track: pkt.track,
                    prev: prev.dts,
                    dts: pkt.dts,
                });
            }
        }
        traf.samples.push(FragSample {
            dts: pkt.dts,
            offset: pkt.offset,
            sync: !traf.info.video || pkt.keyframe,
        });
        traf.payloads.push(pkt.data);
        Ok(())
    }

    /// Sets where the last sample of `track_id` in this fragment ends: `end_dts_ms`, the DTS
    /// (ms) of that track's first sample in the next fragment. Ignored when before the last
    /// sample's DTS. Cleared by [`clear`](Self::clear).
    pub fn set_end_dts(&mut self, track_id: u32, end_dts_ms: u64) -> Result<(), Mp4Error> {
        self.traf_mut(track_id)?.end_dts = Some(end_dts_ms);
        Ok(())
    }

    /// Number of samples added since the last clear, all tracks.
    pub fn sample_count(&self) -> usize {
        self.trafs.iter().map(|t| t.samples.len()).sum()
    }

    /// True when no sample was added since the last clear.
    pub fn is_empty(&self) -> bool {
        self.sample_count() == 0
    }

    /// Total payload bytes: the `mdat` payload size.
    pub fn payload_len(&self) -> u64 {
        self.trafs.iter().map(Traf::payload_len).sum()
    }

    /// The payloads in `mdat` order, to send right after [`write_header`](Self::write_header)'s
    /// bytes.
    pub fn payloads(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.trafs.iter().flat_map(|t| t.payloads.iter().copied())
    }

    /// Forgets the samples and end DTS values (keeping allocations), remembering each
    /// track's last sample duration for the next fragment.
    pub fn clear(&mut self) {
        for i in 0..self.trafs.len() {
            let n = self.trafs[i].samples.len();
            if n > 0 {
                self.trafs[i].last_duration = self.trafs[i].duration(n - 1);
            }
            let t = &mut self.trafs[i];
            t.samples.clear();
            t.payloads.clear();
            t.end_dts = None;
        }
    }

    /// Appends the `moof` for the samples added, with `mfhd` sequence number
    /// `sequence_number` (§8.8.5: starts at 1 and increases by fragment), and the `mdat`
    /// header for [`payload_len`](Self::payload_len) bytes. The caller then sends the
    /// [`payloads`](Self::payloads). Writes nothing and returns `Ok` when empty; fails
    /// (writing nothing) when the fragment exceeds 2 GiB.
    pub fn write_header(&self, sequence_number: u32, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
        self.write_moof(sequence_number, Layout::Cmaf, out)
    }

    /// A builder like [`new`](Self::new) whose samples are timed in `timescale` ticks per
    /// second on every track, instead of each track's [`timescale`]: Smooth Streaming
    /// fragments use the manifest's 10 000 000 (MS-SSTR §2.2.2, `TimeScale`), since the
    /// client builds the track headers from the manifest and there is no init segment.
    pub fn with_timescale(
        tracks: &[Track],
        timescale: u32,
    ) -> Result<FragmentBuilder<'a>, Mp4Error> {
        let mut b = FragmentBuilder::new(tracks)?;
        for t in &mut b.trafs {
            t.info.nominal = (u64::from(t.info.nominal) * u64::from(timescale)
                / u64::from(t.info.timescale)) as u32;
            t.info.timescale = timescale;
        }
        Ok(b)
    }

    /// Appends a Smooth Streaming fragment (MS-SSTR §2.2.4, `moof` + `mdat`, payloads
    /// copied) and clears the builder. Layout as [`write_header`](Self::write_header) but
    /// PIFF-style: `tfhd` without `default-base-is-moof` (the data offset still counts from
    /// the `moof`, the base of a fragment's first `traf`), no `tfdt`; each `traf` ends with
    /// a `tfxd` box (the fragment's absolute start time and duration in the builder's
    /// timescale) and, for a live stream (`lookahead` is `Some`), a `tfrf` box announcing
    /// the given following fragments as (start, duration). Use
    /// [`with_timescale`](Self::with_timescale) with `10_000_000`.
    pub fn finish_smooth(
        &mut self,
        sequence_number: u32,
        lookahead: Option<&[(u64, u64)]>,
        out: &mut Vec<u8>,
    ) -> Result<(), Mp4Error> {
        self.write_moof(sequence_number, Layout::Smooth { lookahead }, out)?;
        out.reserve(self.payload_len() as usize);
        for p in self.payloads() {
            out.extend_from_slice(p);
        }
        self.clear();
        Ok(())
    }

    fn write_moof(
        &self,
        sequence_number: u32,
        layout: Layout,
        out: &mut Vec<u8>,
    ) -> Result<(), Mp4Error> {
        if self.is_empty() {
            return Ok(());
        }
        let total = self.payload_len();
        let moof_len = self.moof_len(layout);
        // data_offset is a signed 32-bit value measured from the start of moof.
        let mut offset = moof_len
            + if total + 8 > u64::from(u32::MAX) {
                16
            } else {
                8
            };
        if offset + total > i32::MAX as u64 {
            return Err(Mp4Error::TooLarge("fragment"));
        }
        let moof = begin(out, b"moof");
        let s = begin_full(out, b"mfhd", 0, 0);
        out.u32(sequence_number);
        end(out, s);
        let smooth = matches!(layout, Layout::Smooth { .. });
        for t in self.trafs.iter().filter(|t| !t.samples.is_empty()) {
            let traf = begin(out, b"traf");
            let base = if smooth { 0 } else { TFHD_BASE_IS_MOOF };
            let flags = base | if t.info.video { 0 } else { TFHD_DEFAULT_FLAGS };
            let s = begin_full(out, b"tfhd", 0, flags);
            out.u32(t.info.id);
            if !t.info.video {
                out.u32(SAMPLE_FLAGS_SYNC);
            }
            end(out, s);
            if !smooth {
                let s = begin_full(out, b"tfdt", 1, 0);
                out.u64(ticks_u(t.samples[0].dts, t.info.timescale));
                end(out, s);
            }
            let s = begin_full(out, b"trun", 1, t.trun_flags());
            out.u32(t.samples.len() as u32);
            out.u32(offset as u32);
            offset += t.payload_len();
            let any_cts = t.any_cts();
            for (i, (sample, payload)) in t.samples.iter().zip(&t.payloads).enumerate() {
                out.u32(t.duration(i));
                out.u32(payload.len() as u32);
                if t.info.video {
                    out.u32(if sample.sync {
                        SAMPLE_FLAGS_SYNC
                    } else {
                        SAMPLE_FLAGS_NON_SYNC
                    });
                }
                if any_cts {
                    out.u32(t.cts(i) as u32);
                }
            }
            end(out, s);
            if let Layout::Smooth { lookahead } = layout {
                let start = ticks_u(t.samples[0].dts, t.info.timescale);
                let duration: u64 = (0..t.samples.len()).map(|i| u64::from(t.duration(i))).sum();
                crate::smooth::write_tfxd(start, duration, out);
                if let Some(next) = lookahead {
                    crate::smooth::write_tfrf(next, out);
                }
            }
            end(out, traf);
        }
        end(out, moof);
        debug_assert_eq!((out.len() - moof) as u64, moof_len);
        write_mdat_header(total, out);
        Ok(())
    }

    /// Size in bytes of the `moof` [`write_header`](Self::write_header) writes.
    fn moof_len(&self, layout: Layout) -> u64 {
        // tfdt (CMAF) or tfxd and perhaps tfrf (Smooth).
        let extra = match layout {
            Layout::Cmaf => 20,
            Layout::Smooth { lookahead: None } => 44,
            Layout::Smooth {
                lookahead: Some(next),
            } => 44 + 29 + 16 * next.len().min(255) as u64,
        };
        let trafs: u64 = self
            .trafs
            .iter()
            .filter(|t| !t.samples.is_empty())
            .map(|t| {
                let tfhd = if t.info.video { 16 } else { 20 };
                let per_sample = 4 * u64::from((t.trun_flags() & 0xf00).count_ones());
                let trun = 20 + per_sample * t.samples.len() as u64;
                8 + tfhd + extra + trun
            })
            .sum();
        8 + 16 + trafs
    }

    /// Appends the whole fragment, `moof` then `mdat` with the payloads copied (see
    /// [`write_header`](Self::write_header)), then [`clear`](Self::clear)s the builder.
    pub fn finish(&mut self, sequence_number: u32, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
        self.write_header(sequence_number, out)?;
        out.reserve(self.payload_len() as usize);
        for p in self.payloads() {
            out.extend_from_slice(p);
        }
        self.clear();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Progressive files
// ---------------------------------------------------------------------------------------

/// A track's samples in a progressive file.
#[derive(Debug, Default)]
struct ProgTrack {
    /// DTS ms, composition offset ms, sync, size bytes.
    samples: Vec<(u64, i64, bool, u32)>,
    /// Chunks: offset in the `mdat` payload, number of samples.
    chunks: Vec<(u64, u32)>,
}

/// Appends a complete progressive MP4 file (ISO/IEC 14496-12) for VOD: `ftyp` (major
/// `isom`, compatible `isom iso2 mp41`, `avc1` with H.264, `iso4` when a `ctts` is version
/// 1), `moov` with full sample tables, then one `mdat` with the payloads in the order of
/// `packets` (which interleave tracks as they like; each track's packets must be in decode
/// order).
///
/// Tables (§8.6, §8.7): `stts` (run-length durations, the last sample lasting as long as
/// the one before it), `ctts` when any composition offset is non-zero (version 0 when all
/// are ≥ 0, for older readers; version 1, signed, otherwise), `stss` for video unless every
/// sample is sync, `stsc` + `stco` (or `co64` past 4 GiB) with one chunk per run of
/// consecutive packets of the track, `stsz`. Movie time 0 is the earliest first
/// presentation time (DTS + composition offset) of all tracks; a track presented later gets
/// an `elst` with an empty edit of that delay, so tracks stay in sync, and a track whose first presented sample comes after its first
/// decoded one (B-frames, all composition offsets positive) an edit starting at that
/// composition time, as encoders write it (without it, readers that honour the track
/// duration drop the last reordered frames). Durations: `mvhd`/`tkhd` in ms, `mdhd` in the track's timescale.
///
/// Fails (appending nothing) on bad tracks, packets of unknown tracks, DTS going back
/// within a track, or more than [`MAX_PROGRESSIVE_SAMPLES`] packets.
pub fn write_progressive(
    tracks: &[Track],
    packets: &[PacketRef<'_>],
    out: &mut Vec<u8>,
) -> Result<(), Mp4Error> {
    if packets.len() > MAX_PROGRESSIVE_SAMPLES {
        return Err(Mp4Error::TooLarge("progressive file"));
    }
    let mut index = ProgressiveIndex::new(tracks)?;
    for p in packets {
        index.add(p.track, p.dts, p.offset, p.keyframe, p.data.len())?;
    }
    index.write_head(out)?;
    out.reserve(index.payload_len() as usize);
    for p in packets {
        out.extend_from_slice(p.data);
    }
    Ok(())
}

/// The sample tables of a progressive MP4 being gathered one sample at a time, for a writer
/// that streams the payloads elsewhere (a spool file) and writes `ftyp` + `moov` + the `mdat`
/// header ([`ProgressiveIndex::write_head`]) once every sample is known, then the payloads in
/// the order they were added. Memory: about 24 bytes per sample, none per payload byte.
/// [`write_progressive`] is this with the payloads in memory; the file layout and tables are
/// the same (see there).
#[derive(Debug)]
pub struct ProgressiveIndex {
    tracks: Vec<Track>,
    infos: Vec<TrackInfo>,
    progs: Vec<ProgTrack>,
    payload_total: u64,
    prev_track: usize,
    samples: usize,
}

impl ProgressiveIndex {
    /// An empty index for `tracks`. Fails on a track MP4 cannot carry (codec, timescale).
    pub fn new(tracks: &[Track]) -> Result<ProgressiveIndex, Mp4Error> {
        Ok(ProgressiveIndex {
            tracks: tracks.to_vec(),
            infos: track_infos(tracks)?,
            progs: tracks.iter().map(|_| ProgTrack::default()).collect(),
            payload_total: 0,
            prev_track: usize::MAX,
            samples: 0,
        })
    }

    /// Adds the next sample: its track id, DTS and composition offset in ms, sync flag and
    /// payload size in bytes; its payload must be the next in the `mdat`. Fails (adding
    /// nothing) on an unknown track, DTS going back within its track, a sample over 4 GiB,
    /// or more than [`MAX_PROGRESSIVE_SAMPLES`] samples.
    pub fn add(
        &mut self,
        track: u32,
        dts: u64,
        offset: i64,
        keyframe: bool,
        size: usize,
    ) -> Result<(), Mp4Error> {
        if self.samples >= MAX_PROGRESSIVE_SAMPLES {
            return Err(Mp4Error::TooLarge("progressive file"));
        }
        let ti = self
            .infos
            .iter()
            .position(|i| i.id == track)
            .ok_or(Mp4Error::UnknownTrack(track))?;
        let size = u32::try_from(size).map_err(|_| Mp4Error::SampleTooLarge(size))?;
        let pt = &mut self.progs[ti];
        if let Some(&(prev, ..)) = pt.samples.last() {
            if dts < prev {
                return Err(Mp4Error::DtsBackwards { track, prev, dts });
            }
        }
        pt.samples
            .push((dts, offset, !self.infos[ti].video || keyframe, size));
        match pt.chunks.last_mut() {
            Some(c) if self.prev_track == ti => c.1 += 1,
            _ => pt.chunks.push((self.payload_total, 1)),
        }
        self.prev_track = ti;
        self.payload_total += u64::from(size);
        self.samples += 1;
        Ok(())
    }

    /// Samples added so far.
    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// Bytes of payload added so far (the `mdat` payload's length).
    pub fn payload_len(&self) -> u64 {
        self.payload_total
    }

    /// Appends `ftyp`, `moov` (with `co64` chunk offsets only when 32 bits cannot reach the
    /// end of the file) and the `mdat` header; the payloads follow in the order they were
    /// added. On error `out` is unchanged.
    pub fn write_head(&self, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
        self.write_head_aligned(1, out)
    }

    /// [`write_head`](Self::write_head) with a `free` box (§8.1.2) between `moov` and the
    /// `mdat` header so that the head is a multiple of `align` bytes (`align` ≥ 1): a writer
    /// that wrote the payloads first can then insert the head in front of them with
    /// `fallocate(FALLOC_FL_INSERT_RANGE)`, which takes whole file-system blocks.
    pub fn write_head_aligned(&self, align: u64, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
        let start = out.len();
        let (t, i, p, n) = (&self.tracks, &self.infos, &self.progs, self.payload_total);
        let a = align.max(1);
        let mut r = write_progressive_head(t, i, p, n, false, a, out);
        if let Ok(true) = r {
            // stco cannot address the end of the file: redo with co64.
            out.truncate(start);
            r = write_progressive_head(t, i, p, n, true, a, out);
        }
        if let Err(e) = r {
            out.truncate(start);
            return Err(e);
        }
        Ok(())
    }
}

/// Sample durations in ticks: differences of converted DTS values; the last sample lasts as
/// long as the one before it (or one nominal frame when alone).
fn prog_durations(p: &ProgTrack, info: &TrackInfo) -> Vec<u32> {
    let t = |ms: u64| ticks_u(ms, info.timescale);
    let clamp = |d: u64| d.min(u64::from(u32::MAX)) as u32;
    let mut d: Vec<u32> = p
        .samples
        .windows(2)
        .map(|w| clamp(t(w[1].0) - t(w[0].0)))
        .collect();
    if !p.samples.is_empty() {
        d.push(d.last().copied().unwrap_or(info.nominal));
    }
    d
}

/// Writes `ftyp`, `moov` and the `mdat` header of a progressive file. Returns `Ok(true)`
/// when 32-bit chunk offsets were asked for but do not suffice.
fn write_progressive_head(
    tracks: &[Track],
    infos: &[TrackInfo],
    progs: &[ProgTrack],
    payload_total: u64,
    co64: bool,
    align: u64,
    out: &mut Vec<u8>,
) -> Result<bool, Mp4Error> {
    let file_start = out.len();
    let all_durations: Vec<Vec<u32>> = progs
        .iter()
        .zip(infos)
        .map(|(p, i)| prog_durations(p, i))
        .collect();
    // Each track's first presentation time, ms: its earliest DTS + composition offset, never
    // before its first DTS (the edit below starts there). Tracks are placed by it, so that
    // B-frame reordering does not move the picture against the sound.
    let first_pts: Vec<Option<u64>> = progs
        .iter()
        .map(|p| {
            let first = p.samples.first()?.0;
            let min = p.samples.iter().map(|s| s.0 as i64 + s.1).min()?;
            Some(first.max(min.max(0) as u64))
        })
        .collect();
    let movie_start = first_pts.iter().flatten().copied().min().unwrap_or(0);
    let media_durations: Vec<u64> = all_durations
        .iter()
        .map(|d| d.iter().map(|&x| u64::from(x)).sum())
        .collect();
    let track_ms = |i: usize| -> (u64, u64) {
        let media_ms =
            (u128::from(media_durations[i]) * 1000 / u128::from(infos[i].timescale)) as u64;
        let delay = first_pts[i].map_or(0, |s| s - movie_start);
        (delay, media_ms)
    };
    let movie_ms = (0..tracks.len())
        .map(|i| {
            let (d, m) = track_ms(i);
            d + m
        })
        .max()
        .unwrap_or(0);
    let any_v1_ctts = progs.iter().any(|p| p.samples.iter().any(|s| s.1 < 0));
    let mut brands: Vec<&[u8; 4]> = vec![b"isom", b"iso2"];
    if any_v1_ctts {
        brands.push(b"iso4");
    }
    if tracks.iter().any(|t| t.codec == Codec::H264) {
        brands.push(b"avc1");
    }
    brands.push(b"mp41");
    write_ftyp(out, b"isom", 0x200, &brands);
    let moov = begin(out, b"moov");
    let next_id = tracks
        .iter()
        .map(|t| t.id)
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    write_mvhd(out, movie_ms, next_id);
    // (position of the first chunk offset entry, track index) to patch after moov.
    let mut offset_tables: Vec<(usize, usize)> = Vec::with_capacity(tracks.len());
    for (i, (t, info)) in tracks.iter().zip(infos).enumerate() {
        let p = &progs[i];
        let (delay, media_ms) = track_ms(i);
        // The composition time of the first presented sample, relative to the first DTS.
        let start = p.samples.first().map_or(0, |first| {
            let t0 = ticks(i128::from(first.0), info.timescale);
            p.samples
                .iter()
                .map(|s| ticks(i128::from(s.0) + i128::from(s.1), info.timescale))
                .min()
                .map_or(0, |m| (m - t0).max(0) as u64)
        });
        let edit = (delay > 0 || start > 0).then_some((delay, media_ms, start));
        let durations = &all_durations[i];
        let mut table_pos = 0;
        write_trak(out, t, info, media_durations[i], edit, |out| {
            // stts (§8.6.1.2)
            let s = begin_full(out, b"stts", 0, 0);
            let count_pos = out.len();
            out.u32(0);
            let mut runs = 0u32;
            let mut k = 0;
            while k < durations.len() {
                let mut n = 1;
                while k + n < durations.len() && durations[k + n] == durations[k] {
                    n += 1;
                }
                out.u32(n as u32);
                out.u32(durations[k]);
                runs += 1;
                k += n;
            }
            out[count_pos..count_pos + 4].copy_from_slice(&runs.to_be_bytes());
            end(out, s);
            // ctts (§8.6.1.3)
            if p.samples.iter().any(|s| s.1 != 0) {
                let signed = p.samples.iter().any(|s| s.1 < 0);
                let ts = info.timescale;
                let cts = |s: &(u64, i64, bool, u32)| -> u32 {
                    let d =
                        ticks(i128::from(s.0) + i128::from(s.1), ts) - ticks(i128::from(s.0), ts);
                    if signed {
                        d.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32 as u32
                    } else {
                        d.clamp(0, i128::from(u32::MAX)) as u32
                    }
                };
                let s = begin_full(out, b"ctts", u8::from(signed), 0);
                let count_pos = out.len();
                out.u32(0);
                let mut runs = 0u32;
                let mut k = 0;
                while k < p.samples.len() {
                    let v = cts(&p.samples[k]);
                    let mut n = 1;
                    while k + n < p.samples.len() && cts(&p.samples[k + n]) == v {
                        n += 1;
                    }
                    out.u32(n as u32);
                    out.u32(v);
                    runs += 1;
                    k += n;
                }
                out[count_pos..count_pos + 4].copy_from_slice(&runs.to_be_bytes());
                end(out, s);
            }
            // stss (§8.6.2)
            if info.video && p.samples.iter().any(|s| !s.2) {
                let s = begin_full(out, b"stss", 0, 0);
                let n = p.samples.iter().filter(|s| s.2).count();
                out.u32(n as u32);
                for (k, _) in p.samples.iter().enumerate().filter(|(_, s)| s.2) {
                    out.u32(k as u32 + 1);
                }
                end(out, s);
            }
            // stsc (§8.7.4): runs of equal samples_per_chunk.
            let s = begin_full(out, b"stsc", 0, 0);
            let count_pos = out.len();
            out.u32(0);
            let mut runs = 0u32;
            for (k, c) in p.chunks.iter().enumerate() {
                if k == 0 || p.chunks[k - 1].1 != c.1 {
                    out.u32(k as u32 + 1); // first_chunk
                    out.u32(c.1); // samples_per_chunk
                    out.u32(1); // sample_description_index
                    runs += 1;
                }
            }
            out[count_pos..count_pos + 4].copy_from_slice(&runs.to_be_bytes());
            end(out, s);
            // stsz (§8.7.3.2)
            let s = begin_full(out, b"stsz", 0, 0);
            let first = p.samples.first().map_or(0, |s| s.3);
            if p.samples.iter().all(|s| s.3 == first) && !p.samples.is_empty() {
                out.u32(first);
                out.u32(p.samples.len() as u32);
            } else {
                out.u32(0);
                out.u32(p.samples.len() as u32);
                for s in &p.samples {
                    out.u32(s.3);
                }
            }
            end(out, s);
            // stco / co64 (§8.7.5), offsets relative to the mdat payload for now.
            let s = begin_full(out, if co64 { b"co64" } else { b"stco" }, 0, 0);
            out.u32(p.chunks.len() as u32);
            table_pos = out.len();
            for c in &p.chunks {
                if co64 {
                    out.u64(c.0);
                } else {
                    out.u32(c.0 as u32);
                }
            }
            end(out, s);
        })?;
        offset_tables.push((table_pos, i));
    }
    end(out, moov);
    let header_len = if payload_total + 8 > u64::from(u32::MAX) {
        16
    } else {
        8
    };
    if align > 1 {
        // A `free` box (§8.1.2) after `moov` makes the head a whole number of `align` bytes.
        let len = (out.len() - file_start) as u64 + header_len;
        let mut pad = (align - len % align) % align;
        if pad > 0 && pad < 8 {
            pad += align;
        }
        if pad > 0 {
            let free = begin(out, b"free");
            out.resize(free + pad as usize, 0);
            end(out, free);
        }
    }
    let base = (out.len() - file_start) as u64 + header_len;
    if !co64 && base + payload_total > u64::from(u32::MAX) {
        return Ok(true);
    }
    for (pos, i) in offset_tables {
        for (k, c) in progs[i].chunks.iter().enumerate() {
            let abs = base + c.0;
            if co64 {
                let at = pos + 8 * k;
                out[at..at + 8].copy_from_slice(&abs.to_be_bytes());
            } else {
                let at = pos + 4 * k;
                out[at..at + 4].copy_from_slice(&(abs as u32).to_be_bytes());
            }
        }
    }
    write_mdat_header(payload_total, out);
    Ok(false)
}

// ---------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------

/// Iterator over the boxes laid end to end in a buffer (§4.2), from [`boxes`].
///
/// Yields each box's type and payload (the bytes after the header: after the 8-byte
/// header, or 16 with a 64-bit `largesize`; a size of 0 means "to the end of the buffer").
/// For `uuid` boxes the payload starts with the 16-byte extended type. Stops at the end of
/// the buffer or at the first malformed or truncated box; [`Boxes::rest`] then tells what
/// was not read. Never panics.
#[derive(Debug, Clone)]
pub struct Boxes<'a> {
    buf: &'a [u8],
}

/// Iterates over the boxes at the top level of `buf` (a file, or a container box's
/// payload). See [`Boxes`].
pub fn boxes(buf: &[u8]) -> Boxes<'_> {
    Boxes { buf }
}

impl<'a> Boxes<'a> {
    /// The bytes not consumed: empty after a clean end, else starting at the box that was
    /// malformed or truncated (or not yet read).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = ([u8; 4], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.buf;
        let size32 = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?);
        let fourcc: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8usize, b.len() as u64),
            1 => (16usize, u64::from_be_bytes(b.get(8..16)?.try_into().ok()?)),
            n => (8usize, u64::from(n)),
        };
        if size < header as u64 || size > b.len() as u64 {
            return None;
        }
        let size = size as usize;
        let payload = b.get(header..size)?;
        self.buf = &b[size..];
        Some((fourcc, payload))
    }
}

/// The payload of the first box found by following `path` through nested container boxes
/// from the top level of `buf` (for example `[b"moov", b"trak", b"mdia"]`). Only pure
/// containers can be walked through (not `stsd`, sample entries or `dref`, which have
/// fields before their children). `None` when any step is missing.
pub fn find_box<'a>(buf: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let mut cur = buf;
    for want in path {
        cur = boxes(cur).find(|(f, _)| f == *want)?.1;
    }
    Some(cur)
}

/// Splits a full box payload (§4.2, `FullBox`) into version, 24-bit flags and the rest;
/// `None` when shorter than 4 bytes.
pub fn full_box(payload: &[u8]) -> Option<(u8, u32, &[u8])> {
    let head = payload.get(0..4)?;
    let v = u32::from_be_bytes(head.try_into().ok()?);
    Some(((v >> 24) as u8, v & 0x00ff_ffff, &payload[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// x264 High profile SPS for 640x360, and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn tracks() -> Vec<Track> {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        let cfg = h264::AvcConfig::from_parameter_sets(SPS, PPS).unwrap();
        h264::write_avcc(&cfg, &mut v.init).unwrap();
        v.width = 640;
        v.height = 360;
        v.fpks = 25_000;
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.init = vec![0x12, 0x10]; // AAC LC 44100 Hz stereo
        a.rate = 44_100;
        a.channels = 2;
        vec![v, a]
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn names(buf: &[u8]) -> Vec<String> {
        boxes(buf)
            .map(|(f, _)| String::from_utf8_lossy(&f).into_owned())
            .collect()
    }

    /// Checks that every box in `buf` (recursing into known containers) exactly fills its
    /// parent.
    fn check_nesting(buf: &[u8]) {
        let mut it = boxes(buf);
        for (f, payload) in it.by_ref() {
            if [
                b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"dinf",
                b"edts",
            ]
            .contains(&&f)
            {
                check_nesting(payload);
            }
        }
        assert!(it.rest().is_empty(), "trailing bytes");
    }

    #[test]
    fn box_sizes_are_patched_and_nest() {
        let mut out = vec![0xAA];
        let outer = begin(&mut out, b"moov");
        let inner = begin_full(&mut out, b"mvhd", 1, 0x0102_0304);
        out.extend_from_slice(&[1, 2, 3]);
        end(&mut out, inner);
        end(&mut out, outer);
        assert_eq!(u32_at(&out, 1), 23);
        assert_eq!(u32_at(&out, 9), 15);
        let top: Vec<_> = boxes(&out[1..]).collect();
        assert_eq!(top.len(), 1);
        let (f, p) = boxes(top[0].1).next().unwrap();
        assert_eq!(&f, b"mvhd");
        assert_eq!(full_box(p), Some((1, 0x02_0304, &[1u8, 2, 3][..])));
        let mut h = Vec::new();
        assert_eq!(write_mdat_header(10, &mut h), 8);
        assert_eq!(write_mdat_header(u64::from(u32::MAX), &mut h), 16);
        assert_eq!(u32_at(&h, 8), 1);
        assert_eq!(u64_at(&h, 16), u64::from(u32::MAX) + 16);
    }

    #[test]
    fn descriptor_sizes_use_seven_bit_groups() {
        let mut out = Vec::new();
        put_descriptor(&mut out, 5, &[0; 2]);
        assert_eq!(out, [5, 2, 0, 0]);
        out.clear();
        put_descriptor(&mut out, 4, &[0; 200]);
        assert_eq!(&out[..3], &[4, 0x81, 0x48]);
        assert_eq!(out.len(), 203);
    }

    #[test]
    fn ms_to_ticks_rounds_from_absolute_times() {
        assert_eq!(ticks(23, 44_100), 1014); // 1014.3
        assert_eq!(ticks(46, 44_100), 2029); // 2028.6: not 2 × 1014
        assert_eq!(ticks(-1, 90_000), -90);
        assert_eq!(ticks(1, 48_000), 48);
        assert_eq!(ticks_u(u64::MAX, 90_000), u64::MAX);
    }

    #[test]
    fn init_segment_has_the_expected_boxes() {
        let tracks = tracks();
        let mut out = Vec::new();
        write_init(&tracks, &mut out).unwrap();
        check_nesting(&out);
        assert_eq!(names(&out), ["ftyp", "moov"]);
        let ftyp = find_box(&out, &[b"ftyp"]).unwrap();
        assert_eq!(&ftyp[..4], b"iso6");
        assert!(ftyp.chunks(4).any(|b| b == b"avc1"));
        assert!(
            !ftyp.chunks(4).any(|b| b == b"cmfc"),
            "two tracks: not CMAF"
        );
        let moov = find_box(&out, &[b"moov"]).unwrap();
        assert_eq!(names(moov), ["mvhd", "trak", "trak", "mvex"]);
        let (_, _, mvhd) = full_box(find_box(moov, &[b"mvhd"]).unwrap()).unwrap();
        assert_eq!(u32_at(mvhd, 8), 1000);
        assert_eq!(u32_at(mvhd, 92), 3, "next_track_ID");

        let traks: Vec<_> = boxes(moov).filter(|(f, _)| f == b"trak").collect();
        let expect = [
            (1u32, 640u32, 360u32, 90_000u32, b"vide", b"vmhd", b"avc1"),
            (2, 0, 0, 44_100, b"soun", b"smhd", b"mp4a"),
        ];
        for ((_, trak), (id, w, h, ts, handler, mhd, entry)) in traks.iter().zip(expect) {
            assert_eq!(names(trak), ["tkhd", "mdia"]);
            let (_, flags, tkhd) = full_box(find_box(trak, &[b"tkhd"]).unwrap()).unwrap();
            assert_eq!(flags, 3);
            assert_eq!(u32_at(tkhd, 8), id);
            assert_eq!(u32_at(tkhd, 72), w << 16);
            assert_eq!(u32_at(tkhd, 76), h << 16);
            let mdia = find_box(trak, &[b"mdia"]).unwrap();
            assert_eq!(names(mdia), ["mdhd", "hdlr", "minf"]);
            let (_, _, mdhd) = full_box(find_box(mdia, &[b"mdhd"]).unwrap()).unwrap();
            assert_eq!(u32_at(mdhd, 8), ts);
            assert_eq!(&mdhd[16..18], &[0x55, 0xc4], "und");
            let (_, _, hdlr) = full_box(find_box(mdia, &[b"hdlr"]).unwrap()).unwrap();
            assert_eq!(&hdlr[4..8], handler);
            let minf = find_box(mdia, &[b"minf"]).unwrap();
            assert_eq!(
                names(minf),
                [&*String::from_utf8_lossy(mhd), "dinf", "stbl"]
            );
            let stbl = find_box(minf, &[b"stbl"]).unwrap();
            assert_eq!(names(stbl), ["stsd", "stts", "stsc", "stco", "stsz"]);
            let (_, _, stsd) = full_box(find_box(stbl, &[b"stsd"]).unwrap()).unwrap();
            assert_eq!(u32_at(stsd, 0), 1);
            let (f, e) = boxes(&stsd[4..]).next().unwrap();
            assert_eq!(&f, entry);
            if id == 1 {
                assert_eq!(&e[24..28], &[2, 128, 1, 104]); // 640 x 360
                let (f, avcc) = boxes(&e[78..]).next().unwrap();
                assert_eq!(&f, b"avcC");
                assert_eq!(avcc, &tracks[0].init[..]);
            } else {
                assert_eq!(u32_at(e, 16) >> 16, 2); // channels, samplesize
                assert_eq!(u32_at(e, 24), 44_100 << 16);
                let (f, esds) = boxes(&e[28..]).next().unwrap();
                assert_eq!(&f, b"esds");
                // ES_Descriptor > DecoderConfigDescriptor (AAC) > DecoderSpecificInfo = ASC.
                assert_eq!(esds[4], 0x03);
                assert_eq!(esds[9], 0x04);
                assert_eq!(esds[11], 0x40);
                assert_eq!(esds[12], 0x15);
                assert_eq!(&esds[24..28], &[0x05, 2, 0x12, 0x10]);
                assert_eq!(&esds[28..], &[0x06, 1, 2]);
                assert_eq!(esds[5] as usize, esds.len() - 6);
            }
        }
        let mvex = find_box(moov, &[b"mvex"]).unwrap();
        let trex: Vec<_> = boxes(mvex).collect();
        assert_eq!(trex.len(), 2);
        assert_eq!(u32_at(trex[1].1, 4), 2);
        assert_eq!(u32_at(trex[1].1, 8), 1);

        let mut single = Vec::new();
        write_init_single(&tracks[1], &mut single).unwrap();
        let ftyp = find_box(&single, &[b"ftyp"]).unwrap();
        assert!(ftyp.chunks(4).any(|b| b == b"cmfc"));
        assert!(!ftyp.chunks(4).any(|b| b == b"avc1"));
    }

    #[test]
    fn init_refuses_bad_tracks_and_leaves_out_unchanged() {
        let mut out = vec![1, 2, 3];
        let mut t = tracks();
        assert_eq!(write_init(&[], &mut out), Err(Mp4Error::NoTracks));
        t[1].id = 1;
        assert_eq!(write_init(&t, &mut out), Err(Mp4Error::BadTrackId(1)));
        let mut t = tracks();
        t[0].init = vec![1, 2];
        assert!(matches!(
            write_init(&t, &mut out),
            Err(Mp4Error::BadInit { track: 1, .. })
        ));
        let meta = Track::new(3, TrackKind::Meta, Codec::Other("JSON".into()));
        assert!(matches!(
            write_init(&[meta], &mut out),
            Err(Mp4Error::UnsupportedCodec { track: 3, .. })
        ));
        let mut a = Track::new(4, TrackKind::Audio, Codec::Mp3);
        assert_eq!(
            write_init_single(&a, &mut out),
            Err(Mp4Error::NoSampleRate(4))
        );
        assert_eq!(out, [1, 2, 3]);
        a.rate = 22_050;
        write_init_single(&a, &mut out).unwrap();
        let moov = find_box(&out[3..], &[b"moov"]).unwrap();
        let stbl = find_box(moov, &[b"trak", b"mdia", b"minf", b"stbl"]).unwrap();
        let stsd = find_box(stbl, &[b"stsd"]).unwrap();
        let (_, e) = boxes(&stsd[8..]).next().unwrap();
        let (_, esds) = boxes(&e[28..]).next().unwrap();
        assert_eq!(esds[11], 0x69, "MPEG-2 audio below 32 kHz");
    }

    #[test]
    fn hevc_gets_hvc1_with_the_record_verbatim() {
        let mut t = Track::new(5, TrackKind::Video, Codec::Hevc);
        t.width = 1920;
        t.height = 1080;
        let mut out = Vec::new();
        assert!(matches!(
            write_init_single(&t, &mut out),
            Err(Mp4Error::BadInit { track: 5, .. })
        ));
        t.init = vec![1; 23];
        write_init_single(&t, &mut out).unwrap();
        check_nesting(&out);
        let stbl = find_box(&out, &[b"moov", b"trak", b"mdia", b"minf", b"stbl"]).unwrap();
        let stsd = find_box(stbl, &[b"stsd"]).unwrap();
        let (f, e) = boxes(&stsd[8..]).next().unwrap();
        assert_eq!(&f, b"hvc1");
        assert_eq!(boxes(&e[78..]).next(), Some((*b"hvcC", &t.init[..])));
        assert_eq!(timescale(&t), Ok(VIDEO_TIMESCALE));
    }

    /// Synthetic samples: 50 video frames at 25 fps with B-frame-like offsets (some
    /// negative), and 86 AAC frames at 44.1 kHz, interleaved by DTS, from `start_ms`.
    fn synthetic(start_ms: u64) -> Vec<Packet> {
        let mut v: Vec<Packet> = (0..50u64)
            .map(|i| Packet {
                track: 1,
                dts: start_ms + i * 40,
                offset: [80, -40, 40, 0][i as usize % 4],
                keyframe: i % 25 == 0,
                bpos: 0,
                data: vec![(i % 251) as u8; 100 + i as usize].into(),
            })
            .collect();
        let a = (0..86u64).map(|i| Packet {
            track: 2,
            dts: start_ms + (i * 1024 * 1000 + 22_050) / 44_100,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: vec![0x80 | (i % 100) as u8; 10 + i as usize].into(),
        });
        v.extend(a);
        v.sort_by_key(|p| p.dts);
        v
    }

    use crate::model::Packet;

    #[test]
    fn fragment_offsets_times_and_counts() {
        let tracks = tracks();
        let packets = synthetic(10_007);
        let mut fb = FragmentBuilder::new(&tracks).unwrap();
        for p in &packets {
            fb.add(&p.as_ref()).unwrap();
        }
        fb.set_end_dts(1, 10_007 + 50 * 40).unwrap();
        assert_eq!(fb.sample_count(), 136);
        let payload_len = fb.payload_len();
        let mut head = Vec::new();
        fb.write_header(7, &mut head).unwrap();
        let zero_copy: Vec<u8> = head
            .iter()
            .copied()
            .chain(fb.payloads().flatten().copied())
            .collect();
        let mut out = Vec::new();
        fb.finish(7, &mut out).unwrap();
        assert_eq!(out, zero_copy);
        assert!(fb.is_empty());
        check_nesting(&out);
        assert_eq!(names(&out), ["moof", "mdat"]);
        let moof = find_box(&out, &[b"moof"]).unwrap();
        let mdat = find_box(&out, &[b"mdat"]).unwrap();
        assert_eq!(mdat.len() as u64, payload_len);
        let mdat_start = out.len() - mdat.len();
        assert_eq!(names(moof), ["mfhd", "traf", "traf"]);
        assert_eq!(
            u32_at(full_box(find_box(moof, &[b"mfhd"]).unwrap()).unwrap().2, 0),
            7
        );

        for (n, (_, traf)) in boxes(moof).filter(|(f, _)| f == b"traf").enumerate() {
            let (id, ts, count) = [(1u32, 90_000u32, 50usize), (2, 44_100, 86)][n];
            let mine: Vec<&Packet> = packets.iter().filter(|p| p.track == id).collect();
            assert_eq!(names(traf), ["tfhd", "tfdt", "trun"]);
            let (_, flags, tfhd) = full_box(find_box(traf, &[b"tfhd"]).unwrap()).unwrap();
            assert_eq!(flags & TFHD_BASE_IS_MOOF, TFHD_BASE_IS_MOOF);
            assert_eq!(u32_at(tfhd, 0), id);
            let (v, _, tfdt) = full_box(find_box(traf, &[b"tfdt"]).unwrap()).unwrap();
            assert_eq!(v, 1);
            let want = (u128::from(mine[0].dts) * u128::from(ts) * 2 + 1000) / 2000;
            assert_eq!(u128::from(u64_at(tfdt, 0)), want);
            let (v, flags, trun) = full_box(find_box(traf, &[b"trun"]).unwrap()).unwrap();
            assert_eq!(v, 1);
            assert_eq!(u32_at(trun, 0) as usize, count);
            // data_offset is from the start of moof (= start of `out`).
            let off = u32_at(trun, 4) as usize;
            assert!(off >= mdat_start);
            assert_eq!(&out[off..off + mine[0].data.len()], &mine[0].data[..]);
            let video = id == 1;
            assert_eq!(flags & TRUN_FLAGS != 0, video);
            assert_eq!(flags & TRUN_CTS != 0, video);
            let stride = if video { 16 } else { 8 };
            let mut pos = off;
            let mut t = u64_at(tfdt, 0);
            for (i, p) in mine.iter().enumerate() {
                let e = &trun[8 + i * stride..];
                let dur = u32_at(e, 0);
                let size = u32_at(e, 4) as usize;
                assert_eq!(size, p.data.len());
                assert_eq!(&out[pos..pos + size], &p.data[..]);
                pos += size;
                // Each DTS is recomputed from absolute ms: no drift.
                let exact = (u128::from(p.dts) * u128::from(ts) * 2 + 1000) / 2000;
                assert_eq!(u128::from(t), exact);
                t += u64::from(dur);
                if video {
                    let sf = u32_at(e, 8);
                    assert_eq!(
                        sf,
                        if p.keyframe {
                            SAMPLE_FLAGS_SYNC
                        } else {
                            SAMPLE_FLAGS_NON_SYNC
                        }
                    );
                    assert_eq!(u32_at(e, 12) as i32 as i64, p.offset * 90);
                    assert_eq!(dur, 3600);
                }
            }
            if video {
                assert!((0..50).any(|i| (u32_at(trun, 8 + i * 16 + 12) as i32) < 0));
            } else {
                // The last audio frame lasts as long as the one before it.
                let last = u32_at(trun, 8 + 85 * 8);
                let before = u32_at(trun, 8 + 84 * 8);
                assert_eq!(last, before);
            }
        }
    }

    #[test]
    fn smooth_fragment_has_tfxd_tfrf_and_hns_times() {
        let tracks = tracks();
        let packets = synthetic(10_007);
        let mut fb = FragmentBuilder::with_timescale(&tracks[..1], 10_000_000).unwrap();
        for p in packets.iter().filter(|p| p.track == 1) {
            fb.add(&p.as_ref()).unwrap();
        }
        fb.set_end_dts(1, 10_007 + 50 * 40).unwrap();
        let mut out = Vec::new();
        let next = [(120_070_000u64, 20_000_000u64)];
        fb.finish_smooth(3, Some(&next), &mut out).unwrap();
        check_nesting(&out);
        assert_eq!(names(&out), ["moof", "mdat"]);
        let moof = find_box(&out, &[b"moof"]).unwrap();
        let traf = find_box(moof, &[b"traf"]).unwrap();
        assert_eq!(names(traf), ["tfhd", "trun", "uuid", "uuid"]);
        let (_, flags, _) = full_box(find_box(traf, &[b"tfhd"]).unwrap()).unwrap();
        assert_eq!(flags & TFHD_BASE_IS_MOOF, 0);
        let uuids: Vec<&[u8]> = boxes(traf)
            .filter(|(f, _)| f == b"uuid")
            .map(|(_, p)| p)
            .collect();
        assert_eq!(&uuids[0][..16], &crate::smooth::TFXD_UUID);
        // tfxd: version 1, start 10.007 s and 50 frames of 40 ms, in hns.
        assert_eq!(u64_at(uuids[0], 20), 100_070_000);
        assert_eq!(u64_at(uuids[0], 28), 20_000_000);
        assert_eq!(&uuids[1][..16], &crate::smooth::TFRF_UUID);
        assert_eq!(uuids[1][20], 1);
        assert_eq!(u64_at(uuids[1], 21), 120_070_000);
        let (_, _, trun) = full_box(find_box(traf, &[b"trun"]).unwrap()).unwrap();
        assert_eq!(u32_at(trun, 0), 50);
        assert_eq!(u32_at(trun, 8), 400_000, "40 ms in hns");
        let off = u32_at(trun, 4) as usize;
        let first = packets.iter().find(|p| p.track == 1).unwrap();
        assert_eq!(&out[off..off + first.data.len()], &first.data[..]);
        // VOD: no tfrf.
        let mut fb = FragmentBuilder::with_timescale(&tracks[1..], 10_000_000).unwrap();
        for p in packets.iter().filter(|p| p.track == 2) {
            fb.add(&p.as_ref()).unwrap();
        }
        let mut out = Vec::new();
        fb.finish_smooth(1, None, &mut out).unwrap();
        check_nesting(&out);
        let traf = find_box(&out, &[b"moof", b"traf"]).unwrap();
        assert_eq!(names(traf), ["tfhd", "trun", "uuid"]);
    }

    #[test]
    fn fragment_builder_errors_and_fallback_durations() {
        let tracks = tracks();
        let mut fb = FragmentBuilder::new(&tracks).unwrap();
        let data = [1u8, 2, 3];
        let mut p = PacketRef {
            track: 9,
            dts: 100,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &data,
        };
        assert_eq!(fb.add(&p), Err(Mp4Error::UnknownTrack(9)));
        p.track = 1;
        fb.add(&p).unwrap();
        p.dts = 99;
        assert!(matches!(fb.add(&p), Err(Mp4Error::DtsBackwards { .. })));
        // One sample, nothing known: nominal 25 fps frame.
        let mut out = Vec::new();
        fb.write_header(1, &mut out).unwrap();
        let trun = find_box(&out, &[b"moof", b"traf", b"trun"]).unwrap();
        assert_eq!(u32_at(trun, 12), 3600);
        fb.clear();
        let mut empty = Vec::new();
        fb.finish(2, &mut empty).unwrap();
        assert!(empty.is_empty());
        // Different-lifetime payloads after recycle.
        let owned = vec![9u8; 5];
        let mut fb = fb.recycle();
        fb.add(&PacketRef {
            track: 2,
            dts: 5,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &owned,
        })
        .unwrap();
        let mut out = Vec::new();
        fb.finish(3, &mut out).unwrap();
        assert_eq!(&out[out.len() - 5..], &owned[..]);
        let trun = find_box(&out, &[b"moof", b"traf", b"trun"]).unwrap();
        assert_eq!(u32_at(trun, 12), 1024, "nominal AAC frame");
    }

    #[test]
    fn progressive_tables_match_mdat() {
        let tracks = tracks();
        // Audio starts 30 ms after video: expect an empty edit on the audio track.
        let mut packets = synthetic(1000);
        for p in packets.iter_mut().filter(|p| p.track == 2) {
            p.dts += 30;
        }
        packets.sort_by_key(|p| p.dts);
        let refs: Vec<PacketRef> = packets.iter().map(Packet::as_ref).collect();
        let mut out = Vec::new();
        write_progressive(&tracks, &refs, &mut out).unwrap();
        check_nesting(&out);
        assert_eq!(names(&out), ["ftyp", "moov", "mdat"]);
        let moov = find_box(&out, &[b"moov"]).unwrap();
        let ftyp = find_box(&out, &[b"ftyp"]).unwrap();
        assert!(ftyp.chunks(4).any(|b| b == b"iso4"), "signed ctts");
        for (n, (_, trak)) in boxes(moov).filter(|(f, _)| f == b"trak").enumerate() {
            let id = n as u32 + 1;
            let mine: Vec<&Packet> = packets.iter().filter(|p| p.track == id).collect();
            let stbl = find_box(trak, &[b"mdia", b"minf", b"stbl"]).unwrap();
            let table = |f: &[u8; 4]| full_box(find_box(stbl, &[f]).unwrap()).unwrap().2;
            let stsz = table(b"stsz");
            assert_eq!(u32_at(stsz, 0), 0);
            assert_eq!(u32_at(stsz, 4) as usize, mine.len());
            let stco = table(b"stco");
            let stsc = table(b"stsc");
            // Expand stsc into samples per chunk.
            let chunks = u32_at(stco, 0) as usize;
            let entries = u32_at(stsc, 0) as usize;
            let mut per_chunk = vec![0u32; chunks];
            for e in 0..entries {
                let first = u32_at(stsc, 4 + e * 12) as usize;
                let n = u32_at(stsc, 8 + e * 12);
                let next = if e + 1 < entries {
                    u32_at(stsc, 4 + (e + 1) * 12) as usize
                } else {
                    chunks + 1
                };
                per_chunk[first - 1..next - 1].fill(n);
            }
            let mut k = 0;
            for (c, &n) in per_chunk.iter().enumerate() {
                let mut off = u32_at(stco, 4 + c * 4) as usize;
                for _ in 0..n {
                    let size = u32_at(stsz, 8 + k * 4) as usize;
                    assert_eq!(
                        &out[off..off + size],
                        &mine[k].data[..],
                        "track {id} sample {k}"
                    );
                    off += size;
                    k += 1;
                }
            }
            assert_eq!(k, mine.len());
            // stts covers every sample; ctts only for video; stss lists keyframes.
            let stts = table(b"stts");
            let total: u32 = (0..u32_at(stts, 0) as usize)
                .map(|e| u32_at(stts, 4 + e * 8))
                .sum();
            assert_eq!(total as usize, mine.len());
            let has = |f: &[u8; 4]| find_box(stbl, &[f]).is_some();
            assert_eq!(has(b"ctts"), id == 1);
            assert_eq!(has(b"stss"), id == 1);
            assert_eq!(find_box(trak, &[b"edts"]).is_some(), id == 2);
            if id == 1 {
                let stss = table(b"stss");
                assert_eq!(u32_at(stss, 0), 2);
                assert_eq!((u32_at(stss, 4), u32_at(stss, 8)), (1, 26));
                let (v, _, _) = full_box(find_box(stbl, &[b"ctts"]).unwrap()).unwrap();
                assert_eq!(v, 1);
            } else {
                let elst = full_box(find_box(trak, &[b"edts", b"elst"]).unwrap())
                    .unwrap()
                    .2;
                assert_eq!(u32_at(elst, 0), 2);
                assert_eq!(u32_at(elst, 4), 30);
                assert_eq!(u32_at(elst, 8), u32::MAX);
                assert_eq!(u32_at(elst, 20), 0);
            }
        }
    }

    #[test]
    fn progressive_edit_starts_at_the_first_composition_time() {
        let tracks = tracks();
        let data = [0u8; 4];
        // I P B B with offsets 80, 120, 40, 40 ms: the first frame is presented at 80 ms.
        let packets: Vec<PacketRef> = [
            (0, 80, true),
            (40, 120, false),
            (80, 40, false),
            (120, 40, false),
        ]
        .iter()
        .map(|&(dts, offset, keyframe)| PacketRef {
            track: 1,
            dts,
            offset,
            keyframe,
            bpos: 0,
            data: &data,
        })
        .collect();
        let mut out = Vec::new();
        write_progressive(&tracks[..1], &packets, &mut out).unwrap();
        check_nesting(&out);
        let elst = full_box(find_box(&out, &[b"moov", b"trak", b"edts", b"elst"]).unwrap())
            .unwrap()
            .2;
        assert_eq!(u32_at(elst, 0), 1, "no empty edit");
        assert_eq!(u32_at(elst, 4), 160, "segment duration, ms");
        assert_eq!(
            u32_at(elst, 8),
            80 * 90,
            "media time: 80 ms in 90 kHz ticks"
        );
    }

    #[test]
    fn progressive_tracks_are_placed_by_their_first_presentation_time() {
        // Video I P B B presented from 80 ms (DTS 0), audio from 57 ms: as in an FLV with
        // B-frames. The picture must still come 23 ms after the sound.
        let tracks = tracks();
        let data = [0u8; 4];
        let mut packets: Vec<PacketRef> = [(0, 80, true), (40, 120, false), (80, 40, false)]
            .iter()
            .map(|&(dts, offset, keyframe)| PacketRef {
                track: 1,
                dts,
                offset,
                keyframe,
                bpos: 0,
                data: &data,
            })
            .collect();
        for dts in [57, 80, 103] {
            packets.push(PacketRef {
                track: 2,
                dts,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &data,
            });
        }
        let mut out = Vec::new();
        write_progressive(&tracks, &packets, &mut out).unwrap();
        let moov = find_box(&out, &[b"moov"]).unwrap();
        let elsts: Vec<&[u8]> = boxes(moov)
            .filter(|(f, _)| f == b"trak")
            .filter_map(|(_, trak)| Some(full_box(find_box(trak, &[b"edts", b"elst"])?)?.2))
            .collect();
        // Video: an empty edit of 23 ms, then the media from its first composition time.
        assert_eq!(u32_at(elsts[0], 0), 2);
        assert_eq!(u32_at(elsts[0], 4), 23);
        assert_eq!(u32_at(elsts[0], 8), u32::MAX);
        assert_eq!(u32_at(elsts[0], 20), 80 * 90);
        // Audio starts the movie and needs no edit.
        assert_eq!(elsts.len(), 1);
    }

    #[test]
    fn progressive_refuses_unknown_tracks_without_writing() {
        let tracks = tracks();
        let data = [0u8; 4];
        let p = PacketRef {
            track: 3,
            dts: 0,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &data,
        };
        let mut out = Vec::new();
        assert_eq!(
            write_progressive(&tracks, &[p], &mut out),
            Err(Mp4Error::UnknownTrack(3))
        );
        assert!(out.is_empty());
        // No packets at all: a valid empty movie.
        write_progressive(&tracks, &[], &mut out).unwrap();
        check_nesting(&out);
    }

    proptest! {
        #[test]
        fn box_reader_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut it = boxes(&buf);
            let mut seen = 0usize;
            for (_, payload) in it.by_ref() {
                seen += 1;
                let _ = full_box(payload);
                for _ in boxes(payload) {}
            }
            prop_assert!(it.rest().len() <= buf.len());
            let _ = find_box(&buf, &[b"moov", b"trak"]);
            prop_assert!(seen <= buf.len() / 8 + 1);
        }

        #[test]
        fn box_reader_reads_what_the_writer_wrote(
            sizes in proptest::collection::vec(0usize..300, 0..10),
            cut in 0usize..4000,
        ) {
            let mut out = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let s = begin(&mut out, b"free");
                out.resize(out.len() + n, i as u8);
                end(&mut out, s);
            }
            let read: Vec<_> = boxes(&out).map(|(_, p)| p.len()).collect();
            prop_assert_eq!(&read, &sizes);
            // A truncated buffer yields a prefix of the boxes, never a bad one.
            let cut = cut.min(out.len());
            let mut it = boxes(&out[..cut]);
            let n = it.by_ref().count();
            prop_assert!(n <= sizes.len());
            prop_assert_eq!(it.rest().len() + out[..cut].len() - it.rest().len(), cut);
        }
    }

    /// Muxes `target/fixtures/bframes.flv` into `/tmp/x_frag.mp4` (init + one fragment per
    /// video GOP) and `/tmp/x_prog.mp4` (progressive), for checking with ffprobe/ffmpeg.
    #[test]
    #[ignore]
    fn real_flv_to_mp4_files() {
        use crate::flv::{parse_file_header, parse_tag, FlvIngest, IngestEvent};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/fixtures/bframes.flv"
        );
        let file = std::fs::read(path).unwrap();
        let (_, mut pos) = parse_file_header(&file).unwrap().unwrap();
        let mut ingest = FlvIngest::new();
        let mut packets = Vec::new();
        while let Some((tag, used)) = parse_tag(&file[pos..]).unwrap() {
            if let Ok(Some(IngestEvent::Packet(p))) =
                ingest.push_tag(tag.kind, u64::from(tag.timestamp), tag.body)
            {
                packets.push(p);
            }
            pos += used;
        }
        let tracks = ingest.tracks().to_vec();
        let mut prog = Vec::new();
        write_progressive(&tracks, &packets, &mut prog).unwrap();
        std::fs::write("/tmp/x_prog.mp4", &prog).unwrap();

        // Fragments start at video keyframes.
        let mut starts: Vec<usize> = packets
            .iter()
            .enumerate()
            .filter(|(_, p)| p.track == 1 && p.keyframe)
            .map(|(i, _)| i)
            .collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        starts.push(packets.len());
        let mut out = Vec::new();
        write_init(&tracks, &mut out).unwrap();
        let mut fb = FragmentBuilder::new(&tracks).unwrap();
        for (seq, w) in starts.windows(2).enumerate() {
            for p in &packets[w[0]..w[1]] {
                fb.add(p).unwrap();
            }
            for t in &tracks {
                if let Some(next) = packets[w[1]..].iter().find(|p| p.track == t.id) {
                    fb.set_end_dts(t.id, next.dts).unwrap();
                }
            }
            fb.finish(seq as u32 + 1, &mut out).unwrap();
        }
        std::fs::write("/tmp/x_frag.mp4", &out).unwrap();
        eprintln!(
            "{} packets, {} fragments, tracks {:?}",
            packets.len(),
            starts.len() - 1,
            tracks.iter().map(Track::dtsc_name).collect::<Vec<_>>()
        );
    }
}
