//! The server (worker) side of the sans-IO connection state machine.
//!
//! Owns: handshake and auth, incoming sequence checks, enforcement of the
//! credit window it granted, credit return (piggybacked on replies or as
//! credit frames), deferred and sticky errors, reply framing, timeouts, and
//! the split of the stream into frames and call trailers.
//!
//! Input is decoded by borrowing, and calls are handed to a visitor
//! together with a [`Responder`], so the application can answer (or
//! complete) a call right inside the callback without the call outliving
//! the input buffer and without any per-call allocation.

use crate::auth::tokens_equal;
use crate::batch::TxQueue;
use crate::calls::{Call, Reply};
use crate::client::CallId;
use crate::control::{
    Close, Handshake, HandshakeReply, FIRST_CALL_CODE, KIND_CLOSE, KIND_HANDSHAKE,
    KIND_HANDSHAKE_REPLY, TOKEN_BYTES,
};
use crate::credit::Ledger;
use crate::cuda::CudaError;
use crate::error::{ConnError, ReplyError, TrailerError};
use crate::field::StreamHandle;
use crate::frame::{Flow, Frame, FrameDecoder, Framing};
use crate::header::HEADER_BYTES;
use crate::message::CallClass;
use crate::pending::Pending;
pub use crate::responder::Responder;
use crate::responder::{State, TrailerIn};
use crate::time::Timestamp;

/// Server settings. Every bound is named here.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The token clients must present.
    pub token: [u8; TOKEN_BYTES],
    /// Capability bits offered (`CAP_*`).
    pub caps: u64,
    /// Session id reported in the handshake reply.
    pub session_id: u64,
    /// How the transport delivers bytes.
    pub framing: Framing,
    /// Credit window: async calls the client may have in flight.
    pub window_calls: u32,
    /// Credit window: async frame bytes (header included) in flight.
    pub window_bytes: u32,
    /// Return credit with an explicit frame once this many consumed calls
    /// are unreturned (credit also returns whenever the async queue drains,
    /// and rides on every reply).
    pub credit_return_calls: u32,
    /// Most sync calls a client may have outstanding.
    pub max_pending_sync: u32,
    /// Most bytes per outgoing batch (a larger single frame goes alone).
    pub max_batch_bytes: u32,
    /// Deadline for the client's handshake, from construction.
    pub handshake_timeout_ns: u64,
    /// Close after this long without input; 0 disables.
    pub idle_timeout_ns: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            token: [0; TOKEN_BYTES],
            caps: 0,
            session_id: 0,
            framing: Framing::Stream,
            window_calls: 1024,
            window_bytes: 4 << 20,
            credit_return_calls: 256,
            max_pending_sync: 64,
            max_batch_bytes: 64 << 10,
            handshake_timeout_ns: 5_000_000_000,
            idle_timeout_ns: 0,
        }
    }
}

/// What input or a timeout produced on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent<'a> {
    /// The client authenticated; calls follow.
    Connected {
        /// Client capability bits.
        client_caps: u64,
    },
    /// A call to execute. Sync calls need [`Responder::reply`], async calls
    /// [`Responder::complete_async`] (now or later through [`Server`]).
    Call {
        /// Identifies the call in `reply`/`complete_async`.
        id: CallId,
        /// Its class (sync or async).
        class: CallClass,
        /// The stream from the header's ordering key.
        stream: StreamHandle,
        /// The decoded call, borrowing from the input.
        call: Call<'a>,
    },
    /// Trailer bytes of sync call `id` (sent with
    /// [`Payload::Trailing`](crate::Payload::Trailing)) that arrived in the
    /// same input chunk as other data. The rest of a trailer may instead be
    /// received straight into its destination: see
    /// [`Server::trailer_remaining`]. The call may belong to one answered
    /// internally (poisoned context): drop bytes of unknown calls.
    Trailer {
        /// The call whose payload this is.
        id: CallId,
        /// The bytes, borrowing from the input.
        bytes: &'a [u8],
        /// Position of `bytes[0]` within the trailer.
        offset: u64,
        /// Whether these are the trailer's last bytes: the call may be
        /// answered from this event on.
        done: bool,
    },
    /// The connection closed.
    Closed {
        /// Why.
        error: ConnError,
    },
}

