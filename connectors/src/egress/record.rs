//! Recording: a push whose target is a file path, `/dir/NAME.flv`, `.ts`, `.mp4` or `.mkv`, run by
//! `sluice push` like any other push (`push_start`, auto-push rules).
//!
//! The path may hold variables, expanded when each file is opened: `$stream`, `$datetime`
//! (`YYYY.MM.DD.hh.mm.ss`, as MistServer writes it), `$year`, `$month`, `$day`, `$hour`,
//! `$minute`, `$second` (UTC) and `$segmentCounter` (1, 2, … per file of this recording).
//! `?split=SECONDS` cuts the recording into files of about that length, at the first video
//! keyframe (any packet, for audio only) at or past it: every packet goes to exactly one file,
//! in DTS order, so nothing is lost or doubled at a cut.
//!
//! Files are written in a shape that survives a crash of this process (or of the machine,
//! up to the last `fdatasync`, done every [`SYNC_EVERY`]): FLV, MPEG-TS and Matroska (clusters
//! of unknown size) are readable up to the last whole packet (an FLV's `onMetaData` has a
//! `duration`, rewritten in place at every sync); MP4 is written fragmented (an init segment, then one `moof` + `mdat`
//! per batch of packets, ISO/IEC 14496-12 §8.8) and, when the file is complete, rewritten as
//! a regular MP4 with `moov` first (through a temporary file and a rename, so a crash during
//! that leaves the fragmented file). An existing file is never overwritten: the new one gets
//! `-1`, `-2`, … before its extension.
//!
//! Each finished file is reported to the controller (`control::report`), which fires
//! RECORDING_END and lists it (`recordings` in the API). A target that cannot be written (a
//! folder that does not exist and cannot be made, no permission, a full disk) ends the push
//! with the reason, reported as a permanent failure: the controller does not retry it.

use ipc::messages::{RecordingEnd, Report};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::shm::StreamReader;
use dtsc::{Track, TrackKind};

use crate::core::cursor::{Cursor, Next};
use crate::core::progressive::{FlvOutput, Fmp4Progressive, MkvOutput, TsOutput};
use crate::core::streaming::{Batch, Output, Resumable};
use crate::egress::PushArgs;

const PROTO: &str = "recording";

/// How often a file being recorded is flushed to the disk (`fdatasync`).
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// Largest MP4 recording rewritten with `moov` first at its end (the rewrite holds the file in
/// memory); a larger one stays fragmented, which every MP4 reader plays.
pub const MAX_FINALIZE_BYTES: u64 = 2 << 30;

/// The containers a recording can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FLV (FLV spec v10.1 Annex E).
    Flv,
    /// MPEG-TS (ISO/IEC 13818-1).
    Ts,
    /// MP4, fragmented while recording, regular (`moov` first) once finished.
    Mp4,
    /// Matroska ([`dtsc::mkv`]): clusters of unknown size, readable wherever cut.
    Mkv,
}

impl Format {
    /// The format's name in RECORDING_END and the API.
    pub fn name(self) -> &'static str {
        match self {
            Format::Flv => "FLV",
            Format::Ts => "TS",
            Format::Mp4 => "MP4",
            Format::Mkv => "MKV",
        }
    }
}

/// Whether a push target is a file (a recording) rather than a URL.
pub fn is_file_target(target: &str) -> bool {
    target.starts_with('/') || target.starts_with("file://")
}

/// A recording target: the path pattern (variables unexpanded) and the split length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The absolute path, with its variables.
    pub pattern: String,
    /// The container, from the extension.
    pub format: Format,
    /// `?split=SECONDS`, in ms.
    pub split_ms: Option<u64>,
}

