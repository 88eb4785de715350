//! Events: client-allocated handles and the event entry points.
//!
//! Call classes (see `docs/shim.md`): create, destroy and record are **async** (no round
//! trip); query and synchronize are **local** when the shim already knows the event complete
//! (never recorded, or a successful synchronization covered its last recording) and **sync**
//! otherwise; elapsed time is **sync**. In a context poisoned by a sticky error every entry
//! returns that error, local answers included.

use std::ffi::{c_float, c_uint, c_void};

use rgpu_proto::{
    Call, CudaError, EventCreate, EventDestroy, EventElapsed, EventHandle, EventQuery, EventRecord,
    EventSynchronize, Reply,
};

use crate::cuda_types::{CUevent, CUresult, CUstream, CUDA_ERROR_INVALID_VALUE};
use crate::driver_api::write_out;
use crate::entry::stream::{handle_status, stream_key, stream_key_per_thread, LEGACY_KEY};
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::remote::handles::CU_EVENT_DISABLE_TIMING;
use crate::remote::session::{to_curesult, Session};

/// `CU_EVENT_RECORD_EXTERNAL`: only meaningful during stream capture (an external event node in
/// the graph); the shim records the event as usual, inside a capture too, which is what the worker
/// captures (docs/shim.md, "Graphs and stream capture").
pub const CU_EVENT_RECORD_EXTERNAL: u32 = 0x1;

fn event_of(h: CUevent) -> EventHandle {
    EventHandle(h as usize as u64)
}

/// `cuEventCreate`: no round trip.
///
/// # Safety
/// `ph_event` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(ph_event: *mut CUevent, flags: c_uint) -> CUresult {
    ffi_guard("cuEventCreate", || {
        with_session(|s| {
            if ph_event.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let mut conn = s.conn();
            let event = s.handles().create_event(flags).map_err(handle_status)?;
            if let Err(e) =
                conn.submit_async(&Call::EventCreate(EventCreate { event, flags }), LEGACY_KEY)
            {
                let _ = s.handles().destroy_event(event);
                return Err(to_curesult("cuEventCreate", &e));
            }
            write_out(ph_event, event.0 as usize as CUevent)
        })
    })
}

/// `cuEventDestroy` / `cuEventDestroy_v2`: no round trip.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(h_event: CUevent) -> CUresult {
    ffi_guard("cuEventDestroy_v2", || {
        with_session(|s| {
            let event = event_of(h_event);
            let mut conn = s.conn();
            s.handles().destroy_event(event).map_err(handle_status)?;
            conn.submit_async(&Call::EventDestroy(EventDestroy { event }), LEGACY_KEY)
                .map_err(|e| to_curesult("cuEventDestroy_v2", &e))
        })
    })
}

fn record(h_event: CUevent, h_stream: CUstream, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        let key = if per_thread {
            stream_key_per_thread(h_stream)?
        } else {
            stream_key(h_stream)?
        };
        let event = event_of(h_event);
        let mut conn = s.conn();
        s.handles().event(event).map_err(handle_status)?;
        conn.submit_async(&Call::EventRecord(EventRecord { event }), key)
            .map_err(|e| to_curesult(entry, &e))?;
        let seq = conn.async_count();
        s.handles().recorded(event, key, seq).map_err(handle_status)
    })
}

/// `cuEventRecord`: async, no round trip.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(h_event: CUevent, h_stream: CUstream) -> CUresult {
    ffi_guard("cuEventRecord", || {
        record(h_event, h_stream, false, "cuEventRecord")
    })
}

/// `cuEventRecord_ptsz`.
///
/// # Safety
/// As [`cuEventRecord`].
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord_ptsz(h_event: CUevent, h_stream: CUstream) -> CUresult {
    ffi_guard("cuEventRecord_ptsz", || {
        record(h_event, h_stream, true, "cuEventRecord_ptsz")
    })
}

fn record_with_flags(
    h_event: CUevent,
    h_stream: CUstream,
    flags: c_uint,
    per_thread: bool,
    entry: &'static str,
) -> CUresult {
    if flags & !CU_EVENT_RECORD_EXTERNAL != 0 {
        return CUDA_ERROR_INVALID_VALUE;
    }
    record(h_event, h_stream, per_thread, entry)
}

/// `cuEventRecordWithFlags`: as [`cuEventRecord`] (no stream capture, so the only flag
/// changes nothing).
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags(
    h_event: CUevent,
    h_stream: CUstream,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuEventRecordWithFlags", || {
        record_with_flags(h_event, h_stream, flags, false, "cuEventRecordWithFlags")
    })
}

/// `cuEventRecordWithFlags_ptsz`.
///
/// # Safety
/// As [`cuEventRecordWithFlags`].
#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags_ptsz(
    h_event: CUevent,
    h_stream: CUstream,
    flags: c_uint,
) -> CUresult {
    ffi_guard("cuEventRecordWithFlags_ptsz", || {
        record_with_flags(
            h_event,
            h_stream,
            flags,
            true,
            "cuEventRecordWithFlags_ptsz",
        )
    })
}

