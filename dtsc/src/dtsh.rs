//! MistServer's `.dtsh` index files: the keys, parts and fragments of every track of a VoD
//! source, cached beside it (`movie.mp4.dtsh`) so that reopening the source needs no scan.
//!
//! A `.dtsh` file is one `DTSC` header frame ([`crate::wire`]) whose track objects carry four
//! index members besides the usual ones (`docs/DTSC.md`, "Index members"):
//! binary strings of big-endian, fixed-size entries.
//!
//! | member      | bytes/entry | layout                                                         |
//! |-------------|-------------|----------------------------------------------------------------|
//! | `fragments` | 13          | `u32` duration ms, `u8` key count, `u32` first key (1-based), `u32` size |
//! | `keys`      | 25          | `u64` bpos, `u24` duration ms, `u32` number, `u16` parts, `u64` time ms |
//! | `keysizes`  | 4           | `u32` bytes per key                                            |
//! | `parts`     | 9           | `u24` size, `u24` duration ms, `s24` composition offset ms     |
//!
//! Sans-IO: [`build`] turns a source's tracks and packets into indexes, [`encode`] gives the
//! file's bytes, [`decode`] reads them back (untrusted bytes: it never panics) and
//! [`TrackIndex::packets`] lists a track's packets (time, offset, size, keyframe) from an
//! index alone.
//!
//! # How the index is cut
//!
//! These rules are MistServer's, read from `Meta::update` in its `lib/dtsc.cpp` (constants
//! from `lib/defines.h`) unless marked as Sluice's own:
//!
//! - **Keys.** A track's first packet starts a key. On a video track every packet flagged
//!   keyframe starts one. On any other track the keyframe flag is ignored (MistServer's MP4
//!   input passes `keyframe && type != "audio"` to `Meta::update`; Sluice's MP4 reader flags
//!   every audio sample, its FLV and TS readers none) and a *virtual* key starts at the first
//!   packet at least [`AUDIO_KEY_INTERVAL_MS`] (2047 ms, `AUDIO_KEY_INTERVAL`) after the
//!   current key's time. Sluice's own: a key that already holds 65535 parts (the most its
//!   `u16` count can say) is closed and the next packet starts a new key, whatever it is.
//! - **Key number**: the key's 0-based position in the track (`newKeyNum`).
//! - **Key bpos**: the `bpos` of the key's first packet. **Key time**: its DTS.
//! - **Key duration**: the next key's time minus this key's time; for the track's last key,
//!   the track's last DTS minus the key's time (MistServer grows the open key by each part's
//!   duration as the next packet arrives, so the last part's own duration is not counted).
//! - **Key size** (`keysizes`): the sum of the sizes of the key's packets as `DTP2` frames
//!   ([`crate::wire::packet_frame_len`]: MistServer's `packSendSize`,
//!   24 + 17 if offset + 15 if bpos + 19 if keyframe + 11 + payload).
//! - **Parts**: one per packet. Size: the payload length. Offset: the composition offset.
//!   Duration: the DTS difference to the track's next packet; the last packet of a track
//!   repeats the previous part's duration, and a track's only packet has 0 (MistServer sets
//!   both the previous and the new part's duration when a packet arrives).
//! - **Fragments.** A track's first key starts a fragment; a later key starts a new one when
//!   its time is at least [`FRAGMENT_MIN_DURATION_MS`] (1900 ms, `DEFAULT_FRAGMENT_DURATION`)
//!   after the time of the current fragment's first key, else it joins the current fragment.
//!   Sluice's own: a fragment that holds 255 keys (the most its `u8` count can say) is
//!   closed. A fragment's first key is written 1-based (MistServer writes `firstkey + 1`);
//!   its size is the sum of its packets' payload lengths (not frame sizes); its duration is
//!   the next fragment's first key time minus its own first key time. Sluice's own: the last
//!   fragment's duration is the track's last DTS minus its first key's time (MistServer leaves
//!   it at 0 until another fragment starts, and nothing finishes it for a file).
//! - **Out of order**: a packet whose DTS is below its track's previous DTS is skipped, as
//!   `Meta::update` skips it ("Received packets … in wrong order - ignoring!"). Packets of
//!   track ids not in the track list are skipped too.
//! - **Field widths.** Values too large for their field saturate (Sluice's own): part size,
//!   part duration and key duration at [`U24_MAX`] (16 MiB, 4.66 hours), part offset at
//!   ±[`S24_MAX`] ms, key size, fragment size and duration at `u32::MAX`. MistServer instead
//!   truncates; note that it also reads part durations into 16 bits and offsets into signed
//!   16 bits (`Meta::initializeTrack`), so values past 65535 / ±32767 ms never survive there.
//!
//! # Member order
//!
//! As MistServer's `Meta::send` writes them: each track object starts with `fragments`,
//! `keys`, `keysizes`, `parts`, then the members of [`Header::to_value`].

use std::collections::HashMap;

use crate::model::{Packet, PacketRef, Track, TrackKind};
use crate::wire::{self, Frame, Header, Value, WireError};

/// Bytes of one `fragments` entry (docs/DTSC.md, "Index members"; MistServer `DTSH_FRAGMENT_SIZE`).
pub const FRAGMENT_ENTRY_LEN: usize = 13;
/// Bytes of one `keys` entry (MistServer `DTSH_KEY_SIZE`).
pub const KEY_ENTRY_LEN: usize = 25;
/// Bytes of one `keysizes` entry: a `u32`.
pub const KEYSIZE_ENTRY_LEN: usize = 4;
/// Bytes of one `parts` entry (MistServer `DTSH_PART_SIZE`).
pub const PART_ENTRY_LEN: usize = 9;

/// A non-video track starts a virtual key at the first packet this many ms after the current
/// key's time (MistServer `AUDIO_KEY_INTERVAL`, lib/defines.h).
pub const AUDIO_KEY_INTERVAL_MS: u64 = 2047;
/// A key starts a new fragment when it is at least this many ms after the current fragment's
/// first key (MistServer `DEFAULT_FRAGMENT_DURATION`, lib/defines.h).
pub const FRAGMENT_MIN_DURATION_MS: u64 = 1900;

/// Largest value of a `u24` field (part size and duration, key duration).
pub const U24_MAX: u32 = 0xFF_FFFF;
/// Largest value of an `s24` field (part offset); the smallest is `-S24_MAX - 1`.
pub const S24_MAX: i32 = 0x7F_FFFF;

/// Most parts a key can count (`u16`); a key this full is closed.
const MAX_KEY_PARTS: u16 = u16::MAX;
/// Most keys a fragment can count (`u8`); a fragment this full is closed.
const MAX_FRAGMENT_KEYS: u8 = u8::MAX;