/// Server side of one connection.
#[derive(Debug)]
pub struct Server {
    rx: FrameDecoder,
    rx_state: RxState,
    tx: Responder,
}

#[derive(Debug)]
struct RxState {
    rx_seq: u64,
    handshake_deadline: Timestamp,
    last_rx: Timestamp,
}

impl Server {
    /// A new server connection awaiting the client's handshake.
    #[must_use]
    pub fn new(cfg: ServerConfig, now: Timestamp) -> Self {
        assert!(cfg.window_calls > 0, "window_calls must be positive");
        assert!(
            cfg.window_bytes as usize > HEADER_BYTES,
            "window_bytes must fit at least one frame"
        );
        Self {
            rx: FrameDecoder::new(cfg.framing),
            rx_state: RxState {
                rx_seq: 0,
                handshake_deadline: now + cfg.handshake_timeout_ns,
                last_rx: now,
            },
            tx: Responder {
                state: State::AwaitHandshake,
                tx: TxQueue::default(),
                tx_seq: 0,
                pending_sync: Pending::new(cfg.max_pending_sync),
                ledger: Ledger::new(cfg.window_calls, cfg.window_bytes),
                deferred: None,
                sticky: None,
                trailer: None,
                cfg,
            },
        }
    }

    /// The answering half, for replies outside the input callback.
    pub fn responder(&mut self) -> &mut Responder {
        &mut self.tx
    }

