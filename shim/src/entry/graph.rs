//! Stream capture and CUDA graphs: `cuStreamBeginCapture` … `cuGraphLaunch`, forwarded.
//!
//! Exists because capture is how PyTorch and most programs build graphs: work enqueued on a
//! capturing stream is recorded by the worker (its own capture on a GPU, a bounded recording on
//! the emulated device) instead of run, and a graph launch replays it. Handles are
//! client-allocated like streams and events, so only ending a capture and instantiating cost
//! a round trip. Call classes: begin capture, graph launch and the destroys are **async**
//! (their failures are the next sync call's deferred error); end capture and instantiate are
//! **sync** (they report an invalidated capture, 901, and bad graphs at once); the capture
//! state of each stream and the thread's capture mode are kept here, so `cuStreamIsCapturing`
//! and `cuStreamGetCaptureInfo` ([`super::capture`]) are answered locally and truthfully.
//! `cuGraphUpload` validates its handles and does nothing else (the worker uploads at first
//! launch). The graph being captured is not exposed as an object (node-editing APIs keep their
//! refusing stubs).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_uint, c_ulonglong, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rgpu_proto::{
    Call, GraphDestroy, GraphExecDestroy, GraphInstantiate, GraphLaunch, Reply, StreamBeginCapture,
    StreamEndCapture, StreamHandle,
};

use crate::cuda_types::{
    CUresult, CUstream, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_OUT_OF_MEMORY,
};
use crate::driver_api::write_out;
use crate::entry::stream::{stream_key, stream_key_per_thread, LEGACY_KEY};
use crate::entry::with_session;
use crate::ffi_guard::ffi_guard;
use crate::remote::session::to_curesult;

/// `CUgraph`: an opaque client-chosen handle.
pub type CUgraph = *mut c_void;
/// `CUgraphExec`: an opaque client-chosen handle.
pub type CUgraphExec = *mut c_void;

/// `CUDA_ERROR_ILLEGAL_STATE`.
pub const CUDA_ERROR_ILLEGAL_STATE: CUresult = 401;
/// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
pub const CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: CUresult = 900;
/// `CU_STREAM_CAPTURE_MODE_RELAXED`, the largest mode.
pub const CAPTURE_MODE_RELAXED: u32 = 2;
/// Most graphs, and separately most executable graphs, live at once (the worker's bound).
pub const GRAPHS_MAX: usize = 1 << 14;
/// Most streams capturing at once (one per stream; streams are bounded too).
pub const CAPTURES_MAX: usize = 1 << 12;

/// A capture under way on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureInfo {
    /// Process-unique capture id (`cuStreamGetCaptureInfo`'s `id_out`).
    pub id: u64,
    /// The `CUstreamCaptureMode` it began with.
    pub mode: u32,
}

