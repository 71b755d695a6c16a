//! The layout of a stream's shared memory: one writer (the stream's buffer process) and any
//! number of readers (connector processes, one per viewer), in two regions the buffer creates
//! as memfds and hands to each reader over its Unix socket.
//!
//! * The **data region** is a byte ring of `data_size` bytes holding back-to-back DTP2 frames
//!   (MistServer's packet bytes, see [`crate::wire`]). Positions are absolute byte counts since
//!   the buffer started; a frame at position `p` lives at `p % data_size` and never wraps (the
//!   writer skips to the ring's start instead). The region is a sparse memfd: the writer punches
//!   out whole [`PAGE_SIZE`] pages once they fall behind the window, so memory follows the
//!   window, not the ring.
//! * The **meta region** holds a fixed header of atomic counters, the stream's DTSC header
//!   frame (tracks), a ring of packet entries (one per packet, by sequence number) and a ring
//!   of keyframe entries (one per keyframe of the main track, by key number).
//!
//! Publication order (MistServer's rule, "body first, magic last", kept here as "entry first,
//! counter last"): the writer fills a packet's bytes and its entry, then stores the new
//! `write_seq` with `Release`. A reader loads `write_seq` with `Acquire` and may then read every
//! entry below it. Entries and bytes are reused only after the writer has moved `first_seq`
//! past them, so a reader validates what it read by checking `first_seq` again afterwards
//! ([`StreamReader::still_valid`]).
//!
//! Waking readers: the writer bumps the 32-bit `notify` word after each batch; readers sleep
//! on it with a futex (done by the caller, this module only exposes the word).
//!
//! This module only interprets memory that the caller mapped; it makes no system calls.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::model::PacketRef;
use crate::wire;

/// Unit in which the data ring is freed (bytes): 2 MiB.
pub const PAGE_SIZE: u64 = 2 << 20;
/// Bytes reserved for the stream's DTSC header frame (tracks).
pub const HEADER_AREA: usize = 256 << 10;
/// Bytes of one packet entry.
const PKT_ENTRY: usize = 32;
/// Bytes of one keyframe entry.
const KEY_ENTRY: usize = 32;
/// Bytes of the fixed header before the DTSC header area.
const FIXED: usize = 256;
/// Magic at the start of the meta region.
pub const MAGIC: &[u8; 8] = b"SLUICE01";

/// The stream is configured but nothing has been published yet.
pub const STATE_WAITING: u32 = 0;
/// A source is writing packets.
pub const STATE_LIVE: u32 = 1;
/// The source has ended; no packet will follow.
pub const STATE_ENDED: u32 = 2;

/// Stream flag ([`Meta::flags`]): an event. The window keeps the whole stream (as far as the
/// rings hold it) and HLS playlists say `#EXT-X-PLAYLIST-TYPE:EVENT`.
pub const FLAG_EVENT: u32 = 1;

// Offsets of the fixed header's fields.
const O_DATA_SIZE: usize = 8;
const O_PKT_CAP: usize = 16;
const O_KEY_CAP: usize = 20;
const O_WRITE_SEQ: usize = 24;
const O_FIRST_SEQ: usize = 32;
const O_KEY_COUNT: usize = 40;
const O_FIRST_KEY: usize = 48;
const O_STATE: usize = 56;
const O_NOTIFY: usize = 60;
const O_HDR_VERSION: usize = 64;
const O_HDR_LEN: usize = 72;
const O_VIEWERS: usize = 76;
const O_UNIXZERO: usize = 80;
const O_BOOT_MS: usize = 88;
const O_WRITE_POS: usize = 96;
const O_DVR_MS: usize = 104;
const O_PUBLISHERS: usize = 112;
const O_FLAGS: usize = 116;

/// Sizes of a stream's two regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the data ring (a multiple of [`PAGE_SIZE`]).
    pub data_size: u64,
    /// Packet entries in the packet ring (a power of two).
    pub pkt_cap: u32,
    /// Keyframe entries in the keyframe ring (a power of two).
    pub key_cap: u32,
}

impl Default for Geometry {
    /// 1 GiB of (sparse) data ring, 2^18 packets (about 45 min at 100 packets/s) and 2^14
    /// keyframes (9 h at one keyframe per 2 s).
    fn default() -> Self {
        Geometry {
            data_size: 1 << 30,
            pkt_cap: 1 << 18,
            key_cap: 1 << 14,
        }
    }
}

impl Geometry {
    /// Bytes the meta region needs for this geometry.
    pub fn meta_size(&self) -> usize {
        FIXED + HEADER_AREA + self.pkt_cap as usize * PKT_ENTRY + self.key_cap as usize * KEY_ENTRY
    }

    /// Byte offset of the packet ring in the meta region (entries of 32 bytes: position u64,
    /// DTS u64, length u32, track u32, flags u32, padding).
    pub fn pkt_ring_offset(&self) -> usize {
        FIXED + HEADER_AREA
    }

    /// Byte offset of the keyframe ring in the meta region (entries of 32 bytes: sequence
    /// number u64, DTS u64, padding).
    pub fn key_ring_offset(&self) -> usize {
        FIXED + HEADER_AREA + self.pkt_cap as usize * PKT_ENTRY
    }

    /// Checks a geometry read from shared memory against a meta mapping of `meta_len` bytes:
    /// non-zero power-of-two rings, a non-empty data ring addressable in this process, and a
    /// layout that fits the mapping.
    fn check(&self, meta_len: usize) -> Result<(), ShmError> {
        if self.data_size == 0
            || usize::try_from(self.data_size).is_err()
            || !self.pkt_cap.is_power_of_two()
            || !self.key_cap.is_power_of_two()
        {
            return Err(ShmError::BadGeometry);
        }
        let need = (self.pkt_cap as usize)
            .checked_mul(PKT_ENTRY)
            .and_then(|p| p.checked_add((self.key_cap as usize).checked_mul(KEY_ENTRY)?))
            .and_then(|r| r.checked_add(FIXED + HEADER_AREA))
            .ok_or(ShmError::BadGeometry)?;
        if meta_len < need {
            return Err(ShmError::TooSmall {
                have: meta_len,
                need,
            });
        }
        Ok(())
    }
}

