//! Sizing rules of the allocation variants (`cuMemAllocPitch`, the default
//! memory pool), shared by both backends.
//!
//! Exists so the emulated and the `cuda` backend charge the quota by the
//! same rule: a pitched allocation is charged pitch × height, where the
//! pitch is the row width rounded up to [`PITCH_ALIGN_BYTES`] (or a larger
//! alignment the device asks for), so its size is known before the driver
//! is asked.

use rgpu_proto::CudaError;

/// Smallest row alignment of a pitched allocation, in bytes. CUDA's
/// documentation only promises a pitch suitable for coalescing and 2D
/// copies; 512 B is at least the texture pitch alignment of every current
/// NVIDIA GPU (`CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT`).
pub const PITCH_ALIGN_BYTES: u64 = 512;
/// Largest pitch accepted, in bytes (`CU_DEVICE_ATTRIBUTE_MAX_PITCH` is
/// 2³¹ − 1 on current GPUs).
pub const PITCH_BYTES_MAX: u64 = (1 << 31) - 1;
/// The handle every session gets for its device's default memory pool
/// (`cuDeviceGetDefaultMemPool`); the only pool served.
pub const DEFAULT_POOL_HANDLE: u64 = 0x9001;

/// Pitch and total bytes of `height` rows of `width_bytes`, rows aligned to
/// `align` bytes (a power of two, at least [`PITCH_ALIGN_BYTES`]).
///
/// # Errors
/// [`CudaError::INVALID_VALUE`] for a zero width or height, an element
/// size other than 4, 8 or 16 (the driver's rule), or a pitch over
/// [`PITCH_BYTES_MAX`]; [`CudaError::OUT_OF_MEMORY`] when the total
/// overflows.
pub fn pitched(
    width_bytes: u64,
    height: u64,
    element_size: u32,
    align: u64,
) -> Result<(u64, u64), CudaError> {
    assert!(align.is_power_of_two() && align >= PITCH_ALIGN_BYTES);
    if width_bytes == 0 || height == 0 || !matches!(element_size, 4 | 8 | 16) {
        return Err(CudaError::INVALID_VALUE);
    }
    let pitch = width_bytes
        .checked_next_multiple_of(align)
        .filter(|&p| p <= PITCH_BYTES_MAX)
        .ok_or(CudaError::INVALID_VALUE)?;
    let bytes = pitch.checked_mul(height).ok_or(CudaError::OUT_OF_MEMORY)?;
    Ok((pitch, bytes))
}

/// Checks a pool handle of `cuMemAllocFromPoolAsync` (`None`: the
/// default pool of `cuMemAllocAsync`).
///
/// # Errors
/// [`CudaError::INVALID_VALUE`] for any pool but the default one.
pub fn check_pool(pool: Option<u64>) -> Result<(), CudaError> {
    match pool {
        None | Some(DEFAULT_POOL_HANDLE) => Ok(()),
        Some(_) => Err(CudaError::INVALID_VALUE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_rounds_rows_up_and_charges_every_row() {
        assert_eq!(pitched(1, 3, 4, 512), Ok((512, 1536)));
        assert_eq!(pitched(512, 2, 8, 512), Ok((512, 1024)));
        assert_eq!(pitched(513, 2, 16, 1024), Ok((1024, 2048)));
        assert_eq!(pitched(0, 2, 4, 512), Err(CudaError::INVALID_VALUE));
        assert_eq!(pitched(4, 0, 4, 512), Err(CudaError::INVALID_VALUE));
        assert_eq!(pitched(4, 1, 2, 512), Err(CudaError::INVALID_VALUE));
        assert_eq!(pitched(1 << 31, 1, 4, 512), Err(CudaError::INVALID_VALUE));
        assert_eq!(
            pitched(1 << 30, u64::MAX, 4, 512),
            Err(CudaError::OUT_OF_MEMORY)
        );
    }

    #[test]
    fn only_the_default_pool_is_served() {
        assert_eq!(check_pool(None), Ok(()));
        assert_eq!(check_pool(Some(DEFAULT_POOL_HANDLE)), Ok(()));
        assert_eq!(check_pool(Some(1)), Err(CudaError::INVALID_VALUE));
    }
}
