//! The core of the one connection loop every output shares (MistServer's `Output` base, as a
//! small struct instead of a base class): attach to a stream's buffer, wait until it has
//! tracks and keyframes, pick where to start, and read packets one by one straight from the
//! shared-memory pages, sleeping on the buffer's futex when caught up.

use std::path::Path;
use std::time::{Duration, Instant};

use buffer::shmem::{self, Attached, Mode};
use dtsc::shm::{self, StreamReader};
use dtsc::wire::{self, Frame, Header};
use dtsc::{PacketRef, Track};

use crate::core::control::{self, OpenError};
use crate::core::tracksel::Selection;

/// What [`Cursor::next_packet`] found.
pub enum Next<'a> {
    /// Packet `seq`; check [`Cursor::still_valid`] after using its bytes.
    Packet(u64, PacketRef<'a>),
    /// The stream's tracks changed (a new header): re-send init data before the next packet.
    TracksChanged,
    /// Nothing new yet: sleep with [`Cursor::wait`] passing this futex value.
    Wait(u32),
    /// The source ended and every packet was read.
    Ended,
}

/// Where an output starts reading a stream ([`Cursor::start`]). Times are DTS in ms on the
/// stream's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPolicy {
    /// The usual start: a live stream at its newest keyframe (a new viewer's first picture
    /// comes at once rather than a GOP later); an ended one (a stored file, a finished
    /// publish in its linger time) at its first keyframe, all of it, as from a file.
    Usual,
    /// The oldest keyframe in the window: a viewer carried over to a new buffer, which
    /// then skips what it already had.
    WindowStart,
    /// The last keyframe at or before this DTS, or the window's first when it is earlier
    /// (`?start=` of the progressive outputs).
    AtOrBefore(u64),
    /// The keyframe nearest this DTS, the earlier on a tie: RTMP `play` with a start and
    /// `NetStream.seek` ("the keyframe closest to the specified time").
    Nearest(u64),
    /// The last keyframe at or before this many ms after the window's first keyframe (RTSP
    /// `Range: npt=X-`, RFC 2326 §12.29).
    IntoWindow(u64),
    /// The last keyframe at least this many ms before the newest packet (a DVR viewer's
    /// "that far behind live", `?start=-N`).
    BehindLive(u64),
}

/// What an output keeps of a track list (see [`Cursor::narrow_to`]).
pub type Narrowing = fn(&[Track]) -> Vec<Track>;

/// A viewer's position in a stream.
pub struct Cursor {
    attached: Attached,
    reader: StreamReader,
    /// What it was opened with, to open the stream again ([`Cursor::reattach`]).
    origin: (std::path::PathBuf, String, String),
    tracks: Vec<Track>,
    header_version: u64,
    seq: u64,
    /// Packets skipped because this viewer fell out of the window.
    pub skipped: u64,
    /// Packets from this DTS (ms) on end the stream for this viewer ([`Cursor::end_at`]).
    end_ms: Option<u64>,
    /// The viewer's track selectors; `tracks` holds only the tracks they keep, and packets of
    /// other tracks are skipped.
    selection: Selection,
    /// What the output can carry of the selected tracks (FLV: one of each kind), applied
    /// after `selection` whenever the tracks change.
    narrow: Option<Narrowing>,
    /// True when `tracks` leaves out a track of the stream, so packets must be checked.
    filtering: bool,
}

impl Cursor {
    /// Opens `stream` through the controller and attaches to its buffer as a viewer.
    pub fn open(rundir: &Path, stream: &str, addr: &str) -> Result<Cursor, OpenError> {
        let sock = control::open(rundir, stream, false, addr, None)?;
        let attached = shmem::attach(&sock, Mode::Play)
            .or_else(|_| {
                // The buffer may have just exited: ask once more (the controller restarts it).
                let sock = control::open(rundir, stream, false, addr, None)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                shmem::attach(&sock, Mode::Play)
            })
            .map_err(|e| OpenError::Failed(format!("{e:#}")))?;
        let reader = attached
            .reader()
            .map_err(|e| OpenError::Failed(format!("{e:#}")))?;
        let mut c = Cursor {
            attached,
            reader,
            origin: (rundir.to_path_buf(), stream.to_string(), addr.to_string()),
            tracks: Vec::new(),
            header_version: u64::MAX,
            seq: 0,
            skipped: 0,
            end_ms: None,
            selection: Selection::default(),
            narrow: None,
            filtering: false,
        };
        c.reload_tracks();
        Ok(c)
    }

    /// The shared-memory reader (for outputs that walk the index themselves, such as HLS).
    pub fn reader(&self) -> &StreamReader {
        &self.reader
    }

    /// The stream's tracks as of the last header read.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Applies the viewer's track selectors ([`Selection`]): from now on [`tracks`](Self::tracks)
    /// holds only the selected tracks and [`next_packet`](Self::next_packet) skips the others.
    pub fn select(&mut self, selection: Selection) {
        self.selection = selection;
        self.header_version = u64::MAX;
        self.reload_tracks();
    }