/// One packet entry: where a packet's DTP2 frame is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketEntry {
    /// Absolute byte position of the DTP2 frame in the data ring.
    pub pos: u64,
    /// Length of the DTP2 frame in bytes.
    pub len: u32,
    /// Track id.
    pub track: u32,
    /// DTS in ms.
    pub dts: u64,
    /// True on a keyframe.
    pub keyframe: bool,
}

/// One keyframe entry of the main track (video, or audio when there is no video).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    /// Sequence number of the keyframe's packet.
    pub seq: u64,
    /// DTS of the keyframe in ms.
    pub dts: u64,
}

/// Errors found while validating a mapped meta region.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShmError {
    /// The meta region does not start with [`MAGIC`].
    #[error("shared memory: bad magic, not a Sluice stream region")]
    BadMagic,
    /// The region is smaller than its own header says.
    #[error("shared memory: meta region of {have} bytes, layout needs {need}")]
    TooSmall {
        /// Bytes mapped.
        have: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// The geometry fields are unusable: an empty data ring, or a ring size that is zero or
    /// not a power of two.
    #[error("shared memory: corrupt geometry (empty ring or ring size not a power of two)")]
    BadGeometry,
    /// The data mapping is shorter than the geometry's data ring.
    #[error("shared memory: data region of {have} bytes, geometry says {need}")]
    DataTooSmall {
        /// Bytes mapped.
        have: usize,
        /// Bytes of the data ring.
        need: u64,
    },
}

/// Shared view of a meta region, for both sides. The memory must stay mapped as long as the
/// view lives; all counters are accessed atomically.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    base: *mut u8,
    geo: Geometry,
}

// SAFETY: the view only performs atomic accesses (and plain reads of bytes the protocol
// publishes with Release/Acquire); the memory is process-shared by design.
unsafe impl Send for Meta {}

