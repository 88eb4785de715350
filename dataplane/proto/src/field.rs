//! Encoding and decoding of the field types a call table entry may use.
//!
//! Every field type implements [`Field`]: append-only encoding into a
//! `Vec<u8>` (no intermediate buffers) and borrowing decoding from a
//! [`Reader`] over the frame body. Variable-length fields carry a
//! length/count prefix that is checked against the type's compile-time bound
//! *before* the bytes are taken, and decoding never allocates: byte fields
//! and lists borrow from the body.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::FieldError;

/// Cursor over a frame body, handing out borrowed sub-slices.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `body`.
    #[must_use]
    pub const fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    /// Bytes not yet consumed.
    #[must_use]
    pub const fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    ///
    /// # Errors
    /// [`FieldError::Truncated`] if fewer than `n` remain.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FieldError> {
        if n > self.rest.len() {
            return Err(FieldError::Truncated {
                need: n,
                have: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    ///
    /// # Errors
    /// [`FieldError::Truncated`] if fewer than `N` remain.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FieldError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }
}

/// A type that can appear as a field in the call table.
pub trait Field<'a>: Sized {
    /// Appends the encoding of `self` to `out`. Call [`Field::check`]
    /// first: encoding a value over its bound yields a frame the peer
    /// rejects.
    fn encode(&self, out: &mut Vec<u8>);

    /// Checks the value against the type's bound (variable-length types);
    /// fixed-size types are always valid.
    ///
    /// # Errors
    /// [`FieldError::TooLong`] when over the bound.
    #[inline]
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// Decodes one value, borrowing from the body where possible.
    ///
    /// # Errors
    /// [`FieldError`] on truncation, bound violation or invalid tag.
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError>;

    /// Bytes this value announces as a *trailer*: sent on the byte stream
    /// right after the frame, outside it (see [`Payload::Trailing`]). Zero
    /// for every type except a trailing payload.
    #[inline]
    fn trailer_len(&self) -> u64 {
        0
    }

    /// Produces a random valid value (used by property tests and the sim).
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl<'a> Field<'a> for $t {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
            #[cfg(feature = "sim")]
            fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
                // Truncation intended: any bit pattern is a valid value.
                g.u64() as $t
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i32, i64);

impl<'a, const N: usize> Field<'a> for [u8; N] {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    #[inline]
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        r.array()
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        core::array::from_fn(|_| g.u64() as u8)
    }
}

impl<'a> Field<'a> for [u32; 3] {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            v.encode(out);
        }
    }
    #[inline]
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        Ok([u32::decode(r)?, u32::decode(r)?, u32::decode(r)?])
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        [g.u64() as u32, g.u64() as u32, g.u64() as u32]
    }
}

macro_rules! handle {
    ($($(#[doc = $doc:literal])* $name:ident;)*) => {$(
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u64);

        impl<'a> Field<'a> for $name {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out);
            }
            #[inline]
            fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
                u64::decode(r).map(Self)
            }
            #[cfg(feature = "sim")]
            fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
                Self(g.u64())
            }
        }
    )*};
}

handle! {
    /// A device pointer (`CUdeviceptr`) in the worker's address space.
    DevicePtr;
    /// A loaded module (`CUmodule`) as named by the worker.
    ModuleHandle;
    /// A kernel (`CUfunction`) as named by the worker.
    FunctionHandle;
    /// A stream (`CUstream`); 0 is the legacy default stream. Streams travel
    /// in the header's ordering key, not in bodies.
    StreamHandle;
    /// An event (`CUevent`) as named by the worker.
    EventHandle;
}

/// A variable-length byte field holding at most `MAX` bytes, encoded as a
/// `u32` length then the bytes. Decoding borrows from the frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blob<'a, const MAX: u32>(pub &'a [u8]);

impl<'a, const MAX: u32> Blob<'a, MAX> {
    /// The bound on the length.
    pub const MAX: u32 = MAX;
}

impl<'a, const MAX: u32> Field<'a> for Blob<'a, MAX> {
    #[inline]
    fn check(&self) -> Result<(), FieldError> {
        if self.0.len() > MAX as usize {
            return Err(FieldError::TooLong {
                len: self.0.len() as u64,
                max: MAX.into(),
            });
        }
        Ok(())
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.check().is_ok(), "blob over its bound");
        // Callers run `check` first (the client and server do), so the
        // length fits the bound and thus u32.
        (self.0.len() as u32).encode(out);
        out.extend_from_slice(self.0);
    }
    #[inline]
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let len = u32::decode(r)?;
        if len > MAX {
            return Err(FieldError::TooLong {
                len: len.into(),
                max: MAX.into(),
            });
        }
        r.take(len as usize).map(Self)
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        Self(g.bytes(MAX as usize))
    }
}

