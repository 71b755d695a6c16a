//! MPEG-2 transport stream muxer (ISO/IEC 13818-1), sans-IO: [`TsMuxer`] turns
//! [`PacketRef`]s into 188-byte TS packets appended to a caller-owned `Vec<u8>`. It makes
//! HLS segments on demand from the stream buffer and progressive TS streams.
//!
//! Layout: one program (number 1); PAT on PID 0, PMT on PID [`PMT_PID`] (0x1000); track
//! `i` of the slice given to [`TsMuxer::new`] on PID [`ES_PID_BASE`]` + i` (0x100 + i).
//! H.264 is carried as stream_type 0x1B and HEVC as 0x24 (ISO/IEC 13818-1 Table 2-34; both
//! Annex B with an access unit delimiter first and the parameter sets of the init data before
//! every keyframe that lacks them), AAC as 0x0F (ADTS), MP3 as 0x03 (MPEG-1 audio, ≥ 32 kHz)
//! or 0x04 (MPEG-2 audio, < 32 kHz); other codecs are not carried. The PCR is on the first
//! video PID, or the first PID when there is no video.
//!
//! Time stamps: PTS/DTS (90 kHz) = time in ms × 90 + [`TIME_OFFSET_90K`] (100 ms), modulo
//! 2^33; the PCR (27 MHz) = DTS in ms × 27 000 without that offset, so every access unit
//! arrives (by PCR) 100 ms before its decode time and no value is ever negative.

use crate::aac::{self, AacError, AudioSpecificConfig};
use crate::h264::{self, H264Error};
use crate::hevc;
use crate::model::{Codec, PacketRef, Track, TrackKind};
use thiserror::Error;

/// Size in bytes of every transport stream packet (ISO/IEC 13818-1 §2.4.3.2).
pub const TS_PACKET_LEN: usize = 188;
/// The sync byte every TS packet starts with.
pub const SYNC_BYTE: u8 = 0x47;
/// PID of the program association table (ISO/IEC 13818-1 Table 2-3).
pub const PAT_PID: u16 = 0;
/// PID of the program map table this muxer writes.
pub const PMT_PID: u16 = 0x1000;
/// PID of the first elementary stream: track `i` of the muxer's track slice is on
/// `ES_PID_BASE + i`.
pub const ES_PID_BASE: u16 = 0x100;
/// Constant added to every PTS and DTS, in 90 kHz ticks (9000 = 100 ms). The PCR does not
/// include it, so the PCR runs 100 ms ahead of every DTS (decoder buffering headroom).
pub const TIME_OFFSET_90K: u64 = 9000;
/// DTS advance, in 90 kHz ticks (5400 = 60 ms), after which the next packet written (of any
/// PID) brings a PCR on the PCR PID. With packets at most 40 ms apart this keeps PCRs within
/// the 100 ms that ISO/IEC 13818-1 §2.7.2 allows.
pub const PCR_INTERVAL_90K: u64 = 5400;
/// Most elementary streams one muxer carries (the PMT must fit one TS packet).
pub const MAX_STREAMS: usize = 32;

/// 33-bit mask of PTS, DTS and PCR base values.
const MASK_33: u64 = (1 << 33) - 1;
/// TS packet payload size without adaptation field, bytes.
const PAYLOAD_LEN: usize = TS_PACKET_LEN - 4;
/// Longest PES header this muxer writes: 9 fixed bytes + PTS + DTS.
const PES_HEADER_MAX: usize = 19;
/// Annex B access unit delimiter, primary_pic_type 7 (any slice type), H.264 §7.3.2.4.
const AUD: [u8; 6] = [0, 0, 0, 1, h264::NAL_AUD, 0xf0];

/// Errors from [`TsMuxer::write_packet`]. When one is returned nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TsError {
    /// The H.264 payload is not valid AVCC.
    #[error("H.264 payload: {0}")]
    H264(#[from] H264Error),
    /// The AAC frame cannot be put in an ADTS frame.
    #[error("AAC payload: {0}")]
    Aac(#[from] AacError),
    /// An AAC track with neither a valid AudioSpecificConfig nor a usable rate.
    #[error("AAC track {0} has no usable AudioSpecificConfig")]
    NoAudioConfig(u32),
}

/// How one elementary stream is packetized.
#[derive(Debug, Clone)]
enum EsKind {
    /// H.264: AVCC length size and the avcC's SPS and PPS in Annex B form.
    H264 {
        nal_length_size: u8,
        parameter_sets: Vec<u8>,
    },
    /// HEVC: NAL length size and the hvcC's VPS, SPS and PPS in Annex B form.
    Hevc {
        nal_length_size: u8,
        parameter_sets: Vec<u8>,
    },
    /// AAC with ADTS headers made from this config (`None`: not known).
    Aac(Option<AudioSpecificConfig>),
    /// MPEG audio, carried as is.
    Mp3,
}

/// One elementary stream of the program.
#[derive(Debug, Clone)]
struct EsStream {
    track: u32,
    pid: u16,
    stream_id: u8,
    kind: EsKind,
    /// Continuity counter of the next payload-carrying packet.
    cc: u8,
}

/// MPEG-TS muxer for one program. See the module docs for the PID layout and time stamps.
///
/// Two continuity counter modes:
///
/// * **Segment mode** ([`TsMuxer::new`]), for HLS segments made independently on demand
///   (segment N may be made before, after or without segment N − 1, by another muxer) that
///   must still splice with continuous continuity counters (ISO/IEC 13818-1 §2.4.3.3):
///   call [`set_segment_number`](TsMuxer::set_segment_number) with the segment's media
///   sequence number, then [`write_psi`](TsMuxer::write_psi) once, then the segment's
///   packets. PAT and PMT are written once per segment with CC = msn mod 16. Every
///   elementary PID starts each segment at CC 0; the packet passed with
///   `last_in_segment = true` (which must be that PID's last in the segment) is spread over
///   enough extra TS packets, with adaptation-field stuffing so that each carries fewer
///   payload bytes, that the PID's number of payload-carrying packets in the segment is a
///   multiple of 16. The next segment therefore continues at CC 0. A PID with no packet in
///   a segment has 0 packets, also a multiple of 16.
/// * **Continuous mode** ([`TsMuxer::continuous`]), for one progressive TS stream: CCs just
///   continue, `last_in_segment` and `set_segment_number` are ignored, nothing is padded.
///
/// Buffers are reused between calls: after the first few packets `write_packet` allocates
/// only when `out` must grow.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    streams: Vec<EsStream>,
    pcr_pid: u16,
    continuous: bool,
    pat: [u8; TS_PACKET_LEN],
    pmt: [u8; TS_PACKET_LEN],
    psi_cc: u8,
    /// DTS (90 kHz, with offset) of the last PCR written, `None` before the first one.
    last_pcr: Option<u64>,
    /// Reusable buffer: PES header space followed by the elementary stream bytes.
    es: Vec<u8>,
}

