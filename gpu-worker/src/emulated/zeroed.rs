//! Fallible, lazily committed zeroed byte buffers for emulated device memory.
//!
//! Exists because `vec![0; n]` aborts the process when the host cannot
//! supply `n` bytes, while a driver answers `CUDA_ERROR_OUT_OF_MEMORY`; and
//! because zeroing by writing would commit every page of a large allocation
//! up front. `alloc_zeroed` maps fresh zero pages for large sizes, so host
//! RAM is committed only as the session writes. The only unsafe code of the
//! emulated backend lives here, behind one safe function.

use std::alloc::{alloc_zeroed, Layout};

/// A zero-filled boxed slice of `len` bytes, or `None` when the host
/// allocator refuses (never aborts).
#[must_use]
pub fn try_zeroed(len: usize) -> Option<Box<[u8]>> {
    if len == 0 {
        return Some(Box::default());
    }
    let layout = Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (`len > 0` was checked above).
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
    // SAFETY: `ptr` is non-null, came from the global allocator with the
    // layout of `[u8; len]` (align 1), and its `len` bytes are initialised
    // (zeroed); `Box<[u8]>` frees it with that same layout.
    Some(unsafe { Box::from_raw(slice) })
}

#[cfg(test)]
mod tests {
    use super::try_zeroed;

    #[test]
    fn zeroed_and_sized() {
        let b = try_zeroed(3 << 20).unwrap();
        assert_eq!(b.len(), 3 << 20);
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(try_zeroed(0).unwrap().len(), 0);
    }

    #[test]
    fn absurd_size_is_refused_not_aborted() {
        assert!(try_zeroed(usize::MAX / 2).is_none());
    }
}
