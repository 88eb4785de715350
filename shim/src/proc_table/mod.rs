//! The `cuGetProcAddress` table: which function answers a (symbol, version, flags) request.
//!
//! The CUDA runtime asks for every entry point by its base name (`cuMemAlloc`) and the CUDA
//! version it was built for. A driver returns the newest ABI variant of that name that is not
//! newer than the request (`cuMemAlloc` at 3020 is `cuMemAlloc_v2`), and the `_ptds`/`_ptsz`
//! variant when the caller asks for per-thread default-stream semantics. The rows come from
//! NVIDIA's `cudaTypedefs.h` (see `entries.rs`); this module holds the pure lookup rules.

mod entries;
pub mod exports;

pub(crate) use entries::ENTRIES;
pub use entries::ENTRY_COUNT;

// The generator read the whole header set (12.9 declares over 600 variants, 13.5 over 700).
const _: () = assert!(ENTRY_COUNT > 700);

use crate::cuda_types::{CUresult, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM};

/// Which default-stream semantics an entry implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// The legacy default stream (no suffix).
    Legacy,
    /// Per-thread default stream, `_ptds` suffix (copies and memsets).
    PerThreadDs,
    /// Per-thread default stream, `_ptsz` suffix (calls that take a stream).
    PerThreadSz,
}

impl Stream {
    /// True for the per-thread-default-stream variants.
    pub fn is_per_thread(self) -> bool {
        self != Stream::Legacy
    }
}

/// One ABI variant of one driver entry point.
#[derive(Debug)]
pub struct Entry {
    /// The base name the runtime asks for (`cuMemAlloc`).
    pub name: &'static str,
    /// The CUDA version in which this variant appeared (`3020` for `cuMemAlloc_v2`).
    pub version: u32,
    /// Default-stream semantics of this variant.
    pub stream: Stream,
    /// The function handed out while the shim does not implement this variant: it logs once
    /// and returns `CUDA_ERROR_NOT_SUPPORTED`.
    pub(crate) stub: extern "C" fn() -> CUresult,
}

impl Entry {
    pub(crate) const fn new(
        name: &'static str,
        version: u32,
        stream: Stream,
        stub: extern "C" fn() -> CUresult,
    ) -> Self {
        Self {
            name,
            version,
            stream,
            stub,
        }
    }
}

/// The answer to one `cuGetProcAddress` request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The index into [`ENTRIES`] of the variant to return.
    Found(usize),
    /// No entry point of that name exists.
    SymbolNotFound,
    /// The name exists, but only in versions newer than the one requested.
    VersionNotSufficient {
        /// The oldest version that has the symbol.
        oldest: u32,
    },
}

