//! `rgpu status`: fetches a server's `/status` JSON over HTTP (`ureq`) and
//! prints its GPUs, allocations and clients as tables. Exists so operators
//! need no other tool to see what a server holds.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::args::StatusArgs;

/// Bound on the whole status request, in ms.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Runs `rgpu status`.
pub fn main(args: &StatusArgs) -> ExitCode {
    let base = if args.server.starts_with("http://") {
        args.server.clone()
    } else {
        format!("http://{}", args.server)
    };
    let url = format!("{}/status", base.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build();
    let body = agent.get(&url).call().map(ureq::Response::into_string);
    let doc: Value = match body.map(|b| b.map(|text| serde_json::from_str::<Value>(&text))) {
        Ok(Ok(Ok(v))) => v,
        Ok(Ok(Err(e))) => {
            eprintln!("rgpu status: {url} did not answer JSON: {e}");
            return ExitCode::FAILURE;
        }
        Ok(Err(e)) => {
            eprintln!("rgpu status: cannot read the answer of {url}: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("rgpu status: cannot reach {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{doc}");
    } else {
        print!("{}", render(&doc));
    }
    ExitCode::SUCCESS
}

/// Renders a `/status` document as text tables.
pub fn render(doc: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let backend = doc.get("backend").and_then(Value::as_str).unwrap_or("?");
    let _ = writeln!(s, "backend: {backend}\n");
    let _ = writeln!(
        s,
        "{:<6} {:>16} {:>16} {:>8}",
        "GPU", "memory", "reserved", "clients"
    );
    for d in doc
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            s,
            "{:<6} {:>16} {:>16} {:>8}",
            n(d, "index"),
            n(d, "memory_bytes"),
            n(d, "reserved_bytes"),
            n(d, "clients")
        );
    }
    let _ = writeln!(
        s,
        "\n{:<8} {:>8} {:<4} {:<24} {:>6} {:>16}",
        "session", "worker", "via", "peer", "GPU", "quota"
    );
    for c in doc
        .get("clients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let grant = c.get("grant").filter(|g| !g.is_null());
        let (gpu, quota) = match grant {
            Some(g) => (
                g.get("devices")
                    .and_then(Value::as_array)
                    .map(|d| {
                        d.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
                n(g, "bytes").to_string(),
            ),
            None => (
                "-".into(),
                c.get("phase")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            ),
        };
        let _ = writeln!(
            s,
            "{:<8} {:>8} {:<4} {:<24} {:>6} {:>16}",
            n(c, "session"),
            n(c, "worker_pid"),
            c.get("transport").and_then(Value::as_str).unwrap_or("?"),
            c.get("peer").and_then(Value::as_str).unwrap_or("?"),
            gpu,
            quota
        );
    }
    let compute: Vec<&Value> = doc
        .get("compute")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if !compute.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<8} {:>6} {:>8} {:>10} {:>14} {:>10}",
            "session", "GPU", "share", "used", "kernel_ms", "throttled"
        );
        for u in compute {
            let _ = writeln!(
                s,
                "{:<8} {:>6} {:>8.3} {:>10.3} {:>14} {:>10}",
                n(u, "session"),
                n(u, "device"),
                n(u, "share_milli") as f64 / 1000.0,
                u.get("share_used").and_then(Value::as_f64).unwrap_or(0.0),
                n(u, "kernel_ns") / 1_000_000,
                n(u, "throttle_waits")
            );
        }
    }
    let usage: Vec<&Value> = doc
        .get("usage")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if !usage.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<8} {:>8} {:>6} {:>16} {:>16} {:>16} {:>16} {:>8} {:>12}",
            "session",
            "worker",
            "GPU",
            "memory",
            "h2d_bytes",
            "d2h_bytes",
            "d2d_bytes",
            "calls",
            "kernel_ms"
        );
        for u in usage {
            let calls: u64 = u
                .get("calls")
                .and_then(Value::as_object)
                .map(|c| c.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let _ = writeln!(
                s,
                "{:<8} {:>8} {:>6} {:>16} {:>16} {:>16} {:>16} {:>8} {:>12}",
                n(u, "session"),
                n(u, "worker_pid"),
                n(u, "device"),
                n(u, "memory_bytes"),
                n(u, "bytes_h2d"),
                n(u, "bytes_d2h"),
                n(u, "bytes_d2d"),
                calls,
                n(u, "kernel_ns") / 1_000_000
            );
        }
    }
    if let Some(t) = doc.get("totals").and_then(Value::as_object) {
        let _ = writeln!(s, "\ntotals:");
        for (k, v) in t {
            let _ = writeln!(s, "  {k:<22} {v}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_devices_clients_and_refusals() {
        let doc = serde_json::json!({
            "backend": "emulated",
            "devices": [{"index": 0, "memory_bytes": 100, "reserved_bytes": 60, "clients": 1}],
            "clients": [
                {"session": 7, "worker_pid": 42, "transport": "shm", "peer": "pid 9", "phase": "admitted", "grant": {"devices": [0], "bytes": 60}},
                {"session": 8, "worker_pid": 43, "transport": "tcp", "peer": "1.2.3.4:5", "phase": "refused", "grant": null}
            ],
            "compute": [{"session": 7, "device": 0, "share_milli": 250, "kernel_ns": 3_000_000_000u64, "share_used": 0.26, "throttle_waits": 17}],
            "usage": [{"session": 7, "worker_pid": 42, "device": 0, "calls": {"copy": 5, "memory": 2}, "bytes_h2d": 123456, "bytes_d2h": 654321, "bytes_d2d": 0, "memory_bytes": 777216, "kernel_ns": 0}],
            "totals": {"auth_failures": 2}
        });
        let text = render(&doc);
        assert!(text.contains("backend: emulated"));
        assert!(text
            .lines()
            .any(|l| l.contains("42") && l.contains("shm") && l.contains("60")));
        assert!(text
            .lines()
            .any(|l| l.contains("43") && l.contains("refused")));
        assert!(text.contains("auth_failures"));
        assert!(text.lines().any(|l| l.contains("777216")
            && l.contains("123456")
            && l.contains("654321")
            && l.split_whitespace().nth(7) == Some("7")));
        assert!(text.lines().any(|l| l.contains("0.250")
            && l.contains("0.260")
            && l.contains("3000")
            && l.contains("17")));
    }
}
