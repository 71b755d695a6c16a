//! Live thumbnails: `/S.jpg`, a JPEG of the stream's latest keyframe (`?width=` scales it,
//! keeping the aspect ratio), and `/S.mjpg`, one JPEG per keyframe as
//! `multipart/x-mixed-replace` (what MJPEG viewers, browsers' `<img>` and ffmpeg's `mpjpeg`
//! demuxer read).
//!
//! H.264 keyframes are decoded with OpenH264 (the `openh264` crate, which builds Cisco's
//! decoder from its bundled source) and encoded with `jpeg-encoder` (a port of parts of the
//! Independent JPEG Group's library: "this software is based in part on the work of the
//! Independent JPEG Group"). Both sit behind this crate's `thumbnails` feature, which the
//! `sluice` binary turns on, so that the library's other builds (tests of `dtsc`, the fuzz
//! targets) skip compiling the decoder. HEVC is answered 415 until a decoder exists.
//!
//! A thumbnail is made once per keyframe and width for the whole server: it is kept in the
//! stream's segment cache (`segcache`), and concurrent requests for one that is not there yet
//! wait for the first request's decode ([`SegmentCache::get_or_make_once`]) instead of
//! decoding it again. A keyframe the decoder rejects leaves the previous thumbnail in place,
//! with a log line.

use dtsc::{Codec, Track, TrackKind};

use crate::core::cursor::Cursor;
use crate::core::segcache::SegmentCache;

/// JPEG quality (1..=100) of thumbnails.
pub const QUALITY: u8 = 85;

/// Widest `?width=` honoured, pixels.
pub const MAX_WIDTH: u32 = 3840;

/// The widths thumbnails are made in, pixels: a `?width=` gets the first at or above it
/// ([`snap_width`]), so that a stream's cache holds at most this many pictures per keyframe
/// (plus the full-size one) whatever widths viewers ask for.
pub const WIDTHS: [u32; 8] = [160, 320, 480, 640, 960, 1280, 1920, MAX_WIDTH];

/// The width a thumbnail asked `asked` pixels wide is made in: the first of [`WIDTHS`] at or
/// above `asked` (the widest for more); `None` (the picture's own width) when that is at
/// least the source's width `source` (pixels; 0 when unknown, then no cap applies).
pub fn snap_width(asked: u32, source: u32) -> Option<u32> {
    let w = WIDTHS
        .iter()
        .copied()
        .find(|&w| w >= asked)
        .unwrap_or(MAX_WIDTH);
    (source == 0 || w < source).then_some(w)
}

/// An RGB picture, 8 bits per channel, rows top to bottom without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

/// Why there is no thumbnail: an HTTP status and a reason for the viewer.
pub type Refusal = (u16, String);

/// The video track thumbnails are made of: the first video track. Errors: none (415), HEVC
/// or another codec without a decoder here (415).
pub fn thumbnail_track(tracks: &[Track]) -> Result<&Track, Refusal> {
    let t = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .ok_or((415, "the stream has no video track".to_string()))?;
    match t.codec {
        Codec::H264 => Ok(t),
        Codec::Hevc => Err((
            415,
            "HEVC thumbnails need an HEVC decoder, which this server does not have".into(),
        )),
        ref c => Err((415, format!("no decoder for {} thumbnails", c.as_str()))),
    }
}

/// The keyframes of track `id` in the cursor's window, newest first, as (seq, DTS ms).
fn keyframes_newest_first(c: &Cursor, id: u32) -> Vec<(u64, u64)> {
    let r = c.reader();
    let m = r.meta();
    let mut out = Vec::new();
    for k in (m.first_key()..m.key_count()).rev() {
        if let Some(key) = m.key(k) {
            if m.packet(key.seq).is_some_and(|p| p.track == id) {
                out.push((key.seq, key.dts));
            }
        }
        if out.len() >= 8 {
            break;
        }
    }
    out
}

