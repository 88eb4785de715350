//! Turning optional caller deadlines into bounded waits.
//!
//! Exists so every transport applies the same rule: `None` means the
//! configured default timeout, and no wait is ever unbounded.

use std::time::{Duration, Instant};

/// Resolves an optional deadline against a default timeout in milliseconds.
pub(crate) fn resolve(deadline: Option<Instant>, default_timeout_ms: u64) -> Instant {
    deadline.unwrap_or_else(|| Instant::now() + Duration::from_millis(default_timeout_ms))
}

/// Time left until `deadline`, or `None` once it has passed.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_resolves_to_default_in_the_future() {
        let before = Instant::now();
        let d = resolve(None, 5_000);
        assert!(d >= before + Duration::from_millis(5_000));
        assert!(remaining(d).is_some());
    }

    #[test]
    fn past_deadline_has_no_time_left() {
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(remaining(past), None);
        let explicit = resolve(Some(past), 5_000);
        assert_eq!(explicit, past);
    }
}
