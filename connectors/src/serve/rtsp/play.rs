//! RTSP play: RTP out of the shared pages (one packetizer per track, RFC 3550, RFC 6184,
//! RFC 7798, RFC 3640), interleaved or over UDP, with RTCP sender reports, paced, through
//! the shared streaming loop; also what an RTSP push out sends after RECORD.

use super::*;

/// Streams the set-up tracks until the stream ends or the client leaves.
pub(super) fn play(
    mut sock: TcpStream,
    mut st: State,
    response: Vec<u8>,
    peer: &str,
) -> Result<()> {
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
pub(super) struct RtspPlay {
    pub(super) setups: Vec<Setup>,
    pub(super) rtp: Vec<u8>,
    pub(super) spans: PacketSpans,
    /// Client bytes not parsed yet (requests and interleaved RTCP).
    pub(super) input: Vec<u8>,
    /// Responses to requests made while playing.
    pub(super) replies: Vec<u8>,
    pub(super) session: String,
    pub(super) stop: bool,
    /// A stored (ended) stream is sent at real time, as RTSP clients expect: over UDP, sent
    /// at once it would overflow the socket buffers and be lost, and clients time packets by
    /// their arrival.
    pub(super) paced: bool,
    /// Wall clock and DTS (ms) of the first packet, for pacing.
    pub(super) clock: Option<(Instant, u64)>,
    /// PAUSE received: nothing is sent until the next PLAY.
    pub(super) paused: bool,
    /// The stream ended and each track said BYE: PLAY and PAUSE no longer apply.
    pub(super) ended: bool,
    /// Unix ms of the stream's DTS 0 (the buffer's `unixzero`), for live sender reports.
    pub(super) unixzero: i64,
}

/// How far ahead of real time a paced stream is sent, ms (clients buffer more than that).
pub(super) const PACE_LEAD_MS: u64 = 300;

/// NTP time of now (RFC 3550 §4): seconds since 1900 in the high 32 bits.
pub(super) fn ntp_now() -> (u64, u64) {
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
pub(super) fn send_report(s: &Setup, ntp: u64, media: u64, bye: bool, out: &mut Vec<u8>) {
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
pub(super) const END_LINGER: Duration = Duration::from_secs(10);

/// After the stream ended (each track said BYE) the session stays until the client's
/// TEARDOWN (RFC 2326 §10.7), the client closes the connection, or [`END_LINGER`] passes,
/// answering keep-alives meanwhile. A server that closes first races the client's BYE
/// handling: GStreamer's rtspsrc then reconnects and may report an error instead of the end.
pub(super) fn linger(sock: &mut TcpStream, out: &mut RtspPlay) -> Result<()> {
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