/// One key: a point where playback can start (a video keyframe or an audio/meta virtual key)
/// and the packets up to the next one (docs/DTSC.md, "Index members", `keys` and `keysizes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Byte position in the source file of the key's first packet.
    pub bpos: u64,
    /// Duration in ms: next key's time minus this one's, or for a track's last key its last
    /// DTS minus this one's. Stored as `u24`; larger values are saturated when written.
    pub duration: u32,
    /// The key's number: its 0-based position in the track.
    pub number: u32,
    /// How many parts (packets) the key holds.
    pub parts: u16,
    /// DTS of the key's first packet, ms.
    pub time: u64,
}

/// One packet of a track, without its payload (docs/DTSC.md, "Index members", `parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Payload size in bytes. Stored as `u24`; larger values are saturated when written.
    pub size: u32,
    /// Duration in ms: DTS of the track's next packet minus this one's (the last packet
    /// repeats the previous duration). Stored as `u24`; larger values saturate.
    pub duration: u32,
    /// Composition offset (PTS − DTS) in ms. Stored as two's complement `s24`; values outside
    /// −2^23 ..= 2^23 − 1 saturate.
    pub offset: i32,
}

/// A run of whole keys, the unit segmenting outputs cut (docs/DTSC.md, "Index members",
/// `fragments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Duration in ms: the next fragment's first key time minus this one's, or for a track's
    /// last fragment its last DTS minus this one's first key time.
    pub duration: u32,
    /// How many keys the fragment holds (1 ..= 255).
    pub keys: u8,
    /// Number of the fragment's first key, 1-based, as in the file (key `first_key - 1` of
    /// [`TrackIndex::keys`]).
    pub first_key: u32,
    /// Sum of the payload sizes of the fragment's packets, bytes.
    pub size: u32,
}

/// The index of one track: what a `.dtsh` track object carries besides the header members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackIndex {
    /// The track's kind (from its `type`): decides which parts [`TrackIndex::packets`]
    /// reports as keyframes. Not an index member itself.
    pub kind: TrackKind,
    /// The keys in time order (`keys` member).
    pub keys: Vec<Key>,
    /// Bytes of each key's packets as `DTP2` frames, one per key (`keysizes` member).
    pub keysizes: Vec<u32>,
    /// One part per packet, in DTS order; key `k` holds the `keys[k].parts` parts after
    /// those of the keys before it (`parts` member).
    pub parts: Vec<Part>,
    /// The fragments in time order (`fragments` member).
    pub fragments: Vec<Fragment>,
}

/// One packet as an index describes it ([`TrackIndex::packets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedPacket {
    /// Decode timestamp, ms: its key's time plus the durations of the key's earlier parts.
    pub dts: u64,
    /// Composition offset, PTS − DTS, ms (as [`Packet::offset`]).
    pub offset: i64,
    /// Payload size, bytes.
    pub size: u32,
    /// Duration, ms (the part's duration).
    pub duration: u32,
    /// Keyframe flag as Sluice's MP4 reader sets it: on a video track the first part of each
    /// key (so also a track's first packet and the first after a 65535-part key, which the
    /// index cannot tell from real keyframes); on an audio or meta track every packet (the
    /// MP4 reader flags every audio sample; the FLV and TS readers flag none, so a caller
    /// matching those clears it).
    pub keyframe: bool,
    /// The key's byte position in the source on the first part of a key, `None` on others
    /// (the index keeps no other positions).
    pub bpos: Option<u64>,
}

/// What is wrong with bytes given to [`decode`] as a `.dtsh` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtshError {
    /// The bytes do not start with a `DTSC` header frame.
    #[error("not a DTSC header frame: magic {magic:02x?}")]
    NotHeader {
        /// The first bytes found (fewer than 4 when the input is that short).
        magic: Vec<u8>,
    },
    /// The input ends before the header frame does.
    #[error("truncated .dtsh: {len} bytes, the header frame needs {need}")]
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes the frame needs (8 when even the frame prefix is incomplete).
        need: usize,
    },
    /// The header frame's value cannot be read, or is not a header (see [`WireError`]).
    #[error("bad DTSC header: {0}")]
    Wire(#[from] WireError),
    /// A track object lacks one of the four index members.
    #[error("track {track:?}: no {member} member")]
    MissingMember {
        /// The track's name in the `tracks` object.
        track: String,
        /// The missing member.
        member: &'static str,
    },
    /// An index member that is not a (binary) string.
    #[error("track {track:?}: {member} is not a binary string")]
    NotBinary {
        /// The track's name.
        track: String,
        /// The member.
        member: &'static str,
    },
    /// An index member whose length is not a multiple of its entry size.
    #[error("track {track:?}: {member} is {len} bytes, not a multiple of {entry}")]
    BadLength {
        /// The track's name.
        track: String,
        /// The member.
        member: &'static str,
        /// Its length, bytes.
        len: usize,
        /// Its entry size, bytes.
        entry: usize,
    },
    /// Index members that contradict each other: a `keysizes` count unlike the key count,
    /// key part counts that do not add up to the part count, or a fragment whose key range
    /// is empty or outside the keys.
    #[error("track {track:?}: inconsistent index: {what}")]
    Inconsistent {
        /// The track's name.
        track: String,
        /// What does not add up.
        what: String,
    },
}

/// A key while its track is being indexed: wide counters, narrowed by [`TrackBuilder::finish`].
struct OpenKey {
    bpos: u64,
    time: u64,
    parts: u16,
    size: u64,
}

/// A fragment while its track is being indexed.
struct OpenFragment {
    first_key: usize,
    keys: u8,
    size: u64,
}

/// A part while its track is being indexed (its duration needs the next packet).
struct OpenPart {
    dts: u64,
    size: usize,
    offset: i64,
}

/// Indexes one track's packets as they come, following `Meta::update` (module docs).
struct TrackBuilder {
    kind: TrackKind,
    keys: Vec<OpenKey>,
    fragments: Vec<OpenFragment>,
    parts: Vec<OpenPart>,
}

impl TrackBuilder {
    fn new(kind: TrackKind) -> TrackBuilder {
        TrackBuilder {
            kind,
            keys: Vec::new(),
            fragments: Vec::new(),
            parts: Vec::new(),
        }
    }

