//! Typed errors for every failing ring, wait, arena and segment operation.
//!
//! Peer-controlled shared memory can hold anything, so corruption is a normal,
//! typed outcome ([`Corruption`]) rather than a panic.

use std::io;
use std::time::Duration;

/// A violation of the ring format found in shared memory (peer input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A committed frame header carries an unknown kind tag.
    #[error("frame at position {position}: unknown kind in meta word {meta:#x}")]
    FrameKind {
        /// Absolute ring position of the frame.
        position: u64,
        /// The raw meta word read from shared memory.
        meta: u64,
    },
    /// A committed frame claims a body that runs past the buffer end or the
    /// frame size bound.
    #[error("frame at position {position}: length {frame_bytes} exceeds bound {bound_bytes}")]
    FrameLength {
        /// Absolute ring position of the frame.
        position: u64,
        /// Frame length implied by the header.
        frame_bytes: u64,
        /// The bound it violated.
        bound_bytes: u64,
    },
    /// A record inside a frame has a bad header or overruns its frame.
    #[error("record {index} of frame at position {position}: {reason}")]
    Record {
        /// Absolute ring position of the enclosing frame.
        position: u64,
        /// Index of the record inside the frame.
        index: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cursor read from shared memory is at or above [`POSITION_MAX`](crate::POSITION_MAX),
    /// which honest traffic cannot reach (it would take decades at memory speed).
    #[error("{cursor} cursor {value:#x} is beyond the position bound")]
    CursorOutOfRange {
        /// Which cursor (`"reserve"` or `"head"`).
        cursor: &'static str,
        /// The value read.
        value: u64,
    },
    /// The consumer's `head` cursor in shared memory is beyond the reserve
    /// cursor, which a well-behaved peer cannot produce.
    #[error("head cursor {head} is inconsistent with reserve cursor {reserve} (capacity {capacity_bytes})")]
    HeadOutOfRange {
        /// Value of `head` read from shared memory.
        head: u64,
        /// Value of the reserve cursor read afterwards.
        reserve: u64,
        /// Ring data capacity.
        capacity_bytes: u64,
    },
}

/// Failure of the deadline-bounded wait used by blocking push and pop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The deadline passed before the ring became ready.
    #[error("timed out after waiting {waited:?}")]
    Timeout {
        /// Time actually spent waiting.
        waited: Duration,
    },
    /// The peer process exited while we were waiting on it.
    #[error("peer process {pid} died")]
    PeerDead {
        /// Pid of the dead peer.
        pid: i32,
    },
    /// Polling the peer's pidfd failed.
    #[error("polling pidfd of peer {pid} failed")]
    PeerPoll {
        /// Pid of the peer being watched.
        pid: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Failure of a push into a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Not enough free space right now (try variants only).
    #[error("ring full: frame of {needed_bytes} bytes needs space, {free_bytes} bytes free")]
    Full {
        /// Bytes the frame (plus wrap padding) needs.
        needed_bytes: usize,
        /// Bytes currently free.
        free_bytes: usize,
    },
    /// A single record is larger than the ring's configured maximum.
    #[error("record of {len} bytes exceeds max record size {max} bytes")]
    TooLarge {
        /// Length of the offending record.
        len: usize,
        /// Configured maximum record length.
        max: usize,
    },
    /// A batch is too big to ever fit in one frame.
    #[error("batch of {records} records ({frame_bytes} frame bytes) exceeds {records_max} records / {frame_bytes_max} bytes")]
    BatchTooLarge {
        /// Number of records in the batch.
        records: usize,
        /// Encoded size of the batch frame.
        frame_bytes: usize,
        /// Maximum records per batch.
        records_max: usize,
        /// Maximum frame size for this ring.
        frame_bytes_max: usize,
    },
    /// Shared ring state written by the peer is inconsistent.
    #[error("ring corrupt")]
    Corrupt(#[from] Corruption),
    /// The reserve CAS lost too many races in a row.
    #[error("reserve cursor contended: gave up after {attempts} CAS attempts")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// A blocking push gave up waiting for space.
    #[error("waiting for ring space failed")]
    Wait(#[from] WaitError),
}

/// Failure of a pop from a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// The ring contents are corrupt; the consumer is poisoned from now on.
    #[error("ring corrupt")]
    Corrupt(#[from] Corruption),
    /// A blocking pop gave up waiting for records.
    #[error("waiting for ring records failed")]
    Wait(#[from] WaitError),
}

/// Failure to build a ring over a storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// Capacity must be a power of two within the documented bounds.
    #[error("ring capacity {capacity_bytes} bytes is not a power of two in [{min}, {max}]")]
    Capacity {
        /// Requested capacity.
        capacity_bytes: usize,
        /// Smallest allowed capacity.
        min: usize,
        /// Largest allowed capacity.
        max: usize,
    },
    /// Max record size must be non-zero and let a one-record frame fit in half the ring.
    #[error("max record size {max_record_bytes} bytes is not in [1, {bound}] for this capacity")]
    MaxRecord {
        /// Requested max record size.
        max_record_bytes: usize,
        /// Largest allowed for this capacity.
        bound: usize,
    },
}

/// Failure of a bulk-arena operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// A slab reference (peer input) is outside the arena.
    #[error("slab reference offset {offset} len {len} is outside the {arena_bytes}-byte arena")]
    OutOfBounds {
        /// Offset of the reference.
        offset: u64,
        /// Length of the reference.
        len: u64,
        /// Arena size.
        arena_bytes: usize,
    },
    /// The request is larger than the largest slab class.
    #[error("allocation of {len} bytes exceeds the largest slab ({max} bytes)")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// Largest slab.
        max: usize,
    },
    /// No free slab large enough right now.
    #[error("arena exhausted: no free slab of {class_bytes} bytes")]
    Exhausted {
        /// Size class that could not be served.
        class_bytes: usize,
    },
    /// `free` was given a slab that is not currently allocated.
    #[error("free of slab at offset {offset} ({len} bytes) that is not allocated")]
    NotAllocated {
        /// Offset given.
        offset: u64,
        /// Length given.
        len: u64,
    },
}

