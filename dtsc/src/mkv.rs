//! Matroska (`.mkv`) muxing for live writing: recordings and the progressive `/S.mkv` output.
//!
//! Layout (Matroska specification, RFC 9559; EBML, RFC 8794): the EBML header (DocType
//! `matroska`, version 4, read version 2), then a Segment of unknown size (RFC 9559 §6.2: an
//! all-ones size) holding `Info` (1 ms timestamp scale, §5.1.2.1) and `Tracks` (§5.1.4), then
//! Clusters of unknown size, each a `Timestamp` (§5.1.3.1) and `SimpleBlock`s (§5.1.3.5; RFC
//! 9559 §10.2: track number as a VINT, a signed 16-bit timestamp relative to the cluster, flags
//! with 0x80 for keyframes, then the frame). Nothing is ever written back, so a file cut
//! anywhere (a crash while recording) is readable up to its last whole block; there are no
//! `Cues` (a reader seeks by scanning clusters).
//!
//! Block timestamps are presentation times (DTS plus composition offset, ms). A cluster starts
//! at each video keyframe (at any packet past 5 s for audio only), and sooner when a block's
//! relative timestamp would not fit 16 bits. Codecs (§11, the codec mappings): H.264
//! `V_MPEG4/ISO/AVC` with the avcC as CodecPrivate, HEVC `V_MPEGH/ISO/HEVC` with the hvcC,
//! AAC `A_AAC` with the AudioSpecificConfig, MP3 `A_MPEG/L3`; frames as DTSC holds them
//! (length-prefixed NAL units, raw audio frames).

use crate::{Codec, PacketRef, Track, TrackKind};

/// Why a Matroska file cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MkvError {
    /// None of the tracks has a codec this muxer maps.
    #[error("no track Matroska output carries (H.264, HEVC, AAC, MP3)")]
    NoTracks,
}

/// EBML and Matroska element IDs (RFC 8794 §11.2, RFC 9559 §5), with their marker bits.
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const LANGUAGE: u32 = 0x22_B59C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// The 8-byte "unknown" element size (RFC 8794 §6.2): all VINT_DATA bits set.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// A cluster is started for audio-only streams after this long, ms.
const AUDIO_CLUSTER_MS: u64 = 5000;

fn put_id(id: u32, out: &mut Vec<u8>) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(3);
    out.extend_from_slice(&b[skip..]);
}