    fn push(&mut self, p: &PacketRef<'_>) {
        if self.parts.last().is_some_and(|last| p.dts < last.dts) {
            return;
        }
        let new_key = match self.keys.last() {
            None => true,
            Some(k) if k.parts == MAX_KEY_PARTS => true,
            Some(_) if self.kind == TrackKind::Video => p.keyframe,
            Some(k) => p.dts.saturating_sub(k.time) >= AUDIO_KEY_INTERVAL_MS,
        };
        if new_key {
            let new_fragment = match self.fragments.last() {
                None => true,
                Some(f) if f.keys == MAX_FRAGMENT_KEYS => true,
                Some(f) => {
                    let first_time = self.keys.get(f.first_key).map_or(0, |k| k.time);
                    p.dts.saturating_sub(first_time) >= FRAGMENT_MIN_DURATION_MS
                }
            };
            self.keys.push(OpenKey {
                bpos: p.bpos,
                time: p.dts,
                parts: 0,
                size: 0,
            });
            match self.fragments.last_mut() {
                Some(f) if !new_fragment => f.keys += 1,
                _ => self.fragments.push(OpenFragment {
                    first_key: self.keys.len() - 1,
                    keys: 1,
                    size: 0,
                }),
            }
        }
        // Both exist: the first packet started a key and a fragment.
        if let Some(k) = self.keys.last_mut() {
            k.parts += 1;
            k.size = k.size.saturating_add(wire::packet_frame_len(p) as u64);
        }
        if let Some(f) = self.fragments.last_mut() {
            f.size = f.size.saturating_add(p.data.len() as u64);
        }
        self.parts.push(OpenPart {
            dts: p.dts,
            size: p.data.len(),
            offset: p.offset,
        });
    }

    fn finish(self) -> TrackIndex {
        let last_dts = self.parts.last().map_or(0, |p| p.dts);
        let mut parts: Vec<Part> = Vec::with_capacity(self.parts.len());
        for (i, p) in self.parts.iter().enumerate() {
            let duration = match self.parts.get(i + 1) {
                Some(next) => next.dts - p.dts,
                None => parts.last().map_or(0, |prev| u64::from(prev.duration)),
            };
            parts.push(Part {
                size: sat_u24(p.size as u64),
                duration: sat_u24(duration),
                offset: sat_s24(p.offset),
            });
        }
        let key_end = |i: usize| self.keys.get(i).map_or(last_dts, |k| k.time);
        let keys = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Key {
                bpos: k.bpos,
                duration: sat_u24(key_end(i + 1) - k.time),
                number: sat_u32(i as u64),
                parts: k.parts,
                time: k.time,
            })
            .collect();
        let keysizes = self.keys.iter().map(|k| sat_u32(k.size)).collect();
        let fragments = self
            .fragments
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let start = key_end(f.first_key);
                let end = self
                    .fragments
                    .get(i + 1)
                    .map_or(last_dts, |next| key_end(next.first_key));
                Fragment {
                    duration: sat_u32(end - start),
                    keys: f.keys,
                    first_key: sat_u32(f.first_key as u64 + 1),
                    size: sat_u32(f.size),
                }
            })
            .collect();
        TrackIndex {
            kind: self.kind,
            keys,
            keysizes,
            parts,
            fragments,
        }
    }
}

fn sat_u24(v: u64) -> u32 {
    v.min(u64::from(U24_MAX)) as u32
}

fn sat_s24(v: i64) -> i32 {
    v.clamp(-i64::from(S24_MAX) - 1, i64::from(S24_MAX)) as i32
}

fn sat_u32(v: u64) -> u32 {
    v.min(u64::from(u32::MAX)) as u32
}

/// Indexes a source's packets: one [`TrackIndex`] per track, in the order of `tracks`, cut
/// by the rules in the module docs (MistServer's `Meta::update`, lib/dtsc.cpp).
///
/// `packets` are in DTS order across tracks (each track's own order is what counts); a
/// packet belongs to the first track with its id; packets of unknown tracks and packets
/// whose DTS goes back within their track are skipped. A packet's size is its payload length
/// and a key's `bpos` its first packet's.
pub fn build(tracks: &[Track], packets: &[Packet]) -> Vec<TrackIndex> {
    let mut indexer = Indexer::new(tracks);
    for p in packets {
        indexer.push(&p.as_ref());
    }
    indexer.finish()
}

/// [`build`] one packet at a time, for a writer that streams packets it does not keep (the
/// converter writing a `.dtsc` file and its `.dtsh`). Memory: the index, about 16 bytes per
/// packet plus 24 per key.
#[derive(Default)]
pub struct Indexer {
    builders: Vec<TrackBuilder>,
    by_id: HashMap<u32, usize>,
}

impl Indexer {
    /// An empty index for `tracks` (the same rules as [`build`]).
    pub fn new(tracks: &[Track]) -> Indexer {
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        for (i, t) in tracks.iter().enumerate() {
            by_id.entry(t.id).or_insert(i);
        }
        Indexer {
            builders: tracks.iter().map(|t| TrackBuilder::new(t.kind)).collect(),
            by_id,
        }
    }

    /// Indexes the next packet; its `bpos` is the byte position a key starting at it gets.
    pub fn push(&mut self, p: &PacketRef<'_>) {
        if let Some(b) = self
            .by_id
            .get(&p.track)
            .and_then(|&i| self.builders.get_mut(i))
        {
            b.push(p);
        }
    }

    /// The indexes, one per track in the order given to [`Indexer::new`].
    pub fn finish(self) -> Vec<TrackIndex> {
        self.builders
            .into_iter()
            .map(TrackBuilder::finish)
            .collect()
    }
}

/// The four index members of a track, in MistServer's order (`Meta::send`, lib/dtsc.cpp).
fn index_members(idx: &TrackIndex) -> Vec<(String, Value)> {
    let mut fragments = Vec::with_capacity(idx.fragments.len() * FRAGMENT_ENTRY_LEN);
    for f in &idx.fragments {
        fragments.extend_from_slice(&f.duration.to_be_bytes());
        fragments.push(f.keys);
        fragments.extend_from_slice(&f.first_key.to_be_bytes());
        fragments.extend_from_slice(&f.size.to_be_bytes());
    }
    let mut keys = Vec::with_capacity(idx.keys.len() * KEY_ENTRY_LEN);
    for k in &idx.keys {
        keys.extend_from_slice(&k.bpos.to_be_bytes());
        keys.extend_from_slice(&u24_bytes(k.duration.min(U24_MAX)));
        keys.extend_from_slice(&k.number.to_be_bytes());
        keys.extend_from_slice(&k.parts.to_be_bytes());
        keys.extend_from_slice(&k.time.to_be_bytes());
    }
    let keysizes: Vec<u8> = idx.keysizes.iter().flat_map(|s| s.to_be_bytes()).collect();
    let mut parts = Vec::with_capacity(idx.parts.len() * PART_ENTRY_LEN);
    for p in &idx.parts {
        parts.extend_from_slice(&u24_bytes(p.size.min(U24_MAX)));
        parts.extend_from_slice(&u24_bytes(p.duration.min(U24_MAX)));
        parts.extend_from_slice(&u24_bytes(sat_s24(i64::from(p.offset)) as u32));
    }
    vec![
        ("fragments".into(), Value::Str(fragments)),
        ("keys".into(), Value::Str(keys)),
        ("keysizes".into(), Value::Str(keysizes)),
        ("parts".into(), Value::Str(parts)),
    ]
}

