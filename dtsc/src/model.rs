//! The media model every format and protocol in Sluice converts to and from: a [`Track`]
//! (what a stream carries) and a [`Packet`] (one access unit of one track).
//!
//! Times are milliseconds from the stream's zero, as in MistServer's DTSC
//! (`docs/DTSC.md`, "Media packet"): a packet has a decode timestamp (DTS) and
//! a composition offset (PTS minus DTS). Payloads are stored the way DTSC stores them:
//! H.264/HEVC as 4-byte length-prefixed NAL units (AVCC), AAC as raw access units (no ADTS).

use bytes::Bytes;

/// What a track carries. DTSC spells these `video`, `audio` and `meta` in a track's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Pictures; `width`, `height` and `fpks` apply.
    Video,
    /// Sound; `rate`, `channels` and `bits` apply.
    Audio,
    /// Anything else (subtitles, JSON, ID3).
    Meta,
}

impl TrackKind {
    /// The DTSC spelling (`type` member of a track).
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
            TrackKind::Meta => "meta",
        }
    }

    /// Parses the DTSC spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<TrackKind> {
        match s {
            "video" => Some(TrackKind::Video),
            "audio" => Some(TrackKind::Audio),
            "meta" => Some(TrackKind::Meta),
            _ => None,
        }
    }
}

/// A codec, named as MistServer names it in a DTSC track's `codec` member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC; init data is the avcC record (ISO/IEC 14496-15 §5.3.3.1).
    H264,
    /// H.265 / HEVC; init data is the hvcC record.
    Hevc,
    /// AAC; init data is the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    Aac,
    /// MPEG-1/2 Layer III audio; no init data.
    Mp3,
    /// G.711 A-law (ITU-T G.711), one byte per sample, usually 8 kHz mono; no init data.
    Alaw,
    /// G.711 µ-law, as [`Codec::Alaw`].
    Ulaw,
    /// Any other codec, by its DTSC name (`AV1`, `VP9`, `opus`, `AC3`, …).
    Other(String),
}

impl Codec {
    /// The DTSC name (`H264`, `HEVC`, `AAC`, `MP3`, `ALAW`, `ULAW` as MistServer names
    /// them, or the stored name).
    pub fn as_str(&self) -> &str {
        match self {
            Codec::H264 => "H264",
            Codec::Hevc => "HEVC",
            Codec::Aac => "AAC",
            Codec::Mp3 => "MP3",
            Codec::Alaw => "ALAW",
            Codec::Ulaw => "ULAW",
            Codec::Other(s) => s,
        }
    }

    /// Maps a DTSC codec name to a codec; unknown names are kept as [`Codec::Other`].
    pub fn parse(s: &str) -> Codec {
        match s {
            "H264" => Codec::H264,
            "HEVC" => Codec::Hevc,
            "AAC" => Codec::Aac,
            "MP3" => Codec::Mp3,
            "ALAW" => Codec::Alaw,
            "ULAW" => Codec::Ulaw,
            other => Codec::Other(other.to_string()),
        }
    }
}

/// The main track of a stream: the one whose keyframes cut it into GOPs and segments (the
/// keyframe index follows it). The first video track, else the first audio track; `None`
/// when the stream has neither.
pub fn main_track(tracks: &[Track]) -> Option<&Track> {
    tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .or_else(|| tracks.iter().find(|t| t.kind == TrackKind::Audio))
}

/// One track of a stream, with the members a DTSC header carries for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Track id, unique in the stream, numbered from 1 (DTSC `trackid`).
    pub id: u32,
    /// Video, audio or meta (DTSC `type`).
    pub kind: TrackKind,
    /// Codec (DTSC `codec`).
    pub codec: Codec,
    /// Codec init data: avcC / hvcC for video, AudioSpecificConfig for AAC (DTSC `init`).
    pub init: Vec<u8>,
    /// Video width in pixels (0 when unknown or not video).
    pub width: u32,
    /// Video height in pixels.
    pub height: u32,
    /// Video frame rate in frames per 1000 seconds (DTSC `fpks`; 25 fps = 25000).
    pub fpks: u32,
    /// Audio sample rate in Hz (DTSC `rate`).
    pub rate: u32,
    /// Audio channel count (DTSC `channels`).
    pub channels: u32,
    /// Audio bits per sample (DTSC `size`).
    pub bits: u32,
    /// ISO 639-2 language, `None` when undetermined (DTSC `lang`).
    pub lang: Option<String>,
    /// Average bit rate in bytes per second (DTSC `bps`).
    pub bps: u32,
    /// Peak bit rate in bytes per second (DTSC `maxbps`).
    pub maxbps: u32,
    /// DTS of the first packet held, in ms (DTSC `firstms`).
    pub firstms: u64,
    /// DTS of the last packet held, in ms (DTSC `lastms`).
    pub lastms: u64,
}

