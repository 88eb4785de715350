//! `rgpu`: the command-line entry point. Kept thin: it parses the command
//! line, sets up logging and hands over to the subcommand's module.

use std::process::ExitCode;

use clap::Parser;
use rgpu::args::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RGPU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => rgpu::daemon::main(&args),
        Command::Status(args) => rgpu::status::main(&args),
        Command::Run(args) => rgpu::run::main(&args),
        Command::Worker(args) => rgpu::worker::main(&args),
    }
}
