//! What running buffers report, looked at from the controller's loop and turned into
//! triggers: STREAM_READY once live, LIVE_TRACK_LIST and STREAM_BUFFER, and INPUT_ABORT for
//! a pull's failed attempts; and a buffer's figures for the API
//! ([`Processes::stream_stats`]).

use std::path::Path;
use std::time::{Duration, Instant};

use buffer::shmem::{self, Mode};
use serde_json::Value;

use super::processes::Processes;
use super::{input_type, State};

/// A running buffer's figures ([`Processes::stream_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Viewers attached to the buffer.
    pub viewers: u32,
    /// Publishers (inputs) attached to it: a publisher or a pull.
    pub publishers: u32,
    /// Timestamp of the oldest packet it holds, ms (0 when none).
    pub first_ms: u64,
    /// Timestamp of the newest packet it holds, ms (0 when none).
    pub last_ms: u64,
    /// It is live (has data and its input has not ended).
    pub live: bool,
}

/// A pull's attempt as its stats show it (`RUNDIR/NAME.pull.json`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullAttempt {
    /// The pull process's pid.
    pub pid: u64,
    /// The attempt's number (from 1).
    pub attempt: u64,
}

impl State {
    /// STREAM_READY for each buffer that went live since it started.
    pub(super) fn mark_ready(&mut self) {
        let names: Vec<String> = self
            .procs
            .buffers
            .iter()
            .filter(|(_, b)| !b.ready)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            if self.procs.stream_stats(&n).is_some_and(|s| s.live) {
                if let Some(b) = self.procs.buffers.get_mut(&n) {
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
    }

    /// LIVE_TRACK_LIST when a stream's tracks change, and STREAM_BUFFER as its data comes
    /// (FULL), stops coming for 2 s while live (DRY), comes back (RECOVER, then FULL), and
    /// ends (EMPTY). Looked at once a second.
    pub(super) fn watch_streams(&mut self) {
        if self.procs.last_watch.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.procs.last_watch = Instant::now();
        let names: Vec<String> = self.procs.buffers.keys().cloned().collect();
        for name in names {
            let Some(b) = self.procs.buffers.get_mut(&name) else {
                continue;
            };
            if b.observer.is_none() {
                b.observer = shmem::attach(&b.socket, Mode::Observe).ok();
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
            let grew = seq > b.packets_seen;
            if grew {
                b.packets_seen = seq;
                b.grew_at = now;
            }
            let next = match (b.buffer_state, ended, grew) {
                (s, true, _) if s != "EMPTY" && !s.is_empty() => Some("EMPTY"),
                (_, true, _) => None,
                ("" | "EMPTY", false, true) => Some("FULL"),
                ("DRY", false, true) => Some("RECOVER"),
                ("RECOVER", false, true) => Some("FULL"),
                ("FULL" | "RECOVER", false, false)
                    if now.duration_since(b.grew_at) >= Duration::from_secs(2) =>
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

    /// INPUT_ABORT for each failed attempt of a stream's pull (the upstream refused, sent
    /// garbage, went silent or ended; the pull retries with backoff): read from the pull's
    /// `RUNDIR/NAME.pull.json`, whose `last_error` is the reason.
    pub(super) fn watch_pulls(&mut self) {
        for (name, b) in self.procs.buffers.iter_mut() {
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
                seen.attempt
            ));
            crate::triggers::fire(
                &self.cfg,
                "INPUT_ABORT",
                Some(name),
                vec![
                    name.clone(),
                    b.source.clone(),
                    "sluice pull".into(),
                    seen.pid.to_string(),
                    state.into(),
                    why.into(),
                ],
            );
        }
    }
}

impl Processes {
    /// The figures of the running buffer of `name`, from its shared memory (the buffer is
    /// attached as an observer the first time). `None` when no buffer runs for `name` or it
    /// cannot be read (yet).
    pub fn stream_stats(&mut self, name: &str) -> Option<StreamStats> {
        let b = self.buffers.get_mut(name)?;
        if b.observer.is_none() {
            b.observer = shmem::attach(&b.socket, Mode::Observe).ok();
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
        Some(StreamStats {
            viewers: m.viewers(),
            publishers: m.publishers(),
            first_ms: first,
            last_ms: last,
            live: m.state() == dtsc::shm::STATE_LIVE,
        })
    }
}

/// A pull's `RUNDIR/NAME.pull.json` (written by `sluice pull` every second and on each
/// change of state).
fn read_pull_stats(rundir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(rundir.join(format!("{name}.pull.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// A pull attempt's identity in its stats (`pid` and `attempts`).
fn pull_key(v: &Value) -> Option<PullAttempt> {
    Some(PullAttempt {
        pid: v.get("pid")?.as_u64()?,
        attempt: v.get("attempts")?.as_u64()?,
    })
}

/// The attempt a stream's pull stats show now (a file left by an earlier buffer's pull), so
/// that a new buffer does not report it again.
pub(super) fn pull_attempt(rundir: &Path, name: &str) -> Option<PullAttempt> {
    pull_key(&read_pull_stats(rundir, name)?)
}
