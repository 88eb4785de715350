//! `bench`: measures rgpu's data plane against raw baselines taken in the same run.
//!
//! ```text
//! bench --transport shm|tcp|rdma --scenario null-call|async-calls|bulk [--size BYTES] --iters N --json FILE
//! ```
//! prints a human table and writes one JSON object (see [`report::Report`] for the fields). The
//! contract is stable: later issues add transports (`local`) and scenarios, never remove
//! fields. Ratios are meaningful within one run only; these machines are noisy.
//!
//! Started with no arguments inside `scripts/rdma-vm-test`'s guest (`RGPU_RDMA_VM=1`), it runs
//! every scenario over rdma at counts emulation can finish, so the binary itself can be passed
//! to `--tests`; those numbers are labelled "emulated (soft-RoCE under TCG)".

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

/// True inside `scripts/rdma-vm-test`'s guest (soft-RoCE under TCG).
fn in_rdma_vm() -> bool {
    std::env::var("RGPU_RDMA_VM").is_ok_and(|v| v == "1")
}

/// The runs made when the binary is a `scripts/rdma-vm-test` case (started with no arguments):
/// every scenario over rdma, at counts emulation finishes in well under a minute.
const RDMA_VM_RUNS: [&[&str]; 4] = [
    &["--scenario", "null-call", "--iters", "2000"],
    &["--scenario", "async-calls", "--iters", "20000"],
    &["--scenario", "bulk", "--size", "1048576", "--iters", "20"],
    &["--scenario", "bulk", "--size", "67108864", "--iters", "3"],
];

fn main() -> ExitCode {
    pin::init();
    if std::env::args_os().len() == 1 && in_rdma_vm() {
        let mut code = ExitCode::SUCCESS;
        for extra in RDMA_VM_RUNS {
            let argv = ["bench", "--transport", "rdma"]
                .into_iter()
                .chain(extra.iter().copied());
            match Args::try_parse_from(argv) {
                Ok(args) => {
                    if run(&args).is_err() {
                        code = ExitCode::FAILURE;
                    }
                }
                Err(e) => {
                    eprintln!("bench: built-in VM run: {e}");
                    code = ExitCode::FAILURE;
                }
            }
        }
        return code;
    }
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Runs one measurement and prints (and optionally writes) its report.
fn run(args: &Args) -> Result<(), ExitCode> {
    if args.iters == 0 {
        eprintln!("bench: --iters must be at least 1");
        return Err(ExitCode::from(2));
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
            return Err(ExitCode::FAILURE);
        }
    };
    if args.transport == TransportChoice::Rdma && in_rdma_vm() {
        report
            .notes
            .push("emulated (soft-RoCE under TCG): shows function, not speed".into());
    }
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
                return Err(ExitCode::FAILURE);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(())
}
