//! Sets up the two ends of one rgpu connection for the bench: a transport pair (shm or tcp) with
//! the protocol's client on the calling thread and a serving thread that plays the GPU worker.
//!
//! The serving side answers exactly what the scenarios send: `Nop` (the null call), `AsyncNop`
//! (the 64-byte async call) and `MemcpyHtoD` (bulk: as a trailer streamed after the frame over
//! tcp, landed straight in a "device" buffer; by arena reference over shm, copied into it the way
//! the worker's copy would land; inline payloads are copied too). Anything else gets a CUDA
//! error, so a scenario that sent the wrong thing fails loudly instead of measuring nothing.

use std::io::IoSlice;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{ShmConfig, ShmListener, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringListener, TcpUringTransport};
use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{
    Call, CallId, Client, ClientConfig, ClientEvent, CudaError, Framing, MemcpyHtoDReply, NopReply,
    Payload, Reply, Server, ServerConfig, ServerEvent, Timestamp,
};
use rgpu_ring::Slab;

use crate::pin::pin_current_thread;
use crate::BenchError;

/// The shared secret both ends of a bench connection present.
const BENCH_TOKEN: [u8; 32] = *b"rgpu-bench-token-not-a-secret!!!";

/// Bound on any single wait inside the bench; a stuck run fails instead of hanging.
pub const WAIT_BOUND: Duration = Duration::from_secs(30);

/// Which transport a link runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// Shared-memory rings plus arena.
    Shm,
    /// TCP on io_uring over loopback.
    Tcp,
    /// RDMA verbs, one RC queue pair over loopback on the device named by `RGPU_RDMA_DEV`
    /// (GID index from `RGPU_RDMA_GID_INDEX`). Needs a build with `--features rdma`.
    Rdma,
}

impl TransportChoice {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Shm => "shm",
            TransportChoice::Tcp => "tcp",
            TransportChoice::Rdma => "rdma",
        }
    }
}

/// Protocol tuning a scenario asks for.
#[derive(Debug, Clone, Copy)]
pub struct LinkTuning {
    /// Async calls per batch (one doorbell or send per batch).
    pub batch_calls: u32,
    /// Bytes per batch.
    pub batch_bytes: u32,
    /// Credit window in calls.
    pub window_calls: u32,
    /// Credit window in bytes.
    pub window_bytes: u32,
    /// Calls the server consumes before it returns credit unprompted.
    pub credit_return_calls: u32,
    /// Ring bytes per direction (shm).
    pub ring_bytes: usize,
    /// Arena bytes (shm).
    pub arena_bytes: usize,
}

impl Default for LinkTuning {
    fn default() -> Self {
        Self {
            batch_calls: 256,
            batch_bytes: 64 << 10,
            window_calls: 1024,
            window_bytes: 4 << 20,
            credit_return_calls: 256,
            ring_bytes: 1 << 20,
            arena_bytes: 64 << 20,
        }
    }
}

/// Nanoseconds since the first call: the `now` both state machines are fed.
pub fn now() -> Timestamp {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Timestamp(epoch.elapsed().as_nanos() as u64)
}

/// What the serving thread counted, returned when the client hangs up.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServeStats {
    /// Calls executed.
    pub calls: u64,
    /// Bulk bytes copied into the "device" buffer.
    pub bulk_bytes: u64,
    /// CRC-32 of the "device" buffer when the client hung up, so a bulk scenario can check that
    /// what landed is what the client sent.
    pub device_crc: u32,
}

/// The client end of a bench connection.
pub struct Link {
    /// The protocol client.
    pub client: Client,
    /// Its transport, and the serving thread on the other end.
    pub pair: TransportPair<ServeStats>,
    /// Outgoing batch buffer, reused.
    out: Vec<u8>,
}

/// A connected transport pair: the client end on the calling thread (pinned to core 0) and a
/// serving thread (pinned to core 1) running `serve` on the other end.
pub struct TransportPair<R> {
    /// The client end.
    pub client: Box<dyn ClientTransport>,
    /// The serving thread; joins to what `serve` returned.
    pub server: JoinHandle<Result<R, BenchError>>,
    /// Holds the shm listener's socket directory until the pair is done.
    socket_dir: Option<TempDir>,
}

