//! Tunables and bounds of the RDMA transport.
//!
//! Exists so every bound (queue depths, slot and ring sizes, spins, timeouts)
//! is a named, documented field validated in one place.

use crate::error::{Result, TransportError};

/// Test-only fault injection (see [`RdmaConfig::fault`]): makes this side
/// misbehave toward its peer so tests can check that the errors are typed.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Write bulk data and credits with a wrong rkey (the peer NAKs: remote access error).
    BadRkey,
    /// Send SENDs up to twice the peer's receive slot size (length error at the peer).
    Oversend,
}

/// Most receive slots (and so most peer receive credits).
pub const SLOT_COUNT_MAX: u32 = 4096;
/// Largest receive slot in bytes (one SEND).
pub const SLOT_BYTES_MAX: usize = 1 << 20;
/// Largest bulk receive ring in bytes (an RDMA WRITE's immediate carries a `u32` length).
pub const RING_BYTES_MAX: usize = 1 << 30;
/// Largest send staging area in bytes.
pub const STAGE_BYTES_MAX: usize = 1 << 30;
/// Largest send-queue depth this transport asks for.
pub const SQ_DEPTH_MAX: u32 = 16_384;
/// Largest inline size we ask a QP for; bounds the on-stack gather buffer.
pub const INLINE_BYTES_MAX: usize = 1024;
/// Largest batch one `send` accepts.
pub const BATCH_BYTES_MAX: usize = 1 << 31;
/// Largest pinned host region a client registers for its peer (4 GiB).
pub const HOST_REGION_BYTES_MAX: usize = 1 << 32;
/// Smallest worker staging buffer for host-region copies (registered on first use, grown
/// to the largest access, up to the peer's region).
pub const HOST_STAGE_BYTES_MIN: usize = 1 << 20;

/// Configuration of a [`super::RdmaTransport`]. Both ends may differ: each
/// side's receive geometry travels in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Device name (`ibv_devices`); `None` takes the first device.
    pub device: Option<String>,
    /// Port number (1-based).
    pub port: u8,
    /// GID index; `None` picks the first IPv4-mapped GID (RoCE v2 on rxe and
    /// PVRDMA). On NICs that list RoCE v1 and v2 GIDs, set it explicitly.
    pub gid_index: Option<u32>,
    /// Receive slots posted for SENDs: the peer's credit window (at most [`SLOT_COUNT_MAX`]).
    pub slot_count: u32,
    /// Size of one receive slot (the largest SEND the peer may post), at most [`SLOT_BYTES_MAX`].
    pub slot_bytes: usize,
    /// The ring the peer RDMA-WRITEs bulk batches into, at most [`RING_BYTES_MAX`].
    pub ring_bytes: usize,
    /// Registered send staging area (at least `max(2 × slot_bytes, 64 KiB)`); SENDs
    /// are capped at half of it.
    pub stage_bytes: usize,
    /// Send-queue depth (at most [`SQ_DEPTH_MAX`]; also bounded by the device's `max_qp_wr`).
    pub sq_depth: u32,
    /// Inline bytes to ask the QP for (at most [`INLINE_BYTES_MAX`]); the
    /// provider may refuse, then 0 is used.
    pub max_inline: u32,
    /// Completion-queue polls before sleeping on the completion channel.
    pub busy_poll_spins: u32,
    /// Local ACK timeout exponent (4.096 µs × 2^n) for the QP.
    pub ack_timeout_exp: u8,
    /// Transport retries before the QP errors out (at most 7).
    pub retry_count: u8,
    /// Bound on a send blocked by missing credits, in milliseconds.
    pub send_timeout_ms: u64,
    /// Timeout applied when a receive or accept is given no deadline, in milliseconds.
    pub default_timeout_ms: u64,
    /// Bound on connect and the handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on waiting for outstanding sends at close, in milliseconds.
    pub linger_ms: u64,
    /// Shared secret the connecting side proves on the TCP control connection before either
    /// side opens the device, registers memory or reveals an rkey.
    pub token: ControlToken,
    /// Bytes of pinned host memory to register for the peer to RDMA READ and WRITE (the
    /// client's `cuMemHostAlloc` pool), rounded up to a power of two; 0: none. At most
    /// [`HOST_REGION_BYTES_MAX`]. A registration the memlock limit refuses is logged and
    /// the connection goes on without a region.
    pub host_region_bytes: usize,
    /// Bound on one host-region READ or WRITE the worker side waits for, in milliseconds.
    pub host_op_timeout_ms: u64,
    /// Test-only fault injection; [`Fault::None`] in production.
    #[doc(hidden)]
    pub fault: Fault,
}

