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

/// What sends media on an RTMP connection with FLV message bodies: the server side of a play
/// ([`ServerSession`]) or a publishing client ([`client::PublishClient`]). One output writes
/// metadata, sequence headers and frames through either.
pub trait MediaSender {
    /// `onMetaData` with `values` (see [`ServerSession::send_metadata`]).
    fn send_metadata(&mut self, values: &[crate::amf0::Amf0]) -> Result<(), SessionError>;
    /// One media message, copied into the output.
    fn send_media(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
    ) -> Result<(), SessionError>;
    /// One media message as chunk headers in `hdrs` and a send plan (zero-copy).
    fn write_media_parts(
        &mut self,
        kind: MediaKind,
        timestamp: u64,
        parts: &[&[u8]],
        hdrs: &mut Vec<u8>,
        plan: &mut Vec<Span>,
    ) -> Result<(), SessionError>;
    /// The bytes to send before a plan made after this call.
    fn take_output(&mut self) -> Vec<u8>;
}

macro_rules! media_sender {
    ($t:ty) => {
        impl MediaSender for $t {
            fn send_metadata(&mut self, values: &[crate::amf0::Amf0]) -> Result<(), SessionError> {
                <$t>::send_metadata(self, values)
            }
            fn send_media(
                &mut self,
                kind: MediaKind,
                timestamp: u64,
                parts: &[&[u8]],
            ) -> Result<(), SessionError> {
                <$t>::send_media(self, kind, timestamp, parts)
            }
            fn write_media_parts(
                &mut self,
                kind: MediaKind,
                timestamp: u64,
                parts: &[&[u8]],
                hdrs: &mut Vec<u8>,
                plan: &mut Vec<Span>,
            ) -> Result<(), SessionError> {
                <$t>::write_media_parts(self, kind, timestamp, parts, hdrs, plan)
            }
            fn take_output(&mut self) -> Vec<u8> {
                <$t>::take_output(self)
            }
        }
    };
}
media_sender!(ServerSession);
media_sender!(client::PublishClient);
