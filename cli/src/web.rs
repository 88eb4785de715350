//! The daemon's HTTP endpoint: `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus`) and `/status` (JSON, read by
//! `rgpu status`). Exists so the daemon's observability is one small
//! thread on a well-kept HTTP server crate (`tiny_http`), polled with a
//! bounded wait so it stops with the daemon.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::State;

/// Longest wait for a request before the stop flag is re-checked, in ms.
pub const POLL_MS: u64 = 200;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// Binding the address failed.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// The server's error, in words.
        reason: String,
    },
}

/// A running endpoint.
pub struct Web {
    /// The bound address (the real port when bound to port 0).
    pub addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Web {
    /// Serves `/metrics` and `/status` on `addr` until `stop` is set.
    ///
    /// # Errors
    /// [`WebError::Bind`].
    pub fn start(
        addr: &str,
        state: Arc<State>,
        prom: PrometheusHandle,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, WebError> {
        let server = tiny_http::Server::http(addr).map_err(|e| WebError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().ok_or_else(|| WebError::Bind {
            addr: addr.to_string(),
            reason: "not an IP address".into(),
        })?;
        let thread = std::thread::Builder::new()
            .name("rgpu-web".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match server.recv_timeout(Duration::from_millis(POLL_MS)) {
                        Ok(Some(req)) => answer(req, &state, &prom),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "metrics endpoint receive failed"),
                    }
                }
            })
            .map_err(|e| WebError::Bind {
                addr: addr.to_string(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        Ok(Self {
            addr: bound,
            thread,
        })
    }

    /// Waits for the endpoint thread (after the stop flag is set).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn answer(req: tiny_http::Request, state: &State, prom: &PrometheusHandle) {
    let (body, ctype, code) = match req.url() {
        "/metrics" => (prom.render(), "text/plain; version=0.0.4", 200),
        "/status" => match serde_json::to_string(&state.status()) {
            Ok(s) => (s, "application/json", 200),
            Err(e) => (format!("status encoding failed: {e}"), "text/plain", 500),
        },
        _ => (
            "not found: try /metrics or /status\n".into(),
            "text/plain",
            404,
        ),
    };
    let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
        resp.add_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!(error = %e, "metrics client went away");
    }
}
