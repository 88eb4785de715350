//! The send staging ring: registered memory that non-inline work requests
//! read from until their completion.
//!
//! Exists because `Transport::send` lets the caller reuse its buffer on
//! return, while the NIC reads a posted buffer until the WR completes. Space
//! is handed out contiguously and released in completion order (an RC send
//! queue completes in posting order).

use std::collections::VecDeque;

/// Byte accounting of the staging area (the memory itself is a `Region`).
#[derive(Debug)]
pub(crate) struct StageRing {
    cap: usize,
    /// Absolute bytes handed out (allocation position is `tail % cap`).
    tail: u64,
    /// Bytes handed out and not yet released (padding included).
    used: usize,
    /// Per posted send WR, in posting order: the bytes its completion releases.
    releases: VecDeque<usize>,
}

impl StageRing {
    /// An empty ring of `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0);
        Self {
            cap,
            tail: 0,
            used: 0,
            releases: VecDeque::new(),
        }
    }

    /// Reserves `len` (at most half the capacity) contiguous bytes (skipping the ring's tail end if needed).
    /// Returns the offset, or `None` until completions release enough.
    /// The caller must follow with [`StageRing::push_wr`] carrying the returned release size.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<(usize, usize)> {
        // len <= cap/2 makes pad + len <= cap, so an empty ring always satisfies it.
        assert!(len > 0 && len <= self.cap / 2);
        let off = (self.tail % self.cap as u64) as usize;
        let pad = if off + len > self.cap {
            self.cap - off
        } else {
            0
        };
        if self.used + pad + len > self.cap {
            return None;
        }
        self.tail += (pad + len) as u64;
        self.used += pad + len;
        let start = if pad > 0 { 0 } else { off };
        Some((start, pad + len))
    }

    /// Records one posted send WR releasing `bytes` (0 for inline or credit writes).
    pub(crate) fn push_wr(&mut self, bytes: usize) {
        self.releases.push_back(bytes);
    }

    /// Takes back the space of the oldest outstanding WR (its completion arrived).
    /// Returns false if no WR was outstanding (a completion we did not post).
    pub(crate) fn complete_oldest(&mut self) -> bool {
        match self.releases.pop_front() {
            Some(b) => {
                debug_assert!(b <= self.used);
                self.used -= b;
                true
            }
            None => false,
        }
    }

    /// Send WRs posted and not completed.
    pub(crate) fn outstanding(&self) -> usize {
        self.releases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_releases_in_order() {
        let mut s = StageRing::new(100);
        let (a, ra) = s.alloc(40).unwrap();
        s.push_wr(ra);
        let (b, rb) = s.alloc(30).unwrap();
        s.push_wr(rb);
        assert_eq!((a, b), (0, 40));
        assert!(s.alloc(45).is_none(), "only 30 bytes left");
        assert!(s.complete_oldest());
        // 30 bytes at the end are skipped: the allocation starts at 0.
        assert!(
            s.alloc(45).is_none(),
            "pad 30 + 45 does not fit beside 30 in use"
        );
        let (c, rc) = s.alloc(40).unwrap();
        assert_eq!((c, rc), (0, 70));
        s.push_wr(rc);
        assert_eq!(s.outstanding(), 2);
        assert!(s.complete_oldest() && s.complete_oldest());
        assert!(!s.complete_oldest());
        assert_eq!(s.alloc(50).unwrap().0, 40);
    }
}
