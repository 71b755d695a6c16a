//! The listener loop shared by every protocol: bind, accept, fork; the child runs the
//! protocol's handler on the socket and exits, the parent goes back to accepting.
//!
//! Forking without exec keeps a viewer's process small: it shares the listener's pages
//! copy-on-write and only its own stack and buffers are private (see `docs/PERFORMANCE.md`).
//! The listener must stay single-threaded for `fork` to be sound. It counts its children
//! (reaping them itself) to hold the caps of [`crate::core::limits`].

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult};

use crate::core::limits::{self, Children, Limits, Refusal, Totals};
use crate::core::tls::{self, CertFiles};
use crate::Ctx;

pub use ipc::process::set_process_name;

static HUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    HUP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Connections the kernel queues before `accept` (std's listener uses 128, which drops SYNs
/// when a thousand players connect at once; the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A listening TCP socket with `SO_REUSEADDR` and a [`BACKLOG`]-deep accept queue.
fn bind(interface: &str, port: u16) -> Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrStorage,
    };
    use std::net::ToSocketAddrs;
    let addr = (interface, port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{interface} has no address"))?;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `::` takes IPv4 clients too (as IPv4-mapped addresses, made plain again by
        // `crate::core::tls::peer_addr`).
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// What the listener answers a connection it will not serve (the limits of
/// [`crate::core::limits`]): HTTP gets `503 Service Unavailable` with `Retry-After` (RFC 9110
/// §15.6.4, §10.2.3), written without reading the request; other protocols need a parsed
/// request to answer, so their connection is closed.
fn refuse(proto: &str, sock: &TcpStream) {
    use std::io::{Read, Write};
    let _ = sock.set_nonblocking(true);
    if proto == "HTTP" {
        let body = "Too many connections; try again shortly\n";
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n{body}",
            body.len()
        );
        let _ = (&*sock).write(resp.as_bytes());
    }
    // What already arrived is discarded unread, so that closing sends FIN rather than a
    // reset that could destroy the answer before the client reads it.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match (&*sock).read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
}

/// True for the protocols whose handler answers a connection over the caps in its own
/// words ([`limits::refusing`]).
fn says_no_itself(proto: &str) -> bool {
    matches!(proto, "RTMP" | "RTMPS" | "RTSP" | "RTSPS")
}

/// Log lines about refused connections, at most one a second per limit (a connect storm
/// must not flood the log): the count refused since the last line is in the next one.
#[derive(Default)]
struct RefusalLog {
    last: HashMap<Refusal, (Instant, u64)>,
}

