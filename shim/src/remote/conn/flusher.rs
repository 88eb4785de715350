//! The background flusher: sends a queued async batch a bounded time after its first call
//! (the linger, plus the kernel's timer slack and scheduling), even when the program makes
//! no further driver call.
//!
//! Exists because batching alone holds the last batch of a burst in the client until the
//! program calls in again: a program that launches kernels and then works on the host (what
//! PyTorch does every step) would leave the GPU idle meanwhile. [`Conn::submit_async`] marks
//! when the open batch got its first call ([`FlushMark`], readable without the connection
//! lock) and unparks this thread once per batch, not per call. The thread sleeps until that
//! moment plus the linger bound and looks again: when the program sealed and sent the batch
//! itself (a burst: its next submit saw the linger pass), the mark is gone or newer and the
//! thread neither locks nor sends. Only a batch still unsent at its due time makes it take
//! the lock and send.
//!
//! The thread never waits for credit: async credit is spent when a call is queued, so what
//! it sends is already paid for. It only ever *tries* the connection lock: a holder is
//! inside a call that sends what is queued before it waits (sync calls, credit waits) or
//! returns at once (submits), so the thread looks again one linger later instead of queueing
//! behind it; it cannot deadlock with a caller and never makes a caller's unlock wake it. It
//! is detached: at process exit it stops with the process, holding nothing that needs
//! releasing. A forked child has no flusher (threads are not copied) and never starts one:
//! it never uses the parent's connection (see `remote::fork`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

use super::{Conn, ConnError};

/// Longest the idle flusher parks before re-checking the connection, in milliseconds (a
/// belt-and-braces bound: every submit that opens a batch unparks it anyway).
pub const FLUSHER_IDLE_PARK_MS: u64 = 1_000;

/// The flusher's thread name (visible in `top -H`, debuggers and logs).
pub const FLUSHER_THREAD_NAME: &str = "rgpu-flusher";

/// When the open (unsent) async batch got its first call, shared between a connection and
/// its flusher. Written only under the connection lock; read by the flusher without it.
#[derive(Debug)]
pub(super) struct FlushMark {
    epoch: Instant,
    /// Nanoseconds after `epoch`, plus one; 0 when nothing is queued.
    since_ns_plus_one: AtomicU64,
}

impl FlushMark {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            since_ns_plus_one: AtomicU64::new(0),
        })
    }

    /// When the unsent batch got its first call, if one is queued.
    pub(super) fn get(&self) -> Option<Instant> {
        match self.since_ns_plus_one.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }

    /// Marks `now` unless a mark is set; returns whether it was newly set.
    fn set_if_clear(&self, now: Instant) -> bool {
        if self.since_ns_plus_one.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        self.since_ns_plus_one.store(ns + 1, Ordering::Release);
        true
    }

    /// Nothing is queued any more.
    pub(super) fn clear(&self) {
        self.since_ns_plus_one.store(0, Ordering::Release);
    }
}

/// What the flusher should do next, decided under the connection lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlushStep {
    /// Nothing queued: park until a submit opens a batch.
    Idle,
    /// The open batch's first call is younger than the linger bound: sleep until then.
    WaitUntil(Instant),
    /// The connection is closed: nothing will ever be sent again.
    Closed,
}

impl Conn {
    /// Called by [`Conn::submit_async`] after its own send attempt: marks when the open batch
    /// (if any is left) got its first call and wakes the flusher, once per batch.
    pub(super) fn arm_flusher(&mut self) {
        if !self.batch_maybe_open() {
            // Everything queued was sent (the batch was sealed by size or linger).
            self.mark.clear();
            return;
        }
        if self.mark.set_if_clear(Instant::now()) {
            if let Some(t) = &self.flusher {
                // An atomic swap; a system call only when the flusher is parked (idle).
                t.unpark();
            }
        }
    }

