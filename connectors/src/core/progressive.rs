//! Progressive HTTP outputs: one endless response per viewer, the stream in one container.
//! `/S.flv` (FLV, as mpegts.js, ffmpeg and VLC read it), `/S.ts` (MPEG-TS, continuous
//! continuity counters) and `/S.mp4` / `/S.fmp4` (fragmented MP4). Both are outputs of the shared loop in [`crate::core::streaming`].

use anyhow::Result;
use dtsc::flv::{self, TagKind};
use dtsc::mp4::{self, FragmentBuilder};
use dtsc::ts::TsMuxer;
use dtsc::{Codec, PacketRef, Track, TrackKind};

use crate::core::streaming::{self, Batch, Output};

/// FLV over HTTP. Tag timestamps start at 0 at the first packet sent (players of progressive
/// FLV, mpegts.js among them, expect a timeline from zero); composition offsets are kept.
#[derive(Default)]
pub struct FlvOutput {
    base_ms: u64,
    body: Vec<u8>,
    /// Where the response ends (DTS, ms) when that is known: its first `onMetaData` then
    /// carries the `duration` from the first packet sent.
    end_ms: Option<u64>,
    /// Writing a file whose length is filled in later ([`FlvOutput::for_file`]).
    file: bool,
    /// Where the first `onMetaData`'s `duration` is in the output (bytes from its start).
    duration_at: Option<u64>,
}

impl FlvOutput {
    /// An output whose response ends at `end_ms` (DTS, ms: an ended stream's last packet
    /// plus one frame, or an earlier `?end=`); `None` for a live stream (no duration).
    pub fn ending_at(end_ms: Option<u64>) -> FlvOutput {
        FlvOutput {
            end_ms,
            ..FlvOutput::default()
        }
    }

    /// An output for a file (a recording) that can be written again in place: its first
    /// `onMetaData` has a `duration` of 0, for the writer to overwrite with the length
    /// written so far at [`FlvOutput::duration_at`].
    pub fn for_file() -> FlvOutput {
        FlvOutput {
            file: true,
            ..FlvOutput::default()
        }
    }

    /// The byte offset, from the start of the output, of the 8 bytes of the first
    /// `onMetaData`'s `duration` (seconds, a big-endian IEEE 754 double): set once the first
    /// init data is written by an output made with [`FlvOutput::for_file`].
    pub fn duration_at(&self) -> Option<u64> {
        self.duration_at
    }

    fn ts(&self, dts: u64) -> u32 {
        dts.saturating_sub(self.base_ms) as u32
    }
}

impl<'m> Output<'m> for FlvOutput {
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        if first {
            self.base_ms = start_ms;
            let has = |k| tracks.iter().any(|t| t.kind == k);
            b.own_with(|out| {
                flv::write_file_header(has(TrackKind::Audio), has(TrackKind::Video), out)
            });
        }
        let ts = self.ts(start_ms);
        self.body.clear();
        let duration = match (first, self.file) {
            (false, _) => None,
            (true, true) => Some(0),
            (true, false) => self.end_ms.map(|e| e.saturating_sub(start_ms)),
        };
        for v in flv::on_metadata(tracks, duration) {
            dtsc::amf0::encode(&v, &mut self.body);
        }
        if first && self.file {
            // After the file header, its PreviousTagSize0 and this tag's header.
            let head = flv::FILE_HEADER_LEN + flv::PREV_TAG_SIZE_LEN + flv::TAG_HEADER_LEN;
            self.duration_at = flv::duration_offset(&self.body).map(|o| (head + o) as u64);
        }
        b.own_with(|out| flv::write_tag(TagKind::Script, ts, &self.body, out));
        for t in tracks {
            self.body.clear();
            let Some(kind) = flv::sequence_header(t, &mut self.body) else {
                continue;
            };
            b.own_with(|out| flv::write_tag(kind, ts, &self.body, out));
        }
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        self.body.clear();
        let Some(kind) = flv::media_body_header(t, &p, &mut self.body) else {
            return Ok(());
        };
        let len = self.body.len() + p.data.len();
        let ts = self.ts(p.dts);
        b.own_with(|out| {
            flv::write_tag_header(kind, ts, len, out);
            out.extend_from_slice(&self.body);
        });
        b.data(p.data);
        b.own_with(|out| flv::write_prev_tag_size(len, out));
        Ok(())
    }
}

/// MPEG-TS over HTTP (and, later, raw TCP): PAT/PMT at the start and before every video
/// keyframe so that a player can join, continuity counters continuous.
#[derive(Default)]
pub struct TsOutput {
    mux: Option<TsMuxer>,
}

impl<'m> Output<'m> for TsOutput {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        _first: bool,
        b: &mut Batch,
    ) -> Result<()> {
        let mut mux = TsMuxer::continuous(tracks);
        b.own_with(|out| mux.write_psi(out));
        self.mux = Some(mux);
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        let Some(mux) = self.mux.as_mut() else {
            return Ok(());
        };
        b.own_with(|out| {
            if p.keyframe && t.kind == TrackKind::Video {
                mux.write_psi(out);
            }
            // A packet the muxer cannot carry is skipped (the track is not in the PMT).
            let _ = mux.write_packet(&p, false, out);
        });
        Ok(())
    }
}

