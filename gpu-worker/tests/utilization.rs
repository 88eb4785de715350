//! Device utilization (`DeviceGetUtilization`, behind NVML's
//! `nvmlDeviceGetUtilizationRates`) end to end: protocol clients over tcp,
//! emulated `rgpu_spin_us` kernels. No timing thresholds: after kernels ran
//! the figure is above 0 and at most 100; after an idle spell longer than
//! the longest sample period it is exactly 0 (nothing ran, so nothing can be
//! counted). The window arithmetic itself is unit-tested with a fake clock
//! (`share::utilization`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scenarios::{self, S0};
use common::{device_config, Conn, Kind, NetConn};
use rgpu_gpu_worker::share::{utilization, Board, GateConfig, ShareGate};
use rgpu_gpu_worker::{Backend, EmulatedBackend};
use rgpu_proto::{Call, CudaError, DeviceGetUtilization, Reply};

/// Kernel time of one launch, in µs.
const SPIN_US: u32 = 50_000;
/// Launches per busy phase (0.3 s of kernel time, longer than the shortest
/// sample period, so the asking client's window has a sample before it).
const LAUNCHES: usize = 6;

/// `(gpu_percent, memory_percent, period_us)` of device `device`.
fn utilization_of(c: &mut NetConn, device: u32) -> Result<(u32, u32, u64), CudaError> {
    c.sync(
        &Call::DeviceGetUtilization(DeviceGetUtilization { device }),
        S0,
        None,
        |r| match r {
            Reply::DeviceUtilization(u) => (u.gpu_percent, u.memory_percent, u.period_us),
            other => panic!("unexpected {other:?}"),
        },
    )
}

/// Runs `LAUNCHES` spin kernels on `c` and waits for them.
fn spin(c: &mut NetConn) {
    let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_spin_us";
    let module = scenarios::module_load(c, image).unwrap();
    let (f, layout) = scenarios::lookup(c, module, "rgpu_spin_us").unwrap();
    let params = scenarios::pack(&layout, &[&SPIN_US.to_le_bytes()]);
    for _ in 0..LAUNCHES {
        scenarios::launch(c, f, 1, 1, &params, S0);
    }
    scenarios::ctx_sync(c).unwrap();
}

/// Asks once (a sample at "now"), waits past the longest period, asks
/// again: nothing ran in between, so 0 over that whole period.
fn idle_reads_zero(c: &mut NetConn) {
    utilization_of(c, 0).unwrap();
    std::thread::sleep(Duration::from_millis(utilization::PERIOD_MAX_MS + 100));
    let (gpu, memory, period_us) = utilization_of(c, 0).unwrap();
    assert_eq!((gpu, memory), (0, 0), "idle device");
    assert!(
        period_us >= utilization::PERIOD_MAX_MS * 1_000,
        "{period_us}"
    );
}

fn gate(board: &Arc<Board>, owner: u64) -> Option<ShareGate<Arc<Board>>> {
    Some(ShareGate::new(Arc::clone(board), owner, 500, GateConfig::default()).unwrap())
}

/// With a board, the figure is the whole device's: a client that ran
/// nothing sees another tenant's kernels.
#[test]
fn device_wide_from_the_board() {
    let board = Arc::new(Board::default());
    let mut asker = NetConn::open_gated(Kind::Tcp, device_config(), gate(&board, 1));
    let mut tenant = NetConn::open_gated(Kind::Tcp, device_config(), gate(&board, 2));
    // Both sessions (and their windows) exist before the busy phase.
    scenarios::nop(&mut asker).unwrap();
    scenarios::nop(&mut tenant).unwrap();
    spin(&mut tenant);
    let (gpu, memory, period_us) = utilization_of(&mut asker, 0).unwrap();
    eprintln!("device-wide: {gpu}% over {period_us} us after another tenant's kernels");
    assert!(gpu > 0 && gpu <= 100, "gpu {gpu}%");
    assert_eq!(memory, 0, "memory-controller use is not measured");
    assert!(period_us > 0);
    assert_eq!(
        utilization_of(&mut asker, 1),
        Err(CudaError::INVALID_DEVICE)
    );
    idle_reads_zero(&mut asker);
    tenant.finish().0.expect("tenant ends cleanly");
    asker.finish().0.expect("asker ends cleanly");
}

/// Without a board, the session's own kernel time stands in.
#[test]
fn own_kernel_time_without_a_board() {
    let mut c = NetConn::open_gated(Kind::Tcp, device_config(), None);
    scenarios::nop(&mut c).unwrap();
    spin(&mut c);
    let (gpu, _, period_us) = utilization_of(&mut c, 0).unwrap();
    eprintln!("own: {gpu}% over {period_us} us");
    assert!(gpu > 0 && gpu <= 100, "gpu {gpu}%");
    idle_reads_zero(&mut c);
    c.finish().0.expect("session ends cleanly");
}

/// A bare backend keeps no window: it says so instead of inventing 0.
#[test]
fn bare_backend_is_not_supported() {
    let mut b = EmulatedBackend::new(device_config());
    assert_eq!(b.device_utilization(0), Err(CudaError::NOT_SUPPORTED));
}
