//! Peer-death detection through a pidfd.
//!
//! The transport learns the peer's pid from `SO_PEERCRED` (never from shared
//! memory, which the peer controls) and builds a [`PeerWatch`]; waits poll it
//! between bounded sleep slices so no wait outlives its peer.

use crate::error::{PeerWatchError, WaitError};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Watches one peer process for exit.
#[derive(Debug)]
pub struct PeerWatch {
    pidfd: OwnedFd,
    pid: i32,
}

impl PeerWatch {
    /// Opens a pidfd for `pid`.
    ///
    /// # Errors
    /// [`PeerWatchError::InvalidPid`] for a non-positive pid,
    /// [`PeerWatchError::Open`] when the process does not exist.
    pub fn new(pid: i32) -> Result<Self, PeerWatchError> {
        // Checked first: `Pid::from_raw` debug-asserts on negative input.
        if pid <= 0 {
            return Err(PeerWatchError::InvalidPid { pid });
        }
        let raw = Pid::from_raw(pid).ok_or(PeerWatchError::InvalidPid { pid })?;
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| PeerWatchError::Open {
            pid,
            source: e.into(),
        })?;
        Ok(Self { pidfd, pid })
    }

    /// The watched pid.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Returns `true` once the process has exited (a zombie counts as exited).
    ///
    /// # Errors
    /// [`WaitError::PeerPoll`] if `poll` on the pidfd fails.
    pub fn is_dead(&self) -> Result<bool, WaitError> {
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match poll(&mut fds, Some(&zero)) {
                Ok(n) => return Ok(n > 0 && fds[0].revents().contains(PollFlags::IN)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(WaitError::PeerPoll {
                        pid: self.pid,
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Checks the peer and turns "dead" into [`WaitError::PeerDead`].
    pub(crate) fn check_alive(&self) -> Result<(), WaitError> {
        if self.is_dead()? {
            tracing::debug!(pid = self.pid, "peer exited while we were waiting on it");
            Err(WaitError::PeerDead { pid: self.pid })
        } else {
            Ok(())
        }
    }
}

impl AsFd for PeerWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}
