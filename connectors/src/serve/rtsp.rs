//! The RTSP connector (RFC 2326, RTSP 1.0; MistServer's port 5554): serves a stream to RTSP
//! players, one process per connection. Requests are parsed with `rtsp-types`; the answer to
//! each is decided by [`answer`], which does no I/O. Media goes out as RTP (`dtsc::rtp`,
//! one packetizer per track) either interleaved on the RTSP connection (`RTP/AVP/TCP`,
//! RFC 2326 §10.12) or over UDP to the client's ports, with an RTCP sender report per track
//! every [`SR_INTERVAL`].
//!
//! `rtsp://HOST:5554/S` (or `/APP/S`: the stream is the last path element), track controls
//! `trackID=N` (N the track id). Methods: OPTIONS, DESCRIBE (SDP from the tracks, with
//! `a=range` and `a=control`), SETUP, PLAY (an ended stream from its start, with its length in
//! `Range`; a live one from the newest keyframe; `RTP-Info` per track), GET_PARAMETER and
//! SET_PARAMETER (keepalive), PAUSE and PLAY again (resume), TEARDOWN.
//!
//! An encoder pushes with ANNOUNCE (the SDP names the tracks: H.264, HEVC, AAC, MP3), SETUP
//! (`RTP/AVP/TCP` interleaved, `mode=record`) and RECORD into a `push://` stream, under the
//! same rules as an RTMP publish. RTP is depacketized by `dtsc::rtp::Depacketizer`; tracks
//! are lined up by the encoder's RTCP sender reports, and video, which RTP carries with
//! presentation times only, gets decode times from `dtsc::rtp::DtsFromPts` (five access units
//! held, decode times up to 200 ms ahead of presentation). Packets reach the buffer in decode
//! order across tracks. Pushes come over TCP interleaved or UDP (datagrams only from the
//! publisher's address and the ports its SETUP named: [`udp_source_ok`]). A stream with a
//! key takes it by `?key=`, Basic or Digest authentication (`rtsp_auth`: nonces of this
//! connection, exact, used once, 60 s at most).
//!
//! Bad input: no CSeq → 400; an unknown method → 501; a request over [`MAX_REQUEST`] bytes →
//! 400 and the connection closes; a Transport without a usable profile → 461; SETUP of an
//! unknown track → 404; PLAY before SETUP → 455; a wrong Session → 454.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use dtsc::rtp::{self, PacketSpans, Packetizer};
use dtsc::{Codec, PacketRef, Track};
use rtsp_types::headers::{self, Transport, Transports};
use rtsp_types::{Message, Method, ParseError, Request, Response, StatusCode, Version};

use crate::core::control::{OpenError, PushAuth};
use crate::core::cursor::{Cursor, StartPolicy};
use crate::core::listener::set_process_name;
use crate::core::publisher::Publisher;
use crate::core::streaming::{self, Asked, Batch, Ended, Framing, Output};
use crate::serve::rtsp_auth::{self, Authorization, NonceCheck, Nonces};
use crate::Ctx;
use dtsc::rtp::ingest::{sdp_tracks, RtpIngest};

const PROTO: &str = "RTSP";
/// Largest request accepted (headers and body), bytes.
pub const MAX_REQUEST: usize = 16 << 10;
/// How often each track sends an RTCP sender report.
pub const SR_INTERVAL: Duration = Duration::from_secs(5);
/// Session timeout announced in `Session:` (s); a silent client is dropped after it.
const TIMEOUT_S: u64 = 60;
/// Most requests a connection may make before `PLAY` or `RECORD` (a player needs about six:
/// OPTIONS, DESCRIBE, a SETUP per track, PLAY; more is a client keeping a process busy).
const MAX_SETUP_REQUESTS: u32 = 64;
const READY_WAIT: Duration = Duration::from_secs(10);
/// Methods served, for OPTIONS' `Public`.
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Tracks RTSP carries: those with an RTP payload format in `dtsc::rtp`.
pub fn rtsp_tracks(tracks: &[Track]) -> Vec<&Track> {
    tracks
        .iter()
        .filter(|t| {
            matches!(
                t.codec,
                Codec::H264 | Codec::Hevc | Codec::Aac | Codec::Mp3 | Codec::Alaw | Codec::Ulaw
            )
        })
        .filter(|t| rtp::rtpmap(t).is_some())
        .collect()
}

/// How one track's packets travel.
#[derive(Debug)]
enum Path {
    /// Interleaved on the RTSP connection: RTP on channel `.0`, RTCP on `.1`.
    Interleaved(u8, u8),
    /// UDP from our sockets (RTP, RTCP) to the client's (RTP, RTCP) addresses.
    Udp {
        rtp: UdpSocket,
        rtcp: UdpSocket,
        to_rtp: SocketAddr,
        to_rtcp: SocketAddr,
    },
}

/// A track the client set up.
struct Setup {
    track: u32,
    path: Path,
    packetizer: Packetizer,
    last_sr: Option<Instant>,
    /// The client's last receiver report on this track (RFC 3550 §6.4.2).
    rr: Option<rtp::ReportBlock>,
}

/// What a connection knows between requests.
#[derive(Default)]
struct State {
    stream: Option<String>,
    cursor: Option<Cursor>,
    session: Option<String>,
    setups: Vec<Setup>,
    /// Base for SSRCs, sequence numbers and timestamp bases.
    seed: u64,
    /// An encoder's ANNOUNCE: the stream it pushes into, until RECORD.
    record: Option<Record>,
    /// The Digest nonces of this connection (RFC 7616 §3.3).
    nonces: Nonces,
    /// When the connection began: the clock of its nonces.
    epoch: Option<Instant>,
}

impl State {
    /// Ms since the connection began.
    fn now_ms(&self) -> u64 {
        self.epoch.map_or(0, |e| e.elapsed().as_millis() as u64)
    }
}

/// What the connection does after sending a response.
enum Action {
    Continue,
    Play,
    Record,
    Close,
}

