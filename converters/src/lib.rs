//! Offline conversion between the containers the server reads and writes: FLV, MPEG-TS, MP4
//! (`moov` first or fragmented) and DTSC (with its `.dtsh` index), in any direction.
//!
//! A conversion streams: a reader ([`read`]) gives one packet at a time, the cut
//! ([`Options::tracks`], [`Options::start_ms`], [`Options::end_ms`]) passes it on or not, and a
//! writer ([`write`]) writes it out. Memory is bounded by one tag, frame or GOP, plus an
//! index for MP4 (about 24 bytes a sample, in and out) and DTSC output (the `.dtsh`); never
//! by the file's size. The output is written under a temporary name in its folder and renamed
//! into place only when whole, so a failed conversion leaves nothing under the final name.
//!
//! The codecs are the server's (`dtsc`): H.264, HEVC, AAC and MP3, each where its container
//! allows (FLV: H.264 and AAC/MP3). MistServer's own DTSC conversion is broken in its current
//! release; this one writes a header with every track's `firstms`, `lastms` and `bps`, the
//! `DTP2` frames in file order, and a `.dtsh` whose keys point at those frames (docs/DTSC.md,
//! "Files" and "Index members").

pub mod read;
pub mod write;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dtsc::{Packet, Track, TrackKind};
use serde_json::{json, Value};

use read::Demux;

/// A container format the converter reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FLV (FLV spec v10.1 Annex E).
    Flv,
    /// MPEG-TS (ISO/IEC 13818-1), 188-byte packets.
    Ts,
    /// MP4 (ISO/IEC 14496-12). Read: progressive or fragmented, `moov` anywhere. Written:
    /// progressive with `moov` before `mdat`.
    Mp4,
    /// Fragmented MP4 (ISO/IEC 14496-12 §8.8): written as an init segment then one fragment
    /// per GOP. Read as [`Format::Mp4`].
    Fmp4,
    /// DTSC (docs/DTSC.md, "Files"): a header frame then `DTP2` frames; written with a `.dtsh`.
    Dtsc,
}

/// Every format: name, file extensions (the first is the one written), what it is.
pub const FORMATS: &[(Format, &str, &[&str], &str)] = &[
    (Format::Flv, "flv", &["flv"], "FLV"),
    (Format::Ts, "ts", &["ts", "m2ts", "mts"], "MPEG-TS"),
    (
        Format::Mp4,
        "mp4",
        &["mp4", "m4v", "m4a", "mov"],
        "MP4 with moov first (reads any MP4/MOV)",
    ),
    (
        Format::Fmp4,
        "fmp4",
        &["m4s", "cmfv"],
        "fragmented MP4 (--to fmp4)",
    ),
    (Format::Dtsc, "dtsc", &["dtsc"], "DTSC, with a .dtsh index"),
];

impl Format {
    /// The format named `name` (`flv`, `ts`, `mp4`, `fmp4`, `dtsc`, or an extension).
    pub fn from_name(name: &str) -> Option<Format> {
        let name = name.to_ascii_lowercase();
        FORMATS
            .iter()
            .find(|(_, n, exts, _)| *n == name || exts.contains(&name.as_str()))
            .map(|f| f.0)
    }

    /// The format of a path by its extension.
    pub fn for_path(path: &str) -> Option<Format> {
        let file = path.rsplit('/').next()?;
        let (_, ext) = file.rsplit_once('.')?;
        Format::from_name(ext).filter(|_| !ext.is_empty())
    }

    /// The format whose first bytes `head` are: `FLV`, a TS sync byte every 188 bytes, an MP4
    /// box type at bytes 4..8, `DTSC`.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(b"FLV") {
            return Some(Format::Flv);
        }
        if head.starts_with(b"DTSC") {
            return Some(Format::Dtsc);
        }
        if head.len() >= 8
            && matches!(
                &head[4..8],
                b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"styp" | b"skip"
            )
        {
            return Some(Format::Mp4);
        }
        if !head.is_empty() && (0..head.len()).step_by(188).all(|i| head[i] == 0x47) {
            return Some(Format::Ts);
        }
        None
    }

    /// The short name.
    pub fn name(self) -> &'static str {
        FORMATS.iter().find(|f| f.0 == self).map_or("?", |f| f.1)
    }
}

