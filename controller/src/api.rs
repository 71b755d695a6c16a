//! The JSON API (`POST /api`, MistServer's calls and reply shapes): one request object may
//! carry several calls and the reply has one member per call. Listens on loopback only.
//!
//! Calls so far: `config`, `streams` (replace all), `addstream`, `deletestream`,
//! `active_streams` (`true` gives the names; a field list such as `["clients","lastms"]` gives
//! `{S:[n, ms]}`), `capabilities`, and `authorize` (`NOACC` while no account is configured).

use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::state::State;

/// Starts the API server on a thread.
pub fn start(st: Arc<Mutex<State>>, iface: &str, port: u16) -> Result<()> {
    let loopback = iface
        .parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(iface == "localhost");
    let iface = if loopback {
        iface.to_string()
    } else {
        eprintln!("[controller] the API listens on loopback only; ignoring interface {iface}");
        "127.0.0.1".to_string()
    };
    let server = tiny_http::Server::http((iface.as_str(), port))
        .map_err(|e| anyhow::anyhow!("API: binding {iface}:{port}: {e}"))?;
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let path = req.url().split('?').next().unwrap_or("").to_string();
            let mut body = String::new();
            let _ = req.as_reader().take(1 << 20).read_to_string(&mut body);
            let (status, out) = if path == "/api" || path == "/api2" {
                match serde_json::from_str::<Value>(if body.trim().is_empty() {
                    "{}"
                } else {
                    &body
                }) {
                    Ok(Value::Object(calls)) => {
                        (200, handle(&mut st.lock().expect("state lock"), &calls))
                    }
                    Ok(_) => (400, json!({"error": "the request must be a JSON object"})),
                    Err(e) => (
                        400,
                        json!({"error": format!("request does not parse: {e}")}),
                    ),
                }
            } else {
                (404, json!({"error": "not found; the API is POST /api"}))
            };
            let resp = tiny_http::Response::from_string(out.to_string())
                .with_status_code(status)
                .with_header(
                    tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                        .expect("static header"),
                );
            let _ = req.respond(resp);
        }
    });
    Ok(())
}

/// Answers every call of one request.
pub fn handle(st: &mut State, calls: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    let mut changed = false;
    for (call, arg) in calls {
        let answer = match call.as_str() {
            "authorize" => {
                if st
                    .cfg
                    .get("account")
                    .and_then(|a| a.as_object())
                    .is_some_and(|a| !a.is_empty())
                {
                    json!({"status": "CHALL", "challenge": "login is not implemented yet"})
                } else {
                    json!({"status": "NOACC"})
                }
            }
            "config" => st.cfg.get("config").cloned().unwrap_or(json!({})),
            "streams" => {
                if let Value::Object(new) = arg {
                    st.cfg["streams"] = Value::Object(new.clone());
                    changed = true;
                }
                st.cfg.get("streams").cloned().unwrap_or(json!({}))
            }
            "addstream" => {
                if let Value::Object(add) = arg {
                    if !st.cfg["streams"].is_object() {
                        st.cfg["streams"] = json!({});
                    }
                    for (k, v) in add {
                        let mut v = v.clone();
                        if v.is_object() {
                            v["name"] = json!(k);
                        }
                        st.cfg["streams"][k] = v;
                    }
                    changed = true;
                }
                st.cfg.get("streams").cloned().unwrap_or(json!({}))
            }
            "deletestream" => {
                let names: Vec<String> = match arg {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    Value::Object(o) => o.keys().cloned().collect(),
                    _ => vec![],
                };
                if let Some(s) = st.cfg.get_mut("streams").and_then(|s| s.as_object_mut()) {
                    for n in &names {
                        changed |= s.remove(n).is_some();
                    }
                }
                st.cfg.get("streams").cloned().unwrap_or(json!({}))
            }
            "active_streams" => active_streams(st, arg),
            "capabilities" => json!({
                "connectors": {"RTMP": {"desc": "RTMP publish and play"},
                               "HTTP": {"desc": "HTTP outputs: HLS (MPEG-TS)"}},
                "inputs": {"Buffer": {"source_match": "push://*"}, "FLV": {"source_match": "/*.flv"}, "TS": {"source_match": ["/*.ts", "/*.m2ts", "/*.mts"]}}
            }),
            _ => continue,
        };
        out.insert(call.clone(), answer);
    }
    if changed {
        st.save();
    }
    Value::Object(out)
}

fn active_streams(st: &mut State, arg: &Value) -> Value {
    let mut names: Vec<String> = st.buffers.keys().cloned().collect();
    names.sort();
    let mut live = Vec::new();
    for n in names {
        if let Some(stats) = st.stream_stats(&n) {
            if stats.4 {
                live.push((n, stats));
            }
        }
    }
    match arg {
        Value::Array(fields) => {
            let mut o = Map::new();
            for (n, (viewers, publishers, first, last, _)) in live {
                let row: Vec<Value> = fields
                    .iter()
                    .map(|f| match f.as_str().unwrap_or("") {
                        "clients" | "viewers" => json!(viewers),
                        "inputs" => json!(publishers),
                        "lastms" => json!(last),
                        "firstms" => json!(first),
                        "status" => json!("Online"),
                        _ => Value::Null,
                    })
                    .collect();
                o.insert(n, Value::Array(row));
            }
            Value::Object(o)
        }
        _ => Value::Array(live.into_iter().map(|(n, _)| json!(n)).collect()),
    }
}
