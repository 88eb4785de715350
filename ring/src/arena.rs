//! The bulk arena: large payloads travel as `(offset, len)` slab references.
//!
//! The arena is a byte range of the shared segment. Only the owning process
//! (the client) allocates: [`ArenaAllocator`] is a buddy allocator whose
//! state lives in that process's heap, never in shared memory, so the peer
//! cannot corrupt it. The peer only reads and writes slabs named by
//! references it received, and must validate them with [`Arena::slice`] /
//! [`Arena::slice_mut`], which bounds-check and return
//! [`ArenaError::OutOfBounds`] for bad references.
//!
//! # Aliasing model (honest version)
//!
//! Within one process, `slice` takes `&self` and `slice_mut` takes
//! `&mut self`, so Rust's borrow rules hold for our own threads. The other
//! process can write the same bytes at any time if it breaks the protocol's
//! ownership rules (a slab belongs to one side at a time, handed over by ring
//! messages). Rust's memory model does not describe other processes; as with
//! any `MAP_SHARED` mapping (memmap2's `MmapMut` is in the same position) the
//! guarantee we give is: all access stays inside the mapping, and a
//! misbehaving peer can only make the bytes we see wrong, never make us read
//! or write outside the arena.

use crate::error::ArenaError;
use std::collections::{BTreeSet, HashMap};
use std::ptr::NonNull;

/// Smallest slab (size class), in bytes.
pub const ARENA_SLAB_BYTES_MIN: usize = 4096;
/// Largest arena, in bytes (16 GiB).
pub const ARENA_BYTES_MAX: usize = 1 << 34;

/// A reference to arena bytes, as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slab {
    /// Byte offset from the arena start.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Bounds-checked access to the arena bytes of a mapped segment.
#[derive(Debug)]
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: `Arena` is a pointer + length into a shared mapping that outlives
// it (the owning `Segment` keeps the mapping alive); `&self` only hands out
// shared borrows and `&mut self` mutable ones, so moving or sharing the handle
// across threads keeps Rust's aliasing rules.
unsafe impl Send for Arena {}
// SAFETY: see `Send`; `&Arena` gives read-only access.
unsafe impl Sync for Arena {}

impl Arena {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes for the whole
    /// life of the returned value and of every borrow it hands out, and no
    /// other Rust reference to those bytes may exist in this process.
    #[cfg_attr(loom, allow(dead_code))] // Only segments (not built under loom) make arenas.
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
    }

    /// Arena size in bytes (0 when the segment has no arena).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the arena is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Validates a (peer-supplied) reference and returns its byte range.
    ///
    /// # Errors
    /// [`ArenaError::OutOfBounds`] when the reference leaves the arena.
    pub fn check(&self, slab: Slab) -> Result<std::ops::Range<usize>, ArenaError> {
        let oob = ArenaError::OutOfBounds {
            offset: slab.offset,
            len: slab.len,
            arena_bytes: self.len,
        };
        let end = slab.offset.checked_add(slab.len).ok_or(oob.clone())?;
        if end > self.len as u64 {
            return Err(oob);
        }
        // Both fit in usize: they are bounded by `self.len`.
        Ok(slab.offset as usize..end as usize)
    }

    /// Shared view of the referenced bytes.
    ///
    /// # Errors
    /// [`ArenaError::OutOfBounds`] for a reference outside the arena.
    pub fn slice(&self, slab: Slab) -> Result<&[u8], ArenaError> {
        let range = self.check(slab)?;
        // SAFETY: `range` is inside the `len` bytes at `base` (checked), valid
        // for the life of `self` (constructor contract); `&self` excludes a
        // concurrent `slice_mut` in this process.
        Ok(unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().wrapping_add(range.start), range.len())
        })
    }

    /// Mutable view of the referenced bytes.
    ///
    /// # Errors
    /// [`ArenaError::OutOfBounds`] for a reference outside the arena.
    pub fn slice_mut(&mut self, slab: Slab) -> Result<&mut [u8], ArenaError> {
        let range = self.check(slab)?;
        // SAFETY: as in `slice`; `&mut self` makes this the only view in this
        // process for the borrow's lifetime.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().wrapping_add(range.start),
                range.len(),
            )
        })
    }
}

/// Buddy allocator over an arena's offsets; lives in the owning process.
///
/// Size classes are powers of two from [`ARENA_SLAB_BYTES_MIN`] to the arena
/// size. Freeing checks the slab against the live set, so a double free or a
/// forged reference is an error, not silent corruption.
#[derive(Debug)]
pub struct ArenaAllocator {
    arena_bytes: usize,
    /// `free[k]` holds offsets of free blocks of `ARENA_SLAB_BYTES_MIN << k` bytes.
    free: Vec<BTreeSet<u64>>,
    /// Live allocations: offset → class index.
    live: HashMap<u64, usize>,
}

