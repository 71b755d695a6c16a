//! `ts`: an MPEG-2 transport stream (ISO/IEC 13818-1) packet by packet: the transport packet
//! headers and adaptation fields (§2.4.3.2–§2.4.3.5: PID, continuity counter, PCR), the PAT
//! and PMT (§2.4.4.3, §2.4.4.8), PES headers (§2.4.3.6/§2.4.3.7: PTS and DTS in 90 kHz
//! ticks), and the access units `dtsc::tsdemux` makes of the stream (keyframes, ms times).
//!
//! The packet and PSI walk here is for display (the demuxer keeps neither PIDs nor ticks nor
//! PCRs, and reads every program); sections, PAT/PMT loops and PES headers are read by
//! `dtsc::tsdemux`'s `parse_section`, `pat_programs`, `pmt_streams` and `parse_pes_header`,
//! the demuxer's own readers, and the media by `dtsc::tsdemux::TsDemuxer`.
//!
//! Rules checked:
//! * §2.4.3.3 `sync_byte`: every 188-byte packet starts with 0x47.
//! * §2.4.3.3 `continuity_counter`: +1 mod 16 per payload-carrying packet of a PID (one
//!   duplicate allowed; `discontinuity_indicator` resets it).
//! * §2.4.4.9 `PCR_PID`: the PMT's PCR PID carries PCRs, at most 100 ms apart (§2.7.2).
//! * §2.4.3.7 PTS/DTS: DTS ≤ PTS, DTS never goes back on a PID (modulo the 33-bit wrap).
//! * §2.4.3.6: a payload that starts a PES (0x000001) has a header that parses (read by
//!   `dtsc::tsdemux::parse_pes_header`, the demuxer's own reader).
//! * §2.4.4.11 `CRC_32` of PAT and PMT sections.

use std::collections::BTreeMap;

use dtsc::ts::{SYNC_BYTE, TS_PACKET_LEN};
use dtsc::tsdemux::{
    parse_pes_header, parse_section, pat_programs, pmt_pcr_pid, pmt_streams, TsDemuxer, TsEvent,
};
use serde::Serialize;

use crate::report::{AccessUnit, ReadError, TrackInfo, Violation};

/// One program of the PAT (§2.4.4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatProgram {
    /// `program_number` (0 is the network PID).
    pub program_number: u16,
    /// The PID of its PMT (or of the NIT for program 0).
    pub pmt_pid: u16,
}

/// A PAT section (§2.4.4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pat {
    /// Byte offset of the TS packet where the section started.
    pub offset: u64,
    /// `transport_stream_id`.
    pub transport_stream_id: u16,
    /// `version_number`.
    pub version: u8,
    /// The programs.
    pub programs: Vec<PatProgram>,
}

/// An elementary stream of a PMT (§2.4.4.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmtStream {
    /// `elementary_PID`.
    pub pid: u16,
    /// `stream_type` (Table 2-34).
    pub stream_type: u8,
    /// What the stream type means.
    pub stream_type_name: &'static str,
}

/// A PMT section (§2.4.4.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pmt {
    /// Byte offset of the TS packet where the section started.
    pub offset: u64,
    /// The PID it came on.
    pub pid: u16,
    /// `program_number`.
    pub program_number: u16,
    /// `version_number`.
    pub version: u8,
    /// `PCR_PID`.
    pub pcr_pid: u16,
    /// The elementary streams.
    pub streams: Vec<PmtStream>,
}

/// A PES packet header (§2.4.3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pes {
    /// Byte offset of the TS packet with `payload_unit_start_indicator` where it starts.
    pub offset: u64,
    /// The PID.
    pub pid: u16,
    /// `stream_id` (0xE0.. video, 0xC0.. audio, 0xBD private).
    pub stream_id: u8,
    /// PTS, 90 kHz ticks (33 bits, as coded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pts: Option<u64>,
    /// DTS, 90 kHz ticks (the PTS when no DTS is coded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dts: Option<u64>,
    /// PTS in ms (ticks / 90, rounded down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pts_ms: Option<u64>,
    /// DTS in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dts_ms: Option<u64>,
    /// `random_access_indicator` of the adaptation field of its first TS packet.
    pub random_access: bool,
    /// Bytes of elementary stream data (the PES payload after its header), as far as read.
    pub size: u64,
}

