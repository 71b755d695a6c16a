//! What every connection shares, whatever its protocol: accepting and limiting connections,
//! TLS, asking the controller to open a stream, reading a stream's buffer from shared memory
//! (the cursor and its start policy), the one streaming loop, track selection, the segment
//! window and segment cache, the progressive containers, and a publisher's end of the buffer.
//! Nothing here imports from [`crate::serve`], [`crate::http`], [`crate::ingest`] or
//! [`crate::egress`].

pub mod control;
pub mod cursor;
pub mod drive;
pub mod limits;
pub mod listener;
pub mod progressive;
pub mod publisher;
pub mod segcache;
pub mod streaming;
pub mod tls;
pub mod tracksel;
pub mod url;
pub mod window;
