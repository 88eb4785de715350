//! The one door every C entry point goes through: no Rust panic may unwind into C.
//!
//! Unwinding across an `extern "C"` boundary aborts the process (or worse, on older
//! toolchains); the application would die inside its CUDA runtime with no hint why. The guard
//! catches the panic, logs it, and turns it into `CUDA_ERROR_UNKNOWN`.
//!
//! Logging itself runs inside the guard: the runtime calls the driver from `atexit` handlers,
//! after thread-local storage (which the log subscriber uses) is gone, and a log call there
//! panics. Such a panic is caught like any other, and the report of it is guarded too.

use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};

use crate::cuda_types::{CUresult, CUDA_ERROR_UNKNOWN};

/// Runs `f` for the C entry point `name`, converting a panic into `CUDA_ERROR_UNKNOWN`.
///
/// Also makes sure logging is set up before the first call does any work.
pub fn ffi_guard(name: &'static str, f: impl FnOnce() -> CUresult + UnwindSafe) -> CUresult {
    let guarded = move || {
        crate::logging::init();
        crate::logging::trace_call(name);
        f()
    };
    match catch_unwind(guarded) {
        Ok(status) => status,
        Err(payload) => {
            let report = AssertUnwindSafe(|| {
                let what = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("non-string panic payload");
                tracing::error!(
                    entry = name,
                    panic = what,
                    "rgpu shim: internal panic caught"
                );
            });
            // If even the report panics (no logging left at process exit), stay silent.
            let _ = catch_unwind(report);
            CUDA_ERROR_UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_NOT_FOUND;

    #[test]
    fn passes_the_status_through() {
        assert_eq!(
            ffi_guard("t", || CUDA_ERROR_NOT_FOUND),
            CUDA_ERROR_NOT_FOUND
        );
    }

    #[test]
    fn turns_a_panic_into_unknown() {
        let status = ffi_guard("t", || panic!("boom"));
        assert_eq!(status, CUDA_ERROR_UNKNOWN);
    }
}