/// xorshift64*: SSRCs and sequence bases that differ per session (RFC 3550 §5.1 asks for
/// random initial values).
fn next_random(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Serves one RTSP connection.
pub fn handle(mut sock: TcpStream, ctx: &Ctx) -> Result<()> {
    set_process_name("RTSP");
    let peer = crate::core::tls::peer_addr(&sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    sock.set_read_timeout(Some(Duration::from_secs(TIMEOUT_S)))?;
    let mut st = State {
        seed: crate::seed() | 1,
        epoch: Some(Instant::now()),
        ..State::default()
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut requests = 0u32;
    loop {
        match Message::<Vec<u8>>::parse(&buf) {
            Ok((Message::Request(req), used)) if used <= MAX_REQUEST => {
                buf.drain(..used);
                // The request is in: answering it may wait on us (a stream's first data),
                // not on the client.
                crate::core::limits::disarm();
                if let Some(why) = crate::core::limits::refusing() {
                    // Over the server's caps: 503 with Retry-After (RFC 7826 §17.5.4).
                    let resp = response(&req, StatusCode::ServiceUnavailable)
                        .header(headers::RETRY_AFTER, "5")
                        .build(why.as_bytes().to_vec());
                    let mut out = Vec::new();
                    let _ = resp.write(&mut out);
                    let _ = sock.write_all(&out);
                    return Ok(());
                }
                requests += 1;
                let (resp, action) = answer(&req, &mut st, ctx, &sock, &peer);
                let mut out = Vec::new();
                resp.write(&mut out)
                    .map_err(|e| anyhow!("writing a response: {e}"))?;
                match action {
                    Action::Continue if requests >= MAX_SETUP_REQUESTS => {
                        sock.write_all(&out)?;
                        crate::log!(
                            PROTO,
                            "{peer}: {requests} requests without PLAY or RECORD; closing"
                        );
                        return Ok(());
                    }
                    Action::Continue => {
                        sock.write_all(&out)?;
                        // The next request has its own whole-request deadline.
                        let l = crate::core::limits::get();
                        crate::core::limits::arm(PROTO, &peer, "the next request", l.request);
                    }
                    Action::Close => {
                        sock.write_all(&out)?;
                        return Ok(());
                    }
                    Action::Play => return play(sock, st, out, &peer),
                    Action::Record => {
                        sock.write_all(&out)?;
                        // Action::Record comes only with an announced stream.
                        let Some(rec) = st.record.take() else {
                            return Ok(());
                        };
                        return rec.run(sock, std::mem::take(&mut buf), &peer);
                    }
                }
            }
            Ok((Message::Request(_), _)) => return refuse(&mut sock, &peer, "request over 16 KiB"),
            Ok((_, used)) => {
                // Interleaved data (RTCP receiver reports) or a response: nothing to do.
                buf.drain(..used);
            }
            Err(ParseError::Incomplete(_)) if buf.len() <= MAX_REQUEST => {
                let n = match sock.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) => {
                        crate::log!(PROTO, "{peer}: {e}");
                        return Ok(());
                    }
                };
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(_) if buf.len() > MAX_REQUEST => {
                return refuse(&mut sock, &peer, "request over 16 KiB")
            }
            Err(_) => return refuse(&mut sock, &peer, "malformed request"),
        }
    }
}

/// What the connector reads of one request before it acts on it, without I/O (for tests
/// and fuzzing; [`answer`] reads the same): the stream and track its URL names, the Transport
/// choices of a SETUP as the `n`-th track of a publish, the `Range` start of a PLAY
/// (seconds), and its `Authorization`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestView {
    /// The method, as sent.
    pub method: String,
    /// [`stream_of`] the request URL.
    pub stream: Option<String>,
    /// [`track_of`] the request URL.
    pub track: Option<u32>,
    /// [`record_transport`] of each Transport specification (`n` = 0).
    pub transports: Vec<RecordTransport>,
    /// [`npt_start`] of the `Range` header, seconds.
    pub npt: Option<f64>,
    /// The `Authorization` header, parsed.
    pub auth: Option<Authorization>,
}

/// Parses the RTSP message at the start of `buf` (RFC 2326 §6, by `rtsp-types`) as the
/// connection loop does: a request gives its [`RequestView`]; interleaved data and responses
/// give `None` with the bytes they use. `Err(())` when more bytes are needed (up to
/// [`MAX_REQUEST`]) or the bytes are not RTSP.
#[allow(clippy::result_unit_err)]
pub fn read_request(buf: &[u8]) -> std::result::Result<(Option<RequestView>, usize), ()> {
    let (msg, used) = Message::<Vec<u8>>::parse(buf).map_err(|_| ())?;
    let Message::Request(req) = msg else {
        return Ok((None, used));
    };
    let transports = match req.typed_header::<Transports>() {
        Ok(Some(ts)) => ts.iter().filter_map(|t| record_transport(t, 0)).collect(),
        _ => Vec::new(),
    };
    let view = RequestView {
        method: method_name(req.method()),
        stream: stream_of(&req),
        track: track_of(&req),
        transports,
        npt: req
            .header(&headers::RANGE)
            .and_then(|r| npt_start(r.as_str())),
        auth: req
            .header(&headers::AUTHORIZATION)
            .map(|v| rtsp_auth::parse_authorization(v.as_str())),
    };
    Ok((Some(view), used))
}

/// A method's name as sent.
fn method_name(m: &Method) -> String {
    let s: &str = m.into();
    s.to_string()
}

/// Answers 400 Bad Request, logs why and ends the connection.
fn refuse(sock: &mut TcpStream, peer: &str, why: &str) -> Result<()> {
    crate::log!(PROTO, "{peer}: {why}; closing");
    let resp = Response::builder(Version::V1_0, StatusCode::BadRequest).build(Vec::new());
    let mut out = Vec::new();
    let _ = resp.write(&mut out);
    let _ = sock.write_all(&out);
    Ok(())
}

/// The stream a request URL names: its last non-empty path element before any `trackID=`,
/// percent-decoded (RFC 3986 §2.1).
pub fn stream_of(req: &Request<Vec<u8>>) -> Option<String> {
    let url = req.request_uri()?;
    let mut parts: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
    if parts.last().is_some_and(|p| p.starts_with("trackID=")) {
        parts.pop();
    }
    parts.last().map(|s| crate::core::url::percent_decode(s))
}

/// The track id of a SETUP URL (`…/trackID=N`).
pub fn track_of(req: &Request<Vec<u8>>) -> Option<u32> {
    let url = req.request_uri()?;
    url.path()
        .rsplit('/')
        .next()?
        .strip_prefix("trackID=")?
        .parse()
        .ok()
}

fn response(req: &Request<Vec<u8>>, status: StatusCode) -> rtsp_types::ResponseBuilder {
    let mut b = Response::builder(Version::V1_0, status).header(headers::SERVER, "Sluice");
    if let Some(cseq) = req.header(&headers::CSEQ) {
        b = b.header(headers::CSEQ, cseq.as_str());
    }
    b
}

/// Answers one request (no I/O but opening the stream and binding UDP sockets).
fn answer(
    req: &Request<Vec<u8>>,
    st: &mut State,
    ctx: &Ctx,
    sock: &TcpStream,
    peer: &str,
) -> (Response<Vec<u8>>, Action) {
    let plain = |status| (response(req, status).build(Vec::new()), Action::Continue);
    if req.header(&headers::CSEQ).is_none() {
        return (
            response(req, StatusCode::BadRequest).build(Vec::new()),
            Action::Close,
        );
    }
    if let (Some(ours), Some(theirs)) = (&st.session, req.header(&headers::SESSION)) {
        let id = theirs.as_str().split(';').next().unwrap_or("").trim();
        if id != ours {
            return plain(StatusCode::SessionNotFound);
        }
    }
    let session_hdr = |b: rtsp_types::ResponseBuilder, st: &State| match &st.session {
        Some(s) => b.header(headers::SESSION, format!("{s};timeout={TIMEOUT_S}")),
        None => b,
    };
    let now_ms = st.now_ms();
    match req.method() {
        Method::Options => (
            response(req, StatusCode::Ok)
                .header(headers::PUBLIC, PUBLIC)
                .build(Vec::new()),
            Action::Continue,
        ),
        Method::Describe => {
            let Some(name) = stream_of(req) else {
                return plain(StatusCode::NotFound);
            };
            if let Err(status) = open(st, ctx, &name, peer) {
                return plain(status);
            }
            let Some(c) = st.cursor.as_ref() else {
                return plain(StatusCode::InternalServerError);
            };
            let sdp = describe(&name, c, sock);
            let base = format!(
                "{}/",
                req.request_uri()
                    .map(|u| u.as_str().trim_end_matches('/'))
                    .unwrap_or("")
            );
            (
                response(req, StatusCode::Ok)
                    .header(headers::CONTENT_TYPE, "application/sdp")
                    .header(headers::CONTENT_BASE, base)
                    .build(sdp.into_bytes()),
                Action::Continue,
            )
        }
        Method::Announce => match announce(req, ctx, peer, &mut st.nonces, now_ms) {
            Ok(rec) => {
                crate::log!(
                    PROTO,
                    "{peer}: ANNOUNCE {} with {} tracks",
                    rec.stream,
                    rec.ingest.tracks.len()
                );
                st.record = Some(rec);
                st.session = Some(format!("{:016X}", next_random(&mut st.seed)));
                let b = response(req, StatusCode::Ok);
                (session_hdr(b, st).build(Vec::new()), Action::Continue)
            }
            Err(Refusal {
                status: StatusCode::Unauthorized,
                why,
                stale,
            }) => {
                crate::log!(PROTO, "{peer}: ANNOUNCE needs credentials: {why}");
                let nonce = st.nonces.issue(now_ms, rtsp_auth::random_bytes());
                (
                    response(req, StatusCode::Unauthorized)
                        .header(
                            headers::WWW_AUTHENTICATE,
                            rtsp_auth::challenge(&nonce, stale),
                        )
                        .build(Vec::new()),
                    Action::Continue,
                )
            }
            Err(Refusal { status, why, .. }) => {
                crate::log!(PROTO, "{peer}: ANNOUNCE refused: {why}");
                plain(status)
            }
        },
        Method::Setup if st.record.is_some() => {
            let Some(rec) = st.record.as_mut() else {
                return plain(StatusCode::InternalServerError);
            };
            let url = req
                .request_uri()
                .map(|u| u.as_str().to_string())
                .unwrap_or_default();
            let Some(n) = rec
                .ingest
                .tracks
                .iter()
                .position(|t| url.ends_with(&format!("/{}", t.control)) || url == t.control)
            else {
                return plain(StatusCode::NotFound);
            };
            let t = &mut rec.ingest.tracks[n];
            let transports = match req.typed_header::<Transports>() {
                Ok(Some(ts)) => ts,
                _ => return plain(StatusCode::UnsupportedTransport),
            };
            let mut reply = None;
            for choice in transports.iter().filter_map(|tr| record_transport(tr, n)) {
                match choice {
                    RecordTransport::Tcp(ch) => {
                        t.channel = Some(ch);
                        rec.udp[n] = None;
                        reply = Some(format!(
                            "RTP/AVP/TCP;unicast;interleaved={}-{};mode=record",
                            ch,
                            ch.wrapping_add(1)
                        ));
                        break;
                    }
                    RecordTransport::Udp(cp, cp2) => {
                        // UDP: two sockets of ours; the track's channel names them internally.
                        // Only the publisher's address and the ports it named may send to them.
                        let (Ok(local), Ok(from)) = (
                            crate::core::tls::local_addr(sock),
                            crate::core::tls::peer_addr(sock),
                        ) else {
                            continue;
                        };
                        let (Ok(a), Ok(b)) = (
                            UdpSocket::bind((local.ip(), 0)),
                            UdpSocket::bind((local.ip(), 0)),
                        ) else {
                            continue;
                        };
                        let (Ok(sa), Ok(sb)) = (a.local_addr(), b.local_addr()) else {
                            continue;
                        };
                        reply = Some(format!(
                            "RTP/AVP;unicast;client_port={cp}-{cp2};server_port={}-{};mode=record",
                            sa.port(),
                            sb.port()
                        ));
                        t.channel = Some(200u8.wrapping_add((2 * n) as u8)); // unused by interleaving
                        let source = UdpSource {
                            ip: from.ip(),
                            rtp_port: cp,
                            rtcp_port: cp2,
                        };
                        rec.udp[n] = Some((a, b, source));
                        break;
                    }
                }
            }
            let Some(reply) = reply else {
                return plain(StatusCode::UnsupportedTransport);
            };
            let b = response(req, StatusCode::Ok).header(headers::TRANSPORT, reply);
            (session_hdr(b, st).build(Vec::new()), Action::Continue)
        }
        Method::Record => match &st.record {
            Some(rec) if rec.ingest.tracks.iter().any(|t| t.channel.is_some()) => {
                let b = response(req, StatusCode::Ok);
                (session_hdr(b, st).build(Vec::new()), Action::Record)
            }
            _ => plain(StatusCode::MethodNotValidInThisState),
        },
        Method::Setup => {
            let (Some(name), Some(id)) = (stream_of(req), track_of(req)) else {
                return plain(StatusCode::NotFound);
            };
            if st.stream.as_deref() != Some(name.as_str()) {
                if let Err(status) = open(st, ctx, &name, peer) {
                    return plain(status);
                }
            }
            let Some(c) = st.cursor.as_ref() else {
                return plain(StatusCode::InternalServerError);
            };
            // The payload type is the one the SDP gave the track (`rtp::payload_type`).
            let Some((place, track)) = rtsp_tracks(c.tracks())
                .into_iter()
                .enumerate()
                .find(|(_, t)| t.id == id)
                .map(|(i, t)| (i, t.clone()))
            else {
                return plain(StatusCode::NotFound);
            };
            let transports = match req.typed_header::<Transports>() {
                Ok(Some(t)) => t,
                _ => return plain(StatusCode::UnsupportedTransport),
            };
            let Some((path, reply)) = transports
                .iter()
                .find_map(|t| transport(t, sock, st.setups.len()))
            else {
                return plain(StatusCode::UnsupportedTransport);
            };
            let r = next_random(&mut st.seed);
            let ssrc = r as u32;
            let Some(packetizer) = Packetizer::new(
                &track,
                rtp::payload_type(&track, place),
                ssrc,
                (r >> 32) as u16,
                (r >> 40) as u32,
            ) else {
                return plain(StatusCode::UnsupportedMediaType);
            };
            st.setups.retain(|s| s.track != id);
            st.setups.push(Setup {
                track: id,
                path,
                packetizer,
                last_sr: None,
                rr: None,
            });
            if st.session.is_none() {
                st.session = Some(format!("{:016X}", next_random(&mut st.seed)));
            }
            let b = response(req, StatusCode::Ok)
                .header(headers::TRANSPORT, format!("{reply};ssrc={ssrc:08X}"));
            (session_hdr(b, st).build(Vec::new()), Action::Continue)
        }
        Method::Play => {
            if st.setups.is_empty() || st.cursor.is_none() {
                return plain(StatusCode::MethodNotValidInThisState);
            }
            let Some(c) = st.cursor.as_mut() else {
                return plain(StatusCode::MethodNotValidInThisState);
            };
            let ended = c.reader().meta().state() == dtsc::shm::STATE_ENDED;
            // `Range: npt=X-`: from the keyframe at or before X s into the window (a stored
            // stream or the DVR window); without one, a stored stream from its start and a
            // live one from its newest keyframe.
            let from = req
                .header(&headers::RANGE)
                .and_then(|r| npt_start(r.as_str()))
                .map(|secs| StartPolicy::IntoWindow((secs * 1000.0) as u64));
            let start = c.start(from.unwrap_or(StartPolicy::Usual)).unwrap_or(0);
            if let (Some(r), Some(_)) = (req.header(&headers::RANGE), from) {
                crate::log!(
                    PROTO,
                    "{peer}: PLAY {}: from the keyframe at {start} ms",
                    r.as_str()
                );
            }
            let base = req
                .request_uri()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .unwrap_or_default();
            let base = base
                .rsplit_once("/trackID=")
                .map(|(b, _)| b.to_string())
                .unwrap_or(base);
            let info: Vec<String> = st
                .setups
                .iter()
                .map(|s| {
                    format!(
                        "url={base}/trackID={};seq={};rtptime={}",
                        s.track,
                        s.packetizer.next_seq(),
                        s.packetizer.rtp_time(start)
                    )
                })
                .collect();
            let range = match (ended || from.is_some(), window_ms(c)) {
                (true, Some((first, last))) => format!(
                    "npt={:.3}-{}",
                    start.saturating_sub(first) as f64 / 1000.0,
                    if ended {
                        format!("{:.3}", (last - first) as f64 / 1000.0)
                    } else {
                        String::new()
                    }
                ),
                _ => "npt=now-".to_string(),
            };
            let b = response(req, StatusCode::Ok)
                .header(headers::RANGE, range)
                .header(headers::RTP_INFO, info.join(","));
            (session_hdr(b, st).build(Vec::new()), Action::Play)
        }
        Method::Pause => {
            let b = response(req, StatusCode::Ok);
            (session_hdr(b, st).build(Vec::new()), Action::Continue)
        }
        Method::GetParameter | Method::SetParameter => {
            let b = response(req, StatusCode::Ok);
            (session_hdr(b, st).build(Vec::new()), Action::Continue)
        }
        Method::Teardown => (
            response(req, StatusCode::Ok).build(Vec::new()),
            Action::Close,
        ),
        _ => plain(StatusCode::NotImplemented),
    }
}

/// Opens `name` for playing into `st` (and waits for its first keyframe).
fn open(st: &mut State, ctx: &Ctx, name: &str, peer: &str) -> std::result::Result<(), StatusCode> {
    let mut c = match Cursor::open(&ctx.rundir, name, peer) {
        Ok(c) => c,
        Err(OpenError::NotFound(r)) => {
            crate::log!(PROTO, "{peer}: {name}: not found ({r})");
            return Err(StatusCode::NotFound);
        }
        Err(OpenError::Forbidden(r) | OpenError::Unauthorized(r)) => {
            crate::log!(PROTO, "{peer}: {name}: forbidden ({r})");
            return Err(StatusCode::Forbidden);
        }
        Err(OpenError::Failed(r)) => {
            crate::log!(PROTO, "{peer}: {name}: {r}");
            return Err(StatusCode::ServiceUnavailable);
        }
    };
    if !c.wait_ready(READY_WAIT, 1) {
        crate::log!(PROTO, "{peer}: {name}: {}", c.not_ready_reason());
        return Err(StatusCode::NotFound);
    }
    st.stream = Some(name.to_string());
    st.cursor = Some(c);
    st.setups.clear();
    Ok(())
}

/// The start of an RTSP `Range: npt=START-[END]` (RFC 2326 §3.6) in seconds; `None` for
/// `now`, other units or a malformed value.
pub fn npt_start(range: &str) -> Option<f64> {
    let v = range.trim().strip_prefix("npt=")?;
    let start = v.split('-').next()?.trim();
    let secs: f64 = match start.split(':').collect::<Vec<_>>().as_slice() {
        [s] => s.parse().ok()?,
        [h, m, s] => {
            h.parse::<f64>().ok()? * 3600.0
                + m.parse::<f64>().ok()? * 60.0
                + s.parse::<f64>().ok()?
        }
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// First and last DTS of the window, ms.
fn window_ms(c: &Cursor) -> Option<(u64, u64)> {
    let m = c.reader().meta();
    let first = m.key(m.first_key())?.dts;
    let last = m.write_seq().checked_sub(1).and_then(|s| m.packet(s))?.dts;
    Some((first, last.max(first)))
}

/// The SDP of the stream (RFC 4566; media descriptions per RFC 6184 §8.2.1, RFC 7798 §7.2,
/// RFC 3640 §4.1), written with `sdp-types`.
fn describe(name: &str, c: &Cursor, sock: &TcpStream) -> String {
    let local = crate::core::tls::local_addr(sock)
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    let ended = c.reader().meta().state() == dtsc::shm::STATE_ENDED;
    let range = match (ended, window_ms(c)) {
        (true, Some((first, last))) => format!("npt=0-{:.3}", (last - first) as f64 / 1000.0),
        _ => "npt=now-".into(),
    };
    sdp_of(&rtsp_tracks(c.tracks()), name, &local, &range)
}

/// The SDP (RFC 4566) of `tracks` for session `name` from address `local`: one medium per
/// track with `rtpmap`/`fmtp` of `dtsc::rtp`, payload types from `rtp::payload_type`,
/// `a=control:trackID=N`, languages, and the session's `a=range` (`range`, e.g.
/// `npt=now-`). For DESCRIBE answers and for ANNOUNCE when Sluice pushes out.
pub fn sdp_of(tracks: &[&Track], name: &str, local: &str, range: &str) -> String {
    use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};
    let local = local.to_string();
    let range = range.to_string();
    let attr = |a: &str, v: Option<String>| Attribute {
        attribute: a.into(),
        value: v,
    };
    let medias = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pt = rtp::payload_type(t, i);
            let mut attributes = vec![attr("rtpmap", rtp::rtpmap(t).map(|m| format!("{pt} {m}")))];
            if let Some(f) = rtp::fmtp(t) {
                attributes.push(attr("fmtp", Some(format!("{pt} {f}"))));
            }
            attributes.push(attr("control", Some(format!("trackID={}", t.id))));
            if let Some(lang) = t.lang.as_ref().filter(|l| !l.is_empty() && *l != "und") {
                attributes.push(attr("lang", Some(lang.clone())));
            }
            Media {
                media: if t.kind == dtsc::TrackKind::Video {
                    "video"
                } else {
                    "audio"
                }
                .into(),
                port: 0,
                num_ports: None,
                proto: "RTP/AVP".into(),
                fmt: pt.to_string(),
                media_title: None,
                connections: Vec::new(),
                bandwidths: Vec::new(),
                key: None,
                attributes,
            }
        })
        .collect();
    let session = Session {
        origin: Origin {
            username: None,
            sess_id: "0".into(),
            sess_version: 0,
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            unicast_address: local,
        },
        session_name: name.into(),
        session_description: None,
        uri: None,
        emails: Vec::new(),
        phones: Vec::new(),
        connection: Some(Connection {
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            connection_address: "0.0.0.0".into(),
        }),
        bandwidths: Vec::new(),
        times: vec![Time {
            start_time: 0,
            stop_time: 0,
            repeats: Vec::new(),
        }],
        time_zones: Vec::new(),
        key: None,
        attributes: vec![
            attr("control", Some("*".into())),
            attr("range", Some(range)),
        ],
        medias,
    };
    let mut out = Vec::new();
    let _ = session.write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A path for one of the client's transports, and the Transport header to answer: TCP
/// interleaved (the client's channels, or `2n`/`2n+1` for the n-th setup), or UDP unicast to
/// the client's ports from two new sockets. `None` when the transport is not RTP/AVP.
fn transport(t: &Transport, sock: &TcpStream, n: usize) -> Option<(Path, String)> {
    let Transport::Rtp(rtp) = t else { return None };
    if rtp.profile != headers::RtpProfile::Avp {
        return None;
    }
    let tcp = rtp.lower_transport == Some(headers::RtpLowerTransport::Tcp);
    if tcp {
        let (a, b) = rtp.params.interleaved.unwrap_or(((2 * n) as u8, None));
        let b = b.unwrap_or(a.wrapping_add(1));
        return Some((
            Path::Interleaved(a, b),
            format!("RTP/AVP/TCP;unicast;interleaved={a}-{b}"),
        ));
    }
    let (cp, cp2) = rtp.params.client_port?;
    let cp2 = cp2.unwrap_or(cp.wrapping_add(1));
    let peer = crate::core::tls::peer_addr(sock).ok()?.ip();
    let local = crate::core::tls::local_addr(sock).ok()?.ip();
    let rtp_sock = UdpSocket::bind((local, 0)).ok()?;
    let rtcp_sock = UdpSocket::bind((local, 0)).ok()?;
    let (sp, sp2) = (
        rtp_sock.local_addr().ok()?.port(),
        rtcp_sock.local_addr().ok()?.port(),
    );
    Some((
        Path::Udp {
            rtp: rtp_sock,
            rtcp: rtcp_sock,
            to_rtp: SocketAddr::new(peer, cp),
            to_rtcp: SocketAddr::new(peer, cp2),
        },
        format!("RTP/AVP;unicast;client_port={cp}-{cp2};server_port={sp}-{sp2}"),
    ))
}

/// Streams the set-up tracks until the stream ends or the client leaves.
fn play(mut sock: TcpStream, mut st: State, response: Vec<u8>, peer: &str) -> Result<()> {
    set_process_name("RTSP play");
    // Action::Play comes only with an open stream.
    let Some(mut cursor) = st.cursor.take() else {
        return Ok(());
    };
    let stream = st.stream.clone().unwrap_or_default();
    let selected: Vec<u32> = st.setups.iter().map(|s| s.track).collect();
    crate::log!(PROTO, "{peer} plays {stream} (tracks {selected:?})");
    let mut out = RtspPlay::new(st.setups, st.session.unwrap_or_default(), cursor.reader());
    sock.set_read_timeout(None)?;
    // A buffer that dies is replaced and the session goes on from the new one with the same
    // SSRCs, sequence numbers and RTP clocks (the publisher's timestamps go on too).
    match streaming::stream_resuming(&mut sock, &mut cursor, &mut out, response, Framing::Raw) {
        Ok(Ended::StreamEnded) => {
            crate::log!(PROTO, "{peer}: {stream} ended ({})", out.report_summary());
            linger(&mut sock, &mut out)
                .map_err(|e| anyhow!("{peer}: after the end of {stream}: {e:#}"))?;
        }
        Ok(_) => crate::log!(PROTO, "{peer}: left {stream} ({})", out.report_summary()),
        Err(e) => return Err(anyhow!("{peer}: play {stream}: {e:#}")),
    }
    Ok(())
}

/// Sends `tracks` of `cursor` interleaved on `sock` (RTP on channel 2i, RTCP on 2i+1, in
/// the order of `tracks`, payload types of `rtp::payload_type`) to a server that accepted
/// RECORD (`rtsp_push`). True when the stream ended, false when the server left.
pub fn stream_out(
    mut sock: TcpStream,
    mut cursor: Cursor,
    tracks: &[Track],
    stream: &str,
    peer: &str,
) -> Result<bool> {
    let mut seed = crate::seed() | 1;
    let setups = tracks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let r = next_random(&mut seed);
            let ch = (2 * i) as u8;
            Some(Setup {
                track: t.id,
                path: Path::Interleaved(ch, ch.wrapping_add(1)),
                packetizer: Packetizer::new(
                    t,
                    rtp::payload_type(t, i),
                    r as u32,
                    (r >> 32) as u16,
                    (r >> 40) as u32,
                )?,
                last_sr: None,
                rr: None,
            })
        })
        .collect();
    let mut out = RtspPlay::new(setups, String::new(), cursor.reader());
    let ended =
        streaming::stream_resuming(&mut sock, &mut cursor, &mut out, Vec::new(), Framing::Raw)
            .map_err(|e| anyhow!("{peer}: push {stream}: {e:#}"))?;
    crate::log!(PROTO, "{peer}: push of {stream}: {}", out.report_summary());
    Ok(matches!(ended, Ended::StreamEnded))
}

