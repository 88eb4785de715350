//! Where the GPU server is and how to authenticate: parsed from the environment.
//!
//! `RGPU_SERVER` (`shm:///path/to/socket`, `tcp://host:port` or, with the `rdma` cargo feature,
//! `rdma://host:port[?device=NAME&gid_index=N&port=N]`), the token from `RGPU_TOKEN`
//! (64 hex digits) or `RGPU_TOKEN_FILE`, and the device share from `RGPU_GPU_MEMORY` (bytes)
//! or `RGPU_GPU_FRACTION` (0 < f ≤ 1). Pure parsing over a lookup function, so tests need no
//! process environment.

use std::path::PathBuf;

/// The environment variable naming the GPU server.
pub const SERVER_ENV: &str = "RGPU_SERVER";
/// The environment variable holding the token as 64 hex digits.
pub const TOKEN_ENV: &str = "RGPU_TOKEN";
/// The environment variable naming a file whose first line is the token.
pub const TOKEN_FILE_ENV: &str = "RGPU_TOKEN_FILE";
/// Bytes of device memory to ask for.
pub const GPU_MEMORY_ENV: &str = "RGPU_GPU_MEMORY";
/// Share of a device to ask for, as a fraction in (0, 1].
pub const GPU_FRACTION_ENV: &str = "RGPU_GPU_FRACTION";
/// Token length in bytes (the protocol's shared secret).
pub const TOKEN_BYTES: usize = 32;
/// Largest token file read; a token line is 64 hex digits plus a newline.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Which transport to use, and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// Shared memory, rendezvous through this Unix socket.
    Shm(PathBuf),
    /// TCP (io_uring), `host:port`.
    Tcp(String),
    /// RDMA verbs: the control connection's `host:port` and the local verbs port options.
    #[cfg(feature = "rdma")]
    Rdma(rgpu_dataplane::rdma::RdmaUrl),
}

/// Everything needed to connect and ask for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The URL as the user wrote it (for log lines).
    pub url: String,
    /// The parsed address.
    pub addr: ServerAddr,
    /// The shared secret.
    pub token: [u8; TOKEN_BYTES],
    /// Device share in thousandths (0: server default), used when `memory_bytes` is 0.
    pub fraction_milli: u32,
    /// Device memory wanted in bytes (0: see `fraction_milli`).
    pub memory_bytes: u64,
}

