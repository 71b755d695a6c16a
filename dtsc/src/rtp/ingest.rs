//! Receiving RTP, sans-IO: the tracks of an SDP, and [`RtpIngest`], which turns the RTP and
//! RTCP of those tracks into DTSC packets for the buffer. Shared by the RTSP connector's
//! ANNOUNCE/RECORD (an encoder pushes) and the RTSP pull input (a camera is played).
//!
//! Each track's RTP goes through `crate::rtp::Depacketizer`; tracks are lined up by their RTCP
//! sender reports (RFC 3550 §6.4.1: NTP time against RTP timestamp); video, which RTP carries
//! with presentation times only, gets decode times from `crate::rtp::DtsFromPts` (five access
//! units held, decode times up to 200 ms ahead of presentation). Packets leave in decode
//! order across tracks, as the buffer needs them. No sockets and no clock: the caller passes
//! bytes in and writes the DTP2 frames it gets out.

use crate::rtp;
use crate::wire::FrameSink;
use crate::{Codec, PacketRef, Track};

/// Access units held per video track to give them decode times (`rtp::DtsFromPts`).
const REORDER_DEPTH: usize = 5;
/// Decode times of received video run this far ahead of presentation, ms: room for the largest
/// B-frame reorder delay (every time is at least 1 s, so none goes below 0).
pub const REORDER_DELAY_MS: u64 = 200;

/// Longest a received unit waits for the other set-up tracks to reach its decode time
/// before it is written anyway, ms of stream time: a track that stalls after sending
/// (a dead audio encoder) would otherwise hold every later unit of the others in memory.
/// Units of the stalled track that arrive later than this are then behind what was written.
pub const MAX_HOLD_MS: u64 = 5_000;

/// Most bytes of units waiting to be written in decode order; past it everything waiting
/// is written at once. 64 MiB is several seconds of the highest bitrates ingested.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// A presentation time this far behind the last one is a jump, not B-frame reordering, ms.
pub const JUMP_BACK_MS: i64 = 1000;
/// A presentation time this far ahead of the last one is a jump, not a gap in sending, ms.
pub const JUMP_AHEAD_MS: i64 = 10_000;

/// One frame of `track` in ms: from its frame rate (video, 40 when unknown), 1024 samples
/// (AAC, MP3), or G.711's usual 20 ms packet.
fn frame_ms(track: &Track) -> u64 {
    match track.kind {
        crate::TrackKind::Video if track.fpks > 0 => (1_000_000 / u64::from(track.fpks)).max(1),
        crate::TrackKind::Audio if matches!(track.codec, Codec::Alaw | Codec::Ulaw) => 20,
        crate::TrackKind::Audio if track.rate > 0 => (1024 * 1000 / u64::from(track.rate)).max(1),
        _ => 40,
    }
}

/// One track of an SDP that is received.
#[derive(Debug)]
pub struct RecvTrack {
    /// The track as the buffer gets it (id, codec, init data).
    pub track: Track,
    /// The media's `a=control` (a URL, or a path relative to the session's).
    pub control: String,
    clock: u32,
    /// The track's depacketizer (its loss counters are the track's).
    pub depay: rtp::Depacketizer,
    reorder: Option<rtp::DtsFromPts>,
    /// The channel that names the track on its connection (the interleaved RTP channel;
    /// RTCP is the next), once set up.
    pub channel: Option<u8>,
    /// RTP timestamp of the first unit and its time in the stream (ms).
    zero: Option<(u64, u64)>,
    /// The last sender report: (NTP time in ms, RTP timestamp).
    sr: Option<(u64, u32)>,
    /// DTS of the last packet this track produced.
    last_dts: Option<u64>,
    /// Presentation time (ms) of the last unit, for spotting timestamp jumps.
    last_pts: Option<u64>,
    /// Times the sender's RTP timestamps jumped and the track was re-based.
    pub jumps: u64,
    /// Packets this track produced.
    pub units: u64,
    /// The depacketizer's parameter set version the init data was last built from.
    sets_seen: u64,
}

