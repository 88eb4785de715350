//! Address ranges the shim knows: device allocations it handed out and pinned host memory.
//!
//! Exists because several decisions depend on where a pointer lives: a copy from pinned
//! arena memory goes by reference (zero copy) while a pageable one is staged, unified
//! addressing (`cuMemcpy`) takes its direction from whether each side is a known device
//! range, and `cuPointerGetAttribute` answers from the same records. [`RangeMap`] is a
//! bounded interval map of disjoint `[base, base + len)` ranges; the two process-wide
//! registries below hold one each.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Most device allocations tracked at once. Past it, new allocations still work but are
/// not known to `cuMemcpy`/`cuPointerGetAttribute` (logged once).
pub const DEVICE_RANGES_MAX: usize = 1 << 18;
/// Most pinned host regions at once; `cuMemHostAlloc` past it is `CUDA_ERROR_OUT_OF_MEMORY`.
pub const HOST_RANGES_MAX: usize = 1 << 16;

/// Why a range was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The map holds its maximum number of ranges.
    #[error("range map full ({max} ranges)")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The range is empty, wraps around, or overlaps a recorded one.
    #[error("range [{base:#x}, +{len}) is empty, wraps or overlaps a recorded range")]
    Invalid {
        /// Start address.
        base: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// One recorded range and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<V> {
    /// Start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// What was recorded with it.
    pub value: V,
}

impl<V> Hit<V> {
    /// Byte offset of `addr` inside this range (`addr` must be inside).
    #[must_use]
    pub fn offset_of(&self, addr: u64) -> u64 {
        debug_assert!(addr >= self.base && addr - self.base < self.len);
        addr - self.base
    }
}

/// A bounded map of disjoint, non-empty address ranges.
#[derive(Debug)]
pub struct RangeMap<V> {
    ranges: BTreeMap<u64, (u64, V)>,
    max: usize,
}

impl<V: Copy> RangeMap<V> {
    /// An empty map holding at most `max` ranges.
    #[must_use]
    pub const fn new(max: usize) -> Self {
        Self {
            ranges: BTreeMap::new(),
            max,
        }
    }

    /// Ranges recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether no range is recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Records `[base, base + len)`.
    ///
    /// # Errors
    /// [`RangeError::Full`] at the bound; [`RangeError::Invalid`] for an empty, wrapping
    /// or overlapping range. Nothing changes on error.
    pub fn insert(&mut self, base: u64, len: u64, value: V) -> Result<(), RangeError> {
        let invalid = RangeError::Invalid { base, len };
        let end = base.checked_add(len).ok_or(invalid)?;
        if len == 0 {
            return Err(invalid);
        }
        if self.ranges.len() >= self.max {
            return Err(RangeError::Full { max: self.max });
        }
        let before = self.ranges.range(..end).next_back();
        if before.is_some_and(|(&b, &(l, _))| b + l > base) {
            return Err(invalid);
        }
        self.ranges.insert(base, (len, value));
        Ok(())
    }

    /// Forgets the range starting exactly at `base`.
    pub fn remove(&mut self, base: u64) -> Option<Hit<V>> {
        self.ranges
            .remove(&base)
            .map(|(len, value)| Hit { base, len, value })
    }

    /// The range containing `addr`.
    #[must_use]
    pub fn find(&self, addr: u64) -> Option<Hit<V>> {
        let (&base, &(len, value)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < len).then_some(Hit { base, len, value })
    }

    /// The range containing all of `[addr, addr + len)` (`len` 0 counts as 1 byte).
    #[must_use]
    pub fn find_span(&self, addr: u64, len: u64) -> Option<Hit<V>> {
        let hit = self.find(addr)?;
        let end = addr.checked_add(len)?;
        (end <= hit.base + hit.len).then_some(hit)
    }
}

/// Device allocations made through the shim (value: unused).
static DEVICE: Mutex<RangeMap<()>> = Mutex::new(RangeMap::new(DEVICE_RANGES_MAX));

fn device() -> std::sync::MutexGuard<'static, RangeMap<()>> {
    // Poisoning only means a panic elsewhere (caught by ffi_guard); the map stays consistent.
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers a device allocation (after the server granted it).
pub fn device_insert(base: u64, len: u64) {
    if let Err(e) = device().insert(base, len, ()) {
        if crate::logging::once_per_name("device-ranges", "insert") {
            tracing::warn!(%e, "rgpu shim: device allocation not tracked; cuMemcpy and pointer attributes will not know it");
        }
    }
}

/// Forgets the device allocation at `base` (after the server freed it).
pub fn device_remove(base: u64) {
    device().remove(base);
}

/// The tracked device allocation containing `addr`.
#[must_use]
pub fn device_find(addr: u64) -> Option<Hit<()>> {
    device().find(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove() {
        let mut m = RangeMap::new(4);
        m.insert(0x1000, 0x100, 1u8).unwrap();
        m.insert(0x2000, 0x10, 2).unwrap();
        assert_eq!(m.find(0x1000).map(|h| h.value), Some(1));
        assert_eq!(m.find(0x10ff).map(|h| h.value), Some(1));
        assert_eq!(m.find(0x1100), None);
        assert_eq!(m.find(0xfff), None);
        assert_eq!(m.find(0x200f).map(|h| h.offset_of(0x200f)), Some(0xf));
        assert!(m.find_span(0x1080, 0x80).is_some());
        assert!(m.find_span(0x1080, 0x81).is_none());
        assert!(m.find_span(u64::MAX, 2).is_none());
        assert_eq!(m.remove(0x1000).map(|h| h.len), Some(0x100));
        assert_eq!(m.find(0x1000), None);
        assert_eq!(m.remove(0x1000), None);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn refuses_overlap_empty_wrap_and_past_bound() {
        let mut m = RangeMap::new(2);
        m.insert(0x1000, 0x100, ()).unwrap();
        for (b, l) in [
            (0x1000, 1),
            (0xfff, 2),
            (0x10ff, 1),
            (0x800, 0x1000),
            (0x3000, 0),
        ] {
            assert_eq!(
                m.insert(b, l, ()),
                Err(RangeError::Invalid { base: b, len: l })
            );
        }
        assert!(m.insert(u64::MAX, 2, ()).is_err());
        m.insert(0x1100, 1, ()).unwrap();
        assert_eq!(m.insert(0x5000, 1, ()), Err(RangeError::Full { max: 2 }));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn device_registry_round_trip() {
        let base = 0xdead_0000_0000;
        device_insert(base, 4096);
        assert_eq!(device_find(base + 4095).map(|h| h.base), Some(base));
        assert!(device_find(base + 4096).is_none());
        device_remove(base);
        assert!(device_find(base).is_none());
    }
}
