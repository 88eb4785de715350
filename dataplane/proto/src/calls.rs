//! The call table: every CUDA call the shim ships to the worker.
//!
//! Streams are not body fields: a call's stream travels in the frame
//! header's ordering key (`key`), which is what the worker orders by. Codes
//! `0x0100..` are calls; codes below `0x0100` are control frames
//! (see [`control`](crate::control)).

use crate::error::FieldError;
use crate::field::{
    Blob, DevicePtr, EventHandle, Field, FunctionHandle, ModuleHandle, Payload, Reader, Slots,
    StreamHandle, MAX_INLINE_BYTES,
};
use crate::message::Message;

/// Bound on the opaque payload of [`AsyncNop`] (bench filler).
pub const MAX_ASYNC_NOP_BYTES: u32 = 64;
/// Bound on device and function names.
pub const MAX_NAME_BYTES: u32 = 256;
/// Bound on a launch's packed parameter bytes (CUDA's classic 4 KiB limit).
pub const MAX_PARAM_BYTES: u32 = 4096;
/// Bound on the number of parameters in an argument layout.
pub const MAX_PARAMS: u16 = 256;

/// Bound on the attributes of one [`LaunchEx`] call.
pub const MAX_LAUNCH_ATTRS: u32 = 16;
/// Bytes of one encoded [`LaunchAttr`] record in [`LaunchEx::attrs`].
pub const LAUNCH_ATTR_BYTES: u32 = 16;
/// Bound on [`LaunchEx::attrs`], in bytes.
pub const MAX_LAUNCH_ATTR_BYTES: u32 = MAX_LAUNCH_ATTRS * LAUNCH_ATTR_BYTES;

/// One launch attribute of [`LaunchEx`]: a `CUlaunchAttributeID` and the
/// first 12 bytes of its `CUlaunchAttributeValue` as three little-endian
/// `u32`s (cooperative flag, priority, cluster x/y/z, …). Attributes whose
/// value does not fit (access-policy windows, events) are refused by the
/// shim before they reach the wire. Encoded as 16-byte records: `id`, then
/// `value[0..3]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchAttr {
    /// `CUlaunchAttributeID`.
    pub id: u32,
    /// The value's first three 32-bit words.
    pub value: [u32; 3],
}

impl LaunchAttr {
    /// Appends `attrs` as records (the caller bounds them by [`MAX_LAUNCH_ATTRS`]).
    pub fn encode_all(attrs: &[LaunchAttr], out: &mut Vec<u8>) {
        debug_assert!(attrs.len() <= MAX_LAUNCH_ATTRS as usize);
        for a in attrs {
            out.extend_from_slice(&a.id.to_le_bytes());
            for v in a.value {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Decodes records; `None` if `bytes` is not a whole number of records
    /// or holds more than [`MAX_LAUNCH_ATTRS`].
    #[must_use]
    pub fn decode_all(bytes: &[u8]) -> Option<impl Iterator<Item = LaunchAttr> + '_> {
        let n = LAUNCH_ATTR_BYTES as usize;
        if !bytes.len().is_multiple_of(n) || bytes.len() > MAX_LAUNCH_ATTR_BYTES as usize {
            return None;
        }
        Some(bytes.chunks_exact(n).map(|c| {
            let w = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            LaunchAttr {
                id: w(0),
                value: [w(4), w(8), w(12)],
            }
        }))
    }
}

/// Where a device-to-host copy's bytes should come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// Inline in the reply body (at most [`MAX_INLINE_BYTES`]).
    Inline,
    /// Written into the shared arena at this byte offset.
    Arena {
        /// Byte offset in the arena.
        offset: u64,
    },
}

impl<'a> Field<'a> for Dest {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Dest::Inline => out.push(0),
            Dest::Arena { offset } => {
                out.push(1);
                offset.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        match u8::decode(r)? {
            0 => Ok(Dest::Inline),
            1 => Ok(Dest::Arena {
                offset: u64::decode(r)?,
            }),
            tag => Err(FieldError::BadTag { tag }),
        }
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        if g.u64().is_multiple_of(2) {
            Dest::Inline
        } else {
            Dest::Arena { offset: g.u64() }
        }
    }
}

/// Element width of a memset (`cuMemsetD8/D16/D32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemsetWidth {
    /// 8-bit elements.
    D8,
    /// 16-bit elements.
    D16,
    /// 32-bit elements.
    D32,
}

