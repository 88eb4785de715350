//! Command-line syntax (clap derive). Exists so the user interface is
//! declared in one place and stays stable:
//! `rgpu server --backend cuda|emulated --listen URL [--listen URL …]
//! [--token-file PATH] [--config PATH]` and `rgpu status [--server URL]`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::BackendKind;

/// rgpu: remote GPU data plane.
#[derive(Debug, Parser)]
#[command(name = "rgpu", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the GPU server daemon in the foreground.
    Server(ServerArgs),
    /// Show a running server's GPUs, allocations and clients.
    Status(StatusArgs),
    /// Internal: serve one accepted connection (spawned by `rgpu server`).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `rgpu server` flags; each overrides the config file and `RGPU_*` env.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// GPU backend: `cuda` or `emulated`.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Where to accept clients: `tcp://HOST:PORT` or `shm:///path/to/socket`
    /// (repeatable).
    #[arg(long = "listen", value_name = "URL")]
    pub listen: Vec<String>,
    /// File holding the 32-byte client token as 64 hex digits.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Run without a token file, accepting the all-zero token. Anyone who can reach a listen
    /// address can then use the GPUs: for local experiments only.
    #[arg(long)]
    pub danger_no_token: bool,
    /// TOML config file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// HTTP address of the `/metrics` and `/status` endpoints (`HOST:PORT`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// `rgpu status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server's metrics/status address (`http://HOST:PORT` or `HOST:PORT`).
    #[arg(long, default_value = crate::config::METRICS_LISTEN_DEFAULT)]
    pub server: String,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The hidden worker's flags, written by [`crate::spawn`].
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The inherited connection's file descriptor.
    #[arg(long)]
    pub fd: i32,
    /// Which transport the connection speaks.
    #[arg(long, value_enum)]
    pub transport: crate::listen::Scheme,
    /// Session id reported in the protocol handshake.
    #[arg(long, default_value_t = 0)]
    pub session_id: u64,
    /// Token file (absent: the all-zero token).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Deadline for the client's protocol handshake, in ms.
    #[arg(long, default_value_t = crate::config::HANDSHAKE_TIMEOUT_MS_DEFAULT)]
    pub handshake_timeout_ms: u64,
    /// The backend to create after auth.
    #[arg(long, value_enum, default_value = "emulated")]
    pub backend: crate::config::BackendKind,
    /// The cuda backend's shared module cache directory.
    #[arg(long)]
    pub module_cache_dir: Option<PathBuf>,
    /// The daemon's compute-share boards (an inherited memfd; absent: no
    /// compute share).
    #[arg(long)]
    pub share_fd: Option<i32>,
}