/// RTP out, as an output of the shared connection loop.
struct RtspPlay {
    setups: Vec<Setup>,
    rtp: Vec<u8>,
    spans: PacketSpans,
    /// Client bytes not parsed yet (requests and interleaved RTCP).
    input: Vec<u8>,
    /// Responses to requests made while playing.
    replies: Vec<u8>,
    session: String,
    stop: bool,
    /// A stored (ended) stream is sent at real time, as RTSP clients expect: over UDP, sent
    /// at once it would overflow the socket buffers and be lost, and clients time packets by
    /// their arrival.
    paced: bool,
    /// Wall clock and DTS (ms) of the first packet, for pacing.
    clock: Option<(Instant, u64)>,
    /// PAUSE received: nothing is sent until the next PLAY.
    paused: bool,
    /// The stream ended and each track said BYE: PLAY and PAUSE no longer apply.
    ended: bool,
    /// Unix ms of the stream's DTS 0 (the buffer's `unixzero`), for live sender reports.
    unixzero: i64,
}

/// How far ahead of real time a paced stream is sent, ms (clients buffer more than that).
const PACE_LEAD_MS: u64 = 300;

/// NTP time of now (RFC 3550 §4): seconds since 1900 in the high 32 bits.
fn ntp_now() -> (u64, u64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ((secs << 32) | frac, d.as_millis() as u64)
}

