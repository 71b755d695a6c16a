//! The controller's state: the config, the listener processes and the buffer processes, and
//! the rules for opening a stream.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use buffer::ipc::{self, Attached, Mode};
use buffer::sessions;
use serde_json::Value;

use crate::config::{self, ListenerSpec};

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

struct ListenerProc {
    spec: ListenerSpec,
    child: Option<Child>,
    started: Instant,
}

/// A running buffer.
pub struct BufferProc {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    observer: Option<Attached>,
}

/// Why a stream could not be opened: (code, reason) with code `notfound`, `forbidden` or
/// `failed`, as the control socket answers.
pub type OpenRefusal = (&'static str, String);

/// Everything the controller keeps.
pub struct State {
    /// The whole config document.
    pub cfg: Value,
    config_path: PathBuf,
    /// Socket folder.
    pub rundir: PathBuf,
    listeners: Vec<ListenerProc>,
    /// Running buffers by stream name.
    pub buffers: HashMap<String, BufferProc>,
    /// When each always-on stream was last started (at most every 5 s).
    always_tried: HashMap<String, Instant>,
    /// The session table every connection writes its slot of (`buffer::sessions`).
    pub table: Option<sessions::Table>,
    /// Sessions that ended, added up.
    pub closed: Closed,
    /// One sample a second of the totals, the newest [`HISTORY`] seconds.
    pub history: VecDeque<Sample>,
    /// Per session id: (sampled at ms, bytes down, bytes up, down bytes/s, up bytes/s).
    pub rates: HashMap<u64, (u64, u64, u64, u64, u64)>,
    last_sample: Instant,
}

/// Seconds of [`Sample`]s kept for the API's `totals`.
pub const HISTORY: usize = 600;

/// What the sessions that ended added up to, per stream and over all.
#[derive(Debug, Default, Clone)]
pub struct Closed {
    /// Sessions ended.
    pub count: u64,
    /// Bytes sent to peers.
    pub down: u64,
    /// Bytes received from peers.
    pub up: u64,
    /// Per stream: (sessions, bytes down, bytes up, viewer seconds).
    pub per_stream: HashMap<String, (u64, u64, u64, u64)>,
}

/// The totals at one second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Unix seconds.
    pub time: u64,
    /// Viewers connected.
    pub clients: u64,
    /// Inputs (publishers and pulls).
    pub inputs: u64,
    /// Pushes out.
    pub outputs: u64,
    /// Bytes sent since the controller started (ended sessions included).
    pub down: u64,
    /// Bytes received since the controller started.
    pub up: u64,
    /// Bytes per second sent over the last second.
    pub downbps: u64,
    /// Bytes per second received over the last second.
    pub upbps: u64,
}

