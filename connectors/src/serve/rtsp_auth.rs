//! Credentials of an RTSP publish (ANNOUNCE), sans-IO: the `Authorization` header (RFC 7826
//! §18.8, RFC 2326 §12.5) with the Basic (RFC 7617) and Digest (RFC 7616 §3.4, RFC 2617
//! §3.2.2) schemes, the Digest nonces of one connection, and a comparison in constant time.
//!
//! Nonces: each RTSP connection is its own process, so it keeps the one nonce it last put
//! in a challenge, with the time it was issued. A request's `nonce` parameter must equal it
//! byte for byte (not merely contain it), be younger than [`NONCE_LIFETIME_MS`], and it is
//! good for one request: a captured ANNOUNCE cannot be replayed on another connection (the
//! nonce is that connection's), nor later on this one. A stale nonce gets a new challenge
//! with `stale=true` (RFC 7616 §3.3), so a client retries without asking its user again. The
//! clock and the random bytes come from the caller.
//!
//! The Digest response itself is checked by the controller, which holds the stream keys.

/// The realm of Sluice's challenges (RFC 7616 §3.3).
pub const REALM: &str = "Sluice";

/// How long a nonce is accepted after it was issued, ms.
pub const NONCE_LIFETIME_MS: u64 = 60_000;

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub const NONCE_BYTES: usize = 16;

/// Whether `a` and `b` are equal, in a time that depends on their lengths only (not on
/// where they first differ): for stream keys, passwords and nonces.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The parameters of a Digest `Authorization` header (RFC 7616 §3.4) this side needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The whole header value, for the controller's check of `response`.
    pub header: String,
    /// `nonce`.
    pub nonce: String,
    /// `realm`.
    pub realm: String,
}

/// What an `Authorization` header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Basic (RFC 7617 §2): the password of `user:password` (the stream key).
    Basic(String),
    /// Digest.
    Digest(Digest),
    /// Another scheme, or a header that does not parse (answered as no credentials).
    Unusable,
}

/// The auth-params of a challenge or credentials (RFC 9110 §11.2, RFC 7616 §3.4):
/// `name=token` or `name="quoted string"` (with `\` escapes), comma-separated, blank list
/// elements allowed. Names are lowercased. `None` when the list does not parse.
pub fn auth_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| *c == ',' || c.is_ascii_whitespace())
        {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_ascii_whitespace() {
                break;
            }
            if !is_tchar(c) {
                return None;
            }
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                if !is_tchar(c) && c != '/' {
                    return None;
                }
                value.push(c);
                chars.next();
            }
            if value.is_empty() {
                return None;
            }
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some(',') => {}
            Some(_) => return None,
        }
        out.push((name, value));
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Reads an `Authorization` header value. Schemes are case-insensitive (RFC 9110 §11.1).
/// Digest needs `username`, `realm`, `nonce`, `uri` and `response`, each once, and an ASCII
/// header (the controller's Digest library cannot take other text).
pub fn parse_authorization(value: &str) -> Authorization {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let password = dtsc::rtp::base64_decode(rest.trim())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()));
        return password.map_or(Authorization::Unusable, Authorization::Basic);
    }
    if !scheme.eq_ignore_ascii_case("digest") || !value.is_ascii() {
        return Authorization::Unusable;
    }
    let Some(params) = auth_params(rest) else {
        return Authorization::Unusable;
    };
    let one = |name: &str| {
        let mut it = params.iter().filter(|(n, _)| n == name);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Some(v.clone()),
            _ => None,
        }
    };
    let required = ["username", "uri", "response"];
    if required.iter().any(|n| one(n).is_none()) {
        return Authorization::Unusable;
    }
    match (one("nonce"), one("realm")) {
        (Some(nonce), Some(realm)) => Authorization::Digest(Digest {
            header: value.to_string(),
            nonce,
            realm,
        }),
        _ => Authorization::Unusable,
    }
}

