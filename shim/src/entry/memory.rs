//! Remote memory calls: device allocation and info, host↔device copies, memsets, their
//! async and unified-addressing (`cuMemcpy`) forms.
//!
//! Copies are planned by [`crate::remote::copy`]: pinned arena memory goes by reference
//! (zero copy over shm), pageable memory is staged with several chunks in flight, tcp sends
//! host-to-device bytes as trailers. Every device allocation is recorded (and its pages
//! reserved in this process) in [`crate::remote::ranges`] so that `cuMemcpy` can tell device
//! from host pointers; an address that is both is refused rather than guessed.

use std::ffi::{c_uchar, c_uint, c_ushort, c_void};

use rgpu_proto::{
    Call, DevicePtr, MemAlloc, MemFree, MemGetInfo, MemcpyDtoD, MemcpyDtoDAsync, MemcpyDtoHAsync,
    MemcpyHtoDAsync, Memset, MemsetAsync, MemsetWidth, Payload, Reply, StreamHandle,
};

use crate::cuda_types::{CUdeviceptr, CUresult, CUstream, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::{stream, with_session};
use crate::ffi_guard::ffi_guard;
use crate::host_mem::{host_bytes, host_bytes_mut};
use crate::remote::session::{to_curesult, Session};
use crate::remote::{copy, pinned, ranges};

fn to_u64(n: usize) -> Result<u64, CUresult> {
    u64::try_from(n).map_err(|_| CUDA_ERROR_INVALID_VALUE)
}

/// `cuMemAlloc_v2`.
///
/// # Safety
/// `dptr` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytes: usize) -> CUresult {
    ffi_guard("cuMemAlloc_v2", || {
        with_session(|s| {
            if dptr.is_null() || bytes == 0 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let call = Call::MemAlloc(MemAlloc {
                bytes: to_u64(bytes)?,
            });
            let ptr = s
                .conn()
                .sync(&call, |r| match r {
                    Reply::MemAllocReply(a) => Some(a.ptr),
                    _ => None,
                })
                .map_err(|e| to_curesult("cuMemAlloc_v2", &e))?;
            ranges::device_insert(ptr.0, bytes as u64);
            write_out(dptr, ptr.0)
        })
    })
}

/// `cuMemFree_v2`.
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    ffi_guard("cuMemFree_v2", || {
        with_session(|s| {
            // Freeing null does nothing: the runtime's `cudaFree(0)` (the usual way to create
            // the context) calls `cuMemFree_v2(0)` and must get success.
            if dptr == 0 {
                return Ok(());
            }
            s.conn()
                .sync(
                    &Call::MemFree(MemFree {
                        ptr: DevicePtr(dptr),
                    }),
                    |r| matches!(r, Reply::MemFreeReply(_)).then_some(()),
                )
                .map_err(|e| to_curesult("cuMemFree_v2", &e))?;
            ranges::device_remove(dptr);
            Ok(())
        })
    })
}

/// `cuMemGetInfo_v2`: free and total bytes of this client's quota.
///
/// # Safety
/// `free` and `total` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    ffi_guard("cuMemGetInfo_v2", || {
        with_session(|s| {
            let (f, t) = s
                .conn()
                .sync(&Call::MemGetInfo(MemGetInfo {}), |r| match r {
                    Reply::MemInfo(m) => Some((m.free, m.total)),
                    _ => None,
                })
                .map_err(|e| to_curesult("cuMemGetInfo_v2", &e))?;
            let size = |v: u64| usize::try_from(v).map_err(|_| CUDA_ERROR_INVALID_VALUE);
            write_out(free, size(f)?)?;
            write_out(total, size(t)?)
        })
    })
}

/// Where one side of a copy lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Inside a device allocation the shim tracks.
    Device,
    /// Pinned arena memory at this arena offset (shm, or rdma's registered host region).
    Arena(u64),
    /// Any other host memory (pageable, registered, or pinned without an arena).
    Host,
}

/// Classifies `[addr, addr + len)`: a tracked device allocation wins, then pinned arena
/// memory (when `arena` is true: over shm, or rdma with a host region), else host memory.
fn side_of(addr: u64, len: usize, arena: bool) -> Side {
    if ranges::device_find(addr).is_some() {
        return Side::Device;
    }
    if arena {
        if let Some(off) = pinned::find_span(addr, len as u64)
            .and_then(|hit| pinned::Region::arena_offset(&hit, addr))
        {
            return Side::Arena(off);
        }
    }
    Side::Host
}

