//! Safe wrappers over the verbs shim: loading libibverbs, one RC endpoint,
//! registered memory, posting work requests and polling completions.
//!
//! Exists so all `unsafe` FFI of the RDMA transport sits in one small module
//! whose public surface cannot be misused from safe code: buffers are owned
//! registered mappings, posts take offsets checked against them.

use std::ffi::{c_char, CStr, CString};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::OnceLock;

use memmap2::MmapMut;

use super::sys;
use crate::error::{Result, TransportError};

/// Size of the shim's error message buffers.
const ERR_BYTES: usize = 256;

/// Reads a NUL-terminated message out of a shim error buffer.
fn err_text(buf: &[c_char; ERR_BYTES]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Loads `libibverbs.so.1` once per process; later calls return the first outcome.
pub(crate) fn load() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let outcome = LOADED.get_or_init(|| {
        let mut err = [0 as c_char; ERR_BYTES];
        // SAFETY: err is a writable buffer of ERR_BYTES; the OnceLock runs this once,
        // which is the single-threaded use the shim requires.
        let rc = unsafe { sys::rgpu_ibv_load(err.as_mut_ptr(), ERR_BYTES) };
        if rc == 0 {
            Ok(())
        } else {
            Err(err_text(&err))
        }
    });
    outcome
        .clone()
        .map_err(|detail| TransportError::RdmaUnavailable { detail })
}

/// Device and port capabilities found while opening an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCaps {
    /// `ibv_device_attr.max_qp_wr`.
    pub max_qp_wr: u32,
    /// `ibv_device_attr.max_sge`.
    pub max_sge: u32,
    /// `ibv_device_attr.max_cqe`.
    pub max_cqe: u32,
    /// `ibv_port_attr.max_msg_sz` in bytes.
    pub max_msg_bytes: u32,
    /// `ibv_port_attr.active_mtu` as the verbs enum (1 = 256 B ... 5 = 4096 B).
    pub active_mtu: u32,
    /// Whether the port is `IBV_PORT_ACTIVE`.
    pub port_active: bool,
    /// The port's LID (0 on RoCE).
    pub lid: u16,
    /// Inline data bytes the created QP accepts (0: no inline).
    pub max_inline: u32,
    /// The GID index in use; `None` on InfiniBand without a GRH.
    pub gid_index: Option<u32>,
    /// RDMA READs the device lets one QP have in flight, as initiator and as
    /// responder (the smaller of `max_qp_init_rd_atom` and `max_qp_rd_atom`).
    pub max_rd_atom: u32,
}

/// One completion, reduced to what the transport needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub wr_id: u64,
    pub status: u32,
    pub kind: CompletionKind,
    pub byte_len: u32,
    pub imm: Option<u32>,
    pub vendor_err: u32,
}

/// What a completion completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompletionKind {
    /// A send-queue work request (SEND or RDMA WRITE).
    Send,
    /// A receive consumed by a SEND.
    Recv,
    /// A receive consumed by an RDMA WRITE with immediate.
    RecvImm,
}

/// The verbs name of a work-completion status.
pub(crate) fn status_name(status: u32) -> &'static str {
    // SAFETY: the shim returns a pointer to a static string literal.
    let p = unsafe { sys::rgpu_wc_status_str(status) };
    // SAFETY: p is a non-null, NUL-terminated static literal (see shim.c).
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("non-UTF-8 status")
}

/// `IBV_WC_RETRY_EXC_ERR`: the peer stopped acknowledging.
pub(crate) const WC_RETRY_EXC_ERR: u32 = 12;

/// Send-queue operations the transport posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOp {
    /// Two-sided SEND into one of the peer's posted receives.
    Send,
    /// RDMA WRITE with immediate (consumes one peer receive).
    WriteImm {
        /// Peer virtual address.
        raddr: u64,
        /// Peer rkey.
        rkey: u32,
        /// Immediate value (host order).
        imm: u32,
    },
    /// Plain RDMA WRITE (consumes nothing at the peer).
    Write {
        /// Peer virtual address.
        raddr: u64,
        /// Peer rkey.
        rkey: u32,
    },
    /// RDMA READ of peer memory into the (registered, never inline) local bytes.
    Read {
        /// Peer virtual address.
        raddr: u64,
        /// Peer rkey.
        rkey: u32,
    },
}

