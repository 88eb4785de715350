//! rgpu's `libnvidia-ml.so.1`: the NVML calls PyTorch and GPU monitoring tools make, answered
//! for the remote device a program got through rgpu's client shim.
//!
//! NVML normally talks to the local NVIDIA kernel driver; with rgpu there is none. This
//! library loads `libcuda.so.1` (rgpu's shim, when run by `rgpu run`), checks that it is the
//! shim, and asks it: device count, name, UUID, PCI location, compute capability and memory
//! (total = the client's quota, free/used within it). It never opens a connection of its own,
//! so NVML and CUDA in one process share one worker and one grant. What rgpu cannot report
//! answers `NVML_ERROR_NOT_SUPPORTED` ([`unsupported`]). See `docs/shim.md`, section "NVML".

pub mod api;
pub mod driver;
pub mod guard;
pub mod out;
pub mod state;
pub mod types;
pub mod unsupported;
