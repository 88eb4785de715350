//! The shim's link to its GPU server: configuration, one protocol connection, and the
//! process-wide session holding what the server told us about the device.
//!
//! One connection per process, behind a mutex: every remote call takes the lock, sends one
//! sync call and waits for its reply. The per-thread / MPSC submission design with batched
//! async calls is a later slice (see `docs/shim.md`).

pub mod config;
pub mod conn;
pub mod session;
