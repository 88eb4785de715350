//! Raw declarations of the C shim in `ffi/shim.c`.
//!
//! Exists to keep every `extern "C"` item and `#[repr(C)]` mirror in one place;
//! only [`super::verbs`] calls them. The shim's structs are our own (not
//! libibverbs'), so their layout is fixed by `shim.c` and asserted below.

use std::ffi::{c_char, c_int, c_void};

/// Opaque endpoint owned by the shim (`struct rgpu_ep`).
#[repr(C)]
pub(crate) struct RawEp {
    _private: [u8; 0],
}

/// Mirror of `struct rgpu_caps`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawCaps {
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cqe: u32,
    pub max_msg_sz: u32,
    pub active_mtu: u32,
    pub port_state: u32,
    pub link_layer: u32,
    pub gid_tbl_len: u32,
    pub lid: u16,
    pub pad: u16,
    pub max_inline: u32,
    pub gid_index: i32,
    pub max_rd_atom: u32,
}
const _: () = assert!(std::mem::size_of::<RawCaps>() == 48);

/// Mirror of `struct rgpu_wc`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RawWc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub byte_len: u32,
    pub imm: u32,
    pub has_imm: u32,
    pub vendor_err: u32,
}
const _: () = assert!(std::mem::size_of::<RawWc>() == 32);

/// Most completions one `rgpu_ep_poll` returns (the shim's stack array).
pub(crate) const POLL_BATCH_MAX: usize = 16;

extern "C" {
    pub(crate) fn rgpu_ibv_load(err: *mut c_char, err_len: usize) -> c_int;
    pub(crate) fn rgpu_ep_open(
        dev_name: *const c_char,
        port: u8,
        gid_index: c_int,
        sq_depth: u32,
        rq_depth: u32,
        max_inline: u32,
        caps: *mut RawCaps,
        gid_out: *mut u8,
        qpn: *mut u32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawEp;
    pub(crate) fn rgpu_ep_close(ep: *mut RawEp);
    pub(crate) fn rgpu_ep_channel_fd(ep: *mut RawEp) -> c_int;
    pub(crate) fn rgpu_ep_reg(
        ep: *mut RawEp,
        addr: *mut c_void,
        len: usize,
        remote: c_int,
        lkey: *mut u32,
        rkey: *mut u32,
        err_no: *mut c_int,
    ) -> *mut c_void;
    pub(crate) fn rgpu_ep_dereg(mr: *mut c_void);
    pub(crate) fn rgpu_ep_connect(
        ep: *mut RawEp,
        gid_index: c_int,
        mtu: u32,
        local_psn: u32,
        remote_qpn: u32,
        remote_psn: u32,
        remote_gid: *const u8,
        remote_lid: u16,
        timeout: u8,
        retry_cnt: u8,
        rd_atomic: u8,
        err_no: *mut c_int,
    ) -> c_int;
    pub(crate) fn rgpu_ep_destroy_qp(ep: *mut RawEp);
    pub(crate) fn rgpu_ep_to_error(ep: *mut RawEp) -> c_int;
    pub(crate) fn rgpu_ep_post_send(
        ep: *mut RawEp,
        wr_id: u64,
        op: u32,
        addr: u64,
        len: u32,
        lkey: u32,
        inl: c_int,
        raddr: u64,
        rkey: u32,
        imm: u32,
    ) -> c_int;
    pub(crate) fn rgpu_ep_post_recv(
        ep: *mut RawEp,
        wr_id: u64,
        addr: u64,
        len: u32,
        lkey: u32,
    ) -> c_int;
    pub(crate) fn rgpu_ep_poll(ep: *mut RawEp, out: *mut RawWc, n: c_int) -> c_int;
    pub(crate) fn rgpu_ep_arm(ep: *mut RawEp) -> c_int;
    pub(crate) fn rgpu_ep_take_event(ep: *mut RawEp) -> c_int;
    pub(crate) fn rgpu_wc_status_str(status: u32) -> *const c_char;
    pub(crate) static RGPU_WC_RECV: u32;
    pub(crate) static RGPU_WC_RECV_RDMA_WITH_IMM: u32;
    pub(crate) static RGPU_PORT_ACTIVE: u32;
}
