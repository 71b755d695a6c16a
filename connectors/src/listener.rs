//! The listener loop shared by every protocol: bind, accept, fork; the child runs the
//! protocol's handler on the socket and exits, the parent goes back to accepting.
//!
//! Forking without exec keeps a viewer's process small: it shares the listener's pages
//! copy-on-write and only its own stack and buffers are private (see `docs/PERFORMANCE.md`).
//! The listener must stay single-threaded for `fork` to be sound.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult};

use crate::Ctx;

/// Sets this process's name as `/proc/PID/comm` shows it (at most 15 bytes).
pub fn set_process_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
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
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Accepts connections on `interface:port` forever, running `handler` in a forked child per
/// connection. Children are reaped automatically (SIGCHLD ignored).
pub fn serve(
    proto: &str,
    interface: &str,
    port: u16,
    ctx: Ctx,
    handler: fn(TcpStream, &Ctx) -> Result<()>,
) -> Result<()> {
    set_process_name(&format!("sluice-{proto}"));
    let listener =
        bind(interface, port).with_context(|| format!("{proto}: binding {interface}:{port}"))?;
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe {
        signal(Signal::SIGCHLD, SigHandler::SigIgn)?;
        signal(Signal::SIGPIPE, SigHandler::SigIgn)?;
    }
    crate::log!(proto, "listening on {interface}:{port}");
    loop {
        let (sock, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                crate::log!(proto, "accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        // SAFETY: this process is single-threaded (the listener never starts threads).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(listener);
                // SAFETY: restore default SIGCHLD in the child so its own waits work.
                unsafe {
                    let _ = signal(Signal::SIGCHLD, SigHandler::SigDfl);
                }
                set_process_name(proto);
                // The connection's slot in the session table, for the controller's stats.
                let counted = sock.try_clone().ok();
                buffer::sessions::begin(&ctx.rundir, proto, &peer.ip().to_string());
                let result = handler(sock, &ctx);
                buffer::sessions::end(counted.as_ref());
                let code = match result {
                    Ok(()) => 0,
                    Err(e) => {
                        crate::log!(proto, "{peer}: {e:#}");
                        1
                    }
                };
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { .. }) => {
                // The child owns the connection now.
                let _ = sock.as_raw_fd();
                drop(sock);
            }
            Err(e) => {
                crate::log!(proto, "fork failed ({e}); dropping {peer}");
            }
        }
    }
}
