//! FLV (Adobe Flash Video File Format Specification v10.1, Annex E): the file header, tags,
//! the audio/video tag body headers of the data path, `onMetaData`, and [`FlvIngest`], the
//! state machine that turns FLV tags (from a file or from RTMP audio/video/data messages,
//! whose bodies are FLV tag bodies) into [`Track`]s and [`PacketRef`]s.
//!
//! Payloads pass unchanged between DTSC and FLV: an AVC NALU tag body after its 5-byte header
//! is AVCC (4-byte length-prefixed NAL units) exactly as DTSC stores H.264, and an AAC raw tag
//! body after its 2-byte header is a raw AAC access unit. So the writers here only produce
//! headers; callers append the payload themselves and nothing is copied.
//!
//! Parsers take untrusted bytes: they never panic and never allocate on a length field
//! before the bytes it announces are present.

use crate::amf0::{self, Amf0};
use crate::h264;
use crate::model::{Codec, PacketRef, Track, TrackKind};
use aac_asc_impl::parse_asc;

/// Track id [`FlvIngest`] gives the video track (MistServer numbers tracks from 1).
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id [`FlvIngest`] gives the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Bytes of a tag header: TagType 1, DataSize 3, Timestamp 3, TimestampExtended 1,
/// StreamID 3 (FLV spec v10.1 §E.4.1).
pub const TAG_HEADER_LEN: usize = 11;
/// Bytes of a PreviousTagSize field (§E.3).
pub const PREV_TAG_SIZE_LEN: usize = 4;
/// Largest tag body (DataSize is a `u24`), bytes.
pub const MAX_TAG_BODY: usize = 0xFF_FFFF;
/// Bytes of the file header this module writes (§E.2, DataOffset 9).
pub const FILE_HEADER_LEN: usize = 9;
/// Largest DataOffset [`parse_file_header`] accepts, bytes (real files use 9).
pub const MAX_DATA_OFFSET: u32 = 1 << 16;

/// FLV video CodecID of AVC (§E.4.3.1).
const VIDEO_CODEC_AVC: u8 = 7;
/// FLV SoundFormat of MP3 (§E.4.2.1).
const SOUND_MP3: u8 = 2;
/// FLV SoundFormat of G.711 A-law.
const SOUND_ALAW: u8 = 7;
/// FLV SoundFormat of G.711 µ-law.
const SOUND_ULAW: u8 = 8;
/// FLV SoundFormat of AAC.
const SOUND_AAC: u8 = 10;
/// FLV SoundFormat of "MP3 8 kHz".
const SOUND_MP3_8K: u8 = 14;

/// What went wrong reading or writing FLV; offsets count from the start of the buffer given
/// (the file/stream buffer for the file header and tags, the tag body for bodies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The first 3 bytes are not `FLV` (§E.2).
    #[error("not an FLV file: signature {found:02x?} at byte 0 is not \"FLV\"")]
    NotFlv {
        /// The bytes found (up to 3; zero-padded when fewer were there).
        found: [u8; 3],
    },
    /// A file header DataOffset below 9 or above [`MAX_DATA_OFFSET`].
    #[error("FLV header DataOffset {data_offset} at byte 5 is out of range 9..={max}", max = MAX_DATA_OFFSET)]
    BadDataOffset {
        /// The value found.
        data_offset: u32,
    },
    /// A TagType other than 8, 9, 18 (§E.4.1).
    #[error("unknown FLV tag type {tag_type} at byte {offset}")]
    UnknownTagType {
        /// TagType (low 5 bits).
        tag_type: u8,
        /// Position of the tag header.
        offset: usize,
    },
    /// A tag with the Filter bit set (encrypted, §E.4.1): not supported.
    #[error("encrypted FLV tag (Filter bit) at byte {offset} is not supported")]
    Encrypted {
        /// Position of the tag header.
        offset: usize,
    },
    /// A tag body shorter than its header needs.
    #[error("FLV {what} truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A video CodecID (or enhanced-RTMP header) that is not supported.
    #[error("unsupported FLV video codec id {codec_id} (byte 0 of the video tag body)")]
    UnsupportedVideoCodec {
        /// CodecID (low 4 bits of body byte 0; 0x80+ for an enhanced-RTMP header).
        codec_id: u8,
    },
    /// A SoundFormat that is not supported.
    #[error("unsupported FLV sound format {sound_format} (byte 0 of the audio tag body)")]
    UnsupportedAudioFormat {
        /// SoundFormat (high 4 bits of body byte 0).
        sound_format: u8,
    },
    /// An AVCPacketType / AACPacketType that §E.4.3.1 / §E.4.2.1 does not define.
    #[error("unknown {what} packet type {packet_type} at body byte 1")]
    BadPacketType {
        /// `AVC` or `AAC`.
        what: &'static str,
        /// The value found.
        packet_type: u8,
    },
    /// The avcC record of an AVC sequence header could not be used.
    #[error("bad AVC sequence header (avcC from body byte 5): {0}")]
    BadAvcC(String),
    /// The AudioSpecificConfig of an AAC sequence header could not be used.
    #[error("bad AAC sequence header (AudioSpecificConfig from body byte 2): {0}")]
    BadAsc(&'static str),
    /// A track whose codec FLV cannot carry here.
    #[error("codec {0} cannot be written as FLV")]
    UnsupportedCodec(String),
    /// A track without the init data its sequence header needs.
    #[error("track {track} has no init data for an FLV sequence header")]
    MissingInit {
        /// The track id.
        track: u32,
    },
}

/// The FLV file header (§E.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Version byte (1).
    pub version: u8,
    /// TypeFlagsAudio.
    pub has_audio: bool,
    /// TypeFlagsVideo.
    pub has_video: bool,
}

/// Appends the 9-byte file header (§E.2: `FLV`, version 1, flags, DataOffset 9) and
/// PreviousTagSize0 (4 zero bytes, §E.3): 13 bytes.
pub fn write_file_header(has_audio: bool, has_video: bool, out: &mut Vec<u8>) {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    out.extend_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]);
}

/// Parses the file header at the start of `buf`. Returns `Ok(None)` until DataOffset bytes
/// plus PreviousTagSize0 (4) are present; then the header and the bytes to skip to reach the
/// first tag (DataOffset + 4). DataOffset must be 9 ..= [`MAX_DATA_OFFSET`].
pub fn parse_file_header(buf: &[u8]) -> Result<Option<(FileHeader, usize)>, FlvError> {
    let n = buf.len().min(3);
    if buf[..n] != b"FLV"[..n] {
        let mut found = [0u8; 3];
        found[..n].copy_from_slice(&buf[..n]);
        return Err(FlvError::NotFlv { found });
    }
    if buf.len() < FILE_HEADER_LEN {
        return Ok(None);
    }
    let data_offset = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    if !(FILE_HEADER_LEN as u32..=MAX_DATA_OFFSET).contains(&data_offset) {
        return Err(FlvError::BadDataOffset { data_offset });
    }
    let used = data_offset as usize + PREV_TAG_SIZE_LEN;
    if buf.len() < used {
        return Ok(None);
    }
    Ok(Some((
        FileHeader {
            version: buf[3],
            has_audio: buf[4] & 0x04 != 0,
            has_video: buf[4] & 0x01 != 0,
        },
        used,
    )))
}

