//! Raw baselines, measured in the same run as the rgpu paths they are compared with.
//!
//! Each baseline is the least a transport could possibly cost, with no protocol at all:
//! - shm null-call: a ping-pong on two shared atomics (one cache line each), both sides spinning;
//! - tcp null-call: a plain blocking-socket ping-pong over loopback with `TCP_NODELAY`;
//! - shm bulk: one `memcpy` of the payload (what the worker's copy out of the arena costs);
//! - tcp bulk: blocking `write_all`/`read_exact` of the payload over loopback, acknowledged.
//!
//! The same message sizes and the same timing code as the rgpu paths are used, so a ratio taken
//! from one run says how much our layers add.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crate::pin::pin_current_thread;
use crate::report::{timed_loop, Measured};
use crate::BenchError;

/// A value padded to its own 128-byte block, so the two ping-pong words never share a line
/// (128 bytes covers adjacent-line prefetch on Intel and the 128-byte lines of some ARM cores).
#[repr(align(128))]
struct Padded<T>(T);

/// The two words of the atomic ping-pong.
struct PingPong {
    ping: Padded<AtomicU64>,
    pong: Padded<AtomicU64>,
    stop: Padded<AtomicBool>,
}

/// Ping-pong on two shared atomics: the floor for any shared-memory round trip.
pub fn atomic_ping_pong(warmup: u64, iters: u64) -> Measured {
    assert!(iters > 0);
    let shared = Arc::new(PingPong {
        ping: Padded(AtomicU64::new(0)),
        pong: Padded(AtomicU64::new(0)),
        stop: Padded(AtomicBool::new(false)),
    });
    let peer = Arc::clone(&shared);
    let echo = thread::spawn(move || {
        pin_current_thread(1);
        let mut seen = 0u64;
        loop {
            let v = peer.ping.0.load(Ordering::Acquire);
            if v != seen {
                seen = v;
                peer.pong.0.store(v, Ordering::Release);
            } else if peer.stop.0.load(Ordering::Relaxed) {
                return;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin_current_thread(0);
    let measured = timed_loop::<(), _>(warmup, iters, |i| {
        let token = i + 1;
        shared.ping.0.store(token, Ordering::Release);
        while shared.pong.0.load(Ordering::Acquire) != token {
            std::hint::spin_loop();
        }
        Ok(())
    });
    shared.stop.0.store(true, Ordering::Relaxed);
    // The echo thread only loops and stores; it cannot panic, so join only fails if it did.
    echo.join().expect("atomic echo thread does not panic");
    // The loop body never fails.
    measured.unwrap_or_else(|()| unreachable!("the ping-pong loop has no error path"))
}

/// Blocking-socket ping-pong over loopback with `TCP_NODELAY`, `message_bytes` each way.
pub fn socket_ping_pong(
    warmup: u64,
    iters: u64,
    message_bytes: usize,
) -> Result<Measured, BenchError> {
    assert!(iters > 0 && message_bytes > 0);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("bind baseline"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("local_addr"))?;
    let echo = thread::spawn(move || -> std::io::Result<()> {
        pin_current_thread(1);
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; message_bytes];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    pin_current_thread(0);
    let mut s = TcpStream::connect(addr).map_err(BenchError::io("connect baseline"))?;
    s.set_nodelay(true).map_err(BenchError::io("nodelay"))?;
    let msg = vec![0x5au8; message_bytes];
    let mut back = vec![0u8; message_bytes];
    let measured = timed_loop(warmup, iters, |_| {
        s.write_all(&msg)
            .map_err(BenchError::io("baseline write"))?;
        s.read_exact(&mut back)
            .map_err(BenchError::io("baseline read"))
    })?;
    drop(s);
    match echo.join() {
        Ok(result) => result.map_err(BenchError::io("baseline echo"))?,
        Err(_) => return Err(BenchError::Setup("baseline echo thread panicked".into())),
    }
    Ok(measured)
}

/// `memcpy` of `size` bytes between two buffers that were touched beforehand.
pub fn memcpy_bandwidth(warmup: u64, iters: u64, size: usize) -> Measured {
    assert!(iters > 0 && size > 0);
    pin_current_thread(1);
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; size];
    let measured = timed_loop::<(), _>(warmup, iters, |_| {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
        Ok(())
    });
    assert_eq!(dst[size - 1], 0xa5, "the copy happened");
    measured.unwrap_or_else(|()| unreachable!("the memcpy loop has no error path"))
}

/// Blocking loopback transfer of `size` bytes, acknowledged by one byte, `iters` times.
pub fn socket_bandwidth(warmup: u64, iters: u64, size: usize) -> Result<Measured, BenchError> {
    assert!(iters > 0 && size > 0);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("bind baseline"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("local_addr"))?;
    let sink = thread::spawn(move || -> std::io::Result<()> {
        pin_current_thread(1);
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&[buf[size - 1]])?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    pin_current_thread(0);
    let mut s = TcpStream::connect(addr).map_err(BenchError::io("connect baseline"))?;
    s.set_nodelay(true).map_err(BenchError::io("nodelay"))?;
    let payload = vec![0x3cu8; size];
    let mut ack = [0u8; 1];
    let measured = timed_loop(warmup, iters, |_| {
        s.write_all(&payload)
            .map_err(BenchError::io("baseline write"))?;
        s.read_exact(&mut ack)
            .map_err(BenchError::io("baseline ack"))?;
        if ack[0] != 0x3c {
            return Err(BenchError::Mismatch("baseline ack byte".into()));
        }
        Ok(())
    })?;
    drop(s);
    match sink.join() {
        Ok(result) => result.map_err(BenchError::io("baseline sink"))?,
        Err(_) => return Err(BenchError::Setup("baseline sink thread panicked".into())),
    }
    Ok(measured)
}
