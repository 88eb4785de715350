//! Allocation variants forwarded to the worker: pitched allocation
//! (`cuMemAllocPitch`), the stream-ordered allocator on the device's default
//! pool (`cuMemAllocAsync`, `cuMemFreeAsync`, `cuDeviceGetDefaultMemPool`,
//! `cuMemAllocFromPoolAsync`).
//!
//! Exists so these paths reach the worker, which charges every one of them
//! to the client's quota; answering them locally would escape it.
//! Allocations are synchronous round trips (the caller needs the address);
//! `cuMemFreeAsync` is queued on its stream like any async call, so a bad
//! pointer is reported as the deferred error of the next synchronizing
//! call. Only the default pool is served: other pool handles are
//! `CUDA_ERROR_INVALID_VALUE` at the worker, and pool creation and
//! attributes keep their refusing stubs.

use std::ffi::{c_uint, c_void};

use rgpu_proto::{
    Call, DeviceGetDefaultMemPool, DevicePtr, MemAllocAsync, MemAllocFromPoolAsync, MemAllocPitch,
    MemFreeAsync, Reply, StreamHandle,
};

use crate::cuda_types::{CUdevice, CUdeviceptr, CUresult, CUstream, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::{device_count_check, stream, with_session};
use crate::ffi_guard::ffi_guard;
use crate::remote::ranges;
use crate::remote::session::to_curesult;

/// `CUmemoryPool`: an opaque pool handle (here the worker's pool number).
pub type CUmemoryPool = *mut c_void;

fn to_u64(n: usize) -> Result<u64, CUresult> {
    u64::try_from(n).map_err(|_| CUDA_ERROR_INVALID_VALUE)
}

fn key(h: CUstream, per_thread: bool) -> Result<StreamHandle, CUresult> {
    if per_thread {
        stream::stream_key_per_thread(h)
    } else {
        stream::stream_key(h)
    }
}

/// `cuMemAllocPitch_v2`: the pitch is chosen by the worker (rows rounded up
/// to at least 512 B) and the quota charged pitch × height.
///
/// # Safety
/// `dptr` and `pitch` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width_bytes: usize,
    height: usize,
    element_size: c_uint,
) -> CUresult {
    ffi_guard("cuMemAllocPitch_v2", || {
        with_session(|s| {
            if dptr.is_null() || pitch.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let call = Call::MemAllocPitch(MemAllocPitch {
                width_bytes: to_u64(width_bytes)?,
                height: to_u64(height)?,
                element_size,
            });
            let (ptr, row) = s
                .conn()
                .sync(&call, |r| match r {
                    Reply::MemAllocPitchReply(a) => Some((a.ptr, a.pitch)),
                    _ => None,
                })
                .map_err(|e| to_curesult("cuMemAllocPitch_v2", &e))?;
            let row_usize = usize::try_from(row).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            ranges::device_insert(ptr.0, row.saturating_mul(to_u64(height)?));
            write_out(pitch, row_usize)?;
            write_out(dptr, ptr.0)
        })
    })
}

/// One stream-ordered allocation: from the default pool (`pool` `None`) or
/// the named one.
fn alloc_async(
    name: &'static str,
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: Option<CUmemoryPool>,
    h: CUstream,
    per_thread: bool,
) -> CUresult {
    with_session(|s| {
        if dptr.is_null() || bytes == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let on = key(h, per_thread)?;
        let bytes = to_u64(bytes)?;
        let call = match pool {
            None => Call::MemAllocAsync(MemAllocAsync { bytes }),
            Some(p) if p.is_null() => return Err(CUDA_ERROR_INVALID_VALUE),
            Some(p) => Call::MemAllocFromPoolAsync(MemAllocFromPoolAsync {
                pool: p as u64,
                bytes,
            }),
        };
        let ptr = s
            .conn()
            .sync_on(&call, on, |r| match r {
                Reply::MemAllocAsyncReply(a) => Some(a.ptr),
                Reply::MemAllocFromPoolAsyncReply(a) => Some(a.ptr),
                _ => None,
            })
            .map_err(|e| to_curesult(name, &e))?;
        ranges::device_insert(ptr.0, bytes);
        write_out(dptr, ptr.0)
    })
}

fn free_async(name: &'static str, dptr: CUdeviceptr, h: CUstream, per_thread: bool) -> CUresult {
    with_session(|s| {
        let on = key(h, per_thread)?;
        s.conn()
            .submit_async(
                &Call::MemFreeAsync(MemFreeAsync {
                    ptr: DevicePtr(dptr),
                }),
                on,
            )
            .map_err(|e| to_curesult(name, &e))?;
        ranges::device_remove(dptr);
        Ok(())
    })
}

/// `cuMemAllocAsync`.
///
/// # Safety
/// `dptr` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    h: CUstream,
) -> CUresult {
    ffi_guard("cuMemAllocAsync", || {
        alloc_async("cuMemAllocAsync", dptr, bytes, None, h, false)
    })
}

