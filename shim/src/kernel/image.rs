//! How long a module image is, read from the image itself.
//!
//! `cuModuleLoadData` and friends take a bare pointer: a driver reads as far as the image's
//! own headers say. The shim must ship the image to the worker, so it finds the length the
//! same way, bounded by [`IMAGE_BYTES_MAX`]:
//!
//! * fatbin wrapper (`__fatBinC_Wrapper_t`, magic `0x466243b1`, what nvcc output registers):
//!   its `data` pointer (at byte 8) names the fatbin container;
//! * fatbin container (magic `0xBA55ED50`): `u16` header size at byte 6 plus the `u64` size of
//!   its entries at byte 8;
//! * cubin (ELF64): the furthest end of the section header table, the program header table,
//!   and every section and segment with bytes in the file;
//! * anything else is text (PTX, or an `RGPU-EMU-MODULE v1` test module) ending at its NUL,
//!   which is not shipped.
//!
//! The header arithmetic is pure and unit-tested; [`read_image`] is the one unsafe reader.

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_IMAGE, CUDA_ERROR_INVALID_VALUE};

/// Largest image the shim ships: what one inline frame may carry (`MAX_INLINE_BYTES`, 64 MiB).
/// A larger image is refused with [`ImageError::TooLarge`] and a log line; splitting images
/// across frames is not done.
pub const IMAGE_BYTES_MAX: usize = rgpu_proto::MAX_INLINE_BYTES as usize;
/// Fatbin wrapper magic (`__fatBinC_Wrapper_t`).
pub const FATBIN_WRAPPER_MAGIC: u32 = 0x4662_43b1;
/// Fatbin container magic.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Bytes of a fatbin wrapper: magic, version, data pointer, filename/prelinked pointer.
pub const FATBIN_WRAPPER_BYTES: usize = 24;
/// Bytes of a fatbin container header.
pub const FATBIN_HEADER_BYTES: usize = 16;
/// Bytes of an ELF64 header.
pub const ELF64_HEADER_BYTES: usize = 64;
/// Most sections or segments of a cubin walked for its extent.
pub const ELF_TABLE_ENTRIES_MAX: usize = 65_535;
/// `SHT_NOBITS`: a section with no bytes in the file.
const SHT_NOBITS: u32 = 8;

/// Why an image cannot be shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A null image pointer.
    #[error("null image")]
    Null,
    /// Headers that contradict themselves.
    #[error("malformed {0} image")]
    Malformed(&'static str),
    /// Bigger than one inline frame carries.
    #[error("{kind} image of {bytes} bytes exceeds the {IMAGE_BYTES_MAX}-byte inline frame bound")]
    TooLarge {
        /// What it is.
        kind: &'static str,
        /// Its declared length (saturated).
        bytes: u64,
    },
}

