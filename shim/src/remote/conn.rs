//! One protocol connection to the server: a transport plus the sans-IO `rgpu_proto::Client`,
//! driven synchronously (submit one call, pump, wait for its reply).
//!
//! Every wait is bounded by [`REPLY_TIMEOUT_MS`]; every failure is a typed [`ConnError`] that
//! the entry points turn into a `CUresult`.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::{ShmConfig, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{
    Call, CallId, Client, ClientConfig, ClientEvent, CudaError, Reply, StreamHandle, Timestamp,
};

use super::config::{ServerAddr, ServerConfig};

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
}

impl Link {
    fn get(&mut self) -> &mut dyn Transport {
        match self {
            Link::Shm(t) => t,
            Link::Tcp(t) => t,
        }
    }
}

/// A connected, handshaken protocol client.
pub struct Conn {
    client: Client,
    link: Link,
    epoch: Instant,
}

impl Conn {
    /// Connects to `cfg.addr` and completes the handshake with `cfg.token`.
    pub fn open(cfg: &ServerConfig) -> Result<Self, ConnError> {
        let link = match &cfg.addr {
            ServerAddr::Shm(path) => Link::Shm(
                ShmTransport::connect(path, ShmConfig::default()).map_err(ConnError::Connect)?,
            ),
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
        let mut conn = Self {
            client: Client::new(client_cfg, Timestamp::ZERO),
            link,
            epoch: Instant::now(),
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

    /// Sends `call` (ordered on the default stream) and maps its reply with `f`.
    pub fn sync<R>(
        &mut self,
        call: &Call<'_>,
        f: impl FnOnce(&Reply<'_>) -> Option<R>,
    ) -> Result<R, CallError> {
        let name = call.name();
        let now = self.now();
        let id: CallId = self
            .client
            .submit_call(now, call, StreamHandle(0))
            .map_err(|e| ConnError::Submit {
                call: name,
                reason: e.to_string(),
            })?;
        self.pump(name)?;
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
        out.unwrap_or_else(|| Err(ConnError::Timeout { call: name }.into()))
    }
}
