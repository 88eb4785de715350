//! The shared segment: one sealed memfd with a control block, two rings and
//! the bulk arena.
//!
//! ```text
//! 0        4096             4096+512          8192          8192+R        8192+2R      +A
//! | header | c2s RingControl | s2c RingControl | c2s data (R) | s2c data (R) | arena (A) |
//! ```
//!
//! The creator (client) builds it, seals it against shrinking and growing
//! (so the peer can never make our accesses fault with SIGBUS), and passes
//! the fd to the server. [`Segment::attach`] treats the fd as hostile input:
//! it bounds the size, requires the seals, and recomputes the whole layout
//! from the header's sizes, rejecting any mismatch.

use crate::arena::{Arena, ARENA_BYTES_MAX, ARENA_SLAB_BYTES_MIN};
use crate::consumer::Consumer;
use crate::control::RING_CONTROL_BYTES;
use crate::error::SegmentError;
use crate::producer::Producer;
use crate::shared::{max_record_bound, RingShared, RING_BYTES_MAX};
use crate::shm::{Mapping, ShmRing};
use rustix::fs::{
    fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Magic at offset 0 of every segment: `"RGPUSEG1"` little-endian.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"RGPUSEG1");
/// Layout version this build creates and accepts.
pub const SEGMENT_VERSION: u32 = 1;
/// Largest segment we create or attach (64 GiB): bounds what a peer can make us map.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 36;
/// Smallest ring data area inside a segment (one page).
pub const SEGMENT_RING_BYTES_MIN: usize = 4096;
/// Bytes reserved for the header page.
const HEADER_BYTES: usize = 4096;
/// Where ring data starts: after the header page and the control-block page.
const DATA_OFFSET: usize = 2 * 4096;

const _: () = assert!(2 * RING_CONTROL_BYTES <= 4096);
const _: () = assert!(HEADER_FIELDS * 8 <= HEADER_BYTES);

/// Sizes of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Data bytes of each of the two rings: a power of two in
    /// [[`SEGMENT_RING_BYTES_MIN`], [`RING_BYTES_MAX`]].
    pub ring_bytes: usize,
    /// Largest record payload: `1..=max_record_bound(ring_bytes)`.
    pub max_record_bytes: usize,
    /// Arena bytes: 0, or a power of two in [[`ARENA_SLAB_BYTES_MIN`], 16 GiB].
    pub arena_bytes: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            ring_bytes: 1 << 20,
            max_record_bytes: 64 << 10,
            arena_bytes: 64 << 20,
        }
    }
}

impl SegmentConfig {
    /// Checks every documented bound.
    ///
    /// # Errors
    /// [`SegmentError::Config`] naming the broken bound.
    pub fn validate(&self) -> Result<(), SegmentError> {
        let bad = |reason: String| Err(SegmentError::Config { reason });
        if !self.ring_bytes.is_power_of_two()
            || !(SEGMENT_RING_BYTES_MIN..=RING_BYTES_MAX).contains(&self.ring_bytes)
        {
            return bad(format!(
                "ring_bytes {} not a power of two in [{SEGMENT_RING_BYTES_MIN}, {RING_BYTES_MAX}]",
                self.ring_bytes
            ));
        }
        let bound = max_record_bound(self.ring_bytes);
        if self.max_record_bytes == 0 || self.max_record_bytes > bound {
            return bad(format!(
                "max_record_bytes {} not in [1, {bound}]",
                self.max_record_bytes
            ));
        }
        if self.arena_bytes != 0
            && (!self.arena_bytes.is_power_of_two()
                || !(ARENA_SLAB_BYTES_MIN..=ARENA_BYTES_MAX).contains(&self.arena_bytes))
        {
            return bad(format!(
                "arena_bytes {} not 0 or a power of two in [{ARENA_SLAB_BYTES_MIN}, {ARENA_BYTES_MAX}]",
                self.arena_bytes
            ));
        }
        Ok(())
    }
}

/// Byte offsets of a segment's parts, derived from a validated config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Client→server ring control block.
    pub c2s_control: usize,
    /// Server→client ring control block.
    pub s2c_control: usize,
    /// Client→server ring data.
    pub c2s_data: usize,
    /// Server→client ring data.
    pub s2c_data: usize,
    /// Arena start.
    pub arena: usize,
    /// Total segment size.
    pub total: usize,
}

