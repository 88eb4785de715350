//! Context entry points (`cuDevicePrimaryCtx*`, `cuCtx*`), answered locally from
//! [`crate::context`]; only `cuCtxSynchronize` goes to the server.

use std::ffi::{c_int, c_uint, c_void};

use crate::context;
use crate::cuda_types::{CUcontext, CUdevice, CUresult};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;

/// The API version `cuCtxGetApiVersion` reports (contexts made by the 3.2+ API).
pub const CTX_API_VERSION: c_uint = 3020;

/// `cuDevicePrimaryCtxRetain`.
///
/// # Safety
/// `pctx` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    ffi_guard("cuDevicePrimaryCtxRetain", || {
        with_session(|_| {
            super::device_count_check(dev)?;
            write_out(pctx, context::primary())?;
            context::retain();
            Ok(())
        })
    })
}

/// `cuDevicePrimaryCtxRelease` and `_v2`.
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    ffi_guard("cuDevicePrimaryCtxRelease", || {
        with_session(|_| {
            super::device_count_check(dev)?;
            context::release()
        })
    })
}

/// `cuDevicePrimaryCtxReset` and `_v2`: drops every retain. Device memory stays allocated on
/// the server (the server frees it when the connection ends).
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult {
    ffi_guard("cuDevicePrimaryCtxReset", || {
        with_session(|_| {
            super::device_count_check(dev)?;
            context::reset();
            Ok(())
        })
    })
}

/// `cuDevicePrimaryCtxGetState`.
///
/// # Safety
/// `flags` and `active` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    dev: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    ffi_guard("cuDevicePrimaryCtxGetState", || {
        with_session(|_| {
            super::device_count_check(dev)?;
            let (f, on) = context::state();
            write_out(flags, f)?;
            write_out(active, c_int::from(on))
        })
    })
}

/// `cuDevicePrimaryCtxSetFlags` and `_v2`.
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    ffi_guard("cuDevicePrimaryCtxSetFlags", || {
        with_session(|_| {
            super::device_count_check(dev)?;
            context::set_flags(flags);
            Ok(())
        })
    })
}

/// `cuCtxGetCurrent`.
///
/// # Safety
/// `pctx` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    ffi_guard("cuCtxGetCurrent", || {
        with_session(|_| write_out(pctx, context::current()))
    })
}

/// `cuCtxSetCurrent`.
///
/// # Safety
/// `ctx` is a handle, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    ffi_guard("cuCtxSetCurrent", || {
        with_session(|_| context::set_current(ctx))
    })
}

/// `cuCtxPushCurrent_v2`.
///
/// # Safety
/// `ctx` is a handle, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    ffi_guard("cuCtxPushCurrent", || with_session(|_| context::push(ctx)))
}

/// `cuCtxPopCurrent_v2`.
///
/// # Safety
/// `pctx` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    ffi_guard("cuCtxPopCurrent", || {
        with_session(|_| {
            let ctx = context::pop()?;
            if !pctx.is_null() {
                write_out(pctx, ctx)?;
            }
            Ok(())
        })
    })
}

/// `cuCtxGetDevice`: device 0 of the current context.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    ffi_guard("cuCtxGetDevice", || {
        with_session(|_| {
            context::resolve(std::ptr::null_mut())?;
            write_out(device, 0)
        })
    })
}

/// `cuCtxGetApiVersion`.
///
/// # Safety
/// `version` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(ctx: CUcontext, version: *mut c_uint) -> CUresult {
    ffi_guard("cuCtxGetApiVersion", || {
        with_session(|_| {
            context::resolve(ctx)?;
            write_out(version, CTX_API_VERSION)
        })
    })
}

/// `cuCtxGetFlags`: the primary context's flags.
///
/// # Safety
/// `flags` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    ffi_guard("cuCtxGetFlags", || {
        with_session(|_| {
            context::resolve(std::ptr::null_mut())?;
            write_out(flags, context::state().0)
        })
    })
}

/// `cuCtxSynchronize`: one round trip; carries any deferred error.
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    ffi_guard("cuCtxSynchronize", || {
        with_session(|s| {
            context::resolve(std::ptr::null_mut())?;
            // Also marks the events recorded before it complete (see `entry::stream`).
            super::stream::ctx_synchronize(s, "cuCtxSynchronize")
        })
    })
}

/// `cuCtxGetDevice_v2` (CUDA 13.0, asked for by 13.x runtimes): device 0 of `ctx`, or of the
/// current context when `ctx` is null.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice_v2(device: *mut CUdevice, ctx: CUcontext) -> CUresult {
    ffi_guard("cuCtxGetDevice_v2", || {
        with_session(|_| {
            context::resolve(ctx)?;
            write_out(device, 0)
        })
    })
}

