//! Ring geometry and the process-local state shared by a ring's handles.
//!
//! [`RingShared`] pairs a [`RingStorage`] with its validated geometry (copied
//! out of shared memory once, so a peer cannot change it under us) and the
//! producers' local cache of the consumer's `head`.

use crate::control::CachePadded;
use crate::error::{Corruption, GeometryError};
use crate::frame::{self, FRAME_HEADER_BYTES, KIND_PADDING};
use crate::storage::RingStorage;
use crate::sync::{AtomicU64, Ordering};
use crate::wait;

/// Smallest ring data area, in bytes.
pub const RING_BYTES_MIN: usize = 256;
/// Largest ring data area, in bytes (1 GiB).
pub const RING_BYTES_MAX: usize = 1 << 30;

/// Exclusive bound on absolute ring positions read from shared memory.
///
/// 2^63 bytes is ~29 years at 10 GB/s, so honest cursors never reach it, and
/// with positions below it no position arithmetic can overflow.
pub const POSITION_MAX: u64 = 1 << 63;

/// Largest `max_record_bytes` a ring of `capacity_bytes` accepts: a frame
/// holding one such record must fit in half the ring, which guarantees that
/// any valid frame eventually fits, whatever the wrap position.
#[must_use]
pub const fn max_record_bound(capacity_bytes: usize) -> usize {
    capacity_bytes / 2 - FRAME_HEADER_BYTES - frame::RECORD_HEADER_BYTES
}

/// Validated, immutable shape of one ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) capacity: usize,
    pub(crate) mask: u64,
    pub(crate) max_record_bytes: usize,
    /// Largest frame: half the ring (see [`max_record_bound`]).
    pub(crate) frame_bytes_max: usize,
    pub(crate) salt: u64,
}

impl Geometry {
    pub(crate) fn new(
        capacity: usize,
        max_record_bytes: usize,
        salt: u64,
    ) -> Result<Self, GeometryError> {
        if !capacity.is_power_of_two() || !(RING_BYTES_MIN..=RING_BYTES_MAX).contains(&capacity) {
            return Err(GeometryError::Capacity {
                capacity_bytes: capacity,
                min: RING_BYTES_MIN,
                max: RING_BYTES_MAX,
            });
        }
        let bound = max_record_bound(capacity);
        if max_record_bytes == 0 || max_record_bytes > bound {
            return Err(GeometryError::MaxRecord {
                max_record_bytes,
                bound,
            });
        }
        Ok(Self {
            capacity,
            mask: capacity as u64 - 1,
            max_record_bytes,
            frame_bytes_max: capacity / 2,
            salt,
        })
    }

    /// Offset inside the data area of absolute position `pos`.
    #[inline]
    pub(crate) fn offset(&self, pos: u64) -> usize {
        (pos & self.mask) as usize
    }

    /// For a frame of `frame_len` reserved at cursor `r`: the wrap padding in
    /// front of it and the cursor value after the reservation.
    #[inline]
    pub(crate) fn span(&self, r: u64, frame_len: usize) -> (usize, u64) {
        let off = self.offset(r);
        let pad = if off + frame_len > self.capacity {
            self.capacity - off
        } else {
            0
        };
        (pad, r + (pad + frame_len) as u64)
    }
}

/// What a ring's producer and consumer handles in one process share.
#[derive(Debug)]
pub(crate) struct RingShared<S> {
    pub(crate) storage: S,
    pub(crate) geom: Geometry,
    /// Producers' cached copy of the consumer's `head` (process local).
    pub(crate) cached_head: CachePadded<AtomicU64>,
}

impl<S: RingStorage> RingShared<S> {
    pub(crate) fn new(
        storage: S,
        max_record_bytes: usize,
        salt: u64,
    ) -> Result<Self, GeometryError> {
        let geom = Geometry::new(storage.capacity(), max_record_bytes, salt)?;
        Ok(Self {
            storage,
            geom,
            // 0 is always a safe lower bound of `head`; the first refresh
            // (validated) moves it up.
            cached_head: CachePadded(AtomicU64::new(0)),
        })
    }

    /// Whether the frame at absolute `pos` has been committed.
    #[inline]
    pub(crate) fn committed_at(&self, pos: u64) -> bool {
        let idx = self.geom.offset(pos) / 8;
        self.storage.word(idx).load(Ordering::Acquire) == frame::stamp(pos, self.geom.salt)
    }

    /// Writes the meta word, then publishes the frame with one Release store
    /// of its stamp, then wakes a sleeping consumer if one registered.
    #[inline]
    pub(crate) fn publish(&self, pos: u64, kind: u64, body_bytes: usize, records: usize) {
        let idx = self.geom.offset(pos) / 8;
        debug_assert!(self.geom.offset(pos) + frame::frame_bytes(body_bytes) <= self.geom.capacity);
        self.storage
            .word(idx + 1)
            .store(frame::meta(kind, body_bytes, records), Ordering::Relaxed);
        self.storage
            .word(idx)
            .store(frame::stamp(pos, self.geom.salt), Ordering::Release);
        if kind != KIND_PADDING {
            wait::notify(&self.storage.control().data_wait.0);
        }
    }

    /// Loads the (peer-writable) reserve cursor, rejecting impossible values.
    #[inline]
    pub(crate) fn load_reserve(&self) -> Result<u64, Corruption> {
        let r = self.storage.control().reserve.0.load(Ordering::Relaxed);
        check_position("reserve", r)
    }

    /// Reloads the consumer's `head` from shared memory, validating it
    /// (peer-written) against our reserve cursor, and refreshes the cache.
    pub(crate) fn refresh_head(&self) -> Result<u64, Corruption> {
        let ctl = self.storage.control();
        let head = check_position("head", ctl.head.0.load(Ordering::Acquire))?;
        // Loaded after `head`: an honest consumer only releases committed
        // frames, whose reservations happen-before its `head` store, so
        // `head <= reserve` must hold. (`reserve - head` may legitimately
        // exceed the capacity here: `head` can be stale by the time we load
        // `reserve`, which producers advanced against a newer head.)
        let reserve = self.load_reserve()?;
        if head > reserve {
            return Err(Corruption::HeadOutOfRange {
                head,
                reserve,
                capacity_bytes: self.geom.capacity as u64,
            });
        }
        self.cached_head.0.fetch_max(head, Ordering::AcqRel);
        Ok(head)
    }
}

/// Rejects a cursor value at or above [`POSITION_MAX`].
#[inline]
pub(crate) fn check_position(cursor: &'static str, value: u64) -> Result<u64, Corruption> {
    if value >= POSITION_MAX {
        return Err(Corruption::CursorOutOfRange { cursor, value });
    }
    Ok(value)
}
