//! The API's calls: the dispatch table, and the calls that read or change the config,
//! stream keys, pushes and API tokens. Each runs against the config as the request's
//! earlier calls left it; the config is committed only when every call checked out.

use serde_json::{json, Map, Value};

use super::checks::{
    check_hostnames, check_media_folder, check_push, check_record_target, check_stream, names_of,
    pair,
};
use super::stats::{call_active_streams, call_clients, call_log, call_totals};
use super::Action;
use crate::auth;
use crate::config;
use crate::state::State;

/// Why one call of a request failed: the HTTP status it asks for and the reason. The
/// request's status is the highest of its calls' (400 a malformed argument, 403 a path
/// outside the allowed folders, 404 a stream, key, token, push or rule that does not
/// exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallError {
    /// 400, 403 or 404.
    pub(super) status: u16,
    /// The reply's `error` for the call.
    pub(super) why: String,
}

impl CallError {
    /// A call's error with HTTP `status`.
    pub(super) fn new(status: u16, why: impl Into<String>) -> CallError {
        CallError {
            status,
            why: why.into(),
        }
    }
}

/// A 400: the argument is malformed or not allowed.
pub(super) fn bad(why: impl Into<String>) -> CallError {
    CallError::new(400, why)
}

/// A 404: what the argument names does not exist.
pub(super) fn not_found(why: impl Into<String>) -> CallError {
    CallError::new(404, why)
}

/// What the calls of one request share while they run.
pub(super) struct Ctx<'a> {
    /// The state, locked for the request (its `cfg` is the config before the request).
    pub(super) st: &'a mut State,
    /// The config as the calls so far left it: it replaces the state's only when every call
    /// of the request checked out.
    pub(super) cfg: Value,
    /// What follows once every call checked out, in the calls' order.
    pub(super) actions: Vec<Action>,
    /// A call changed the config: it is saved.
    pub(super) changed: bool,
    /// A call changed what may have to run differently: the config is applied.
    pub(super) apply: bool,
}

/// What a call answers: its member of the reply, `None` for no member (`authorize`, which
/// the authorization stage answers).
pub(super) type Answer = Result<Option<Value>, CallError>;

/// One API call: what it does with its argument.
type Call = fn(&mut Ctx<'_>, &Value) -> Answer;

/// The API's calls (MistServer's names), in the order `capabilities` lists them.
pub(super) const CALLS: &[(&str, Call)] = &[
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
pub(super) struct Handled {
    /// 200, or the highest status of the calls that failed.
    pub(super) status: u16,
    /// The reply: a member per call, or `{"errors": [{"call", "error"}, …]}`.
    pub(super) body: Value,
    /// What follows (nothing when a call failed).
    pub(super) actions: Vec<Action>,
}

/// Answers every call of one request, in the request's order. When any call fails, the
/// config is left as it was, no action runs, and the reply lists the errors.
pub(super) fn handle(st: &mut State, calls: &Map<String, Value>) -> Handled {
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
fn check_config_key(k: &str, v: &Value) -> Result<(), CallError> {
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

/// The config object for the `config` call: what it shows (tokens' hashes left out).
fn shown_config(cfg: &Value) -> Value {
    let mut c = cfg.get("config").cloned().unwrap_or(json!({}));
    if let Some(o) = c.as_object_mut() {
        o.remove("api_tokens");
    }
    c
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard;

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