    /// Whether the client is authenticated and the connection usable.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.tx.state == State::Open
    }

    /// The close reason, once closed.
    #[must_use]
    pub fn close_reason(&self) -> Option<ConnError> {
        match self.tx.state {
            State::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// The call whose trailer the stream is carrying now, and how many of
    /// its bytes are still to come. While `Some`, the next stream bytes are
    /// that trailer: the driver may read up to that many straight into the
    /// call's destination and report them with [`Server::trailer_received`]
    /// (or pass them to `handle_input`, which emits
    /// [`ServerEvent::Trailer`]).
    #[must_use]
    pub fn trailer_remaining(&self) -> Option<(CallId, u64)> {
        self.tx.trailer_remaining()
    }

    /// Reports `n` trailer bytes the driver received itself (not through
    /// `handle_input`). When the trailer completes, frames resume and its
    /// call may be answered.
    ///
    /// # Errors
    /// [`TrailerError::NoneInProgress`] when no trailer is arriving,
    /// [`TrailerError::Overrun`] when `n` exceeds what is left (nothing
    /// changes on error).
    pub fn trailer_received(&mut self, now: Timestamp, n: u64) -> Result<(), TrailerError> {
        self.tx.advance_trailer(n)?;
        self.rx_state.last_rx = now;
        Ok(())
    }

    /// Answers a sync call; see [`Responder::reply`].
    ///
    /// # Errors
    /// As [`Responder::reply`].
    pub fn reply(
        &mut self,
        id: CallId,
        result: Result<Reply<'_>, CudaError>,
    ) -> Result<(), ReplyError> {
        self.tx.reply(id, result)
    }

    /// Completes an async call; see [`Responder::complete_async`].
    ///
    /// # Errors
    /// As [`Responder::complete_async`].
    pub fn complete_async(
        &mut self,
        id: CallId,
        result: Result<(), CudaError>,
    ) -> Result<(), ReplyError> {
        self.tx.complete_async(id, result)
    }

    /// Seals everything queued (plus a credit frame if due) into one batch
    /// and appends the next batch to `out`; returns its length. Call until
    /// `None` after every `handle_*`/`reply`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        self.seal_pending();
        self.tx.tx.pop_batch(out)
    }

    /// The next batch without copying it out; call
    /// [`Server::advance_transmit`] once it is sent.
    pub fn peek_transmit(&mut self) -> Option<&[u8]> {
        self.seal_pending();
        self.tx.tx.peek_batch()
    }

    /// Drops the batch returned by [`Server::peek_transmit`].
    pub fn advance_transmit(&mut self) {
        self.tx.tx.advance_batch();
    }

    fn seal_pending(&mut self) {
        if !self.tx.tx.has_sealed() {
            self.tx.maybe_return_credit();
            self.tx.tx.seal();
        }
    }

    /// Earliest moment `handle_timeout` must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.tx.state {
            State::AwaitHandshake => Some(self.rx_state.handshake_deadline),
            State::Open if self.tx.cfg.idle_timeout_ns > 0 => {
                Some(self.rx_state.last_rx + self.tx.cfg.idle_timeout_ns)
            }
            _ => None,
        }
    }

    /// Fires due deadlines (handshake or idle timeout).
    pub fn handle_timeout<F>(&mut self, now: Timestamp, mut on_event: F)
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        if let Some(deadline) = self.poll_timeout() {
            if now >= deadline {
                let e = match self.tx.state {
                    State::AwaitHandshake => ConnError::HandshakeTimeout,
                    _ => ConnError::IdleTimeout,
                };
                self.tx.fail(e, true, &mut on_event);
            }
        }
    }

    /// Processes received bytes (any chunking). Each call is passed to
    /// `on_event` with the [`Responder`], borrowing from the input only for
    /// the callback's duration. Bytes of a trailer in progress are passed
    /// as [`ServerEvent::Trailer`] events; frames resume after it.
    ///
    /// # Errors
    /// The [`ConnError`] that closed the connection (a close frame or
    /// handshake rejection is queued for the peer), or the earlier reason.
    pub fn handle_input<F>(
        &mut self,
        now: Timestamp,
        bytes: &[u8],
        mut on_event: F,
    ) -> Result<(), ConnError>
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        if let State::Closed(e) = self.tx.state {
            return Err(e);
        }
        let mut input = bytes;
        while !input.is_empty() {
            if let Some(t) = self.tx.trailer {
                input = self.take_trailer(now, t, input, &mut on_event);
                continue;
            }
            let rx_state = &mut self.rx_state;
            let tx = &mut self.tx;
            let res = self.rx.feed_until(input, |frame| {
                rx_state.on_frame(now, frame, tx, &mut on_event)
            });
            match res {
                Ok(used) => {
                    // The decoder only stops early to let a trailer start.
                    debug_assert!(used == input.len() || self.tx.trailer.is_some());
                    input = if self.tx.trailer.is_some() {
                        &input[used..]
                    } else {
                        &[]
                    };
                }
                Err(e) => {
                    let notify = !matches!(e, ConnError::PeerClosed { .. });
                    self.tx.fail(e, notify, &mut on_event);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Hands the leading trailer bytes of `input` to the visitor; returns
    /// the rest.
    fn take_trailer<'i, F>(
        &mut self,
        now: Timestamp,
        t: TrailerIn,
        input: &'i [u8],
        on_event: &mut F,
    ) -> &'i [u8]
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        // Bounded by input.len(), so it fits usize.
        let n = t.remaining().min(input.len() as u64) as usize;
        let (bytes, rest) = input.split_at(n);
        // Cannot fail: n <= remaining of the trailer in progress.
        let advanced = self.tx.advance_trailer(n as u64);
        debug_assert!(advanced.is_ok());
        self.rx_state.last_rx = now;
        on_event(
            ServerEvent::Trailer {
                id: CallId(t.id),
                bytes,
                offset: t.received,
                done: n as u64 == t.remaining(),
            },
            &mut self.tx,
        );
        rest
    }

    /// The transport lost the peer. Inside a trailer this closes with
    /// [`ConnError::TrailerTruncated`].
    pub fn handle_close<F>(&mut self, mut on_event: F)
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        let e = match self.tx.trailer {
            Some(t) => ConnError::TrailerTruncated {
                id: t.id,
                remaining: t.remaining(),
            },
            None => ConnError::TransportClosed,
        };
        self.tx.fail(e, false, &mut on_event);
    }

    /// Closes from the application side, queueing a close frame.
    pub fn close<F>(&mut self, mut on_event: F)
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        self.tx.fail(ConnError::LocalClose, true, &mut on_event);
    }
}

