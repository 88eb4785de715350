//! A backend created on first use. Exists to make "auth first" structural:
//! the protocol server answers the handshake (token check) itself and only
//! hands calls to the executor once the client is authenticated, so the
//! first backend method runs after auth; an unauthenticated connection
//! never creates a backend (no context, no device memory). The factory may
//! also refuse (admission): every call then answers the refusal's code.
//! `RequestDevices` ([`Backend::request_devices`]) creates it with the
//! client's own request; a refused request leaves it uncreated, so the
//! client may retry smaller. Any other first call uses the default request.

use std::cell::OnceCell;

use rgpu_gpu_worker::{
    Backend, DeviceGrant, DeviceRequest, Exec, FunctionInfo, LaunchDims, MemoryInfo, Released,
};
use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, MemsetWidth, ModuleHandle, StreamHandle,
};

/// Creates the real backend for a request, or refuses with a CUDA code.
pub type Factory<B> = Box<dyn Fn(DeviceRequest) -> Result<(B, DeviceGrant), CudaError> + Send>;

/// The request a first call other than `RequestDevices` makes: one device,
/// the server's default share.
pub const DEFAULT_REQUEST: DeviceRequest = DeviceRequest {
    count: 1,
    fraction_milli: 0,
    memory_bytes: 0,
};

/// A [`Backend`] that builds its inner backend on the first call.
pub struct LazyBackend<B: Backend> {
    make: Factory<B>,
    cell: OnceCell<Result<B, CudaError>>,
}

impl<B: Backend> LazyBackend<B> {
    /// A backend that calls `make` on first use (with [`DEFAULT_REQUEST`]
    /// unless the first call is `RequestDevices`).
    pub fn new(make: Factory<B>) -> Self {
        Self {
            make,
            cell: OnceCell::new(),
        }
    }

    /// Whether the inner backend was created (first use happened and the
    /// factory did not refuse).
    pub fn created(&self) -> bool {
        matches!(self.cell.get(), Some(Ok(_)))
    }

    /// Whether any call reached the backend (created or refused).
    pub fn touched(&self) -> bool {
        self.cell.get().is_some()
    }

    fn get(&self) -> Result<&B, CudaError> {
        self.cell
            .get_or_init(|| (self.make)(DEFAULT_REQUEST).map(|(b, _)| b))
            .as_ref()
            .map_err(|e| *e)
    }

    fn get_mut(&mut self) -> Result<&mut B, CudaError> {
        if self.cell.get().is_none() {
            let made = (self.make)(DEFAULT_REQUEST).map(|(b, _)| b);
            // Cannot be set already: checked just above, and `&mut self`
            // excludes any other access.
            let _ = self.cell.set(made);
        }
        match self.cell.get_mut() {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(*e),
            None => Err(CudaError::NOT_INITIALIZED),
        }
    }
}

