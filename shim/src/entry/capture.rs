//! Stream-capture queries, answered locally: no stream is ever capturing.
//!
//! Exists because frameworks ask on hot paths (PyTorch checks `cudaStreamIsCapturing` before
//! many operations) even when they never capture. The shim does not support stream capture or
//! graphs: `cuStreamBeginCapture` keeps its refusing stub (`CUDA_ERROR_NOT_SUPPORTED`), so no
//! capture can be in progress and "not capturing" is the true answer, given without a round
//! trip. The stream handle is still checked (`CUDA_ERROR_INVALID_HANDLE` if unknown).

use std::ffi::{c_int, c_void};

use crate::cuda_types::{CUresult, CUstream, CUDA_SUCCESS};
use crate::driver_api::write_out;
use crate::entry::stream::{classify, handle_status, StreamKind};
use crate::ffi_guard::ffi_guard;
use crate::remote::session;

/// `CU_STREAM_CAPTURE_STATUS_NONE`.
pub const CU_STREAM_CAPTURE_STATUS_NONE: c_int = 0;

/// Checks `h` names a default stream or a live created stream; writes "not capturing".
fn not_capturing(h: CUstream, per_thread: bool, status: *mut c_int) -> CUresult {
    let r = session::initialized().and_then(|s| {
        if let StreamKind::Created(key) = classify(h, per_thread) {
            s.handles().stream(key).map_err(handle_status)?;
        }
        write_out(status, CU_STREAM_CAPTURE_STATUS_NONE)
    });
    match r {
        Ok(()) => CUDA_SUCCESS,
        Err(e) => e,
    }
}

/// `cuStreamIsCapturing`: local, always `CU_STREAM_CAPTURE_STATUS_NONE`.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(h_stream: CUstream, status: *mut c_int) -> CUresult {
    ffi_guard("cuStreamIsCapturing", || {
        not_capturing(h_stream, false, status)
    })
}

/// `cuStreamIsCapturing_ptsz`.
///
/// # Safety
/// As [`cuStreamIsCapturing`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing_ptsz(
    h_stream: CUstream,
    status: *mut c_int,
) -> CUresult {
    ffi_guard("cuStreamIsCapturing_ptsz", || {
        not_capturing(h_stream, true, status)
    })
}

/// Opaque out-pointer types of the capture-info forms; only defined while capturing, so the
/// shim never writes them.
type IdOut = *mut u64;
type GraphOut = *mut *mut c_void;
type DepsOut = *mut *const *mut c_void;
type EdgesOut = *mut *const c_void;
type CountOut = *mut usize;

/// `cuStreamGetCaptureInfo` (10.1 form): local, not capturing; `id` is left alone.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo", || {
        not_capturing(h_stream, false, status)
    })
}

/// `cuStreamGetCaptureInfo_ptsz` (10.1 form).
///
/// # Safety
/// As [`cuStreamGetCaptureInfo`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_ptsz(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_ptsz", || {
        not_capturing(h_stream, true, status)
    })
}

/// `cuStreamGetCaptureInfo_v2` (11.3): local, not capturing; the other outputs are left alone.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
    _graph: GraphOut,
    _deps: DepsOut,
    _count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v2", || {
        not_capturing(h_stream, false, status)
    })
}

/// `cuStreamGetCaptureInfo_v2_ptsz`.
///
/// # Safety
/// As [`cuStreamGetCaptureInfo_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2_ptsz(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
    _graph: GraphOut,
    _deps: DepsOut,
    _count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v2_ptsz", || {
        not_capturing(h_stream, true, status)
    })
}

/// `cuStreamGetCaptureInfo_v3` (12.3): local, not capturing; the other outputs are left alone.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
    _graph: GraphOut,
    _deps: DepsOut,
    _edges: EdgesOut,
    _count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v3", || {
        not_capturing(h_stream, false, status)
    })
}

/// `cuStreamGetCaptureInfo_v3_ptsz`.
///
/// # Safety
/// As [`cuStreamGetCaptureInfo_v3`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3_ptsz(
    h_stream: CUstream,
    status: *mut c_int,
    _id: IdOut,
    _graph: GraphOut,
    _deps: DepsOut,
    _edges: EdgesOut,
    _count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v3_ptsz", || {
        not_capturing(h_stream, true, status)
    })
}

/// The shim's function for a legacy-stream row, if this module has it.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamIsCapturing", 10000) => cuStreamIsCapturing as *const c_void,
        ("cuStreamGetCaptureInfo", 10010) => cuStreamGetCaptureInfo as *const c_void,
        ("cuStreamGetCaptureInfo", 11030) => cuStreamGetCaptureInfo_v2 as *const c_void,
        ("cuStreamGetCaptureInfo", 12030) => cuStreamGetCaptureInfo_v3 as *const c_void,
        _ => return None,
    })
}

/// The shim's function for a per-thread-default-stream row, if this module has it.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamIsCapturing", 10000) => cuStreamIsCapturing_ptsz as *const c_void,
        ("cuStreamGetCaptureInfo", 10010) => cuStreamGetCaptureInfo_ptsz as *const c_void,
        ("cuStreamGetCaptureInfo", 11030) => cuStreamGetCaptureInfo_v2_ptsz as *const c_void,
        ("cuStreamGetCaptureInfo", 12030) => cuStreamGetCaptureInfo_v3_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_before_init() {
        let mut status = 7;
        // SAFETY: a valid out-pointer.
        let r = unsafe { cuStreamIsCapturing(std::ptr::null_mut(), &mut status) };
        assert_eq!(r, crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!(status, 7, "nothing written");
    }

    #[test]
    fn every_capture_info_form_is_mapped() {
        for v in [10010, 11030, 12030] {
            assert!(implemented("cuStreamGetCaptureInfo", v).is_some());
            assert!(implemented_per_thread("cuStreamGetCaptureInfo", v).is_some());
        }
        assert!(implemented("cuStreamBeginCapture", 10010).is_none());
    }
}
