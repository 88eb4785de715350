//! Command-line syntax (clap derive). Exists so the user interface is
//! declared in one place and stays stable:
//! `rgpu server --backend cuda|emulated --listen URL [--listen URL …]
//! [--token-file PATH] [--config PATH]`, `rgpu status [--server URL]` and
//! `rgpu run [--server URL] [--token-file F] … -- PROG ARGS…`.

use std::ffi::OsString;
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
    /// Run a program with rgpu's libcuda.so.1 (and libnvidia-ml.so.1) in place of the
    /// NVIDIA driver, so its CUDA calls go to the GPU server.
    Run(RunArgs),
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
    /// Where to accept clients: `tcp://HOST:PORT`, `shm:///path/to/socket` or
    /// `rdma://HOST:PORT[?device=NAME&gid_index=N&port=N]` (built with the `rdma`
    /// feature) (repeatable).
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

/// `rgpu run` flags; each sets the matching `RGPU_*` variable for the program.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The GPU server: `shm:///path/to/socket`, `tcp://HOST:PORT` or `rdma://HOST:PORT`
    /// (sets `RGPU_SERVER`; default: the inherited `RGPU_SERVER`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// File holding the client token as 64 hex digits (sets `RGPU_TOKEN_FILE`).
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Take the token from the inherited `RGPU_TOKEN` (checked before the program starts).
    #[arg(long)]
    pub token_env: bool,
    /// Device memory to ask for, in bytes (sets `RGPU_GPU_MEMORY`).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub gpu_memory: Option<u64>,
    /// Share of a device to ask for, 0 < F <= 1 (sets `RGPU_GPU_FRACTION`).
    #[arg(long, value_name = "F", conflicts_with = "gpu_memory", value_parser = parse_fraction)]
    pub gpu_fraction: Option<f64>,
    /// The shim: a `libcuda.so.1` file or the directory holding it (default: `RGPU_SHIM_DIR`,
    /// else the directory of this `rgpu` binary).
    #[arg(long, value_name = "PATH")]
    pub shim: Option<PathBuf>,
    /// The program and its arguments (put them after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
    pub command: Vec<OsString>,
}

/// Parses a device fraction in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction in (0, 1]")),
    }
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
    /// `rdma` connections: the verbs device (absent: the first one).
    #[arg(long)]
    pub rdma_device: Option<String>,
    /// `rdma` connections: the GID index (absent: the first IPv4-mapped GID).
    #[arg(long)]
    pub rdma_gid_index: Option<u32>,
    /// `rdma` connections: the device port, 1-based (absent: 1).
    #[arg(long)]
    pub rdma_port: Option<u8>,
}