impl RefusalLog {
    fn note(&mut self, proto: &str, peer: &SocketAddr, why: Refusal, l: &Limits) {
        let now = Instant::now();
        let entry = self
            .last
            .entry(why)
            .or_insert((now - Duration::from_secs(2), 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            let more = entry.1 - 1;
            let also = if more > 0 {
                format!(" ({more} more refused in the last second)")
            } else {
                String::new()
            };
            crate::log!(proto, "{peer}: refused: {} reached{also}", why.describe(l));
            *entry = (now, 0);
        }
    }
}

/// Accepts connections on `interface:port` forever, running `handler` in a forked child per
/// connection, within `limits`: a connection over a cap is refused before any fork
/// ([`refuse`]; logged at most once a second per cap), and each child starts with its
/// whole-request deadline armed ([`limits::arm`]; the handler disarms it once the client's
/// request is in) and a send timeout of [`Limits::stall`] on its socket, so that no blocking
/// write waits longer for a client that stopped reading. Ended children are reaped and
/// uncounted at least once a second.
pub fn serve(
    proto: &str,
    interface: &str,
    port: u16,
    ctx: Ctx,
    limits: Limits,
    tls: Option<CertFiles>,
    handler: fn(TcpStream, &Ctx) -> Result<()>,
) -> Result<()> {
    set_process_name(&format!("sluice-{proto}"));
    limits::set(limits);
    let mut cert = match &tls {
        Some(files) => Some(tls::Loaded::load(files).with_context(|| format!("{proto}: TLS"))?),
        None => None,
    };
    let mut cert_checked = Instant::now();
    let listener = match bind(interface, port) {
        // A machine without IPv6 still gets every IPv4 interface.
        Err(_) if interface == "::" => bind("0.0.0.0", port),
        r => r,
    }
    .with_context(|| format!("{proto}: binding {interface}:{port}"))?;
    // SAFETY: setting signal dispositions; the SIGHUP handler only stores to an atomic.
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigIgn)?;
        signal(Signal::SIGHUP, SigHandler::Handler(on_hup))?;
    }
    let mut children = Children::default();
    let totals = Totals::open(&ctx.rundir);
    let mut refusals = RefusalLog::default();
    crate::log!(
        proto,
        "listening on {interface}:{port} (at most {} connections, {} per address, {} in all, \
         {} still sending their request; requests within {} s; viewers dropped after {} s \
         without progress)",
        limits.per_listener,
        limits.per_address,
        limits.total,
        limits.requests,
        limits.request.as_secs(),
        limits.stall.as_secs()
    );
    let mut refusers = Children::default();
    let ready = limits::ReadyPipe::new().context("the listener's pipe")?;
    loop {
        Children::reap(&mut [&mut children, &mut refusers]);
        for pid in ready.drain() {
            children.ready(pid);
        }
        totals.set(children.len() as u32);
        // A renewed certificate is used by the next connections (SIGHUP: at once).
        let hup = HUP.swap(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(c) = cert
            .as_mut()
            .filter(|_| hup || cert_checked.elapsed() >= Duration::from_secs(1))
        {
            cert_checked = Instant::now();
            match c.refresh(hup) {
                Ok(true) => crate::log!(proto, "TLS certificate loaded again"),
                Ok(false) => {}
                Err(e) => crate::log!(
                    proto,
                    "TLS certificate not reloaded (the old one stays): {e:#}"
                ),
            }
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                crate::log!(proto, "poll: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let (sock, peer) = match listener.accept() {
            Ok((s, p)) => (s, SocketAddr::new(p.ip().to_canonical(), p.port())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::log!(proto, "accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        Children::reap(&mut [&mut children, &mut refusers]);
        for pid in ready.drain() {
            children.ready(pid);
        }
        let mine = children.len() as u32;
        let mut refusal = None;
        if let Err(why) = children.admit(&peer.ip(), totals.sum(mine), &limits) {
            refusals.note(proto, &peer, why, &limits);
            // RTMP and RTSP can only say no to a request they have read: a few processes
            // do that; HTTP's answer needs no request, and the rest are closed.
            if !says_no_itself(proto) || refusers.len() >= limits::MAX_REFUSERS {
                refuse(proto, &sock);
                continue;
            }
            refusal = Some(format!("server busy: {} reached", why.describe(&limits)));
        }
        // SAFETY: this process is single-threaded (the listener never starts threads).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(listener);
                set_process_name(proto);
                limits::set_ready_fd(ready.write.as_raw_fd());
                match refusal {
                    Some(why) => {
                        limits::set_refusing(why);
                        limits::arm(
                            proto,
                            &peer.to_string(),
                            "the refusal",
                            limits::REFUSE_DEADLINE,
                        );
                    }
                    None => limits::arm(proto, &peer.to_string(), "the request", limits.request),
                }
                let _ = sock.set_write_timeout(Some(limits.stall));
                // The connection's slot in the session table, for the controller's stats.
                let counted = sock.try_clone().ok();
                ipc::sessions::begin(&ctx.rundir, proto, &peer.ip().to_string());
                let (sock, pump) = match &cert {
                    None => (sock, None),
                    Some(c) => {
                        if let Ok(local) = tls::local_addr(&sock) {
                            tls::set_addrs(peer, local);
                        }
                        if let Some(c) = &counted {
                            if let Ok(c) = c.try_clone() {
                                ipc::sessions::count_from(c);
                            }
                        }
                        match tls::terminate(sock, c.config.clone()) {
                            Ok((s, p)) => {
                                let _ = s.set_write_timeout(Some(limits.stall));
                                (s, Some(p))
                            }
                            Err(e) => {
                                if !e.is::<tls::ClosedEarly>() {
                                    crate::log!(proto, "{peer}: {e:#}");
                                }
                                ipc::sessions::end(counted.as_ref());
                                std::process::exit(1);
                            }
                        }
                    }
                };
                let result = handler(sock, &ctx);
                if let Some(p) = pump {
                    // What the handler wrote still goes out, then close_notify.
                    p.finish(Duration::from_secs(5));
                }
                ipc::sessions::end(counted.as_ref());
                let code = match result {
                    Ok(()) => 0,
                    Err(e) => {
                        crate::log!(proto, "{peer}: {e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                // The child owns the connection now.
                drop(sock);
                if refusal.is_some() {
                    refusers.add(child, peer.ip());
                } else {
                    children.add(child, peer.ip());
                }
                totals.set(children.len() as u32);
            }
            Err(e) => {
                crate::log!(proto, "fork failed ({e}); dropping {peer}");
            }
        }
    }
}