/// What the peer may do to a registered region (local write is always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only this side's NIC touches it (send staging).
    Local,
    /// The peer may RDMA WRITE into it (receive slots, ring, credit words).
    RemoteWrite,
    /// The peer may RDMA READ and WRITE it (the client's pinned host region).
    RemoteReadWrite,
}

impl Access {
    /// The shim's access bits (1: remote write, 2: remote read).
    fn bits(self) -> i32 {
        match self {
            Access::Local => 0,
            Access::RemoteWrite => 1,
            Access::RemoteReadWrite => 3,
        }
    }
}

/// One open device context with PD, completion channel, CQ and RC QP.
pub(crate) struct Endpoint {
    raw: *mut sys::RawEp,
    caps: DeviceCaps,
    gid: [u8; 16],
    qpn: u32,
}

// SAFETY: the endpoint's verbs objects are used by one owner at a time (`&mut self`
// for every post/poll); libibverbs objects may move between threads.
unsafe impl Send for Endpoint {}

/// Parameters of [`Endpoint::open`].
pub(crate) struct OpenParams<'a> {
    pub dev_name: Option<&'a str>,
    pub port: u8,
    pub gid_index: Option<u32>,
    pub sq_depth: u32,
    pub rq_depth: u32,
    pub max_inline: u32,
}

impl Endpoint {
    /// Opens the device and creates the RC QP (in RESET).
    pub(crate) fn open(p: &OpenParams<'_>) -> Result<Self> {
        load()?;
        let name = p
            .dev_name
            .map(CString::new)
            .transpose()
            .map_err(|_| TransportError::InvalidConfig("RDMA device name contains NUL"))?;
        let gid_index = match p.gid_index {
            Some(i) => {
                i32::try_from(i).map_err(|_| TransportError::InvalidConfig("gid_index too big"))?
            }
            None => -2,
        };
        let mut caps = sys::RawCaps::default();
        let mut gid = [0u8; 16];
        let mut qpn = 0u32;
        let mut err = [0 as c_char; ERR_BYTES];
        // SAFETY: every out-pointer points at a live local of the right type and size
        // (gid: 16 bytes, err: ERR_BYTES); name outlives the call.
        let raw = unsafe {
            sys::rgpu_ep_open(
                name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
                p.port,
                gid_index,
                p.sq_depth,
                p.rq_depth,
                p.max_inline,
                &mut caps,
                gid.as_mut_ptr(),
                &mut qpn,
                err.as_mut_ptr(),
                ERR_BYTES,
            )
        };
        if raw.is_null() {
            return Err(TransportError::Rdma {
                op: "open RDMA endpoint",
                detail: err_text(&err),
            });
        }
        // SAFETY: reading an immutable constant exported by the shim.
        let active = unsafe { sys::RGPU_PORT_ACTIVE };
        let caps = DeviceCaps {
            max_qp_wr: caps.max_qp_wr,
            max_sge: caps.max_sge,
            max_cqe: caps.max_cqe,
            max_msg_bytes: caps.max_msg_sz,
            active_mtu: caps.active_mtu,
            port_active: caps.port_state == active,
            lid: caps.lid,
            max_inline: caps.max_inline,
            gid_index: u32::try_from(caps.gid_index).ok(),
            max_rd_atom: caps.max_rd_atom,
        };
        let ep = Self {
            raw,
            caps,
            gid,
            qpn,
        };
        if !ep.caps.port_active {
            return Err(TransportError::Rdma {
                op: "open RDMA endpoint",
                detail: format!("port {} is not ACTIVE", p.port),
            });
        }
        tracing::debug!(caps = ?ep.caps, qpn, "RDMA endpoint open");
        Ok(ep)
    }

    /// Capabilities of the device, port and QP.
    pub(crate) fn caps(&self) -> DeviceCaps {
        self.caps
    }

