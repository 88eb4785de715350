//! Integration tests of the shared-memory transport (threads and processes).

mod support;

use support::{deadline, echo, echo_round_trips, pattern, recv_n};

use std::io::IoSlice;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{SegmentConfig, ShmConfig, ShmListener, ShmTransport, Side, Slab};
use rgpu_dataplane::{Transport, TransportError, TransportKind};

/// Env var that turns this test binary into a peer process.
const CHILD_ROLE: &str = "RGPU_SHM_TEST_CHILD_ROLE";
const CHILD_PATH: &str = "RGPU_SHM_TEST_CHILD_PATH";

fn sock_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rgpu-shm-test-{}-{n}.sock", std::process::id()))
}

fn big_cfg() -> ShmConfig {
    ShmConfig {
        segment: SegmentConfig {
            ring_bytes: 1 << 20,
            max_record_bytes: 64 << 10,
            arena_bytes: 128 << 20,
        },
        ..ShmConfig::default()
    }
}

fn with_server<R: Send + 'static>(
    cfg: ShmConfig,
    server: impl FnOnce(ShmTransport) -> R + Send + 'static,
) -> (ShmTransport, thread::JoinHandle<R>) {
    let path = sock_path();
    let listener = ShmListener::bind(&path, cfg.clone()).unwrap();
    let handle = thread::spawn(move || {
        let t = listener.accept(deadline(10_000)).unwrap();
        server(t)
    });
    let client = ShmTransport::connect(&path, cfg).unwrap();
    (client, handle)
}

#[test]
fn echo_round_trips_and_sides() {
    let (mut c, server) = with_server(ShmConfig::default(), |t| {
        assert_eq!(t.side(), Side::Server);
        assert_eq!(t.peer_pid(), std::process::id() as i32);
        echo(t)
    });
    assert_eq!(c.kind(), TransportKind::Shm);
    assert_eq!(c.side(), Side::Client);
    let rounds = if cfg!(debug_assertions) { 500 } else { 5_000 };
    echo_round_trips(&mut c, rounds);
    drop(c);
    assert!(server.join().unwrap() > 0);
}

