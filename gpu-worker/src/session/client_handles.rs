//! Client-chosen stream and event handles, mapped to the backend's own.
//!
//! Exists so that creating a stream or an event costs the client no round
//! trip: the shim picks the handle and sends `StreamCreate`/`EventCreate` as
//! async calls carrying it; this per-session table maps each client handle to
//! what the backend issued. A duplicate or unknown client handle is
//! `CUDA_ERROR_INVALID_HANDLE`, which the executor reports as the deferred
//! error of the async call. The table dies with the session's executor; the
//! backend objects behind it are freed by `Backend::release_all`.

use std::collections::HashMap;

use rgpu_proto::{CudaError, EventHandle, StreamHandle};

/// Stream keys that name built-in streams and pass through unmapped: 0 (the
/// legacy default stream), 1 (`CU_STREAM_LEGACY`), 2 (`CU_STREAM_PER_THREAD`
/// of the worker's thread). A client cannot create a stream with these.
pub const BUILTIN_STREAM_KEYS: [u64; 3] = [0, 1, 2];

/// Most client streams mapped at once in one session.
pub const CLIENT_STREAMS_MAX: usize = 1 << 16;
/// Most client events mapped at once in one session.
pub const CLIENT_EVENTS_MAX: usize = 1 << 20;

/// Most client graphs (captured, not instantiated) mapped at once in one session.
pub const CLIENT_GRAPHS_MAX: usize = 1 << 14;
/// Most client executable graphs mapped at once in one session.
pub const CLIENT_GRAPH_EXECS_MAX: usize = 1 << 14;

/// One session's client-handle → backend-handle maps.
#[derive(Debug, Default)]
pub struct ClientHandles {
    streams: HashMap<u64, StreamHandle>,
    events: HashMap<u64, EventHandle>,
    /// Graphs (`StreamEndCapture`) and executable graphs (`GraphInstantiate`).
    graphs: GraphMap,
    execs: GraphMap,
}

/// Client graph (or executable graph) handle → the backend's, bounded.
#[derive(Debug, Default)]
pub struct GraphMap(HashMap<u64, u64>);

impl GraphMap {
    /// The backend handle behind client handle `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn get(&self, h: u64) -> Result<u64, CudaError> {
        self.0.get(&h).copied().ok_or(CudaError::INVALID_HANDLE)
    }

    /// Checks that client handle `h` is free, with room for `max` in all.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for zero or a live handle,
    /// [`CudaError::OUT_OF_MEMORY`] when `max` are live.
    pub fn check_new(&self, h: u64, max: usize) -> Result<(), CudaError> {
        if h == 0 || self.0.contains_key(&h) {
            return Err(CudaError::INVALID_HANDLE);
        }
        if self.0.len() >= max {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        Ok(())
    }

    /// Maps `h` to `backend` (after [`GraphMap::check_new`] passed).
    pub fn insert(&mut self, h: u64, backend: u64) {
        assert!(h != 0 && !self.0.contains_key(&h), "checked by the caller");
        self.0.insert(h, backend);
    }

    /// Forgets `h`, returning its backend handle.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown handle.
    pub fn remove(&mut self, h: u64) -> Result<u64, CudaError> {
        self.0.remove(&h).ok_or(CudaError::INVALID_HANDLE)
    }
}

impl ClientHandles {
    /// The backend stream behind client stream key `key`; built-ins map to
    /// themselves.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for a key this session never created
    /// (or destroyed).
    pub fn stream(&self, key: StreamHandle) -> Result<StreamHandle, CudaError> {
        if BUILTIN_STREAM_KEYS.contains(&key.0) {
            return Ok(key);
        }
        self.streams
            .get(&key.0)
            .copied()
            .ok_or(CudaError::INVALID_HANDLE)
    }

    /// The backend event behind client event `h`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown event.
    pub fn event(&self, h: EventHandle) -> Result<EventHandle, CudaError> {
        self.events
            .get(&h.0)
            .copied()
            .ok_or(CudaError::INVALID_HANDLE)
    }

