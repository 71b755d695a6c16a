//! AAC over RTP, RFC 3640 `mpeg4-generic` in AAC-hbr mode (§3.3.6). Sending: one access
//! unit per packet after a 16-bit AU-headers-length and one AU-header (13-bit AU-size,
//! 3-bit AU-index 0); an AU larger than a packet is fragmented (§3.2.3). Receiving: the
//! AU-headers of the SDP's `sizelength` and `indexlength`, several whole AUs per packet.
//! (MP4A-LATM, RFC 6416, is not supported.)

use super::{PacketWriter, RtpError, Sink, Unit};
use crate::model::{PacketRef, Track};

/// Samples per AAC frame: AUs of one packet are this many ticks of the (sample-rate)
/// clock apart.
const SAMPLES_PER_AU: u64 = 1024;

/// Sends an AAC track in AAC-hbr mode.
#[derive(Debug, Clone)]
pub(super) struct Packetizer;

impl Packetizer {
    /// A packetizer for the AAC `track`; `None` without a sample rate (the RTP clock).
    pub(super) fn new(track: &Track) -> Option<Packetizer> {
        (track.rate > 0).then_some(Packetizer)
    }

    /// AU `p` at RTP time `ts`: one packet, or fragments of it each with the AU-header of
    /// the whole AU and the marker on the last (RFC 3640 §3.2.3). AU-size is 13 bits, so
    /// an AU is cut at 8191 bytes (the most an ADTS frame holds).
    pub(super) fn packetize(&self, ts: u32, p: &PacketRef, w: &mut PacketWriter) {
        let au = p.data.get(..0x1fff).unwrap_or(p.data);
        let size = au.len() as u16;
        let chunks: Vec<&[u8]> = if au.is_empty() {
            vec![au]
        } else {
            au.chunks(w.max_payload() - 4).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            w.packet(i + 1 == chunks.len(), ts, |out| {
                // AU-headers-length in bits, then AU-size and AU-index 0.
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&(size << 3).to_be_bytes());
                out.extend_from_slice(chunk);
            });
        }
    }
}

/// Receives an AAC track.
#[derive(Debug, Clone)]
pub(super) struct Depacketizer {
    /// Bits of AU-size and of AU-index in each AU-header (the SDP's `sizelength` and
    /// `indexlength`; 13 and 3 in AAC-hbr).
    size_len: u32,
    index_len: u32,
}

impl Depacketizer {
    /// A depacketizer for AU-headers of `size_len` bits of AU-size and `index_len` of
    /// AU-index (RFC 3640 §3.2.1; AU-index-delta is taken to be as long, and ignored).
    pub(super) fn new((size_len, index_len): (u32, u32)) -> Depacketizer {
        Depacketizer {
            size_len,
            index_len,
        }
    }

    /// The payload `p` of one packet at `ts` (extended, in the sample-rate clock): each
    /// whole AU of it becomes a unit, the n-th (from 0) at `ts` + 1024·n; empty AUs are
    /// dropped. AUs before a bad one are kept.
    ///
    /// # Errors
    /// [`RtpError::Payload`] when the AU-header lengths are 0 or over 2^32 − 1 bits in all,
    /// the AU-headers-length is missing, not a whole number of AU-headers nor of bytes, or
    /// runs past the end, or an AU runs past the end (a fragment of a large AU: those are
    /// not reassembled).
    pub(super) fn push(&mut self, ts: u64, p: &[u8], sink: &mut Sink) -> Result<(), RtpError> {
        let bad = || RtpError::Payload("MPEG4-GENERIC");
        let Some((&headers_len, rest)) = p.split_first_chunk::<2>() else {
            return Err(bad());
        };
        // AU-headers-length, in bits.
        let bits = usize::from(u16::from_be_bytes(headers_len));
        // Bits of one AU-header; lengths past 32 bits in all are the SDP's nonsense.
        let per = match self.size_len.checked_add(self.index_len) {
            Some(n) if n > 0 => n as usize,
            _ => return Err(bad()),
        };
        if bits % per != 0 && bits % 8 != 0 {
            return Err(bad());
        }
        let Some((headers, mut data)) = rest.split_at_checked(bits.div_ceil(8)) else {
            return Err(bad());
        };
        for i in 0..bits / per {
            // AU-size: the first `size_len` bits of the i-th AU-header, which lies within
            // `headers` (i·per + size_len ≤ bits).
            let mut v = 0u32;
            for b in 0..self.size_len as usize {
                let bit = i * per + b;
                let byte = headers.get(bit / 8).ok_or_else(bad)?;
                v = (v << 1) | u32::from(byte >> (7 - bit % 8) & 1);
            }
            // A fragment of a large AU runs past the end: whole AUs only here (frames fit
            // a packet).
            let Some((au, rest)) = data.split_at_checked(v as usize) else {
                return Err(bad());
            };
            if !au.is_empty() {
                sink.units.push_back(Unit {
                    timestamp: ts + SAMPLES_PER_AU * i as u64,
                    keyframe: true,
                    data: au.to_vec(),
                });
            }
            data = rest;
        }
        Ok(())
    }
}

