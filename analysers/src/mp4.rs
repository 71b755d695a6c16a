//! `mp4`: an ISO base media file (ISO/IEC 14496-12): the box tree (§4.2), each track's
//! sample tables (§8.6, §8.7) summed up, the movie fragments (§8.8: `moof`, `traf`, `trun`
//! sample counts, `tfdt`), and the samples as `dtsc::mp4demux` reads them (ms times).
//!
//! Boxes are split by `dtsc::mp4::boxes` and `full_box`; the few table fields summed here
//! are read directly (entry counts and totals, which the demuxer does not keep).
//!
//! Rules checked:
//! * §4.2: every box fits its parent (a box whose size runs past its parent's end, or is
//!   below its header's size, is reported at its offset).
//! * §8.6.1.2 `stts`, §8.6.1.3 `ctts`, §8.7.4 `stsc`: they describe as many samples as
//!   `stsz` (§8.7.3) holds.
//! * §8.6.2 `stss`: sample numbers within 1..=sample_count and increasing.
//! * §8.7.5 `stco`/`co64`: chunk offsets lie inside the file.

use bytes::Bytes;
use dtsc::mp4::{boxes, find_box, full_box};
use serde::Serialize;

use crate::report::{AccessUnit, ReadError, TrackInfo, Violation};

/// One box of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoxInfo {
    /// Byte offset of the box header in the file.
    pub offset: u64,
    /// Nesting depth (0 at the top level).
    pub depth: u8,
    /// The box type (FourCC).
    #[serde(rename = "type")]
    pub kind: String,
    /// Box size in bytes, header included.
    pub size: u64,
}

/// A track's sample tables (§8.6, §8.7) summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SampleTables {
    /// `tkhd` track_ID.
    pub track_id: u32,
    /// `hdlr` handler_type (`vide`, `soun`…).
    pub handler: String,
    /// The first `stsd` sample entry's type (`avc1`, `hvc1`, `mp4a`…).
    pub sample_entry: String,
    /// `mdhd` timescale, units per second.
    pub timescale: u32,
    /// `mdhd` duration, timescale units.
    pub duration: u64,
    /// `mdhd` duration in ms.
    pub duration_ms: u64,
    /// `stsz` sample_count.
    pub samples: u64,
    /// Sync samples: `stss` entries, or every sample when there is no `stss` (§8.6.2).
    pub keyframes: u64,
    /// Samples `stts` describes, and their summed deltas (timescale units).
    pub stts_samples: u64,
    /// Sum of `stts` deltas, timescale units.
    pub stts_duration: u64,
    /// Samples `ctts` describes (absent: no `ctts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctts_samples: Option<u64>,
    /// Chunks (`stco`/`co64` entries).
    pub chunks: u64,
}

/// One track fragment of a `moof` (§8.8.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackFragment {
    /// `tfhd` track_ID.
    pub track_id: u32,
    /// `tfdt` baseMediaDecodeTime, timescale units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_media_decode_time: Option<u64>,
    /// Samples of its `trun`s.
    pub samples: u64,
}

