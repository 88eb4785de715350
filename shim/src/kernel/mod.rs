//! Modules and kernels through the shim: image lengths ([`image`]), the loading mode
//! ([`loading`]), the shim's handles ([`registry`]), parameter packing ([`params`]) and the
//! round trips that load, look up and launch ([`ops`]). The C entry points are
//! `entry::module` and `entry::launch`, plus the runtime's private fatbin slots in
//! `export_tables`.

pub mod image;
pub mod loading;
pub mod ops;
pub mod params;
pub mod registry;

use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

static REGISTRY: LazyLock<Mutex<registry::Registry>> =
    LazyLock::new(|| Mutex::new(registry::Registry::new()));

/// The process's module and function tables (a short critical section: never held across a
/// round trip). Each update is one map operation, so a lock poisoned by a panic elsewhere
/// still guards consistent tables and is taken over.
pub fn tables() -> MutexGuard<'static, registry::Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}
