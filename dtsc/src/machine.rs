//! The one shape of every sans-IO protocol machine in this crate (the RTMP server session
//! and client, the RTSP client), the way str0m's `Rtc` is driven: the caller owns the socket
//! and the clock, hands the machine what arrived and the time with
//! [`Machine::handle_input`], and drains [`Machine::poll_output`] until it answers
//! [`Output::Timeout`]: bytes to send, events to act on, and when the machine next wants to
//! be woken if nothing arrives. No machine reads a clock, opens a socket or starts a thread,
//! so each runs the same under a test, a fuzzer or a blocking or polling driver.
//!
//! ```text
//! loop {
//!     match m.poll_output() {
//!         Output::Transmit(bytes) => socket.write_all(&bytes),
//!         Output::Event(e) => act_on(e),
//!         Output::Timeout(when) => {
//!             let input = read with a deadline of `when`;   // Bytes, or Timeout
//!             m.handle_input(now, input)?;
//!         }
//!     }
//! }
//! ```

use std::time::Instant;

/// What a machine is handed ([`Machine::handle_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes that arrived from the peer, in order (any split: a machine keeps a partial
    /// message until the rest comes).
    Bytes(&'a [u8]),
    /// Nothing arrived by the time the machine asked to be woken at ([`Output::Timeout`]).
    Timeout,
}

/// What a machine asks of its driver ([`Machine::poll_output`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Output<E> {
    /// Bytes to send to the peer, in order.
    Transmit(Vec<u8>),
    /// Something the application acts on (a protocol's own event type).
    Event(E),
    /// Nothing more for now: wait for input, at most until this instant (`None`: no timer is
    /// running), then call [`Machine::handle_input`] with [`Input::Timeout`].
    Timeout(Option<Instant>),
}

/// A sans-IO protocol machine: see the module docs.
pub trait Machine {
    /// What the machine tells its application.
    type Event;
    /// Why the machine cannot go on; the connection should then be closed. Errors carry
    /// what the peer sent wrong (which message, which offset) in their text.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Feeds what arrived at `now` (a monotonic instant; the machine keeps it for the
    /// timers it runs). After an error the machine is done.
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Self::Error>;

    /// The next thing to do: bytes to send first, then events in order, then
    /// [`Output::Timeout`] once nothing is left (call again after the next input).
    fn poll_output(&mut self) -> Output<Self::Event>;
}
