//! Streaming readers: each container is read a tag, a frame, a chunk of TS packets or one MP4
//! sample at a time, so memory stays bounded whatever the file's size (an MP4's sample tables
//! are the exception: they are its index, about 24 bytes a sample).
//!
//! A regular file is mapped into memory ([`Input::map`]) and packets are slices of the
//! mapping: nothing is copied out of the page cache, and the pages behind the reader are
//! given back as it goes (`MADV_DONTNEED`), so the resident size does not grow with the file.
//! A pipe is read into one reused buffer.
//!
//! Every reader reports a corrupt or truncated input as a [`ReadError`]: the byte offset and
//! what was expected there.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dtsc::flv::{self, FlvIngest, IngestEvent, TagKind};
use dtsc::mp4demux::{self, Fragmented, Sample};
use dtsc::tsdemux::{TsDemuxer, TsEvent};
use dtsc::wire::{self, Frame, Header};
use dtsc::{Packet, Track};
use memmap2::{Mmap, UncheckedAdvice};

/// A corrupt or truncated input: where, and what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes at `offset` are not what the format requires.
    #[error("at byte {offset}: expected {expected}")]
    Corrupt {
        /// Byte offset in the input.
        offset: u64,
        /// What should have been there, and what was found.
        expected: String,
    },
    /// Reading the input failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

fn corrupt(offset: u64, expected: impl Into<String>) -> ReadError {
    ReadError::Corrupt {
        offset,
        expected: expected.into(),
    }
}

/// A mapping shared by the [`Bytes`] slices handed out and the reader that advises on it.
struct Mapped(Arc<Mmap>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Pages of a mapping given back at a time, and kept behind the reader (bytes).
const RELEASE_STEP: u64 = 4 << 20;

/// The bytes of an input, taken in order: a mapped file or a stream.
pub struct Input {
    /// The whole input, when it is in memory (mapped, or given).
    map: Option<Bytes>,
    /// The mapping behind `map`, to give pages back.
    mmap: Option<Arc<Mmap>>,
    stream: Option<Box<dyn Read>>,
    /// Stream bytes read but not taken yet.
    pending: BytesMut,
    eof: bool,
    pos: u64,
    /// Mapped: the pages below this offset were given back.
    released: u64,
}

impl Input {
    /// Maps `file` (a regular file): taking bytes copies nothing. The file must not shrink
    /// while it is read (a truncated mapping raises SIGBUS), as with any mapped reader.
    pub fn map(file: &File) -> io::Result<Input> {
        // SAFETY: the mapping is read-only and private to this process; the documented
        // condition (the file is not truncated meanwhile) is the caller's.
        let mmap = Arc::new(unsafe { Mmap::map(file)? });
        let _ = mmap.advise(memmap2::Advice::Sequential);
        let bytes = Bytes::from_owner(Mapped(mmap.clone()));
        Ok(Input {
            map: Some(bytes),
            mmap: Some(mmap),
            stream: None,
            pending: BytesMut::new(),
            eof: true,
            pos: 0,
            released: 0,
        })
    }

    /// Reads `r` as it comes, through one buffer that is reused once the packets taken from
    /// it are dropped.
    pub fn stream(r: Box<dyn Read>) -> Input {
        Input {
            map: None,
            mmap: None,
            stream: Some(r),
            pending: BytesMut::with_capacity(1 << 20),
            eof: false,
            pos: 0,
            released: 0,
        }
    }

    /// The bytes given, as if mapped (tests, fuzzing).
    pub fn bytes(b: Bytes) -> Input {
        Input {
            map: Some(b),
            mmap: None,
            stream: None,
            pending: BytesMut::new(),
            eof: true,
            pos: 0,
            released: 0,
        }
    }

    /// The whole input when it is mapped (for random access).
    pub fn whole(&self) -> Option<&Bytes> {
        self.map.as_ref()
    }

    /// Bytes taken so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Up to `n` bytes ahead, not taken (fewer only at the end of the input).
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if let Some(b) = &self.map {
            let at = (self.pos as usize).min(b.len());
            return Ok(&b[at..(at + n).min(b.len())]);
        }
        while self.pending.len() < n && !self.eof {
            let have = self.pending.len();
            let want = (n - have).max(1 << 16);
            self.pending.reserve(want);
            self.pending.resize(have + want, 0);
            let k = match self.stream.as_mut() {
                Some(r) => loop {
                    match r.read(&mut self.pending[have..]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                },
                None => Ok(0),
            };
            let k = match k {
                Ok(k) => k,
                Err(e) => {
                    self.pending.truncate(have);
                    return Err(e);
                }
            };
            self.pending.truncate(have + k);
            if k == 0 {
                self.eof = true;
            }
        }
        Ok(&self.pending[..n.min(self.pending.len())])
    }

    /// The next `n` bytes (fewer only at the end of the input).
    pub fn take(&mut self, n: usize) -> io::Result<Bytes> {
        if let Some(b) = &self.map {
            let at = (self.pos as usize).min(b.len());
            let end = (at + n).min(b.len());
            let out = b.slice(at..end);
            self.pos = end as u64;
            self.release_before(self.pos.saturating_sub(RELEASE_STEP));
            return Ok(out);
        }
        let k = self.peek(n)?.len();
        self.pos += k as u64;
        Ok(self.pending.split_to(k).freeze())
    }

    /// Mapped: gives back the pages below `offset` (rounded down to [`RELEASE_STEP`]); they
    /// are read again from the page cache if a slice still held is used.
    pub fn release_before(&mut self, offset: u64) {
        let Some(mmap) = &self.mmap else {
            return;
        };
        let upto = (offset / RELEASE_STEP * RELEASE_STEP).min(mmap.len() as u64);
        if upto >= self.released + RELEASE_STEP {
            let from = self.released;
            // SAFETY: DontNeed on a read-only shared file mapping only drops this process's
            // page table entries; the pages are faulted in again, unchanged, from the file.
            let _ = unsafe {
                mmap.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    from as usize,
                    (upto - from) as usize,
                )
            };
            self.released = upto;
        }
    }
}

