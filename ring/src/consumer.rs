//! The single-consumer side: visit committed frames in order, release once.
//!
//! The consumer keeps its `head` locally and checks each frame's commit stamp
//! (one Acquire load per frame). After visiting a bounded number of records
//! it releases all their space with one Release store of `head`. Everything
//! read from shared memory is validated and clamped: a garbage header yields
//! [`Corruption`] and poisons the consumer, never a panic or a wild access.

use crate::error::{Corruption, PopError};
use crate::frame::{self, BATCH_RECORDS_MAX, FRAME_HEADER_BYTES, KIND_PADDING, KIND_RECORDS};
use crate::peer::PeerWatch;
use crate::shared::{check_position, RingShared};
use crate::storage::RingStorage;
use crate::sync::Ordering;
use crate::wait;
use std::sync::Arc;
use std::time::Instant;

/// Default bound on records visited by one `try_pop_batch` call.
pub const POP_RECORDS_MAX_DEFAULT: usize = 1024;

/// Consumer handle of one ring: a single owner (`Send`, methods take `&mut self`).
#[derive(Debug)]
pub struct Consumer<S: RingStorage> {
    shared: Arc<RingShared<S>>,
    head: u64,
    pop_records_max: usize,
    poisoned: Option<Corruption>,
}

/// Outcome of inspecting the frame at the consumer's position.
enum Frame {
    /// No committed frame there yet.
    Pending,
    /// A frame of `len` bytes holding `records` records (0 for padding).
    Ready { len: usize, meta: frame::Meta },
}

impl<S: RingStorage> Consumer<S> {
    pub(crate) fn from_shared(shared: Arc<RingShared<S>>) -> Self {
        let raw = shared.storage.control().head.0.load(Ordering::Acquire);
        // A peer could have planted an impossible head before we attached:
        // start poisoned rather than risk overflowing position arithmetic.
        let (head, poisoned) = match check_position("head", raw) {
            Ok(head) => (head, None),
            Err(c) => (0, Some(c)),
        };
        Self {
            shared,
            head,
            pop_records_max: POP_RECORDS_MAX_DEFAULT,
            poisoned,
        }
    }

    /// Sets the bound on records visited per pop call (at least one frame is
    /// always visited, so the effective bound is this plus one frame).
    pub fn set_pop_records_max(&mut self, records: usize) {
        self.pop_records_max = records.max(1);
    }

