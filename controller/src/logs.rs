//! The log: every process's lines reach the controller, which keeps the newest
//! [`KEEP`] for the API's `log` call (MistServer's `[[time, LEVEL, message], …]`) and writes
//! them to its own standard error.
//!
//! Every process the controller starts (listeners, buffers, pushes) gets the write end of one
//! log pipe as its standard error ([`child_stderr`]); the connection processes a listener
//! forks and the pull processes a buffer starts inherit it. The controller reads the pipe on
//! one thread. Under the angel the pipe is the angel's (`SLUICE_LOG_PIPE`, [`init`]): it
//! outlives a controller, so the processes a restarted controller adopts still reach the log,
//! and lines written while no controller ran wait in the pipe (1 MiB) for the next. Lines are `[BINARY PID] message` or `[buffer STREAM PID] message`
//! (written in one `write` each, so lines of processes sharing a pipe stay whole); the level
//! is read from the message.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines kept for the API.
pub const KEEP: usize = 2000;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Unix seconds.
    pub time: u64,
    /// `FAIL`, `ERROR`, `WARN` or `INFO` (MistServer's level names).
    pub level: &'static str,
    /// The process's role: `controller`, `buffer`, `RTMP`, `HTTP`, `pull`, `access`, …
    pub binary: String,
    /// Its pid (0 when the line named none).
    pub pid: u32,
    /// The stream the line is about, when the line says.
    pub stream: Option<String>,
    /// The whole line as written.
    pub text: String,
}

static LINES: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());
/// Lowest level written and kept: 0 FAIL … 3 INFO.
static THRESHOLD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(3);

fn rank(level: &str) -> u8 {
    match level {
        "FAIL" => 0,
        "ERROR" => 1,
        "WARN" => 2,
        _ => 3,
    }
}