/// Host-to-device copy on `stream` from `src` (any host memory).
pub(crate) fn copy_htod(
    s: &Session,
    stream: StreamHandle,
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
) -> Result<(), CUresult> {
    if bytes == 0 {
        return Ok(());
    }
    let mut conn = s.conn();
    if let Side::Arena(off) = side_of(src as u64, bytes, conn.has_arena()) {
        return copy::htod_arena(&mut conn, stream, dst, off, bytes);
    }
    copy::htod(&mut conn, stream, dst, host_bytes(src, bytes)?)
}

/// Device-to-host copy on `stream` into `dst` (any host memory).
pub(crate) fn copy_dtoh(
    s: &Session,
    stream: StreamHandle,
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
) -> Result<(), CUresult> {
    if bytes == 0 {
        return Ok(());
    }
    let mut conn = s.conn();
    if let Side::Arena(off) = side_of(dst as u64, bytes, conn.has_arena()) {
        return copy::dtoh_arena(&mut conn, stream, off, src, bytes);
    }
    copy::dtoh(&mut conn, stream, host_bytes_mut(dst, bytes)?, src)
}

/// Device-to-device copy on `stream`, one call.
pub(crate) fn copy_dtod(
    s: &Session,
    stream: StreamHandle,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
) -> Result<(), CUresult> {
    let call = Call::MemcpyDtoD(MemcpyDtoD {
        dst: DevicePtr(dst),
        src: DevicePtr(src),
        len: to_u64(bytes)?,
    });
    s.conn()
        .sync_on(&call, stream, |r| {
            matches!(r, Reply::MemcpyDtoDReply(_)).then_some(())
        })
        .map_err(|e| to_curesult("cuMemcpyDtoD_v2", &e))
}

/// Unified addressing: whether each of `dst` and `src` is device memory, from the recorded
/// device ranges. A side in a device range that is also host memory in this process
/// (`ranges::Claim::Conflicted`) is `CUDA_ERROR_INVALID_VALUE`, not a guess.
fn unified_sides(dst: CUdeviceptr, src: CUdeviceptr) -> Result<(bool, bool), CUresult> {
    let side = |addr| {
        ranges::is_device(addr).map_err(|e| {
            if crate::logging::once_per_name("unified-address", "ambiguous") {
                tracing::warn!(error = %e, "rgpu shim: unified copy refused; use an explicit direction");
            }
            CUDA_ERROR_INVALID_VALUE
        })
    };
    Ok((side(dst)?, side(src)?))
}

/// Unified addressing: the direction of `cuMemcpy` from the known ranges of both sides.
fn copy_any(
    s: &Session,
    stream: StreamHandle,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
) -> Result<(), CUresult> {
    if bytes == 0 {
        return Ok(());
    }
    let (dst_dev, src_dev) = unified_sides(dst, src)?;
    match (dst_dev, src_dev) {
        (true, true) => copy_dtod(s, stream, dst, src, bytes),
        (true, false) => copy_htod(s, stream, dst, src as *const c_void, bytes),
        (false, true) => copy_dtoh(s, stream, dst as *mut c_void, src, bytes),
        (false, false) => {
            // Host to host, as the driver does for two host pointers; both ranges checked.
            let from = host_bytes(src as *const c_void, bytes)?;
            let to = host_bytes_mut(dst as *mut c_void, bytes)?;
            to.copy_from_slice(from);
            Ok(())
        }
    }
}

/// `cuMemcpyHtoD_v2` (also answers the `_ptds` row).
///
/// # Safety
/// `src` must address `bytes` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
) -> CUresult {
    ffi_guard("cuMemcpyHtoD_v2", || {
        with_session(|s| copy_htod(s, StreamHandle(0), dst, src, bytes))
    })
}

/// `cuMemcpyDtoH_v2` (also answers the `_ptds` row).
///
/// # Safety
/// `dst` must address `bytes` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
) -> CUresult {
    ffi_guard("cuMemcpyDtoH_v2", || {
        with_session(|s| copy_dtoh(s, StreamHandle(0), dst, src, bytes))
    })
}

/// `cuMemcpyDtoD_v2`: one call, the copy stays on the device.
///
/// # Safety
/// No host pointers; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
) -> CUresult {
    ffi_guard("cuMemcpyDtoD_v2", || {
        with_session(|s| copy_dtod(s, StreamHandle(0), dst, src, bytes))
    })
}

