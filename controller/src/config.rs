//! The config file, in MistServer's layout (`docs/MISTSERVER.md`, "Config file"):
//! `config.controller`, `config.protocols[]`, `streams{NAME:{source,DVR}}`, `account`.
//! The whole document is kept as JSON so that keys Sluice does not know survive a write.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use connectors::serve::rtsp_auth::ct_eq;

use crate::state::open::OpenRefusal;
use serde_json::{json, Value};

/// Protocol entries that are HTTP-based outputs served by the HTTP connector (MistServer lists
/// each as its own entry without a port).
pub const HTTP_OUTPUTS: &[&str] = &[
    "HLS", "CMAF", "HDS", "FLV", "HTTPTS", "MP4", "JPG", "DASH", "HSS", "WebM", "JSON", "AAC",
    "MP3", "H264", "SubRip", "WAV", "EBML", "OGG",
];

/// A listener protocol Sluice runs ([`LISTENERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownListener {
    /// The protocol entry's `connector` (`RTMP`, `HTTP`, …; matched without regard to case).
    pub connector: &'static str,
    /// The port an entry without one listens on (MistServer's default).
    pub default_port: u16,
}

impl KnownListener {
    const fn new(connector: &'static str, default_port: u16) -> KnownListener {
        KnownListener {
            connector,
            default_port,
        }
    }
}

/// Listener protocols Sluice runs, with MistServer's default ports.
pub const LISTENERS: &[KnownListener] = &[
    KnownListener::new("RTMP", 1935),
    KnownListener::new("HTTP", 8080),
    KnownListener::new("TS", 8888),
    KnownListener::new("RTSP", 5554),
    KnownListener::new("DTSC", 4200),
    KnownListener::new("HTTPS", 4433),
    KnownListener::new("RTMPS", 4936),
    KnownListener::new("RTSPS", 5322),
];

/// A listener that speaks TLS ([`TLS_LISTENERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsListener {
    /// Its `connector` name (`HTTPS`, `RTMPS`, `RTSPS`).
    pub connector: &'static str,
    /// The plain protocol it carries inside TLS.
    pub plain: &'static str,
}

impl TlsListener {
    const fn new(connector: &'static str, plain: &'static str) -> TlsListener {
        TlsListener { connector, plain }
    }
}

/// The listeners that speak TLS, and the plain protocol each carries.
pub const TLS_LISTENERS: &[TlsListener] = &[
    TlsListener::new("HTTPS", "HTTP"),
    TlsListener::new("RTMPS", "RTMP"),
    TlsListener::new("RTSPS", "RTSP"),
];

/// Whether `connector` names a listener that speaks TLS.
pub fn is_tls_listener(connector: &str) -> bool {
    TLS_LISTENERS.iter().any(|t| t.connector == connector)
}

