//! RTMP chunk stream decoder (bytes after the handshake). The first input byte picks a
//! piece size; the rest is pushed in pieces of that size, polling after each push. The
//! messages (and the first error) must be exactly those decoded when the same bytes are
//! pushed in one go: how TCP splits the stream must not matter.
#![no_main]

use dtsc::rtmp::chunk::{ChunkDecoder, ChunkError, Message};
use libfuzzer_sys::fuzz_target;

/// Small enough to keep the fuzzer fast, large enough for several chunks per message.
const MAX_MESSAGE: usize = 256 << 10;
/// Stop after this many messages (zero-length messages cost no input bytes).
const MAX_MESSAGES: usize = 10_000;

fn decode(input: &[u8], piece: usize) -> (Vec<Message>, Option<ChunkError>) {
    let mut dec = ChunkDecoder::new(MAX_MESSAGE);
    let mut msgs = Vec::new();
    for part in input.chunks(piece) {
        dec.push(part);
        loop {
            match dec.poll() {
                Ok(Some(m)) => {
                    assert!(m.payload.len() <= MAX_MESSAGE);
                    msgs.push(m);
                    if msgs.len() >= MAX_MESSAGES {
                        return (msgs, None);
                    }
                }
                Ok(None) => break,
                Err(e) => return (msgs, Some(e)),
            }
        }
        assert!(dec.buffered() <= input.len());
    }
    (msgs, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split) + 1;
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, piece);
    if whole.0.len() < MAX_MESSAGES && pieces.0.len() < MAX_MESSAGES {
        assert_eq!(whole, pieces, "result depends on the split (piece = {piece})");
    }
});
