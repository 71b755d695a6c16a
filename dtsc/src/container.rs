//! One container session in, DTSC frames out, on a timeline that goes on across sessions:
//! what a pull input does with the bytes of its upstream (MPEG-TS, FLV, DTSC frames or
//! fragmented MP4), sans-IO. A reconnect, a new HLS segment or a restarted sender continues
//! the stream its viewers see with increasing timestamps (`connectors::ingest::stream_pull`
//! owns the sockets).

use crate::flv::{self, FlvIngest, IngestEvent};
use crate::tsdemux::{TsDemuxer, TsEvent};
use crate::wire::{self, Header};
use crate::PacketRef;

/// The container a pull reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MPEG-TS (ISO/IEC 13818-1), 188-byte packets.
    Ts,
    /// FLV (FLV spec v10.1 Annex E): the file header, then tags.
    Flv,
    /// DTSC frames (`docs/DTSC.md`): a `DTSC` header, then `DTP2` packets,
    /// as a Sluice or MistServer DTSC connector sends them after `play`.
    Dtsc,
    /// Fragmented MP4 (ISO/IEC 14496-12 §8.8): HLS segments after an `#EXT-X-MAP` init
    /// segment ([`ContainerDemux::set_init`]); each [`ContainerDemux::push`] is one whole
    /// media segment.
    Fmp4,
}

/// What a pull carries from one session to the next: where its timeline is and, for DTSC,
/// which upstream timeline it followed (the header's `unixzero`, the Unix ms of the
/// upstream's DTS 0) and how far, so that a reconnect to the same upstream buffer goes on
/// exactly where it was instead of repeating the upstream's newest GOP.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Placed DTS of the newest packet written, ms (0: nothing yet).
    pub last: u64,
    /// Placed DTS minus source DTS of the last session.
    offset: Option<i64>,
    /// The last session's upstream `unixzero` (DTSC only).
    unixzero: Option<i64>,
    /// Per track, the newest source DTS written.
    last_src: Vec<(u32, u64)>,
}

impl Timeline {
    /// A timeline that goes on after `last` ms (a restarted pull process continues its
    /// buffer's stream).
    pub fn after(last: u64) -> Timeline {
        Timeline {
            last,
            ..Timeline::default()
        }
    }
}

/// Bytes of one container session in, DTSC frames out (a `DTSC` header whenever the tracks
/// change, then `DTP2` packets), with every DTS placed after the timeline's `last` ms: the
/// first packet at `last + 40` (1000 for the first session of a pull), the others at the same
/// distance from it as in the source; a packet that would land at or before `last` (audio
/// that starts before the video of a TS) is moved just after it. A DTSC session from the same
/// upstream timeline as the last one (the same `unixzero`, within 1 s) keeps the last
/// session's placement instead, and skips per track what was written already.
pub struct ContainerDemux {
    container: Container,
    /// FLV: bytes not parsed yet; `flv_body` once the file header was read.
    pending: Vec<u8>,
    flv_body: bool,
    flv: FlvIngest,
    ts: TsDemuxer,
    events: Vec<TsEvent>,
    /// The timeline as the session started.
    prev: Timeline,
    /// This session follows the last one's upstream timeline.
    same: bool,
    offset: Option<i64>,
    unixzero: Option<i64>,
    last_src: Vec<(u32, u64)>,
    /// Packets the caller has sent on (see [`ContainerDemux::commit`]).
    committed: u64,
    /// Packets skipped because the last session had written them.
    pub repeated: u64,
    /// The first DTS written, ms.
    first: Option<u64>,
    /// The newest DTS written, ms (`after` until a packet was).
    pub last: u64,
    /// Packets written.
    pub packets: u64,
    /// What the demuxer skipped and the caller should log ([`ContainerDemux::take_notes`]).
    notes: Vec<String>,
    /// FLV tags that could not be used (named by the error), for the stats.
    pub bad_tags: u64,
    /// Fragmented MP4: the init segment's tracks; `fmp4_header` while their header is
    /// still to be written.
    fmp4: Option<crate::mp4demux::Fragmented>,
    fmp4_header: bool,
}

