//! Remote memory calls: allocation, info, copies and memset, each one or more synchronous
//! round trips on the session's connection.
//!
//! Copies travel inline in the call (H2D) or reply (D2H), split into chunks of at most
//! [`COPY_CHUNK_BYTES`] so that no single frame comes near the protocol's body bound and each
//! round trip stays short. Zero-copy arena payloads and trailers are a later slice.

use std::ffi::{c_uchar, c_void};

use rgpu_proto::{
    Call, DevicePtr, MemAlloc, MemFree, MemGetInfo, MemcpyDtoD, MemcpyDtoH, MemcpyHtoD, Memset,
    MemsetWidth, Payload, Reply,
};

use crate::cuda_types::{CUdeviceptr, CUresult, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::host_mem::{host_bytes, host_bytes_mut};
use crate::remote::session::{to_curesult, Session};

/// Largest slice of a copy sent in one call (and asked for in one reply).
pub const COPY_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!(COPY_CHUNK_BYTES as u64 <= rgpu_proto::MAX_INLINE_BYTES as u64);

fn to_u64(n: usize) -> Result<u64, CUresult> {
    u64::try_from(n).map_err(|_| CUDA_ERROR_INVALID_VALUE)
}

/// Device address `base + offset`, refusing wrap-around.
fn offset(base: CUdeviceptr, offset: usize) -> Result<DevicePtr, CUresult> {
    base.checked_add(to_u64(offset)?)
        .map(DevicePtr)
        .ok_or(CUDA_ERROR_INVALID_VALUE)
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
            s.conn()
                .sync(
                    &Call::MemFree(MemFree {
                        ptr: DevicePtr(dptr),
                    }),
                    |r| matches!(r, Reply::MemFreeReply(_)).then_some(()),
                )
                .map_err(|e| to_curesult("cuMemFree_v2", &e))
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

fn h2d(s: &Session, dst: CUdeviceptr, src: &[u8]) -> Result<(), CUresult> {
    let mut conn = s.conn();
    for (i, chunk) in src.chunks(COPY_CHUNK_BYTES).enumerate() {
        let call = Call::MemcpyHtoD(MemcpyHtoD {
            dst: offset(dst, i * COPY_CHUNK_BYTES)?,
            src: Payload::Inline(chunk),
        });
        conn.sync(&call, |r| {
            matches!(r, Reply::MemcpyHtoDReply(_)).then_some(())
        })
        .map_err(|e| to_curesult("cuMemcpyHtoD_v2", &e))?;
    }
    Ok(())
}

fn d2h(s: &Session, dst: &mut [u8], src: CUdeviceptr) -> Result<(), CUresult> {
    let mut conn = s.conn();
    for (i, chunk) in dst.chunks_mut(COPY_CHUNK_BYTES).enumerate() {
        let call = Call::MemcpyDtoH(MemcpyDtoH {
            src: offset(src, i * COPY_CHUNK_BYTES)?,
            len: to_u64(chunk.len())?,
            dst: rgpu_proto::Dest::Inline,
        });
        conn.sync(&call, |r| match r {
            // A reply of the wrong length is a peer error, reported as an unexpected reply.
            Reply::MemcpyDtoHReply(d) => match d.data {
                Payload::Inline(bytes) if bytes.len() == chunk.len() => {
                    chunk.copy_from_slice(bytes);
                    Some(())
                }
                _ => None,
            },
            _ => None,
        })
        .map_err(|e| to_curesult("cuMemcpyDtoH_v2", &e))?;
    }
    Ok(())
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
        with_session(|s| h2d(s, dst, host_bytes(src, bytes)?))
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
        with_session(|s| d2h(s, host_bytes_mut(dst, bytes)?, src))
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
        with_session(|s| {
            let call = Call::MemcpyDtoD(MemcpyDtoD {
                dst: DevicePtr(dst),
                src: DevicePtr(src),
                len: to_u64(bytes)?,
            });
            s.conn()
                .sync(&call, |r| {
                    matches!(r, Reply::MemcpyDtoDReply(_)).then_some(())
                })
                .map_err(|e| to_curesult("cuMemcpyDtoD_v2", &e))
        })
    })
}

/// `cuMemsetD8_v2`.
///
/// # Safety
/// No host pointers; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, value: c_uchar, count: usize) -> CUresult {
    ffi_guard("cuMemsetD8_v2", || {
        with_session(|s| {
            let call = Call::Memset(Memset {
                dst: DevicePtr(dst),
                width: MemsetWidth::D8,
                value: u32::from(value),
                count: to_u64(count)?,
            });
            s.conn()
                .sync(&call, |r| matches!(r, Reply::MemsetReply(_)).then_some(()))
                .map_err(|e| to_curesult("cuMemsetD8_v2", &e))
        })
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemAlloc", 3020) => cuMemAlloc_v2 as *const c_void,
        ("cuMemFree", 3020) => cuMemFree_v2 as *const c_void,
        ("cuMemGetInfo", 3020) => cuMemGetInfo_v2 as *const c_void,
        ("cuMemcpyHtoD", 3020 | 7000) => cuMemcpyHtoD_v2 as *const c_void,
        ("cuMemcpyDtoH", 3020 | 7000) => cuMemcpyDtoH_v2 as *const c_void,
        ("cuMemcpyDtoD", 3020 | 7000) => cuMemcpyDtoD_v2 as *const c_void,
        ("cuMemsetD8", 3020 | 7000) => cuMemsetD8_v2 as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_offsets_refuse_wraparound() {
        assert_eq!(offset(0x1000, 16), Ok(DevicePtr(0x1010)));
        assert_eq!(offset(u64::MAX, 1), Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn calls_before_init_are_not_initialized() {
        let mut p: CUdeviceptr = 0;
        // SAFETY: a valid output pointer; no session exists in unit tests.
        let r = unsafe { cuMemAlloc_v2(&mut p, 16) };
        assert_eq!(r, crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
    }
}
