//! Finds the real NVIDIA driver before cudarc touches it.
//!
//! Exists because cudarc's dynamic loader panics when `libcuda.so` is
//! missing (and when a symbol is missing): this module opens `libcuda.so.1`
//! itself with `libloading`, turns every failure into a
//! [`CudaBackendError`], refuses rgpu's own shim, and reports which optional
//! entry points (`cuFuncGetParamInfo`) the driver has. Only after a probe
//! succeeds does the backend call into cudarc.

use std::sync::OnceLock;

use super::error::CudaBackendError;

/// The driver library, by soname (what the NVIDIA driver installs).
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";
/// A symbol only rgpu's shim exports; finding it in [`DRIVER_LIBRARY`]
/// means the worker would load the shim instead of the driver.
pub const SHIM_MARKER_SYMBOL: &str = "rgpu_shim_marker";

/// Entry points every backend operation needs; a driver lacking one is
/// refused at open instead of panicking inside cudarc later.
const REQUIRED_SYMBOLS: [&str; 8] = [
    "cuInit",
    "cuDeviceGetCount",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuMemAlloc_v2",
    "cuModuleLoadData",
    "cuLaunchKernel",
    "cuStreamCreateWithPriority",
];

/// `cuDeviceGetAttribute(int *pi, int attrib, CUdevice dev)`, resolved here
/// so a raw attribute number passes through without becoming a Rust enum.
pub type DeviceGetAttributeFn =
    unsafe extern "C" fn(*mut std::ffi::c_int, std::ffi::c_int, std::ffi::c_int) -> u32;

/// What the probe found.
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    /// `cuFuncGetParamInfo` exists (CUDA ≥ 12.4).
    pub has_param_info: bool,
    /// `cuMemAllocAsync` / `cuMemFreeAsync` exist (CUDA ≥ 11.2).
    pub has_mem_pools: bool,
    /// `cuDeviceGetAttribute`.
    pub device_get_attribute: DeviceGetAttributeFn,
}

/// Opens and checks the driver once per process.
///
/// # Errors
/// See [`CudaBackendError`]: the library is missing, is our shim, or lacks
/// an entry point.
pub fn driver() -> Result<Driver, CudaBackendError> {
    static PROBE: OnceLock<Result<Driver, CudaBackendError>> = OnceLock::new();
    // The `Library` lives in a static on purpose: cudarc and our function
    // pointers use it for the rest of the process.
    static LIB: OnceLock<libloading::Library> = OnceLock::new();
    PROBE.get_or_init(|| probe(&LIB)).clone()
}

fn probe(slot: &OnceLock<libloading::Library>) -> Result<Driver, CudaBackendError> {
    // SAFETY: loading the NVIDIA driver runs its initialisers, which have no
    // preconditions on us; the environment was scrubbed of our shim.
    let lib = unsafe { libloading::Library::new(DRIVER_LIBRARY) }.map_err(|e| {
        CudaBackendError::DriverNotFound {
            library: DRIVER_LIBRARY,
            reason: match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    })?;
    let lib = slot.get_or_init(|| lib);
    if has_symbol(lib, SHIM_MARKER_SYMBOL) {
        return Err(CudaBackendError::ShimLoaded {
            library: DRIVER_LIBRARY,
            marker: SHIM_MARKER_SYMBOL,
        });
    }
    for symbol in REQUIRED_SYMBOLS {
        if !has_symbol(lib, symbol) {
            return Err(CudaBackendError::MissingSymbol {
                library: DRIVER_LIBRARY,
                symbol,
            });
        }
    }
    // SAFETY: `cuDeviceGetAttribute` has exactly the C signature of
    // `DeviceGetAttributeFn` in every CUDA release; the library stays loaded
    // for the process (it lives in a static), so the pointer stays valid.
    let attr =
        unsafe { lib.get::<DeviceGetAttributeFn>(b"cuDeviceGetAttribute") }.map_err(|_| {
            CudaBackendError::MissingSymbol {
                library: DRIVER_LIBRARY,
                symbol: "cuDeviceGetAttribute",
            }
        })?;
    Ok(Driver {
        has_param_info: has_symbol(lib, "cuFuncGetParamInfo"),
        has_mem_pools: has_symbol(lib, "cuMemAllocAsync") && has_symbol(lib, "cuMemFreeAsync"),
        device_get_attribute: *attr,
    })
}

fn has_symbol(lib: &libloading::Library, name: &str) -> bool {
    // SAFETY: the symbol is only looked up (typed as an opaque pointer),
    // never called or dereferenced here.
    unsafe { lib.get::<*const std::ffi::c_void>(name.as_bytes()) }.is_ok()
}