/// Why a container session cannot go on: what was wrong and where, in the upstream's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// The fMP4 init segment does not read.
    #[error("the init segment: {0}")]
    Init(String),
    /// A media segment came before any init segment.
    #[error("a media segment before its init segment")]
    NoInit,
    /// An fMP4 media segment does not read.
    #[error("a media segment: {0}")]
    Segment(String),
    /// A DTSC header that does not read.
    #[error("header: {0}")]
    Header(String),
    /// The upstream DTSC connector answered `error`.
    #[error("the upstream refused: {0}")]
    Refused(String),
    /// Bytes that are not DTSC, at this offset of the session's pending input.
    #[error("DTSC at byte {at}: {why}")]
    Dtsc {
        /// Byte offset.
        at: usize,
        /// What is wrong.
        why: String,
    },
    /// An FLV tag announced larger than the demuxer waits for.
    #[error("an FLV tag over {0} bytes")]
    FlvTooLarge(usize),
    /// Not an FLV file header.
    #[error("not FLV: {0}")]
    NotFlv(String),
    /// A broken FLV tag at this offset.
    #[error("FLV tag at byte {at}: {why}")]
    Flv {
        /// Byte offset.
        at: usize,
        /// What is wrong.
        why: String,
    },
}

/// Most bytes of an FLV tag waited for (a larger announced size is garbage).
const MAX_PENDING: usize = 16 << 20;

impl ContainerDemux {
    /// Packets the caller has sent on so far ([`ContainerDemux::commit`]).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// What the demuxer skipped since the last call (an elementary stream of a type it
    /// cannot read, by PID), for the caller's log.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// A demuxer for one session going on from `prev`.
    pub fn new(container: Container, prev: Timeline) -> ContainerDemux {
        let after = prev.last;
        ContainerDemux {
            container,
            pending: Vec::new(),
            flv_body: false,
            flv: FlvIngest::new(),
            ts: TsDemuxer::new(),
            events: Vec::new(),
            last_src: prev.last_src.clone(),
            prev,
            same: false,
            offset: None,
            unixzero: None,
            committed: 0,
            repeated: 0,
            first: None,
            last: after,
            packets: 0,
            bad_tags: 0,
            fmp4: None,
            fmp4_header: false,
            notes: Vec::new(),
        }
    }

    /// Switches to fragmented MP4 with an initialization segment (`ftyp` + `moov`, HLS's
    /// `#EXT-X-MAP`); the tracks' header goes out before the next segment's packets when
    /// they differ from the last init segment's. Errors: not an init segment Sluice can
    /// read (no `moov`, no track it carries).
    pub fn set_init(&mut self, init: &[u8]) -> std::result::Result<(), DemuxError> {
        let f = crate::mp4demux::Fragmented::read_init(init)
            .map_err(|e| DemuxError::Init(e.to_string()))?;
        if self.fmp4.as_ref().is_none_or(|old| old.tracks != f.tracks) {
            self.fmp4_header = true;
        }
        self.fmp4 = Some(f);
        self.container = Container::Fmp4;
        Ok(())
    }

