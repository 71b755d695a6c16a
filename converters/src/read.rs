//! Streaming readers: each container is read a tag, a frame, a chunk of TS packets or one MP4
//! sample at a time, so memory stays bounded whatever the file's size (an MP4's sample tables
//! are the exception: they are its index, about 24 bytes a sample).
//!
//! Every reader reports a corrupt or truncated input as a [`ReadError`]: the byte offset and
//! what was expected there.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use dtsc::flv::{self, FlvIngest, IngestEvent, TagKind};
use dtsc::mp4demux::{self, Fragmented, Sample};
use dtsc::tsdemux::{TsDemuxer, TsEvent};
use dtsc::wire::{self, Frame, Header};
use dtsc::{Packet, Track};

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

/// Reads exactly `buf.len()` bytes, or fewer only at the end of the input: returns how many.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
    input: Box<dyn Read>,
    at: u64,
    ingest: FlvIngest,
    held: VecDeque<Packet>,
    tracks: Vec<Track>,
    buf: Vec<u8>,
    done: bool,
}

impl FlvReader {
    /// Reads the file header and looks ahead until the tracks are known.
    pub fn open(mut input: Box<dyn Read>) -> Result<FlvReader, ReadError> {
        let mut head = [0u8; 13];
        let n = read_full(&mut *input, &mut head)?;
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
        let mut hdr = head[..n].to_vec();
        if offset + 4 > n {
            hdr.resize(offset + 4, 0);
            let more = read_full(&mut *input, &mut hdr[n..])?;
            if n + more < offset + 4 {
                return Err(corrupt((n + more) as u64, "the rest of the FLV header"));
            }
        }
        flv::parse_file_header(&hdr)
            .map_err(|e| corrupt(0, format!("an FLV file header ({e})")))?;
        let mut r = FlvReader {
            input,
            at: (offset + 4) as u64,
            ingest: FlvIngest::new(),
            held: VecDeque::new(),
            tracks: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
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
                r.at,
                "an H.264, AAC or MP3 tag (the file has none)",
            ));
        }
        Ok(r)
    }

    /// Reads one tag; a packet when it gave one.
    fn next_tag(&mut self) -> Result<Option<Packet>, ReadError> {
        let start = self.at;
        self.buf.resize(11, 0);
        let n = read_full(&mut *self.input, &mut self.buf[..11])?;
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
        let size = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
        self.buf.resize(11 + size + 4, 0);
        let got = read_full(&mut *self.input, &mut self.buf[11..])?;
        if got < size + 4 {
            // A last tag without its PreviousTagSize is whole: accept it.
            if got < size {
                return Err(corrupt(
                    start,
                    format!("an FLV tag of {size} body bytes (the file ends after {got})"),
                ));
            }
            self.buf.truncate(11 + got);
            self.buf.resize(11 + size + 4, 0);
        }
        self.at += (11 + got.min(size + 4)) as u64;
        let (tag, _) = match flv::parse_tag(&self.buf) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(corrupt(start, "a whole FLV tag")),
            Err(e) => return Err(corrupt(start, format!("an FLV tag ({e})"))),
        };
        match self
            .ingest
            .push_tag(tag.kind, u64::from(tag.timestamp), tag.body)
        {
            Ok(Some(IngestEvent::Packet(p))) => {
                let mut p = p.to_owned();
                p.bpos = start;
                Ok(Some(p))
            }
            Ok(_) => Ok(None),
            Err(e) if tag.kind == TagKind::Script => {
                // A damaged onMetaData does not stop the media.
                let _ = e;
                Ok(None)
            }
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
        self.at
    }
}

// ---------------------------------------------------------------------------------------
// MPEG-TS
// ---------------------------------------------------------------------------------------

/// MPEG-TS (ISO/IEC 13818-1) through [`TsDemuxer`], 188-byte packets read 1 MiB at a time.
/// Tracks are those of the PMT whose init data showed up (SPS/PPS, ADTS) while looking
/// ahead. A lost sync byte is an error here: a file is not a lossy network.
pub struct TsReader {
    input: Box<dyn Read>,
    at: u64,
    demux: TsDemuxer,
    events: Vec<TsEvent>,
    held: VecDeque<Packet>,
    tracks: Vec<Track>,
    chunk: Vec<u8>,
    done: bool,
}

