//! Stream queries from CUDA 12.x that the 13.x runtimes ask `cuGetProcAddress` for:
//! `cuStreamGetId` (12.0), `cuStreamGetCtx_v2` (12.5) and `cuStreamGetDevice` (12.8), each with
//! its `_ptsz` form. All **local**: answered from the shim's stream handles (see
//! [`super::stream`]), no round trip, except that naming the per-thread default stream for
//! the first time creates it (an async call), as every stream call does.
//!
//! Ids. `cuStreamGetId` promises an id unique for the life of the program (cuda.h). A stream's
//! id here is its ordering key: created streams (per-thread default streams included) have
//! handles that are never reused in a process (`remote::handles`), and the legacy default
//! stream has key 0, which no created stream has. What ids NVIDIA's driver gives its special
//! streams is not documented; only the uniqueness is promised.

use std::ffi::c_void;

use rgpu_proto::StreamHandle;

use super::stream::{classify, stream_key, stream_key_per_thread, StreamKind};
use crate::context;
use crate::cuda_types::{CUcontext, CUdevice, CUresult, CUstream};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;

/// The stream `h` names under legacy (`per_thread` false) or `_ptsz` semantics, checked: a
/// special stream needs a current context (cuda.h: "the API will operate on the context
/// current to the calling thread"), a created one must be live.
fn checked_key(h: CUstream, per_thread: bool) -> Result<StreamHandle, CUresult> {
    if !matches!(classify(h, per_thread), StreamKind::Created(_)) {
        context::resolve(std::ptr::null_mut())?;
    }
    if per_thread {
        stream_key_per_thread(h)
    } else {
        stream_key(h)
    }
}

fn get_id(h: CUstream, per_thread: bool, id: *mut u64) -> CUresult {
    with_session(|_| write_out(id, checked_key(h, per_thread)?.0))
}

fn get_ctx_v2(
    h: CUstream,
    per_thread: bool,
    pctx: *mut CUcontext,
    pgreen: *mut *mut c_void,
) -> CUresult {
    with_session(|_| {
        checked_key(h, per_thread)?;
        write_out(pctx, context::primary())?;
        // The shim has no green contexts (`cuGreenCtx*` are refusing stubs): NULL, as for a
        // stream of a regular context.
        if !pgreen.is_null() {
            write_out(pgreen, std::ptr::null_mut())?;
        }
        Ok(())
    })
}

fn get_device(h: CUstream, per_thread: bool, device: *mut CUdevice) -> CUresult {
    with_session(|_| {
        checked_key(h, per_thread)?;
        // Every stream belongs to the primary context of device 0, the one granted device.
        write_out(device, 0)
    })
}

/// `cuStreamGetId`: the stream's unique id (its ordering key; see the module doc).
///
/// # Safety
/// `stream_id` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetId(h_stream: CUstream, stream_id: *mut u64) -> CUresult {
    ffi_guard("cuStreamGetId", || get_id(h_stream, false, stream_id))
}

/// `cuStreamGetId_ptsz`: as [`cuStreamGetId`]; null is the per-thread default stream.
///
/// # Safety
/// As [`cuStreamGetId`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetId_ptsz(h_stream: CUstream, stream_id: *mut u64) -> CUresult {
    ffi_guard("cuStreamGetId_ptsz", || get_id(h_stream, true, stream_id))
}

/// `cuStreamGetCtx_v2`: the primary context in `pctx`, NULL in `pgreen_ctx` (no green
/// contexts); `CUDA_ERROR_INVALID_CONTEXT` for a special stream with no current context.
///
/// # Safety
/// `pctx` must be null or writable; `pgreen_ctx` null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx_v2(
    h_stream: CUstream,
    pctx: *mut CUcontext,
    pgreen_ctx: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuStreamGetCtx_v2", || {
        get_ctx_v2(h_stream, false, pctx, pgreen_ctx)
    })
}

/// `cuStreamGetCtx_v2_ptsz`: as [`cuStreamGetCtx_v2`]; null is the per-thread default stream.
///
/// # Safety
/// As [`cuStreamGetCtx_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx_v2_ptsz(
    h_stream: CUstream,
    pctx: *mut CUcontext,
    pgreen_ctx: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuStreamGetCtx_v2_ptsz", || {
        get_ctx_v2(h_stream, true, pctx, pgreen_ctx)
    })
}

/// `cuStreamGetDevice`: device 0 for every live stream.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetDevice(h_stream: CUstream, device: *mut CUdevice) -> CUresult {
    ffi_guard("cuStreamGetDevice", || get_device(h_stream, false, device))
}

/// `cuStreamGetDevice_ptsz`: as [`cuStreamGetDevice`]; null is the per-thread default stream.
///
/// # Safety
/// As [`cuStreamGetDevice`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetDevice_ptsz(
    h_stream: CUstream,
    device: *mut CUdevice,
) -> CUresult {
    ffi_guard("cuStreamGetDevice_ptsz", || {
        get_device(h_stream, true, device)
    })
}

/// The shim's function for a legacy-stream row (`name`, `version`), if this module has it.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamGetId", 12000) => cuStreamGetId as *const c_void,
        ("cuStreamGetCtx", 12050) => cuStreamGetCtx_v2 as *const c_void,
        ("cuStreamGetDevice", 12080) => cuStreamGetDevice as *const c_void,
        _ => return None,
    })
}

/// The shim's function for a per-thread-default-stream row, if this module has it.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamGetId", 12000) => cuStreamGetId_ptsz as *const c_void,
        ("cuStreamGetCtx", 12050) => cuStreamGetCtx_v2_ptsz as *const c_void,
        ("cuStreamGetDevice", 12080) => cuStreamGetDevice_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED;

    #[test]
    fn rows_map_to_distinct_legacy_and_per_thread_functions() {
        for (name, version) in [
            ("cuStreamGetId", 12000),
            ("cuStreamGetCtx", 12050),
            ("cuStreamGetDevice", 12080),
        ] {
            let legacy = implemented(name, version).expect("legacy row");
            let per_thread = implemented_per_thread(name, version).expect("ptsz row");
            assert_ne!(legacy, per_thread, "{name}");
        }
        // The 9.2 `cuStreamGetCtx` stays with `entry::stream`.
        assert!(implemented("cuStreamGetCtx", 9020).is_none());
    }

    #[test]
    fn queries_before_init_are_not_initialized_and_write_nothing() {
        let mut id = 5u64;
        let mut dev: CUdevice = 7;
        let mut ctx: CUcontext = std::ptr::null_mut();
        // SAFETY: a valid output pointer; no session exists in unit tests.
        let r = unsafe { cuStreamGetId(std::ptr::null_mut(), &mut id) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        // SAFETY: as above.
        let r = unsafe { cuStreamGetDevice_ptsz(std::ptr::null_mut(), &mut dev) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        // SAFETY: as above; a null green-context pointer is allowed.
        let r = unsafe { cuStreamGetCtx_v2(std::ptr::null_mut(), &mut ctx, std::ptr::null_mut()) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!((id, dev), (5, 7));
        assert!(ctx.is_null());
    }
}
