//! Integration tests of the io_uring TCP transport over loopback.

mod support;

use support::{deadline, echo, echo_round_trips, pattern, recv_n};

use std::io::IoSlice;
use std::thread;
use std::time::Duration;

use rgpu_dataplane::tcp::{TcpConfig, TcpFeatures, TcpUringListener, TcpUringTransport};
use rgpu_dataplane::{Transport, TransportError, TransportKind};

/// Starts a listener and runs `server` on the accepted transport in a thread.
fn with_server<R: Send + 'static>(
    cfg: TcpConfig,
    server: impl FnOnce(TcpUringTransport) -> R + Send + 'static,
) -> (TcpUringTransport, thread::JoinHandle<R>) {
    let listener = TcpUringListener::bind("127.0.0.1:0", cfg.clone()).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let t = listener.accept(deadline(10_000)).unwrap();
        server(t)
    });
    let client = TcpUringTransport::connect(addr, cfg).unwrap();
    (client, handle)
}

#[test]
fn echo_round_trips_and_kind() {
    let (mut c, server) = with_server(TcpConfig::default(), echo);
    assert_eq!(c.kind(), TransportKind::TcpUring);
    let rounds = if cfg!(debug_assertions) { 200 } else { 2_000 };
    echo_round_trips(&mut c, rounds);
    drop(c);
    assert!(server.join().unwrap() > 0);
}

#[test]
fn many_batches_arrive_in_order() {
    let (mut c, server) = with_server(TcpConfig::default(), echo);
    let mut expected = Vec::new();
    for i in 0..500u32 {
        let batch = pattern(1 + (i as usize * 37) % 700, u64::from(i));
        c.send(&batch).unwrap();
        expected.extend_from_slice(&batch);
    }
    let got = recv_n(&mut c, expected.len());
    assert_eq!(crc32fast::hash(&got), crc32fast::hash(&expected));
    assert_eq!(got, expected);
    drop(c);
    assert_eq!(server.join().unwrap(), expected.len() as u64);
}

