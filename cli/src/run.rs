//! `rgpu run [flags] -- PROG ARGS…`: starts an unmodified program with rgpu's client shim in
//! place of the NVIDIA driver, so it runs on the remote GPU without the user writing
//! `LD_PRELOAD` and `RGPU_*` variables by hand.
//!
//! It finds the shim (`--shim`, else `RGPU_SHIM_DIR`, else next to the `rgpu` binary), prepends
//! it to `LD_PRELOAD` and its directory to `LD_LIBRARY_PATH` (so `dlopen("libcuda.so.1")` and
//! `dlopen("libnvidia-ml.so.1")` find rgpu's libraries), sets the `RGPU_*` variables from the
//! flags, runs the program and waits. The exit status is the program's; a program killed by a
//! signal gives 128 + the signal number, as a shell reports it. SIGINT, SIGTERM, SIGHUP and
//! SIGQUIT sent to `rgpu run` are forwarded to the program (through a pidfd, so a reused pid
//! is never signalled); the same signals raised by the terminal already reach the program, which
//! shares `rgpu run`'s process group, and are not sent twice.
//!
//! `rgpu run`'s own failures exit with 125 (bad flags, no shim, unusable token), 126 (the
//! program cannot be executed) or 127 (the program was not found), following `env(1)`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::SignalsInfo;
use signal_hook::low_level::siginfo::Cause;

use crate::args::RunArgs;

/// File name of the shim as programs and the CUDA runtime load it.
pub const SHIM_FILE: &str = "libcuda.so.1";
/// File name of rgpu's NVML library, looked for next to the shim.
pub const NVML_FILE: &str = "libnvidia-ml.so.1";
/// Environment variable naming the directory that holds the shim (when `--shim` is not given).
pub const SHIM_DIR_ENV: &str = "RGPU_SHIM_DIR";
/// Exit status for `rgpu run`'s own failures (bad flags, no shim, unusable token).
pub const EXIT_RUN_FAILED: u8 = 125;
/// Exit status when the program exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit status when the program is not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// A program killed by signal `n` makes `rgpu run` exit with this base plus `n`.
pub const EXIT_SIGNAL_BASE: u8 = 128;
/// Signals forwarded to the program.
pub const FORWARDED_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];
/// Largest token file read (a token line is 64 hex digits and a newline).
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;
/// Length of a token in hex digits.
pub const TOKEN_HEX_DIGITS: usize = 64;
/// Address schemes the shim understands.
pub const SERVER_SCHEMES: [&str; 3] = ["shm://", "tcp://", "rdma://"];

/// Why `rgpu run` could not start (or wait for) the program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// No shim at any of the places looked at.
    #[error(
        "cannot find rgpu's {SHIM_FILE}: looked at {}; build it (cargo build -p rgpu-shim, then \
         link target/<profile>/librgpu_shim.so as {SHIM_FILE}), or pass --shim PATH or set {SHIM_DIR_ENV}",
        .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ShimNotFound {
        /// Every path tried, in order.
        looked: Vec<PathBuf>,
    },
    /// `--server` is not an address the shim understands.
    #[error("--server {url}: use shm:///path/to/socket, tcp://host:port or rdma://host:port")]
    BadServer {
        /// The URL given.
        url: String,
    },
    /// A server is named but there is no token for it.
    #[error(
        "the server {url} needs a token: pass --token-file FILE, or set RGPU_TOKEN or RGPU_TOKEN_FILE"
    )]
    NoToken {
        /// The server URL.
        url: String,
    },
    /// `--token-env` was given but `RGPU_TOKEN` is unset or empty.
    #[error("--token-env: RGPU_TOKEN is not set")]
    TokenEnvMissing,
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {source}", .path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The token is not 64 hex digits.
    #[error("the token from {from} is not {TOKEN_HEX_DIGITS} hex digits")]
    BadToken {
        /// Where it came from (a file name or `RGPU_TOKEN`).
        from: String,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the signal forwarder: {0}")]
    Signals(io::Error),
    /// The program could not be started.
    #[error("cannot run {}: {source}", .program.to_string_lossy())]
    Spawn {
        /// The program.
        program: OsString,
        /// The exec error.
        source: io::Error,
    },
    /// Waiting for the program failed.
    #[error("waiting for the program failed: {0}")]
    Wait(io::Error),
}