/// A program clock reference (§2.4.3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pcr {
    /// Byte offset of the TS packet.
    pub offset: u64,
    /// The PID.
    pub pid: u16,
    /// `program_clock_reference_base`, 90 kHz ticks.
    pub base: u64,
    /// `program_clock_reference_extension`, 27 MHz ticks (0..300).
    pub extension: u16,
    /// The PCR in ms (base / 90).
    pub ms: u64,
}

/// Counts per PID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidStats {
    /// The PID.
    pub pid: u16,
    /// What it carries: `PAT`, `PMT`, the stream type name, `null` or `unknown`.
    pub carries: String,
    /// TS packets.
    pub packets: u64,
    /// PES packets started.
    pub pes: u64,
    /// PCRs carried.
    pub pcrs: u64,
    /// Continuity counter errors.
    pub cc_errors: u64,
}

/// The report of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TsReport {
    /// TS packets read.
    pub packets: u64,
    /// The PID the lists were restricted to (`-P`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_pid: Option<u16>,
    /// Each PAT version seen.
    pub pat: Vec<Pat>,
    /// Each PMT version seen.
    pub pmt: Vec<Pmt>,
    /// Counts per PID, in PID order.
    pub pids: Vec<PidStats>,
    /// The tracks the demuxer announced.
    pub tracks: Vec<TrackInfo>,
    /// Every PES header.
    pub pes: Vec<Pes>,
    /// Every PCR.
    pub pcr: Vec<Pcr>,
    /// Every access unit of the demuxer, ms times.
    pub access_units: Vec<AccessUnit>,
    /// Rules broken.
    pub violations: Vec<Violation>,
    /// Where reading stopped early.
    pub error: Option<ReadError>,
}

/// The name of a `stream_type` (ISO/IEC 13818-1 Table 2-34 and common registrations).
pub fn stream_type_name(t: u8) -> &'static str {
    match t {
        0x01 => "MPEG-1 video",
        0x02 => "MPEG-2 video",
        0x03 => "MPEG-1 audio",
        0x04 => "MPEG-2 audio",
        0x06 => "PES private data",
        0x0F => "AAC (ADTS)",
        0x11 => "AAC (LATM)",
        0x15 => "metadata (ID3)",
        0x1B => "H.264",
        0x24 => "HEVC",
        0x81 => "AC-3",
        0x87 => "E-AC-3",
        _ => "other",
    }
}

const RULE_SYNC: &str = "ISO/IEC 13818-1 §2.4.3.3 sync_byte";
const RULE_CC: &str = "ISO/IEC 13818-1 §2.4.3.3 continuity_counter";
const RULE_PCR: &str = "ISO/IEC 13818-1 §2.4.4.9 PCR_PID (PCRs at most 100 ms apart, §2.7.2)";
const RULE_DTS: &str = "ISO/IEC 13818-1 §2.4.3.7 PTS/DTS (DTS <= PTS, DTS never back)";
const RULE_PES: &str =
    "ISO/IEC 13818-1 §2.4.3.6 PES_packet ('10' marker, header in the first TS packet)";
const RULE_CRC: &str = "ISO/IEC 13818-1 §2.4.4.11 CRC_32";

/// Largest PCR interval allowed, 90 kHz ticks (100 ms, §2.7.2).
const MAX_PCR_GAP: u64 = 9000;
const MASK_33: u64 = (1 << 33) - 1;

#[derive(Default)]
struct PidState {
    stats: PidStats,
    cc: Option<u8>,
    dup: bool,
    section: Vec<u8>,
    section_at: u64,
    /// A section start (PUSI) was seen and `section` holds it: without one, bytes on a PSI
    /// PID continue a section that began before the capture and are skipped.
    in_section: bool,
    last_dts: Option<u64>,
    last_pcr: Option<u64>,
    /// Index in `pes` of the PES being read.
    open_pes: Option<usize>,
}

