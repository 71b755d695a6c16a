//! The RTMP client (`dtsc::rtmp::client`), publishing or (odd first byte) playing, fed a
//! remote server's bytes: a valid S0+S1+S2 first, then the fuzz input as the chunk stream in
//! pieces whose size the first input byte picks. Nothing may panic; once the client says it publishes, media may be
//! sent, and everything it writes after C0+C1+C2 is a chunk stream our own decoder reads.
//! Bit 1 of the first byte turns on observing every message (`ClientEvent::Message`).
#![no_main]

use dtsc::machine::{Input, Machine, Output};
use dtsc::rtmp::chunk::ChunkDecoder;
use dtsc::rtmp::client::{ClientEvent, RtmpClient};
use dtsc::rtmp::handshake::HANDSHAKE_SIZE;
use dtsc::rtmp::{MediaKind, Span};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split) + 1;
    let mut c = if split & 1 == 1 {
        RtmpClient::player("rtmp://h/live", "live", "s", 7)
    } else {
        RtmpClient::new("rtmp://h/live", "live", "s", 7)
    };
    c.set_observe_messages(split & 2 == 2);
    c.start(0);
    let mut written = c.take_output();
    // S0 (version 3), S1, S2.
    let mut hs = vec![3u8];
    hs.extend(std::iter::repeat_n(0u8, 2 * HANDSHAKE_SIZE));
    let now = std::time::Instant::now();
    if c.handle_input(now, Input::Bytes(&hs)).is_err() {
        return;
    }
    written.extend(c.take_output());
    for part in input.chunks(piece) {
        if c.handle_input(now, Input::Bytes(part)).is_err() {
            break;
        }
        loop {
            let ev = match c.poll_output() {
                Output::Transmit(b) => {
                    written.extend(b);
                    continue;
                }
                Output::Event(ev) => ev,
                Output::Timeout(_) => break,
            };
            if ev == ClientEvent::Publishing {
                let (mut hdrs, mut plan) = (Vec::new(), Vec::new());
                let body = [0x17u8, 1, 0, 0, 0, 9, 9];
                c.write_media_parts(MediaKind::Video, 40, &[&body], &mut hdrs, &mut plan)
                    .expect("media once publishing");
                written.extend(c.take_output());
                for s in plan {
                    match s {
                        Span::Own(r) => written.extend_from_slice(&hdrs[r]),
                        Span::Part(_, r) => written.extend_from_slice(&body[r]),
                    }
                }
            }
        }
        written.extend(c.take_output());
    }
    // C0+C1 and C2, then chunks.
    let chunks = &written[(1 + 2 * HANDSHAKE_SIZE).min(written.len())..];
    let mut dec = ChunkDecoder::new(1 << 20);
    dec.push(chunks);
    while let Some(_m) = dec.poll().expect("the client's own chunk stream decodes") {}
});
