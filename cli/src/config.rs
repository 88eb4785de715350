//! Server configuration: TOML file, then `RGPU_*` environment overrides,
//! then command-line flags (which win). Exists so every bound the daemon
//! enforces is a named, documented field with one default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::ServerArgs;

/// Default address of the metrics/status HTTP endpoint.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9477";
/// Default deadline for a client's protocol handshake (token proof), in ms.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Largest config file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Which GPU backend workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Real GPUs through the CUDA driver.
    Cuda,
    /// The emulated device in host RAM (CI, machines without a GPU).
    Emulated,
}

/// The device pool the daemon admits clients into.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Number of devices (emulated: how many are modeled).
    pub devices: u32,
    /// Memory of each device, in bytes.
    pub device_memory_bytes: u64,
    /// Memory granted to each client (its worker's quota), in bytes. A client
    /// is admitted on the first device with this much unreserved memory.
    pub client_memory_bytes: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            devices: 1,
            device_memory_bytes: 16 << 30,
            client_memory_bytes: 4 << 30,
        }
    }
}

/// Everything `rgpu server` runs with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// GPU backend; must be set somewhere (file, env or flag).
    pub backend: Option<BackendKind>,
    /// Listen URLs (`tcp://HOST:PORT`, `shm:///path`).
    pub listen: Vec<String>,
    /// Token file (64 hex digits). Absent: the server refuses to start unless `--danger-no-token`
    /// is given, and then accepts the all-zero token.
    pub token_file: Option<PathBuf>,
    /// `/metrics` + `/status` HTTP address.
    pub metrics_listen: String,
    /// Most live worker processes (authenticated or not); connections past
    /// it are closed at once and counted.
    pub workers_max: usize,
    /// Most workers whose client has not made its first call yet
    /// (unauthenticated or authenticating); connections past it are closed
    /// at once and counted. Each lives at most `handshake_timeout_ms`
    /// unless it authenticates.
    pub pending_auth_max: usize,
    /// Deadline for a client's protocol handshake, in ms.
    pub handshake_timeout_ms: u64,
    /// After SIGTERM, how long workers may keep serving before they are
    /// killed, in ms.
    pub drain_timeout_ms: u64,
    /// The device pool.
    pub pool: PoolConfig,
    /// Directory of the cuda backend's module cache, shared by all workers
    /// (absent: no cache; `RGPU_MODULE_CACHE_DIR`).
    pub module_cache_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: None,
            listen: Vec::new(),
            token_file: None,
            metrics_listen: METRICS_LISTEN_DEFAULT.to_string(),
            workers_max: 64,
            pending_auth_max: 16,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            drain_timeout_ms: 10_000,
            pool: PoolConfig::default(),
            module_cache_dir: None,
        }
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// An `RGPU_*` variable has a bad value.
    #[error("invalid environment override {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The merged configuration is unusable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming `path`.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Builds the configuration `rgpu server` runs with: file, env, flags.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn load(args: &ServerArgs) -> Result<Self, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = read_bounded(path)?;
                Self::from_toml_str(&text, path)?
            }
            None => Self::default(),
        };
        cfg.apply_env(|name| std::env::var(name).ok())?;
        cfg.apply_args(args);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies `RGPU_*` overrides found by `lookup` (the process env in
    /// production; a map in tests). `RGPU_LISTEN` is comma-separated.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for a value that does not parse.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = lookup("RGPU_BACKEND") {
            self.backend = Some(match v.as_str() {
                "cuda" => BackendKind::Cuda,
                "emulated" => BackendKind::Emulated,
                _ => {
                    return Err(ConfigError::Env {
                        name: "RGPU_BACKEND",
                        value: v,
                        reason: "expected cuda or emulated".into(),
                    })
                }
            });
        }
        if let Some(v) = lookup("RGPU_LISTEN") {
            self.listen = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = lookup("RGPU_TOKEN_FILE") {
            self.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RGPU_MODULE_CACHE_DIR") {
            self.module_cache_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RGPU_METRICS_LISTEN") {
            self.metrics_listen = v;
        }
        env_num(&lookup, "RGPU_WORKERS_MAX", &mut self.workers_max)?;
        env_num(&lookup, "RGPU_PENDING_AUTH_MAX", &mut self.pending_auth_max)?;
        env_num(
            &lookup,
            "RGPU_HANDSHAKE_TIMEOUT_MS",
            &mut self.handshake_timeout_ms,
        )?;
        env_num(&lookup, "RGPU_DRAIN_TIMEOUT_MS", &mut self.drain_timeout_ms)?;
        env_num(&lookup, "RGPU_POOL_DEVICES", &mut self.pool.devices)?;
        env_num(
            &lookup,
            "RGPU_POOL_DEVICE_MEMORY_BYTES",
            &mut self.pool.device_memory_bytes,
        )?;
        env_num(
            &lookup,
            "RGPU_POOL_CLIENT_MEMORY_BYTES",
            &mut self.pool.client_memory_bytes,
        )?;
        Ok(())
    }

    /// Applies command-line flags (they win over file and env).
    pub fn apply_args(&mut self, args: &ServerArgs) {
        if let Some(b) = args.backend {
            self.backend = Some(b);
        }
        if !args.listen.is_empty() {
            self.listen.clone_from(&args.listen);
        }
        if let Some(t) = &args.token_file {
            self.token_file = Some(t.clone());
        }
        if let Some(m) = &args.metrics_listen {
            self.metrics_listen.clone_from(m);
        }
    }

    /// Checks the merged configuration.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] saying what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_string()));
        if self.backend.is_none() {
            return bad("no backend: pass --backend cuda|emulated (or RGPU_BACKEND, or `backend` in the config)");
        }
        if self.listen.is_empty() {
            return bad("no listen URL: pass --listen URL (tcp://HOST:PORT or shm:///path)");
        }
        if self.workers_max == 0 || self.pending_auth_max == 0 || self.handshake_timeout_ms == 0 {
            return bad("workers_max, pending_auth_max and handshake_timeout_ms must be positive");
        }
        if self.pool.devices == 0 || self.pool.client_memory_bytes == 0 {
            return bad("pool.devices and pool.client_memory_bytes must be positive");
        }
        if self.pool.client_memory_bytes > self.pool.device_memory_bytes {
            return bad("pool.client_memory_bytes exceeds pool.device_memory_bytes: no client could ever be admitted");
        }
        Ok(())
    }
}

