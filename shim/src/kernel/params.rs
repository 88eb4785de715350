//! Launch parameters: packing `kernelParams` per the argument layout the worker returned at
//! function lookup, and reading the `extra` form.
//!
//! `cuLaunchKernel` gives either `kernelParams` (one pointer per parameter, each at that
//! parameter's bytes) or `extra` (`CU_LAUNCH_PARAM_BUFFER_POINTER, buf,
//! CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END`: an already packed buffer), never
//! both. Either way the wire carries one packed buffer laid out as the layout says. The pure
//! rules are here and unit-tested; the raw reads are [`pack_kernel_params`] and
//! [`read_extra`].

use std::ffi::c_void;

use rgpu_proto::{ParamSlot, MAX_PARAM_BYTES};

use crate::cuda_types::{
    CUresult, CUDA_ERROR_INVALID_VALUE, CU_LAUNCH_PARAM_BUFFER_POINTER,
    CU_LAUNCH_PARAM_BUFFER_SIZE, CU_LAUNCH_PARAM_END,
};

/// Most words of an `extra` array read before its `CU_LAUNCH_PARAM_END` (the documented form
/// has 5; options may repeat).
pub const EXTRA_WORDS_MAX: usize = 16;

/// Why parameters cannot be packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Both `kernelParams` and `extra`, as the driver refuses.
    #[error("both kernelParams and extra given")]
    Both,
    /// The kernel takes parameters but neither form gave them.
    #[error("kernel takes {0} bytes of parameters, none given")]
    Missing(usize),
    /// The layout's extent is over the protocol bound.
    #[error("layout of {0} bytes exceeds the parameter bound")]
    LayoutTooLarge(usize),
    /// An `extra` array without `CU_LAUNCH_PARAM_END` within [`EXTRA_WORDS_MAX`] words, with an
    /// unknown option, or without a buffer pointer and size.
    #[error("malformed extra array")]
    BadExtra,
    /// The `extra` buffer is smaller than the layout needs.
    #[error("extra buffer of {given} bytes, kernel needs {need}")]
    ShortBuffer {
        /// Bytes given.
        given: usize,
        /// Bytes the layout spans.
        need: usize,
    },
    /// A null `kernelParams` entry.
    #[error("kernelParams[{0}] is null")]
    NullParam(usize),
}

impl ParamError {
    /// The `CUresult` an application gets (always `CUDA_ERROR_INVALID_VALUE`, as the driver).
    #[must_use]
    pub fn code(self) -> CUresult {
        CUDA_ERROR_INVALID_VALUE
    }
}

/// Bytes the packed buffer spans: the furthest end of any slot.
///
/// # Errors
/// [`ParamError::LayoutTooLarge`] past [`MAX_PARAM_BYTES`].
pub fn extent(layout: &[ParamSlot]) -> Result<usize, ParamError> {
    let end = layout
        .iter()
        .map(|s| u64::from(s.offset.get()) + u64::from(s.size.get()))
        .max()
        .unwrap_or(0);
    match usize::try_from(end) {
        Ok(n) if end <= u64::from(MAX_PARAM_BYTES) => Ok(n),
        _ => Err(ParamError::LayoutTooLarge(end as usize)),
    }
}

/// Packs one byte slice per slot into a buffer of the layout's extent (gaps zeroed).
///
/// # Errors
/// [`ParamError::LayoutTooLarge`]; `args` must have one slice per slot of the slot's size
/// (the caller builds them so; a mismatch is [`ParamError::BadExtra`]-free: debug-asserted).
pub fn pack(layout: &[ParamSlot], args: &[&[u8]]) -> Result<Vec<u8>, ParamError> {
    debug_assert_eq!(layout.len(), args.len(), "one argument per slot");
    let mut out = vec![0u8; extent(layout)?];
    for (slot, arg) in layout.iter().zip(args) {
        let off = slot.offset.get() as usize;
        let size = slot.size.get() as usize;
        debug_assert_eq!(arg.len(), size, "argument read at its slot size");
        // In bounds: off + size <= extent by construction.
        out[off..off + size].copy_from_slice(&arg[..size.min(arg.len())]);
    }
    Ok(out)
}

