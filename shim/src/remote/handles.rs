//! Client-allocated stream and event handles, and what the shim knows about them.
//!
//! Exists so creating a stream or an event needs no round trip (the shim picks the handle and
//! sends an async create carrying it), and so the local call class can answer from tracked
//! state: stream flags and priority, and whether an event is already known complete.
//!
//! Completion is tracked with the connection's count of async calls submitted
//! ([`super::conn::Conn::async_count`]): an event recorded as the n-th async call is known
//! complete once a synchronization that was sent after it succeeded (context, its stream, or
//! the event itself). Pure data, no I/O: unit-tested here.

use std::collections::HashMap;

use rgpu_proto::{EventHandle, StreamHandle};

/// Most streams alive at once in one process (the emulated worker's default table size).
pub const STREAMS_LIVE_MAX: usize = 1024;
/// Most events alive at once in one process (the emulated worker's default table size).
pub const EVENTS_LIVE_MAX: usize = 65_536;
/// First stream handle value; values step by [`HANDLE_STRIDE`]. Far above the built-in
/// stream values 0, 1 and 2 and tagged so a stray handle is easy to spot in a log.
pub const STREAM_HANDLE_BASE: u64 = 0x5157_0000_0000;
/// First event handle value.
pub const EVENT_HANDLE_BASE: u64 = 0xe7e0_0000_0000;
/// Distance between consecutive handle values (they look like aligned addresses).
pub const HANDLE_STRIDE: u64 = 0x40;
/// Stream priorities are clamped into `[STREAM_PRIORITY_GREATEST, STREAM_PRIORITY_LEAST]`, the
/// range current NVIDIA data-center GPUs report (`cuCtxGetStreamPriorityRange`: 0 and -5).
pub const STREAM_PRIORITY_LEAST: i32 = 0;
/// See [`STREAM_PRIORITY_LEAST`].
pub const STREAM_PRIORITY_GREATEST: i32 = -5;
/// `CU_STREAM_NON_BLOCKING`, the only stream flag.
pub const CU_STREAM_NON_BLOCKING: u32 = 0x1;
/// Event flags the driver defines: blocking sync, disable timing, interprocess.
pub const CU_EVENT_FLAGS_ALL: u32 = 0x1 | 0x2 | 0x4;
/// `CU_EVENT_DISABLE_TIMING`.
pub const CU_EVENT_DISABLE_TIMING: u32 = 0x2;

/// Why a handle operation is refused locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Not a live handle of this process.
    #[error("unknown handle {0:#x}")]
    Unknown(u64),
    /// The live-handle bound is reached.
    #[error("{0} handles alive, the bound")]
    Full(usize),
    /// Flags outside what the driver defines.
    #[error("bad flags {0:#x}")]
    BadFlags(u32),
}

/// What the shim keeps about a created stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// `cuStreamCreate` flags.
    pub flags: u32,
    /// Priority after clamping.
    pub priority: i32,
    /// Async-call count when this stream was last synchronized successfully.
    synced_at: u64,
}

/// Where an event stands, as far as the shim knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Never recorded: queries succeed (CUDA's rule).
    Never,
    /// Recorded on `stream` as async call number `seq` (1-based count after submit).
    On { stream: StreamHandle, seq: u64 },
    /// Known complete.
    Complete,
}

/// What the shim keeps about a created event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInfo {
    /// `cuEventCreate` flags.
    pub flags: u32,
    recorded: Recorded,
}

/// The process's streams and events.
#[derive(Debug)]
pub struct Handles {
    streams: HashMap<u64, StreamInfo>,
    events: HashMap<u64, EventInfo>,
    next_stream: u64,
    next_event: u64,
    /// Async-call count when the context was last synchronized successfully.
    ctx_synced_at: u64,
    /// Async-call count when the legacy default stream was last synchronized successfully.
    default_synced_at: u64,
    /// Streams forgotten without a destroy sent yet (per-thread streams of exited threads);
    /// at most [`STREAMS_LIVE_MAX`], since each was live.
    orphans: Vec<StreamHandle>,
}

impl Default for Handles {
    fn default() -> Self {
        Self {
            streams: HashMap::new(),
            events: HashMap::new(),
            next_stream: STREAM_HANDLE_BASE,
            next_event: EVENT_HANDLE_BASE,
            ctx_synced_at: 0,
            default_synced_at: 0,
            orphans: Vec::new(),
        }
    }
}