/// Parses a file target: `[file://]/ABSOLUTE/PATH.EXT[?split=SECONDS]`. Errors name what is
/// wrong: a relative path, a `..` component, an extension other than `.flv`, `.ts`, `.mp4`
/// or `.mkv`, a split that is not a positive number.
pub fn parse_target(target: &str) -> Result<Target> {
    let t = target.strip_prefix("file://").unwrap_or(target);
    let (path, query) = t.split_once('?').unwrap_or((t, ""));
    if !path.starts_with('/') {
        bail!("a recording target is an absolute path");
    }
    if path.split('/').any(|c| c == "..") {
        bail!("a recording target may not contain '..'");
    }
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let format = match ext.as_str() {
        "flv" => Format::Flv,
        "ts" => Format::Ts,
        "mp4" => Format::Mp4,
        "mkv" => Format::Mkv,
        _ => bail!("a recording target ends in .flv, .ts, .mp4 or .mkv"),
    };
    let mut split_ms = None;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        if let Some(v) = kv.strip_prefix("split=") {
            let s: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| *s >= 1.0 && s.is_finite())
                .ok_or_else(|| anyhow!("split={v}: a number of seconds, at least 1"))?;
            split_ms = Some((s * 1000.0) as u64);
        }
    }
    Ok(Target {
        pattern: path.to_string(),
        format,
        split_ms,
    })
}

/// The civil date and time (UTC) of a Unix time in seconds: (year, month, day, hour,
/// minute, second); the date from [`dtsc::dash::civil_from_days`].
fn civil(unix_s: u64) -> (i64, u32, u32, u32, u32, u32) {
    let (year, month, day) = dtsc::dash::civil_from_days(unix_s / 86_400);
    let secs = unix_s % 86_400;
    (
        year as i64,
        month,
        day,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
    )
}

/// `pattern` with its variables expanded for stream `stream` at Unix time `unix_s` (UTC),
/// file number `counter` (see the module docs).
pub fn expand(pattern: &str, stream: &str, unix_s: u64, counter: u32) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_s);
    pattern
        .replace(
            "$datetime",
            &format!("{y:04}.{mo:02}.{d:02}.{h:02}.{mi:02}.{s:02}"),
        )
        .replace("$stream", stream)
        .replace("$year", &format!("{y:04}"))
        .replace("$month", &format!("{mo:02}"))
        .replace("$day", &format!("{d:02}"))
        .replace("$hour", &format!("{h:02}"))
        .replace("$minute", &format!("{mi:02}"))
        .replace("$second", &format!("{s:02}"))
        .replace("$segmentCounter", &counter.to_string())
}

