//! Pushes out: one process per push, `sluice push --stream S --target URL`, as the
//! controller's pushes (`push_start`, auto-push rules) start them. The target's scheme picks
//! the protocol: `rtmp://` ([`crate::rtmp_push`]) or `rtsp://` ([`crate::rtsp_push`]). The
//! process holds a slot of the session table (kind output) for the stats, and exits when the
//! stream ends (0) or the target fails (1, with the reason on standard error): retrying is
//! the controller's.

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

/// The schemes a push target may have.
pub const SCHEMES: &[&str] = &["rtmp://", "rtsp://"];

/// Runs one push to its end.
pub fn run(args: PushArgs) -> Result<()> {
    let host = args
        .target
        .split_once("://")
        .map(|(_, r)| r.split(['/', ':', '?']).next().unwrap_or(""))
        .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
        .unwrap_or_default();
    let label = if args.target.starts_with("rtmp://") {
        "RTMP push"
    } else {
        "RTSP push"
    };
    buffer::sessions::begin(&args.rundir, label, &host);
    let r = if args.target.starts_with("rtmp://") {
        crate::rtmp_push::push(&args)
    } else if args.target.starts_with("rtsp://") {
        crate::rtsp_push::push(&args)
    } else {
        let shown = args.target.split("://").next().unwrap_or("");
        Err(anyhow::anyhow!(
            "push target scheme {shown:?} is not one Sluice pushes to ({})",
            SCHEMES.join(", ")
        ))
    };
    buffer::sessions::end(None);
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!("{}: push to {}: {e:#}", args.stream, redact(&args.target)),
    }
}

/// A URL with the password of its user part replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match auth.rsplit_once('@') {
        Some((user, host)) => {
            let u = user.split(':').next().unwrap_or("");
            format!("{scheme}://{u}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redact("rtsp://u:p%40ss@h:554/x"),
            "rtsp://u:***@h:554/x"
        );
        assert_eq!(super::redact("rtmp://h/live/k"), "rtmp://h/live/k");
    }
}
