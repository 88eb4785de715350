//! `cuGetExportTable`: the private function tables the CUDA runtime asks its driver for.
//!
//! Each table is an array of pointers; slot 0 holds the table's size in bytes. Facts about ids
//! and slots come from ZLUDA's `dark_api` and LUPINE's `client.cpp` (see `docs/shim.md`). The
//! shim serves a table only where it can keep the table's promises:
//!
//! * CUDART_INTERFACE (`6bd5fb6c-…`, 13 slots in 12.x/13.x): required, or the runtime fails
//!   its first call. Every function slot is a stub that logs once and returns
//!   `CUDA_ERROR_NOT_SUPPORTED` until the remote slice implements it.
//! * INTEGRITY_CHECK (`d4082055-…`, 3 slots): slot 1 answers the runtime's check.
//! * `f8cff951-…`: answering it successfully makes cudart skip its normal bootstrap and
//!   expect the CUDA 13 requirements tables, so it is reported as not found.
//! * Anything else: not found, logged once per id; never a fake table.

pub mod integrity;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cuda_types::{CUresult, CUuuid, CUDA_ERROR_NOT_SUPPORTED};
use crate::ffi_guard::ffi_guard;

/// Id of the runtime's main private interface.
pub const CUDART_INTERFACE: CUuuid = CUuuid {
    bytes: [
        0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d,
        0xf9,
    ],
};
/// Id of the integrity-check table.
pub const INTEGRITY_CHECK: CUuuid = CUuuid {
    bytes: [
        0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b, 0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1,
        0xf2,
    ],
};
/// Id the runtime probes first; success would switch it to the CUDA 13 bootstrap.
pub const BOOTSTRAP_BYPASS: CUuuid = CUuuid {
    bytes: [
        0xf8, 0xcf, 0xf9, 0x51, 0x21, 0x46, 0x8b, 0x4e, 0xb9, 0xe2, 0xfb, 0x46, 0x9e, 0x7c, 0x0d,
        0xd9,
    ],
};

/// Slots in CUDART_INTERFACE (12.x and 13.x runtimes).
pub const CUDART_INTERFACE_SLOTS: usize = 13;
/// Slots in INTEGRITY_CHECK.
pub const INTEGRITY_CHECK_SLOTS: usize = 3;

/// A table of code and size pointers handed to C.
#[repr(transparent)]
pub struct Table<const N: usize>([*const c_void; N]);

// SAFETY: the tables are immutable statics holding only function addresses and integers cast
// to pointers; sharing them between threads cannot cause a data race.
unsafe impl<const N: usize> Sync for Table<N> {}

impl<const N: usize> Table<N> {
    /// The address handed to the runtime.
    pub fn as_ptr(&'static self) -> *const c_void {
        self.0.as_ptr().cast()
    }

    /// Slot `i`'s raw value.
    pub fn slot(&self, i: usize) -> *const c_void {
        self.0[i]
    }
}

/// Slot 0 of every table: its own size in bytes.
const fn size_slot(slots: usize) -> *const c_void {
    std::ptr::without_provenance(slots * std::mem::size_of::<*const c_void>())
}

/// Which table a stub slot belongs to (index into [`TABLE_NAMES`]).
const CUDART: usize = 0;
const INTEGRITY: usize = 1;
const TABLE_NAMES: [&str; 2] = ["CUDART_INTERFACE", "INTEGRITY_CHECK"];
/// Largest slot count of any served table (bounds the "logged" flags).
const SLOTS_MAX: usize = CUDART_INTERFACE_SLOTS;
const _: () = assert!(INTEGRITY_CHECK_SLOTS <= SLOTS_MAX);

static SLOT_LOGGED: [[AtomicBool; SLOTS_MAX]; TABLE_NAMES.len()] =
    [const { [const { AtomicBool::new(false) }; SLOTS_MAX] }; TABLE_NAMES.len()];

/// A function slot the shim does not implement yet (argument-ignoring; see `stubs`).
extern "C" fn slot_stub<const T: usize, const S: usize>() -> CUresult {
    ffi_guard("export table slot", || {
        if !SLOT_LOGGED[T][S].swap(true, Ordering::Relaxed) {
            tracing::warn!(
                table = TABLE_NAMES[T],
                slot = S,
                "rgpu shim: private table slot not supported yet, returning CUDA_ERROR_NOT_SUPPORTED"
            );
        }
        CUDA_ERROR_NOT_SUPPORTED
    })
}

const fn code(f: extern "C" fn() -> CUresult) -> *const c_void {
    f as *const c_void
}

