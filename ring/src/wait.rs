//! The waiting protocol: bounded spinning, then futex sleeps in short slices.
//!
//! # Why no wake-up is lost (Dekker with SeqCst fences)
//!
//! Waker (producer after a commit, consumer after releasing space):
//! `store(condition, Release); fence(SeqCst); if waiters.load() != 0 { seq += 1; wake }`.
//!
//! Sleeper: `s = seq.load(); waiters += 1; fence(SeqCst); if !condition() { futex_wait(seq, s) }`.
//!
//! The two SeqCst fences are totally ordered. If the sleeper's fence comes
//! first, its `waiters += 1` is visible to the waker's load, so the waker bumps
//! `seq` and wakes: the bump either precedes the kernel's `seq == s` check
//! (the wait returns at once) or follows the sleeper's enqueue (the wake finds
//! it). If the waker's fence comes first, the condition store is visible to the
//! sleeper's re-check and it does not sleep. So a waker only pays for a
//! syscall when someone registered as a sleeper, and spinning consumers cost
//! producers nothing but one fence and one load of a line they rarely share.
//!
//! Every sleep is at most [`SLEEP_SLICE_MS_MAX`]; between slices the waiter
//! re-checks its deadline and its [`PeerWatch`], so nothing waits forever.

use crate::control::WaitCell;
use crate::error::WaitError;
use crate::peer::PeerWatch;
use crate::sync::{fence, futex_wait, futex_wake_all, Backoff, Ordering};
use std::time::{Duration, Instant};

/// Longest single futex sleep, so deadlines and peer death are noticed promptly.
pub const SLEEP_SLICE_MS_MAX: u64 = 10;

/// Wakes all sleepers of `cell` if any registered. Call after publishing the
/// condition with a Release (or stronger) store.
#[inline]
pub(crate) fn notify(cell: &WaitCell) {
    fence(Ordering::SeqCst);
    if cell.waiters.load(Ordering::Relaxed) != 0 {
        cell.seq.fetch_add(1, Ordering::Release);
        futex_wake_all(&cell.park, &cell.seq);
    }
}

/// Waits until `ready` returns `Ok(true)`, the deadline passes, or the peer dies.
///
/// `ready` must be cheap and must read the condition with Acquire loads.
pub(crate) fn wait_until<E, F>(
    cell: &WaitCell,
    deadline: Instant,
    peer: Option<&PeerWatch>,
    mut ready: F,
) -> Result<(), E>
where
    E: From<WaitError>,
    F: FnMut() -> Result<bool, E>,
{
    let start = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        if ready()? {
            return Ok(());
        }
        if !backoff.snooze() {
            break;
        }
    }
    let slice_max = Duration::from_millis(SLEEP_SLICE_MS_MAX);
    loop {
        if let Some(peer) = peer {
            peer.check_alive()?;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                waited: now.duration_since(start),
            }
            .into());
        }
        let slice = (deadline - now).min(slice_max);

        let seq = cell.seq.load(Ordering::Acquire);
        cell.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let ready_before_sleep = ready();
        if matches!(ready_before_sleep, Ok(false)) {
            futex_wait(&cell.park, &cell.seq, seq, slice);
        }
        cell.waiters.fetch_sub(1, Ordering::Relaxed);
        if ready_before_sleep? || ready()? {
            return Ok(());
        }
    }
}