impl ArenaAllocator {
    /// An allocator for an arena of `arena_bytes` (0, or a power of two in
    /// `[ARENA_SLAB_BYTES_MIN, ARENA_BYTES_MAX]`; anything else is rounded
    /// down to such a power of two).
    #[must_use]
    pub fn new(arena_bytes: usize) -> Self {
        let arena_bytes = if arena_bytes < ARENA_SLAB_BYTES_MIN {
            0
        } else {
            let clamped = arena_bytes.min(ARENA_BYTES_MAX);
            1usize << (usize::BITS - 1 - clamped.leading_zeros())
        };
        let classes = if arena_bytes == 0 {
            0
        } else {
            (arena_bytes / ARENA_SLAB_BYTES_MIN).trailing_zeros() as usize + 1
        };
        let mut free = vec![BTreeSet::new(); classes];
        if let Some(top) = free.last_mut() {
            top.insert(0);
        }
        Self {
            arena_bytes,
            free,
            live: HashMap::new(),
        }
    }

    /// Largest slab this allocator can hand out.
    #[must_use]
    pub fn slab_bytes_max(&self) -> usize {
        self.arena_bytes
    }

    /// Number of live slabs.
    #[must_use]
    pub fn live_slabs(&self) -> usize {
        self.live.len()
    }

    /// Allocates a slab of at least `len` bytes.
    ///
    /// # Errors
    /// [`ArenaError::TooLarge`] above the arena size, [`ArenaError::Exhausted`]
    /// when no block of the class is free.
    pub fn alloc(&mut self, len: usize) -> Result<Slab, ArenaError> {
        if len > self.arena_bytes {
            return Err(ArenaError::TooLarge {
                len,
                max: self.arena_bytes,
            });
        }
        let class_bytes = len.max(ARENA_SLAB_BYTES_MIN).next_power_of_two();
        let class = (class_bytes / ARENA_SLAB_BYTES_MIN).trailing_zeros() as usize;
        let Some(mut k) = (class..self.free.len()).find(|&k| !self.free[k].is_empty()) else {
            return Err(ArenaError::Exhausted { class_bytes });
        };
        let Some(offset) = self.free[k].pop_first() else {
            return Err(ArenaError::Exhausted { class_bytes });
        };
        while k > class {
            k -= 1;
            self.free[k].insert(offset + (ARENA_SLAB_BYTES_MIN << k) as u64);
        }
        self.live.insert(offset, class);
        Ok(Slab {
            offset,
            len: class_bytes as u64,
        })
    }

    /// Returns a slab, merging it with its free buddies.
    ///
    /// # Errors
    /// [`ArenaError::NotAllocated`] if `slab` is not a live allocation.
    pub fn free(&mut self, slab: Slab) -> Result<(), ArenaError> {
        let not_allocated = ArenaError::NotAllocated {
            offset: slab.offset,
            len: slab.len,
        };
        let class = *self.live.get(&slab.offset).ok_or(not_allocated.clone())?;
        if (ARENA_SLAB_BYTES_MIN << class) as u64 != slab.len {
            return Err(not_allocated);
        }
        self.live.remove(&slab.offset);
        let (mut offset, mut k) = (slab.offset, class);
        while k + 1 < self.free.len() {
            let buddy = offset ^ (ARENA_SLAB_BYTES_MIN << k) as u64;
            if !self.free[k].remove(&buddy) {
                break;
            }
            offset = offset.min(buddy);
            k += 1;
        }
        self.free[k].insert(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buddy_splits_and_merges() {
        let mut a = ArenaAllocator::new(64 * 1024);
        let s1 = a.alloc(1).unwrap();
        let s2 = a.alloc(5000).unwrap();
        let s3 = a.alloc(4096).unwrap();
        assert_eq!(s1.len, 4096);
        assert_eq!(s2.len, 8192);
        let mut spans = [s1, s2, s3].map(|s| (s.offset, s.offset + s.len));
        spans.sort_unstable();
        assert!(
            spans.windows(2).all(|w| w[0].1 <= w[1].0),
            "overlap: {spans:?}"
        );
        for s in [s1, s2, s3] {
            a.free(s).unwrap();
        }
        // Everything merged back: the whole arena is one block again.
        assert_eq!(
            a.alloc(64 * 1024).unwrap(),
            Slab {
                offset: 0,
                len: 65536
            }
        );
    }

    #[test]
    fn errors_are_typed() {
        let mut a = ArenaAllocator::new(16 * 1024);
        assert!(matches!(
            a.alloc(32 * 1024),
            Err(ArenaError::TooLarge { .. })
        ));
        let whole = a.alloc(16 * 1024).unwrap();
        assert!(matches!(a.alloc(1), Err(ArenaError::Exhausted { .. })));
        a.free(whole).unwrap();
        assert!(matches!(
            a.free(whole),
            Err(ArenaError::NotAllocated { .. })
        ));
        let s = a.alloc(4096).unwrap();
        let forged = Slab {
            offset: s.offset,
            len: 8192,
        };
        assert!(matches!(
            a.free(forged),
            Err(ArenaError::NotAllocated { .. })
        ));
    }
}
