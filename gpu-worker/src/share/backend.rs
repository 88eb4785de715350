//! [`Shared`]: a [`Backend`] decorator that enforces the compute share.
//! Exists so the share applies to any backend without touching it: every
//! launch first passes the [`ShareGate`], then is charged its kernel time.
//!
//! Kernel time: [`Backend::take_kernel_ns`] when the inner backend measures
//! it (the `cuda` backend's hook: events around launches or completion
//! callbacks, reported as launches complete); otherwise the wall time of
//! `launch`, which is the kernel's time for a backend whose launches run
//! synchronously (the emulated one). Graph launches pass the gate and are
//! charged the same way (HAMi-core's limiter lets them escape; ours does not).
//!
//! It also keeps the device-utilization sample window
//! ([`super::utilization`]): sampled on launches (at most every 1/6 s) and
//! on each [`Backend::device_utilization`] query. Kernel time an
//! asynchronous backend measured after a launch returned is charged at the
//! next launch, synchronization (stream, event, context) or query.

use std::ops::Deref;
use std::time::Instant;

use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, LaunchAttr, MemsetWidth, ModuleHandle,
    StreamHandle,
};

use super::board::Board;
use super::clock::now_ns;
use super::gate::ShareGate;
use super::usage::{CallKind, Direction};
use super::utilization::{Tally, Utilization, Window};
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
    /// This session's kernel time in all, in ns (the utilization source
    /// when there is no board).
    kernel_ns: u64,
    /// Utilization samples of the device (or of this session, no board).
    window: Window,
}

impl<B: Backend, R: Deref<Target = Board>> Shared<B, R> {
    /// Wraps `inner`; `gate` `None` runs it unthrottled.
    pub fn new(inner: B, gate: Option<ShareGate<R>>) -> Self {
        let tally = tally_of(gate.as_ref(), 0);
        Self {
            inner,
            gate,
            waited_ns: 0,
            kernel_ns: 0,
            window: Window::new(now_ns(), tally),
        }
    }

    /// This session's kernel time so far, in ns (measured as the gate
    /// charges it, also without a gate).
    #[must_use]
    pub fn kernel_ns(&self) -> u64 {
        self.kernel_ns
    }

    /// Charges kernel time the inner backend measured since the last call
    /// (asynchronous kernels that completed meanwhile), so the board and
    /// the utilization window see it before the next launch does.
    fn charge_measured(&mut self) {
        if let Some(ns) = self.inner.take_kernel_ns().filter(|&ns| ns > 0) {
            if let Some(g) = self.gate.as_mut() {
                g.charge(ns);
            }
            self.kernel_ns = self.kernel_ns.saturating_add(ns);
        }
    }

