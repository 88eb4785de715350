//! The `cuda` backend: a [`Backend`] on a real GPU through the driver API.
//!
//! Exists so a worker runs its client's calls on the device. It loads
//! `libcuda.so.1` at run time through cudarc's `dynamic-loading` (building
//! needs no CUDA toolkit), after [`loader`] has checked the library is
//! there, is not rgpu's shim, and has the entry points used. Each
//! [`CudaBackend`] is one session: the device's primary context made
//! current on the worker thread, a memory quota enforced before the driver
//! is asked, and handle tables ([`tables`]) so a client names streams,
//! events, modules and functions only through numbers this session issued.
//!
//! Argument layouts come from `cuFuncGetParamInfo` (CUDA ≥ 12.4). On an
//! older driver they are read from a cubin's `.nv.info` records
//! ([`nvinfo`]); PTX and fatbin lookups are then refused with
//! `CUDA_ERROR_NOT_SUPPORTED`. Launches are timed with event pairs
//! ([`timing`]) for the compute share, and module globals are charged to
//! the quota ([`accounting`]: cubin section sizes, PTX globals found by
//! [`ptxscan`] and sized by `cuModuleGetGlobal`).

pub mod accounting;
pub mod cache;
mod driver;
pub mod error;
pub mod graph;
pub mod hostreg;
mod image;
pub mod loader;
pub mod nvinfo;
pub mod ptx;
pub mod ptxscan;
pub mod tables;
pub mod timing;

use std::ffi::{c_void, CString};

use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, MemsetWidth, ModuleHandle, ParamSlot,
    StreamHandle,
};

pub use cache::ModuleCache;
pub use error::CudaBackendError;

use crate::backend::{Backend, Exec, FunctionInfo, LaunchDims, MemoryInfo, Released};
use tables::{Allocations, Table};

/// Largest packed parameter buffer of one launch, in bytes (CUDA 12.1+'s
/// kernel parameter limit).
pub const PARAM_BYTES_MAX: usize = 32_764;
/// Most parameters one function may declare.
pub const PARAMS_MAX: usize = 4096;
/// Longest kernel name accepted, in bytes.
pub const FUNCTION_NAME_BYTES_MAX: usize = 4096;
/// `CU_STREAM_LEGACY`, the driver's special handle value.
const CU_STREAM_LEGACY: usize = 0x1;
/// `CU_STREAM_PER_THREAD`, the driver's special handle value.
const CU_STREAM_PER_THREAD: usize = 0x2;

/// One device as the daemon's pool sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// Driver ordinal.
    pub ordinal: u32,
    /// `cuDeviceGetName`.
    pub name: String,
    /// `cuDeviceTotalMem`, in bytes.
    pub total_mem_bytes: u64,
}

/// Loads the driver and lists its devices (`cuDeviceGetCount`,
/// `cuDeviceTotalMem`), for the daemon's pool.
///
/// # Errors
/// The driver cannot be loaded or initialised, or has no device.
pub fn probe_devices() -> Result<Vec<DeviceSummary>, CudaBackendError> {
    loader::driver()?;
    driver::init().map_err(CudaBackendError::Init)?;
    let count = driver::device_count().map_err(CudaBackendError::NoDevice)?;
    if count == 0 {
        return Err(CudaBackendError::NoDevice(CudaError::INVALID_DEVICE));
    }
    (0..count)
        .map(|ordinal| {
            let q = |code| CudaBackendError::Query { ordinal, code };
            let dev = driver::device_get(ordinal).map_err(q)?;
            Ok(DeviceSummary {
                ordinal,
                name: driver::device_name(dev).map_err(q)?,
                total_mem_bytes: driver::device_total_mem(dev).map_err(q)?,
            })
        })
        .collect()
}

/// A function of a loaded module, with its argument layout.
#[derive(Debug)]
struct Function {
    module: u64,
    raw: usize,
    layout: Vec<ParamSlot>,
}

