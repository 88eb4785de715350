//! Safe wrappers over the cudarc driver `sys` calls the backend makes.
//!
//! Exists to keep every `unsafe` FFI call in one small module: each wrapper
//! takes only values the driver accepts by contract (handles this process
//! created, host slices with their real lengths) and maps `CUresult`
//! straight to [`CudaError`]. Callers (the backend) validate device ranges
//! and handles against their session tables first. Only called after
//! [`loader::driver`](super::loader::driver) succeeded, so cudarc finds the
//! library and its symbols.

use std::ffi::{c_int, c_void, CStr};

use cudarc::driver::sys;
use rgpu_proto::CudaError;

pub use sys::{CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUmodule, CUstream};

fn check(r: sys::CUresult) -> Result<(), CudaError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(CudaError(r as u32))
    }
}

/// `cuInit(0)`.
pub fn init() -> Result<(), CudaError> {
    // SAFETY: cuInit takes flags only; 0 is the documented value.
    check(unsafe { sys::cuInit(0) })
}

/// `cuDeviceGetCount`.
pub fn device_count() -> Result<u32, CudaError> {
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out pointer for the call's duration.
    check(unsafe { sys::cuDeviceGetCount(&mut n) })?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// `cuDeviceGet`.
pub fn device_get(ordinal: u32) -> Result<CUdevice, CudaError> {
    let ordinal = c_int::try_from(ordinal).map_err(|_| CudaError::INVALID_DEVICE)?;
    let mut dev: CUdevice = 0;
    // SAFETY: `dev` is a valid out pointer.
    check(unsafe { sys::cuDeviceGet(&mut dev, ordinal) })?;
    Ok(dev)
}

/// `cuDeviceTotalMem`.
pub fn device_total_mem(dev: CUdevice) -> Result<u64, CudaError> {
    let mut bytes = 0usize;
    // SAFETY: `bytes` is a valid out pointer; `dev` came from cuDeviceGet.
    check(unsafe { sys::cuDeviceTotalMem_v2(&mut bytes, dev) })?;
    Ok(bytes as u64)
}

/// `cuDeviceGetName`, lossily decoded.
pub fn device_name(dev: CUdevice) -> Result<String, CudaError> {
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: `buf` is writable for the length passed (256 fits c_int).
    check(unsafe { sys::cuDeviceGetName(buf.as_mut_ptr(), 256, dev) })?;
    // Force a terminator so the scan below stays inside `buf`.
    buf[255] = 0;
    // SAFETY: `buf` is NUL-terminated (last byte set above) and lives
    // across the call.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// `cuDeviceGetUuid`.
pub fn device_uuid(dev: CUdevice) -> Result<[u8; 16], CudaError> {
    // SAFETY: CUuuid is a plain 16-byte C struct; all-zero is valid.
    let mut uuid: sys::CUuuid = unsafe { std::mem::zeroed() };
    // SAFETY: `uuid` is a valid out pointer.
    check(unsafe { sys::cuDeviceGetUuid(&mut uuid, dev) })?;
    Ok(uuid.bytes.map(|b| b as u8))
}

/// `cuDevicePrimaryCtxRetain`.
pub fn primary_ctx_retain(dev: CUdevice) -> Result<CUcontext, CudaError> {
    let mut ctx: CUcontext = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out pointer; `dev` came from cuDeviceGet.
    check(unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) })?;
    Ok(ctx)
}

/// `cuDevicePrimaryCtxRelease`.
pub fn primary_ctx_release(dev: CUdevice) -> Result<(), CudaError> {
    // SAFETY: called once per successful retain of `dev`.
    check(unsafe { sys::cuDevicePrimaryCtxRelease_v2(dev) })
}

/// `cuCtxSetCurrent`.
pub fn ctx_set_current(ctx: CUcontext) -> Result<(), CudaError> {
    // SAFETY: `ctx` is a retained primary context, alive until release.
    check(unsafe { sys::cuCtxSetCurrent(ctx) })
}

