//! Cross-process tests: a child process (this test binary re-executed with an
//! environment variable) attaches the memfd it inherited and talks to us.
//!
//! `harness = false`: `main` runs every scenario in sequence, or plays the
//! child role when `RGPU_RING_CHILD` is set. Scenarios:
//! - 10^6 checksummed, variable-length records from one producer, order and
//!   content verified;
//! - the same from several producer threads in the child (per-thread order);
//! - a consumer waiting on an empty ring sees `PeerDead` when the child is
//!   SIGKILLed, and so does a producer blocked on a full ring.

#[cfg(not(loom))]
#[path = "support/xproc.rs"]
mod xproc;

fn main() {
    #[cfg(not(loom))]
    xproc::main();
}