    /// Takes `bytes` of the container and appends the DTSC frames they complete to
    /// `frames`. Errors: the bytes are not of this container (an FLV without its signature,
    /// a tag that cannot be framed); the session should end. TS garbage is skipped to the
    /// next sync byte instead (counted in the demuxer's stats).
    pub fn push(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<(), DemuxError> {
        match self.container {
            Container::Ts => {
                self.ts.push(bytes, &mut self.events);
                self.drain_ts(frames);
                Ok(())
            }
            Container::Flv => {
                self.pending.extend_from_slice(bytes);
                self.drain_flv(frames)
            }
            Container::Dtsc => {
                self.pending.extend_from_slice(bytes);
                self.drain_dtsc(frames)
            }
            Container::Fmp4 => self.fmp4_segment(bytes, frames),
        }
    }

    /// One whole fragmented-MP4 media segment.
    fn fmp4_segment(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<(), DemuxError> {
        let Some(f) = &self.fmp4 else {
            return Err(DemuxError::NoInit);
        };
        let mut packets = Vec::new();
        f.read_segment(&bytes::Bytes::copy_from_slice(bytes), &mut packets)
            .map_err(|e| DemuxError::Segment(e.to_string()))?;
        if std::mem::take(&mut self.fmp4_header) {
            Self::header(&f.tracks, frames);
        }
        for p in &packets {
            if let Some(dts) = self.place(p.track, p.dts) {
                wire::write_packet(&PacketRef { dts, ..p.as_ref() }, frames);
                self.packets += 1;
            }
        }
        Ok(())
    }

    fn drain_dtsc(&mut self, frames: &mut Vec<u8>) -> std::result::Result<(), DemuxError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.dtsc_frames(&pending, frames);
        pending.drain(..r.as_ref().map_or(0, |&n| n));
        self.pending = pending;
        r.map(|_| ())
    }

    /// Writes the whole frames at the start of `bytes`; returns the bytes used.
    fn dtsc_frames(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<usize, DemuxError> {
        let mut at = 0;
        loop {
            match wire::parse_frame(&bytes[at..]) {
                Ok(Some((f, used))) => {
                    match f {
                        wire::Frame::Header(v) => {
                            let h = Header::from_value(&v)
                                .map_err(|e| DemuxError::Header(e.to_string()))?;
                            if self.offset.is_none() {
                                // The session's first header: the same upstream timeline?
                                self.same = self.prev.offset.is_some()
                                    && matches!((h.unixzero, self.prev.unixzero),
                                        (Some(a), Some(b)) if (a - b).abs() <= 1000);
                                if self.same {
                                    self.offset = self.prev.offset;
                                }
                            }
                            self.unixzero = h.unixzero;
                            Self::header(&h.tracks, frames);
                        }
                        wire::Frame::Packet(p) => {
                            if let Some(dts) = self.place(p.track, p.dts) {
                                wire::write_packet(&PacketRef { dts, ..p }, frames);
                                self.packets += 1;
                            }
                        }
                        wire::Frame::Command(v) => {
                            if v.get("cmd").and_then(|c| c.as_str()) == Some("error") {
                                let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
                                return Err(DemuxError::Refused(msg.to_string()));
                            }
                        }
                        wire::Frame::LegacyPacket(_) => self.bad_tags += 1,
                    }
                    at += used;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(DemuxError::Dtsc {
                        at,
                        why: e.to_string(),
                    })
                }
            }
        }
        Ok(at)
    }

    /// The end of the session: what the TS demuxer still holds (the last PES of each
    /// stream) is written.
    pub fn finish(&mut self, frames: &mut Vec<u8>) {
        if self.container == Container::Ts {
            self.ts.finish(&mut self.events);
            self.drain_ts(frames);
        }
    }

    /// The TS demuxer's counters (sync losses, continuity errors, …).
    pub fn ts_stats(&self) -> crate::tsdemux::DemuxStats {
        self.ts.stats()
    }

    /// The placed DTS of a packet of `track` at source DTS `dts`; `None` when the last
    /// session on the same upstream timeline already wrote it.
    fn place(&mut self, track: u32, dts: u64) -> Option<u64> {
        let dts = dts.min(i64::MAX as u64 / 2);
        if self.same
            && self
                .prev
                .last_src
                .iter()
                .any(|&(t, l)| t == track && dts <= l)
        {
            self.repeated += 1;
            return None;
        }
        let after = self.prev.last;
        let start = if after == 0 { 1000 } else { after + 40 };
        let off = *self.offset.get_or_insert(start as i64 - dts as i64);
        let floor = if self.same { 0 } else { after as i64 + 1 };
        let placed = (dts as i64).saturating_add(off).max(floor).max(0) as u64;
        match self.last_src.iter_mut().find(|(t, _)| *t == track) {
            Some(e) => e.1 = e.1.max(dts),
            None => self.last_src.push((track, dts)),
        }
        self.first.get_or_insert(placed);
        self.last = self.last.max(placed);
        Some(placed)
    }

    /// The caller sent on everything written so far (the timeline then moves on; a session
    /// whose frames were all dropped leaves it where it was).
    pub fn commit(&mut self) {
        self.committed = self.packets;
    }

    /// The timeline for the next session: this one's if it sent anything on, else the one it
    /// started from.
    pub fn timeline(&self) -> Timeline {
        if self.committed == 0 {
            return self.prev.clone();
        }
        Timeline {
            last: self.last,
            offset: self.offset,
            unixzero: self.unixzero,
            last_src: self.last_src.clone(),
        }
    }

    /// How much media this session has written, ms of DTS (0 before its second packet).
    pub fn span_ms(&self) -> u64 {
        self.first.map_or(0, |f| self.last - f)
    }

    fn header(tracks: &[crate::Track], frames: &mut Vec<u8>) {
        let h = Header {
            live: true,
            unixzero: None,
            tracks: tracks.to_vec(),
        };
        wire::write_header(&h, frames);
    }

    fn drain_ts(&mut self, frames: &mut Vec<u8>) {
        let events = std::mem::take(&mut self.events);
        for e in &events {
            match e {
                TsEvent::TracksChanged => Self::header(self.ts.tracks(), frames),
                TsEvent::Packet(p) => {
                    if let Some(dts) = self.place(p.track, p.dts) {
                        let r = PacketRef { dts, ..p.as_ref() };
                        wire::write_packet(&r, frames);
                        self.packets += 1;
                    }
                }
                TsEvent::Unsupported { pid, stream_type } => self.notes.push(format!(
                    "PID {pid:#x}: stream type {stream_type:#04x} is not supported, skipped"
                )),
            }
        }
        self.events = events;
        self.events.clear();
    }

    fn drain_flv(&mut self, frames: &mut Vec<u8>) -> std::result::Result<(), DemuxError> {
        let mut pending = std::mem::take(&mut self.pending);
        let r = self.flv_tags(&pending, frames);
        if let Ok(used) = r {
            pending.drain(..used);
        }
        self.pending = pending;
        match r {
            Ok(_) if self.pending.len() > MAX_PENDING => Err(DemuxError::FlvTooLarge(MAX_PENDING)),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the packets of the whole tags at the start of `bytes` (after the file header,
    /// the first time); returns the bytes used.
    fn flv_tags(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<u8>,
    ) -> std::result::Result<usize, DemuxError> {
        let mut at = 0;
        if !self.flv_body {
            match flv::parse_file_header(bytes) {
                Ok(Some((_, used))) => {
                    at = used;
                    self.flv_body = true;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(DemuxError::NotFlv(e.to_string())),
            }
        }
        loop {
            let tag = match flv::parse_tag(&bytes[at..]) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => {
                    return Err(DemuxError::Flv {
                        at,
                        why: e.to_string(),
                    })
                }
            };
            let ((kind, ts, body), used) = ((tag.0.kind, tag.0.timestamp, tag.0.body), tag.1);
            self.push_tag(kind, u64::from(ts), body, frames);
            at += used;
        }
        Ok(at)
    }

    /// One FLV tag's body (an RTMP media message: RTMP carries FLV tag bodies), of `kind`
    /// at `timestamp` ms, for the RTMP pull (an [`Container::Flv`] session). A tag that
    /// cannot be used is counted in [`ContainerDemux::bad_tags`].
    pub fn push_tag(
        &mut self,
        kind: flv::TagKind,
        timestamp: u64,
        body: &[u8],
        frames: &mut Vec<u8>,
    ) {
        match self.flv.push_tag(kind, timestamp, body) {
            Ok(Some(IngestEvent::TracksChanged)) => Self::header(self.flv.tracks(), frames),
            Ok(Some(IngestEvent::Packet(p))) => {
                if let Some(dts) = self.place(p.track, p.dts) {
                    wire::write_packet(&PacketRef { dts, ..p }, frames);
                    self.packets += 1;
                }
            }
            Ok(None) => {}
            Err(_) => self.bad_tags += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;

    /// An FLV stream with an AVC sequence header and two frames at `t0`, `t0 + 40`.
    fn flv_bytes(t0: u32) -> Vec<u8> {
        let mut out = Vec::new();
        flv::write_file_header(false, true, &mut out);
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut rec = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, sps.len() as u8];
        rec.extend_from_slice(&sps);
        rec.extend_from_slice(&[1, 0, pps.len() as u8]);
        rec.extend_from_slice(&pps);
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(&rec);
        flv::write_tag(flv::TagKind::Video, t0, &seq, &mut out);
        let frame = |key: bool| {
            let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            b.extend_from_slice(&[0, 0, 0, 2, 0x65, 0x88]);
            b
        };
        flv::write_tag(flv::TagKind::Video, t0, &frame(true), &mut out);
        flv::write_tag(flv::TagKind::Video, t0 + 40, &frame(false), &mut out);
        out
    }

    fn dts_of(frames: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Ok(Some((f, used))) = wire::parse_frame(&frames[at..]) {
            if let Frame::Packet(p) = f {
                out.push(p.dts);
            }
            at += used;
        }
        out
    }

    #[test]
    fn each_session_goes_on_after_the_last() {
        // A first session of an upstream whose clock is at 5 000 000 ms, fed byte by byte.
        let mut d = ContainerDemux::new(Container::Flv, Timeline::default());
        let mut frames = Vec::new();
        for b in flv_bytes(5_000_000) {
            d.push(&[b], &mut frames).unwrap();
        }
        assert_eq!(dts_of(&frames), [1000, 1040]);
        assert_eq!(d.last, 1040);
        d.commit();
        // The upstream restarted at 0: the next session goes on after 1040.
        let mut d2 = ContainerDemux::new(Container::Flv, d.timeline());
        let mut frames = Vec::new();
        d2.push(&flv_bytes(0), &mut frames).unwrap();
        assert_eq!(dts_of(&frames), [1080, 1120]);
    }

    #[test]
    fn bytes_that_are_not_flv_end_the_session() {
        let mut d = ContainerDemux::new(Container::Flv, Timeline::default());
        let mut frames = Vec::new();
        assert!(d.push(b"<html>nope</html>", &mut frames).is_err());
        assert!(frames.is_empty());
    }

    /// DTSC frames: a header with `unixzero`, then one video packet per DTS (keyframes at 0
    /// and every 1000).
    fn dtsc_bytes(unixzero: i64, dts: &[u64]) -> Vec<u8> {
        let mut v = crate::Track::new(1, crate::TrackKind::Video, crate::Codec::H264);
        v.init = vec![1, 0x42, 0xc0, 0x1e];
        let mut out = Vec::new();
        wire::write_header(
            &Header {
                live: true,
                unixzero: Some(unixzero),
                tracks: vec![v],
            },
            &mut out,
        );
        for &t in dts {
            let p = PacketRef {
                track: 1,
                dts: t,
                offset: 0,
                keyframe: t % 1000 == 0,
                bpos: 0,
                data: &[0, 0, 0, 1, 0x65],
            };
            wire::write_packet(&p, &mut out);
        }
        out
    }

    #[test]
    fn a_reconnect_to_the_same_upstream_timeline_goes_on_where_it_was() {
        let mut d = ContainerDemux::new(Container::Dtsc, Timeline::default());
        let mut frames = Vec::new();
        d.push(
            &dtsc_bytes(1_700_000_000_000, &[5000, 5040, 5080]),
            &mut frames,
        )
        .unwrap();
        assert_eq!(dts_of(&frames), [1000, 1040, 1080]);
        d.commit();
        // The same upstream buffer again, from its newest keyframe (already had): only what
        // is new goes on, at the same placement.
        let mut d2 = ContainerDemux::new(Container::Dtsc, d.timeline());
        let mut frames = Vec::new();
        d2.push(
            &dtsc_bytes(1_700_000_000_300, &[5000, 5040, 5080, 5120, 5160]),
            &mut frames,
        )
        .unwrap();
        assert_eq!(dts_of(&frames), [1120, 1160]);
        assert_eq!(d2.repeated, 3);
        d2.commit();
        // Another upstream timeline (its buffer restarted): placed after the last.
        let mut d3 = ContainerDemux::new(Container::Dtsc, d2.timeline());
        let mut frames = Vec::new();
        d3.push(&dtsc_bytes(1_700_000_999_000, &[0, 40]), &mut frames)
            .unwrap();
        assert_eq!(dts_of(&frames), [1200, 1240]);
        // A session that sent nothing on leaves the timeline where it was.
        let d4 = ContainerDemux::new(Container::Dtsc, d2.timeline());
        assert_eq!(d4.timeline().last, 1160);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..400), 0..8),
            which in 0usize..3,
        ) {
            let c = [Container::Flv, Container::Ts, Container::Dtsc][which];
            let mut d = ContainerDemux::new(c, Timeline::after(500));
            let mut frames = Vec::new();
            for ch in &chunks {
                if d.push(ch, &mut frames).is_err() {
                    break;
                }
            }
            d.finish(&mut frames);
            for t in dts_of(&frames) {
                proptest::prop_assert!(t > 500);
            }
        }
    }
}
