//! The compute share charges graph launches: a p = 0.25 client replaying
//! graphs of `rgpu_spin_us` kernels against a p = 0.75 client launching the
//! same kernels one by one gets about a quarter of the kernel time, as a
//! client launching kernels does (`share.rs`). HAMi-core's limiter lets
//! graph launches escape; this checks ours does not. Ratios within one run,
//! wide tolerances, no absolute timings.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::scenarios::{self, S0};
use common::{device_config, Conn, Kind, NetConn};
use rgpu_gpu_worker::share::{Board, GateConfig, ShareGate};
use rgpu_proto::{Call, GraphInstantiate, GraphLaunch, StreamBeginCapture, StreamEndCapture};

/// Kernel time of one launch, in µs.
const SPIN_US: u32 = 1_000;
/// Kernels per graph, and per batch of plain launches.
const BATCH: usize = 4;

/// Loops until `stop`: one graph of `BATCH` kernels (`graphs`) or `BATCH`
/// plain launches per round, counting kernels in `done`.
fn spin_until(c: &mut NetConn, graphs: bool, stop: &AtomicBool, done: &AtomicU64) {
    let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_spin_us";
    let module = scenarios::module_load(c, image).unwrap();
    let (f, layout) = scenarios::lookup(c, module, "rgpu_spin_us").unwrap();
    let params = scenarios::pack(&layout, &[&SPIN_US.to_le_bytes()]);
    let exec = graphs.then(|| {
        let s = scenarios::stream_create(c);
        c.submit_async(&Call::StreamBeginCapture(StreamBeginCapture { mode: 0 }), s);
        for _ in 0..BATCH {
            scenarios::launch(c, f, 1, 1, &params, s);
        }
        let graph = scenarios::client_handle();
        c.sync(
            &Call::StreamEndCapture(StreamEndCapture { graph }),
            s,
            None,
            |_| (),
        )
        .unwrap();
        let exec = scenarios::client_handle();
        c.sync(
            &Call::GraphInstantiate(GraphInstantiate {
                graph,
                exec,
                flags: 0,
            }),
            S0,
            None,
            |_| (),
        )
        .unwrap();
        (s, exec)
    });
    while !stop.load(Ordering::Relaxed) {
        match exec {
            Some((s, exec)) => c.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), s),
            None => (0..BATCH).for_each(|_| scenarios::launch(c, f, 1, 1, &params, S0)),
        }
        scenarios::ctx_sync(c).unwrap();
        done.fetch_add(BATCH as u64, Ordering::Relaxed);
    }
}

/// One client per (gate, graphs?) for `warm + run`; each one's kernel time
/// (ns, from its kernel count) over the last `run`.
fn contend(clients: Vec<(Option<ShareGate<Arc<Board>>>, bool)>, run: Duration) -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(clients.len() + 1));
    let counts: Vec<Arc<AtomicU64>> = clients.iter().map(|_| Arc::default()).collect();
    let threads: Vec<_> = clients
        .into_iter()
        .zip(&counts)
        .map(|((gate, graphs), done)| {
            let (stop, ready, done) = (Arc::clone(&stop), Arc::clone(&ready), Arc::clone(done));
            std::thread::spawn(move || {
                let c = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    NetConn::open_gated(Kind::Tcp, device_config(), gate)
                }));
                ready.wait();
                let mut c = c.unwrap_or_else(|p| std::panic::resume_unwind(p));
                spin_until(&mut c, graphs, &stop, &done);
                let (res, _) = c.finish();
                res.expect("session ends cleanly");
            })
        })
        .collect();
    ready.wait();
    std::thread::sleep(Duration::from_millis(300));
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

#[test]
fn graph_launches_are_charged_by_the_share() {
    let board = Arc::new(Board::default());
    let got = contend(
        vec![(gate(&board, 1, 250), true), (gate(&board, 2, 750), false)],
        Duration::from_millis(1_800),
    );
    let share = got[0] as f64 / (got[0] + got[1]) as f64;
    eprintln!("contended: the p = 0.25 graph client got {share:.3} of the kernel time");
    assert!(
        (0.12..=0.38).contains(&share),
        "the p = 0.25 graph client got {share:.3} of the kernel time ({got:?})"
    );
    assert!(got[1] > 0);
}
