//! `sluice-analyse`'s analysers, one module per kind, each sans-IO: a function or state
//! machine takes bytes (and, for live kinds, the time as an argument) and returns a report
//! struct that serializes to JSON ([`serde::Serialize`]) and prints as text
//! ([`report::render_text`]). `main.rs` and the thin IO loops ([`live`]) are the only code
//! that reads files, sockets or clocks.
//!
//! Parsing goes through the `dtsc` library wherever it has a parser (FLV tags, the MPEG-TS
//! demuxer, MP4 boxes and sample tables, DTSC frames and `.dtsh` indexes, SPS readers,
//! AudioSpecificConfig and ADTS headers, PSI sections and PES headers, HLS playlists, the
//! RTMP client); what is here reads only what the server never needs (the TS packet walk
//! for PIDs, continuity counters and PCRs, box trees, RFC 8216 rules).

pub mod aac;
pub mod dtsc;
pub mod flv;
pub mod h264;
pub mod hevc;
pub mod hls;
pub mod live;
pub mod mp4;
pub mod report;
pub mod rtmp;
pub mod rtsp;
pub mod ts;

pub use report::{render_text, ReadError, Violation};
