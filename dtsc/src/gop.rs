//! A publisher's current GOP, kept so that a new buffer can start with it (sans-IO): told
//! each frame a publisher writes, as its value and its bytes (nothing is parsed), it keeps
//! the last `DTSC` header and the `DTP2` frames since the newest video keyframe, and gives
//! them back as the bytes a new buffer gets first (`connectors::core::publisher`).

#[cfg(test)]
use crate::wire;
use crate::wire::Header;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Track};

    /// Hands `p` to `k` as the publisher does: encoded once, kept from the value.
    fn packet(k: &mut GopKeeper, track: u32, dts: u64, keyframe: bool) -> Vec<u8> {
        let p = PacketRef {
            track,
            dts,
            offset: 0,
            keyframe,
            bpos: 0,
            data: &[1, 2, 3],
        };
        let mut bytes = Vec::new();
        wire::write_packet(&p, &mut bytes);
        k.keep_packet(&p, &bytes);
        bytes
    }

    #[test]
    fn the_gop_starts_at_the_newest_video_keyframe() {
        let mut k = GopKeeper::default();
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.init = vec![1];
        let a = Track::new(2, TrackKind::Audio, Codec::Aac);
        let h = Header {
            live: true,
            unixzero: None,
            tracks: vec![v, a],
        };
        let mut header = Vec::new();
        wire::write_header(&h, &mut header);
        k.keep_header(&h, &header);
        packet(&mut k, 2, 0, true); // audio before the first keyframe: not kept
        let mut want = packet(&mut k, 1, 0, true);
        want.extend(packet(&mut k, 2, 20, true));
        want.extend(packet(&mut k, 1, 40, false));
        assert_eq!(k.video, [1]);
        assert_eq!(k.gop, want);
        // The next keyframe starts the GOP again.
        let more = packet(&mut k, 1, 2000, true);
        assert_eq!(k.gop, more);
        assert!(k.replay().starts_with(&header) && k.replay().ends_with(&more));
    }

    #[test]
    fn audio_only_keeps_no_gop() {
        let mut k = GopKeeper::default();
        let h = Header {
            live: true,
            unixzero: None,
            tracks: vec![Track::new(2, TrackKind::Audio, Codec::Aac)],
        };
        k.keep_header(&h, b"header");
        packet(&mut k, 2, 0, true);
        assert!(k.gop.is_empty());
        assert_eq!(k.replay(), b"header");
    }
}