impl RtspPlay {
    fn new(setups: Vec<Setup>, session: String, reader: &dtsc::shm::StreamReader) -> RtspPlay {
        RtspPlay {
            setups,
            rtp: Vec::with_capacity(64 << 10),
            spans: Vec::new(),
            input: Vec::new(),
            replies: Vec::new(),
            session,
            stop: false,
            paced: reader.meta().state() == dtsc::shm::STATE_ENDED,
            clock: None,
            paused: false,
            ended: false,
            unixzero: reader.meta().unixzero(),
        }
    }

    /// Keeps each track's latest receiver report (matched by our SSRC).
    fn take_reports(&mut self, blocks: &[rtp::ReportBlock]) {
        for b in blocks {
            if let Some(s) = self
                .setups
                .iter_mut()
                .find(|s| s.packetizer.ssrc() == b.ssrc)
            {
                s.rr = Some(*b);
            }
        }
        if !blocks.is_empty() {
            // The client's own loss count (cumulative, may be one below zero) into the stats.
            let lost: u64 = self
                .setups
                .iter()
                .filter_map(|s| s.rr)
                .map(|r| r.cumulative_lost.max(0) as u64)
                .sum();
            ipc::sessions::set_lost(lost);
        }
    }

    /// What the client reported, per track, for the end-of-session log line.
    fn report_summary(&self) -> String {
        let v: Vec<String> = self
            .setups
            .iter()
            .filter_map(|s| {
                let r = s.rr?;
                Some(format!(
                    "track {}: {} lost, jitter {} ms",
                    s.track,
                    r.cumulative_lost,
                    u64::from(r.jitter) * 1000 / u64::from(s.packetizer.clock_rate().max(1))
                ))
            })
            .collect();
        if v.is_empty() {
            "no receiver reports".into()
        } else {
            format!("receiver reports: {}", v.join("; "))
        }
    }

