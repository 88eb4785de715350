//! `cuMemcpy2D_v2`, `cuMemcpy2DUnaligned_v2` and `cuMemcpy2DAsync_v2`: pitched copies between
//! host and device memory, built from the one-dimensional copies of [`super::memory`].
//!
//! Exists because the runtime's `cudaMemcpy2D*` land here. The protocol has no pitched copy,
//! so a copy whose rows are not contiguous on both sides is done row by row (one call per row,
//! fine for the small matrices these copies usually move); contiguous rows are one copy.
//! Arrays (`CU_MEMORYTYPE_ARRAY`) are not supported. The async form runs synchronously, in
//! order on its stream.

use std::ffi::c_void;

use rgpu_proto::StreamHandle;

use super::memory::{copy_dtod, copy_dtoh, copy_htod};
use super::{stream, with_session};
use crate::cuda_types::{
    CUdeviceptr, CUresult, CUstream, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED,
};
use crate::ffi_guard::ffi_guard;
use crate::host_mem::{host_bytes, host_bytes_mut};
use crate::remote::ranges;
use crate::remote::session::Session;

/// `CUDA_MEMCPY2D` (`cuda.h`; 64-bit layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaMemcpy2d {
    /// Source X in bytes.
    pub src_x_in_bytes: usize,
    /// Source row.
    pub src_y: usize,
    /// Source `CUmemorytype`.
    pub src_memory_type: u32,
    /// Source host pointer.
    pub src_host: *const c_void,
    /// Source device pointer.
    pub src_device: CUdeviceptr,
    /// Source array (unsupported).
    pub src_array: *mut c_void,
    /// Source pitch in bytes.
    pub src_pitch: usize,
    /// Destination X in bytes.
    pub dst_x_in_bytes: usize,
    /// Destination row.
    pub dst_y: usize,
    /// Destination `CUmemorytype`.
    pub dst_memory_type: u32,
    /// Destination host pointer.
    pub dst_host: *mut c_void,
    /// Destination device pointer.
    pub dst_device: CUdeviceptr,
    /// Destination array (unsupported).
    pub dst_array: *mut c_void,
    /// Destination pitch in bytes.
    pub dst_pitch: usize,
    /// Bytes per row.
    pub width_in_bytes: usize,
    /// Rows.
    pub height: usize,
}
const _: () = assert!(std::mem::size_of::<CudaMemcpy2d>() == 128);

const MEMORYTYPE_HOST: u32 = 1;
const MEMORYTYPE_DEVICE: u32 = 2;
const MEMORYTYPE_ARRAY: u32 = 3;
const MEMORYTYPE_UNIFIED: u32 = 4;

/// One side of a 2D copy, resolved to an address and whether it is device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    device: bool,
    /// Address of the first byte copied.
    addr: u64,
    pitch: usize,
}