/// Creates `path` (and its folder), or, when a file of that name exists, the first free
/// `NAME-N.EXT`: the name taken and the new file.
fn create_free(path: &str) -> Result<(PathBuf, File)> {
    let first = PathBuf::from(path);
    if let Some(dir) = first.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    }
    let (stem, ext) = path.rsplit_once('.').unwrap_or((path, ""));
    // Each name is claimed by create_new itself: two recordings of one pattern at the same
    // second cannot both take it, nor can an existing file be opened.
    for n in 0u32.. {
        let p = match n {
            0 => first.clone(),
            n => PathBuf::from(format!("{stem}-{n}.{ext}")),
        };
        match File::options().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("{path}: every numbered name is taken")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What one file of a recording holds, for RECORDING_END and the API.
#[derive(Debug, Clone)]
struct FileDone {
    path: PathBuf,
    bytes: u64,
    started: u64,
    ended: u64,
    first_ms: u64,
    last_ms: u64,
    /// Why the file ended: `split`, `the stream ended`, or an error.
    reason: String,
}

/// How [`record_file`] ended.
enum FileEnd {
    /// At a cut (`?split`): the next file starts with the packet the cursor is at.
    Cut,
    /// The stream ended (or its buffer is gone).
    Ended,
}

/// Records `args.stream` to the file target `args.target` until the stream ends.
pub fn record(args: &PushArgs) -> Result<()> {
    let target = parse_target(&args.target).inspect_err(|e| permanent(args, &e.to_string()))?;
    let mut cursor = crate::egress::open_source(args)?;
    crate::log!(
        PROTO,
        "{}: recording to {} ({}{})",
        args.stream,
        target.pattern,
        target.format.name(),
        target
            .split_ms
            .map_or(String::new(), |s| format!(", files of {} s", s / 1000))
    );
    let reader = *cursor.reader();
    for counter in 1u32.. {
        let (path, file) = create_free(&expand(&target.pattern, &args.stream, unix_now(), counter))
            .inspect_err(|e| permanent(args, &format!("{e:#}")))?;
        let started = unix_now();
        let mut stats = (0u64, None::<u64>, 0u64);
        let end = match target.format {
            Format::Flv => record_file(
                &mut FlvOutput::for_file(),
                &mut cursor,
                &reader,
                file,
                &target,
                &mut stats,
                &write_flv_duration,
            ),
            Format::Ts => record_file(
                &mut TsOutput::default(),
                &mut cursor,
                &reader,
                file,
                &target,
                &mut stats,
                &|_, _, _| Ok(()),
            ),
            Format::Mkv => record_file(
                &mut MkvOutput::default(),
                &mut cursor,
                &reader,
                file,
                &target,
                &mut stats,
                &|_, _, _| Ok(()),
            ),
            Format::Mp4 => {
                let mut state = Fmp4Progressive::default();
                record_file(
                    &mut state.output(),
                    &mut cursor,
                    &reader,
                    file,
                    &target,
                    &mut stats,
                    &|_, _, _| Ok(()),
                )
            }
        };
        let (reason, next) = match &end {
            Ok(FileEnd::Cut) => ("split".to_string(), true),
            Ok(FileEnd::Ended) => ("the stream ended".to_string(), false),
            Err(e) => (format!("{e:#}"), false),
        };
        let mut bytes = stats.0;
        if target.format == Format::Mp4 && stats.1.is_some() {
            match finalize_mp4(&path) {
                Ok(Some(n)) => bytes = n,
                Ok(None) => {}
                Err(e) => crate::log!(
                    PROTO,
                    "{}: {} stays fragmented: {e:#}",
                    args.stream,
                    path.display()
                ),
            }
        }
        let done = FileDone {
            path: path.clone(),
            bytes,
            started,
            ended: unix_now(),
            first_ms: stats.1.unwrap_or(0),
            last_ms: stats.2,
            reason: reason.clone(),
        };
        crate::log!(
            PROTO,
            "{}: {} done: {} bytes, {} ms of media ({reason})",
            args.stream,
            path.display(),
            done.bytes,
            done.last_ms.saturating_sub(done.first_ms)
        );
        report_done(args, target.format, &done);
        if let Err(e) = end {
            permanent(args, &format!("{e:#}"));
            return Err(e);
        }
        if !next {
            break;
        }
    }
    Ok(())
}

/// Creates a recording's file (and its folder), refusing to replace one.
/// Writes packets from `cursor` through `out` into `file` until a cut or the end.
/// `stats`: bytes written, first DTS, last DTS (ms). `on_sync` runs before each
/// `fdatasync` once a packet was written, with the length written (ms: the last DTS less the
/// first, plus a frame): the FLV recording puts it into its `onMetaData`.
fn record_file<'m, O: Output<'m>>(
    out: &mut O,
    cursor: &mut Cursor,
    reader: &'m StreamReader,
    mut file: File,
    target: &Target,
    stats: &mut (u64, Option<u64>, u64),
    on_sync: &dyn Fn(&O, &File, u64) -> Result<()>,
) -> Result<FileEnd> {
    let sync = |out: &O, file: &File, tracks: &[Track], stats: &(u64, Option<u64>, u64)| {
        if let Some(first) = stats.1 {
            on_sync(
                out,
                file,
                stats.2 - first + crate::core::window::frame_ms(tracks),
            )?;
        }
        file.sync_data().context("syncing the recording")
    };
    let mut tracks: Vec<Track> = cursor.tracks().to_vec();
    let mut batch = Batch::default();
    let mut synced = Instant::now();
    let mut checked = Instant::now();
    let cut_track = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .map(|t| t.id);
    // Payloads are borrowed from the shared pages: once written, they must still be the
    // packets they were (a disk slower than the stream lets the ring reuse them), as the
    // viewers' send loop checks.
    let write = |batch: &mut Batch<'m>, out: &mut O, file: &mut File, stats: &mut (u64, _, _)| {
        out.flush(batch)?;
        let first = batch.first_seq();
        stats.0 += batch.drain_to(file).context("writing the recording")?;
        if first.is_some_and(|seq| !reader.still_valid(seq)) {
            bail!("the recording fell out of the buffer's window while writing (the disk is slower than the stream); its last bytes may be overwritten data");
        }
        anyhow::Ok(())
    };
    loop {
        match cursor.next_packet() {
            Next::Packet(seq, _) => {
                let Some(p) = reader.packet(seq) else {
                    continue;
                };
                let Some(t) = tracks.iter().find(|t| t.id == p.track) else {
                    continue;
                };
                let cut_here = match cut_track {
                    Some(id) => p.track == id && p.keyframe,
                    None => true,
                };
                if let (Some(split), Some(first)) = (target.split_ms, stats.1) {
                    if cut_here && p.dts >= first + split {
                        cursor.seek_seq(seq);
                        write(&mut batch, out, &mut file, stats)?;
                        out.end(&mut Vec::new())?;
                        sync(out, &file, &tracks, stats)?;
                        return Ok(FileEnd::Cut);
                    }
                }
                if stats.1.is_none() {
                    out.init(&tracks, p.dts, true, &mut batch)?;
                    stats.1 = Some(p.dts);
                }
                stats.2 = stats.2.max(p.dts);
                batch.note_seq(seq);
                out.packet(t, p, &mut batch)?;
                if batch.full() {
                    write(&mut batch, out, &mut file, stats)?;
                }
            }
            Next::TracksChanged => {
                write(&mut batch, out, &mut file, stats)?;
                tracks = cursor.tracks().to_vec();
                if stats.1.is_some() {
                    out.init(&tracks, stats.2, false, &mut batch)?;
                }
            }
            Next::Wait(seen) => {
                write(&mut batch, out, &mut file, stats)?;
                if synced.elapsed() >= SYNC_EVERY {
                    sync(out, &file, &tracks, stats)?;
                    synced = Instant::now();
                }
                cursor.wait(seen, Duration::from_millis(100));
                if checked.elapsed() >= Duration::from_millis(250) {
                    checked = Instant::now();
                    if cursor.buffer_gone() {
                        sync(out, &file, &tracks, stats)?;
                        return Ok(FileEnd::Ended);
                    }
                }
            }
            Next::Ended => {
                write(&mut batch, out, &mut file, stats)?;
                let mut tail = Vec::new();
                out.end(&mut tail)?;
                file.write_all(&tail).context("writing the recording")?;
                stats.0 += tail.len() as u64;
                sync(out, &file, &tracks, stats)?;
                return Ok(FileEnd::Ended);
            }
        }
    }
}

