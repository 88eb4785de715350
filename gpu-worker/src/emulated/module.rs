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
//!
//! # Real images: registered, never run
//! A real image (fatbin container, cubin ELF, PTX text) loads as a
//! *registration*: the CUDA runtime registers every fatbin of a program at
//! start, so refusing the load would kill every program before its first
//! line. Its kernel names are read where the image is readable ([`real`]),
//! so `cuModuleGetFunction` answers honestly (unknown names are
//! `CUDA_ERROR_NOT_FOUND` unless part of the image was unreadable), and
//! **launching** such a kernel is `CUDA_ERROR_NOT_SUPPORTED` (801) with a
//! worker log line "kernel X cannot run on the emulated device". A fatbin
//! whose uncompressed PTX entry is a test module (text above) loads as that
//! test module, so a program can register built-in kernels the way nvcc
//! output registers real ones.

pub mod real;

use rgpu_proto::CudaError;

use super::kernels::Kernel;

/// A parsed module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A test module: the built-in kernels it lists.
    Test(Vec<Kernel>),
    /// Real GPU code, registered but never run.
    Real {
        /// What it is (`fatbin`, `cubin (ELF)`, `PTX`).
        kind: &'static str,
        /// Its kernel names, as far as readable.
        names: real::RealImage,
    },
}

impl Image {
    /// The built-in kernel `name` of a test module, if listed.
    #[must_use]
    pub fn builtin(&self, name: &[u8]) -> Option<Kernel> {
        match self {
            Image::Test(kernels) => Kernel::from_name(name).filter(|k| kernels.contains(k)),
            Image::Real { .. } => None,
        }
    }

    /// True if `name` may be a real kernel of this image (listed, or the
    /// listing is incomplete).
    #[must_use]
    pub fn has_real(&self, name: &[u8]) -> bool {
        match self {
            Image::Test(_) => false,
            Image::Real { names, .. } => {
                !names.complete || names.names.iter().any(|n| n.as_bytes() == name)
            }
        }
    }
}

/// Parses any module image the emulated device accepts (see the module docs).
///
/// # Errors
/// [`CudaError::INVALID_IMAGE`] for anything that is neither a well-formed
/// test module nor recognisable GPU code.
pub fn load(image: &[u8]) -> Result<Image, CudaError> {
    match classify(image) {
        ImageKind::TestModule => parse(image).map(Image::Test),
        ImageKind::RealGpuCode(kind) => {
            let names = real::read(image, MODULE_MAGIC.as_bytes());
            if let Some(text) = &names.embedded_test_module {
                return parse(text).map(Image::Test);
            }
            tracing::info!(
                image = kind,
                bytes = image.len(),
                kernels = names.names.len(),
                complete = names.complete,
                "real GPU code registered on the emulated device; its kernels cannot run here"
            );
            Ok(Image::Real { kind, names })
        }
        ImageKind::Unknown => parse(image).map(Image::Test),
    }
}

/// The first line of a test module image.
pub const MODULE_MAGIC: &str = "RGPU-EMU-MODULE v1";
/// Most kernels one test module may list.
pub const MODULE_KERNELS_MAX: usize = 64;

/// ELF magic: a cubin.
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Fatbinary wrapper magic `0xBA55ED50`, little-endian.
const FATBIN_MAGIC: &[u8] = &real::FATBIN_MAGIC.to_le_bytes();

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

/// Parses a test module image into the kernels it lists (in order); see
/// [`load`] for every image the device accepts.
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
    fn real_images_register_with_their_names() {
        let ptx = b"//\n.version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k1()\n{}\n";
        let img = load(ptx).unwrap();
        assert!(matches!(img, Image::Real { kind: "PTX", .. }));
        assert!(img.has_real(b"k1"));
        assert!(!img.has_real(b"k2"));
        assert_eq!(img.builtin(b"rgpu_fill_u32"), None);
        let test = load(b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32").unwrap();
        assert_eq!(test.builtin(b"rgpu_fill_u32"), Some(Kernel::FillU32));
        assert!(!test.has_real(b"rgpu_fill_u32"));
        assert_eq!(load(b"hello"), Err(CudaError::INVALID_IMAGE));
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