#[derive(Debug, Default)]
struct State {
    captures: HashMap<u64, CaptureInfo>,
    graphs: HashSet<u64>,
    execs: HashSet<u64>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Next handle value; 16-aligned like the shim's other handles, far from small integers.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0x7267_0000_0000);
static NEXT_CAPTURE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// `cuThreadExchangeStreamCaptureMode`'s per-thread mode (global by default).
    static THREAD_MODE: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` on the state; a poisoned lock (a panic elsewhere) is recovered, the tables stay
/// consistent because every update is a single insert or remove.
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g: MutexGuard<'_, Option<State>> = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(State::default))
}

fn new_handle() -> u64 {
    NEXT_HANDLE.fetch_add(0x10, Ordering::Relaxed)
}

/// The capture under way on stream `key`, if any (for [`super::capture`]).
pub(crate) fn capture_of(key: StreamHandle) -> Option<CaptureInfo> {
    with_state(|st| st.captures.get(&key.0).copied())
}

/// Drops the capture state of a destroyed stream (CUDA ends a capture whose stream is
/// destroyed; the worker does the same when it destroys the stream), so the bounded table
/// never fills with dead entries.
pub(crate) fn forget_stream(key: StreamHandle) {
    with_state(|st| {
        st.captures.remove(&key.0);
    });
}

fn key_of(h: CUstream, per_thread: bool) -> Result<StreamHandle, CUresult> {
    if per_thread {
        stream_key_per_thread(h)
    } else {
        stream_key(h)
    }
}

fn begin(h: CUstream, mode: u32, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        if mode > CAPTURE_MODE_RELAXED {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let key = key_of(h, per_thread)?;
        if key == LEGACY_KEY {
            // CUDA: the legacy stream cannot capture.
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let mut conn = s.conn();
        with_state(|st| {
            if st.captures.contains_key(&key.0) {
                return Err(CUDA_ERROR_ILLEGAL_STATE);
            }
            if st.captures.len() >= CAPTURES_MAX {
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
            let id = NEXT_CAPTURE_ID.fetch_add(1, Ordering::Relaxed);
            st.captures.insert(key.0, CaptureInfo { id, mode });
            Ok(())
        })?;
        let r = conn.submit_async(&Call::StreamBeginCapture(StreamBeginCapture { mode }), key);
        r.map_err(|e| {
            with_state(|st| st.captures.remove(&key.0));
            to_curesult(entry, &e)
        })
    })
}

fn end(h: CUstream, out: *mut CUgraph, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        if out.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let key = key_of(h, per_thread)?;
        // The capture ends whatever the worker answers (as in CUDA).
        if with_state(|st| st.captures.remove(&key.0)).is_none() {
            return Err(CUDA_ERROR_ILLEGAL_STATE);
        }
        let graph = new_handle();
        with_state(|st| {
            if st.graphs.len() >= GRAPHS_MAX {
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
            st.graphs.insert(graph);
            Ok(())
        })?;
        let mut conn = s.conn();
        let r = conn
            .sync_on(
                &Call::StreamEndCapture(StreamEndCapture { graph }),
                key,
                |r| matches!(r, Reply::StreamEndCaptureReply(_)).then_some(()),
            )
            .map_err(|e| to_curesult(entry, &e));
        drop(conn);
        if let Err(e) = r {
            with_state(|st| st.graphs.remove(&graph));
            return Err(e);
        }
        write_out(out, graph as usize as CUgraph)
    })
}

fn instantiate(out: *mut CUgraphExec, graph: CUgraph, flags: u64, entry: &'static str) -> CUresult {
    with_session(|s| {
        if out.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let graph = graph as usize as u64;
        let exec = new_handle();
        with_state(|st| {
            if !st.graphs.contains(&graph) {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            if st.execs.len() >= GRAPHS_MAX {
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
            st.execs.insert(exec);
            Ok(())
        })?;
        let mut conn = s.conn();
        let call = Call::GraphInstantiate(GraphInstantiate { graph, exec, flags });
        let r = conn
            .sync(&call, |r| {
                matches!(r, Reply::GraphInstantiateReply(_)).then_some(())
            })
            .map_err(|e| to_curesult(entry, &e));
        drop(conn);
        if let Err(e) = r {
            with_state(|st| st.execs.remove(&exec));
            return Err(e);
        }
        write_out(out, exec as usize as CUgraphExec)
    })
}

fn launch(exec: CUgraphExec, h: CUstream, per_thread: bool, entry: &'static str) -> CUresult {
    with_session(|s| {
        let exec = exec as usize as u64;
        if !with_state(|st| st.execs.contains(&exec)) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let key = key_of(h, per_thread)?;
        let mut conn = s.conn();
        conn.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), key)
            .map_err(|e| to_curesult(entry, &e))
    })
}

fn upload(exec: CUgraphExec, h: CUstream, per_thread: bool) -> CUresult {
    with_session(|_| {
        if !with_state(|st| st.execs.contains(&(exec as usize as u64))) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        key_of(h, per_thread).map(|_| ())
    })
}

/// `cuStreamBeginCapture` (10.0 form): global mode.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamBeginCapture", || {
        begin(h_stream, 0, false, "cuStreamBeginCapture")
    })
}

/// `cuStreamBeginCapture_ptsz` (10.0 form).
///
/// # Safety
/// As [`cuStreamBeginCapture`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture_ptsz(h_stream: CUstream) -> CUresult {
    ffi_guard("cuStreamBeginCapture_ptsz", || {
        begin(h_stream, 0, true, "cuStreamBeginCapture_ptsz")
    })
}

/// `cuStreamBeginCapture_v2`: async; the stream's capture state is kept locally.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(h_stream: CUstream, mode: c_uint) -> CUresult {
    ffi_guard("cuStreamBeginCapture_v2", || {
        begin(h_stream, mode, false, "cuStreamBeginCapture_v2")
    })
}

/// `cuStreamBeginCapture_v2_ptsz`.
///
/// # Safety
/// As [`cuStreamBeginCapture_v2`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture_v2_ptsz(
    h_stream: CUstream,
    mode: c_uint,
) -> CUresult {
    ffi_guard("cuStreamBeginCapture_v2_ptsz", || {
        begin(h_stream, mode, true, "cuStreamBeginCapture_v2_ptsz")
    })
}

/// `cuStreamEndCapture`: one round trip; an invalidated capture is
/// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED` and yields no graph.
///
/// # Safety
/// `ph_graph` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(
    h_stream: CUstream,
    ph_graph: *mut CUgraph,
) -> CUresult {
    ffi_guard("cuStreamEndCapture", || {
        end(h_stream, ph_graph, false, "cuStreamEndCapture")
    })
}

