//! The provided-buffer ring that multishot receive fills.
//!
//! Exists to keep the kernel-shared buffer-ring memory (and its `unsafe`) in
//! one place behind a safe API: hand a buffer id back to the kernel, read a
//! completed buffer.
//!
//! Ownership rule: after `recycle(bid)` the kernel owns buffer `bid` until a
//! completion names it; only then may `filled(bid, len)` read it.

use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Result, TransportError};

/// The buffer group id this transport registers (one ring per `IoUring`).
pub(crate) const BUF_GROUP_ID: u16 = 0;

/// One ring entry, laid out like the kernel's `struct io_uring_buf`. The
/// `resv` field of entry 0 doubles as the ring tail the kernel reads.
#[repr(C)]
struct RawBufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBufEntry>() == 16);
const _: () = assert!(std::mem::offset_of!(RawBufEntry, resv) == ENTRY_FIELDS_BYTES);

/// Bytes of `addr`, `len` and `bid`: everything in an entry but `resv`.
const ENTRY_FIELDS_BYTES: usize = 14;

/// A registered provided-buffer ring plus the receive buffers it hands out.
pub(crate) struct BufRing {
    /// The ring of `BufRingEntry`, shared with the kernel.
    ring: MmapRaw,
    /// `count * buf_bytes` bytes of receive buffers.
    data: MmapRaw,
    count: u16,
    buf_bytes: usize,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    /// Which buffers the kernel owns (debug bookkeeping of the ownership rule).
    kernel_owned: Vec<bool>,
}

impl BufRing {
    /// Allocates the memory and registers it with `ring` as group [`BUF_GROUP_ID`],
    /// handing every buffer to the kernel.
    pub(crate) fn register(ring: &IoUring, count: u16, buf_bytes: usize) -> Result<Self> {
        assert!(count.is_power_of_two(), "validated by TcpConfig");
        let map = |len: usize, op| {
            MmapOptions::new()
                .len(len)
                .map_anon()
                .map(MmapRaw::from)
                .map_err(|e| TransportError::io(op, e))
        };
        let ring_mem = map(
            usize::from(count) * std::mem::size_of::<RawBufEntry>(),
            "mmap buf ring",
        )?;
        let data = map(usize::from(count) * buf_bytes, "mmap recv buffers")?;
        // SAFETY: `ring_mem` is a page-aligned, zeroed mapping of `count` entries
        // that lives in `self`; the owning transport declares the `IoUring`
        // before this value, so the ring (and its registration) goes first.
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                ring_mem.as_ptr() as u64,
                count,
                BUF_GROUP_ID,
                0,
            )
        };
        registered.map_err(|e| TransportError::io("register_buf_ring", e))?;
        let mut this = Self {
            ring: ring_mem,
            data,
            count,
            buf_bytes,
            tail: 0,
            kernel_owned: vec![false; usize::from(count)],
        };
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Size of each buffer in bytes.
    pub(crate) fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    fn entries(&self) -> *mut RawBufEntry {
        self.ring.as_mut_ptr().cast()
    }

    /// Queues buffer `bid` for the kernel; visible after [`publish`](Self::publish).
    fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        let idx = usize::from(bid);
        assert!(idx < self.kernel_owned.len(), "buffer id out of range");
        debug_assert!(
            !self.kernel_owned[idx],
            "buffer {bid} handed to the kernel twice"
        );
        self.kernel_owned[idx] = true;
        let addr = self.data.as_mut_ptr() as u64 + (idx * self.buf_bytes) as u64;
        let entry = self.entries().wrapping_add(slot);
        let len = u32::try_from(self.buf_bytes).unwrap_or(u32::MAX);
        let mut fields = [0u8; ENTRY_FIELDS_BYTES];
        fields[0..8].copy_from_slice(&addr.to_ne_bytes());
        fields[8..12].copy_from_slice(&len.to_ne_bytes());
        fields[12..14].copy_from_slice(&bid.to_ne_bytes());
        // SAFETY: `slot < count` keeps `entry` inside the mapping and aligned;
        // the kernel reads only entries between its head and the published
        // tail, and this slot lies beyond it. Fields are written through raw
        // pointers (no reference) in one 14-byte store that leaves `resv` (the tail,
        // in entry 0) alone.
        unsafe { entry.cast::<[u8; ENTRY_FIELDS_BYTES]>().write(fields) };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel (one release store).
    fn publish(&mut self) {
        let tail_ptr = self
            .entries()
            .cast::<u8>()
            .wrapping_add(std::mem::offset_of!(RawBufEntry, resv));
        // SAFETY: the tail is the naturally aligned u16 at offset 14 of the
        // page-aligned mapping; the kernel reads it concurrently, so this side
        // only ever accesses it atomically.
        let tail = unsafe { AtomicU16::from_ptr(tail_ptr.cast::<u16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Hands buffer `bid` back to the kernel after its bytes were consumed.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    /// Takes ownership of a buffer a completion named (the kernel filled it).
    /// Returns `false` for an id the kernel did not own (a peer cannot cause
    /// this; it would be a kernel or bookkeeping bug).
    pub(crate) fn take(&mut self, bid: u16) -> bool {
        match self.kernel_owned.get_mut(usize::from(bid)) {
            Some(owned @ true) => {
                *owned = false;
                true
            }
            _ => false,
        }
    }

    /// The first `len` bytes of buffer `bid`, which the caller took with
    /// [`take`](Self::take) and has not recycled yet.
    pub(crate) fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let idx = usize::from(bid);
        assert!(
            idx < self.kernel_owned.len() && len <= self.buf_bytes,
            "buffer slice out of range"
        );
        debug_assert!(!self.kernel_owned[idx], "reading a buffer the kernel owns");
        let start = self.data.as_ptr().wrapping_add(idx * self.buf_bytes);
        // SAFETY: `start..start + len` lies inside `data` (checked above) and
        // belongs to a buffer the kernel completed and no longer writes
        // (ownership rule); the borrow of `self` keeps it from being recycled
        // while the slice lives.
        unsafe { std::slice::from_raw_parts(start, len) }
    }
}
