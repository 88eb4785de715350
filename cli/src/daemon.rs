//! `rgpu server`: the daemon's life cycle. Loads the configuration, binds
//! the listeners and the metrics endpoint, then runs the accept loop: each
//! accepted connection is handed to a new worker process
//! ([`crate::spawn`]); a reaper thread per worker answers its admission
//! request (sent once the client is authenticated), reads its report,
//! waits for it and releases its share ([`crate::state`]). On
//! SIGTERM/SIGINT it stops accepting, lets workers finish for up to
//! `drain_timeout_ms`, kills what is left, and exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::args::ServerArgs;
use crate::config::{BackendKind, Config, ConfigError, PoolConfig};
use crate::listen::{Accepted, ListenError, ListenUrl, Listener};
use crate::report::{Admission, WorkerMsg, REPORT_BYTES_MAX};
use crate::spawn::{spawn, WorkerSpec};
use crate::state::{ClientInfo, Phase, State, WorkerExit};

/// Longest wait for a connection before the stop flag is re-checked, in ms.
pub const ACCEPT_POLL_MS: u64 = 200;
/// Most connections accepted from one listener per readiness round.
pub const ACCEPT_BATCH_MAX: usize = 64;
/// After the drain, how long killed workers get to be reaped, in ms.
pub const KILL_WAIT_MS: u64 = 5_000;
/// Period of the drain's progress checks, in ms.
pub const DRAIN_TICK_MS: u64 = 50;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cuda backend was asked for but the driver cannot be used.
    #[error("the cuda backend cannot start: {0}")]
    Cuda(#[source] rgpu_gpu_worker::cuda::CudaBackendError),
    /// The token file is unusable.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// No token was configured and the operator did not explicitly accept running without one.
    #[error(
        "no client token: pass --token-file PATH (64 hex digits) or set RGPU_TOKEN_FILE; \
         --danger-no-token accepts the all-zero token, for local experiments only"
    )]
    NoToken,
    /// A listen URL is bad or could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The metrics recorder or endpoint could not start.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Waiting for connections failed.
    #[error("waiting for connections failed: {0}")]
    Poll(#[source] std::io::Error),
}

/// Runs `rgpu server` in the foreground.
pub fn main(args: &ServerArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rgpu server failed");
            eprintln!("rgpu server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ServerArgs) -> Result<(), DaemonError> {
    let mut cfg = Config::load(args)?;
    if cfg.backend == Some(BackendKind::Cuda) {
        crate::cudapool::size_pool(&mut cfg.pool).map_err(DaemonError::Cuda)?;
    }
    crate::token::load(cfg.token_file.as_deref())?;
    if cfg.token_file.is_none() {
        if !args.danger_no_token {
            return Err(DaemonError::NoToken);
        }
        tracing::warn!("--danger-no-token: clients authenticate with the all-zero token");
    }
    let urls = cfg
        .listen
        .iter()
        .map(|u| ListenUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let listeners = urls
        .iter()
        .map(Listener::bind)
        .collect::<Result<Vec<_>, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(DaemonError::Signals)?;
    }
    let prom = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| DaemonError::Metrics(e.to_string()))?;
    let backend_name = match cfg.backend {
        Some(BackendKind::Cuda) => "cuda",
        _ => "emulated",
    };
    let state = Arc::new(State::new(backend_name, &cfg.pool));
    let web_stop = Arc::new(AtomicBool::new(false));
    let web = crate::web::Web::start(
        &cfg.metrics_listen,
        Arc::clone(&state),
        prom,
        Arc::clone(&web_stop),
    )
    .map_err(|e| DaemonError::Metrics(e.to_string()))?;
    announce(&listeners, web.addr);
    let mut d = Daemon {
        cfg,
        state: Arc::clone(&state),
        next_session: 1,
        reapers: Vec::new(),
    };
    let result = d.accept_loop(&listeners, &stop);
    drop(listeners);
    d.drain();
    web_stop.store(true, Ordering::Relaxed);
    web.join();
    tracing::info!("rgpu server stopped");
    result
}

/// Prints the ready line (JSON on stdout: bound URLs and metrics address;
/// tests and supervisors read it) and logs the same.
fn announce(listeners: &[Listener], metrics: std::net::SocketAddr) {
    let urls: Vec<String> = listeners.iter().map(Listener::url).collect();
    let line = serde_json::json!({ "listen": urls, "metrics": metrics.to_string() });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    tracing::info!(?urls, %metrics, "rgpu server ready");
}

