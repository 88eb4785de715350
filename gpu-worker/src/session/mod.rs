//! The per-connection session: protocol state machine + backend + driver loop.
//!
//! Exists to turn one client connection into backend work: [`Executor`]
//! maps calls to the [`Backend`](crate::Backend) and answers them,
//! [`run_session`] drives an `rgpu_proto::Server` over any
//! [`SessionTransport`] until the peer goes away, then frees what the
//! session held.

pub mod arena;
pub mod client_handles;
mod driver;
mod executor;

pub use arena::{ArenaAccess, HostSpan, NoArena, SessionTransport};
pub use driver::{run_session, SessionConfig, SessionError, SessionSummary};
pub use executor::{Executor, SessionStats};
