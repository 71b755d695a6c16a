//! File sources played as live streams: the whole file is read into packets once, then
//! replayed at real time, looping with continuous timestamps (each loop adds the file's
//! duration to every DTS), as MistServer's "always on" file inputs do.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dtsc::flv::{self, FlvIngest, IngestEvent};
use dtsc::tsdemux::{TsDemuxer, TsEvent};
use dtsc::{Packet, Track, TrackKind};

/// Reads an FLV file's tracks and packets (FLV spec v10.1 Annex E); a truncated last tag is
/// dropped, as players do.
fn read_flv(path: &str) -> Result<(Vec<Track>, Vec<Packet>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let Some((_hdr, mut at)) = flv::parse_file_header(&bytes)? else {
        bail!("{path}: truncated FLV header");
    };
    let mut ingest = FlvIngest::default();
    let mut packets = Vec::new();
    while at < bytes.len() {
        let Some((tag, used)) = flv::parse_tag(&bytes[at..])? else {
            break;
        };
        let bpos = at as u64;
        at += used;
        match ingest.push_tag(tag.kind, tag.timestamp as u64, tag.body)? {
            Some(IngestEvent::Packet(p)) => {
                let mut p = p.to_owned();
                p.bpos = bpos;
                packets.push(p)
            }
            Some(IngestEvent::TracksChanged) | None => {}
        }
    }
    Ok((ingest.tracks().to_vec(), packets))
}

/// Reads an MPEG-TS file's tracks and packets with [`TsDemuxer`]; streams it cannot carry
/// are named on stderr and skipped.
fn read_ts(path: &str) -> Result<(Vec<Track>, Vec<Packet>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let mut demux = TsDemuxer::new();
    let mut events = Vec::new();
    demux.push(&bytes, &mut events);
    demux.finish(&mut events);
    let mut packets = Vec::new();
    for e in events {
        match e {
            TsEvent::Packet(p) => packets.push(p),
            TsEvent::Unsupported { pid, stream_type } => eprintln!(
                "{path}: PID {pid:#x}: stream type {stream_type:#04x} is not supported, skipped"
            ),
            TsEvent::TracksChanged => {}
        }
    }
    let st = demux.stats();
    if st.sync_losses + st.cc_errors + st.dropped + st.bad_sections > 0 {
        eprintln!("{path}: {st:?}");
    }
    Ok((demux.tracks().to_vec(), packets))
}

/// Reads an MP4 or MOV file's tracks and packets ([`dtsc::mp4demux`]; `moov` before or after
/// `mdat`). The file is held in memory and the payloads are slices of it.
fn read_mp4(path: &str) -> Result<(Vec<Track>, Vec<Packet>)> {
    let bytes = bytes::Bytes::from(std::fs::read(path).with_context(|| format!("reading {path}"))?);
    dtsc::mp4demux::read(&bytes).with_context(|| format!("{path}: not a readable MP4/MOV file"))
}

/// Reads a DTSC file (`docs/DTSC.md`, "Files": a `DTSC` header, then `DTP2`
/// packets; later headers replace the tracks). A truncated last frame is dropped.
fn read_dtsc(path: &str) -> Result<(Vec<Track>, Vec<Packet>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let mut at = 0;
    let mut tracks = Vec::new();
    let mut packets = Vec::new();
    while at < bytes.len() {
        match dtsc::wire::parse_frame(&bytes[at..]) {
            Ok(Some((dtsc::wire::Frame::Header(v), used))) => {
                tracks = dtsc::wire::Header::from_value(&v)
                    .with_context(|| format!("{path}: the header at byte {at}"))?
                    .tracks;
                at += used;
            }
            Ok(Some((dtsc::wire::Frame::Packet(p), used))) => {
                let mut p = p.to_owned();
                if p.bpos == 0 {
                    p.bpos = at as u64;
                }
                packets.push(p);
                at += used;
            }
            Ok(Some((_, used))) => at += used,
            Ok(None) => break,
            Err(e) => bail!("{path}: not DTSC at byte {at}: {e}"),
        }
    }
    if tracks.is_empty() {
        bail!("{path}: no DTSC header");
    }
    Ok((tracks, packets))
}

