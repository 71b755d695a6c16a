//! The client side of the controller's Unix socket (`RUNDIR/controller.sock`): a connector
//! asks to open a stream for playing or publishing, and the controller checks the stream's
//! config (is it configured, may this address publish, wildcard `BASE+SUFFIX`), starts its
//! buffer when needed, and answers with the buffer's socket.
//!
//! The messages are `ipc::messages`' [`ControlRequest`] and [`ControlReply`].

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buffer::shmem;
use ipc::messages::{
    ControlReply, ControlRequest, Credential, OpenMode, OpenRequest, RefusalCode, Report,
};

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such stream is configured.
    #[error("stream not found: {0}")]
    NotFound(String),
    /// The stream exists but this client may not do this (for example publish from afar).
    #[error("refused: {0}")]
    Forbidden(String),
    /// Publishing needs the stream's key, and none or a wrong one came.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Anything else (the controller is gone, the buffer did not start).
    #[error("failed: {0}")]
    Failed(String),
}

/// Asks the controller to open `stream`. `push` selects publishing; `addr` is the client's IP
/// address; `key` the stream key the client gave, if any.
pub fn open(
    rundir: &Path,
    stream: &str,
    push: bool,
    addr: &str,
    key: Option<&str>,
) -> Result<PathBuf, OpenError> {
    let credential = key.map_or(Credential::None, |k| Credential::Key(k.to_string()));
    request(rundir, stream, push, addr, credential)
}

/// Asks the controller to open `stream` for publishing with an RTSP `Authorization: Digest`
/// header (RFC 2617 §3.2.2) sent with `method`: the controller checks it against the
/// stream's key, which never reaches the connector.
pub fn open_push_digest(
    rundir: &Path,
    stream: &str,
    addr: &str,
    header: &str,
    method: &str,
) -> Result<PathBuf, OpenError> {
    let credential = Credential::Digest {
        header: header.to_string(),
        method: method.to_string(),
    };
    request(rundir, stream, true, addr, credential)
}

/// How a publisher was let in, kept so that it can open its stream again when the
/// stream's buffer dies ([`reattach_publisher`]).
#[derive(Debug, Clone)]
pub enum PushAuth {
    /// The stream key it gave, if any ([`open`]).
    Key(Option<String>),
    /// An RTSP `Authorization: Digest` header and the method it came with
    /// ([`open_push_digest`]).
    Digest {
        /// The header's value.
        header: String,
        /// The request's method (`ANNOUNCE`).
        method: String,
    },
}

/// Reports an event to the controller ([`Report`]): a finished recording, or a push that
/// cannot succeed. The controller answers `ok`; errors: the controller is unreachable or did
/// not answer within 5 s.
pub fn report(rundir: &Path, report: Report) -> anyhow::Result<()> {
    let sock = UnixStream::connect(rundir.join("controller.sock"))?;
    ipc::socket::send(&sock, &ControlRequest::Report(report), &[])?;
    ipc::socket::recv::<ControlReply>(&sock, Duration::from_secs(5))?;
    Ok(())
}

/// Asks the controller to open `stream` for publishing with `auth`.
pub fn open_push(
    rundir: &Path,
    stream: &str,
    addr: &str,
    auth: &PushAuth,
) -> Result<PathBuf, OpenError> {
    match auth {
        PushAuth::Key(key) => open(rundir, stream, true, addr, key.as_deref()),
        PushAuth::Digest { header, method } => {
            open_push_digest(rundir, stream, addr, header, method)
        }
    }
}

/// Opens `stream` for publishing again after its buffer died and attaches to the new
/// buffer, trying for up to 3 s (the controller notices a dead buffer within 100 ms and
/// starts a new one on this open). The caller then sends the track header again, and its
/// packets go on with the timestamps they had.
pub fn reattach_publisher(
    rundir: &Path,
    stream: &str,
    addr: &str,
    auth: &PushAuth,
) -> anyhow::Result<shmem::Attached> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = open_push(rundir, stream, addr, auth)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|path| shmem::attach(&path, shmem::Mode::Push));
        match r {
            Ok(a) => return Ok(a),
            Err(e) if std::time::Instant::now() >= deadline => {
                anyhow::bail!("{addr}: {stream}: no new buffer within 3 s: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

static OPENED: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);
static URL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// The URL the client asked for (with its query), sent with the next open for the
/// controller's triggers (PUSH_REWRITE, STREAM_PUSH, USER_NEW).
pub fn set_request_url(url: &str) {
    *URL.lock().unwrap_or_else(|e| e.into_inner()) = url.to_string();
}

/// The stream that `requested` opened in this process: itself, or the stream a stream key
/// stands for (MistServer's `streamkey_add`). Use it in log lines, so that keys stay out.
pub fn stream_name(requested: &str) -> String {
    match &*OPENED.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((r, real)) if r == requested => real.clone(),
        _ => requested.to_string(),
    }
}

fn request(
    rundir: &Path,
    stream: &str,
    push: bool,
    addr: &str,
    credential: Credential,
) -> Result<PathBuf, OpenError> {
    let fail = |e: anyhow::Error| OpenError::Failed(format!("{e:#}"));
    let sock = UnixStream::connect(rundir.join("controller.sock"))
        .map_err(|e| OpenError::Failed(format!("controller unreachable: {e}")))?;
    let url = URL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let req = OpenRequest {
        stream: stream.to_string(),
        mode: if push { OpenMode::Push } else { OpenMode::Play },
        addr: addr.to_string(),
        credential,
        url: (!url.is_empty()).then_some(url),
        // For the controller's triggers (USER_NEW, STREAM_PUSH): the connector and the
        // session.
        session: ipc::sessions::current().map(|(proto, id)| (proto, format!("{id:016x}"))),
    };
    ipc::socket::send(&sock, &ControlRequest::Open(req), &[]).map_err(fail)?;
    let (reply, _) =
        ipc::socket::recv::<ControlReply>(&sock, Duration::from_secs(15)).map_err(fail)?;
    match reply {
        ControlReply::Opened {
            socket,
            stream: real,
        } => {
            let kind = if push {
                ipc::sessions::Kind::Input
            } else {
                ipc::sessions::Kind::Viewer
            };
            // A stream key (`streamkey_add`) opens the stream it names: stats and logs show
            // that stream, never the key.
            let real = if real.is_empty() {
                stream.to_string()
            } else {
                real
            };
            ipc::sessions::set_stream(&real, kind, None);
            *OPENED.lock().unwrap_or_else(|e| e.into_inner()) = Some((stream.to_string(), real));
            Ok(socket)
        }
        ControlReply::Refused { code, reason } => Err(match code {
            RefusalCode::NotFound => OpenError::NotFound(reason),
            RefusalCode::Forbidden => OpenError::Forbidden(reason),
            RefusalCode::Unauthorized => OpenError::Unauthorized(reason),
            RefusalCode::Failed => OpenError::Failed(reason),
        }),
        ControlReply::Ok => Err(OpenError::Failed(
            "the controller answered no socket".into(),
        )),
    }
}
