//! The API's calls that report sessions and streams (`active_streams`, `clients`,
//! `totals`, `log`), and `/metrics`: read from the session table, the totals history and
//! the running buffers.

use serde_json::{json, Map, Value};

use super::calls::{bad, Answer, Ctx};
use crate::state::State;
use ipc::sessions::Kind;

/// `active_streams`: `true` gives the live streams' names; a field list gives
/// `{S: [values…]}` with `clients`/`viewers`, `inputs`, `outputs`, `lastms`, `firstms`,
/// `status`, `downbps`, `upbps`.
pub(super) fn call_active_streams(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let st = &mut *ctx.st;
    let mut names: Vec<String> = st.procs.buffers.keys().cloned().collect();
    names.sort();
    let sessions = st.stats.open_sessions();
    let mut live = Vec::new();
    for n in names {
        if let Some(stats) = st.procs.stream_stats(&n) {
            if stats.live {
                live.push((n, stats));
            }
        }
    }
    Ok(Some(match arg {
        Value::Array(fields) => {
            let mut o = Map::new();
            for (n, stats) in live {
                let (first, last) = (stats.first_ms, stats.last_ms);
                let of = |k: Kind| {
                    sessions
                        .iter()
                        .filter(|e| e.stream == n && e.kind == k)
                        .count()
                };
                let rate = |down: bool| -> u64 {
                    sessions
                        .iter()
                        .filter(|e| e.stream == n)
                        .filter_map(|e| st.stats.rates.get(&e.id))
                        .map(|r| if down { r.down_bps } else { r.up_bps })
                        .sum()
                };
                let row: Vec<Value> = fields
                    .iter()
                    .map(|f| match f.as_str().unwrap_or("") {
                        "clients" | "viewers" => json!(of(Kind::Viewer)),
                        "inputs" => json!(of(Kind::Input)),
                        "outputs" => json!(of(Kind::Output)),
                        "lastms" => json!(last),
                        "firstms" => json!(first),
                        "status" => json!("Online"),
                        "downbps" => json!(rate(true)),
                        "upbps" => json!(rate(false)),
                        _ => Value::Null,
                    })
                    .collect();
                o.insert(n, Value::Array(row));
            }
            Value::Object(o)
        }
        _ => Value::Array(live.into_iter().map(|(n, _)| json!(n)).collect()),
    }))
}

