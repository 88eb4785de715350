//! The emulated backend: a plausible CUDA device in host RAM, for CI.
//!
//! Exists so the whole worker (protocol mapping, memory, streams, events,
//! modules, launches, quotas, session teardown) is testable on machines
//! without a GPU, while being honest about what it cannot do.
//!
//! # Model
//! - **Memory** ([`memory`]): host buffers behind device pointers checked on
//!   every use; a quota caps allocations and is what total/free memory report.
//! - **Ordering**: every stream-ordered operation executes eagerly, in
//!   submission order, when its call arrives. That is a *stronger* order
//!   than CUDA guarantees (work on different streams never overlaps), so
//!   any program correct on CUDA is correct here, but a program with a
//!   missing cross-stream dependency will not be caught. Consequences:
//!   stream and event queries always report complete; `cuStreamWaitEvent`
//!   only validates its handles; an event record completes at once and
//!   stamps a real monotonic clock, so elapsed time between two records is
//!   the host time spent executing the work between them.
//! - **Kernels** ([`kernels`]): only the built-ins listed in a test module
//!   ([`module`]) run. Real cubin/fatbin/PTX images load as registrations
//!   (their kernel names are listed for lookups) but launching one of their
//!   kernels is `CUDA_ERROR_NOT_SUPPORTED` (logged); anything else is
//!   `CUDA_ERROR_INVALID_IMAGE`. Launch attributes: see
//!   [`EmulatedBackend::launch_ex`](crate::Backend::launch_ex) (cooperative
//!   launches run, clusters are refused).
//! - **Handles** ([`handles`]): per-backend (per-session) tables with
//!   process-wide unique values.
//! - **Graphs** ([`graph`]): stream capture records stream-ordered work as
//!   nodes; a graph launch replays them in order on the launch stream.
//! - Not modeled: module globals, texture/surface objects, peer
//!   access, multiple devices (the device count is 1).

pub mod attributes;
pub mod config;
pub mod graph;
pub mod handles;
pub mod kernels;
pub mod memory;
pub mod module;
mod zeroed;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rgpu_proto::{
    CudaError, DevicePtr, EventHandle, FunctionHandle, MemsetWidth, ModuleHandle, ParamSlot,
    StreamHandle,
};

use crate::backend::{Backend, Exec, FunctionInfo, LaunchDims, MemoryInfo, Released};
pub use config::EmulatedConfig;
use handles::HandleTable;
use kernels::Kernel;
use memory::DeviceMemory;

/// Stream handles valid in every context: the legacy default stream (0),
/// `CU_STREAM_LEGACY` (1) and `CU_STREAM_PER_THREAD` (2).
pub const BUILTIN_STREAMS: [u64; 3] = [0, 1, 2];
/// `cuStreamCreate` flags the emulator accepts (`CU_STREAM_NON_BLOCKING`).
const STREAM_FLAGS_KNOWN: u32 = 0x1;
/// `cuEventCreate` flags the emulator accepts (blocking sync, disable
/// timing, interprocess).
const EVENT_FLAGS_KNOWN: u32 = 0x7;
/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 0x2;

#[derive(Debug)]
struct Event {
    flags: u32,
    /// When the last record executed (eagerly: completed at once).
    recorded: Option<Instant>,
}

#[derive(Debug)]
struct Module {
    image: Arc<module::Image>,
}

#[derive(Debug)]
struct Function {
    module: u64,
    /// `None`: a kernel of a real image, which cannot run here.
    kernel: Option<Kernel>,
    name: Box<str>,
    layout: Vec<ParamSlot>,
}

/// One emulated CUDA context on one emulated device; see the module docs.
#[derive(Debug)]
pub struct EmulatedBackend {
    cfg: EmulatedConfig,
    mem: DeviceMemory,
    streams: HandleTable<()>,
    events: HandleTable<Event>,
    modules: HandleTable<Module>,
    functions: HandleTable<Function>,
    /// Parsed images by content hash, for load-by-hash; FIFO-evicted.
    cache: HashMap<[u8; 32], Arc<module::Image>>,
    cache_order: VecDeque<[u8; 32]>,
    /// Stream captures, graphs and executable graphs.
    graphs: graph::Graphs,
}

