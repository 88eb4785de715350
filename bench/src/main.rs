//! `bench`: measures rgpu's data plane against raw baselines taken in the same run.
//!
//! ```text
//! bench --transport shm|tcp --scenario null-call|async-calls|bulk [--size BYTES] --iters N --json FILE
//! ```
//! prints a human table and writes one JSON object (see [`report::Report`] for the fields). The
//! contract is stable: later issues add transports (`rdma`, `local`) and scenarios, never remove
//! fields. Ratios are meaningful within one run only; these machines are noisy.

mod baseline;
mod link;
mod pin;
mod report;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::link::TransportChoice;

/// What can go wrong in a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A transport operation failed.
    #[error("transport: {0}")]
    Transport(#[from] rgpu_dataplane::TransportError),
    /// The protocol refused a submission.
    #[error("submit: {0}")]
    Submit(#[from] rgpu_proto::SubmitError),
    /// The protocol state machine reported an error.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A baseline's socket or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The run could not be set up as asked.
    #[error("setup: {0}")]
    Setup(String),
    /// A check on the data moved failed: the numbers would not mean what they say.
    #[error("check failed: {0}")]
    Mismatch(String),
}

impl BenchError {
    /// Maps an `io::Error` from operation `op`.
    pub fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
        move |source| BenchError::Io { op, source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One sync null call per iteration.
    NullCall,
    /// 64-byte async calls as fast as one thread can submit them.
    AsyncCalls,
    /// One host-to-device copy of --size bytes per iteration.
    Bulk,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::NullCall => "null-call",
            Scenario::AsyncCalls => "async-calls",
            Scenario::Bulk => "bulk",
        }
    }
}

/// Measures rgpu's transports against raw baselines taken in the same run.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Args {
    /// Transport to measure.
    #[arg(long, value_enum)]
    transport: TransportChoice,
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "null-call")]
    scenario: Scenario,
    /// Measured iterations (calls for async-calls, copies for bulk, round trips for null-call).
    #[arg(long, default_value_t = 100_000)]
    iters: u64,
    /// Bytes per copy, for the bulk scenario.
    #[arg(long, default_value_t = 64 << 20)]
    size: usize,
    /// Where to write the JSON result.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    pin::init();
    let args = Args::parse();
    if args.iters == 0 {
        eprintln!("bench: --iters must be at least 1");
        return ExitCode::from(2);
    }
    let result = match args.scenario {
        Scenario::NullCall => scenario::null_call(args.transport, args.iters),
        Scenario::AsyncCalls => scenario::async_calls(args.transport, args.iters),
        Scenario::Bulk => scenario::bulk(args.transport, args.iters, args.size),
    };
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "bench: {} over {} failed: {e}",
                args.scenario.name(),
                args.transport.name()
            );
            return ExitCode::FAILURE;
        }
    };
    if pin::cores_available() < 2 {
        report
            .notes
            .push("fewer than two cores: sides share a core, latency is inflated".into());
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("bench: cannot serialize the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
