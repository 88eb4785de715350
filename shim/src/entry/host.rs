//! Pinned host memory entry points (`cuMemHostAlloc`, `cuMemAllocHost_v2`, `cuMemFreeHost`,
//! `cuMemHostRegister_v2`/`Unregister`, `cuMemHostGetFlags`, `cuMemHostGetDevicePointer_v2`)
//! and pointer attributes (`cuPointerGetAttribute(s)`), all answered in the shim.
//!
//! Pinned memory comes from [`crate::remote::pinned`]. A device pointer to host memory
//! (mapped pinned memory used by kernels) does not exist here: the worker's GPU cannot
//! address this process's pages, so `cuMemHostGetDevicePointer` is refused with
//! `CUDA_ERROR_NOT_SUPPORTED` rather than answered with an address that would not work.

use std::ffi::{c_int, c_uint, c_void};

use crate::cuda_types::{
    CUcontext, CUdeviceptr, CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED,
};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::remote::{pinned, ranges};

/// `CU_MEMHOSTALLOC_PORTABLE | DEVICEMAP | WRITECOMBINED`: the flags `cuMemHostAlloc` knows.
pub const MEMHOSTALLOC_FLAGS_ALL: c_uint = 0x7;
/// `CU_MEMHOSTREGISTER_PORTABLE | DEVICEMAP | IOMEMORY | READ_ONLY`.
pub const MEMHOSTREGISTER_FLAGS_ALL: c_uint = 0xf;
/// `CU_MEMHOSTREGISTER_IOMEMORY`: device memory of a third-party PCIe device, not possible here.
const MEMHOSTREGISTER_IOMEMORY: c_uint = 0x4;
/// Most attributes one `cuPointerGetAttributes` call may ask for.
pub const POINTER_ATTRIBUTES_MAX: usize = 64;

/// `CU_POINTER_ATTRIBUTE_LOCALITY_DOMAIN_ORDINAL` (cuda.h 13.5).
const LOCALITY_DOMAIN_ORDINAL: c_uint = 22;
/// Its value for an allocation not localized to a locality domain (cuda.h 13.5).
const LOCALITY_DOMAIN_NONE: c_int = -1;

fn host_alloc(pp: *mut *mut c_void, bytes: usize, flags: c_uint) -> CUresult {
    with_session(|s| {
        if pp.is_null() || flags & !MEMHOSTALLOC_FLAGS_ALL != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let mut conn = s.conn();
        let p = pinned::alloc(pinned::pool(&mut conn), bytes, flags)?;
        write_out(pp, p)
    })
}

/// `cuMemHostAlloc`.
///
/// # Safety
/// `pp` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    bytes: usize,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuMemHostAlloc", || host_alloc(pp, bytes, flags))
}

/// `cuMemAllocHost_v2`: `cuMemHostAlloc` with no flags.
///
/// # Safety
/// `pp` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    ffi_guard("cuMemAllocHost_v2", || host_alloc(pp, bytes, 0))
}

/// `cuMemFreeHost`: synchronizes the context first when the memory is arena memory (an
/// async copy may still use it), as the driver's free of pinned memory does.
///
/// # Safety
/// `p` must come from `cuMemHostAlloc`/`cuMemAllocHost` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    ffi_guard("cuMemFreeHost", || {
        with_session(|s| {
            // An async copy queued earlier may still name these arena pages; like CUDA's
            // cuMemFreeHost, wait for the device before the slab can be handed out again.
            let arena = pinned::find(p as u64)
                .is_some_and(|h| matches!(h.value.backing, pinned::Backing::Arena(_)));
            if arena {
                crate::entry::stream::ctx_synchronize(s, "cuMemFreeHost")?;
            }
            let mut conn = s.conn();
            pinned::free(pinned::pool(&mut conn), p)
        })
    })
}

/// `cuMemHostGetFlags`.
///
/// # Safety
/// `flags` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostGetFlags(flags: *mut c_uint, p: *mut c_void) -> CUresult {
    ffi_guard("cuMemHostGetFlags", || {
        with_session(|_| {
            let hit = pinned::find(p as u64).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            write_out(flags, hit.value.flags)
        })
    })
}

/// `cuMemHostGetDevicePointer_v2`: refused, see the module docs.
///
/// # Safety
/// No pointer is written; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostGetDevicePointer_v2(
    _pdptr: *mut CUdeviceptr,
    p: *mut c_void,
    _flags: c_uint,
) -> CUresult {
    ffi_guard("cuMemHostGetDevicePointer_v2", || {
        with_session(|_| {
            pinned::find(p as u64).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            if crate::logging::once_per_name("unsupported", "cuMemHostGetDevicePointer") {
                tracing::warn!(
                    "rgpu shim: mapped pinned memory cannot be reached by a remote GPU; cuMemHostGetDevicePointer is not supported"
                );
            }
            Err(CUDA_ERROR_NOT_SUPPORTED)
        })
    })
}

