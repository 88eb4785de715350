//! `TcpUringTransport`: the [`Transport`] over one TCP connection driven by io_uring.
//!
//! Exists to carry the send/receive state machine: serialised sends (plain,
//! staged-and-registered, or zero-copy), the multishot receive feeding
//! provided buffers, direct receives into caller memory, and bounded waits.
//!
//! Buffer ownership: every SQE that points at caller memory completes (and,
//! for `SEND_ZC`, its notification arrives) before the call that issued it
//! returns; timeouts cancel and settle the request first. Transport-owned
//! buffers (provided ring, plain buffer, staging buffer) follow the rules of
//! their modules.

use std::io::IoSlice;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

use super::bufring::{BufRing, BUF_GROUP_ID};
use super::completion::{
    self, Chunk, MultiEvent, RecvState, SendState, StreamEnd, TAG_CANCEL, TAG_RECV_DIRECT,
    TAG_RECV_MULTI, TAG_RECV_PLAIN, TAG_SEND, TAG_TICK,
};
use super::config::{TcpConfig, BATCH_BYTES_MAX, CANCEL_WAIT_MS_MAX};
use super::plainbuf::PlainBuf;
use super::stage::{StageBuf, STAGE_BUF_INDEX};
use super::uring::{self, Caps, Tick, Waited};
use crate::deadline;
use crate::error::{Result, TransportError};
use crate::transport::{Transport, TransportKind};

/// Flags of every send: no SIGPIPE in a host process we do not control, and
/// let the kernel finish short sends itself.
const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
/// Most parts one `SENDMSG` carries (the kernel's `IOV_MAX`); more are sent part by part.
const IOV_PARTS_MAX: usize = 1024;
/// Largest length one send or receive SQE carries.
const SQE_BYTES_MAX: usize = 1 << 30;
/// Escalation steps when a request must be settled: cancel; cancel and
/// reset the connection; shut the socket down (then abort).
const SETTLE_STEPS_MAX: u32 = 3;

/// Which io_uring paths a transport actually uses (after probing and config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFeatures {
    /// Receives use multishot `RECV` with a provided-buffer ring.
    pub multishot_recv: bool,
    /// Large sends use `SEND_ZC`.
    pub send_zc: bool,
}

/// Where the bytes of one send come from.
#[derive(Clone, Copy)]
enum Src {
    /// Caller memory (must not outlive the call).
    Caller { ptr: *const u8, len: usize },
    /// The registered staging buffer.
    Stage { ptr: *const u8, len: usize },
}

/// A TCP connection driven through io_uring; see the module docs.
///
/// Single owner: all methods take `&mut self`; share it across threads with a
/// mutex or give each thread its own connection.
pub struct TcpUringTransport {
    // Field order is drop order: the ring goes first, then the memory it used.
    ring: IoUring,
    bufs: Option<BufRing>,
    stage: StageBuf,
    plain: PlainBuf,
    stream: TcpStream,
    caps: Caps,
    cfg: TcpConfig,
    send: SendState,
    recv: RecvState,
    /// Zero-copy is off for this socket: it failed once (e.g. `EOPNOTSUPP`), or the peer is on
    /// loopback and `zc_on_loopback` is off; copy instead.
    zc_refused: bool,
    /// Why the transport refuses further use, if it does.
    broken: Option<&'static str>,
    /// `single_thread` mode: the thread that enabled the ring.
    issuer: Option<ThreadId>,
    tick: Tick,
}

