//! Sizes the daemon's pool from the real GPUs when `--backend cuda` is
//! chosen. Exists so the pool admits against `cuDeviceGetCount` devices of
//! their `cuDeviceTotalMem`, and so a host with no usable driver stops the
//! server at start with the cause (e.g. "libcuda.so.1 not found: no NVIDIA
//! driver on this host") instead of failing each client later.

use rgpu_gpu_worker::cuda::{probe_devices, CudaBackendError};

use crate::config::PoolConfig;

/// Sets `pool.devices` to the driver's device count and
/// `pool.device_memory_bytes` to the smallest device's memory (the pool
/// models equal devices).
///
/// # Errors
/// The driver cannot be loaded or initialised, or has no device.
pub fn size_pool(pool: &mut PoolConfig) -> Result<(), CudaBackendError> {
    let devices = probe_devices()?;
    let smallest = devices.iter().map(|d| d.total_mem_bytes).min().unwrap_or(0);
    for d in &devices {
        tracing::info!(ordinal = d.ordinal, name = %d.name, bytes = d.total_mem_bytes, "cuda device");
    }
    pool.devices = u32::try_from(devices.len()).unwrap_or(u32::MAX);
    pool.device_memory_bytes = smallest;
    Ok(())
}
