//! The emulated device's built-in kernels, computed on the CPU.
//!
//! Exists because the emulated device cannot run real GPU code, yet the
//! launch path (argument layouts, parameter packing, pointer validation,
//! grid × block semantics, deferred and sticky failures) must be testable
//! end to end without a GPU. Each kernel has a fixed argument layout, like
//! `cuFuncGetParamInfo` reports for a compiled kernel, and computes what the
//! equivalent CUDA C kernel computes:
//!
//! | name | CUDA C signature | per thread `i` (global linear id) |
//! |---|---|---|
//! | `rgpu_vector_add_f32` | `(const float* a, const float* b, float* c, unsigned n)` | `if (i < n) c[i] = a[i] + b[i]` |
//! | `rgpu_fill_u32` | `(unsigned* dst, unsigned value, unsigned n)` | `if (i < n) dst[i] = value` |
//! | `rgpu_fill_f32` | `(float* dst, float value, unsigned n)` | `if (i < n) dst[i] = value` |
//! | `rgpu_saxpy_f32` | `(unsigned n, float a, const float* x, float* y)` | `if (i < n) y[i] = a * x[i] + y[i]` |
//! | `rgpu_sum_f32` | `(const float* x, float* out, unsigned n)` | grid-stride reduction: `*out = Σ x[0..n]` |
//! | `rgpu_spin_us` | `(unsigned us)` | busy-waits `min(us, SPIN_US_MAX)` µs of wall time per launch, touches no memory |
//!
//! Element-wise kernels touch only the first `min(n, grid × block)`
//! elements, as a kernel without a grid-stride loop would. Every pointer
//! range a launch touches is checked before anything is written: a range
//! outside live memory is `CUDA_ERROR_ILLEGAL_ADDRESS` (700) and a
//! misaligned float pointer `CUDA_ERROR_MISALIGNED_ADDRESS` (716), both
//! sticky, as a faulting kernel on a real device. (The emulator is stricter
//! than hardware here: a real GPU may silently read past an allocation.)
//!
//! `rgpu_spin_us` exists for the compute-share tests: a kernel whose
//! duration is known and measurable, like a GPU kernel that keeps the SMs
//! busy for a while. It spins the launching thread, bounded by
//! [`SPIN_US_MAX`].

use rgpu_proto::{CudaError, DevicePtr};

use super::memory::DeviceMemory;

/// Bytes of one `float` / `unsigned` element.
const ELEM_BYTES: u64 = 4;
/// Longest one `rgpu_spin_us` launch spins, in µs (a larger argument is clamped).
pub const SPIN_US_MAX: u32 = 100_000;

/// One built-in kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `c[i] = a[i] + b[i]`.
    VectorAddF32,
    /// `dst[i] = value` (u32).
    FillU32,
    /// `dst[i] = value` (f32).
    FillF32,
    /// `y[i] = a * x[i] + y[i]`.
    SaxpyF32,
    /// `*out = Σ x[0..n]`.
    SumF32,
    /// Busy-waits the given µs (bounded by [`SPIN_US_MAX`]).
    SpinUs,
}

/// Every built-in kernel.
pub const ALL_KERNELS: [Kernel; 6] = [
    Kernel::VectorAddF32,
    Kernel::FillU32,
    Kernel::FillF32,
    Kernel::SaxpyF32,
    Kernel::SumF32,
    Kernel::SpinUs,
];

