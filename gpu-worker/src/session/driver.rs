//! The session driver loop: one connection, from handshake to teardown.
//!
//! Exists so the daemon's worker process (and tests) run a session with one
//! call: [`run_session`] follows the protocol's polling order over any
//! [`SessionTransport`] (receive, execute, land trailers, transmit, fire
//! timers), every wait bounded, until the peer goes away or the connection
//! closes; then it frees everything the session allocated on the backend
//! and reports it.
//!
//! Arena transports (shm) have their received bytes staged in a reusable
//! buffer first, because the arena belongs to the transport that is busy
//! receiving: executing after `recv` returns lets arena-referencing calls
//! run in place, in order with the rest. Transports without an arena (tcp)
//! execute straight from the received bytes. Trailer bytes that did not
//! come with the frame are received in bounded pieces with
//! `recv_exact_into` and landed as they come.

use std::time::{Duration, Instant};

use rgpu_dataplane::TransportError;
use rgpu_proto::{
    ConnError, Framing, ReplyError, Server, ServerConfig, Timestamp, HEADER_BYTES, MAX_INLINE_BYTES,
};

use super::arena::{NoArena, SessionTransport};
use super::executor::{Executor, SessionStats};
use crate::backend::{Backend, Released};

/// Settings of one session. Every bound is named here.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The protocol server's settings (token, credit window, framing, ...).
    pub server: ServerConfig,
    /// Longest single wait for input before timers are re-checked, in ms.
    pub recv_slice_ms: u64,
    /// Piece size for trailer bytes received past the protocol, in bytes
    /// (the staging buffer's size).
    pub trailer_chunk_bytes: usize,
    /// Bound on waiting for one trailer piece, in ms; past it the session
    /// fails (the stream position is lost).
    pub trailer_timeout_ms: u64,
    /// Largest device-to-host copy answered inline, in bytes (at most
    /// `MAX_INLINE_BYTES`); larger ones are `CUDA_ERROR_INVALID_VALUE` and
    /// must use the arena or be split by the shim. Lower it for
    /// message-framed transports, whose batches cannot be split.
    pub inline_reply_bytes_max: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            recv_slice_ms: 1_000,
            trailer_chunk_bytes: 1 << 20,
            trailer_timeout_ms: 30_000,
            inline_reply_bytes_max: u64::from(MAX_INLINE_BYTES),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSummary {
    /// Why the protocol connection closed (`TransportClosed` when the peer vanished).
    pub close_reason: Option<ConnError>,
    /// What was freed on the backend at the end.
    pub released: Released,
    /// What the session executed.
    pub stats: SessionStats,
}

/// Why a session ended abnormally. The backend's resources are released
/// in every case before this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The transport failed other than by losing the peer.
    #[error("session transport failed during {op}: {source}")]
    Transport {
        /// The driver step.
        op: &'static str,
        /// The transport's error.
        #[source]
        source: TransportError,
    },
    /// A call could not be answered on an open connection (a mapping bug).
    #[error("session could not answer a call: {0}")]
    Reply(#[source] ReplyError),
    /// The configuration is unusable.
    #[error("invalid session config: {0}")]
    Config(&'static str),
}

/// Monotonic nanoseconds since the session started: the protocol's clock.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
    fn instant(&self, t: Timestamp) -> Instant {
        self.0 + Duration::from_nanos(t.0)
    }
}

/// Serves one connection on `backend` until the peer goes away or the
/// connection closes, then releases everything the session holds.
///
/// # Errors
/// [`SessionError`] for a transport failure other than peer loss, an
/// answering failure, or a bad config. Resources are released regardless.
pub fn run_session<T: SessionTransport, B: Backend + ?Sized>(
    mut transport: T,
    backend: &mut B,
    cfg: &SessionConfig,
) -> Result<SessionSummary, SessionError> {
    let mut exec = Executor::with_inline_reply_max(cfg.inline_reply_bytes_max);
    let outcome = serve(&mut transport, backend, cfg, &mut exec);
    let released = backend.release_all();
    tracing::info!(
        bytes = released.bytes,
        allocations = released.allocations,
        streams = released.streams,
        events = released.events,
        modules = released.modules,
        "rgpu session ended; resources released"
    );
    let close_reason = outcome?;
    Ok(SessionSummary {
        close_reason,
        released,
        stats: exec.stats(),
    })
}

