//! The compute share end to end: protocol clients launching the emulated
//! `rgpu_spin_us` kernel back to back through workers whose backends share
//! one device board. Assertions are on ratios measured within one run,
//! with wide tolerances (no absolute timings).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::scenarios::{self, S0};
use common::{device_config, Kind, NetConn};
use rgpu_gpu_worker::share::{Board, GateConfig, ShareGate, SlotUse};

/// Kernel time of one launch, in µs.
const SPIN_US: u32 = 1_000;
/// Launches queued between two synchronisations.
const BATCH: usize = 4;

/// Launches spin kernels in batches until `stop`, counting them in `done`.
fn spin_until(c: &mut NetConn, stop: &AtomicBool, done: &AtomicU64) {
    let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_spin_us";
    let module = scenarios::module_load(c, image).unwrap();
    let (f, layout) = scenarios::lookup(c, module, "rgpu_spin_us").unwrap();
    let params = scenarios::pack(&layout, &[&SPIN_US.to_le_bytes()]);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            scenarios::launch(c, f, 1, 1, &params, S0);
        }
        scenarios::ctx_sync(c).unwrap();
        done.fetch_add(BATCH as u64, Ordering::Relaxed);
    }
}

/// Runs one client per gate for `warm + run`; returns each client's kernel
/// time (ns, from its launch count) over the last `run`.
fn contend(gates: Vec<Option<ShareGate<Arc<Board>>>>, warm: Duration, run: Duration) -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(gates.len() + 1));
    let counts: Vec<Arc<AtomicU64>> = gates.iter().map(|_| Arc::default()).collect();
    let threads: Vec<_> = gates
        .into_iter()
        .zip(&counts)
        .map(|(gate, done)| {
            let (stop, ready, done) = (Arc::clone(&stop), Arc::clone(&ready), Arc::clone(done));
            std::thread::spawn(move || {
                // The barrier is reached even if connecting panics.
                let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    NetConn::open_gated(Kind::Tcp, device_config(), gate)
                }));
                ready.wait();
                let mut c = c.unwrap_or_else(|p| std::panic::resume_unwind(p));
                spin_until(&mut c, &stop, &done);
                let (res, _) = c.finish();
                res.expect("session ends cleanly");
            })
        })
        .collect();
    ready.wait();
    std::thread::sleep(warm);
    let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    std::thread::sleep(run);
    let after: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) * u64::from(SPIN_US) * 1_000)
        .collect()
}

fn gate(board: &Arc<Board>, owner: u64, share_milli: u32) -> Option<ShareGate<Arc<Board>>> {
    Some(ShareGate::new(Arc::clone(board), owner, share_milli, GateConfig::default()).unwrap())
}

fn slot(board: &Board, owner: u64) -> Option<SlotUse> {
    board.snapshot().into_iter().find(|s| s.owner == owner)
}

/// The phases run one after another: run in parallel, they would compete
/// for the host's cores and skew each other's ratios.
#[test]
fn compute_share() {
    contended_clients_get_their_share();
    board_counts_waits_and_kernel_time();
    lone_client_is_not_throttled();
}

fn contended_clients_get_their_share() {
    let board = Arc::new(Board::default());
    let got = contend(
        vec![gate(&board, 1, 250), gate(&board, 2, 750)],
        Duration::from_millis(300),
        Duration::from_millis(1_800),
    );
    let share = got[0] as f64 / (got[0] + got[1]) as f64;
    eprintln!("contended: the p = 0.25 client got {share:.3} of the kernel time");
    assert!(
        (0.15..=0.35).contains(&share),
        "the p = 0.25 client got {share:.3} of the kernel time ({got:?})"
    );
    assert!(got[1] > 0);
    assert!(board.snapshot().is_empty(), "slots freed at session end");
}

fn board_counts_waits_and_kernel_time() {
    let board = Arc::new(Board::default());
    let watch = Arc::clone(&board);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            // The latest snapshot of both slots while the clients run.
            let mut last = (None, None);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (a, b) = (slot(&watch, 1), slot(&watch, 2));
                if a.is_some() && b.is_some() {
                    last = (a, b);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last
        }
    });
    contend(
        vec![gate(&board, 1, 200), gate(&board, 2, 800)],
        Duration::from_millis(100),
        Duration::from_millis(500),
    );
    stop.store(true, Ordering::Relaxed);
    let (a, b) = seen.join().unwrap();
    let (a, b) = (a.expect("slot 1 seen"), b.expect("slot 2 seen"));
    assert_eq!((a.share_milli, b.share_milli), (200, 800));
    assert!(a.waits > 0, "the small share was throttled");
    assert!(a.used_ns > 0 && b.used_ns > a.used_ns);
}

fn lone_client_is_not_throttled() {
    // Alternating slices, so load on the host hits both alike.
    let (mut gated, mut free) = (0, 0);
    for _ in 0..2 {
        let board = Arc::new(Board::default());
        let watch = Arc::clone(&board);
        let waits = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(350));
            slot(&watch, 1).map(|s| s.waits)
        });
        gated += contend(
            vec![gate(&board, 1, 250)],
            Duration::from_millis(50),
            Duration::from_millis(400),
        )[0];
        assert_eq!(waits.join().unwrap(), Some(0), "alone, never throttled");
        free += contend(
            vec![None],
            Duration::from_millis(50),
            Duration::from_millis(400),
        )[0];
    }
    let ratio = gated as f64 / free as f64;
    eprintln!("alone: p = 0.25 got {ratio:.3} of its unthrottled kernel time");
    assert!(
        ratio >= 0.8,
        "a lone p = 0.25 client got {ratio:.3} of its unthrottled kernel time"
    );
}
