//! rgpu GPU worker core: what executes a client's CUDA calls.
//!
//! One worker serves one client process. This crate is the library the
//! worker (and the `rgpu server` daemon that spawns it) is built from:
//!
//! - [`Backend`]: the driver-API-shaped operations the protocol's calls
//!   need, one value per CUDA context (per session). Implemented here by
//!   [`emulated::EmulatedBackend`] (host RAM, built-in kernels, for CI);
//!   [`cuda::CudaBackend`] (a real GPU through the driver API, cargo
//!   feature `cuda`, on by default: it loads `libcuda.so.1` at run time).
//! - [`session`]: the per-connection executor mapping each decoded
//!   `rgpu_proto::Call` to backend operations and replies, and
//!   [`run_session`], the driver loop over any transport.
//! - [`share`]: the compute share of partial GPUs (a launch token bucket
//!   per worker over a per-device board of atomics).
//!
//! See `docs/worker.md` for the emulated device's model and honest limits,
//! the test module format, quotas and the call mapping.

pub mod backend;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emulated;
pub mod pitch;
pub mod session;
pub mod share;

pub use backend::{
    Backend, DeviceGrant, DeviceRequest, Exec, FunctionInfo, LaunchDims, MemoryInfo, Released,
};
pub use emulated::{EmulatedBackend, EmulatedConfig};
pub use session::{
    run_session, ArenaAccess, Executor, HostSpan, NoArena, SessionConfig, SessionError,
    SessionStats, SessionSummary, SessionTransport,
};
