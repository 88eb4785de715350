//! Stream-capture queries, answered locally from the capture state [`super::graph`] keeps.
//!
//! Exists because frameworks ask on hot paths (PyTorch checks `cudaStreamIsCapturing` before
//! many operations) even when they never capture. A stream is "active" from its
//! `cuStreamBeginCapture` until its `cuStreamEndCapture`, answered without a round trip. A
//! capture the worker invalidated still reads "active" until it ends (the shim learns of the
//! invalidation from the failing call itself and from the end, 901). The capture id is
//! reported; the graph being built, its dependencies and edges are not exposed (null, 0).
//! The stream handle is checked (`CUDA_ERROR_INVALID_HANDLE` if unknown).

use std::ffi::{c_int, c_void};

use crate::cuda_types::{CUresult, CUstream, CUDA_SUCCESS};
use crate::driver_api::write_out;
use crate::entry::graph::capture_of;
use crate::entry::stream::{classify, handle_status, stream_key_per_thread, StreamKind};
use crate::ffi_guard::ffi_guard;
use crate::remote::session;

/// `CU_STREAM_CAPTURE_STATUS_NONE`.
pub const CU_STREAM_CAPTURE_STATUS_NONE: c_int = 0;
/// `CU_STREAM_CAPTURE_STATUS_ACTIVE`.
pub const CU_STREAM_CAPTURE_STATUS_ACTIVE: c_int = 1;

/// Checks `h` names a default stream or a live created stream; writes its capture status and,
/// when capturing and `id` is not null, the capture id.
fn status_of(h: CUstream, per_thread: bool, status: *mut c_int, id: IdOut) -> CUresult {
    let r = session::initialized().and_then(|s| {
        let key = match classify(h, per_thread) {
            // The legacy stream never captures.
            StreamKind::Legacy => None,
            StreamKind::PerThread => Some(stream_key_per_thread(std::ptr::null_mut())?),
            StreamKind::Created(key) => {
                s.handles().stream(key).map_err(handle_status)?;
                Some(key)
            }
        };
        match key.and_then(capture_of) {
            Some(c) => {
                write_out(status, CU_STREAM_CAPTURE_STATUS_ACTIVE)?;
                if !id.is_null() {
                    write_out(id, c.id)?;
                }
                Ok(())
            }
            None => write_out(status, CU_STREAM_CAPTURE_STATUS_NONE),
        }
    });
    match r {
        Ok(()) => CUDA_SUCCESS,
        Err(e) => e,
    }
}

/// [`status_of`] for the forms with graph and dependency outputs: those are written as "none"
/// (null graph and dependencies, zero count) when not null.
fn status_with_deps(
    h: CUstream,
    per_thread: bool,
    status: *mut c_int,
    id: IdOut,
    (graph, deps, edges, count): (GraphOut, DepsOut, EdgesOut, CountOut),
) -> CUresult {
    let r = status_of(h, per_thread, status, id);
    if r != CUDA_SUCCESS {
        return r;
    }
    let outs = (|| {
        if !graph.is_null() {
            write_out(graph, std::ptr::null_mut())?;
        }
        if !deps.is_null() {
            write_out(deps, std::ptr::null())?;
        }
        if !edges.is_null() {
            write_out(edges, std::ptr::null())?;
        }
        if !count.is_null() {
            write_out(count, 0)?;
        }
        Ok(())
    })();
    match outs {
        Ok(()) => CUDA_SUCCESS,
        Err(e) => e,
    }
}

/// `cuStreamIsCapturing`: local.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(h_stream: CUstream, status: *mut c_int) -> CUresult {
    ffi_guard("cuStreamIsCapturing", || {
        status_of(h_stream, false, status, std::ptr::null_mut())
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
        status_of(h_stream, true, status, std::ptr::null_mut())
    })
}

/// Opaque out-pointer types of the capture-info forms.
type IdOut = *mut u64;
type GraphOut = *mut *mut c_void;
type DepsOut = *mut *const *mut c_void;
type EdgesOut = *mut *const c_void;
type CountOut = *mut usize;

/// `cuStreamGetCaptureInfo` (10.1 form): local; `id` is written while capturing.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo(
    h_stream: CUstream,
    status: *mut c_int,
    id: IdOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo", || {
        status_of(h_stream, false, status, id)
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
    id: IdOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_ptsz", || {
        status_of(h_stream, true, status, id)
    })
}

/// `cuStreamGetCaptureInfo_v2` (11.3): local; the graph and dependencies are reported as none.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    h_stream: CUstream,
    status: *mut c_int,
    id: IdOut,
    graph: GraphOut,
    deps: DepsOut,
    count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v2", || {
        let edges = std::ptr::null_mut();
        status_with_deps(h_stream, false, status, id, (graph, deps, edges, count))
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
    id: IdOut,
    graph: GraphOut,
    deps: DepsOut,
    count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v2_ptsz", || {
        let edges = std::ptr::null_mut();
        status_with_deps(h_stream, true, status, id, (graph, deps, edges, count))
    })
}

/// `cuStreamGetCaptureInfo_v3` (12.3): local; the graph, dependencies and edges are reported as none.
///
/// # Safety
/// `status` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3(
    h_stream: CUstream,
    status: *mut c_int,
    id: IdOut,
    graph: GraphOut,
    deps: DepsOut,
    edges: EdgesOut,
    count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v3", || {
        status_with_deps(h_stream, false, status, id, (graph, deps, edges, count))
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
    id: IdOut,
    graph: GraphOut,
    deps: DepsOut,
    edges: EdgesOut,
    count: CountOut,
) -> CUresult {
    ffi_guard("cuStreamGetCaptureInfo_v3_ptsz", || {
        status_with_deps(h_stream, true, status, id, (graph, deps, edges, count))
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
        assert!(
            implemented("cuStreamBeginCapture", 10010).is_none(),
            "graph.rs has it"
        );
    }
}
