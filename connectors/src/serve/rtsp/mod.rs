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

mod play;
mod record;
mod sdp;

pub use play::stream_out;
use play::*;
use record::*;
pub use record::{record_transport, udp_source_ok, RecordTransport, UdpSource};
pub use sdp::sdp_of;
use sdp::*;

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
