//! Page-locking the client's shared arena for DMA (`cuMemHostRegister`).
//!
//! Exists so copies that name the shm arena (the client's pinned host memory, and the shim's
//! staging slabs) go straight between those pages and the device: registered memory is
//! page-locked and mapped for the device, so the driver DMAs it instead of bouncing through
//! its own staging buffers. The arena is a `MAP_SHARED` mapping of the client's memfd;
//! registering such memory is allowed (the driver pins the shmem pages). Flags: PORTABLE
//! (every context sees it as pinned) and DEVICEMAP (mapped into the device's address space),
//! the flags issue 4 names. Registration is undone before the transport unmaps the arena:
//! the session releases the backend before it drops the transport.
//!
//! Not run on a GPU yet: there was no GPU where this was written. The logic is small and
//! the failure mode is benign (a refused registration is logged; copies then work, staged).

use std::ffi::c_void;

use cudarc::driver::sys;
use rgpu_proto::CudaError;

use crate::session::HostSpan;

/// `CU_MEMHOSTREGISTER_PORTABLE`.
pub const MEMHOSTREGISTER_PORTABLE: u32 = 0x01;
/// `CU_MEMHOSTREGISTER_DEVICEMAP`.
pub const MEMHOSTREGISTER_DEVICEMAP: u32 = 0x02;
/// The flags the arena is registered with.
pub const ARENA_REGISTER_FLAGS: u32 = MEMHOSTREGISTER_PORTABLE | MEMHOSTREGISTER_DEVICEMAP;

/// A registered span; give it back with [`Registration::unregister`] while the context that
/// registered it is current and before the memory is unmapped.
#[derive(Debug, PartialEq, Eq)]
pub struct Registration {
    span: HostSpan,
}

impl Registration {
    /// The registered range.
    #[must_use]
    pub fn span(&self) -> HostSpan {
        self.span
    }

    /// `cuMemHostUnregister`.
    ///
    /// # Errors
    /// The driver's refusal.
    pub fn unregister(self) -> Result<(), CudaError> {
        // SAFETY: `addr` is the base of a range this process registered (constructor) and
        // has not unregistered (this consumes the registration).
        check(unsafe { sys::cuMemHostUnregister(self.span.addr as *mut c_void) })
    }
}

fn check(r: sys::CUresult) -> Result<(), CudaError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(CudaError(r as u32))
    }
}

/// Whether `span` can be registered at all: non-empty and page-aligned at both ends (the
/// arena is; anything else is a caller bug, refused before the driver sees it).
#[must_use]
pub fn acceptable(span: HostSpan) -> bool {
    const PAGE_BYTES: usize = 4096;
    span.len > 0 && span.addr.is_multiple_of(PAGE_BYTES) && span.len.is_multiple_of(PAGE_BYTES)
}

/// `cuMemHostRegister_v2(span, PORTABLE | DEVICEMAP)`, with a context current.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for an unacceptable span; the driver's refusal.
///
/// # Safety
/// `span` must be mapped in this process and stay mapped until the returned registration is
/// unregistered.
pub unsafe fn register(span: HostSpan) -> Result<Registration, CudaError> {
    if !acceptable(span) {
        return Err(CudaError::INVALID_VALUE);
    }
    // SAFETY: the caller guarantees the range is mapped for the registration's lifetime;
    // the driver only page-locks and maps it.
    check(unsafe {
        sys::cuMemHostRegister_v2(span.addr as *mut c_void, span.len, ARENA_REGISTER_FLAGS)
    })?;
    Ok(Registration { span })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_page_aligned_nonempty_spans_are_acceptable() {
        let s = |addr, len| HostSpan { addr, len };
        assert!(acceptable(s(0x10000, 0x4000)));
        assert!(!acceptable(s(0x10000, 0)));
        assert!(!acceptable(s(0x10001, 0x4000)));
        assert!(!acceptable(s(0x10000, 0x4001)));
        assert_eq!(ARENA_REGISTER_FLAGS, 3);
    }

    #[test]
    fn unacceptable_spans_never_reach_the_driver() {
        // SAFETY: refused before any driver call (no driver is loaded in unit tests).
        let r = unsafe {
            register(HostSpan {
                addr: 0x10001,
                len: 1,
            })
        };
        assert_eq!(r, Err(CudaError::INVALID_VALUE));
    }
}
