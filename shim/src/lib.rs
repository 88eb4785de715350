//! rgpu's client shim: a drop-in `libcuda.so.1`.
//!
//! NVIDIA's CUDA runtime (also when linked statically, as in PyTorch wheels) finds its driver by
//! loading `libcuda.so.1` and then asks `cuGetProcAddress` for every entry point and
//! `cuGetExportTable` for private tables. This crate answers both, so the runtime accepts it as
//! its driver. This first slice answers locally: version, initialisation and "no device" while no
//! server is configured; every other entry point returns `CUDA_ERROR_NOT_SUPPORTED` and says so
//! once. Remote execution over the transports is the next slice (see `docs/shim.md`).

pub mod cuda_types;
mod driver_api;
pub mod export_tables;
pub mod ffi_guard;
pub mod logging;
pub mod proc_table;
pub mod server;
mod stubs;
