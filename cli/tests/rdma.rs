//! `rgpu server --listen rdma://…` end to end: the real daemon, a real worker
//! process that owns the queue pair, and a protocol client on the RDMA
//! transport, against the emulated backend.
//!
//! The device cases need an RDMA device: `scripts/rdma-vm-suite` runs this
//! binary inside the soft-RoCE VM (`RGPU_RDMA_DEV` set), with the `rgpu`
//! binary staged at `/rgpu/bin/rgpu` (or named by `RGPU_BIN`). Without a
//! device only the authentication case runs (it needs none: the worker must
//! not even load libibverbs before the token is proven).
//! A custom main (`harness = false`), like the transport's own rdma test.

use std::io::{BufRead, BufReader, IoSlice};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rgpu_dataplane::rdma::{ControlToken, RdmaConfig, RdmaTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{
    Call, Client, ClientConfig, ClientEvent, CudaError, DevicePtr, MemAlloc, MemFree, MemcpyDtoH,
    MemcpyHtoD, Nop, Payload, Reply, RequestDevices, StreamHandle, Timestamp,
};
use serde_json::Value;

/// Bound on every wait (generous: the VM runs under TCG).
const WAIT: Duration = Duration::from_secs(60);
/// The test token, hex.
const TOKEN_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Device memory each client asks for.
const QUOTA: u64 = 64 << 20;

fn token() -> [u8; 32] {
    let mut t = [0u8; 32];
    for (i, b) in t.iter_mut().enumerate() {
        *b = u8::from_str_radix(&TOKEN_HEX[2 * i..2 * i + 2], 16).unwrap();
    }
    t
}

fn in_vm() -> bool {
    std::env::var("RGPU_RDMA_VM").is_ok_and(|v| v == "1")
}

fn has_device() -> bool {
    std::env::var("RGPU_RDMA_DEV").is_ok()
}

/// The `rgpu` binary: `RGPU_BIN`, the VM's staged copy, or cargo's build.
fn rgpu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RGPU_BIN") {
        return p.into();
    }
    let staged = PathBuf::from("/rgpu/bin/rgpu");
    if staged.exists() {
        return staged;
    }
    PathBuf::from(env!("CARGO_BIN_EXE_rgpu"))
}

/// Client-side transport settings (device and GID as the VM harness names them).
fn rdma_cfg(token: [u8; 32]) -> RdmaConfig {
    RdmaConfig {
        device: std::env::var("RGPU_RDMA_DEV").ok(),
        gid_index: std::env::var("RGPU_RDMA_GID_INDEX")
            .ok()
            .and_then(|v| v.parse().ok()),
        token: ControlToken(token),
        connect_timeout_ms: 30_000,
        ..RdmaConfig::default()
    }
}