impl Handles {
    /// Allocates a stream handle (never reused in this process).
    ///
    /// # Errors
    /// [`HandleError::BadFlags`], [`HandleError::Full`].
    pub fn create_stream(
        &mut self,
        flags: u32,
        priority: i32,
    ) -> Result<(StreamHandle, StreamInfo), HandleError> {
        if flags & !CU_STREAM_NON_BLOCKING != 0 {
            return Err(HandleError::BadFlags(flags));
        }
        if self.streams.len() >= STREAMS_LIVE_MAX {
            return Err(HandleError::Full(STREAMS_LIVE_MAX));
        }
        let h = self.next_stream;
        // 2^64 / 64 handles cannot be exhausted by any run.
        self.next_stream += HANDLE_STRIDE;
        let info = StreamInfo {
            flags,
            priority: priority.clamp(STREAM_PRIORITY_GREATEST, STREAM_PRIORITY_LEAST),
            synced_at: 0,
        };
        self.streams.insert(h, info);
        Ok((StreamHandle(h), info))
    }

    /// A live stream's facts.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn stream(&self, h: StreamHandle) -> Result<StreamInfo, HandleError> {
        self.streams
            .get(&h.0)
            .copied()
            .ok_or(HandleError::Unknown(h.0))
    }

    /// Forgets a stream.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn destroy_stream(&mut self, h: StreamHandle) -> Result<(), HandleError> {
        self.streams
            .remove(&h.0)
            .map(drop)
            .ok_or(HandleError::Unknown(h.0))
    }

    /// Forgets a live stream whose destroy cannot be sent now; [`Handles::take_orphan`] hands
    /// it out later. Unknown handles are ignored.
    pub fn orphan_stream(&mut self, h: StreamHandle) {
        if self.streams.remove(&h.0).is_some() {
            debug_assert!(self.orphans.len() < STREAMS_LIVE_MAX);
            self.orphans.push(h);
        }
    }

    /// A stream forgotten by [`Handles::orphan_stream`] whose destroy is still to be sent.
    pub fn take_orphan(&mut self) -> Option<StreamHandle> {
        self.orphans.pop()
    }

    /// Allocates an event handle (never reused in this process).
    ///
    /// # Errors
    /// [`HandleError::BadFlags`], [`HandleError::Full`].
    pub fn create_event(&mut self, flags: u32) -> Result<EventHandle, HandleError> {
        if flags & !CU_EVENT_FLAGS_ALL != 0 {
            return Err(HandleError::BadFlags(flags));
        }
        if self.events.len() >= EVENTS_LIVE_MAX {
            return Err(HandleError::Full(EVENTS_LIVE_MAX));
        }
        let h = self.next_event;
        self.next_event += HANDLE_STRIDE;
        self.events.insert(
            h,
            EventInfo {
                flags,
                recorded: Recorded::Never,
            },
        );
        Ok(EventHandle(h))
    }

    /// A live event's facts.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn event(&self, h: EventHandle) -> Result<EventInfo, HandleError> {
        self.events
            .get(&h.0)
            .copied()
            .ok_or(HandleError::Unknown(h.0))
    }

    /// Forgets an event.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn destroy_event(&mut self, h: EventHandle) -> Result<(), HandleError> {
        self.events
            .remove(&h.0)
            .map(drop)
            .ok_or(HandleError::Unknown(h.0))
    }

    /// Notes that event `h` was recorded on `stream` as async call number `seq`.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn recorded(
        &mut self,
        h: EventHandle,
        stream: StreamHandle,
        seq: u64,
    ) -> Result<(), HandleError> {
        let e = self.events.get_mut(&h.0).ok_or(HandleError::Unknown(h.0))?;
        e.recorded = Recorded::On { stream, seq };
        Ok(())
    }

    /// Notes a successful context synchronization sent after `seq` async calls.
    pub fn ctx_synced(&mut self, seq: u64) {
        self.ctx_synced_at = self.ctx_synced_at.max(seq);
    }

    /// Notes a successful synchronization of `stream` sent after `seq` async calls. The
    /// legacy default stream (0) is remembered as well, under key 0.
    pub fn stream_synced(&mut self, stream: StreamHandle, seq: u64) {
        if stream.0 == 0 {
            self.default_synced_at = self.default_synced_at.max(seq);
        } else if let Some(s) = self.streams.get_mut(&stream.0) {
            s.synced_at = s.synced_at.max(seq);
        }
    }

    /// Notes that event `h` is complete (its synchronize or query succeeded).
    pub fn event_completed(&mut self, h: EventHandle) {
        if let Some(e) = self.events.get_mut(&h.0) {
            // Only the recording that was waited for is complete; a record submitted since is
            // a newer one, but the caller holds the connection lock, so none can be.
            e.recorded = Recorded::Complete;
        }
    }

    /// Whether event `h` is known complete without asking the device: never recorded, or a
    /// successful synchronization covered its last recording.
    ///
    /// # Errors
    /// [`HandleError::Unknown`].
    pub fn event_known_complete(&self, h: EventHandle) -> Result<bool, HandleError> {
        let e = self.events.get(&h.0).ok_or(HandleError::Unknown(h.0))?;
        Ok(match e.recorded {
            Recorded::Never | Recorded::Complete => true,
            Recorded::On { stream, seq } => {
                seq <= self.ctx_synced_at
                    || (stream.0 == 0 && seq <= self.default_synced_at)
                    || self
                        .streams
                        .get(&stream.0)
                        .is_some_and(|s| seq <= s.synced_at)
            }
        })
    }

    /// Live (streams, events).
    #[must_use]
    pub fn live(&self) -> (usize, usize) {
        (self.streams.len(), self.events.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_bounded_and_not_builtin() {
        let mut h = Handles::default();
        let (a, ai) = h.create_stream(0, 0).unwrap();
        let (b, bi) = h.create_stream(CU_STREAM_NON_BLOCKING, -100).unwrap();
        assert_ne!(a, b);
        assert!(a.0 > 2 && b.0 > 2);
        assert_eq!(ai.priority, 0);
        assert_eq!(bi.priority, STREAM_PRIORITY_GREATEST, "clamped");
        assert_eq!(h.stream(b).unwrap().flags, CU_STREAM_NON_BLOCKING);
        assert_eq!(h.create_stream(0x8, 0), Err(HandleError::BadFlags(0x8)));
        h.destroy_stream(a).unwrap();
        assert_eq!(h.stream(a), Err(HandleError::Unknown(a.0)));
        assert_eq!(h.destroy_stream(a), Err(HandleError::Unknown(a.0)));
        let (c, _) = h.create_stream(0, 0).unwrap();
        assert_ne!(c, a, "handles are not reused");
        let e = h.create_event(0).unwrap();
        assert_ne!(e.0, c.0);
        assert_eq!(h.create_event(0x10), Err(HandleError::BadFlags(0x10)));
        assert_eq!(h.live(), (2, 1));
        h.orphan_stream(c);
        h.orphan_stream(c);
        assert_eq!(h.stream(c), Err(HandleError::Unknown(c.0)));
        assert_eq!(h.take_orphan(), Some(c));
        assert_eq!(h.take_orphan(), None, "orphaned once");
    }

    #[test]
    fn stream_bound_is_enforced() {
        let mut h = Handles::default();
        for _ in 0..STREAMS_LIVE_MAX {
            h.create_stream(0, 0).unwrap();
        }
        assert_eq!(
            h.create_stream(0, 0),
            Err(HandleError::Full(STREAMS_LIVE_MAX))
        );
    }

    #[test]
    fn completion_follows_synchronizations() {
        let mut h = Handles::default();
        let (s1, _) = h.create_stream(0, 0).unwrap();
        let (s2, _) = h.create_stream(0, 0).unwrap();
        let e = h.create_event(0).unwrap();
        assert!(h.event_known_complete(e).unwrap(), "never recorded");
        h.recorded(e, s1, 5).unwrap();
        assert!(!h.event_known_complete(e).unwrap());
        h.stream_synced(s2, 9);
        assert!(!h.event_known_complete(e).unwrap(), "other stream");
        h.stream_synced(s1, 4);
        assert!(
            !h.event_known_complete(e).unwrap(),
            "sync sent before the record"
        );
        h.stream_synced(s1, 5);
        assert!(h.event_known_complete(e).unwrap());
        h.recorded(e, s1, 7).unwrap();
        assert!(!h.event_known_complete(e).unwrap(), "re-recorded");
        h.ctx_synced(8);
        assert!(
            h.event_known_complete(e).unwrap(),
            "context sync covers all"
        );
        h.recorded(e, StreamHandle(0), 10).unwrap();
        assert!(!h.event_known_complete(e).unwrap());
        h.stream_synced(StreamHandle(0), 10);
        assert!(h.event_known_complete(e).unwrap(), "legacy stream sync");
        h.recorded(e, s2, 11).unwrap();
        h.event_completed(e);
        assert!(h.event_known_complete(e).unwrap());
        h.destroy_event(e).unwrap();
        assert_eq!(h.event_known_complete(e), Err(HandleError::Unknown(e.0)));
    }
}
