//! An RTSP client that plays a stream (RFC 2326, RTSP 1.0), sans-IO, driven as every
//! machine is ([`crate::machine::Machine`]): bytes from the server and timeouts go in with
//! `handle_input`, requests to send, events and the keepalive's time come out of
//! `poll_output`; the caller owns the sockets and the clock. This is how Sluice pulls from IP cameras
//! (`connectors::ingest::rtsp_pull`; pushes: `connectors::egress::rtsp_push`).
//!
//! Play sequence: OPTIONS, DESCRIBE (`Accept: application/sdp`), one SETUP per track Sluice can
//! read (in the SDP's order, `RTP/AVP/TCP` interleaved on channels 2i and 2i+1, or
//! `RTP/AVP` UDP to the ports the caller bound), PLAY, then a keepalive (GET_PARAMETER when
//! the server lists it in `Public`, else OPTIONS) at half the session timeout, and TEARDOWN.
//! A `401` is answered once per request with the credentials of the URL: Digest (RFC 2617,
//! computed by the `digest_auth` crate) when offered, else Basic; later requests carry
//! fresh credentials. Control URLs are resolved against `Content-Base` (RFC 2326 §C.1.1).
//!
//! Record sequence ([`RtspClient::new_record`], Sluice pushing to another server): OPTIONS,
//! ANNOUNCE with the SDP, one SETUP per track with `mode=record` over TCP interleaved,
//! RECORD; the caller then sends the RTP.
//!
//! Bad input: a response that cannot be parsed, or more than [`MAX_PENDING`] bytes that do
//! not parse, ends the session with [`ClientEvent::Failed`] naming the reason; so does any
//! error status, with the method and the status.

use std::collections::VecDeque;
use std::time::Instant;

use crate::machine::{Input, Machine, Output};

use rtsp_types::headers::{self, Transport, Transports};
use rtsp_types::{Message, Method, ParseError, Request, Response, StatusCode, Url, Version};

use crate::rtp::ingest::{sdp_tracks, RecvTrack};

/// Most unparsed bytes held from the server before the session is given up.
pub const MAX_PENDING: usize = 4 << 20;
const USER_AGENT: &str = concat!("Sluice/", env!("CARGO_PKG_VERSION"));

/// How RTP travels from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    /// Interleaved on the RTSP connection (RFC 2326 §10.12): works through NAT and loses
    /// nothing; the default.
    Tcp,
    /// UDP unicast to ports the caller binds.
    Udp,
}

/// What the client tells its caller.
pub enum ClientEvent {
    /// The SDP was read: the tracks to receive (tracks of formats Sluice cannot read are left
    /// out). With [`Lower::Udp`] the caller now binds two ports per track and passes them to
    /// [`RtspClient::set_client_ports`].
    Described(Vec<RecvTrack>),
    /// Track `track` (index into the described tracks) is set up: its RTP comes on
    /// `channel` (interleaved), its RTCP on `channel + 1`; with UDP, from `server_ports`.
    SetUp {
        track: usize,
        channel: u8,
        server_ports: Option<(u16, u16)>,
    },
    /// PLAY succeeded: media follows (in record mode: RECORD succeeded, send media).
    Playing,
    /// An interleaved frame on `channel`.
    Data { channel: u8, bytes: Vec<u8> },
    /// The session cannot go on; the reason.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Options,
    Describe,
    Announce,
    Record,
    AwaitPorts,
    Setup(usize),
    Play,
    Playing,
    Done,
}

/// The credentials of the URL and what the server asked for.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic,
    Digest(Box<digest_auth::WwwAuthenticateHeader>),
}

/// Why a URL cannot be played or pushed to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("{url}: {why}")]
    Malformed {
        /// The URL as given.
        url: String,
        /// The parser's reason.
        why: String,
    },
    /// A URL of another scheme.
    #[error("{0}: not an rtsp:// URL")]
    NotRtsp(String),
    /// A URL without a host.
    #[error("{0}: no host")]
    NoHost(String),
}

