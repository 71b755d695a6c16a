//! TLS for the listeners (HTTPS, RTMPS, RTSPS) with rustls, kept inside each connection's
//! own process like every other byte a client sends.
//!
//! A TLS listener is a plain listener with a certificate: its connection process runs the
//! handshake ([`terminate`], under the process's whole-request deadline) and then starts one
//! thread, the pump, that moves bytes between the client's TCP socket (TLS records) and one
//! end of a Unix socket pair (plaintext). The protocol's handler gets the other end in place
//! of the TCP socket and runs unchanged: its `writev`s and `sendfile`s of shared pages go
//! into the pair, and the pump encrypts them. Back-pressure holds end to end: the pump reads
//! plaintext only while the client takes what was encrypted, so a client that stops reading
//! fills the pair and the handler's stall rules drop it as they would over plain TCP.
//!
//! The certificate chain and key are PEM files ([`CertFiles`]); the listener loads them again
//! when either file changes (checked each second, and at once on SIGHUP), so a renewed
//! certificate (certbot's `renew` hook) is picked up by new connections without dropping
//! anyone.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// The PEM files of a TLS listener: `cert` holds the certificate chain (leaf first, as
/// certbot's `fullchain.pem`), `key` the private key (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// A loaded certificate and the files' modification times it was loaded at.
pub struct Loaded {
    files: CertFiles,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    /// The rustls configuration new connections use.
    pub config: Arc<ServerConfig>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Builds a server configuration from PEM bytes: TLS 1.2 and 1.3, no client certificates,
/// ALPN left to the client (HTTP/1.1 only is spoken). Errors name what is missing or wrong.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| anyhow!("reading the certificate chain: {e:?}"))?;
    if chain.is_empty() {
        bail!("no certificate in the certificate file");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow!("reading the private key: {e:?}"))?;
    // ring, the provider the workspace already builds for ureq's HTTPS. Newer rustls
    // releases mark it deprecated in favour of aws-lc-rs (post-quantum key exchange), which
    // would add a C and assembly build of its own.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the key do not go together")
}

impl Loaded {
    /// Reads and checks `files`.
    pub fn load(files: &CertFiles) -> Result<Loaded> {
        let cert = std::fs::read(&files.cert)
            .with_context(|| format!("reading {}", files.cert.display()))?;
        let key = std::fs::read(&files.key)
            .with_context(|| format!("reading {}", files.key.display()))?;
        let config = server_config(&cert, &key)
            .with_context(|| format!("{} and {}", files.cert.display(), files.key.display()))?;
        Ok(Loaded {
            files: files.clone(),
            stamp: (mtime(&files.cert), mtime(&files.key)),
            config: Arc::new(config),
        })
    }

    /// Loads the files again when either changed since (or when `force`). Returns what
    /// happened for the log: `Ok(true)` reloaded, `Ok(false)` unchanged, `Err` the new files
    /// are unusable (the old certificate stays in use).
    pub fn refresh(&mut self, force: bool) -> Result<bool> {
        let stamp = (mtime(&self.files.cert), mtime(&self.files.key));
        if !force && stamp == self.stamp {
            return Ok(false);
        }
        match Loaded::load(&self.files) {
            Ok(new) => {
                *self = new;
                Ok(true)
            }
            Err(e) => {
                // Not again until the files change once more.
                self.stamp = stamp;
                Err(e)
            }
        }
    }
}

/// The client's address, for a connection process whose handler socket is a TLS pump's
/// plaintext end (which has no IP address of its own). Set once by the listener's child.
static PEER: OnceLock<(SocketAddr, SocketAddr)> = OnceLock::new();

/// Notes the connection's (peer, local) addresses for [`peer_addr`] and [`local_addr`].
pub fn set_addrs(peer: SocketAddr, local: SocketAddr) {
    let _ = PEER.set((peer, local));
}

/// The client's address: the socket's own, or the one the listener noted for a TLS
/// connection's plaintext end. An IPv4 client of a dual-stack (`::`) listener is given as
/// its IPv4 address, not as `::ffff:a.b.c.d`.
pub fn peer_addr(sock: &TcpStream) -> std::io::Result<SocketAddr> {
    sock.peer_addr()
        .or_else(|e| PEER.get().map(|p| p.0).ok_or(e))
        .map(canonical)
}