/// A container being read: its tracks (known before the first packet) and its packets in
/// the order the file stores them (each track's in decode order).
pub trait Demux {
    /// The tracks of the input, ids as the input numbers them.
    fn tracks(&self) -> &[Track];
    /// The next packet, `None` at the end of the input.
    fn next_packet(&mut self) -> Result<Option<Packet>, ReadError>;
    /// Bytes of the input consumed so far (for progress).
    fn position(&self) -> u64;
}

/// How far ahead a reader looks for tracks that have not shown their init data: packets
/// held before giving up on a late track (about 10 s of a 25 fps + AAC stream).
const MAX_LOOKAHEAD: usize = 1000;

// ---------------------------------------------------------------------------------------
// FLV
// ---------------------------------------------------------------------------------------

/// FLV (FLV spec v10.1 Annex E): the file header, then tag by tag through [`FlvIngest`]
/// (H.264 video, AAC or MP3 audio). Tracks are known once every track has its sequence
/// header and `onMetaData` announces none missing (packets before that are held).
pub struct FlvReader {
    input: Input,
    ingest: FlvIngest,
    held: VecDeque<Packet>,
    tracks: Vec<Track>,
    done: bool,
}

impl FlvReader {
    /// Reads the file header and looks ahead until the tracks are known.
    pub fn open(mut input: Input) -> Result<FlvReader, ReadError> {
        let head = input.peek(13)?;
        let n = head.len();
        if n < 3 || &head[..3] != b"FLV" {
            return Err(corrupt(0, "an FLV file header (\"FLV\")"));
        }
        if n < 9 {
            return Err(corrupt(
                n as u64,
                format!("a 9-byte FLV header (the file ends after {n})"),
            ));
        }
        let offset = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
        if !(9..=1024).contains(&offset) {
            return Err(corrupt(5, format!("a DataOffset of 9 (found {offset})")));
        }
        let hdr = input.take(offset + 4)?;
        if hdr.len() < offset + 4 {
            return Err(corrupt(hdr.len() as u64, "the rest of the FLV header"));
        }
        flv::parse_file_header(&hdr)
            .map_err(|e| corrupt(0, format!("an FLV file header ({e})")))?;
        let mut r = FlvReader {
            input,
            ingest: FlvIngest::new(),
            held: VecDeque::new(),
            tracks: Vec::new(),
            done: false,
        };
        while !r.done
            && r.held.len() < MAX_LOOKAHEAD
            && (!r.ingest.ready() || r.ingest.awaiting_tracks())
        {
            if let Some(p) = r.next_tag()? {
                r.held.push_back(p);
            }
        }
        r.tracks = r.ingest.tracks().to_vec();
        if r.tracks.is_empty() {
            return Err(corrupt(
                r.input.position(),
                "an H.264, AAC or MP3 tag (the file has none)",
            ));
        }
        Ok(r)
    }

