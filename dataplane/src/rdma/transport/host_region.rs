//! The pinned host region: client memory the worker reads and writes with RDMA.
//!
//! Exists so `cuMemHostAlloc` memory needs no copy through the byte stream on rdma. The
//! connecting side (the client) registers one region of `host_region_bytes` at set-up with
//! remote read and write access and hands out slabs of it (a buddy allocator, as for the shm
//! arena); the hello carries its address, length and rkey. The accepting side (the worker)
//! then serves a copy that names `(offset, len)` in that region with RDMA READ (host to
//! device) or RDMA WRITE (device to host) between the region and its own registered staging
//! buffer, waiting for the completion (bounded by `host_op_timeout_ms`).
//!
//! The worker can only reach what the client registered: the rkey covers that one region, and
//! every `(offset, len)` is checked against the advertised length before a work request is
//! posted, so a bad reference is a typed error, never an out-of-range RDMA operation.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rgpu_ring::{ArenaAllocator, Slab, ARENA_SLAB_BYTES_MIN};

use super::super::config::HOST_STAGE_BYTES_MIN;
use super::super::handshake::Hello;
use super::super::verbs::{Access, Endpoint, Region, SendData, SendOp};
use super::{RdmaTransport, SEND_WR_FLAG};
use crate::error::{Result, TransportError};

/// Our registered host region and the allocator over its offsets (client side).
pub(super) struct HostRegion {
    /// The registered memory (remote read and write).
    pub(super) region: Region,
    alloc: ArenaAllocator,
}

impl HostRegion {
    /// Registers `bytes` (rounded up to a power of two) for the peer; `None` for 0 bytes or
    /// when registration fails (logged: usually the memlock limit).
    pub(super) fn register(ep: &mut Endpoint, bytes: usize) -> Option<Self> {
        if bytes == 0 {
            return None;
        }
        let len = bytes.next_power_of_two().max(ARENA_SLAB_BYTES_MIN);
        match ep.register(len, Access::RemoteReadWrite) {
            Ok(region) => Some(Self {
                region,
                alloc: ArenaAllocator::new(len),
            }),
            Err(e) => {
                tracing::warn!(
                    %e,
                    len,
                    "RDMA: pinned host region not registered; pinned copies travel through the transport"
                );
                None
            }
        }
    }
}

/// The peer's host region as its hello described it (worker side).
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerHost {
    addr: u64,
    len: u64,
    rkey: u32,
    /// Largest single work request (the smaller port `max_msg_sz`).
    piece_max: usize,
}

impl PeerHost {
    /// The peer's region, when it has one and the QPs allow RDMA READ (`rd_atomic > 0`).
    pub(super) fn from_hello(h: &Hello, rd_atomic: u32, max_msg: usize) -> Option<Self> {
        (h.host_bytes > 0 && rd_atomic > 0).then_some(Self {
            addr: h.host_addr,
            len: h.host_bytes,
            rkey: h.host_rkey,
            piece_max: max_msg.max(1),
        })
    }
}

/// Direction of a host-region transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// RDMA READ: peer region into our staging.
    Read,
    /// RDMA WRITE: our staging into the peer region.
    Write,
}

impl RdmaTransport {
    /// Bytes of our pinned host region that the peer may read and write; 0 when there is
    /// none (not asked for, registration refused, or the queue pairs cannot serve RDMA READ).
    pub fn host_region_len(&self) -> usize {
        match &self.host {
            Some(h) if self.peer.rd_atomic > 0 => h.region.len(),
            _ => 0,
        }
    }

    /// The first byte of our pinned host region (see [`Self::host_region_len`]). The memory
    /// stays mapped and registered as long as this transport lives.
    pub fn host_region_base(&mut self) -> Option<NonNull<u8>> {
        if self.host_region_len() == 0 {
            return None;
        }
        self.host.as_mut().map(|h| h.region.base_ptr())
    }

    /// Allocates a slab of our host region (a power of two of at least 4 KiB).
    ///
    /// # Errors
    /// [`TransportError::InvalidConfig`] without a region, [`TransportError::ArenaFull`] when
    /// no block of that size is free.
    pub fn host_alloc(&mut self, len: usize) -> Result<Slab> {
        if self.host_region_len() == 0 {
            return Err(TransportError::InvalidConfig("no pinned host region"));
        }
        let h = self
            .host
            .as_mut()
            .ok_or(TransportError::InvalidConfig("no pinned host region"))?;
        h.alloc
            .alloc(len)
            .map_err(|_| TransportError::ArenaFull { len })
    }