impl<R: Send + 'static> TransportPair<R> {
    /// Listens on `choice`, starts the serving thread, and connects the client end to it.
    pub fn open<F>(
        choice: TransportChoice,
        tuning: LinkTuning,
        serve: F,
    ) -> Result<Self, BenchError>
    where
        F: FnOnce(&mut dyn ServerTransport) -> Result<R, BenchError> + Send + 'static,
    {
        let (client, server, socket_dir): (Box<dyn ClientTransport>, _, _) = match choice {
            TransportChoice::Shm => {
                let dir = temp_dir()?;
                let mut cfg = ShmConfig::default();
                cfg.segment.ring_bytes = tuning.ring_bytes;
                cfg.segment.arena_bytes = tuning.arena_bytes;
                let path = dir.0.join("worker.sock");
                let listener = ShmListener::bind(&path, cfg.clone())?;
                let server = thread::spawn(move || {
                    pin_current_thread(1);
                    let mut t = listener.accept(Some(Instant::now() + WAIT_BOUND))?;
                    serve(&mut t)
                });
                let t = ShmTransport::connect(&path, cfg)?;
                (Box::new(t), server, Some(dir))
            }
            TransportChoice::Tcp => {
                // SEND_ZC stays at its default: the transport skips it for loopback peers
                // (`TcpConfig::zc_on_loopback`), where the kernel copies the pages anyway.
                let cfg = TcpConfig {
                    single_thread: true,
                    ..TcpConfig::default()
                };
                let listener = TcpUringListener::bind("127.0.0.1:0", cfg.clone())?;
                let addr = listener.local_addr()?;
                let server = thread::spawn(move || {
                    pin_current_thread(1);
                    let mut t = listener.accept(Some(Instant::now() + WAIT_BOUND))?;
                    serve(&mut t)
                });
                let t = TcpUringTransport::connect(addr, cfg)?;
                (Box::new(t), server, None)
            }
            TransportChoice::Rdma => {
                let (t, server) = rdma::open_pair(serve)?;
                (t, server, None)
            }
        };
        pin_current_thread(0);
        Ok(Self {
            client,
            server,
            socket_dir,
        })
    }

    /// Drops the client end (the peer sees it hang up) and joins the serving thread.
    pub fn finish(self) -> Result<R, BenchError> {
        drop(self.client);
        let joined = self.server.join();
        drop(self.socket_dir);
        match joined {
            Ok(result) => result,
            Err(_) => Err(BenchError::Setup("serving thread panicked".into())),
        }
    }
}

/// What the bench needs of a client transport beyond [`Transport`]: arena slabs on shm.
pub trait ClientTransport: Transport {
    /// Allocates an arena slab, if this transport has an arena.
    fn alloc_slab(&mut self, len: usize) -> Result<Option<Slab>, TransportError>;
    /// Writable bytes of a slab this side allocated.
    fn slab_mut(&mut self, slab: Slab) -> Result<&mut [u8], TransportError>;
}

impl ClientTransport for ShmTransport {
    fn alloc_slab(&mut self, len: usize) -> Result<Option<Slab>, TransportError> {
        ShmTransport::alloc_slab(self, len).map(Some)
    }
    fn slab_mut(&mut self, slab: Slab) -> Result<&mut [u8], TransportError> {
        ShmTransport::slab_mut(self, slab)
    }
}

impl ClientTransport for TcpUringTransport {
    fn alloc_slab(&mut self, _len: usize) -> Result<Option<Slab>, TransportError> {
        Ok(None)
    }
    fn slab_mut(&mut self, _slab: Slab) -> Result<&mut [u8], TransportError> {
        Err(TransportError::InvalidConfig("tcp has no arena"))
    }
}

/// What the serving loop needs of a server transport: arena reads on shm.
pub trait ServerTransport: Transport {
    /// Bytes of an arena slab the client named, validated against the arena bounds.
    fn arena_bytes(&self, slab: Slab) -> Result<&[u8], TransportError>;
}

impl ServerTransport for ShmTransport {
    fn arena_bytes(&self, slab: Slab) -> Result<&[u8], TransportError> {
        self.slab(slab)
    }
}

impl ServerTransport for TcpUringTransport {
    fn arena_bytes(&self, _slab: Slab) -> Result<&[u8], TransportError> {
        Err(TransportError::InvalidConfig("tcp has no arena"))
    }
}

/// A connected client end and the serving thread behind it.
type OpenedPair<R> = (Box<dyn ClientTransport>, JoinHandle<Result<R, BenchError>>);

/// The RDMA end of [`TransportPair::open`], present only in builds with `--features rdma`.
#[cfg(feature = "rdma")]
mod rdma {
    use super::*;
    use rgpu_dataplane::rdma::{RdmaConfig, RdmaListener, RdmaTransport};

