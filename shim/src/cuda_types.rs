//! The few CUDA driver ABI types and constants the shim needs, written from `cuda.h`.
//!
//! Kept in one place so the numbers that must match NVIDIA's ABI are easy to audit.

/// A driver API status code (`CUresult` in `cuda.h`).
pub type CUresult = u32;

/// `CUDA_SUCCESS`.
pub const CUDA_SUCCESS: CUresult = 0;
/// `CUDA_ERROR_INVALID_VALUE`.
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
/// `CUDA_ERROR_OUT_OF_MEMORY`.
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
/// `CUDA_ERROR_NOT_INITIALIZED`.
pub const CUDA_ERROR_NOT_INITIALIZED: CUresult = 3;
/// `CUDA_ERROR_DEVICE_UNAVAILABLE`: what a call gets once the server connection is lost.
pub const CUDA_ERROR_DEVICE_UNAVAILABLE: CUresult = 46;
/// `CUDA_ERROR_NO_DEVICE`.
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
/// `CUDA_ERROR_INVALID_DEVICE`.
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = 101;
/// `CUDA_ERROR_INVALID_CONTEXT`.
pub const CUDA_ERROR_INVALID_CONTEXT: CUresult = 201;
/// `CUDA_ERROR_INVALID_HANDLE`.
pub const CUDA_ERROR_INVALID_HANDLE: CUresult = 400;
/// `CUDA_ERROR_NOT_FOUND`.
pub const CUDA_ERROR_NOT_FOUND: CUresult = 500;
/// `CUDA_ERROR_NOT_SUPPORTED`.
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = 801;
/// `CUDA_ERROR_UNKNOWN`: what the shim returns if its own code panics.
pub const CUDA_ERROR_UNKNOWN: CUresult = 999;

/// The driver version the shim reports (`cuDriverGetVersion`): CUDA 13.5, the newest runtime
/// whose headers the proc-address table was generated from (`shim/tools/regen-proc-table`).
/// A 13.x runtime refuses a 12.x driver (`cudaErrorInsufficientDriver`); a 12.x runtime
/// accepts any newer driver. Reporting the newest table version means no runtime we serve
/// asks for an entry point newer than the driver claims to be.
pub const DRIVER_VERSION: i32 = 13050;

/// `CUdevice`: a device ordinal.
pub type CUdevice = std::ffi::c_int;
/// `CUcontext`: an opaque context handle.
pub type CUcontext = *mut std::ffi::c_void;
/// `CUdeviceptr`: a device address.
pub type CUdeviceptr = u64;

/// `CUuuid`: 16 opaque bytes, used as export-table ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CUuuid {
    /// The id bytes, in the order the runtime passes them.
    pub bytes: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<CUuuid>() == 16);

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`: ask for the `_ptds`/`_ptsz` variants.
pub const CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM: u64 = 1 << 1;

/// `CUdriverProcAddressQueryResult`: what `cuGetProcAddress_v2` reports in `symbolStatus`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolStatus {
    /// `CU_GET_PROC_ADDRESS_SUCCESS`.
    Success = 0,
    /// `CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND`.
    SymbolNotFound = 1,
    /// `CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT`.
    VersionNotSufficient = 2,
}

/// `CUDA_ERROR_NOT_READY`: queried work has not completed yet.
pub const CUDA_ERROR_NOT_READY: CUresult = 600;
/// `CUstream`: an opaque stream handle (the shim's values are client-chosen numbers).
pub type CUstream = *mut std::ffi::c_void;
/// `CUevent`: an opaque event handle (client-chosen numbers, as for streams).
pub type CUevent = *mut std::ffi::c_void;
/// `CU_STREAM_LEGACY`: the legacy default stream, usable from any thread.
pub const CU_STREAM_LEGACY: usize = 0x1;
/// `CU_STREAM_PER_THREAD`: the calling thread's per-thread default stream.
pub const CU_STREAM_PER_THREAD: usize = 0x2;

/// `CUDA_ERROR_INVALID_IMAGE`: a module image that cannot be parsed.
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = 200;
/// `CUmodule` (also `CUlibrary`: the shim serves a library as its one module).
pub type CUmodule = *mut std::ffi::c_void;
/// `CUfunction` (also `CUkernel`: the shim's kernel handles are function handles, and CUDA 12
/// accepts a `CUkernel` wherever a `CUfunction` is launched).
pub type CUfunction = *mut std::ffi::c_void;
/// `CU_LAUNCH_PARAM_END`: ends a launch's `extra` array.
pub const CU_LAUNCH_PARAM_END: usize = 0x00;
/// `CU_LAUNCH_PARAM_BUFFER_POINTER`: next `extra` word points at the packed parameters.
pub const CU_LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
/// `CU_LAUNCH_PARAM_BUFFER_SIZE`: next `extra` word points at a `size_t` buffer size.
pub const CU_LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;
