//! Tunables and bounds of the io_uring TCP transport.
//!
//! Exists so every bound (queue depth, buffer sizes, spins, timeouts) is a
//! named, documented field validated in one place.

use crate::error::{Result, TransportError};

/// Largest submission queue this transport asks for.
pub const SQ_ENTRIES_MAX: u32 = 4096;
/// Largest provided-buffer ring (kernel limit is 32768; we stay far below).
pub const RECV_BUF_COUNT_MAX: u16 = 4096;
/// Largest single provided receive buffer or send staging buffer.
pub const BUF_BYTES_MAX: usize = 16 << 20;
/// Largest batch one `send` accepts (a single send SQE carries a `u32` length).
pub const BATCH_BYTES_MAX: usize = 1 << 30;
/// Default `SEND_ZC` threshold: batches at least this big go zero-copy.
pub const ZC_THRESHOLD_BYTES_DEFAULT: usize = 64 << 10;
/// Default period of the wait tick, in milliseconds.
pub const WAIT_TICK_MS_DEFAULT: u64 = 10;
/// Largest wait tick, in milliseconds.
pub const WAIT_TICK_MS_MAX: u64 = 1_000;
/// How long to wait for a cancelled request's final completion before
/// escalating (shutting the socket down).
pub const CANCEL_WAIT_MS_MAX: u64 = 1_000;

/// Configuration of a [`super::TcpUringTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Submission queue entries (power of two, at most [`SQ_ENTRIES_MAX`]).
    pub sq_entries: u32,
    /// Number of provided receive buffers (power of two, at most [`RECV_BUF_COUNT_MAX`]).
    pub recv_buf_count: u16,
    /// Size of each provided receive buffer in bytes (at most [`BUF_BYTES_MAX`]).
    pub recv_buf_bytes: usize,
    /// Size of the registered send staging buffer in bytes; batches up to
    /// `min(this, zc_threshold_bytes - 1)` are copied there and sent with
    /// `WRITE_FIXED`.
    pub send_stage_bytes: usize,
    /// Batches of at least this many bytes are sent with `SEND_ZC` straight from
    /// the caller's memory (when the kernel supports it). `usize::MAX` disables it.
    pub zc_threshold_bytes: usize,
    /// Use `SEND_ZC` even when the peer is on a loopback address. Off by default: the kernel
    /// copies zero-copy pages anyway when it delivers them to a local socket, so `SEND_ZC` only
    /// adds page pinning and a second completion (measured here: a 64 MiB bulk transfer reached
    /// 0.5–0.8× of a plain socket with it, 1.1–1.4× without).
    pub zc_on_loopback: bool,
    /// Use multishot receive with a provided buffer ring when the kernel has it.
    /// `false` forces the plain one-shot receive fallback.
    pub multishot_recv: bool,
    /// Completion-queue polls (without a system call) before blocking; 0 never
    /// spins. Ignored with `single_thread` (completions then need a system call).
    pub busy_poll_spins: u32,
    /// One thread drives the transport for its whole life (a GPU worker, a
    /// benchmark loop). Enables `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN`,
    /// which makes each message cheaper; the first thread to use the
    /// transport becomes its owner and calls from any other thread fail with
    /// `Closed`. Leave `false` when threads share the transport behind a lock.
    pub single_thread: bool,
    /// Period of the wait tick that bounds long waits, in milliseconds (a
    /// deadline may be overshot by up to one period; waits shorter than a
    /// period use a precise per-wait timer). 0 uses per-wait timers always.
    pub wait_tick_ms: u64,
    /// Bound on a send blocked by peer back-pressure, in milliseconds.
    pub send_timeout_ms: u64,
    /// Timeout applied when a receive or accept is given no deadline, in milliseconds.
    pub default_timeout_ms: u64,
    /// Bound on `connect`, in milliseconds.
    pub connect_timeout_ms: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            sq_entries: 64,
            recv_buf_count: 64,
            recv_buf_bytes: 64 << 10,
            send_stage_bytes: 64 << 10,
            zc_threshold_bytes: ZC_THRESHOLD_BYTES_DEFAULT,
            zc_on_loopback: false,
            multishot_recv: true,
            busy_poll_spins: 0,
            single_thread: false,
            wait_tick_ms: WAIT_TICK_MS_DEFAULT,
            send_timeout_ms: 30_000,
            default_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
        }
    }
}

impl TcpConfig {
    /// Checks every bound; called by `connect` and `accept`.
    pub fn validate(&self) -> Result<()> {
        let bad = TransportError::InvalidConfig;
        if !self.sq_entries.is_power_of_two()
            || self.sq_entries < 8
            || self.sq_entries > SQ_ENTRIES_MAX
        {
            return Err(bad(
                "sq_entries must be a power of two in 8..=SQ_ENTRIES_MAX",
            ));
        }
        if !self.recv_buf_count.is_power_of_two() || self.recv_buf_count > RECV_BUF_COUNT_MAX {
            return Err(bad(
                "recv_buf_count must be a power of two <= RECV_BUF_COUNT_MAX",
            ));
        }
        if self.recv_buf_bytes == 0 || self.recv_buf_bytes > BUF_BYTES_MAX {
            return Err(bad("recv_buf_bytes must be in 1..=BUF_BYTES_MAX"));
        }
        if self.send_stage_bytes == 0 || self.send_stage_bytes > BUF_BYTES_MAX {
            return Err(bad("send_stage_bytes must be in 1..=BUF_BYTES_MAX"));
        }
        if self.wait_tick_ms > WAIT_TICK_MS_MAX {
            return Err(bad("wait_tick_ms must be <= WAIT_TICK_MS_MAX"));
        }
        if self.zc_threshold_bytes == 0 {
            return Err(bad(
                "zc_threshold_bytes must be > 0 (usize::MAX disables SEND_ZC)",
            ));
        }
        if self.send_timeout_ms == 0 || self.default_timeout_ms == 0 || self.connect_timeout_ms == 0
        {
            return Err(bad("timeouts must be > 0 ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(TcpConfig::default().validate().is_ok());
    }

    #[test]
    fn bounds_are_enforced() {
        let cases: [fn(&mut TcpConfig); 5] = [
            |c| c.sq_entries = 100,
            |c| c.recv_buf_count = 3,
            |c| c.recv_buf_bytes = 0,
            |c| c.send_stage_bytes = BUF_BYTES_MAX + 1,
            |c| c.send_timeout_ms = 0,
        ];
        for mutate in cases {
            let mut cfg = TcpConfig::default();
            mutate(&mut cfg);
            assert!(matches!(
                cfg.validate(),
                Err(TransportError::InvalidConfig(_))
            ));
        }
    }
}