    /// Reads one tag; a packet when it gave one (its payload a slice of the input).
    fn next_tag(&mut self) -> Result<Option<Packet>, ReadError> {
        let start = self.input.position();
        let head = self.input.peek(11)?;
        let n = head.len();
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        if n < 11 {
            return Err(corrupt(
                start,
                format!("an 11-byte FLV tag header (the file ends after {n})"),
            ));
        }
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let mut tag = self.input.take(11 + size + 4)?;
        let got = tag.len() - 11;
        if got < size {
            return Err(corrupt(
                start,
                format!("an FLV tag of {size} body bytes (the file ends after {got})"),
            ));
        }
        if got < size + 4 {
            // A last tag without its PreviousTagSize is whole: accept it.
            let mut whole = tag.to_vec();
            whole.resize(11 + size + 4, 0);
            tag = Bytes::from(whole);
        }
        let (parsed, _) = match flv::parse_tag(&tag) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(corrupt(start, "a whole FLV tag")),
            Err(e) => return Err(corrupt(start, format!("an FLV tag ({e})"))),
        };
        match self
            .ingest
            .push_tag(parsed.kind, u64::from(parsed.timestamp), parsed.body)
        {
            Ok(Some(IngestEvent::Packet(p))) => Ok(Some(Packet {
                track: p.track,
                dts: p.dts,
                offset: p.offset,
                keyframe: p.keyframe,
                bpos: start,
                data: tag.slice_ref(p.data),
            })),
            Ok(_) => Ok(None),
            // A damaged onMetaData does not stop the media.
            Err(_) if parsed.kind == TagKind::Script => Ok(None),
            Err(e) => Err(corrupt(start, format!("a readable FLV media tag ({e})"))),
        }
    }
}

impl Demux for FlvReader {
    fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(p) = self.held.pop_front() {
                return Ok(Some(p));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(p) = self.next_tag()? {
                if self.tracks.iter().any(|t| t.id == p.track) {
                    return Ok(Some(p));
                }
            }
        }
    }

    fn position(&self) -> u64 {
        self.input.position()
    }
}

// ---------------------------------------------------------------------------------------
// MPEG-TS
// ---------------------------------------------------------------------------------------

/// MPEG-TS (ISO/IEC 13818-1) through [`TsDemuxer`], 188-byte packets 1 MiB at a time.
/// Tracks are those of the PMT whose init data showed up (SPS/PPS, ADTS) while looking
/// ahead. A lost sync byte is an error here: a file is not a lossy network.
pub struct TsReader {
    input: Input,
    demux: TsDemuxer,
    events: Vec<TsEvent>,
    held: VecDeque<Packet>,
    tracks: Vec<Track>,
    done: bool,
}

/// TS packets read per chunk.
const TS_CHUNK: usize = 188 * 5577;

impl TsReader {
    /// Reads until the tracks are known (every stream of the PMT ready, or [`MAX_LOOKAHEAD`]
    /// packets, or the end).
    pub fn open(input: Input) -> Result<TsReader, ReadError> {
        let mut r = TsReader {
            input,
            demux: TsDemuxer::new(),
            events: Vec::new(),
            held: VecDeque::new(),
            tracks: Vec::new(),
            done: false,
        };
        // Look ahead: packets appear only for tracks whose init data was found; go on until
        // every announced track has packets and a second has passed, so that a track whose
        // first access unit comes late (audio after video) is not missed.
        loop {
            r.fill()?;
            let tracks = r.demux.tracks();
            let have_all = !tracks.is_empty()
                && tracks
                    .iter()
                    .all(|t| r.held.iter().any(|p| p.track == t.id));
            let dts = r.held.iter().map(|p| p.dts);
            let span = dts.clone().max().unwrap_or(0) - dts.min().unwrap_or(0);
            if r.done || r.held.len() >= MAX_LOOKAHEAD || (have_all && span >= 1000) {
                break;
            }
        }
        let seen: Vec<u32> = r.held.iter().map(|p| p.track).collect();
        r.tracks = r
            .demux
            .tracks()
            .iter()
            .filter(|t| seen.contains(&t.id))
            .cloned()
            .collect();
        if r.tracks.is_empty() {
            return Err(corrupt(
                r.input.position(),
                "a PAT, a PMT and a carried elementary stream (H.264, HEVC, AAC, MP3)",
            ));
        }
        Ok(r)
    }