/// The tracks of an SDP (an ANNOUNCE's, or a DESCRIBE answer's) (RFC 4566 with the payload formats of `crate::rtp`):
/// codec and clock from `a=rtpmap`, init data from `a=fmtp` (H.264 `sprop-parameter-sets`,
/// HEVC `sprop-vps/sps/pps`, AAC `config`; G.711 by its static payload type alone), the
/// control URL from `a=control`. Media of other
/// formats are left out; `Err` names why the SDP is unusable.
pub fn sdp_tracks(sdp: &[u8]) -> std::result::Result<Vec<RecvTrack>, String> {
    // sdp-types 0.1.8 panics (an assertion) when a malformed line is followed by more
    // lines: every line is checked for `x=` form first.
    for (n, line) in sdp.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() && line.iter().position(|&b| b == b'=') != Some(1) {
            return Err(format!("SDP: line {} is not in key=value form", n + 1));
        }
    }
    let session = sdp_types::Session::parse(sdp).map_err(|e| format!("SDP: {e:?}"))?;
    let mut out = Vec::new();
    for (i, m) in session.medias.iter().enumerate() {
        let attr = |n: &str| {
            m.get_first_attribute_value(n)
                .ok()
                .flatten()
                .map(str::to_string)
        };
        // Static payload types need no rtpmap (RFC 3551 §6): G.711 at 8 kHz mono.
        let rtpmap = match (attr("rtpmap"), m.fmt.trim()) {
            (Some(r), _) => r,
            (None, "0") => "0 PCMU/8000".to_string(),
            (None, "8") => "8 PCMA/8000".to_string(),
            _ => continue,
        };
        let enc = rtpmap.split_whitespace().nth(1).unwrap_or("");
        let mut parts = enc.split('/');
        let name = parts.next().unwrap_or("").to_ascii_uppercase();
        let clock: u32 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(90_000);
        let channels: u32 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        let fmtp = attr("fmtp").unwrap_or_default();
        let param = |k: &str| {
            fmtp.split_once(' ')
                .map(|x| x.1)
                .unwrap_or("")
                .split(';')
                .find_map(|kv| {
                    let (a, b) = kv.trim().split_once('=')?;
                    a.eq_ignore_ascii_case(k).then(|| b.trim().to_string())
                })
        };
        let id = out.len() as u32 + 1;
        let unb64 = rtp::base64_decode;
        let (kind, codec) = match name.as_str() {
            "H264" => (crate::TrackKind::Video, Codec::H264),
            "H265" => (crate::TrackKind::Video, Codec::Hevc),
            "MPEG4-GENERIC" => (crate::TrackKind::Audio, Codec::Aac),
            "MPA" => (crate::TrackKind::Audio, Codec::Mp3),
            "PCMA" => (crate::TrackKind::Audio, Codec::Alaw),
            "PCMU" => (crate::TrackKind::Audio, Codec::Ulaw),
            _ => continue,
        };
        let mut track = Track::new(id, kind, codec.clone());
        let mut depay_bits = (13, 3);
        match codec {
            Codec::H264 => {
                let sets: Vec<Vec<u8>> = param("sprop-parameter-sets")
                    .map(|v| v.split(',').filter_map(unb64).collect())
                    .unwrap_or_default();
                let sps = sets
                    .iter()
                    .find(|s| crate::h264::nal_type(s) == Some(crate::h264::NAL_SPS));
                let pps = sets
                    .iter()
                    .find(|s| crate::h264::nal_type(s) == Some(crate::h264::NAL_PPS));
                if let (Some(sps), Some(pps)) = (sps, pps) {
                    set_avc(&mut track, sps, pps);
                }
            }
            Codec::Hevc => {
                let one = |k: &str| param(k).and_then(|v| v.split(',').next().and_then(unb64));
                if let (Some(v), Some(s), Some(p)) =
                    (one("sprop-vps"), one("sprop-sps"), one("sprop-pps"))
                {
                    set_hevc(&mut track, &v, &s, &p);
                }
            }
            Codec::Aac => {
                let hex = param("config").unwrap_or_default();
                track.init = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect();
                track.rate = clock;
                track.channels = channels;
                track.bits = 16;
                if let Ok(asc) = crate::aac::parse_asc(&track.init) {
                    track.rate = asc.sample_rate;
                    track.channels = u32::from(asc.channels).max(1);
                }
                let num = |k: &str, d: u32| param(k).and_then(|v| v.parse().ok()).unwrap_or(d);
                depay_bits = (num("sizelength", 13), num("indexlength", 3));
            }
            Codec::Alaw | Codec::Ulaw => {
                track.rate = clock;
                track.channels = channels;
                track.bits = 8;
            }
            _ => {
                track.rate = 44_100;
                track.channels = 2;
            }
        }
        out.push(RecvTrack {
            control: attr("control").unwrap_or_else(|| format!("streamid={i}")),
            clock: clock.max(1),
            depay: rtp::Depacketizer::new(codec, depay_bits),
            reorder: (kind == crate::TrackKind::Video)
                .then(|| rtp::DtsFromPts::new(REORDER_DEPTH, REORDER_DELAY_MS)),
            track,
            channel: None,
            zero: None,
            sr: None,
            last_dts: None,
            last_pts: None,
            jumps: 0,
            units: 0,
            sets_seen: 0,
        });
    }
    if out.is_empty() {
        return Err(
            "no track in a format Sluice reads (H264, H265, MPEG4-GENERIC, MPA, PCMA, PCMU)".into(),
        );
    }
    Ok(out)
}

