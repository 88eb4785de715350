//! The `cuda` backend's per-session bookkeeping beyond handle tables: the
//! launch timer of the compute share, the device bytes of module globals
//! charged to the quota, and the cubin images kept for the `.nv.info`
//! argument-layout fallback on drivers without `cuFuncGetParamInfo`.
//!
//! Exists so these concerns sit in one field of the backend, each bounded:
//! globals and images by the module table (one entry per live module),
//! the timer by [`timing::PAIRS_MAX`](super::timing::PAIRS_MAX).

use std::collections::{HashMap, HashSet};

use rgpu_proto::{CudaError, ParamSlot};

use super::nvinfo;
use super::timing::{DriverEvents, KernelTimer};

/// Largest cubin kept per module for the `.nv.info` fallback, in bytes
/// (bigger modules still load; their lookups are refused on old drivers).
pub const NVINFO_IMAGE_BYTES_MAX: usize = 64 << 20;

/// See the module docs.
#[derive(Debug)]
pub struct Accounting {
    /// Times launches with event pairs.
    pub timer: KernelTimer<DriverEvents>,
    /// Module handle → device bytes of its globals.
    globals: HashMap<u64, u64>,
    globals_bytes: u64,
    /// Module handle → its cubin, kept only when the driver lacks
    /// `cuFuncGetParamInfo`.
    images: HashMap<u64, Vec<u8>>,
    keep_images: bool,
    /// Bases of live allocations made from the stream-ordered pool.
    pool: HashSet<u64>,
    /// Module handle → bases of its globals handed out by
    /// `cuModuleGetGlobal` (views in the allocation table).
    views: HashMap<u64, HashSet<u64>>,
    /// Modules whose globals could not be sized at load (fatbins): each
    /// global is charged when first handed out by `cuModuleGetGlobal`.
    lazy: HashSet<u64>,
}

impl Accounting {
    /// Fresh bookkeeping; `keep_images` when layouts must come from
    /// `.nv.info` (driver without `cuFuncGetParamInfo`).
    #[must_use]
    pub fn new(keep_images: bool) -> Self {
        Self {
            timer: KernelTimer::new(DriverEvents),
            globals: HashMap::new(),
            globals_bytes: 0,
            images: HashMap::new(),
            keep_images,
            pool: HashSet::new(),
            views: HashMap::new(),
            lazy: HashSet::new(),
        }
    }

    /// Device bytes of module globals of live modules.
    #[must_use]
    pub fn globals_bytes(&self) -> u64 {
        self.globals_bytes
    }

    /// Device bytes the globals of `image` take: the cubin's `.nv.global*`
    /// sections; 0 for PTX (sized after the JIT by the backend), fatbins
    /// (charged as their globals are asked for, see [`Accounting::viewed`])
    /// and a cubin the ELF reader cannot read (logged).
    #[must_use]
    pub fn globals_of(image: &[u8]) -> u64 {
        if !nvinfo::is_cubin(image) {
            return 0;
        }
        nvinfo::globals_bytes(image)
            .inspect_err(|e| tracing::warn!(error = %e, "module globals not counted"))
            .unwrap_or(0)
    }

    /// Records module `module`, loaded from `image`, whose globals take
    /// `globals` bytes (already checked against the quota); `sized` false
    /// when they could not be sized at load (a fatbin: charged per global
    /// as [`Accounting::viewed`] hands them out).
    pub fn loaded(&mut self, module: u64, image: &[u8], globals: u64, sized: bool) {
        if !sized {
            self.lazy.insert(module);
        }
        if globals > 0 {
            self.globals.insert(module, globals);
            self.globals_bytes += globals;
        }
        if self.keep_images && nvinfo::is_cubin(image) && image.len() <= NVINFO_IMAGE_BYTES_MAX {
            self.images.insert(module, image.to_vec());
        }
    }

    /// Forgets module `module` (unloaded), returning the bases of the
    /// global views to drop from the allocation table.
    pub fn unloaded(&mut self, module: u64) -> Vec<u64> {
        if let Some(g) = self.globals.remove(&module) {
            self.globals_bytes -= g;
        }
        self.images.remove(&module);
        self.lazy.remove(&module);
        self.views
            .remove(&module)
            .map(|v| v.into_iter().collect())
            .unwrap_or_default()
    }

    /// Records that global `base` (`bytes` long) of `module` was handed
    /// out (a set per module, bounded by the module's globals). The first
    /// time, a global of a module not sized at load is charged; the memory
    /// exists already, so it is counted even past the quota (further
    /// allocations are then refused).
    pub fn viewed(&mut self, module: u64, base: u64, bytes: u64) {
        let fresh = self.views.entry(module).or_default().insert(base);
        if fresh && self.lazy.contains(&module) {
            *self.globals.entry(module).or_default() += bytes;
            self.globals_bytes += bytes;
        }
    }

    /// The layout of `kernel` from its module's `.nv.info` (the fallback).
    ///
    /// # Errors
    /// [`CudaError::NOT_SUPPORTED`] when the module was not a kept cubin
    /// (PTX, fatbin) or its records are missing or unreadable.
    pub fn nvinfo_layout(&self, module: u64, kernel: &str) -> Result<Vec<ParamSlot>, CudaError> {
        let image = self.images.get(&module).ok_or(CudaError::NOT_SUPPORTED)?;
        match nvinfo::param_layout(image, kernel) {
            Ok(Some(layout)) => Ok(layout),
            Ok(None) => Err(CudaError::NOT_SUPPORTED),
            Err(e) => {
                tracing::warn!(error = %e, kernel, "no argument layout from .nv.info");
                Err(CudaError::NOT_SUPPORTED)
            }
        }
    }

    /// Marks `base` as a pool (stream-ordered) allocation.
    pub fn mark_pool(&mut self, base: u64) {
        self.pool.insert(base);
    }

    /// Whether `base` was a pool allocation, forgetting it.
    pub fn take_pool(&mut self, base: u64) -> bool {
        self.pool.remove(&base)
    }

    /// Session teardown: destroys the timer's events, forgets modules.
    pub fn clear(&mut self) {
        self.timer.clear();
        self.globals.clear();
        self.globals_bytes = 0;
        self.images.clear();
        self.pool.clear();
        self.views.clear();
        self.lazy.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_are_charged_at_load_or_when_first_handed_out() {
        let mut a = Accounting::new(false);
        a.loaded(1, b"//ptx", 100, true);
        a.viewed(1, 0x1000, 100);
        assert_eq!(a.globals_bytes(), 100, "sized at load: not charged twice");
        a.loaded(2, b"\x50\xed\x55\xba fatbin", 0, false);
        a.viewed(2, 0x2000, 64);
        a.viewed(2, 0x2000, 64);
        a.viewed(2, 0x3000, 8);
        assert_eq!(a.globals_bytes(), 172, "each fatbin global once");
        let mut views = a.unloaded(2);
        views.sort_unstable();
        assert_eq!(views, [0x2000, 0x3000]);
        assert_eq!(a.globals_bytes(), 100);
        assert_eq!(a.unloaded(1), [0x1000]);
        assert_eq!(a.globals_bytes(), 0);
    }
}
