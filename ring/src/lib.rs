//! `rgpu-ring`: a cross-process message ring and bulk arena in shared memory.
//!
//! A [`Segment`] is one `memfd` holding a validated control block, two rings
//! (client→server and server→client) and a bulk [`Arena`]. Each ring carries
//! variable-length, 8-byte-aligned records; a producer publishes a batch of
//! records with one Release store and the consumer takes what is committed
//! with Acquire loads and frees the space with one Release store.
//!
//! # Why one MPSC ring per direction, not per-thread SPSC lanes
//!
//! Clients such as PyTorch call CUDA from several threads, and CUDA stream
//! order must survive that: thread A enqueues on stream S and then signals
//! thread B, which enqueues on S too; the worker must see A's work first.
//! A single multi-producer ring gives a total order consistent with
//! happens-before: A's reservation CAS precedes B's (A's push happens-before
//! B's), so A's frame sits earlier in the ring. Per-thread lanes would need a
//! merge by a global sequence number — a shared atomic anyway, plus a merge
//! step on the worker. So producers reserve space with a CAS on a shared
//! reserve cursor, write, and publish with one Release store of a commit
//! stamp in the frame header; the consumer reads in reservation order. There
//! is no lock anywhere on the push or pop path.
//!
//! # Commit stamps
//!
//! Each frame header holds a stamp derived from the frame's absolute (never
//! wrapping, `u64`) position. A frame is committed iff its stamp equals the
//! expected one for the consumer's position, so consumed space never needs
//! zeroing and a stale header from an earlier lap can never match (no ABA).
//! Frames never straddle the buffer end: a padding frame fills the tail.
//!
//! # Waiting
//!
//! Waiters spin with bounded backoff, then sleep on futex words inside the
//! shared region (non-private futexes), in slices of at most
//! [`SLEEP_SLICE_MS_MAX`] between which they re-check their deadline and a
//! pidfd-based [`PeerWatch`]. Wakers make a syscall only when a sleeper has
//! registered; the memory-ordering argument is in the `wait` module.
//!
//! # Trust
//!
//! The shared memory is writable by the peer, so everything read from it is
//! validated: a bad header is a typed [`Corruption`], offsets are masked into
//! the mapping, and the segment layout is recomputed and compared on attach.
//!
//! See `docs/ring.md` for the layout diagram and the test map.

mod consumer;
mod control;
mod error;
pub mod frame;
mod peer;
mod producer;
mod raw;
mod shared;
mod storage;
mod sync;
mod wait;

pub mod arena;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod shm;

pub use consumer::{Consumer, POP_RECORDS_MAX_DEFAULT};
pub use control::{RingControl, CACHE_LINE_BYTES};
pub use error::{
    ArenaError, Corruption, GeometryError, PeerWatchError, PopError, PushError, SegmentError,
    WaitError,
};
pub use peer::PeerWatch;
pub use producer::{Producer, Reservation, RESERVE_ATTEMPTS_MAX};
pub use shared::{max_record_bound, POSITION_MAX, RING_BYTES_MAX, RING_BYTES_MIN};
pub use storage::{HeapRing, RingStorage};
pub use wait::SLEEP_SLICE_MS_MAX;

pub use arena::{Arena, ArenaAllocator, Slab, ARENA_BYTES_MAX, ARENA_SLAB_BYTES_MIN};
pub use frame::BATCH_RECORDS_MAX;
#[cfg(not(loom))]
pub use segment::{
    Segment, SegmentConfig, SegmentLayout, Side, SEGMENT_BYTES_MAX, SEGMENT_MAGIC,
    SEGMENT_RING_BYTES_MIN, SEGMENT_VERSION,
};
#[cfg(not(loom))]
pub use shm::ShmRing;

/// Producer of a shared segment's ring.
#[cfg(not(loom))]
pub type ShmProducer = Producer<ShmRing>;
/// Consumer of a shared segment's ring.
#[cfg(not(loom))]
pub type ShmConsumer = Consumer<ShmRing>;

use std::sync::Arc;

// Lengths read from shared memory are up to 2^32 and are added to offsets in
// `usize`; that arithmetic is only overflow-free with 64-bit `usize`.
const _: () = assert!(usize::BITS == 64, "rgpu-ring needs a 64-bit target");

/// Builds the producer and consumer halves of one ring over `storage`.
///
/// `salt` seeds the commit stamps; both sides of a ring must agree on it.
///
/// # Errors
/// [`GeometryError`] if the storage capacity or `max_record_bytes` break the
/// documented bounds.
pub fn ring<S: RingStorage>(
    storage: S,
    max_record_bytes: usize,
    salt: u64,
) -> Result<(Producer<S>, Consumer<S>), GeometryError> {
    let shared = Arc::new(shared::RingShared::new(storage, max_record_bytes, salt)?);
    Ok((
        Producer::from_shared(Arc::clone(&shared)),
        Consumer::from_shared(shared),
    ))
}

/// Convenience: an in-process ring on the heap with a random salt.
///
/// # Errors
/// As [`ring`].
pub fn heap_ring(
    capacity_bytes: usize,
    max_record_bytes: usize,
) -> Result<(Producer<HeapRing>, Consumer<HeapRing>), GeometryError> {
    ring(
        HeapRing::new(capacity_bytes),
        max_record_bytes,
        random_salt(),
    )
}

/// A per-process random 64-bit value (std's randomly keyed SipHash).
#[must_use]
pub fn random_salt() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}