/// Reads the config at `path`. A missing file gets the default written there first; a file
/// that does not parse is an error naming `path:line:column` (and the file is left alone).
pub fn load_or_create(path: &Path) -> Result<Value> {
    if !path.exists() {
        let v = default_config();
        write(path, &v)
            .with_context(|| format!("writing the default config {}", path.display()))?;
        crate::logs::controller(&format!("wrote a default config to {}", path.display()));
        return Ok(v);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: config does not parse: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if !v.is_object() {
        bail!("{}:1:1: config must be a JSON object", path.display());
    }
    Ok(v)
}

/// Writes the config atomically: a temporary file beside it (mode 0600: it holds password
/// and token hashes), flushed to disk, renamed over the old one, and the folder synced.
pub fn write(path: &Path, v: &Value) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all((serde_json::to_string_pretty(v)? + "\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Ok(d) = std::fs::File::open(dir.unwrap_or(Path::new("."))) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The committed demo clip, if this binary was built from a checkout that has it.
pub fn demo_source() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo.flv");
    p.canonicalize().ok()
}

/// The default config: controller on 127.0.0.1:4242, RTMP on 1935, HTTP on 8080, RTSP on
/// 5554 and DTSC on 4200 (MistServer's ports) on every interface, IPv4 and IPv6, the demo
/// stream (the committed clip looped live) and a `live` stream that takes pushes.
pub fn default_config() -> Value {
    let mut streams = serde_json::Map::new();
    if let Some(demo) = demo_source() {
        streams.insert(
            "demo".into(),
            json!({"name": "demo", "source": demo.to_string_lossy()}),
        );
    }
    streams.insert("live".into(), json!({"name": "live", "source": "push://"}));
    json!({
        "config": {
            "controller": {"interface": "127.0.0.1", "port": 4242},
            "protocols": [
                {"connector": "RTMP", "port": 1935},
                {"connector": "HTTP", "port": 8080},
                {"connector": "RTSP", "port": 5554},
                {"connector": "DTSC", "port": 4200}
            ]
        },
        "streams": streams
    })
}

/// The interface a protocol entry without one binds: every interface, IPv4 and IPv6 (a
/// dual-stack socket; IPv4 only where the machine has no IPv6). The API stays on loopback.
pub const ANY_INTERFACE: &str = "::";

/// A listener the controller must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// `RTMP` or `HTTP`.
    pub connector: String,
    /// TCP port.
    pub port: u16,
    /// Interface address to bind (default `::`: every interface, IPv4 and IPv6).
    pub interface: String,
    /// The entry's `stream`: what a TS client that names no stream plays.
    pub stream: Option<String>,
    /// Its connection limits as command-line arguments ([`limit_args`]), and for a TLS
    /// listener its `--cert` and `--key`.
    pub limits: Vec<String>,
}

/// The connection limits of a listener, as `sluice connector` arguments: from the config's
/// `limits` object (`connections`: every listener together; `connections_per_address`;
/// `request_timeout` and `stall_timeout` in seconds; `max_queued` and `send_buffer` in
/// bytes) and the protocol
/// entry's own `max_connections` and `max_per_address`, which win. Unset ones are left to the
/// listener's defaults (`connectors::core::limits::Limits::default`).
pub fn limit_args(cfg: &Value, entry: Option<&Value>) -> Vec<String> {
    let global = cfg.pointer("/config/limits");
    let num = |v: Option<&Value>, key: &str| v.and_then(|v| v.get(key)).and_then(|v| v.as_u64());
    let mut args = Vec::new();
    let mut put = |flag: &str, v: Option<u64>| {
        if let Some(v) = v {
            args.push(format!("--{flag}"));
            args.push(v.to_string());
        }
    };
    put("max-total", num(global, "connections"));
    put(
        "max-connections",
        num(entry, "max_connections").or(num(global, "connections_per_listener")),
    );
    put(
        "max-per-address",
        num(entry, "max_per_address").or(num(global, "connections_per_address")),
    );
    put(
        "max-requests",
        num(entry, "max_requests").or(num(global, "requests")),
    );
    put("request-timeout", num(global, "request_timeout"));
    put("stall-timeout", num(global, "stall_timeout"));
    put("max-queued", num(global, "max_queued"));
    put("send-buffer", num(global, "send_buffer"));
    args
}

/// The listeners the config asks for. HTTP-based output entries (`HLS`, `CMAF`, …) are served
/// by the HTTP listener, which runs when the config has an `HTTP` entry or any such output.
pub fn listeners(cfg: &Value) -> Vec<ListenerSpec> {
    let empty = Vec::new();
    let protos = cfg
        .pointer("/config/protocols")
        .and_then(|p| p.as_array())
        .unwrap_or(&empty);
    let mut out: Vec<ListenerSpec> = Vec::new();
    let mut wants_http = false;
    for p in protos {
        let name = p.get("connector").and_then(|c| c.as_str()).unwrap_or("");
        let name = name.strip_prefix("Mist").unwrap_or(name);
        let name = name.strip_suffix(".exe").unwrap_or(name);
        if HTTP_OUTPUTS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            wants_http = true;
            continue;
        }
        let Some(known) = LISTENERS
            .iter()
            .find(|l| l.connector.eq_ignore_ascii_case(name))
        else {
            if !name.is_empty() {
                crate::logs::controller(&format!(
                    "protocol {name:?} is not served by this Sluice; ignored"
                ));
            }
            continue;
        };
        let (proto, default_port) = (known.connector, known.default_port);
        let port = p
            .get("port")
            .and_then(|v| v.as_u64())
            .map(|v| v as u16)
            .unwrap_or(default_port);
        let interface = p
            .get("interface")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(ANY_INTERFACE)
            .to_string();
        let stream = p
            .get("stream")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut limits = limit_args(cfg, Some(p));
        if is_tls_listener(proto) {
            // The entry's own certificate, else the config's `tls` one.
            let path = |key: &str| {
                p.get(key)
                    .or_else(|| cfg.pointer(&format!("/config/tls/{key}")))
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let (Some(cert), Some(key)) = (path("cert"), path("key")) else {
                crate::logs::controller(&format!(
                    "{proto} on port {port} needs a certificate: set \"cert\" and \"key\" (PEM files) \
                     in its protocol entry or in config.tls; not started"
                ));
                continue;
            };
            limits.extend(["--cert".into(), cert, "--key".into(), key]);
        }
        out.push(ListenerSpec {
            connector: proto.into(),
            port,
            interface,
            stream,
            limits,
        });
    }
    if wants_http && !out.iter().any(|l| l.connector == "HTTP") {
        out.push(ListenerSpec {
            connector: "HTTP".into(),
            port: 8080,
            interface: ANY_INTERFACE.into(),
            stream: None,
            limits: limit_args(cfg, None),
        });
    }
    out
}

/// Where the API is served over HTTPS as well ([`api_tls`]).
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// `config.controller.tls_port` (1 to 65535).
    pub port: u16,
    /// The certificate and key (PEM files).
    pub files: connectors::core::tls::CertFiles,
}

