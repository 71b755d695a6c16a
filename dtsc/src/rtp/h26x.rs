//! What the H.264 (RFC 6184) and H.265 (RFC 7798) payload formats share, written once over
//! [`NalSyntax`], the little in which they differ: sending a NAL unit whole or in
//! fragmentation units, the parameter sets in one aggregation packet before a keyframe, and
//! on the receiving side the access unit assembled from single, aggregated and fragmented
//! NAL units, with loss and the memory caps.

use std::marker::PhantomData;

use super::MAX_PARAMETER_SET_BYTES;
use super::{PacketWriter, RtpError, Sink, Unit, MAX_AU_BYTES, MAX_AU_NALS};
use crate::model::PacketRef;

/// The NAL unit syntax of one video codec, as the shared code here needs it.
pub(super) trait NalSyntax {
    /// Bytes of the NAL unit header: 1 for H.264 (§7.3.1), 2 for H.265 (§7.3.1.2).
    const HEADER_LEN: usize;
    /// NAL unit type of a sequence parameter set.
    const SPS: u8;
    /// NAL unit type of an access unit delimiter (dropped on receipt: DTSC has none).
    const AUD: u8;
    /// The NAL unit type of `nal`, 0 for an empty unit.
    fn nal_type(nal: &[u8]) -> u8;
    /// Whether NAL units of type `nal_type` are parameter sets (kept as init data).
    fn is_parameter_set(nal_type: u8) -> bool;
    /// Whether NAL units of type `nal_type` make their access unit a keyframe.
    fn is_keyframe(nal_type: u8) -> bool;
    /// Writes the payload header of an aggregation packet (STAP-A, AP) holding `sets`.
    fn write_aggregation_header(sets: &[Vec<u8>], out: &mut Vec<u8>);
    /// Writes the payload and fragmentation-unit headers (FU-A, FU) of one fragment of the
    /// NAL unit whose header is `head` ([`HEADER_LEN`](Self::HEADER_LEN) bytes).
    fn write_fragment_header(head: &[u8], first: bool, last: bool, out: &mut Vec<u8>);
}

/// Sends the access units of one H.264 or H.265 track: each a run of length-prefixed NAL
/// units (DTSC form).
#[derive(Debug, Clone)]
pub(super) struct Packetizer<S> {
    /// Bytes of each NAL unit's length prefix in the samples (1 to 4, from avcC/hvcC).
    length_size: u8,
    /// The parameter sets of the init data, sent before keyframes that lack them.
    parameter_sets: Vec<Vec<u8>>,
    syntax: PhantomData<S>,
}

impl<S: NalSyntax> Packetizer<S> {
    /// A packetizer of samples with `length_size`-byte NAL unit lengths, sending
    /// `parameter_sets` (whole NAL units, each at least a header) before keyframes.
    pub(super) fn new(length_size: u8, parameter_sets: Vec<Vec<u8>>) -> Packetizer<S> {
        Packetizer {
            length_size,
            parameter_sets,
            syntax: PhantomData,
        }
    }

    /// The NAL units of access unit `p` at RTP time `ts`, after the parameter sets when it
    /// is a keyframe without an SPS of its own; the marker bit on the last packet. A payload
    /// that is not valid length-prefixed NAL units gives no packet; NAL units shorter than a
    /// header are left out.
    pub(super) fn packetize(&self, ts: u32, p: &PacketRef, w: &mut PacketWriter) {
        let nals: Vec<&[u8]> = match crate::h264::nal_units(p.data, self.length_size).collect() {
            Ok(n) => n,
            Err(_) => return,
        };
        let nals: Vec<&[u8]> = nals
            .into_iter()
            .filter(|n| n.len() >= S::HEADER_LEN)
            .collect();
        let send_sets = p.keyframe && !nals.iter().any(|n| S::nal_type(n) == S::SPS);
        if send_sets && !self.parameter_sets.is_empty() {
            self.parameter_sets(ts, nals.is_empty(), w);
        }
        for (i, nal) in nals.iter().enumerate() {
            Self::nal(ts, nal, i + 1 == nals.len(), w);
        }
    }

    /// The parameter sets in one aggregation packet (RFC 6184 §5.7.1, RFC 7798 §4.4.2),
    /// or each on its own when they do not fit one; `marker` when nothing follows.
    fn parameter_sets(&self, ts: u32, marker: bool, w: &mut PacketWriter) {
        let sets = &self.parameter_sets;
        let total: usize = sets.iter().map(|s| 2 + s.len()).sum::<usize>() + S::HEADER_LEN;
        if total <= w.max_payload() {
            w.packet(marker, ts, |out| {
                S::write_aggregation_header(sets, out);
                for s in sets {
                    // Fits in 16 bits: the whole packet is under the MTU.
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend_from_slice(s);
                }
            });
        } else {
            for s in sets {
                Self::nal(ts, s, false, w);
            }
        }
    }

