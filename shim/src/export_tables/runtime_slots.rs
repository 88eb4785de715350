//! The private-table functions the CUDA runtime calls once `cuInit` succeeds: its primary
//! context (CUDART_INTERFACE slot 2), fatbin registration as modules (slots 1, 6 and 8), the
//! tools-hook buffers, context-local storage and the context check. Slot meanings come from
//! ZLUDA's `dark_api` (see `docs/shim.md`).

use std::cell::UnsafeCell;
use std::ffi::c_void;

use crate::context;
use crate::cuda_types::{CUcontext, CUdevice, CUmodule, CUresult, CUDA_SUCCESS};
use crate::driver_api::write_out;
use crate::ffi_guard::ffi_guard;

/// Length (in `u32`s) of the first tools-hook buffer, as a real driver reports it.
pub const HOOK_BUFFER1_WORDS: usize = 1024;
/// Length (in `u32`s) of the second tools-hook buffer.
pub const HOOK_BUFFER2_WORDS: usize = 14;

/// A zeroed buffer whose address is handed to the runtime, which may write into it.
#[repr(transparent)]
pub struct HookBuffer<const N: usize>(UnsafeCell<[u32; N]>);

// SAFETY: Rust code never reads or writes the buffer; it only hands out its address. Whatever
// the runtime does with it is the runtime's own synchronisation, as with NVIDIA's driver.
unsafe impl<const N: usize> Sync for HookBuffer<N> {}

static HOOK_BUFFER1: HookBuffer<HOOK_BUFFER1_WORDS> =
    HookBuffer(UnsafeCell::new([0; HOOK_BUFFER1_WORDS]));
static HOOK_BUFFER2: HookBuffer<HOOK_BUFFER2_WORDS> =
    HookBuffer(UnsafeCell::new([0; HOOK_BUFFER2_WORDS]));

fn status(r: Result<(), CUresult>) -> CUresult {
    r.err().unwrap_or(CUDA_SUCCESS)
}

/// CUDART_INTERFACE slot 2: the device's primary context, without retaining it.
pub(super) extern "C" fn cudart_primary_context(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    ffi_guard("CUDART_INTERFACE[2]", || {
        status(
            crate::entry::device_count_check(dev)
                .and_then(|()| write_out(pctx, context::primary())),
        )
    })
}

/// CUDART_INTERFACE slot 1: loads the fatbin a `__fatBinC_Wrapper_t` names (what
/// `__cudaRegisterFatBinary` received) as a module.
pub(super) extern "C" fn cudart_module_from_fatbin(
    module: *mut CUmodule,
    fatbinc_wrapper: *const c_void,
) -> CUresult {
    ffi_guard("CUDART_INTERFACE[1]", || {
        crate::entry::module::load_into("CUDART_INTERFACE[1]", module, fatbinc_wrapper)
    })
}

/// CUDART_INTERFACE slot 6: slot 1 with three more arguments whose meaning is not known
/// (ZLUDA's notes see them null/zero in practice); they are logged when not.
pub(super) extern "C" fn cudart_module_from_fatbin_ext1(
    module: *mut CUmodule,
    fatbinc_wrapper: *const c_void,
    arg3: *mut c_void,
    arg4: *mut c_void,
    arg5: u32,
) -> CUresult {
    ffi_guard("CUDART_INTERFACE[6]", || {
        log_unknown_args("CUDART_INTERFACE[6]", arg3, arg4, arg5);
        crate::entry::module::load_into("CUDART_INTERFACE[6]", module, fatbinc_wrapper)
    })
}

/// CUDART_INTERFACE slot 8: as slot 6, but given the fatbin container itself (argument
/// order swapped).
pub(super) extern "C" fn cudart_module_from_fatbin_ext2(
    fatbin: *const c_void,
    module: *mut CUmodule,
    arg3: *mut c_void,
    arg4: *mut c_void,
    arg5: u32,
) -> CUresult {
    ffi_guard("CUDART_INTERFACE[8]", || {
        log_unknown_args("CUDART_INTERFACE[8]", arg3, arg4, arg5);
        crate::entry::module::load_into("CUDART_INTERFACE[8]", module, fatbin)
    })
}

