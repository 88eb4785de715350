//! Kernel time of asynchronous launches, measured with CUDA events, for
//! the compute share (`Backend::take_kernel_ns`).
//!
//! Exists because a `cuLaunchKernel` returns before the kernel runs, so its
//! wall time says nothing. Each launch is bracketed by a pair of events
//! recorded on the launch's stream; completed pairs are found without
//! blocking (`cuEventQuery` on the end event, then `cuEventElapsedTime`)
//! and their time handed to the share gate at the next launch.
//!
//! Bounds: at most [`PAIRS_MAX`] pairs exist per session and are reused.
//! When all are in flight the oldest is waited for (`cuEventSynchronize`),
//! so a client cannot outrun its accounting by queueing more launches than
//! there are pairs. Pairs are polled oldest first and polling stops at the
//! first one still running, so each launch costs at most one query beyond
//! the completed pairs.
//!
//! The event calls sit behind [`EventApi`] so the bookkeeping is tested
//! with a fake clock; [`DriverEvents`] is the driver's.

use std::collections::VecDeque;

use rgpu_proto::CudaError;

/// Most event pairs one session creates (each pair times one launch in
/// flight).
pub const PAIRS_MAX: usize = 256;

/// The event operations the timer needs. `Event` is a driver handle;
/// `stream` is a raw `CUstream` value.
pub trait EventApi {
    /// An event handle.
    type Event: Copy;
    /// `cuEventCreate` with timing enabled.
    ///
    /// # Errors
    /// The driver's.
    fn create(&mut self) -> Result<Self::Event, CudaError>;
    /// `cuEventRecord`.
    ///
    /// # Errors
    /// The driver's.
    fn record(&mut self, event: Self::Event, stream: usize) -> Result<(), CudaError>;
    /// `cuEventQuery`: `Ok(true)` when done, `Ok(false)` while not ready.
    ///
    /// # Errors
    /// The driver's (a faulted context).
    fn query(&mut self, event: Self::Event) -> Result<bool, CudaError>;
    /// `cuEventSynchronize`.
    ///
    /// # Errors
    /// The driver's.
    fn synchronize(&mut self, event: Self::Event) -> Result<(), CudaError>;
    /// `cuEventElapsedTime` between two completed events, in ns.
    ///
    /// # Errors
    /// The driver's.
    fn elapsed_ns(&mut self, start: Self::Event, end: Self::Event) -> Result<u64, CudaError>;
    /// `cuEventDestroy` (failures ignored: the event is gone either way).
    fn destroy(&mut self, event: Self::Event);
}

/// A start/end event pair.
#[derive(Debug, Clone, Copy)]
pub struct Pair<E> {
    start: E,
    end: E,
}

/// What the timer has counted (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Launches timed to completion.
    pub timed: u64,
    /// Launches not timed (an event call failed).
    pub untimed: u64,
    /// Waits for the oldest pair because all were in flight.
    pub pool_waits: u64,
}

/// Per-session launch timer. See the module docs.
#[derive(Debug)]
pub struct KernelTimer<A: EventApi> {
    api: A,
    free: Vec<Pair<A::Event>>,
    in_flight: VecDeque<Pair<A::Event>>,
    created: usize,
    pending_ns: u64,
    stats: TimerStats,
}

impl<A: EventApi> KernelTimer<A> {
    /// A timer creating its events through `api` as needed.
    pub fn new(api: A) -> Self {
        Self {
            api,
            free: Vec::new(),
            in_flight: VecDeque::new(),
            created: 0,
            pending_ns: 0,
            stats: TimerStats::default(),
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> TimerStats {
        self.stats
    }

    /// Pairs currently existing (free or in flight), at most [`PAIRS_MAX`].
    #[must_use]
    pub fn pairs(&self) -> usize {
        self.created
    }

    /// Before a launch on `stream`: records a start event there. `None`
    /// (counted as untimed) when no pair could be had or recorded.
    pub fn begin(&mut self, stream: usize) -> Option<Pair<A::Event>> {
        let pair = match self.acquire() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(code = e.0, "launch not timed: no event pair");
                self.stats.untimed += 1;
                return None;
            }
        };
        if let Err(e) = self.api.record(pair.start, stream) {
            tracing::debug!(code = e.0, "launch not timed: start event not recorded");
            self.free.push(pair);
            self.stats.untimed += 1;
            return None;
        }
        Some(pair)
    }

    /// After the launch: records the end event when it was `launched`,
    /// else returns the pair unused.
    pub fn end(&mut self, pair: Pair<A::Event>, stream: usize, launched: bool) {
        if !launched {
            self.free.push(pair);
            return;
        }
        match self.api.record(pair.end, stream) {
            Ok(()) => self.in_flight.push_back(pair),
            Err(e) => {
                tracing::debug!(code = e.0, "launch not timed: end event not recorded");
                self.stats.untimed += 1;
                self.free.push(pair);
            }
        }
        debug_assert!(self.free.len() + self.in_flight.len() == self.created);
    }