/// The JPEG of the stream's latest keyframe, `width` wide (the picture's own width when
/// `None`), from the cache or decoded now. A keyframe that does not decode is logged and
/// the newest older keyframe's thumbnail is given instead.
pub fn latest_jpeg(
    c: &Cursor,
    cache: &SegmentCache,
    stream: &str,
    width: Option<u32>,
) -> Result<(u64, Vec<u8>), Refusal> {
    let t = thumbnail_track(c.tracks())?.clone();
    let keys = keyframes_newest_first(c, t.id);
    if keys.is_empty() {
        return Err((503, "no keyframe yet".into()));
    }
    let w = width.and_then(|w| snap_width(w, t.width));
    let mut last_err = String::new();
    for (seq, dts) in keys {
        let name = format!(
            "thumb_{seq}_{}.jpg",
            w.map_or("full".to_string(), |w| w.to_string())
        );
        let made = cache.get_or_make_once(&name, |out| {
            let p = c.reader().packet(seq)?;
            match render(&t, p.data, w) {
                Ok(jpeg) => {
                    crate::log!("HTTP", "{stream}: thumbnail of the keyframe at {dts} ms");
                    out.extend_from_slice(&jpeg);
                    Some(())
                }
                Err(e) => {
                    crate::log!(
                        "HTTP",
                        "{stream}: the keyframe at {dts} ms did not decode ({e}); the previous thumbnail stays"
                    );
                    None
                }
            }
        });
        match made.and_then(|b| b.into_bytes().ok()) {
            Some(jpeg) if !jpeg.is_empty() => return Ok((seq, jpeg)),
            _ => last_err = format!("the keyframe at {dts} ms did not decode"),
        }
    }
    Err((503, last_err))
}

/// A keyframe of H.264 track `t` (AVCC `sample`) as a JPEG `width` wide.
#[cfg(feature = "thumbnails")]
pub fn render(t: &Track, sample: &[u8], width: Option<u32>) -> Result<Vec<u8>, String> {
    let pic = decode_h264(&t.init, sample)?;
    let pic = match width {
        Some(w) if w != pic.width => scale_to_width(&pic, w),
        _ => pic,
    };
    jpeg(&pic)
}

/// Without the `thumbnails` feature: no decoder.
#[cfg(not(feature = "thumbnails"))]
pub fn render(_t: &Track, _sample: &[u8], _width: Option<u32>) -> Result<Vec<u8>, String> {
    Err("this build has no thumbnail decoder (the thumbnails feature is off)".into())
}

/// Decodes one H.264 keyframe: the avcC's parameter sets and the sample's NAL units in
/// Annex B form (ISO/IEC 14496-15 §5.3.3.1, H.264 Annex B) through OpenH264, to RGB.
#[cfg(feature = "thumbnails")]
pub fn decode_h264(avcc: &[u8], sample: &[u8]) -> Result<Picture, String> {
    use openh264::formats::YUVSource;
    let cfg = dtsc::h264::parse_avcc(avcc).map_err(|e| format!("avcC: {e}"))?;
    let mut annexb = Vec::with_capacity(sample.len() + 64);
    for ps in cfg.sps.iter().chain(&cfg.pps) {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(ps);
    }
    dtsc::h264::avcc_to_annexb(sample, cfg.nal_length_size, &mut annexb)
        .map_err(|e| format!("NAL units: {e}"))?;
    let mut dec = openh264::decoder::Decoder::new().map_err(|e| format!("decoder: {e}"))?;
    let to_picture = |y: &openh264::decoder::DecodedYUV<'_>| {
        let (w, h) = y.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        y.write_rgb8(&mut rgb);
        Picture {
            width: w as u32,
            height: h as u32,
            rgb,
        }
    };
    if let Some(y) = dec.decode(&annexb).map_err(|e| format!("{e}"))? {
        return Ok(to_picture(&y));
    }
    let rest = dec.flush_remaining().map_err(|e| format!("{e}"))?;
    rest.first()
        .map(to_picture)
        .ok_or_else(|| "no picture came out".to_string())
}