/// An FLV tag type (§E.4.1 TagType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TagKind {
    /// 8: audio; the body starts with an AUDIODATA header (§E.4.2.1).
    Audio = 8,
    /// 9: video; the body starts with a VIDEODATA header (§E.4.3.1).
    Video = 9,
    /// 18: script data (AMF0 values such as `onMetaData`, §E.4.4).
    Script = 18,
}

impl TagKind {
    /// The kind for a TagType (low 5 bits of the first header byte); `None` when unknown.
    /// RTMP message type ids 8, 9 and 18 map the same way.
    pub fn from_u8(v: u8) -> Option<TagKind> {
        match v {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        }
    }
}

/// One FLV tag, its body borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    /// Audio, video or script.
    pub kind: TagKind,
    /// Timestamp in ms: Timestamp (24 bits) with TimestampExtended as the high byte (§E.4.1).
    pub timestamp: u32,
    /// The tag body (DataSize bytes).
    pub body: &'a [u8],
}

/// Parses one tag at the start of `buf`, including its trailing PreviousTagSize (whose value
/// is not checked: many writers get it wrong). Returns `Ok(None)` until the whole tag and the
/// 4 bytes after it are present, then the tag and the bytes used (11 + DataSize + 4).
pub fn parse_tag(buf: &[u8]) -> Result<Option<(Tag<'_>, usize)>, FlvError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first & 0x20 != 0 {
        return Err(FlvError::Encrypted { offset: 0 });
    }
    let kind = TagKind::from_u8(first & 0x1F).ok_or(FlvError::UnknownTagType {
        tag_type: first & 0x1F,
        offset: 0,
    })?;
    if buf.len() < TAG_HEADER_LEN {
        return Ok(None);
    }
    let size = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    let timestamp = u32::from_be_bytes([buf[7], buf[4], buf[5], buf[6]]);
    let used = TAG_HEADER_LEN + size + PREV_TAG_SIZE_LEN;
    if buf.len() < used {
        return Ok(None);
    }
    Ok(Some((
        Tag {
            kind,
            timestamp,
            body: &buf[TAG_HEADER_LEN..TAG_HEADER_LEN + size],
        },
        used,
    )))
}

/// Appends an 11-byte tag header (§E.4.1): TagType, DataSize `body_len`, Timestamp (low 24
/// bits of `timestamp_ms`), TimestampExtended (high 8 bits), StreamID 0. The caller then
/// appends the `body_len` body bytes and [`write_prev_tag_size`]`(body_len)`.
///
/// # Panics
/// When `body_len` exceeds [`MAX_TAG_BODY`] (16 MiB − 1): FLV cannot carry such a tag.
pub fn write_tag_header(kind: TagKind, timestamp_ms: u32, body_len: usize, out: &mut Vec<u8>) {
    assert!(
        body_len <= MAX_TAG_BODY,
        "FLV tag body of {body_len} bytes exceeds {MAX_TAG_BODY}"
    );
    let s = (body_len as u32).to_be_bytes();
    let t = timestamp_ms.to_be_bytes();
    out.extend_from_slice(&[
        kind as u8, s[1], s[2], s[3], t[1], t[2], t[3], t[0], 0, 0, 0,
    ]);
}

/// Appends the PreviousTagSize that follows a tag with a `body_len`-byte body: the `u32`
/// 11 + `body_len` (§E.3).
pub fn write_prev_tag_size(body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&((TAG_HEADER_LEN + body_len) as u32).to_be_bytes());
}

/// Appends a whole tag: header, `body`, PreviousTagSize (convenience for small bodies).
///
/// # Panics
/// When `body` exceeds [`MAX_TAG_BODY`] bytes.
pub fn write_tag(kind: TagKind, timestamp_ms: u32, body: &[u8], out: &mut Vec<u8>) {
    write_tag_header(kind, timestamp_ms, body.len(), out);
    out.extend_from_slice(body);
    write_prev_tag_size(body.len(), out);
}

/// Appends the video body header of a media packet (§E.4.3.1). H.264 only: 5 bytes,
/// FrameType (1 keyframe, 2 inter) | CodecID 7, AVCPacketType 1 (NALU), CompositionTime
/// `cts_ms` (PTS − DTS in ms, SI24; clamped to ±2^23). The AVCC payload follows unchanged.
/// Other codecs give [`FlvError::UnsupportedCodec`] and leave `out` unchanged.
pub fn video_body_header(
    codec: &Codec,
    keyframe: bool,
    cts_ms: i32,
    out: &mut Vec<u8>,
) -> Result<(), FlvError> {
    if *codec != Codec::H264 {
        return Err(FlvError::UnsupportedCodec(codec.as_str().to_owned()));
    }
    let frame_type = if keyframe { 1 } else { 2 };
    let cts = cts_ms.clamp(-(1 << 23), (1 << 23) - 1).to_be_bytes();
    out.extend_from_slice(&[
        (frame_type << 4) | VIDEO_CODEC_AVC,
        1,
        cts[1],
        cts[2],
        cts[3],
    ]);
    Ok(())
}

/// The tracks an FLV stream carries: the first H.264 video track and the first AAC, MP3 or
/// G.711 audio track (§E.4.2.1, §E.4.3.1: FLV has one of each; other codecs are not written).
pub fn flv_tracks(tracks: &[Track]) -> (Option<&Track>, Option<&Track>) {
    let video = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video && t.codec == Codec::H264);
    let audio = tracks.iter().find(|t| {
        t.kind == TrackKind::Audio
            && matches!(t.codec, Codec::Aac | Codec::Mp3 | Codec::Alaw | Codec::Ulaw)
    });
    (video, audio)
}

/// Appends the body header of media packet `p` of `track` (H.264: 5 bytes, AAC: 2, MP3: 1;
/// §E.4.3.1 and §E.4.2.1) and returns the tag kind; `None` (and `out` unchanged) for tracks
/// FLV cannot carry. The packet's payload follows unchanged.
pub fn media_body_header(track: &Track, p: &PacketRef, out: &mut Vec<u8>) -> Option<TagKind> {
    match track.kind {
        TrackKind::Video => video_body_header(&track.codec, p.keyframe, p.offset as i32, out)
            .ok()
            .map(|()| TagKind::Video),
        TrackKind::Audio => audio_body_header(track, out).ok().map(|()| TagKind::Audio),
        TrackKind::Meta => None,
    }
}

/// Appends the sequence header body of `track` (AVC decoder configuration or AAC
/// AudioSpecificConfig, §E.4.3.1 / §E.4.2.1) and returns its tag kind; `None` (and `out`
/// unchanged) when the codec has none or the track has no init data.
pub fn sequence_header(track: &Track, out: &mut Vec<u8>) -> Option<TagKind> {
    match (track.kind, &track.codec) {
        (TrackKind::Video, Codec::H264) => video_sequence_header(track, out)
            .ok()
            .map(|()| TagKind::Video),
        (TrackKind::Audio, Codec::Aac) => audio_sequence_header(track, out)
            .ok()
            .map(|()| TagKind::Audio),
        _ => None,
    }
}

/// Appends a whole AVC sequence header body (§E.4.3.1): `0x17`, AVCPacketType 0,
/// CompositionTime 0, then the track's avcC (`init`). Errors for non-H.264 tracks and tracks
/// without init data; `out` is then unchanged.
pub fn video_sequence_header(track: &Track, out: &mut Vec<u8>) -> Result<(), FlvError> {
    if track.codec != Codec::H264 {
        return Err(FlvError::UnsupportedCodec(track.codec.as_str().to_owned()));
    }
    if track.init.is_empty() {
        return Err(FlvError::MissingInit { track: track.id });
    }
    out.extend_from_slice(&[(1 << 4) | VIDEO_CODEC_AVC, 0, 0, 0, 0]);
    out.extend_from_slice(&track.init);
    Ok(())
}

