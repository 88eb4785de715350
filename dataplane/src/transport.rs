//! The `Transport` trait: the byte-moving contract the protocol layer drives.
//!
//! Exists so the protocol code (framing, calls, bulk bodies) is written once
//! and runs over shared memory, TCP on io_uring and, later, RDMA verbs.
//! Transports move opaque bytes: they never parse the protocol.

use std::io::IoSlice;
use std::time::Instant;

use crate::error::Result;

/// Which transport implementation sits behind a `dyn Transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Shared-memory rings plus arena (same host).
    Shm,
    /// TCP driven through io_uring.
    TcpUring,
    /// RDMA verbs over an RC queue pair (`rdma` module, cargo feature `rdma`).
    Rdma,
}

/// One bidirectional, ordered byte channel to one peer.
///
/// Semantics every implementation keeps:
/// - [`send`](Transport::send) hands one *batch* (one or more complete
///   protocol frames) to the peer as **one doorbell**: one ring record (shm)
///   or one socket send (TCP). When it returns, the caller may reuse `batch`.
/// - Receiving is a byte stream: [`recv`](Transport::recv) delivers whatever
///   arrived, in order, in chunks whose boundaries carry no meaning (TCP may
///   split or merge batches; shm happens to deliver whole batches).
/// - Every wait is bounded. A `deadline` of `None` means "the transport's
///   configured default timeout", never "forever".
/// - A dead peer surfaces as [`TransportError::PeerGone`](crate::TransportError::PeerGone),
///   an expired deadline as [`TransportError::Timeout`](crate::TransportError::Timeout).
///
/// Threading: a transport value has a single owner (`&mut self`). The shm
/// transport additionally hands out cloneable senders for multi-threaded
/// clients (see [`crate::shm::ShmSender`]); TCP has one owner only.
pub trait Transport: Send {
    /// Which implementation this is.
    fn kind(&self) -> TransportKind;

    /// Sends one batch as one doorbell. Waits (bounded by the transport's
    /// send timeout) only when the peer applies back-pressure.
    fn send(&mut self, batch: &[u8]) -> Result<()>;

    /// Sends the concatenation of `parts` as one batch (one doorbell).
    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<()>;

    /// Waits until at least one byte arrives (or the deadline passes), then
    /// hands every byte available right now to `on_bytes`, possibly in several
    /// calls, and returns how many bytes it delivered (always > 0 on `Ok`).
    fn recv(&mut self, deadline: Option<Instant>, on_bytes: &mut dyn FnMut(&[u8]))
        -> Result<usize>;

    /// Fills `dst` completely with the next `dst.len()` bytes of the stream,
    /// landing them straight in `dst` where the transport can (TCP: the socket
    /// receive targets `dst`; shm: copied once out of the arena).
    ///
    /// On an error part of `dst` may have been consumed from the stream; the
    /// transport then refuses further receives (`Closed`), because the stream
    /// position is lost.
    fn recv_exact_into(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<()>;

    /// Sends `batch`, then receives like [`recv`](Transport::recv). Transports
    /// override it to do both with fewer system calls (TCP: one
    /// `io_uring_enter` submits the send and waits for the reply).
    fn send_then_recv(
        &mut self,
        batch: &[u8],
        deadline: Option<Instant>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        self.send(batch)?;
        self.recv(deadline, on_bytes)
    }
}