    /// The device and GID index the environment names (as `scripts/rdma-vm-test` sets them).
    fn config() -> RdmaConfig {
        RdmaConfig {
            device: std::env::var("RGPU_RDMA_DEV").ok(),
            gid_index: std::env::var("RGPU_RDMA_GID_INDEX")
                .ok()
                .and_then(|v| v.parse().ok()),
            ..RdmaConfig::default()
        }
    }

    /// Listens on loopback, starts the serving thread and connects the client end.
    pub(super) fn open_pair<R, F>(serve: F) -> Result<OpenedPair<R>, BenchError>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn ServerTransport) -> Result<R, BenchError> + Send + 'static,
    {
        let listener = RdmaListener::bind("127.0.0.1:0", config())?;
        let addr = listener.local_addr()?;
        let server = thread::spawn(move || {
            pin_current_thread(1);
            let mut t = listener.accept(Some(Instant::now() + WAIT_BOUND))?;
            serve(&mut t)
        });
        let t = RdmaTransport::connect(addr, config())?;
        Ok((Box::new(t), server))
    }

    impl ClientTransport for RdmaTransport {
        fn alloc_slab(&mut self, _len: usize) -> Result<Option<Slab>, TransportError> {
            Ok(None)
        }
        fn slab_mut(&mut self, _slab: Slab) -> Result<&mut [u8], TransportError> {
            Err(TransportError::InvalidConfig("rdma has no arena"))
        }
    }

    impl ServerTransport for RdmaTransport {
        fn arena_bytes(&self, _slab: Slab) -> Result<&[u8], TransportError> {
            Err(TransportError::InvalidConfig("rdma has no arena"))
        }
    }
}

/// Stand-in for builds without `--features rdma`: choosing rdma is a setup error.
#[cfg(not(feature = "rdma"))]
mod rdma {
    use super::*;

    /// Always fails: this bench was built without the RDMA transport.
    pub(super) fn open_pair<R, F>(_serve: F) -> Result<OpenedPair<R>, BenchError> {
        Err(BenchError::Setup(
            "this bench was built without `--features rdma`".into(),
        ))
    }
}

/// A directory removed on drop (holds the shm listener's socket).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Result<TempDir, BenchError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rgpu-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(BenchError::io("create socket dir"))?;
    Ok(TempDir(dir))
}

impl Link {
    /// Connects a client over `choice`, with a serving thread pinned to core 1.
    pub fn open(choice: TransportChoice, tuning: LinkTuning) -> Result<Self, BenchError> {
        let framing = Framing::Stream;
        let server_cfg = ServerConfig {
            token: BENCH_TOKEN,
            framing,
            window_calls: tuning.window_calls,
            window_bytes: tuning.window_bytes,
            credit_return_calls: tuning.credit_return_calls,
            max_batch_bytes: tuning.batch_bytes,
            ..ServerConfig::default()
        };
        let client_cfg = ClientConfig {
            token: BENCH_TOKEN,
            framing,
            max_batch_calls: tuning.batch_calls,
            max_batch_bytes: tuning.batch_bytes,
            ..ClientConfig::default()
        };
        let pair = TransportPair::open(choice, tuning, move |t| {
            serve(t, Server::new(server_cfg, now()))
        })?;
        let mut link = Self {
            client: Client::new(client_cfg, now()),
            pair,
            out: Vec::with_capacity(1 << 20),
        };
        link.handshake()?;
        Ok(link)
    }

    fn handshake(&mut self) -> Result<(), BenchError> {
        self.transmit()?;
        let deadline = Instant::now() + WAIT_BOUND;
        let mut done = false;
        while !done {
            self.receive(deadline, |ev| {
                done |= matches!(ev, ClientEvent::HandshakeDone { .. })
            })?;
        }
        Ok(())
    }

    /// Sends every batch the client has ready.
    pub fn transmit(&mut self) -> Result<(), BenchError> {
        while let Some(batch) = self.client.peek_transmit() {
            self.pair.client.send(batch)?;
            self.client.advance_transmit();
        }
        Ok(())
    }

