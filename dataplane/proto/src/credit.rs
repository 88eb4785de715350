//! Credit accounting for async calls, one type per side of a connection.
//!
//! The server grants a window (calls and frame bytes) in the handshake; the
//! client spends from it per async call ([`Wallet`]) and the server tracks
//! what it admitted, what completed and what it has not yet given back
//! ([`Ledger`]). Grants travel incrementally, so both sides only add and
//! subtract; each side checks the other never exceeds the window.

use std::collections::VecDeque;

use crate::control::CreditGrant;
use crate::error::ConnError;

/// The client's spendable credit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wallet {
    window_calls: u32,
    window_bytes: u64,
    avail_calls: u32,
    avail_bytes: u64,
}

impl Wallet {
    /// A full wallet for the window granted in the handshake.
    pub(crate) fn open(calls: u32, bytes: u32) -> Self {
        Self {
            window_calls: calls,
            window_bytes: bytes.into(),
            avail_calls: calls,
            avail_bytes: bytes.into(),
        }
    }

    /// Credit left: (calls, bytes).
    pub(crate) fn avail(&self) -> (u32, u64) {
        (self.avail_calls, self.avail_bytes)
    }

    /// The byte window (the largest async frame that can ever be sent).
    pub(crate) fn window_bytes(&self) -> u64 {
        self.window_bytes
    }

    /// Spends one call and `bytes`; false (and nothing spent) if short.
    #[inline]
    pub(crate) fn try_spend(&mut self, bytes: u64) -> bool {
        if self.avail_calls == 0 || bytes > self.avail_bytes {
            return false;
        }
        self.avail_calls -= 1;
        self.avail_bytes -= bytes;
        true
    }

    /// Adds returned credit.
    ///
    /// # Errors
    /// [`ConnError::CreditOverflow`] if it would exceed the window (a
    /// lying or buggy server).
    pub(crate) fn refund(&mut self, g: CreditGrant) -> Result<(), ConnError> {
        let calls = u64::from(self.avail_calls) + u64::from(g.calls);
        let bytes = self.avail_bytes + u64::from(g.bytes);
        if calls > u64::from(self.window_calls) || bytes > self.window_bytes {
            return Err(ConnError::CreditOverflow {
                calls: g.calls,
                bytes: g.bytes,
            });
        }
        // calls <= window_calls, which is a u32.
        self.avail_calls = calls as u32;
        self.avail_bytes = bytes;
        Ok(())
    }
}

/// The server's record of async calls admitted against the window.
#[derive(Debug)]
pub(crate) struct Ledger {
    window_calls: u32,
    window_bytes: u32,
    /// Admitted, not yet completed: (id, frame bytes), in arrival order.
    outstanding: VecDeque<(u64, u32)>,
    outstanding_bytes: u64,
    /// Completed but not yet returned to the client.
    unreturned: CreditGrant,
}

impl Ledger {
    /// An empty ledger for the window the server grants.
    pub(crate) fn new(window_calls: u32, window_bytes: u32) -> Self {
        Self {
            window_calls,
            window_bytes,
            outstanding: VecDeque::with_capacity(window_calls as usize),
            outstanding_bytes: 0,
            unreturned: CreditGrant::default(),
        }
    }

    /// Async calls admitted and not completed.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Admits async call `id` of `bytes` frame bytes.
    ///
    /// # Errors
    /// [`ConnError::CreditViolation`] if the client exceeded the window:
    /// everything admitted and not yet returned counts against it.
    #[inline]
    pub(crate) fn admit(&mut self, id: u64, bytes: u32) -> Result<(), ConnError> {
        let calls = self.outstanding.len() as u64 + u64::from(self.unreturned.calls) + 1;
        let total = self.outstanding_bytes + u64::from(self.unreturned.bytes) + u64::from(bytes);
        if calls > u64::from(self.window_calls) || total > u64::from(self.window_bytes) {
            return Err(ConnError::CreditViolation {
                calls,
                bytes: total,
            });
        }
        self.outstanding.push_back((id, bytes));
        self.outstanding_bytes += u64::from(bytes);
        Ok(())
    }

    /// Marks `id` completed, making its credit returnable; false if `id`
    /// is not outstanding. In-order completion is O(1).
    #[inline]
    pub(crate) fn complete(&mut self, id: u64) -> bool {
        let idx = match self.outstanding.front() {
            Some(&(s, _)) if s == id => 0,
            _ => match self.outstanding.iter().position(|&(s, _)| s == id) {
                Some(i) => i,
                None => return false,
            },
        };
        let Some((_, bytes)) = self.outstanding.remove(idx) else {
            return false;
        };
        self.outstanding_bytes -= u64::from(bytes);
        // Both stay within the window (u32s) by `admit`'s check.
        self.unreturned.calls += 1;
        self.unreturned.bytes += bytes;
        debug_assert!(self.unreturned.calls <= self.window_calls);
        true
    }

    /// Whether an explicit credit frame should go out: enough unreturned
    /// calls or bytes, or nothing outstanding (the client may be blocked).
    pub(crate) fn return_due(&self, threshold_calls: u32) -> bool {
        let g = self.unreturned;
        g.calls > 0
            && (g.calls >= threshold_calls
                || g.bytes >= self.window_bytes / 4
                || self.outstanding.is_empty())
    }

    /// Takes the unreturned credit for sending.
    pub(crate) fn take_unreturned(&mut self) -> CreditGrant {
        core::mem::take(&mut self.unreturned)
    }

    /// The unreturned credit, without taking it.
    pub(crate) fn unreturned(&self) -> CreditGrant {
        self.unreturned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_spends_and_refuses_overflow() {
        let mut w = Wallet::open(2, 100);
        assert!(w.try_spend(60));
        assert!(!w.try_spend(50), "bytes short");
        assert!(w.try_spend(40));
        assert!(!w.try_spend(0), "calls short");
        assert_eq!(w.avail(), (0, 0));
        w.refund(CreditGrant {
            calls: 2,
            bytes: 100,
        })
        .unwrap();
        assert_eq!(w.avail(), (2, 100));
        assert!(matches!(
            w.refund(CreditGrant { calls: 1, bytes: 0 }),
            Err(ConnError::CreditOverflow { .. })
        ));
    }

    #[test]
    fn ledger_counts_unreturned_against_window() {
        let mut l = Ledger::new(2, 1000);
        l.admit(1, 64).unwrap();
        l.admit(2, 64).unwrap();
        assert!(l.admit(3, 64).is_err(), "window full");
        assert!(l.complete(2), "out-of-order completion");
        assert!(!l.complete(2), "completed twice");
        assert!(
            l.admit(3, 64).is_err(),
            "completed but unreturned still counts"
        );
        assert!(!l.return_due(8));
        assert!(l.complete(1));
        assert!(l.return_due(8), "drained queue returns credit");
        assert_eq!(
            l.take_unreturned(),
            CreditGrant {
                calls: 2,
                bytes: 128
            }
        );
        l.admit(3, 64).unwrap();
        assert_eq!(l.outstanding(), 1);
    }
}
