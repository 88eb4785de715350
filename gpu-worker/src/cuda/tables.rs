//! Per-session handle tables: our u64 handles → driver handles.
//!
//! Exists so a client only ever names objects through numbers this
//! session issued: a handle from another session (or a made-up one) is
//! simply absent, and no raw driver pointer crosses the wire. Tables are
//! bounded by [`HANDLES_MAX`]. Device allocations are tracked by base
//! address in [`Allocations`] so every copy and memset range is checked
//! before the driver sees it.

use std::collections::{BTreeMap, HashMap};

use rgpu_proto::CudaError;

/// Most live entries one table holds (streams, events, modules, functions).
pub const HANDLES_MAX: usize = 1 << 16;
/// Most live device allocations one session holds.
pub const ALLOCATIONS_MAX: usize = 1 << 20;

/// A bounded map from issued handles to values. Handles start above the
/// built-in stream numbers (0..=2) and never repeat within a session.
#[derive(Debug)]
pub struct Table<T> {
    entries: HashMap<u64, T>,
    next: u64,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            next: 0x10,
        }
    }
}

impl<T> Table<T> {
    /// Stores `value` under a fresh handle.
    ///
    /// # Errors
    /// [`CudaError::OUT_OF_MEMORY`] when [`HANDLES_MAX`] entries are live.
    pub fn insert(&mut self, value: T) -> Result<u64, CudaError> {
        if self.entries.len() >= HANDLES_MAX {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let h = self.next;
        self.next += 1;
        self.entries.insert(h, value);
        Ok(h)
    }

    /// Whether there is room for one more entry.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.entries.len() < HANDLES_MAX
    }

    /// The value of `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn get(&self, h: u64) -> Result<&T, CudaError> {
        self.entries.get(&h).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Removes `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn remove(&mut self, h: u64) -> Result<T, CudaError> {
        self.entries.remove(&h).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Removes every entry matching `pred`, returning them.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let keys: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, v)| pred(v))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.entries.remove(&k))
            .collect()
    }

    /// Removes everything, returning the values.
    pub fn drain(&mut self) -> Vec<T> {
        self.entries.drain().map(|(_, v)| v).collect()
    }
}

/// Live device allocations of one session: base → length.
#[derive(Debug, Default)]
pub struct Allocations {
    by_base: BTreeMap<u64, u64>,
    bytes: u64,
    /// Device ranges the session may copy to and from but does not own
    /// (module globals): base → length. Not freeable, not counted here.
    views: BTreeMap<u64, u64>,
}

impl Allocations {
    /// Bytes allocated in all.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether one more allocation fits [`ALLOCATIONS_MAX`].
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.by_base.len() < ALLOCATIONS_MAX
    }

    /// Records a new allocation.
    pub fn insert(&mut self, base: u64, len: u64) {
        let fresh = self.by_base.insert(base, len).is_none();
        assert!(fresh, "the driver returned a live address twice");
        self.bytes += len;
    }

    /// Forgets the allocation based at `base`, returning its length.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] unless `base` is a live base.
    pub fn remove(&mut self, base: u64) -> Result<u64, CudaError> {
        let len = self.by_base.remove(&base).ok_or(CudaError::INVALID_VALUE)?;
        self.bytes -= len;
        Ok(len)
    }

    /// Checks `[ptr, ptr + len)` lies inside one live allocation.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] otherwise.
    pub fn check(&self, ptr: u64, len: u64) -> Result<(), CudaError> {
        let end = ptr.checked_add(len).ok_or(CudaError::INVALID_VALUE)?;
        let inside = |map: &BTreeMap<u64, u64>| {
            map.range(..=ptr)
                .next_back()
                .is_some_and(|(&base, &size)| end <= base + size)
        };
        if inside(&self.by_base) || inside(&self.views) {
            Ok(())
        } else {
            Err(CudaError::INVALID_VALUE)
        }
    }

    /// Makes `[base, base + len)` valid for [`Allocations::check`] without
    /// owning it (a module global), until [`Allocations::remove_view`].
    pub fn add_view(&mut self, base: u64, len: u64) {
        self.views.insert(base, len);
    }

    /// Forgets the view at `base`.
    pub fn remove_view(&mut self, base: u64) {
        self.views.remove(&base);
    }

    /// Removes everything, returning (base, len) pairs.
    pub fn drain(&mut self) -> Vec<(u64, u64)> {
        self.bytes = 0;
        self.views.clear();
        std::mem::take(&mut self.by_base).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_inside_one_allocation() {
        let mut a = Allocations::default();
        a.insert(0x1000, 0x100);
        a.insert(0x1100, 0x100);
        assert_eq!(a.check(0x1000, 0x100), Ok(()));
        assert_eq!(a.check(0x10f0, 0x20), Err(CudaError::INVALID_VALUE));
        assert_eq!(a.check(0xfff, 1), Err(CudaError::INVALID_VALUE));
        assert_eq!(a.check(0x1100, u64::MAX), Err(CudaError::INVALID_VALUE));
        assert_eq!(a.bytes(), 0x200);
        assert_eq!(a.remove(0x1010), Err(CudaError::INVALID_VALUE));
        assert_eq!(a.remove(0x1000), Ok(0x100));
        assert_eq!(a.bytes(), 0x100);
        a.add_view(0x9000, 0x10);
        assert_eq!(a.check(0x9004, 0xc), Ok(()), "a view is copyable");
        assert_eq!(a.check(0x9004, 0xd), Err(CudaError::INVALID_VALUE));
        assert_eq!(
            a.remove(0x9000),
            Err(CudaError::INVALID_VALUE),
            "not freeable"
        );
        assert_eq!(a.bytes(), 0x100, "not counted");
        a.remove_view(0x9000);
        assert_eq!(a.check(0x9004, 1), Err(CudaError::INVALID_VALUE));
    }

    #[test]
    fn unknown_handles_are_invalid() {
        let mut t: Table<u8> = Table::default();
        let h = t.insert(7).unwrap();
        assert_eq!(t.get(h), Ok(&7));
        assert_eq!(t.get(h + 1), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.remove(h), Ok(7));
        assert_eq!(t.get(h), Err(CudaError::INVALID_HANDLE));
    }
}
