//! `rtsp`: OPTIONS and DESCRIBE (RFC 2326 §10.1, §10.2) and the SDP of the answer
//! (RFC 4566), sans-IO: [`request`] builds a request's bytes, [`parse_response`] reads one
//! response from received bytes (`rtsp-types`), [`describe_sdp`] reads the SDP
//! (`sdp-types`). The TCP loop is in [`crate::live`].
//!
//! Rules checked: §10.1 OPTIONS is answered 200 and its `Public` header lists DESCRIBE,
//! SETUP and PLAY; §10.2 DESCRIBE is answered 200 with `Content-Type: application/sdp` and an
//! SDP that parses (RFC 4566 §5) and has at least one media description with an `rtpmap`.

use rtsp_types::{headers, Message, Method, Request, Url, Version};
use serde::Serialize;

use crate::report::{ReadError, Violation};

/// One media description of the SDP (RFC 4566 §5.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SdpMedia {
    /// `video`, `audio`…
    pub media: String,
    /// Transport protocol (`RTP/AVP`).
    pub proto: String,
    /// Payload types.
    pub fmt: String,
    /// `a=rtpmap` values (`96 H264/90000`).
    pub rtpmap: Vec<String>,
    /// `a=fmtp` values.
    pub fmtp: Vec<String>,
    /// `a=control`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// The report of the `rtsp` kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RtspReport {
    /// The URL asked.
    pub url: String,
    /// OPTIONS status code.
    pub options_status: Option<u16>,
    /// OPTIONS `Public` header.
    pub public: Option<String>,
    /// DESCRIBE status code.
    pub describe_status: Option<u16>,
    /// DESCRIBE `Content-Base`.
    pub content_base: Option<String>,
    /// The SDP as sent.
    pub sdp: Option<String>,
    /// Its media descriptions.
    pub media: Vec<SdpMedia>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Why it stopped early.
    pub error: Option<ReadError>,
}

/// The bytes of an OPTIONS or DESCRIBE request for `url` with sequence number `cseq`.
pub fn request(method: Method, url: &str, cseq: u32) -> Result<Vec<u8>, String> {
    let u = Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let mut b = Request::builder(method.clone(), Version::V1_0)
        .request_uri(u)
        .header(headers::CSEQ, cseq.to_string())
        .header(headers::USER_AGENT, "sluice-analyse");
    if method == Method::Describe {
        b = b.header(headers::ACCEPT, "application/sdp");
    }
    let mut out = Vec::new();
    b.build(Vec::<u8>::new())
        .write(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A response read from the start of `buf`: (status, headers by name, body, bytes used);
/// `Ok(None)` until it is complete.
pub type Parsed = (u16, Vec<(String, String)>, Vec<u8>, usize);

/// Reads one response from the start of `buf` (interleaved data before it is skipped).
pub fn parse_response(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let mut at = 0;
    loop {
        match Message::<Vec<u8>>::parse(&buf[at..]) {
            Ok((Message::Response(r), used)) => {
                let hdrs = r
                    .headers()
                    .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
                    .collect();
                return Ok(Some((
                    u16::from(r.status()),
                    hdrs,
                    r.body().clone(),
                    at + used,
                )));
            }
            Ok((_, used)) => at += used,
            Err(rtsp_types::ParseError::Incomplete(_)) => return Ok(None),
            Err(e) => return Err(format!("not an RTSP response: {e:?}")),
        }
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

const R_OPTIONS: &str = "RFC 2326 §10.1 OPTIONS (200, Public lists DESCRIBE, SETUP, PLAY)";
const R_DESCRIBE: &str = "RFC 2326 §10.2 DESCRIBE (200 with application/sdp)";
const R_SDP: &str = "RFC 4566 §5 SDP (parses, media with rtpmap)";

impl RtspReport {
    /// Takes the OPTIONS response.
    pub fn options(&mut self, status: u16, h: &[(String, String)]) {
        self.options_status = Some(status);
        self.public = header(h, "public").map(str::to_string);
        let public = self.public.clone().unwrap_or_default().to_ascii_uppercase();
        if status != 200
            || !["DESCRIBE", "SETUP", "PLAY"]
                .iter()
                .all(|m| public.contains(m))
        {
            self.violations.push(Violation::new(
                R_OPTIONS,
                format!("status {status}, Public {:?}", self.public),
            ));
        }
    }

    /// Takes the DESCRIBE response and reads its SDP.
    pub fn describe(&mut self, status: u16, h: &[(String, String)], body: &[u8]) {
        self.describe_status = Some(status);
        self.content_base = header(h, "content-base").map(str::to_string);
        let ctype = header(h, "content-type").unwrap_or("");
        if status != 200 || !ctype.starts_with("application/sdp") {
            self.violations.push(Violation::new(
                R_DESCRIBE,
                format!("status {status}, Content-Type {ctype:?}"),
            ));
            return;
        }
        self.sdp = Some(String::from_utf8_lossy(body).into_owned());
        match describe_sdp(body) {
            Ok(m) => {
                if m.is_empty() || m.iter().any(|m| m.rtpmap.is_empty()) {
                    self.violations
                        .push(Violation::new(R_SDP, "a media description without rtpmap"));
                }
                self.media = m;
            }
            Err(e) => self.violations.push(Violation::new(R_SDP, e)),
        }
    }
}

/// The media descriptions of an SDP (RFC 4566 §5.14).
pub fn describe_sdp(body: &[u8]) -> Result<Vec<SdpMedia>, String> {
    let s = sdp_types::Session::parse(body).map_err(|e| format!("SDP: {e:?}"))?;
    Ok(s.medias
        .iter()
        .map(|m| {
            let attr = |name: &str| -> Vec<String> {
                m.attributes
                    .iter()
                    .filter(|a| a.attribute == name)
                    .filter_map(|a| a.value.clone())
                    .collect()
            };
            SdpMedia {
                media: m.media.clone(),
                proto: m.proto.clone(),
                fmt: m.fmt.clone(),
                rtpmap: attr("rtpmap"),
                fmtp: attr("fmtp"),
                control: attr("control").into_iter().next(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SDP: &[u8] = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=S\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:track1\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=control:track2\r\n";

    #[test]
    fn options_describe_and_sdp() {
        let req = request(Method::Options, "rtsp://127.0.0.1:5554/S", 1).unwrap();
        assert!(req.starts_with(b"OPTIONS rtsp://127.0.0.1:5554/S RTSP/1.0\r\n"));
        let mut resp = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n".to_vec();
        let (st, h, _, used) = parse_response(&resp).unwrap().unwrap();
        assert_eq!((st, used), (200, resp.len()));
        let mut r = RtspReport::default();
        r.options(st, &h);
        resp = format!("RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n", SDP.len()).into_bytes();
        resp.extend_from_slice(SDP);
        assert_eq!(parse_response(&resp[..resp.len() - 1]).unwrap(), None);
        let (st, h, body, _) = parse_response(&resp).unwrap().unwrap();
        r.describe(st, &h, &body);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.media.len(), 2);
        assert_eq!(r.media[0].rtpmap, vec!["96 H264/90000"]);
        assert_eq!(r.media[1].control.as_deref(), Some("track2"));
        let mut bad = RtspReport::default();
        bad.describe(404, &[], b"");
        assert_eq!(bad.violations[0].rule, R_DESCRIBE);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_response(&data);
            let _ = describe_sdp(&data);
        }
    }
}
