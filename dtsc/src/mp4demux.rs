//! Reading MP4 / MOV files (ISO/IEC 14496-12, the ISO base media file format; QuickTime's
//! `.mov` shares the boxes used here) into tracks and packets, for file sources.
//!
//! The `moov` box may come before or after `mdat` (both are found by walking the top-level
//! boxes). Per track (`trak`): the id (`tkhd`, §8.3.2), the timescale (`mdhd`, §8.4.2), the
//! handler (`hdlr`, §8.4.3: `vide`, `soun`), the first sample entry (`stsd`, §8.5.2: `avc1`/
//! `avc3` with `avcC`, `hvc1`/`hev1` with `hvcC`, `mp4a` with `esds` carrying AAC's
//! AudioSpecificConfig or MP3, ISO/IEC 14496-1 §7.2.6), and the sample table: decode times
//! (`stts`, §8.6.1.2), composition offsets (`ctts`, §8.6.1.3), sync samples (`stss`,
//! §8.6.2; all samples are sync without it), sizes (`stsz`, §8.7.3), chunks (`stsc`, §8.7.4)
//! and chunk offsets (`stco`/`co64`, §8.7.5). Other tracks (subtitles, timecode) and
//! other codecs are skipped. Fragmented files (`moof`) are not read: their `moov` has no
//! samples, and the file is refused as having none.
//!
//! Times become ms (DTS and composition offset, to the nearest from timescale units), each
//! track placed on the movie timeline by its edit list (`elst`, §8.6.6: empty edits delay a
//! track, a media edit starting past 0 skips B-frame delay), so tracks keep their sync; every
//! packet's `bpos` is its byte offset in the file. A file cut short (`moov` first, `mdat`
//! truncated) gives each track's samples up to the first one not wholly in the file. Payloads are copied as they are: H.264
//! and HEVC samples are length-prefixed NAL units, as DTSC keeps them.

use bytes::Bytes;

use crate::mp4::boxes;
use crate::{Codec, Packet, Track, TrackKind};

/// Why an MP4 file could not be read. (A malformed box ends the walk of its parent, as
/// `mp4::boxes` reads: what it hid is missing, which shows as one of these.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mp4ReadError {
    /// No `moov` box.
    #[error("no moov box (not an MP4/MOV file, or a truncated one)")]
    NoMoov,
    /// A sample table that contradicts itself (more samples than sizes, a chunk past the
    /// end of the file).
    #[error("track {track}: {what}")]
    BadTable {
        /// The track id.
        track: u32,
        /// What is wrong.
        what: String,
    },
    /// No track Sluice can carry.
    #[error("no H.264, HEVC, AAC or MP3 track with samples")]
    NoTracks,
}

/// Most samples read from one track (a 24 h 60 fps video has 5.2 M).
const MAX_SAMPLES: usize = 20_000_000;

/// The payload of the first child box `kind` of `parent` (a container's payload).
fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(parent).find(|(f, _)| f == kind).map(|(_, p)| p)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A full box's entries after version/flags and a `u32` count: (count, entries start).
fn table(b: &[u8]) -> Option<(usize, usize)> {
    Some((be32(b, 4)? as usize, 8))
}

