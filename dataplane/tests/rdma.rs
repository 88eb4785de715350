//! RDMA transport tests against a real verbs device.
//!
//! They need an RDMA device: `scripts/rdma-vm-test --tests <this binary>` runs
//! them against soft-RoCE inside a VM, where `RGPU_RDMA_DEV` and
//! `RGPU_RDMA_GID_INDEX` are set. Without `RGPU_RDMA_DEV` only the "no device
//! gives a typed error" check runs and the rest print a skip reason.
//! A custom main (`harness = false`) so a case can re-run this binary as a
//! child process that the test kills mid-transfer.

mod support;

use std::io::IoSlice;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rgpu_dataplane::rdma::{ControlToken, Fault, RdmaConfig, RdmaListener, RdmaTransport};
use rgpu_dataplane::{Transport, TransportError, TransportKind};
use support::{deadline, echo, echo_round_trips, pattern, recv_n};

/// Environment variable that turns this binary into a child peer.
const CHILD_ENV: &str = "RGPU_RDMA_TEST_CHILD";
/// The control address a child connects to.
const CHILD_ADDR_ENV: &str = "RGPU_RDMA_TEST_ADDR";

/// Running under emulation (TCG): scale counts down.
fn in_vm() -> bool {
    std::env::var("RGPU_RDMA_VM").is_ok_and(|v| v == "1")
}

fn cfg() -> RdmaConfig {
    RdmaConfig {
        device: std::env::var("RGPU_RDMA_DEV").ok(),
        gid_index: std::env::var("RGPU_RDMA_GID_INDEX")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..RdmaConfig::default()
    }
}

/// Listener on loopback, `server` runs on the accepted transport in a thread.
fn pair<R: Send + 'static>(
    server_cfg: RdmaConfig,
    client_cfg: RdmaConfig,
    server: impl FnOnce(RdmaTransport) -> R + Send + 'static,
) -> (RdmaTransport, thread::JoinHandle<R>) {
    let listener = RdmaListener::bind("127.0.0.1:0", server_cfg).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || server(listener.accept(deadline(20_000)).unwrap()));
    let client = RdmaTransport::connect(addr, client_cfg).unwrap();
    (client, handle)
}

fn handshake() {
    let server_cfg = RdmaConfig {
        slot_count: 32,
        ..cfg()
    };
    let (mut c, server) = pair(server_cfg, cfg(), echo);
    assert_eq!(c.kind(), TransportKind::Rdma);
    let caps = c.caps();
    println!("caps: {caps:?}");
    assert!(caps.port_active);
    assert!((1..=5).contains(&caps.active_mtu));
    assert_eq!(
        c.peer_credit_window(),
        32,
        "the server's slot count travels in the hello"
    );
    if let Ok(want) = std::env::var("RGPU_RDMA_GID_INDEX") {
        assert_eq!(caps.gid_index.map(|g| g.to_string()), Some(want));
    }
    // Auto-picked GID index (IPv4-mapped) must agree with the harness's.
    let auto = RdmaConfig {
        gid_index: None,
        ..cfg()
    };
    let (mut c2, server2) = pair(cfg(), auto, echo);
    assert_eq!(c2.caps().gid_index, caps.gid_index);
    echo_round_trips(&mut c2, 3);
    drop(c2);
    assert!(server2.join().unwrap() > 0);
    echo_round_trips(&mut c, 1);
    drop(c);
    assert!(server.join().unwrap() > 0);
}

fn null_call() {
    let (mut c, server) = pair(cfg(), cfg(), echo);
    let rounds = if in_vm() { 2_000 } else { 100_000 };
    let t0 = Instant::now();
    echo_round_trips(&mut c, rounds);
    let per = t0.elapsed() / rounds as u32;
    println!("null-call: {rounds} round trips, {per:?} each (informational)");
    drop(c);
    assert!(server.join().unwrap() >= rounds as u64);
}

/// One call record: sequence number and argument.
const CALL_BYTES: usize = 16;

