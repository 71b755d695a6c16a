//! The operating-system side of a stream's shared memory: memfd regions, mappings, the futex
//! that wakes readers, and the Unix-socket handshake in which the buffer hands a reader its
//! regions (SCM_RIGHTS). The layout inside the regions is `dtsc::shm`.
//!
//! Socket protocol (DTSC `DTCM` frames, MistServer's command framing, both ways):
//! * client → buffer `{"cmd":"attach","mode":"play"|"push"|"observe"}`
//! * buffer → client `{"cmd":"attached","meta_size":N,"data_size":N}` with the meta and data
//!   memfds attached to the same `sendmsg` (SCM_RIGHTS), or `{"cmd":"error","reason":"…"}`.
//! * then a publisher sends `DTSC` header frames and `DTP2` packet frames; a reader sends
//!   nothing and keeps the socket open: its closing (even by SIGKILL) detaches it.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use dtsc::shm::{Meta, StreamReader};
use dtsc::wire::{self, Frame, Value};
use memmap2::{Mmap, MmapMut, MmapOptions};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The socket a stream's buffer listens on: `RUNDIR/stream_NAME.sock`, with every byte of the
/// name outside `[A-Za-z0-9_+.-]` written as `%XX` so that any stream name is a safe file name.
pub fn socket_path(rundir: &Path, stream: &str) -> PathBuf {
    let mut name = String::from("stream_");
    for b in stream.bytes() {
        if b.is_ascii_alphanumeric() || b"_+.-".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".sock");
    rundir.join(name)
}

/// A memfd of `len` bytes (sparse until written), mapped read-write.
pub fn create_region(name: &str, len: u64) -> Result<(OwnedFd, MmapMut)> {
    let fd = nix::sys::memfd::memfd_create(
        std::ffi::CString::new(name)?.as_c_str(),
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .context("memfd_create")?;
    nix::unistd::ftruncate(&fd, len as i64).context("ftruncate of a stream region")?;
    // SAFETY: the memfd is ours; its size was just set.
    let map = unsafe { MmapOptions::new().len(len as usize).map_mut(fd.as_raw_fd()) }
        .context("mmap of a stream region")?;
    Ok((fd, map))
}

/// A stream region backed by a file on disk instead of memory: an unnamed file
/// (`O_TMPFILE`, gone when the last process closes it) in `dir`, `len` bytes (sparse), mapped
/// shared. Its pages are the page cache's: written back and dropped when the buffer spills
/// them ([`spill`]), read back from disk when a viewer touches them again.
pub fn create_file_region(dir: &std::path::Path, len: u64) -> Result<(OwnedFd, MmapMut)> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let raw = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_TMPFILE | nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .with_context(|| format!("an unnamed file in {}", dir.display()))?;
    // SAFETY: `open` just returned this descriptor, owned by nobody else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    nix::unistd::ftruncate(&fd, len as i64).context("ftruncate of a spill file")?;
    // SAFETY: the file is ours and unnamed; its size was just set.
    let map = unsafe { MmapOptions::new().len(len as usize).map_mut(fd.as_raw_fd()) }
        .context("mmap of a spill file")?;
    Ok((fd, map))
}