    /// Kernel time of the launches completed since the last call, in ns
    /// (never blocks).
    pub fn take_ns(&mut self) -> u64 {
        self.reap();
        std::mem::take(&mut self.pending_ns)
    }

    /// Destroys every pair (session teardown; the context is synchronized
    /// first, so nothing is in flight on the device).
    pub fn clear(&mut self) {
        for p in self.free.drain(..).chain(self.in_flight.drain(..)) {
            self.api.destroy(p.start);
            self.api.destroy(p.end);
        }
        self.created = 0;
        self.pending_ns = 0;
    }

    fn acquire(&mut self) -> Result<Pair<A::Event>, CudaError> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        let mut created = Err(CudaError::NOT_READY);
        if self.created < PAIRS_MAX {
            created = self.create_pair();
            if created.is_ok() || self.in_flight.is_empty() {
                return created;
            }
        }
        // All pairs in flight (or no more events to be had): wait for the
        // oldest, then collect it.
        let Some(oldest) = self.in_flight.front().copied() else {
            return created;
        };
        self.stats.pool_waits += 1;
        if let Err(e) = self.api.synchronize(oldest.end) {
            // Its kernel faulted; reap() drops the pair below.
            tracing::debug!(code = e.0, "oldest timed launch failed");
        }
        self.reap();
        self.free.pop().ok_or(CudaError::NOT_READY)
    }

    fn create_pair(&mut self) -> Result<Pair<A::Event>, CudaError> {
        let start = self.api.create()?;
        let end = match self.api.create() {
            Ok(e) => e,
            Err(e) => {
                self.api.destroy(start);
                return Err(e);
            }
        };
        self.created += 1;
        Ok(Pair { start, end })
    }

    /// Collects completed pairs, oldest first, up to the first one still
    /// running; a pair whose events fail is destroyed.
    fn reap(&mut self) {
        while let Some(&p) = self.in_flight.front() {
            match self.api.query(p.end) {
                Ok(false) => break,
                Ok(true) => {
                    self.in_flight.pop_front();
                    match self.api.elapsed_ns(p.start, p.end) {
                        Ok(ns) => {
                            self.pending_ns = self.pending_ns.saturating_add(ns);
                            self.stats.timed += 1;
                        }
                        Err(_) => self.stats.untimed += 1,
                    }
                    self.free.push(p);
                }
                Err(_) => {
                    self.in_flight.pop_front();
                    self.api.destroy(p.start);
                    self.api.destroy(p.end);
                    self.created -= 1;
                    self.stats.untimed += 1;
                }
            }
        }
    }
}

/// [`EventApi`] on the driver, for the context current on the thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriverEvents;

/// `CU_EVENT_DEFAULT`: timing enabled, spin on synchronize.
const CU_EVENT_DEFAULT: u32 = 0;

