//! Pushing a stream out over RTMP (to nginx-rtmp, MistServer, SRS, a CDN's ingest): one
//! process per push, `sluice push --stream S --target rtmp://host[:port]/app/name`. The
//! stream is read like any viewer's ([`Cursor`]: a live stream from its newest keyframe,
//! an ended one from its start, sent at real time); the connection is
//! [`dtsc::rtmp::client::PublishClient`] (sans-IO), and the media goes out through the
//! shared loop ([`streaming::stream`]) as RTMP play does: onMetaData and sequence headers,
//! then per packet an FLV body header and chunk headers, the payload a slice of the shared
//! pages. One video and one audio track (what FLV carries).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use dtsc::machine::{self, Input, Machine};
use dtsc::rtmp::client::{ClientEvent, PublishClient};
use dtsc::{PacketRef, Track};

use crate::core::drive::{drive, Drive, Flow, Step, Stop};
use crate::core::streaming::{self, Asked, Batch, Ended, Framing, Output};
use crate::core::tracksel;
use crate::egress::PushArgs;
use crate::serve::rtmp::FlvMessages;

const PROTO: &str = "RTMP push";
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Pushes `args.stream` to `args.target` (`rtmp://…`) until the stream ends or the target
/// leaves.
pub fn push(args: &PushArgs) -> Result<()> {
    let (host, port, app, name, tc_url) = PublishClient::parse_url(&args.target)
        .ok_or_else(|| anyhow!("not an RTMP URL of the form rtmp://host[:port]/app/name"))?;
    let mut cursor = crate::egress::open_source(args)?;
    cursor.narrow_to(tracksel::flv_carried);
    let mut sock = crate::egress::connect(&host, port, HANDSHAKE)?;
    let mut client = PublishClient::new(&tc_url, &app, &name, crate::seed());
    client.start(0);
    let how = Drive {
        deadline: Some(Instant::now() + HANDSHAKE),
        poll: Duration::from_millis(200),
        what: "the publish handshake with the target",
    };
    let on = |_: &mut PublishClient, step| match step {
        Step::Event(ClientEvent::Publishing) => Ok(Flow::Done),
        Step::Event(ClientEvent::Failed(why)) => bail!("refused: {why}"),
        _ => Ok(Flow::Continue),
    };
    if drive(&mut sock, &mut client, how, on)? == Stop::Closed {
        bail!("the target closed the connection");
    }
    crate::log!(
        PROTO,
        "{}: publishing to {} ({} tracks)",
        args.stream,
        crate::core::url::redact(&args.target),
        cursor.tracks().len()
    );
    sock.set_read_timeout(None)?;
    let mut out = RtmpPushOut {
        client,
        msgs: FlvMessages::default(),
        clock: None,
        stopped: None,
        replies: Vec::new(),
    };
    let pending = out.client.take_output();
    // A buffer that dies is replaced and the push goes on from the new one.
    let ended =
        streaming::stream_resuming(&mut sock, &mut cursor, &mut out, pending, Framing::Raw)?;
    if let Some(why) = out.stopped {
        bail!("the target ended the publish: {why}");
    }
    crate::log!(
        PROTO,
        "{}: push to {} ended ({})",
        args.stream,
        crate::core::url::redact(&args.target),
        match ended {
            Ended::StreamEnded => "the stream ended",
            Ended::ClientLeft | Ended::BufferGone => "the target left",
        }
    );
    if ended == Ended::ClientLeft {
        bail!("the target closed the connection");
    }
    Ok(())
}

/// The push as an output of the shared loop (see the module docs), writing its messages
/// with [`FlvMessages`] as RTMP play does. Packets leave at real
/// time from the first one sent: a live stream is at real time anyway, and a stored stream
/// must not flood the target.
struct RtmpPushOut {
    client: PublishClient,
    msgs: FlvMessages,
    /// (wall clock, DTS) of the first packet sent.
    clock: Option<(Instant, u64)>,
    /// Why the target ended the publish, if it did.
    stopped: Option<String>,
    /// The client's answers to the target's messages (acknowledgements), not yet sent.
    replies: Vec<u8>,
}

impl<'m> Output<'m> for RtmpPushOut {
    fn init(
        &mut self,
        tracks: &[Track],
        start_ms: u64,
        _first: bool,
        b: &mut Batch<'m>,
    ) -> Result<()> {
        self.msgs.init(&mut self.client, tracks, start_ms, None, b)
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        self.msgs.packet(&mut self.client, t, p, b)
    }

    fn pace(&mut self, p: &PacketRef<'m>) -> Option<Duration> {
        let (t0, d0) = *self.clock.get_or_insert((Instant::now(), p.dts));
        let due = t0 + Duration::from_millis(p.dts.saturating_sub(d0));
        due.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Asked> {
        self.client
            .handle_input(Instant::now(), Input::Bytes(bytes))?;
        loop {
            match self.client.poll_output() {
                machine::Output::Transmit(b) => self.replies.extend_from_slice(&b),
                machine::Output::Event(ClientEvent::Failed(why) | ClientEvent::Stopped(why)) => {
                    self.stopped = Some(why);
                    return Ok(Asked::Stop);
                }
                machine::Output::Event(_) => {}
                machine::Output::Timeout(_) => return Ok(Asked::Nothing),
            }
        }
    }

    fn control(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.replies);
        out.extend_from_slice(&self.client.take_output());
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.client.unpublish();
        out.extend_from_slice(&self.client.take_output());
        Ok(())
    }
}