/// Starts writing `len` bytes at `offset` of a file-backed region to disk without waiting
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE` only), so that a later [`spill`] of the
/// range finds it written and does not wait for the disk.
pub fn start_writeback(fd: &OwnedFd, offset: u64, len: u64) -> Result<()> {
    // SAFETY: a plain system call on our descriptor.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sync_file_range");
    }
    Ok(())
}

/// Moves `len` bytes at `offset` of a file-backed region out of memory: written to disk
/// (`sync_file_range`), unmapped from this process (`MADV_DONTNEED` on `map`, which maps the
/// whole region) and dropped from the page cache (`POSIX_FADV_DONTNEED`). The bytes stay in
/// the file: a later read faults them back in.
pub fn spill(fd: &OwnedFd, map: &mut MmapMut, offset: u64, len: u64) -> Result<()> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    // SAFETY: a plain system call on our descriptor.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("sync_file_range");
    }
    let range = &mut map[offset as usize..(offset + len) as usize];
    // SAFETY: the range lies inside our mapping; MADV_DONTNEED on a shared file mapping only
    // drops this process's page table entries (the data is in the file).
    unsafe {
        nix::sys::mman::madvise(
            std::ptr::NonNull::new_unchecked(range.as_mut_ptr().cast()),
            range.len(),
            nix::sys::mman::MmapAdvise::MADV_DONTNEED,
        )
    }
    .context("madvise")?;
    posix_fadvise(
        fd.as_raw_fd(),
        offset as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .context("posix_fadvise")?;
    Ok(())
}

/// Frees `len` bytes at `offset` of a memfd region (the pages go back to the system; the file
/// keeps its size and reads of the hole give zeros).
pub fn punch_hole(fd: &OwnedFd, offset: u64, len: u64) -> Result<()> {
    nix::fcntl::fallocate(
        fd.as_raw_fd(),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
    .context("fallocate(PUNCH_HOLE)")?;
    Ok(())
}

/// Wakes every process sleeping on `word` (FUTEX_WAKE on a process-shared word).
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: the address is a valid, 4-aligned word of a shared mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Sleeps while `word` still equals `seen`, at most `timeout` (FUTEX_WAIT). Returns at once
/// when the word already changed.
pub fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    if word.load(Ordering::Acquire) != seen {
        return;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: as futex_wake; the timespec outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAIT,
            seen,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Sends one DTCM command frame, with `fds` attached when not empty.
pub fn send_command(sock: RawFd, cmd: &Value, fds: &[RawFd]) -> Result<()> {
    let mut buf = Vec::new();
    wire::write_command(cmd, &mut buf);
    let iov = [IoSlice::new(&buf)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .context("sendmsg on a buffer socket")?;
    if n != buf.len() {
        bail!("short write of a command ({n} of {} bytes)", buf.len());
    }
    Ok(())
}

/// Reads one DTCM command frame from a blocking socket, with any file descriptors that came
/// with it. Gives up after `timeout`.
pub fn recv_command(sock: &UnixStream, timeout: Duration) -> Result<(Value, Vec<OwnedFd>)> {
    sock.set_read_timeout(Some(timeout))?;
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    loop {
        if let Some((frame, _used)) = wire::parse_frame(&buf)? {
            return match frame {
                Frame::Command(v) => Ok((v, fds)),
                _ => Err(anyhow!("expected a DTCM command from the buffer")),
            };
        }
        let mut chunk = [0u8; 4096];
        let mut cspace = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cspace),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("recvmsg on a buffer socket")?;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel just gave us these descriptors.
                fds.extend(
                    list.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        if n == 0 {
            bail!("the buffer closed the socket");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a connector holds while attached to a stream's buffer: the socket (its liveness) and
/// both regions mapped read-only.
pub struct Attached {
    /// The socket to the buffer. Publishers write frames to it.
    pub sock: UnixStream,
    meta_map: Mmap,
    data_map: Mmap,
}

/// How a connector attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A viewer: counted, reads packets.
    Play,
    /// The publisher: writes frames; one at a time.
    Push,
    /// The controller's stats: reads counters, not counted.
    Observe,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Play => "play",
            Mode::Push => "push",
            Mode::Observe => "observe",
        }
    }
}

/// Connects to a buffer socket and attaches. Errors carry the buffer's reason (for example
/// "another publisher is live").
pub fn attach(path: &Path, mode: Mode) -> Result<Attached> {
    // A buffer started a moment ago may have its socket file before it listens, or not yet:
    // retry those two errors for up to 2 s (a loaded machine is slow to start a process).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let sock = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to the buffer at {}", path.display()))
            }
        }
    };
    let cmd = Value::Object(vec![
        ("cmd".into(), Value::Str(b"attach".to_vec())),
        ("mode".into(), Value::Str(mode.as_str().as_bytes().to_vec())),
    ]);
    send_command(sock.as_raw_fd(), &cmd, &[])?;
    let (reply, fds) = recv_command(&sock, Duration::from_secs(5))?;
    match reply.get("cmd").and_then(|v| v.as_str()) {
        Some("attached") => {}
        Some("error") => bail!(
            "{}",
            reply
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("refused")
        ),
        _ => bail!("unexpected reply from the buffer"),
    }
    if fds.len() != 2 {
        bail!("the buffer sent {} descriptors, expected 2", fds.len());
    }
    let meta_size = reply.get("meta_size").and_then(|v| v.as_int()).unwrap_or(0) as usize;
    let data_size = reply.get("data_size").and_then(|v| v.as_int()).unwrap_or(0) as usize;
    // SAFETY: read-only shared mappings of the buffer's memfds, sized as it says.
    let meta_map = unsafe { MmapOptions::new().len(meta_size).map(fds[0].as_raw_fd()) }?;
    let data_map = unsafe { MmapOptions::new().len(data_size).map(fds[1].as_raw_fd()) }?;
    sock.set_read_timeout(None)?;
    Ok(Attached {
        sock,
        meta_map,
        data_map,
    })
}

impl Attached {
    /// A reader over the mapped regions; valid while `self` lives.
    pub fn reader(&self) -> Result<StreamReader> {
        // SAFETY: both maps live as long as self, at the lengths given; readers only load.
        // The reader checks the geometry in the meta region against both lengths.
        unsafe {
            let meta = Meta::open(self.meta_map.as_ptr() as *mut u8, self.meta_map.len())?;
            Ok(StreamReader::new(
                meta,
                self.data_map.as_ptr(),
                self.data_map.len(),
            )?)
        }
    }
}