impl Track {
    /// A track with the given id, kind and codec and every other member empty.
    pub fn new(id: u32, kind: TrackKind, codec: Codec) -> Track {
        Track {
            id,
            kind,
            codec,
            init: Vec::new(),
            width: 0,
            height: 0,
            fpks: 0,
            rate: 0,
            channels: 0,
            bits: 0,
            lang: None,
            bps: 0,
            maxbps: 0,
            firstms: 0,
            lastms: 0,
        }
    }

    /// The key MistServer gives this track in a header's `tracks` object, for example
    /// `video_H264_640x360_25fps_1` or `audio_AAC_2ch_48000hz_2` (the last number is the id).
    pub fn dtsc_name(&self) -> String {
        match self.kind {
            TrackKind::Video => format!(
                "video_{}_{}x{}_{}fps_{}",
                self.codec.as_str(),
                self.width,
                self.height,
                (u64::from(self.fpks) + 500) / 1000,
                self.id
            ),
            TrackKind::Audio => format!(
                "audio_{}_{}ch_{}hz_{}",
                self.codec.as_str(),
                self.channels,
                self.rate,
                self.id
            ),
            TrackKind::Meta => format!("meta_{}_{}", self.codec.as_str(), self.id),
        }
    }
}

/// One access unit of one track, owning its payload.
///
/// Times are in ms; `offset` is the composition offset (PTS − DTS, ms), non-zero only for
/// video with B-frames. `bpos` is the byte position in the source file (0 when live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Track id this packet belongs to.
    pub track: u32,
    /// Decode timestamp, ms from the stream's zero.
    pub dts: u64,
    /// Composition offset, PTS − DTS, in ms.
    pub offset: i64,
    /// True on a keyframe (an IDR picture for H.264): a decoder can start here.
    pub keyframe: bool,
    /// Byte position in the source file, 0 when unknown or live.
    pub bpos: u64,
    /// The payload: AVCC NAL units for H.264/HEVC, raw frames for audio.
    pub data: Bytes,
}

impl Packet {
    /// Presentation timestamp in ms (DTS plus composition offset, clamped at 0).
    pub fn pts(&self) -> u64 {
        (self.dts as i64 + self.offset).max(0) as u64
    }

    /// A borrowed view of this packet.
    pub fn as_ref(&self) -> PacketRef<'_> {
        PacketRef {
            track: self.track,
            dts: self.dts,
            offset: self.offset,
            keyframe: self.keyframe,
            bpos: self.bpos,
            data: &self.data,
        }
    }
}

/// A packet whose payload is borrowed, for example straight from a shared-memory page or from
/// a received DTP2 frame: the form the data path uses so that no payload is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    /// Track id.
    pub track: u32,
    /// Decode timestamp, ms.
    pub dts: u64,
    /// Composition offset, PTS − DTS, ms.
    pub offset: i64,
    /// True on a keyframe.
    pub keyframe: bool,
    /// Byte position in the source file, 0 when unknown.
    pub bpos: u64,
    /// The payload.
    pub data: &'a [u8],
}

impl PacketRef<'_> {
    /// Presentation timestamp in ms (DTS plus composition offset, clamped at 0).
    pub fn pts(&self) -> u64 {
        (self.dts as i64 + self.offset).max(0) as u64
    }

    /// An owned copy of this packet.
    pub fn to_owned(&self) -> Packet {
        Packet {
            track: self.track,
            dts: self.dts,
            offset: self.offset,
            keyframe: self.keyframe,
            bpos: self.bpos,
            data: Bytes::copy_from_slice(self.data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_names_follow_mistserver() {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.width = 640;
        v.height = 360;
        v.fpks = 25000;
        assert_eq!(v.dtsc_name(), "video_H264_640x360_25fps_1");
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.channels = 2;
        a.rate = 48000;
        assert_eq!(a.dtsc_name(), "audio_AAC_2ch_48000hz_2");
    }

    #[test]
    fn track_names_survive_any_frame_rate() {
        // Found by fuzzing: a peer's header may carry fpks = u32::MAX.
        let mut v = Track::new(3, TrackKind::Video, Codec::H264);
        v.fpks = u32::MAX;
        assert_eq!(v.dtsc_name(), "video_H264_0x0_4294967fps_3");
    }

    #[test]
    fn pts_adds_the_composition_offset() {
        let p = Packet {
            track: 1,
            dts: 80,
            offset: 40,
            keyframe: false,
            bpos: 0,
            data: Bytes::new(),
        };
        assert_eq!(p.pts(), 120);
        assert_eq!(p.as_ref().pts(), 120);
    }
}
