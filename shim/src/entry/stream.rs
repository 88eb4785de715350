//! Streams: client-allocated handles, the mapping from `CUstream` to the protocol's ordering
//! key, and the stream entry points.
//!
//! Call classes (see `docs/shim.md`): creating and destroying a stream and waiting on an event
//! are **async** (queued, no round trip; a failure is the next sync call's deferred error);
//! priority, flags and context of a stream are **local**; query and synchronize are **sync**
//! (one round trip, carrying deferred errors).
//!
//! Default streams. The null stream and `CU_STREAM_LEGACY` are the legacy default stream,
//! ordering key 0. `CU_STREAM_PER_THREAD`, and the null stream in a `_ptsz` entry point, is
//! the calling thread's per-thread default stream: a blocking stream (flags 0, so it still
//! synchronizes with the legacy default stream on a real GPU, as CUDA specifies) created on
//! first use with a client handle; when the thread exits it is marked orphaned and destroyed
//! by the next synchronizing call (see `destroy_orphans`).

use std::cell::Cell;
use std::ffi::{c_int, c_uint, c_void};

use rgpu_proto::{Call, StreamCreate, StreamDestroy, StreamHandle, StreamQuery, StreamSynchronize};

use crate::cuda_types::{
    CUcontext, CUresult, CUstream, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_OUT_OF_MEMORY, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD,
};
use crate::driver_api::write_out;
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::remote::handles::HandleError;
use crate::remote::session::{self, to_curesult, Session};

/// The legacy default stream's ordering key.
pub const LEGACY_KEY: StreamHandle = StreamHandle(0);

/// Maps a handle refusal to the driver's answer.
pub(crate) fn handle_status(e: HandleError) -> CUresult {
    match e {
        HandleError::Unknown(_) => CUDA_ERROR_INVALID_HANDLE,
        HandleError::Full(_) => CUDA_ERROR_OUT_OF_MEMORY,
        HandleError::BadFlags(_) => CUDA_ERROR_INVALID_VALUE,
    }
}

/// Maps a `CUstream` from a legacy (non-`_ptsz`) entry point to the protocol's ordering key:
/// null and `CU_STREAM_LEGACY` are the legacy default stream (key 0), `CU_STREAM_PER_THREAD`
/// is the calling thread's per-thread stream (created on first use), anything else must be a
/// live stream this process created (its handle is its key).
///
/// Do not call it while holding [`Session::conn`]: the first use of the per-thread stream
/// submits its creation.
///
/// # Errors
/// `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`, `CUDA_ERROR_INVALID_HANDLE` for an unknown
/// stream, or the per-thread stream's creation failure.
pub fn stream_key(h: CUstream) -> Result<StreamHandle, CUresult> {
    resolve(classify(h, false))
}

/// [`stream_key`] for a `_ptsz`/`_ptds` entry point: there the null stream is the calling
/// thread's per-thread default stream.
///
/// # Errors
/// As [`stream_key`].
pub fn stream_key_per_thread(h: CUstream) -> Result<StreamHandle, CUresult> {
    resolve(classify(h, true))
}

/// Which stream a `CUstream` value names, before any table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The legacy default stream (key 0).
    Legacy,
    /// The calling thread's per-thread default stream.
    PerThread,
    /// A stream created by `cuStreamCreate*`, if live: its handle is its key.
    Created(StreamHandle),
}

/// Classifies `h` under legacy (`per_thread_entry` false) or `_ptsz` semantics.
#[must_use]
pub fn classify(h: CUstream, per_thread_entry: bool) -> StreamKind {
    match h as usize {
        0 if per_thread_entry => StreamKind::PerThread,
        0 | CU_STREAM_LEGACY => StreamKind::Legacy,
        CU_STREAM_PER_THREAD => StreamKind::PerThread,
        raw => StreamKind::Created(StreamHandle(raw as u64)),
    }
}

