//! Holding device address ranges in the client's own address space.
//!
//! Exists because device pointers are numbers chosen in another process (the worker, or the
//! driver's unified address range there), so in this process the same numbers may also be
//! valid host addresses. Once a device range is known, [`Reserver::acquire`] maps its pages
//! `PROT_NONE` with `MAP_FIXED_NOREPLACE` (and `MAP_NORESERVE`: no memory is committed), so
//! no later host mapping of this process can land there, and `cuMemcpy` can tell the two
//! apart. If a page is already mapped the reservation fails with
//! [`ReserveError::Occupied`]: the range is ambiguous and the caller must not guess.
//!
//! Device ranges are not page-aligned (allocations are 256 B aligned and pool
//! sub-allocations may share a page), so pages are reference counted: a page is mapped by
//! the first range that needs it and unmapped when the last one is released. The reserver
//! only ever unmaps pages it mapped itself. All `unsafe` (`mmap`, `munmap`) is in the small
//! `sys` module below.

use std::collections::BTreeMap;

/// Most runs of reserved pages tracked at once. Each run is one kernel mapping (VMA) unless
/// the kernel merges neighbours, and `vm.max_map_count` (65530 by default) is shared with
/// the application, so a quarter of it at most; past it a range is not reserved
/// ([`ReserveError::Full`]).
pub const RUNS_MAX: usize = 1 << 14;

/// Why a range could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// Some page of the range is already mapped in this process (host memory).
    #[error("pages [{start:#x}, {end:#x}) overlap an existing mapping of this process")]
    Occupied {
        /// First page of the refused span.
        start: u64,
        /// End of the refused span (page-aligned).
        end: u64,
    },
    /// The kernel placed the mapping elsewhere: it predates `MAP_FIXED_NOREPLACE` (4.17).
    #[error("the kernel does not honour MAP_FIXED_NOREPLACE")]
    Unsupported,
    /// [`RUNS_MAX`] runs are held.
    #[error("reservation table full ({max} runs)")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The range is empty, wraps, or does not fit this process's address space type.
    #[error("range [{base:#x}, +{len:#x}) is empty or wraps")]
    Invalid {
        /// Start address.
        base: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `mmap` failed otherwise (`ENOMEM`: beyond the user address space or the map count).
    #[error("mmap failed: errno {errno}")]
    Os {
        /// The `errno` value.
        errno: i32,
    },
}

/// The page size of this process, in bytes (a power of two).
#[must_use]
pub fn page_bytes() -> u64 {
    sys::page_bytes()
}

/// The whole pages covering `[base, base + len)`, as `[start, end)`; `None` when empty or
/// wrapping.
#[must_use]
pub fn page_span(base: u64, len: u64) -> Option<(u64, u64)> {
    let page = page_bytes();
    debug_assert!(page.is_power_of_two());
    if len == 0 {
        return None;
    }
    let end = base.checked_add(len)?.checked_add(page - 1)? & !(page - 1);
    Some((base & !(page - 1), end))
}

/// Reference-counted runs of pages this process holds `PROT_NONE`.
///
/// Invariants: runs are disjoint, page-aligned, non-empty, each with a count ≥ 1, and every
/// page in a run is mapped by this reserver.
#[derive(Debug)]
pub struct Reserver {
    /// Run start → (run end, number of acquired ranges touching it).
    runs: BTreeMap<u64, (u64, u32)>,
    max: usize,
}

impl Reserver {
    /// An empty reserver holding at most `max` runs.
    #[must_use]
    pub const fn new(max: usize) -> Self {
        Self {
            runs: BTreeMap::new(),
            max,
        }
    }