/// One session's context on one GPU. See the module docs.
#[derive(Debug)]
pub struct CudaBackend {
    ordinal: u32,
    device: driver::CUdevice,
    /// The primary context (`CUcontext` as an address: handles never leave
    /// this struct and are only passed back to the driver).
    ctx: usize,
    quota_bytes: u64,
    name: String,
    has_param_info: bool,
    device_get_attribute: loader::DeviceGetAttributeFn,
    allocations: Allocations,
    streams: Table<usize>,
    events: Table<usize>,
    modules: Table<usize>,
    functions: Table<Function>,
    cache: Option<ModuleCache>,
    /// Launch timing, module globals, `.nv.info` images.
    acct: accounting::Accounting,
    /// The driver has the stream-ordered allocator.
    has_mem_pools: bool,
    /// The client's shared arena, page-locked for DMA ([`hostreg`]).
    host_arena: Option<hostreg::Registration>,
    /// Graphs, executable graphs and capturing streams ([`graph`]).
    graphs: graph::Graphs,
}

impl CudaBackend {
    /// Opens device `device_ordinal`'s primary context, current on this
    /// thread, with `quota_bytes` of device memory for the session (clamped
    /// to the device's total).
    ///
    /// # Errors
    /// See [`CudaBackendError`]: no driver, the shim in its place, no such
    /// device, or a context failure. Never panics for a missing driver.
    pub fn open(device_ordinal: u32, quota_bytes: u64) -> Result<Self, CudaBackendError> {
        let drv = loader::driver()?;
        driver::init().map_err(CudaBackendError::Init)?;
        let dev_err = |code| CudaBackendError::Device {
            ordinal: device_ordinal,
            code,
        };
        let device = driver::device_get(device_ordinal).map_err(dev_err)?;
        let query = |code| CudaBackendError::Query {
            ordinal: device_ordinal,
            code,
        };
        let total = driver::device_total_mem(device).map_err(query)?;
        let name = driver::device_name(device).map_err(query)?;
        let ctx = driver::primary_ctx_retain(device).map_err(|code| CudaBackendError::Context {
            ordinal: device_ordinal,
            code,
        })?;
        if let Err(code) = driver::ctx_set_current(ctx) {
            let _ = driver::primary_ctx_release(device);
            return Err(CudaBackendError::Context {
                ordinal: device_ordinal,
                code,
            });
        }
        if !drv.has_param_info {
            tracing::warn!(
                "driver lacks cuFuncGetParamInfo (CUDA < 12.4): argument layouts come from cubin .nv.info; PTX and fatbin lookups are refused"
            );
        }
        tracing::info!(device_ordinal, %name, quota_bytes, "cuda backend open");
        Ok(Self {
            ordinal: device_ordinal,
            device,
            ctx: ctx as usize,
            quota_bytes: quota_bytes.min(total),
            name,
            has_param_info: drv.has_param_info,
            device_get_attribute: drv.device_get_attribute,
            allocations: Allocations::default(),
            streams: Table::default(),
            events: Table::default(),
            modules: Table::default(),
            functions: Table::default(),
            cache: None,
            acct: accounting::Accounting::new(!drv.has_param_info),
            has_mem_pools: drv.has_mem_pools,
            host_arena: None,
            graphs: graph::Graphs::default(),
        })
    }