fn set_avc(track: &mut Track, sps: &[u8], pps: &[u8]) -> bool {
    let Ok(cfg) = crate::h264::AvcConfig::from_parameter_sets(sps, pps) else {
        return false;
    };
    let mut init = Vec::new();
    if crate::h264::write_avcc(&cfg, &mut init).is_err() || init == track.init {
        return false;
    }
    if let Ok(info) = crate::h264::parse_sps(sps) {
        track.width = info.width;
        track.height = info.height;
        track.fpks = info.fpks().unwrap_or(track.fpks);
    }
    track.init = init;
    true
}

fn set_hevc(track: &mut Track, vps: &[u8], sps: &[u8], pps: &[u8]) -> bool {
    let Ok(init) = crate::hevc::build_hvcc(&[vps.to_vec()], &[sps.to_vec()], &[pps.to_vec()])
    else {
        return false;
    };
    if init == track.init {
        return false;
    }
    if let Ok(info) = crate::hevc::parse_sps(sps) {
        track.width = info.width;
        track.height = info.height;
        track.fpks = info.fpks().unwrap_or(track.fpks);
    }
    track.init = init;
    true
}

/// Moves the complete units of `t` to `queue`; true when `t` got new init data from in-band
/// parameter sets. A track's first unit is placed by its sender report against `base` (the
/// first placed unit of the session), `start` ms into the stream.
fn drain(t: &mut RecvTrack, queue: &mut Vec<Unit>, base: &mut Option<u64>, start: u64) -> bool {
    let mut changed = false;
    while let Some(u) = t.depay.poll() {
        let zero = *t.zero.get_or_insert_with(|| {
            // The track's first unit, placed by its sender report when there is one.
            let at = match t.sr {
                Some((ntp, sr_ts)) => {
                    let d = (u.timestamp as u32).wrapping_sub(sr_ts) as i32;
                    (ntp as i64 + i64::from(d) * 1000 / i64::from(t.clock)).max(0) as u64
                }
                None => 0,
            };
            let b = *base.get_or_insert(at);
            (u.timestamp, (at + start).saturating_sub(b))
        });
        let mut pts =
            zero.1 as i64 + (u.timestamp as i64 - zero.0 as i64) * 1000 / i64::from(t.clock);
        // A sender whose timestamps jump (a camera that restarted its encoder, a server
        // that re-based them) would send times backwards or far ahead: the track is
        // re-based so that this unit follows the last one by a frame.
        if let Some(last) = t.last_pts {
            if pts + JUMP_BACK_MS < last as i64 || pts > last as i64 + JUMP_AHEAD_MS {
                let frame = frame_ms(&t.track);
                t.zero = Some((u.timestamp, last + frame));
                pts = (last + frame) as i64;
                t.jumps += 1;
            }
        }
        let pts = pts.max(0) as u64;
        t.last_pts = Some(pts);
        // New in-band parameter sets (a camera that changed resolution): new init data.
        if t.depay.sets_version() != t.sets_seen {
            t.sets_seen = t.depay.sets_version();
            let sets = t.depay.parameter_sets();
            let f = |k: u8| sets.iter().find(|(t, _)| *t == k).map(|x| x.1.clone());
            changed |= match t.track.codec {
                Codec::H264 => match (f(crate::h264::NAL_SPS), f(crate::h264::NAL_PPS)) {
                    (Some(s), Some(p)) => set_avc(&mut t.track, &s, &p),
                    _ => false,
                },
                Codec::Hevc => match (
                    f(crate::hevc::NAL_VPS),
                    f(crate::hevc::NAL_SPS),
                    f(crate::hevc::NAL_PPS),
                ) {
                    (Some(v), Some(s), Some(p)) => set_hevc(&mut t.track, &v, &s, &p),
                    _ => false,
                },
                _ => false,
            };
        }
        let out = match &mut t.reorder {
            Some(r) => r.push(pts, u.keyframe, u.data),
            None => vec![(pts, 0, true, u.data)],
        };
        queue_units(t, out, queue);
    }
    changed
}

