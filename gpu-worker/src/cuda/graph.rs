//! Stream capture and graphs on a real GPU: the driver's own capture.
//!
//! Exists so the `cuda` backend serves `cuStreamBeginCapture` …
//! `cuGraphLaunch`. The worker replays the client's calls on its own stream,
//! in the client's order, so capturing that stream with
//! `cuStreamBeginCapture_v2` records exactly what the client enqueued, and
//! `cuStreamEndCapture` / `cuGraphInstantiateWithFlags` / `cuGraphLaunch`
//! act on the driver's graph. This module keeps the unsafe FFI wrappers and
//! the session's bounded graph tables ([`Table`]); the backend times graph
//! launches with its event pairs, except on a capturing stream (a recorded
//! event would be captured and could not be queried).
//!
//! Not run on a GPU yet (none was available while writing it); the
//! emulated backend's graphs are what CI covers.

use std::collections::HashSet;
use std::sync::OnceLock;

use cudarc::driver::sys;
use rgpu_proto::CudaError;

use super::tables::Table;

/// Driver entry points graphs need (CUDA ≥ 11.4 for the instantiate form).
const GRAPH_SYMBOLS: [&str; 6] = [
    "cuStreamBeginCapture_v2",
    "cuStreamEndCapture",
    "cuGraphInstantiateWithFlags",
    "cuGraphLaunch",
    "cuGraphExecDestroy",
    "cuGraphDestroy",
];

/// Whether the loaded driver has every [`GRAPH_SYMBOLS`] entry (cudarc
/// would panic on a missing one); probed once.
fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: the driver is already loaded by `loader::driver` (the
        // backend exists), so this only takes another reference to it;
        // symbols are looked up as opaque pointers, never called here.
        let Ok(lib) = (unsafe { libloading::Library::new(super::loader::DRIVER_LIBRARY) }) else {
            return false;
        };
        GRAPH_SYMBOLS.iter().all(|s| {
            // SAFETY: as above: a lookup only.
            unsafe { lib.get::<*const std::ffi::c_void>(s.as_bytes()) }.is_ok()
        })
    })
}

/// Whether a host copy of `[addr, addr + len)` on a capturing stream may be
/// captured: only when the bytes lie in the client's registered arena (its
/// pinned memory, alive for the session), because a captured copy node keeps
/// the host address and reads or writes it at every launch. Bytes anywhere
/// else (an inline payload in a frame buffer the worker reuses) would leave
/// the graph pointing at stale memory, so such a copy is refused with
/// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
#[must_use]
pub fn host_capturable(arena: Option<crate::session::HostSpan>, addr: usize, len: usize) -> bool {
    arena.is_some_and(|a| {
        addr >= a.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= a.addr + a.len)
    })
}

fn check(r: sys::CUresult) -> Result<(), CudaError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(CudaError(r as u32))
    }
}

/// One session's graphs and executable graphs, and its capturing streams.
#[derive(Debug, Default)]
pub struct Graphs {
    graphs: Table<usize>,
    execs: Table<usize>,
    /// Raw streams (driver handles as addresses) with a capture under way (begun here, not yet ended).
    capturing: HashSet<usize>,
}

impl Graphs {
    /// Whether raw stream `s` is capturing (begun through this table).
    #[must_use]
    pub fn capturing(&self, s: usize) -> bool {
        self.capturing.contains(&s)
    }

    /// `cuStreamBeginCapture_v2` on `s` (a live stream of the session,
    /// context current).
    ///
    /// # Errors
    /// `NOT_SUPPORTED` on a driver without graphs, `INVALID_VALUE` for an
    /// unknown mode, or the driver's refusal.
    pub fn begin(&mut self, s: usize, mode: u32) -> Result<(), CudaError> {
        if !available() {
            return Err(CudaError::NOT_SUPPORTED);
        }
        let mode = match mode {
            0 => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL,
            1 => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            2 => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            _ => return Err(CudaError::INVALID_VALUE),
        };
        // SAFETY: `s` is a live stream of this session (or a built-in
        // value the driver itself refuses); the context is current.
        check(unsafe { sys::cuStreamBeginCapture_v2(s as sys::CUstream, mode) })?;
        self.capturing.insert(s);
        Ok(())
    }

