//! Opening a stream for a connector (`control.rs`): the name, key and publish rules, the
//! buffer caps, then starting the stream's buffer when none runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use buffer::shmem;

use super::processes::{BufferProc, Proc};
use super::watch::PullAttempt;
use super::{exe, input_type, State};
use crate::config;

/// Why a stream could not be opened: the `code` and `reason` of the control socket's error
/// reply (`connectors::core::control`), which connectors turn into their protocol's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRefusal {
    /// `notfound` (no such stream, an invalid name, a missing file), `forbidden` (not from
    /// this address, a file outside the media folders, a stream that takes no pushes),
    /// `unauthorized` (a wrong or missing stream key: the connector asks for credentials)
    /// or `failed` (a buffer cap reached, or the buffer could not be started).
    pub code: &'static str,
    /// Why, in words (the control socket hides file paths from clients before sending it).
    pub reason: String,
}

impl OpenRefusal {
    /// A refusal with `code` (one of [`OpenRefusal::code`]'s) and `reason`.
    pub fn new(code: &'static str, reason: impl Into<String>) -> OpenRefusal {
        OpenRefusal {
            code,
            reason: reason.into(),
        }
    }
}

/// Whether a buffer may be started for stream `name` while the buffers of `running` run:
/// at most `limits.per_base` buffers of `BASE+SUFFIX` streams for one base (the base's own
/// stream not counted), and at most `limits.total` buffers in all. Errors: the reason,
/// naming the limit and its config key (the control socket sends it as a `failed` refusal,
/// which connectors answer with HTTP 503, an RTMP or RTSP refusal).
pub fn check_buffer_caps<'a>(
    running: impl Iterator<Item = &'a str>,
    name: &str,
    limits: config::BufferLimits,
) -> std::result::Result<(), String> {
    let config::BufferLimits { per_base, total } = limits;
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

/// What opening streams remembers between requests (kept while the state is unlocked for
/// the blocking triggers, which `control.rs` asks first).
#[derive(Default)]
pub struct Opening {
    /// Viewers USER_NEW allowed, and when.
    users_ok: HashMap<ViewerKey, Instant>,
    /// Sources STREAM_SOURCE gave for streams about to be started (taken when the buffer
    /// starts).
    pub source_rewrites: HashMap<String, String>,
}

/// A viewer as USER_NEW's answer is remembered for: one per stream, address and connector
/// (an HLS player opens its stream once per request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewerKey {
    /// The stream played (after PLAY_REWRITE).
    pub stream: String,
    /// The viewer's address.
    pub addr: String,
    /// The connector it plays through (`RTMP`, `HTTP`, …).
    pub connector: String,
}

impl Opening {
    /// Whether USER_NEW allowed this viewer in the last minute (older yeses are forgotten).
    pub fn user_ok(&mut self, key: &ViewerKey) -> bool {
        self.users_ok
            .retain(|_, t| t.elapsed() < Duration::from_secs(60));
        self.users_ok.contains_key(key)
    }

    /// Remembers that USER_NEW allowed this viewer.
    pub fn remember_user(&mut self, key: ViewerKey) {
        self.users_ok.insert(key, Instant::now());
    }
}

