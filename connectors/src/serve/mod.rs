//! The stream protocols a client connects to on its own port (not HTTP): RTMP play and
//! publish, RTSP play and record, the DTSC connector between servers, and raw MPEG-TS over
//! TCP. Each `handle` runs in the connection's own process.

pub mod dtsc;
pub mod rtmp;
pub mod rtsp;
pub mod rtsp_auth;
pub mod ts;