    /// Returns a slab from [`Self::host_alloc`].
    ///
    /// # Errors
    /// [`TransportError::InvalidConfig`] for a slab that is not live.
    pub fn host_free(&mut self, slab: Slab) -> Result<()> {
        let h = self
            .host
            .as_mut()
            .ok_or(TransportError::InvalidConfig("no pinned host region"))?;
        h.alloc
            .free(slab)
            .map_err(|_| TransportError::InvalidConfig("not a live host-region slab"))
    }

    /// The `len` bytes at `offset` of our host region (a staging slab the caller owns; the
    /// peer writes it only while a call naming it is outstanding).
    ///
    /// # Errors
    /// [`TransportError::InvalidConfig`] without a region or for a range outside it.
    pub fn host_bytes(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let (off, n) = self.host_range(offset, len)?;
        match &self.host {
            Some(h) => Ok(h.region.bytes(off, n)),
            None => Err(TransportError::InvalidConfig("no pinned host region")),
        }
    }

    /// The `len` bytes at `offset` of our host region, writable (see [`Self::host_bytes`]).
    ///
    /// # Errors
    /// As [`Self::host_bytes`].
    pub fn host_bytes_mut(&mut self, offset: u64, len: u64) -> Result<&mut [u8]> {
        let (off, n) = self.host_range(offset, len)?;
        match &mut self.host {
            Some(h) => Ok(h.region.bytes_mut(off, n)),
            None => Err(TransportError::InvalidConfig("no pinned host region")),
        }
    }

    /// `[offset, offset + len)` checked against our own host region.
    fn host_range(&self, offset: u64, len: u64) -> Result<(usize, usize)> {
        let region = self.host_region_len() as u64;
        let inside = offset.checked_add(len).is_some_and(|end| end <= region);
        match (usize::try_from(offset), usize::try_from(len)) {
            (Ok(off), Ok(n)) if inside => Ok((off, n)),
            _ => Err(TransportError::InvalidConfig(
                "range outside the pinned host region",
            )),
        }
    }

    /// Length of the peer's pinned host region (0: none).
    pub fn peer_host_len(&self) -> u64 {
        self.peer.host.map_or(0, |h| h.len)
    }

    /// Reads `len` bytes at `offset` of the peer's host region with RDMA READ into our
    /// staging and returns them. Waits for the completion.
    ///
    /// # Errors
    /// [`TransportError::PeerViolation`] for a range outside the peer's region or without
    /// one (nothing is posted); a failed completion (the transport is then closed),
    /// [`TransportError::Timeout`] past `host_op_timeout_ms`.
    pub fn read_peer_host(&mut self, offset: u64, len: u64) -> Result<&[u8]> {
        let n = self.host_transfer(Dir::Read, offset, len)?;
        Ok(self.host_stage.as_ref().map_or(&[][..], |s| s.bytes(0, n)))
    }

    /// Our staging for a later [`Self::write_peer_host`] of `len` bytes at `offset` of the
    /// peer's host region: fill it, then write it. The range is checked now.
    ///
    /// # Errors
    /// As [`Self::read_peer_host`] for the range; registering the staging may fail.
    pub fn peer_host_staging(&mut self, offset: u64, len: u64) -> Result<&mut [u8]> {
        self.check_usable("host region staging")?;
        let (_, n) = self.peer_host_range(offset, len)?;
        if n == 0 {
            return Ok(&mut []);
        }
        self.ensure_host_stage(n)?;
        match self.host_stage.as_mut() {
            Some(s) => Ok(s.bytes_mut(0, n)),
            None => Ok(&mut []),
        }
    }

    /// Writes the first `len` staging bytes (filled through [`Self::peer_host_staging`]) to
    /// `offset` of the peer's host region with RDMA WRITE and waits for the completion.
    ///
    /// # Errors
    /// As [`Self::read_peer_host`].
    pub fn write_peer_host(&mut self, offset: u64, len: u64) -> Result<()> {
        self.host_transfer(Dir::Write, offset, len).map(|_| ())
    }

