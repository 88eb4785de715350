//! CUDA driver result codes as carried on the wire.
//!
//! Replies carry a raw `CUresult` (`u32`). The protocol only needs to know
//! which codes are *sticky* (they poison the context: every later call fails
//! with the same code); everything else is opaque and passed through.

/// A non-success `CUresult` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("CUDA error {0}")]
pub struct CudaError(pub u32);

impl CudaError {
    /// `CUDA_ERROR_INVALID_VALUE`.
    pub const INVALID_VALUE: Self = Self(1);
    /// `CUDA_ERROR_OUT_OF_MEMORY`.
    pub const OUT_OF_MEMORY: Self = Self(2);
    /// `CUDA_ERROR_NOT_INITIALIZED`.
    pub const NOT_INITIALIZED: Self = Self(3);
    /// `CUDA_ERROR_INVALID_DEVICE` (device ordinal out of range).
    pub const INVALID_DEVICE: Self = Self(101);
    /// `CUDA_ERROR_INVALID_IMAGE` (a module image that cannot be parsed).
    pub const INVALID_IMAGE: Self = Self(200);
    /// `CUDA_ERROR_INVALID_HANDLE`.
    pub const INVALID_HANDLE: Self = Self(400);
    /// `CUDA_ERROR_NOT_FOUND` (e.g. a module "load by hash" that misses).
    pub const NOT_FOUND: Self = Self(500);
    /// `CUDA_ERROR_NOT_READY` (stream/event query still running).
    pub const NOT_READY: Self = Self(600);
    /// `CUDA_ERROR_ILLEGAL_ADDRESS` (sticky).
    pub const ILLEGAL_ADDRESS: Self = Self(700);
    /// `CUDA_ERROR_LAUNCH_TIMEOUT` (sticky).
    pub const LAUNCH_TIMEOUT: Self = Self(702);
    /// `CUDA_ERROR_HARDWARE_STACK_ERROR` (sticky).
    pub const HARDWARE_STACK_ERROR: Self = Self(714);
    /// `CUDA_ERROR_ILLEGAL_INSTRUCTION` (sticky).
    pub const ILLEGAL_INSTRUCTION: Self = Self(715);
    /// `CUDA_ERROR_MISALIGNED_ADDRESS` (sticky).
    pub const MISALIGNED_ADDRESS: Self = Self(716);
    /// `CUDA_ERROR_INVALID_ADDRESS_SPACE` (sticky).
    pub const INVALID_ADDRESS_SPACE: Self = Self(717);
    /// `CUDA_ERROR_INVALID_PC` (sticky).
    pub const INVALID_PC: Self = Self(718);
    /// `CUDA_ERROR_LAUNCH_FAILED` (sticky).
    pub const LAUNCH_FAILED: Self = Self(719);
    /// `CUDA_ERROR_NOT_SUPPORTED` (e.g. a real kernel image on the emulated device).
    pub const NOT_SUPPORTED: Self = Self(801);
    /// `CUDA_ERROR_ILLEGAL_STATE` (e.g. ending a capture that never began).
    pub const ILLEGAL_STATE: Self = Self(401);
    /// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`: the operation is not
    /// permitted while the stream is capturing.
    pub const STREAM_CAPTURE_UNSUPPORTED: Self = Self(900);
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`: the capture was invalidated
    /// by an earlier error.
    pub const STREAM_CAPTURE_INVALIDATED: Self = Self(901);
    /// `CUDA_ERROR_STREAM_CAPTURE_UNMATCHED`: capture ended on a stream
    /// that did not begin it (or none began).
    pub const STREAM_CAPTURE_UNMATCHED: Self = Self(903);
    /// `CUDA_ERROR_STREAM_CAPTURE_IMPLICIT`: an implicit dependency on the
    /// legacy stream while another stream captures.
    pub const STREAM_CAPTURE_IMPLICIT: Self = Self(906);
    /// `CUDA_ERROR_UNKNOWN`.
    pub const UNKNOWN: Self = Self(999);

    /// `CUDA_SUCCESS` as a raw code (never a valid `CudaError`).
    pub const SUCCESS_CODE: u32 = 0;

    /// Builds an error from a raw code; `None` for `CUDA_SUCCESS`.
    #[must_use]
    pub const fn from_code(code: u32) -> Option<Self> {
        if code == Self::SUCCESS_CODE {
            None
        } else {
            Some(Self(code))
        }
    }

    /// The raw `CUresult` value.
    #[must_use]
    pub const fn code(self) -> u32 {
        self.0
    }

    /// Whether the error poisons the context, so that every later call
    /// fails with it (the "sticky" errors of the CUDA driver API).
    #[must_use]
    pub const fn is_sticky(self) -> bool {
        matches!(self.0, 700 | 702 | 714..=719)
    }
}

#[cfg(test)]
mod tests {
    use super::CudaError;

    #[test]
    fn sticky_classification() {
        assert!(CudaError::ILLEGAL_ADDRESS.is_sticky());
        assert!(CudaError::LAUNCH_FAILED.is_sticky());
        assert!(!CudaError::OUT_OF_MEMORY.is_sticky());
        assert!(!CudaError::NOT_READY.is_sticky());
        assert_eq!(CudaError::from_code(0), None);
        assert_eq!(CudaError::from_code(2), Some(CudaError::OUT_OF_MEMORY));
    }
}
