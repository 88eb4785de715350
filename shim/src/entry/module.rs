//! Module, library, function and kernel entry points: loading images on the worker (by
//! content hash first), looking kernels up (their argument layout comes back with the
//! handle), and the function attributes the shim can answer honestly.
//!
//! A `CUlibrary` is served as its one `CUmodule` (same handle) and a `CUkernel` as its
//! `CUfunction` (same handle): the process has one context, and CUDA 12 launches a `CUkernel`
//! wherever a `CUfunction` goes. See `docs/shim.md` (Modules and kernels).

use std::ffi::{c_char, c_int, c_uint, c_void};

use crate::cuda_types::{
    CUdevice, CUdeviceptr, CUfunction, CUmodule, CUresult, CUDA_ERROR_INVALID_HANDLE,
    CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND, CUDA_ERROR_NOT_SUPPORTED,
};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::kernel::image::read_image;
use crate::kernel::{loading, ops, tables};
use crate::logging::once_per_name;

/// Longest kernel name read from the application (longer names are not found).
pub const NAME_BYTES_MAX: usize = rgpu_proto::MAX_NAME_BYTES as usize;

/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
pub const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;
/// `CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT`.
pub const CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: c_int = 9;
/// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`.
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: u32 = 97;
/// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK`.
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: u32 = 8;
/// Largest valid `CUfunc_cache` value (`CU_FUNC_CACHE_PREFER_EQUAL`).
const CU_FUNC_CACHE_MAX: c_uint = 3;

fn handle(h: *mut c_void) -> u64 {
    h as usize as u64
}

fn to_ptr(h: u64) -> *mut c_void {
    std::ptr::without_provenance_mut(h as usize)
}

/// Reads a kernel name (NUL-terminated, at most [`NAME_BYTES_MAX`] bytes, UTF-8).
fn read_name(name: *const c_char) -> Result<String, CUresult> {
    if name.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller passes a NUL-terminated string (driver API contract); strnlen reads
    // at most NAME_BYTES_MAX + 1 bytes of it.
    let len = unsafe { libc::strnlen(name, NAME_BYTES_MAX + 1) };
    if len > NAME_BYTES_MAX {
        return Err(CUDA_ERROR_NOT_FOUND);
    }
    // SAFETY: `len` readable bytes precede the terminator.
    let bytes = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| CUDA_ERROR_NOT_FOUND)
}

/// Loads the image at `image` and writes the new handle to `out`.
pub(crate) fn load_into(entry: &'static str, out: *mut CUmodule, image: *const c_void) -> CUresult {
    with_session(|s| {
        if out.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the entry point's contract: `image` is a module image a driver accepts.
        let bytes = unsafe { read_image(image.cast()) }.map_err(|e| {
            tracing::warn!(entry, error = %e, "rgpu shim: module image refused");
            e.code()
        })?;
        let h = ops::load(s, entry, bytes)?;
        write_out(out, to_ptr(h))
    })
}

/// `cuModuleLoadData`.
///
/// # Safety
/// `module` must be null or writable; `image` must be null or a module image (fatbin, cubin,
/// or NUL-terminated PTX or test-module text) readable to its declared extent.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    ffi_guard("cuModuleLoadData", || {
        load_into("cuModuleLoadData", module, image)
    })
}

/// `cuModuleLoadDataEx`: JIT options are not forwarded (the worker's driver uses its
/// defaults), and output options such as log buffers are left untouched.
///
/// # Safety
/// As [`cuModuleLoadData`]; the option arrays are not read.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    num_options: c_uint,
    _options: *mut c_int,
    _option_values: *mut *mut c_void,
) -> CUresult {
    ffi_guard("cuModuleLoadDataEx", || {
        if num_options > 0 && once_per_name("jit-options", "cuModuleLoadDataEx") {
            tracing::info!(num_options, "rgpu shim: JIT options are not forwarded");
        }
        load_into("cuModuleLoadDataEx", module, image)
    })
}

/// `cuModuleLoadFatBinary`.
///
/// # Safety
/// As [`cuModuleLoadData`].
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadFatBinary(
    module: *mut CUmodule,
    fat_cubin: *const c_void,
) -> CUresult {
    ffi_guard("cuModuleLoadFatBinary", || {
        load_into("cuModuleLoadFatBinary", module, fat_cubin)
    })
}