/// The MPEG-2 CRC-32 (polynomial 0x04C11DB7, initial value 0xFFFFFFFF, no reflection, no
/// final XOR) used by PSI sections (ISO/IEC 13818-1 Annex A).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[(((crc >> 24) as u8) ^ b) as usize]
    })
}

/// Byte-wise table for [`crc32_mpeg2`].
static CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04c1_1db7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Puts a PSI `section` (table_id through the byte before the CRC) into a TS packet on `pid`
/// with `payload_unit_start_indicator` set, pointer_field 0, the CRC appended and 0xFF
/// stuffing after it (ISO/IEC 13818-1 §2.4.4). The CC nibble (byte 3) is left 0.
fn psi_packet(pid: u16, section: &[u8]) -> [u8; TS_PACKET_LEN] {
    let mut pkt = [0xffu8; TS_PACKET_LEN];
    pkt[..5].copy_from_slice(&[SYNC_BYTE, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0]);
    let n = section.len().min(TS_PACKET_LEN - 9);
    pkt[5..5 + n].copy_from_slice(&section[..n]);
    pkt[5 + n..9 + n].copy_from_slice(&crc32_mpeg2(&section[..n]).to_be_bytes());
    pkt
}

/// Bytes of the ES descriptors written for `track` in the PMT: an ISO 639 language
/// descriptor (tag 0x0A, ISO/IEC 13818-1 §2.6.18) when the track has a 3-letter language.
fn es_descriptors(track: &Track) -> Option<[u8; 6]> {
    let lang = track.lang.as_deref()?.as_bytes();
    if lang.len() != 3 || !lang.iter().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    Some([0x0a, 4, lang[0], lang[1], lang[2], 0])
}

/// Encodes a 33-bit time stamp with its 4-bit prefix as the 5 bytes of a PES PTS or DTS field
/// (ISO/IEC 13818-1 §2.4.3.7).
fn put_timestamp(buf: &mut [u8], prefix: u8, ts: u64) {
    if let Some(b) = buf.get_mut(..5) {
        b[0] = (prefix << 4) | (((ts >> 30) as u8 & 7) << 1) | 1;
        b[1] = (ts >> 22) as u8;
        b[2] = (((ts >> 15) as u8 & 0x7f) << 1) | 1;
        b[3] = (ts >> 7) as u8;
        b[4] = ((ts as u8 & 0x7f) << 1) | 1;
    }
}

impl TsMuxer {
    /// A segment-mode muxer (see the type docs) for the carried codecs among `tracks`;
    /// track `i` of the slice gets PID 0x100 + i. Tracks of other codecs, and tracks beyond
    /// [`MAX_STREAMS`], are skipped: their packets are ignored by `write_packet`. Unusable
    /// init data is tolerated: H.264 without a valid avcC gets 4-byte lengths and no
    /// inserted SPS/PPS; AAC without a valid AudioSpecificConfig gets an LC config built
    /// from `rate` and `channels`.
    pub fn new(tracks: &[Track]) -> TsMuxer {
        let mut streams = Vec::new();
        let mut es_info: Vec<u8> = Vec::new();
        let mut pcr_pid = None;
        for (i, t) in tracks.iter().enumerate() {
            if streams.len() >= MAX_STREAMS || i >= 0x1000 - ES_PID_BASE as usize {
                break;
            }
            let pid = ES_PID_BASE + i as u16;
            let (stream_type, stream_id, kind) = match t.codec {
                Codec::H264 => {
                    let cfg = h264::parse_avcc(&t.init).ok();
                    let parameter_sets = annex_b(
                        cfg.iter()
                            .flat_map(|c| c.sps.iter().chain(c.pps.iter()))
                            .map(Vec::as_slice),
                    );
                    let nal_length_size = cfg.map_or(4, |c| c.nal_length_size);
                    let kind = EsKind::H264 {
                        nal_length_size,
                        parameter_sets,
                    };
                    (0x1b, 0xe0, kind)
                }
                Codec::Hevc => {
                    let cfg = hevc::parse_hvcc(&t.init).ok();
                    let parameter_sets = annex_b(
                        cfg.iter()
                            .flat_map(|c| c.nal_units.iter())
                            .filter(|(kind, _)| {
                                matches!(*kind, hevc::NAL_VPS | hevc::NAL_SPS | hevc::NAL_PPS)
                            })
                            .map(|(_, nal)| nal.as_slice()),
                    );
                    let nal_length_size = cfg.map_or(4, |c| c.nal_length_size);
                    let kind = EsKind::Hevc {
                        nal_length_size,
                        parameter_sets,
                    };
                    (0x24, 0xe0, kind)
                }
                Codec::Aac => {
                    let asc = aac::parse_asc(&t.init).ok().or_else(|| {
                        let ch = u8::try_from(t.channels).ok()?;
                        (t.rate > 0).then(|| AudioSpecificConfig::lc(t.rate, ch))
                    });
                    (0x0f, 0xc0, EsKind::Aac(asc))
                }
                Codec::Mp3 => {
                    let stream_type = if t.rate != 0 && t.rate < 32000 {
                        0x04
                    } else {
                        0x03
                    };
                    (stream_type, 0xc0, EsKind::Mp3)
                }
                _ => continue,
            };
            let desc = es_descriptors(t);
            let desc: &[u8] = desc.as_ref().map_or(&[], |d| &d[..]);
            // PMT section: 12 bytes up to program_info, ES entries, CRC; ≤ 183 bytes.
            if 12 + es_info.len() + 5 + desc.len() + 4 > TS_PACKET_LEN - 5 {
                break;
            }
            es_info.extend_from_slice(&[
                stream_type,
                0xe0 | (pid >> 8) as u8,
                pid as u8,
                0xf0,
                desc.len() as u8,
            ]);
            es_info.extend_from_slice(desc);
            if pcr_pid.is_none()
                && t.kind == TrackKind::Video
                && matches!(t.codec, Codec::H264 | Codec::Hevc)
            {
                pcr_pid = Some(pid);
            }
            streams.push(EsStream {
                track: t.id,
                pid,
                stream_id,
                kind,
                cc: 0,
            });
        }
        let pcr_pid = pcr_pid
            .or_else(|| streams.first().map(|s| s.pid))
            .unwrap_or(0x1fff);

        // PAT (ISO/IEC 13818-1 §2.4.4.3): transport_stream_id 1, program 1 → PMT_PID.
        let pat = psi_packet(
            PAT_PID,
            &[
                0x00,
                0xb0,
                13,
                0x00,
                0x01,
                0xc1,
                0x00,
                0x00,
                0x00,
                0x01,
                0xe0 | (PMT_PID >> 8) as u8,
                PMT_PID as u8,
            ],
        );
        // PMT (§2.4.4.8): program 1, version 0, PCR PID, no program descriptors.
        let section_len = 9 + es_info.len() + 4;
        let mut pmt_section = vec![
            0x02,
            0xb0 | (section_len >> 8) as u8,
            section_len as u8,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
            0xe0 | (pcr_pid >> 8) as u8,
            pcr_pid as u8,
            0xf0,
            0x00,
        ];
        pmt_section.extend_from_slice(&es_info);
        let pmt = psi_packet(PMT_PID, &pmt_section);

        TsMuxer {
            streams,
            pcr_pid,
            continuous: false,
            pat,
            pmt,
            psi_cc: 0,
            last_pcr: None,
            es: Vec::new(),
        }
    }

