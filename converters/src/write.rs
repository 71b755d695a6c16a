//! Streaming writers: each takes packets one at a time and writes them out as it goes. The two
//! whose head depends on every packet keep only an index in memory: MP4 with `moov` first
//! writes the payloads straight into the output file and inserts its head in front at the
//! end (or, writing a pipe, spools them); DTSC, whose header carries each track's durations,
//! spools its frames to an unnamed file and copies them after the header.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dtsc::flv::{self, TagKind};
use dtsc::mp4::{FragmentBuilder, ProgressiveIndex};
use dtsc::ts::TsMuxer;
use dtsc::wire::{self, Header};
use dtsc::{dtsh, Packet, Track, TrackKind};

use crate::Format;

/// A container being written.
pub trait Mux {
    /// Writes (or spools) one packet. Packets come in the order they should be stored; each
    /// track's in decode order.
    fn packet(&mut self, p: &Packet, out: &mut dyn Write) -> Result<()>;
    /// Writes whatever is left (the last fragment, the head and the spooled packets).
    /// Returns the bytes of a sidecar index to write beside the output once it is in place
    /// (DTSC's `.dtsh`, which must not be older than the file it indexes).
    fn finish(&mut self, out: &mut dyn Write) -> Result<Option<Vec<u8>>>;
}

/// Opens a writer of `format` for `tracks` and writes its preamble to `out`. `spool_dir` is
/// where a writer that needs one makes its spool file (the output's folder, so that the
/// space it takes is the output's own); `want_index` asks a DTSC writer for its `.dtsh`;
/// `direct` is the output file itself when it is one (written through `out` from byte 0),
/// which lets the MP4 writer put its head in front of the payloads without a spool.
/// Fails when the format cannot carry one of the tracks, naming it.
pub fn open(
    format: Format,
    tracks: &[Track],
    out: &mut dyn Write,
    spool_dir: &Path,
    want_index: bool,
    direct: Option<File>,
) -> Result<Box<dyn Mux>> {
    Ok(match format {
        Format::Flv => Box::new(FlvMux::open(tracks, out, direct)?),
        Format::Ts => Box::new(TsMux::open(tracks, out)?),
        Format::Mp4 => Box::new(Mp4Mux::open(tracks, spool_dir, direct)?),
        Format::Fmp4 => Box::new(Fmp4Mux::open(tracks, out)?),
        Format::Dtsc => Box::new(DtscMux::open(tracks, spool_dir, want_index)?),
    })
}

fn describe(t: &Track) -> String {
    format!("track {} ({} {})", t.id, t.kind.as_str(), t.codec.as_str())
}

/// An unnamed file in `dir` for spooled packets: made and unlinked at once, so nothing is
/// left behind whatever happens to the process.
pub(crate) fn spool_file(dir: &Path) -> Result<File> {
    for n in 0..100u32 {
        let path = dir.join(format!(".sluice-convert-spool-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path).ok();
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("making a spool file in {}", dir.display()))
            }
        }
    }
    bail!("making a spool file in {}: every name taken", dir.display())
}

