//! Pins bench threads to cores, so a ping-pong runs across two fixed cores instead of migrating.
//!
//! These machines have two cores; the client side takes core 0 and the serving side core 1. On a
//! machine with one core, or where affinity cannot be set, pinning is skipped: the numbers are
//! then noisier, and the bench says so in its notes.
//!
//! The core list is read once, before any thread is pinned: the affinity query returns the
//! *calling thread's* mask, so asking again after pinning would see a single core.

use std::sync::OnceLock;

use core_affinity::CoreId;

fn cores() -> &'static [CoreId] {
    static CORES: OnceLock<Vec<CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Reads the core list while the process is still unpinned. Call first thing in `main`.
pub fn init() {
    let _ = cores();
}

/// Pins the calling thread to `core_index` (modulo the cores available). Returns whether it worked.
pub fn pin_current_thread(core_index: usize) -> bool {
    if std::env::var_os("RGPU_BENCH_NO_PIN").is_some() {
        return false;
    }
    let cores = cores();
    if cores.is_empty() {
        return false;
    }
    core_affinity::set_for_current(cores[core_index % cores.len()])
}

/// Number of cores the bench may pin to.
pub fn cores_available() -> usize {
    cores().len()
}