/// The buffer pointer and size pointer of an `extra` array's words, read up to
/// `CU_LAUNCH_PARAM_END`.
///
/// # Errors
/// [`ParamError::BadExtra`] for an unknown option, a missing end within the words given, or a
/// missing buffer pointer or size.
pub fn parse_extra(words: &[usize]) -> Result<(usize, usize), ParamError> {
    let (mut buf, mut size) = (None, None);
    let mut i = 0;
    loop {
        match words.get(i).copied() {
            Some(CU_LAUNCH_PARAM_END) => break,
            Some(CU_LAUNCH_PARAM_BUFFER_POINTER) => buf = words.get(i + 1).copied(),
            Some(CU_LAUNCH_PARAM_BUFFER_SIZE) => size = words.get(i + 1).copied(),
            _ => return Err(ParamError::BadExtra),
        }
        i += 2;
    }
    match (buf, size) {
        (Some(b), Some(s)) if b != 0 && s != 0 => Ok((b, s)),
        _ => Err(ParamError::BadExtra),
    }
}

/// The words of a C `extra` array up to and including its end marker (at most
/// [`EXTRA_WORDS_MAX`]).
fn extra_words(extra: *const *mut c_void) -> Vec<usize> {
    let mut words = Vec::with_capacity(EXTRA_WORDS_MAX);
    let mut expect_value = false;
    while words.len() < EXTRA_WORDS_MAX {
        let at = extra.wrapping_add(words.len());
        // SAFETY: the driver API contract: `extra` is an array of option/value pairs ended by
        // CU_LAUNCH_PARAM_END; reading stops at that marker (never past it).
        let w = unsafe { at.read() } as usize;
        words.push(w);
        let option = !expect_value;
        if option && w != CU_LAUNCH_PARAM_BUFFER_POINTER && w != CU_LAUNCH_PARAM_BUFFER_SIZE {
            // The end marker, or an unknown option: nothing after it is read.
            break;
        }
        expect_value = !expect_value;
    }
    words
}

