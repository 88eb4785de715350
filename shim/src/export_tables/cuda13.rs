//! What the CUDA 13.x runtimes need from the private tables beyond what 12.9 needs.
//!
//! Observed through the shim with `RGPU_LOG=rgpu_shim=debug` (PyPI `nvidia-cuda-runtime`
//! 13.2 and 13.5, static and `libcudart.so.13`); facts and sources are in `docs/shim.md`:
//!
//! * `f8cff951-…` ("CUDA 13 requirements" / bootstrap), probed before `cuInit` by 12.9 and
//!   13.x alike. Public shims agree that success switches cudart to another bootstrap; one
//!   describes it as several sub-tables of which only a "check requirements" slot is known.
//!   The shim answers `CUDA_ERROR_NOT_FOUND` (in `super::lookup`), like a driver without the
//!   table, and the 13.x runtimes then take the classic bootstrap and work.
//! * `21318c60-…` (TOOLS_CONTEXT; `CU_ETID_ToolsContext` in NVIDIA's tools library), asked
//!   for after `cuInit` by 13.5 (not 13.2). Without it 13.5 fails `cudaGetDeviceCount` with
//!   `cudaErrorSymbolNotFound`. A 595-series driver serves 94 function slots; the runtimes we
//!   ran call none of them. Slot 4 (a context's unique id, which cuBLASLt uses) is served by
//!   [`super::tools_slots`]; every other slot is a stub that logs once and returns
//!   `CUDA_ERROR_NOT_SUPPORTED`; the tests fail on that log line, so a caller is noticed.
//! * CUDART_INTERFACE slot 12 ("load compilers"), called by `libcudart.so.13`: see
//!   [`load_compilers`].

use std::ffi::c_void;

use super::{code, size_slot, slot_stub, tools_slots, Table, TOOLS_CTX};
use crate::cuda_types::{CUresult, CUuuid, CUDA_SUCCESS};
use crate::ffi_guard::ffi_guard;

/// Id of the tools' context table that 13.x runtimes require after `cuInit`.
pub const TOOLS_CONTEXT: CUuuid = CUuuid {
    bytes: [
        0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8,
        0xf2,
    ],
};

/// Slots in TOOLS_CONTEXT, the size slot included (94 functions, as a 595-series driver
/// serves it).
pub const TOOLS_CONTEXT_SLOTS: usize = 95;

/// TOOLS_CONTEXT's slots: the size in slot 0, slot 4 served (the context id), and one
/// logging stub for every other function slot.
macro_rules! tools_context_slots {
    ($($before:literal)* ; $($after:literal)*) => {
        [
            size_slot(TOOLS_CONTEXT_SLOTS),
            $(code(slot_stub::<TOOLS_CTX, $before>),)*
            tools_slots::TOOLS_CONTEXT_ID,
            $(code(slot_stub::<TOOLS_CTX, $after>)),*
        ]
    };
}

/// The TOOLS_CONTEXT table: present, with slot 4 served and every other function slot
/// refusing (see the module doc).
pub static TOOLS_CONTEXT_TABLE: Table<TOOLS_CONTEXT_SLOTS> = Table(tools_context_slots!(
    1 2 3 ; 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33
    34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
    64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93
    94
));

/// The table's address, for `cuGetExportTable`.
pub fn tools_context() -> *const c_void {
    TOOLS_CONTEXT_TABLE.as_ptr()
}

/// CUDART_INTERFACE slot 12, which the shared `libcudart.so.13` (13.2 and 13.5) calls while
/// initialising: NVIDIA's driver loads its JIT compilers there (PTX compiler, libnvvm, tileir;
/// ZLUDA `dark_api`, `load_compilers() -> CUresult`). The client never compiles: modules are
/// loaded, and JIT-compiled if need be, by the driver on the GPU server. There is nothing to
/// load here, so the slot reports success; without it the runtime fails `cudaGetDeviceCount`
/// with `cudaErrorNotSupported`.
pub(super) extern "C" fn load_compilers() -> CUresult {
    ffi_guard("CUDART_INTERFACE[12]", || {
        tracing::debug!(
            "rgpu shim: CUDART_INTERFACE[12] (load compilers): nothing to load on the client"
        );
        CUDA_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_NOT_SUPPORTED;

    #[test]
    fn load_compilers_succeeds_and_sits_in_cudart_slot_12() {
        assert_eq!(load_compilers(), CUDA_SUCCESS);
        assert_eq!(
            super::super::CUDART_TABLE.slot(12),
            load_compilers as *const c_void
        );
    }

    #[test]
    fn tools_context_has_its_size_the_context_id_in_slot_4_and_refusing_stubs_elsewhere() {
        assert_eq!(
            TOOLS_CONTEXT_TABLE.slot(0) as usize,
            TOOLS_CONTEXT_SLOTS * 8
        );
        let mut distinct = std::collections::HashSet::new();
        for i in 1..TOOLS_CONTEXT_SLOTS {
            let slot = TOOLS_CONTEXT_TABLE.slot(i);
            assert!(!slot.is_null(), "slot {i} is null");
            assert!(distinct.insert(slot as usize), "slot {i} shares a stub");
        }
        assert_eq!(TOOLS_CONTEXT_TABLE.slot(4), tools_slots::TOOLS_CONTEXT_ID);
        // SAFETY: every function slot holds a `slot_stub`, an `extern "C" fn() -> CUresult`
        // (checked non-null above).
        let f: extern "C" fn() -> CUresult =
            unsafe { std::mem::transmute(TOOLS_CONTEXT_TABLE.slot(94)) };
        assert_eq!(f(), CUDA_ERROR_NOT_SUPPORTED);
    }
}