fn resolve(kind: StreamKind) -> Result<StreamHandle, CUresult> {
    match kind {
        StreamKind::Legacy => Ok(LEGACY_KEY),
        StreamKind::PerThread => per_thread_key(),
        StreamKind::Created(key) => {
            let s = session::initialized()?;
            s.handles().stream(key).map_err(handle_status)?;
            Ok(key)
        }
    }
}

/// The calling thread's per-thread default stream: its handle, orphaned when the thread
/// exits.
struct PerThread(Cell<Option<StreamHandle>>);

impl Drop for PerThread {
    fn drop(&mut self) {
        // Runs during thread teardown: no logging (the log subscriber's thread-locals may be
        // gone, and touching them aborts) and no I/O. The handle is only marked orphaned; the
        // next synchronizing stream, event or context call from any thread sends its destroy.
        let Some(key) = self.0.get() else { return };
        if let Ok(s) = session::initialized() {
            s.handles().orphan_stream(key);
        }
    }
}

/// Sends the destroys of per-thread streams whose threads have exited (see [`PerThread`]).
/// Silent: it may run from the runtime's exit handlers, where logging is unsafe. A refused
/// submit (lost connection, sticky error) leaves the rest to the session's end.
pub(crate) fn destroy_orphans(s: &Session, conn: &mut crate::remote::conn::Conn) {
    while let Some(key) = s.handles().take_orphan() {
        if conn
            .submit_async(&Call::StreamDestroy(StreamDestroy {}), key)
            .is_err()
        {
            return;
        }
    }
}

thread_local! {
    static PER_THREAD: PerThread = const { PerThread(Cell::new(None)) };
}

fn per_thread_key() -> Result<StreamHandle, CUresult> {
    match PER_THREAD.try_with(|p| p.0.get()) {
        Ok(Some(key)) => return Ok(key),
        Ok(None) => {}
        // Thread teardown (e.g. the runtime's exit handlers): the slot is gone. The legacy
        // default stream orders at least as strictly, and creates nothing that would leak.
        Err(_) => return Ok(LEGACY_KEY),
    }
    let s = session::initialized()?;
    let key = create(s, 0, 0, "per-thread default stream")?;
    // The slot was reachable just above; should teardown have begun since, the stream lives
    // until the session ends.
    let _ = PER_THREAD.try_with(|p| p.0.set(Some(key)));
    Ok(key)
}

/// Allocates a client handle and queues its creation.
fn create(
    s: &Session,
    flags: u32,
    priority: i32,
    entry: &'static str,
) -> Result<StreamHandle, CUresult> {
    let mut conn = s.conn();
    destroy_orphans(s, &mut conn);
    let (key, info) = s
        .handles()
        .create_stream(flags, priority)
        .map_err(handle_status)?;
    let call = Call::StreamCreate(StreamCreate {
        stream: key,
        flags,
        priority: info.priority,
    });
    if let Err(e) = conn.submit_async(&call, LEGACY_KEY) {
        // Never reached the server: forget the handle again.
        let _ = s.handles().destroy_stream(key);
        return Err(to_curesult(entry, &e));
    }
    Ok(key)
}

/// Runs a sync stream call and, on success, notes that the stream's work up to now is done.
fn sync_stream(
    s: &Session,
    key: StreamHandle,
    call: &Call<'_>,
    entry: &'static str,
) -> Result<(), CUresult> {
    let mut conn = s.conn();
    destroy_orphans(s, &mut conn);
    let seq = conn.async_count();
    conn.sync_on(call, key, |_| Some(()))
        .map_err(|e| to_curesult(entry, &e))?;
    s.handles().stream_synced(key, seq);
    Ok(())
}

