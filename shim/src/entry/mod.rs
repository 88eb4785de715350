//! The driver entry points answered beyond initialisation, grouped by call class:
//! [`device`] and [`context`] are answered locally, [`memory`] and [`module`] (loads, lookups)
//! remotely, [`launch`] as async calls.
//!
//! [`implemented`] maps `cuGetProcAddress` rows (name, ABI version) to these functions; every
//! row it does not name keeps its refusing stub.

pub mod alloc_ext;
pub mod capture;
pub mod context;
pub mod copy2d;
pub mod device;
pub mod event;
pub mod graph;
pub mod host;
pub mod launch;
pub mod logs;
pub mod memory;
pub mod module;
pub mod stream;
pub mod stream_info;

use std::ffi::c_void;

use crate::cuda_types::{CUresult, CUDA_SUCCESS};
use crate::remote::session::{self, Session};

/// Runs `f` with the session, or returns `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`.
pub(crate) fn with_session(f: impl FnOnce(&'static Session) -> Result<(), CUresult>) -> CUresult {
    match session::initialized().and_then(f) {
        Ok(()) => CUDA_SUCCESS,
        Err(status) => status,
    }
}

/// Checks `dev` against the granted device count (`CUDA_ERROR_NOT_INITIALIZED` before
/// `cuInit`, `CUDA_ERROR_INVALID_DEVICE` out of range).
pub(crate) fn device_count_check(dev: crate::cuda_types::CUdevice) -> Result<(), CUresult> {
    let session = session::initialized()?;
    match u32::try_from(dev) {
        Ok(d) if d < session.facts.count => Ok(()),
        _ => Err(crate::cuda_types::CUDA_ERROR_INVALID_DEVICE),
    }
}

/// The shim's function for the `cuGetProcAddress` row (`name`, `version`), if implemented.
/// Per-thread-default-stream rows of synchronous calls get the same function: with one
/// connection and no async calls yet, both stream semantics behave alike.
pub(crate) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    device::implemented(name, version)
        .or_else(|| context::implemented(name, version))
        .or_else(|| memory::implemented(name, version))
        .or_else(|| alloc_ext::implemented(name, version))
        .or_else(|| host::implemented(name, version))
        .or_else(|| copy2d::implemented(name, version))
        .or_else(|| module::implemented(name, version))
        .or_else(|| stream::implemented(name, version))
        .or_else(|| stream_info::implemented(name, version))
        .or_else(|| event::implemented(name, version))
        .or_else(|| capture::implemented(name, version))
        .or_else(|| graph::implemented(name, version))
        .or_else(|| logs::implemented(name, version))
        .or_else(|| launch::implemented(name, version))
}

/// The shim's function for a per-thread-default-stream (`_ptsz`/`_ptds`) row, if it has a
/// distinct one (there the null stream means the calling thread's per-thread stream; see
/// [`stream`]). Rows not named here fall back to [`implemented`].
pub(crate) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    stream::implemented_per_thread(name, version)
        .or_else(|| stream_info::implemented_per_thread(name, version))
        .or_else(|| alloc_ext::implemented_per_thread(name, version))
        .or_else(|| event::implemented_per_thread(name, version))
        .or_else(|| capture::implemented_per_thread(name, version))
        .or_else(|| graph::implemented_per_thread(name, version))
        .or_else(|| launch::implemented_per_thread(name, version))
}
