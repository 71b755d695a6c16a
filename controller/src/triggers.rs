//! Triggers: MistServer's hooks (`config.triggers`; `docs/MISTSERVER.md`,
//! "Triggers").
//!
//! `config.triggers` maps a trigger name to a list of handlers:
//! `{"handler": "http://host/path" | "/path/to/executable", "sync": bool,
//!   "streams": ["S", …], "default": "true" | "false"}`.
//! * An HTTP handler gets a `POST` whose body is the payload, one value per line, with the
//!   headers `X-Trigger: NAME` and `X-Trigger-UUID`; an executable gets the trigger name as
//!   its argument and the payload on standard input. The answer is the response body or the
//!   program's standard output, trimmed.
//! * A payload of N values is always N lines: stream names are checked before any trigger
//!   sees them (`control.rs`), and any other value (a URL, a user agent) that holds a
//!   control character or a Unicode line separator is sent percent-encoded
//!   ([`payload_line`]), with a log line.
//! * A blocking (`sync`) handler's answer decides: `false` (or, for the rewrite triggers, a
//!   new stream name or nothing) refuses. A handler that cannot be reached, fails or takes
//!   longer than [`SYNC_TIMEOUT`] counts as its `default`, which is `false` (refuse) unless
//!   the config says otherwise.
//! * Non-blocking handlers run on threads of their own with a [`ASYNC_TIMEOUT`]; nothing
//!   waits for them. A blocking one holds up only the connection that asked (the
//!   controller's state is not locked while it runs), never another stream.
//! * `streams` limits a handler to those streams (a wildcard stream `BASE+X` also matches
//!   `BASE`); without it, the handler gets every stream's events.
//!
//! HTTP and HTTPS handlers are called with `ureq`. HTTPS checks the handler's certificate
//! against the system's roots (`/etc/ssl/certs`); `SSL_CERT_FILE` / `SSL_CERT_DIR` in the
//! controller's environment name other roots (a private CA, or a self-signed handler's own
//! certificate).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a blocking handler may take.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a non-blocking handler may take.
pub const ASYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Every trigger name Sluice fires, as MistServer names them.
pub const NAMES: &[&str] = &[
    "SYSTEM_START",
    "SYSTEM_STOP",
    "STREAM_ADD",
    "STREAM_CONFIG",
    "STREAM_REMOVE",
    "STREAM_LOAD",
    "STREAM_READY",
    "STREAM_UNLOAD",
    "STREAM_END",
    "STREAM_PUSH",
    "PUSH_REWRITE",
    "INPUT_ABORT",
    "PUSH_OUT_START",
    "PUSH_END",
    "RECORDING_END",
    "CONN_OPEN",
    "CONN_CLOSE",
    "CONN_PLAY",
    "USER_NEW",
    "USER_END",
    "PLAY_REWRITE",
    "DEFAULT_STREAM",
    "LIVE_TRACK_LIST",
    "STREAM_BUFFER",
    "LIVE_BANDWIDTH",
    "STREAM_SOURCE",
];

/// One configured handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// URL or executable path.
    pub handler: String,
    /// Blocking.
    pub sync: bool,
    /// What counts when the handler cannot answer.
    pub default: String,
}

fn stream_matches(list: &Value, stream: Option<&str>) -> bool {
    let Some(arr) = list.as_array() else {
        return true;
    };
    if arr.is_empty() {
        return true;
    }
    let Some(s) = stream else {
        return false;
    };
    let base = s.split_once('+').map_or(s, |(b, _)| b);
    arr.iter()
        .filter_map(|v| v.as_str())
        .any(|w| w == s || w == base)
}

/// The handlers of trigger `name` for `stream`, in the config's order: the entries of
/// `config.triggers.NAME` that have a `handler` and whose `streams` list is missing, empty,
/// or names the stream or its base (`live` for `live+cam1`). A trigger for no stream
/// (`None`) gets only the handlers without a stream list.
pub fn handlers(cfg: &Value, name: &str, stream: Option<&str>) -> Vec<Handler> {
    let Some(list) = cfg
        .pointer("/config/triggers")
        .and_then(|t| t.get(name))
        .and_then(|l| l.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .filter(|h| stream_matches(h.get("streams").unwrap_or(&Value::Null), stream))
        .filter_map(|h| {
            Some(Handler {
                handler: h.get("handler")?.as_str()?.to_string(),
                sync: h.get("sync").and_then(|v| v.as_bool()).unwrap_or(false),
                default: match h.get("default") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => "false".into(),
                },
            })
        })
        .collect()
}

fn uuid() -> String {
    crate::auth::random_hex(16)
}