/// Sets the lowest level written and kept (`config.log_level`: FAIL, ERROR, WARN or INFO).
pub fn set_level(level: &str) {
    THRESHOLD.store(
        rank(&level.to_ascii_uppercase()),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The level a message reads as: refusals, failures and drops are warnings, errors and
/// panics are errors, everything else information.
pub fn level_of(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("panicked") || m.contains("fatal") {
        "FAIL"
    } else if m.contains("error") || m.contains("failed") || m.contains("exited (signal") {
        "ERROR"
    } else if m.contains("refused")
        || m.contains("dropping")
        || m.contains("dropped")
        || m.contains("not allowed")
        || m.contains("lost")
        || m.contains("reconnecting")
    {
        "WARN"
    } else {
        "INFO"
    }
}

/// What a line's `[ROLE PID]` or `[buffer STREAM PID]` prefix says ([`parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefix {
    /// The role (`controller`, `buffer`, `RTMP`, …); empty without a prefix.
    pub binary: String,
    /// The pid; 0 when the prefix gives none.
    pub pid: u32,
    /// The stream, for a buffer's line.
    pub stream: Option<String>,
}

/// Reads the prefix of `[ROLE PID] msg` or `[buffer STREAM PID] msg`.
pub fn parse(text: &str) -> Prefix {
    let Some((head, _)) = text.strip_prefix('[').and_then(|r| r.split_once(']')) else {
        return Prefix::default();
    };
    let words: Vec<&str> = head.split_whitespace().collect();
    let prefix = |binary: &str, pid: &str, stream: Option<&str>| Prefix {
        binary: binary.to_string(),
        pid: pid.parse().unwrap_or(0),
        stream: stream.map(str::to_string),
    };
    match words.as_slice() {
        ["buffer", stream, pid] => prefix("buffer", pid, Some(stream)),
        [role, pid] if pid.parse::<u32>().is_ok() => prefix(role, pid, None),
        [role, ..] => prefix(role, "", None),
        [] => Prefix::default(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Records and writes one line (without its newline).
pub fn record(text: &str) {
    let text = text.trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        return;
    }
    let Prefix {
        binary,
        pid,
        mut stream,
    } = parse(text);
    let level = level_of(text);
    if rank(level) > THRESHOLD.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if stream.is_none() {
        // `[pull 12] cam: …` and `[RTMP 9] 1.2.3.4 publishes cam`: the stream is the word
        // before the first colon of the message, when it is a stream name.
        let msg = text.split_once("] ").map_or("", |(_, m)| m);
        if let Some((first, _)) = msg.split_once(": ") {
            if !first.is_empty()
                && first
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b))
                && first.parse::<std::net::IpAddr>().is_err()
            {
                stream = Some(first.to_string());
            }
        }
    }
    let line = Line {
        time: now(),
        level,
        binary,
        pid,
        stream,
        text: text.to_string(),
    };
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
    let mut q = LINES.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= KEEP {
        q.pop_front();
    }
    q.push_back(line);
}

/// A line of the controller's own.
pub fn controller(msg: &str) {
    record(&format!("[controller {}] {msg}", std::process::id()));
}

/// The lines kept (at most [`KEEP`]), oldest first.
pub fn lines() -> Vec<Line> {
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// The environment variable the angel names its log pipe in: `READ_FD,WRITE_FD`.
pub const PIPE_ENV: &str = "SLUICE_LOG_PIPE";

/// The log pipe's write end, duplicated for each process started ([`child_stderr`]).
static WRITER: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// The two ends of the log pipe ([`make_pipe`]).
#[derive(Debug)]
pub struct Pipe {
    /// The end the controller reads lines from.
    pub read: OwnedFd,
    /// The end every process writes its lines to (as its standard error).
    pub write: OwnedFd,
}

/// Makes the log pipe, with room for 1 MiB of lines (`F_SETPIPE_SZ`, best effort); both
/// ends are inherited by processes started after this (the angel passes them on).
/// Errors: `pipe(2)`'s.
pub fn make_pipe() -> std::io::Result<Pipe> {
    let (read, write) = nix::unistd::pipe()?;
    let _ = nix::fcntl::fcntl(
        write.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    );
    Ok(Pipe { read, write })
}

/// Takes the log pipe: the angel's (named in [`PIPE_ENV`], checked to be a pipe) or a new
/// one, and starts the thread that reads it. Both ends are made close-on-exec here: children
/// get the write end only as their standard error. Call once, before other threads start.
pub fn init() -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let inherited = std::env::var(PIPE_ENV).ok().and_then(|v| {
        let (r, w) = v.split_once(',')?;
        let (r, w): (RawFd, RawFd) = (r.parse().ok()?, w.parse().ok()?);
        let is_pipe = |fd: RawFd| {
            nix::sys::stat::fstat(fd)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
                .unwrap_or(false)
        };
        // SAFETY: the angel opened both for this process and nothing else here owns them
        // (checked to be open pipes; the variable is removed below, so they are taken once).
        (r != w && r > 2 && w > 2 && is_pipe(r) && is_pipe(w))
            .then(|| unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) })
    });
    std::env::remove_var(PIPE_ENV);
    let (r, w) = match inherited {
        Some(p) => p,
        None => {
            let p = make_pipe()?;
            (p.read, p.write)
        }
    };
    for fd in [&r, &w] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    let _ = WRITER.set(w);
    read_lines(std::fs::File::from(r));
    Ok(())
}

/// The standard error for a process the controller starts: the log pipe (or, before
/// [`init`], the controller's own standard error).
pub fn child_stderr() -> std::process::Stdio {
    WRITER
        .get()
        .and_then(|w| w.try_clone().ok())
        .map(std::process::Stdio::from)
        .unwrap_or_else(std::process::Stdio::inherit)
}

/// Reads lines from `from` on a thread of its own, recording each line.
fn read_lines(from: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => record(&String::from_utf8_lossy(&buf)),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_into_role_pid_and_stream() {
        let prefix = |binary: &str, pid, stream: Option<&str>| Prefix {
            binary: binary.into(),
            pid,
            stream: stream.map(Into::into),
        };
        assert_eq!(
            parse("[buffer cam 77] ready"),
            prefix("buffer", 77, Some("cam"))
        );
        assert_eq!(parse("[RTMP 12] listening"), prefix("RTMP", 12, None));
        assert_eq!(parse("no brackets"), Prefix::default());
        assert_eq!(level_of("publish to x refused: no"), "WARN");
        assert_eq!(level_of("starting a buffer: error 2"), "ERROR");
        assert_eq!(level_of("ready"), "INFO");
        record("[pull 5] cam: playing rtsp://x/y");
        let l = lines();
        let last = l.last().unwrap();
        assert_eq!(
            (last.binary.as_str(), last.pid, last.stream.as_deref()),
            ("pull", 5, Some("cam"))
        );
    }
}