    /// Uses `cache` as the shared on-disk module cache.
    #[must_use]
    pub fn with_module_cache(mut self, cache: ModuleCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The driver ordinal this session runs on.
    #[must_use]
    pub fn ordinal(&self) -> u32 {
        self.ordinal
    }

    /// The session's memory quota, in bytes.
    #[must_use]
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Makes the context current on the calling thread (a thread-local
    /// store in the driver), so a backend moved between threads works.
    fn bind(&self) -> Result<(), CudaError> {
        driver::ctx_set_current(self.ctx as driver::CUcontext)
    }

    fn check_device(device: u32) -> Result<(), CudaError> {
        if device == 0 {
            Ok(())
        } else {
            Err(CudaError::INVALID_DEVICE)
        }
    }

    fn stream(&self, h: StreamHandle) -> Result<driver::CUstream, CudaError> {
        let raw = match h.0 {
            0 => 0,
            1 => CU_STREAM_LEGACY,
            2 => CU_STREAM_PER_THREAD,
            h => *self.streams.get(h)?,
        };
        Ok(raw as driver::CUstream)
    }

    fn exec(&self, exec: Exec) -> Result<Option<driver::CUstream>, CudaError> {
        match exec {
            Exec::Sync => Ok(None),
            Exec::Stream(h) => self.stream(h).map(Some),
        }
    }

    fn event(&self, h: EventHandle) -> Result<driver::CUevent, CudaError> {
        Ok(*self.events.get(h.0)? as driver::CUevent)
    }

    fn load(&mut self, image: &[u8]) -> Result<ModuleHandle, CudaError> {
        if !self.modules.has_room() {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let prepared = image::prepare(image)?;
        // A cubin's globals count against the quota, checked before the
        // driver allocates them (PTX globals are sized after the JIT below).
        let globals = accounting::Accounting::globals_of(&prepared);
        if globals > self.quota_bytes.saturating_sub(self.used_bytes()) {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        self.bind()?;
        let m = driver::module_load_data(&prepared)?;
        // PTX: the JIT placed the globals; ask the driver their sizes.
        let text = std::str::from_utf8(image)
            .ok()
            .filter(|_| !nvinfo::is_cubin(image));
        // Fatbins are not parsed: their globals are charged as handed out.
        let sized = text.is_some() || nvinfo::is_cubin(image);
        let globals = match text {
            Some(ptx) => {
                let jit = ptx_globals_bytes(m, ptx);
                if jit > self.quota_bytes.saturating_sub(self.used_bytes()) {
                    let _ = driver::module_unload(m);
                    return Err(CudaError::OUT_OF_MEMORY);
                }
                globals + jit
            }
            None => globals,
        };
        match self.modules.insert(m as usize) {
            Ok(h) => {
                self.acct.loaded(h, &prepared, globals, sized);
                Ok(ModuleHandle(h))
            }
            Err(e) => {
                let _ = driver::module_unload(m);
                Err(e)
            }
        }
    }

    /// Frees an allocation already removed from the table: a pool one
    /// stream-ordered on the legacy stream (which waits for all blocking
    /// streams), any other with `cuMemFree`.
    fn free_raw(&mut self, base: u64) -> Result<(), CudaError> {
        if self.acct.take_pool(base) {
            driver::mem_free_async(base, std::ptr::null_mut())
        } else {
            driver::mem_free(base)
        }
    }

    /// Device bytes charged to the quota: allocations and module globals.
    /// A host copy on capturing stream `s` must name the registered arena
    /// ([`graph::host_capturable`]).
    fn check_host_capture(
        &self,
        s: Option<driver::CUstream>,
        addr: usize,
        len: usize,
    ) -> Result<(), CudaError> {
        match s {
            Some(s) if self.graphs.capturing(s as usize) => {
                let arena = self.host_arena.as_ref().map(hostreg::Registration::span);
                if graph::host_capturable(arena, addr, len) {
                    Ok(())
                } else {
                    Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
                }
            }
            _ => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.allocations.bytes() + self.acct.globals_bytes()
    }

    /// A launch bracketed by the timer's event pair on its stream, so its
    /// kernel time reaches `take_kernel_ns` once it completes.
    fn launch_with(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[driver::RawLaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        let s = self.stream(stream)? as usize;
        self.bind()?;
        // A launch being captured is not run now: nothing to time (and a
        // captured event could not be queried).
        let pair = if self.graphs.capturing(s) {
            None
        } else {
            self.acct.timer.begin(s)
        };
        let r = self.launch_untimed(function, dims, params, attrs, stream);
        if let Some(p) = pair {
            self.acct.timer.end(p, s, r.is_ok());
        }
        r
    }

    /// `cuMemAllocAsync` after the quota check (the default pool only).
    fn alloc_async(&mut self, bytes: u64, stream: StreamHandle) -> Result<DevicePtr, CudaError> {
        /// `CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED`.
        const MEMORY_POOLS_SUPPORTED: u32 = 115;
        let s = self.stream(stream)?;
        if !self.has_mem_pools || self.device_attribute(0, MEMORY_POOLS_SUPPORTED)? == 0 {
            return Err(CudaError::NOT_SUPPORTED);
        }
        if bytes == 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        if !self.allocations.has_room()
            || bytes > self.quota_bytes.saturating_sub(self.used_bytes())
        {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let len = usize::try_from(bytes).map_err(|_| CudaError::OUT_OF_MEMORY)?;
        self.bind()?;
        let ptr = driver::mem_alloc_async(len, s)?;
        self.allocations.insert(ptr, bytes);
        self.acct.mark_pool(ptr);
        Ok(DevicePtr(ptr))
    }

    fn param_layout(&self, f: driver::CUfunction) -> Result<Vec<ParamSlot>, CudaError> {
        let mut layout = Vec::new();
        for index in 0..=PARAMS_MAX {
            match driver::func_param_info(f, index)? {
                None => return Ok(layout),
                Some((offset, size)) => {
                    let end = offset.checked_add(size).ok_or(CudaError::INVALID_VALUE)?;
                    if index == PARAMS_MAX || end > PARAM_BYTES_MAX {
                        return Err(CudaError::NOT_SUPPORTED);
                    }
                    // Both fit u32: bounded by PARAM_BYTES_MAX just above.
                    layout.push(ParamSlot::new(offset as u32, size as u32));
                }
            }
        }
        Err(CudaError::NOT_SUPPORTED)
    }
}

impl CudaBackend {
    /// `cuLaunchKernel` (no attributes) or `cuLaunchKernelEx`, with the
    /// packed parameters split per the function's layout.
    fn launch_untimed(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[driver::RawLaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        let func = self.functions.get(function.0)?;
        let s = self.stream(stream)?;
        if params.len() > PARAM_BYTES_MAX {
            return Err(CudaError::INVALID_VALUE);
        }
        // An 8-byte aligned copy: each kernelParams entry points into it.
        let mut buf = vec![0u64; params.len().div_ceil(8)];
        for (word, chunk) in buf.iter_mut().zip(params.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        let base = buf.as_mut_ptr().cast::<u8>();
        let mut ptrs = Vec::with_capacity(func.layout.len());
        for slot in &func.layout {
            let (offset, size) = (slot.offset.get() as usize, slot.size.get() as usize);
            if offset + size > params.len() {
                return Err(CudaError::INVALID_VALUE);
            }
            ptrs.push(base.wrapping_add(offset).cast::<c_void>());
        }
        let raw = func.raw as driver::CUfunction;
        self.bind()?;
        if attrs.is_empty() {
            // SAFETY: one pointer per declared parameter, each at its offset
            // in `buf`, which holds `params.len()` bytes (checked: offset +
            // size fits) and outlives the call; the driver copies them.
            unsafe {
                driver::launch_kernel(
                    raw,
                    dims.grid,
                    dims.block,
                    dims.shared_mem_bytes,
                    s,
                    &mut ptrs,
                )
            }
        } else {
            // SAFETY: as above.
            unsafe {
                driver::launch_kernel_ex(
                    raw,
                    dims.grid,
                    dims.block,
                    dims.shared_mem_bytes,
                    s,
                    &mut ptrs,
                    attrs,
                )
            }
        }
    }
}

/// Bytes of the globals PTX text `ptx` defines, as module `m` (loaded from
/// it) holds them: each name found by [`ptxscan`] asked of
/// `cuModuleGetGlobal` (a name the driver does not know counts 0).
fn ptx_globals_bytes(m: driver::CUmodule, ptx: &str) -> u64 {
    ptxscan::global_names(ptx)
        .into_iter()
        .filter_map(|n| CString::new(n).ok())
        .filter_map(|n| driver::module_get_global(m, &n).ok())
        .map(|(_, bytes)| bytes as u64)
        .fold(0u64, u64::saturating_add)
}

impl Backend for CudaBackend {
    fn device_count(&self) -> Result<u32, CudaError> {
        Ok(1)
    }

    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError> {
        Self::check_device(device)?;
        let attribute = i32::try_from(attribute).map_err(|_| CudaError::INVALID_VALUE)?;
        let mut value = 0;
        // SAFETY: the pointer was resolved from the driver with this exact
        // C signature; `value` is a valid out pointer; `self.device` came
        // from cuDeviceGet; an unknown attribute is an error return.
        let r = unsafe { (self.device_get_attribute)(&mut value, attribute, self.device) };
        if r == 0 {
            Ok(value)
        } else {
            Err(CudaError(r))
        }
    }

    fn device_name(&self, device: u32) -> Result<&str, CudaError> {
        Self::check_device(device)?;
        Ok(&self.name)
    }

    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError> {
        Self::check_device(device)?;
        driver::device_uuid(self.device)
    }

    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError> {
        Self::check_device(device)?;
        Ok(self.quota_bytes)
    }

    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError> {
        self.bind()?;
        let (real_free, _) = driver::mem_get_info()?;
        let left = self.quota_bytes.saturating_sub(self.used_bytes());
        Ok(MemoryInfo {
            free: left.min(real_free),
            total: self.quota_bytes,
        })
    }

    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        if bytes == 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        let used = self.used_bytes();
        if !self.allocations.has_room() || bytes > self.quota_bytes.saturating_sub(used) {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let len = usize::try_from(bytes).map_err(|_| CudaError::OUT_OF_MEMORY)?;
        self.bind()?;
        let ptr = driver::mem_alloc(len)?;
        self.allocations.insert(ptr, bytes);
        debug_assert!(self.used_bytes() <= self.quota_bytes);
        Ok(DevicePtr(ptr))
    }

    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.allocations.remove(ptr.0)?;
        self.bind()?;
        self.free_raw(ptr.0)
    }

    fn mem_alloc_pitch(
        &mut self,
        width_bytes: u64,
        height: u64,
        element_size: u32,
    ) -> Result<(DevicePtr, u64), CudaError> {
        /// `CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT`.
        const TEXTURE_PITCH_ALIGNMENT: u32 = 51;
        // Our own pitch (at least the device's texture pitch alignment), so
        // the charged size is known before the driver is asked; a plain
        // cuMemAlloc of pitch × height then backs it.
        let device_align = self.device_attribute(0, TEXTURE_PITCH_ALIGNMENT)?;
        let align = u64::try_from(device_align)
            .unwrap_or(0)
            .clamp(
                crate::pitch::PITCH_ALIGN_BYTES,
                crate::pitch::PITCH_BYTES_MAX,
            )
            .next_power_of_two();
        let (pitch, bytes) = crate::pitch::pitched(width_bytes, height, element_size, align)?;
        Ok((self.mem_alloc(bytes)?, pitch))
    }

    fn mem_alloc_async(
        &mut self,
        bytes: u64,
        pool: Option<u64>,
        stream: StreamHandle,
    ) -> Result<DevicePtr, CudaError> {
        crate::pitch::check_pool(pool)?;
        self.alloc_async(bytes, stream)
    }

    fn mem_free_async(&mut self, ptr: DevicePtr, stream: StreamHandle) -> Result<(), CudaError> {
        let s = self.stream(stream)?;
        if !self.has_mem_pools {
            return Err(CudaError::NOT_SUPPORTED);
        }
        self.allocations.remove(ptr.0)?;
        self.bind()?;
        if self.acct.take_pool(ptr.0) {
            driver::mem_free_async(ptr.0, s)
        } else {
            // Not from the pool: freed once the stream's earlier work is done.
            driver::stream_synchronize(s)?;
            driver::mem_free(ptr.0)
        }
    }

    fn default_mem_pool(&mut self, device: u32) -> Result<u64, CudaError> {
        Self::check_device(device)?;
        Ok(crate::pitch::DEFAULT_POOL_HANDLE)
    }

    fn mem_used_bytes(&self) -> Option<u64> {
        Some(self.used_bytes())
    }

    fn module_global(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<(DevicePtr, u64), CudaError> {
        let m = *self.modules.get(module.0)? as driver::CUmodule;
        if name.len() > FUNCTION_NAME_BYTES_MAX {
            return Err(CudaError::NOT_FOUND);
        }
        let name = CString::new(name).map_err(|_| CudaError::NOT_FOUND)?;
        self.bind()?;
        let (ptr, bytes) = driver::module_get_global(m, &name)?;
        // Copies and memsets to the global are checked like allocations.
        self.allocations.add_view(ptr, bytes as u64);
        self.acct.viewed(module.0, ptr, bytes as u64);
        Ok((DevicePtr(ptr), bytes as u64))
    }

    fn take_kernel_ns(&mut self) -> Option<u64> {
        // Never blocks: only pairs whose kernels completed are collected.
        if self.bind().is_err() {
            return Some(0);
        }
        Some(self.acct.timer.take_ns())
    }

    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError> {
        self.allocations.check(ptr.0, len)
    }

    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError> {
        self.allocations.check(dst.0, src.len() as u64)?;
        let s = self.exec(exec)?;
        self.check_host_capture(s, src.as_ptr() as usize, src.len())?;
        self.bind()?;
        driver::memcpy_htod(dst.0, src, s)
    }

    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError> {
        self.allocations.check(src.0, dst.len() as u64)?;
        let s = self.exec(exec)?;
        self.check_host_capture(s, dst.as_ptr() as usize, dst.len())?;
        self.bind()?;
        driver::memcpy_dtoh(dst, src.0, s)
    }

    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.allocations.check(dst.0, len)?;
        self.allocations.check(src.0, len)?;
        let len = usize::try_from(len).map_err(|_| CudaError::INVALID_VALUE)?;
        let s = self.exec(exec)?;
        self.bind()?;
        driver::memcpy_dtod(dst.0, src.0, len, s)
    }

    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        let w: u8 = match width {
            MemsetWidth::D8 => 1,
            MemsetWidth::D16 => 2,
            MemsetWidth::D32 => 4,
        };
        if !dst.0.is_multiple_of(u64::from(w)) {
            return Err(CudaError::INVALID_VALUE);
        }
        let bytes = count
            .checked_mul(u64::from(w))
            .ok_or(CudaError::INVALID_VALUE)?;
        self.allocations.check(dst.0, bytes)?;
        let count = usize::try_from(count).map_err(|_| CudaError::INVALID_VALUE)?;
        let s = self.exec(exec)?;
        self.bind()?;
        driver::memset(dst.0, w, value, count, s)
    }

    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError> {
        let m = self.load(image)?;
        if let Some(cache) = &self.cache {
            // Refused (not cached) when `hash` is not the image's SHA-256.
            if let Err(e) = cache.put(&hash, image) {
                tracing::warn!(error = %e, "module not cached");
            }
        }
        Ok(m)
    }

    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        let Some(cache) = &self.cache else {
            return Err(CudaError::NOT_FOUND);
        };
        match cache.get(&hash) {
            Ok(Some(image)) => self.load(&image),
            Ok(None) => Err(CudaError::NOT_FOUND),
            Err(e) => {
                tracing::warn!(error = %e, "module cache read failed");
                Err(CudaError::NOT_FOUND)
            }
        }
    }

    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        let m = self.modules.remove(module.0)?;
        self.functions.remove_where(|f| f.module == module.0);
        for base in self.acct.unloaded(module.0) {
            self.allocations.remove_view(base);
        }
        self.bind()?;
        driver::module_unload(m as driver::CUmodule)
    }

    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        let m = *self.modules.get(module.0)? as driver::CUmodule;
        if name.len() > FUNCTION_NAME_BYTES_MAX {
            return Err(CudaError::NOT_FOUND);
        }
        let name = CString::new(name).map_err(|_| CudaError::NOT_FOUND)?;
        if !self.functions.has_room() {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        self.bind()?;
        let f = driver::module_get_function(m, &name)?;
        let layout = if self.has_param_info {
            self.param_layout(f)?
        } else {
            // CUDA < 12.4: the cubin's EIATTR_KPARAM_INFO records.
            let kernel = name.to_str().map_err(|_| CudaError::NOT_FOUND)?;
            self.acct.nvinfo_layout(module.0, kernel)?
        };
        let h = self.functions.insert(Function {
            module: module.0,
            raw: f as usize,
            layout,
        })?;
        let params = &self.functions.get(h)?.layout;
        Ok(FunctionInfo {
            function: FunctionHandle(h),
            params,
        })
    }

    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        self.launch_with(function, dims, params, &[], stream)
    }

    /// `cuLaunchKernelEx`. Reachable only through a function lookup, which
    /// needs `cuFuncGetParamInfo` (CUDA ≥ 12.4), so the driver also has
    /// `cuLaunchKernelEx` (CUDA ≥ 11.8). Attribute ids the protocol cannot
    /// carry faithfully are `CUDA_ERROR_NOT_SUPPORTED`.
    fn launch_ex(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[rgpu_proto::LaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        let raw: Vec<driver::RawLaunchAttr> = attrs.iter().map(|a| (a.id, a.value)).collect();
        self.launch_with(function, dims, params, &raw, stream)
    }

    fn function_attribute(
        &mut self,
        function: FunctionHandle,
        attribute: i32,
    ) -> Result<i32, CudaError> {
        let raw = self.functions.get(function.0)?.raw as driver::CUfunction;
        self.bind()?;
        driver::func_attribute(raw, attribute)
    }

    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<StreamHandle, CudaError> {
        if !self.streams.has_room() {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        self.bind()?;
        let s = driver::stream_create(flags, priority)?;
        Ok(StreamHandle(self.streams.insert(s as usize)?))
    }

    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        let s = self.streams.remove(stream.0)?;
        self.bind()?;
        self.graphs.stream_gone(s);
        driver::stream_destroy(s as driver::CUstream)
    }

    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        let s = self.stream(stream)?;
        self.bind()?;
        driver::stream_query(s)
    }

    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        let s = self.stream(stream)?;
        self.bind()?;
        driver::stream_synchronize(s)
    }

    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        flags: u32,
    ) -> Result<(), CudaError> {
        let (s, e) = (self.stream(stream)?, self.event(event)?);
        self.bind()?;
        driver::stream_wait_event(s, e, flags)
    }

    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError> {
        if !self.events.has_room() {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        self.bind()?;
        let e = driver::event_create(flags)?;
        Ok(EventHandle(self.events.insert(e as usize)?))
    }

    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError> {
        let (e, s) = (self.event(event)?, self.stream(stream)?);
        self.bind()?;
        driver::event_record(e, s)
    }

    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError> {
        let e = self.event(event)?;
        self.bind()?;
        driver::event_query(e)
    }

    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError> {
        let e = self.event(event)?;
        self.bind()?;
        driver::event_synchronize(e)
    }

    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError> {
        let (a, b) = (self.event(start)?, self.event(end)?);
        self.bind()?;
        let ms = driver::event_elapsed_ms(a, b)?;
        // Negative when `end` precedes `start`; the wire carries u64.
        Ok((f64::from(ms.max(0.0)) * 1e6) as u64)
    }

    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError> {
        let e = self.events.remove(event.0)?;
        self.bind()?;
        driver::event_destroy(e as driver::CUevent)
    }

    fn ctx_synchronize(&mut self) -> Result<(), CudaError> {
        self.bind()?;
        driver::ctx_synchronize()
    }

    fn stream_begin_capture(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        let s = self.stream(stream)? as usize;
        self.bind()?;
        self.graphs.begin(s, mode)
    }

    fn stream_end_capture(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        let s = self.stream(stream)? as usize;
        self.bind()?;
        self.graphs.end(s)
    }

    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        self.bind()?;
        self.graphs.instantiate(graph, flags)
    }

    /// `cuGraphLaunch`, bracketed by the timer's event pair like a kernel
    /// launch, so the compute share is charged the graph's device time
    /// (not when launched into a capture).
    fn graph_launch(&mut self, exec: u64, stream: StreamHandle) -> Result<(), CudaError> {
        self.graphs.check_exec(exec)?;
        let s = self.stream(stream)? as usize;
        self.bind()?;
        let pair = if self.graphs.capturing(s) {
            None
        } else {
            self.acct.timer.begin(s)
        };
        let r = self.graphs.launch(exec, s);
        if let Some(p) = pair {
            self.acct.timer.end(p, s, r.is_ok());
        }
        r
    }

    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), CudaError> {
        self.bind()?;
        self.graphs.destroy_exec(exec)
    }

    fn graph_destroy(&mut self, graph: u64) -> Result<(), CudaError> {
        self.bind()?;
        self.graphs.destroy_graph(graph)
    }

    fn register_host_arena(&mut self, span: crate::session::HostSpan) -> Result<(), CudaError> {
        if self.host_arena.is_some() {
            return Err(CudaError::INVALID_VALUE);
        }
        self.bind()?;
        // SAFETY: the span is the session transport's arena mapping, which stays mapped
        // until the session has called `release_all` (which unregisters it below).
        self.host_arena = Some(unsafe { hostreg::register(span) }?);
        Ok(())
    }

    fn release_all(&mut self) -> Released {
        let bound = self.bind();
        if let Err(e) = bound.and_then(|()| driver::ctx_synchronize()) {
            tracing::warn!(?e, "context not clean at release");
        }
        if let Some(reg) = self.host_arena.take() {
            if let Err(e) = reg.unregister() {
                tracing::warn!(?e, "shared arena unregistration failed");
            }
        }
        let graphs = self.graphs.release();
        if graphs > 0 {
            tracing::debug!(graphs, "graphs destroyed at release");
        }
        let mut r = Released::default();
        for (base, len) in self.allocations.drain() {
            let _ = self.free_raw(base);
            r.allocations += 1;
            r.bytes += len;
        }
        for s in self.streams.drain() {
            let _ = driver::stream_destroy(s as driver::CUstream);
            r.streams += 1;
        }
        for e in self.events.drain() {
            let _ = driver::event_destroy(e as driver::CUevent);
            r.events += 1;
        }
        self.acct.clear();
        self.functions.drain();
        for m in self.modules.drain() {
            let _ = driver::module_unload(m as driver::CUmodule);
            r.modules += 1;
        }
        r
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.release_all();
        if let Err(e) = driver::primary_ctx_release(self.device) {
            tracing::warn!(?e, "primary context release failed");
        }
    }
}
