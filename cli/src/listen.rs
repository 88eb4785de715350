//! Listen URLs and the daemon's listening sockets. Exists so URL syntax
//! (`tcp://HOST:PORT`, `shm:///path`, `rdma://HOST:PORT[?device=…]`) and the
//! plain accept of a connection that is then handed to a worker live in
//! one place. The daemon never speaks the protocol, the shm hello or the
//! RDMA token exchange itself: it accepts, and the worker process does the
//! rest. For `rdma://` the daemon accepts only the TCP control connection;
//! the worker checks its token and then creates every RDMA resource (a
//! queue pair cannot move between processes). `rdma://` needs the `rdma`
//! cargo feature; without it the URL is refused with a message naming it.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// The transport a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// TCP (served with io_uring by the worker).
    Tcp,
    /// A Unix socket carrying the shm hand-off.
    Shm,
    /// The TCP control connection of an RDMA transport (the worker sets up the QP).
    Rdma,
}

impl Scheme {
    /// The name used in URLs, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Shm => "shm",
            Scheme::Rdma => "rdma",
        }
    }
}

/// A parsed listen URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenUrl {
    /// `tcp://HOST:PORT`.
    Tcp(String),
    /// `shm:///path/to/socket`.
    Shm(PathBuf),
    /// `rdma://HOST:PORT[?device=NAME&gid_index=N&port=N]` (feature `rdma`).
    #[cfg(feature = "rdma")]
    Rdma(rgpu_dataplane::rdma::RdmaUrl),
}

/// The verbs port a worker uses for an `rdma://` connection (from the listen
/// URL's options; `None` fields: the transport's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaPort {
    /// `device=NAME`.
    pub device: Option<String>,
    /// `gid_index=N`.
    pub gid_index: Option<u32>,
    /// `port=N`.
    pub port: Option<u8>,
}

/// Why a listen URL is unusable or could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// The URL is malformed or names an unknown scheme.
    #[error("bad listen URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `rdma://` URL does not parse.
    #[cfg(feature = "rdma")]
    #[error("bad listen URL {url:?}: {source}")]
    RdmaUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        #[source]
        source: rgpu_dataplane::rdma::RdmaUrlError,
    },
    /// Binding failed.
    #[error("cannot listen on {url}: {source}")]
    Bind {
        /// The URL.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ListenUrl {
    /// Parses a listen URL.
    ///
    /// # Errors
    /// [`ListenError::Url`]; `rdma://` when built without the `rdma` feature.
    pub fn parse(url: &str) -> Result<Self, ListenError> {
        let bad = |reason| ListenError::Url {
            url: url.to_string(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("tcp://") {
            if rest.is_empty() || !rest.contains(':') {
                return Err(bad("expected tcp://HOST:PORT"));
            }
            Ok(Self::Tcp(rest.to_string()))
        } else if let Some(rest) = url.strip_prefix("shm://") {
            if !rest.starts_with('/') || rest.len() < 2 {
                return Err(bad("expected shm:///absolute/path/to/socket"));
            }
            Ok(Self::Shm(PathBuf::from(rest)))
        } else if url.starts_with("rdma://") {
            Self::parse_rdma(url)
        } else {
            Err(bad("unknown scheme (expected tcp://, shm:// or rdma://)"))
        }
    }

    #[cfg(feature = "rdma")]
    fn parse_rdma(url: &str) -> Result<Self, ListenError> {
        rgpu_dataplane::rdma::RdmaUrl::parse(url)
            .map(Self::Rdma)
            .map_err(|e| ListenError::RdmaUrl {
                url: url.to_string(),
                source: e,
            })
    }

    #[cfg(not(feature = "rdma"))]
    fn parse_rdma(url: &str) -> Result<Self, ListenError> {
        Err(ListenError::Url {
            url: url.to_string(),
            reason: RDMA_NOT_BUILT,
        })
    }
}

/// Why `rdma://` is refused by a build without the feature.
pub const RDMA_NOT_BUILT: &str = "this rgpu was built without the `rdma` cargo feature \
     (rebuild with `cargo build -p rgpu --features rdma`; libibverbs-dev is needed to build)";

impl ListenUrl {
    /// The verbs port options of an `rdma://` URL (`None` for other schemes).
    pub fn rdma_port(&self) -> Option<RdmaPort> {
        match self {
            #[cfg(feature = "rdma")]
            Self::Rdma(u) => Some(RdmaPort {
                device: u.device.clone(),
                gid_index: u.gid_index,
                port: u.port,
            }),
            _ => None,
        }
    }
}

/// One bound listening socket (non-blocking).
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix listener for shm clients; its socket file is removed on drop.
    Shm(UnixListener, PathBuf),
    /// The TCP control port of `rdma://` clients, with the URL's verbs options.
    #[cfg(feature = "rdma")]
    Rdma(TcpListener, rgpu_dataplane::rdma::RdmaUrl),
}

/// An accepted connection, still untouched (no bytes read).
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub fd: OwnedFd,
    /// Its transport.
    pub scheme: Scheme,
    /// Who connected: `pid N` (shm, from `SO_PEERCRED`) or the peer address.
    pub peer: String,
    /// For `rdma://`: the verbs port the worker is to use.
    pub rdma: Option<RdmaPort>,
}

