//! Loom models of the index and wake-up protocol, on the heap ring storage.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p rgpu-ring --release --test loom`.
//! The futex is modelled by a mutex + condvar with the kernel's
//! check-and-enqueue atomicity and *no* timeout, so a lost wake-up shows up
//! as a loom deadlock.
#![cfg(loom)]

use loom::thread;
use rgpu_ring::{heap_ring, Consumer, HeapRing};
use std::time::{Duration, Instant};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Runs `f` under loom with the default preemption bound (3).
fn model(f: impl Fn() + Send + Sync + 'static) {
    model_bounded(3, f);
}

/// Runs `f` under loom exploring interleavings with at most `preemptions`
/// forced context switches (bounded so each model finishes in seconds).
fn model_bounded(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}

/// Pops with `pop_wait` until `n` records arrived.
fn take(c: &mut Consumer<HeapRing>, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        c.pop_wait(far(), None, |r| got.push(r.to_vec())).unwrap();
    }
    got
}

/// Two producers race for the reserve cursor across the buffer end (one of
/// them needs a padding frame and may have to wait for space) while the
/// consumer sleeps and frees space.
#[test]
fn two_producers_one_consumer_with_wrap() {
    model(|| {
        let (p, mut c) = heap_ring(256, 104).unwrap();
        // Move the cursors to 48 so that the second 112-byte frame wraps.
        p.try_push(&[0u8; 24]).unwrap();
        assert_eq!(take(&mut c, 1).len(), 1);
        let p2 = p.clone();
        let t1 = thread::spawn(move || p.push_timeout(&[1u8; 80], far(), None).unwrap());
        let t2 = thread::spawn(move || p2.push_timeout(&[2u8; 80], far(), None).unwrap());
        let got = take(&mut c, 2);
        t1.join().unwrap();
        t2.join().unwrap();
        let mut firsts: Vec<u8> = got.iter().map(|r| r[0]).collect();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![1, 2]);
        for r in &got {
            assert_eq!(r.len(), 80);
            assert!(r.iter().all(|b| *b == r[0]), "torn record");
        }
    });
}

/// A producer publishing while the consumer goes to sleep: no lost wake-up.
#[test]
fn producer_vs_sleeping_consumer() {
    model(|| {
        let (p, mut c) = heap_ring(256, 104).unwrap();
        let t = thread::spawn(move || {
            p.try_push(b"a").unwrap();
            p.try_push(b"b").unwrap();
        });
        let got = take(&mut c, 2);
        t.join().unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
    });
}

/// A producer sleeping on a full ring while the consumer frees space.
#[test]
fn producer_waits_for_space() {
    model(|| {
        let (p, mut c) = heap_ring(256, 104).unwrap();
        p.try_push(&[1u8; 100]).unwrap();
        p.try_push(&[2u8; 100]).unwrap();
        let t = thread::spawn(move || p.push_timeout(&[3u8; 100], far(), None).unwrap());
        let got = take(&mut c, 3);
        t.join().unwrap();
        let firsts: Vec<u8> = got.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3]);
    });
}

/// Two producers pushing twice each into a ring that holds two frames: a
/// producer's `head` refresh races with the consumer releasing space and
/// with the other producer reserving against the newer `head`.
#[test]
fn producers_refresh_head_while_consumer_releases() {
    // Bound 2 still reaches the stale-head interleaving (a check that treated
    // `reserve - head > capacity` as corruption fails within seconds); the
    // full exploration takes about a minute on 2 cores.
    model_bounded(2, || {
        let (p, mut c) = heap_ring(256, 104).unwrap();
        let p2 = p.clone();
        let push_two = |p: rgpu_ring::Producer<HeapRing>, tag: u8| {
            move || {
                p.push_timeout(&[tag; 80], far(), None).unwrap();
                p.push_timeout(&[tag + 1; 80], far(), None).unwrap();
            }
        };
        let t1 = thread::spawn(push_two(p, 10));
        let t2 = thread::spawn(push_two(p2, 20));
        let got = take(&mut c, 4);
        t1.join().unwrap();
        t2.join().unwrap();
        let firsts: Vec<u8> = got.iter().map(|r| r[0]).collect();
        let pos = |t: u8| firsts.iter().position(|f| *f == t).unwrap();
        assert!(
            pos(10) < pos(11) && pos(20) < pos(21),
            "per-producer order: {firsts:?}"
        );
    });
}