fn serve<T: SessionTransport, B: Backend + ?Sized>(
    t: &mut T,
    backend: &mut B,
    cfg: &SessionConfig,
    exec: &mut Executor,
) -> Result<Option<ConnError>, SessionError> {
    if cfg.trailer_chunk_bytes == 0 || cfg.recv_slice_ms == 0 {
        return Err(SessionError::Config(
            "trailer_chunk_bytes and recv_slice_ms must be positive",
        ));
    }
    // `Server::new` asserts these; refuse them as a config error instead.
    if cfg.server.window_calls == 0 || cfg.server.window_bytes as usize <= HEADER_BYTES {
        return Err(SessionError::Config(
            "server window_calls must be positive and window_bytes fit a frame",
        ));
    }
    let clock = Clock(Instant::now());
    let mut server = Server::new(cfg.server.clone(), clock.now());
    let staged = t.has_arena();
    let mut stage: Vec<u8> = Vec::new();
    let mut piece: Vec<u8> = Vec::new();
    loop {
        // 1. Input, bounded by the slice and the protocol's next timer.
        let mut deadline = Instant::now() + Duration::from_millis(cfg.recv_slice_ms);
        if let Some(at) = server.poll_timeout() {
            deadline = deadline.min(clock.instant(at));
        }
        let received = if staged {
            stage.clear();
            t.recv(Some(deadline), &mut |bytes| stage.extend_from_slice(bytes))
        } else {
            t.recv(Some(deadline), &mut |bytes| {
                // A close is remembered by the server and checked below.
                let _ = server.handle_input(clock.now(), bytes, |ev, r| {
                    exec.on_event(backend, ev, r, &mut NoArena);
                });
            })
        };
        match received {
            Ok(_) => {}
            Err(e) if e.is_timeout() => {}
            Err(e) if peer_lost(&e) => {
                server.handle_close(|ev, r| exec.on_event(backend, ev, r, &mut NoArena));
                return Ok(server.close_reason());
            }
            Err(source) => return Err(SessionError::Transport { op: "recv", source }),
        }
        if staged && !stage.is_empty() {
            let _ = server.handle_input(clock.now(), &stage, |ev, r| {
                exec.on_event(backend, ev, r, t);
            });
        }
        let now = clock.now();
        if server.poll_timeout().is_some_and(|at| now >= at) {
            server.handle_timeout(now, |ev, r| exec.on_event(backend, ev, r, &mut NoArena));
        }
        // 2. Trailer bytes still on the wire: straight into device memory, in pieces.
        while let Some((id, left)) = server.trailer_remaining() {
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(cfg.trailer_chunk_bytes);
            piece.resize(n, 0);
            let until = Instant::now() + Duration::from_millis(cfg.trailer_timeout_ms);
            match t.recv_exact_into(&mut piece[..n], Some(until)) {
                Ok(()) => {}
                Err(e) if peer_lost(&e) => {
                    server.handle_close(|ev, r| exec.on_event(backend, ev, r, &mut NoArena));
                    return Ok(server.close_reason());
                }
                Err(source) => {
                    return Err(SessionError::Transport {
                        op: "recv trailer",
                        source,
                    })
                }
            }
            // Cannot fail: n <= left, the trailer in progress.
            let ok = server.trailer_received(clock.now(), n as u64);
            debug_assert!(ok.is_ok());
            exec.trailer_bytes(
                backend,
                id,
                &piece[..n],
                n as u64 == left,
                server.responder(),
            );
        }
        // 3. Output.
        while let Some(batch) = server.peek_transmit() {
            match send_batch(t, batch, cfg.server.framing) {
                Ok(()) => server.advance_transmit(),
                Err(e) if peer_lost(&e) => {
                    server.handle_close(|ev, r| exec.on_event(backend, ev, r, &mut NoArena));
                    return Ok(server.close_reason());
                }
                Err(source) => return Err(SessionError::Transport { op: "send", source }),
            }
        }
        if let Some(fault) = exec.take_fault() {
            if server.is_open() {
                return Err(SessionError::Reply(fault));
            }
        }
        if let Some(reason) = server.close_reason() {
            return Ok(Some(reason));
        }
    }
}

/// Sends one outgoing batch. On a byte-stream connection, batch boundaries
/// carry no meaning, so a batch larger than the transport takes in one
/// send (the shm worker side has no arena to send by reference, and one
/// ring frame is bounded) is sent as several pieces of half the reported
/// maximum (the maximum counts the transport's own framing overhead).
fn send_batch<T: SessionTransport>(
    t: &mut T,
    batch: &[u8],
    framing: Framing,
) -> Result<(), TransportError> {
    match t.send(batch) {
        Err(TransportError::TooLarge { max, .. }) if framing == Framing::Stream && max > 1 => {
            batch.chunks(max / 2).try_for_each(|piece| t.send(piece))
        }
        other => other,
    }
}

/// Whether a transport error means the peer is gone (a normal session end).
fn peer_lost(e: &TransportError) -> bool {
    e.is_peer_gone() || matches!(e, TransportError::Closed { .. })
}