/// `cuStreamEndCapture_ptsz`.
///
/// # Safety
/// As [`cuStreamEndCapture`].
#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture_ptsz(
    h_stream: CUstream,
    ph_graph: *mut CUgraph,
) -> CUresult {
    ffi_guard("cuStreamEndCapture_ptsz", || {
        end(h_stream, ph_graph, true, "cuStreamEndCapture_ptsz")
    })
}

/// `cuThreadExchangeStreamCaptureMode`: swaps the calling thread's mode (local). All of a
/// process's threads share one worker, which applies each capture's own mode.
///
/// # Safety
/// `mode` must be null or readable and writable.
#[no_mangle]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut c_uint) -> CUresult {
    ffi_guard("cuThreadExchangeStreamCaptureMode", || {
        if mode.is_null() || !mode.is_aligned() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        // SAFETY: non-null and aligned; the caller passes a readable `CUstreamCaptureMode`.
        let new = unsafe { mode.read() };
        if new > CAPTURE_MODE_RELAXED {
            return CUDA_ERROR_INVALID_VALUE;
        }
        let old = THREAD_MODE.with(|m| m.replace(new));
        match write_out(mode, old) {
            Ok(()) => crate::cuda_types::CUDA_SUCCESS,
            Err(e) => e,
        }
    })
}

/// `cuGraphInstantiate` (10.0 and 11.0 forms): flags 0; no error node or log is written.
///
/// # Safety
/// `ph_exec` must be null or writable; the other pointers are not touched.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiate(
    ph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    _ph_error_node: *mut *mut c_void,
    _log_buffer: *mut c_char,
    _buffer_size: usize,
) -> CUresult {
    ffi_guard("cuGraphInstantiate", || {
        instantiate(ph_exec, h_graph, 0, "cuGraphInstantiate")
    })
}

/// `cuGraphInstantiate_v2`.
///
/// # Safety
/// As [`cuGraphInstantiate`].
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiate_v2(
    ph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    ph_error_node: *mut *mut c_void,
    log_buffer: *mut c_char,
    buffer_size: usize,
) -> CUresult {
    // SAFETY: same contract as this function's.
    unsafe { cuGraphInstantiate(ph_exec, h_graph, ph_error_node, log_buffer, buffer_size) }
}

/// `cuGraphInstantiateWithFlags`: one round trip.
///
/// # Safety
/// `ph_exec` must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    ph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    flags: c_ulonglong,
) -> CUresult {
    ffi_guard("cuGraphInstantiateWithFlags", || {
        instantiate(ph_exec, h_graph, flags, "cuGraphInstantiateWithFlags")
    })
}

/// `CUDA_GRAPH_INSTANTIATE_PARAMS`.
#[repr(C)]
#[derive(Debug)]
pub struct GraphInstantiateParams {
    /// Instantiation flags.
    pub flags: c_ulonglong,
    /// Upload stream (for the upload flag; ignored: nothing to upload ahead).
    pub upload_stream: CUstream,
    /// Out: the node that failed (always null here).
    pub err_node_out: *mut c_void,
    /// Out: a `CUgraphInstantiateResult` (0 success, 1 error).
    pub result_out: c_uint,
}