    /// Our GID (all zero without one).
    pub(crate) fn gid(&self) -> [u8; 16] {
        self.gid
    }

    /// Our QP number.
    pub(crate) fn qpn(&self) -> u32 {
        self.qpn
    }

    /// The completion channel's file descriptor (readable when an armed CQ fired).
    pub(crate) fn channel_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: raw is a live endpoint; the channel lives as long as self.
        let fd: RawFd = unsafe { sys::rgpu_ep_channel_fd(self.raw) };
        // SAFETY: the fd stays open until rgpu_ep_close in Drop, which needs &mut self.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }

    /// Registers an anonymous mapping of `len` bytes with `access` for the peer.
    pub(crate) fn register(&mut self, len: usize, access: Access) -> Result<Region> {
        let mut map =
            MmapMut::map_anon(len).map_err(|e| TransportError::io("mmap RDMA buffer", e))?;
        let (mut lkey, mut rkey, mut err_no) = (0u32, 0u32, 0i32);
        // SAFETY: map is a live writable mapping of len bytes that Region keeps alive
        // (and deregisters before unmapping); the out-pointers are locals.
        let mr = unsafe {
            sys::rgpu_ep_reg(
                self.raw,
                map.as_mut_ptr().cast(),
                len,
                access.bits(),
                &mut lkey,
                &mut rkey,
                &mut err_no,
            )
        };
        if mr.is_null() {
            return Err(TransportError::Rdma {
                op: "ibv_reg_mr",
                detail: format!(
                    "{len} bytes: {} (check `ulimit -l`, the memlock limit)",
                    std::io::Error::from_raw_os_error(err_no)
                ),
            });
        }
        Ok(Region {
            mr,
            map,
            lkey,
            rkey,
        })
    }

    /// Moves the QP through INIT and RTR to RTS toward the peer.
    pub(crate) fn connect(&mut self, c: &ConnectParams) -> Result<()> {
        let gid_index = self.caps.gid_index.map_or(-1, |i| i as i32);
        let mut err_no = 0;
        // SAFETY: raw is live; remote_gid points at 16 readable bytes; err_no is a local.
        let step = unsafe {
            sys::rgpu_ep_connect(
                self.raw,
                gid_index,
                c.mtu,
                c.local_psn,
                c.remote_qpn,
                c.remote_psn,
                c.remote_gid.as_ptr(),
                c.remote_lid,
                c.timeout,
                c.retry_cnt,
                c.rd_atomic,
                &mut err_no,
            )
        };
        if step != 0 {
            let state = ["", "INIT", "RTR", "RTS"]
                .get(step as usize)
                .unwrap_or(&"?");
            return Err(TransportError::Rdma {
                op: "ibv_modify_qp",
                detail: format!("to {state}: {}", std::io::Error::from_raw_os_error(err_no)),
            });
        }
        Ok(())
    }

    /// Posts one signaled send-queue WR reading `len` bytes at `off` of `src`,
    /// or inline from `inline` (copied by the provider during the call).
    pub(crate) fn post_send(&mut self, wr_id: u64, op: SendOp, data: SendData<'_>) -> Result<()> {
        let (addr, len, lkey, inl) = match data {
            SendData::Region { region, off, len } => {
                assert!(off.checked_add(len).is_some_and(|end| end <= region.len()));
                let addr = region.addr() + off as u64;
                (addr, len, region.lkey, 0)
            }
            SendData::Inline(bytes) => (bytes.as_ptr() as u64, bytes.len(), 0, 1),
        };
        let len = u32::try_from(len).map_err(|_| TransportError::TooLarge {
            op: "post_send",
            len,
            max: u32::MAX as usize,
        })?;
        let (code, raddr, rkey, imm) = match op {
            SendOp::Send => (0, 0, 0, 0),
            SendOp::WriteImm { raddr, rkey, imm } => (1, raddr, rkey, imm),
            SendOp::Write { raddr, rkey } => (2, raddr, rkey, 0),
            SendOp::Read { raddr, rkey } => {
                // A READ writes into local memory: only a registered region will do.
                assert!(inl == 0, "an RDMA READ needs a registered destination");
                (3, raddr, rkey, 0)
            }
        };
        // SAFETY: raw is live; [addr, addr+len) lies in a registered region that
        // outlives the WR (the caller holds staging until completion) or is inline data
        // the provider copies before returning.
        let rc = unsafe {
            sys::rgpu_ep_post_send(
                self.raw, wr_id, code, addr, len, lkey, inl, raddr, rkey, imm,
            )
        };
        if rc != 0 {
            return Err(TransportError::Rdma {
                op: "ibv_post_send",
                detail: std::io::Error::from_raw_os_error(rc).to_string(),
            });
        }
        Ok(())
    }

