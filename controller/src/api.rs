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

use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::auth::{self, Verdict};
use crate::config;
use crate::guard;
use crate::state::State;
use buffer::sessions::Kind;

/// Largest request body accepted, bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Starts the API server on a thread.
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
        let g = st.lock().expect("state lock");
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
    let mut g = st.lock().expect("state lock");
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

fn names_of(arg: &Value) -> Vec<String> {
    match arg {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Value::Object(o) => o.keys().cloned().collect(),
        _ => vec![],
    }
}

/// With `config.media_folders` set, a file or folder source must lie inside one of them
/// (after resolving `..` and symbolic links; a path that does not exist yet is checked as
/// written, and may not use `..`).
fn check_media_folder(cfg: &Value, name: &str, v: &Value) -> std::result::Result<(), String> {
    let Some(folders) = config::media_folders(cfg) else {
        return Ok(());
    };
    let src = v.get("source").and_then(|s| s.as_str()).unwrap_or("");
    if src.contains("://") {
        return Ok(());
    }
    let path = std::path::Path::new(src);
    let inside = match std::fs::canonicalize(path) {
        Ok(real) => folders.iter().any(|f| real.starts_with(f)),
        Err(_) => {
            !path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
                && folders.iter().any(|f| path.starts_with(f))
        }
    };
    if inside {
        Ok(())
    } else {
        Err(format!(
            "stream {name}: source {src:?} is outside the media folders (config.media_folders)"
        ))
    }
}

/// Checks one stream's config: a valid name and a source Sluice can use.
fn check_stream(name: &str, v: &Value) -> std::result::Result<(), String> {
    if !config::valid_stream_name(name) {
        return Err(format!(
            "invalid stream name {name:?}: 1 to 100 of A-Z a-z 0-9 _ + . -, no '..', not starting with '.'"
        ));
    }
    let Some(o) = v.as_object() else {
        return Err(format!("stream {name}: the config must be an object"));
    };
    let Some(src) = o.get("source").and_then(|s| s.as_str()) else {
        return Err(format!("stream {name}: \"source\" (a string) is required"));
    };
    if src.chars().any(|c| c.is_control()) {
        return Err(format!("stream {name}: the source has control characters"));
    }
    let known = src.starts_with("push://")
        || src.starts_with("rtsp://")
        || connectors::ingest::stream_pull::kind_of(src).is_some()
        || src.starts_with('/')
        || !src.contains("://");
    if !known {
        return Err(format!(
            "stream {name}: source {src:?}: not one Sluice reads (push://, rtsp://, rtmp://HOST/APP/S, tsudp://HOST:PORT, http(s)://…/S.ts, …/S.flv or …/S.m3u8, or a file path)"
        ));
    }
    if let Some(d) = o.get("DVR") {
        if !d.is_u64() {
            return Err(format!("stream {name}: DVR must be a whole number of ms"));
        }
    }
    Ok(())
}

/// Checks `config.controller.hostnames`: a list of host names or addresses without ports
/// (the names, besides loopback's, that a request's `Host` may give; [`guard`]).
fn check_hostnames(v: &Value) -> std::result::Result<(), String> {
    let Some(list) = v.as_array() else {
        return Err("controller.hostnames is a list of host names".into());
    };
    for h in list {
        let ok = h
            .as_str()
            .and_then(guard::split_host)
            .is_some_and(|h| h.port.is_none());
        if !ok {
            return Err(format!(
                "controller.hostnames: {h} is not a host name or address (without a port)"
            ));
        }
    }
    Ok(())
}

/// The config object for the `config` call: what it shows (tokens' hashes left out).
fn shown_config(cfg: &Value) -> Value {
    let mut c = cfg.get("config").cloned().unwrap_or(json!({}));
    if let Some(o) = c.as_object_mut() {
        o.remove("api_tokens");
    }
    c
}

/// Why one call of a request failed: the HTTP status it asks for and the reason. The
/// request's status is the highest of its calls' (400 a malformed argument, 403 a path
/// outside the allowed folders, 404 a stream, key, token, push or rule that does not
/// exist).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CallError {
    status: u16,
    why: String,
}

impl CallError {
    fn new(status: u16, why: impl Into<String>) -> CallError {
        CallError {
            status,
            why: why.into(),
        }
    }
}

/// A 400: the argument is malformed or not allowed.
fn bad(why: impl Into<String>) -> CallError {
    CallError::new(400, why)
}

