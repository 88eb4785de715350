//! The NVML entry points rgpu answers: initialisation, system versions, device enumeration
//! and lookup, name, UUID, PCI location, compute capability, memory (the client's quota) and
//! the running compute processes (this process), utilization. Each runs inside [`guard`], takes
//! its facts from the shim through [`state`], and writes through [`out`].
//!
//! Utilization is measured by the worker (the whole device's kernel time over its last sample
//! period, from the compute-share board) and asked through the shim's rgpu-only
//! `rgpu_shim_device_utilization` export; the memory-controller figure is not measured and
//! reported as 0. A shim without that export: `NVML_ERROR_NOT_SUPPORTED`, logged once.

use std::ffi::{c_char, c_int, c_uint};

use crate::driver::DriverError;
use crate::guard::{guard, once_per_name};
use crate::out;
use crate::state::{self, fail, NvmlDevice};
use crate::types::*;

/// What `nvmlSystemGetDriverVersion` reports: no NVIDIA driver is loaded in this process, so
/// the string names rgpu instead of inventing an NVIDIA version number.
pub const DRIVER_VERSION_TEXT: &str = concat!("rgpu-", env!("CARGO_PKG_VERSION"));

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, NVML's UUID text, from the 16 bytes CUDA reports.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Parses `[domain:]bus:device.function` (hex) into (domain, bus, device).
pub fn parse_pci_bus_id(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts: Vec<&str> = text.trim().split(':').collect();
    let dev_fn = parts.pop()?;
    let bus = parts.pop()?;
    let domain = parts.pop().unwrap_or("0");
    if !parts.is_empty() {
        return None;
    }
    let device = dev_fn.split('.').next()?;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    Some((hex(domain)?, hex(bus)?, hex(device)?))
}

/// The device's PCI location from the shim's attributes.
fn pci_of(entry: &'static str, handle: NvmlDevice) -> Result<NvmlPciInfo, NvmlReturn> {
    let (d, dev) = state::device(entry, handle)?;
    let attr = |a| {
        d.attribute(a, dev)
            .map(|v| v as u32)
            .map_err(|e| fail(entry, e))
    };
    let domain = attr(crate::driver::ATTR_PCI_DOMAIN_ID)?;
    let bus = attr(crate::driver::ATTR_PCI_BUS_ID)?;
    let device = attr(crate::driver::ATTR_PCI_DEVICE_ID)?;
    Ok(NvmlPciInfo {
        bus_id_legacy: out::fill_chars(&format!("{domain:04X}:{bus:02X}:{device:02X}.0")),
        domain,
        bus,
        device,
        pci_device_id: 0,
        pci_sub_system_id: 0,
        bus_id: out::fill_chars(&format!("{domain:08X}:{bus:02X}:{device:02X}.0")),
    })
}

/// (free, total, used) of the quota.
fn memory_of(entry: &'static str, handle: NvmlDevice) -> Result<(u64, u64, u64), NvmlReturn> {
    let (d, _) = state::device(entry, handle)?;
    let (free, total) = d.mem_info().map_err(|e| fail(entry, e))?;
    Ok((free, total, total.saturating_sub(free)))
}

/// `nvmlInit_v2`: connects through the shim's session (the shim's `cuInit`).
#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    guard("nvmlInit_v2", state::init)
}

/// `nvmlInit` (the pre-v2 name).
#[no_mangle]
pub extern "C" fn nvmlInit() -> NvmlReturn {
    guard("nvmlInit", state::init)
}

/// `nvmlInitWithFlags`: the flags (no-GPU and no-attach hints) change nothing here.
#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    guard("nvmlInitWithFlags", state::init)
}

/// `nvmlShutdown`: undoes one init. The shim's session stays (it belongs to the process).
#[no_mangle]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    guard("nvmlShutdown", state::shutdown)
}

/// `nvmlErrorString`: a static description of `result`. Cannot fail or panic (a table
/// lookup), so it needs no guard.
#[no_mangle]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    error_string(result).as_ptr()
}

