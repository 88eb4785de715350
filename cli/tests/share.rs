//! The compute share through the real daemon: two worker processes on one
//! emulated device, their launches throttled through the daemon's shared
//! share board, and `/status` / `/metrics` reporting it. Assertions are on
//! a ratio measured in one run, with wide tolerances.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Conn, Kind, Server};
use rgpu_proto::{Blob, Call, CtxSynchronize, FunctionLookup, Launch, ModuleLoad, Reply};

/// Kernel time of one launch, in µs.
const SPIN_US: u32 = 1_000;
/// Launches between two synchronisations.
const BATCH: usize = 4;

/// A client admitted with `fraction_milli` of a device, spinning until `stop`.
fn spin_client(
    server: Server,
    fraction_milli: u32,
    ready: &Barrier,
    stop: &AtomicBool,
) -> Result<(), String> {
    // Set-up may panic; the barrier is reached either way, so the test
    // thread never waits on a dead client.
    let setup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Conn::open(&server, Kind::Tcp);
        let granted = c.request_devices(1, fraction_milli, 0);
        let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_spin_us";
        let mut hash = [0u8; 32];
        hash[0] = 0x5b;
        let module = c.sync(
            &Call::ModuleLoad(ModuleLoad {
                hash,
                image: Blob(image),
            }),
            |r| match r {
                Reply::ModuleLoaded(m) => m.module,
                other => panic!("unexpected {other:?}"),
            },
        );
        let function = module.and_then(|module| {
            c.sync(
                &Call::FunctionLookup(FunctionLookup {
                    module,
                    name: Blob(b"rgpu_spin_us"),
                }),
                |r| match r {
                    Reply::FunctionInfo(f) => f.function,
                    other => panic!("unexpected {other:?}"),
                },
            )
        });
        (c, granted, function)
    }));
    ready.wait();
    let (mut c, granted, function) = setup.unwrap_or_else(|p| std::panic::resume_unwind(p));
    granted.map_err(|e| format!("request_devices: {e}"))?;
    let function = function.map_err(|e| format!("module: {e}"))?;
    let params = SPIN_US.to_le_bytes();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            c.submit_async(&Call::Launch(Launch {
                function,
                grid: [1, 1, 1],
                block: [1, 1, 1],
                shared_mem_bytes: 0,
                params: Blob(&params),
            }));
        }
        c.sync(&Call::CtxSynchronize(CtxSynchronize {}), |_| ())
            .map_err(|e| format!("synchronize: {e}"))?;
    }
    c.close();
    Ok(())
}

#[test]
fn workers_share_a_device_by_fraction() {
    let server = Server::standard();
    let ready = Arc::new(Barrier::new(3));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [250u32, 750]
        .into_iter()
        .map(|p| {
            let view = Server::client_view(server.shm.clone(), server.tcp.clone());
            let (ready, stop) = (Arc::clone(&ready), Arc::clone(&stop));
            std::thread::spawn(move || spin_client(view, p, &ready, &stop))
        })
        .collect();
    ready.wait();
    std::thread::sleep(Duration::from_millis(1_500));
    let status = server.status();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread").expect("client");
    }
    let compute = status["compute"].as_array().expect("compute list").clone();
    let find = |milli: u64| {
        compute
            .iter()
            .find(|u| u["share_milli"].as_u64() == Some(milli))
            .unwrap_or_else(|| panic!("no client with share {milli} in {status}"))
    };
    let (small, large) = (find(250), find(750));
    assert_eq!(small["device"], large["device"], "both on one device");
    let used = small["share_used"].as_f64().unwrap();
    eprintln!("the p = 0.25 worker used {used:.3} of the device's kernel time");
    assert!(
        (0.15..=0.35).contains(&used),
        "the p = 0.25 worker used {used:.3} of the kernel time: {status}"
    );
    assert!(small["throttle_waits"].as_u64().unwrap() > 0);
    let idle = server.wait_idle();
    assert!(
        idle["compute"].as_array().is_some_and(Vec::is_empty),
        "slots freed when workers are reaped: {idle}"
    );
    let metrics = server.metrics();
    let waits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rgpu_compute_throttle_waits_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(waits > 0.0, "throttle waits counted in /metrics");
}
