//! The registered send staging buffer.
//!
//! Exists so small batches are sent with `WRITE_FIXED` from memory the kernel
//! pinned once at set-up, instead of mapping user pages on every send. Keeps
//! the registration `unsafe` in one place.
//!
//! Ownership rule: the caller writes only while no send from the buffer is in
//! flight; the transport enforces that by sending synchronously.

use io_uring::IoUring;
use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, TransportError};

/// Index of the staging buffer in the ring's registered-buffer table.
pub(crate) const STAGE_BUF_INDEX: u16 = 0;

/// One registered, page-aligned buffer.
pub(crate) struct StageBuf {
    mem: MmapRaw,
    len: usize,
}

impl StageBuf {
    /// Allocates `len` bytes and registers them as fixed buffer [`STAGE_BUF_INDEX`].
    pub(crate) fn register(ring: &IoUring, len: usize) -> Result<Self> {
        let mem = MmapOptions::new()
            .len(len)
            .map_anon()
            .map(MmapRaw::from)
            .map_err(|e| TransportError::io("mmap send stage", e))?;
        let iov = libc::iovec {
            iov_base: mem.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: the mapping stays alive in `self`, which the owning `Uring`
        // drops only after the `IoUring` (declaration order), so the kernel's
        // registration never outlives the memory.
        let registered = unsafe { ring.submitter().register_buffers(&[iov]) };
        registered.map_err(|e| TransportError::io("register_buffers", e))?;
        Ok(Self { mem, len })
    }

    /// Capacity in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `parts` back to back into the buffer; returns the pointer and total length.
    /// The total must fit (the caller checks against [`len`](Self::len)).
    pub(crate) fn fill(&mut self, parts: &[&[u8]]) -> (*const u8, usize) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            total <= self.len,
            "stage overflow: caller must check the length"
        );
        let base = self.mem.as_mut_ptr();
        let mut at = 0;
        for part in parts {
            let dst = base.wrapping_add(at);
            // SAFETY: `at + part.len() <= total <= len` keeps the write inside the
            // mapping; no send from it is in flight (ownership rule) and `part`
            // is caller memory, so the ranges cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len()) };
            at += part.len();
        }
        (base.cast_const(), total)
    }
}