const CLIENT_FIELDS: &[&str] = &[
    "host",
    "stream",
    "protocol",
    "conntime",
    "position",
    "down",
    "up",
    "downbps",
    "upbps",
    "pktlost",
    "pktretransmit",
    "sessid",
    "kind",
];

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `clients`: `{streams, protocols, fields}` → `{time, fields, data: [[…], …]}`, one row per
/// open session (viewers, inputs and outputs), current to within half a second.
pub(super) fn call_clients(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let st = &*ctx.st;
    let streams = str_list(arg.get("streams"));
    let protocols = str_list(arg.get("protocols"));
    let mut fields = str_list(arg.get("fields"));
    if fields.is_empty() {
        fields = CLIENT_FIELDS.iter().map(|s| s.to_string()).collect();
    }
    if let Some(f) = fields.iter().find(|f| !CLIENT_FIELDS.contains(&f.as_str())) {
        return Err(bad(format!(
            "unknown field {f:?}; fields: {}",
            CLIENT_FIELDS.join(", ")
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut data = Vec::new();
    for e in st.stats.open_sessions() {
        if !streams.is_empty() && !streams.contains(&e.stream) {
            continue;
        }
        if !protocols.is_empty()
            && !protocols
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&e.protocol))
        {
            continue;
        }
        let rate = st.stats.rates.get(&e.id).copied().unwrap_or_default();
        let row: Vec<Value> = fields
            .iter()
            .map(|f| match f.as_str() {
                "host" => json!(e.host),
                "stream" => json!(e.stream),
                "protocol" => json!(e.protocol),
                "conntime" => json!(now.saturating_sub(e.start_ms) / 1000),
                "position" => Value::Null,
                "down" => json!(e.down),
                "up" => json!(e.up),
                "downbps" => json!(rate.down_bps),
                "upbps" => json!(rate.up_bps),
                "pktlost" => json!(e.lost),
                "pktretransmit" => json!(e.retransmits),
                "sessid" => json!(format!("{:016x}", e.id)),
                "kind" => json!(e.kind.as_str()),
                _ => Value::Null,
            })
            .collect();
        data.push(Value::Array(row));
    }
    Ok(Some(
        json!({"time": now / 1000, "fields": fields, "data": data}),
    ))
}

const TOTAL_FIELDS: &[&str] = &[
    "clients", "inputs", "outputs", "downbps", "upbps", "down", "up",
];

/// `totals`: `{fields, start, end}` (Unix seconds, or negative: seconds before now) →
/// `{start, end, interval: [[n, 1]], fields, data}`, one row per second from the controller's
/// samples (the newest ten minutes).
pub(super) fn call_totals(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let st = &*ctx.st;
    let mut fields = str_list(arg.get("fields"));
    if fields.is_empty() {
        fields = ["clients", "downbps", "upbps"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    if let Some(f) = fields.iter().find(|f| !TOTAL_FIELDS.contains(&f.as_str())) {
        return Err(bad(format!(
            "unknown field {f:?}; fields: {}",
            TOTAL_FIELDS.join(", ")
        )));
    }
    let now = st.stats.history.back().map_or(0, |s| s.time) as i64;
    let at = |k: &str, d: i64| {
        let v = arg.get(k).and_then(|v| v.as_i64()).unwrap_or(d);
        if v <= 0 {
            now + v
        } else {
            v
        }
    };
    let (start, end) = (at("start", -(crate::state::HISTORY as i64)), at("end", 0));
    let rows: Vec<&crate::state::Sample> = st
        .stats
        .history
        .iter()
        .filter(|s| (s.time as i64) >= start && (s.time as i64) <= end)
        .collect();
    let data: Vec<Value> = rows
        .iter()
        .map(|s| {
            Value::Array(
                fields
                    .iter()
                    .map(|f| match f.as_str() {
                        "clients" => json!(s.clients),
                        "inputs" => json!(s.inputs),
                        "outputs" => json!(s.outputs),
                        "downbps" => json!(s.downbps),
                        "upbps" => json!(s.upbps),
                        "down" => json!(s.down),
                        "up" => json!(s.up),
                        _ => Value::Null,
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(Some(json!({
        "start": rows.first().map_or(start, |s| s.time as i64),
        "end": rows.last().map_or(end, |s| s.time as i64),
        "interval": [[data.len(), 1]],
        "fields": fields,
        "data": data
    })))
}

/// `log`: `[[time, LEVEL, line], …]`, oldest first; an object narrows it (`stream`, `level`
/// at least as severe, `binary`, `last` N lines).
pub(super) fn call_log(_: &mut Ctx<'_>, arg: &Value) -> Answer {
    let rank = |l: &str| {
        ["FAIL", "ERROR", "WARN", "INFO"]
            .iter()
            .position(|x| *x == l)
    };
    let want_stream = arg.get("stream").and_then(|v| v.as_str());
    let want_level = arg
        .get("level")
        .and_then(|v| v.as_str())
        .and_then(|l| rank(&l.to_ascii_uppercase()));
    let want_binary = arg.get("binary").and_then(|v| v.as_str());
    let mut rows: Vec<Value> = crate::logs::lines()
        .into_iter()
        .filter(|l| want_stream.is_none_or(|s| l.stream.as_deref() == Some(s)))
        .filter(|l| want_binary.is_none_or(|b| l.binary == b))
        .filter(|l| want_level.is_none_or(|w| rank(l.level).is_some_and(|r| r <= w)))
        .map(|l| json!([l.time, l.level, l.text]))
        .collect();
    if let Some(n) = arg.get("last").and_then(|v| v.as_u64()) {
        let skip = rows.len().saturating_sub(n as usize);
        rows.drain(..skip);
    }
    Ok(Some(Value::Array(rows)))
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics`: the sessions, streams and totals in Prometheus' text exposition format
/// (version 0.0.4).
pub(super) fn metrics_text(st: &mut State) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    let sessions = st.stats.open_sessions();
    let mut out = String::new();
    let mut per: BTreeMap<(String, String, &'static str), u64> = BTreeMap::new();
    let mut bytes: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    // Sessions that never named a stream (a port probe, a 404) count in the totals only.
    for e in sessions.iter().filter(|e| !e.stream.is_empty()) {
        *per.entry((e.stream.clone(), e.protocol.clone(), e.kind.as_str()))
            .or_default() += 1;
        let b = bytes.entry(e.stream.clone()).or_default();
        b.0 += e.down;
        b.1 += e.up;
        b.2 += e.lost;
    }
    for (s, c) in st
        .stats
        .closed
        .per_stream
        .iter()
        .filter(|(s, _)| !s.is_empty())
    {
        let b = bytes.entry(s.clone()).or_default();
        b.0 += c.down;
        b.1 += c.up;
    }
    let _ = writeln!(out, "# HELP sluice_sessions Open sessions by stream, protocol and kind (viewer, input, output).");
    let _ = writeln!(out, "# TYPE sluice_sessions gauge");
    for ((s, p, k), n) in &per {
        let _ = writeln!(
            out,
            "sluice_sessions{{stream=\"{}\",protocol=\"{}\",kind=\"{k}\"}} {n}",
            label(s),
            label(p)
        );
    }
    let _ = writeln!(out, "# HELP sluice_stream_bytes_sent_total Bytes sent to peers, per stream (ended sessions included).");
    let _ = writeln!(out, "# TYPE sluice_stream_bytes_sent_total counter");
    for (s, b) in &bytes {
        let _ = writeln!(
            out,
            "sluice_stream_bytes_sent_total{{stream=\"{}\"}} {}",
            label(s),
            b.0
        );
    }
    let _ = writeln!(out, "# HELP sluice_stream_bytes_received_total Bytes received from peers, per stream (ended sessions included).");
    let _ = writeln!(out, "# TYPE sluice_stream_bytes_received_total counter");
    for (s, b) in &bytes {
        let _ = writeln!(
            out,
            "sluice_stream_bytes_received_total{{stream=\"{}\"}} {}",
            label(s),
            b.1
        );
    }
    let _ = writeln!(out, "# HELP sluice_stream_packets_lost Media packets lost by the open sessions of a stream, where the protocol knows.");
    let _ = writeln!(out, "# TYPE sluice_stream_packets_lost gauge");
    for (s, b) in &bytes {
        let _ = writeln!(
            out,
            "sluice_stream_packets_lost{{stream=\"{}\"}} {}",
            label(s),
            b.2
        );
    }
    let mut names: Vec<String> = st.procs.buffers.keys().cloned().collect();
    names.sort();
    let _ = writeln!(
        out,
        "# HELP sluice_stream_live 1 while a stream's buffer runs and is live."
    );
    let _ = writeln!(out, "# TYPE sluice_stream_live gauge");
    for n in names {
        let live = st.procs.stream_stats(&n).is_some_and(|s| s.live);
        let _ = writeln!(
            out,
            "sluice_stream_live{{stream=\"{}\"}} {}",
            label(&n),
            u8::from(live)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sluice_sessions_ended_total Sessions that ended since the controller started."
    );
    let _ = writeln!(out, "# TYPE sluice_sessions_ended_total counter");
    let _ = writeln!(out, "sluice_sessions_ended_total {}", st.stats.closed.count);
    let last = st.stats.history.back().copied().unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP sluice_bytes_sent_total Bytes sent to peers since the controller started."
    );
    let _ = writeln!(out, "# TYPE sluice_bytes_sent_total counter");
    let _ = writeln!(out, "sluice_bytes_sent_total {}", last.down);
    let _ = writeln!(out, "# HELP sluice_bytes_received_total Bytes received from peers since the controller started.");
    let _ = writeln!(out, "# TYPE sluice_bytes_received_total counter");
    let _ = writeln!(out, "sluice_bytes_received_total {}", last.up);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
