//! Kernel launch entry points: `cuLaunchKernel`, `cuLaunchKernelEx` and
//! `cuLaunchCooperativeKernel`, each with its per-thread-default-stream (`_ptsz`) variant.
//!
//! Parameters are packed per the layout the worker returned at lookup (`kernel::params`) and
//! the launch goes out as an async call on the stream's ordering key: the kernel's own
//! failure is the deferred error of the next sync call. Launch attributes travel as
//! `LaunchAttr` records: those whose value fits 12 bytes are forwarded; access-policy windows
//! and event- or node-carrying attributes are `CUDA_ERROR_NOT_SUPPORTED` (logged once each),
//! unknown ids `CUDA_ERROR_INVALID_VALUE`.

use std::ffi::{c_uint, c_void};

use rgpu_proto::{LaunchAttr, MAX_LAUNCH_ATTRS};

use crate::cuda_types::{
    CUfunction, CUresult, CUstream, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED,
};
use crate::entry::stream::{stream_key, stream_key_per_thread};
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::kernel::ops::{self, LaunchSpec};
use crate::logging::once_per_name;

/// `CU_LAUNCH_ATTRIBUTE_IGNORE`.
pub const CU_LAUNCH_ATTRIBUTE_IGNORE: u32 = 0;
/// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`.
pub const CU_LAUNCH_ATTRIBUTE_COOPERATIVE: u32 = 2;
/// Attribute ids forwarded with the first 12 bytes of their value: cooperative (2),
/// synchronization policy (3), cluster dimension (4), cluster scheduling policy (5),
/// programmatic stream serialization (6), priority (8), memory-sync domain map (9) and domain
/// (10), preferred cluster dimension (11), preferred shared-memory carveout (14).
pub const FORWARDED_ATTRIBUTES: [u32; 10] = [2, 3, 4, 5, 6, 8, 9, 10, 11, 14];
/// Attribute ids the protocol cannot carry: access-policy window (1, 32 bytes with a device
/// pointer), programmatic event (7), launch completion event (12), device-updatable kernel
/// node (13, an output).
pub const REFUSED_ATTRIBUTES: [u32; 4] = [1, 7, 12, 13];
/// Bytes of a `CUlaunchAttribute` (id, padding, 64-byte value union).
const LAUNCH_ATTRIBUTE_BYTES: usize = 72;

/// `CUlaunchConfig` as `cuda.h` lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUlaunchConfig {
    /// Grid size.
    pub grid: [c_uint; 3],
    /// Block size.
    pub block: [c_uint; 3],
    /// Dynamic shared memory per block.
    pub shared_mem_bytes: c_uint,
    /// Stream.
    pub stream: CUstream,
    /// `CUlaunchAttribute` array.
    pub attrs: *const u8,
    /// Entries in `attrs`.
    pub num_attrs: c_uint,
}
const _: () = assert!(std::mem::size_of::<CUlaunchConfig>() == 56);

/// Converts the attributes of a `CUlaunchConfig` (raw 72-byte records) to wire records.
///
/// # Errors
/// `CUDA_ERROR_NOT_SUPPORTED` for attributes the protocol cannot carry or more than
/// `MAX_LAUNCH_ATTRS` of them; `CUDA_ERROR_INVALID_VALUE` for unknown ids.
pub fn convert_attrs(raw: &[u8]) -> Result<Vec<LaunchAttr>, CUresult> {
    let mut out = Vec::new();
    for rec in raw.chunks_exact(LAUNCH_ATTRIBUTE_BYTES) {
        let w = |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
        let id = w(0);
        if id == CU_LAUNCH_ATTRIBUTE_IGNORE {
            continue;
        }
        if REFUSED_ATTRIBUTES.contains(&id) {
            if once_per_name("launch-attribute", &id.to_string()) {
                tracing::warn!(
                    attribute = id,
                    "rgpu shim: launch attribute not forwarded, returning CUDA_ERROR_NOT_SUPPORTED"
                );
            }
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        if !FORWARDED_ATTRIBUTES.contains(&id) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if out.len() >= MAX_LAUNCH_ATTRS as usize {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        // The value union starts at byte 8.
        out.push(LaunchAttr {
            id,
            value: [w(8), w(12), w(16)],
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    entry: &'static str,
    f: CUfunction,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared_mem_bytes: c_uint,
    stream: Result<rgpu_proto::StreamHandle, CUresult>,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    attrs: &[LaunchAttr],
) -> CUresult {
    with_session(|s| {
        let spec = LaunchSpec {
            grid,
            block,
            shared_mem_bytes,
            stream: stream?,
        };
        // SAFETY: the entry point's contract covers `kernel_params` and `extra`.
        unsafe {
            ops::launch(
                s,
                entry,
                f as usize as u64,
                spec,
                kernel_params,
                extra,
                attrs,
            )
        }
    })
}

/// `cuLaunchKernel`.
///
/// # Safety
/// As the driver's: `kernel_params` null or one valid pointer per parameter; `extra` null or
/// a well-formed `extra` array.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchKernel", || {
        let key = stream_key(stream);
        launch(
            "cuLaunchKernel",
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            key,
            kernel_params,
            extra,
            &[],
        )
    })
}

/// `cuLaunchKernel_ptsz`: the null stream is the calling thread's per-thread stream.
///
/// # Safety
/// As [`cuLaunchKernel`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchKernel_ptsz(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchKernel_ptsz", || {
        let key = stream_key_per_thread(stream);
        launch(
            "cuLaunchKernel_ptsz",
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            key,
            kernel_params,
            extra,
            &[],
        )
    })
}

