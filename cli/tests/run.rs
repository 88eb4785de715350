//! `rgpu run` end to end with the real binary: exit status and signal forwarding, the
//! environment the program sees, `--` handling, and refusals before the program starts.
//! The shim here is a placeholder file: these tests check the launcher, not the shim (the
//! shim's own runs through `rgpu run` are in `shim/tests/cudart/remote.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a test waits for a program that should exit (a hang guard, not a timing check).
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// A valid token (64 hex digits).
const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A private directory with a placeholder shim and NVML library and a token file.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rgpu-run-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // An empty file: ld.so reports it cannot preload it and goes on, which is all the
        // launcher tests need (the program still runs, with the variables set).
        std::fs::write(dir.join("libcuda.so.1"), b"").unwrap();
        std::fs::write(dir.join("libnvidia-ml.so.1"), b"").unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        Self { dir }
    }

    fn shim(&self) -> PathBuf {
        self.dir.join("libcuda.so.1")
    }

    /// `rgpu run --shim <placeholder> ARGS…` with a clean `RGPU_*` environment.
    fn rgpu(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgpu"));
        cmd.arg("run").arg("--shim").arg(self.shim()).args(args);
        for k in [
            "RGPU_SERVER",
            "RGPU_TOKEN",
            "RGPU_TOKEN_FILE",
            "RGPU_GPU_MEMORY",
            "RGPU_GPU_FRACTION",
            "RGPU_SHIM_DIR",
            "LD_PRELOAD",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("RGPU_LOG", "warn");
        cmd
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn env_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn forwards_the_exit_status_and_128_plus_the_killing_signal() {
    let f = Fixture::new("status");
    for code in [0, 3, 255] {
        let out = run(&mut f.rgpu(&["--", "sh", "-c", &format!("exit {code}")]));
        assert_eq!(out.status.code(), Some(code), "{out:?}");
    }
    let out = run(&mut f.rgpu(&["--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(out.status.code(), Some(128 + 9), "{out:?}");
}

#[test]
fn sets_the_loader_paths_and_the_rgpu_variables() {
    let f = Fixture::new("env");
    let token_file = f.dir.join("token");
    let out = run(f
        .rgpu(&[
            "--server",
            "tcp://127.0.0.1:9",
            "--token-file",
            token_file.to_str().unwrap(),
            "--gpu-memory",
            "1234",
            "--",
            "env",
        ])
        .env("LD_LIBRARY_PATH", "/already/there")
        .env("RGPU_TOKEN", "ff")
        .env("RGPU_GPU_FRACTION", "0.5"));
    assert!(out.status.success(), "{out:?}");
    let lines = env_lines(&out);
    let has = |l: &str| lines.iter().any(|x| x == l);
    let dir = f.dir.display();
    assert!(has(&format!("LD_PRELOAD={dir}/libcuda.so.1")), "{lines:?}");
    assert!(
        has(&format!("LD_LIBRARY_PATH={dir}:/already/there")),
        "{lines:?}"
    );
    assert!(has("RGPU_SERVER=tcp://127.0.0.1:9"), "{lines:?}");
    assert!(
        has(&format!("RGPU_TOKEN_FILE={}", token_file.display())),
        "{lines:?}"
    );
    assert!(has("RGPU_GPU_MEMORY=1234"), "{lines:?}");
    // The file given on the command line wins: the inherited token and share are dropped.
    assert!(
        !lines.iter().any(|l| l.starts_with("RGPU_TOKEN=")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("RGPU_GPU_FRACTION=")),
        "{lines:?}"
    );
}

#[test]
fn everything_after_the_double_dash_belongs_to_the_program() {
    let f = Fixture::new("dashes");
    // `--server` after `--` is the program's argument, not rgpu's flag.
    let out = run(&mut f.rgpu(&["--", "sh", "-c", "echo \"$@\"", "sh", "--server", "x", "--"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--server x --\n");
    assert!(!env_lines(&run(&mut f.rgpu(&["--", "env"])))
        .iter()
        .any(|l| l.starts_with("RGPU_SERVER=")));
    // No program at all is a usage error from clap.
    let out = run(&mut f.rgpu(&["--"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn refuses_before_starting_the_program() {
    let f = Fixture::new("refuse");
    let marker = f.dir.join("ran");
    let touch = format!("touch {}", marker.display());
    let cases: [(&[&str], &str); 4] = [
        (&["--server", "tcp://127.0.0.1:9"], "needs a token"),
        (
            &["--server", "http://h:1", "--token-env"],
            "--server http://h:1",
        ),
        (&["--token-env"], "RGPU_TOKEN is not set"),
        (
            &["--token-file", "/nonexistent/token"],
            "cannot read the token file",
        ),
    ];
    for (flags, message) in cases {
        let mut argv = flags.to_vec();
        argv.extend_from_slice(&["--", "sh", "-c", &touch]);
        let out = run(&mut f.rgpu(&argv));
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!marker.exists(), "{flags:?}: the program ran");
    }
    let out = run(&mut f.rgpu(&["--", "/nonexistent/program"]));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

#[test]
fn a_missing_shim_is_a_clear_error() {
    let f = Fixture::new("noshim");
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rgpu"));
    cmd.arg("run")
        .arg("--shim")
        .arg(&empty)
        .args(["--", "true"])
        .env_remove("RGPU_SHIM_DIR");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot find rgpu's libcuda.so.1"),
        "{stderr}"
    );
    assert!(stderr.contains(&empty.display().to_string()), "{stderr}");
    // RGPU_SHIM_DIR naming a directory without the shim is refused too (no fall-back).
    let mut cmd3 = Command::new(env!("CARGO_BIN_EXE_rgpu"));
    cmd3.args(["run", "--", "true"])
        .env("RGPU_SHIM_DIR", &empty);
    let out = run(&mut cmd3);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    // And with the placeholder shim the same command runs.
    assert!(run(&mut f.rgpu(&["--", "true"])).status.success());
}

/// Waits for `child` to exit, failing the test (and killing it) past [`EXIT_WAIT`].
fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > EXIT_WAIT {
            let _ = child.kill();
            panic!("rgpu run did not exit after the signal: not forwarded?");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn forwards_sigterm_and_sighup_to_the_program() {
    let f = Fixture::new("signals");
    for (sig, name, code) in [
        (rustix::process::Signal::TERM, "TERM", 7),
        (rustix::process::Signal::HUP, "HUP", 8),
    ] {
        // The program traps the signal, says so and exits with its own code; `rgpu run`
        // itself keeps running (it handles the signal), so the status proves the forward.
        let script = format!(
            "trap 'echo got-{name}; exit {code}' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let mut child = f
            .rgpu(&["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        signal(child.id(), sig);
        let status = wait_bounded(&mut child);
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, format!("got-{name}\n"));
        assert_eq!(status.code(), Some(code));
    }
    // A program that does not trap SIGTERM dies of it: 128 + 15.
    let mut child = f
        .rgpu(&["--", "sh", "-c", "echo ready; exec sleep 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // `exec sleep` replaces the shell after "ready"; give the exec a moment by polling the
    // program's command line rather than sleeping a fixed time.
    wait_for_exec(child.id());
    signal(child.id(), rustix::process::Signal::TERM);
    assert_eq!(wait_bounded(&mut child).code(), Some(128 + 15));
}

/// Waits until `rgpu run` (pid `parent`) has a child whose command is `sleep`.
fn wait_for_exec(parent: u32) {
    let start = Instant::now();
    while start.elapsed() < EXIT_WAIT {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for pid in children.split_whitespace() {
            let comm = std::fs::read_to_string(Path::new("/proc").join(pid).join("comm"))
                .unwrap_or_default();
            if comm.trim() == "sleep" {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the program never exec'd sleep");
}

#[test]
fn share_flags_are_validated_by_the_parser() {
    let f = Fixture::new("share");
    for flags in [
        &["--gpu-fraction", "1.5"][..],
        &["--gpu-fraction", "0"],
        &["--gpu-memory", "0"],
        &["--gpu-memory", "1", "--gpu-fraction", "0.5"],
        &["--token-env", "--token-file", "/x"],
    ] {
        let mut argv = flags.to_vec();
        argv.extend_from_slice(&["--", "true"]);
        let out = run(&mut f.rgpu(&argv));
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
    }
    let out = run(&mut f.rgpu(&["--gpu-fraction", "0.25", "--", "env"]));
    assert!(
        env_lines(&out)
            .iter()
            .any(|l| l == "RGPU_GPU_FRACTION=0.25"),
        "{out:?}"
    );
}
