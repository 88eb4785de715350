//! `cuDeviceGetAttribute` answers of the emulated device.
//!
//! Exists so the device looks plausible to frameworks that probe it
//! (PyTorch reads SM count, compute capability, warp size, shared memory
//! and launch limits). Attribute numbers are `CUdevice_attribute` values
//! from `cuda.h`. Numbers in `1..=ATTRIBUTE_MAX` the emulator does not model
//! report 0 (most are capability flags: "not supported"); larger numbers are
//! `CUDA_ERROR_INVALID_VALUE`, as the driver answers an unknown attribute.

use super::config::EmulatedConfig;

/// Highest `CUdevice_attribute` number answered: the last one in CUDA 13.5's `cuda.h`
/// (`…GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED`). The 13.x runtimes read attributes
/// above 140 (e.g. 143) while initialising and fail if the device refuses them.
pub const ATTRIBUTE_MAX: u32 = 161;

/// Most threads per block (also the x/y block-dimension limit).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest block z dimension.
pub const MAX_BLOCK_DIM_Z: u32 = 64;
/// Largest grid x dimension.
pub const MAX_GRID_DIM_X: u32 = i32::MAX as u32;
/// Largest grid y/z dimension.
pub const MAX_GRID_DIM_YZ: u32 = 65_535;
/// Threads per warp.
pub const WARP_SIZE: u32 = 32;

/// The value of `attribute`, or `None` for an unknown attribute number.
#[must_use]
pub fn attribute(cfg: &EmulatedConfig, attribute: u32) -> Option<i32> {
    let clamp = |v: u64| i32::try_from(v).unwrap_or(i32::MAX);
    let v: i32 = match attribute {
        1..=3 => MAX_THREADS_PER_BLOCK as i32, // max threads per block, block dim x/y
        4 => MAX_BLOCK_DIM_Z as i32,
        5 => MAX_GRID_DIM_X as i32,
        6 | 7 => MAX_GRID_DIM_YZ as i32,
        8 => clamp(cfg.shared_mem_per_block_bytes.into()), // shared memory per block
        9 => 65_536,                                       // total constant memory
        10 => WARP_SIZE as i32,
        11 => i32::MAX,    // max pitch
        12 | 82 => 65_536, // registers per block / per multiprocessor
        13 => clamp(cfg.clock_rate_khz.into()),
        14 => 512,                   // texture alignment
        15 | 19 | 31 | 41 | 83 => 1, // overlap, map host memory, concurrent kernels, UVA, managed memory
        16 => clamp(cfg.sm_count.into()),
        36 => 1_215_000, // memory clock, kHz
        37 => 5120,      // global memory bus width, bits
        38 => 40 << 20,  // L2 cache bytes
        39 => 2048,      // max threads per multiprocessor
        40 => 2,         // async engine count
        51 => 512,       // texture pitch alignment (pitch::PITCH_ALIGN_BYTES)
        75 => clamp(cfg.cc_major.into()),
        76 => clamp(cfg.cc_minor.into()),
        81 => clamp(u64::from(cfg.shared_mem_per_block_bytes) * 2), // shared memory per SM
        97 => clamp(cfg.shared_mem_per_block_bytes.into()), // opt-in shared memory per block
        115 => 1, // memory pools: cuMemAllocAsync on the default pool is served
        // Large tensor-map minimum size: `cuda.h` 13.5 says devices where that allocation
        // class changes nothing report INT_MAX.
        160 => i32::MAX,
        _ if (1..=ATTRIBUTE_MAX).contains(&attribute) => 0,
        _ => return None,
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_config_and_refuses_unknown() {
        let cfg = EmulatedConfig {
            sm_count: 7,
            cc_major: 9,
            cc_minor: 0,
            ..EmulatedConfig::default()
        };
        assert_eq!(attribute(&cfg, 16), Some(7));
        assert_eq!(attribute(&cfg, 75), Some(9));
        assert_eq!(attribute(&cfg, 10), Some(32));
        assert_eq!(attribute(&cfg, 0), None);
        assert_eq!(attribute(&cfg, ATTRIBUTE_MAX + 1), None);
        // 13.x runtimes read the attributes CUDA 13 added while initialising.
        assert_eq!(attribute(&cfg, 143), Some(0));
        assert_eq!(attribute(&cfg, 160), Some(i32::MAX));
    }
}