    /// The stream time (ms) being played now, the instant a sender report maps to its NTP
    /// time (RFC 3550 §6.4.1: both fields name the same instant, on every track): for a
    /// paced stream, where the pacing clock is; live, wall clock minus `unixzero`.
    fn media_now(&self, unix_ms: u64) -> u64 {
        match (self.paced, self.clock) {
            (true, Some((t0, d0))) => d0 + t0.elapsed().as_millis() as u64,
            _ => unix_ms.saturating_sub(self.unixzero.max(0) as u64),
        }
    }

    /// Sender reports that are due (every track's first one goes before its first RTP
    /// packet, so a client can place that packet in time), by their path.
    fn reports(&mut self, out: &mut Vec<u8>, force: bool) {
        let now = Instant::now();
        let (ntp, unix_ms) = ntp_now();
        let media = self.media_now(unix_ms);
        for s in &mut self.setups {
            if !force && s.last_sr.is_some_and(|t| now - t < SR_INTERVAL) {
                continue;
            }
            if s.last_sr.is_none() && s.packetizer.packets == 0 && !force {
                continue; // sent with its first packet
            }
            s.last_sr = Some(now);
            send_report(s, ntp, media, false, out);
        }
    }
}

/// Writes track `s`'s sender report for NTP time `ntp` = stream time `media` ms, ending in a
/// BYE when `bye` (one compound packet, RFC 3550 §6.1): interleaved into `out`, or to its RTCP
/// socket.
fn send_report(s: &Setup, ntp: u64, media: u64, bye: bool, out: &mut Vec<u8>) {
    let mut sr = Vec::with_capacity(64);
    let p = &s.packetizer;
    rtp::sender_report(
        p.ssrc(),
        ntp,
        p.rtp_time(media),
        p.packets,
        p.octets,
        "sluice",
        &mut sr,
    );
    if bye {
        rtp::bye(p.ssrc(), &mut sr);
    }
    match &s.path {
        Path::Interleaved(_, ch) => {
            out.extend_from_slice(&[b'$', *ch]);
            out.extend_from_slice(&(sr.len() as u16).to_be_bytes());
            out.extend_from_slice(&sr);
        }
        Path::Udp { rtcp, to_rtcp, .. } => {
            let _ = rtcp.send_to(&sr, to_rtcp);
        }
    }
}

impl<'m> Output<'m> for RtspPlay {
    fn init(
        &mut self,
        tracks: &[Track],
        _start_ms: u64,
        first: bool,
        _b: &mut Batch<'m>,
    ) -> Result<()> {
        if !first {
            // New init data (a camera changed resolution): new packetizers, same numbering.
            for s in &mut self.setups {
                if let Some(t) = tracks.iter().find(|t| t.id == s.track) {
                    let p = &s.packetizer;
                    let base = p.rtp_time(0);
                    if let Some(n) =
                        Packetizer::new(t, p.payload_type(), p.ssrc(), p.next_seq(), base)
                    {
                        s.packetizer = n;
                    }
                }
            }
        }
        Ok(())
    }

    fn packet(&mut self, t: &Track, p: PacketRef<'m>, b: &mut Batch<'m>) -> Result<()> {
        let first = self
            .setups
            .iter()
            .any(|s| s.track == t.id && s.last_sr.is_none());
        // The clock is read only for a track's first packet (its sender report goes first).
        let (ntp, media) = if first {
            let (ntp, unix_ms) = ntp_now();
            (ntp, self.media_now(unix_ms))
        } else {
            (0, 0)
        };
        let Some(s) = self.setups.iter_mut().find(|s| s.track == t.id) else {
            return Ok(());
        };
        if first {
            s.last_sr = Some(Instant::now());
            let mut sr = Vec::new();
            send_report(s, ntp, media, false, &mut sr);
            b.own(&sr);
        }
        self.rtp.clear();
        self.spans.clear();
        s.packetizer.packetize(&p, &mut self.rtp, &mut self.spans);
        match &s.path {
            Path::Interleaved(ch, _) => {
                for span in &self.spans {
                    let pkt = &self.rtp[span.clone()];
                    let len = pkt.len() as u16;
                    b.own(&[b'$', *ch, (len >> 8) as u8, len as u8]);
                    b.own(pkt);
                }
            }
            Path::Udp { rtp, to_rtp, .. } => {
                for span in &self.spans {
                    let _ = rtp.send_to(&self.rtp[span.clone()], to_rtp);
                }
            }
        }
        Ok(())
    }