    /// One NAL unit (at least a header): a single NAL unit packet (RFC 6184 §5.6, RFC 7798
    /// §4.4.1), or fragmentation units (RFC 6184 §5.8, RFC 7798 §4.4.3) when it does not
    /// fit; the marker on its last packet when `last_of_au`.
    fn nal(ts: u32, nal: &[u8], last_of_au: bool, w: &mut PacketWriter) {
        if nal.len() <= w.max_payload() {
            w.packet(last_of_au, ts, |out| out.extend_from_slice(nal));
            return;
        }
        let Some((head, body)) = nal.split_at_checked(S::HEADER_LEN) else {
            return; // shorter than a header: filtered out by the callers
        };
        // The payload header, the FU header, then as much of the unit as fits.
        let room = w.max_payload() - S::HEADER_LEN - 1;
        let chunks: Vec<&[u8]> = body.chunks(room).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == chunks.len());
            w.packet(last && last_of_au, ts, |out| {
                S::write_fragment_header(head, first, last, out);
                out.extend_from_slice(chunk);
            });
        }
    }
}

/// The NAL units of an aggregation packet's payload after its payload header (STAP-A, RFC
/// 6184 §5.7.1; AP, RFC 7798 §4.4.2): each a 16-bit size and then the unit. Yields
/// `RtpError::Payload(name)` for a unit that runs past the end, and then stops.
pub(super) fn aggregated<'a>(
    mut units: &'a [u8],
    name: &'static str,
) -> impl Iterator<Item = Result<&'a [u8], RtpError>> {
    std::iter::from_fn(move || {
        if units.is_empty() {
            return None;
        }
        let unit = units
            .split_first_chunk::<2>()
            .and_then(|(size, rest)| rest.split_at_checked(usize::from(u16::from_be_bytes(*size))));
        match unit {
            Some((nal, rest)) => {
                units = rest;
                Some(Ok(nal))
            }
            None => {
                units = &[];
                Some(Err(RtpError::Payload(name)))
            }
        }
    })
}

/// The access unit being built.
#[derive(Debug, Clone)]
struct AccessUnit {
    /// Extended RTP timestamp, in 90 kHz ticks.
    ts: u64,
    /// Its NAL units, each after a 4-byte length (DTSC form).
    data: Vec<u8>,
    /// Whether a NAL unit made it a keyframe (IDR, IRAP).
    key: bool,
    /// NAL units in `data`.
    nals: usize,
}

/// Reassembles the access units of one received H.264 or H.265 track from its NAL units,
/// which the codec's depacketizer reads out of single, aggregation and fragmentation-unit
/// packets. Parameter sets are kept aside (newest of each type); a loss drops what it broke
/// and, as does going over [`MAX_AU_BYTES`] or [`MAX_AU_NALS`], makes the next units wait
/// for a keyframe.
#[derive(Debug, Clone)]
pub(super) struct Depacketizer<S> {
    /// Parameter sets seen in-band (VPS, SPS, PPS) as (NAL unit type, unit), newest of each
    /// type.
    sets: Vec<(u8, Vec<u8>)>,
    /// Counts changes to `sets`.
    sets_version: u64,
    au: Option<AccessUnit>,
    /// A fragmented NAL unit being built; `None` after a loss until its next start.
    fu: Option<Vec<u8>>,
    /// After a loss: units are dropped until a keyframe.
    need_key: bool,
    /// The extended timestamp of an access unit a loss broke or that went over a cap: its
    /// NAL units are dropped.
    broken_ts: Option<u64>,
    syntax: PhantomData<S>,
}

impl<S: NalSyntax> Depacketizer<S> {
    pub(super) fn new() -> Depacketizer<S> {
        Depacketizer {
            sets: Vec::new(),
            sets_version: 0,
            au: None,
            fu: None,
            need_key: false,
            broken_ts: None,
            syntax: PhantomData,
        }
    }

    /// The parameter sets seen so far, as (NAL unit type, unit).
    pub(super) fn parameter_sets(&self) -> &[(u8, Vec<u8>)] {
        &self.sets
    }

    /// Counts changes to [`parameter_sets`](Self::parameter_sets).
    pub(super) fn sets_version(&self) -> u64 {
        self.sets_version
    }

