//! A stream's shared memory as a viewer reads it (`dtsc::shm`): a meta region and data ring
//! written by the real writer, then arbitrary bytes of them overwritten, as a corrupt or
//! hostile process could, then every lookup a viewer makes (header, packet by seq, keyframe
//! lookups, seek by DTS, the walk of a cursor, the newest packets backwards), each with a
//! bounded number of steps. Nothing may panic, read outside the regions or hang; whatever
//! the reader hands out must lie inside the bounds it promises.
//!
//! Input: byte 0 = packets to write (0..=255, enough to wrap the 64-entry packet ring and the
//! 8-entry keyframe ring), byte 1 = a seek target's scale, then patches of 11 bytes each:
//! region selector, offset (u16 LE, taken modulo the region), value (u64 LE; as many of its
//! bytes as fit). Regions: 0 the fixed header, 1 the packet ring, 2 the keyframe ring, 3 the
//! DTSC header area, 4 the data ring.
#![no_main]

use dtsc::shm::{Geometry, Meta, StreamReader, StreamWriter, HEADER_AREA};
use dtsc::wire::{self, Frame, Header};
use dtsc::{Codec, PacketRef, Track, TrackKind};
use libfuzzer_sys::fuzz_target;

/// Small rings, so that a few hundred packets wrap each of them.
const GEO: Geometry = Geometry {
    data_size: 64 << 10,
    pkt_cap: 64,
    key_cap: 8,
};
/// Bytes of the fixed header before the DTSC header area (the layout's first part).
const FIXED: usize = 256;
/// Steps the simulated cursor takes at most.
const CURSOR_STEPS: usize = 512;

/// 8-aligned zeroed memory standing in for a mapping.
struct Mem(Vec<u64>);

impl Mem {
    fn new(bytes: usize) -> Mem {
        Mem(vec![0u64; bytes.div_ceil(8)])
    }
    fn len(&self) -> usize {
        self.0.len() * 8
    }
}

/// A valid DTSC header frame with an H.264 track 1 and an AAC track 2.
fn header_frame() -> Vec<u8> {
    let h = Header {
        live: true,
        unixzero: Some(0),
        tracks: vec![
            Track::new(1, TrackKind::Video, Codec::H264),
            Track::new(2, TrackKind::Audio, Codec::Aac),
        ],
    };
    let mut out = Vec::new();
    wire::write_header(&h, &mut out);
    out
}