impl<'a> Field<'a> for MemsetWidth {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            MemsetWidth::D8 => 1,
            MemsetWidth::D16 => 2,
            MemsetWidth::D32 => 4,
        });
    }
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        match u8::decode(r)? {
            1 => Ok(MemsetWidth::D8),
            2 => Ok(MemsetWidth::D16),
            4 => Ok(MemsetWidth::D32),
            tag => Err(FieldError::BadTag { tag }),
        }
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        match g.u64() % 3 {
            0 => MemsetWidth::D8,
            1 => MemsetWidth::D16,
            _ => MemsetWidth::D32,
        }
    }
}

call_table! {
    /// Null synchronous call (round-trip benchmark).
    0x0101 Nop: Sync {} -> NopReply {};
    /// Null asynchronous call with a small opaque payload (throughput bench).
    0x0102 AsyncNop<'a>: Async { payload: Blob<'a, MAX_ASYNC_NOP_BYTES> };

    /// rgpu session call, no CUDA equivalent: asks the server's device pool
    /// for `count` devices, each with `memory_bytes` (if nonzero), else
    /// `fraction_milli` thousandths of a device (if nonzero), else the
    /// server's default share. Sent before any GPU call (once a context
    /// exists it is `CUDA_ERROR_INVALID_VALUE`); a request that does not
    /// fit is `CUDA_ERROR_OUT_OF_MEMORY` and may be retried smaller.
    0x0103 RequestDevices: Sync {
        /// Devices wanted (at least 1).
        count: u32,
        /// Share of each device in thousandths (1..=1000), used when
        /// `memory_bytes` is 0.
        fraction_milli: u32,
        /// Memory wanted on each device, in bytes (0: see `fraction_milli`).
        memory_bytes: u64,
    } -> DevicesGranted { count: u32, memory_bytes: u64 };

    /// `cuDeviceGetCount`.
    0x0110 DeviceGetCount: Sync {} -> DeviceCount { count: u32 };
    /// `cuDeviceGetAttribute`.
    0x0111 DeviceGetAttribute: Sync {
        /// Device ordinal.
        device: u32,
        /// `CUdevice_attribute` enum value.
        attribute: u32,
    } -> DeviceAttribute { value: i32 };
    /// `cuDeviceGetName`.
    0x0112 DeviceGetName: Sync { device: u32 } -> DeviceName<'a> {
        name: Blob<'a, MAX_NAME_BYTES>,
    };
    /// `cuDeviceTotalMem`.
    0x0113 DeviceTotalMem: Sync { device: u32 } -> DeviceTotalMemReply { bytes: u64 };
    /// `cuDeviceGetUuid`.
    0x0114 DeviceGetUuid: Sync { device: u32 } -> DeviceUuid { uuid: [u8; 16] };
    /// `cuMemGetInfo`.
    0x0115 MemGetInfo: Sync {} -> MemInfo { free: u64, total: u64 };
    /// rgpu call behind `nvmlDeviceGetUtilizationRates`: the whole device's
    /// kernel-busy percent over the worker's last sample period (NVML's
    /// semantics, period between 1/6 s and 1 s when sampled often enough;
    /// `docs/worker.md`, "Device utilization").
    0x0116 DeviceGetUtilization: Sync { device: u32 } -> DeviceUtilization {
        /// Percent (0..=100) of the period during which kernels ran.
        gpu_percent: u32,
        /// Memory-controller percent: not measured by rgpu, always 0.
        memory_percent: u32,
        /// Length of the period the percent covers, in microseconds.
        period_us: u64,
    };

    /// `cuMemAlloc`.
    0x0120 MemAlloc: Sync { bytes: u64 } -> MemAllocReply { ptr: DevicePtr };
    /// `cuMemFree`.
    0x0121 MemFree: Sync { ptr: DevicePtr } -> MemFreeReply {};
    /// `cuMemcpyHtoD`.
    0x0122 MemcpyHtoD<'a>: Sync { dst: DevicePtr, src: Payload<'a> } -> MemcpyHtoDReply {};
    /// `cuMemcpyHtoDAsync`.
    0x0123 MemcpyHtoDAsync<'a>: Async { dst: DevicePtr, src: Payload<'a> };
    /// `cuMemcpyDtoH`; the reply carries the bytes inline or names the
    /// arena region they were written to.
    0x0124 MemcpyDtoH: Sync { src: DevicePtr, len: u64, dst: Dest } -> MemcpyDtoHReply<'a> {
        data: Payload<'a>,
    };
    /// `cuMemcpyDtoHAsync`; async results can only land in the arena.
    0x0125 MemcpyDtoHAsync: Async { src: DevicePtr, len: u64, arena_offset: u64 };
    /// `cuMemcpyDtoD`.
    0x0126 MemcpyDtoD: Sync { dst: DevicePtr, src: DevicePtr, len: u64 } -> MemcpyDtoDReply {};
    /// `cuMemcpyDtoDAsync`.
    0x0127 MemcpyDtoDAsync: Async { dst: DevicePtr, src: DevicePtr, len: u64 };
    /// `cuMemsetD8/D16/D32`.
    0x0128 Memset: Sync { dst: DevicePtr, width: MemsetWidth, value: u32, count: u64 }
        -> MemsetReply {};
    /// `cuMemsetD8/D16/D32Async`.
    0x0129 MemsetAsync: Async { dst: DevicePtr, width: MemsetWidth, value: u32, count: u64 };
    /// `cuMemAllocPitch`: `height` rows of `width_bytes`, each row
    /// starting at a multiple of the returned pitch; the quota is charged
    /// pitch × height.
    0x012a MemAllocPitch: Sync {
        /// Row width in bytes.
        width_bytes: u64,
        /// Rows.
        height: u64,
        /// Element size in bytes (4, 8 or 16).
        element_size: u32,
    } -> MemAllocPitchReply { ptr: DevicePtr, pitch: u64 };
    /// `cuMemAllocAsync`, stream-ordered on the stream in the header key;
    /// the quota is charged when the call is answered.
    0x012b MemAllocAsync: Sync { bytes: u64 } -> MemAllocAsyncReply { ptr: DevicePtr };
    /// `cuMemFreeAsync`, stream-ordered on the stream in the header key.
    0x012c MemFreeAsync: Async { ptr: DevicePtr };
    /// `cuDeviceGetDefaultMemPool`: the worker's handle for the device's
    /// default memory pool (the only pool served).
    0x012d DeviceGetDefaultMemPool: Sync { device: u32 } -> DefaultMemPool { pool: u64 };
    /// `cuMemAllocFromPoolAsync` on the stream in the header key.
    0x012e MemAllocFromPoolAsync: Sync { pool: u64, bytes: u64 }
        -> MemAllocFromPoolAsyncReply { ptr: DevicePtr };
    /// `cuModuleGetGlobal`: a module global's address and size (a global
    /// is device memory the module owns; it is charged to the quota while
    /// the module is loaded).
    0x012f ModuleGetGlobal<'a>: Sync { module: ModuleHandle, name: Blob<'a, MAX_NAME_BYTES> }
        -> ModuleGlobal { ptr: DevicePtr, bytes: u64 };

    /// `cuModuleLoadData` with the image inline, keyed by its content hash
    /// so the worker can cache it.
    0x0130 ModuleLoad<'a>: Sync {
        /// SHA-256 (or other 32-byte digest) of `image`.
        hash: [u8; 32],
        image: Blob<'a, MAX_INLINE_BYTES>,
    } -> ModuleLoaded { module: ModuleHandle };
    /// Load a module the worker already cached; misses with
    /// `CUDA_ERROR_NOT_FOUND`, after which the shim sends [`ModuleLoad`].
    0x0131 ModuleLoadByHash: Sync { hash: [u8; 32] } -> ModuleLoadedByHash { module: ModuleHandle };
    /// `cuModuleUnload`.
    0x0132 ModuleUnload: Sync { module: ModuleHandle } -> ModuleUnloadReply {};
    /// `cuModuleGetFunction`, also returning the kernel's argument layout so
    /// the shim can pack launch parameters.
    0x0133 FunctionLookup<'a>: Sync { module: ModuleHandle, name: Blob<'a, MAX_NAME_BYTES> }
        -> FunctionInfo<'a> {
            function: FunctionHandle,
            /// (offset, size) of each parameter in the packed buffer.
            params: Slots<'a, MAX_PARAMS>,
        };
    /// `cuLaunchKernel` with parameters packed per the argument layout.
    0x0134 Launch<'a>: Async {
        function: FunctionHandle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        params: Blob<'a, MAX_PARAM_BYTES>,
    };
    /// `cuLaunchKernelEx` / `cuLaunchCooperativeKernel`: [`Launch`] plus
    /// launch attributes ([`LaunchAttr`] records).
    0x0135 LaunchEx<'a>: Async {
        function: FunctionHandle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem_bytes: u32,
        params: Blob<'a, MAX_PARAM_BYTES>,
        /// [`LaunchAttr`] records, [`LAUNCH_ATTR_BYTES`] each.
        attrs: Blob<'a, MAX_LAUNCH_ATTR_BYTES>,
    };
    /// `cuFuncGetAttribute` of a looked-up function (`CUfunction_attribute`).
    0x0136 FuncGetAttribute: Sync { function: FunctionHandle, attribute: i32 }
        -> FuncAttribute { value: i32 };

    /// `cuStreamCreateWithPriority` with a client-chosen handle: no round
    /// trip. The worker maps `stream` to its own; a built-in or live handle
    /// is `CUDA_ERROR_INVALID_HANDLE`, deferred like any async failure.
    0x0140 StreamCreate: Async {
        /// The handle the client will use as this stream's ordering key
        /// (not 0, 1 or 2: those are built-in streams).
        stream: StreamHandle,
        flags: u32,
        priority: i32,
    };
    /// `cuStreamDestroy` of the stream in the header key, after the work
    /// queued on it; an unknown handle is a deferred
    /// `CUDA_ERROR_INVALID_HANDLE`.
    0x0141 StreamDestroy: Async {};
    /// `cuStreamQuery`; "still running" is `CUDA_ERROR_NOT_READY`.
    0x0142 StreamQuery: Sync {} -> StreamQueryReply {};
    /// `cuStreamSynchronize`.
    0x0143 StreamSynchronize: Sync {} -> StreamSynchronizeReply {};
    /// `cuStreamWaitEvent`.
    0x0144 StreamWaitEvent: Async { event: EventHandle, flags: u32 };

    /// `cuEventCreate` with a client-chosen handle: no round trip. A zero
    /// or live handle is a deferred `CUDA_ERROR_INVALID_HANDLE`.
    0x0150 EventCreate: Async { event: EventHandle, flags: u32 };
    /// `cuEventRecord` on the stream in the header key.
    0x0151 EventRecord: Async { event: EventHandle };
    /// `cuEventQuery`; "not yet" is `CUDA_ERROR_NOT_READY`.
    0x0152 EventQuery: Sync { event: EventHandle } -> EventQueryReply {};
    /// `cuEventSynchronize`.
    0x0153 EventSynchronize: Sync { event: EventHandle } -> EventSynchronizeReply {};
    /// `cuEventDestroy`; an unknown handle is a deferred
    /// `CUDA_ERROR_INVALID_HANDLE`.
    0x0154 EventDestroy: Async { event: EventHandle };
    /// `cuEventElapsedTime`, in nanoseconds (the shim converts to ms).
    0x0155 EventElapsed: Sync { start: EventHandle, end: EventHandle }
        -> EventElapsedReply { elapsed_ns: u64 };

    /// `cuCtxSynchronize`.
    0x0160 CtxSynchronize: Sync {} -> CtxSynchronizeReply {};

    /// `cuStreamBeginCapture_v2` on the stream in the header key
    /// (`mode`: a `CUstreamCaptureMode`); a failure is deferred.
    0x0170 StreamBeginCapture: Async { mode: u32 };
    /// `cuStreamEndCapture` on the stream in the header key; the captured
    /// graph gets the client-chosen handle `graph` (nonzero). An
    /// invalidated capture is `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED` and
    /// yields no graph.
    0x0171 StreamEndCapture: Sync { graph: u64 } -> StreamEndCaptureReply {};
    /// `cuGraphInstantiateWithFlags`: graph `graph` becomes executable
    /// graph `exec` (a client-chosen nonzero handle).
    0x0172 GraphInstantiate: Sync { graph: u64, exec: u64, flags: u64 }
        -> GraphInstantiateReply {};
    /// `cuGraphLaunch` of `exec` on the stream in the header key.
    0x0173 GraphLaunch: Async { exec: u64 };
    /// `cuGraphExecDestroy`.
    0x0174 GraphExecDestroy: Async { exec: u64 };
    /// `cuGraphDestroy`.
    0x0175 GraphDestroy: Async { graph: u64 };

    /// `cuDriverGetVersion`, answered by the shim.
    0x01f0 DriverGetVersion: Local {} -> DriverVersion { version: i32 };
}

