//! AMF0 decoder (RTMP command / data bodies, FLV script tags): never panics, and whatever
//! `decode_all` accepts re-encodes to bytes that decode to the same values.
#![no_main]

use dtsc::amf0::{self, Amf0};
use libfuzzer_sys::fuzz_target;

/// Value equality with doubles compared bit for bit (so NaN payloads count as equal to
/// themselves, which `PartialEq` for `f64` does not do).
fn same(a: &Amf0, b: &Amf0) -> bool {
    match (a, b) {
        (Amf0::Number(x), Amf0::Number(y)) => x.to_bits() == y.to_bits(),
        (Amf0::Date(x, tx), Amf0::Date(y, ty)) => x.to_bits() == y.to_bits() && tx == ty,
        (Amf0::Object(x), Amf0::Object(y)) | (Amf0::EcmaArray(x), Amf0::EcmaArray(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Amf0::StrictArray(x), Amf0::StrictArray(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn same_all(a: &[Amf0], b: &[Amf0]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
}

fuzz_target!(|data: &[u8]| {
    if let Ok((v, used)) = amf0::decode(data) {
        assert!(used > 0 && used <= data.len(), "decode used {used} of {}", data.len());
        let mut enc = Vec::new();
        amf0::encode(&v, &mut enc);
        let (again, n) = amf0::decode(&enc).expect("an encoded value must decode");
        assert_eq!(n, enc.len());
        assert!(same(&v, &again), "{v:?} re-decoded as {again:?}");
    }
    if let Ok(values) = amf0::decode_all(data) {
        let mut enc = Vec::new();
        amf0::encode_all(&values, &mut enc);
        let again = amf0::decode_all(&enc).expect("encoded values must decode");
        assert!(
            same_all(&values, &again),
            "{values:?} re-decoded as {again:?}"
        );
        // The encoder is canonical: a second round trip is byte-identical.
        let mut enc2 = Vec::new();
        amf0::encode_all(&again, &mut enc2);
        assert_eq!(enc, enc2);
    }
});