/// The SDP `a=rtpmap` encoding of the AAC `track` (RFC 3640 §4.1): `MPEG4-GENERIC/` sample
/// rate `/` channels (at least 1); `None` without a sample rate.
pub(super) fn rtpmap(track: &Track) -> Option<String> {
    (track.rate > 0).then(|| format!("MPEG4-GENERIC/{}/{}", track.rate, track.channels.max(1)))
}

/// The SDP `a=fmtp` parameters of the AAC `track` (RFC 3640 §4.1, §3.3.6): AAC-hbr's
/// `streamtype`, `mode`, `sizelength` 13, `indexlength` 3, `indexdeltalength` 3, and the
/// AudioSpecificConfig (the track's init data) as upper-case hex `config`.
pub(super) fn fmtp(track: &Track) -> Option<String> {
    let hex: String = track.init.iter().map(|b| format!("{b:02X}")).collect();
    Some(format!(
        "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;\
         indexdeltalength=3;config={hex}"
    ))
}

#[cfg(test)]
mod tests {
    use crate::aac::{self, AudioSpecificConfig};
    use crate::model::{Codec, PacketRef, Track, TrackKind};
    use crate::rtp::test_util::rtp_packet;
    use crate::rtp::{fmtp, rtpmap, Depacketizer, Packetizer, RtpError, Unit, RTP_HEADER_LEN};

    #[test]
    fn aac_is_rfc3640_hbr_with_one_au_header() {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        aac::write_asc(&AudioSpecificConfig::lc(44100, 2), &mut t.init);
        t.rate = 44100;
        t.channels = 2;
        let mut p = Packetizer::new(&t, 97, 7, 0, 0).unwrap();
        let au = vec![0x21u8; 300];
        let pr = PacketRef {
            track: 2,
            dts: 1000,
            offset: 0,
            keyframe: false,
            bpos: 0,
            data: &au,
        };
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&pr, &mut out, &mut spans);
        assert_eq!(spans.len(), 1);
        assert_eq!(out[1], 0x80 | 97);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 44100);
        assert_eq!(
            &out[12..16],
            &[0, 16, (300u16 << 3 >> 8) as u8, (300u16 << 3) as u8]
        );
        assert_eq!(&out[16..], &au[..]);
        assert_eq!(rtpmap(&t).as_deref(), Some("MPEG4-GENERIC/44100/2"));
        // An AU larger than a packet: fragments with the whole AU's header, marker last.
        let big = vec![7u8; 3000];
        let (mut out, mut spans) = (Vec::new(), Vec::new());
        p.packetize(&PacketRef { data: &big, ..pr }, &mut out, &mut spans);
        assert_eq!(spans.len(), 3);
        let payload: usize = spans.iter().map(|s| s.len() - RTP_HEADER_LEN - 4).sum();
        assert_eq!(payload, 3000);
        let markers: Vec<bool> = spans.iter().map(|s| out[s.start + 1] & 0x80 != 0).collect();
        assert_eq!(markers, [false, false, true]);
        assert!(spans
            .iter()
            .all(|s| out[s.start + 14..s.start + 16] == (3000u16 << 3).to_be_bytes()));
        assert!(fmtp(&t).unwrap().ends_with("config=1210"));
    }

    #[test]
    fn aac_units_come_back_with_their_times() {
        let mut t = Track::new(2, TrackKind::Audio, Codec::Aac);
        aac::write_asc(&AudioSpecificConfig::lc(48000, 1), &mut t.init);
        t.rate = 48000;
        t.channels = 1;
        let mut p = Packetizer::new(&t, 97, 1, 0, 0).unwrap();
        let mut d = Depacketizer::new(Codec::Aac, (13, 3));
        for i in 0..3u64 {
            let au = vec![i as u8; 200 + i as usize];
            let pr = PacketRef {
                track: 2,
                dts: i * 1024 * 1000 / 48000,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &au,
            };
            let (mut out, mut spans) = (Vec::new(), Vec::new());
            p.packetize(&pr, &mut out, &mut spans);
            d.push(&out[spans[0].clone()]).unwrap();
        }
        let got: Vec<Unit> = std::iter::from_fn(|| d.poll()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].data, vec![2u8; 202]);
        assert_eq!(got[1].timestamp - got[0].timestamp, 21 * 48); // 21 ms in 48 kHz ticks
    }

    /// `sizelength` and `indexlength` come from the sender's SDP: lengths whose sum
    /// overflows 32 bits (which wrapped to a small AU-header size in release builds and
    /// sent the AU-size loop past the AU-headers) are refused, not a panic.
    #[test]
    fn hostile_au_header_lengths_are_refused_not_a_panic() {
        let packet = rtp_packet(0, 0, true, &[0, 16, 0x12, 0x34, 1, 2, 3]);
        for bits in [
            (u32::MAX, 2),
            (u32::MAX, 1),
            (u32::MAX - 14, 16),
            (2, u32::MAX),
        ] {
            let mut d = Depacketizer::new(Codec::Aac, bits);
            assert_eq!(d.push(&packet), Err(RtpError::Payload("MPEG4-GENERIC")));
            assert_eq!((d.bad, d.poll()), (1, None));
        }
    }
}