/// `cuCtxSynchronize`'s body: one round trip carrying any deferred error; on success every
/// event recorded before it is known complete.
pub(crate) fn ctx_synchronize(s: &Session, entry: &'static str) -> Result<(), CUresult> {
    let mut conn = s.conn();
    destroy_orphans(s, &mut conn);
    let seq = conn.async_count();
    conn.sync(&Call::CtxSynchronize(rgpu_proto::CtxSynchronize {}), |r| {
        matches!(r, rgpu_proto::Reply::CtxSynchronizeReply(_)).then_some(())
    })
    .map_err(|e| to_curesult(entry, &e))?;
    s.handles().ctx_synced(seq);
    Ok(())
}

/// `cuStreamCreate`: no round trip.
///
/// # Safety
/// `ph_stream` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ph_stream: *mut CUstream, flags: c_uint) -> CUresult {
    // SAFETY: same contract as this function's.
    unsafe { cuStreamCreateWithPriority(ph_stream, flags, 0) }
}

/// `cuStreamCreateWithPriority`: no round trip; the priority is clamped to
/// [`crate::remote::handles::STREAM_PRIORITY_GREATEST`]..=`0`.
///
/// # Safety
/// `ph_stream` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph_stream: *mut CUstream,
    flags: c_uint,
    priority: c_int,
) -> CUresult {
    ffi_guard("cuStreamCreateWithPriority", || {
        with_session(|s| {
            if ph_stream.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let key = create(s, flags, priority, "cuStreamCreateWithPriority")?;
            write_out(ph_stream, key.0 as usize as CUstream)
        })
    })
}

/// `cuStreamDestroy` / `cuStreamDestroy_v2`: no round trip; the worker destroys the stream
/// after the work queued on it.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamDestroy_v2", || {
        with_session(|s| {
            let key = match h_stream as usize {
                // The default streams cannot be destroyed.
                0 | CU_STREAM_LEGACY | CU_STREAM_PER_THREAD => {
                    return Err(CUDA_ERROR_INVALID_HANDLE)
                }
                raw => StreamHandle(raw as u64),
            };
            let mut conn = s.conn();
            s.handles().destroy_stream(key).map_err(handle_status)?;
            super::graph::forget_stream(key);
            conn.submit_async(&Call::StreamDestroy(StreamDestroy {}), key)
                .map_err(|e| to_curesult("cuStreamDestroy_v2", &e))
        })
    })
}

fn query(h: CUstream, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        let key = if per_thread {
            stream_key_per_thread(h)?
        } else {
            stream_key(h)?
        };
        sync_stream(s, key, &Call::StreamQuery(StreamQuery {}), entry)
    })
}

fn synchronize(h: CUstream, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        let key = if per_thread {
            stream_key_per_thread(h)?
        } else {
            stream_key(h)?
        };
        sync_stream(
            s,
            key,
            &Call::StreamSynchronize(StreamSynchronize {}),
            entry,
        )
    })
}

/// `cuStreamQuery`: one round trip; `CUDA_ERROR_NOT_READY` while work is pending.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamQuery", || query(h_stream, false, "cuStreamQuery"))
}

/// `cuStreamQuery_ptsz`.
///
/// # Safety
/// As [`cuStreamQuery`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery_ptsz(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamQuery_ptsz", || {
        query(h_stream, true, "cuStreamQuery_ptsz")
    })
}

/// `cuStreamSynchronize`: one round trip carrying deferred errors.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamSynchronize", || {
        synchronize(h_stream, false, "cuStreamSynchronize")
    })
}

/// `cuStreamSynchronize_ptsz`.
///
/// # Safety
/// As [`cuStreamSynchronize`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize_ptsz(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamSynchronize_ptsz", || {
        synchronize(h_stream, true, "cuStreamSynchronize_ptsz")
    })
}