/// `cuCtxSynchronize`.
pub fn ctx_synchronize() -> Result<(), CudaError> {
    // SAFETY: no arguments; acts on the current context.
    check(unsafe { sys::cuCtxSynchronize() })
}

/// `cuMemGetInfo`: (free, total).
pub fn mem_get_info() -> Result<(u64, u64), CudaError> {
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both are valid out pointers.
    check(unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) })?;
    Ok((free as u64, total as u64))
}

/// `cuMemAlloc`.
pub fn mem_alloc(bytes: usize) -> Result<CUdeviceptr, CudaError> {
    let mut ptr: CUdeviceptr = 0;
    // SAFETY: `ptr` is a valid out pointer.
    check(unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) })?;
    Ok(ptr)
}

/// `cuMemFree`.
pub fn mem_free(ptr: CUdeviceptr) -> Result<(), CudaError> {
    // SAFETY: the caller passes the base of a live allocation of its table.
    check(unsafe { sys::cuMemFree_v2(ptr) })
}

/// `cuMemcpyHtoD[Async]`. An async copy from pageable memory is staged by
/// the driver before the call returns, so `src` may be reused at once.
pub fn memcpy_htod(
    dst: CUdeviceptr,
    src: &[u8],
    stream: Option<CUstream>,
) -> Result<(), CudaError> {
    let p = src.as_ptr().cast::<c_void>();
    match stream {
        // SAFETY: `src` is readable for its length; the caller checked the
        // device range; `s` is a live stream of this session.
        Some(s) => check(unsafe { sys::cuMemcpyHtoDAsync_v2(dst, p, src.len(), s) }),
        // SAFETY: as above, synchronous.
        None => check(unsafe { sys::cuMemcpyHtoD_v2(dst, p, src.len()) }),
    }
}

/// `cuMemcpyDtoH` followed, for a stream, by `cuStreamSynchronize`: `dst`
/// is a borrowed buffer, so the copy must be done before this returns.
pub fn memcpy_dtoh(
    dst: &mut [u8],
    src: CUdeviceptr,
    stream: Option<CUstream>,
) -> Result<(), CudaError> {
    let p = dst.as_mut_ptr().cast::<c_void>();
    match stream {
        Some(s) => {
            // SAFETY: `dst` is writable for its length and stays borrowed
            // until the stream is synchronized just below.
            check(unsafe { sys::cuMemcpyDtoHAsync_v2(p, src, dst.len(), s) })?;
            stream_synchronize(s)
        }
        // SAFETY: `dst` is writable for its length; synchronous copy.
        None => check(unsafe { sys::cuMemcpyDtoH_v2(p, src, dst.len()) }),
    }
}

/// `cuMemcpyDtoD[Async]`.
pub fn memcpy_dtod(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    len: usize,
    stream: Option<CUstream>,
) -> Result<(), CudaError> {
    match stream {
        // SAFETY: device ranges checked by the caller; `s` is live.
        Some(s) => check(unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len, s) }),
        // SAFETY: device ranges checked by the caller.
        None => check(unsafe { sys::cuMemcpyDtoD_v2(dst, src, len) }),
    }
}

