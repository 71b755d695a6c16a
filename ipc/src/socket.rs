//! One `DTCM` command frame at a time over a Unix socket, with file descriptors attached
//! (SCM_RIGHTS): how the processes exchange [`crate::messages`].

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use dtsc::wire::{self, Frame, Value};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::messages::Message;

/// Sends `msg` ([`send_command`] of its command object).
pub fn send<M: Message>(sock: &impl AsRawFd, msg: &M, fds: &[RawFd]) -> Result<()> {
    send_command(sock.as_raw_fd(), &msg.to_value(), fds)
}

/// Receives one message of type `M` ([`recv_command`]), with the descriptors that came
/// with it. Errors: as `recv_command`, or a command that is not an `M`.
pub fn recv<M: Message>(sock: &UnixStream, timeout: Duration) -> Result<(M, Vec<OwnedFd>)> {
    let (v, fds) = recv_command(sock, timeout)?;
    let m = M::from_value(&v).map_err(|e| anyhow!("{e}"))?;
    Ok((m, fds))
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