    /// `cuStreamEndCapture` on `s`: a graph handle of this session.
    ///
    /// # Errors
    /// `NOT_SUPPORTED` without graphs; the driver's refusal (e.g. 901 for
    /// an invalidated capture: it ends with no graph); `OUT_OF_MEMORY`
    /// when the table is full (the graph is destroyed).
    pub fn end(&mut self, s: usize) -> Result<u64, CudaError> {
        if !available() {
            return Err(CudaError::NOT_SUPPORTED);
        }
        let mut g: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: `s` is live; `g` is a valid out pointer.
        let r = check(unsafe { sys::cuStreamEndCapture(s as sys::CUstream, &mut g) });
        self.capturing.remove(&s);
        r?;
        if g.is_null() {
            return Err(CudaError::STREAM_CAPTURE_INVALIDATED);
        }
        self.graphs.insert(g as usize).inspect_err(|_| {
            // SAFETY: `g` was just created and is referenced nowhere else.
            let _ = check(unsafe { sys::cuGraphDestroy(g) });
        })
    }

    /// `cuGraphInstantiateWithFlags` of graph `graph`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown graph, the driver's refusal,
    /// `OUT_OF_MEMORY` when the table is full.
    pub fn instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        let g = *self.graphs.get(graph)? as sys::CUgraph;
        if !self.execs.has_room() {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        let mut e: sys::CUgraphExec = std::ptr::null_mut();
        // SAFETY: `g` is a live graph of this session; `e` a valid out pointer.
        check(unsafe { sys::cuGraphInstantiateWithFlags(&mut e, g, flags) })?;
        self.execs.insert(e as usize)
    }

    /// `cuGraphLaunch` of `exec` on `s`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown exec, the driver's refusal.
    pub fn launch(&self, exec: u64, s: usize) -> Result<(), CudaError> {
        let e = *self.execs.get(exec)? as sys::CUgraphExec;
        // SAFETY: `e` is a live executable graph of this session, `s` a
        // live stream; the context is current.
        check(unsafe { sys::cuGraphLaunch(e, s as sys::CUstream) })
    }

    /// Checks `exec` names a live executable graph.
    ///
    /// # Errors
    /// `INVALID_HANDLE` otherwise.
    pub fn check_exec(&self, exec: u64) -> Result<(), CudaError> {
        self.execs.get(exec).map(|_| ())
    }

    /// `cuGraphExecDestroy`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown handle, the driver's refusal.
    pub fn destroy_exec(&mut self, exec: u64) -> Result<(), CudaError> {
        let e = self.execs.remove(exec)? as sys::CUgraphExec;
        // SAFETY: removed from the table, so destroyed exactly once.
        check(unsafe { sys::cuGraphExecDestroy(e) })
    }

    /// `cuGraphDestroy`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown handle, the driver's refusal.
    pub fn destroy_graph(&mut self, graph: u64) -> Result<(), CudaError> {
        let g = self.graphs.remove(graph)? as sys::CUgraph;
        // SAFETY: removed from the table, so destroyed exactly once.
        check(unsafe { sys::cuGraphDestroy(g) })
    }

    /// Forgets a destroyed stream's capture.
    pub fn stream_gone(&mut self, s: usize) {
        self.capturing.remove(&s);
    }

    /// Destroys everything (session teardown, context current): ends the
    /// captures still under way, then executable graphs and graphs.
    /// Returns how many objects were destroyed.
    pub fn release(&mut self) -> u64 {
        let mut n = 0;
        for s in self.capturing.drain() {
            let mut g: sys::CUgraph = std::ptr::null_mut();
            // SAFETY: `s` was capturing and its stream is still live (the
            // backend releases graphs before streams); `g` an out pointer.
            if check(unsafe { sys::cuStreamEndCapture(s as sys::CUstream, &mut g) }).is_ok()
                && !g.is_null()
            {
                // SAFETY: just created, referenced nowhere else.
                let _ = check(unsafe { sys::cuGraphDestroy(g) });
            }
        }
        for e in self.execs.drain() {
            // SAFETY: drained from the table, destroyed once.
            let _ = check(unsafe { sys::cuGraphExecDestroy(e as sys::CUgraphExec) });
            n += 1;
        }
        for g in self.graphs.drain() {
            // SAFETY: drained from the table, destroyed once.
            let _ = check(unsafe { sys::cuGraphDestroy(g as sys::CUgraph) });
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::HostSpan;

    #[test]
    fn only_arena_bytes_are_capturable() {
        let arena = Some(HostSpan {
            addr: 0x10_000,
            len: 0x1_000,
        });
        assert!(host_capturable(arena, 0x10_000, 0x1_000));
        assert!(host_capturable(arena, 0x10_800, 0x10));
        assert!(!host_capturable(arena, 0x10_ff8, 0x10), "runs past the end");
        assert!(!host_capturable(arena, 0xf_000, 0x10), "before the arena");
        assert!(!host_capturable(arena, usize::MAX, 2), "overflow");
        assert!(!host_capturable(None, 0x10_000, 1), "no arena registered");
    }
}
