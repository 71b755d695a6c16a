//! Adobe HTTP Dynamic Streaming (HDS): the F4M manifest (Adobe "Flash Media Manifest File
//! Format Specification", namespace `http://ns.adobe.com/f4m/1.0`), the bootstrap info box
//! `abst` with its segment run table `asrt` and fragment run table `afrt` (Adobe "F4V/F4F
//! File Format Specification" 10.1, §2.11.2), the fragment random access box `afra` (same
//! spec, the Fragment Random Access box), and the `Seg<N>-Frag<M>` fragment URL.
//! Sans-IO: text and bytes out, times given by the caller.
//!
//! How a client finds fragments (yt-dlp, the one HDS client the tests use, works this way):
//! it joins the manifest URL with a `<media url=…>` and appends `Seg<N>-Frag<M>`; `N` and
//! `M` come from the bootstrap: fragment numbers count up from the first `afrt` entry's
//! first fragment, `FragmentsPerSegment` of each `asrt` entry at a time. So describe the
//! fragments the server holds as one segment (`asrt` = `[(1, number of fragments listed)]`,
//! see [`Bootstrap::single_segment`]), and for live give the bootstrap by URL so the client
//! can fetch it again.

use std::fmt::Write as _;

use crate::dash::push_xml_escaped;

/// Standard base64 (RFC 4648 §4, with `=` padding) of `data`.
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where a `<bootstrapInfo>` element's `abst` box is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapSource {
    /// `url="…"`: the client fetches the box (needed for live: clients fetch it again to
    /// learn of new fragments).
    Url(String),
    /// The box itself, written base64 as the element's text.
    Inline(Vec<u8>),
}

/// A `<bootstrapInfo profile="named" id=…>` element of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapInfo {
    /// `id`, referred to by [`F4mMedia::bootstrap_info_id`].
    pub id: String,
    /// URL or inline box.
    pub source: BootstrapSource,
}

/// A `<media>` element: one rendition (one set of fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct F4mMedia {
    /// `streamId`.
    pub stream_id: String,
    /// `url`: the fragment URL prefix; a fragment is `<url>Seg<N>-Frag<M>` relative to the
    /// manifest.
    pub url: String,
    /// `bitrate` in kbit/s (F4M's unit); omitted when 0.
    pub bitrate_kbps: u64,
    /// `width` and `height` in pixels; written when both are non-zero.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// `bootstrapInfoId`: the `id` of this media's [`BootstrapInfo`].
    pub bootstrap_info_id: String,
    /// The AMF0 bytes of the `onMetaData` script data (the string `onMetaData` followed by
    /// the ECMA array, as in an FLV script tag body), written base64 in `<metadata>`;
    /// omitted when empty.
    pub metadata: Vec<u8>,
}

/// An F4M manifest (F4M 1.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct F4mManifest {
    /// `<id>`: the presentation's name.
    pub id: String,
    /// True writes `<streamType>live</streamType>`, false `recorded`.
    pub live: bool,
    /// `<duration>` in seconds (written with 3 decimals) for recorded presentations; omitted
    /// when `None`.
    pub duration_ms: Option<u64>,
    /// The bootstrap infos.
    pub bootstraps: Vec<BootstrapInfo>,
    /// The media renditions.
    pub media: Vec<F4mMedia>,
}

