//! What every pull shares around its sessions with the upstream, whatever the protocol:
//! attaching to the stream's buffer as its publisher, the process's slot in the session
//! table, reconnecting with backoff (1 s, doubling up to the pull's most), and the
//! `RUNDIR/NAME.pull.json` stats file the controller and viewers read.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use buffer::shmem::{self, Attached};

use crate::ingest::rtsp_pull::PullArgs;

const PROTO: &str = "pull";

/// How a session with the upstream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process was told to stop (SIGTERM).
    Stopped,
    /// The session ended or failed (`why`); `healthy` when it played for long enough that
    /// the backoff starts again from 1 s. The pull connects again after the backoff.
    Ended {
        /// Why, for the log and the stats file.
        why: String,
        /// It delivered media for 10 s or more.
        healthy: bool,
    },
    /// There is no connection to make again (UDP): the next datagram starts a new session
    /// at once.
    Waiting {
        /// Why the last session ended.
        why: String,
    },
}

/// One kind of pull: its sessions and its stats.
pub trait Pull {
    /// Runs one session with the upstream until it ends or `term` is set.
    fn session(&mut self, term: &AtomicBool) -> Outcome;
    /// Writes the stats file with the pull's counters in `state` (`playing`,
    /// `reconnecting`, `waiting`, `stopped`), with the last error.
    fn stats(&mut self, state: &str, why: Option<&str>);
}

/// Attaches to the stream's buffer as its publisher and takes the process's slot in the
/// session table (as `proto`, e.g. `RTSP pull`, from `host`); logs `pulling WHAT`.
/// Errors: no buffer to attach to, or it refused.
pub fn attach(args: &PullArgs, proto: &'static str, host: &str, what: &str) -> Result<Attached> {
    let socket = shmem::socket_path(&args.rundir, &args.stream);
    let attached =
        shmem::attach(&socket, shmem::Mode::Push).context("attaching to the stream's buffer")?;
    crate::log!(PROTO, "{}: pulling {what}", args.stream);
    ipc::sessions::begin(&args.rundir, proto, host);
    ipc::sessions::set_stream(&args.stream, ipc::sessions::Kind::Input, None);
    Ok(attached)
}

/// Runs `pull`'s sessions until SIGTERM: after each that ended, logs why and connects again
/// after the backoff (1 s after a healthy session, doubling up to `max_backoff`), writing
/// the stats file as it goes; at the end, writes it `stopped` and frees the session slot.
pub fn supervise(
    stream: &str,
    shown: &str,
    term: &AtomicBool,
    max_backoff: Duration,
    pull: &mut impl Pull,
) {
    let mut backoff = Duration::from_secs(1);
    while !term.load(Ordering::SeqCst) {
        let (why, healthy) = match pull.session(term) {
            Outcome::Stopped => break,
            Outcome::Waiting { why } => {
                crate::log!(
                    PROTO,
                    "{stream}: {shown}: {why}; the next datagram starts a new session"
                );
                pull.stats("waiting", Some(&why));
                continue;
            }
            Outcome::Ended { why, healthy } => (why, healthy),
        };
        if healthy {
            backoff = Duration::from_secs(1);
        }
        crate::log!(
            PROTO,
            "{stream}: {shown}: {why}; reconnecting in {} ms",
            backoff.as_millis()
        );
        pull.stats("reconnecting", Some(&why));
        let until = Instant::now() + backoff;
        while Instant::now() < until && !term.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(max_backoff);
    }
    pull.stats("stopped", None);
    ipc::sessions::end(None);
}

/// Replaces a pull's `RUNDIR/NAME.pull.json` with `v` at once (written beside it, then
/// renamed), so the controller never reads half a file. Best effort.
pub fn write_stats_file(path: &Path, v: &serde_json::Value) {
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, v.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