/// `p` scaled to `width` pixels wide and the height that keeps its aspect ratio (rounded,
/// at least 1): each target pixel is the mean of the source pixels it covers (a box filter,
/// right for the downscaling thumbnails mostly need; upscaling repeats pixels).
pub fn scale_to_width(p: &Picture, width: u32) -> Picture {
    let (sw, sh) = (p.width as usize, p.height as usize);
    let w = width.max(1) as usize;
    let h = ((sh * w + sw / 2) / sw.max(1)).max(1);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        let y0 = y * sh / h;
        let y1 = ((y + 1) * sh / h).max(y0 + 1).min(sh);
        for x in 0..w {
            let x0 = x * sw / w;
            let x1 = ((x + 1) * sw / w).max(x0 + 1).min(sw);
            let mut sum = [0u32; 3];
            for sy in y0..y1 {
                let row = &p.rgb[(sy * sw + x0) * 3..(sy * sw + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (y * w + x) * 3;
            for c in 0..3 {
                rgb[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    Picture {
        width: w as u32,
        height: h as u32,
        rgb,
    }
}

/// `p` as a baseline JPEG of [`QUALITY`] (JFIF; `jpeg-encoder`).
#[cfg(feature = "thumbnails")]
pub fn jpeg(p: &Picture) -> Result<Vec<u8>, String> {
    let (w, h) = (
        u16::try_from(p.width).map_err(|_| "too wide for JPEG")?,
        u16::try_from(p.height).map_err(|_| "too tall for JPEG")?,
    );
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, QUALITY)
        .encode(&p.rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG: {e}"))?;
    Ok(out)
}

/// The `?width=` of a thumbnail request (pixels; other values ignored).
pub fn width_of(query: &str) -> Option<u32> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "width")
        .and_then(|(_, v)| v.parse().ok())
        .filter(|&w: &u32| w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_snap_up_to_a_short_list_capped_at_the_source() {
        assert_eq!(snap_width(16, 1920), Some(160));
        assert_eq!(snap_width(160, 1920), Some(160));
        assert_eq!(snap_width(161, 1920), Some(320));
        assert_eq!(snap_width(1000, 1920), Some(1280));
        assert_eq!(
            snap_width(1500, 1920),
            None,
            "1920 is the source's own width"
        );
        assert_eq!(snap_width(5000, 1280), None);
        assert_eq!(snap_width(5000, 0), Some(MAX_WIDTH));
        assert_eq!(snap_width(700, 0), Some(960));
        // Every width from 1 to 4000 lands on one of a handful of files.
        let mut made: Vec<Option<u32>> = (1..=4000).map(|w| snap_width(w, 1920)).collect();
        made.sort_unstable();
        made.dedup();
        assert_eq!(made.len(), 7, "{made:?}");
    }

    #[test]
    fn scaling_keeps_the_aspect_ratio_and_averages() {
        // 4x2: left half black, right half white.
        let mut rgb = Vec::new();
        for _ in 0..2 {
            for x in 0..4 {
                let v = if x < 2 { 0 } else { 255 };
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        let p = Picture {
            width: 4,
            height: 2,
            rgb,
        };
        let s = scale_to_width(&p, 2);
        assert_eq!((s.width, s.height), (2, 1));
        assert_eq!(s.rgb, [0, 0, 0, 255, 255, 255]);
        let one = scale_to_width(&p, 1);
        assert_eq!((one.width, one.height, one.rgb[0]), (1, 1, 128));
        let up = scale_to_width(&p, 8);
        assert_eq!((up.width, up.height), (8, 4));
        // 640x360 to 320: 180 high.
        let big = Picture {
            width: 640,
            height: 360,
            rgb: vec![7; 640 * 360 * 3],
        };
        let s = scale_to_width(&big, 320);
        assert_eq!((s.width, s.height), (320, 180));
        assert!(s.rgb.iter().all(|&v| v == 7));
    }

    #[test]
    fn widths_come_from_the_query() {
        assert_eq!(width_of("width=320"), Some(320));
        assert_eq!(width_of("a=1&width=64"), Some(64));
        assert_eq!(width_of("width=0"), None);
        assert_eq!(width_of("width=x"), None);
        assert_eq!(width_of(""), None);
    }

    #[test]
    fn hevc_and_audio_only_are_refused_with_a_reason() {
        let h = Track::new(1, TrackKind::Video, Codec::Hevc);
        assert_eq!(thumbnail_track(&[h]).unwrap_err().0, 415);
        let a = Track::new(1, TrackKind::Audio, Codec::Aac);
        assert!(thumbnail_track(&[a]).unwrap_err().1.contains("no video"));
    }

    #[cfg(feature = "thumbnails")]
    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let avcc = [1u8, 0x64, 0, 0x1e, 0xff, 0xe0, 0];
        assert!(decode_h264(&avcc, &[0, 0, 0, 3, 0x65, 1, 2]).is_err());
        assert!(decode_h264(b"junk", b"junk").is_err());
    }
}
