//! The fixed 32-byte frame header.
//!
//! Every frame on every transport starts with this header, so a stream
//! transport can find frame boundaries and a message transport can carry many
//! frames per batch. The layout is `#[repr(C)]` with zerocopy's unaligned
//! little-endian integer types: no padding, no alignment requirement, and
//! the byte order is explicit in the type, so parsing is a bounds-checked
//! reinterpretation rather than field-by-field shuffling.
//!
//! Validation (magic, version, flags, reserved word, body bound) happens here,
//! before anything is allocated for the body.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::HeaderError;

/// Frame magic: the ASCII bytes `RGPU` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RGPU");

/// The wire version this crate speaks. Peers must match exactly.
pub const WIRE_VERSION: u8 = 1;

/// Size of [`RawHeader`] in bytes.
pub const HEADER_BYTES: usize = 32;

/// Largest body a frame may carry: 64 MiB of inline bulk data plus 4 KiB of
/// slack for the call's own fields. Bigger transfers go by arena reference
/// or in several calls. A header claiming more is rejected before any
/// allocation.
pub const MAX_BODY_BYTES: u32 = (64 << 20) + 4096;

/// Largest whole frame (header plus body).
pub const MAX_FRAME_BYTES: usize = HEADER_BYTES + MAX_BODY_BYTES as usize;

/// Frame flag: this frame is the reply to the request whose sequence number
/// is in [`Header::key`]; [`Header::kind`] is that request's call code.
pub const FLAG_REPLY: u8 = 0x01;

/// All flag bits defined by [`WIRE_VERSION`]; any other bit is an error.
pub const FLAGS_KNOWN: u8 = FLAG_REPLY;

/// The header as laid out on the wire (all integers little-endian).
///
/// | offset | size | field      |
/// |-------:|-----:|------------|
/// | 0      | 4    | `magic`    |
/// | 4      | 1    | `version`  |
/// | 5      | 1    | `flags`    |
/// | 6      | 2    | `kind`     |
/// | 8      | 8    | `seq`      |
/// | 16     | 8    | `key`      |
/// | 24     | 4    | `body_len` |
/// | 28     | 4    | `reserved` |
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    /// Always [`MAGIC`].
    pub magic: U32,
    /// Always [`WIRE_VERSION`].
    pub version: u8,
    /// Bit set of `FLAG_*` values.
    pub flags: u8,
    /// Control-frame kind or call code.
    pub kind: U16,
    /// Per-direction sequence number, starting at 0, +1 per frame.
    pub seq: U64,
    /// Ordering key: stream handle for requests, answered seq for replies.
    pub key: U64,
    /// Number of body bytes following the header.
    pub body_len: U32,
    /// Must be zero (reserved for a header checksum or future fields).
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<RawHeader>() == HEADER_BYTES);
const _: () = assert!(core::mem::align_of::<RawHeader>() == 1);
const _: () = assert!(MAX_BODY_BYTES as usize <= u32::MAX as usize);

/// A validated frame header in native types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Control-frame kind or call code.
    pub kind: u16,
    /// Bit set of `FLAG_*` values (only known bits).
    pub flags: u8,
    /// Per-direction sequence number.
    pub seq: u64,
    /// Stream handle (requests) or answered sequence number (replies).
    pub key: u64,
    /// Body length in bytes, at most [`MAX_BODY_BYTES`].
    pub body_len: u32,
}

impl Header {
    /// Whether [`FLAG_REPLY`] is set.
    #[must_use]
    pub const fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// Serializes into exactly [`HEADER_BYTES`] bytes.
    #[inline]
    pub fn write(&self, out: &mut [u8; HEADER_BYTES]) {
        debug_assert!(self.body_len <= MAX_BODY_BYTES);
        debug_assert_eq!(self.flags & !FLAGS_KNOWN, 0);
        let raw = RawHeader {
            magic: U32::new(MAGIC),
            version: WIRE_VERSION,
            flags: self.flags,
            kind: U16::new(self.kind),
            seq: U64::new(self.seq),
            key: U64::new(self.key),
            body_len: U32::new(self.body_len),
            reserved: U32::ZERO,
        };
        out.copy_from_slice(raw.as_bytes());
    }

    /// Parses and validates the first [`HEADER_BYTES`] of `bytes`.
    ///
    /// # Errors
    /// [`HeaderError`] when the input is short or any field is invalid.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let (raw, _) = RawHeader::ref_from_prefix(bytes)
            .map_err(|_| HeaderError::Short { have: bytes.len() })?;
        if raw.magic.get() != MAGIC {
            return Err(HeaderError::BadMagic {
                got: raw.magic.get(),
            });
        }
        if raw.version != WIRE_VERSION {
            return Err(HeaderError::BadVersion {
                got: raw.version,
                want: WIRE_VERSION,
            });
        }
        if raw.flags & !FLAGS_KNOWN != 0 {
            return Err(HeaderError::UnknownFlags { flags: raw.flags });
        }
        if raw.reserved.get() != 0 {
            return Err(HeaderError::ReservedNonZero {
                value: raw.reserved.get(),
            });
        }
        let body_len = raw.body_len.get();
        if body_len > MAX_BODY_BYTES {
            return Err(HeaderError::BodyTooLarge {
                len: body_len,
                max: MAX_BODY_BYTES,
            });
        }
        Ok(Self {
            kind: raw.kind.get(),
            flags: raw.flags,
            seq: raw.seq.get(),
            key: raw.key.get(),
            body_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            kind: 0x0101,
            flags: FLAG_REPLY,
            seq: 7,
            key: 0xdead_beef,
            body_len: 12,
        }
    }

    #[test]
    fn round_trip_and_offsets() {
        let mut b = [0u8; HEADER_BYTES];
        sample().write(&mut b);
        assert_eq!(&b[0..4], b"RGPU");
        assert_eq!(b[4], WIRE_VERSION);
        assert_eq!(b[5], FLAG_REPLY);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 0x0101);
        assert_eq!(b[8], 7);
        assert_eq!(b[24], 12);
        assert_eq!(Header::parse(&b).unwrap(), sample());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = [0u8; HEADER_BYTES];
        sample().write(&mut b);
        let mut m = b;
        m[0] ^= 1;
        assert!(matches!(
            Header::parse(&m),
            Err(HeaderError::BadMagic { .. })
        ));
        let mut v = b;
        v[4] = 9;
        assert!(matches!(
            Header::parse(&v),
            Err(HeaderError::BadVersion { got: 9, .. })
        ));
        let mut f = b;
        f[5] = 0x80;
        assert!(matches!(
            Header::parse(&f),
            Err(HeaderError::UnknownFlags { .. })
        ));
        let mut r = b;
        r[31] = 1;
        assert!(matches!(
            Header::parse(&r),
            Err(HeaderError::ReservedNonZero { .. })
        ));
        let mut l = b;
        l[24..28].copy_from_slice(&(MAX_BODY_BYTES + 1).to_le_bytes());
        assert!(matches!(
            Header::parse(&l),
            Err(HeaderError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            Header::parse(&b[..31]),
            Err(HeaderError::Short { have: 31 })
        ));
    }
}