/// `cuModuleUnload`.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    ffi_guard("cuModuleUnload", || {
        with_session(|s| {
            ops::unload(s, "cuModuleUnload", handle(module))?;
            crate::remote::ranges::device_remove_globals(handle(module));
            Ok(())
        })
    })
}

fn get_function(
    entry: &'static str,
    out: *mut CUfunction,
    module: u64,
    name: *const c_char,
) -> CUresult {
    with_session(|s| {
        if out.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let name = read_name(name)?;
        let f = ops::function(s, entry, module, &name)?;
        write_out(out, to_ptr(f))
    })
}

/// `cuModuleGetFunction`.
///
/// # Safety
/// `hfunc` must be null or writable; `name` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    hfunc: *mut CUfunction,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard("cuModuleGetFunction", || {
        get_function("cuModuleGetFunction", hfunc, handle(module), name)
    })
}

fn get_global(
    entry: &'static str,
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: u64,
    name: *const c_char,
) -> CUresult {
    with_session(|s| {
        let name = read_name(name)?;
        let remote = tables()
            .module(module)
            .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
        let call = rgpu_proto::Call::ModuleGetGlobal(rgpu_proto::ModuleGetGlobal {
            module: remote,
            name: rgpu_proto::Blob(name.as_bytes()),
        });
        let (ptr, size) = s
            .conn()
            .sync(&call, |r| match r {
                rgpu_proto::Reply::ModuleGlobal(g) => Some((g.ptr.0, g.bytes)),
                _ => None,
            })
            .map_err(|e| crate::remote::session::to_curesult(entry, &e))?;
        // Recorded (and reserved here) so that unified copies know it for device memory.
        if size > 0 {
            crate::remote::ranges::device_insert_global(module, ptr, size);
        }
        // Both outputs are optional (null: not wanted), as in the driver.
        if !dptr.is_null() {
            write_out(dptr, ptr)?;
        }
        if !bytes.is_null() {
            write_out(
                bytes,
                usize::try_from(size).map_err(|_| CUDA_ERROR_INVALID_VALUE)?,
            )?;
        }
        Ok(())
    })
}

/// `cuModuleGetGlobal_v2`: a module global's device address and size (from the worker).
///
/// # Safety
/// `dptr` and `bytes` must each be null or writable; `name` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard("cuModuleGetGlobal_v2", || {
        get_global("cuModuleGetGlobal_v2", dptr, bytes, handle(module), name)
    })
}

/// `cuLibraryGetGlobal`: as [`cuModuleGetGlobal_v2`] (a library is its module).
///
/// # Safety
/// As [`cuModuleGetGlobal_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard("cuLibraryGetGlobal", || {
        get_global("cuLibraryGetGlobal", dptr, bytes, handle(library), name)
    })
}

/// `cuModuleGetLoadingMode`: lazy unless `CUDA_MODULE_LOADING=EAGER` (`kernel::loading`).
///
/// # Safety
/// `mode` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetLoadingMode(mode: *mut c_int) -> CUresult {
    ffi_guard("cuModuleGetLoadingMode", || {
        with_session(|_| write_out(mode, loading::mode()))
    })
}

/// `cuLibraryLoadData`: the library is loaded eagerly as one module; JIT and library options
/// are not forwarded.
///
/// # Safety
/// As [`cuModuleLoadData`] for `library` and `code`; the option arrays are not read.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLibraryLoadData(
    library: *mut CUmodule,
    code: *const c_void,
    _jit_options: *mut c_int,
    _jit_option_values: *mut *mut c_void,
    _num_jit_options: c_uint,
    _library_options: *mut c_int,
    _library_option_values: *mut *mut c_void,
    _num_library_options: c_uint,
) -> CUresult {
    ffi_guard("cuLibraryLoadData", || {
        load_into("cuLibraryLoadData", library, code)
    })
}

/// `cuLibraryUnload`.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryUnload(library: CUmodule) -> CUresult {
    ffi_guard("cuLibraryUnload", || {
        with_session(|s| {
            ops::unload(s, "cuLibraryUnload", handle(library))?;
            crate::remote::ranges::device_remove_globals(handle(library));
            Ok(())
        })
    })
}

