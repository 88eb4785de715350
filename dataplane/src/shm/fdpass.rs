//! Unix-socket plumbing for shm set-up: passing the segment memfd with
//! `SCM_RIGHTS` and learning the peer's pid from `SO_PEERCRED`.
//!
//! Exists to keep ancillary-data handling in one place; `rustix` provides
//! safe wrappers, so this module needs no `unsafe`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, sockopt, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::error::{Result, TransportError};

/// Largest handshake message either side reads.
pub(crate) const HANDSHAKE_BYTES_MAX: usize = 256;

/// Most retries of one socket call interrupted by a signal (`EINTR`).
/// Calls on a socket with `SO_RCVTIMEO`/`SO_SNDTIMEO` are never restarted
/// by the kernel, and io_uring task work in the same thread (a tcp
/// transport) interrupts them too; each retry waits at most one more
/// socket timeout.
pub(crate) const EINTR_RETRIES_MAX: u32 = 16;

/// Runs `f` again while it fails with `EINTR`, at most [`EINTR_RETRIES_MAX`] times.
fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) if tries < EINTR_RETRIES_MAX => tries += 1,
            other => return other,
        }
    }
}

/// Sends `bytes` with `fd` attached as `SCM_RIGHTS`.
pub(crate) fn send_with_fd(sock: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(TransportError::InvalidConfig(
            "cmsg buffer too small for one fd",
        ));
    }
    let sent = retry_intr(|| {
        sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })
    .map_err(|e| TransportError::io("sendmsg SCM_RIGHTS", e.into()))?;
    if sent != bytes.len() {
        return Err(TransportError::io(
            "sendmsg SCM_RIGHTS",
            std::io::ErrorKind::WriteZero.into(),
        ));
    }
    Ok(())
}

/// Receives one message of at most [`HANDSHAKE_BYTES_MAX`] bytes and the
/// single fd attached to it. Extra fds are closed and rejected.
pub(crate) fn recv_with_fd(sock: &UnixStream, op: &'static str) -> Result<(Vec<u8>, OwnedFd)> {
    let mut buf = [0u8; HANDSHAKE_BYTES_MAX];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = retry_intr(|| {
        recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })
    .map_err(|e| map_recv_err(op, e))?;
    if msg.bytes == 0 {
        return Err(TransportError::PeerGone {
            op,
            detail: "unix socket closed during handshake".into(),
        });
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() != 1 {
        return Err(TransportError::PeerViolation {
            op,
            detail: format!(
                "expected exactly one fd, got {} (truncated: {})",
                fds.len(),
                msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
            ),
        });
    }
    let fd = fds.pop().ok_or(TransportError::PeerViolation {
        op,
        detail: "fd vanished".into(),
    })?;
    Ok((buf[..msg.bytes].to_vec(), fd))
}

/// Receives one plain message of at most [`HANDSHAKE_BYTES_MAX`] bytes.
pub(crate) fn recv_plain(sock: &UnixStream, op: &'static str) -> Result<Vec<u8>> {
    let mut buf = [0u8; HANDSHAKE_BYTES_MAX];
    let n = retry_intr(|| rustix::net::recv(sock, &mut buf, RecvFlags::empty()))
        .map_err(|e| map_recv_err(op, e))?
        .0;
    if n == 0 {
        return Err(TransportError::PeerGone {
            op,
            detail: "unix socket closed during handshake".into(),
        });
    }
    Ok(buf[..n].to_vec())
}

/// Sends one plain message.
pub(crate) fn send_plain(sock: &UnixStream, bytes: &[u8], op: &'static str) -> Result<()> {
    let n = retry_intr(|| rustix::net::send(sock, bytes, SendFlags::NOSIGNAL)).map_err(
        |e| match e {
            rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET => TransportError::PeerGone {
                op,
                detail: e.to_string(),
            },
            e => TransportError::io(op, e.into()),
        },
    )?;
    if n != bytes.len() {
        return Err(TransportError::io(op, std::io::ErrorKind::WriteZero.into()));
    }
    Ok(())
}

fn map_recv_err(op: &'static str, e: rustix::io::Errno) -> TransportError {
    match e {
        rustix::io::Errno::AGAIN => TransportError::Timeout { op },
        rustix::io::Errno::CONNRESET => TransportError::PeerGone {
            op,
            detail: e.to_string(),
        },
        e => TransportError::io(op, e.into()),
    }
}

/// The peer's pid as the kernel recorded it at `connect` time.
pub(crate) fn peer_pid(sock: &UnixStream) -> Result<i32> {
    let cred = sockopt::socket_peercred(sock.as_fd())
        .map_err(|e| TransportError::io("getsockopt SO_PEERCRED", e.into()))?;
    Ok(cred.pid.as_raw_nonzero().get())
}

/// True once the peer closed its end (readable EOF/HUP), without consuming data.
pub(crate) fn peer_hung_up(sock: &UnixStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let fd = sock.as_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn fd_and_bytes_cross_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile_like();
        file.write_all(b"segment").unwrap();
        send_with_fd(&a, b"hello", file.as_fd()).unwrap();
        let (bytes, fd) = recv_with_fd(&b, "test").unwrap();
        assert_eq!(bytes, b"hello");
        let mut received = std::fs::File::from(fd);
        received.rewind().unwrap();
        let mut s = String::new();
        received.read_to_string(&mut s).unwrap();
        assert_eq!(s, "segment");
        assert_eq!(peer_pid(&b).unwrap(), std::process::id() as i32);
    }

    #[test]
    fn message_without_fd_is_a_violation_and_hangup_is_seen() {
        let (a, b) = UnixStream::pair().unwrap();
        send_plain(&a, b"no fd", "test").unwrap();
        let err = recv_with_fd(&b, "test").unwrap_err();
        assert!(matches!(err, TransportError::PeerViolation { .. }), "{err}");
        assert!(!peer_hung_up(&b));
        drop(a);
        assert!(peer_hung_up(&b));
        let err = recv_plain(&b, "test").unwrap_err();
        assert!(err.is_peer_gone(), "{err}");
    }

    fn tempfile_like() -> std::fs::File {
        let fd = rustix::fs::memfd_create("fdpass-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        std::fs::File::from(fd)
    }
}