/// One RTSP play session against one server.
pub struct RtspClient {
    url: Url,
    user: Option<(String, String)>,
    lower: Lower,
    phase: Phase,
    cseq: u32,
    /// The request waiting for its answer: (CSeq, method, URI, tried with credentials).
    pending: Option<(u32, Method, String, bool)>,
    session: Option<String>,
    timeout_ms: u64,
    last_sent_ms: u64,
    keepalive: Method,
    base: String,
    controls: Vec<String>,
    ports: Vec<(u16, u16)>,
    auth: Auth,
    buf: Vec<u8>,
    out: Vec<u8>,
    events: VecDeque<ClientEvent>,
    /// Record mode: the SDP announced (the client pushes instead of playing).
    record: Option<String>,
    /// The instant of the first call that gave one: the client's times are ms after it.
    origin: Option<Instant>,
}

impl RtspClient {
    /// A client for `url` (`rtsp://[user:pass@]host[:port]/path`; the credentials are taken
    /// out of the URL and used only when the server asks). `Err` names what is wrong with
    /// the URL.
    pub fn new(url: &str, lower: Lower) -> Result<RtspClient, UrlError> {
        let mut url = Url::parse(url).map_err(|e| UrlError::Malformed {
            url: url.to_string(),
            why: e.to_string(),
        })?;
        if url.scheme() != "rtsp" {
            return Err(UrlError::NotRtsp(url.to_string()));
        }
        if url.host_str().is_none() {
            return Err(UrlError::NoHost(url.to_string()));
        }
        let user = (!url.username().is_empty()).then(|| {
            let dec = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
            (dec(url.username()), dec(url.password().unwrap_or("")))
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(RtspClient {
            base: url.as_str().to_string(),
            url,
            user,
            lower,
            phase: Phase::Options,
            cseq: 0,
            pending: None,
            session: None,
            timeout_ms: 60_000,
            last_sent_ms: 0,
            keepalive: Method::Options,
            controls: Vec::new(),
            ports: Vec::new(),
            auth: Auth::None,
            buf: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            record: None,
            origin: None,
        })
    }

    /// A client that pushes to `url` (ANNOUNCE with `sdp`, then a SETUP with `mode=record`
    /// for each of `controls`, interleaved over TCP, then RECORD); after
    /// [`ClientEvent::Playing`] the caller sends RTP on channels 2i/2i+1.
    pub fn new_record(
        url: &str,
        sdp: String,
        controls: Vec<String>,
    ) -> Result<RtspClient, UrlError> {
        let mut c = RtspClient::new(url, Lower::Tcp)?;
        c.record = Some(sdp);
        c.controls = controls;
        Ok(c)
    }

    /// The URL played, without credentials.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// ms of the client's clock at `now` (0 at the first instant it was given).
    fn ms(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        now.saturating_duration_since(origin).as_millis() as u64
    }

    /// Starts the session (sends OPTIONS) at `now`.
    pub fn start(&mut self, now: Instant) {
        let ms = self.ms(now);
        self.start_at_ms(ms);
    }

    fn start_at_ms(&mut self, now_ms: u64) {
        let u = self.url.as_str().to_string();
        self.request(Method::Options, &u, &[], now_ms);
    }

    /// The client's UDP ports (RTP, RTCP) per described track, after
    /// [`ClientEvent::Described`] with [`Lower::Udp`]; the SETUPs follow.
    pub fn set_client_ports(&mut self, ports: Vec<(u16, u16)>, now: Instant) {
        let ms = self.ms(now);
        self.set_client_ports_at_ms(ports, ms);
    }

    fn set_client_ports_at_ms(&mut self, ports: Vec<(u16, u16)>, now_ms: u64) {
        if self.phase == Phase::AwaitPorts {
            self.ports = ports;
            self.setup(0, now_ms);
        }
    }

    /// Bytes to send to the server, taken.
    fn transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event.
    fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether media is flowing.
    pub fn playing(&self) -> bool {
        self.phase == Phase::Playing
    }

    /// When the keepalive is due (ms on the client's clock): half the session timeout after
    /// the last request, while playing with no request pending.
    fn keepalive_due_ms(&self) -> Option<u64> {
        (self.phase == Phase::Playing && self.pending.is_none())
            .then(|| self.last_sent_ms + self.timeout_ms / 2)
    }

    /// Time passes: sends the keepalive when half the session timeout has gone by.
    fn tick(&mut self, now_ms: u64) {
        if self.phase == Phase::Playing
            && self.pending.is_none()
            && now_ms.saturating_sub(self.last_sent_ms) >= self.timeout_ms / 2
        {
            let u = self.base.clone();
            self.request(self.keepalive.clone(), &u, &[], now_ms);
        }
    }

    /// Ends the session politely (TEARDOWN) at `now`; the request comes out of
    /// [`Machine::poll_output`].
    pub fn teardown(&mut self, now: Instant) {
        let ms = self.ms(now);
        self.teardown_at_ms(ms);
    }

    fn teardown_at_ms(&mut self, now_ms: u64) {
        if self.session.is_some() && self.phase != Phase::Done {
            let u = self.base.clone();
            self.request(Method::Teardown, &u, &[], now_ms);
        }
        self.phase = Phase::Done;
    }

    fn fail(&mut self, why: String) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            self.events.push_back(ClientEvent::Failed(why));
        }
    }

