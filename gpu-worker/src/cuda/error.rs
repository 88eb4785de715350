//! Why a [`CudaBackend`](super::CudaBackend) could not be opened.
//!
//! Exists so every failure to reach the real driver (no `libcuda.so.1`, our
//! own shim found in its place, no device, a failing `cuInit`) is one typed,
//! printable cause: the server prints it and exits instead of panicking.

use rgpu_proto::CudaError;

/// A failure of [`CudaBackend::open`](super::CudaBackend::open) or of the
/// device probe.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CudaBackendError {
    /// `dlopen("libcuda.so.1")` failed.
    #[error("{library} not found: no NVIDIA driver on this host ({reason})")]
    DriverNotFound {
        /// The library asked for.
        library: &'static str,
        /// What the loader said.
        reason: String,
    },
    /// The `libcuda.so.1` found is rgpu's own shim, which would loop calls
    /// back to a server.
    #[error("{library} resolves to rgpu's own shim (it exports `{marker}`): remove the shim from the worker's library path")]
    ShimLoaded {
        /// The library asked for.
        library: &'static str,
        /// The rgpu-only symbol found in it.
        marker: &'static str,
    },
    /// A driver entry point the backend needs is missing.
    #[error("{library} lacks `{symbol}`: not a usable NVIDIA driver (too old, or rgpu's own shim on the library path)")]
    MissingSymbol {
        /// The library.
        library: &'static str,
        /// The entry point.
        symbol: &'static str,
    },
    /// `cuInit(0)` failed.
    #[error("cuInit failed: CUDA error {0:?}")]
    Init(CudaError),
    /// `cuDeviceGetCount` failed or found no device.
    #[error("no CUDA device usable: {0:?}")]
    NoDevice(CudaError),
    /// `cuDeviceGet` failed for this ordinal.
    #[error("CUDA device {ordinal} unusable: {code:?}")]
    Device {
        /// The ordinal asked for.
        ordinal: u32,
        /// The driver's answer.
        code: CudaError,
    },
    /// `cuDevicePrimaryCtxRetain` or `cuCtxSetCurrent` failed.
    #[error("cannot make the primary context of device {ordinal} current: {code:?}")]
    Context {
        /// The device.
        ordinal: u32,
        /// The driver's answer.
        code: CudaError,
    },
    /// A device property query during open failed.
    #[error("querying device {ordinal} failed: {code:?}")]
    Query {
        /// The device.
        ordinal: u32,
        /// The driver's answer.
        code: CudaError,
    },
}
