//! Pinned (page-locked) host memory: `cuMemHostAlloc` and friends.
//!
//! Exists so that copies from and to pinned memory need no extra copy in the shim. Over shm,
//! pinned memory is carved out of the connection's shared arena: the worker reads and
//! writes those very pages (a copy is one call naming an arena offset), and a `cuda` worker
//! registers the whole arena with `cuMemHostRegister` so DMA reaches them directly. Over
//! rdma, pinned memory is carved out of one region the transport registered at connect
//! (`RGPU_PINNED_BYTES`, rounded up to a power of two, remote read and write): a copy names
//! the offset in that region exactly as over shm, and the worker moves the bytes with RDMA
//! READ or WRITE (`docs/rdma.md`). When that registration was refused (memlock limit) rdma
//! behaves like tcp. Over tcp there is nothing to share; pinned memory is private page-aligned memory of this
//! process (not `mlock`ed: `RLIMIT_MEMLOCK` is often tiny) and copies use trailers.
//!
//! Pinned bytes are bounded by `RGPU_PINNED_BYTES` ([`PINNED_BYTES_DEFAULT`]); past it
//! `cuMemHostAlloc` is `CUDA_ERROR_OUT_OF_MEMORY`. The shm arena is sized at twice that
//! (rounded up to a power of two) so staging and the transport's own bulk sends keep at
//! least half of it. Memory registered with `cuMemHostRegister` is recorded but not shared:
//! the application's pages cannot be moved into the arena, so copies from it are staged like
//! pageable ones.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use rgpu_dataplane::shm::{ShmConfig, ShmTransport, Slab};

use super::conn::Conn;
use super::ranges::{Hit, RangeMap, HOST_RANGES_MAX};
use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY};

/// The environment variable bounding pinned host memory, in bytes.
pub const PINNED_BYTES_ENV: &str = "RGPU_PINNED_BYTES";
/// Pinned host memory allowed when `RGPU_PINNED_BYTES` is unset (256 MiB).
pub const PINNED_BYTES_DEFAULT: usize = 256 << 20;
/// Largest `RGPU_PINNED_BYTES` (2 GiB: the arena is twice that, and a server accepts arenas
/// up to 4 GiB by default).
pub const PINNED_BYTES_MAX: usize = 2 << 30;
/// Smallest arena the shim asks for (the transport's default, 64 MiB).
pub const ARENA_BYTES_MIN: usize = 64 << 20;

/// Parses `RGPU_PINNED_BYTES` from `lookup`: bytes, `0 < n <= PINNED_BYTES_MAX`; `None`
/// for an unset variable, `Err` with the text for a bad one.
pub fn pinned_bytes_from(lookup: impl Fn(&str) -> Option<String>) -> Result<usize, String> {
    match lookup(PINNED_BYTES_ENV) {
        None => Ok(PINNED_BYTES_DEFAULT),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 && n <= PINNED_BYTES_MAX => Ok(n),
            _ => Err(v),
        },
    }
}

/// The pinned-memory bound for this process, read once.
pub fn pinned_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        pinned_bytes_from(|k| std::env::var(k).ok()).unwrap_or_else(|bad| {
            tracing::warn!(
                value = %bad,
                "rgpu shim: {PINNED_BYTES_ENV} is not a byte count in 1..={PINNED_BYTES_MAX}; using {PINNED_BYTES_DEFAULT}"
            );
            PINNED_BYTES_DEFAULT
        })
    })
}

/// Arena size for `pinned` bytes of pinned memory: twice that, a power of two, at least
/// [`ARENA_BYTES_MIN`].
#[must_use]
pub fn arena_bytes_for(pinned: usize) -> usize {
    pinned
        .min(PINNED_BYTES_MAX)
        .next_power_of_two()
        .saturating_mul(2)
        .max(ARENA_BYTES_MIN)
}

/// The shm transport configuration: the default one with the arena sized for pinned memory.
pub fn shm_config() -> ShmConfig {
    let mut cfg = ShmConfig::default();
    cfg.segment.arena_bytes = arena_bytes_for(pinned_bytes());
    cfg
}

