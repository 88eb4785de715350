//! Typed errors of every fallible protocol operation.
//!
//! All are small `Copy` values (no strings, no allocation) so that a
//! connection error can be handed to every aborted call and stored as the
//! connection's close reason without cloning heap data.

use crate::cuda::CudaError;

/// A frame header failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than `HEADER_BYTES` bytes were available.
    #[error("short header: {have} bytes")]
    Short {
        /// Bytes available.
        have: usize,
    },
    /// The magic word did not match.
    #[error("bad magic {got:#010x}")]
    BadMagic {
        /// The magic received.
        got: u32,
    },
    /// The peer speaks another wire version.
    #[error("wire version {got}, expected {want}")]
    BadVersion {
        /// The version received.
        got: u8,
        /// The version we speak.
        want: u8,
    },
    /// A flag bit not defined by this version was set.
    #[error("unknown flag bits {flags:#04x}")]
    UnknownFlags {
        /// The flags received.
        flags: u8,
    },
    /// The reserved word was not zero.
    #[error("reserved header word is {value:#x}, must be zero")]
    ReservedNonZero {
        /// The reserved word received.
        value: u32,
    },
    /// The claimed body exceeds `MAX_BODY_BYTES`.
    #[error("body of {len} bytes exceeds the {max}-byte bound")]
    BodyTooLarge {
        /// Claimed body length.
        len: u32,
        /// The bound.
        max: u32,
    },
}

/// One field of a body failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The body ended inside the field.
    #[error("truncated: needed {need} bytes, {have} left")]
    Truncated {
        /// Bytes the field needed.
        need: usize,
        /// Bytes left in the body.
        have: usize,
    },
    /// A length or count prefix exceeded the field's bound.
    #[error("length {len} exceeds bound {max}")]
    TooLong {
        /// Claimed length or count.
        len: u64,
        /// The field's bound.
        max: u64,
    },
    /// An enum tag had no meaning.
    #[error("invalid tag {tag}")]
    BadTag {
        /// The tag received.
        tag: u8,
    },
}

/// A frame body failed to decode as the message its kind names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The kind is not a call code or control kind of this wire version.
    #[error("unknown kind {kind:#06x}")]
    UnknownKind {
        /// The kind received.
        kind: u16,
    },
    /// A named field failed to decode.
    #[error("kind {kind:#06x} field `{field}`: {source}")]
    Field {
        /// Frame kind.
        kind: u16,
        /// Field name from the call table.
        field: &'static str,
        /// What went wrong.
        source: FieldError,
    },
    /// Bytes were left over after the last field.
    #[error("kind {kind:#06x}: {extra} trailing bytes")]
    TrailingBytes {
        /// Frame kind.
        kind: u16,
        /// Bytes left over.
        extra: usize,
    },
}