    fn authorization(&mut self, method: &Method, uri: &str) -> Option<String> {
        let (user, pass) = self.user.clone()?;
        match &mut self.auth {
            Auth::None => None,
            Auth::Basic => {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                Some(format!("Basic {b}"))
            }
            Auth::Digest(prompt) => {
                let m = method_name(method);
                let ctx = digest_auth::AuthContext::new_with_method(
                    user.as_str(),
                    pass.as_str(),
                    uri,
                    Option::<&[u8]>::None,
                    digest_auth::HttpMethod::from(m.as_str()),
                );
                prompt.respond(&ctx).ok().map(|h| h.to_header_string())
            }
        }
    }

    fn request(&mut self, method: Method, uri: &str, extra: &[(&str, String)], now_ms: u64) {
        self.cseq += 1;
        let Ok(url) = Url::parse(uri) else {
            self.fail(format!("bad control URL {uri:?}"));
            return;
        };
        let mut b = Request::builder(method.clone(), Version::V1_0)
            .request_uri(url)
            .header(headers::CSEQ, self.cseq.to_string())
            .header(headers::USER_AGENT, USER_AGENT);
        if let Some(s) = &self.session {
            b = b.header(headers::SESSION, s.clone());
        }
        if let Some(a) = self.authorization(&method, uri) {
            b = b.header(headers::AUTHORIZATION, a);
        }
        for (k, v) in extra {
            b = b.header(
                headers::HeaderName::try_from(*k).expect("a valid header name"),
                v.clone(),
            );
        }
        let body = match (&method, &self.record) {
            (Method::Announce, Some(sdp)) => {
                b = b.header(headers::CONTENT_TYPE, "application/sdp");
                sdp.clone().into_bytes()
            }
            _ => Vec::new(),
        };
        let req = b.build(body);
        let _ = req.write(&mut self.out);
        let authed = !matches!(self.auth, Auth::None);
        self.pending = Some((self.cseq, method, uri.to_string(), authed));
        self.last_sent_ms = now_ms;
    }

    fn control_url(&self, i: usize) -> String {
        let c = &self.controls[i];
        if c.starts_with("rtsp://") || c.starts_with("rtsps://") {
            return c.clone();
        }
        if c == "*" || c.is_empty() {
            return self.base.clone();
        }
        if self.base.ends_with('/') {
            format!("{}{c}", self.base)
        } else {
            format!("{}/{c}", self.base)
        }
    }

    fn setup(&mut self, i: usize, now_ms: u64) {
        if i >= self.controls.len() {
            let u = self.base.clone();
            if self.record.is_some() {
                self.phase = Phase::Record;
                self.request(
                    Method::Record,
                    &u,
                    &[("Range", "npt=0.000-".into())],
                    now_ms,
                );
            } else {
                self.phase = Phase::Play;
                self.request(Method::Play, &u, &[("Range", "npt=0.000-".into())], now_ms);
            }
            return;
        }
        self.phase = Phase::Setup(i);
        let mode = if self.record.is_some() {
            ";mode=record"
        } else {
            ""
        };
        let transport = match self.lower {
            Lower::Tcp => format!(
                "RTP/AVP/TCP;unicast;interleaved={}-{}{mode}",
                2 * i,
                2 * i + 1
            ),
            Lower::Udp => {
                let (a, b) = self.ports.get(i).copied().unwrap_or((0, 0));
                format!("RTP/AVP;unicast;client_port={a}-{b}")
            }
        };
        let u = self.control_url(i);
        self.request(Method::Setup, &u, &[("Transport", transport)], now_ms);
    }

