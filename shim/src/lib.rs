//! rgpu's client shim: a drop-in `libcuda.so.1`.
//!
//! NVIDIA's CUDA runtime (also when linked statically, as in PyTorch wheels) finds its driver by
//! loading `libcuda.so.1` and then asks `cuGetProcAddress` for every entry point and
//! `cuGetExportTable` for private tables. This crate answers both, so the runtime accepts it as
//! its driver. With `RGPU_SERVER` set, `cuInit` connects to an rgpu server; device queries and
//! contexts are then answered locally, memory calls remotely. Every entry point not implemented
//! yet returns `CUDA_ERROR_NOT_SUPPORTED` and says so once (see `docs/shim.md`).

pub mod context;
pub mod cuda_types;
mod driver_api;
pub mod driver_log;
pub mod entry;
pub mod export_tables;
pub mod ffi_guard;
mod host_mem;
pub mod kernel;
pub mod logging;
pub mod nvml_bridge;
pub mod proc_table;
pub mod remote;
mod stubs;

/// Marks this library as rgpu's shim, not an NVIDIA driver. The GPU worker's `cuda` backend looks
/// this symbol up in whatever `libcuda.so.1` it loaded and refuses to run on top of the shim
/// (a worker forwarding to itself), whatever the environment scrubbing missed.
#[no_mangle]
pub static rgpu_shim_marker: u8 = 1;
