//! RTMP (Adobe RTMP specification 1.0, December 2012), sans-IO.
//!
//! * [`handshake`]: the simple handshake, server and client side (§5.2).
//! * [`chunk`]: the chunk stream, messages to chunks and back (§5.3, §5.4).
//! * [`client`]: a publishing client's connection state (pushes out to other servers).
//! * [`session`]: the server's connection state: NetConnection / NetStream commands (§7),
//!   publish and play, acknowledgements and pings; bytes in, events and bytes out.
//!
//! Nothing here touches a socket or a clock: the connector feeds received bytes, polls
//! events, writes the output bytes (or a zero-copy [`chunk::Span`] plan) itself.

pub mod chunk;
pub mod client;
pub mod handshake;
pub mod session;

pub use chunk::{ChunkDecoder, ChunkEncoder, ChunkError, Message, Span};
pub use handshake::{ClientHandshake, Handshake, HandshakeError, HandshakeProgress};
pub use session::{Event, MediaKind, ServerConfig, ServerSession, SessionError};
