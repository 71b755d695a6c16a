//! Microsoft Smooth Streaming ([MS-SSTR], "Smooth Streaming Protocol"): the client manifest
//! (§2.2.2, `<SmoothStreamingMedia>`), the `tfxd` and `tfrf` UUID boxes a live fragment
//! carries (§2.2.4, TfxdBox and TfrfBox) and the fragment request URL (§2.2.3,
//! `QualityLevels(<bitrate>)/Fragments(<stream>=<time>)`). Sans-IO: text and bytes out,
//! nothing read from a clock.
//!
//! All times are in the manifest's time scale, 10 000 000 units per second ("hns", hundreds
//! of nanoseconds; [`TIMESCALE`]). A client requests each fragment by the start time it read
//! from the manifest, so the manifest's times must be the real fragment start times: every
//! StreamIndex's first `<c>` carries `t=` (a client that assumes 0 asks for fragments that do
//! not exist), and so does any chunk that does not start where the previous one ended.

use std::fmt::Write as _;

use crate::dash::push_xml_escaped;
use crate::model::{Codec, Track, TrackKind};
use crate::{aac, h264};

/// The manifest time scale: 10 000 000 units per second (MS-SSTR §2.2.2, `TimeScale`).
pub const TIMESCALE: u64 = 10_000_000;

/// Converts ms to manifest units (hns), saturating.
pub fn ms_to_hns(ms: u64) -> u64 {
    ms.saturating_mul(TIMESCALE / 1000)
}

/// The kind-specific attributes of a `QualityLevel` (MS-SSTR §2.2.2, TrackElement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QualityDetail {
    /// Video: `MaxWidth` and `MaxHeight` in pixels.
    Video {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Audio: `SamplingRate`, `Channels`, `BitsPerSample`, `PacketSize` (block alignment in
    /// bytes) and `AudioTag` (the WAVE format tag; 255 for AAC).
    Audio {
        /// Sample rate in Hz.
        sampling_rate: u32,
        /// Channel count.
        channels: u32,
        /// Bits per sample (16 for AAC).
        bits_per_sample: u32,
        /// Block alignment in bytes.
        packet_size: u32,
        /// WAVE format tag.
        audio_tag: u32,
    },
}

/// One `QualityLevel` of a StreamIndex: one encoding (one track) of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityLevel {
    /// `Bitrate` in bits per second; it is also the `{bitrate}` of the fragment URL, so the
    /// levels of one StreamIndex must have different bitrates.
    pub bitrate: u64,
    /// `FourCC`: `H264` for H.264 in AVC sample format, `AACL` for AAC LC.
    pub fourcc: String,
    /// `CodecPrivateData`, written as uppercase hex: for H.264 each SPS then each PPS, each
    /// preceded by the start code `00000001`; for AAC the AudioSpecificConfig.
    pub codec_private_data: Vec<u8>,
    /// The video or audio attributes.
    pub detail: QualityDetail,
}

impl QualityLevel {
    /// A quality level for `track`: H.264 (`H264`, needs a readable avcC in `init`) or AAC
    /// (`AACL`; an LC config from the rate and channel count is used when `init` is empty).
    /// Bitrate is `8 × max(maxbps, bps)`. `None` for other codecs or unreadable init data.
    pub fn from_track(track: &Track) -> Option<QualityLevel> {
        let bitrate = 8 * u64::from(track.maxbps.max(track.bps));
        match track.codec {
            Codec::H264 => {
                let cfg = h264::parse_avcc(&track.init).ok()?;
                let mut cpd = Vec::new();
                for nal in cfg.sps.iter().chain(&cfg.pps) {
                    cpd.extend_from_slice(&[0, 0, 0, 1]);
                    cpd.extend_from_slice(nal);
                }
                Some(QualityLevel {
                    bitrate,
                    fourcc: "H264".into(),
                    codec_private_data: cpd,
                    detail: QualityDetail::Video {
                        width: track.width,
                        height: track.height,
                    },
                })
            }
            Codec::Aac => {
                let (asc_bytes, asc) = if track.init.is_empty() {
                    let asc =
                        aac::AudioSpecificConfig::lc(track.rate, track.channels.min(255) as u8);
                    let mut bytes = Vec::new();
                    aac::write_asc(&asc, &mut bytes);
                    (bytes, asc)
                } else {
                    (track.init.clone(), aac::parse_asc(&track.init).ok()?)
                };
                let channels = if asc.channels > 0 {
                    u32::from(asc.channels)
                } else {
                    track.channels
                };
                Some(QualityLevel {
                    bitrate,
                    fourcc: "AACL".into(),
                    codec_private_data: asc_bytes,
                    detail: QualityDetail::Audio {
                        sampling_rate: asc.ext_sample_rate.unwrap_or(asc.sample_rate),
                        channels,
                        bits_per_sample: 16,
                        packet_size: 4,
                        audio_tag: 255,
                    },
                })
            }
            _ => None,
        }
    }
}