/// Query or synchronize: local when the event is known complete, else one round trip (after
/// which it is known complete).
fn wait_or_query(
    s: &Session,
    event: EventHandle,
    call: &Call<'_>,
    entry: &'static str,
) -> Result<(), CUresult> {
    // The local answer takes no connection lock: it must not wait behind another thread's
    // round trip.
    if let Some(sticky) = crate::remote::conn::sticky_seen() {
        return Err(sticky.code());
    }
    if s.handles()
        .event_known_complete(event)
        .map_err(handle_status)?
    {
        return Ok(());
    }
    // A record submitted meanwhile by another thread is covered too: records take the
    // connection lock, and the answer below is about the event's latest record.
    let mut conn = s.conn();
    conn.sync(call, |_| Some(()))
        .map_err(|e| to_curesult(entry, &e))?;
    s.handles().event_completed(event);
    Ok(())
}

/// `cuEventQuery`: local when known complete, else one round trip
/// (`CUDA_ERROR_NOT_READY` while pending).
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(h_event: CUevent) -> CUresult {
    ffi_guard("cuEventQuery", || {
        with_session(|s| {
            let event = event_of(h_event);
            wait_or_query(
                s,
                event,
                &Call::EventQuery(EventQuery { event }),
                "cuEventQuery",
            )
        })
    })
}

/// `cuEventSynchronize`: local when known complete, else one round trip.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(h_event: CUevent) -> CUresult {
    ffi_guard("cuEventSynchronize", || {
        with_session(|s| {
            let event = event_of(h_event);
            wait_or_query(
                s,
                event,
                &Call::EventSynchronize(EventSynchronize { event }),
                "cuEventSynchronize",
            )
        })
    })
}

/// `cuEventElapsedTime` (and `_v2`, same signature): one round trip; the device answers in
/// nanoseconds, converted to milliseconds here.
///
/// # Safety
/// `ms` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(
    ms: *mut c_float,
    h_start: CUevent,
    h_end: CUevent,
) -> CUresult {
    ffi_guard("cuEventElapsedTime", || {
        with_session(|s| {
            if ms.is_null() {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            let (start, end) = (event_of(h_start), event_of(h_end));
            let mut conn = s.conn();
            {
                let handles = s.handles();
                let (a, b) = (
                    handles.event(start).map_err(handle_status)?,
                    handles.event(end).map_err(handle_status)?,
                );
                // Events created without timing cannot be timed (the driver's answer).
                if (a.flags | b.flags) & CU_EVENT_DISABLE_TIMING != 0 {
                    return Err(CudaError::INVALID_HANDLE.code());
                }
            }
            let ns = conn
                .sync(
                    &Call::EventElapsed(EventElapsed { start, end }),
                    |r| match r {
                        Reply::EventElapsedReply(e) => Some(e.elapsed_ns),
                        _ => None,
                    },
                )
                .map_err(|e| to_curesult("cuEventElapsedTime", &e))?;
            // f32 milliseconds, as the driver reports (about 0.5 µs resolution).
            write_out(ms, (ns as f64 / 1e6) as c_float)
        })
    })
}

/// The shim's function for a legacy-stream row (`name`, `version`), if this module has it.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuEventCreate", 2000) => cuEventCreate as *const c_void,
        ("cuEventDestroy", 2000 | 4000) => cuEventDestroy_v2 as *const c_void,
        ("cuEventRecord", 2000) => cuEventRecord as *const c_void,
        ("cuEventRecordWithFlags", 11010) => cuEventRecordWithFlags as *const c_void,
        ("cuEventQuery", 2000) => cuEventQuery as *const c_void,
        ("cuEventSynchronize", 2000) => cuEventSynchronize as *const c_void,
        ("cuEventElapsedTime", 2000 | 12080) => cuEventElapsedTime as *const c_void,
        _ => return None,
    })
}

/// The shim's function for a per-thread-default-stream row (`_ptsz`), if this module has it.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuEventRecord", 7000) => cuEventRecord_ptsz as *const c_void,
        ("cuEventRecordWithFlags", 11010) => cuEventRecordWithFlags_ptsz as *const c_void,
        _ => return None,
    })
}

/// `cuEventElapsedTime_v2` (CUDA 12.8): the same call under its versioned symbol, for
/// programs linked directly against `libcuda.so.1`.
///
/// # Safety
/// As [`cuEventElapsedTime`].
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut c_float,
    h_start: CUevent,
    h_end: CUevent,
) -> CUresult {
    // SAFETY: same contract as this function's.
    unsafe { cuEventElapsedTime(ms, h_start, h_end) }
}
