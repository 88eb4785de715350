//! The daemon's HTTP endpoint: `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus`) and `/status` (JSON, read by
//! `rgpu status`). Exists so the daemon's observability is one small
//! thread on a well-kept HTTP server crate (`tiny_http`), polled with a
//! bounded wait so it stops with the daemon.
//!
//! Per-client series (`rgpu_client_*`, labelled by session id, worker pid
//! and device) are rendered at scrape time from the live share-board slots,
//! so they exist only while their client does: their cardinality is
//! bounded by the live clients (`workers_max`, and 64 per device), and a
//! departed client's counts live on in the daemon-wide totals.
//!
//! `rgpu_device_utilization_ratio{device}` is NVML's utilization (percent
//! of time kernels ran, all clients together) over this endpoint's own
//! sample window, sampled at each scrape: the period since the previous
//! scrape, or at most 1 s back when scraped faster (`docs/worker.md`,
//! "Device utilization").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use rgpu_gpu_worker::share::clock::now_ns;
use rgpu_gpu_worker::share::{Utilization, Window};

use crate::state::{ClientUsage, State};

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
        // Utilization windows start now, one per device board.
        let start_ns = now_ns();
        let mut windows: Vec<Window> = state
            .device_tallies()
            .into_iter()
            .map(|t| Window::new(start_ns, t))
            .collect();
        let thread = std::thread::Builder::new()
            .name("rgpu-web".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match server.recv_timeout(Duration::from_millis(POLL_MS)) {
                        Ok(Some(req)) => answer(req, &state, &prom, &mut windows),
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

fn answer(req: tiny_http::Request, state: &State, prom: &PrometheusHandle, windows: &mut [Window]) {
    let (body, ctype, code) = match req.url() {
        "/metrics" => {
            let mut text = prom.render();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&client_metrics(&state.usage()));
            let now = now_ns();
            let utilization: Vec<Utilization> = windows
                .iter_mut()
                .zip(state.device_tallies())
                .map(|(w, t)| w.rate(now, &t))
                .collect();
            text.push_str(&device_metrics(&utilization));
            (text, "text/plain; version=0.0.4", 200)
        }
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

/// The `rgpu_client_*` series of the live clients, in Prometheus text
/// format.
fn client_metrics(usage: &[ClientUsage]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let labels = |u: &ClientUsage| {
        format!(
            "session=\"{}\",worker_pid=\"{}\",device=\"{}\"",
            u.session, u.worker_pid, u.device
        )
    };
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "rgpu_client_memory_bytes",
        "gauge",
        "Device memory a live client holds against its quota.",
    );
    for u in usage {
        let _ = writeln!(
            out,
            "rgpu_client_memory_bytes{{{}}} {}",
            labels(u),
            u.memory_bytes
        );
    }
    family(
        &mut out,
        "rgpu_client_bytes_total",
        "counter",
        "Bytes a live client moved, by direction.",
    );
    for u in usage {
        for (dir, n) in [
            ("h2d", u.bytes_h2d),
            ("d2h", u.bytes_d2h),
            ("d2d", u.bytes_d2d),
        ] {
            let _ = writeln!(
                out,
                "rgpu_client_bytes_total{{{},direction=\"{dir}\"}} {n}",
                labels(u)
            );
        }
    }
    family(
        &mut out,
        "rgpu_client_calls_total",
        "counter",
        "Backend operations of a live client, by kind.",
    );
    for u in usage {
        for (kind, n) in &u.calls {
            let _ = writeln!(
                out,
                "rgpu_client_calls_total{{{},kind=\"{kind}\"}} {n}",
                labels(u)
            );
        }
    }
    family(
        &mut out,
        "rgpu_client_kernel_ns_total",
        "counter",
        "Kernel time a live client consumed, in ns.",
    );
    for u in usage {
        let _ = writeln!(
            out,
            "rgpu_client_kernel_ns_total{{{}}} {}",
            labels(u),
            u.kernel_ns
        );
    }
    out
}

/// `rgpu_device_utilization_ratio`, one series per device (in device
/// order); nothing without share boards.
fn device_metrics(utilization: &[Utilization]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if utilization.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP rgpu_device_utilization_ratio Fraction of the period since the previous scrape \
         (at most 1 s back when scraped faster) during which kernels ran on the device, all \
         clients together (NVML utilization.gpu / 100)."
    );
    let _ = writeln!(out, "# TYPE rgpu_device_utilization_ratio gauge");
    for (device, u) in utilization.iter().enumerate() {
        let _ = writeln!(
            out,
            "rgpu_device_utilization_ratio{{device=\"{device}\"}} {}",
            f64::from(u.gpu_percent) / 100.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_utilization_series_per_device() {
        let u = |gpu_percent| Utilization {
            gpu_percent,
            memory_percent: 0,
            period_ns: 1,
        };
        let text = device_metrics(&[u(42), u(0), u(100)]);
        for line in [
            "# TYPE rgpu_device_utilization_ratio gauge",
            "rgpu_device_utilization_ratio{device=\"0\"} 0.42",
            "rgpu_device_utilization_ratio{device=\"1\"} 0",
            "rgpu_device_utilization_ratio{device=\"2\"} 1",
        ] {
            assert!(text.lines().any(|x| x == line), "{line} missing in\n{text}");
        }
        assert!(device_metrics(&[]).is_empty(), "no boards, no series");
    }

    #[test]
    fn client_series_carry_their_labels_and_values() {
        let u = ClientUsage {
            session: 7,
            worker_pid: 4242,
            device: 0,
            calls: [("copy", 3), ("memory", 2)].into_iter().collect(),
            bytes_h2d: 100,
            bytes_d2h: 50,
            bytes_d2d: 0,
            memory_bytes: 4096,
            kernel_ns: 9,
        };
        let text = client_metrics(&[u]);
        let l = "session=\"7\",worker_pid=\"4242\",device=\"0\"";
        for line in [
            format!("rgpu_client_memory_bytes{{{l}}} 4096"),
            format!("rgpu_client_bytes_total{{{l},direction=\"h2d\"}} 100"),
            format!("rgpu_client_bytes_total{{{l},direction=\"d2h\"}} 50"),
            format!("rgpu_client_calls_total{{{l},kind=\"copy\"}} 3"),
            format!("rgpu_client_kernel_ns_total{{{l}}} 9"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} missing in\n{text}");
        }
        assert_eq!(text.matches("# TYPE").count(), 4, "one family each");
        assert!(!client_metrics(&[]).contains("session="));
    }
}