/// One `StreamIndex` (MS-SSTR §2.2.2, StreamElement): a stream of one kind, its quality
/// levels and its chunks (fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIndex {
    /// `Type`: `video`, `audio` or (for [`TrackKind::Meta`]) `text`.
    pub kind: TrackKind,
    /// `Name`, also the stream name in the fragment URL (`Fragments(<name>=<time>)`); must be
    /// unique in the manifest and should be URL-safe (`video`, `audio`, `audio_eng`…).
    pub name: String,
    /// `Language` (ISO 639-2), written when set.
    pub language: Option<String>,
    /// The quality levels, written with `Index` 0, 1, …
    pub quality_levels: Vec<QualityLevel>,
    /// The chunks as `(start, duration)` in hns, in order. Written as `<c t= d=/>` for the
    /// first chunk and any chunk not starting where the previous ended, `<c d=/>` otherwise.
    pub chunks: Vec<(u64, u64)>,
}

/// Live presentation attributes of the manifest (MS-SSTR §2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmoothLive {
    /// `LookAheadFragmentCount`: how many following fragments each fragment's `tfrf` box
    /// announces (usually 2).
    pub look_ahead_fragment_count: u32,
    /// `DVRWindowLength` in hns: how far back from the live edge fragments stay available
    /// (0 means unlimited).
    pub dvr_window_length: u64,
}

/// The whole client manifest (MS-SSTR §2.2.2, SmoothStreamingMedia).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `Duration` in hns; 0 for live.
    pub duration: u64,
    /// `Some` for a live presentation: writes `IsLive="TRUE"`, `LookAheadFragmentCount` and
    /// `DVRWindowLength`.
    pub live: Option<SmoothLive>,
    /// The stream indexes, in order.
    pub streams: Vec<StreamIndex>,
    /// Written before `QualityLevels(…)` in every StreamIndex's `Url` (a relative path
    /// ending in `/`, or empty): lets a server put something in the fragment URLs that
    /// changes when the presentation does, so caches never mix two of them up.
    pub url_prefix: String,
}

/// Appends `data` as uppercase hex.
fn push_hex(out: &mut String, data: &[u8]) {
    for b in data {
        let _ = write!(out, "{b:02X}");
    }
}

fn render_stream(out: &mut String, s: &StreamIndex, url_prefix: &str) {
    let kind = match s.kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
        TrackKind::Meta => "text",
    };
    let _ = write!(out, "  <StreamIndex Type=\"{kind}\" Name=\"");
    push_xml_escaped(out, &s.name);
    let _ = write!(
        out,
        "\" Chunks=\"{}\" QualityLevels=\"{}\" Url=\"",
        s.chunks.len(),
        s.quality_levels.len()
    );
    push_xml_escaped(out, url_prefix);
    out.push_str("QualityLevels({bitrate})/Fragments(");
    push_xml_escaped(out, &s.name);
    out.push_str("={start time})\"");
    let (mut max_w, mut max_h) = (0, 0);
    for q in &s.quality_levels {
        if let QualityDetail::Video { width, height } = q.detail {
            max_w = max_w.max(width);
            max_h = max_h.max(height);
        }
    }
    if max_w > 0 && max_h > 0 {
        let _ = write!(
            out,
            " MaxWidth=\"{max_w}\" MaxHeight=\"{max_h}\" DisplayWidth=\"{max_w}\" DisplayHeight=\"{max_h}\""
        );
    }
    if let Some(lang) = &s.language {
        out.push_str(" Language=\"");
        push_xml_escaped(out, lang);
        out.push('"');
    }
    out.push_str(">\n");
    for (index, q) in s.quality_levels.iter().enumerate() {
        let _ = write!(
            out,
            "    <QualityLevel Index=\"{index}\" Bitrate=\"{}\" FourCC=\"",
            q.bitrate
        );
        push_xml_escaped(out, &q.fourcc);
        out.push('"');
        match q.detail {
            QualityDetail::Video { width, height } => {
                let _ = write!(out, " MaxWidth=\"{width}\" MaxHeight=\"{height}\"");
            }
            QualityDetail::Audio {
                sampling_rate,
                channels,
                bits_per_sample,
                packet_size,
                audio_tag,
            } => {
                let _ = write!(
                    out,
                    " SamplingRate=\"{sampling_rate}\" Channels=\"{channels}\" \
                     BitsPerSample=\"{bits_per_sample}\" PacketSize=\"{packet_size}\" \
                     AudioTag=\"{audio_tag}\""
                );
            }
        }
        out.push_str(" CodecPrivateData=\"");
        push_hex(out, &q.codec_private_data);
        out.push_str("\"/>\n");
    }
    let mut expected: Option<u64> = None;
    for &(t, d) in &s.chunks {
        if expected == Some(t) {
            let _ = writeln!(out, "    <c d=\"{d}\"/>");
        } else {
            let _ = writeln!(out, "    <c t=\"{t}\" d=\"{d}\"/>");
        }
        expected = Some(t.saturating_add(d));
    }
    out.push_str("  </StreamIndex>\n");
}

