//! `dtsc`: Sluice's media library. The media model and every format and protocol the server
//! speaks, written sans-IO: codecs and state machines take bytes (and, where time matters,
//! the time as an argument) and return values, bytes and events. Nothing in this crate opens
//! a socket, starts a thread or reads a clock, so every piece can be tested and fuzzed alone.
//!
//! A packet's path: publisher bytes → [`rtmp`] session → [`flv`] tag → [`model::Packet`] →
//! [`wire`] DTP2 frame in a [`shm`] page → a connector reads it → [`flv`]/[`rtmp`] or
//! [`ts`]/[`hls`] → viewer bytes.

pub mod aac;
pub mod amf0;
pub mod container;
pub mod dash;
pub mod dtsh;
pub mod flv;
pub mod gop;
pub mod h264;
pub mod hds;
pub mod hevc;
pub mod hls;
pub mod machine;
pub mod mkv;
pub mod model;
pub mod mp3;
pub mod mp4;
pub mod mp4demux;
pub mod rtmp;
pub mod rtp;
pub mod rtsp;
pub mod shm;
pub mod smooth;
pub mod ts;
pub mod tsdemux;
pub mod url;
pub mod wire;

pub use model::{main_track, Codec, Packet, PacketRef, Track, TrackKind};
