//! The processes the controller runs: listeners (one per listening protocol entry,
//! restarted when they die) and buffers (one per open stream): starting, reaping, stopping,
//! and adopting the ones an earlier controller left running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use buffer::shmem::{self, Attached, Mode};
use serde_json::Value;

use super::watch::{pull_attempt, PullAttempt};
use super::{exe, input_type, pid_alive, State};
use crate::config::{self, ListenerSpec};

/// How a process ended ([`Proc::exited`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// It succeeded (exit code 0; an adopted process always counts as a success, its exit
    /// status not being ours to see).
    pub ok: bool,
    /// How it ended, for the log: its exit status (`exit status: 1`, `signal: 9 (SIGKILL)`),
    /// or `ended` for an adopted process.
    pub how: String,
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

    /// `None` while it runs; once it ended, whether it succeeded and how it ended (an
    /// adopted process's exit status is not ours to see: it counts as a success).
    pub fn exited(&mut self) -> Option<Exit> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(st)) => Some(Exit {
                    ok: st.success(),
                    how: st.to_string(),
                }),
                _ => None,
            },
            Proc::Adopted(p) => (!pid_alive(*p)).then(|| Exit {
                ok: true,
                how: "ended".to_string(),
            }),
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

    /// SIGTERM, then up to `wait` for it to end (looked at every 20 ms), then SIGKILL (a child
    /// is reaped). Blocks the caller for up to `wait`.
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

/// The processes the controller supervises: one listener per listening protocol entry, one
/// buffer per open stream.
pub struct Processes {
    /// The listeners the config asks for, running or due to start.
    pub(super) listeners: Vec<ListenerProc>,
    /// Running buffers by stream name.
    pub buffers: HashMap<String, BufferProc>,
    /// When each always-on stream was last started (at most every 5 s).
    pub(super) always_tried: HashMap<String, Instant>,
    /// When the buffers were last looked at for LIVE_TRACK_LIST and STREAM_BUFFER (once a
    /// second).
    pub(super) last_watch: Instant,
}

impl Processes {
    /// The listeners `cfg` asks for, none started yet; no buffers.
    pub(super) fn new(cfg: &Value) -> Processes {
        Processes {
            listeners: config::listeners(cfg)
                .into_iter()
                .map(ListenerProc::new)
                .collect(),
            buffers: HashMap::new(),
            always_tried: HashMap::new(),
            last_watch: Instant::now(),
        }
    }

    /// Stops the buffer of `stream` (SIGTERM, SIGKILL after 3 s; it ends its pull), if one
    /// runs. Returns whether one ran.
    pub fn stop_buffer(&mut self, stream: &str) -> bool {
        let Some(mut b) = self.buffers.remove(stream) else {
            return false;
        };
        b.child.terminate(Duration::from_secs(3));
        true
    }

    /// Sends SIGHUP to the running TLS listeners: each loads its certificate and key again
    /// for the connections that follow.
    pub fn signal_tls_listeners(&self) {
        for l in &self.listeners {
            let tls = config::is_tls_listener(&l.spec.connector);
            if let (true, Some(c)) = (tls, &l.child) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.pid() as i32),
                    nix::sys::signal::Signal::SIGHUP,
                );
            }
        }
    }
}

/// A listener process (`sluice connector PROTO`), and when it was last started.
pub(super) struct ListenerProc {
    /// What the config asks for.
    pub(super) spec: ListenerSpec,
    /// Its process, while it runs.
    pub(super) child: Option<Proc>,
    /// When it was last started (restarts are at least 900 ms apart).
    pub(super) started: Instant,
}

impl ListenerProc {
    /// A listener not started yet, due at once.
    pub(super) fn new(spec: ListenerSpec) -> ListenerProc {
        ListenerProc {
            spec,
            child: None,
            started: Instant::now() - Duration::from_secs(10),
        }
    }

    /// Its pid file: `RUNDIR/listener-PROTO-PORT.pid`, for a restarted controller to adopt it.
    pub(super) fn pid_file(&self, rundir: &Path) -> PathBuf {
        rundir.join(format!(
            "listener-{}-{}.pid",
            self.spec.connector, self.spec.port
        ))
    }
}

