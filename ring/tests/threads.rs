//! Multi-threaded in-process stress of the heap ring (also the Miri target:
//! `cargo +nightly miri test -p rgpu-ring --lib --test threads`).
#![cfg(not(loom))]

use rgpu_ring::heap_ring;
use std::time::{Duration, Instant};

const THREADS: usize = 3;
const PER_THREAD: u32 = if cfg!(miri) {
    40
} else if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};

fn record(tid: usize, seq: u32, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(tid as u8);
    buf.extend_from_slice(&seq.to_le_bytes());
    let n = (seq as usize * 13 + tid) % 60;
    buf.extend((0..n).map(|i| (seq as u8) ^ (i as u8)));
}

#[test]
fn producers_keep_per_thread_order_under_contention() {
    // Tiny ring: producers constantly wait for space and the consumer sleeps.
    let (p, mut c) = heap_ring(512, 200).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = [0u32; THREADS];
    std::thread::scope(|s| {
        for tid in 0..THREADS {
            let p = p.clone();
            s.spawn(move || {
                let mut buf = Vec::new();
                let mut second = Vec::new();
                let mut seq = 0;
                while seq < PER_THREAD {
                    record(tid, seq, &mut buf);
                    if seq % 3 == 0 && seq + 1 < PER_THREAD {
                        record(tid, seq + 1, &mut second);
                        p.push_batch_timeout(&[&buf, &second], deadline, None)
                            .unwrap();
                        seq += 2;
                    } else {
                        p.push_timeout(&buf, deadline, None).unwrap();
                        seq += 1;
                    }
                }
            });
        }
        let total = THREADS as u32 * PER_THREAD;
        let mut seen = 0;
        let mut expect = Vec::new();
        while seen < total {
            seen += c
                .pop_wait(deadline, None, |r| {
                    let tid = r[0] as usize;
                    let seq = u32::from_le_bytes(r[1..5].try_into().unwrap());
                    assert_eq!(seq, next[tid], "thread {tid} out of order");
                    record(tid, seq, &mut expect);
                    assert_eq!(r, &expect[..], "content of {tid}/{seq}");
                    next[tid] += 1;
                })
                .unwrap() as u32;
        }
    });
    assert_eq!(next, [PER_THREAD; THREADS]);
}
