//! One protocol connection to the server: a transport plus the sans-IO `rgpu_proto::Client`,
//! driven from the calling thread. Async calls ([`Conn::submit_async`]) are queued and batched
//! without waiting, bounded by the server's credit window; a sync call ([`Conn::sync_on`]) goes
//! out after them and waits for its reply, which carries any deferred error. A background
//! thread ([`start_flusher`]) sends a queued batch about one linger after its first call when
//! the program makes no further call.
//!
//! Every wait is bounded by [`REPLY_TIMEOUT_MS`]; every failure is a typed [`ConnError`] that
//! the entry points turn into a `CUresult`.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::ShmTransport;
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{
    Call, CallClass, CallId, Client, ClientConfig, ClientEvent, CudaError, Reply, StreamHandle,
    SubmitError, Timestamp,
};

use super::config::{ServerAddr, ServerConfig};

// Pipelined sync calls, trailers and arena access for the memory paths.
mod pipeline;
// The background flusher thread (bounded latency for queued async calls).
mod flusher;
// An in-process fake server for this module's tests.
#[cfg(test)]
mod fake_server;

pub use flusher::{start_flusher, FLUSHER_IDLE_PARK_MS, FLUSHER_THREAD_NAME};

/// Bound on the handshake, in milliseconds.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Bound on waiting for one sync reply, in milliseconds.
pub const REPLY_TIMEOUT_MS: u64 = 30_000;

/// Why a remote call did not produce a CUDA answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// Connecting the transport failed.
    #[error("connect: {0}")]
    Connect(TransportError),
    /// The server did not accept the handshake.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The client refused to submit the call.
    #[error("submit {call}: {reason}")]
    Submit {
        /// The call's name.
        call: &'static str,
        /// The protocol's reason.
        reason: String,
    },
    /// Sending or receiving failed.
    #[error("{call}: transport: {source}")]
    Transport {
        /// The call's name.
        call: &'static str,
        /// The transport error.
        source: TransportError,
    },
    /// The connection closed before the reply came.
    #[error("{call}: connection lost: {reason}")]
    Lost {
        /// The call's name.
        call: &'static str,
        /// Why.
        reason: String,
    },
    /// No reply within [`REPLY_TIMEOUT_MS`].
    #[error("{call}: no reply within {REPLY_TIMEOUT_MS} ms")]
    Timeout {
        /// The call's name.
        call: &'static str,
    },
    /// The server answered with a reply of the wrong kind.
    #[error("{call}: unexpected reply (code {reply_code:#06x})")]
    UnexpectedReply {
        /// The call's name.
        call: &'static str,
        /// The reply's wire code.
        reply_code: u16,
    },
}