/// `nvmlSystemGetDriverVersion`: [`DRIVER_VERSION_TEXT`].
///
/// # Safety
/// `version` must be null or writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard("nvmlSystemGetDriverVersion", || {
        state::driver()?;
        // SAFETY: the caller's contract above.
        unsafe { out::write_str(version, length, DRIVER_VERSION_TEXT) }
    })
}

fn cuda_driver_version(entry: &'static str, version: *mut c_int) -> Result<(), NvmlReturn> {
    let v = state::driver()?
        .driver_version()
        .map_err(|e| fail(entry, e))?;
    // SAFETY: the exported callers pass on their caller's contract (null or writable).
    unsafe { out::write(version, v) }
}

/// `nvmlSystemGetCudaDriverVersion`: the shim's `cuDriverGetVersion`.
///
/// # Safety
/// `version` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> NvmlReturn {
    guard("nvmlSystemGetCudaDriverVersion", move || {
        cuda_driver_version("nvmlSystemGetCudaDriverVersion", version)
    })
}

/// `nvmlSystemGetCudaDriverVersion_v2`: as above.
///
/// # Safety
/// `version` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> NvmlReturn {
    guard("nvmlSystemGetCudaDriverVersion_v2", move || {
        cuda_driver_version("nvmlSystemGetCudaDriverVersion_v2", version)
    })
}

fn device_count(entry: &'static str, count: *mut c_uint) -> Result<(), NvmlReturn> {
    let n = state::driver()?
        .device_count()
        .map_err(|e| fail(entry, e))?;
    // SAFETY: the exported callers pass on their caller's contract (null or writable).
    unsafe { out::write(count, n) }
}

/// `nvmlDeviceGetCount_v2`: the devices the server granted (1).
///
/// # Safety
/// `count` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    guard("nvmlDeviceGetCount_v2", move || {
        device_count("nvmlDeviceGetCount_v2", count)
    })
}

/// `nvmlDeviceGetCount`: as `_v2`.
///
/// # Safety
/// `count` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> NvmlReturn {
    guard("nvmlDeviceGetCount", move || {
        device_count("nvmlDeviceGetCount", count)
    })
}

fn handle_by_index(
    entry: &'static str,
    index: c_uint,
    device: *mut NvmlDevice,
) -> Result<(), NvmlReturn> {
    let h = state::handle_by_index(entry, index)?;
    // SAFETY: the exported callers pass on their caller's contract (null or writable).
    unsafe { out::write(device, h) }
}

/// `nvmlDeviceGetHandleByIndex_v2`.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    guard("nvmlDeviceGetHandleByIndex_v2", move || {
        handle_by_index("nvmlDeviceGetHandleByIndex_v2", index, device)
    })
}

/// `nvmlDeviceGetHandleByIndex`: as `_v2`.
///
/// # Safety
/// `device` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    guard("nvmlDeviceGetHandleByIndex", move || {
        handle_by_index("nvmlDeviceGetHandleByIndex", index, device)
    })
}

/// Finds the device whose fact `matches`.
fn find_device(
    entry: &'static str,
    matches: impl Fn(NvmlDevice) -> Result<bool, NvmlReturn>,
) -> Result<NvmlDevice, NvmlReturn> {
    let count = state::driver()?
        .device_count()
        .map_err(|e| fail(entry, e))?;
    for i in 0..count.min(state::DEVICES_MAX as u32) {
        let h = state::handle(i)?;
        if matches(h)? {
            return Ok(h);
        }
    }
    Err(NVML_ERROR_NOT_FOUND)
}

/// `nvmlDeviceGetHandleByUUID`: matches [`uuid_text`] (case-insensitive).
///
/// # Safety
/// `uuid` must be null or a NUL-terminated string; `device` null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    guard("nvmlDeviceGetHandleByUUID", move || {
        const ENTRY: &str = "nvmlDeviceGetHandleByUUID";
        // SAFETY: the caller's contract above.
        let wanted = unsafe { out::read_str(uuid) }?.trim().to_ascii_lowercase();
        let h = find_device(ENTRY, |h| {
            let (d, dev) = state::device(ENTRY, h)?;
            let u = d.uuid(dev).map_err(|e| fail(ENTRY, e))?;
            Ok(uuid_text(&u).to_ascii_lowercase() == wanted)
        })?;
        // SAFETY: the caller's contract above.
        unsafe { out::write(device, h) }
    })
}