impl Meta {
    fn u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is 8-aligned and inside the region checked at construction; the mapping
        // is page-aligned.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }
    fn u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as above, 4-aligned.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Initializes a zeroed meta region of `len` bytes for `geo` (writer side).
    ///
    /// # Safety
    /// `base` must point to `len` writable, page-aligned bytes that stay mapped while any
    /// returned view is used.
    pub unsafe fn init(
        base: *mut u8,
        len: usize,
        geo: Geometry,
        boot_ms: u64,
        dvr_ms: u64,
    ) -> Result<Meta, ShmError> {
        if len < geo.meta_size() {
            return Err(ShmError::TooSmall {
                have: len,
                need: geo.meta_size(),
            });
        }
        let m = Meta { base, geo };
        m.u64(O_DATA_SIZE).store(geo.data_size, Ordering::Relaxed);
        m.u32(O_PKT_CAP).store(geo.pkt_cap, Ordering::Relaxed);
        m.u32(O_KEY_CAP).store(geo.key_cap, Ordering::Relaxed);
        m.u64(O_BOOT_MS).store(boot_ms, Ordering::Relaxed);
        m.u64(O_DVR_MS).store(dvr_ms, Ordering::Relaxed);
        std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), base, 8);
        std::sync::atomic::fence(Ordering::Release);
        Ok(m)
    }

    /// Opens a view on a meta region the writer initialized (reader side).
    ///
    /// # Safety
    /// `base` must point to `len` readable, page-aligned bytes that stay mapped while any
    /// returned view is used.
    pub unsafe fn open(base: *mut u8, len: usize) -> Result<Meta, ShmError> {
        if len < FIXED || std::slice::from_raw_parts(base, 8) != MAGIC {
            return Err(ShmError::BadMagic);
        }
        let probe = Meta {
            base,
            geo: Geometry {
                data_size: 0,
                pkt_cap: 0,
                key_cap: 0,
            },
        };
        // Read once: the view keeps this copy, so a later change of the fields in shared
        // memory cannot move its slots outside the mapping.
        let geo = Geometry {
            data_size: probe.u64(O_DATA_SIZE).load(Ordering::Relaxed),
            pkt_cap: probe.u32(O_PKT_CAP).load(Ordering::Relaxed),
            key_cap: probe.u32(O_KEY_CAP).load(Ordering::Relaxed),
        };
        geo.check(len)?;
        Ok(Meta { base, geo })
    }

    /// The geometry stored in the region.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }
    /// Sequence number the next packet will get (= packets written so far).
    pub fn write_seq(&self) -> u64 {
        self.u64(O_WRITE_SEQ).load(Ordering::Acquire)
    }
    /// Oldest packet sequence number still inside the window (the start of
    /// [`Meta::seq_window`]).
    pub fn first_seq(&self) -> u64 {
        self.seq_window().start
    }
    /// The sequence numbers of the packets in the window, `first_seq..write_seq`, as the
    /// packet ring can hold them: never longer than the ring (older numbers were overwritten
    /// whatever the counters say) and never reversed, so a loop over it ends after at most
    /// `pkt_cap` steps even when the counters in shared memory are garbage.
    pub fn seq_window(&self) -> Range<u64> {
        let first = self.u64(O_FIRST_SEQ).load(Ordering::Acquire);
        let write = self.write_seq();
        clamp_window(first, write, self.geo.pkt_cap)
    }
    /// Number of keyframes written so far (the next key number).
    pub fn key_count(&self) -> u64 {
        self.u64(O_KEY_COUNT).load(Ordering::Acquire)
    }
    /// Oldest key number still inside the window (the start of [`Meta::key_window`]).
    pub fn first_key(&self) -> u64 {
        self.key_window().start
    }
    /// The key numbers in the window, `first_key..key_count`, bounded like
    /// [`Meta::seq_window`]: at most `key_cap` long.
    pub fn key_window(&self) -> Range<u64> {
        let first = self.u64(O_FIRST_KEY).load(Ordering::Acquire);
        let count = self.key_count();
        clamp_window(first, count, self.geo.key_cap)
    }
    /// [`STATE_WAITING`], [`STATE_LIVE`] or [`STATE_ENDED`].
    pub fn state(&self) -> u32 {
        self.u32(O_STATE).load(Ordering::Acquire)
    }
    /// The futex word bumped after every batch of packets or state change.
    pub fn notify_word(&self) -> &AtomicU32 {
        self.u32(O_NOTIFY)
    }
    /// Number of readers attached (kept by the writer).
    pub fn viewers(&self) -> u32 {
        self.u32(O_VIEWERS).load(Ordering::Relaxed)
    }
    /// Number of publishers attached (0 or 1).
    pub fn publishers(&self) -> u32 {
        self.u32(O_PUBLISHERS).load(Ordering::Relaxed)
    }
    /// Unix time in ms of the stream's time zero (DTSC `unixzero`).
    pub fn unixzero(&self) -> i64 {
        self.u64(O_UNIXZERO).load(Ordering::Relaxed) as i64
    }
    /// Unix time in ms when the buffer started: names this buffer's generation, so that URLs
    /// of segments from an earlier run of the stream never match.
    pub fn boot_ms(&self) -> u64 {
        self.u64(O_BOOT_MS).load(Ordering::Relaxed)
    }

    /// The stream's flags ([`FLAG_EVENT`]), set once when the buffer starts.
    pub fn flags(&self) -> u32 {
        self.u32(O_FLAGS).load(Ordering::Relaxed)
    }

    /// The window (DVR) length in ms.
    pub fn dvr_ms(&self) -> u64 {
        self.u64(O_DVR_MS).load(Ordering::Relaxed)
    }
    /// Absolute data-ring position where the next frame goes.
    pub fn write_pos(&self) -> u64 {
        self.u64(O_WRITE_POS).load(Ordering::Acquire)
    }
    /// Version of the DTSC header frame; odd while the writer is replacing it.
    pub fn header_version(&self) -> u64 {
        self.u64(O_HDR_VERSION).load(Ordering::Acquire)
    }

    /// Copies the current DTSC header frame (empty before the first one), retrying while the
    /// writer is replacing it. Returns the copy and its version; after 100 000 tries (a writer
    /// that died mid-update) it gives up with an empty copy, so a reader never hangs.
    pub fn header(&self) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let v1 = self.header_version();
            if v1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = (self.u32(O_HDR_LEN).load(Ordering::Acquire) as usize).min(HEADER_AREA);
            out.clear();
            out.extend((0..len).map(|i| {
                // SAFETY: i < HEADER_AREA, and the header area lies inside the mapping
                // (checked against the mapping's length at construction); bytes read one by
                // one through atomics would be slower and a torn copy is detected by the
                // version check below.
                unsafe { std::ptr::read_volatile(self.base.add(FIXED + i)) }
            }));
            std::sync::atomic::fence(Ordering::Acquire);
            if self.header_version() == v1 {
                return (out, v1);
            }
        }
        (Vec::new(), self.header_version())
    }

    fn pkt_slot(&self, seq: u64) -> usize {
        FIXED + HEADER_AREA + (seq as usize & (self.geo.pkt_cap as usize - 1)) * PKT_ENTRY
    }
    fn key_slot(&self, key: u64) -> usize {
        FIXED
            + HEADER_AREA
            + self.geo.pkt_cap as usize * PKT_ENTRY
            + (key as usize & (self.geo.key_cap as usize - 1)) * KEY_ENTRY
    }

    /// The entry of packet `seq`, or `None` outside [`Meta::seq_window`]. The caller must
    /// check [`Meta::first_seq`] again after using the packet's bytes. The entry's position
    /// and length are as stored: [`StreamReader::frame`] checks them against the data ring.
    pub fn packet(&self, seq: u64) -> Option<PacketEntry> {
        if !self.seq_window().contains(&seq) {
            return None;
        }
        let s = self.pkt_slot(seq);
        let pos = self.u64(s).load(Ordering::Relaxed);
        let dts = self.u64(s + 8).load(Ordering::Relaxed);
        let len = self.u32(s + 16).load(Ordering::Relaxed);
        let track = self.u32(s + 20).load(Ordering::Relaxed);
        let flags = self.u32(s + 24).load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if seq < self.first_seq() {
            return None;
        }
        Some(PacketEntry {
            pos,
            len,
            track,
            dts,
            keyframe: flags & 1 != 0,
        })
    }

    /// The entry of keyframe number `key`, or `None` outside [`Meta::key_window`] or when
    /// the entry names a packet outside `first_seq..=write_seq` (the writer records a key
    /// just before it publishes its packet, so `write_seq` itself is allowed).
    pub fn key(&self, key: u64) -> Option<KeyEntry> {
        if !self.key_window().contains(&key) {
            return None;
        }
        let s = self.key_slot(key);
        let seq = self.u64(s).load(Ordering::Relaxed);
        let dts = self.u64(s + 8).load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if key < self.first_key() {
            return None;
        }
        let window = self.seq_window();
        if seq < window.start || seq > window.end {
            return None;
        }
        Some(KeyEntry { seq, dts })
    }

    /// The newest keyframe in the window, as (key number, entry).
    pub fn latest_key(&self) -> Option<(u64, KeyEntry)> {
        let window = self.key_window();
        let k = window.end.checked_sub(1).filter(|k| *k >= window.start)?;
        self.key(k).map(|e| (k, e))
    }
}

/// `first..end` cut to at most `cap` numbers before `end`, and empty when `first > end`.
fn clamp_window(first: u64, end: u64, cap: u32) -> Range<u64> {
    first.clamp(end.saturating_sub(cap as u64), end)..end
}

