//! Caller-supplied virtual time.
//!
//! The state machines never read a clock: every `handle_*` call takes a
//! [`Timestamp`] and deadlines come back out through `poll_timeout`. A plain
//! nanosecond counter keeps simulated time trivial (the `sim` module just adds
//! to it) while a real transport can feed `Instant`-derived values.

use core::ops::{Add, Sub};

/// A point in time, in nanoseconds since an arbitrary caller-chosen epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The epoch.
    pub const ZERO: Self = Self(0);

    /// Nanoseconds since the epoch.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Timestamp {
    type Output = Self;

    /// Adds nanoseconds, saturating at the far future.
    fn add(self, ns: u64) -> Self {
        Self(self.0.saturating_add(ns))
    }
}

impl Sub for Timestamp {
    type Output = u64;

    /// Nanoseconds between two timestamps, saturating at zero.
    fn sub(self, rhs: Self) -> u64 {
        self.saturating_since(rhs)
    }
}
