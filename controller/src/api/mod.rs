//! The JSON API on `config.controller` (loopback only): `POST /api` or `/api2` with a JSON
//! object as the body, a form body `command=` holding the URL-encoded object, or
//! `?command=` in the URL (MistServer's calls and reply shapes). One request may carry
//! several calls; the reply has one member per call. `GET /metrics` gives the same figures
//! in Prometheus' text format. Every call is documented with a curl example in
//! `docs/API.md`.
//!
//! Which requests are looked at: [`crate::guard`] (the `Host` must name the API, a
//! browser's `Origin` must be the API's own, a `GET` runs read-only calls only). Who may
//! call: [`crate::auth`]. Errors: a request whose calls do not all check out changes
//! nothing and is answered with the fitting status (400 for a malformed request or argument,
//! 404 for a stream or key that does not exist, 413 for a body over [`MAX_BODY`]) and
//! `{"errors":[{"call":C,"error":WHY}]}`.
//!
//! * this file: the HTTP side: serving, reading a request's calls, the guard and auth
//!   stages, and the actions that follow a request.
//! * [`calls`]: the dispatch table ([`calls::CALLS`]) and the calls that read or change the
//!   config, stream keys, pushes and tokens.
//! * [`stats`]: the calls that report sessions and streams (`active_streams`, `clients`,
//!   `totals`, `log`) and `/metrics`.
//! * [`checks`]: the checks of call arguments (stream configs, folders, push targets).

use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::auth::{self, Verdict};
use crate::guard;
use crate::state::State;
use ipc::sessions::Kind;

mod calls;
mod checks;
mod stats;

use calls::{handle, Handled};
use stats::metrics_text;

/// Largest request body accepted, bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Starts the API server on a thread: plain HTTP on `iface:port`, where an `iface` that is
/// not a loopback address (or `localhost`) is replaced by `127.0.0.1` (logged). Each request
/// is answered in turn, the state locked while its calls run. Errors: the address cannot be
/// bound (another server holds the port).
pub fn start(st: Arc<Mutex<State>>, iface: &str, port: u16) -> Result<()> {
    let loopback = iface
        .parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(iface == "localhost");
    let iface = if loopback {
        iface.to_string()
    } else {
        crate::logs::controller(&format!(
            "the API listens on loopback only; ignoring interface {iface}"
        ));
        "127.0.0.1".to_string()
    };
    let server = tiny_http::Server::http((iface.as_str(), port))
        .map_err(|e| anyhow::anyhow!("API: binding {iface}:{port}: {e}"))?;
    let secret = auth::random_hex(16);
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let reply = serve(&st, &secret, &iface, &mut req);
            let mut resp =
                tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
            let headers = [
                Some(("Content-Type", reply.ctype)),
                reply.allow.map(|a| ("Allow", a)),
            ];
            for (k, v) in headers.into_iter().flatten() {
                if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                    resp.add_header(h);
                }
            }
            let _ = req.respond(resp);
        }
    });
    Ok(())
}

/// Most HTTPS connections to the API served at once (each has two threads).
const MAX_TLS_API_CONNECTIONS: usize = 64;

/// Serves the API over HTTPS on `iface:tls_port` as well (`config.controller.tls_port`, with
/// the certificate of `config.controller.cert`/`key` or else `config.tls`): each connection's
/// TLS is terminated on a thread of its own (`connectors::core::tls::terminate`, the handshake
/// within 10 s) and its plaintext is passed to the plain API on `api_port`, so every check
/// of the API applies as it is. The certificate files are read again when they change.
/// Errors: the port cannot be bound or the certificate cannot be loaded.
pub fn start_tls(
    iface: &str,
    tls_port: u16,
    api_port: u16,
    files: connectors::core::tls::CertFiles,
) -> Result<()> {
    let mut cert = connectors::core::tls::Loaded::load(&files)?;
    let listener = std::net::TcpListener::bind((iface, tls_port))
        .map_err(|e| anyhow::anyhow!("API over HTTPS: binding {iface}:{tls_port}: {e}"))?;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    crate::logs::controller(&format!("API over HTTPS on https://{iface}:{tls_port}/api"));
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            if open.load(std::sync::atomic::Ordering::Acquire) >= MAX_TLS_API_CONNECTIONS {
                continue;
            }
            if let Err(e) = cert.refresh(false) {
                crate::logs::controller(&format!(
                    "API over HTTPS: certificate not reloaded: {e:#}"
                ));
            }
            let config = cert.config.clone();
            let open = open.clone();
            open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                if let Ok((plain, pump)) = connectors::core::tls::terminate(sock, config) {
                    proxy(plain, api_port);
                    pump.finish(std::time::Duration::from_secs(5));
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
        }
    });
    Ok(())
}