impl Kernel {
    /// The kernel's name as listed in a module and looked up by the shim.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::VectorAddF32 => "rgpu_vector_add_f32",
            Kernel::FillU32 => "rgpu_fill_u32",
            Kernel::FillF32 => "rgpu_fill_f32",
            Kernel::SaxpyF32 => "rgpu_saxpy_f32",
            Kernel::SumF32 => "rgpu_sum_f32",
            Kernel::SpinUs => "rgpu_spin_us",
        }
    }

    /// The built-in kernel called `name`.
    #[must_use]
    pub fn from_name(name: &[u8]) -> Option<Self> {
        ALL_KERNELS
            .into_iter()
            .find(|k| k.name().as_bytes() == name)
    }

    /// (offset, size) of each parameter in the packed buffer.
    #[must_use]
    pub const fn layout(self) -> &'static [(u32, u32)] {
        match self {
            Kernel::VectorAddF32 => &[(0, 8), (8, 8), (16, 8), (24, 4)],
            Kernel::FillU32 | Kernel::FillF32 => &[(0, 8), (8, 4), (12, 4)],
            Kernel::SaxpyF32 => &[(0, 4), (4, 4), (8, 8), (16, 8)],
            Kernel::SumF32 => &[(0, 8), (8, 8), (16, 4)],
            Kernel::SpinUs => &[(0, 4)],
        }
    }

    /// Size of the packed parameter buffer.
    #[must_use]
    pub fn params_bytes(self) -> usize {
        self.layout()
            .iter()
            .map(|&(o, s)| (o + s) as usize)
            .max()
            .unwrap_or(0)
    }

    /// Runs the kernel over `threads` threads with packed `params`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] for a parameter buffer of the wrong
    /// size (nothing runs); the sticky 700/716 for bad pointers (nothing
    /// is written).
    pub fn run(self, mem: &mut DeviceMemory, params: &[u8], threads: u64) -> Result<(), CudaError> {
        if params.len() != self.params_bytes() {
            return Err(CudaError::INVALID_VALUE);
        }
        let p = Params {
            bytes: params,
            layout: self.layout(),
        };
        match self {
            Kernel::VectorAddF32 => {
                let count = u64::from(p.u32(3)).min(threads);
                let a = read_f32(mem, p.ptr(0), count)?;
                let b = read_f32(mem, p.ptr(1), count)?;
                let out = device_f32(mem, p.ptr(2), count)?;
                write_f32(out, a.iter().zip(&b).map(|(x, y)| x + y));
            }
            Kernel::FillU32 | Kernel::FillF32 => {
                let count = u64::from(p.u32(2)).min(threads);
                let value = p.u32(1).to_le_bytes();
                let out = device_f32(mem, p.ptr(0), count)?;
                for c in out.chunks_exact_mut(4) {
                    c.copy_from_slice(&value);
                }
            }
            Kernel::SaxpyF32 => {
                let count = u64::from(p.u32(0)).min(threads);
                let a = f32::from_bits(p.u32(1));
                let x = read_f32(mem, p.ptr(2), count)?;
                let y = read_f32(mem, p.ptr(3), count)?;
                let out = device_f32(mem, p.ptr(3), count)?;
                write_f32(out, x.iter().zip(&y).map(|(x, y)| a.mul_add(*x, *y)));
            }
            Kernel::SumF32 => {
                let n = u64::from(p.u32(2));
                let x = read_f32(mem, p.ptr(0), n)?;
                let out = device_f32(mem, p.ptr(1), 1)?;
                let sum: f32 = x.iter().sum();
                out.copy_from_slice(&sum.to_le_bytes());
            }
            Kernel::SpinUs => {
                let us = p.u32(0).min(SPIN_US_MAX);
                let until =
                    std::time::Instant::now() + std::time::Duration::from_micros(u64::from(us));
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
        Ok(())
    }
}

/// `CUfunction_attribute` ids answered by [`function_attribute`].
pub mod func_attr {
    /// `CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK`.
    pub const MAX_THREADS_PER_BLOCK: i32 = 0;
    /// `CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`.
    pub const SHARED_SIZE_BYTES: i32 = 1;
    /// `CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES`.
    pub const CONST_SIZE_BYTES: i32 = 2;
    /// `CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES`.
    pub const LOCAL_SIZE_BYTES: i32 = 3;
    /// `CU_FUNC_ATTRIBUTE_NUM_REGS`.
    pub const NUM_REGS: i32 = 4;
    /// `CU_FUNC_ATTRIBUTE_PTX_VERSION`.
    pub const PTX_VERSION: i32 = 5;
    /// `CU_FUNC_ATTRIBUTE_BINARY_VERSION`.
    pub const BINARY_VERSION: i32 = 6;
    /// `CU_FUNC_ATTRIBUTE_CACHE_MODE_CA`.
    pub const CACHE_MODE_CA: i32 = 7;
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: i32 = 8;
    /// `CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT`.
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: i32 = 9;
    /// Last `CUfunction_attribute` in CUDA 12.9's `cuda.h`
    /// (`CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE`).
    pub const LAST: i32 = 15;
}

/// `cuFuncGetAttribute` of a built-in kernel. The built-ins run on the host, so what a
/// compiled kernel would report about its own resources is literally zero here: no static
/// shared, constant or local memory, no registers, no cache-mode flag. Limits are the
/// device's (`max_threads`, `max_dynamic_shared`); PTX and binary versions are the device's
/// compute capability (`cc`, as `major * 10 + minor`); the carveout preference is the
/// default (-1). Cluster attributes (10..=15) are `CUDA_ERROR_NOT_SUPPORTED` (no clusters);
/// other ids `CUDA_ERROR_INVALID_VALUE`.
///
/// # Errors
/// As described.
pub fn function_attribute(
    attribute: i32,
    max_threads: i32,
    max_dynamic_shared: i32,
    cc: i32,
) -> Result<i32, CudaError> {
    use func_attr as A;
    match attribute {
        A::MAX_THREADS_PER_BLOCK => Ok(max_threads),
        A::SHARED_SIZE_BYTES
        | A::CONST_SIZE_BYTES
        | A::LOCAL_SIZE_BYTES
        | A::NUM_REGS
        | A::CACHE_MODE_CA => Ok(0),
        A::PTX_VERSION | A::BINARY_VERSION => Ok(cc),
        A::MAX_DYNAMIC_SHARED_SIZE_BYTES => Ok(max_dynamic_shared),
        A::PREFERRED_SHARED_MEMORY_CARVEOUT => Ok(-1),
        10..=A::LAST => Err(CudaError::NOT_SUPPORTED),
        _ => Err(CudaError::INVALID_VALUE),
    }
}

/// Packed parameters read per a layout.
struct Params<'a> {
    bytes: &'a [u8],
    layout: &'static [(u32, u32)],
}