    /// A continuous-mode muxer (see the type docs) for a progressive TS stream: like
    /// [`TsMuxer::new`] but continuity counters simply continue and nothing is padded.
    pub fn continuous(tracks: &[Track]) -> TsMuxer {
        let mut m = TsMuxer::new(tracks);
        m.continuous = true;
        m
    }

    /// The PID carrying track `track_id`, `None` when the track is not carried.
    pub fn pid_of(&self, track_id: u32) -> Option<u16> {
        self.streams
            .iter()
            .find(|s| s.track == track_id)
            .map(|s| s.pid)
    }

    /// The PCR PID written in the PMT (0x1FFF when no stream is carried).
    pub fn pcr_pid(&self) -> u16 {
        self.pcr_pid
    }

    /// Starts HLS segment `msn` (media sequence number) in segment mode: the next
    /// [`write_psi`](TsMuxer::write_psi) uses CC = `msn` mod 16 for PAT and PMT, every
    /// elementary PID restarts at CC 0 and the next PCR-PID packet carries a PCR. Calling it
    /// on a fresh muxer or on one that made the previous segment gives identical bytes.
    /// Ignored in continuous mode.
    pub fn set_segment_number(&mut self, msn: u64) {
        if self.continuous {
            return;
        }
        self.psi_cc = (msn % 16) as u8;
        for s in &mut self.streams {
            s.cc = 0;
        }
        self.last_pcr = None;
    }

    /// Appends a PAT and a PMT packet (2 × 188 bytes, CRC-32/MPEG-2 protected,
    /// ISO/IEC 13818-1 §2.4.4.3 and §2.4.4.8) to `out`. In segment mode call it once per
    /// segment, after `set_segment_number`; in continuous mode as often as wanted (each call
    /// advances the PAT/PMT continuity counters).
    pub fn write_psi(&mut self, out: &mut Vec<u8>) {
        let cc = self.psi_cc & 0x0f;
        for pkt in [&self.pat, &self.pmt] {
            let start = out.len();
            out.extend_from_slice(pkt);
            if let Some(b) = out.get_mut(start + 3) {
                *b = (*b & 0xf0) | cc;
            }
        }
        if self.continuous {
            self.psi_cc = (self.psi_cc + 1) & 0x0f;
        }
    }