/// This server's address the client connected to (see [`peer_addr`]).
pub fn local_addr(sock: &TcpStream) -> std::io::Result<SocketAddr> {
    sock.local_addr()
        .or_else(|e| PEER.get().map(|p| p.1).ok_or(e))
        .map(canonical)
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// True when this connection process serves a TLS connection (its URLs say `https://`,
/// `rtmps://`, `rtsps://`).
pub fn is_tls() -> bool {
    TLS.get().copied().unwrap_or(false)
}

static TLS: OnceLock<bool> = OnceLock::new();

/// The client closed its connection before the TLS handshake was done (a port check, a
/// health probe): not worth a log line.
#[derive(Debug, thiserror::Error)]
#[error("the client closed before the TLS handshake was done")]
pub struct ClosedEarly;

/// Most plaintext bytes the pump holds for the handler before it stops reading records.
const MAX_PLAIN_BACKLOG: usize = 256 << 10;

/// The pump of one TLS connection (see the module's text).
pub struct Pump {
    thread: Option<JoinHandle<()>>,
}

impl Pump {
    /// Waits until the pump has sent what the handler wrote and closed the connection
    /// (`close_notify`), at most `limit`; the handler's end must be closed first.
    pub fn finish(mut self, limit: Duration) {
        let Some(t) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + limit;
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

/// Runs the TLS handshake on `tcp` (blocking; the process's whole-request deadline bounds
/// it) and starts the pump. Returns the plaintext end for the protocol's handler, typed as
/// a `TcpStream` so that handlers take either (reads, writes, `writev`, `sendfile`, timeouts
/// and non-blocking mode all work on it; address queries go through [`peer_addr`]), and the
/// pump to [`Pump::finish`] after the handler returned. Errors: the handshake failed (the
/// alert was sent) or the client left.
pub fn terminate(mut tcp: TcpStream, config: Arc<ServerConfig>) -> Result<(TcpStream, Pump)> {
    let _ = TLS.set(true);
    let mut conn = ServerConnection::new(config).context("TLS session")?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => {
                bail!("the client left during the TLS handshake")
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A client that connects and closes (a port check) is no news.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(ClosedEarly.into()),
            Err(e) => {
                let _ = conn.write_tls(&mut tcp);
                bail!("TLS handshake: {e}");
            }
        }
    }
    let (app, pump_end) = UnixStream::pair().context("socketpair")?;
    let thread = std::thread::Builder::new()
        .name("tls".into())
        .spawn(move || pump(tcp, conn, pump_end))
        .context("starting the TLS pump")?;
    // SAFETY: the descriptor is a connected stream socket this function owns; a TcpStream
    // only calls socket operations on it, and every one used by the handlers works on a
    // Unix stream socket too (the address queries are answered by `peer_addr`).
    let app = unsafe { TcpStream::from_raw_fd(app.into_raw_fd()) };
    Ok((
        app,
        Pump {
            thread: Some(thread),
        },
    ))
}

/// Moves bytes both ways until either side is done (see the module's text).
fn pump(mut tcp: TcpStream, mut conn: ServerConnection, mut app: UnixStream) {
    let _ = tcp.set_nonblocking(true);
    let _ = app.set_nonblocking(true);
    // Plaintext from the client not yet taken by the handler.
    let mut to_app: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // What came with the end of the handshake (a TLS 1.3 client sends its request right
    // behind its Finished) is already decrypted.
    let mut client_done = drain_plaintext(&mut conn, &mut to_app, &mut buf);
    let mut app_done = false;
    loop {
        // Encrypted bytes out first.
        while conn.wants_write() {
            match conn.write_tls(&mut tcp) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        // Plaintext to the handler.
        while !to_app.is_empty() {
            match app.write(&to_app) {
                Ok(0) => return,
                Ok(n) => {
                    to_app.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The handler is gone: nothing more will be read.
                    to_app.clear();
                    client_done = true;
                }
            }
        }
        if client_done && to_app.is_empty() {
            let _ = app.shutdown(Shutdown::Write);
        }
        if app_done && !conn.wants_write() {
            let _ = tcp.shutdown(Shutdown::Write);
            return;
        }
        let tls_backlog = conn.wants_write();
        let want_tcp_in = !client_done && to_app.len() < MAX_PLAIN_BACKLOG;
        let want_app_in = !app_done && !tls_backlog;
        let mut tcp_flags = PollFlags::empty();
        if want_tcp_in {
            tcp_flags |= PollFlags::POLLIN;
        }
        if tls_backlog {
            tcp_flags |= PollFlags::POLLOUT;
        }
        let mut app_flags = PollFlags::empty();
        if want_app_in {
            app_flags |= PollFlags::POLLIN;
        }
        if !to_app.is_empty() {
            app_flags |= PollFlags::POLLOUT;
        }
        if tcp_flags.is_empty() && app_flags.is_empty() {
            return;
        }
        let (tcp_ready, app_ready) = {
            let mut fds = [
                PollFd::new(tcp.as_fd(), tcp_flags),
                PollFd::new(app.as_fd(), app_flags),
            ];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            (
                fds[0].revents().unwrap_or(PollFlags::empty()),
                fds[1].revents().unwrap_or(PollFlags::empty()),
            )
        };
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR;
        if want_tcp_in && tcp_ready.intersects(PollFlags::POLLIN | gone) {
            match conn.read_tls(&mut tcp) {
                Ok(0) => client_done = true,
                Ok(_) => match conn.process_new_packets() {
                    Ok(state) => {
                        client_done |= drain_plaintext(&mut conn, &mut to_app, &mut buf);
                        if state.peer_has_closed() {
                            client_done = true;
                        }
                    }
                    Err(e) => {
                        // A bad record: the alert goes out, and the connection ends.
                        let _ = conn.write_tls(&mut tcp);
                        let line = format!(
                            "[TLS {}] {}: bad TLS data ({e}); closing\n",
                            std::process::id(),
                            PEER.get().map(|p| p.0.to_string()).unwrap_or_default()
                        );
                        let _ = std::io::stderr().write_all(line.as_bytes());
                        return;
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => client_done = true,
            }
        }
        if want_app_in && app_ready.intersects(PollFlags::POLLIN | gone) {
            match app.read(&mut buf) {
                Ok(0) => {
                    app_done = true;
                    conn.send_close_notify();
                }
                Ok(n) => {
                    if conn.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    app_done = true;
                    conn.send_close_notify();
                }
            }
        }
    }
}

/// Moves the plaintext `conn` has decrypted into `to_app`. Returns true when the client
/// closed its side (`close_notify`).
fn drain_plaintext(conn: &mut ServerConnection, to_app: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    loop {
        match conn.reader().read(buf) {
            Ok(0) => return true,
            Ok(k) => to_app.extend_from_slice(&buf[..k]),
            // WouldBlock: nothing more for now; any other error ends the stream of plaintext
            // (the record layer reports the cause on its own).
            Err(e) => return e.kind() != ErrorKind::WouldBlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_mismatched_certificate_is_a_clear_error() {
        let e = server_config(b"", b"").unwrap_err();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
        let e = server_config(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"not a key",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("private key"), "{e:#}");
    }
}