/// Walks a whole transport stream (or as much as there is). `only_pid` restricts the item
/// lists (PES, PCR, access units) to one PID; counts cover every PID. Never panics.
pub fn analyse(buf: &[u8], only_pid: Option<u16>) -> TsReport {
    let mut r = TsReport {
        only_pid,
        ..TsReport::default()
    };
    let mut pids: BTreeMap<u16, PidState> = BTreeMap::new();
    let mut psi = Psi::default();
    // PES start offset → PID, to place the demuxer's access units.
    let mut pes_pid: BTreeMap<u64, u16> = BTreeMap::new();
    let mut pos = 0usize;
    let mut synced = true;
    while pos < buf.len() {
        if buf[pos] != SYNC_BYTE {
            if synced {
                r.violations.push(Violation::at(
                    RULE_SYNC,
                    pos as u64,
                    format!("byte 0x{:02x} where a sync byte belongs", buf[pos]),
                ));
            }
            synced = false;
            pos += 1;
            continue;
        }
        if buf.len() - pos < TS_PACKET_LEN {
            r.error = Some(ReadError::at(
                pos as u64,
                format!(
                    "truncated TS packet: {TS_PACKET_LEN} bytes needed, {} present",
                    buf.len() - pos
                ),
            ));
            break;
        }
        // After a loss of sync, a 0x47 counts only when the next packet starts with one too.
        if !synced
            && buf
                .get(pos + TS_PACKET_LEN)
                .is_some_and(|&b| b != SYNC_BYTE)
        {
            pos += 1;
            continue;
        }
        synced = true;
        let p = &buf[pos..pos + TS_PACKET_LEN];
        let at = pos as u64;
        pos += TS_PACKET_LEN;
        r.packets += 1;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0xf;
        let st = pids.entry(pid).or_default();
        st.stats.pid = pid;
        st.stats.packets += 1;
        if pid == 0x1FFF {
            continue;
        }
        let mut payload_at = 4;
        let mut discontinuity = false;
        let mut random_access = false;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            payload_at = 5 + len;
            if len > 0 && 5 + len <= TS_PACKET_LEN {
                let flags = p[5];
                discontinuity = flags & 0x80 != 0;
                random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 && len >= 7 {
                    let b = &p[6..12];
                    let base = u64::from(b[0]) << 25
                        | u64::from(b[1]) << 17
                        | u64::from(b[2]) << 9
                        | u64::from(b[3]) << 1
                        | u64::from(b[4]) >> 7;
                    let extension = (u16::from(b[4] & 1) << 8) | u16::from(b[5]);
                    st.stats.pcrs += 1;
                    if let Some(last) = st.last_pcr {
                        let gap = base.wrapping_sub(last) & MASK_33;
                        if gap > MAX_PCR_GAP && !discontinuity {
                            r.violations.push(Violation::at(
                                RULE_PCR,
                                at,
                                format!("PID {pid}: PCR {} ms after the last one", gap / 90),
                            ));
                        }
                    }
                    st.last_pcr = Some(base);
                    if only_pid.is_none_or(|o| o == pid) {
                        r.pcr.push(Pcr {
                            offset: at,
                            pid,
                            base,
                            extension,
                            ms: base / 90,
                        });
                    }
                }
            }
        }
        if afc & 1 == 0 {
            continue;
        }
        // Continuity counter (§2.4.3.3).
        if let Some(last) = st.cc {
            if discontinuity {
                st.dup = false;
            } else if cc == last && !st.dup {
                st.dup = true;
            } else if cc != (last + 1) & 0xf {
                st.stats.cc_errors += 1;
                r.violations.push(Violation::at(
                    RULE_CC,
                    at,
                    format!("PID {pid}: continuity counter {cc} after {last}"),
                ));
                st.dup = false;
                // A section cut by the loss would fail its CRC: the loss is the finding.
                st.section.clear();
                st.in_section = false;
            } else {
                st.dup = false;
            }
        }
        st.cc = Some(cc);
        if payload_at >= TS_PACKET_LEN {
            continue;
        }
        let payload = &p[payload_at..];
        let is_psi = pid == 0 || psi.pmt_pids.contains(&pid);
        if is_psi {
            let st = pids.get_mut(&pid).expect("inserted above");
            let mut data = payload;
            if st.dup {
                continue; // a duplicate packet repeats the payload just read (§2.4.3.3)
            }
            if pusi {
                let ptr = usize::from(data[0]);
                let rest = &data[1..];
                // The bytes before the pointer end the previous section.
                if st.in_section {
                    st.section.extend_from_slice(&rest[..ptr.min(rest.len())]);
                    let prev = std::mem::take(&mut st.section);
                    let prev_at = st.section_at;
                    psi.sections(&prev, pid, prev_at, &mut r);
                }
                data = rest.get(ptr..).unwrap_or(&[]);
                let st = pids.get_mut(&pid).expect("inserted above");
                st.section_at = at;
                st.section.clear();
                st.section.extend_from_slice(data);
                st.in_section = true;
            } else if st.in_section {
                st.section.extend_from_slice(data);
            }
            let st = pids.get_mut(&pid).expect("inserted above");
            if st.in_section && complete(&st.section) {
                st.in_section = false;
                let done = std::mem::take(&mut st.section);
                let sat = st.section_at;
                psi.sections(&done, pid, sat, &mut r);
            }
            continue;
        }
        let st = pids.get_mut(&pid).expect("inserted above");
        if pusi {
            st.open_pes = None;
            if let Some(h) = parse_pes_header(payload) {
                let (pts, dts) = (h.pts, h.dts);
                st.stats.pes += 1;
                pes_pid.insert(at, pid);
                if let (Some(pts), Some(dts)) = (pts, dts) {
                    if dts != pts && (pts.wrapping_sub(dts) & MASK_33) > 1 << 32 {
                        r.violations.push(Violation::at(
                            RULE_DTS,
                            at,
                            format!("PID {pid}: DTS {dts} after PTS {pts}"),
                        ));
                    }
                    if let Some(last) = st.last_dts {
                        if dts != last && (dts.wrapping_sub(last) & MASK_33) > 1 << 32 {
                            r.violations.push(Violation::at(
                                RULE_DTS,
                                at,
                                format!("PID {pid}: DTS {dts} goes back from {last}"),
                            ));
                        }
                    }
                    st.last_dts = Some(dts);
                }
                if only_pid.is_none_or(|o| o == pid) {
                    st.open_pes = Some(r.pes.len());
                    r.pes.push(Pes {
                        offset: at,
                        pid,
                        stream_id: h.stream_id,
                        pts,
                        dts,
                        pts_ms: pts.map(|t| t / 90),
                        dts_ms: dts.map(|t| t / 90),
                        random_access,
                        size: h.payload.len() as u64,
                    });
                }
            } else if payload.starts_with(&[0, 0, 1]) {
                r.violations.push(Violation::at(
                    RULE_PES,
                    at,
                    format!("PID {pid}: a PES header that does not parse"),
                ));
            }
        } else if let Some(i) = st.open_pes {
            r.pes[i].size += payload.len() as u64;
        }
    }
    for pcr_pid in &psi.pcr_pids {
        if pids.get(pcr_pid).is_none_or(|s| s.stats.pcrs == 0) && *pcr_pid != 0x1FFF {
            r.violations.push(Violation::new(
                RULE_PCR,
                format!("PCR_PID {pcr_pid} carries no PCR"),
            ));
        }
    }
    for (pid, mut st) in pids {
        st.stats.carries = if pid == 0 {
            "PAT".into()
        } else if psi.pmt_pids.contains(&pid) {
            "PMT".into()
        } else if pid == 0x1FFF {
            "null".into()
        } else if pid == 0x11 {
            "SDT (DVB)".into()
        } else if let Some(t) = psi.es_types.get(&pid) {
            stream_type_name(*t).into()
        } else {
            "unknown".into()
        };
        r.pids.push(st.stats);
    }
    // The media, through the demuxer Sluice's inputs use.
    let mut demux = TsDemuxer::new();
    let mut events = Vec::new();
    let usable = r.error.as_ref().map_or(buf.len(), |e| e.offset as usize);
    demux.push(&buf[..usable], &mut events);
    demux.finish(&mut events);
    r.tracks = demux.tracks().iter().map(TrackInfo::from).collect();
    for ev in &events {
        if let TsEvent::Packet(p) = ev {
            let pid = pes_pid.get(&p.bpos).copied();
            if only_pid.is_none() || pid == only_pid {
                r.access_units.push(AccessUnit::of(&p.as_ref(), true));
            }
        }
    }
    r
}