/// What [`Nonces::take`] decided about a request's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// The connection's current nonce, in time: it is now used up.
    Valid,
    /// The connection's nonce, but older than [`NONCE_LIFETIME_MS`]: challenge again with
    /// `stale=true`.
    Stale,
    /// Not a nonce this connection issued (another connection's, an old one, made up).
    Unknown,
}

/// The Digest nonces of one connection: the one last issued, and when (ms on the caller's
/// clock).
#[derive(Debug, Clone, Default)]
pub struct Nonces {
    current: Option<(String, u64)>,
}

impl Nonces {
    /// Issues a new nonce at `now_ms` made of `random` (hex), replacing the one before.
    pub fn issue(&mut self, now_ms: u64, random: [u8; NONCE_BYTES]) -> String {
        let nonce: String = random.iter().map(|b| format!("{b:02x}")).collect();
        self.current = Some((nonce.clone(), now_ms));
        nonce
    }

    /// Checks `nonce` from a request at `now_ms`; a valid one is used up.
    pub fn take(&mut self, nonce: &str, now_ms: u64) -> NonceCheck {
        let Some((ours, at)) = &self.current else {
            return NonceCheck::Unknown;
        };
        if !ct_eq(ours.as_bytes(), nonce.as_bytes()) {
            return NonceCheck::Unknown;
        }
        let stale = now_ms.saturating_sub(*at) >= NONCE_LIFETIME_MS || now_ms < *at;
        self.current = None;
        if stale {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

/// The `WWW-Authenticate` value of a Digest challenge with `nonce` (RFC 7616 §3.3).
pub fn challenge(nonce: &str, stale: bool) -> String {
    format!(
        "Digest realm=\"{REALM}\", nonce=\"{nonce}\"{}",
        if stale { ", stale=true" } else { "" }
    )
}

/// [`NONCE_BYTES`] random bytes from the kernel; with none, from the clock and the pid
/// (a nonce must be unpredictable to nobody but its connection, which alone accepts it).
pub fn random_bytes() -> [u8; NONCE_BYTES] {
    let mut b = [0u8; NONCE_BYTES];
    if ipc::process::random_bytes(&mut b).is_err() {
        let s = crate::seed();
        b[..8].copy_from_slice(&s.to_le_bytes());
        b[8..].copy_from_slice(
            &s.rotate_left(29)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .to_le_bytes(),
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R: [u8; NONCE_BYTES] = [0xab; NONCE_BYTES];

    fn digest(nonce: &str) -> String {
        format!(
            "Digest username=\"u\", realm=\"Sluice\", nonce=\"{nonce}\", \
             uri=\"rtsp://h/live/s\", response=\"0123456789abcdef0123456789abcdef\""
        )
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"key", b"key"));
        assert!(!ct_eq(b"key", b"kez"));
        assert!(!ct_eq(b"key", b"key2"));
    }

    #[test]
    fn basic_and_digest_headers() {
        // "user:se:cret" → the password keeps its colon.
        assert_eq!(
            parse_authorization("Basic dXNlcjpzZTpjcmV0"),
            Authorization::Basic("se:cret".into())
        );
        assert_eq!(
            parse_authorization("bAsIc   dXNlcjpzZTpjcmV0 "),
            Authorization::Basic("se:cret".into())
        );
        let Authorization::Digest(d) = parse_authorization(&digest("abc")) else {
            panic!("a Digest header");
        };
        assert_eq!((d.nonce.as_str(), d.realm.as_str()), ("abc", "Sluice"));
        assert_eq!(
            parse_authorization(
                "Digest nonce=abc, realm=Sluice, username=u, uri=\"/x\", response=\"1\""
            ),
            Authorization::Digest(Digest {
                header: "Digest nonce=abc, realm=Sluice, username=u, uri=\"/x\", response=\"1\""
                    .into(),
                nonce: "abc".into(),
                realm: "Sluice".into(),
            })
        );
        // Two nonces, a missing response, an unclosed quote: unusable.
        let two = digest("abc").replace("uri=", "nonce=\"x\", uri=");
        assert_eq!(parse_authorization(&two), Authorization::Unusable);
        let no_response = digest("abc").replace("response=", "responsx=");
        assert_eq!(parse_authorization(&no_response), Authorization::Unusable);
        assert_eq!(
            parse_authorization("Digest nonce=\"abc"),
            Authorization::Unusable
        );
        assert_eq!(parse_authorization("Bearer x"), Authorization::Unusable);
        assert_eq!(parse_authorization(""), Authorization::Unusable);
    }

    /// The old parser cut `a[..6]` and `a[..7]`: a multibyte character across byte 6 or 7
    /// aborted the process.
    #[test]
    fn multibyte_characters_at_the_old_cut_points_are_no_panic() {
        for v in [
            "Basi\u{e9}x",
            "Basic\u{e9}x",
            "Diges\u{e9}xx",
            "Digest\u{e9}x",
            "Dig\u{1f600}est x",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
            "Digest nonce=\"\u{e9}\", realm=\"Sluice\", username=\"\u{e9}\", uri=\"/\", response=\"1\"",
            "Digest a\u{e9}=x",
            "Basic \u{e9}\u{e9}",
        ] {
            assert_eq!(parse_authorization(v), Authorization::Unusable, "{v}");
        }
    }

    #[test]
    fn a_nonce_must_be_exactly_ours() {
        let mut n = Nonces::default();
        let ours = n.issue(0, R);
        // The old check accepted any header that contained `nonce="OURS"`.
        for other in [
            format!("x{ours}"),
            format!("{ours}x"),
            ours[1..].to_string(),
            String::new(),
        ] {
            assert_eq!(n.take(&other, 10), NonceCheck::Unknown, "{other}");
        }
        let Authorization::Digest(d) = parse_authorization(&format!(
            "{}, cnonce=\"nonce=\\\"{ours}\\\"\"",
            digest("evil")
        )) else {
            panic!("a Digest header");
        };
        assert_eq!(d.nonce, "evil");
        assert_eq!(n.take(&d.nonce, 10), NonceCheck::Unknown);
        assert_eq!(n.take(&ours, 10), NonceCheck::Valid);
        // Used once.
        assert_eq!(n.take(&ours, 11), NonceCheck::Unknown);
        // Another connection's nonce.
        let theirs = Nonces::default().issue(0, [1; NONCE_BYTES]);
        let mut n = Nonces::default();
        n.issue(0, R);
        assert_eq!(n.take(&theirs, 1), NonceCheck::Unknown);
    }

    #[test]
    fn nonces_expire() {
        let mut n = Nonces::default();
        let a = n.issue(1_000, R);
        assert_eq!(n.take(&a, 1_000 + NONCE_LIFETIME_MS - 1), NonceCheck::Valid);
        let b = n.issue(5_000, R);
        assert_eq!(n.take(&b, 5_000 + NONCE_LIFETIME_MS), NonceCheck::Stale);
        let c = n.issue(5_000, [7; NONCE_BYTES]);
        assert_ne!(b, c);
        // A clock that went backwards does not stretch a nonce's life.
        assert_eq!(n.take(&c, 4_999), NonceCheck::Stale);
        assert_eq!(
            n.take(&c, 5_001),
            NonceCheck::Unknown,
            "used up by the stale try"
        );
        assert_eq!(
            challenge("ab", true),
            "Digest realm=\"Sluice\", nonce=\"ab\", stale=true"
        );
    }

    proptest! {
        #[test]
        fn any_header_parses_without_panic(s in "\\PC{0,80}") {
            let _ = parse_authorization(&s);
            let _ = auth_params(&s);
        }

        #[test]
        fn auth_params_round_trip(pairs in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,12}"), 0..6)) {
            let text: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let got = auth_params(&text.join(", "));
            prop_assert_eq!(got, Some(pairs.clone()));
        }
    }
}
