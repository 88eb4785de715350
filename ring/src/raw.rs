//! The few raw-pointer accesses to ring data bytes, behind safe helpers.
//!
//! Callers pass offsets they have already bounds-checked against the
//! storage's capacity; the helpers re-assert that. The aliasing contract is
//! the ring protocol's: a byte range belongs to exactly one side at a time
//! (reserved by one producer until its stamp is published, then readable by
//! the consumer until it advances `head`). A *malicious* peer process can
//! break that contract by writing into ranges it does not own; Rust's memory
//! model cannot describe another process, so what we promise is: every access
//! stays inside the mapping (no out-of-bounds read or write, whatever the
//! peer writes), and torn or changing bytes only ever yield wrong payloads or
//! a typed `Corruption`, never a wild pointer.

use crate::storage::RingStorage;

/// Copies `src` into the data area at `off`.
///
/// # Safety
/// The caller owns `[off, off + src.len())` under the ring protocol (it holds
/// the reservation covering it), so no other thread of this process accesses it.
#[inline]
pub(crate) unsafe fn copy_in<S: RingStorage>(storage: &S, off: usize, src: &[u8]) {
    assert!(off <= storage.capacity() && src.len() <= storage.capacity() - off);
    // SAFETY: the range [off, off + len) lies inside the data area (asserted
    // above; `data()` is valid for `capacity` bytes per the `RingStorage`
    // contract), `src` is a distinct Rust slice so the ranges cannot overlap,
    // and the caller owns the range (function contract).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), storage.data().wrapping_add(off), src.len())
    };
}

/// Borrows `len` published bytes at `off` for reading.
///
/// # Safety
/// The range belongs to a committed frame the caller Acquire-loaded, and the
/// caller does not release it (advance `head`) while the borrow lives.
#[inline]
pub(crate) unsafe fn slice<S: RingStorage>(storage: &S, off: usize, len: usize) -> &[u8] {
    assert!(off <= storage.capacity() && len <= storage.capacity() - off);
    // SAFETY: in bounds (asserted above, storage contract). The bytes were
    // published with a Release store that the caller Acquire-loaded, and no
    // honest writer touches them until the consumer advances `head`, which
    // the caller promises not to do while the borrow lives.
    unsafe { std::slice::from_raw_parts(storage.data().wrapping_add(off), len) }
}

/// Borrows `len` reserved bytes at `off` for writing.
///
/// # Safety
/// The caller holds the reservation of the range and creates no other view of
/// it while the returned borrow lives.
#[inline]
#[allow(clippy::mut_from_ref)] // Exclusivity is the caller's documented duty.
pub(crate) unsafe fn slice_mut<S: RingStorage>(storage: &S, off: usize, len: usize) -> &mut [u8] {
    assert!(off <= storage.capacity() && len <= storage.capacity() - off);
    // SAFETY: in bounds (asserted above, storage contract). The caller holds
    // the reservation of this range (won by CAS, so no other producer writes
    // it, and the consumer does not read it before the commit stamp) and
    // promises no other view exists while the borrow lives.
    unsafe { std::slice::from_raw_parts_mut(storage.data().wrapping_add(off), len) }
}
