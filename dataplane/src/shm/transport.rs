//! `ShmTransport`: the [`Transport`] over a shared segment (two rings + arena).
//!
//! Exists to turn `rgpu_ring`'s rings and arena into the byte-stream
//! contract: sends push whole batches as one ring frame (one doorbell),
//! large client batches travel as one arena slab reference, receives route
//! records through the [`Inbox`], and every wait watches the peer's pidfd
//! plus the Unix socket kept from set-up.
//!
//! Slab ownership: only the client allocates. A `Bulk` record hands a slab
//! to the peer; the server hands it back with a `Release` record (or by
//! sending it back as `Bulk`, for replies written into client-provided slabs);
//! the client frees slabs it receives as `Bulk` once consumed.

use std::io::IoSlice;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rgpu_ring::{
    Arena, ArenaAllocator, ArenaError, Consumer, PeerWatch, PopError, Producer, PushError, Segment,
    ShmRing, Side, Slab, WaitError,
};

use super::config::ShmConfig;
use super::fdpass;
use super::inbox::{Inbox, Sink};
use super::wire::{Control, ESCAPE};
use crate::deadline;
use crate::error::{Result, TransportError};
use crate::transport::{Transport, TransportKind};

/// While a client send waits for slab releases, how long each wait for
/// incoming records lasts before the allocator is retried, in milliseconds.
const ARENA_WAIT_SLICE_MS: u64 = 1;

/// State shared by the transport and its [`ShmSender`] clones.
#[derive(Debug)]
struct Outbound {
    tx: Producer<ShmRing>,
    peer: PeerWatch,
    send_timeout: Duration,
}

impl Outbound {
    /// Pushes `records` as one frame (one doorbell), waiting for space.
    fn push(&self, records: &[&[u8]], op: &'static str) -> Result<()> {
        let deadline = Instant::now() + self.send_timeout;
        self.tx
            .push_batch_timeout(records, deadline, Some(&self.peer))
            .map_err(|e| map_push(op, e))
    }

    /// Pushes `batch` as records of at most `max` bytes, all in one frame.
    fn push_chunked(&self, batch: &[u8], max: usize, op: &'static str) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.len() <= max {
            return self.push(&[batch], op);
        }
        let chunks: Vec<&[u8]> = batch.chunks(max).collect();
        self.push(&chunks, op)
    }
}

fn map_push(op: &'static str, e: PushError) -> TransportError {
    match e {
        PushError::Wait(w) => map_wait(op, w),
        PushError::TooLarge { len, max } => TransportError::TooLarge { op, len, max },
        PushError::BatchTooLarge {
            frame_bytes,
            frame_bytes_max,
            ..
        } => TransportError::TooLarge {
            op,
            len: frame_bytes,
            max: frame_bytes_max,
        },
        PushError::Corrupt(c) => TransportError::PeerViolation {
            op,
            detail: c.to_string(),
        },
        other => TransportError::PeerViolation {
            op,
            detail: other.to_string(),
        },
    }
}

fn map_wait(op: &'static str, e: WaitError) -> TransportError {
    match e {
        WaitError::Timeout { .. } => TransportError::Timeout { op },
        WaitError::PeerDead { pid } => TransportError::PeerGone {
            op,
            detail: format!("process {pid} exited"),
        },
        other => TransportError::io(op, std::io::Error::other(other.to_string())),
    }
}

/// A cloneable, thread-safe sender into the same outgoing ring as its
/// [`ShmTransport`] (the ring is multi-producer). Every batch is pushed as
/// one frame, so batches from different threads never interleave.
/// Senders use the ring only (no arena): a batch must fit one frame.
#[derive(Debug, Clone)]
pub struct ShmSender {
    out: Arc<Outbound>,
    max_record_bytes: usize,
}

impl ShmSender {
    /// Sends one batch as one frame, waiting (bounded) for ring space.
    pub fn send(&self, batch: &[u8]) -> Result<()> {
        self.out
            .push_chunked(batch, self.max_record_bytes, "shm sender send")
    }
}

/// One end of a shared-memory connection; see the module docs.
#[derive(Debug)]
pub struct ShmTransport {
    side: Side,
    out: Arc<Outbound>,
    rx: Consumer<ShmRing>,
    inbox: Inbox,
    /// Client only: the arena allocator (shared with nobody but this transport).
    alloc: Option<Mutex<ArenaAllocator>>,
    cfg: ShmConfig,
    sock: UnixStream,
    broken: Option<&'static str>,
    // Declared last: the rings and arena above point into its mapping.
    seg: Segment,
}

