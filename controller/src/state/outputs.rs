//! Pushes out (`sluice push` processes, started by the API or by auto-push rules, restarted
//! with backoff) and the recordings they finished.

use ipc::messages::Report;
use std::collections::{HashSet, VecDeque};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc::sessions;
use serde_json::Value;

use super::processes::Proc;
use super::{exe, State};

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
    /// Its running `sluice push` process, if any.
    pub(super) child: Option<Proc>,
    /// When the process may be started (again).
    pub(super) next_start: Instant,
    /// How long to wait after the next failure (1 s, doubling to 30 s).
    pub(super) backoff: Duration,
    /// Processes started for this push.
    pub attempts: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// Pushes out and the recordings they finished.
pub struct Outputs {
    /// Pushes out, oldest first.
    pub pushes: Vec<PushProc>,
    next_push_id: u64,
    /// Finished recordings, oldest first (at most [`MAX_RECORDINGS`]), as the API's
    /// `recordings` lists them: `{"stream", "path", "format", "bytes", "duration_ms",
    /// "started", "ended", "reason"}` (`started` and `ended` in Unix seconds).
    pub recordings: VecDeque<Value>,
    /// Auto pushes (stream, target) that failed for good (`PUSH_FAILED`): not started again
    /// until the stream unloads.
    auto_failed: HashSet<(String, String)>,
}

impl Outputs {
    /// No pushes, no recordings; the first push is number 1.
    pub(super) fn new() -> Outputs {
        Outputs {
            pushes: Vec::new(),
            next_push_id: 1,
            recordings: VecDeque::new(),
            auto_failed: HashSet::new(),
        }
    }

    /// The id of the next push (from 1 up, never reused while the controller runs).
    fn next_id(&mut self) -> u64 {
        let id = self.next_push_id;
        self.next_push_id += 1;
        id
    }
}

/// Finished recordings the API lists (the oldest are forgotten first).
pub const MAX_RECORDINGS: usize = 1000;

/// Whether an auto-push pattern covers `stream`: the name itself, or a base name that
/// covers its wildcard streams (`live` covers `live+cam1`; so does `live+`).
pub fn auto_matches(pattern: &str, stream: &str) -> bool {
    let base = stream.split_once('+').map_or(stream, |(b, _)| b);
    pattern == stream || pattern == base || pattern.strip_suffix('+') == Some(base)
}

impl State {
    /// Starts a push of `stream` to `target` (`$stream` in it replaced by the stream's name;
    /// `auto`: by an auto-push rule): its process starts at once, and again with backoff after
    /// a failure. Returns the push's id (from 1 up). PUSH_OUT_START fires when its first
    /// process starts.
    pub fn push_start(&mut self, stream: &str, target: &str, auto: bool) -> u64 {
        let id = self.outputs.next_id();
        self.outputs.pushes.push(PushProc {
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

    /// Stops push `id` (SIGTERM, SIGKILL after 2 s), with PUSH_END. Returns false when there is
    /// no push `id`.
    pub fn push_stop(&mut self, id: u64) -> bool {
        let Some(i) = self.outputs.pushes.iter().position(|p| p.id == id) else {
            return false;
        };
        let mut p = self.outputs.pushes.remove(i);
        if let Some(c) = &mut p.child {
            c.terminate(Duration::from_secs(2));
        }
        self.push_ended(&p, "stopped by push_stop");
        true
    }

    /// A report from a push process (`ipc::messages::Report`): a finished file
    /// (RECORDING_END fires with `stream`, `path`, `format`, `bytes`, `seconds` spent
    /// writing, `started` and `ended` (Unix seconds), `first_ms` and `last_ms` (media time,
    /// ms), `reason`; the file joins [`Outputs::recordings`]), or a push that retrying cannot
    /// fix (the push ends, with PUSH_END; an auto push is not started again while its stream
    /// stays loaded).
    pub fn report(&mut self, r: &Report) {
        match r {
            Report::RecordingEnd(d) => {
                crate::triggers::fire(
                    &self.cfg,
                    "RECORDING_END",
                    Some(&d.stream),
                    vec![
                        d.stream.clone(),
                        d.path.clone(),
                        d.format.clone(),
                        d.bytes.to_string(),
                        d.seconds.to_string(),
                        d.started.to_string(),
                        d.ended.to_string(),
                        d.first_ms.to_string(),
                        d.last_ms.to_string(),
                        d.reason.clone(),
                    ],
                );
                if self.outputs.recordings.len() >= MAX_RECORDINGS {
                    self.outputs.recordings.pop_front();
                }
                self.outputs.recordings.push_back(serde_json::json!({
                    "stream": d.stream,
                    "path": d.path,
                    "format": d.format,
                    "bytes": d.bytes,
                    "duration_ms": d.last_ms.saturating_sub(d.first_ms),
                    "started": d.started,
                    "ended": d.ended,
                    "reason": d.reason,
                }));
            }
            Report::PushFailed {
                stream,
                target,
                reason,
            } => {
                if let Some(i) = self
                    .outputs
                    .pushes
                    .iter()
                    .position(|p| &p.stream == stream && &p.target == target)
                {
                    let mut p = self.outputs.pushes.remove(i);
                    if let Some(c) = &mut p.child {
                        c.terminate(Duration::from_secs(2));
                    }
                    if p.auto {
                        self.outputs
                            .auto_failed
                            .insert((p.stream.clone(), p.target.clone()));
                    }
                    self.push_ended(&p, reason);
                }
            }
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
        self.procs
            .stream_stats(stream)
            .is_some_and(|s| s.live && s.publishers > 0)
    }

    /// Starts the push processes that are due, notes the ones that exited (a failure is
    /// retried with backoff, 1 s doubling to 30 s; a push whose stream ended is done), and
    /// starts auto pushes (`autopushes`: `[[PATTERN, TARGET], …]`) for streams that are live.
    pub(super) fn keep_pushes(&mut self) {
        let mut done = Vec::new();
        for i in 0..self.outputs.pushes.len() {
            let p = &mut self.outputs.pushes[i];
            if let Some(c) = &mut p.child {
                match c.exited() {
                    None => continue,
                    Some(exit) => {
                        p.child = None;
                        if exit.ok {
                            done.push((i, "the stream ended".to_string()));
                            continue;
                        }
                        let why = format!("the push process exited ({})", exit.how);
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
            let p = self.outputs.pushes.remove(i);
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
        let loaded: Vec<String> = self.procs.buffers.keys().cloned().collect();
        self.outputs.auto_failed.retain(|(s, _)| loaded.contains(s));
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
                    .outputs
                    .pushes
                    .iter()
                    .any(|p| p.stream == name && p.target == t)
                    || self
                        .outputs
                        .auto_failed
                        .contains(&(name.clone(), t.clone()))
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

    /// Adopts the pushes an earlier controller started: the output sessions of the session
    /// table, their stream and target read from their command line.
    pub(super) fn adopt_pushes(&mut self) {
        for e in self.stats.open_sessions() {
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
                let id = self.outputs.next_id();
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
                self.outputs.pushes.push(PushProc {
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