/// A socket accepted by a plain `UnixListener` (as the daemon does before
/// handing it to a worker process) completes the shm handshake with
/// `ShmTransport::accept_stream`.
#[test]
fn accept_stream_serves_a_socket_accepted_elsewhere() {
    let path = sock_path();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let t = ShmTransport::accept_stream(sock, ShmConfig::default()).unwrap();
        assert_eq!(t.side(), Side::Server);
        echo(t)
    });
    let mut c = ShmTransport::connect(&path, ShmConfig::default()).unwrap();
    echo_round_trips(&mut c, 50);
    drop(c);
    assert!(handle.join().unwrap() > 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn many_batches_and_vectored_arrive_in_order() {
    let (mut c, server) = with_server(ShmConfig::default(), echo);
    let mut expected = Vec::new();
    for i in 0..500u32 {
        let batch = pattern(1 + (i as usize * 37) % 700, u64::from(i));
        if i % 3 == 0 {
            let (a, b) = batch.split_at(batch.len() / 2);
            c.send_vectored(&[IoSlice::new(a), IoSlice::new(&[]), IoSlice::new(b)])
                .unwrap();
        } else {
            c.send(&batch).unwrap();
        }
        expected.extend_from_slice(&batch);
    }
    let got = recv_n(&mut c, expected.len());
    assert_eq!(got, expected);
    drop(c);
    assert_eq!(server.join().unwrap(), expected.len() as u64);
}

/// Server: reads `[len u64][body]` (body via the arena for large client
/// batches), alternating `recv_exact_into` and `recv`, replies with the crc;
/// then serves `[slab offset u64][slab len u64][fill len u64]` requests by
/// writing a pattern into the client's slab and sending it back by reference.
fn bulk_server(mut t: ShmTransport) -> usize {
    let mut served = 0;
    loop {
        let mut hdr = [0u8; 8];
        match t.recv_exact_into(&mut hdr, deadline(20_000)) {
            Ok(()) => {}
            Err(e) if e.is_peer_gone() => return served,
            Err(e) => panic!("bulk server: {e}"),
        }
        let len = u64::from_le_bytes(hdr);
        if len == u64::MAX {
            // Server → client through a client-provided slab.
            let mut req = [0u8; 24];
            t.recv_exact_into(&mut req, deadline(20_000)).unwrap();
            let word = |i: usize| u64::from_le_bytes(req[i * 8..i * 8 + 8].try_into().unwrap());
            let slab = Slab {
                offset: word(0),
                len: word(1),
            };
            let fill = word(2) as usize;
            let data = pattern(fill, fill as u64);
            t.slab_mut(slab).unwrap()[..fill].copy_from_slice(&data);
            t.send(&crc32fast::hash(&data).to_le_bytes()).unwrap();
            t.send_slab(slab, fill).unwrap();
        } else {
            let len = len as usize;
            let body = if served % 2 == 0 {
                let mut body = vec![0u8; len];
                t.recv_exact_into(&mut body, deadline(20_000)).unwrap();
                body
            } else {
                recv_n(&mut t, len)
            };
            t.send(&crc32fast::hash(&body).to_le_bytes()).unwrap();
        }
        served += 1;
    }
}

const SIZES: [usize; 9] = [
    1,
    7,
    4096,
    65_535,
    65_536,
    65_537,
    200_000,
    (1 << 20) + 3,
    64 << 20,
];

#[test]
fn bulk_client_to_server_1b_to_64mib_through_the_arena() {
    let (mut c, server) = with_server(big_cfg(), bulk_server);
    for (i, &len) in SIZES.iter().enumerate() {
        let body = pattern(len, i as u64 + 5);
        let hdr = (len as u64).to_le_bytes();
        if i % 2 == 0 {
            c.send(&hdr).unwrap();
            c.send(&body).unwrap();
        } else {
            // Header and body in one batch (one slab when large).
            c.send_vectored(&[IoSlice::new(&hdr), IoSlice::new(&body)])
                .unwrap();
        }
        let mut crc = [0u8; 4];
        c.recv_exact_into(&mut crc, deadline(20_000)).unwrap();
        assert_eq!(u32::from_le_bytes(crc), crc32fast::hash(&body), "{len} B");
    }
    drop(c);
    assert_eq!(server.join().unwrap(), SIZES.len());
}

#[test]
fn bulk_server_to_client_1b_to_64mib_through_client_slabs() {
    let (mut c, server) = with_server(big_cfg(), bulk_server);
    for (i, &len) in SIZES.iter().enumerate() {
        let slab = c.alloc_slab(len).unwrap();
        assert!(slab.len as usize >= len);
        let mut req = Vec::new();
        for w in [u64::MAX, slab.offset, slab.len, len as u64] {
            req.extend_from_slice(&w.to_le_bytes());
        }
        c.send(&req).unwrap();
        let mut crc = [0u8; 4];
        c.recv_exact_into(&mut crc, deadline(20_000)).unwrap();
        // The slab comes back as stream bytes: read them through both paths.
        let got = if i % 2 == 0 {
            let mut got = vec![0u8; len];
            c.recv_exact_into(&mut got, deadline(20_000)).unwrap();
            got
        } else {
            recv_n(&mut c, len)
        };
        assert_eq!(crc32fast::hash(&got), u32::from_le_bytes(crc), "{len} B");
        assert_eq!(got, pattern(len, len as u64));
    }
    // Every slab came back, so the whole arena is allocatable again.
    let all = c.alloc_slab(128 << 20).unwrap();
    c.free_slab(all).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), SIZES.len());
}

