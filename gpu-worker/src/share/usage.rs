//! Live per-session usage counters in a board slot: calls by kind, bytes
//! moved, device memory held. Exists so the daemon shows what each client
//! is doing while it runs (`/metrics`, `/status`, `rgpu status`) without a
//! message per call: the worker bumps relaxed atomics in its slot of the
//! shared board ([`super::board`]), the daemon reads them when asked.
//!
//! Counts are of **backend operations** as [`Shared`](super::Shared) sees
//! them (a host-to-device copy arriving as a trailer in several pieces
//! counts once per piece); bytes are those the operations moved.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a call did, for the per-kind counters (a bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CallKind {
    /// Device queries and `cuMemGetInfo`.
    Device,
    /// Allocations and frees of every variant.
    Memory,
    /// Copies in every direction.
    Copy,
    /// Memsets.
    Memset,
    /// Module loads and unloads, function lookups.
    Module,
    /// Kernel launches.
    Launch,
    /// Stream operations and context synchronization.
    Stream,
    /// Event operations.
    Event,
}

/// Number of [`CallKind`]s.
pub const CALL_KINDS: usize = 8;

impl CallKind {
    /// Every kind, in counter order.
    pub const ALL: [CallKind; CALL_KINDS] = [
        Self::Device,
        Self::Memory,
        Self::Copy,
        Self::Memset,
        Self::Module,
        Self::Launch,
        Self::Stream,
        Self::Event,
    ];

    /// The kind's label value.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Memory => "memory",
            Self::Copy => "copy",
            Self::Memset => "memset",
            Self::Module => "module",
            Self::Launch => "launch",
            Self::Stream => "stream",
            Self::Event => "event",
        }
    }
}

/// Direction of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Direction {
    /// Host to device.
    HtoD,
    /// Device to host.
    DtoH,
    /// Device to device.
    DtoD,
}

/// The counters, inside a board slot (`#[repr(C)]`, atomics only, valid
/// when zeroed).
#[repr(C)]
#[derive(Debug, Default)]
pub struct UsageCells {
    calls: [AtomicU64; CALL_KINDS],
    bytes: [AtomicU64; 3],
    mem_used: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<UsageCells>() == 8 * (CALL_KINDS + 4));

/// A snapshot of [`UsageCells`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Calls per [`CallKind`], in [`CallKind::ALL`] order.
    pub calls: [u64; CALL_KINDS],
    /// Host-to-device bytes.
    pub bytes_h2d: u64,
    /// Device-to-host bytes.
    pub bytes_d2h: u64,
    /// Device-to-device bytes.
    pub bytes_d2d: u64,
    /// Device memory held against the quota, in bytes.
    pub memory_bytes: u64,
}

impl UsageCells {
    /// Counts one call of `kind`.
    pub fn call(&self, kind: CallKind) {
        self.calls[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` bytes moved in `dir`.
    pub fn moved(&self, dir: Direction, n: u64) {
        self.bytes[dir as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the memory held.
    pub fn set_memory(&self, bytes: u64) {
        self.mem_used.store(bytes, Ordering::Relaxed);
    }

    /// Zeroes every counter (a slot being claimed or freed).
    pub fn reset(&self) {
        for c in self.calls.iter().chain(self.bytes.iter()) {
            c.store(0, Ordering::Relaxed);
        }
        self.mem_used.store(0, Ordering::Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> Usage {
        let b = |d: Direction| self.bytes[d as usize].load(Ordering::Relaxed);
        Usage {
            calls: std::array::from_fn(|i| self.calls[i].load(Ordering::Relaxed)),
            bytes_h2d: b(Direction::HtoD),
            bytes_d2h: b(Direction::DtoH),
            bytes_d2d: b(Direction::DtoD),
            memory_bytes: self.mem_used.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_snapshot_and_reset() {
        let u = UsageCells::default();
        u.call(CallKind::Copy);
        u.call(CallKind::Copy);
        u.call(CallKind::Event);
        u.moved(Direction::DtoH, 7);
        u.moved(Direction::HtoD, 5);
        u.set_memory(4096);
        let s = u.snapshot();
        assert_eq!(s.calls[CallKind::Copy as usize], 2);
        assert_eq!(s.calls[CallKind::Event as usize], 1);
        assert_eq!(s.calls.iter().sum::<u64>(), 3);
        assert_eq!((s.bytes_h2d, s.bytes_d2h, s.bytes_d2d), (5, 7, 0));
        assert_eq!(s.memory_bytes, 4096);
        u.reset();
        assert_eq!(u.snapshot(), Usage::default());
        for (i, k) in CallKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
