//! `rgpu server --backend cuda` end to end: the protocol-level server suite
//! (`server.rs`, `share.rs`) against real GPUs, through the real daemon, its
//! worker processes and the shm and tcp transports, plus real kernels from
//! the PTX module rgpu ships (`gpu-worker/src/cuda/kernels.ptx`) with their
//! results checked, and the compute share measured under contention.
//!
//! Every test first asks whether the cuda backend can start here (one probe
//! per test binary: `rgpu server --backend cuda` without a token stops with
//! "the cuda backend cannot start: …" when there is no usable driver or
//! device, else with the missing token). Without one, each test prints one
//! `SKIPPED <test>: <reason>` line and passes, so CI on machines without a
//! GPU stays green. `RGPU_REQUIRE_GPU=1` (set by `scripts/gpu-suite`) turns
//! that skip into a failure; `RGPU_TEST_RGPU_BIN` names the `rgpu` binary
//! when this executable runs away from its build tree (the suite's pack);
//! `RGPU_CUDA_TEST_DRY_RUN=1` checks the tests' own logic against the
//! emulated backend. Nothing here has run on a GPU yet.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use common::{
    alive, bytes, reserved, spawn_transferring_child, Conn, Kind, Server, CLIENT_BYTES, WAIT,
};
use rgpu_gpu_worker::cuda::{cache::sha256, ptx};
use rgpu_proto::{
    Blob, Call, CudaError, DevicePtr, FunctionHandle, FunctionLookup, Launch, ModuleHandle,
    ModuleLoad, Reply,
};

/// Set: a test that cannot reach a GPU fails instead of skipping.
const REQUIRE_GPU_ENV: &str = "RGPU_REQUIRE_GPU";
/// SIGKILL cycles by default (each starts a worker and a CUDA context);
/// `RGPU_SIGKILL_CYCLES` overrides.
const SIGKILL_CYCLES_DEFAULT: usize = 10;
/// Threads per block of every launch here.
const BLOCK_THREADS: u32 = 128;
/// `spin` FMA steps per thread in the share test (about a millisecond per
/// launch on a large GPU; the measured kernel time is printed).
const SPIN_ITERS: u32 = 100_000;
/// `spin` threads per launch in the share test (fills an H100's SMs).
const SPIN_THREADS: u32 = 1 << 18;
/// Launches between two synchronisations in the share test.
const SPIN_BATCH: usize = 4;
/// How long the two share-test clients contend.
const CONTENTION: Duration = Duration::from_secs(3);

/// Why the cuda backend cannot start here, or `None` when it can.
fn probe() -> Option<String> {
    let mut cmd = Command::new(common::rgpu_bin());
    cmd.args([
        "server",
        "--backend",
        "cuda",
        "--listen",
        "tcp://127.0.0.1:0",
    ])
    .env_remove("RGPU_TOKEN_FILE")
    .env_remove("RGPU_BACKEND")
    .env_remove("RGPU_LISTEN")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    common::scrub_shim(&mut cmd);
    let mut child = cmd.spawn().expect("spawn rgpu server");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the probe server (no token) neither failed nor stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success(),
        "a server without a token must not start: {err}"
    );
    const CAUSE: &str = "the cuda backend cannot start";
    if let Some(at) = err.find(CAUSE) {
        let line = err[at..].lines().next().unwrap_or(CAUSE);
        return Some(line.trim().to_string());
    }
    assert!(
        err.contains("no client token"),
        "the driver loaded, so the missing token must be what stopped the server: {err}"
    );
    None
}

/// Set: the tests run against `--backend emulated` instead, to check the
/// tests' own protocol logic on a machine without a GPU (a dry run: the
/// kernel and share tests fail there by design, and nothing is proven about
/// the cuda backend).
const DRY_RUN_ENV: &str = "RGPU_CUDA_TEST_DRY_RUN";

fn backend() -> &'static str {
    if std::env::var_os(DRY_RUN_ENV).is_some() {
        "emulated"
    } else {
        "cuda"
    }
}