/// The API's HTTPS port and certificate, when `config.controller.tls_port` is set: the PEM
/// files of `config.controller.cert`/`key`, else of `config.tls`. `None` without a port or
/// without certificate files (then logged).
pub fn api_tls(cfg: &Value) -> Option<ApiTls> {
    let c = cfg.pointer("/config/controller")?;
    let port = c
        .get("tls_port")
        .and_then(|v| v.as_u64())
        .filter(|p| *p > 0 && *p <= 65535)? as u16;
    let path = |key: &str| {
        c.get(key)
            .or_else(|| cfg.pointer(&format!("/config/tls/{key}")))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from)
    };
    match (path("cert"), path("key")) {
        (Some(cert), Some(key)) => Some(ApiTls {
            port,
            files: connectors::core::tls::CertFiles { cert, key },
        }),
        _ => {
            crate::logs::controller(
                "config.controller.tls_port needs a certificate (controller or config.tls \"cert\" and \"key\"); the API stays plain only",
            );
            None
        }
    }
}

/// Where the API listens ([`api_addr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAddr {
    /// `config.controller.interface` (default `127.0.0.1`; the API keeps to loopback
    /// whatever it says).
    pub iface: String,
    /// `config.controller.port` (default 4242).
    pub port: u16,
}

/// The API's address (`config.controller`).
pub fn api_addr(cfg: &Value) -> ApiAddr {
    let c = cfg.pointer("/config/controller");
    let iface = c
        .and_then(|c| c.get("interface"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("127.0.0.1");
    let port = c
        .and_then(|c| c.get("port"))
        .and_then(|v| v.as_u64())
        .unwrap_or(4242) as u16;
    ApiAddr {
        iface: iface.to_string(),
        port,
    }
}

/// Default of `config.max_wildcard_buffers`: buffers that may run at once for the
/// `BASE+SUFFIX` streams of one base.
pub const DEFAULT_MAX_WILDCARD_BUFFERS: u64 = 64;
/// Default of `config.max_buffers`: buffers that may run at once in all.
pub const DEFAULT_MAX_BUFFERS: u64 = 1024;

/// How many buffers may run at once ([`buffer_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// `config.max_wildcard_buffers`: buffers of the `BASE+SUFFIX` streams of one base (the
    /// base's own stream not counted).
    pub per_base: u64,
    /// `config.max_buffers`: buffers in all.
    pub total: u64,
}

/// The buffer caps, each a whole number ≥ 1; a missing or other value counts as its
/// default ([`DEFAULT_MAX_WILDCARD_BUFFERS`], [`DEFAULT_MAX_BUFFERS`]).
pub fn buffer_limits(cfg: &Value) -> BufferLimits {
    let get = |key: &str, default: u64| {
        cfg.pointer(key)
            .and_then(|v| v.as_u64())
            .filter(|n| *n >= 1)
            .unwrap_or(default)
    };
    BufferLimits {
        per_base: get("/config/max_wildcard_buffers", DEFAULT_MAX_WILDCARD_BUFFERS),
        total: get("/config/max_buffers", DEFAULT_MAX_BUFFERS),
    }
}

/// A stream's entry in the config (`streams.NAME`: `source`, `DVR`, …), looked up by
/// name; `BASE+SUFFIX` finds `BASE`'s (wildcard streams). `None` when neither is configured.
pub fn find_stream<'a>(cfg: &'a Value, name: &str) -> Option<&'a Value> {
    let streams = cfg.get("streams")?.as_object()?;
    match streams.get(name) {
        Some(v) => Some(v),
        None => streams.get(name.split_once('+')?.0),
    }
}

