//! What keeps web pages away from the API: checks on every request, made before
//! authentication (so before the first account can be made, and before `trust_loopback`
//! counts).
//!
//! * `Host` (RFC 9110 §7.2) must name this API: `127.0.0.1`, `[::1]`, `localhost`, the
//!   configured interface, or a name in `config.controller.hostnames`, with or without a
//!   port. A page that had its own name resolve to 127.0.0.1 (DNS rebinding) sends its own
//!   name, and is refused with 403. An HTTP/1.1 request without exactly one `Host` gets 400
//!   (RFC 9110 §7.2); an HTTP/1.0 request without one is let through (no browser sends
//!   that).
//! * `Origin` (RFC 6454 §7), when present, must be the API's own origin: the same host and
//!   port as the `Host` header, over `http` or `https`. Browsers send it with every `POST`
//!   and every cross-origin `fetch`, so a foreign page is refused with 403. `Origin: null`
//!   (sandboxed frames, `file:` pages) is foreign too.
//! * `Sec-Fetch-Site` (Fetch Metadata), when present, must be `same-origin` or `none`:
//!   a browser that sends it says where the request came from.
//! * Methods: `GET` and `POST` only (405 otherwise). A `GET` runs read-only calls only
//!   ([`read_only`]); a call that changes anything needs `POST` (405): a page can make a
//!   browser send a `GET` without an `Origin` (an `<img>`), never a `POST`.
//!
//! Scripts are unaffected: curl and other HTTP libraries send no `Origin` and no
//! `Sec-Fetch-Site`, and a `Host` of the address they were given.

use serde_json::{Map, Value};

/// The host names the API answers to (lowercase; IPv6 addresses in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    names: Vec<String>,
}

/// A host name as `Host` and `Origin` write it: lowercase, an IPv6 address in brackets.
fn normal_host(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h
    }
}

impl Site {
    /// The API's names: the loopback names, `iface` (the address it listens on), and
    /// `extra` (`config.controller.hostnames`: names a reverse proxy or `/etc/hosts` gives
    /// it). Empty names are left out.
    pub fn new(iface: &str, extra: &[String]) -> Site {
        let mut names: Vec<String> = ["127.0.0.1", "[::1]", "localhost", iface]
            .iter()
            .map(|s| normal_host(s))
            .chain(extra.iter().map(|s| normal_host(s)))
            .filter(|s| !s.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Site { names }
    }

    /// The API's names from the config: `config.controller.hostnames` (a list of strings;
    /// anything else in it is ignored) added to [`Site::new`]'s.
    pub fn from_config(iface: &str, cfg: &Value) -> Site {
        let extra: Vec<String> = cfg
            .pointer("/config/controller/hostnames")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Site::new(iface, &extra)
    }

    /// Whether `host` (a host, without port) is one of the API's names.
    pub fn knows(&self, host: &str) -> bool {
        self.names.contains(&normal_host(host))
    }
}

/// A `Host` value taken apart ([`split_host`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host, lowercase; an IPv6 address keeps its brackets (`[::1]`).
    pub host: String,
    /// The port, when one was written.
    pub port: Option<u16>,
}

/// Splits a `Host` value (`host[:port]`, RFC 9110 §7.2; an IPv6 address in brackets) into
/// the lowercase host and the port. `None` when it is not of that shape (an empty host, an
/// IPv6 address without brackets, a port that is not a number up to 65535, spaces or other
/// characters a host cannot have).
pub fn split_host(value: &str) -> Option<HostPort> {
    let v = value.trim();
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match v.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (v, None),
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_';
        if h.is_empty() || !h.chars().all(ok) {
            return None;
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some(HostPort { host, port })
}

/// An `Origin` value taken apart ([`split_origin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host, lowercase (as [`HostPort::host`]).
    pub host: String,
    /// The port: the one written, else the scheme's default (80 or 443).
    pub port: u16,
}

