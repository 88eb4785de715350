//! The worker process (`rgpu worker`, hidden): serves exactly one client
//! connection, inherited from the daemon, then exits. It completes the
//! transport set-up itself (tcp: io_uring transport; shm: the hello and
//! segment attach), runs the protocol session (token check first) on a
//! backend created only after auth ([`crate::lazy`]) with the quota the
//! daemon admits ([`crate::admit`]), sends its report ([`crate::report`])
//! on stdout and exits with a code the daemon maps.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use rgpu_dataplane::shm::{ShmConfig, ShmTransport};
use rgpu_dataplane::tcp::{TcpConfig, TcpUringTransport};
use rgpu_gpu_worker::{
    run_session, EmulatedBackend, EmulatedConfig, SessionConfig, SessionError, SessionSummary,
};
use rgpu_proto::{ConnError, CudaError, ServerConfig};

use crate::args::WorkerArgs;
use crate::lazy::LazyBackend;
use crate::listen::Scheme;
use crate::report::{WorkerReport, EXIT_AUTH_FAILED, EXIT_FAILED, EXIT_OK};

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
    let mut report = WorkerReport::default();
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
    // Runs on the first call, i.e. after the handshake proved the token.
    let mut backend: LazyBackend<EmulatedBackend> = LazyBackend::new(Box::new(move |req| {
        if req.count != 1 {
            tracing::warn!(
                session = session_id,
                count = req.count,
                "rgpu worker: the emulated backend models one device per context; refusing"
            );
            return Err(CudaError::NOT_SUPPORTED);
        }
        let grant = crate::admit::request(session_id, req)?;
        let backend = EmulatedBackend::new(EmulatedConfig {
            memory_quota_bytes: grant.memory_bytes,
            ..EmulatedConfig::default()
        });
        Ok((backend, grant))
    }));
    let outcome = match args.transport {
        Scheme::Tcp => {
            let cfg = TcpConfig {
                single_thread: true,
                ..TcpConfig::default()
            };
            match TcpUringTransport::from_stream(std::net::TcpStream::from(fd), cfg) {
                Ok(t) => run_session(t, &mut backend, &session),
                Err(e) => return fail("tcp transport set-up", &e, report),
            }
        }
        Scheme::Shm => {
            match ShmTransport::accept_stream(UnixStream::from(fd), ShmConfig::default()) {
                Ok(t) => run_session(t, &mut backend, &session),
                Err(e) => return fail("shm hand-off", &e, report),
            }
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
