//! Offline conversion between the containers `dtsc` reads and writes, found through one table
//! of formats (as FFmpeg's libavformat maps names to muxers), never a chain of `if ext == …`.
//!
//! Supported now: FLV → DTSC and DTSC → FLV (H.264/AAC/MP3). MistServer's own DTSC conversion
//! is broken in its current release; Sluice's writes a file whose header has every track and
//! whose `DTP2` packets follow in file order, as `.dtsc` files are (dtsc.md, "Files").

use anyhow::{bail, Context, Result};
use dtsc::flv::{self, FlvIngest, IngestEvent, TagKind};
use dtsc::wire::{self, Frame, Header};
use dtsc::{Codec, Packet, Track, TrackKind};

/// A whole file's tracks and packets.
pub type Media = (Vec<Track>, Vec<Packet>);
/// Reads a whole file.
pub type ReadFn = fn(&[u8]) -> Result<Media>;
/// Writes tracks and packets as a whole file.
pub type WriteFn = fn(&[Track], &[Packet], &mut Vec<u8>) -> Result<()>;

/// A container format: its name, file extensions, reader and writer.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// Short name (`flv`, `dtsc`).
    pub name: &'static str,
    /// File extensions, without the dot.
    pub extensions: &'static [&'static str],
    /// Reads a whole file into tracks and packets.
    pub read: ReadFn,
    /// Writes tracks and packets as a whole file.
    pub write: WriteFn,
}

/// Every format the converters know.
pub const FORMATS: &[Format] = &[
    Format {
        name: "flv",
        extensions: &["flv"],
        read: read_flv,
        write: write_flv,
    },
    Format {
        name: "dtsc",
        extensions: &["dtsc"],
        read: read_dtsc,
        write: write_dtsc,
    },
];

/// The format of a path, by its extension.
pub fn format_for(path: &str) -> Option<&'static Format> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    FORMATS
        .iter()
        .find(|f| f.extensions.contains(&ext.as_str()))
}

/// Reads an FLV file (FLV spec v10.1 Annex E) into tracks and packets.
pub fn read_flv(bytes: &[u8]) -> Result<Media> {
    let Some((_, mut at)) = flv::parse_file_header(bytes)? else {
        bail!("truncated FLV header");
    };
    let mut ingest = FlvIngest::new();
    let mut packets = Vec::new();
    while at < bytes.len() {
        let Some((tag, used)) =
            flv::parse_tag(&bytes[at..]).with_context(|| format!("FLV tag at byte {at}"))?
        else {
            break;
        };
        let bpos = at as u64;
        at += used;
        if let Some(IngestEvent::Packet(p)) =
            ingest.push_tag(tag.kind, tag.timestamp as u64, tag.body)?
        {
            let mut p = p.to_owned();
            p.bpos = bpos;
            packets.push(p);
        }
    }
    Ok((ingest.tracks().to_vec(), packets))
}

/// Reads a `.dtsc` file: a `DTSC` header, then `DTP2` packets.
pub fn read_dtsc(bytes: &[u8]) -> Result<Media> {
    let mut at = 0;
    let mut tracks = None;
    let mut packets = Vec::new();
    while at < bytes.len() {
        let Some((frame, used)) =
            wire::parse_frame(&bytes[at..]).with_context(|| format!("DTSC frame at byte {at}"))?
        else {
            bail!("truncated DTSC frame at byte {at}");
        };
        match frame {
            Frame::Header(v) if tracks.is_none() => tracks = Some(Header::from_value(&v)?.tracks),
            Frame::Packet(p) => packets.push(p.to_owned()),
            _ => {}
        }
        at += used;
    }
    Ok((tracks.context("no DTSC header")?, packets))
}

/// Writes tracks and packets as a `.dtsc` file (a VoD header with first/last ms, then the
/// packets).
pub fn write_dtsc(tracks: &[Track], packets: &[Packet], out: &mut Vec<u8>) -> Result<()> {
    let mut tracks = tracks.to_vec();
    for t in &mut tracks {
        let mine = packets.iter().filter(|p| p.track == t.id);
        t.firstms = mine.clone().map(|p| p.dts).min().unwrap_or(0);
        t.lastms = mine.clone().map(|p| p.dts).max().unwrap_or(0);
        let bytes: u64 = mine.map(|p| p.data.len() as u64).sum();
        let secs = ((t.lastms - t.firstms) as f64 / 1000.0).max(0.001);
        t.bps = (bytes as f64 / secs) as u32;
    }
    wire::write_header(
        &Header {
            live: false,
            unixzero: None,
            tracks,
        },
        out,
    );
    for p in packets {
        wire::write_packet(&p.as_ref(), out);
    }
    Ok(())
}

