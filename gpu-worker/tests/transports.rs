//! The worker over real transports in-process: `run_session` on a thread
//! serving an emulated backend, a protocol client on the test thread.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use common::scenarios::{self, Via, S0};
use common::{Conn, Kind, NetConn};
use rgpu_gpu_worker::Backend;
use rgpu_proto::*;

/// Copy sizes from 1 B to 16 MiB.
const SIZES: &[usize] = &[1, 255, 4096, 65_536 + 7, 1 << 20, 16 << 20];

fn suite(kind: Kind) {
    let mut c = NetConn::open(kind);
    scenarios::alloc_free_and_info(&mut c);
    scenarios::memset_and_d2d(&mut c);
    scenarios::streams_and_events(&mut c);
    scenarios::client_handle_errors(&mut c);
    scenarios::quota_refusal(&mut c);
    scenarios::wild_pointers(&mut c);
    scenarios::async_failure_is_deferred(&mut c);
    scenarios::builtin_kernels(&mut c);
    scenarios::honest_module_errors(&mut c);
    scenarios::unknown_handles_and_device(&mut c);
    let (res, backend) = c.finish();
    let summary = res.expect("session ends cleanly");
    assert!(summary.stats.sync_calls > 100 && summary.stats.async_calls > 10);
    assert_eq!(
        summary.released.allocations, 0,
        "the scenarios freed what they allocated"
    );
    assert!(summary.released.streams >= 1 && summary.released.modules >= 1);
    assert_eq!(backend.mem_get_info().unwrap().free, common::QUOTA);
}

#[test]
fn shm_scenarios() {
    suite(Kind::Shm);
}

#[test]
fn tcp_scenarios() {
    suite(Kind::Tcp);
}

#[test]
fn shm_memcpy_inline_and_arena_1b_to_16mib() {
    let mut c = NetConn::open(Kind::Shm);
    scenarios::memcpy_roundtrip(&mut c, SIZES, &[Via::Inline, Via::Arena], true);
    // An arena reference outside the arena is an error, not a crash.
    let p = scenarios::alloc(&mut c, 16).unwrap();
    let r = c.sync(
        &Call::MemcpyHtoD(MemcpyHtoD {
            dst: p,
            src: Payload::Arena {
                offset: u64::MAX - 3,
                len: 16,
            },
        }),
        S0,
        None,
        |_| (),
    );
    assert_eq!(r, Err(CudaError::INVALID_VALUE));
    // Async D2H into the arena.
    let data = scenarios::bytes(5, 16);
    scenarios::h2d(&mut c, p, &data, Via::Inline).unwrap();
    let slab = c.shm().unwrap().alloc_slab(16).unwrap();
    c.submit_async(
        &Call::MemcpyDtoHAsync(MemcpyDtoHAsync {
            src: p,
            len: 16,
            arena_offset: slab.offset,
        }),
        S0,
    );
    scenarios::ctx_sync(&mut c).unwrap();
    assert_eq!(c.shm().unwrap().slab(slab).unwrap()[..16], data[..]);
    c.shm().unwrap().free_slab(slab).unwrap();
    c.finish().0.unwrap();
}

#[test]
fn tcp_memcpy_inline_and_trailer_1b_to_16mib() {
    let mut c = NetConn::open(Kind::Tcp);
    scenarios::memcpy_roundtrip(&mut c, SIZES, &[Via::Inline, Via::Trailer], false);
    // A trailer aimed at a bad destination is drained and refused; the
    // connection stays in step.
    let p = scenarios::alloc(&mut c, 1000).unwrap();
    let big = vec![3u8; 3 << 20];
    assert_eq!(
        scenarios::h2d(&mut c, p, &big, Via::Trailer),
        Err(CudaError::INVALID_VALUE)
    );
    scenarios::h2d(&mut c, p, &big[..1000], Via::Trailer).unwrap();
    assert_eq!(
        scenarios::d2h(&mut c, p, 1000, false).unwrap(),
        vec![3u8; 1000]
    );
    let summary = c.finish().0.unwrap();
    assert!(summary.stats.bytes_h2d >= 2 * SIZES.iter().sum::<usize>() as u64);
}

#[test]
fn kernel_fault_is_sticky_over_tcp() {
    let mut c = NetConn::open(Kind::Tcp);
    scenarios::kernel_fault_is_sticky(&mut c);
    let (res, backend) = c.vanish();
    assert_eq!(res.unwrap().released.allocations, 1);
    assert_eq!(backend.mem_get_info().unwrap().free, common::QUOTA);
}