/// The CUDART_INTERFACE table.
pub static CUDART_TABLE: Table<CUDART_INTERFACE_SLOTS> = Table([
    size_slot(CUDART_INTERFACE_SLOTS),
    code(slot_stub::<CUDART, 1>),
    code(slot_stub::<CUDART, 2>),
    code(slot_stub::<CUDART, 3>),
    code(slot_stub::<CUDART, 4>),
    code(slot_stub::<CUDART, 5>),
    code(slot_stub::<CUDART, 6>),
    code(slot_stub::<CUDART, 7>),
    code(slot_stub::<CUDART, 8>),
    code(slot_stub::<CUDART, 9>),
    code(slot_stub::<CUDART, 10>),
    code(slot_stub::<CUDART, 11>),
    code(slot_stub::<CUDART, 12>),
]);

/// The INTEGRITY_CHECK table.
pub static INTEGRITY_TABLE: Table<INTEGRITY_CHECK_SLOTS> = Table([
    size_slot(INTEGRITY_CHECK_SLOTS),
    integrity_check as *const c_void,
    code(slot_stub::<INTEGRITY, 2>),
]);

/// INTEGRITY_CHECK slot 1: writes the 16-byte answer for `version` and `unix_seconds`.
extern "C" fn integrity_check(version: u32, unix_seconds: u64, result: *mut [u64; 2]) -> CUresult {
    ffi_guard("integrity_check", || {
        let input = integrity::CheckInput {
            driver_version: crate::cuda_types::DRIVER_VERSION.unsigned_abs(),
            runtime_version: version,
            process: std::process::id(),
            thread: crate::driver_api::thread_id_u32(),
            cudart_table: CUDART_TABLE.as_ptr() as usize,
            integrity_table: INTEGRITY_TABLE.as_ptr() as usize,
            check_fn: integrity_check as *const () as usize,
            unix_seconds,
        };
        // No devices while no server is connected.
        let answer = integrity::answer(&input, &[]);
        tracing::debug!(version, "rgpu shim: answered the runtime's integrity check");
        match crate::driver_api::write_out(result, answer) {
            Ok(()) => crate::cuda_types::CUDA_SUCCESS,
            Err(status) => status,
        }
    })
}

/// What `cuGetExportTable` answers for an id.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportLookup {
    /// Serve this table.
    Table(*const c_void),
    /// Report `CUDA_ERROR_NOT_FOUND` (with a log line if the id is unknown).
    NotFound {
        /// True if the id is one the shim knows and declines on purpose.
        known: bool,
    },
}

/// Picks the table for `id`.
pub fn lookup(id: &CUuuid) -> ExportLookup {
    if *id == CUDART_INTERFACE {
        ExportLookup::Table(CUDART_TABLE.as_ptr())
    } else if *id == INTEGRITY_CHECK {
        ExportLookup::Table(INTEGRITY_TABLE.as_ptr())
    } else if *id == BOOTSTRAP_BYPASS {
        ExportLookup::NotFound { known: true }
    } else {
        ExportLookup::NotFound { known: false }
    }
}

/// Formats an id as the runtime's GUID text (`6bd5fb6c-5bf4-e74a-…`), for logs.
pub fn id_text(id: &CUuuid) -> String {
    let b = &id.bytes;
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_INVALID_VALUE;

    #[test]
    fn tables_start_with_their_size_in_bytes() {
        assert_eq!(CUDART_TABLE.slot(0) as usize, 13 * 8);
        assert_eq!(INTEGRITY_TABLE.slot(0) as usize, 3 * 8);
        for i in 1..CUDART_INTERFACE_SLOTS {
            assert!(!CUDART_TABLE.slot(i).is_null(), "slot {i} is null");
        }
    }

    #[test]
    fn serves_the_known_tables_and_declines_the_rest() {
        assert_eq!(
            lookup(&CUDART_INTERFACE),
            ExportLookup::Table(CUDART_TABLE.as_ptr())
        );
        assert_eq!(
            lookup(&INTEGRITY_CHECK),
            ExportLookup::Table(INTEGRITY_TABLE.as_ptr())
        );
        assert_eq!(
            lookup(&BOOTSTRAP_BYPASS),
            ExportLookup::NotFound { known: true }
        );
        assert_eq!(
            lookup(&CUuuid { bytes: [9; 16] }),
            ExportLookup::NotFound { known: false }
        );
        assert_eq!(
            id_text(&CUDART_INTERFACE),
            "6bd5fb6c-5bf4-e74a-8987-d93912fd9df9"
        );
    }

    #[test]
    fn integrity_slot_writes_the_fixed_answer_for_a_round_version() {
        let mut out = [0u64; 2];
        assert_eq!(
            integrity_check(12090, 1_700_000_000, &mut out),
            crate::cuda_types::CUDA_SUCCESS
        );
        assert_eq!(out, integrity::FIXED_ANSWER_VERSION_END_0);
        assert_eq!(
            integrity_check(12092, 1, std::ptr::null_mut()),
            CUDA_ERROR_INVALID_VALUE
        );
    }
}
