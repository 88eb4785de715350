//! Tunables and bounds of the shm transport.
//!
//! Exists so the segment sizes a client asks for, the maxima a server
//! accepts from a peer, and every timeout are named and validated in one place.

use rgpu_ring::SegmentConfig;

use crate::error::{Result, TransportError};

/// Largest ring a server accepts from a client by default (64 MiB).
pub const RING_BYTES_ACCEPT_MAX_DEFAULT: usize = 64 << 20;
/// Largest arena a server accepts from a client by default (4 GiB).
pub const ARENA_BYTES_ACCEPT_MAX_DEFAULT: usize = 4 << 30;

/// Configuration of a [`super::ShmTransport`] / [`super::ShmListener`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmConfig {
    /// Sizes of the segment a connecting client creates.
    pub segment: SegmentConfig,
    /// Server side: largest `ring_bytes` accepted from a client.
    pub ring_bytes_accept_max: usize,
    /// Server side: largest `arena_bytes` accepted from a client.
    pub arena_bytes_accept_max: usize,
    /// Client side: batches above this many bytes travel through the arena
    /// (one slab, one reference record) instead of the ring.
    pub bulk_threshold_bytes: usize,
    /// Bound on a send waiting for ring space or arena slabs, in milliseconds.
    pub send_timeout_ms: u64,
    /// Timeout applied when a receive or accept is given no deadline, in milliseconds.
    pub default_timeout_ms: u64,
    /// Bound on the Unix-socket handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Longest a receive sleeps before re-checking the Unix socket for a
    /// peer that closed without dying, in milliseconds.
    pub liveness_slice_ms: u64,
    /// Largest amount of received stream bytes buffered inside the transport
    /// (leftovers of partially consumed records, data set aside while a send
    /// waits for slab releases).
    pub pending_bytes_max: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        let segment = SegmentConfig::default();
        Self {
            segment,
            ring_bytes_accept_max: RING_BYTES_ACCEPT_MAX_DEFAULT,
            arena_bytes_accept_max: ARENA_BYTES_ACCEPT_MAX_DEFAULT,
            bulk_threshold_bytes: segment.max_record_bytes,
            send_timeout_ms: 30_000,
            default_timeout_ms: 30_000,
            handshake_timeout_ms: 5_000,
            liveness_slice_ms: 100,
            pending_bytes_max: 16 << 20,
        }
    }
}

impl ShmConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<()> {
        let bad = TransportError::InvalidConfig;
        self.segment
            .validate()
            .map_err(|_| bad("segment config out of bounds (see rgpu_ring::SegmentConfig)"))?;
        if self.bulk_threshold_bytes == 0 {
            return Err(bad("bulk_threshold_bytes must be > 0"));
        }
        if self.send_timeout_ms == 0
            || self.default_timeout_ms == 0
            || self.handshake_timeout_ms == 0
            || self.liveness_slice_ms == 0
        {
            return Err(bad("timeouts must be > 0 ms"));
        }
        if self.pending_bytes_max < self.segment.max_record_bytes {
            return Err(bad("pending_bytes_max must hold at least one record"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bounds_are_checked() {
        assert!(ShmConfig::default().validate().is_ok());
        let c = ShmConfig {
            liveness_slice_ms: 0,
            ..ShmConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = ShmConfig::default();
        c.segment.ring_bytes = 1000;
        assert!(c.validate().is_err());
        let c = ShmConfig {
            pending_bytes_max: 1,
            ..ShmConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
