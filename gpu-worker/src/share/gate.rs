//! One worker's launch token bucket. Exists to turn the board's view of
//! the device (who else is busy, with what share) into a bounded wait
//! before a launch.
//!
//! The bucket holds kernel-time tokens, in ns. It refills at the client's
//! effective share of wall time, `p / (p + Σ p of the other busy clients)`,
//! or at full rate when no other client was busy within
//! [`GateConfig::busy_window_ms`]; it is charged each launch's measured
//! kernel time; it holds at most [`GateConfig::burst_ms`]. A launch waits
//! while the bucket is in deficit **and** others are busy, for at most
//! [`GateConfig::wait_ms_max`] per launch; alone, a client never waits
//! (work-conserving), and its deficit is forgiven.

use std::ops::Deref;
use std::time::Duration;

use super::board::Board;
use super::clock::now_ns;

/// Tuning of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Another client counts as busy if it launched (or waited) within this
    /// many ms.
    pub busy_window_ms: u64,
    /// Most tokens the bucket holds, in ms of kernel time: how far a client
    /// may run ahead of its share after a quiet spell.
    pub burst_ms: u64,
    /// Longest one launch waits for tokens, in ms.
    pub wait_ms_max: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            busy_window_ms: 100,
            burst_ms: 20,
            wait_ms_max: 100,
        }
    }
}

/// What one [`ShareGate::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admit {
    /// Time waited for tokens, in ns (0: not throttled).
    pub waited_ns: u64,
}

/// A worker's token bucket over one slot of a [`Board`].
#[derive(Debug)]
pub struct ShareGate<R: Deref<Target = Board>> {
    board: R,
    slot: usize,
    owner: u64,
    /// Whether this gate claimed its slot (and frees it when dropped).
    claimed: bool,
    cfg: GateConfig,
    /// Tokens in ns of kernel time; negative is a deficit.
    tokens_ns: i64,
    /// When the bucket was last refilled (`CLOCK_MONOTONIC` ns).
    refilled_ns: u64,
}

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn to_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

impl<R: Deref<Target = Board>> ShareGate<R> {
    /// Claims a slot on `board` for session `owner` with `share_milli`;
    /// `None` when the board is full.
    pub fn new(board: R, owner: u64, share_milli: u32, cfg: GateConfig) -> Option<Self> {
        let slot = board.claim(owner, share_milli)?;
        Some(Self::with_slot(board, slot, owner, true, cfg))
    }

    /// Uses the slot someone else (the daemon, at admission) claimed for
    /// `owner` on `board`; `None` if there is none. The slot stays claimed
    /// when the gate is dropped: its claimer frees it.
    pub fn attach(board: R, owner: u64, cfg: GateConfig) -> Option<Self> {
        let slot = board.find(owner)?;
        Some(Self::with_slot(board, slot, owner, false, cfg))
    }

    fn with_slot(board: R, slot: usize, owner: u64, claimed: bool, cfg: GateConfig) -> Self {
        Self {
            board,
            slot,
            owner,
            claimed,
            cfg,
            tokens_ns: to_i64(ms_to_ns(cfg.burst_ms)),
            refilled_ns: now_ns(),
        }
    }

    /// The slot this gate holds.
    #[must_use]
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Current tokens in ns (negative: deficit).
    #[must_use]
    pub fn tokens_ns(&self) -> i64 {
        self.tokens_ns
    }

    /// Refills the bucket up to `now`; returns the effective share in
    /// thousandths and whether others are busy.
    fn refill(&mut self, now: u64) -> (u64, bool) {
        let since = now.saturating_sub(ms_to_ns(self.cfg.busy_window_ms));
        let others = u64::from(self.board.busy_others_milli(self.slot, since));
        let mine = u64::from(self.board.share_milli(self.slot).max(1));
        let eff_milli = if others == 0 {
            1000
        } else {
            (mine * 1000 / (mine + others)).max(1)
        };
        let dt = now.saturating_sub(self.refilled_ns);
        self.refilled_ns = now;
        let add = to_i64(dt.saturating_mul(eff_milli) / 1000);
        let burst = to_i64(ms_to_ns(self.cfg.burst_ms));
        self.tokens_ns = self.tokens_ns.saturating_add(add).min(burst);
        if others == 0 {
            // Alone: work-conserving, no debt carried into the next contention.
            self.tokens_ns = self.tokens_ns.max(0);
        }
        (eff_milli, others != 0)
    }

