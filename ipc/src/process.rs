//! Process helpers every Sluice process uses: its name as `ps` and `top` show it,
//! SIGTERM/SIGINT turned into a flag its loop checks, and random bytes from the kernel.

use std::sync::atomic::{AtomicBool, Ordering};

/// Sets this process's name as `/proc/PID/comm` shows it (at most 15 bytes).
pub fn set_process_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM/SIGINT handlers that set a flag the loops check.
pub fn install_term_handler() -> &'static AtomicBool {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &act);
        let _ = sigaction(Signal::SIGINT, &act);
    }
    &TERM
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`, which waits until the
/// kernel's pool is ready and never reads a file that could be missing). Errors: the system
/// call failed (its errno); `buf` then holds no secret and must not be used as one.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is writable for `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_bytes_are_filled_and_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::random_bytes(&mut a).unwrap();
        super::random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