/// Where the connection's pinned slabs come from: the shm arena, or the registered host
/// region of an rdma connection. Calls name a slab by its offset in either.
pub enum Pool<'a> {
    /// The shm transport's arena.
    Shm(&'a mut ShmTransport),
    /// The rdma transport's registered host region.
    #[cfg(feature = "rdma")]
    Rdma(&'a mut rgpu_dataplane::rdma::RdmaTransport),
}

/// The connection's pool of pinned slabs, if it has one.
pub fn pool(conn: &mut Conn) -> Option<Pool<'_>> {
    if conn.is_shm() {
        return conn.shm_mut().map(Pool::Shm);
    }
    #[cfg(feature = "rdma")]
    if let Some(t) = conn.rdma_mut() {
        return (t.host_region_len() > 0).then_some(Pool::Rdma(t));
    }
    None
}

impl<'a> Pool<'a> {
    fn is_empty(&self) -> bool {
        match self {
            Pool::Shm(t) => t.arena().is_empty(),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_region_len() == 0,
        }
    }

    /// A slab of at least `len` bytes (`None` when the pool has none free).
    pub fn alloc_slab(&mut self, len: usize) -> Option<Slab> {
        match self {
            Pool::Shm(t) => t.alloc_slab(len).ok(),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_alloc(len).ok(),
        }
    }

    /// Returns a slab from [`Pool::alloc_slab`] (a failure is logged).
    pub fn free_slab(&mut self, slab: Slab) {
        let r = match self {
            Pool::Shm(t) => t.free_slab(slab),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_free(slab),
        };
        if let Err(e) = r {
            tracing::warn!(%e, "rgpu shim: slab of pinned memory not freed");
        }
    }

    /// The bytes of `slab`, bounds-checked (`None` outside the pool).
    pub fn into_bytes(self, slab: Slab) -> Option<&'a [u8]> {
        match self {
            Pool::Shm(t) => t.slab(slab).ok(),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_bytes(slab.offset, slab.len).ok(),
        }
    }

    /// The bytes of `slab`, writable, bounds-checked (`None` outside the pool).
    pub fn into_bytes_mut(self, slab: Slab) -> Option<&'a mut [u8]> {
        match self {
            Pool::Shm(t) => t.slab_mut(slab).ok(),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_bytes_mut(slab.offset, slab.len).ok(),
        }
    }

    /// The pool's first byte in this process.
    fn base(&mut self) -> Result<NonNull<u8>, CUresult> {
        match self {
            Pool::Shm(t) => arena_base(t),
            #[cfg(feature = "rdma")]
            Pool::Rdma(t) => t.host_region_base().ok_or(CUDA_ERROR_OUT_OF_MEMORY),
        }
    }
}

/// What backs a pinned region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A slab of the connection's pool (the shm arena, or the registered rdma host region):
    /// the worker reaches the same bytes by offset.
    Arena(Slab),
    /// Private pages of this process (tcp), `len` rounded to what was mapped.
    Local {
        /// Bytes mapped.
        mapped: usize,
    },
    /// Application memory registered with `cuMemHostRegister` (not shared; staged).
    Registered,
}

/// One pinned host region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// What backs it.
    pub backing: Backing,
    /// The `cuMemHostAlloc` / `cuMemHostRegister` flags it was made with.
    pub flags: u32,
}

impl Region {
    /// The arena offset of `addr` inside this region, if it is arena memory.
    #[must_use]
    pub fn arena_offset(hit: &Hit<Region>, addr: u64) -> Option<u64> {
        match hit.value.backing {
            Backing::Arena(slab) => Some(slab.offset + hit.offset_of(addr)),
            _ => None,
        }
    }
}

struct Pinned {
    ranges: RangeMap<Region>,
    /// Bytes held by Arena and Local regions.
    used: usize,
}

