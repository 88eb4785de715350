//! Device utilization as NVML defines it: the percent of time over the
//! past sample period during which one or more kernels ran on the device.
//! Exists so `nvmlDeviceGetUtilizationRates` in the client (through the
//! `DeviceGetUtilization` call) and the daemon's `/metrics` can report a
//! figure measured on the server rather than one made up on the client.
//!
//! The input is kernel time already measured for the compute share: each
//! tenant's consumed kernel ns in its board slot ([`super::board`]), summed
//! over **all** tenants of the device, because NVML describes the device,
//! not the caller. Without a board, the caller's own session's kernel time
//! stands in (documented in `docs/worker.md`). A [`Window`] keeps a bounded
//! ring of [`Tally`] samples; a rate is the kernel time added between a
//! past sample and now, divided by the time between them.
//!
//! Honest limits: kernel time is charged when a kernel is measured
//! (after it ran), kernels of several tenants or streams that overlap are
//! summed (so the sum is an upper bound of "one or more kernels running"
//! and the percent is clamped to 100), and a tenant that leaves between two
//! samples takes its time since the earlier sample with it, unless the
//! sampler knows the kernel time of departed tenants
//! ([`Tally::with_retired`]: the daemon, which reads a slot when it reaps
//! its worker).

use std::collections::VecDeque;

use super::board::{Board, SLOTS_MAX};

/// Shortest sample period NVML documents (1/6 s), in ms, rounded up.
pub const PERIOD_MIN_MS: u64 = 167;
/// Longest sample period NVML documents (1 s), in ms.
pub const PERIOD_MAX_MS: u64 = 1000;
/// Samples a [`Window`] keeps. Samples are at least [`PERIOD_MIN_MS`]
/// apart, so 8 cover more than [`PERIOD_MAX_MS`].
pub const SAMPLES_MAX: usize = 8;

const NS_PER_MS: u64 = 1_000_000;

/// Kernel time per board slot at one instant: `(owner, kernel ns)` for
/// each slot in slot order; owner 0 is a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    slots: [(u64, u64); SLOTS_MAX],
    /// Kernel ns of tenants that left the board, in all (0 where unknown).
    retired_ns: u64,
}

/// Owner recorded by [`Tally::single`] (any nonzero value works: it is
/// only compared with itself).
const SINGLE_OWNER: u64 = 1;

impl Tally {
    /// Every tenant's kernel time on `board` now.
    #[must_use]
    pub fn of_board(board: &Board) -> Self {
        Self {
            slots: board.kernel_by_slot(),
            retired_ns: 0,
        }
    }

    /// This tally, plus `retired_ns` of kernel time that tenants who left
    /// the board consumed in all (monotonic; the daemon adds a slot's time
    /// when it frees the slot, under the same lock it takes to sample).
    #[must_use]
    pub fn with_retired(self, retired_ns: u64) -> Self {
        Self { retired_ns, ..self }
    }

    /// One session's own kernel time (no board).
    #[must_use]
    pub fn single(kernel_ns: u64) -> Self {
        let mut slots = [(0, 0); SLOTS_MAX];
        slots[0] = (SINGLE_OWNER, kernel_ns);
        Self {
            slots,
            retired_ns: 0,
        }
    }

    /// Kernel ns added since `earlier`: per slot, the growth when the same
    /// owner held it then, else all of the present owner's time (it claimed
    /// the slot after `earlier`, and slot counters start at 0 on claim);
    /// plus what departed owners consumed after `earlier` (the retired
    /// growth less what they had consumed by then; 0 when retired time is
    /// not tracked).
    #[must_use]
    pub fn since(&self, earlier: &Tally) -> u64 {
        let mut present = 0u64;
        let mut departed_then = 0u64;
        for (&(owner, now), &(then_owner, then)) in self.slots.iter().zip(earlier.slots.iter()) {
            if owner != 0 {
                present = present.saturating_add(if owner == then_owner {
                    now.saturating_sub(then)
                } else {
                    now
                });
            }
            if then_owner != 0 && then_owner != owner {
                departed_then = departed_then.saturating_add(then);
            }
        }
        let departed = self
            .retired_ns
            .saturating_sub(earlier.retired_ns)
            .saturating_sub(departed_then);
        present.saturating_add(departed)
    }
}

/// One utilization answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Utilization {
    /// Percent (0..=100) of the period during which kernels ran.
    pub gpu_percent: u32,
    /// Memory-controller percent: rgpu does not measure memory traffic
    /// (kernels' loads and stores are invisible to the worker), so 0.
    pub memory_percent: u32,
    /// The period the percent covers, in ns.
    pub period_ns: u64,
}

/// A bounded ring of samples and the rate over the past period.
#[derive(Debug, Clone)]
pub struct Window {
    /// `(CLOCK_MONOTONIC ns, tally)`, oldest first; never empty, at most
    /// [`SAMPLES_MAX`]. Neighbours are at least [`PERIOD_MIN_MS`] apart,
    /// except the newest, which may be closer to the one before it (it is
    /// *provisional*: the next sample replaces it), so the ring always
    /// spans more than [`PERIOD_MAX_MS`] once that much time has passed.
    samples: VecDeque<(u64, Tally)>,
}