/// The packed parameters of a launch, from `kernelParams` or `extra`, laid out as `layout`.
///
/// # Safety
/// As `cuLaunchKernel`: `kernel_params` is null or holds one valid pointer per parameter of
/// the kernel, each readable for the parameter's size; `extra` is null or a well-formed
/// `extra` array whose buffer holds the size it declares.
///
/// # Errors
/// See [`ParamError`].
pub unsafe fn pack_kernel_params(
    layout: &[ParamSlot],
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<Vec<u8>, ParamError> {
    let need = extent(layout)?;
    match (kernel_params.is_null(), extra.is_null()) {
        (false, false) => Err(ParamError::Both),
        (true, true) if need == 0 => Ok(Vec::new()),
        (true, true) => Err(ParamError::Missing(need)),
        (false, true) => {
            let mut args = Vec::with_capacity(layout.len());
            for (i, slot) in layout.iter().enumerate() {
                let at = kernel_params.wrapping_add(i);
                // SAFETY: one pointer per parameter (caller's promise), `i` < parameter count.
                let p = unsafe { at.read() };
                if p.is_null() {
                    return Err(ParamError::NullParam(i));
                }
                let size = slot.size.get() as usize;
                // SAFETY: the pointer addresses the parameter's `size` bytes (caller's promise).
                args.push(unsafe { std::slice::from_raw_parts(p.cast::<u8>().cast_const(), size) });
            }
            pack(layout, &args)
        }
        (true, false) => {
            let (buf, size_ptr) = parse_extra(&extra_words(extra))?;
            // SAFETY: the extra array's size entry points at a size_t (caller's promise).
            let given = unsafe { (size_ptr as *const usize).read_unaligned() };
            if given < need {
                return Err(ParamError::ShortBuffer { given, need });
            }
            // SAFETY: the buffer holds `given` >= `need` bytes (caller's promise); only the
            // layout's extent is read.
            let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, need) };
            Ok(bytes.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(slots: &[(u32, u32)]) -> Vec<ParamSlot> {
        slots.iter().map(|&(o, s)| ParamSlot::new(o, s)).collect()
    }

    #[test]
    fn packs_per_layout_with_gaps() {
        // (unsigned n, <pad>, double* p): 4 bytes, 4 of padding, 8.
        let l = layout(&[(0, 4), (8, 8)]);
        assert_eq!(extent(&l), Ok(16));
        let out = pack(&l, &[&7u32.to_le_bytes(), &0x1122u64.to_le_bytes()]).unwrap();
        let mut want = vec![7, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&0x1122u64.to_le_bytes());
        assert_eq!(out, want);
        assert_eq!(extent(&[]), Ok(0));
        assert_eq!(
            extent(&layout(&[(MAX_PARAM_BYTES, 4)])),
            Err(ParamError::LayoutTooLarge(MAX_PARAM_BYTES as usize + 4))
        );
    }

    #[test]
    fn raw_kernel_params_are_read_per_slot() {
        let l = layout(&[(0, 8), (8, 4), (12, 4)]);
        let (mut ptr, mut v, mut n) = (0xdead_beef_u64, 3u32, 9u32);
        let mut params: [*mut c_void; 3] = [
            (&raw mut ptr).cast(),
            (&raw mut v).cast(),
            (&raw mut n).cast(),
        ];
        // SAFETY: one live pointer per parameter.
        let got = unsafe { pack_kernel_params(&l, params.as_mut_ptr(), std::ptr::null_mut()) };
        let mut want = 0xdead_beef_u64.to_le_bytes().to_vec();
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(&9u32.to_le_bytes());
        assert_eq!(got, Ok(want));
        params[1] = std::ptr::null_mut();
        // SAFETY: as above; the null entry is refused before any read through it.
        let got = unsafe { pack_kernel_params(&l, params.as_mut_ptr(), std::ptr::null_mut()) };
        assert_eq!(got, Err(ParamError::NullParam(1)));
        // SAFETY: nothing is read when both are null.
        let none = unsafe { pack_kernel_params(&l, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(none, Err(ParamError::Missing(16)));
        // SAFETY: as above.
        let empty = unsafe { pack_kernel_params(&[], std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(empty, Ok(Vec::new()));
    }

    #[test]
    fn extra_form_is_parsed_and_bounded() {
        assert_eq!(
            parse_extra(&[1, 0x1000, 2, 0x2000, 0]),
            Ok((0x1000, 0x2000))
        );
        assert_eq!(
            parse_extra(&[2, 0x2000, 1, 0x1000, 0]),
            Ok((0x1000, 0x2000))
        );
        assert_eq!(parse_extra(&[1, 0x1000, 0]), Err(ParamError::BadExtra));
        assert_eq!(parse_extra(&[3, 0, 0]), Err(ParamError::BadExtra));
        assert_eq!(
            parse_extra(&[1, 0x1000, 2, 0x2000]),
            Err(ParamError::BadExtra)
        );
        assert_eq!(parse_extra(&[0]), Err(ParamError::BadExtra));

        let l = layout(&[(0, 8), (8, 4)]);
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&5u64.to_le_bytes());
        buf[8..12].copy_from_slice(&6u32.to_le_bytes());
        let mut size = 16usize;
        let size_ptr: *mut usize = &raw mut size;
        let mut extra: [*mut c_void; 5] = [
            CU_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            buf.as_mut_ptr().cast(),
            CU_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            size_ptr.cast(),
            CU_LAUNCH_PARAM_END as *mut c_void,
        ];
        // SAFETY: a well-formed extra array over live memory.
        let got = unsafe { pack_kernel_params(&l, std::ptr::null_mut(), extra.as_mut_ptr()) };
        assert_eq!(got, Ok(buf[..12].to_vec()));
        // SAFETY: `size_ptr` points at the live local `size`.
        unsafe { size_ptr.write(8) };
        // SAFETY: as above.
        let got = unsafe { pack_kernel_params(&l, std::ptr::null_mut(), extra.as_mut_ptr()) };
        assert_eq!(got, Err(ParamError::ShortBuffer { given: 8, need: 12 }));
        let mut kp: [*mut c_void; 0] = [];
        // SAFETY: refused before any read.
        let both = unsafe { pack_kernel_params(&l, kp.as_mut_ptr(), extra.as_mut_ptr()) };
        assert_eq!(both, Err(ParamError::Both));
    }
}