impl Manifest {
    /// Appends the manifest XML to `out`: `<SmoothStreamingMedia MajorVersion="2"
    /// MinorVersion="0" TimeScale="10000000" Duration=…>` (plus `IsLive="TRUE"`,
    /// `LookAheadFragmentCount`, `DVRWindowLength` when live), then per stream
    /// `<StreamIndex Type Name Chunks QualityLevels Url [MaxWidth MaxHeight DisplayWidth
    /// DisplayHeight] [Language]>` with its `<QualityLevel>` and `<c>` elements. The `Url`
    /// is [`url_prefix`](Self::url_prefix) then `QualityLevels({bitrate})/Fragments(<name>=
    /// {start time})` (MS-SSTR §2.2.3).
    pub fn render(&self, out: &mut String) {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            out,
            "<SmoothStreamingMedia MajorVersion=\"2\" MinorVersion=\"0\" TimeScale=\"{TIMESCALE}\" \
             Duration=\"{}\"",
            self.duration
        );
        if let Some(live) = &self.live {
            let _ = write!(
                out,
                " IsLive=\"TRUE\" LookAheadFragmentCount=\"{}\" DVRWindowLength=\"{}\"",
                live.look_ahead_fragment_count, live.dvr_window_length
            );
        }
        out.push_str(">\n");
        for s in &self.streams {
            render_stream(out, s, &self.url_prefix);
        }
        out.push_str("</SmoothStreamingMedia>\n");
    }

    /// The rendered manifest as a new `String`.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

/// The extended type of the `tfxd` box (MS-SSTR §2.2.4, TfxdBox):
/// 6D1D9B05-42D5-44E6-80E2-141DAFF757B2.
pub const TFXD_UUID: [u8; 16] = [
    0x6d, 0x1d, 0x9b, 0x05, 0x42, 0xd5, 0x44, 0xe6, 0x80, 0xe2, 0x14, 0x1d, 0xaf, 0xf7, 0x57, 0xb2,
];

/// The extended type of the `tfrf` box (MS-SSTR §2.2.4, TfrfBox):
/// D4807EF2-CA39-4695-8E54-26CB9E46A79F.
pub const TFRF_UUID: [u8; 16] = [
    0xd4, 0x80, 0x7e, 0xf2, 0xca, 0x39, 0x46, 0x95, 0x8e, 0x54, 0x26, 0xcb, 0x9e, 0x46, 0xa7, 0x9f,
];

/// Appends a `uuid` box header (size, `uuid`, extended type) and a full-box version 1,
/// flags 0 for a payload of `payload_len` bytes.
fn uuid_box_head(out: &mut Vec<u8>, uuid: &[u8; 16], payload_len: usize) {
    let size = (8 + 16 + 4 + payload_len) as u32;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(b"uuid");
    out.extend_from_slice(uuid);
    out.extend_from_slice(&[1, 0, 0, 0]);
}

/// Appends a `tfxd` box (MS-SSTR §2.2.4, TfxdBox; goes in the fragment's `traf`): version 1
/// with the fragment's absolute start time and duration as 64-bit values in hns. 44 bytes.
pub fn write_tfxd(time: u64, duration: u64, out: &mut Vec<u8>) {
    uuid_box_head(out, &TFXD_UUID, 16);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&duration.to_be_bytes());
}