/// Whether process `pid` still exists.
pub fn pid_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
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
    /// Builds the state; the listeners start on the first [`State::supervise`].
    pub fn new(cfg: Value, config_path: PathBuf, rundir: PathBuf) -> Result<State> {
        let s = State {
            listeners: config::listeners(&cfg)
                .into_iter()
                .map(|spec| ListenerProc {
                    spec,
                    child: None,
                    started: Instant::now() - Duration::from_secs(10),
                })
                .collect(),
            cfg,
            config_path,
            rundir,
            buffers: HashMap::new(),
            always_tried: HashMap::new(),
            table: None,
            closed: Closed::default(),
            history: VecDeque::new(),
            rates: HashMap::new(),
            last_sample: Instant::now(),
        };
        let mut s = s;
        // An existing table is kept: sessions that outlived an earlier controller are still
        // counted.
        match sessions::Table::open(&sessions::table_path(&s.rundir), true) {
            Ok(t) => s.table = Some(t),
            Err(e) => crate::logs::controller(&format!("session table: {e:#}; no session stats")),
        }
        // Listeners start on the controller's first supervise(), once its own sockets are
        // bound: a controller that fails to start leaves no orphans.
        Ok(s)
    }

    /// The config file's path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Saves the config (after an API change), keeping every key it holds.
    pub fn save(&self) {
        if let Err(e) = config::write(&self.config_path, &self.cfg) {
            crate::logs::controller(&format!("saving {}: {e:#}", self.config_path.display()));
        }
    }

    /// The sessions open now (their processes alive).
    pub fn open_sessions(&self) -> Vec<sessions::Entry> {
        let Some(t) = &self.table else {
            return Vec::new();
        };
        t.entries()
            .into_iter()
            .filter(|e| e.state == sessions::STATE_OPEN && pid_alive(e.pid))
            .collect()
    }

    /// Counts and frees the slots of sessions that ended (closed by their process, or whose
    /// process is gone, as after a SIGKILL), with an access log line each; then, once a
    /// second, a totals sample and per-session rates.
    pub fn reap_sessions(&mut self) {
        let Some(t) = &self.table else {
            return;
        };
        let now = unix_ms();
        let mut open = Vec::new();
        for e in t.entries() {
            let ended = e.state == sessions::STATE_CLOSED || !pid_alive(e.pid);
            if !ended {
                if e.state == sessions::STATE_OPEN {
                    open.push(e);
                }
                continue;
            }
            let secs = e.updated_ms.saturating_sub(e.start_ms) / 1000;
            if !e.stream.is_empty() || e.down + e.up > 0 {
                crate::logs::record(&format!(
                    "[access {}] {} {} {} {} {} s, {} bytes down, {} bytes up, {} packets lost{}",
                    e.pid,
                    e.host,
                    if e.stream.is_empty() { "-" } else { &e.stream },
                    e.protocol,
                    e.kind.as_str(),
                    secs,
                    e.down,
                    e.up,
                    e.lost,
                    if e.state == sessions::STATE_CLOSED {
                        ""
                    } else {
                        " (process gone)"
                    }
                ));
            }
            self.closed.count += 1;
            self.closed.down += e.down;
            self.closed.up += e.up;
            let ps = self.closed.per_stream.entry(e.stream.clone()).or_default();
            ps.0 += 1;
            ps.1 += e.down;
            ps.2 += e.up;
            if e.kind == sessions::Kind::Viewer {
                ps.3 += secs;
            }
            self.rates.remove(&e.id);
            t.free(e.slot, e.pid);
        }
        if self.last_sample.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_sample = Instant::now();
        let mut s = Sample {
            time: now / 1000,
            down: self.closed.down,
            up: self.closed.up,
            ..Sample::default()
        };
        let mut seen = std::collections::HashSet::new();
        for e in &open {
            seen.insert(e.id);
            match e.kind {
                sessions::Kind::Viewer => s.clients += 1,
                sessions::Kind::Input => s.inputs += 1,
                sessions::Kind::Output => s.outputs += 1,
                sessions::Kind::Unknown => {}
            }
            s.down += e.down;
            s.up += e.up;
            let r = self.rates.entry(e.id).or_insert((e.start_ms, 0, 0, 0, 0));
            let dt = now.saturating_sub(r.0).max(1);
            let (dbps, ubps) = (
                e.down.saturating_sub(r.1) * 1000 / dt,
                e.up.saturating_sub(r.2) * 1000 / dt,
            );
            *r = (now, e.down, e.up, dbps, ubps);
            s.downbps += dbps;
            s.upbps += ubps;
        }
        self.rates.retain(|id, _| seen.contains(id));
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(s);
    }

    /// Ends the processes of the open sessions of `stream` (all of them when `kinds` is
    /// empty, else those of the kinds given): SIGTERM, as MistServer's `stop_sessions`.
    /// Returns how many were signalled.
    pub fn stop_sessions(&self, stream: &str, kinds: &[sessions::Kind]) -> usize {
        let mut n = 0;
        for e in self.open_sessions() {
            if e.stream == stream && (kinds.is_empty() || kinds.contains(&e.kind)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(e.pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                n += 1;
            }
        }
        n
    }

    /// Stops the buffer of `stream` (SIGTERM; it ends its pull), if one runs.
    pub fn stop_buffer(&mut self, stream: &str) -> bool {
        let Some(mut b) = self.buffers.remove(stream) else {
            return false;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(b.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(b.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = b.child.kill();
        let _ = b.child.wait();
        true
    }

    /// Applies the config in `self.cfg` to what runs: listeners that were added, removed or
    /// changed are started and stopped (a stopped listener's connections go on: they are
    /// processes of their own), and buffers of streams that were removed or whose source
    /// changed are stopped. Streams that did not change keep their viewers.
    pub fn apply(&mut self, old: &Value) {
        let want = config::listeners(&self.cfg);
        let mut keep = Vec::new();
        for mut l in std::mem::take(&mut self.listeners) {
            if want.contains(&l.spec) {
                keep.push(l);
            } else {
                crate::logs::controller(&format!(
                    "stopping the {} listener on port {}",
                    l.spec.connector, l.spec.port
                ));
                if let Some(c) = &mut l.child {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(c.id() as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    let _ = c.wait();
                }
            }
        }
        for spec in want {
            if !keep.iter().any(|l| l.spec == spec) {
                keep.push(ListenerProc {
                    spec,
                    child: None,
                    started: Instant::now() - Duration::from_secs(10),
                });
            }
        }
        self.listeners = keep;
        let running: Vec<String> = self.buffers.keys().cloned().collect();
        for name in running {
            let before = config::find_stream(old, &name).map(|(_, v)| v.get("source").cloned());
            let after =
                config::find_stream(&self.cfg, &name).map(|(_, v)| v.get("source").cloned());
            if before != after {
                crate::logs::controller(&format!(
                    "stream {name} was removed or its source changed; stopping its buffer"
                ));
                self.stop_buffer(&name);
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

    /// Restarts listeners that died (at most once a second each) and forgets ended buffers.
    pub fn supervise(&mut self) {
        self.reap_sessions();
        for l in &mut self.listeners {
            if let Some(c) = &mut l.child {
                match c.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(st)) => {
                        crate::logs::controller(&format!(
                            "{} listener on port {} exited ({st}); restarting",
                            l.spec.connector, l.spec.port
                        ));
                        l.child = None;
                    }
                    Err(_) => continue,
                }
            }
            if l.started.elapsed() < Duration::from_millis(900) {
                continue;
            }
            l.started = Instant::now();
            let mut cmd = Command::new(exe());
            cmd.arg("connector")
                .arg(&l.spec.connector)
                .arg("--port")
                .arg(l.spec.port.to_string())
                .arg("--interface")
                .arg(&l.spec.interface)
                .arg("--rundir")
                .arg(&self.rundir)
                .stdin(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(s) = &l.spec.stream {
                cmd.arg("--stream").arg(s);
            }
            let spawned = cmd.spawn();
            match spawned {
                Ok(mut c) => {
                    if let Some(e) = c.stderr.take() {
                        crate::logs::capture(e);
                    }
                    l.child = Some(c)
                }
                Err(e) => crate::logs::controller(&format!("starting {}: {e}", l.spec.connector)),
            }
        }
        self.buffers.retain(|name, b| match b.child.try_wait() {
            Ok(Some(st)) => {
                crate::logs::controller(&format!("buffer of {name} exited ({st})"));
                false
            }
            _ => true,
        });
        // Streams marked `always_on` with a source of their own run whether or not anyone
        // watches (restarted here when their buffer ended).
        let always: Vec<String> = self
            .cfg
            .get("streams")
            .and_then(|s| s.as_object())
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.get("always_on").and_then(|a| a.as_bool()) == Some(true))
                    .filter(|(_, v)| {
                        v.get("source")
                            .and_then(|s| s.as_str())
                            .is_some_and(|s| !s.starts_with("push://"))
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in always {
            let due = self
                .always_tried
                .get(&name)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if !self.buffers.contains_key(&name) && due {
                self.always_tried.insert(name.clone(), Instant::now());
                if let Err((_, why)) = self.open_stream(&name, false, "", config::Credential::None)
                {
                    crate::logs::controller(&format!("always-on stream {name}: {why}"));
                }
            }
        }
    }

    /// Checks that `name` may be opened (played, or published when `push`) from `addr`, starts
    /// its buffer when none runs, and returns the buffer's socket path (the caller waits for
    /// the socket to appear: a buffer started a moment ago may not listen yet).
    pub fn open_stream(
        &mut self,
        name: &str,
        push: bool,
        addr: &str,
        cred: config::Credential<'_>,
    ) -> std::result::Result<PathBuf, OpenRefusal> {
        if !config::valid_stream_name(name) {
            return Err(("notfound", format!("invalid stream name {name:?}")));
        }
        // A stream key published to opens the stream it stands for, from any address.
        let keyed = push
            .then(|| config::stream_of_key(&self.cfg, name))
            .flatten();
        if let Some(real) = keyed {
            return self.open_resolved(&real, false, addr, cred, true);
        }
        self.open_resolved(name, push, addr, cred, false)
    }

    /// [`State::open_stream`] once a stream key was resolved: `keyed` publishes skip the
    /// address and key rules (the key was the credential) but still need a `push://` source.
    fn open_resolved(
        &mut self,
        name: &str,
        push: bool,
        addr: &str,
        cred: config::Credential<'_>,
        keyed: bool,
    ) -> std::result::Result<PathBuf, OpenRefusal> {
        let Some((_, scfg)) = config::find_stream(&self.cfg, name) else {
            return Err(("notfound", format!("no stream {name} is configured")));
        };
        let source = scfg
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        if keyed && !source.starts_with("push://") {
            return Err((
                "forbidden",
                format!("stream {name} does not take pushes (its source is {source})"),
            ));
        }
        if push {
            config::may_publish(&source, addr, cred).map_err(|r| {
                let code = if r == config::KEY_REFUSAL {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                (code, r)
            })?;
        }
        let dvr = scfg.get("DVR").and_then(|v| v.as_u64()).unwrap_or(50_000);
        if let Some(b) = self.buffers.get_mut(name) {
            if matches!(b.child.try_wait(), Ok(None)) {
                return Ok(b.socket.clone());
            }
            self.buffers.remove(name);
        }
        if !source.starts_with("push://")
            && !buffer::is_pull_source(&source)
            && !Path::new(&source).exists()
        {
            return Err((
                "notfound",
                format!("source {source} of {name} does not exist"),
            ));
        }
        let socket = ipc::socket_path(&self.rundir, name);
        let _ = std::fs::remove_file(&socket);
        let once = !source.starts_with("push://")
            && !buffer::is_pull_source(&source)
            && scfg.get("loop") == Some(&serde_json::Value::Bool(false));
        let mut cmd = Command::new(exe());
        cmd.arg("buffer");
        if once {
            cmd.arg("--once");
        }
        if scfg.get("always_on").and_then(|v| v.as_bool()) == Some(true) {
            cmd.arg("--always-on");
        }
        if let Some(t) = scfg.get("rtsp_transport").and_then(|v| v.as_str()) {
            cmd.arg("--pull-transport").arg(t);
        }
        let child = cmd
            .arg("--stream")
            .arg(name)
            .arg("--source")
            .arg(&source)
            .arg("--dvr-ms")
            .arg(dvr.max(1000).to_string())
            .arg("--rundir")
            .arg(&self.rundir)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ("failed", format!("starting a buffer: {e}")))?;
        let mut child = child;
        if let Some(e) = child.stderr.take() {
            crate::logs::capture(e);
        }
        let pid = child.id();
        crate::logs::controller(&format!("started the buffer of {name} (pid {pid})"));
        self.buffers.insert(
            name.to_string(),
            BufferProc {
                child,
                socket: socket.clone(),
                observer: None,
            },
        );
        Ok(socket)
    }

    /// Stats of a running buffer: (viewers, publishers, first ms, last ms, live).
    pub fn stream_stats(&mut self, name: &str) -> Option<(u32, u32, u64, u64, bool)> {
        let b = self.buffers.get_mut(name)?;
        if b.observer.is_none() {
            b.observer = ipc::attach(&b.socket, Mode::Observe).ok();
        }
        let r = b.observer.as_ref()?.reader().ok()?;
        let m = r.meta();
        let last = m
            .write_seq()
            .checked_sub(1)
            .and_then(|s| m.packet(s))
            .map(|e| e.dts)
            .unwrap_or(0);
        let first = m.packet(m.first_seq()).map(|e| e.dts).unwrap_or(0);
        Some((
            m.viewers(),
            m.publishers(),
            first,
            last,
            m.state() == dtsc::shm::STATE_LIVE,
        ))
    }

    /// Stops every process Sluice started: SIGTERM to the process group (listeners, their
    /// connection processes, buffers), then SIGKILL to what is left of the tracked children.
    pub fn shutdown(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::{getpgrp, getpid, Pid};
        if getpgrp() == getpid() {
            let _ = killpg(getpgrp(), Signal::SIGTERM);
        }
        let mut children: Vec<&mut Child> = self
            .listeners
            .iter_mut()
            .filter_map(|l| l.child.as_mut())
            .chain(self.buffers.values_mut().map(|b| &mut b.child))
            .collect();
        for c in children.iter_mut() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in children.iter_mut() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
