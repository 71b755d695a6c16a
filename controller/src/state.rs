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

/// A process the controller watches: a child it started, or one an earlier controller
/// started and this one adopted (after the angel restarted it), watched by pid.
pub enum Proc {
    /// Started by this controller.
    Child(Child),
    /// Adopted: not our child (init reaps it), so only its pid is known.
    Adopted(u32),
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Adopted(p) => *p,
        }
    }

    /// `None` while it runs; when it ended, whether it succeeded and how it ended (an
    /// adopted process's exit status is not ours to see: it counts as a success).
    pub fn exited(&mut self) -> Option<(bool, String)> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(st)) => Some((st.success(), st.to_string())),
                _ => None,
            },
            Proc::Adopted(p) => (!pid_alive(*p)).then(|| (true, "ended".to_string())),
        }
    }

    /// The exit code (or "signal"), once it ended.
    fn code(&mut self) -> String {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(st)) => st.code().map_or("signal".into(), |c| c.to_string()),
                _ => String::new(),
            },
            Proc::Adopted(_) => String::new(),
        }
    }

    /// SIGTERM, up to `wait` for it to end, then SIGKILL.
    pub fn terminate(&mut self, wait: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + wait;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        match self {
            Proc::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Proc::Adopted(_) => {
                if pid_alive(self.pid()) {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

struct ListenerProc {
    spec: ListenerSpec,
    child: Option<Proc>,
    started: Instant,
}

impl ListenerProc {
    /// Its pid file: `RUNDIR/listener-PROTO-PORT.pid`, for a restarted controller to adopt it.
    fn pid_file(&self, rundir: &Path) -> PathBuf {
        rundir.join(format!(
            "listener-{}-{}.pid",
            self.spec.connector, self.spec.port
        ))
    }
}

/// A running buffer.
pub struct BufferProc {
    child: Proc,
    /// Its socket.
    pub socket: PathBuf,
    observer: Option<Attached>,
    /// The stream's source, as its buffer was started with it.
    source: String,
    /// STREAM_READY was fired (the stream went live).
    ready: bool,
    /// The header version LIVE_TRACK_LIST last reported.
    header_version: u64,
    /// The STREAM_BUFFER state last reported: "", FULL, DRY, RECOVER or EMPTY.
    buffer_state: &'static str,
    /// Packets written when last looked at, and when that count last grew.
    progress: (u64, Instant),
    /// The pull's failed attempt INPUT_ABORT last reported: its pid and attempt number
    /// (from `RUNDIR/NAME.pull.json`).
    pull_abort_seen: (u64, u64),
}

/// A push out: one `sluice push` process at a time, restarted with backoff after a failure.
pub struct PushProc {
    /// The push's id (`push_list`, `push_stop`).
    pub id: u64,
    /// The stream pushed.
    pub stream: String,
    /// Where to (with `$stream` already replaced).
    pub target: String,
    /// Started by an auto-push rule (then it ends with the stream, and the rule starts it
    /// again when the stream is live again).
    pub auto: bool,
    child: Option<Proc>,
    /// When the process may be started (again).
    next_start: Instant,
    backoff: Duration,
    /// Processes started for this push.
    pub attempts: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
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
    /// Viewer sessions USER_NEW allowed: (stream, address, connector) → when.
    users_ok: HashMap<(String, String, String), Instant>,
    last_watch: Instant,
    /// Sources STREAM_SOURCE gave for streams about to be started.
    pub source_rewrites: HashMap<String, String>,
    /// When LIVE_BANDWIDTH last fired per stream.
    bandwidth_fired: HashMap<String, Instant>,
    /// Session ids already announced with CONN_OPEN (and CONN_PLAY).
    announced: HashMap<u64, bool>,
    /// Pushes out.
    pub pushes: Vec<PushProc>,
    next_push_id: u64,
    /// Finished recordings, oldest first (at most [`MAX_RECORDINGS`]), for the API.
    pub recordings: std::collections::VecDeque<Value>,
    /// Auto pushes (stream, target) that failed for good (`PUSH_FAILED`): not started again
    /// until the stream unloads.
    auto_failed: std::collections::HashSet<(String, String)>,
}

/// Finished recordings the API lists (the oldest are forgotten first).
pub const MAX_RECORDINGS: usize = 1000;

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

/// Whether a buffer may be started for stream `name` while the buffers of `running` run:
/// at most `per_base` buffers of `BASE+SUFFIX` streams for one base (the base's own stream
/// not counted), and at most `total` buffers in all. Errors: the reason, naming the limit
/// and its config key (the control socket sends it as a `failed` refusal, which connectors
/// answer with HTTP 503, an RTMP or RTSP refusal).
pub fn check_buffer_caps<'a>(
    running: impl Iterator<Item = &'a str>,
    name: &str,
    per_base: u64,
    total: u64,
) -> std::result::Result<(), String> {
    let base = name.split_once('+').map(|(b, _)| b);
    let (mut all, mut same) = (0u64, 0u64);
    for r in running {
        all += 1;
        if base.is_some() && r.split_once('+').map(|(b, _)| b) == base {
            same += 1;
        }
    }
    if all >= total {
        return Err(format!(
            "the server runs its limit of {total} stream buffers (config.max_buffers)"
        ));
    }
    if let Some(b) = base {
        if same >= per_base {
            return Err(format!(
                "{b}+ streams are at their limit of {per_base} buffers (config.max_wildcard_buffers)"
            ));
        }
    }
    Ok(())
}

/// Whether an auto-push pattern covers `stream`: the name itself, or a base name that
/// covers its wildcard streams (`live` covers `live+cam1`; so does `live+`).
pub fn auto_matches(pattern: &str, stream: &str) -> bool {
    let base = stream.split_once('+').map_or(stream, |(b, _)| b);
    pattern == stream || pattern == base || pattern.strip_suffix('+') == Some(base)
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
            users_ok: HashMap::new(),
            last_watch: Instant::now(),
            source_rewrites: HashMap::new(),
            bandwidth_fired: HashMap::new(),
            announced: HashMap::new(),
            pushes: Vec::new(),
            recordings: std::collections::VecDeque::new(),
            auto_failed: std::collections::HashSet::new(),
            next_push_id: 1,
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
        let Some(entries) = self.table.as_ref().map(|t| t.entries()) else {
            return;
        };
        let now = unix_ms();
        let mut open = Vec::new();
        for e in entries {
            let ended = e.state == sessions::STATE_CLOSED || !pid_alive(e.pid);
            if !ended {
                if e.state == sessions::STATE_OPEN {
                    if !e.stream.is_empty() {
                        self.announce(&e);
                    }
                    open.push(e);
                }
                continue;
            }
            if self.announced.remove(&e.id).is_some() {
                let conn = vec![
                    e.stream.clone(),
                    e.host.clone(),
                    e.protocol.clone(),
                    String::new(),
                ];
                crate::triggers::fire(&self.cfg, "CONN_CLOSE", Some(&e.stream), conn);
                if e.kind == sessions::Kind::Viewer {
                    let secs = e.updated_ms.saturating_sub(e.start_ms) / 1000;
                    let end = vec![
                        format!("{:016x}", e.id),
                        e.stream.clone(),
                        e.protocol.clone(),
                        e.host.clone(),
                        secs.to_string(),
                        e.up.to_string(),
                        e.down.to_string(),
                        String::new(),
                    ];
                    crate::triggers::fire(&self.cfg, "USER_END", Some(&e.stream), end);
                }
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
            if let Some(t) = &self.table {
                t.free(e.slot, e.pid);
            }
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
        // LIVE_BANDWIDTH: a stream whose inputs bring more bytes per second than a handler's
        // `params` (bytes/s), at most every 5 s.
        let mut input_rate: HashMap<String, u64> = HashMap::new();
        for e in open.iter().filter(|e| e.kind == sessions::Kind::Input) {
            *input_rate.entry(e.stream.clone()).or_default() +=
                self.rates.get(&e.id).map_or(0, |r| r.4);
        }
        for (stream, rate) in input_rate {
            let limit = self
                .cfg
                .pointer("/config/triggers/LIVE_BANDWIDTH")
                .and_then(|l| l.as_array())
                .and_then(|l| {
                    l.iter()
                        .filter_map(|h| {
                            h.get("params").and_then(|p| {
                                p.as_u64()
                                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                            })
                        })
                        .min()
                });
            let Some(limit) = limit else {
                break;
            };
            let due = self
                .bandwidth_fired
                .get(&stream)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if rate > limit && due {
                self.bandwidth_fired.insert(stream.clone(), Instant::now());
                crate::triggers::fire(
                    &self.cfg,
                    "LIVE_BANDWIDTH",
                    Some(&stream),
                    vec![stream.clone(), rate.to_string()],
                );
            }
        }
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(s);
    }

    /// CONN_OPEN for a session seen with a stream for the first time, and CONN_PLAY once it
    /// plays.
    fn announce(&mut self, e: &sessions::Entry) {
        let payload = || {
            vec![
                e.stream.clone(),
                e.host.clone(),
                e.protocol.clone(),
                String::new(),
            ]
        };
        let played = e.kind == sessions::Kind::Viewer;
        match self.announced.get(&e.id).copied() {
            None => {
                crate::triggers::fire(&self.cfg, "CONN_OPEN", Some(&e.stream), payload());
                if played {
                    crate::triggers::fire(&self.cfg, "CONN_PLAY", Some(&e.stream), payload());
                }
                self.announced.insert(e.id, played);
            }
            Some(false) if played => {
                crate::triggers::fire(&self.cfg, "CONN_PLAY", Some(&e.stream), payload());
                self.announced.insert(e.id, true);
            }
            _ => {}
        }
    }

    /// LIVE_TRACK_LIST when a stream's tracks change, and STREAM_BUFFER as its data comes
    /// (FULL), stops coming for 2 s while live (DRY), comes back (RECOVER, then FULL), and
    /// ends (EMPTY). Looked at once a second.
    fn watch_streams(&mut self) {
        if self.last_watch.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_watch = Instant::now();
        let names: Vec<String> = self.buffers.keys().cloned().collect();
        for name in names {
            let Some(b) = self.buffers.get_mut(&name) else {
                continue;
            };
            if b.observer.is_none() {
                b.observer = ipc::attach(&b.socket, Mode::Observe).ok();
            }
            let Some(r) = b.observer.as_ref().and_then(|o| o.reader().ok()) else {
                continue;
            };
            let m = *r.meta();
            let version = m.header_version();
            let mut tracks = None;
            if version % 2 == 0 && version != b.header_version {
                b.header_version = version;
                let (bytes, _) = m.header();
                if let Ok(Some((dtsc::wire::Frame::Header(v), _))) = dtsc::wire::parse_frame(&bytes)
                {
                    if let Ok(h) = dtsc::wire::Header::from_value(&v) {
                        let list: Vec<Value> = h
                            .tracks
                            .iter()
                            .map(|t| {
                                serde_json::json!({
                                    "id": t.id, "type": t.kind.as_str(), "codec": t.codec.as_str(),
                                    "width": t.width, "height": t.height, "rate": t.rate,
                                    "channels": t.channels, "lang": t.lang,
                                })
                            })
                            .collect();
                        if !list.is_empty() {
                            tracks = Some(Value::Array(list).to_string());
                        }
                    }
                }
            }
            let seq = m.write_seq();
            let now = Instant::now();
            let ended = m.state() == dtsc::shm::STATE_ENDED;
            let grew = seq > b.progress.0;
            if grew {
                b.progress = (seq, now);
            }
            let next = match (b.buffer_state, ended, grew) {
                (s, true, _) if s != "EMPTY" && !s.is_empty() => Some("EMPTY"),
                (_, true, _) => None,
                ("" | "EMPTY", false, true) => Some("FULL"),
                ("DRY", false, true) => Some("RECOVER"),
                ("RECOVER", false, true) => Some("FULL"),
                ("FULL" | "RECOVER", false, false)
                    if now.duration_since(b.progress.1) >= Duration::from_secs(2) =>
                {
                    Some("DRY")
                }
                _ => None,
            };
            let health = serde_json::json!({
                "viewers": m.viewers(), "inputs": m.publishers(), "packets": seq,
            })
            .to_string();
            if let Some(s) = next {
                b.buffer_state = s;
            }
            if let Some(t) = tracks {
                crate::triggers::fire(
                    &self.cfg,
                    "LIVE_TRACK_LIST",
                    Some(&name),
                    vec![name.clone(), t],
                );
            }
            if let Some(s) = next {
                crate::triggers::fire(
                    &self.cfg,
                    "STREAM_BUFFER",
                    Some(&name),
                    vec![name.clone(), s.to_string(), health],
                );
            }
        }
    }

    /// Whether USER_NEW allowed this viewer (stream, address, connector) in the last minute.
    pub fn user_ok(&mut self, key: &(String, String, String)) -> bool {
        self.users_ok
            .retain(|_, t| t.elapsed() < Duration::from_secs(60));
        self.users_ok.contains_key(key)
    }

    /// Remembers that USER_NEW allowed this viewer.
    pub fn remember_user(&mut self, key: (String, String, String)) {
        self.users_ok.insert(key, Instant::now());
    }

    /// Starts a push of `stream` to `target` (`auto`: by an auto-push rule). Returns its id.
    pub fn push_start(&mut self, stream: &str, target: &str, auto: bool) -> u64 {
        let id = self.next_push_id;
        self.next_push_id += 1;
        self.pushes.push(PushProc {
            id,
            stream: stream.to_string(),
            target: target.replace("$stream", stream),
            auto,
            child: None,
            next_start: Instant::now(),
            backoff: Duration::from_secs(1),
            attempts: 0,
            last_error: None,
        });
        self.keep_pushes();
        id
    }

    /// Stops push `id`; false when there is none.
    pub fn push_stop(&mut self, id: u64) -> bool {
        let Some(i) = self.pushes.iter().position(|p| p.id == id) else {
            return false;
        };
        let mut p = self.pushes.remove(i);
        if let Some(c) = &mut p.child {
            c.terminate(Duration::from_secs(2));
        }
        self.push_ended(&p, "stopped by push_stop");
        true
    }

    /// A report from a push process (`control::report`): `RECORDING_END` for a finished file
    /// (the trigger fires: stream, path, format, bytes, seconds spent writing, Unix start and
    /// end, first and last media ms, why it ended; the file joins [`State::recordings`]), or
    /// `PUSH_FAILED` for a push that retrying cannot fix (it ends, PUSH_END with the reason).
    pub fn report(&mut self, r: &HashMap<String, String>) {
        let f = |k: &str| r.get(k).cloned().unwrap_or_default();
        match f("what").as_str() {
            "RECORDING_END" => {
                let stream = f("stream");
                let num = |k: &str| f(k).parse::<u64>().unwrap_or(0);
                crate::triggers::fire(
                    &self.cfg,
                    "RECORDING_END",
                    Some(&stream),
                    [
                        "stream", "path", "format", "bytes", "seconds", "started", "ended",
                        "first_ms", "last_ms", "reason",
                    ]
                    .iter()
                    .map(|k| f(k))
                    .collect(),
                );
                if self.recordings.len() >= MAX_RECORDINGS {
                    self.recordings.pop_front();
                }
                self.recordings.push_back(serde_json::json!({
                    "stream": stream,
                    "path": f("path"),
                    "format": f("format"),
                    "bytes": num("bytes"),
                    "duration_ms": num("last_ms").saturating_sub(num("first_ms")),
                    "started": num("started"),
                    "ended": num("ended"),
                    "reason": f("reason"),
                }));
            }
            "PUSH_FAILED" => {
                let (stream, target) = (f("stream"), f("target"));
                if let Some(i) = self
                    .pushes
                    .iter()
                    .position(|p| p.stream == stream && p.target == target)
                {
                    let mut p = self.pushes.remove(i);
                    if let Some(c) = &mut p.child {
                        c.terminate(Duration::from_secs(2));
                    }
                    if p.auto {
                        self.auto_failed
                            .insert((p.stream.clone(), p.target.clone()));
                    }
                    self.push_ended(&p, &f("reason"));
                }
            }
            other => crate::logs::controller(&format!("unknown report {other:?}")),
        }
    }

    /// PUSH_END and a log line for a push that ended.
    fn push_ended(&self, p: &PushProc, why: &str) {
        crate::logs::controller(&format!(
            "push {} of {} to {} ended: {why}",
            p.id,
            p.stream,
            connectors::core::url::redact(&p.target)
        ));
        crate::triggers::fire(
            &self.cfg,
            "PUSH_END",
            Some(&p.stream),
            vec![
                p.id.to_string(),
                p.stream.clone(),
                p.target.clone(),
                connectors::core::url::redact(&p.target),
                "[]".into(),
                serde_json::json!({"reason": why, "attempts": p.attempts}).to_string(),
            ],
        );
    }

    /// Whether `stream` is live with an input (publisher or pull), from its buffer.
    fn stream_live(&mut self, stream: &str) -> bool {
        self.stream_stats(stream).is_some_and(|s| s.4 && s.1 > 0)
    }

    /// Starts the push processes that are due, notes the ones that exited (a failure is
    /// retried with backoff, 1 s doubling to 30 s; a push whose stream ended is done), and
    /// starts auto pushes (`autopushes`: `[[PATTERN, TARGET], …]`) for streams that are live.
    pub fn keep_pushes(&mut self) {
        let mut done = Vec::new();
        for i in 0..self.pushes.len() {
            let p = &mut self.pushes[i];
            if let Some(c) = &mut p.child {
                match c.exited() {
                    None => continue,
                    Some((ok, st)) => {
                        p.child = None;
                        if ok {
                            done.push((i, "the stream ended".to_string()));
                            continue;
                        }
                        let why = format!("the push process exited ({st})");
                        crate::logs::controller(&format!(
                            "push {} of {}: {why}; retrying in {} s",
                            p.id,
                            p.stream,
                            p.backoff.as_secs()
                        ));
                        p.last_error = Some(why);
                        p.next_start = Instant::now() + p.backoff;
                        p.backoff = (p.backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            if Instant::now() < p.next_start {
                continue;
            }
            let spawned = Command::new(exe())
                .arg("push")
                .arg("--stream")
                .arg(&p.stream)
                .arg("--target")
                .arg(&p.target)
                .arg("--rundir")
                .arg(&self.rundir)
                .stdin(Stdio::null())
                .stderr(crate::logs::child_stderr())
                .spawn();
            p.attempts += 1;
            match spawned {
                Ok(c) => {
                    if p.attempts == 1 {
                        crate::triggers::fire(
                            &self.cfg,
                            "PUSH_OUT_START",
                            Some(&p.stream),
                            vec![p.stream.clone(), p.target.clone()],
                        );
                    }
                    p.child = Some(Proc::Child(c));
                }
                Err(e) => {
                    p.last_error = Some(format!("starting the push: {e}"));
                    p.next_start = Instant::now() + p.backoff;
                }
            }
        }
        for (i, why) in done.into_iter().rev() {
            let p = self.pushes.remove(i);
            self.push_ended(&p, &why);
        }
        // Auto pushes: every live stream a rule matches has its push.
        let rules: Vec<(String, String)> = self
            .cfg
            .get("autopushes")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|r| {
                        Some((
                            r.get(0)?.as_str()?.to_string(),
                            r.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A stream's own `record` setting (a recording target) is a rule for that stream.
        let mut rules = rules;
        if let Some(streams) = self.cfg.get("streams").and_then(|s| s.as_object()) {
            for (name, v) in streams {
                if let Some(t) = v.get("record").and_then(|r| r.as_str()) {
                    rules.push((name.clone(), t.to_string()));
                }
            }
        }
        // A push that failed for good is not started again while its stream stays loaded.
        let loaded: Vec<String> = self.buffers.keys().cloned().collect();
        self.auto_failed.retain(|(s, _)| loaded.contains(s));
        if rules.is_empty() {
            return;
        }
        for name in loaded {
            for (pattern, target) in &rules {
                if !auto_matches(pattern, &name) {
                    continue;
                }
                let t = target.replace("$stream", &name);
                if self
                    .pushes
                    .iter()
                    .any(|p| p.stream == name && p.target == t)
                    || self.auto_failed.contains(&(name.clone(), t.clone()))
                {
                    continue;
                }
                if self.stream_live(&name) {
                    crate::logs::controller(&format!(
                        "auto push of {name} to {}",
                        connectors::core::url::redact(&t)
                    ));
                    self.push_start(&name, &t, true);
                }
            }
        }
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
        b.child.terminate(Duration::from_secs(3));
        true
    }

    /// Applies the config in `self.cfg` to what runs: listeners that were added, removed or
    /// changed are started and stopped (a stopped listener's connections go on: they are
    /// processes of their own), and buffers of streams that were removed or whose source
    /// changed are stopped. Streams that did not change keep their viewers.
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
        for mut l in std::mem::take(&mut self.listeners) {
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

    /// Sends SIGHUP to the running TLS listeners: each loads its certificate and key again
    /// for the connections that follow.
    pub fn signal_tls_listeners(&self) {
        for l in &self.listeners {
            let tls = config::TLS_LISTENERS
                .iter()
                .any(|(t, _)| *t == l.spec.connector);
            if let (true, Some(c)) = (tls, &l.child) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.pid() as i32),
                    nix::sys::signal::Signal::SIGHUP,
                );
            }
        }
    }

    /// Restarts listeners that died (at most once a second each) and forgets ended buffers.
    pub fn supervise(&mut self) {
        self.reap_sessions();
        for l in &mut self.listeners {
            if let Some(c) = &mut l.child {
                match c.exited() {
                    None => continue,
                    Some((_, st)) => {
                        crate::logs::controller(&format!(
                            "{} listener on port {} exited ({st}); restarting",
                            l.spec.connector, l.spec.port
                        ));
                        l.child = None;
                    }
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
                .stderr(crate::logs::child_stderr());
            if let Some(s) = &l.spec.stream {
                cmd.arg("--stream").arg(s);
            }
            cmd.args(&l.spec.limits);
            let spawned = cmd.spawn();
            match spawned {
                Ok(c) => {
                    let _ = std::fs::write(l.pid_file(&self.rundir), c.id().to_string());
                    l.child = Some(Proc::Child(c))
                }
                Err(e) => crate::logs::controller(&format!("starting {}: {e}", l.spec.connector)),
            }
        }
        let mut gone = Vec::new();
        self.buffers.retain(|name, b| match b.child.exited() {
            Some((ok, st)) => {
                crate::logs::controller(&format!("buffer of {name} exited ({st})"));
                gone.push((
                    name.clone(),
                    b.source.clone(),
                    b.child.pid(),
                    ok,
                    b.child.code(),
                    st,
                ));
                false
            }
            None => true,
        });
        for (name, source, pid, ok, code, st) in gone {
            let input = input_type(&source);
            let ps = self
                .closed
                .per_stream
                .get(&name)
                .copied()
                .unwrap_or_default();
            crate::triggers::fire(
                &self.cfg,
                "STREAM_UNLOAD",
                Some(&name),
                vec![name.clone(), input.into()],
            );
            crate::triggers::fire(
                &self.cfg,
                "STREAM_END",
                Some(&name),
                vec![
                    name.clone(),
                    ps.1.to_string(),
                    ps.2.to_string(),
                    ps.0.to_string(),
                    String::new(),
                    String::new(),
                    ps.3.to_string(),
                ],
            );
            if !ok {
                // The buffer's own reason when it left one (a file source it could not read).
                let why = std::fs::read_to_string(buffer::error_path(&self.rundir, &name))
                    .map(|w| w.trim().to_string())
                    .unwrap_or_else(|_| format!("the buffer exited ({st})"));
                crate::triggers::fire(
                    &self.cfg,
                    "INPUT_ABORT",
                    Some(&name),
                    vec![
                        name.clone(),
                        source,
                        "sluice buffer".into(),
                        pid.to_string(),
                        code,
                        why,
                    ],
                );
            }
        }
        // STREAM_READY once a buffer is live.
        let names: Vec<String> = self
            .buffers
            .iter()
            .filter(|(_, b)| !b.ready)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            if self.stream_stats(&n).is_some_and(|s| s.4) {
                if let Some(b) = self.buffers.get_mut(&n) {
                    b.ready = true;
                    let input = input_type(&b.source);
                    crate::triggers::fire(
                        &self.cfg,
                        "STREAM_READY",
                        Some(&n),
                        vec![n.clone(), input.into()],
                    );
                }
            }
        }
        self.watch_pulls();
        self.watch_streams();
        self.keep_pushes();
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

    /// INPUT_ABORT for each failed attempt of a stream's pull (the upstream refused, sent
    /// garbage, went silent or ended; the pull retries with backoff): read from the pull's
    /// `RUNDIR/NAME.pull.json`, whose `last_error` is the reason.
    fn watch_pulls(&mut self) {
        for (name, b) in self.buffers.iter_mut() {
            if !buffer::is_pull_source(&b.source) {
                continue;
            }
            let Some(v) = read_pull_stats(&self.rundir, name) else {
                continue;
            };
            let state = v.get("state").and_then(|s| s.as_str()).unwrap_or("");
            let Some(seen) = pull_key(&v) else {
                continue;
            };
            if !matches!(state, "reconnecting" | "waiting") || seen == b.pull_abort_seen {
                continue;
            }
            b.pull_abort_seen = seen;
            let why = v
                .get("last_error")
                .and_then(|s| s.as_str())
                .unwrap_or("the pull failed");
            // The URL as the pull shows it: credentials left out of the log.
            let shown = v.get("url").and_then(|s| s.as_str()).unwrap_or("");
            crate::logs::controller(&format!(
                "{name}: input {shown} failed (attempt {}): {why}",
                seen.1
            ));
            crate::triggers::fire(
                &self.cfg,
                "INPUT_ABORT",
                Some(name),
                vec![
                    name.clone(),
                    b.source.clone(),
                    "sluice pull".into(),
                    seen.0.to_string(),
                    state.into(),
                    why.into(),
                ],
            );
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
        let configured = scfg
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        // STREAM_SOURCE's answer (asked before the state was locked) for a buffer started now.
        let source = match self.buffers.get(name) {
            Some(_) => configured,
            None => self.source_rewrites.remove(name).unwrap_or(configured),
        };
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
            if b.child.exited().is_none() {
                return Ok(b.socket.clone());
            }
            self.buffers.remove(name);
        }
        // A new buffer: within the caps, so that `BASE+ANYTHING` cannot start buffers
        // without end.
        let (per_base, total) = config::buffer_limits(&self.cfg);
        if let Err(why) = check_buffer_caps(
            self.buffers.keys().map(String::as_str),
            name,
            per_base,
            total,
        ) {
            crate::logs::controller(&format!("not starting a buffer for {name}: {why}"));
            return Err(("failed", why));
        }
        let source = if source.starts_with("push://") || buffer::is_pull_source(&source) {
            source
        } else {
            config::file_source(&self.cfg, name, &source)?
        };
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
        if scfg.get("dvr_playlist").and_then(|v| v.as_str()) == Some("event") {
            cmd.arg("--event");
        }
        if let Some(t) = scfg.get("rtsp_transport").and_then(|v| v.as_str()) {
            cmd.arg("--pull-transport").arg(t);
        }
        // How long a publisher that dropped may take to come back (ms; 0: none).
        if let Some(ms) = scfg.get("reconnect_grace").and_then(|v| v.as_u64()) {
            cmd.arg("--grace-ms").arg(ms.to_string());
        }
        // A memory budget for stream data (`config.dvr_memory_mib`): the data lives in an
        // unnamed file in `config.dvr_folder` (default RUNDIR/dvr) and what is older than the
        // budget is spilled to disk, so a DVR window can be longer than memory allows.
        if let Some(mib) = self
            .cfg
            .pointer("/config/dvr_memory_mib")
            .and_then(|v| v.as_u64())
        {
            let dir = self
                .cfg
                .pointer("/config/dvr_folder")
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
                .unwrap_or_else(|| self.rundir.join("dvr"));
            cmd.arg("--spill-dir").arg(dir);
            cmd.arg("--memory-mib").arg(mib.to_string());
        }
        // A pull's stats or a failure left by an earlier buffer say nothing about this one.
        let _ = std::fs::remove_file(self.rundir.join(format!("{name}.pull.json")));
        let _ = std::fs::remove_file(buffer::error_path(&self.rundir, name));
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
            .stderr(crate::logs::child_stderr())
            .spawn()
            .map_err(|e| ("failed", format!("starting a buffer: {e}")))?;
        let pid = child.id();
        crate::logs::controller(&format!("started the buffer of {name} (pid {pid})"));
        self.buffers.insert(
            name.to_string(),
            BufferProc {
                child: Proc::Child(child),
                socket: socket.clone(),
                observer: None,
                source: source.clone(),
                ready: false,
                header_version: u64::MAX,
                buffer_state: "",
                progress: (0, Instant::now()),
                pull_abort_seen: (0, 0),
            },
        );
        crate::triggers::fire(
            &self.cfg,
            "STREAM_LOAD",
            Some(name),
            vec![name.to_string(), input_type(&source).into()],
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
        use nix::unistd::{getpgrp, getpid, getppid, Pid};
        // The group is the controller's, or its angel's (which stops too on SIGTERM).
        if getpgrp() == getpid() || getpgrp() == getppid() {
            let _ = killpg(getpgrp(), Signal::SIGTERM);
        }
        let mut procs: Vec<&mut Proc> = self
            .listeners
            .iter_mut()
            .filter_map(|l| l.child.as_mut())
            .chain(self.buffers.values_mut().map(|b| &mut b.child))
            .chain(self.pushes.iter_mut().filter_map(|p| p.child.as_mut()))
            .collect();
        for c in procs.iter_mut() {
            let _ = kill(Pid::from_raw(c.pid() as i32), Signal::SIGTERM);
        }
        for c in procs.iter_mut() {
            c.terminate(Duration::from_secs(3));
        }
        for l in &self.listeners {
            let _ = std::fs::remove_file(l.pid_file(&self.rundir));
        }
    }

    /// Takes over what an earlier controller left running in the run folder (the angel
    /// restarted this one after it died): listeners by their pid files, buffers by their
    /// sockets (the buffer's pid from `SO_PEERCRED`), pushes by the session table (the
    /// target from their command line). Viewers, publishers and pushes go on untouched.
    pub fn adopt(&mut self) {
        let rundir = self.rundir.clone();
        for l in &mut self.listeners {
            let Some(pid) = std::fs::read_to_string(l.pid_file(&rundir))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid_alive(pid) && comm.trim() == format!("sluice-{}", l.spec.connector) {
                crate::logs::controller(&format!(
                    "adopted the {} listener on port {} (pid {pid})",
                    l.spec.connector, l.spec.port
                ));
                l.child = Some(Proc::Adopted(pid));
            }
        }
        let Ok(dir) = std::fs::read_dir(&rundir) else {
            return;
        };
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(enc) = file
                .strip_prefix("stream_")
                .and_then(|f| f.strip_suffix(".sock"))
            else {
                continue;
            };
            let name = connectors::core::url::percent_decode(enc);
            let Ok(attached) = ipc::attach(&entry.path(), Mode::Observe) else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            let Ok(cred) = nix::sys::socket::getsockopt(
                &attached.sock,
                nix::sys::socket::sockopt::PeerCredentials,
            ) else {
                continue;
            };
            let pid = cred.pid() as u32;
            let source = config::find_stream(&self.cfg, &name)
                .and_then(|(_, v)| v.get("source")?.as_str().map(str::to_string))
                .unwrap_or_default();
            crate::logs::controller(&format!("adopted the buffer of {name} (pid {pid})"));
            let pull_abort_seen = pull_attempt(&self.rundir, &name).unwrap_or_default();
            self.buffers.insert(
                name,
                BufferProc {
                    child: Proc::Adopted(pid),
                    socket: entry.path(),
                    observer: Some(attached),
                    source,
                    ready: true,
                    header_version: u64::MAX,
                    buffer_state: "",
                    progress: (0, Instant::now()),
                    pull_abort_seen,
                },
            );
        }
        for e in self.open_sessions() {
            if e.kind != sessions::Kind::Output {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", e.pid)).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let arg = |k: &str| {
                args.iter()
                    .position(|a| a == k)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            if let (Some(stream), Some(target)) = (arg("--stream"), arg("--target")) {
                let id = self.next_push_id;
                self.next_push_id += 1;
                crate::logs::controller(&format!(
                    "adopted push {id} of {stream} to {} (pid {})",
                    connectors::core::url::redact(&target),
                    e.pid
                ));
                let auto = self
                    .cfg
                    .get("autopushes")
                    .and_then(|a| a.as_array())
                    .is_some_and(|a| {
                        a.iter().any(|r| {
                            r.get(0)
                                .and_then(|v| v.as_str())
                                .is_some_and(|p| auto_matches(p, &stream))
                        })
                    });
                self.pushes.push(PushProc {
                    id,
                    stream,
                    target,
                    auto,
                    child: Some(Proc::Adopted(e.pid)),
                    next_start: Instant::now(),
                    backoff: Duration::from_secs(1),
                    attempts: 1,
                    last_error: None,
                });
            }
        }
    }
}

/// A pull's `RUNDIR/NAME.pull.json` (written by `sluice pull` every second and on each
/// change of state).
fn read_pull_stats(rundir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(rundir.join(format!("{name}.pull.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// A pull attempt's identity in its stats: (pid of the pull process, attempt number).
fn pull_key(v: &Value) -> Option<(u64, u64)> {
    Some((v.get("pid")?.as_u64()?, v.get("attempts")?.as_u64()?))
}

/// The attempt a stream's pull stats show now (a file left by an earlier buffer's pull), so
/// that a new buffer does not report it again.
fn pull_attempt(rundir: &Path, name: &str) -> Option<(u64, u64)> {
    pull_key(&read_pull_stats(rundir, name)?)
}

#[cfg(test)]
mod tests {
    use super::check_buffer_caps;

    #[test]
    fn wildcard_and_total_buffers_are_capped() {
        let running: Vec<String> = (0..3)
            .map(|i| format!("live+{i}"))
            .chain(["live".to_string(), "other+x".to_string()])
            .collect();
        let it = || running.iter().map(String::as_str);
        // Three `live+` buffers run (the base's own stream does not count).
        assert!(check_buffer_caps(it(), "live+new", 4, 100).is_ok());
        let e = check_buffer_caps(it(), "live+new", 3, 100).unwrap_err();
        assert!(e.contains("live+") && e.contains('3'), "{e}");
        // Another base and plain names are not held by live's cap.
        assert!(check_buffer_caps(it(), "other+y", 3, 100).is_ok());
        assert!(check_buffer_caps(it(), "plain", 1, 100).is_ok());
        // The total counts every buffer.
        let e = check_buffer_caps(it(), "plain", 1, 5).unwrap_err();
        assert!(e.contains("config.max_buffers"), "{e}");
        assert!(check_buffer_caps(it(), "plain", 1, 6).is_ok());
    }

    #[test]
    fn the_caps_come_from_the_config_with_defaults() {
        use crate::config::buffer_limits;
        use serde_json::json;
        assert_eq!(buffer_limits(&json!({})), (64, 1024));
        let cfg = json!({"config": {"max_wildcard_buffers": 2, "max_buffers": 10}});
        assert_eq!(buffer_limits(&cfg), (2, 10));
        let cfg = json!({"config": {"max_wildcard_buffers": 0, "max_buffers": "x"}});
        assert_eq!(buffer_limits(&cfg), (64, 1024));
    }
}
