//! The RDMA transport: a byte stream over one Reliable Connected QP.
//!
//! Exists to implement [`Transport`] on verbs. Small batches travel as SENDs
//! (inline when they fit) into the peer's posted receive slots; bulk batches
//! as RDMA WRITE with immediate into the peer's registered ring. The peer
//! returns credits (receives reposted, ring bytes freed) by RDMA-WRITing two
//! counters into our memory, so a sender never outruns the posted receives
//! (no RNR) and credit updates never need credits themselves.

use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::config::{ControlToken, Fault, RdmaConfig, BATCH_BYTES_MAX, INLINE_BYTES_MAX};
use super::handshake::{
    decode_auth, encode_auth, Hello, AUTH_BYTES, AUTH_OK, AUTH_REFUSED, HELLO_BYTES, RD_ATOMIC_MAX,
};
use super::stage::StageRing;
use super::verbs::{
    status_name, Access, Completion, CompletionKind, ConnectParams, DeviceCaps, Endpoint,
    OpenParams, Region, SendData, SendOp, WC_RETRY_EXC_ERR,
};
use crate::deadline;
use crate::error::{Result, TransportError};
use crate::transport::{Transport, TransportKind};

// The pinned host region: registered by the client, read and written by the worker.
mod host_region;
use host_region::{HostRegion, PeerHost};

/// Offset of the credit words in the remote-writable region.
const CREDIT_OFF: usize = 0;
/// Offset of the first receive slot (credit words get their own page).
const SLOTS_OFF: usize = 4096;
/// Offset of the staging area in the local region (credit-out words before it).
const STAGE_OFF: usize = 4096;
/// Bytes of the credit block (two little-endian `u64` counters).
const CREDIT_BYTES: usize = 16;
/// Longest single sleep while waiting for credits (they arrive without a completion).
const CREDIT_WAIT_SLEEP_US: u64 = 50;
/// Longest single wait on the completion channel before re-checking the control socket.
const IDLE_POLL_MS_MAX: u64 = 100;
/// Bit set in every send-queue `wr_id` (receive `wr_id`s are slot indices). Error
/// completions carry no valid opcode, so the `wr_id` says which queue failed.
const SEND_WR_FLAG: u64 = 1 << 63;
/// Ready marker exchanged after both sides posted their receives.
const READY: u8 = b'R';

/// What the peer told us, reduced to what sending needs.
#[derive(Debug, Clone, Copy)]
struct PeerView {
    rkey: u32,
    credit_addr: u64,
    ring_addr: u64,
    ring_bytes: usize,
    slot_count: u32,
    /// Largest batch sent as one SEND.
    send_max: usize,
    /// The peer's pinned host region, if it registered one.
    host: Option<PeerHost>,
    /// RDMA READs in flight each way, as negotiated (0: no RDMA READ).
    rd_atomic: u32,
}

/// A received message not yet (fully) handed to the caller.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    /// Receive slot index (for SENDs; `None` for ring data).
    slot: Option<u32>,
    /// Offset of the data in the remote-writable region.
    off: usize,
    len: usize,
    consumed: usize,
}

/// One connected RDMA transport. See the module docs for the data path.
pub struct RdmaTransport {
    // Field order matters for Drop: regions deregister before the endpoint
    // (PD, context) is closed; `Drop::drop` destroys the QP before both.
    remote: Region,
    local: Region,
    /// Our pinned host region for the peer (client side), if registered.
    host: Option<HostRegion>,
    /// Staging for READs and WRITEs of the peer's host region (worker side), registered
    /// on first use and grown to the largest access.
    host_stage: Option<Region>,
    ep: Endpoint,
    ctrl: TcpStream,
    cfg: RdmaConfig,
    caps: DeviceCaps,
    peer: PeerView,
    ring_off: usize,
    stage: StageRing,
    /// Messages that consumed a peer receive (SENDs and WRITE-with-imm).
    sent_msgs: u64,
    /// Bytes written into the peer's ring in total.
    ring_tail: u64,
    pending: VecDeque<Arrived>,
    /// Bytes of our ring filled by the peer in total (arrival order).
    ring_head: u64,
    /// Receives reposted by us in total (the peer's slot credits).
    reposted: u64,
    /// Ring bytes consumed by our caller in total.
    ring_freed: u64,
    /// The counters as last written to the peer.
    reported: (u64, u64),
    wr_seq: u64,
    broken: Option<&'static str>,
}