/// One movie fragment (§8.8.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fragment {
    /// Byte offset of the `moof`.
    pub offset: u64,
    /// `mfhd` sequence_number.
    pub sequence_number: u32,
    /// Its track fragments.
    pub trafs: Vec<TrackFragment>,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Mp4Report {
    /// `ftyp` major brand.
    pub major_brand: Option<String>,
    /// True when `moov` comes before the first `mdat`.
    pub moov_first: bool,
    /// True when the file has movie fragments.
    pub fragmented: bool,
    /// The box tree (down to the depth the detail level asks).
    pub boxes: Vec<BoxInfo>,
    /// Each track's sample tables.
    pub sample_tables: Vec<SampleTables>,
    /// The movie fragments.
    pub fragments: Vec<Fragment>,
    /// The tracks `dtsc::mp4demux` reads.
    pub tracks: Vec<TrackInfo>,
    /// The samples as `dtsc::mp4demux` reads them, in file track order then DTS order.
    pub access_units: Vec<AccessUnit>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

const RULE_BOX: &str = "ISO/IEC 14496-12 §4.2 box size (a box fits its parent)";
const RULE_STTS: &str = "ISO/IEC 14496-12 §8.6.1.2 stts (as many samples as stsz)";
const RULE_CTTS: &str = "ISO/IEC 14496-12 §8.6.1.3 ctts (as many samples as stsz)";
const RULE_STSS: &str = "ISO/IEC 14496-12 §8.6.2 stss (sample numbers in range, increasing)";
const RULE_STSC: &str = "ISO/IEC 14496-12 §8.7.4 stsc (chunks hold as many samples as stsz)";
const RULE_STCO: &str = "ISO/IEC 14496-12 §8.7.5 stco (chunk offsets inside the file)";

/// Box types that hold only boxes.
const CONTAINERS: &[&[u8; 4]] = &[
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"edts", b"dinf",
    b"udta", b"mfra", b"sinf", b"schi", b"mvex", b"tref",
];

/// How many bytes of a box's payload come before its child boxes, for the boxes with
/// children after fields: `stsd` (full box + entry_count), `meta` (full box), visual and
/// audio sample entries (§8.5.2, §12.1.3, §12.2.3).
fn children_at(kind: &[u8; 4]) -> Option<usize> {
    if CONTAINERS.contains(&kind) {
        return Some(0);
    }
    match kind {
        b"stsd" => Some(8),
        b"meta" => Some(4),
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"encv" | b"av01" | b"vp09" => Some(78),
        b"mp4a" | b"enca" | b"ac-3" | b"ec-3" | b"Opus" | b"fLaC" => Some(28),
        _ => None,
    }
}

fn fourcc(f: &[u8; 4]) -> String {
    f.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Deepest box nesting walked (real files nest under 10 levels).
const MAX_DEPTH: u8 = 32;

/// Walks the boxes in `buf` (which starts at file offset `base`), recording those at depth
/// ≤ `max_depth` and checking that each fits. Returns the offset of bytes left over (a box
/// that did not fit), if any.
fn walk(buf: &[u8], base: u64, depth: u8, max_depth: u8, r: &mut Mp4Report) -> Option<u64> {
    let mut it = boxes(buf);
    loop {
        let before = it.rest().len();
        let Some((kind, payload)) = it.next() else {
            break;
        };
        let offset = base + (buf.len() - before) as u64;
        let size = (before - it.rest().len()) as u64;
        if depth <= max_depth {
            r.boxes.push(BoxInfo {
                offset,
                depth,
                kind: fourcc(&kind),
                size,
            });
        }
        if let Some(skip) = children_at(&kind) {
            if depth >= MAX_DEPTH {
                // Size-0 boxes nest one level per 8 bytes: a small hostile file would
                // otherwise recurse until the stack runs out.
                r.violations.push(Violation::at(
                    RULE_BOX,
                    offset,
                    format!("boxes nested deeper than {MAX_DEPTH} levels; not read further"),
                ));
            } else if payload.len() >= skip {
                let child_base = offset + (size - payload.len() as u64) + skip as u64;
                if let Some(bad) = walk(&payload[skip..], child_base, depth + 1, max_depth, r) {
                    r.violations.push(Violation::at(
                        RULE_BOX,
                        bad,
                        format!(
                            "a box inside {} (at {offset}) runs past its end",
                            fourcc(&kind)
                        ),
                    ));
                }
            }
        }
    }
    let rest = it.rest();
    (!rest.is_empty()).then(|| base + (buf.len() - rest.len()) as u64)
}

/// The payload of the first `kind` box at the top level of `buf`.
fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    find_box(buf, &[kind])
}

/// The entries of a sample table box (`stts`, `ctts`, `stss`, `stco`, `co64`, `stsc`;
/// ISO/IEC 14496-12 §8.6, §8.7) from its body after the full box header: the 32-bit
/// `entry_count`, then entries of `width` bytes, as many of them as are present.
fn table(b: &[u8], width: usize) -> impl Iterator<Item = &[u8]> {
    let n = be32(b, 0).unwrap_or(0) as usize;
    b.get(4..).unwrap_or(&[]).chunks_exact(width).take(n)
}

/// Sums up one `trak` and checks its tables against each other.
fn sample_tables(trak: &[u8], file_len: u64, r: &mut Mp4Report) -> SampleTables {
    let mut t = SampleTables::default();
    if let Some((v, _, b)) = child(trak, b"tkhd").and_then(full_box) {
        t.track_id = be32(b, if v == 1 { 16 } else { 8 }).unwrap_or(0);
    }
    let Some(mdia) = child(trak, b"mdia") else {
        return t;
    };
    if let Some((v, _, b)) = child(mdia, b"mdhd").and_then(full_box) {
        if v == 1 {
            t.timescale = be32(b, 16).unwrap_or(0);
            t.duration = be64(b, 20).unwrap_or(0);
        } else {
            t.timescale = be32(b, 8).unwrap_or(0);
            t.duration = u64::from(be32(b, 12).unwrap_or(0));
        }
        if t.timescale > 0 {
            t.duration_ms = (u128::from(t.duration) * 1000 / u128::from(t.timescale)) as u64;
        }
    }
    if let Some((_, _, b)) = child(mdia, b"hdlr").and_then(full_box) {
        if let Some(h) = b.get(4..8) {
            t.handler = fourcc(h.try_into().unwrap_or(b"????"));
        }
    }
    let Some(stbl) = child(mdia, b"minf").and_then(|m| child(m, b"stbl")) else {
        return t;
    };
    let id = t.track_id;
    if let Some((_, _, b)) = child(stbl, b"stsd").and_then(full_box) {
        if let Some((k, _)) = b.get(4..).and_then(|e| boxes(e).next()) {
            t.sample_entry = fourcc(&k);
        }
    }
    if let Some((_, _, b)) = child(stbl, b"stsz")
        .or_else(|| child(stbl, b"stz2"))
        .and_then(full_box)
    {
        t.samples = u64::from(be32(b, 4).unwrap_or(0));
    }
    if let Some((_, _, b)) = child(stbl, b"stts").and_then(full_box) {
        for e in table(b, 8) {
            let count = u64::from(be32(e, 0).unwrap_or(0));
            t.stts_samples = t.stts_samples.saturating_add(count);
            t.stts_duration = t
                .stts_duration
                .saturating_add(count * u64::from(be32(e, 4).unwrap_or(0)));
        }
    }
    if t.stts_samples != t.samples {
        r.violations.push(Violation::new(
            RULE_STTS,
            format!(
                "track {id}: stts describes {} samples, stsz holds {}",
                t.stts_samples, t.samples
            ),
        ));
    }
    if let Some((_, _, b)) = child(stbl, b"ctts").and_then(full_box) {
        let total: u64 = table(b, 8)
            .map(|e| u64::from(be32(e, 0).unwrap_or(0)))
            .sum();
        t.ctts_samples = Some(total);
        if total != t.samples {
            r.violations.push(Violation::new(
                RULE_CTTS,
                format!(
                    "track {id}: ctts describes {total} samples, stsz holds {}",
                    t.samples
                ),
            ));
        }
    }
    match child(stbl, b"stss").and_then(full_box) {
        Some((_, _, b)) => {
            let mut last = 0u32;
            for e in table(b, 4) {
                let s = be32(e, 0).unwrap_or(0);
                if s <= last || u64::from(s) > t.samples {
                    r.violations.push(Violation::new(
                        RULE_STSS,
                        format!(
                            "track {id}: sync sample {s} after {last} of {} samples",
                            t.samples
                        ),
                    ));
                }
                last = s;
                t.keyframes += 1;
            }
        }
        None => t.keyframes = t.samples,
    }
    let mut offsets: Vec<u64> = Vec::new();
    if let Some((_, _, b)) = child(stbl, b"stco").and_then(full_box) {
        offsets = table(b, 4)
            .map(|e| u64::from(be32(e, 0).unwrap_or(0)))
            .collect();
    } else if let Some((_, _, b)) = child(stbl, b"co64").and_then(full_box) {
        offsets = table(b, 8).map(|e| be64(e, 0).unwrap_or(0)).collect();
    }
    t.chunks = offsets.len() as u64;
    if let Some(o) = offsets.iter().find(|&&o| o >= file_len) {
        r.violations.push(Violation::new(
            RULE_STCO,
            format!("track {id}: chunk offset {o} is past the end of the file ({file_len} bytes)"),
        ));
    }
    if let Some((_, _, b)) = child(stbl, b"stsc").and_then(full_box) {
        let entries: Vec<(u64, u64)> = table(b, 12)
            .map(|e| {
                (
                    u64::from(be32(e, 0).unwrap_or(0)),
                    u64::from(be32(e, 4).unwrap_or(0)),
                )
            })
            .collect();
        let mut total = 0u64;
        for (i, (first, per)) in entries.iter().enumerate() {
            let end = entries.get(i + 1).map_or(t.chunks + 1, |e| e.0);
            total = total.saturating_add(end.saturating_sub(*first).saturating_mul(*per));
        }
        if total != t.samples {
            r.violations.push(Violation::new(
                RULE_STSC,
                format!(
                    "track {id}: stsc puts {total} samples in {} chunks, stsz holds {}",
                    t.chunks, t.samples
                ),
            ));
        }
    }
    t
}

fn fragment(moof: &[u8], offset: u64) -> Fragment {
    let sequence_number = child(moof, b"mfhd")
        .and_then(full_box)
        .and_then(|(_, _, b)| be32(b, 0))
        .unwrap_or(0);
    let trafs = boxes(moof)
        .filter(|(k, _)| k == b"traf")
        .map(|(_, traf)| TrackFragment {
            track_id: child(traf, b"tfhd")
                .and_then(full_box)
                .and_then(|(_, _, b)| be32(b, 0))
                .unwrap_or(0),
            base_media_decode_time: child(traf, b"tfdt").and_then(full_box).and_then(
                |(v, _, b)| {
                    if v == 1 {
                        be64(b, 0)
                    } else {
                        be32(b, 0).map(u64::from)
                    }
                },
            ),
            samples: boxes(traf)
                .filter(|(k, _)| k == b"trun")
                .filter_map(|(_, t)| full_box(t).and_then(|(_, _, b)| be32(b, 0)))
                .map(u64::from)
                .sum(),
        })
        .collect();
    Fragment {
        offset,
        sequence_number,
        trafs,
    }
}

/// Reads a whole MP4 file (or as much as there is). The box tree lists boxes down to depth
/// `max_depth` (0: the top level). Never panics.
pub fn analyse(buf: &[u8], max_depth: u8) -> Mp4Report {
    let mut r = Mp4Report::default();
    if let Some(bad) = walk(buf, 0, 0, max_depth, &mut r) {
        let rest = &buf[bad as usize..];
        let msg = match rest.get(0..8) {
            Some(h) => {
                let size = u64::from(be32(h, 0).unwrap_or(0));
                format!(
                    "box {} of {size} bytes: {} bytes present",
                    fourcc(h[4..8].try_into().unwrap_or(b"????")),
                    rest.len()
                )
            }
            None => format!(
                "truncated box header: 8 bytes needed, {} present",
                rest.len()
            ),
        };
        r.error = Some(ReadError::at(bad, msg));
    }
    let mut offset = 0u64;
    let mut seen_mdat = false;
    let mut it = boxes(buf);
    loop {
        let before = it.rest().len();
        let Some((kind, payload)) = it.next() else {
            break;
        };
        match &kind {
            b"ftyp" => {
                r.major_brand = payload
                    .get(0..4)
                    .map(|b| fourcc(b.try_into().unwrap_or(b"????")))
            }
            b"mdat" => seen_mdat = true,
            b"moov" => {
                r.moov_first = !seen_mdat;
                for (_, trak) in boxes(payload).filter(|(k, _)| k == b"trak") {
                    let t = sample_tables(trak, buf.len() as u64, &mut r);
                    r.sample_tables.push(t);
                }
            }
            b"moof" => {
                r.fragmented = true;
                r.fragments.push(fragment(payload, offset));
            }
            _ => {}
        }
        offset += (before - it.rest().len()) as u64;
    }
    // The samples, through the reader Sluice's file inputs use.
    let file = Bytes::copy_from_slice(buf);
    if r.fragmented {
        match dtsc::mp4demux::Fragmented::read_init(&file) {
            Ok(init) => {
                let mut out = Vec::new();
                let res = init.read_segment(&file, &mut out);
                r.tracks = init.tracks.iter().map(TrackInfo::from).collect();
                r.access_units = out
                    .iter()
                    .map(|p| AccessUnit::of(&p.as_ref(), false))
                    .collect();
                if let Err(e) = res {
                    r.error
                        .get_or_insert(ReadError::at(0, format!("fragments: {e}")));
                }
            }
            Err(e) => {
                r.error
                    .get_or_insert(ReadError::at(0, format!("init segment: {e}")));
            }
        }
    } else if r.sample_tables.iter().any(|t| t.samples > 0) {
        match dtsc::mp4demux::read(&file) {
            Ok((tracks, packets)) => {
                r.tracks = tracks.iter().map(TrackInfo::from).collect();
                r.access_units = packets
                    .iter()
                    .map(|p| AccessUnit::of(&p.as_ref(), true))
                    .collect();
            }
            Err(e) => {
                r.error
                    .get_or_insert(ReadError::at(0, format!("samples: {e}")));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(body);
        bx(kind, &p)
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    #[test]
    fn boxes_nested_without_end_stop_at_a_depth_limit() {
        // Size-0 `moov` boxes, each running to its parent's end: 100 000 levels in 800 KB.
        let f: Vec<u8> = (0..100_000).flat_map(|_| *b"\0\0\0\0moov").collect();
        let r = analyse(&f, 10);
        assert!(r
            .violations
            .iter()
            .any(|v| v.message.contains("nested deeper")));
    }

    /// A `moov` with one track of `samples` samples whose stts says `stts_count`.
    fn file(samples: u32, stts_count: u32) -> Vec<u8> {
        let mut stbl = full(b"stsd", &words(&[0]));
        stbl.extend(full(b"stts", &words(&[1, stts_count, 512])));
        stbl.extend(full(b"stss", &words(&[1, 1])));
        stbl.extend(full(b"stsc", &words(&[1, 1, samples, 1])));
        stbl.extend(full(b"stsz", &words(&[100, samples])));
        stbl.extend(full(b"stco", &words(&[1, 40])));
        let minf = bx(b"minf", &bx(b"stbl", &stbl));
        let mut mdia = full(b"mdhd", &words(&[0, 0, 12800, 25600, 0]));
        mdia.extend(full(
            b"hdlr",
            &words(&[0, u32::from_be_bytes(*b"vide"), 0, 0, 0]),
        ));
        mdia.extend(minf);
        let mut trak = full(b"tkhd", &words(&[0, 0, 7, 0, 0]));
        trak.extend(bx(b"mdia", &mdia));
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend(bx(b"moov", &bx(b"trak", &trak)));
        f.extend(bx(b"mdat", &[0; 300]));
        f
    }

    #[test]
    fn box_tree_and_sample_tables() {
        let r = analyse(&file(3, 3), 10);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.major_brand.as_deref(), Some("isom"));
        assert!(r.moov_first && !r.fragmented);
        let kinds: Vec<(&str, u8)> = r.boxes.iter().map(|b| (b.kind.as_str(), b.depth)).collect();
        assert!(
            kinds.starts_with(&[
                ("ftyp", 0),
                ("moov", 0),
                ("trak", 1),
                ("tkhd", 2),
                ("mdia", 2)
            ]),
            "{kinds:?}"
        );
        assert_eq!(r.boxes[0].size, 16);
        assert_eq!(r.boxes[1].offset, 16);
        let t = &r.sample_tables[0];
        assert_eq!((t.track_id, t.timescale, t.duration_ms), (7, 12800, 2000));
        assert_eq!(
            (t.handler.as_str(), t.samples, t.keyframes, t.stts_duration),
            ("vide", 3, 1, 1536)
        );
        assert_eq!(analyse(&file(3, 3), 0).boxes.len(), 3);
    }

    #[test]
    fn flags_inconsistent_tables_and_truncation() {
        let r = analyse(&file(3, 2), 10);
        assert!(
            r.violations.iter().any(|v| v.rule == RULE_STTS),
            "{:?}",
            r.violations
        );
        let f = file(3, 3);
        let cut = &f[..f.len() - 10];
        let r = analyse(cut, 10);
        let e = r.error.unwrap();
        assert_eq!(e.offset as usize, f.len() - 308);
        assert!(e.message.contains("mdat"), "{}", e.message);
        // A child box longer than its parent.
        let mut bad = bx(b"moov", &bx(b"trak", &[0; 8]));
        bad[8 + 3] = 40;
        let r = analyse(&bad, 10);
        assert!(
            r.violations
                .iter()
                .any(|v| v.rule == RULE_BOX && v.offset == Some(8)),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn fragments() {
        let mut traf = full(b"tfhd", &words(&[1]));
        traf.extend(vec![
            0, 0, 0, 20, b't', b'f', b'd', b't', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0,
        ]);
        traf.extend(full(b"trun", &words(&[5, 0])));
        let mut moof = full(b"mfhd", &words(&[9]));
        moof.extend(bx(b"traf", &traf));
        let f = bx(b"moof", &moof);
        let r = analyse(&f, 10);
        assert!(r.fragmented);
        assert_eq!(r.fragments[0].sequence_number, 9);
        assert_eq!(
            r.fragments[0].trafs[0],
            TrackFragment {
                track_id: 1,
                base_media_decode_time: Some(4096),
                samples: 5
            }
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = analyse(&data, 10);
            let mut f = file(3, 3);
            let n = data.len().min(f.len());
            for (i, b) in data.iter().take(n).enumerate() {
                if i % 7 == 0 { let at = (*b as usize * 3) % f.len(); f[at] = *b; }
            }
            let _ = analyse(&f, 10);
        }
    }
}