/// `cuMemsetD8/D16/D32[Async]`; `width` is 1, 2 or 4 bytes.
pub fn memset(
    dst: CUdeviceptr,
    width: u8,
    value: u32,
    count: usize,
    stream: Option<CUstream>,
) -> Result<(), CudaError> {
    // Truncation to the element width is the API's documented behaviour.
    let r = match (width, stream) {
        // SAFETY: the caller checked that `count` elements of `width`
        // bytes at `dst` lie in one live allocation; `s` is live.
        (1, None) => unsafe { sys::cuMemsetD8_v2(dst, value as u8, count) },
        // SAFETY: as the first arm: range checked, stream live.
        (1, Some(s)) => unsafe { sys::cuMemsetD8Async(dst, value as u8, count, s) },
        // SAFETY: as the first arm: range checked, stream live.
        (2, None) => unsafe { sys::cuMemsetD16_v2(dst, value as u16, count) },
        // SAFETY: as the first arm: range checked, stream live.
        (2, Some(s)) => unsafe { sys::cuMemsetD16Async(dst, value as u16, count, s) },
        // SAFETY: as the first arm: range checked, stream live.
        (4, None) => unsafe { sys::cuMemsetD32_v2(dst, value, count) },
        // SAFETY: as the first arm: range checked, stream live.
        (4, Some(s)) => unsafe { sys::cuMemsetD32Async(dst, value, count, s) },
        _ => return Err(CudaError::INVALID_VALUE),
    };
    check(r)
}

/// `cuStreamCreateWithPriority`.
pub fn stream_create(flags: u32, priority: i32) -> Result<CUstream, CudaError> {
    let mut s: CUstream = std::ptr::null_mut();
    // SAFETY: `s` is a valid out pointer.
    check(unsafe { sys::cuStreamCreateWithPriority(&mut s, flags, priority) })?;
    Ok(s)
}

/// `cuStreamDestroy`.
pub fn stream_destroy(s: CUstream) -> Result<(), CudaError> {
    // SAFETY: `s` was created by this session and is removed from its table.
    check(unsafe { sys::cuStreamDestroy_v2(s) })
}

/// `cuStreamQuery`.
pub fn stream_query(s: CUstream) -> Result<(), CudaError> {
    // SAFETY: `s` is live or a built-in stream value.
    check(unsafe { sys::cuStreamQuery(s) })
}

/// `cuStreamSynchronize`.
pub fn stream_synchronize(s: CUstream) -> Result<(), CudaError> {
    // SAFETY: `s` is live or a built-in stream value.
    check(unsafe { sys::cuStreamSynchronize(s) })
}

/// `cuStreamWaitEvent`.
pub fn stream_wait_event(s: CUstream, e: CUevent, flags: u32) -> Result<(), CudaError> {
    // SAFETY: both handles are live entries of this session's tables.
    check(unsafe { sys::cuStreamWaitEvent(s, e, flags) })
}

/// `cuEventCreate`.
pub fn event_create(flags: u32) -> Result<CUevent, CudaError> {
    let mut e: CUevent = std::ptr::null_mut();
    // SAFETY: `e` is a valid out pointer.
    check(unsafe { sys::cuEventCreate(&mut e, flags) })?;
    Ok(e)
}

/// `cuEventRecord`.
pub fn event_record(e: CUevent, s: CUstream) -> Result<(), CudaError> {
    // SAFETY: both handles are live entries of this session's tables.
    check(unsafe { sys::cuEventRecord(e, s) })
}

/// `cuEventQuery`.
pub fn event_query(e: CUevent) -> Result<(), CudaError> {
    // SAFETY: `e` is live.
    check(unsafe { sys::cuEventQuery(e) })
}

/// `cuEventSynchronize`.
pub fn event_synchronize(e: CUevent) -> Result<(), CudaError> {
    // SAFETY: `e` is live.
    check(unsafe { sys::cuEventSynchronize(e) })
}

/// `cuEventElapsedTime`, in milliseconds.
pub fn event_elapsed_ms(start: CUevent, end: CUevent) -> Result<f32, CudaError> {
    let mut ms = 0f32;
    // SAFETY: `ms` is a valid out pointer; both events are live.
    check(unsafe { sys::cuEventElapsedTime(&mut ms, start, end) })?;
    Ok(ms)
}

/// `cuEventDestroy`.
pub fn event_destroy(e: CUevent) -> Result<(), CudaError> {
    // SAFETY: `e` was created by this session and is removed from its table.
    check(unsafe { sys::cuEventDestroy_v2(e) })
}

