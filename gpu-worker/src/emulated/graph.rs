//! Stream capture and graphs on the emulated device.
//!
//! Exists so the stream-capture path (`cuStreamBeginCapture` … `cuGraphLaunch`)
//! runs in CI. While a stream captures, stream-ordered work on it is recorded
//! as [`Node`]s instead of executing; `end` turns the recording into a graph,
//! `instantiate` into an executable graph, and a launch replays the nodes in
//! recorded order on the launch stream (the backend does the replay, this
//! module keeps the tables). Everything is bounded: [`GRAPH_NODES_MAX`] nodes
//! and [`GRAPH_BYTES_MAX`] copied-in bytes per capture, [`GRAPHS_MAX`] graphs
//! and executable graphs per context.
//!
//! CUDA's capture rules modelled (codes from `cuda.h`): a synchronous
//! ("potentially unsafe") call while a global or thread-local capture is
//! under way fails with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` (900) and
//! invalidates the captures, whose end then fails with
//! `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED` (901); relaxed captures are left
//! alone. All of a client's threads share one worker thread, so
//! thread-local mode is treated like global. Limits (documented in
//! `docs/worker.md`, "Graphs"): host-to-device copies snapshot their bytes
//! at capture time (CUDA reads host memory at launch time); device-to-host
//! copies, stream-ordered allocations and cross-stream forks (a stream
//! waiting on an event recorded in another stream's capture) are refused
//! with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` and invalidate the capture.

use std::collections::HashMap;
use std::sync::Arc;

use rgpu_proto::{CudaError, DevicePtr, FunctionHandle, MemsetWidth, StreamHandle};

use super::handles::HandleTable;
use crate::backend::LaunchDims;

/// Most nodes one capture (hence one graph) may record.
pub const GRAPH_NODES_MAX: usize = 4096;
/// Most host bytes one capture may copy in (host-to-device payloads, kernel
/// parameters), in bytes.
pub const GRAPH_BYTES_MAX: u64 = 64 << 20;
/// Most graphs, and separately most executable graphs, live in one context.
pub const GRAPHS_MAX: usize = 1024;

/// `CU_STREAM_CAPTURE_MODE_RELAXED`; 0 (global) and 1 (thread local) are
/// the other modes.
pub const CAPTURE_MODE_RELAXED: u32 = 2;
/// `cuGraphInstantiate` flags honoured: auto-free-on-launch (1, nothing to
/// free here: no allocation nodes), upload (2, nothing to upload) and
/// use-node-priority (8, work is serialised anyway). Device launch (4) is
/// `CUDA_ERROR_NOT_SUPPORTED`.
const INSTANTIATE_FLAGS_KNOWN: u64 = 0x1 | 0x2 | 0x8;
const INSTANTIATE_FLAG_DEVICE_LAUNCH: u64 = 0x4;

/// One recorded stream-ordered operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `cuMemsetD*Async`.
    Memset {
        /// Destination.
        dst: DevicePtr,
        /// Element width.
        width: MemsetWidth,
        /// Value (low bits per width).
        value: u32,
        /// Elements.
        count: u64,
    },
    /// `cuMemcpyHtoDAsync`, bytes copied in at capture time.
    Htod {
        /// Destination.
        dst: DevicePtr,
        /// The source bytes as they were at capture time.
        bytes: Box<[u8]>,
    },
    /// `cuMemcpyDtoDAsync`.
    Dtod {
        /// Destination.
        dst: DevicePtr,
        /// Source.
        src: DevicePtr,
        /// Bytes.
        len: u64,
    },
    /// `cuLaunchKernel` (attributes were checked at capture).
    Launch {
        /// The function.
        function: FunctionHandle,
        /// Geometry.
        dims: LaunchDims,
        /// Packed parameters, copied at capture time.
        params: Box<[u8]>,
    },
}

impl Node {
    /// Host bytes the node holds (charged against [`GRAPH_BYTES_MAX`]).
    fn bytes(&self) -> u64 {
        match self {
            Node::Htod { bytes, .. } => bytes.len() as u64,
            Node::Launch { params, .. } => params.len() as u64,
            Node::Memset { .. } | Node::Dtod { .. } => 0,
        }
    }
}

