//! The `rdma://HOST:PORT[?device=NAME&gid_index=N&port=N]` address syntax.
//!
//! Exists so the server's listen URL and the client's `RGPU_SERVER` name an RDMA endpoint the
//! same way: the TCP control address plus the optional device, GID index and port number that
//! select the local verbs port (see `docs/rdma.md`, "Running on real RoCE / InfiniBand hosts").

use super::config::RdmaConfig;

/// Longest URL accepted (bounds the parse; a real one is well under 200 bytes).
pub const URL_BYTES_MAX: usize = 1024;

/// A parsed `rdma://` address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RdmaUrl {
    /// `HOST:PORT` of the TCP control connection.
    pub addr: String,
    /// `device=NAME`: the verbs device (`ibv_devices`); absent: the first one.
    pub device: Option<String>,
    /// `gid_index=N`: the GID index; absent: the first IPv4-mapped GID.
    pub gid_index: Option<u32>,
    /// `port=N`: the device port (1-based); absent: 1.
    pub port: Option<u8>,
}

/// Why an `rdma://` address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RdmaUrlError {
    /// The text does not start with `rdma://`.
    #[error("not an rdma:// URL")]
    Scheme,
    /// Longer than [`URL_BYTES_MAX`].
    #[error("longer than {URL_BYTES_MAX} bytes")]
    TooLong,
    /// No `HOST:PORT`, or the port is not a number.
    #[error("expected rdma://HOST:PORT")]
    Address,
    /// An option is unknown, repeated or has a bad value.
    #[error("bad option {0:?} (known: device=NAME, gid_index=N, port=N)")]
    Option(String),
}

impl RdmaUrl {
    /// Parses `rdma://HOST:PORT[?opt=value&...]`.
    ///
    /// # Errors
    /// [`RdmaUrlError`].
    pub fn parse(url: &str) -> Result<Self, RdmaUrlError> {
        if url.len() > URL_BYTES_MAX {
            return Err(RdmaUrlError::TooLong);
        }
        let rest = url.strip_prefix("rdma://").ok_or(RdmaUrlError::Scheme)?;
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').ok_or(RdmaUrlError::Address)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(RdmaUrlError::Address);
        }
        let mut out = Self {
            addr: hostport.to_owned(),
            ..Self::default()
        };
        for opt in query.into_iter().flat_map(|q| q.split('&')) {
            let bad = || RdmaUrlError::Option(opt.to_owned());
            let (key, value) = opt.split_once('=').ok_or_else(bad)?;
            match key {
                "device" if out.device.is_none() && !value.is_empty() => {
                    out.device = Some(value.to_owned());
                }
                "gid_index" if out.gid_index.is_none() => {
                    out.gid_index = Some(value.parse().map_err(|_| bad())?);
                }
                "port" if out.port.is_none() => {
                    out.port = Some(value.parse().ok().filter(|&p| p >= 1).ok_or_else(bad)?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }

    /// Sets the device, GID index and port of `cfg` from the options given.
    pub fn apply(&self, cfg: &mut RdmaConfig) {
        if let Some(d) = &self.device {
            cfg.device = Some(d.clone());
        }
        if let Some(g) = self.gid_index {
            cfg.gid_index = Some(g);
        }
        if let Some(p) = self.port {
            cfg.port = p;
        }
    }

    /// The URL with `addr` in place of the parsed address (e.g. the bound port), options kept.
    pub fn with_addr(&self, addr: &str) -> String {
        let mut s = format!("rdma://{addr}");
        let mut sep = '?';
        let mut push = |k: &str, v: String| {
            s.push(sep);
            s.push_str(k);
            s.push('=');
            s.push_str(&v);
            sep = '&';
        };
        if let Some(d) = &self.device {
            push("device", d.clone());
        }
        if let Some(g) = self.gid_index {
            push("gid_index", g.to_string());
        }
        if let Some(p) = self.port {
            push("port", p.to_string());
        }
        s
    }
}

impl std::fmt::Display for RdmaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.with_addr(&self.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_and_options_and_round_trips() {
        let u = RdmaUrl::parse("rdma://192.0.2.1:7000").unwrap();
        assert_eq!(u.addr, "192.0.2.1:7000");
        assert_eq!(
            (u.device.as_deref(), u.gid_index, u.port),
            (None, None, None)
        );
        assert_eq!(u.to_string(), "rdma://192.0.2.1:7000");
        let text = "rdma://[::1]:9?device=mlx5_0&gid_index=3&port=2";
        let u = RdmaUrl::parse(text).unwrap();
        assert_eq!(u.addr, "[::1]:9");
        assert_eq!(u.device.as_deref(), Some("mlx5_0"));
        assert_eq!((u.gid_index, u.port), (Some(3), Some(2)));
        assert_eq!(u.to_string(), text);
        let mut cfg = RdmaConfig::default();
        u.apply(&mut cfg);
        assert_eq!(cfg.device.as_deref(), Some("mlx5_0"));
        assert_eq!((cfg.gid_index, cfg.port), (Some(3), 2));
        assert_eq!(
            u.with_addr("h:1"),
            "rdma://h:1?device=mlx5_0&gid_index=3&port=2"
        );
    }

    #[test]
    fn refuses_what_cannot_work() {
        for bad in [
            "tcp://h:1",
            "rdma://",
            "rdma://h",
            "rdma://:1",
            "rdma://h:port",
            "rdma://h:1?device",
            "rdma://h:1?device=",
            "rdma://h:1?gid_index=x",
            "rdma://h:1?port=0",
            "rdma://h:1?port=1&port=1",
            "rdma://h:1?color=red",
        ] {
            assert!(RdmaUrl::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            RdmaUrl::parse(&format!("rdma://h:1?device={}", "x".repeat(URL_BYTES_MAX))),
            Err(RdmaUrlError::TooLong)
        );
    }
}
