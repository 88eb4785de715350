//! The worker process (`rgpu worker`, hidden): serves exactly one client
//! connection, inherited from the daemon, then exits. It completes the
//! transport set-up itself (tcp: io_uring transport; shm: the hello and
//! segment attach; rdma ([`crate::worker_rdma`]): the control connection's
//! token check, then device, PD, memory regions and the queue pair, all
//! owned by this process), runs the protocol session (token check first) on a
//! backend created only after auth ([`crate::lazy`]) with the quota the
//! daemon admits ([`crate::admit`]), sends its report ([`crate::report`])
//! on stdout and exits with a code the daemon maps.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use rgpu_dataplane::shm::{ShmConfig, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_gpu_worker::cuda::{CudaBackend, ModuleCache};
use rgpu_gpu_worker::share::Shared;
use rgpu_gpu_worker::{
    run_session, Backend, DeviceGrant, DeviceRequest, EmulatedBackend, EmulatedConfig,
    SessionConfig, SessionError, SessionSummary,
};
use rgpu_proto::{ConnError, CudaError, ServerConfig};

use crate::args::WorkerArgs;
use crate::config::BackendKind;
use crate::lazy::LazyBackend;
use crate::listen::Scheme;
use crate::report::{WorkerReport, EXIT_AUTH_FAILED, EXIT_FAILED, EXIT_OK};
use crate::shareboard::{shared, DeviceBoard};