/// `cuMemHostRegister_v2`: recorded, so pointer queries answer "host"; copies from it are
/// staged like pageable ones (the pages cannot become shared with the worker).
///
/// # Safety
/// `p` must address `bytes` bytes that stay mapped until unregistered.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostRegister_v2(
    p: *mut c_void,
    bytes: usize,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuMemHostRegister_v2", || {
        with_session(|_| {
            if flags & !MEMHOSTREGISTER_FLAGS_ALL != 0 || flags & MEMHOSTREGISTER_IOMEMORY != 0 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            pinned::register(p, bytes, flags)
        })
    })
}

/// `cuMemHostUnregister`.
///
/// # Safety
/// No memory is accessed; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostUnregister(p: *mut c_void) -> CUresult {
    ffi_guard("cuMemHostUnregister", || {
        with_session(|_| pinned::unregister(p))
    })
}

/// `CUmemorytype`.
const MEMORYTYPE_HOST: c_uint = 1;
const MEMORYTYPE_DEVICE: c_uint = 2;

/// What the shim knows about a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    memory_type: c_uint,
    base: u64,
    len: u64,
}

fn known(ptr: CUdeviceptr) -> Option<Known> {
    if let Some(h) = ranges::device_find(ptr) {
        return Some(Known {
            memory_type: MEMORYTYPE_DEVICE,
            base: h.base,
            len: h.len,
        });
    }
    pinned::find(ptr).map(|h| Known {
        memory_type: MEMORYTYPE_HOST,
        base: h.base,
        len: h.len,
    })
}

/// One attribute's value, written with the type the driver API documents for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Ctx(CUcontext),
    U32(c_uint),
    I32(c_int),
    U64(u64),
    Ptr(*mut c_void),
    Size(usize),
    Bool(bool),
}

