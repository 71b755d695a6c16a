//! The server-side RTMP session. A valid client handshake (C0+C1+C2) comes first, then the
//! fuzz input as the chunk stream, in pieces whose size the first input byte picks.
//! Events are answered the way the connectors answer them (accept or reject publish / play
//! as the first byte's top bit says; publisher media goes through `FlvIngest`; an accepted
//! play gets metadata and media). Everything the server writes after S0+S1+S2 must be a
//! chunk stream our own decoder reads without error, and its commands must be valid AMF0.
#![no_main]

use dtsc::machine::{Input, Machine, Output};
use dtsc::amf0::{self, Amf0};
use dtsc::flv::{FlvIngest, TagKind};
use dtsc::rtmp::chunk::{msg_type, ChunkDecoder, MAX_MESSAGE_LEN};
use dtsc::rtmp::handshake::{ClientHandshake, HANDSHAKE_SIZE};
use dtsc::rtmp::{Event, MediaKind, ServerConfig, ServerSession};
use libfuzzer_sys::fuzz_target;

/// Checks the server's output as a client would read it.
struct Peer {
    skip: usize,
    dec: ChunkDecoder,
}

impl Peer {
    fn read(&mut self, mut out: &[u8]) {
        let n = self.skip.min(out.len());
        self.skip -= n;
        out = &out[n..];
        if out.is_empty() {
            return;
        }
        self.dec.push(out);
        loop {
            match self.dec.poll() {
                Ok(Some(m)) => {
                    if m.msg_type == msg_type::COMMAND_AMF0 || m.msg_type == msg_type::DATA_AMF0 {
                        if let Err(e) = amf0::decode_all(&m.payload) {
                            panic!("server sent invalid AMF0 ({e}): {:02x?}", m.payload);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("server output is not a valid chunk stream: {e}"),
            }
        }
    }
}

fn client_handshake() -> Vec<u8> {
    // A real client's C0+C1, then C2 echoing a server S1 (its content is not checked).
    let mut c = ClientHandshake::new(7);
    let mut out = Vec::new();
    c.start(1000, &mut out);
    out.resize(1 + 2 * HANDSHAKE_SIZE, 0x5a);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(ctl & 0x7f) + 1;
    let accept = ctl & 0x80 == 0;
    let mut s = ServerSession::new(ServerConfig {
        // Small window so acknowledgements are sent within fuzz-sized inputs.
        window_ack_size: 4096,
        out_chunk_size: 4096,
        max_message: 256 << 10,
        random_seed: 1,
        ..ServerConfig::default()
    });
    let mut peer = Peer {
        skip: 1 + 2 * HANDSHAKE_SIZE,
        dec: ChunkDecoder::new(MAX_MESSAGE_LEN),
    };
    let now = std::time::Instant::now();
    s.handle_input(now, Input::Bytes(&client_handshake()))
        .expect("a valid handshake is accepted");
    assert!(s.is_handshake_done());
    let out = s.take_output();
    assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE, "S0+S1+S2");
    peer.read(&out);

    let mut ingest = FlvIngest::new();
    let mut media_sent = 0u32;
    for part in input.chunks(piece) {
        let res = s.handle_input(now, Input::Bytes(part));
        loop {
            let ev = match s.poll_output() {
                Output::Transmit(b) => {
                    peer.read(&b);
                    continue;
                }
                Output::Event(ev) => ev,
                Output::Timeout(_) => break,
            };
            match ev {
                Event::Publish { .. } => {
                    let _ = if accept {
                        s.accept_publish()
                    } else {
                        s.reject_publish("NetStream.Publish.BadName", "fuzz")
                    };
                }
                Event::Play { name, .. } => {
                    if accept {
                        if s.accept_play().is_ok() {
                            let _ = s.send_metadata(&[
                                Amf0::string("onMetaData"),
                                Amf0::EcmaArray(vec![("width".into(), Amf0::Number(640.0))]),
                            ]);
                            let _ = s.send_media(MediaKind::Video, 40, &[&[0x17, 1, 0, 0, 0], &[0; 300]]);
                            media_sent += 1;
                        }
                    } else {
                        let _ = s.reject_play_not_found(&name);
                    }
                }
                Event::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    let tag = match kind {
                        MediaKind::Audio => TagKind::Audio,
                        MediaKind::Video => TagKind::Video,
                        MediaKind::Data => TagKind::Script,
                    };
                    let _ = ingest.push_tag(tag, timestamp, &payload);
                    // Relay to the player, as a live stream would.
                    if s.play_stream_id().is_some() && media_sent < 64 {
                        let _ = s.send_media(kind, timestamp, &[&payload]);
                        media_sent += 1;
                    }
                }
                Event::DeleteStream { .. } | Event::CloseStream { .. } => {
                    let _ = s.end_of_stream();
                }
                // Seek and pause are answered as the RTMP connector does.
                Event::Seek { ms } => {
                    let _ = s.seek_done(ms);
                }
                Event::Pause { paused, .. } => {
                    let _ = s.pause_done(paused);
                }
                Event::Connect { .. } | Event::Unpublish { .. } => {}
            }
        }
        peer.read(&s.take_output());
        if res.is_err() {
            // The connector closes the connection here.
            break;
        }
    }
    let _ = s.bytes_received();
});
