//! Test clients for the worker: the same protocol-level scenarios run
//! through the `rgpu_proto::sim` harness and over real shm and tcp
//! transports (client = `rgpu_proto::Client` + transport, as the bench does).

#![allow(dead_code)]

pub mod scenarios;

use std::cell::RefCell;
use std::io::IoSlice;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{ShmConfig, ShmListener, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringListener, TcpUringTransport};
use rgpu_dataplane::Transport;
use rgpu_gpu_worker::share::{Board, ShareGate, Shared};
use rgpu_gpu_worker::{
    run_session, EmulatedBackend, EmulatedConfig, Executor, NoArena, SessionConfig, SessionError,
    SessionSummary,
};
use rgpu_proto::sim::{ClientRecord, Harness, Net, NetConfig};
use rgpu_proto::{
    Call, CallId, Client, ClientConfig, ClientEvent, CudaError, Reply, Server, ServerConfig,
    StreamHandle, SubmitError, Timestamp,
};
use rgpu_ring::Slab;

/// Bound on any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Quota of the test device: large enough for the 16 MiB copies.
pub const QUOTA: u64 = 64 << 20;

/// The emulated device every test session gets.
pub fn device_config() -> EmulatedConfig {
    EmulatedConfig {
        memory_quota_bytes: QUOTA,
        ..EmulatedConfig::default()
    }
}

/// A client connection the scenarios drive.
pub trait Conn {
    /// Queues an async call on `stream` (sent with the next sync call).
    fn submit_async(&mut self, call: &Call<'_>, stream: StreamHandle);
    /// Sends a sync call (with `trailer` bytes behind it if it announces
    /// one), waits for its reply and maps it with `f`.
    fn sync<R>(
        &mut self,
        call: &Call<'_>,
        stream: StreamHandle,
        trailer: Option<&[u8]>,
        f: impl FnOnce(&Reply<'_>) -> R,
    ) -> Result<R, CudaError>;
    /// The shm transport, when this connection has an arena.
    fn shm(&mut self) -> Option<&mut ShmTransport>;
    /// Whether payloads may travel as trailers (stream framing).
    fn trailers(&self) -> bool;
}

// ---------------------------------------------------------------- sim

/// A client and a worker executor joined by the deterministic sim net.
pub struct SimConn {
    h: Harness,
    /// The worker side, shared with the harness's server app.
    pub worker: Rc<RefCell<(Executor, EmulatedBackend)>>,
}

impl SimConn {
    /// Connects through a net seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let worker = Rc::new(RefCell::new((
            Executor::new(),
            EmulatedBackend::new(device_config()),
        )));
        let w = Rc::clone(&worker);
        let app = Box::new(
            move |_now: Timestamp,
                  ev: rgpu_proto::ServerEvent<'_>,
                  r: &mut rgpu_proto::Responder| {
                let mut guard = w.borrow_mut();
                let (exec, backend) = &mut *guard;
                exec.on_event(backend, ev, r, &mut NoArena);
            },
        );
        let net = Net::new(
            NetConfig {
                max_chunk_bytes: 64 << 10,
                ..NetConfig::default()
            },
            seed,
        );
        let client = Client::new(ClientConfig::default(), Timestamp::ZERO);
        let server = Server::new(ServerConfig::default(), Timestamp::ZERO);
        let mut h = Harness::new(client, server, net, app);
        assert!(h.handshake(1000) && h.client.is_open(), "sim handshake");
        Self { h, worker }
    }
}

impl Conn for SimConn {
    fn submit_async(&mut self, call: &Call<'_>, stream: StreamHandle) {
        loop {
            match self.h.client.submit_call(self.h.now, call, stream) {
                Ok(_) | Err(SubmitError::Sticky(_)) => return,
                Err(SubmitError::Backpressure { .. }) => {
                    self.h.client.flush();
                    assert!(self.h.step(), "sim stalled under backpressure");
                }
                Err(e) => panic!("submit {}: {e}", call.name()),
            }
        }
    }