    /// Reads one chunk into the demuxer; packets go to `held`.
    fn fill(&mut self) -> Result<(), ReadError> {
        if self.done {
            return Ok(());
        }
        let at = self.input.position();
        let chunk = self.input.take(TS_CHUNK)?;
        let n = chunk.len();
        let before = self.demux.stats().sync_losses;
        if n == 0 {
            self.demux.finish(&mut self.events);
            self.done = true;
        } else {
            if at == 0 && chunk[0] != 0x47 {
                return Err(corrupt(0, "an MPEG-TS sync byte 0x47"));
            }
            self.demux.push(&chunk, &mut self.events);
        }
        if self.demux.stats().sync_losses > before {
            let off = (0..n)
                .step_by(188)
                .find(|&i| chunk[i] != 0x47)
                .map_or(at, |i| at + i as u64);
            return Err(corrupt(
                off,
                "an MPEG-TS sync byte 0x47 every 188 bytes (sync lost)",
            ));
        }
        if n > 0 && n < TS_CHUNK && n % 188 != 0 {
            return Err(corrupt(
                at + (n - n % 188) as u64,
                format!(
                    "a whole 188-byte TS packet (the file ends after {})",
                    n % 188
                ),
            ));
        }
        for e in self.events.drain(..) {
            if let TsEvent::Packet(p) = e {
                self.held.push_back(p);
            }
        }
        Ok(())
    }
}