/// The writer's side: the only code that changes the counters. Owned by the buffer process.
pub struct StreamWriter {
    meta: Meta,
    data: *mut u8,
    /// The track whose keyframes cut the stream, and whether it is video.
    main: Option<(u32, bool)>,
    last_main_key_dts: Option<u64>,
    /// Data ring position up to which pages were already freed.
    freed_to: u64,
    scratch: Vec<u8>,
}

// SAFETY: the writer is the single owner of the mapping's write side.
unsafe impl Send for StreamWriter {}

/// A range of the data ring (ring offsets, page-aligned) that the caller may free, for example
/// with `fallocate(FALLOC_FL_PUNCH_HOLE)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeRange {
    /// Ring offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An audio-only stream gets a "virtual keyframe" when this much time (ms) has passed since
/// the last one, so that it can be cut into segments (MistServer uses about 2047 ms).
pub const AUDIO_KEY_INTERVAL_MS: u64 = 2047;

impl StreamWriter {
    /// Wraps an initialized meta region and the data ring.
    ///
    /// # Safety
    /// `data` must point to `meta.geometry().data_size` writable bytes, mapped as long as the
    /// writer lives.
    pub unsafe fn new(meta: Meta, data: *mut u8) -> StreamWriter {
        StreamWriter {
            meta,
            data,
            main: None,
            last_main_key_dts: None,
            freed_to: 0,
            scratch: Vec::with_capacity(1 << 16),
        }
    }

