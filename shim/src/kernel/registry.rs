//! The shim's module and function handles, and what it knows about each.
//!
//! Exists because the application holds `CUmodule`/`CUlibrary`/`CUfunction`/`CUkernel`
//! values while the worker knows its own numbers: a table maps one to the other and keeps each
//! function's argument layout for launches. A library *is* its module here (one context), and
//! a kernel *is* its function (CUDA 12 launches either). Lookups are cached per module and
//! name, so the runtime looking a kernel up again costs no round trip. Pure data, no I/O:
//! unit-tested here.

use std::collections::HashMap;

use rgpu_proto::{FunctionHandle, ModuleHandle, ParamSlot};

/// Most modules (and libraries) loaded at once in one process.
pub const MODULES_LIVE_MAX: usize = 16_384;
/// Most functions (and kernels) looked up at once in one process.
pub const FUNCTIONS_LIVE_MAX: usize = 262_144;
/// First module handle value; values step by [`HANDLE_STRIDE`] (tagged so a stray one is easy
/// to spot in a log).
pub const MODULE_HANDLE_BASE: u64 = 0x30d0_0000_0000;
/// First function handle value.
pub const FUNCTION_HANDLE_BASE: u64 = 0xf0c0_0000_0000;
/// Distance between consecutive handle values (they look like aligned addresses).
pub const HANDLE_STRIDE: u64 = 0x40;

/// Why a registry operation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Not a live handle of this process.
    #[error("unknown handle {0:#x}")]
    Unknown(u64),
    /// The live-handle bound is reached.
    #[error("{0} handles alive, the bound")]
    Full(usize),
}

/// A looked-up function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// The worker's handle.
    pub remote: FunctionHandle,
    /// The shim handle of its module.
    pub module: u64,
    /// Its name.
    pub name: Box<str>,
    /// (offset, size) of each parameter, as the worker reported.
    pub layout: Vec<ParamSlot>,
}

#[derive(Debug)]
struct Module {
    remote: ModuleHandle,
    /// Shim function handles by name.
    functions: HashMap<Box<str>, u64>,
}

/// The process's handle tables.
#[derive(Debug, Default)]
pub struct Registry {
    modules: HashMap<u64, Module>,
    functions: HashMap<u64, Function>,
    next_module: u64,
    next_function: u64,
}

impl Registry {
    /// Empty tables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// True if another module fits.
    #[must_use]
    pub fn module_room(&self) -> bool {
        self.modules.len() < MODULES_LIVE_MAX
    }

    /// Records a loaded module; returns its shim handle.
    ///
    /// # Errors
    /// [`RegistryError::Full`] at [`MODULES_LIVE_MAX`].
    pub fn add_module(&mut self, remote: ModuleHandle) -> Result<u64, RegistryError> {
        if !self.module_room() {
            return Err(RegistryError::Full(MODULES_LIVE_MAX));
        }
        let h = MODULE_HANDLE_BASE + self.next_module * HANDLE_STRIDE;
        self.next_module += 1;
        self.modules.insert(
            h,
            Module {
                remote,
                functions: HashMap::new(),
            },
        );
        Ok(h)
    }

    /// The worker's handle of module `h`.
    ///
    /// # Errors
    /// [`RegistryError::Unknown`].
    pub fn module(&self, h: u64) -> Result<ModuleHandle, RegistryError> {
        self.modules
            .get(&h)
            .map(|m| m.remote)
            .ok_or(RegistryError::Unknown(h))
    }

    /// The cached function `name` of module `h`, if looked up before.
    #[must_use]
    pub fn cached(&self, h: u64, name: &str) -> Option<u64> {
        self.modules.get(&h)?.functions.get(name).copied()
    }

    /// Forgets module `h` and its functions; returns the worker's handle.
    ///
    /// # Errors
    /// [`RegistryError::Unknown`].
    pub fn remove_module(&mut self, h: u64) -> Result<ModuleHandle, RegistryError> {
        let m = self.modules.remove(&h).ok_or(RegistryError::Unknown(h))?;
        for f in m.functions.values() {
            self.functions.remove(f);
        }
        Ok(m.remote)
    }

    /// Records function `name` of module `h`; returns its shim handle.
    ///
    /// # Errors
    /// [`RegistryError::Unknown`] module, [`RegistryError::Full`] at [`FUNCTIONS_LIVE_MAX`].
    pub fn add_function(
        &mut self,
        h: u64,
        name: &str,
        remote: FunctionHandle,
        layout: Vec<ParamSlot>,
    ) -> Result<u64, RegistryError> {
        if self.functions.len() >= FUNCTIONS_LIVE_MAX {
            return Err(RegistryError::Full(FUNCTIONS_LIVE_MAX));
        }
        let module = self.modules.get_mut(&h).ok_or(RegistryError::Unknown(h))?;
        let fh = FUNCTION_HANDLE_BASE + self.next_function * HANDLE_STRIDE;
        self.next_function += 1;
        module.functions.insert(name.into(), fh);
        self.functions.insert(
            fh,
            Function {
                remote,
                module: h,
                name: name.into(),
                layout,
            },
        );
        Ok(fh)
    }

    /// Function `h`.
    ///
    /// # Errors
    /// [`RegistryError::Unknown`].
    pub fn function(&self, h: u64) -> Result<&Function, RegistryError> {
        self.functions.get(&h).ok_or(RegistryError::Unknown(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_functions_map_both_ways() {
        let mut r = Registry::new();
        let m = r.add_module(ModuleHandle(7)).unwrap();
        assert_eq!(r.module(m), Ok(ModuleHandle(7)));
        assert_eq!(r.cached(m, "k"), None);
        let f = r
            .add_function(m, "k", FunctionHandle(9), vec![ParamSlot::new(0, 8)])
            .unwrap();
        assert_eq!(r.cached(m, "k"), Some(f));
        assert_eq!(r.function(f).unwrap().remote, FunctionHandle(9));
        assert_eq!(r.function(f).unwrap().module, m);
        assert_eq!(
            r.add_function(m + 1, "k", FunctionHandle(1), vec![]),
            Err(RegistryError::Unknown(m + 1))
        );
        assert_eq!(r.remove_module(m), Ok(ModuleHandle(7)));
        assert_eq!(r.function(f), Err(RegistryError::Unknown(f)));
        assert_eq!(r.module(m), Err(RegistryError::Unknown(m)));
        // Handles are never reused.
        let m2 = r.add_module(ModuleHandle(7)).unwrap();
        assert_ne!(m2, m);
    }
}