/// The formats and their extensions, for messages: `flv (.flv), ts (.ts .m2ts .mts), …`.
pub fn supported() -> String {
    FORMATS
        .iter()
        .map(|(_, n, exts, what)| {
            let exts: Vec<String> = exts.iter().map(|e| format!(".{e}")).collect();
            format!("{n} ({}: {what})", exts.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which tracks to keep: by kind (`video`, `audio`), by codec (`h264`, `aac`, …) or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackSel {
    /// Every track of this kind.
    Kind(TrackKind),
    /// The track with this id (as the input numbers its tracks; see `sluice-analyse`).
    Id(u32),
    /// Every track with this codec (MistServer's name, case-insensitive).
    Codec(String),
}

impl TrackSel {
    /// Parses a comma-separated list (`video,audio`, `1,3`, `h264,aac`).
    pub fn parse_list(s: &str) -> Result<Vec<TrackSel>> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                if let Ok(id) = x.parse::<u32>() {
                    return Ok(TrackSel::Id(id));
                }
                if let Some(k) = TrackKind::parse(&x.to_ascii_lowercase()) {
                    return Ok(TrackSel::Kind(k));
                }
                if x.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Ok(TrackSel::Codec(x.to_ascii_lowercase()));
                }
                bail!("--tracks: '{x}' is not a track id, video, audio or a codec name")
            })
            .collect()
    }

    fn matches(&self, t: &Track) -> bool {
        match self {
            TrackSel::Kind(k) => t.kind == *k,
            TrackSel::Id(id) => t.id == *id,
            TrackSel::Codec(c) => t.codec.as_str().eq_ignore_ascii_case(c),
        }
    }
}

/// What to convert.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The input format; from the extension, else from the first bytes, when `None`.
    pub from: Option<Format>,
    /// The output format; from the extension when `None`.
    pub to: Option<Format>,
    /// Tracks to keep; all when empty.
    pub tracks: Vec<TrackSel>,
    /// Start, ms of the input's timeline: output starts at the last keyframe of the first
    /// video track at or before it (every track from that keyframe's DTS on), with
    /// timestamps moved so that it is 0.
    pub start_ms: Option<u64>,
    /// End, ms of the input's timeline: packets with a DTS at or after it are left out.
    pub end_ms: Option<u64>,
}

/// Progress of a conversion: input bytes read, of how many (unknown for a pipe).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Input bytes consumed so far.
    pub done: u64,
    /// The input's size, when known.
    pub total: Option<u64>,
}

/// One output track's figures.
#[derive(Debug, Clone)]
pub struct TrackSummary {
    /// The track.
    pub track: Track,
    /// Packets written.
    pub packets: u64,
    /// Of which keyframes.
    pub keyframes: u64,
    /// First and last DTS written, ms (output timeline).
    pub first_ms: Option<u64>,
    /// Last DTS written, ms.
    pub last_ms: Option<u64>,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Input path (`-` for stdin).
    pub input: String,
    /// Output path (`-` for stdout).
    pub output: String,
    /// Formats.
    pub from: Format,
    /// Output format.
    pub to: Format,
    /// Per output track.
    pub tracks: Vec<TrackSummary>,
    /// Input bytes read.
    pub bytes_in: u64,
    /// Output bytes written.
    pub bytes_out: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The `.dtsh` written beside a DTSC output.
    pub index: Option<PathBuf>,
}

impl Summary {
    /// Packets written, all tracks.
    pub fn packets(&self) -> u64 {
        self.tracks.iter().map(|t| t.packets).sum()
    }

    /// Media duration written, ms (last DTS minus first, over all tracks).
    pub fn duration_ms(&self) -> u64 {
        let first = self.tracks.iter().filter_map(|t| t.first_ms).min();
        let last = self.tracks.iter().filter_map(|t| t.last_ms).max();
        match (first, last) {
            (Some(f), Some(l)) => l - f,
            _ => 0,
        }
    }