impl EmulatedBackend {
    /// A fresh context. The config should be validated
    /// ([`EmulatedConfig::validate`]); bounds are applied as given.
    #[must_use]
    pub fn new(cfg: EmulatedConfig) -> Self {
        let n = |v: u32| v as usize;
        Self {
            mem: DeviceMemory::new(cfg.memory_quota_bytes, n(cfg.allocations_max)),
            streams: HandleTable::new(n(cfg.streams_max)),
            events: HandleTable::new(n(cfg.events_max)),
            modules: HandleTable::new(n(cfg.modules_max)),
            // A module lists at most MODULE_KERNELS_MAX kernels.
            functions: HandleTable::new(n(cfg.modules_max) * module::MODULE_KERNELS_MAX),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            graphs: graph::Graphs::default(),
            cfg,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EmulatedConfig {
        &self.cfg
    }

    /// Device bytes currently allocated (charged against the quota).
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.mem.used_bytes()
    }

    fn check_device(&self, device: u32) -> Result<(), CudaError> {
        if device == 0 {
            Ok(())
        } else {
            Err(CudaError::INVALID_DEVICE)
        }
    }

    fn check_stream(&self, stream: StreamHandle) -> Result<(), CudaError> {
        if BUILTIN_STREAMS.contains(&stream.0) {
            return Ok(());
        }
        self.streams.get(stream.0).map(|_| ())
    }

    fn check_exec(&self, exec: Exec) -> Result<(), CudaError> {
        match exec {
            Exec::Sync => Ok(()),
            Exec::Stream(s) => self.check_stream(s),
        }
    }

    fn check_dims(&self, d: &LaunchDims) -> Result<(), CudaError> {
        use attributes::{MAX_BLOCK_DIM_Z, MAX_GRID_DIM_X, MAX_GRID_DIM_YZ, MAX_THREADS_PER_BLOCK};
        let [gx, gy, gz] = d.grid;
        let [bx, by, bz] = d.block;
        let positive = d.grid.iter().chain(d.block.iter()).all(|&v| v > 0);
        let per_block = u64::from(bx) * u64::from(by) * u64::from(bz);
        let ok = positive
            && gx <= MAX_GRID_DIM_X
            && gy <= MAX_GRID_DIM_YZ
            && gz <= MAX_GRID_DIM_YZ
            && bx <= MAX_THREADS_PER_BLOCK
            && by <= MAX_THREADS_PER_BLOCK
            && bz <= MAX_BLOCK_DIM_Z
            && per_block <= u64::from(MAX_THREADS_PER_BLOCK)
            && d.shared_mem_bytes <= self.cfg.shared_mem_per_block_bytes;
        if ok {
            Ok(())
        } else {
            Err(CudaError::INVALID_VALUE)
        }
    }

    /// Stream capture ([`graph`]): a synchronous call is checked against
    /// the captures under way; a call on a capturing stream is recorded
    /// (`Some`), else executed by the caller (`None`).
    fn captured(
        &mut self,
        exec: Exec,
        node: impl FnOnce() -> graph::Node,
    ) -> Option<Result<(), CudaError>> {
        match exec {
            Exec::Sync => self.graphs.check_sync().err().map(Err),
            Exec::Stream(s) => self.graphs.record(s, node),
        }
    }

    /// Replays a graph's nodes in order on `stream` (recorded instead when
    /// `stream` itself captures: a graph launched into a capture).
    fn replay(&mut self, nodes: &[graph::Node], stream: StreamHandle) -> Result<(), CudaError> {
        use graph::Node;
        let on = Exec::Stream(stream);
        for n in nodes {
            match n {
                Node::Memset {
                    dst,
                    width,
                    value,
                    count,
                } => self.memset(*dst, *width, *value, *count, on)?,
                Node::Htod { dst, bytes } => self.memcpy_htod(*dst, bytes, on)?,
                Node::Dtod { dst, src, len } => self.memcpy_dtod(*dst, *src, *len, on)?,
                Node::Launch {
                    function,
                    dims,
                    params,
                } => self.launch(*function, *dims, params, stream)?,
            }
        }
        Ok(())
    }

    fn remember_image(&mut self, hash: [u8; 32], image: &Arc<module::Image>) {
        let max = self.cfg.module_cache_max as usize;
        if max == 0 || self.cache.contains_key(&hash) {
            return;
        }
        while self.cache_order.len() >= max {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache.insert(hash, Arc::clone(image));
        self.cache_order.push_back(hash);
    }

    fn new_module(&mut self, image: Arc<module::Image>) -> Result<ModuleHandle, CudaError> {
        self.modules.insert(Module { image }).map(ModuleHandle)
    }
}

/// Bytes per element of a memset.
const fn width_bytes(width: MemsetWidth) -> u64 {
    match width {
        MemsetWidth::D8 => 1,
        MemsetWidth::D16 => 2,
        MemsetWidth::D32 => 4,
    }
}

impl Backend for EmulatedBackend {
    fn device_count(&self) -> Result<u32, CudaError> {
        Ok(1)
    }

    fn device_attribute(&self, device: u32, attribute: u32) -> Result<i32, CudaError> {
        self.check_device(device)?;
        attributes::attribute(&self.cfg, attribute).ok_or(CudaError::INVALID_VALUE)
    }

    fn device_name(&self, device: u32) -> Result<&str, CudaError> {
        self.check_device(device)?;
        Ok(&self.cfg.name)
    }

    fn device_uuid(&self, device: u32) -> Result<[u8; 16], CudaError> {
        self.check_device(device)?;
        Ok(self.cfg.uuid)
    }

    fn device_total_mem(&self, device: u32) -> Result<u64, CudaError> {
        self.check_device(device)?;
        Ok(self.mem.quota_bytes())
    }

    fn mem_get_info(&self) -> Result<MemoryInfo, CudaError> {
        let total = self.mem.quota_bytes();
        Ok(MemoryInfo {
            free: total.saturating_sub(self.mem.used_bytes()),
            total,
        })
    }

    fn mem_alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        self.graphs.check_sync()?;
        self.mem.alloc(bytes)
    }

    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.graphs.check_sync()?;
        self.mem.free(ptr)
    }