/// A running `rgpu server --backend emulated` with an rdma and a tcp listener.
struct Server {
    child: Child,
    rdma: String,
    tcp: String,
    metrics: String,
    dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rgpu-rdma-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN_HEX}\n")).unwrap();
        let cfg = dir.join("rgpu.toml");
        std::fs::write(
            &cfg,
            format!(
                "metrics_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 30000\n\
                 drain_timeout_ms = 5000\n[pool]\ndevices = 1\n\
                 device_memory_bytes = {}\nclient_memory_bytes = {QUOTA}\n",
                4 * QUOTA
            ),
        )
        .unwrap();
        // The VM's rxe address when there is one (the control connection is plain TCP).
        let host = std::env::var("RGPU_RDMA_IPV4").unwrap_or_else(|_| "127.0.0.1".into());
        let mut child = Command::new(rgpu_bin())
            .args(["server", "--backend", "emulated"])
            .args(["--listen", &format!("rdma://{host}:0")])
            .args(["--listen", &format!("tcp://{host}:0")])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--config")
            .arg(&cfg)
            .env(
                "RGPU_LOG",
                std::env::var("RGPU_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rgpu server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).expect("ready line");
        let rdma = ready["listen"][0].as_str().unwrap().to_string();
        let tcp = ready["listen"][1].as_str().unwrap().to_string();
        let metrics = ready["metrics"].as_str().unwrap().to_string();
        assert!(rdma.starts_with("rdma://"), "{rdma}");
        println!("server: {rdma} {tcp}");
        Self {
            child,
            rdma: rdma.trim_start_matches("rdma://").to_string(),
            tcp: tcp.trim_start_matches("tcp://").to_string(),
            metrics,
            dir,
        }
    }

    fn status(&self) -> Value {
        let text = ureq::get(&format!("http://{}/status", self.metrics))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_idle(&self) -> Value {
        self.wait_status("no clients", |s| {
            s["clients"].as_array().is_some_and(Vec::is_empty)
        })
    }

    /// The one live client's worker pid.
    fn only_worker(&self) -> u32 {
        let s = self.wait_status("one client", |s| {
            s["clients"].as_array().is_some_and(|c| c.len() == 1)
        });
        let c = &s["clients"][0];
        assert_eq!(c["transport"].as_str(), Some("rdma"), "{s}");
        u32::try_from(c["worker_pid"].as_u64().unwrap()).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a worker process holds of RDMA: the verbs library mapped, uverbs device files open.
#[derive(Debug, PartialEq, Eq)]
struct RdmaFootprint {
    libibverbs_mapped: bool,
    uverbs_fds: usize,
}

fn footprint(pid: u32) -> RdmaFootprint {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let uverbs_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with("/dev/infiniband"))
        .count();
    RdmaFootprint {
        libibverbs_mapped: maps.contains("libibverbs"),
        uverbs_fds,
    }
}

/// Waits until `pid`'s main thread blocks in a socket read (`read` or `recvfrom`).
fn wait_blocked_in_read(pid: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr = sc.split_whitespace().next().unwrap_or("");
        // x86_64: read = 0, recvfrom = 45.
        if nr == "0" || nr == "45" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker {pid} never blocked reading: {sc:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The device's resource counts from iproute2's `rdma resource show` (VM only), e.g.
/// `pd 2 cq 2 qp 3 … mr 4 ctx 2`; `None` where the tool is missing.
fn rdma_resources() -> Option<Vec<(String, u64)>> {
    let out = Command::new("rdma")
        .args(["resource", "show"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let counts = words
        .windows(2)
        .filter_map(|w| Some((w[0].to_string(), w[1].parse::<u64>().ok()?)))
        .filter(|(k, _)| ["pd", "cq", "qp", "mr", "ctx"].contains(&k.as_str()))
        .collect();
    Some(counts)
}

/// A protocol client over any transport.
struct Conn<T: Transport> {
    client: Client,
    t: T,
    epoch: Instant,
}

impl<T: Transport> Conn<T> {
    fn open(t: T) -> Self {
        let mut c = Self {
            client: Client::new(
                ClientConfig {
                    token: token(),
                    ..ClientConfig::default()
                },
                Timestamp::ZERO,
            ),
            t,
            epoch: Instant::now(),
        };
        c.pump();
        let deadline = Instant::now() + WAIT;
        while !c.client.is_open() {
            assert!(Instant::now() < deadline, "handshake timed out");
            assert!(
                c.client.close_reason().is_none(),
                "{:?}",
                c.client.close_reason()
            );
            c.recv_once(|_| {});
        }
        c
    }

    fn pump(&mut self) {
        while let Some(batch) = self.client.peek_transmit() {
            assert!(self.client.peek_trailer().is_none(), "no trailers here");
            self.t.send_vectored(&[IoSlice::new(batch)]).expect("send");
            self.client.advance_transmit();
        }
    }

    fn recv_once(&mut self, mut on: impl FnMut(ClientEvent<'_>)) {
        let now = Timestamp(self.epoch.elapsed().as_nanos() as u64);
        let client = &mut self.client;
        self.t
            .recv(Some(Instant::now() + WAIT), &mut |bytes| {
                let _ = client.handle_input(now, bytes, &mut on);
            })
            .expect("recv");
    }

    fn sync<R>(
        &mut self,
        call: &Call<'_>,
        f: impl FnOnce(&Reply<'_>) -> R,
    ) -> Result<R, CudaError> {
        let now = Timestamp(self.epoch.elapsed().as_nanos() as u64);
        let id = self
            .client
            .submit_call(now, call, StreamHandle(0))
            .expect("submit");
        self.pump();
        let mut f = Some(f);
        let mut out = None;
        let deadline = Instant::now() + WAIT;
        while out.is_none() {
            assert!(Instant::now() < deadline, "no reply to {}", call.name());
            self.recv_once(|ev| match ev {
                ClientEvent::Reply { id: got, result } if got == id => {
                    out = Some(result.map(|r| (f.take().unwrap())(&r)));
                }
                ClientEvent::Aborted { id: got, error } if got == id => {
                    panic!("{} aborted: {error}", call.name())
                }
                _ => {}
            });
        }
        out.unwrap()
    }

    fn close(mut self) {
        self.client.close(|_| {});
        self.pump();
    }
}

fn connect_rdma(server: &Server) -> Conn<RdmaTransport> {
    Conn::open(RdmaTransport::connect(server.rdma.as_str(), rdma_cfg(token())).expect("connect"))
}

fn connect_tcp(server: &Server) -> Conn<TcpUringTransport> {
    Conn::open(TcpUringTransport::connect(server.tcp.as_str(), TcpConfig::default()).expect("tcp"))
}

/// Deterministic test bytes.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed * 97) as u8
        })
        .collect()
}

fn bad_token_touches_nothing() {
    let server = Server::start();
    let before = rdma_resources();
    // A client that connects and proves nothing: its worker waits for the token.
    let silent = std::net::TcpStream::connect(server.rdma.as_str()).unwrap();
    let pid = server.only_worker();
    wait_blocked_in_read(pid);
    let fp = footprint(pid);
    println!("worker {pid} waiting for the token: {fp:?}");
    assert_eq!(
        fp,
        RdmaFootprint {
            libibverbs_mapped: false,
            uverbs_fds: 0
        },
        "no verbs library and no device before the token"
    );
    if let (Some(b), Some(now)) = (&before, rdma_resources()) {
        println!("rdma resources before {b:?}, with the unauthenticated worker {now:?}");
        assert_eq!(b, &now, "an unauthenticated worker holds no RDMA resource");
    }
    drop(silent);
    server.wait_idle();
    // A wrong token: refused on the control connection, typed on the client.
    let err = RdmaTransport::connect(server.rdma.as_str(), rdma_cfg([0xa5; 32])).unwrap_err();
    println!("wrong token: {err}");
    assert!(
        matches!(err, TransportError::Unauthenticated { .. }),
        "{err:?}"
    );
    let s = server.wait_status("two auth failures", |s| {
        s["totals"]["auth_failures"].as_u64() == Some(2)
            && s["clients"].as_array().is_some_and(Vec::is_empty)
    });
    assert_eq!(s["totals"]["backends_created"].as_u64(), Some(0), "{s}");
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    if let (Some(b), Some(now)) = (&before, rdma_resources()) {
        assert_eq!(b, &now, "nothing left behind");
    }
}

fn copies_1b_to_16mib() {
    let server = Server::start();
    let before = rdma_resources();
    let mut c = connect_rdma(&server);
    let pid = server.only_worker();
    let fp = footprint(pid);
    println!(
        "worker {pid} serving an rdma client: {fp:?}; resources {:?}",
        rdma_resources()
    );
    assert!(
        fp.libibverbs_mapped && fp.uverbs_fds > 0,
        "the worker owns the QP: {fp:?}"
    );
    let granted = c
        .sync(
            &Call::RequestDevices(RequestDevices {
                count: 1,
                fraction_milli: 0,
                memory_bytes: QUOTA,
            }),
            |r| match r {
                Reply::DevicesGranted(g) => (g.count, g.memory_bytes),
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_eq!(granted, (1, QUOTA));
    let max = 16usize << 20;
    let p: DevicePtr = c
        .sync(
            &Call::MemAlloc(MemAlloc { bytes: max as u64 }),
            |r| match r {
                Reply::MemAllocReply(a) => a.ptr,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    let sizes = [
        1usize,
        255,
        4096,
        16 << 10,
        (16 << 10) + 1,
        1 << 20,
        3 << 20,
        max,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(i as u64 + 1, n);
        let t0 = Instant::now();
        c.sync(
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst: p,
                src: Payload::Inline(&data),
            }),
            |_| (),
        )
        .unwrap();
        let back = c
            .sync(
                &Call::MemcpyDtoH(MemcpyDtoH {
                    src: p,
                    len: n as u64,
                    dst: rgpu_proto::Dest::Inline,
                }),
                |r| match r {
                    Reply::MemcpyDtoHReply(d) => match d.data {
                        Payload::Inline(b) => b.to_vec(),
                        other => panic!("unexpected payload {other:?}"),
                    },
                    other => panic!("unexpected {other:?}"),
                },
            )
            .unwrap();
        let (sent, got) = (crc32fast::hash(&data), crc32fast::hash(&back));
        println!(
            "copy {n} B: crc32 {sent:08x} -> {got:08x} ({:.1?} both ways)",
            t0.elapsed()
        );
        assert_eq!(back.len(), n);
        assert_eq!(got, sent, "{n} B round trip");
    }
    c.sync(&Call::MemFree(MemFree { ptr: p }), |_| ()).unwrap();
    c.close();
    let s = server.wait_idle();
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    assert_eq!(s["totals"]["backends_created"].as_u64(), Some(1), "{s}");
    let total = sizes.iter().sum::<usize>() as u64;
    assert_eq!(s["totals"]["bytes_h2d"].as_u64(), Some(total), "{s}");
    assert_eq!(s["totals"]["bytes_d2h"].as_u64(), Some(total), "{s}");
    if let (Some(b), Some(now)) = (&before, rdma_resources()) {
        assert_eq!(b, &now, "the worker's exit freed its RDMA resources");
    }
}

/// Pinned host memory on rdma: the client registers a host region, copies name offsets in it
/// (`Payload::Arena` / `Dest::Arena`) and the worker moves the bytes with RDMA READ / WRITE.
/// A reference outside the region is `CUDA_ERROR_INVALID_VALUE` and the session goes on.
fn pinned_region_through_worker() {
    const REGION: usize = 8 << 20;
    let server = Server::start();
    let cfg = RdmaConfig {
        host_region_bytes: REGION,
        ..rdma_cfg(token())
    };
    let mut c = Conn::open(RdmaTransport::connect(server.rdma.as_str(), cfg).expect("connect"));
    assert_eq!(c.t.host_region_len(), REGION);
    c.sync(
        &Call::RequestDevices(RequestDevices {
            count: 1,
            fraction_milli: 0,
            memory_bytes: QUOTA,
        }),
        |_| (),
    )
    .unwrap();
    let n = (3 << 20) + 5;
    let p: DevicePtr = c
        .sync(&Call::MemAlloc(MemAlloc { bytes: n as u64 }), |r| match r {
            Reply::MemAllocReply(a) => a.ptr,
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    let src = c.t.host_alloc(n).unwrap();
    let dst = c.t.host_alloc(n).unwrap();
    let base = c.t.host_region_base().unwrap();
    // SAFETY: the region is REGION mapped bytes owned by `c.t`, alive until `c` closes below;
    // the worker writes it only while a D2H call below is outstanding (sync calls).
    let region = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), REGION) };
    let data = pattern(9, n);
    region[src.offset as usize..src.offset as usize + n].copy_from_slice(&data);
    let t0 = Instant::now();
    c.sync(
        &Call::MemcpyHtoD(MemcpyHtoD {
            dst: p,
            src: Payload::Arena {
                offset: src.offset,
                len: n as u64,
            },
        }),
        |_| (),
    )
    .unwrap();
    let landed = c
        .sync(
            &Call::MemcpyDtoH(MemcpyDtoH {
                src: p,
                len: n as u64,
                dst: rgpu_proto::Dest::Arena { offset: dst.offset },
            }),
            |r| match r {
                Reply::MemcpyDtoHReply(d) => match d.data {
                    Payload::Arena { offset, len } => (offset, len),
                    other => panic!("unexpected payload {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    println!(
        "pinned {n} B through the host region: {:.1?} both ways",
        t0.elapsed()
    );
    assert_eq!(
        landed,
        (dst.offset, n as u64),
        "the reply names the region bytes"
    );
    let back = &region[dst.offset as usize..dst.offset as usize + n];
    assert_eq!(crc32fast::hash(back), crc32fast::hash(&data));
    // Outside the region: refused before any RDMA operation, the session goes on.
    for (offset, len) in [(REGION as u64 - 10, 11u64), (u64::MAX - 1, 16)] {
        let h2d = c.sync(
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst: p,
                src: Payload::Arena { offset, len },
            }),
            |_| (),
        );
        assert_eq!(h2d, Err(CudaError::INVALID_VALUE), "H2D {offset}+{len}");
        let d2h = c.sync(
            &Call::MemcpyDtoH(MemcpyDtoH {
                src: p,
                len,
                dst: rgpu_proto::Dest::Arena { offset },
            }),
            |_| (),
        );
        assert_eq!(d2h, Err(CudaError::INVALID_VALUE), "D2H {offset}+{len}");
    }
    c.sync(&Call::Nop(Nop {}), |_| ()).unwrap();
    c.sync(&Call::MemFree(MemFree { ptr: p }), |_| ()).unwrap();
    c.close();
    let s = server.wait_idle();
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
    assert_eq!(s["totals"]["bytes_h2d"].as_u64(), Some(n as u64), "{s}");
    assert_eq!(s["totals"]["bytes_d2h"].as_u64(), Some(n as u64), "{s}");
}

/// Sync null calls through the daemon's worker: prints per-round-trip figures (no timing
/// assertion: the VM runs under TCG) and checks every call got its reply.
fn null_call_rdma_vs_tcp() {
    fn run<T: Transport>(label: &str, c: &mut Conn<T>, iters: usize) {
        for _ in 0..iters / 10 {
            c.sync(&Call::Nop(Nop {}), |_| ()).unwrap();
        }
        let mut ns: Vec<u64> = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t0 = Instant::now();
            c.sync(&Call::Nop(Nop {}), |r| {
                assert!(matches!(r, Reply::NopReply(_)))
            })
            .unwrap();
            ns.push(t0.elapsed().as_nanos() as u64);
        }
        ns.sort_unstable();
        let pct = |p: usize| ns[(ns.len() - 1) * p / 100] as f64 / 1000.0;
        let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
        println!(
            "null-call {label} via rgpu server worker: {iters} round trips, p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, mean {mean:.1} us",
            pct(50),
            pct(90),
            pct(99)
        );
        assert_eq!(ns.len(), iters);
    }
    let iters = if in_vm() { 500 } else { 20_000 };
    let server = Server::start();
    let mut r = connect_rdma(&server);
    run("rdma", &mut r, iters);
    r.close();
    let mut t = connect_tcp(&server);
    run("tcp", &mut t, iters);
    t.close();
    let s = server.wait_idle();
    assert_eq!(s["totals"]["worker_crashes"].as_u64(), Some(0), "{s}");
}

fn main() {
    let cases: Vec<(&str, fn())> = if has_device() {
        vec![
            ("bad_token_touches_nothing", bad_token_touches_nothing),
            ("copies_1b_to_16mib", copies_1b_to_16mib),
            ("pinned_region_through_worker", pinned_region_through_worker),
            ("null_call_rdma_vs_tcp", null_call_rdma_vs_tcp),
        ]
    } else {
        println!("rgpu rdma: RGPU_RDMA_DEV unset; only the no-device case runs (scripts/rdma-vm-suite runs all)");
        vec![("bad_token_touches_nothing", bad_token_touches_nothing)]
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t0 = Instant::now();
        println!("rgpu rdma case {name} ...");
        match catch_unwind(AssertUnwindSafe(case)) {
            Ok(()) => {
                passed += 1;
                println!("rgpu rdma case {name}: ok ({:.1?})", t0.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("rgpu rdma case {name}: FAILED ({:.1?})", t0.elapsed());
            }
        }
    }
    println!("rgpu rdma test result: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
