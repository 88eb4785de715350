//! Error-log callbacks (`cuLogsRegisterCallback`, `cuLogsUnregisterCallback`, CUDA 12.9):
//! **local**, no session needed. The callbacks receive the shim's `warn` and `error` lines
//! (`crate::driver_log`). `cuLogsCurrent` and the dumps (`cuLogsDumpToMemory`,
//! `cuLogsDumpToFile`) keep their refusing stubs: the shim keeps no log buffer.

use std::ffi::c_void;

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_SUCCESS};
use crate::driver_api::write_out;
use crate::driver_log::{self, CUlogsCallback};
use crate::ffi_guard::ffi_guard;

/// `cuLogsRegisterCallback`: `callback` receives the shim's warnings and errors from now on.
///
/// # Safety
/// `callback` must be null or a `CUlogsCallback` that stays callable until unregistered;
/// `callback_out` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLogsRegisterCallback(
    callback: Option<CUlogsCallback>,
    user_data: *mut c_void,
    callback_out: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLogsRegisterCallback", || {
        let Some(callback) = callback else {
            return CUDA_ERROR_INVALID_VALUE;
        };
        match driver_log::register(callback, user_data) {
            Ok(handle) => {
                if callback_out.is_null() {
                    return CUDA_SUCCESS;
                }
                let handle = std::ptr::without_provenance_mut::<c_void>(handle as usize);
                match write_out(callback_out, handle) {
                    Ok(()) => CUDA_SUCCESS,
                    Err(status) => status,
                }
            }
            Err(status) => status,
        }
    })
}

/// `cuLogsUnregisterCallback`: `CUDA_ERROR_INVALID_VALUE` for a handle not registered.
///
/// # Safety
/// None beyond the C ABI: the handle is only compared.
#[no_mangle]
pub unsafe extern "C" fn cuLogsUnregisterCallback(callback: *mut c_void) -> CUresult {
    ffi_guard(
        "cuLogsUnregisterCallback",
        || match driver_log::unregister(callback as usize as u64) {
            Ok(()) => CUDA_SUCCESS,
            Err(status) => status,
        },
    )
}

/// The rows of the `cuGetProcAddress` table this module answers.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuLogsRegisterCallback", 12090) => cuLogsRegisterCallback as *const c_void,
        ("cuLogsUnregisterCallback", 12090) => cuLogsUnregisterCallback as *const c_void,
        _ => return None,
    })
}
