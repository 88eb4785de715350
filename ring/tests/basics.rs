//! In-process behaviour of rings and segments: typed errors, batches,
//! reservations, corruption handling and attach validation.
#![cfg(not(loom))]

use rgpu_ring::{
    heap_ring, Corruption, PopError, PushError, Segment, SegmentConfig, SegmentError, Side,
    WaitError,
};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

fn drain<S: rgpu_ring::RingStorage>(c: &mut rgpu_ring::Consumer<S>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while c.try_pop_batch(|r| out.push(r.to_vec())).unwrap() > 0 {}
    out
}

#[test]
fn push_pop_single_and_batch_in_order() {
    let (p, mut c) = heap_ring(4096, 512).unwrap();
    p.try_push(b"one").unwrap();
    p.try_push_batch(&[b"two", b"", b"three"]).unwrap();
    p.try_push(&[7u8; 512]).unwrap();
    let got = drain(&mut c);
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], b"one");
    assert_eq!(got[1], b"two");
    assert_eq!(got[2], b"");
    assert_eq!(got[3], b"three");
    assert_eq!(got[4], vec![7u8; 512]);
    assert_eq!(c.try_pop_batch(|_| {}).unwrap(), 0);
}

#[test]
fn oversized_record_and_batch_are_rejected() {
    let (p, _c) = heap_ring(1024, 100).unwrap();
    assert!(matches!(
        p.try_push(&[0u8; 101]),
        Err(PushError::TooLarge { len: 101, max: 100 })
    ));
    let rec = [0u8; 100];
    let batch = vec![&rec[..]; 8];
    assert!(matches!(
        p.try_push_batch(&batch),
        Err(PushError::BatchTooLarge { .. })
    ));
    assert!(
        heap_ring(1024, 1024).is_err(),
        "max record above capacity/2 must be refused"
    );
    assert!(
        heap_ring(1000, 10).is_err(),
        "capacity must be a power of two"
    );
}

#[test]
fn full_ring_is_reported_then_space_returns() {
    let (p, mut c) = heap_ring(1024, 200).unwrap();
    let mut pushed = 0;
    let err = loop {
        match p.try_push(&[pushed as u8; 100]) {
            Ok(()) => pushed += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, PushError::Full { .. }), "{err:?}");
    assert!(pushed >= 1 && pushed * 128 <= 1024);
    let deadline = Instant::now() + Duration::from_millis(20);
    let timed_out = p.push_timeout(&[0u8; 100], deadline, None);
    assert!(matches!(
        timed_out,
        Err(PushError::Wait(WaitError::Timeout { .. }))
    ));
    assert_eq!(drain(&mut c).len(), pushed);
    p.try_push(&[1u8; 100]).unwrap();
}

#[test]
fn reservation_commit_and_abandon() {
    let (p, mut c) = heap_ring(1024, 200).unwrap();
    let mut r = p.try_reserve(5).unwrap();
    r.buf_mut().copy_from_slice(b"hello");
    r.commit();
    drop(p.try_reserve(50).unwrap()); // abandoned → padding, skipped
    p.try_push(b"after").unwrap();
    assert_eq!(drain(&mut c), vec![b"hello".to_vec(), b"after".to_vec()]);
}

#[test]
fn pop_wait_times_out_on_empty_ring_and_wakes_on_push() {
    let (p, mut c) = heap_ring(1024, 200).unwrap();
    let deadline = Instant::now() + Duration::from_millis(30);
    let r = c.pop_wait(deadline, None, |_| {});
    assert!(matches!(r, Err(PopError::Wait(WaitError::Timeout { .. }))));

    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        p.try_push(b"wake").unwrap();
    });
    let mut got = Vec::new();
    let n = c
        .pop_wait(Instant::now() + Duration::from_secs(30), None, |r| {
            got.push(r.to_vec())
        })
        .unwrap();
    t.join().unwrap();
    assert_eq!((n, got), (1, vec![b"wake".to_vec()]));
}

#[test]
fn pop_is_bounded_per_call() {
    let (p, mut c) = heap_ring(4096, 64).unwrap();
    for i in 0..10u8 {
        p.try_push(&[i]).unwrap();
    }
    c.set_pop_records_max(4);
    assert_eq!(c.try_pop_batch(|_| {}).unwrap(), 4);
    assert_eq!(c.try_pop_batch(|_| {}).unwrap(), 4);
    assert_eq!(c.try_pop_batch(|_| {}).unwrap(), 2);
}