impl State {
    /// Checks that `name` may be opened (played, or published when `push`) from `addr` with
    /// `cred`, starts its buffer when none runs (STREAM_LOAD fires), and returns the buffer's
    /// socket path (the caller waits for the socket to appear: a buffer started a moment ago
    /// may not listen yet). A stream key published to opens the stream it stands for.
    /// Errors: an [`OpenRefusal`] (see its `code`).
    pub fn open_stream(
        &mut self,
        name: &str,
        push: bool,
        addr: &str,
        cred: config::Credential<'_>,
    ) -> std::result::Result<PathBuf, OpenRefusal> {
        if !config::valid_stream_name(name) {
            return Err(OpenRefusal::new(
                "notfound",
                format!("invalid stream name {name:?}"),
            ));
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
        let Some(scfg) = config::find_stream(&self.cfg, name) else {
            return Err(OpenRefusal::new(
                "notfound",
                format!("no stream {name} is configured"),
            ));
        };
        let configured = scfg
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        // STREAM_SOURCE's answer (asked before the state was locked) for a buffer started now.
        let source = match self.procs.buffers.get(name) {
            Some(_) => configured,
            None => self
                .opening
                .source_rewrites
                .remove(name)
                .unwrap_or(configured),
        };
        if keyed && !source.starts_with("push://") {
            return Err(OpenRefusal::new(
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
                OpenRefusal::new(code, r)
            })?;
        }
        let dvr = scfg.get("DVR").and_then(|v| v.as_u64()).unwrap_or(50_000);
        if let Some(b) = self.procs.buffers.get_mut(name) {
            if b.child.exited().is_none() {
                return Ok(b.socket.clone());
            }
            self.procs.buffers.remove(name);
        }
        // A new buffer: within the caps, so that `BASE+ANYTHING` cannot start buffers
        // without end.
        if let Err(why) = check_buffer_caps(
            self.procs.buffers.keys().map(String::as_str),
            name,
            config::buffer_limits(&self.cfg),
        ) {
            crate::logs::controller(&format!("not starting a buffer for {name}: {why}"));
            return Err(OpenRefusal::new("failed", why));
        }
        let source = if source.starts_with("push://") || buffer::is_pull_source(&source) {
            source
        } else {
            config::file_source(&self.cfg, name, &source)?
        };
        let socket = shmem::socket_path(&self.rundir, name);
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
            .map_err(|e| OpenRefusal::new("failed", format!("starting a buffer: {e}")))?;
        let pid = child.id();
        crate::logs::controller(&format!("started the buffer of {name} (pid {pid})"));
        self.procs.buffers.insert(
            name.to_string(),
            BufferProc {
                child: Proc::Child(child),
                socket: socket.clone(),
                observer: None,
                source: source.clone(),
                ready: false,
                header_version: u64::MAX,
                buffer_state: "",
                packets_seen: 0,
                grew_at: Instant::now(),
                pull_abort_seen: PullAttempt::default(),
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
}

#[cfg(test)]
mod tests {
    use super::check_buffer_caps;
    use crate::config::BufferLimits;

    fn caps(per_base: u64, total: u64) -> BufferLimits {
        BufferLimits { per_base, total }
    }

    #[test]
    fn wildcard_and_total_buffers_are_capped() {
        let running: Vec<String> = (0..3)
            .map(|i| format!("live+{i}"))
            .chain(["live".to_string(), "other+x".to_string()])
            .collect();
        let it = || running.iter().map(String::as_str);
        // Three `live+` buffers run (the base's own stream does not count).
        assert!(check_buffer_caps(it(), "live+new", caps(4, 100)).is_ok());
        let e = check_buffer_caps(it(), "live+new", caps(3, 100)).unwrap_err();
        assert!(e.contains("live+") && e.contains('3'), "{e}");
        // Another base and plain names are not held by live's cap.
        assert!(check_buffer_caps(it(), "other+y", caps(3, 100)).is_ok());
        assert!(check_buffer_caps(it(), "plain", caps(1, 100)).is_ok());
        // The total counts every buffer.
        let e = check_buffer_caps(it(), "plain", caps(1, 5)).unwrap_err();
        assert!(e.contains("config.max_buffers"), "{e}");
        assert!(check_buffer_caps(it(), "plain", caps(1, 6)).is_ok());
    }

    #[test]
    fn the_caps_come_from_the_config_with_defaults() {
        use crate::config::buffer_limits;
        use serde_json::json;
        assert_eq!(buffer_limits(&json!({})), caps(64, 1024));
        let cfg = json!({"config": {"max_wildcard_buffers": 2, "max_buffers": 10}});
        assert_eq!(buffer_limits(&cfg), caps(2, 10));
        let cfg = json!({"config": {"max_wildcard_buffers": 0, "max_buffers": "x"}});
        assert_eq!(buffer_limits(&cfg), caps(64, 1024));
    }
}