/// `cuCtxSynchronize_v2` (CUDA 13.0, asked for by 13.x runtimes): as [`cuCtxSynchronize`]
/// for `ctx`, or the current context when `ctx` is null (there is one context per process).
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize_v2(ctx: CUcontext) -> CUresult {
    ffi_guard("cuCtxSynchronize_v2", || {
        with_session(|s| {
            context::resolve(ctx)?;
            super::stream::ctx_synchronize(s, "cuCtxSynchronize_v2")
        })
    })
}

/// The id of the primary context, the only context a client has. `cuCtxGetId` ids are unique
/// for the life of the program (cuda.h); the shim never destroys the context (a reset keeps
/// its memory and modules on the server), so the id never changes.
pub const PRIMARY_CTX_ID: u64 = 1;

/// The unique id of `ctx`, or of the current context when `ctx` is null (`cuCtxGetId`,
/// TOOLS_CONTEXT slot 4).
pub(crate) fn context_id(ctx: CUcontext) -> Result<u64, CUresult> {
    let ctx = context::resolve(ctx)?;
    debug_assert!(ctx == context::primary());
    Ok(PRIMARY_CTX_ID)
}

/// `cuCtxGetId` (12.0): the unique id of `ctx`, or of the current context when `ctx` is
/// null; `CUDA_ERROR_INVALID_CONTEXT` for an unknown context or none current.
///
/// # Safety
/// `ctx_id` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetId(ctx: CUcontext, ctx_id: *mut u64) -> CUresult {
    ffi_guard("cuCtxGetId", || {
        with_session(|_| write_out(ctx_id, context_id(ctx)?))
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuDevicePrimaryCtxRetain", 7000) => cuDevicePrimaryCtxRetain as *const c_void,
        ("cuDevicePrimaryCtxRelease", 7000 | 11000) => {
            cuDevicePrimaryCtxRelease_v2 as *const c_void
        }
        ("cuDevicePrimaryCtxReset", 7000 | 11000) => cuDevicePrimaryCtxReset_v2 as *const c_void,
        ("cuDevicePrimaryCtxGetState", 7000) => cuDevicePrimaryCtxGetState as *const c_void,
        ("cuDevicePrimaryCtxSetFlags", 7000 | 11000) => {
            cuDevicePrimaryCtxSetFlags_v2 as *const c_void
        }
        ("cuCtxGetCurrent", 4000) => cuCtxGetCurrent as *const c_void,
        ("cuCtxSetCurrent", 4000) => cuCtxSetCurrent as *const c_void,
        ("cuCtxPushCurrent", 4000) => cuCtxPushCurrent_v2 as *const c_void,
        ("cuCtxPopCurrent", 4000) => cuCtxPopCurrent_v2 as *const c_void,
        ("cuCtxGetDevice", 2000) => cuCtxGetDevice as *const c_void,
        ("cuCtxGetApiVersion", 3020) => cuCtxGetApiVersion as *const c_void,
        ("cuCtxGetFlags", 7000) => cuCtxGetFlags as *const c_void,
        ("cuCtxSynchronize", 2000) => cuCtxSynchronize as *const c_void,
        ("cuCtxGetDevice", 13000) => cuCtxGetDevice_v2 as *const c_void,
        ("cuCtxSynchronize", 13000) => cuCtxSynchronize_v2 as *const c_void,
        ("cuCtxGetId", 12000) => cuCtxGetId as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::{CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_NOT_INITIALIZED};

    #[test]
    fn context_id_is_the_primary_contexts_and_refuses_unknown_or_absent_contexts() {
        // A fresh test thread has no current context.
        assert_eq!(
            context_id(std::ptr::null_mut()),
            Err(CUDA_ERROR_INVALID_CONTEXT)
        );
        let bogus = 0x10 as CUcontext;
        assert_eq!(context_id(bogus), Err(CUDA_ERROR_INVALID_CONTEXT));
        assert_eq!(context_id(context::primary()), Ok(PRIMARY_CTX_ID));
        context::push(context::primary()).unwrap();
        assert_eq!(context_id(std::ptr::null_mut()), Ok(PRIMARY_CTX_ID));
        assert_eq!(context::pop(), Ok(context::primary()));
    }

    #[test]
    fn ctx_get_id_before_init_is_not_initialized() {
        let mut id = 0u64;
        // SAFETY: a valid output pointer; no session exists in unit tests.
        let r = unsafe { cuCtxGetId(context::primary(), &mut id) };
        assert_eq!(r, CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!(id, 0);
    }
}