/// `cuMemAllocAsync_ptsz`: per-thread default stream variant.
///
/// # Safety
/// As [`cuMemAllocAsync`].
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    h: CUstream,
) -> CUresult {
    ffi_guard("cuMemAllocAsync_ptsz", || {
        alloc_async("cuMemAllocAsync_ptsz", dptr, bytes, None, h, true)
    })
}

/// `cuMemAllocFromPoolAsync` (the default pool only).
///
/// # Safety
/// `dptr` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: CUmemoryPool,
    h: CUstream,
) -> CUresult {
    ffi_guard("cuMemAllocFromPoolAsync", || {
        alloc_async("cuMemAllocFromPoolAsync", dptr, bytes, Some(pool), h, false)
    })
}

/// `cuMemAllocFromPoolAsync_ptsz`: per-thread default stream variant.
///
/// # Safety
/// As [`cuMemAllocFromPoolAsync`].
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync_ptsz(
    dptr: *mut CUdeviceptr,
    bytes: usize,
    pool: CUmemoryPool,
    h: CUstream,
) -> CUresult {
    ffi_guard("cuMemAllocFromPoolAsync_ptsz", || {
        alloc_async(
            "cuMemAllocFromPoolAsync_ptsz",
            dptr,
            bytes,
            Some(pool),
            h,
            true,
        )
    })
}

/// `cuMemFreeAsync`.
///
/// # Safety
/// No pointer arguments are dereferenced; `unsafe` only because it is a C
/// entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, h: CUstream) -> CUresult {
    ffi_guard("cuMemFreeAsync", || {
        free_async("cuMemFreeAsync", dptr, h, false)
    })
}

/// `cuMemFreeAsync_ptsz`: per-thread default stream variant.
///
/// # Safety
/// As [`cuMemFreeAsync`].
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync_ptsz(dptr: CUdeviceptr, h: CUstream) -> CUresult {
    ffi_guard("cuMemFreeAsync_ptsz", || {
        free_async("cuMemFreeAsync_ptsz", dptr, h, true)
    })
}

/// `cuDeviceGetDefaultMemPool`: the worker's handle of the default pool.
///
/// # Safety
/// `pool` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(
    pool: *mut CUmemoryPool,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuDeviceGetDefaultMemPool", || {
        with_session(|s| {
            device_count_check(dev)?;
            if pool.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let device = u32::try_from(dev).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            let call = Call::DeviceGetDefaultMemPool(DeviceGetDefaultMemPool { device });
            let handle = s
                .conn()
                .sync(&call, |r| match r {
                    Reply::DefaultMemPool(p) => Some(p.pool),
                    _ => None,
                })
                .map_err(|e| to_curesult("cuDeviceGetDefaultMemPool", &e))?;
            // A pool handle is an opaque pointer-sized value to the caller.
            let handle = usize::try_from(handle).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            write_out(pool, handle as CUmemoryPool)
        })
    })
}

/// The `cuGetProcAddress` rows answered here.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemAllocPitch", 3020) => cuMemAllocPitch_v2 as *const c_void,
        ("cuMemAllocAsync", 11020) => cuMemAllocAsync as *const c_void,
        ("cuMemAllocFromPoolAsync", 11020) => cuMemAllocFromPoolAsync as *const c_void,
        ("cuMemFreeAsync", 11020) => cuMemFreeAsync as *const c_void,
        ("cuDeviceGetDefaultMemPool", 11020) => cuDeviceGetDefaultMemPool as *const c_void,
        _ => return None,
    })
}

/// The per-thread-default-stream (`_ptsz`) rows answered here.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemAllocAsync", 11020) => cuMemAllocAsync_ptsz as *const c_void,
        ("cuMemAllocFromPoolAsync", 11020) => cuMemAllocFromPoolAsync_ptsz as *const c_void,
        ("cuMemFreeAsync", 11020) => cuMemFreeAsync_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED;

    #[test]
    fn calls_before_init_are_not_initialized() {
        let mut p: CUdeviceptr = 0;
        let mut pitch = 0usize;
        // SAFETY: valid output pointers; no session exists in unit tests.
        let r = unsafe { cuMemAllocPitch_v2(&mut p, &mut pitch, 64, 2, 4) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        // SAFETY: as above.
        let r = unsafe { cuMemAllocAsync(&mut p, 64, std::ptr::null_mut()) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        // SAFETY: no pointer is dereferenced.
        let r = unsafe { cuMemFreeAsync(0x1000, std::ptr::null_mut()) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
    }

    #[test]
    fn rows_map_to_entries() {
        assert!(implemented("cuMemAllocPitch", 3020).is_some());
        assert!(implemented("cuMemAllocPitch", 2000).is_none(), "32-bit ABI");
        assert!(implemented_per_thread("cuMemFreeAsync", 11020).is_some());
        assert!(implemented("cuMemPoolCreate", 11020).is_none());
    }
}
