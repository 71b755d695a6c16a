//! Percent-decoding of URL parts (RFC 3986 §2.1), by bytes, so any input is safe: stream
//! names and path elements of requests, the user part of a camera's URL.

/// The value of one hexadecimal digit (RFC 3986 §2.1 `HEXDIG`, either case).
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` to bytes (RFC 3986 §2.1): `%` and two hex digits is that byte; a `%`
/// without two hex digits after it stays a `%`. Works on bytes, so any input is safe.
pub fn percent_decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_digit);
            let lo = b.get(i + 2).copied().and_then(hex_digit);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Percent-decodes `s` ([`percent_decode_bytes`]); `None` when the bytes are not UTF-8.
pub fn percent_decode_utf8(s: &str) -> Option<String> {
    String::from_utf8(percent_decode_bytes(s)).ok()
}

/// Decodes `%XX` escapes of a URL path element (stream names may hold `+` and such); bytes
/// that are not UTF-8 become U+FFFD (the router refuses such paths before, with
/// [`percent_decode_utf8`]).
pub fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_follows_rfc_3986() {
        assert_eq!(percent_decode_bytes("a%41"), b"aA");
        assert_eq!(percent_decode_bytes("%4"), b"%4");
        assert_eq!(percent_decode_bytes("%zz%2f%2F"), b"%zz//");
        assert_eq!(percent_decode_bytes("%+1"), b"%+1");
        assert_eq!(percent_decode_utf8("caf%C3%A9"), Some("caf\u{e9}".into()));
        assert_eq!(percent_decode_utf8("%e9"), None);
        assert_eq!(percent_decode("%e9"), "\u{fffd}");
    }
}