/// Resolves `symbol` at `requested_version` with the `cuGetProcAddress` `flags`.
///
/// A trailing `_ptds`/`_ptsz` on the name also selects the per-thread variant.
pub fn lookup(symbol: &str, requested_version: i32, flags: u64) -> Lookup {
    let (base, suffix_per_thread) = match symbol
        .strip_suffix("_ptds")
        .or_else(|| symbol.strip_suffix("_ptsz"))
    {
        Some(base) => (base, true),
        None => (symbol, false),
    };
    let per_thread =
        suffix_per_thread || flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM != 0;
    let start = ENTRIES.partition_point(|e| e.name < base);
    let end = start + ENTRIES[start..].partition_point(|e| e.name == base);
    let rows = &ENTRIES[start..end];
    let Some(oldest) = rows.iter().map(|e| e.version).min() else {
        return Lookup::SymbolNotFound;
    };
    // A negative version can never be satisfied; treat it like version 0.
    let requested = u32::try_from(requested_version).unwrap_or(0);
    let newest_of = |want_per_thread: bool| {
        rows.iter()
            .enumerate()
            .filter(|(_, e)| e.version <= requested && e.stream.is_per_thread() == want_per_thread)
            .max_by_key(|(_, e)| e.version)
            .map(|(i, _)| start + i)
    };
    let chosen = if per_thread {
        // Entry points without a per-thread variant (cuInit) have one meaning for both modes.
        newest_of(true).or_else(|| newest_of(false))
    } else {
        newest_of(false)
    };
    match chosen {
        Some(index) => Lookup::Found(index),
        None => Lookup::VersionNotSufficient { oldest },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(symbol: &str, version: i32, flags: u64) -> &'static Entry {
        match lookup(symbol, version, flags) {
            Lookup::Found(i) => &ENTRIES[i],
            other => panic!("{symbol}@{version}: {other:?}"),
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in ENTRIES.windows(2) {
            let a = (pair[0].name, pair[0].version, pair[0].stream);
            let b = (pair[1].name, pair[1].version, pair[1].stream);
            assert!(a < b, "{a:?} !< {b:?}");
        }
    }

    #[test]
    fn picks_the_newest_variant_not_newer_than_requested() {
        assert_eq!(found("cuMemAlloc", 2000, 0).version, 2000);
        assert_eq!(found("cuMemAlloc", 3010, 0).version, 2000);
        assert_eq!(found("cuMemAlloc", 3020, 0).version, 3020);
        assert_eq!(found("cuMemAlloc", 12090, 0).version, 3020);
        assert_eq!(found("cuCtxCreate", 11030, 0).version, 3020);
        assert_eq!(found("cuCtxCreate", 11040, 0).version, 11040);
        assert_eq!(found("cuCtxCreate", 12090, 0).version, 12050);
        assert_eq!(found("cuGetProcAddress", 11030, 0).version, 11030);
        assert_eq!(found("cuGetProcAddress", 12000, 0).version, 12000);
    }

    #[test]
    fn per_thread_flag_selects_ptds_and_ptsz() {
        let flag = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
        let e = found("cuMemcpyHtoD", 12000, flag);
        assert_eq!((e.version, e.stream), (7000, Stream::PerThreadDs));
        let e = found("cuLaunchKernel", 12000, flag);
        assert_eq!((e.version, e.stream), (7000, Stream::PerThreadSz));
        let e = found("cuLaunchKernel", 12000, 0);
        assert_eq!((e.version, e.stream), (4000, Stream::Legacy));
        let e = found("cuLaunchKernel_ptsz", 12000, 0);
        assert_eq!(e.stream, Stream::PerThreadSz);
        // No per-thread variant exists: the per-thread request still gets the function.
        let e = found("cuInit", 12000, flag);
        assert_eq!((e.name, e.stream), ("cuInit", Stream::Legacy));
        // Per-thread variants follow the requested version as well.
        let e = found("cuStreamGetCaptureInfo", 11030, flag);
        assert_eq!((e.version, e.stream), (11030, Stream::PerThreadSz));
        let e = found("cuStreamGetCaptureInfo", 12090, flag);
        assert_eq!((e.version, e.stream), (12030, Stream::PerThreadSz));
    }

    #[test]
    fn the_reported_driver_version_is_the_newest_row() {
        // `cuDriverGetVersion` claims the version of the newest headers the table came from.
        let newest = ENTRIES.iter().map(|e| e.version).max();
        assert_eq!(
            newest,
            Some(crate::cuda_types::DRIVER_VERSION.unsigned_abs())
        );
    }

    #[test]
    fn serves_the_13x_runtime_requests() {
        // New in 13.0 with a changed ABI: the 13.x runtime asks at 13000, 12.x at 2000.
        assert_eq!(found("cuCtxSynchronize", 13000, 0).version, 13000);
        assert_eq!(found("cuCtxSynchronize", 12090, 0).version, 2000);
        assert_eq!(found("cuCtxGetDevice", 13050, 0).version, 13000);
        // Declared in cuda.h without a typedef, and asked for by the 13.x runtimes.
        assert_eq!(found("cuGreenCtxCreate", 12040, 0).version, 12040);
        assert_eq!(found("cuCtxRecordEvent", 13050, 0).version, 12050);
        // Named by no public header, but asked for by the 13.5 runtime.
        assert_eq!(found("cuSubgridCreate", 13030, 0).version, 13030);
        // Per-thread requests still find their rows after the merge.
        let flag = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
        let e = found("cuStreamSynchronize", 7000, flag);
        assert_eq!((e.version, e.stream), (7000, Stream::PerThreadSz));
    }

    #[test]
    fn unknown_and_too_old_requests_are_not_found() {
        assert_eq!(lookup("cuNoSuchThing", 12000, 0), Lookup::SymbolNotFound);
        assert_eq!(lookup("", 12000, 0), Lookup::SymbolNotFound);
        assert_eq!(
            lookup("cuGetProcAddress", 11020, 0),
            Lookup::VersionNotSufficient { oldest: 11030 }
        );
        assert_eq!(
            lookup("cuInit", -5, 0),
            Lookup::VersionNotSufficient { oldest: 2000 }
        );
    }
}
