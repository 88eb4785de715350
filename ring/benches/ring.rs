//! Criterion benches: single-record and batched streaming throughput across
//! two threads, and ping-pong round-trip time over the two rings of a shared
//! segment (two mappings of one memfd, as between processes).

use criterion::{criterion_main, Criterion, Throughput};
use rgpu_ring::{Segment, SegmentConfig, Side};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD: [u8; 64] = [0x5a; 64];
const BATCH: usize = 64;

fn config() -> SegmentConfig {
    SegmentConfig {
        ring_bytes: 1 << 20,
        max_record_bytes: 4096,
        arena_bytes: 0,
    }
}

/// A client/server segment pair mapped twice in this process.
fn pair() -> (Segment, Segment) {
    let client = Segment::create(&config()).unwrap();
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    (client, server)
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn streaming(c: &mut Criterion, name: &str, batch: usize) {
    let (client, server) = pair();
    let (p, _) = client.split(Side::Client).unwrap();
    let (_, mut cons) = server.split(Side::Server).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let deadline = Instant::now() + Duration::from_millis(50);
                if let Ok(n) = cons.pop_wait(deadline, None, |r| {
                    std::hint::black_box(r);
                }) {
                    seen.fetch_add(n as u64, Ordering::Release);
                }
            }
        })
    };
    let refs: Vec<&[u8]> = vec![&RECORD[..]; batch];
    let mut g = c.benchmark_group("ring");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let target = seen.load(Ordering::Acquire) + iters * batch as u64;
            let start = Instant::now();
            for _ in 0..iters {
                if batch == 1 {
                    p.push_timeout(&RECORD, far(), None).unwrap();
                } else {
                    p.push_batch_timeout(&refs, far(), None).unwrap();
                }
            }
            while seen.load(Ordering::Acquire) < target {
                std::hint::spin_loop();
            }
            start.elapsed()
        });
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    drain.join().unwrap();
}

/// Push then pop one record on the same thread: the ring's intrinsic cost
/// without cache-line transfers between cores.
fn same_thread(c: &mut Criterion) {
    let (client, server) = pair();
    let (p, _) = client.split(Side::Client).unwrap();
    let (_, mut cons) = server.split(Side::Server).unwrap();
    let mut g = c.benchmark_group("ring");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_pop_64B_same_thread", |b| {
        b.iter(|| {
            p.try_push(&RECORD).unwrap();
            cons.try_pop_batch(|r| {
                std::hint::black_box(r);
            })
            .unwrap()
        });
    });
    g.finish();
}

fn single(c: &mut Criterion) {
    streaming(c, "stream_64B_single", 1);
}

fn batched(c: &mut Criterion) {
    streaming(c, "stream_64B_batch64", BATCH);
}

fn ping_pong(c: &mut Criterion) {
    let (client, server) = pair();
    let (cp, mut cc) = client.split(Side::Client).unwrap();
    let (sp, mut sc) = server.split(Side::Server).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let deadline = Instant::now() + Duration::from_millis(50);
                let _ = sc.pop_wait(deadline, None, |r| sp.push_timeout(r, far(), None).unwrap());
            }
        })
    };
    let mut g = c.benchmark_group("ring");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("ping_pong_64B_rtt", |b| {
        b.iter(|| {
            cp.push_timeout(&RECORD, far(), None).unwrap();
            while cc
                .try_pop_batch(|r| {
                    std::hint::black_box(r);
                })
                .unwrap()
                == 0
            {
                std::hint::spin_loop();
            }
        });
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
}

mod group {
    #![allow(missing_docs)] // `criterion_group!` emits an undocumented `pub fn`.
    use super::{batched, ping_pong, same_thread, single};
    criterion::criterion_group!(benches, same_thread, single, batched, ping_pong);
}
criterion_main!(group::benches);