    /// The shared view.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Replaces the stream's DTSC header frame and names the track whose keyframes cut the
    /// stream: `main` is (track id, is video): the video track, or the audio track of an
    /// audio-only stream, which gets a virtual keyframe every [`AUDIO_KEY_INTERVAL_MS`].
    /// Frames larger than [`HEADER_AREA`] are refused with `false`.
    pub fn set_header(&mut self, frame: &[u8], main: Option<(u32, bool)>) -> bool {
        if frame.len() > HEADER_AREA {
            return false;
        }
        if self.main != main {
            self.last_main_key_dts = None;
        }
        self.main = main;
        let v = self.meta.u64(O_HDR_VERSION);
        let ver = v.load(Ordering::Relaxed);
        v.store(ver + 1, Ordering::Release);
        std::sync::atomic::fence(Ordering::Release);
        // SAFETY: inside the header area, checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), self.meta.base.add(FIXED), frame.len())
        };
        self.meta
            .u32(O_HDR_LEN)
            .store(frame.len() as u32, Ordering::Release);
        v.store(ver + 2, Ordering::Release);
        true
    }

    /// Sets the stream's flags ([`Meta::flags`]).
    pub fn set_flags(&mut self, flags: u32) {
        self.meta.u32(O_FLAGS).store(flags, Ordering::Relaxed);
    }

    /// Sets the stream state and wakes readers.
    pub fn set_state(&mut self, state: u32) {
        self.meta.u32(O_STATE).store(state, Ordering::Release);
        self.bump_notify();
    }

    /// Sets `unixzero`, the Unix time in ms of the stream's time zero.
    pub fn set_unixzero(&mut self, ms: i64) {
        self.meta
            .u64(O_UNIXZERO)
            .store(ms as u64, Ordering::Relaxed);
    }

    /// Records how many readers and publishers are attached (for the controller's stats).
    pub fn set_counts(&mut self, viewers: u32, publishers: u32) {
        self.meta.u32(O_VIEWERS).store(viewers, Ordering::Relaxed);
        self.meta
            .u32(O_PUBLISHERS)
            .store(publishers, Ordering::Relaxed);
    }

    /// Bumps the futex word; the caller then wakes sleepers with `FUTEX_WAKE`.
    pub fn bump_notify(&mut self) {
        self.meta.notify_word().fetch_add(1, Ordering::Release);
    }

    /// Starts a new run of the stream (a new publisher after the old one ended): every packet
    /// so far leaves the window, sequence and key numbers go on.
    pub fn reset_window(&mut self) {
        let ws = self.meta.u64(O_WRITE_SEQ).load(Ordering::Relaxed);
        let kc = self.meta.u64(O_KEY_COUNT).load(Ordering::Relaxed);
        self.meta.u64(O_FIRST_SEQ).store(ws, Ordering::Release);
        self.meta.u64(O_FIRST_KEY).store(kc, Ordering::Release);
        self.last_main_key_dts = None;
    }

    /// Appends one packet: writes its DTP2 frame into the data ring and its entry into the
    /// packet ring, records a keyframe of the main track (or a virtual keyframe of an
    /// audio-only main track), moves the window so that it spans at least `dvr_ms` and starts
    /// on a keyframe, and publishes the packet. Returns the data-ring ranges that left the
    /// window and may be freed. The caller bumps the notify word once per batch.
    ///
    /// The frame is written in [`wire::write_packet`]'s layout straight into the ring (the
    /// payload is copied once). Packets of a frame larger than a quarter of the ring are
    /// dropped (returns `None`).
    pub fn append(&mut self, p: &PacketRef) -> Option<Vec<FreeRange>> {
        self.scratch.clear();
        wire::write_packet_head(p, &mut self.scratch);
        let head = std::mem::take(&mut self.scratch);
        let r = self.append_parts(p, &[&head, p.data, wire::PACKET_TAIL]);
        self.scratch = head;
        r
    }

    /// Writes the frame made of `parts` (its bytes in order) for packet `p`.
    fn append_parts(&mut self, p: &PacketRef, parts: &[&[u8]]) -> Option<Vec<FreeRange>> {
        let geo = self.meta.geo;
        let len = parts.iter().map(|x| x.len() as u64).sum::<u64>();
        if len > geo.data_size / 4 {
            return None;
        }
        let mut pos = self.meta.u64(O_WRITE_POS).load(Ordering::Relaxed);
        if pos % geo.data_size + len > geo.data_size {
            pos += geo.data_size - pos % geo.data_size;
        }
        let seq = self.meta.u64(O_WRITE_SEQ).load(Ordering::Relaxed);

        // Is this a keyframe that cuts the stream?
        let cuts = match self.main {
            Some((id, true)) if id == p.track => p.keyframe,
            Some((id, false)) if id == p.track => self
                .last_main_key_dts
                .is_none_or(|last| p.dts.saturating_sub(last) >= AUDIO_KEY_INTERVAL_MS),
            _ => false,
        };

        // Move the window: keep at least dvr_ms behind this packet, never reuse bytes or
        // entries still inside it.
        self.trim(seq, pos + len, p.dts, cuts);

        // Bytes first.
        let off = (pos % geo.data_size) as usize;
        let mut at = off;
        for part in parts {
            // SAFETY: off + len <= data_size by the wrap above, and the parts sum to len.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), self.data.add(at), part.len()) };
            at += part.len();
        }
        // Then the entry.
        let s = self.meta.pkt_slot(seq);
        self.meta.u64(s).store(pos, Ordering::Relaxed);
        self.meta.u64(s + 8).store(p.dts, Ordering::Relaxed);
        self.meta.u32(s + 16).store(len as u32, Ordering::Relaxed);
        self.meta.u32(s + 20).store(p.track, Ordering::Relaxed);
        self.meta
            .u32(s + 24)
            .store((p.keyframe || cuts) as u32, Ordering::Relaxed);
        if cuts {
            let k = self.meta.u64(O_KEY_COUNT).load(Ordering::Relaxed);
            let ks = self.meta.key_slot(k);
            self.meta.u64(ks).store(seq, Ordering::Relaxed);
            self.meta.u64(ks + 8).store(p.dts, Ordering::Relaxed);
            self.meta.u64(O_KEY_COUNT).store(k + 1, Ordering::Release);
            self.last_main_key_dts = Some(p.dts);
        }
        self.meta
            .u64(O_WRITE_POS)
            .store(pos + len, Ordering::Release);
        // Last, the counter that publishes it.
        self.meta.u64(O_WRITE_SEQ).store(seq + 1, Ordering::Release);
        Some(self.free_ranges())
    }

    fn trim(&mut self, seq: u64, end_pos: u64, now_dts: u64, cuts: bool) {
        let geo = self.meta.geo;
        let dvr = self.meta.dvr_ms();
        let mut first_key = self.meta.u64(O_FIRST_KEY).load(Ordering::Relaxed);
        let key_count = self.meta.u64(O_KEY_COUNT).load(Ordering::Relaxed) + cuts as u64;
        let mut first_seq = self.meta.u64(O_FIRST_SEQ).load(Ordering::Relaxed);
        // Drop whole GOPs from the front while the next keyframe is already dvr_ms old, while
        // the key ring would overflow, and while the oldest bytes would be overwritten.
        loop {
            if first_key + 1 >= key_count {
                break;
            }
            let next = self.meta.key_slot(first_key + 1);
            let next_seq = self.meta.u64(next).load(Ordering::Relaxed);
            let next_dts = self.meta.u64(next + 8).load(Ordering::Relaxed);
            let too_old = now_dts.saturating_sub(next_dts) >= dvr;
            let keys_full = key_count - first_key >= geo.key_cap as u64;
            let pkts_full = seq + 1 - first_seq >= geo.pkt_cap as u64;
            let first_pos = self
                .meta
                .u64(self.meta.pkt_slot(first_seq))
                .load(Ordering::Relaxed);
            let bytes_full = seq > first_seq && end_pos.saturating_sub(first_pos) > geo.data_size;
            if !(too_old || keys_full || pkts_full || bytes_full) {
                break;
            }
            first_key += 1;
            first_seq = next_seq;
        }
        // Without keyframes (or inside one huge GOP) the rings must still never overrun.
        while seq > first_seq
            && (seq + 1 - first_seq >= geo.pkt_cap as u64 || {
                let first_pos = self
                    .meta
                    .u64(self.meta.pkt_slot(first_seq))
                    .load(Ordering::Relaxed);
                end_pos.saturating_sub(first_pos) > geo.data_size
            })
        {
            first_seq += 1;
            while first_key < key_count.saturating_sub(cuts as u64) && {
                let ks = self.meta.key_slot(first_key);
                self.meta.u64(ks).load(Ordering::Relaxed) < first_seq
            } {
                first_key += 1;
            }
        }
        self.meta
            .u64(O_FIRST_KEY)
            .store(first_key, Ordering::Release);
        self.meta
            .u64(O_FIRST_SEQ)
            .store(first_seq, Ordering::Release);
        // Readers that validate after this store see the move before any byte is reused.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Whole pages of the ring behind the window's oldest packet that were not freed yet.
    fn free_ranges(&mut self) -> Vec<FreeRange> {
        let geo = self.meta.geo;
        let first_seq = self.meta.u64(O_FIRST_SEQ).load(Ordering::Relaxed);
        let write_seq = self.meta.u64(O_WRITE_SEQ).load(Ordering::Relaxed);
        let oldest = if first_seq < write_seq {
            self.meta
                .u64(self.meta.pkt_slot(first_seq))
                .load(Ordering::Relaxed)
        } else {
            self.meta.u64(O_WRITE_POS).load(Ordering::Relaxed)
        };
        let upto = oldest / PAGE_SIZE * PAGE_SIZE;
        let mut out = Vec::new();
        if upto <= self.freed_to {
            return out;
        }
        let mut at = self.freed_to;
        while at < upto {
            let off = at % geo.data_size;
            let len = (upto - at).min(geo.data_size - off);
            out.push(FreeRange { offset: off, len });
            at += len;
        }
        self.freed_to = upto;
        out
    }
}

/// A reader's view: the meta region plus the data ring, both mapped read-only.
///
/// Nothing read from the shared pages is trusted: the geometry is checked once against the
/// lengths mapped, windows are bounded by the rings' sizes, and every entry's position and
/// length are checked against the data ring before its bytes are sliced, so a corrupt page
/// costs a reader `None`, never a panic, an out-of-bounds read or an endless loop.
#[derive(Debug, Clone, Copy)]
pub struct StreamReader {
    meta: Meta,
    data: *const u8,
}

