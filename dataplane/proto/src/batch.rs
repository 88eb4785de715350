//! The outgoing byte queue, cut into batches.
//!
//! Frames are encoded straight into one growing buffer; a batch is a
//! contiguous run of frames that `poll_transmit` hands out in one piece (one
//! doorbell on the ring, one `send` on TCP). The *open* batch is the tail
//! still accepting frames; sealing it records its end offset. Memory is
//! reused: the buffer is cleared once fully drained and compacted when the
//! sent prefix dominates, so the steady state allocates nothing.
//!
//! A batch may end in a frame that announces a trailer (bytes the driver
//! sends right after the batch, outside any frame); the queue remembers it
//! per batch so the connection can demand it when the batch is taken.

use std::collections::VecDeque;

/// Once this many sent bytes sit at the front of the buffer (and make up
/// more than half of it), they are compacted away.
const COMPACT_BYTES_MIN: usize = 64 << 10;

/// The trailer owed right after a sealed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTrailer {
    /// Sequence number of the call announcing it (the batch's last frame).
    pub id: u64,
    /// Trailer length in bytes (positive).
    pub len: u64,
}

/// Outgoing frames, grouped into sealed batches plus one open batch.
#[derive(Debug, Default)]
pub struct TxQueue {
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    head: usize,
    /// End offsets of sealed batches (and the trailer owed after each),
    /// oldest first.
    sealed: VecDeque<(usize, Option<BatchTrailer>)>,
    /// Start of the open batch (== end of the last sealed batch).
    open_start: usize,
    /// Frames in the open batch.
    open_frames: u32,
}

impl TxQueue {
    /// The buffer frames are appended to (the open batch's tail).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Records that one frame was appended to the open batch.
    #[inline]
    pub fn frame_added(&mut self) {
        self.open_frames += 1;
    }

    /// Frames in the open batch.
    #[must_use]
    pub fn open_frames(&self) -> u32 {
        self.open_frames
    }

    /// Bytes in the open batch.
    #[must_use]
    pub fn open_bytes(&self) -> usize {
        self.buf.len() - self.open_start
    }

    /// Seals the open batch at offset `end` (a frame boundary inside or at
    /// the end of the open batch); frames after `end` stay open.
    #[inline]
    pub fn seal_at(&mut self, end: usize, frames_sealed: u32) {
        debug_assert!(end >= self.open_start && end <= self.buf.len());
        debug_assert!(frames_sealed <= self.open_frames);
        if end == self.open_start {
            return;
        }
        self.sealed.push_back((end, None));
        self.open_start = end;
        self.open_frames -= frames_sealed;
    }

    /// Seals the whole open batch, whose last frame announces `trailer`:
    /// nothing can be appended behind that frame in this batch.
    pub fn seal_with_trailer(&mut self, trailer: BatchTrailer) {
        debug_assert!(self.open_frames > 0 && trailer.len > 0);
        self.seal();
        if let Some(last) = self.sealed.back_mut() {
            debug_assert!(last.1.is_none(), "batch already ends in a trailer");
            last.1 = Some(trailer);
        }
    }

    /// The trailer owed after the oldest sealed batch, if any.
    #[must_use]
    pub fn front_trailer(&self) -> Option<BatchTrailer> {
        self.sealed.front().and_then(|s| s.1)
    }

    /// Seals the whole open batch (no-op when empty).
    #[inline]
    pub fn seal(&mut self) {
        let end = self.buf.len();
        let n = self.open_frames;
        self.seal_at(end, n);
    }

    /// Whether a sealed batch is waiting.
    #[must_use]
    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Appends the oldest sealed batch to `out`; returns its length.
    #[inline]
    pub fn pop_batch(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        let (end, _) = self.sealed.pop_front()?;
        debug_assert!(end > self.head);
        out.extend_from_slice(&self.buf[self.head..end]);
        let n = end - self.head;
        self.head = end;
        self.reclaim();
        Some(n)
    }

    /// The oldest sealed batch, without removing it (zero-copy send).
    #[must_use]
    pub fn peek_batch(&self) -> Option<&[u8]> {
        let (end, _) = *self.sealed.front()?;
        Some(&self.buf[self.head..end])
    }

    /// Removes the oldest sealed batch after [`TxQueue::peek_batch`].
    pub fn advance_batch(&mut self) {
        if let Some((end, _)) = self.sealed.pop_front() {
            self.head = end;
            self.reclaim();
        }
    }

    /// Drops everything queued (used on close before queueing a final frame).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.sealed.clear();
        self.open_start = 0;
        self.open_frames = 0;
    }

    fn reclaim(&mut self) {
        if self.head == self.buf.len() {
            debug_assert!(self.sealed.is_empty() && self.open_frames == 0);
            self.buf.clear();
            self.head = 0;
            self.open_start = 0;
        } else if self.head >= COMPACT_BYTES_MIN && self.head * 2 > self.buf.len() {
            let shift = self.head;
            self.buf.drain(..shift);
            for (end, _) in &mut self.sealed {
                *end -= shift;
            }
            self.open_start -= shift;
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BatchTrailer, TxQueue};

    #[test]
    fn trailer_stays_with_its_batch() {
        let mut q = TxQueue::default();
        q.buf().extend_from_slice(b"aa");
        q.frame_added();
        let t = BatchTrailer { id: 7, len: 100 };
        q.seal_with_trailer(t);
        q.buf().extend_from_slice(b"b");
        q.frame_added();
        q.seal();
        assert_eq!(q.front_trailer(), Some(t));
        assert_eq!(
            q.peek_batch(),
            Some(&b"aa"[..]),
            "nothing appended behind it"
        );
        q.advance_batch();
        assert_eq!(q.front_trailer(), None);
        assert_eq!(q.peek_batch(), Some(&b"b"[..]));
    }

    #[test]
    fn batches_come_out_in_order_and_buffer_is_reused() {
        let mut q = TxQueue::default();
        q.buf().extend_from_slice(b"aa");
        q.frame_added();
        q.buf().extend_from_slice(b"bbb");
        q.frame_added();
        q.seal_at(2, 1);
        assert_eq!(q.open_frames(), 1);
        q.seal();
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(&mut out), Some(2));
        assert_eq!(q.pop_batch(&mut out), Some(3));
        assert_eq!(q.pop_batch(&mut out), None);
        assert_eq!(out, b"aabbb");
        assert_eq!(q.buf().len(), 0, "drained buffer is cleared for reuse");
    }
}