fn launch_ex(
    entry: &'static str,
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    per_thread: bool,
) -> CUresult {
    if config.is_null() || !config.is_aligned() {
        return CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: non-null and aligned; the caller passes a valid CUlaunchConfig.
    let c = unsafe { config.read() };
    let raw: &[u8] = if c.num_attrs == 0 {
        &[]
    } else if c.attrs.is_null() {
        return CUDA_ERROR_INVALID_VALUE;
    } else if c.num_attrs as usize > 4 * MAX_LAUNCH_ATTRS as usize {
        return CUDA_ERROR_NOT_SUPPORTED;
    } else {
        // SAFETY: `attrs` holds `num_attrs` CUlaunchAttribute records (caller's promise),
        // bounded above.
        unsafe {
            std::slice::from_raw_parts(c.attrs, c.num_attrs as usize * LAUNCH_ATTRIBUTE_BYTES)
        }
    };
    let attrs = match convert_attrs(raw) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let key = if per_thread {
        stream_key_per_thread(c.stream)
    } else {
        stream_key(c.stream)
    };
    // An attribute-free launch travels as a plain Launch (no LaunchEx needed).
    launch(
        entry,
        f,
        c.grid,
        c.block,
        c.shared_mem_bytes,
        key,
        kernel_params,
        extra,
        &attrs,
    )
}

/// `cuLaunchKernelEx`.
///
/// # Safety
/// `config` null or a valid `CUlaunchConfig` (its `attrs` holding `numAttrs` entries); the
/// parameters as [`cuLaunchKernel`].
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchKernelEx", || {
        launch_ex("cuLaunchKernelEx", config, f, kernel_params, extra, false)
    })
}

/// `cuLaunchKernelEx_ptsz`.
///
/// # Safety
/// As [`cuLaunchKernelEx`].
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx_ptsz(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchKernelEx_ptsz", || {
        launch_ex(
            "cuLaunchKernelEx_ptsz",
            config,
            f,
            kernel_params,
            extra,
            true,
        )
    })
}

const COOPERATIVE: [LaunchAttr; 1] = [LaunchAttr {
    id: CU_LAUNCH_ATTRIBUTE_COOPERATIVE,
    value: [1, 0, 0],
}];

/// `cuLaunchCooperativeKernel`: a launch with the cooperative attribute.
///
/// # Safety
/// As [`cuLaunchKernel`] (no `extra` form).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchCooperativeKernel", || {
        let key = stream_key(stream);
        launch(
            "cuLaunchCooperativeKernel",
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            key,
            kernel_params,
            std::ptr::null_mut(),
            &COOPERATIVE,
        )
    })
}

/// `cuLaunchCooperativeKernel_ptsz`.
///
/// # Safety
/// As [`cuLaunchCooperativeKernel`].
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel_ptsz(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuLaunchCooperativeKernel_ptsz", || {
        let key = stream_key_per_thread(stream);
        launch(
            "cuLaunchCooperativeKernel_ptsz",
            f,
            [gx, gy, gz],
            [bx, by, bz],
            shared_mem_bytes,
            key,
            kernel_params,
            std::ptr::null_mut(),
            &COOPERATIVE,
        )
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    let f: *const c_void = match (name, version) {
        ("cuLaunchKernel", 4000) => cuLaunchKernel as *const c_void,
        ("cuLaunchKernelEx", 11060) => cuLaunchKernelEx as *const c_void,
        ("cuLaunchCooperativeKernel", 9000) => cuLaunchCooperativeKernel as *const c_void,
        _ => return None,
    };
    Some(f)
}

pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    let f: *const c_void = match (name, version) {
        ("cuLaunchKernel", 7000) => cuLaunchKernel_ptsz as *const c_void,
        ("cuLaunchKernelEx", 11060) => cuLaunchKernelEx_ptsz as *const c_void,
        ("cuLaunchCooperativeKernel", 9000) => cuLaunchCooperativeKernel_ptsz as *const c_void,
        _ => return None,
    };
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u32, value: [u32; 3]) -> Vec<u8> {
        let mut r = vec![0u8; LAUNCH_ATTRIBUTE_BYTES];
        r[0..4].copy_from_slice(&id.to_le_bytes());
        for (i, v) in value.iter().enumerate() {
            r[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        r
    }

    #[test]
    fn attributes_are_forwarded_refused_or_rejected() {
        let raw = [
            record(2, [1, 0, 0]),
            record(0, [9, 9, 9]),
            record(4, [2, 1, 1]),
        ]
        .concat();
        assert_eq!(
            convert_attrs(&raw),
            Ok(vec![
                LaunchAttr {
                    id: 2,
                    value: [1, 0, 0]
                },
                LaunchAttr {
                    id: 4,
                    value: [2, 1, 1]
                },
            ])
        );
        assert_eq!(
            convert_attrs(&record(7, [0; 3])),
            Err(CUDA_ERROR_NOT_SUPPORTED)
        );
        assert_eq!(
            convert_attrs(&record(99, [0; 3])),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        let many = record(8, [1, 0, 0]).repeat(MAX_LAUNCH_ATTRS as usize + 1);
        assert_eq!(convert_attrs(&many), Err(CUDA_ERROR_NOT_SUPPORTED));
        assert_eq!(convert_attrs(&[]), Ok(vec![]));
    }
}
