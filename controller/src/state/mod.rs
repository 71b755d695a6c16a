//! The controller's state: the config, the listener processes and the buffer processes, and
//! the rules for opening a stream. One [`State`] behind one mutex; its parts by concern:
//!
//! * [`processes`]: listeners and buffers: starting, restarting, reaping, stopping, adopting.
//! * [`watch`]: what running buffers report, turned into triggers (STREAM_READY,
//!   LIVE_TRACK_LIST, STREAM_BUFFER, a pull's INPUT_ABORT), and a buffer's figures
//!   ([`Processes::stream_stats`]).
//! * [`stats`]: the session table, ended sessions added up, per-second history and rates.
//! * [`outputs`]: pushes out and the recordings they finished.
//! * [`open`]: opening a stream for a connector: the checks, then starting its buffer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config;

pub mod open;
pub mod outputs;
pub mod processes;
pub mod stats;
pub mod watch;

pub use outputs::auto_matches;
pub use stats::{Sample, HISTORY};

use open::Opening;
use outputs::Outputs;
use processes::{ListenerProc, Proc, Processes};
use stats::Stats;

/// Creates the socket folder, private to this user (0700), refusing one owned by another user.
pub fn prepare_rundir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::metadata(dir)?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != nix::unistd::getuid().as_raw() {
        bail!("{} belongs to another user", dir.display());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Everything the controller keeps, behind the one mutex its threads share (the API, the
/// control socket's requests, and the main loop's [`State::supervise`]). Each concern's
/// fields are grouped in a part of their own.
pub struct State {
    /// The whole config document.
    pub cfg: Value,
    config_path: PathBuf,
    /// Socket folder.
    pub rundir: PathBuf,
    /// Listener and buffer processes.
    pub procs: Processes,
    /// Session stats: the session table, ended sessions, history, rates.
    pub stats: Stats,
    /// Pushes out and finished recordings.
    pub outputs: Outputs,
    /// What opening streams remembers between requests.
    pub opening: Opening,
}

/// Whether process `pid` still exists (one another user runs counts; so does a zombie not yet
/// reaped).
pub fn pid_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// MistServer's name for the input of a source.
fn input_type(source: &str) -> &'static str {
    if source.starts_with("push://") {
        "Buffer"
    } else if source.starts_with("rtsp://") {
        "RTSP"
    } else if source.starts_with("dtsc://") {
        "DTSC"
    } else if source.starts_with("rtmp://") {
        "RTMP"
    } else if source.starts_with("tsudp://") {
        "TSUDP"
    } else if source.starts_with("http") && source.contains(".m3u8") {
        "HLS"
    } else if source.starts_with("http") && source.contains(".flv") {
        "HTTPFLV"
    } else if source.starts_with("http") {
        "HTTPTS"
    } else if source.ends_with(".dtsc") {
        "DTSC"
    } else if [".mp4", ".m4v", ".m4a", ".mov", ".3gp"]
        .iter()
        .any(|e| source.to_ascii_lowercase().ends_with(e))
    {
        "MP4"
    } else if source.ends_with(".flv") {
        "FLV"
    } else {
        "TS"
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This very binary, even after the file was replaced or removed (an in-place upgrade or a
/// rebuild): `/proc/self/exe` still names the running inode, whereas `current_exe()` then
/// gives a path ending in " (deleted)". Listeners and buffers are always the controller's
/// own version.
fn exe() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sluice"))
    }
}

impl State {
    /// Locks the state. A lock poisoned by a panicking thread is taken over, not a reason
    /// to panic again: the release build aborts on panic, so poisoning happens in tests
    /// only, and no client's bytes are parsed under this lock (connectors parse in their
    /// own processes; the controller's socket and API check their input before locking).
    pub fn lock(st: &std::sync::Mutex<State>) -> std::sync::MutexGuard<'_, State> {
        st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the state for config `cfg` (read from `config_path`) with its sockets in
    /// `rundir`: the session table is opened (or made) there, and the listeners start on the
    /// first [`State::supervise`]. A session table that cannot be opened is logged and leaves
    /// the session stats empty; nothing else can fail.
    pub fn new(cfg: Value, config_path: PathBuf, rundir: PathBuf) -> Result<State> {
        let s = State {
            procs: Processes::new(&cfg),
            stats: Stats::new(&rundir),
            outputs: Outputs::new(),
            opening: Opening::default(),
            cfg,
            config_path,
            rundir,
        };
        // Listeners start on the controller's first supervise(), once its own sockets are
        // bound: a controller that fails to start leaves no orphans.
        Ok(s)
    }

    /// The config file's path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Saves the config (after an API change), keeping every key it holds. A failure is
    /// logged, not returned: the running config stays as changed.
    pub fn save(&self) {
        if let Err(e) = config::write(&self.config_path, &self.cfg) {
            crate::logs::controller(&format!("saving {}: {e:#}", self.config_path.display()));
        }
    }

    /// Applies the config in `self.cfg` to what runs, `old` being the config before the
    /// change: STREAM_ADD, STREAM_CONFIG and STREAM_REMOVE fire for the streams that changed;
    /// listeners that were added, removed or changed are started and stopped (a stopped
    /// listener's connections go on: they are processes of their own); buffers of streams
    /// that were removed or whose source changed are stopped; `config.log_level` is set.
    /// Streams that did not change keep their viewers.
    pub fn apply(&mut self, old: &Value) {
        // STREAM_ADD / STREAM_CONFIG / STREAM_REMOVE for what changed.
        let empty = serde_json::Map::new();
        let before = old
            .get("streams")
            .and_then(|s| s.as_object())
            .unwrap_or(&empty);
        let after = self
            .cfg
            .get("streams")
            .and_then(|s| s.as_object())
            .unwrap_or(&empty);
        for (k, v) in after {
            match before.get(k) {
                None => crate::triggers::fire(
                    &self.cfg,
                    "STREAM_ADD",
                    Some(k),
                    vec![k.clone(), v.to_string()],
                ),
                Some(b) if b != v => crate::triggers::fire(
                    &self.cfg,
                    "STREAM_CONFIG",
                    Some(k),
                    vec![k.clone(), v.to_string()],
                ),
                _ => {}
            }
        }
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            crate::triggers::fire(&self.cfg, "STREAM_REMOVE", Some(k), vec![k.clone()]);
        }
        let want = config::listeners(&self.cfg);
        let mut keep = Vec::new();
        for mut l in std::mem::take(&mut self.procs.listeners) {
            if want.contains(&l.spec) {
                keep.push(l);
            } else {
                crate::logs::controller(&format!(
                    "stopping the {} listener on port {}",
                    l.spec.connector, l.spec.port
                ));
                if let Some(c) = &mut l.child {
                    c.terminate(Duration::from_secs(2));
                }
                let _ = std::fs::remove_file(l.pid_file(&self.rundir));
            }
        }
        for spec in want {
            if !keep.iter().any(|l| l.spec == spec) {
                keep.push(ListenerProc::new(spec));
            }
        }
        self.procs.listeners = keep;
        let running: Vec<String> = self.procs.buffers.keys().cloned().collect();
        for name in running {
            let before = config::find_stream(old, &name).map(|v| v.get("source").cloned());
            let after = config::find_stream(&self.cfg, &name).map(|v| v.get("source").cloned());
            if before != after {
                crate::logs::controller(&format!(
                    "stream {name} was removed or its source changed; stopping its buffer"
                ));
                self.procs.stop_buffer(&name);
            }
        }
        if let Some(l) = self
            .cfg
            .pointer("/config/log_level")
            .and_then(|v| v.as_str())
        {
            crate::logs::set_level(l);
        }
    }

    /// Once per turn of the controller's loop (every 100 ms): counts ended sessions, restarts
    /// listeners that died (at most once a second each), forgets ended buffers (with their
    /// triggers), fires the triggers of what the running buffers report, keeps the pushes
    /// going, and starts the always-on streams whose buffer is not running.
    pub fn supervise(&mut self) {
        self.stats.reap(&self.cfg);
        self.keep_listeners();
        self.reap_buffers();
        self.mark_ready();
        self.watch_pulls();
        self.watch_streams();
        self.keep_pushes();
        self.keep_always_on();
    }

    /// Stops every process Sluice started: SIGTERM to the process group (listeners, their
    /// connection processes, buffers, pushes), then SIGKILL to what is left of the tracked
    /// ones after 3 s each; the listeners' pid files are removed.
    pub fn shutdown(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::{getpgrp, getpid, getppid, Pid};
        // The group is the controller's, or its angel's (which stops too on SIGTERM).
        if getpgrp() == getpid() || getpgrp() == getppid() {
            let _ = killpg(getpgrp(), Signal::SIGTERM);
        }
        let mut procs: Vec<&mut Proc> = self
            .procs
            .listeners
            .iter_mut()
            .filter_map(|l| l.child.as_mut())
            .chain(self.procs.buffers.values_mut().map(|b| &mut b.child))
            .chain(
                self.outputs
                    .pushes
                    .iter_mut()
                    .filter_map(|p| p.child.as_mut()),
            )
            .collect();
        for c in procs.iter_mut() {
            let _ = kill(Pid::from_raw(c.pid() as i32), Signal::SIGTERM);
        }
        for c in procs.iter_mut() {
            c.terminate(Duration::from_secs(3));
        }
        for l in &self.procs.listeners {
            let _ = std::fs::remove_file(l.pid_file(&self.rundir));
        }
    }

    /// Takes over what an earlier controller left running in the run folder (the angel
    /// restarted this one after it died): listeners by their pid files, buffers by their
    /// sockets (the buffer's pid from `SO_PEERCRED`), pushes by the session table (the
    /// target from their command line). Viewers, publishers and pushes go on untouched.
    pub fn adopt(&mut self) {
        self.adopt_listeners();
        // A run folder that cannot be read has no buffers to adopt, nor pushes.
        if !self.adopt_buffers() {
            return;
        }
        self.adopt_pushes();
    }
}