/// The SoundRate index (§E.4.2.1: 0 = 5.5 kHz, 1 = 11 kHz, 2 = 22 kHz, 3 = 44 kHz) nearest
/// below-or-at `rate` Hz; rates above 44.1 kHz use 3.
fn sound_rate_index(rate: u32) -> u8 {
    match rate {
        0..=8_000 => 0,
        8_001..=16_000 => 1,
        16_001..=32_000 => 2,
        _ => 3,
    }
}

/// Appends the audio body header of a media packet (§E.4.2.1):
/// - AAC: `0xAF` (SoundFormat 10, 44 kHz, 16-bit, stereo: fixed for AAC), AACPacketType 1;
/// - MP3: one byte, SoundFormat 2 (14, "MP3 8 kHz", when `rate` is 8000) | SoundRate from
///   `rate` | SoundSize (1 unless `bits` is 8) | SoundType (1 when `channels` > 1);
/// - G.711: one byte, SoundFormat 7 (A-law) or 8 (µ-law), SoundRate 0, SoundSize 1,
///   SoundType; the samples follow (8 kHz).
///
/// The raw frame follows unchanged. Other codecs: [`FlvError::UnsupportedCodec`].
pub fn audio_body_header(track: &Track, out: &mut Vec<u8>) -> Result<(), FlvError> {
    match track.codec {
        Codec::Aac => out.extend_from_slice(&[0xAF, 1]),
        Codec::Mp3 => {
            let (format, rate) = if track.rate == 8000 {
                (SOUND_MP3_8K, 0)
            } else {
                (SOUND_MP3, sound_rate_index(track.rate))
            };
            let size = u8::from(track.bits != 8);
            let stereo = u8::from(track.channels > 1);
            out.push((format << 4) | (rate << 2) | (size << 1) | stereo);
        }
        Codec::Alaw | Codec::Ulaw => {
            // SoundRate 0 and SoundSize 1 as ffmpeg writes them: G.711 in FLV is 8 kHz.
            let format = if track.codec == Codec::Alaw {
                SOUND_ALAW
            } else {
                SOUND_ULAW
            };
            out.push((format << 4) | (1 << 1) | u8::from(track.channels > 1));
        }
        ref c => return Err(FlvError::UnsupportedCodec(c.as_str().to_owned())),
    }
    Ok(())
}

/// Appends a whole AAC sequence header body (§E.4.2.1): `0xAF`, AACPacketType 0, then the
/// AudioSpecificConfig (`init`). Errors for non-AAC tracks (MP3 needs none) and for tracks
/// without init data; `out` is then unchanged.
pub fn audio_sequence_header(track: &Track, out: &mut Vec<u8>) -> Result<(), FlvError> {
    if track.codec != Codec::Aac {
        return Err(FlvError::UnsupportedCodec(track.codec.as_str().to_owned()));
    }
    if track.init.is_empty() {
        return Err(FlvError::MissingInit { track: track.id });
    }
    out.extend_from_slice(&[0xAF, 0]);
    out.extend_from_slice(&track.init);
    Ok(())
}

/// The `onMetaData` script data for `tracks` (§E.5): `[String("onMetaData"),
/// EcmaArray(…)]`, to be AMF0-encoded as a script tag or RTMP data message body.
///
/// `duration_ms`, when given, becomes the first member, `duration` in seconds (§E.5: "total
/// duration of the file in seconds"): players of progressive FLV (mpegts.js, VLC, ffmpeg
/// reading a pipe) take the length of the timeline from it. Give it only where the length
/// is known (an ended stream, a finished file); a live stream has none.
///
/// Uses the first H.264 video track (`width`, `height` px, `framerate` fps when known,
/// `videocodecid` 7, `videodatarate` kbit/s when known) and the first AAC or MP3 audio
/// track (`audiocodecid` 10 / 2, `audiosamplerate` Hz, `audiosamplesize` bits,
/// `audiochannels`, `stereo`, `audiodatarate` kbit/s when known), plus `hasVideo`/`hasAudio`.
pub fn on_metadata(tracks: &[Track], duration_ms: Option<u64>) -> Vec<Amf0> {
    let mut m: Vec<(String, Amf0)> = Vec::new();
    let mut put = |k: &str, v: Amf0| m.push((k.to_owned(), v));
    let kbps = |bytes_per_s: u32| Amf0::Number(f64::from(bytes_per_s) * 8.0 / 1000.0);
    let (video, audio) = flv_tracks(tracks);
    if let Some(ms) = duration_ms {
        put("duration", Amf0::Number(ms as f64 / 1000.0));
    }
    put("hasVideo", Amf0::Boolean(video.is_some()));
    put("hasAudio", Amf0::Boolean(audio.is_some()));
    if let Some(v) = video {
        put("width", Amf0::Number(f64::from(v.width)));
        put("height", Amf0::Number(f64::from(v.height)));
        if v.fpks > 0 {
            put("framerate", Amf0::Number(f64::from(v.fpks) / 1000.0));
        }
        put("videocodecid", Amf0::Number(f64::from(VIDEO_CODEC_AVC)));
        if v.bps > 0 {
            put("videodatarate", kbps(v.bps));
        }
    }
    if let Some(a) = audio {
        let id = if a.codec == Codec::Aac {
            SOUND_AAC
        } else {
            SOUND_MP3
        };
        put("audiocodecid", Amf0::Number(f64::from(id)));
        put("audiosamplerate", Amf0::Number(f64::from(a.rate)));
        put(
            "audiosamplesize",
            Amf0::Number(f64::from(if a.bits == 0 { 16 } else { a.bits })),
        );
        put("audiochannels", Amf0::Number(f64::from(a.channels)));
        put("stereo", Amf0::Boolean(a.channels > 1));
        if a.bps > 0 {
            put("audiodatarate", kbps(a.bps));
        }
    }
    vec![Amf0::string("onMetaData"), Amf0::EcmaArray(m)]
}

/// Where the `duration` number sits in an AMF0-encoded `onMetaData` body made by
/// [`on_metadata`] with a duration: the byte offset of its 8 bytes (an IEEE 754 double, big
/// endian; AMF0 §2.2), so that a file writer can put the length there once it is known.
/// `None` when the body has no `duration` member.
pub fn duration_offset(body: &[u8]) -> Option<usize> {
    // The member name (a UTF-8 string without marker: u16 length, bytes), then the value's
    // Number marker (0).
    const KEY: &[u8] = b"\x00\x08duration\x00";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    Some(at + KEY.len()).filter(|&n| n + 8 <= body.len())
}

/// How long (ms of media) [`FlvToDtsc`]'s first header waits for a track `onMetaData` named.
pub const TRACK_WAIT_MS: u64 = 1000;
/// How many bytes of packets [`FlvToDtsc`] holds back at most while its first header waits.
pub const TRACK_WAIT_BYTES: usize = 4 << 20;