/// A barrier that gives up (panics) after [`common::WAIT`] instead of
/// hanging when another thread failed before reaching it.
#[derive(Default)]
struct Gate {
    arrived: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    /// Arrives, then waits until `total` arrivals in all.
    fn wait(&self, total: usize) {
        let deadline = Instant::now() + common::WAIT;
        let mut n = self.arrived.lock().unwrap();
        *n += 1;
        self.cv.notify_all();
        while *n < total {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "another session thread never arrived");
            n = self.cv.wait_timeout(n, left).unwrap().0;
        }
    }
}

/// Several sessions at once (threads) never see each other's memory or handles.
#[test]
fn concurrent_sessions_are_isolated() {
    const SESSIONS: usize = 3;
    type Named = (usize, DevicePtr, EventHandle, StreamHandle);
    let shared: Arc<Mutex<Vec<Named>>> = Arc::default();
    let barrier = Arc::new(Gate::default());
    let threads: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let shared = Arc::clone(&shared);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let kind = if i % 2 == 0 { Kind::Shm } else { Kind::Tcp };
                let mut c = NetConn::open(kind);
                let data = scenarios::bytes(i as u64, 4096);
                let p = scenarios::alloc(&mut c, 4096).unwrap();
                scenarios::h2d(&mut c, p, &data, Via::Inline).unwrap();
                let e = scenarios::event_create(&mut c, 0);
                let s = scenarios::stream_create(&mut c);
                shared.lock().unwrap().push((i, p, e, s));
                barrier.wait(SESSIONS);
                let others: Vec<Named> = shared
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|h| h.0 != i)
                    .copied()
                    .collect();
                assert_eq!(others.len(), SESSIONS - 1);
                for (j, other_p, other_e, other_s) in others {
                    assert_ne!(other_p, p, "sessions {i} and {j} share an address");
                    assert_eq!(
                        scenarios::d2h(&mut c, other_p, 1, false),
                        Err(CudaError::INVALID_VALUE)
                    );
                    assert_eq!(
                        scenarios::free(&mut c, other_p),
                        Err(CudaError::INVALID_VALUE)
                    );
                    assert_eq!(
                        c.sync(
                            &Call::EventQuery(EventQuery { event: other_e }),
                            S0,
                            None,
                            |_| ()
                        ),
                        Err(CudaError::INVALID_HANDLE)
                    );
                    assert_eq!(
                        c.sync(&Call::StreamQuery(StreamQuery {}), other_s, None, |_| ()),
                        Err(CudaError::INVALID_HANDLE)
                    );
                }
                // Everyone checked before anyone tears down.
                barrier.wait(2 * SESSIONS);
                assert_eq!(
                    scenarios::d2h(&mut c, p, 4096, false).unwrap(),
                    data,
                    "own data intact"
                );
                let summary = c.finish().0.unwrap();
                assert_eq!(summary.released.allocations, 1);
                assert_eq!(summary.released.events, 1);
                assert_eq!(summary.released.streams, 1);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A client that vanishes mid-session: `run_session` returns and the
/// session's memory is released.
#[test]
fn vanished_peer_releases_memory() {
    for kind in [Kind::Shm, Kind::Tcp] {
        let mut c = NetConn::open(kind);
        for _ in 0..3 {
            scenarios::alloc(&mut c, 1 << 20).unwrap();
        }
        scenarios::stream_create(&mut c);
        // The create is async: a sync call makes sure the worker has run it.
        scenarios::ctx_sync(&mut c).unwrap();
        // Async work still queued in the client when it disappears.
        c.submit_async(
            &Call::AsyncNop(AsyncNop {
                payload: Blob(&[1, 2]),
            }),
            S0,
        );
        let (res, backend) = c.vanish();
        let summary = res.expect("peer loss is a normal end");
        assert_eq!(
            summary.close_reason,
            Some(ConnError::TransportClosed),
            "{kind:?}"
        );
        assert_eq!(summary.released.allocations, 3);
        assert_eq!(summary.released.bytes, 3 << 20);
        assert_eq!(summary.released.streams, 1);
        assert_eq!(backend.mem_get_info().unwrap().free, common::QUOTA);
    }
}