/// A 404: what the argument names does not exist.
fn not_found(why: impl Into<String>) -> CallError {
    CallError::new(404, why)
}

/// What the calls of one request share while they run.
struct Ctx<'a> {
    st: &'a mut State,
    /// The config as the calls so far left it: it replaces the state's only when every call
    /// of the request checked out.
    cfg: Value,
    /// What follows once every call checked out, in the calls' order.
    actions: Vec<Action>,
    /// A call changed the config: it is saved.
    changed: bool,
    /// A call changed what may have to run differently: the config is applied.
    apply: bool,
}

/// What a call answers: its member of the reply, `None` for no member (`authorize`, which
/// the authorization stage answers).
type Answer = std::result::Result<Option<Value>, CallError>;

/// One API call: what it does with its argument.
type Call = fn(&mut Ctx<'_>, &Value) -> Answer;

/// The API's calls (MistServer's names), in the order `capabilities` lists them.
const CALLS: &[(&str, Call)] = &[
    ("config", call_config),
    ("streams", call_streams),
    ("addstream", call_addstream),
    ("deletestream", call_deletestream),
    ("capabilities", call_capabilities),
    ("active_streams", call_active_streams),
    ("clients", call_clients),
    ("totals", call_totals),
    ("log", call_log),
    ("streamkey_add", call_streamkey_add),
    ("streamkey_del", call_streamkey_del),
    ("streamkeys", call_streamkeys),
    ("stop_sessions", call_stop_sessions),
    ("nuke_stream", call_nuke_stream),
    ("config_backup", call_config_backup),
    ("config_restore", call_config_restore),
    ("config_reload", call_config_reload),
    ("shutdown", call_shutdown),
    ("push_start", call_push_start),
    ("push_stop", call_push_stop),
    ("push_list", call_push_list),
    ("push_auto_add", call_push_auto_add),
    ("recordings", call_recordings),
    ("push_auto_remove", call_push_auto_remove),
    ("push_auto_list", call_push_auto_list),
    ("api_tokens", call_api_tokens),
    ("api_token_add", call_api_token_add),
    ("api_token_del", call_api_token_del),
    ("authorize", call_authorize),
];

/// The answer to one request's calls.
struct Handled {
    /// 200, or the highest status of the calls that failed.
    status: u16,
    /// The reply: a member per call, or `{"errors": [{"call", "error"}, …]}`.
    body: Value,
    /// What follows (nothing when a call failed).
    actions: Vec<Action>,
}

/// Answers every call of one request, in the request's order. When any call fails, the
/// config is left as it was, no action runs, and the reply lists the errors.
fn handle(st: &mut State, calls: &Map<String, Value>) -> Handled {
    let before = st.cfg.clone();
    let mut ctx = Ctx {
        cfg: st.cfg.clone(),
        st,
        actions: Vec::new(),
        changed: false,
        apply: false,
    };
    let mut out = Map::new();
    let mut errors = Vec::new();
    let mut status = 0;
    for (call, arg) in calls {
        let answer = match CALLS.iter().find(|(name, _)| name == call) {
            Some((_, run)) => run(&mut ctx, arg),
            None => Err(bad("unknown call (docs/API.md lists the calls)")),
        };
        match answer {
            Ok(Some(v)) => {
                out.insert(call.clone(), v);
            }
            Ok(None) => {}
            Err(e) => {
                status = status.max(e.status);
                errors.push(json!({"call": call, "error": e.why}));
            }
        }
    }
    if !errors.is_empty() {
        return Handled {
            status,
            body: json!({ "errors": errors }),
            actions: Vec::new(),
        };
    }
    let Ctx {
        st,
        cfg,
        actions,
        changed,
        apply,
    } = ctx;
    // MistServer answers stream changes with the streams.
    if calls.contains_key("addstream") || calls.contains_key("deletestream") {
        out.insert(
            "streams".into(),
            cfg.get("streams").cloned().unwrap_or(json!({})),
        );
    }
    st.cfg = cfg;
    let mut all = Vec::new();
    if changed {
        all.push(Action::Save);
    }
    if apply {
        all.push(Action::Apply(before));
    }
    all.extend(actions);
    Handled {
        status: 200,
        body: Value::Object(out),
        actions: all,
    }
}

/// `authorize`: answered by the authorization stage ([`crate::auth`]), not here.
fn call_authorize(_: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(None)
}

/// `config`: `true` (or `null`) reads `config`; an object sets the keys it gives (checked:
/// `protocols`, `controller`, `triggers`, `log_level`, the buffer caps; `api_tokens` only
/// through its own calls). Answers the config as it is then, tokens' hashes left out.
fn call_config(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let cfg = &mut ctx.cfg;
    if let Value::Object(set) = arg {
        for (k, v) in set {
            check_config_key(k, v)?;
            if !cfg.get("config").is_some_and(|c| c.is_object()) {
                cfg["config"] = json!({});
            }
            cfg["config"][k] = v.clone();
        }
        ctx.changed = true;
        ctx.apply = true;
    } else if !matches!(arg, Value::Bool(_) | Value::Null) {
        return Err(bad("give true to read, or an object of settings to change"));
    }
    Ok(Some(shown_config(&ctx.cfg)))
}

/// Checks one key of a `config` change.
fn check_config_key(k: &str, v: &Value) -> std::result::Result<(), CallError> {
    match k {
        "api_tokens" => {
            return Err(bad(
                "api_tokens are changed with api_token_add and api_token_del",
            ))
        }
        "protocols" => {
            let ok = v.as_array().is_some_and(|a| {
                a.iter()
                    .all(|p| p.get("connector").and_then(|c| c.as_str()).is_some())
            });
            if !ok {
                return Err(bad(
                    "protocols must be a list of objects with a \"connector\"",
                ));
            }
        }
        "controller" | "triggers" if !v.is_object() => {
            return Err(bad(format!("{k} must be an object")))
        }
        "controller" => {
            if let Some(h) = v.get("hostnames") {
                check_hostnames(h).map_err(bad)?;
            }
        }
        "max_wildcard_buffers" | "max_buffers" if v.as_u64().is_none_or(|n| n == 0) => {
            return Err(bad(format!("{k} is a whole number of buffers, at least 1")))
        }
        "triggers" => {
            for (name, list) in v.as_object().into_iter().flatten() {
                if !crate::triggers::NAMES.contains(&name.as_str()) {
                    return Err(bad(format!(
                        "unknown trigger {name:?}; triggers: {}",
                        crate::triggers::NAMES.join(", ")
                    )));
                }
                let ok = list.as_array().is_some_and(|a| {
                    a.iter().all(|h| {
                        h.get("handler")
                            .and_then(|x| x.as_str())
                            .is_some_and(|x| !x.is_empty())
                    })
                });
                if !ok {
                    return Err(bad(format!("trigger {name}: a list of {{\"handler\": URL or path, \"sync\": bool, \"streams\": [...], \"default\": ...}}")));
                }
            }
        }
        "log_level" => {
            let ok = v.as_str().is_some_and(|l| {
                ["FAIL", "ERROR", "WARN", "INFO"].contains(&l.to_ascii_uppercase().as_str())
            });
            if !ok {
                return Err(bad("log_level is FAIL, ERROR, WARN or INFO"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `streams`: `true` (or `null`) reads the streams; an object replaces them all
/// (MistServer's). Answers the streams.
fn call_streams(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    if matches!(arg, Value::Bool(_) | Value::Null) {
        return Ok(Some(ctx.cfg.get("streams").cloned().unwrap_or(json!({}))));
    }
    set_streams(ctx, arg, true)
}

/// `addstream`: `{NAME: {"source": …}, …}` adds or replaces those streams. Answers the
/// streams.
fn call_addstream(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    set_streams(ctx, arg, false)
}

/// `streams` with an object, or `addstream`: checks every stream given (name, source,
/// media folders, recording target), then sets them (`replace`: instead of all the others).
fn set_streams(ctx: &mut Ctx<'_>, arg: &Value, replace: bool) -> Answer {
    let Value::Object(given) = arg else {
        return Err(bad("an object of streams, {NAME: {\"source\": …}}"));
    };
    let cfg = &mut ctx.cfg;
    for (k, v) in given {
        check_stream(k, v).map_err(bad)?;
        check_media_folder(cfg, k, v).map_err(|e| CallError::new(403, e))?;
        if let Some(r) = v.get("record") {
            let r = r
                .as_str()
                .ok_or_else(|| bad(format!("stream {k}: record is a recording target path")))?;
            check_record_target(cfg, r)
                .map_err(|e| CallError::new(e.status, format!("stream {k}: {}", e.why)))?;
        }
    }
    if replace || !cfg["streams"].is_object() {
        cfg["streams"] = json!({});
    }
    for (k, v) in given {
        let mut v = v.clone();
        v["name"] = json!(k);
        cfg["streams"][k] = v;
    }
    ctx.changed = true;
    ctx.apply = true;
    Ok(Some(ctx.cfg.get("streams").cloned().unwrap_or(json!({}))))
}

/// `deletestream`: a name, a list or an object of names (404 for one not configured).
/// Answers the streams left.
fn call_deletestream(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let names = names_of(arg);
    if names.is_empty() {
        return Err(bad("name the streams: a name, a list, or an object"));
    }
    let streams = ctx.cfg.get_mut("streams").and_then(|s| s.as_object_mut());
    let Some(streams) = streams else {
        return Err(not_found("no streams are configured"));
    };
    for n in &names {
        if streams.remove(n).is_none() {
            return Err(not_found(format!("no stream {n} is configured")));
        }
    }
    ctx.changed = true;
    ctx.apply = true;
    Ok(Some(ctx.cfg.get("streams").cloned().unwrap_or(json!({}))))
}

/// `capabilities`: the triggers, connectors, inputs and calls this server has.
fn call_capabilities(_: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(capabilities()))
}

/// `streamkeys`: `{KEY: STREAM, …}`.
fn call_streamkeys(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(
        ctx.cfg.get("streamkeys").cloned().unwrap_or(json!({})),
    ))
}

/// `streamkey_add`: `{KEY: STREAM, …}` (a key has a stream name's characters; its stream
/// must be configured). Answers the keys.
fn call_streamkey_add(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let Value::Object(add) = arg else {
        return Err(bad("an object {KEY: STREAM}"));
    };
    let cfg = &mut ctx.cfg;
    for (k, v) in add {
        if !config::valid_stream_name(k) {
            return Err(bad(format!(
                "invalid key {k:?}: the same characters as a stream name"
            )));
        }
        let Some(s) = v.as_str() else {
            return Err(bad(format!("key {k}: the stream must be a string")));
        };
        if config::find_stream(cfg, s).is_none() {
            return Err(not_found(format!("key {k}: no stream {s} is configured")));
        }
    }
    if !cfg["streamkeys"].is_object() {
        cfg["streamkeys"] = json!({});
    }
    for (k, v) in add {
        cfg["streamkeys"][k] = v.clone();
    }
    ctx.changed = true;
    Ok(Some(ctx.cfg["streamkeys"].clone()))
}

/// `streamkey_del`: a key or a list of keys (404 for one that does not exist). Answers the
/// keys left.
fn call_streamkey_del(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let keys = names_of(arg);
    if keys.is_empty() {
        return Err(bad("name the keys: a key, or a list"));
    }
    for k in &keys {
        let gone = ctx
            .cfg
            .get_mut("streamkeys")
            .and_then(|s| s.as_object_mut())
            .and_then(|s| s.remove(k));
        if gone.is_none() {
            return Err(not_found(format!("no stream key {k}")));
        }
    }
    ctx.changed = true;
    Ok(Some(
        ctx.cfg.get("streamkeys").cloned().unwrap_or(json!({})),
    ))
}

/// `stop_sessions`: a stream name or a list; their viewers are stopped (after the request).
fn call_stop_sessions(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    stop_streams(ctx, arg, Action::StopSessions)
}

/// `nuke_stream`: a stream name or a list; their buffers and every session are stopped
/// (after the request).
fn call_nuke_stream(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    stop_streams(ctx, arg, Action::Nuke)
}

/// `stop_sessions` and `nuke_stream`: checks the names, then queues `action` for each.
fn stop_streams(ctx: &mut Ctx<'_>, arg: &Value, action: fn(String) -> Action) -> Answer {
    let names = names_of(arg);
    if names.is_empty() {
        return Err(bad("name the streams: a name or a list"));
    }
    for n in names {
        if !config::valid_stream_name(&n) {
            return Err(bad(format!("invalid stream name {n:?}")));
        }
        ctx.actions.push(action(n));
    }
    Ok(Some(json!("OK")))
}

/// `config_backup`: the whole config document (password and token hashes included).
fn call_config_backup(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(ctx.cfg.clone()))
}

/// `config_restore`: a whole config document, as `config_backup` gives it (it needs a
/// `config` object; its streams are checked). Replaces the config.
fn call_config_restore(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let Value::Object(o) = arg else {
        return Err(bad("the whole config document, as config_backup gives it"));
    };
    if !o.get("config").is_some_and(|c| c.is_object()) {
        return Err(bad("the document has no \"config\" object"));
    }
    if let Some(s) = o.get("streams") {
        let Some(s) = s.as_object() else {
            return Err(bad("\"streams\" must be an object"));
        };
        for (k, v) in s {
            check_stream(k, v).map_err(bad)?;
        }
    }
    ctx.cfg = arg.clone();
    ctx.changed = true;
    ctx.apply = true;
    Ok(Some(json!("OK")))
}

/// `config_reload`: reads the config file again (400 when it does not parse) and applies
/// it.
fn call_config_reload(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    let path = ctx.st.config_path().to_path_buf();
    let v = config::load_or_create(&path).map_err(|e| bad(format!("{e:#}")))?;
    ctx.cfg = v;
    ctx.apply = true;
    Ok(Some(json!("OK")))
}

/// `api_tokens`: the tokens' names.
fn call_api_tokens(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(json!(auth_tokens(&ctx.cfg))))
}

/// `api_token_add`: a new token's name (1 to 64 bytes, not taken). Answers
/// `{"name", "token"}`: the token is shown this once; only its SHA-256 is kept.
fn call_api_token_add(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let Some(name) = arg.as_str().filter(|n| !n.is_empty() && n.len() <= 64) else {
        return Err(bad("give the token a name (a string of up to 64 bytes)"));
    };
    let cfg = &mut ctx.cfg;
    if auth_tokens(cfg).iter().any(|n| n == name) {
        return Err(bad(format!("a token named {name} exists")));
    }
    let token = auth::random_hex(24);
    if !cfg.get("config").is_some_and(|c| c.is_object()) {
        cfg["config"] = json!({});
    }
    if !cfg["config"]["api_tokens"].is_array() {
        cfg["config"]["api_tokens"] = json!([]);
    }
    if let Some(a) = cfg["config"]["api_tokens"].as_array_mut() {
        a.push(json!({"name": name, "sha256": auth::sha256_hex(token.as_bytes())}));
    }
    ctx.changed = true;
    Ok(Some(json!({"name": name, "token": token})))
}

/// `api_token_del`: a token's name (404 when there is none). Answers the names left.
fn call_api_token_del(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let Some(name) = arg.as_str() else {
        return Err(bad("the token's name"));
    };
    let list = ctx
        .cfg
        .pointer_mut("/config/api_tokens")
        .and_then(|a| a.as_array_mut());
    let Some(list) = list else {
        return Err(not_found(format!("no token named {name}")));
    };
    let n = list.len();
    list.retain(|t| t.get("name").and_then(|v| v.as_str()) != Some(name));
    if list.len() == n {
        return Err(not_found(format!("no token named {name}")));
    }
    ctx.changed = true;
    Ok(Some(json!(auth_tokens(&ctx.cfg))))
}

/// `shutdown`: answered, then the controller stops as on SIGTERM.
fn call_shutdown(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    ctx.actions.push(Action::Shutdown);
    Ok(Some(json!("OK")))
}

/// `push_start`: `[STREAM, TARGET]` or `{"stream", "target"}` (a configured stream; a
/// target Sluice pushes to, or a recording path). The push starts after the request, and
/// `push_start` is then `{"id", "stream", "target"}`.
fn call_push_start(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let (s, t) = pair(arg, "stream", "target")
        .ok_or_else(|| bad("[STREAM, TARGET] or {\"stream\": S, \"target\": T}"))?;
    check_push(&ctx.cfg, &s, &t, false)?;
    ctx.actions.push(Action::PushStart {
        stream: s,
        target: t,
    });
    Ok(Some(json!("OK")))
}

/// `push_stop`: a push id or a list of ids (404 for one that does not run).
fn call_push_stop(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let ids: Vec<u64> = match arg {
        Value::Array(a) => a.iter().filter_map(|v| v.as_u64()).collect(),
        v => v.as_u64().into_iter().collect(),
    };
    if ids.is_empty() {
        return Err(bad("a push id or a list of ids (push_list)"));
    }
    for id in ids {
        if !ctx.st.outputs.pushes.iter().any(|p| p.id == id) {
            return Err(not_found(format!("no push {id}")));
        }
        ctx.actions.push(Action::PushStop(id));
    }
    Ok(Some(json!("OK")))
}

/// `recordings`: the finished recordings, oldest first.
fn call_recordings(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(Value::Array(
        ctx.st.outputs.recordings.iter().cloned().collect(),
    )))
}

/// `push_list`: `[[id, stream, target, target, [], {"auto", "attempts", "last_error"}], …]`
/// (MistServer's shape; targets with their credentials left out).
fn call_push_list(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(Value::Array(
        ctx.st
            .outputs
            .pushes
            .iter()
            .map(|p| {
                json!([
                    p.id,
                    p.stream,
                    connectors::core::url::redact(&p.target),
                    connectors::core::url::redact(&p.target),
                    [],
                    {"auto": p.auto, "attempts": p.attempts, "last_error": p.last_error}
                ])
            })
            .collect(),
    )))
}

/// `push_auto_add`: `[STREAM_OR_PATTERN, TARGET]` or `{"stream", "target"}` (a configured
/// stream, or `BASE+` for its wildcard streams). Answers the rules.
fn call_push_auto_add(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let (s, t) = pair(arg, "stream", "target")
        .ok_or_else(|| bad("[STREAM_OR_PATTERN, TARGET] or {\"stream\": S, \"target\": T}"))?;
    let cfg = &mut ctx.cfg;
    check_push(cfg, &s, &t, true)?;
    if !cfg["autopushes"].is_array() {
        cfg["autopushes"] = json!([]);
    }
    let rule = json!([s, t]);
    if let Some(a) = cfg["autopushes"].as_array_mut() {
        if !a.contains(&rule) {
            a.push(rule);
        }
    }
    ctx.changed = true;
    Ok(Some(ctx.cfg["autopushes"].clone()))
}

/// `push_auto_remove`: `[STREAM_OR_PATTERN, TARGET]` removes that rule; a pattern (or a
/// list of them) removes every rule of it (404 when there is none). The pushes the rules
/// started are stopped. Answers the rules left.
fn call_push_auto_remove(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
    let rules: Vec<(String, Option<String>)> = match pair(arg, "stream", "target") {
        Some((s, t)) => vec![(s, Some(t))],
        None => names_of(arg).into_iter().map(|s| (s, None)).collect(),
    };
    if rules.is_empty() {
        return Err(bad("[STREAM_OR_PATTERN, TARGET] or a pattern"));
    }
    let list = ctx.cfg.get_mut("autopushes").and_then(|a| a.as_array_mut());
    let Some(list) = list else {
        return Err(not_found("no auto-push rules"));
    };
    for (s, t) in rules {
        let n = list.len();
        let mut removed = Vec::new();
        list.retain(|r| {
            let hit = r.get(0).and_then(|v| v.as_str()) == Some(&s)
                && t.as_deref()
                    .is_none_or(|t| r.get(1).and_then(|v| v.as_str()) == Some(t));
            if hit {
                removed.push(r.get(1).and_then(|v| v.as_str()).unwrap_or("").to_string());
            }
            !hit
        });
        if list.len() == n {
            return Err(not_found(format!("no auto-push rule for {s}")));
        }
        for target in removed {
            ctx.actions.push(Action::StopAuto {
                pattern: s.clone(),
                target,
            });
        }
    }
    ctx.changed = true;
    Ok(Some(ctx.cfg["autopushes"].clone()))
}

/// `push_auto_list`: the rules, `[[STREAM_OR_PATTERN, TARGET], …]`.
fn call_push_auto_list(ctx: &mut Ctx<'_>, _: &Value) -> Answer {
    Ok(Some(
        ctx.cfg.get("autopushes").cloned().unwrap_or(json!([])),
    ))
}

/// `[A, B]` or `{ka: A, kb: B}` as two strings.
fn pair(arg: &Value, ka: &str, kb: &str) -> Option<(String, String)> {
    let (a, b) = match arg {
        Value::Array(v) if v.len() >= 2 => (v.first()?, v.get(1)?),
        Value::Object(o) => (o.get(ka)?, o.get(kb)?),
        _ => return None,
    };
    Some((a.as_str()?.to_string(), b.as_str()?.to_string()))
}

/// Checks a push: a configured stream (or, for a rule, a stream name or `BASE+` pattern)
/// and a target Sluice can push to.
fn check_push(
    cfg: &Value,
    stream: &str,
    target: &str,
    rule: bool,
) -> std::result::Result<(), CallError> {
    let name = if rule {
        stream.strip_suffix('+').unwrap_or(stream)
    } else {
        stream
    };
    if !config::valid_stream_name(name) {
        return Err(bad(format!("invalid stream name {stream:?}")));
    }
    if config::find_stream(cfg, name).is_none() {
        return Err(not_found(format!("no stream {name} is configured")));
    }
    if target.chars().any(|c| c.is_control()) {
        return Err(bad("the target has control characters"));
    }
    if connectors::egress::record::is_file_target(target) {
        return check_record_target(cfg, target);
    }
    if !connectors::egress::SCHEMES
        .iter()
        .any(|s| target.starts_with(s))
    {
        return Err(bad(format!(
            "push target {:?}: the scheme is not one Sluice pushes to ({})",
            connectors::core::url::redact(target),
            connectors::egress::SCHEMES.join(", ")
        )));
    }
    if target.starts_with("rtmp://")
        && dtsc::rtmp::client::PublishClient::parse_url(&target.replace("$stream", name)).is_none()
    {
        return Err(bad("an RTMP target is rtmp://host[:port]/app/name"));
    }
    Ok(())
}

/// A recording target (a push target that is a file path, or a stream's `record`): a path
/// [`connectors::egress::record::parse_target`] takes (400), within the recording folders (403).
fn check_record_target(cfg: &Value, target: &str) -> std::result::Result<(), CallError> {
    if !connectors::egress::record::is_file_target(target) {
        return Err(bad(format!(
            "recording target {target:?}: an absolute file path"
        )));
    }
    let t = connectors::egress::record::parse_target(target)
        .map_err(|e| bad(format!("recording target {target:?}: {e}")))?;
    check_recording_folder(cfg, &t.pattern)
}

/// With `config.recording_folders` set, a recording's path (the part before its first
/// variable, with symbolic links of the part that exists resolved) must lie inside one of
/// them: 403 otherwise.
fn check_recording_folder(cfg: &Value, pattern: &str) -> std::result::Result<(), CallError> {
    let Some(folders) = config::recording_folders(cfg) else {
        return Ok(());
    };
    let fixed = pattern.split('$').next().unwrap_or("");
    let mut at = std::path::Path::new(fixed);
    if !fixed.ends_with('/') {
        at = at.parent().unwrap_or(at);
    }
    // The longest part that exists, resolved; what follows it cannot climb out ('..' is
    // refused by parse_target).
    let mut probe = at;
    let real = loop {
        if let Ok(r) = std::fs::canonicalize(probe) {
            break Some(r.join(at.strip_prefix(probe).unwrap_or(std::path::Path::new(""))));
        }
        match probe.parent() {
            Some(p) => probe = p,
            None => break None,
        }
    };
    match real {
        Some(r) if folders.iter().any(|f| r.starts_with(f)) => Ok(()),
        _ => Err(CallError::new(
            403,
            format!(
                "recording target {pattern:?} is outside the recording folders (config.recording_folders)"
            ),
        )),
    }
}

fn auth_tokens(cfg: &Value) -> Vec<String> {
    cfg.pointer("/config/api_tokens")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("name")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn capabilities() -> Value {
    json!({
        "triggers": crate::triggers::NAMES,
        "connectors": {
            "RTMP": {"desc": "RTMP publish and play", "port": 1935},
            "RTSP": {"desc": "RTSP play and ANNOUNCE/RECORD, RTP over TCP and UDP", "port": 5554},
            "HTTP": {"desc": "HLS (TS, fMP4, LL-HLS), DASH, Smooth, HDS, progressive FLV/TS/MP4, AAC, MP3, player page", "port": 8080},
            "TS": {"desc": "raw MPEG-TS over TCP", "port": 8888},
            "DTSC": {"desc": "DTSC between servers: play (edges pull) and push (ingest with the stream's key)", "port": 4200}
        },
        "inputs": {
            "Buffer": {"source_match": "push://*"},
            "RTSP": {"source_match": "rtsp://*"},
            "TSUDP": {"source_match": "tsudp://*"},
            "DTSC": {"source_match": ["dtsc://*", "/*.dtsc"]},
            "MP4": {"source_match": ["/*.mp4", "/*.m4v", "/*.m4a", "/*.mov", "/*.3gp"]},
            "RTMP": {"source_match": "rtmp://*"},
            "HTTPTS": {"source_match": ["http://*.ts", "https://*.ts"]},
            "HTTPFLV": {"source_match": ["http://*.flv", "https://*.flv"]},
            "HLS": {"source_match": ["http://*.m3u8", "https://*.m3u8"]},
            "FLV": {"source_match": "/*.flv"},
            "TS": {"source_match": ["/*.ts", "/*.m2ts", "/*.mts"]}
        },
        "calls": CALLS.iter().map(|(name, _)| *name).collect::<Vec<_>>()
    })
}

/// `active_streams`: `true` gives the live streams' names; a field list gives
/// `{S: [values…]}` with `clients`/`viewers`, `inputs`, `outputs`, `lastms`, `firstms`,
/// `status`, `downbps`, `upbps`.
fn call_active_streams(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
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
fn call_clients(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
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
fn call_totals(ctx: &mut Ctx<'_>, arg: &Value) -> Answer {
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
fn call_log(_: &mut Ctx<'_>, arg: &Value) -> Answer {
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
fn metrics_text(st: &mut State) -> String {
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
    fn query_values_are_decoded() {
        assert_eq!(url_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(url_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn stream_configs_are_checked() {
        assert!(check_stream("cam", &json!({"source": "push://"})).is_ok());
        assert!(check_stream("a/b", &json!({"source": "push://"})).is_err());
        assert!(check_stream("..", &json!({"source": "push://"})).is_err());
        assert!(check_stream("x\u{1}", &json!({"source": "push://"})).is_err());
        assert!(check_stream("cam", &json!({"source": "gopher://x"})).is_err());
        assert!(check_stream("cam", &json!({})).is_err());
        assert!(check_stream("cam", &json!({"source": "push://", "DVR": "x"})).is_err());
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

    #[test]
    fn hostnames_and_caps_are_checked_in_config_calls() {
        assert!(check_hostnames(&json!(["media.lan", "10.0.0.2", "[2001:db8::1]"])).is_ok());
        assert!(check_hostnames(&json!("media.lan")).is_err());
        assert!(check_hostnames(&json!(["media.lan:80"])).is_err());
        assert!(check_hostnames(&json!(["a b"])).is_err());
        assert!(check_hostnames(&json!([1])).is_err());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
    /// A state in a temporary folder of its own (its session table is made there), removed
    /// when dropped.
    struct Scratch(State);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0.rundir);
        }
    }

    fn state() -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-api-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = json!({"config": {}, "streams": {"live": {"name": "live", "source": "push://"}}});
        Scratch(State::new(cfg, dir.join("config.json"), dir).unwrap())
    }

    fn calls(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_call_has_one_entry_and_capabilities_lists_them() {
        let names: Vec<&str> = CALLS.iter().map(|(n, _)| *n).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(n), "{n} twice");
        }
        assert_eq!(capabilities()["calls"], json!(names));
        for n in guard::READ_ONLY {
            assert!(
                names.contains(n),
                "guard::READ_ONLY names {n}, which is no call"
            );
        }
    }

    #[test]
    fn a_failed_call_changes_nothing_and_the_errors_keep_the_calls_order() {
        let mut s = state();
        let before = s.0.cfg.clone();
        let h = handle(
            &mut s.0,
            &calls(json!({
                "addstream": {"cam": {"source": "push://"}},
                "deletestream": "nosuch",
                "bogus": 1
            })),
        );
        assert_eq!(h.status, 404);
        assert_eq!(
            h.body,
            json!({"errors": [
                {"call": "deletestream", "error": "no stream nosuch is configured"},
                {"call": "bogus", "error": "unknown call (docs/API.md lists the calls)"}
            ]})
        );
        assert!(h.actions.is_empty());
        assert_eq!(s.0.cfg, before);
    }

    #[test]
    fn calls_answer_in_order_and_queue_their_actions() {
        let mut s = state();
        let h = handle(
            &mut s.0,
            &calls(json!({
                "authorize": {"username": "a", "password": ""},
                "addstream": {"cam": {"source": "push://"}},
                "stop_sessions": "live",
                "streamkeys": true
            })),
        );
        assert_eq!(h.status, 200);
        let keys: Vec<&str> = h
            .body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        // `authorize` is the auth stage's; stream changes are answered with the streams.
        assert_eq!(
            keys,
            ["addstream", "stop_sessions", "streamkeys", "streams"]
        );
        assert_eq!(h.body["stop_sessions"], "OK");
        assert_eq!(h.body["streams"]["cam"]["name"], "cam");
        assert!(matches!(
            h.actions.as_slice(),
            [Action::Save, Action::Apply(_), Action::StopSessions(s)] if s == "live"
        ));
        assert!(s.0.cfg["streams"]["cam"].is_object());
    }
}
