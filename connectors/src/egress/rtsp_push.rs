//! Pushing a stream out over RTSP (ANNOUNCE/RECORD to another server: MediaMTX, Wowza, a
//! Sluice or MistServer `push://` stream, ffmpeg `-rtsp_flags listen`). One process per
//! push, `sluice push --stream S --target rtsp://[user:pass@]host[:port]/path`, as the
//! controller's push feature starts them.
//!
//! The stream is read like any viewer's ([`Cursor`]: a live stream from its newest
//! keyframe, an ended one from its start at real time); the handshake is
//! [`RtspClient::new_record`] (the SDP is the one Sluice's DESCRIBE would give, credentials
//! of the URL answer a 401); then the media goes out interleaved on the connection through
//! the same output as RTSP play (`rtsp::RtspPlay`: sender reports, receiver reports read,
//! RTCP BYE at the end), followed by TEARDOWN.
//!
//! Errors (target unreachable, refused, the stream never gets media) end the process with
//! a message naming them; retrying is the caller's (the controller's push rules).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use dtsc::machine::{self, Machine};

use crate::core::drive::{drive, Drive, Flow, Step, Stop};

use crate::egress::PushArgs;
use dtsc::rtsp::client::{ClientEvent, RtspClient};

const PROTO: &str = "RTSP push";
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Pushes `args.stream` to `args.target` (`rtsp://…`) until the stream ends or the target
/// leaves; see the module docs.
pub fn push(args: &PushArgs) -> Result<()> {
    let cursor = crate::egress::open_source(args)?;
    let tracks: Vec<dtsc::Track> = crate::serve::rtsp::rtsp_tracks(cursor.tracks())
        .into_iter()
        .cloned()
        .collect();
    if tracks.is_empty() {
        bail!("{}: no track RTSP can carry", args.stream);
    }
    // The handshake.
    let probe = RtspClient::new(&args.target, dtsc::rtsp::client::Lower::Tcp)
        .map_err(|e| anyhow!("{e}"))?;
    let shown = probe.url().to_string();
    let url = rtsp_types::Url::parse(&shown).map_err(|e| anyhow!("{e}"))?;
    let host = url.host_str().unwrap_or("").to_string();
    let mut sock = crate::egress::connect(&host, url.port().unwrap_or(554), HANDSHAKE)?;
    let local = sock.local_addr()?.ip().to_string();
    let refs: Vec<&dtsc::Track> = tracks.iter().collect();
    let sdp = crate::serve::rtsp::sdp_of(&refs, &args.stream, &local, "npt=now-");
    let controls = tracks.iter().map(|t| format!("trackID={}", t.id)).collect();
    let mut client =
        RtspClient::new_record(&args.target, sdp, controls).map_err(|e| anyhow!("{e}"))?;
    client.start(Instant::now());
    let how = Drive {
        deadline: Some(Instant::now() + HANDSHAKE),
        poll: Duration::from_millis(200),
        what: "the RTSP handshake with the target",
    };
    let on = |_: &mut RtspClient, step| match step {
        Step::Event(ClientEvent::Playing) => Ok(Flow::Done),
        Step::Event(ClientEvent::Failed(why)) => bail!("{shown}: {why}"),
        _ => Ok(Flow::Continue),
    };
    if drive(&mut sock, &mut client, how, on)? == Stop::Closed {
        bail!("{shown}: the target closed the connection");
    }
    crate::log!(
        PROTO,
        "{}: recording to {shown} ({} tracks)",
        args.stream,
        tracks.len()
    );
    sock.set_read_timeout(None)?;
    let ended =
        crate::serve::rtsp::stream_out(sock.try_clone()?, cursor, &tracks, &args.stream, &shown)?;
    client.teardown(Instant::now());
    while let machine::Output::Transmit(tx) = client.poll_output() {
        let _ = sock.write_all(&tx);
    }
    crate::log!(
        PROTO,
        "{}: push to {shown} ended ({})",
        args.stream,
        if ended {
            "the stream ended"
        } else {
            "the target left"
        }
    );
    Ok(())
}
