//! Control frames: handshake, credit return, close, and the reply prefix.
//!
//! These are not calls, so they live outside the call table, in the kind
//! range below [`FIRST_CALL_CODE`]. All are fixed-size.

use crate::error::{ConnError, DecodeError, FieldError};
use crate::field::{Field, Reader};

/// Kind of the client's [`Handshake`] frame (always sequence 0).
pub const KIND_HANDSHAKE: u16 = 0x0001;
/// Kind of the server's [`HandshakeReply`] frame (always sequence 0).
pub const KIND_HANDSHAKE_REPLY: u16 = 0x0002;
/// Kind of a server [`CreditGrant`] frame.
pub const KIND_CREDIT: u16 = 0x0003;
/// Kind of a [`Close`] frame (either direction).
pub const KIND_CLOSE: u16 = 0x0004;
/// Lowest call code; kinds below are control frames.
pub const FIRST_CALL_CODE: u16 = 0x0100;

/// Length of the client's auth token.
pub const TOKEN_BYTES: usize = 32;

/// Capability bit: client can use the shared arena for bulk data.
pub const CAP_ARENA: u64 = 1 << 0;
/// Capability bit: peer understands module load by content hash.
pub const CAP_MODULE_BY_HASH: u64 = 1 << 1;

/// Reason codes carried by [`Close`] and rejected [`HandshakeReply`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseReason {
    /// The auth token did not match.
    AuthFailed = 1,
    /// A frame header carried another wire version.
    VersionMismatch = 2,
    /// Malformed or unexpected frame, bad sequence, bad reply.
    ProtocolError = 3,
    /// Async calls beyond the granted credit window.
    CreditViolation = 4,
    /// Handshake or idle timeout.
    Timeout = 5,
    /// Orderly shutdown by the application.
    Shutdown = 6,
}

impl CloseReason {
    /// The reason to send to the peer when closing because of `err`.
    #[must_use]
    pub const fn for_error(err: &ConnError) -> Self {
        match err {
            ConnError::AuthFailed => Self::AuthFailed,
            ConnError::Header(crate::HeaderError::BadVersion { .. }) => Self::VersionMismatch,
            ConnError::CreditViolation { .. } => Self::CreditViolation,
            ConnError::HandshakeTimeout | ConnError::IdleTimeout => Self::Timeout,
            ConnError::LocalClose | ConnError::TransportClosed => Self::Shutdown,
            _ => Self::ProtocolError,
        }
    }
}

fn field<'a, T: Field<'a>>(
    r: &mut Reader<'a>,
    kind: u16,
    name: &'static str,
) -> Result<T, DecodeError> {
    T::decode(r).map_err(|source| DecodeError::Field {
        kind,
        field: name,
        source,
    })
}

fn finish(r: &Reader<'_>, kind: u16) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        extra => Err(DecodeError::TrailingBytes { kind, extra }),
    }
}

/// First frame from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Client capability bits (`CAP_*`).
    pub caps: u64,
    /// Shared secret, compared in constant time by the server.
    pub token: [u8; TOKEN_BYTES],
}

impl Handshake {
    /// Appends the body encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.caps.encode(out);
        self.token.encode(out);
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// [`DecodeError`] on short or long bodies.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let v = Self {
            caps: field(&mut r, KIND_HANDSHAKE, "caps")?,
            token: field(&mut r, KIND_HANDSHAKE, "token")?,
        };
        finish(&r, KIND_HANDSHAKE)?;
        Ok(v)
    }
}

/// The server's answer to [`Handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeReply {
    /// 0 = accepted, else a [`CloseReason`] code.
    pub status: u32,
    /// Server capability bits.
    pub caps: u64,
    /// Initial credit: async calls in flight.
    pub credit_calls: u32,
    /// Initial credit: async frame bytes in flight.
    pub credit_bytes: u32,
    /// Server-chosen session id (logging, reconnect).
    pub session_id: u64,
}

impl HandshakeReply {
    /// Appends the body encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.status.encode(out);
        self.caps.encode(out);
        self.credit_calls.encode(out);
        self.credit_bytes.encode(out);
        self.session_id.encode(out);
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// [`DecodeError`] on short or long bodies.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let k = KIND_HANDSHAKE_REPLY;
        let mut r = Reader::new(body);
        let v = Self {
            status: field(&mut r, k, "status")?,
            caps: field(&mut r, k, "caps")?,
            credit_calls: field(&mut r, k, "credit_calls")?,
            credit_bytes: field(&mut r, k, "credit_bytes")?,
            session_id: field(&mut r, k, "session_id")?,
        };
        finish(&r, k)?;
        Ok(v)
    }
}

/// Credit returned by the server for consumed async calls (incremental).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreditGrant {
    /// Async calls returned.
    pub calls: u32,
    /// Async frame bytes returned.
    pub bytes: u32,
}

impl CreditGrant {
    /// Encoded size in bytes.
    pub const BYTES: usize = 8;

    /// Appends the encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.calls.encode(out);
        self.bytes.encode(out);
    }

    /// Decodes from a reader (used both for credit frames and inside the
    /// reply prefix).
    ///
    /// # Errors
    /// [`FieldError`] when truncated.
    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, FieldError> {
        Ok(Self {
            calls: u32::decode(r)?,
            bytes: u32::decode(r)?,
        })
    }

    /// Decodes a whole credit-frame body.
    ///
    /// # Errors
    /// [`DecodeError`] on short or long bodies.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let v = Self::decode_from(&mut r).map_err(|source| DecodeError::Field {
            kind: KIND_CREDIT,
            field: "credit",
            source,
        })?;
        finish(&r, KIND_CREDIT)?;
        Ok(v)
    }
}

/// Orderly or error close, sent just before the sender stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// [`CloseReason`] code.
    pub reason: u32,
    /// Reason-specific detail (e.g. the expected sequence number).
    pub detail: u64,
}

impl Close {
    /// Appends the body encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.reason.encode(out);
        self.detail.encode(out);
    }

    /// Decodes a whole body.
    ///
    /// # Errors
    /// [`DecodeError`] on short or long bodies.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let v = Self {
            reason: field(&mut r, KIND_CLOSE, "reason")?,
            detail: field(&mut r, KIND_CLOSE, "detail")?,
        };
        finish(&r, KIND_CLOSE)?;
        Ok(v)
    }
}

/// Size of the prefix every reply body starts with: `status: u32` (0 or a
/// `CUresult`), then a piggybacked [`CreditGrant`].
pub const REPLY_PREFIX_BYTES: usize = 4 + CreditGrant::BYTES;

/// Splits a reply body into status, piggybacked credit and the reply
/// fields (present only when status is 0).
///
/// # Errors
/// [`DecodeError`] if the prefix is truncated, or an error status comes
/// with trailing bytes.
pub fn split_reply(kind: u16, body: &[u8]) -> Result<(u32, CreditGrant, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let status: u32 = field(&mut r, kind, "status")?;
    let credit = CreditGrant::decode_from(&mut r).map_err(|source| DecodeError::Field {
        kind,
        field: "credit",
        source,
    })?;
    let rest = r.take(r.remaining()).unwrap_or_default();
    if status != 0 && !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind,
            extra: rest.len(),
        });
    }
    Ok((status, credit, rest))
}