    /// Waits for input once (bounded) and feeds it to the client.
    pub fn receive<F>(&mut self, deadline: Instant, mut on_event: F) -> Result<(), BenchError>
    where
        F: FnMut(&ClientEvent<'_>),
    {
        let client = &mut self.client;
        let mut failed = None;
        self.pair.client.recv(Some(deadline), &mut |bytes| {
            if failed.is_some() {
                return;
            }
            if let Err(e) = client.handle_input(now(), bytes, |ev| on_event(&ev)) {
                failed = Some(e);
            }
        })?;
        match failed {
            Some(e) => Err(BenchError::Protocol(e.to_string())),
            None => Ok(()),
        }
    }

    /// Sends the ready batches and waits for the reply to `id`, in as few system calls as the
    /// transport allows (one `io_uring_enter` for tcp: the send and the wait go in together).
    pub fn round_trip(&mut self, id: CallId) -> Result<(), BenchError> {
        let deadline = Instant::now() + WAIT_BOUND;
        let mut answered = false;
        let mut outcome: Result<(), BenchError> = Ok(());
        // Everything ready goes out as one doorbell: the open async batch and the sync call.
        self.out.clear();
        while self.client.poll_transmit(&mut self.out).is_some() {}
        assert!(
            !self.out.is_empty(),
            "a submitted sync call leaves a batch to send"
        );
        let mut first = true;
        while !answered {
            let client = &mut self.client;
            let mut failed = None;
            let mut visit = |bytes: &[u8]| {
                if failed.is_some() {
                    return;
                }
                let r = client.handle_input(now(), bytes, |ev| {
                    on_reply(&ev, id, &mut answered, &mut outcome);
                });
                if let Err(e) = r {
                    failed = Some(e);
                }
            };
            if std::mem::take(&mut first) {
                self.pair
                    .client
                    .send_then_recv(&self.out, Some(deadline), &mut visit)?;
            } else {
                self.pair.client.recv(Some(deadline), &mut visit)?;
            }
            if let Some(e) = failed {
                return Err(BenchError::Protocol(e.to_string()));
            }
        }
        outcome
    }

    /// Like [`Link::round_trip`] for a call submitted with a trailing payload: each ready batch
    /// goes out, and the one ending in the trailing frame goes out together with `payload` as one
    /// vectored send `[batch, payload]` (one `SENDMSG`, zero-copy where enabled), then the reply
    /// to `id` is awaited.
    pub fn round_trip_with_trailer(
        &mut self,
        id: CallId,
        payload: &[u8],
    ) -> Result<(), BenchError> {
        let mut trailer_sent = false;
        while let Some(batch) = self.client.peek_transmit() {
            match self.client.peek_trailer() {
                Some(owed) => {
                    if owed.id != id || owed.len != payload.len() as u64 {
                        return Err(BenchError::Mismatch(format!(
                            "client owes {owed:?}, caller has {} bytes for {id:?}",
                            payload.len()
                        )));
                    }
                    self.pair
                        .client
                        .send_vectored(&[IoSlice::new(batch), IoSlice::new(payload)])?;
                    self.client.advance_transmit();
                    self.client
                        .trailer_sent(owed.len)
                        .map_err(|e| BenchError::Protocol(e.to_string()))?;
                    trailer_sent = true;
                }
                None => {
                    self.pair.client.send(batch)?;
                    self.client.advance_transmit();
                }
            }
        }
        if !trailer_sent {
            return Err(BenchError::Mismatch(format!(
                "no trailer was owed for {id:?}"
            )));
        }
        let deadline = Instant::now() + WAIT_BOUND;
        let mut answered = false;
        let mut outcome: Result<(), BenchError> = Ok(());
        while !answered {
            self.receive(deadline, |ev| on_reply(ev, id, &mut answered, &mut outcome))?;
        }
        outcome
    }

    /// Closes the connection and returns what the serving thread counted.
    pub fn finish(self) -> Result<ServeStats, BenchError> {
        self.pair.finish()
    }
}

fn on_reply(
    ev: &ClientEvent<'_>,
    id: CallId,
    answered: &mut bool,
    outcome: &mut Result<(), BenchError>,
) {
    match ev {
        ClientEvent::Reply { id: got, result } if *got == id => {
            *answered = true;
            if let Err(e) = result {
                *outcome = Err(BenchError::Protocol(format!("call failed: {e}")));
            }
        }
        ClientEvent::Aborted { id: got, error } if *got == id => {
            *answered = true;
            *outcome = Err(BenchError::Protocol(format!("call aborted: {error}")));
        }
        _ => {}
    }
}

/// A bulk copy the serving loop does after the receive that carried its call, because the arena
/// belongs to the transport that is busy receiving.
struct PendingBulk {
    id: CallId,
    slab: Slab,
}

/// A bulk copy arriving as a trailer: where its bytes land in the "device" buffer.
#[derive(Debug, Clone, Copy)]
struct Landing {
    id: CallId,
    len: usize,
}

/// The serving loop: the stand-in for the GPU worker.
fn serve(t: &mut dyn ServerTransport, mut server: Server) -> Result<ServeStats, BenchError> {
    let mut stats = ServeStats::default();
    let mut device: Vec<u8> = Vec::new();
    let mut pending: Vec<PendingBulk> = Vec::new();
    let mut landing: Option<Landing> = None;
    loop {
        let mut failed: Option<BenchError> = None;
        let received = t.recv(Some(Instant::now() + WAIT_BOUND), &mut |bytes| {
            if failed.is_some() {
                return;
            }
            let r = server.handle_input(now(), bytes, |ev, resp| {
                let r = match ev {
                    ServerEvent::Call { id, call, .. } => {
                        stats.calls += 1;
                        match call {
                            Call::Nop(_) => resp.reply(id, Ok(Reply::NopReply(NopReply {}))),
                            Call::AsyncNop(_) => resp.complete_async(id, Ok(())),
                            Call::MemcpyHtoD(m) => match m.src {
                                Payload::Inline(bytes) => {
                                    copy_to_device(&mut device, bytes, &mut stats);
                                    resp.reply(id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
                                }
                                Payload::Arena { offset, len } => {
                                    pending.push(PendingBulk {
                                        id,
                                        slab: Slab { offset, len },
                                    });
                                    Ok(())
                                }
                                Payload::Trailing { len } => {
                                    // The protocol bounds len by MAX_TRAILER_BYTES (1 GiB).
                                    let len = len as usize;
                                    if device.len() < len {
                                        device.resize(len, 0);
                                    }
                                    landing = Some(Landing { id, len });
                                    Ok(())
                                }
                            },
                            _ => resp.reply(id, Err(CudaError::INVALID_VALUE)),
                        }
                    }
                    // Trailer bytes that came with the frame's chunk: copied into place; the rest
                    // is received straight into the device buffer after this receive.
                    ServerEvent::Trailer {
                        id,
                        bytes,
                        offset,
                        done,
                    } => match landing {
                        Some(l) if l.id == id => {
                            let at = offset as usize;
                            device[at..at + bytes.len()].copy_from_slice(bytes);
                            if done {
                                landing = None;
                                landed(&device[..l.len], &mut stats);
                                resp.reply(id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
                            } else {
                                Ok(())
                            }
                        }
                        _ => Ok(()),
                    },
                    _ => Ok(()),
                };
                if let Err(e) = r {
                    failed = Some(BenchError::Protocol(e.to_string()));
                }
            });
            if let Err(e) = r {
                failed = Some(BenchError::Protocol(e.to_string()));
            }
        });
        match received {
            Ok(_) => {}
            Err(TransportError::PeerGone { .. } | TransportError::Closed { .. }) => {
                stats.device_crc = crc32fast::hash(&device);
                return Ok(stats);
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((id, left)) = server.trailer_remaining() {
            let l = landing
                .filter(|l| l.id == id)
                .ok_or_else(|| BenchError::Protocol(format!("trailer of unknown call {id:?}")))?;
            // left <= l.len, both bounded by the device buffer's length.
            let at = l.len - left as usize;
            t.recv_exact_into(&mut device[at..l.len], Some(Instant::now() + WAIT_BOUND))?;
            server
                .trailer_received(now(), left)
                .map_err(|e| BenchError::Protocol(e.to_string()))?;
            landing = None;
            landed(&device[..l.len], &mut stats);
            server
                .reply(id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
                .map_err(|e| BenchError::Protocol(e.to_string()))?;
        }
        for bulk in pending.drain(..) {
            let bytes = t.arena_bytes(bulk.slab)?;
            copy_to_device(&mut device, bytes, &mut stats);
            server
                .reply(bulk.id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
                .map_err(|e| BenchError::Protocol(e.to_string()))?;
        }
        while let Some(batch) = server.peek_transmit() {
            t.send(batch)?;
            server.advance_transmit();
        }
    }
}

fn copy_to_device(device: &mut Vec<u8>, bytes: &[u8], stats: &mut ServeStats) {
    if device.len() < bytes.len() {
        device.resize(bytes.len(), 0);
    }
    device[..bytes.len()].copy_from_slice(bytes);
    landed(&device[..bytes.len()], stats);
}

/// Counts a bulk copy that finished landing in the "device" buffer.
fn landed(bytes: &[u8], stats: &mut ServeStats) {
    stats.bulk_bytes += bytes.len() as u64;
}
