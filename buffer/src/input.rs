//! File sources played as live streams: the whole file is read into packets once, then
//! replayed at real time, looping with continuous timestamps (each loop adds the file's
//! duration to every DTS), as MistServer's "always on" file inputs do.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dtsc::flv::{self, FlvIngest, IngestEvent};
use dtsc::{Packet, Track};

/// A file's tracks and packets, ready to be replayed.
pub struct LoopedFile {
    /// The tracks found in the file.
    pub tracks: Vec<Track>,
    packets: Vec<Packet>,
    /// Length of one loop in ms: the last DTS plus one frame duration.
    loop_ms: u64,
    first_dts: u64,
    next: usize,
    loops: u64,
    start: Instant,
}

impl LoopedFile {
    /// Reads an FLV file into memory (the demo and test sources are small files).
    ///
    /// `prefill_ms`: how much of the file is released at once at start, so that a viewer who
    /// comes first finds a few segments already there.
    pub fn open_flv(path: &str, prefill_ms: u64, now: Instant) -> Result<LoopedFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        let Some((_hdr, mut at)) = flv::parse_file_header(&bytes)? else {
            bail!("{path}: truncated FLV header");
        };
        let mut ingest = FlvIngest::default();
        let mut packets = Vec::new();
        while at < bytes.len() {
            let Some((tag, used)) = flv::parse_tag(&bytes[at..])? else {
                break; // a truncated last tag is dropped, like any player does
            };
            let bpos = at as u64;
            at += used;
            match ingest.push_tag(tag.kind, tag.timestamp as u64, tag.body)? {
                Some(IngestEvent::Packet(p)) => {
                    let mut p = p.to_owned();
                    p.bpos = bpos;
                    packets.push(p)
                }
                Some(IngestEvent::TracksChanged) | None => {}
            }
        }
        if packets.is_empty() {
            bail!("{path}: no media packets");
        }
        let first_dts = packets.iter().map(|p| p.dts).min().unwrap_or(0);
        let last = packets.iter().map(|p| p.dts).max().unwrap_or(0);
        // One frame duration past the last packet: the average video frame gap.
        let frame = ingest
            .tracks()
            .iter()
            .find(|t| t.fpks > 0)
            .map(|t| (1_000_000 / t.fpks as u64).max(1))
            .unwrap_or(40);
        let loop_ms = last - first_dts + frame;
        let prefill = prefill_ms.min(loop_ms / 2);
        Ok(LoopedFile {
            tracks: ingest.tracks().to_vec(),
            packets,
            loop_ms,
            first_dts,
            next: 0,
            loops: 0,
            start: now - Duration::from_millis(prefill),
        })
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Instant {
        let p = &self.packets[self.next];
        self.start + Duration::from_millis(self.loops * self.loop_ms + p.dts - self.first_dts)
    }

    /// The next packet if it is due at `now`, with its DTS moved onto the continuous timeline.
    pub fn poll(&mut self, now: Instant) -> Option<Packet> {
        if self.next_due() > now {
            return None;
        }
        let mut p = self.packets[self.next].clone();
        p.dts = p.dts - self.first_dts + self.loops * self.loop_ms;
        self.next += 1;
        if self.next == self.packets.len() {
            self.next = 0;
            self.loops += 1;
        }
        Some(p)
    }

    /// Unix-time offset: the wall clock (ms) that corresponds to DTS 0.
    pub fn start(&self) -> Instant {
        self.start
    }
}
