//! The `Backend` trait: the driver-API-shaped operations a worker executes.
//!
//! Exists so the session executor (`session`) maps protocol calls to one
//! interface whatever runs them: the `cuda` backend (real GPU, another
//! crate's job) or the [`emulated`](crate::emulated) backend (host RAM, CI).
//!
//! The trait is **object-safe** (`&mut dyn Backend` works) and every method
//! takes `&mut self` or `&self` of one session's backend: a backend value is
//! one CUDA context, owned by one session, so its handle tables are that
//! session's alone. Every failure is a [`CudaError`] code, exactly what the
//! shim hands back to the application.

use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, LaunchAttr, MemsetWidth, ModuleHandle,
    ParamSlot, StreamHandle,
};

/// How a copy or memset is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// The synchronous driver call (`cuMemcpyHtoD`, `cuMemsetD8`, ...): on
    /// the legacy default stream, done when the call returns.
    Sync,
    /// The `*Async` variant, ordered on this stream.
    Stream(StreamHandle),
}

/// Launch geometry of `cuLaunchKernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    /// Blocks per grid, x/y/z.
    pub grid: [u32; 3],
    /// Threads per block, x/y/z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

impl LaunchDims {
    /// Total threads launched (`grid × block`), saturating at `u64::MAX`.
    #[must_use]
    pub fn threads(&self) -> u64 {
        self.grid
            .iter()
            .chain(self.block.iter())
            .fold(1u64, |acc, &d| acc.saturating_mul(u64::from(d)))
    }
}

/// Answer of `cuMemGetInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Bytes still allocatable.
    pub free: u64,
    /// Bytes the context may use in all.
    pub total: u64,
}

/// What [`Backend::release_all`] freed when a session ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Device allocations freed.
    pub allocations: u64,
    /// Device bytes freed (as charged against the quota).
    pub bytes: u64,
    /// Streams destroyed.
    pub streams: u64,
    /// Events destroyed.
    pub events: u64,
    /// Modules unloaded.
    pub modules: u64,
}

/// A function handle and its argument layout, as `cuModuleGetFunction` plus
/// `cuFuncGetParamInfo` would give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionInfo<'a> {
    /// The function.
    pub function: FunctionHandle,
    /// (offset, size) of each parameter in the packed parameter buffer.
    pub params: &'a [ParamSlot],
}

/// What a client asks of the server's device pool (`RequestDevices`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Devices wanted.
    pub count: u32,
    /// Share of each device in thousandths, used when `memory_bytes` is 0.
    pub fraction_milli: u32,
    /// Memory wanted per device, in bytes (0: see `fraction_milli`).
    pub memory_bytes: u64,
}

/// What the pool granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceGrant {
    /// Devices granted.
    pub count: u32,
    /// Memory per device, in bytes (the context's quota).
    pub memory_bytes: u64,
}

/// One CUDA context's worth of driver operations. See the module docs.
///
/// Stream handle 0 is the legacy default stream and always valid; handles
/// from another session's backend are unknown here
/// ([`CudaError::INVALID_HANDLE`]).
pub trait Backend: Send {
    /// `cuDeviceGetCount`.
    ///
    /// # Errors
    /// A driver failure.
    fn device_count(&self) -> Result<u32, CudaError>;
    /// `cuDeviceGetAttribute`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal,
    /// [`CudaError::INVALID_VALUE`] for an unknown attribute.
    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError>;
    /// `cuDeviceGetName`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal.
    fn device_name(&self, device: u32) -> Result<&str, CudaError>;
    /// `cuDeviceGetUuid`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal.
    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError>;
    /// `cuDeviceTotalMem` (a quota-limited backend reports the quota).
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal.
    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError>;
    /// `cuMemGetInfo` (a quota-limited backend reports the quota).
    ///
    /// # Errors
    /// A driver failure.
    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError>;