fn handle_by_pci(
    entry: &'static str,
    bus_id: *const c_char,
    device: *mut NvmlDevice,
) -> Result<(), NvmlReturn> {
    // SAFETY: the exported callers pass on their caller's contract (NUL-terminated or null).
    let text = unsafe { out::read_str(bus_id) }?;
    let wanted = parse_pci_bus_id(text).ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
    let h = find_device(entry, |h| {
        let p = pci_of(entry, h)?;
        Ok((p.domain, p.bus, p.device) == wanted)
    })?;
    // SAFETY: as above (null or writable).
    unsafe { out::write(device, h) }
}

/// `nvmlDeviceGetHandleByPciBusId_v2`: `[domain:]bus:device.function`, hex.
///
/// # Safety
/// `bus_id` must be null or a NUL-terminated string; `device` null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus_id: *const c_char,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    guard("nvmlDeviceGetHandleByPciBusId_v2", move || {
        handle_by_pci("nvmlDeviceGetHandleByPciBusId_v2", bus_id, device)
    })
}

/// `nvmlDeviceGetHandleByPciBusId`: as `_v2`.
///
/// # Safety
/// `bus_id` must be null or a NUL-terminated string; `device` null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    bus_id: *const c_char,
    device: *mut NvmlDevice,
) -> NvmlReturn {
    guard("nvmlDeviceGetHandleByPciBusId", move || {
        handle_by_pci("nvmlDeviceGetHandleByPciBusId", bus_id, device)
    })
}

/// `nvmlDeviceGetName`: the server's device name.
///
/// # Safety
/// `name` must be null or writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: NvmlDevice,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard("nvmlDeviceGetName", move || {
        const ENTRY: &str = "nvmlDeviceGetName";
        let (d, dev) = state::device(ENTRY, device)?;
        let text = d.name(dev).map_err(|e| fail(ENTRY, e))?;
        // SAFETY: the caller's contract above.
        unsafe { out::write_str(name, length, &text) }
    })
}

/// `nvmlDeviceGetUUID`: [`uuid_text`] of the shim's `cuDeviceGetUuid`, so it matches what
/// `cudaGetDeviceProperties` reports.
///
/// # Safety
/// `uuid` must be null or writable for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: NvmlDevice,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard("nvmlDeviceGetUUID", move || {
        const ENTRY: &str = "nvmlDeviceGetUUID";
        let (d, dev) = state::device(ENTRY, device)?;
        let u = d.uuid(dev).map_err(|e| fail(ENTRY, e))?;
        // SAFETY: the caller's contract above.
        unsafe { out::write_str(uuid, length, &uuid_text(&u)) }
    })
}

/// `nvmlDeviceGetIndex`.
///
/// # Safety
/// `index` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: NvmlDevice, index: *mut c_uint) -> NvmlReturn {
    guard("nvmlDeviceGetIndex", move || {
        let (_, dev) = state::device("nvmlDeviceGetIndex", device)?;
        // SAFETY: the caller's contract above.
        unsafe { out::write(index, dev as c_uint) }
    })
}

/// `nvmlDeviceGetMemoryInfo`: total = the client's quota, free and used within it (one round
/// trip to the worker).
///
/// # Safety
/// `memory` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: NvmlDevice,
    memory: *mut NvmlMemory,
) -> NvmlReturn {
    guard("nvmlDeviceGetMemoryInfo", move || {
        let (free, total, used) = memory_of("nvmlDeviceGetMemoryInfo", device)?;
        // SAFETY: the caller's contract above.
        unsafe { out::write(memory, NvmlMemory { total, free, used }) }
    })
}