    fn sync<R>(
        &mut self,
        call: &Call<'_>,
        stream: StreamHandle,
        trailer: Option<&[u8]>,
        f: impl FnOnce(&Reply<'_>) -> R,
    ) -> Result<R, CudaError> {
        let id = match self.h.client.submit_call(self.h.now, call, stream) {
            Ok(id) => id,
            Err(SubmitError::Sticky(e)) => return Err(e),
            Err(e) => panic!("submit {}: {e}", call.name()),
        };
        if let Some(p) = trailer {
            self.h.trailer_payloads.push_back(p.to_vec());
        }
        let is_ours = |r: &ClientRecord| matches!(r, ClientRecord::Reply { id: got, .. } | ClientRecord::Aborted { id: got, .. } if *got == id);
        assert!(
            self.h
                .run_until(1_000_000, |h| h.client_log.iter().any(is_ours)),
            "no reply to {}",
            call.name()
        );
        let pos = self
            .h
            .client_log
            .iter()
            .position(is_ours)
            .expect("found above");
        match self.h.client_log.remove(pos) {
            ClientRecord::Reply {
                result: Ok(body), ..
            } => {
                let reply = Reply::decode(call.code(), &body).expect("reply decodes");
                Ok(f(&reply))
            }
            ClientRecord::Reply { result: Err(e), .. } => Err(e),
            other => panic!("{} aborted: {other:?}", call.name()),
        }
    }

    fn shm(&mut self) -> Option<&mut ShmTransport> {
        None
    }

    fn trailers(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------- real transports

/// Which real transport a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared memory (with arena).
    Shm,
    /// TCP on io_uring over loopback.
    Tcp,
}

enum NetT {
    Shm(ShmTransport),
    Tcp(TcpUringTransport),
}

impl NetT {
    fn t(&mut self) -> &mut dyn Transport {
        match self {
            NetT::Shm(t) => t,
            NetT::Tcp(t) => t,
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the worker thread hands back: the session outcome and its backend.
pub type WorkerResult = (Result<SessionSummary, SessionError>, EmulatedBackend);

/// A protocol client over a real transport, with a worker thread running
/// `run_session` on an emulated backend.
pub struct NetConn {
    client: Client,
    t: Option<NetT>,
    epoch: Instant,
    worker: Option<JoinHandle<WorkerResult>>,
    _dir: Option<TempDir>,
}

fn now_since(epoch: Instant) -> Timestamp {
    Timestamp(epoch.elapsed().as_nanos() as u64)
}

impl NetConn {
    /// Starts a worker thread serving one session and connects to it.
    pub fn open(kind: Kind) -> Self {
        Self::open_with(kind, device_config())
    }

    /// As [`NetConn::open`] with a given device.
    pub fn open_with(kind: Kind, device: EmulatedConfig) -> Self {
        Self::open_gated(kind, device, None)
    }

    /// As [`NetConn::open_with`], the backend's launches under a compute
    /// share gate (none: unthrottled, as `open_with`).
    pub fn open_gated(
        kind: Kind,
        device: EmulatedConfig,
        gate: Option<ShareGate<Arc<Board>>>,
    ) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let session = SessionConfig::default();
        let serve = move |t| {
            let mut backend = Shared::new(EmulatedBackend::new(device), gate);
            let res = match t {
                NetT::Shm(t) => run_session(t, &mut backend, &session),
                NetT::Tcp(t) => run_session(t, &mut backend, &session),
            };
            (res, backend.into_inner())
        };
        let (t, worker, dir) = match kind {
            Kind::Shm => {
                let dir = std::env::temp_dir().join(format!(
                    "rgpu-worker-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("w.sock");
                let cfg = ShmConfig::default();
                let listener = ShmListener::bind(&path, cfg.clone()).unwrap();
                let worker = std::thread::spawn(move || {
                    let t = listener.accept(Some(Instant::now() + WAIT)).unwrap();
                    serve(NetT::Shm(t))
                });
                let t = ShmTransport::connect(&path, cfg).unwrap();
                (NetT::Shm(t), worker, Some(TempDir(dir)))
            }
            Kind::Tcp => {
                let cfg = TcpConfig {
                    single_thread: true,
                    ..TcpConfig::default()
                };
                let listener = TcpUringListener::bind("127.0.0.1:0", cfg.clone()).unwrap();
                let addr = listener.local_addr().unwrap();
                let worker = std::thread::spawn(move || {
                    let t = listener.accept(Some(Instant::now() + WAIT)).unwrap();
                    serve(NetT::Tcp(t))
                });
                let t = TcpUringTransport::connect(addr, cfg).unwrap();
                (NetT::Tcp(t), worker, None)
            }
        };
        let epoch = Instant::now();
        let mut c = Self {
            client: Client::new(ClientConfig::default(), now_since(epoch)),
            t: Some(t),
            epoch,
            worker: Some(worker),
            _dir: dir,
        };
        c.pump_out(None);
        let deadline = Instant::now() + WAIT;
        while !c.client.is_open() {
            assert!(Instant::now() < deadline, "handshake timed out");
            c.recv_once(|_| {});
        }
        c
    }

    fn t(&mut self) -> &mut dyn Transport {
        self.t.as_mut().expect("transport open").t()
    }

    fn pump_out(&mut self, trailer: Option<&[u8]>) {
        if let Err(e) = self.try_pump_out(trailer) {
            self.die("send", e);
        }
    }

    /// Panics with the transport error and what the worker reported.
    fn die(&mut self, op: &str, e: rgpu_dataplane::TransportError) -> ! {
        drop(self.t.take());
        let (res, _) = self.join();
        panic!("{op} failed: {e}; worker: {res:?}");
    }

    fn try_pump_out(
        &mut self,
        trailer: Option<&[u8]>,
    ) -> Result<(), rgpu_dataplane::TransportError> {
        let Self { client, t, .. } = self;
        let t = t.as_mut().expect("transport open").t();
        while let Some(batch) = client.peek_transmit() {
            match client.peek_trailer() {
                Some(owed) => {
                    let p = trailer.expect("a trailer payload for the owed trailer");
                    assert_eq!(p.len() as u64, owed.len);
                    t.send_vectored(&[IoSlice::new(batch), IoSlice::new(p)])?;
                    client.advance_transmit();
                    client.trailer_sent(owed.len).unwrap();
                }
                None => {
                    t.send(batch)?;
                    client.advance_transmit();
                }
            }
        }
        Ok(())
    }

    fn recv_once(&mut self, mut on_event: impl FnMut(ClientEvent<'_>)) {
        let epoch = self.epoch;
        let Self { client, t, .. } = self;
        let t = t.as_mut().expect("transport open").t();
        let res = t.recv(Some(Instant::now() + WAIT), &mut |bytes| {
            client
                .handle_input(now_since(epoch), bytes, &mut on_event)
                .unwrap();
        });
        if let Err(e) = res {
            self.die("recv", e);
        }
    }

    /// Drops the client transport without a protocol close (the peer
    /// vanishes) and returns what the worker thread reported.
    pub fn vanish(mut self) -> WorkerResult {
        drop(self.t.take());
        self.join()
    }

    /// Closes the connection and returns what the worker reported.
    pub fn finish(mut self) -> WorkerResult {
        self.client.close(|_| {});
        let _ = self.try_pump_out(None);
        drop(self.t.take());
        self.join()
    }

    fn join(&mut self) -> WorkerResult {
        self.worker
            .take()
            .expect("joined once")
            .join()
            .expect("worker thread panicked")
    }
}

impl Conn for NetConn {
    fn submit_async(&mut self, call: &Call<'_>, stream: StreamHandle) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.submit_call(now_since(self.epoch), call, stream) {
                Ok(_) | Err(SubmitError::Sticky(_)) => return,
                Err(SubmitError::Backpressure { .. }) => {
                    assert!(Instant::now() < deadline, "backpressure never eased");
                    self.client.flush();
                    self.pump_out(None);
                    self.recv_once(|_| {});
                }
                Err(e) => panic!("submit {}: {e}", call.name()),
            }
        }
    }

    fn sync<R>(
        &mut self,
        call: &Call<'_>,
        stream: StreamHandle,
        trailer: Option<&[u8]>,
        f: impl FnOnce(&Reply<'_>) -> R,
    ) -> Result<R, CudaError> {
        let id: CallId = match self.client.submit_call(now_since(self.epoch), call, stream) {
            Ok(id) => id,
            Err(SubmitError::Sticky(e)) => return Err(e),
            Err(e) => panic!("submit {}: {e}", call.name()),
        };
        self.pump_out(trailer);
        let mut f = Some(f);
        let mut out = None;
        let deadline = Instant::now() + WAIT;
        while out.is_none() {
            assert!(Instant::now() < deadline, "no reply to {}", call.name());
            self.recv_once(|ev| match ev {
                ClientEvent::Reply { id: got, result } if got == id => {
                    let f = f.take().expect("one reply");
                    out = Some(result.map(|r| f(&r)));
                }
                ClientEvent::Aborted { id: got, error } if got == id => {
                    panic!("{} aborted: {error}", call.name())
                }
                _ => {}
            });
        }
        out.expect("loop ends with a reply")
    }

    fn shm(&mut self) -> Option<&mut ShmTransport> {
        match self.t.as_mut() {
            Some(NetT::Shm(t)) => Some(t),
            _ => None,
        }
    }

    fn trailers(&self) -> bool {
        true
    }
}

/// Allocates an arena slab on the client side and fills it.
pub fn arena_put(t: &mut ShmTransport, data: &[u8]) -> Slab {
    let slab = t.alloc_slab(data.len().max(1)).unwrap();
    t.slab_mut(slab).unwrap()[..data.len()].copy_from_slice(data);
    slab
}