/// The file a file or folder source plays for stream `name`, confined to the media folders.
///
/// * A folder source serves each file in it as `BASE+FILENAME` (MistServer's folder
///   streams): `name` must have a `+` and the part after it names a file directly in the
///   folder (stream names cannot hold `/` or `..`).
/// * With `config.media_folders` (a list of folders), the file must lie inside one of them
///   once symbolic links are resolved; without it, any file the config names may be played
///   (the config is the admin's).
///
/// Errors: `notfound` for a missing file or a folder stream without a file name;
/// `forbidden` for a file outside the media folders.
pub fn file_source(cfg: &Value, name: &str, source: &str) -> Result<String, OpenRefusal> {
    let mut path = PathBuf::from(source);
    if path.is_dir() {
        let file = name
            .split_once('+')
            .map(|(_, f)| f)
            .filter(|f| !f.is_empty() && !f.starts_with('.'))
            .ok_or_else(|| {
                OpenRefusal::new(
                    "notfound",
                    format!("{name} is a folder of files: play {name}+FILENAME"),
                )
            })?;
        path.push(file);
    }
    let real = std::fs::canonicalize(&path).map_err(|_| {
        OpenRefusal::new(
            "notfound",
            format!("source {} of {name} does not exist", path.display()),
        )
    })?;
    if !real.is_file() {
        return Err(OpenRefusal::new(
            "notfound",
            format!("source {} of {name} is not a file", path.display()),
        ));
    }
    if let Some(folders) = media_folders(cfg) {
        if !folders.iter().any(|f| real.starts_with(f)) {
            return Err(OpenRefusal::new(
                "forbidden",
                format!(
                    "source {} of {name} is outside the media folders",
                    path.display()
                ),
            ));
        }
    }
    Ok(real.to_string_lossy().into_owned())
}

/// `config.media_folders`, resolved (folders that do not exist are left out); `None` when
/// not set.
pub fn media_folders(cfg: &Value) -> Option<Vec<PathBuf>> {
    folders(cfg, "/config/media_folders")
}

/// `config.recording_folders`: the folders recordings (file push targets) may be written in,
/// resolved like [`media_folders`]. `None` when not configured (any absolute path then).
pub fn recording_folders(cfg: &Value) -> Option<Vec<PathBuf>> {
    folders(cfg, "/config/recording_folders")
}