/// A capture under way on one stream.
#[derive(Debug)]
struct Capture {
    mode: u32,
    nodes: Vec<Node>,
    bytes: u64,
    invalidated: bool,
}

/// One context's captures, graphs and executable graphs.
#[derive(Debug)]
pub struct Graphs {
    /// Backend stream handle → its capture.
    captures: HashMap<u64, Capture>,
    /// Events recorded inside a capture → the capturing stream.
    captured_events: HashMap<u64, u64>,
    graphs: HandleTable<Arc<[Node]>>,
    execs: HandleTable<Arc<[Node]>>,
}

impl Default for Graphs {
    fn default() -> Self {
        Self {
            captures: HashMap::new(),
            captured_events: HashMap::new(),
            graphs: HandleTable::new(GRAPHS_MAX),
            execs: HandleTable::new(GRAPHS_MAX),
        }
    }
}

impl Graphs {
    /// Starts capturing on `stream` (already checked to exist).
    ///
    /// # Errors
    /// `STREAM_CAPTURE_UNSUPPORTED` for the legacy stream (0, 1),
    /// `ILLEGAL_STATE` if `stream` captures, `INVALID_VALUE` for a bad mode.
    pub fn begin(&mut self, stream: StreamHandle, mode: u32) -> Result<(), CudaError> {
        if mode > CAPTURE_MODE_RELAXED {
            return Err(CudaError::INVALID_VALUE);
        }
        if stream.0 <= 1 {
            return Err(CudaError::STREAM_CAPTURE_UNSUPPORTED);
        }
        if self.captures.contains_key(&stream.0) {
            return Err(CudaError::ILLEGAL_STATE);
        }
        self.captures.insert(
            stream.0,
            Capture {
                mode,
                nodes: Vec::new(),
                bytes: 0,
                invalidated: false,
            },
        );
        Ok(())
    }

    /// Whether `stream` is capturing.
    #[must_use]
    pub fn capturing(&self, stream: StreamHandle) -> bool {
        self.captures.contains_key(&stream.0)
    }

    /// Checks a synchronous call: while a global or thread-local capture
    /// is under way it is refused and those captures are invalidated.
    ///
    /// # Errors
    /// `STREAM_CAPTURE_UNSUPPORTED` as described.
    pub fn check_sync(&mut self) -> Result<(), CudaError> {
        let mut refused = false;
        for c in self
            .captures
            .values_mut()
            .filter(|c| c.mode != CAPTURE_MODE_RELAXED)
        {
            c.invalidated = true;
            refused = true;
        }
        if refused {
            Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
        } else {
            Ok(())
        }
    }

    /// Refuses an operation on capturing `stream` that cannot be captured
    /// here, invalidating the capture; `Ok` when `stream` is not capturing.
    ///
    /// # Errors
    /// `STREAM_CAPTURE_UNSUPPORTED` as described.
    pub fn refuse_on(&mut self, stream: StreamHandle) -> Result<(), CudaError> {
        match self.captures.get_mut(&stream.0) {
            Some(c) => {
                c.invalidated = true;
                Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
            }
            None => Ok(()),
        }
    }

    /// Records `node` into `stream`'s capture. `None` when `stream` is not
    /// capturing (the caller executes the operation).
    pub fn record(
        &mut self,
        stream: StreamHandle,
        node: impl FnOnce() -> Node,
    ) -> Option<Result<(), CudaError>> {
        let c = self.captures.get_mut(&stream.0)?;
        if c.invalidated {
            return Some(Err(CudaError::STREAM_CAPTURE_INVALIDATED));
        }
        let node = node();
        let bytes = c.bytes.saturating_add(node.bytes());
        if c.nodes.len() >= GRAPH_NODES_MAX || bytes > GRAPH_BYTES_MAX {
            tracing::info!(
                nodes = c.nodes.len(),
                bytes,
                "graph capture exceeds the emulated device's bounds; capture invalidated"
            );
            c.invalidated = true;
            return Some(Err(CudaError::OUT_OF_MEMORY));
        }
        c.bytes = bytes;
        c.nodes.push(node);
        Some(Ok(()))
    }

    /// An event recorded on `stream`: inside a capture it only marks a
    /// point of the graph (CUDA records no event at launch). `true` when
    /// it was captured.
    pub fn record_event(&mut self, event: u64, stream: StreamHandle) -> bool {
        if self.captures.contains_key(&stream.0) {
            self.captured_events.insert(event, stream.0);
            true
        } else {
            self.captured_events.remove(&event);
            false
        }
    }