impl std::fmt::Debug for TcpUringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpUringTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .field("features", &self.features())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl TcpUringTransport {
    /// Connects to `addr` (bounded by `cfg.connect_timeout_ms`), sets
    /// `TCP_NODELAY` and builds the ring.
    pub fn connect(addr: impl ToSocketAddrs, cfg: TcpConfig) -> Result<Self> {
        cfg.validate()?;
        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| TransportError::io("resolve address", e))?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => return Self::from_stream(stream, cfg),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = Some(TransportError::Timeout { op: "connect" });
                }
                Err(e) => last = Some(TransportError::io("connect", e)),
            }
        }
        Err(last.unwrap_or(TransportError::InvalidConfig("address resolved to nothing")))
    }

    /// Wraps an established stream (e.g. from [`super::TcpUringListener`]).
    pub fn from_stream(stream: TcpStream, cfg: TcpConfig) -> Result<Self> {
        cfg.validate()?;
        stream
            .set_nodelay(true)
            .map_err(|e| TransportError::io("setsockopt TCP_NODELAY", e))?;
        stream
            .set_nonblocking(false)
            .map_err(|e| TransportError::io("fcntl blocking", e))?;
        let (ring, caps) = uring::setup(cfg.sq_entries, cfg.single_thread)?;
        let bufs = if caps.recv_multishot && cfg.multishot_recv {
            match BufRing::register(&ring, cfg.recv_buf_count, cfg.recv_buf_bytes) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::info!(error = %e, "provided buffer ring unavailable; plain recv fallback");
                    None
                }
            }
        } else {
            None
        };
        let stage = StageBuf::register(&ring, cfg.send_stage_bytes)?;
        let cfg_tick_ms = cfg.wait_tick_ms;
        let cfg_zc_on_loopback = cfg.zc_on_loopback;
        let peer_is_loopback = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
        let plain = PlainBuf::new(cfg.recv_buf_bytes)?;
        tracing::debug!(peer = ?stream.peer_addr().ok(), multishot = bufs.is_some(), "tcp transport up");
        Ok(Self {
            ring,
            bufs,
            stage,
            plain,
            stream,
            caps,
            cfg,
            send: SendState::default(),
            recv: RecvState::default(),
            zc_refused: !cfg_zc_on_loopback && peer_is_loopback,
            broken: None,
            issuer: None,
            tick: Tick {
                period: Duration::from_millis(cfg_tick_ms),
                pending: false,
            },
        })
    }

    /// The io_uring paths in use.
    pub fn features(&self) -> TcpFeatures {
        TcpFeatures {
            multishot_recv: self.multishot_active(),
            send_zc: self.caps.send_zc
                && !self.zc_refused
                && self.cfg.zc_threshold_bytes != usize::MAX,
        }
    }

    /// The underlying socket (for inspection, e.g. `getsockopt`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Remote address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.stream
            .peer_addr()
            .map_err(|e| TransportError::io("getpeername", e))
    }

    fn multishot_active(&self) -> bool {
        self.bufs.is_some() && !self.recv.multi_unsupported
    }

    /// Refuses use after a failure, and (in `single_thread` mode) enables the
    /// ring on first use and refuses other threads afterwards.
    fn usable(&mut self, op: &'static str) -> Result<()> {
        if let Some(reason) = self.broken {
            return Err(TransportError::Closed { op, reason });
        }
        if self.cfg.single_thread {
            let me = std::thread::current().id();
            match self.issuer {
                Some(owner) if owner == me => {}
                Some(_) => {
                    return Err(TransportError::Closed {
                        op,
                        reason: "single_thread transport used from a second thread",
                    })
                }
                None => {
                    uring::enable(&self.ring)?;
                    self.issuer = Some(me);
                }
            }
        }
        Ok(())
    }

    /// CQ polls before blocking: none with `DEFER_TASKRUN`, whose completions
    /// only appear inside `io_uring_enter`.
    fn spins(&self) -> u32 {
        if self.cfg.single_thread {
            0
        } else {
            self.cfg.busy_poll_spins
        }
    }

    /// Whether this thread may wait on the ring (always, unless a
    /// `single_thread` ring belongs to another thread or was never enabled).
    fn may_drive(&self) -> bool {
        !self.cfg.single_thread || self.issuer == Some(std::thread::current().id())
    }

    // ---- completion processing -------------------------------------------------

    /// Drains the completion queue into the send/receive state.
    fn reap(&mut self) {
        let Self {
            ring,
            bufs,
            plain,
            send,
            recv,
            broken,
            tick,
            ..
        } = self;
        for cqe in ring.completion() {
            let (res, flags) = (cqe.result(), cqe.flags());
            match cqe.user_data() {
                TAG_SEND => completion::on_send(send, res, flags),
                TAG_RECV_MULTI => match completion::on_recv_multi(recv, res, flags) {
                    MultiEvent::Data { bid, len } => {
                        let owned = bufs
                            .as_mut()
                            .is_some_and(|b| b.take(bid) && len <= b.buf_bytes());
                        if owned {
                            recv.ready.push_back(Chunk::Provided { bid, len, off: 0 });
                        } else {
                            *broken = Some("kernel named an unknown provided buffer");
                        }
                    }
                    MultiEvent::Unsupported => {
                        tracing::info!("multishot recv rejected (EINVAL); plain recv fallback");
                    }
                    MultiEvent::Nothing => {}
                },
                TAG_RECV_PLAIN => {
                    plain.returned();
                    completion::on_recv_plain(recv, res);
                }
                TAG_RECV_DIRECT => {
                    recv.direct_in_flight = false;
                    recv.direct_result = Some(res);
                }
                TAG_CANCEL => {}
                TAG_TICK => tick.pending = false,
                other => tracing::warn!(user_data = other, res, "unexpected completion"),
            }
        }
    }

    /// Reaps and waits until `done` holds or the deadline passes. `want` is
    /// the completion count the first wait asks the kernel for (later waits ask
    /// for one). Returns whether `done` held.
    fn drive(
        &mut self,
        deadline: Instant,
        mut want: usize,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<bool> {
        loop {
            self.reap();
            if done(self) {
                return Ok(true);
            }
            let spins = self.spins();
            match uring::wait(&mut self.ring, want, deadline, spins, &mut self.tick)? {
                Waited::Ready => want = 1,
                Waited::Expired => {
                    self.reap();
                    return Ok(done(self));
                }
            }
        }
    }

    /// [`drive`](Self::drive) for waits on requests that point at caller
    /// memory: if the wait itself fails, the request is settled before the
    /// error propagates, so the memory is never left with the kernel.
    fn drive_owned(
        &mut self,
        deadline: Instant,
        want: usize,
        done: impl FnMut(&mut Self) -> bool,
        tag: u64,
        settled: fn(&Self) -> bool,
    ) -> Result<bool> {
        match self.drive(deadline, want, done) {
            Ok(d) => Ok(d),
            Err(e) => {
                self.settle(tag, settled);
                self.broken = Some("io_uring wait failed");
                Err(e)
            }
        }
    }

    /// Waits until `settled` holds after cancelling the request(s) tagged
    /// `tag`, escalating: cancel; cancel and disconnect the socket
    /// (`connect(AF_UNSPEC)` resets the connection and purges its queues,
    /// which also releases `SEND_ZC` pages a stuck peer never acknowledged);
    /// shut the socket down. Memory safety depends on this: caller buffers may
    /// only be released once the kernel is done with them, so if even that
    /// never completes the request the process aborts rather than return.
    fn settle(&mut self, tag: u64, settled: fn(&Self) -> bool) {
        for step in 0..SETTLE_STEPS_MAX {
            if step == SETTLE_STEPS_MAX - 1 {
                tracing::warn!(tag, "request did not settle; shutting the socket down");
                let _ = self.stream.shutdown(Shutdown::Both);
            } else {
                let cancel = opcode::AsyncCancel::new(tag).build().user_data(TAG_CANCEL);
                // SAFETY: a cancel request points at no memory.
                let _ = unsafe { uring::push(&mut self.ring, &cancel) };
                if step == 1 {
                    tracing::warn!(
                        tag,
                        "request did not settle after cancel; resetting the connection"
                    );
                    self.broken = Some("connection reset to release kernel references");
                    let _ = rustix::net::connect_unspec(&self.stream);
                }
            }
            let until = Instant::now() + Duration::from_millis(CANCEL_WAIT_MS_MAX);
            match self.drive(until, 1, |s| settled(s)) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "io_uring wait failed while settling"),
            }
        }
        self.reap();
        if !settled(self) {
            tracing::error!(tag, "io_uring request still owns caller memory; aborting");
            std::process::abort();
        }
    }

    // ---- send ------------------------------------------------------------------

    fn push_send(&mut self, src: Src) -> Result<()> {
        debug_assert!(!self.send.in_flight, "sends are serialised");
        let fd = types::Fd(self.stream.as_raw_fd());
        let entry = match src {
            Src::Caller { ptr, len } => {
                let len = len.min(SQE_BYTES_MAX) as u32;
                if self.use_zc(len as usize) {
                    opcode::SendZc::new(fd, ptr, len).flags(SEND_FLAGS).build()
                } else {
                    opcode::Send::new(fd, ptr, len).flags(SEND_FLAGS).build()
                }
            }
            Src::Stage { ptr, len } => {
                let len = len.min(SQE_BYTES_MAX) as u32;
                if self.use_zc(len as usize) {
                    opcode::SendZc::new(fd, ptr, len)
                        .buf_index(Some(STAGE_BUF_INDEX))
                        .flags(SEND_FLAGS)
                        .build()
                } else {
                    opcode::Send::new(fd, ptr, len).flags(SEND_FLAGS).build()
                }
            }
        };
        // SAFETY: caller memory is borrowed by the calling send method, which
        // does not return before this request completes and its zero-copy
        // notification (if any) arrives (`finish_send`/`settle`); stage memory
        // lives as long as the ring.
        unsafe { uring::push(&mut self.ring, &entry.user_data(TAG_SEND)) }?;
        self.send.in_flight = true;
        Ok(())
    }

    /// Sends `parts` with one `SENDMSG` (`SENDMSG_ZC` when large), waiting
    /// for completion (and notification); returns the bytes sent, which may be
    /// short (the caller sends the rest).
    fn send_msg_once(
        &mut self,
        parts: &[IoSlice<'_>],
        total: usize,
        deadline: Instant,
    ) -> Result<usize> {
        debug_assert!(!self.send.in_flight, "sends are serialised");
        // SAFETY: `msghdr` is plain old data for which all-zero bytes are valid
        // (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel only reads it.
        msg.msg_iov = parts.as_ptr().cast::<libc::iovec>().cast_mut();
        msg.msg_iovlen = parts.len() as _;
        let fd = types::Fd(self.stream.as_raw_fd());
        let flags = SEND_FLAGS as u32;
        let zc = self.use_zc(total) && self.caps.send_msg_zc;
        let entry = if zc {
            opcode::SendMsgZc::new(fd, &msg).flags(flags).build()
        } else {
            opcode::SendMsg::new(fd, &msg).flags(flags).build()
        };
        // SAFETY: `msg`, the iovec array (`parts`) and the bytes it names stay
        // borrowed by this call, which returns only after the request completed
        // and its zero-copy notification (if any) arrived (`drive_owned`/`settle`).
        unsafe { uring::push(&mut self.ring, &entry.user_data(TAG_SEND)) }?;
        self.send.in_flight = true;
        let settled = |s: &Self| !s.send.in_flight && s.send.notifs_pending == 0;
        let done = self.drive_owned(deadline, 1, |s| settled(s), TAG_SEND, settled)?;
        if !done {
            self.settle(TAG_SEND, settled);
            self.broken = Some("send timed out mid-batch");
            return Err(TransportError::Timeout {
                op: "send_vectored",
            });
        }
        match self.send.result.take() {
            Some(n) if n >= 0 => Ok(n.unsigned_abs() as usize),
            Some(e) if zc && (e == -libc::EOPNOTSUPP || e == -libc::EINVAL) => {
                tracing::info!(errno = -e, "SENDMSG_ZC refused; copying sends from now on");
                self.zc_refused = true;
                Ok(0)
            }
            Some(e) => Err(self.send_errno(-e)),
            None => {
                self.broken = Some("send completion lost");
                Err(TransportError::Closed {
                    op: "send_vectored",
                    reason: "send completion lost",
                })
            }
        }
    }

    fn use_zc(&self, len: usize) -> bool {
        self.caps.send_zc && !self.zc_refused && len >= self.cfg.zc_threshold_bytes
    }

    /// Sends all of `src` (already pushed once if `pushed`), resubmitting
    /// after short sends; returns when the kernel no longer needs the memory.
    fn finish_send(&mut self, src: Src, deadline: Instant, mut pushed: bool) -> Result<()> {
        let (ptr, len) = match src {
            Src::Caller { ptr, len } | Src::Stage { ptr, len } => (ptr, len),
        };
        let mut sent = 0usize;
        while sent < len {
            if !pushed {
                // `sent < len` keeps the pointer inside the source range.
                let rest = ptr.wrapping_add(sent);
                let part = match src {
                    Src::Caller { .. } => Src::Caller {
                        ptr: rest,
                        len: len - sent,
                    },
                    Src::Stage { .. } => Src::Stage {
                        ptr: rest,
                        len: len - sent,
                    },
                };
                self.push_send(part)?;
            }
            pushed = false;
            let done = self.drive_owned(
                deadline,
                1,
                |s| !s.send.in_flight && s.send.notifs_pending == 0,
                TAG_SEND,
                |s| !s.send.in_flight && s.send.notifs_pending == 0,
            )?;
            if !done {
                self.settle(TAG_SEND, |s| {
                    !s.send.in_flight && s.send.notifs_pending == 0
                });
                self.broken = Some("send timed out mid-batch");
                return Err(TransportError::Timeout { op: "send" });
            }
            match self.send.result.take() {
                Some(n) if n > 0 => sent += n.unsigned_abs() as usize,
                Some(e)
                    if (e == -libc::EOPNOTSUPP || e == -libc::EINVAL)
                        && !self.zc_refused
                        && self.caps.send_zc =>
                {
                    tracing::info!(errno = -e, "SEND_ZC refused; copying sends from now on");
                    self.zc_refused = true;
                }
                Some(0) => {
                    self.broken = Some("send made no progress");
                    return Err(TransportError::PeerGone {
                        op: "send",
                        detail: "zero-byte send".into(),
                    });
                }
                Some(e) => return Err(self.send_errno(-e)),
                None => {
                    self.broken = Some("send completion lost");
                    return Err(TransportError::Closed {
                        op: "send",
                        reason: "send completion lost",
                    });
                }
            }
        }
        debug_assert_eq!(sent, len, "a send never overshoots");
        Ok(())
    }

    fn send_errno(&mut self, errno: i32) -> TransportError {
        self.broken = Some("send failed");
        let source = std::io::Error::from_raw_os_error(errno);
        if completion::errno_is_peer_gone(errno) {
            TransportError::PeerGone {
                op: "send",
                detail: source.to_string(),
            }
        } else {
            TransportError::io("send", source)
        }
    }

    fn check_batch(len: usize) -> Result<()> {
        if len > BATCH_BYTES_MAX {
            return Err(TransportError::TooLarge {
                op: "send",
                len,
                max: BATCH_BYTES_MAX,
            });
        }
        Ok(())
    }

    fn send_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.cfg.send_timeout_ms)
    }

    // ---- receive ---------------------------------------------------------------

    /// Makes sure a receive is pending in the kernel (multishot or plain).
    fn arm_recv(&mut self) -> Result<()> {
        if self.recv.end.is_some() || self.recv.direct_in_flight {
            return Ok(());
        }
        let fd = types::Fd(self.stream.as_raw_fd());
        if self.multishot_active() {
            if !self.recv.multi_armed {
                let entry = opcode::RecvMulti::new(fd, BUF_GROUP_ID)
                    .build()
                    .user_data(TAG_RECV_MULTI);
                // SAFETY: the request writes only into provided buffers, which
                // live as long as the ring and are read back only after their
                // completion (`BufRing` ownership rule).
                unsafe { uring::push(&mut self.ring, &entry) }?;
                self.recv.multi_armed = true;
            }
        } else if !self.recv.plain_in_flight
            && !self
                .recv
                .ready
                .iter()
                .any(|c| matches!(c, Chunk::Plain { .. }))
        {
            let (ptr, len) = self.plain.lend();
            let len = len.min(SQE_BYTES_MAX) as u32;
            let entry = opcode::Recv::new(fd, ptr, len)
                .build()
                .user_data(TAG_RECV_PLAIN);
            // SAFETY: the plain buffer lives as long as the ring and is not
            // read until this request's completion returns it.
            unsafe { uring::push(&mut self.ring, &entry) }?;
            self.recv.plain_in_flight = true;
        }
        Ok(())
    }

    fn recv_ready(&self) -> bool {
        !self.recv.ready.is_empty() || self.recv.end.is_some()
    }

    /// Hands every ready chunk to `on_bytes`, recycling buffers; returns the byte count.
    fn deliver(&mut self, on_bytes: &mut dyn FnMut(&[u8])) -> usize {
        let mut total = 0;
        while let Some(chunk) = self.recv.ready.pop_front() {
            match chunk {
                Chunk::Provided { bid, len, off } => {
                    if let Some(bufs) = self.bufs.as_mut() {
                        on_bytes(&bufs.filled(bid, len)[off..]);
                        bufs.recycle(bid);
                    }
                    total += len - off;
                }
                Chunk::Plain { len, off } => {
                    on_bytes(&self.plain.filled(len)[off..]);
                    total += len - off;
                }
            }
        }
        total
    }

    /// Copies ready bytes into `dst`, keeping the unconsumed rest; returns bytes copied.
    fn copy_ready(&mut self, dst: &mut [u8]) -> usize {
        let mut at = 0;
        while at < dst.len() {
            let Some(chunk) = self.recv.ready.front_mut() else {
                break;
            };
            let (src, off, len) = match chunk {
                Chunk::Provided { bid, len, off } => match self.bufs.as_ref() {
                    Some(b) => (b.filled(*bid, *len), off, *len),
                    None => break,
                },
                Chunk::Plain { len, off } => (self.plain.filled(*len), off, *len),
            };
            let n = (len - *off).min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&src[*off..*off + n]);
            *off += n;
            at += n;
            if *off == len {
                if let Some(Chunk::Provided { bid, .. }) = self.recv.ready.pop_front() {
                    if let Some(b) = self.bufs.as_mut() {
                        b.recycle(bid);
                    }
                }
            }
        }
        at
    }

    fn end_error(&mut self, op: &'static str) -> TransportError {
        self.broken = Some("stream ended");
        match self.recv.end {
            Some(StreamEnd::Errno(e)) if !completion::errno_is_peer_gone(e) => {
                TransportError::io(op, std::io::Error::from_raw_os_error(e))
            }
            Some(StreamEnd::Errno(e)) => TransportError::PeerGone {
                op,
                detail: std::io::Error::from_raw_os_error(e).to_string(),
            },
            Some(StreamEnd::Eof) | None => TransportError::PeerGone {
                op,
                detail: "EOF".into(),
            },
        }
    }

    /// Stops the background receive so a direct receive owns the socket.
    fn quiesce_recv(&mut self) {
        if self.recv.multi_armed {
            self.settle(TAG_RECV_MULTI, |s| !s.recv.multi_armed);
        }
        if self.recv.plain_in_flight {
            self.settle(TAG_RECV_PLAIN, |s| !s.recv.plain_in_flight);
        }
    }
}

