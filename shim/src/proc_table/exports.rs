//! Every driver symbol NVIDIA's `libcuda.so.1` exports, exported by the shim too: the entry
//! points it implements under their own names, and a refusing stub for each other name.
//!
//! Why: libraries do not only go through `cuGetProcAddress`. cuBLASLt 13.x (PyPI
//! `nvidia-cublas` 13.10.0.20), run through the shim, `dlopen`s `libcuda.so.1` and `dlsym`s
//! 48 driver functions by their ABI names (`cuTensorMapEncodeTiled`, `cuLinkCreate_v2`,
//! `cuOccupancyMaxActiveBlocksPerMultiprocessor`, `cuGetErrorString`, …); when one is
//! missing, `cublasLtCreate` fails with "Driver API initialization failed" before using any.
//!
//! The names are in `abi_symbols.txt`, made from the `cuda.h` of each pinned release by
//! `shim/tools/regen-abi-symbols`. `build.rs` writes a stub for each name that the shim's code
//! does not name itself (so an implemented entry point is never shadowed). A stub ignores its
//! arguments, like the table's stubs (`crate::stubs`), logs "not supported yet" once per name
//! and returns `CUDA_ERROR_NOT_SUPPORTED`: a library that calls one is noticed, never fooled.

use crate::cuda_types::{CUresult, CUDA_ERROR_NOT_SUPPORTED};
use crate::ffi_guard::ffi_guard;

/// Every ABI symbol name of the pinned releases' `cuda.h`, one a line.
pub const ABI_SYMBOLS: &str = include_str!("abi_symbols.txt");

/// What an exported stub does: logs once for `name`, returns `CUDA_ERROR_NOT_SUPPORTED`.
fn unexported(name: &'static str) -> CUresult {
    ffi_guard("exported stub", || {
        if crate::logging::once_per_name("exported-stub", name) {
            tracing::warn!(
                symbol = name,
                "rgpu shim: not supported yet, returning CUDA_ERROR_NOT_SUPPORTED (called by its exported name)"
            );
        }
        CUDA_ERROR_NOT_SUPPORTED
    })
}

/// The generated stubs (`build.rs`).
mod generated {
    use super::unexported;
    use crate::cuda_types::CUresult;

    include!(concat!(env!("OUT_DIR"), "/abi_exports.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_driver_names_and_covers_the_table() {
        let names: Vec<&str> = ABI_SYMBOLS.lines().collect();
        assert!(names.len() > 600, "{} names", names.len());
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(names.iter().all(|n| n.starts_with("cu")));
        // Every base name the runtime asks cuGetProcAddress for is an exported symbol too
        // (the table adds a few names without typedefs; those must be listed as well).
        let missing: Vec<&str> = super::super::ENTRIES
            .iter()
            .map(|e| e.name)
            .filter(|n| names.binary_search(n).is_err())
            .collect();
        assert!(missing.len() < 16, "table names missing: {missing:?}");
    }

    // The generated stubs are not named here: naming one in code would make `build.rs` take
    // it for an implemented entry point and leave it out. `cuda13.sh` checks with `nm` that
    // the built library exports every listed name.
    #[test]
    fn a_stub_refuses() {
        assert_eq!(unexported("a listed name"), CUDA_ERROR_NOT_SUPPORTED);
        assert_eq!(unexported("a listed name"), CUDA_ERROR_NOT_SUPPORTED);
    }
}
