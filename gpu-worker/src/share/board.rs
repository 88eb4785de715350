//! The per-device share board: one slot of atomics per client on that
//! device. Exists so workers in different processes see each other's
//! activity without locks or messages: the daemon places one [`Board`] per
//! device in shared memory (it is `#[repr(C)]`, only atomics, valid when
//! zeroed), and each worker claims one slot while its client is admitted.
//!
//! Every field is written by one worker (its slot) and read by all; a stale
//! read only shifts one throttling decision, which the next launch redoes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::usage::{Usage, UsageCells};

/// Slots per device board: the most clients one device's share tracks.
/// A client that finds no free slot runs unthrottled (and is logged).
pub const SLOTS_MAX: usize = 64;

/// One client's slot. All zero: free.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Slot {
    /// Owner: the session id, 0 when free.
    owner: AtomicU64,
    /// Share of the device, in thousandths (1..=1000 once claimed).
    share_milli: AtomicU32,
    /// Keeps the layout free of implicit padding.
    _pad: u32,
    /// `CLOCK_MONOTONIC` ns when the client last launched or waited.
    busy_ns: AtomicU64,
    /// Kernel time consumed in all, in ns.
    used_ns: AtomicU64,
    /// Launches that waited for tokens.
    waits: AtomicU64,
    /// Live usage counters (calls, bytes, memory), see [`super::usage`].
    usage: UsageCells,
}

/// Bytes of one [`Slot`].
const SLOT_BYTES: usize = 40 + std::mem::size_of::<UsageCells>();
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);

/// A device's board: [`SLOTS_MAX`] slots. Valid when all bytes are zero,
/// so a fresh shared mapping (memfd, `/dev/shm`) is an empty board.
#[repr(C)]
#[derive(Debug)]
pub struct Board {
    slots: [Slot; SLOTS_MAX],
}

const _: () = assert!(std::mem::size_of::<Board>() == SLOT_BYTES * SLOTS_MAX);
const _: () = assert!(std::mem::align_of::<Board>() == 8);