/// Parses an `Origin` value (RFC 6454 §6.2: `scheme "://" host [ ":" port ]`) of the
/// `http` or `https` scheme. `None` for `null`, other schemes, a path, or a malformed host.
pub fn split_origin(value: &str) -> Option<Origin> {
    let v = value.trim();
    let (scheme, rest, default) = if let Some(r) = v.strip_prefix("http://") {
        ("http", r, 80)
    } else if let Some(r) = v.strip_prefix("https://") {
        ("https", r, 443)
    } else {
        return None;
    };
    if rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    let HostPort { host, port } = split_host(rest)?;
    Some(Origin {
        scheme,
        host,
        port: port.unwrap_or(default),
    })
}

/// Whether `origin` is the origin of a request whose `Host` is `host`: the same host and
/// the same port (a `Host` without a port has the origin scheme's default, as a browser
/// sends it).
pub fn origin_is_own(origin: &str, host: &str) -> bool {
    let (Some(o), Some(h)) = (split_origin(origin), split_host(host)) else {
        return false;
    };
    let hport = h.port.unwrap_or(if o.scheme == "https" { 443 } else { 80 });
    o.host == h.host && o.port == hport
}

/// The request headers and line the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// HTTP/1.1 or later (which must carry `Host`).
    pub http11: bool,
    /// Every `Host` header's value.
    pub hosts: Vec<&'a str>,
    /// Every `Origin` header's value.
    pub origins: Vec<&'a str>,
    /// The `Sec-Fetch-Site` header's value.
    pub fetch_site: Option<&'a str>,
}

/// Why a request was refused: the HTTP status (400, 403 or 405), the reason for the
/// client, and whether it is worth a log line (a refused `Host` or `Origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 (no or several `Host`), 403 (foreign `Host`, `Origin`, `Sec-Fetch-Site`) or
    /// 405 (a method other than `GET` and `POST`).
    pub status: u16,
    /// What the client is told (the log line says the same, with the peer).
    pub why: String,
}

/// A peer's header value as the log and the reply show it: escaped, at most 100
/// characters.
pub fn shown(v: &str) -> String {
    let cut: String = v.chars().take(100).collect();
    format!("{cut:?}")
}

/// Checks a request's method, `Host`, `Origin` and `Sec-Fetch-Site` (see the module's
/// text). `Ok` lets it go on to authentication.
pub fn check(site: &Site, req: &Request<'_>) -> Result<(), Refusal> {
    let refuse = |status: u16, why: String| Err(Refusal { status, why });
    if req.method != "GET" && req.method != "POST" {
        return refuse(
            405,
            format!(
                "method {} is not allowed: use POST (or GET for reads)",
                shown(req.method)
            ),
        );
    }
    let host = match req.hosts.as_slice() {
        [] if !req.http11 => None,
        [h] => Some(*h),
        [] => return refuse(400, "an HTTP/1.1 request needs a Host header".into()),
        _ => return refuse(400, "more than one Host header".into()),
    };
    if let Some(h) = host {
        match split_host(h) {
            Some(h) if site.knows(&h.host) => {}
            _ => {
                return refuse(
                    403,
                    format!(
                    "Host {} is not a name of this API (config.controller.hostnames lists more)",
                    shown(h)
                ),
                )
            }
        }
    }
    match (req.origins.as_slice(), host) {
        ([], _) => {}
        ([o], Some(h)) if origin_is_own(o, h) => {}
        ([o], _) => {
            return refuse(
                403,
                format!("Origin {} is not this API's own origin", shown(o)),
            )
        }
        _ => return refuse(403, "more than one Origin header".into()),
    }
    if let Some(s) = req.fetch_site {
        let s = s.trim();
        if !s.eq_ignore_ascii_case("same-origin") && !s.eq_ignore_ascii_case("none") {
            return refuse(
                403,
                format!(
                    "Sec-Fetch-Site {}: the request came from another site",
                    shown(s)
                ),
            );
        }
    }
    Ok(())
}

