//! Views of application memory handed to copy calls, the one place the shim turns a C pointer
//! and length into a Rust slice.
//!
//! Like NVIDIA's driver, the shim trusts that a non-null host pointer addresses `len` bytes;
//! a null pointer with a nonzero length is refused, and so is a range with unmapped pages
//! ([`mapped`], checked with `mincore(2)`), and so is one touching a device range's
//! reservation (`crate::remote::reserve`): a wild host pointer, or a device pointer passed
//! as a host one, gets
//! `CUDA_ERROR_INVALID_VALUE` instead of crashing the process or breaking the connection
//! half-way through a send. Protection bits are not checked (a read-only page given as a
//! copy's destination still faults, as it would with NVIDIA's driver).
//!
//! Also the page-granular anonymous mappings that back pinned host memory when there is no
//! shared arena (tcp): [`map_pages`] / [`unmap_pages`].

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE};

/// The `len` bytes at `ptr`, for reading.
pub(crate) fn host_bytes<'a>(ptr: *const c_void, len: usize) -> Result<&'a [u8], CUresult> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || isize::try_from(len).is_err() || !usable(ptr, len) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, len fits isize, every page mapped; the driver API contract makes the
    // caller responsible for `ptr` addressing `len` readable bytes that stay valid for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// The `len` bytes at `ptr`, for writing.
pub(crate) fn host_bytes_mut<'a>(ptr: *mut c_void, len: usize) -> Result<&'a mut [u8], CUresult> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() || isize::try_from(len).is_err() || !usable(ptr, len) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: as in `host_bytes`, for writable memory the caller does not touch during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
}

/// Whether `[ptr, ptr + len)` may be viewed as host memory: every page mapped, and none of
/// them a device range's `PROT_NONE` reservation (`remote::reserve`), which `mincore` counts
/// as mapped but which faults on access.
fn usable(ptr: *const c_void, len: usize) -> bool {
    mapped(ptr, len) && !crate::remote::ranges::touches_reserved(ptr as u64, len as u64)
}

/// Bytes of page-residency vector `mapped` asks `mincore` for at once (one byte per page).
const MINCORE_PAGES_PER_CALL: usize = 4096;

fn page_bytes() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// Whether every page of `[ptr, ptr + len)` is mapped in this process. `mincore` fails with
/// `ENOMEM` for a range with an unmapped page; it never touches the memory itself.
pub(crate) fn mapped(ptr: *const c_void, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let page = page_bytes();
    let start = (ptr as usize) & !(page - 1);
    let Some(end) = (ptr as usize).checked_add(len) else {
        return false;
    };
    let mut vec = [0u8; MINCORE_PAGES_PER_CALL];
    let mut at = start;
    while at < end {
        let span = (end - at).min(MINCORE_PAGES_PER_CALL * page);
        // SAFETY: `at` is page-aligned, `vec` holds one byte for each of the at most
        // MINCORE_PAGES_PER_CALL pages of `span`; mincore only reads page tables.
        let rc = unsafe { libc::mincore(at as *mut c_void, span, vec.as_mut_ptr()) };
        if rc != 0 {
            return false;
        }
        at += span;
    }
    true
}

/// `len` bytes (rounded up to whole pages) of fresh private anonymous memory, for pinned
/// host memory without a shared arena.
pub(crate) fn map_pages(len: usize) -> Result<NonNull<u8>, CUresult> {
    if len == 0 || isize::try_from(len).is_err() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: a fresh anonymous mapping chosen by the kernel; no existing memory is affected.
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
    if p == libc::MAP_FAILED {
        return Err(crate::cuda_types::CUDA_ERROR_OUT_OF_MEMORY);
    }
    NonNull::new(p.cast::<u8>()).ok_or(crate::cuda_types::CUDA_ERROR_OUT_OF_MEMORY)
}

/// Releases a mapping made by [`map_pages`].
///
/// # Safety
/// `ptr` and `len` must be exactly those of one live [`map_pages`] mapping, and nothing may
/// use that memory afterwards.
pub(crate) unsafe fn unmap_pages(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a mapping from `map_pages` that nothing uses any more.
    let rc = unsafe { libc::munmap(ptr.as_ptr().cast::<c_void>(), len) };
    debug_assert_eq!(rc, 0, "munmap of a map_pages mapping failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_refused_unless_empty() {
        assert_eq!(host_bytes(std::ptr::null(), 0), Ok(&[][..]));
        assert_eq!(
            host_bytes(std::ptr::null(), 1),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert!(host_bytes_mut(std::ptr::null_mut(), 4).is_err());
        let mut buf = [1u8, 2, 3];
        let view = host_bytes_mut(buf.as_mut_ptr().cast(), 3).unwrap();
        view[0] = 9;
        assert_eq!(buf, [9, 2, 3]);
    }

    #[test]
    fn wild_pointers_are_refused_and_pages_map() {
        let p = map_pages(3 * 4096).unwrap();
        assert!(mapped(p.as_ptr().cast(), 3 * 4096));
        let view = host_bytes_mut(p.as_ptr().cast(), 3 * 4096).unwrap();
        view[3 * 4096 - 1] = 7;
        // SAFETY: exactly the mapping above; the view is not used again.
        unsafe { unmap_pages(p, 3 * 4096) };
        // Page 0 is never mapped.
        assert_eq!(
            host_bytes(8 as *const c_void, 8),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert!(!mapped(usize::MAX as *const c_void, 2));
        assert!(map_pages(0).is_err());
    }
}
