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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dtsc::shm::{Meta, StreamReader};
use ipc::messages::{BufferReply, BufferRequest};
use memmap2::{Mmap, MmapMut, MmapOptions};
use nix::fcntl::{fcntl, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::MemFdCreateFlag;

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

/// What a region's memfd is sealed against once it is sized and mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Its size only (`F_SEAL_SHRINK | F_SEAL_GROW`): the data ring, whose pages the buffer
    /// punches out, which a write seal would forbid.
    Size,
    /// Its size, and writes through every descriptor and mapping made afterwards
    /// (`F_SEAL_FUTURE_WRITE`): the meta region. The buffer's own mapping, made before the
    /// seal, stays writable; a client cannot write it even through a descriptor it opens
    /// again read-write from `/proc`.
    SizeAndWrites,
}

/// Set once the first sealing failure was logged: a kernel without a seal fails the same
/// way for every region.
static SEAL_WARNED: AtomicBool = AtomicBool::new(false);

/// Adds `seals` to a memfd; a failure (a kernel without them) is logged once per process
/// and otherwise ignored: the regions then work unsealed, as before.
fn seal(fd: &OwnedFd, seals: SealFlag) {
    if let Err(e) = fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)) {
        if !SEAL_WARNED.swap(true, Ordering::Relaxed) {
            let line = format!(
                "[buffer {}] cannot seal the stream's shared memory ({seals:?}: {e}); going on \
                 without that seal\n",
                std::process::id()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
    }
}

/// A memfd of `len` bytes (sparse until written), mapped read-write, then sealed as
/// `sealing` says and against further seals (`F_SEAL_SEAL`). Clients get it through
/// [`read_only`], never this descriptor.
pub fn create_region(name: &str, len: u64, sealing: Sealing) -> Result<(OwnedFd, MmapMut)> {
    let fd = nix::sys::memfd::memfd_create(
        std::ffi::CString::new(name)?.as_c_str(),
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .context("memfd_create")?;
    nix::unistd::ftruncate(&fd, len as i64).context("ftruncate of a stream region")?;
    // Nobody may change its size now: a client that shrank it would make every process
    // that maps it die of SIGBUS.
    seal(&fd, SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW);
    // SAFETY: the memfd is ours; its size was just set and sealed.
    let map = unsafe { MmapOptions::new().len(len as usize).map_mut(fd.as_raw_fd()) }
        .context("mmap of a stream region")?;
    if sealing == Sealing::SizeAndWrites {
        seal(&fd, SealFlag::F_SEAL_FUTURE_WRITE);
    }
    seal(&fd, SealFlag::F_SEAL_SEAL);
    owner_read_only(&fd);
    Ok((fd, map))
}

/// Makes the file behind `fd` readable by its owner only (mode 0400). Descriptors opened
/// before keep their access; a client that opens `/proc/self/fd/N` again read-write, to
/// get around [`read_only`], is refused (`EACCES`) unless it runs with `CAP_DAC_OVERRIDE`
/// (as root): run Sluice as an ordinary user and the data ring, which cannot be write-sealed
/// because its pages are punched out, is read-only to every viewer too.
fn owner_read_only(fd: &OwnedFd) {
    let _ = nix::sys::stat::fchmod(fd.as_raw_fd(), nix::sys::stat::Mode::S_IRUSR);
}

/// A read-only descriptor of the file behind `fd`: `/proc/self/fd/N` opened `O_RDONLY`,
/// which makes a new open file description of the same file (a `dup` would share `fd`'s
/// read-write one). A process holding only this descriptor can neither `write` nor
/// `ftruncate` nor `fallocate` the file, nor map it `PROT_WRITE` + `MAP_SHARED` (`EACCES`),
/// nor `mprotect` a shared mapping of it writable. This is what clients get.
pub fn read_only(fd: &OwnedFd) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let raw = nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {path} read-only (is /proc mounted?)"))?;
    // SAFETY: `open` just returned this descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A stream region backed by a file on disk instead of memory: an unnamed file
/// (`O_TMPFILE`, gone when the last process closes it) in `dir`, `len` bytes (sparse), mapped
/// shared. Its pages are the page cache's: written back and dropped when the buffer spills
/// them ([`spill`]), read back from disk when a viewer touches them again. Files cannot be
/// sealed; clients get it through [`read_only`] as the memfds.
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
    owner_read_only(&fd);
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

/// What a connector holds while attached to a stream's buffer: the socket (its liveness) and
/// both regions mapped read-only.
pub struct Attached {
    /// The socket to the buffer. Publishers write frames to it.
    pub sock: UnixStream,
    meta_map: Mmap,
    data_map: Mmap,
}

/// How a connector attaches (the message's own type).
pub use ipc::messages::AttachMode as Mode;

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
    ipc::socket::send(&sock, &BufferRequest::Attach(mode), &[])?;
    let (reply, fds) = ipc::socket::recv::<BufferReply>(&sock, Duration::from_secs(5))?;
    let (meta_size, data_size) = match reply {
        BufferReply::Attached {
            meta_size,
            data_size,
        } => (
            usize::try_from(meta_size).unwrap_or(0),
            usize::try_from(data_size).unwrap_or(0),
        ),
        BufferReply::Error { reason } => bail!("{reason}"),
    };
    if fds.len() != 2 {
        bail!("the buffer sent {} descriptors, expected 2", fds.len());
    }
    // A mapping longer than its file would fault (SIGBUS) past the file's end; the files'
    // sizes are sealed, so checking them once is enough.
    for (fd, want) in [(&fds[0], meta_size), (&fds[1], data_size)] {
        let have = nix::sys::stat::fstat(fd.as_raw_fd())
            .context("fstat of a region")?
            .st_size;
        if want == 0 || (have as u64) < want as u64 {
            bail!("the buffer sent a region of {have} bytes, said {want}");
        }
    }
    // SAFETY: a read-only shared mapping of the buffer's meta region, no longer than its
    // file (checked above); `Attached` keeps it as long as readers use it.
    let meta_map = unsafe { MmapOptions::new().len(meta_size).map(fds[0].as_raw_fd()) }?;
    // SAFETY: as above, for the data region.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `errno` of mapping `fd` (`len` bytes) with `prot` and `MAP_SHARED`, or 0 when it
    /// mapped (the mapping is removed again).
    fn mmap_errno(fd: &OwnedFd, len: usize, prot: libc::c_int) -> i32 {
        // SAFETY: a fresh mapping chosen by the kernel, unmapped at once; nothing aliases it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                return std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
            }
            libc::munmap(p, len);
            0
        }
    }

    fn seals(fd: &OwnedFd) -> SealFlag {
        SealFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap())
    }

    /// What a client can do with its descriptor: map and read, nothing that writes.
    fn assert_read_only(ro: &OwnedFd, len: usize) {
        let acc = fcntl(ro.as_raw_fd(), FcntlArg::F_GETFL).unwrap() & libc::O_ACCMODE;
        assert_eq!(acc, libc::O_RDONLY);
        assert_eq!(mmap_errno(ro, len, libc::PROT_READ), 0);
        assert_eq!(
            mmap_errno(ro, len, libc::PROT_READ | libc::PROT_WRITE),
            libc::EACCES
        );
        assert!(nix::unistd::ftruncate(ro, 0).is_err());
        assert!(nix::unistd::write(ro, b"x").is_err());
        assert!(punch_hole(ro, 0, 4096).is_err());
        // mprotect cannot make a shared read-only mapping of it writable either.
        // SAFETY: a read-only mapping of a file of at least `len` bytes, dropped at the end.
        let map = unsafe { MmapOptions::new().len(len).map(ro.as_raw_fd()) }.unwrap();
        // SAFETY: the mapping lives until the end of the function; the call only changes
        // (or here, fails to change) its protection.
        let r = unsafe {
            libc::mprotect(
                map.as_ptr() as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EACCES)
        );
    }

    #[test]
    fn meta_region_is_sealed_and_clients_get_read_only_fds() {
        let len = 1 << 20;
        let (fd, mut map) = create_region("t-meta", len, Sealing::SizeAndWrites).unwrap();
        let ro = read_only(&fd).unwrap();
        let want = SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_FUTURE_WRITE
            | SealFlag::F_SEAL_SEAL;
        assert_eq!(seals(&fd), want);
        assert_eq!(
            seals(&ro),
            want,
            "seals belong to the file, whatever the fd"
        );
        assert_read_only(&ro, len as usize);
        // Sealed: not even the read-write descriptor changes the size or adds seals.
        assert_eq!(
            nix::unistd::ftruncate(&fd, 0),
            Err(nix::errno::Errno::EPERM)
        );
        assert!(fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)
        )
        .is_err());
        // A client that opens its descriptor again read-write still cannot write.
        let path = format!("/proc/self/fd/{}", ro.as_raw_fd());
        let raw =
            nix::fcntl::open(path.as_str(), OFlag::O_RDWR, nix::sys::stat::Mode::empty()).unwrap();
        // SAFETY: just opened, owned by nobody else.
        let rw_again = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(
            nix::unistd::write(&rw_again, b"x"),
            Err(nix::errno::Errno::EPERM)
        );
        assert_eq!(
            mmap_errno(&rw_again, len as usize, libc::PROT_READ | libc::PROT_WRITE),
            libc::EPERM
        );
        // The buffer's own mapping, made before the seal, still writes, and readers see it.
        map[100] = 42;
        // SAFETY: a read-only mapping of the region, `len` bytes long, dropped at the end.
        // SAFETY: a read-only mapping of the region, `len` bytes long, dropped at the end.
        let view = unsafe { MmapOptions::new().len(len as usize).map(ro.as_raw_fd()) }.unwrap();
        assert_eq!(view[100], 42);
    }

    #[test]
    fn data_region_seals_its_size_and_still_punches() {
        let len = 4 << 20;
        let (fd, mut map) = create_region("t-data", len, Sealing::Size).unwrap();
        let ro = read_only(&fd).unwrap();
        assert_eq!(
            seals(&ro),
            SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
        );
        assert_read_only(&ro, len as usize);
        assert!(nix::unistd::ftruncate(&fd, (len * 2) as i64).is_err());
        map[(2 << 20) + 5] = 7;
        // SAFETY: a read-only mapping of the region, `len` bytes long, dropped at the end.
        // SAFETY: a read-only mapping of the region, `len` bytes long, dropped at the end.
        let view = unsafe { MmapOptions::new().len(len as usize).map(ro.as_raw_fd()) }.unwrap();
        assert_eq!(view[(2 << 20) + 5], 7);
        punch_hole(&fd, 2 << 20, 2 << 20).unwrap();
        assert_eq!(view[(2 << 20) + 5], 0, "punched pages read as zeros");
    }

    #[test]
    fn spill_file_clients_get_read_only_fds() {
        let dir = std::env::temp_dir().join(format!("sluice-ipc-test-{}", std::process::id()));
        let (fd, _map) = create_file_region(&dir, 4 << 20).unwrap();
        let ro = read_only(&fd).unwrap();
        assert_read_only(&ro, 4 << 20);
        punch_hole(&fd, 0, 2 << 20).unwrap();
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_client_that_is_not_root_cannot_reopen_the_data_ring_read_write() {
        let (fd, _map) = create_region("test-data", 1 << 20, Sealing::Size).unwrap();
        let ro = read_only(&fd).unwrap();
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", ro.as_raw_fd())).unwrap();
        // A child that gives up root (as a compromised viewer of a server run as a user
        // would be), then tries the /proc way around its read-only descriptor.
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe {
                if libc::getuid() == 0 && libc::setuid(65534) != 0 {
                    libc::_exit(2);
                }
                // Giving up root makes a process non-dumpable, which alone would close its
                // /proc/self/fd to it: undo that, so that only the file's mode can refuse.
                libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
                let r = libc::open(path.as_ptr(), libc::O_RDWR);
                let errno = *libc::__errno_location();
                libc::_exit(if r < 0 && errno == libc::EACCES { 0 } else { 1 });
            }
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the re-open read-write is refused"
        );
    }

    #[test]
    fn read_only_fds_stay_read_only_through_the_socket() {
        let (fd, _map) = create_region("t-sock", 1 << 20, Sealing::SizeAndWrites).unwrap();
        let ro = read_only(&fd).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let ok = BufferReply::Attached {
            meta_size: 0,
            data_size: 1 << 20,
        };
        ipc::socket::send(&a, &ok, &[ro.as_raw_fd()]).unwrap();
        let (_, fds) = ipc::socket::recv::<BufferReply>(&b, Duration::from_secs(1)).unwrap();
        assert_eq!(fds.len(), 1);
        assert_read_only(&fds[0], 1 << 20);
    }
}
