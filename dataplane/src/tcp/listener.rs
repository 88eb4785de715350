//! `TcpUringListener`: accepting connections that become `TcpUringTransport`s.
//!
//! Exists so the server side gets the same socket options and ring set-up as
//! the client, and so waiting for a client is bounded like every other wait.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Instant;

use super::config::TcpConfig;
use super::transport::TcpUringTransport;
use crate::error::{Result, TransportError};
use crate::{deadline, readiness};

/// A listening TCP socket; [`accept`](Self::accept) yields transports.
#[derive(Debug)]
pub struct TcpUringListener {
    listener: TcpListener,
    cfg: TcpConfig,
}

impl TcpUringListener {
    /// Binds `addr` (use port 0 for an ephemeral port); connections get `cfg`.
    pub fn bind(addr: impl ToSocketAddrs, cfg: TcpConfig) -> Result<Self> {
        cfg.validate()?;
        let listener = TcpListener::bind(addr).map_err(|e| TransportError::io("bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("listener nonblocking", e))?;
        Ok(Self { listener, cfg })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| TransportError::io("getsockname", e))
    }

    /// Waits (bounded; `None` means the config's default timeout) for one
    /// connection and turns it into a transport with `TCP_NODELAY` set.
    pub fn accept(&self, deadline: Option<Instant>) -> Result<TcpUringTransport> {
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let (stream, peer) = readiness::accept_until(&self.listener, deadline, "accept", || {
            self.listener.accept()
        })?;
        tracing::debug!(%peer, "accepted tcp connection");
        TcpUringTransport::from_stream(stream, self.cfg.clone())
    }
}