impl SegmentLayout {
    fn compute(config: &SegmentConfig) -> Self {
        let ring = config.ring_bytes;
        Self {
            c2s_control: HEADER_BYTES,
            s2c_control: HEADER_BYTES + RING_CONTROL_BYTES,
            c2s_data: DATA_OFFSET,
            s2c_data: DATA_OFFSET + ring,
            arena: DATA_OFFSET + 2 * ring,
            total: DATA_OFFSET + 2 * ring + config.arena_bytes,
        }
    }
}

/// Which end of the segment this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Produces into client→server, consumes server→client.
    Client,
    /// Produces into server→client, consumes client→server.
    Server,
}

/// Number of u64 fields in the header.
const HEADER_FIELDS: usize = 13;

/// The header page, (de)serialised field by field (native endian: both
/// processes share a machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    magic: u64,
    version: u64,
    total_bytes: u64,
    ring_bytes: u64,
    max_record_bytes: u64,
    arena_bytes: u64,
    c2s_control: u64,
    s2c_control: u64,
    c2s_data: u64,
    s2c_data: u64,
    arena: u64,
    c2s_salt: u64,
    s2c_salt: u64,
}

impl Header {
    fn fields(&self) -> [u64; HEADER_FIELDS] {
        [
            self.magic,
            self.version,
            self.total_bytes,
            self.ring_bytes,
            self.max_record_bytes,
            self.arena_bytes,
            self.c2s_control,
            self.s2c_control,
            self.c2s_data,
            self.s2c_data,
            self.arena,
            self.c2s_salt,
            self.s2c_salt,
        ]
    }

