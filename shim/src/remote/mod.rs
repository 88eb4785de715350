//! The shim's link to its GPU server: configuration, one protocol connection, and the
//! process-wide session holding what the server told us about the device.
//!
//! One connection per process, behind a mutex: every remote call takes the lock. A sync call
//! is sent after the async calls queued before it and waits for its reply; an async call is
//! only queued and batched (see `docs/shim.md`, "Call classes"). Stream and event handles are
//! allocated here ([`handles`]), not by the server. A per-thread / MPSC submission design is
//! not built.

pub mod config;
pub mod conn;
pub mod copy;
pub mod fork;
pub mod handles;
pub mod pinned;
pub mod ranges;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod reserve;
pub mod session;
