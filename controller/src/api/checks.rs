//! Checks of the API's call arguments: stream configs, the media and recording folders,
//! push targets, host names; and the argument shapes several calls take.

use serde_json::Value;

use super::calls::{bad, not_found, CallError};
use crate::config;
use crate::guard;

/// The names an argument gives: a string, the strings of a list, or an object's keys.
pub(super) fn names_of(arg: &Value) -> Vec<String> {
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

/// `[A, B]` or `{ka: A, kb: B}` as two strings.
pub(super) fn pair(arg: &Value, ka: &str, kb: &str) -> Option<(String, String)> {
    let (a, b) = match arg {
        Value::Array(v) if v.len() >= 2 => (v.first()?, v.get(1)?),
        Value::Object(o) => (o.get(ka)?, o.get(kb)?),
        _ => return None,
    };
    Some((a.as_str()?.to_string(), b.as_str()?.to_string()))
}

/// Checks one stream's config: a valid name and a source Sluice can use.
pub(super) fn check_stream(name: &str, v: &Value) -> Result<(), String> {
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

/// With `config.media_folders` set, a file or folder source must lie inside one of them
/// (after resolving `..` and symbolic links; a path that does not exist yet is checked as
/// written, and may not use `..`).
pub(super) fn check_media_folder(cfg: &Value, name: &str, v: &Value) -> Result<(), String> {
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

/// Checks `config.controller.hostnames`: a list of host names or addresses without ports
/// (the names, besides loopback's, that a request's `Host` may give; [`guard`]).
pub(super) fn check_hostnames(v: &Value) -> Result<(), String> {
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

/// Checks a push: a configured stream (or, for a rule, a stream name or `BASE+` pattern)
/// and a target Sluice can push to.
pub(super) fn check_push(
    cfg: &Value,
    stream: &str,
    target: &str,
    rule: bool,
) -> Result<(), CallError> {
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
pub(super) fn check_record_target(cfg: &Value, target: &str) -> Result<(), CallError> {
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
fn check_recording_folder(cfg: &Value, pattern: &str) -> Result<(), CallError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn hostnames_and_caps_are_checked_in_config_calls() {
        assert!(check_hostnames(&json!(["media.lan", "10.0.0.2", "[2001:db8::1]"])).is_ok());
        assert!(check_hostnames(&json!("media.lan")).is_err());
        assert!(check_hostnames(&json!(["media.lan:80"])).is_err());
        assert!(check_hostnames(&json!(["a b"])).is_err());
        assert!(check_hostnames(&json!([1])).is_err());
    }
}