    /// Appends one access unit `p` as one PES packet (ISO/IEC 13818-1 §2.4.3.6) in whole
    /// 188-byte TS packets to `out`. Packets of tracks not carried are ignored (`Ok`, nothing
    /// written).
    ///
    /// * H.264: an access unit delimiter, then — on a keyframe (`p.keyframe` or an IDR NAL
    ///   unit present) whose payload has no SPS — the avcC's SPS and PPS, then the payload's
    ///   NAL units (AUDs and empty ones dropped), all with 4-byte start codes.
    /// * AAC: a 7-byte ADTS header and the raw frame. MP3: the frame as is.
    /// * PES header: PTS only when PTS = DTS, else PTS and DTS, in 90 kHz ticks (see
    ///   [`TIME_OFFSET_90K`]); a negative composition offset is clamped to PTS = DTS.
    ///   PES_packet_length is 0 when the PES exceeds 65535 bytes.
    /// * The first TS packet has random_access_indicator set on keyframes.
    /// * PCR (this packet's DTS in 27 MHz, without [`TIME_OFFSET_90K`]): written for the
    ///   first packet after `set_segment_number` (or ever), for keyframes of the PCR PID, and
    ///   whenever DTS advanced [`PCR_INTERVAL_90K`] past the last PCR (never when DTS went
    ///   backwards). On the PCR PID it goes in the PES's first TS packet; for a packet of
    ///   another PID it is sent first as an adaptation-field-only packet on the PCR PID
    ///   (no payload, so its CC repeats that PID's previous CC).
    /// * `last_in_segment`: in segment mode, pads this PID to a multiple of 16
    ///   payload-carrying packets (see the type docs). The PES header stays whole in the
    ///   first TS packet, except for an audio PES too small to give every padding packet a
    ///   byte after its header (under ~35 bytes), whose header is then split across packets
    ///   (allowed by ISO/IEC 13818-1, but some simple demuxers mishandle it); a small video
    ///   access unit instead gets trailing zero bytes (H.264 B.1.1 `trailing_zero_8bits`).
    ///
    /// On error `out` and the muxer are unchanged.
    pub fn write_packet(
        &mut self,
        p: &PacketRef<'_>,
        last_in_segment: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TsError> {
        let Some(idx) = self.streams.iter().position(|s| s.track == p.track) else {
            return Ok(());
        };
        let stream = &self.streams[idx];
        let es = &mut self.es;
        es.clear();
        es.resize(PES_HEADER_MAX, 0);
        let mut keyframe = p.keyframe;
        let is_video = matches!(stream.kind, EsKind::H264 { .. } | EsKind::Hevc { .. });
        match &stream.kind {
            EsKind::H264 {
                nal_length_size,
                parameter_sets,
            } => {
                let mut has_sps = false;
                for nal in h264::nal_units(p.data, *nal_length_size) {
                    match h264::nal_type(nal?) {
                        Some(h264::NAL_SPS) => has_sps = true,
                        Some(h264::NAL_IDR) => keyframe = true,
                        _ => {}
                    }
                }
                es.extend_from_slice(&AUD);
                if keyframe && !has_sps {
                    es.extend_from_slice(parameter_sets);
                }
                for nal in h264::nal_units(p.data, *nal_length_size).flatten() {
                    if !nal.is_empty() && h264::nal_type(nal) != Some(h264::NAL_AUD) {
                        es.extend_from_slice(&h264::START_CODE);
                        es.extend_from_slice(nal);
                    }
                }
            }
            EsKind::Hevc {
                nal_length_size,
                parameter_sets,
            } => {
                let mut has_sps = false;
                for nal in h264::nal_units(p.data, *nal_length_size) {
                    match hevc::nal_type(nal?) {
                        Some(hevc::NAL_SPS) => has_sps = true,
                        Some(t) if hevc::is_irap(t) => keyframe = true,
                        _ => {}
                    }
                }
                es.extend_from_slice(&hevc::AUD);
                if keyframe && !has_sps {
                    es.extend_from_slice(parameter_sets);
                }
                for nal in h264::nal_units(p.data, *nal_length_size).flatten() {
                    if !nal.is_empty() && hevc::nal_type(nal) != Some(hevc::NAL_AUD) {
                        es.extend_from_slice(&h264::START_CODE);
                        es.extend_from_slice(nal);
                    }
                }
            }
            EsKind::Aac(asc) => {
                let asc = asc.as_ref().ok_or(TsError::NoAudioConfig(p.track))?;
                aac::write_adts_header(asc, p.data.len(), es)?;
                es.extend_from_slice(p.data);
            }
            EsKind::Mp3 => es.extend_from_slice(p.data),
        }

        let dts = p.dts.wrapping_mul(90).wrapping_add(TIME_OFFSET_90K) & MASK_33;
        let pts_ms = p.dts.wrapping_add(p.offset.max(0) as u64);
        let pts = pts_ms.wrapping_mul(90).wrapping_add(TIME_OFFSET_90K) & MASK_33;
        let with_dts = pts != dts;
        let header_len = if with_dts { 19 } else { 14 };
        let start = PES_HEADER_MAX - header_len;
        let on_pcr_pid = stream.pid == self.pcr_pid;

        // PCR: due when none was written yet in this segment, or when DTS moved forward by
        // PCR_INTERVAL_90K, or on a keyframe of the PCR PID (not when DTS went backwards).
        let pcr_due = match self.last_pcr {
            None => true,
            Some(last) => {
                let d = dts.wrapping_sub(last) & MASK_33;
                d < 1 << 32 && (d >= PCR_INTERVAL_90K || (keyframe && on_pcr_pid))
            }
        };
        let pcr_base = dts.wrapping_sub(TIME_OFFSET_90K) & MASK_33;
        let mut pes_pcr = None;
        if pcr_due {
            self.last_pcr = Some(dts);
            if on_pcr_pid {
                pes_pcr = Some(pcr_base);
            } else if let Some(pcr_stream) = self.streams.iter().find(|s| s.pid == self.pcr_pid) {
                write_pcr_only(out, pcr_stream.pid, pcr_stream.cc, pcr_base);
            }
        }

        let af0 = adaptation_len(keyframe, pes_pcr.is_some());
        let pad = last_in_segment && !self.continuous;
        let stream = &self.streams[idx];
        let es = &mut self.es;
        let n = packet_count(es.len() - start, af0, stream.cc, pad);
        if pad && is_video {
            // Padding needs one payload byte per extra packet after the PES header: a tiny
            // access unit gets trailing_zero_8bits (H.264 B.1.1) so the header stays whole
            // in the first packet.
            let need = header_len + n - 1;
            if es.len() - start < need {
                es.resize(start + need, 0);
            }
        }

        // PES header, written right before the ES bytes inside the reserved space.
        let pes_len = es.len() - start - 6;
        let pes_len = if pes_len > 0xffff { 0 } else { pes_len as u16 };
        let h = &mut es[start..PES_HEADER_MAX];
        h[..9].copy_from_slice(&[
            0,
            0,
            1,
            stream.stream_id,
            (pes_len >> 8) as u8,
            pes_len as u8,
            // '10', not scrambled, data_alignment_indicator for video access units.
            if is_video { 0x84 } else { 0x80 },
            if with_dts { 0xc0 } else { 0x80 },
            (header_len - 9) as u8,
        ]);
        if with_dts {
            put_timestamp(&mut h[9..], 3, pts);
            put_timestamp(&mut h[14..], 1, dts);
        } else {
            put_timestamp(&mut h[9..], 2, pts);
        }

        let stream = &mut self.streams[idx];
        packetize(
            out,
            stream.pid,
            &mut stream.cc,
            &self.es[start..],
            header_len,
            keyframe,
            pes_pcr,
            pad,
        );
        Ok(())
    }
}

/// Length in bytes of the first TS packet's adaptation field (length byte included) before
/// stuffing: 8 with a PCR, 2 with only random_access_indicator, else 0.
/// The non-empty NAL units `nals` in Annex B form (each after a 4-byte start code).
fn annex_b<'a>(nals: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals.filter(|n| !n.is_empty()) {
        out.extend_from_slice(&h264::START_CODE);
        out.extend_from_slice(nal);
    }
    out
}

