//! The transport-owned buffer of the plain-receive fallback.
//!
//! Exists to keep the "the kernel may be writing here" rule for this buffer in
//! one small module: it is only ever touched through raw pointers while lent
//! to the kernel, and read back only after its completion.

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, TransportError};

/// A page-aligned receive buffer lent to one plain `RECV` at a time.
pub(crate) struct PlainBuf {
    /// `None` only after [`leak`](Self::leak).
    mem: Option<MmapRaw>,
    len: usize,
    lent: bool,
}

impl PlainBuf {
    /// Allocates `len` bytes.
    pub(crate) fn new(len: usize) -> Result<Self> {
        let mem = MmapOptions::new()
            .len(len)
            .map_anon()
            .map(MmapRaw::from)
            .map_err(|e| TransportError::io("mmap plain recv buffer", e))?;
        Ok(Self {
            mem: Some(mem),
            len,
            lent: false,
        })
    }

    /// Gives up the memory without unmapping it (for a transport that cannot
    /// prove the kernel is done with it). The buffer is empty afterwards.
    pub(crate) fn leak(&mut self) {
        std::mem::forget(self.mem.take());
        self.len = 0;
    }

    /// Lends the buffer to a receive SQE: pointer and capacity.
    pub(crate) fn lend(&mut self) -> (*mut u8, usize) {
        debug_assert!(!self.lent, "plain buffer lent twice");
        self.lent = true;
        match &self.mem {
            Some(m) => (m.as_mut_ptr(), self.len),
            None => (std::ptr::null_mut(), 0),
        }
    }

    /// The receive completed: the kernel no longer writes here.
    pub(crate) fn returned(&mut self) {
        self.lent = false;
    }

    /// The first `len` bytes the completed receive wrote.
    pub(crate) fn filled(&self, len: usize) -> &[u8] {
        assert!(
            !self.lent,
            "reading the plain buffer while the kernel owns it"
        );
        assert!(len <= self.len, "length beyond the plain buffer");
        match &self.mem {
            // SAFETY: in bounds (checked); not lent, so no kernel write is pending;
            // the borrow of `self` prevents lending it again while the slice lives.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), len) },
            None => &[],
        }
    }
}