/// Overwrites bytes `off..off + value.len()` of the region at `base` (`len` bytes), cut at
/// the region's end.
///
/// # Safety
/// `base` must point to `len` writable bytes.
unsafe fn patch(base: *mut u8, len: usize, off: usize, value: &[u8]) {
    for (i, b) in value.iter().enumerate() {
        if off + i < len {
            base.add(off + i).write_volatile(*b);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let (Some(&count), Some(&scale)) = (input.first(), input.get(1)) else {
        return;
    };
    let mut meta_mem = Mem::new(GEO.meta_size());
    let mut data_mem = Mem::new(GEO.data_size as usize);
    let (meta_len, data_len) = (meta_mem.len(), data_mem.len());
    // Raw pointers taken once: the writer, the patches and the reader all go through them.
    let meta_base = meta_mem.0.as_mut_ptr() as *mut u8;
    let data_base = data_mem.0.as_mut_ptr() as *mut u8;

    // SAFETY: both Vecs outlive the writer and the reader (dropped at the end of this
    // closure, after them), and are as long as the lengths given.
    let mut w = unsafe {
        let Ok(meta) = Meta::init(meta_base, meta_len, GEO, 1, 4000) else {
            return;
        };
        StreamWriter::new(meta, data_base)
    };
    w.set_header(&header_frame(), Some((1, true)));
    let payload = [0x55u8; 3000];
    for i in 0..count as u64 {
        let video = i % 3 != 2;
        let size = 1 + (i as usize * 37 % payload.len());
        let p = PacketRef {
            track: if video { 1 } else { 2 },
            dts: i * 20,
            offset: 0,
            keyframe: video && i % 12 == 0,
            bpos: 0,
            data: &payload[..size],
        };
        let _ = w.append(&p);
    }
    w.set_state(dtsc::shm::STATE_LIVE);

    let pkt_ring = GEO.pkt_ring_offset();
    let key_ring = GEO.key_ring_offset();
    for chunk in input[2..].chunks_exact(11) {
        let off = u16::from_le_bytes([chunk[1], chunk[2]]) as usize;
        let value = &chunk[3..11];
        // (start, length) of the region patched, in the meta region or the data ring.
        let (base, start, len) = match chunk[0] % 5 {
            0 => (meta_base, 0, FIXED),
            1 => (meta_base, pkt_ring, key_ring - pkt_ring),
            2 => (meta_base, key_ring, GEO.meta_size() - key_ring),
            3 => (meta_base, FIXED, HEADER_AREA),
            _ => (data_base, 0, data_len),
        };
        // SAFETY: start + len lies inside the region at `base`; `patch` cuts at `len`.
        unsafe { patch(base.add(start), len, off % len, value) };
    }

    // The viewer attaches: the geometry may now be garbage, which must be refused cleanly.
    // SAFETY: as above.
    let reader = unsafe {
        let Ok(meta) = Meta::open(meta_base, meta_len) else {
            return;
        };
        let Ok(r) = StreamReader::new(meta, data_base, data_len) else {
            return;
        };
        r
    };
    let m = *reader.meta();
    let geo = m.geometry();
    assert!(geo.meta_size() <= meta_len && geo.data_size as usize <= data_len);

    // Header, as Cursor::reload_tracks reads it.
    let (bytes, _) = m.header();
    assert!(bytes.len() <= HEADER_AREA);
    if let Ok(Some((Frame::Header(v), _))) = wire::parse_frame(&bytes) {
        let _ = Header::from_value(&v);
    }
    let _ = (
        m.state(),
        m.viewers(),
        m.unixzero(),
        m.dvr_ms(),
        m.write_pos(),
    );

    // Every packet of the window, by seq.
    let seqs = m.seq_window();
    assert!(seqs.end - seqs.start <= geo.pkt_cap as u64);
    for seq in seqs.clone() {
        if let Some((e, frame)) = reader.frame(seq) {
            assert_eq!(frame.len(), e.len as usize);
            assert!(e.pos % geo.data_size + e.len as u64 <= geo.data_size);
        }
        let _ = reader.packet(seq).map(|p| p.data.len());
        let _ = reader.still_valid(seq);
    }

    // Keyframes, and the seeks a viewer makes.
    let keys = m.key_window();
    assert!(keys.end - keys.start <= geo.key_cap as u64);
    for k in keys {
        if let Some(key) = m.key(k) {
            assert!(key.seq >= seqs.start && key.seq <= seqs.end);
            let _ = reader.packet(key.seq);
        }
    }
    let target = (scale as u64) * 40;
    let _ = reader.key_at_or_before(target);
    let _ = reader.key_nearest(target);
    let newest = reader.newest_dts();
    let _ = newest.map(|n| reader.key_at_or_before(n.saturating_sub(target)));

    // A cursor's walk from the newest keyframe (Cursor::next_packet without the futex).
    let mut seq = m.latest_key().map_or(m.first_seq(), |(_, k)| k.seq);
    for _ in 0..CURSOR_STEPS {
        let first = m.first_seq();
        if seq < first {
            seq = m.latest_key().map_or(first, |(_, k)| k.seq).max(first);
        }
        if seq >= m.write_seq() {
            break;
        }
        let _ = reader.packet(seq).map(|p| (p.track, p.dts));
        seq += 1;
    }

    // The newest packets, backwards (Cursor::newest_read_dts).
    let first = m.first_seq();
    let mut s = m.write_seq();
    let mut steps = 0;
    while s > first && steps < 4096 {
        s -= 1;
        steps += 1;
        let _ = reader.packet(s);
    }

    drop(w);
    drop((meta_mem, data_mem));
});
