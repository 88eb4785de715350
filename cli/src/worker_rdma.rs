//! The worker's side of an `rdma://` connection. Exists because a queue pair
//! cannot move between processes: the daemon hands the worker only the
//! accepted TCP control connection, and the worker completes the transport
//! here, in two steps it can tell apart: the token check (no verbs library
//! loaded, no device opened before it passes) and then device, PD, memory
//! regions and the QP, all owned by this process and freed when it exits.
//! Compiled only with the `rdma` cargo feature (without it the worker
//! refuses `rdma` connections with an error naming the feature).

use std::os::fd::OwnedFd;

use crate::args::WorkerArgs;

/// Why the worker could not complete an `rdma://` connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client did not prove the token on the control connection (wrong token, nothing
    /// sent before the deadline, or gone): no RDMA resource was created.
    #[error("{0}")]
    Unauthenticated(#[source] rgpu_dataplane::TransportError),
    /// The token was right but the RDMA set-up failed (device, memory, QP, peer hello).
    #[error("{0}")]
    SetUp(#[source] rgpu_dataplane::TransportError),
}

/// Checks the client's token on the inherited control connection `fd`, then
/// sets up the RDMA transport on the port the daemon's listen URL named.
/// `token` is the server's client token (the same secret the protocol
/// handshake checks again over the queue pair).
///
/// # Errors
/// [`AcceptError`].
pub fn accept(
    args: &WorkerArgs,
    fd: OwnedFd,
    token: &[u8; 32],
) -> Result<rgpu_dataplane::rdma::RdmaTransport, AcceptError> {
    use rgpu_dataplane::rdma::{ControlToken, RdmaConfig, RdmaTransport};
    let mut cfg = RdmaConfig {
        device: args.rdma_device.clone(),
        gid_index: args.rdma_gid_index,
        token: ControlToken(*token),
        // The client's whole set-up (token, hello, ready) shares the protocol handshake's bound.
        connect_timeout_ms: args.handshake_timeout_ms.max(1),
        ..RdmaConfig::default()
    };
    if let Some(p) = args.rdma_port {
        cfg.port = p;
    }
    let authed = RdmaTransport::authenticate_stream(std::net::TcpStream::from(fd), cfg)
        .map_err(AcceptError::Unauthenticated)?;
    tracing::debug!(
        session = args.session_id,
        "rgpu worker: rdma client proved the token; opening the device"
    );
    authed.set_up().map_err(AcceptError::SetUp)
}
