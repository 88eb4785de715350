//! The shm transport's own record conventions inside the rings.
//!
//! Exists because the rings carry opaque protocol bytes *and* a few
//! transport-level controls (arena references, slab releases, close). A data
//! record is any non-empty record, pushed as-is (no header, no copy). An empty
//! record is an *escape*: the record right after it, in the same frame, is a
//! fixed-size control record decoded here. Everything decoded is peer input.

use rgpu_ring::Slab;

/// Encoded size of a control record.
pub(crate) const CONTROL_BYTES: usize = 32;

/// The escape marker: an empty record.
pub(crate) const ESCAPE: &[u8] = &[];

const KIND_BULK: u32 = 1;
const KIND_RELEASE: u32 = 2;
const KIND_CLOSE: u32 = 3;

/// A transport control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// The next `used` stream bytes are the first bytes of arena `slab`;
    /// ownership of the slab passes to the receiver until it sends `Release`.
    Bulk {
        /// The slab (as allocated).
        slab: Slab,
        /// Bytes of the slab carrying stream data.
        used: u64,
    },
    /// The receiver of a `Bulk` is done with the slab.
    Release {
        /// The slab being returned.
        slab: Slab,
    },
    /// The sender closed its transport (orderly shutdown).
    Close,
}

impl Control {
    /// Encodes into the fixed layout `kind u32 | 0 u32 | offset u64 | len u64 | used u64`.
    pub(crate) fn encode(&self) -> [u8; CONTROL_BYTES] {
        let (kind, slab, used) = match *self {
            Self::Bulk { slab, used } => (KIND_BULK, slab, used),
            Self::Release { slab } => (KIND_RELEASE, slab, 0),
            Self::Close => (KIND_CLOSE, Slab { offset: 0, len: 0 }, 0),
        };
        let mut out = [0u8; CONTROL_BYTES];
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        out[8..16].copy_from_slice(&slab.offset.to_le_bytes());
        out[16..24].copy_from_slice(&slab.len.to_le_bytes());
        out[24..32].copy_from_slice(&used.to_le_bytes());
        out
    }

    /// Decodes a control record; `Err` describes what is wrong.
    pub(crate) fn decode(rec: &[u8]) -> Result<Self, String> {
        if rec.len() != CONTROL_BYTES {
            return Err(format!(
                "control record of {} bytes, want {CONTROL_BYTES}",
                rec.len()
            ));
        }
        let dword = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let kind = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let slab = Slab {
            offset: dword(8),
            len: dword(16),
        };
        let used = dword(24);
        match kind {
            KIND_BULK if used <= slab.len => Ok(Self::Bulk { slab, used }),
            KIND_BULK => Err(format!(
                "bulk uses {used} bytes of a {}-byte slab",
                slab.len
            )),
            KIND_RELEASE => Ok(Self::Release { slab }),
            KIND_CLOSE => Ok(Self::Close),
            other => Err(format!("unknown control kind {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_round_trip() {
        let slab = Slab {
            offset: 8192,
            len: 4096,
        };
        for c in [
            Control::Bulk { slab, used: 100 },
            Control::Release { slab },
            Control::Close,
        ] {
            assert_eq!(Control::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn malformed_controls_are_rejected() {
        let slab = Slab {
            offset: 0,
            len: 4096,
        };
        let mut overused = Control::Bulk { slab, used: 0 }.encode();
        overused[24..32].copy_from_slice(&5000u64.to_le_bytes());
        assert!(Control::decode(&overused).is_err());
        let mut unknown = Control::Close.encode();
        unknown[0] = 99;
        assert!(Control::decode(&unknown).is_err());
        assert!(Control::decode(&[0u8; 7]).is_err());
    }
}