impl RunError {
    /// The exit status `rgpu run` reports for this failure.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            Self::Spawn { .. } => EXIT_NOT_EXECUTABLE,
            _ => EXIT_RUN_FAILED,
        }
    }
}

/// Where the shim and the NVML library are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimPaths {
    /// The shim file, preloaded.
    pub shim: PathBuf,
    /// Its directory, prepended to `LD_LIBRARY_PATH`.
    pub dir: PathBuf,
    /// `libnvidia-ml.so.1` in that directory, if present.
    pub nvml: Option<PathBuf>,
}

/// Finds the shim: `explicit` (a file, or a directory holding [`SHIM_FILE`]) if given, else
/// [`SHIM_DIR_ENV`]'s directory if set, else the directory of the `rgpu` binary. An explicit
/// choice that does not hold the shim is an error, never a silent fall-back.
pub fn locate_shim(
    explicit: Option<&Path>,
    env_dir: Option<&OsStr>,
    exe_dir: Option<&Path>,
) -> Result<ShimPaths, RunError> {
    let candidate = match (explicit, env_dir.filter(|d| !d.is_empty())) {
        (Some(p), _) if p.is_dir() => p.join(SHIM_FILE),
        (Some(p), _) => p.to_path_buf(),
        (None, Some(d)) => Path::new(d).join(SHIM_FILE),
        (None, None) => match exe_dir {
            Some(d) => d.join(SHIM_FILE),
            None => return Err(RunError::ShimNotFound { looked: Vec::new() }),
        },
    };
    let shim = std::path::absolute(&candidate).unwrap_or(candidate);
    if !shim.is_file() {
        return Err(RunError::ShimNotFound { looked: vec![shim] });
    }
    let dir = shim
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let nvml = Some(dir.join(NVML_FILE)).filter(|p| p.is_file());
    Ok(ShimPaths { shim, dir, nvml })
}

/// One change to the program's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    /// Set the variable.
    Set(OsString, OsString),
    /// Remove the variable.
    Remove(OsString),
}

/// Joins `first` before `rest` with `sep`, leaving out an empty `rest`.
fn prepend(first: &OsStr, sep: &str, rest: Option<OsString>) -> OsString {
    let mut out = first.to_os_string();
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        out.push(sep);
        out.push(rest);
    }
    out
}

fn check_token(text: &str, from: String) -> Result<(), RunError> {
    let t = text.trim();
    if t.len() == TOKEN_HEX_DIGITS && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RunError::BadToken { from })
    }
}

