//! Process helpers every Sluice process uses: its name as `ps` and `top` show it, and
//! SIGTERM/SIGINT turned into a flag its loop checks.

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