impl Demux for TsReader {
    fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            while let Some(p) = self.held.pop_front() {
                if self.tracks.iter().any(|t| t.id == p.track) {
                    return Ok(Some(p));
                }
            }
            if self.done {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    fn position(&self) -> u64 {
        self.input.position()
    }
}

// ---------------------------------------------------------------------------------------
// MP4
// ---------------------------------------------------------------------------------------

/// The top-level box header at `at` of `file`: (type, header length, total size); `None` at
/// the end. A size of 0 runs to the end (§4.2).
fn box_at(file: &[u8], at: u64) -> Result<Option<([u8; 4], u64, u64)>, ReadError> {
    let len = file.len() as u64;
    if at >= len {
        return Ok(None);
    }
    let h = &file[at as usize..(at + 16).min(len) as usize];
    if h.len() < 8 {
        return Err(corrupt(at, "an 8-byte box header (the file ends)"));
    }
    let size32 = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
    let kind = [h[4], h[5], h[6], h[7]];
    let (head, size) = match size32 {
        0 => (8, len - at),
        1 if h.len() == 16 => (
            16,
            u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        ),
        1 => return Err(corrupt(at, "a 16-byte large box header")),
        s => (8, s),
    };
    if size < head {
        return Err(corrupt(
            at,
            format!("a box size of at least {head} (found {size})"),
        ));
    }
    Ok(Some((kind, head, size)))
}

/// What kind of MP4 file is being read.
enum Mp4Kind {
    /// Sample tables in `moov`: the next sample of each track, merged by DTS.
    Progressive { samples: Vec<VecDeque<Sample>> },
    /// `moof` + `mdat` fragments after the init `moov` (§8.8), one fragment held at a time.
    Fragmented {
        init: Fragmented,
        next_box: u64,
        held: VecDeque<Packet>,
    },
}

/// MP4 / MOV (ISO/IEC 14496-12), progressive (`moov` before or after `mdat`) or fragmented.
/// Needs the whole file at hand (mapped; a pipe is first copied to a temporary file).
/// Progressive files are read sample by sample, the tracks merged in DTS order; each
/// payload is a slice of the mapping.
pub struct Mp4Reader {
    input: Input,
    file: Bytes,
    tracks: Vec<Track>,
    kind: Mp4Kind,
    read: u64,
}

impl Mp4Reader {
    /// Finds `moov` among the top-level boxes and reads the sample tables (or, fragmented,
    /// the init tracks). `input` must be mapped ([`Input::map`]) or given ([`Input::bytes`]).
    pub fn open(input: Input) -> Result<Mp4Reader, ReadError> {
        let Some(file) = input.whole().cloned() else {
            return Err(ReadError::Io(io::Error::other(
                "MP4 needs a file, not a stream",
            )));
        };
        let len = file.len() as u64;
        let mut at = 0;
        let mut moov = None;
        let mut first_moof = None;
        while let Some((kind, head, size)) = box_at(&file, at)? {
            if at == 0
                && !matches!(
                    &kind,
                    b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip" | b"styp" | b"pnot"
                )
            {
                return Err(corrupt(
                    0,
                    format!(
                        "an MP4 box (ftyp, moov, mdat…); found {:?}",
                        String::from_utf8_lossy(&kind)
                    ),
                ));
            }
            match &kind {
                b"moov" => {
                    let end = at.saturating_add(size).min(len);
                    moov = Some((at, file.slice((at + head).min(end) as usize..end as usize)));
                }
                b"moof" if first_moof.is_none() => first_moof = Some(at),
                _ => {}
            }
            if moov.is_some() && first_moof.is_some() {
                break;
            }
            at = at.saturating_add(size);
        }
        let Some((moov_at, moov)) = moov else {
            return Err(corrupt(
                at.min(len),
                "a moov box (none in the file: not an MP4, or cut short before its index)",
            ));
        };
        let fragmented = first_moof.is_some() || dtsc::mp4::find_box(&moov, &[b"mvex"]).is_some();
        if fragmented {
            let mut init_box = Vec::with_capacity(moov.len() + 8);
            init_box.extend_from_slice(&((moov.len() + 8) as u32).to_be_bytes());
            init_box.extend_from_slice(b"moov");
            init_box.extend_from_slice(&moov);
            let init = Fragmented::read_init(&init_box)
                .map_err(|e| corrupt(moov_at, format!("a fragmented MP4 init moov ({e})")))?;
            return Ok(Mp4Reader {
                input,
                file,
                tracks: init.tracks.clone(),
                kind: Mp4Kind::Fragmented {
                    init,
                    next_box: first_moof.unwrap_or(len),
                    held: VecDeque::new(),
                },
                read: 0,
            });
        }
        let (tracks, samples) = mp4demux::read_moov(&moov, len)
            .map_err(|e| corrupt(moov_at, format!("a readable moov ({e})")))?;
        Ok(Mp4Reader {
            input,
            file,
            tracks,
            kind: Mp4Kind::Progressive {
                samples: samples.into_iter().map(VecDeque::from).collect(),
            },
            read: 0,
        })
    }
}

impl Demux for Mp4Reader {
    fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        match &mut self.kind {
            Mp4Kind::Progressive { samples } => {
                let Some(ti) = (0..samples.len())
                    .filter(|&i| !samples[i].is_empty())
                    .min_by_key(|&i| (samples[i][0].dts, samples[i][0].pos))
                else {
                    return Ok(None);
                };
                let Some(s) = samples[ti].pop_front() else {
                    return Ok(None);
                };
                let end = s.pos + u64::from(s.size);
                if end > self.file.len() as u64 {
                    return Err(corrupt(s.pos, format!("a sample of {} bytes", s.size)));
                }
                self.read += u64::from(s.size);
                // Pages below every track's next sample are done with.
                if self.read % RELEASE_STEP < u64::from(s.size) {
                    let low = samples
                        .iter()
                        .filter_map(|q| q.front())
                        .map(|x| x.pos)
                        .min();
                    self.input
                        .release_before(low.unwrap_or(end).saturating_sub(RELEASE_STEP));
                }
                Ok(Some(Packet {
                    track: self.tracks[ti].id,
                    dts: s.dts,
                    offset: s.offset,
                    keyframe: s.keyframe,
                    bpos: s.pos,
                    data: self.file.slice(s.pos as usize..end as usize),
                }))
            }
            Mp4Kind::Fragmented {
                init,
                next_box,
                held,
            } => loop {
                if let Some(p) = held.pop_front() {
                    return Ok(Some(p));
                }
                // The next moof and the mdat after it.
                let Some((kind, _, size)) = box_at(&self.file, *next_box)? else {
                    return Ok(None);
                };
                let at = *next_box;
                let len = self.file.len() as u64;
                *next_box = at.saturating_add(size);
                self.read = (*next_box).min(len);
                if &kind != b"moof" {
                    continue;
                }
                let mut end = *next_box;
                if let Some((k2, _, s2)) = box_at(&self.file, end)? {
                    if &k2 == b"mdat" {
                        end = end.saturating_add(s2);
                    }
                }
                if end > len {
                    return Err(corrupt(at, "a whole moof + mdat fragment (the file ends)"));
                }
                *next_box = end;
                self.input.release_before(at.saturating_sub(RELEASE_STEP));
                let seg = self.file.slice(at as usize..end as usize);
                let mut out = Vec::new();
                init.read_segment(&seg, &mut out)
                    .map_err(|e| corrupt(at, format!("a readable fragment ({e})")))?;
                for mut p in out {
                    p.bpos += at;
                    held.push_back(p);
                }
            },
        }
    }

