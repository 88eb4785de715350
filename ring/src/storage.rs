//! Where a ring's control words and data bytes live.
//!
//! The ring core is generic over [`RingStorage`] so the very same protocol code
//! runs over a shared `memfd` mapping in production and over a heap buffer
//! under `loom` and Miri (loom atomics cannot live inside an mmap).

use crate::control::RingControl;
use crate::sync::AtomicU64;

/// Backing memory of one ring.
///
/// # Safety
///
/// Implementors guarantee, for as long as the value lives:
/// - [`capacity`](Self::capacity) never changes and is a power of two that is
///   a multiple of 16;
/// - [`data`](Self::data) points to `capacity` bytes, 8-byte aligned, that
///   are valid for reads and writes through that pointer from any thread
///   (interior mutability: no `&`/`&mut` to them exists elsewhere);
/// - [`word`](Self::word)`(i)` for `i < capacity / 8` is an atomic view of the
///   same 8 bytes as `data() + 8 * i` (or, for heap model storages, a separate
///   atomic that the ring only ever uses as that word's atomic view).
pub unsafe trait RingStorage: Send + Sync {
    /// The ring's control words.
    fn control(&self) -> &RingControl;
    /// Data area size in bytes.
    fn capacity(&self) -> usize;
    /// Atomic view of the 8-byte word at byte offset `8 * index`.
    fn word(&self, index: usize) -> &AtomicU64;
    /// Start of the data area.
    fn data(&self) -> *mut u8;
}

/// A ring storage on the heap, for in-process use, loom and Miri.
#[derive(Debug)]
pub struct HeapRing {
    control: Box<RingControl>,
    words: Box<[AtomicU64]>,
    #[cfg(loom)]
    bytes: Box<[std::cell::UnsafeCell<u8>]>,
}

// SAFETY: the only non-Sync part is the loom byte buffer of `UnsafeCell<u8>`;
// all access to it goes through raw pointers under the ring protocol, which
// orders every write before the matching read with release/acquire.
unsafe impl Sync for HeapRing {}

impl HeapRing {
    /// Allocates a zeroed ring storage of `capacity_bytes` (rounded down to a
    /// multiple of 16; the ring constructor validates the rest).
    #[must_use]
    pub fn new(capacity_bytes: usize) -> Self {
        let words_len = (capacity_bytes / 16) * 2;
        Self {
            control: Box::default(),
            words: (0..words_len).map(|_| AtomicU64::new(0)).collect(),
            #[cfg(loom)]
            bytes: (0..words_len * 8)
                .map(|_| std::cell::UnsafeCell::new(0))
                .collect(),
        }
    }
}

// SAFETY: capacity is fixed at construction (multiple of 16; the ring checks
// power of two). Outside loom `data()` is the words buffer itself viewed as
// bytes: AtomicU64 has interior mutability, so writing through the pointer is
// allowed, the buffer is 8-aligned, and `word(i)` aliases bytes 8i..8i+8 as
// the trait requires. Under loom the bytes live in a separate `UnsafeCell`
// buffer of the same length.
unsafe impl RingStorage for HeapRing {
    fn control(&self) -> &RingControl {
        &self.control
    }

    fn capacity(&self) -> usize {
        self.words.len() * 8
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words[index]
    }

    fn data(&self) -> *mut u8 {
        #[cfg(not(loom))]
        {
            self.words.as_ptr().cast::<u8>().cast_mut()
        }
        #[cfg(loom)]
        {
            std::cell::UnsafeCell::raw_get(self.bytes.as_ptr())
        }
    }
}