impl RxState {
    fn on_frame<F>(
        &mut self,
        now: Timestamp,
        frame: Frame<'_>,
        tx: &mut Responder,
        on_event: &mut F,
    ) -> Result<Flow, ConnError>
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        let h = frame.header;
        if h.seq != self.rx_seq {
            return Err(ConnError::Sequence {
                expected: self.rx_seq,
                got: h.seq,
            });
        }
        self.rx_seq += 1;
        self.last_rx = now;
        if h.is_reply() {
            return Err(tx.unexpected(h.kind));
        }
        match tx.state {
            State::AwaitHandshake => {
                if h.kind != KIND_HANDSHAKE {
                    return Err(tx.unexpected(h.kind));
                }
                let hs = Handshake::decode(frame.body)?;
                if !tokens_equal(&hs.token, &tx.cfg.token) {
                    return Err(ConnError::AuthFailed);
                }
                tx.state = State::Open;
                let reply = HandshakeReply {
                    status: 0,
                    caps: tx.cfg.caps,
                    credit_calls: tx.cfg.window_calls,
                    credit_bytes: tx.cfg.window_bytes,
                    session_id: tx.cfg.session_id,
                };
                tx.push_control(KIND_HANDSHAKE_REPLY, |b| reply.encode(b));
                on_event(
                    ServerEvent::Connected {
                        client_caps: hs.caps,
                    },
                    tx,
                );
                Ok(Flow::Continue)
            }
            State::Open if h.kind < FIRST_CALL_CODE => {
                if h.kind == KIND_CLOSE {
                    let c = Close::decode(frame.body)?;
                    return Err(ConnError::PeerClosed {
                        reason: c.reason,
                        detail: c.detail,
                    });
                }
                Err(tx.unexpected(h.kind))
            }
            State::Open => {
                let call = Call::decode(h.kind, frame.body)?;
                let id = CallId(h.seq);
                let stream = StreamHandle(h.key);
                let class = call.class();
                let trailer = call.trailer_len();
                if trailer > 0 {
                    if tx.cfg.framing == Framing::Message {
                        return Err(ConnError::TrailerOnMessageFraming { code: h.kind });
                    }
                    if class != CallClass::Sync {
                        return Err(ConnError::TrailerOnAsync { code: h.kind });
                    }
                }
                // With a trailer, the decoder stops after this frame: the
                // next stream bytes are the trailer.
                let flow = if trailer > 0 {
                    Flow::Pause
                } else {
                    Flow::Continue
                };
                match class {
                    CallClass::Local => return Err(ConnError::LocalCallOnWire { code: h.kind }),
                    CallClass::Async => {
                        // body_len <= MAX_BODY_BYTES, so this fits in u32.
                        let bytes = HEADER_BYTES as u32 + h.body_len;
                        tx.ledger.admit(id.0, bytes)?;
                        if tx.sticky.is_some() {
                            // Poisoned context: the call is dropped unexecuted
                            // but its credit still comes back.
                            tx.finish_async(id.0, Ok(()));
                            return Ok(flow);
                        }
                    }
                    CallClass::Sync => {
                        if tx.pending_sync.is_full() {
                            return Err(ConnError::TooManyPending {
                                max: tx.pending_sync.max(),
                            });
                        }
                        tx.pending_sync.push(id.0, h.kind);
                        // The trailer starts before the call is seen, so the
                        // app cannot answer it early; it is consumed even when
                        // the call is answered here (poisoned context).
                        if let Some(e) = tx.sticky {
                            // Cannot fail: the call was just registered and
                            // its trailer (if any) is not yet in progress.
                            let _ = tx.reply(id, Err(e));
                            tx.start_trailer(id.0, trailer);
                            return Ok(flow);
                        }
                        tx.start_trailer(id.0, trailer);
                    }
                }
                on_event(
                    ServerEvent::Call {
                        id,
                        class,
                        stream,
                        call,
                    },
                    tx,
                );
                Ok(flow)
            }
            State::Closed(e) => Err(e),
        }
    }
}