    /// Bytes from the server (in any chunking) at `now_ms`.
    fn receive(&mut self, bytes: &[u8], now_ms: u64) {
        self.buf.extend_from_slice(bytes);
        let mut used_total = 0;
        loop {
            let rest = &self.buf[used_total..];
            if rest.is_empty() {
                break;
            }
            match Message::<Vec<u8>>::parse(rest) {
                Ok((Message::Data(d), used)) => {
                    let ev = ClientEvent::Data {
                        channel: d.channel_id(),
                        bytes: d.as_slice().to_vec(),
                    };
                    used_total += used;
                    if self.phase == Phase::Playing {
                        self.events.push_back(ev);
                    }
                }
                Ok((Message::Response(r), used)) => {
                    used_total += used;
                    self.response(r, now_ms);
                }
                Ok((Message::Request(r), used)) => {
                    // A server's request (ANNOUNCE, GET_PARAMETER, …): 501, as RFC 2326 asks.
                    used_total += used;
                    let cseq = r
                        .header(&headers::CSEQ)
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default();
                    let resp = Response::builder(Version::V1_0, StatusCode::NotImplemented)
                        .header(headers::CSEQ, cseq)
                        .build(Vec::<u8>::new());
                    let _ = resp.write(&mut self.out);
                }
                Err(ParseError::Incomplete(_)) => break,
                Err(ParseError::Error) => {
                    self.fail("unparseable bytes from the server".into());
                    self.buf.clear();
                    return;
                }
            }
        }
        self.buf.drain(..used_total);
        if self.buf.len() > MAX_PENDING {
            self.fail(format!("more than {MAX_PENDING} bytes that do not parse"));
            self.buf.clear();
        }
    }

