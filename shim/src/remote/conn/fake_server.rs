//! An in-process fake server for the connection's unit tests: a thread that accepts one shm
//! client, drives `rgpu_proto::Server`, reports every call it receives (and in how many
//! transport deliveries), completes async calls and answers sync calls with a chosen error.
//!
//! Exists so the flusher and the pipelined path can be tested against a real transport and
//! the real protocol without a GPU worker process. Test-only.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::ShmListener;
use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{CallClass, CudaError, Server, ServerConfig, ServerEvent, Timestamp};

use crate::remote::config::{ServerAddr, ServerConfig as ShimServerConfig};

/// Bound on the fake server's life (and its waits), in milliseconds.
pub const FAKE_SERVER_LIFE_MS: u64 = 60_000;

/// What the fake server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A call, by name, and the number of the transport delivery that carried it.
    Call {
        /// The call's name.
        name: &'static str,
        /// Which delivery (0, 1, …) carried it: calls sharing one came in one batch.
        delivery: u64,
    },
}

/// A running fake server.
pub struct FakeServer {
    /// Where the shim should connect.
    pub config: ShimServerConfig,
    /// Every call received, in order.
    pub seen: Receiver<Seen>,
}

/// Starts a fake server on a fresh socket path. Sync calls are answered with `sync_error`
/// (every reply carries it, as a sticky or deferred error would).
pub fn start(sync_error: CudaError) -> FakeServer {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "rgpu-shim-fake-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let listener = ShmListener::bind(&path, crate::remote::pinned::shm_config())
        .expect("bind the fake server's socket");
    let token = [7u8; rgpu_proto::control::TOKEN_BYTES];
    let (tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_millis(FAKE_SERVER_LIFE_MS);
        let Ok(mut t) = listener.accept(Some(end)) else {
            return;
        };
        let epoch = Instant::now();
        let mut srv = Server::new(
            ServerConfig {
                token,
                ..ServerConfig::default()
            },
            Timestamp::ZERO,
        );
        let mut delivery = 0u64;
        while Instant::now() < end {
            let now = Timestamp(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
            let got = t.recv(
                Some(Instant::now() + Duration::from_millis(50)),
                &mut |bytes| {
                    let _ = srv.handle_input(now, bytes, |ev, resp| {
                        if let ServerEvent::Call {
                            id, class, call, ..
                        } = ev
                        {
                            let _ = tx.send(Seen::Call {
                                name: call.name(),
                                delivery,
                            });
                            let _ = match class {
                                CallClass::Async => resp.complete_async(id, Ok(())),
                                _ => resp.reply(id, Err(sync_error)),
                            };
                        }
                    });
                },
            );
            match got {
                Ok(_) => delivery += 1,
                Err(TransportError::Timeout { .. }) => {}
                Err(_) => return,
            }
            while let Some(batch) = srv.peek_transmit() {
                if t.send(batch).is_err() {
                    return;
                }
                srv.advance_transmit();
            }
        }
    });
    FakeServer {
        config: ShimServerConfig {
            url: format!("shm://{}", path.display()),
            addr: ServerAddr::Shm(path),
            token,
            fraction_milli: 0,
            memory_bytes: 0,
        },
        seen,
    }
}