/// Runs the worker; never panics on client input.
pub fn main(args: &WorkerArgs) -> ExitCode {
    let (code, report) = serve(args);
    let mut out = std::io::stdout().lock();
    match serde_json::to_string(&crate::report::WorkerMsg::Report(report)) {
        Ok(line) => {
            let _ = writeln!(out, "{line}");
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode the worker report"),
    }
    let _ = out.flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn serve(args: &WorkerArgs) -> (i32, WorkerReport) {
    let report = WorkerReport::default();
    let fail = |what: &str, e: &dyn std::fmt::Display, mut report: WorkerReport| {
        tracing::warn!(session = args.session_id, error = %e, "rgpu worker: {what}");
        report.close_reason = format!("{what}: {e}");
        (EXIT_FAILED, report)
    };
    let token = match crate::token::load(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail("token", &e, report),
    };
    let fd = match crate::inherit::claim_socket(args.fd) {
        Ok(fd) => fd,
        Err(e) => return fail("inherited connection", &e, report),
    };
    let session = SessionConfig {
        server: ServerConfig {
            token,
            session_id: args.session_id,
            handshake_timeout_ns: u64::try_from(
                Duration::from_millis(args.handshake_timeout_ms).as_nanos(),
            )
            .unwrap_or(u64::MAX),
            ..ServerConfig::default()
        },
        ..SessionConfig::default()
    };
    let session_id = args.session_id;
    let boards = crate::shareboard::inherit_arg(args.share_fd, session_id);
    match args.backend {
        BackendKind::Emulated => {
            // Runs on the first call, i.e. after the handshake proved the token.
            let backend: LazyBackend<Shared<EmulatedBackend, DeviceBoard>> =
                LazyBackend::new(Box::new(move |req| {
                    let (grant, _) = admit_one(session_id, req)?;
                    let backend = EmulatedBackend::new(EmulatedConfig {
                        memory_quota_bytes: grant.memory_bytes,
                        ..EmulatedConfig::default()
                    });
                    Ok((shared(backend, boards.as_ref(), session_id), grant))
                }));
            run_on(args, fd, &session, backend, report)
        }
        BackendKind::Cuda => {
            // Also after auth: the driver is loaded and a context made only
            // for clients that proved the token and were admitted.
            let cache = args.module_cache_dir.as_ref().and_then(|dir| {
                ModuleCache::open(dir)
                    .inspect_err(|e| {
                        tracing::warn!(dir = %dir.display(), error = %e, "rgpu worker: no module cache");
                    })
                    .ok()
            });
            let backend: LazyBackend<Shared<CudaBackend, DeviceBoard>> = LazyBackend::new(
                Box::new(move |req| {
                    let (grant, device) = admit_one(session_id, req)?;
                    match CudaBackend::open(device, grant.memory_bytes) {
                        Ok(b) => {
                            let b = match &cache {
                                Some(c) => b.with_module_cache(c.clone()),
                                None => b,
                            };
                            Ok((shared(b, boards.as_ref(), session_id), grant))
                        }
                        Err(e) => {
                            tracing::error!(session = session_id, error = %e, "rgpu worker: cannot open the cuda backend");
                            Err(CudaError::NOT_INITIALIZED)
                        }
                    }
                }),
            );
            run_on(args, fd, &session, backend, report)
        }
    }
}

/// Admission for one device (each backend context models one device).
fn admit_one(session_id: u64, req: DeviceRequest) -> Result<(DeviceGrant, u32), CudaError> {
    if req.count != 1 {
        tracing::warn!(
            session = session_id,
            count = req.count,
            "rgpu worker: a backend context models one device; refusing"
        );
        return Err(CudaError::NOT_SUPPORTED);
    }
    crate::admit::request_device(session_id, req)
}

/// Runs the session on `backend` over the inherited connection.
fn run_on<B: Backend>(
    args: &WorkerArgs,
    fd: std::os::fd::OwnedFd,
    session: &SessionConfig,
    mut backend: LazyBackend<B>,
    mut report: WorkerReport,
) -> (i32, WorkerReport) {
    let fail = |what: &str, e: &dyn std::fmt::Display, mut report: WorkerReport| {
        tracing::warn!(session = args.session_id, error = %e, "rgpu worker: {what}");
        report.close_reason = format!("{what}: {e}");
        (EXIT_FAILED, report)
    };
    let outcome = match args.transport {
        Scheme::Tcp => {
            let cfg = TcpConfig {
                single_thread: true,
                ..TcpConfig::default()
            };
            match TcpUringTransport::from_stream(std::net::TcpStream::from(fd), cfg) {
                Ok(t) => run_session(t, &mut backend, session),
                Err(e) => return fail("tcp transport set-up", &e, report),
            }
        }
        Scheme::Shm => {
            match ShmTransport::accept_stream(UnixStream::from(fd), ShmConfig::default()) {
                Ok(t) => run_session(t, &mut backend, session),
                Err(e) => return fail("shm hand-off", &e, report),
            }
        }
        #[cfg(feature = "rdma")]
        Scheme::Rdma => {
            use crate::worker_rdma::{accept, AcceptError};
            match accept(args, fd, &session.server.token) {
                Ok(t) => run_session(t, &mut backend, session),
                Err(AcceptError::Unauthenticated(e)) => {
                    tracing::warn!(session = args.session_id, error = %e, "rgpu worker: rdma client failed authentication");
                    report.auth_failed = true;
                    report.close_reason = format!("rdma control connection: {e}");
                    return (EXIT_AUTH_FAILED, report);
                }
                Err(e) => return fail("rdma transport set-up", &e, report),
            }
        }
        #[cfg(not(feature = "rdma"))]
        Scheme::Rdma => {
            drop(fd);
            return fail(
                "rdma transport set-up",
                &crate::listen::RDMA_NOT_BUILT,
                report,
            );
        }
    };
    report.backend_created = backend.created();
    finish(outcome, report)
}

fn finish(
    outcome: Result<SessionSummary, SessionError>,
    mut report: WorkerReport,
) -> (i32, WorkerReport) {
    match outcome {
        Ok(s) => {
            let auth_failed = matches!(
                s.close_reason,
                Some(ConnError::AuthFailed | ConnError::HandshakeTimeout)
            );
            report.auth_failed = auth_failed;
            report.protocol_error = !matches!(
                s.close_reason,
                None | Some(
                    ConnError::AuthFailed
                        | ConnError::HandshakeTimeout
                        | ConnError::IdleTimeout
                        | ConnError::TransportClosed
                        | ConnError::LocalClose
                        | ConnError::PeerClosed { .. }
                )
            );
            report.close_reason = match s.close_reason {
                Some(r) => r.to_string(),
                None => "closed".into(),
            };
            report.sync_calls = s.stats.sync_calls;
            report.async_calls = s.stats.async_calls;
            report.failed_calls = s.stats.sync_failures + s.stats.async_failures;
            report.bytes_h2d = s.stats.bytes_h2d;
            report.bytes_d2h = s.stats.bytes_d2h;
            report.released_bytes = s.released.bytes;
            if auth_failed {
                tracing::warn!(reason = %report.close_reason, "rgpu worker: client failed authentication");
                (EXIT_AUTH_FAILED, report)
            } else {
                (EXIT_OK, report)
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "rgpu worker: session failed");
            report.close_reason = e.to_string();
            (EXIT_FAILED, report)
        }
    }
}