    /// Runs held.
    #[must_use]
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Whether the page holding `addr` is reserved here.
    #[must_use]
    pub fn holds(&self, addr: u64) -> bool {
        self.runs
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, &(end, _))| addr < end)
    }

    /// Whether any page of `[base, base + len)` is held here (such bytes are not host
    /// memory: they must never be read or written).
    #[must_use]
    pub fn touches(&self, base: u64, len: u64) -> bool {
        let Some((start, end)) = page_span(base, len) else {
            return false;
        };
        self.holds(start) || self.runs.range(start..end).next().is_some()
    }

    /// Reserves the pages of `[base, base + len)`: pages already held here are shared
    /// (their count grows), the others are mapped `PROT_NONE`.
    ///
    /// # Errors
    /// [`ReserveError::Occupied`] when a page not held here is mapped in the process;
    /// the others as documented on [`ReserveError`]. Nothing changes on error.
    pub fn acquire(&mut self, base: u64, len: u64) -> Result<(), ReserveError> {
        let (start, end) = page_span(base, len).ok_or(ReserveError::Invalid { base, len })?;
        let gaps = self.gaps(start, end);
        if self.runs.len() + gaps.len() + 2 > self.max {
            return Err(ReserveError::Full { max: self.max });
        }
        for (i, &(s, e)) in gaps.iter().enumerate() {
            if let Err(err) = sys::map_none(s, e - s) {
                for &(ds, de) in &gaps[..i] {
                    sys::unmap_own(ds, de - ds);
                }
                return Err(err);
            }
        }
        self.split(start);
        self.split(end);
        for (_, (_, count)) in self.runs.range_mut(start..end) {
            *count += 1;
        }
        for (s, e) in gaps {
            self.runs.insert(s, (e, 1));
        }
        self.coalesce(start);
        self.coalesce(end);
        Ok(())
    }

    /// Releases the pages of `[base, base + len)` acquired earlier: pages no other
    /// acquired range touches are unmapped. Pages not held here are left alone.
    pub fn release(&mut self, base: u64, len: u64) {
        let Some((start, end)) = page_span(base, len) else {
            return;
        };
        self.split(start);
        self.split(end);
        let mut freed = Vec::new();
        for (&s, (e, count)) in self.runs.range_mut(start..end) {
            debug_assert!(*count > 0);
            *count -= 1;
            if *count == 0 {
                freed.push((s, *e));
            }
        }
        for (s, e) in freed {
            self.runs.remove(&s);
            sys::unmap_own(s, e - s);
        }
        self.coalesce(start);
        self.coalesce(end);
    }

    /// The sub-spans of `[start, end)` no run covers.
    fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = start;
        let first = self
            .runs
            .range(..start)
            .next_back()
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, _))| (s, e));
        let rest = self.runs.range(start..end).map(|(&s, &(e, _))| (s, e));
        for (s, e) in first.into_iter().chain(rest) {
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            gaps.push((at, end));
        }
        gaps
    }

    /// Splits the run containing `at` (strictly inside it) in two at `at`.
    fn split(&mut self, at: u64) {
        let hit = self
            .runs
            .range(..at)
            .next_back()
            .map(|(&s, &(e, c))| (s, e, c));
        if let Some((s, e, c)) = hit {
            if at < e {
                self.runs.insert(s, (at, c));
                self.runs.insert(at, (e, c));
            }
        }
    }

    /// Merges the run ending at `at` with the one starting there when their counts match.
    fn coalesce(&mut self, at: u64) {
        let Some(&(next_end, next_count)) = self.runs.get(&at) else {
            return;
        };
        let before = self
            .runs
            .range(..at)
            .next_back()
            .map(|(&s, &(e, c))| (s, e, c));
        if let Some((s, e, c)) = before {
            if e == at && c == next_count {
                self.runs.remove(&at);
                self.runs.insert(s, (next_end, c));
            }
        }
    }
}

impl Drop for Reserver {
    fn drop(&mut self) {
        for (&s, &(e, _)) in &self.runs {
            sys::unmap_own(s, e - s);
        }
    }
}

/// The system calls, behind a safe API: only fresh mappings are made, and only pages the
/// [`Reserver`] mapped are unmapped.
mod sys {
    use std::ffi::c_void;

    use super::ReserveError;

