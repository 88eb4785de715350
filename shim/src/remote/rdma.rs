//! `RGPU_SERVER=rdma://host:port[?device=NAME&gid_index=N&port=N]`: connecting the RDMA verbs
//! transport (feature `rdma`).
//!
//! Exists so the shim's RDMA settings live in one place: the control connection proves the same
//! token the protocol handshake proves again over the queue pair, so a wrong token costs the
//! server no queue pair or registered memory. `libibverbs.so.1` is loaded only here, at
//! connect time; a host without rdma-core gets a typed error and `CUDA_ERROR_NO_DEVICE`.

use rgpu_dataplane::rdma::{ControlToken, RdmaConfig, RdmaTransport, RdmaUrl};

use super::config::TOKEN_BYTES;
use super::conn::{ConnError, HANDSHAKE_TIMEOUT_MS};

/// Connects to the server's `rdma://` control port and sets up the queue pair.
///
/// # Errors
/// [`ConnError::Connect`] with the transport's typed error.
pub fn connect(url: &RdmaUrl, token: &[u8; TOKEN_BYTES]) -> Result<RdmaTransport, ConnError> {
    let mut cfg = RdmaConfig {
        token: ControlToken(*token),
        connect_timeout_ms: HANDSHAKE_TIMEOUT_MS,
        // cuMemHostAlloc's pool: the worker reads and writes it with RDMA (pinned.rs).
        host_region_bytes: super::pinned::pinned_bytes(),
        ..RdmaConfig::default()
    };
    url.apply(&mut cfg);
    let t = RdmaTransport::connect(url.addr.as_str(), cfg).map_err(ConnError::Connect)?;
    match t.host_region_len() {
        0 => tracing::warn!(
            "rgpu shim: no pinned host region over rdma (registration refused: see the memlock \
             limit; or no RDMA READ on the queue pairs); pinned copies travel through the \
             transport"
        ),
        bytes => tracing::info!(bytes, "rgpu shim: rdma pinned host region registered"),
    }
    Ok(t)
}