    fn mem_alloc_pitch(
        &mut self,
        width_bytes: u64,
        height: u64,
        element_size: u32,
    ) -> Result<(DevicePtr, u64), CudaError> {
        let (pitch, bytes) = crate::pitch::pitched(
            width_bytes,
            height,
            element_size,
            crate::pitch::PITCH_ALIGN_BYTES,
        )?;
        Ok((self.mem.alloc(bytes)?, pitch))
    }

    fn mem_alloc_async(
        &mut self,
        bytes: u64,
        pool: Option<u64>,
        stream: StreamHandle,
    ) -> Result<DevicePtr, CudaError> {
        // Stream-ordered work runs eagerly here, so the memory exists at once.
        self.check_stream(stream)?;
        crate::pitch::check_pool(pool)?;
        // Allocation nodes are not modelled (see `graph`).
        self.graphs.refuse_on(stream)?;
        self.mem.alloc(bytes)
    }

    fn mem_free_async(&mut self, ptr: DevicePtr, stream: StreamHandle) -> Result<(), CudaError> {
        self.check_stream(stream)?;
        self.graphs.refuse_on(stream)?;
        self.mem.free(ptr)
    }

    fn default_mem_pool(&mut self, device: u32) -> Result<u64, CudaError> {
        self.check_device(device)?;
        Ok(crate::pitch::DEFAULT_POOL_HANDLE)
    }

    fn mem_used_bytes(&self) -> Option<u64> {
        Some(self.mem.used_bytes())
    }

