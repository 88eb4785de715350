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
    EventCreated, EventDestroyReply, EventElapsedReply, EventQueryReply, EventSynchronizeReply,
    FunctionInfo, MemAllocReply, MemFreeReply, MemInfo, MemcpyDtoDReply, MemcpyDtoHReply,
    MemcpyHtoDReply, MemsetReply, ModuleLoaded, ModuleLoadedByHash, ModuleUnloadReply, NopReply,
    Payload, Reply, ReplyError, Responder, ServerEvent, Slots, StreamCreated, StreamDestroyReply,
    StreamHandle, StreamQueryReply, StreamSynchronizeReply, MAX_INLINE_BYTES, MAX_NAME_BYTES,
};

use super::arena::ArenaAccess;
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
        let on = Exec::Stream(stream);
        // Async calls: execute, then complete (failures become deferred errors).
        let done: Result<(), CudaError> = match call {
            Call::AsyncNop(_) => Ok(()),
            Call::MemcpyHtoDAsync(m) => self.htod(b, id, m.dst, m.src, on, arena).map(|_| ()),
            Call::MemcpyDtoHAsync(m) => arena
                .arena_write(m.arena_offset, m.len)
                .and_then(|dst| b.memcpy_dtoh(dst, m.src, on))
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
            Call::StreamWaitEvent(w) => b.stream_wait_event(stream, w.event, w.flags),
            Call::EventRecord(e) => b.event_record(e.event, stream),
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
            Call::StreamCreate(s) => b
                .stream_create(s.flags, s.priority)
                .map(|stream| Reply::StreamCreated(StreamCreated { stream })),
            Call::StreamDestroy(_) => b
                .stream_destroy(stream)
                .map(|()| Reply::StreamDestroyReply(StreamDestroyReply {})),
            Call::StreamQuery(_) => b
                .stream_query(stream)
                .map(|()| Reply::StreamQueryReply(StreamQueryReply {})),
            Call::StreamSynchronize(_) => b
                .stream_synchronize(stream)
                .map(|()| Reply::StreamSynchronizeReply(StreamSynchronizeReply {})),
            Call::EventCreate(e) => b
                .event_create(e.flags)
                .map(|event| Reply::EventCreated(EventCreated { event })),
            Call::EventQuery(e) => b
                .event_query(e.event)
                .map(|()| Reply::EventQueryReply(EventQueryReply {})),
            Call::EventSynchronize(e) => b
                .event_synchronize(e.event)
                .map(|()| Reply::EventSynchronizeReply(EventSynchronizeReply {})),
            Call::EventDestroy(e) => b
                .event_destroy(e.event)
                .map(|()| Reply::EventDestroyReply(EventDestroyReply {})),
            Call::EventElapsed(e) => b
                .event_elapsed_ns(e.start, e.end)
                .map(|elapsed_ns| Reply::EventElapsedReply(EventElapsedReply { elapsed_ns })),
            Call::CtxSynchronize(_) => b
                .ctx_synchronize()
                .map(|()| Reply::CtxSynchronizeReply(CtxSynchronizeReply {})),
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
                let bytes = arena.arena_read(offset, len)?;
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
            Dest::Arena { offset } => arena
                .arena_write(offset, len)
                .and_then(|out| b.memcpy_dtoh(out, src, Exec::Sync))
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