/// A packet waiting to be written in DTS order: (DTS, track, offset, keyframe, payload).
type Unit = (u64, u32, i64, bool, Vec<u8>);

fn queue_units(t: &mut RecvTrack, units: Vec<(u64, i64, bool, Vec<u8>)>, queue: &mut Vec<Unit>) {
    for (dts, offset, keyframe, data) in units {
        t.last_dts = Some(dts);
        t.units += 1;
        queue.push((dts, t.track.id, offset, keyframe, data));
    }
}

/// Writes the queued packets up to DTS `upto` (all with `None`) to `frames`, in DTS order:
/// the buffer's packet order must follow decode time across tracks (a keyframe opens the
/// window, and audio queued before it would fall outside).
fn release(queue: &mut Vec<Unit>, upto: Option<u64>, frames: &mut impl FrameSink) {
    queue.sort_by_key(|u| (u.0, u.1));
    let n = match upto {
        Some(w) => queue.iter().take_while(|u| u.0 <= w).count(),
        None => queue.len(),
    };
    for (dts, track, offset, keyframe, data) in queue.drain(..n) {
        let p = PacketRef {
            track,
            dts,
            offset,
            keyframe,
            bpos: 0,
            data: &data,
        };
        frames.packet(&p);
    }
}

/// NTP time (64-bit fixed point) in ms.
fn ntp_ms(ntp: u64) -> u64 {
    (ntp >> 32) * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32)
}

/// The receiving side of one RTP session: its tracks, and the packets waiting to be written
/// in decode order.
pub struct RtpIngest {
    /// The tracks, as the SDP named them.
    pub tracks: Vec<RecvTrack>,
    queue: Vec<Unit>,
    base: Option<u64>,
    start: u64,
}

impl RtpIngest {
    /// A session whose first packet is placed `start_ms` into the stream (at least 1000, so
    /// that decode times made from presentation times stay positive). A reconnecting pull
    /// passes the last DTS it wrote plus a frame, so that times run on across sessions.
    pub fn new(tracks: Vec<RecvTrack>, start_ms: u64) -> RtpIngest {
        RtpIngest {
            tracks,
            queue: Vec::new(),
            base: None,
            start: start_ms.max(1000),
        }
    }

    /// The track set up on `channel` (RTP) or `channel - 1` (its RTCP): (index, is RTCP).
    pub fn track_on(&self, channel: u8) -> Option<(usize, bool)> {
        if let Some(i) = self.tracks.iter().position(|t| t.channel == Some(channel)) {
            return Some((i, false));
        }
        let i = self
            .tracks
            .iter()
            .position(|t| t.channel.map(|c| c.wrapping_add(1)) == Some(channel))?;
        Some((i, true))
    }

    /// An RTCP compound packet for track `i`: a sender report (RFC 3550 §6.4.1) gives the
    /// track's NTP/RTP time mapping, so that tracks line up. Other reports are ignored.
    pub fn rtcp(&mut self, i: usize, bytes: &[u8]) {
        let Some(t) = self.tracks.get_mut(i) else {
            return;
        };
        if bytes.len() >= 20 && bytes[1] == 200 {
            let ntp = u64::from_be_bytes(bytes[8..16].try_into().unwrap_or_default());
            let ts = u32::from_be_bytes(bytes[16..20].try_into().unwrap_or_default());
            t.sr = Some((ntp_ms(ntp), ts));
        }
    }

