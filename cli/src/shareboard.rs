//! The daemon's per-device compute-share boards in shared memory. Exists to
//! hold the one `unsafe` step of the compute share (mapping a memfd and
//! viewing it as [`Board`]s) small and checked: the daemon creates one
//! memfd holding a [`Board`] per pool device, claims a slot on a device's
//! board for each admitted client (share = its memory share of the device)
//! and frees it when the worker is reaped; each worker inherits the fd
//! (`--share-fd`), maps it and runs its launches through a
//! [`ShareGate`](rgpu_gpu_worker::share::ShareGate) on its slot. See
//! `docs/worker.md`, "Compute share".

use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rgpu_gpu_worker::share::{Board, GateConfig, ShareGate, Shared};
use rgpu_gpu_worker::Backend;

/// Most devices one share memfd holds boards for (bounds what a worker maps).
pub const BOARD_DEVICES_MAX: usize = 1024;

/// Why the boards could not be created or mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// Creating or sizing the daemon's memfd failed.
    #[error("cannot create the compute-share memfd: {0}")]
    Create(#[source] std::io::Error),
    /// The inherited fd is not a usable board memfd.
    #[error("inherited share fd {fd} is unusable: {why}")]
    Inherited {
        /// The fd.
        fd: RawFd,
        /// Why.
        why: String,
    },
    /// `mmap` failed.
    #[error("cannot map the compute-share boards: {0}")]
    Map(#[source] std::io::Error),
}

/// A shared mapping of `devices` consecutive [`Board`]s.
#[derive(Debug)]
pub struct Boards {
    fd: OwnedFd,
    ptr: NonNull<Board>,
    devices: usize,
}

// SAFETY: the mapping is plain shared memory holding only atomics (`Board`
// is `Sync`); the pointer is never used to hand out `&mut` access.
unsafe impl Send for Boards {}
// SAFETY: as above: every access goes through `&Board`, whose fields are atomics.
unsafe impl Sync for Boards {}

impl Boards {
    /// The daemon's boards: a fresh memfd (zeroed: empty boards) for
    /// `devices` devices. The fd is inheritable (not close-on-exec): every
    /// worker the daemon spawns gets it.
    ///
    /// # Errors
    /// [`BoardError`].
    pub fn create(devices: usize) -> Result<Self, BoardError> {
        assert!(
            (1..=BOARD_DEVICES_MAX).contains(&devices),
            "device count out of range"
        );
        let fd = rustix::fs::memfd_create("rgpu-compute-share", rustix::fs::MemfdFlags::empty())
            .map_err(|e| BoardError::Create(e.into()))?;
        let len = devices * std::mem::size_of::<Board>();
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| BoardError::Create(e.into()))?;
        Self::map(fd, devices)
    }

    /// A worker's view of the daemon's boards, from inherited fd `fd`
    /// (marked close-on-exec here so it goes no further).
    ///
    /// # Errors
    /// [`BoardError`] if `fd` is not a memfd holding whole boards.
    pub fn inherit(fd: RawFd) -> Result<Self, BoardError> {
        let bad = |why: String| BoardError::Inherited { fd, why };
        if fd <= 2 {
            return Err(bad("a standard stream".into()));
        }
        // SAFETY: the borrow is used only for the checks below, while this
        // function runs; an fd that is not open fails them with EBADF.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let st = rustix::fs::fstat(borrowed).map_err(|e| bad(e.to_string()))?;
        let size = usize::try_from(st.st_size).map_err(|e| bad(e.to_string()))?;
        let one = std::mem::size_of::<Board>();
        let devices = size / one;
        if size % one != 0 || !(1..=BOARD_DEVICES_MAX).contains(&devices) {
            return Err(bad(format!(
                "size {size} is not 1..={BOARD_DEVICES_MAX} boards"
            )));
        }
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| bad(e.to_string()))?;
        // SAFETY: `fd` is open (fstat succeeded) and was handed to this
        // process by the daemon for this use alone; nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Self::map(fd, devices)
    }

    fn map(fd: OwnedFd, devices: usize) -> Result<Self, BoardError> {
        let len = devices * std::mem::size_of::<Board>();
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint),
        // of `len` bytes of `fd`, which holds at least `len` bytes (sized
        // by `create`, checked by `inherit`); no existing memory is touched.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| BoardError::Map(e.into()))?;
        let ptr = NonNull::new(ptr.cast::<Board>()).ok_or_else(|| {
            BoardError::Map(std::io::Error::other("mmap returned a null mapping"))
        })?;
        // Page-aligned, so aligned for `Board` (8).
        assert!(ptr.as_ptr().is_aligned(), "mapping misaligned for Board");
        Ok(Self { fd, ptr, devices })
    }

    /// Devices (boards) mapped.
    #[must_use]
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// The fd workers inherit.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Device `index`'s board, if it exists.
    #[must_use]
    pub fn board(&self, index: usize) -> Option<&Board> {
        if index >= self.devices {
            return None;
        }
        // SAFETY: `index < devices`, so the offset stays inside the mapping.
        let board = unsafe { self.ptr.as_ptr().add(index) };
        // SAFETY: `board` points inside the mapping, which lives as long as
        // `self`; all-zero bytes (and every state the atomics reach) are
        // valid `Board`s, and `Board` is only ever accessed through shared
        // references to its atomics.
        Some(unsafe { &*board })
    }

    /// Every board.
    pub fn iter(&self) -> impl Iterator<Item = &Board> {
        (0..self.devices).filter_map(|i| self.board(i))
    }
}