    /// Narrows the (selected) tracks to what the output carries, now and whenever the tracks
    /// change; packets of the other tracks are skipped as for [`select`](Self::select).
    pub fn narrow_to(&mut self, narrow: Narrowing) {
        self.narrow = Some(narrow);
        self.header_version = u64::MAX;
        self.reload_tracks();
    }

    /// Re-reads the DTSC header if the buffer replaced it; true when it changed.
    pub fn reload_tracks(&mut self) -> bool {
        let meta = self.reader.meta();
        if meta.header_version() == self.header_version {
            return false;
        }
        let (bytes, version) = meta.header();
        self.header_version = version;
        if let Ok(Some((Frame::Header(v), _))) = wire::parse_frame(&bytes) {
            if let Ok(h) = Header::from_value(&v) {
                let all = h.tracks.len();
                let tracks = if self.selection.is_default() {
                    h.tracks
                } else {
                    self.selection.apply(&h.tracks)
                };
                self.tracks = match self.narrow {
                    Some(f) => f(&tracks),
                    None => tracks,
                };
                self.filtering = self.tracks.len() != all;
                return true;
            }
        }
        false
    }

    /// Waits until the stream is live with tracks and at least `min_keys` keyframes in the
    /// window (an ended stream with at least one keyframe also counts), at most `timeout`.
    /// Gives up early when the stream has no tracks yet and its pull's last attempt failed
    /// ([`Cursor::input_failure`] then says why).
    pub fn wait_ready(&mut self, timeout: Duration, min_keys: u64) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            // Not while the state is still `WAITING`: a stored file is being loaded (its
            // tracks and first keys are there, but it is not yet ENDED, and a viewer would
            // take it for live and start at its last keyframe).
            let ready = self.wait_until(slice, |r, tracks| {
                let meta = r.meta();
                let window = meta.key_window();
                let keys = window.end - window.start;
                !tracks.is_empty()
                    && meta.state() != shm::STATE_WAITING
                    && (keys >= min_keys || (meta.state() == shm::STATE_ENDED && keys >= 1))
            });
            if ready
                || Instant::now() >= deadline
                || self.reader.meta().state() == shm::STATE_ENDED
                || (self.tracks.is_empty() && self.input_failure().is_some())
            {
                return ready;
            }
        }
    }

    /// Why the stream's pull has no data, while its latest attempt failed and it waits to
    /// try again: the `last_error` of `RUNDIR/NAME.pull.json` in state `reconnecting` or
    /// `waiting` (an upstream that refused, sent garbage or went away). `None` for streams
    /// that are not pulled, and while a pull connects or plays.
    pub fn input_failure(&self) -> Option<String> {
        let (rundir, stream, _) = &self.origin;
        let text = std::fs::read_to_string(rundir.join(format!("{stream}.pull.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        matches!(v["state"].as_str(), Some("reconnecting" | "waiting"))
            .then(|| v["last_error"].as_str().map(str::to_string))
            .flatten()
    }

    /// Why a [`Cursor::wait_ready`] gave up, for a viewer: the input's failure, or that no
    /// data came in time.
    pub fn not_ready_reason(&self) -> String {
        match self.input_failure() {
            Some(why) => format!("its input failed: {why}"),
            None => "no data yet".into(),
        }
    }

    /// Waits until `ready(reader, tracks)` holds (checked after every batch the buffer
    /// writes, with the tracks reloaded) or the stream ends, at most `timeout`. Returns the
    /// last value of `ready`. For requests that block until the stream reaches a point
    /// (LL-HLS blocking playlist reload and preload hints).
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&StreamReader, &[Track]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let meta = *self.reader.meta();
            let seen = meta
                .notify_word()
                .load(std::sync::atomic::Ordering::Acquire);
            self.reload_tracks();
            if ready(&self.reader, &self.tracks) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || meta.state() == shm::STATE_ENDED {
                return false;
            }
            shmem::futex_wait(
                meta.notify_word(),
                seen,
                (deadline - now).min(Duration::from_millis(100)),
            );
        }
    }

    /// Positions the cursor where an output starts reading, by `policy`, and returns the DTS
    /// (ms) of the keyframe it starts at. A policy that names a point the window has no
    /// keyframe for falls back to [`StartPolicy::Usual`]. `None` (cursor unchanged) when the
    /// window holds no keyframe at all; [`Cursor::next_packet`] then starts at the first one
    /// to arrive.
    ///
    /// Every output starts through here, so a stream starts at the same keyframe whatever
    /// the protocol (RTMP `play`, RTSP `PLAY`, HTTP progressive, DTSC, raw TS, pushes and
    /// recordings, and a viewer carried over to a new buffer).
    pub fn start(&mut self, policy: StartPolicy) -> Option<u64> {
        let m = *self.reader.meta();
        let key = match policy {
            StartPolicy::Usual if m.state() == shm::STATE_ENDED => m.key(m.first_key()),
            StartPolicy::Usual => m.latest_key().map(|(_, k)| k),
            StartPolicy::WindowStart => m.key(m.first_key()),
            StartPolicy::AtOrBefore(dts) => self.reader.key_at_or_before(dts),
            StartPolicy::Nearest(dts) => self.reader.key_nearest(dts),
            StartPolicy::IntoWindow(ms) => m
                .key(m.first_key())
                .and_then(|first| self.reader.key_at_or_before(first.dts.saturating_add(ms))),
            StartPolicy::BehindLive(ms) => self
                .reader
                .newest_dts()
                .and_then(|newest| self.reader.key_at_or_before(newest.saturating_sub(ms))),
        };
        match key {
            Some(k) => {
                self.seq = k.seq;
                Some(k.dts)
            }
            None if policy != StartPolicy::Usual => self.start(StartPolicy::Usual),
            None => None,
        }
    }

    /// Ends the stream for this viewer at the first packet whose DTS is `end_ms` or later
    /// (`?end=` of the progressive outputs).
    pub fn end_at(&mut self, end_ms: u64) {
        self.end_ms = Some(end_ms);
    }

    /// Moves to packet `seq`.
    pub fn seek_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// The next packet, or why there is none.
    pub fn next_packet(&mut self) -> Next<'_> {
        if self.reload_tracks() {
            return Next::TracksChanged;
        }
        let meta = *self.reader.meta();
        let seen = meta
            .notify_word()
            .load(std::sync::atomic::Ordering::Acquire);
        // State before write_seq: the buffer stores ENDED after the last packet's write_seq,
        // so seeing ENDED here guarantees the write_seq loaded below includes every packet.
        let state = meta.state();
        let first = meta.first_seq();
        if self.seq < first {
            // Too slow: the window moved past us. Jump to the newest keyframe.
            let from = self.seq;
            if self.start(StartPolicy::Usual).is_none() || self.seq < first {
                self.seq = first;
            }
            self.skipped += self.seq.saturating_sub(from);
        }
        let write_seq = meta.write_seq();
        if self.filtering {
            // Packets of tracks the viewer did not select are passed over by their index
            // entry, without reading their bytes.
            while self.seq < write_seq
                && meta
                    .packet(self.seq)
                    .is_some_and(|e| !self.tracks.iter().any(|t| t.id == e.track))
            {
                self.seq += 1;
            }
        }
        if self.seq >= write_seq {
            if state == shm::STATE_ENDED {
                return Next::Ended;
            }
            return Next::Wait(seen);
        }
        let seq = self.seq;
        match self.reader.packet(seq) {
            Some(p) if self.end_ms.is_some_and(|e| p.dts >= e) => Next::Ended,
            Some(p) => {
                self.seq += 1;
                Next::Packet(seq, p)
            }
            None => {
                // Left the window between the checks, or unparsable: skip it.
                self.seq += 1;
                self.skipped += 1;
                Next::Wait(seen.wrapping_sub(1))
            }
        }
    }

    /// True when packet `seq`'s bytes were still inside the window after being used.
    pub fn still_valid(&self, seq: u64) -> bool {
        self.reader.still_valid(seq)
    }

    /// Sleeps until the buffer signals new packets (futex value differs from `seen`) or
    /// `timeout` passes.
    pub fn wait(&self, seen: u32, timeout: Duration) {
        shmem::futex_wait(self.reader.meta().notify_word(), seen, timeout);
    }

    /// True when the stream's buffer is gone (its process ended: the socket to it is closed).
    /// The buffer never writes to a viewer after the attach, so readable means closed.
    pub fn buffer_gone(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.attached.sock.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// The DTS (ms) of the newest packet this cursor has read of each of its tracks, found by
    /// reading back from its position (at most 4096 packets): what a viewer that sent all it
    /// read has had. Tracks without a packet in that span are left out.
    pub fn newest_read_dts(&self) -> Vec<(u32, u64)> {
        let first = self.reader.meta().first_seq();
        let mut out: Vec<(u32, u64)> = Vec::new();
        let mut seq = self.seq;
        while seq > first && self.seq - seq < 4096 && out.len() < self.tracks.len() {
            seq -= 1;
            if let Some(p) = self.reader.packet(seq) {
                if self.tracks.iter().any(|t| t.id == p.track)
                    && !out.iter().any(|&(t, _)| t == p.track)
                {
                    out.push((p.track, p.dts));
                }
            }
        }
        out
    }

    /// Opens the stream again after its buffer died (the controller starts a new one, and
    /// the publisher reattaches to it): the same stream, track selection and narrowing,
    /// positioned at the new buffer's first keyframe. Waits up to `wait` for it to have one.
    pub fn reattach(&self, wait: Duration) -> Option<Cursor> {
        let deadline = Instant::now() + wait;
        let (rundir, stream, addr) = &self.origin;
        while Instant::now() < deadline {
            if let Ok(mut c) = Cursor::open(rundir, stream, addr) {
                c.select(self.selection.clone());
                if let Some(n) = self.narrow {
                    c.narrow_to(n);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if c.wait_ready(left, 1) {
                    c.start(StartPolicy::WindowStart);
                    return Some(c);
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}