/// `cuMemcpy` (unified addressing; also answers the `_ptds` row).
///
/// # Safety
/// A side that is not a tracked device allocation must address `bytes` host bytes.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> CUresult {
    ffi_guard("cuMemcpy", || {
        with_session(|s| copy_any(s, StreamHandle(0), dst, src, bytes))
    })
}

/// The stream an async entry point addresses (`per_thread`: a `_ptsz` row).
fn stream_for(h: CUstream, per_thread: bool) -> Result<StreamHandle, CUresult> {
    if per_thread {
        stream::stream_key_per_thread(h)
    } else {
        stream::stream_key(h)
    }
}

/// Submits an async call on `stream` without waiting.
fn submit_async(s: &Session, call: &Call<'_>, stream: StreamHandle) -> Result<(), CUresult> {
    let name = call.name();
    s.conn()
        .submit_async(call, stream)
        .map_err(|e| to_curesult(name, &e))
}

fn htod_async(
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
    h: CUstream,
    per_thread: bool,
) -> CUresult {
    with_session(|s| {
        let stream = stream_for(h, per_thread)?;
        if bytes == 0 {
            return Ok(());
        }
        let arena = s.conn().has_arena();
        if let Side::Arena(off) = side_of(src as u64, bytes, arena) {
            // Stream-ordered and truly async: the worker reads the pinned pages when the
            // copy's turn comes; the application keeps them unchanged until then (CUDA's rule).
            let call = Call::MemcpyHtoDAsync(MemcpyHtoDAsync {
                dst: DevicePtr(dst),
                src: Payload::Arena {
                    offset: off,
                    len: to_u64(bytes)?,
                },
            });
            return submit_async(s, &call, stream);
        }
        // Pageable (or no arena): staged synchronously, in order on the stream, as CUDA
        // does for pageable sources.
        copy_htod(s, stream, dst, src, bytes)
    })
}

fn dtoh_async(
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
    h: CUstream,
    per_thread: bool,
) -> CUresult {
    with_session(|s| {
        let stream = stream_for(h, per_thread)?;
        if bytes == 0 {
            return Ok(());
        }
        let arena = s.conn().has_arena();
        if let Side::Arena(off) = side_of(dst as u64, bytes, arena) {
            let call = Call::MemcpyDtoHAsync(MemcpyDtoHAsync {
                src: DevicePtr(src),
                len: to_u64(bytes)?,
                arena_offset: off,
            });
            return submit_async(s, &call, stream);
        }
        // Into pageable memory the copy is synchronous, as CUDA's is.
        copy_dtoh(s, stream, dst, src, bytes)
    })
}

fn dtod_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
    h: CUstream,
    per_thread: bool,
) -> CUresult {
    with_session(|s| {
        let stream = stream_for(h, per_thread)?;
        let call = Call::MemcpyDtoDAsync(MemcpyDtoDAsync {
            dst: DevicePtr(dst),
            src: DevicePtr(src),
            len: to_u64(bytes)?,
        });
        submit_async(s, &call, stream)
    })
}

fn any_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
    h: CUstream,
    per_thread: bool,
) -> CUresult {
    let (dst_dev, src_dev) = match unified_sides(dst, src) {
        Ok(sides) => sides,
        Err(e) => return e,
    };
    match (dst_dev, src_dev) {
        (true, true) => dtod_async(dst, src, bytes, h, per_thread),
        (true, false) => htod_async(dst, src as *const c_void, bytes, h, per_thread),
        (false, true) => dtoh_async(dst as *mut c_void, src, bytes, h, per_thread),
        (false, false) => with_session(|s| {
            let stream = stream_for(h, per_thread)?;
            // Host to host is done now; earlier work on the stream is not waited for.
            copy_any(s, stream, dst, src, bytes)
        }),
    }
}

macro_rules! async_copy_entries {
    ($(#[$doc:meta] $name:ident, $ptsz:ident, $imp:ident, ($($arg:ident: $ty:ty),*);)*) => {$(
        #[$doc]
        ///
        /// # Safety
        /// Host pointers must address `bytes` bytes that stay valid (and, for pinned memory,
        /// unchanged or unread) until the stream reaches the copy.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty,)* bytes: usize, h: CUstream) -> CUresult {
            ffi_guard(stringify!($name), || $imp($($arg,)* bytes, h, false))
        }

        #[$doc]
        /// Per-thread default stream variant.
        ///
        /// # Safety
        /// As the legacy variant.
        #[no_mangle]
        pub unsafe extern "C" fn $ptsz($($arg: $ty,)* bytes: usize, h: CUstream) -> CUresult {
            ffi_guard(stringify!($ptsz), || $imp($($arg,)* bytes, h, true))
        }
    )*};
}