/// Puts `length_ms` into an FLV recording's `onMetaData` `duration` (FLV spec v10.1 §E.5),
/// in place: at every sync, so a recording cut short by a crash still says how long it is,
/// up to its last sync.
fn write_flv_duration(out: &FlvOutput, file: &File, length_ms: u64) -> Result<()> {
    let Some(at) = out.duration_at() else {
        return Ok(());
    };
    let secs = length_ms as f64 / 1000.0;
    std::os::unix::fs::FileExt::write_all_at(file, &secs.to_be_bytes(), at)
        .context("writing the duration into the recording's onMetaData")
}

/// Rewrites a finished fragmented MP4 recording as a regular MP4 with `moov` first
/// (`dtsc::mp4::write_progressive`), through `PATH.tmp` and a rename. Returns the new size,
/// or `None` when the file is larger than [`MAX_FINALIZE_BYTES`] and stays fragmented.
fn finalize_mp4(path: &Path) -> Result<Option<u64>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FINALIZE_BYTES {
        return Ok(None);
    }
    let bytes = bytes::Bytes::from(std::fs::read(path)?);
    let frag = dtsc::mp4demux::Fragmented::read_init(&bytes)
        .map_err(|e| anyhow!("reading it back: {e}"))?;
    let mut packets = Vec::new();
    frag.read_segment(&bytes, &mut packets)
        .map_err(|e| anyhow!("reading it back: {e}"))?;
    let refs: Vec<_> = packets.iter().map(|p| p.as_ref()).collect();
    let mut out = Vec::with_capacity(bytes.len() + (1 << 16));
    dtsc::mp4::write_progressive(&frag.tracks, &refs, &mut out)
        .map_err(|e| anyhow!("writing moov: {e}"))?;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(Some(out.len() as u64))
}

