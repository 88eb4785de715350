//! `cuGetExportTable`: the private function tables the CUDA runtime asks its driver for.
//!
//! Each table is an array of pointers; slot 0 holds the table's size in bytes. Facts about ids
//! and slots come from ZLUDA's `dark_api` and LUPINE's `client.cpp` (see `docs/shim.md`). The
//! shim serves a table only where it can keep the table's promises:
//!
//! * CUDART_INTERFACE (`6bd5fb6c-…`, 13 slots in 12.x/13.x): required, or the runtime fails
//!   its first call. Slot 2 (primary context) and slots 1, 6 and 8 (a fatbin loaded as a
//!   module, `runtime_slots`) are served; the other function slots are stubs that log once
//!   and return `CUDA_ERROR_NOT_SUPPORTED`.
//! * INTEGRITY_CHECK (`d4082055-…`, 3 slots): slot 1 answers the runtime's check.
//! * `f8cff951-…`: answering it successfully makes cudart skip its normal bootstrap and
//!   expect the CUDA 13 requirements tables, so it is reported as not found; the 13.x
//!   runtimes then take the classic bootstrap (`cuda13`).
//! * TOOLS_CONTEXT (`21318c60-…`, 94 slots): required by the 13.5 runtime after `cuInit`;
//!   served with refusing stubs (`cuda13`), except slot 4, a context's id (`tools_slots`).
//! * TOOLS_TLS: slot 2, the current context (`tools_slots`).
//! * Anything else: not found, logged once per id; never a fake table.

pub mod cuda13;
pub mod integrity;
mod runtime_slots;
mod tools_slots;

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

/// Id of the tools' thread-local-storage table (only its size is used by the runtime).
pub const TOOLS_TLS: CUuuid = CUuuid {
    bytes: [
        0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec,
        0xdc,
    ],
};
/// Id of the tools' runtime-callback-hooks table.
pub const TOOLS_RUNTIME_CALLBACK_HOOKS: CUuuid = CUuuid {
    bytes: [
        0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74, 0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a,
        0x66,
    ],
};
/// Id of the context-local-storage interface (v03.01).
pub const CONTEXT_LOCAL_STORAGE: CUuuid = CUuuid {
    bytes: [
        0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11, 0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95,
        0x93,
    ],
};
/// Id of the context-checks table.
pub const CONTEXT_CHECKS: CUuuid = CUuuid {
    bytes: [
        0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43, 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa,
        0x7e,
    ],
};

/// Slots in CUDART_INTERFACE (12.x and 13.x runtimes).
pub const CUDART_INTERFACE_SLOTS: usize = 13;
/// Slots in INTEGRITY_CHECK.
pub const INTEGRITY_CHECK_SLOTS: usize = 3;
/// Slots in TOOLS_TLS.
pub const TOOLS_TLS_SLOTS: usize = 4;
/// Slots in TOOLS_RUNTIME_CALLBACK_HOOKS.
pub const TOOLS_HOOKS_SLOTS: usize = 7;
/// Slots in CONTEXT_LOCAL_STORAGE (no size slot: slot 0 is a function).
pub const CONTEXT_LOCAL_STORAGE_SLOTS: usize = 4;
/// Slots in CONTEXT_CHECKS.
pub const CONTEXT_CHECKS_SLOTS: usize = 4;

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
const TLS: usize = 2;
const HOOKS: usize = 3;
const CLS: usize = 4;
const CHECKS: usize = 5;
const TOOLS_CTX: usize = 6;
const TABLE_NAMES: [&str; 7] = [
    "CUDART_INTERFACE",
    "INTEGRITY_CHECK",
    "TOOLS_TLS",
    "TOOLS_RUNTIME_CALLBACK_HOOKS",
    "CONTEXT_LOCAL_STORAGE",
    "CONTEXT_CHECKS",
    "TOOLS_CONTEXT",
];
/// Largest slot count of any served table (bounds the "logged" flags).
const SLOTS_MAX: usize = cuda13::TOOLS_CONTEXT_SLOTS;
const _: () = assert!(
    CUDART_INTERFACE_SLOTS <= SLOTS_MAX
        && INTEGRITY_CHECK_SLOTS <= SLOTS_MAX
        && TOOLS_TLS_SLOTS <= SLOTS_MAX
        && TOOLS_HOOKS_SLOTS <= SLOTS_MAX
        && CONTEXT_LOCAL_STORAGE_SLOTS <= SLOTS_MAX
        && CONTEXT_CHECKS_SLOTS <= SLOTS_MAX
);

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
    runtime_slots::cudart_module_from_fatbin as *const c_void,
    runtime_slots::cudart_primary_context as *const c_void,
    code(slot_stub::<CUDART, 3>),
    code(slot_stub::<CUDART, 4>),
    code(slot_stub::<CUDART, 5>),
    runtime_slots::cudart_module_from_fatbin_ext1 as *const c_void,
    code(slot_stub::<CUDART, 7>),
    runtime_slots::cudart_module_from_fatbin_ext2 as *const c_void,
    code(slot_stub::<CUDART, 9>),
    code(slot_stub::<CUDART, 10>),
    code(slot_stub::<CUDART, 11>),
    cuda13::load_compilers as *const c_void,
]);

/// The INTEGRITY_CHECK table.
pub static INTEGRITY_TABLE: Table<INTEGRITY_CHECK_SLOTS> = Table([
    size_slot(INTEGRITY_CHECK_SLOTS),
    integrity_check as *const c_void,
    code(slot_stub::<INTEGRITY, 2>),
]);

