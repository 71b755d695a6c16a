//! The one blocking driver of a sans-IO protocol machine ([`dtsc::machine::Machine`]) over a
//! TCP socket: what the RTMP push, the RTSP push and the RTMP pull run their handshakes and
//! sessions with. It writes what the machine transmits, reads what arrives (waking at the
//! machine's own timers and at least every `poll`), feeds it with the time, and hands each
//! event to the caller, until the caller says it is done, the peer closes, or the deadline
//! passes.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dtsc::machine::{Input, Machine, Output};

/// What the caller's handlers answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop driving: [`drive`] returns [`Stop::Done`].
    Done,
}

/// What [`drive`] hands its caller.
#[derive(Debug)]
pub enum Step<E> {
    /// An event of the machine.
    Event(E),
    /// A wake-up is done (the events of what arrived were handled first): this many bytes
    /// arrived, 0 on a timeout.
    Woke(usize),
}

/// Why [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A handler answered [`Flow::Done`].
    Done,
    /// The peer closed the connection.
    Closed,
}

/// How [`drive`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Drive {
    /// Give up (an error naming `what`) when the handlers have not said done by then.
    pub deadline: Option<Instant>,
    /// Wake at least this often, so the caller hears [`Step::Woke`] on a quiet connection.
    pub poll: Duration,
    /// What is being driven, for errors ("the handshake with the target").
    pub what: &'static str,
}

/// Drives `m` over `sock` (see the module docs), handing `on` each [`Step`]. Errors: the
/// machine's (the peer's bytes were wrong), a socket error, a handler's error, or the
/// deadline passing.
pub fn drive<M: Machine>(
    sock: &mut TcpStream,
    m: &mut M,
    how: Drive,
    mut on: impl FnMut(&mut M, Step<M::Event>) -> Result<Flow>,
) -> Result<Stop> {
    let mut buf = vec![0u8; 64 << 10];
    let mut last: Option<usize> = None;
    // The socket's read timeout as last set: set again only when it changes, not once a
    // read (a quiet connection's wait is the poll interval every time).
    let mut timeout: Option<Duration> = None;
    loop {
        let wake = loop {
            match m.poll_output() {
                Output::Transmit(bytes) => sock
                    .write_all(&bytes)
                    .with_context(|| format!("{}: writing", how.what))?,
                Output::Event(e) => {
                    if on(m, Step::Event(e))? == Flow::Done {
                        return Ok(Stop::Done);
                    }
                }
                Output::Timeout(when) => break when,
            }
        };
        // After the events of the last input: what arrived is dealt with.
        if let Some(got) = last {
            if on(m, Step::Woke(got))? == Flow::Done {
                return Ok(Stop::Done);
            }
        }
        let now = Instant::now();
        if how.deadline.is_some_and(|d| now >= d) {
            bail!("{}: no answer in time", how.what);
        }
        let until = [Some(now + how.poll), wake, how.deadline]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + how.poll);
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        // Milliseconds are the socket option's grain: a wait that differs by less is the same.
        let wait = Duration::from_millis(wait.as_millis() as u64);
        if timeout != Some(wait) {
            sock.set_read_timeout(Some(wait))?;
            timeout = Some(wait);
        }
        let got = match sock.read(&mut buf) {
            Ok(0) => return Ok(Stop::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(e).with_context(|| format!("{}: reading", how.what)),
        };
        let input = match buf.get(..got) {
            Some(b) if got > 0 => Input::Bytes(b),
            _ => Input::Timeout,
        };
        m.handle_input(Instant::now(), input)
            .map_err(|e| anyhow!("{}: {e}", how.what))?;
        last = Some(got);
    }
}