/// The value of `attribute` for `ptr`; `None` for an unknown pointer, `Err` for an
/// attribute the shim does not answer.
fn attribute(
    attribute: c_uint,
    ptr: CUdeviceptr,
    k: Option<Known>,
) -> Result<Option<Value>, CUresult> {
    let Some(k) = k else { return Ok(None) };
    let host = k.memory_type == MEMORYTYPE_HOST;
    Ok(Some(match attribute {
        1 => Value::Ctx(crate::context::primary()),
        2 => Value::U32(k.memory_type),
        // Device pointer: the address itself for device memory; none for host memory.
        3 if host => return Ok(None),
        3 => Value::U64(ptr),
        // Host pointer: the address itself for host memory; none for device memory.
        4 if host => Value::Ptr(ptr as *mut c_void),
        4 => return Ok(None),
        6 => Value::Bool(true),
        // Buffer id: the allocation's base (unique while it lives).
        7 => Value::U64(k.base),
        8 => Value::Bool(false),
        9 => Value::I32(0),
        11 => Value::U64(k.base),
        12 => Value::Size(usize::try_from(k.len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?),
        13 => Value::Bool(true),
        // LOCALITY_DOMAIN_ORDINAL (cuda.h 13.5; read by the 13.5 runtime's
        // `cudaPointerGetAttributes`): -1, "not localized to a locality domain". Only
        // `cuMemCreate` or a pool with a locality-domain location localizes an allocation,
        // and the shim's allocations (`cuMemAlloc`, pinned host pages) never are.
        LOCALITY_DOMAIN_ORDINAL => Value::I32(LOCALITY_DOMAIN_NONE),
        _ => {
            if crate::logging::once_per_name("pointer-attribute", &attribute.to_string()) {
                tracing::warn!(attribute, "rgpu shim: pointer attribute not supported");
            }
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
    }))
}

fn write_value(data: *mut c_void, v: Value) -> Result<(), CUresult> {
    match v {
        Value::Ctx(c) => write_out(data.cast::<CUcontext>(), c),
        Value::U32(x) => write_out(data.cast::<c_uint>(), x),
        Value::I32(x) => write_out(data.cast::<c_int>(), x),
        Value::U64(x) => write_out(data.cast::<u64>(), x),
        Value::Ptr(p) => write_out(data.cast::<*mut c_void>(), p),
        Value::Size(x) => write_out(data.cast::<usize>(), x),
        // Booleans are `unsigned int`: NVIDIA's runtime reads more than one byte (a one-byte
        // answer left its `cudaPointerAttributes.type` as "managed" from stale upper bytes).
        Value::Bool(b) => write_out(data.cast::<c_uint>(), c_uint::from(b)),
    }
}

/// The zero ("NULL") value of an attribute, for pointers the shim does not know.
fn zero_value(attribute: c_uint) -> Option<Value> {
    Some(match attribute {
        1 => Value::Ctx(std::ptr::null_mut()),
        2 => Value::U32(0),
        3 | 7 | 11 => Value::U64(0),
        4 => Value::Ptr(std::ptr::null_mut()),
        9 => Value::I32(-2),
        LOCALITY_DOMAIN_ORDINAL => Value::I32(LOCALITY_DOMAIN_NONE),
        12 => Value::Size(0),
        6 | 8 | 13 => Value::Bool(false),
        _ => return None,
    })
}

/// `cuPointerGetAttribute`: an unknown pointer is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `data` must be null or writable for the attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(
    data: *mut c_void,
    attr: c_uint,
    ptr: CUdeviceptr,
) -> CUresult {
    ffi_guard("cuPointerGetAttribute", || {
        with_session(|_| match attribute(attr, ptr, known(ptr))? {
            Some(v) => write_value(data, v),
            None => Err(CUDA_ERROR_INVALID_VALUE),
        })
    })
}

/// `cuPointerGetAttributes`: unknown pointers get zero values and success, as documented.
///
/// # Safety
/// `attrs` and `data` must address `n` entries; each `data[i]` null or writable for its
/// attribute's type.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttributes(
    n: c_uint,
    attrs: *const c_uint,
    data: *mut *mut c_void,
    ptr: CUdeviceptr,
) -> CUresult {
    ffi_guard("cuPointerGetAttributes", || {
        with_session(|_| {
            let n = n as usize;
            if n == 0 || n > POINTER_ATTRIBUTES_MAX || attrs.is_null() || data.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let k = known(ptr);
            tracing::trace!(n, ptr, ?k, "rgpu shim: cuPointerGetAttributes");
            for i in 0..n {
                // SAFETY: the caller passes `n` attributes (checked non-null; `n` bounded).
                let a = unsafe { attrs.wrapping_add(i).read() };
                // SAFETY: likewise `n` data pointers.
                let d = unsafe { data.wrapping_add(i).read() };
                tracing::trace!(attribute = a, "rgpu shim: pointer attribute asked");
                if d.is_null() {
                    continue;
                }
                let v = match attribute(a, ptr, k) {
                    Ok(Some(v)) => Some(v),
                    Ok(None) => zero_value(a),
                    Err(_) => zero_value(a),
                };
                if let Some(v) = v {
                    write_value(d, v)?;
                }
            }
            Ok(())
        })
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuMemHostAlloc", 2020) => cuMemHostAlloc as *const c_void,
        ("cuMemAllocHost", 3020) => cuMemAllocHost_v2 as *const c_void,
        ("cuMemFreeHost", 2000) => cuMemFreeHost as *const c_void,
        ("cuMemHostGetFlags", 2030) => cuMemHostGetFlags as *const c_void,
        ("cuMemHostGetDevicePointer", 3020) => cuMemHostGetDevicePointer_v2 as *const c_void,
        ("cuMemHostRegister", 6050) => cuMemHostRegister_v2 as *const c_void,
        ("cuMemHostUnregister", 4000) => cuMemHostUnregister as *const c_void,
        ("cuPointerGetAttribute", 4000) => cuPointerGetAttribute as *const c_void,
        ("cuPointerGetAttributes", 7000) => cuPointerGetAttributes as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_for_known_and_unknown_pointers() {
        let dev = Known {
            memory_type: MEMORYTYPE_DEVICE,
            base: 0x1000,
            len: 64,
        };
        assert_eq!(attribute(2, 0x1010, Some(dev)), Ok(Some(Value::U32(2))));
        assert_eq!(
            attribute(3, 0x1010, Some(dev)),
            Ok(Some(Value::U64(0x1010)))
        );
        assert_eq!(attribute(4, 0x1010, Some(dev)), Ok(None));
        assert_eq!(
            attribute(11, 0x1010, Some(dev)),
            Ok(Some(Value::U64(0x1000)))
        );
        assert_eq!(attribute(12, 0x1010, Some(dev)), Ok(Some(Value::Size(64))));
        let host = Known {
            memory_type: MEMORYTYPE_HOST,
            ..dev
        };
        assert_eq!(attribute(3, 0x1010, Some(host)), Ok(None));
        assert_eq!(attribute(2, 0x1010, None), Ok(None));
        assert_eq!(
            attribute(99, 0x1010, Some(dev)),
            Err(CUDA_ERROR_NOT_SUPPORTED)
        );
        assert_eq!(
            attribute(LOCALITY_DOMAIN_ORDINAL, 0x1010, Some(dev)),
            Ok(Some(Value::I32(-1)))
        );
        assert_eq!(
            attribute(LOCALITY_DOMAIN_ORDINAL, 0x1010, Some(host)),
            Ok(Some(Value::I32(-1)))
        );
        assert_eq!(zero_value(LOCALITY_DOMAIN_ORDINAL), Some(Value::I32(-1)));
        assert_eq!(zero_value(2), Some(Value::U32(0)));
        let mut t: c_uint = 7;
        write_value((&raw mut t).cast(), Value::U32(1)).unwrap();
        assert_eq!(t, 1);
    }

    #[test]
    fn calls_before_init_are_not_initialized() {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: a valid output pointer; no session exists in unit tests.
        let r = unsafe { cuMemAllocHost_v2(&mut p, 16) };
        assert_eq!(r, crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
    }
}