/// Replies to each complete call record with `[seq, arg * 3]`, batched per receive.
fn call_server(mut t: RdmaTransport) -> u64 {
    let mut buf = Vec::new();
    let mut calls = 0u64;
    loop {
        let r = t.recv(deadline(30_000), &mut |b| buf.extend_from_slice(b));
        match r {
            Ok(_) => {}
            Err(e) if e.is_peer_gone() => return calls,
            Err(e) => panic!("call server: {e}"),
        }
        let whole = buf.len() / CALL_BYTES * CALL_BYTES;
        let mut reply = Vec::with_capacity(whole);
        for rec in buf[..whole].chunks_exact(CALL_BYTES) {
            let seq = u64::from_le_bytes(rec[..8].try_into().unwrap());
            let arg = u64::from_le_bytes(rec[8..].try_into().unwrap());
            reply.extend_from_slice(&seq.to_le_bytes());
            reply.extend_from_slice(&arg.wrapping_mul(3).to_le_bytes());
            calls += 1;
        }
        buf.drain(..whole);
        if !reply.is_empty() {
            t.send(&reply).unwrap();
        }
    }
}

fn batched_async_calls() {
    let (mut c, server) = pair(cfg(), cfg(), call_server);
    let total: u64 = 100_000;
    let per_batch: u64 = 100;
    let window: u64 = 8; // batches in flight
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut pending = Vec::new();
    while answered < total {
        while sent < total && sent - answered < window * per_batch {
            let mut batch = Vec::with_capacity(per_batch as usize * CALL_BYTES);
            for seq in sent..sent + per_batch {
                batch.extend_from_slice(&seq.to_le_bytes());
                batch.extend_from_slice(&(seq ^ 0x5555).to_le_bytes());
            }
            c.send(&batch).unwrap();
            sent += per_batch;
        }
        c.recv(deadline(30_000), &mut |b| pending.extend_from_slice(b))
            .unwrap();
        let whole = pending.len() / CALL_BYTES * CALL_BYTES;
        for rec in pending[..whole].chunks_exact(CALL_BYTES) {
            let seq = u64::from_le_bytes(rec[..8].try_into().unwrap());
            let val = u64::from_le_bytes(rec[8..].try_into().unwrap());
            assert_eq!(seq, answered, "replies in call order");
            assert_eq!(val, (seq ^ 0x5555).wrapping_mul(3));
            answered += 1;
        }
        pending.drain(..whole);
    }
    assert!(pending.is_empty());
    drop(c);
    assert_eq!(server.join().unwrap(), total);
}

/// Reads `[len u64][body]`, replies with the body's CRC-32, then echoes the body.
fn bulk_server(mut t: RdmaTransport) -> usize {
    let mut served = 0;
    loop {
        let mut hdr = [0u8; 8];
        match t.recv_exact_into(&mut hdr, deadline(60_000)) {
            Ok(()) => {}
            Err(e) if e.is_peer_gone() => return served,
            Err(e) => panic!("bulk server header: {e}"),
        }
        let len = u64::from_le_bytes(hdr) as usize;
        let body = if served % 2 == 0 {
            let mut body = vec![0u8; len];
            t.recv_exact_into(&mut body, deadline(60_000)).unwrap();
            body
        } else {
            recv_n(&mut t, len)
        };
        t.send(&crc32fast::hash(&body).to_le_bytes()).unwrap();
        t.send_vectored(&[IoSlice::new(&hdr), IoSlice::new(&body)])
            .unwrap();
        served += 1;
    }
}

fn bulk_1b_to_64mib() {
    let (mut c, server) = pair(cfg(), cfg(), bulk_server);
    let sizes = [
        1usize,
        7,
        255,
        4096,
        (16 << 10) + 1,
        200_000,
        (1 << 20) + 3,
        (8 << 20) + 5,
        64 << 20,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let t0 = Instant::now();
        let body = pattern(len, i as u64 + 11);
        c.send_vectored(&[
            IoSlice::new(&(len as u64).to_le_bytes()),
            IoSlice::new(&body),
        ])
        .unwrap();
        let mut crc = [0u8; 4];
        c.recv_exact_into(&mut crc, deadline(60_000)).unwrap();
        assert_eq!(
            u32::from_le_bytes(crc),
            crc32fast::hash(&body),
            "server checksum, {len} B"
        );
        let mut hdr = [0u8; 8];
        c.recv_exact_into(&mut hdr, deadline(60_000)).unwrap();
        assert_eq!(u64::from_le_bytes(hdr) as usize, len);
        let back = if i % 2 == 0 {
            let mut back = vec![0u8; len];
            c.recv_exact_into(&mut back, deadline(60_000)).unwrap();
            back
        } else {
            recv_n(&mut c, len)
        };
        assert_eq!(
            crc32fast::hash(&back),
            crc32fast::hash(&body),
            "echoed body, {len} B"
        );
        println!(
            "bulk {len} B round trip in {:?} (informational)",
            t0.elapsed()
        );
    }
    drop(c);
    assert_eq!(server.join().unwrap(), sizes.len());
}

