//! The thin blocking IO loops around the sans-IO live analysers: TCP for RTMP, RTSP and
//! DTSC, HTTP (ureq) for HLS. Each reads a clock and a socket, and nothing else.

use std::time::Duration;

use anyhow::{bail, Result};

/// Placeholder.
pub fn dtsc(_url: &str, _d: Duration, _c: Option<usize>) -> Result<crate::dtsc::DtscReport> {
    bail!("not yet")
}
/// Placeholder.
pub fn rtmp(_url: &str, _d: Duration, _c: Option<usize>) -> Result<()> {
    bail!("not yet")
}
/// Placeholder.
pub fn hls(_url: &str, _d: Duration, _v: Option<usize>) -> Result<()> {
    bail!("not yet")
}
/// Placeholder.
pub fn rtsp(_url: &str) -> Result<()> {
    bail!("not yet")
}
