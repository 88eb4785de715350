//! NVML's C types as this library exposes them: return codes, buffer sizes, and the structs
//! filled for the caller, laid out as in NVIDIA's `nvml.h` (facts from the header and the
//! `ctypes` definitions in PyPI's `nvidia-ml-py`; no code taken). One place, so a layout
//! mistake is fixed once and the size assertions below catch drift.

use std::ffi::{c_char, c_uint, c_ulonglong};

/// `nvmlReturn_t`.
pub type NvmlReturn = c_uint;

/// The call succeeded.
pub const NVML_SUCCESS: NvmlReturn = 0;
/// `nvmlInit` was not called (or `nvmlShutdown` undid it).
pub const NVML_ERROR_UNINITIALIZED: NvmlReturn = 1;
/// A null pointer, an unknown handle or a malformed string.
pub const NVML_ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
/// The device cannot do this (here: rgpu does not report it).
pub const NVML_ERROR_NOT_SUPPORTED: NvmlReturn = 3;
/// No device matches (UUID, PCI bus id, index).
pub const NVML_ERROR_NOT_FOUND: NvmlReturn = 6;
/// The caller's buffer is too small.
pub const NVML_ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
/// No driver: here, no usable rgpu GPU server (the shim logged why).
pub const NVML_ERROR_DRIVER_NOT_LOADED: NvmlReturn = 9;
/// `libcuda.so.1` is missing, or it is not rgpu's shim.
pub const NVML_ERROR_LIBRARY_NOT_FOUND: NvmlReturn = 12;
/// The device was lost (the shim's connection failed).
pub const NVML_ERROR_GPU_IS_LOST: NvmlReturn = 15;
/// A versioned struct came with a version this library does not know.
pub const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;
/// Anything else (including a caught internal panic).
pub const NVML_ERROR_UNKNOWN: NvmlReturn = 999;

/// The text `nvmlErrorString` returns for `code` (NUL-terminated, static).
pub fn error_string(code: NvmlReturn) -> &'static std::ffi::CStr {
    match code {
        NVML_SUCCESS => c"Success",
        NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        NVML_ERROR_NOT_FOUND => c"Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED => {
            c"Driver Not Loaded (rgpu: no usable GPU server; see the rgpu shim's log line)"
        }
        NVML_ERROR_LIBRARY_NOT_FOUND => {
            c"NVML Shared Library Not Found (rgpu: libcuda.so.1 is missing or not rgpu's shim)"
        }
        NVML_ERROR_GPU_IS_LOST => c"GPU is lost",
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH => c"Argument version mismatch",
        _ => c"Unknown Error",
    }
}

/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`: room for a UUID string and its NUL.
pub const UUID_BUFFER_BYTES: usize = 96;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE` (`busIdLegacy`).
pub const PCI_BUS_ID_LEGACY_BYTES: usize = 16;
/// `NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE` (`busId`).
pub const PCI_BUS_ID_BYTES: usize = 32;

/// `nvmlMemory_t` (`nvmlDeviceGetMemoryInfo`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmlMemory {
    /// Total memory: the client's quota.
    pub total: c_ulonglong,
    /// Free memory within the quota.
    pub free: c_ulonglong,
    /// Used memory within the quota.
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t` (`nvmlDeviceGetMemoryInfo_v2`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NvmlMemoryV2 {
    /// Must be [`NVML_MEMORY_V2`].
    pub version: c_uint,
    /// Total memory: the client's quota.
    pub total: c_ulonglong,
    /// Memory the driver reserves (0: rgpu reports the quota only).
    pub reserved: c_ulonglong,
    /// Free memory within the quota.
    pub free: c_ulonglong,
    /// Used memory within the quota.
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`: `NVML_STRUCT_VERSION(Memory, 2)`, the struct size with version 2 in the
/// top byte.
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<NvmlMemoryV2>() as c_uint | (2 << 24);

/// `nvmlPciInfo_t` as the `_v2`/`_v3` entry points fill it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NvmlPciInfo {
    /// `"%04X:%02X:%02X.0"`, NUL-terminated.
    pub bus_id_legacy: [c_char; PCI_BUS_ID_LEGACY_BYTES],
    /// PCI domain.
    pub domain: c_uint,
    /// PCI bus.
    pub bus: c_uint,
    /// PCI device.
    pub device: c_uint,
    /// Combined device and vendor id (0: rgpu does not learn it from the server).
    pub pci_device_id: c_uint,
    /// Sub-system id (0, as above).
    pub pci_sub_system_id: c_uint,
    /// `"%08X:%02X:%02X.0"`, NUL-terminated.
    pub bus_id: [c_char; PCI_BUS_ID_BYTES],
}

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmlUtilization {
    /// Percent of time a kernel ran.
    pub gpu: c_uint,
    /// Percent of time memory was read or written.
    pub memory: c_uint,
}

/// `nvmlProcessInfo_v1_t` (`nvmlDeviceGetComputeRunningProcesses`, the symbol PyTorch's c10
/// looks up).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmlProcessInfoV1 {
    /// Process id.
    pub pid: c_uint,
    /// Device memory the process uses, in bytes.
    pub used_gpu_memory: c_ulonglong,
}

/// `nvmlProcessInfo_v2_t` / `nvmlProcessInfo_t` (`_v2` and `_v3` entry points).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NvmlProcessInfoV2 {
    /// Process id.
    pub pid: c_uint,
    /// Device memory the process uses, in bytes.
    pub used_gpu_memory: c_ulonglong,
    /// MIG GPU instance (`0xFFFFFFFF`: not MIG).
    pub gpu_instance_id: c_uint,
    /// MIG compute instance (`0xFFFFFFFF`: not MIG).
    pub compute_instance_id: c_uint,
}

/// The "no MIG instance" id in process records.
pub const NO_MIG_INSTANCE: c_uint = 0xFFFF_FFFF;

const _: () = {
    assert!(std::mem::size_of::<NvmlMemory>() == 24);
    assert!(std::mem::size_of::<NvmlMemoryV2>() == 40);
    assert!(std::mem::size_of::<NvmlPciInfo>() == 68);
    assert!(std::mem::size_of::<NvmlUtilization>() == 8);
    assert!(std::mem::size_of::<NvmlProcessInfoV1>() == 16);
    assert!(std::mem::size_of::<NvmlProcessInfoV2>() == 24);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_v2_version_is_size_and_version_byte() {
        assert_eq!(NVML_MEMORY_V2, 0x0200_0028);
    }

    #[test]
    fn every_code_has_a_string() {
        assert_eq!(error_string(NVML_SUCCESS).to_str().unwrap(), "Success");
        assert!(error_string(NVML_ERROR_DRIVER_NOT_LOADED)
            .to_str()
            .unwrap()
            .contains("GPU server"));
        assert_eq!(error_string(12345).to_str().unwrap(), "Unknown Error");
    }
}