static PINNED: Mutex<Pinned> = Mutex::new(Pinned {
    ranges: RangeMap::new(HOST_RANGES_MAX),
    used: 0,
});

fn pinned() -> MutexGuard<'static, Pinned> {
    // Poisoning only means a panic elsewhere (caught by ffi_guard); the state stays consistent.
    PINNED.lock().unwrap_or_else(|p| p.into_inner())
}

fn out_of_memory(len: usize, used: usize) -> CUresult {
    if crate::logging::once_per_name("pinned", "exhausted") {
        tracing::warn!(
            len,
            used,
            limit = pinned_bytes(),
            "rgpu shim: pinned host memory exhausted; raise {PINNED_BYTES_ENV}"
        );
    }
    CUDA_ERROR_OUT_OF_MEMORY
}

/// The arena's first byte in this process.
fn arena_base(shm: &ShmTransport) -> Result<NonNull<u8>, CUresult> {
    let len = shm.arena().len() as u64;
    let all = shm
        .slab(Slab { offset: 0, len })
        .map_err(|_| CUDA_ERROR_OUT_OF_MEMORY)?;
    NonNull::new(all.as_ptr().cast_mut()).ok_or(CUDA_ERROR_OUT_OF_MEMORY)
}

/// `cuMemHostAlloc`: `len` bytes of pinned memory, from the connection's pool when one is
/// given ([`pool`]).
pub fn alloc(mut pool: Option<Pool<'_>>, len: usize, flags: u32) -> Result<*mut c_void, CUresult> {
    if len == 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let mut p = pinned();
    if p.used.saturating_add(len) > pinned_bytes() {
        return Err(out_of_memory(len, p.used));
    }
    let (ptr, backing, held) = match pool.as_mut() {
        Some(pool) if !pool.is_empty() => {
            let slab = pool
                .alloc_slab(len)
                .ok_or_else(|| out_of_memory(len, p.used))?;
            let base = match pool.base() {
                Ok(b) => b,
                Err(e) => {
                    pool.free_slab(slab);
                    return Err(e);
                }
            };
            // In bounds: the slab lies inside the arena (the allocator's invariant).
            let ptr = base.as_ptr().wrapping_add(slab.offset as usize);
            (ptr, Backing::Arena(slab), slab.len as usize)
        }
        _ => {
            let pages = map_len(len);
            let ptr = crate::host_mem::map_pages(pages)?;
            (ptr.as_ptr(), Backing::Local { mapped: pages }, pages)
        }
    };
    let region = Region { backing, flags };
    if let Err(e) = p.ranges.insert(ptr as u64, len as u64, region) {
        tracing::warn!(%e, "rgpu shim: pinned region not recorded");
        drop_backing(pool, ptr, region);
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    p.used += held;
    Ok(ptr.cast())
}

fn map_len(len: usize) -> usize {
    len.div_ceil(4096).saturating_mul(4096)
}

/// Releases what backs a region (a pool slab needs the transport).
fn drop_backing(pool: Option<Pool<'_>>, ptr: *mut u8, region: Region) -> usize {
    match region.backing {
        Backing::Arena(slab) => {
            if let Some(mut pool) = pool {
                pool.free_slab(slab);
            }
            slab.len as usize
        }
        Backing::Local { mapped } => {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: `ptr`/`mapped` are exactly one live map_pages mapping, forgotten
                // by the range map before this call, so nothing reaches it any more.
                unsafe { crate::host_mem::unmap_pages(p, mapped) };
            }
            mapped
        }
        Backing::Registered => 0,
    }
}

/// `cuMemFreeHost`: `ptr` must be the start of a region from [`alloc`].
pub fn free(pool: Option<Pool<'_>>, ptr: *mut c_void) -> Result<(), CUresult> {
    let mut p = pinned();
    let hit = p
        .ranges
        .find(ptr as u64)
        .filter(|h| h.base == ptr as u64 && h.value.backing != Backing::Registered)
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    p.ranges.remove(hit.base);
    let held = drop_backing(pool, ptr.cast(), hit.value);
    debug_assert!(p.used >= held);
    p.used = p.used.saturating_sub(held);
    Ok(())
}

