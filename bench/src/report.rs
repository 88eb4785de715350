//! The bench's result record and its two renderings: a human table on stdout and the JSON object
//! that `--json FILE` writes.
//!
//! The JSON field names are a contract (scripts and later issues read them): `transport`,
//! `scenario`, `iters`, `p50_ns`, `p99_ns`, `p999_ns`, `ops_per_sec` and `baseline_p50_ns` are
//! always present. Bulk runs add bandwidth fields. Every figure in one report is measured in the
//! same process run as its baseline, because these machines are too noisy to compare runs.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records, in nanoseconds (60 s). A sample above it is clamped, so
/// one stall cannot make recording fail.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Significant decimal digits the latency histograms keep.
const HISTOGRAM_SIGFIG: u8 = 3;

/// A latency histogram with the bench's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Records one sample, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency_ns: u64) {
    let clamped = latency_ns.clamp(1, LATENCY_NS_MAX);
    histogram.saturating_record(clamped);
}

/// Runs `op` for `warmup` untimed iterations, then `iters` timed ones, recording each timed
/// iteration's latency; the rate is taken over the timed iterations only. Every latency loop of the
/// bench goes through here, so rgpu paths and their baselines are timed by the same code.
pub fn timed_loop<E, F>(warmup: u64, iters: u64, mut op: F) -> Result<Measured, E>
where
    F: FnMut(u64) -> Result<(), E>,
{
    assert!(
        iters > 0,
        "a timed loop needs at least one measured iteration"
    );
    for i in 0..warmup {
        op(i)?;
    }
    let mut histogram = new_histogram();
    let started = std::time::Instant::now();
    for i in warmup..warmup + iters {
        let t0 = std::time::Instant::now();
        op(i)?;
        record(&mut histogram, t0.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed();
    Ok(Measured {
        latency: Percentiles::of(&histogram),
        ops_per_sec: iters as f64 / elapsed.as_secs_f64(),
    })
}

/// Latency percentiles taken from one histogram.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, in nanoseconds.
    pub p999_ns: u64,
}

impl Percentiles {
    /// Reads the percentiles out of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50_ns: histogram.value_at_quantile(0.50),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
        }
    }
}

/// Bandwidth figures of a bulk run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bandwidth {
    /// Bytes per transfer.
    pub size_bytes: u64,
    /// Measured bandwidth through rgpu, in GB/s (10^9 bytes per second).
    pub gbytes_per_sec: f64,
    /// Baseline bandwidth of the same run, in GB/s.
    pub baseline_gbytes_per_sec: f64,
    /// `gbytes_per_sec / baseline_gbytes_per_sec`.
    pub ratio_to_baseline: f64,
}

/// One bench result: the JSON object `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `shm` or `tcp`.
    pub transport: String,
    /// `null-call`, `async-calls` or `bulk`.
    pub scenario: String,
    /// Measured iterations (warm-up excluded).
    pub iters: u64,
    /// Median per-operation latency through rgpu, in nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, in nanoseconds.
    pub p999_ns: u64,
    /// Operations completed per second through rgpu.
    pub ops_per_sec: f64,
    /// Median latency of the same-run baseline, in nanoseconds.
    pub baseline_p50_ns: u64,
    /// What the baseline is, in words.
    pub baseline: String,
    /// Baseline 99th percentile, in nanoseconds.
    pub baseline_p99_ns: u64,
    /// Baseline operations per second.
    pub baseline_ops_per_sec: f64,
    /// `p50_ns / baseline_p50_ns`.
    pub p50_ratio_to_baseline: f64,
    /// Bandwidth, for the bulk scenario only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Free-form notes: batch sizes, pinning, anything that qualifies the numbers.
    pub notes: Vec<String>,
}

/// A measured side (rgpu or baseline) before it is folded into a [`Report`].
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Latency percentiles per operation.
    pub latency: Percentiles,
    /// Operations per second over the timed loop.
    pub ops_per_sec: f64,
}

