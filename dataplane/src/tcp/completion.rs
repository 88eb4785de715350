//! Tags carried in `user_data` and the bookkeeping each completion updates.
//!
//! Exists so the meaning of every CQE (send result, zero-copy notification,
//! multishot data, direct receive) is decoded in one place, free of I/O.

use std::collections::VecDeque;

/// `user_data` of send SQEs (`SEND`, `SEND_ZC`, `SENDMSG`).
pub(crate) const TAG_SEND: u64 = 1;
/// `user_data` of the multishot receive.
pub(crate) const TAG_RECV_MULTI: u64 = 2;
/// `user_data` of the plain (fallback) receive into the transport's buffer.
pub(crate) const TAG_RECV_PLAIN: u64 = 3;
/// `user_data` of a receive straight into the caller's buffer.
pub(crate) const TAG_RECV_DIRECT: u64 = 4;
/// `user_data` of cancel requests (their own result is not interesting).
pub(crate) const TAG_CANCEL: u64 = 5;
/// `user_data` of the wait tick (see `uring::Tick`).
pub(crate) const TAG_TICK: u64 = 6;

/// A run of received bytes not yet handed to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Bytes `off..len` of provided buffer `bid`.
    Provided {
        /// Buffer id.
        bid: u16,
        /// Valid length.
        len: usize,
        /// Already consumed prefix.
        off: usize,
    },
    /// Bytes `off..len` of the transport's plain receive buffer.
    Plain {
        /// Valid length.
        len: usize,
        /// Already consumed prefix.
        off: usize,
    },
}

/// How the receive direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Orderly EOF (peer closed).
    Eof,
    /// A receive failed with this errno.
    Errno(i32),
}

/// State of the single send in flight (sends are serialised to keep order).
#[derive(Debug, Default)]
pub(crate) struct SendState {
    /// A send SQE awaits its result CQE.
    pub in_flight: bool,
    /// The result of the last completed send SQE.
    pub result: Option<i32>,
    /// Zero-copy notifications still owed by the kernel.
    pub notifs_pending: u32,
}

/// Receive-side state.
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    /// The multishot receive is armed in the kernel.
    pub multi_armed: bool,
    /// Multishot proved unsupported at run time; use plain receives.
    pub multi_unsupported: bool,
    /// The plain receive into the transport buffer is in flight.
    pub plain_in_flight: bool,
    /// A receive into the caller's buffer is in flight.
    pub direct_in_flight: bool,
    /// The result of the last direct receive.
    pub direct_result: Option<i32>,
    /// Bytes received but not yet delivered, in stream order.
    pub ready: VecDeque<Chunk>,
    /// Set once the stream ended; reported after `ready` drains.
    pub end: Option<StreamEnd>,
}

impl RecvState {
    /// Nothing of ours is in flight in the kernel on the receive side.
    pub(crate) fn idle(&self) -> bool {
        !self.multi_armed && !self.plain_in_flight && !self.direct_in_flight
    }
}

/// Applies one completion of the send direction.
pub(crate) fn on_send(state: &mut SendState, res: i32, flags: u32) {
    if io_uring::cqueue::notif(flags) {
        debug_assert!(
            state.notifs_pending > 0,
            "unexpected zero-copy notification"
        );
        state.notifs_pending = state.notifs_pending.saturating_sub(1);
        return;
    }
    debug_assert!(state.in_flight, "send completion without a send in flight");
    state.in_flight = false;
    state.result = Some(res);
    if io_uring::cqueue::more(flags) {
        state.notifs_pending += 1;
    }
}

/// What a multishot completion asks of the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MultiEvent {
    /// Buffer `bid` holds `len` new bytes (the transport must take it).
    Data {
        /// Buffer id.
        bid: u16,
        /// Byte count.
        len: usize,
    },
    /// Nothing to deliver (ENOBUFS, cancellation, or a stream end recorded in state).
    Nothing,
    /// The kernel rejected multishot receive: switch to plain receives.
    Unsupported,
}