/// `cuMemHostRegister`: records `[ptr, ptr + len)` as registered host memory.
pub fn register(ptr: *mut c_void, len: usize, flags: u32) -> Result<(), CUresult> {
    if ptr.is_null() || len == 0 || !crate::host_mem::mapped(ptr, len) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let region = Region {
        backing: Backing::Registered,
        flags,
    };
    pinned()
        .ranges
        .insert(ptr as u64, len as u64, region)
        .map_err(|e| match e {
            super::ranges::RangeError::Full { .. } => CUDA_ERROR_OUT_OF_MEMORY,
            // CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED for an overlap.
            super::ranges::RangeError::Invalid { .. } => 712,
        })
}

/// `cuMemHostUnregister`: `ptr` must start a registered range.
pub fn unregister(ptr: *mut c_void) -> Result<(), CUresult> {
    let mut p = pinned();
    match p.ranges.find(ptr as u64) {
        Some(h) if h.base == ptr as u64 && h.value.backing == Backing::Registered => {
            p.ranges.remove(h.base);
            Ok(())
        }
        // CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED.
        _ => Err(713),
    }
}

/// The pinned region holding all of `[addr, addr + len)`.
#[must_use]
pub fn find_span(addr: u64, len: u64) -> Option<Hit<Region>> {
    pinned().ranges.find_span(addr, len)
}

/// The pinned region holding `addr`.
#[must_use]
pub fn find(addr: u64) -> Option<Hit<Region>> {
    pinned().ranges.find(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_bytes_parse_and_arena_size() {
        let none = |_: &str| None;
        assert_eq!(pinned_bytes_from(none), Ok(PINNED_BYTES_DEFAULT));
        let v = |s: &'static str| move |_: &str| Some(s.to_owned());
        assert_eq!(pinned_bytes_from(v("1048576")), Ok(1 << 20));
        assert!(pinned_bytes_from(v("0")).is_err());
        assert!(pinned_bytes_from(v("lots")).is_err());
        assert!(pinned_bytes_from(v("4294967296")).is_err());
        assert_eq!(arena_bytes_for(1), ARENA_BYTES_MIN);
        assert_eq!(arena_bytes_for(256 << 20), 512 << 20);
        assert_eq!(arena_bytes_for((256 << 20) + 1), 1 << 30);
        assert_eq!(arena_bytes_for(PINNED_BYTES_MAX), 4 << 30);
        assert!(arena_bytes_for(PINNED_BYTES_MAX).is_power_of_two());
    }

    #[test]
    fn local_alloc_free_and_register() {
        let p = alloc(None, 10_000, 2).unwrap();
        let hit = find_span(p as u64 + 9_000, 1_000).unwrap();
        assert_eq!(hit.value.flags, 2);
        assert_eq!(Region::arena_offset(&hit, p as u64), None);
        assert!(find_span(p as u64 + 9_000, 1_001).is_none());
        assert_eq!(
            free(None, p.cast::<u8>().wrapping_add(1).cast()),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        free(None, p).unwrap();
        assert!(find(p as u64).is_none());
        assert_eq!(alloc(None, 0, 0), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            alloc(None, PINNED_BYTES_MAX + 1, 0),
            Err(CUDA_ERROR_OUT_OF_MEMORY)
        );

        let mut buf = vec![0u8; 64];
        let b = buf.as_mut_ptr().cast::<c_void>();
        register(b, 64, 0).unwrap();
        assert_eq!(register(b, 8, 0), Err(712));
        assert_eq!(
            find(b as u64).map(|h| h.value.backing),
            Some(Backing::Registered)
        );
        assert_eq!(free(None, b), Err(CUDA_ERROR_INVALID_VALUE));
        unregister(b).unwrap();
        assert_eq!(unregister(b), Err(713));
        assert_eq!(
            register(std::ptr::null_mut(), 8, 0),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
    }
}