/// Why a connection failed or closed. Delivered once as the connection's
/// close reason and to every call aborted by the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// A frame header was invalid.
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    /// A frame body was invalid.
    #[error("bad body: {0}")]
    Decode(#[from] DecodeError),
    /// A message transport delivered a batch ending inside a frame.
    #[error("batch ends inside a frame ({leftover} bytes left)")]
    TruncatedBatch {
        /// Bytes of the incomplete frame.
        leftover: usize,
    },
    /// A frame arrived with an unexpected sequence number (gap, duplicate
    /// or reordering).
    #[error("sequence {got}, expected {expected}")]
    Sequence {
        /// The next sequence number we expected.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A frame of a kind not allowed in the current state.
    #[error("unexpected frame kind {kind:#06x} in state {state}")]
    UnexpectedFrame {
        /// The kind received.
        kind: u16,
        /// Name of the state.
        state: &'static str,
    },
    /// A `Local` call (answered inside the shim) arrived on the wire.
    #[error("local-only call {code:#06x} on the wire")]
    LocalCallOnWire {
        /// Call code.
        code: u16,
    },
    /// The client's auth token did not match (server side).
    #[error("authentication failed")]
    AuthFailed,
    /// The server rejected the handshake (client side).
    #[error("handshake rejected: reason {reason}")]
    Rejected {
        /// `CloseReason` code sent by the server.
        reason: u32,
    },
    /// The peer sent a close frame.
    #[error("peer closed: reason {reason}, detail {detail}")]
    PeerClosed {
        /// `CloseReason` code.
        reason: u32,
        /// Reason-specific detail.
        detail: u64,
    },
    /// The client sent more async calls or bytes than its credit allowed.
    #[error("credit window exceeded: {calls} calls / {bytes} bytes outstanding")]
    CreditViolation {
        /// Calls outstanding including the offending one.
        calls: u64,
        /// Bytes outstanding including the offending one.
        bytes: u64,
    },
    /// The server returned more credit than was ever used.
    #[error("credit return of {calls} calls / {bytes} bytes exceeds use")]
    CreditOverflow {
        /// Calls returned.
        calls: u32,
        /// Bytes returned.
        bytes: u32,
    },
    /// The client had too many sync calls outstanding (server side).
    #[error("more than {max} sync calls outstanding")]
    TooManyPending {
        /// The bound.
        max: u32,
    },
    /// A reply referred to no outstanding call, or to one of another kind.
    #[error("reply kind {kind:#06x} to unknown call {id}")]
    UnknownReply {
        /// Sequence number the reply claimed to answer.
        id: u64,
        /// Kind of the reply.
        kind: u16,
    },
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Nothing was received for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The transport reported end of stream / peer loss.
    #[error("transport closed")]
    TransportClosed,
    /// The local application closed the connection.
    #[error("closed locally")]
    LocalClose,
    /// A request announced a trailer on a message transport, where bulk
    /// bytes travel by arena reference (server side).
    #[error("call {code:#06x} announces a trailer on message framing")]
    TrailerOnMessageFraming {
        /// Call code.
        code: u16,
    },
    /// An async request announced a trailer; only sync calls may carry
    /// one (server side).
    #[error("async call {code:#06x} announces a trailer")]
    TrailerOnAsync {
        /// Call code.
        code: u16,
    },
    /// A reply announced a trailer; replies never carry one (client side).
    #[error("reply of kind {kind:#06x} announces a trailer")]
    TrailerInReply {
        /// Kind of the reply.
        kind: u16,
    },
    /// The stream ended before a call's trailer was complete.
    #[error("stream ended {remaining} bytes before the end of call {id}'s trailer")]
    TrailerTruncated {
        /// The call whose trailer was cut.
        id: u64,
        /// Trailer bytes never received.
        remaining: u64,
    },
}

/// Why the client refused to queue a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The handshake has not completed yet.
    #[error("handshake not complete")]
    NotReady,
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(ConnError),
    /// Out of async credit: retry after input returns credit.
    #[error("backpressure: {calls_avail} calls / {bytes_avail} bytes of credit left")]
    Backpressure {
        /// Call credits left.
        calls_avail: u32,
        /// Byte credits left.
        bytes_avail: u64,
    },
    /// Too many sync calls are awaiting replies.
    #[error("{max} sync calls already outstanding")]
    TooManyPending {
        /// The bound.
        max: u32,
    },
    /// The encoded body exceeds `MAX_BODY_BYTES` (or an async call exceeds
    /// the whole byte window and could never be sent).
    #[error("call body of {len} bytes exceeds bound {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The bound that was exceeded.
        max: u64,
    },
    /// A variable-length field exceeds its bound.
    #[error("call {code:#06x} field `{field}`: {source}")]
    InvalidField {
        /// Call code.
        code: u16,
        /// Field name from the call table.
        field: &'static str,
        /// The bound violation.
        source: FieldError,
    },
    /// The call is `Local`: the shim answers it without the wire.
    #[error("call {code:#06x} is local-only")]
    LocalCall {
        /// Call code.
        code: u16,
    },
    /// A sticky error poisoned the context; every call fails with it.
    #[error("context poisoned by sticky {0}")]
    Sticky(CudaError),
    /// A trailing payload on a message transport (use arena references).
    #[error("call {code:#06x}: trailing payloads need stream framing")]
    TrailerOnMessageFraming {
        /// Call code.
        code: u16,
    },
    /// A trailing payload on an async call (trailers are sync-only).
    #[error("call {code:#06x}: trailing payloads are for sync calls only")]
    TrailerOnAsync {
        /// Call code.
        code: u16,
    },
}

/// Why the server application's reply or completion was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// No outstanding call of that class has this id.
    #[error("no outstanding call {id}")]
    UnknownCall {
        /// The id given.
        id: u64,
    },
    /// The reply variant does not belong to the call's code.
    #[error("call {id} has code {expected:#06x}, reply is for {got:#06x}")]
    WrongReply {
        /// The id given.
        id: u64,
        /// Code of the outstanding call.
        expected: u16,
        /// Code the reply belongs to.
        got: u16,
    },
    /// A variable-length reply field exceeds its bound.
    #[error("reply to call {id} field `{field}`: {source}")]
    InvalidField {
        /// The id given.
        id: u64,
        /// Field name from the call table.
        field: &'static str,
        /// The bound violation.
        source: FieldError,
    },
    /// The reply body exceeds `MAX_BODY_BYTES`.
    #[error("reply body of {len} bytes exceeds bound")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The call's trailer has not fully arrived; answer it once it has.
    #[error("call {id}'s trailer still has {remaining} bytes to arrive")]
    TrailerIncomplete {
        /// The id given.
        id: u64,
        /// Trailer bytes not yet received.
        remaining: u64,
    },
    /// The reply announces a trailer; replies never carry one.
    #[error("reply to call {id} announces a trailer")]
    TrailerInReply {
        /// The id given.
        id: u64,
    },
}

/// Why a driver's report about trailer bytes was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrailerError {
    /// No trailer is owed (client) or expected (server) right now.
    #[error("{n} trailer bytes reported, but no trailer is in progress")]
    NoneInProgress {
        /// Bytes reported.
        n: u64,
    },
    /// More bytes were reported than the trailer has left.
    #[error("{n} trailer bytes reported, only {remaining} left")]
    Overrun {
        /// Bytes reported.
        n: u64,
        /// Bytes the trailer had left.
        remaining: u64,
    },
}