/// Matroska over HTTP (`/S.mkv`) and in recordings: the header at the start, then a
/// `SimpleBlock` per packet in clusters of a GOP ([`dtsc::mkv`]), the payload a slice of the
/// shared pages. Tracks that change midway
/// cannot be announced again: packets of new track ids are skipped.
#[derive(Default)]
pub struct MkvOutput {
    mux: Option<dtsc::mkv::MkvMuxer>,
}

impl<'m> Output<'m> for MkvOutput {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        if first {
            let mux = dtsc::mkv::MkvMuxer::new(tracks)?;
            b.own_with(|out| mux.write_header(out));
            self.mux = Some(mux);
        }
        Ok(())
    }

    fn packet(&mut self, _t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        if let Some(mux) = self.mux.as_mut() {
            if b.own_with(|out| mux.write_block_head(&p, out)) {
                b.data(p.data);
            }
        }
        Ok(())
    }
}

/// Fragmented MP4 over HTTP (`/S.mp4` and `/S.fmp4` of a live stream): the init segment
/// (`ftyp` + `moov`), then one movie fragment (`moof` + `mdat`) per batch of packets. The
/// fragment's payloads go out as slices of the shared pages.
///
/// This is the state that lasts for the whole response (the tracks of the init segment and
/// the fragment sequence number, ISO/IEC 14496-12 §8.8.5); [`Fmp4Output`] holds one
/// mapping's fragment. So when the stream's buffer dies, the response goes on from the new
/// buffer with the next sequence number and no second init segment
/// ([`streaming::stream_resuming`]).
#[derive(Default)]
pub struct Fmp4Progressive {
    tracks: Vec<Track>,
    seq: u32,
}

impl streaming::Resumable for Fmp4Progressive {
    type Out<'m> = Fmp4Output<'m>;
    fn output<'m>(&'m mut self) -> Fmp4Output<'m> {
        // Resumed: a builder for the tracks the init segment already announced.
        let frag = (!self.tracks.is_empty())
            .then(|| FragmentBuilder::new(&self.tracks).ok())
            .flatten();
        Fmp4Output { state: self, frag }
    }
}

/// [`Fmp4Progressive`] for one mapping `'m`: the fragment being built from its packets.
pub struct Fmp4Output<'m> {
    state: &'m mut Fmp4Progressive,
    frag: Option<FragmentBuilder<'m>>,
}

impl<'m> Output<'m> for Fmp4Output<'m> {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        if !first {
            // New tracks mid-stream cannot be announced in a progressive MP4: keep the old
            // ones (packets of new track ids are skipped).
            return Ok(());
        }
        // MP4 carries the tracks its sample entries can describe; others are left out.
        let usable: Vec<Track> = tracks
            .iter()
            .filter(|t| {
                matches!(
                    (t.kind, &t.codec),
                    (TrackKind::Video, Codec::H264 | Codec::Hevc)
                        | (TrackKind::Audio, Codec::Aac | Codec::Mp3)
                )
            })
            .cloned()
            .collect();
        b.own_with(|out| mp4::write_init(&usable, out))?;
        self.frag = Some(FragmentBuilder::new(&usable)?);
        self.state.tracks = usable;
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, _b: &mut Batch<'m>) -> Result<()> {
        if let Some(f) = self.frag.as_mut() {
            if self.state.tracks.iter().any(|x| x.id == t.id) {
                f.add(&p)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, b: &mut Batch<'m>) -> Result<()> {
        let Some(f) = self.frag.as_mut() else {
            return Ok(());
        };
        if f.is_empty() {
            return Ok(());
        }
        self.state.seq += 1;
        b.own_with(|out| f.write_header(self.state.seq, out))?;
        for payload in f.payloads() {
            b.data(payload);
        }
        f.clear();
        Ok(())
    }
}

/// Audio only: `/S.aac` (each AAC frame behind its ADTS header, ISO/IEC 14496-3 §1.A.2) or
/// `/S.mp3` (MP3 frames as they are). Plays the stream's first audio track of that codec.
#[derive(Default)]
pub struct AudioOutput {
    /// Which codec this output carries ([`Codec::Aac`] or [`Codec::Mp3`]).
    pub codec: Option<Codec>,
    track: Option<u32>,
    asc: Option<dtsc::aac::AudioSpecificConfig>,
    hdr: Vec<u8>,
}

impl AudioOutput {
    /// An output for `codec`.
    pub fn new(codec: Codec) -> AudioOutput {
        AudioOutput {
            codec: Some(codec),
            ..AudioOutput::default()
        }
    }
}

impl<'m> Output<'m> for AudioOutput {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        _first: bool,
        _b: &mut Batch<'m>,
    ) -> Result<()> {
        let t = tracks
            .iter()
            .find(|t| t.kind == TrackKind::Audio && Some(&t.codec) == self.codec.as_ref());
        self.track = t.map(|t| t.id);
        self.asc = t
            .filter(|t| t.codec == Codec::Aac)
            .and_then(|t| dtsc::aac::parse_asc(&t.init).ok());
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        if Some(t.id) != self.track {
            return Ok(());
        }
        if let Some(asc) = &self.asc {
            self.hdr.clear();
            if dtsc::aac::write_adts_header(asc, p.data.len(), &mut self.hdr).is_err() {
                return Ok(());
            }
            b.own(&self.hdr);
        }
        b.data(p.data);
        Ok(())
    }
}
