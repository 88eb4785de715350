//! The bootstrap C entry points (`cuGetProcAddress`, `cuGetExportTable`, `cuInit`, …), and
//! the raw-pointer plumbing every entry point shares.
//!
//! Every function here goes through [`ffi_guard`]. Pointer arguments come from the
//! application; they are checked for null and otherwise trusted the way a real driver trusts
//! them. The unsafe code is confined to [`write_out`], [`read_symbol`] and [`read_uuid`].

use std::ffi::{c_char, c_int, c_uint, c_void};

use crate::cuda_types::{
    CUresult, CUuuid, SymbolStatus, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND, CUDA_SUCCESS,
    DRIVER_VERSION,
};
use crate::export_tables::{self, ExportLookup};
use crate::ffi_guard::ffi_guard;
use crate::logging::once_per_name;
use crate::proc_table::{self, Lookup, ENTRIES};

/// Longest symbol name `cuGetProcAddress` reads; longer names are reported as not found.
pub const SYMBOL_NAME_LEN_MAX: usize = 256;

/// Writes `value` through an application-supplied output pointer.
pub(crate) fn write_out<T>(ptr: *mut T, value: T) -> Result<(), CUresult> {
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null and aligned; the driver API contract makes the caller responsible for
    // the pointer addressing writable memory for a `T`, exactly as with NVIDIA's driver.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Reads a NUL-terminated symbol name of at most [`SYMBOL_NAME_LEN_MAX`] bytes.
fn read_symbol(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated C string (cuGetProcAddress contract);
    // strnlen reads at most SYMBOL_NAME_LEN_MAX + 1 bytes of it.
    let len = unsafe { libc::strnlen(ptr, SYMBOL_NAME_LEN_MAX + 1) };
    if len > SYMBOL_NAME_LEN_MAX {
        return None;
    }
    // SAFETY: strnlen found `len` readable bytes before the terminator.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// Reads the 16-byte table id.
fn read_uuid(ptr: *const CUuuid) -> Option<CUuuid> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null; `CUuuid` is 16 bytes with alignment 1 and the caller passes a valid id.
    Some(unsafe { ptr.read() })
}

/// The calling thread's `pthread_self`, truncated to 32 bits as the runtime's check does.
pub(crate) fn thread_id_u32() -> u32 {
    // SAFETY: pthread_self has no preconditions.
    let id = unsafe { libc::pthread_self() };
    id as u32
}

fn status_of(result: Result<(), CUresult>, ok: CUresult) -> CUresult {
    match result {
        Ok(()) => ok,
        Err(status) => status,
    }
}

/// The shim's own implementation of a table row, if it has one.
fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    let f: *const c_void = match (name, version) {
        ("cuInit", 2000) => cuInit as *const c_void,
        ("cuDriverGetVersion", 2020) => cuDriverGetVersion as *const c_void,
        ("cuDeviceGetCount", 2000) => cuDeviceGetCount as *const c_void,
        ("cuGetProcAddress", 11030) => cuGetProcAddress as *const c_void,
        ("cuGetProcAddress", 12000) => cuGetProcAddress_v2 as *const c_void,
        ("cuGetExportTable", 3000) => cuGetExportTable as *const c_void,
        _ => return crate::entry::implemented(name, version),
    };
    Some(f)
}