impl Window {
    /// A window whose first sample is `tally` at `now_ns`.
    #[must_use]
    pub fn new(now_ns: u64, tally: Tally) -> Self {
        let mut samples = VecDeque::with_capacity(SAMPLES_MAX);
        samples.push_back((now_ns, tally));
        Self { samples }
    }

    /// Whether a sample taken at `now_ns` would be kept (the newest is at
    /// least [`PERIOD_MIN_MS`] old): lets a hot path skip building a tally.
    #[must_use]
    pub fn due(&self, now_ns: u64) -> bool {
        self.samples
            .back()
            .is_none_or(|&(at, _)| now_ns.saturating_sub(at) >= PERIOD_MIN_MS * NS_PER_MS)
    }

    /// Records `tally` at `now_ns` if [`Window::due`] (the cheap path of
    /// launches).
    pub fn observe(&mut self, now_ns: u64, tally: &Tally) {
        if self.due(now_ns) {
            self.record(now_ns, tally);
        }
    }

    /// Records `tally` at `now_ns`: replaces a provisional newest sample,
    /// else appends (dropping the oldest beyond [`SAMPLES_MAX`]).
    fn record(&mut self, now_ns: u64, tally: &Tally) {
        let min = PERIOD_MIN_MS * NS_PER_MS;
        let n = self.samples.len();
        let provisional =
            n >= 2 && self.samples[n - 1].0.saturating_sub(self.samples[n - 2].0) < min;
        if provisional {
            if let Some(newest) = self.samples.back_mut() {
                *newest = (now_ns.max(newest.0), *tally);
            }
            return;
        }
        if n == SAMPLES_MAX {
            self.samples.pop_front();
        }
        let at = self.samples.back().map_or(now_ns, |b| now_ns.max(b.0));
        self.samples.push_back((at, *tally));
        debug_assert!(!self.samples.is_empty() && self.samples.len() <= SAMPLES_MAX);
    }

    /// The utilization from a past sample to `tally` at `now_ns`, then
    /// records `tally` (always: a later answer never reaches back past this
    /// one's end for lack of a sample). The past sample is the oldest one between
    /// [`PERIOD_MIN_MS`] and [`PERIOD_MAX_MS`] old (NVML's range); if none
    /// is, the newest one older than that (nobody sampled for a while: the
    /// period is the time since), else the oldest (a window younger than
    /// [`PERIOD_MIN_MS`]: the period is its age).
    pub fn rate(&mut self, now_ns: u64, tally: &Tally) -> Utilization {
        let min = PERIOD_MIN_MS * NS_PER_MS;
        let max = PERIOD_MAX_MS * NS_PER_MS;
        let age = |at: u64| now_ns.saturating_sub(at);
        let reference = self
            .samples
            .iter()
            .find(|(at, _)| (min..=max).contains(&age(*at)))
            .or_else(|| self.samples.iter().rev().find(|(at, _)| age(*at) > max))
            .or_else(|| self.samples.front());
        let u = match reference {
            Some((at, then)) => {
                let period_ns = age(*at);
                let busy_ns = tally.since(then);
                Utilization {
                    gpu_percent: percent(busy_ns, period_ns),
                    memory_percent: 0,
                    period_ns,
                }
            }
            // Unreachable (a window is never empty); answer "no period".
            None => Utilization::default(),
        };
        self.record(now_ns, tally);
        debug_assert!(u.gpu_percent <= 100);
        u
    }
}