fn log_unknown_args(slot: &'static str, arg3: *mut c_void, arg4: *mut c_void, arg5: u32) {
    if (!arg3.is_null() || !arg4.is_null() || arg5 != 0)
        && crate::logging::once_per_name("cudart-slot-args", slot)
    {
        tracing::warn!(
            slot,
            ?arg3,
            ?arg4,
            arg5,
            "rgpu shim: fatbin slot called with arguments of unknown meaning; ignored"
        );
    }
}

fn hand_out<const N: usize>(
    buffer: &'static HookBuffer<N>,
    ptr: *mut *mut c_void,
    size: *mut usize,
) {
    // The slot returns nothing; a null output is the caller's error and is skipped.
    let _ = write_out(ptr, buffer.0.get().cast::<c_void>());
    let _ = write_out(size, N);
}

/// TOOLS_RUNTIME_CALLBACK_HOOKS slot 2: the first hook buffer and its length.
pub(super) extern "C" fn hook_buffer1(ptr: *mut *mut c_void, size: *mut usize) {
    let _ = ffi_guard("TOOLS_RUNTIME_CALLBACK_HOOKS[2]", || {
        hand_out(&HOOK_BUFFER1, ptr, size);
        CUDA_SUCCESS
    });
}

/// TOOLS_RUNTIME_CALLBACK_HOOKS slot 6: the second hook buffer and its length.
pub(super) extern "C" fn hook_buffer2(ptr: *mut *mut c_void, size: *mut usize) {
    let _ = ffi_guard("TOOLS_RUNTIME_CALLBACK_HOOKS[6]", || {
        hand_out(&HOOK_BUFFER2, ptr, size);
        CUDA_SUCCESS
    });
}

/// The destructor the runtime registers with a storage entry (not called: see `context`).
type StorageDtor = Option<extern "C" fn(CUcontext, *mut c_void, *mut c_void)>;

/// CONTEXT_LOCAL_STORAGE slot 0: put.
pub(super) extern "C" fn storage_put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    _dtor: StorageDtor,
) -> CUresult {
    ffi_guard("CONTEXT_LOCAL_STORAGE[0]", || {
        status(context::storage_put(ctx, key as usize, value as usize))
    })
}

/// CONTEXT_LOCAL_STORAGE slot 1: delete.
pub(super) extern "C" fn storage_delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    ffi_guard("CONTEXT_LOCAL_STORAGE[1]", || {
        status(context::storage_delete(ctx, key as usize))
    })
}

/// CONTEXT_LOCAL_STORAGE slot 2: get.
pub(super) extern "C" fn storage_get(
    value: *mut *mut c_void,
    ctx: CUcontext,
    key: *mut c_void,
) -> CUresult {
    ffi_guard("CONTEXT_LOCAL_STORAGE[2]", || {
        status(
            context::storage_get(ctx, key as usize)
                .and_then(|v| write_out(value, v as *mut c_void)),
        )
    })
}

/// CONTEXT_CHECKS slot 2: reports "no special condition" (0) for a context.
pub(super) extern "C" fn context_check(
    _ctx: CUcontext,
    result1: *mut u32,
    _result2: *mut *const c_void,
) -> CUresult {
    ffi_guard("CONTEXT_CHECKS[2]", || status(write_out(result1, 0)))
}

/// CONTEXT_CHECKS slot 3: always 0 on NVIDIA's driver.
pub(super) extern "C" fn check_fn3() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_buffers_and_checks_answer() {
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut n = 0usize;
        hook_buffer1(&mut p, &mut n);
        assert_eq!((p, n), (HOOK_BUFFER1.0.get().cast(), HOOK_BUFFER1_WORDS));
        hook_buffer2(&mut p, &mut n);
        assert_eq!(n, HOOK_BUFFER2_WORDS);
        let mut r = 7u32;
        assert_eq!(
            context_check(std::ptr::null_mut(), &mut r, std::ptr::null_mut()),
            CUDA_SUCCESS
        );
        assert_eq!(r, 0);
        assert_eq!(check_fn3(), 0);
        // No session in unit tests: the primary context slot refuses.
        let mut ctx: CUcontext = std::ptr::null_mut();
        assert_ne!(cudart_primary_context(&mut ctx, 0), CUDA_SUCCESS);
    }
}
