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
//!   ([`module`]); real cubin/fatbin/PTX images are refused with
//!   `CUDA_ERROR_NOT_SUPPORTED` (logged), anything else with
//!   `CUDA_ERROR_INVALID_IMAGE`.
//! - **Handles** ([`handles`]): per-backend (per-session) tables with
//!   process-wide unique values.
//! - Not modeled: module globals, texture/surface objects, graphs, peer
//!   access, multiple devices (the device count is 1).

pub mod attributes;
pub mod config;
pub mod handles;
pub mod kernels;
pub mod memory;
pub mod module;
mod zeroed;

use std::collections::{HashMap, VecDeque};
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
    kernels: Vec<Kernel>,
}

#[derive(Debug)]
struct Function {
    module: u64,
    kernel: Kernel,
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
    cache: HashMap<[u8; 32], Vec<Kernel>>,
    cache_order: VecDeque<[u8; 32]>,
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

    fn remember_image(&mut self, hash: [u8; 32], kernels: &[Kernel]) {
        let max = self.cfg.module_cache_max as usize;
        if max == 0 || self.cache.contains_key(&hash) {
            return;
        }
        while self.cache_order.len() >= max {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache.insert(hash, kernels.to_vec());
        self.cache_order.push_back(hash);
    }

    fn new_module(&mut self, kernels: Vec<Kernel>) -> Result<ModuleHandle, CudaError> {
        self.modules.insert(Module { kernels }).map(ModuleHandle)
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
        self.mem.alloc(bytes)
    }

    fn mem_free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.mem.free(ptr)
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
        let kernels = module::parse(image)?;
        self.remember_image(hash, &kernels);
        self.new_module(kernels)
    }

    fn module_load_cached(&mut self, hash: [u8; 32]) -> Result<ModuleHandle, CudaError> {
        let kernels = self.cache.get(&hash).ok_or(CudaError::NOT_FOUND)?.clone();
        self.new_module(kernels)
    }

    fn module_unload(&mut self, module: ModuleHandle) -> Result<(), CudaError> {
        self.modules.remove(module.0)?;
        self.functions.remove_where(|f| f.module == module.0);
        Ok(())
    }

    fn function_lookup(
        &mut self,
        module: ModuleHandle,
        name: &[u8],
    ) -> Result<FunctionInfo<'_>, CudaError> {
        let m = self.modules.get(module.0)?;
        let kernel = Kernel::from_name(name)
            .filter(|k| m.kernels.contains(k))
            .ok_or(CudaError::NOT_FOUND)?;
        let layout = kernel
            .layout()
            .iter()
            .map(|&(o, s)| ParamSlot::new(o, s))
            .collect();
        let h = self.functions.insert(Function {
            module: module.0,
            kernel,
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
        let kernel = self.functions.get(function.0)?.kernel;
        self.check_stream(stream)?;
        self.check_dims(&dims)?;
        kernel.run(&mut self.mem, params, dims.threads())
    }

    fn stream_create(&mut self, flags: u32, _priority: i32) -> Result<StreamHandle, CudaError> {
        if flags & !STREAM_FLAGS_KNOWN != 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        self.streams.insert(()).map(StreamHandle)
    }

    fn stream_destroy(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.streams.remove(stream.0)
    }

    fn stream_query(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        // Eager execution: everything submitted has completed.
        self.check_stream(stream)
    }

    fn stream_synchronize(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        self.check_stream(stream)
    }

    fn stream_wait_event(
        &mut self,
        stream: StreamHandle,
        event: EventHandle,
        _flags: u32,
    ) -> Result<(), CudaError> {
        // Eager execution: the recorded work already completed.
        self.check_stream(stream)?;
        self.events.get(event.0).map(|_| ())
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
        Ok(())
    }

    fn release_all(&mut self) -> Released {
        let (allocations, bytes) = self.mem.release_all();
        self.functions.clear();
        self.cache.clear();
        self.cache_order.clear();
        Released {
            allocations,
            bytes,
            streams: self.streams.clear(),
            events: self.events.clear(),
            modules: self.modules.clear(),
        }
    }
}