/// `cuModuleLoadData`. `image` must be a cubin/fatbin, or PTX text ending
/// in NUL (the caller appends one to PTX).
pub fn module_load_data(image: &[u8]) -> Result<CUmodule, CudaError> {
    let mut m: CUmodule = std::ptr::null_mut();
    // SAFETY: `image` is readable and the driver only reads within the
    // image's own header-declared size or up to the NUL of PTX text, which
    // the caller guarantees is inside the slice.
    check(unsafe { sys::cuModuleLoadData(&mut m, image.as_ptr().cast()) })?;
    Ok(m)
}

/// `cuModuleUnload`.
pub fn module_unload(m: CUmodule) -> Result<(), CudaError> {
    // SAFETY: `m` was loaded by this session and is removed from its table.
    check(unsafe { sys::cuModuleUnload(m) })
}

/// `cuModuleGetFunction`.
pub fn module_get_function(m: CUmodule, name: &CStr) -> Result<CUfunction, CudaError> {
    let mut f: CUfunction = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; `m` is live; `f` is an out pointer.
    check(unsafe { sys::cuModuleGetFunction(&mut f, m, name.as_ptr()) })?;
    Ok(f)
}

/// `cuFuncGetParamInfo` (CUDA ≥ 12.4; the caller checks the driver has it):
/// `Ok(None)` past the last parameter.
pub fn func_param_info(f: CUfunction, index: usize) -> Result<Option<(usize, usize)>, CudaError> {
    let (mut offset, mut size) = (0usize, 0usize);
    // SAFETY: `f` is live; both are valid out pointers.
    let r = unsafe { sys::cuFuncGetParamInfo(f, index, &mut offset, &mut size) };
    if r == sys::CUresult::CUDA_ERROR_INVALID_VALUE {
        return Ok(None);
    }
    check(r)?;
    Ok(Some((offset, size)))
}

