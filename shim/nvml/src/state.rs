//! NVML's library state: the `nvmlInit`/`nvmlShutdown` reference count, device handles, and
//! the mapping from driver failures to NVML codes.
//!
//! A device handle (`nvmlDevice_t`) is the address of one slot in a static array; handles from
//! the caller are recognised by comparing addresses, never dereferenced, so a stale or forged
//! handle is `NVML_ERROR_INVALID_ARGUMENT`, not a crash.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use crate::driver::{self, Driver, DriverError};
use crate::types::{
    NvmlReturn, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_NOT_FOUND, NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED, NVML_ERROR_UNKNOWN,
};

/// `nvmlDevice_t`: an opaque pointer.
pub type NvmlDevice = *mut c_void;

/// Most devices this library hands out handles for (the shim grants one today).
pub const DEVICES_MAX: usize = 16;
/// Most nested `nvmlInit` calls counted (NVML counts them; past this they still succeed).
pub const INIT_DEPTH_MAX: u32 = 1 << 20;

/// `CUDA_ERROR_DEVICE_UNAVAILABLE`: the shim's connection is lost.
const CUDA_ERROR_DEVICE_UNAVAILABLE: c_int = 46;
/// `CUDA_ERROR_INVALID_VALUE` / `CUDA_ERROR_INVALID_DEVICE`.
const CUDA_ERROR_INVALID_VALUE: c_int = 1;
const CUDA_ERROR_INVALID_DEVICE: c_int = 101;
/// `CUDA_ERROR_NOT_SUPPORTED`: the worker cannot answer (e.g. no utilization window).
const CUDA_ERROR_NOT_SUPPORTED: c_int = 801;

/// One handle target. Never read: only its address matters.
#[repr(C)]
pub struct DeviceSlot {
    _index: u32,
}

static SLOTS: [DeviceSlot; DEVICES_MAX] = {
    let mut slots = [const { DeviceSlot { _index: 0 } }; DEVICES_MAX];
    let mut i = 0;
    while i < DEVICES_MAX {
        slots[i] = DeviceSlot { _index: i as u32 };
        i += 1;
    }
    slots
};

/// How many `nvmlInit`s are not yet matched by `nvmlShutdown`.
static INIT_DEPTH: Mutex<u32> = Mutex::new(0);

fn depth() -> std::sync::MutexGuard<'static, u32> {
    // A poisoned lock only means a panic elsewhere mid-update of a plain counter.
    INIT_DEPTH.lock().unwrap_or_else(|p| p.into_inner())
}

/// The NVML code for a driver failure.
pub fn code_of(err: &DriverError) -> NvmlReturn {
    match err {
        DriverError::Load(_) | DriverError::NotShim | DriverError::Missing(_) => {
            NVML_ERROR_LIBRARY_NOT_FOUND
        }
        DriverError::Cuda { call: "cuInit", .. } => NVML_ERROR_DRIVER_NOT_LOADED,
        DriverError::Cuda {
            code: CUDA_ERROR_DEVICE_UNAVAILABLE,
            ..
        } => NVML_ERROR_GPU_IS_LOST,
        DriverError::Cuda {
            code: CUDA_ERROR_INVALID_VALUE | CUDA_ERROR_INVALID_DEVICE,
            ..
        } => NVML_ERROR_INVALID_ARGUMENT,
        DriverError::Cuda {
            code: CUDA_ERROR_NOT_SUPPORTED,
            ..
        } => NVML_ERROR_NOT_SUPPORTED,
        DriverError::Cuda { .. } => NVML_ERROR_UNKNOWN,
    }
}

/// Logs a driver failure once per entry point and returns its NVML code.
pub fn fail(entry: &'static str, err: DriverError) -> NvmlReturn {
    if crate::guard::once_per_name(entry) {
        tracing::warn!(entry, "rgpu nvml: {err}");
    }
    code_of(&err)
}

/// `nvmlInit*`: loads and initialises the driver (once per process) and counts the call.
pub fn init() -> Result<(), NvmlReturn> {
    driver::get().map_err(code_of)?;
    let mut d = depth();
    *d = (*d + 1).min(INIT_DEPTH_MAX);
    Ok(())
}