/// Failure to create, attach or split a shared segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The requested configuration breaks a documented bound.
    #[error("invalid segment config: {reason}")]
    Config {
        /// Which bound was broken.
        reason: String,
    },
    /// `memfd_create` failed.
    #[error("memfd_create failed")]
    MemfdCreate(#[source] io::Error),
    /// Sizing or sealing the memfd failed.
    #[error("sizing or sealing the memfd to {bytes} bytes failed")]
    Resize {
        /// Target size.
        bytes: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `fstat` or `F_GET_SEALS` on an attached fd failed.
    #[error("inspecting the segment fd failed")]
    Inspect(#[source] io::Error),
    /// Mapping the memfd failed.
    #[error("mmap of {bytes} bytes failed")]
    Map {
        /// Length of the mapping.
        bytes: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The fd handed to `attach` has an unacceptable size.
    #[error("segment fd size {bytes} bytes is outside [{min}, {max}]")]
    Size {
        /// Size reported by `fstat`.
        bytes: u64,
        /// Smallest acceptable.
        min: u64,
        /// Largest acceptable.
        max: u64,
    },
    /// The fd handed to `attach` is not sealed against shrinking/growing.
    #[error("segment fd lacks the shrink/grow seals (seals {seals:#x})")]
    Seals {
        /// Seals found on the fd.
        seals: u32,
    },
    /// The control block does not start with the expected magic.
    #[error("bad segment magic {found:#x}")]
    Magic {
        /// Magic found.
        found: u64,
    },
    /// The control block has an unsupported version.
    #[error("unsupported segment version {found} (expected {expected})")]
    Version {
        /// Version found.
        found: u32,
        /// Version this build speaks.
        expected: u32,
    },
    /// The control block's layout fields disagree with the recomputed layout.
    #[error("segment layout mismatch: {field} is {found}, expected {expected}")]
    Layout {
        /// Name of the field.
        field: &'static str,
        /// Value in shared memory.
        found: u64,
        /// Value recomputed from the validated config.
        expected: u64,
    },
    /// `split` was called twice on the same segment.
    #[error("segment already split into producer/consumer")]
    AlreadySplit,
    /// The ring geometry derived from the control block is invalid.
    #[error("ring geometry invalid")]
    Geometry(#[from] GeometryError),
}

/// Failure to open a pidfd for a peer process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerWatchError {
    /// The pid is not a valid positive pid.
    #[error("invalid pid {pid}")]
    InvalidPid {
        /// The rejected pid.
        pid: i32,
    },
    /// `pidfd_open` failed (no such process, or kernel too old).
    #[error("pidfd_open({pid}) failed")]
    Open {
        /// The pid.
        pid: i32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}