    /// Records a utilization sample if one is due (cheap when not).
    fn sample(&mut self) {
        let now = now_ns();
        if self.window.due(now) {
            let tally = tally_of(self.gate.as_ref(), self.kernel_ns);
            self.window.observe(now, &tally);
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

    /// Counts one call of `kind` in the slot's usage (without a slot:
    /// nothing; the daemon then shows no live usage for this client).
    fn note(&self, kind: CallKind) {
        if let Some(g) = &self.gate {
            g.usage().call(kind);
        }
    }

    /// Adds `n` bytes moved in `dir`.
    fn moved(&self, dir: Direction, n: u64) {
        if let Some(g) = &self.gate {
            g.usage().moved(dir, n);
        }
    }

    /// Publishes the memory the inner backend holds now.
    fn note_memory(&self) {
        if let (Some(g), Some(bytes)) = (&self.gate, self.inner.mem_used_bytes()) {
            g.usage().set_memory(bytes);
        }
    }

    /// Runs one launch through the gate: kernel time measured since the
    /// last launch is charged first (asynchronous backends report it as
    /// kernels complete), then the launch waits for tokens, runs, and is
    /// charged what the backend measured, or its wall time when the
    /// backend does not measure (synchronous launches).
    fn gated(
        &mut self,
        run: impl FnOnce(&mut B) -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        let (result, kernel_ns) = match self.gate.as_mut() {
            Some(gate) => {
                let (result, waited_ns, kernel_ns) = gated_on(gate, &mut self.inner, run);
                self.waited_ns = self.waited_ns.saturating_add(waited_ns);
                (result, kernel_ns)
            }
            None => measured_on(&mut self.inner, run),
        };
        self.kernel_ns = self.kernel_ns.saturating_add(kernel_ns);
        self.sample();
        result
    }

    /// The wrapped backend, its gate dropped (its board slot freed).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// The utilization input: the whole device's board through `gate`'s slot,
/// else this session's own `kernel_ns`.
fn tally_of<R: Deref<Target = Board>>(gate: Option<&ShareGate<R>>, kernel_ns: u64) -> Tally {
    gate.map_or_else(|| Tally::single(kernel_ns), |g| Tally::of_board(g.board()))
}

/// What [`gated_on`] needs of a backend: its kernel-time measurements.
trait Measured {
    fn take_ns(&mut self) -> Option<u64>;
}

impl<B: Backend + ?Sized> Measured for B {
    fn take_ns(&mut self) -> Option<u64> {
        self.take_kernel_ns()
    }
}

/// One gated launch on `inner` (see [`Shared::gated`]); returns its
/// result, the time it waited for tokens and the kernel time charged
/// (earlier launches' measured before it, plus its own), in ns.
fn gated_on<T: Measured, R: Deref<Target = Board>>(
    gate: &mut ShareGate<R>,
    inner: &mut T,
    run: impl FnOnce(&mut T) -> Result<(), CudaError>,
) -> (Result<(), CudaError>, u64, u64) {
    let before_ns = inner.take_ns().filter(|&ns| ns > 0).unwrap_or(0);
    if before_ns > 0 {
        gate.charge(before_ns);
    }
    let waited_ns = gate.admit().waited_ns;
    let (result, kernel_ns) = timed(inner, run);
    gate.charge(kernel_ns);
    (result, waited_ns, before_ns.saturating_add(kernel_ns))
}

/// One ungated launch on `inner`; returns its result and the kernel time
/// measured (as [`gated_on`] charges it), in ns.
fn measured_on<T: Measured>(
    inner: &mut T,
    run: impl FnOnce(&mut T) -> Result<(), CudaError>,
) -> (Result<(), CudaError>, u64) {
    let before_ns = inner.take_ns().unwrap_or(0);
    let (result, kernel_ns) = timed(inner, run);
    (result, before_ns.saturating_add(kernel_ns))
}

/// Runs one launch; its kernel time is what the backend measured, else
/// its wall time (a synchronous launch).
fn timed<T: Measured>(
    inner: &mut T,
    run: impl FnOnce(&mut T) -> Result<(), CudaError>,
) -> (Result<(), CudaError>, u64) {
    let start = Instant::now();
    let result = run(inner);
    let wall_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    (result, inner.take_ns().unwrap_or(wall_ns))
}

impl<B: Backend, R: Deref<Target = Board> + Send> Backend for Shared<B, R> {
    fn device_count(&self) -> Result<u32, CudaError> {
        self.note(CallKind::Device);
        self.inner.device_count()
    }
    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError> {
        self.note(CallKind::Device);
        self.inner.device_attribute(device, attribute)
    }
    fn device_name(&self, device: u32) -> Result<&str, CudaError> {
        self.note(CallKind::Device);
        self.inner.device_name(device)
    }
    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError> {
        self.note(CallKind::Device);
        self.inner.device_uuid(device)
    }
    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError> {
        self.note(CallKind::Device);
        self.inner.device_total_mem(device)
    }
    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError> {
        self.note(CallKind::Device);
        self.inner.mem_get_info()
    }
    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        self.note(CallKind::Memory);
        let r = self.inner.mem_alloc(bytes);
        self.note_memory();
        r
    }
    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.note(CallKind::Memory);
        let r = self.inner.mem_free(ptr);
        self.note_memory();
        r
    }
    fn mem_alloc_pitch(
        &mut self,
        width_bytes: u64,
        height: u64,
        element_size: u32,
    ) -> Result<(DevicePtr, u64), CudaError> {
        self.note(CallKind::Memory);
        let r = self
            .inner
            .mem_alloc_pitch(width_bytes, height, element_size);
        self.note_memory();
        r
    }
    fn mem_alloc_async(
        &mut self,
        bytes: u64,
        pool: Option<u64>,
        stream: StreamHandle,
    ) -> Result<DevicePtr, CudaError> {
        self.note(CallKind::Memory);
        let r = self.inner.mem_alloc_async(bytes, pool, stream);
        self.note_memory();
        r
    }
    fn mem_free_async(&mut self, ptr: DevicePtr, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Memory);
        let r = self.inner.mem_free_async(ptr, stream);
        self.note_memory();
        r
    }
    fn default_mem_pool(&mut self, device: u32) -> Result<u64, CudaError> {
        self.note(CallKind::Memory);
        self.inner.default_mem_pool(device)
    }
    fn mem_used_bytes(&self) -> Option<u64> {
        self.inner.mem_used_bytes()
    }
    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError> {
        self.inner.check_range(ptr, len)
    }
    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError> {
        self.note(CallKind::Copy);
        self.inner
            .memcpy_htod(dst, src, exec)
            .inspect(|()| self.moved(Direction::HtoD, src.len() as u64))
    }
    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError> {
        self.note(CallKind::Copy);
        let n = dst.len() as u64;
        self.inner
            .memcpy_dtoh(dst, src, exec)
            .inspect(|()| self.moved(Direction::DtoH, n))
    }
    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.note(CallKind::Copy);
        self.inner
            .memcpy_dtod(dst, src, len, exec)
            .inspect(|()| self.moved(Direction::DtoD, len))
    }
    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.note(CallKind::Memset);
        self.inner.memset(dst, width, value, count, exec)
    }
    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError> {
        self.note(CallKind::Module);
        let r = self.inner.module_load(hash, image);
        self.note_memory();
        r
    }
    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        self.note(CallKind::Module);
        let r = self.inner.module_load_cached(hash);
        self.note_memory();
        r
    }
    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        self.note(CallKind::Module);
        let r = self.inner.module_unload(module);
        self.note_memory();
        r
    }
    fn module_global(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<(DevicePtr, u64), CudaError> {
        self.note(CallKind::Module);
        // A fatbin's global may be charged when first handed out.
        let r = self.inner.module_global(module, name);
        self.note_memory();
        r
    }
    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        self.note(CallKind::Module);
        self.inner.function_lookup(module, name)
    }
    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        self.note(CallKind::Launch);
        self.gated(|b| b.launch(function, dims, params, stream))
    }
    fn launch_ex(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[LaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        self.note(CallKind::Launch);
        self.gated(|b| b.launch_ex(function, dims, params, attrs, stream))
    }
    fn function_attribute(
        &mut self,
        function: FunctionHandle,
        attribute: i32,
    ) -> Result<i32, CudaError> {
        self.note(CallKind::Module);
        self.inner.function_attribute(function, attribute)
    }
    fn take_kernel_ns(&mut self) -> Option<u64> {
        // The gate has consumed the inner backend's measurements.
        None
    }
    fn device_utilization(&mut self, device: u32) -> Result<Utilization, CudaError> {
        self.note(CallKind::Device);
        if device >= self.inner.device_count()? {
            return Err(CudaError::INVALID_DEVICE);
        }
        self.charge_measured();
        let now = now_ns();
        let tally = tally_of(self.gate.as_ref(), self.kernel_ns);
        Ok(self.window.rate(now, &tally))
    }
    fn stream_create(&mut self, flags: u32, priority: i32) -> Result<StreamHandle, CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_create(flags, priority)
    }
    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_destroy(stream)
    }
    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_query(stream)
    }
    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        let r = self.inner.stream_synchronize(stream);
        self.charge_measured();
        r
    }
    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        flags: u32,
    ) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_wait_event(stream, event, flags)
    }
    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError> {
        self.note(CallKind::Event);
        self.inner.event_create(flags)
    }
    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Event);
        self.inner.event_record(event, stream)
    }
    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.note(CallKind::Event);
        self.inner.event_query(event)
    }
    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.note(CallKind::Event);
        let r = self.inner.event_synchronize(event);
        self.charge_measured();
        r
    }
    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError> {
        self.note(CallKind::Event);
        self.inner.event_elapsed_ns(start, end)
    }
    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.note(CallKind::Event);
        self.inner.event_destroy(event)
    }
    fn ctx_synchronize(&mut self) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        let r = self.inner.ctx_synchronize();
        self.charge_measured();
        r
    }
    fn stream_begin_capture(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_begin_capture(stream, mode)
    }
    fn stream_end_capture(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        self.note(CallKind::Stream);
        self.inner.stream_end_capture(stream)
    }
    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        self.note(CallKind::Launch);
        self.inner.graph_instantiate(graph, flags)
    }
    /// Charged like a launch: through the gate, then its measured kernel
    /// time (the `cuda` backend's event pair around `cuGraphLaunch`, or the
    /// wall time of the synchronous emulated replay).
    fn graph_launch(&mut self, exec: u64, stream: StreamHandle) -> Result<(), CudaError> {
        self.note(CallKind::Launch);
        self.gated(|b| b.graph_launch(exec, stream))
    }
    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), CudaError> {
        self.note(CallKind::Launch);
        self.inner.graph_exec_destroy(exec)
    }
    fn graph_destroy(&mut self, graph: u64) -> Result<(), CudaError> {
        self.note(CallKind::Launch);
        self.inner.graph_destroy(graph)
    }
    fn request_devices(&mut self, request: DeviceRequest) -> Result<DeviceGrant, CudaError> {
        self.inner.request_devices(request)
    }
    fn register_host_arena(&mut self, span: crate::session::HostSpan) -> Result<(), CudaError> {
        self.inner.register_host_arena(span)
    }
    fn release_all(&mut self) -> Released {
        let r = self.inner.release_all();
        self.note_memory();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::GateConfig;

    /// A backend whose kernels complete later: each take returns the next
    /// queued measurement.
    struct Async(std::collections::VecDeque<Option<u64>>);

    impl Measured for Async {
        fn take_ns(&mut self) -> Option<u64> {
            self.0.pop_front().flatten()
        }
    }

    #[test]
    fn asynchronous_kernel_time_is_charged_when_measured() {
        let board = Board::default();
        let mut gate = ShareGate::new(&board, 5, 500, GateConfig::default()).unwrap();
        // Launch 1: nothing completed before it; 7 ns measured after.
        // Launch 2: 100 ns completed meanwhile (charged before admission),
        // nothing yet after it.
        let mut b = Async([Some(0), Some(7), Some(100), Some(0)].into());
        for _ in 0..2 {
            let (r, _, _) = gated_on(&mut gate, &mut b, |_| Ok(()));
            assert_eq!(r, Ok(()));
        }
        let used = board.snapshot()[0].used_ns;
        assert_eq!(used, 107, "measured time only, never the enqueue time");
        // A backend that does not measure is charged the launch's wall time.
        let mut sync = Async([None, None].into());
        let (r, _, charged) = gated_on(&mut gate, &mut sync, |_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Err(CudaError::INVALID_VALUE)
        });
        assert_eq!(
            r,
            Err(CudaError::INVALID_VALUE),
            "the result passes through"
        );
        assert!(board.snapshot()[0].used_ns >= 107 + 2_000_000);
        assert!(charged >= 2_000_000, "the wall time is reported as charged");
    }
}