/// Why the environment does not describe a usable server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `RGPU_SERVER` is unset or empty.
    #[error("{SERVER_ENV} is not set, so there is no GPU server to use")]
    NotConfigured,
    /// The URL has a scheme the shim cannot use.
    #[error("{SERVER_ENV}={url}: unsupported address (use shm:///path or tcp://host:port)")]
    BadUrl {
        /// The configured URL.
        url: String,
    },
    /// `rdma://` with a shim built without the `rdma` cargo feature.
    #[error(
        "{SERVER_ENV}={url}: this libcuda.so.1 was built without the `rdma` cargo feature \
         (cargo build -p rgpu-shim --features rdma)"
    )]
    RdmaNotBuilt {
        /// The configured URL.
        url: String,
    },
    /// Neither `RGPU_TOKEN` nor `RGPU_TOKEN_FILE` is set.
    #[error("{SERVER_ENV}={url} is set, but neither {TOKEN_ENV} nor {TOKEN_FILE_ENV} is")]
    NoToken {
        /// The configured URL.
        url: String,
    },
    /// The token file could not be read.
    #[error("cannot read {TOKEN_FILE_ENV}={path}: {reason}")]
    TokenFile {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The token is not 64 hex digits.
    #[error("the token (from {source_name}) is not {} hex digits", TOKEN_BYTES * 2)]
    BadToken {
        /// Which variable it came from.
        source_name: &'static str,
    },
    /// `RGPU_GPU_MEMORY` or `RGPU_GPU_FRACTION` does not parse or is out of range.
    #[error("{name}={value} is not valid")]
    BadShare {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// Parses 64 hex digits into a token.
pub fn parse_token(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    let text = text.trim();
    if text.len() != TOKEN_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut token = [0u8; TOKEN_BYTES];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(token)
}

fn parse_addr(url: &str) -> Option<ServerAddr> {
    #[cfg(feature = "rdma")]
    if url.starts_with("rdma://") {
        return rgpu_dataplane::rdma::RdmaUrl::parse(url)
            .ok()
            .map(ServerAddr::Rdma);
    }
    if let Some(path) = url.strip_prefix("shm://") {
        return (!path.is_empty()).then(|| ServerAddr::Shm(PathBuf::from(path)));
    }
    let hostport = url.strip_prefix("tcp://")?.trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| ServerAddr::Tcp(hostport.to_owned()))
}

fn read_token_file(path: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |e: std::io::Error| ConfigError::TokenFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(TOKEN_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Builds the configuration from `get` (the environment in production).
pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ServerConfig, ConfigError> {
    let url = get(SERVER_ENV)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if url.is_empty() {
        return Err(ConfigError::NotConfigured);
    }
    if cfg!(not(feature = "rdma")) && url.starts_with("rdma://") {
        return Err(ConfigError::RdmaNotBuilt { url });
    }
    let addr = parse_addr(&url).ok_or_else(|| ConfigError::BadUrl { url: url.clone() })?;
    let (text, source_name) = match (get(TOKEN_ENV), get(TOKEN_FILE_ENV)) {
        (Some(t), _) if !t.trim().is_empty() => (t, TOKEN_ENV),
        (_, Some(path)) if !path.trim().is_empty() => {
            (read_token_file(path.trim())?, TOKEN_FILE_ENV)
        }
        _ => return Err(ConfigError::NoToken { url }),
    };
    let token = parse_token(&text).ok_or(ConfigError::BadToken { source_name })?;
    let memory_bytes = match get(GPU_MEMORY_ENV) {
        Some(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::BadShare {
            name: GPU_MEMORY_ENV,
            value: v.clone(),
        })?,
        None => 0,
    };
    let fraction_milli = match get(GPU_FRACTION_ENV) {
        Some(v) => match v.trim().parse::<f64>() {
            Ok(f) if f > 0.0 && f <= 1.0 => ((f * 1000.0).round() as u32).max(1),
            _ => {
                return Err(ConfigError::BadShare {
                    name: GPU_FRACTION_ENV,
                    value: v,
                })
            }
        },
        None => 0,
    };
    Ok(ServerConfig {
        url,
        addr,
        token,
        fraction_milli,
        memory_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn cfg(pairs: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn parses_both_schemes_token_and_share() {
        let c = cfg(&[(SERVER_ENV, "shm:///tmp/x.sock"), (TOKEN_ENV, HEX)]).unwrap();
        assert_eq!(c.addr, ServerAddr::Shm(PathBuf::from("/tmp/x.sock")));
        assert_eq!(c.token[0], 0x01);
        assert_eq!(c.token[31], 0xef);
        let c = cfg(&[
            (SERVER_ENV, "tcp://127.0.0.1:7000"),
            (TOKEN_ENV, HEX),
            (GPU_FRACTION_ENV, "0.25"),
            (GPU_MEMORY_ENV, "1048576"),
        ])
        .unwrap();
        assert_eq!(c.addr, ServerAddr::Tcp("127.0.0.1:7000".into()));
        assert_eq!((c.fraction_milli, c.memory_bytes), (250, 1 << 20));
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert_eq!(cfg(&[]), Err(ConfigError::NotConfigured));
        #[cfg(not(feature = "rdma"))]
        assert!(matches!(
            cfg(&[(SERVER_ENV, "rdma://h:1"), (TOKEN_ENV, HEX)]),
            Err(ConfigError::RdmaNotBuilt { .. })
        ));
        #[cfg(feature = "rdma")]
        {
            let c = cfg(&[(SERVER_ENV, "rdma://h:1?gid_index=1"), (TOKEN_ENV, HEX)]).unwrap();
            assert!(
                matches!(c.addr, ServerAddr::Rdma(ref u) if u.addr == "h:1" && u.gid_index == Some(1))
            );
            assert!(matches!(
                cfg(&[(SERVER_ENV, "rdma://h:1?x=1"), (TOKEN_ENV, HEX)]),
                Err(ConfigError::BadUrl { .. })
            ));
        }
        assert!(matches!(
            cfg(&[(SERVER_ENV, "tcp://h")]),
            Err(ConfigError::BadUrl { .. })
        ));
        assert!(matches!(
            cfg(&[(SERVER_ENV, "tcp://h:1")]),
            Err(ConfigError::NoToken { .. })
        ));
        assert!(matches!(
            cfg(&[(SERVER_ENV, "tcp://h:1"), (TOKEN_ENV, "abc")]),
            Err(ConfigError::BadToken { .. })
        ));
        assert!(matches!(
            cfg(&[
                (SERVER_ENV, "tcp://h:1"),
                (TOKEN_ENV, HEX),
                (GPU_FRACTION_ENV, "2")
            ]),
            Err(ConfigError::BadShare { .. })
        ));
    }

    #[test]
    fn reads_the_token_file() {
        let path = std::env::temp_dir().join(format!("rgpu-shim-token-{}", std::process::id()));
        std::fs::write(&path, format!("{HEX}\n")).unwrap();
        let p = path.to_string_lossy().into_owned();
        let c = cfg(&[(SERVER_ENV, "tcp://h:1"), (TOKEN_FILE_ENV, &p)]).unwrap();
        assert_eq!(c.token, parse_token(HEX).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            cfg(&[(SERVER_ENV, "tcp://h:1"), (TOKEN_FILE_ENV, &p)]),
            Err(ConfigError::TokenFile { .. })
        ));
    }
}