/// `cuStreamWaitEvent`'s body (async: no round trip).
pub(crate) fn wait_event(
    h_stream: CUstream,
    h_event: crate::cuda_types::CUevent,
    flags: c_uint,
    per_thread: bool,
    entry: &'static str,
) -> CUresult {
    with_session(|s| {
        let key = if per_thread {
            stream_key_per_thread(h_stream)?
        } else {
            stream_key(h_stream)?
        };
        let event = rgpu_proto::EventHandle(h_event as usize as u64);
        let mut conn = s.conn();
        s.handles().event(event).map_err(handle_status)?;
        conn.submit_async(
            &Call::StreamWaitEvent(rgpu_proto::StreamWaitEvent { event, flags }),
            key,
        )
        .map_err(|e| to_curesult(entry, &e))
    })
}

/// `cuStreamWaitEvent`: async, no round trip.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(
    h_stream: CUstream,
    h_event: crate::cuda_types::CUevent,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuStreamWaitEvent", || {
        wait_event(h_stream, h_event, flags, false, "cuStreamWaitEvent")
    })
}

/// `cuStreamWaitEvent_ptsz`.
///
/// # Safety
/// As [`cuStreamWaitEvent`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent_ptsz(
    h_stream: CUstream,
    h_event: crate::cuda_types::CUevent,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuStreamWaitEvent_ptsz", || {
        wait_event(h_stream, h_event, flags, true, "cuStreamWaitEvent_ptsz")
    })
}

/// A stream's (flags, priority), answered locally; default streams have (0, 0).
fn local_facts(h: CUstream, per_thread: bool) -> Result<(u32, i32), CUresult> {
    let s = session::initialized()?;
    match h as usize {
        0 | CU_STREAM_LEGACY | CU_STREAM_PER_THREAD => Ok((0, 0)),
        raw => {
            let _ = per_thread; // null is a default stream in both semantics.
            let info = s
                .handles()
                .stream(StreamHandle(raw as u64))
                .map_err(handle_status)?;
            Ok((info.flags, info.priority))
        }
    }
}

/// `cuStreamGetPriority`: local.
///
/// # Safety
/// `priority` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetPriority(h_stream: CUstream, priority: *mut c_int) -> CUresult {
    ffi_guard("cuStreamGetPriority", || {
        status(local_facts(h_stream, false).and_then(|(_, p)| write_out(priority, p)))
    })
}

/// `cuStreamGetPriority_ptsz`: local.
///
/// # Safety
/// As [`cuStreamGetPriority`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetPriority_ptsz(
    h_stream: CUstream,
    priority: *mut c_int,
) -> CUresult {
    ffi_guard("cuStreamGetPriority_ptsz", || {
        status(local_facts(h_stream, true).and_then(|(_, p)| write_out(priority, p)))
    })
}

/// `cuStreamGetFlags`: local.
///
/// # Safety
/// `flags` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetFlags(h_stream: CUstream, flags: *mut c_uint) -> CUresult {
    ffi_guard("cuStreamGetFlags", || {
        status(local_facts(h_stream, false).and_then(|(f, _)| write_out(flags, f)))
    })
}

/// `cuStreamGetFlags_ptsz`: local.
///
/// # Safety
/// As [`cuStreamGetFlags`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetFlags_ptsz(h_stream: CUstream, flags: *mut c_uint) -> CUresult {
    ffi_guard("cuStreamGetFlags_ptsz", || {
        status(local_facts(h_stream, true).and_then(|(f, _)| write_out(flags, f)))
    })
}

/// `cuStreamGetCtx` (the 9.2 signature): local; every stream belongs to the primary context.
///
/// # Safety
/// `pctx` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx(h_stream: CUstream, pctx: *mut CUcontext) -> CUresult {
    ffi_guard("cuStreamGetCtx", || {
        status(
            local_facts(h_stream, false).and_then(|_| write_out(pctx, crate::context::primary())),
        )
    })
}

fn status(r: Result<(), CUresult>) -> CUresult {
    match r {
        Ok(()) => crate::cuda_types::CUDA_SUCCESS,
        Err(e) => e,
    }
}

