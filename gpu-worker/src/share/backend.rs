//! [`Shared`]: a [`Backend`] decorator that enforces the compute share.
//! Exists so the share applies to any backend without touching it: every
//! launch first passes the [`ShareGate`], then is charged its kernel time.
//!
//! Kernel time: [`Backend::take_kernel_ns`] when the inner backend measures
//! it (the `cuda` backend's hook: events around launches or completion
//! callbacks, reported as launches complete); otherwise the wall time of
//! `launch`, which is the kernel's time for a backend whose launches run
//! synchronously (the emulated one). Graph launches are not forwarded by
//! the protocol yet; when they are, they must pass the gate too.

use std::ops::Deref;
use std::time::Instant;

use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, MemsetWidth, ModuleHandle, StreamHandle,
};

use super::board::Board;
use super::gate::ShareGate;
use crate::backend::{
    Backend, DeviceGrant, DeviceRequest, Exec, FunctionInfo, LaunchDims, MemoryInfo, Released,
};

/// `inner` with its launches under a compute share. Without a gate (no
/// board slot) it is `inner` unchanged.
#[derive(Debug)]
pub struct Shared<B, R: Deref<Target = Board>> {
    inner: B,
    gate: Option<ShareGate<R>>,
    waited_ns: u64,
}

impl<B: Backend, R: Deref<Target = Board>> Shared<B, R> {
    /// Wraps `inner`; `gate` `None` runs it unthrottled.
    pub fn new(inner: B, gate: Option<ShareGate<R>>) -> Self {
        Self {
            inner,
            gate,
            waited_ns: 0,
        }
    }

    /// Total time launches waited for tokens, in ns.
    #[must_use]
    pub fn waited_ns(&self) -> u64 {
        self.waited_ns
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, its gate dropped (its board slot freed).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Backend, R: Deref<Target = Board> + Send> Backend for Shared<B, R> {
    fn device_count(&self) -> Result<u32, CudaError> {
        self.inner.device_count()
    }
    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError> {
        self.inner.device_attribute(device, attribute)
    }
    fn device_name(&self, device: u32) -> Result<&str, CudaError> {
        self.inner.device_name(device)
    }
    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError> {
        self.inner.device_uuid(device)
    }
    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError> {
        self.inner.device_total_mem(device)
    }
    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError> {
        self.inner.mem_get_info()
    }
    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        self.inner.mem_alloc(bytes)
    }
    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.inner.mem_free(ptr)
    }
    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError> {
        self.inner.check_range(ptr, len)
    }
    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError> {
        self.inner.memcpy_htod(dst, src, exec)
    }
    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError> {
        self.inner.memcpy_dtoh(dst, src, exec)
    }
    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.inner.memcpy_dtod(dst, src, len, exec)
    }
    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.inner.memset(dst, width, value, count, exec)
    }
    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError> {
        self.inner.module_load(hash, image)
    }
    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        self.inner.module_load_cached(hash)
    }
    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        self.inner.module_unload(module)
    }
    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        self.inner.function_lookup(module, name)
    }
    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        let Some(gate) = self.gate.as_mut() else {
            return self.inner.launch(function, dims, params, stream);
        };
        self.waited_ns = self.waited_ns.saturating_add(gate.admit().waited_ns);
        let start = Instant::now();
        let result = self.inner.launch(function, dims, params, stream);
        let wall_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let kernel_ns = self.inner.take_kernel_ns().unwrap_or(wall_ns);
        gate.charge(kernel_ns);
        result
    }
    fn take_kernel_ns(&mut self) -> Option<u64> {
        // The gate has consumed the inner backend's measurements.
        None
    }
    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<StreamHandle, CudaError> {
        self.inner.stream_create(flags, priority)
    }
    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.inner.stream_destroy(stream)
    }
    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.inner.stream_query(stream)
    }
    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.inner.stream_synchronize(stream)
    }
    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        flags: u32,
    ) -> Result<(), CudaError> {
        self.inner.stream_wait_event(stream, event, flags)
    }
    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError> {
        self.inner.event_create(flags)
    }
    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError> {
        self.inner.event_record(event, stream)
    }
    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.inner.event_query(event)
    }
    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.inner.event_synchronize(event)
    }
    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError> {
        self.inner.event_elapsed_ns(start, end)
    }
    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.inner.event_destroy(event)
    }
    fn ctx_synchronize(&mut self) -> Result<(), CudaError> {
        self.inner.ctx_synchronize()
    }
    fn request_devices(&mut self, request: DeviceRequest) -> Result<DeviceGrant, CudaError> {
        self.inner.request_devices(request)
    }
    fn release_all(&mut self) -> Released {
        self.inner.release_all()
    }
}