    /// An RTP packet of track `i`: its complete units are queued, and what every set-up
    /// track has reached is written to `frames` as DTP2 packets, after a new DTSC header when
    /// the track got new init data from in-band parameter sets (then `Ok(true)`); `Err` when
    /// the packet was unusable (the depacketizer counted it).
    pub fn rtp(
        &mut self,
        i: usize,
        bytes: &[u8],
        frames: &mut impl FrameSink,
    ) -> Result<bool, rtp::RtpError> {
        let Some(t) = self.tracks.get_mut(i) else {
            return Ok(false);
        };
        let r = t.depay.push(bytes);
        let changed = drain(t, &mut self.queue, &mut self.base, self.start);
        if changed {
            // New init data: the header goes before the packets made with it.
            self.header(frames);
        }
        // Every set-up track has reached at least this DTS: what is queued up to it can go.
        // A track that sends nothing holds the rest back for at most 2 s.
        let reached = self
            .tracks
            .iter()
            .filter(|t| t.channel.is_some())
            .map(|t| t.last_dts)
            .collect::<Option<Vec<u64>>>();
        let newest = self.queue.iter().map(|u| u.0).max().unwrap_or(0);
        let queued: usize = self.queue.iter().map(|u| u.4.len()).sum();
        let upto = match reached {
            Some(r) => r.into_iter().min(),
            None => Some(newest.saturating_sub(2000)),
        }
        .map(|u| u.max(newest.saturating_sub(MAX_HOLD_MS)))
        .filter(|_| queued <= MAX_QUEUED_BYTES);
        release(&mut self.queue, upto, frames);
        r.map(|_| changed)
    }

    /// The DTSC header of the tracks, handed to `out`.
    pub fn header(&self, out: &mut impl FrameSink) {
        let h = crate::wire::Header {
            live: true,
            unixzero: None,
            tracks: self.tracks.iter().map(|t| t.track.clone()).collect(),
        };
        out.header(&h);
    }

    /// What the depacketizers and reorder windows still hold, written to `frames`: at the
    /// end of the session, or when the sender went quiet (the session may then go on).
    pub fn finish(&mut self, frames: &mut impl FrameSink) {
        for t in &mut self.tracks {
            t.depay.flush();
            drain(t, &mut self.queue, &mut self.base, self.start);
            if let Some(r) = &mut t.reorder {
                let rest = r.flush();
                queue_units(t, rest, &mut self.queue);
            }
        }
        release(&mut self.queue, None, frames);
    }

    /// The largest DTS written so far (ms), if any.
    pub fn last_dts(&self) -> Option<u64> {
        self.tracks.iter().filter_map(|t| t.last_dts).max()
    }

    /// Timestamp jumps the tracks were re-based over.
    pub fn jumps(&self) -> u64 {
        self.tracks.iter().map(|t| t.jumps).sum()
    }

