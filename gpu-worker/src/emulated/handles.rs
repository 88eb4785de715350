//! Per-session handle tables with process-wide unique handle values.
//!
//! Exists so streams, events, modules and functions are each a bounded map
//! owned by one session's backend, and so a handle value is never issued
//! twice in the process: a handle from another session (thread) or one
//! already destroyed is simply absent, `CUDA_ERROR_INVALID_HANDLE` (400),
//! instead of silently naming someone else's object.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rgpu_proto::CudaError;

/// First handle value issued; values below are reserved for built-in
/// streams (0 legacy default, 1 `CU_STREAM_LEGACY`, 2 `CU_STREAM_PER_THREAD`).
pub const FIRST_HANDLE: u64 = 0x1000;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(FIRST_HANDLE);

/// A bounded table of objects named by unique `u64` handles.
#[derive(Debug)]
pub struct HandleTable<T> {
    items: HashMap<u64, T>,
    max: usize,
}

impl<T> HandleTable<T> {
    /// An empty table holding at most `max` objects.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            items: HashMap::new(),
            max,
        }
    }

    /// Stores `item` under a fresh handle.
    ///
    /// # Errors
    /// [`CudaError::OUT_OF_MEMORY`] when the table is full.
    pub fn insert(&mut self, item: T) -> Result<u64, CudaError> {
        if self.items.len() >= self.max {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        // 2^64 handles cannot be exhausted by any run; wrapping would need
        // centuries at a billion handles per second.
        let h = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        debug_assert!(h >= FIRST_HANDLE);
        self.items.insert(h, item);
        Ok(h)
    }

    /// The object behind `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn get(&self, h: u64) -> Result<&T, CudaError> {
        self.items.get(&h).ok_or(CudaError::INVALID_HANDLE)
    }

    /// The object behind `h`, mutable.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn get_mut(&mut self, h: u64) -> Result<&mut T, CudaError> {
        self.items.get_mut(&h).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Removes and returns the object behind `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn remove(&mut self, h: u64) -> Result<T, CudaError> {
        self.items.remove(&h).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Removes every object matching `pred`.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) {
        self.items.retain(|_, v| !pred(v));
    }

    /// Empties the table; returns how many objects it held.
    pub fn clear(&mut self) -> u64 {
        let n = self.items.len() as u64;
        self.items.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_unique_and_typed_errors() {
        let mut a = HandleTable::new(2);
        let mut b = HandleTable::new(2);
        let h1 = a.insert('x').unwrap();
        let h2 = b.insert('y').unwrap();
        assert_ne!(h1, h2);
        assert_eq!(b.get(h1), Err(CudaError::INVALID_HANDLE));
        a.insert('z').unwrap();
        assert_eq!(a.insert('w'), Err(CudaError::OUT_OF_MEMORY));
        assert_eq!(a.remove(h1), Ok('x'));
        assert_eq!(a.get(h1), Err(CudaError::INVALID_HANDLE));
        assert_eq!(a.clear(), 1);
    }
}
