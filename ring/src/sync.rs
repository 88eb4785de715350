//! Synchronisation primitives behind one seam, so `loom` can replace them.
//!
//! Under `cfg(loom)` the atomics, fences and the futex stand-in come from
//! [`loom`]; otherwise from `std` and the real Linux futex. The ring core only
//! ever names `crate::sync::*`, which is what lets the loom model check the
//! exact index and wake-up protocol that runs in production (crossbeam style).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Number of condition checks a waiter makes, one `pause` apart, before it yields and then
/// sleeps. A `pause` costs 10–140 cycles depending on the core (27 ns measured on the AMD EPYC
/// these machines run), so this spins for roughly 40–300 µs: longer than a round trip through
/// the worker, far shorter than a futex wake-up is worth.
#[cfg(not(loom))]
pub(crate) const SPIN_ITERATIONS_MAX: u32 = 4_096;

/// Number of `sched_yield`s after the pure spins, before sleeping.
#[cfg(not(loom))]
pub(crate) const YIELD_ITERATIONS_MAX: u32 = 64;

/// Bounded backoff: spin (checking the condition after every `pause`), then thread yields, then
/// "go to sleep".
///
/// The spin is deliberately *not* exponential: a latency-sensitive waiter that spins 2^k pauses
/// between checks sees a message up to 2^k pauses late (64 pauses are 1.7 µs here), which alone
/// would triple a shared-memory round trip. Exponential backoff is for contended CAS loops, and
/// the ring has none on the consumer side.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    #[cfg_attr(loom, allow(dead_code))]
    step: u32,
}

impl Backoff {
    /// Performs one backoff step; returns `false` once the budget is spent and
    /// the caller should block instead.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        if self.step < SPIN_ITERATIONS_MAX {
            std::hint::spin_loop();
            self.step += 1;
            true
        } else if self.step < SPIN_ITERATIONS_MAX + YIELD_ITERATIONS_MAX {
            std::thread::yield_now();
            self.step += 1;
            true
        } else {
            false
        }
    }

    /// Under loom spinning only multiplies the explored interleavings, so the
    /// model goes straight to the (modelled) futex.
    #[cfg(loom)]
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        false
    }
}

#[cfg(loom)]
pub(crate) use futex_loom::{futex_wait, futex_wake_all, FutexPark};
#[cfg(not(loom))]
pub(crate) use futex_os::{futex_wait, futex_wake_all, FutexPark};

#[cfg(not(loom))]
mod futex_os {
    //! The real futex: shared (not `FUTEX_PRIVATE`), because the word lives in
    //! a `MAP_SHARED` memfd mapping used by two processes.
    use super::AtomicU32;
    use rustix::thread::futex;
    use std::time::Duration;

    /// Per-word parking state; the kernel keeps it for the real futex.
    #[derive(Debug, Default)]
    #[repr(C)]
    pub(crate) struct FutexPark;

    /// Sleeps while `*word == expected`, for at most `timeout`.
    ///
    /// Spurious returns are allowed; callers re-check their condition.
    pub(crate) fn futex_wait(
        _park: &FutexPark,
        word: &AtomicU32,
        expected: u32,
        timeout: Duration,
    ) {
        let ts = rustix::time::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        // EAGAIN (value changed), EINTR and ETIMEDOUT are all "go re-check".
        let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
    }

    /// Wakes every sleeper on `word` (in any process mapping it).
    pub(crate) fn futex_wake_all(_park: &FutexPark, word: &AtomicU32) {
        if let Err(err) = futex::wake(word, futex::Flags::empty(), i32::MAX as u32) {
            tracing::warn!(%err, "futex wake failed");
        }
    }
}

#[cfg(loom)]
mod futex_loom {
    //! A loom-checkable futex stand-in: a mutex + condvar per word.
    //!
    //! The kernel checks `*word == expected` and enqueues the sleeper
    //! atomically with respect to `FUTEX_WAKE`; taking the mutex around the
    //! check and around the notification gives the same guarantee, so a lost
    //! wake-up in the ring protocol shows up as a loom deadlock.
    use super::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::sync::PoisonError;
    use std::time::Duration;

    /// Parking state standing in for the kernel's futex queue.
    #[derive(Debug, Default)]
    pub(crate) struct FutexPark {
        lock: Mutex<()>,
        cond: Condvar,
    }

    /// Blocks while `*word == expected` (no timeout under loom: a missed
    /// wake-up must deadlock so that loom reports it).
    pub(crate) fn futex_wait(
        park: &FutexPark,
        word: &AtomicU32,
        expected: u32,
        _timeout: Duration,
    ) {
        // Poisoning only follows a panic elsewhere in the model; keep going.
        let guard = park.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if word.load(Ordering::SeqCst) == expected {
            drop(
                park.cond
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// Wakes every thread blocked in [`futex_wait`] on this park.
    pub(crate) fn futex_wake_all(park: &FutexPark, _word: &AtomicU32) {
        let _guard = park.lock.lock().unwrap_or_else(PoisonError::into_inner);
        park.cond.notify_all();
    }
}