/// `nvmlDeviceGetMemoryInfo_v2`: as above; `version` must be `nvmlMemory_v2`, `reserved` is 0.
///
/// # Safety
/// `memory` must be null or readable and writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: NvmlDevice,
    memory: *mut NvmlMemoryV2,
) -> NvmlReturn {
    guard("nvmlDeviceGetMemoryInfo_v2", move || {
        // SAFETY: the caller's contract above.
        let given = unsafe { out::read(memory) }?;
        if given.version != NVML_MEMORY_V2 {
            return Err(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let (free, total, used) = memory_of("nvmlDeviceGetMemoryInfo_v2", device)?;
        let answer = NvmlMemoryV2 {
            version: NVML_MEMORY_V2,
            total,
            reserved: 0,
            free,
            used,
        };
        // SAFETY: the caller's contract above.
        unsafe { out::write(memory, answer) }
    })
}

fn pci_info(
    entry: &'static str,
    device: NvmlDevice,
    pci: *mut NvmlPciInfo,
) -> Result<(), NvmlReturn> {
    let p = pci_of(entry, device)?;
    // SAFETY: the exported callers pass on their caller's contract (null or writable).
    unsafe { out::write(pci, p) }
}

/// `nvmlDeviceGetPciInfo_v3`: domain, bus and device from the shim's attributes; the PCI
/// vendor/device ids are 0 (the server does not report them).
///
/// # Safety
/// `pci` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: NvmlDevice,
    pci: *mut NvmlPciInfo,
) -> NvmlReturn {
    guard("nvmlDeviceGetPciInfo_v3", move || {
        pci_info("nvmlDeviceGetPciInfo_v3", device, pci)
    })
}

/// `nvmlDeviceGetPciInfo_v2`: same struct and answer as `_v3`.
///
/// # Safety
/// `pci` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(
    device: NvmlDevice,
    pci: *mut NvmlPciInfo,
) -> NvmlReturn {
    guard("nvmlDeviceGetPciInfo_v2", move || {
        pci_info("nvmlDeviceGetPciInfo_v2", device, pci)
    })
}

/// `nvmlDeviceGetCudaComputeCapability`: attributes 75 and 76 from the shim.
///
/// # Safety
/// `major` and `minor` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: NvmlDevice,
    major: *mut c_int,
    minor: *mut c_int,
) -> NvmlReturn {
    guard("nvmlDeviceGetCudaComputeCapability", move || {
        const ENTRY: &str = "nvmlDeviceGetCudaComputeCapability";
        let (d, dev) = state::device(ENTRY, device)?;
        let ma = d
            .attribute(crate::driver::ATTR_CC_MAJOR, dev)
            .map_err(|e| fail(ENTRY, e))?;
        let mi = d
            .attribute(crate::driver::ATTR_CC_MINOR, dev)
            .map_err(|e| fail(ENTRY, e))?;
        if major.is_null() || minor.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller's contract above.
        unsafe { out::write(major, ma) }?;
        // SAFETY: the caller's contract above.
        unsafe { out::write(minor, mi) }
    })
}

/// `nvmlDeviceGetUtilizationRates`: `gpu` = percent of the worker's last sample period (1/6 s
/// to 1 s when sampled often) during which kernels ran on the device, all tenants together;
/// `memory` = 0 (not measured). One round trip (see the module docs).
///
/// # Safety
/// `utilization` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: NvmlDevice,
    utilization: *mut NvmlUtilization,
) -> NvmlReturn {
    const ENTRY: &str = "nvmlDeviceGetUtilizationRates";
    guard(ENTRY, move || {
        let (d, ordinal) = state::device(ENTRY, device)?;
        if utilization.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        let (gpu, memory) = match d.utilization(ordinal) {
            Ok(u) => u,
            Err(DriverError::Missing(_)) => {
                if once_per_name("nvmlDeviceGetUtilizationRates/why") {
                    tracing::warn!(
                        "rgpu nvml: nvmlDeviceGetUtilizationRates is not supported: the loaded \
                         rgpu shim lacks rgpu_shim_device_utilization"
                    );
                }
                return Err(NVML_ERROR_NOT_SUPPORTED);
            }
            Err(e) => return Err(fail(ENTRY, e)),
        };
        let value = NvmlUtilization {
            gpu: gpu.min(100),
            memory: memory.min(100),
        };
        // SAFETY: non-null (checked), writable by the caller's contract.
        unsafe { out::write(utilization, value) }
    })
}

