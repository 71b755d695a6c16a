//! Muxed segments shared by every HTTP connection process of the server: the first process
//! that serves a segment (an HLS TS segment, a CMAF fragment, a DASH chunk) muxes it from the
//! shared pages and leaves the bytes in a file under the run folder; every later request for
//! it, from any process, is answered from that file with `sendfile(2)`. A segment is then
//! muxed once per server, as nginx-rtmp writes it once, instead of once per player.
//!
//! Layout: `RUNDIR/segments/STREAM/BOOT/NAME`, where `BOOT` is the buffer's boot time (Unix
//! ms), so a restarted stream never finds its predecessor's segments. Files are written under
//! a temporary name and renamed into place, so a reader sees a whole segment or none. A file is
//! removed once it is older than the stream's window plus a margin (checked whenever a new
//! segment is written), and the folder of an earlier boot is removed when a new boot's folder
//! is made. Nothing here is needed for correctness: when the cache cannot be read or written,
//! the segment is muxed and sent from memory as before.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A segment's bytes: a cached file (open, with its length in bytes) or, when the cache could
/// not be used, the muxed bytes themselves.
pub enum Body {
    /// A whole cached segment.
    File(File, u64),
    /// Bytes muxed by this process and not cached.
    Bytes(Vec<u8>),
}

impl Body {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::File(_, n) => *n,
            Body::Bytes(b) => b.len() as u64,
        }
    }

    /// The bytes themselves (a cached file read whole).
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            Body::Bytes(b) => Ok(b),
            Body::File(mut f, n) => {
                let mut v = Vec::with_capacity(n as usize);
                f.read_to_end(&mut v)?;
                Ok(v)
            }
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Longest a cached segment is kept past its making, whatever the stream's window (an
/// event's is a day): a segment asked for later is muxed again.
const MAX_KEEP: Duration = Duration::from_secs(3600);

/// The cache folder of one run (boot) of one stream.
pub struct SegmentCache {
    dir: PathBuf,
    /// Files older than this are removed.
    keep: Duration,
}

/// Subfolder of the run folder that holds every stream's cache.
pub const CACHE_DIR: &str = "segments";

