//! The multi-producer side: reserve with a CAS, write, publish with one store.
//!
//! Any number of threads may push through clones of one [`Producer`] (or one
//! shared by reference: it is `Sync`). A push claims a frame by advancing the
//! shared reserve cursor with a CAS, writes its records, then publishes the
//! whole frame with one Release store of the frame's commit stamp. The
//! consumer reads frames in reservation order, which is consistent with
//! happens-before across threads (see the crate docs for why that matters).

use crate::error::PushError;
use crate::frame::{self, BATCH_RECORDS_MAX, FRAME_HEADER_BYTES, KIND_PADDING, KIND_RECORDS};
use crate::peer::PeerWatch;
use crate::shared::{check_position, RingShared};
use crate::storage::RingStorage;
use crate::sync::Ordering;
use crate::wait;
use std::sync::Arc;
use std::time::Instant;

/// Most CAS attempts one reservation makes before reporting contention.
pub const RESERVE_ATTEMPTS_MAX: u32 = 1 << 16;

/// Producer handle of one ring; `Clone + Send + Sync`.
#[derive(Debug)]
pub struct Producer<S: RingStorage> {
    shared: Arc<RingShared<S>>,
}

impl<S: RingStorage> Clone for Producer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: RingStorage> Producer<S> {
    pub(crate) fn from_shared(shared: Arc<RingShared<S>>) -> Self {
        Self { shared }
    }

    /// Largest record payload this ring accepts.
    #[must_use]
    pub fn max_record_bytes(&self) -> usize {
        self.shared.geom.max_record_bytes
    }

    /// Ring data capacity in bytes.
    #[must_use]
    pub fn capacity_bytes(&self) -> usize {
        self.shared.geom.capacity
    }

    /// Pushes one record if there is room now.
    ///
    /// # Errors
    /// [`PushError::Full`], [`PushError::TooLarge`], [`PushError::Corrupt`],
    /// [`PushError::Contended`].
    #[inline]
    pub fn try_push(&self, record: &[u8]) -> Result<(), PushError> {
        self.try_push_batch(std::slice::from_ref(&record))
    }

    /// Pushes all `records` as one frame: one reservation, one Release store.
    /// An empty batch is a no-op.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push), plus [`PushError::BatchTooLarge`].
    pub fn try_push_batch(&self, records: &[&[u8]]) -> Result<(), PushError> {
        if records.is_empty() {
            return Ok(());
        }
        let body = self.batch_body_bytes(records)?;
        let frame_len = frame::frame_bytes(body);
        let pos = self.reserve(frame_len)?;
        let geom = &self.shared.geom;
        let storage = &self.shared.storage;
        let mut cur = geom.offset(pos) + FRAME_HEADER_BYTES;
        for rec in records {
            storage
                .word(cur / 8)
                .store(rec.len() as u64, Ordering::Relaxed);
            // SAFETY: `reserve` handed this call the frame at `pos` exclusively,
            // and the record lies inside it (body sized by `batch_body_bytes`).
            unsafe { crate::raw::copy_in(storage, cur + frame::RECORD_HEADER_BYTES, rec) };
            cur += frame::record_bytes(rec.len());
        }
        debug_assert_eq!(cur, geom.offset(pos) + FRAME_HEADER_BYTES + body);
        self.shared.publish(pos, KIND_RECORDS, body, records.len());
        Ok(())
    }

