//! The two function slots of the tools' private tables that the shim serves: the current
//! context (TOOLS_TLS slot 2) and a context's unique id (TOOLS_CONTEXT slot 4).
//!
//! Why these two: public sources agree on their meaning and signature, and say cuBLASLt keys
//! its kernel registry on them (facts and sources in `docs/shim.md`, "TOOLS_CONTEXT"):
//!
//! * TOOLS_TLS slot 2, `CUresult (CUcontext *current)`: a CPU emulator's driver interposer
//!   ("GX") says it returns the current context, checked against a profiled NVIDIA driver; a
//!   CXL-backed driver shim serves the same slot the same way.
//! * TOOLS_CONTEXT slot 4, `CUresult (CUcontext ctx, uint64_t *id)`: "GX" says it is
//!   identical to `cuCtxGetId` (checked the same way); the CXL shim answers a per-context key
//!   and `CUDA_ERROR_INVALID_CONTEXT` for an unknown context; a table-dump tool names the
//!   function at byte offset 0x20 (slot 4) "getContextNumber".
//!
//! Every other slot of those tables stays a logged `CUDA_ERROR_NOT_SUPPORTED` stub.

use std::ffi::c_void;

use crate::context;
use crate::cuda_types::{CUcontext, CUresult};
use crate::driver_api::write_out;
use crate::entry::{context::context_id, with_session};
use crate::ffi_guard::ffi_guard;

/// TOOLS_TLS slot 2: the calling thread's current context, null when there is none (as
/// `cuCtxGetCurrent` answers; "GX" forwards the slot to `cuCtxGetCurrent`).
pub(super) extern "C" fn tools_tls_current_context(current: *mut CUcontext) -> CUresult {
    ffi_guard("TOOLS_TLS[2]", || {
        with_session(|_| {
            let ctx = context::current();
            tracing::trace!(?ctx, "rgpu shim: TOOLS_TLS[2] (current context)");
            write_out(current, ctx)
        })
    })
}

/// TOOLS_CONTEXT slot 4: the unique id of `ctx` (the current context when null), the same
/// id `cuCtxGetId` reports; `CUDA_ERROR_INVALID_CONTEXT` for an unknown context.
pub(super) extern "C" fn tools_context_id(ctx: CUcontext, id: *mut u64) -> CUresult {
    ffi_guard("TOOLS_CONTEXT[4]", || {
        with_session(|_| {
            let value = context_id(ctx)?;
            tracing::trace!(?ctx, id = value, "rgpu shim: TOOLS_CONTEXT[4] (context id)");
            write_out(id, value)
        })
    })
}

/// The slot functions' addresses, for the tables.
pub(super) const TOOLS_TLS_CURRENT_CONTEXT: *const c_void =
    tools_tls_current_context as *const c_void;
/// See [`TOOLS_TLS_CURRENT_CONTEXT`].
pub(super) const TOOLS_CONTEXT_ID: *const c_void = tools_context_id as *const c_void;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED;

    #[test]
    fn slots_before_init_are_not_initialized_and_leave_outputs_alone() {
        let mut id = 7u64;
        assert_eq!(
            tools_context_id(context::primary(), &mut id),
            CUDA_ERROR_NOT_INITIALIZED
        );
        assert_eq!(id, 7);
        let mut ctx: CUcontext = std::ptr::null_mut();
        assert_eq!(
            tools_tls_current_context(&mut ctx),
            CUDA_ERROR_NOT_INITIALIZED
        );
        assert!(ctx.is_null());
    }

    #[test]
    fn the_tables_hold_the_slots() {
        assert_eq!(
            super::super::TOOLS_TLS_TABLE.slot(2),
            TOOLS_TLS_CURRENT_CONTEXT
        );
        assert_eq!(
            super::super::cuda13::TOOLS_CONTEXT_TABLE.slot(4),
            TOOLS_CONTEXT_ID
        );
    }
}
