//! Pushes out: one process per push, `sluice push --stream S --target URL`, as the
//! controller's pushes (`push_start`, auto-push rules) start them. The target's scheme picks
//! the protocol: `rtmp://` ([`crate::egress::rtmp_push`]) or `rtsp://` ([`crate::egress::rtsp_push`]); a
//! file path is a recording ([`crate::egress::record`]). The
//! process holds a slot of the session table (kind output) for the stats, and exits when the
//! stream ends (0) or the target fails (1, with the reason on standard error): retrying is
//! the controller's.

pub mod record;
pub mod rtmp_push;
pub mod rtsp_push;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// What the controller passes to a push process.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The stream pushed.
    #[arg(long)]
    pub stream: String,
    /// Where to: `rtmp://host[:port]/app/name` or `rtsp://[user:pass@]host[:port]/path`.
    #[arg(long)]
    pub target: String,
    /// Folder of the Unix sockets.
    #[arg(long)]
    pub rundir: PathBuf,
}

/// The schemes a push target may have (besides a file path, a recording:
/// [`crate::egress::record`]).
pub const SCHEMES: &[&str] = &["rtmp://", "rtsp://"];

/// Runs one push to its end.
pub fn run(args: PushArgs) -> Result<()> {
    let host = args
        .target
        .split_once("://")
        .map(|(_, r)| r.split(['/', ':', '?']).next().unwrap_or(""))
        .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
        .unwrap_or_default();
    let label = if crate::egress::record::is_file_target(&args.target) {
        "recording"
    } else if args.target.starts_with("rtmp://") {
        "RTMP push"
    } else {
        "RTSP push"
    };
    ipc::sessions::begin(&args.rundir, label, &host);
    let r = if crate::egress::record::is_file_target(&args.target) {
        crate::egress::record::record(&args)
    } else if args.target.starts_with("rtmp://") {
        crate::egress::rtmp_push::push(&args)
    } else if args.target.starts_with("rtsp://") {
        crate::egress::rtsp_push::push(&args)
    } else {
        let shown = args.target.split("://").next().unwrap_or("");
        Err(anyhow::anyhow!(
            "push target scheme {shown:?} is not one Sluice pushes to ({})",
            SCHEMES.join(", ")
        ))
    };
    ipc::sessions::end(None);
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!(
            "{}: push to {}: {e:#}",
            args.stream,
            crate::core::url::redact(&args.target)
        ),
    }
}

/// Opens the pushed stream as a viewer would (the session counted as an output), waits up
/// to 15 s for media, and positions it: a live stream at its newest keyframe, an ended one
/// at its start.
pub(crate) fn open_source(args: &PushArgs) -> Result<crate::core::cursor::Cursor> {
    let mut cursor = crate::core::cursor::Cursor::open(&args.rundir, &args.stream, "127.0.0.1")
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.stream))?;
    ipc::sessions::set_stream(&args.stream, ipc::sessions::Kind::Output, None);
    if !cursor.wait_ready(std::time::Duration::from_secs(15), 1) {
        bail!("{}: no media within 15 s", args.stream);
    }
    cursor.start(crate::core::cursor::StartPolicy::Usual);
    Ok(cursor)
}

/// A TCP connection to the push target (the first address `host` resolves to), with
/// `TCP_NODELAY`, within `timeout`.
pub(crate) fn connect(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<std::net::TcpStream> {
    use anyhow::Context as _;
    use std::net::ToSocketAddrs as _;
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host}: no address"))?;
    let sock = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    Ok(sock)
}