impl std::fmt::Debug for RdmaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaTransport")
            .field("caps", &self.caps)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Listens for RDMA transport connections on a TCP control port.
#[derive(Debug)]
pub struct RdmaListener {
    listener: std::net::TcpListener,
    cfg: RdmaConfig,
}

impl RdmaListener {
    /// Binds the control port.
    pub fn bind(addr: impl ToSocketAddrs, cfg: RdmaConfig) -> Result<Self> {
        cfg.validate()?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| TransportError::io("bind RDMA control port", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| TransportError::io("set_nonblocking", e))?;
        Ok(Self { listener, cfg })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| TransportError::io("local_addr", e))
    }

    /// Accepts one control connection and sets up its QP.
    pub fn accept(&self, deadline: Option<std::time::Instant>) -> Result<RdmaTransport> {
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let (stream, _) =
            crate::readiness::accept_until(&self.listener, deadline, "RDMA accept", || {
                self.listener.accept()
            })?;
        stream
            .set_nonblocking(false)
            .map_err(|e| TransportError::io("set_nonblocking", e))?;
        RdmaTransport::setup(stream, self.cfg.clone(), Role::Accept)
    }
}

/// An accepted control connection whose peer proved the token
/// ([`RdmaTransport::authenticate_stream`]); no RDMA resource exists for it yet.
#[derive(Debug)]
pub struct Authenticated {
    ctrl: TcpStream,
    cfg: RdmaConfig,
}

impl Authenticated {
    /// Opens the device and sets up the queue pair with the authenticated peer.
    pub fn set_up(self) -> Result<RdmaTransport> {
        RdmaTransport::setup_authenticated(self.ctrl, self.cfg)
    }
}

/// Bounds the control connection's blocking reads and writes by `connect_timeout_ms`.
fn prepare_ctrl(ctrl: &TcpStream, cfg: &RdmaConfig) -> Result<()> {
    let io = |op| move |e| TransportError::io(op, e);
    let timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
    ctrl.set_read_timeout(timeout)
        .map_err(io("set_read_timeout"))?;
    ctrl.set_write_timeout(timeout)
        .map_err(io("set_write_timeout"))?;
    ctrl.set_nodelay(true).map_err(io("set_nodelay"))
}

/// Which end of the control connection this is: the connecting side proves the token, the
/// accepting side checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Connect,
    Accept,
}

/// Runs the token exchange on the control connection. It comes before the device is opened, so
/// an unauthenticated peer costs no queue pair, no registered memory and learns no rkey.
fn authenticate(ctrl: &mut TcpStream, token: &ControlToken, role: Role) -> Result<()> {
    const OP: &str = "RDMA control connection";
    match role {
        Role::Connect => {
            ctrl.write_all(&encode_auth(&token.0))
                .map_err(|e| TransportError::io("send RDMA token", e))?;
            let mut answer = [0u8; 1];
            ctrl.read_exact(&mut answer)
                .map_err(|e| peer_gone_or_io("receive RDMA token answer", e))?;
            match answer[0] {
                AUTH_OK => Ok(()),
                AUTH_REFUSED => Err(TransportError::Unauthenticated {
                    op: OP,
                    detail: "the server refused our token".into(),
                }),
                other => Err(TransportError::PeerViolation {
                    op: OP,
                    detail: format!("token answer byte {other:#x}"),
                }),
            }
        }
        Role::Accept => {
            let mut msg = [0u8; AUTH_BYTES];
            ctrl.read_exact(&mut msg)
                .map_err(|e| peer_gone_or_io("receive RDMA token", e))?;
            let theirs = decode_auth(&msg)?;
            if !token.matches(&theirs) {
                // Best effort: the refusal tells an honest client why; a liar learns nothing more.
                let _ = ctrl.write_all(&[AUTH_REFUSED]);
                tracing::warn!(peer = ?ctrl.peer_addr().ok(), "RDMA control connection: bad token");
                return Err(TransportError::Unauthenticated {
                    op: OP,
                    detail: "the client presented a wrong token".into(),
                });
            }
            ctrl.write_all(&[AUTH_OK])
                .map_err(|e| TransportError::io("send RDMA token answer", e))
        }
    }
}

/// A random 24-bit packet sequence number.
fn random_psn() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() & 0x00ff_ffff) as u32
}

