//! What a camera sends to the RTSP pull input (untrusted): the input, cut into chunks by one
//! length byte each (×8 bytes), is the server's side of the session — responses, SDP and
//! interleaved RTP/RTCP — fed to `RtspClient` and, once described, to `RtpIngest`, with time
//! moving 100 ms a chunk. Nothing panics, and every frame the ingest writes parses as DTP2.
#![no_main]

use dtsc::rtp::ingest::RtpIngest;
use dtsc::rtsp::client::{ClientEvent, Lower, RtspClient};
use dtsc::machine::{Input, Machine, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, mut rest)) = data.split_first() else {
        return;
    };
    let lower = if b & 1 == 0 { Lower::Tcp } else { Lower::Udp };
    let mut c = RtspClient::new("rtsp://user:pass@127.0.0.1:554/cam", lower).unwrap();
    let mut now = std::time::Instant::now();
    c.start(now);
    let mut ingest: Option<RtpIngest> = None;
    let mut frames = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = (usize::from(len) * 8).min(tail.len());
        let _ = c.handle_input(now, Input::Bytes(&tail[..n]));
        rest = &tail[n..];
        now += std::time::Duration::from_millis(100);
        let _ = c.handle_input(now, Input::Timeout);
        loop {
            let ev = match c.poll_output() {
                Output::Transmit(_) => continue,
                Output::Event(ev) => ev,
                Output::Timeout(_) => break,
            };
            match ev {
                ClientEvent::Described(tracks) => {
                    if lower == Lower::Udp {
                        c.set_client_ports(vec![(5000, 5001); tracks.len()], now);
                    }
                    ingest = Some(RtpIngest::new(tracks, 1000));
                }
                ClientEvent::SetUp { track, channel, .. } => {
                    if let Some(t) = ingest.as_mut().and_then(|i| i.tracks.get_mut(track)) {
                        t.channel = Some(channel);
                    }
                }
                ClientEvent::Data { channel, bytes } => {
                    if let Some(i) = &mut ingest {
                        match i.track_on(channel) {
                            Some((k, true)) => i.rtcp(k, &bytes),
                            Some((k, false)) => {
                                let _ = i.rtp(k, &bytes, &mut frames);
                            }
                            None => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(i) = &mut ingest {
        i.finish(&mut frames);
    }
    let mut at = 0;
    while at < frames.len() {
        match dtsc::wire::parse_frame(&frames[at..]) {
            Ok(Some((_, used))) => at += used,
            other => panic!("the ingest wrote a frame that does not parse: {other:?}"),
        }
    }
});
