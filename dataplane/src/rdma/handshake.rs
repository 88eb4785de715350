//! The connection set-up message exchanged over the TCP control connection.
//!
//! Exists to keep the wire format of the one-time exchange (QPN, PSN, GID,
//! LID, MTU, rkey and the addresses of the receive slots, ring and credit
//! words) in one place, with validation of everything the peer claims.

use crate::error::{Result, TransportError};

use super::config::{HOST_REGION_BYTES_MAX, RING_BYTES_MAX, SLOT_BYTES_MAX, SLOT_COUNT_MAX};

/// Magic of the authentication message the connecting side sends first.
pub(crate) const AUTH_MAGIC: [u8; 8] = *b"RGPUAUTH";
/// Encoded size of the authentication message: magic, then the 32-byte token.
pub(crate) const AUTH_BYTES: usize = 40;
/// The accepting side's answer: token accepted, hellos follow.
pub(crate) const AUTH_OK: u8 = 0xa1;
/// The accepting side's answer: token refused; it closes the connection.
pub(crate) const AUTH_REFUSED: u8 = 0xa0;

/// Encodes the authentication message for `token`.
pub(crate) fn encode_auth(token: &[u8; 32]) -> [u8; AUTH_BYTES] {
    let mut b = [0u8; AUTH_BYTES];
    b[..8].copy_from_slice(&AUTH_MAGIC);
    b[8..].copy_from_slice(token);
    b
}

/// Splits a received authentication message into its token, checking the magic.
pub(crate) fn decode_auth(b: &[u8; AUTH_BYTES]) -> Result<[u8; 32]> {
    if b[..8] != AUTH_MAGIC {
        return Err(TransportError::PeerViolation {
            op: "RDMA authentication",
            detail: "bad magic (not an rgpu RDMA peer)".into(),
        });
    }
    let mut token = [0u8; 32];
    token.copy_from_slice(&b[8..]);
    Ok(token)
}

/// Magic at the start of every hello.
pub(crate) const MAGIC: [u8; 8] = *b"RGPURDMA";
/// Wire version; bumped on any layout change.
pub(crate) const VERSION: u32 = 2;
/// Encoded size of a [`Hello`].
pub(crate) const HELLO_BYTES: usize = 128;
/// Most RDMA READs one side lets the other have in flight (responder resources).
pub(crate) const RD_ATOMIC_MAX: u32 = 16;

/// What each side tells the other before the QPs connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    /// `ibv_mtu` enum value of the sender's active MTU.
    pub mtu: u8,
    pub gid: [u8; 16],
    /// rkey of the region holding credit words, slots and ring.
    pub rkey: u32,
    /// Address of the two credit words the peer RDMA-WRITEs.
    pub credit_addr: u64,
    /// Address of the bulk ring.
    pub ring_addr: u64,
    pub ring_bytes: u64,
    pub slot_count: u32,
    pub slot_bytes: u32,
    /// Largest message the port carries.
    pub max_msg_bytes: u32,
    /// RDMA READs the sender's QP accepts in flight (0: none).
    pub rd_atom: u32,
    /// The sender's pinned host region the peer may RDMA READ and WRITE:
    /// address, length (0: none) and rkey.
    pub host_addr: u64,
    /// Length of the host region in bytes (0: no region).
    pub host_bytes: u64,
    /// rkey of the host region.
    pub host_rkey: u32,
}

