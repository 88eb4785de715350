//! Module-level queries the runtime makes at start. Loading modules (fatbins, cubins) is a
//! later slice; only the loading mode is answered, locally.

use std::ffi::{c_int, c_void};

use crate::cuda_types::CUresult;
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;

/// `CU_MODULE_EAGER_LOADING`: modules are loaded when registered, the classic behaviour.
pub const CU_MODULE_EAGER_LOADING: c_int = 1;

/// `cuModuleGetLoadingMode`.
///
/// # Safety
/// `mode` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetLoadingMode(mode: *mut c_int) -> CUresult {
    ffi_guard("cuModuleGetLoadingMode", || {
        with_session(|_| write_out(mode, CU_MODULE_EAGER_LOADING))
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    match (name, version) {
        ("cuModuleGetLoadingMode", 11070) => Some(cuModuleGetLoadingMode as *const c_void),
        _ => None,
    }
}
