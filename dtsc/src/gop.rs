//! A publisher's current GOP, kept so that a new buffer can start with it (sans-IO): fed
//! the DTSC frames a publisher writes, it keeps the last `DTSC` header and the `DTP2`
//! frames since the newest video keyframe, and gives them back as the bytes a new buffer
//! gets first (`connectors::core::publisher`).

use crate::wire::{self, Frame, Header};
use crate::{PacketRef, TrackKind};

/// Most bytes of GOP kept for a new buffer (a longer GOP is not kept: the new buffer then
/// waits for the encoder's next keyframe).
const MAX_GOP_BYTES: usize = 32 << 20;

/// The header and the current GOP of a stream of DTSC frames (sans-IO: fed the frames
/// written, gives the bytes a new buffer starts with).
#[derive(Debug, Default)]
pub struct GopKeeper {
    /// The last `DTSC` header frame.
    header: Vec<u8>,
    /// Video track ids of that header.
    video: Vec<u32>,
    /// `DTP2` frames since the newest video keyframe, that keyframe first.
    gop: Vec<u8>,
    /// The GOP grew past [`MAX_GOP_BYTES`]: nothing is kept until the next keyframe.
    overflow: bool,
}

impl GopKeeper {
    /// What a new buffer gets first: the header, then the GOP.
    pub fn replay(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header.len() + self.gop.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.gop);
        out
    }

    /// Notes a `DTSC` header, given as its value `h` and its frame's bytes: the GOP starts
    /// anew.
    pub fn keep_header(&mut self, h: &Header, bytes: &[u8]) {
        self.header = bytes.to_vec();
        self.video = h
            .tracks
            .iter()
            .filter(|t| t.kind == TrackKind::Video)
            .map(|t| t.id)
            .collect();
        self.gop.clear();
    }

    /// Notes a `DTP2` packet, given as its value `p` and its frame's bytes: a video keyframe
    /// starts the GOP anew; other packets join it (audio only: nothing is kept).
    pub fn keep_packet(&mut self, p: &PacketRef, bytes: &[u8]) {
        if self.video.is_empty() {
            // Audio only: every packet starts anew; nothing to keep.
            self.gop.clear();
        } else if p.keyframe && self.video.contains(&p.track) {
            self.gop.clear();
            self.overflow = false;
            self.gop.extend_from_slice(bytes);
        } else if !self.overflow && !self.gop.is_empty() {
            if self.gop.len() + bytes.len() > MAX_GOP_BYTES {
                self.gop.clear();
                self.overflow = true;
            } else {
                self.gop.extend_from_slice(bytes);
            }
        }
    }

    /// Notes the header and the GOP from `frames`, whole frames as bytes (a partial frame at
    /// the end is ignored), for producers that hand bytes ([`GopKeeper::keep_header`] and
    /// [`GopKeeper::keep_packet`] take values and parse nothing).
    pub fn keep(&mut self, mut frames: &[u8]) {
        while let Ok(Some((frame, len))) = wire::parse_frame(frames) {
            let bytes = frames.get(..len).unwrap_or_default();
            match frame {
                Frame::Header(v) => match Header::from_value(&v) {
                    Ok(h) => self.keep_header(&h, bytes),
                    Err(_) => {
                        self.header = bytes.to_vec();
                        self.video.clear();
                        self.gop.clear();
                    }
                },
                Frame::Packet(p) => self.keep_packet(&p, bytes),
                _ => {}
            }
            frames = frames.get(len..).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Track};

    fn packet(track: u32, dts: u64, keyframe: bool, out: &mut Vec<u8>) {
        let p = PacketRef {
            track,
            dts,
            offset: 0,
            keyframe,
            bpos: 0,
            data: &[1, 2, 3],
        };
        wire::write_packet(&p, out);
    }

    #[test]
    fn the_gop_starts_at_the_newest_video_keyframe() {
        let mut p = GopKeeper::default();
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.init = vec![1];
        let a = Track::new(2, TrackKind::Audio, Codec::Aac);
        let mut frames = Vec::new();
        wire::write_header(
            &Header {
                live: true,
                unixzero: None,
                tracks: vec![v, a],
            },
            &mut frames,
        );
        packet(2, 0, true, &mut frames); // audio before the first keyframe: not kept
        packet(1, 0, true, &mut frames);
        packet(2, 20, true, &mut frames);
        packet(1, 40, false, &mut frames);
        p.keep(&frames);
        assert_eq!(p.video, [1]);
        let mut want = Vec::new();
        packet(1, 0, true, &mut want);
        packet(2, 20, true, &mut want);
        packet(1, 40, false, &mut want);
        assert_eq!(p.gop, want);
        // The next keyframe starts the GOP again.
        let mut more = Vec::new();
        packet(1, 2000, true, &mut more);
        p.keep(&more);
        assert_eq!(p.gop, more);
        assert!(p.replay().starts_with(&p.header) && p.replay().ends_with(&more));
    }

    /// A sink that keeps from values (as the publisher does) and one that parses the same
    /// frames' bytes keep the same header and GOP.
    #[test]
    fn values_and_bytes_keep_the_same_gop() {
        struct Sink(Vec<u8>, GopKeeper);
        impl wire::FrameSink for Sink {
            fn header(&mut self, h: &Header) {
                let at = self.0.len();
                wire::write_header(h, &mut self.0);
                self.1.keep_header(h, &self.0[at..]);
            }
            fn packet(&mut self, p: &PacketRef) {
                let at = self.0.len();
                wire::write_packet(p, &mut self.0);
                self.1.keep_packet(p, &self.0[at..]);
            }
        }
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.init = vec![1];
        let h = Header {
            live: true,
            unixzero: None,
            tracks: vec![v, Track::new(2, TrackKind::Audio, Codec::Aac)],
        };
        let mut sink = Sink(Vec::new(), GopKeeper::default());
        wire::FrameSink::header(&mut sink, &h);
        for (track, dts, key) in [(2, 0, true), (1, 0, true), (2, 20, true), (1, 40, false)] {
            let p = PacketRef {
                track,
                dts,
                offset: 0,
                keyframe: key,
                bpos: 0,
                data: &[7; 5],
            };
            wire::FrameSink::packet(&mut sink, &p);
        }
        let mut parsed = GopKeeper::default();
        parsed.keep(&sink.0);
        assert_eq!(sink.1.replay(), parsed.replay());
        assert!(!sink.1.gop.is_empty());
    }
}
