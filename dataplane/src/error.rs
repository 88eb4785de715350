//! The one error type every transport returns.
//!
//! Exists so the protocol layer can react to *kinds* of failure (timeout, peer
//! gone, misconfiguration) without knowing which transport it drives.

use std::io;

/// Why io_uring could not be used on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UringUnavailableCause {
    /// `/proc/sys/kernel/io_uring_disabled` forbids io_uring for this process.
    DisabledBySysctl {
        /// The value read from the sysctl (1: privileged/group only, 2: off).
        value: u32,
    },
    /// `io_uring_setup` returned `ENOSYS`: the kernel lacks io_uring or a
    /// seccomp filter hides the syscall.
    NotImplemented {
        /// The sysctl value, if it could be read.
        sysctl: Option<u32>,
    },
    /// `io_uring_setup` returned `EPERM`: a sysctl, LSM or seccomp policy denies it.
    PermissionDenied {
        /// The sysctl value, if it could be read.
        sysctl: Option<u32>,
    },
    /// The kernel supports io_uring but lacks a feature this transport needs.
    MissingFeature {
        /// The feature, in words.
        feature: &'static str,
    },
}

impl std::fmt::Display for UringUnavailableCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<u32>| v.map_or_else(|| "unreadable".to_owned(), |v| v.to_string());
        match self {
            Self::DisabledBySysctl { value } => write!(
                f,
                "kernel.io_uring_disabled = {value} (1: only privileged users or io_uring_group, 2: disabled for all)"
            ),
            Self::NotImplemented { sysctl } => write!(
                f,
                "io_uring_setup returned ENOSYS (kernel without io_uring or a seccomp filter); kernel.io_uring_disabled = {}",
                show(sysctl)
            ),
            Self::PermissionDenied { sysctl } => write!(
                f,
                "io_uring_setup returned EPERM (sysctl, LSM or seccomp policy); kernel.io_uring_disabled = {}",
                show(sysctl)
            ),
            Self::MissingFeature { feature } => write!(f, "kernel lacks io_uring feature: {feature}"),
        }
    }
}

/// Errors of every [`crate::Transport`] and of connection set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The deadline passed before the operation completed.
    #[error("{op} timed out")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
    },
    /// The peer process died, closed or reset the connection.
    #[error("peer gone during {op}: {detail}")]
    PeerGone {
        /// The operation that noticed.
        op: &'static str,
        /// How it was noticed (EOF, ECONNRESET, pidfd readable, ...).
        detail: String,
    },
    /// This side already closed the transport, or an earlier failure left it unusable.
    #[error("transport closed or broken ({reason}); {op} refused")]
    Closed {
        /// The refused operation.
        op: &'static str,
        /// Why the transport is unusable.
        reason: &'static str,
    },
    /// io_uring cannot be used here; the cause names the sysctl value or errno.
    #[error("io_uring unavailable: {cause}")]
    UringUnavailable {
        /// Why.
        cause: UringUnavailableCause,
    },
    /// A batch or buffer exceeds a configured bound.
    #[error("{op}: {len} bytes exceeds the bound of {max} bytes")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// Requested size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The configuration is inconsistent.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// The peer did not prove the shared token during connection set-up (RDMA control
    /// connection), or refused ours. Nothing was registered or created for it.
    #[error("{op}: authentication failed: {detail}")]
    Unauthenticated {
        /// What was being set up.
        op: &'static str,
        /// Which side refused and why.
        detail: String,
    },
    /// The peer sent something invalid during set-up or in a transport header.
    #[error("protocol violation by peer during {op}: {detail}")]
    PeerViolation {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The shared-memory arena has no slab free for the request.
    #[error("arena exhausted: {len} bytes requested")]
    ArenaFull {
        /// Requested size.
        len: usize,
    },
    /// Creating, attaching or splitting the shared segment failed.
    #[error("{op} failed: {source}")]
    Segment {
        /// The failing operation.
        op: &'static str,
        /// The ring crate's error.
        #[source]
        source: rgpu_ring::SegmentError,
    },
    /// libibverbs could not be loaded (`dlopen`/`dlsym` of `libibverbs.so.1`).
    #[error("RDMA unavailable: {detail}")]
    RdmaUnavailable {
        /// The loader's message.
        detail: String,
    },
    /// A verbs call failed (device, memory registration, QP transition, post).
    #[error("{op} failed: {detail}")]
    Rdma {
        /// The failing verbs operation.
        op: &'static str,
        /// What the provider reported.
        detail: String,
    },
    /// A work request completed with an error status: the QP is in the error
    /// state and the transport refuses further use.
    #[error("{op}: work completion status {status} ({status_name}), wr_id {wr_id:#x}, vendor error {vendor_err:#x}")]
    RdmaCompletion {
        /// The kind of work request.
        op: &'static str,
        /// `ibv_wc_status` value.
        status: u32,
        /// Its verbs name.
        status_name: &'static str,
        /// Provider-specific detail.
        vendor_err: u32,
        /// The failed work request's id (diagnostics).
        wr_id: u64,
    },
    /// An OS call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The failing operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// Wraps an OS error with the name of the operation.
    pub fn io(op: &'static str, source: io::Error) -> Self {
        Self::Io { op, source }
    }

    /// True for errors meaning the other side is gone (the connection cannot recover).
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, Self::PeerGone { .. })
    }

    /// True for [`TransportError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// Result alias for this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