fn env_num<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    slot: &mut T,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = lookup(name) {
        *slot = v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
            name,
            value: v.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(CONFIG_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        ServerArgs {
            backend: None,
            listen: Vec::new(),
            token_file: None,
            danger_no_token: false,
            config: None,
            metrics_listen: None,
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let text = "backend = \"emulated\"\nlisten = [\"tcp://127.0.0.1:1\"]\nworkers_max = 3\n[pool]\ndevices = 2\nclient_memory_bytes = 100\ndevice_memory_bytes = 1000\n";
        let mut cfg = Config::from_toml_str(text, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.workers_max, 3);
        assert_eq!(cfg.pool.devices, 2);
        cfg.apply_env(|n| match n {
            "RGPU_WORKERS_MAX" => Some("7".into()),
            "RGPU_LISTEN" => Some("shm:///a, tcp://b:1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.workers_max, 7);
        assert_eq!(cfg.listen, vec!["shm:///a", "tcp://b:1"]);
        let mut a = args();
        a.listen = vec!["tcp://c:2".into()];
        a.backend = Some(BackendKind::Cuda);
        cfg.apply_args(&a);
        assert_eq!(cfg.listen, vec!["tcp://c:2"]);
        assert_eq!(cfg.backend, Some(BackendKind::Cuda));
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::from_toml_str("nonsense = 1", Path::new("x")).is_err());
        let mut cfg = Config::default();
        let e = cfg.apply_env(|n| (n == "RGPU_WORKERS_MAX").then(|| "many".to_string()));
        assert!(matches!(
            e,
            Err(ConfigError::Env {
                name: "RGPU_WORKERS_MAX",
                ..
            })
        ));
        assert!(
            Config::default().validate().is_err(),
            "no backend, no listen"
        );
        let mut cfg = Config {
            backend: Some(BackendKind::Emulated),
            listen: vec!["tcp://x:1".into()],
            ..Config::default()
        };
        cfg.validate().unwrap();
        cfg.pool.client_memory_bytes = cfg.pool.device_memory_bytes + 1;
        assert!(cfg.validate().is_err());
    }
}
