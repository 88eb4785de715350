//! The module loading mode the shim reports (`cuModuleGetLoadingMode`).
//!
//! NVIDIA's driver reads `CUDA_MODULE_LOADING` (`EAGER` or `LAZY`; lazy is its default since
//! CUDA 12.2, per NVIDIA's "Lazy Loading" section of the CUDA C++ Programming Guide). The CUDA
//! runtime asks the driver for the mode before it loads the fatbins a program registered:
//! told "eager", it loads every one of them (`cuLibraryLoadData`) at its first call; told
//! "lazy", it loads a fatbin only when one of its kernels is first used. PyTorch registers
//! about 480 fatbins (≈ 340 MB), so the shim answers lazy by default like the driver, and
//! eager when the user asks for it the driver's way. See `docs/shim.md` (PyTorch).

use std::ffi::c_int;
use std::sync::OnceLock;

/// `CU_MODULE_EAGER_LOADING`: modules are loaded when registered, the classic behaviour.
pub const CU_MODULE_EAGER_LOADING: c_int = 1;
/// `CU_MODULE_LAZY_LOADING`: modules are loaded when first used.
pub const CU_MODULE_LAZY_LOADING: c_int = 2;
/// The variable NVIDIA's driver reads the mode from.
pub const LOADING_ENV: &str = "CUDA_MODULE_LOADING";

/// The mode for a `CUDA_MODULE_LOADING` value: `EAGER` (any case, spaces trimmed) is eager;
/// unset, `LAZY`, or anything else is lazy (the driver's default); `Err` carries a value
/// that is neither, so the caller can say it was ignored.
pub fn mode_from(value: Option<&str>) -> Result<c_int, String> {
    match value.map(str::trim) {
        None => Ok(CU_MODULE_LAZY_LOADING),
        Some(v) if v.eq_ignore_ascii_case("EAGER") => Ok(CU_MODULE_EAGER_LOADING),
        Some(v) if v.eq_ignore_ascii_case("LAZY") => Ok(CU_MODULE_LAZY_LOADING),
        Some(v) => Err(v.to_owned()),
    }
}

/// The loading mode of this process, read once from [`LOADING_ENV`].
pub fn mode() -> c_int {
    static MODE: OnceLock<c_int> = OnceLock::new();
    *MODE.get_or_init(|| {
        mode_from(std::env::var(LOADING_ENV).ok().as_deref()).unwrap_or_else(|bad| {
            tracing::warn!(
                value = %bad,
                "rgpu shim: {LOADING_ENV} is neither EAGER nor LAZY; loading lazily"
            );
            CU_MODULE_LAZY_LOADING
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_lazy_like_the_driver() {
        assert_eq!(mode_from(None), Ok(CU_MODULE_LAZY_LOADING));
    }

    #[test]
    fn eager_and_lazy_are_read_in_any_case() {
        assert_eq!(mode_from(Some("EAGER")), Ok(CU_MODULE_EAGER_LOADING));
        assert_eq!(mode_from(Some(" eager ")), Ok(CU_MODULE_EAGER_LOADING));
        assert_eq!(mode_from(Some("Lazy")), Ok(CU_MODULE_LAZY_LOADING));
    }

    #[test]
    fn other_values_are_reported() {
        assert_eq!(mode_from(Some("sometimes")), Err("sometimes".to_owned()));
        assert_eq!(mode_from(Some("")), Err(String::new()));
    }
}
