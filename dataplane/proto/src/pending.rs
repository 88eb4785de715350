//! The bounded table of sync calls awaiting a reply.
//!
//! Both sides keep one: the client to match replies (and abort the rest on
//! close), the server to validate the application's replies. Entries are
//! (call id, call code) in submission order; replies usually come in order,
//! so lookup checks the front first and falls back to a short scan (the
//! table never holds more than `max_pending_sync` entries).

use std::collections::VecDeque;

/// Outstanding sync calls: (id, code).
#[derive(Debug)]
pub(crate) struct Pending {
    entries: VecDeque<(u64, u16)>,
    max: u32,
}

impl Pending {
    /// An empty table holding at most `max` calls.
    pub(crate) fn new(max: u32) -> Self {
        Self {
            entries: VecDeque::with_capacity(max as usize),
            max,
        }
    }

    /// The bound.
    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// Calls outstanding.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no call is outstanding.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether another call would exceed the bound.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.max as usize
    }

    /// Records call `id` with `code`; the caller checked `is_full`.
    pub(crate) fn push(&mut self, id: u64, code: u16) {
        debug_assert!(!self.is_full());
        self.entries.push_back((id, code));
    }

    /// Code of outstanding call `id`, if any.
    #[inline]
    pub(crate) fn code_of(&self, id: u64) -> Option<u16> {
        match self.entries.front() {
            Some(&(s, c)) if s == id => Some(c),
            _ => self.entries.iter().find(|e| e.0 == id).map(|e| e.1),
        }
    }

    /// Removes call `id`; false if absent.
    #[inline]
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        if self.entries.front().is_some_and(|e| e.0 == id) {
            self.entries.pop_front();
            return true;
        }
        match self.entries.iter().position(|e| e.0 == id) {
            Some(i) => self.entries.remove(i).is_some(),
            None => false,
        }
    }

    /// Removes and returns the oldest call.
    pub(crate) fn pop_oldest(&mut self) -> Option<(u64, u16)> {
        self.entries.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;

    #[test]
    fn bounded_lookup_and_removal() {
        let mut p = Pending::new(2);
        p.push(5, 0x101);
        p.push(7, 0x110);
        assert!(p.is_full());
        assert_eq!(p.code_of(7), Some(0x110));
        assert_eq!(p.code_of(6), None);
        assert!(p.remove(7), "out-of-order removal");
        assert!(!p.remove(7));
        assert_eq!(p.pop_oldest(), Some((5, 0x101)));
        assert!(p.is_empty());
    }
}
