//! Local device queries, answered from the facts cached at connect (`cuDeviceGet*`).
//!
//! Attributes are asked of the server once each and then cached; an attribute the server does
//! not know is `CUDA_ERROR_INVALID_VALUE`, logged once per attribute number.

use std::ffi::{c_char, c_int, c_void};

use crate::cuda_types::{CUdevice, CUresult, CUuuid, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::remote::session::to_curesult;

/// Longest device name written (the driver's buffers are 256 bytes).
pub const DEVICE_NAME_BYTES_MAX: usize = 256;

/// `cuDeviceGet`.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    ffi_guard("cuDeviceGet", || {
        with_session(|_| {
            super::device_count_check(ordinal)?;
            write_out(device, ordinal)
        })
    })
}

/// `cuDeviceGetName`: the server's device name, truncated to `len - 1` bytes plus NUL.
///
/// # Safety
/// `name` must be null or point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    ffi_guard("cuDeviceGetName", || {
        with_session(|s| {
            super::device_count_check(dev)?;
            let len = usize::try_from(len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            if len == 0 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let len = len.min(DEVICE_NAME_BYTES_MAX);
            let out = crate::host_mem::host_bytes_mut(name.cast::<c_void>(), len)?;
            let text = s.facts.name.as_bytes();
            let n = text.len().min(len - 1);
            out[..n].copy_from_slice(&text[..n]);
            out[n] = 0;
            Ok(())
        })
    })
}

/// `cuDeviceTotalMem_v2`: the memory granted to this client (its quota).
///
/// # Safety
/// `bytes` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    ffi_guard("cuDeviceTotalMem_v2", || {
        with_session(|s| {
            super::device_count_check(dev)?;
            let total =
                usize::try_from(s.facts.total_bytes).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            write_out(bytes, total)
        })
    })
}

/// `cuDeviceGetAttribute`.
///
/// # Safety
/// `value` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    value: *mut c_int,
    attribute: c_int,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuDeviceGetAttribute", || {
        with_session(|s| {
            super::device_count_check(dev)?;
            let number = u32::try_from(attribute).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            match s.attribute(number) {
                Ok(v) => write_out(value, v),
                Err(e) => {
                    let status = to_curesult("cuDeviceGetAttribute", &e);
                    if status == CUDA_ERROR_INVALID_VALUE
                        && crate::logging::once_per_name("attribute", &number.to_string())
                    {
                        tracing::warn!(
                            attribute = number,
                            "rgpu shim: device attribute unknown to the server"
                        );
                    }
                    Err(status)
                }
            }
        })
    })
}

/// `cuDeviceGetUuid` and `cuDeviceGetUuid_v2` (same ABI).
///
/// # Safety
/// `uuid` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    ffi_guard("cuDeviceGetUuid", || {
        with_session(|s| {
            super::device_count_check(dev)?;
            write_out(
                uuid,
                CUuuid {
                    bytes: s.facts.uuid,
                },
            )
        })
    })
}

/// `cuDeviceComputeCapability` (deprecated, still asked for): from the two attributes.
///
/// # Safety
/// `major` and `minor` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuDeviceComputeCapability", || {
        with_session(|s| {
            super::device_count_check(dev)?;
            let get = |a| {
                s.attribute(a)
                    .map_err(|e| to_curesult("cuDeviceComputeCapability", &e))
            };
            write_out(major, get(ATTR_COMPUTE_CAPABILITY_MAJOR)?)?;
            write_out(minor, get(ATTR_COMPUTE_CAPABILITY_MINOR)?)
        })
    })
}

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
const ATTR_COMPUTE_CAPABILITY_MAJOR: u32 = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
const ATTR_COMPUTE_CAPABILITY_MINOR: u32 = 76;

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuDeviceGet", 2000) => cuDeviceGet as *const c_void,
        ("cuDeviceGetName", 2000) => cuDeviceGetName as *const c_void,
        ("cuDeviceTotalMem", 3020) => cuDeviceTotalMem_v2 as *const c_void,
        ("cuDeviceGetAttribute", 2000) => cuDeviceGetAttribute as *const c_void,
        ("cuDeviceGetUuid", 9020 | 11040) => cuDeviceGetUuid as *const c_void,
        ("cuDeviceComputeCapability", 2000) => cuDeviceComputeCapability as *const c_void,
        _ => return None,
    })
}