/// The shim's function for a legacy-stream row (`name`, `version`), if this module has it.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamCreate", 2000) => cuStreamCreate as *const c_void,
        ("cuStreamCreateWithPriority", 5050) => cuStreamCreateWithPriority as *const c_void,
        ("cuStreamDestroy", 2000 | 4000) => cuStreamDestroy_v2 as *const c_void,
        ("cuStreamQuery", 2000) => cuStreamQuery as *const c_void,
        ("cuStreamSynchronize", 2000) => cuStreamSynchronize as *const c_void,
        ("cuStreamWaitEvent", 3020) => cuStreamWaitEvent as *const c_void,
        ("cuStreamGetPriority", 5050) => cuStreamGetPriority as *const c_void,
        ("cuStreamGetFlags", 5050) => cuStreamGetFlags as *const c_void,
        ("cuStreamGetCtx", 9020) => cuStreamGetCtx as *const c_void,
        ("cuCtxGetStreamPriorityRange", 5050) => cuCtxGetStreamPriorityRange as *const c_void,
        _ => return None,
    })
}

/// The shim's function for a per-thread-default-stream row (`_ptsz`), if this module has it.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamQuery", 7000) => cuStreamQuery_ptsz as *const c_void,
        ("cuStreamSynchronize", 7000) => cuStreamSynchronize_ptsz as *const c_void,
        ("cuStreamWaitEvent", 7000) => cuStreamWaitEvent_ptsz as *const c_void,
        ("cuStreamGetPriority", 7000) => cuStreamGetPriority_ptsz as *const c_void,
        ("cuStreamGetFlags", 7000) => cuStreamGetFlags_ptsz as *const c_void,
        // The context is the same for every stream.
        ("cuStreamGetCtx", 9020) => cuStreamGetCtx as *const c_void,
        _ => return None,
    })
}

/// `cuCtxGetStreamPriorityRange`: local; the range the shim clamps priorities into.
///
/// # Safety
/// Each pointer must be null (not wanted) or writable.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CUresult {
    use crate::remote::handles::{STREAM_PRIORITY_GREATEST, STREAM_PRIORITY_LEAST};
    ffi_guard("cuCtxGetStreamPriorityRange", || {
        status(session::initialized().and_then(|_| {
            // Either pointer may be null (the driver's contract).
            if !least.is_null() {
                write_out(least, STREAM_PRIORITY_LEAST)?;
            }
            if !greatest.is_null() {
                write_out(greatest, STREAM_PRIORITY_GREATEST)?;
            }
            Ok(())
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: usize) -> CUstream {
        v as CUstream
    }

    #[test]
    fn default_streams_by_semantics() {
        assert_eq!(classify(raw(0), false), StreamKind::Legacy);
        assert_eq!(classify(raw(0), true), StreamKind::PerThread);
        for per_thread in [false, true] {
            assert_eq!(
                classify(raw(CU_STREAM_LEGACY), per_thread),
                StreamKind::Legacy
            );
            assert_eq!(
                classify(raw(CU_STREAM_PER_THREAD), per_thread),
                StreamKind::PerThread
            );
            assert_eq!(
                classify(raw(0x5157_0000_0040), per_thread),
                StreamKind::Created(StreamHandle(0x5157_0000_0040))
            );
        }
    }

    #[test]
    fn handle_errors_map_to_driver_codes() {
        assert_eq!(
            handle_status(HandleError::Unknown(9)),
            CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(
            handle_status(HandleError::Full(1)),
            CUDA_ERROR_OUT_OF_MEMORY
        );
        assert_eq!(
            handle_status(HandleError::BadFlags(8)),
            CUDA_ERROR_INVALID_VALUE
        );
    }

    #[test]
    fn created_stream_before_init_is_not_initialized() {
        // No session in unit tests: a created-stream lookup needs one.
        assert_eq!(
            stream_key(raw(0x5157_0000_0000)),
            Err(crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED)
        );
        assert_eq!(stream_key(std::ptr::null_mut()), Ok(LEGACY_KEY));
    }
}
