//! The hot paths allocate nothing per call once buffers are warm: async
//! submit → batch → server decode → complete → credit return, and the null
//! sync round trip. Checked with a counting global allocator (this test
//! binary only), so it is a property test, not a timing test.

#![cfg(feature = "sim")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use rgpu_proto::sim::connect;
use rgpu_proto::*;

struct Counting;

thread_local! {
    /// Counting is per thread: the test harness's own threads may allocate
    /// concurrently and must not be charged to the protocol.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded verbatim; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc`/`realloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded verbatim; `ptr` came from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: the thread-local may be gone during thread teardown.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn round(c: &mut Client, s: &mut Server, wire: &mut Vec<u8>, back: &mut Vec<u8>) -> usize {
    let now = Timestamp(1);
    let payload = [9u8; 28];
    let mut replies = 0;
    for i in 0..300u64 {
        c.submit(
            now,
            &AsyncNop {
                payload: Blob(&payload),
            },
            StreamHandle(i % 4),
        )
        .expect("window is large enough for one round");
    }
    c.submit(now, &Nop {}, StreamHandle(0)).expect("sync");
    while c.poll_transmit(wire).is_some() {
        s.handle_input(now, wire, |ev, r| {
            if let ServerEvent::Call { id, class, .. } = ev {
                let res = match class {
                    CallClass::Sync => r.reply(id, Ok(Reply::NopReply(NopReply {}))),
                    _ => r.complete_async(id, Ok(())),
                };
                assert_eq!(res, Ok(()));
            }
        })
        .expect("server input");
        wire.clear();
    }
    while s.poll_transmit(back).is_some() {
        c.handle_input(now, back, |ev| {
            if let ClientEvent::Reply { result: Ok(_), .. } = ev {
                replies += 1;
            }
        })
        .expect("client input");
        back.clear();
    }
    replies
}

#[test]
fn steady_state_allocates_nothing() {
    let token = [3; 32];
    let (mut c, mut s) = connect(
        ClientConfig {
            token,
            framing: Framing::Message,
            ..ClientConfig::default()
        },
        ServerConfig {
            token,
            framing: Framing::Message,
            ..ServerConfig::default()
        },
        Timestamp::ZERO,
    );
    let mut wire = Vec::new();
    let mut back = Vec::new();
    // Warm-up grows every buffer to its steady-state size.
    for _ in 0..3 {
        assert_eq!(round(&mut c, &mut s, &mut wire, &mut back), 1);
    }
    COUNTING.with(|c| c.set(true));
    let mut replies = 0;
    for _ in 0..20 {
        replies += round(&mut c, &mut s, &mut wire, &mut back);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(replies, 20);
    assert_eq!(c.credit().0, 1024, "all credit returned");
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "hot path allocated");
}