/// A file's tracks and packets, ready to be replayed.
pub struct LoopedFile {
    /// The tracks found in the file.
    pub tracks: Vec<Track>,
    packets: Vec<Packet>,
    /// Length of one loop in ms: the last DTS plus one frame duration.
    loop_ms: u64,
    first_dts: u64,
    next: usize,
    loops: u64,
    start: Instant,
    /// What became of the file's `.dtsh` index ([`index_beside`]), for the log.
    pub index: Option<IndexUse>,
}

impl LoopedFile {
    /// Reads a file source into memory, by its extension: `.flv`, `.ts` (`.m2ts`, `.mts`),
    /// `.mp4` (`.m4v`, `.m4a`, `.mov`, `.3gp`) or `.dtsc`. Other extensions are refused with
    /// a message naming the supported ones.
    ///
    /// `prefill_ms`: how much of the file is released at once at start, so that a viewer who
    /// comes first finds a few segments already there.
    pub fn open(path: &str, prefill_ms: u64, now: Instant) -> Result<LoopedFile> {
        let ext = std::path::Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let (tracks, packets) = match ext.as_str() {
            "flv" => read_flv(path)?,
            "ts" | "m2ts" | "mts" => read_ts(path)?,
            "mp4" | "m4v" | "m4a" | "mov" | "3gp" => read_mp4(path)?,
            "dtsc" => read_dtsc(path)?,
            _ => bail!("{path}: unsupported file source (supported: .flv, .ts, .mp4, .mov, .dtsc)"),
        };
        let mut f = LoopedFile::from_packets(path, tracks, packets, prefill_ms, now)?;
        f.index = Some(index_beside(path, &mut f.tracks, &f.packets));
        Ok(f)
    }

    /// A loop of `packets` (of `tracks`), released at real time from `now - prefill_ms`.
    /// Video tracks without a frame rate get one from their median DTS step.
    pub fn from_packets(
        path: &str,
        mut tracks: Vec<Track>,
        mut packets: Vec<Packet>,
        prefill_ms: u64,
        now: Instant,
    ) -> Result<LoopedFile> {
        if packets.is_empty() {
            bail!("{path}: no media packets");
        }
        packets.sort_by_key(|p| p.dts);
        for t in tracks
            .iter_mut()
            .filter(|t| t.kind == TrackKind::Video && t.fpks == 0)
        {
            let mut steps: Vec<u64> = packets
                .iter()
                .filter(|p| p.track == t.id)
                .map(|p| p.dts)
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|&d| d > 0)
                .collect();
            steps.sort_unstable();
            if let Some(&mid) = steps.get(steps.len() / 2) {
                t.fpks = (1_000_000 / mid) as u32;
            }
        }
        let first_dts = packets.iter().map(|p| p.dts).min().unwrap_or(0);
        // A loop is as long as the longest track's span plus one of its frames, so that the
        // longest track (usually video) continues without a gap into the next loop and no
        // track overlaps itself; a track that starts later or ends earlier (audio lead-in in
        // a TS file) gets a gap that long.
        let loop_ms = tracks
            .iter()
            .filter_map(|t| {
                let dts: Vec<u64> = packets
                    .iter()
                    .filter(|p| p.track == t.id)
                    .map(|p| p.dts)
                    .collect();
                let (first, last) = (*dts.first()?, *dts.last()?);
                let mut steps: Vec<u64> = dts
                    .windows(2)
                    .map(|w| w[1].saturating_sub(w[0]))
                    .filter(|&d| d > 0)
                    .collect();
                steps.sort_unstable();
                let frame = steps.get(steps.len() / 2).copied().unwrap_or(40);
                Some(last - first + frame)
            })
            .max()
            .unwrap_or(40)
            .max(1);
        let prefill = prefill_ms.min(loop_ms / 2);
        Ok(LoopedFile {
            tracks,
            packets,
            loop_ms,
            first_dts,
            next: 0,
            loops: 0,
            start: now - Duration::from_millis(prefill),
            index: None,
        })
    }

    /// Length of one loop in ms: the file's span of DTS plus one frame.
    pub fn duration_ms(&self) -> u64 {
        self.loop_ms
    }

    /// Every packet of the file once, in DTS order, with DTS counted from the first one.
    pub fn packets_from_zero(&self) -> impl Iterator<Item = Packet> + '_ {
        self.packets.iter().map(|p| {
            let mut p = p.clone();
            p.dts -= self.first_dts;
            p
        })
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        let p = &self.packets[self.next];
        self.start + Duration::from_millis(self.loops * self.loop_ms + p.dts - self.first_dts)
    }

    /// The next packet if it is due at `now`, with its DTS moved onto the continuous timeline.
    pub fn poll(&mut self, now: Instant) -> Option<Packet> {
        if self.next_due() > now {
            return None;
        }
        let mut p = self.packets[self.next].clone();
        p.dts = p.dts - self.first_dts + self.loops * self.loop_ms;
        self.next += 1;
        if self.next == self.packets.len() {
            self.next = 0;
            self.loops += 1;
        }
        Some(p)
    }

    /// Unix-time offset: the wall clock (ms) that corresponds to DTS 0.
    pub fn start(&self) -> Instant {
        self.start
    }
}

