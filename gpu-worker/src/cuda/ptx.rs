//! The PTX test module rgpu ships for the `cuda` backend.
//!
//! Exists so GPU tests (and later compute-share measurements) run real
//! kernels with no CUDA toolkit: PTX is text, and `cuModuleLoadData`
//! JIT-compiles it for whatever GPU is present.

/// The module text (`kernels.ptx`): `vadd`, `reduce_sum` and `spin`.
pub const TEST_MODULE_PTX: &str = include_str!("kernels.ptx");
/// `vadd(const float *a, const float *b, float *c, u32 n)`: `c = a + b`.
pub const VADD: &[u8] = b"vadd";
/// `reduce_sum(const float *x, float *out, u32 n)`: `*out += Σ x`.
pub const REDUCE_SUM: &[u8] = b"reduce_sum";
/// `spin(float *out, u32 iters, u32 n)`: `iters` dependent FMAs per thread
/// `i < n`, a compute-heavy kernel whose run time scales with `iters`; with
/// `iters = 0`, `out[i] = i`.
pub const SPIN: &[u8] = b"spin";