impl RdmaTransport {
    /// Connects to an [`RdmaListener`] and sets up the QP.
    pub fn connect(addr: impl ToSocketAddrs, cfg: RdmaConfig) -> Result<Self> {
        cfg.validate()?;
        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let mut last = None;
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| TransportError::io("resolve RDMA control address", e))?;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Self::setup(s, cfg, Role::Connect),
                Err(e) => last = Some(e),
            }
        }
        Err(TransportError::io(
            "connect RDMA control port",
            last.unwrap_or_else(|| std::io::Error::other("no address")),
        ))
    }

    /// Completes the accepting side on a control connection someone else accepted (a daemon
    /// that hands the socket to a per-client worker process, which must own the QP: a queue
    /// pair cannot move between processes). The token is checked first, exactly as in
    /// [`RdmaListener::accept`]: an unauthenticated peer makes this process open no device,
    /// register no memory and load no verbs library.
    pub fn accept_stream(stream: TcpStream, cfg: RdmaConfig) -> Result<Self> {
        Self::authenticate_stream(stream, cfg)?.set_up()
    }

    /// The first half of [`Self::accept_stream`]: checks the peer's token on an accepted
    /// control connection and nothing else (no verbs library loaded, no device opened). Lets
    /// a caller tell a failed authentication (any error here) from a failed RDMA set-up.
    pub fn authenticate_stream(mut stream: TcpStream, cfg: RdmaConfig) -> Result<Authenticated> {
        cfg.validate()?;
        stream
            .set_nonblocking(false)
            .map_err(|e| TransportError::io("set_nonblocking", e))?;
        prepare_ctrl(&stream, &cfg)?;
        authenticate(&mut stream, &cfg.token, Role::Accept)?;
        Ok(Authenticated { ctrl: stream, cfg })
    }

    /// Capabilities of the local device, port and QP.
    pub fn caps(&self) -> DeviceCaps {
        self.caps
    }

    /// The peer's credit window (receive slots it posted).
    pub fn peer_credit_window(&self) -> u32 {
        self.peer.slot_count
    }

    fn setup(mut ctrl: TcpStream, cfg: RdmaConfig, role: Role) -> Result<Self> {
        prepare_ctrl(&ctrl, &cfg)?;
        authenticate(&mut ctrl, &cfg.token, role)?;
        Self::setup_authenticated(ctrl, cfg)
    }

    /// Everything after the token check: device, PD, CQ, QP, memory regions, hello, ready.
    fn setup_authenticated(mut ctrl: TcpStream, cfg: RdmaConfig) -> Result<Self> {
        let io = |op| move |e| TransportError::io(op, e);
        let mut ep = Endpoint::open(&OpenParams {
            dev_name: cfg.device.as_deref(),
            port: cfg.port,
            gid_index: cfg.gid_index,
            sq_depth: cfg.sq_depth,
            rq_depth: cfg.slot_count,
            max_inline: cfg.max_inline,
        })?;
        let caps = ep.caps();
        let slots_bytes = cfg.slot_count as usize * cfg.slot_bytes;
        let ring_off = (SLOTS_OFF + slots_bytes).next_multiple_of(4096);
        let remote = ep.register(ring_off + cfg.ring_bytes, Access::RemoteWrite)?;
        let local = ep.register(STAGE_OFF + cfg.stage_bytes, Access::Local)?;
        let host = HostRegion::register(&mut ep, cfg.host_region_bytes);
        let rd_atom = caps.max_rd_atom.min(RD_ATOMIC_MAX);

        let psn = random_psn();
        let mtu = u8::try_from(caps.active_mtu)
            .ok()
            .filter(|m| (1..=5).contains(m))
            .ok_or(TransportError::Rdma {
                op: "RDMA setup",
                detail: format!("device reports active MTU enum {}", caps.active_mtu),
            })?;
        let ours = Hello {
            qpn: ep.qpn(),
            psn,
            lid: caps.lid,
            mtu,
            gid: ep.gid(),
            rkey: remote.rkey(),
            credit_addr: remote.addr() + CREDIT_OFF as u64,
            ring_addr: remote.addr() + ring_off as u64,
            ring_bytes: cfg.ring_bytes as u64,
            slot_count: cfg.slot_count,
            slot_bytes: u32::try_from(cfg.slot_bytes).unwrap_or(u32::MAX),
            max_msg_bytes: caps.max_msg_bytes,
            rd_atom,
            host_addr: host.as_ref().map_or(0, |h| h.region.addr()),
            host_bytes: host.as_ref().map_or(0, |h| h.region.len() as u64),
            host_rkey: host.as_ref().map_or(0, |h| h.region.rkey()),
        };
        ctrl.write_all(&ours.encode())
            .map_err(io("send RDMA hello"))?;
        let mut buf = [0u8; HELLO_BYTES];
        ctrl.read_exact(&mut buf)
            .map_err(|e| peer_gone_or_io("receive RDMA hello", e))?;
        let theirs = Hello::decode(&buf)?;

        let path_mtu = u32::from(mtu.min(theirs.mtu));
        ep.connect(&ConnectParams {
            mtu: path_mtu,
            local_psn: psn,
            remote_qpn: theirs.qpn,
            remote_psn: theirs.psn,
            remote_gid: theirs.gid,
            remote_lid: theirs.lid,
            timeout: cfg.ack_timeout_exp,
            retry_cnt: cfg.retry_count,
            // Bounded by RD_ATOMIC_MAX (ours) and the validated hello (theirs).
            rd_atomic: u8::try_from(rd_atom.min(theirs.rd_atom)).unwrap_or(0),
        })?;
        for i in 0..cfg.slot_count {
            ep.post_recv(
                u64::from(i),
                &remote,
                SLOTS_OFF + i as usize * cfg.slot_bytes,
                cfg.slot_bytes,
            )?;
        }
        // Both sides have posted every receive before either sends.
        ctrl.write_all(&[READY]).map_err(io("send RDMA ready"))?;
        let mut r = [0u8; 1];
        ctrl.read_exact(&mut r)
            .map_err(|e| peer_gone_or_io("receive RDMA ready", e))?;
        if r[0] != READY {
            return Err(TransportError::PeerViolation {
                op: "RDMA handshake",
                detail: format!("ready byte {:#x}", r[0]),
            });
        }
        ctrl.set_nonblocking(true).map_err(io("set_nonblocking"))?;
        rustix::fs::fcntl_setfl(ep.channel_fd(), rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| TransportError::io("completion channel O_NONBLOCK", e.into()))?;

        let max_msg = (theirs.max_msg_bytes.min(caps.max_msg_bytes)) as usize;
        let mut send_max = (theirs.slot_bytes as usize)
            .min(cfg.stage_bytes / 2)
            .min(max_msg);
        let mut rkey = theirs.rkey;
        match cfg.fault {
            Fault::None => {}
            Fault::BadRkey => rkey ^= 0x5a5a_0000,
            Fault::Oversend => send_max = (send_max * 2).min(cfg.stage_bytes / 2),
        }
        let peer = PeerView {
            rkey,
            credit_addr: theirs.credit_addr,
            ring_addr: theirs.ring_addr,
            ring_bytes: theirs.ring_bytes as usize,
            slot_count: theirs.slot_count,
            send_max,
            host: PeerHost::from_hello(&theirs, rd_atom.min(theirs.rd_atom), max_msg),
            rd_atomic: rd_atom.min(theirs.rd_atom),
        };
        tracing::info!(
            qpn = ep.qpn(),
            peer_qpn = theirs.qpn,
            path_mtu,
            max_inline = caps.max_inline,
            gid_index = ?caps.gid_index,
            credits = peer.slot_count,
            "RDMA transport connected"
        );
        Ok(Self {
            stage: StageRing::new(cfg.stage_bytes),
            remote,
            local,
            host,
            host_stage: None,
            ep,
            ctrl,
            caps,
            peer,
            ring_off,
            sent_msgs: 0,
            ring_tail: 0,
            pending: VecDeque::new(),
            ring_head: 0,
            reposted: 0,
            ring_freed: 0,
            reported: (0, 0),
            wr_seq: 0,
            broken: None,
            cfg,
        })
    }

    fn check_usable(&self, op: &'static str) -> Result<()> {
        match self.broken {
            Some(reason) => Err(TransportError::Closed { op, reason }),
            None => Ok(()),
        }
    }

    /// Peer receive slots we may still consume.
    fn slot_credits(&self) -> u64 {
        let returned = self.remote.read_u64(CREDIT_OFF);
        (u64::from(self.peer.slot_count) + returned).saturating_sub(self.sent_msgs)
    }

    /// Bytes of the peer's ring free for writing.
    fn ring_free(&self) -> usize {
        let freed = self.remote.read_u64(CREDIT_OFF + 8);
        let used = self.ring_tail.saturating_sub(freed);
        self.peer.ring_bytes.saturating_sub(used as usize)
    }

    /// Turns a failed completion into the caller's error and marks the transport broken.
    fn completion_error(&mut self, c: &Completion) -> TransportError {
        self.broken = Some("RDMA work request failed");
        let status = status_name(c.status);
        if c.status == WC_RETRY_EXC_ERR {
            return TransportError::PeerGone {
                op: "RDMA completion",
                detail: format!("{status}: the peer stopped acknowledging"),
            };
        }
        TransportError::RdmaCompletion {
            op: if c.wr_id & SEND_WR_FLAG != 0 {
                "RDMA send"
            } else {
                "RDMA receive"
            },
            status: c.status,
            status_name: status,
            vendor_err: c.vendor_err,
            wr_id: c.wr_id,
        }
    }

    /// Drains the completion queue. Returns how many completions it handled.
    fn reap(&mut self) -> Result<usize> {
        let mut total = 0;
        loop {
            let mut buf = [Completion {
                wr_id: 0,
                status: 0,
                kind: CompletionKind::Send,
                byte_len: 0,
                imm: None,
                vendor_err: 0,
            }; 16];
            let n = self.ep.poll(&mut buf)?;
            for c in &buf[..n] {
                if c.status != 0 {
                    return Err(self.completion_error(c));
                }
                self.on_completion(c)?;
            }
            total += n;
            if n < buf.len() {
                break;
            }
        }
        if total > 0 {
            self.maybe_return_credits()?;
        }
        Ok(total)
    }

    fn on_completion(&mut self, c: &Completion) -> Result<()> {
        let violation = |detail: String| TransportError::PeerViolation {
            op: "RDMA receive",
            detail,
        };
        match c.kind {
            CompletionKind::Send => {
                if !self.stage.complete_oldest() {
                    return Err(violation("send completion with nothing outstanding".into()));
                }
            }
            CompletionKind::Recv => {
                let slot = self.slot_of(c.wr_id)?;
                let len = c.byte_len as usize;
                if len > self.cfg.slot_bytes {
                    return Err(violation(format!(
                        "receive of {len} bytes into a {}-byte slot",
                        self.cfg.slot_bytes
                    )));
                }
                let off = SLOTS_OFF + slot as usize * self.cfg.slot_bytes;
                self.pending.push_back(Arrived {
                    slot: Some(slot),
                    off,
                    len,
                    consumed: 0,
                });
            }
            CompletionKind::RecvImm => {
                let len = c.imm.unwrap_or(0) as usize;
                let head_off = (self.ring_head % self.cfg.ring_bytes as u64) as usize;
                if len == 0 || len > self.cfg.ring_bytes - head_off {
                    self.broken = Some("peer violated the ring protocol");
                    return Err(violation(format!(
                        "ring write of {len} bytes at ring offset {head_off} of {}",
                        self.cfg.ring_bytes
                    )));
                }
                self.ring_head += len as u64;
                self.pending.push_back(Arrived {
                    slot: None,
                    off: self.ring_off + head_off,
                    len,
                    consumed: 0,
                });
                // The receive carried no data: repost it at once.
                let slot = self.slot_of(c.wr_id)?;
                self.repost(slot)?;
            }
        }
        Ok(())
    }

    /// The receive slot a receive completion's `wr_id` names.
    fn slot_of(&self, wr_id: u64) -> Result<u32> {
        u32::try_from(wr_id)
            .ok()
            .filter(|&s| s < self.cfg.slot_count)
            .ok_or_else(|| TransportError::PeerViolation {
                op: "RDMA receive",
                detail: format!("receive completion with unknown wr_id {wr_id:#x}"),
            })
    }

    fn repost(&mut self, slot: u32) -> Result<()> {
        let off = SLOTS_OFF + slot as usize * self.cfg.slot_bytes;
        self.ep
            .post_recv(u64::from(slot), &self.remote, off, self.cfg.slot_bytes)?;
        self.reposted += 1;
        Ok(())
    }

    /// Releases a fully consumed arrival (repost or ring bytes freed).
    fn release(&mut self, a: Arrived) -> Result<()> {
        match a.slot {
            Some(slot) => self.repost(slot),
            None => {
                self.ring_freed += a.len as u64;
                Ok(())
            }
        }
    }

    /// RDMA-WRITEs our counters to the peer once a quarter of a window is due.
    fn maybe_return_credits(&mut self) -> Result<()> {
        let slots_due = self.reposted - self.reported.0;
        let bytes_due = self.ring_freed - self.reported.1;
        let slot_step = u64::from(self.cfg.slot_count / 4).max(1);
        let byte_step = (self.cfg.ring_bytes / 4) as u64;
        if slots_due < slot_step && bytes_due < byte_step {
            return Ok(());
        }
        if self.stage.outstanding() >= self.cfg.sq_depth as usize {
            // The send queue is full; the next reap retries.
            return Ok(());
        }
        let mut words = [0u8; CREDIT_BYTES];
        words[..8].copy_from_slice(&self.reposted.to_le_bytes());
        words[8..].copy_from_slice(&self.ring_freed.to_le_bytes());
        let op = SendOp::Write {
            raddr: self.peer.credit_addr,
            rkey: self.peer_credit_rkey(),
        };
        let data = if self.caps.max_inline as usize >= CREDIT_BYTES {
            SendData::Inline(&words)
        } else {
            // Both words are monotonic, so a concurrent overwrite while the NIC
            // reads them only ever reports a newer value.
            self.local.write_u64(0, self.reposted);
            self.local.write_u64(8, self.ring_freed);
            SendData::Region {
                region: &self.local,
                off: 0,
                len: CREDIT_BYTES,
            }
        };
        self.wr_seq = (self.wr_seq + 1) | SEND_WR_FLAG;
        self.ep.post_send(self.wr_seq, op, data)?;
        self.stage.push_wr(0);
        self.reported = (self.reposted, self.ring_freed);
        Ok(())
    }

    fn peer_credit_rkey(&self) -> u32 {
        // The fault only targets bulk data; credits use the true key.
        match self.cfg.fault {
            Fault::BadRkey => self.peer.rkey ^ 0x5a5a_0000,
            _ => self.peer.rkey,
        }
    }

    /// Returns `Err(PeerGone)` if the control connection closed, `Ok(())` if it is alive.
    fn check_ctrl(&mut self, op: &'static str) -> Result<()> {
        let mut b = [0u8; 1];
        match self.ctrl.read(&mut b) {
            Ok(0) => Err(TransportError::PeerGone {
                op,
                detail: "RDMA control connection closed".into(),
            }),
            Ok(_) => Err(TransportError::PeerViolation {
                op,
                detail: "unexpected bytes on the RDMA control connection".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(peer_gone_or_io(op, e)),
        }
    }

    /// Waits until `ready` holds, reaping completions meanwhile. `via_cq`: the
    /// condition is met by a completion (sleep on the completion channel when
    /// idle); otherwise it is met by the peer's credit write (sleep briefly).
    fn wait_for(
        &mut self,
        deadline: Instant,
        op: &'static str,
        via_cq: bool,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let mut spins = 0u32;
        loop {
            self.reap()?;
            if ready(self) {
                return Ok(());
            }
            if spins < self.cfg.busy_poll_spins {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if let Err(e) = self.check_ctrl(op) {
                // Whatever already arrived is still delivered first.
                self.reap()?;
                if ready(self) {
                    return Ok(());
                }
                self.broken = Some("peer gone");
                return Err(e);
            }
            let Some(left) = deadline::remaining(deadline) else {
                return Err(TransportError::Timeout { op });
            };
            if via_cq {
                self.ep.arm()?;
                if self.reap()? > 0 && ready(self) {
                    return Ok(());
                }
                let wait = left.min(Duration::from_millis(IDLE_POLL_MS_MAX));
                self.sleep_on_channel(wait, op)?;
            } else {
                std::thread::sleep(left.min(Duration::from_micros(CREDIT_WAIT_SLEEP_US)));
            }
        }
    }

    fn sleep_on_channel(&mut self, wait: Duration, op: &'static str) -> Result<()> {
        let ts = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let ch = self.ep.channel_fd();
        let ctrl = self.ctrl.as_fd();
        let mut fds = [
            PollFd::new(&ch, PollFlags::IN),
            PollFd::new(&ctrl, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(TransportError::io(op, e.into())),
        }
        let fired = fds[0].revents().contains(PollFlags::IN);
        if fired {
            self.ep.take_event();
        }
        Ok(())
    }

    /// Posts one batch held in `parts`.
    fn send_parts(&mut self, parts: &[&[u8]]) -> Result<()> {
        self.check_usable("send")?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > BATCH_BYTES_MAX {
            return Err(TransportError::TooLarge {
                op: "send",
                len: total,
                max: BATCH_BYTES_MAX,
            });
        }
        if total == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.send_timeout_ms);
        let r = if total <= self.peer.send_max {
            self.send_small(parts, total, deadline)
        } else {
            self.send_bulk(parts, total, deadline)
        };
        if r.is_err() && self.broken.is_none() {
            // Part of the batch may be posted: the stream position is lost.
            self.broken = Some("a send failed midway");
        }
        r
    }

    /// Makes room for one more send-queue WR.
    fn wait_sq(&mut self, deadline: Instant) -> Result<()> {
        let depth = self.cfg.sq_depth as usize;
        self.wait_for(deadline, "send (send queue full)", true, |s| {
            s.stage.outstanding() < depth
        })
    }

    fn send_small(&mut self, parts: &[&[u8]], total: usize, deadline: Instant) -> Result<()> {
        self.wait_for(deadline, "send (waiting for credits)", false, |s| {
            s.slot_credits() >= 1
        })?;
        self.wait_sq(deadline)?;
        self.wr_seq = (self.wr_seq + 1) | SEND_WR_FLAG;
        if total <= self.caps.max_inline as usize {
            let mut buf = [0u8; INLINE_BYTES_MAX];
            gather(parts, 0, &mut buf[..total]);
            self.ep
                .post_send(self.wr_seq, SendOp::Send, SendData::Inline(&buf[..total]))?;
            self.stage.push_wr(0);
        } else {
            let (off, release) = self.stage_alloc(total, deadline)?;
            gather(parts, 0, self.local.bytes_mut(STAGE_OFF + off, total));
            let data = SendData::Region {
                region: &self.local,
                off: STAGE_OFF + off,
                len: total,
            };
            self.ep.post_send(self.wr_seq, SendOp::Send, data)?;
            self.stage.push_wr(release);
        }
        self.sent_msgs += 1;
        Ok(())
    }

    fn send_bulk(&mut self, parts: &[&[u8]], total: usize, deadline: Instant) -> Result<()> {
        let ring = self.peer.ring_bytes;
        let chunk_max = (self.cfg.stage_bytes / 2).min(ring / 4).max(1);
        let mut done = 0usize;
        while done < total {
            let want = (total - done).min(chunk_max);
            self.wait_for(deadline, "send (waiting for ring credits)", false, |s| {
                s.slot_credits() >= 1 && s.ring_free() >= want
            })?;
            self.wait_sq(deadline)?;
            let tail_off = (self.ring_tail % ring as u64) as usize;
            let chunk = want.min(ring - tail_off);
            let (off, release) = self.stage_alloc(chunk, deadline)?;
            gather(parts, done, self.local.bytes_mut(STAGE_OFF + off, chunk));
            let op = SendOp::WriteImm {
                raddr: self.peer.ring_addr + tail_off as u64,
                rkey: self.peer.rkey,
                imm: chunk as u32,
            };
            self.wr_seq = (self.wr_seq + 1) | SEND_WR_FLAG;
            let data = SendData::Region {
                region: &self.local,
                off: STAGE_OFF + off,
                len: chunk,
            };
            self.ep.post_send(self.wr_seq, op, data)?;
            self.stage.push_wr(release);
            self.sent_msgs += 1;
            self.ring_tail += chunk as u64;
            done += chunk;
        }
        Ok(())
    }

    fn stage_alloc(&mut self, len: usize, deadline: Instant) -> Result<(usize, usize)> {
        loop {
            if let Some(r) = self.stage.alloc(len) {
                return Ok(r);
            }
            self.wait_for(deadline, "send (staging full)", true, |s| {
                s.stage.outstanding() == 0
            })?;
        }
    }

    /// Waits until at least one received byte is pending.
    fn wait_data(&mut self, deadline: Instant, op: &'static str) -> Result<()> {
        let r = self.wait_for(deadline, op, true, |s| {
            s.pending.iter().any(|a| a.len > a.consumed)
        });
        if let Err(e) = &r {
            if !e.is_timeout() {
                self.broken.get_or_insert("receive failed");
            }
        }
        r
    }

    /// Drops fully consumed arrivals at the front, releasing their space.
    fn drop_consumed(&mut self) -> Result<()> {
        while let Some(a) = self.pending.front().copied() {
            if a.consumed < a.len {
                break;
            }
            self.pending.pop_front();
            self.release(a)?;
        }
        self.maybe_return_credits()
    }
}

/// Copies `dst.len()` bytes of the concatenation of `parts`, starting at `skip`.
fn gather(parts: &[&[u8]], mut skip: usize, dst: &mut [u8]) {
    let mut at = 0;
    for p in parts {
        if at == dst.len() {
            break;
        }
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        let take = (p.len() - skip).min(dst.len() - at);
        dst[at..at + take].copy_from_slice(&p[skip..skip + take]);
        at += take;
        skip = 0;
    }
    debug_assert_eq!(at, dst.len());
}

/// EOF and resets on the control connection mean the peer is gone.
fn peer_gone_or_io(op: &'static str, e: std::io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof | K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => {
            TransportError::PeerGone {
                op,
                detail: e.to_string(),
            }
        }
        K::WouldBlock | K::TimedOut => TransportError::Timeout { op },
        _ => TransportError::io(op, e),
    }
}