// SAFETY: read-only view of process-shared memory.
unsafe impl Send for StreamReader {}

/// Keyframes [`StreamReader::key_at_or_before`] and [`StreamReader::key_nearest`] look at, at
/// most: the whole keyframe ring of the default geometry.
const MAX_KEY_SCAN: u64 = 1 << 14;

impl StreamReader {
    /// Wraps a meta view and the data ring mapped at `data`, `data_len` bytes long. Fails
    /// when the mapping is shorter than the geometry's `data_size`.
    ///
    /// # Safety
    /// `data` must point to `data_len` readable bytes, mapped as long as the reader lives.
    pub unsafe fn new(
        meta: Meta,
        data: *const u8,
        data_len: usize,
    ) -> Result<StreamReader, ShmError> {
        let need = meta.geo.data_size;
        if (data_len as u64) < need || need == 0 {
            return Err(ShmError::DataTooSmall {
                have: data_len,
                need,
            });
        }
        Ok(StreamReader { meta, data })
    }

    /// The shared counters.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The DTP2 frame bytes of packet `seq` and its entry, or `None` when it is outside the
    /// window or its entry points outside the data ring. The bytes live in shared memory:
    /// call [`StreamReader::still_valid`] after using them (the writer reuses bytes only
    /// after moving the window past them).
    pub fn frame(&self, seq: u64) -> Option<(PacketEntry, &[u8])> {
        let e = self.meta.packet(seq)?;
        let size = self.meta.geo.data_size;
        // size > 0 and size <= data_len were checked in `new`.
        let off = e.pos % size;
        if e.len == 0 || off.checked_add(e.len as u64)? > size {
            return None;
        }
        // SAFETY: off + len <= data_size <= the mapped length (checked above and in `new`).
        let bytes =
            unsafe { std::slice::from_raw_parts(self.data.add(off as usize), e.len as usize) };
        Some((e, bytes))
    }