/// Whether `test` can run; prints one skip line when it cannot.
fn gpu(test: &str) -> bool {
    if backend() == "emulated" {
        eprintln!("DRY RUN {test}: {DRY_RUN_ENV} is set, the emulated backend stands in");
        return true;
    }
    static PROBE: OnceLock<Option<String>> = OnceLock::new();
    match PROBE.get_or_init(probe) {
        None => true,
        Some(reason) => {
            assert!(
                std::env::var_os(REQUIRE_GPU_ENV).is_none(),
                "{test}: {REQUIRE_GPU_ENV} is set, but {reason}"
            );
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// A cuda server with the standard client share and `env`.
fn server(env: &[(&str, &str)]) -> Server {
    Server::start_backend(
        backend(),
        &format!("client_memory_bytes = {CLIENT_BYTES}"),
        env,
    )
}

/// A cuda server that sees one GPU (so admission decisions are about it).
fn one_gpu_server() -> Server {
    server(&[("CUDA_VISIBLE_DEVICES", "0")])
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `ModuleLoad` of the shipped PTX under its SHA-256.
fn load_ptx(c: &mut Conn) -> ModuleHandle {
    let image = ptx::TEST_MODULE_PTX.as_bytes();
    c.sync(
        &Call::ModuleLoad(ModuleLoad {
            hash: sha256(image),
            image: Blob(image),
        }),
        |r| match r {
            Reply::ModuleLoaded(m) => m.module,
            other => panic!("unexpected {other:?}"),
        },
    )
    .expect("the shipped PTX loads on the GPU")
}

/// A looked-up kernel and its argument layout (offset, size per parameter).
struct Kernel {
    function: FunctionHandle,
    layout: Vec<(usize, usize)>,
}

fn lookup(c: &mut Conn, module: ModuleHandle, name: &[u8]) -> Kernel {
    c.sync(
        &Call::FunctionLookup(FunctionLookup {
            module,
            name: Blob(name),
        }),
        |r| match r {
            Reply::FunctionInfo(f) => Kernel {
                function: f.function,
                layout: f
                    .params
                    .0
                    .iter()
                    .map(|s| (s.offset.get() as usize, s.size.get() as usize))
                    .collect(),
            },
            other => panic!("unexpected {other:?}"),
        },
    )
    .unwrap_or_else(|e| panic!("lookup of {}: {e}", String::from_utf8_lossy(name)))
}

impl Kernel {
    /// The parameter buffer for `args` (little-endian bytes each).
    fn pack(&self, args: &[&[u8]]) -> Vec<u8> {
        assert_eq!(self.layout.len(), args.len(), "argument count");
        let end = self.layout.iter().map(|(o, s)| o + s).max().unwrap_or(0);
        let mut buf = vec![0u8; end];
        for (&(o, s), arg) in self.layout.iter().zip(args) {
            assert_eq!(s, arg.len(), "argument size at offset {o}");
            buf[o..o + s].copy_from_slice(arg);
        }
        buf
    }

    /// Queues a launch of `threads` threads (1-D) on the default stream.
    fn launch(&self, c: &mut Conn, threads: u32, args: &[&[u8]]) {
        let params = self.pack(args);
        c.submit_async(&Call::Launch(Launch {
            function: self.function,
            grid: [threads.div_ceil(BLOCK_THREADS), 1, 1],
            block: [BLOCK_THREADS, 1, 1],
            shared_mem_bytes: 0,
            params: Blob(&params),
        }));
    }
}

/// What `spin` computes for thread `i`: `iters` fused multiply-adds.
fn spin_expected(i: u32, iters: u32) -> f32 {
    let mut f = i as f32;
    for _ in 0..iters {
        f = f.mul_add(f32::from_bits(0x3F7F_FFFF), 1.0);
    }
    f
}

#[test]
fn concurrent_clients_over_shm_and_tcp() {
    if !gpu("concurrent_clients_over_shm_and_tcp") {
        return;
    }
    let server = server(&[]);
    const CLIENTS: usize = 4;
    let gate = Arc::new(Barrier::new(CLIENTS + 1));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let gate = Arc::clone(&gate);
            let (shm, tcp) = (server.shm.clone(), server.tcp.clone());
            let kind = if i % 2 == 0 { Kind::Shm } else { Kind::Tcp };
            std::thread::spawn(move || {
                let s = Server::client_view(shm, tcp);
                let mut c = Conn::open(&s, kind);
                let data = bytes(i as u64, 4 << 20);
                let p = c.alloc(data.len() as u64).unwrap();
                c.h2d(p, &data).unwrap();
                gate.wait(); // all connected, each holding GPU memory
                gate.wait(); // the main thread checked /status
                assert_eq!(
                    c.d2h(p, data.len() as u64).unwrap(),
                    data,
                    "client {i} data"
                );
                c.free(p).unwrap();
                c.close();
            })
        })
        .collect();
    gate.wait();
    let status = server.status();
    let clients = status["clients"].as_array().unwrap();
    assert_eq!(clients.len(), CLIENTS, "{status}");
    assert_eq!(reserved(&status), CLIENTS as u64 * CLIENT_BYTES);
    let mut pids: Vec<u64> = clients
        .iter()
        .map(|c| c["worker_pid"].as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), CLIENTS, "one worker process per client");
    gate.wait();
    for t in threads {
        t.join().unwrap();
    }
    let s = server.wait_idle();
    assert!(pids.iter().all(|&p| !alive(p)), "workers exited");
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    assert_eq!(s["totals"]["sessions_ended"].as_u64(), Some(CLIENTS as u64));
    assert!(server.stop().success(), "SIGTERM drains and exits 0");
}

#[test]
fn quota_shows_in_meminfo_and_a_full_device_refuses() {
    if !gpu("quota_shows_in_meminfo_and_a_full_device_refuses") {
        return;
    }
    let server = one_gpu_server();
    let device = server.status()["devices"][0]["memory_bytes"]
        .as_u64()
        .expect("/status names the GPU's memory");
    // The default share: cuMemGetInfo reports the quota, not the GPU.
    let mut a = Conn::open(&server, Kind::Shm);
    assert_eq!(a.mem_info().unwrap(), (CLIENT_BYTES, CLIENT_BYTES));
    let p = a.alloc(1 << 20).unwrap();
    assert_eq!(
        a.mem_info().unwrap(),
        (CLIENT_BYTES - (1 << 20), CLIENT_BYTES)
    );
    assert_eq!(
        a.alloc(CLIENT_BYTES),
        Err(CudaError::OUT_OF_MEMORY),
        "over the quota, refused by the worker"
    );
    a.free(p).unwrap();
    a.close();
    server.wait_idle();
    // One client takes the whole GPU; the next one does not fit.
    let mut whole = Conn::open(&server, Kind::Tcp);
    let (count, granted) = whole.request_devices(1, 1000, 0).unwrap();
    assert_eq!(count, 1);
    assert_eq!(granted, device, "the whole device");
    let (free, total) = whole.mem_info().unwrap();
    assert_eq!(total, granted);
    assert!(free <= total, "free {free} of {total}");
    let mut refused = Conn::open(&server, Kind::Shm);
    assert_eq!(refused.mem_info(), Err(CudaError::OUT_OF_MEMORY));
    assert_eq!(refused.alloc(1).err(), Some(CudaError::OUT_OF_MEMORY));
    let s = server.status();
    assert_eq!(s["totals"]["admission_refusals"].as_u64(), Some(1), "{s}");
    refused.close();
    whole.close();
    server.wait_idle();
    // Released on exit: the default share fits again.
    let mut again = Conn::open(&server, Kind::Tcp);
    assert_eq!(again.mem_info().unwrap(), (CLIENT_BYTES, CLIENT_BYTES));
    again.close();
    server.wait_idle();
    assert_eq!(
        metric(&server.metrics(), "rgpu_admission_refusals_total"),
        1.0
    );
}

#[test]
fn unauthenticated_connections_touch_nothing() {
    if !gpu("unauthenticated_connections_touch_nothing") {
        return;
    }
    let server = server(&[]);
    let mut bad = common::token();
    bad[0] ^= 0x80;
    for kind in [Kind::Tcp, Kind::Shm] {
        let e = Conn::open_with(&server, kind, bad)
            .err()
            .expect("a wrong token must not open a session");
        assert!(e.contains("rejected"), "{kind:?}: {e}");
    }
    let s = server.wait_status("both auth failures reaped", |s| {
        s["totals"]["sessions_ended"].as_u64() == Some(2)
    });
    assert_eq!(s["totals"]["auth_failures"].as_u64(), Some(2), "{s}");
    assert_eq!(
        s["totals"]["backends_created"].as_u64(),
        Some(0),
        "no CUDA context for an unauthenticated client: {s}"
    );
    assert_eq!(reserved(&s), 0);
    let mut ok = Conn::open(&server, Kind::Tcp);
    assert_eq!(ok.mem_info().unwrap().1, CLIENT_BYTES);
    ok.close();
    server.wait_idle();
}

#[test]
fn garbage_frames_leave_a_working_client_unaffected() {
    if !gpu("garbage_frames_leave_a_working_client_unaffected") {
        return;
    }
    let server = server(&[]);
    let mut good = Conn::open(&server, Kind::Shm);
    let p = good.alloc(1 << 20).unwrap();
    let addr = server.tcp.strip_prefix("tcp://").unwrap().to_string();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.write_all(&bytes(9, 4096)).unwrap();
    let mut evil = Conn::open(&server, Kind::Tcp);
    evil.mem_info().unwrap();
    evil.send_raw(&[0xff; 64]);
    let mut evil_shm = Conn::open(&server, Kind::Shm);
    evil_shm.mem_info().unwrap();
    evil_shm.send_raw(&bytes(4, 100));
    let data = bytes(3, 1 << 20);
    for _ in 0..20 {
        good.h2d(p, &data).unwrap();
        assert_eq!(good.d2h(p, 1 << 20).unwrap(), data);
    }
    let s = server.wait_status("the three breakers' workers ended", |s| {
        s["clients"].as_array().unwrap().len() == 1
            && s["totals"]["sessions_ended"].as_u64() == Some(3)
    });
    drop((raw, evil, evil_shm));
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    assert_eq!(s["totals"]["protocol_errors"].as_u64(), Some(3), "{s}");
    good.free(p).unwrap();
    good.close();
    server.wait_idle();
}

/// The child side of the SIGKILL test (run by it with `--ignored`).
#[test]
#[ignore = "child-process entry point of sigkilled_clients_free_their_worker_and_gpu_memory"]
fn sigkill_child_client() {
    common::sigkill_child_client_main()
}

#[test]
fn sigkilled_clients_free_their_worker_and_gpu_memory() {
    if !gpu("sigkilled_clients_free_their_worker_and_gpu_memory") {
        return;
    }
    let cycles: usize = std::env::var("RGPU_SIGKILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SIGKILL_CYCLES_DEFAULT);
    let server = server(&[]);
    for i in 0..cycles {
        let kind = if i % 2 == 0 { Kind::Shm } else { Kind::Tcp };
        let mut child = spawn_transferring_child(&server, kind);
        let s = server.status();
        let clients = s["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 1, "cycle {i}: {s}");
        let worker = clients[0]["worker_pid"].as_u64().unwrap();
        child.kill().unwrap(); // SIGKILL, mid-transfer
        child.wait().unwrap();
        let s = server.wait_idle();
        assert!(!alive(worker), "cycle {i}: worker {worker} still alive");
        assert_eq!(s["totals"]["sessions_ended"].as_u64(), Some(i as u64 + 1));
    }
    // The GPU memory came back: a fresh client gets its whole quota.
    let mut c = Conn::open(&server, Kind::Tcp);
    assert_eq!(c.mem_info().unwrap(), (CLIENT_BYTES, CLIENT_BYTES));
    c.close();
    let s = server.wait_idle();
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    eprintln!("{cycles} SIGKILL cycles: every worker reaped, memory back");
    assert!(server.stop().success());
}

#[test]
fn shipped_ptx_kernels_run_with_correct_results() {
    if !gpu("shipped_ptx_kernels_run_with_correct_results") {
        return;
    }
    let server = server(&[]);
    for kind in [Kind::Shm, Kind::Tcp] {
        let mut c = Conn::open(&server, kind);
        let module = load_ptx(&mut c);
        let vadd = lookup(&mut c, module, ptx::VADD);
        let reduce = lookup(&mut c, module, ptx::REDUCE_SUM);
        let spin = lookup(&mut c, module, ptx::SPIN);
        assert_eq!(vadd.layout.len(), 4, "vadd(a, b, c, n)");
        // vadd over 1 Mi elements.
        let n: u32 = 1 << 20;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
        let bytes_n = u64::from(n) * 4;
        let (pa, pb, pc) = (
            c.alloc(bytes_n).unwrap(),
            c.alloc(bytes_n).unwrap(),
            c.alloc(bytes_n).unwrap(),
        );
        c.h2d(pa, &f32s(&a)).unwrap();
        c.h2d(pb, &f32s(&b)).unwrap();
        let ptr = |p: DevicePtr| p.0.to_le_bytes();
        vadd.launch(&mut c, n, &[&ptr(pa), &ptr(pb), &ptr(pc), &n.to_le_bytes()]);
        c.ctx_sync().expect("vadd ran");
        let got = to_f32s(&c.d2h(pc, bytes_n).unwrap());
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(got == want, "{kind:?}: vadd results differ");
        // reduce_sum of small integers: exact in f32 in any order.
        let x: Vec<f32> = (0..n).map(|i| (i % 8) as f32).collect();
        let out = c.alloc(4).unwrap();
        c.h2d(out, &0f32.to_le_bytes()).unwrap();
        c.h2d(pa, &f32s(&x)).unwrap();
        reduce.launch(&mut c, n, &[&ptr(pa), &ptr(out), &n.to_le_bytes()]);
        c.ctx_sync().expect("reduce_sum ran");
        let sum = to_f32s(&c.d2h(out, 4).unwrap())[0];
        let want_sum: u64 = (0..u64::from(n)).map(|i| i % 8).sum();
        assert_eq!(sum, want_sum as f32, "{kind:?}: reduce_sum");
        // spin: each thread's FMA chain, compared bit for bit.
        let (threads, iters) = (1000u32, 1000u32);
        spin.launch(
            &mut c,
            threads,
            &[&ptr(pc), &iters.to_le_bytes(), &threads.to_le_bytes()],
        );
        c.ctx_sync().expect("spin ran");
        let got = to_f32s(&c.d2h(pc, u64::from(threads) * 4).unwrap());
        for (i, v) in got.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                spin_expected(i as u32, iters).to_bits(),
                "{kind:?}: spin thread {i}"
            );
        }
        eprintln!(
            "{kind:?}: vadd ({n} elements), reduce_sum (= {sum}) and spin correct on the GPU"
        );
        for p in [pa, pb, pc, out] {
            c.free(p).unwrap();
        }
        c.close();
    }
    let s = server.wait_idle();
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
}

/// A client admitted with `fraction_milli` of GPU 0, launching `spin`
/// until `stop`.
fn spin_client(
    server: Server,
    kind: Kind,
    fraction_milli: u32,
    ready: &Barrier,
    stop: &AtomicBool,
) -> Result<u64, String> {
    // Set-up may panic; the barrier is reached either way.
    let setup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Conn::open(&server, kind);
        let granted = c.request_devices(1, fraction_milli, 0);
        let module = load_ptx(&mut c);
        let spin = lookup(&mut c, module, ptx::SPIN);
        let out = c.alloc(u64::from(SPIN_THREADS) * 4);
        (c, granted, spin, out)
    }));
    ready.wait();
    let (mut c, granted, spin, out) = setup.unwrap_or_else(|p| std::panic::resume_unwind(p));
    granted.map_err(|e| format!("request_devices: {e}"))?;
    let out = out.map_err(|e| format!("alloc: {e}"))?;
    let mut launches = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..SPIN_BATCH {
            spin.launch(
                &mut c,
                SPIN_THREADS,
                &[
                    &out.0.to_le_bytes(),
                    &SPIN_ITERS.to_le_bytes(),
                    &SPIN_THREADS.to_le_bytes(),
                ],
            );
            launches += 1;
        }
        c.ctx_sync().map_err(|e| format!("synchronize: {e}"))?;
    }
    c.close();
    Ok(launches)
}