async_copy_entries! {
    /// `cuMemcpyHtoDAsync_v2`.
    cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz, htod_async, (dst: CUdeviceptr, src: *const c_void);
    /// `cuMemcpyDtoHAsync_v2`.
    cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz, dtoh_async, (dst: *mut c_void, src: CUdeviceptr);
    /// `cuMemcpyDtoDAsync_v2`.
    cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz, dtod_async, (dst: CUdeviceptr, src: CUdeviceptr);
    /// `cuMemcpyAsync` (unified addressing).
    cuMemcpyAsync, cuMemcpyAsync_ptsz, any_async, (dst: CUdeviceptr, src: CUdeviceptr);
}

fn memset(
    dst: CUdeviceptr,
    width: MemsetWidth,
    value: u32,
    count: usize,
    stream: Option<(CUstream, bool)>,
) -> CUresult {
    with_session(|s| {
        let count = to_u64(count)?;
        match stream {
            None => {
                let call = Call::Memset(Memset {
                    dst: DevicePtr(dst),
                    width,
                    value,
                    count,
                });
                let name = call.name();
                s.conn()
                    .sync(&call, |r| matches!(r, Reply::MemsetReply(_)).then_some(()))
                    .map_err(|e| to_curesult(name, &e))
            }
            Some((h, per_thread)) => {
                let stream = stream_for(h, per_thread)?;
                let call = Call::MemsetAsync(MemsetAsync {
                    dst: DevicePtr(dst),
                    width,
                    value,
                    count,
                });
                submit_async(s, &call, stream)
            }
        }
    })
}

/// `cuMemsetD8_v2` (also answers the `_ptds` row).
///
/// # Safety
/// No host pointers; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: c_uchar, count: usize) -> CUresult {
    ffi_guard("cuMemsetD8_v2", || {
        memset(dst, MemsetWidth::D8, u32::from(value), count, None)
    })
}

/// `cuMemsetD16_v2` (also answers the `_ptds` row).
///
/// # Safety
/// No host pointers; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16_v2(
    dst: CUdeviceptr,
    value: c_ushort,
    count: usize,
) -> CUresult {
    ffi_guard("cuMemsetD16_v2", || {
        memset(dst, MemsetWidth::D16, u32::from(value), count, None)
    })
}

/// `cuMemsetD32_v2` (also answers the `_ptds` row).
///
/// # Safety
/// No host pointers; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, value: c_uint, count: usize) -> CUresult {
    ffi_guard("cuMemsetD32_v2", || {
        memset(dst, MemsetWidth::D32, value, count, None)
    })
}

macro_rules! async_memset_entries {
    ($(#[$doc:meta] $name:ident, $ptsz:ident, $width:expr, $ty:ty;)*) => {$(
        #[$doc]
        ///
        /// # Safety
        /// No host pointers; `unsafe` only because it is a C entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $name(dst: CUdeviceptr, value: $ty, count: usize, h: CUstream) -> CUresult {
            ffi_guard(stringify!($name), || memset(dst, $width, u32::from(value), count, Some((h, false))))
        }

        #[$doc]
        /// Per-thread default stream variant.
        ///
        /// # Safety
        /// No host pointers; `unsafe` only because it is a C entry point.
        #[no_mangle]
        pub unsafe extern "C" fn $ptsz(dst: CUdeviceptr, value: $ty, count: usize, h: CUstream) -> CUresult {
            ffi_guard(stringify!($ptsz), || memset(dst, $width, u32::from(value), count, Some((h, true))))
        }
    )*};
}

