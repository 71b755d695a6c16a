//! RTSP (RFC 2326, RTSP 1.0) on the client side, sans-IO: [`client::RtspClient`] plays a
//! camera's stream or records (pushes) to another server, driven through
//! [`crate::machine::Machine`]. The server side is `connectors::serve::rtsp`.

pub mod client;
