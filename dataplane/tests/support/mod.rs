//! Helpers shared by the transport integration tests: every transport must pass the same
//! echo, ordering and bulk checks, so those checks are written once, generic over `Transport`.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use rgpu_dataplane::Transport;

/// A deadline `ms` milliseconds from now.
pub fn deadline(ms: u64) -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(ms))
}

/// Deterministic pseudo-random bytes (xorshift), so payloads are not all-equal.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Echo server: returns every byte it receives until the peer goes away; returns the byte count.
pub fn echo<T: Transport>(mut t: T) -> u64 {
    let mut total = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match t.recv(deadline(20_000), &mut |b| buf.extend_from_slice(b)) {
            Ok(n) => {
                assert_eq!(n, buf.len());
                total += n as u64;
                t.send(&buf).unwrap();
            }
            Err(e) if e.is_peer_gone() => return total,
            Err(e) => panic!("echo server: {e}"),
        }
    }
}

/// Receives exactly `len` bytes through `recv` (the chunked path).
pub fn recv_n<T: Transport + ?Sized>(t: &mut T, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        t.recv(deadline(20_000), &mut |b| out.extend_from_slice(b))
            .unwrap();
    }
    assert_eq!(out.len(), len, "peer sent more than expected");
    out
}

/// Sends `rounds` small messages through `send_then_recv` and checks each echo.
pub fn echo_round_trips<T: Transport + ?Sized>(c: &mut T, rounds: usize) {
    for i in 0..rounds {
        let msg = format!("ping {i}").into_bytes();
        let mut got = Vec::new();
        c.send_then_recv(&msg, deadline(10_000), &mut |b| got.extend_from_slice(b))
            .unwrap();
        if got.len() < msg.len() {
            got.extend(recv_n(c, msg.len() - got.len()));
        }
        assert_eq!(got, msg);
    }
}