/// `cuLibraryGetKernel`: the kernel handle is the function handle.
///
/// # Safety
/// `kernel` must be null or writable; `name` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetKernel(
    kernel: *mut CUfunction,
    library: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard("cuLibraryGetKernel", || {
        get_function("cuLibraryGetKernel", kernel, handle(library), name)
    })
}

/// `cuLibraryGetModule`: the library's module is the library itself.
///
/// # Safety
/// `module` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetModule(module: *mut CUmodule, library: CUmodule) -> CUresult {
    ffi_guard("cuLibraryGetModule", || {
        with_session(|_| {
            tables()
                .module(handle(library))
                .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
            write_out(module, library)
        })
    })
}

/// `cuKernelGetFunction`: the function is the kernel itself.
///
/// # Safety
/// `func` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetFunction(
    func: *mut CUfunction,
    kernel: CUfunction,
) -> CUresult {
    ffi_guard("cuKernelGetFunction", || {
        with_session(|_| {
            tables()
                .function(handle(kernel))
                .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
            write_out(func, kernel)
        })
    })
}

/// `cuFuncGetModule`.
///
/// # Safety
/// `module` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetModule(module: *mut CUmodule, func: CUfunction) -> CUresult {
    ffi_guard("cuFuncGetModule", || {
        with_session(|_| {
            let m = tables()
                .function(handle(func))
                .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?
                .module;
            write_out(module, to_ptr(m))
        })
    })
}

/// The answer to `cuFuncGetAttribute`, from the worker (`FuncGetAttribute`): the `cuda`
/// backend asks its driver; the emulated device answers for its built-ins and refuses real
/// kernels' attributes with `CUDA_ERROR_NOT_SUPPORTED`.
fn func_attribute(entry: &'static str, func: CUfunction, attrib: c_int) -> Result<c_int, CUresult> {
    let s = crate::remote::session::initialized()?;
    let function = tables()
        .function(handle(func))
        .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?
        .remote;
    let call = rgpu_proto::Call::FuncGetAttribute(rgpu_proto::FuncGetAttribute {
        function,
        attribute: attrib,
    });
    s.conn()
        .sync(&call, |r| match r {
            rgpu_proto::Reply::FuncAttribute(a) => Some(a.value),
            _ => None,
        })
        .map_err(|e| crate::remote::session::to_curesult(entry, &e))
}

/// `cuFuncGetAttribute` (see [`func_attribute`] for what is answered).
///
/// # Safety
/// `pi` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    func: CUfunction,
) -> CUresult {
    ffi_guard("cuFuncGetAttribute", || {
        with_session(|_| write_out(pi, func_attribute("cuFuncGetAttribute", func, attrib)?))
    })
}

/// `cuFuncSetAttribute`: a dynamic shared memory limit within the device's default per-block
/// limit (which every launch may use without opting in) and a carveout preference (a hint)
/// are accepted; raising the limit beyond the default needs the worker's driver to opt in,
/// which the protocol does not carry: `CUDA_ERROR_NOT_SUPPORTED`, logged.
fn set_attribute(
    entry: &'static str,
    func: CUfunction,
    attrib: c_int,
    value: c_int,
) -> Result<(), CUresult> {
    let s = crate::remote::session::initialized()?;
    tables()
        .function(handle(func))
        .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
    match attrib {
        CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => {
            let default = s
                .attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)
                .map_err(|e| crate::remote::session::to_curesult(entry, &e))?;
            let optin = s
                .attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .unwrap_or(default);
            if value < 0 || value > optin.max(default) {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            if value > default {
                tracing::warn!(entry, value, default, "rgpu shim: opting a kernel into more dynamic shared memory is not forwarded; returning CUDA_ERROR_NOT_SUPPORTED");
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
            Ok(())
        }
        CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT if (-1..=100).contains(&value) => Ok(()),
        CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => Err(CUDA_ERROR_INVALID_VALUE),
        _ => {
            if once_per_name("func-set-attribute", &attrib.to_string()) {
                tracing::warn!(entry, attrib, "rgpu shim: function attribute not forwarded, returning CUDA_ERROR_NOT_SUPPORTED");
            }
            Err(CUDA_ERROR_NOT_SUPPORTED)
        }
    }
}

/// `cuFuncSetAttribute` (see [`set_attribute`]).
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(
    func: CUfunction,
    attrib: c_int,
    value: c_int,
) -> CUresult {
    ffi_guard("cuFuncSetAttribute", || {
        with_session(|_| set_attribute("cuFuncSetAttribute", func, attrib, value))
    })
}

/// `cuFuncSetCacheConfig`: a preference the driver may ignore; checked and accepted.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetCacheConfig(func: CUfunction, config: c_uint) -> CUresult {
    ffi_guard("cuFuncSetCacheConfig", || {
        with_session(|_| {
            tables()
                .function(handle(func))
                .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
            if config > CU_FUNC_CACHE_MAX {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            Ok(())
        })
    })
}

/// `cuKernelGetAttribute` (the kernel is its function; one device).
///
/// # Safety
/// `pi` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuKernelGetAttribute(
    pi: *mut c_int,
    attrib: c_int,
    kernel: CUfunction,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuKernelGetAttribute", || {
        with_session(|_| {
            crate::entry::device_count_check(dev)?;
            write_out(pi, func_attribute("cuKernelGetAttribute", kernel, attrib)?)
        })
    })
}