fn small_config() -> SegmentConfig {
    SegmentConfig {
        ring_bytes: 4096,
        max_record_bytes: 1024,
        arena_bytes: 64 * 1024,
    }
}

/// Writes `value` at byte `offset` of the segment through a second mapping,
/// playing a hostile peer.
fn poke(seg: &Segment, offset: usize, value: u64) {
    let file = std::fs::File::from(seg.fd().try_clone_to_owned().unwrap());
    // SAFETY: test-only second mapping of a sealed memfd; we write one
    // aligned word, as a misbehaving peer could.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    map[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

#[test]
fn segment_round_trip_between_two_mappings() {
    let client = Segment::create(&small_config()).unwrap();
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    let (cp, mut cc) = client.split(Side::Client).unwrap();
    let (sp, mut sc) = server.split(Side::Server).unwrap();
    assert!(matches!(
        client.split(Side::Client),
        Err(SegmentError::AlreadySplit)
    ));
    cp.try_push(b"request").unwrap();
    assert_eq!(drain(&mut sc), vec![b"request".to_vec()]);
    sp.try_push(b"reply").unwrap();
    assert_eq!(drain(&mut cc), vec![b"reply".to_vec()]);
}

#[test]
fn arena_refs_are_shared_and_bounds_checked() {
    let mut client = Segment::create(&small_config()).unwrap();
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    let mut alloc = rgpu_ring::ArenaAllocator::new(client.arena().len());
    let slab = alloc.alloc(10_000).unwrap();
    client.arena_mut().slice_mut(slab).unwrap()[..5].copy_from_slice(b"bulk!");
    assert_eq!(&server.arena().slice(slab).unwrap()[..5], b"bulk!");
    let bad = rgpu_ring::Slab {
        offset: 60 * 1024,
        len: 8 * 1024,
    };
    assert!(matches!(
        server.arena().slice(bad),
        Err(rgpu_ring::ArenaError::OutOfBounds { .. })
    ));
    let overflow = rgpu_ring::Slab {
        offset: u64::MAX,
        len: 2,
    };
    assert!(server.arena().slice(overflow).is_err());
}

#[test]
fn corrupt_frame_header_is_a_typed_error() {
    let client = Segment::create(&small_config()).unwrap();
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    let (cp, _cc) = client.split(Side::Client).unwrap();
    let (_sp, mut sc) = server.split(Side::Server).unwrap();
    let data = client.layout().c2s_data;
    cp.try_push(b"fine").unwrap();
    cp.try_push(b"victim").unwrap();
    // Second frame starts at 32 (16 header + 8 len + 8 payload); break its meta.
    poke(&client, data + 32 + 8, u64::MAX);
    let mut got = Vec::new();
    let err = sc.try_pop_batch(|r| got.push(r.to_vec())).unwrap_err();
    assert!(
        matches!(
            err,
            PopError::Corrupt(Corruption::FrameKind { position: 32, .. })
        ),
        "{err:?}"
    );
    assert_eq!(got, vec![b"fine".to_vec()]);
    // Poisoned from now on.
    assert!(matches!(
        sc.try_pop_batch(|_| {}),
        Err(PopError::Corrupt(_))
    ));
}

#[test]
fn corrupt_record_length_and_head_are_typed_errors() {
    let client = Segment::create(&small_config()).unwrap();
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    let (cp, _cc) = client.split(Side::Client).unwrap();
    let (_sp, mut sc) = server.split(Side::Server).unwrap();
    let layout = client.layout();
    cp.try_push(b"x").unwrap();
    poke(&client, layout.c2s_data + 16, 1 << 40); // record length word
    let err = sc.try_pop_batch(|_| {}).unwrap_err();
    assert!(
        matches!(err, PopError::Corrupt(Corruption::Record { .. })),
        "{err:?}"
    );

    // A consumer that claims to have released more than was ever reserved.
    let head_offset = layout.c2s_control + rgpu_ring::CACHE_LINE_BYTES;
    poke(&client, head_offset, 1 << 50);
    let mut res = Ok(());
    for _ in 0..64 {
        res = cp.try_push(&[0u8; 1000]);
        if res.is_err() {
            break;
        }
    }
    assert!(
        matches!(
            res,
            Err(PushError::Corrupt(Corruption::HeadOutOfRange { .. }))
        ),
        "{res:?}"
    );
}

#[test]
fn attach_rejects_bad_segments() {
    let seg = Segment::create(&small_config()).unwrap();
    poke(&seg, 0, 0xdead_beef);
    let err = Segment::attach(seg.fd().try_clone_to_owned().unwrap()).unwrap_err();
    assert!(
        matches!(err, SegmentError::Magic { found: 0xdead_beef }),
        "{err:?}"
    );

    let seg = Segment::create(&small_config()).unwrap();
    poke(&seg, 8 * 8, 12345); // c2s_data offset field
    let err = Segment::attach(seg.fd().try_clone_to_owned().unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            SegmentError::Layout {
                field: "c2s_data",
                ..
            }
        ),
        "{err:?}"
    );

    let seg = Segment::create(&small_config()).unwrap();
    poke(&seg, 3 * 8, 1 << 40); // ring_bytes beyond the bound
    let err = Segment::attach(seg.fd().try_clone_to_owned().unwrap()).unwrap_err();
    assert!(matches!(err, SegmentError::Config { .. }), "{err:?}");

    // An unsealed, tiny memfd.
    let fd = rustix::fs::memfd_create(c"bogus", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 100).unwrap();
    let err = Segment::attach(fd).unwrap_err();
    assert!(
        matches!(err, SegmentError::Size { bytes: 100, .. }),
        "{err:?}"
    );

    // Right size but no seals.
    let fd = rustix::fs::memfd_create(c"bogus", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, seg.layout().total as u64).unwrap();
    let err = Segment::attach(fd).unwrap_err();
    assert!(matches!(err, SegmentError::Seals { .. }), "{err:?}");
    let _ = seg.fd().as_fd();
}