/// FLV tags (an RTMP publish) to the DTSC frames a buffer reads (docs/DTSC.md, "Media packet"
/// and "Header (DTSC)"), sans-IO: a header whenever the tracks change, then each packet.
///
/// The first header waits, holding the packets behind it, while `onMetaData` named a track
/// that has not appeared yet ([`FlvIngest::awaiting_tracks`]): an MP3 track appears only with
/// its first frame, which may come after the first video keyframe, and a viewer that came in
/// between would find no audio track (a 415 for `/S.mp3`, a video-only HLS playlist). It
/// waits for [`TRACK_WAIT_MS`] of media or [`TRACK_WAIT_BYTES`] at most, then goes with the
/// tracks there are. Later changes go at once.
#[derive(Debug, Clone, Default)]
pub struct FlvToDtsc {
    ingest: FlvIngest,
    header_sent: bool,
    header_due: bool,
    /// Packets held behind the first header (and their payload bytes), and the first one's
    /// timestamp (ms).
    held: Vec<crate::Packet>,
    held_bytes: usize,
    held_from: Option<u64>,
    /// Packets taken (written or held), all tracks.
    pub packets: u64,
}

impl FlvToDtsc {
    /// A converter with no tracks.
    pub fn new() -> FlvToDtsc {
        FlvToDtsc::default()
    }

    /// Feeds one tag, as [`FlvIngest::push_tag`]; hands the DTSC frames it releases to
    /// `out` (a `Vec<u8>` gets their bytes). An error concerns this tag only (nothing was
    /// handed on): log it and go on.
    pub fn push_tag(
        &mut self,
        kind: TagKind,
        timestamp_ms: u64,
        body: &[u8],
        out: &mut impl crate::wire::FrameSink,
    ) -> Result<(), FlvError> {
        match self.ingest.push_tag(kind, timestamp_ms, body)? {
            Some(IngestEvent::TracksChanged) => self.header_due = true,
            Some(IngestEvent::Packet(p)) if self.header_due => {
                self.held_bytes += crate::wire::packet_frame_len(&p);
                self.held.push(crate::Packet {
                    track: p.track,
                    dts: p.dts,
                    offset: p.offset,
                    keyframe: p.keyframe,
                    bpos: p.bpos,
                    data: bytes::Bytes::copy_from_slice(p.data),
                });
                self.held_from.get_or_insert(timestamp_ms);
                self.packets += 1;
            }
            Some(IngestEvent::Packet(p)) if self.header_sent => {
                out.packet(&p);
                self.packets += 1;
            }
            // Media before any track: nothing can carry it yet.
            Some(IngestEvent::Packet(_)) | None => {}
        }
        let waited = self
            .held_from
            .is_some_and(|t| timestamp_ms >= t.saturating_add(TRACK_WAIT_MS))
            || self.held_bytes > TRACK_WAIT_BYTES;
        if self.header_due && (self.header_sent || !self.ingest.awaiting_tracks() || waited) {
            let h = crate::wire::Header {
                live: true,
                unixzero: None,
                tracks: self.ingest.tracks().to_vec(),
            };
            out.header(&h);
            for p in self.held.drain(..) {
                out.packet(&p.as_ref());
            }
            self.held_bytes = 0;
            (self.header_sent, self.header_due, self.held_from) = (true, false, None);
        }
        Ok(())
    }
}

/// What one tag did to an [`FlvIngest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestEvent<'a> {
    /// A track appeared or changed (init data, size, rate…): read [`FlvIngest::tracks`].
    TracksChanged,
    /// A media packet; the payload is borrowed from the tag body given.
    Packet(PacketRef<'a>),
}

/// Turns FLV tag bodies (from an FLV file or RTMP audio/video/data messages) into tracks and
/// packets, sans-IO: feed every tag to [`FlvIngest::push_tag`] in order.
///
/// - Video (H.264 only) becomes track [`VIDEO_TRACK_ID`]: the AVC sequence header sets its
///   init (avcC) and width, height and fpks from the SPS; each NALU tag becomes a packet
///   (DTS = tag timestamp, composition offset = CompositionTime, keyframe = FrameType 1,
///   payload = body after 5 bytes). NAL length sizes other than 4 are refused, as DTSC
///   payloads are 4-byte length-prefixed.
/// - Audio (AAC, MP3) becomes track [`AUDIO_TRACK_ID`]: the AAC sequence header sets init
///   (AudioSpecificConfig), rate and channels; raw AAC and MP3 tags become packets (payload
///   after the 2- / 1-byte header, keyframe false: the buffer adds virtual keyframes).
/// - Script data `onMetaData` sets the video frame rate when the SPS gave none, and makes
///   [`FlvIngest::awaiting_tracks`] report codecs announced but not seen yet.
///
/// Media tags that arrive before their track's sequence header, and empty payloads, are
/// skipped. The first MP3 tag (or one whose rate/channels differ) returns
/// [`IngestEvent::TracksChanged`] and its frame (about 26 ms) is dropped: one tag gives one
/// event.
#[derive(Debug, Clone, Default)]
pub struct FlvIngest {
    tracks: Vec<Track>,
    /// Frame rate (fpks) from `onMetaData`, applied when the SPS has no timing info.
    meta_fpks: u32,
    /// `onMetaData` named a video / audio codec.
    meta_video: bool,
    meta_audio: bool,
}

impl FlvIngest {
    /// An ingest with no tracks.
    pub fn new() -> FlvIngest {
        FlvIngest::default()
    }

    /// The tracks seen so far, in id order (video 1, audio 2).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// True when there is at least one track and every track has the init data its codec
    /// needs (H.264: avcC, AAC: AudioSpecificConfig; MP3: none). A caller waiting for both
    /// audio and video should also wait (with a timeout) while [`Self::awaiting_tracks`].
    pub fn ready(&self) -> bool {
        !self.tracks.is_empty()
            && self
                .tracks
                .iter()
                .all(|t| !matches!(t.codec, Codec::H264 | Codec::Aac) || !t.init.is_empty())
    }

    /// True while `onMetaData` announced a video or audio codec whose track has not appeared.
    pub fn awaiting_tracks(&self) -> bool {
        (self.meta_video && self.track(VIDEO_TRACK_ID).is_none())
            || (self.meta_audio && self.track(AUDIO_TRACK_ID).is_none())
    }

    fn track(&self, id: u32) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Stores `t` (replacing the track with its id); true when that changed anything.
    fn set_track(&mut self, t: Track) -> bool {
        match self.tracks.iter_mut().find(|x| x.id == t.id) {
            Some(old) if *old == t => false,
            Some(old) => {
                *old = t;
                true
            }
            None => {
                self.tracks.push(t);
                self.tracks.sort_by_key(|t| t.id);
                true
            }
        }
    }