fn folders(cfg: &Value, pointer: &str) -> Option<Vec<PathBuf>> {
    let list = cfg.pointer(pointer)?.as_array()?;
    Some(
        list.iter()
            .filter_map(|v| v.as_str())
            .filter_map(|f| std::fs::canonicalize(f).ok())
            .collect(),
    )
}

/// The stream a stream key publishes into (`streamkeys` in the config, MistServer's
/// `streamkey_add`), when `key` is one.
pub fn stream_of_key(cfg: &Value, key: &str) -> Option<String> {
    cfg.get("streamkeys")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// Whether a stream name is acceptable: 1 to 100 bytes of `[A-Za-z0-9_+.-]`, not starting
/// with a dot and without `..` (names become file names: sockets, recordings, segments).
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b))
}

/// What a publisher proves it knows a stream's key with.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// The key itself (RTMP `?key=`, an RTSP `?key=` or Basic password).
    Key(&'a str),
    /// An RTSP `Authorization: Digest …` header (RFC 2617 §3.2.2) for `method`, checked
    /// against the key without it leaving the controller.
    Digest { header: &'a str, method: &'a str },
}

/// The refusal when the key is missing or wrong (the connector asks for credentials).
pub const KEY_REFUSAL: &str = "wrong or missing stream key";

/// Whether a Digest `Authorization` header was computed with `key` as the password
/// (RFC 7616 §3.4.1). Only ASCII headers: `digest_auth` takes character counts for byte
/// offsets and panics on other text. The response is compared in constant time.
fn digest_matches(header: &str, method: &str, key: &str) -> bool {
    if !header.is_ascii() {
        return false;
    }
    let Ok(h) = digest_auth::AuthorizationHeader::parse(header) else {
        return false;
    };
    let mut want = h.clone();
    let ctx = digest_auth::AuthContext::new_with_method(
        h.username.as_str(),
        key,
        h.uri.as_str(),
        Option::<&[u8]>::None,
        digest_auth::HttpMethod::from(method),
    );
    want.digest(&ctx);
    !h.response.is_empty()
        && ct_eq(
            want.response.to_ascii_lowercase().as_bytes(),
            h.response.to_ascii_lowercase().as_bytes(),
        )
}