impl F4mManifest {
    /// Appends the manifest XML to `out`: `<manifest xmlns="http://ns.adobe.com/f4m/1.0">`,
    /// `<id>`, `<mimeType>video/mp4</mimeType>`, `<streamType>`, `<deliveryType>streaming`,
    /// `<duration>` when given, the `<bootstrapInfo>` elements and the `<media>` elements
    /// with their `<metadata>`.
    pub fn render(&self, out: &mut String) {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<manifest xmlns=\"http://ns.adobe.com/f4m/1.0\">\n  <id>");
        push_xml_escaped(out, &self.id);
        out.push_str("</id>\n  <mimeType>video/mp4</mimeType>\n");
        let kind = if self.live { "live" } else { "recorded" };
        let _ = writeln!(out, "  <streamType>{kind}</streamType>");
        out.push_str("  <deliveryType>streaming</deliveryType>\n");
        if let Some(ms) = self.duration_ms {
            let _ = writeln!(out, "  <duration>{}.{:03}</duration>", ms / 1000, ms % 1000);
        }
        for b in &self.bootstraps {
            out.push_str("  <bootstrapInfo profile=\"named\" id=\"");
            push_xml_escaped(out, &b.id);
            out.push('"');
            match &b.source {
                BootstrapSource::Url(url) => {
                    out.push_str(" url=\"");
                    push_xml_escaped(out, url);
                    out.push_str("\"/>\n");
                }
                BootstrapSource::Inline(abst) => {
                    out.push('>');
                    out.push_str(&base64_encode(abst));
                    out.push_str("</bootstrapInfo>\n");
                }
            }
        }
        for m in &self.media {
            out.push_str("  <media streamId=\"");
            push_xml_escaped(out, &m.stream_id);
            out.push_str("\" url=\"");
            push_xml_escaped(out, &m.url);
            out.push('"');
            if m.bitrate_kbps > 0 {
                let _ = write!(out, " bitrate=\"{}\"", m.bitrate_kbps);
            }
            if m.width > 0 && m.height > 0 {
                let _ = write!(out, " width=\"{}\" height=\"{}\"", m.width, m.height);
            }
            out.push_str(" bootstrapInfoId=\"");
            push_xml_escaped(out, &m.bootstrap_info_id);
            out.push('"');
            if m.metadata.is_empty() {
                out.push_str("/>\n");
            } else {
                out.push_str(">\n    <metadata>");
                out.push_str(&base64_encode(&m.metadata));
                out.push_str("</metadata>\n  </media>\n");
            }
        }
        out.push_str("</manifest>\n");
    }

    /// The rendered manifest as a new `String`.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

/// One fragment for the fragment run table: its number, start time and duration in the
/// bootstrap's time scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Fragment number (the `M` of `Seg<N>-Frag<M>`), counting from 1.
    pub number: u32,
    /// Start time.
    pub timestamp: u64,
    /// Duration; must not be 0 (0 marks a discontinuity entry in the table).
    pub duration: u32,
}

/// The bootstrap information of one rendition: the `abst` box (F4V spec §2.11.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `BootstrapinfoVersion`: increase it whenever the contents change (live).
    pub info_version: u32,
    /// `Live` flag.
    pub live: bool,
    /// `TimeScale` of the `abst` and its `afrt` (1000: ms).
    pub timescale: u32,
    /// `CurrentMediaTime`: for live, the end of the last fragment; for recorded, the
    /// presentation's duration, in `timescale` units.
    pub current_media_time: u64,
    /// `MovieIdentifier` (written as a NUL-terminated string; NULs in it are dropped).
    pub movie_identifier: String,
    /// The segment run table: `(FirstSegment, FragmentsPerSegment)` entries.
    pub segment_runs: Vec<(u32, u32)>,
    /// The fragments, in order; written as fragment run entries, a run being fragments with
    /// consecutive numbers, equal durations and each starting where the previous ends.
    pub fragments: Vec<Fragment>,
    /// Ends the fragment run table with the end-of-presentation entry (first fragment 0,
    /// timestamp 0, duration 0, discontinuity indicator 0): no more fragments will come.
    pub end_of_presentation: bool,
}

impl Bootstrap {
    /// A bootstrap with time scale 1000 that puts `fragments` in segment 1:
    /// `segment_runs = [(1, fragments.len())]`, `current_media_time` the end of the last
    /// fragment, `end_of_presentation` when not live.
    pub fn single_segment(
        info_version: u32,
        live: bool,
        movie_identifier: &str,
        fragments: Vec<Fragment>,
    ) -> Bootstrap {
        let current_media_time = fragments
            .last()
            .map_or(0, |f| f.timestamp.saturating_add(u64::from(f.duration)));
        Bootstrap {
            info_version,
            live,
            timescale: 1000,
            current_media_time,
            movie_identifier: movie_identifier.to_string(),
            segment_runs: vec![(1, fragments.len().min(u32::MAX as usize) as u32)],
            fragments,
            end_of_presentation: !live,
        }
    }