fn check_token_file(path: &Path) -> Result<(), RunError> {
    use std::io::Read;
    let err = |source| RunError::TokenFile {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(TOKEN_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(err)?;
    check_token(
        text.lines().next().unwrap_or(""),
        path.display().to_string(),
    )
}

/// The environment changes for the program, from the flags, the shim's location and `get`
/// (the current environment in production). Validates the server URL and the token up front,
/// so a mistake is reported before the program starts rather than as "no CUDA device".
pub fn env_changes(
    args: &RunArgs,
    shim: &ShimPaths,
    get: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<EnvChange>, RunError> {
    let set = |k: &str, v: OsString| EnvChange::Set(k.into(), v);
    let mut out = vec![
        set(
            "LD_PRELOAD",
            prepend(shim.shim.as_os_str(), ":", get("LD_PRELOAD")),
        ),
        set(
            "LD_LIBRARY_PATH",
            prepend(shim.dir.as_os_str(), ":", get("LD_LIBRARY_PATH")),
        ),
    ];
    if let Some(url) = &args.server {
        if !SERVER_SCHEMES.iter().any(|s| url.starts_with(s)) {
            return Err(RunError::BadServer { url: url.clone() });
        }
        out.push(set("RGPU_SERVER", url.into()));
    }
    let server = args
        .server
        .clone()
        .or_else(|| get("RGPU_SERVER").map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.trim().is_empty());
    let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(file) = &args.token_file {
        check_token_file(file)?;
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        out.push(set("RGPU_TOKEN_FILE", abs.into_os_string()));
        // The shim prefers RGPU_TOKEN over the file: drop it so the file given here wins.
        out.push(EnvChange::Remove("RGPU_TOKEN".into()));
    } else if args.token_env {
        let token = nonempty("RGPU_TOKEN").ok_or(RunError::TokenEnvMissing)?;
        check_token(&token.to_string_lossy(), "RGPU_TOKEN".into())?;
        out.push(EnvChange::Remove("RGPU_TOKEN_FILE".into()));
    } else if let Some(url) = &server {
        if nonempty("RGPU_TOKEN").is_none() && nonempty("RGPU_TOKEN_FILE").is_none() {
            return Err(RunError::NoToken { url: url.clone() });
        }
    }
    if let Some(bytes) = args.gpu_memory {
        out.push(set("RGPU_GPU_MEMORY", bytes.to_string().into()));
        out.push(EnvChange::Remove("RGPU_GPU_FRACTION".into()));
    }
    if let Some(fraction) = args.gpu_fraction {
        out.push(set("RGPU_GPU_FRACTION", fraction.to_string().into()));
        // The shim prefers a memory size over a fraction: drop it so the fraction wins.
        out.push(EnvChange::Remove("RGPU_GPU_MEMORY".into()));
    }
    if server.is_none() {
        tracing::warn!(
            "rgpu run: no --server and no RGPU_SERVER: the program will see no CUDA device"
        );
    }
    Ok(out)
}

/// `rgpu run`'s exit status for the program's: its code, or 128 + the signal that killed it.
pub fn exit_status_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Linux; the low byte is what a parent sees.
        return (code & 0xff) as u8;
    }
    // Signal numbers on Linux are 1..=64, so 128 + N fits; anything else reads as 255.
    let sig = status.signal().and_then(|s| u8::try_from(s).ok());
    sig.map_or(u8::MAX, |s| EXIT_SIGNAL_BASE.saturating_add(s))
}

/// Starts the program with `changes` applied, forwards signals while it runs, and returns
/// its exit status as `rgpu run` reports it.
pub fn run_program(program: &[OsString], changes: &[EnvChange]) -> Result<u8, RunError> {
    let (prog, rest) = program.split_first().ok_or(RunError::Spawn {
        program: OsString::new(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no program given"),
    })?;
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    for change in changes {
        match change {
            EnvChange::Set(k, v) => cmd.env(k, v),
            EnvChange::Remove(k) => cmd.env_remove(k),
        };
    }
    // Registered before the program starts, so a signal arriving meanwhile is queued and
    // forwarded once it runs. Exec resets the handlers to default in the program.
    let mut signals =
        SignalsInfo::<WithOrigin>::new(FORWARDED_SIGNALS).map_err(RunError::Signals)?;
    let handle = signals.handle();
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: prog.clone(),
        source,
    })?;
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    );
    let forwarder = match pidfd {
        Ok(pidfd) => Some(std::thread::spawn(move || {
            for origin in signals.forever() {
                // Raised by the terminal (or the kernel): it went to the whole foreground
                // process group, the program included. Sending it again would double it.
                if origin.cause == Cause::Kernel {
                    continue;
                }
                let Some(sig) = rustix::process::Signal::from_named_raw(origin.signal) else {
                    continue;
                };
                tracing::debug!(signal = origin.signal, "rgpu run: forwarding a signal");
                // The pidfd names this child even after it exited: no pid-reuse race.
                if let Err(e) = rustix::process::pidfd_send_signal(&pidfd, sig) {
                    tracing::debug!(error = %e, "rgpu run: the program is gone; signal dropped");
                }
            }
        })),
        Err(e) => {
            tracing::warn!(error = %e, "rgpu run: no pidfd for the program; signals are not forwarded");
            None
        }
    };
    let status = child.wait().map_err(RunError::Wait);
    handle.close();
    if let Some(f) = forwarder {
        if f.join().is_err() {
            tracing::warn!("rgpu run: the signal forwarder panicked");
        }
    }
    Ok(exit_status_of(status?))
}