    /// Feeds one tag: its kind, timestamp in ms (RTMP extended timestamps included, so no
    /// wrap handling) and body. Returns at most one event; `Ok(None)` for tags that change
    /// nothing (repeated sequence headers, end-of-sequence, skipped tags, other script data).
    /// Errors leave the state unchanged and concern this tag only: the caller may log and
    /// go on with the next tag.
    pub fn push_tag<'b>(
        &mut self,
        kind: TagKind,
        timestamp_ms: u64,
        body: &'b [u8],
    ) -> Result<Option<IngestEvent<'b>>, FlvError> {
        match kind {
            TagKind::Video => self.push_video(timestamp_ms, body),
            TagKind::Audio => self.push_audio(timestamp_ms, body),
            TagKind::Script => Ok(self.push_script(body)),
        }
    }

    fn push_video<'b>(
        &mut self,
        dts: u64,
        body: &'b [u8],
    ) -> Result<Option<IngestEvent<'b>>, FlvError> {
        let Some(&b0) = body.first() else {
            return Ok(None);
        };
        let frame_type = (b0 >> 4) & 0x7;
        if b0 & 0x80 != 0 {
            return Err(FlvError::UnsupportedVideoCodec { codec_id: b0 });
        }
        if frame_type == 5 {
            return Ok(None); // video info / command frame
        }
        if b0 & 0x0F != VIDEO_CODEC_AVC {
            return Err(FlvError::UnsupportedVideoCodec {
                codec_id: b0 & 0x0F,
            });
        }
        if body.len() < 5 {
            return Err(FlvError::Truncated {
                what: "AVC video tag header",
                need: 5,
                have: body.len(),
            });
        }
        let cts = i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8;
        let payload = &body[5..];
        match body[1] {
            0 => {
                let cfg =
                    h264::parse_avcc(payload).map_err(|e| FlvError::BadAvcC(e.to_string()))?;
                if cfg.nal_length_size != 4 {
                    return Err(FlvError::BadAvcC(format!(
                        "NAL length size {} (DTSC needs 4)",
                        cfg.nal_length_size
                    )));
                }
                let sps = cfg
                    .sps
                    .first()
                    .ok_or_else(|| FlvError::BadAvcC("no SPS".into()))?;
                let info = h264::parse_sps(sps).map_err(|e| FlvError::BadAvcC(e.to_string()))?;
                let mut t = Track::new(VIDEO_TRACK_ID, TrackKind::Video, Codec::H264);
                t.init = payload.to_vec();
                t.width = info.width;
                t.height = info.height;
                t.fpks = info.fpks().unwrap_or(self.meta_fpks);
                Ok(self.set_track(t).then_some(IngestEvent::TracksChanged))
            }
            1 => {
                let known = self
                    .track(VIDEO_TRACK_ID)
                    .is_some_and(|t| t.codec == Codec::H264 && !t.init.is_empty());
                if !known || payload.is_empty() {
                    return Ok(None);
                }
                Ok(Some(IngestEvent::Packet(PacketRef {
                    track: VIDEO_TRACK_ID,
                    dts,
                    offset: i64::from(cts),
                    keyframe: frame_type == 1,
                    bpos: 0,
                    data: payload,
                })))
            }
            2 => Ok(None), // end of sequence
            packet_type => Err(FlvError::BadPacketType {
                what: "AVC",
                packet_type,
            }),
        }
    }

    fn push_audio<'b>(
        &mut self,
        dts: u64,
        body: &'b [u8],
    ) -> Result<Option<IngestEvent<'b>>, FlvError> {
        let Some(&b0) = body.first() else {
            return Ok(None);
        };
        let packet = |data: &'b [u8]| {
            (!data.is_empty()).then_some(IngestEvent::Packet(PacketRef {
                track: AUDIO_TRACK_ID,
                dts,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data,
            }))
        };
        match b0 >> 4 {
            SOUND_AAC => {
                if body.len() < 2 {
                    return Err(FlvError::Truncated {
                        what: "AAC audio tag header",
                        need: 2,
                        have: body.len(),
                    });
                }
                let payload = &body[2..];
                match body[1] {
                    0 => {
                        let info = parse_asc(payload).map_err(FlvError::BadAsc)?;
                        let mut t = Track::new(AUDIO_TRACK_ID, TrackKind::Audio, Codec::Aac);
                        t.init = payload.to_vec();
                        t.rate = info.rate;
                        t.channels = info.channels;
                        t.bits = 16;
                        Ok(self.set_track(t).then_some(IngestEvent::TracksChanged))
                    }
                    1 => {
                        let known = self
                            .track(AUDIO_TRACK_ID)
                            .is_some_and(|t| t.codec == Codec::Aac && !t.init.is_empty());
                        Ok(if known { packet(payload) } else { None })
                    }
                    packet_type => Err(FlvError::BadPacketType {
                        what: "AAC",
                        packet_type,
                    }),
                }
            }
            format @ (SOUND_MP3 | SOUND_MP3_8K) => {
                let mut t = Track::new(AUDIO_TRACK_ID, TrackKind::Audio, Codec::Mp3);
                t.rate = if format == SOUND_MP3_8K {
                    8000
                } else {
                    [5512, 11025, 22050, 44100][usize::from((b0 >> 2) & 3)]
                };
                t.bits = if b0 & 0x02 != 0 { 16 } else { 8 };
                t.channels = if b0 & 0x01 != 0 { 2 } else { 1 };
                if self.set_track(t) {
                    return Ok(Some(IngestEvent::TracksChanged));
                }
                Ok(packet(&body[1..]))
            }
            format @ (SOUND_ALAW | SOUND_ULAW) => {
                let codec = if format == SOUND_ALAW {
                    Codec::Alaw
                } else {
                    Codec::Ulaw
                };
                let mut t = Track::new(AUDIO_TRACK_ID, TrackKind::Audio, codec);
                t.rate = 8000;
                t.bits = 8;
                t.channels = if b0 & 0x01 != 0 { 2 } else { 1 };
                if self.set_track(t) {
                    return Ok(Some(IngestEvent::TracksChanged));
                }
                Ok(packet(&body[1..]))
            }
            sound_format => Err(FlvError::UnsupportedAudioFormat { sound_format }),
        }
    }

    /// Reads `onMetaData` (also behind `@setDataFrame`, as RTMP publishers send it);
    /// malformed or other script data is ignored.
    fn push_script<'b>(&mut self, body: &[u8]) -> Option<IngestEvent<'b>> {
        let mut rest = body;
        let mut name = None;
        for _ in 0..2 {
            let (v, n) = amf0::decode(rest).ok()?;
            rest = rest.get(n..)?;
            match v.as_str() {
                Some("@setDataFrame") => continue,
                Some(s) => {
                    name = Some(s.to_owned());
                    break;
                }
                None => return None,
            }
        }
        if name.as_deref() != Some("onMetaData") {
            return None;
        }
        let (meta, _) = amf0::decode(rest).ok()?;
        meta.members()?;
        let num = |k: &str| meta.get(k).and_then(Amf0::as_f64);
        self.meta_video |= meta.get("videocodecid").is_some();
        self.meta_audio |= meta.get("audiocodecid").is_some();
        let fps = num("framerate").or_else(|| num("fps")).unwrap_or(0.0);
        if fps.is_finite() && fps > 0.0 && fps < 1_000_000.0 {
            self.meta_fpks = (fps * 1000.0).round() as u32;
        }
        let mut video = self.track(VIDEO_TRACK_ID)?.clone();
        if video.fpks == 0 && self.meta_fpks != 0 {
            video.fpks = self.meta_fpks;
            return self.set_track(video).then_some(IngestEvent::TracksChanged);
        }
        None
    }
}