impl Drop for Boards {
    fn drop(&mut self) {
        let len = self.devices * std::mem::size_of::<Board>();
        // SAFETY: unmaps exactly the mapping made in `map`; no `&Board`
        // outlives `self` (they borrow it).
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), len) } {
            tracing::warn!(error = %e, "cannot unmap the compute-share boards");
        }
    }
}

/// One device's board of shared [`Boards`], owned (for a worker's gate).
#[derive(Debug, Clone)]
pub struct DeviceBoard {
    boards: Arc<Boards>,
    index: usize,
}

impl DeviceBoard {
    /// The board of the device holding `owner`'s slot, if any.
    #[must_use]
    pub fn of_owner(boards: &Arc<Boards>, owner: u64) -> Option<Self> {
        let index = boards.iter().position(|b| b.find(owner).is_some())?;
        Some(Self {
            boards: Arc::clone(boards),
            index,
        })
    }
}

impl Deref for DeviceBoard {
    type Target = Board;
    fn deref(&self) -> &Board {
        // `index` was found among the boards (`of_owner`), so it is in range.
        self.boards
            .board(self.index)
            .unwrap_or_else(|| unreachable!("device board index checked at creation"))
    }
}

/// The worker's boards from `--share-fd`, if given and usable (a failure
/// is logged and the worker runs unthrottled).
#[must_use]
pub fn inherit_arg(fd: Option<RawFd>, session: u64) -> Option<Arc<Boards>> {
    match Boards::inherit(fd?) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            tracing::warn!(session, error = %e, "rgpu worker: no compute share; launches unthrottled");
            None
        }
    }
}

/// `inner` under `session`'s compute share: its launches pass the gate on
/// the slot the daemon claimed at admission (call this after admission).
/// Without boards or a slot, `inner` runs unthrottled.
pub fn shared<B: Backend>(
    inner: B,
    boards: Option<&Arc<Boards>>,
    session: u64,
) -> Shared<B, DeviceBoard> {
    let gate = boards
        .and_then(|b| DeviceBoard::of_owner(b, session))
        .and_then(|board| ShareGate::attach(board, session, GateConfig::default()));
    if boards.is_some() && gate.is_none() {
        tracing::warn!(
            session,
            "rgpu worker: no compute-share slot; launches unthrottled"
        );
    }
    Shared::new(inner, gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn worker_mapping_sees_daemon_claims() {
        let daemon = Boards::create(2).unwrap();
        let slot = daemon.board(1).unwrap().claim(42, 250).unwrap();
        // A second mapping through a duplicate fd, as a worker would get it.
        let dup = rustix::io::fcntl_dupfd_cloexec(daemon.fd(), 3).unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        let worker = Arc::new(Boards::inherit(raw).unwrap());
        assert_eq!(worker.devices(), 2);
        let b = DeviceBoard::of_owner(&worker, 42).unwrap();
        assert_eq!(b.find(42), Some(slot));
        b.charge(slot, 7);
        assert_eq!(daemon.board(1).unwrap().snapshot()[0].used_ns, 7);
        assert!(DeviceBoard::of_owner(&worker, 43).is_none());
        assert!(daemon.board(2).is_none());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Boards::inherit(file.as_raw_fd()).is_err(), "empty file");
    }
}
