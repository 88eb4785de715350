//! RDMA verbs transport (RoCE, InfiniBand, VMware PVRDMA), behind the `rdma` feature.
//!
//! Exists so a client and its GPU worker on different hosts can exchange the
//! protocol's byte batches over Reliable Connected queue pairs. libibverbs is
//! loaded at run time (`dlopen`), so binaries start on hosts without
//! rdma-core and only fail (typed: `TransportError::RdmaUnavailable`) when
//! this transport is actually used. Design notes: `docs/rdma.md`.

mod config;
mod handshake;
mod stage;
mod sys;
mod transport;
mod url;
mod verbs;

pub use config::{
    ControlToken, Fault, RdmaConfig, BATCH_BYTES_MAX, HOST_REGION_BYTES_MAX, HOST_STAGE_BYTES_MIN,
    INLINE_BYTES_MAX, RING_BYTES_MAX, SLOT_BYTES_MAX, SLOT_COUNT_MAX, SQ_DEPTH_MAX,
    STAGE_BYTES_MAX,
};
pub use transport::{Authenticated, RdmaListener, RdmaTransport};
pub use url::{RdmaUrl, RdmaUrlError, URL_BYTES_MAX};
pub use verbs::DeviceCaps;

/// Checks that libibverbs can be loaded here (no device needed).
pub fn available() -> crate::Result<()> {
    verbs::load()
}
