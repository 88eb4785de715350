//! Null-call round trip over the shm transport (client and server threads).
//!
//! Run: `cargo run --release -p rgpu-dataplane --example shm_latency -- [rounds] [size]`

use std::thread;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{ShmConfig, ShmListener, ShmTransport};
use rgpu_dataplane::Transport;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(100_000);
    let size = args.get(1).copied().unwrap_or(64);
    let path = std::env::temp_dir().join(format!("rgpu-shm-latency-{}.sock", std::process::id()));
    let listener = ShmListener::bind(&path, ShmConfig::default()).expect("bind");
    let srv = thread::spawn(move || {
        let mut t = listener.accept(None).expect("accept");
        let mut buf = vec![0u8; size];
        while t.recv_exact_into(&mut buf, None).is_ok() {
            if t.send(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = ShmTransport::connect(&path, ShmConfig::default()).expect("connect");
    let msg = vec![7u8; size];
    let mut lat: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut got = c.send_then_recv(&msg, None, &mut |_| {}).expect("call");
        while got < size {
            got += c.recv(None, &mut |_| {}).expect("recv");
        }
        lat.push(t.elapsed());
    }
    drop(c);
    srv.join().expect("server");
    lat.sort_unstable();
    let pick = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "shm {size} B null call: p50 {:?} p99 {:?} p99.9 {:?}",
        pick(0.5),
        pick(0.99),
        pick(0.999)
    );
}
