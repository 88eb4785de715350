//! Test support: the real `rgpu server` binary as a child process, its
//! `/status` and `/metrics`, and a protocol client (`rgpu_proto::Client`
//! over a real transport) that talks to the server's workers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, IoSlice};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{ShmConfig, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_dataplane::Transport;
use rgpu_proto::{
    Call, CallId, Client, ClientConfig, ClientEvent, CtxSynchronize, CudaError, DevicePtr,
    MemAlloc, MemFree, MemGetInfo, MemcpyDtoH, MemcpyHtoD, Payload, Reply, StreamHandle, Timestamp,
};
use serde_json::Value;

/// Bound on any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);
/// The test token (hex) and its bytes.
pub const TOKEN_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The token's bytes.
pub fn token() -> [u8; 32] {
    let mut t = [0u8; 32];
    for (i, b) in t.iter_mut().enumerate() {
        *b = u8::from_str_radix(&TOKEN_HEX[2 * i..2 * i + 2], 16).unwrap();
    }
    t
}

/// A fresh temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates one.
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rgpu-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `rgpu server`.
pub struct Server {
    child: Option<Child>,
    /// `tcp://…` URL.
    pub tcp: String,
    /// Unix socket path of the shm listener.
    pub shm: PathBuf,
    /// Metrics/status address.
    pub metrics: String,
    dir: TempDir,
}

/// Pool used by most tests: 2 devices of 64 MiB, 32 MiB per client.
pub const CLIENT_BYTES: u64 = 32 << 20;

impl Server {
    /// Starts a server with the test token and `pool` TOML lines.
    pub fn start(pool_toml: &str, env: &[(&str, &str)]) -> Self {
        Self::start_backend("emulated", pool_toml, env)
    }

    /// Starts a server on `backend` (`emulated` or `cuda`). For `cuda` the
    /// daemon's `LD_LIBRARY_PATH` loses the directories holding a
    /// `libcuda.so.1` (cargo puts `target/*/`, where the shim lies, on it),
    /// the same scrub the daemon applies to its workers, and `LD_PRELOAD`
    /// is removed, so the daemon probes the system's driver.
    pub fn start_backend(backend: &str, pool_toml: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let token_file = dir.0.join("token");
        std::fs::write(&token_file, format!("{TOKEN_HEX}\n")).unwrap();
        let cfg = dir.0.join("rgpu.toml");
        std::fs::write(
            &cfg,
            format!("metrics_listen = \"127.0.0.1:0\"\nhandshake_timeout_ms = 3000\ndrain_timeout_ms = 3000\n[pool]\n{pool_toml}\n"),
        )
        .unwrap();
        let shm = dir.0.join("rgpu.sock");
        let mut cmd = Command::new(rgpu_bin());
        cmd.arg("server")
            .args(["--backend", backend, "--listen", "tcp://127.0.0.1:0"])
            .arg("--listen")
            .arg(format!("shm://{}", shm.display()))
            .arg("--token-file")
            .arg(&token_file)
            .arg("--config")
            .arg(&cfg)
            .env(
                "RGPU_LOG",
                std::env::var("RGPU_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if backend != "emulated" {
            scrub_shim(&mut cmd);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn rgpu server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).expect("ready line");
        let tcp = ready["listen"][0].as_str().unwrap().to_string();
        let metrics = ready["metrics"].as_str().unwrap().to_string();
        Self {
            child: Some(child),
            tcp,
            shm,
            metrics,
            dir,
        }
    }

    /// The standard test server.
    pub fn standard() -> Self {
        Self::start(
            &format!(
                "devices = 2\ndevice_memory_bytes = {}\nclient_memory_bytes = {CLIENT_BYTES}",
                64u64 << 20
            ),
            &[],
        )
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Value {
        let text = ureq::get(&format!("http://{}/status", self.metrics))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://{}/metrics", self.metrics))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// Live clients per `/status`.
    pub fn clients(&self) -> Vec<Value> {
        self.status()["clients"].as_array().unwrap().clone()
    }

    /// Waits until `/status` satisfies `pred` (panics after [`WAIT`]).
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

    /// Waits until no client is live and nothing is reserved.
    pub fn wait_idle(&self) -> Value {
        self.wait_status("no clients and an empty pool", |s| {
            s["clients"].as_array().is_some_and(Vec::is_empty) && reserved(s) == 0
        })
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory of this server's files.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `rgpu` binary under test: cargo's, or `RGPU_TEST_RGPU_BIN` when the
/// test executable runs away from its build tree (the GPU suite's pack,
/// `scripts/gpu-suite`).
pub fn rgpu_bin() -> PathBuf {
    std::env::var_os("RGPU_TEST_RGPU_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rgpu")), PathBuf::from)
}

/// Keeps the shim away from a process that must load the real driver:
/// removes `LD_PRELOAD` and drops the `LD_LIBRARY_PATH` directories that
/// hold a `libcuda.so.1` (the policy the daemon applies to its workers).
pub fn scrub_shim(cmd: &mut Command) {
    cmd.env_remove("LD_PRELOAD");
    if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
        let kept: Vec<PathBuf> = std::env::split_paths(&path)
            .filter(|d| !d.as_os_str().is_empty() && !d.join("libcuda.so.1").exists())
            .collect();
        match std::env::join_paths(kept) {
            Ok(v) if !v.is_empty() => cmd.env("LD_LIBRARY_PATH", v),
            _ => cmd.env_remove("LD_LIBRARY_PATH"),
        };
    }
}

/// Reserved bytes over all devices in a `/status` document.
pub fn reserved(s: &Value) -> u64 {
    s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reserved_bytes"].as_u64().unwrap())
        .sum()
}

/// Whether process `pid` exists (a zombie counts as gone: it was reaped or
/// is about to be, and holds nothing).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Which transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared memory.
    Shm,
    /// TCP.
    Tcp,
}

enum T {
    Shm(ShmTransport),
    Tcp(TcpUringTransport),
}

impl T {
    fn t(&mut self) -> &mut dyn Transport {
        match self {
            T::Shm(t) => t,
            T::Tcp(t) => t,
        }
    }
}

/// A protocol client connected to the server.
pub struct Conn {
    client: Client,
    t: T,
    epoch: Instant,
}

const S0: StreamHandle = StreamHandle(0);

impl Conn {
    /// Connects and completes the handshake with the right token.
    pub fn open(server: &Server, kind: Kind) -> Self {
        Self::open_with(server, kind, token()).expect("handshake")
    }