    /// Checks that client stream `key` is free to be created.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for a built-in or live key,
    /// [`CudaError::OUT_OF_MEMORY`] when [`CLIENT_STREAMS_MAX`] are live.
    pub fn check_new_stream(&self, key: StreamHandle) -> Result<(), CudaError> {
        if BUILTIN_STREAM_KEYS.contains(&key.0) || self.streams.contains_key(&key.0) {
            return Err(CudaError::INVALID_HANDLE);
        }
        if self.streams.len() >= CLIENT_STREAMS_MAX {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        Ok(())
    }

    /// Records that client stream `key` is backend stream `backend`
    /// (after [`ClientHandles::check_new_stream`] passed).
    pub fn insert_stream(&mut self, key: StreamHandle, backend: StreamHandle) {
        assert!(self.check_new_stream(key).is_ok(), "checked by the caller");
        self.streams.insert(key.0, backend);
    }

    /// Forgets client stream `key`, returning its backend stream.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for a built-in or unknown key.
    pub fn remove_stream(&mut self, key: StreamHandle) -> Result<StreamHandle, CudaError> {
        self.streams.remove(&key.0).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Checks that client event `h` is free to be created.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for a live (or zero) handle,
    /// [`CudaError::OUT_OF_MEMORY`] when [`CLIENT_EVENTS_MAX`] are live.
    pub fn check_new_event(&self, h: EventHandle) -> Result<(), CudaError> {
        if h.0 == 0 || self.events.contains_key(&h.0) {
            return Err(CudaError::INVALID_HANDLE);
        }
        if self.events.len() >= CLIENT_EVENTS_MAX {
            return Err(CudaError::OUT_OF_MEMORY);
        }
        Ok(())
    }

    /// Records that client event `h` is backend event `backend` (after
    /// [`ClientHandles::check_new_event`] passed).
    pub fn insert_event(&mut self, h: EventHandle, backend: EventHandle) {
        assert!(self.check_new_event(h).is_ok(), "checked by the caller");
        self.events.insert(h.0, backend);
    }

    /// Forgets client event `h`, returning its backend event.
    ///
    /// # Errors
    /// [`CudaError::INVALID_HANDLE`] for an unknown event.
    pub fn remove_event(&mut self, h: EventHandle) -> Result<EventHandle, CudaError> {
        self.events.remove(&h.0).ok_or(CudaError::INVALID_HANDLE)
    }

    /// Client graph handles (bounded by [`CLIENT_GRAPHS_MAX`]).
    pub fn graphs(&mut self) -> &mut GraphMap {
        &mut self.graphs
    }

    /// Client executable-graph handles (bounded by [`CLIENT_GRAPH_EXECS_MAX`]).
    pub fn execs(&mut self) -> &mut GraphMap {
        &mut self.execs
    }

    /// Forgets every mapping (the session ended); returns (streams, events)
    /// forgotten.
    pub fn clear(&mut self) -> (usize, usize) {
        let n = (self.streams.len(), self.events.len());
        self.streams.clear();
        self.events.clear();
        self.graphs.0.clear();
        self.execs.0.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_pass_and_cannot_be_created() {
        let mut t = ClientHandles::default();
        for k in BUILTIN_STREAM_KEYS {
            assert_eq!(t.stream(StreamHandle(k)), Ok(StreamHandle(k)));
            assert_eq!(
                t.check_new_stream(StreamHandle(k)),
                Err(CudaError::INVALID_HANDLE)
            );
        }
        assert_eq!(
            t.remove_stream(StreamHandle(0)),
            Err(CudaError::INVALID_HANDLE)
        );
        assert_eq!(
            t.check_new_event(EventHandle(0)),
            Err(CudaError::INVALID_HANDLE)
        );
        t.insert_stream(StreamHandle(0x100), StreamHandle(0x9000));
        assert_eq!(t.stream(StreamHandle(0x100)), Ok(StreamHandle(0x9000)));
    }

    #[test]
    fn graph_handles_are_checked_and_bounded() {
        let mut t = ClientHandles::default();
        assert_eq!(t.graphs().check_new(0, 4), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.graphs().get(5), Err(CudaError::INVALID_HANDLE));
        t.graphs().insert(5, 50);
        assert_eq!(t.graphs().get(5), Ok(50));
        assert_eq!(t.graphs().check_new(5, 4), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.graphs().check_new(6, 1), Err(CudaError::OUT_OF_MEMORY));
        assert_eq!(t.execs().get(5), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.graphs().remove(5), Ok(50));
        assert_eq!(t.graphs().remove(5), Err(CudaError::INVALID_HANDLE));
    }

    #[test]
    fn duplicate_unknown_and_destroyed() {
        let mut t = ClientHandles::default();
        let s = StreamHandle(0x1010);
        let e = EventHandle(0x2020);
        assert_eq!(t.stream(s), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.event(e), Err(CudaError::INVALID_HANDLE));
        t.insert_stream(s, StreamHandle(7));
        t.insert_event(e, EventHandle(8));
        assert_eq!(t.check_new_stream(s), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.check_new_event(e), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.event(e), Ok(EventHandle(8)));
        assert_eq!(t.remove_stream(s), Ok(StreamHandle(7)));
        assert_eq!(t.stream(s), Err(CudaError::INVALID_HANDLE));
        assert_eq!(t.remove_stream(s), Err(CudaError::INVALID_HANDLE));
        // A destroyed handle may be created again.
        assert_eq!(t.check_new_stream(s), Ok(()));
        assert_eq!(t.clear(), (0, 1));
        assert_eq!(t.event(e), Err(CudaError::INVALID_HANDLE));
    }
}