    /// `cuMemAlloc`.
    ///
    /// # Errors
    /// [`CudaError::OUT_OF_MEMORY`] over the quota, [`CudaError::INVALID_VALUE`] for 0 bytes.
    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError>;
    /// `cuMemFree`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] unless `ptr` is the base of a live allocation.
    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError>;
    /// `cuMemAllocPitch`: `height` rows of `width_bytes`; returns the base
    /// and the pitch (row stride). The quota is charged pitch × height.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] for a zero size or an element size
    /// other than 4, 8 or 16; [`CudaError::OUT_OF_MEMORY`] over the quota.
    /// The default (a backend without it) is [`CudaError::NOT_SUPPORTED`].
    fn mem_alloc_pitch(
        &mut self,
        width_bytes: u64,
        height: u64,
        element_size: u32,
    ) -> Result<(DevicePtr, u64), CudaError> {
        let _ = (width_bytes, height, element_size);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuMemAllocAsync` on `stream` (`pool` `None`) or
    /// `cuMemAllocFromPoolAsync` from `pool` (a handle from
    /// [`Backend::default_mem_pool`]). The quota is charged at once.
    ///
    /// # Errors
    /// As [`Backend::mem_alloc`]; [`CudaError::INVALID_HANDLE`] for an
    /// unknown stream, [`CudaError::INVALID_VALUE`] for an unknown pool.
    /// The default is [`CudaError::NOT_SUPPORTED`].
    fn mem_alloc_async(
        &mut self,
        bytes: u64,
        pool: Option<u64>,
        stream: StreamHandle,
    ) -> Result<DevicePtr, CudaError> {
        let _ = (bytes, pool, stream);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuMemFreeAsync` on `stream`; frees any live allocation (pool or
    /// not), as the driver does.
    ///
    /// # Errors
    /// As [`Backend::mem_free`]; [`CudaError::INVALID_HANDLE`] for an
    /// unknown stream. The default is [`CudaError::NOT_SUPPORTED`].
    fn mem_free_async(&mut self, ptr: DevicePtr, stream: StreamHandle) -> Result<(), CudaError> {
        let _ = (ptr, stream);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuDeviceGetDefaultMemPool`: this session's handle for the device's
    /// default pool (the only pool served).
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal. The default is
    /// [`CudaError::NOT_SUPPORTED`].
    fn default_mem_pool(&mut self, device: u32) -> Result<u64, CudaError> {
        let _ = device;
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuModuleGetGlobal`: the address and size of global `name` of
    /// `module`; the range becomes valid for copies and memsets (not for
    /// `mem_free`) until the module is unloaded.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown module,
    /// [`CudaError::NOT_FOUND`] for a name the module lacks. The default is
    /// [`CudaError::NOT_SUPPORTED`].
    fn module_global(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<(DevicePtr, u64), CudaError> {
        let _ = (module, name);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// Device bytes this context holds against its quota (allocations of
    /// every kind and module globals), for live metrics; `None` when the
    /// backend does not track it (the default).
    fn mem_used_bytes(&self) -> Option<u64> {
        None
    }
    /// Checks that `[ptr, ptr + len)` lies inside one live allocation, for a
    /// copy whose bytes will arrive in pieces (a trailer): a bad destination
    /// is refused before any byte lands, as the driver refuses a bad copy.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] otherwise.
    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError>;
    /// `cuMemcpyHtoD[Async]`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] when the range is not inside one live
    /// allocation; [`CudaError::INVALID_HANDLE`] for an unknown stream.
    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError>;
    /// `cuMemcpyDtoH[Async]`: fills all of `dst`.
    ///
    /// # Errors
    /// As [`Backend::memcpy_htod`].
    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError>;
    /// `cuMemcpyDtoD[Async]`.
    ///
    /// # Errors
    /// As [`Backend::memcpy_htod`], for either range.
    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError>;
    /// `cuMemsetD8/D16/D32[Async]`: `count` elements of `width`, each set to
    /// the low bits of `value`.
    ///
    /// # Errors
    /// As [`Backend::memcpy_htod`]; [`CudaError::INVALID_VALUE`] for a
    /// `dst` not aligned to the element width.
    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError>;

    /// `cuModuleLoadData`; `hash` keys the module cache.
    ///
    /// # Errors
    /// [`CudaError::INVALID_IMAGE`] / [`CudaError::NOT_SUPPORTED`] for
    /// images this backend cannot load; [`CudaError::OUT_OF_MEMORY`].
    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError>;
    /// Loads a module whose image this session loaded before, by hash.
    ///
    /// # Errors
    /// [`CudaError::NOT_FOUND`] on a cache miss (the shim then sends the image).
    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError>;
    /// `cuModuleUnload`; the module's functions become invalid.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown module.
    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError>;
    /// `cuModuleGetFunction` plus the argument layout.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown module,
    /// [`CudaError::NOT_FOUND`] for a name the module lacks.
    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError>;
    /// `cuLaunchKernel` with parameters packed per the argument layout.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown function or stream,
    /// [`CudaError::INVALID_VALUE`] for bad geometry or parameter bytes, and
    /// whatever the kernel itself raises (e.g. the sticky
    /// [`CudaError::ILLEGAL_ADDRESS`]).
    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError>;

    /// `cuLaunchKernelEx` (and `cuLaunchCooperativeKernel`, sent as the
    /// cooperative attribute): [`Backend::launch`] with launch attributes.
    /// Required (no default), so a decorator cannot silently drop the
    /// attributes by falling back to [`Backend::launch`].
    ///
    /// # Errors
    /// As [`Backend::launch`]; [`CudaError::NOT_SUPPORTED`] for an
    /// attribute this backend cannot honour, [`CudaError::INVALID_VALUE`]
    /// for an unknown attribute id or value.
    fn launch_ex(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[LaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError>;

    /// `cuFuncGetAttribute` (`attribute` is a `CUfunction_attribute`).
    /// Required (no default), like [`Backend::launch_ex`].
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown function,
    /// [`CudaError::INVALID_VALUE`] for an unknown attribute,
    /// [`CudaError::NOT_SUPPORTED`] for what this backend cannot know.
    fn function_attribute(
        &mut self,
        function: FunctionHandle,
        attribute: i32,
    ) -> Result<i32, CudaError>;

    /// Kernel time, in ns, of launches that completed since the last call,
    /// for the compute share ([`crate::share`]). `None` (the default): this
    /// backend runs launches synchronously, so the wall time of
    /// [`Backend::launch`] is the kernel's time. A backend with asynchronous
    /// launches measures them itself and reports them here as they complete
    /// (`cuda`: event pairs around each launch, `cuda::timing`); it must
    /// never block.
    fn take_kernel_ns(&mut self) -> Option<u64> {
        None
    }

    /// The device's utilization for `nvmlDeviceGetUtilizationRates` (the
    /// `DeviceGetUtilization` call): kernel-busy percent over the past
    /// sample period. The default is [`CudaError::NOT_SUPPORTED`]: a bare
    /// backend keeps no sample window; [`crate::share::Shared`], which every
    /// worker wraps around its backend, answers it from the share board
    /// (`docs/worker.md`, "Device utilization"). Decorators forward it.
    ///
    /// # Errors
    /// [`CudaError::INVALID_DEVICE`] for a bad ordinal,
    /// [`CudaError::NOT_SUPPORTED`] where nothing measures kernel time.
    fn device_utilization(&mut self, device: u32) -> Result<crate::share::Utilization, CudaError> {
        let _ = device;
        Err(CudaError::NOT_SUPPORTED)
    }

    /// `cuStreamCreateWithPriority`.
    ///
    /// # Errors
    /// [`CudaError::OUT_OF_MEMORY`] when the stream table is full.
    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<StreamHandle, CudaError>;
    /// `cuStreamDestroy`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown or built-in stream.
    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError>;
    /// `cuStreamQuery`: `Ok` when all its work is done,
    /// [`CudaError::NOT_READY`] otherwise.
    ///
    /// # Errors
    /// As described, or [`CudaError::INVALID_HANDLE`].
    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError>;
    /// `cuStreamSynchronize`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown stream.
    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError>;
    /// `cuStreamWaitEvent`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown stream or event.
    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        flags: u32,
    ) -> Result<(), CudaError>;

    /// `cuEventCreate`.
    ///
    /// # Errors
    /// [`CudaError::OUT_OF_MEMORY`] when the event table is full.
    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError>;
    /// `cuEventRecord` on `stream`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown event or stream.
    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError>;
    /// `cuEventQuery`: `Ok` when the recorded work is done (or it was never
    /// recorded), [`CudaError::NOT_READY`] otherwise.
    ///
    /// # Errors
    /// As described, or [`CudaError::INVALID_HANDLE`].
    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError>;
    /// `cuEventSynchronize`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown event.
    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError>;
    /// `cuEventElapsedTime`, in nanoseconds.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for unknown events, events never
    /// recorded, or events created without timing.
    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError>;
    /// `cuEventDestroy`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown event.
    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError>;

    /// `cuCtxSynchronize`.
    ///
    /// # Errors
    /// A deferred device failure.
    fn ctx_synchronize(&mut self) -> Result<(), CudaError>;

    /// `cuStreamBeginCapture_v2` on `stream` (`mode`: 0 global, 1 thread
    /// local, 2 relaxed). Until [`Backend::stream_end_capture`], work
    /// ordered on `stream` is recorded into a graph, not executed
    /// (`docs/worker.md`, "Graphs"). The default is
    /// [`CudaError::NOT_SUPPORTED`]; decorators forward it.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown stream,
    /// [`CudaError::STREAM_CAPTURE_UNSUPPORTED`] for the legacy stream,
    /// [`CudaError::ILLEGAL_STATE`] if it already captures,
    /// [`CudaError::INVALID_VALUE`] for an unknown mode.
    fn stream_begin_capture(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        let _ = (stream, mode);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuStreamEndCapture`: the captured graph's handle.
    ///
    /// # Errors
    /// [`CudaError::ILLEGAL_STATE`] when `stream` is not capturing,
    /// [`CudaError::STREAM_CAPTURE_INVALIDATED`] when the capture was
    /// invalidated (it ends, yielding no graph). Default: not supported.
    fn stream_end_capture(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        let _ = stream;
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuGraphInstantiateWithFlags`: an executable graph of `graph`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown graph,
    /// [`CudaError::INVALID_VALUE`] / [`CudaError::NOT_SUPPORTED`] for
    /// flags. Default: not supported.
    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        let _ = (graph, flags);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuGraphLaunch` of executable graph `exec` on `stream`. A decorator
    /// enforcing the compute share charges it like a launch.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown graph or stream, and
    /// whatever its nodes raise. Default: not supported.
    fn graph_launch(&mut self, exec: u64, stream: StreamHandle) -> Result<(), CudaError> {
        let _ = (exec, stream);
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuGraphExecDestroy`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle. Default: not supported.
    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), CudaError> {
        let _ = exec;
        Err(CudaError::NOT_SUPPORTED)
    }
    /// `cuGraphDestroy` (executable graphs made from it live on).
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle. Default: not supported.
    fn graph_destroy(&mut self, graph: u64) -> Result<(), CudaError> {
        let _ = graph;
        Err(CudaError::NOT_SUPPORTED)
    }

    /// Admission (`RequestDevices`): sizes this session's share of the
    /// server's device pool before its context exists. Backends not behind
    /// a daemon's pool (the bare emulated device) answer
    /// `CUDA_ERROR_NOT_SUPPORTED`, the default.
    ///
    /// # Errors
    /// `CUDA_ERROR_NOT_SUPPORTED` here; pool-backed sessions refuse what
    /// does not fit with `CUDA_ERROR_OUT_OF_MEMORY`.
    fn request_devices(&mut self, request: DeviceRequest) -> Result<DeviceGrant, CudaError> {
        let _ = request;
        Err(CudaError::NOT_SUPPORTED)
    }

    /// Page-locks the client's shared arena (host memory mapped in this
    /// process, see [`crate::session::HostSpan`]) so copies naming it reach
    /// those pages by DMA, with no staging. Called once per session, before
    /// the first copy that names the arena; undone by
    /// [`Backend::release_all`]. The default (the emulated device) has
    /// nothing to do: it copies.
    ///
    /// # Errors
    /// The driver's refusal; copies then still work, staged by the driver.
    fn register_host_arena(&mut self, span: crate::session::HostSpan) -> Result<(), CudaError> {
        let _ = span;
        Ok(())
    }

    /// Frees everything this context still holds (memory, streams, events,
    /// modules) when its session ends. The backend stays usable, empty.
    fn release_all(&mut self) -> Released;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmulatedBackend, EmulatedConfig};

    #[test]
    fn request_devices_defaults_to_not_supported() {
        let mut b = EmulatedBackend::new(EmulatedConfig::default());
        let req = DeviceRequest {
            count: 1,
            fraction_milli: 500,
            memory_bytes: 0,
        };
        assert_eq!(b.request_devices(req), Err(CudaError::NOT_SUPPORTED));
    }
}