/// TS packets read per chunk.
const TS_CHUNK: usize = 188 * 5577;

impl TsReader {
    /// Reads until the tracks are known (every stream of the PMT ready, or [`MAX_LOOKAHEAD`]
    /// packets, or the end).
    pub fn open(input: Box<dyn Read>) -> Result<TsReader, ReadError> {
        let mut r = TsReader {
            input,
            at: 0,
            demux: TsDemuxer::new(),
            events: Vec::new(),
            held: VecDeque::new(),
            tracks: Vec::new(),
            chunk: vec![0; TS_CHUNK],
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
                r.at,
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
        let n = read_full(&mut *self.input, &mut self.chunk)?;
        let before = self.demux.stats().sync_losses;
        if n == 0 {
            self.demux.finish(&mut self.events);
            self.done = true;
        } else {
            if self.at == 0 && self.chunk[0] != 0x47 {
                return Err(corrupt(0, "an MPEG-TS sync byte 0x47"));
            }
            self.demux.push(&self.chunk[..n], &mut self.events);
        }
        if self.demux.stats().sync_losses > before {
            let off = (0..n)
                .step_by(188)
                .find(|&i| self.chunk[i] != 0x47)
                .map_or(self.at, |i| self.at + i as u64);
            return Err(corrupt(
                off,
                "an MPEG-TS sync byte 0x47 every 188 bytes (sync lost)",
            ));
        }
        if n > 0 && n % 188 != 0 && n < self.chunk.len() {
            return Err(corrupt(
                self.at + (n - n % 188) as u64,
                format!(
                    "a whole 188-byte TS packet (the file ends after {})",
                    n % 188
                ),
            ));
        }
        self.at += n as u64;
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
        self.at
    }
}

// ---------------------------------------------------------------------------------------
// MP4
// ---------------------------------------------------------------------------------------

/// Reads the top-level box header at `at`: (type, header length, total size); `None` at the
/// end of the file. A size of 0 runs to the end (§4.2).
fn box_at(file: &File, at: u64, len: u64) -> Result<Option<([u8; 4], u64, u64)>, ReadError> {
    if at >= len {
        return Ok(None);
    }
    let mut h = [0u8; 16];
    let avail = (len - at).min(16) as usize;
    if avail < 8 {
        return Err(corrupt(at, "an 8-byte box header (the file ends)"));
    }
    file.read_exact_at(&mut h[..avail], at)?;
    let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let kind = [h[4], h[5], h[6], h[7]];
    let (head, size) = match size32 {
        0 => (8, len - at),
        1 if avail == 16 => (
            16,
            u64::from_be_bytes(h[8..16].try_into().unwrap_or([0; 8])),
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
/// Needs a seekable file (stdin is spooled to a temporary file first). Progressive files are
/// read sample by sample with positioned reads, the tracks merged in DTS order.
pub struct Mp4Reader {
    file: File,
    len: u64,
    tracks: Vec<Track>,
    kind: Mp4Kind,
    read: u64,
}

impl Mp4Reader {
    /// Finds `moov` among the top-level boxes and reads the sample tables (or, fragmented,
    /// the init tracks).
    pub fn open(file: File) -> Result<Mp4Reader, ReadError> {
        let len = file.metadata()?.len();
        let mut at = 0;
        let mut moov = None;
        let mut first_moof = None;
        while let Some((kind, head, size)) = box_at(&file, at, len)? {
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
                    if size > 512 << 20 {
                        return Err(corrupt(at, "a moov box under 512 MiB"));
                    }
                    let end = (at + size).min(len);
                    let mut body = vec![0u8; (end - at - head) as usize];
                    file.read_exact_at(&mut body, at + head)?;
                    moov = Some((at, body));
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
                file,
                len,
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
            file,
            len,
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
                let mut data = vec![0u8; s.size as usize];
                self.file.read_exact_at(&mut data, s.pos).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        corrupt(s.pos, format!("a sample of {} bytes", s.size))
                    } else {
                        ReadError::Io(e)
                    }
                })?;
                self.read += u64::from(s.size);
                Ok(Some(Packet {
                    track: self.tracks[ti].id,
                    dts: s.dts,
                    offset: s.offset,
                    keyframe: s.keyframe,
                    bpos: s.pos,
                    data: Bytes::from(data),
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
                let Some((kind, _, size)) = box_at(&self.file, *next_box, self.len)? else {
                    return Ok(None);
                };
                let at = *next_box;
                *next_box = at.saturating_add(size);
                self.read = (*next_box).min(self.len);
                if &kind != b"moof" {
                    continue;
                }
                let mut end = *next_box;
                if let Some((k2, _, s2)) = box_at(&self.file, end, self.len)? {
                    if &k2 == b"mdat" {
                        end = end.saturating_add(s2);
                    }
                }
                if end > self.len {
                    return Err(corrupt(at, "a whole moof + mdat fragment (the file ends)"));
                }
                if end - at > 1 << 30 {
                    return Err(corrupt(at, "a fragment under 1 GiB"));
                }
                let mut seg = vec![0u8; (end - at) as usize];
                self.file.read_exact_at(&mut seg, at)?;
                *next_box = end;
                let mut out = Vec::new();
                init.read_segment(&Bytes::from(seg), &mut out)
                    .map_err(|e| corrupt(at, format!("a readable fragment ({e})")))?;
                for mut p in out {
                    p.bpos += at;
                    held.push_back(p);
                }
            },
        }
    }

    fn position(&self) -> u64 {
        match &self.kind {
            Mp4Kind::Progressive { .. } => self.read,
            Mp4Kind::Fragmented { .. } => self.read,
        }
    }
}

// ---------------------------------------------------------------------------------------
// DTSC
// ---------------------------------------------------------------------------------------

/// A `.dtsc` file (dtsc.md, "Files"): a `DTSC` header frame, then `DTP2` packet frames, read
/// frame by frame. Later header frames are skipped.
pub struct DtscReader {
    input: Box<dyn Read>,
    at: u64,
    tracks: Vec<Track>,
    buf: Vec<u8>,
}

impl DtscReader {
    /// Reads the header frame.
    pub fn open(input: Box<dyn Read>) -> Result<DtscReader, ReadError> {
        let mut r = DtscReader {
            input,
            at: 0,
            tracks: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
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

    /// Reads one frame.
    fn frame(&mut self) -> Result<Option<FrameKind>, ReadError> {
        let start = self.at;
        self.buf.resize(8, 0);
        let n = read_full(&mut *self.input, &mut self.buf[..8])?;
        if n == 0 {
            return Ok(None);
        }
        if n < 8 {
            return Err(corrupt(
                start,
                format!("an 8-byte DTSC frame header (the file ends after {n})"),
            ));
        }
        let magic = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        if !matches!(&magic, b"DTSC" | b"DTP2" | b"DTPD" | b"DTCM") {
            return Err(corrupt(
                start,
                format!("a DTSC frame magic (DTSC, DTP2); found {:02x?}", magic),
            ));
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > 256 << 20 {
            return Err(corrupt(
                start,
                format!("a DTSC frame under 256 MiB (found {len} bytes)"),
            ));
        }
        self.buf.resize(8 + len, 0);
        let got = read_full(&mut *self.input, &mut self.buf[8..])?;
        if got < len {
            return Err(corrupt(
                start,
                format!("a DTSC frame of {len} bytes (the file ends after {got})"),
            ));
        }
        self.at += (8 + len) as u64;
        let frame = match wire::parse_frame(&self.buf) {
            Ok(Some((f, _))) => f,
            Ok(None) => return Err(corrupt(start, "a whole DTSC frame")),
            Err(e) => return Err(corrupt(start, format!("a valid DTSC frame ({e})"))),
        };
        Ok(Some(match frame {
            Frame::Header(v) => FrameKind::Header(
                Header::from_value(&v)
                    .map_err(|e| corrupt(start, format!("a valid DTSC header ({e})")))?,
            ),
            Frame::Packet(p) => {
                let mut p = p.to_owned();
                p.bpos = start;
                FrameKind::Packet(p)
            }
            _ => FrameKind::Other,
        }))
    }
}

enum FrameKind {
    Header(Header),
    Packet(Packet),
    Other,
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
        self.at
    }
}