/// The TOOLS_TLS table: the runtime reads its size; slot 2 (the current context, which
/// cuBLASLt uses) is served by `tools_slots`; slots 1 and 3 are unknown.
pub static TOOLS_TLS_TABLE: Table<TOOLS_TLS_SLOTS> = Table([
    size_slot(TOOLS_TLS_SLOTS),
    code(slot_stub::<TLS, 1>),
    tools_slots::TOOLS_TLS_CURRENT_CONTEXT,
    code(slot_stub::<TLS, 3>),
]);

/// The TOOLS_RUNTIME_CALLBACK_HOOKS table: slots 2 and 6 hand out zeroed hook buffers.
pub static TOOLS_HOOKS_TABLE: Table<TOOLS_HOOKS_SLOTS> = Table([
    size_slot(TOOLS_HOOKS_SLOTS),
    code(slot_stub::<HOOKS, 1>),
    runtime_slots::hook_buffer1 as *const c_void,
    code(slot_stub::<HOOKS, 3>),
    code(slot_stub::<HOOKS, 4>),
    code(slot_stub::<HOOKS, 5>),
    runtime_slots::hook_buffer2 as *const c_void,
]);

/// The CONTEXT_LOCAL_STORAGE table: put, delete, get.
pub static CONTEXT_LOCAL_STORAGE_TABLE: Table<CONTEXT_LOCAL_STORAGE_SLOTS> = Table([
    runtime_slots::storage_put as *const c_void,
    runtime_slots::storage_delete as *const c_void,
    runtime_slots::storage_get as *const c_void,
    code(slot_stub::<CLS, 3>),
]);

/// The CONTEXT_CHECKS table.
pub static CONTEXT_CHECKS_TABLE: Table<CONTEXT_CHECKS_SLOTS> = Table([
    size_slot(CONTEXT_CHECKS_SLOTS),
    code(slot_stub::<CHECKS, 1>),
    runtime_slots::context_check as *const c_void,
    runtime_slots::check_fn3 as *const c_void,
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
        let devices = match integrity_devices() {
            Ok(d) => d,
            Err(status) => return status,
        };
        let answer = integrity::answer(&input, &devices);
        tracing::debug!(version, "rgpu shim: answered the runtime's integrity check");
        match crate::driver_api::write_out(result, answer) {
            Ok(()) => crate::cuda_types::CUDA_SUCCESS,
            Err(status) => status,
        }
    })
}

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
const ATTR_PCI_BUS_ID: u32 = 33;
/// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
const ATTR_PCI_DEVICE_ID: u32 = 34;
/// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
const ATTR_PCI_DOMAIN_ID: u32 = 50;

/// The per-device part of the integrity check: none without a server, else the granted
/// device's UUID and PCI location, as the runtime reads them through the driver API.
fn integrity_devices() -> Result<Vec<integrity::DeviceInput>, CUresult> {
    let Ok(session) = crate::remote::session::initialized() else {
        return Ok(Vec::new());
    };
    let attr = |a| {
        session
            .attribute(a)
            .map_err(|e| crate::remote::session::to_curesult("integrity_check", &e))
    };
    Ok(vec![integrity::DeviceInput {
        uuid: session.facts.uuid,
        pci: [
            attr(ATTR_PCI_DOMAIN_ID)?,
            attr(ATTR_PCI_BUS_ID)?,
            attr(ATTR_PCI_DEVICE_ID)?,
        ],
    }])
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
    } else if *id == TOOLS_TLS {
        ExportLookup::Table(TOOLS_TLS_TABLE.as_ptr())
    } else if *id == TOOLS_RUNTIME_CALLBACK_HOOKS {
        ExportLookup::Table(TOOLS_HOOKS_TABLE.as_ptr())
    } else if *id == CONTEXT_LOCAL_STORAGE {
        ExportLookup::Table(CONTEXT_LOCAL_STORAGE_TABLE.as_ptr())
    } else if *id == CONTEXT_CHECKS {
        ExportLookup::Table(CONTEXT_CHECKS_TABLE.as_ptr())
    } else if *id == cuda13::TOOLS_CONTEXT {
        ExportLookup::Table(cuda13::tools_context())
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
        assert_eq!(TOOLS_HOOKS_TABLE.slot(0) as usize, 7 * 8);
        assert_eq!(TOOLS_TLS_TABLE.slot(0) as usize, 4 * 8);
        assert_eq!(CONTEXT_CHECKS_TABLE.slot(0) as usize, 4 * 8);
        // The storage interface has no size slot: slot 0 is its `put` function.
        assert!(!CONTEXT_LOCAL_STORAGE_TABLE.slot(0).is_null());
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
        for (id, table) in [
            (TOOLS_TLS, TOOLS_TLS_TABLE.as_ptr()),
            (TOOLS_RUNTIME_CALLBACK_HOOKS, TOOLS_HOOKS_TABLE.as_ptr()),
            (CONTEXT_LOCAL_STORAGE, CONTEXT_LOCAL_STORAGE_TABLE.as_ptr()),
            (CONTEXT_CHECKS, CONTEXT_CHECKS_TABLE.as_ptr()),
            (cuda13::TOOLS_CONTEXT, cuda13::tools_context()),
        ] {
            assert_eq!(lookup(&id), ExportLookup::Table(table), "{}", id_text(&id));
        }
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