/// What [`index_beside`] did with a file's `.dtsh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexUse {
    /// An index at least as new as the file matched what was read and gave the tracks.
    Reused(String),
    /// None was there (or it was older than the file, unreadable, or did not match), and
    /// one was written; the reason it was (re)written.
    Written(String, &'static str),
    /// One could not be written (a read-only media folder): the reason.
    NotWritten(String),
}

impl std::fmt::Display for IndexUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexUse::Reused(p) => write!(f, "index {p} reused"),
            IndexUse::Written(p, why) => write!(f, "index {p} written ({why})"),
            IndexUse::NotWritten(why) => write!(f, "no index written: {why}"),
        }
    }
}

/// MistServer's index cache for a file source: `PATH.dtsh` beside it, one full DTSC header
/// with the `keys`/`fragments`/`keysizes`/`parts` members per track ([`dtsc::dtsh`];
/// `docs/DTSC.md`, "Files").
///
/// An index no older than the file whose parts match the packets just read (count, sizes,
/// DTS and offsets, per track) is reused: its tracks replace `tracks`, so a MistServer-written
/// index's members (language, bit rates) carry over. Otherwise one is built from the packets
/// and written (to a temporary name, then renamed, so a reader never sees half a file).
pub fn index_beside(path: &str, tracks: &mut Vec<Track>, packets: &[Packet]) -> IndexUse {
    let dtsh = format!("{path}.dtsh");
    let mtime = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let why = match (mtime(path), mtime(&dtsh)) {
        (_, None) => "none was there",
        (Some(src), Some(idx)) if idx < src => "the file is newer",
        _ => match std::fs::read(&dtsh)
            .map_err(|e| e.to_string())
            .and_then(|b| dtsc::dtsh::decode(&b).map_err(|e| e.to_string()))
        {
            Ok((header, index)) if index_matches(&header.tracks, &index, packets) => {
                *tracks = header.tracks;
                return IndexUse::Reused(dtsh);
            }
            Ok(_) => "it did not match the file",
            Err(_) => "it was unreadable",
        },
    };
    let header = dtsc::wire::Header {
        live: false,
        unixzero: None,
        tracks: tracks.clone(),
    };
    let bytes = dtsc::dtsh::encode(&header, &dtsc::dtsh::build(tracks, packets));
    let tmp = format!("{dtsh}.{}.tmp", std::process::id());
    match std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &dtsh)) {
        Ok(()) => IndexUse::Written(dtsh, why),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            IndexUse::NotWritten(format!("{dtsh}: {e}"))
        }
    }
}

/// Whether `index` (of `tracks`) describes `packets`: per track the same number of packets
/// with the same payload sizes, DTS and composition offsets.
fn index_matches(tracks: &[Track], index: &[dtsc::dtsh::TrackIndex], packets: &[Packet]) -> bool {
    tracks.len() == index.len()
        && tracks.iter().zip(index).all(|(t, ix)| {
            let mut mine = packets.iter().filter(|p| p.track == t.id);
            ix.packets().all(|ip| {
                mine.next().is_some_and(|p| {
                    p.data.len() == ip.size as usize && p.dts == ip.dts && p.offset == ip.offset
                })
            }) && mine.next().is_none()
        })
}
