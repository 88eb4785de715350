//! The answering half of a server connection.
//!
//! [`Responder`] owns everything the server *sends*: handshake replies,
//! replies to sync calls (with deferred/sticky error substitution and
//! piggybacked credit), credit frames, close frames, and the bookkeeping
//! behind them (pending sync calls, the async credit ledger). It is split
//! from the receiving half so that the input visitor can be handed a
//! `&mut Responder` while the decoder still borrows the input.

use crate::batch::TxQueue;
use crate::calls::Reply;
use crate::client::CallId;
use crate::control::{
    Close, CloseReason, HandshakeReply, KIND_CLOSE, KIND_CREDIT, KIND_HANDSHAKE_REPLY,
};
use crate::credit::Ledger;
use crate::cuda::CudaError;
use crate::error::{ConnError, ReplyError, TrailerError};
use crate::frame::write_frame;
use crate::header::FLAG_REPLY;
use crate::pending::Pending;
use crate::server::{ServerConfig, ServerEvent};

/// Lifecycle of a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// See `docs/protocol.md`.
    AwaitHandshake,
    /// See `docs/protocol.md`.
    Open,
    /// See `docs/protocol.md`.
    Closed(ConnError),
}

/// A trailer being received: the stream bytes after call `id`'s frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrailerIn {
    /// The call whose payload it is.
    pub(crate) id: u64,
    /// Announced length (positive, at most `MAX_TRAILER_BYTES`).
    pub(crate) len: u64,
    /// Bytes received so far (`< len` while in progress).
    pub(crate) received: u64,
}

impl TrailerIn {
    pub(crate) const fn remaining(&self) -> u64 {
        self.len - self.received
    }
}

/// The answering half of a [`Server`](crate::Server): replies, async completions and
/// credit return. Handed to the input visitor so calls can be answered in
/// place.
#[derive(Debug)]
pub struct Responder {
    pub(crate) cfg: ServerConfig,
    pub(crate) state: State,
    pub(crate) tx: TxQueue,
    pub(crate) tx_seq: u64,
    /// Sync calls awaiting a reply.
    pub(crate) pending_sync: Pending,
    /// Async calls admitted against the credit window.
    pub(crate) ledger: Ledger,
    pub(crate) deferred: Option<CudaError>,
    pub(crate) sticky: Option<CudaError>,
    /// The trailer now arriving, if any; its call cannot be answered yet.
    pub(crate) trailer: Option<TrailerIn>,
}

impl Responder {
    /// Async calls delivered and not yet completed.
    #[must_use]
    pub fn async_outstanding(&self) -> usize {
        self.ledger.outstanding()
    }

    /// The sticky error, if the context is poisoned.
    #[must_use]
    pub fn sticky_error(&self) -> Option<CudaError> {
        self.sticky
    }

    /// Answers sync call `id`. A pending deferred error (from a failed async
    /// call) or the sticky error replaces `result`, so it surfaces at this
    /// synchronizing call as in CUDA. Unreturned credit rides along.
    ///
    /// # Errors
    /// [`ReplyError`] if `id` is not an outstanding sync call, its trailer
    /// has not fully arrived, the reply belongs to another call, announces
    /// a trailer, is too large, or the connection closed.
    pub fn reply(
        &mut self,
        id: CallId,
        result: Result<Reply<'_>, CudaError>,
    ) -> Result<(), ReplyError> {
        if matches!(self.state, State::Closed(_)) {
            return Err(ReplyError::Closed);
        }
        let code = self
            .pending_sync
            .code_of(id.0)
            .ok_or(ReplyError::UnknownCall { id: id.0 })?;
        if let Some(t) = self.trailer.filter(|t| t.id == id.0) {
            return Err(ReplyError::TrailerIncomplete {
                id: id.0,
                remaining: t.remaining(),
            });
        }
        if let Ok(r) = &result {
            if r.trailer_len() > 0 {
                return Err(ReplyError::TrailerInReply { id: id.0 });
            }
            r.check()
                .map_err(|(field, source)| ReplyError::InvalidField {
                    id: id.0,
                    field,
                    source,
                })?;
            if r.code() != code {
                return Err(ReplyError::WrongReply {
                    id: id.0,
                    expected: code,
                    got: r.code(),
                });
            }
        }
        if let Err(e) = result {
            self.note_error(e);
        }
        // Device queries leave deferred and sticky errors for the next
        // call that reports them (`reports_async_errors`).
        let reports = crate::calls::reports_async_errors(code);
        let override_err = if reports {
            self.sticky.or(self.deferred)
        } else {
            None
        };
        let status = match (override_err, &result) {
            (Some(e), _) | (None, &Err(e)) => e.0,
            (None, Ok(_)) => 0,
        };
        let grant = self.ledger.unreturned();
        let seq = self.tx_seq;
        let start = self.tx.buf().len();
        write_frame(self.tx.buf(), code, FLAG_REPLY, seq, id.0, |b| {
            b.extend_from_slice(&status.to_le_bytes());
            grant.encode(b);
            if let (0, Ok(r)) = (status, &result) {
                r.encode_body(b);
            }
        })
        .map_err(|len| ReplyError::TooLarge { len })?;
        if reports {
            self.deferred = None;
        }
        // The frame carries `grant`; only now that it is queued is it gone.
        let taken = self.ledger.take_unreturned();
        debug_assert_eq!(taken, grant);
        let removed = self.pending_sync.remove(id.0);
        debug_assert!(removed, "looked up above");
        self.frame_added(start);
        Ok(())
    }

