//! Emulated device memory: host buffers behind validated device pointers.
//!
//! Exists so every device access of the emulated backend goes through one
//! check: a pointer range is usable only when it lies entirely inside one
//! live allocation (an interval map keyed by base address). Freed and wild
//! pointers fail with an error, never a crash. Allocations are charged
//! against the session's quota, and device addresses come from one
//! process-wide, never-reused counter starting at [`ADDRESS_BASE`], with a
//! guard gap after each allocation: a use-after-free or a small overrun
//! lands on no allocation, and a pointer of another session (thread) is
//! never valid here. The address window is chosen to be free in client
//! processes, whose shim reserves each device range it learns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rgpu_proto::{CudaError, DevicePtr};

use super::zeroed::try_zeroed;

/// First device address handed out: 16 TiB, a user-space address (so the
/// client shim can reserve it, see `docs/shim.md`, "Address spaces") where
/// Linux places nothing unless asked: mmap grows down from below the stack
/// (`0x7f…` on x86-64, `0xffff…` on 48-bit aarch64), PIE binaries load at
/// `0x55…`/`0x56…`, and the brk heap of a non-PIE binary starts near 4 MiB.
/// Client host memory and emulated device addresses therefore do not meet
/// in practice (the shim still checks).
pub const ADDRESS_BASE: u64 = 0x1000_0000_0000;
/// Address space the counter may use, above [`ADDRESS_BASE`] (32 TiB: the
/// window ends at `0x3000_0000_0000`, inside the 47-bit user space of
/// x86-64); past it allocations fail with `CUDA_ERROR_OUT_OF_MEMORY`, as
/// addresses are never reused.
pub const ADDRESS_SPAN_BYTES: u64 = 0x2000_0000_0000;
/// Allocation granularity and base alignment, as `cuMemAlloc` guarantees.
pub const ALLOC_ALIGN_BYTES: u64 = 256;
/// Unmapped gap left after every allocation's address range.
pub const GUARD_BYTES: u64 = 64 << 10;

const _: () = assert!(ALLOC_ALIGN_BYTES.is_power_of_two());
const _: () = assert!(GUARD_BYTES.is_multiple_of(ALLOC_ALIGN_BYTES));
const _: () = assert!(ADDRESS_BASE.is_multiple_of(ALLOC_ALIGN_BYTES));
const _: () = assert!(ADDRESS_BASE + ADDRESS_SPAN_BYTES <= 1 << 47);

/// Next unused device address, shared by every emulated context in the
/// process so that addresses are never reused.
static NEXT_ADDRESS: AtomicU64 = AtomicU64::new(ADDRESS_BASE);

/// `len` rounded up to the allocation granularity; `None` on overflow.
fn charged(len: u64) -> Option<u64> {
    len.checked_add(ALLOC_ALIGN_BYTES - 1)
        .map(|v| v & !(ALLOC_ALIGN_BYTES - 1))
}

/// Reserves `span` bytes of fresh device address space.
fn reserve_addresses(span: u64) -> Option<u64> {
    NEXT_ADDRESS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
            let end = next.checked_add(span)?;
            (end - ADDRESS_BASE <= ADDRESS_SPAN_BYTES).then_some(end)
        })
        .ok()
}

/// One session's device allocations and quota.
#[derive(Debug)]
pub struct DeviceMemory {
    allocs: BTreeMap<u64, Box<[u8]>>,
    used_bytes: u64,
    quota_bytes: u64,
    allocations_max: usize,
}

impl DeviceMemory {
    /// Empty memory with a quota of `quota_bytes` and at most
    /// `allocations_max` live allocations.
    #[must_use]
    pub fn new(quota_bytes: u64, allocations_max: usize) -> Self {
        Self {
            allocs: BTreeMap::new(),
            used_bytes: 0,
            quota_bytes,
            allocations_max,
        }
    }