/// `busy / period` in whole percent, clamped to 100 (overlapping kernels
/// sum to more than the wall time); 0 for an empty period.
fn percent(busy_ns: u64, period_ns: u64) -> u32 {
    if period_ns == 0 {
        return 0;
    }
    let p = u128::from(busy_ns) * 100 / u128::from(period_ns);
    u32::try_from(p.min(100)).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    #[test]
    fn percent_clamps_and_handles_empty_periods() {
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent(250 * MS, 1000 * MS), 25);
        assert_eq!(percent(3000 * MS, 1000 * MS), 100, "overlapping kernels");
        assert_eq!(percent(u64::MAX, 1), 100);
    }

    #[test]
    fn tally_counts_growth_new_owners_and_not_departures() {
        let board = Board::default();
        let a = board.claim(7, 500).unwrap();
        board.charge(a, 100);
        let t0 = Tally::of_board(&board);
        board.charge(a, 40);
        let b = board.claim(9, 500).unwrap();
        board.charge(b, 25);
        let t1 = Tally::of_board(&board);
        assert_eq!(t1.since(&t0), 40 + 25);
        // 9 leaves and 11 takes its slot: 11's time is all new.
        board.release(9);
        let c = board.claim(11, 500).unwrap();
        assert_eq!(c, b, "the freed slot is reused");
        board.charge(c, 3);
        let t2 = Tally::of_board(&board);
        assert_eq!(t2.since(&t1), 3);
        assert_eq!(t2.since(&t2), 0);
        assert_eq!(Tally::single(50).since(&Tally::single(20)), 30);
    }

    #[test]
    fn retired_time_counts_only_after_the_earlier_sample() {
        let board = Board::default();
        let a = board.claim(7, 500).unwrap();
        board.charge(a, 100);
        let t0 = Tally::of_board(&board).with_retired(1_000);
        // 7 runs 30 more, then leaves: the sampler retires its 130.
        board.charge(a, 30);
        board.release(7);
        let t1 = Tally::of_board(&board).with_retired(1_130);
        assert_eq!(t1.since(&t0), 30, "only the time after t0");
        // Without retired tracking (a worker), the departed time is lost,
        // never subtracted from the others.
        let b = board.claim(8, 500).unwrap();
        board.charge(b, 5);
        let t2 = Tally::of_board(&board);
        assert_eq!(t2.since(&Tally::of_board(&board)), 0);
        assert_eq!(t2.since(&t0.with_retired(0)), 5);
    }

    /// A fake clock: every instant is explicit.
    #[test]
    fn busy_then_idle_with_a_fake_clock() {
        let t = |ms: u64| 1_000 * MS + ms * MS;
        let mut w = Window::new(t(0), Tally::single(0));
        // Young window: the period is its age (100 ms), half of it busy.
        let u = w.rate(t(100), &Tally::single(50 * MS));
        assert_eq!((u.gpu_percent, u.period_ns), (50, 100 * MS));
        assert_eq!(w.samples.len(), 2);
        assert_eq!(
            w.samples[1].0,
            t(100),
            "the query's instant is a (provisional) sample"
        );
        // Busy at 30 % with a sample every 200 ms, for 2 s.
        let mut busy = 0;
        for step in 1..=10u64 {
            busy += 60 * MS;
            w.observe(t(step * 200), &Tally::single(busy));
        }
        assert_eq!(w.samples.len(), SAMPLES_MAX, "bounded");
        let u = w.rate(t(2100), &Tally::single(busy));
        // The oldest sample within 1 s is at 1200 ms: 4 × 60 ms in 900 ms.
        assert_eq!(u.period_ns, 900 * MS);
        assert_eq!(u.gpu_percent, 26);
        // Idle for 5 s, nobody sampling: the first answer spans the gap
        // since the last answer (2100 ms), the next one a normal period.
        let u = w.rate(t(7100), &Tally::single(busy));
        assert_eq!((u.gpu_percent, u.period_ns), (0, 5000 * MS));
        let u = w.rate(t(7400), &Tally::single(busy));
        assert_eq!((u.gpu_percent, u.period_ns), (0, 300 * MS));
        // Fully busy again (more than the wall time: two tenants overlap).
        let u = w.rate(t(7700), &Tally::single(busy + 900 * MS));
        assert_eq!((u.gpu_percent, u.period_ns), (100, 600 * MS));
        assert_eq!(u.memory_percent, 0);
    }

    #[test]
    fn never_more_than_the_bound_and_due_respects_spacing() {
        let mut w = Window::new(0, Tally::single(0));
        assert!(!w.due(PERIOD_MIN_MS * MS - 1));
        assert!(w.due(PERIOD_MIN_MS * MS));
        for i in 1..100u64 {
            w.observe(i * PERIOD_MIN_MS * MS, &Tally::single(i));
            assert!(w.samples.len() <= SAMPLES_MAX);
        }
        // Faster sampling than the spacing keeps nothing new.
        let last = w.samples.back().unwrap().0;
        w.observe(last + 1, &Tally::single(0));
        assert_eq!(w.samples.back().unwrap().0, last);
    }

    /// Polled faster than the spacing (every 110 ms), the ring still moves
    /// on: the provisional newest sample is replaced until it is far
    /// enough from the one before, then kept.
    #[test]
    fn fast_polling_keeps_the_window_moving() {
        let mut w = Window::new(0, Tally::single(0));
        let mut busy = 0;
        for i in 1..=40u64 {
            // Busy for the first 2.2 s, idle after.
            if i <= 20 {
                busy += 55 * MS;
            }
            let u = w.rate(i * 110 * MS, &Tally::single(busy));
            assert!(w.samples.len() <= SAMPLES_MAX);
            assert!(u.period_ns <= PERIOD_MAX_MS * MS, "period {}", u.period_ns);
            if i == 20 {
                assert_eq!(u.gpu_percent, 50, "half busy");
            }
        }
        // 2.2 s of idle polling later, the last period is all idle.
        let u = w.rate(41 * 110 * MS, &Tally::single(busy));
        assert_eq!(u.gpu_percent, 0);
        for pair in w
            .samples
            .iter()
            .collect::<Vec<_>>()
            .windows(2)
            .rev()
            .skip(1)
        {
            assert!(pair[1].0 - pair[0].0 >= PERIOD_MIN_MS * MS, "spacing kept");
        }
    }
}
