//! Maps each decoded protocol call to backend operations and its answer.
//!
//! Exists so the call-to-backend mapping is one transport-free piece that
//! the driver loop (`driver`), the `rgpu_proto::sim` harness and tests all
//! plug into a `Server`'s visitor. Sync calls are answered with
//! [`Responder::reply`]; async calls with [`Responder::complete_async`], so
//! an async failure becomes the deferred error the protocol surfaces at the
//! next sync call (and poisons the context when sticky). Payloads: inline
//! bytes are used in place, arena references go through [`ArenaAccess`],
//! trailers land in device memory piece by piece (destination checked
//! before the first byte).

use rgpu_proto::{
    Blob, Call, CallClass, CallId, CtxSynchronizeReply, CudaError, Dest, DeviceAttribute,
    DeviceCount, DeviceName, DevicePtr, DeviceTotalMemReply, DeviceUuid, DevicesGranted,
    EventElapsedReply, EventQueryReply, EventSynchronizeReply, FunctionInfo, MemAllocReply,
    MemFreeReply, MemInfo, MemcpyDtoDReply, MemcpyDtoHReply, MemcpyHtoDReply, MemsetReply,
    ModuleLoaded, ModuleLoadedByHash, ModuleUnloadReply, NopReply, Payload, Reply, ReplyError,
    Responder, ServerEvent, Slots, StreamHandle, StreamQueryReply, StreamSynchronizeReply,
    MAX_INLINE_BYTES, MAX_NAME_BYTES,
};

use super::arena::ArenaAccess;
use super::client_handles::ClientHandles;
use rgpu_proto::{LaunchAttr, MAX_LAUNCH_ATTRS};

use crate::backend::{Backend, DeviceRequest, Exec, LaunchDims};

/// What a session did, for its summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sync calls answered.
    pub sync_calls: u64,
    /// Async calls executed.
    pub async_calls: u64,
    /// Sync calls answered with an error of their own.
    pub sync_failures: u64,
    /// Async calls that failed (reported as deferred errors).
    pub async_failures: u64,
    /// Host-to-device payload bytes copied.
    pub bytes_h2d: u64,
    /// Device-to-host bytes copied.
    pub bytes_d2h: u64,
}

/// A host-to-device copy whose bytes arrive as a trailer.
#[derive(Debug, Clone, Copy)]
struct Landing {
    id: CallId,
    dst: DevicePtr,
    received: u64,
    /// The destination was refused: the bytes are drained and dropped, and
    /// the call answered with this error.
    error: Option<CudaError>,
}

/// Per-session executor state; the backend is passed to each call so that
/// the same executor works with a borrowed or owned backend.
#[derive(Debug)]
pub struct Executor {
    /// Largest inline device-to-host reply payload, in bytes.
    inline_reply_bytes_max: u64,
    landing: Option<Landing>,
    /// Reused buffer for inline device-to-host replies (at most
    /// `MAX_INLINE_BYTES`).
    scratch: Vec<u8>,
    stats: SessionStats,
    fault: Option<ReplyError>,
    /// Client-chosen stream and event handles → the backend's.
    handles: ClientHandles,
    /// The shared arena was offered to the backend for registration
    /// ([`Backend::register_host_arena`]); done once per session.
    arena_registered: bool,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

type CallResult<'r> = Result<Reply<'r>, CudaError>;

impl Executor {
    /// A fresh executor answering inline device-to-host copies up to
    /// `MAX_INLINE_BYTES`.
    #[must_use]
    pub fn new() -> Self {
        Self::with_inline_reply_max(u64::from(MAX_INLINE_BYTES))
    }