#[test]
fn compute_share_under_contention() {
    if !gpu("compute_share_under_contention") {
        return;
    }
    let server = one_gpu_server();
    let ready = Arc::new(Barrier::new(3));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [(250u32, Kind::Shm), (750, Kind::Tcp)]
        .into_iter()
        .map(|(p, kind)| {
            let view = Server::client_view(server.shm.clone(), server.tcp.clone());
            let (ready, stop) = (Arc::clone(&ready), Arc::clone(&stop));
            std::thread::spawn(move || spin_client(view, kind, p, &ready, &stop))
        })
        .collect();
    ready.wait();
    std::thread::sleep(CONTENTION);
    let status = server.status();
    stop.store(true, Ordering::Relaxed);
    let launches: Vec<u64> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread").expect("client"))
        .collect();
    let compute = status["compute"].as_array().expect("compute list").clone();
    let find = |milli: u64| {
        compute
            .iter()
            .find(|u| u["share_milli"].as_u64() == Some(milli))
            .unwrap_or_else(|| panic!("no client with share {milli} in {status}"))
    };
    let (small, large) = (find(250), find(750));
    assert_eq!(small["device"], large["device"], "both on one GPU");
    let used = |u: &serde_json::Value| u["share_used"].as_f64().unwrap();
    let kernel_ms = |u: &serde_json::Value| u["kernel_ns"].as_u64().unwrap_or(0) as f64 / 1e6;
    eprintln!(
        "GPU compute share over {:.1} s: p = 0.25 client used {:.3} ({:.0} ms kernel time, {} launches, {} throttle waits); \
         p = 0.75 client used {:.3} ({:.0} ms, {} launches, {} throttle waits)",
        CONTENTION.as_secs_f64(),
        used(small),
        kernel_ms(small),
        launches[0],
        small["throttle_waits"],
        used(large),
        kernel_ms(large),
        launches[1],
        large["throttle_waits"],
    );
    assert!(
        (0.10..=0.40).contains(&used(small)),
        "the p = 0.25 client used {:.3} of the kernel time: {status}",
        used(small)
    );
    assert!(
        small["throttle_waits"].as_u64().unwrap() > 0,
        "the gate throttled the small client: {status}"
    );
    let idle = server.wait_idle();
    assert!(
        idle["compute"].as_array().is_some_and(Vec::is_empty),
        "slots freed when workers are reaped: {idle}"
    );
}