    /// Whether an async batch may still be open (unsent). Exact while no sync call is
    /// outstanding (the client's only deadline is then the linger); otherwise conservatively
    /// true, which costs at most one needless wake-up.
    fn batch_maybe_open(&self) -> bool {
        self.client.pending_sync() > 0 || self.client.poll_timeout().is_some()
    }

    /// The flusher's step: sends the queued batch when its first call has waited the linger
    /// bound, else says how long to wait.
    pub(super) fn flush_if_due(&mut self, now: Instant) -> Result<FlushStep, ConnError> {
        if self.client.close_reason().is_some() {
            return Ok(FlushStep::Closed);
        }
        let Some(since) = self.mark.get() else {
            return Ok(FlushStep::Idle);
        };
        let due = since + self.linger;
        if now < due {
            return Ok(FlushStep::WaitUntil(due));
        }
        let before = self.batches_sent;
        self.flush("flusher")?;
        debug_assert!(self.mark.get().is_none());
        if self.batches_sent > before {
            self.flushes_by_flusher += 1;
        }
        Ok(FlushStep::Idle)
    }
}

/// Starts the connection's flusher thread, once per process; later calls do nothing.
/// Failing to start it is logged and leaves the connection working as before (batches then
/// go out at the program's next call).
pub fn start_flusher(lock: &'static Mutex<Conn>) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if let Err(e) = spawn_flusher(lock) {
            tracing::warn!(
                error = %e,
                "rgpu shim: cannot start the flusher thread; queued async calls will wait for \
                 the program's next driver call"
            );
        }
    });
}

/// Spawns a flusher thread for `lock`'s connection and tells the connection about it.
fn spawn_flusher(lock: &'static Mutex<Conn>) -> std::io::Result<()> {
    let mut conn = lock_conn(lock);
    let mark = Arc::clone(&conn.mark);
    let linger = conn.linger;
    let handle = std::thread::Builder::new()
        .name(FLUSHER_THREAD_NAME.into())
        .spawn(move || run(lock, &mark, linger))?;
    conn.flusher = Some(handle.thread().clone());
    Ok(())
}