/// `nvmlShutdown`: undoes one `nvmlInit` (`NVML_ERROR_UNINITIALIZED` if none is left).
pub fn shutdown() -> Result<(), NvmlReturn> {
    let mut d = depth();
    if *d == 0 {
        return Err(NVML_ERROR_UNINITIALIZED);
    }
    *d -= 1;
    Ok(())
}

/// The driver, for a call made between `nvmlInit` and the matching `nvmlShutdown`.
pub fn driver() -> Result<&'static Driver, NvmlReturn> {
    if *depth() == 0 {
        return Err(NVML_ERROR_UNINITIALIZED);
    }
    driver::get().map_err(code_of)
}

/// The handle of device `index`.
pub fn handle(index: u32) -> Result<NvmlDevice, NvmlReturn> {
    let slot = SLOTS
        .get(index as usize)
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
    Ok(std::ptr::from_ref(slot).cast_mut().cast::<c_void>())
}

/// The index a handle stands for (address comparison only).
pub fn index_of(handle: NvmlDevice) -> Result<u32, NvmlReturn> {
    SLOTS
        .iter()
        .position(|s| std::ptr::eq(std::ptr::from_ref(s).cast::<c_void>(), handle.cast_const()))
        .map(|i| i as u32)
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)
}

/// The driver and CUDA ordinal for `handle`, checked against the device count.
pub fn device(
    entry: &'static str,
    handle: NvmlDevice,
) -> Result<(&'static Driver, c_int), NvmlReturn> {
    let d = driver()?;
    let index = index_of(handle)?;
    let count = d.device_count().map_err(|e| fail(entry, e))?;
    if index >= count {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    Ok((d, c_int::try_from(index).map_err(|_| NVML_ERROR_NOT_FOUND)?))
}

/// Checks a device index against the count and gives its handle.
pub fn handle_by_index(entry: &'static str, index: u32) -> Result<NvmlDevice, NvmlReturn> {
    let count = driver()?.device_count().map_err(|e| fail(entry, e))?;
    if index >= count {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    handle(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_foreign_pointers_are_refused() {
        for i in [0, 1, DEVICES_MAX as u32 - 1] {
            assert_eq!(index_of(handle(i).unwrap()), Ok(i));
        }
        assert_eq!(handle(DEVICES_MAX as u32), Err(NVML_ERROR_INVALID_ARGUMENT));
        let mut other = 0u32;
        let foreign = std::ptr::from_mut(&mut other).cast::<c_void>();
        assert_eq!(index_of(foreign), Err(NVML_ERROR_INVALID_ARGUMENT));
        assert_eq!(
            index_of(std::ptr::null_mut()),
            Err(NVML_ERROR_INVALID_ARGUMENT)
        );
    }

    #[test]
    fn driver_failures_map_to_nvml_codes() {
        assert_eq!(code_of(&DriverError::NotShim), NVML_ERROR_LIBRARY_NOT_FOUND);
        let no_device = DriverError::Cuda {
            call: "cuInit",
            code: 100,
        };
        assert_eq!(code_of(&no_device), NVML_ERROR_DRIVER_NOT_LOADED);
        let lost = DriverError::Cuda {
            call: "cuMemGetInfo_v2",
            code: 46,
        };
        assert_eq!(code_of(&lost), NVML_ERROR_GPU_IS_LOST);
        let no_window = DriverError::Cuda {
            call: crate::driver::SHIM_UTILIZATION,
            code: 801,
        };
        assert_eq!(code_of(&no_window), NVML_ERROR_NOT_SUPPORTED);
    }

    #[test]
    fn calls_before_init_are_uninitialized() {
        // No test calls init (it would dlopen libcuda.so.1), so the depth stays 0.
        assert_eq!(shutdown(), Err(NVML_ERROR_UNINITIALIZED));
        assert!(matches!(driver(), Err(NVML_ERROR_UNINITIALIZED)));
    }
}