impl EventApi for DriverEvents {
    type Event = usize;
    fn create(&mut self) -> Result<usize, CudaError> {
        super::driver::event_create(CU_EVENT_DEFAULT).map(|e| e as usize)
    }
    fn record(&mut self, event: usize, stream: usize) -> Result<(), CudaError> {
        super::driver::event_record(
            event as super::driver::CUevent,
            stream as super::driver::CUstream,
        )
    }
    fn query(&mut self, event: usize) -> Result<bool, CudaError> {
        match super::driver::event_query(event as super::driver::CUevent) {
            Ok(()) => Ok(true),
            Err(CudaError::NOT_READY) => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn synchronize(&mut self, event: usize) -> Result<(), CudaError> {
        super::driver::event_synchronize(event as super::driver::CUevent)
    }
    fn elapsed_ns(&mut self, start: usize, end: usize) -> Result<u64, CudaError> {
        let ms = super::driver::event_elapsed_ms(
            start as super::driver::CUevent,
            end as super::driver::CUevent,
        )?;
        // cuEventElapsedTime has about 0.5 µs resolution; never negative
        // for a pair recorded in order on one stream.
        Ok((f64::from(ms.max(0.0)) * 1e6) as u64)
    }
    fn destroy(&mut self, event: usize) {
        let _ = super::driver::event_destroy(event as super::driver::CUevent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// A device with a fake clock: each stream runs its kernels in order;
    /// an end event completes `kernel_ns` after the stream is free.
    #[derive(Default)]
    struct Fake {
        next: u32,
        /// Event → when it completes (once recorded).
        live: HashMap<u32, Option<u64>>,
        now: u64,
        stream_busy_until: HashMap<usize, u64>,
        kernel_ns: u64,
        fail_create_after: Option<u32>,
        faulted: bool,
    }

    #[derive(Clone, Default)]
    struct Api(Rc<RefCell<Fake>>);

    impl EventApi for Api {
        type Event = u32;
        fn create(&mut self) -> Result<u32, CudaError> {
            let mut f = self.0.borrow_mut();
            if f.fail_create_after.is_some_and(|n| f.next >= n) {
                return Err(CudaError::OUT_OF_MEMORY);
            }
            f.next += 1;
            let e = f.next;
            f.live.insert(e, None);
            Ok(e)
        }
        fn record(&mut self, e: u32, stream: usize) -> Result<(), CudaError> {
            let mut f = self.0.borrow_mut();
            let (now, kernel_ns) = (f.now, f.kernel_ns);
            let busy = f.stream_busy_until.entry(stream).or_insert(0);
            // Starts are created first in each pair, so they are odd.
            let at = if e % 2 == 1 {
                (*busy).max(now)
            } else {
                *busy = (*busy).max(now) + kernel_ns;
                *busy
            };
            *f.live.get_mut(&e).ok_or(CudaError::INVALID_HANDLE)? = Some(at);
            Ok(())
        }
        fn query(&mut self, e: u32) -> Result<bool, CudaError> {
            let f = self.0.borrow();
            if f.faulted {
                return Err(CudaError::ILLEGAL_ADDRESS);
            }
            let at = f.live[&e].ok_or(CudaError::INVALID_HANDLE)?;
            Ok(at <= f.now)
        }
        fn synchronize(&mut self, e: u32) -> Result<(), CudaError> {
            let mut f = self.0.borrow_mut();
            let at = f.live[&e].ok_or(CudaError::INVALID_HANDLE)?;
            f.now = f.now.max(at);
            Ok(())
        }
        fn elapsed_ns(&mut self, s: u32, e: u32) -> Result<u64, CudaError> {
            let f = self.0.borrow();
            match (f.live[&s], f.live[&e]) {
                (Some(a), Some(b)) => Ok(b - a),
                _ => Err(CudaError::INVALID_HANDLE),
            }
        }
        fn destroy(&mut self, e: u32) {
            self.0.borrow_mut().live.remove(&e);
        }
    }

    fn timer(kernel_ns: u64) -> (Api, KernelTimer<Api>) {
        let api = Api::default();
        api.0.borrow_mut().kernel_ns = kernel_ns;
        (api.clone(), KernelTimer::new(api))
    }

    fn launch(t: &mut KernelTimer<Api>, stream: usize) {
        let p = t.begin(stream).expect("a pair");
        t.end(p, stream, true);
    }

    #[test]
    fn completed_launches_are_charged_once_and_pairs_reused() {
        let (api, mut t) = timer(1000);
        launch(&mut t, 7);
        launch(&mut t, 7);
        assert_eq!(t.take_ns(), 0, "nothing ran yet");
        api.0.borrow_mut().now = 1500;
        assert_eq!(t.take_ns(), 1000, "the first kernel");
        assert_eq!(t.take_ns(), 0, "charged once");
        api.0.borrow_mut().now = 5000;
        assert_eq!(t.take_ns(), 1000, "the second, queued behind the first");
        launch(&mut t, 7);
        assert_eq!(t.pairs(), 2, "a free pair was reused");
        assert_eq!(t.stats().timed, 2);
    }

    #[test]
    fn a_full_pool_waits_for_the_oldest_pair() {
        let (_api, mut t) = timer(10);
        for _ in 0..PAIRS_MAX + 3 {
            launch(&mut t, 1);
        }
        assert_eq!(t.pairs(), PAIRS_MAX, "bounded");
        assert_eq!(t.stats().pool_waits, 3);
        // Each wait completed the oldest kernel (the fake clock jumps to
        // its end) and nothing later.
        assert_eq!(t.take_ns(), 30);
    }

    #[test]
    fn unlaunched_and_faulted_pairs_are_not_charged() {
        let (api, mut t) = timer(10);
        api.0.borrow_mut().fail_create_after = Some(2);
        let p = t.begin(3).unwrap();
        t.end(p, 3, false);
        assert_eq!(t.take_ns(), 0, "a failed launch is not charged");
        launch(&mut t, 3);
        // No second pair can be created: the in-flight one is waited for
        // and reused.
        let p = t.begin(3).expect("the reused pair");
        t.end(p, 3, true);
        assert_eq!(t.stats().pool_waits, 1);
        api.0.borrow_mut().faulted = true;
        assert_eq!(t.take_ns(), 10, "collected by the wait, before the fault");
        assert_eq!(t.pairs(), 0, "the faulted pair was destroyed");
        assert!(api.0.borrow().live.is_empty());
        launch_fails_untimed(&mut t);
        t.clear();
        assert!(api.0.borrow().live.is_empty(), "every event destroyed");
    }

    fn launch_fails_untimed(t: &mut KernelTimer<Api>) {
        let before = t.stats().untimed;
        assert!(t.begin(3).is_none(), "no event can be created");
        assert_eq!(t.stats().untimed, before + 1);
    }
}