impl ShmTransport {
    /// Builds a transport from a handshaken segment (used by connect/accept).
    pub(crate) fn from_parts(
        seg: Segment,
        side: Side,
        peer: PeerWatch,
        sock: UnixStream,
        cfg: ShmConfig,
    ) -> Result<Self> {
        let (tx, mut rx) = seg.split(side).map_err(|source| TransportError::Segment {
            op: "split segment",
            source,
        })?;
        let max_record = seg.config().max_record_bytes;
        rx.set_pop_records_max((cfg.pending_bytes_max / max_record).max(1));
        let alloc = match side {
            Side::Client if !seg.arena().is_empty() => {
                Some(Mutex::new(ArenaAllocator::new(seg.arena().len())))
            }
            _ => None,
        };
        let out = Arc::new(Outbound {
            tx,
            peer,
            send_timeout: Duration::from_millis(cfg.send_timeout_ms),
        });
        Ok(Self {
            side,
            out,
            rx,
            inbox: Inbox::default(),
            alloc,
            cfg,
            sock,
            broken: None,
            seg,
        })
    }

    /// A cloneable sender for other threads (multi-producer ring).
    pub fn sender(&self) -> ShmSender {
        ShmSender {
            out: Arc::clone(&self.out),
            max_record_bytes: self.max_record_bytes(),
        }
    }

    /// Which end this is (the client owns the arena allocator).
    pub fn side(&self) -> Side {
        self.side
    }

    /// The pid of the peer process (from `SO_PEERCRED`).
    pub fn peer_pid(&self) -> i32 {
        self.out.peer.pid()
    }

    /// Largest ring record; batches up to this size are sent inline.
    pub fn max_record_bytes(&self) -> usize {
        self.seg.config().max_record_bytes
    }