impl Report {
    /// Builds a report from the two measured sides of one run.
    pub fn new(
        transport: &str,
        scenario: &str,
        iters: u64,
        ours: Measured,
        baseline_name: &str,
        baseline: Measured,
    ) -> Self {
        assert!(iters > 0, "a report needs at least one measured iteration");
        let ratio = ours.latency.p50_ns as f64 / baseline.latency.p50_ns.max(1) as f64;
        Self {
            transport: transport.to_owned(),
            scenario: scenario.to_owned(),
            iters,
            p50_ns: ours.latency.p50_ns,
            p99_ns: ours.latency.p99_ns,
            p999_ns: ours.latency.p999_ns,
            ops_per_sec: ours.ops_per_sec,
            baseline_p50_ns: baseline.latency.p50_ns,
            baseline: baseline_name.to_owned(),
            baseline_p99_ns: baseline.latency.p99_ns,
            baseline_ops_per_sec: baseline.ops_per_sec,
            p50_ratio_to_baseline: ratio,
            bandwidth: None,
            notes: Vec::new(),
        }
    }

    /// Renders the human table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let title = format!(
            "rgpu bench: transport={} scenario={} iters={}",
            self.transport, self.scenario, self.iters
        );
        out.push_str(&title);
        out.push('\n');
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>10} {:>14}\n",
            "", "p50", "p99", "p99.9", "ops/s"
        ));
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>10} {:>14}\n",
            format!("rgpu ({})", self.transport),
            fmt_ns(self.p50_ns),
            fmt_ns(self.p99_ns),
            fmt_ns(self.p999_ns),
            fmt_rate(self.ops_per_sec)
        ));
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>10} {:>14}\n",
            format!("baseline: {}", self.baseline),
            fmt_ns(self.baseline_p50_ns),
            fmt_ns(self.baseline_p99_ns),
            "",
            fmt_rate(self.baseline_ops_per_sec)
        ));
        out.push_str(&format!(
            "p50 ratio rgpu/baseline: {:.3}\n",
            self.p50_ratio_to_baseline
        ));
        if let Some(bw) = &self.bandwidth {
            out.push_str(&format!(
                "bandwidth at {} B: rgpu {:.2} GB/s, baseline {:.2} GB/s, ratio {:.3}\n",
                bw.size_bytes, bw.gbytes_per_sec, bw.baseline_gbytes_per_sec, bw.ratio_to_baseline
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

/// Formats nanoseconds with a unit a reader takes in at a glance.
fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Formats an operation rate.
fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k", per_sec / 1e3)
    } else {
        format!("{per_sec:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_samples() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            record(&mut h, v * 10);
        }
        let p = Percentiles::of(&h);
        assert!((4_990..=5_010).contains(&p.p50_ns), "p50 was {}", p.p50_ns);
        assert!(p.p99_ns >= p.p50_ns && p.p999_ns >= p.p99_ns);
    }

    #[test]
    fn timed_loop_runs_warmup_then_measures_and_stops_on_error() {
        let mut seen = Vec::new();
        let m = timed_loop::<(), _>(2, 3, |i| {
            seen.push(i);
            Ok(())
        })
        .expect("no error");
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert!(m.ops_per_sec > 0.0);
        let failed = timed_loop(0, 10, |i| if i == 4 { Err(i) } else { Ok(()) });
        assert_eq!(failed.err(), Some(4));
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_NS_MAX / 2);
    }

    #[test]
    fn json_has_the_contract_fields() {
        let m = Measured {
            latency: Percentiles {
                p50_ns: 500,
                p99_ns: 900,
                p999_ns: 2000,
            },
            ops_per_sec: 1.5e6,
        };
        let b = Measured {
            latency: Percentiles {
                p50_ns: 250,
                p99_ns: 400,
                p999_ns: 800,
            },
            ops_per_sec: 3e6,
        };
        let r = Report::new("shm", "null-call", 10, m, "atomic ping-pong", b);
        let v: serde_json::Value = serde_json::to_value(&r).expect("report serializes");
        for key in [
            "transport",
            "scenario",
            "iters",
            "p50_ns",
            "p99_ns",
            "p999_ns",
            "ops_per_sec",
            "baseline_p50_ns",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["p50_ns"], 500);
        assert_eq!(v["baseline_p50_ns"], 250);
        assert!((r.p50_ratio_to_baseline - 2.0).abs() < 1e-9);
        assert!(r.table().contains("null-call"));
    }
}