/// `rgpu run` entry point.
pub fn main(args: &RunArgs) -> ExitCode {
    match try_main(args) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("rgpu run: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}

fn try_main(args: &RunArgs) -> Result<u8, RunError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let shim = locate_shim(
        args.shim.as_deref(),
        std::env::var_os(SHIM_DIR_ENV).as_deref(),
        exe_dir.as_deref(),
    )?;
    if shim.nvml.is_none() {
        tracing::info!(
            dir = %shim.dir.display(),
            "rgpu run: no {NVML_FILE} next to the shim; NVML calls will not reach rgpu"
        );
    }
    let changes = env_changes(args, &shim, |k| std::env::var_os(k))?;
    tracing::debug!(?changes, "rgpu run: environment for the program");
    run_program(&args.command, &changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(extra: &[&str]) -> RunArgs {
        use clap::Parser;
        let mut argv = vec!["rgpu", "run"];
        argv.extend_from_slice(extra);
        match crate::args::Cli::parse_from(argv).command {
            crate::args::Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        }
    }

    fn shim() -> ShimPaths {
        ShimPaths {
            shim: "/opt/rgpu/libcuda.so.1".into(),
            dir: "/opt/rgpu".into(),
            nvml: None,
        }
    }

    fn changes(a: &RunArgs, env: &[(&str, &str)]) -> Result<Vec<EnvChange>, RunError> {
        let map: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        env_changes(a, &shim(), |k| map.get(k).cloned())
    }

    fn set(k: &str, v: &str) -> EnvChange {
        EnvChange::Set(k.into(), v.into())
    }

    #[test]
    fn prepends_the_shim_to_the_loader_paths() {
        let c = changes(
            &args(&["--", "p"]),
            &[("LD_PRELOAD", "/x.so"), ("LD_LIBRARY_PATH", "")],
        )
        .unwrap();
        assert!(c.contains(&set("LD_PRELOAD", "/opt/rgpu/libcuda.so.1:/x.so")));
        assert!(c.contains(&set("LD_LIBRARY_PATH", "/opt/rgpu")));
    }

    #[test]
    fn share_flags_replace_the_other_share_variable() {
        let c = changes(&args(&["--gpu-fraction", "0.5", "--", "p"]), &[]).unwrap();
        assert!(c.contains(&set("RGPU_GPU_FRACTION", "0.5")));
        assert!(c.contains(&EnvChange::Remove("RGPU_GPU_MEMORY".into())));
        let c = changes(&args(&["--gpu-memory", "4096", "--", "p"]), &[]).unwrap();
        assert!(c.contains(&set("RGPU_GPU_MEMORY", "4096")));
        assert!(c.contains(&EnvChange::Remove("RGPU_GPU_FRACTION".into())));
    }

    #[test]
    fn a_server_needs_a_token_and_a_known_scheme() {
        let a = args(&["--server", "tcp://h:1", "--", "p"]);
        assert!(matches!(changes(&a, &[]), Err(RunError::NoToken { .. })));
        let tok = "ab".repeat(32);
        assert!(changes(&a, &[("RGPU_TOKEN", &tok)]).is_ok());
        let a = args(&["--server", "http://h:1", "--", "p"]);
        assert!(matches!(
            changes(&a, &[("RGPU_TOKEN", &tok)]),
            Err(RunError::BadServer { .. })
        ));
        let a = args(&["--token-env", "--", "p"]);
        assert!(matches!(changes(&a, &[]), Err(RunError::TokenEnvMissing)));
        assert!(matches!(
            changes(&a, &[("RGPU_TOKEN", "xyz")]),
            Err(RunError::BadToken { .. })
        ));
        let c = changes(&a, &[("RGPU_TOKEN", &tok)]).unwrap();
        assert!(c.contains(&EnvChange::Remove("RGPU_TOKEN_FILE".into())));
    }

    #[test]
    fn locates_an_explicit_shim_or_refuses() {
        let dir = std::env::temp_dir().join(format!("rgpu-run-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = locate_shim(Some(&dir), None, None).unwrap_err();
        assert!(matches!(err, RunError::ShimNotFound { .. }));
        assert!(err.to_string().contains(SHIM_FILE));
        std::fs::write(dir.join(SHIM_FILE), b"").unwrap();
        let p = locate_shim(None, Some(dir.as_os_str()), Some(Path::new("/nonexistent"))).unwrap();
        assert_eq!((p.shim, p.nvml), (dir.join(SHIM_FILE), None));
        std::fs::write(dir.join(NVML_FILE), b"").unwrap();
        let p = locate_shim(None, None, Some(&dir)).unwrap();
        assert_eq!(p.nvml, Some(dir.join(NVML_FILE)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_status_is_code_or_128_plus_signal() {
        assert_eq!(exit_status_of(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_status_of(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_status_of(ExitStatus::from_raw(9)), 137);
    }
}