    fn pace(&mut self, p: &PacketRef<'m>) -> Option<Duration> {
        if self.paused {
            return Some(Duration::from_millis(100));
        }
        if !self.paced {
            return None;
        }
        let (t0, d0) = *self.clock.get_or_insert((Instant::now(), p.dts));
        let due = t0 + Duration::from_millis(p.dts.saturating_sub(d0).saturating_sub(PACE_LEAD_MS));
        due.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Asked> {
        self.input.extend_from_slice(bytes);
        loop {
            match Message::<Vec<u8>>::parse(&self.input) {
                Ok((Message::Request(req), used)) => {
                    self.input.drain(..used);
                    let status = match req.method() {
                        Method::Teardown => {
                            self.stop = true;
                            StatusCode::Ok
                        }
                        Method::Play | Method::Pause if self.ended => {
                            StatusCode::MethodNotValidInThisState
                        }
                        Method::Pause => {
                            self.paused = true;
                            StatusCode::Ok
                        }
                        Method::Play => {
                            // Resume where it paused (a stored stream's clock restarts there).
                            self.paused = false;
                            self.clock = None;
                            StatusCode::Ok
                        }
                        Method::GetParameter | Method::SetParameter | Method::Options => {
                            StatusCode::Ok
                        }
                        _ => StatusCode::MethodNotValidInThisState,
                    };
                    let resp = response(&req, status)
                        .header(
                            headers::SESSION,
                            format!("{};timeout={TIMEOUT_S}", self.session),
                        )
                        .build(Vec::new());
                    let _ = resp.write(&mut self.replies);
                }
                Ok((Message::Data(d), used)) => {
                    let blocks = rtp::report_blocks(d.as_slice());
                    self.input.drain(..used);
                    self.take_reports(&blocks);
                }
                Ok((_, used)) => {
                    self.input.drain(..used);
                }
                Err(ParseError::Incomplete(_)) if self.input.len() <= MAX_REQUEST => break,
                Err(_) => return Err(anyhow!("malformed RTSP input while playing")),
            }
        }
        Ok(if self.stop {
            Asked::Stop
        } else {
            Asked::Nothing
        })
    }

    fn control(&mut self, out: &mut Vec<u8>) {
        // Receiver reports over UDP arrive on our RTCP sockets.
        let mut buf = [0u8; 1500];
        let mut blocks = Vec::new();
        for s in &self.setups {
            if let Path::Udp { rtcp, .. } = &s.path {
                let _ = rtcp.set_nonblocking(true);
                while let Ok(n) = rtcp.recv(&mut buf) {
                    blocks.extend(rtp::report_blocks(&buf[..n]));
                }
            }
        }
        self.take_reports(&blocks);
        out.append(&mut self.replies);
        self.reports(out, false);
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<()> {
        // A last sender report with a BYE per track, one compound packet (RFC 3550 §6.1,
        // §6.6): clients end there. Over UDP the BYE takes another socket than the media, so
        // it waits until the last packet's presentation time has come (GStreamer's rtspsrc
        // ends at the BYE and drops what it has not read yet), and goes twice, 100 ms apart:
        // a lost BYE leaves the client waiting for its source timeout (a second BYE for a
        // source is ignored).
        let udp = self
            .setups
            .iter()
            .any(|s| matches!(s.path, Path::Udp { .. }));
        if udp {
            std::thread::sleep(Duration::from_millis(PACE_LEAD_MS + 200));
        }
        self.ended = true;
        for round in 0..if udp { 2 } else { 1 } {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let (ntp, unix_ms) = ntp_now();
            let media = self.media_now(unix_ms);
            for s in &self.setups {
                if round == 0 || matches!(s.path, Path::Udp { .. }) {
                    send_report(s, ntp, media, true, out);
                }
            }
        }
        Ok(())
    }
}

/// How long a session stays after its stream ended, waiting for the client's TEARDOWN.
const END_LINGER: Duration = Duration::from_secs(10);

/// After the stream ended (each track said BYE) the session stays until the client's
/// TEARDOWN (RFC 2326 §10.7), the client closes the connection, or [`END_LINGER`] passes,
/// answering keep-alives meanwhile. A server that closes first races the client's BYE
/// handling: GStreamer's rtspsrc then reconnects and may report an error instead of the end.
fn linger(sock: &mut TcpStream, out: &mut RtspPlay) -> Result<()> {
    let until = Instant::now() + END_LINGER;
    let mut buf = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // timed out, or the connection failed
        };
        let asked = out.input(&buf[..n])?;
        sock.write_all(&out.replies)?;
        out.replies.clear();
        if matches!(asked, Asked::Stop) {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ANNOUNCE / RECORD: an encoder pushes into a push:// stream.
// ---------------------------------------------------------------------------------------

/// What a connection that announced a stream holds until RECORD.
struct Record {
    stream: String,
    /// The buffer connection (replaced under the encoder if the buffer dies).
    publisher: Publisher,
    ingest: RtpIngest,
    /// Per track: our UDP sockets (RTP, RTCP) when it is pushed over UDP, and where its
    /// datagrams must come from; its channel then names it inside this connection.
    udp: Vec<Option<(UdpSocket, UdpSocket, UdpSource)>>,
    /// Interleaved frames on channels no SETUP named.
    stray: u64,
    /// Datagrams dropped because they did not come from the publisher ([`udp_source_ok`]).
    foreign: u64,
}

/// How an encoder's SETUP (`mode=record`) asked a track to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTransport {
    /// Interleaved on the RTSP connection, RTP on this channel and RTCP on the next
    /// (RFC 2326 §10.12).
    Tcp(u8),
    /// UDP from the client's ports (RTP, RTCP) (RFC 2326 §12.39 `client_port`; RTCP on the
    /// next port when only one is named).
    Udp(u16, u16),
}

/// What one Transport specification of an encoder's SETUP for its `n`-th track asks for:
/// RTP/AVP over TCP (the client's interleaved channel, else `2n`) or over UDP with
/// `client_port`; `None` for any other.
pub fn record_transport(t: &Transport, n: usize) -> Option<RecordTransport> {
    let Transport::Rtp(r) = t else { return None };
    if r.profile != headers::RtpProfile::Avp {
        return None;
    }
    if r.lower_transport == Some(headers::RtpLowerTransport::Tcp) {
        let ch = r.params.interleaved.map_or((2 * n) as u8, |(a, _)| a);
        return Some(RecordTransport::Tcp(ch));
    }
    let (cp, cp2) = r.params.client_port?;
    Some(RecordTransport::Udp(cp, cp2.unwrap_or(cp.wrapping_add(1))))
}

/// Where a publisher's datagrams for one track must come from: the RTSP connection's peer
/// address and the `client_port` pair of its SETUP (RFC 2326 §12.39).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSource {
    /// The publisher's address (the RTSP connection's peer).
    pub ip: IpAddr,
    /// Its RTP port.
    pub rtp_port: u16,
    /// Its RTCP port.
    pub rtcp_port: u16,
}

/// Whether a datagram from `from` on a track's RTP (`rtcp` false) or RTCP socket comes from
/// the publisher `src`: its address (an IPv4-mapped IPv6 address counts as the IPv4 one) and
/// the port its Transport named. Anyone else could otherwise inject media into the stream.
pub fn udp_source_ok(src: &UdpSource, from: SocketAddr, rtcp: bool) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let port = if rtcp { src.rtcp_port } else { src.rtp_port };
    canon(from.ip()) == canon(src.ip) && from.port() == port
}

/// Why ANNOUNCE was refused: the status, a reason for the log, and whether the answer's
/// challenge says `stale=true` (the client's nonce was ours but too old).
struct Refusal {
    status: StatusCode,
    why: String,
    stale: bool,
}

impl From<(StatusCode, String)> for Refusal {
    fn from((status, why): (StatusCode, String)) -> Refusal {
        Refusal {
            status,
            why,
            stale: false,
        }
    }
}