impl Transport for TcpUringTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::TcpUring
    }

    fn send(&mut self, batch: &[u8]) -> Result<()> {
        self.usable("send")?;
        Self::check_batch(batch.len())?;
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = self.send_deadline();
        self.finish_send(
            Src::Caller {
                ptr: batch.as_ptr(),
                len: batch.len(),
            },
            deadline,
            false,
        )
    }

    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<()> {
        self.usable("send_vectored")?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        Self::check_batch(total)?;
        let deadline = self.send_deadline();
        if total <= self.stage.len() {
            // Coalesce into the registered buffer: one SQE, one doorbell.
            let slices: Vec<&[u8]> = parts.iter().map(|p| &**p).collect();
            let (ptr, len) = self.stage.fill(&slices);
            if len == 0 {
                return Ok(());
            }
            return self.finish_send(Src::Stage { ptr, len }, deadline, false);
        }
        // Too big to stage: one SENDMSG over the caller's parts (one doorbell),
        // then part by part for whatever a short send left over.
        let sent = if parts.len() <= IOV_PARTS_MAX {
            self.send_msg_once(parts, total, deadline)?
        } else {
            0
        };
        let mut skip = sent;
        for part in parts.iter() {
            let from = skip.min(part.len());
            skip -= from;
            if from < part.len() {
                let rest = &part[from..];
                let src = Src::Caller {
                    ptr: rest.as_ptr(),
                    len: rest.len(),
                };
                self.finish_send(src, deadline, false)?;
            }
        }
        Ok(())
    }

    fn recv(
        &mut self,
        deadline: Option<Instant>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        self.usable("recv")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let ready = self.drive(deadline, 1, |s| {
            // Re-arm inside the loop: multishot may end (ENOBUFS) or fall back.
            let _ = s.arm_recv();
            s.recv_ready()
        })?;
        if !ready {
            return Err(TransportError::Timeout { op: "recv" });
        }
        let n = self.deliver(on_bytes);
        if n == 0 {
            return Err(self.end_error("recv"));
        }
        // Keep a receive pending so the next call (or spin) finds data early.
        self.arm_recv()?;
        Ok(n)
    }

    fn recv_exact_into(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<()> {
        self.usable("recv_exact_into")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let mut filled = self.copy_ready(dst);
        debug_assert!(filled == dst.len() || self.recv.ready.is_empty());
        if filled < dst.len() {
            self.quiesce_recv();
            filled += self.copy_ready(&mut dst[filled..]);
        }
        while filled < dst.len() {
            if self.recv.end.is_some() {
                return Err(self.end_error("recv_exact_into"));
            }
            let rest = &mut dst[filled..];
            let len = rest.len().min(SQE_BYTES_MAX) as u32;
            let fd = types::Fd(self.stream.as_raw_fd());
            let entry = opcode::Recv::new(fd, rest.as_mut_ptr(), len)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(TAG_RECV_DIRECT);
            // SAFETY: `dst` stays mutably borrowed by this call, which returns
            // only after the request completed (`drive`, else `settle`).
            unsafe { uring::push(&mut self.ring, &entry) }?;
            self.recv.direct_in_flight = true;
            let done = self.drive_owned(
                deadline,
                1,
                |s| !s.recv.direct_in_flight,
                TAG_RECV_DIRECT,
                |s| !s.recv.direct_in_flight,
            )?;
            if !done {
                self.settle(TAG_RECV_DIRECT, |s| !s.recv.direct_in_flight);
            }
            match self.recv.direct_result.take() {
                Some(n) if n > 0 => filled += n.unsigned_abs() as usize,
                Some(0) => {
                    self.recv.end = Some(StreamEnd::Eof);
                }
                Some(e) if e == -libc::ECANCELED => {}
                Some(e) => self.recv.end = Some(StreamEnd::Errno(-e)),
                None => {}
            }
            if !done && filled < dst.len() {
                if filled > 0 {
                    self.broken = Some("recv_exact_into timed out mid-body");
                }
                return Err(TransportError::Timeout {
                    op: "recv_exact_into",
                });
            }
        }
        debug_assert_eq!(filled, dst.len());
        Ok(())
    }

    fn send_then_recv(
        &mut self,
        batch: &[u8],
        deadline: Option<Instant>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        self.usable("send_then_recv")?;
        Self::check_batch(batch.len())?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let src = Src::Caller {
            ptr: batch.as_ptr(),
            len: batch.len(),
        };
        // Arm the receive first: once the send is queued, no early return may
        // leave it in flight on caller memory.
        self.arm_recv()?;
        if !batch.is_empty() {
            self.push_send(src)?;
        }
        // One io_uring_enter submits the send and the receive and waits for
        // both completions: the send result and the first reply bytes.
        let want = if batch.is_empty() { 1 } else { 2 };
        // Whether both arrived is re-checked below, step by step.
        self.drive_owned(
            deadline,
            want,
            |s| {
                let _ = s.arm_recv();
                !s.send.in_flight && s.send.notifs_pending == 0 && s.recv_ready()
            },
            TAG_SEND,
            |s| !s.send.in_flight && s.send.notifs_pending == 0,
        )?;
        if !batch.is_empty() {
            // Account for the pushed SQE; resubmits after short sends and waits
            // out back-pressure (bounded by the send timeout).
            let send_deadline = self.send_deadline().max(deadline);
            self.finish_send(src, send_deadline, true)?;
        }
        if !self.recv_ready() {
            return self.recv(Some(deadline), on_bytes);
        }
        let n = self.deliver(on_bytes);
        if n == 0 {
            return Err(self.end_error("recv"));
        }
        self.arm_recv()?;
        Ok(n)
    }
}

impl Drop for TcpUringTransport {
    fn drop(&mut self) {
        if !self.may_drive() {
            if self.issuer.is_some() {
                // Another thread owns the ring: we cannot reap or cancel here,
                // so keep the receive memory mapped forever rather than risk
                // a late kernel write into freed pages.
                tracing::warn!(
                    "single_thread transport dropped on a foreign thread; leaking its buffers"
                );
                std::mem::forget(self.bufs.take());
                self.plain.leak();
            }
            return;
        }
        // Nothing may stay in flight into memory we are about to unmap.
        self.reap();
        if !self.recv.idle() {
            self.settle(TAG_RECV_MULTI, |s| !s.recv.multi_armed);
            self.settle(TAG_RECV_PLAIN, |s| !s.recv.plain_in_flight);
        }
        if self.send.in_flight || self.send.notifs_pending > 0 {
            self.settle(TAG_SEND, |s| {
                !s.send.in_flight && s.send.notifs_pending == 0
            });
        }
        // Drain the ring's own provided-buffer registration before unmapping.
        if self.bufs.is_some() {
            let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP_ID);
        }
    }
}