/// An element data size as the shortest VINT (RFC 8794 §4): 1 to 8 bytes, never all ones.
fn put_size(n: u64, out: &mut Vec<u8>) {
    let len = vint_len(n);
    let v = n | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

fn element(id: u32, body: &[u8], out: &mut Vec<u8>) {
    put_id(id, out);
    put_size(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn uint(id: u32, v: u64, out: &mut Vec<u8>) {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    element(id, &b[skip..], out);
}

fn float(id: u32, v: f64, out: &mut Vec<u8>) {
    element(id, &v.to_be_bytes(), out);
}

fn master(id: u32, out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    f(&mut body);
    element(id, &body, out);
}

/// The Matroska codec ID of a track, `None` for codecs not mapped here.
fn codec_id(t: &Track) -> Option<&'static str> {
    Some(match (t.kind, &t.codec) {
        (TrackKind::Video, Codec::H264) => "V_MPEG4/ISO/AVC",
        (TrackKind::Video, Codec::Hevc) => "V_MPEGH/ISO/HEVC",
        (TrackKind::Audio, Codec::Aac) => "A_AAC",
        (TrackKind::Audio, Codec::Mp3) => "A_MPEG/L3",
        _ => return None,
    })
}

/// Writes one Matroska stream: [`MkvMuxer::write_header`] once, then
/// [`MkvMuxer::write_packet`] per packet in DTS order. Sans-IO: bytes are appended to the
/// caller's buffer.
#[derive(Debug, Clone)]
pub struct MkvMuxer {
    /// (DTSC track id, Matroska track number), for the tracks written.
    tracks: Vec<(u32, u64, TrackKind)>,
    all: Vec<Track>,
    has_video: bool,
    /// The open cluster's timestamp, ms.
    cluster: Option<u64>,
}

impl MkvMuxer {
    /// A muxer for the tracks Matroska can carry here (others are skipped, and so are their
    /// packets). Error: none of them can be carried.
    pub fn new(tracks: &[Track]) -> Result<MkvMuxer, MkvError> {
        let usable: Vec<Track> = tracks
            .iter()
            .filter(|t| codec_id(t).is_some())
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(MkvError::NoTracks);
        }
        Ok(MkvMuxer {
            tracks: usable
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id, i as u64 + 1, t.kind))
                .collect(),
            has_video: usable.iter().any(|t| t.kind == TrackKind::Video),
            all: usable,
            cluster: None,
        })
    }

    /// The EBML header, the Segment's start (unknown size), `Info` and `Tracks`.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        master(id::EBML, out, |b| {
            uint(id::EBML_VERSION, 1, b);
            uint(id::EBML_READ_VERSION, 1, b);
            uint(id::EBML_MAX_ID_LENGTH, 4, b);
            uint(id::EBML_MAX_SIZE_LENGTH, 8, b);
            element(id::DOC_TYPE, b"matroska", b);
            uint(id::DOC_TYPE_VERSION, 4, b);
            uint(id::DOC_TYPE_READ_VERSION, 2, b);
        });
        put_id(id::SEGMENT, out);
        out.extend_from_slice(&UNKNOWN_SIZE);
        master(id::INFO, out, |b| {
            uint(id::TIMESTAMP_SCALE, 1_000_000, b);
            element(id::MUXING_APP, b"Sluice", b);
            element(id::WRITING_APP, b"Sluice", b);
        });
        master(id::TRACKS, out, |b| {
            for (t, &(_, number, _)) in self.all.iter().zip(&self.tracks) {
                master(id::TRACK_ENTRY, b, |e| {
                    uint(id::TRACK_NUMBER, number, e);
                    uint(id::TRACK_UID, number, e);
                    uint(
                        id::TRACK_TYPE,
                        if t.kind == TrackKind::Video { 1 } else { 2 },
                        e,
                    );
                    uint(id::FLAG_LACING, 0, e);
                    if let Some(lang) = &t.lang {
                        element(id::LANGUAGE, lang.as_bytes(), e);
                    }
                    element(id::CODEC_ID, codec_id(t).unwrap_or("").as_bytes(), e);
                    if !t.init.is_empty() {
                        element(id::CODEC_PRIVATE, &t.init, e);
                    }
                    if t.kind == TrackKind::Video {
                        master(id::VIDEO, e, |v| {
                            uint(id::PIXEL_WIDTH, u64::from(t.width), v);
                            uint(id::PIXEL_HEIGHT, u64::from(t.height), v);
                        });
                    } else {
                        master(id::AUDIO, e, |a| {
                            float(id::SAMPLING_FREQUENCY, f64::from(t.rate), a);
                            uint(id::CHANNELS, u64::from(t.channels.max(1)), a);
                        });
                    }
                });
            }
        });
    }

    /// One packet as a `SimpleBlock`, after a new cluster when one is due. Packets of tracks
    /// not written are skipped.
    pub fn write_packet(&mut self, p: &PacketRef, out: &mut Vec<u8>) {
        if self.write_block_head(p, out) {
            out.extend_from_slice(p.data);
        }
    }

    /// Everything of [`MkvMuxer::write_packet`] but the payload, which the caller sends after
    /// it (a connector passes it on from the shared pages without a copy). Returns false,
    /// writing nothing, for a packet of a track not written.
    pub fn write_block_head(&mut self, p: &PacketRef, out: &mut Vec<u8>) -> bool {
        let Some(&(_, number, kind)) = self.tracks.iter().find(|t| t.0 == p.track) else {
            return false;
        };
        let pts = (p.dts as i64 + p.offset).max(0) as u64;
        let start_here = match self.cluster {
            None => true,
            Some(c) => {
                let rel = pts as i64 - c as i64;
                let new_gop = if self.has_video {
                    kind == TrackKind::Video && p.keyframe
                } else {
                    pts >= c + AUDIO_CLUSTER_MS
                };
                new_gop || !(i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&rel)
            }
        };
        if start_here {
            // The cluster's time is this packet's; blocks before it in presentation order
            // (B-frames) get negative relative timestamps.
            put_id(id::CLUSTER, out);
            out.extend_from_slice(&UNKNOWN_SIZE);
            uint(id::TIMESTAMP, pts, out);
            self.cluster = Some(pts);
        }
        let rel = (pts as i64 - self.cluster.unwrap_or(pts) as i64) as i16;
        // Block header: the track number (a VINT; numbers stay below 127, one byte), the
        // relative timestamp, the flags (0x80: keyframe; every audio frame is one).
        let flags = if kind != TrackKind::Video || p.keyframe {
            0x80
        } else {
            0
        };
        put_id(id::SIMPLE_BLOCK, out);
        put_size((vint_len(number) + 3 + p.data.len()) as u64, out);
        put_size(number, out);
        out.extend_from_slice(&rel.to_be_bytes());
        out.push(flags);
        true
    }
}