    /// Before a launch (or a graph launch): waits, bounded by
    /// [`GateConfig::wait_ms_max`], while the bucket is in deficit and
    /// other clients are busy.
    pub fn admit(&mut self) -> Admit {
        let start = now_ns();
        self.board.mark_busy(self.slot, start);
        let (eff_milli, contended) = self.refill(start);
        if !contended || self.tokens_ns >= 0 {
            return Admit::default();
        }
        let deficit = self.tokens_ns.unsigned_abs();
        let need_ns = deficit.saturating_mul(1000) / eff_milli;
        let wait_ns = need_ns.min(ms_to_ns(self.cfg.wait_ms_max));
        self.board.count_wait(self.slot);
        tracing::trace!(slot = self.slot, wait_ns, "compute share: launch throttled");
        std::thread::sleep(Duration::from_nanos(wait_ns));
        let end = now_ns();
        // Stay visibly busy while waiting, so the others keep yielding.
        self.board.mark_busy(self.slot, end);
        self.refill(end);
        Admit {
            waited_ns: end.saturating_sub(start),
        }
    }

    /// The board this gate's slot is on (its device's).
    #[must_use]
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// This gate's slot usage counters, for live metrics.
    #[must_use]
    pub fn usage(&self) -> &super::usage::UsageCells {
        self.board.usage(self.slot)
    }

    /// After a launch: charges its measured kernel time.
    pub fn charge(&mut self, kernel_ns: u64) {
        self.tokens_ns = self.tokens_ns.saturating_sub(to_i64(kernel_ns));
        self.board.charge(self.slot, kernel_ns);
        self.board.mark_busy(self.slot, now_ns());
    }
}

impl<R: Deref<Target = Board>> Drop for ShareGate<R> {
    fn drop(&mut self) {
        if self.claimed {
            self.board.release(self.owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn alone_never_waits_and_forgives_debt() {
        let board = Arc::new(Board::default());
        let mut g = ShareGate::new(Arc::clone(&board), 1, 100, GateConfig::default()).unwrap();
        g.charge(1_000_000_000);
        assert!(g.tokens_ns() < 0);
        assert_eq!(g.admit().waited_ns, 0);
        assert!(g.tokens_ns() >= 0);
    }

    #[test]
    fn contended_deficit_waits_bounded() {
        let board = Arc::new(Board::default());
        let cfg = GateConfig {
            wait_ms_max: 2,
            ..GateConfig::default()
        };
        let mut g = ShareGate::new(Arc::clone(&board), 1, 250, cfg).unwrap();
        let other = board.claim(2, 750).unwrap();
        board.mark_busy(other, now_ns());
        g.charge(1_000_000_000);
        let a = g.admit();
        assert!(a.waited_ns >= 2_000_000, "waited {}", a.waited_ns);
        assert!(g.tokens_ns() < 0, "one bounded wait cannot repay a second");
        assert_eq!(board.snapshot()[0].waits, 1);
        drop(g);
        assert_eq!(board.snapshot().len(), 1, "the gate's slot is freed");
        let a = ShareGate::attach(Arc::clone(&board), 2, cfg).unwrap();
        assert_eq!(a.slot(), other);
        assert!(ShareGate::attach(Arc::clone(&board), 3, cfg).is_none());
        drop(a);
        assert_eq!(
            board.snapshot().len(),
            1,
            "an attached gate leaves the slot"
        );
    }
}