    fn position(&self) -> u64 {
        self.read
    }
}

// ---------------------------------------------------------------------------------------
// DTSC
// ---------------------------------------------------------------------------------------

/// A `.dtsc` file (docs/DTSC.md, "Files"): a `DTSC` header frame, then `DTP2` packet frames, read
/// frame by frame. Later header frames are skipped.
pub struct DtscReader {
    input: Input,
    tracks: Vec<Track>,
}

enum FrameKind {
    Header(Header),
    Packet(Packet),
    Other,
}

impl DtscReader {
    /// Reads the header frame.
    pub fn open(input: Input) -> Result<DtscReader, ReadError> {
        let mut r = DtscReader {
            input,
            tracks: Vec::new(),
        };
        match r.frame()? {
            Some(FrameKind::Header(h)) => r.tracks = h.tracks,
            _ => return Err(corrupt(0, "a DTSC header frame (\"DTSC\")")),
        }
        if r.tracks.is_empty() {
            return Err(corrupt(0, "a DTSC header with tracks"));
        }
        Ok(r)
    }

    /// Reads one frame (a packet's payload is a slice of the input).
    fn frame(&mut self) -> Result<Option<FrameKind>, ReadError> {
        let start = self.input.position();
        let head = self.input.peek(8)?;
        let n = head.len();
        if n == 0 {
            return Ok(None);
        }
        if n < 8 {
            return Err(corrupt(
                start,
                format!("an 8-byte DTSC frame header (the file ends after {n})"),
            ));
        }
        let magic = [head[0], head[1], head[2], head[3]];
        if !matches!(&magic, b"DTSC" | b"DTP2" | b"DTPD" | b"DTCM") {
            return Err(corrupt(
                start,
                format!("a DTSC frame magic (DTSC, DTP2); found {magic:02x?}"),
            ));
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > 256 << 20 {
            return Err(corrupt(
                start,
                format!("a DTSC frame under 256 MiB (found {len} bytes)"),
            ));
        }
        let frame = self.input.take(8 + len)?;
        if frame.len() < 8 + len {
            return Err(corrupt(
                start,
                format!(
                    "a DTSC frame of {len} bytes (the file ends after {})",
                    frame.len() - 8
                ),
            ));
        }
        let parsed = match wire::parse_frame(&frame) {
            Ok(Some((f, _))) => f,
            Ok(None) => return Err(corrupt(start, "a whole DTSC frame")),
            Err(e) => return Err(corrupt(start, format!("a valid DTSC frame ({e})"))),
        };
        Ok(Some(match parsed {
            Frame::Header(v) => FrameKind::Header(
                Header::from_value(&v)
                    .map_err(|e| corrupt(start, format!("a valid DTSC header ({e})")))?,
            ),
            Frame::Packet(p) => FrameKind::Packet(Packet {
                track: p.track,
                dts: p.dts,
                offset: p.offset,
                keyframe: p.keyframe,
                bpos: start,
                data: frame.slice_ref(p.data),
            }),
            _ => FrameKind::Other,
        }))
    }
}

impl Demux for DtscReader {
    fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            match self.frame()? {
                None => return Ok(None),
                Some(FrameKind::Packet(p)) => return Ok(Some(p)),
                Some(_) => {}
            }
        }
    }

    fn position(&self) -> u64 {
        self.input.position()
    }
}
