//! The byte format of frames and records inside a ring (pure arithmetic).
//!
//! A *frame* is one reservation: a 16-byte header followed by a body. The
//! header's first word is the commit stamp (written last, with Release), the
//! second the meta word. A records frame's body is a sequence of records,
//! each an 8-byte length word followed by the payload padded to 8 bytes. A
//! padding frame fills the tail of the buffer when the next frame would not
//! fit before the end (frames never wrap), or replaces an abandoned
//! reservation.
//!
//! ```text
//!  frame:  | stamp u64 | meta u64 | rec0 | rec1 | ... | pad to 16 |
//!  meta:   bits 0..32 body length, 32..48 record count, 56..64 kind
//!  record: | len u64 (upper 32 bits zero) | payload | pad to 8 |
//! ```

/// Bytes of a frame header (stamp word + meta word).
pub const FRAME_HEADER_BYTES: usize = 16;
/// Frames start and end on this boundary, so a padding frame always has room
/// for its header.
pub const FRAME_ALIGN_BYTES: usize = 16;
/// Bytes of a record's length word.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Records start on this boundary.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Most records one batch (frame) may carry; also fits the 16-bit count field.
pub const BATCH_RECORDS_MAX: usize = 4096;

const _: () = assert!(BATCH_RECORDS_MAX <= u16::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// Kind tag of a frame carrying records.
pub(crate) const KIND_RECORDS: u64 = 1;
/// Kind tag of a padding frame (skipped by the consumer).
pub(crate) const KIND_PADDING: u64 = 2;

/// Rounds `n` up to a multiple of `align` (a power of two).
#[inline]
pub(crate) const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// Encoded size of one record with a payload of `len` bytes.
#[inline]
pub(crate) const fn record_bytes(len: usize) -> usize {
    RECORD_HEADER_BYTES + align_up(len, RECORD_ALIGN_BYTES)
}

/// Size of a whole frame whose body is `body_bytes` long.
#[inline]
pub(crate) const fn frame_bytes(body_bytes: usize) -> usize {
    align_up(FRAME_HEADER_BYTES + body_bytes, FRAME_ALIGN_BYTES)
}

/// Packs a meta word.
#[inline]
pub(crate) fn meta(kind: u64, body_bytes: usize, records: usize) -> u64 {
    debug_assert!(body_bytes <= u32::MAX as usize && records <= BATCH_RECORDS_MAX);
    (kind << 56) | ((records as u64) << 32) | body_bytes as u64
}

/// A decoded meta word (fields not yet validated against the ring bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) kind: u64,
    pub(crate) body_bytes: usize,
    pub(crate) records: usize,
}

/// Splits a meta word into its fields; `None` when reserved bits are set.
#[inline]
pub(crate) fn unpack_meta(word: u64) -> Option<Meta> {
    if word & 0x00ff_0000_0000_0000 != 0 {
        return None;
    }
    Some(Meta {
        kind: word >> 56,
        body_bytes: (word & 0xffff_ffff) as usize,
        records: ((word >> 32) & 0xffff) as usize,
    })
}

/// The commit stamp for a frame starting at absolute `position`.
///
/// Salting with a per-ring random value makes it vanishingly unlikely
/// (2^-64 per word) that stale payload bytes from an earlier lap look like a
/// valid stamp, without zeroing consumed space.
#[inline]
pub(crate) const fn stamp(position: u64, salt: u64) -> u64 {
    position ^ salt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let w = meta(KIND_RECORDS, 4624, 64);
        assert_eq!(
            unpack_meta(w),
            Some(Meta {
                kind: KIND_RECORDS,
                body_bytes: 4624,
                records: 64
            })
        );
        assert_eq!(unpack_meta(w | (1 << 50)), None);
    }

    #[test]
    fn sizes_are_aligned() {
        assert_eq!(record_bytes(0), 8);
        assert_eq!(record_bytes(1), 16);
        assert_eq!(record_bytes(64), 72);
        assert_eq!(frame_bytes(record_bytes(64)), 96);
        assert_eq!(frame_bytes(0), 16);
    }
}