    /// A fresh executor answering inline device-to-host copies up to
    /// `max` bytes (capped at `MAX_INLINE_BYTES`).
    #[must_use]
    pub fn with_inline_reply_max(max: u64) -> Self {
        Self {
            inline_reply_bytes_max: max.min(u64::from(MAX_INLINE_BYTES)),
            landing: None,
            scratch: Vec::new(),
            stats: SessionStats::default(),
            fault: None,
            handles: ClientHandles::default(),
            arena_registered: false,
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The first answering failure (a bug in the mapping or a closed
    /// connection), taken.
    pub fn take_fault(&mut self) -> Option<ReplyError> {
        self.fault.take()
    }

    /// Handles one server event: executes calls, lands trailer bytes.
    pub fn on_event<B: Backend + ?Sized>(
        &mut self,
        backend: &mut B,
        ev: ServerEvent<'_>,
        r: &mut Responder,
        arena: &mut dyn ArenaAccess,
    ) {
        match ev {
            ServerEvent::Call {
                id,
                class,
                stream,
                call,
            } => self.on_call(backend, id, class, stream, call, r, arena),
            ServerEvent::Trailer {
                id,
                bytes,
                offset,
                done,
            } => {
                debug_assert!(self
                    .landing
                    .is_none_or(|l| l.id != id || l.received == offset));
                self.trailer_bytes(backend, id, bytes, done, r);
            }
            ServerEvent::Connected { client_caps } => {
                tracing::debug!(client_caps, "rgpu session connected");
            }
            ServerEvent::Closed { error } => {
                tracing::debug!(%error, "rgpu session closed");
                self.landing = None;
                // The backend objects are freed by `Backend::release_all`.
                self.handles.clear();
            }
        }
    }

    /// Lands trailer bytes of call `id` received past `handle_input` (or
    /// through a `Trailer` event); `done` when they are its last bytes,
    /// after which the call is answered. Bytes of other calls are dropped
    /// (a call answered by the protocol itself in a poisoned context).
    pub fn trailer_bytes<B: Backend + ?Sized>(
        &mut self,
        backend: &mut B,
        id: CallId,
        bytes: &[u8],
        done: bool,
        r: &mut Responder,
    ) {
        let Some(l) = self.landing.as_mut().filter(|l| l.id == id) else {
            return;
        };
        if l.error.is_none() {
            // The whole range was checked when the call arrived; a failure
            // here means the memory was freed meanwhile (impossible: calls
            // execute in order and none ran since).
            let at = DevicePtr(l.dst.0.wrapping_add(l.received));
            if let Err(e) = backend.memcpy_htod(at, bytes, Exec::Sync) {
                l.error = Some(e);
            }
        }
        l.received += bytes.len() as u64;
        if done {
            let l = *l;
            self.landing = None;
            if l.error.is_none() {
                self.stats.bytes_h2d += l.received;
            }
            let res = l
                .error
                .map_or(Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})), Err);
            self.answer(r, id, res);
        }
    }

    fn answer(&mut self, r: &mut Responder, id: CallId, res: CallResult<'_>) {
        self.stats.sync_calls += 1;
        if res.is_err() {
            self.stats.sync_failures += 1;
        }
        if let Err(e) = r.reply(id, res) {
            tracing::warn!(%e, "rgpu session could not answer a call");
            self.fault.get_or_insert(e);
        }
    }