#[test]
fn arena_slabs_are_recycled_across_many_bulk_sends() {
    let cfg = ShmConfig {
        segment: SegmentConfig {
            ring_bytes: 1 << 16,
            max_record_bytes: 4096,
            arena_bytes: 1 << 20,
        },
        ..ShmConfig::default()
    };
    const BODY: usize = 256 << 10;
    let (mut c, server) = with_server(cfg, |mut t| {
        let mut served = 0;
        let mut body = vec![0u8; BODY];
        while t.recv_exact_into(&mut body, deadline(20_000)).is_ok() {
            t.send(&crc32fast::hash(&body).to_le_bytes()).unwrap();
            served += 1;
        }
        served
    });
    // 64 × 256 KiB = 16 MiB through a 1 MiB arena: only works if releases flow back.
    // Eight sends in flight (2 MiB) exceed the arena, so later sends must wait
    // for releases, setting the interleaved checksum replies aside meanwhile.
    for round in 0..8u64 {
        let bodies: Vec<Vec<u8>> = (0..8).map(|k| pattern(BODY, round * 8 + k)).collect();
        for b in &bodies {
            c.send(b).unwrap();
        }
        for b in &bodies {
            let mut crc = [0u8; 4];
            c.recv_exact_into(&mut crc, deadline(20_000)).unwrap();
            assert_eq!(u32::from_le_bytes(crc), crc32fast::hash(b));
        }
    }
    drop(c);
    assert_eq!(server.join().unwrap(), 64);
}

