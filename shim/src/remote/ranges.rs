//! Address ranges the shim knows: device allocations it handed out and pinned host memory.
//!
//! Exists because several decisions depend on where a pointer lives: a copy from pinned
//! arena memory goes by reference (zero copy) while a pageable one is staged, unified
//! addressing (`cuMemcpy`) takes its direction from whether each side is a known device
//! range, and `cuPointerGetAttribute` answers from the same records. [`RangeMap`] is a
//! bounded interval map of disjoint `[base, base + len)` ranges; pinned memory
//! (`super::pinned`) and the device registry below hold one each.
//!
//! Device addresses are the worker's numbers, so the device registry also reserves each
//! range's pages in this process ([`super::reserve`]): host memory cannot appear there
//! later, and a range that already was host memory is marked [`Claim::Conflicted`], for
//! which [`is_device`] refuses to guess.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::reserve::{ReserveError, Reserver, RUNS_MAX};

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

/// Where a recorded device range came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An allocation (`cuMemAlloc`, pitch, stream-ordered): forgotten on its free.
    Alloc,
    /// A global of the module with this (client) handle: forgotten when it is unloaded.
    Global {
        /// The module's handle as the application sees it.
        module: u64,
    },
}

/// Whether this process holds a device range's pages (see [`super::reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Its pages are reserved here: no host memory of this process can be there.
    Reserved,
    /// Some of its pages were already host memory here: an address in it is ambiguous.
    Conflicted,
    /// Not reserved for another reason (no `MAP_FIXED_NOREPLACE`, beyond the user address
    /// space, reservation bound): taken for device memory, as before reservations existed.
    Unreserved,
}

/// What is recorded with a device range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRange {
    /// Where it came from.
    pub origin: Origin,
    /// Whether its pages are held.
    pub claim: Claim,
}

/// A unified address that lies in a device range whose pages are also host memory here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("address {addr:#x} is in device range [{base:#x}, +{len:#x}) that is also host memory in this process")]
pub struct Ambiguous {
    /// The address asked about.
    pub addr: u64,
    /// The device range's start.
    pub base: u64,
    /// Its length.
    pub len: u64,
}

/// The device ranges and the pages reserved for them, under one lock so that both agree.
struct Device {
    map: RangeMap<DeviceRange>,
    pages: Reserver,
}

/// Device ranges known to the shim.
static DEVICE: Mutex<Device> = Mutex::new(Device {
    map: RangeMap::new(DEVICE_RANGES_MAX),
    pages: Reserver::new(RUNS_MAX),
});

fn device() -> std::sync::MutexGuard<'static, Device> {
    // Poisoning only means a panic elsewhere (caught by ffi_guard); the map stays consistent.
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reserves the pages of a new device range and says how that went (logged once per kind).
fn claim(pages: &mut Reserver, base: u64, len: u64) -> Claim {
    match pages.acquire(base, len) {
        Ok(()) => Claim::Reserved,
        Err(e @ ReserveError::Occupied { .. }) => {
            if crate::logging::once_per_name("device-ranges", "conflict") {
                tracing::warn!(
                    base = format_args!("{base:#x}"),
                    len,
                    error = %e,
                    "rgpu shim: a device range is also host memory in this process; \
                     cuMemcpy and cudaMemcpyDefault on it are refused (explicit-direction copies work)"
                );
            }
            Claim::Conflicted
        }
        Err(e) => {
            if crate::logging::once_per_name("device-ranges", "unreserved") {
                tracing::info!(
                    base = format_args!("{base:#x}"),
                    len,
                    error = %e,
                    "rgpu shim: device range not reserved in this process; unified addressing \
                     takes it for device memory"
                );
            }
            Claim::Unreserved
        }
    }
}

fn insert(base: u64, len: u64, origin: Origin) {
    let mut d = device();
    let d = &mut *d;
    if let Some(h) = d.map.find(base) {
        // The same global asked for again.
        if h.base == base && h.len == len && h.value.origin == origin {
            return;
        }
    }
    let claim = claim(&mut d.pages, base, len);
    if let Err(e) = d.map.insert(base, len, DeviceRange { origin, claim }) {
        if claim == Claim::Reserved {
            d.pages.release(base, len);
        }
        if crate::logging::once_per_name("device-ranges", "insert") {
            tracing::warn!(error = %e, "rgpu shim: device allocation not tracked; cuMemcpy and pointer attributes will not know it");
        }
    }
}

