//! The compute share of partial GPUs: a client admitted with share `p` of a
//! device gets about `p` of its kernel time while other clients are busy on
//! it, and all of it when alone (work-conserving).
//!
//! Exists because workers are separate processes, so the share must be
//! coordinated across processes per device. The mechanism (see
//! `docs/worker.md`, "Compute share"):
//!
//! - [`board`]: a small table of atomics per device ([`Board`]), meant to
//!   live in memory shared by the daemon and its workers, holding for each
//!   client its share, when it was last busy and its consumed kernel time.
//!   No lock, no round trip to the daemon on a launch.
//! - [`gate`]: each worker's launch token bucket ([`ShareGate`]), refilled
//!   at its share of wall time (normalised over the busy clients) and
//!   charged the measured kernel time; a launch waits, bounded, while the
//!   bucket is empty and others are busy.
//! - [`backend`]: [`Shared`], a [`Backend`](crate::Backend) decorator that
//!   passes every launch through the gate and charges it, and counts the
//!   session's live usage ([`usage`]) in its board slot.
//! - [`utilization`]: the device's kernel-busy percent over a sliding
//!   window of board samples (`nvmlDeviceGetUtilizationRates`, `/metrics`).

pub mod backend;
pub mod board;
pub mod clock;
pub mod gate;
pub mod usage;
pub mod utilization;

pub use backend::Shared;
pub use board::{Board, SlotUse, SLOTS_MAX};
pub use gate::{GateConfig, ShareGate};
pub use usage::{CallKind, Direction, Usage, UsageCells, CALL_KINDS};
pub use utilization::{Tally, Utilization, Window};