    /// Appends the `abst` box to `out` (F4V spec §2.11.2): full box version 0, flags 0;
    /// `BootstrapinfoVersion`; profile 0 (named), `Live`, `Update` 0; `TimeScale`;
    /// `CurrentMediaTime`; `SmpteTimeCodeOffset` 0; `MovieIdentifier`; no server or quality
    /// entries; empty `DrmData` and `MetaData`; one `asrt` box and one `afrt` box.
    pub fn write_abst(&self, out: &mut Vec<u8>) {
        let start = begin_box(out, b"abst");
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.info_version.to_be_bytes());
        out.push(if self.live { 0x20 } else { 0 });
        out.extend_from_slice(&self.timescale.to_be_bytes());
        out.extend_from_slice(&self.current_media_time.to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend(self.movie_identifier.bytes().filter(|&b| b != 0));
        out.push(0);
        out.extend_from_slice(&[0, 0, 0, 0]); // ServerEntryCount, QualityEntryCount, DrmData, MetaData
        out.push(1);
        self.write_asrt(out);
        out.push(1);
        self.write_afrt(out);
        end_box(out, start);
    }

    /// The `abst` box as a new `Vec`.
    pub fn to_abst(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_abst(&mut out);
        out
    }

    /// Appends the segment run table box `asrt`: version 0, flags 0, no quality entries,
    /// then the entry count and `(FirstSegment, FragmentsPerSegment)` pairs.
    fn write_asrt(&self, out: &mut Vec<u8>) {
        let start = begin_box(out, b"asrt");
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
        out.extend_from_slice(&(self.segment_runs.len() as u32).to_be_bytes());
        for &(first, count) in &self.segment_runs {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        end_box(out, start);
    }

    /// Appends the fragment run table box `afrt`: version 0, flags 0, `TimeScale`, no
    /// quality entries, then the entry count and the entries (`FirstFragment`,
    /// `FirstFragmentTimestamp`, `FragmentDuration`, and `DiscontinuityIndicator` after a
    /// zero duration).
    fn write_afrt(&self, out: &mut Vec<u8>) {
        let start = begin_box(out, b"afrt");
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.timescale.to_be_bytes());
        out.push(0);
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut entries = 0u32;
        let mut i = 0;
        while i < self.fragments.len() {
            let first = self.fragments[i];
            let mut run = 1;
            while let Some(f) = self.fragments.get(i + run) {
                let prev = self.fragments[i + run - 1];
                if f.duration != first.duration
                    || Some(f.number) != prev.number.checked_add(1)
                    || Some(f.timestamp) != prev.timestamp.checked_add(u64::from(prev.duration))
                {
                    break;
                }
                run += 1;
            }
            out.extend_from_slice(&first.number.to_be_bytes());
            out.extend_from_slice(&first.timestamp.to_be_bytes());
            out.extend_from_slice(&first.duration.to_be_bytes());
            if first.duration == 0 {
                out.push(0);
            }
            entries += 1;
            i += run;
        }
        if self.end_of_presentation {
            out.extend_from_slice(&[0; 16]);
            out.push(0);
            entries += 1;
        }
        out[count_at..count_at + 4].copy_from_slice(&entries.to_be_bytes());
        end_box(out, start);
    }
}

/// Appends a box header with a placeholder size; returns where the box starts.
fn begin_box(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    start
}

