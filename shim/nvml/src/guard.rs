//! The door every exported NVML function goes through: logging set up on first use (stderr,
//! filter from `RGPU_LOG`, default `warn`, as in the shim), "log once per name", and no Rust
//! panic unwinding into C (a caught panic becomes `NVML_ERROR_UNKNOWN`).

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};
use std::sync::{Mutex, Once};

use crate::types::{NvmlReturn, NVML_ERROR_UNKNOWN, NVML_SUCCESS};

/// The environment variable holding the log filter (`tracing_subscriber::EnvFilter` syntax).
pub const LOG_ENV: &str = "RGPU_LOG";
/// Most distinct names [`once_per_name`] remembers (the exported names are fewer than this).
pub const ONCE_NAMES_MAX: usize = 512;

/// Installs the stderr subscriber once, unless the host process already has one.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // An error only means the host already installed a subscriber; use theirs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .try_init();
    });
}

/// True the first time `name` is seen, false afterwards (and once [`ONCE_NAMES_MAX`] names
/// are remembered).
pub fn once_per_name(name: &'static str) -> bool {
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    // A poisoned lock only means a panic mid-insert elsewhere; the set is still usable.
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let set = seen.get_or_insert_with(HashSet::new);
    if set.len() >= ONCE_NAMES_MAX {
        return false;
    }
    set.insert(name)
}

/// Runs `f` for the exported function `name`: `Ok` is `NVML_SUCCESS`, `Err` its code, and a
/// panic is logged and becomes `NVML_ERROR_UNKNOWN`.
pub fn guard(
    name: &'static str,
    f: impl FnOnce() -> Result<(), NvmlReturn> + UnwindSafe,
) -> NvmlReturn {
    let guarded = move || {
        init_logging();
        tracing::trace!(entry = name, "rgpu nvml: call");
        f()
    };
    match catch_unwind(guarded) {
        Ok(Ok(())) => NVML_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            // Reporting may itself fail at process exit (no thread-local storage left).
            let _ = catch_unwind(AssertUnwindSafe(|| {
                tracing::error!(entry = name, "rgpu nvml: internal panic caught");
            }));
            NVML_ERROR_UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NVML_ERROR_NOT_FOUND;

    #[test]
    fn maps_results_and_panics() {
        assert_eq!(guard("t", || Ok(())), NVML_SUCCESS);
        assert_eq!(
            guard("t", || Err(NVML_ERROR_NOT_FOUND)),
            NVML_ERROR_NOT_FOUND
        );
        assert_eq!(guard("t", || panic!("boom")), NVML_ERROR_UNKNOWN);
    }

    #[test]
    fn once_per_name_says_yes_once() {
        assert!(once_per_name("guard-test-name"));
        assert!(!once_per_name("guard-test-name"));
    }
}