/// Copies bytes both ways between a TLS connection's plaintext and the plain API.
fn proxy(plain: std::net::TcpStream, api_port: u16) {
    use std::net::Shutdown;
    let Ok(api) = std::net::TcpStream::connect(("127.0.0.1", api_port)) else {
        return;
    };
    let (Ok(mut plain_in), Ok(mut api_out)) = (plain.try_clone(), api.try_clone()) else {
        return;
    };
    let _ = plain.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut plain_in, &mut api_out);
        let _ = api_out.shutdown(Shutdown::Write);
    });
    let (mut api_in, mut plain_out) = (api, plain);
    let _ = std::io::copy(&mut api_in, &mut plain_out);
    let _ = plain_out.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// One answer of the API.
struct Reply {
    status: u16,
    body: String,
    ctype: &'static str,
    /// The `Allow` header of a 405 (RFC 9110 §15.5.6).
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            ctype: "application/json",
            allow: None,
        }
    }
}

/// The values of every header named `name` (case-insensitive).
fn header_values<'a>(req: &'a tiny_http::Request, name: &'static str) -> Vec<&'a str> {
    req.headers()
        .iter()
        .filter(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
        .collect()
}

/// The calls a request carries: `?command=` (URL-encoded JSON) in the URL, else the body:
/// JSON, or a form body with a `command=` field (MistServer's scripts send either).
fn calls_text(query: &str, body: &[u8]) -> String {
    let field = |s: &str| {
        s.split('&')
            .find_map(|kv| kv.strip_prefix("command="))
            .map(url_decode)
    };
    if let Some(c) = field(query) {
        return c;
    }
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    if !trimmed.is_empty() && !trimmed.starts_with('{') {
        if let Some(c) = field(trimmed.trim_end()) {
            return c;
        }
    }
    text.into_owned()
}

/// Decodes a query value: `+` is a space, then `%XX` escapes.
fn url_decode(s: &str) -> String {
    connectors::core::url::percent_decode(&s.replace('+', " "))
}

fn serve(st: &Arc<Mutex<State>>, secret: &str, iface: &str, req: &mut tiny_http::Request) -> Reply {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let peer = req
        .remote_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let err = |status: u16, call: &str, why: &str| {
        Reply::json(
            status,
            json!({"errors": [{"call": call, "error": why}]}).to_string(),
        )
    };
    // Browsers first (`guard`): a foreign Host or Origin gets nothing else, not even a
    // challenge.
    let method = req.method().as_str().to_string();
    let site = {
        // Poisoned only by a panic of another controller thread under the lock; the request
        // is not parsed under it.
        let g = State::lock(st);
        guard::Site::from_config(iface, &g.cfg)
    };
    let checked = guard::check(
        &site,
        &guard::Request {
            method: &method,
            http11: *req.http_version() >= tiny_http::HTTPVersion(1, 1),
            hosts: header_values(req, "Host"),
            origins: header_values(req, "Origin"),
            fetch_site: header_values(req, "Sec-Fetch-Site").first().copied(),
        },
    );
    if let Err(r) = checked {
        crate::logs::controller(&format!("API: refused a request from {peer}: {}", r.why));
        let mut reply = err(r.status, "", &r.why);
        if r.status == 405 {
            reply.allow = Some("GET, POST");
        }
        return reply;
    }
    let bearer = header_values(req, "Authorization")
        .first()
        .and_then(|v| {
            v.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .and_then(|_| v.get(7..))
        })
        .map(|t| t.trim().to_string());
    let mut body = Vec::new();
    let _ = req
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    if body.len() > MAX_BODY {
        return err(413, "", &format!("request body over {MAX_BODY} bytes"));
    }
    let metrics = path == "/metrics";
    if !metrics && path != "/api" && path != "/api2" {
        return err(404, "", "not found; the API is POST /api (and /metrics)");
    }
    let text = calls_text(query, &body);
    let calls = if metrics || text.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(calls)) => calls,
            Ok(_) => return err(400, "", "the request must be a JSON object of calls"),
            Err(e) => return err(400, "", &format!("request does not parse: {e}")),
        }
    };
    // A GET only reads: a page can make a browser send one (an <img>) without an Origin.
    if method == "GET" {
        let writes = guard::writes(&calls);
        if !writes.is_empty() {
            let list: Vec<Value> = writes
                .iter()
                .map(|c| json!({"call": c, "error": "this call changes the server (or shows secrets): send it with POST"}))
                .collect();
            let mut reply = Reply::json(405, json!({"errors": list}).to_string());
            reply.allow = Some("POST");
            return reply;
        }
    }
    let mut g = State::lock(st);
    let verdict = auth::check(
        &mut g.cfg,
        secret,
        peer,
        calls.get("authorize"),
        bearer.as_deref(),
    );
    let authorize = match verdict {
        Verdict::Refused(status, a) => {
            return Reply::json(status, json!({"authorize": a}).to_string());
        }
        Verdict::Allowed(a) => a,
        Verdict::AccountMade(a) => {
            g.save();
            crate::logs::controller("made the first API account");
            Some(a)
        }
    };
    if metrics {
        return Reply {
            status: 200,
            body: metrics_text(&mut g),
            ctype: "text/plain; version=0.0.4",
            allow: None,
        };
    }
    let Handled {
        status,
        body: mut out,
        actions,
    } = handle(&mut g, &calls);
    if let (Some(a), Value::Object(o)) = (authorize, &mut out) {
        o.insert("authorize".into(), a);
    }
    let deferred = run_actions(&mut g, actions, &mut out);
    drop(g);
    if deferred {
        // `shutdown`: answered first, then the controller stops like on SIGTERM.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
    }
    Reply::json(status, out.to_string())
}

