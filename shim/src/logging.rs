//! Logging for code that runs inside someone else's process.
//!
//! The shim has no `main`, so it installs a `tracing` subscriber (stderr, filter from
//! `RGPU_LOG`, default `warn`; plus `crate::driver_log`'s layer for the application's log
//! callbacks) on its first entry, unless the host already has one. It also offers "log once
//! per name" for messages that would otherwise repeat on every call.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Mutex, Once};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The environment variable holding the log filter (`tracing_subscriber::EnvFilter` syntax).
pub const LOG_ENV: &str = "RGPU_LOG";

/// How many distinct names [`once_per_name`] remembers; past this it stops logging new names
/// (and says so once), so an application probing random names cannot grow the set unbounded.
pub const ONCE_NAMES_MAX: usize = 4096;

/// Installs the stderr subscriber once per process. Safe to call from every entry point.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("warn"));
        // stderr gets what `RGPU_LOG` selects; the driver-log callbacks the application
        // registered get the shim's warnings and errors whatever it selects.
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter);
        let callbacks = crate::driver_log::DriverLogLayer.with_filter(LevelFilter::WARN);
        // An error only means the host process already installed a subscriber; use theirs.
        let _ = tracing_subscriber::registry()
            .with(stderr)
            .with(callbacks)
            .try_init();
    });
}

/// A thread-local value with a destructor: once it is gone, the thread is past its
/// thread-local destructors (the runtime's `atexit` handlers run then), where the log
/// subscriber's own thread-local buffer may be gone too and logging would panic.
struct Alive;
impl Drop for Alive {
    fn drop(&mut self) {}
}

thread_local! {
    static ALIVE: Alive = const { Alive };
    static TRACED_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Logs one entry-point call at trace level, unless the thread is past its thread-local
/// destructors.
///
/// Destructors run last-registered first. `ALIVE` is registered right after this thread's
/// first event, so it is destroyed before the subscriber's buffer, and its absence says
/// "stop logging" in time.
pub fn trace_call(entry: &'static str) {
    if !TRACED_ONCE.get() {
        TRACED_ONCE.set(true);
        tracing::trace!(entry, "rgpu shim: call");
        let _ = ALIVE.try_with(|_| ());
        return;
    }
    if ALIVE.try_with(|_| ()).is_ok() {
        tracing::trace!(entry, "rgpu shim: call");
    }
}

/// Returns true the first time it sees `kind`/`name`, false afterwards (and once the set
/// holds [`ONCE_NAMES_MAX`] names).
pub fn once_per_name(kind: &'static str, name: &str) -> bool {
    static SEEN: Mutex<Option<HashSet<(&'static str, String)>>> = Mutex::new(None);
    // A poisoned lock only means another thread panicked mid-insert; the set is still usable.
    let mut guard = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let seen = guard.get_or_insert_with(HashSet::new);
    if seen.contains(&(kind, name.to_owned())) {
        return false;
    }
    if seen.len() >= ONCE_NAMES_MAX {
        if seen.len() == ONCE_NAMES_MAX {
            seen.insert(("", String::new()));
            tracing::warn!(
                max = ONCE_NAMES_MAX,
                "rgpu shim: too many distinct names; no longer logging new ones"
            );
        }
        return false;
    }
    seen.insert((kind, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_name_once() {
        assert!(once_per_name("test-kind", "alpha"));
        assert!(!once_per_name("test-kind", "alpha"));
        assert!(once_per_name("test-kind", "beta"));
        assert!(once_per_name("other-kind", "alpha"));
    }
}
