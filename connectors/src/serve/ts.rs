//! The TS connector (MistServer's port 8888): raw MPEG-TS over TCP, one process per client.
//! A client may name the stream in its first line (`live\n`, sent within 500 ms, as `nc`
//! does); otherwise the protocol entry's `stream` setting is played (for clients such as
//! `ffmpeg -i tcp://HOST:8888` that send nothing). Bytes after that are ignored.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::core::control::OpenError;
use crate::core::cursor::{Cursor, StartPolicy};
use crate::core::progressive::TsOutput;
use crate::core::streaming::{self, Ended, Framing};
use crate::Ctx;

const PROTO: &str = "TS";

/// Reads a first line naming a stream, if the client sends one quickly.
fn first_line(sock: &mut TcpStream) -> Option<String> {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < buf.len() {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = got.split(|&b| b == b'\n').next()?;
    let name = String::from_utf8_lossy(line).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// Serves one TS client.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    let peer = crate::core::tls::peer_addr(&sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let Some(stream) = first_line(&mut sock).or_else(|| ctx.default_stream.clone()) else {
        bail!("{peer}: no stream named and no default stream configured for TS");
    };
    crate::core::limits::disarm();
    sock.set_read_timeout(None)?;
    let mut cursor = match Cursor::open(&ctx.rundir, &stream, &peer) {
        Ok(c) => c,
        Err(OpenError::NotFound(r)) => {
            crate::log!(PROTO, "{peer}: {stream}: not found ({r})");
            return Ok(());
        }
        Err(e) => return Err(anyhow!("{peer}: {stream}: {e}")),
    };
    if !cursor.wait_ready(Duration::from_secs(10), 1) {
        crate::log!(PROTO, "{peer}: {stream}: {}", cursor.not_ready_reason());
        return Ok(());
    }
    cursor.start(StartPolicy::Usual);
    let mut out = TsOutput::default();
    match streaming::stream_resuming(&mut sock, &mut cursor, &mut out, Vec::new(), Framing::Raw) {
        Ok(Ended::StreamEnded) => crate::log!(PROTO, "{peer}: {stream} ended"),
        Ok(Ended::ClientLeft | Ended::BufferGone) => {}
        Err(e) => return Err(anyhow!("{peer}: {stream}: {e:#}")),
    }
    Ok(())
}
