//! DTSC frames (the wire between buffer, connectors and MistServer peers): `parse_frame`
//! over a byte stream until it runs out. Every `DTP2` frame must parse the same through
//! `parse_packet`, and `write_packet` of the packet must parse back to the same packet.
//! Header / command / legacy values must survive `encode_value` → `decode_value`, and a
//! header that maps to tracks must map back through `write_header`.
#![no_main]

use dtsc::wire::{self, Frame, Header, Value};
use dtsc::TrackKind;
use libfuzzer_sys::fuzz_target;

/// Value equality with doubles compared bit for bit (NaN == NaN here).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn value_round_trip(v: &Value) {
    let mut enc = Vec::new();
    wire::encode_value(v, &mut enc);
    assert_eq!(enc.len(), wire::encoded_len(v), "encoded_len disagrees with encode_value");
    let (back, used) = wire::decode_value(&enc).expect("an encoded value must decode");
    assert_eq!(used, enc.len());
    assert!(same(v, &back), "{v:?} re-decoded as {back:?}");
}

fn header_round_trip(v: &Value) {
    let Ok(h) = Header::from_value(v) else {
        return;
    };
    let mut out = Vec::new();
    wire::write_header(&h, &mut out);
    let Ok(Some((Frame::Header(v2), n))) = wire::parse_frame(&out) else {
        panic!("write_header output does not parse: {h:?}");
    };
    assert_eq!(n, out.len());
    let h2 = Header::from_value(&v2).expect("a written header must map to tracks");
    // `unixzero` is only written for live streams, and a track only carries the members of
    // its kind (`from_value` reads them all, tolerantly; `to_value` writes the relevant ones).
    let mut want = Header {
        unixzero: if h.live { h.unixzero } else { None },
        ..h
    };
    for t in &mut want.tracks {
        if t.kind != TrackKind::Video {
            (t.width, t.height, t.fpks) = (0, 0, 0);
        }
        if t.kind != TrackKind::Audio {
            (t.rate, t.channels, t.bits) = (0, 0, 0);
        }
    }
    assert_eq!(want, h2);
}

fuzz_target!(|data: &[u8]| {
    // parse_packet on arbitrary bytes (any magic, truncated frames) must not panic either.
    let _ = wire::parse_packet(data);
    let _ = wire::decode_value(data);

    let mut rest = data;
    while let Ok(Some((frame, used))) = wire::parse_frame(rest) {
        assert!(used >= 8 && used <= rest.len());
        let bytes = &rest[..used];
        match frame {
            Frame::Packet(p) => {
                let again = wire::parse_packet(bytes).expect("parse_frame accepted this DTP2");
                assert_eq!(p, again);
                let mut out = Vec::new();
                wire::write_packet(&p, &mut out);
                assert_eq!(out.len(), wire::packet_frame_len(&p));
                let back = wire::parse_packet(&out).expect("write_packet output must parse");
                assert_eq!(p, back);
                match wire::parse_frame(&out) {
                    Ok(Some((Frame::Packet(q), n))) => {
                        assert_eq!(n, out.len());
                        assert_eq!(p, q);
                    }
                    other => panic!("write_packet output: parse_frame gave {other:?}"),
                }
            }
            Frame::Header(v) => {
                value_round_trip(&v);
                header_round_trip(&v);
            }
            Frame::Command(v) => {
                value_round_trip(&v);
                let mut out = Vec::new();
                wire::write_command(&v, &mut out);
                match wire::parse_frame(&out) {
                    Ok(Some((Frame::Command(w), n))) => {
                        assert_eq!(n, out.len());
                        assert!(same(&v, &w));
                    }
                    other => panic!("write_command output: parse_frame gave {other:?}"),
                }
            }
            Frame::LegacyPacket(v) => value_round_trip(&v),
        }
        rest = &rest[used..];
    }
});