/// The credentials of an ANNOUNCE: an `Authorization` header (`auth`, RFC 7826 §18.8) or the
/// URL's `?key=` (`url_key`). A Digest header must carry the connection's current nonce,
/// exactly and in time ([`Nonces::take`], at `now_ms` on the nonces' clock), and Sluice's
/// realm; the controller then checks its response against the stream key. A Basic password
/// is the key. A header of another scheme, or one that does not parse, counts as absent.
fn push_credentials(
    auth: Option<&str>,
    url_key: Option<String>,
    nonces: &mut Nonces,
    now_ms: u64,
) -> std::result::Result<PushAuth, Refusal> {
    let refuse = |why: &str, stale| Refusal {
        status: StatusCode::Unauthorized,
        why: why.into(),
        stale,
    };
    match auth.map(rtsp_auth::parse_authorization) {
        Some(Authorization::Basic(pass)) => Ok(PushAuth::Key(Some(pass))),
        Some(Authorization::Digest(d)) => match nonces.take(&d.nonce, now_ms) {
            NonceCheck::Valid if d.realm == rtsp_auth::REALM => Ok(PushAuth::Digest {
                header: d.header,
                method: "ANNOUNCE".into(),
            }),
            NonceCheck::Valid => Err(refuse("Digest for another realm", false)),
            NonceCheck::Stale => Err(refuse("a stale nonce", true)),
            NonceCheck::Unknown => Err(refuse("a nonce this connection did not issue", false)),
        },
        Some(Authorization::Unusable) | None => Ok(PushAuth::Key(url_key)),
    }
}

/// Handles ANNOUNCE: parses the SDP and attaches to the stream's buffer as its publisher
/// (the stream's `push://` rules apply, as for RTMP). A stream with a key (`push://@KEY`)
/// takes it as `?key=KEY`, as the password of Basic authentication, or through Digest
/// (RFC 7616, checked by the controller; the nonce must be this connection's, see
/// [`push_credentials`]); without it the answer is 401 with a Digest challenge (rtsp-types
/// folds several challenges into one header line, which clients misread, so Basic is taken
/// when sent but not offered).
fn announce(
    req: &Request<Vec<u8>>,
    ctx: &Ctx,
    peer: &str,
    nonces: &mut Nonces,
    now_ms: u64,
) -> std::result::Result<Record, Refusal> {
    let url = req
        .request_uri()
        .ok_or((StatusCode::BadRequest, "no URL".to_string()))?;
    let name = url
        .path()
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string();
    let key = url
        .query_pairs()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.to_string());
    let tracks = sdp_tracks(req.body()).map_err(|e| (StatusCode::UnsupportedMediaType, e))?;
    let auth = req.header(&headers::AUTHORIZATION).map(|v| v.as_str());
    let push_auth = push_credentials(auth, key, nonces, now_ms)?;
    let opened = crate::core::control::open_push(&ctx.rundir, &name, peer, &push_auth);
    let path = opened.map_err(|e| match e {
        OpenError::Unauthorized(r) => (StatusCode::Unauthorized, r),
        e => (StatusCode::Forbidden, e.to_string()),
    })?;
    let attached = buffer::shmem::attach(&path, buffer::shmem::Mode::Push)
        .map_err(|e| (StatusCode::Forbidden, format!("{e:#}")))?;
    let n = tracks.len();
    Ok(Record {
        publisher: Publisher::new(PROTO, attached, ctx.rundir.clone(), &name, peer, push_auth),
        stream: name,
        ingest: RtpIngest::new(tracks, 1000),
        udp: (0..n).map(|_| None).collect(),
        stray: 0,
        foreign: 0,
    })
}

impl Record {
    /// An interleaved frame (or a datagram) on `channel`: RTP for a track, or its RTCP.
    /// Writes a new header first when a track got new init data.
    fn data(&mut self, channel: u8, bytes: &[u8], frames: &mut Vec<u8>, peer: &str) {
        let Some((i, is_rtcp)) = self.ingest.track_on(channel) else {
            // Data on a channel no SETUP named: dropped, and named once in the log.
            self.stray += 1;
            if self.stray == 1 {
                crate::log!(
                    PROTO,
                    "{peer}: {}: interleaved data on channel {channel}, which was never set up; ignored",
                    self.stream
                );
            }
            return;
        };
        if is_rtcp {
            self.ingest.rtcp(i, bytes);
            return;
        }
        match self.ingest.rtp(i, bytes, frames) {
            Ok(_) => {}
            Err(e) => {
                let t = &self.ingest.tracks[i];
                if t.depay.bad <= 3 {
                    crate::log!(PROTO, "{peer}: {}: track {}: {e}", self.stream, t.track.id);
                }
            }
        }
    }

