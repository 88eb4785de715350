//! The CUDA driver API as NVML sees it: `libcuda.so.1`, loaded once, which must be rgpu's shim.
//!
//! NVML answers from the shim's one session (the shim connects once per process), so asking
//! NVML never opens a second connection, a second worker or a second grant. When rgpu runs a
//! program (`rgpu run`, or `LD_PRELOAD`/`LD_LIBRARY_PATH`), `dlopen("libcuda.so.1")` returns
//! the shim. Anything else (no `libcuda.so.1`, or NVIDIA's real driver, recognised by the
//! missing `rgpu_shim_marker` export) is refused with `NVML_ERROR_LIBRARY_NOT_FOUND`: this
//! library cannot describe a local GPU. All `unsafe` of the crate's driver use is here, behind
//! safe methods.
//!
//! One rgpu-only export is used besides the driver API: `rgpu_shim_device_utilization`
//! (`shim/src/nvml_bridge.rs`), optional so that an older shim without it still serves every
//! other call (utilization is then `NVML_ERROR_NOT_SUPPORTED`).

use std::ffi::{c_char, c_int, c_uint};
use std::sync::OnceLock;

use libloading::Library;

/// The library loaded (by SONAME, as the CUDA runtime does).
pub const DRIVER_FILE: &str = "libcuda.so.1";
/// The export that marks rgpu's shim.
pub const SHIM_MARKER: &[u8] = b"rgpu_shim_marker\0";
/// The shim's rgpu-only utilization export (optional).
pub const SHIM_UTILIZATION: &str = "rgpu_shim_device_utilization";
/// `CUDA_SUCCESS`.
pub const CUDA_SUCCESS: c_int = 0;
/// Longest device name asked of the shim, NUL included (NVML's own buffers are 96 bytes).
pub const NAME_BYTES_MAX: usize = 256;

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`.
pub const ATTR_PCI_BUS_ID: c_int = 33;
/// `CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID`.
pub const ATTR_PCI_DEVICE_ID: c_int = 34;
/// `CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID`.
pub const ATTR_PCI_DOMAIN_ID: c_int = 50;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
pub const ATTR_CC_MAJOR: c_int = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
pub const ATTR_CC_MINOR: c_int = 76;

/// Why the driver cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// `dlopen("libcuda.so.1")` failed.
    #[error("cannot load {DRIVER_FILE}: {0}")]
    Load(String),
    /// The library loaded is not rgpu's shim.
    #[error(
        "{DRIVER_FILE} is not rgpu's shim (no rgpu_shim_marker); run the program with `rgpu run`"
    )]
    NotShim,
    /// An entry point is missing from the shim.
    #[error("{DRIVER_FILE} lacks {0}")]
    Missing(&'static str),
    /// A driver call returned an error (`CUresult`).
    #[error("{call} returned CUresult {code}")]
    Cuda {
        /// The call.
        call: &'static str,
        /// Its `CUresult`.
        code: c_int,
    },
}

type InitFn = unsafe extern "C" fn(c_uint) -> c_int;
type IntOutFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type NameFn = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type TotalMemFn = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type UuidFn = unsafe extern "C" fn(*mut [u8; 16], c_int) -> c_int;
type AttrFn = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
type MemInfoFn = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
type UtilizationFn = unsafe extern "C" fn(c_int, *mut c_uint, *mut c_uint) -> c_int;

/// The shim's entry points NVML uses.
pub struct Driver {
    /// Keeps the shim loaded while the pointers below are used; never dropped (a static).
    _lib: Library,
    init: InitFn,
    driver_get_version: IntOutFn,
    device_get_count: IntOutFn,
    device_get_name: NameFn,
    device_total_mem: TotalMemFn,
    device_get_uuid: UuidFn,
    device_get_attribute: AttrFn,
    mem_get_info: MemInfoFn,
    /// `rgpu_shim_device_utilization`, when the shim exports it.
    utilization: Option<UtilizationFn>,
}

fn check(call: &'static str, code: c_int) -> Result<(), DriverError> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(DriverError::Cuda { call, code })
    }
}

/// Looks the function `name` up in `lib` as type `T`.
///
/// # Safety
/// `T` must be the function's real C signature.
unsafe fn symbol<T: Copy>(lib: &Library, name: &'static str) -> Result<T, DriverError> {
    // SAFETY: the caller guarantees `T` is the symbol's signature; the pointer is used only
    // while `lib` (kept in the same `Driver`) stays loaded.
    let sym = unsafe { lib.get::<T>(name.as_bytes()) }.map_err(|_| DriverError::Missing(name))?;
    Ok(*sym)
}

impl Driver {
    /// Loads `libcuda.so.1`, checks it is the shim and resolves the entry points.
    pub fn load() -> Result<Self, DriverError> {
        // SAFETY: loading the shim runs no initialisers with preconditions (Rust cdylib);
        // loading NVIDIA's driver runs its constructors, as any CUDA program does, and it is
        // unloaded again right below when the marker is missing.
        let lib = unsafe { Library::new(DRIVER_FILE) }.map_err(|e| {
            // libloading's message is terse ("dlopen failed"); the loader's reason is the
            // error's source.
            let why = std::error::Error::source(&e).map(ToString::to_string);
            DriverError::Load(why.unwrap_or_else(|| e.to_string()))
        })?;
        // SAFETY: only the symbol's presence is checked; the pointer is not dereferenced.
        if unsafe { lib.get::<*const u8>(SHIM_MARKER) }.is_err() {
            return Err(DriverError::NotShim);
        }
        /// Resolves one entry point; `$t` is its `cuda.h` (CUDA 12) signature.
        macro_rules! resolve {
            ($t:ty, $name:literal) => {
                // SAFETY: `$t` is the CUDA 12 driver API signature of `$name` from `cuda.h`,
                // which the shim exports under that name.
                unsafe { symbol::<$t>(&lib, $name) }?
            };
        }
        Ok(Self {
            init: resolve!(InitFn, "cuInit"),
            driver_get_version: resolve!(IntOutFn, "cuDriverGetVersion"),
            device_get_count: resolve!(IntOutFn, "cuDeviceGetCount"),
            device_get_name: resolve!(NameFn, "cuDeviceGetName"),
            device_total_mem: resolve!(TotalMemFn, "cuDeviceTotalMem_v2"),
            device_get_uuid: resolve!(UuidFn, "cuDeviceGetUuid"),
            device_get_attribute: resolve!(AttrFn, "cuDeviceGetAttribute"),
            mem_get_info: resolve!(MemInfoFn, "cuMemGetInfo_v2"),
            // SAFETY: the signature is `rgpu_shim_device_utilization`'s in
            // `shim/src/nvml_bridge.rs` (int ordinal, two `unsigned int` outputs).
            utilization: unsafe { symbol::<UtilizationFn>(&lib, SHIM_UTILIZATION) }.ok(),
            _lib: lib,
        })
    }

    /// `cuInit(0)`: connects the shim's session (once per process).
    pub fn init(&self) -> Result<(), DriverError> {
        // SAFETY: `cuInit` takes flags by value.
        check("cuInit", unsafe { (self.init)(0) })
    }

    /// `cuDriverGetVersion`.
    pub fn driver_version(&self) -> Result<i32, DriverError> {
        let mut v: c_int = 0;
        // SAFETY: `v` is a live, writable `int`.
        check("cuDriverGetVersion", unsafe {
            (self.driver_get_version)(&mut v)
        })?;
        Ok(v)
    }

    /// `cuDeviceGetCount`.
    pub fn device_count(&self) -> Result<u32, DriverError> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a live, writable `int`.
        check("cuDeviceGetCount", unsafe {
            (self.device_get_count)(&mut n)
        })?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// `cuDeviceGetName`.
    pub fn name(&self, dev: c_int) -> Result<String, DriverError> {
        let mut buf = [0 as c_char; NAME_BYTES_MAX];
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` is writable for `len` bytes.
        check("cuDeviceGetName", unsafe {
            (self.device_get_name)(buf.as_mut_ptr(), len, dev)
        })?;
        // Bytes up to the first NUL (the shim always terminates; a full buffer is cut there).
        let bytes: Vec<u8> = buf
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `cuDeviceTotalMem_v2`: the quota.
    pub fn total_mem(&self, dev: c_int) -> Result<u64, DriverError> {
        let mut b: usize = 0;
        // SAFETY: `b` is a live, writable `size_t`.
        check("cuDeviceTotalMem_v2", unsafe {
            (self.device_total_mem)(&mut b, dev)
        })?;
        Ok(b as u64)
    }

    /// `cuDeviceGetUuid`.
    pub fn uuid(&self, dev: c_int) -> Result<[u8; 16], DriverError> {
        let mut u = [0u8; 16];
        // SAFETY: `CUuuid` is 16 bytes; `u` is writable.
        check("cuDeviceGetUuid", unsafe {
            (self.device_get_uuid)(&mut u, dev)
        })?;
        Ok(u)
    }

    /// `cuDeviceGetAttribute`.
    pub fn attribute(&self, attr: c_int, dev: c_int) -> Result<i32, DriverError> {
        let mut v: c_int = 0;
        // SAFETY: `v` is a live, writable `int`.
        check("cuDeviceGetAttribute", unsafe {
            (self.device_get_attribute)(&mut v, attr, dev)
        })?;
        Ok(v)
    }

    /// `cuMemGetInfo_v2`: (free, total) of the quota, one round trip to the worker.
    pub fn mem_info(&self) -> Result<(u64, u64), DriverError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: both are live, writable `size_t`s.
        check("cuMemGetInfo_v2", unsafe {
            (self.mem_get_info)(&mut free, &mut total)
        })?;
        Ok((free as u64, total as u64))
    }
}

impl Driver {
    /// `rgpu_shim_device_utilization`: (gpu, memory) percent of device `dev` over the worker's
    /// last sample period, one round trip; [`DriverError::Missing`] from a shim without it.
    pub fn utilization(&self, dev: c_int) -> Result<(u32, u32), DriverError> {
        let f = self
            .utilization
            .ok_or(DriverError::Missing(SHIM_UTILIZATION))?;
        let (mut gpu, mut memory): (c_uint, c_uint) = (0, 0);
        // SAFETY: both are live, writable `unsigned int`s.
        check(SHIM_UTILIZATION, unsafe { f(dev, &mut gpu, &mut memory) })?;
        Ok((gpu, memory))
    }
}

/// The driver, loaded and `cuInit`ed once per process; the error is kept and logged once.
pub fn get() -> Result<&'static Driver, &'static DriverError> {
    static DRIVER: OnceLock<Result<Driver, DriverError>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let result = Driver::load().and_then(|d| d.init().map(|()| d));
            match &result {
                Ok(_) => tracing::info!("rgpu nvml: using the rgpu shim's session"),
                Err(e) => tracing::warn!("rgpu nvml: no GPU: {e}"),
            }
            result
        })
        .as_ref()
}