    /// Packet `seq` parsed (zero copy), or `None` when outside the window or unparsable.
    pub fn packet(&self, seq: u64) -> Option<PacketRef<'_>> {
        let (_, bytes) = self.frame(seq)?;
        wire::parse_packet(bytes).ok()
    }

    /// True when packet `seq` is still inside the window, so bytes read from it were intact.
    pub fn still_valid(&self, seq: u64) -> bool {
        std::sync::atomic::fence(Ordering::Acquire);
        seq >= self.meta.first_seq()
    }

    /// The DTS (ms) of the newest packet in the window, from its entry.
    pub fn newest_dts(&self) -> Option<u64> {
        let last = self.meta.seq_window().end.checked_sub(1)?;
        self.meta.packet(last).map(|e| e.dts)
    }

    /// The last keyframe (in key order) whose DTS is at or before `target` (ms), or the
    /// window's first keyframe when none is; `None` when the window has no keyframe. Looks
    /// at no more than the keyframe ring holds.
    pub fn key_at_or_before(&self, target: u64) -> Option<KeyEntry> {
        let window = self.meta.key_window();
        let first = self.meta.key(window.start)?;
        let found = window
            .take(MAX_KEY_SCAN as usize)
            .filter_map(|k| self.meta.key(k))
            .take_while(|k| k.dts <= target)
            .last();
        Some(found.unwrap_or(first))
    }

    /// The keyframe whose DTS is nearest `target` (ms; the earlier one on a tie), or `None`
    /// when the window has no keyframe. Looks at no more than the keyframe ring holds.
    pub fn key_nearest(&self, target: u64) -> Option<KeyEntry> {
        self.meta
            .key_window()
            .take(MAX_KEY_SCAN as usize)
            .filter_map(|k| self.meta.key(k))
            .min_by_key(|k| k.dts.abs_diff(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page-aligned enough (8-byte) zeroed memory standing in for a mapping.
    struct Mem(Vec<u64>);
    impl Mem {
        fn new(bytes: usize) -> Mem {
            Mem(vec![0u64; bytes.div_ceil(8)])
        }
        fn ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr() as *mut u8
        }
        fn len(&self) -> usize {
            self.0.len() * 8
        }
    }

    fn setup(geo: Geometry, dvr_ms: u64) -> (Mem, Mem, StreamWriter, StreamReader) {
        let mut meta_mem = Mem::new(geo.meta_size());
        let mut data_mem = Mem::new(geo.data_size as usize);
        // SAFETY: the Vecs live as long as the test holds them (returned with the views).
        unsafe {
            let meta = Meta::init(meta_mem.ptr(), meta_mem.len(), geo, 1234, dvr_ms).unwrap();
            let w = StreamWriter::new(meta, data_mem.ptr());
            let rmeta = Meta::open(meta_mem.ptr(), meta_mem.len()).unwrap();
            let r = StreamReader::new(rmeta, data_mem.ptr(), data_mem.len()).unwrap();
            (meta_mem, data_mem, w, r)
        }
    }

    fn small() -> Geometry {
        Geometry {
            data_size: 4 * PAGE_SIZE,
            pkt_cap: 1 << 12,
            key_cap: 1 << 8,
        }
    }

    /// A 25 fps video + ~43 fps audio stream: video keyframe every `gop` frames.
    fn feed(w: &mut StreamWriter, ms: u64, gop: u64, video_bytes: usize) -> Vec<FreeRange> {
        let video = vec![0xABu8; video_bytes];
        let audio = vec![0xCDu8; 300];
        let mut freed = Vec::new();
        let (mut v, mut a) = (0u64, 0u64);
        while v * 40 < ms || a * 1000 / 43 < ms {
            let (vt, at) = (v * 40, a * 1000 / 43);
            let p = if vt <= at {
                v += 1;
                PacketRef {
                    track: 1,
                    dts: vt,
                    offset: 80,
                    keyframe: (v - 1) % gop == 0,
                    bpos: 0,
                    data: &video,
                }
            } else {
                a += 1;
                PacketRef {
                    track: 2,
                    dts: at,
                    offset: 0,
                    keyframe: false,
                    bpos: 0,
                    data: &audio,
                }
            };
            freed.extend(w.append(&p).expect("fits"));
        }
        freed
    }

    #[test]
    fn packets_read_back_in_place() {
        let (_m, _d, mut w, r) = setup(small(), 50_000);
        assert!(w.set_header(b"DTSC\0\0\0\x01x", Some((1, true))));
        feed(&mut w, 4000, 50, 1000);
        assert_eq!(r.meta().header().0, b"DTSC\0\0\0\x01x");
        let n = r.meta().write_seq();
        assert!(n > 250);
        let p = r.packet(0).unwrap();
        assert_eq!((p.track, p.dts, p.offset, p.keyframe), (1, 0, 80, true));
        assert_eq!(p.data.len(), 1000);
        assert!(p.data.iter().all(|&b| b == 0xAB));
        assert!(r.still_valid(0));
        assert!(r.packet(n).is_none(), "nothing past write_seq");
        // Keyframes at 0 and 2000 ms (frames 0 and 50).
        assert_eq!(r.meta().key_count(), 2);
        assert_eq!(r.meta().key(1).unwrap().dts, 2000);
        let (k, e) = r.meta().latest_key().unwrap();
        assert_eq!(k, 1);
        assert!(r.packet(e.seq).unwrap().keyframe);
    }

    #[test]
    fn window_keeps_dvr_and_starts_on_a_keyframe() {
        let (_m, _d, mut w, r) = setup(small(), 10_000);
        w.set_header(b"h", Some((1, true)));
        feed(&mut w, 30_000, 50, 500);
        let m = r.meta();
        let first = r.packet(m.first_seq()).unwrap();
        assert!(
            first.keyframe && first.track == 1,
            "window starts on a video keyframe"
        );
        let newest = r.packet(m.write_seq() - 1).unwrap().dts;
        let span = newest - first.dts;
        assert!((10_000..12_100).contains(&span), "window spans {span} ms");
        assert_eq!(m.key(m.first_key()).unwrap().seq, m.first_seq());
        assert!(
            r.packet(m.first_seq() - 1).is_none(),
            "older packets are gone"
        );
        assert!(!r.still_valid(m.first_seq() - 1));
    }

    #[test]
    fn ring_wraps_and_frees_whole_pages() {
        // 8 MiB ring, 60 KB frames at 25 fps: 1.5 MB/s, so 30 s wraps the ring several times.
        let (_m, _d, mut w, r) = setup(small(), 2_000);
        w.set_header(b"h", Some((1, true)));
        let freed = feed(&mut w, 30_000, 25, 60_000);
        assert!(!freed.is_empty());
        for f in &freed {
            assert_eq!(f.offset % PAGE_SIZE, 0);
            assert_eq!(f.len % PAGE_SIZE, 0);
            assert!(f.offset + f.len <= small().data_size);
        }
        // Every packet still in the window reads back intact after wrapping.
        let m = r.meta();
        assert!(m.write_pos() > 3 * small().data_size);
        for s in m.first_seq()..m.write_seq() {
            let p = r.packet(s).expect("in window");
            let want = if p.track == 1 { 0xAB } else { 0xCD };
            assert!(p.data.iter().all(|&b| b == want), "packet {s} intact");
        }
    }

    #[test]
    fn audio_only_streams_get_virtual_keyframes() {
        let (_m, _d, mut w, r) = setup(small(), 50_000);
        w.set_header(b"h", Some((2, false)));
        let audio = [1u8; 200];
        for i in 0..430u64 {
            let p = PacketRef {
                track: 2,
                dts: i * 1000 / 43,
                offset: 0,
                keyframe: false,
                bpos: 0,
                data: &audio,
            };
            w.append(&p).unwrap();
        }
        // 10 s of audio: keys at 0, ~2047, ~4094, ~6141, ~8188.
        assert_eq!(r.meta().key_count(), 5);
        let k1 = r.meta().key(1).unwrap().dts;
        assert!((2047..2100).contains(&k1), "{k1}");
    }

    #[test]
    fn a_reset_starts_a_new_run() {
        let (_m, _d, mut w, r) = setup(small(), 50_000);
        w.set_header(b"h", Some((1, true)));
        feed(&mut w, 3000, 50, 100);
        w.set_state(STATE_ENDED);
        let (ws, kc) = (r.meta().write_seq(), r.meta().key_count());
        w.reset_window();
        assert_eq!(r.meta().first_seq(), ws);
        assert_eq!(r.meta().first_key(), kc);
        assert!(r.meta().latest_key().is_none());
        feed(&mut w, 100, 50, 100);
        assert_eq!(r.meta().key(kc).unwrap().seq, ws);
    }

    /// Stores `v` at byte `off` of a region, as a corrupt (or hostile) writer would.
    fn poke64(mem: &mut Mem, off: usize, v: u64) {
        // SAFETY: off is 8-aligned and inside mem.
        unsafe { (*(mem.ptr().add(off) as *const AtomicU64)).store(v, Ordering::SeqCst) }
    }
    fn poke32(mem: &mut Mem, off: usize, v: u32) {
        // SAFETY: off is 4-aligned and inside mem.
        unsafe { (*(mem.ptr().add(off) as *const AtomicU32)).store(v, Ordering::SeqCst) }
    }

    /// A small stream written by the writer, ready to be corrupted.
    fn written() -> (Mem, Mem, StreamWriter, StreamReader) {
        let (m, d, mut w, r) = setup(small(), 50_000);
        w.set_header(b"h", Some((1, true)));
        feed(&mut w, 6000, 50, 1000);
        (m, d, w, r)
    }

    #[test]
    fn open_rejects_corrupt_geometry() {
        let geo = small();
        let mut mem = Mem::new(geo.meta_size());
        let len = mem.len();
        // SAFETY: mem lives until the end of the test.
        unsafe { Meta::init(mem.ptr(), len, geo, 1, 1) }.unwrap();
        for (off, v, want) in [
            (O_KEY_CAP, 0, ShmError::BadGeometry),
            (O_PKT_CAP, 0, ShmError::BadGeometry),
            (O_PKT_CAP, 3, ShmError::BadGeometry),
        ] {
            poke32(&mut mem, off, v);
            // SAFETY: as above.
            assert_eq!(unsafe { Meta::open(mem.ptr(), len) }.unwrap_err(), want);
            poke32(&mut mem, O_PKT_CAP, geo.pkt_cap);
            poke32(&mut mem, O_KEY_CAP, geo.key_cap);
        }
        poke32(&mut mem, O_PKT_CAP, 1 << 31);
        // SAFETY: as above.
        let e = unsafe { Meta::open(mem.ptr(), len) }.unwrap_err();
        assert!(matches!(e, ShmError::TooSmall { .. }), "{e:?}");
        poke32(&mut mem, O_PKT_CAP, geo.pkt_cap);
        poke64(&mut mem, O_DATA_SIZE, 0);
        // SAFETY: as above.
        let e = unsafe { Meta::open(mem.ptr(), len) }.unwrap_err();
        assert_eq!(e, ShmError::BadGeometry);
        // A data ring larger than what was mapped.
        poke64(&mut mem, O_DATA_SIZE, geo.data_size * 2);
        let mut data = Mem::new(geo.data_size as usize);
        // SAFETY: as above; `data` is geo.data_size bytes.
        let e = unsafe {
            let meta = Meta::open(mem.ptr(), len).unwrap();
            StreamReader::new(meta, data.ptr(), data.len()).unwrap_err()
        };
        assert!(matches!(e, ShmError::DataTooSmall { .. }), "{e:?}");
    }

    #[test]
    fn huge_or_reversed_counters_give_bounded_windows() {
        let (mut m, _d, _w, r) = written();
        let cap = small().pkt_cap as u64;
        poke64(&mut m, O_FIRST_SEQ, 0);
        poke64(&mut m, O_WRITE_SEQ, u64::MAX);
        poke64(&mut m, O_FIRST_KEY, 0);
        poke64(&mut m, O_KEY_COUNT, u64::MAX);
        let t = std::time::Instant::now();
        let w = r.meta().seq_window();
        assert_eq!(w.end - w.start, cap);
        let k = r.meta().key_window();
        assert_eq!(k.end - k.start, small().key_cap as u64);
        // Every lookup a viewer makes ends quickly and cleanly.
        let read = w.clone().filter(|&s| r.packet(s).is_some()).count();
        assert!(read as u64 <= cap);
        let _ = r.key_at_or_before(u64::MAX);
        let _ = r.key_nearest(1234);
        let _ = r.meta().latest_key();
        let _ = r.newest_dts();
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // first past the end: an empty window, not an underflow.
        poke64(&mut m, O_FIRST_SEQ, 100);
        poke64(&mut m, O_WRITE_SEQ, 10);
        poke64(&mut m, O_FIRST_KEY, 7);
        poke64(&mut m, O_KEY_COUNT, 3);
        assert!(r.meta().seq_window().is_empty());
        assert!(r.meta().key_window().is_empty());
        assert!(r.packet(10).is_none() && r.packet(50).is_none());
        assert!(r.meta().latest_key().is_none());
        assert!(r.key_at_or_before(0).is_none() && r.key_nearest(0).is_none());
        assert!(r.newest_dts().is_none());
    }

    #[test]
    fn entries_outside_the_data_ring_are_refused() {
        let (mut m, _d, _w, r) = written();
        let geo = small();
        let seq = r.meta().first_seq() + 3;
        assert!(r.frame(seq).is_some());
        let slot = r.meta().pkt_slot(seq);
        // A frame running past the ring's end.
        poke64(&mut m, slot, geo.data_size - 10);
        poke32(&mut m, slot + 16, 11);
        assert!(r.frame(seq).is_none());
        // The longest length, at the ring's start.
        poke64(&mut m, slot, u64::MAX - (u64::MAX % geo.data_size));
        poke32(&mut m, slot + 16, u32::MAX);
        assert!(r.frame(seq).is_none());
        // An empty frame.
        poke32(&mut m, slot + 16, 0);
        assert!(r.frame(seq).is_none());
        // Bytes that are not a DTP2 frame: no packet, no panic.
        poke64(&mut m, slot, 0);
        poke32(&mut m, slot + 16, 7);
        assert!(r.packet(seq).is_none());
        // A key naming a packet outside the window.
        let k = r.meta().latest_key().unwrap().0;
        let ks = r.meta().key_slot(k);
        poke64(&mut m, ks, u64::MAX);
        assert!(r.meta().key(k).is_none());
        poke64(&mut m, ks, r.meta().first_seq().wrapping_sub(1));
        assert!(r.meta().key(k).is_none());
        // A header length past its area is cut to the area.
        poke32(&mut m, O_HDR_LEN, u32::MAX);
        assert_eq!(r.meta().header().0.len(), HEADER_AREA);
    }

    #[test]
    fn seeks_find_keyframes() {
        let (_m, _d, _w, r) = written();
        // Keys at 0, 2000, 4000 ms.
        assert_eq!(r.key_at_or_before(3999).unwrap().dts, 2000);
        assert_eq!(r.key_at_or_before(4000).unwrap().dts, 4000);
        assert_eq!(r.key_nearest(2900).unwrap().dts, 2000);
        assert_eq!(r.key_nearest(3000).unwrap().dts, 2000, "earlier on a tie");
        assert_eq!(r.key_nearest(3100).unwrap().dts, 4000);
        assert!(r.newest_dts().unwrap() >= 5900);
    }

    #[test]
    fn open_rejects_foreign_memory() {
        let mut mem = Mem::new(4096);
        // SAFETY: valid memory of that length.
        let e = unsafe { Meta::open(mem.ptr(), mem.len()) }.unwrap_err();
        assert_eq!(e, ShmError::BadMagic);
    }
}