/// The low 24 bits of `v`, big-endian (two's complement for a negative `s24` cast to `u32`).
fn u24_bytes(v: u32) -> [u8; 3] {
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

/// The whole `.dtsh` file for `header` and its tracks' indexes: one `DTSC` header frame whose
/// value is [`Header::to_value`]'s (a file's header has `live: false`, giving `vod: 1`) with
/// `fragments`, `keys`, `keysizes` and `parts` inserted at the start of each track object, as
/// MistServer's `Meta::send` writes them (docs/DTSC.md, "Index members").
///
/// `index[i]` belongs to `header.tracks[i]`; a track without an index entry is written
/// without index members (and [`decode`] refuses such a file). Values too large for their
/// field saturate (module docs).
pub fn encode(header: &Header, index: &[TrackIndex]) -> Vec<u8> {
    let mut top = header.to_value();
    if let Value::Object(members) = &mut top {
        for (name, v) in members.iter_mut() {
            if name != "tracks" {
                continue;
            }
            if let Value::Object(tracks) = v {
                for ((_, track), idx) in tracks.iter_mut().zip(index) {
                    if let Value::Object(m) = track {
                        m.splice(0..0, index_members(idx));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    wire::write_header_value(&top, &mut out);
    out
}

/// A big-endian unsigned integer from up to 8 bytes.
fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| acc << 8 | u64::from(x))
}

/// The entries of index member `member` of track `track`: its bytes cut into `entry`-sized
/// pieces.
fn entries<'a>(
    t: &'a Value,
    track: &str,
    member: &'static str,
    entry: usize,
) -> Result<std::slice::ChunksExact<'a, u8>, DtshError> {
    let bytes = match t.get(member) {
        None => {
            return Err(DtshError::MissingMember {
                track: track.to_owned(),
                member,
            })
        }
        Some(Value::Str(b)) => b,
        Some(_) => {
            return Err(DtshError::NotBinary {
                track: track.to_owned(),
                member,
            })
        }
    };
    if !bytes.len().is_multiple_of(entry) {
        return Err(DtshError::BadLength {
            track: track.to_owned(),
            member,
            len: bytes.len(),
            entry,
        });
    }
    Ok(bytes.chunks_exact(entry))
}

/// Reads one track object's index members and checks that they agree.
fn track_index(name: &str, t: &Value, kind: TrackKind) -> Result<TrackIndex, DtshError> {
    let fragments: Vec<Fragment> = entries(t, name, "fragments", FRAGMENT_ENTRY_LEN)?
        .map(|c| Fragment {
            duration: be(&c[0..4]) as u32,
            keys: c[4],
            first_key: be(&c[5..9]) as u32,
            size: be(&c[9..13]) as u32,
        })
        .collect();
    let keys: Vec<Key> = entries(t, name, "keys", KEY_ENTRY_LEN)?
        .map(|c| Key {
            bpos: be(&c[0..8]),
            duration: be(&c[8..11]) as u32,
            number: be(&c[11..15]) as u32,
            parts: be(&c[15..17]) as u16,
            time: be(&c[17..25]),
        })
        .collect();
    let keysizes: Vec<u32> = entries(t, name, "keysizes", KEYSIZE_ENTRY_LEN)?
        .map(|c| be(c) as u32)
        .collect();
    let parts: Vec<Part> = entries(t, name, "parts", PART_ENTRY_LEN)?
        .map(|c| Part {
            size: be(&c[0..3]) as u32,
            duration: be(&c[3..6]) as u32,
            // Sign-extend the 24-bit field: move it to the top of an i32 and shift back.
            offset: ((be(&c[6..9]) as u32) << 8) as i32 >> 8,
        })
        .collect();
    let bad = |what: String| DtshError::Inconsistent {
        track: name.to_owned(),
        what,
    };
    if keysizes.len() != keys.len() {
        return Err(bad(format!(
            "{} keysizes for {} keys",
            keysizes.len(),
            keys.len()
        )));
    }
    let part_sum: u64 = keys.iter().map(|k| u64::from(k.parts)).sum();
    if part_sum != parts.len() as u64 {
        return Err(bad(format!(
            "the keys count {part_sum} parts, there are {}",
            parts.len()
        )));
    }
    for (i, f) in fragments.iter().enumerate() {
        let end = (u64::from(f.first_key) + u64::from(f.keys)).saturating_sub(1);
        if f.first_key == 0 || f.keys == 0 || end > keys.len() as u64 {
            return Err(bad(format!(
                "fragment {i} holds keys {} + {} (1-based) of {}",
                f.first_key,
                f.keys,
                keys.len()
            )));
        }
    }
    Ok(TrackIndex {
        kind,
        keys,
        keysizes,
        parts,
        fragments,
    })
}

/// Reads a `.dtsh` file: its header ([`Header::from_value`]) and one [`TrackIndex`] per
/// header track, in the same order. Bytes after the header frame are ignored.
///
/// Never panics, whatever the bytes. Errors: not a `DTSC` frame ([`DtshError::NotHeader`]),
/// too short ([`DtshError::Truncated`]), an unreadable value or header
/// ([`DtshError::Wire`]), a track lacking an index member or with one that is not a string
/// or not a whole number of entries, and index members that contradict each other
/// ([`DtshError::Inconsistent`]: `keysizes` and `keys` counts differ, key part counts do not
/// add up to the part count, a fragment's key range is empty or out of bounds).
pub fn decode(bytes: &[u8]) -> Result<(Header, Vec<TrackIndex>), DtshError> {
    let magic = &bytes[..bytes.len().min(4)];
    if magic != &wire::MAGIC_HEADER[..magic.len()] {
        return Err(DtshError::NotHeader {
            magic: magic.to_vec(),
        });
    }
    let value = match wire::parse_frame(bytes)? {
        Some((Frame::Header(v), _)) => v,
        Some(_) => {
            return Err(DtshError::NotHeader {
                magic: magic.to_vec(),
            })
        }
        None => {
            let need = match bytes.get(4..8) {
                Some(len) => 8 + be(len) as usize,
                None => 8,
            };
            return Err(DtshError::Truncated {
                len: bytes.len(),
                need,
            });
        }
    };
    let header = Header::from_value(&value)?;
    let mut index = Vec::with_capacity(header.tracks.len());
    if let Some(Value::Object(tracks)) = value.get("tracks") {
        // Header::from_value reads the same members in the same order.
        for ((name, t), track) in tracks.iter().zip(&header.tracks) {
            index.push(track_index(name, t, track.kind)?);
        }
    }
    Ok((header, index))
}

impl TrackIndex {
    /// The track's packets as the index describes them, in order: for each key, its parts,
    /// timed from the key's time (see [`IndexedPacket`] for each field).
    pub fn packets(&self) -> IndexedPackets<'_> {
        IndexedPackets {
            index: self,
            key: 0,
            in_key: 0,
            part: 0,
            dts: 0,
        }
    }
}

/// Iterator over a track's packets from its index ([`TrackIndex::packets`]). Stops early,
/// without panicking, if the keys count more parts than there are.
#[derive(Debug, Clone)]
pub struct IndexedPackets<'a> {
    index: &'a TrackIndex,
    key: usize,
    in_key: u16,
    part: usize,
    dts: u64,
}