    pub(super) fn page_bytes() -> u64 {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n)
            .ok()
            .filter(|n| n.is_power_of_two())
            .unwrap_or(4096)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Maps `[start, start + len)` `PROT_NONE`, failing if any page there is mapped.
    pub(super) fn map_none(start: u64, len: u64) -> Result<(), ReserveError> {
        let invalid = ReserveError::Invalid { base: start, len };
        let addr = usize::try_from(start).map_err(|_| invalid)?;
        let n = usize::try_from(len).map_err(|_| invalid)?;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory in
        // use is affected; the new mapping is inaccessible and commits no memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::without_provenance_mut::<c_void>(addr),
                n,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(match errno() {
                libc::EEXIST => ReserveError::Occupied {
                    start,
                    end: start + len,
                },
                errno => ReserveError::Os { errno },
            });
        }
        if p as usize != addr {
            // SAFETY: `p` is the mapping just made (a kernel that took the address as a
            // hint placed it elsewhere); nothing else knows of it.
            let rc = unsafe { libc::munmap(p, n) };
            debug_assert_eq!(rc, 0);
            return Err(ReserveError::Unsupported);
        }
        Ok(())
    }

    /// Unmaps pages that [`map_none`] mapped for the reserver (and nothing else may own).
    pub(super) fn unmap_own(start: u64, len: u64) {
        let (Ok(addr), Ok(n)) = (usize::try_from(start), usize::try_from(len)) else {
            return;
        };
        // SAFETY: the reserver passes only pages it mapped PROT_NONE with map_none and still
        // holds; no Rust object lives in them (they were never accessible).
        let rc = unsafe { libc::munmap(std::ptr::without_provenance_mut::<c_void>(addr), n) };
        debug_assert_eq!(rc, 0, "munmap of a reserved run failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test-private area far from where Linux places mappings on x86-64 and 48-bit
    /// aarch64 (mmap grows down from below the stack near 0x7fff…, PIE binaries sit at
    /// 0x55…/0x56…); each test takes its own slot so parallel tests do not meet.
    fn slot(n: u64) -> u64 {
        0x3100_0000_0000 + n * (1 << 32)
    }

    /// Whether the page holding `addr` is mapped in this process (`mincore` fails with
    /// ENOMEM on an unmapped page; it does not touch memory).
    fn mapped(addr: u64) -> bool {
        let page = page_bytes();
        let mut v = [0u8; 1];
        // SAFETY: a page-aligned address and a one-byte vector for one page; mincore only
        // reads page tables.
        let rc = unsafe {
            libc::mincore(
                std::ptr::without_provenance_mut((addr & !(page - 1)) as usize),
                page as usize,
                v.as_mut_ptr(),
            )
        };
        rc == 0
    }

    /// A fresh read-write host mapping chosen by the kernel: (address, length).
    fn host_mapping(len: usize) -> (u64, usize) {
        // SAFETY: a fresh anonymous mapping chosen by the kernel; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        (p as u64, len)
    }

    #[test]
    fn page_span_rounds_out() {
        let p = page_bytes();
        assert_eq!(page_span(p + 1, 1), Some((p, 2 * p)));
        assert_eq!(page_span(p, p), Some((p, 2 * p)));
        assert_eq!(page_span(p - 1, 2), Some((0, 2 * p)));
        assert_eq!(page_span(p, 0), None);
        assert_eq!(page_span(u64::MAX - 1, 1), None);
    }

    #[test]
    fn reserve_blocks_host_mappings_and_release_frees() {
        let base = slot(0);
        let mut r = Reserver::new(64);
        r.acquire(base + 256, 10_000).unwrap();
        assert!(mapped(base) && mapped(base + 10_000));
        assert!(r.holds(base + 9_000));
        assert!(r.touches(base - 1, 2) && r.touches(base + 10_000, 1 << 20));
        assert!(!r.touches(base - 4096, 4096) && !r.touches(base + 3 * page_bytes() + 8192, 1));
        // A second reserver (standing in for any other mapping attempt) is refused.
        let mut other = Reserver::new(8);
        assert!(matches!(
            other.acquire(base + 4096, 1),
            Err(ReserveError::Occupied { .. })
        ));
        assert_eq!(other.runs(), 0);
        r.release(base + 256, 10_000);
        assert_eq!(r.runs(), 0);
        assert!(!mapped(base) && !mapped(base + 10_000));
        // Now the other one may have it.
        other.acquire(base + 4096, 1).unwrap();
        drop(other);
        assert!(!mapped(base + 4096));
    }

    #[test]
    fn existing_host_mapping_is_occupied() {
        let (host, len) = host_mapping(3 * page_bytes() as usize);
        let mut r = Reserver::new(8);
        // Any overlap, even one page at the end of a larger span, refuses the whole range.
        let before = host - 2 * page_bytes();
        let err = r.acquire(before, 2 * page_bytes() + 1).unwrap_err();
        assert!(matches!(err, ReserveError::Occupied { .. }), "{err}");
        assert_eq!(r.runs(), 0);
        // Inside the mapping too; the host mapping is untouched.
        let err = r.acquire(host + 100, 8).unwrap_err();
        assert_eq!(
            err,
            ReserveError::Occupied {
                start: host,
                end: host + page_bytes()
            }
        );
        assert!(mapped(host) && mapped(host + len as u64 - 1));
        // SAFETY: the mapping made above, unused since.
        let rc = unsafe { libc::munmap(std::ptr::without_provenance_mut(host as usize), len) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn shared_pages_live_until_the_last_range() {
        let p = page_bytes();
        let base = slot(1);
        let mut r = Reserver::new(64);
        // Three sub-allocations sharing boundary pages: [0, 1.5p), [1.5p, 2.25p), [2.25p, 4p).
        let a = (base, p + p / 2);
        let b = (base + p + p / 2, 3 * p / 4);
        let c = (base + 2 * p + p / 4, p + 3 * p / 4);
        for (s, l) in [a, b, c] {
            r.acquire(s, l).unwrap();
        }
        assert!((0..4).all(|i| mapped(base + i * p)));
        // Freeing the middle one keeps its pages: both neighbours touch them.
        r.release(b.0, b.1);
        assert!((0..4).all(|i| mapped(base + i * p)));
        // Freeing the first unmaps pages 0 and 1 (b is gone); page 2 still belongs to c.
        r.release(a.0, a.1);
        assert!(!mapped(base) && !mapped(base + p));
        assert!(mapped(base + 2 * p) && mapped(base + 3 * p));
        r.release(c.0, c.1);
        assert!((0..4).all(|i| !mapped(base + i * p)));
        assert_eq!(r.runs(), 0);
    }

    #[test]
    fn partial_overlap_maps_only_the_gaps() {
        let p = page_bytes();
        let base = slot(2);
        let mut r = Reserver::new(64);
        r.acquire(base + p, p).unwrap();
        r.acquire(base + 3 * p, p).unwrap();
        // Covers both and the holes around them; only the holes are mapped.
        r.acquire(base, 5 * p).unwrap();
        assert!((0..5).all(|i| mapped(base + i * p)));
        r.release(base, 5 * p);
        assert!(!mapped(base) && !mapped(base + 2 * p) && !mapped(base + 4 * p));
        assert!(mapped(base + p) && mapped(base + 3 * p));
        r.release(base + p, p);
        r.release(base + 3 * p, p);
        assert!((0..5).all(|i| !mapped(base + i * p)));
        assert_eq!(r.runs(), 0);
    }

    #[test]
    fn bound_and_invalid_ranges_change_nothing() {
        let p = page_bytes();
        let base = slot(3);
        let mut r = Reserver::new(3);
        assert_eq!(
            r.acquire(base, 0),
            Err(ReserveError::Invalid { base, len: 0 })
        );
        r.acquire(base, p).unwrap();
        assert_eq!(
            r.acquire(base + 4 * p, p),
            Err(ReserveError::Full { max: 3 })
        );
        assert!(!mapped(base + 4 * p));
        assert_eq!(r.runs(), 1);
        drop(r);
        assert!(!mapped(base));
    }
}