/// One slot's use, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotUse {
    /// Session id owning the slot.
    pub owner: u64,
    /// Its share, in thousandths.
    pub share_milli: u32,
    /// Kernel time consumed, in ns.
    pub used_ns: u64,
    /// Launches that waited for tokens.
    pub waits: u64,
    /// `CLOCK_MONOTONIC` ns of its last launch.
    pub busy_ns: u64,
    /// Live usage counters.
    pub usage: Usage,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl Board {
    /// Claims a free slot for `owner` (nonzero) with `share_milli`
    /// (clamped to 1..=1000); `None` when the board is full.
    pub fn claim(&self, owner: u64, share_milli: u32) -> Option<usize> {
        assert!(owner != 0, "owner 0 marks a free slot");
        let index = self.slots.iter().position(|s| {
            s.owner
                .compare_exchange(0, owner, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let s = &self.slots[index];
        s.share_milli
            .store(share_milli.clamp(1, 1000), Ordering::Release);
        s.busy_ns.store(0, Ordering::Relaxed);
        s.used_ns.store(0, Ordering::Relaxed);
        s.waits.store(0, Ordering::Relaxed);
        s.usage.reset();
        Some(index)
    }

    /// The slot `owner` (nonzero) holds, if any.
    #[must_use]
    pub fn find(&self, owner: u64) -> Option<usize> {
        if owner == 0 {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.owner.load(Ordering::Acquire) == owner)
    }

    /// Frees every slot `owner` holds (a worker at exit, or the daemon
    /// when it reaps a worker that died holding one); returns how many.
    pub fn release(&self, owner: u64) -> usize {
        let mut n = 0;
        for s in &self.slots {
            if owner != 0 && s.owner.load(Ordering::Acquire) == owner {
                s.share_milli.store(0, Ordering::Relaxed);
                s.busy_ns.store(0, Ordering::Relaxed);
                s.usage.reset();
                s.owner.store(0, Ordering::Release);
                n += 1;
            }
        }
        n
    }

    /// Sum of the shares of claimed slots other than `me` that were busy
    /// after `since_ns`.
    #[must_use]
    pub fn busy_others_milli(&self, me: usize, since_ns: u64) -> u32 {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, s)| {
                i != me
                    && s.owner.load(Ordering::Acquire) != 0
                    && s.busy_ns.load(Ordering::Relaxed) > since_ns
            })
            .map(|(_, s)| s.share_milli.load(Ordering::Relaxed))
            .fold(0u32, u32::saturating_add)
    }

    /// Marks slot `me` busy at `now_ns`.
    pub fn mark_busy(&self, me: usize, now_ns: u64) {
        self.slots[me].busy_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    /// Charges `kernel_ns` of kernel time to slot `me`.
    pub fn charge(&self, me: usize, kernel_ns: u64) {
        self.slots[me]
            .used_ns
            .fetch_add(kernel_ns, Ordering::Relaxed);
    }

    /// Counts one throttled launch of slot `me`.
    pub fn count_wait(&self, me: usize) {
        self.slots[me].waits.fetch_add(1, Ordering::Relaxed);
    }

    /// The share of slot `me`, in thousandths.
    #[must_use]
    pub fn share_milli(&self, me: usize) -> u32 {
        self.slots[me].share_milli.load(Ordering::Relaxed)
    }

    /// Slot `me`'s usage counters (written by its worker).
    #[must_use]
    pub fn usage(&self, me: usize) -> &UsageCells {
        &self.slots[me].usage
    }

    /// Each slot's `(owner, kernel ns consumed)`, in slot order (owner 0:
    /// free), for device utilization ([`super::utilization`]).
    #[must_use]
    pub fn kernel_by_slot(&self) -> [(u64, u64); SLOTS_MAX] {
        std::array::from_fn(|i| {
            let s = &self.slots[i];
            let owner = s.owner.load(Ordering::Acquire);
            let used = if owner == 0 {
                0
            } else {
                s.used_ns.load(Ordering::Relaxed)
            };
            (owner, used)
        })
    }

    /// Every claimed slot's state.
    #[must_use]
    pub fn snapshot(&self) -> Vec<SlotUse> {
        self.slots
            .iter()
            .filter_map(|s| {
                let owner = s.owner.load(Ordering::Acquire);
                (owner != 0).then(|| SlotUse {
                    owner,
                    share_milli: s.share_milli.load(Ordering::Relaxed),
                    used_ns: s.used_ns.load(Ordering::Relaxed),
                    waits: s.waits.load(Ordering::Relaxed),
                    busy_ns: s.busy_ns.load(Ordering::Relaxed),
                    usage: s.usage.snapshot(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_release_and_busy_sum() {
        let b = Board::default();
        let a = b.claim(7, 250).unwrap();
        let c = b.claim(9, 5000).unwrap();
        assert_ne!(a, c);
        assert_eq!(b.share_milli(c), 1000, "clamped");
        assert_eq!(b.busy_others_milli(a, 0), 0, "never busy");
        b.mark_busy(c, 100);
        assert_eq!(b.busy_others_milli(a, 50), 1000);
        assert_eq!(b.busy_others_milli(a, 100), 0, "busy before the window");
        assert_eq!(b.busy_others_milli(c, 0), 0, "itself excluded");
        b.charge(a, 30);
        b.count_wait(a);
        let snap = b.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[0].owner, snap[0].used_ns, snap[0].waits), (7, 30, 1));
        assert_eq!(b.find(9), Some(c));
        assert_eq!(b.find(0), None);
        assert_eq!(b.release(9), 1);
        assert_eq!(b.find(9), None);
        assert_eq!(b.busy_others_milli(a, 50), 0);
        assert_eq!(b.snapshot().len(), 1);
    }

    #[test]
    fn full_board_refuses() {
        let b = Board::default();
        for i in 1..=SLOTS_MAX as u64 {
            assert!(b.claim(i, 100).is_some());
        }
        assert_eq!(b.claim(999, 100), None);
    }
}