/// Bytes of `n` as [`put_size`] writes it.
fn vint_len(n: u64) -> usize {
    let mut len = 1;
    while len < 8 && n >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracks() -> Vec<Track> {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        (v.init, v.width, v.height) = (vec![1, 0x64, 0, 0x1e, 0xff, 0xe0, 0], 640, 360);
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        (a.init, a.rate, a.channels) = (vec![0x12, 0x10], 44_100, 2);
        vec![v, a]
    }

    #[test]
    fn vints_are_the_shortest_and_never_all_ones() {
        let enc = |n| {
            let mut v = Vec::new();
            put_size(n, &mut v);
            v
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        // 127 in one byte would be all ones (unknown): two bytes.
        assert_eq!(enc(127), [0x40, 0x7F]);
        assert_eq!(enc(300), [0x41, 0x2C]);
        assert_eq!(enc(16_382), [0x7F, 0xFE]);
        assert_eq!(enc(16_383), [0x20, 0x3F, 0xFF]);
    }

    #[test]
    fn header_and_blocks_are_laid_out_as_the_spec_says() {
        let m = MkvMuxer::new(&tracks()).unwrap();
        let mut out = Vec::new();
        m.write_header(&mut out);
        assert_eq!(&out[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
        let seg = out
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .unwrap();
        assert_eq!(&out[seg + 4..seg + 12], &UNKNOWN_SIZE);
        assert!(out.windows(15).any(|w| w == b"V_MPEG4/ISO/AVC"));
        assert!(out.windows(5).any(|w| w == b"A_AAC"));
        // TimestampScale 1 000 000 (0x0F4240) in 3 bytes.
        assert!(out
            .windows(7)
            .any(|w| w == [0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]));

        let mut m = m;
        let mut body = Vec::new();
        let frame = [0u8, 0, 0, 1, 0x65];
        m.write_packet(
            &PacketRef {
                track: 1,
                dts: 1000,
                offset: 80,
                keyframe: true,
                bpos: 0,
                data: &frame,
            },
            &mut body,
        );
        // Cluster, unknown size, Timestamp 1080 (0x0438), then the block.
        assert_eq!(&body[..4], &[0x1F, 0x43, 0xB6, 0x75]);
        assert_eq!(&body[4..12], &UNKNOWN_SIZE);
        assert_eq!(&body[12..16], &[0xE7, 0x82, 0x04, 0x38]);
        // SimpleBlock: size 4 + 5, track 1 (0x81), relative 0, keyframe, the frame.
        assert_eq!(
            &body[16..],
            &[0xA3, 0x89, 0x81, 0, 0, 0x80, 0, 0, 0, 1, 0x65]
        );
        body.clear();
        // A B-frame presented before the cluster's time: a negative relative timestamp.
        m.write_packet(
            &PacketRef {
                track: 1,
                dts: 1040,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &frame,
            },
            &mut body,
        );
        assert_eq!(&body[..6], &[0xA3, 0x89, 0x81, 0xFF, 0xD8, 0x00]);
        // Packets of tracks not written are skipped.
        body.clear();
        m.write_packet(
            &PacketRef {
                track: 9,
                dts: 1040,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: &frame,
            },
            &mut body,
        );
        assert!(body.is_empty());
    }

    #[test]
    fn a_far_timestamp_starts_a_cluster() {
        let mut m = MkvMuxer::new(&tracks()[1..]).unwrap();
        let mut out = Vec::new();
        for dts in [0u64, 23, 4000, 40_000] {
            m.write_packet(
                &PacketRef {
                    track: 2,
                    dts,
                    offset: 0,
                    keyframe: true,
                    bpos: 0,
                    data: b"aac",
                },
                &mut out,
            );
        }
        let clusters = out
            .windows(4)
            .filter(|w| *w == [0x1F, 0x43, 0xB6, 0x75])
            .count();
        assert_eq!(clusters, 2);
        assert_eq!(
            MkvMuxer::new(&[Track::new(1, TrackKind::Meta, Codec::parse("JSON"))]).unwrap_err(),
            MkvError::NoTracks
        );
    }
}