    fn encode(&self, out: &mut [u8]) {
        for (chunk, v) in out.chunks_exact_mut(8).zip(self.fields()) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut f = [0u64; HEADER_FIELDS];
        for (v, chunk) in f.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *v = u64::from_ne_bytes(b);
        }
        let [magic, version, total_bytes, ring_bytes, max_record_bytes, arena_bytes, c2s_control, s2c_control, c2s_data, s2c_data, arena, c2s_salt, s2c_salt] =
            f;
        Self {
            magic,
            version,
            total_bytes,
            ring_bytes,
            max_record_bytes,
            arena_bytes,
            c2s_control,
            s2c_control,
            c2s_data,
            s2c_data,
            arena,
            c2s_salt,
            s2c_salt,
        }
    }

    fn new(config: &SegmentConfig, layout: &SegmentLayout) -> Self {
        Self {
            magic: SEGMENT_MAGIC,
            version: u64::from(SEGMENT_VERSION),
            total_bytes: layout.total as u64,
            ring_bytes: config.ring_bytes as u64,
            max_record_bytes: config.max_record_bytes as u64,
            arena_bytes: config.arena_bytes as u64,
            c2s_control: layout.c2s_control as u64,
            s2c_control: layout.s2c_control as u64,
            c2s_data: layout.c2s_data as u64,
            s2c_data: layout.s2c_data as u64,
            arena: layout.arena as u64,
            c2s_salt: crate::random_salt(),
            s2c_salt: crate::random_salt().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// A mapped shared segment (see the module docs for the layout).
#[derive(Debug)]
pub struct Segment {
    mapping: Arc<Mapping>,
    base: NonNull<u8>,
    header: Header,
    config: SegmentConfig,
    layout: SegmentLayout,
    arena: Arena,
    split_taken: AtomicBool,
}

// SAFETY: `base` points into `mapping`, which the segment owns (via Arc);
// all shared-memory access goes through the ring protocol (atomics) or the
// `Arena` borrow rules, so the handle may move and be shared across threads.
unsafe impl Send for Segment {}
// SAFETY: see `Send`; `&Segment` only exposes `&Arena` and thread-safe `split`.
unsafe impl Sync for Segment {}

fn to_usize(v: u64, field: &'static str) -> Result<usize, SegmentError> {
    usize::try_from(v).map_err(|_| SegmentError::Config {
        reason: format!("{field} {v} does not fit usize"),
    })
}

impl Segment {
    /// Creates, sizes, seals and maps a fresh memfd segment.
    ///
    /// # Errors
    /// [`SegmentError::Config`], [`SegmentError::MemfdCreate`],
    /// [`SegmentError::Resize`], [`SegmentError::Map`].
    pub fn create(config: &SegmentConfig) -> Result<Self, SegmentError> {
        config.validate()?;
        let layout = SegmentLayout::compute(config);
        let total = layout.total as u64;
        let fd = memfd_create(
            c"rgpu-segment",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| SegmentError::MemfdCreate(e.into()))?;
        let resize = |e: rustix::io::Errno| SegmentError::Resize {
            bytes: total,
            source: e.into(),
        };
        ftruncate(&fd, total).map_err(resize)?;
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(resize)?;
        let header = Header::new(config, &layout);
        let mut mapping = map(fd, total)?;
        // The fresh memfd is zero-filled: both `RingControl`s start at
        // reserve = head = 0 with no waiters, which is the valid empty state.
        header.encode(&mut mapping.map[..HEADER_FIELDS * 8]);
        tracing::debug!(?config, total, "created shared segment");
        Self::from_mapping(mapping, header, *config, layout)
    }

    /// Maps a segment received from a peer, validating everything.
    ///
    /// # Errors
    /// [`SegmentError::Inspect`], [`SegmentError::Size`],
    /// [`SegmentError::Seals`], [`SegmentError::Map`],
    /// [`SegmentError::Magic`], [`SegmentError::Version`],
    /// [`SegmentError::Config`], [`SegmentError::Layout`].
    pub fn attach(fd: OwnedFd) -> Result<Self, SegmentError> {
        let st = fstat(&fd).map_err(|e| SegmentError::Inspect(e.into()))?;
        let min = DATA_OFFSET as u64 + 2 * SEGMENT_RING_BYTES_MIN as u64;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if !(min..=SEGMENT_BYTES_MAX).contains(&size) {
            return Err(SegmentError::Size {
                bytes: size,
                min,
                max: SEGMENT_BYTES_MAX,
            });
        }
        let seals = fcntl_get_seals(&fd).map_err(|e| SegmentError::Inspect(e.into()))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(SegmentError::Seals {
                seals: seals.bits(),
            });
        }
        let mapping = map(fd, size)?;
        let header = Header::decode(&mapping.map[..HEADER_FIELDS * 8]);
        if header.magic != SEGMENT_MAGIC {
            return Err(SegmentError::Magic {
                found: header.magic,
            });
        }
        if header.version != u64::from(SEGMENT_VERSION) {
            return Err(SegmentError::Version {
                found: u32::try_from(header.version).unwrap_or(u32::MAX),
                expected: SEGMENT_VERSION,
            });
        }
        let config = SegmentConfig {
            ring_bytes: to_usize(header.ring_bytes, "ring_bytes")?,
            max_record_bytes: to_usize(header.max_record_bytes, "max_record_bytes")?,
            arena_bytes: to_usize(header.arena_bytes, "arena_bytes")?,
        };
        config.validate()?;
        let layout = SegmentLayout::compute(&config);
        let expected = Header {
            c2s_salt: header.c2s_salt,
            s2c_salt: header.s2c_salt,
            ..Header::new(&config, &layout)
        };
        const NAMES: [&str; HEADER_FIELDS] = [
            "magic",
            "version",
            "total_bytes",
            "ring_bytes",
            "max_record_bytes",
            "arena_bytes",
            "c2s_control",
            "s2c_control",
            "c2s_data",
            "s2c_data",
            "arena",
            "c2s_salt",
            "s2c_salt",
        ];
        for ((name, found), want) in NAMES.iter().zip(header.fields()).zip(expected.fields()) {
            if found != want {
                return Err(SegmentError::Layout {
                    field: name,
                    found,
                    expected: want,
                });
            }
        }
        if size != layout.total as u64 {
            return Err(SegmentError::Layout {
                field: "file size",
                found: size,
                expected: layout.total as u64,
            });
        }
        Self::from_mapping(mapping, header, config, layout)
    }

    fn from_mapping(
        mut mapping: Mapping,
        header: Header,
        config: SegmentConfig,
        layout: SegmentLayout,
    ) -> Result<Self, SegmentError> {
        assert_eq!(
            mapping.map.len(),
            layout.total,
            "mapping sized from the layout"
        );
        let base = NonNull::new(mapping.map.as_mut_ptr()).ok_or_else(|| SegmentError::Map {
            bytes: layout.total as u64,
            source: std::io::Error::other("mmap returned null"),
        })?;
        let arena_base = base.as_ptr().wrapping_add(layout.arena);
        let arena_base = NonNull::new(arena_base).ok_or_else(|| SegmentError::Map {
            bytes: layout.total as u64,
            source: std::io::Error::other("arena address wrapped"),
        })?;
        // SAFETY: `layout.arena + arena_bytes == layout.total == map.len()`,
        // so the range is inside the mapping, which lives in `mapping` (kept
        // by the segment for at least as long as the `Arena` field); nothing
        // else in this process makes references to the arena bytes.
        let arena = unsafe { Arena::from_raw(arena_base, config.arena_bytes) };
        Ok(Self {
            mapping: Arc::new(mapping),
            base,
            header,
            config,
            layout,
            arena,
            split_taken: AtomicBool::new(false),
        })
    }

    /// The memfd, to pass to the peer (e.g. with `SCM_RIGHTS`).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mapping.file.as_fd()
    }

    /// The validated sizes.
    #[must_use]
    pub fn config(&self) -> SegmentConfig {
        self.config
    }

    /// The byte layout.
    #[must_use]
    pub fn layout(&self) -> SegmentLayout {
        self.layout
    }

    /// The bulk arena.
    #[must_use]
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The bulk arena, mutably.
    pub fn arena_mut(&mut self) -> &mut Arena {
        &mut self.arena
    }

    /// The producer of this side's outgoing ring and the consumer of its
    /// incoming ring. Allowed once per mapping (a ring has one consumer).
    ///
    /// # Errors
    /// [`SegmentError::AlreadySplit`] on a second call.
    pub fn split(
        &self,
        side: Side,
    ) -> Result<(Producer<ShmRing>, Consumer<ShmRing>), SegmentError> {
        if self.split_taken.swap(true, Ordering::AcqRel) {
            return Err(SegmentError::AlreadySplit);
        }
        let l = &self.layout;
        let h = &self.header;
        let (out, inc) = match side {
            Side::Client => (
                (l.c2s_control, l.c2s_data, h.c2s_salt),
                (l.s2c_control, l.s2c_data, h.s2c_salt),
            ),
            Side::Server => (
                (l.s2c_control, l.s2c_data, h.s2c_salt),
                (l.c2s_control, l.c2s_data, h.c2s_salt),
            ),
        };
        let producer = Producer::from_shared(Arc::new(RingShared::new(
            self.ring_storage(out.0, out.1),
            self.config.max_record_bytes,
            out.2,
        )?));
        let consumer = Consumer::from_shared(Arc::new(RingShared::new(
            self.ring_storage(inc.0, inc.1),
            self.config.max_record_bytes,
            inc.2,
        )?));
        Ok((producer, consumer))
    }

    fn ring_storage(&self, control: usize, data: usize) -> ShmRing {
        debug_assert!(control.is_multiple_of(128) && data.is_multiple_of(4096));
        debug_assert!(data + self.config.ring_bytes <= self.layout.total);
        // Offsets inside a live mapping cannot wrap to null; `dangling` is
        // never reached.
        let control = NonNull::new(self.base.as_ptr().wrapping_add(control).cast())
            .unwrap_or(NonNull::dangling());
        let data =
            NonNull::new(self.base.as_ptr().wrapping_add(data)).unwrap_or(NonNull::dangling());
        // SAFETY: offsets come from `SegmentLayout::compute` of a validated
        // config, so both ranges are inside the mapping (asserted above),
        // page/128-byte aligned, and disjoint; ring_bytes is a power of two
        // >= 4096, hence a multiple of 16.
        unsafe {
            ShmRing::new(
                Arc::clone(&self.mapping),
                control,
                data,
                self.config.ring_bytes,
            )
        }
    }
}

/// Maps `size` bytes of the memfd shared and writable.
fn map(fd: OwnedFd, size: u64) -> Result<Mapping, SegmentError> {
    let file = std::fs::File::from(fd);
    let len = to_usize(size, "segment size")?;
    // SAFETY: the fd is a memfd sealed against shrinking (checked by
    // `attach`, set by `create`), so the mapping cannot be truncated under us
    // (no SIGBUS). Its contents may change at any time (the peer writes it);
    // we only access it through atomics, validated copies and the documented
    // ring/arena borrows.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }.map_err(|source| {
        SegmentError::Map {
            bytes: size,
            source,
        }
    })?;
    Ok(Mapping { map, file })
}