    /// Client only: allocates an arena slab of at least `len` bytes, waiting
    /// (bounded by the send timeout) for the peer to release slabs.
    pub fn alloc_slab(&mut self, len: usize) -> Result<Slab> {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.send_timeout_ms);
        self.alloc_wait(len, deadline)
    }

    /// The whole arena (for long-lived regions such as pinned host memory
    /// that the protocol names by slab; use [`slab`](Self::slab) for access).
    pub fn arena(&self) -> &Arena {
        self.seg.arena()
    }

    /// The bytes of `slab`, validated against the arena bounds.
    pub fn slab(&self, slab: Slab) -> Result<&[u8]> {
        self.seg
            .arena()
            .slice(slab)
            .map_err(|e| arena_err("slab", e, 0))
    }

    /// The bytes of `slab`, writable (e.g. a server filling a client-provided slab).
    pub fn slab_mut(&mut self, slab: Slab) -> Result<&mut [u8]> {
        self.seg
            .arena_mut()
            .slice_mut(slab)
            .map_err(|e| arena_err("slab_mut", e, 0))
    }

    /// Client only: returns a slab this side owns to the allocator.
    pub fn free_slab(&mut self, slab: Slab) -> Result<()> {
        let alloc = self.alloc.as_ref().ok_or(TransportError::InvalidConfig(
            "only the client owns the arena",
        ))?;
        lock(alloc)
            .free(slab)
            .map_err(|e| arena_err("free_slab", e, 0))
    }

    /// Sends the first `used` bytes of `slab` as the next stream bytes, by
    /// reference (zero copy). Ownership of the slab passes to the peer.
    pub fn send_slab(&mut self, slab: Slab, used: usize) -> Result<()> {
        self.usable("send_slab")?;
        if used as u64 > slab.len {
            return Err(TransportError::TooLarge {
                op: "send_slab",
                len: used,
                max: slab.len as usize,
            });
        }
        self.slab(slab)?;
        let ctl = Control::Bulk {
            slab,
            used: used as u64,
        }
        .encode();
        self.out.push(&[ESCAPE, &ctl], "send_slab")
    }

    fn usable(&self, op: &'static str) -> Result<()> {
        match self.broken {
            Some(reason) => Err(TransportError::Closed { op, reason }),
            None => Ok(()),
        }
    }

    /// Pops records into `sink`, waiting until `deadline` in liveness slices.
    /// Returns when the pop routed data bytes (or on `wait == false`, after
    /// one non-blocking attempt).
    fn pump(
        &mut self,
        sink: &mut Sink<'_>,
        deadline: Instant,
        wait: bool,
        op: &'static str,
    ) -> Result<usize> {
        loop {
            self.inbox.routed = 0;
            let Self {
                rx,
                inbox,
                seg,
                out,
                cfg,
                ..
            } = self;
            let arena = seg.arena();
            let slice_end =
                deadline.min(Instant::now() + Duration::from_millis(cfg.liveness_slice_ms));
            let popped = if wait {
                rx.pop_wait(slice_end, Some(&out.peer), |rec| {
                    inbox.route(arena, sink, rec)
                })
            } else {
                rx.try_pop_batch(|rec| inbox.route(arena, sink, rec))
            };
            self.settle_controls(op)?;
            match popped {
                Ok(_) if self.inbox.routed > 0 || !wait => return Ok(self.inbox.routed),
                Ok(_) => {}
                Err(PopError::Wait(WaitError::Timeout { .. })) => {
                    if deadline::remaining(deadline).is_none() {
                        return Err(TransportError::Timeout { op });
                    }
                    if fdpass::peer_hung_up(&self.sock) {
                        self.broken = Some("peer closed the connection");
                        return Err(TransportError::PeerGone {
                            op,
                            detail: "unix socket hung up".into(),
                        });
                    }
                }
                Err(PopError::Wait(w)) => {
                    self.broken = Some("peer gone");
                    return Err(map_wait(op, w));
                }
                Err(PopError::Corrupt(c)) => {
                    self.broken = Some("ring corrupt");
                    return Err(TransportError::PeerViolation {
                        op,
                        detail: c.to_string(),
                    });
                }
                Err(other) => {
                    return Err(TransportError::PeerViolation {
                        op,
                        detail: other.to_string(),
                    })
                }
            }
        }
    }

    /// Acts on controls gathered by the last pop: slab hand-backs, close, violations.
    fn settle_controls(&mut self, op: &'static str) -> Result<()> {
        if let Some(detail) = self.inbox.violation.take() {
            self.broken = Some("peer protocol violation");
            return Err(TransportError::PeerViolation { op, detail });
        }
        for slab in std::mem::take(&mut self.inbox.released) {
            match &self.alloc {
                Some(a) => lock(a)
                    .free(slab)
                    .map_err(|e| TransportError::PeerViolation {
                        op,
                        detail: format!("release of {slab:?}: {e}"),
                    })?,
                None => {
                    return Err(TransportError::PeerViolation {
                        op,
                        detail: "release sent to the server".into(),
                    })
                }
            }
        }
        self.hand_back_done(op)?;
        if self.inbox.closed && self.inbox.pending.is_empty() && self.inbox.routed == 0 {
            self.broken = Some("peer closed the transport");
            return Err(TransportError::PeerGone {
                op,
                detail: "peer closed the transport".into(),
            });
        }
        Ok(())
    }

    /// Returns consumed slabs: client frees locally, server sends `Release`.
    fn hand_back_done(&mut self, op: &'static str) -> Result<()> {
        for slab in std::mem::take(&mut self.inbox.done_slabs) {
            match &self.alloc {
                Some(a) => lock(a)
                    .free(slab)
                    .map_err(|e| TransportError::PeerViolation {
                        op,
                        detail: format!("bulk of unowned {slab:?}: {e}"),
                    })?,
                None => {
                    let ctl = Control::Release { slab }.encode();
                    self.out.push(&[ESCAPE, &ctl], op)?;
                }
            }
        }
        Ok(())
    }

    fn alloc_wait(&mut self, len: usize, deadline: Instant) -> Result<Slab> {
        loop {
            let attempt = {
                let alloc = self.alloc.as_ref().ok_or(TransportError::InvalidConfig(
                    "only the client allocates slabs",
                ))?;
                lock(alloc).alloc(len)
            };
            match attempt {
                Ok(slab) => return Ok(slab),
                Err(ArenaError::Exhausted { .. }) => {}
                Err(e) => return Err(arena_err("alloc_slab", e, len)),
            }
            if deadline::remaining(deadline).is_none()
                || self.inbox.pending_bytes > self.cfg.pending_bytes_max
            {
                return Err(TransportError::ArenaFull { len });
            }
            // Take in whatever the peer sent: releases free slabs, data is set aside.
            let slice = deadline.min(Instant::now() + Duration::from_millis(ARENA_WAIT_SLICE_MS));
            match self.pump(&mut Sink::Buffer, slice, true, "alloc_slab") {
                Ok(_) | Err(TransportError::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_bytes(&mut self, batch: &[u8], op: &'static str) -> Result<()> {
        self.usable(op)?;
        if batch.is_empty() {
            return Ok(());
        }
        let max = self.max_record_bytes();
        if batch.len() > self.cfg.bulk_threshold_bytes.min(max) {
            if self.uses_arena_for(batch.len()) {
                return self.send_parts_by_slab(&[batch]);
            }
            return self.out.push_chunked(batch, max, op);
        }
        self.out.push(&[batch], op)
    }

    /// Client batches of this size go through one arena slab.
    fn uses_arena_for(&self, len: usize) -> bool {
        self.alloc.is_some() && len <= self.seg.arena().len()
    }

    /// Copies `parts` back to back into one fresh slab and sends it by reference.
    fn send_parts_by_slab(&mut self, parts: &[&[u8]]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let deadline = Instant::now() + Duration::from_millis(self.cfg.send_timeout_ms);
        let slab = self.alloc_wait(total, deadline)?;
        let dst = self.slab_mut(slab)?;
        let mut at = 0;
        for p in parts {
            dst[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.send_slab(slab, total)
    }
}

fn arena_err(op: &'static str, e: ArenaError, len: usize) -> TransportError {
    match e {
        ArenaError::Exhausted { .. } => TransportError::ArenaFull { len },
        ArenaError::TooLarge { len, max } => TransportError::TooLarge { op, len, max },
        other => TransportError::PeerViolation {
            op,
            detail: other.to_string(),
        },
    }
}

/// Locks the allocator; a poisoned lock still guards consistent data (the
/// allocator never panics mid-update), so recover it.
fn lock(m: &Mutex<ArenaAllocator>) -> std::sync::MutexGuard<'_, ArenaAllocator> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn send(&mut self, batch: &[u8]) -> Result<()> {
        self.send_bytes(batch, "send")
    }

    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<()> {
        self.usable("send_vectored")?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let max = self.max_record_bytes();
        if parts.iter().all(|p| p.len() <= max) && total <= self.cfg.bulk_threshold_bytes.max(max) {
            // Each non-empty part becomes one record; all in one frame.
            let records: Vec<&[u8]> = parts
                .iter()
                .map(|p| &**p)
                .filter(|p| !p.is_empty())
                .collect();
            return self.out.push(&records, "send_vectored");
        }
        let slices: Vec<&[u8]> = parts.iter().map(|p| &**p).collect();
        if self.uses_arena_for(total) {
            return self.send_parts_by_slab(&slices);
        }
        self.send_bytes(&slices.concat(), "send_vectored")
    }

    fn recv(
        &mut self,
        deadline: Option<Instant>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        self.usable("recv")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        if !self.inbox.pending.is_empty() {
            let Self { inbox, seg, .. } = self;
            let n = inbox.drain(seg.arena(), &mut Sink::Deliver(on_bytes));
            self.hand_back_done("recv")?;
            if n > 0 {
                return Ok(n);
            }
        }
        self.pump(&mut Sink::Deliver(on_bytes), deadline, true, "recv")
    }

    fn recv_exact_into(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<()> {
        self.usable("recv_exact_into")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let mut at = 0usize;
        {
            let Self { inbox, seg, .. } = self;
            inbox.drain(seg.arena(), &mut Sink::Fill { dst, at: &mut at });
        }
        self.hand_back_done("recv_exact_into")?;
        while at < dst.len() {
            let res = self.pump(
                &mut Sink::Fill { dst, at: &mut at },
                deadline,
                true,
                "recv_exact_into",
            );
            if let Err(e) = res {
                if at > 0 {
                    self.broken = Some("recv_exact_into failed mid-body");
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        // Best effort: tell the peer now instead of letting it find out from
        // the Unix socket. Never waits.
        let ctl = Control::Close.encode();
        let _ = self.out.tx.try_push_batch(&[ESCAPE, &ctl]);
    }
}