/// Whether `addr` is `rule`: an address, or a network in CIDR notation (`10.0.0.0/8`,
/// `2001:db8::/32`). An IPv4-mapped IPv6 peer (`::ffff:1.2.3.4`) counts as its IPv4 address.
pub fn addr_matches(rule: &str, addr: &str) -> bool {
    use std::net::IpAddr;
    let Ok(mut a) = addr.parse::<IpAddr>() else {
        return rule == addr;
    };
    if let IpAddr::V6(v6) = a {
        if let Some(v4) = v6.to_ipv4_mapped() {
            a = IpAddr::V4(v4);
        }
    }
    let (net, bits) = match rule.split_once('/') {
        Some((n, b)) => match b.parse::<u32>() {
            Ok(b) => (n, Some(b)),
            Err(_) => return false,
        },
        None => (rule, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let b = bits.unwrap_or(32).min(32);
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let b = bits.unwrap_or(128).min(128);
            let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Who may publish into a `push://` source: `push://` (loopback only), `push://ADDRS`
/// (those addresses and networks, comma-separated, CIDR allowed: `push://10.0.0.0/8,
/// 192.0.2.7`; and loopback), `push://ADDRS@KEY` or `push://@KEY` (the key is required,
/// from any address; with addresses, from those only). Returns `Err(reason)` when `addr`/`cred` may not publish; a missing
/// or wrong key is [`KEY_REFUSAL`].
pub fn may_publish(
    source: &str,
    addr: &str,
    cred: Credential<'_>,
) -> std::result::Result<(), String> {
    let Some(rest) = source.strip_prefix("push://") else {
        return Err("the stream's source is not push://".into());
    };
    let (host, want_key) = match rest.split_once('@') {
        Some((h, k)) => (h, Some(k)),
        None => (rest, None),
    };
    let loopback = addr
        .parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
        || addr.starts_with("::ffff:127.");
    if let Some(k) = want_key.filter(|k| !k.is_empty()) {
        let ok = match cred {
            Credential::None => false,
            Credential::Key(given) => ct_eq(given.as_bytes(), k.as_bytes()),
            Credential::Digest { header, method } => digest_matches(header, method, k),
        };
        if !ok {
            return Err(KEY_REFUSAL.into());
        }
    }
    let host = host.trim_end_matches('/');
    if host.is_empty() {
        if loopback || want_key.is_some_and(|k| !k.is_empty()) {
            return Ok(());
        }
        return Err(format!(
            "publishing from {addr} is not allowed (loopback only)"
        ));
    }
    if loopback
        || host
            .split(',')
            .map(str::trim)
            .any(|r| addr_matches(r, addr))
    {
        return Ok(());
    }
    Err(format!("publishing from {addr} is not allowed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.json");
        std::fs::write(&p, "{\n  \"config\": {,\n}").unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("bad.json:2:"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\n  \"config\": {,\n}"
        );
    }

    #[test]
    fn http_outputs_without_port_start_the_http_listener() {
        let cfg = json!({"config":{"protocols":[{"connector":"RTMP"},{"connector":"HLS"}]}});
        let l = listeners(&cfg);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].port, 1935);
        assert_eq!(l[1].connector, "HTTP");
        assert_eq!(l[1].port, 8080);
    }

    #[test]
    fn wildcard_streams_find_their_base() {
        let cfg = json!({"streams":{"live":{"source":"push://"}}});
        assert_eq!(find_stream(&cfg, "live+cam1"), cfg.pointer("/streams/live"));
        assert!(find_stream(&cfg, "other").is_none());
    }

    #[test]
    fn publish_rules() {
        use Credential::{Key, None};
        assert!(may_publish("push://", "127.0.0.1", None).is_ok());
        assert!(may_publish("push://", "10.0.0.5", None).is_err());
        assert!(may_publish("push://10.0.0.5", "10.0.0.5", None).is_ok());
        assert!(may_publish("push://10.0.0.0/8,192.0.2.7", "10.9.8.7", None).is_ok());
        assert!(may_publish("push://10.0.0.0/8, 192.0.2.7", "192.0.2.7", None).is_ok());
        assert!(may_publish("push://10.0.0.0/8,192.0.2.7", "192.0.2.8", None).is_err());
        assert!(may_publish("push://10.0.0.0/8", "::ffff:10.1.1.1", None).is_ok());
        assert!(may_publish("push://2001:db8::/32", "2001:db8::5", None).is_ok());
        assert!(may_publish("push://2001:db8::/32", "2001:db9::5", None).is_err());
        assert!(may_publish("push://10.0.0.0/8@k", "10.1.1.1", Key("x")).is_err());
        assert!(may_publish("push://@secret", "10.0.0.5", Key("secret")).is_ok());
        assert_eq!(
            may_publish("push://@secret", "127.0.0.1", Key("nope")),
            Err(KEY_REFUSAL.to_string())
        );
        assert!(may_publish("/some/file.flv", "127.0.0.1", None).is_err());
        // RFC 2617 §3.5's example, with the key as the password.
        let h = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let d = |method| Credential::Digest { header: h, method };
        assert!(may_publish("push://@Circle Of Life", "10.0.0.5", d("GET")).is_ok());
        assert!(may_publish("push://@Circle Of Life", "10.0.0.5", d("ANNOUNCE")).is_err());
        assert!(may_publish("push://@other", "10.0.0.5", d("GET")).is_err());
        // digest_auth sliced by character counts: a multibyte name aborted the controller.
        let multibyte = Credential::Digest {
            header: "Digest a\u{e9}=x, username=\"\u{e9}\"",
            method: "ANNOUNCE",
        };
        assert!(may_publish("push://@k", "10.0.0.5", multibyte).is_err());
    }
}