/// One kernel parameter in an argument layout: byte offset and size within
/// the packed parameter buffer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct ParamSlot {
    /// Byte offset of the parameter in the packed buffer.
    pub offset: U32,
    /// Size of the parameter in bytes.
    pub size: U32,
}

const _: () = assert!(core::mem::size_of::<ParamSlot>() == 8);

impl ParamSlot {
    /// Builds a slot from native integers.
    #[must_use]
    pub fn new(offset: u32, size: u32) -> Self {
        Self {
            offset: U32::new(offset),
            size: U32::new(size),
        }
    }
}

/// A list of at most `MAX` [`ParamSlot`]s, encoded as a `u16` count then the
/// slots. Decoding reinterprets the body bytes in place (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slots<'a, const MAX: u16>(pub &'a [ParamSlot]);

impl<'a, const MAX: u16> Field<'a> for Slots<'a, MAX> {
    #[inline]
    fn check(&self) -> Result<(), FieldError> {
        if self.0.len() > usize::from(MAX) {
            return Err(FieldError::TooLong {
                len: self.0.len() as u64,
                max: MAX.into(),
            });
        }
        Ok(())
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.check().is_ok(), "slot list over its bound");
        (self.0.len() as u16).encode(out);
        out.extend_from_slice(self.0.as_bytes());
    }
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let count = u16::decode(r)?;
        if count > MAX {
            return Err(FieldError::TooLong {
                len: count.into(),
                max: MAX.into(),
            });
        }
        let need = usize::from(count) * core::mem::size_of::<ParamSlot>();
        let bytes = r.take(need)?;
        // Cannot fail: `ParamSlot` is unaligned and `need` is a whole number
        // of slots; map defensively anyway instead of unwrapping.
        <[ParamSlot]>::ref_from_bytes(bytes)
            .map(Self)
            .map_err(|_| FieldError::Truncated {
                need,
                have: bytes.len(),
            })
    }
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        Self(g.slots(usize::from(MAX)))
    }
}