async_memset_entries! {
    /// `cuMemsetD8Async`.
    cuMemsetD8Async, cuMemsetD8Async_ptsz, MemsetWidth::D8, c_uchar;
    /// `cuMemsetD16Async`.
    cuMemsetD16Async, cuMemsetD16Async_ptsz, MemsetWidth::D16, c_ushort;
    /// `cuMemsetD32Async`.
    cuMemsetD32Async, cuMemsetD32Async_ptsz, MemsetWidth::D32, c_uint;
}
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemAlloc", 3020) => cuMemAlloc_v2 as *const c_void,
        ("cuMemFree", 3020) => cuMemFree_v2 as *const c_void,
        ("cuMemGetInfo", 3020) => cuMemGetInfo_v2 as *const c_void,
        ("cuMemcpyHtoD", 3020 | 7000) => cuMemcpyHtoD_v2 as *const c_void,
        ("cuMemcpyDtoH", 3020 | 7000) => cuMemcpyDtoH_v2 as *const c_void,
        ("cuMemcpyDtoD", 3020 | 7000) => cuMemcpyDtoD_v2 as *const c_void,
        ("cuMemcpy", 4000 | 7000) => cuMemcpy as *const c_void,
        ("cuMemcpyHtoDAsync", 3020) => cuMemcpyHtoDAsync_v2 as *const c_void,
        ("cuMemcpyHtoDAsync", 7000) => cuMemcpyHtoDAsync_v2_ptsz as *const c_void,
        ("cuMemcpyDtoHAsync", 3020) => cuMemcpyDtoHAsync_v2 as *const c_void,
        ("cuMemcpyDtoHAsync", 7000) => cuMemcpyDtoHAsync_v2_ptsz as *const c_void,
        ("cuMemcpyDtoDAsync", 3020) => cuMemcpyDtoDAsync_v2 as *const c_void,
        ("cuMemcpyDtoDAsync", 7000) => cuMemcpyDtoDAsync_v2_ptsz as *const c_void,
        ("cuMemcpyAsync", 4000) => cuMemcpyAsync as *const c_void,
        ("cuMemcpyAsync", 7000) => cuMemcpyAsync_ptsz as *const c_void,
        ("cuMemsetD8", 3020 | 7000) => cuMemsetD8_v2 as *const c_void,
        ("cuMemsetD16", 3020 | 7000) => cuMemsetD16_v2 as *const c_void,
        ("cuMemsetD32", 3020 | 7000) => cuMemsetD32_v2 as *const c_void,
        ("cuMemsetD8Async", 3020) => cuMemsetD8Async as *const c_void,
        ("cuMemsetD8Async", 7000) => cuMemsetD8Async_ptsz as *const c_void,
        ("cuMemsetD16Async", 3020) => cuMemsetD16Async as *const c_void,
        ("cuMemsetD16Async", 7000) => cuMemsetD16Async_ptsz as *const c_void,
        ("cuMemsetD32Async", 3020) => cuMemsetD32Async as *const c_void,
        ("cuMemsetD32Async", 7000) => cuMemsetD32Async_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_resolve_device_then_host() {
        let base = 0x5eed_0000_0000;
        ranges::device_insert(base, 1 << 20);
        assert_eq!(side_of(base + 10, 4, true), Side::Device);
        assert_eq!(side_of(base + (1 << 20), 4, true), Side::Host);
        let p = pinned::alloc(None, 4096, 0).unwrap();
        // Local pinned memory (no arena) is host memory for copies.
        assert_eq!(side_of(p as u64, 4096, true), Side::Host);
        pinned::free(None, p).unwrap();
        ranges::device_remove(base);
        assert_eq!(side_of(base + 10, 4, false), Side::Host);
    }

    #[test]
    fn unified_sides_refuse_ambiguous_addresses() {
        // A reserved device range (the emulated window) and a device range that is host
        // memory here (a live heap buffer).
        let dev = 0x1f00_0000_0000;
        ranges::device_insert(dev, 4096);
        let host = vec![0u8; 1 << 18].into_boxed_slice();
        let ambiguous = host.as_ptr() as u64 + 4096;
        ranges::device_insert(ambiguous, 512);
        let plain = host.as_ptr() as u64;
        assert_eq!(unified_sides(dev, plain), Ok((true, false)));
        assert_eq!(unified_sides(plain, dev + 8), Ok((false, true)));
        assert_eq!(
            unified_sides(ambiguous + 8, plain),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(unified_sides(dev, ambiguous), Err(CUDA_ERROR_INVALID_VALUE));
        // A reserved device page is never viewed as host memory (it would fault); the
        // conflicted range's bytes are real host memory and stay viewable.
        assert_eq!(
            host_bytes(dev as *const c_void, 16).map(<[u8]>::len),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert!(host_bytes_mut(dev as *mut c_void, 1).is_err());
        assert_eq!(
            host_bytes(ambiguous as *const c_void, 16).map(<[u8]>::len),
            Ok(16)
        );
        ranges::device_remove(dev);
        ranges::device_remove(ambiguous);
        assert_eq!(unified_sides(dev, ambiguous), Ok((false, false)));
    }

    #[test]
    fn calls_before_init_are_not_initialized() {
        let mut p: CUdeviceptr = 0;
        // SAFETY: a valid output pointer; no session exists in unit tests.
        let r = unsafe { cuMemAlloc_v2(&mut p, 16) };
        assert_eq!(r, crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
    }
}
