//! Harness for Sluice's end-to-end tests: start the built server with its own config,
//! ports and rundir; run REAL clients (ffmpeg/ffprobe, GStreamer, rtmpdump) against it,
//! always wrapped in `timeout -k 5 N`; parse what they received; stop everything by pid.
//!
//! Environment: `SLUICE_BIN` (default `<workspace>/target/release/sluice`),
//! `SLUICE_FIXTURES` (default `<workspace>/target/fixtures`, made by
//! `scripts/make-fixtures.sh` if missing), `SLUICE_KEEP=1` keeps temp dirs.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------------------

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn sluice_bin() -> PathBuf {
    let p = std::env::var_os("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/sluice"));
    assert!(
        p.is_file(),
        "sluice binary {} not found: run `cargo build --release` (or scripts/test.sh), or set SLUICE_BIN",
        p.display()
    );
    p
}

/// The directory with `bframes.flv` and `nobframes.flv`; made on first use if missing.
pub fn fixtures_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("SLUICE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/fixtures"));
        if !dir.join("bframes.flv").is_file() || !dir.join("nobframes.flv").is_file() {
            require_tools(&["ffmpeg", "ffprobe"]);
            let st = Command::new(workspace_root().join("scripts/make-fixtures.sh"))
                .arg(&dir)
                .status()
                .expect("run scripts/make-fixtures.sh");
            assert!(
                st.success(),
                "scripts/make-fixtures.sh {} failed",
                dir.display()
            );
        }
        dir
    })
    .clone()
}

pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(name);
    assert!(p.is_file(), "fixture {} missing", p.display());
    p
}

/// The committed built-in demo (`fixtures/demo.flv`).
pub fn demo_flv() -> PathBuf {
    let p = std::env::var_os("SLUICE_DEMO")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("fixtures/demo.flv"));
    assert!(p.is_file(), "demo file {} missing", p.display());
    p.canonicalize().unwrap()
}

pub fn gst_count_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gst_count.py")
}

/// A missing client is a FAILURE, not a skip: scripts/install-test-deps.sh installs them.
pub fn require_tools(tools: &[&str]) {
    for t in tools {
        let found = if t.starts_with('/') {
            Path::new(t).is_file()
        } else {
            std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).any(|d| d.join(t).is_file()))
                .unwrap_or(false)
        };
        assert!(
            found,
            "required client `{t}` not found: run scripts/install-test-deps.sh"
        );
    }
}

pub fn require_gst() {
    require_tools(&["/usr/bin/python3", "gst-inspect-1.0", "timeout"]);
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('Gst','1.0'); from gi.repository import Gst",
        ])
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        out.status.success(),
        "python3 GStreamer bindings missing (python3-gst-1.0): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// Temp dirs and ports
// ---------------------------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn unique_temp_dir(label: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let d = std::env::temp_dir().join(format!(
        "sluice-e2e-{}-{}-{}-{}",
        label,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

/// A free TCP port on 127.0.0.1 (bind port 0). Ports handed out in this process are
/// never handed out twice, so parallel tests do not collide with each other.
pub fn free_port() -> u16 {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut used = USED.lock().unwrap();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

pub fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok()
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    let start = v.len().saturating_sub(lines);
    v[start..].join("\n")
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
}

pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // rest[0] = state, rest[1] = ppid
    if rest.first() == Some(&"Z") {
        return None; // zombie: already dead
    }
    let ppid = rest.get(1)?.parse().ok()?;
    Some(ProcInfo { pid, ppid, comm })
}

pub fn all_procs() -> Vec<ProcInfo> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(p) = proc_info(pid) {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// All live descendants of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<ProcInfo> {
    let procs = all_procs();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for c in procs.iter().filter(|c| c.ppid == p) {
            frontier.push(c.pid);
            out.push(c.clone());
        }
    }
    out
}

fn kill(pid: i32, sig: i32) -> bool {
    unsafe { libc::kill(pid, sig) == 0 }
}

pub fn sigkill(pid: u32) -> bool {
    kill(pid as i32, libc::SIGKILL)
}

// ---------------------------------------------------------------------------------------
// HTTP/1.0 client (no extra crates)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<HttpResponse> {
    http_request_headers(port, method, path, &[], body)
}

/// [`http_request`] with extra request headers.
pub fn http_request_headers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connect 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: sluice-e2e\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ctype, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some((_, b)) = body {
        bytes.extend_from_slice(b);
    }
    s.write_all(&bytes)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| {
        format!("read reply to {method} {path} (no complete reply within 10 s)")
    })?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow!(
                "no header end in reply to {path}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_str = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
}

