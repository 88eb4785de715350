//! Live per-client usage through the real daemon: a client that allocates,
//! copies and launches a kernel shows its memory, bytes, calls and kernel
//! time in `/status`, `/metrics` (`rgpu_client_*`, labelled by session and
//! worker pid) and `rgpu status` while it is connected, and its series are
//! gone once it leaves.

mod common;

use std::process::Command;

use common::{bytes, Conn, Kind, Server};
use rgpu_proto::{Blob, Call, DevicePtr, FunctionLookup, Launch, ModuleLoad, Reply};
use serde_json::Value;

const ALLOC: u64 = 1 << 20;
const H2D: usize = 256 << 10;
const D2H: u64 = 128 << 10;

fn usage_of(s: &Value, pid: u64) -> Option<Value> {
    s["usage"]
        .as_array()?
        .iter()
        .find(|u| u["worker_pid"].as_u64() == Some(pid))
        .cloned()
}

/// Loads the emulator's fill kernel and fills `n` words at `p` with 7.
fn fill(c: &mut Conn, p: DevicePtr, n: u32) {
    let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n";
    let module = c
        .sync(
            &Call::ModuleLoad(ModuleLoad {
                hash: [9; 32],
                image: Blob(image),
            }),
            |r| match r {
                Reply::ModuleLoaded(m) => m.module,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    let function = c
        .sync(
            &Call::FunctionLookup(FunctionLookup {
                module,
                name: Blob(b"rgpu_fill_u32"),
            }),
            |r| match r {
                Reply::FunctionInfo(f) => f.function,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    let mut params = p.0.to_le_bytes().to_vec();
    params.extend_from_slice(&7u32.to_le_bytes());
    params.extend_from_slice(&n.to_le_bytes());
    c.submit_async(&Call::Launch(Launch {
        function,
        grid: [n.div_ceil(256), 1, 1],
        block: [256, 1, 1],
        shared_mem_bytes: 0,
        params: Blob(&params),
    }));
}

fn run_client(kind: Kind) {
    let server = Server::standard();
    let mut c = Conn::open(&server, kind);
    let p = c.alloc(ALLOC).unwrap();
    c.h2d(p, &bytes(3, H2D)).unwrap();
    assert_eq!(c.d2h(p, D2H).unwrap(), bytes(3, H2D)[..D2H as usize]);
    // A kernel over the first 4 KiB; the copy back synchronizes.
    fill(&mut c, p, 1024);
    assert_eq!(c.d2h(p, 4).unwrap(), 7u32.to_le_bytes());
    let pid = server.clients()[0]["worker_pid"].as_u64().unwrap();

    let s = server.wait_status("the client's live usage", |s| {
        usage_of(s, pid).is_some_and(|u| {
            u["memory_bytes"] == ALLOC && u["bytes_h2d"] == H2D as u64 && u["bytes_d2h"] == D2H + 4
        })
    });
    let u = usage_of(&s, pid).unwrap();
    assert_eq!(u["calls"]["memory"], 1, "{u}");
    assert_eq!(u["calls"]["copy"], 3, "{u}");
    assert_eq!(u["calls"]["module"], 2, "load and lookup: {u}");
    assert_eq!(u["calls"]["launch"], 1, "{u}");
    assert!(
        u["kernel_ns"].as_u64().unwrap() > 0,
        "the kernel's time: {u}"
    );
    let (session, device) = (
        u["session"].as_u64().unwrap(),
        u["device"].as_u64().unwrap(),
    );

    let labels = format!("session=\"{session}\",worker_pid=\"{pid}\",device=\"{device}\"");
    let text = server.metrics();
    for line in [
        format!("rgpu_client_memory_bytes{{{labels}}} {ALLOC}"),
        format!("rgpu_client_bytes_total{{{labels},direction=\"h2d\"}} {H2D}"),
        format!(
            "rgpu_client_bytes_total{{{labels},direction=\"d2h\"}} {}",
            D2H + 4
        ),
        format!("rgpu_client_calls_total{{{labels},kind=\"copy\"}} 3"),
        format!("rgpu_client_calls_total{{{labels},kind=\"launch\"}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_rgpu"))
        .args(["status", "--server", &server.metrics])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 9
                && w[1] == pid.to_string()
                && w[3] == ALLOC.to_string()
                && w[4] == H2D.to_string()
                && w[5] == (D2H + 4).to_string()
        }),
        "{table}"
    );

    c.free(p).unwrap();
    server.wait_status("memory back to 0", |s| {
        usage_of(s, pid).is_some_and(|u| u["memory_bytes"] == 0)
    });
    c.close();
    server.wait_idle();
    assert!(
        !server.metrics().contains(&format!("worker_pid=\"{pid}\"")),
        "a departed client's series are dropped"
    );
    assert!(server.stop().success());
}

#[test]
fn live_usage_over_tcp() {
    run_client(Kind::Tcp);
}

#[test]
fn live_usage_over_shm() {
    run_client(Kind::Shm);
}