fn adaptation_len(rai: bool, pcr: bool) -> usize {
    if pcr {
        8
    } else if rai {
        2
    } else {
        0
    }
}

/// TS packets needed for a PES of `len` bytes whose first packet has an adaptation field of
/// `af0` bytes: the minimum, or with `pad` the smallest count ≥ it that brings `cc` to 0
/// mod 16 (capped at `len`, as each packet must carry a payload byte).
fn packet_count(len: usize, af0: usize, cc: u8, pad: bool) -> usize {
    let cap0 = PAYLOAD_LEN - af0;
    let n_min = if len <= cap0 {
        1
    } else {
        1 + (len - cap0).div_ceil(PAYLOAD_LEN)
    };
    if pad {
        (n_min + (16 - (cc as usize + n_min) % 16) % 16).min(len.max(1))
    } else {
        n_min
    }
}

/// Appends an adaptation-field-only TS packet on `pid` carrying a PCR (`pcr_base` in 90 kHz,
/// extension 0). Such a packet has no payload, so its CC repeats the PID's previous one
/// (`next_cc` − 1) and does not advance (ISO/IEC 13818-1 §2.4.3.3).
fn write_pcr_only(out: &mut Vec<u8>, pid: u16, next_cc: u8, pcr_base: u64) {
    out.extend_from_slice(&[
        SYNC_BYTE,
        (pid >> 8) as u8 & 0x1f,
        pid as u8,
        0x20 | (next_cc.wrapping_sub(1) & 0x0f),
        183,
        0x10,
    ]);
    put_pcr(out, pcr_base);
    out.resize(out.len() + TS_PACKET_LEN - 12, 0xff);
}

/// Appends the 6-byte PCR field: 33-bit base, 6 reserved bits, 9-bit extension 0
/// (ISO/IEC 13818-1 §2.4.3.5).
fn put_pcr(out: &mut Vec<u8>, base: u64) {
    out.extend_from_slice(&[
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base as u8 & 1) << 7) | 0x7e,
        0,
    ]);
}