/// POSTs `body` to an `http://` or `https://` URL and returns the response body
/// (at most 1 MiB, trimmed), within `timeout` from connecting to the last byte.
///
/// Errors: the address does not resolve or refuses, TLS fails (an unknown issuer, a name
/// mismatch), a status other than 2xx, or the timeout.
fn http_post(url: &str, trigger: &str, body: &str, timeout: Duration) -> Result<String, String> {
    use ureq::tls::{RootCerts, TlsConfig};
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("Content-Type", "text/plain")
        .header("X-Trigger", trigger)
        .header("X-Trigger-UUID", uuid())
        .send(body)
        .map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    if !(200..300).contains(&code) {
        return Err(format!("HTTP {code}"));
    }
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(text.trim().to_string())
}

/// Runs an executable handler: the trigger name as argument, the payload on stdin.
fn run_exe(path: &str, trigger: &str, body: &str, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(path)
        .arg(trigger)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{path}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(body.as_bytes());
    }
    let mut out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(1 << 20).read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let text = reader.join().unwrap_or_default();
                if !st.success() {
                    return Err(format!("{path} exited with {st}"));
                }
                return Ok(text.trim().to_string());
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{path} took longer than {timeout:?}"));
            }
        }
    }
}

/// Whether `c` could end or split a payload line for some reader: a control character
/// (C0, DEL, C1, which covers `\n`, `\r`, `\x0b`, `\x0c`, `\x1c`–`\x1e` and NEL) or
/// U+2028 / U+2029 (line and paragraph separators, which Python's `splitlines` and
/// JavaScript take as line ends).
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A payload value as one line ([`payload_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadLine<'a> {
    /// The value, escaped when it had to be (borrowed when it did not).
    pub text: std::borrow::Cow<'a, str>,
    /// It had characters that break lines, so it was escaped.
    pub changed: bool,
}

/// One payload value made safe to send as one line: every character that
/// [`breaks_lines`] is percent-encoded (its UTF-8 bytes as `%XX`, so `\n` becomes `%0A`),
/// and so is `%` itself when such an escape was needed, so the value can be decoded back
/// without doubt. Values without such characters come back unchanged (a URL keeps its own
/// escapes).
pub fn payload_line(value: &str) -> PayloadLine<'_> {
    if !value.chars().any(breaks_lines) {
        return PayloadLine {
            text: std::borrow::Cow::Borrowed(value),
            changed: false,
        };
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if breaks_lines(c) || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    PayloadLine {
        text: std::borrow::Cow::Owned(out),
        changed: true,
    }
}

/// The body a handler gets: the payload's values one per line, each made one line by
/// [`payload_line`], so a payload of N values is always N lines whatever a client put in
/// a URL or a user agent. Values that had to be escaped are named in the log.
pub fn payload_body(trigger: &str, payload: &[String]) -> String {
    let mut lines = Vec::with_capacity(payload.len());
    for (i, v) in payload.iter().enumerate() {
        let PayloadLine {
            text: line,
            changed,
        } = payload_line(v);
        if changed {
            crate::logs::controller(&format!(
                "trigger {trigger}: payload line {} had control characters; sent percent-encoded",
                i + 1
            ));
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// Calls one handler with the trigger's name and payload (sent as [`payload_body`] makes
/// it), within `timeout`, and returns its answer (trimmed). Errors: why it could not answer
/// (unreachable, a non-2xx status, a program that failed, the timeout).
pub fn call(
    h: &Handler,
    trigger: &str,
    payload: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let body = payload_body(trigger, payload);
    if h.handler.starts_with("http://") || h.handler.starts_with("https://") {
        http_post(&h.handler, trigger, &body, timeout)
    } else {
        run_exe(&h.handler, trigger, &body, timeout)
    }
}

/// Fires trigger `name` at its non-blocking handlers (each on a thread of its own) and at
/// its blocking ones as if they were not (their answer is not needed for this trigger).
pub fn fire(cfg: &Value, name: &str, stream: Option<&str>, payload: Vec<String>) {
    for h in handlers(cfg, name, stream) {
        let name = name.to_string();
        let payload = payload.clone();
        std::thread::spawn(move || {
            if let Err(e) = call(&h, &name, &payload, ASYNC_TIMEOUT) {
                crate::logs::controller(&format!(
                    "trigger {name}: handler {} failed: {e}",
                    h.handler
                ));
            }
        });
    }
}

/// Asks the blocking handlers of trigger `name`, in order: `None` when there is none (go
/// on), else the first one's answer, or its `default` when it could not answer. The
/// non-blocking handlers are fired as by [`fire`].
pub fn ask(cfg: &Value, name: &str, stream: Option<&str>, payload: &[String]) -> Option<String> {
    let all = handlers(cfg, name, stream);
    let mut answer = None;
    for h in &all {
        if !h.sync {
            let (h, name, payload) = (h.clone(), name.to_string(), payload.to_vec());
            std::thread::spawn(move || {
                let _ = call(&h, &name, &payload, ASYNC_TIMEOUT);
            });
            continue;
        }
        if answer.is_some() {
            continue;
        }
        answer = Some(match call(h, name, payload, SYNC_TIMEOUT) {
            Ok(a) => a,
            Err(e) => {
                crate::logs::controller(&format!(
                    "trigger {name}: handler {} failed ({e}); applying its default {:?}",
                    h.handler, h.default
                ));
                h.default.clone()
            }
        });
    }
    answer
}

/// Whether an answer allows (anything but `false`, `0` or `no`).
pub fn allows(answer: &str) -> bool {
    !matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "false" | "0" | "no"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handlers_are_filtered_by_stream_and_default_to_refusal() {
        let cfg = json!({"config": {"triggers": {"USER_NEW": [
            {"handler": "http://a/x", "sync": true, "streams": ["live"]},
            {"handler": "/bin/true", "default": "true"}
        ]}}});
        let h = handlers(&cfg, "USER_NEW", Some("live+cam"));
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].default, "false");
        assert!(h[0].sync);
        assert_eq!(handlers(&cfg, "USER_NEW", Some("other")).len(), 1);
        assert!(handlers(&cfg, "USER_END", Some("live")).is_empty());
    }

    #[test]
    fn payload_values_cannot_add_lines() {
        // A forged line in a URL (`%0A` decoded by a connector) stays in its own line.
        let forged = "rtmp://h/live/x\nfalse\r\nevil".to_string();
        let body = payload_body("T", &["s".into(), forged, "ua\u{2028}x\u{85}y".into()]);
        assert_eq!(body.lines().count(), 3, "{body:?}");
        assert_eq!(body.split('\n').count(), 3, "{body:?}");
        assert_eq!(
            body,
            "s\nrtmp://h/live/x%0Afalse%0D%0Aevil\nua%E2%80%A8x%C2%85y"
        );
        // Values without control characters are sent as they are, escapes and all.
        assert_eq!(
            payload_line("http://h/a%20b?x=1").text,
            "http://h/a%20b?x=1"
        );
        assert!(!payload_line("Mozilla/5.0 (X11; Linux)").changed);
        // When escaping, `%` is escaped too, so decoding gives the value back.
        assert_eq!(payload_line("50%\t").text, "50%25%09");
        for v in [
            "\u{0}",
            "\u{7f}",
            "\u{1b}[31m",
            "a\u{b}b\u{c}c\u{1c}d\u{1e}",
        ] {
            let PayloadLine { text: l, changed } = payload_line(v);
            assert!(
                changed && !l.chars().any(|c| c.is_control()),
                "{v:?} -> {l:?}"
            );
        }
    }

    #[test]
    fn an_unreachable_blocking_handler_counts_as_its_default() {
        // A port nothing listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = json!({"config": {"triggers": {"STREAM_PUSH": [
            {"handler": format!("http://127.0.0.1:{port}/hook"), "sync": true}
        ]}}});
        assert_eq!(
            ask(&cfg, "STREAM_PUSH", Some("s"), &["s".into()]).as_deref(),
            Some("false")
        );
        assert!(ask(&cfg, "USER_NEW", Some("s"), &[]).is_none());
    }

    #[test]
    fn an_executable_gets_the_name_and_the_payload() {
        let cfg = json!({"config": {"triggers": {"PUSH_REWRITE": [
            {"handler": "/bin/sh", "sync": true}
        ]}}});
        // /bin/sh with argument PUSH_REWRITE tries to run a file of that name and fails: the
        // default (refuse) applies.
        assert_eq!(
            ask(&cfg, "PUSH_REWRITE", Some("s"), &["x".into()]).as_deref(),
            Some("false")
        );
        let dir = std::env::temp_dir().join(format!("sluice-trig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("hook.sh");
        std::fs::write(&script, "#!/bin/sh\n[ \"$1\" = T ] && cat\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let h = Handler {
            handler: script.to_string_lossy().into_owned(),
            sync: true,
            default: "false".into(),
        };
        assert_eq!(
            call(&h, "T", &["a".into(), "b".into()], SYNC_TIMEOUT).unwrap(),
            "a\nb"
        );
        assert!(allows("true") && allows("cam2") && !allows("false") && !allows(" 0 "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
