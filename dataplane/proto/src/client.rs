//! The client (shim) side of the sans-IO connection state machine.
//!
//! Owns: the handshake, outgoing sequence numbers, async batching with a
//! linger deadline, the credit window, the table of sync calls awaiting
//! replies, the mirrored sticky error, timeouts, and the trailer the driver
//! owes after a batch ending in a trailing payload. See the crate docs for
//! the polling order.

use crate::batch::{BatchTrailer, TxQueue};
use crate::calls::{Call, Reply};
use crate::control::{
    split_reply, Close, CloseReason, CreditGrant, Handshake, HandshakeReply, KIND_CLOSE,
    KIND_CREDIT, KIND_HANDSHAKE, KIND_HANDSHAKE_REPLY, TOKEN_BYTES,
};
use crate::credit::Wallet;
use crate::cuda::CudaError;
use crate::error::{ConnError, SubmitError, TrailerError};
use crate::field::StreamHandle;
use crate::frame::{write_frame, Frame, FrameDecoder, Framing};
use crate::header::{HEADER_BYTES, MAX_BODY_BYTES};
use crate::message::{CallClass, Message};
use crate::pending::Pending;
use crate::time::Timestamp;

/// Identifies a submitted call: its request's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Trailer bytes the driver must put on the stream right after a batch:
/// the payload of the sync call `id` submitted with
/// [`Payload::Trailing`](crate::Payload::Trailing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwedTrailer {
    /// The call whose payload this is.
    pub id: CallId,
    /// Bytes still to send.
    pub len: u64,
}

impl From<BatchTrailer> for OwedTrailer {
    fn from(t: BatchTrailer) -> Self {
        Self {
            id: CallId(t.id),
            len: t.len,
        }
    }
}

/// Client settings. Every bound is named here.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Shared secret presented in the handshake.
    pub token: [u8; TOKEN_BYTES],
    /// Capability bits offered (`CAP_*`).
    pub caps: u64,
    /// How the transport delivers bytes.
    pub framing: Framing,
    /// Most async calls in one batch before it is sealed.
    pub max_batch_calls: u32,
    /// Most bytes in one batch before it is sealed (a single larger frame
    /// travels alone).
    pub max_batch_bytes: u32,
    /// How long the first async call of a batch may wait for company before
    /// the batch is sealed anyway; 0 seals after every call.
    pub linger_ns: u64,
    /// Most sync calls awaiting replies at once.
    pub max_pending_sync: u32,
    /// Deadline for the handshake reply, from construction.
    pub handshake_timeout_ns: u64,
    /// While sync calls are outstanding, the longest silence from the
    /// server before the connection is declared dead; 0 disables.
    pub reply_timeout_ns: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            token: [0; TOKEN_BYTES],
            caps: 0,
            framing: Framing::Stream,
            max_batch_calls: 256,
            max_batch_bytes: 64 << 10,
            linger_ns: 20_000,
            max_pending_sync: 64,
            handshake_timeout_ns: 5_000_000_000,
            reply_timeout_ns: 30_000_000_000,
        }
    }
}

/// What input or a timeout produced on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// The server accepted the handshake; calls may be submitted.
    HandshakeDone {
        /// Server-chosen session id.
        session_id: u64,
        /// Server capability bits.
        server_caps: u64,
    },
    /// A sync call finished. An error may be the call's own, a deferred
    /// error from an earlier async call, or the sticky error.
    Reply {
        /// The call answered.
        id: CallId,
        /// Its reply, borrowing from the input buffer.
        result: Result<Reply<'a>, CudaError>,
    },
    /// A sync call will never be answered: the connection failed.
    Aborted {
        /// The call aborted.
        id: CallId,
        /// Why.
        error: ConnError,
    },
    /// The connection is closed (after any `Aborted` events).
    Closed {
        /// Why.
        error: ConnError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Open,
    Closed(ConnError),
}

impl State {
    const fn name(self) -> &'static str {
        match self {
            State::Handshaking => "handshaking",
            State::Open => "open",
            State::Closed(_) => "closed",
        }
    }
}

/// Client side of one connection.
#[derive(Debug)]
pub struct Client {
    rx: FrameDecoder,
    core: Core,
}

