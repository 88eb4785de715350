//! Spawning a worker process for one accepted connection. Exists so the
//! process boundary is set up in one place: the daemon re-executes its own
//! binary (`/proc/self/exe worker …`, no install path assumed), passes the
//! connection as an inherited fd (the only fd inherited besides stdio and
//! the daemon-wide compute-share memfd, [`crate::shareboard`]), a
//! scrubbed environment (no shim, see [`crate::envscrub`]), stdin and
//! stdout as the control channel ([`crate::report`]) and stderr shared for
//! logs.
//!
//! Fd passing without `pre_exec`: every fd this process opens is
//! close-on-exec (Rust's std and rustix set it); the connection's flag is
//! cleared just before `spawn` and the daemon's copy is closed right after.
//! Only the accept thread ever spawns, so no other child can inherit the fd
//! in between.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::listen::Scheme;

/// The binary re-executed for workers.
pub const SELF_EXE: &str = "/proc/self/exe";

/// What a worker is started with.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Transport of the connection.
    pub scheme: Scheme,
    /// Session id.
    pub session: u64,
    /// Token file the worker reads.
    pub token_file: Option<PathBuf>,
    /// Handshake deadline, in ms.
    pub handshake_timeout_ms: u64,
    /// The backend the worker creates.
    pub backend: crate::config::BackendKind,
    /// The cuda backend's shared module cache directory.
    pub module_cache_dir: Option<PathBuf>,
    /// For `rdma://` connections: the verbs port (device, GID index, port).
    pub rdma: Option<crate::listen::RdmaPort>,
    /// The compute-share boards' memfd, inheritable (created without
    /// close-on-exec, see [`crate::shareboard`]); `None`: no compute share.
    pub share_fd: Option<i32>,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The connection's close-on-exec flag could not be cleared.
    #[error("cannot prepare the connection fd for the worker: {0}")]
    Fd(#[source] std::io::Error),
    /// `spawn` failed.
    #[error("cannot spawn worker {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The worker's command line for `spec` with the connection at `fd`.
pub fn command(exe: &Path, spec: &WorkerSpec, fd: i32) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .args(["--fd", &fd.to_string()])
        .args(["--transport", spec.scheme.name()])
        .args(["--session-id", &spec.session.to_string()])
        .args([
            "--handshake-timeout-ms",
            &spec.handshake_timeout_ms.to_string(),
        ])
        .args([
            "--backend",
            match spec.backend {
                crate::config::BackendKind::Cuda => "cuda",
                crate::config::BackendKind::Emulated => "emulated",
            },
        ]);
    if let Some(t) = &spec.token_file {
        cmd.arg("--token-file").arg(t);
    }
    if let Some(d) = &spec.module_cache_dir {
        cmd.arg("--module-cache-dir").arg(d);
    }
    if let Some(r) = &spec.rdma {
        if let Some(d) = &r.device {
            cmd.args(["--rdma-device", d]);
        }
        if let Some(g) = r.gid_index {
            cmd.args(["--rdma-gid-index", &g.to_string()]);
        }
        if let Some(p) = r.port {
            cmd.args(["--rdma-port", &p.to_string()]);
        }
    }
    if let Some(fd) = spec.share_fd {
        cmd.args(["--share-fd", &fd.to_string()]);
    }
    crate::envscrub::scrub(&mut cmd);
    // Its own process group: a terminal's Ctrl-C reaches the daemon only,
    // which then drains the workers itself.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Spawns a worker serving `conn`; the daemon's copy of `conn` is closed.
///
/// # Errors
/// [`SpawnError`]; `conn` is closed in every case.
pub fn spawn(spec: &WorkerSpec, conn: OwnedFd) -> Result<Child, SpawnError> {
    rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::empty())
        .map_err(|e| SpawnError::Fd(e.into()))?;
    let exe = PathBuf::from(SELF_EXE);
    let child = command(&exe, spec, conn.as_raw_fd())
        .spawn()
        .map_err(|source| SpawnError::Spawn { exe, source });
    drop(conn);
    child
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_worker_command_line_parses_back_with_the_rdma_port() {
        let spec = WorkerSpec {
            scheme: Scheme::Rdma,
            session: 7,
            token_file: Some(PathBuf::from("/run/rgpu/token")),
            handshake_timeout_ms: 1234,
            backend: crate::config::BackendKind::Emulated,
            module_cache_dir: None,
            share_fd: None,
            rdma: Some(crate::listen::RdmaPort {
                device: Some("rxe0".into()),
                gid_index: Some(1),
                port: Some(2),
            }),
        };
        let cmd = command(Path::new("rgpu"), &spec, 9);
        let argv = std::iter::once(std::ffi::OsString::from("rgpu"))
            .chain(cmd.get_args().map(std::ffi::OsStr::to_os_string));
        let cli = crate::args::Cli::try_parse_from(argv).unwrap();
        let crate::args::Command::Worker(w) = cli.command else {
            panic!("not the worker subcommand");
        };
        assert_eq!((w.fd, w.transport, w.session_id), (9, Scheme::Rdma, 7));
        assert_eq!(w.handshake_timeout_ms, 1234);
        assert_eq!(w.rdma_device.as_deref(), Some("rxe0"));
        assert_eq!((w.rdma_gid_index, w.rdma_port), (Some(1), Some(2)));
    }
}
