//! Configuration of the emulated device: its plausible properties and bounds.
//!
//! Exists so the device a CI run sees (name, SM count, compute capability,
//! memory quota) and every table bound are named in one serde struct that
//! the daemon can read from its TOML config file.

use serde::Deserialize;

/// Default memory quota: 4 GiB (host pages are committed only when written).
pub const MEMORY_QUOTA_BYTES_DEFAULT: u64 = 4 << 30;
/// Largest quota a config may ask for (1 TiB): keeps address arithmetic far
/// from overflow.
pub const MEMORY_QUOTA_BYTES_MAX: u64 = 1 << 40;

/// Properties and bounds of one emulated device; see `docs/worker.md`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatedConfig {
    /// Reported by `cuDeviceGetName`.
    pub name: String,
    /// Reported UUID (`cuDeviceGetUuid`).
    pub uuid: [u8; 16],
    /// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
    pub sm_count: u32,
    /// Compute capability major.
    pub cc_major: u32,
    /// Compute capability minor.
    pub cc_minor: u32,
    /// Core clock in kHz (`CLOCK_RATE`).
    pub clock_rate_khz: u32,
    /// Memory quota of the session in bytes: allocations beyond it fail
    /// with `CUDA_ERROR_OUT_OF_MEMORY`; total and free memory report it.
    pub memory_quota_bytes: u64,
    /// Most live allocations.
    pub allocations_max: u32,
    /// Most live streams (besides the built-in ones).
    pub streams_max: u32,
    /// Most live events.
    pub events_max: u32,
    /// Most loaded modules.
    pub modules_max: u32,
    /// Most module images remembered for load-by-hash.
    pub module_cache_max: u32,
    /// Largest dynamic shared memory per block a launch may ask for, in bytes.
    pub shared_mem_per_block_bytes: u32,
}

impl Default for EmulatedConfig {
    fn default() -> Self {
        Self {
            name: "rgpu emulated device".to_owned(),
            uuid: *b"rgpu-emulated-00",
            sm_count: 80,
            cc_major: 8,
            cc_minor: 0,
            clock_rate_khz: 1_410_000,
            memory_quota_bytes: MEMORY_QUOTA_BYTES_DEFAULT,
            allocations_max: 65_536,
            streams_max: 1024,
            events_max: 65_536,
            // cuBLASLt 13.x alone loads 479 distinct images in `cublasLtCreate`
            // (seen through the shim, docs/shim.md); 256 refused its 257th.
            modules_max: 4096,
            module_cache_max: 64,
            shared_mem_per_block_bytes: 48 << 10,
        }
    }
}

/// Why an [`EmulatedConfig`] was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text did not parse into a config.
    #[error("emulated device config does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    /// A field is out of its bounds.
    #[error("emulated device config: {field} is {value}, allowed {allowed}")]
    OutOfBounds {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        allowed: &'static str,
    },
}

impl EmulatedConfig {
    /// Parses a config from TOML (missing fields take their defaults) and
    /// validates it.
    ///
    /// # Errors
    /// [`ConfigError`] for bad TOML or out-of-bounds values.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// [`ConfigError::OutOfBounds`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, bool, &'static str); 6] = [
            (
                "memory_quota_bytes",
                self.memory_quota_bytes,
                self.memory_quota_bytes <= MEMORY_QUOTA_BYTES_MAX,
                "0..=1 TiB",
            ),
            (
                "name",
                self.name.len() as u64,
                !self.name.is_empty() && self.name.len() <= rgpu_proto::MAX_NAME_BYTES as usize,
                "1..=256 bytes",
            ),
            ("sm_count", self.sm_count.into(), self.sm_count > 0, ">= 1"),
            (
                "allocations_max",
                self.allocations_max.into(),
                self.allocations_max > 0,
                ">= 1",
            ),
            (
                "modules_max",
                self.modules_max.into(),
                self.modules_max > 0,
                ">= 1",
            ),
            (
                "shared_mem_per_block_bytes",
                self.shared_mem_per_block_bytes.into(),
                self.shared_mem_per_block_bytes <= 228 << 10,
                "0..=228 KiB",
            ),
        ];
        match checks.into_iter().find(|c| !c.2) {
            Some((field, value, _, allowed)) => Err(ConfigError::OutOfBounds {
                field,
                value,
                allowed,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_and_defaults() {
        let cfg = EmulatedConfig::from_toml_str(
            "name = \"ci gpu\"\nsm_count = 4\nmemory_quota_bytes = 1048576\n",
        )
        .unwrap();
        assert_eq!(cfg.name, "ci gpu");
        assert_eq!(cfg.sm_count, 4);
        assert_eq!(cfg.memory_quota_bytes, 1 << 20);
        assert_eq!(cfg.cc_major, EmulatedConfig::default().cc_major);
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults() {
        let doc = include_str!("../../../docs/worker.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/worker.md has a toml block")
            + 8;
        let len = doc[start..].find("```").expect("the toml block ends");
        let cfg = EmulatedConfig::from_toml_str(&doc[start..start + len]).unwrap();
        assert_eq!(cfg, EmulatedConfig::default());
    }

    #[test]
    fn toml_rejects_unknown_fields_and_bad_bounds() {
        assert!(matches!(
            EmulatedConfig::from_toml_str("bogus = 1"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            EmulatedConfig::from_toml_str("sm_count = 0"),
            Err(ConfigError::OutOfBounds {
                field: "sm_count",
                ..
            })
        ));
        assert!(matches!(
            EmulatedConfig::from_toml_str("memory_quota_bytes = 2199023255552"),
            Err(ConfigError::OutOfBounds {
                field: "memory_quota_bytes",
                ..
            })
        ));
    }
}