#[derive(Debug)]
struct Core {
    cfg: ClientConfig,
    state: State,
    tx: TxQueue,
    tx_seq: u64,
    rx_seq: u64,
    /// Async credit (empty until the handshake reply).
    credit: Wallet,
    /// Sync calls awaiting replies.
    pending: Pending,
    sticky: Option<CudaError>,
    /// When the open batch got its first frame.
    open_since: Option<Timestamp>,
    handshake_deadline: Timestamp,
    /// Start of the current wait for the server (last input, or when the
    /// oldest pending call was sent if later).
    waiting_since: Timestamp,
    /// Trailer owed after the batch last taken; blocks further batches.
    owed: Option<OwedTrailer>,
}

impl Client {
    /// A new client; the handshake is already queued for `poll_transmit`.
    #[must_use]
    pub fn new(cfg: ClientConfig, now: Timestamp) -> Self {
        let mut core = Core {
            state: State::Handshaking,
            tx: TxQueue::default(),
            tx_seq: 0,
            rx_seq: 0,
            credit: Wallet::default(),
            pending: Pending::new(cfg.max_pending_sync),
            sticky: None,
            open_since: None,
            handshake_deadline: now + cfg.handshake_timeout_ns,
            waiting_since: now,
            owed: None,
            cfg,
        };
        let hs = Handshake {
            caps: core.cfg.caps,
            token: core.cfg.token,
        };
        core.push_control(KIND_HANDSHAKE, |b| hs.encode(b));
        Self {
            rx: FrameDecoder::new(core.cfg.framing),
            core,
        }
    }

