//! Null-call latency over loopback: io_uring transport vs. a plain blocking
//! socket ping-pong (the reference the bench target is stated against).
//!
//! Run: `cargo run --release -p rgpu-dataplane --example tcp_latency -- [rounds] [spins] [size] [single_thread 0|1]`
//! With `RGPU_EXP_BLOCKING_SERVER=1` the io_uring client talks to a blocking
//! server, isolating the client side's overhead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rgpu_dataplane::tcp::{TcpConfig, TcpUringListener, TcpUringTransport};
use rgpu_dataplane::Transport;

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn blocking(rounds: usize, size: usize) -> Vec<Duration> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let srv = thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = vec![7u8; size];
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        c.write_all(&buf).expect("write");
        c.read_exact(&mut buf).expect("read");
        lat.push(t.elapsed());
    }
    drop(c);
    srv.join().expect("server");
    lat
}

fn uring(rounds: usize, size: usize, cfg: TcpConfig) -> Vec<Duration> {
    let l = TcpUringListener::bind("127.0.0.1:0", cfg.clone()).expect("bind");
    let addr = l.local_addr().expect("addr");
    if std::env::var_os("RGPU_EXP_BLOCKING_SERVER").is_some() {
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr2 = l2.local_addr().expect("addr");
        let srv = thread::spawn(move || {
            let (mut s, _) = l2.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0u8; size];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
        let mut c = TcpUringTransport::connect(addr2, cfg).expect("connect");
        let msg = vec![7u8; size];
        let mut lat = Vec::with_capacity(rounds);
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
        drop(l);
        return lat;
    }
    let srv = thread::spawn(move || {
        let mut t = l.accept(None).expect("accept");
        let mut buf = vec![0u8; size];
        let multishot_server = std::env::var_os("RGPU_EXP_EXACT_SERVER").is_none();
        loop {
            if multishot_server {
                // Receive through the armed multishot receive (no SQE per message).
                let mut got = 0;
                while got < size {
                    match t.recv(None, &mut |b| {
                        buf[got..got + b.len()].copy_from_slice(b);
                        got += b.len();
                    }) {
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            } else if t.recv_exact_into(&mut buf[..], None).is_err() {
                break;
            }
            if t.send(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpUringTransport::connect(addr, cfg).expect("connect");
    let msg = vec![7u8; size];
    let mut lat = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut got = 0;
        got += c.send_then_recv(&msg, None, &mut |_| {}).expect("call");
        while got < size {
            got += c.recv(None, &mut |_| {}).expect("recv");
        }
        lat.push(t.elapsed());
    }
    drop(c);
    srv.join().expect("server");
    lat
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(20_000);
    let spins = args.get(1).copied().unwrap_or(0) as u32;
    let size = args.get(2).copied().unwrap_or(64);
    let single_thread = args.get(3).copied().unwrap_or(1) == 1;
    let cfg = TcpConfig {
        busy_poll_spins: spins,
        single_thread,
        ..TcpConfig::default()
    };
    for round in 0..2 {
        let b = blocking(rounds, size);
        let u = uring(rounds, size, cfg.clone());
        let (bp, up) = (percentile(b.clone(), 0.5), percentile(u.clone(), 0.5));
        println!(
            "run {round}: {size} B, spins {spins}, single_thread {single_thread}: blocking p50 {bp:?} p99 {:?} | io_uring p50 {up:?} p99 {:?} | ratio {:.3}",
            percentile(b, 0.99),
            percentile(u, 0.99),
            up.as_secs_f64() / bp.as_secs_f64()
        );
    }
}