impl Hello {
    /// Encodes into the fixed little-endian layout.
    pub(crate) fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.qpn.to_le_bytes());
        b[16..20].copy_from_slice(&self.psn.to_le_bytes());
        b[20..22].copy_from_slice(&self.lid.to_le_bytes());
        b[22] = self.mtu;
        b[24..40].copy_from_slice(&self.gid);
        b[40..44].copy_from_slice(&self.rkey.to_le_bytes());
        b[44..48].copy_from_slice(&self.slot_count.to_le_bytes());
        b[48..56].copy_from_slice(&self.credit_addr.to_le_bytes());
        b[56..64].copy_from_slice(&self.ring_addr.to_le_bytes());
        b[64..72].copy_from_slice(&self.ring_bytes.to_le_bytes());
        b[72..76].copy_from_slice(&self.slot_bytes.to_le_bytes());
        b[76..80].copy_from_slice(&self.max_msg_bytes.to_le_bytes());
        b[80..84].copy_from_slice(&self.rd_atom.to_le_bytes());
        b[84..88].copy_from_slice(&self.host_rkey.to_le_bytes());
        b[88..96].copy_from_slice(&self.host_addr.to_le_bytes());
        b[96..104].copy_from_slice(&self.host_bytes.to_le_bytes());
        b
    }

    /// Decodes and validates a peer's hello.
    pub(crate) fn decode(b: &[u8; HELLO_BYTES]) -> Result<Self> {
        let bad = |detail: String| TransportError::PeerViolation {
            op: "RDMA handshake",
            detail,
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        if b[0..8] != MAGIC {
            return Err(bad("bad magic (not an rgpu RDMA peer)".into()));
        }
        if u32_at(8) != VERSION {
            return Err(bad(format!("version {} (want {VERSION})", u32_at(8))));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[24..40]);
        let h = Self {
            qpn: u32_at(12),
            psn: u32_at(16),
            lid: u16::from_le_bytes([b[20], b[21]]),
            mtu: b[22],
            gid,
            rkey: u32_at(40),
            slot_count: u32_at(44),
            credit_addr: u64_at(48),
            ring_addr: u64_at(56),
            ring_bytes: u64_at(64),
            slot_bytes: u32_at(72),
            max_msg_bytes: u32_at(76),
            rd_atom: u32_at(80),
            host_rkey: u32_at(84),
            host_addr: u64_at(88),
            host_bytes: u64_at(96),
        };
        if h.qpn >= 1 << 24 || h.psn >= 1 << 24 {
            return Err(bad(format!("qpn {} / psn {} beyond 24 bits", h.qpn, h.psn)));
        }
        if !(1..=5).contains(&h.mtu) {
            return Err(bad(format!("mtu enum {}", h.mtu)));
        }
        if h.slot_count == 0 || h.slot_count > SLOT_COUNT_MAX {
            return Err(bad(format!("slot_count {}", h.slot_count)));
        }
        if h.slot_bytes == 0 || h.slot_bytes as usize > SLOT_BYTES_MAX {
            return Err(bad(format!("slot_bytes {}", h.slot_bytes)));
        }
        if h.ring_bytes < 4096 || h.ring_bytes > RING_BYTES_MAX as u64 {
            return Err(bad(format!("ring_bytes {}", h.ring_bytes)));
        }
        if h.max_msg_bytes == 0 {
            return Err(bad("max_msg_bytes 0".into()));
        }
        if h.rd_atom > RD_ATOMIC_MAX {
            return Err(bad(format!("rd_atom {}", h.rd_atom)));
        }
        if h.host_bytes > HOST_REGION_BYTES_MAX as u64
            || h.host_addr.checked_add(h.host_bytes).is_none()
        {
            return Err(bad(format!(
                "host region of {} bytes at {:#x}",
                h.host_bytes, h.host_addr
            )));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_message_round_trips_and_rejects_foreign_magic() {
        let token = [7u8; 32];
        let b = encode_auth(&token);
        assert_eq!(decode_auth(&b).unwrap(), token);
        let mut bad = b;
        bad[0] ^= 1;
        assert!(matches!(
            decode_auth(&bad),
            Err(TransportError::PeerViolation { .. })
        ));
    }

    fn sample() -> Hello {
        Hello {
            qpn: 17,
            psn: 0x12_3456,
            lid: 0,
            mtu: 3,
            gid: [7; 16],
            rkey: 0xdead,
            credit_addr: 0x1000,
            ring_addr: 0x20_0000,
            ring_bytes: 4 << 20,
            slot_count: 64,
            slot_bytes: 16 << 10,
            max_msg_bytes: 8 << 20,
            rd_atom: 4,
            host_addr: 0x7f00_0000_0000,
            host_bytes: 256 << 20,
            host_rkey: 0xbeef,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = sample().encode();
        b[0] = b'X';
        assert!(Hello::decode(&b).is_err());
        for bad in [
            Hello {
                psn: 1 << 24,
                ..sample()
            },
            Hello { mtu: 9, ..sample() },
            Hello {
                slot_count: 0,
                ..sample()
            },
            Hello {
                ring_bytes: 1,
                ..sample()
            },
            Hello {
                slot_bytes: (SLOT_BYTES_MAX + 1) as u32,
                ..sample()
            },
            Hello {
                rd_atom: RD_ATOMIC_MAX + 1,
                ..sample()
            },
            Hello {
                host_bytes: HOST_REGION_BYTES_MAX as u64 + 1,
                ..sample()
            },
            Hello {
                host_addr: u64::MAX - 10,
                ..sample()
            },
        ] {
            assert!(matches!(
                Hello::decode(&bad.encode()),
                Err(TransportError::PeerViolation { .. })
            ));
        }
    }
}