impl<B: Backend> Backend for LazyBackend<B> {
    fn device_count(&self) -> Result<u32, CudaError> {
        self.get()?.device_count()
    }
    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError> {
        self.get()?.device_attribute(device, attribute)
    }
    fn device_name(&self, device: u32) -> Result<&str, CudaError> {
        self.get()?.device_name(device)
    }
    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError> {
        self.get()?.device_uuid(device)
    }
    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError> {
        self.get()?.device_total_mem(device)
    }
    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError> {
        self.get()?.mem_get_info()
    }
    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        self.get_mut()?.mem_alloc(bytes)
    }
    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.get_mut()?.mem_free(ptr)
    }
    fn mem_alloc_pitch(
        &mut self,
        width_bytes: u64,
        height: u64,
        element_size: u32,
    ) -> Result<(DevicePtr, u64), CudaError> {
        self.get_mut()?
            .mem_alloc_pitch(width_bytes, height, element_size)
    }
    fn mem_alloc_async(
        &mut self,
        bytes: u64,
        pool: Option<u64>,
        stream: StreamHandle,
    ) -> Result<DevicePtr, CudaError> {
        self.get_mut()?.mem_alloc_async(bytes, pool, stream)
    }
    fn mem_free_async(&mut self, ptr: DevicePtr, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.mem_free_async(ptr, stream)
    }
    fn default_mem_pool(&mut self, device: u32) -> Result<u64, CudaError> {
        self.get_mut()?.default_mem_pool(device)
    }
    fn module_global(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<(DevicePtr, u64), CudaError> {
        self.get_mut()?.module_global(module, name)
    }
    fn mem_used_bytes(&self) -> Option<u64> {
        self.get().ok()?.mem_used_bytes()
    }
    fn device_utilization(
        &mut self,
        device: u32,
    ) -> Result<rgpu_gpu_worker::share::Utilization, CudaError> {
        self.get_mut()?.device_utilization(device)
    }
    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError> {
        self.get()?.check_range(ptr, len)
    }
    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError> {
        self.get_mut()?.memcpy_htod(dst, src, exec)
    }
    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError> {
        self.get_mut()?.memcpy_dtoh(dst, src, exec)
    }
    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.get_mut()?.memcpy_dtod(dst, src, len, exec)
    }
    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.get_mut()?.memset(dst, width, value, count, exec)
    }
    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError> {
        self.get_mut()?.module_load(hash, image)
    }
    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        self.get_mut()?.module_load_cached(hash)
    }
    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        self.get_mut()?.module_unload(module)
    }
    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        self.get_mut()?.function_lookup(module, name)
    }
    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        self.get_mut()?.launch(function, dims, params, stream)
    }
    fn launch_ex(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[rgpu_proto::LaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        self.get_mut()?
            .launch_ex(function, dims, params, attrs, stream)
    }
    fn function_attribute(
        &mut self,
        function: FunctionHandle,
        attribute: i32,
    ) -> Result<i32, CudaError> {
        self.get_mut()?.function_attribute(function, attribute)
    }
    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<StreamHandle, CudaError> {
        self.get_mut()?.stream_create(flags, priority)
    }
    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.stream_destroy(stream)
    }
    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.stream_query(stream)
    }
    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.stream_synchronize(stream)
    }
    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        flags: u32,
    ) -> Result<(), CudaError> {
        self.get_mut()?.stream_wait_event(stream, event, flags)
    }
    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError> {
        self.get_mut()?.event_create(flags)
    }
    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.event_record(event, stream)
    }
    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.get_mut()?.event_query(event)
    }
    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.get_mut()?.event_synchronize(event)
    }
    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError> {
        self.get_mut()?.event_elapsed_ns(start, end)
    }
    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.get_mut()?.event_destroy(event)
    }
    fn ctx_synchronize(&mut self) -> Result<(), CudaError> {
        self.get_mut()?.ctx_synchronize()
    }
    fn stream_begin_capture(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        self.get_mut()?.stream_begin_capture(stream, mode)
    }
    fn stream_end_capture(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        self.get_mut()?.stream_end_capture(stream)
    }
    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        self.get_mut()?.graph_instantiate(graph, flags)
    }
    fn graph_launch(&mut self, exec: u64, stream: StreamHandle) -> Result<(), CudaError> {
        self.get_mut()?.graph_launch(exec, stream)
    }
    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), CudaError> {
        self.get_mut()?.graph_exec_destroy(exec)
    }
    fn graph_destroy(&mut self, graph: u64) -> Result<(), CudaError> {
        self.get_mut()?.graph_destroy(graph)
    }
    /// Creates the backend for the client's own request; once it exists
    /// (any earlier call) this is `CUDA_ERROR_INVALID_VALUE`.
    fn request_devices(&mut self, request: DeviceRequest) -> Result<DeviceGrant, CudaError> {
        if self.cell.get().is_some() {
            return Err(CudaError::INVALID_VALUE);
        }
        let (b, grant) = (self.make)(request)?;
        // Cannot be set: checked above, and `&mut self` excludes others.
        let _ = self.cell.set(Ok(b));
        Ok(grant)
    }
    fn register_host_arena(&mut self, span: rgpu_gpu_worker::HostSpan) -> Result<(), CudaError> {
        self.get_mut()?.register_host_arena(span)
    }
    /// Frees what the inner backend holds; nothing if it was never created
    /// (does not create it).
    fn release_all(&mut self) -> Released {
        match self.cell.get_mut() {
            Some(Ok(b)) => b.release_all(),
            _ => Released::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgpu_gpu_worker::{EmulatedBackend, EmulatedConfig};

    const GRANT: DeviceGrant = DeviceGrant {
        count: 1,
        memory_bytes: 1 << 20,
    };

    #[test]
    fn request_devices_creates_retries_and_then_refuses() {
        let mut b: LazyBackend<EmulatedBackend> = LazyBackend::new(Box::new(|r| {
            if r.memory_bytes > 1000 {
                return Err(CudaError::OUT_OF_MEMORY);
            }
            let cfg = EmulatedConfig {
                memory_quota_bytes: r.memory_bytes,
                ..EmulatedConfig::default()
            };
            Ok((
                EmulatedBackend::new(cfg),
                DeviceGrant {
                    count: 1,
                    memory_bytes: r.memory_bytes,
                },
            ))
        }));
        let ask = |memory_bytes| DeviceRequest {
            count: 1,
            fraction_milli: 0,
            memory_bytes,
        };
        assert_eq!(b.request_devices(ask(5000)), Err(CudaError::OUT_OF_MEMORY));
        assert!(!b.touched(), "a refused request can be retried");
        assert_eq!(b.request_devices(ask(512)).unwrap().memory_bytes, 512);
        assert_eq!(b.mem_get_info().unwrap().total, 512);
        assert_eq!(
            b.request_devices(ask(256)),
            Err(CudaError::INVALID_VALUE),
            "context exists"
        );
    }

    #[test]
    fn created_on_first_call_only() {
        let mut b: LazyBackend<EmulatedBackend> = LazyBackend::new(Box::new(|r| {
            assert_eq!(r, DEFAULT_REQUEST);
            Ok((EmulatedBackend::new(EmulatedConfig::default()), GRANT))
        }));
        assert!(!b.created());
        assert_eq!(b.release_all(), Released::default());
        assert!(!b.touched(), "release_all does not create");
        let p = b.mem_alloc(1000).unwrap();
        assert!(b.created());
        assert_eq!(b.release_all().allocations, 1);
        assert_eq!(b.mem_free(p), Err(CudaError::INVALID_VALUE));
    }

    #[test]
    fn refusal_answers_every_call() {
        let mut b: LazyBackend<EmulatedBackend> =
            LazyBackend::new(Box::new(|_| Err(CudaError::OUT_OF_MEMORY)));
        assert_eq!(b.device_count(), Err(CudaError::OUT_OF_MEMORY));
        assert_eq!(b.mem_alloc(1).err(), Some(CudaError::OUT_OF_MEMORY));
        assert!(b.touched() && !b.created());
    }
}