    /// Packets were lost before one at `ts`: drops the access unit and fragment being built
    /// (true when there was one) and waits for a keyframe. The access unit at `ts` is dropped
    /// too unless `clean` (the packet before the loss ended a unit and `ts` starts another).
    pub(super) fn lose(&mut self, ts: u64, clean: bool) -> bool {
        let broke = self.au.take().is_some() | self.fu.take().is_some();
        self.need_key = true;
        self.broken_ts = (!clean).then_some(ts);
        broke
    }

    /// A payload could not be read: the fragment being built is dropped.
    pub(super) fn payload_error(&mut self) {
        self.fu = None;
    }

    /// Completes the access unit being built (on a marker bit, or at the end): it goes to
    /// `sink`, unless a keyframe is awaited and it is not one (then counted as skipped).
    pub(super) fn finish(&mut self, sink: &mut Sink) {
        if let Some(au) = self.au.take() {
            if self.need_key && !au.key {
                *sink.skipped += 1;
                return;
            }
            self.need_key &= !au.key;
            if !au.data.is_empty() {
                sink.units.push_back(Unit {
                    timestamp: au.ts,
                    keyframe: au.key,
                    data: au.data,
                });
            }
        }
    }

    /// One NAL unit of the access unit at `ts`. A parameter set is kept aside (one over
    /// [`MAX_PARAMETER_SET_BYTES`] is dropped and counted bad), an access unit delimiter
    /// dropped; a unit of another timestamp completes the one being built first.
    pub(super) fn nal(&mut self, ts: u64, nal: &[u8], sink: &mut Sink) {
        let kind = S::nal_type(nal);
        if nal.len() < S::HEADER_LEN {
            return;
        }
        if S::is_parameter_set(kind) {
            if nal.len() > MAX_PARAMETER_SET_BYTES {
                *sink.bad += 1;
                return;
            }
            match self.sets.iter_mut().find(|(k, _)| *k == kind) {
                Some(slot) if slot.1 == nal => {}
                Some(slot) => {
                    slot.1 = nal.to_vec();
                    self.sets_version += 1;
                }
                None => {
                    self.sets.push((kind, nal.to_vec()));
                    self.sets_version += 1;
                }
            }
            return;
        }
        if kind == S::AUD || self.broken_ts == Some(ts) {
            return;
        }
        if self.au.as_ref().is_some_and(|a| a.ts != ts) {
            self.finish(sink);
        }
        let (bytes, count) = self.au.as_ref().map_or((0, 0), |a| (a.data.len(), a.nals));
        if bytes + 4 + nal.len() > MAX_AU_BYTES || count >= MAX_AU_NALS {
            self.drop_oversized(ts, sink);
            return;
        }
        let au = self.au.get_or_insert(AccessUnit {
            ts,
            data: Vec::new(),
            key: false,
            nals: 0,
        });
        au.data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        au.data.extend_from_slice(nal);
        au.key |= S::is_keyframe(kind);
        au.nals += 1;
    }

    /// The start of a fragmented NAL unit of the access unit at `ts`, whose header is
    /// `head` (rebuilt from the FU headers); not collected when that unit was dropped.
    pub(super) fn start_fragment(&mut self, ts: u64, head: &[u8]) {
        self.fu = (self.broken_ts != Some(ts)).then(|| head.to_vec());
    }

    /// Appends one fragment to the NAL unit being reassembled (if its start came) at `ts`,
    /// dropping the access unit when the NAL unit would go over [`MAX_AU_BYTES`]; the whole
    /// NAL unit goes on when `end`.
    pub(super) fn fragment(&mut self, ts: u64, chunk: &[u8], end: bool, sink: &mut Sink) {
        let Some(fu) = self.fu.as_mut() else {
            return; // the start was lost, or the access unit was dropped
        };
        if fu.len() + chunk.len() > MAX_AU_BYTES {
            self.drop_oversized(ts, sink);
            return;
        }
        fu.extend_from_slice(chunk);
        if end {
            let nal = self.fu.take().unwrap_or_default();
            self.nal(ts, &nal, sink);
        }
    }

    /// Drops the access unit at `ts`, which went over a cap: what was built of it, the NAL
    /// unit being reassembled, and its NAL units still to come; video then waits for a
    /// keyframe. Counted once per access unit, as oversized and skipped.
    fn drop_oversized(&mut self, ts: u64, sink: &mut Sink) {
        self.fu = None;
        if self.au.as_ref().is_some_and(|a| a.ts == ts) {
            self.au = None;
        }
        if self.broken_ts != Some(ts) {
            *sink.oversized += 1;
            *sink.skipped += 1;
        }
        self.broken_ts = Some(ts);
        self.need_key = true;
    }

    /// Bytes held: the fragment and the access unit being built.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.fu.as_ref().map_or(0, Vec::len) + self.au.as_ref().map_or(0, |a| a.data.len())
    }
}