fn forget(d: &mut Device, base: u64) {
    if let Some(h) = d.map.remove(base) {
        if h.value.claim == Claim::Reserved {
            d.pages.release(h.base, h.len);
        }
    }
}

/// Remembers a device allocation (after the server granted it) and reserves its pages.
pub fn device_insert(base: u64, len: u64) {
    insert(base, len, Origin::Alloc);
}

/// Remembers a global of `module` (its client handle); asking again for the same global
/// changes nothing.
pub fn device_insert_global(module: u64, base: u64, len: u64) {
    insert(base, len, Origin::Global { module });
}

/// Forgets the device allocation at `base` (after the server freed it) and releases its
/// pages. A global is not forgotten this way.
pub fn device_remove(base: u64) {
    let mut d = device();
    if d.map
        .find(base)
        .is_some_and(|h| h.base == base && h.value.origin == Origin::Alloc)
    {
        forget(&mut d, base);
    }
}

/// Forgets every global of `module` (after it was unloaded).
pub fn device_remove_globals(module: u64) {
    let mut d = device();
    let bases: Vec<u64> = d
        .map
        .ranges
        .iter()
        .filter(|(_, (_, v))| v.origin == Origin::Global { module })
        .map(|(&b, _)| b)
        .collect();
    for b in bases {
        forget(&mut d, b);
    }
}

/// The tracked device range containing `addr`.
#[must_use]
pub fn device_find(addr: u64) -> Option<Hit<DeviceRange>> {
    device().map.find(addr)
}

/// Whether any byte of `[addr, addr + len)` lies on a page reserved for device memory: such
/// bytes are `PROT_NONE` here, never host memory, and a host view of them would fault.
#[must_use]
pub fn touches_reserved(addr: u64, len: u64) -> bool {
    device().pages.touches(addr, len)
}

