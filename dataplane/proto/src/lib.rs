//! Sans-IO wire protocol of the rgpu data plane.
//!
//! This crate turns CUDA calls into frames and frames back into calls, and
//! runs the per-connection state machine (handshake and auth, sequencing,
//! batching, credits, deferred and sticky errors, timeouts) — without
//! sockets, rings, threads, clocks or syscalls. Bytes and a caller-supplied
//! [`Timestamp`] go in; frames to send, events and deadlines come out. The
//! transports (`rgpu-dataplane`) move the bytes; this crate is a leaf.
//!
//! # Pieces
//! - [`header`]: the fixed 32-byte little-endian frame header.
//! - [`calls`]: the declarative call table (via `call_table!`), generating
//!   [`Call`], [`Reply`], per-call structs and [`CALL_TABLE`].
//! - [`control`]: handshake, credit and close frames.
//! - [`frame`]: frame writing and reassembly from any chunking.
//! - [`Client`] / [`Server`]: the two roles of the connection state machine.
//! - [`sim`] (feature `sim`, on by default): deterministic in-memory
//!   transport pair with virtual time for tests; [`fuzzing`]: the fuzz driver.
//!
//! # Driving a connection (polling order)
//! Both roles follow quinn-proto's shape: `handle_*` methods take input,
//! `poll_*` methods produce output. Events are delivered through a visitor
//! closure passed to each `handle_*` call, because decoded calls and replies
//! *borrow from the input bytes*: a visitor lets them stay zero-copy without
//! tying the connection's lifetime to the input buffer. The server's visitor
//! also receives a [`Responder`] so a call can be answered in place.
//!
//! After any input, timeout or submission, a driver loop does:
//! 1. `handle_input(now, bytes, visitor)` for each received chunk, then
//!    `handle_timeout(now, visitor)` if `now` passed the last
//!    `poll_timeout()`; or `handle_close(visitor)` on transport EOF.
//! 2. (client) `submit(now, &call, stream)` for new calls; `flush()` when
//!    it wants the open batch out before the linger deadline.
//! 3. `poll_transmit(&mut buf)` until it returns `None`, sending each batch
//!    (one doorbell / send per batch). (client) A batch may owe a trailer
//!    right behind it; see "Trailers" below.
//! 4. `poll_timeout()` to arm the timer for step 1.
//!
//! # Trailers (stream framing only)
//! A sync call whose payload is [`Payload::Trailing`]`{ len }` carries its
//! bytes *after* its frame, outside any frame (rCUDA-style pipelined bulk
//! transfer: no copy into the batch, none out of a reassembly buffer).
//! - Client: `submit` seals the batch right after that frame. Before
//!   sending a batch, `peek_trailer()` says whether `len` payload bytes must
//!   follow it; send both at once (e.g. one vectored send `[batch,
//!   payload]`), then `advance_transmit()` (or use `poll_transmit`, after
//!   which `trailer_owed()` is `Some`). While a trailer is owed,
//!   `peek_transmit`/`poll_transmit` yield nothing; report the bytes with
//!   `trailer_sent(n)` and batches flow again.
//! - Server: the call arrives as [`ServerEvent::Call`]; then, while
//!   `trailer_remaining()` is `Some((id, n))`, the next `n` stream bytes are
//!   the trailer. Bytes already in the chunk given to `handle_input` come
//!   as [`ServerEvent::Trailer`] events (borrowing the input); the driver
//!   may read the rest straight into the destination and report it with
//!   `trailer_received(now, n)`. The call can be answered once its trailer
//!   is complete (`ReplyError::TrailerIncomplete` before). EOF inside a
//!   trailer closes with `ConnError::TrailerTruncated`.
//!
//! Trailers are refused on message framing (shm, RDMA: use arena
//! references), on async calls and in replies, with typed errors.
//!
//! ```
//! use rgpu_proto::*;
//! let now = Timestamp::ZERO;
//! let mut c = Client::new(ClientConfig::default(), now);
//! let mut s = Server::new(ServerConfig::default(), now);
//! let (mut to_s, mut to_c) = (Vec::new(), Vec::new());
//! while c.poll_transmit(&mut to_s).is_some() {}
//! s.handle_input(now, &to_s, |_, _| {}).unwrap();
//! while s.poll_transmit(&mut to_c).is_some() {}
//! c.handle_input(now, &to_c, |_| {}).unwrap();
//! assert!(c.is_open());
//!
//! let id = c.submit(now, &Nop {}, StreamHandle(0)).unwrap();
//! to_s.clear();
//! while c.poll_transmit(&mut to_s).is_some() {}
//! s.handle_input(now, &to_s, |ev, r| {
//!     if let ServerEvent::Call { id, .. } = ev {
//!         r.reply(id, Ok(Reply::NopReply(NopReply {}))).unwrap();
//!     }
//! })
//! .unwrap();
//! to_c.clear();
//! while s.poll_transmit(&mut to_c).is_some() {}
//! let mut answered = false;
//! c.handle_input(now, &to_c, |ev| {
//!     answered |= matches!(ev, ClientEvent::Reply { id: got, result: Ok(_) } if got == id);
//! })
//! .unwrap();
//! assert!(answered);
//! ```
//!
//! See `docs/wire.md` and `docs/protocol.md` at the repository root for the wire
//! spec and the state machine.

#![forbid(unsafe_code)]

#[macro_use]
mod table;

mod auth;
mod batch;
pub mod calls;
mod client;
pub mod control;
mod credit;
mod cuda;
mod error;
pub mod field;
pub mod frame;
#[cfg(feature = "sim")]
pub mod fuzzing;
pub mod header;
mod message;
mod pending;
mod responder;
mod server;
#[cfg(feature = "sim")]
pub mod sim;
mod time;

pub use calls::*;
pub use client::{CallId, Client, ClientConfig, ClientEvent, OwedTrailer};
pub use cuda::CudaError;
pub use error::{
    ConnError, DecodeError, FieldError, HeaderError, ReplyError, SubmitError, TrailerError,
};
pub use field::{
    Blob, DevicePtr, EventHandle, FunctionHandle, ModuleHandle, ParamSlot, Payload, Slots,
    StreamHandle, MAX_INLINE_BYTES, MAX_TRAILER_BYTES,
};
pub use frame::Framing;
pub use header::{HEADER_BYTES, MAX_BODY_BYTES, WIRE_VERSION};
pub use message::{render_call_table_markdown, CallClass, CallInfo, Message};
pub use server::{Responder, Server, ServerConfig, ServerEvent};
pub use time::Timestamp;
