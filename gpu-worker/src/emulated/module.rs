//! The emulated device's module images: the test module format, and the
//! honest refusal of everything else.
//!
//! Exists so a module load on the emulated device either yields exactly the
//! built-in kernels an image names, or fails with a CUDA error saying why;
//! never a fake success for code that cannot run here.
//!
//! # Test module format (`RGPU-EMU-MODULE v1`)
//! UTF-8 text, lines separated by `\n` (a trailing `\r` is ignored):
//! 1. the first line is exactly `RGPU-EMU-MODULE v1`;
//! 2. every further line is empty, a comment starting with `#`, or
//!    `kernel <name>` naming one built-in kernel (see
//!    [`kernels`](super::kernels)), at most [`MODULE_KERNELS_MAX`] of them,
//!    no duplicates.
//!
//! ```text
//! RGPU-EMU-MODULE v1
//! # vector add and saxpy
//! kernel rgpu_vector_add_f32
//! kernel rgpu_saxpy_f32
//! ```
//!
//! Any other content of a test image is `CUDA_ERROR_INVALID_IMAGE` (200).
//! A real image (cubin ELF, fatbin, PTX text) is `CUDA_ERROR_NOT_SUPPORTED`
//! (801): it may be perfectly valid, but the emulated device cannot run it.

use rgpu_proto::CudaError;

use super::kernels::Kernel;

/// The first line of a test module image.
pub const MODULE_MAGIC: &str = "RGPU-EMU-MODULE v1";
/// Most kernels one test module may list.
pub const MODULE_KERNELS_MAX: usize = 64;

/// ELF magic: a cubin.
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Fatbinary wrapper magic `0xBA55ED50`, little-endian.
const FATBIN_MAGIC: &[u8] = &[0x50, 0xed, 0x55, 0xba];

/// What kind of image a module load received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A test module in the format above.
    TestModule,
    /// A cubin, fatbin or PTX image: real GPU code.
    RealGpuCode(&'static str),
    /// Anything else.
    Unknown,
}

/// Classifies `image` by its leading bytes.
#[must_use]
pub fn classify(image: &[u8]) -> ImageKind {
    let first_line = image.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let first_line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    if first_line == MODULE_MAGIC.as_bytes() {
        ImageKind::TestModule
    } else if image.starts_with(ELF_MAGIC) {
        ImageKind::RealGpuCode("cubin (ELF)")
    } else if image.starts_with(FATBIN_MAGIC) {
        ImageKind::RealGpuCode("fatbin")
    } else if looks_like_ptx(image) {
        ImageKind::RealGpuCode("PTX")
    } else {
        ImageKind::Unknown
    }
}

/// PTX text declares `.version` and `.target` near its start.
fn looks_like_ptx(image: &[u8]) -> bool {
    let head = &image[..image.len().min(4096)];
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    has(b".version") && has(b".target")
}

/// Parses a module image into the kernels it lists (in order).
///
/// # Errors
/// [`CudaError::NOT_SUPPORTED`] for real GPU code (logged: the emulated
/// device cannot run real kernels); [`CudaError::INVALID_IMAGE`] for
/// anything that is not a well-formed test module.
pub fn parse(image: &[u8]) -> Result<Vec<Kernel>, CudaError> {
    match classify(image) {
        ImageKind::TestModule => {}
        ImageKind::RealGpuCode(what) => {
            tracing::warn!(
                image = what,
                bytes = image.len(),
                "the emulated device cannot run real kernels; module load refused with CUDA_ERROR_NOT_SUPPORTED"
            );
            return Err(CudaError::NOT_SUPPORTED);
        }
        ImageKind::Unknown => {
            tracing::info!(
                bytes = image.len(),
                "module image is neither a test module nor GPU code"
            );
            return Err(CudaError::INVALID_IMAGE);
        }
    }
    let text = std::str::from_utf8(image).map_err(|_| CudaError::INVALID_IMAGE)?;
    let mut kernels = Vec::new();
    for line in text.split('\n').skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .strip_prefix("kernel ")
            .map(str::trim)
            .ok_or(CudaError::INVALID_IMAGE)?;
        let Some(k) = Kernel::from_name(name.as_bytes()) else {
            tracing::info!(
                kernel = name,
                "test module names a kernel the emulated device lacks"
            );
            return Err(CudaError::INVALID_IMAGE);
        };
        if kernels.contains(&k) || kernels.len() >= MODULE_KERNELS_MAX {
            return Err(CudaError::INVALID_IMAGE);
        }
        kernels.push(k);
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let image = b"RGPU-EMU-MODULE v1\r\n# vector add and saxpy\nkernel rgpu_vector_add_f32\n\nkernel rgpu_saxpy_f32";
        assert_eq!(
            parse(image),
            Ok(vec![Kernel::VectorAddF32, Kernel::SaxpyF32])
        );
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(
            parse(b"\x7fELF\x02\x01\x01\x33rest"),
            Err(CudaError::NOT_SUPPORTED)
        );
        assert_eq!(
            parse(&[0x50, 0xed, 0x55, 0xba, 1, 0]),
            Err(CudaError::NOT_SUPPORTED)
        );
        assert_eq!(
            parse(b"//\n.version 8.0\n.target sm_80\n.address_size 64\n"),
            Err(CudaError::NOT_SUPPORTED)
        );
        assert_eq!(parse(b"hello"), Err(CudaError::INVALID_IMAGE));
        assert_eq!(parse(b""), Err(CudaError::INVALID_IMAGE));
        assert_eq!(
            parse(b"RGPU-EMU-MODULE v2\nkernel rgpu_fill_u32"),
            Err(CudaError::INVALID_IMAGE)
        );
        assert_eq!(
            parse(b"RGPU-EMU-MODULE v1\nkernel my_gemm"),
            Err(CudaError::INVALID_IMAGE)
        );
        assert_eq!(
            parse(b"RGPU-EMU-MODULE v1\nfunction rgpu_fill_u32"),
            Err(CudaError::INVALID_IMAGE)
        );
        assert_eq!(
            parse(b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\nkernel rgpu_fill_u32"),
            Err(CudaError::INVALID_IMAGE)
        );
    }
}