/// Appends a `tfrf` box (MS-SSTR §2.2.4, TfrfBox; goes in a live fragment's `traf`):
/// version 1, `FragmentCount`, then per following fragment its absolute start time and
/// duration as 64-bit values in hns. At most 255 entries are written (the count is 8 bits);
/// 29 + 16 × count bytes.
pub fn write_tfrf(next: &[(u64, u64)], out: &mut Vec<u8>) {
    let next = &next[..next.len().min(255)];
    uuid_box_head(out, &TFRF_UUID, 1 + 16 * next.len());
    out.push(next.len() as u8);
    for &(t, d) in next {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// Parses a fragment request path (MS-SSTR §2.2.3, FragmentRequest):
/// `QualityLevels(<bitrate>)/Fragments(<stream>=<time>)`, optionally after a path prefix
/// ending in `/` (for example `/cmaf/S/QualityLevels(…)/…`). Returns `(bitrate, stream
/// name, start time in hns)`. Custom attributes after the bitrate
/// (`QualityLevels(128000,lang=en)`) are ignored. `None` when anything else is off: numbers
/// must be decimal digits fitting `u64`, the stream name non-empty without `(`, `)`, `/`,
/// `=` or `,`, and nothing may follow the closing parenthesis.
pub fn parse_fragment_url(path: &str) -> Option<(u64, String, u64)> {
    fn number(s: &str) -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let at = path.rfind("QualityLevels(")?;
    if at > 0 && !path[..at].ends_with('/') {
        return None;
    }
    let rest = &path[at + "QualityLevels(".len()..];
    let (levels, rest) = rest.split_once(')')?;
    let bitrate = number(levels.split(',').next()?)?;
    let inner = rest.strip_prefix("/Fragments(")?.strip_suffix(')')?;
    let (name, time) = inner.split_once('=')?;
    if name.is_empty() || name.contains(['(', ')', '/', '=', ',']) {
        return None;
    }
    Some((bitrate, name.to_string(), number(time)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn video_track() -> Track {
        let mut t = Track::new(1, TrackKind::Video, Codec::H264);
        // avcC: High 3.1, one 4-byte SPS, one 2-byte PPS.
        t.init = vec![
            1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0x00, 0x1f, 1, 0, 2, 0x68, 0xee,
        ];
        t.width = 1280;
        t.height = 720;
        t.bps = 250_000;
        t
    }

    fn audio_track() -> Track {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        t.init = vec![0x11, 0x90]; // AAC LC, 48 kHz, stereo
        t.rate = 48_000;
        t.channels = 2;
        t.bps = 16_000;
        t
    }

    #[test]
    fn live_manifest_has_t_on_every_first_chunk() {
        let manifest = Manifest {
            duration: 0,
            live: Some(SmoothLive {
                look_ahead_fragment_count: 2,
                dvr_window_length: ms_to_hns(30_000),
            }),
            streams: vec![
                StreamIndex {
                    kind: TrackKind::Video,
                    name: "video".into(),
                    language: None,
                    quality_levels: vec![QualityLevel::from_track(&video_track()).unwrap()],
                    chunks: vec![
                        (ms_to_hns(4000), ms_to_hns(2000)),
                        (ms_to_hns(6000), ms_to_hns(2000)),
                        (ms_to_hns(9000), ms_to_hns(2000)),
                    ],
                },
                StreamIndex {
                    kind: TrackKind::Audio,
                    name: "audio".into(),
                    language: Some("eng".into()),
                    quality_levels: vec![QualityLevel::from_track(&audio_track()).unwrap()],
                    chunks: vec![(40_021_333, 20_000_000), (60_021_333, 19_989_334)],
                },
            ],
            url_prefix: String::new(),
        };
        assert_eq!(
            manifest.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SmoothStreamingMedia MajorVersion="2" MinorVersion="0" TimeScale="10000000" Duration="0" IsLive="TRUE" LookAheadFragmentCount="2" DVRWindowLength="300000000">
  <StreamIndex Type="video" Name="video" Chunks="3" QualityLevels="1" Url="QualityLevels({bitrate})/Fragments(video={start time})" MaxWidth="1280" MaxHeight="720" DisplayWidth="1280" DisplayHeight="720">
    <QualityLevel Index="0" Bitrate="2000000" FourCC="H264" MaxWidth="1280" MaxHeight="720" CodecPrivateData="000000016764001F0000000168EE"/>
    <c t="40000000" d="20000000"/>
    <c d="20000000"/>
    <c t="90000000" d="20000000"/>
  </StreamIndex>
  <StreamIndex Type="audio" Name="audio" Chunks="2" QualityLevels="1" Url="QualityLevels({bitrate})/Fragments(audio={start time})" Language="eng">
    <QualityLevel Index="0" Bitrate="128000" FourCC="AACL" SamplingRate="48000" Channels="2" BitsPerSample="16" PacketSize="4" AudioTag="255" CodecPrivateData="1190"/>
    <c t="40021333" d="20000000"/>
    <c d="19989334"/>
  </StreamIndex>
</SmoothStreamingMedia>
"#
        );
    }

    #[test]
    fn vod_manifest_and_default_asc() {
        let mut audio = audio_track();
        audio.init.clear();
        audio.rate = 44_100;
        let manifest = Manifest {
            duration: ms_to_hns(4000),
            live: None,
            streams: vec![StreamIndex {
                kind: TrackKind::Audio,
                name: "a&b".into(),
                language: None,
                quality_levels: vec![QualityLevel::from_track(&audio).unwrap()],
                chunks: vec![(0, 20_000_000), (20_000_000, 20_000_000)],
            }],
            url_prefix: String::new(),
        };
        assert_eq!(
            manifest.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<SmoothStreamingMedia MajorVersion="2" MinorVersion="0" TimeScale="10000000" Duration="40000000">
  <StreamIndex Type="audio" Name="a&amp;b" Chunks="2" QualityLevels="1" Url="QualityLevels({bitrate})/Fragments(a&amp;b={start time})">
    <QualityLevel Index="0" Bitrate="128000" FourCC="AACL" SamplingRate="44100" Channels="2" BitsPerSample="16" PacketSize="4" AudioTag="255" CodecPrivateData="1210"/>
    <c t="0" d="20000000"/>
    <c d="20000000"/>
  </StreamIndex>
</SmoothStreamingMedia>
"#
        );
    }

    #[test]
    fn unsupported_tracks_have_no_quality_level() {
        assert_eq!(
            QualityLevel::from_track(&Track::new(1, TrackKind::Audio, Codec::Mp3)),
            None
        );
        // H.264 without an avcC cannot give CodecPrivateData.
        assert_eq!(
            QualityLevel::from_track(&Track::new(1, TrackKind::Video, Codec::H264)),
            None
        );
    }

    #[test]
    fn tfxd_and_tfrf_bytes() {
        let mut out = Vec::new();
        write_tfxd(0x0102_0304_0506_0708, 20_000_000, &mut out);
        assert_eq!(out.len(), 44);
        assert_eq!(&out[..8], &[0, 0, 0, 44, b'u', b'u', b'i', b'd']);
        assert_eq!(&out[8..24], &TFXD_UUID);
        assert_eq!(&out[24..28], &[1, 0, 0, 0]);
        assert_eq!(&out[28..36], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&out[36..44], &20_000_000u64.to_be_bytes());

        let mut out = Vec::new();
        write_tfrf(
            &[(20_000_000, 20_000_000), (40_000_000, 19_000_000)],
            &mut out,
        );
        assert_eq!(out.len(), 29 + 32);
        assert_eq!(&out[..4], &61u32.to_be_bytes());
        assert_eq!(&out[8..24], &TFRF_UUID);
        assert_eq!(&out[24..29], &[1, 0, 0, 0, 2]);
        assert_eq!(&out[29..37], &20_000_000u64.to_be_bytes());
        assert_eq!(&out[53..61], &19_000_000u64.to_be_bytes());

        let mut out = Vec::new();
        write_tfrf(&[(0, 0); 300], &mut out);
        assert_eq!(out[28], 255);
        assert_eq!(out.len(), 29 + 16 * 255);
    }

    #[test]
    fn parses_fragment_urls() {
        assert_eq!(
            parse_fragment_url("QualityLevels(123)/Fragments(video=4560000)"),
            Some((123, "video".into(), 4_560_000))
        );
        assert_eq!(
            parse_fragment_url("/cmaf/live/QualityLevels(128000,lang=en)/Fragments(audio=0)"),
            Some((128_000, "audio".into(), 0))
        );
        for bad in [
            "",
            "QualityLevels()/Fragments(video=1)",
            "QualityLevels(x)/Fragments(video=1)",
            "QualityLevels(1)/Fragments(=1)",
            "QualityLevels(1)/Fragments(video=)",
            "QualityLevels(1)/Fragments(video=-1)",
            "QualityLevels(1)/Fragments(video=1)x",
            "QualityLevels(1)/Fragments(video=1",
            "QualityLevels(1)/Fragments(vi/deo=1)",
            "xQualityLevels(1)/Fragments(video=1)",
            "QualityLevels(1)/Fragments(video=99999999999999999999)",
            "QualityLevels(1)/FragmentInfo(video=1)",
        ] {
            assert_eq!(parse_fragment_url(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn fragment_url_parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_fragment_url(&s);
        }

        #[test]
        fn fragment_url_round_trips(bitrate in any::<u64>(), name in "[a-z_0-9]{1,12}", t in any::<u64>()) {
            let url = format!("QualityLevels({bitrate})/Fragments({name}={t})");
            prop_assert_eq!(parse_fragment_url(&url), Some((bitrate, name, t)));
        }
    }
}