/// Bulk server: reads `[len u64][body]`, checksums the body (alternating the
/// direct and chunked receive paths), replies with the checksum, then echoes the body.
fn bulk_server(mut t: TcpUringTransport) -> usize {
    let mut served = 0;
    loop {
        let mut hdr = [0u8; 8];
        match t.recv_exact_into(&mut hdr, deadline(20_000)) {
            Ok(()) => {}
            Err(e) if e.is_peer_gone() => return served,
            Err(e) => panic!("bulk server header: {e}"),
        }
        let len = u64::from_le_bytes(hdr) as usize;
        let body = if served % 2 == 0 {
            let mut body = vec![0u8; len];
            t.recv_exact_into(&mut body, deadline(20_000)).unwrap();
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

/// Runs the bulk exchange; returns the client's features afterwards.
fn bulk_round_trips(cfg: TcpConfig) -> TcpFeatures {
    let (mut c, server) = with_server(cfg, bulk_server);
    let sizes = [
        1usize,
        7,
        4096,
        65_535,
        65_536,
        200_000,
        (1 << 20) + 3,
        64 << 20,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let body = pattern(len, i as u64 + 11);
        c.send_vectored(&[
            IoSlice::new(&(len as u64).to_le_bytes()),
            IoSlice::new(&body),
        ])
        .unwrap();
        let mut crc = [0u8; 4];
        c.recv_exact_into(&mut crc, deadline(20_000)).unwrap();
        assert_eq!(
            u32::from_le_bytes(crc),
            crc32fast::hash(&body),
            "server checksum, {len} B"
        );
        let mut hdr = [0u8; 8];
        c.recv_exact_into(&mut hdr, deadline(20_000)).unwrap();
        assert_eq!(u64::from_le_bytes(hdr) as usize, len);
        let back = if i % 2 == 0 {
            let mut back = vec![0u8; len];
            c.recv_exact_into(&mut back, deadline(20_000)).unwrap();
            back
        } else {
            recv_n(&mut c, len)
        };
        assert_eq!(
            crc32fast::hash(&back),
            crc32fast::hash(&body),
            "echoed body, {len} B"
        );
    }
    let features = c.features();
    drop(c);
    assert_eq!(server.join().unwrap(), sizes.len());
    features
}

#[test]
fn bulk_1b_to_64mib_with_send_zc() {
    // Loopback peers skip SEND_ZC by default; opt in so the zero-copy path is exercised.
    let cfg = TcpConfig {
        zc_on_loopback: true,
        ..TcpConfig::default()
    };
    let (c, server) = with_server(cfg.clone(), |t| t.features());
    let (client_features, server_features) = (c.features(), server.join().unwrap());
    drop(c);
    assert_eq!(client_features, server_features);
    // Kernels from 6.0 have SEND_ZC and multishot receive: the fast paths must be on.
    if kernel_at_least(6, 0) {
        assert!(
            client_features.send_zc && client_features.multishot_recv,
            "{client_features:?}"
        );
    }
    let after = bulk_round_trips(cfg);
    // Still on after 1 B..64 MiB transfers: no SEND_ZC call was refused and fell back.
    assert_eq!(after, client_features);
}

/// True if the running kernel's version is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[test]
fn loopback_peers_skip_send_zc_by_default() {
    let (c, server) = with_server(TcpConfig::default(), |t| t.features());
    let (f, sf) = (c.features(), server.join().unwrap());
    drop(c);
    assert!(!f.send_zc && !sf.send_zc, "client {f:?}, server {sf:?}");
    // The copying path still moves every size intact.
    assert_eq!(bulk_round_trips(TcpConfig::default()), f);
}

#[test]
fn bulk_with_copying_sends_and_plain_recv_fallback() {
    let cfg = TcpConfig {
        zc_threshold_bytes: usize::MAX,
        multishot_recv: false,
        ..TcpConfig::default()
    };
    let (c, server) = with_server(cfg.clone(), |t| t.features());
    let (f, sf) = (c.features(), server.join().unwrap());
    drop(c);
    assert!(!f.send_zc && !f.multishot_recv, "{f:?}");
    assert_eq!(f, sf);
    assert_eq!(bulk_round_trips(cfg), f);
}

#[test]
fn zero_copy_for_every_send_above_tiny_threshold() {
    // Forces SEND_ZC (where supported) even for small sends, and the
    // registered-stage SEND_ZC for vectored ones.
    let cfg = TcpConfig {
        zc_threshold_bytes: 16,
        zc_on_loopback: true,
        ..TcpConfig::default()
    };
    let (mut c, server) = with_server(cfg, echo);
    for i in 0..50usize {
        let batch = pattern(16 + i * 1000, i as u64);
        if i % 2 == 0 {
            c.send(&batch).unwrap();
        } else {
            let (a, b) = batch.split_at(batch.len() / 2);
            c.send_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .unwrap();
        }
        assert_eq!(recv_n(&mut c, batch.len()), batch);
    }
    drop(c);
    assert!(server.join().unwrap() > 0);
}

#[test]
fn deadline_gives_timeout_and_transport_stays_usable() {
    let (mut c, server) = with_server(TcpConfig::default(), |mut t| {
        // Stay silent until the client pokes us.
        let mut got = Vec::new();
        t.recv(deadline(10_000), &mut |b| got.extend_from_slice(b))
            .unwrap();
        t.send(b"late").unwrap();
        got
    });
    let err = c
        .recv(deadline(50), &mut |_| panic!("no bytes expected"))
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { op: "recv" }),
        "{err}"
    );
    let mut buf = [0u8; 4];
    let err = c.recv_exact_into(&mut buf, deadline(50)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    c.send(b"poke").unwrap();
    c.recv_exact_into(&mut buf, deadline(10_000)).unwrap();
    assert_eq!(&buf, b"late");
    assert_eq!(server.join().unwrap(), b"poke");
}

#[test]
fn peer_drop_gives_peer_gone_on_recv_and_send() {
    let (mut c, server) = with_server(TcpConfig::default(), drop);
    server.join().unwrap();
    let err = c.recv(deadline(10_000), &mut |_| {}).unwrap_err();
    assert!(err.is_peer_gone(), "{err}");
    // The transport now refuses work instead of hanging.
    let err = c.recv(deadline(10_000), &mut |_| {}).unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");

    let (mut c, server) = with_server(TcpConfig::default(), drop);
    server.join().unwrap();
    // Sends into a closed peer fail (RST) within a few attempts.
    let mut failed = None;
    for _ in 0..100 {
        if let Err(e) = c.send(&[0u8; 1024]) {
            failed = Some(e);
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let err = failed.expect("send to a dead peer must fail");
    assert!(err.is_peer_gone(), "{err}");
}

#[test]
fn peer_drop_mid_body_gives_peer_gone() {
    let (mut c, server) = with_server(TcpConfig::default(), |mut t| {
        t.send(&[1u8; 1000]).unwrap();
    });
    server.join().unwrap();
    let mut body = vec![0u8; 4096];
    let err = c.recv_exact_into(&mut body, deadline(10_000)).unwrap_err();
    assert!(err.is_peer_gone(), "{err}");
    assert!(body[..1000].iter().all(|&b| b == 1));
}

#[test]
fn tcp_nodelay_is_set_on_both_ends() {
    let (c, server) = with_server(TcpConfig::default(), |t| t.stream().nodelay().unwrap());
    assert!(c.stream().nodelay().unwrap(), "client TCP_NODELAY");
    assert!(server.join().unwrap(), "server TCP_NODELAY");
}

#[test]
fn accept_without_client_times_out() {
    let listener = TcpUringListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
    let err = listener.accept(deadline(30)).unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { op: "accept" }),
        "{err}"
    );
}

#[test]
fn vectored_sends_coalesce_or_use_sendmsg() {
    // A tiny stage forces the SENDMSG path for the larger vectored batch.
    let cfg = TcpConfig {
        send_stage_bytes: 64,
        ..TcpConfig::default()
    };
    let (mut c, server) = with_server(cfg, echo);
    c.send_vectored(&[]).unwrap();
    let small = pattern(10, 1);
    c.send_vectored(&[IoSlice::new(&small), IoSlice::new(&small)])
        .unwrap();
    assert_eq!(recv_n(&mut c, 20), [small.clone(), small].concat());
    let big = pattern(5_000, 2);
    c.send_vectored(&[IoSlice::new(&big[..100]), IoSlice::new(&big[100..])])
        .unwrap();
    assert_eq!(recv_n(&mut c, big.len()), big);
    drop(c);
    assert_eq!(server.join().unwrap(), 5_020);
}

#[test]
fn single_thread_mode_works_and_refuses_a_second_thread() {
    let cfg = TcpConfig {
        single_thread: true,
        ..TcpConfig::default()
    };
    let (mut c, server) = with_server(cfg, echo);
    for i in 0..100u64 {
        let msg = pattern(10 + i as usize, i);
        let mut got = Vec::new();
        c.send_then_recv(&msg, deadline(10_000), &mut |b| got.extend_from_slice(b))
            .unwrap();
        if got.len() < msg.len() {
            got.extend(recv_n(&mut c, msg.len() - got.len()));
        }
        assert_eq!(got, msg);
    }
    let mut body = vec![0u8; 300_000];
    c.send(&pattern(body.len(), 9)).unwrap();
    c.recv_exact_into(&mut body, deadline(10_000)).unwrap();
    assert_eq!(body, pattern(body.len(), 9));
    // Moved to another thread after first use: refused, not misbehaving.
    let c = thread::spawn(move || {
        let err = c.send(b"x").unwrap_err();
        assert!(matches!(err, TransportError::Closed { .. }), "{err}");
        c
    })
    .join()
    .unwrap();
    drop(c);
    assert!(server.join().unwrap() > 0);

    // Dropped on a foreign thread while its multishot receive is armed: it
    // cannot settle there, so it must leak its buffers rather than crash.
    let cfg = TcpConfig {
        single_thread: true,
        ..TcpConfig::default()
    };
    let (mut c, server) = with_server(cfg, echo);
    assert_eq!(
        c.send_then_recv(b"abc", deadline(10_000), &mut |_| {})
            .unwrap(),
        3
    );
    thread::spawn(move || drop(c)).join().unwrap();
    assert_eq!(server.join().unwrap(), 3);
}

#[test]
fn send_to_a_stuck_peer_times_out_and_releases_zero_copy_pages() {
    // The server never reads: a 64 MiB send fills both socket buffers and
    // blocks. The send must give up at its timeout, settle the in-flight
    // (zero-copy) request by resetting the connection, and refuse later use.
    let cfg = TcpConfig {
        send_timeout_ms: 200,
        ..TcpConfig::default()
    };
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (mut c, server) = with_server(cfg, move |t| {
        let _ = hold.recv_timeout(Duration::from_secs(20));
        drop(t);
    });
    let body = pattern(64 << 20, 3);
    let err = c.send(&body).unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { op: "send" }),
        "{err}"
    );
    let err = c.send(b"more").unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
    release.send(()).unwrap();
    server.join().unwrap();
}