impl Params<'_> {
    fn field<const N: usize>(&self, index: usize) -> [u8; N] {
        let (off, size) = self.layout[index];
        debug_assert_eq!(
            size as usize, N,
            "kernel reads a parameter at its layout size"
        );
        let mut out = [0u8; N];
        // In bounds: the buffer length equals the layout's extent (checked in `run`).
        out.copy_from_slice(&self.bytes[off as usize..off as usize + N]);
        out
    }
    fn u32(&self, index: usize) -> u32 {
        u32::from_le_bytes(self.field(index))
    }
    fn ptr(&self, index: usize) -> DevicePtr {
        DevicePtr(u64::from_le_bytes(self.field(index)))
    }
}

/// The device bytes of `count` floats at `ptr`, checked like a kernel's access.
fn device_f32(mem: &mut DeviceMemory, ptr: DevicePtr, count: u64) -> Result<&mut [u8], CudaError> {
    if count == 0 {
        return Ok(&mut []);
    }
    if !ptr.0.is_multiple_of(ELEM_BYTES) {
        return Err(CudaError::MISALIGNED_ADDRESS);
    }
    let len = count
        .checked_mul(ELEM_BYTES)
        .ok_or(CudaError::ILLEGAL_ADDRESS)?;
    mem.slice_mut(ptr, len).ok_or(CudaError::ILLEGAL_ADDRESS)
}

/// A copy of `count` floats at `ptr` (inputs are copied so that outputs may
/// alias them, as in-place kernels do).
fn read_f32(mem: &mut DeviceMemory, ptr: DevicePtr, count: u64) -> Result<Vec<f32>, CudaError> {
    let bytes = device_f32(mem, ptr, count)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn write_f32(out: &mut [u8], values: impl Iterator<Item = f32>) {
    for (c, v) in out.chunks_exact_mut(4).zip(values) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(fields: &[&[u8]]) -> Vec<u8> {
        fields.concat()
    }

    #[test]
    fn layouts_are_contiguous_and_named_uniquely() {
        for k in ALL_KERNELS {
            assert_eq!(Kernel::from_name(k.name().as_bytes()), Some(k));
            let mut end = 0;
            for &(o, s) in k.layout() {
                assert!(o >= end && o % s == 0, "{} slot misaligned", k.name());
                end = o + s;
            }
        }
        assert_eq!(Kernel::from_name(b"vector_add"), None);
    }

    #[test]
    fn spin_takes_at_least_its_time() {
        let mut m = DeviceMemory::new(1 << 20, 16);
        let t = std::time::Instant::now();
        Kernel::SpinUs
            .run(&mut m, &2_000u32.to_le_bytes(), 1)
            .unwrap();
        assert!(t.elapsed() >= std::time::Duration::from_micros(2_000));
        assert_eq!(
            Kernel::SpinUs.run(&mut m, &[0; 3], 1),
            Err(CudaError::INVALID_VALUE)
        );
    }

    #[test]
    fn vector_add_respects_thread_count_and_bounds() {
        let mut m = DeviceMemory::new(1 << 20, 16);
        let (a, b, c) = (
            m.alloc(16).unwrap(),
            m.alloc(16).unwrap(),
            m.alloc(16).unwrap(),
        );
        m.slice_mut(a, 16)
            .unwrap()
            .copy_from_slice(&[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat());
        m.slice_mut(b, 16)
            .unwrap()
            .copy_from_slice(&[10f32, 20., 30., 40.].map(f32::to_le_bytes).concat());
        let params = pack(&[
            &a.0.to_le_bytes(),
            &b.0.to_le_bytes(),
            &c.0.to_le_bytes(),
            &4u32.to_le_bytes(),
        ]);
        Kernel::VectorAddF32.run(&mut m, &params, 3).unwrap();
        let got: Vec<f32> = m
            .slice(c, 16)
            .unwrap()
            .chunks_exact(4)
            .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![11., 22., 33., 0.]);
        let params = pack(&[
            &a.0.to_le_bytes(),
            &b.0.to_le_bytes(),
            &c.0.to_le_bytes(),
            &5u32.to_le_bytes(),
        ]);
        assert_eq!(
            Kernel::VectorAddF32.run(&mut m, &params, 64),
            Err(CudaError::ILLEGAL_ADDRESS)
        );
        assert_eq!(
            Kernel::VectorAddF32.run(&mut m, &params[..27], 64),
            Err(CudaError::INVALID_VALUE)
        );
    }
}
