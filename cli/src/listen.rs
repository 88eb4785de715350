//! Listen URLs and the daemon's listening sockets. Exists so URL syntax
//! (`tcp://HOST:PORT`, `shm:///path`, `rdma://` refused for now) and the
//! plain accept of a connection that is then handed to a worker live in
//! one place. The daemon never speaks the protocol or the shm hello itself:
//! it accepts, and the worker process does the rest.

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
}

impl Scheme {
    /// The name used in URLs, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Shm => "shm",
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
    /// [`ListenError::Url`]; `rdma://` is refused until the RDMA transport lands.
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
            Err(bad("the rdma transport is not built yet (RDMA issue)"))
        } else {
            Err(bad("unknown scheme (expected tcp:// or shm://)"))
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
        };
        match &l {
            Self::Tcp(t) => t.set_nonblocking(true).map_err(err)?,
            Self::Shm(u, _) => u.set_nonblocking(true).map_err(err)?,
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
        }
    }

    /// The socket, for readiness polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(t) => t.as_fd(),
            Self::Shm(u, _) => u.as_fd(),
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
        for bad in [
            "rdma://h:1",
            "tcp://",
            "tcp://host",
            "shm://rel/path",
            "http://x:1",
            "",
        ] {
            assert!(ListenUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tcp_port_zero_reports_the_bound_port() {
        let l = Listener::bind(&ListenUrl::parse("tcp://127.0.0.1:0").unwrap()).unwrap();
        assert!(!l.url().ends_with(":0"), "{}", l.url());
        assert!(l.accept().unwrap().is_none(), "nothing pending");
    }
}
