//! Connectors: one listener process per protocol; every accepted connection runs in a process
//! of its own (a fork of the listener, as MistServer's outputs run one process per socket), so
//! a viewer that crashes its process takes nobody else down and the work spreads over every
//! core.
//!
//! The modules are grouped by the direction data flows; an import only ever points up this
//! list:
//!
//! * [`core`]: what every connection shares: the listener, limits and TLS, the controller
//!   client, the cursor over a stream's shared pages with its start policy, the one streaming
//!   loop, track selection, the segment window and cache, progressive containers, and a
//!   publisher's end of the buffer.
//! * [`serve`]: protocols on their own ports: RTMP, RTSP, the DTSC connector, raw TS.
//! * [`http`]: the HTTP server and every format it serves (HLS, CMAF/DASH/LL-HLS, Smooth,
//!   HDS, progressive, the player pages, thumbnails).
//! * [`ingest`]: pulls from cameras and other servers into a buffer.
//! * [`egress`]: pushes to other servers and recordings to files.

pub mod core;
pub mod egress;
pub mod http;
pub mod ingest;
pub mod serve;

use std::path::PathBuf;

/// What every connection handler gets from its listener.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Folder of the controller's and the buffers' Unix sockets.
    pub rundir: PathBuf,
    /// The stream a connection plays when it names none (the TS connector's `stream`).
    pub default_stream: Option<String>,
}

/// A seed that differs per session and process (wall-clock nanoseconds and the pid): RTMP
/// handshake randomness, RTP SSRCs and sequence bases (RFC 3550 §5.1), the DTSC `hi` salt.
/// Not for secrets.
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
}

/// Logs one line to stderr, prefixed with the protocol and the process id, in one write.
#[macro_export]
macro_rules! log {
    ($proto:expr, $($arg:tt)*) => {
        {
            // One write per line: lines of processes sharing stderr stay whole.
            let line = format!("[{} {}] {}\n", $proto, std::process::id(), format!($($arg)*));
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
    };
}