/// Tells the controller a file is finished (RECORDING_END).
fn report_done(args: &PushArgs, format: Format, d: &FileDone) {
    let done = RecordingEnd {
        stream: args.stream.clone(),
        path: d.path.display().to_string(),
        format: format.name().to_string(),
        bytes: d.bytes,
        seconds: d.ended.saturating_sub(d.started),
        started: d.started,
        ended: d.ended,
        first_ms: d.first_ms,
        last_ms: d.last_ms,
        reason: d.reason.clone(),
    };
    if let Err(e) = crate::core::control::report(&args.rundir, Report::RecordingEnd(done)) {
        crate::log!(
            PROTO,
            "{}: could not report the recording: {e:#}",
            args.stream
        );
    }
}

/// Tells the controller this push cannot succeed by retrying (PUSH_END with `why`).
fn permanent(args: &PushArgs, why: &str) {
    let failed = Report::PushFailed {
        stream: args.stream.clone(),
        target: args.target.clone(),
        reason: why.to_string(),
    };
    let _ = crate::core::control::report(&args.rundir, failed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_their_split_and_refuse_what_cannot_be_recorded() {
        let t = parse_target("/rec/$stream-$segmentCounter.ts?split=10").unwrap();
        assert_eq!(
            (t.pattern.as_str(), t.format, t.split_ms),
            ("/rec/$stream-$segmentCounter.ts", Format::Ts, Some(10_000))
        );
        assert_eq!(
            parse_target("file:///rec/a.MP4").unwrap().format,
            Format::Mp4
        );
        for (bad, why) in [
            ("rec/a.flv", "absolute"),
            ("/rec/../etc/a.flv", ".."),
            ("/rec/a.avi", ".flv, .ts, .mp4 or .mkv"),
            ("/rec/a.flv?split=0", "split=0"),
            ("/rec/a.flv?split=x", "split=x"),
        ] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn variables_expand_to_utc_civil_time() {
        // 2026-12-04 23:26:31 UTC.
        let t = 1_796_426_791;
        assert_eq!(civil(t), (2026, 12, 4, 23, 26, 31));
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // A leap day.
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(
            expand(
                "/r/$stream/$year/$month/$day/$hour$minute$second-$segmentCounter.flv",
                "cam",
                t,
                3
            ),
            "/r/cam/2026/12/04/232631-3.flv"
        );
        assert_eq!(
            expand("/r/$datetime.ts", "cam", t, 1),
            "/r/2026.12.04.23.26.31.ts"
        );
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("sluice-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.ts");
        std::fs::write(&p, b"x").unwrap();
        std::fs::write(dir.join("a-1.ts"), b"x").unwrap();
        assert_eq!(
            create_free(p.to_str().unwrap()).unwrap().0,
            dir.join("a-2.ts")
        );
        assert_eq!(
            create_free(dir.join("b.ts").to_str().unwrap()).unwrap().0,
            dir.join("b.ts")
        );
        // The name just made is taken too: the next asks get the next numbers.
        assert_eq!(
            create_free(p.to_str().unwrap()).unwrap().0,
            dir.join("a-3.ts")
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"x", "never overwritten");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