impl ImageError {
    /// The `CUresult` an application gets.
    #[must_use]
    pub fn code(self) -> CUresult {
        match self {
            ImageError::Null => CUDA_ERROR_INVALID_VALUE,
            ImageError::Malformed(_) => CUDA_ERROR_INVALID_IMAGE,
            // An image the transport cannot carry: no driver code fits better.
            ImageError::TooLarge { .. } => crate::cuda_types::CUDA_ERROR_NOT_SUPPORTED,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn bounded(kind: &'static str, bytes: u64) -> Result<usize, ImageError> {
    match usize::try_from(bytes) {
        Ok(n) if n <= IMAGE_BYTES_MAX => Ok(n),
        _ => Err(ImageError::TooLarge { kind, bytes }),
    }
}

/// The length of a fatbin container from its 16-byte header.
///
/// # Errors
/// [`ImageError::Malformed`] for a header shorter than 16 bytes, [`ImageError::TooLarge`].
pub fn fatbin_len(header: &[u8]) -> Result<usize, ImageError> {
    if header.len() < FATBIN_HEADER_BYTES || u32_at(header, 0) != FATBIN_MAGIC {
        return Err(ImageError::Malformed("fatbin"));
    }
    let total = u16_at(header, 6).saturating_add(u64_at(header, 8));
    bounded("fatbin", total)
}

/// Where an ELF64 image's tables lie, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfTables {
    /// Section header table offset, entry size, count.
    pub sections: (u64, u64, u64),
    /// Program header table offset, entry size, count.
    pub segments: (u64, u64, u64),
}

impl ElfTables {
    /// Reads the table positions of an ELF64 little-endian header.
    ///
    /// # Errors
    /// [`ImageError::Malformed`] for another ELF class, short headers or oversized entries.
    pub fn parse(header: &[u8]) -> Result<Self, ImageError> {
        if header.len() < ELF64_HEADER_BYTES
            || header.get(4) != Some(&2)
            || header.get(5) != Some(&1)
        {
            return Err(ImageError::Malformed("cubin (ELF)"));
        }
        let t = Self {
            sections: (
                u64_at(header, 0x28),
                u16_at(header, 0x3a),
                u16_at(header, 0x3c),
            ),
            segments: (
                u64_at(header, 0x20),
                u16_at(header, 0x36),
                u16_at(header, 0x38),
            ),
        };
        let entry_ok = |(_, size, count): (u64, u64, u64)| count == 0 || size >= 0x38;
        if !entry_ok(t.sections) || !entry_ok(t.segments) {
            return Err(ImageError::Malformed("cubin (ELF)"));
        }
        Ok(t)
    }

    /// The end of each table (offset + size × count), bounded.
    ///
    /// # Errors
    /// [`ImageError::TooLarge`] past [`IMAGE_BYTES_MAX`].
    pub fn table_ends(&self) -> Result<(usize, usize), ImageError> {
        let end = |(off, size, count): (u64, u64, u64)| {
            let bytes = size.saturating_mul(count).saturating_add(off);
            bounded("cubin (ELF)", bytes)
        };
        Ok((end(self.sections)?, end(self.segments)?))
    }
}

/// The furthest byte of an ELF64 image: its header, both tables, and the file bytes of every
/// section (`sections`: the section header table) and segment (`segments`).
///
/// # Errors
/// [`ImageError::TooLarge`] past [`IMAGE_BYTES_MAX`].
pub fn elf_len(t: &ElfTables, sections: &[u8], segments: &[u8]) -> Result<usize, ImageError> {
    let (sec_end, seg_end) = t.table_ends()?;
    let mut end = (ELF64_HEADER_BYTES as u64)
        .max(sec_end as u64)
        .max(seg_end as u64);
    if t.sections.2 > 0 {
        for sh in sections.chunks_exact(t.sections.1 as usize) {
            if u32_at(sh, 4) != SHT_NOBITS {
                end = end.max(u64_at(sh, 0x18).saturating_add(u64_at(sh, 0x20)));
            }
        }
    }
    if t.segments.2 > 0 {
        for ph in segments.chunks_exact(t.segments.1 as usize) {
            end = end.max(u64_at(ph, 0x08).saturating_add(u64_at(ph, 0x20)));
        }
    }
    bounded("cubin (ELF)", end)
}

/// A C image pointer resolved to the bytes to ship.
///
/// # Safety
/// `ptr` must be null or point at an image a CUDA driver would accept: a fatbin wrapper or
/// container, an ELF image, or NUL-terminated text, readable to the extent its headers
/// declare (the same promise `cuModuleLoadData` relies on). The slice borrows that memory
/// for `'a`, during which the caller must not free it.
pub unsafe fn read_image<'a>(ptr: *const u8) -> Result<&'a [u8], ImageError> {
    if ptr.is_null() {
        return Err(ImageError::Null);
    }
    // SAFETY: the caller's promise: a valid image; text is read only up to its NUL.
    let text_len = unsafe { libc::strnlen(ptr.cast(), 4) };
    if text_len < 4 {
        // Shorter than any magic: a (tiny) text image.
        // SAFETY: `text_len` bytes before the NUL are readable.
        return Ok(unsafe { std::slice::from_raw_parts(ptr, text_len) });
    }
    // SAFETY: four non-NUL bytes were just read.
    let magic = u32::from_le_bytes(unsafe { ptr.cast::<[u8; 4]>().read_unaligned() });
    if magic == FATBIN_WRAPPER_MAGIC {
        let at = ptr.wrapping_add(8).cast::<*const u8>();
        // SAFETY: a wrapper is FATBIN_WRAPPER_BYTES long; its data pointer is at byte 8.
        let data = unsafe { at.read_unaligned() };
        if data.is_null() || data == ptr {
            return Err(ImageError::Malformed("fatbin wrapper"));
        }
        // SAFETY: the wrapper names a container, itself under the caller's promise.
        let data_magic = u32::from_le_bytes(unsafe { data.cast::<[u8; 4]>().read_unaligned() });
        if data_magic != FATBIN_MAGIC {
            return Err(ImageError::Malformed("fatbin wrapper"));
        }
        // SAFETY: as above, with `data`: a container, not another wrapper.
        return unsafe { read_image(data) };
    }
    if magic == FATBIN_MAGIC {
        // SAFETY: a container has a 16-byte header.
        let header = unsafe { std::slice::from_raw_parts(ptr, FATBIN_HEADER_BYTES) };
        let len = fatbin_len(header)?;
        // SAFETY: the header declares `len` bytes (the driver reads as far).
        return Ok(unsafe { std::slice::from_raw_parts(ptr, len.max(FATBIN_HEADER_BYTES)) });
    }
    if magic == u32::from_le_bytes(*b"\x7fELF") {
        // SAFETY: an ELF64 header is 64 bytes.
        let header = unsafe { std::slice::from_raw_parts(ptr, ELF64_HEADER_BYTES) };
        let t = ElfTables::parse(header)?;
        let (sec_end, seg_end) = t.table_ends()?;
        if t.sections.2 as usize > ELF_TABLE_ENTRIES_MAX
            || t.segments.2 as usize > ELF_TABLE_ENTRIES_MAX
        {
            return Err(ImageError::Malformed("cubin (ELF)"));
        }
        let table = |(off, _, _): (u64, u64, u64), end: usize| {
            let start = ptr.wrapping_add(off as usize);
            // SAFETY: the header places the table at [off, end) in the image (bounded above).
            unsafe { std::slice::from_raw_parts(start, end.saturating_sub(off as usize)) }
        };
        let len = elf_len(&t, table(t.sections, sec_end), table(t.segments, seg_end))?;
        // SAFETY: every byte up to `len` belongs to a header, table, section or segment.
        return Ok(unsafe { std::slice::from_raw_parts(ptr, len) });
    }
    // Text: PTX or a test module, up to its NUL.
    // SAFETY: NUL-terminated text under the caller's promise; strnlen stops at the bound.
    let len = unsafe { libc::strnlen(ptr.cast(), IMAGE_BYTES_MAX + 1) };
    if len > IMAGE_BYTES_MAX {
        return Err(ImageError::TooLarge {
            kind: "text",
            bytes: len as u64,
        });
    }
    // SAFETY: `len` bytes before the NUL are readable.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatbin(body: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&FATBIN_MAGIC.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(&(body as u64).to_le_bytes());
        v.resize(16 + body, 0xab);
        v
    }

    #[test]
    fn fatbin_length_is_header_plus_size() {
        let f = fatbin(100);
        assert_eq!(fatbin_len(&f), Ok(116));
        let mut huge = f.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            fatbin_len(&huge),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(fatbin_len(&f[..10]).is_err());
        // Read through the raw path, with bytes after the image that must not be included.
        let mut padded = f.clone();
        padded.extend_from_slice(b"trailing garbage");
        // SAFETY: a valid container in a live buffer.
        let got = unsafe { read_image(padded.as_ptr()) }.unwrap();
        assert_eq!(got, &f[..]);
        // Through a wrapper pointing at it.
        let mut wrapper = Vec::new();
        wrapper.extend_from_slice(&FATBIN_WRAPPER_MAGIC.to_le_bytes());
        wrapper.extend_from_slice(&1u32.to_le_bytes());
        wrapper.extend_from_slice(&(padded.as_ptr() as u64).to_le_bytes());
        wrapper.extend_from_slice(&0u64.to_le_bytes());
        // SAFETY: a wrapper naming the live container.
        let got = unsafe { read_image(wrapper.as_ptr()) }.unwrap();
        assert_eq!(got.len(), 116);
    }

    /// An ELF64 header with one section of bytes at [0x100, 0x180) and the section table at
    /// 0x200 (2 entries: null + that one).
    fn elf() -> Vec<u8> {
        let mut v = vec![0u8; 0x200 + 2 * 64];
        v[0..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[0x28..0x30].copy_from_slice(&0x200u64.to_le_bytes());
        v[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        v[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        let sh = 0x200 + 64;
        v[sh + 4..sh + 8].copy_from_slice(&1u32.to_le_bytes());
        v[sh + 0x18..sh + 0x20].copy_from_slice(&0x100u64.to_le_bytes());
        v[sh + 0x20..sh + 0x28].copy_from_slice(&0x80u64.to_le_bytes());
        v
    }

    #[test]
    fn elf_length_covers_tables_and_sections() {
        let v = elf();
        let t = ElfTables::parse(&v).unwrap();
        assert_eq!(elf_len(&t, &v[0x200..], &[]), Ok(0x280));
        // A section whose bytes lie past the table extends the image.
        let mut w = v.clone();
        let sh = 0x200 + 64;
        w[sh + 0x18..sh + 0x20].copy_from_slice(&0x1000u64.to_le_bytes());
        assert_eq!(elf_len(&t, &w[0x200..], &[]), Ok(0x1080));
        // NOBITS sections take no file bytes.
        w[sh + 4..sh + 8].copy_from_slice(&SHT_NOBITS.to_le_bytes());
        assert_eq!(elf_len(&t, &w[0x200..], &[]), Ok(0x280));
        // Raw path.
        let mut padded = v.clone();
        padded.extend_from_slice(&[1; 64]);
        // SAFETY: a valid ELF image in a live buffer.
        assert_eq!(unsafe { read_image(padded.as_ptr()) }.unwrap().len(), 0x280);
        // 32-bit ELF is refused.
        let mut e32 = v;
        e32[4] = 1;
        assert_eq!(
            ElfTables::parse(&e32),
            Err(ImageError::Malformed("cubin (ELF)"))
        );
    }

    #[test]
    fn text_ends_at_its_nul() {
        let ptx = b".version 8.0\n.target sm_80\n\0more";
        // SAFETY: NUL-terminated text.
        assert_eq!(unsafe { read_image(ptx.as_ptr()) }.unwrap(), &ptx[..27]);
        // SAFETY: as above.
        assert_eq!(unsafe { read_image(c"ab".as_ptr().cast()) }.unwrap(), b"ab");
        // SAFETY: a null pointer is refused before any read.
        let null = unsafe { read_image(std::ptr::null()) };
        assert_eq!(null, Err(ImageError::Null));
        assert_eq!(ImageError::Null.code(), CUDA_ERROR_INVALID_VALUE);
    }
}