/// A remote call's outcome: the device's answer, or a connection failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The device answered with a CUDA error.
    #[error(transparent)]
    Cuda(#[from] CudaError),
    /// No answer.
    #[error(transparent)]
    Conn(#[from] ConnError),
}

enum Link {
    Shm(ShmTransport),
    Tcp(TcpUringTransport),
    /// RDMA verbs (feature `rdma`): the token is proven on the control connection first.
    #[cfg(feature = "rdma")]
    Rdma(rgpu_dataplane::rdma::RdmaTransport),
}

impl Link {
    fn get(&mut self) -> &mut dyn Transport {
        match self {
            Link::Shm(t) => t,
            Link::Tcp(t) => t,
            #[cfg(feature = "rdma")]
            Link::Rdma(t) => t,
        }
    }
}

/// A connected, handshaken protocol client.
pub struct Conn {
    client: Client,
    link: Link,
    epoch: Instant,
    /// Async calls accepted by [`Conn::submit_async`] so far.
    async_count: u64,
    /// The client's linger bound (how long an open batch waits for company).
    linger: Duration,
    /// When the open (unsent) batch got its first async call; shared with the flusher.
    mark: Arc<flusher::FlushMark>,
    /// The flusher thread, once started ([`start_flusher`]).
    flusher: Option<Thread>,
    /// Batches the flusher sent (the program made no call in time); for tests and logs.
    flushes_by_flusher: u64,
    /// Batches handed to the transport so far.
    batches_sent: u64,
}

impl Conn {
    /// Connects to `cfg.addr` and completes the handshake with `cfg.token`.
    pub fn open(cfg: &ServerConfig) -> Result<Self, ConnError> {
        let link = match &cfg.addr {
            ServerAddr::Shm(path) => Link::Shm(
                ShmTransport::connect(path, super::pinned::shm_config())
                    .map_err(ConnError::Connect)?,
            ),
            #[cfg(feature = "rdma")]
            ServerAddr::Rdma(url) => Link::Rdma(super::rdma::connect(url, &cfg.token)?),
            ServerAddr::Tcp(addr) => Link::Tcp(
                TcpUringTransport::connect(addr.as_str(), TcpConfig::default())
                    .map_err(ConnError::Connect)?,
            ),
        };
        let client_cfg = ClientConfig {
            token: cfg.token,
            handshake_timeout_ns: HANDSHAKE_TIMEOUT_MS * 1_000_000,
            ..ClientConfig::default()
        };
        let linger = Duration::from_nanos(client_cfg.linger_ns);
        let mut conn = Self {
            client: Client::new(client_cfg, Timestamp::ZERO),
            link,
            epoch: Instant::now(),
            async_count: 0,
            linger,
            mark: flusher::FlushMark::new(),
            flusher: None,
            flushes_by_flusher: 0,
            batches_sent: 0,
        };
        conn.pump("handshake")?;
        let deadline = Instant::now() + Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        while !conn.client.is_open() {
            if let Some(reason) = conn.client.close_reason() {
                return Err(ConnError::Handshake(reason.to_string()));
            }
            if Instant::now() >= deadline {
                return Err(ConnError::Handshake(format!(
                    "no answer within {HANDSHAKE_TIMEOUT_MS} ms"
                )));
            }
            conn.recv_once("handshake", deadline, &mut |_| {})?;
        }
        Ok(conn)
    }

    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn pump(&mut self, call: &'static str) -> Result<(), ConnError> {
        let t = self.link.get();
        while let Some(batch) = self.client.peek_transmit() {
            // Only inline payloads are sent (no trailers), so a batch is all there is to send.
            debug_assert!(self.client.peek_trailer().is_none());
            t.send_vectored(&[IoSlice::new(batch)])
                .map_err(|source| ConnError::Transport { call, source })?;
            self.client.advance_transmit();
            self.batches_sent += 1;
        }
        Ok(())
    }

    fn recv_once(
        &mut self,
        call: &'static str,
        deadline: Instant,
        on: &mut dyn FnMut(ClientEvent<'_>),
    ) -> Result<(), ConnError> {
        let now = self.now();
        let client = &mut self.client;
        let result = self.link.get().recv(Some(deadline), &mut |bytes| {
            // A protocol error closes the client; the caller sees it through close_reason.
            let _ = client.handle_input(now, bytes, &mut *on);
        });
        match result {
            Ok(_) => Ok(()),
            Err(source) if Instant::now() >= deadline => {
                tracing::debug!(call, %source, "rgpu shim: receive ended at the deadline");
                Err(ConnError::Timeout { call })
            }
            Err(source) => Err(ConnError::Transport { call, source }),
        }
    }

    /// Sends the sync `call` ordered on the legacy default stream and maps its reply with `f`;
    /// `sync_on(call, StreamHandle(0), f)`.
    pub fn sync<R>(
        &mut self,
        call: &Call<'_>,
        f: impl FnOnce(&Reply<'_>) -> Option<R>,
    ) -> Result<R, CallError> {
        self.sync_on(call, StreamHandle(0), f)
    }

    /// Queues the async `call`, ordered on `stream`, without waiting for the device.
    ///
    /// The call joins the open batch; the batch goes out when it is full, when its first call
    /// has lingered past the client's linger bound (checked at each submit, and by the
    /// flusher thread when no submit comes), or ahead of the next sync call (which seals
    /// it). A failure on the device is not reported here: it is the deferred error the next
    /// sync call returns (CUDA's semantics). What is reported here: the context's sticky
    /// error, a refused call (too large, bad field), or a lost connection.
    ///
    /// Unacknowledged async calls are bounded by the server's credit window: when it is spent,
    /// this sends what is queued and waits (at most [`REPLY_TIMEOUT_MS`]) for credit to return.
    pub fn submit_async(&mut self, call: &Call<'_>, stream: StreamHandle) -> Result<(), CallError> {
        let name = call.name();
        debug_assert_eq!(
            call.class(),
            CallClass::Async,
            "{name} is not an async call"
        );
        let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
        loop {
            let now = self.now();
            match self.client.submit_call(now, call, stream) {
                Ok(_) => {
                    self.async_count += 1;
                    break;
                }
                Err(SubmitError::Backpressure { .. }) => self.wait_for_credit(name, deadline)?,
                Err(e) => return Err(submit_error(name, e)),
            }
        }
        // Seal the open batch if its first call has waited past the linger bound, so a long
        // run of async calls reaches the device in bounded time even with no sync call.
        let now = self.now();
        self.client.handle_timeout(now, |_| {});
        self.pump(name)?;
        self.arm_flusher();
        Ok(())
    }

    /// How many async calls [`Conn::submit_async`] accepted so far: a position in the
    /// connection's call order, for tracking which work a synchronization covered.
    #[must_use]
    pub fn async_count(&self) -> u64 {
        self.async_count
    }

    /// The sticky error poisoning the context, as last reported by the server.
    #[must_use]
    pub fn sticky_error(&self) -> Option<CudaError> {
        self.client.sticky_error()
    }

    /// Sends every queued async call now (no waiting for replies).
    pub fn flush(&mut self, call: &'static str) -> Result<(), ConnError> {
        self.client.flush();
        self.pump(call)?;
        self.mark.clear();
        Ok(())
    }

    /// Batches handed to the transport so far (each one doorbell).
    #[must_use]
    pub fn batches_sent(&self) -> u64 {
        self.batches_sent
    }

    /// Batches the flusher thread sent because the program made no call within the linger
    /// bound.
    #[must_use]
    pub fn flushes_by_flusher(&self) -> u64 {
        self.flushes_by_flusher
    }

    /// Mirrors the client's sticky error (if any) for lock-free readers ([`sticky_seen`]).
    /// Called after every receive that may carry a reply.
    fn mirror_sticky(&self) {
        if let Some(e) = self.client.sticky_error() {
            note_sticky(e);
        }
    }

    /// Sends what is queued, then receives until async credit is available again.
    fn wait_for_credit(&mut self, call: &'static str, deadline: Instant) -> Result<(), ConnError> {
        self.flush(call)?;
        while self.client.credit().0 == 0 {
            if let Some(reason) = self.client.close_reason() {
                return Err(ConnError::Lost {
                    call,
                    reason: reason.to_string(),
                });
            }
            if Instant::now() >= deadline {
                return Err(ConnError::Timeout { call });
            }
            self.recv_once(call, deadline, &mut |_| {})?;
        }
        Ok(())
    }

    /// Sends the sync `call` ordered on `stream` (after every async call queued before it) and
    /// maps its reply with `f`. A device error may be the call's own, the deferred error of an
    /// earlier async call, or the context's sticky error.
    pub fn sync_on<R>(
        &mut self,
        call: &Call<'_>,
        stream: StreamHandle,
        f: impl FnOnce(&Reply<'_>) -> Option<R>,
    ) -> Result<R, CallError> {
        let name = call.name();
        let now = self.now();
        let id: CallId = self
            .client
            .submit_call(now, call, stream)
            .map_err(|e| submit_error(name, e))?;
        self.pump(name)?;
        // The sync call sealed the open batch, and everything queued is now sent.
        self.mark.clear();
        let mut f = Some(f);
        let mut out: Option<Result<R, CallError>> = None;
        let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
        while out.is_none() {
            if let Some(reason) = self.client.close_reason() {
                return Err(ConnError::Lost {
                    call: name,
                    reason: reason.to_string(),
                }
                .into());
            }
            if Instant::now() >= deadline {
                return Err(ConnError::Timeout { call: name }.into());
            }
            self.recv_once(name, deadline, &mut |ev| match ev {
                ClientEvent::Reply { id: got, result } if got == id => {
                    out = Some(match result {
                        Ok(reply) => match f.take().and_then(|f| f(&reply)) {
                            Some(r) => Ok(r),
                            None => Err(ConnError::UnexpectedReply {
                                call: name,
                                reply_code: reply.code(),
                            }
                            .into()),
                        },
                        Err(e) => Err(CallError::Cuda(e)),
                    });
                }
                ClientEvent::Aborted { id: got, error } if got == id => {
                    out = Some(Err(ConnError::Lost {
                        call: name,
                        reason: error.to_string(),
                    }
                    .into()));
                }
                _ => {}
            })?;
        }
        self.mirror_sticky();
        out.unwrap_or_else(|| Err(ConnError::Timeout { call: name }.into()))
    }
}

/// The context's sticky error as last seen on the connection (0: none), readable without the
/// connection lock: local answers must return it, and must not wait behind another thread's
/// round trip to learn it. One connection per process, so one value per process.
static STICKY_SEEN: AtomicU32 = AtomicU32::new(0);

/// Serialises the tests that set and reset [`STICKY_SEEN`] (one value per process).
#[cfg(test)]
static STICKY_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn note_sticky(e: CudaError) {
    debug_assert!(e.is_sticky());
    STICKY_SEEN.store(e.0, Ordering::Relaxed);
}

/// The sticky error poisoning the context, as last seen by a call on the connection; no lock.
#[must_use]
pub fn sticky_seen() -> Option<CudaError> {
    CudaError::from_code(STICKY_SEEN.load(Ordering::Relaxed))
}

/// Maps a refused submission: the sticky error is the device's answer (every call in a
/// poisoned context returns it); anything else is a connection-level refusal.
fn submit_error(call: &'static str, e: SubmitError) -> CallError {
    match e {
        SubmitError::Sticky(cuda) => {
            note_sticky(cuda);
            CallError::Cuda(cuda)
        }
        SubmitError::Closed(reason) => ConnError::Lost {
            call,
            reason: reason.to_string(),
        }
        .into(),
        other => ConnError::Submit {
            call,
            reason: other.to_string(),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_mirror_and_submit_refusals() {
        let _serial = STICKY_TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let illegal = CudaError(700);
        assert!(illegal.is_sticky());
        // A sticky refusal is the device's answer, and is mirrored for lock-free readers.
        assert!(matches!(
            submit_error("t", SubmitError::Sticky(illegal)),
            CallError::Cuda(e) if e == illegal
        ));
        assert_eq!(sticky_seen(), Some(illegal));
        STICKY_SEEN.store(0, Ordering::Relaxed);
        assert_eq!(sticky_seen(), None);
        // Anything else is a connection-level refusal.
        assert!(matches!(
            submit_error("t", SubmitError::NotReady),
            CallError::Conn(ConnError::Submit { .. })
        ));
    }
}
