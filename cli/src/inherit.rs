//! Taking ownership of the connection a worker inherits by fd number.
//! Exists to keep the one `unsafe` step of the worker (turning a raw fd
//! from the command line into an `OwnedFd`) small and checked.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Why the inherited fd is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InheritError {
    /// The number names a standard stream or is negative.
    #[error("fd {0} cannot be the inherited connection")]
    Reserved(RawFd),
    /// The fd is not open or not a stream socket.
    #[error("inherited fd {fd} is not an open stream socket: {source}")]
    NotASocket {
        /// The fd.
        fd: RawFd,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Claims inherited fd `fd` (a stream socket) and marks it close-on-exec so
/// it goes no further.
///
/// # Errors
/// [`InheritError`] if `fd` is not an open stream socket above stderr.
pub fn claim_socket(fd: RawFd) -> Result<OwnedFd, InheritError> {
    if fd <= 2 {
        return Err(InheritError::Reserved(fd));
    }
    // SAFETY: the borrow is used only for the two checks below, while this
    // function runs; if `fd` is not open the calls fail with EBADF and
    // nothing is claimed.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let not_socket = |e: rustix::io::Errno| InheritError::NotASocket {
        fd,
        source: e.into(),
    };
    let ty = rustix::net::sockopt::socket_type(borrowed).map_err(not_socket)?;
    if ty != rustix::net::SocketType::STREAM {
        return Err(InheritError::NotASocket {
            fd,
            source: std::io::Error::other("not a stream socket"),
        });
    }
    rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC).map_err(not_socket)?;
    // SAFETY: `fd` is open (checked above) and was handed to this process by
    // the daemon for it alone; nothing else in the worker refers to it, so
    // this is its only owner.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn claims_sockets_only() {
        assert!(matches!(claim_socket(1), Err(InheritError::Reserved(1))));
        let file = std::fs::File::open("/dev/null").unwrap();
        let raw = file.into_raw_fd();
        assert!(claim_socket(raw).is_err(), "a file is not a socket");
        // SAFETY: `raw` came from `into_raw_fd` above and was not claimed.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let owned = claim_socket(a.into_raw_fd()).unwrap();
        let flags = rustix::io::fcntl_getfd(&owned).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }
}