/// The first sample entry's codec and init data, and its video size or audio rate/channels.
fn sample_entry(stsd: &[u8]) -> Option<(Codec, Vec<u8>, u32, u32)> {
    // stsd: version/flags, entry count, then entries (boxes).
    let (kind, body) = boxes(stsd.get(8..)?).next()?;
    match &kind {
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" => {
            // VisualSampleEntry (§12.1.3): 6 reserved, 2 data ref, 16 pre-defined/reserved,
            // width, height, then 50 more bytes to the child boxes (78 in all).
            let (w, h) = (u32::from(be16(body, 24)?), u32::from(be16(body, 26)?));
            let (codec, cfg) = if kind.starts_with(b"avc") {
                (Codec::H264, b"avcC")
            } else {
                (Codec::Hevc, b"hvcC")
            };
            let c = child(body.get(78..)?, cfg)?;
            Some((codec, c.to_vec(), w, h))
        }
        b"mp4a" => {
            // AudioSampleEntry (§12.2.3): 6 reserved, 2 data ref, 8 reserved, channels,
            // sample size, 4 pre-defined/reserved, sample rate 16.16 (28 bytes in all).
            // QuickTime (`.mov`) uses the first 2 reserved bytes as a version: version 1
            // adds 16 bytes before the child boxes, version 2 36 (QuickTime File Format,
            // "Sound Sample Description"), and may wrap `esds` in a `wave` box.
            let channels = u32::from(be16(body, 16)?);
            let rate = be32(body, 24)? >> 16;
            let extra = match be16(body, 8)? {
                1 => 16,
                2 => 36,
                _ => 0,
            };
            let kids = body.get(28 + extra..)?;
            let esds = child(kids, b"esds").or_else(|| child(child(kids, b"wave")?, b"esds"))?;
            let (oti, asc) = es_descriptor(esds.get(4..)?)?;
            match oti {
                0x40 | 0x66 | 0x67 | 0x68 => Some((Codec::Aac, asc, rate, channels)),
                0x69 | 0x6B => Some((Codec::Mp3, Vec::new(), rate, channels)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A descriptor's tag, body range (ISO/IEC 14496-1 §8.3.3: sizes in 7-bit groups).
fn descriptor(b: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *b.get(at)?;
    let mut len = 0usize;
    let mut i = at + 1;
    for _ in 0..4 {
        let c = *b.get(i)?;
        i += 1;
        len = (len << 7) | usize::from(c & 0x7f);
        if c & 0x80 == 0 {
            break;
        }
    }
    let end = i.checked_add(len)?;
    (end <= b.len()).then_some((tag, i, end))
}

/// An ES_Descriptor's objectTypeIndication and DecoderSpecificInfo (§7.2.6.5–7.2.6.7).
fn es_descriptor(b: &[u8]) -> Option<(u8, Vec<u8>)> {
    let (tag, start, end) = descriptor(b, 0)?;
    if tag != 3 {
        return None;
    }
    let flags = *b.get(start + 2)?;
    let mut at = start + 3;
    if flags & 0x80 != 0 {
        at += 2;
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*b.get(at)?);
    }
    if flags & 0x20 != 0 {
        at += 2;
    }
    let (tag, dstart, dend) = descriptor(&b[..end], at)?;
    if tag != 4 {
        return None;
    }
    let oti = *b.get(dstart)?;
    let asc = match descriptor(&b[..dend], dstart + 13) {
        Some((5, s, e)) => b[s..e].to_vec(),
        _ => Vec::new(),
    };
    Some((oti, asc))
}

/// `t` timescale units in ms, to the nearest.
fn to_ms(t: u64, timescale: u64) -> u64 {
    (u128::from(t) * 1000 + u128::from(timescale / 2))
        .checked_div(u128::from(timescale))
        .unwrap_or(0) as u64
}

/// Reads a whole MP4/MOV file's tracks and packets (packets in DTS order per track; the
/// caller sorts across tracks). Track ids are renumbered from 1 in file order. Payloads are
/// slices of `file` (no copy).
pub fn read(file: &Bytes) -> Result<(Vec<Track>, Vec<Packet>), Mp4ReadError> {
    // A truncated last box (an unfinished `mdat`) ends the walk; `moov` may be before it.
    let moov = boxes(file)
        .find(|(f, _)| f == b"moov")
        .map(|(_, p)| p)
        .ok_or(Mp4ReadError::NoMoov)?;
    let (tracks, samples) = read_moov(moov, file.len() as u64)?;
    let packets = tracks
        .iter()
        .zip(samples)
        .flat_map(|(t, s)| {
            s.into_iter().map(move |s| Packet {
                track: t.id,
                dts: s.dts,
                offset: s.offset,
                keyframe: s.keyframe,
                bpos: s.pos,
                data: file.slice(s.pos as usize..(s.pos + u64::from(s.size)) as usize),
            })
        })
        .collect();
    Ok((tracks, packets))
}

/// Where one sample of a progressive MP4 is and what it is: its DTS and composition offset
/// in ms, sync flag, and the byte range of its payload in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Decode time, ms (from `stts`, to the nearest ms).
    pub dts: u64,
    /// Composition offset, ms (from `ctts`; signed in version 1).
    pub offset: i64,
    /// A sync sample (`stss`; every audio sample is one).
    pub keyframe: bool,
    /// Byte offset of the payload in the file (`stco`/`co64` + `stsz`).
    pub pos: u64,
    /// Payload length, bytes (`stsz`).
    pub size: u32,
}

/// The tracks and sample tables in a `moov` box's payload, for a file `file_len` bytes long,
/// without reading any payload: `samples[i]` belongs to `tracks[i]`, in decode order. A
/// reader that streams a large file reads each payload at [`Sample::pos`] itself; its memory
/// is the tables', not the file's. Samples not wholly inside `file_len` end their track (a
/// truncated file). Fails as [`read`] does.
pub fn read_moov(
    moov: &[u8],
    file_len: u64,
) -> Result<(Vec<Track>, Vec<Vec<Sample>>), Mp4ReadError> {
    let mut tracks = Vec::new();
    let mut samples: Vec<Vec<Sample>> = Vec::new();
    let mut shifts = Vec::new();
    let movie_timescale = child(moov, b"mvhd").and_then(|m| match m.first() {
        Some(1) => be32(m, 20),
        _ => be32(m, 12),
    });
    for (_, trak) in boxes(moov).filter(|(f, _)| f == b"trak") {
        let id = tracks.len() as u32 + 1;
        if let Some((t, s)) = read_trak(file_len, trak, id)? {
            shifts.push(edit_shift_ms(trak, movie_timescale));
            tracks.push(t);
            samples.push(s);
        }
    }
    if tracks.is_empty() {
        return Err(Mp4ReadError::NoTracks);
    }
    // Tracks keep their places against each other (B-frame video edited to start at its
    // first composition time, audio after an empty edit), moved together so that no DTS is
    // negative.
    let base = shifts.iter().copied().min().unwrap_or(0);
    for (s, shift) in samples.iter_mut().zip(shifts) {
        let add = (shift - base) as u64;
        if add > 0 {
            for x in s.iter_mut() {
                x.dts += add;
            }
        }
    }
    Ok((tracks, samples))
}

/// Where a track's media time 0 sits on the movie timeline, ms, from its edit list (`elst`,
/// ISO/IEC 14496-12 §8.6.6): the empty edits at its start (movie timescale) minus the media
/// time its first media edit starts at (media timescale). 0 without an edit list.
fn edit_shift_ms(trak: &[u8], movie_timescale: Option<u32>) -> i64 {
    let Some(elst) = child(trak, b"edts").and_then(|e| child(e, b"elst")) else {
        return 0;
    };
    let media_timescale = child(trak, b"mdia")
        .and_then(|m| child(m, b"mdhd"))
        .and_then(|m| match m.first() {
            Some(1) => be32(m, 20),
            _ => be32(m, 12),
        })
        .filter(|&t| t > 0);
    let (Some(movie), Some(media)) = (movie_timescale.filter(|&t| t > 0), media_timescale) else {
        return 0;
    };
    let v1 = elst.first() == Some(&1);
    let Some((n, at)) = table(elst) else {
        return 0;
    };
    let mut empty = 0u64;
    for i in 0..n.min(64) {
        let (dur, time) = if v1 {
            let e = at + 20 * i;
            match (be64(elst, e), be64(elst, e + 8)) {
                (Some(d), Some(t)) => (d, t as i64),
                _ => return 0,
            }
        } else {
            let e = at + 12 * i;
            match (be32(elst, e), be32(elst, e + 4)) {
                (Some(d), Some(t)) => (u64::from(d), i64::from(t as i32)),
                _ => return 0,
            }
        };
        if time == -1 {
            empty = empty.saturating_add(dur);
            continue;
        }
        let empty_ms = to_ms(empty, u64::from(movie)) as i64;
        return empty_ms - to_ms(time.max(0) as u64, u64::from(media)) as i64;
    }
    0
}

/// A `trak`'s track (numbered `id`) and media timescale, and its sample table (`stbl`):
/// `None` for tracks Sluice does not carry (other handlers, other codecs).
fn trak_track(trak: &[u8], id: u32) -> Option<(Track, u64, &[u8])> {
    let mdia = child(trak, b"mdia")?;
    let (m, hdlr, minf) = (
        child(mdia, b"mdhd")?,
        child(mdia, b"hdlr")?,
        child(mdia, b"minf")?,
    );
    let timescale = match m.first() {
        Some(1) => be32(m, 20),
        _ => be32(m, 12),
    }
    .filter(|&t| t > 0)
    .map(u64::from)?;
    let kind = match hdlr.get(8..12)? {
        b"vide" => TrackKind::Video,
        b"soun" => TrackKind::Audio,
        _ => return None,
    };
    let stbl = child(minf, b"stbl")?;
    let (codec, init, a, b) = sample_entry(child(stbl, b"stsd")?)?;
    let mut track = Track::new(id, kind, codec);
    track.init = init;
    if kind == TrackKind::Video {
        (track.width, track.height) = (a, b);
    } else {
        (track.rate, track.channels) = (a, b);
        track.bits = 16;
        if track.codec == Codec::Aac {
            if let Ok(asc) = crate::aac::parse_asc(&track.init) {
                track.rate = asc.sample_rate;
                track.channels = u32::from(asc.channels);
            }
        }
    }
    Some((track, timescale, stbl))
}

fn read_trak(
    file_len: u64,
    trak: &[u8],
    id: u32,
) -> Result<Option<(Track, Vec<Sample>)>, Mp4ReadError> {
    let Some((mut track, timescale, stbl)) = trak_track(trak, id) else {
        return Ok(None);
    };
    let kind = track.kind;
    let bad = |what: &str| Mp4ReadError::BadTable {
        track: id,
        what: what.to_string(),
    };
    let get = |k: &[u8; 4]| child(stbl, k);
    // Sizes.
    let stsz = get(b"stsz").ok_or_else(|| bad("no stsz"))?;
    let fixed = be32(stsz, 4).ok_or_else(|| bad("short stsz"))?;
    let count = be32(stsz, 8).ok_or_else(|| bad("short stsz"))? as usize;
    if count > MAX_SAMPLES {
        return Err(bad("too many samples"));
    }
    // No more samples than the file can hold: a size table entry each, or with one fixed
    // size, that many bytes each (the tables below are sized by `count`).
    let count = if fixed == 0 {
        count.min(stsz.len().saturating_sub(12) / 4)
    } else {
        count.min((file_len / u64::from(fixed)) as usize)
    };
    let size_of = |i: usize| -> Option<u32> {
        if fixed != 0 {
            Some(fixed)
        } else {
            be32(stsz, 12 + 4 * i)
        }
    };
    // Chunk offsets.
    let offsets: Vec<u64> = if let Some(stco) = get(b"stco") {
        let (n, at) = table(stco).ok_or_else(|| bad("short stco"))?;
        (0..n.min(MAX_SAMPLES))
            .map(|i| be32(stco, at + 4 * i).map(u64::from))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("short stco"))?
    } else if let Some(co64) = get(b"co64") {
        let (n, at) = table(co64).ok_or_else(|| bad("short co64"))?;
        (0..n.min(MAX_SAMPLES))
            .map(|i| be64(co64, at + 8 * i))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("short co64"))?
    } else {
        return Err(bad("no stco or co64"));
    };
    // Samples per chunk: (first chunk, 1-based; samples per chunk).
    let stsc = get(b"stsc").ok_or_else(|| bad("no stsc"))?;
    let (n, at) = table(stsc).ok_or_else(|| bad("short stsc"))?;
    let runs: Vec<(usize, usize)> = (0..n.min(MAX_SAMPLES))
        .map(|i| {
            Some((
                be32(stsc, at + 12 * i)? as usize,
                be32(stsc, at + 12 * i + 4)? as usize,
            ))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad("short stsc"))?;
    // Decode deltas.
    let stts = get(b"stts").ok_or_else(|| bad("no stts"))?;
    let (n, at) = table(stts).ok_or_else(|| bad("short stts"))?;
    let mut deltas = Vec::with_capacity(count.min(1 << 20));
    for i in 0..n {
        let (c, d) = (
            be32(stts, at + 8 * i).ok_or_else(|| bad("short stts"))?,
            be32(stts, at + 8 * i + 4).ok_or_else(|| bad("short stts"))?,
        );
        for _ in 0..c {
            if deltas.len() >= count {
                break;
            }
            deltas.push(u64::from(d));
        }
    }
    // Composition offsets (version 1: signed).
    let mut comp = vec![0i64; 0];
    if let Some(ctts) = get(b"ctts") {
        let signed = ctts.first() == Some(&1);
        let (n, at) = table(ctts).ok_or_else(|| bad("short ctts"))?;
        for i in 0..n {
            let c = be32(ctts, at + 8 * i).ok_or_else(|| bad("short ctts"))?;
            let raw = be32(ctts, at + 8 * i + 4).ok_or_else(|| bad("short ctts"))?;
            let o = if signed {
                i64::from(raw as i32)
            } else {
                i64::from(raw)
            };
            for _ in 0..c {
                if comp.len() >= count {
                    break;
                }
                comp.push(o);
            }
        }
    }
    // Sync samples (1-based); all when absent.
    let sync: Option<Vec<u32>> = match get(b"stss") {
        Some(stss) => {
            let (n, at) = table(stss).ok_or_else(|| bad("short stss"))?;
            Some(
                (0..n.min(MAX_SAMPLES))
                    .map(|i| be32(stss, at + 4 * i))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("short stss"))?,
            )
        }
        None => None,
    };
    // Walk the chunks.
    let mut packets = Vec::with_capacity(count.min(1 << 20));
    let mut sample = 0usize;
    let mut dts = 0u64;
    let mut next_sync = 0usize;
    'chunks: for (ci, &chunk_off) in offsets.iter().enumerate() {
        let chunk_no = ci + 1;
        let per = runs
            .iter()
            .rev()
            .find(|(first, _)| *first <= chunk_no)
            .map_or(0, |r| r.1);
        let mut off = chunk_off;
        for _ in 0..per {
            if sample >= count {
                break;
            }
            let size = u64::from(size_of(sample).ok_or_else(|| bad("short stsz"))?);
            let Some(end) = off.checked_add(size).filter(|&e| e <= file_len) else {
                // A truncated file (an unfinished download or recording): the track ends
                // at its last whole sample.
                break 'chunks;
            };
            let keyframe = match &sync {
                None => true,
                Some(s) => {
                    while next_sync < s.len() && (s[next_sync] as usize) < sample + 1 {
                        next_sync += 1;
                    }
                    s.get(next_sync) == Some(&(sample as u32 + 1))
                }
            };
            let offset = comp.get(sample).copied().unwrap_or(0);
            packets.push(Sample {
                dts: to_ms(dts, timescale),
                offset: if offset < 0 {
                    -(to_ms(offset.unsigned_abs(), timescale) as i64)
                } else {
                    to_ms(offset as u64, timescale) as i64
                },
                keyframe: keyframe || kind == TrackKind::Audio,
                pos: off,
                size: size as u32,
            });
            dts = dts.saturating_add(deltas.get(sample).copied().unwrap_or(0));
            off = end;
            sample += 1;
        }
    }
    if packets.is_empty() {
        return Ok(None);
    }
    if kind == TrackKind::Video {
        let span = packets.last().map_or(0, |p| p.dts) - packets[0].dts;
        if span > 0 && packets.len() > 1 {
            track.fpks = ((packets.len() as u64 - 1) * 1_000_000 / span) as u32;
        }
    }
    Ok(Some((track, packets)))
}