    fn response(&mut self, r: Response<Vec<u8>>, now_ms: u64) {
        let cseq: Option<u32> = r
            .header(&headers::CSEQ)
            .and_then(|v| v.as_str().trim().parse().ok());
        let Some((want, method, uri, authed)) = self.pending.clone() else {
            return; // an answer to nothing (a keepalive after TEARDOWN)
        };
        if cseq.is_some_and(|c| c != want) {
            return;
        }
        self.pending = None;
        let status = r.status();
        if status == StatusCode::Unauthorized && !authed && self.user.is_some() {
            let offers: Vec<String> = r
                .headers()
                .filter(|(k, _)| **k == headers::WWW_AUTHENTICATE)
                .map(|(_, v)| v.as_str().to_string())
                .collect();
            // Several challenges may come as several headers or folded into one.
            // `digest_auth` takes character counts for byte offsets and panics on
            // non-ASCII parameters: a server's challenge must be ASCII (RFC 7616 §3.3
            // quotes UTF-8 only in `username*`, which a challenge does not carry).
            let digest = offers.iter().filter(|o| o.is_ascii()).find_map(|o| {
                let lower = o.to_ascii_lowercase();
                let at = lower.find("digest ")?;
                let end = lower[at..].find(", basic").map_or(o.len(), |e| at + e);
                digest_auth::parse(&o[at..end]).ok()
            });
            self.auth = match digest {
                Some(d) => Auth::Digest(Box::new(d)),
                None if offers
                    .iter()
                    .any(|o| o.to_ascii_lowercase().contains("basic")) =>
                {
                    Auth::Basic
                }
                None => {
                    self.fail(format!(
                        "{}: 401 with no scheme Sluice speaks",
                        method_name(&method)
                    ));
                    return;
                }
            };
            // The same request again, with credentials.
            let extra: Vec<(&str, String)> = match method {
                Method::Describe => vec![("Accept", "application/sdp".into())],
                _ => Vec::new(),
            };
            if matches!(method, Method::Setup) {
                if let Phase::Setup(i) = self.phase {
                    self.setup(i, now_ms);
                }
                return;
            }
            if matches!(method, Method::Play | Method::Record) {
                self.setup(self.controls.len(), now_ms);
                return;
            }
            self.request(method, &uri, &extra, now_ms);
            return;
        }
        if !status.is_success() {
            if matches!(method, Method::Options) && self.phase == Phase::Options {
                // Some cameras refuse OPTIONS; DESCRIBE decides.
            } else if self.phase == Phase::Playing {
                // A keepalive the server does not like: OPTIONS from now on.
                self.keepalive = Method::Options;
                return;
            } else {
                let reason = format!(
                    "{}: {} {}",
                    method_name(&method),
                    u16::from(status),
                    r.reason_phrase()
                );
                self.fail(reason);
                return;
            }
        }
        if let Some(s) = r.header(&headers::SESSION) {
            let mut parts = s.as_str().split(';');
            let id = parts.next().unwrap_or("").trim().to_string();
            if !id.is_empty() {
                self.session = Some(id);
            }
            for p in parts {
                if let Some(t) = p.trim().strip_prefix("timeout=") {
                    if let Ok(t) = t.trim().parse::<u64>() {
                        self.timeout_ms = (t * 1000).clamp(5_000, 600_000);
                    }
                }
            }
        }
        match self.phase {
            Phase::Options => {
                if let Some(p) = r.header(&headers::PUBLIC) {
                    if p.as_str().to_ascii_uppercase().contains("GET_PARAMETER") {
                        self.keepalive = Method::GetParameter;
                    }
                }
                let u = self.url.as_str().to_string();
                if self.record.is_some() {
                    self.phase = Phase::Announce;
                    self.request(Method::Announce, &u, &[], now_ms);
                } else {
                    self.phase = Phase::Describe;
                    self.request(
                        Method::Describe,
                        &u,
                        &[("Accept", "application/sdp".into())],
                        now_ms,
                    );
                }
            }
            Phase::Announce => self.setup(0, now_ms),
            Phase::Describe => {
                if let Some(b) = r
                    .header(&headers::CONTENT_BASE)
                    .or_else(|| r.header(&headers::CONTENT_LOCATION))
                {
                    self.base = b.as_str().trim().to_string();
                }
                match sdp_tracks(r.body()) {
                    Ok(tracks) => {
                        self.controls = tracks.iter().map(|t| t.control.clone()).collect();
                        self.events.push_back(ClientEvent::Described(tracks));
                        if self.lower == Lower::Udp {
                            self.phase = Phase::AwaitPorts;
                        } else {
                            self.setup(0, now_ms);
                        }
                    }
                    Err(e) => self.fail(format!("DESCRIBE: {e}")),
                }
            }
            Phase::Setup(i) => {
                let (mut channel, mut server_ports) = (2 * i as u8, None);
                if let Ok(Some(ts)) = r.typed_header::<Transports>() {
                    for t in ts.iter() {
                        if let Transport::Rtp(t) = t {
                            if let Some((a, _)) = t.params.interleaved {
                                channel = a;
                            }
                            if let Some((a, b)) = t.params.server_port {
                                server_ports = Some((a, b.unwrap_or(a.wrapping_add(1))));
                            }
                        }
                    }
                }
                if self.lower == Lower::Udp {
                    channel = 2 * i as u8; // names the track inside this session
                }
                self.events.push_back(ClientEvent::SetUp {
                    track: i,
                    channel,
                    server_ports,
                });
                self.setup(i + 1, now_ms);
            }
            Phase::Play | Phase::Record => {
                self.phase = Phase::Playing;
                self.events.push_back(ClientEvent::Playing);
            }
            Phase::AwaitPorts | Phase::Playing | Phase::Done => {}
        }
    }
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Describe => "DESCRIBE".into(),
        Method::GetParameter => "GET_PARAMETER".into(),
        Method::Options => "OPTIONS".into(),
        Method::Pause => "PAUSE".into(),
        Method::Play => "PLAY".into(),
        Method::Setup => "SETUP".into(),
        Method::Teardown => "TEARDOWN".into(),
        Method::Announce => "ANNOUNCE".into(),
        Method::Record => "RECORD".into(),
        Method::SetParameter => "SET_PARAMETER".into(),
        Method::PlayNotify => "PLAY_NOTIFY".into(),
        Method::Redirect => "REDIRECT".into(),
        Method::Extension(s) => s.clone(),
    }
}

/// `%XX` escapes of a URL's user part decoded (RFC 3986 §2.1); `None` when they are not
/// valid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    crate::url::percent_decode_utf8(s)
}

impl Machine for RtspClient {
    type Event = ClientEvent;
    /// The client fails by event ([`ClientEvent::Failed`]), never by error.
    type Error = std::convert::Infallible;