/// A running buffer.
pub struct BufferProc {
    /// Its `sluice buffer` process.
    pub(super) child: Proc,
    /// Its socket.
    pub socket: PathBuf,
    /// The controller's observer attachment to it (made when first needed), read for
    /// [`Processes::stream_stats`] and the STREAM_BUFFER and LIVE_TRACK_LIST triggers.
    pub(super) observer: Option<Attached>,
    /// The stream's source, as its buffer was started with it.
    pub(super) source: String,
    /// STREAM_READY was fired (the stream went live).
    pub(super) ready: bool,
    /// The header version LIVE_TRACK_LIST last reported.
    pub(super) header_version: u64,
    /// The STREAM_BUFFER state last reported: "", FULL, DRY, RECOVER or EMPTY.
    pub(super) buffer_state: &'static str,
    /// Packets written when last looked at (STREAM_BUFFER's FULL and DRY).
    pub(super) packets_seen: u64,
    /// When `packets_seen` last grew.
    pub(super) grew_at: Instant,
    /// The pull's failed attempt INPUT_ABORT last reported (from `RUNDIR/NAME.pull.json`).
    pub(super) pull_abort_seen: PullAttempt,
}

impl State {
    /// Starts the listeners that do not run (never started, or exited: logged), each at
    /// most once every 900 ms.
    pub(super) fn keep_listeners(&mut self) {
        for l in &mut self.procs.listeners {
            if let Some(c) = &mut l.child {
                match c.exited() {
                    None => continue,
                    Some(exit) => {
                        crate::logs::controller(&format!(
                            "{} listener on port {} exited ({}); restarting",
                            l.spec.connector, l.spec.port, exit.how
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
    }

    /// Forgets the buffers that exited, firing STREAM_UNLOAD and STREAM_END for each (with
    /// the stream's ended sessions added up), and INPUT_ABORT for one that failed.
    pub(super) fn reap_buffers(&mut self) {
        let mut gone = Vec::new();
        self.procs.buffers.retain(|name, b| match b.child.exited() {
            Some(exit) => {
                crate::logs::controller(&format!("buffer of {name} exited ({})", exit.how));
                gone.push((
                    name.clone(),
                    b.source.clone(),
                    b.child.pid(),
                    exit.ok,
                    b.child.code(),
                    exit.how,
                ));
                false
            }
            None => true,
        });
        for (name, source, pid, ok, code, st) in gone {
            let input = input_type(&source);
            let ps = self
                .stats
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
                    ps.down.to_string(),
                    ps.up.to_string(),
                    ps.sessions.to_string(),
                    String::new(),
                    String::new(),
                    ps.viewer_secs.to_string(),
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
    }

    /// Streams marked `always_on` with a source of their own run whether or not anyone
    /// watches: their buffer is started (again) when it does not run, at most every 5 s.
    pub(super) fn keep_always_on(&mut self) {
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
                .procs
                .always_tried
                .get(&name)
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if !self.procs.buffers.contains_key(&name) && due {
                self.procs.always_tried.insert(name.clone(), Instant::now());
                if let Err(r) = self.open_stream(&name, false, "", config::Credential::None) {
                    crate::logs::controller(&format!("always-on stream {name}: {}", r.reason));
                }
            }
        }
    }

    /// Adopts the listeners whose pid files name a live `sluice-PROTO` process.
    pub(super) fn adopt_listeners(&mut self) {
        let rundir = self.rundir.clone();
        for l in &mut self.procs.listeners {
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
    }

    /// Adopts the buffers whose sockets are in the run folder and answer (a socket that does
    /// not is removed). False when the run folder cannot be read.
    pub(super) fn adopt_buffers(&mut self) -> bool {
        let rundir = self.rundir.clone();
        let Ok(dir) = std::fs::read_dir(&rundir) else {
            return false;
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
            let Ok(attached) = shmem::attach(&entry.path(), Mode::Observe) else {
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
                .and_then(|v| v.get("source")?.as_str().map(str::to_string))
                .unwrap_or_default();
            crate::logs::controller(&format!("adopted the buffer of {name} (pid {pid})"));
            let pull_abort_seen = pull_attempt(&self.rundir, &name).unwrap_or_default();
            self.procs.buffers.insert(
                name,
                BufferProc {
                    child: Proc::Adopted(pid),
                    socket: entry.path(),
                    observer: Some(attached),
                    source,
                    ready: true,
                    header_version: u64::MAX,
                    buffer_state: "",
                    packets_seen: 0,
                    grew_at: Instant::now(),
                    pull_abort_seen,
                },
            );
        }
        true
    }
}