    /// The one-line summary.
    pub fn line(&self) -> String {
        let tracks: Vec<String> = self
            .tracks
            .iter()
            .map(|s| {
                let t = &s.track;
                let what = match t.kind {
                    TrackKind::Video => format!("{}x{}", t.width, t.height),
                    TrackKind::Audio => format!("{} Hz {} ch", t.rate, t.channels),
                    TrackKind::Meta => String::new(),
                };
                format!("{} {} {what} {} packets", t.id, t.codec.as_str(), s.packets)
            })
            .collect();
        format!(
            "{} ({}) -> {} ({}): {} packets, {:.3} s of media [{}]; {} bytes in, {} bytes out, {:.2} s, {:.1} MB/s",
            self.input,
            self.from.name(),
            self.output,
            self.to.name(),
            self.packets(),
            self.duration_ms() as f64 / 1000.0,
            tracks.join("; "),
            self.bytes_in,
            self.bytes_out,
            self.seconds,
            self.bytes_in as f64 / 1e6 / self.seconds.max(1e-6)
        )
    }

    /// The summary as JSON.
    pub fn to_json(&self) -> Value {
        let tracks: Vec<Value> = self
            .tracks
            .iter()
            .map(|s| {
                let t = &s.track;
                json!({
                    "id": t.id, "type": t.kind.as_str(), "codec": t.codec.as_str(),
                    "width": t.width, "height": t.height, "rate": t.rate, "channels": t.channels,
                    "packets": s.packets, "keyframes": s.keyframes,
                    "first_ms": s.first_ms, "last_ms": s.last_ms,
                })
            })
            .collect();
        json!({
            "input": self.input, "output": self.output,
            "from": self.from.name(), "to": self.to.name(),
            "tracks": tracks, "packets": self.packets(), "duration_ms": self.duration_ms(),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "seconds": self.seconds,
            "index": self.index.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.n += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` to `path` through a temporary name in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = partial_name(path);
    let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    r
}

/// The temporary name an output is written under: `.NAME.partial-PID` in its folder.
fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Opens the input: a regular file is mapped ([`read::Input::map`]); stdin (`-`) and other
/// files are read as streams, except MP4, whose index may be at the end: it is first copied
/// to an unnamed temporary file.
fn open_input(input: &str, from: Option<Format>) -> Result<(Box<dyn Demux>, Format, Option<u64>)> {
    let (mut source, total) = if input == "-" {
        (read::Input::stream(Box::new(io::stdin())), None)
    } else {
        let f = File::open(input).with_context(|| format!("opening {input}"))?;
        let meta = f.metadata().with_context(|| format!("reading {input}"))?;
        if meta.is_file() {
            (
                read::Input::map(&f).with_context(|| format!("mapping {input}"))?,
                Some(meta.len()),
            )
        } else {
            (read::Input::stream(Box::new(f)), None)
        }
    };
    let format = match from.or_else(|| Format::for_path(input).filter(|_| input != "-")) {
        Some(f) => f,
        None => {
            let head = source.peek(188 * 4).context("reading the input")?;
            Format::sniff(head).with_context(|| {
                format!(
                    "{input}: unknown input format (not told by its name, not recognised by its first bytes); supported: {}",
                    supported()
                )
            })?
        }
    };
    let demux: Box<dyn Demux> = match format {
        Format::Flv => Box::new(read::FlvReader::open(source)?),
        Format::Ts => Box::new(read::TsReader::open(source)?),
        Format::Dtsc => Box::new(read::DtscReader::open(source)?),
        Format::Mp4 | Format::Fmp4 => {
            if source.whole().is_none() {
                let mut f = write::spool_file(&std::env::temp_dir())?;
                loop {
                    let chunk = source.take(1 << 20).context("reading the input")?;
                    if chunk.is_empty() {
                        break;
                    }
                    f.write_all(&chunk)
                        .context("copying the input to a temporary file")?;
                }
                source = read::Input::map(&f).context("mapping the temporary copy")?;
            }
            Box::new(read::Mp4Reader::open(source)?)
        }
    };
    Ok((demux, format, total))
}

/// The cut of [`Options`]: which packets pass, and the timestamp shift.
struct Cut {
    start: Option<u64>,
    end: Option<u64>,
    /// The first video track: its keyframes are where output may start.
    key_track: Option<u32>,
    /// Before the start: packets since the last keyframe.
    gop: Vec<Packet>,
    /// Once started: the DTS that becomes 0.
    base: Option<u64>,
}

/// How far past `end` (ms) the input is read for packets of other tracks stored late.
const END_SLACK_MS: u64 = 5000;

impl Cut {
    /// Passes `p` on (to `emit`); false once the input is past the end.
    fn push(&mut self, p: Packet, emit: &mut dyn FnMut(Packet) -> Result<()>) -> Result<bool> {
        if let Some(end) = self.end {
            if p.dts >= end {
                return Ok(p.dts < end.saturating_add(END_SLACK_MS));
            }
        }
        let Some(start) = self.start else {
            emit(p)?;
            return Ok(true);
        };
        if let Some(base) = self.base {
            if p.dts >= base {
                let mut p = p;
                p.dts -= base;
                emit(p)?;
            }
            return Ok(true);
        }
        let is_key = match self.key_track {
            Some(id) => p.track == id && p.keyframe,
            None => true,
        };
        if is_key && p.dts <= start {
            // A GOP that begins at or before the start: held until the start is reached.
            self.gop.clear();
            self.gop.push(p);
            return Ok(true);
        }
        if p.dts < start {
            if !self.gop.is_empty() {
                self.gop.push(p);
            }
            return Ok(true);
        }
        if self.gop.is_empty() && !is_key {
            // No keyframe at or before the start: output begins at the next one.
            return Ok(true);
        }
        // The start is reached: the held GOP, from its keyframe, goes out first.
        self.gop.push(p);
        let held = std::mem::take(&mut self.gop);
        let base = held[0].dts;
        self.base = Some(base);
        for mut h in held {
            if h.dts >= base {
                h.dts -= base;
                emit(h)?;
            }
        }
        Ok(true)
    }
}

/// Converts `input` to `output` (paths, `-` for stdin/stdout). Calls `progress` now and then.
/// The output appears under its name only when whole (see the module docs); a DTSC output
/// gets `OUTPUT.dtsh` beside it.
///
/// Errors: an unknown format (the message lists the supported ones), a format that cannot
/// carry a selected track, a corrupt or truncated input (its byte offset and what was
/// expected there, as [`read::ReadError`]), I/O.
pub fn convert(
    input: &str,
    output: &str,
    opts: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    let began = Instant::now();
    let to = match opts.to.or_else(|| Format::for_path(output)) {
        Some(f) => f,
        None if output == "-" => bail!("writing to stdout needs --to; supported: {}", supported()),
        None => bail!(
            "{output}: unknown output format; supported: {}",
            supported()
        ),
    };
    let (mut demux, from, total) =
        open_input(input, opts.from).with_context(|| format!("reading {input}"))?;
    let tracks: Vec<Track> = demux
        .tracks()
        .iter()
        .filter(|t| opts.tracks.is_empty() || opts.tracks.iter().any(|s| s.matches(t)))
        .cloned()
        .collect();
    if tracks.is_empty() {
        let have: Vec<String> = demux
            .tracks()
            .iter()
            .map(|t| format!("{} ({} {})", t.id, t.kind.as_str(), t.codec.as_str()))
            .collect();
        bail!("no track selected; {input} has tracks {}", have.join(", "));
    }
    let (final_path, spool_dir) = if output == "-" {
        (None, std::env::temp_dir())
    } else {
        let p = PathBuf::from(output);
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (Some(p), dir)
    };
    let tmp = final_path.as_deref().map(partial_name);
    let mut direct = None;
    let sink: Box<dyn Write> = match &tmp {
        None => Box::new(io::stdout().lock()),
        Some(t) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(t)
                .with_context(|| format!("creating {}", t.display()))?;
            direct = Some(f.try_clone()?);
            Box::new(f)
        }
    };
    let mut out = Counting {
        inner: io::BufWriter::with_capacity(1 << 20, sink),
        n: 0,
    };
    let result = run(
        &mut *demux,
        &tracks,
        to,
        opts,
        &mut out,
        &spool_dir,
        direct,
        total,
        progress,
    );
    let flushed = result.and_then(|r| {
        out.flush().context("writing the output")?;
        Ok(r)
    });
    let bytes_written = out.n;
    let (stats, index) = match flushed {
        Ok(r) => r,
        Err(e) => {
            drop(out);
            if let Some(t) = &tmp {
                std::fs::remove_file(t).ok();
            }
            return Err(e);
        }
    };
    drop(out);
    let mut index_path = None;
    // Counted at the end: the MP4 writer puts its head in front of the file itself.
    let bytes_out = match &tmp {
        Some(t) => std::fs::metadata(t).map(|m| m.len()).unwrap_or(0),
        None => bytes_written,
    };
    if let (Some(t), Some(p)) = (&tmp, &final_path) {
        std::fs::rename(t, p).with_context(|| format!("renaming to {}", p.display()))?;
        if let Some(bytes) = index {
            let ip = PathBuf::from(format!("{}.dtsh", p.display()));
            write_atomically(&ip, &bytes)
                .with_context(|| format!("writing the index {}", ip.display()))?;
            index_path = Some(ip);
        }
    }
    Ok(Summary {
        input: input.to_string(),
        output: output.to_string(),
        from,
        to,
        tracks: stats,
        bytes_in: demux.position(),
        bytes_out,
        seconds: began.elapsed().as_secs_f64(),
        index: index_path,
    })
}

/// The loop: packets from `demux`, through the cut, into a writer of `to`.
#[allow(clippy::too_many_arguments)]
fn run(
    demux: &mut dyn Demux,
    tracks: &[Track],
    to: Format,
    opts: &Options,
    out: &mut dyn Write,
    spool_dir: &Path,
    direct: Option<File>,
    total: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<TrackSummary>, Option<Vec<u8>>)> {
    // A DTSC file gets its .dtsh beside it; stdout has no beside.
    let want_index = direct.is_some() && to == Format::Dtsc;
    let mut mux = write::open(to, tracks, out, spool_dir, want_index, direct)?;
    let mut stats: Vec<TrackSummary> = tracks
        .iter()
        .map(|t| TrackSummary {
            track: t.clone(),
            packets: 0,
            keyframes: 0,
            first_ms: None,
            last_ms: None,
        })
        .collect();
    let mut cut = Cut {
        start: opts.start_ms,
        end: opts.end_ms,
        key_track: tracks
            .iter()
            .find(|t| t.kind == TrackKind::Video)
            .map(|t| t.id),
        gop: Vec::new(),
        base: None,
    };
    let mut last_report = Instant::now();
    let mut emit = |p: Packet| -> Result<()> {
        let Some(s) = stats.iter_mut().find(|s| s.track.id == p.track) else {
            return Ok(());
        };
        mux.packet(&p, out)?;
        s.packets += 1;
        s.keyframes += u64::from(p.keyframe);
        s.first_ms = Some(s.first_ms.map_or(p.dts, |f| f.min(p.dts)));
        s.last_ms = Some(s.last_ms.map_or(p.dts, |l| l.max(p.dts)));
        Ok(())
    };
    progress(Progress { done: 0, total });
    while let Some(p) = demux.next_packet()? {
        if !tracks.iter().any(|t| t.id == p.track) {
            continue;
        }
        if !cut.push(p, &mut emit)? {
            break;
        }
        if last_report.elapsed().as_millis() >= 100 {
            last_report = Instant::now();
            progress(Progress {
                done: demux.position(),
                total,
            });
        }
    }
    // A start past the input's end leaves the held GOP unwritten: nothing reached it.
    let index = mux.finish(out)?;
    progress(Progress {
        done: demux.position(),
        total,
    });
    Ok((stats, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dtsc::Codec;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn tracks() -> Vec<Track> {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        // A 640x360 High-profile SPS and its PPS.
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let cfg = dtsc::h264::AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        dtsc::h264::write_avcc(&cfg, &mut v.init).unwrap();
        (v.width, v.height, v.fpks) = (640, 360, 25_000);
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        (a.init, a.rate, a.channels, a.bits) = (vec![0x12, 0x10], 44_100, 2, 16);
        vec![v, a]
    }

    /// Video every 40 ms (a keyframe first and where `keys` says; composition offsets from
    /// `offsets`), AAC every 23 ms, interleaved by DTS. Payloads: one NAL unit / raw AAC
    /// frame of non-zero bytes (no start code can appear in them).
    fn stream(frames: &[(bool, u8, Vec<u8>)], audio: &[Vec<u8>]) -> Vec<Packet> {
        let mut out = Vec::new();
        for (i, (key, off, body)) in frames.iter().enumerate() {
            let mut data = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            data.push(if *key || i == 0 { 0x65 } else { 0x41 });
            data.extend_from_slice(body);
            out.push(Packet {
                track: 1,
                dts: 1000 + 40 * i as u64,
                offset: i64::from(*off) * 40,
                keyframe: *key || i == 0,
                bpos: 0,
                data: Bytes::from(data),
            });
        }
        for (i, body) in audio.iter().enumerate() {
            out.push(Packet {
                track: 2,
                dts: 1000 + 23 * i as u64,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: Bytes::from(body.clone()),
            });
        }
        out.sort_by_key(|p| (p.dts, p.track));
        out
    }

    /// Writes `packets` as `format` and reads them back.
    fn round_trip(format: Format, packets: &[Packet]) -> (Vec<Track>, Vec<Packet>) {
        let dir = std::env::temp_dir();
        let mut out = Vec::new();
        let mut mux = write::open(format, &tracks(), &mut out, &dir, true, None).unwrap();
        for p in packets {
            mux.packet(p, &mut out).unwrap();
        }
        mux.finish(&mut out).unwrap();
        // Every reader but MP4's both from a pipe and from memory.
        let stream = || read::Input::stream(Box::new(Cursor::new(out.clone())));
        let mapped = || read::Input::bytes(Bytes::from(out.clone()));
        let mut d: Box<dyn Demux> = match (format, packets.len() % 2) {
            (Format::Flv, 0) => Box::new(read::FlvReader::open(stream()).unwrap()),
            (Format::Flv, _) => Box::new(read::FlvReader::open(mapped()).unwrap()),
            (Format::Ts, 0) => Box::new(read::TsReader::open(stream()).unwrap()),
            (Format::Ts, _) => Box::new(read::TsReader::open(mapped()).unwrap()),
            (Format::Dtsc, 0) => Box::new(read::DtscReader::open(stream()).unwrap()),
            (Format::Dtsc, _) => Box::new(read::DtscReader::open(mapped()).unwrap()),
            (Format::Mp4 | Format::Fmp4, _) => Box::new(read::Mp4Reader::open(mapped()).unwrap()),
        };
        let mut got = Vec::new();
        while let Some(p) = d.next_packet().unwrap() {
            got.push(p);
        }
        (d.tracks().to_vec(), got)
    }

    type Facts = Vec<(u64, i64, bool, Bytes)>;

    fn facts(packets: &[Packet], track: u32, with_data: bool) -> Facts {
        packets
            .iter()
            .filter(|p| p.track == track)
            .map(|p| {
                let data = if with_data {
                    p.data.clone()
                } else {
                    Bytes::new()
                };
                (p.dts, p.offset, p.keyframe, data)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every format gives back what was written: each track's DTS, composition offsets,
        /// keyframes and payloads. MPEG-TS adds its muxing delay and a progressive MP4 starts
        /// its timeline at 0, so there times are compared from the first video DTS (every
        /// track moved alike); MPEG-TS adds access unit delimiters and parameter sets to
        /// video, so there video payloads are not compared.
        #[test]
        fn every_format_round_trips(
            frames in prop::collection::vec(
                (prop::bool::weighted(0.1), 0u8..3, prop::collection::vec(1u8..=255, 1..300)),
                1..60,
            ),
            audio in prop::collection::vec(prop::collection::vec(1u8..=255, 1..200), 1..80),
        ) {
            let packets = stream(&frames, &audio);
            for format in [Format::Flv, Format::Mp4, Format::Fmp4, Format::Dtsc, Format::Ts] {
                let (t, got) = round_trip(format, &packets);
                prop_assert_eq!(t.len(), 2, "{:?}", format);
                prop_assert_eq!(&t[0].init, &tracks()[0].init, "{:?}", format);
                prop_assert_eq!(&t[1].init[..2], &[0x12u8, 0x10][..], "{:?}", format);
                let ts = format == Format::Ts;
                let want_v = facts(&packets, 1, !ts);
                let mut got_v = facts(&got, 1, !ts);
                let mut want_a = facts(&packets, 2, true);
                let mut got_a = facts(&got, 2, true);
                if matches!(format, Format::Ts | Format::Mp4) {
                    // TS adds its muxing delay, a progressive MP4's timeline starts at 0:
                    // both move every track alike.
                    let shift = got_v[0].0 as i64 - want_v[0].0 as i64;
                    for x in got_v.iter_mut().chain(got_a.iter_mut()) {
                        x.0 = (x.0 as i64 - shift) as u64;
                    }
                }
                if format != Format::Flv && format != Format::Dtsc {
                    // TS and MP4 mark every audio frame a sync sample; FLV and DTSC do not.
                    for x in want_a.iter_mut().chain(got_a.iter_mut()) {
                        x.2 = false;
                    }
                }
                prop_assert_eq!(got_v, want_v, "{:?} video", format);
                prop_assert_eq!(got_a, want_a, "{:?} audio", format);
            }
        }
    }

    /// A cut from 5 s: output starts at the keyframe at 4 s (every track from its DTS on),
    /// times from 0; an end at 8 s leaves out everything from 8 s on.
    #[test]
    fn a_cut_starts_at_the_keyframe_before_the_start() {
        let frames: Vec<(bool, u8, Vec<u8>)> =
            (0..250).map(|i| (i % 50 == 0, 0, vec![1, 2, 3])).collect();
        let audio: Vec<Vec<u8>> = (0..430).map(|_| vec![7; 5]).collect();
        let packets = stream(&frames, &audio);
        let mut cut = Cut {
            start: Some(1000 + 5000),
            end: Some(1000 + 8000),
            key_track: Some(1),
            gop: Vec::new(),
            base: None,
        };
        let mut out = Vec::new();
        for p in packets {
            if !cut
                .push(p, &mut |p| {
                    out.push(p);
                    Ok(())
                })
                .unwrap()
            {
                break;
            }
        }
        let video: Vec<&Packet> = out.iter().filter(|p| p.track == 1).collect();
        assert_eq!(video.len(), 100, "4 s to 8 s of 25 fps");
        assert!(video[0].keyframe && video[0].dts == 0);
        assert_eq!(video.last().unwrap().dts, 3960);
        let audio: Vec<&Packet> = out.iter().filter(|p| p.track == 2).collect();
        assert!(audio[0].dts < 23 && audio.last().unwrap().dts < 4000);
    }

    #[test]
    fn formats_by_name_extension_and_first_bytes() {
        assert_eq!(Format::for_path("a/b.FLV"), Some(Format::Flv));
        assert_eq!(Format::for_path("x.m2ts"), Some(Format::Ts));
        assert_eq!(Format::for_path("x.mov"), Some(Format::Mp4));
        assert_eq!(Format::for_path("dir.flv/x"), None);
        assert_eq!(Format::for_path("x.mkv"), None);
        assert_eq!(Format::from_name("fmp4"), Some(Format::Fmp4));
        assert_eq!(Format::sniff(b"FLV\x01\x05"), Some(Format::Flv));
        assert_eq!(Format::sniff(b"DTSC\0\0\0\x01"), Some(Format::Dtsc));
        assert_eq!(Format::sniff(b"\0\0\0\x20ftypisom"), Some(Format::Mp4));
        let mut ts = vec![0u8; 376];
        (ts[0], ts[188]) = (0x47, 0x47);
        assert_eq!(Format::sniff(&ts), Some(Format::Ts));
        ts[188] = 0;
        assert_eq!(Format::sniff(&ts), None);
        assert!(supported().contains("dtsc (.dtsc"));
    }

    #[test]
    fn corrupt_inputs_name_their_byte_offset() {
        let packets = stream(&vec![(true, 0, vec![1; 50]); 10], &vec![vec![2; 9]; 10]);
        for format in [Format::Flv, Format::Dtsc] {
            let mut out = Vec::new();
            let mut mux = write::open(
                format,
                &tracks(),
                &mut out,
                &std::env::temp_dir(),
                false,
                None,
            )
            .unwrap();
            for p in &packets {
                mux.packet(p, &mut out).unwrap();
            }
            mux.finish(&mut out).unwrap();
            let cut = out[..out.len() - 30].to_vec();
            let input = read::Input::stream(Box::new(Cursor::new(cut)));
            let mut d: Box<dyn Demux> = match format {
                Format::Flv => Box::new(read::FlvReader::open(input).unwrap()),
                _ => Box::new(read::DtscReader::open(input).unwrap()),
            };
            let err = loop {
                match d.next_packet() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{format:?}: a truncated file read to its end"),
                    Err(e) => break e.to_string(),
                }
            };
            assert!(err.starts_with("at byte "), "{format:?}: {err}");
        }
    }
}