    /// Marks async call `id` as executed. A failure becomes the deferred
    /// error reported at the next sync reply (and the sticky error if it is
    /// a sticky code). The call's credit becomes returnable.
    ///
    /// # Errors
    /// [`ReplyError::UnknownCall`] if `id` is not an outstanding async call.
    pub fn complete_async(
        &mut self,
        id: CallId,
        result: Result<(), CudaError>,
    ) -> Result<(), ReplyError> {
        if matches!(self.state, State::Closed(_)) {
            return Err(ReplyError::Closed);
        }
        if self.finish_async(id.0, result) {
            Ok(())
        } else {
            Err(ReplyError::UnknownCall { id: id.0 })
        }
    }

    /// The call whose trailer is arriving and the bytes it has left.
    #[must_use]
    pub fn trailer_remaining(&self) -> Option<(CallId, u64)> {
        self.trailer.map(|t| (CallId(t.id), t.remaining()))
    }

    /// Starts receiving call `id`'s trailer of `len` bytes (no-op for 0).
    pub(crate) fn start_trailer(&mut self, id: u64, len: u64) {
        debug_assert!(self.trailer.is_none(), "frames are paused during a trailer");
        if len > 0 {
            self.trailer = Some(TrailerIn {
                id,
                len,
                received: 0,
            });
        }
    }

    /// Counts `n` trailer bytes as received; returns the trailer's state
    /// before them. The trailer ends (and its call becomes answerable)
    /// when the last byte arrives.
    pub(crate) fn advance_trailer(&mut self, n: u64) -> Result<TrailerIn, TrailerError> {
        let Some(t) = self.trailer.as_mut() else {
            return Err(TrailerError::NoneInProgress { n });
        };
        let before = *t;
        if n > t.remaining() {
            return Err(TrailerError::Overrun {
                n,
                remaining: t.remaining(),
            });
        }
        t.received += n;
        if t.remaining() == 0 {
            self.trailer = None;
        }
        Ok(before)
    }

    pub(crate) fn unexpected(&self, kind: u16) -> ConnError {
        let state = match self.state {
            State::AwaitHandshake => "await-handshake",
            State::Open => "open",
            State::Closed(_) => "closed",
        };
        ConnError::UnexpectedFrame { kind, state }
    }

    pub(crate) fn note_error(&mut self, e: CudaError) {
        if e.is_sticky() && self.sticky.is_none() {
            tracing::warn!(code = e.0, "rgpu context poisoned by sticky error");
            self.sticky = Some(e);
        }
    }

    /// Removes an outstanding async call; false if unknown.
    pub(crate) fn finish_async(&mut self, id: u64, result: Result<(), CudaError>) -> bool {
        if !self.ledger.complete(id) {
            return false;
        }
        if let Err(e) = result {
            self.note_error(e);
            if self.deferred.is_none() {
                self.deferred = Some(e);
            }
        }
        true
    }

    /// Queues a credit frame if enough credit is unreturned, or if the
    /// async queue drained (so a blocked client always gets its window back).
    pub(crate) fn maybe_return_credit(&mut self) {
        if self.state == State::Open && self.ledger.return_due(self.cfg.credit_return_calls) {
            let g = self.ledger.take_unreturned();
            self.push_control(KIND_CREDIT, |b| g.encode(b));
        }
    }

    pub(crate) fn push_control(&mut self, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
        let start = self.tx.buf().len();
        // Control bodies are a few dozen bytes, far below MAX_BODY_BYTES.
        let res = write_frame(self.tx.buf(), kind, 0, self.tx_seq, 0, body);
        debug_assert!(res.is_ok());
        self.frame_added(start);
    }

    pub(crate) fn frame_added(&mut self, start: usize) {
        self.tx_seq += 1;
        let before = self.tx.open_frames();
        if before > 0 && self.tx.open_bytes() > self.cfg.max_batch_bytes as usize {
            self.tx.seal_at(start, before);
        }
        self.tx.frame_added();
    }

    pub(crate) fn fail<F>(&mut self, e: ConnError, notify_peer: bool, on_event: &mut F)
    where
        F: FnMut(ServerEvent<'_>, &mut Responder),
    {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        tracing::debug!(error = %e, "rgpu server connection closed");
        // Frames already queued keep their sequence numbers, so the close
        // frame goes after them; without a close frame nothing more is sent.
        if notify_peer {
            let reason = CloseReason::for_error(&e) as u32;
            if self.state == State::AwaitHandshake {
                let reply = HandshakeReply {
                    status: reason,
                    caps: 0,
                    credit_calls: 0,
                    credit_bytes: 0,
                    session_id: 0,
                };
                self.push_control(KIND_HANDSHAKE_REPLY, |b| reply.encode(b));
            } else {
                let close = Close { reason, detail: 0 };
                self.push_control(KIND_CLOSE, |b| close.encode(b));
            }
            self.tx.seal();
        } else {
            self.tx.clear();
        }
        self.trailer = None;
        self.state = State::Closed(e);
        on_event(ServerEvent::Closed { error: e }, self);
    }
}