/// `cuLaunchKernel` with `kernelParams`.
///
/// # Safety
/// `params` must hold one pointer per kernel parameter, each pointing at
/// that parameter's bytes (readable for its size) for the call's duration.
pub unsafe fn launch_kernel(
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
    stream: CUstream,
    params: &mut [*mut c_void],
) -> Result<(), CudaError> {
    // SAFETY: the caller's contract covers `params`; `f` and `stream` are
    // live; `extra` is null as documented when kernelParams is used.
    check(unsafe {
        sys::cuLaunchKernel(
            f,
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            shared_mem_bytes,
            stream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    })
}

/// `cuFuncGetAttribute` for the `CUfunction_attribute` ids of CUDA 12.9
/// (0..=15); `INVALID_VALUE` for any other id (never cast to the enum).
pub fn func_attribute(f: CUfunction, attribute: i32) -> Result<i32, CudaError> {
    use sys::CUfunction_attribute as A;
    let a = match attribute {
        0 => A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        1 => A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
        2 => A::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES,
        3 => A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
        4 => A::CU_FUNC_ATTRIBUTE_NUM_REGS,
        5 => A::CU_FUNC_ATTRIBUTE_PTX_VERSION,
        6 => A::CU_FUNC_ATTRIBUTE_BINARY_VERSION,
        7 => A::CU_FUNC_ATTRIBUTE_CACHE_MODE_CA,
        8 => A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        9 => A::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
        10 => A::CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET,
        11 => A::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH,
        12 => A::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT,
        13 => A::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH,
        14 => A::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
        15 => A::CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE,
        _ => return Err(CudaError::INVALID_VALUE),
    };
    let mut v: c_int = 0;
    // SAFETY: `f` is live; `v` is a valid out pointer; `a` is a valid enum value.
    check(unsafe { sys::cuFuncGetAttribute(&mut v, a, f) })?;
    Ok(v)
}

/// One launch attribute as `cuLaunchKernelEx` takes it: the id (only the
/// ids listed in [`launch_attribute`]) and the value's first 12 bytes.
pub type RawLaunchAttr = (u32, [u32; 3]);

/// Builds a `CUlaunchAttribute` for a known id; `None` for ids whose value
/// does not fit 12 bytes or that name host objects (events, nodes), which
/// the protocol does not carry.
fn launch_attribute((id, value): RawLaunchAttr) -> Option<sys::CUlaunchAttribute> {
    use sys::CUlaunchAttributeID as A;
    let id = match id {
        0 => A::CU_LAUNCH_ATTRIBUTE_IGNORE,
        2 => A::CU_LAUNCH_ATTRIBUTE_COOPERATIVE,
        3 => A::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY,
        4 => A::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        5 => A::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE,
        6 => A::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        8 => A::CU_LAUNCH_ATTRIBUTE_PRIORITY,
        9 => A::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP,
        10 => A::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN,
        11 => A::CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION,
        14 => A::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
        _ => return None,
    };
    let mut pad = [0 as std::ffi::c_char; 64];
    for (i, word) in value.iter().enumerate() {
        for (j, b) in word.to_le_bytes().into_iter().enumerate() {
            pad[i * 4 + j] = b as std::ffi::c_char;
        }
    }
    Some(sys::CUlaunchAttribute {
        id,
        pad: [0; 4],
        value: sys::CUlaunchAttributeValue { pad },
    })
}

/// `cuLaunchKernelEx` with `kernelParams` and attributes.
///
/// # Safety
/// As [`launch_kernel`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel_ex(
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
    stream: CUstream,
    params: &mut [*mut c_void],
    attrs: &[RawLaunchAttr],
) -> Result<(), CudaError> {
    let mut raw = Vec::with_capacity(attrs.len());
    for &a in attrs {
        raw.push(launch_attribute(a).ok_or(CudaError::NOT_SUPPORTED)?);
    }
    let config = sys::CUlaunchConfig {
        gridDimX: grid[0],
        gridDimY: grid[1],
        gridDimZ: grid[2],
        blockDimX: block[0],
        blockDimY: block[1],
        blockDimZ: block[2],
        sharedMemBytes: shared_mem_bytes,
        hStream: stream,
        attrs: raw.as_mut_ptr(),
        numAttrs: u32::try_from(raw.len()).map_err(|_| CudaError::INVALID_VALUE)?,
    };
    // SAFETY: the caller's contract covers `params`; `config` and its
    // `attrs` array live for the call; `f` and `stream` are live; `extra`
    // is null as documented when kernelParams is used.
    check(unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) })
}

/// `cuMemAllocAsync` (CUDA ≥ 11.2; the caller checks the driver has it):
/// from the device's current (default) pool, ordered on `stream`.
pub fn mem_alloc_async(bytes: usize, stream: CUstream) -> Result<CUdeviceptr, CudaError> {
    let mut ptr: CUdeviceptr = 0;
    // SAFETY: `ptr` is a valid out pointer; `stream` is live or built-in.
    check(unsafe { sys::cuMemAllocAsync(&mut ptr, bytes, stream) })?;
    Ok(ptr)
}

/// `cuMemFreeAsync`, ordered on `stream`.
pub fn mem_free_async(ptr: CUdeviceptr, stream: CUstream) -> Result<(), CudaError> {
    // SAFETY: the caller passes the base of a live allocation of its table
    // (removed from it); `stream` is live or built-in.
    check(unsafe { sys::cuMemFreeAsync(ptr, stream) })
}

/// `cuModuleGetGlobal`: (address, size in bytes) of global `name`.
pub fn module_get_global(m: CUmodule, name: &CStr) -> Result<(CUdeviceptr, usize), CudaError> {
    let (mut ptr, mut bytes): (CUdeviceptr, usize) = (0, 0);
    // SAFETY: `name` is NUL-terminated; `m` is live; both are out pointers.
    check(unsafe { sys::cuModuleGetGlobal_v2(&mut ptr, &mut bytes, m, name.as_ptr()) })?;
    Ok((ptr, bytes))
}