/// Applies one multishot-receive completion to `state`.
pub(crate) fn on_recv_multi(state: &mut RecvState, res: i32, flags: u32) -> MultiEvent {
    if !io_uring::cqueue::more(flags) {
        state.multi_armed = false;
    }
    match res {
        n if n > 0 => match io_uring::cqueue::buffer_select(flags) {
            Some(bid) => MultiEvent::Data {
                bid,
                len: n.unsigned_abs() as usize,
            },
            None => {
                state.end = Some(StreamEnd::Errno(libc::EIO));
                MultiEvent::Nothing
            }
        },
        0 => {
            state.end.get_or_insert(StreamEnd::Eof);
            MultiEvent::Nothing
        }
        e if e == -libc::ENOBUFS || e == -libc::ECANCELED => MultiEvent::Nothing,
        e if e == -libc::EINVAL && !state.multi_unsupported => {
            state.multi_unsupported = true;
            MultiEvent::Unsupported
        }
        e => {
            state.end.get_or_insert(StreamEnd::Errno(-e));
            MultiEvent::Nothing
        }
    }
}

/// Applies one plain-receive completion.
pub(crate) fn on_recv_plain(state: &mut RecvState, res: i32) {
    state.plain_in_flight = false;
    match res {
        n if n > 0 => state.ready.push_back(Chunk::Plain {
            len: n.unsigned_abs() as usize,
            off: 0,
        }),
        0 => {
            state.end.get_or_insert(StreamEnd::Eof);
        }
        e if e == -libc::ECANCELED => {}
        e => {
            state.end.get_or_insert(StreamEnd::Errno(-e));
        }
    }
}

/// Errnos that mean the peer (or the path to it) is gone for good.
pub(crate) fn errno_is_peer_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNRESET
            | libc::EPIPE
            | libc::ECONNABORTED
            | libc::ENOTCONN
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const F_MORE: u32 = 1 << 1; // IORING_CQE_F_MORE
    const F_BUFFER: u32 = 1 << 0; // IORING_CQE_F_BUFFER
    const F_NOTIF: u32 = 1 << 3; // IORING_CQE_F_NOTIF

    #[test]
    fn zero_copy_send_waits_for_notification() {
        let mut s = SendState {
            in_flight: true,
            ..SendState::default()
        };
        on_send(&mut s, 100, F_MORE);
        assert_eq!(
            (s.in_flight, s.result, s.notifs_pending),
            (false, Some(100), 1)
        );
        on_send(&mut s, 0, F_NOTIF);
        assert_eq!(s.notifs_pending, 0);
    }

    #[test]
    fn multishot_data_names_buffer_and_keeps_armed() {
        let mut r = RecvState {
            multi_armed: true,
            ..RecvState::default()
        };
        let ev = on_recv_multi(&mut r, 7, F_MORE | F_BUFFER | (5 << 16));
        assert_eq!(ev, MultiEvent::Data { bid: 5, len: 7 });
        assert!(r.multi_armed);
    }

    #[test]
    fn multishot_enobufs_disarms_without_ending_stream() {
        let mut r = RecvState {
            multi_armed: true,
            ..RecvState::default()
        };
        assert_eq!(
            on_recv_multi(&mut r, -libc::ENOBUFS, 0),
            MultiEvent::Nothing
        );
        assert!(!r.multi_armed);
        assert_eq!(r.end, None);
    }

    #[test]
    fn eof_and_reset_end_the_stream() {
        let mut r = RecvState {
            multi_armed: true,
            ..RecvState::default()
        };
        on_recv_multi(&mut r, 0, 0);
        assert_eq!(r.end, Some(StreamEnd::Eof));
        let mut r = RecvState::default();
        on_recv_plain(&mut r, -libc::ECONNRESET);
        assert_eq!(r.end, Some(StreamEnd::Errno(libc::ECONNRESET)));
        assert!(errno_is_peer_gone(libc::ECONNRESET));
        assert!(!errno_is_peer_gone(libc::EINVAL));
    }

    #[test]
    fn einval_switches_to_plain_receive_once() {
        let mut r = RecvState {
            multi_armed: true,
            ..RecvState::default()
        };
        assert_eq!(
            on_recv_multi(&mut r, -libc::EINVAL, 0),
            MultiEvent::Unsupported
        );
        assert!(r.multi_unsupported);
        assert_eq!(r.end, None);
    }
}
