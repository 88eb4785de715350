//! Keeps our `libcuda.so.1` shim out of worker processes. The worker's CUDA
//! backend loads the real `libcuda.so.1`; if the shim were preloaded or
//! found first on the library path, the worker would forward its own calls
//! to itself. Exists so what is removed from a worker's environment is
//! decided (and tested) in one place.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// The driver library name the shim impersonates.
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";

/// Variables removed from a worker's environment outright.
pub const REMOVED_VARS: &[&str] = &["LD_PRELOAD", "LD_AUDIT"];

/// `LD_LIBRARY_PATH` without the directories that hold a `libcuda.so.1`:
/// on a server the real driver lives in the system library directories
/// (ld.so.conf), so a `libcuda.so.1` reached through `LD_LIBRARY_PATH` is
/// presumed to be the shim. `None`: nothing is left (unset the variable).
pub fn scrub_library_path(value: &OsStr, has_driver: impl Fn(&Path) -> bool) -> Option<OsString> {
    let kept: Vec<&[u8]> = value
        .as_bytes()
        .split(|b| *b == b':')
        .filter(|dir| !dir.is_empty())
        .filter(|dir| !has_driver(Path::new(OsStr::from_bytes(dir))))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(OsString::from_vec(kept.join(&b':')))
    }
}

/// Whether `dir` contains a `libcuda.so.1`.
pub fn dir_has_driver(dir: &Path) -> bool {
    dir.join(DRIVER_LIBRARY).exists()
}

/// Applies the scrub to a worker's command.
pub fn scrub(cmd: &mut std::process::Command) {
    for var in REMOVED_VARS {
        cmd.env_remove(var);
    }
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        match scrub_library_path(&v, dir_has_driver) {
            Some(kept) => cmd.env("LD_LIBRARY_PATH", kept),
            None => cmd.env_remove("LD_LIBRARY_PATH"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_dirs_are_dropped() {
        let has = |p: &Path| p.to_str().is_some_and(|s| s.contains("shim"));
        assert_eq!(
            scrub_library_path(OsStr::new("/a:/opt/rgpu/shim::/b"), has),
            Some(OsString::from("/a:/b"))
        );
        assert_eq!(scrub_library_path(OsStr::new("/x/shim"), has), None);
    }

    #[test]
    fn scrubbed_command_lacks_preload() {
        let mut cmd = std::process::Command::new("true");
        cmd.env("LD_PRELOAD", "/nonexistent/libcuda.so.1");
        scrub(&mut cmd);
        let preload = cmd
            .get_envs()
            .find(|(k, _)| *k == OsStr::new("LD_PRELOAD"))
            .map(|(_, v)| v);
        assert_eq!(preload, Some(None), "LD_PRELOAD is removed, not inherited");
    }
}
