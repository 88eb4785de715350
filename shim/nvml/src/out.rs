//! Writing answers through the caller's C pointers: null checks, buffer-size checks and the
//! one `unsafe` write each, so the exported functions stay free of raw pointer handling.

use std::ffi::{c_char, c_uint, CStr};

use crate::types::{NvmlReturn, NVML_ERROR_INSUFFICIENT_SIZE, NVML_ERROR_INVALID_ARGUMENT};

/// Writes `value` to `*ptr`; a null `ptr` is `NVML_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `ptr` must be null or valid for writing one `T`.
pub unsafe fn write<T>(ptr: *mut T, value: T) -> Result<(), NvmlReturn> {
    if ptr.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and writable by the caller's contract; `write` drops nothing old.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Reads `*ptr`; a null `ptr` is `NVML_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `ptr` must be null or valid for reading one `T`.
pub unsafe fn read<T: Copy>(ptr: *const T) -> Result<T, NvmlReturn> {
    if ptr.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and readable by the caller's contract.
    Ok(unsafe { ptr.read_unaligned() })
}

/// Copies `text` and a NUL into `buf` of `len` bytes: `NVML_ERROR_INVALID_ARGUMENT` for a
/// null `buf` or a NUL inside `text`, `NVML_ERROR_INSUFFICIENT_SIZE` when it does not fit.
///
/// # Safety
/// `buf` must be null or valid for writing `len` bytes.
pub unsafe fn write_str(buf: *mut c_char, len: c_uint, text: &str) -> Result<(), NvmlReturn> {
    if buf.is_null() || text.as_bytes().contains(&0) {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    let need = text.len() + 1;
    if (len as usize) < need {
        return Err(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `buf` holds at least `need` writable bytes (checked above, caller's contract);
    // the source is a distinct Rust string.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len()) };
    let end = buf.wrapping_add(text.len());
    // SAFETY: `text.len() < need <= len`: `end` is inside the buffer.
    unsafe { end.write(0) };
    Ok(())
}

/// Reads a caller's NUL-terminated string as UTF-8 (null or non-UTF-8:
/// `NVML_ERROR_INVALID_ARGUMENT`).
///
/// # Safety
/// `s` must be null or point to a NUL-terminated string that outlives the call.
pub unsafe fn read_str<'a>(s: *const c_char) -> Result<&'a str, NvmlReturn> {
    if s.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map_err(|_| NVML_ERROR_INVALID_ARGUMENT)
}

/// Fills a fixed C char array with `text` and a NUL (cut to fit; the texts used are ASCII).
pub fn fill_chars<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (dst, src) in out.iter_mut().zip(text.bytes().take(N.saturating_sub(1))) {
        *dst = src as c_char;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_fit_or_say_why() {
        let mut buf = [1 as c_char; 8];
        // SAFETY: `buf` is 8 writable bytes.
        assert_eq!(unsafe { write_str(buf.as_mut_ptr(), 8, "abc") }, Ok(()));
        // SAFETY: `write_str` terminated it.
        assert_eq!(unsafe { read_str(buf.as_ptr()) }, Ok("abc"));
        // SAFETY: as above; the length given is smaller than the text.
        let short = unsafe { write_str(buf.as_mut_ptr(), 3, "abc") };
        assert_eq!(short, Err(NVML_ERROR_INSUFFICIENT_SIZE));
        // SAFETY: null is allowed.
        let null = unsafe { write_str(std::ptr::null_mut(), 8, "a") };
        assert_eq!(null, Err(NVML_ERROR_INVALID_ARGUMENT));
        let c: [c_char; 4] = fill_chars("abcdef");
        assert_eq!(c, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
    }

    #[test]
    fn null_out_pointers_are_invalid_arguments() {
        // SAFETY: null is allowed.
        let null = unsafe { write::<u32>(std::ptr::null_mut(), 1) };
        assert_eq!(null, Err(NVML_ERROR_INVALID_ARGUMENT));
        let mut v = 0u32;
        // SAFETY: `v` is writable.
        assert_eq!(unsafe { write(&mut v, 7) }, Ok(()));
        assert_eq!(v, 7);
    }
}
