//! The round trips behind module and launch entry points: load (by content hash first),
//! unload, function lookup (cached per module and name), and launch.
//!
//! Loading sends `ModuleLoadByHash` with the image's SHA-256; only on
//! `CUDA_ERROR_NOT_FOUND` (the worker has not seen that image) does it send the image itself
//! in `ModuleLoad`. Images larger than one inline frame are refused (see
//! [`image::IMAGE_BYTES_MAX`](super::image::IMAGE_BYTES_MAX)). Launches are async calls: a
//! kernel's failure is the deferred error of the next sync call, as on CUDA.

use rgpu_proto::{
    Blob, Call, CudaError, FunctionLookup, Launch, LaunchAttr, LaunchEx, ModuleLoad,
    ModuleLoadByHash, ModuleUnload, Reply, StreamHandle, MAX_LAUNCH_ATTRS, MAX_NAME_BYTES,
};
use sha2::{Digest, Sha256};

use super::params::pack_kernel_params;
use super::registry::RegistryError;
use super::tables;
use crate::cuda_types::{
    CUresult, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND,
    CUDA_ERROR_OUT_OF_MEMORY,
};
use crate::remote::conn::CallError;
use crate::remote::session::{to_curesult, Session};

fn registry_status(e: RegistryError) -> CUresult {
    match e {
        RegistryError::Unknown(_) => CUDA_ERROR_INVALID_HANDLE,
        RegistryError::Full(_) => CUDA_ERROR_OUT_OF_MEMORY,
    }
}

/// Loads `image` on the worker and returns the shim's module handle.
///
/// # Errors
/// The worker's answer (`CUDA_ERROR_INVALID_IMAGE`, …), or `CUDA_ERROR_OUT_OF_MEMORY` when
/// the module table is full.
pub fn load(s: &Session, entry: &'static str, image: &[u8]) -> Result<u64, CUresult> {
    if !tables().module_room() {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    let hash: [u8; 32] = Sha256::digest(image).into();
    let cached = s.conn().sync(
        &Call::ModuleLoadByHash(ModuleLoadByHash { hash }),
        |r| match r {
            Reply::ModuleLoadedByHash(m) => Some(m.module),
            _ => None,
        },
    );
    let remote = match cached {
        Ok(m) => {
            tracing::debug!(
                entry,
                bytes = image.len(),
                "rgpu shim: module loaded by hash"
            );
            m
        }
        Err(CallError::Cuda(e)) if e == CudaError::NOT_FOUND => {
            let call = Call::ModuleLoad(ModuleLoad {
                hash,
                image: Blob(image),
            });
            let m = s
                .conn()
                .sync(&call, |r| match r {
                    Reply::ModuleLoaded(m) => Some(m.module),
                    _ => None,
                })
                .map_err(|e| to_curesult(entry, &e))?;
            tracing::debug!(
                entry,
                bytes = image.len(),
                "rgpu shim: module image shipped"
            );
            m
        }
        Err(e) => return Err(to_curesult(entry, &e)),
    };
    let added = tables().add_module(remote);
    added.map_err(|e| {
        // Undo the load the table cannot hold.
        let _ = unload_remote(s, entry, remote);
        registry_status(e)
    })
}

fn unload_remote(
    s: &Session,
    entry: &'static str,
    module: rgpu_proto::ModuleHandle,
) -> Result<(), CUresult> {
    s.conn()
        .sync(&Call::ModuleUnload(ModuleUnload { module }), |r| {
            matches!(r, Reply::ModuleUnloadReply(_)).then_some(())
        })
        .map_err(|e| to_curesult(entry, &e))
}

/// Unloads module `h`; its functions become invalid.
///
/// # Errors
/// `CUDA_ERROR_INVALID_HANDLE` for an unknown module, or the worker's answer.
pub fn unload(s: &Session, entry: &'static str, h: u64) -> Result<(), CUresult> {
    let remote = tables().remove_module(h).map_err(registry_status)?;
    unload_remote(s, entry, remote)
}

/// Function `name` of module `h` (cached after the first lookup).
///
/// # Errors
/// `CUDA_ERROR_INVALID_HANDLE` for an unknown module, `CUDA_ERROR_NOT_FOUND` for a name the
/// module lacks (or longer than the protocol's bound), or the worker's answer.
pub fn function(s: &Session, entry: &'static str, h: u64, name: &str) -> Result<u64, CUresult> {
    let module = {
        let t = tables();
        if let Some(f) = t.cached(h, name) {
            return Ok(f);
        }
        t.module(h).map_err(registry_status)?
    };
    if name.len() > MAX_NAME_BYTES as usize {
        return Err(CUDA_ERROR_NOT_FOUND);
    }
    let call = Call::FunctionLookup(FunctionLookup {
        module,
        name: Blob(name.as_bytes()),
    });
    let (remote, layout) = s
        .conn()
        .sync(&call, |r| match r {
            Reply::FunctionInfo(f) => Some((f.function, f.params.0.to_vec())),
            _ => None,
        })
        .map_err(|e| to_curesult(entry, &e))?;
    tables()
        .add_function(h, name, remote, layout)
        .map_err(registry_status)
}

/// Geometry and stream of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Blocks per grid.
    pub grid: [u32; 3],
    /// Threads per block.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
    /// Ordering key of the stream.
    pub stream: StreamHandle,
}

/// Launches function `f` with parameters from `kernel_params` or `extra`.
///
/// # Safety
/// As `cuLaunchKernel` for `kernel_params` and `extra` (see
/// [`pack_kernel_params`](super::params::pack_kernel_params)).
///
/// # Errors
/// `CUDA_ERROR_INVALID_HANDLE` for an unknown function, `CUDA_ERROR_INVALID_VALUE` for bad
/// parameters or more than `MAX_LAUNCH_ATTRS` attributes, or a connection failure. The
/// kernel's own failure is deferred to the next sync call.
pub unsafe fn launch(
    s: &Session,
    entry: &'static str,
    f: u64,
    spec: LaunchSpec,
    kernel_params: *mut *mut std::ffi::c_void,
    extra: *mut *mut std::ffi::c_void,
    attrs: &[LaunchAttr],
) -> Result<(), CUresult> {
    let (remote, layout) = {
        let t = tables();
        let func = t.function(f).map_err(registry_status)?;
        (func.remote, func.layout.clone())
    };
    // SAFETY: forwarded from this function's contract.
    let params = unsafe { pack_kernel_params(&layout, kernel_params, extra) }.map_err(|e| {
        tracing::debug!(entry, error = %e, "rgpu shim: launch parameters refused");
        e.code()
    })?;
    let call_attrs;
    let call = if attrs.is_empty() {
        Call::Launch(Launch {
            function: remote,
            grid: spec.grid,
            block: spec.block,
            shared_mem_bytes: spec.shared_mem_bytes,
            params: Blob(&params),
        })
    } else {
        if attrs.len() > MAX_LAUNCH_ATTRS as usize {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let mut encoded = Vec::new();
        LaunchAttr::encode_all(attrs, &mut encoded);
        call_attrs = encoded;
        Call::LaunchEx(LaunchEx {
            function: remote,
            grid: spec.grid,
            block: spec.block,
            shared_mem_bytes: spec.shared_mem_bytes,
            params: Blob(&params),
            attrs: Blob(&call_attrs),
        })
    };
    s.conn()
        .submit_async(&call, spec.stream)
        .map_err(|e| to_curesult(entry, &e))
}