/// `cuGraphInstantiateWithParams` (and `_ptsz`): the flags, with `result_out` and
/// `hErrNode_out` filled in.
///
/// # Safety
/// `ph_exec` must be null or writable; `params` null or a readable and writable struct.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithParams(
    ph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    params: *mut GraphInstantiateParams,
) -> CUresult {
    ffi_guard("cuGraphInstantiateWithParams", || {
        if params.is_null() || !params.is_aligned() {
            return CUDA_ERROR_INVALID_VALUE;
        }
        // SAFETY: non-null and aligned; the caller passes a valid struct (driver contract).
        let flags = unsafe { (*params).flags };
        let r = instantiate(ph_exec, h_graph, flags, "cuGraphInstantiateWithParams");
        // SAFETY: as above; an out field of the caller's struct.
        unsafe { (*params).err_node_out = std::ptr::null_mut() };
        let failed = c_uint::from(r != crate::cuda_types::CUDA_SUCCESS);
        // SAFETY: as above; an out field of the caller's struct.
        unsafe { (*params).result_out = failed };
        r
    })
}

/// `cuGraphInstantiateWithParams_ptsz`.
///
/// # Safety
/// As [`cuGraphInstantiateWithParams`].
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithParams_ptsz(
    ph_exec: *mut CUgraphExec,
    h_graph: CUgraph,
    params: *mut GraphInstantiateParams,
) -> CUresult {
    // SAFETY: same contract as this function's.
    unsafe { cuGraphInstantiateWithParams(ph_exec, h_graph, params) }
}

/// `cuGraphLaunch`: async, charged by the worker's compute share like a kernel launch.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch(h_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    ffi_guard("cuGraphLaunch", || {
        launch(h_exec, h_stream, false, "cuGraphLaunch")
    })
}

/// `cuGraphLaunch_ptsz`.
///
/// # Safety
/// As [`cuGraphLaunch`].
#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch_ptsz(h_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    ffi_guard("cuGraphLaunch_ptsz", || {
        launch(h_exec, h_stream, true, "cuGraphLaunch_ptsz")
    })
}

/// `cuGraphUpload`: validates its handles; nothing to upload ahead (the worker prepares a graph
/// at its first launch).
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuGraphUpload(h_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    ffi_guard("cuGraphUpload", || upload(h_exec, h_stream, false))
}

/// `cuGraphUpload_ptsz`.
///
/// # Safety
/// As [`cuGraphUpload`].
#[no_mangle]
pub unsafe extern "C" fn cuGraphUpload_ptsz(h_exec: CUgraphExec, h_stream: CUstream) -> CUresult {
    ffi_guard("cuGraphUpload_ptsz", || upload(h_exec, h_stream, true))
}

/// `cuGraphExecDestroy`: async.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuGraphExecDestroy(h_exec: CUgraphExec) -> CUresult {
    ffi_guard("cuGraphExecDestroy", || {
        with_session(|s| {
            let exec = h_exec as usize as u64;
            if !with_state(|st| st.execs.remove(&exec)) {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            let mut conn = s.conn();
            conn.submit_async(
                &Call::GraphExecDestroy(GraphExecDestroy { exec }),
                LEGACY_KEY,
            )
            .map_err(|e| to_curesult("cuGraphExecDestroy", &e))
        })
    })
}

/// `cuGraphDestroy`: async; executable graphs made from it stay valid.
///
/// # Safety
/// No pointer is dereferenced; `unsafe` only because it is a C entry point.
#[no_mangle]
pub unsafe extern "C" fn cuGraphDestroy(h_graph: CUgraph) -> CUresult {
    ffi_guard("cuGraphDestroy", || {
        with_session(|s| {
            let graph = h_graph as usize as u64;
            if !with_state(|st| st.graphs.remove(&graph)) {
                return Err(CUDA_ERROR_INVALID_HANDLE);
            }
            let mut conn = s.conn();
            conn.submit_async(&Call::GraphDestroy(GraphDestroy { graph }), LEGACY_KEY)
                .map_err(|e| to_curesult("cuGraphDestroy", &e))
        })
    })
}