fn burst_above_credit_window() {
    let window = 4u32;
    let server_cfg = RdmaConfig {
        slot_count: window,
        ..cfg()
    };
    let batches = 64 * window as usize;
    let (mut c, server) = pair(server_cfg, cfg(), move |mut t: RdmaTransport| {
        // Let the burst pile up against the credit window first.
        thread::sleep(Duration::from_millis(300));
        let mut got = Vec::new();
        while got.len() < batches * 64 {
            t.recv(deadline(30_000), &mut |b| got.extend_from_slice(b))
                .unwrap();
        }
        got
    });
    assert_eq!(c.peer_credit_window(), window);
    let mut expected = Vec::new();
    for i in 0..batches {
        let b = pattern(64, i as u64);
        c.send(&b).unwrap();
        expected.extend_from_slice(&b);
    }
    let got = server.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "burst arrived intact and in order");
}

/// Child role: connect and stream bulk batches until killed.
fn child_sender(addr: &str) {
    let mut t = RdmaTransport::connect(addr, cfg()).unwrap();
    let body = pattern(4 << 20, 1);
    loop {
        t.send(&body).unwrap();
    }
}

/// Child role: connect and receive until killed.
fn child_receiver(addr: &str) {
    let mut t = RdmaTransport::connect(addr, cfg()).unwrap();
    loop {
        t.recv(deadline(60_000), &mut |_| {}).unwrap();
    }
}