/// A minimal AudioSpecificConfig reader (ISO/IEC 14496-3 §1.6.2.1), private to FLV ingest.
mod aac_asc_impl {
    /// What the ingest needs from an AudioSpecificConfig.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct AscInfo {
        /// Sample rate, Hz.
        pub rate: u32,
        /// Channels (channelConfiguration; 7 means 8 channels, 0 means defined in a PCE).
        pub channels: u32,
    }

    /// Sample rates by samplingFrequencyIndex (ISO/IEC 14496-3 Table 1.18).
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];

    /// Reads audioObjectType (5 bits, 31 = escape to 6 more), samplingFrequencyIndex (4 bits,
    /// 0xF = a 24-bit rate follows) and channelConfiguration (4 bits).
    pub fn parse_asc(asc: &[u8]) -> Result<AscInfo, &'static str> {
        let mut bit = 0usize;
        let mut read = |n: usize| -> Result<u32, &'static str> {
            let mut v = 0u32;
            for _ in 0..n {
                let byte = asc.get(bit / 8).ok_or("truncated")?;
                v = (v << 1) | u32::from((byte >> (7 - bit % 8)) & 1);
                bit += 1;
            }
            Ok(v)
        };
        let aot = read(5)?;
        if aot == 0 {
            return Err("audioObjectType 0");
        }
        if aot == 31 {
            read(6)?;
        }
        let index = read(4)? as usize;
        let rate = match index {
            0xF => read(24)?,
            i if i < RATES.len() => RATES[i],
            _ => return Err("reserved samplingFrequencyIndex"),
        };
        if rate == 0 {
            return Err("sample rate 0");
        }
        let channels = match read(4)? {
            7 => 8,
            c if c < 8 => c,
            _ => return Err("reserved channelConfiguration"),
        };
        Ok(AscInfo { rate, channels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real x264 High-profile (100) level 3.0 SPS: 640x368 macroblocks cropped to 640x360,
    /// VUI timing 50/2 = 25 fps; contains emulation prevention bytes.
    const SPS_640X360: [u8; 25] = [
        0x67, 0x64, 0x00, 0x1E, 0xAC, 0xD9, 0x40, 0xA0, 0x2F, 0xF9, 0x61, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0F, 0x16, 0x2D, 0x96,
    ];
    const PPS: [u8; 5] = [0x68, 0xEB, 0xE3, 0xCB, 0x22];

    fn avcc(sps: &[u8]) -> Vec<u8> {
        let mut a = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        a.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        a.extend_from_slice(sps);
        a.push(1);
        a.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        a.extend_from_slice(&PPS);
        a
    }

    /// Bit writer for hand-built SPS tests.
    #[derive(Default)]
    struct Bw {
        bits: Vec<bool>,
    }
    impl Bw {
        fn u(&mut self, n: u32, v: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u32) -> &mut Self {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            self.u(n - 1, 0).u(n, x)
        }
        fn se(&mut self, v: i32) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                (-2 * v) as u32
            })
        }
        /// RBSP trailing bits, then emulation prevention.
        fn nal(&mut self) -> Vec<u8> {
            self.u(1, 1);
            self.bits.resize(self.bits.len().next_multiple_of(8), false);
            let raw: Vec<u8> = self
                .bits
                .chunks(8)
                .map(|c| c.iter().fold(0u8, |a, &b| (a << 1) | u8::from(b)))
                .collect();
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in raw {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    /// A High-profile SPS with scaling lists, 1280x720 (45 map units, no cropping needed).
    fn sps_with_scaling_lists() -> Vec<u8> {
        let mut w = Bw::default();
        w.u(8, 100).u(8, 0).u(8, 31).ue(0); // profile, flags, level, sps id
        w.ue(1).ue(0).ue(0).u(1, 0); // chroma 4:2:0, 8-bit, no bypass
        w.u(1, 1); // seq_scaling_matrix_present
        for i in 0..8 {
            w.u(1, 1);
            let size = if i < 6 { 16 } else { 64 };
            // deltas: +1 then -1 … then a delta ending the list early (next_scale 0).
            for j in 0..size {
                if j == 5 {
                    let last = 8 + 1 - 1 + 1 - 1 + 1; // 9
                    w.se(-last);
                    break;
                }
                w.se(if j % 2 == 0 { 1 } else { -1 });
            }
        }
        w.ue(0).ue(0).ue(2).ue(4).u(1, 0); // frame num, poc type 0, lsb, refs, gaps
        w.ue(79).ue(44).u(1, 1).u(1, 1).u(1, 0); // 80x45 MBs, frame_mbs_only, direct, no crop
        w.u(1, 0); // no VUI
        w.nal()
    }

    #[test]
    fn file_header_round_trip_and_data_offset() {
        let mut out = Vec::new();
        write_file_header(true, true, &mut out);
        assert_eq!(out, [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]);
        let want = FileHeader {
            version: 1,
            has_audio: true,
            has_video: true,
        };
        assert_eq!(parse_file_header(&out), Ok(Some((want, 13))));
        for cut in 0..13 {
            assert_eq!(parse_file_header(&out[..cut]), Ok(None));
        }
        let long = [b'F', b'L', b'V', 1, 1, 0, 0, 0, 12, 9, 9, 9, 0, 0, 0, 0];
        let (h, n) = parse_file_header(&long).unwrap().unwrap();
        assert!(h.has_video && !h.has_audio);
        assert_eq!(n, 16);
        assert!(matches!(
            parse_file_header(b"FLV\x01\x05\0\0\0\x02"),
            Err(FlvError::BadDataOffset { data_offset: 2 })
        ));
        assert!(matches!(
            parse_file_header(b"GIF8"),
            Err(FlvError::NotFlv { .. })
        ));
    }

    #[test]
    fn video_header_golden_bytes_with_cts() {
        let mut out = Vec::new();
        video_body_header(&Codec::H264, true, 80, &mut out).unwrap();
        assert_eq!(out, [0x17, 0x01, 0x00, 0x00, 0x50]);
        out.clear();
        video_body_header(&Codec::H264, false, -40, &mut out).unwrap();
        assert_eq!(out, [0x27, 0x01, 0xFF, 0xFF, 0xD8]);
        out.clear();
        video_body_header(&Codec::H264, false, i32::MIN, &mut out).unwrap();
        assert_eq!(out, [0x27, 0x01, 0x80, 0x00, 0x00]);
        assert!(video_body_header(&Codec::Hevc, true, 0, &mut Vec::new()).is_err());
    }

    #[test]
    fn audio_headers_golden_bytes() {
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.init = vec![0x11, 0x90];
        let mut out = Vec::new();
        audio_body_header(&a, &mut out).unwrap();
        assert_eq!(out, [0xAF, 0x01]);
        out.clear();
        audio_sequence_header(&a, &mut out).unwrap();
        assert_eq!(out, [0xAF, 0x00, 0x11, 0x90]);
        let mut m = Track::new(2, TrackKind::Audio, Codec::Mp3);
        (m.rate, m.bits, m.channels) = (44100, 16, 2);
        out.clear();
        audio_body_header(&m, &mut out).unwrap();
        assert_eq!(out, [0x2F]);
        (m.rate, m.channels) = (22050, 1);
        out.clear();
        audio_body_header(&m, &mut out).unwrap();
        assert_eq!(out, [0x2A]);
        assert!(matches!(
            audio_sequence_header(&m, &mut Vec::new()),
            Err(FlvError::UnsupportedCodec(_))
        ));
    }

    #[test]
    fn tag_round_trip_and_extended_timestamp() {
        let body = [0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65];
        let mut out = Vec::new();
        write_tag_header(TagKind::Video, 0x1234_5678, body.len(), &mut out);
        assert_eq!(out, [9, 0, 0, 10, 0x34, 0x56, 0x78, 0x12, 0, 0, 0]);
        out.extend_from_slice(&body);
        write_prev_tag_size(body.len(), &mut out);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 21]);
        write_tag(TagKind::Audio, 7, &[0xAF, 1, 0x21], &mut out);
        let (t, n) = parse_tag(&out).unwrap().unwrap();
        assert_eq!(n, 25);
        assert_eq!(
            t,
            Tag {
                kind: TagKind::Video,
                timestamp: 0x1234_5678,
                body: &body
            }
        );
        for cut in 0..n {
            assert_eq!(parse_tag(&out[..cut]), Ok(None));
        }
        let (t, m) = parse_tag(&out[n..]).unwrap().unwrap();
        assert_eq!(
            (t.kind, t.timestamp, t.body, m),
            (TagKind::Audio, 7, &[0xAF, 1, 0x21][..], 18)
        );
        assert!(matches!(
            parse_tag(&[7]),
            Err(FlvError::UnknownTagType { tag_type: 7, .. })
        ));
        assert!(matches!(
            parse_tag(&[0x28]),
            Err(FlvError::Encrypted { .. })
        ));
    }

    fn ingest_avc(ing: &mut FlvIngest, sps: &[u8]) {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&avcc(sps));
        assert_eq!(
            ing.push_tag(TagKind::Video, 0, &body),
            Ok(Some(IngestEvent::TracksChanged))
        );
        assert_eq!(ing.push_tag(TagKind::Video, 0, &body), Ok(None));
    }

    #[test]
    fn ingest_avc_sequence_header_gives_640x360() {
        let mut ing = FlvIngest::new();
        assert!(!ing.ready());
        ingest_avc(&mut ing, &SPS_640X360);
        let v = &ing.tracks()[0];
        assert_eq!((v.id, v.width, v.height, v.fpks), (1, 640, 360, 25000));
        assert_eq!(v.init, avcc(&SPS_640X360));
        assert_eq!(v.dtsc_name(), "video_H264_640x360_25fps_1");
        assert!(ing.ready());
        // Round trip through the writer.
        let mut out = Vec::new();
        video_sequence_header(v, &mut out).unwrap();
        assert_eq!(&out[..5], &[0x17, 0, 0, 0, 0]);
        assert_eq!(&out[5..], &v.init[..]);
    }

    #[test]
    fn ingest_sps_with_scaling_lists() {
        let mut ing = FlvIngest::new();
        ingest_avc(&mut ing, &sps_with_scaling_lists());
        let v = &ing.tracks()[0];
        assert_eq!((v.width, v.height, v.fpks), (1280, 720, 0));
    }

    /// The frames of a DTSC stream: per frame, `Ok(track count)` for a header or
    /// `Err((track, DTS))` for a packet.
    fn dtsc_frames(mut buf: &[u8]) -> Vec<Result<usize, (u32, u64)>> {
        let mut out = Vec::new();
        while let Some((f, n)) = crate::wire::parse_frame(buf).unwrap() {
            out.push(match f {
                crate::wire::Frame::Header(v) => {
                    Ok(crate::wire::Header::from_value(&v).unwrap().tracks.len())
                }
                crate::wire::Frame::Packet(p) => Err((p.track, p.dts)),
                _ => panic!("unexpected frame"),
            });
            buf = &buf[n..];
        }
        out
    }

    /// `onMetaData` naming H.264 video and MP3 audio, as ffmpeg sends it for `-c:a mp3`.
    fn h264_mp3_metadata() -> Vec<u8> {
        let v = Track::new(1, TrackKind::Video, Codec::H264);
        let a = Track::new(2, TrackKind::Audio, Codec::Mp3);
        let mut body = Vec::new();
        amf0::encode_all(&on_metadata(&[v, a], None), &mut body);
        body
    }

    #[test]
    fn flv_to_dtsc_holds_the_first_header_for_an_announced_mp3_track() {
        let mut c = FlvToDtsc::new();
        let mut out = Vec::new();
        let seq = [&[0x17, 0, 0, 0, 0][..], &avcc(&SPS_640X360)].concat();
        let key = [0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65];
        let mp3 = [0x2E, 0xFF, 0xFB, 0x90, 0x00];
        c.push_tag(TagKind::Script, 0, &h264_mp3_metadata(), &mut out)
            .unwrap();
        c.push_tag(TagKind::Video, 0, &seq, &mut out).unwrap();
        c.push_tag(TagKind::Video, 0, &key, &mut out).unwrap();
        assert!(out.is_empty(), "the header waits for the MP3 track");
        // The first MP3 frame makes the track (the frame itself is dropped): one header
        // with both tracks, then the held keyframe; later frames go at once.
        c.push_tag(TagKind::Audio, 10, &mp3, &mut out).unwrap();
        c.push_tag(TagKind::Audio, 36, &mp3, &mut out).unwrap();
        assert_eq!(dtsc_frames(&out), [Ok(2), Err((1, 0)), Err((2, 36))]);
        assert_eq!(c.packets, 2);
    }

    #[test]
    fn flv_to_dtsc_waits_a_second_of_media_at_most_and_not_without_metadata() {
        let seq = [&[0x17, 0, 0, 0, 0][..], &avcc(&SPS_640X360)].concat();
        let frame = [0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41];
        // The MP3 track never comes: the header goes with video alone once the held
        // packets span TRACK_WAIT_MS.
        let mut c = FlvToDtsc::new();
        let mut out = Vec::new();
        c.push_tag(TagKind::Script, 0, &h264_mp3_metadata(), &mut out)
            .unwrap();
        c.push_tag(TagKind::Video, 0, &seq, &mut out).unwrap();
        for ts in (0..TRACK_WAIT_MS).step_by(40) {
            c.push_tag(TagKind::Video, ts, &frame, &mut out).unwrap();
        }
        assert!(out.is_empty());
        c.push_tag(TagKind::Video, TRACK_WAIT_MS, &frame, &mut out)
            .unwrap();
        let frames = dtsc_frames(&out);
        assert_eq!(frames[0], Ok(1));
        assert_eq!(frames.len(), 1 + 26, "every held packet, in order");
        assert_eq!(frames[26], Err((1, TRACK_WAIT_MS)));
        // Without onMetaData nothing is awaited: the header goes with the first track.
        let mut c = FlvToDtsc::new();
        let mut out = Vec::new();
        c.push_tag(TagKind::Video, 0, &seq, &mut out).unwrap();
        c.push_tag(TagKind::Video, 0, &frame, &mut out).unwrap();
        assert_eq!(dtsc_frames(&out), [Ok(1), Err((1, 0))]);
        // A bad tag is an error for that tag alone.
        assert!(c
            .push_tag(TagKind::Video, 40, &[0x17, 0, 0, 0, 0, 9], &mut out)
            .is_err());
        c.push_tag(TagKind::Video, 80, &frame, &mut out).unwrap();
        assert_eq!(dtsc_frames(&out).len(), 3);
    }

    #[test]
    fn ingest_avc_packets() {
        let mut ing = FlvIngest::new();
        let nalu = [0x27, 1, 0xFF, 0xFF, 0xD8, 0, 0, 0, 1, 0x41];
        // Before the sequence header: skipped.
        assert_eq!(ing.push_tag(TagKind::Video, 40, &nalu), Ok(None));
        ingest_avc(&mut ing, &SPS_640X360);
        let Ok(Some(IngestEvent::Packet(p))) = ing.push_tag(TagKind::Video, 40, &nalu) else {
            panic!("no packet")
        };
        assert_eq!(
            (p.track, p.dts, p.offset, p.keyframe, p.data),
            (1, 40, -40, false, &nalu[5..])
        );
        let key = [0x17, 1, 0, 0, 0x50, 0, 0, 0, 1, 0x65];
        let Ok(Some(IngestEvent::Packet(p))) = ing.push_tag(TagKind::Video, 1 << 33, &key) else {
            panic!("no packet")
        };
        assert_eq!((p.dts, p.offset, p.keyframe), (1 << 33, 80, true));
        assert_eq!(
            ing.push_tag(TagKind::Video, 0, &[0x17, 1, 0, 0, 0]),
            Ok(None)
        );
        assert_eq!(
            ing.push_tag(TagKind::Video, 0, &[0x17, 2, 0, 0, 0]),
            Ok(None)
        );
        assert!(matches!(
            ing.push_tag(TagKind::Video, 0, &[0x12, 1, 0, 0, 0]),
            Err(FlvError::UnsupportedVideoCodec { codec_id: 2 })
        ));
        assert!(matches!(
            ing.push_tag(TagKind::Video, 0, &[0x17, 1]),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn ingest_aac() {
        let mut ing = FlvIngest::new();
        // AAC-LC 48 kHz stereo: 00010 0011 0010 000
        assert_eq!(
            ing.push_tag(TagKind::Audio, 0, &[0xAF, 0, 0x11, 0x90]),
            Ok(Some(IngestEvent::TracksChanged))
        );
        let a = &ing.tracks()[0];
        assert_eq!((a.id, a.rate, a.channels, a.bits), (2, 48000, 2, 16));
        assert_eq!(a.dtsc_name(), "audio_AAC_2ch_48000hz_2");
        assert!(ing.ready());
        let body = [0xAF, 1, 0x21, 0x10];
        assert_eq!(
            ing.push_tag(TagKind::Audio, 23, &body),
            Ok(Some(IngestEvent::Packet(PacketRef {
                track: 2,
                dts: 23,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &body[2..],
            })))
        );
        // Escape index 0xF with an explicit 24-bit rate (12345 Hz), mono.
        // aot 2 (00010), index 1111, rate 24 bits, channels 0001.
        let rate: u64 = 12345;
        let fields: u64 = (2 << 32) | (0xF << 28) | (rate << 4) | 1; // 37 bits
        let asc = (fields << 3).to_be_bytes()[3..].to_vec(); // padded to 40 bits
        let mut body = vec![0xAF, 0];
        body.extend_from_slice(&asc);
        assert_eq!(
            ing.push_tag(TagKind::Audio, 0, &body),
            Ok(Some(IngestEvent::TracksChanged))
        );
        let a = &ing.tracks()[0];
        assert_eq!((a.rate, a.channels), (12345, 1));
        assert!(ing
            .push_tag(TagKind::Audio, 0, &[0xAF, 0, 0x17, 0x90])
            .is_err());
    }

    #[test]
    fn ingest_mp3_and_both_tracks() {
        let mut ing = FlvIngest::new();
        assert_eq!(
            ing.push_tag(TagKind::Audio, 0, &[0x2E, 0xFF, 0xFB]),
            Ok(Some(IngestEvent::TracksChanged))
        );
        let a = &ing.tracks()[0];
        assert_eq!(
            (a.codec.clone(), a.rate, a.channels, a.bits),
            (Codec::Mp3, 44100, 1, 16)
        );
        assert!(ing.ready());
        let Ok(Some(IngestEvent::Packet(p))) =
            ing.push_tag(TagKind::Audio, 26, &[0x2E, 0xFF, 0xFB])
        else {
            panic!("no packet")
        };
        assert_eq!((p.track, p.dts, p.data), (2, 26, &[0xFF, 0xFB][..]));
        ingest_avc(&mut ing, &SPS_640X360);
        let ids: Vec<u32> = ing.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(matches!(
            ing.push_tag(TagKind::Audio, 0, &[0x6F, 0]),
            Err(FlvError::UnsupportedAudioFormat { sound_format: 6 })
        ));
    }

    #[test]
    fn on_metadata_round_trip_through_ingest() {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        (v.width, v.height, v.fpks) = (640, 360, 30000);
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        (a.rate, a.channels, a.bits) = (44100, 2, 16);
        let live = on_metadata(&[v.clone(), a.clone()], None);
        assert_eq!(live[1].get("duration"), None);
        let meta = on_metadata(&[v, a], Some(10_031));
        assert_eq!(meta[0], Amf0::string("onMetaData"));
        let m = &meta[1];
        let Amf0::EcmaArray(members) = m else {
            panic!("{m:?}")
        };
        assert_eq!(members[0], ("duration".into(), Amf0::Number(10.031)));
        let mut body = Vec::new();
        amf0::encode_all(&meta, &mut body);
        let at = duration_offset(&body).unwrap();
        assert_eq!(body[at..at + 8], 10.031f64.to_be_bytes());
        body.clear();
        amf0::encode_all(&live, &mut body);
        assert_eq!(duration_offset(&body), None);
        assert_eq!(m.get("width"), Some(&Amf0::Number(640.0)));
        assert_eq!(m.get("framerate"), Some(&Amf0::Number(30.0)));
        assert_eq!(m.get("videocodecid"), Some(&Amf0::Number(7.0)));
        assert_eq!(m.get("audiocodecid"), Some(&Amf0::Number(10.0)));
        assert_eq!(m.get("audiosamplerate"), Some(&Amf0::Number(44100.0)));
        assert_eq!(m.get("stereo"), Some(&Amf0::Boolean(true)));

        // Feed it as a script tag (behind @setDataFrame, as RTMP sends it).
        let mut body = Vec::new();
        amf0::encode(&Amf0::string("@setDataFrame"), &mut body);
        amf0::encode_all(&meta, &mut body);
        let mut ing = FlvIngest::new();
        assert_eq!(ing.push_tag(TagKind::Script, 0, &body), Ok(None));
        assert!(ing.awaiting_tracks());
        // An SPS without timing info takes the metadata frame rate.
        ingest_avc(&mut ing, &sps_with_scaling_lists());
        assert_eq!(ing.tracks()[0].fpks, 30000);
        assert!(ing.awaiting_tracks());
        ing.push_tag(TagKind::Audio, 0, &[0xAF, 0, 0x12, 0x10])
            .unwrap();
        assert!(!ing.awaiting_tracks());
        assert!(ing.ready());
    }

    proptest! {
        #[test]
        fn parse_tag_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_tag(&bytes);
            let _ = parse_file_header(&bytes);
        }

        #[test]
        fn ingest_never_panics(
            tags in proptest::collection::vec(
                (prop_oneof![Just(TagKind::Audio), Just(TagKind::Video), Just(TagKind::Script)],
                 any::<u64>(),
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..16),
        ) {
            let mut ing = FlvIngest::new();
            for (kind, ts, body) in &tags {
                let _ = ing.push_tag(*kind, *ts, body);
            }
            let _ = ing.ready();
        }

        #[test]
        fn ingest_never_panics_on_plausible_headers(
            hdr in prop_oneof![Just(vec![0x17u8, 0, 0, 0, 0, 1]), Just(vec![0xAF, 0])],
            tail in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut body = hdr.clone();
            body.extend_from_slice(&tail);
            let mut ing = FlvIngest::new();
            let kind = if hdr[0] == 0xAF { TagKind::Audio } else { TagKind::Video };
            let _ = ing.push_tag(kind, 0, &body);
        }
    }
}