/// A stream name as one path element: bytes other than `[A-Za-z0-9_-]` become `%XX` (`+`
/// wildcard streams, dots, slashes can never climb out of the folder).
fn path_element(stream: &str) -> String {
    let mut s = String::with_capacity(stream.len());
    for b in stream.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl SegmentCache {
    /// The cache of stream `stream`'s run that started at `boot_ms` (Unix ms), under
    /// `rundir`. `window_ms` is the stream's DVR window: files are kept that long plus a
    /// minute.
    pub fn new(rundir: &Path, stream: &str, boot_ms: u64, window_ms: u64) -> SegmentCache {
        let dir = rundir
            .join(CACHE_DIR)
            .join(path_element(stream))
            .join(boot_ms.to_string());
        SegmentCache {
            dir,
            keep: Duration::from_millis(window_ms).min(MAX_KEEP) + Duration::from_secs(60),
        }
    }

    /// Segment `name` (a file name made by the caller from the format, track set and segment
    /// number; it must not contain `/`): from the cache when another request already made it,
    /// else made by `make` (which appends the muxed bytes to the vector, or returns `None`
    /// when the segment is not available), stored, and returned. `None` only when `make`
    /// returns `None`.
    pub fn get_or_make(
        &self,
        name: &str,
        make: impl FnOnce(&mut Vec<u8>) -> Option<()>,
    ) -> Option<Body> {
        debug_assert!(!name.contains('/'));
        let path = self.dir.join(name);
        if let Some(body) = open(&path) {
            return Some(body);
        }
        let mut bytes = Vec::new();
        make(&mut bytes)?;
        if self.store(&path, &bytes).is_ok() {
            if let Some(body) = open(&path) {
                return Some(body);
            }
        }
        Some(Body::Bytes(bytes))
    }

    /// [`SegmentCache::get_or_make`], made by one request at a time across every process:
    /// the first takes a lock file (`.lock.NAME`, made with `O_EXCL`) and makes it, the
    /// others wait for the file (at most 5 s, then make it themselves). When `make` fails,
    /// a `.failed.NAME` marker makes the others give up at once. A lock older than 10 s (its
    /// maker died) is taken over. For work that is dear per request (a thumbnail's decode).
    pub fn get_or_make_once(
        &self,
        name: &str,
        make: impl FnOnce(&mut Vec<u8>) -> Option<()>,
    ) -> Option<Body> {
        debug_assert!(!name.contains('/'));
        let path = self.dir.join(name);
        if let Some(body) = open(&path) {
            return Some(body);
        }
        let failed = self.dir.join(format!(".failed.{name}"));
        let lock = self.dir.join(format!(".lock.{name}"));
        let _ = fs::create_dir_all(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if failed.exists() {
                return None;
            }
            if File::options()
                .write(true)
                .create_new(true)
                .open(&lock)
                .is_ok()
            {
                let body = match open(&path) {
                    Some(b) => Some(b),
                    None => {
                        let b = self.get_or_make(name, make);
                        if b.is_none() {
                            let _ = File::create(&failed);
                        }
                        b
                    }
                };
                let _ = fs::remove_file(&lock);
                return body;
            }
            if let Some(body) = open(&path) {
                return Some(body);
            }
            let stale = fs::metadata(&lock)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > Duration::from_secs(10));
            if stale {
                let _ = fs::remove_file(&lock);
                continue;
            }
            if Instant::now() >= deadline {
                return self.get_or_make(name, make);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes `bytes` to `path` through a temporary name, then sweeps old files.
    fn store(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if !self.dir.is_dir() {
            fs::create_dir_all(&self.dir)?;
            self.remove_other_boots();
        }
        let tmp = self
            .dir
            .join(format!(".tmp.{}.{}", std::process::id(), path_name(path)));
        let mut f = File::create(&tmp)?;
        let written = f.write_all(bytes).and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.sweep();
        Ok(())
    }

    /// Removes this stream's folders of other boots (a restarted stream's old segments).
    fn remove_other_boots(&self) {
        let (Some(parent), Some(mine)) = (self.dir.parent(), self.dir.file_name()) else {
            return;
        };
        let Ok(entries) = fs::read_dir(parent) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name() != mine {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Removes files older than the window plus a margin.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > self.keep);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn path_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens a cached segment; `None` when it is not there (or not readable).
fn open(path: &Path) -> Option<Body> {
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.size();
    Some(Body::File(f, len))
}

/// Removes every stream's cache under `rundir` (at controller start: segments of an earlier
/// server are not served again).
pub fn clear(rundir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(rundir.join(CACHE_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-segcache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(body: Body) -> Vec<u8> {
        match body {
            Body::File(mut f, n) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                assert_eq!(v.len() as u64, n);
                v
            }
            Body::Bytes(b) => b,
        }
    }

    #[test]
    fn second_request_is_served_from_the_file_without_muxing() {
        let d = tmpdir("hit");
        let c = SegmentCache::new(&d, "live+cam/1", 1234, 50_000);
        let mut calls = 0;
        let a = c
            .get_or_make("hls_1_2_7.ts", |out| {
                calls += 1;
                out.extend_from_slice(b"segment seven");
                Some(())
            })
            .unwrap();
        assert!(matches!(a, Body::File(..)));
        assert_eq!(read(a), b"segment seven");
        let b = c
            .get_or_make("hls_1_2_7.ts", |_| {
                calls += 1;
                None
            })
            .unwrap();
        assert_eq!(read(b), b"segment seven");
        assert_eq!(calls, 1);
        // The stream name cannot leave the cache folder.
        let stream_dir = d.join(CACHE_DIR).join("live%2Bcam%2F1").join("1234");
        assert!(stream_dir.join("hls_1_2_7.ts").is_file());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unavailable_segment_is_not_cached_and_new_boot_removes_old() {
        let d = tmpdir("boot");
        let old = SegmentCache::new(&d, "s", 1, 50_000);
        assert!(old.get_or_make("x.ts", |_| None).is_none());
        assert!(old
            .get_or_make("x.ts", |o| {
                o.push(1);
                Some(())
            })
            .is_some());
        assert!(d.join(CACHE_DIR).join("s").join("1").join("x.ts").is_file());
        let new = SegmentCache::new(&d, "s", 2, 50_000);
        new.get_or_make("y.ts", |o| {
            o.push(2);
            Some(())
        })
        .unwrap();
        assert!(!d.join(CACHE_DIR).join("s").join("1").exists());
        clear(&d).unwrap();
        assert!(!d.join(CACHE_DIR).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn old_files_are_swept_when_a_new_one_is_written() {
        let d = tmpdir("sweep");
        let mut c = SegmentCache::new(&d, "s", 9, 0);
        c.keep = Duration::from_millis(0);
        c.get_or_make("a.ts", |o| {
            o.push(1);
            Some(())
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.get_or_make("b.ts", |o| {
            o.push(2);
            Some(())
        })
        .unwrap();
        let dir = d.join(CACHE_DIR).join("s").join("9");
        assert!(!dir.join("a.ts").exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