    /// Checks `[offset, offset + len)` against the peer's region; returns it and `len`.
    fn peer_host_range(&self, offset: u64, len: u64) -> Result<(PeerHost, usize)> {
        let op = "RDMA host region access";
        let host = self
            .peer
            .host
            .ok_or_else(|| TransportError::PeerViolation {
                op,
                detail: "the peer registered no host region".into(),
            })?;
        let inside = offset.checked_add(len).is_some_and(|end| end <= host.len);
        let n = usize::try_from(len).ok().filter(|_| inside);
        let n = n.ok_or_else(|| TransportError::PeerViolation {
            op,
            detail: format!(
                "{len} bytes at offset {offset} are outside the {}-byte host region",
                host.len
            ),
        })?;
        Ok((host, n))
    }

    /// Registers (or grows) the staging to hold `len` bytes. No work request uses the
    /// staging between transfers (each waits for its completions, and a transfer that did
    /// not complete closes the transport), so replacing it is safe.
    fn ensure_host_stage(&mut self, len: usize) -> Result<()> {
        if self.host_stage.as_ref().is_some_and(|s| s.len() >= len) {
            return Ok(());
        }
        // Bounded: len is inside the peer's region, at most HOST_REGION_BYTES_MAX.
        let size = len.next_power_of_two().max(HOST_STAGE_BYTES_MIN);
        self.host_stage = None;
        self.host_stage = Some(self.ep.register(size, Access::Local)?);
        tracing::debug!(size, "RDMA: host-region staging registered");
        Ok(())
    }

    /// Posts the READs or WRITEs for one transfer (pieces of at most the port's message
    /// size) and waits for all of them. Returns the byte count.
    fn host_transfer(&mut self, dir: Dir, offset: u64, len: u64) -> Result<usize> {
        self.check_usable("host region transfer")?;
        let (host, n) = self.peer_host_range(offset, len)?;
        if n == 0 {
            return Ok(0);
        }
        self.ensure_host_stage(n)?;
        let op = match dir {
            Dir::Read => "RDMA READ of the peer's host region",
            Dir::Write => "RDMA WRITE of the peer's host region",
        };
        let deadline = Instant::now() + Duration::from_millis(self.cfg.host_op_timeout_ms);
        // Earlier sends first, so the wait below covers exactly this transfer's WRs.
        self.wait_for(deadline, op, true, |s| s.stage.outstanding() == 0)?;
        let mut done = 0usize;
        while done < n {
            let piece = (n - done).min(host.piece_max);
            self.wait_sq(deadline)?;
            // In bounds: done + piece <= n <= host.len - offset (checked above).
            let raddr = host.addr + offset + done as u64;
            let wr = match dir {
                Dir::Read => SendOp::Read {
                    raddr,
                    rkey: host.rkey,
                },
                Dir::Write => SendOp::Write {
                    raddr,
                    rkey: host.rkey,
                },
            };
            let Some(stage) = self.host_stage.as_ref() else {
                return Err(TransportError::InvalidConfig("host-region staging missing"));
            };
            self.wr_seq = (self.wr_seq + 1) | SEND_WR_FLAG;
            let data = SendData::Region {
                region: stage,
                off: done,
                len: piece,
            };
            if let Err(e) = self.ep.post_send(self.wr_seq, wr, data) {
                self.broken
                    .get_or_insert("a host region transfer failed midway");
                return Err(e);
            }
            self.stage.push_wr(0);
            done += piece;
        }
        let r = self.wait_for(deadline, op, true, |s| s.stage.outstanding() == 0);
        if r.is_err() {
            // Work requests may still target the staging: the transport cannot go on.
            self.broken
                .get_or_insert("a host region transfer did not complete");
        }
        r.map(|()| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(host_bytes: u64) -> Hello {
        Hello {
            qpn: 1,
            psn: 2,
            lid: 0,
            mtu: 3,
            gid: [0; 16],
            rkey: 5,
            credit_addr: 0x1000,
            ring_addr: 0x2000,
            ring_bytes: 1 << 20,
            slot_count: 8,
            slot_bytes: 4096,
            max_msg_bytes: 8 << 20,
            rd_atom: 4,
            host_addr: 0x7000_0000,
            host_bytes,
            host_rkey: 9,
        }
    }

    #[test]
    fn a_peer_region_needs_bytes_and_rdma_read() {
        assert!(PeerHost::from_hello(&hello(0), 4, 1 << 20).is_none());
        assert!(PeerHost::from_hello(&hello(1 << 20), 0, 1 << 20).is_none());
        let h = PeerHost::from_hello(&hello(1 << 20), 4, 0).unwrap();
        assert_eq!((h.addr, h.len, h.rkey), (0x7000_0000, 1 << 20, 9));
        assert_eq!(h.piece_max, 1, "a zero message size still makes progress");
    }
}