#[test]
fn deadline_gives_timeout_and_transport_stays_usable() {
    let (mut c, server) = with_server(ShmConfig::default(), |mut t| {
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
    assert!(c
        .recv_exact_into(&mut buf, deadline(50))
        .unwrap_err()
        .is_timeout());
    c.send(b"poke").unwrap();
    c.recv_exact_into(&mut buf, deadline(10_000)).unwrap();
    assert_eq!(&buf, b"late");
    assert_eq!(server.join().unwrap(), b"poke");
}

#[test]
fn peer_drop_gives_peer_gone() {
    let (mut c, server) = with_server(ShmConfig::default(), |mut t| {
        let mut got = Vec::new();
        t.recv(deadline(10_000), &mut |b| got.extend_from_slice(b))
            .unwrap();
        got
    });
    c.send(b"bye").unwrap();
    assert_eq!(server.join().unwrap(), b"bye");
    let err = c.recv(deadline(10_000), &mut |_| {}).unwrap_err();
    assert!(err.is_peer_gone(), "{err}");
    let err = c.recv(deadline(10_000), &mut |_| {}).unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
}

#[test]
fn senders_from_many_threads_never_interleave_batches() {
    const THREADS: u8 = 4;
    let per_thread: u32 = if cfg!(debug_assertions) { 300 } else { 3_000 };
    let (c, server) = with_server(ShmConfig::default(), move |mut t| {
        let mut next = [0u32; THREADS as usize];
        let mut stream = Vec::new();
        let total = u32::from(THREADS) * per_thread;
        let mut seen = 0;
        while seen < total {
            t.recv(deadline(20_000), &mut |b| stream.extend_from_slice(b))
                .unwrap();
            // Each batch: [thread u8][seq u32][len u16][payload = thread byte × len].
            let mut at = 0;
            while stream.len() - at >= 7 {
                let th = stream[at] as usize;
                let seq = u32::from_le_bytes(stream[at + 1..at + 5].try_into().unwrap());
                let len = u16::from_le_bytes(stream[at + 5..at + 7].try_into().unwrap()) as usize;
                if stream.len() - at - 7 < len {
                    break;
                }
                assert_eq!(seq, next[th], "thread {th} out of order");
                assert!(
                    stream[at + 7..at + 7 + len].iter().all(|&b| b == th as u8),
                    "interleaved batch"
                );
                next[th] += 1;
                seen += 1;
                at += 7 + len;
            }
            stream.drain(..at);
        }
        next
    });
    let workers: Vec<_> = (0..THREADS)
        .map(|th| {
            let s = c.sender();
            thread::spawn(move || {
                for seq in 0..per_thread {
                    let len = (seq as usize * 13) % 300;
                    let mut b = vec![th];
                    b.extend_from_slice(&seq.to_le_bytes());
                    b.extend_from_slice(&(len as u16).to_le_bytes());
                    b.resize(7 + len, th);
                    s.send(&b).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.join().unwrap(), [per_thread; THREADS as usize]);
    drop(c);
}

#[test]
fn server_refuses_a_segment_above_its_bounds() {
    let path = sock_path();
    let server_cfg = ShmConfig {
        ring_bytes_accept_max: 1 << 16,
        ..ShmConfig::default()
    };
    let listener = ShmListener::bind(&path, server_cfg).unwrap();
    let handle = thread::spawn(move || listener.accept(deadline(10_000)).map(|_| ()));
    let err = ShmTransport::connect(&path, ShmConfig::default()).unwrap_err();
    assert!(matches!(err, TransportError::PeerViolation { .. }), "{err}");
    let err = handle.join().unwrap().unwrap_err();
    assert!(matches!(err, TransportError::PeerViolation { .. }), "{err}");
}

#[test]
fn hello_without_fd_is_rejected_and_accept_times_out() {
    let path = sock_path();
    let listener = ShmListener::bind(&path, ShmConfig::default()).unwrap();
    let err = listener.accept(deadline(30)).unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { op: "accept" }),
        "{err}"
    );
    let mut raw = UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut raw, b"not a hello, no fd").unwrap();
    let err = listener.accept(deadline(10_000)).unwrap_err();
    assert!(matches!(err, TransportError::PeerViolation { .. }), "{err}");
}

// ---- peer processes ---------------------------------------------------------

/// Entry point of the child process (a no-op in a normal test run).
#[test]
fn child_peer_entry() {
    let (Ok(role), Ok(path)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_PATH)) else {
        // Normal run: not a child, nothing to do (the role needs both vars).
        assert!(std::env::var(CHILD_ROLE).is_err() || std::env::var(CHILD_PATH).is_err());
        return;
    };
    match role.as_str() {
        "client" => {
            let mut t = ShmTransport::connect(&path, ShmConfig::default()).unwrap();
            t.send(b"ready").unwrap();
            // Keep the transport alive; the parent kills us.
            thread::sleep(Duration::from_secs(60));
            drop(t);
        }
        "server" => {
            let l = ShmListener::bind(&path, ShmConfig::default()).unwrap();
            let mut t = l.accept(deadline(10_000)).unwrap();
            t.send(b"ready").unwrap();
            // Keep the transport alive; the parent kills us.
            thread::sleep(Duration::from_secs(60));
            drop(t);
        }
        _ => return,
    }
    thread::sleep(Duration::from_secs(60));
}

fn spawn_child(role: &str, path: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_peer_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_PATH, path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits in `recv` while another thread SIGKILLs the child; expects PeerGone.
fn expect_peer_gone_after_kill(t: &mut ShmTransport, mut child: std::process::Child) {
    let mut ready = Vec::new();
    while ready.len() < 5 {
        t.recv(deadline(20_000), &mut |b| ready.extend_from_slice(b))
            .unwrap();
    }
    assert_eq!(ready, b"ready");
    let pid = child.id();
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        child.kill().unwrap();
        child.wait().unwrap()
    });
    let err = t
        .recv(deadline(20_000), &mut |_| panic!("no bytes expected"))
        .unwrap_err();
    assert!(err.is_peer_gone(), "{err}");
    assert!(!killer.join().unwrap().success());
    assert!(
        err.to_string().contains(&pid.to_string()) || err.to_string().contains("hung up"),
        "{err}"
    );
}

#[test]
fn sigkilled_client_process_is_seen_by_waiting_server() {
    let path = sock_path();
    let listener = ShmListener::bind(&path, ShmConfig::default()).unwrap();
    let child = spawn_child("client", &path);
    let mut t = listener.accept(deadline(20_000)).unwrap();
    assert_eq!(t.peer_pid(), child.id() as i32);
    expect_peer_gone_after_kill(&mut t, child);
}

#[test]
fn sigkilled_server_process_is_seen_by_waiting_client() {
    let path = sock_path();
    let child = spawn_child("server", &path);
    let start = Instant::now();
    let mut t = loop {
        match ShmTransport::connect(&path, ShmConfig::default()) {
            Ok(t) => break t,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("child server never came up: {e}"),
        }
    };
    assert_eq!(t.peer_pid(), child.id() as i32);
    expect_peer_gone_after_kill(&mut t, child);
    let _ = std::fs::remove_file(&path);
}