struct Daemon {
    cfg: Config,
    state: Arc<State>,
    next_session: u64,
    reapers: Vec<JoinHandle<()>>,
}

impl Daemon {
    fn accept_loop(
        &mut self,
        listeners: &[Listener],
        stop: &AtomicBool,
    ) -> Result<(), DaemonError> {
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::try_from(ACCEPT_POLL_MS * 1_000_000).unwrap_or(0),
        };
        while !stop.load(Ordering::Relaxed) {
            let mut fds: Vec<rustix::event::PollFd<'_>> = listeners
                .iter()
                .map(|l| {
                    rustix::event::PollFd::from_borrowed_fd(l.as_fd(), rustix::event::PollFlags::IN)
                })
                .collect();
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(DaemonError::Poll(e.into())),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            for (l, _) in listeners.iter().zip(ready).filter(|(_, r)| *r) {
                for _ in 0..ACCEPT_BATCH_MAX {
                    match l.accept() {
                        Ok(Some(acc)) => self.serve(acc),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(listener = %l.url(), error = %e, "accept failed");
                            break;
                        }
                    }
                }
            }
            self.reapers.retain(|h| !h.is_finished());
        }
        tracing::info!("stop signal: no longer accepting connections");
        Ok(())
    }

    /// Starts a worker for one connection (admission comes later, from the
    /// worker, once its client is authenticated).
    fn serve(&mut self, acc: Accepted) {
        self.state.connection(acc.scheme);
        if self.state.live() >= self.cfg.workers_max
            || self.state.pending() >= self.cfg.pending_auth_max
        {
            self.state.rejected();
            tracing::warn!(
                peer = %acc.peer,
                workers_max = self.cfg.workers_max,
                pending_auth_max = self.cfg.pending_auth_max,
                "connection closed: too many live or authenticating workers"
            );
            return;
        }
        let session = self.next_session;
        self.next_session += 1;
        let spec = WorkerSpec {
            scheme: acc.scheme,
            session,
            token_file: self.cfg.token_file.clone(),
            handshake_timeout_ms: self.cfg.handshake_timeout_ms,
            backend: self.cfg.backend.unwrap_or(BackendKind::Emulated),
            module_cache_dir: self.cfg.module_cache_dir.clone(),
            share_fd: self.state.share_fd(),
            rdma: acc.rdma.clone(),
        };
        match spawn(&spec, acc.fd) {
            Ok(child) => {
                let info = ClientInfo {
                    session,
                    worker_pid: child.id(),
                    transport: acc.scheme,
                    peer: acc.peer,
                    phase: Phase::Authenticating,
                    grant: None,
                    since_unix_s: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                };
                tracing::info!(session, worker_pid = info.worker_pid, peer = %info.peer, transport = info.transport.name(), "worker spawned");
                // Registered before its reaper exists, so the reaper's
                // `admit` and `finish` always find it.
                self.state.register(info);
                let state = Arc::clone(&self.state);
                let pool = self.cfg.pool.clone();
                match std::thread::Builder::new()
                    .name(format!("rgpu-reap-{session}"))
                    .spawn(move || reap(child, session, &pool, &state))
                {
                    Ok(h) => self.reapers.push(h),
                    Err(e) => {
                        tracing::error!(session, error = %e, "cannot start a reaper thread; the worker will not be accounted for")
                    }
                }
            }
            Err(e) => {
                tracing::error!(session, error = %e, "cannot start a worker; connection closed")
            }
        }
    }

    /// Waits (bounded) for workers to finish, then kills the rest.
    fn drain(&mut self) {
        let live = self.state.live();
        tracing::info!(
            live,
            drain_timeout_ms = self.cfg.drain_timeout_ms,
            "draining workers"
        );
        let deadline = Instant::now() + Duration::from_millis(self.cfg.drain_timeout_ms);
        while self.state.live() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(DRAIN_TICK_MS));
        }
        let left = self.state.worker_pids();
        if !left.is_empty() {
            tracing::warn!(
                workers = left.len(),
                "drain timeout: killing the remaining workers"
            );
            for pid in left {
                // A pid still listed is not reaped yet (the reaper removes it
                // only after `wait`), so it still names our child.
                if let Some(p) = rustix::process::Pid::from_raw(pid.try_into().unwrap_or(0)) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            let until = Instant::now() + Duration::from_millis(KILL_WAIT_MS);
            while self.state.live() > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(DRAIN_TICK_MS));
            }
        }
        for h in self.reapers.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// A worker's reaper and control peer: answers its admission request,
