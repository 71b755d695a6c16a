//! The publishing end of a buffer connection, shared by the RTMP, RTSP and DTSC publishers:
//! writes DTSC frames (`DTSC` headers and `DTP2` packets, `docs/DTSC.md`) to the stream's
//! buffer, and survives the buffer's death.
//!
//! It keeps the last track header and the packets since the newest video keyframe (the
//! current GOP, `dtsc::gop::GopKeeper`). When a write fails because the buffer died, it opens the stream again with
//! the credentials it was let in with ([`control::reattach_publisher`]: the controller starts
//! a new buffer) and writes the header and the GOP first, so the new buffer starts at a
//! keyframe at once: viewers go on without waiting for the encoder's next keyframe (they skip
//! what they already had, `streaming::stream_resuming`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use buffer::shmem::Attached;
use dtsc::gop::GopKeeper;
use dtsc::wire::{self, FrameSink, Header};
use dtsc::PacketRef;
use ipc::messages::{BufferRequest, Message};

use crate::core::control::{self, PushAuth};

/// A publisher's connection to its stream's buffer.
pub struct Publisher {
    /// The protocol, for log lines (`RTMP`, `RTSP`).
    proto: &'static str,
    attached: Attached,
    rundir: PathBuf,
    /// The name the stream was opened as (a `BASE+X` wildcard name, or a key-rewritten one).
    stream: String,
    peer: String,
    auth: PushAuth,
    kept: GopKeeper,
    /// Frames handed as values ([`FrameSink`]), encoded and waiting for [`Publisher::flush`].
    pending: Vec<u8>,
}

impl Publisher {
    /// A publisher over `attached` (the stream opened as `stream` with `auth`, by `peer`
    /// over `proto`).
    pub fn new(
        proto: &'static str,
        attached: Attached,
        rundir: PathBuf,
        stream: &str,
        peer: &str,
        auth: PushAuth,
    ) -> Publisher {
        Publisher {
            proto,
            attached,
            rundir,
            stream: stream.to_string(),
            peer: peer.to_string(),
            auth,
            kept: GopKeeper::default(),
            pending: Vec::with_capacity(64 << 10),
        }
    }

    /// Writes the frames handed as values since the last flush ([`FrameSink`]) to the
    /// buffer. When the buffer died, reattaches to a new one (header and GOP first) and
    /// writes them there. Errors: no new buffer within 3 s, or the new one failed too.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.pending);
        let r = self.send(&frames);
        self.pending = frames;
        self.pending.clear();
        r
    }

    /// Sends frames the GOP keeper has already seen, reattaching when the buffer died.
    fn send(&mut self, frames: &[u8]) -> Result<()> {
        let Err(e) = self.attached.sock.write_all(frames) else {
            return Ok(());
        };
        let (peer, stream) = (&self.peer, &self.stream);
        crate::log!(
            self.proto,
            "{peer}: {stream}: the buffer is gone ({e}); reattaching"
        );
        self.attached = control::reattach_publisher(&self.rundir, stream, peer, &self.auth)?;
        // The GOP already holds `frames` (kept above).
        let again = self.kept.replay();
        self.attached
            .sock
            .write_all(&again)
            .context("writing to the new buffer")?;
        crate::log!(
            self.proto,
            "{peer}: {stream}: reattached to a new buffer ({} bytes of GOP sent again)",
            again.len()
        );
        Ok(())
    }
}

/// Frames as values: each is encoded once into the pending bytes, and the GOP keeper takes
/// the track and keyframe from the value, parsing nothing. [`Publisher::flush`] sends them.
impl FrameSink for Publisher {
    fn header(&mut self, h: &Header) {
        let at = self.pending.len();
        wire::write_header(h, &mut self.pending);
        self.kept
            .keep_header(h, self.pending.get(at..).unwrap_or_default());
    }

    fn packet(&mut self, p: &PacketRef) {
        let at = self.pending.len();
        wire::write_packet(p, &mut self.pending);
        self.kept
            .keep_packet(p, self.pending.get(at..).unwrap_or_default());
    }
}

impl Publisher {
    /// Tells the buffer that the publish ended on purpose (RTMP `FCUnpublish`/`deleteStream`,
    /// RTSP `TEARDOWN`, a DTSC push's close): the stream ends at once. A publisher that
    /// leaves without this (a dropped connection, a killed encoder) gets the stream's
    /// grace time to come back before the stream ends (`buffer`'s `--grace-ms`). Best
    /// effort: a buffer that is gone has nothing to end.
    pub fn finish(&mut self) {
        let mut out = Vec::new();
        wire::write_command(&BufferRequest::Unpublish.to_value(), &mut out);
        let _ = self.attached.sock.write_all(&out);
    }
}
