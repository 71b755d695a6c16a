//! RTSP record: an encoder's ANNOUNCE, SETUP (`mode=record`) and RECORD into a `push://`
//! stream, its credentials, and its RTP (interleaved or UDP from its own address) through
//! `dtsc::rtp::ingest` to the buffer.

use super::*;

/// What a connection that announced a stream holds until RECORD.
pub(super) struct Record {
    pub(super) stream: String,
    /// The buffer connection (replaced under the encoder if the buffer dies).
    pub(super) publisher: Publisher,
    pub(super) ingest: RtpIngest,
    /// Per track: our UDP sockets (RTP, RTCP) when it is pushed over UDP, and where its
    /// datagrams must come from; its channel then names it inside this connection.
    pub(super) udp: Vec<Option<(UdpSocket, UdpSocket, UdpSource)>>,
    /// Interleaved frames on channels no SETUP named.
    pub(super) stray: u64,
    /// Datagrams dropped because they did not come from the publisher ([`udp_source_ok`]).
    pub(super) foreign: u64,
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
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) why: String,
    pub(super) stale: bool,
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
pub(super) fn push_credentials(
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
pub(super) fn announce(
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
    fn data(&mut self, channel: u8, bytes: &[u8], peer: &str) {
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
        match self.ingest.rtp(i, bytes, &mut self.publisher) {
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
            self.data(ch, &bytes, peer);
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
    pub(super) fn run(mut self, mut sock: TcpStream, mut buf: Vec<u8>, peer: &str) -> Result<()> {
        set_process_name("RTSP publish");
        crate::log!(PROTO, "{peer} publishes {}", self.stream);
        sock.set_read_timeout(Some(Duration::from_secs(TIMEOUT_S)))?;
        self.ingest.header(&mut self.publisher);
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
                        self.data(ch, &bytes, peer);
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
            self.publisher.flush()?;
            if end || last {
                break;
            }
            // The bytes that came with the connection's end are parsed before stopping.
            last = !self
                .wait(&mut sock, &mut chunk, &mut buf, stopping, peer)
                .unwrap_or(false);
        }
        // The end: what the depacketizers and reorder windows still hold.
        self.ingest.finish(&mut self.publisher);
        let _ = self.publisher.flush();
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