/// reads its report (all bounded), waits for it and accounts for it.
fn reap(mut child: Child, session: u64, pool: &PoolConfig, state: &State) {
    let mut report = None;
    let mut stdin = child.stdin.take();
    if let Some(out) = child.stdout.take() {
        let mut r = BufReader::new(out.take(REPORT_BYTES_MAX));
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            match serde_json::from_str::<WorkerMsg>(line.trim()) {
                Ok(WorkerMsg::Admit {
                    count,
                    fraction_milli,
                    memory_bytes,
                }) => {
                    let answer = admit(state, session, pool, count, fraction_milli, memory_bytes);
                    if let (Some(w), Ok(text)) = (stdin.as_mut(), serde_json::to_string(&answer)) {
                        if let Err(e) = writeln!(w, "{text}").and_then(|()| w.flush()) {
                            tracing::warn!(session, error = %e, "cannot answer the worker's admission request");
                        }
                    }
                }
                Ok(WorkerMsg::Report(rep)) => report = Some(rep),
                Err(e) => tracing::warn!(session, error = %e, "unreadable line from a worker"),
            }
        }
    }
    drop(stdin);
    let exit = match child.wait() {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => WorkerExit::Code(c),
            (None, Some(s)) => WorkerExit::Signal(s),
            (None, None) => WorkerExit::Code(-1),
        },
        Err(e) => {
            tracing::error!(session, error = %e, "waiting for a worker failed");
            WorkerExit::Code(-1)
        }
    };
    state.finish(session, exit, report.as_ref());
}

/// Resolves a client's request against the pool and admits it.
fn admit(
    state: &State,
    session: u64,
    pool: &PoolConfig,
    count: u32,
    fraction_milli: u32,
    memory_bytes: u64,
) -> Admission {
    let bytes = match resolve(pool, count, fraction_milli, memory_bytes) {
        Ok(b) => b,
        Err(reason) => {
            tracing::warn!(session, %reason, "invalid device request");
            return Admission::Refused {
                reason,
                invalid: true,
            };
        }
    };
    match state.admit(session, count, bytes) {
        Some(g) => Admission::Granted {
            count: u32::try_from(g.devices.len()).unwrap_or(u32::MAX),
            bytes: g.bytes,
            device: g.devices.first().copied().unwrap_or(0),
        },
        None => {
            let reason = format!(
                "request for {count} device(s) with {bytes} bytes each does not fit the pool"
            );
            tracing::warn!(session, %reason, "client refused (CUDA_ERROR_OUT_OF_MEMORY)");
            Admission::Refused {
                reason,
                invalid: false,
            }
        }
    }
}

/// Bytes per device a request asks for: `memory_bytes`, else a fraction
/// of a device, else the default share.
///
/// # Errors
/// Why the request is malformed.
pub fn resolve(
    pool: &PoolConfig,
    count: u32,
    fraction_milli: u32,
    memory_bytes: u64,
) -> Result<u64, String> {
    if count == 0 {
        return Err("a request must ask for at least one device".into());
    }
    if fraction_milli > 1000 {
        return Err(format!(
            "fraction_milli {fraction_milli} exceeds 1000 (a whole device)"
        ));
    }
    Ok(if memory_bytes > 0 {
        memory_bytes
    } else if fraction_milli > 0 {
        // u128: exact for any device size.
        let b = u128::from(pool.device_memory_bytes) * u128::from(fraction_milli) / 1000;
        u64::try_from(b).unwrap_or(u64::MAX).max(1)
    } else {
        pool.client_memory_bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_resolve_to_bytes() {
        let pool = PoolConfig {
            devices: 2,
            device_memory_bytes: 1000,
            client_memory_bytes: 300,
        };
        assert_eq!(resolve(&pool, 1, 0, 0), Ok(300), "default share");
        assert_eq!(resolve(&pool, 1, 250, 0), Ok(250), "a quarter");
        assert_eq!(
            resolve(&pool, 2, 250, 77),
            Ok(77),
            "bytes win over a fraction"
        );
        assert!(resolve(&pool, 0, 0, 0).is_err());
        assert!(resolve(&pool, 1, 1001, 0).is_err());
    }
}
