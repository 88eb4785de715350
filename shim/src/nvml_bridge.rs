//! The one rgpu-only export that rgpu's NVML library (`libnvidia-ml.so.1`, `shim/nvml/`)
//! calls beyond the driver API: the device's utilization. Exists because no driver-API call
//! reports how busy a device is, and NVML must ask through this process's one session (one
//! connection, one worker, one grant) rather than open its own.
//!
//! The worker answers `DeviceGetUtilization` from its share board: the whole device's
//! kernel-busy percent over its last sample period (`docs/worker.md`, "Device utilization").

use std::ffi::{c_int, c_uint};

use rgpu_proto::{Call, DeviceGetUtilization, Reply};

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::{device_count_check, with_session};
use crate::ffi_guard::ffi_guard;
use crate::remote::session::to_curesult;

/// rgpu only (no CUDA equivalent; NVML's `nvmlDeviceGetUtilizationRates` behind it): writes the
/// device's kernel-busy percent (0..=100) over the worker's last sample period to `gpu`, and
/// the memory-controller percent, which rgpu does not measure (always 0), to `memory`. One round
/// trip. `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`, `CUDA_ERROR_INVALID_DEVICE` for a bad
/// ordinal, `CUDA_ERROR_INVALID_VALUE` for a null pointer, `CUDA_ERROR_NOT_SUPPORTED` from a
/// worker that keeps no utilization window.
///
/// # Safety
/// `gpu` and `memory` must be null or point at writable `unsigned int`s.
#[no_mangle]
pub unsafe extern "C" fn rgpu_shim_device_utilization(
    ordinal: c_int,
    gpu: *mut c_uint,
    memory: *mut c_uint,
) -> CUresult {
    ffi_guard("rgpu_shim_device_utilization", || {
        with_session(|s| {
            device_count_check(ordinal)?;
            if gpu.is_null() || memory.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let device = u32::try_from(ordinal).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            let call = Call::DeviceGetUtilization(DeviceGetUtilization { device });
            let (g, m) = s
                .conn()
                .sync(&call, |r| match r {
                    Reply::DeviceUtilization(u) => Some((u.gpu_percent, u.memory_percent)),
                    _ => None,
                })
                .map_err(|e| to_curesult("rgpu_shim_device_utilization", &e))?;
            // The worker clamps to 100; a peer's larger value is clamped here too.
            write_out(gpu, g.min(100))?;
            write_out(memory, m.min(100))
        })
    })
}