/// One track of a fragmented MP4 ([`Fragmented`]): its id in the file (`tkhd`), its media
/// timescale, and the defaults of its `trex` (ISO/IEC 14496-12 §8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FragTrack {
    file_id: u32,
    timescale: u64,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

/// A fragmented MP4 being read (CMAF, HLS with `#EXT-X-MAP`, DASH): the tracks of its
/// initialization segment, to read media segments (`moof` + `mdat`, §8.8) against.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragmented {
    /// The tracks Sluice carries, numbered from 1 in `moov` order.
    pub tracks: Vec<Track>,
    frag: Vec<FragTrack>,
}

/// `sample_is_non_sync_sample` in sample flags (§8.8.3.1).
const NON_SYNC: u32 = 0x1_0000;

impl Fragmented {
    /// Reads an initialization segment (`ftyp` + `moov`; §8.8.1 `mvex`/`trex` give the
    /// sample defaults). Errors: no `moov`, or no track Sluice carries.
    pub fn read_init(init: &[u8]) -> Result<Fragmented, Mp4ReadError> {
        let moov = boxes(init)
            .find(|(f, _)| f == b"moov")
            .map(|(_, p)| p)
            .ok_or(Mp4ReadError::NoMoov)?;
        let trex: Vec<(u32, u32, u32, u32)> = child(moov, b"mvex")
            .map(|mvex| {
                boxes(mvex)
                    .filter(|(f, _)| f == b"trex")
                    .filter_map(|(_, t)| {
                        Some((be32(t, 4)?, be32(t, 12)?, be32(t, 16)?, be32(t, 20)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut tracks = Vec::new();
        let mut frag = Vec::new();
        for (_, trak) in boxes(moov).filter(|(f, _)| f == b"trak") {
            let Some((track, timescale, _)) = trak_track(trak, tracks.len() as u32 + 1) else {
                continue;
            };
            // tkhd: version 1 has 64-bit times, so the track id is at 20 instead of 12.
            let Some(file_id) = child(trak, b"tkhd").and_then(|t| match t.first() {
                Some(1) => be32(t, 20),
                _ => be32(t, 12),
            }) else {
                continue;
            };
            let d = trex.iter().find(|t| t.0 == file_id).copied();
            let (default_duration, default_size, default_flags) =
                d.map_or((0, 0, 0), |t| (t.1, t.2, t.3));
            tracks.push(track);
            frag.push(FragTrack {
                file_id,
                timescale,
                default_duration,
                default_size,
                default_flags,
            });
        }
        if tracks.is_empty() {
            return Err(Mp4ReadError::NoTracks);
        }
        Ok(Fragmented { tracks, frag })
    }

    /// Reads a media segment: every `moof` and the samples its `traf`s describe (`tfhd`
    /// §8.8.7, `tfdt` §8.8.12, `trun` §8.8.8), appended to `out` in DTS order. Data offsets
    /// count from the `moof`'s first byte (CMAF's `default-base-is-moof`, and the default
    /// for a first `traf` without a base data offset); an explicit base data offset counts
    /// from the segment's first byte. DTS is the `tfdt` time plus the durations before the
    /// sample, in ms to the nearest; tracks of other ids are skipped. A sample past the end
    /// of the segment is an error, as is a `traf` without `tfdt` (its time is unknown).
    pub fn read_segment(&self, seg: &Bytes, out: &mut Vec<Packet>) -> Result<(), Mp4ReadError> {
        let start = out.len();
        let mut top = boxes(seg);
        loop {
            let moof_start = seg.len() - top.rest().len();
            let Some((kind, payload)) = top.next() else {
                break;
            };
            if &kind != b"moof" {
                continue;
            }
            for (_, traf) in boxes(payload).filter(|(f, _)| f == b"traf") {
                self.read_traf(seg, moof_start, traf, out)?;
            }
        }
        out[start..].sort_by_key(|p| p.dts);
        Ok(())
    }

    fn read_traf(
        &self,
        seg: &Bytes,
        moof_start: usize,
        traf: &[u8],
        out: &mut Vec<Packet>,
    ) -> Result<(), Mp4ReadError> {
        let Some(tfhd) = child(traf, b"tfhd") else {
            return Ok(());
        };
        let flags = be32(tfhd, 0).unwrap_or(0) & 0xFF_FFFF;
        let file_id = be32(tfhd, 4).unwrap_or(0);
        let Some(i) = self.frag.iter().position(|f| f.file_id == file_id) else {
            return Ok(());
        };
        let (ft, track) = (&self.frag[i], &self.tracks[i]);
        let bad = |what: &str| Mp4ReadError::BadTable {
            track: track.id,
            what: what.to_string(),
        };
        // tfhd's optional fields, in order.
        let mut f = 8;
        let mut field = |present: bool, len: usize| -> Option<u64> {
            if !present {
                return None;
            }
            let v = if len == 8 {
                be64(tfhd, f)
            } else {
                be32(tfhd, f).map(u64::from)
            };
            f += len;
            v
        };
        let base = field(flags & 0x1 != 0, 8);
        let _desc = field(flags & 0x2 != 0, 4);
        let duration = field(flags & 0x8 != 0, 4).map_or(ft.default_duration, |v| v as u32);
        let size = field(flags & 0x10 != 0, 4).map_or(ft.default_size, |v| v as u32);
        let sflags = field(flags & 0x20 != 0, 4).map_or(ft.default_flags, |v| v as u32);
        let base = base.map_or(moof_start as u64, |b| b);
        let tfdt = child(traf, b"tfdt").ok_or_else(|| bad("a traf without tfdt"))?;
        let mut time = match tfdt.first() {
            Some(1) => be64(tfdt, 4),
            _ => be32(tfdt, 4).map(u64::from),
        }
        .ok_or_else(|| bad("short tfdt"))?;
        let mut next_data = base;
        for (_, trun) in boxes(traf).filter(|(f, _)| f == b"trun") {
            let version = trun.first().copied().unwrap_or(0);
            let tflags = be32(trun, 0).ok_or_else(|| bad("short trun"))? & 0xFF_FFFF;
            let count = be32(trun, 4).ok_or_else(|| bad("short trun"))? as usize;
            if count > MAX_SAMPLES {
                return Err(bad("too many samples"));
            }
            let mut r = 8;
            let mut data = next_data;
            if tflags & 0x1 != 0 {
                let off = be32(trun, r).ok_or_else(|| bad("short trun"))? as i32;
                data = base
                    .checked_add_signed(i64::from(off))
                    .ok_or_else(|| bad("bad data offset"))?;
                r += 4;
            }
            let mut first_flags = None;
            if tflags & 0x4 != 0 {
                first_flags = Some(be32(trun, r).ok_or_else(|| bad("short trun"))?);
                r += 4;
            }
            for n in 0..count {
                let mut get = |present: bool| -> Result<Option<u32>, Mp4ReadError> {
                    if !present {
                        return Ok(None);
                    }
                    let v = be32(trun, r).ok_or_else(|| bad("short trun"))?;
                    r += 4;
                    Ok(Some(v))
                };
                let d = get(tflags & 0x100 != 0)?.unwrap_or(duration);
                let sz = get(tflags & 0x200 != 0)?.unwrap_or(size);
                let fl = get(tflags & 0x400 != 0)?;
                let cto = get(tflags & 0x800 != 0)?.unwrap_or(0);
                let fl = fl
                    .or(if n == 0 { first_flags } else { None })
                    .unwrap_or(sflags);
                let cto = if version == 0 {
                    i64::from(cto)
                } else {
                    i64::from(cto as i32)
                };
                let end = data
                    .checked_add(u64::from(sz))
                    .filter(|&e| e <= seg.len() as u64)
                    .ok_or_else(|| bad("a sample past the end of the segment"))?;
                let ts = ft.timescale;
                if sz == 0 {
                    // An empty sample carries nothing; kept out, so that a few bytes of
                    // `trun` cannot ask for millions of packets.
                    time = time.saturating_add(u64::from(d));
                    continue;
                }
                out.push(Packet {
                    track: track.id,
                    dts: to_ms(time, ts),
                    offset: if cto < 0 {
                        -(to_ms(cto.unsigned_abs(), ts) as i64)
                    } else {
                        to_ms(cto as u64, ts) as i64
                    },
                    keyframe: fl & NON_SYNC == 0 || track.kind == TrackKind::Audio,
                    bpos: 0,
                    data: seg.slice(data as usize..end as usize),
                });
                time = time.saturating_add(u64::from(d));
                data = end;
            }
            next_data = data;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketRef;

    fn tracks() -> Vec<Track> {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut avcc = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        avcc.extend_from_slice(&sps);
        avcc.extend_from_slice(&[1, 0, pps.len() as u8]);
        avcc.extend_from_slice(&pps);
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        (v.init, v.width, v.height, v.fpks) = (avcc, 640, 360, 25_000);
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        (a.init, a.rate, a.channels, a.bits) = (vec![0x12, 0x10], 44_100, 2, 16);
        vec![v, a]
    }

    /// Per track, `got` has the packets of `want` (times, offsets, keyframes, payloads).
    fn assert_same_packets(want: &[PacketRef], got: &[Packet]) {
        for id in [1, 2] {
            let w: Vec<_> = want
                .iter()
                .filter(|p| p.track == id)
                .map(|p| (p.dts, p.offset, p.keyframe, p.data.to_vec()))
                .collect();
            let g: Vec<_> = got
                .iter()
                .filter(|p| p.track == id)
                .map(|p| (p.dts, p.offset, p.keyframe, p.data.to_vec()))
                .collect();
            assert_eq!(g, w, "track {id}");
        }
    }

    #[test]
    fn a_file_we_write_reads_back_with_every_sample() {
        let frames: Vec<Vec<u8>> = (0..6u8).map(|i| vec![0, 0, 0, 2, 0x65, i]).collect();
        let mut pkts = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            pkts.push(PacketRef {
                track: 1,
                dts: 40 * i as u64,
                offset: [80, 0, 40, 80, 0, 40][i],
                keyframe: i == 0 || i == 3,
                bpos: 0,
                data: f,
            });
            pkts.push(PacketRef {
                track: 2,
                dts: 23 * i as u64,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: &f[4..],
            });
        }
        pkts.sort_by_key(|p| p.dts);
        let mut file = Vec::new();
        crate::mp4::write_progressive(&tracks(), &pkts, &mut file).unwrap();
        let (got_tracks, got) = read(&Bytes::from(file)).unwrap();
        assert_eq!(got_tracks.len(), 2);
        assert_eq!((got_tracks[0].width, got_tracks[0].height), (640, 360));
        assert_eq!(got_tracks[0].init, tracks()[0].init);
        assert_eq!((got_tracks[1].rate, got_tracks[1].channels), (44_100, 2));
        assert_same_packets(&pkts, &got);
        assert!(got.iter().all(|p| p.bpos > 0));
    }

    #[test]
    fn tracks_keep_their_places_through_the_edit_lists() {
        // B-frame video presented from 80 ms, audio from 57 ms (an FLV's timing): written
        // with an empty edit before the video, read back at the same DTS values.
        let frame = [0u8, 0, 0, 2, 0x65, 1];
        let mut pkts = Vec::new();
        for i in 0..4u64 {
            pkts.push(PacketRef {
                track: 1,
                dts: 40 * i,
                offset: [80, 120, 40, 40][i as usize],
                keyframe: i == 0,
                bpos: 0,
                data: &frame,
            });
            pkts.push(PacketRef {
                track: 2,
                dts: 57 + 23 * i,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: &frame[4..],
            });
        }
        let mut file = Vec::new();
        crate::mp4::write_progressive(&tracks(), &pkts, &mut file).unwrap();
        let (_, got) = read(&Bytes::from(file)).unwrap();
        assert_same_packets(&pkts, &got);
    }

    #[test]
    fn a_head_aligned_with_a_free_box_reads_the_same() {
        let frame = [0u8, 0, 0, 2, 0x65, 1];
        let pkts: Vec<PacketRef> = (0..30u64)
            .map(|i| PacketRef {
                track: 1 + (i % 2) as u32,
                dts: 20 * i,
                offset: 0,
                // Every audio sample is a sync sample in MP4.
                keyframe: i == 0 || i % 2 == 1,
                bpos: 0,
                data: &frame[..4 + (i % 3) as usize],
            })
            .collect();
        let mut index = crate::mp4::ProgressiveIndex::new(&tracks()).unwrap();
        for p in &pkts {
            index
                .add(p.track, p.dts, p.offset, p.keyframe, p.data.len())
                .unwrap();
        }
        for align in [1u64, 512, 4096] {
            let mut file = Vec::new();
            index.write_head_aligned(align, &mut file).unwrap();
            assert_eq!(file.len() as u64 % align, 0, "head of {} bytes", file.len());
            for p in &pkts {
                file.extend_from_slice(p.data);
            }
            let (_, got) = read(&Bytes::from(file)).unwrap();
            assert_same_packets(&pkts, &got);
        }
    }

    #[test]
    fn fragments_we_write_read_back_with_every_sample() {
        let frames: Vec<Vec<u8>> = (0..8u8).map(|i| vec![0, 0, 0, 2, 0x65, i]).collect();
        let mut pkts = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            pkts.push(PacketRef {
                track: 1,
                dts: 1000 + 40 * i as u64,
                offset: [80, 0, 40, 80, 0, 40, 80, 0][i],
                keyframe: i % 4 == 0,
                bpos: 0,
                data: f,
            });
            pkts.push(PacketRef {
                track: 2,
                dts: 1000 + 23 * i as u64,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: &f[4..],
            });
        }
        pkts.sort_by_key(|p| p.dts);
        let mut init = Vec::new();
        crate::mp4::write_init(&tracks(), &mut init).unwrap();
        let reader = Fragmented::read_init(&init).unwrap();
        assert_eq!(reader.tracks.len(), 2);
        assert_eq!(reader.tracks[0].init, tracks()[0].init);
        assert_eq!(
            (reader.tracks[1].rate, reader.tracks[1].channels),
            (44_100, 2)
        );
        // Two fragments in one segment, as a CMAF segment with two chunks.
        let mut seg = Vec::new();
        for (n, half) in pkts.chunks(pkts.len() / 2).enumerate() {
            let mut b = crate::mp4::FragmentBuilder::new(&tracks()).unwrap();
            for p in half {
                b.add(p).unwrap();
            }
            b.finish(n as u32 + 1, &mut seg).unwrap();
        }
        let mut got = Vec::new();
        reader
            .read_segment(&Bytes::from(seg.clone()), &mut got)
            .unwrap();
        assert!(got.windows(2).all(|w| w[0].dts <= w[1].dts));
        assert_same_packets(&pkts, &got);
        // A segment cut short: the sample past its end is an error, not a panic.
        let cut = Bytes::from(seg[..seg.len() - 3].to_vec());
        assert!(matches!(
            reader.read_segment(&cut, &mut Vec::new()),
            Err(Mp4ReadError::BadTable { .. })
        ));
    }

    #[test]
    fn not_an_mp4_is_an_error() {
        assert_eq!(
            read(&Bytes::from_static(b"<html>not a movie</html>")),
            Err(Mp4ReadError::NoMoov)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(0u8..=255, 0..600)) {
            let _ = read(&Bytes::from(data.clone()));
            let _ = Fragmented::read_init(&data);
        }

        #[test]
        fn any_segment_never_panics(data in proptest::collection::vec(0u8..=255, 0..600)) {
            let mut init = Vec::new();
            crate::mp4::write_init(&tracks(), &mut init).unwrap();
            let reader = Fragmented::read_init(&init).unwrap();
            let _ = reader.read_segment(&Bytes::from(data), &mut Vec::new());
        }
    }
}
