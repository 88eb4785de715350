//! The clock the compute share stamps the board with. Exists because the
//! stamps are compared across processes, which `std::time::Instant` cannot
//! express: `CLOCK_MONOTONIC` is one clock for every process on the host.

/// Nanoseconds on `CLOCK_MONOTONIC` (the same clock in every process).
#[must_use]
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(a > 0 && b >= a);
    }
}
