//! What a client sends the DTSC connector (untrusted), through its command flow: the frames
//! before the first command (`dtsc_tcp::first_command_in`), then, as a push would go on, the
//! header and packet frames that follow (`dtsc_tcp::PushIngest`), fed in pieces of sizes
//! taken from the input. Nothing panics; what is passed on to the buffer is whole frames
//! that parse again; consumed bytes never exceed what was given.
#![no_main]

use connectors::serve::dtsc::{first_command_in, PushIngest};
use dtsc::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1) * 7;
    let after = match first_command_in(rest) {
        Ok(Some((_, used))) => {
            assert!(used <= rest.len());
            &rest[used..]
        }
        Ok(None) | Err(_) => rest,
    };
    let mut ingest = PushIngest::default();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut replies = Vec::new();
    for piece in after.chunks(step) {
        buf.extend_from_slice(piece);
        let before = buf.len();
        let r = ingest.feed(&mut buf, &mut frames, &mut replies);
        assert!(buf.len() <= before);
        if r.is_err() {
            break;
        }
    }
    // Every frame passed on parses again, back to back.
    let mut at = 0;
    while at < frames.len() {
        match wire::parse_frame(&frames[at..]) {
            Ok(Some((_, used))) => at += used,
            other => panic!("a passed-on frame does not parse: {other:?}"),
        }
    }
});
