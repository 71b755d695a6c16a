//! The controller's state: the config, the listener processes and the buffer processes, and
//! the rules for opening a stream.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use buffer::ipc::{self, Attached, Mode};
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
        };
        // Listeners start on the controller's first supervise(), once its own sockets are
        // bound: a controller that fails to start leaves no orphans.
        Ok(s)
    }

    /// Saves the config (after an API change), keeping every key it holds.
    pub fn save(&self) {
        if let Err(e) = config::write(&self.config_path, &self.cfg) {
            eprintln!("[controller] saving {}: {e:#}", self.config_path.display());
        }
    }

    /// Restarts listeners that died (at most once a second each) and forgets ended buffers.
    pub fn supervise(&mut self) {
        for l in &mut self.listeners {
            if let Some(c) = &mut l.child {
                match c.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(st)) => {
                        eprintln!(
                            "[controller] {} listener on port {} exited ({st}); restarting",
                            l.spec.connector, l.spec.port
                        );
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
                .stdin(Stdio::null());
            if let Some(s) = &l.spec.stream {
                cmd.arg("--stream").arg(s);
            }
            let spawned = cmd.spawn();
            match spawned {
                Ok(c) => l.child = Some(c),
                Err(e) => eprintln!("[controller] starting {}: {e}", l.spec.connector),
            }
        }
        self.buffers.retain(|name, b| match b.child.try_wait() {
            Ok(Some(st)) => {
                eprintln!("[controller] buffer of {name} exited ({st})");
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
                    eprintln!("[controller] always-on stream {name}: {why}");
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
        let Some((_, scfg)) = config::find_stream(&self.cfg, name) else {
            return Err(("notfound", format!("no stream {name} is configured")));
        };
        let source = scfg
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
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
            .spawn()
            .map_err(|e| ("failed", format!("starting a buffer: {e}")))?;
        let pid = child.id();
        eprintln!("[controller] started the buffer of {name} (pid {pid})");
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