pub fn http_get(port: u16, path: &str) -> Result<HttpResponse> {
    http_request(port, "GET", path, None)
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// The config layout Sluice shares with MistServer.
/// The API token every test server's config lists (by its SHA-256), sent by [`Server::api`].
pub const TEST_TOKEN: &str = "sluice-test-token";
/// SHA-256 of [`TEST_TOKEN`], as the config stores it.
pub const TEST_TOKEN_SHA256: &str =
    "08537c964a23f7187395a3bbfb508e97072617d064ab83fa69e31fcc9bc8a26a";

pub fn config_json(api: u16, rtmp: u16, http: u16, streams: Value) -> Value {
    json!({
        "config": {
            "controller": {"interface": "127.0.0.1", "port": api},
            "api_tokens": [{"name": "tests", "sha256": TEST_TOKEN_SHA256}],
            "protocols": [
                {"connector": "RTMP", "port": rtmp, "interface": "127.0.0.1"},
                {"connector": "HTTP", "port": http, "interface": "127.0.0.1"}
            ]
        },
        "streams": streams
    })
}

pub fn default_streams() -> Value {
    json!({
        "live": {"name": "live", "source": "push://"},
        "demo": {"name": "demo", "source": demo_flv().to_str().unwrap()}
    })
}

#[derive(Debug)]
pub struct StopReport {
    /// How long the controller took to exit after SIGTERM (None: needed SIGKILL).
    pub exited_after_term: Option<Duration>,
    /// Descendants that were still alive after the controller was gone (then killed).
    pub leftovers: Vec<ProcInfo>,
    pub status: Option<ExitStatus>,
}

pub struct Server {
    pub pid: u32,
    child: Option<Child>,
    pub api_port: u16,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub rundir: PathBuf,
    pub stderr_path: PathBuf,
    stopped: Option<StopReport>,
}

impl Server {
    /// Default streams (`live` = push://, `demo` = the committed demo), free ports.
    pub fn start() -> Server {
        Self::start_with_streams(default_streams())
    }

    pub fn start_with_streams(streams: Value) -> Server {
        Self::start_with_config(|cfg| cfg["streams"] = streams)
    }

    /// Default config with free ports, changed by `edit` before the server starts.
    ///
    /// A port found free can be taken before Sluice binds it (any process's outgoing
    /// connection may get it as its local port): then the start is retried on new ports.
    pub fn start_with_config(edit: impl FnOnce(&mut Value)) -> Server {
        Self::start_with_env(&[], edit)
    }

    /// As [`Server::start_with_config`], with `env` added to the controller's environment
    /// (and so its children's).
    pub fn start_with_env(env: &[(&str, &str)], edit: impl FnOnce(&mut Value)) -> Server {
        Self::start_with_args(&[], env, edit)
    }

    /// As [`Server::start_with_env`], with `args` added to `sluice`'s command line (after
    /// `-c CONFIG --rundir DIR`), for example `["--account", "admin:pw"]`.
    pub fn start_with_args(
        args: &[&str],
        env: &[(&str, &str)],
        edit: impl FnOnce(&mut Value),
    ) -> Server {
        let (mut api, mut rtmp, mut http) = (free_port(), free_port(), free_port());
        let mut cfg = config_json(api, rtmp, http, default_streams());
        edit(&mut cfg);
        let mut tries = 0;
        loop {
            let dir = unique_temp_dir("srv");
            let config_path = dir.join("config.json");
            fs::write(&config_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
            match Self::spawn(dir, config_path, api, rtmp, http, args, env) {
                Ok(srv) => return srv,
                Err(e) if tries < 3 && e.contains("Address already in use") => {
                    tries += 1;
                    let (a, r, h) = (free_port(), free_port(), free_port());
                    let moved = |v: &mut Value, from: u16, to: u16| {
                        if v["port"] == from {
                            v["port"] = to.into();
                        }
                    };
                    moved(&mut cfg["config"]["controller"], api, a);
                    if let Some(ps) = cfg["config"]["protocols"].as_array_mut() {
                        for p in ps {
                            moved(p, rtmp, r);
                            moved(p, http, h);
                        }
                    }
                    (api, rtmp, http) = (a, r, h);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn(
        dir: PathBuf,
        config_path: PathBuf,
        api: u16,
        rtmp: u16,
        http: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::result::Result<Server, String> {
        let bin = sluice_bin();
        let rundir = dir.join("run");
        fs::create_dir_all(&rundir).unwrap();
        let stderr_path = dir.join("server.stderr");
        let errf = fs::File::create(&stderr_path).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .arg("--rundir")
            .arg(&rundir)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(errf.try_clone().unwrap())
            .stderr(errf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut srv = Server {
            pid: child.id(),
            child: Some(child),
            api_port: api,
            rtmp_port: rtmp,
            http_port: http,
            dir,
            config_path,
            rundir,
            stderr_path,
            stopped: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = srv.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "sluice exited during startup with {st}\n--- server stderr ---\n{}",
                    srv.stderr_tail(60)
                ));
            }
            if port_accepts(rtmp) && port_accepts(http) {
                break;
            }
            // A listener that cannot bind is restarted by the controller every second:
            // give up on these ports as soon as one says so.
            let tail = srv.stderr_tail(60);
            if Instant::now() > deadline || tail.contains("Address already in use") {
                return Err(format!(
                    "sluice did not accept on RTMP {rtmp} and HTTP {http}\n--- server stderr ---\n{tail}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(srv)
    }

    pub fn rtmp_url(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.rtmp_port)
    }
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }
    pub fn hls_path(stream: &str) -> String {
        format!("/hls/{stream}/index.m3u8")
    }
    pub fn hls_url(&self, stream: &str) -> String {
        self.http_url(&Self::hls_path(stream))
    }
    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        http_get(self.http_port, path)
    }

    pub fn stderr_text(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    pub fn stderr_tail(&self, n: usize) -> String {
        tail(&self.stderr_text(), n)
    }

    /// `POST /api` on the controller port, retried for up to 5 s while it is not listening.
    pub fn api(&self, body: &Value) -> Result<Value> {
        let payload = serde_json::to_vec(body)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let auth = format!("Bearer {TEST_TOKEN}");
            match http_request_headers(
                self.api_port,
                "POST",
                "/api",
                &[("Authorization", &auth)],
                Some(("application/json", &payload)),
            ) {
                Ok(r) => {
                    if r.status != 200 {
                        bail!("POST /api -> HTTP {}: {}", r.status, r.text());
                    }
                    return serde_json::from_slice(&r.body)
                        .with_context(|| format!("API reply is not JSON: {}", r.text()));
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn active_streams(&self) -> Result<Vec<String>> {
        let v = self.api(&json!({"active_streams": true}))?;
        let arr = v
            .get("active_streams")
            .ok_or_else(|| anyhow!("no active_streams in {v}"))?;
        Ok(match arr {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            other => bail!("active_streams is {other}"),
        })
    }

    /// Waits up to 10 s for `stream` to be listed by `active_streams`; panics with the
    /// server's stderr tail if it never is.
    pub fn wait_live(&self, stream: &str) {
        let live = poll(Duration::from_secs(10), || {
            self.active_streams()
                .ok()
                .filter(|s| s.iter().any(|n| n == stream))
        });
        assert!(
            live.is_some(),
            "{stream} never became active\n{}",
            self.stderr_tail(20)
        );
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn procs(&self) -> Vec<ProcInfo> {
        descendants(self.pid)
    }

    /// The `sluice-RTMP` listener (a child of the controller).
    pub fn rtmp_listener(&self) -> Option<ProcInfo> {
        self.procs().into_iter().find(|p| p.comm == "sluice-RTMP")
    }

    /// Connection children of the RTMP listener with this comm (`RTMP play`, `RTMP publish`).
    pub fn rtmp_children(&self, comm: &str) -> Vec<ProcInfo> {
        let Some(l) = self.rtmp_listener() else {
            return vec![];
        };
        all_procs()
            .into_iter()
            .filter(|p| p.ppid == l.pid && p.comm == comm)
            .collect()
    }

    /// Wait (up to `limit`) until `n` `RTMP play` children exist; returns how many there are.
    pub fn wait_rtmp_players(&self, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let k = self.rtmp_children("RTMP play").len();
            if k >= n || Instant::now() > deadline {
                return k;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM the controller, wait up to 5 s, then SIGKILL its process group (and any
    /// descendant seen before that is still alive). Idempotent.
    pub fn stop(&mut self) -> &StopReport {
        if self.stopped.is_none() {
            let before = descendants(self.pid);
            let mut child = self.child.take().unwrap();
            let t0 = Instant::now();
            let mut exited_after_term = None;
            let mut status = None;
            if let Ok(Some(st)) = child.try_wait() {
                status = Some(st);
            } else {
                kill(self.pid as i32, libc::SIGTERM);
                while t0.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(st)) = child.try_wait() {
                        exited_after_term = Some(t0.elapsed());
                        status = Some(st);
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
            // Whatever is left of the group, by pid.
            kill(-(self.pid as i32), libc::SIGKILL);
            if status.is_none() {
                let _ = child.kill();
                status = child.wait().ok();
            }
            // Give the kernel a moment to reparent/reap, then look for survivors.
            thread::sleep(Duration::from_millis(200));
            let mut leftovers = Vec::new();
            for p in before {
                if let Some(now) = proc_info(p.pid) {
                    if now.comm == p.comm {
                        leftovers.push(now);
                        sigkill(p.pid);
                    }
                }
            }
            self.stopped = Some(StopReport {
                exited_after_term,
                leftovers,
                status,
            });
        }
        self.stopped.as_ref().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- sluice (pid {}) stderr tail, kept in {} ---\n{}\n--- end of server stderr ---",
                self.pid,
                self.dir.display(),
                self.stderr_tail(80)
            );
        } else if std::env::var_os("SLUICE_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A client process run as `timeout -k 5 SECS prog args…`; stdout is read by a thread that
/// records when each chunk arrived, stderr goes to a file.
pub struct Client {
    pub label: String,
    pub cmdline: String,
    child: Child,
    pub started: Instant,
    stderr_path: PathBuf,
    chunks: Chunks,
    reader: Option<JoinHandle<()>>,
}

pub struct ClientOutput {
    pub label: String,
    pub cmdline: String,
    pub status: ExitStatus,
    pub started: Instant,
    pub ended: Instant,
    pub chunks: Vec<(Instant, Vec<u8>)>,
    pub stderr: String,
}

pub fn spawn_client(dir: &Path, label: &str, secs: u64, prog: &str, args: &[String]) -> Client {
    require_tools(&["timeout", prog]);
    let stderr_path = dir.join(format!("{label}.stderr"));
    let errf = fs::File::create(&stderr_path).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &secs.to_string(), prog]).args(args);
    let cmdline = format!("timeout -k 5 {secs} {prog} {}", args.join(" "));
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errf)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let chunks: Chunks = Arc::new(Mutex::new(Vec::new()));
    let c2 = chunks.clone();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c2.lock().unwrap().push((Instant::now(), buf[..n].to_vec())),
            }
        }
    });
    Client {
        label: label.to_string(),
        cmdline,
        child,
        started,
        stderr_path,
        chunks,
        reader: Some(reader),
    }
}

impl Client {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// What arrived on stdout so far (the client keeps running).
    pub fn snapshot(&self) -> Vec<(Instant, Vec<u8>)> {
        self.chunks.lock().unwrap().clone()
    }
    pub fn stderr_now(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    pub fn wait(mut self) -> ClientOutput {
        let status = self.child.wait().expect("wait client");
        let ended = Instant::now();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let chunks = std::mem::take(&mut *self.chunks.lock().unwrap());
        ClientOutput {
            label: self.label.clone(),
            cmdline: self.cmdline.clone(),
            status,
            started: self.started,
            ended,
            chunks,
            stderr: self.stderr_now(),
        }
    }
}

impl ClientOutput {
    pub fn stdout(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .collect()
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }
    pub fn timed_out(&self) -> bool {
        self.status.code() == Some(124) || self.status.code() == Some(137)
    }
    /// Label, command line, exit status, how long it ran, stderr tail: for assert messages.
    pub fn describe(&self) -> String {
        format!(
            "[{}] `{}` -> {} after {:.1} s; stdout {} bytes\n  stderr tail:\n{}",
            self.label,
            self.cmdline,
            self.status,
            (self.ended - self.started).as_secs_f64(),
            self.stdout().len(),
            tail(&self.stderr, 15)
        )
    }
}

/// stdout split into lines, each with the time its last byte arrived.
pub fn timed_lines(chunks: &[(Instant, Vec<u8>)]) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (t, c) in chunks {
        for &b in c {
            if b == b'\n' {
                out.push((*t, String::from_utf8_lossy(&cur).into_owned()));
                cur.clear();
            } else {
                cur.push(b);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// ffmpeg: publisher, framecrc player, ffprobe
// ---------------------------------------------------------------------------------------

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `ffmpeg -re -i FILE -c copy -f flv rtmp://…/live/STREAM`
pub fn ffmpeg_publish(dir: &Path, label: &str, file: &Path, url: &str, secs: u64) -> Client {
    let args = s(&[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-i",
        file.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "flv",
        url,
    ]);
    spawn_client(dir, label, secs, "ffmpeg", &args)
}

/// Play any URL with ffmpeg and print one framecrc line per packet, flushed per packet
/// (`-copyinkf` so a leading non-keyframe is kept and visible; `-rw_timeout` ends RTMP).
pub fn ffmpeg_framecrc(
    dir: &Path,
    label: &str,
    url: &str,
    pre_input: &[&str],
    secs: u64,
) -> Client {
    let mut args = s(&["-hide_banner", "-nostdin", "-loglevel", "warning"]);
    if url.starts_with("rtmp://") {
        args.extend(s(&["-rw_timeout", "5000000"]));
    }
    args.extend(s(pre_input));
    args.extend(s(&[
        "-i",
        url,
        "-map",
        "0:v?",
        "-map",
        "0:a?",
        "-c",
        "copy",
        "-copyinkf",
        "-flush_packets",
        "1",
        "-f",
        "framecrc",
        "-",
    ]));
    spawn_client(dir, label, secs, "ffmpeg", &args)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Video,
    Audio,
    Other,
}

#[derive(Debug, Clone)]
pub struct Packet {
    /// ffmpeg's stream index.
    pub stream: u32,
    pub media: Media,
    pub dts: i64,
    pub pts: i64,
    pub size: u64,
    pub key: bool,
    pub at: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub packets: Vec<Packet>,
    /// stream index -> (media type, codec name) from the framecrc header
    pub streams: BTreeMap<u32, (String, String)>,
    /// stream index -> time base "1/1000"
    pub timebases: BTreeMap<u32, String>,
}

impl Capture {
    /// Parse `-f framecrc` output: `#media_type 0: video`, `#codec_id 0: h264`, then
    /// `idx, dts, pts, duration, size, crc[, F=0xN]` (no F= means keyframe).
    pub fn parse_framecrc(lines: &[(Instant, String)]) -> Capture {
        let mut cap = Capture::default();
        let mut media: HashMap<u32, Media> = HashMap::new();
        for (at, l) in lines {
            if let Some(rest) = l.strip_prefix('#') {
                let Some((k, v)) = rest.split_once(':') else {
                    continue;
                };
                let mut kw = k.split_whitespace();
                let (Some(name), Some(idx)) =
                    (kw.next(), kw.next().and_then(|i| i.parse::<u32>().ok()))
                else {
                    continue;
                };
                let v = v.trim().to_string();
                match name {
                    "media_type" => {
                        media.insert(
                            idx,
                            match v.as_str() {
                                "video" => Media::Video,
                                "audio" => Media::Audio,
                                _ => Media::Other,
                            },
                        );
                        cap.streams.entry(idx).or_default().0 = v;
                    }
                    "codec_id" => cap.streams.entry(idx).or_default().1 = v,
                    "tb" => {
                        cap.timebases.insert(idx, v);
                    }
                    _ => {}
                }
                continue;
            }
            let f: Vec<&str> = l.split(',').map(|x| x.trim()).collect();
            if f.len() < 6 {
                continue;
            }
            let (Ok(idx), Ok(dts), Ok(pts), Ok(size)) = (
                f[0].parse::<u32>(),
                f[1].parse::<i64>(),
                f[2].parse::<i64>(),
                f[4].parse::<u64>(),
            ) else {
                continue;
            };
            let key = match f.get(6).and_then(|x| x.strip_prefix("F=0x")) {
                None => true,
                Some(h) => u32::from_str_radix(h, 16)
                    .map(|v| v & 1 == 1)
                    .unwrap_or(false),
            };
            cap.packets.push(Packet {
                stream: idx,
                media: *media.get(&idx).unwrap_or(&Media::Other),
                dts,
                pts,
                size,
                key,
                at: *at,
            });
        }
        cap
    }

    pub fn from_output(out: &ClientOutput) -> Capture {
        Self::parse_framecrc(&timed_lines(&out.chunks))
    }

    pub fn video(&self) -> Vec<&Packet> {
        self.packets
            .iter()
            .filter(|p| p.media == Media::Video)
            .collect()
    }
    pub fn audio(&self) -> Vec<&Packet> {
        self.packets
            .iter()
            .filter(|p| p.media == Media::Audio)
            .collect()
    }
    pub fn video_keyframes(&self) -> usize {
        self.video().iter().filter(|p| p.key).count()
    }
    /// Video packets whose pts differs from dts (composition offsets carried through).
    pub fn reordered(&self) -> usize {
        self.video().iter().filter(|p| p.pts != p.dts).count()
    }
    pub fn codec(&self, media: &str) -> Option<String> {
        self.streams
            .values()
            .find(|(m, _)| m == media)
            .map(|(_, c)| c.clone())
    }
    pub fn summary(&self) -> String {
        let v = self.video();
        format!(
            "streams {:?}; video {} (key {}, pts!=dts {}, dts {:?}..{:?}); audio {}",
            self.streams,
            v.len(),
            self.video_keyframes(),
            self.reordered(),
            v.first().map(|p| p.dts),
            v.last().map(|p| p.dts),
            self.audio().len()
        )
    }
    /// Per stream, in index order: (codec, packets, keyframes, pts in ms from the stream's
    /// first dts, in decode order). Times are converted with the stream's time base.
    pub fn per_stream(&self) -> Vec<StreamPackets> {
        self.streams
            .iter()
            .map(|(&idx, (_, codec))| {
                let (num, den) = self
                    .timebases
                    .get(&idx)
                    .and_then(|tb| tb.split_once('/'))
                    .and_then(|(n, d)| Some((n.parse::<i64>().ok()?, d.parse::<i64>().ok()?)))
                    .unwrap_or((1, 1000));
                let ps: Vec<&Packet> = self.packets.iter().filter(|p| p.stream == idx).collect();
                let first = ps.first().map(|p| p.dts).unwrap_or(0);
                // framecrc prints an unset PTS as i64::MIN.
                let set: Vec<&&Packet> = ps.iter().filter(|p| p.pts != i64::MIN).collect();
                StreamPackets {
                    codec: codec.clone(),
                    packets: ps.len(),
                    keyframes: ps.iter().filter(|p| p.key).count(),
                    pts_ms: set
                        .iter()
                        .map(|p| (p.pts - first) * num * 1000 / den)
                        .collect(),
                    unset_pts: ps.len() - set.len(),
                }
            })
            .collect()
    }

    /// The video frames' DTS in ms (converted with the video stream's time base), in decode
    /// order.
    pub fn video_ms(&self) -> Vec<i64> {
        let v = self.video();
        let Some(first) = v.first() else {
            return Vec::new();
        };
        let (num, den) = self
            .timebases
            .get(&first.stream)
            .and_then(|tb| tb.split_once('/'))
            .and_then(|(n, d)| Some((n.parse::<i64>().ok()?, d.parse::<i64>().ok()?)))
            .unwrap_or((1, 1000));
        v.iter().map(|p| p.dts * num * 1000 / den).collect()
    }

    /// How long after `t` the first video frame arrived (`None`: none did): how soon a
    /// viewer resumed once its upstream was back.
    pub fn first_video_after(&self, t: Instant) -> Option<Duration> {
        self.video()
            .iter()
            .find(|p| p.at > t)
            .map(|p| p.at.duration_since(t))
    }

    /// Largest gap between consecutive video dts, and whether dts never goes backwards.
    pub fn video_dts_check(&self) -> (i64, bool) {
        let v = self.video();
        let mut max_gap = 0;
        let mut mono = true;
        for w in v.windows(2) {
            let d = w[1].dts - w[0].dts;
            max_gap = max_gap.max(d);
            if d < 0 {
                mono = false;
            }
        }
        (max_gap, mono)
    }
}

/// The streams of fixture `name` as ffmpeg reads the file itself (what an output of it is
/// compared with).
pub fn fixture_streams(name: &str) -> Vec<StreamPackets> {
    let dir = unique_temp_dir("fixture-streams");
    let out = ffmpeg_framecrc(&dir, "source", fixture(name).to_str().unwrap(), &[], 30).wait();
    let streams = Capture::from_output(&out).per_stream();
    assert!(
        !streams.is_empty(),
        "ffmpeg read nothing of {name}: {}",
        out.describe()
    );
    streams
}

/// One stream of a [`Capture`], summed up by [`Capture::per_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPackets {
    pub codec: String,
    pub packets: usize,
    pub keyframes: usize,
    pub pts_ms: Vec<i64>,
    /// Packets the client gave no PTS (ffmpeg's RTSP demuxer, for the first packet of a
    /// B-frame stream); left out of `pts_ms`.
    pub unset_pts: usize,
}

impl StreamPackets {
    /// Asserts `self` has the codec and packet counts of `want` and the same presentation
    /// times (from the first dts) to within `tolerance_ms` each, sorted, since outputs may
    /// start a stream at another composition offset origin.
    pub fn assert_matches(&self, want: &StreamPackets, tolerance_ms: i64, what: &str) {
        assert_eq!(
            (&self.codec, self.packets, self.keyframes),
            (&want.codec, want.packets, want.keyframes),
            "{what}: codec, packets, keyframes"
        );
        let mut a = self.pts_ms.clone();
        let mut b = want.pts_ms.clone();
        a.sort_unstable();
        b.sort_unstable();
        // A packet without PTS is the stream's first (its earliest presentation at most).
        assert!(
            self.unset_pts <= 1,
            "{what}: {} packets without PTS",
            self.unset_pts
        );
        b.drain(..self.unset_pts.min(b.len()));
        let shift = a[0] - b[0];
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - shift - y).abs())
            .max()
            .unwrap_or(0);
        assert!(
            worst <= tolerance_ms,
            "{what}: presentation times differ by up to {worst} ms"
        );
    }
}

#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub codec_type: String,
    pub codec_name: String,
    pub profile: String,
    pub width: i64,
    pub height: i64,
    pub sample_rate: i64,
    pub channels: i64,
    pub nb_read_packets: Option<i64>,
}

pub fn ffprobe_args(url: &str, pre_input: &[&str], count: bool) -> Vec<String> {
    let mut a = s(&["-v", "error", "-hide_banner"]);
    if url.starts_with("rtmp://") {
        a.extend(s(&["-rw_timeout", "5000000"]));
    }
    a.extend(s(pre_input));
    if count {
        a.push("-count_packets".into());
    }
    a.extend(s(&[
        "-show_entries",
        "stream=codec_type,codec_name,profile,width,height,sample_rate,channels,nb_read_packets",
        "-of",
        "json",
        url,
    ]));
    a
}

/// `ffprobe -of json -show_entries stream=…` in the background.
pub fn ffprobe_spawn(
    dir: &Path,
    label: &str,
    url: &str,
    pre_input: &[&str],
    count: bool,
    secs: u64,
) -> Client {
    spawn_client(
        dir,
        label,
        secs,
        "ffprobe",
        &ffprobe_args(url, pre_input, count),
    )
}

pub fn parse_ffprobe_streams(json_text: &str) -> Result<Vec<StreamInfo>> {
    let v: Value =
        serde_json::from_str(json_text).with_context(|| format!("ffprobe output: {json_text}"))?;
    let mut out = Vec::new();
    for st in v["streams"].as_array().cloned().unwrap_or_default() {
        let gs = |k: &str| st.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let gi = |k: &str| {
            st.get(k)
                .and_then(|x| {
                    x.as_i64()
                        .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(0)
        };
        out.push(StreamInfo {
            codec_type: gs("codec_type"),
            codec_name: gs("codec_name"),
            profile: gs("profile"),
            width: gi("width"),
            height: gi("height"),
            sample_rate: gi("sample_rate"),
            channels: gi("channels"),
            nb_read_packets: st.get("nb_read_packets").map(|_| gi("nb_read_packets")),
        });
    }
    Ok(out)
}

/// The `duration` (s) ffprobe reads from an FLV file fed on its stdin, where it cannot seek
/// to the last tag and has only `onMetaData` to go by; `None` when it finds none ("N/A").
pub fn flv_duration_on_pipe(file: &Path) -> Option<f64> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ffprobe -v error -show_entries format=duration -of csv=p=0 -i pipe:0 < '{}'",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe of {}", file.display());
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Run ffprobe to completion on a URL or file: its output and the streams it reported.
pub fn ffprobe_full(
    dir: &Path,
    label: &str,
    url: &str,
    pre_input: &[&str],
    count: bool,
    secs: u64,
) -> (ClientOutput, Vec<StreamInfo>) {
    let out = ffprobe_spawn(dir, label, url, pre_input, count, secs).wait();
    let streams = parse_ffprobe_streams(&out.stdout_text()).unwrap_or_default();
    (out, streams)
}

/// The streams ffprobe finds (Err, with its stderr, when it finds none).
pub fn ffprobe(
    dir: &Path,
    label: &str,
    url: &str,
    pre_input: &[&str],
    secs: u64,
) -> Result<Vec<StreamInfo>> {
    let (out, streams) = ffprobe_full(dir, label, url, pre_input, false, secs);
    if streams.is_empty() {
        bail!("ffprobe found no streams in {url}:\n{}", out.describe());
    }
    Ok(streams)
}

pub fn find_stream<'a>(streams: &'a [StreamInfo], codec_type: &str) -> Option<&'a StreamInfo> {
    streams.iter().find(|s| s.codec_type == codec_type)
}

// ---------------------------------------------------------------------------------------
// rtmpdump and raw FLV tags
// ---------------------------------------------------------------------------------------

/// `rtmpdump -m 5 --live -r URL -o OUT` (OUT may be `-` for stdout).
pub fn rtmpdump(dir: &Path, label: &str, url: &str, out: &str, secs: u64) -> Client {
    let args = s(&["-m", "5", "--live", "-r", url, "-o", out]);
    spawn_client(dir, label, secs, "rtmpdump", &args)
}

#[derive(Debug, Clone)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data
    pub kind: u8,
    pub ts: u32,
    pub size: usize,
    pub key: bool,
    /// AVC/AAC sequence header
    pub seq_header: bool,
    /// composition time offset (video)
    pub cts: i32,
    pub at: Instant,
}

/// Parse an FLV byte stream (header + tags) as it arrived; a tag's `at` is when its last
/// byte arrived. A trailing partial tag is ignored.
pub fn parse_flv_timed(chunks: &[(Instant, Vec<u8>)]) -> Result<Vec<FlvTag>> {
    let mut data = Vec::new();
    let mut ends = Vec::new(); // (end offset, time)
    for (t, c) in chunks {
        data.extend_from_slice(c);
        ends.push((data.len(), *t));
    }
    let time_at = |off: usize| -> Instant {
        let i = ends.partition_point(|(e, _)| *e < off);
        ends.get(i).map(|x| x.1).unwrap_or_else(Instant::now)
    };
    if data.len() < 13 {
        return Ok(vec![]);
    }
    if &data[..3] != b"FLV" {
        bail!("not FLV: starts with {:02x?}", &data[..data.len().min(16)]);
    }
    let hlen = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut off = hlen + 4;
    let mut tags = Vec::new();
    while off + 11 <= data.len() {
        let kind = data[off] & 0x1f;
        let size = ((data[off + 1] as usize) << 16)
            | ((data[off + 2] as usize) << 8)
            | data[off + 3] as usize;
        let ts = ((data[off + 7] as u32) << 24)
            | ((data[off + 4] as u32) << 16)
            | ((data[off + 5] as u32) << 8)
            | data[off + 6] as u32;
        let end = off + 11 + size + 4;
        if end > data.len() {
            break;
        }
        let body = &data[off + 11..off + 11 + size];
        let (mut key, mut seq, mut cts) = (false, false, 0);
        if kind == 9 && !body.is_empty() {
            key = body[0] >> 4 == 1;
            if body[0] & 0x0f == 7 && body.len() >= 5 {
                seq = body[1] == 0;
                let raw = ((body[2] as i32) << 16) | ((body[3] as i32) << 8) | body[4] as i32;
                cts = (raw << 8) >> 8;
            }
        } else if kind == 8 && body.len() >= 2 {
            key = true;
            seq = body[0] >> 4 == 10 && body[1] == 0;
        }
        tags.push(FlvTag {
            kind,
            ts,
            size,
            key,
            seq_header: seq,
            cts,
            at: time_at(end),
        });
        off = end;
    }
    Ok(tags)
}

/// Media frames only (no sequence headers, no script data).
pub fn flv_frames(tags: &[FlvTag], kind: u8) -> Vec<&FlvTag> {
    tags.iter()
        .filter(|t| t.kind == kind && !t.seq_header && t.size > 0)
        .collect()
}

// ---------------------------------------------------------------------------------------
// GStreamer (exact counts through fakesink handoff, in tests/gst_count.py)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct GstSink {
    pub buffers: u64,
    pub keyframes: u64,
    pub first_key: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct GstResult {
    pub eos: bool,
    pub error: Option<String>,
    /// The pipeline's WARNING messages, each with its time since start (diagnostics).
    pub warnings: Vec<String>,
    pub timed_out: bool,
    pub sinks: BTreeMap<String, GstSink>,
}

/// `/usr/bin/python3 tests/gst_count.py LIMIT 'PIPELINE'` under `timeout -k 5 LIMIT+20`.
pub fn gst_count(dir: &Path, label: &str, limit_secs: u64, pipeline: &str) -> Client {
    require_gst();
    let args = vec![
        gst_count_script().to_str().unwrap().to_string(),
        limit_secs.to_string(),
        pipeline.to_string(),
    ];
    spawn_client(dir, label, limit_secs + 20, "/usr/bin/python3", &args)
}

pub fn parse_gst(out: &ClientOutput) -> Result<GstResult> {
    let text = out.stdout_text();
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON from gst_count.py"))?;
    let v: Value = serde_json::from_str(line)?;
    let mut r = GstResult {
        eos: v["eos"].as_bool().unwrap_or(false),
        error: v["error"].as_str().map(String::from),
        warnings: v["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        timed_out: v["timed_out"].as_bool().unwrap_or(false),
        sinks: BTreeMap::new(),
    };
    if let Some(o) = v["sinks"].as_object() {
        for (k, s) in o {
            r.sinks.insert(
                k.clone(),
                GstSink {
                    buffers: s["buffers"].as_u64().unwrap_or(0),
                    keyframes: s["keyframes"].as_u64().unwrap_or(0),
                    first_key: s["first_key"].as_bool(),
                },
            );
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------

/// Poll `f` every 100 ms until it returns Some, or `limit` passes.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Connect a raw TCP socket to the server's RTMP port (for hand-built bytes).
pub fn rtmp_socket(srv: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", srv.rtmp_port)).expect("connect RTMP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read until the peer closes. Ok(bytes read) on EOF/reset, Err on timeout (still open).
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<usize> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + limit;
    let mut total = 0;
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Ok(total), // reset counts as closed
        }
        if Instant::now() > deadline {
            let _ = s.shutdown(Shutdown::Both);
            bail!(
                "connection still open after {:?} ({total} bytes read)",
                limit
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Headless Chromium playing Sluice's player page
// ---------------------------------------------------------------------------------------

pub fn sigterm(pid: u32) -> bool {
    kill(pid as i32, libc::SIGTERM)
}

/// Starts headless Chromium (Debian's) on `url` for at most `secs`, with autoplay allowed and
/// its console logged to stderr, where the player page's `sluice-player {json}` lines land.
/// A fresh profile folder under `dir`; stop it with [`stop_chromium`].
pub fn chromium(dir: &Path, label: &str, secs: u64, url: &str) -> Client {
    chromium_with(dir, label, secs, url, &[])
}

/// [`chromium`] with more command-line switches (`extra`), for example
/// `--ignore-certificate-errors-spki-list=…` to trust a test certificate.
pub fn chromium_with(dir: &Path, label: &str, secs: u64, url: &str, extra: &[String]) -> Client {
    let profile = dir.join(format!("{label}.profile"));
    fs::create_dir_all(&profile).unwrap();
    let args = s(&[
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=MediaRouter",
        "--autoplay-policy=no-user-gesture-required",
        "--enable-logging=stderr",
        "--v=0",
    ]);
    let mut args = args;
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(extra.iter().cloned());
    args.push(url.to_string());
    spawn_client(dir, label, secs, "chromium", &args)
}

/// The `sluice-player {json}` events Chromium logged so far.
pub fn player_events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| {
            let at = l.find("\"sluice-player ")? + "\"sluice-player ".len();
            let end = l.rfind("\", source:")?;
            serde_json::from_str(l.get(at..end)?).ok()
        })
        .collect()
}

/// Polls Chromium's events until `done` holds for them or `limit` passes; returns them.
pub fn wait_player(c: &Client, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let ev = player_events(&c.stderr_now());
        if done(&ev) || Instant::now() >= deadline {
            return ev;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Stops a Chromium started by [`chromium`] (SIGTERM to `timeout`, which passes it on) and
/// waits for it.
pub fn stop_chromium(c: Client) -> ClientOutput {
    stop_client(c)
}

/// `ffmpeg -re -stream_loop LOOPS -i FILE -c copy -f flv URL`: a publish of `LOOPS + 1` times
/// the file, with continuous timestamps.
pub fn ffmpeg_publish_loop(
    dir: &Path,
    label: &str,
    file: &Path,
    url: &str,
    loops: u32,
    secs: u64,
) -> Client {
    let loops = loops.to_string();
    let mut args = s(&["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    args.extend(s(&["-stream_loop", &loops, "-i", file.to_str().unwrap()]));
    args.extend(s(&["-c", "copy", "-f", "flv", url]));
    spawn_client(dir, label, secs, "ffmpeg", &args)
}

/// The types of an MP4 file's top-level boxes, in order (ISO/IEC 14496-12 §4.2: a 32-bit
/// size, 1 for a 64-bit size after the type, 0 for "to the end").
pub fn mp4_top_boxes(path: &Path) -> Vec<String> {
    let b = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as u64;
        out.push(String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned());
        let size = match size {
            0 => (b.len() - at) as u64,
            1 if at + 16 <= b.len() => u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()),
            n => n,
        };
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    out
}

/// Whether an MP4 file is a regular one with `moov` before `mdat` (no movie fragments).
pub fn mp4_moov_first(path: &Path) -> bool {
    let boxes = mp4_top_boxes(path);
    let pos = |t: &str| boxes.iter().position(|b| b == t);
    matches!((pos("moov"), pos("mdat")), (Some(m), Some(d)) if m < d) && pos("moof").is_none()
}

/// `sluice-convert FROM TO` (the workspace's converter), which must succeed.
pub fn sluice_convert(from: &Path, to: &Path) {
    let out = Command::new(sluice_bin().with_file_name("sluice-convert"))
        .arg(from)
        .arg(to)
        .output()
        .expect("run sluice-convert");
    assert!(
        out.status.success(),
        "sluice-convert {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The publisher of `srv`'s `live` coming back (two plays of the B-frame fixture): returns it
/// and the moment the stream was live again.
pub fn publish_again(srv: &Server, label: &str) -> (Client, Instant) {
    let publisher = ffmpeg_publish_loop(
        &srv.dir,
        label,
        &fixture("bframes.flv"),
        &srv.rtmp_url("live"),
        1,
        25,
    );
    srv.wait_live("live");
    (publisher, Instant::now())
}

/// Publishes the 10 s B-frame fixture to `stream` (live, for the caller to wait on) and
/// returns once `path` answers 200 (at most 15 s), with that first response.
pub fn publish_fixture_until(srv: &Server, stream: &str, path: &str) -> (Client, HttpResponse) {
    let publisher = publish_fixture(srv, stream);
    let first = poll(Duration::from_secs(15), || {
        srv.get(path).ok().filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| panic!("GET {path} never answered 200 during the publish"));
    (publisher, first)
}

/// Stops a client early (SIGTERM through `timeout`) and waits for it.
pub fn stop_client(c: Client) -> ClientOutput {
    sigterm(c.pid());
    c.wait()
}

/// Starts ffmpeg publishing the 10 s B-frame fixture to `stream` at real time.
pub fn publish_fixture(srv: &Server, stream: &str) -> Client {
    ffmpeg_publish(
        &srv.dir,
        &format!("publisher-{stream}"),
        &fixture("bframes.flv"),
        &srv.rtmp_url(stream),
        40,
    )
}

/// Publishes the 10 s B-frame fixture to `stream` with ffmpeg and returns once the publish
/// is over and the buffer has marked the stream ended.
pub fn publish_fixture_to_end(srv: &Server, stream: &str) {
    let out = publish_fixture(srv, stream).wait();
    assert!(
        out.status.success(),
        "publisher failed:\n{}",
        out.describe()
    );
    thread::sleep(Duration::from_millis(300));
}

/// Asserts that `out` (an [`ffmpeg_framecrc`] run) read every packet of the 10 s B-frame
/// fixture: 250 H.264 frames with 5 keyframes and their composition offsets, 432 AAC frames.
pub fn assert_every_frame(out: &ClientOutput, what: &str) {
    let cap = Capture::from_output(out);
    let diag = format!("{what}: {}\n{}", cap.summary(), out.describe());
    assert_eq!(cap.codec("video").as_deref(), Some("h264"), "{diag}");
    assert_eq!(cap.codec("audio").as_deref(), Some("aac"), "{diag}");
    assert_eq!(cap.video().len(), 250, "{diag}");
    assert_eq!(cap.video_keyframes(), 5, "{diag}");
    assert_eq!(cap.audio().len(), 432, "{diag}");
    assert!(cap.reordered() >= 150, "composition offsets lost: {diag}");
}

/// nginx with the RTMP module, `application live { live on; }`; stopped when dropped.
pub struct NginxRtmp {
    child: Child,
    /// Its RTMP port on 127.0.0.1.
    pub port: u16,
}

impl NginxRtmp {
    /// Starts it with its files under `dir/nginx-rtmp`.
    pub fn start(dir: &Path) -> NginxRtmp {
        require_tools(&["nginx"]);
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "{module} missing: run scripts/install-test-deps.sh (libnginx-mod-rtmp)"
        );
        let d = dir.join("nginx-rtmp");
        fs::create_dir_all(d.join("logs")).unwrap();
        let port = free_port();
        let conf = format!(
            "load_module {module};\nworker_processes 1;\ndaemon off;\n\
             error_log {d}/logs/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n",
            d = d.display()
        );
        fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdin(Stdio::null())
            .stderr(fs::File::create(d.join("logs/stderr")).unwrap())
            .spawn()
            .expect("start nginx");
        assert!(
            poll(Duration::from_secs(5), || port_accepts(port).then_some(())).is_some(),
            "nginx-rtmp did not listen: {}",
            fs::read_to_string(d.join("logs/error.log")).unwrap_or_default()
        );
        NginxRtmp { child, port }
    }
}

impl Drop for NginxRtmp {
    /// SIGTERM: nginx's master stops its workers (a SIGKILL would leave them running);
    /// SIGKILL only if it has not ended within 3 s.
    fn drop(&mut self) {
        sigterm(self.child.id());
        let ended = poll(Duration::from_secs(3), || {
            self.child.try_wait().ok().flatten().map(|_| ())
        });
        if ended.is_none() {
            sigkill(self.child.id());
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Trigger handlers (tests/hook_server.py)
// ---------------------------------------------------------------------------------------

/// The hook server; killed when dropped.
pub struct Hook {
    child: Child,
    port: u16,
    log: PathBuf,
    tls: bool,
}

impl Hook {
    pub fn start(dir: &Path, rules: Value) -> Hook {
        Self::start_tls(dir, rules, None)
    }

    /// With `tls` (certificate, key), the hook serves HTTPS.
    pub fn start_tls(dir: &Path, rules: Value, tls: Option<&(PathBuf, PathBuf)>) -> Hook {
        require_tools(&["/usr/bin/python3"]);
        let port = free_port();
        let log = dir.join(format!("hook-{port}.log"));
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(workspace_root().join("tests/hook_server.py"))
            .arg(port.to_string())
            .arg(&log)
            .arg(rules.to_string());
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let tls = tls.is_some();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/hook_server.py");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        Hook {
            child,
            port,
            log,
            tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/hook", self.port)
    }

    /// The calls received so far: (trigger, payload lines).
    pub fn calls(&self) -> Vec<(String, Vec<String>)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["trigger"].as_str().unwrap_or("").to_string(),
                    v["lines"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| x.as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn wait_for(&self, trigger: &str, stream: &str) -> Option<Vec<String>> {
        poll(Duration::from_secs(10), || {
            self.calls()
                .into_iter()
                .find(|(t, l)| t == trigger && l.iter().any(|x| x == stream))
                .map(|(_, l)| l)
        })
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        sigkill(self.child.id());
        let _ = self.child.wait();
    }
}

/// A `triggers` config object: each trigger with one handler.
pub fn triggers(list: &[(&str, Value)]) -> Value {
    let mut o = serde_json::Map::new();
    for (name, h) in list {
        o.insert(name.to_string(), json!([h]));
    }
    Value::Object(o)
}

/// A DTSC value as `docs/DTSC.md` ("Value encoding") lays it out, read here
/// independently of the server's code.
#[derive(Debug)]
pub enum Dv {
    /// 0x01: 64-bit integer.
    Int(i64),
    /// 0x02: string (bytes).
    Str(Vec<u8>),
    /// 0xE0 object, 0xFF packet object, 0x0A array (members without keys).
    Obj(Vec<(String, Dv)>),
    /// Anything else (null, double).
    Other,
}

/// Reads one DTSC value at `*at` of `b` (panics on malformed bytes: test input).
pub fn dtsc_value(b: &[u8], at: &mut usize) -> Dv {
    let t = b[*at];
    *at += 1;
    let take = |at: &mut usize, n: usize| {
        let s = &b[*at..*at + n];
        *at += n;
        s
    };
    match t {
        0x01 => Dv::Int(i64::from_be_bytes(take(at, 8).try_into().unwrap())),
        0x02 => {
            let n = u32::from_be_bytes(take(at, 4).try_into().unwrap()) as usize;
            Dv::Str(take(at, n).to_vec())
        }
        0x03 => Dv::Other,
        0x04 => {
            take(at, 8);
            Dv::Other
        }
        0xE0 | 0xFF | 0x0A => {
            let mut members = Vec::new();
            loop {
                if b[*at..*at + 3] == [0, 0, 0xEE] {
                    *at += 3;
                    break;
                }
                let key = if t == 0x0A {
                    String::new()
                } else {
                    let n = u16::from_be_bytes(take(at, 2).try_into().unwrap()) as usize;
                    String::from_utf8(take(at, n).to_vec()).unwrap()
                };
                members.push((key, dtsc_value(b, at)));
            }
            Dv::Obj(members)
        }
        t => panic!("unknown DTSC type {t:#x} at {}", *at - 1),
    }
}

impl Dv {
    /// Member `k` of an object (panics when missing).
    pub fn get(&self, k: &str) -> &Dv {
        match self {
            Dv::Obj(m) => {
                &m.iter()
                    .find(|(n, _)| n == k)
                    .unwrap_or_else(|| panic!("no {k}"))
                    .1
            }
            _ => panic!("{k} of a non-object"),
        }
    }
    /// A string's bytes (panics on another type).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Dv::Str(b) => b,
            v => panic!("not a string: {v:?}"),
        }
    }
}

/// A big-endian unsigned integer of 1 to 8 bytes.
pub fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| a << 8 | x as u64)
}

/// A TCP connection to `127.0.0.1:port` from the local address `from` (any address of
/// 127.0.0.0/8 works on Linux: tests stand in for other client machines that way), with
/// the receive buffer set to `rcvbuf` bytes before connecting when given (a client that
/// will not read fills up quickly).
pub fn connect_from(from: &str, port: u16, rcvbuf: Option<i32>) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let src: std::net::Ipv4Addr = from
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(n) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &n as *const i32 as *const libc::c_void,
                4,
            );
        }
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sa(src, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sa(std::net::Ipv4Addr::LOCALHOST, port);
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Waits up to `limit` for the peer to close `s` (a read returning 0 or an error); returns
/// how long it took, or None when it stayed open. Whatever the peer sends meanwhile is
/// read and dropped.
pub fn wait_closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        let left = limit
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(10));
        let _ = s.set_read_timeout(Some(left.min(Duration::from_millis(200))));
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// The path on the server of a master playlist's first variant (its first URI line),
/// resolved against the master's path `master_path`.
pub fn media_playlist_path(master_path: &str, master: &str) -> String {
    let uri = master
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("master playlist has no URI line:\n{master}"))
        .to_string();
    resolve(master_path, &uri)
}

/// `uri` (absolute, rooted or relative) as a path on the server, relative to `base_path`.
pub fn resolve(base_path: &str, uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("http://") {
        return rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or("/".into());
    }
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let dir = &base_path[..base_path.rfind('/').unwrap() + 1];
    format!("{dir}{uri}")
}

/// Runs `openssl ARGS` in `dir` (test certificates); panics with its stderr when it fails.
/// Returns what it printed.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