    fn check_range(&self, ptr: DevicePtr, len: u64) -> Result<(), CudaError> {
        if len == 0 {
            return Ok(());
        }
        self.mem
            .slice(ptr, len)
            .map(|_| ())
            .ok_or(CudaError::INVALID_VALUE)
    }

    fn memcpy_htod(&mut self, dst: DevicePtr, src: &[u8], exec: Exec) -> Result<(), CudaError> {
        self.check_exec(exec)?;
        self.check_range(dst, src.len() as u64)?;
        if let Some(r) = self.captured(exec, || graph::Node::Htod {
            dst,
            bytes: src.into(),
        }) {
            return r;
        }
        if src.is_empty() {
            return Ok(());
        }
        let to = self
            .mem
            .slice_mut(dst, src.len() as u64)
            .ok_or(CudaError::INVALID_VALUE)?;
        to.copy_from_slice(src);
        Ok(())
    }

    fn memcpy_dtoh(&mut self, dst: &mut [u8], src: DevicePtr, exec: Exec) -> Result<(), CudaError> {
        self.check_exec(exec)?;
        // The destination is the shared arena, staged by the shim: not
        // capturable here (see `graph`).
        match exec {
            Exec::Sync => self.graphs.check_sync()?,
            Exec::Stream(s) => self.graphs.refuse_on(s)?,
        }
        if dst.is_empty() {
            return Ok(());
        }
        let from = self
            .mem
            .slice(src, dst.len() as u64)
            .ok_or(CudaError::INVALID_VALUE)?;
        dst.copy_from_slice(from);
        Ok(())
    }

    fn memcpy_dtod(
        &mut self,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.check_exec(exec)?;
        self.check_range(dst, len)?;
        self.check_range(src, len)?;
        if let Some(r) = self.captured(exec, || graph::Node::Dtod { dst, src, len }) {
            return r;
        }
        if len == 0 {
            return Ok(());
        }
        self.mem.copy(dst, src, len)
    }