/// Work that follows a request whose calls all checked out.
#[derive(Debug)]
enum Action {
    Save,
    Apply(Value),
    StopSessions(String),
    Nuke(String),
    PushStart { stream: String, target: String },
    PushStop(u64),
    StopAuto { pattern: String, target: String },
    Shutdown,
}

/// Runs the actions (adding what they made to the reply `out`); true when the controller
/// must stop.
fn run_actions(st: &mut State, actions: Vec<Action>, out: &mut Value) -> bool {
    let mut stop = false;
    for a in actions {
        match a {
            Action::PushStart {
                stream: s,
                target: t,
            } => {
                let id = st.push_start(&s, &t, false);
                crate::logs::controller(&format!(
                    "push {id} of {s} to {} started",
                    connectors::core::url::redact(&t)
                ));
                out["push_start"] =
                    json!({"id": id, "stream": s, "target": connectors::core::url::redact(&t)});
            }
            Action::PushStop(id) => {
                st.push_stop(id);
            }
            Action::StopAuto { pattern, target } => {
                let ids: Vec<u64> = st
                    .outputs
                    .pushes
                    .iter()
                    .filter(|p| {
                        p.auto
                            && crate::state::auto_matches(&pattern, &p.stream)
                            && p.target == target.replace("$stream", &p.stream)
                    })
                    .map(|p| p.id)
                    .collect();
                for id in ids {
                    st.push_stop(id);
                }
            }
            Action::Save => st.save(),
            Action::Apply(old) => st.apply(&old),
            Action::StopSessions(s) => {
                let n = st.stats.stop_sessions(&s, &[Kind::Viewer]);
                crate::logs::controller(&format!("stop_sessions {s}: {n} viewers stopped"));
            }
            Action::Nuke(s) => {
                st.procs.stop_buffer(&s);
                let n = st.stats.stop_sessions(&s, &[]);
                crate::logs::controller(&format!(
                    "nuke_stream {s}: buffer and {n} sessions stopped"
                ));
            }
            Action::Shutdown => stop = true,
        }
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(url_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(url_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn calls_come_from_the_query_json_or_a_form_body() {
        let q = "command=%7B%22streams%22%3Atrue%7D";
        assert_eq!(calls_text(q, b"ignored"), "{\"streams\":true}");
        assert_eq!(calls_text("", b" {\"log\":true}"), " {\"log\":true}");
        assert_eq!(calls_text("", q.as_bytes()), "{\"streams\":true}");
        assert_eq!(calls_text("", b"x=1&command=%7B%7D\n"), "{}");
        assert_eq!(calls_text("", b"not json"), "not json");
    }
}
