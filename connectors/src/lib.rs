//! Connectors: one listener process per protocol; every accepted connection runs in a process
//! of its own (a fork of the listener, as MistServer's outputs run one process per socket), so
//! a viewer that crashes its process takes nobody else down and the work spreads over every
//! core.
//!
//! * [`listener`]: accept, fork, hand the socket to a protocol's handler.
//! * [`tls`]: HTTPS, RTMPS and RTSPS: the TLS handshake and a pump thread in the
//!   connection's own process, so the protocol's handler runs unchanged on plaintext.
//! * [`rtsp_auth`]: RTSP credentials (sans-IO): Authorization parsing, one-time expiring
//!   Digest nonces, constant-time comparison.
//! * [`limits`]: caps on connections (per listener, per address, in all), whole-request
//!   deadlines, and when a viewer that does not read is dropped.
//! * [`control`]: asks the controller to open a stream (checks, starts the buffer).
//! * [`publisher`]: a publisher's end of the buffer connection (keeps the GOP, reattaches).
//! * [`cursor`]: the one connection loop's core every output shares: attach to a stream's
//!   buffer, wait for it, pick a start keyframe, read packets straight from shared memory.
//! * [`session`]: the one connection loop every streaming output shares (an [`session::Output`]
//!   per format; one `writev` per wake-up, payloads straight from the shared pages).
//! * [`dtsc_tcp`]: the DTSC connector (port 4200), play and push between servers.
//! * [`rtmp`], [`http`] (with [`hls`], [`cmaf`], [`smooth`], [`hds`] and [`progressive`]), [`ts`] (raw TS over
//!   TCP): the protocols.
//! * [`rtsp_pull`], [`stream_pull`]: pull inputs (RTSP cameras; TS over UDP, HTTP-TS and
//!   HTTP-FLV), each a process started by the stream's buffer.
//! * [`player`]: `/S.html`, `/json_S.js`, `/info_S.js` and the vendored player scripts.
//! * [`segcache`]: muxed segments shared by every HTTP process (muxed once, sent with
//!   `sendfile`).

pub mod cmaf;
pub mod control;
pub mod cursor;
pub mod dtsc_tcp;
pub mod hds;
pub mod hls;
pub mod http;
pub mod limits;
pub mod listener;
pub mod player;
pub mod progressive;
pub mod publisher;
pub mod push;
pub mod record;
pub mod rtmp;
pub mod rtmp_push;
pub mod rtp_ingest;
pub mod rtsp;
pub mod rtsp_auth;
pub mod rtsp_client;
pub mod rtsp_pull;
pub mod rtsp_push;
pub mod segcache;
pub mod session;
pub mod smooth;
pub mod stream_pull;
pub mod thumbs;
pub mod tls;
pub mod tracksel;
pub mod ts;

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