/// Where a memcpy's bytes travel: inline in the frame body, by reference
/// to a region of the shared arena both sides map, or streamed right after
/// the frame as a trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The bytes themselves, at most [`MAX_INLINE_BYTES`].
    Inline(&'a [u8]),
    /// A region of the shared arena.
    Arena {
        /// Byte offset in the arena.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The bytes follow the frame on the byte stream, outside any frame
    /// (not counted in the header's `body_len`), at most
    /// [`MAX_TRAILER_BYTES`]. Stream framing and sync calls only; requests
    /// only (see `docs/protocol.md`, "Trailers").
    Trailing {
        /// Trailer length in bytes.
        len: u64,
    },
}

/// Bound on inline payload bytes in one frame (64 MiB); the rest of
/// `MAX_BODY_BYTES` is slack for the call's other fields.
pub const MAX_INLINE_BYTES: u32 = 64 << 20;

/// Bound on the bytes of one trailer (1 GiB): the largest single transfer
/// a trailing payload may announce. Larger copies are split by the shim.
pub const MAX_TRAILER_BYTES: u64 = 1 << 30;

const PAYLOAD_TAG_INLINE: u8 = 0;
const PAYLOAD_TAG_ARENA: u8 = 1;
const PAYLOAD_TAG_TRAILING: u8 = 2;

impl<'a> Field<'a> for Payload<'a> {
    #[inline]
    fn check(&self) -> Result<(), FieldError> {
        match *self {
            Payload::Inline(b) => Blob::<MAX_INLINE_BYTES>(b).check(),
            Payload::Arena { .. } => Ok(()),
            Payload::Trailing { len } => check_trailer_len(len),
        }
    }
    #[inline]
    fn trailer_len(&self) -> u64 {
        match *self {
            Payload::Trailing { len } => len,
            _ => 0,
        }
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Payload::Inline(b) => {
                out.push(PAYLOAD_TAG_INLINE);
                Blob::<MAX_INLINE_BYTES>(b).encode(out);
            }
            Payload::Arena { offset, len } => {
                out.push(PAYLOAD_TAG_ARENA);
                offset.encode(out);
                len.encode(out);
            }
            Payload::Trailing { len } => {
                debug_assert!(check_trailer_len(len).is_ok(), "trailer over its bound");
                out.push(PAYLOAD_TAG_TRAILING);
                len.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        match u8::decode(r)? {
            PAYLOAD_TAG_INLINE => Ok(Payload::Inline(Blob::<MAX_INLINE_BYTES>::decode(r)?.0)),
            PAYLOAD_TAG_ARENA => Ok(Payload::Arena {
                offset: u64::decode(r)?,
                len: u64::decode(r)?,
            }),
            PAYLOAD_TAG_TRAILING => {
                let len = u64::decode(r)?;
                check_trailer_len(len)?;
                Ok(Payload::Trailing { len })
            }
            tag => Err(FieldError::BadTag { tag }),
        }
    }
    /// Never generates [`Payload::Trailing`]: a random call must be
    /// sendable without a trailer; trailer tests build theirs explicitly.
    #[cfg(feature = "sim")]
    fn generate(g: &mut crate::sim::Gen<'a>) -> Self {
        if g.u64().is_multiple_of(2) {
            Payload::Inline(g.bytes(MAX_INLINE_BYTES as usize))
        } else {
            Payload::Arena {
                offset: g.u64(),
                len: g.u64(),
            }
        }
    }
}

/// Checks a trailer length against [`MAX_TRAILER_BYTES`].
fn check_trailer_len(len: u64) -> Result<(), FieldError> {
    if len > MAX_TRAILER_BYTES {
        return Err(FieldError::TooLong {
            len,
            max: MAX_TRAILER_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_bound_checked_before_take() {
        let mut out = Vec::new();
        100u32.encode(&mut out); // claims 100 bytes, bound is 8
        out.extend_from_slice(&[0; 100]);
        let err = Blob::<8>::decode(&mut Reader::new(&out)).unwrap_err();
        assert_eq!(err, FieldError::TooLong { len: 100, max: 8 });
    }

    #[test]
    fn slots_borrow_and_round_trip() {
        let slots = [ParamSlot::new(0, 8), ParamSlot::new(8, 4)];
        let mut out = Vec::new();
        Slots::<4>(&slots).encode(&mut out);
        let got = Slots::<4>::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(got.0, &slots);
        let err = Slots::<1>::decode(&mut Reader::new(&out)).unwrap_err();
        assert_eq!(err, FieldError::TooLong { len: 2, max: 1 });
    }

    #[test]
    fn check_enforces_bounds_before_encoding() {
        assert!(Blob::<4>(&[0; 4]).check().is_ok());
        assert_eq!(
            Blob::<4>(&[0; 5]).check(),
            Err(FieldError::TooLong { len: 5, max: 4 })
        );
        let slots = [ParamSlot::default(); 3];
        assert!(Slots::<2>(&slots).check().is_err());
        assert!(Payload::Arena {
            offset: 0,
            len: u64::MAX
        }
        .check()
        .is_ok());
    }

    #[test]
    fn trailing_payload_round_trips_and_is_bounded() {
        let mut out = Vec::new();
        let p = Payload::Trailing { len: 1234 };
        p.encode(&mut out);
        assert_eq!(
            out.len(),
            9,
            "tag + u64 length; the bytes are not in the body"
        );
        assert_eq!(Payload::decode(&mut Reader::new(&out)), Ok(p));
        assert_eq!(p.trailer_len(), 1234);
        assert_eq!(Payload::Inline(&[1, 2]).trailer_len(), 0);
        let over = Payload::Trailing {
            len: MAX_TRAILER_BYTES + 1,
        };
        assert!(over.check().is_err());
        let mut lie = vec![PAYLOAD_TAG_TRAILING];
        u64::MAX.encode(&mut lie);
        assert_eq!(
            Payload::decode(&mut Reader::new(&lie)),
            Err(FieldError::TooLong {
                len: u64::MAX,
                max: MAX_TRAILER_BYTES
            })
        );
    }

    #[test]
    fn payload_bad_tag() {
        let err = Payload::decode(&mut Reader::new(&[7])).unwrap_err();
        assert_eq!(err, FieldError::BadTag { tag: 7 });
    }
}