/// Writes the size of the box that starts at `start` and ends at the end of `out`.
fn end_box(out: &mut [u8], start: usize) {
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a fragment random access box `afra` (F4V spec, Fragment Random Access box): full
/// box version 0, flags 0; `LongIDs` 0, `LongOffsets` 1, `GlobalEntries` 0; `TimeScale`;
/// then per entry the time of a random access point (keyframe) in `timescale` units and its
/// byte offset in the fragment, as 64-bit values.
pub fn write_afra(timescale: u32, entries: &[(u64, u64)], out: &mut Vec<u8>) {
    let start = begin_box(out, b"afra");
    out.extend_from_slice(&[0, 0, 0, 0, 0x40]);
    out.extend_from_slice(&timescale.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for &(time, offset) in entries {
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
    }
    end_box(out, start);
}

/// Parses an HDS fragment request `<prefix>Seg<N>-Frag<M>` (the prefix being a
/// [`F4mMedia::url`], possibly after a path): returns `(prefix, N, M)`. `N` and `M` are
/// decimal digits fitting `u32`; nothing may follow `M`. `None` otherwise.
pub fn parse_fragment_url(path: &str) -> Option<(&str, u32, u32)> {
    fn number(s: &str) -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let at = path.rfind("Seg")?;
    let (segment, fragment) = path[at + 3..].split_once("-Frag")?;
    Some((&path[..at], number(segment)?, number(fragment)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    /// A minimal reader for the boxes written here, independent of the writer.
    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let s = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            s
        }
        fn u8(&mut self) -> u8 {
            self.take(1)[0]
        }
        fn u32(&mut self) -> u32 {
            u32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_be_bytes(self.take(8).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let end = self.buf[self.pos..].iter().position(|&b| b == 0).unwrap();
            let s = String::from_utf8(self.take(end).to_vec()).unwrap();
            self.pos += 1;
            s
        }
        /// Reads a box header; returns (type, reader over the body) and skips the box.
        fn child(&mut self) -> ([u8; 4], Reader<'a>) {
            let size = self.u32() as usize;
            let kind: [u8; 4] = self.take(4).try_into().unwrap();
            let body = self.take(size - 8);
            (kind, Reader { buf: body, pos: 0 })
        }
        fn done(&self) -> bool {
            self.pos == self.buf.len()
        }
    }

    type Decoded = (
        u32,
        bool,
        u64,
        String,
        Vec<(u32, u32)>,
        Vec<(u32, u64, u32, Option<u8>)>,
    );

    fn decode_abst(bytes: &[u8]) -> Decoded {
        let mut top = Reader { buf: bytes, pos: 0 };
        let (kind, mut r) = top.child();
        assert!(top.done(), "abst size must cover the whole buffer");
        assert_eq!(&kind, b"abst");
        assert_eq!(r.u32(), 0); // version, flags
        let version = r.u32();
        let live = r.u8() & 0x20 != 0;
        assert_eq!(r.u32(), 1000);
        let cmt = r.u64();
        assert_eq!(r.u64(), 0);
        let movie = r.string();
        assert_eq!(r.u8(), 0); // servers
        assert_eq!(r.u8(), 0); // qualities
        assert_eq!(r.string(), ""); // DrmData
        assert_eq!(r.string(), ""); // MetaData
        assert_eq!(r.u8(), 1);
        let (kind, mut asrt) = r.child();
        assert_eq!(&kind, b"asrt");
        assert_eq!(asrt.u32(), 0);
        assert_eq!(asrt.u8(), 0);
        let n = asrt.u32();
        let segs = (0..n).map(|_| (asrt.u32(), asrt.u32())).collect();
        assert!(asrt.done());
        assert_eq!(r.u8(), 1);
        let (kind, mut afrt) = r.child();
        assert_eq!(&kind, b"afrt");
        assert_eq!(afrt.u32(), 0);
        assert_eq!(afrt.u32(), 1000);
        assert_eq!(afrt.u8(), 0);
        let n = afrt.u32();
        let frags = (0..n)
            .map(|_| {
                let (first, ts, d) = (afrt.u32(), afrt.u64(), afrt.u32());
                let disc = (d == 0).then(|| afrt.u8());
                (first, ts, d, disc)
            })
            .collect();
        assert!(afrt.done());
        assert!(r.done());
        (version, live, cmt, movie, segs, frags)
    }

    fn frag(number: u32, timestamp: u64, duration: u32) -> Fragment {
        Fragment {
            number,
            timestamp,
            duration,
        }
    }

    #[test]
    fn live_abst_decodes_back() {
        let b = Bootstrap::single_segment(
            7,
            true,
            "live",
            vec![
                frag(5, 8000, 2000),
                frag(6, 10_000, 2000),
                frag(7, 12_000, 2000),
                frag(8, 14_000, 1500),
                frag(9, 16_000, 2000),
            ],
        );
        let bytes = b.to_abst();
        // 8 header + 4 + 4 + 1 + 4 + 8 + 8 + 5 ("live\0") + 4 + 1 + asrt (8+4+1+4+8=25)
        // + 1 + afrt (8+4+4+1+4 + 3 × 16 = 69).
        assert_eq!(
            bytes.len(),
            8 + 4 + 4 + 1 + 4 + 8 + 8 + 5 + 4 + 1 + 25 + 1 + 69
        );
        let (version, live, cmt, movie, segs, frags) = decode_abst(&bytes);
        assert_eq!(
            (version, live, cmt, movie.as_str()),
            (7, true, 18_000, "live")
        );
        assert_eq!(segs, vec![(1, 5)]);
        // Fragment 9 starts 500 ms after fragment 8 ends: its own run.
        assert_eq!(
            frags,
            vec![
                (5, 8000, 2000, None),
                (8, 14_000, 1500, None),
                (9, 16_000, 2000, None)
            ]
        );
    }

    #[test]
    fn recorded_abst_ends_with_end_of_presentation() {
        let b = Bootstrap::single_segment(
            1,
            false,
            "",
            vec![frag(1, 0, 4000), frag(2, 4000, 4000), frag(3, 8000, 4000)],
        );
        let (version, live, cmt, movie, segs, frags) = decode_abst(&b.to_abst());
        assert_eq!((version, live, cmt, movie.as_str()), (1, false, 12_000, ""));
        assert_eq!(segs, vec![(1, 3)]);
        assert_eq!(frags, vec![(1, 0, 4000, None), (0, 0, 0, Some(0))]);
    }

    #[test]
    fn afra_layout() {
        let mut out = Vec::new();
        write_afra(1000, &[(0, 100), (2000, 5000)], &mut out);
        assert_eq!(out.len(), 8 + 4 + 1 + 4 + 4 + 2 * 16);
        assert_eq!(&out[..8], &[0, 0, 0, 53, b'a', b'f', b'r', b'a']);
        assert_eq!(&out[8..13], &[0, 0, 0, 0, 0x40]);
        assert_eq!(&out[13..21], &[0, 0, 3, 0xe8, 0, 0, 0, 2]);
        assert_eq!(&out[37..45], &2000u64.to_be_bytes());
        assert_eq!(&out[45..53], &5000u64.to_be_bytes());
    }

    #[test]
    fn renders_f4m() {
        let manifest = F4mManifest {
            id: "live&1".into(),
            live: true,
            duration_ms: None,
            bootstraps: vec![
                BootstrapInfo {
                    id: "boot1".into(),
                    source: BootstrapSource::Url("1/bootstrap.abst".into()),
                },
                BootstrapInfo {
                    id: "boot2".into(),
                    source: BootstrapSource::Inline(b"foobar".to_vec()),
                },
            ],
            media: vec![
                F4mMedia {
                    stream_id: "1".into(),
                    url: "1/".into(),
                    bitrate_kbps: 2128,
                    width: 1280,
                    height: 720,
                    bootstrap_info_id: "boot1".into(),
                    metadata: b"foo".to_vec(),
                },
                F4mMedia {
                    stream_id: "2".into(),
                    url: "2/".into(),
                    bitrate_kbps: 0,
                    width: 0,
                    height: 0,
                    bootstrap_info_id: "boot2".into(),
                    metadata: vec![],
                },
            ],
        };
        assert_eq!(
            manifest.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest xmlns="http://ns.adobe.com/f4m/1.0">
  <id>live&amp;1</id>
  <mimeType>video/mp4</mimeType>
  <streamType>live</streamType>
  <deliveryType>streaming</deliveryType>
  <bootstrapInfo profile="named" id="boot1" url="1/bootstrap.abst"/>
  <bootstrapInfo profile="named" id="boot2">Zm9vYmFy</bootstrapInfo>
  <media streamId="1" url="1/" bitrate="2128" width="1280" height="720" bootstrapInfoId="boot1">
    <metadata>Zm9v</metadata>
  </media>
  <media streamId="2" url="2/" bootstrapInfoId="boot2"/>
</manifest>
"#
        );
        let vod = F4mManifest {
            live: false,
            duration_ms: Some(12_345),
            bootstraps: vec![],
            media: vec![],
            ..manifest
        };
        assert!(vod.to_xml().contains(
            "<streamType>recorded</streamType>\n  <deliveryType>streaming</deliveryType>\n  \
             <duration>12.345</duration>\n"
        ));
    }

    #[test]
    fn parses_fragment_urls() {
        assert_eq!(parse_fragment_url("Seg1-Frag23"), Some(("", 1, 23)));
        assert_eq!(
            parse_fragment_url("/dynamic/live/1/Seg1-Frag4294967295"),
            Some(("/dynamic/live/1/", 1, u32::MAX))
        );
        for bad in [
            "",
            "Seg1",
            "Seg-Frag1",
            "Seg1-Frag",
            "Seg1-Frag2x",
            "Seg1-Frag4294967296",
            "Seg+1-Frag2",
            "Frag1",
        ] {
            assert_eq!(parse_fragment_url(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn fragment_url_parser_never_panics(s in "\\PC{0,64}") {
            let _ = parse_fragment_url(&s);
        }

        #[test]
        fn fragment_url_round_trips(prefix in "[a-z0-9/]{0,12}", seg in any::<u32>(), f in any::<u32>()) {
            let url = format!("{prefix}Seg{seg}-Frag{f}");
            prop_assert_eq!(parse_fragment_url(&url), Some((prefix.as_str(), seg, f)));
        }

        #[test]
        fn abst_describes_every_fragment(
            steps in proptest::collection::vec((0u32..3, 0u64..3, 1u32..3), 0..20),
            live in any::<bool>(),
        ) {
            // Increasing numbers and times, sometimes with gaps, durations 1000 or 2000.
            let mut fragments = Vec::new();
            let (mut number, mut end) = (1u32, 0u64);
            for &(number_gap, time_gap, d) in &steps {
                let f = frag(number + number_gap, end + time_gap * 100, d * 1000);
                number = f.number + 1;
                end = f.timestamp + u64::from(f.duration);
                fragments.push(f);
            }
            let b = Bootstrap::single_segment(1, live, "x", fragments.clone());
            let (_, l, cmt, _, segs, entries) = decode_abst(&b.to_abst());
            prop_assert_eq!(l, live);
            prop_assert_eq!(cmt, end);
            prop_assert_eq!(segs, vec![(1, fragments.len() as u32)]);
            prop_assert!(entries.len() <= fragments.len() + 1);
            // Each fragment follows from the last run entry starting at or before it.
            for f in &fragments {
                let e = entries
                    .iter()
                    .rfind(|e| e.2 != 0 && e.0 <= f.number)
                    .unwrap();
                let k = u64::from(f.number - e.0);
                prop_assert_eq!((e.1 + k * u64::from(e.2), e.2), (f.timestamp, f.duration));
            }
            if live {
                prop_assert!(entries.iter().all(|e| e.3.is_none()));
            } else {
                prop_assert_eq!(entries.last(), Some(&(0, 0, 0, Some(0))));
            }
        }
    }
}