/// Writes tracks and packets as an FLV file: header, onMetaData, sequence headers, then one
/// tag per packet.
pub fn write_flv(tracks: &[Track], packets: &[Packet], out: &mut Vec<u8>) -> Result<()> {
    let has = |k| tracks.iter().any(|t| t.kind == k);
    flv::write_file_header(has(TrackKind::Audio), has(TrackKind::Video), out);
    let mut body = Vec::new();
    for v in flv::on_metadata(tracks) {
        dtsc::amf0::encode(&v, &mut body);
    }
    flv::write_tag(TagKind::Script, 0, &body, out);
    for t in tracks {
        body.clear();
        match (t.kind, &t.codec) {
            (TrackKind::Video, Codec::H264) => {
                flv::video_sequence_header(t, &mut body)?;
                flv::write_tag(TagKind::Video, 0, &body, out);
            }
            (TrackKind::Audio, Codec::Aac) => {
                flv::audio_sequence_header(t, &mut body)?;
                flv::write_tag(TagKind::Audio, 0, &body, out);
            }
            _ => {}
        }
    }
    for p in packets {
        let Some(t) = tracks.iter().find(|t| t.id == p.track) else {
            continue;
        };
        body.clear();
        let kind = match t.kind {
            TrackKind::Video => {
                flv::video_body_header(&t.codec, p.keyframe, p.offset as i32, &mut body)?;
                TagKind::Video
            }
            TrackKind::Audio => {
                flv::audio_body_header(t, &mut body)?;
                TagKind::Audio
            }
            TrackKind::Meta => continue,
        };
        body.extend_from_slice(&p.data);
        flv::write_tag(kind, p.dts as u32, &body, out);
    }
    Ok(())
}

/// Converts the file at `input` to `output`, formats by extension. Returns the packet count.
pub fn convert(input: &str, output: &str) -> Result<usize> {
    let from = format_for(input).with_context(|| format!("{input}: unknown input format"))?;
    let to = format_for(output).with_context(|| format!("{output}: unknown output format"))?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let (tracks, packets) = (from.read)(&bytes).with_context(|| format!("reading {input}"))?;
    if tracks.is_empty() {
        bail!("{input}: no tracks");
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    (to.write)(&tracks, &packets, &mut out)?;
    std::fs::write(output, &out).with_context(|| format!("writing {output}"))?;
    Ok(packets.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sample() -> (Vec<Track>, Vec<Packet>) {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        // avcC of a 640x360 High-profile stream with one SPS and one PPS.
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let cfg = dtsc::h264::AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        dtsc::h264::write_avcc(&cfg, &mut v.init).unwrap();
        v.width = 640;
        v.height = 360;
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.init = vec![0x12, 0x10];
        a.rate = 44100;
        a.channels = 2;
        a.bits = 16;
        let mut packets = Vec::new();
        for i in 0..50u64 {
            packets.push(Packet {
                track: 1,
                dts: i * 40,
                offset: if i % 2 == 1 { 80 } else { 0 },
                keyframe: i % 25 == 0,
                bpos: 0,
                data: Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
            });
            packets.push(Packet {
                track: 2,
                dts: i * 40 + 3,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: Bytes::from(vec![0x21, i as u8, 7]),
            });
        }
        (vec![v, a], packets)
    }

    fn strip(p: &[Packet]) -> Vec<(u32, u64, i64, bool, Bytes)> {
        p.iter()
            .map(|p| (p.track, p.dts, p.offset, p.keyframe, p.data.clone()))
            .collect()
    }

    #[test]
    fn flv_dtsc_flv_keeps_every_packet() {
        let (tracks, packets) = sample();
        let mut flv_bytes = Vec::new();
        write_flv(&tracks, &packets, &mut flv_bytes).unwrap();
        let (t1, p1) = read_flv(&flv_bytes).unwrap();
        assert_eq!(strip(&p1), strip(&packets));
        assert_eq!(t1[0].width, 640);
        let mut dtsc_bytes = Vec::new();
        write_dtsc(&t1, &p1, &mut dtsc_bytes).unwrap();
        assert_eq!(&dtsc_bytes[..4], b"DTSC");
        let (t2, p2) = read_dtsc(&dtsc_bytes).unwrap();
        assert_eq!(strip(&p2), strip(&packets));
        assert_eq!(t2[0].init, tracks[0].init);
        assert_eq!(t2[1].init, tracks[1].init);
        assert_eq!(t2[0].lastms, 49 * 40);
        let mut again = Vec::new();
        write_flv(&t2, &p2, &mut again).unwrap();
        assert_eq!(strip(&read_flv(&again).unwrap().1), strip(&packets));
    }

    #[test]
    fn formats_are_found_by_extension() {
        assert_eq!(format_for("a/b.FLV").unwrap().name, "flv");
        assert_eq!(format_for("x.dtsc").unwrap().name, "dtsc");
        assert!(format_for("x.mkv").is_none());
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let (tracks, packets) = sample();
        let mut d = Vec::new();
        write_dtsc(&tracks, &packets, &mut d).unwrap();
        assert!(read_dtsc(&d[..d.len() - 3]).is_err());
    }
}