impl Listener {
    /// Binds `url`.
    ///
    /// # Errors
    /// [`ListenError::Bind`].
    pub fn bind(url: &ListenUrl) -> Result<Self, ListenError> {
        let err = |source| ListenError::Bind {
            url: url.display(),
            source,
        };
        let l = match url {
            ListenUrl::Tcp(addr) => {
                let addrs: Vec<SocketAddr> =
                    addr.to_socket_addrs().map_err(err)?.collect::<Vec<_>>();
                Self::Tcp(TcpListener::bind(&addrs[..]).map_err(err)?)
            }
            ListenUrl::Shm(path) => Self::Shm(UnixListener::bind(path).map_err(err)?, path.clone()),
            #[cfg(feature = "rdma")]
            ListenUrl::Rdma(u) => {
                let addrs: Vec<SocketAddr> =
                    u.addr.to_socket_addrs().map_err(err)?.collect::<Vec<_>>();
                Self::Rdma(TcpListener::bind(&addrs[..]).map_err(err)?, u.clone())
            }
        };
        match &l {
            Self::Tcp(t) => t.set_nonblocking(true).map_err(err)?,
            Self::Shm(u, _) => u.set_nonblocking(true).map_err(err)?,
            #[cfg(feature = "rdma")]
            Self::Rdma(t, _) => t.set_nonblocking(true).map_err(err)?,
        }
        Ok(l)
    }

    /// The URL clients use (with the real port when bound to port 0).
    pub fn url(&self) -> String {
        match self {
            Self::Tcp(t) => match t.local_addr() {
                Ok(a) => format!("tcp://{a}"),
                Err(_) => "tcp://?".into(),
            },
            Self::Shm(_, p) => format!("shm://{}", p.display()),
            #[cfg(feature = "rdma")]
            Self::Rdma(t, u) => match t.local_addr() {
                Ok(a) => u.with_addr(&a.to_string()),
                Err(_) => "rdma://?".into(),
            },
        }
    }

    /// The socket, for readiness polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(t) => t.as_fd(),
            Self::Shm(u, _) => u.as_fd(),
            #[cfg(feature = "rdma")]
            Self::Rdma(t, _) => t.as_fd(),
        }
    }

    /// Accepts one pending connection, if any (`Ok(None)`: none waiting).
    /// The accepted socket is blocking and close-on-exec.
    ///
    /// # Errors
    /// The accept's I/O error.
    pub fn accept(&self) -> std::io::Result<Option<Accepted>> {
        let r = match self {
            Self::Tcp(t) => t.accept().map(|(s, a)| {
                s.set_nonblocking(false).map(|()| Accepted {
                    fd: OwnedFd::from(s),
                    scheme: Scheme::Tcp,
                    peer: a.to_string(),
                    rdma: None,
                })
            }),
            Self::Shm(u, _) => u.accept().map(|(s, _)| {
                let peer = match rustix::net::sockopt::socket_peercred(&s) {
                    Ok(c) => format!("pid {}", c.pid.as_raw_nonzero()),
                    Err(_) => "pid ?".into(),
                };
                s.set_nonblocking(false).map(|()| Accepted {
                    fd: OwnedFd::from(s),
                    scheme: Scheme::Shm,
                    peer,
                    rdma: None,
                })
            }),
            // Only the control connection: the worker checks the token, then opens the device.
            #[cfg(feature = "rdma")]
            Self::Rdma(t, u) => t.accept().map(|(s, a)| {
                s.set_nonblocking(false).map(|()| Accepted {
                    fd: OwnedFd::from(s),
                    scheme: Scheme::Rdma,
                    peer: a.to_string(),
                    rdma: Some(RdmaPort {
                        device: u.device.clone(),
                        gid_index: u.gid_index,
                        port: u.port,
                    }),
                })
            }),
        };
        match r {
            Ok(inner) => inner.map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl ListenUrl {
    /// The URL as written.
    pub fn display(&self) -> String {
        match self {
            Self::Tcp(a) => format!("tcp://{a}"),
            Self::Shm(p) => format!("shm://{}", p.display()),
            #[cfg(feature = "rdma")]
            Self::Rdma(u) => u.to_string(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Shm(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse() {
        assert_eq!(
            ListenUrl::parse("tcp://127.0.0.1:9").unwrap(),
            ListenUrl::Tcp("127.0.0.1:9".into())
        );
        assert_eq!(
            ListenUrl::parse("shm:///run/rgpu.sock").unwrap(),
            ListenUrl::Shm(PathBuf::from("/run/rgpu.sock"))
        );
        #[cfg(not(feature = "rdma"))]
        {
            let e = ListenUrl::parse("rdma://h:1").unwrap_err().to_string();
            assert!(e.contains("`rdma` cargo feature"), "{e}");
        }
        #[cfg(feature = "rdma")]
        {
            let u = ListenUrl::parse("rdma://192.0.2.1:7?device=rxe0").unwrap();
            assert_eq!(u.display(), "rdma://192.0.2.1:7?device=rxe0");
            assert_eq!(u.rdma_port().unwrap().device.as_deref(), Some("rxe0"));
            assert!(ListenUrl::parse("rdma://h:1?bogus=1").is_err());
        }
        for bad in [
            "rdma://h",
            "tcp://",
            "tcp://host",
            "shm://rel/path",
            "http://x:1",
            "",
        ] {
            assert!(ListenUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[cfg(feature = "rdma")]
    #[test]
    fn rdma_port_zero_reports_the_bound_port_and_keeps_options() {
        let l =
            Listener::bind(&ListenUrl::parse("rdma://127.0.0.1:0?gid_index=1").unwrap()).unwrap();
        let url = l.url();
        assert!(url.starts_with("rdma://127.0.0.1:"), "{url}");
        assert!(
            url.ends_with("?gid_index=1") && !url.contains(":0?"),
            "{url}"
        );
        assert!(l.accept().unwrap().is_none(), "nothing pending");
    }

    #[test]
    fn tcp_port_zero_reports_the_bound_port() {
        let l = Listener::bind(&ListenUrl::parse("tcp://127.0.0.1:0").unwrap()).unwrap();
        assert!(!l.url().ends_with(":0"), "{}", l.url());
        assert!(l.accept().unwrap().is_none(), "nothing pending");
    }
}
