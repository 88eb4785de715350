//! The `rgpu` command: the GPU server daemon (`rgpu server`), its
//! per-client worker process (the hidden `rgpu worker`, re-executed from
//! `/proc/self/exe` for every accepted connection), `rgpu status` and
//! `rgpu run` (a program started with the client shim set up).
//!
//! See `docs/worker.md`, section "Server and process model", for the design:
//! one worker process per client connection, auth before any backend
//! exists, memory admission over a pool of devices, reaping and draining.

pub mod admit;
pub mod args;
pub mod config;
pub mod cudapool;
pub mod daemon;
pub mod envscrub;
pub mod inherit;
pub mod lazy;
pub mod listen;
pub mod pool;
pub mod report;
pub mod run;
pub mod shareboard;
pub mod spawn;
pub mod state;
pub mod status;
pub mod token;
pub mod web;
pub mod worker;
#[cfg(feature = "rdma")]
pub mod worker_rdma;
