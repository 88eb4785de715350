//! Shm connection set-up over a Unix socket: `ShmListener` (server),
//! `ShmTransport::accept_stream` (server, on a socket accepted elsewhere) and
//! `ShmTransport::connect` (client).
//!
//! Exists to keep the handshake in one place: the client creates the
//! segment and passes its memfd with `SCM_RIGHTS` plus a [`Hello`]; the
//! server validates the sizes against its bounds, attaches (the segment
//! validates its own header), learns the client's pid from `SO_PEERCRED`
//! (never from shared memory) and answers with an [`Ack`]. Both sides then
//! watch the other's pid through a pidfd and keep the socket for liveness.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rgpu_ring::{PeerWatch, Segment, Side};

use super::config::ShmConfig;
use super::fdpass;
use super::hello::{Ack, Hello, ACK_OK, ACK_REFUSED};
use super::transport::ShmTransport;
use crate::error::{Result, TransportError};
use crate::{deadline, readiness};

/// Listens on a Unix socket path for shm clients.
#[derive(Debug)]
pub struct ShmListener {
    listener: UnixListener,
    path: PathBuf,
    cfg: ShmConfig,
}

impl ShmListener {
    /// Binds `path` (which must not exist). The socket file is removed on drop.
    pub fn bind(path: impl AsRef<Path>, cfg: ShmConfig) -> Result<Self> {
        cfg.validate()?;
        let path = path.as_ref().to_path_buf();
        let listener =
            UnixListener::bind(&path).map_err(|e| TransportError::io("bind unix socket", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("listener nonblocking", e))?;
        Ok(Self {
            listener,
            path,
            cfg,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (bounded; `None` means the default timeout) for one client and
    /// completes its handshake.
    pub fn accept(&self, deadline: Option<Instant>) -> Result<ShmTransport> {
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let (sock, _) = readiness::accept_until(&self.listener, deadline, "accept", || {
            self.listener.accept()
        })?;
        ShmTransport::accept_stream(sock, self.cfg.clone())
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ShmTransport {
    /// Completes the server side of the shm handshake on an already
    /// accepted Unix socket (what [`ShmListener::accept`] does after
    /// `accept`). Exists so a daemon can accept a connection and hand the
    /// socket to another process (a per-client worker), which then attaches
    /// the client's segment itself. Every wait is bounded by
    /// `cfg.handshake_timeout_ms`.
    pub fn accept_stream(sock: UnixStream, cfg: ShmConfig) -> Result<Self> {
        cfg.validate()?;
        sock.set_nonblocking(false)
            .map_err(|e| TransportError::io("unix socket blocking", e))?;
        set_timeouts(&sock, cfg.handshake_timeout_ms)?;
        let (bytes, fd) = fdpass::recv_with_fd(&sock, "shm hello")?;
        let refuse = |sock: &UnixStream, detail: String| {
            let _ = fdpass::send_plain(
                sock,
                &Ack {
                    status: ACK_REFUSED,
                }
                .encode(),
                "shm ack",
            );
            TransportError::PeerViolation {
                op: "shm accept",
                detail,
            }
        };
        let hello = match Hello::decode(&bytes) {
            Ok(h) => h,
            Err(e) => return Err(refuse(&sock, e.to_string())),
        };
        if hello.ring_bytes > cfg.ring_bytes_accept_max as u64
            || hello.arena_bytes > cfg.arena_bytes_accept_max as u64
        {
            return Err(refuse(
                &sock,
                format!("sizes {hello:?} exceed this server's bounds"),
            ));
        }
        let seg = match Segment::attach(fd) {
            Ok(s) => s,
            Err(e) => return Err(refuse(&sock, format!("segment rejected: {e}"))),
        };
        let got = seg.config();
        if got.ring_bytes as u64 != hello.ring_bytes
            || got.max_record_bytes as u64 != hello.max_record_bytes
            || got.arena_bytes as u64 != hello.arena_bytes
        {
            return Err(refuse(
                &sock,
                format!("hello {hello:?} disagrees with the segment {got:?}"),
            ));
        }
        let peer = watch_peer(&sock)?;
        fdpass::send_plain(&sock, &Ack { status: ACK_OK }.encode(), "shm ack")?;
        tracing::debug!(pid = peer.pid(), ?got, "shm client attached");
        let cfg = ShmConfig {
            segment: got,
            ..cfg
        };
        ShmTransport::from_parts(seg, Side::Server, peer, sock, cfg)
    }
}

impl ShmTransport {
    /// Connects to a [`ShmListener`] at `path`: creates the segment with
    /// `cfg.segment`, passes it over, and waits (bounded) for the answer.
    pub fn connect(path: impl AsRef<Path>, cfg: ShmConfig) -> Result<Self> {
        cfg.validate()?;
        let sock =
            UnixStream::connect(path).map_err(|e| TransportError::io("connect unix socket", e))?;
        set_timeouts(&sock, cfg.handshake_timeout_ms)?;
        let seg = Segment::create(&cfg.segment).map_err(|source| TransportError::Segment {
            op: "create segment",
            source,
        })?;
        let sc = seg.config();
        let hello = Hello {
            ring_bytes: sc.ring_bytes as u64,
            max_record_bytes: sc.max_record_bytes as u64,
            arena_bytes: sc.arena_bytes as u64,
        };
        fdpass::send_with_fd(&sock, &hello.encode(), seg.fd())?;
        let ack = Ack::decode(&fdpass::recv_plain(&sock, "shm ack")?)?;
        if ack.status != ACK_OK {
            return Err(TransportError::PeerViolation {
                op: "shm connect",
                detail: format!("server refused the segment (status {})", ack.status),
            });
        }
        let peer = watch_peer(&sock)?;
        tracing::debug!(pid = peer.pid(), "shm connected");
        Self::from_parts(seg, Side::Client, peer, sock, cfg)
    }
}

/// Opens a pidfd on the socket peer, then re-checks the socket: if the peer
/// had died (and its pid been reused) before `pidfd_open`, its socket end is
/// closed by now, so a live socket means the pidfd names the right process.
fn watch_peer(sock: &UnixStream) -> Result<PeerWatch> {
    let pid = fdpass::peer_pid(sock)?;
    let watch = PeerWatch::new(pid).map_err(|e| TransportError::PeerGone {
        op: "pidfd_open peer",
        detail: e.to_string(),
    })?;
    if fdpass::peer_hung_up(sock) {
        return Err(TransportError::PeerGone {
            op: "shm handshake",
            detail: "socket closed".into(),
        });
    }
    Ok(watch)
}

fn set_timeouts(sock: &UnixStream, ms: u64) -> Result<()> {
    let t = Some(Duration::from_millis(ms));
    sock.set_read_timeout(t)
        .map_err(|e| TransportError::io("set unix socket timeout", e))?;
    sock.set_write_timeout(t)
        .map_err(|e| TransportError::io("set unix socket timeout", e))
}
