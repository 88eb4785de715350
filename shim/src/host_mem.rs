//! Views of application memory handed to copy calls, the one place the shim turns a C pointer
//! and length into a Rust slice.
//!
//! Like NVIDIA's driver, the shim trusts that a non-null host pointer addresses `len` bytes;
//! a null pointer with a nonzero length is refused.

use std::ffi::c_void;

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE};

/// The `len` bytes at `ptr`, for reading.
pub(crate) fn host_bytes<'a>(ptr: *const c_void, len: usize) -> Result<&'a [u8], CUresult> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || isize::try_from(len).is_err() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, len fits isize; the driver API contract makes the caller responsible
    // for `ptr` addressing `len` readable bytes that stay valid for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// The `len` bytes at `ptr`, for writing.
pub(crate) fn host_bytes_mut<'a>(ptr: *mut c_void, len: usize) -> Result<&'a mut [u8], CUresult> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() || isize::try_from(len).is_err() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: as in `host_bytes`, for writable memory the caller does not touch during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_refused_unless_empty() {
        assert_eq!(host_bytes(std::ptr::null(), 0), Ok(&[][..]));
        assert_eq!(
            host_bytes(std::ptr::null(), 1),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert!(host_bytes_mut(std::ptr::null_mut(), 4).is_err());
        let mut buf = [1u8, 2, 3];
        let view = host_bytes_mut(buf.as_mut_ptr().cast(), 3).unwrap();
        view[0] = 9;
        assert_eq!(buf, [9, 2, 3]);
    }
}