/// `cuKernelSetAttribute`.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuKernelSetAttribute(
    attrib: c_int,
    value: c_int,
    kernel: CUfunction,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuKernelSetAttribute", || {
        with_session(|_| {
            crate::entry::device_count_check(dev)?;
            set_attribute("cuKernelSetAttribute", kernel, attrib, value)
        })
    })
}

/// `cuKernelSetCacheConfig`: a preference, checked and accepted.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuKernelSetCacheConfig(
    kernel: CUfunction,
    config: c_uint,
    dev: CUdevice,
) -> CUresult {
    ffi_guard("cuKernelSetCacheConfig", || {
        with_session(|_| {
            crate::entry::device_count_check(dev)?;
            tables()
                .function(handle(kernel))
                .map_err(|_| CUDA_ERROR_INVALID_HANDLE)?;
            if config > CU_FUNC_CACHE_MAX {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            Ok(())
        })
    })
}

pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    let f: *const c_void = match (name, version) {
        ("cuModuleGetLoadingMode", 11070) => cuModuleGetLoadingMode as *const c_void,
        ("cuModuleLoadData", 2000) => cuModuleLoadData as *const c_void,
        ("cuModuleLoadDataEx", 2010) => cuModuleLoadDataEx as *const c_void,
        ("cuModuleLoadFatBinary", 2000) => cuModuleLoadFatBinary as *const c_void,
        ("cuModuleUnload", 2000) => cuModuleUnload as *const c_void,
        ("cuModuleGetFunction", 2000) => cuModuleGetFunction as *const c_void,
        ("cuModuleGetGlobal", 3020) => cuModuleGetGlobal_v2 as *const c_void,
        ("cuLibraryGetGlobal", 12000) => cuLibraryGetGlobal as *const c_void,
        ("cuLibraryLoadData", 12000) => cuLibraryLoadData as *const c_void,
        ("cuLibraryUnload", 12000) => cuLibraryUnload as *const c_void,
        ("cuLibraryGetKernel", 12000) => cuLibraryGetKernel as *const c_void,
        ("cuLibraryGetModule", 12000) => cuLibraryGetModule as *const c_void,
        ("cuKernelGetFunction", 12000) => cuKernelGetFunction as *const c_void,
        ("cuFuncGetModule", 11000) => cuFuncGetModule as *const c_void,
        ("cuFuncGetAttribute", 2020) => cuFuncGetAttribute as *const c_void,
        ("cuFuncSetAttribute", 9000) => cuFuncSetAttribute as *const c_void,
        ("cuFuncSetCacheConfig", 3000) => cuFuncSetCacheConfig as *const c_void,
        ("cuKernelGetAttribute", 12000) => cuKernelGetAttribute as *const c_void,
        ("cuKernelSetAttribute", 12000) => cuKernelSetAttribute as *const c_void,
        ("cuKernelSetCacheConfig", 12000) => cuKernelSetCacheConfig as *const c_void,
        _ => return None,
    };
    Some(f)
}