/// True when `s` holds a whole section (3 + `section_length` bytes) or only stuffing.
fn complete(s: &[u8]) -> bool {
    match s {
        [] => false,
        [0xFF, ..] => true,
        [_, b1, b2, ..] => s.len() >= 3 + (usize::from(u16::from_be_bytes([*b1, *b2])) & 0xFFF),
        _ => false,
    }
}

/// What the PAT and PMTs read so far say about the PIDs.
#[derive(Default)]
struct Psi {
    /// The PMT PIDs of every program of the PAT.
    pmt_pids: Vec<u16>,
    /// Elementary PID → `stream_type`, from every PMT.
    es_types: BTreeMap<u16, u8>,
    /// The `PCR_PID` of every PMT.
    pcr_pids: Vec<u16>,
}

impl Psi {
    /// Reads the sections in `s` (PAT on PID 0, PMTs on their PIDs), which started in the TS
    /// packet at `at`, into the report.
    fn sections(&mut self, mut s: &[u8], pid: u16, at: u64, r: &mut TsReport) {
        while s.len() >= 3 && s[0] != 0xFF {
            let len = 3 + (usize::from(u16::from_be_bytes([s[1], s[2]])) & 0xFFF);
            if s.len() < len {
                return;
            }
            let sec = &s[..len];
            s = &s[len..];
            if len < 12 {
                continue;
            }
            let Some(sec) = parse_section(sec) else {
                r.violations.push(Violation::at(
                    RULE_CRC,
                    at,
                    format!("PID {pid}: section with table_id {} has a bad CRC", sec[0]),
                ));
                continue;
            };
            let version = sec.version;
            match sec.table_id {
                0x00 if pid == 0 => {
                    let tsid = sec.id;
                    if r.pat
                        .last()
                        .is_some_and(|p| p.version == version && p.transport_stream_id == tsid)
                    {
                        continue;
                    }
                    let programs: Vec<PatProgram> = pat_programs(sec.body)
                        .map(|(program_number, pmt_pid)| PatProgram {
                            program_number,
                            pmt_pid,
                        })
                        .collect();
                    for p in &programs {
                        if p.program_number != 0 && !self.pmt_pids.contains(&p.pmt_pid) {
                            self.pmt_pids.push(p.pmt_pid);
                        }
                    }
                    r.pat.push(Pat {
                        offset: at,
                        transport_stream_id: tsid,
                        version,
                        programs,
                    });
                }
                0x02 => {
                    if r.pmt
                        .iter()
                        .rev()
                        .find(|p| p.pid == pid)
                        .is_some_and(|p| p.version == version)
                    {
                        continue;
                    }
                    let Some(pcr_pid) = pmt_pcr_pid(sec.body) else {
                        continue;
                    };
                    let streams: Vec<PmtStream> = pmt_streams(sec.body)
                        .map(|e| {
                            self.es_types.insert(e.pid, e.stream_type);
                            PmtStream {
                                pid: e.pid,
                                stream_type: e.stream_type,
                                stream_type_name: stream_type_name(e.stream_type),
                            }
                        })
                        .collect();
                    if !self.pcr_pids.contains(&pcr_pid) {
                        self.pcr_pids.push(pcr_pid);
                    }
                    r.pmt.push(Pmt {
                        offset: at,
                        pid,
                        program_number: sec.id,
                        version,
                        pcr_pid,
                        streams,
                    });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtsc::{Codec, PacketRef, Track, TrackKind};
    use proptest::prelude::*;

    /// A TS made by Sluice's own muxer: H.264 with two access units.
    fn sample_ts() -> Vec<u8> {
        let sps = [
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let cfg = dtsc::h264::AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        let mut t = Track::new(1, TrackKind::Video, Codec::H264);
        dtsc::h264::write_avcc(&cfg, &mut t.init).unwrap();
        let mut mux = dtsc::ts::TsMuxer::new(&[t]);
        let mut out = Vec::new();
        mux.write_psi(&mut out);
        let idr = [0, 0, 0, 5, 0x65, 0x88, 0x84, 0x21, 0xa0];
        let p = [0, 0, 0, 5, 0x41, 0x9a, 0x24, 0x6c, 0x42];
        let aus = [
            (&idr[..], true),
            (&p[..], false),
            (&p[..], false),
            (&p[..], false),
            (&p[..], false),
            (&p[..], false),
        ];
        for (i, (data, key)) in aus.iter().enumerate() {
            let pkt = PacketRef {
                track: 1,
                dts: 40 * i as u64,
                offset: 40,
                keyframe: *key,
                bpos: 0,
                data,
            };
            mux.write_packet(&pkt, false, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn reads_pat_pmt_pes_and_access_units() {
        let ts = sample_ts();
        let r = analyse(&ts, None);
        assert_eq!(r.error, None);
        assert_eq!(r.pat.len(), 1);
        assert_eq!(r.pmt.len(), 1);
        let pmt = &r.pmt[0];
        assert_eq!(pmt.streams.len(), 1);
        assert_eq!(pmt.streams[0].stream_type, 0x1B);
        let vpid = pmt.streams[0].pid;
        let pes: Vec<&Pes> = r.pes.iter().filter(|p| p.pid == vpid).collect();
        assert_eq!(pes.len(), 6);
        assert_eq!(pes[1].dts.unwrap() - pes[0].dts.unwrap(), 40 * 90);
        assert_eq!(pes[0].pts.unwrap() - pes[0].dts.unwrap(), 40 * 90);
        assert_eq!(r.access_units.len(), 6);
        assert!(r.access_units[0].keyframe && !r.access_units[1].keyframe);
        assert_eq!(r.tracks[0].codec, "H264");
        assert!(
            r.violations.iter().all(|v| v.rule != RULE_CC),
            "{:?}",
            r.violations
        );
        let only = analyse(&ts, Some(0));
        assert!(only.pes.is_empty() && only.access_units.is_empty());
    }

    #[test]
    fn a_capture_that_starts_inside_a_section_reports_no_false_crc() {
        // PAT, then the tail of a PMT that began before the capture (no PUSI; it looks like
        // a section header whose CRC cannot match), then the whole PMT, then a duplicate of
        // it: one PMT and no violation.
        let ts = sample_ts();
        let (pat, rest) = ts.split_at(TS_PACKET_LEN);
        let (pmt, media) = rest.split_at(TS_PACKET_LEN);
        let pid = u16::from_be_bytes([pmt[1], pmt[2]]) & 0x1FFF;
        let mut tail = vec![0x47, (pid >> 8) as u8, pid as u8, 0x10 | 0x0F];
        tail.extend_from_slice(&[
            0x02, 0xB0, 0x0D, 0, 1, 0xC1, 0, 0, 0xE1, 0, 0xF0, 0, 1, 2, 3, 4,
        ]);
        tail.resize(TS_PACKET_LEN, 0xFF);
        let cut = [pat, &tail, pmt, pmt, media].concat();
        let r = analyse(&cut, None);
        assert_eq!(r.pmt.len(), 1);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn flags_cc_errors_sync_and_truncation() {
        let mut ts = sample_ts();
        assert_eq!(ts.len(), 8 * 188);
        // Bump the continuity counter of the fourth packet.
        let at = 3 * 188 + 3;
        ts[at] = (ts[at] & 0xf0) | ((ts[at] + 5) & 0x0f);
        ts[188 * 5] = 0x00;
        ts.truncate(ts.len() - 10);
        let r = analyse(&ts, None);
        let rules: Vec<&str> = r.violations.iter().map(|v| v.rule.as_str()).collect();
        assert!(rules.contains(&RULE_CC), "{rules:?}");
        assert!(rules.contains(&RULE_SYNC), "{rules:?}");
        let sync = r.violations.iter().find(|v| v.rule == RULE_SYNC).unwrap();
        assert_eq!(sync.offset, Some(188 * 5));
        let e = r.error.unwrap();
        assert_eq!(e.offset as usize, 7 * 188);
    }

    proptest! {
        #[test]
        fn never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..188), 0..8)) {
            let mut buf = Vec::new();
            for c in chunks {
                buf.push(SYNC_BYTE);
                buf.extend_from_slice(&c);
            }
            let _ = analyse(&buf, None);
            let _ = analyse(&buf, Some(0));
        }
    }
}