    /// Bytes charged by live allocations.
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// The quota.
    #[must_use]
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Allocates `len` zeroed bytes and returns the device address.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] for 0 bytes; [`CudaError::OUT_OF_MEMORY`]
    /// over the quota, the allocation count, the address space or host RAM.
    pub fn alloc(&mut self, len: u64) -> Result<DevicePtr, CudaError> {
        if len == 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        let charge = charged(len).ok_or(CudaError::OUT_OF_MEMORY)?;
        let over_quota = self
            .used_bytes
            .checked_add(charge)
            .is_none_or(|u| u > self.quota_bytes);
        if over_quota || self.allocs.len() >= self.allocations_max {
            tracing::debug!(
                len,
                used = self.used_bytes,
                quota = self.quota_bytes,
                "emulated alloc refused"
            );
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let host_len = usize::try_from(len).map_err(|_| CudaError::OUT_OF_MEMORY)?;
        let span = charge
            .checked_add(GUARD_BYTES)
            .ok_or(CudaError::OUT_OF_MEMORY)?;
        let base = reserve_addresses(span).ok_or(CudaError::OUT_OF_MEMORY)?;
        let buf = try_zeroed(host_len).ok_or(CudaError::OUT_OF_MEMORY)?;
        debug_assert_eq!(base % ALLOC_ALIGN_BYTES, 0);
        self.allocs.insert(base, buf);
        self.used_bytes += charge;
        Ok(DevicePtr(base))
    }

    /// Frees the allocation based at `ptr`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] unless `ptr` is a live allocation's base.
    pub fn free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        let buf = self.allocs.remove(&ptr.0).ok_or(CudaError::INVALID_VALUE)?;
        self.release_charge(buf.len());
        Ok(())
    }

    fn release_charge(&mut self, len: usize) {
        // The charge was computable when the allocation was made.
        let charge = charged(len as u64).unwrap_or(0);
        debug_assert!(charge <= self.used_bytes);
        self.used_bytes -= charge.min(self.used_bytes);
    }

    /// Frees every allocation; returns (count, bytes charged).
    pub fn release_all(&mut self) -> (u64, u64) {
        let count = self.allocs.len() as u64;
        let bytes = self.used_bytes;
        self.allocs.clear();
        self.used_bytes = 0;
        (count, bytes)
    }

    /// Base and in-allocation offset of `[ptr, ptr + len)` if it lies inside
    /// one live allocation. `len` 0 is valid anywhere inside or at the end of one.
    fn locate(&self, ptr: u64, len: u64) -> Option<(u64, usize, usize)> {
        let (&base, buf) = self.allocs.range(..=ptr).next_back()?;
        let off = ptr - base;
        let end = off.checked_add(len)?;
        if end > buf.len() as u64 {
            return None;
        }
        // Both fit: end <= buf.len(), a usize.
        Some((base, off as usize, end as usize))
    }

    /// The bytes of `[ptr, ptr + len)`, or `None` unless they lie inside one
    /// live allocation.
    #[must_use]
    pub fn slice(&self, ptr: DevicePtr, len: u64) -> Option<&[u8]> {
        let (base, off, end) = self.locate(ptr.0, len)?;
        self.allocs.get(&base).map(|b| &b[off..end])
    }

    /// Writable bytes of `[ptr, ptr + len)`; see [`DeviceMemory::slice`].
    #[must_use]
    pub fn slice_mut(&mut self, ptr: DevicePtr, len: u64) -> Option<&mut [u8]> {
        let (base, off, end) = self.locate(ptr.0, len)?;
        self.allocs.get_mut(&base).map(|b| &mut b[off..end])
    }

    /// Copies `len` bytes from `src` to `dst` (overlap allowed, memmove).
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] unless both ranges are valid.
    pub fn copy(&mut self, dst: DevicePtr, src: DevicePtr, len: u64) -> Result<(), CudaError> {
        let (sbase, soff, send) = self.locate(src.0, len).ok_or(CudaError::INVALID_VALUE)?;
        let (dbase, doff, _) = self.locate(dst.0, len).ok_or(CudaError::INVALID_VALUE)?;
        if sbase == dbase {
            let buf = self
                .allocs
                .get_mut(&sbase)
                .ok_or(CudaError::INVALID_VALUE)?;
            buf.copy_within(soff..send, doff);
            return Ok(());
        }
        // Distinct allocations: take the source out of the map (a move, not a
        // copy) so both can be borrowed at once, then put it back.
        let from = self.allocs.remove(&sbase).ok_or(CudaError::INVALID_VALUE)?;
        let res = match self.allocs.get_mut(&dbase) {
            Some(to) => {
                to[doff..doff + (send - soff)].copy_from_slice(&from[soff..send]);
                Ok(())
            }
            None => Err(CudaError::INVALID_VALUE),
        };
        self.allocs.insert(sbase, from);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_must_lie_in_one_live_allocation() {
        let mut m = DeviceMemory::new(1 << 20, 16);
        let a = m.alloc(1000).unwrap();
        let b = m.alloc(1000).unwrap();
        assert!(a.0 >= ADDRESS_BASE && a.0.is_multiple_of(ALLOC_ALIGN_BYTES));
        assert!(b.0 + 1000 <= ADDRESS_BASE + ADDRESS_SPAN_BYTES);
        assert!(b.0 >= a.0 + 1000 + GUARD_BYTES);
        assert!(m.slice(a, 1000).is_some());
        assert!(m.slice(DevicePtr(a.0 + 999), 1).is_some());
        assert!(m.slice(DevicePtr(a.0 + 999), 2).is_none());
        assert!(m.slice(DevicePtr(a.0 - 1), 1).is_none());
        assert!(m.slice(DevicePtr(a.0 + 1), u64::MAX).is_none());
        assert!(m.slice(DevicePtr(0), 1).is_none());
        m.free(a).unwrap();
        assert!(m.slice(a, 1).is_none());
        assert_eq!(m.free(a), Err(CudaError::INVALID_VALUE));
        assert_eq!(m.free(DevicePtr(b.0 + 8)), Err(CudaError::INVALID_VALUE));
        // Freed addresses are not handed out again.
        let c = m.alloc(1000).unwrap();
        assert!(c.0 > b.0);
    }

    #[test]
    fn quota_is_enforced_and_released() {
        let mut m = DeviceMemory::new(4096, 16);
        let a = m.alloc(4000).unwrap();
        assert_eq!(m.used_bytes(), 4096);
        assert_eq!(m.alloc(1), Err(CudaError::OUT_OF_MEMORY));
        assert_eq!(m.alloc(0), Err(CudaError::INVALID_VALUE));
        assert_eq!(m.alloc(u64::MAX), Err(CudaError::OUT_OF_MEMORY));
        m.free(a).unwrap();
        assert_eq!(m.used_bytes(), 0);
        let _b = m.alloc(10).unwrap();
        assert_eq!(m.release_all(), (1, 256));
        assert_eq!(m.used_bytes(), 0);
    }

    #[test]
    fn copies_within_and_across_allocations() {
        let mut m = DeviceMemory::new(1 << 20, 16);
        let a = m.alloc(16).unwrap();
        let b = m.alloc(16).unwrap();
        m.slice_mut(a, 16)
            .unwrap()
            .copy_from_slice(&(0u8..16).collect::<Vec<_>>());
        m.copy(b, DevicePtr(a.0 + 4), 8).unwrap();
        assert_eq!(m.slice(b, 8).unwrap(), &[4, 5, 6, 7, 8, 9, 10, 11]);
        m.copy(DevicePtr(a.0 + 1), a, 4).unwrap();
        assert_eq!(m.slice(a, 5).unwrap(), &[0, 0, 1, 2, 3]);
        assert_eq!(m.copy(b, a, 17), Err(CudaError::INVALID_VALUE));
        assert_eq!(
            m.copy(DevicePtr(b.0 + 9), a, 8),
            Err(CudaError::INVALID_VALUE)
        );
    }
}