/// Shared body of both `cuGetProcAddress` versions.
fn get_proc_address(
    symbol: *const c_char,
    pfn: *mut *const c_void,
    version: c_int,
    flags: u64,
    status: *mut c_int,
) -> CUresult {
    if pfn.is_null() {
        return CUDA_ERROR_INVALID_VALUE;
    }
    let report = |s: SymbolStatus| {
        if !status.is_null() {
            // A bad status pointer is the caller's error; the main answer still stands.
            let _ = write_out(status, s as c_int);
        }
    };
    let Some(name) = read_symbol(symbol) else {
        let _ = write_out(pfn, std::ptr::null());
        report(SymbolStatus::SymbolNotFound);
        return if symbol.is_null() {
            CUDA_ERROR_INVALID_VALUE
        } else {
            CUDA_ERROR_NOT_FOUND
        };
    };
    let outcome = proc_table::lookup(&name, version, flags);
    tracing::debug!(symbol = %name, version, flags, outcome = ?outcome, "rgpu shim: cuGetProcAddress");
    let (ptr, result, symbol_status) = match outcome {
        Lookup::Found(index) => {
            let entry = &ENTRIES[index];
            let per_thread = entry
                .stream
                .is_per_thread()
                .then(|| crate::entry::implemented_per_thread(entry.name, entry.version))
                .flatten();
            let f = per_thread
                .or_else(|| implemented(entry.name, entry.version))
                .unwrap_or(entry.stub as *const c_void);
            (f, CUDA_SUCCESS, SymbolStatus::Success)
        }
        Lookup::SymbolNotFound => {
            // The 12.9 runtime probes with an empty name at version 0 once at start; that is
            // answered "not found" like any unknown name, but is not worth a warning.
            if !name.is_empty() && once_per_name("unknown-symbol", &name) {
                tracing::warn!(symbol = %name, version, "rgpu shim: cuGetProcAddress: unknown symbol");
            }
            (
                std::ptr::null(),
                CUDA_ERROR_NOT_FOUND,
                SymbolStatus::SymbolNotFound,
            )
        }
        Lookup::VersionNotSufficient { oldest } => {
            tracing::debug!(symbol = %name, version, oldest, "rgpu shim: symbol newer than requested version");
            (
                std::ptr::null(),
                CUDA_ERROR_NOT_FOUND,
                SymbolStatus::VersionNotSufficient,
            )
        }
    };
    report(symbol_status);
    status_of(write_out(pfn, ptr), result)
}

/// `cuGetProcAddress` (CUDA 11.3 ABI, no status output).
///
/// # Safety
/// `symbol` must be null or a NUL-terminated string; `pfn` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *const c_void,
    cuda_version: c_int,
    flags: u64,
) -> CUresult {
    ffi_guard("cuGetProcAddress", || {
        get_proc_address(symbol, pfn, cuda_version, flags, std::ptr::null_mut())
    })
}

/// `cuGetProcAddress_v2` (CUDA 12.0 ABI, with `symbolStatus`).
///
/// # Safety
/// `symbol` must be null or a NUL-terminated string; `pfn` and `symbol_status` must be null
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *const c_void,
    cuda_version: c_int,
    flags: u64,
    symbol_status: *mut c_int,
) -> CUresult {
    ffi_guard("cuGetProcAddress_v2", || {
        get_proc_address(symbol, pfn, cuda_version, flags, symbol_status)
    })
}

/// `cuGetExportTable`: hands out the private tables in [`export_tables`].
///
/// # Safety
/// `table` must be null or writable; `id` must be null or point at 16 readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(
    table: *mut *const c_void,
    id: *const CUuuid,
) -> CUresult {
    ffi_guard("cuGetExportTable", || {
        let Some(id) = read_uuid(id) else {
            return CUDA_ERROR_INVALID_VALUE;
        };
        let (ptr, status) = match export_tables::lookup(&id) {
            ExportLookup::Table(ptr) => (ptr, CUDA_SUCCESS),
            ExportLookup::NotFound { known } => {
                let text = export_tables::id_text(&id);
                if !known && once_per_name("export-table", &text) {
                    tracing::warn!(id = %text, "rgpu shim: cuGetExportTable: unknown table");
                }
                (std::ptr::null(), CUDA_ERROR_NOT_FOUND)
            }
        };
        tracing::debug!(id = %export_tables::id_text(&id), status, "rgpu shim: cuGetExportTable");
        status_of(write_out(table, ptr), status)
    })
}

/// `cuDriverGetVersion`: the version the proc-address table was built from.
///
/// # Safety
/// `version` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    ffi_guard("cuDriverGetVersion", || {
        status_of(write_out(version, DRIVER_VERSION), CUDA_SUCCESS)
    })
}