    fn memset(
        &mut self,
        dst: DevicePtr,
        width: MemsetWidth,
        value: u32,
        count: u64,
        exec: Exec,
    ) -> Result<(), CudaError> {
        self.check_exec(exec)?;
        let w = width_bytes(width);
        let len = count.checked_mul(w).ok_or(CudaError::INVALID_VALUE)?;
        if !dst.0.is_multiple_of(w) {
            return Err(CudaError::INVALID_VALUE);
        }
        self.check_range(dst, len)?;
        if let Some(r) = self.captured(exec, || graph::Node::Memset {
            dst,
            width,
            value,
            count,
        }) {
            return r;
        }
        if count == 0 {
            return Ok(());
        }
        let to = self
            .mem
            .slice_mut(dst, len)
            .ok_or(CudaError::INVALID_VALUE)?;
        match width {
            // Truncation to the element width is cuMemsetD8/D16's contract.
            MemsetWidth::D8 => to.fill(value as u8),
            MemsetWidth::D16 => {
                let v = (value as u16).to_le_bytes();
                to.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&v));
            }
            MemsetWidth::D32 => {
                let v = value.to_le_bytes();
                to.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&v));
            }
        }
        Ok(())
    }

    fn module_load(&mut self, hash: [u8; 32], image: &[u8]) -> Result<ModuleHandle, CudaError> {
        let image = Arc::new(module::load(image)?);
        self.remember_image(hash, &image);
        self.new_module(image)
    }

    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        let image = Arc::clone(self.cache.get(&hash).ok_or(CudaError::NOT_FOUND)?);
        self.new_module(image)
    }

    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        self.modules.remove(module.0)?;
        self.functions.remove_where(|f| f.module == module.0);
        Ok(())
    }

    fn module_global(
        &mut self,
        module: ModuleHandle,
        _name: &[u8],
    ) -> Result<(DevicePtr, u64), CudaError> {
        // Test modules declare no globals (see "Test module format").
        self.modules.get(module.0)?;
        Err(CudaError::NOT_FOUND)
    }

    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        let m = self.modules.get(module.0)?;
        let kernel = m.image.builtin(name);
        if kernel.is_none() && !m.image.has_real(name) {
            return Err(CudaError::NOT_FOUND);
        }
        // A real kernel's layout is unknown here (its launch is refused
        // anyway): an empty layout.
        let layout = kernel.map_or_else(Vec::new, |k| {
            k.layout()
                .iter()
                .map(|&(o, s)| ParamSlot::new(o, s))
                .collect()
        });
        let h = self.functions.insert(Function {
            module: module.0,
            kernel,
            name: String::from_utf8_lossy(name).into(),
            layout,
        })?;
        let f = self.functions.get(h)?;
        Ok(FunctionInfo {
            function: FunctionHandle(h),
            params: &f.layout,
        })
    }

    fn launch(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        let f = self.functions.get(function.0)?;
        let Some(kernel) = f.kernel else {
            tracing::warn!(
                kernel = %f.name,
                "kernel {} cannot run on the emulated device (real GPU code); launch refused with CUDA_ERROR_NOT_SUPPORTED",
                f.name
            );
            return Err(CudaError::NOT_SUPPORTED);
        };
        self.check_stream(stream)?;
        self.check_dims(&dims)?;
        if let Some(r) = self.captured(Exec::Stream(stream), || graph::Node::Launch {
            function,
            dims,
            params: params.into(),
        }) {
            return r;
        }
        kernel.run(&mut self.mem, params, dims.threads())
    }

    /// Honours what the emulator can: `IGNORE` (0); `COOPERATIVE` (2, the
    /// built-ins never synchronise across the grid, and the grid runs as one
    /// host loop, so it is trivially co-resident); `SYNCHRONIZATION_POLICY`
    /// (3), `PROGRAMMATIC_STREAM_SERIALIZATION` (6), `PRIORITY` (8), the
    /// memory-sync domain attributes (9, 10) and the shared-memory carveout
    /// preference (14), which only relax or order work that already runs
    /// serialised here. Cluster attributes (4, 5, 11) are
    /// `CUDA_ERROR_NOT_SUPPORTED` (the device reports no clusters);
    /// event and access-policy attributes never reach the wire (the shim
    /// refuses them); any other id is `CUDA_ERROR_INVALID_VALUE`.
    fn launch_ex(
        &mut self,
        function: FunctionHandle,
        dims: LaunchDims,
        params: &[u8],
        attrs: &[rgpu_proto::LaunchAttr],
        stream: StreamHandle,
    ) -> Result<(), CudaError> {
        for a in attrs {
            match a.id {
                0 | 2 | 3 | 6 | 8 | 9 | 10 | 14 => {}
                4 | 5 | 11 => {
                    tracing::info!(
                        attribute = a.id,
                        "launch attribute needs thread-block clusters, which the emulated device lacks"
                    );
                    return Err(CudaError::NOT_SUPPORTED);
                }
                1 | 7 | 12 | 13 => return Err(CudaError::NOT_SUPPORTED),
                _ => return Err(CudaError::INVALID_VALUE),
            }
        }
        self.launch(function, dims, params, stream)
    }

    /// Built-ins: [`kernels::function_attribute`]. A real kernel's
    /// attributes are unknown here: `CUDA_ERROR_NOT_SUPPORTED`.
    fn function_attribute(
        &mut self,
        function: FunctionHandle,
        attribute: i32,
    ) -> Result<i32, CudaError> {
        if self.functions.get(function.0)?.kernel.is_none() {
            return Err(CudaError::NOT_SUPPORTED);
        }
        let clamp = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
        kernels::function_attribute(
            attribute,
            clamp(attributes::MAX_THREADS_PER_BLOCK.into()),
            clamp(self.cfg.shared_mem_per_block_bytes.into()),
            clamp(u64::from(self.cfg.cc_major) * 10 + u64::from(self.cfg.cc_minor)),
        )
    }

    fn stream_create(&mut self, flags: u32, _priority: i32) -> Result<StreamHandle, CudaError> {
        if flags & !STREAM_FLAGS_KNOWN != 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        self.streams.insert(()).map(StreamHandle)
    }

    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.streams.remove(stream.0)?;
        self.graphs.stream_gone(stream);
        Ok(())
    }

    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        // Eager execution: everything submitted has completed.
        self.check_stream(stream)?;
        self.graphs.refuse_on(stream)
    }

    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.check_stream(stream)?;
        self.graphs.refuse_on(stream)
    }

    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        _flags: u32,
    ) -> Result<(), CudaError> {
        // Eager execution: the recorded work already completed.
        self.check_stream(stream)?;
        self.events.get(event.0)?;
        self.graphs.wait_event(stream, event.0).map(|_| ())
    }

    fn event_create(&mut self, flags: u32) -> Result<EventHandle, CudaError> {
        if flags & !EVENT_FLAGS_KNOWN != 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        self.events
            .insert(Event {
                flags,
                recorded: None,
            })
            .map(EventHandle)
    }

    fn event_record(&mut self, event: EventHandle, stream: StreamHandle) -> Result<(), CudaError> {
        self.check_stream(stream)?;
        self.events.get(event.0)?;
        if self.graphs.record_event(event.0, stream) {
            // A point inside the graph: no event is recorded.
            return Ok(());
        }
        self.events.get_mut(event.0)?.recorded = Some(Instant::now());
        Ok(())
    }

    fn event_query(&mut self, event: EventHandle) -> Result<(), CudaError> {
        // Unrecorded events are "complete" in CUDA; recorded ones completed
        // at record time here.
        self.events.get(event.0).map(|_| ())
    }

    fn event_synchronize(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.events.get(event.0).map(|_| ())
    }

    fn event_elapsed_ns(&mut self, start: EventHandle, end: EventHandle) -> Result<u64, CudaError> {
        let stamp = |e: &Event| {
            if e.flags & EVENT_DISABLE_TIMING != 0 {
                return None;
            }
            e.recorded
        };
        let t0 = stamp(self.events.get(start.0)?).ok_or(CudaError::INVALID_HANDLE)?;
        let t1 = stamp(self.events.get(end.0)?).ok_or(CudaError::INVALID_HANDLE)?;
        // The wire carries unsigned ns: an end recorded before the start
        // (negative in CUDA) reports 0.
        let ns = t1.saturating_duration_since(t0).as_nanos();
        Ok(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    fn event_destroy(&mut self, event: EventHandle) -> Result<(), CudaError> {
        self.events.remove(event.0).map(|_| ())
    }

    fn ctx_synchronize(&mut self) -> Result<(), CudaError> {
        self.graphs.check_sync()
    }

    fn stream_begin_capture(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        self.check_stream(stream)?;
        self.graphs.begin(stream, mode)
    }

    fn stream_end_capture(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        self.check_stream(stream)?;
        self.graphs.end(stream)
    }

    fn graph_instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        self.graphs.instantiate(graph, flags)
    }

    /// Replays the recorded nodes in order on `stream`, synchronously (so
    /// the compute share charges the replay's wall time, as for a launch).
    fn graph_launch(&mut self, exec: u64, stream: StreamHandle) -> Result<(), CudaError> {
        let nodes = self.graphs.exec(exec)?;
        self.check_stream(stream)?;
        self.replay(&nodes, stream)
    }

    fn graph_exec_destroy(&mut self, exec: u64) -> Result<(), CudaError> {
        self.graphs.destroy_exec(exec)
    }

    fn graph_destroy(&mut self, graph: u64) -> Result<(), CudaError> {
        self.graphs.destroy_graph(graph)
    }

    fn release_all(&mut self) -> Released {
        let (allocations, bytes) = self.mem.release_all();
        self.functions.clear();
        self.cache.clear();
        self.cache_order.clear();
        self.graphs.clear();
        Released {
            allocations,
            bytes,
            streams: self.streams.clear(),
            events: self.events.clear(),
            modules: self.modules.clear(),
        }
    }
}
