//! Checks a module image before the driver reads it.
//!
//! Exists because `cuModuleLoadData` takes a bare pointer: the driver reads
//! as far as the image's own headers say (cubin ELF, fatbin) or up to the
//! NUL of PTX text. A peer-sent image that lies about its size would make
//! the driver read past our buffer, so the declared extent is checked
//! against the real length first and PTX gets its terminator.

use std::borrow::Cow;

use rgpu_proto::CudaError;

/// `ELF` magic of a cubin.
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// Fatbin wrapper magic, little endian (`0xBA55ED50`).
const FATBIN_MAGIC: [u8; 4] = [0x50, 0xed, 0x55, 0xba];
/// Size of the ELF64 header fields read here.
const ELF64_HEADER_BYTES: usize = 64;
/// Size of the fatbin header read here.
const FATBIN_HEADER_BYTES: usize = 16;

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// `SHT_NOBITS`: a section with no bytes in the file.
const SHT_NOBITS: u32 = 8;
/// Size of one ELF64 section header.
const ELF64_SECTION_HEADER_BYTES: u64 = 64;

/// Checks every section's bytes lie inside the image (headers already
/// known to fit).
fn check_elf_sections(image: &[u8]) -> Result<(), CudaError> {
    let (shoff, shnum, shentsize) = (
        u64_at(image, 0x28),
        u16_at(image, 0x3c),
        u16_at(image, 0x3a),
    );
    if shnum > 0 && shentsize != ELF64_SECTION_HEADER_BYTES {
        return Err(CudaError::INVALID_IMAGE);
    }
    let len = image.len() as u64;
    for i in 0..shnum {
        // In bounds: shoff + shnum * shentsize <= len was checked.
        let at = (shoff + i * shentsize) as usize;
        let kind = u32::from_le_bytes([image[at + 4], image[at + 5], image[at + 6], image[at + 7]]);
        let end = u64_at(image, at + 0x18).checked_add(u64_at(image, at + 0x20));
        if kind != SHT_NOBITS && end.is_none_or(|e| e > len) {
            return Err(CudaError::INVALID_IMAGE);
        }
    }
    Ok(())
}

/// The bytes to hand to `cuModuleLoadData`: the image itself when its
/// headers fit inside it, or PTX text with a NUL appended if it lacks one.
///
/// # Errors
/// [`CudaError::INVALID_IMAGE`] for an empty image or headers that declare
/// more bytes than were sent.
pub fn prepare(image: &[u8]) -> Result<Cow<'_, [u8]>, CudaError> {
    let len = image.len() as u64;
    if image.starts_with(&ELF_MAGIC) {
        if image.len() < ELF64_HEADER_BYTES || image[4] != 2 {
            return Err(CudaError::INVALID_IMAGE);
        }
        // Section headers end at e_shoff + e_shnum * e_shentsize; program
        // headers at e_phoff + e_phnum * e_phentsize.
        let sh_end = u64_at(image, 0x28)
            .checked_add(u16_at(image, 0x3c) * u16_at(image, 0x3a))
            .ok_or(CudaError::INVALID_IMAGE)?;
        let ph_end = u64_at(image, 0x20)
            .checked_add(u16_at(image, 0x38) * u16_at(image, 0x36))
            .ok_or(CudaError::INVALID_IMAGE)?;
        if sh_end > len || ph_end > len {
            return Err(CudaError::INVALID_IMAGE);
        }
        check_elf_sections(image)?;
        return Ok(Cow::Borrowed(image));
    }
    if image.starts_with(&FATBIN_MAGIC) {
        if image.len() < FATBIN_HEADER_BYTES {
            return Err(CudaError::INVALID_IMAGE);
        }
        let end = u16_at(image, 6)
            .checked_add(u64_at(image, 8))
            .ok_or(CudaError::INVALID_IMAGE)?;
        return if end <= len {
            Ok(Cow::Borrowed(image))
        } else {
            Err(CudaError::INVALID_IMAGE)
        };
    }
    match image.last() {
        None => Err(CudaError::INVALID_IMAGE),
        Some(0) => Ok(Cow::Borrowed(image)),
        Some(_) => {
            let mut v = Vec::with_capacity(image.len() + 1);
            v.extend_from_slice(image);
            v.push(0);
            Ok(Cow::Owned(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_gets_a_terminator_and_lying_headers_are_refused() {
        assert_eq!(&*prepare(b".version 7.0").unwrap(), b".version 7.0\0");
        assert_eq!(&*prepare(b"x\0").unwrap(), b"x\0");
        assert_eq!(prepare(b""), Err(CudaError::INVALID_IMAGE));
        let mut fat = vec![0u8; 32];
        fat[..4].copy_from_slice(&FATBIN_MAGIC);
        fat[6] = 16;
        fat[8] = 16; // 16 + 16 = 32: fits exactly
        assert!(prepare(&fat).is_ok());
        fat[8] = 17;
        assert_eq!(prepare(&fat), Err(CudaError::INVALID_IMAGE));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(&ELF_MAGIC);
        elf[4] = 2;
        assert!(prepare(&elf).is_ok());
        // One section header (at 0) whose section lies past the end.
        let mut one = elf.clone();
        one[0x3c] = 1;
        one[0x3a] = 64;
        assert!(prepare(&one).is_ok(), "an empty section at 0 fits");
        one[0x18] = 65; // sh_offset (also e_entry, unchecked)
        assert_eq!(prepare(&one), Err(CudaError::INVALID_IMAGE));
        elf[0x28] = 0xff; // section headers past the end
        elf[0x3c] = 1;
        elf[0x3a] = 64;
        assert_eq!(prepare(&elf), Err(CudaError::INVALID_IMAGE));
    }
}