    /// RTP packets lost, packets unreadable, and access units dropped, over all tracks.
    pub fn losses(&self) -> (u64, u64, u64) {
        self.tracks.iter().fold((0, 0, 0), |a, t| {
            (a.0 + t.depay.lost, a.1 + t.depay.bad, a.2 + t.depay.skipped)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LADdoFB+wE,aOvjyyI=\r\na=control:trackID=1\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/1\r\n\
        a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1188;sizelength=13;indexlength=3\r\na=control:trackID=2\r\n\
        m=audio 0 RTP/AVP 8\r\na=rtpmap:8 OPUS/48000/2\r\n";

    #[test]
    fn sdp_tracks_with_their_init_data() {
        let t = sdp_tracks(SDP.as_bytes()).unwrap();
        assert_eq!(t.len(), 2, "the Opus medium is left out");
        assert_eq!((t[0].track.width, t[0].track.height), (320, 240));
        assert_eq!(t[0].control, "trackID=1");
        assert_eq!((t[1].track.rate, t[1].track.channels), (48000, 1));
        assert_eq!(t[1].track.init, [0x11, 0x88]);
        // A malformed line before more lines (sdp-types asserts on it) is an error.
        let bad = "v=0\r\nm=video 0 RTP/AVP 96\r\nnot a line\r\nv=0\r\n";
        assert!(sdp_tracks(bad.as_bytes()).unwrap_err().contains("line 3"));
    }

    #[test]
    fn timestamp_jumps_are_rebased() {
        let mut ing = RtpIngest::new(sdp_tracks(SDP.as_bytes()).unwrap(), 1000);
        ing.tracks[1].channel = Some(2);
        let mut p = rtp::Packetizer::new(&ing.tracks[1].track, 97, 7, 0, 0).unwrap();
        let mut frames = Vec::new();
        // 48 kHz AAC: frames at 0, 21, 42 ms, then the sender jumps an hour ahead, then on.
        for ms in [0u64, 21, 42, 3_600_000, 3_600_021] {
            let data = [1u8, 2, 3];
            let pr = PacketRef {
                track: 2,
                dts: ms,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: &data,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            ing.rtp(1, &out[spans[0].clone()], &mut frames).unwrap();
        }
        ing.finish(&mut frames);
        let mut dts = Vec::new();
        let mut at = 0;
        while let Some((f, used)) = crate::wire::parse_frame(&frames[at..]).unwrap() {
            if let crate::wire::Frame::Packet(p) = f {
                dts.push(p.dts);
            }
            at += used;
        }
        assert_eq!(ing.jumps(), 1);
        assert_eq!(dts, [1000, 1021, 1042, 1063, 1084]);
    }

    /// A track that sent once and went silent no longer holds the others' units: what
    /// waits stays within [`MAX_HOLD_MS`].
    #[test]
    fn a_stalled_track_holds_at_most_a_few_seconds() {
        let mut ing = RtpIngest::new(sdp_tracks(SDP.as_bytes()).unwrap(), 1000);
        ing.tracks[0].channel = Some(0);
        ing.tracks[1].channel = Some(2);
        let mut frames = Vec::new();
        // One AAC frame on track 2, then silence there.
        let mut p = rtp::Packetizer::new(&ing.tracks[1].track, 97, 7, 0, 0).unwrap();
        let data = [1u8, 2, 3];
        let pr = PacketRef {
            track: 2,
            dts: 0,
            offset: 0,
            keyframe: true,
            bpos: 0,
            data: &data,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        ing.rtp(1, &out[spans[0].clone()], &mut frames).unwrap();
        // Then 60 s of 25 fps video (IDR slices, 90 kHz).
        for i in 0..1500u32 {
            let pkt = single(i as u16, i * 3600, true, &[0x65, 0x88, 0x84]);
            ing.rtp(0, &pkt, &mut frames).unwrap();
            let waiting = ing.queue.len();
            assert!(waiting <= 140, "{waiting} units waiting at frame {i}");
        }
        assert!(!frames.is_empty());
    }

    /// An RTP packet of one NAL unit (RFC 6184 §5.6).
    fn single(seq: u16, ts: u32, marker: bool, nal: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(nal);
        p
    }

    #[test]
    fn a_camera_that_changes_resolution_gives_new_init_data() {
        // The SDP's parameter sets say 320x240; the stream then sends a 640x360 SPS.
        let mut ing = RtpIngest::new(sdp_tracks(SDP.as_bytes()).unwrap(), 1000);
        ing.tracks[0].channel = Some(0);
        let before = ing.tracks[0].track.init.clone();
        let sps_640: [u8; 25] = [
            0x67, 0x64, 0x00, 0x1E, 0xAC, 0xD9, 0x40, 0xA0, 0x2F, 0xF9, 0x61, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0F, 0x16, 0x2D, 0x96,
        ];
        let pps = [0x68, 0xEB, 0xE3, 0xCB, 0x22];
        let mut frames = Vec::new();
        assert!(!ing
            .rtp(0, &single(1, 0, false, &[0x65, 0x88, 0x80]), &mut frames)
            .unwrap());
        assert_eq!(ing.tracks[0].track.width, 320);
        ing.rtp(0, &single(2, 0, true, &[0x65, 0x88, 0x81]), &mut frames)
            .unwrap();
        let mut changed = false;
        for (i, nal) in [&sps_640[..], &pps[..], &[0x65, 0x88, 0x82][..]]
            .iter()
            .enumerate()
        {
            changed |= ing
                .rtp(0, &single(3 + i as u16, 3600, i == 2, nal), &mut frames)
                .unwrap();
        }
        // The new sets show when the unit they came with completes.
        changed |= ing
            .rtp(0, &single(6, 7200, true, &[0x41, 0x9a]), &mut frames)
            .unwrap();
        assert!(changed, "no new init data");
        let t = &ing.tracks[0].track;
        assert_eq!((t.width, t.height), (640, 360));
        assert_ne!(t.init, before);
        let cfg = crate::h264::parse_avcc(&t.init).unwrap();
        assert_eq!(cfg.sps[0], sps_640);
    }

    proptest! {
        #[test]
        fn any_sdp_never_panics(lines in proptest::collection::vec("[a-z =/:0-9A-Z;-]{0,30}", 0..12)) {
            let sdp = format!("v=0\r\n{}", lines.join("\r\n"));
            let _ = sdp_tracks(sdp.as_bytes());
        }
    }
}