    /// `stream` waits on `event`: within the capture that recorded it, a
    /// no-op dependency (`Ok(true)`); a non-capturing stream joining
    /// another stream's capture is not modelled (refused, that capture
    /// invalidated); otherwise `Ok(false)`: execute as usual.
    ///
    /// # Errors
    /// `STREAM_CAPTURE_UNSUPPORTED` as described.
    pub fn wait_event(&mut self, stream: StreamHandle, event: u64) -> Result<bool, CudaError> {
        match self.captured_events.get(&event).copied() {
            Some(origin) if self.captures.contains_key(&origin) => {
                if origin == stream.0 {
                    return Ok(true);
                }
                self.refuse_on(StreamHandle(origin))?;
                Ok(false)
            }
            _ => Ok(self.capturing(stream)),
        }
    }

    /// Ends `stream`'s capture: a graph handle.
    ///
    /// # Errors
    /// `ILLEGAL_STATE` when not capturing, `STREAM_CAPTURE_INVALIDATED`
    /// for an invalidated capture, `OUT_OF_MEMORY` at [`GRAPHS_MAX`].
    pub fn end(&mut self, stream: StreamHandle) -> Result<u64, CudaError> {
        let c = self
            .captures
            .remove(&stream.0)
            .ok_or(CudaError::ILLEGAL_STATE)?;
        self.captured_events.retain(|_, s| *s != stream.0);
        if c.invalidated {
            return Err(CudaError::STREAM_CAPTURE_INVALIDATED);
        }
        self.graphs.insert(c.nodes.into())
    }

    /// `cuGraphInstantiateWithFlags`.
    ///
    /// # Errors
    /// `INVALID_HANDLE`, `INVALID_VALUE` (unknown flags), `NOT_SUPPORTED`
    /// (device launch), `OUT_OF_MEMORY` at [`GRAPHS_MAX`].
    pub fn instantiate(&mut self, graph: u64, flags: u64) -> Result<u64, CudaError> {
        let nodes = Arc::clone(self.graphs.get(graph)?);
        if flags & INSTANTIATE_FLAG_DEVICE_LAUNCH != 0 {
            return Err(CudaError::NOT_SUPPORTED);
        }
        if flags & !INSTANTIATE_FLAGS_KNOWN != 0 {
            return Err(CudaError::INVALID_VALUE);
        }
        self.execs.insert(nodes)
    }

    /// The nodes of executable graph `exec`, for replay.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown handle.
    pub fn exec(&self, exec: u64) -> Result<Arc<[Node]>, CudaError> {
        self.execs.get(exec).map(Arc::clone)
    }

    /// `cuGraphExecDestroy`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown handle.
    pub fn destroy_exec(&mut self, exec: u64) -> Result<(), CudaError> {
        self.execs.remove(exec).map(|_| ())
    }

    /// `cuGraphDestroy`.
    ///
    /// # Errors
    /// `INVALID_HANDLE` for an unknown handle.
    pub fn destroy_graph(&mut self, graph: u64) -> Result<(), CudaError> {
        self.graphs.remove(graph).map(|_| ())
    }

    /// A stream was destroyed: its capture (if any) ends, discarded.
    pub fn stream_gone(&mut self, stream: StreamHandle) {
        if self.captures.remove(&stream.0).is_some() {
            self.captured_events.retain(|_, s| *s != stream.0);
        }
    }

