//! The shm handshake messages exchanged over the Unix socket.
//!
//! Exists so the (tiny) set-up wire format and its validation live apart
//! from socket handling. The client sends [`Hello`] with the memfd attached;
//! the server answers with [`Ack`]. Everything decoded here is peer input.

use crate::error::{Result, TransportError};

/// Identifies an rgpu shm hello ("RGSH").
pub const HELLO_MAGIC: u32 = 0x5247_5348;
/// Handshake version.
pub const HELLO_VERSION: u32 = 1;
/// Encoded size of [`Hello`].
pub(crate) const HELLO_BYTES: usize = 32;
/// Encoded size of [`Ack`].
pub(crate) const ACK_BYTES: usize = 12;

/// Client → server: the sizes the segment was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    /// Bytes of each ring.
    pub ring_bytes: u64,
    /// Largest record.
    pub max_record_bytes: u64,
    /// Bytes of the arena.
    pub arena_bytes: u64,
}

/// Server → client: accepted or refused (with an errno-like code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    /// 0 when accepted.
    pub status: u32,
}

/// Ack status: accepted.
pub(crate) const ACK_OK: u32 = 0;
/// Ack status: the sizes exceed the server's bounds or do not match the segment.
pub(crate) const ACK_REFUSED: u32 = 1;

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[0..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&HELLO_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.ring_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_record_bytes.to_le_bytes());
        out[24..32].copy_from_slice(&self.arena_bytes.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |detail: String| TransportError::PeerViolation {
            op: "shm hello",
            detail,
        };
        if bytes.len() != HELLO_BYTES {
            return Err(bad(format!(
                "hello is {} bytes, want {HELLO_BYTES}",
                bytes.len()
            )));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let dword = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if word(0) != HELLO_MAGIC {
            return Err(bad(format!("bad magic {:#x}", word(0))));
        }
        if word(4) != HELLO_VERSION {
            return Err(bad(format!(
                "version {} unsupported (want {HELLO_VERSION})",
                word(4)
            )));
        }
        Ok(Self {
            ring_bytes: dword(8),
            max_record_bytes: dword(16),
            arena_bytes: dword(24),
        })
    }
}

impl Ack {
    pub(crate) fn encode(&self) -> [u8; ACK_BYTES] {
        let mut out = [0u8; ACK_BYTES];
        out[0..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&HELLO_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.status.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |detail: String| TransportError::PeerViolation {
            op: "shm ack",
            detail,
        };
        if bytes.len() != ACK_BYTES {
            return Err(bad(format!(
                "ack is {} bytes, want {ACK_BYTES}",
                bytes.len()
            )));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) != HELLO_MAGIC || word(4) != HELLO_VERSION {
            return Err(bad("bad magic or version".into()));
        }
        Ok(Self { status: word(8) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let h = Hello {
            ring_bytes: 1 << 20,
            max_record_bytes: 4096,
            arena_bytes: 1 << 26,
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let a = Ack {
            status: ACK_REFUSED,
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn malformed_hellos_are_violations() {
        let good = Hello {
            ring_bytes: 1,
            max_record_bytes: 2,
            arena_bytes: 3,
        }
        .encode();
        assert!(Hello::decode(&good[..31]).is_err());
        let mut bad_magic = good;
        bad_magic[0] ^= 1;
        assert!(Hello::decode(&bad_magic).is_err());
        let mut bad_version = good;
        bad_version[4] = 9;
        let err = Hello::decode(&bad_version).unwrap_err();
        assert!(matches!(err, TransportError::PeerViolation { .. }), "{err}");
        assert!(Ack::decode(&[0u8; ACK_BYTES]).is_err());
    }
}