/// The 32-byte secret of the RDMA control connection. Its `Debug` output hides the bytes, so a
/// logged config never leaks it.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlToken(pub [u8; 32]);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(..)")
    }
}

impl ControlToken {
    /// Compares in time independent of where the tokens differ.
    pub fn matches(&self, other: &[u8; 32]) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl Default for RdmaConfig {
    fn default() -> Self {
        Self {
            device: None,
            port: 1,
            gid_index: None,
            slot_count: 64,
            slot_bytes: 16 << 10,
            ring_bytes: 4 << 20,
            stage_bytes: 4 << 20,
            sq_depth: 256,
            max_inline: 256,
            busy_poll_spins: 2_000,
            ack_timeout_exp: 14,
            retry_count: 7,
            send_timeout_ms: 30_000,
            default_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            linger_ms: 1_000,
            token: ControlToken::default(),
            host_region_bytes: 0,
            host_op_timeout_ms: 30_000,
            fault: Fault::None,
        }
    }
}

impl RdmaConfig {
    /// Checks every bound; called by connect and accept.
    pub fn validate(&self) -> Result<()> {
        let bad = TransportError::InvalidConfig;
        if self.slot_count == 0 || self.slot_count > SLOT_COUNT_MAX {
            return Err(bad("slot_count must be 1..=SLOT_COUNT_MAX"));
        }
        if self.slot_bytes == 0 || self.slot_bytes > SLOT_BYTES_MAX {
            return Err(bad("slot_bytes must be 1..=SLOT_BYTES_MAX"));
        }
        if self.ring_bytes < 4096 || self.ring_bytes > RING_BYTES_MAX {
            return Err(bad("ring_bytes must be 4096..=RING_BYTES_MAX"));
        }
        if self.stage_bytes > STAGE_BYTES_MAX
            || self.stage_bytes < (2 * self.slot_bytes).max(64 << 10)
        {
            return Err(bad(
                "stage_bytes must be >= max(2 x slot_bytes, 64 KiB) and <= STAGE_BYTES_MAX",
            ));
        }
        if self.sq_depth < 4 || self.sq_depth > SQ_DEPTH_MAX {
            return Err(bad("sq_depth must be 4..=SQ_DEPTH_MAX"));
        }
        if self.max_inline as usize > INLINE_BYTES_MAX {
            return Err(bad("max_inline must be <= INLINE_BYTES_MAX"));
        }
        if self.retry_count > 7 || self.ack_timeout_exp > 31 || self.port == 0 {
            return Err(bad("retry_count <= 7, ack_timeout_exp <= 31, port >= 1"));
        }
        if self.send_timeout_ms == 0
            || self.default_timeout_ms == 0
            || self.connect_timeout_ms == 0
            || self.host_op_timeout_ms == 0
        {
            return Err(bad("timeouts must be > 0"));
        }
        if self.host_region_bytes > HOST_REGION_BYTES_MAX {
            return Err(bad("host_region_bytes must be <= HOST_REGION_BYTES_MAX"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bounds_are_enforced() {
        RdmaConfig::default().validate().unwrap();
        for c in [
            RdmaConfig {
                slot_count: 0,
                ..Default::default()
            },
            RdmaConfig {
                slot_bytes: SLOT_BYTES_MAX + 1,
                ..Default::default()
            },
            RdmaConfig {
                ring_bytes: 100,
                ..Default::default()
            },
            RdmaConfig {
                max_inline: 4096,
                ..Default::default()
            },
            RdmaConfig {
                host_region_bytes: HOST_REGION_BYTES_MAX + 1,
                ..Default::default()
            },
            RdmaConfig {
                host_op_timeout_ms: 0,
                ..Default::default()
            },
            RdmaConfig {
                retry_count: 8,
                ..Default::default()
            },
            RdmaConfig {
                stage_bytes: 1024,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(c.validate(), Err(TransportError::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }
}