    /// Bytes from the server, in any chunking; a timeout sends the keepalive when due.
    fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), Self::Error> {
        let ms = self.ms(now);
        match input {
            Input::Bytes(b) => self.receive(b, ms),
            Input::Timeout => self.tick(ms),
        }
        Ok(())
    }

    /// Requests to send, then events, then the keepalive's time while playing.
    fn poll_output(&mut self) -> Output<ClientEvent> {
        if !self.out.is_empty() {
            return Output::Transmit(self.transmit());
        }
        if let Some(e) = self.poll_event() {
            return Output::Event(e);
        }
        let at = self
            .keepalive_due_ms()
            .zip(self.origin)
            .map(|(ms, origin)| origin + std::time::Duration::from_millis(ms));
        Output::Timeout(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/1\r\n\
        a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1188;sizelength=13;indexlength=3;indexdeltalength=3\r\n\
        a=control:stream=1\r\n";

    fn requests(out: &[u8]) -> Vec<Request<Vec<u8>>> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (m, used) = Message::<Vec<u8>>::parse(&out[at..]).unwrap();
            at += used;
            if let Message::Request(r) = m {
                v.push(r);
            }
        }
        v
    }

    fn reply(c: &mut RtspClient, status: u16, extra: &str, body: &str, now: u64) {
        let r = requests(&c.transmit());
        let cseq = r
            .last()
            .unwrap()
            .header(&headers::CSEQ)
            .unwrap()
            .as_str()
            .to_string();
        let msg = format!(
            "RTSP/1.0 {status} X\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // In two pieces: the parser must wait for the rest.
        let (a, b) = msg.as_bytes().split_at(msg.len() / 2);
        c.receive(a, now);
        c.receive(b, now);
    }

    /// `digest_auth` slices by character counts: a non-ASCII challenge aborted the pull.
    #[test]
    fn a_challenge_with_multibyte_characters_is_no_panic() {
        let mut c = RtspClient::new("rtsp://admin:pw@127.0.0.1/cam", Lower::Tcp).unwrap();
        c.start_at_ms(0);
        reply(&mut c, 200, "Public: OPTIONS, DESCRIBE\r\n", "", 0);
        reply(
            &mut c,
            401,
            "WWW-Authenticate: Digest a\u{e9}=\"x\", realm=\"c\u{e9}m\", nonce=\"\u{e9}\"\r\n",
            "",
            0,
        );
        assert!(matches!(c.poll_event(), Some(ClientEvent::Failed(_))));
    }

    #[test]
    fn plays_over_tcp_with_digest_auth_and_keeps_alive() {
        let mut c = RtspClient::new("rtsp://admin:p%40ss@127.0.0.1:8554/cam", Lower::Tcp).unwrap();
        assert_eq!(c.url(), "rtsp://127.0.0.1:8554/cam");
        c.start_at_ms(0);
        reply(
            &mut c,
            200,
            "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER\r\n",
            "",
            0,
        );
        // DESCRIBE: 401, then again with Digest credentials.
        reply(
            &mut c,
            401,
            "WWW-Authenticate: Basic realm=\"cam\"\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc\"\r\n",
            "",
            0,
        );
        let out = c.transmit();
        let r = requests(&out);
        assert_eq!(r[0].method(), &Method::Describe);
        let auth = r[0]
            .header(&headers::AUTHORIZATION)
            .unwrap()
            .as_str()
            .to_string();
        assert!(
            auth.starts_with("Digest ") && auth.contains("username=\"admin\""),
            "{auth}"
        );
        // HA1 = MD5(admin:cam:p@ss), HA2 = MD5(DESCRIBE:rtsp://127.0.0.1:8554/cam).
        let ha1 = format!("{:x}", md5_of("admin:cam:p@ss"));
        let ha2 = format!("{:x}", md5_of("DESCRIBE:rtsp://127.0.0.1:8554/cam"));
        let want = format!("{:x}", md5_of(&format!("{ha1}:abc:{ha2}")));
        assert!(auth.contains(&format!("response=\"{want}\"")), "{auth}");
        c.out = out; // for reply() to read the CSeq
        reply(
            &mut c,
            200,
            "Content-Base: rtsp://127.0.0.1:8554/cam/\r\nContent-Type: application/sdp\r\n",
            SDP,
            0,
        );
        let Some(ClientEvent::Described(tracks)) = c.poll_event() else {
            panic!("no tracks")
        };
        assert_eq!(tracks.len(), 2);
        let setup = requests(&c.out.clone());
        assert_eq!(
            setup[0].request_uri().unwrap().as_str(),
            "rtsp://127.0.0.1:8554/cam/stream=0"
        );
        assert!(setup[0].header(&headers::AUTHORIZATION).is_some());
        reply(
            &mut c,
            200,
            "Session: 12345678;timeout=20\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
            "",
            0,
        );
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::SetUp {
                track: 0,
                channel: 0,
                ..
            })
        ));
        reply(
            &mut c,
            200,
            "Session: 12345678\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n",
            "",
            0,
        );
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::SetUp {
                track: 1,
                channel: 2,
                ..
            })
        ));
        let play = requests(&c.out.clone());
        assert_eq!(play[0].method(), &Method::Play);
        assert_eq!(
            play[0].header(&headers::SESSION).unwrap().as_str(),
            "12345678"
        );
        reply(&mut c, 200, "Session: 12345678\r\n", "", 0);
        assert!(matches!(c.poll_event(), Some(ClientEvent::Playing)));
        // Interleaved data, cut anywhere.
        let frame = [b'$', 2, 0, 3, 9, 8, 7, b'$', 0, 0, 1, 5];
        c.receive(&frame[..5], 1);
        c.receive(&frame[5..], 1);
        assert!(
            matches!(c.poll_event(), Some(ClientEvent::Data { channel: 2, ref bytes }) if bytes == &[9, 8, 7])
        );
        assert!(
            matches!(c.poll_event(), Some(ClientEvent::Data { channel: 0, ref bytes }) if bytes == &[5])
        );
        // Keepalive at half the 20 s timeout.
        c.tick(9_000);
        assert!(c.transmit().is_empty());
        c.tick(10_000);
        let k = requests(&c.transmit());
        assert_eq!(k[0].method(), &Method::GetParameter);
    }

    fn md5_of(s: &str) -> impl std::fmt::LowerHex {
        use md5::Digest;
        md5::Md5::digest(s.as_bytes())
    }

    #[test]
    fn udp_waits_for_ports_and_errors_end_the_session() {
        let mut c = RtspClient::new("rtsp://127.0.0.1/cam", Lower::Udp).unwrap();
        c.start_at_ms(0);
        reply(&mut c, 200, "", "", 0);
        reply(&mut c, 200, "Content-Type: application/sdp\r\n", SDP, 0);
        assert!(matches!(c.poll_event(), Some(ClientEvent::Described(_))));
        assert!(c.out.is_empty(), "no SETUP before the ports");
        c.set_client_ports_at_ms(vec![(5000, 5001), (5002, 5003)], 0);
        let s = requests(&c.out.clone());
        assert_eq!(
            s[0].header(&headers::TRANSPORT).unwrap().as_str(),
            "RTP/AVP;unicast;client_port=5000-5001"
        );
        assert_eq!(
            s[0].request_uri().unwrap().as_str(),
            "rtsp://127.0.0.1/cam/stream=0"
        );
        reply(&mut c, 200, "Session: 1\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001\r\n", "", 0);
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::SetUp {
                track: 0,
                server_ports: Some((6000, 6001)),
                ..
            })
        ));
        reply(&mut c, 461, "", "", 0);
        assert!(
            matches!(c.poll_event(), Some(ClientEvent::Failed(ref w)) if w.contains("SETUP: 461"))
        );
        // No credentials: a 401 is an error.
        let mut c = RtspClient::new("rtsp://127.0.0.1/cam", Lower::Tcp).unwrap();
        c.start_at_ms(0);
        reply(
            &mut c,
            401,
            "WWW-Authenticate: Basic realm=\"x\"\r\n",
            "",
            0,
        );
        reply(
            &mut c,
            401,
            "WWW-Authenticate: Basic realm=\"x\"\r\n",
            "",
            0,
        );
        assert!(matches!(c.poll_event(), Some(ClientEvent::Failed(ref w)) if w.contains("401")));
        assert!(RtspClient::new("http://x/y", Lower::Tcp).is_err());
        // Garbage ends the session.
        let mut c = RtspClient::new("rtsp://127.0.0.1/cam", Lower::Tcp).unwrap();
        c.start_at_ms(0);
        c.receive(b"\x00\x01garbage that is not RTSP\r\n\r\n", 0);
        assert!(matches!(c.poll_event(), Some(ClientEvent::Failed(_))));
    }
}