    /// Posts one receive of `len` bytes at `off` of `region`.
    pub(crate) fn post_recv(
        &mut self,
        wr_id: u64,
        region: &Region,
        off: usize,
        len: usize,
    ) -> Result<()> {
        assert!(off.checked_add(len).is_some_and(|end| end <= region.len()));
        let len32 = u32::try_from(len).map_err(|_| TransportError::TooLarge {
            op: "post_recv",
            len,
            max: u32::MAX as usize,
        })?;
        // SAFETY: raw is live; the receive buffer lies inside a registered region that
        // the transport keeps alive until the QP is destroyed.
        let rc = unsafe {
            sys::rgpu_ep_post_recv(
                self.raw,
                wr_id,
                region.addr() + off as u64,
                len32,
                region.lkey,
            )
        };
        if rc != 0 {
            return Err(TransportError::Rdma {
                op: "ibv_post_recv",
                detail: std::io::Error::from_raw_os_error(rc).to_string(),
            });
        }
        Ok(())
    }

    /// Polls up to `out.len()` completions; returns how many were written.
    pub(crate) fn poll(&mut self, out: &mut [Completion]) -> Result<usize> {
        let mut raw = [sys::RawWc::default(); sys::POLL_BATCH_MAX];
        let n = out.len().min(sys::POLL_BATCH_MAX);
        // SAFETY: raw has room for n <= POLL_BATCH_MAX entries; the endpoint is live.
        let got = unsafe { sys::rgpu_ep_poll(self.raw, raw.as_mut_ptr(), n as i32) };
        let got = usize::try_from(got).map_err(|_| TransportError::Rdma {
            op: "ibv_poll_cq",
            detail: "provider returned an error".into(),
        })?;
        // SAFETY: reading immutable constants exported by the shim.
        let (recv, recv_imm) = unsafe { (sys::RGPU_WC_RECV, sys::RGPU_WC_RECV_RDMA_WITH_IMM) };
        for (dst, w) in out.iter_mut().zip(&raw[..got]) {
            let kind = if w.opcode == recv {
                CompletionKind::Recv
            } else if w.opcode == recv_imm {
                CompletionKind::RecvImm
            } else {
                CompletionKind::Send
            };
            *dst = Completion {
                wr_id: w.wr_id,
                status: w.status,
                kind,
                byte_len: w.byte_len,
                imm: (w.has_imm != 0).then_some(w.imm),
                vendor_err: w.vendor_err,
            };
        }
        Ok(got)
    }

    /// Requests a completion event for the next completion.
    pub(crate) fn arm(&mut self) -> Result<()> {
        // SAFETY: raw is live.
        let rc = unsafe { sys::rgpu_ep_arm(self.raw) };
        if rc != 0 {
            return Err(TransportError::Rdma {
                op: "ibv_req_notify_cq",
                detail: std::io::Error::from_raw_os_error(rc).to_string(),
            });
        }
        Ok(())
    }

    /// Consumes a pending completion event (the channel fd is non-blocking).
    pub(crate) fn take_event(&mut self) {
        // SAFETY: raw is live; the channel fd is non-blocking, so this never blocks.
        let _ = unsafe { sys::rgpu_ep_take_event(self.raw) };
    }

    /// Moves the QP to the ERROR state (outstanding WRs flush).
    pub(crate) fn set_error_state(&mut self) {
        // SAFETY: raw is live.
        let _ = unsafe { sys::rgpu_ep_to_error(self.raw) };
    }

