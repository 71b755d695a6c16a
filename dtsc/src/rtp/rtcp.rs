//! RTCP (RFC 3550 §6): the sender report and SDES every sending track writes, the BYE that
//! ends a session, and the report blocks read back from a receiver's SR or RR.

/// RTCP packet type of a sender report (RFC 3550 §6.4.1).
const SR: u8 = 200;
/// RTCP packet type of a receiver report (RFC 3550 §6.4.2).
const RR: u8 = 201;
/// RTCP packet type of a source description (RFC 3550 §6.5).
const SDES: u8 = 202;
/// RTCP packet type of a goodbye (RFC 3550 §6.6).
const BYE: u8 = 203;

/// An RTCP sender report (RFC 3550 §6.4.1) with no report blocks, followed by an SDES with
/// the CNAME `cname` (§6.5; a compound packet must carry it, §6.1), appended to `out`: 28
/// bytes of SR, then 12 + `cname` bytes rounded up to a multiple of 4 (`cname` is cut at 255
/// bytes).
///
/// `ssrc` is the sender's; `ntp` is the wall clock as NTP time (seconds since 1900 in the
/// high 32 bits, fraction in the low 32); `rtp_ts` the RTP timestamp of that same instant,
/// in the track's clock; `packets` and `octets` the RTP packets and payload bytes sent so
/// far (both wrap at 2^32, as the RFC's counters do).
pub fn sender_report(
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    cname: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&[0x80, SR, 0, 6]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_ts.to_be_bytes());
    out.extend_from_slice(&packets.to_be_bytes());
    out.extend_from_slice(&octets.to_be_bytes());
    // SDES: one chunk, CNAME item, END, padded to a 32-bit boundary.
    let name = cname.as_bytes().get(..255).unwrap_or(cname.as_bytes());
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.extend_from_slice(&[0x81, SDES]);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[1, name.len() as u8]);
    out.extend_from_slice(name);
    out.resize(out.len() + padded - (chunk - 1), 0);
}

/// An RTCP BYE (RFC 3550 §6.6) for the one source `ssrc`, with no reason: 8 bytes appended
/// to `out`. It goes at the end of a compound packet, after a sender report and its SDES
/// (§6.1).
pub fn bye(ssrc: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x81, BYE, 0, 1]);
    out.extend_from_slice(&ssrc.to_be_bytes());
}

/// One report block of an RTCP sender or receiver report (RFC 3550 §6.4.1, 24 bytes): what
/// a receiver says of the source `ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed; negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter (§6.4.1, A.8), in ticks of the track's clock.
    pub jitter: u32,
}

impl ReportBlock {
    /// Reads the fields a sender uses from one 24-byte block (the last sender report's time
    /// and the delay since are not kept).
    fn read(r: &[u8; 24]) -> ReportBlock {
        let [s0, s1, s2, s3, fraction_lost, l0, l1, l2, h0, h1, h2, h3, j0, j1, j2, j3, ..] = *r;
        let lost = u32::from_be_bytes([0, l0, l1, l2]);
        ReportBlock {
            ssrc: u32::from_be_bytes([s0, s1, s2, s3]),
            fraction_lost,
            // Sign-extend the 24-bit count.
            cumulative_lost: ((lost << 8) as i32) >> 8,
            highest_seq: u32::from_be_bytes([h0, h1, h2, h3]),
            jitter: u32::from_be_bytes([j0, j1, j2, j3]),
        }
    }
}

/// The report blocks of every SR (200) and RR (201) in a compound RTCP packet `b` (RFC 3550
/// §6.1), in order; packets of other types are skipped. Reading stops, keeping what was
/// read, at the first packet that is not version 2 or runs past the end of `b`, and a
/// packet's blocks stop at the first that runs past that packet's length. Never fails.
pub fn report_blocks(mut b: &[u8]) -> Vec<ReportBlock> {
    let mut out = Vec::new();
    while let Some(&[first, packet_type, len_hi, len_lo]) = b.first_chunk::<4>() {
        if first >> 6 != 2 {
            break;
        }
        let count = usize::from(first & 0x1f);
        // The length field counts 32-bit words less one (§6.4.1).
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let Some((pkt, rest)) = b.split_at_checked(len) else {
            break;
        };
        // The blocks follow the sender's SSRC, and in an SR its 20 bytes of sender info.
        let blocks_at = match packet_type {
            SR => Some(28),
            RR => Some(8),
            _ => None,
        };
        if let Some(at) = blocks_at {
            for i in 0..count {
                let block = pkt.get(at + 24 * i..).and_then(|r| r.first_chunk::<24>());
                let Some(r) = block else {
                    break;
                };
                out.push(ReportBlock::read(r));
            }
        }
        b = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_then_bye_walk_as_one_compound_packet() {
        let mut out = Vec::new();
        sender_report(9, 1 << 32, 90_000, 3, 4000, "sluice", &mut out);
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..4], &[0x80, 200, 0, 6]);
        let sdes = &out[28..];
        assert_eq!(sdes[1], 202);
        assert_eq!(
            usize::from(u16::from_be_bytes([sdes[2], sdes[3]])) * 4 + 4,
            sdes.len()
        );
        // With a BYE at the end: the compound packet walks SR, SDES, BYE by their lengths.
        let sr_len = out.len();
        bye(9, &mut out);
        assert_eq!(&out[sr_len..], &[0x81, 203, 0, 1, 0, 0, 0, 9]);
        let mut at = 0;
        let mut types = Vec::new();
        while at < out.len() {
            types.push(out[at + 1]);
            at += (usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]])) + 1) * 4;
        }
        assert_eq!((types, at), (vec![200, 202, 203], out.len()));
    }

    #[test]
    fn report_blocks_of_a_compound_packet() {
        // An RR with one block (ssrc 0x11223344, 10/256 lost, 3 lost in all, seq 70000,
        // jitter 90), then an SDES that is skipped, then a cut RR.
        let mut p = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
        p.extend_from_slice(&0x1122_3344u32.to_be_bytes());
        p.extend_from_slice(&[10, 0, 0, 3]);
        p.extend_from_slice(&70_000u32.to_be_bytes());
        p.extend_from_slice(&90u32.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x81, 201, 0, 7, 0, 0]);
        let r = report_blocks(&p);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0],
            ReportBlock {
                ssrc: 0x1122_3344,
                fraction_lost: 10,
                cumulative_lost: 3,
                highest_seq: 70_000,
                jitter: 90
            }
        );
        // Negative cumulative loss (duplicates).
        p[12..16].copy_from_slice(&[0, 0xff, 0xff, 0xfe]);
        assert_eq!(report_blocks(&p)[0].cumulative_lost, -2);
    }
}