/// The shim's function for a legacy-stream row, if this module has it.
pub(super) fn implemented(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamBeginCapture", 10000) => cuStreamBeginCapture as *const c_void,
        ("cuStreamBeginCapture", 10010) => cuStreamBeginCapture_v2 as *const c_void,
        ("cuStreamEndCapture", 10000) => cuStreamEndCapture as *const c_void,
        ("cuThreadExchangeStreamCaptureMode", 10010) => {
            cuThreadExchangeStreamCaptureMode as *const c_void
        }
        ("cuGraphInstantiate", 10000) => cuGraphInstantiate as *const c_void,
        ("cuGraphInstantiate", 11000) => cuGraphInstantiate_v2 as *const c_void,
        ("cuGraphInstantiateWithFlags", 11040) => cuGraphInstantiateWithFlags as *const c_void,
        ("cuGraphInstantiateWithParams", 12000) => cuGraphInstantiateWithParams as *const c_void,
        ("cuGraphLaunch", 10000) => cuGraphLaunch as *const c_void,
        ("cuGraphUpload", 11010) => cuGraphUpload as *const c_void,
        ("cuGraphExecDestroy", 10000) => cuGraphExecDestroy as *const c_void,
        ("cuGraphDestroy", 10000) => cuGraphDestroy as *const c_void,
        _ => return None,
    })
}

/// The shim's function for a per-thread-default-stream row, if this module has it.
pub(super) fn implemented_per_thread(name: &str, version: u32) -> Option<*const c_void> {
    Some(match (name, version) {
        ("cuStreamBeginCapture", 10000) => cuStreamBeginCapture_ptsz as *const c_void,
        ("cuStreamBeginCapture", 10010) => cuStreamBeginCapture_v2_ptsz as *const c_void,
        ("cuStreamEndCapture", 10000) => cuStreamEndCapture_ptsz as *const c_void,
        ("cuGraphInstantiateWithParams", 12000) => {
            cuGraphInstantiateWithParams_ptsz as *const c_void
        }
        ("cuGraphLaunch", 10000) => cuGraphLaunch_ptsz as *const c_void,
        ("cuGraphUpload", 11010) => cuGraphUpload_ptsz as *const c_void,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_before_init() {
        let mut g: CUgraph = std::ptr::null_mut();
        // SAFETY: valid pointers.
        let r = unsafe { cuStreamEndCapture(std::ptr::null_mut(), &mut g) };
        assert_eq!(r, crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
        assert!(g.is_null(), "nothing written");
    }

    #[test]
    fn thread_mode_is_exchanged_and_checked() {
        let mut m: c_uint = 2;
        // SAFETY: a valid pointer.
        assert_eq!(unsafe { cuThreadExchangeStreamCaptureMode(&mut m) }, 0);
        assert_eq!(m, 0, "the old (global) mode comes back");
        let mut bad: c_uint = 7;
        // SAFETY: a valid pointer.
        let r = unsafe { cuThreadExchangeStreamCaptureMode(&mut bad) };
        assert_eq!(r, CUDA_ERROR_INVALID_VALUE);
        let mut back: c_uint = 0;
        // SAFETY: a valid pointer.
        assert_eq!(unsafe { cuThreadExchangeStreamCaptureMode(&mut back) }, 0);
        assert_eq!(back, 2, "the mode set first is still the thread's");
    }

    #[test]
    fn every_row_is_mapped() {
        for (n, v) in [
            ("cuStreamBeginCapture", 10000),
            ("cuStreamBeginCapture", 10010),
            ("cuStreamEndCapture", 10000),
            ("cuGraphInstantiate", 11000),
            ("cuGraphInstantiateWithFlags", 11040),
            ("cuGraphLaunch", 10000),
            ("cuGraphDestroy", 10000),
        ] {
            assert!(implemented(n, v).is_some(), "{n} {v}");
        }
        assert!(implemented_per_thread("cuGraphLaunch", 10000).is_some());
        assert!(implemented("cuGraphAddKernelNode", 10000).is_none());
    }
}