    /// Destroys the QP (no WR references registered memory afterwards), so
    /// regions may be deregistered before the endpoint itself is dropped.
    pub(crate) fn destroy_qp(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: raw is live; the shim nulls the QP so a second call is a no-op.
            unsafe { sys::rgpu_ep_destroy_qp(self.raw) };
        }
    }

    /// Destroys the remaining verbs objects (CQ, channel, PD, context).
    fn close(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: raw is live and closed exactly once (nulled below).
            unsafe { sys::rgpu_ep_close(self.raw) };
            self.raw = std::ptr::null_mut();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where the bytes of a send-queue WR come from.
pub(crate) enum SendData<'a> {
    /// Bytes inside a registered region.
    Region {
        /// The region.
        region: &'a Region,
        /// Offset into it.
        off: usize,
        /// Length.
        len: usize,
    },
    /// Inline bytes (at most the QP's `max_inline`).
    Inline(&'a [u8]),
}

/// Values for [`Endpoint::connect`].
pub(crate) struct ConnectParams {
    pub mtu: u32,
    pub local_psn: u32,
    pub remote_qpn: u32,
    pub remote_psn: u32,
    pub remote_gid: [u8; 16],
    pub remote_lid: u16,
    pub timeout: u8,
    pub retry_cnt: u8,
    /// RDMA READs in flight each way (0: the QP refuses remote reads).
    pub rd_atomic: u8,
}

/// An anonymous mapping registered as one memory region.
///
/// Must be dropped after the QP that uses it is destroyed
/// ([`Endpoint::destroy_qp`]) and before its [`Endpoint`] (the PD must outlive it).
pub(crate) struct Region {
    mr: *mut std::ffi::c_void,
    map: MmapMut,
    lkey: u32,
    rkey: u32,
}

// SAFETY: the region's memory is owned; the MR handle is only used to deregister.
unsafe impl Send for Region {}

impl Region {
    /// Start address (what the peer targets with RDMA WRITE).
    pub(crate) fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The remote key.
    pub(crate) fn rkey(&self) -> u32 {
        self.rkey
    }

    /// The bytes (the NIC may write into them concurrently only where the
    /// protocol lets the peer write: received slots and ring are read only after
    /// their completion; the credit words are read with [`Region::read_u64`]).
    pub(crate) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        &self.map[off..off + len]
    }

    /// Mutable bytes (staging, or host-region slabs the peer is not reading or writing at
    /// the time; never the receive slots, ring or credit words).
    pub(crate) fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        &mut self.map[off..off + len]
    }

    /// The first byte, for handing the region's memory to a caller that
    /// manages it by offset (the client's pinned host region).
    pub(crate) fn base_ptr(&mut self) -> std::ptr::NonNull<u8> {
        // A mapping's pointer is never null (memmap2 maps at least one page).
        std::ptr::NonNull::new(self.map.as_mut_ptr()).unwrap_or(std::ptr::NonNull::dangling())
    }

    /// Reads an 8-byte-aligned word the peer updates with RDMA WRITE.
    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.map.len());
        let p = self.map[off..off + 8].as_ptr().cast::<u64>();
        // SAFETY: p points at 8 in-bounds bytes, 8-aligned (asserted; the mapping is
        // page-aligned); volatile because the NIC writes it behind the compiler's back.
        unsafe { std::ptr::read_volatile(p) }
    }

    /// Writes an 8-byte-aligned local word.
    pub(crate) fn write_u64(&mut self, off: usize, v: u64) {
        assert!(off.is_multiple_of(8) && off + 8 <= self.map.len());
        let p = self.map[off..off + 8].as_mut_ptr().cast::<u64>();
        // SAFETY: p points at 8 in-bounds bytes, 8-aligned (asserted, page-aligned mapping).
        unsafe { std::ptr::write_volatile(p, v) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: mr came from rgpu_ep_reg and is deregistered once, before the map unmaps.
        unsafe { sys::rgpu_ep_dereg(self.mr) };
    }
}