/// Copies the spool (written through `w`) after what `out` has.
fn copy_spool(w: io::BufWriter<File>, out: &mut dyn Write) -> Result<()> {
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.seek(SeekFrom::Start(0))?;
    io::copy(&mut f, out).context("copying the spooled packets")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// FLV
// ---------------------------------------------------------------------------------------

/// FLV (FLV spec v10.1 Annex E): header, `onMetaData`, the sequence headers, one tag per
/// packet. Carries one H.264 video and one AAC/MP3/G.711 audio track. Writing a file, the
/// `onMetaData` gets a `duration` of 0 that [`Mux::finish`] overwrites with the length
/// written (as FFmpeg's FLV muxer does); a pipe gets none.
struct FlvMux {
    tracks: Vec<Track>,
    buf: Vec<u8>,
    /// The output file and the byte offset of the `duration` number in it.
    duration_at: Option<(File, u64)>,
    /// Per track: first and last DTS (ms) and packets written.
    spans: Vec<(u32, u64, u64, u64)>,
}

impl FlvMux {
    /// The length written, ms: the longest track's span of DTS plus one packet's average
    /// duration (its span over its packets less one), so 250 frames at 25 fps make 10 s.
    fn duration_ms(&self) -> u64 {
        self.spans
            .iter()
            .map(|&(_, first, last, n)| {
                let span = last - first;
                span + if n > 1 { span / (n - 1) } else { 0 }
            })
            .max()
            .unwrap_or(0)
    }
}

impl FlvMux {
    fn open(tracks: &[Track], out: &mut dyn Write, direct: Option<File>) -> Result<FlvMux> {
        let (v, a) = flv::flv_tracks(tracks);
        for t in tracks {
            let carried = v.is_some_and(|v| v.id == t.id) || a.is_some_and(|a| a.id == t.id);
            if !carried {
                let why = if (t.kind == TrackKind::Video && v.is_some())
                    || (t.kind == TrackKind::Audio && a.is_some())
                {
                    "FLV carries one video and one audio track"
                } else {
                    "FLV carries H.264 video and AAC, MP3 or G.711 audio"
                };
                bail!(
                    "{why}: cannot write {} (choose tracks with --tracks)",
                    describe(t)
                );
            }
        }
        let mut buf = Vec::new();
        flv::write_file_header(a.is_some(), v.is_some(), &mut buf);
        let mut body = Vec::new();
        for val in flv::on_metadata(tracks, direct.is_some().then_some(0)) {
            dtsc::amf0::encode(&val, &mut body);
        }
        let duration_at = direct.and_then(|f| {
            let at = buf.len() + flv::TAG_HEADER_LEN + flv::duration_offset(&body)?;
            Some((f, at as u64))
        });
        flv::write_tag(TagKind::Script, 0, &body, &mut buf);
        for t in tracks {
            body.clear();
            if let Some(kind) = flv::sequence_header(t, &mut body) {
                flv::write_tag(kind, 0, &body, &mut buf);
            }
        }
        out.write_all(&buf)?;
        Ok(FlvMux {
            tracks: tracks.to_vec(),
            buf,
            duration_at,
            spans: Vec::new(),
        })
    }
}

impl Mux for FlvMux {
    fn packet(&mut self, p: &Packet, out: &mut dyn Write) -> Result<()> {
        let Some(t) = self.tracks.iter().find(|t| t.id == p.track) else {
            return Ok(());
        };
        let ts = u32::try_from(p.dts).context("a timestamp past FLV's 32-bit ms")?;
        self.buf.clear();
        let mut head = Vec::with_capacity(5);
        let Some(kind) = flv::media_body_header(t, &p.as_ref(), &mut head) else {
            return Ok(());
        };
        match self.spans.iter_mut().find(|s| s.0 == p.track) {
            Some(s) => (s.2, s.3) = (s.2.max(p.dts), s.3 + 1),
            None => self.spans.push((p.track, p.dts, p.dts, 1)),
        }
        let body_len = head.len() + p.data.len();
        if body_len > flv::MAX_TAG_BODY {
            bail!(
                "a packet of {} bytes is too large for an FLV tag",
                p.data.len()
            );
        }
        flv::write_tag_header(kind, ts, body_len, &mut self.buf);
        self.buf.extend_from_slice(&head);
        out.write_all(&self.buf)?;
        out.write_all(&p.data)?;
        self.buf.clear();
        flv::write_prev_tag_size(body_len, &mut self.buf);
        out.write_all(&self.buf)?;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        if let Some((f, at)) = &self.duration_at {
            out.flush()?;
            let secs = self.duration_ms() as f64 / 1000.0;
            std::os::unix::fs::FileExt::write_all_at(f, &secs.to_be_bytes(), *at)
                .context("writing the duration into onMetaData")?;
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// MPEG-TS
// ---------------------------------------------------------------------------------------

/// MPEG-TS (ISO/IEC 13818-1) through the server's [`TsMuxer`] in continuous mode; PAT and
/// PMT at the start and before every keyframe of the first video track.
struct TsMux {
    mux: TsMuxer,
    psi_track: Option<u32>,
    buf: Vec<u8>,
}

impl TsMux {
    fn open(tracks: &[Track], out: &mut dyn Write) -> Result<TsMux> {
        let mut mux = TsMuxer::continuous(tracks);
        if let Some(t) = tracks.iter().find(|t| mux.pid_of(t.id).is_none()) {
            bail!(
                "MPEG-TS here carries H.264, HEVC, AAC and MP3: cannot write {} (choose tracks with --tracks)",
                describe(t)
            );
        }
        let mut buf = Vec::with_capacity(1 << 16);
        mux.write_psi(&mut buf);
        out.write_all(&buf)?;
        Ok(TsMux {
            mux,
            psi_track: tracks
                .iter()
                .find(|t| t.kind == TrackKind::Video)
                .map(|t| t.id),
            buf,
        })
    }
}

impl Mux for TsMux {
    fn packet(&mut self, p: &Packet, out: &mut dyn Write) -> Result<()> {
        self.buf.clear();
        if p.keyframe && self.psi_track == Some(p.track) {
            self.mux.write_psi(&mut self.buf);
        }
        self.mux
            .write_packet(&p.as_ref(), false, &mut self.buf)
            .with_context(|| format!("track {} packet at {} ms", p.track, p.dts))?;
        out.write_all(&self.buf)?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// MP4, moov first
// ---------------------------------------------------------------------------------------

/// Progressive MP4 (ISO/IEC 14496-12) with `moov` before `mdat`; the sample entries go to a
/// [`ProgressiveIndex`], the payloads to one of two places:
/// - writing a file (`direct`): straight into it, from byte 0; at the end `ftyp` + `moov` +
///   a `free` box + the `mdat` header, padded to whole file-system blocks, are inserted in
///   front with `fallocate(FALLOC_FL_INSERT_RANGE)` (ext4, XFS): no payload is written twice.
///   Where the file system cannot, the payloads are moved to a spool and back after the head.
/// - writing a pipe: to the spool; at the end the head, then the spool.
struct Mp4Mux {
    index: ProgressiveIndex,
    payloads: Payloads,
    spool_dir: PathBuf,
}

/// Where an [`Mp4Mux`] puts the payloads until its head is known.
enum Payloads {
    /// Into the output file itself (through the writer's `out`), from byte 0.
    Direct(File),
    /// Into a spool, copied after the head.
    Spool(io::BufWriter<File>),
    /// Written out by `finish`.
    Done,
}

impl Mp4Mux {
    fn open(tracks: &[Track], spool_dir: &Path, direct: Option<File>) -> Result<Mp4Mux> {
        let index = ProgressiveIndex::new(tracks).map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        let payloads = match direct {
            Some(f) => Payloads::Direct(f),
            None => Payloads::Spool(io::BufWriter::with_capacity(
                1 << 20,
                spool_file(spool_dir)?,
            )),
        };
        Ok(Mp4Mux {
            index,
            payloads,
            spool_dir: spool_dir.to_path_buf(),
        })
    }

    /// `ftyp`, `moov` and the `mdat` header, a multiple of `align` bytes long.
    fn head(&self, align: u64) -> Result<Vec<u8>> {
        let mut head = Vec::new();
        self.index
            .write_head_aligned(align, &mut head)
            .map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        Ok(head)
    }

    /// Puts the head in front of the payloads already in `file` (from byte 0).
    fn insert_head(&self, file: &mut File) -> Result<()> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let block = file.metadata()?.blksize().clamp(512, 1 << 20);
        let head = self.head(block)?;
        let inserted = nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(file),
            nix::fcntl::FallocateFlags::FALLOC_FL_INSERT_RANGE,
            0,
            head.len() as i64,
        );
        if inserted.is_ok() {
            file.write_all_at(&head, 0)?;
            return Ok(());
        }
        // No block insertion here: the payloads go to a spool and come back after the head.
        let mut spool = spool_file(&self.spool_dir)?;
        file.seek(SeekFrom::Start(0))?;
        io::copy(file, &mut spool).context("moving the payloads to the spool")?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&self.head(1)?)?;
        copy_spool(io::BufWriter::new(spool), file)
    }
}

impl Mux for Mp4Mux {
    fn packet(&mut self, p: &Packet, out: &mut dyn Write) -> Result<()> {
        self.index
            .add(p.track, p.dts, p.offset, p.keyframe, p.data.len())
            .map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        match &mut self.payloads {
            Payloads::Spool(s) => s.write_all(&p.data).context("writing the spool")?,
            _ => out.write_all(&p.data)?,
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        match std::mem::replace(&mut self.payloads, Payloads::Done) {
            Payloads::Direct(mut file) => {
                out.flush()?;
                self.insert_head(&mut file)?;
            }
            Payloads::Spool(s) => {
                out.write_all(&self.head(1)?)?;
                copy_spool(s, out)?;
            }
            Payloads::Done => {}
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Fragmented MP4
// ---------------------------------------------------------------------------------------

/// Fragmented MP4 (ISO/IEC 14496-12 §8.8, CMAF-shaped): the init segment, then one `moof` +
/// `mdat` per GOP of the first video track (every 2 s without video). One fragment is held.
struct Fmp4Mux {
    builder: Option<FragmentBuilder<'static>>,
    pending: Vec<Packet>,
    cut_track: Option<u32>,
    first_dts: Option<u64>,
    sequence: u32,
    buf: Vec<u8>,
}

/// Longest fragment without video, ms.
const AUDIO_FRAGMENT_MS: u64 = 2000;

impl Fmp4Mux {
    fn open(tracks: &[Track], out: &mut dyn Write) -> Result<Fmp4Mux> {
        let mut buf = Vec::new();
        dtsc::mp4::write_init(tracks, &mut buf).map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        out.write_all(&buf)?;
        Ok(Fmp4Mux {
            builder: Some(FragmentBuilder::new(tracks).map_err(|e| anyhow::anyhow!("MP4: {e}"))?),
            pending: Vec::new(),
            cut_track: tracks
                .iter()
                .find(|t| t.kind == TrackKind::Video)
                .map(|t| t.id),
            first_dts: None,
            sequence: 0,
            buf,
        })
    }

    /// Writes the pending packets as one fragment; `next` is the packet that starts the next.
    fn flush(&mut self, next: Option<&Packet>, out: &mut dyn Write) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut fb = match self.builder.take() {
            Some(b) => b.recycle(),
            None => bail!("MP4: no fragment builder"),
        };
        for p in &pending {
            fb.add(&p.as_ref())
                .map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        }
        if let Some(n) = next {
            fb.set_end_dts(n.track, n.dts).ok();
        }
        self.sequence += 1;
        self.buf.clear();
        fb.finish(self.sequence, &mut self.buf)
            .map_err(|e| anyhow::anyhow!("MP4: {e}"))?;
        self.builder = Some(fb.recycle());
        self.pending = pending;
        self.pending.clear();
        out.write_all(&self.buf)?;
        Ok(())
    }
}

impl Mux for Fmp4Mux {
    fn packet(&mut self, p: &Packet, out: &mut dyn Write) -> Result<()> {
        let cut = match self.cut_track {
            Some(id) => p.track == id && p.keyframe,
            None => self
                .first_dts
                .is_some_and(|f| p.dts >= f + AUDIO_FRAGMENT_MS),
        };
        if cut {
            self.flush(Some(p), out)?;
            self.first_dts = None;
        }
        self.first_dts.get_or_insert(p.dts);
        self.pending.push(p.clone());
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        self.flush(None, out)?;
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// DTSC
// ---------------------------------------------------------------------------------------

/// A `.dtsc` file (docs/DTSC.md, "Files"): a VoD `DTSC` header (every track with its `firstms`,
/// `lastms` and `bps`), then the `DTP2` frames; and beside it, when asked, the `.dtsh` index
/// ([`dtsh::encode`]) whose keys point at the frames' byte positions in the file.
struct DtscMux {
    tracks: Vec<Track>,
    /// Per track: first and last DTS (ms), payload bytes.
    stats: Vec<Option<(u64, u64, u64)>>,
    indexer: dtsh::Indexer,
    want_index: bool,
    header_len: u64,
    spooled: u64,
    spool: Option<io::BufWriter<File>>,
    buf: Vec<u8>,
}

impl DtscMux {
    fn open(tracks: &[Track], spool_dir: &Path, want_index: bool) -> Result<DtscMux> {
        let mut header = Vec::new();
        wire::write_header(&Self::header(tracks), &mut header);
        Ok(DtscMux {
            tracks: tracks.to_vec(),
            stats: vec![None; tracks.len()],
            indexer: dtsh::Indexer::new(tracks),
            want_index,
            header_len: header.len() as u64,
            spooled: 0,
            spool: Some(io::BufWriter::with_capacity(
                1 << 20,
                spool_file(spool_dir)?,
            )),
            buf: Vec::new(),
        })
    }

    fn header(tracks: &[Track]) -> Header {
        Header {
            live: false,
            unixzero: None,
            tracks: tracks.to_vec(),
        }
    }
}

impl Mux for DtscMux {
    fn packet(&mut self, p: &Packet, _out: &mut dyn Write) -> Result<()> {
        let Some(i) = self.tracks.iter().position(|t| t.id == p.track) else {
            return Ok(());
        };
        let s = self.stats[i].get_or_insert((p.dts, p.dts, 0));
        s.0 = s.0.min(p.dts);
        s.1 = s.1.max(p.dts);
        s.2 += p.data.len() as u64;
        let mut r = p.as_ref();
        // The header comes first; its length does not depend on the values filled in at
        // the end (DTSC integers are 8 bytes).
        r.bpos = self.header_len + self.spooled;
        self.indexer.push(&r);
        self.buf.clear();
        wire::write_packet_head(&r, &mut self.buf);
        if let Some(s) = &mut self.spool {
            s.write_all(&self.buf).context("writing the spool")?;
            s.write_all(&p.data).context("writing the spool")?;
            s.write_all(wire::PACKET_TAIL)
                .context("writing the spool")?;
        }
        self.spooled += wire::packet_frame_len(&r) as u64;
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> Result<Option<Vec<u8>>> {
        for (t, s) in self.tracks.iter_mut().zip(&self.stats) {
            if let Some((first, last, bytes)) = *s {
                t.firstms = first;
                t.lastms = last;
                let secs = ((last - first) as f64 / 1000.0).max(0.001);
                t.bps = (bytes as f64 / secs).min(f64::from(u32::MAX)) as u32;
                t.maxbps = t.maxbps.max(t.bps);
            }
        }
        let header = Self::header(&self.tracks);
        let mut head = Vec::new();
        wire::write_header(&header, &mut head);
        let mut index = std::mem::take(&mut self.indexer).finish();
        let shift = head.len() as i64 - self.header_len as i64;
        if shift != 0 {
            for k in index.iter_mut().flat_map(|i| i.keys.iter_mut()) {
                k.bpos = k.bpos.saturating_add_signed(shift);
            }
        }
        out.write_all(&head)?;
        if let Some(s) = self.spool.take() {
            copy_spool(s, out)?;
        }
        Ok(self.want_index.then(|| dtsh::encode(&header, &index)))
    }
}
