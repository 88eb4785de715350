//! Shared-memory transport: two `rgpu_ring` rings plus the bulk arena in one
//! memfd segment, set up over a Unix socket.
//!
//! Exists for the common case of client and GPU worker on one host: a send is
//! one ring frame, large client batches go by arena reference, and peer death
//! is seen through a pidfd. See `docs/transports.md`.

mod config;
mod fdpass;
mod hello;
mod inbox;
mod listener;
mod transport;
mod wire;

pub use config::{ShmConfig, ARENA_BYTES_ACCEPT_MAX_DEFAULT, RING_BYTES_ACCEPT_MAX_DEFAULT};
pub use hello::{HELLO_MAGIC, HELLO_VERSION};
pub use listener::ShmListener;
pub use rgpu_ring::{Arena, SegmentConfig, Side, Slab};
pub use transport::{ShmSender, ShmTransport};