/// Calls a `GET` may run: those that only read. `streams` and `config` read only with
/// `true` (or `null`); `authorize` reads only when it makes no account (`new_username`,
/// `new_password`). `config_backup` is left out: it carries the password and token hashes.
pub const READ_ONLY: &[&str] = &[
    "active_streams",
    "api_tokens",
    "authorize",
    "capabilities",
    "clients",
    "config",
    "log",
    "push_auto_list",
    "push_list",
    "recordings",
    "streamkeys",
    "streams",
    "totals",
];

/// Whether call `call` with argument `arg` only reads (see [`READ_ONLY`]).
pub fn read_only(call: &str, arg: &Value) -> bool {
    if !READ_ONLY.contains(&call) {
        return false;
    }
    match call {
        "streams" | "config" => matches!(arg, Value::Bool(_) | Value::Null),
        "authorize" => arg
            .as_object()
            .is_none_or(|a| !a.contains_key("new_username") && !a.contains_key("new_password")),
        _ => true,
    }
}

/// The calls of a request that a `GET` may not run (empty: all of them only read).
pub fn writes(calls: &Map<String, Value>) -> Vec<String> {
    calls
        .iter()
        .filter(|(c, a)| !read_only(c, a))
        .map(|(c, _)| c.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site() -> Site {
        Site::new("127.0.0.1", &["Sluice.Example".to_string()])
    }

    fn req<'a>(method: &'a str, host: Option<&'a str>, origin: Option<&'a str>) -> Request<'a> {
        Request {
            method,
            http11: true,
            hosts: host.into_iter().collect(),
            origins: origin.into_iter().collect(),
            fetch_site: None,
        }
    }

    #[test]
    fn host_must_name_the_api() {
        let s = site();
        for ok in [
            "127.0.0.1:4242",
            "127.0.0.1",
            "localhost:4242",
            "LOCALHOST",
            "[::1]:4242",
            "[::1]",
            "sluice.example",
            "sluice.example:443",
        ] {
            assert_eq!(check(&s, &req("POST", Some(ok), None)), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4242",
            "127.0.0.1.evil.example",
            "localhost.",
            "::1",
            "[::1",
            "127.0.0.1:99999",
            "127.0.0.1:",
            "127.0.0.1:42x",
            "",
            "local host",
            "127.0.0.1\r\nX: y",
        ] {
            let r = check(&s, &req("POST", Some(bad), None));
            assert_eq!(r.map_err(|e| e.status), Err(403), "{bad:?}");
        }
        // No Host: 400 for HTTP/1.1, let through for HTTP/1.0; two: 400.
        let mut r = req("POST", None, None);
        assert_eq!(check(&s, &r).map_err(|e| e.status), Err(400));
        r.http11 = false;
        assert_eq!(check(&s, &r), Ok(()));
        let mut r = req("POST", Some("127.0.0.1"), None);
        r.hosts.push("evil.example");
        assert_eq!(check(&s, &r).map_err(|e| e.status), Err(400));
        // The configured interface is a name; an IPv6 one in brackets.
        let v6 = Site::new("::1", &[]);
        assert!(v6.knows("[::1]") && v6.knows("::1") && !v6.knows("[::2]"));
        let cfg = json!({"config": {"controller": {"hostnames": ["media.lan", 7]}}});
        assert!(Site::from_config("127.0.0.1", &cfg).knows("MEDIA.lan"));
        assert!(!Site::from_config("127.0.0.1", &json!({})).knows("media.lan"));
    }

    #[test]
    fn origin_must_be_the_api_s_own() {
        let s = site();
        let ok = |h, o| check(&s, &req("POST", Some(h), Some(o))).is_ok();
        assert!(ok("127.0.0.1:4242", "http://127.0.0.1:4242"));
        assert!(ok("localhost:4242", "http://LOCALHOST:4242"));
        assert!(ok("[::1]:4242", "http://[::1]:4242"));
        assert!(ok("sluice.example", "https://sluice.example"));
        assert!(ok("sluice.example", "http://sluice.example:80"));
        // Another site, another port of this machine, another scheme's port, null.
        assert!(!ok("127.0.0.1:4242", "http://evil.example"));
        assert!(!ok("127.0.0.1:4242", "http://127.0.0.1:8080"));
        assert!(!ok("127.0.0.1:4242", "http://localhost:4242"));
        assert!(!ok("sluice.example:443", "http://sluice.example"));
        assert!(!ok("127.0.0.1:4242", "null"));
        assert!(!ok("127.0.0.1:4242", "http://127.0.0.1:4242/"));
        assert!(!ok("127.0.0.1:4242", "http://x@127.0.0.1:4242"));
        assert!(!ok("127.0.0.1:4242", "file://"));
        // The audit's request: foreign Host and Origin.
        let r = check(
            &s,
            &req("POST", Some("evil.example"), Some("http://evil.example")),
        );
        assert_eq!(r.map_err(|e| e.status), Err(403));
        // Two Origins, or an Origin without a Host to compare with.
        let mut r = req(
            "POST",
            Some("127.0.0.1:4242"),
            Some("http://127.0.0.1:4242"),
        );
        r.origins.push("http://evil.example");
        assert!(check(&s, &r).is_err());
        let mut r = req("POST", None, Some("http://127.0.0.1:4242"));
        r.http11 = false;
        assert!(check(&s, &r).is_err());
    }

    #[test]
    fn fetch_metadata_and_methods() {
        let s = site();
        let with = |site_v| {
            let mut r = req("POST", Some("127.0.0.1:4242"), None);
            r.fetch_site = Some(site_v);
            check(&s, &r).map_err(|e| e.status)
        };
        assert_eq!(with("same-origin"), Ok(()));
        assert_eq!(with("none"), Ok(()));
        assert_eq!(with("cross-site"), Err(403));
        assert_eq!(with("same-site"), Err(403));
        for m in ["PUT", "DELETE", "OPTIONS", "HEAD", "get"] {
            let r = check(&s, &req(m, Some("127.0.0.1"), None));
            assert_eq!(r.map_err(|e| e.status), Err(405), "{m}");
        }
        assert!(check(&s, &req("GET", Some("127.0.0.1"), None)).is_ok());
    }

    #[test]
    fn get_runs_reads_only() {
        let calls = |v: Value| v.as_object().cloned().unwrap_or_default();
        let reads = calls(json!({
            "streams": true, "config": true, "capabilities": true, "active_streams": ["clients"],
            "clients": {}, "totals": {}, "log": {"last": 5}, "streamkeys": true,
            "push_list": true, "push_auto_list": true, "recordings": true, "api_tokens": true,
            "authorize": {"username": "admin", "password": ""}
        }));
        assert!(writes(&reads).is_empty(), "{:?}", writes(&reads));
        let first = calls(json!({"authorize": {"new_username": "a", "new_password": "b"}}));
        assert_eq!(writes(&first), ["authorize"]);
        for (c, a) in [
            ("streams", json!({"x": {"source": "push://"}})),
            ("config", json!({"triggers": {}})),
            ("addstream", json!({"x": {"source": "push://"}})),
            ("deletestream", json!("live")),
            ("config_backup", json!(true)),
            ("config_restore", json!({})),
            ("config_reload", json!(true)),
            ("api_token_add", json!("t")),
            ("push_start", json!(["live", "rtmp://h/a/b"])),
            ("nuke_stream", json!("live")),
            ("shutdown", json!(true)),
            ("no_such_call", json!(true)),
        ] {
            assert!(!read_only(c, &a), "{c}");
        }
    }

    #[test]
    fn hosts_and_origins_parse() {
        let hp = |host: &str, port| {
            Some(HostPort {
                host: host.into(),
                port,
            })
        };
        assert_eq!(split_host("Example.COM:80"), hp("example.com", Some(80)));
        assert_eq!(split_host("[::1]:4242"), hp("[::1]", Some(4242)));
        assert_eq!(split_host("[::1]x"), None);
        assert_eq!(split_host("a:b:c"), None);
        assert_eq!(
            split_origin("https://a.example"),
            Some(Origin {
                scheme: "https",
                host: "a.example".into(),
                port: 443
            })
        );
        assert_eq!(split_origin("null"), None);
        assert!(shown(&"\n".repeat(500)).len() < 300);
    }
}