/// Whether a sync call's reply reports earlier asynchronous failures (the
/// deferred error) and the sticky error.
///
/// Device queries and `MemGetInfo` do not: in CUDA device queries touch no
/// context, so a failed kernel is not theirs to report, and NVML keeps
/// answering (memory info included) while a context is broken. The shim's NVML library and its cached device facts use these
/// calls on the application's connection; if they consumed a deferred
/// error, the application would never see it. The error stays pending for
/// the next call that does report it.
pub const fn reports_async_errors(code: u16) -> bool {
    !matches!(
        code,
        DeviceGetCount::CODE
            | DeviceGetAttribute::CODE
            | DeviceGetName::CODE
            | DeviceTotalMem::CODE
            | DeviceGetUuid::CODE
            | DeviceGetUtilization::CODE
            | MemGetInfo::CODE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn codes_unique_and_in_call_range() {
        let mut codes: Vec<u16> = CALL_TABLE.iter().map(|c| c.code).collect();
        assert!(codes.iter().all(|&c| c >= crate::control::FIRST_CALL_CODE));
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n, "duplicate call code");
    }

    #[test]
    fn device_queries_do_not_report_async_errors() {
        assert!(!reports_async_errors(DeviceGetAttribute::CODE));
        assert!(!reports_async_errors(DeviceGetUtilization::CODE));
        assert!(!reports_async_errors(MemGetInfo::CODE));
        assert!(reports_async_errors(CtxSynchronize::CODE));
        assert!(reports_async_errors(MemcpyDtoH::CODE));
    }

    #[test]
    fn async_nop_is_small() {
        let mut out = Vec::new();
        AsyncNop {
            payload: Blob(&[0; 28]),
        }
        .encode_body(&mut out);
        // 32-byte header + 32-byte body = the bench's 64-byte async call.
        assert_eq!(crate::HEADER_BYTES + out.len(), 64);
    }

    #[test]
    fn unknown_kind_is_typed() {
        assert_eq!(
            Call::decode(0x7777, &[]),
            Err(crate::DecodeError::UnknownKind { kind: 0x7777 })
        );
        assert_eq!(
            Reply::decode(AsyncNop::CODE, &[]),
            Err(crate::DecodeError::UnknownKind {
                kind: AsyncNop::CODE
            })
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let err = Call::decode(Nop::CODE, &[0]).unwrap_err();
        assert_eq!(
            err,
            crate::DecodeError::TrailingBytes {
                kind: Nop::CODE,
                extra: 1
            }
        );
    }
}
