//! Device utilization through the real daemon: a worker process runs the
//! emulated `rgpu_spin_us` kernel; its client asks `DeviceGetUtilization`
//! (what NVML's `nvmlDeviceGetUtilizationRates` sends), and `/metrics`
//! shows `rgpu_device_utilization_ratio`. No timing thresholds: above 0
//! after kernels ran, exactly 0 after an idle spell longer than the longest
//! sample period.

mod common;

use std::time::Duration;

use common::{Conn, Kind, Server};
use rgpu_proto::{
    Blob, Call, CtxSynchronize, DeviceGetUtilization, FunctionLookup, Launch, ModuleLoad, Reply,
};

/// Kernel time of one launch, in µs (0.6 s in all).
const SPIN_US: u32 = 100_000;
/// Launches in the busy phase.
const LAUNCHES: usize = 6;

/// Every `rgpu_device_utilization_ratio` value in `/metrics`, by device.
fn ratios(server: &Server) -> Vec<f64> {
    server
        .metrics()
        .lines()
        .filter(|l| l.starts_with("rgpu_device_utilization_ratio{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

fn spin(c: &mut Conn) {
    let mut hash = [0u8; 32];
    hash[0] = 0x7a;
    let module = c
        .sync(
            &Call::ModuleLoad(ModuleLoad {
                hash,
                image: Blob(b"RGPU-EMU-MODULE v1\nkernel rgpu_spin_us"),
            }),
            |r| match r {
                Reply::ModuleLoaded(m) => m.module,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    let function = c
        .sync(
            &Call::FunctionLookup(FunctionLookup {
                module,
                name: Blob(b"rgpu_spin_us"),
            }),
            |r| match r {
                Reply::FunctionInfo(f) => f.function,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    let params = SPIN_US.to_le_bytes();
    for _ in 0..LAUNCHES {
        c.submit_async(&Call::Launch(Launch {
            function,
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
            params: Blob(&params),
        }));
    }
    c.sync(&Call::CtxSynchronize(CtxSynchronize {}), |_| ())
        .unwrap();
}

#[test]
fn busy_then_idle_in_the_worker_and_on_metrics() {
    let server = Server::standard();
    let before = ratios(&server);
    assert_eq!(before.len(), 2, "one series per device: {before:?}");
    let mut c = Conn::open(&server, Kind::Tcp);
    spin(&mut c);
    let (gpu, memory) = c
        .sync(
            &Call::DeviceGetUtilization(DeviceGetUtilization { device: 0 }),
            |r| match r {
                Reply::DeviceUtilization(u) => (u.gpu_percent, u.memory_percent),
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    eprintln!("worker: {gpu}% after {LAUNCHES} × {SPIN_US} us");
    assert!(gpu > 0 && gpu <= 100, "gpu {gpu}%");
    assert_eq!(memory, 0);
    let busy = ratios(&server);
    eprintln!("metrics while the client is connected: {busy:?}");
    assert!(
        busy.iter().any(|&r| r > 0.0) && busy.iter().all(|&r| (0.0..=1.0).contains(&r)),
        "{busy:?}"
    );
    c.close();
    server.wait_idle();
    std::thread::sleep(Duration::from_millis(1_100));
    let idle = ratios(&server);
    assert_eq!(idle, vec![0.0, 0.0], "idle for longer than a period");
}