    /// Connects with `token`; `Err` with the reason if the handshake fails.
    pub fn open_with(server: &Server, kind: Kind, token: [u8; 32]) -> Result<Self, String> {
        let t = match kind {
            Kind::Shm => T::Shm(
                ShmTransport::connect(&server.shm, ShmConfig::default())
                    .map_err(|e| e.to_string())?,
            ),
            Kind::Tcp => {
                let addr = server.tcp.strip_prefix("tcp://").unwrap();
                T::Tcp(
                    TcpUringTransport::connect(addr, TcpConfig::default())
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let epoch = Instant::now();
        let mut c = Self {
            client: Client::new(
                ClientConfig {
                    token,
                    ..ClientConfig::default()
                },
                Timestamp::ZERO,
            ),
            t,
            epoch,
        };
        c.pump().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + WAIT;
        while !c.client.is_open() {
            if Instant::now() > deadline {
                return Err("handshake timed out".into());
            }
            if let Some(r) = c.client.close_reason() {
                return Err(format!("closed: {r}"));
            }
            c.recv_once(|_| {}).map_err(|e| e.to_string())?;
        }
        Ok(c)
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed().as_nanos() as u64)
    }

    fn pump(&mut self) -> Result<(), rgpu_dataplane::TransportError> {
        let t = self.t.t();
        while let Some(batch) = self.client.peek_transmit() {
            assert!(
                self.client.peek_trailer().is_none(),
                "these tests send no trailers"
            );
            t.send_vectored(&[IoSlice::new(batch)])?;
            self.client.advance_transmit();
        }
        Ok(())
    }

    fn recv_once(
        &mut self,
        mut on: impl FnMut(ClientEvent<'_>),
    ) -> Result<(), rgpu_dataplane::TransportError> {
        let now = self.now();
        let client = &mut self.client;
        self.t.t().recv(Some(Instant::now() + WAIT), &mut |bytes| {
            let _ = client.handle_input(now, bytes, &mut on);
        })?;
        Ok(())
    }

    /// One sync call; its reply mapped by `f`.
    pub fn sync<R>(
        &mut self,
        call: &Call<'_>,
        f: impl FnOnce(&Reply<'_>) -> R,
    ) -> Result<R, CudaError> {
        let now = self.now();
        let id: CallId = self.client.submit_call(now, call, S0).expect("submit");
        self.pump().expect("send");
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
            })
            .expect("recv");
        }
        out.unwrap()
    }

    /// `cuMemGetInfo`: (free, total).
    pub fn mem_info(&mut self) -> Result<(u64, u64), CudaError> {
        self.sync(&Call::MemGetInfo(MemGetInfo {}), |r| match r {
            Reply::MemInfo(m) => (m.free, m.total),
            other => panic!("unexpected {other:?}"),
        })
    }

    /// `cuCtxSynchronize`: reports earlier async failures (device queries
    /// and `MemGetInfo` leave them pending).
    pub fn ctx_sync(&mut self) -> Result<(), CudaError> {
        self.sync(&Call::CtxSynchronize(CtxSynchronize {}), |r| match r {
            Reply::CtxSynchronizeReply(_) => (),
            other => panic!("unexpected {other:?}"),
        })
    }

    /// `RequestDevices`: (devices, bytes per device) granted.
    pub fn request_devices(
        &mut self,
        count: u32,
        fraction_milli: u32,
        memory_bytes: u64,
    ) -> Result<(u32, u64), CudaError> {
        let call = Call::RequestDevices(rgpu_proto::RequestDevices {
            count,
            fraction_milli,
            memory_bytes,
        });
        self.sync(&call, |r| match r {
            Reply::DevicesGranted(g) => (g.count, g.memory_bytes),
            other => panic!("unexpected {other:?}"),
        })
    }

    /// `cuMemAlloc`.
    pub fn alloc(&mut self, bytes: u64) -> Result<DevicePtr, CudaError> {
        self.sync(&Call::MemAlloc(MemAlloc { bytes }), |r| match r {
            Reply::MemAllocReply(a) => a.ptr,
            other => panic!("unexpected {other:?}"),
        })
    }

    /// `cuMemFree`.
    pub fn free(&mut self, ptr: DevicePtr) -> Result<(), CudaError> {
        self.sync(&Call::MemFree(MemFree { ptr }), |_| ())
    }

    /// Inline host-to-device copy.
    pub fn h2d(&mut self, dst: DevicePtr, data: &[u8]) -> Result<(), CudaError> {
        self.sync(
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst,
                src: Payload::Inline(data),
            }),
            |_| (),
        )
    }

