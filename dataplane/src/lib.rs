//! rgpu data-plane transports.
//!
//! The protocol layer (`rgpu-proto`) frames calls into byte batches; this crate
//! moves those bytes between the client shim and its GPU worker through a
//! [`Transport`]: shared-memory rings ([`shm`]) on one host, TCP on io_uring
//! ([`tcp`]) across hosts, and RDMA verbs (`rdma`, behind the `rdma` cargo
//! feature) across hosts with RDMA NICs. Transports never parse the protocol.

mod deadline;
mod error;
#[cfg(feature = "rdma")]
pub mod rdma;
mod readiness;
pub mod shm;
pub mod tcp;
mod transport;

pub use error::{Result, TransportError, UringUnavailableCause};
pub use transport::{Transport, TransportKind};