#[test]
fn config_bounds_are_enforced() {
    let mut cfg = small_config();
    cfg.ring_bytes = 3000;
    assert!(Segment::create(&cfg).is_err());
    let mut cfg = small_config();
    cfg.max_record_bytes = 4096;
    assert!(Segment::create(&cfg).is_err());
    let mut cfg = small_config();
    cfg.arena_bytes = 5000;
    assert!(Segment::create(&cfg).is_err());
}

#[test]
fn peer_watch_sees_live_process_and_rejects_bad_pids() {
    let me = i32::try_from(std::process::id()).unwrap();
    let watch = rgpu_ring::PeerWatch::new(me).unwrap();
    assert_eq!(watch.pid(), me);
    assert!(!watch.is_dead().unwrap());
    assert!(matches!(
        rgpu_ring::PeerWatch::new(0),
        Err(rgpu_ring::PeerWatchError::InvalidPid { pid: 0 })
    ));
    assert!(matches!(
        rgpu_ring::PeerWatch::new(-5),
        Err(rgpu_ring::PeerWatchError::InvalidPid { pid: -5 })
    ));
}

#[test]
fn impossible_cursors_are_typed_errors_not_overflows() {
    let client = Segment::create(&small_config()).unwrap();
    let layout = client.layout();
    let reserve_offset = layout.c2s_control;
    let head_offset = layout.c2s_control + rgpu_ring::CACHE_LINE_BYTES;
    // Planted before the server attaches: its consumer starts poisoned.
    poke(&client, head_offset, u64::MAX - 3);
    let server = Segment::attach(client.fd().try_clone_to_owned().unwrap()).unwrap();
    let (_sp, mut sc) = server.split(Side::Server).unwrap();
    let err = sc.try_pop_batch(|_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            PopError::Corrupt(Corruption::CursorOutOfRange { cursor: "head", .. })
        ),
        "{err:?}"
    );
    // A reserve cursor near u64::MAX must not overflow the producer's arithmetic.
    poke(&client, head_offset, 0);
    poke(&client, reserve_offset, u64::MAX - 3);
    let (cp, _cc) = client.split(Side::Client).unwrap();
    let err = cp.try_push(b"x").unwrap_err();
    assert!(
        matches!(
            err,
            PushError::Corrupt(Corruption::CursorOutOfRange {
                cursor: "reserve",
                ..
            })
        ),
        "{err:?}"
    );
}
