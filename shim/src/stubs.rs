//! The functions handed out for entry points the shim does not implement yet.
//!
//! Each table row gets its own instance (`stub::<I>`), so a call knows which entry point the
//! application meant and can name it in a once-per-symbol log line. The stub returns
//! `CUDA_ERROR_NOT_SUPPORTED`; it never claims success.
//!
//! The stubs take no arguments: on the C ABIs the shim supports (x86-64 and AArch64 System V)
//! the caller owns argument registers and stack, so a callee that ignores its arguments is
//! sound whatever prototype the caller used.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cuda_types::{CUresult, CUDA_ERROR_NOT_SUPPORTED};
use crate::ffi_guard::ffi_guard;
use crate::proc_table::{ENTRIES, ENTRY_COUNT};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the argument-ignoring stubs are only proven sound for x86-64 and AArch64");

/// One flag per table row: has its "not supported" line been logged?
static LOGGED: [AtomicBool; ENTRY_COUNT] = [const { AtomicBool::new(false) }; ENTRY_COUNT];

/// The stub for table row `I`.
pub(crate) extern "C" fn stub<const I: usize>() -> CUresult {
    ffi_guard("stub", || {
        if !LOGGED[I].swap(true, Ordering::Relaxed) {
            let entry = &ENTRIES[I];
            tracing::warn!(
                symbol = entry.name,
                version = entry.version,
                stream = ?entry.stream,
                "rgpu shim: not supported yet, returning CUDA_ERROR_NOT_SUPPORTED"
            );
        }
        CUDA_ERROR_NOT_SUPPORTED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stub_refuses_and_logs_its_own_row_once() {
        let index = ENTRIES
            .iter()
            .position(|e| e.name == "cuMemAlloc")
            .unwrap_or(0);
        assert!(!LOGGED[index].load(Ordering::Relaxed));
        assert_eq!((ENTRIES[index].stub)(), CUDA_ERROR_NOT_SUPPORTED);
        assert!(LOGGED[index].load(Ordering::Relaxed));
        assert_eq!((ENTRIES[index].stub)(), CUDA_ERROR_NOT_SUPPORTED);
    }
}