    /// Forgets everything (the session ended).
    pub fn clear(&mut self) {
        self.captures.clear();
        self.captured_events.clear();
        self.graphs.clear();
        self.execs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memset(v: u32) -> Node {
        Node::Memset {
            dst: DevicePtr(0x1000),
            width: MemsetWidth::D8,
            value: v,
            count: 4,
        }
    }

    #[test]
    fn records_in_order_and_ends_into_a_graph() {
        let mut g = Graphs::default();
        let s = StreamHandle(0x77);
        assert_eq!(g.record(s, || memset(1)), None, "not capturing: execute");
        g.begin(s, 0).unwrap();
        assert_eq!(g.begin(s, 0), Err(CudaError::ILLEGAL_STATE));
        assert_eq!(g.record(s, || memset(1)), Some(Ok(())));
        assert_eq!(g.record(s, || memset(2)), Some(Ok(())));
        let graph = g.end(s).unwrap();
        assert!(!g.capturing(s));
        let exec = g.instantiate(graph, 0).unwrap();
        assert_eq!(&*g.exec(exec).unwrap(), &[memset(1), memset(2)]);
        g.destroy_graph(graph).unwrap();
        assert_eq!(
            g.exec(exec).unwrap().len(),
            2,
            "the exec outlives its graph"
        );
        g.destroy_exec(exec).unwrap();
        assert_eq!(g.exec(exec), Err(CudaError::INVALID_HANDLE));
        assert_eq!(g.end(s), Err(CudaError::ILLEGAL_STATE));
    }

    #[test]
    fn sync_call_invalidates_global_but_not_relaxed() {
        let mut g = Graphs::default();
        let (a, b) = (StreamHandle(0x10), StreamHandle(0x11));
        g.begin(a, 0).unwrap();
        g.begin(b, CAPTURE_MODE_RELAXED).unwrap();
        assert_eq!(g.check_sync(), Err(CudaError::STREAM_CAPTURE_UNSUPPORTED));
        assert_eq!(
            g.record(a, || memset(0)),
            Some(Err(CudaError::STREAM_CAPTURE_INVALIDATED))
        );
        assert_eq!(g.end(a), Err(CudaError::STREAM_CAPTURE_INVALIDATED));
        assert!(g.end(b).is_ok(), "a relaxed capture survives");
        assert_eq!(g.check_sync(), Ok(()), "no capture left");
    }

    #[test]
    fn legacy_stream_bad_mode_and_flags_refused() {
        let mut g = Graphs::default();
        assert_eq!(
            g.begin(StreamHandle(0), 0),
            Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
        );
        assert_eq!(g.begin(StreamHandle(9), 3), Err(CudaError::INVALID_VALUE));
        g.begin(StreamHandle(9), 0).unwrap();
        let graph = g.end(StreamHandle(9)).unwrap();
        assert_eq!(g.instantiate(graph, 4), Err(CudaError::NOT_SUPPORTED));
        assert_eq!(g.instantiate(graph, 0x40), Err(CudaError::INVALID_VALUE));
        assert_eq!(g.instantiate(graph + 1, 0), Err(CudaError::INVALID_HANDLE));
    }

    #[test]
    fn node_bound_invalidates() {
        let mut g = Graphs::default();
        let s = StreamHandle(0x20);
        g.begin(s, 0).unwrap();
        for _ in 0..GRAPH_NODES_MAX {
            assert_eq!(g.record(s, || memset(0)), Some(Ok(())));
        }
        assert_eq!(
            g.record(s, || memset(0)),
            Some(Err(CudaError::OUT_OF_MEMORY))
        );
        assert_eq!(g.end(s), Err(CudaError::STREAM_CAPTURE_INVALIDATED));
    }

    #[test]
    fn byte_bound_invalidates() {
        let mut g = Graphs::default();
        let s = StreamHandle(0x21);
        g.begin(s, 0).unwrap();
        let big = || Node::Htod {
            dst: DevicePtr(0x1000),
            bytes: vec![0; (GRAPH_BYTES_MAX / 2) as usize + 1].into(),
        };
        assert_eq!(g.record(s, big), Some(Ok(())));
        assert_eq!(g.record(s, big), Some(Err(CudaError::OUT_OF_MEMORY)));
    }

    #[test]
    fn events_join_only_their_own_capture() {
        let mut g = Graphs::default();
        let (a, other) = (StreamHandle(0x30), StreamHandle(0x31));
        g.begin(a, 0).unwrap();
        assert!(g.record_event(5, a));
        assert_eq!(g.wait_event(a, 5), Ok(true));
        assert_eq!(
            g.wait_event(other, 5),
            Err(CudaError::STREAM_CAPTURE_UNSUPPORTED),
            "a fork into another stream is not modelled"
        );
        assert_eq!(g.end(a), Err(CudaError::STREAM_CAPTURE_INVALIDATED));
        assert_eq!(
            g.wait_event(other, 5),
            Ok(false),
            "capture over: plain wait"
        );
    }
}