    /// Reserves room for one record of `len` bytes to be written in place.
    /// Dropping the reservation without [`Reservation::commit`] publishes it
    /// as padding, so the consumer never stalls on it.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push).
    pub fn try_reserve(&self, len: usize) -> Result<Reservation<'_, S>, PushError> {
        self.check_record_len(len)?;
        let frame_len = frame::frame_bytes(frame::record_bytes(len));
        let pos = self.reserve(frame_len)?;
        Ok(Reservation {
            shared: &self.shared,
            pos,
            len,
            committed: false,
        })
    }

    /// Pushes one record, waiting for space until `deadline` while checking
    /// `peer` for death between bounded sleeps.
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push) except `Full`, plus [`PushError::Wait`].
    pub fn push_timeout(
        &self,
        record: &[u8],
        deadline: Instant,
        peer: Option<&PeerWatch>,
    ) -> Result<(), PushError> {
        self.push_batch_timeout(std::slice::from_ref(&record), deadline, peer)
    }

    /// Batch version of [`push_timeout`](Self::push_timeout).
    ///
    /// # Errors
    /// As [`try_push_batch`](Self::try_push_batch) except `Full`, plus [`PushError::Wait`].
    pub fn push_batch_timeout(
        &self,
        records: &[&[u8]],
        deadline: Instant,
        peer: Option<&PeerWatch>,
    ) -> Result<(), PushError> {
        loop {
            match self.try_push_batch(records) {
                Err(PushError::Full { .. }) => {
                    let frame_len = frame::frame_bytes(self.batch_body_bytes(records)?);
                    self.wait_for_space(frame_len, deadline, peer)?;
                }
                other => return other,
            }
        }
    }

    /// Blocking version of [`try_reserve`](Self::try_reserve).
    ///
    /// # Errors
    /// As [`push_timeout`](Self::push_timeout).
    pub fn reserve_timeout(
        &self,
        len: usize,
        deadline: Instant,
        peer: Option<&PeerWatch>,
    ) -> Result<Reservation<'_, S>, PushError> {
        loop {
            match self.try_reserve(len) {
                Err(PushError::Full { .. }) => {
                    let frame_len = frame::frame_bytes(frame::record_bytes(len));
                    self.wait_for_space(frame_len, deadline, peer)?;
                }
                other => return other,
            }
        }
    }

    fn check_record_len(&self, len: usize) -> Result<(), PushError> {
        let max = self.shared.geom.max_record_bytes;
        if len > max {
            return Err(PushError::TooLarge { len, max });
        }
        Ok(())
    }

    fn batch_body_bytes(&self, records: &[&[u8]]) -> Result<usize, PushError> {
        let mut body = 0usize;
        for rec in records {
            self.check_record_len(rec.len())?;
            body += frame::record_bytes(rec.len());
        }
        let frame_bytes = frame::frame_bytes(body);
        let frame_bytes_max = self.shared.geom.frame_bytes_max;
        if records.len() > BATCH_RECORDS_MAX || frame_bytes > frame_bytes_max {
            return Err(PushError::BatchTooLarge {
                records: records.len(),
                frame_bytes,
                records_max: BATCH_RECORDS_MAX,
                frame_bytes_max,
            });
        }
        Ok(body)
    }

    /// Claims `frame_len` bytes (plus wrap padding, published here) and
    /// returns the absolute position of the frame.
    fn reserve(&self, frame_len: usize) -> Result<u64, PushError> {
        let shared = &*self.shared;
        let geom = &shared.geom;
        debug_assert!(
            frame_len.is_multiple_of(frame::FRAME_ALIGN_BYTES) && frame_len <= geom.frame_bytes_max
        );
        let cap = geom.capacity as u64;
        let reserve = &shared.storage.control().reserve.0;
        let mut r = shared.load_reserve()?;
        for _ in 0..RESERVE_ATTEMPTS_MAX {
            let (pad, end) = geom.span(r, frame_len);
            let cached = shared.cached_head.0.load(Ordering::Acquire);
            if end.wrapping_sub(cached) > cap {
                let head = shared.refresh_head()?;
                let used = r.saturating_sub(head);
                if end.saturating_sub(head) > cap {
                    return Err(PushError::Full {
                        needed_bytes: pad + frame_len,
                        free_bytes: cap.saturating_sub(used) as usize,
                    });
                }
            }
            match reserve.compare_exchange_weak(r, end, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if pad > 0 {
                        shared.publish(r, KIND_PADDING, pad - FRAME_HEADER_BYTES, 0);
                    }
                    return Ok(r + pad as u64);
                }
                Err(current) => r = check_position("reserve", current)?,
            }
        }
        Err(PushError::Contended {
            attempts: RESERVE_ATTEMPTS_MAX,
        })
    }

    fn wait_for_space(
        &self,
        frame_len: usize,
        deadline: Instant,
        peer: Option<&PeerWatch>,
    ) -> Result<(), PushError> {
        let shared = &*self.shared;
        let cell = &shared.storage.control().space_wait.0;
        wait::wait_until(cell, deadline, peer, || {
            let r = shared.load_reserve()?;
            let (_, end) = shared.geom.span(r, frame_len);
            let head = shared.refresh_head().map_err(PushError::from)?;
            Ok::<bool, PushError>(end.saturating_sub(head) <= shared.geom.capacity as u64)
        })
    }
}

/// A reserved, not yet published, single-record frame (zero-copy push).
#[derive(Debug)]
pub struct Reservation<'a, S: RingStorage> {
    shared: &'a RingShared<S>,
    pos: u64,
    len: usize,
    committed: bool,
}

impl<S: RingStorage> Reservation<'_, S> {
    /// The payload bytes to fill in (contents are stale until written).
    pub fn buf_mut(&mut self) -> &mut [u8] {
        let off =
            self.shared.geom.offset(self.pos) + FRAME_HEADER_BYTES + frame::RECORD_HEADER_BYTES;
        debug_assert!(off + self.len <= self.shared.geom.capacity);
        // SAFETY: this reservation owns the range (won by the reserve CAS and
        // not yet published); the result borrows `self` mutably, so no second
        // view can be made through this reservation while it lives.
        unsafe { crate::raw::slice_mut(&self.shared.storage, off, self.len) }
    }

    /// Payload length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publishes the record with one Release store.
    pub fn commit(mut self) {
        self.publish(KIND_RECORDS);
    }

    fn publish(&mut self, kind: u64) {
        debug_assert!(!self.committed);
        let geom = &self.shared.geom;
        let hdr = geom.offset(self.pos) + FRAME_HEADER_BYTES;
        let body = frame::record_bytes(self.len);
        let records = if kind == KIND_RECORDS {
            self.shared
                .storage
                .word(hdr / 8)
                .store(self.len as u64, Ordering::Relaxed);
            1
        } else {
            0
        };
        self.shared.publish(self.pos, kind, body, records);
        if kind == KIND_PADDING {
            // A consumer may be asleep waiting on exactly this frame.
            wait::notify(&self.shared.storage.control().data_wait.0);
        }
        self.committed = true;
    }
}

impl<S: RingStorage> Drop for Reservation<'_, S> {
    fn drop(&mut self) {
        if !self.committed {
            // Abandoned: publish as padding so the consumer skips it.
            self.publish(KIND_PADDING);
        }
    }
}