impl Iterator for IndexedPackets<'_> {
    type Item = IndexedPacket;

    fn next(&mut self) -> Option<IndexedPacket> {
        loop {
            let key = self.index.keys.get(self.key)?;
            if self.in_key >= key.parts {
                self.key += 1;
                self.in_key = 0;
                continue;
            }
            let part = self.index.parts.get(self.part)?;
            let first = self.in_key == 0;
            if first {
                self.dts = key.time;
            }
            let out = IndexedPacket {
                dts: self.dts,
                offset: i64::from(part.offset),
                size: part.size,
                duration: part.duration,
                keyframe: first || self.index.kind != TrackKind::Video,
                bpos: first.then_some(key.bpos),
            };
            self.dts = self.dts.saturating_add(u64::from(part.duration));
            self.in_key += 1;
            self.part += 1;
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Codec;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// B-frame style composition offsets of the video test track, repeating every 5 frames
    /// (so every keyframe, at a multiple of 50, has 80).
    const OFFSETS: [i64; 5] = [80, 200, 80, 0, 40];

    fn video_track() -> Track {
        let mut v = Track::new(1, TrackKind::Video, Codec::H264);
        v.width = 640;
        v.height = 360;
        v.fpks = 25000;
        v.init = vec![1, 0x64, 0, 0x1E, 0xFF];
        v
    }

    fn audio_track(id: u32) -> Track {
        let mut a = Track::new(id, TrackKind::Audio, Codec::Aac);
        a.rate = 48000;
        a.channels = 2;
        a.bits = 16;
        a.init = vec![0x11, 0x90];
        a
    }

    fn video_size(i: u64) -> usize {
        if i.is_multiple_of(50) {
            4845 + i as usize
        } else {
            300 + (i as usize % 7) * 10
        }
    }

    /// 250 frames at 25 fps, a keyframe every 50, payloads laid out from byte 48.
    fn video_packets() -> Vec<Packet> {
        let mut bpos = 48;
        (0..250u64)
            .map(|i| {
                let size = video_size(i);
                let p = Packet {
                    track: 1,
                    dts: i * 40,
                    offset: OFFSETS[i as usize % 5],
                    keyframe: i.is_multiple_of(50),
                    bpos,
                    data: Bytes::from(vec![i as u8; size]),
                };
                bpos += size as u64 + 20;
                p
            })
            .collect()
    }

    /// DTS of AAC frame `i` at 48 kHz (1024 samples each), in whole ms.
    fn aac_dts(i: u64) -> u64 {
        i * 1024 * 1000 / 48000
    }

    /// `n` AAC frames of track `id`, flagged keyframe or not.
    fn audio_packets(id: u32, n: u64, keyframe: bool) -> Vec<Packet> {
        (0..n)
            .map(|i| Packet {
                track: id,
                dts: aac_dts(i),
                offset: 0,
                keyframe,
                bpos: 1_000_000 + i * 400,
                data: Bytes::from(vec![0x21; 360 + (i as usize % 3)]),
            })
            .collect()
    }

    /// Merges per-track packet lists into one DTS-ordered list (stable: ties keep list order).
    fn merge(lists: Vec<Vec<Packet>>) -> Vec<Packet> {
        let mut all: Vec<Packet> = lists.into_iter().flatten().collect();
        all.sort_by_key(|p| p.dts);
        all
    }

    fn vod(tracks: Vec<Track>) -> Header {
        Header {
            live: false,
            unixzero: None,
            tracks,
        }
    }

    /// The bytes of the binary index member `member` of track number `track` in a `.dtsh`.
    fn member_bytes(file: &[u8], track: usize, member: &str) -> Vec<u8> {
        let Some((Frame::Header(v), _)) = wire::parse_frame(file).unwrap() else {
            panic!("no header")
        };
        let t = &v.get("tracks").unwrap().as_object().unwrap()[track].1;
        t.get(member).unwrap().as_bytes().unwrap().to_vec()
    }

    #[test]
    fn video_keys_parts_and_fragments() {
        let (v, a) = (video_track(), audio_track(2));
        let packets = merge(vec![video_packets(), audio_packets(2, 469, true)]);
        let idx = build(&[v, a], &packets);
        assert_eq!(idx.len(), 2);
        let vi = &idx[0];
        assert_eq!(vi.kind, TrackKind::Video);
        assert_eq!(vi.keys.len(), 5);
        assert_eq!(vi.parts.len(), 250);
        let src = video_packets();
        for (k, key) in vi.keys.iter().enumerate() {
            let first = &src[k * 50];
            assert_eq!(
                *key,
                Key {
                    bpos: first.bpos,
                    // The last key: last DTS (9960) minus its time (8000).
                    duration: if k < 4 { 2000 } else { 1960 },
                    number: k as u32,
                    parts: 50,
                    time: k as u64 * 2000,
                }
            );
            let frames: usize = src[k * 50..k * 50 + 50]
                .iter()
                .map(|p| wire::packet_frame_len(&p.as_ref()))
                .sum();
            assert_eq!(vi.keysizes[k] as usize, frames);
        }
        assert_eq!(vi.keys[0].bpos, 48);
        assert_eq!(
            vi.parts[0],
            Part {
                size: 4845,
                duration: 40,
                offset: 80
            }
        );
        assert!(vi.parts.iter().all(|p| p.duration == 40));
        // Keys 2000 ms apart: each starts a fragment (>= 1900 ms after the last).
        assert_eq!(vi.fragments.len(), 5);
        for (k, f) in vi.fragments.iter().enumerate() {
            let size: usize = src[k * 50..k * 50 + 50].iter().map(|p| p.data.len()).sum();
            assert_eq!(f.first_key, k as u32 + 1);
            assert_eq!(f.keys, 1);
            assert_eq!(f.size as usize, size);
            assert_eq!(f.duration, if k < 4 { 2000 } else { 1960 });
        }
        // Keyframe size by MistServer's formula: 24 + 17 (offset) + 15 (bpos) + 19 + 11 + data.
        assert_eq!(
            wire::packet_frame_len(&src[0].as_ref()),
            24 + 17 + 15 + 19 + 11 + 4845
        );
    }

    #[test]
    fn round_trips_and_reproduces_the_packets() {
        let tracks = vec![video_track(), audio_track(2)];
        let packets = merge(vec![video_packets(), audio_packets(2, 469, true)]);
        let idx = build(&tracks, &packets);
        let header = vod(tracks);
        let file = encode(&header, &idx);
        assert_eq!(&file[..4], b"DTSC");
        let (h2, idx2) = decode(&file).unwrap();
        assert_eq!(h2, header);
        assert_eq!(idx2, idx);
        let rebuilt: Vec<IndexedPacket> = idx2[0].packets().collect();
        let src = video_packets();
        assert_eq!(rebuilt.len(), src.len());
        for (r, p) in rebuilt.iter().zip(&src) {
            assert_eq!(
                (r.dts, r.offset, r.size as usize, r.keyframe),
                (p.dts, p.offset, p.data.len(), p.keyframe)
            );
            assert_eq!(r.bpos, p.keyframe.then_some(p.bpos));
        }
        let audio: Vec<IndexedPacket> = idx2[1].packets().collect();
        for (r, p) in audio.iter().zip(audio_packets(2, 469, true)) {
            assert_eq!(
                (r.dts, r.offset, r.size as usize, r.keyframe),
                (p.dts, p.offset, p.data.len(), p.keyframe)
            );
        }
    }

    #[test]
    fn index_members_come_first_in_mistserver_order() {
        let tracks = vec![video_track(), audio_track(2)];
        let idx = build(&tracks, &video_packets());
        let file = encode(&vod(tracks), &idx);
        let Some((Frame::Header(v), n)) = wire::parse_frame(&file).unwrap() else {
            panic!("no header")
        };
        assert_eq!(n, file.len());
        let top: Vec<&str> = v.as_object().unwrap().iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(top, ["vod", "version", "tracks"]);
        for (_, t) in v.get("tracks").unwrap().as_object().unwrap() {
            let names: Vec<&str> = t.as_object().unwrap().iter().map(|(k, _)| &k[..]).collect();
            assert_eq!(
                names[..5],
                ["fragments", "keys", "keysizes", "parts", "trackid"]
            );
        }
        // The audio track has no packets: empty members, and it decodes to an empty index.
        assert_eq!(member_bytes(&file, 1, "parts"), Vec::<u8>::new());
        let (_, idx2) = decode(&file).unwrap();
        assert!(idx2[1].keys.is_empty() && idx2[1].packets().next().is_none());
    }

    #[test]
    fn key_entry_bytes_match_the_table() {
        let tracks = vec![video_track()];
        let idx = build(&tracks, &video_packets());
        let file = encode(&vod(tracks), &idx);
        let keys = member_bytes(&file, 0, "keys");
        assert_eq!(keys.len(), 5 * KEY_ENTRY_LEN);
        let mut want = Vec::new();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 48]); // u64 bpos 48
        want.extend_from_slice(&[0x00, 0x07, 0xD0]); // u24 duration 2000
        want.extend_from_slice(&[0, 0, 0, 0]); // u32 number 0
        want.extend_from_slice(&[0, 50]); // u16 parts 50
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // u64 time 0
        assert_eq!(want.len(), KEY_ENTRY_LEN);
        assert_eq!(&keys[..KEY_ENTRY_LEN], &want[..]);
        // Second key: number 1, time 2000.
        assert_eq!(&keys[KEY_ENTRY_LEN + 11..KEY_ENTRY_LEN + 15], &[0, 0, 0, 1]);
        assert_eq!(
            &keys[KEY_ENTRY_LEN + 17..2 * KEY_ENTRY_LEN],
            &[0, 0, 0, 0, 0, 0, 0x07, 0xD0]
        );
        let parts = member_bytes(&file, 0, "parts");
        // 4845 = 0x0012ED, 40, 80.
        assert_eq!(&parts[..9], &[0x00, 0x12, 0xED, 0, 0, 40, 0, 0, 80]);
        let frags = member_bytes(&file, 0, "fragments");
        let size0 = idx[0].fragments[0].size.to_be_bytes();
        let want: Vec<u8> = [&[0, 0, 0x07, 0xD0, 1, 0, 0, 0, 1][..], &size0[..]].concat();
        assert_eq!(&frags[..FRAGMENT_ENTRY_LEN], &want[..]);
        let keysizes = member_bytes(&file, 0, "keysizes");
        assert_eq!(&keysizes[..4], &idx[0].keysizes[0].to_be_bytes());
    }

    #[test]
    fn negative_offset_is_twos_complement_s24() {
        let tracks = vec![video_track()];
        let p = |dts, offset, keyframe| Packet {
            track: 1,
            dts,
            offset,
            keyframe,
            bpos: 100,
            data: Bytes::from_static(&[1, 2, 3]),
        };
        let idx = build(&tracks, &[p(0, 0, true), p(40, -40, false)]);
        let file = encode(&vod(tracks), &idx);
        let parts = member_bytes(&file, 0, "parts");
        assert_eq!(&parts[9..], &[0, 0, 3, 0, 0, 40, 0xFF, 0xFF, 0xD8]);
        let (_, back) = decode(&file).unwrap();
        assert_eq!(back[0].parts[1].offset, -40);
        // The last part repeats the previous duration.
        assert_eq!(back[0].parts[1].duration, 40);
        // The extremes of s24.
        let mut idx2 = idx.clone();
        idx2[0].parts[0].offset = -S24_MAX - 1;
        idx2[0].parts[1].offset = S24_MAX;
        let file = encode(&vod(vec![video_track()]), &idx2);
        let parts = member_bytes(&file, 0, "parts");
        assert_eq!(&parts[6..9], &[0x80, 0, 0]);
        assert_eq!(&parts[15..18], &[0x7F, 0xFF, 0xFF]);
        assert_eq!(decode(&file).unwrap().1, idx2);
    }

    #[test]
    fn audio_only_gets_virtual_keys() {
        let a = audio_track(1);
        // 10 s of AAC: 469 frames of 21.33 ms. The keyframe flag does not matter.
        for flagged in [true, false] {
            let idx = build(std::slice::from_ref(&a), &audio_packets(1, 469, flagged));
            let ai = &idx[0];
            // A key at the first frame >= 2047 ms after the last key: frames 96, 192, …
            // (dts 2048, 4096, …).
            let times: Vec<u64> = ai.keys.iter().map(|k| k.time).collect();
            assert_eq!(times, [0, 2048, 4096, 6144, 8192]);
            let parts: Vec<u16> = ai.keys.iter().map(|k| k.parts).collect();
            assert_eq!(parts, [96, 96, 96, 96, 85]);
            let durations: Vec<u32> = ai.keys.iter().map(|k| k.duration).collect();
            assert_eq!(
                durations,
                [2048, 2048, 2048, 2048, aac_dts(468) as u32 - 8192]
            );
            let bpos: Vec<u64> = ai.keys.iter().map(|k| k.bpos).collect();
            assert_eq!(
                bpos,
                [1_000_000, 1_038_400, 1_076_800, 1_115_200, 1_153_600]
            );
            assert_eq!(ai.fragments.len(), 5);
            // Part durations follow the 21/22 ms pattern of whole-ms AAC times.
            assert_eq!(ai.parts[0].duration, 21);
            assert_eq!(ai.parts[1].duration, 21);
            assert_eq!(ai.parts[2].duration, 22);
            assert!(ai.packets().all(|p| p.keyframe));
            let dts: Vec<u64> = ai.packets().map(|p| p.dts).collect();
            let want: Vec<u64> = (0..469).map(aac_dts).collect();
            assert_eq!(dts, want);
        }
    }

    #[test]
    fn fragments_group_keys_until_1900_ms() {
        // A keyframe every 10 frames (400 ms): keys 0, 400, …, 1600 share a fragment, 2000
        // starts the next one.
        let tracks = vec![video_track()];
        let packets: Vec<Packet> = (0..100u64)
            .map(|i| Packet {
                track: 1,
                dts: i * 40,
                offset: 0,
                keyframe: i.is_multiple_of(10),
                bpos: 48 + i,
                data: Bytes::from(vec![0; 10]),
            })
            .collect();
        let idx = build(&tracks, &packets);
        let f = &idx[0].fragments;
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].first_key, f[0].keys, f[0].duration, f[0].size),
            (1, 5, 2000, 500)
        );
        assert_eq!(
            (f[1].first_key, f[1].keys, f[1].duration, f[1].size),
            (6, 5, 1960, 500)
        );
    }

    #[test]
    fn counter_limits_start_new_keys_and_fragments() {
        // 65536 frames without a further keyframe: the key closes at 65535 parts.
        let tracks = vec![video_track()];
        let packets: Vec<Packet> = (0..65536u64)
            .map(|i| Packet {
                track: 1,
                dts: i,
                offset: 0,
                keyframe: i == 0,
                bpos: 0,
                data: Bytes::new(),
            })
            .collect();
        let idx = build(&tracks, &packets);
        let parts: Vec<u16> = idx[0].keys.iter().map(|k| k.parts).collect();
        assert_eq!(parts, [65535, 1]);
        assert_eq!(idx[0].keys[1].time, 65535);
        assert_eq!(idx[0].keys[0].duration, 65535);

        // A keyframe every ms: the 256th key is past the 255 a fragment can count.
        let packets: Vec<Packet> = (0..300u64)
            .map(|i| Packet {
                track: 1,
                dts: i,
                offset: 0,
                keyframe: true,
                bpos: 0,
                data: Bytes::new(),
            })
            .collect();
        let idx = build(&tracks, &packets);
        let f = &idx[0].fragments;
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].first_key, f[0].keys), (1, 255));
        assert_eq!((f[1].first_key, f[1].keys), (256, 45));
    }

    #[test]
    fn wide_values_saturate_and_out_of_order_packets_are_skipped() {
        let tracks = vec![video_track()];
        let big = Bytes::from(vec![0; U24_MAX as usize + 1]);
        let p = |dts, offset, data: &Bytes| Packet {
            track: 1,
            dts,
            offset,
            keyframe: dts == 0,
            bpos: 0,
            data: data.clone(),
        };
        let packets = [
            p(0, -9_000_000, &big),
            p(20_000_000, 9_000_000, &Bytes::new()),
            p(10, 0, &Bytes::new()), // goes back: skipped
            p(20_000_040, 0, &Bytes::new()),
            p(1, 0, &Bytes::new()), // unknown track below
        ];
        let mut packets = packets.to_vec();
        packets[4].track = 9;
        let idx = build(&tracks, &packets);
        let parts = &idx[0].parts;
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0],
            Part {
                size: U24_MAX,
                duration: U24_MAX,
                offset: -S24_MAX - 1
            }
        );
        assert_eq!(
            parts[1],
            Part {
                size: 0,
                duration: 40,
                offset: S24_MAX
            }
        );
        assert_eq!(idx[0].keys[0].duration, U24_MAX);
        assert_eq!(idx[0].fragments[0].size, U24_MAX + 1);
        let file = encode(&vod(tracks), &idx);
        assert_eq!(decode(&file).unwrap().1, idx);
    }

    /// Rewrites one index member of the first track of a valid file.
    fn with_member(member: &str, value: Value) -> Vec<u8> {
        let tracks = vec![video_track()];
        let file = encode(&vod(tracks.clone()), &build(&tracks, &video_packets()));
        let Some((Frame::Header(mut v), _)) = wire::parse_frame(&file).unwrap() else {
            panic!("no header")
        };
        let Value::Object(top) = &mut v else { panic!() };
        let (_, Value::Object(tracks)) = top.iter_mut().find(|(k, _)| k == "tracks").unwrap()
        else {
            panic!()
        };
        let Value::Object(t) = &mut tracks[0].1 else {
            panic!()
        };
        let slot = t.iter_mut().find(|(k, _)| k == member).unwrap();
        slot.1 = value;
        let mut out = Vec::new();
        wire::write_header_value(&v, &mut out);
        out
    }

    #[test]
    fn decode_refuses_what_is_not_a_consistent_dtsh() {
        let tracks = vec![video_track()];
        let file = encode(&vod(tracks.clone()), &build(&tracks, &video_packets()));
        assert!(matches!(
            decode(b"DTP2\0\0\0\0"),
            Err(DtshError::NotHeader { .. })
        ));
        assert!(matches!(decode(b"XY"), Err(DtshError::NotHeader { .. })));
        assert_eq!(decode(b""), Err(DtshError::Truncated { len: 0, need: 8 }));
        assert_eq!(
            decode(&file[..100]),
            Err(DtshError::Truncated {
                len: 100,
                need: file.len()
            })
        );
        let mut cmd = Vec::new();
        wire::write_command(&Value::obj([("cmd", Value::str("hi"))]), &mut cmd);
        assert!(matches!(decode(&cmd), Err(DtshError::NotHeader { .. })));

        let keys = member_bytes(&file, 0, "keys");
        let e = decode(&with_member("keys", Value::Str(keys[..24].to_vec())));
        assert!(matches!(
            e,
            Err(DtshError::BadLength {
                member: "keys",
                len: 24,
                entry: 25,
                ..
            })
        ));
        let e = decode(&with_member("parts", Value::Int(1)));
        assert!(matches!(
            e,
            Err(DtshError::NotBinary {
                member: "parts",
                ..
            })
        ));
        // One part fewer than the keys count.
        let parts = member_bytes(&file, 0, "parts");
        let e = decode(&with_member("parts", Value::Str(parts[9..].to_vec())));
        assert!(matches!(e, Err(DtshError::Inconsistent { .. })), "{e:?}");
        // keysizes for 4 keys of 5.
        let ks = member_bytes(&file, 0, "keysizes");
        let e = decode(&with_member("keysizes", Value::Str(ks[4..].to_vec())));
        assert!(matches!(e, Err(DtshError::Inconsistent { .. })), "{e:?}");
        // A fragment reaching past the last key.
        let mut frags = member_bytes(&file, 0, "fragments");
        let n = frags.len();
        frags[n - FRAGMENT_ENTRY_LEN + 4] = 2; // the last fragment (key 5) claims keys 5 and 6
        let e = decode(&with_member("fragments", Value::Str(frags)));
        assert!(matches!(e, Err(DtshError::Inconsistent { .. })), "{e:?}");
        // First key 0 (the field is 1-based).
        let mut frags = member_bytes(&file, 0, "fragments");
        frags[5..9].copy_from_slice(&[0, 0, 0, 0]);
        let e = decode(&with_member("fragments", Value::Str(frags)));
        assert!(matches!(e, Err(DtshError::Inconsistent { .. })), "{e:?}");
        // First key 0 and no keys (found by the dtsh_decode fuzz target: an underflow).
        let mut frags = member_bytes(&file, 0, "fragments");
        frags[4..9].copy_from_slice(&[0, 0, 0, 0, 0]);
        let e = decode(&with_member("fragments", Value::Str(frags)));
        assert!(matches!(e, Err(DtshError::Inconsistent { .. })), "{e:?}");
        // A plain header without index members (what the TCP protocol sends).
        let mut plain = Vec::new();
        wire::write_header(&vod(vec![video_track()]), &mut plain);
        assert!(matches!(
            decode(&plain),
            Err(DtshError::MissingMember {
                member: "fragments",
                ..
            })
        ));
        // Trailing bytes after the frame are ignored.
        let mut more = file.clone();
        more.extend_from_slice(b"DTP2 and more");
        assert!(decode(&more).is_ok());
    }

    /// One track's packets for the property tests: (gap ms, offset, keyframe, size, bpos).
    fn arb_track_packets() -> impl Strategy<Value = Vec<(u64, i64, bool, usize, u64)>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(0u64), 0..100u64, 0..3000u64],
                -500..500i64,
                any::<bool>(),
                0..40usize,
                any::<u64>(),
            ),
            0..60,
        )
    }

    fn arb_kind() -> impl Strategy<Value = TrackKind> {
        prop_oneof![
            Just(TrackKind::Video),
            Just(TrackKind::Audio),
            Just(TrackKind::Meta)
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut framed = b"DTSC".to_vec();
            framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed);
        }

        #[test]
        fn decode_never_panics_on_damaged_files(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let tracks = vec![video_track(), audio_track(2)];
            let packets = merge(vec![
                video_packets()[..60].to_vec(),
                audio_packets(2, 120, false),
            ]);
            let mut file = encode(&vod(tracks.clone()), &build(&tracks, &packets));
            for (at, b) in edits {
                let n = file.len();
                file[at % n] = b;
            }
            let n = file.len();
            file.truncate(n - cut % 16);
            if let Ok((_, idx)) = decode(&file) {
                for t in &idx {
                    let _ = t.packets().count();
                }
            }
        }

        #[test]
        fn build_encode_decode_round_trips(
            kinds in proptest::collection::vec(arb_kind(), 1..4),
            lists in proptest::collection::vec(arb_track_packets(), 4),
        ) {
            let tracks: Vec<Track> = kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| Track::new(i as u32 + 1, k, Codec::Other("X".into())))
                .collect();
            let per_track: Vec<Vec<Packet>> = tracks
                .iter()
                .zip(&lists)
                .map(|(t, list)| {
                    let mut dts = 0;
                    list.iter()
                        .map(|&(gap, offset, keyframe, size, bpos)| {
                            dts += gap;
                            Packet {
                                track: t.id,
                                dts,
                                offset,
                                keyframe,
                                bpos,
                                data: Bytes::from(vec![0xAB; size]),
                            }
                        })
                        .collect()
                })
                .collect();
            let idx = build(&tracks, &merge(per_track.clone()));
            prop_assert_eq!(idx.len(), tracks.len());
            let header = vod(tracks.clone());
            let file = encode(&header, &idx);
            let (h2, idx2) = decode(&file).unwrap();
            prop_assert_eq!(h2, header);
            prop_assert_eq!(&idx2, &idx);
            for ((t, ti), src) in tracks.iter().zip(&idx2).zip(&per_track) {
                let got: Vec<IndexedPacket> = ti.packets().collect();
                prop_assert_eq!(got.len(), src.len());
                let video = t.kind == TrackKind::Video;
                for (i, (g, p)) in got.iter().zip(src).enumerate() {
                    prop_assert_eq!(g.dts, p.dts);
                    prop_assert_eq!(g.offset, p.offset);
                    prop_assert_eq!(g.size as usize, p.data.len());
                    let want_key = if video { p.keyframe || i == 0 } else { true };
                    prop_assert_eq!(g.keyframe, want_key);
                    if let Some(b) = g.bpos {
                        prop_assert_eq!(b, p.bpos);
                    }
                    if video {
                        prop_assert_eq!(g.bpos.is_some(), p.keyframe || i == 0);
                    }
                }
                let parts: u64 = ti.keys.iter().map(|k| u64::from(k.parts)).sum();
                prop_assert_eq!(parts, src.len() as u64);
                let frag_keys: u64 = ti.fragments.iter().map(|f| u64::from(f.keys)).sum();
                prop_assert_eq!(frag_keys, ti.keys.len() as u64);
                let frag_size: u64 = ti.fragments.iter().map(|f| u64::from(f.size)).sum();
                prop_assert_eq!(frag_size, src.iter().map(|p| p.data.len() as u64).sum::<u64>());
            }
        }
    }
}