    /// Absolute position of the next frame to read.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.head
    }

    /// Visits every committed record (up to the per-call bound) in order,
    /// then releases their space with one store. Returns how many records
    /// were visited; `Ok(0)` when none is committed.
    ///
    /// # Errors
    /// [`PopError::Corrupt`] when shared memory holds an invalid frame; the
    /// consumer then stays poisoned. Records before the bad one were visited.
    pub fn try_pop_batch<F: FnMut(&[u8])>(&mut self, mut f: F) -> Result<usize, PopError> {
        if let Some(c) = &self.poisoned {
            return Err(c.clone().into());
        }
        let start = self.head;
        let mut visited = 0usize;
        let mut result = Ok(());
        while visited < self.pop_records_max {
            match self.inspect(self.head) {
                Ok(Frame::Pending) => break,
                Ok(Frame::Ready { len, meta }) => {
                    if meta.kind == KIND_RECORDS {
                        if let Err(c) = self.visit(meta, &mut f, &mut visited) {
                            result = Err(c);
                            break;
                        }
                    }
                    self.head += len as u64;
                }
                Err(c) => {
                    result = Err(c);
                    break;
                }
            }
        }
        if self.head != start {
            let ctl = self.shared.storage.control();
            ctl.head.0.store(self.head, Ordering::Release);
            wait::notify(&ctl.space_wait.0);
        }
        match result {
            Ok(()) => Ok(visited),
            Err(c) => {
                tracing::warn!(error = %c, "ring corrupt; consumer poisoned");
                self.poisoned = Some(c.clone());
                Err(c.into())
            }
        }
    }

    /// Like [`try_pop_batch`](Self::try_pop_batch), but when nothing is
    /// committed it spins, then sleeps on the futex in bounded slices until
    /// records arrive, `deadline` passes or `peer` dies.
    ///
    /// # Errors
    /// [`PopError::Corrupt`], or [`PopError::Wait`] with
    /// [`WaitError::Timeout`](crate::WaitError::Timeout) /
    /// [`WaitError::PeerDead`](crate::WaitError::PeerDead).
    pub fn pop_wait<F: FnMut(&[u8])>(
        &mut self,
        deadline: Instant,
        peer: Option<&PeerWatch>,
        mut f: F,
    ) -> Result<usize, PopError> {
        loop {
            let n = self.try_pop_batch(&mut f)?;
            if n > 0 {
                return Ok(n);
            }
            let shared = &*self.shared;
            let head = self.head;
            let cell = &shared.storage.control().data_wait.0;
            wait::wait_until(cell, deadline, peer, || {
                Ok::<bool, PopError>(shared.committed_at(head))
            })?;
        }
    }

    /// Checks the frame at `pos`: committed? header sane?
    fn inspect(&self, pos: u64) -> Result<Frame, Corruption> {
        let shared = &*self.shared;
        let geom = &shared.geom;
        if !shared.committed_at(pos) {
            return Ok(Frame::Pending);
        }
        let off = geom.offset(pos);
        let meta_word = shared.storage.word(off / 8 + 1).load(Ordering::Relaxed);
        let meta = frame::unpack_meta(meta_word).ok_or(Corruption::FrameKind {
            position: pos,
            meta: meta_word,
        })?;
        let len = frame::frame_bytes(meta.body_bytes);
        let bound = match meta.kind {
            KIND_PADDING => geom.capacity - off,
            KIND_RECORDS => geom.frame_bytes_max.min(geom.capacity - off),
            _ => {
                return Err(Corruption::FrameKind {
                    position: pos,
                    meta: meta_word,
                })
            }
        };
        if len > bound {
            return Err(Corruption::FrameLength {
                position: pos,
                frame_bytes: len as u64,
                bound_bytes: bound as u64,
            });
        }
        Ok(Frame::Ready { len, meta })
    }

    /// Hands each record of the records frame at `self.head` to `f`.
    fn visit<F: FnMut(&[u8])>(
        &self,
        meta: frame::Meta,
        f: &mut F,
        visited: &mut usize,
    ) -> Result<(), Corruption> {
        let shared = &*self.shared;
        let geom = &shared.geom;
        let position = self.head;
        let bad = |index: usize, reason: &'static str| Corruption::Record {
            position,
            index: index as u32,
            reason,
        };
        if meta.records == 0 || meta.records > BATCH_RECORDS_MAX {
            return Err(bad(0, "record count out of range"));
        }
        let start = geom.offset(position) + FRAME_HEADER_BYTES;
        // `inspect` bounded the whole frame inside the data area.
        let end = start + meta.body_bytes;
        let mut cur = start;
        for index in 0..meta.records {
            if end - cur < frame::RECORD_HEADER_BYTES {
                return Err(bad(index, "record header past frame end"));
            }
            let word = shared.storage.word(cur / 8).load(Ordering::Relaxed);
            if word >> 32 != 0 {
                return Err(bad(index, "record length word has reserved bits set"));
            }
            let len = word as usize;
            if len > geom.max_record_bytes {
                return Err(bad(index, "record length above max record size"));
            }
            let rec = frame::record_bytes(len);
            if end - cur < rec {
                return Err(bad(index, "record payload past frame end"));
            }
            // SAFETY: [cur + 8, cur + 8 + len) is inside this committed frame
            // (checked above), whose stamp `inspect` Acquire-loaded; `head`
            // is advanced only after this call returns, and the borrow does
            // not escape `f`'s call.
            let payload = unsafe {
                crate::raw::slice(&shared.storage, cur + frame::RECORD_HEADER_BYTES, len)
            };
            f(payload);
            *visited += 1;
            cur += rec;
        }
        if cur != end {
            return Err(bad(meta.records, "body length disagrees with its records"));
        }
        Ok(())
    }
}