    /// Whether the handshake completed and the connection is usable.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.core.state == State::Open
    }

    /// The close reason, once closed.
    #[must_use]
    pub fn close_reason(&self) -> Option<ConnError> {
        match self.core.state {
            State::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// Async call credit left: (calls, bytes).
    #[must_use]
    pub fn credit(&self) -> (u32, u64) {
        self.core.credit.avail()
    }

    /// Sync calls awaiting replies.
    #[must_use]
    pub fn pending_sync(&self) -> usize {
        self.core.pending.len()
    }

    /// The sticky error poisoning this context, if any.
    #[must_use]
    pub fn sticky_error(&self) -> Option<CudaError> {
        self.core.sticky
    }

    /// Queues a call given as a concrete table struct (no enum dispatch).
    /// Async calls join the open batch; a sync call seals the batch with
    /// itself at the end. A sync call with a
    /// [`Payload::Trailing`](crate::Payload::Trailing) does the same and
    /// marks the batch as owing that many trailer bytes (see
    /// [`Client::peek_trailer`]); the caller keeps the bytes until sent.
    ///
    /// # Errors
    /// [`SubmitError`] when not open, out of credit or pending slots,
    /// too large, local-only, poisoned by a sticky error, or carrying a
    /// trailer on an async call or a message transport. Nothing is queued
    /// on error.
    #[inline]
    pub fn submit<'m, M: Message<'m>>(
        &mut self,
        now: Timestamp,
        msg: &M,
        stream: StreamHandle,
    ) -> Result<CallId, SubmitError> {
        msg.check()
            .map_err(|(field, source)| SubmitError::InvalidField {
                code: M::CODE,
                field,
                source,
            })?;
        let trailer = msg.trailer_len();
        self.core
            .submit_raw(now, M::CODE, M::CLASS, stream, trailer, |b| {
                msg.encode_body(b);
            })
    }

    /// Queues any call from the table; see [`Client::submit`].
    ///
    /// # Errors
    /// As [`Client::submit`].
    #[inline]
    pub fn submit_call(
        &mut self,
        now: Timestamp,
        call: &Call<'_>,
        stream: StreamHandle,
    ) -> Result<CallId, SubmitError> {
        call.check()
            .map_err(|(field, source)| SubmitError::InvalidField {
                code: call.code(),
                field,
                source,
            })?;
        let trailer = call.trailer_len();
        self.core
            .submit_raw(now, call.code(), call.class(), stream, trailer, |b| {
                call.encode_body(b);
            })
    }

    /// Seals the open batch so the next `poll_transmit` sends it.
    pub fn flush(&mut self) {
        self.core.tx.seal();
        self.core.open_since = None;
    }

    /// Appends the next batch of frames to `out`; returns its length.
    /// Call until `None` after every `submit`/`handle_*`. If the batch ends
    /// in a trailing payload, [`Client::trailer_owed`] is `Some` afterwards
    /// and this returns `None` until [`Client::trailer_sent`] reports it.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<usize> {
        if self.core.owed.is_some() {
            return None;
        }
        let trailer = self.core.tx.front_trailer();
        let n = self.core.tx.pop_batch(out)?;
        self.core.owed = trailer.map(OwedTrailer::from);
        Some(n)
    }

    /// The next batch without copying it out (e.g. to write it straight
    /// into a ring slot or a socket); call [`Client::advance_transmit`]
    /// once it is sent. `None` while a trailer is owed. Check
    /// [`Client::peek_trailer`] to learn whether the payload must follow it.
    #[must_use]
    pub fn peek_transmit(&self) -> Option<&[u8]> {
        if self.core.owed.is_some() {
            return None;
        }
        self.core.tx.peek_batch()
    }

    /// The trailer that must follow the batch [`Client::peek_transmit`]
    /// returns, if that batch ends in a trailing payload.
    #[must_use]
    pub fn peek_trailer(&self) -> Option<OwedTrailer> {
        if self.core.owed.is_some() {
            return None;
        }
        self.core.tx.front_trailer().map(OwedTrailer::from)
    }

    /// Drops the batch returned by [`Client::peek_transmit`]; if it ends in
    /// a trailing payload, that trailer is now owed. No-op while a trailer
    /// is owed (then `peek_transmit` returned nothing).
    pub fn advance_transmit(&mut self) {
        if self.core.owed.is_some() {
            return;
        }
        let trailer = self.core.tx.front_trailer();
        if self.core.tx.peek_batch().is_some() {
            self.core.tx.advance_batch();
            self.core.owed = trailer.map(OwedTrailer::from);
        }
    }

    /// The trailer bytes the driver still owes the stream (after the batch
    /// it last took), if any. Nothing else may be sent until they are.
    #[must_use]
    pub fn trailer_owed(&self) -> Option<OwedTrailer> {
        self.core.owed
    }

    /// Reports that `n` more bytes of the owed trailer were put on the
    /// stream (call once with the whole length, or once per piece). When
    /// the trailer is complete, batches flow again.
    ///
    /// # Errors
    /// [`TrailerError::NoneInProgress`] when nothing is owed,
    /// [`TrailerError::Overrun`] when `n` exceeds what is owed (nothing
    /// changes on error).
    pub fn trailer_sent(&mut self, n: u64) -> Result<(), TrailerError> {
        let Some(owed) = self.core.owed.as_mut() else {
            return Err(TrailerError::NoneInProgress { n });
        };
        if n > owed.len {
            return Err(TrailerError::Overrun {
                n,
                remaining: owed.len,
            });
        }
        owed.len -= n;
        if owed.len == 0 {
            self.core.owed = None;
        }
        Ok(())
    }

    /// Earliest moment `handle_timeout` must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let c = &self.core;
        let linger = c.open_since.map(|t| t + c.cfg.linger_ns);
        let other = match c.state {
            State::Handshaking => Some(c.handshake_deadline),
            State::Open if !c.pending.is_empty() && c.cfg.reply_timeout_ns > 0 => {
                Some(c.waiting_since + c.cfg.reply_timeout_ns)
            }
            _ => None,
        };
        match (linger, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due deadlines: seals a lingering batch, or fails the
    /// connection on handshake/reply timeout.
    pub fn handle_timeout<F>(&mut self, now: Timestamp, mut on_event: F)
    where
        F: FnMut(ClientEvent<'_>),
    {
        let c = &mut self.core;
        if let Some(t) = c.open_since {
            if now >= t + c.cfg.linger_ns {
                c.tx.seal();
                c.open_since = None;
            }
        }
        match c.state {
            State::Handshaking if now >= c.handshake_deadline => {
                c.fail(ConnError::HandshakeTimeout, true, &mut on_event);
            }
            State::Open
                if !c.pending.is_empty()
                    && c.cfg.reply_timeout_ns > 0
                    && now >= c.waiting_since + c.cfg.reply_timeout_ns =>
            {
                c.fail(ConnError::IdleTimeout, true, &mut on_event);
            }
            _ => {}
        }
    }

    /// Processes received bytes (any chunking), calling `on_event` for each
    /// event. Replies borrow from `bytes` (or the reassembly buffer) only for
    /// the duration of the callback.
    ///
    /// # Errors
    /// The [`ConnError`] that closed the connection (also delivered as
    /// `Aborted`/`Closed` events), or the earlier close reason.
    pub fn handle_input<F>(
        &mut self,
        now: Timestamp,
        bytes: &[u8],
        mut on_event: F,
    ) -> Result<(), ConnError>
    where
        F: FnMut(ClientEvent<'_>),
    {
        if let State::Closed(e) = self.core.state {
            return Err(e);
        }
        let core = &mut self.core;
        let res = self
            .rx
            .feed(bytes, |frame| core.on_frame(now, frame, &mut on_event));
        if let Err(e) = res {
            let notify = !matches!(e, ConnError::PeerClosed { .. } | ConnError::Rejected { .. });
            core.fail(e, notify, &mut on_event);
            return Err(e);
        }
        Ok(())
    }

    /// The transport lost the peer (EOF, reset, ring peer died).
    pub fn handle_close<F>(&mut self, mut on_event: F)
    where
        F: FnMut(ClientEvent<'_>),
    {
        self.core
            .fail(ConnError::TransportClosed, false, &mut on_event);
    }

    /// Closes from the application side: queues a close frame and aborts
    /// every pending call.
    pub fn close<F>(&mut self, mut on_event: F)
    where
        F: FnMut(ClientEvent<'_>),
    {
        self.core.fail(ConnError::LocalClose, true, &mut on_event);
    }
}

impl Core {
    fn push_control(&mut self, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
        let seq = self.tx_seq;
        // Control bodies are a few dozen bytes, far below MAX_BODY_BYTES.
        let res = write_frame(self.tx.buf(), kind, 0, seq, 0, body);
        debug_assert!(res.is_ok());
        self.tx_seq += 1;
        self.tx.frame_added();
        self.tx.seal();
        self.open_since = None;
    }

    #[inline]
    fn submit_raw(
        &mut self,
        now: Timestamp,
        code: u16,
        class: CallClass,
        stream: StreamHandle,
        trailer: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<CallId, SubmitError> {
        match self.state {
            State::Open => {}
            State::Handshaking => return Err(SubmitError::NotReady),
            State::Closed(e) => return Err(SubmitError::Closed(e)),
        }
        if let Some(e) = self.sticky {
            return Err(SubmitError::Sticky(e));
        }
        match class {
            CallClass::Local => return Err(SubmitError::LocalCall { code }),
            CallClass::Sync if self.pending.is_full() => {
                return Err(SubmitError::TooManyPending {
                    max: self.pending.max(),
                });
            }
            CallClass::Async if self.credit.avail().0 == 0 => return Err(self.backpressure()),
            _ => {}
        }
        if trailer > 0 {
            if self.cfg.framing == Framing::Message {
                return Err(SubmitError::TrailerOnMessageFraming { code });
            }
            if class != CallClass::Sync {
                return Err(SubmitError::TrailerOnAsync { code });
            }
        }
        let seq = self.tx_seq;
        let start = self.tx.buf().len();
        let body_len =
            write_frame(self.tx.buf(), code, 0, seq, stream.0, encode).map_err(|len| {
                SubmitError::TooLarge {
                    len,
                    max: MAX_BODY_BYTES.into(),
                }
            })?;
        let frame_len = (HEADER_BYTES + body_len as usize) as u64;
        if class == CallClass::Async && !self.credit.try_spend(frame_len) {
            // Nothing was spent; take the frame back out.
            self.tx.buf().truncate(start);
            if frame_len > self.credit.window_bytes() {
                return Err(SubmitError::TooLarge {
                    len: frame_len as usize,
                    max: self.credit.window_bytes(),
                });
            }
            return Err(self.backpressure());
        }
        self.tx_seq += 1;
        // Keep batches within max_batch_bytes: seal what came before a
        // frame that would overflow the open batch.
        let before = self.tx.open_frames();
        if before > 0 && self.tx.open_bytes() > self.cfg.max_batch_bytes as usize {
            self.tx.seal_at(start, before);
            self.open_since = None;
        }
        self.tx.frame_added();
        match class {
            CallClass::Sync => {
                if self.pending.is_empty() {
                    self.waiting_since = now;
                }
                self.pending.push(seq, code);
                if trailer > 0 {
                    self.tx.seal_with_trailer(BatchTrailer {
                        id: seq,
                        len: trailer,
                    });
                } else {
                    self.tx.seal();
                }
                self.open_since = None;
            }
            _ => {
                if self.open_since.is_none() {
                    self.open_since = Some(now);
                }
                if self.cfg.linger_ns == 0
                    || self.tx.open_frames() >= self.cfg.max_batch_calls
                    || self.tx.open_bytes() >= self.cfg.max_batch_bytes as usize
                {
                    self.tx.seal();
                    self.open_since = None;
                }
            }
        }
        Ok(CallId(seq))
    }

    fn backpressure(&self) -> SubmitError {
        SubmitError::Backpressure {
            calls_avail: self.credit.avail().0,
            bytes_avail: self.credit.avail().1,
        }
    }

    fn on_frame(
        &mut self,
        now: Timestamp,
        frame: Frame<'_>,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) -> Result<(), ConnError> {
        let h = frame.header;
        if h.seq != self.rx_seq {
            return Err(ConnError::Sequence {
                expected: self.rx_seq,
                got: h.seq,
            });
        }
        self.rx_seq += 1;
        self.waiting_since = now;
        if h.kind == KIND_CLOSE && !h.is_reply() {
            let c = Close::decode(frame.body)?;
            return Err(ConnError::PeerClosed {
                reason: c.reason,
                detail: c.detail,
            });
        }
        match self.state {
            State::Handshaking => {
                if h.kind != KIND_HANDSHAKE_REPLY || h.is_reply() {
                    return Err(self.unexpected(h.kind));
                }
                let r = HandshakeReply::decode(frame.body)?;
                if r.status != 0 {
                    return Err(ConnError::Rejected { reason: r.status });
                }
                self.credit = Wallet::open(r.credit_calls, r.credit_bytes);
                self.state = State::Open;
                tracing::debug!(session = r.session_id, "rgpu handshake done");
                on_event(ClientEvent::HandshakeDone {
                    session_id: r.session_id,
                    server_caps: r.caps,
                });
                Ok(())
            }
            State::Open if h.is_reply() => self.on_reply(h.kind, h.key, frame.body, on_event),
            State::Open if h.kind == KIND_CREDIT => {
                let g = CreditGrant::decode(frame.body)?;
                self.credit.refund(g)
            }
            State::Open => Err(self.unexpected(h.kind)),
            State::Closed(e) => Err(e),
        }
    }

    fn unexpected(&self, kind: u16) -> ConnError {
        ConnError::UnexpectedFrame {
            kind,
            state: self.state.name(),
        }
    }

    fn on_reply(
        &mut self,
        kind: u16,
        id: u64,
        body: &[u8],
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) -> Result<(), ConnError> {
        if self.pending.code_of(id) != Some(kind) {
            return Err(ConnError::UnknownReply { id, kind });
        }
        let (status, grant, rest) = split_reply(kind, body)?;
        self.credit.refund(grant)?;
        let result = match CudaError::from_code(status) {
            None => {
                let r = Reply::decode(kind, rest)?;
                if r.trailer_len() > 0 {
                    return Err(ConnError::TrailerInReply { kind });
                }
                Ok(r)
            }
            Some(e) => {
                if e.is_sticky() && self.sticky.is_none() {
                    tracing::warn!(code = e.0, "rgpu context poisoned by sticky error");
                    self.sticky = Some(e);
                }
                Err(e)
            }
        };
        let removed = self.pending.remove(id);
        debug_assert!(removed, "looked up above");
        on_event(ClientEvent::Reply {
            id: CallId(id),
            result,
        });
        Ok(())
    }

    /// Closes: optionally queues a close frame, aborts pending calls,
    /// reports `Closed`. Idempotent.
    fn fail(
        &mut self,
        e: ConnError,
        notify_peer: bool,
        on_event: &mut impl FnMut(ClientEvent<'_>),
    ) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        tracing::debug!(error = %e, "rgpu client connection closed");
        self.open_since = None;
        // Frames already queued keep their sequence numbers, so the close
        // frame goes after them; without a close frame nothing more is sent.
        if notify_peer {
            let close = Close {
                reason: CloseReason::for_error(&e) as u32,
                detail: 0,
            };
            self.push_control(KIND_CLOSE, |b| close.encode(b));
        } else {
            // Nothing more reaches the peer: no trailer is owed either.
            self.tx.clear();
            self.owed = None;
        }
        self.state = State::Closed(e);
        while let Some((id, _)) = self.pending.pop_oldest() {
            on_event(ClientEvent::Aborted {
                id: CallId(id),
                error: e,
            });
        }
        on_event(ClientEvent::Closed { error: e });
    }
}