impl Transport for RdmaTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Rdma
    }

    fn send(&mut self, batch: &[u8]) -> Result<()> {
        self.send_parts(&[batch])
    }

    fn send_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<()> {
        const PARTS_ON_STACK: usize = 16;
        if parts.len() <= PARTS_ON_STACK {
            let mut v: [&[u8]; PARTS_ON_STACK] = [&[]; PARTS_ON_STACK];
            for (d, p) in v.iter_mut().zip(parts) {
                *d = p;
            }
            self.send_parts(&v[..parts.len()])
        } else {
            let v: Vec<&[u8]> = parts.iter().map(|p| &**p).collect();
            self.send_parts(&v)
        }
    }

    fn recv(
        &mut self,
        deadline: Option<Instant>,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        self.check_usable("recv")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        self.wait_data(deadline, "recv")?;
        let mut delivered = 0;
        for a in self.pending.iter_mut() {
            if a.consumed < a.len {
                on_bytes(self.remote.bytes(a.off + a.consumed, a.len - a.consumed));
                delivered += a.len - a.consumed;
                a.consumed = a.len;
            }
        }
        self.drop_consumed()?;
        debug_assert!(delivered > 0);
        Ok(delivered)
    }

    fn recv_exact_into(&mut self, dst: &mut [u8], deadline: Option<Instant>) -> Result<()> {
        self.check_usable("recv_exact_into")?;
        let deadline = deadline::resolve(deadline, self.cfg.default_timeout_ms);
        let mut at = 0;
        while at < dst.len() {
            if let Err(e) = self.wait_data(deadline, "recv_exact_into") {
                if at > 0 {
                    self.broken = Some("recv_exact_into failed midway");
                }
                return Err(e);
            }
            for a in self.pending.iter_mut() {
                if at == dst.len() {
                    break;
                }
                let take = (a.len - a.consumed).min(dst.len() - at);
                dst[at..at + take].copy_from_slice(self.remote.bytes(a.off + a.consumed, take));
                a.consumed += take;
                at += take;
            }
            self.drop_consumed()?;
        }
        Ok(())
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        // Let posted sends land (bounded), so a peer reading our last batch gets it
        // before it sees the control connection close.
        if self.broken.is_none() {
            let linger = Instant::now() + Duration::from_millis(self.cfg.linger_ms);
            let _ = self.wait_for(linger, "close", true, |s| s.stage.outstanding() == 0);
        }
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
        self.ep.set_error_state();
        self.ep.destroy_qp();
        // Fields drop next: regions deregister, then the endpoint closes PD and context.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_copies_across_part_boundaries_from_an_offset() {
        let parts: [&[u8]; 3] = [b"abc", b"", b"defgh"];
        let mut out = [0u8; 4];
        gather(&parts, 2, &mut out);
        assert_eq!(&out, b"cdef");
        let mut all = [0u8; 8];
        gather(&parts, 0, &mut all);
        assert_eq!(&all, b"abcdefgh");
    }

    #[test]
    fn control_connection_errors_map_to_peer_gone_or_timeout() {
        use std::io::{Error, ErrorKind};
        assert!(peer_gone_or_io("t", Error::from(ErrorKind::UnexpectedEof)).is_peer_gone());
        assert!(peer_gone_or_io("t", Error::from(ErrorKind::ConnectionReset)).is_peer_gone());
        assert!(peer_gone_or_io("t", Error::from(ErrorKind::WouldBlock)).is_timeout());
        assert!(matches!(
            peer_gone_or_io("t", Error::from(ErrorKind::PermissionDenied)),
            TransportError::Io { .. }
        ));
    }
}
