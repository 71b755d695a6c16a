//! Session stats: the session table every connection process writes its slot of, what the
//! sessions that ended added up to, one sample a second of the totals, and per-session rates;
//! with the CONN_* and USER_END triggers and LIVE_BANDWIDTH.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use ipc::sessions;

use serde_json::Value;

use super::{pid_alive, unix_ms};

/// Session stats, from the session table every connection process (viewer, publisher,
/// pull, push) writes its own slot of.
pub struct Stats {
    /// The session table (`ipc::sessions`); `None` when it could not be opened (then
    /// there are no session stats).
    pub table: Option<sessions::Table>,
    /// Sessions that ended, added up.
    pub closed: Closed,
    /// One sample a second of the totals, the newest [`HISTORY`] seconds.
    pub history: VecDeque<Sample>,
    /// Per open session id: its byte rates over the last second.
    pub rates: HashMap<u64, Rate>,
    last_sample: Instant,
    /// Session ids already announced with CONN_OPEN (and CONN_PLAY).
    announced: HashMap<u64, bool>,
    /// When LIVE_BANDWIDTH last fired per stream.
    bandwidth_fired: HashMap<String, Instant>,
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
    /// Per stream name (`""` for sessions that never named one).
    pub per_stream: HashMap<String, StreamTotals>,
}

/// What the ended sessions of one stream added up to (STREAM_END's payload).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamTotals {
    /// Sessions ended (viewers, inputs and outputs).
    pub sessions: u64,
    /// Bytes sent to peers.
    pub down: u64,
    /// Bytes received from peers.
    pub up: u64,
    /// Seconds its viewers watched, added up.
    pub viewer_secs: u64,
}

/// One open session's byte rates: its counters at the last sample, and the rates since the
/// sample before.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// When the counters were sampled, Unix ms (before the first sample: the session's start).
    pub at_ms: u64,
    /// Bytes sent to the peer by then.
    pub down: u64,
    /// Bytes received from the peer by then.
    pub up: u64,
    /// Bytes per second sent since the sample before.
    pub down_bps: u64,
    /// Bytes per second received since the sample before.
    pub up_bps: u64,
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

impl Stats {
    /// Opens the session table in `rundir` (`RUNDIR/sessions.shm`), keeping an existing one:
    /// sessions that outlived an earlier controller are still counted. A table that cannot
    /// be opened is logged, and leaves the stats empty.
    pub(super) fn new(rundir: &Path) -> Stats {
        let table = match sessions::Table::open(&sessions::table_path(rundir), true) {
            Ok(t) => Some(t),
            Err(e) => {
                crate::logs::controller(&format!("session table: {e:#}; no session stats"));
                None
            }
        };
        Stats {
            table,
            closed: Closed::default(),
            history: VecDeque::new(),
            rates: HashMap::new(),
            last_sample: Instant::now(),
            announced: HashMap::new(),
            bandwidth_fired: HashMap::new(),
        }
    }

    /// The sessions open now (their processes alive), in table order; none without a table.
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
    /// second, a totals sample and per-session rates. Fires the triggers of `cfg`: CONN_OPEN
    /// and CONN_PLAY for new sessions, CONN_CLOSE and USER_END for ended ones, and
    /// LIVE_BANDWIDTH.
    pub fn reap(&mut self, cfg: &Value) {
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
                        self.announce(cfg, &e);
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
                crate::triggers::fire(cfg, "CONN_CLOSE", Some(&e.stream), conn);
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
                    crate::triggers::fire(cfg, "USER_END", Some(&e.stream), end);
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
            ps.sessions += 1;
            ps.down += e.down;
            ps.up += e.up;
            if e.kind == sessions::Kind::Viewer {
                ps.viewer_secs += secs;
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
            let r = self.rates.entry(e.id).or_insert(Rate {
                at_ms: e.start_ms,
                ..Rate::default()
            });
            let dt = now.saturating_sub(r.at_ms).max(1);
            let (dbps, ubps) = (
                e.down.saturating_sub(r.down) * 1000 / dt,
                e.up.saturating_sub(r.up) * 1000 / dt,
            );
            *r = Rate {
                at_ms: now,
                down: e.down,
                up: e.up,
                down_bps: dbps,
                up_bps: ubps,
            };
            s.downbps += dbps;
            s.upbps += ubps;
        }
        self.rates.retain(|id, _| seen.contains(id));
        // LIVE_BANDWIDTH: a stream whose inputs bring more bytes per second than a handler's
        // `params` (bytes/s), at most every 5 s.
        let mut input_rate: HashMap<String, u64> = HashMap::new();
        for e in open.iter().filter(|e| e.kind == sessions::Kind::Input) {
            *input_rate.entry(e.stream.clone()).or_default() +=
                self.rates.get(&e.id).map_or(0, |r| r.up_bps);
        }
        for (stream, rate) in input_rate {
            let limit = cfg
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
                    cfg,
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
    fn announce(&mut self, cfg: &Value, e: &sessions::Entry) {
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
                crate::triggers::fire(cfg, "CONN_OPEN", Some(&e.stream), payload());
                if played {
                    crate::triggers::fire(cfg, "CONN_PLAY", Some(&e.stream), payload());
                }
                self.announced.insert(e.id, played);
            }
            Some(false) if played => {
                crate::triggers::fire(cfg, "CONN_PLAY", Some(&e.stream), payload());
                self.announced.insert(e.id, true);
            }
            _ => {}
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
}