/// The one compute process rgpu knows on this device: this one, using `used` bytes.
fn processes<T>(
    entry: &'static str,
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut T,
    record: impl FnOnce(c_uint, u64) -> T,
) -> Result<(), NvmlReturn> {
    let (_, _, used) = memory_of(entry, device)?;
    // SAFETY: the exported callers pass on their caller's contract (null or read/writable).
    let room = unsafe { out::read(count) }?;
    // SAFETY: as above.
    unsafe { out::write(count, 1) }?;
    if room < 1 {
        return Err(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `infos` holds at least `room` >= 1 records (caller's contract), or is null.
    unsafe { out::write(infos, record(std::process::id(), used)) }
}

/// `nvmlDeviceGetComputeRunningProcesses` (`nvmlProcessInfo_v1_t`, the name PyTorch's c10
/// resolves): this process and the device memory it uses.
///
/// # Safety
/// `count` must be null or readable and writable; `infos` null or writable for `*count`
/// records.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut NvmlProcessInfoV1,
) -> NvmlReturn {
    guard("nvmlDeviceGetComputeRunningProcesses", move || {
        processes(
            "nvmlDeviceGetComputeRunningProcesses",
            device,
            count,
            infos,
            |pid, used| NvmlProcessInfoV1 {
                pid,
                used_gpu_memory: used,
            },
        )
    })
}

fn process_v2(pid: c_uint, used: u64) -> NvmlProcessInfoV2 {
    NvmlProcessInfoV2 {
        pid,
        used_gpu_memory: used,
        gpu_instance_id: NO_MIG_INSTANCE,
        compute_instance_id: NO_MIG_INSTANCE,
    }
}

/// `nvmlDeviceGetComputeRunningProcesses_v2` (`nvmlProcessInfo_v2_t`).
///
/// # Safety
/// As [`nvmlDeviceGetComputeRunningProcesses`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut NvmlProcessInfoV2,
) -> NvmlReturn {
    guard("nvmlDeviceGetComputeRunningProcesses_v2", move || {
        processes(
            "nvmlDeviceGetComputeRunningProcesses_v2",
            device,
            count,
            infos,
            process_v2,
        )
    })
}

/// `nvmlDeviceGetComputeRunningProcesses_v3` (`nvmlProcessInfo_t`, same layout as v2).
///
/// # Safety
/// As [`nvmlDeviceGetComputeRunningProcesses`].
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: NvmlDevice,
    count: *mut c_uint,
    infos: *mut NvmlProcessInfoV2,
) -> NvmlReturn {
    guard("nvmlDeviceGetComputeRunningProcesses_v3", move || {
        processes(
            "nvmlDeviceGetComputeRunningProcesses_v3",
            device,
            count,
            infos,
            process_v2,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_is_nvml_style() {
        let u = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba,
            0xdc, 0xfe,
        ];
        assert_eq!(uuid_text(&u), "GPU-01234567-89ab-cdef-1032-547698badcfe");
    }

    #[test]
    fn pci_bus_ids_parse_in_both_widths() {
        assert_eq!(parse_pci_bus_id("00000000:3B:00.0"), Some((0, 0x3b, 0)));
        assert_eq!(parse_pci_bus_id("0001:0a:1f.0"), Some((1, 0x0a, 0x1f)));
        assert_eq!(parse_pci_bus_id("3b:00.0"), Some((0, 0x3b, 0)));
        assert_eq!(parse_pci_bus_id("x:y"), None);
        assert_eq!(parse_pci_bus_id("1:2:3:4.0"), None);
    }

    #[test]
    fn entry_points_before_init_say_uninitialized() {
        let mut n = 0u32;
        // SAFETY: `n` is writable.
        let count = unsafe { nvmlDeviceGetCount_v2(&mut n) };
        assert_eq!(count, NVML_ERROR_UNINITIALIZED);
        let mut name = [0 as c_char; 8];
        // SAFETY: `name` is 8 writable bytes; a null handle is refused before any write.
        let named = unsafe { nvmlDeviceGetName(std::ptr::null_mut(), name.as_mut_ptr(), 8) };
        assert_eq!(named, NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
    }
}