    /// Inline device-to-host copy.
    pub fn d2h(&mut self, src: DevicePtr, len: u64) -> Result<Vec<u8>, CudaError> {
        self.sync(
            &Call::MemcpyDtoH(MemcpyDtoH {
                src,
                len,
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
    }

    /// Queues an async call (a launch) on the default stream and sends it;
    /// its failure, if any, surfaces at the next synchronisation.
    pub fn submit_async(&mut self, call: &Call<'_>) {
        let now = self.now();
        self.client.submit_call(now, call, S0).expect("submit");
        self.pump().expect("send");
    }

    /// Sends raw bytes past the protocol (to break it).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.t.t().send(bytes).expect("send raw");
    }

    /// Closes the connection properly.
    pub fn close(mut self) {
        self.client.close(|_| {});
        let _ = self.pump();
    }
}

/// Environment variable that tells a test binary's ignored `sigkill_child_client`
/// entry point which server to copy to (`shm|SHM_PATH|TCP_URL` or `tcp|…`).
pub const SIGKILL_CHILD_ENV: &str = "RGPU_CLI_TEST_CHILD";
/// Line that child prints once it is mid-transfer.
pub const SIGKILL_CHILD_READY: &str = "RGPU-CHILD-TRANSFERRING";

/// The child side of a SIGKILL test: connects to the server named in
/// [`SIGKILL_CHILD_ENV`], starts copying, says [`SIGKILL_CHILD_READY`], then
/// copies until the parent kills it. Each test binary with a SIGKILL test calls
/// this from an ignored `#[test] fn sigkill_child_client`.
pub fn sigkill_child_client_main() -> ! {
    let spec = std::env::var(SIGKILL_CHILD_ENV)
        .expect("sigkill_child_client runs only as a SIGKILL test's child process");
    let mut it = spec.splitn(3, '|');
    let kind = if it.next() == Some("shm") {
        Kind::Shm
    } else {
        Kind::Tcp
    };
    let shm = it.next().unwrap().into();
    let tcp = it.next().unwrap().to_string();
    let s = Server::client_view(shm, tcp);
    let mut c = Conn::open(&s, kind);
    let data = bytes(1, 1 << 20);
    let p = c.alloc(8 << 20).unwrap();
    c.h2d(p, &data).unwrap();
    println!("{SIGKILL_CHILD_READY}");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        c.h2d(p, &data).unwrap();
    }
    panic!("the parent never killed this client");
}

/// Starts this test binary's `sigkill_child_client` with `spec`.
fn spawn_sigkill_child(spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_client",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SIGKILL_CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The parent side: runs this test binary's `sigkill_child_client` against
/// `server` over `kind` and returns once the child is mid-transfer.
pub fn spawn_transferring_child(server: &Server, kind: Kind) -> Child {
    let kind = match kind {
        Kind::Shm => "shm",
        Kind::Tcp => "tcp",
    };
    let spec = format!("{kind}|{}|{}", server.shm.display(), server.tcp);
    let mut child = spawn_sigkill_child(&spec);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(SIGKILL_CHILD_READY) {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before transferring"
        );
    }
    // Keep the pipe open while the child runs.
    child.stdout = Some(out.into_inner());
    child
}

/// Deterministic test bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u64).wrapping_mul(2654435761).wrapping_add(seed * 97) as u8)
        .collect()
}

impl Server {
    /// A handle with only the addresses (for client threads and processes;
    /// it owns no server process).
    pub fn client_view(shm: PathBuf, tcp: String) -> Self {
        Self {
            child: None,
            tcp,
            shm,
            metrics: String::new(),
            dir: TempDir::new(),
        }
    }
}
