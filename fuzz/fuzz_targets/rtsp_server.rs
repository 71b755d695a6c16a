//! What a client or encoder sends the RTSP connector (untrusted), through what it reads of
//! each request before acting (`rtsp::read_request`: RFC 2326 §6 messages, the stream and
//! track of the URL, Transport choices, the `Range` start, `Authorization`), and the Digest
//! nonce check of one connection (`rtsp_auth::Nonces`, RFC 7616 §3.3). The input is also an
//! `Authorization` value and an auth-param list on its own. Nothing panics; only the
//! connection's own nonce, once and in time, is valid.
#![no_main]

use connectors::serve::rtsp::{self, RecordTransport};
use connectors::serve::rtsp_auth::{self, Authorization, NonceCheck, Nonces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = rtsp_auth::auth_params(&text);
    let mut nonces = Nonces::default();
    let ours = nonces.issue(0, [0x42; rtsp_auth::NONCE_BYTES]);
    check_auth(rtsp_auth::parse_authorization(&text), &ours, &mut nonces);
    let mut at = 0;
    while at < data.len() {
        let Ok((view, used)) = rtsp::read_request(&data[at..]) else {
            break;
        };
        assert!(used > 0 && at + used <= data.len());
        at += used;
        let Some(v) = view else { continue };
        if let Some(x) = v.npt {
            assert!(x.is_finite() && x >= 0.0);
        }
        for t in &v.transports {
            if let RecordTransport::Tcp(ch) = t {
                let _ = ch.wrapping_add(1);
            }
        }
        if let Some(a) = v.auth {
            let mut n = Nonces::default();
            let ours = n.issue(1_000, [0x17; rtsp_auth::NONCE_BYTES]);
            check_auth(a, &ours, &mut n);
        }
    }
});

fn check_auth(a: Authorization, ours: &str, nonces: &mut Nonces) {
    if let Authorization::Digest(d) = a {
        assert!(d.header.is_ascii());
        let check = nonces.take(&d.nonce, 2_000);
        assert_eq!(check == NonceCheck::Valid, d.nonce == ours);
        assert_ne!(nonces.take(&d.nonce, 2_000), NonceCheck::Valid);
    }
}
