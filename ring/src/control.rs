//! The shared control words of one ring, each on its own 128-byte line.
//!
//! Producers hammer `reserve`, the consumer owns `head`; the two wait cells
//! are touched only around sleeping. Keeping them on separate 128-byte
//! (adjacent-line-prefetch sized) lines avoids false sharing between the
//! producer side and the consumer side. The struct is `#[repr(C)]` and made
//! only of atomics, so any bit pattern a peer writes is a valid value.

use crate::sync::{AtomicU32, AtomicU64, FutexPark};

/// Size of the padding unit: two 64-byte lines, because Intel's spatial
/// prefetcher pulls lines in pairs.
pub const CACHE_LINE_BYTES: usize = 128;

/// Pads and aligns `T` to [`CACHE_LINE_BYTES`].
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

const _: () = assert!(std::mem::align_of::<CachePadded<u8>>() == CACHE_LINE_BYTES);

/// An event count: sleepers register in `waiters`, wakers bump `seq` (the
/// futex word) and wake, but only when `waiters != 0`.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct WaitCell {
    /// Futex word; bumped on every notification that found a sleeper.
    pub(crate) seq: AtomicU32,
    /// Number of threads (in any process) that are about to sleep or asleep.
    pub(crate) waiters: AtomicU32,
    /// Futex queue stand-in (zero-sized outside loom).
    pub(crate) park: FutexPark,
}

/// The control block of one ring.
#[derive(Debug, Default)]
#[repr(C)]
pub struct RingControl {
    /// Absolute byte position up to which space has been reserved (producers CAS it).
    pub(crate) reserve: CachePadded<AtomicU64>,
    /// Absolute byte position up to which the consumer has released space.
    pub(crate) head: CachePadded<AtomicU64>,
    /// Where the consumer sleeps when the ring is empty.
    pub(crate) data_wait: CachePadded<WaitCell>,
    /// Where producers sleep when the ring is full.
    pub(crate) space_wait: CachePadded<WaitCell>,
}

/// Bytes one [`RingControl`] occupies in a segment.
#[cfg(not(loom))]
pub const RING_CONTROL_BYTES: usize = 4 * CACHE_LINE_BYTES;
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RingControl>() == RING_CONTROL_BYTES);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<RingControl>() == CACHE_LINE_BYTES);
#[cfg(not(loom))]
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(RingControl, reserve) == 0);
    assert!(offset_of!(RingControl, head) == CACHE_LINE_BYTES);
    assert!(offset_of!(RingControl, data_wait) == 2 * CACHE_LINE_BYTES);
    assert!(offset_of!(RingControl, space_wait) == 3 * CACHE_LINE_BYTES);
    assert!(offset_of!(WaitCell, seq) == 0 && offset_of!(WaitCell, waiters) == 4);
};