fn end(
    kind: u32,
    host: u64,
    device: u64,
    x: usize,
    y: usize,
    pitch: usize,
) -> Result<End, CUresult> {
    let (is_dev, base) = match kind {
        MEMORYTYPE_HOST => (false, host),
        MEMORYTYPE_DEVICE => (true, device),
        // Unified: the device pointer field, classified by the known device ranges.
        MEMORYTYPE_UNIFIED => (
            ranges::is_device(device).map_err(|_| CUDA_ERROR_INVALID_VALUE)?,
            device,
        ),
        MEMORYTYPE_ARRAY => return Err(CUDA_ERROR_NOT_SUPPORTED),
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    let offset = y
        .checked_mul(pitch)
        .and_then(|o| o.checked_add(x))
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let addr = base
        .checked_add(offset as u64)
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    Ok(End {
        device: is_dev,
        addr,
        pitch,
    })
}

/// The rows of a 2D copy as (source offset, destination offset, length) of whole runs:
/// one run when both sides are contiguous, else one per row.
fn runs(
    width: usize,
    height: usize,
    src_pitch: usize,
    dst_pitch: usize,
) -> Result<Vec<(usize, usize, usize)>, CUresult> {
    if width == 0 || height == 0 {
        return Ok(Vec::new());
    }
    if (height > 1 && (src_pitch < width || dst_pitch < width))
        || width.checked_mul(height).is_none()
    {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if src_pitch == width && dst_pitch == width {
        return Ok(vec![(0, 0, width * height)]);
    }
    (0..height)
        .map(|r| {
            let s = r.checked_mul(src_pitch).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            let d = r.checked_mul(dst_pitch).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            Ok((s, d, width))
        })
        .collect()
}

fn copy_run(
    s: &Session,
    st: StreamHandle,
    src: u64,
    dst: u64,
    n: usize,
    sd: bool,
    dd: bool,
) -> Result<(), CUresult> {
    match (sd, dd) {
        (true, true) => copy_dtod(s, st, dst, src, n),
        (false, true) => copy_htod(s, st, dst, src as *const c_void, n),
        (true, false) => copy_dtoh(s, st, dst as *mut c_void, src, n),
        (false, false) => {
            let from = host_bytes(src as *const c_void, n)?;
            host_bytes_mut(dst as *mut c_void, n)?.copy_from_slice(from);
            Ok(())
        }
    }
}

fn memcpy2d(p: *const CudaMemcpy2d, stream: Option<(CUstream, bool)>) -> CUresult {
    with_session(|s| {
        if p.is_null() || !p.is_aligned() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null and aligned; the caller passes a CUDA_MEMCPY2D (driver contract).
        let c = unsafe { p.read() };
        let st = match stream {
            None => StreamHandle(0),
            Some((h, false)) => stream::stream_key(h)?,
            Some((h, true)) => stream::stream_key_per_thread(h)?,
        };
        let src = end(
            c.src_memory_type,
            c.src_host as u64,
            c.src_device,
            c.src_x_in_bytes,
            c.src_y,
            c.src_pitch,
        )?;
        let dst = end(
            c.dst_memory_type,
            c.dst_host as u64,
            c.dst_device,
            c.dst_x_in_bytes,
            c.dst_y,
            c.dst_pitch,
        )?;
        for (so, d_o, n) in runs(c.width_in_bytes, c.height, src.pitch, dst.pitch)? {
            let sa = src
                .addr
                .checked_add(so as u64)
                .ok_or(CUDA_ERROR_INVALID_VALUE)?;
            let da = dst
                .addr
                .checked_add(d_o as u64)
                .ok_or(CUDA_ERROR_INVALID_VALUE)?;
            copy_run(s, st, sa, da, n, src.device, dst.device)?;
        }
        Ok(())
    })
}

/// `cuMemcpy2D_v2`.
///
/// # Safety
/// `p` must be null or address a `CUDA_MEMCPY2D` whose host ranges are valid.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const CudaMemcpy2d) -> CUresult {
    ffi_guard("cuMemcpy2D_v2", || memcpy2d(p, None))
}

/// `cuMemcpy2DUnaligned_v2`: the same (no alignment rules apply to these copies here).
///
/// # Safety
/// As [`cuMemcpy2D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const CudaMemcpy2d) -> CUresult {
    ffi_guard("cuMemcpy2DUnaligned_v2", || memcpy2d(p, None))
}

/// `cuMemcpy2DAsync_v2`: done synchronously, in order on `h`.
///
/// # Safety
/// As [`cuMemcpy2D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const CudaMemcpy2d, h: CUstream) -> CUresult {
    ffi_guard("cuMemcpy2DAsync_v2", || memcpy2d(p, Some((h, false))))
}

/// `cuMemcpy2DAsync_v2_ptsz`.
///
/// # Safety
/// As [`cuMemcpy2D_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2_ptsz(p: *const CudaMemcpy2d, h: CUstream) -> CUresult {
    ffi_guard("cuMemcpy2DAsync_v2_ptsz", || memcpy2d(p, Some((h, true))))
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemcpy2D", 3020 | 7000) => cuMemcpy2D_v2 as *const c_void,
        ("cuMemcpy2DUnaligned", 3020 | 7000) => cuMemcpy2DUnaligned_v2 as *const c_void,
        ("cuMemcpy2DAsync", 3020) => cuMemcpy2DAsync_v2 as *const c_void,
        ("cuMemcpy2DAsync", 7000) => cuMemcpy2DAsync_v2_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_contiguous_rows_and_split_pitched_ones() {
        assert_eq!(runs(16, 4, 16, 16), Ok(vec![(0, 0, 64)]));
        assert_eq!(
            runs(16, 3, 32, 16),
            Ok(vec![(0, 0, 16), (32, 16, 16), (64, 32, 16)])
        );
        assert_eq!(runs(0, 3, 32, 16), Ok(vec![]));
        assert_eq!(runs(16, 2, 8, 16), Err(CUDA_ERROR_INVALID_VALUE));
        // One row needs no pitch.
        assert_eq!(runs(16, 1, 0, 0), Ok(vec![(0, 0, 16)]));
    }

    #[test]
    fn ends_resolve_offsets_and_refuse_arrays() {
        let e = end(MEMORYTYPE_HOST, 0x1000, 0, 4, 2, 64).unwrap();
        assert_eq!(
            e,
            End {
                device: false,
                addr: 0x1000 + 132,
                pitch: 64
            }
        );
        assert!(end(MEMORYTYPE_DEVICE, 0, 0x2000, 0, 0, 8).unwrap().device);
        assert_eq!(
            end(MEMORYTYPE_ARRAY, 0, 0, 0, 0, 0),
            Err(CUDA_ERROR_NOT_SUPPORTED)
        );
        assert_eq!(end(9, 0, 0, 0, 0, 0), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            end(MEMORYTYPE_HOST, u64::MAX, 0, 1, 0, 0),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
    }
}