/// Splits `data` (one whole PES packet whose header is `head` bytes) into TS packets on
/// `pid` (ISO/IEC 13818-1 §2.4.3.2–2.4.3.5), appended to `out`. The first packet has
/// payload_unit_start_indicator and, when `rai` or `pcr_base` (90 kHz) is given, an
/// adaptation field with them; a packet's unused payload room is filled with
/// adaptation-field stuffing. With `pad`, the PES is spread over extra packets so that `*cc`
/// ends at 0 mod 16: the first packet keeps the whole PES header when the PES is long enough,
/// the rest is spread evenly.
#[allow(clippy::too_many_arguments)]
fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    data: &[u8],
    head: usize,
    rai: bool,
    pcr_base: Option<u64>,
    pad: bool,
) {
    let af0 = adaptation_len(rai, pcr_base.is_some());
    let cap0 = PAYLOAD_LEN - af0;
    let len = data.len();
    let n_min = packet_count(len, af0, *cc, false);
    let n = packet_count(len, af0, *cc, pad);
    out.reserve(n * TS_PACKET_LEN);
    let mut pos = 0usize;
    for i in 0..n {
        let rem = len - pos;
        let after = n - i - 1;
        let cap = if i == 0 { cap0 } else { PAYLOAD_LEN };
        let take = if n > n_min {
            let most = cap.min(rem.saturating_sub(after)).max(1).min(rem);
            let even = rem.div_ceil(after + 1);
            if i == 0 {
                most.min(even.max(head))
            } else {
                most.min(even)
            }
        } else {
            cap.min(rem)
        };
        let stuff = cap - take;
        let with_af = (i == 0 && af0 > 0) || stuff > 0;
        out.extend_from_slice(&[
            SYNC_BYTE,
            (if i == 0 { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f),
            pid as u8,
            (if with_af { 0x30 } else { 0x10 }) | (*cc & 0x0f),
        ]);
        if i == 0 && af0 > 0 {
            out.push((af0 - 1 + stuff) as u8);
            out.push(((rai as u8) << 6) | ((pcr_base.is_some() as u8) << 4));
            if let Some(base) = pcr_base {
                put_pcr(out, base);
            }
            out.resize(out.len() + stuff, 0xff);
        } else if stuff > 0 {
            out.push((stuff - 1) as u8);
            if stuff >= 2 {
                out.push(0);
                out.resize(out.len() + stuff - 2, 0xff);
            }
        }
        out.extend_from_slice(data.get(pos..pos + take).unwrap_or(&[]));
        pos += take;
        *cc = (*cc + 1) & 0x0f;
    }
    debug_assert_eq!(pos, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Packet;
    use bytes::Bytes;
    use mpeg2ts::pes::{PesPacketReader, ReadPesPacket};
    use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};
    use proptest::prelude::*;
    use std::collections::HashMap;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];

    fn tracks() -> Vec<Track> {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        let cfg = h264::AvcConfig::from_parameter_sets(SPS, PPS).unwrap();
        h264::write_avcc(&cfg, &mut v.init).unwrap();
        let mut a = Track::new(2, TrackKind::Audio, Codec::Aac);
        a.init = vec![0x11, 0x90]; // LC 48 kHz stereo
        a.lang = Some("eng".into());
        vec![v, a]
    }

    /// An AVCC payload with one NAL unit of `nal_type` and `len` body bytes.
    fn avcc(nal_type: u8, len: usize) -> Vec<u8> {
        let mut out = ((len + 1) as u32).to_be_bytes().to_vec();
        out.push(0x60 | nal_type);
        out.extend((0..len).map(|i| (i % 251) as u8 + 1));
        out
    }

    fn pkt(track: u32, dts: u64, offset: i64, keyframe: bool, data: Vec<u8>) -> Packet {
        Packet {
            track,
            dts,
            offset,
            keyframe,
            bpos: 0,
            data: Bytes::from(data),
        }
    }

    /// Two seconds of 25 fps video (keyframe first, B-frame style offsets) and 48 kHz AAC,
    /// interleaved by DTS, starting at `t0` ms.
    fn segment_packets(t0: u64) -> Vec<Packet> {
        let mut v = Vec::new();
        for i in 0..50u64 {
            let key = i == 0;
            let data = if key {
                avcc(5, 5000)
            } else {
                avcc(1, 300 + (i as usize * 37) % 900)
            };
            v.push(pkt(
                1,
                t0 + i * 40,
                if i % 3 == 1 { 80 } else { 0 },
                key,
                data,
            ));
        }
        for i in 0..94u64 {
            let data = (0..(200 + i as usize % 50)).map(|x| x as u8).collect();
            v.push(pkt(2, t0 + i * 2000 / 94, 0, true, data));
        }
        v.sort_by_key(|p| p.dts);
        v
    }

    /// Muxes one segment with a fresh muxer.
    fn mux_segment(tracks: &[Track], msn: u64, packets: &[Packet]) -> Vec<u8> {
        let mut m = TsMuxer::new(tracks);
        let mut out = Vec::new();
        m.set_segment_number(msn);
        m.write_psi(&mut out);
        for (i, p) in packets.iter().enumerate() {
            let last = !packets[i + 1..].iter().any(|q| q.track == p.track);
            m.write_packet(&p.as_ref(), last, &mut out).unwrap();
        }
        out
    }

    /// Checks sync bytes, whole packets and CC continuity (per payload-carrying packet) on
    /// every PID; returns the number of payload-carrying TS packets per PID.
    fn check_cc(ts: &[u8]) -> HashMap<u16, usize> {
        assert_eq!(ts.len() % TS_PACKET_LEN, 0);
        let mut last: HashMap<u16, u8> = HashMap::new();
        let mut counts = HashMap::new();
        for p in ts.chunks(TS_PACKET_LEN) {
            assert_eq!(p[0], SYNC_BYTE);
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            let afc = (p[3] >> 4) & 3;
            assert_ne!(afc, 0);
            if afc & 2 != 0 {
                assert!((p[4] as usize) <= 183);
            }
            let cc = p[3] & 0x0f;
            if afc & 1 != 0 {
                if let Some(prev) = last.get(&pid) {
                    assert_eq!(cc, (prev + 1) & 0x0f, "CC jump on PID {pid:#x}");
                }
                last.insert(pid, cc);
                *counts.entry(pid).or_insert(0) += 1;
            } else if let Some(prev) = last.get(&pid) {
                // Adaptation-only packets repeat the previous CC.
                assert_eq!(cc, *prev, "CC of adaptation-only packet on PID {pid:#x}");
            }
        }
        counts
    }

    #[test]
    fn crc_matches_the_mpeg2_reference_pat() {
        let m = TsMuxer::new(&tracks());
        let mut out = Vec::new();
        let mut m2 = m.clone();
        m2.write_psi(&mut out);
        // The common single-program PAT: tsid 1, program 1 on PID 0x1000.
        assert_eq!(
            &out[4..21],
            &[
                0x00, 0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a,
                0xb1, 0x04, 0xb2
            ]
        );
        assert!(out[21..188].iter().all(|&b| b == 0xff));
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn hevc_is_stream_type_0x24_with_aud_and_parameter_sets_before_keyframes() {
        let mut v = Track::new(1, TrackKind::Video, Codec::Hevc);
        v.init = crate::hevc::tests_support::hvcc();
        let tracks = [v];
        // An IDR_W_RADL (type 19) slice, then a TRAIL_R (type 1) slice, 4-byte lengths.
        let idr = [0x26u8, 0x01, 0xaf, 0x11];
        let trail = [0x02u8, 0x01, 0xd0, 0x22];
        let frame = |nal: &[u8]| {
            let mut b = (nal.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(nal);
            b
        };
        let packets = [
            pkt(1, 0, 0, true, frame(&idr)),
            pkt(1, 40, 0, false, frame(&trail)),
        ];
        let ts = mux_segment(&tracks, 0, &packets);
        let mut reader = TsPacketReader::new(&ts[..]);
        let mut types = Vec::new();
        while let Some(p) = reader.read_ts_packet().unwrap() {
            if let Some(TsPayload::Pmt(pmt)) = p.payload {
                assert_eq!(pmt.pcr_pid.unwrap().as_u16(), 0x100);
                types.extend(pmt.es_info.iter().map(|e| e.stream_type as u8));
            }
        }
        assert_eq!(types, [0x24]);
        let mut reader = PesPacketReader::new(TsPacketReader::new(&ts[..]));
        let mut pes = Vec::new();
        while let Some(p) = reader.read_pes_packet().unwrap() {
            assert_eq!(p.header.stream_id.as_u8(), 0xe0);
            pes.push(p.data);
        }
        assert_eq!(pes.len(), 2);
        let cfg = crate::hevc::parse_hvcc(&tracks[0].init).unwrap();
        let mut want = crate::hevc::AUD.to_vec();
        for (_, nal) in &cfg.nal_units {
            want.extend_from_slice(&[0, 0, 0, 1]);
            want.extend_from_slice(nal);
        }
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&idr);
        assert_eq!(
            &pes[0][..want.len()],
            &want[..],
            "AUD, VPS, SPS, PPS, then the IDR"
        );
        let mut want = crate::hevc::AUD.to_vec();
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(&trail);
        assert_eq!(
            &pes[1][..want.len()],
            &want[..],
            "no parameter sets before a non-IRAP"
        );
    }

    #[test]
    fn demuxes_with_mpeg2ts() {
        let tracks = tracks();
        let packets = segment_packets(10_000);
        let ts = mux_segment(&tracks, 3, &packets);
        check_cc(&ts);

        // PSI (the reader checks the CRCs).
        let mut reader = TsPacketReader::new(&ts[..]);
        let mut saw_pat = false;
        let mut saw_pmt = false;
        let mut pcrs = Vec::new();
        while let Some(p) = reader.read_ts_packet().unwrap() {
            match p.payload {
                Some(TsPayload::Pat(pat)) => {
                    saw_pat = true;
                    assert_eq!(pat.transport_stream_id, 1);
                    assert_eq!(pat.table[0].program_num, 1);
                    assert_eq!(pat.table[0].program_map_pid.as_u16(), PMT_PID);
                    assert_eq!(p.header.continuity_counter.as_u8(), 3);
                }
                Some(TsPayload::Pmt(pmt)) => {
                    saw_pmt = true;
                    assert_eq!(pmt.pcr_pid.unwrap().as_u16(), 0x100);
                    let es: Vec<(u8, u16)> = pmt
                        .es_info
                        .iter()
                        .map(|e| (e.stream_type as u8, e.elementary_pid.as_u16()))
                        .collect();
                    assert_eq!(es, [(0x1b, 0x100), (0x0f, 0x101)]);
                    assert_eq!(pmt.es_info[1].descriptors[0].tag, 0x0a);
                    assert_eq!(pmt.es_info[1].descriptors[0].data, b"eng\0");
                }
                _ => {}
            }
            if let Some(af) = &p.adaptation_field {
                if let Some(pcr) = af.pcr {
                    assert_eq!(p.header.pid.as_u16(), 0x100);
                    pcrs.push(pcr.as_u64());
                }
            }
        }
        assert!(saw_pat && saw_pmt);
        // First PCR at the keyframe's DTS (10 s) in 27 MHz; then at least every 100 ms.
        assert_eq!(pcrs[0], 10_000 * 27_000);
        assert!(pcrs
            .windows(2)
            .all(|w| w[1] > w[0] && w[1] - w[0] <= 100 * 27_000));

        // PES.
        let mut reader = PesPacketReader::new(TsPacketReader::new(&ts[..]));
        let mut video = Vec::new();
        let mut audio = Vec::new();
        while let Some(pes) = reader.read_pes_packet().unwrap() {
            let id = pes.header.stream_id.as_u8();
            let pts = pes.header.pts.unwrap().as_u64();
            let dts = pes.header.dts.map(|d| d.as_u64());
            match id {
                0xe0 => video.push((pts, dts, pes.data)),
                0xc0 => audio.push((pts, dts, pes.data)),
                other => panic!("stream id {other:#x}"),
            }
        }
        assert_eq!(video.len(), 50);
        assert_eq!(audio.len(), 94);
        let vin: Vec<&Packet> = packets.iter().filter(|p| p.track == 1).collect();
        for ((pts, dts, data), p) in video.iter().zip(&vin) {
            let want_dts = p.dts * 90 + TIME_OFFSET_90K;
            let want_pts = p.pts() * 90 + TIME_OFFSET_90K;
            assert_eq!(*pts, want_pts);
            assert_eq!(*dts, if p.offset != 0 { Some(want_dts) } else { None });
            // AUD first.
            assert_eq!(&data[..6], &[0, 0, 0, 1, 9, 0xf0]);
            let mut expect = AUD.to_vec();
            if p.keyframe {
                // SPS + PPS before the IDR.
                for ps in [SPS, PPS] {
                    expect.extend_from_slice(&[0, 0, 0, 1]);
                    expect.extend_from_slice(ps);
                }
            }
            h264::avcc_to_annexb(&p.data, 4, &mut expect).unwrap();
            assert_eq!(data, &expect);
        }
        let ain: Vec<&Packet> = packets.iter().filter(|p| p.track == 2).collect();
        for ((pts, dts, data), p) in audio.iter().zip(&ain) {
            assert_eq!(*pts, p.dts * 90 + TIME_OFFSET_90K);
            assert_eq!(*dts, None);
            assert_eq!(&data[..2], &[0xff, 0xf1]);
            let flen = ((data[3] as usize & 3) << 11)
                | ((data[4] as usize) << 3)
                | (data[5] as usize >> 5);
            assert_eq!(flen, data.len());
            assert_eq!(&data[7..], &p.data[..]);
        }
    }

    #[test]
    fn cc_continues_across_independently_made_segments() {
        let tracks = tracks();
        let seg_a = mux_segment(&tracks, 15, &segment_packets(0));
        let seg_b = mux_segment(&tracks, 16, &segment_packets(2000));
        let counts_a = check_cc(&seg_a);
        // Elementary PIDs carry a multiple of 16 payload packets per segment.
        for pid in [0x100u16, 0x101] {
            assert_eq!(counts_a[&pid] % 16, 0, "PID {pid:#x}");
        }
        assert_eq!(seg_a[3] & 0x0f, 15);
        assert_eq!(seg_b[3] & 0x0f, 0);
        let mut joined = seg_a.clone();
        joined.extend_from_slice(&seg_b);
        check_cc(&joined);
        // Same segment made again (or by a reused muxer) is byte-identical.
        assert_eq!(seg_a, mux_segment(&tracks, 15, &segment_packets(0)));
        let mut m = TsMuxer::new(&tracks);
        let mut out = Vec::new();
        for (msn, t0) in [(15, 0), (16, 2000)] {
            m.set_segment_number(msn);
            m.write_psi(&mut out);
            let ps = segment_packets(t0);
            for (i, p) in ps.iter().enumerate() {
                let last = !ps[i + 1..].iter().any(|q| q.track == p.track);
                m.write_packet(&p.as_ref(), last, &mut out).unwrap();
            }
        }
        assert_eq!(out, joined);
        // The padded stream still demuxes to the same access units.
        let mut reader = PesPacketReader::new(TsPacketReader::new(&joined[..]));
        let mut n = 0;
        while reader.read_pes_packet().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2 * (50 + 94));
    }

    #[test]
    fn keeps_existing_sps_and_drops_payload_auds() {
        let tracks = tracks();
        let mut m = TsMuxer::continuous(&tracks);
        let mut payload = vec![0, 0, 0, 2, 0x09, 0x10];
        payload.extend(avcc(7, 4));
        payload.extend(avcc(8, 2));
        payload.extend(avcc(5, 10));
        let mut out = Vec::new();
        m.write_psi(&mut out);
        m.write_packet(
            &pkt(1, 0, 0, true, payload.clone()).as_ref(),
            true,
            &mut out,
        )
        .unwrap();
        let mut reader = PesPacketReader::new(TsPacketReader::new(&out[..]));
        let pes = reader.read_pes_packet().unwrap().unwrap();
        let mut expect = AUD.to_vec();
        h264::avcc_to_annexb(&payload[6..], 4, &mut expect).unwrap();
        assert_eq!(pes.data, expect);
        // Continuous mode never pads: one PES of ~60 bytes is one TS packet.
        assert_eq!(out.len(), 3 * TS_PACKET_LEN);
    }

    #[test]
    fn large_video_pes_has_zero_length_and_errors_leave_output_alone() {
        let tracks = tracks();
        let mut m = TsMuxer::new(&tracks);
        let mut out = Vec::new();
        m.write_packet(
            &pkt(1, 0, 0, true, avcc(5, 70_000)).as_ref(),
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[4 + 8 + 4..4 + 8 + 6], &[0, 0]);
        let before = out.clone();
        assert!(m
            .write_packet(
                &pkt(1, 40, 0, false, vec![0, 0, 1, 0]).as_ref(),
                true,
                &mut out
            )
            .is_err());
        assert!(m
            .write_packet(
                &pkt(2, 40, 0, false, vec![0; 9000]).as_ref(),
                true,
                &mut out
            )
            .is_err());
        assert_eq!(out, before);
        // Unknown tracks are ignored.
        m.write_packet(&pkt(9, 0, 0, true, vec![1]).as_ref(), true, &mut out)
            .unwrap();
        assert_eq!(out, before);
    }

    #[test]
    fn audio_only_and_mp3_streams() {
        let mut mp3 = Track::new(5, TrackKind::Audio, Codec::Mp3);
        mp3.rate = 22050;
        let mut aac = Track::new(6, TrackKind::Audio, Codec::Aac);
        aac.rate = 44100;
        aac.channels = 2;
        let other = Track::new(7, TrackKind::Meta, Codec::Other("JSON".into()));
        let tracks = [other, mp3, aac];
        let m = TsMuxer::new(&tracks);
        assert_eq!(m.pid_of(7), None);
        assert_eq!(m.pid_of(5), Some(0x101));
        assert_eq!(m.pid_of(6), Some(0x102));
        assert_eq!(m.pcr_pid(), 0x101);
        let packets = vec![
            pkt(5, 0, 0, true, vec![0xff; 417]),
            pkt(6, 10, 0, true, vec![0x21; 300]),
            pkt(5, 26, 0, true, vec![0xff; 417]),
        ];
        let ts = mux_segment(&tracks, 0, &packets);
        let counts = check_cc(&ts);
        assert_eq!(counts[&0x101] % 16, 0);
        let mut reader = TsPacketReader::new(&ts[..]);
        while let Some(p) = reader.read_ts_packet().unwrap() {
            if let Some(TsPayload::Pmt(pmt)) = p.payload {
                let types: Vec<u8> = pmt.es_info.iter().map(|e| e.stream_type as u8).collect();
                assert_eq!(types, [0x04, 0x0f]);
            }
        }
        let mut reader = PesPacketReader::new(TsPacketReader::new(&ts[..]));
        let mut n = 0;
        while let Some(pes) = reader.read_pes_packet().unwrap() {
            n += 1;
            if pes.data.len() == 307 {
                // AAC LC 44.1 kHz stereo from rate/channels: sampling index 4.
                assert_eq!(&pes.data[..3], &[0xff, 0xf1, 0x50]);
            }
        }
        assert_eq!(n, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_packets_make_valid_continuous_ts(
            items in proptest::collection::vec(
                (0u32..4, 0usize..3000, 0u64..100, -50i64..200, any::<bool>()), 1..40),
            msn in 0u64..1000,
            garbage in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let tracks = tracks();
            let mut segs = Vec::new();
            let mut muxed = 0;
            for s in 0..2u64 {
                let mut dts = s * 100_000;
                let mut packets = Vec::new();
                for (track, size, step, off, key) in &items {
                    dts += step;
                    let (t, data) = match track {
                        0 => (1, avcc(if *key { 5 } else { 1 }, *size)),
                        1 => (2, vec![0x5a; *size % 8000]),
                        2 => (1 + (*size as u32 % 2), garbage.clone()),
                        _ => (2, vec![1; *size]),
                    };
                    let p = pkt(t, dts, *off, *key, data);
                    // Drop packets the muxer rejects, checking that a rejection writes nothing.
                    let mut probe = TsMuxer::continuous(&tracks);
                    let mut out = vec![7u8];
                    match probe.write_packet(&p.as_ref(), false, &mut out) {
                        Ok(()) => packets.push(p),
                        Err(_) => prop_assert_eq!(out, vec![7u8]),
                    }
                }
                muxed += packets.len();
                let out = mux_segment(&tracks, msn + s, &packets);
                prop_assert_eq!(out.len() % TS_PACKET_LEN, 0);
                segs.push(out);
            }
            let mut joined = segs[0].clone();
            joined.extend_from_slice(&segs[1]);
            check_cc(&joined);
            // One PES start per muxed access unit, each a PES start code on a carried PID.
            let starts = joined
                .chunks(TS_PACKET_LEN)
                .filter(|p| p[1] & 0x40 != 0 && u16::from_be_bytes([p[1] & 0x1f, p[2]]) >= ES_PID_BASE
                    && u16::from_be_bytes([p[1] & 0x1f, p[2]]) != PMT_PID)
                .count();
            prop_assert_eq!(starts, muxed);
        }
    }
}