/// Unified addressing: whether `addr` is device memory (`true`) or host memory (`false`).
///
/// # Errors
/// [`Ambiguous`] when it lies in a device range whose pages are also host memory here
/// (callers answer `CUDA_ERROR_INVALID_VALUE` instead of guessing).
pub fn is_device(addr: u64) -> Result<bool, Ambiguous> {
    let mut d = device();
    let Some(h) = d.map.find(addr) else {
        return Ok(false);
    };
    if h.value.claim != Claim::Conflicted {
        return Ok(true);
    }
    // The host memory there may be gone since (freed by the application): try again, and
    // if the pages can be reserved now the address is no longer ambiguous.
    let d = &mut *d;
    if d.pages.acquire(h.base, h.len).is_ok() {
        let upgraded = DeviceRange {
            claim: Claim::Reserved,
            ..h.value
        };
        d.map.remove(h.base);
        let reinserted = d.map.insert(h.base, h.len, upgraded);
        // The range was just removed from the same place, so it fits again.
        debug_assert!(reinserted.is_ok());
        if reinserted.is_ok() {
            tracing::debug!(
                base = h.base,
                len = h.len,
                "rgpu shim: conflicted device range now reserved"
            );
            return Ok(true);
        }
        d.pages.release(h.base, h.len);
    }
    tracing::debug!(
        addr,
        base = h.base,
        len = h.len,
        "rgpu shim: ambiguous unified address"
    );
    Err(Ambiguous {
        addr,
        base: h.base,
        len: h.len,
    })
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
        // Above the 47-bit user address space on x86-64: not reservable, still device.
        let base = 0xdead_0000_0000;
        device_insert(base, 4096);
        assert_eq!(device_find(base + 4095).map(|h| h.base), Some(base));
        assert_eq!(is_device(base + 10), Ok(true));
        assert!(device_find(base + 4096).is_none());
        assert_eq!(is_device(base + 4096), Ok(false));
        device_remove(base);
        assert!(device_find(base).is_none());
    }

    /// Tries a host mapping at `addr` with MAP_FIXED_NOREPLACE; unmaps it again on success.
    fn host_map_fails_at(addr: u64) -> bool {
        let page = super::super::reserve::page_bytes();
        let at = (addr & !(page - 1)) as usize;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a fresh one is unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::without_provenance_mut(at),
                page as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return true;
        }
        assert_eq!(p as usize, at, "kernel without MAP_FIXED_NOREPLACE");
        // SAFETY: the mapping just made, unused.
        assert_eq!(unsafe { libc::munmap(p, page as usize) }, 0);
        false
    }

    #[test]
    fn device_ranges_are_reserved_until_freed() {
        let base = 0x3200_0000_0100;
        device_insert(base, 5000);
        assert_eq!(
            device_find(base).map(|h| h.value.claim),
            Some(Claim::Reserved)
        );
        assert!(host_map_fails_at(base) && host_map_fails_at(base + 4999));
        assert!(touches_reserved(base - 0x100, 1) && touches_reserved(base - 8192, 8193));
        assert!(!touches_reserved(base - 8192, 4096));
        device_remove(base);
        assert!(!host_map_fails_at(base) && !host_map_fails_at(base + 4999));
        assert!(!touches_reserved(base, 5000));
    }

    #[test]
    fn sub_allocations_share_pages() {
        // Two pool sub-allocations in one page: the page is held until both are freed.
        let a = 0x3300_0000_0000;
        let b = a + 512;
        device_insert(a, 512);
        device_insert(b, 256);
        device_remove(a);
        assert!(host_map_fails_at(a), "b still holds the page");
        assert_eq!(is_device(b + 1), Ok(true));
        assert_eq!(is_device(a + 1), Ok(false));
        device_remove(b);
        assert!(!host_map_fails_at(a));
    }

    #[test]
    fn host_memory_at_a_device_address_is_ambiguous() {
        let mut host = vec![0u8; 3 << 16].into_boxed_slice();
        host[100] = 7;
        let addr = host.as_ptr() as u64;
        // The worker hands out a device range that is host memory here.
        device_insert(addr + 64, 1024);
        let hit = device_find(addr + 100).unwrap();
        assert_eq!(hit.value.claim, Claim::Conflicted);
        assert_eq!(
            is_device(addr + 100),
            Err(Ambiguous {
                addr: addr + 100,
                base: addr + 64,
                len: 1024
            })
        );
        // Outside the device range the host side is unambiguous.
        assert_eq!(is_device(addr + 2048), Ok(false));
        device_remove(addr + 64);
        // The host memory was never unmapped.
        assert_eq!(host[100], 7);
        host[101] = 8;
        assert_eq!(is_device(addr + 100), Ok(false));
    }

    #[test]
    fn conflicted_range_is_reserved_once_the_host_memory_is_gone() {
        let page = super::super::reserve::page_bytes() as usize;
        // Host memory at a test-private address, far below where the kernel places mappings
        // it chooses itself, so no other test's mapping can fill the hole after the unmap.
        let at = 0x3500_0000_0000usize;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::without_provenance_mut(at),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(p as usize, at);
        let base = p as u64 + 256;
        device_insert(base, 1024);
        assert!(is_device(base).is_err());
        // SAFETY: the mapping made above; nothing refers to it any more.
        assert_eq!(unsafe { libc::munmap(p, 2 * page) }, 0);
        assert_eq!(is_device(base), Ok(true));
        assert_eq!(
            device_find(base).map(|h| h.value.claim),
            Some(Claim::Reserved)
        );
        assert!(host_map_fails_at(base));
        device_remove(base);
        assert!(!host_map_fails_at(base));
    }

    #[test]
    fn globals_live_until_their_module_unloads() {
        let g = 0x3400_0000_0000;
        device_insert_global(5, g, 64);
        device_insert_global(5, g, 64);
        device_insert_global(5, g + 64, 8);
        device_insert_global(6, g + 4096, 8);
        // A free of a global's address is not how globals go.
        device_remove(g);
        assert_eq!(is_device(g + 1), Ok(true));
        assert_eq!(
            device_find(g).map(|h| h.value.origin),
            Some(Origin::Global { module: 5 })
        );
        device_remove_globals(5);
        assert_eq!(is_device(g + 1), Ok(false));
        assert_eq!(is_device(g + 65), Ok(false));
        assert_eq!(is_device(g + 4096), Ok(true));
        device_remove_globals(6);
        assert!(!host_map_fails_at(g));
    }
}