    /// Waits for the encoder's next bytes (on the RTSP connection, or datagrams on a track's
    /// UDP sockets) and takes what came; false when the connection ended, or the encoder was
    /// silent for the session timeout (500 ms after TEARDOWN).
    fn wait(
        &mut self,
        sock: &mut TcpStream,
        chunk: &mut [u8],
        buf: &mut Vec<u8>,
        frames: &mut Vec<u8>,
        stopping: bool,
        peer: &str,
    ) -> Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let timeout = if stopping {
            500u16
        } else {
            (TIMEOUT_S * 1000).min(60_000) as u16
        };
        let ready = {
            let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            for (a, b, _) in self.udp.iter().flatten() {
                fds.push(PollFd::new(a.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
            }
            let n = poll(&mut fds, PollTimeout::from(timeout)).unwrap_or(0);
            n > 0
        };
        if !ready {
            return Ok(false);
        }
        // Datagrams first (they are older than what follows on the connection).
        let mut got = Vec::new();
        let mut foreign = Vec::new();
        for (t, udp) in self.ingest.tracks.iter().zip(&self.udp) {
            if let (Some((a, b, src)), Some(ch)) = (udp, t.channel) {
                // RTCP first: a sender report places the track's first RTP packets.
                for (s, c, rtcp) in [(b, ch.wrapping_add(1), true), (a, ch, false)] {
                    s.set_nonblocking(true)?;
                    while let Ok((n, from)) = s.recv_from(chunk) {
                        if udp_source_ok(src, from, rtcp) {
                            got.push((c, chunk[..n].to_vec()));
                        } else {
                            foreign.push(from);
                        }
                    }
                }
            }
        }
        for from in foreign {
            self.foreign += 1;
            if self.foreign == 1 {
                crate::log!(
                    PROTO,
                    "{peer}: {}: a datagram from {from}, which is not the publisher's RTP or RTCP port; dropped (and any more)",
                    self.stream
                );
            }
        }
        for (ch, bytes) in got {
            self.data(ch, &bytes, frames, peer);
        }
        loop {
            match sock.read(chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(false),
            }
        }
    }

    /// Receives until TEARDOWN or the connection ends.
    fn run(mut self, mut sock: TcpStream, mut buf: Vec<u8>, peer: &str) -> Result<()> {
        set_process_name("RTSP publish");
        crate::log!(PROTO, "{peer} publishes {}", self.stream);
        sock.set_read_timeout(Some(Duration::from_secs(TIMEOUT_S)))?;
        let mut frames = Vec::new();
        self.ingest.header(&mut frames);
        let mut chunk = vec![0u8; 64 << 10];
        let mut end = false;
        let mut stopping = false;
        let mut last = false;
        sock.set_nonblocking(true)?;
        while !end {
            ipc::sessions::update(Some(&sock), false);
            loop {
                match Message::<Vec<u8>>::parse(&buf) {
                    Ok((Message::Data(d), used)) => {
                        let ch = d.channel_id();
                        let bytes = d.as_slice().to_vec();
                        buf.drain(..used);
                        self.data(ch, &bytes, &mut frames, peer);
                    }
                    Ok((Message::Request(req), used)) => {
                        buf.drain(..used);
                        let stop = *req.method() == Method::Teardown;
                        let resp = response(
                            &req,
                            if stop
                                || matches!(
                                    req.method(),
                                    Method::GetParameter | Method::SetParameter | Method::Options
                                )
                            {
                                StatusCode::Ok
                            } else {
                                StatusCode::MethodNotValidInThisState
                            },
                        )
                        .build(Vec::new());
                        let mut out = Vec::new();
                        let _ = resp.write(&mut out);
                        sock.write_all(&out)?;
                        // Encoders may flush their last packets after TEARDOWN (ffmpeg's AAC
                        // packetizer does): read on until they close, briefly.
                        stopping |= stop;
                    }
                    Ok((_, used)) => {
                        buf.drain(..used);
                    }
                    Err(ParseError::Incomplete(_)) if buf.len() <= 1 << 20 => break,
                    Err(_) => {
                        crate::log!(
                            PROTO,
                            "{peer}: {}: malformed data from the encoder; closing",
                            self.stream
                        );
                        end = true;
                        break;
                    }
                }
            }
            if !frames.is_empty() {
                self.publisher.write(&frames)?;
                frames.clear();
            }
            if end || last {
                break;
            }
            // The bytes that came with the connection's end are parsed before stopping.
            last = !self
                .wait(&mut sock, &mut chunk, &mut buf, &mut frames, stopping, peer)
                .unwrap_or(false);
        }
        // The end: what the depacketizers and reorder windows still hold.
        let mut media = Vec::new();
        self.ingest.finish(&mut media);
        let _ = self.publisher.write(&media);
        if stopping {
            // TEARDOWN: the encoder meant to stop.
            self.publisher.finish();
        }
        let (lost, bad, skipped) = self.ingest.losses();
        crate::log!(
            PROTO,
            "{peer}: {} push ended ({lost} RTP packets lost, {bad} unreadable, {skipped} access units dropped, {} foreign datagrams dropped)",
            self.stream,
            self.foreign
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn npt_ranges() {
        assert_eq!(npt_start("npt=4.5-"), Some(4.5));
        assert_eq!(npt_start("npt=0.000-10.000"), Some(0.0));
        assert_eq!(npt_start(" npt=0:01:02.5-"), Some(62.5));
        assert_eq!(npt_start("npt=now-"), None);
        assert_eq!(npt_start("smpte=0:10:00-"), None);
        assert_eq!(npt_start("npt=-3-"), None);
    }

    #[test]
    fn only_the_publisher_may_send_udp() {
        let src = UdpSource {
            ip: "192.0.2.7".parse().unwrap(),
            rtp_port: 5000,
            rtcp_port: 5001,
        };
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(udp_source_ok(&src, at("192.0.2.7:5000"), false));
        assert!(udp_source_ok(&src, at("192.0.2.7:5001"), true));
        assert!(udp_source_ok(&src, at("[::ffff:192.0.2.7]:5000"), false));
        assert!(
            !udp_source_ok(&src, at("192.0.2.7:5001"), false),
            "RTCP port on RTP"
        );
        assert!(
            !udp_source_ok(&src, at("192.0.2.7:5000"), true),
            "RTP port on RTCP"
        );
        assert!(
            !udp_source_ok(&src, at("192.0.2.8:5000"), false),
            "another host"
        );
        assert!(
            !udp_source_ok(&src, at("192.0.2.7:6000"), false),
            "another port"
        );
        let v6 = UdpSource {
            ip: "::ffff:192.0.2.7".parse().unwrap(),
            ..src
        };
        assert!(udp_source_ok(&v6, at("192.0.2.7:5000"), false));
        assert!(!udp_source_ok(&v6, at("[2001:db8::7]:5000"), false));
    }

    #[test]
    fn record_transports() {
        let parse = |v: &str| {
            let req = Request::builder(Method::Setup, Version::V1_0)
                .request_uri(rtsp_types::Url::parse("rtsp://h/s/trackID=1").unwrap())
                .header(headers::CSEQ, "1")
                .header(headers::TRANSPORT, v)
                .empty();
            let ts = req.typed_header::<Transports>().ok().flatten();
            ts.map(|ts| {
                ts.iter()
                    .filter_map(|t| record_transport(t, 1))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            parse("RTP/AVP/TCP;unicast;interleaved=4-5;mode=record"),
            Some(vec![RecordTransport::Tcp(4)])
        );
        assert_eq!(
            parse("RTP/AVP/TCP;unicast;mode=record"),
            Some(vec![RecordTransport::Tcp(2)])
        );
        assert_eq!(
            parse("RTP/AVP;unicast;client_port=5000-5001;mode=record"),
            Some(vec![RecordTransport::Udp(5000, 5001)])
        );
        assert_eq!(
            parse("RTP/AVP;unicast;client_port=65535;mode=record"),
            Some(vec![RecordTransport::Udp(65535, 0)])
        );
        assert_eq!(parse("RTP/AVP;multicast"), Some(vec![]));
    }

    #[test]
    fn requests_are_read_without_io() {
        let req = "SETUP rtsp://h/live/my%20cam/trackID=2 RTSP/1.0\r\nCSeq: 3\r\n\
            Transport: RTP/AVP;unicast;client_port=5000-5001;mode=record\r\n\
            Authorization: Diges\u{e9}x\r\nRange: npt=1.5-\r\n\r\n";
        let (Some(v), used) = read_request(req.as_bytes()).unwrap() else {
            panic!("a request");
        };
        assert_eq!(used, req.len());
        assert_eq!(v.method, "SETUP");
        assert_eq!(v.stream.as_deref(), Some("my cam"));
        assert_eq!(v.track, Some(2));
        assert_eq!(v.transports, [RecordTransport::Udp(5000, 5001)]);
        assert_eq!(v.npt, Some(1.5));
        assert_eq!(v.auth, Some(Authorization::Unusable));
        let data = [b'$', 0, 0, 2, 0x80, 0];
        assert_eq!(read_request(&data), Ok((None, 6)));
        assert_eq!(read_request(b"OPTIONS rtsp://h/s RTSP/1.0\r\n"), Err(()));
    }

    fn digest_with(nonce: &str) -> String {
        format!(
            "Digest username=\"u\", realm=\"Sluice\", nonce=\"{nonce}\", uri=\"rtsp://h/s\", \
             response=\"0123456789abcdef0123456789abcdef\""
        )
    }

    #[test]
    fn announce_credentials_need_this_connections_fresh_nonce() {
        let mut n = Nonces::default();
        let ours = n.issue(1_000, [0x5a; rtsp_auth::NONCE_BYTES]);
        let cred = |n: &mut Nonces, h: &str, now| push_credentials(Some(h), None, n, now);
        // A nonce that holds ours as a substring, or a header that quotes ours elsewhere.
        for h in [
            digest_with(&format!("{ours}0")),
            digest_with(&format!("0{ours}")),
            format!("{}, opaque=\"nonce=\\\"{ours}\\\"\"", digest_with("x")),
        ] {
            let r = cred(&mut n, &h, 2_000).err().map(|r| (r.status, r.stale));
            assert_eq!(r, Some((StatusCode::Unauthorized, false)), "{h}");
        }
        match cred(&mut n, &digest_with(&ours), 2_000) {
            Ok(PushAuth::Digest { header, method }) => {
                assert_eq!((header, method.as_str()), (digest_with(&ours), "ANNOUNCE"));
            }
            _ => panic!("the connection's nonce in time"),
        }
        // Replayed on the same connection: used up.
        assert!(cred(&mut n, &digest_with(&ours), 2_001).is_err());
        // Too old: 401 with stale=true.
        let later = n.issue(10_000, [0x33; rtsp_auth::NONCE_BYTES]);
        let r = cred(
            &mut n,
            &digest_with(&later),
            10_000 + rtsp_auth::NONCE_LIFETIME_MS,
        );
        assert!(r.is_err_and(|r| r.stale && r.status == StatusCode::Unauthorized));
        // Another realm.
        let fresh = n.issue(20_000, [0x44; rtsp_auth::NONCE_BYTES]);
        let other = digest_with(&fresh).replace("Sluice", "Other");
        assert!(cred(&mut n, &other, 20_001).is_err());
        // Basic, a URL key, and a header that does not parse.
        assert!(matches!(
            cred(&mut n, "Basic dTpzZWNyZXQ=", 0),
            Ok(PushAuth::Key(Some(k))) if k == "secret"
        ));
        let url = push_credentials(Some("Digest \u{e9}"), Some("k".into()), &mut n, 0);
        assert!(matches!(url, Ok(PushAuth::Key(Some(k))) if k == "k"));
    }

    proptest! {
        #[test]
        fn npt_never_panics(s in "\\PC{0,40}") {
            if let Some(v) = npt_start(&s) {
                prop_assert!(v.is_finite() && v >= 0.0);
            }
        }
    }
}
