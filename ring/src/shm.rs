//! A ring storage inside a mapped shared segment.
//!
//! [`ShmRing`] points at one ring's control block and data area inside a
//! segment mapping and keeps the mapping alive. It is the only place that
//! turns mapping addresses into `&RingControl` / `&AtomicU64`.

use crate::control::RingControl;
use crate::storage::RingStorage;
use crate::sync::AtomicU64;
use std::ptr::NonNull;
use std::sync::Arc;

/// Keeps a shared mapping (and its fd) alive while handles point into it.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(crate) map: memmap2::MmapMut,
    pub(crate) file: std::fs::File,
}

/// One ring of a mapped [`Segment`](crate::Segment).
#[derive(Debug)]
pub struct ShmRing {
    _mapping: Arc<Mapping>,
    control: NonNull<RingControl>,
    data: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the pointers target a MAP_SHARED mapping kept alive by `_mapping`;
// everything reached through them is atomics (`RingControl`, the word views)
// or bytes accessed under the ring protocol, which is designed for concurrent
// use from many threads and processes.
unsafe impl Send for ShmRing {}
// SAFETY: see `Send`.
unsafe impl Sync for ShmRing {}

impl ShmRing {
    /// Points at a ring inside `mapping`.
    ///
    /// # Safety
    /// `control` must be 128-byte aligned with `RING_CONTROL_BYTES` inside the
    /// mapping, `data` 8-byte aligned with `capacity` bytes inside the mapping,
    /// the two ranges disjoint, and `capacity` a multiple of 16.
    pub(crate) unsafe fn new(
        mapping: Arc<Mapping>,
        control: NonNull<RingControl>,
        data: NonNull<u8>,
        capacity: usize,
    ) -> Self {
        Self {
            _mapping: mapping,
            control,
            data,
            capacity,
        }
    }
}

// SAFETY: `new`'s contract gives an in-bounds, aligned control block and data
// area that live as long as `self` (the Arc keeps the mapping); `capacity`
// is fixed. `word(i)` is asserted in bounds and views exactly bytes 8i..8i+8.
unsafe impl RingStorage for ShmRing {
    fn control(&self) -> &RingControl {
        // SAFETY: aligned, in bounds and alive (constructor contract);
        // `RingControl` is only atomics, valid for any bit pattern.
        unsafe { self.control.as_ref() }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.capacity / 8, "word index {index} out of ring");
        // SAFETY: index checked; the data area is 8-aligned, in the mapping
        // and alive; AtomicU64 is valid for any bit pattern and has interior
        // mutability, so a shared reference to shared memory is fine.
        unsafe {
            &*self
                .data
                .as_ptr()
                .wrapping_add(index * 8)
                .cast::<AtomicU64>()
        }
    }

    fn data(&self) -> *mut u8 {
        self.data.as_ptr()
    }
}
