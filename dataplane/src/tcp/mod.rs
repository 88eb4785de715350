//! TCP transport driven by io_uring.
//!
//! Exists for hosts without shared memory between client and GPU worker.
//! Highlights: `TCP_NODELAY` on both ends, multishot receive into a provided
//! buffer ring (plain receive fallback), `SEND_ZC` for large batches (copying
//! fallback), a registered staging buffer for vectored batches, deadline-bounded
//! waits via `IORING_ENTER_EXT_ARG`, and one `io_uring_enter` per round trip in
//! [`crate::Transport::send_then_recv`]. See `docs/transports.md`.

mod availability;
mod bufring;
mod completion;
mod config;
mod listener;
mod plainbuf;
mod stage;
mod transport;
mod uring;

pub use availability::{classify_setup_error, read_sysctl, IO_URING_DISABLED_SYSCTL};
pub use config::{
    TcpConfig, BATCH_BYTES_MAX, BUF_BYTES_MAX, CANCEL_WAIT_MS_MAX, RECV_BUF_COUNT_MAX,
    SQ_ENTRIES_MAX, WAIT_TICK_MS_DEFAULT, WAIT_TICK_MS_MAX, ZC_THRESHOLD_BYTES_DEFAULT,
};
pub use listener::TcpUringListener;
pub use transport::{TcpFeatures, TcpUringTransport};