fn lock_conn(lock: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    // Poisoning: as in `Session::conn`, the client's state machine stays consistent.
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection if no caller holds it now.
fn try_lock_conn(lock: &Mutex<Conn>) -> Option<MutexGuard<'_, Conn>> {
    match lock.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The thread's loop: park while idle, sleep to the due time, send if still unsent, repeat.
fn run(lock: &Mutex<Conn>, mark: &FlushMark, linger: Duration) {
    let mut reported = false;
    loop {
        let Some(since) = mark.get() else {
            std::thread::park_timeout(Duration::from_millis(FLUSHER_IDLE_PARK_MS));
            continue;
        };
        if let Some(left) = (since + linger).checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
            continue;
        }
        let Some(mut conn) = try_lock_conn(lock) else {
            // A caller is inside a call; it sends what is queued before it waits, or returns
            // at once. Look again one linger later.
            std::thread::sleep(linger);
            continue;
        };
        let step = conn.flush_if_due(Instant::now());
        drop(conn);
        match step {
            Ok(FlushStep::Idle | FlushStep::WaitUntil(_)) => {}
            Ok(FlushStep::Closed) => {
                tracing::debug!("rgpu shim: connection closed; the flusher stops");
                return;
            }
            Err(e) => {
                // The program's next call meets the same failure and reports it; say it
                // here once, then wait for the next submit (or the idle bound) to retry.
                if !reported {
                    reported = true;
                    tracing::warn!(error = %e, "rgpu shim: background flush failed");
                }
                std::thread::park_timeout(Duration::from_millis(FLUSHER_IDLE_PARK_MS));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::RecvTimeoutError;

    use rgpu_proto::{Call, CudaError, EventHandle, EventRecord, StreamHandle};

    use super::super::fake_server::{self, Seen};
    use super::*;

    /// Bound on waiting for the fake server to see a call (liveness, not timing), in ms.
    const SEE_WAIT_MS_MAX: u64 = 20_000;

    fn record() -> Call<'static> {
        Call::EventRecord(EventRecord {
            event: EventHandle(0xe7e0_0000_0000),
        })
    }

    fn open() -> (&'static Mutex<Conn>, fake_server::FakeServer) {
        let server = fake_server::start(CudaError(1));
        let conn = Conn::open(&server.config).expect("connect to the fake server");
        (Box::leak(Box::new(Mutex::new(conn))), server)
    }

    #[test]
    fn flusher_sends_a_queued_call_without_a_further_call() {
        let (lock, server) = open();
        spawn_flusher(lock).expect("spawn");
        lock_conn(lock)
            .submit_async(&record(), StreamHandle(0))
            .expect("queued");
        // No further call on the connection: only the flusher can send it.
        let seen = server
            .seen
            .recv_timeout(Duration::from_millis(SEE_WAIT_MS_MAX));
        assert!(
            matches!(
                seen,
                Ok(Seen::Call {
                    name: "EventRecord",
                    ..
                })
            ),
            "{seen:?}"
        );
        let conn = lock_conn(lock);
        assert_eq!(conn.flushes_by_flusher(), 1);
        assert_eq!(conn.mark.get(), None);
    }

    #[test]
    fn without_a_flusher_the_call_waits_for_the_next_call() {
        // The behaviour the flusher fixes: nothing sends a lingering batch by itself.
        let (lock, server) = open();
        lock_conn(lock)
            .submit_async(&record(), StreamHandle(0))
            .expect("queued");
        let seen = server.seen.recv_timeout(Duration::from_millis(100));
        assert_eq!(seen, Err(RecvTimeoutError::Timeout));
        assert!(lock_conn(lock).mark.get().is_some());
        lock_conn(lock).flush("test").expect("flush");
        let seen = server
            .seen
            .recv_timeout(Duration::from_millis(SEE_WAIT_MS_MAX));
        assert!(matches!(seen, Ok(Seen::Call { .. })), "{seen:?}");
    }

    #[test]
    fn bursts_still_batch_with_a_flusher() {
        const CALLS: u64 = 200;
        let (lock, server) = open();
        spawn_flusher(lock).expect("spawn");
        let before = lock_conn(lock).batches_sent();
        for _ in 0..CALLS {
            // One lock per call, as the entry points take it.
            lock_conn(lock)
                .submit_async(&record(), StreamHandle(0))
                .expect("queued");
        }
        for _ in 0..CALLS {
            let seen = server
                .seen
                .recv_timeout(Duration::from_millis(SEE_WAIT_MS_MAX));
            assert!(matches!(seen, Ok(Seen::Call { .. })), "{seen:?}");
        }
        let batches = lock_conn(lock).batches_sent() - before;
        // Every call arrived, in fewer doorbells than calls.
        assert!((1..CALLS).contains(&batches), "{batches} batches");
    }

    #[test]
    fn flush_step_waits_for_the_linger_then_sends() {
        let (lock, server) = open();
        let mut conn = lock_conn(lock);
        let now = Instant::now();
        assert_eq!(conn.flush_if_due(now).expect("idle"), FlushStep::Idle);
        conn.submit_async(&record(), StreamHandle(0))
            .expect("queued");
        let since = conn.mark.get().expect("armed by the submit");
        let linger = conn.linger;
        assert!(linger > Duration::ZERO);
        assert_eq!(
            conn.flush_if_due(since).expect("early"),
            FlushStep::WaitUntil(since + linger)
        );
        assert_eq!(conn.flushes_by_flusher(), 0);
        assert_eq!(
            conn.flush_if_due(since + linger).expect("due"),
            FlushStep::Idle
        );
        assert_eq!(conn.flushes_by_flusher(), 1);
        drop(conn);
        let seen = server
            .seen
            .recv_timeout(Duration::from_millis(SEE_WAIT_MS_MAX));
        assert!(matches!(seen, Ok(Seen::Call { .. })), "{seen:?}");
    }
}
