//! Bounded waits for a file descriptor to become readable.
//!
//! Exists so both listeners (TCP and Unix) accept connections with the same
//! deadline rule instead of blocking in `accept` forever.

use std::os::fd::AsFd;
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::deadline;
use crate::error::{Result, TransportError};

/// Waits until `fd` is readable or `deadline` passes (`Timeout { op }`).
pub(crate) fn wait_readable(fd: &impl AsFd, deadline: Instant, op: &'static str) -> Result<()> {
    loop {
        let Some(left) = deadline::remaining(deadline) else {
            return Err(TransportError::Timeout { op });
        };
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let fd = fd.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(TransportError::io(op, e.into())),
        }
    }
}

/// Runs a non-blocking `accept` until it yields a connection, waiting for
/// readiness in between (a connection may vanish between poll and accept).
pub(crate) fn accept_until<T>(
    fd: &impl AsFd,
    deadline: Instant,
    op: &'static str,
    mut accept: impl FnMut() -> std::io::Result<T>,
) -> Result<T> {
    loop {
        wait_readable(fd, deadline, op)?;
        match accept() {
            Ok(conn) => return Ok(conn),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => return Err(TransportError::io(op, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unreadable_fd_times_out_and_readable_fd_returns() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(wait_readable(&a, soon, "test").unwrap_err().is_timeout());
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        wait_readable(&a, Instant::now() + Duration::from_secs(5), "test").unwrap();
    }
}