fn spawn_child(role: &str, addr: std::net::SocketAddr) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, role)
        .env(CHILD_ADDR_ENV, addr.to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn peer_killed_mid_transfer() {
    // The peer dies while sending to us.
    let listener = RdmaListener::bind("127.0.0.1:0", cfg()).unwrap();
    let mut child = spawn_child("sender", listener.local_addr().unwrap());
    let mut t = listener.accept(deadline(30_000)).unwrap();
    let mut got = 0usize;
    while got < 1 << 20 {
        got += t.recv(deadline(30_000), &mut |_| {}).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let err = loop {
        match t.recv(deadline(30_000), &mut |_| {}) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    println!("receiver saw: {err}");
    assert!(err.is_peer_gone(), "{err:?}");
    assert!(matches!(t.send(b"x"), Err(TransportError::Closed { .. })));

    // The peer dies while we send to it.
    let listener = RdmaListener::bind("127.0.0.1:0", cfg()).unwrap();
    let mut child = spawn_child("receiver", listener.local_addr().unwrap());
    let mut t = listener.accept(deadline(30_000)).unwrap();
    let body = pattern(1 << 20, 2);
    for _ in 0..4 {
        t.send(&body).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    let err = loop {
        if let Err(e) = t.send(&body) {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sends to a dead peer kept succeeding"
        );
    };
    println!("sender saw: {err}");
    assert!(err.is_peer_gone(), "{err:?}");
}

fn bad_rkey_is_a_typed_error() {
    let bad = RdmaConfig {
        fault: Fault::BadRkey,
        ..cfg()
    };
    let (mut c, server) = pair(cfg(), bad, |mut t: RdmaTransport| {
        t.recv(deadline(30_000), &mut |_| {}).map(|_| ())
    });
    // Bulk goes by RDMA WRITE into the peer's ring: the wrong rkey is NAKed.
    let body = pattern(1 << 20, 3);
    let err = match c.send(&body) {
        Err(e) => e,
        Ok(()) => c.recv(deadline(30_000), &mut |_| {}).unwrap_err(),
    };
    println!("writer saw: {err}");
    assert!(
        matches!(err, TransportError::RdmaCompletion { status: 10, .. }),
        "want IBV_WC_REM_ACCESS_ERR, got {err:?}"
    );
    assert!(matches!(c.send(b"x"), Err(TransportError::Closed { .. })));
    drop(c);
    let server_result = server.join().unwrap();
    println!("target saw: {server_result:?}");
    assert!(server_result.is_err(), "the target must not see data");
}

/// The client's pinned host region: the server reads it with RDMA READ (in pieces above
/// the port's message size), writes it with RDMA WRITE, and is refused out-of-range
/// references before anything is posted, after which the transport still works.
fn host_region_read_write() {
    const REGION: usize = 16 << 20;
    // Above rxe's 8 MiB max_msg_sz, so the read is split into several READs.
    const READ_AT: u64 = 4096;
    const READ_LEN: usize = 12 << 20;
    const WRITE_AT: u64 = (14 << 20) + 3;
    const WRITE_LEN: usize = 1_000_001;
    let client_cfg = RdmaConfig {
        host_region_bytes: REGION - 5, // rounded up to a power of two
        ..cfg()
    };
    let (mut c, server) = pair(cfg(), client_cfg, |mut t: RdmaTransport| {
        assert_eq!(t.peer_host_len(), REGION as u64);
        assert_eq!(t.host_region_len(), 0, "the server registered no region");
        assert_eq!(recv_n(&mut t, 2), b"go");
        let t0 = Instant::now();
        let got = t.read_peer_host(READ_AT, READ_LEN as u64).unwrap().to_vec();
        println!(
            "host region: RDMA READ of {READ_LEN} bytes in {:?} (informational)",
            t0.elapsed()
        );
        let want = pattern(READ_LEN, 11);
        assert_eq!(crc32fast::hash(&got), crc32fast::hash(&want));
        assert!(got == want, "RDMA READ returned other bytes");
        // Out of range: refused as a peer violation, nothing posted.
        for (off, len) in [
            (REGION as u64 - 10, 11),
            (REGION as u64, 1),
            (u64::MAX, 2),
            (0, REGION as u64 + 1),
        ] {
            let e = t.read_peer_host(off, len).unwrap_err();
            assert!(
                matches!(e, TransportError::PeerViolation { .. }),
                "{off}+{len}: {e:?}"
            );
            assert!(matches!(
                t.peer_host_staging(off, len),
                Err(TransportError::PeerViolation { .. })
            ));
            assert!(matches!(
                t.write_peer_host(off, len),
                Err(TransportError::PeerViolation { .. })
            ));
        }
        assert_eq!(t.read_peer_host(REGION as u64, 0).unwrap().len(), 0);
        let body = pattern(WRITE_LEN, 12);
        t.peer_host_staging(WRITE_AT, WRITE_LEN as u64)
            .unwrap()
            .copy_from_slice(&body);
        t.write_peer_host(WRITE_AT, WRITE_LEN as u64).unwrap();
        // The refusals left the transport usable.
        t.send(b"done").unwrap();
        assert!(t
            .recv(deadline(20_000), &mut |_| {})
            .is_err_and(|e| e.is_peer_gone()));
    });
    assert_eq!(c.host_region_len(), REGION);
    assert_eq!(c.peer_host_len(), 0, "the server registered no region");
    let slab = c.host_alloc(READ_LEN).unwrap();
    assert!(slab.len as usize >= READ_LEN);
    assert!(c.host_alloc(REGION).is_err(), "the region is half taken");
    c.host_free(slab).unwrap();
    assert!(c.host_free(slab).is_err(), "double free refused");
    let base = c.host_region_base().unwrap();
    // SAFETY: the region is REGION bytes of mapped memory owned by `c`, alive until `c`
    // drops below; the server only touches it between "go" and "done".
    let region = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), REGION) };
    let start = READ_AT as usize;
    region[start..start + READ_LEN].copy_from_slice(&pattern(READ_LEN, 11));
    c.send(b"go").unwrap();
    assert_eq!(recv_n(&mut c, 4), b"done");
    let w = WRITE_AT as usize;
    assert!(
        region[w..w + WRITE_LEN] == pattern(WRITE_LEN, 12)[..],
        "RDMA WRITE did not land"
    );
    // Fresh anonymous memory: the bytes around the write stay zero.
    assert_eq!((region[w - 1], region[w + WRITE_LEN]), (0, 0), "no spill");
    drop(c);
    server.join().unwrap();
}

fn bad_length_is_a_typed_error() {
    let bad = RdmaConfig {
        fault: Fault::Oversend,
        ..cfg()
    };
    let slot = RdmaConfig::default().slot_bytes;
    let (mut c, server) = pair(cfg(), bad, |mut t: RdmaTransport| {
        t.recv(deadline(30_000), &mut |_| {}).map(|_| ())
    });
    c.send(&pattern(slot + 100, 4)).unwrap();
    let server_err = server.join().unwrap().unwrap_err();
    println!("receiver saw: {server_err}");
    assert!(
        matches!(
            server_err,
            TransportError::RdmaCompletion {
                op: "RDMA receive",
                status: 1 | 2,
                ..
            }
        ),
        "want IBV_WC_LOC_LEN_ERR (rxe 6.1 reports IBV_WC_LOC_QP_OP_ERR), got {server_err:?}"
    );
    let err = c.recv(deadline(30_000), &mut |_| {}).unwrap_err();
    println!("sender saw: {err}");
    assert!(
        matches!(
            err,
            TransportError::RdmaCompletion { .. } | TransportError::PeerGone { .. }
        ),
        "{err:?}"
    );
}

/// Without a device, set-up fails with a typed error instead of crashing.
fn no_device_is_a_typed_error() {
    let listener = RdmaListener::bind("127.0.0.1:0", RdmaConfig::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || listener.accept(deadline(5_000)).map(|_| ()));
    let err = RdmaTransport::connect(addr, RdmaConfig::default()).unwrap_err();
    println!("no device: {err}");
    assert!(
        matches!(
            err,
            TransportError::Rdma { .. } | TransportError::RdmaUnavailable { .. }
        ),
        "{err:?}"
    );
    assert!(server.join().unwrap().is_err());
}

/// A client with the wrong token is refused on the control connection, before either side opens
/// a device: so this case needs no RDMA device and runs on the host too.
fn wrong_token_is_refused_before_any_rdma_resource() {
    let server_cfg = RdmaConfig {
        token: ControlToken([0x5a; 32]),
        ..cfg()
    };
    let client_cfg = RdmaConfig {
        token: ControlToken([0xa5; 32]),
        ..cfg()
    };
    let listener = RdmaListener::bind("127.0.0.1:0", server_cfg).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || listener.accept(deadline(10_000)).map(|_| ()));
    let err = RdmaTransport::connect(addr, client_cfg).unwrap_err();
    println!("wrong token, client side: {err}");
    assert!(
        matches!(err, TransportError::Unauthenticated { .. }),
        "{err:?}"
    );
    let server_err = server.join().unwrap().unwrap_err();
    println!("wrong token, server side: {server_err}");
    assert!(
        matches!(server_err, TransportError::Unauthenticated { .. }),
        "{server_err:?}"
    );
}

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        let addr = std::env::var(CHILD_ADDR_ENV).unwrap();
        match role.as_str() {
            "sender" => child_sender(&addr),
            "receiver" => child_receiver(&addr),
            other => panic!("unknown child role {other}"),
        }
        return;
    }
    let cases: Vec<(&str, fn())> = if std::env::var("RGPU_RDMA_DEV").is_ok() {
        vec![
            ("handshake", handshake),
            ("null_call", null_call),
            ("batched_async_calls", batched_async_calls),
            ("bulk_1b_to_64mib", bulk_1b_to_64mib),
            ("burst_above_credit_window", burst_above_credit_window),
            ("peer_killed_mid_transfer", peer_killed_mid_transfer),
            ("bad_rkey_is_a_typed_error", bad_rkey_is_a_typed_error),
            ("bad_length_is_a_typed_error", bad_length_is_a_typed_error),
            ("host_region_read_write", host_region_read_write),
            (
                "wrong_token_is_refused_before_any_rdma_resource",
                wrong_token_is_refused_before_any_rdma_resource,
            ),
        ]
    } else {
        println!("rdma: RGPU_RDMA_DEV unset, skipping the device cases (run scripts/rdma-vm-test)");
        if rgpu_dataplane::rdma::available().is_err() {
            println!("rdma: libibverbs.so.1 not loadable; checking the typed error only");
        }
        vec![
            ("no_device_is_a_typed_error", no_device_is_a_typed_error),
            (
                "wrong_token_is_refused_before_any_rdma_resource",
                wrong_token_is_refused_before_any_rdma_resource,
            ),
        ]
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t0 = Instant::now();
        println!("rdma case {name} ...");
        match catch_unwind(AssertUnwindSafe(case)) {
            Ok(()) => {
                passed += 1;
                println!("rdma case {name}: ok ({:.1?})", t0.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("rdma case {name}: FAILED ({:.1?})", t0.elapsed());
            }
        }
    }
    println!("rdma test result: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