/// `cuInit`: connects to the server named by `RGPU_SERVER` on the first call (see
/// [`crate::remote`]); `CUDA_ERROR_NO_DEVICE` when there is none, as a driver on a machine
/// without GPUs answers; `CUDA_ERROR_NOT_INITIALIZED` in a child forked after the parent
/// initialized (see [`crate::remote::fork`]).
///
/// # Safety
/// No pointer arguments; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuInit(flags: c_uint) -> CUresult {
    ffi_guard("cuInit", || {
        if flags != 0 {
            return CUDA_ERROR_INVALID_VALUE;
        }
        match crate::remote::session::current() {
            Ok(_) => CUDA_SUCCESS,
            // CUDA_ERROR_NO_DEVICE, or CUDA_ERROR_NOT_INITIALIZED in a forked child.
            Err(why) => why.curesult(),
        }
    })
}

/// `cuDeviceGetCount`: the devices the server granted; 0 and `CUDA_ERROR_NO_DEVICE` when
/// there is no server (0 and `CUDA_ERROR_NOT_INITIALIZED` in a forked child).
///
/// # Safety
/// `count` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    ffi_guard(
        "cuDeviceGetCount",
        || match crate::remote::session::current() {
            Ok(session) => {
                let n = c_int::try_from(session.facts.count).unwrap_or(c_int::MAX);
                status_of(write_out(count, n), CUDA_SUCCESS)
            }
            Err(why) => status_of(write_out(count, 0), why.curesult()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn ask(name: &str, version: c_int, flags: u64) -> (CUresult, *const c_void, c_int) {
        let name = CString::new(name).unwrap();
        let mut pfn = std::ptr::dangling::<c_void>();
        let mut status = -1;
        // SAFETY: valid C string and writable outputs.
        let r =
            unsafe { cuGetProcAddress_v2(name.as_ptr(), &mut pfn, version, flags, &mut status) };
        (r, pfn, status)
    }

    #[test]
    fn returns_itself_when_asked_for_itself() {
        let (r, pfn, status) = ask("cuGetProcAddress", 12000, 0);
        assert_eq!((r, status), (CUDA_SUCCESS, 0));
        assert_eq!(pfn, cuGetProcAddress_v2 as *const c_void);
        let (_, pfn, _) = ask("cuGetProcAddress", 11030, 0);
        assert_eq!(pfn, cuGetProcAddress as *const c_void);
    }

    #[test]
    fn unknown_symbol_is_not_found_with_status() {
        let (r, pfn, status) = ask("cuDefinitelyNotAnEntryPoint", 12000, 0);
        assert_eq!(
            (r, status),
            (CUDA_ERROR_NOT_FOUND, SymbolStatus::SymbolNotFound as c_int)
        );
        assert!(pfn.is_null());
        let (r, _, status) = ask("cuGetProcAddress", 11000, 0);
        assert_eq!(
            (r, status),
            (
                CUDA_ERROR_NOT_FOUND,
                SymbolStatus::VersionNotSufficient as c_int
            )
        );
        let long = "x".repeat(SYMBOL_NAME_LEN_MAX + 1);
        assert_eq!(ask(&long, 12000, 0).0, CUDA_ERROR_NOT_FOUND);
    }

    #[test]
    fn unimplemented_symbols_get_a_refusing_stub() {
        let (r, pfn, _) = ask("cuLaunchGrid", 12000, 0);
        assert_eq!(r, CUDA_SUCCESS);
        // SAFETY: every stub has this signature (see `stubs`).
        let f: extern "C" fn() -> CUresult = unsafe { std::mem::transmute(pfn) };
        assert_eq!(f(), crate::cuda_types::CUDA_ERROR_NOT_SUPPORTED);
    }

    #[test]
    fn version_and_null_pointers() {
        let mut v = 0;
        // SAFETY: a writable output.
        assert_eq!(unsafe { cuDriverGetVersion(&mut v) }, CUDA_SUCCESS);
        assert_eq!(v, DRIVER_VERSION);
        // SAFETY: null outputs are rejected before any access.
        let null_version = unsafe { cuDriverGetVersion(std::ptr::null_mut()) };
        assert_eq!(null_version, CUDA_ERROR_INVALID_VALUE);
        // SAFETY: as above.
        let null_table = unsafe { cuGetExportTable(std::ptr::null_mut(), std::ptr::null()) };
        assert_eq!(null_table, CUDA_ERROR_INVALID_VALUE);
    }
}