    fn complete(&mut self, r: &mut Responder, id: CallId, res: Result<(), CudaError>) {
        self.stats.async_calls += 1;
        if let Err(e) = res {
            self.stats.async_failures += 1;
            tracing::debug!(
                code = e.0,
                "async call failed; deferred to the next sync call"
            );
        }
        if let Err(e) = r.complete_async(id, res) {
            tracing::warn!(%e, "rgpu session could not complete an async call");
            self.fault.get_or_insert(e);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_call<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        id: CallId,
        class: CallClass,
        stream: StreamHandle,
        call: Call<'_>,
        r: &mut Responder,
        arena: &mut dyn ArenaAccess,
    ) {
        // The header key is the client's stream handle; map it to the
        // backend's (stream create/destroy name the client handle itself).
        let key = stream;
        let stream = match call {
            Call::StreamCreate(_) | Call::StreamDestroy(_) => key,
            _ => match self.handles.stream(key) {
                Ok(s) => s,
                Err(e) if class == CallClass::Async => return self.complete(r, id, Err(e)),
                Err(e) => return self.answer(r, id, Err(e)),
            },
        };
        let on = Exec::Stream(stream);
        // Async calls: execute, then complete (failures become deferred errors).
        let done: Result<(), CudaError> = match call {
            Call::AsyncNop(_) => Ok(()),
            Call::MemcpyHtoDAsync(m) => self.htod(b, id, m.dst, m.src, on, arena).map(|_| ()),
            Call::MemcpyDtoHAsync(m) => self
                .register_arena(b, arena)
                .arena_write(m.arena_offset, m.len)
                .and_then(|dst| b.memcpy_dtoh(dst, m.src, on))
                .and_then(|()| arena.arena_commit(m.arena_offset, m.len))
                .inspect(|()| self.stats.bytes_d2h += m.len),
            Call::MemcpyDtoDAsync(m) => b.memcpy_dtod(m.dst, m.src, m.len, on),
            Call::MemsetAsync(m) => b.memset(m.dst, m.width, m.value, m.count, on),
            Call::Launch(l) => {
                let dims = LaunchDims {
                    grid: l.grid,
                    block: l.block,
                    shared_mem_bytes: l.shared_mem_bytes,
                };
                b.launch(l.function, dims, l.params.0, stream)
            }
            Call::LaunchEx(l) => {
                let dims = LaunchDims {
                    grid: l.grid,
                    block: l.block,
                    shared_mem_bytes: l.shared_mem_bytes,
                };
                let mut attrs = [LaunchAttr::default(); MAX_LAUNCH_ATTRS as usize];
                match LaunchAttr::decode_all(l.attrs.0) {
                    Some(it) => {
                        let mut n = 0;
                        for (slot, a) in attrs.iter_mut().zip(it) {
                            *slot = a;
                            n += 1;
                        }
                        b.launch_ex(l.function, dims, l.params.0, &attrs[..n], stream)
                    }
                    None => Err(CudaError::INVALID_VALUE),
                }
            }
            Call::StreamWaitEvent(w) => self
                .handles
                .event(w.event)
                .and_then(|e| b.stream_wait_event(stream, e, w.flags)),
            Call::EventRecord(e) => self
                .handles
                .event(e.event)
                .and_then(|e| b.event_record(e, stream)),
            Call::StreamCreate(c) => self.handles.check_new_stream(c.stream).and_then(|()| {
                let s = b.stream_create(c.flags, c.priority)?;
                self.handles.insert_stream(c.stream, s);
                Ok(())
            }),
            Call::StreamDestroy(_) => self
                .handles
                .remove_stream(key)
                .and_then(|s| b.stream_destroy(s)),
            Call::EventCreate(c) => self.handles.check_new_event(c.event).and_then(|()| {
                let e = b.event_create(c.flags)?;
                self.handles.insert_event(c.event, e);
                Ok(())
            }),
            Call::EventDestroy(e) => self
                .handles
                .remove_event(e.event)
                .and_then(|e| b.event_destroy(e)),
            Call::MemFreeAsync(m) => b.mem_free_async(m.ptr, stream),
            Call::StreamBeginCapture(c) => b.stream_begin_capture(stream, c.mode),
            Call::GraphLaunch(g) => self
                .handles
                .execs()
                .get(g.exec)
                .and_then(|e| b.graph_launch(e, stream)),
            Call::GraphExecDestroy(g) => self
                .handles
                .execs()
                .remove(g.exec)
                .and_then(|e| b.graph_exec_destroy(e)),
            Call::GraphDestroy(g) => self
                .handles
                .graphs()
                .remove(g.graph)
                .and_then(|g| b.graph_destroy(g)),
            other => return self.on_sync(b, id, class, stream, other, r, arena),
        };
        debug_assert_eq!(class, CallClass::Async);
        self.complete(r, id, done);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sync<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        id: CallId,
        class: CallClass,
        stream: StreamHandle,
        call: Call<'_>,
        r: &mut Responder,
        arena: &mut dyn ArenaAccess,
    ) {
        let res: CallResult<'_> = match call {
            Call::Nop(_) => Ok(Reply::NopReply(NopReply {})),
            Call::RequestDevices(q) => b
                .request_devices(DeviceRequest {
                    count: q.count,
                    fraction_milli: q.fraction_milli,
                    memory_bytes: q.memory_bytes,
                })
                .map(|g| {
                    Reply::DevicesGranted(DevicesGranted {
                        count: g.count,
                        memory_bytes: g.memory_bytes,
                    })
                }),
            Call::DeviceGetCount(_) => b
                .device_count()
                .map(|count| Reply::DeviceCount(DeviceCount { count })),
            Call::DeviceGetAttribute(a) => b
                .device_attribute(a.device, a.attribute)
                .map(|value| Reply::DeviceAttribute(DeviceAttribute { value })),
            Call::DeviceGetName(d) => match b.device_name(d.device) {
                Ok(name) => {
                    let n = name.len().min(MAX_NAME_BYTES as usize);
                    let res = Ok(Reply::DeviceName(DeviceName {
                        name: Blob(&name.as_bytes()[..n]),
                    }));
                    return self.answer(r, id, res);
                }
                Err(e) => Err(e),
            },
            Call::DeviceTotalMem(d) => b
                .device_total_mem(d.device)
                .map(|bytes| Reply::DeviceTotalMemReply(DeviceTotalMemReply { bytes })),
            Call::DeviceGetUuid(d) => b
                .device_uuid(d.device)
                .map(|uuid| Reply::DeviceUuid(DeviceUuid { uuid })),
            Call::DeviceGetUtilization(d) => b.device_utilization(d.device).map(|u| {
                Reply::DeviceUtilization(rgpu_proto::DeviceUtilization {
                    gpu_percent: u.gpu_percent,
                    memory_percent: u.memory_percent,
                    period_us: u.period_ns / 1_000,
                })
            }),
            Call::MemGetInfo(_) => b.mem_get_info().map(|m| {
                Reply::MemInfo(MemInfo {
                    free: m.free,
                    total: m.total,
                })
            }),
            Call::MemAlloc(m) => b
                .mem_alloc(m.bytes)
                .map(|ptr| Reply::MemAllocReply(MemAllocReply { ptr })),
            Call::MemFree(m) => b
                .mem_free(m.ptr)
                .map(|()| Reply::MemFreeReply(MemFreeReply {})),
            Call::MemAllocPitch(m) => b
                .mem_alloc_pitch(m.width_bytes, m.height, m.element_size)
                .map(|(ptr, pitch)| {
                    Reply::MemAllocPitchReply(rgpu_proto::MemAllocPitchReply { ptr, pitch })
                }),
            Call::MemAllocAsync(m) => b
                .mem_alloc_async(m.bytes, None, stream)
                .map(|ptr| Reply::MemAllocAsyncReply(rgpu_proto::MemAllocAsyncReply { ptr })),
            Call::MemAllocFromPoolAsync(m) => {
                b.mem_alloc_async(m.bytes, Some(m.pool), stream).map(|ptr| {
                    Reply::MemAllocFromPoolAsyncReply(rgpu_proto::MemAllocFromPoolAsyncReply {
                        ptr,
                    })
                })
            }
            Call::DeviceGetDefaultMemPool(d) => b
                .default_mem_pool(d.device)
                .map(|pool| Reply::DefaultMemPool(rgpu_proto::DefaultMemPool { pool })),
            Call::ModuleGetGlobal(g) => b
                .module_global(g.module, g.name.0)
                .map(|(ptr, bytes)| Reply::ModuleGlobal(rgpu_proto::ModuleGlobal { ptr, bytes })),
            Call::MemcpyHtoD(m) => match self.htod(b, id, m.dst, m.src, Exec::Sync, arena) {
                // The answer comes when the trailer has landed.
                Ok(Htod::Landing) => return,
                Ok(Htod::Done) => Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})),
                Err(e) => Err(e),
            },
            Call::MemcpyDtoH(m) => return self.dtoh(b, id, m.src, m.len, m.dst, r, arena),
            Call::MemcpyDtoD(m) => b
                .memcpy_dtod(m.dst, m.src, m.len, Exec::Sync)
                .map(|()| Reply::MemcpyDtoDReply(MemcpyDtoDReply {})),
            Call::Memset(m) => b
                .memset(m.dst, m.width, m.value, m.count, Exec::Sync)
                .map(|()| Reply::MemsetReply(MemsetReply {})),
            Call::ModuleLoad(m) => b
                .module_load(m.hash, m.image.0)
                .map(|module| Reply::ModuleLoaded(ModuleLoaded { module })),
            Call::ModuleLoadByHash(m) => b
                .module_load_cached(m.hash)
                .map(|module| Reply::ModuleLoadedByHash(ModuleLoadedByHash { module })),
            Call::ModuleUnload(m) => b
                .module_unload(m.module)
                .map(|()| Reply::ModuleUnloadReply(ModuleUnloadReply {})),
            Call::FuncGetAttribute(a) => b
                .function_attribute(a.function, a.attribute)
                .map(|value| Reply::FuncAttribute(rgpu_proto::FuncAttribute { value })),
            Call::FunctionLookup(f) => match b.function_lookup(f.module, f.name.0) {
                Ok(info) => {
                    let res = Ok(Reply::FunctionInfo(FunctionInfo {
                        function: info.function,
                        params: Slots(info.params),
                    }));
                    return self.answer(r, id, res);
                }
                Err(e) => Err(e),
            },
            Call::StreamQuery(_) => b
                .stream_query(stream)
                .map(|()| Reply::StreamQueryReply(StreamQueryReply {})),
            Call::StreamSynchronize(_) => b
                .stream_synchronize(stream)
                .map(|()| Reply::StreamSynchronizeReply(StreamSynchronizeReply {})),
            Call::EventQuery(e) => self
                .handles
                .event(e.event)
                .and_then(|e| b.event_query(e))
                .map(|()| Reply::EventQueryReply(EventQueryReply {})),
            Call::EventSynchronize(e) => self
                .handles
                .event(e.event)
                .and_then(|e| b.event_synchronize(e))
                .map(|()| Reply::EventSynchronizeReply(EventSynchronizeReply {})),
            Call::EventElapsed(e) => self
                .handles
                .event(e.start)
                .and_then(|start| Ok((start, self.handles.event(e.end)?)))
                .and_then(|(start, end)| b.event_elapsed_ns(start, end))
                .map(|elapsed_ns| Reply::EventElapsedReply(EventElapsedReply { elapsed_ns })),
            Call::CtxSynchronize(_) => b
                .ctx_synchronize()
                .map(|()| Reply::CtxSynchronizeReply(CtxSynchronizeReply {})),
            Call::StreamEndCapture(c) => self
                .end_capture(b, stream, c.graph)
                .map(|()| Reply::StreamEndCaptureReply(rgpu_proto::StreamEndCaptureReply {})),
            Call::GraphInstantiate(g) => self
                .instantiate(b, g.graph, g.exec, g.flags)
                .map(|()| Reply::GraphInstantiateReply(rgpu_proto::GraphInstantiateReply {})),
            // Local calls never reach the wire (the protocol refuses them);
            // anything added to the table later without a mapping is
            // refused honestly rather than faked.
            _ => {
                tracing::warn!(code = call.code(), "call has no worker mapping");
                if class == CallClass::Async {
                    return self.complete(r, id, Err(CudaError::NOT_SUPPORTED));
                }
                Err(CudaError::NOT_SUPPORTED)
            }
        };
        self.answer(r, id, res);
    }

    /// `StreamEndCapture`: the capture always ends (as in CUDA); the graph
    /// is mapped to the client's handle, or destroyed if that handle is bad.
    fn end_capture<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        stream: StreamHandle,
        client: u64,
    ) -> Result<(), CudaError> {
        use super::client_handles::CLIENT_GRAPHS_MAX;
        let graph = b.stream_end_capture(stream)?;
        if let Err(e) = self.handles.graphs().check_new(client, CLIENT_GRAPHS_MAX) {
            // The graph was just created: destroying it cannot fail.
            let _ = b.graph_destroy(graph);
            return Err(e);
        }
        self.handles.graphs().insert(client, graph);
        Ok(())
    }

    /// `GraphInstantiate`: maps the client's exec handle to the backend's.
    fn instantiate<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        graph: u64,
        client: u64,
        flags: u64,
    ) -> Result<(), CudaError> {
        use super::client_handles::CLIENT_GRAPH_EXECS_MAX;
        let graph = self.handles.graphs().get(graph)?;
        self.handles
            .execs()
            .check_new(client, CLIENT_GRAPH_EXECS_MAX)?;
        let exec = b.graph_instantiate(graph, flags)?;
        self.handles.execs().insert(client, exec);
        Ok(())
    }

    /// Offers the shared arena to the backend for page-locking, once, before
    /// the first copy that names it (the backend exists by then: copies come
    /// after the device request). A refusal is logged; copies still work.
    fn register_arena<'a, B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        arena: &'a mut dyn ArenaAccess,
    ) -> &'a mut dyn ArenaAccess {
        if !self.arena_registered {
            if let Some(span) = arena.arena_span() {
                match b.register_host_arena(span) {
                    // No backend yet (a lazy one): try again at the next copy.
                    Err(CudaError::NOT_INITIALIZED) => return arena,
                    Err(e) => tracing::warn!(
                        code = e.0,
                        bytes = span.len,
                        "rgpu session: the shared arena could not be registered; copies are staged by the driver"
                    ),
                    Ok(()) => tracing::debug!(bytes = span.len, "rgpu session: shared arena registered"),
                }
            }
            self.arena_registered = true;
        }
        arena
    }

    /// A host-to-device copy from any payload kind.
    fn htod<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        id: CallId,
        dst: DevicePtr,
        src: Payload<'_>,
        exec: Exec,
        arena: &mut dyn ArenaAccess,
    ) -> Result<Htod, CudaError> {
        let n = match src {
            Payload::Inline(bytes) => {
                b.memcpy_htod(dst, bytes, exec)?;
                bytes.len() as u64
            }
            Payload::Arena { offset, len } => {
                let bytes = self.register_arena(b, arena).arena_read(offset, len)?;
                b.memcpy_htod(dst, bytes, exec)?;
                len
            }
            Payload::Trailing { len } => {
                // The protocol only delivers trailers on sync calls, one at a time.
                if exec != Exec::Sync || self.landing.is_some() {
                    return Err(CudaError::INVALID_VALUE);
                }
                debug_assert!(len > 0, "the protocol announces only non-empty trailers");
                self.landing = Some(Landing {
                    id,
                    dst,
                    received: 0,
                    error: b.check_range(dst, len).err(),
                });
                return Ok(Htod::Landing);
            }
        };
        self.stats.bytes_h2d += n;
        Ok(Htod::Done)
    }

    #[allow(clippy::too_many_arguments)]
    fn dtoh<B: Backend + ?Sized>(
        &mut self,
        b: &mut B,
        id: CallId,
        src: DevicePtr,
        len: u64,
        dst: Dest,
        r: &mut Responder,
        arena: &mut dyn ArenaAccess,
    ) {
        let res = match dst {
            Dest::Inline => {
                if len > self.inline_reply_bytes_max {
                    Err(CudaError::INVALID_VALUE)
                } else {
                    // Bounded by MAX_INLINE_BYTES above.
                    let n = len as usize;
                    self.scratch.resize(n, 0);
                    b.memcpy_dtoh(&mut self.scratch[..n], src, Exec::Sync)
                        .map(|()| n)
                }
            }
            Dest::Arena { offset } => self
                .register_arena(b, arena)
                .arena_write(offset, len)
                .and_then(|out| b.memcpy_dtoh(out, src, Exec::Sync))
                .and_then(|()| arena.arena_commit(offset, len))
                .map(|()| 0),
        };
        let reply = match (res, dst) {
            (Ok(n), Dest::Inline) => Ok(Reply::MemcpyDtoHReply(MemcpyDtoHReply {
                data: Payload::Inline(&self.scratch[..n]),
            })),
            (Ok(_), Dest::Arena { offset }) => Ok(Reply::MemcpyDtoHReply(MemcpyDtoHReply {
                data: Payload::Arena { offset, len },
            })),
            (Err(e), _) => Err(e),
        };
        if reply.is_ok() {
            self.stats.bytes_d2h += len;
        }
        // Not `answer`: the reply borrows `scratch`, so only the disjoint
        // fields are touched here.
        self.stats.sync_calls += 1;
        if reply.is_err() {
            self.stats.sync_failures += 1;
        }
        if let Err(e) = r.reply(id, reply) {
            tracing::warn!(%e, "rgpu session could not answer a call");
            self.fault.get_or_insert(e);
        }
    }
}

/// Outcome of a host-to-device copy request.
enum Htod {
    /// Copied.
    Done,
    /// Waiting for trailer bytes.
    Landing,
}
