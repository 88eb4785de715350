//! Scenarios and child role of the `cross_process` test (see there).

use rgpu_ring::{PeerWatch, PopError, PushError, Segment, SegmentConfig, Side, WaitError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ENV_ROLE: &str = "RGPU_RING_CHILD";
const ENV_FD: &str = "RGPU_RING_FD";
/// Records in the single-producer scenario.
const RECORDS: u64 = 1_000_000;
/// Producer threads in the multi-producer scenario.
const THREADS: u64 = 4;
/// Records per thread in the multi-producer scenario.
const RECORDS_PER_THREAD: u64 = if cfg!(debug_assertions) {
    50_000
} else {
    250_000
};
/// Generous bound on any one scenario; a hang fails instead of blocking CI.
const DEADLINE: Duration = Duration::from_secs(120);

fn config() -> SegmentConfig {
    SegmentConfig {
        ring_bytes: 64 * 1024,
        max_record_bytes: 1024,
        arena_bytes: 0,
    }
}

/// Payload length for record `seq` of producer `tid`: 0..=300 bytes of body.
fn body_len(tid: u64, seq: u64) -> usize {
    ((seq.wrapping_mul(7919) ^ tid.wrapping_mul(104_729)) % 301) as usize
}

/// Record = tid u64 | seq u64 | body | crc32 of everything before it.
fn encode(tid: u64, seq: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&tid.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let n = body_len(tid, seq);
    out.extend((0..n).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Checks one record and returns (tid, seq).
fn decode(rec: &[u8]) -> (u64, u64) {
    assert!(rec.len() >= 20, "record too short: {}", rec.len());
    let (payload, crc) = rec.split_at(rec.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().unwrap());
    assert_eq!(crc32fast::hash(payload), crc, "checksum mismatch");
    let tid = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    assert_eq!(payload.len() - 16, body_len(tid, seq), "length mismatch");
    (tid, seq)
}

fn spawn_child(seg: &Segment, role: &str) -> Child {
    let fd = seg.fd().try_clone_to_owned().unwrap();
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ENV_ROLE, role)
        .env(ENV_FD, fd.as_raw_fd().to_string())
        .spawn()
        .unwrap();
    drop(fd);
    child
}

fn watch(child: &Child) -> PeerWatch {
    PeerWatch::new(i32::try_from(child.id()).unwrap()).unwrap()
}

/// Consumes `expected` records from the server→client ring, checking order
/// per producer thread, and returns how many were seen.
fn consume(role: &str, threads: u64, per_thread: u64) {
    let client = Segment::create(&config()).unwrap();
    let (_p, mut c) = client.split(Side::Client).unwrap();
    let mut child = spawn_child(&client, role);
    let peer = watch(&child);
    let deadline = Instant::now() + DEADLINE;
    let mut next = vec![0u64; threads as usize];
    let mut total = 0u64;
    while total < threads * per_thread {
        total += c
            .pop_wait(deadline, Some(&peer), |rec| {
                let (tid, seq) = decode(rec);
                assert_eq!(seq, next[tid as usize], "out of order for thread {tid}");
                next[tid as usize] += 1;
            })
            .unwrap() as u64;
    }
    assert!(next.iter().all(|&n| n == per_thread), "{next:?}");
    assert!(child.wait().unwrap().success());
    println!("{role}: {total} records verified");
}

fn expect_peer_dead_while_popping() {
    let client = Segment::create(&config()).unwrap();
    let (_p, mut c) = client.split(Side::Client).unwrap();
    let mut child = spawn_child(&client, "die");
    let peer = watch(&child);
    let r = c.pop_wait(Instant::now() + DEADLINE, Some(&peer), |_| {});
    assert!(
        matches!(r, Err(PopError::Wait(WaitError::PeerDead { .. }))),
        "{r:?}"
    );
    assert!(!child.wait().unwrap().success());
    println!("consumer waiting on empty ring: peer death reported");
}

fn expect_peer_dead_while_pushing() {
    let client = Segment::create(&config()).unwrap();
    let (p, _c) = client.split(Side::Client).unwrap();
    let mut child = spawn_child(&client, "die");
    let peer = watch(&child);
    let rec = [0u8; 1000];
    let mut filled = 0;
    while p.try_push(&rec).is_ok() {
        filled += 1;
    }
    assert!(filled > 0);
    let r = p.push_timeout(&rec, Instant::now() + DEADLINE, Some(&peer));
    assert!(
        matches!(r, Err(PushError::Wait(WaitError::PeerDead { .. }))),
        "{r:?}"
    );
    assert!(!child.wait().unwrap().success());
    println!("producer blocked on full ring: peer death reported");
}

fn child_main(role: &str) {
    let raw: i32 = std::env::var(ENV_FD).unwrap().parse().unwrap();
    // SAFETY: the parent passed this inherited fd for us alone; nothing else
    // in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let server = Segment::attach(fd).unwrap();
    let (p, _c) = server.split(Side::Server).unwrap();
    let ppid = rustix::process::getppid().unwrap().as_raw_pid();
    let parent = PeerWatch::new(ppid).unwrap();
    let deadline = Instant::now() + DEADLINE;
    match role {
        "single" => produce(&p, 0, RECORDS, deadline, &parent),
        "multi" => std::thread::scope(|s| {
            for tid in 0..THREADS {
                let (p, parent) = (p.clone(), &parent);
                s.spawn(move || produce(&p, tid, RECORDS_PER_THREAD, deadline, parent));
            }
        }),
        "die" => {
            std::thread::sleep(Duration::from_millis(100));
            let me = rustix::process::getpid();
            rustix::process::kill_process(me, rustix::process::Signal::KILL).unwrap();
            unreachable!("SIGKILL returned");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Pushes `count` records, alternating single pushes and batches of 1..=16.
fn produce(
    p: &rgpu_ring::Producer<rgpu_ring::ShmRing>,
    tid: u64,
    count: u64,
    deadline: Instant,
    parent: &PeerWatch,
) {
    let mut bufs: Vec<Vec<u8>> = (0..16).map(|_| Vec::new()).collect();
    let mut seq = 0;
    while seq < count {
        let batch = ((seq / 7) % 16 + 1).min(count - seq) as usize;
        for (i, buf) in bufs.iter_mut().take(batch).enumerate() {
            encode(tid, seq + i as u64, buf);
        }
        if batch == 1 {
            p.push_timeout(&bufs[0], deadline, Some(parent)).unwrap();
        } else {
            let refs: Vec<&[u8]> = bufs[..batch].iter().map(Vec::as_slice).collect();
            p.push_batch_timeout(&refs, deadline, Some(parent)).unwrap();
        }
        seq += batch as u64;
    }
}

pub(crate) fn main() {
    if let Ok(role) = std::env::var(ENV_ROLE) {
        child_main(&role);
        return;
    }
    let started = Instant::now();
    consume("single", 1, RECORDS);
    consume("multi", THREADS, RECORDS_PER_THREAD);
    expect_peer_dead_while_popping();
    expect_peer_dead_while_pushing();
    println!(
        "cross_process: 4 scenarios passed in {:?}",
        started.elapsed()
    );
}
