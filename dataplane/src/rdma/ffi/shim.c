/*
 * rgpu RDMA verbs shim.
 *
 * Why it exists: ibv_post_send, ibv_post_recv, ibv_poll_cq and
 * ibv_req_notify_cq are static inline functions of <infiniband/verbs.h>
 * that call through the provider's ops table. Compiling them here, against
 * the real header, gives the exact struct layouts; every exported verbs
 * function is resolved with dlopen/dlsym at run time, so binaries that
 * contain this shim still start on hosts without libibverbs.
 *
 * The shim is deliberately thin: plain C types in, plain C types out, no
 * policy. All bounds and protocol decisions live in the Rust side.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

struct rgpu_ibv_fns {
	struct ibv_device **(*get_device_list)(int *);
	void (*free_device_list)(struct ibv_device **);
	const char *(*get_device_name)(struct ibv_device *);
	struct ibv_context *(*open_device)(struct ibv_device *);
	int (*close_device)(struct ibv_context *);
	int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
	int (*query_port)(struct ibv_context *, uint8_t, struct ibv_port_attr *);
	int (*query_gid)(struct ibv_context *, uint8_t, int, union ibv_gid *);
	struct ibv_pd *(*alloc_pd)(struct ibv_context *);
	int (*dealloc_pd)(struct ibv_pd *);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
	int (*dereg_mr)(struct ibv_mr *);
	struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *);
	int (*destroy_comp_channel)(struct ibv_comp_channel *);
	struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
	int (*destroy_cq)(struct ibv_cq *);
	int (*get_cq_event)(struct ibv_comp_channel *, struct ibv_cq **, void **);
	void (*ack_cq_events)(struct ibv_cq *, unsigned int);
	struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
	int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
	int (*destroy_qp)(struct ibv_qp *);
};

static struct rgpu_ibv_fns F;
static int loaded; /* 1 once every symbol resolved */

#define RESOLVE(field, name)                                                   \
	do {                                                                   \
		*(void **)(&F.field) = dlsym(h, name);                         \
		if (!F.field) {                                                \
			snprintf(err, err_len, "dlsym(%s) failed", name);      \
			return -1;                                             \
		}                                                              \
	} while (0)

/* Loads libibverbs.so.1 and resolves every function. Returns 0 or -1 with
 * a message in err. Not thread-safe; the Rust side calls it under a Once. */
int rgpu_ibv_load(char *err, size_t err_len)
{
	void *h;

	if (loaded)
		return 0;
	h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(err, err_len, "dlopen(libibverbs.so.1): %s", dlerror());
		return -1;
	}
	RESOLVE(get_device_list, "ibv_get_device_list");
	RESOLVE(free_device_list, "ibv_free_device_list");
	RESOLVE(get_device_name, "ibv_get_device_name");
	RESOLVE(open_device, "ibv_open_device");
	RESOLVE(close_device, "ibv_close_device");
	RESOLVE(query_device, "ibv_query_device");
	RESOLVE(query_port, "ibv_query_port");
	RESOLVE(query_gid, "ibv_query_gid");
	RESOLVE(alloc_pd, "ibv_alloc_pd");
	RESOLVE(dealloc_pd, "ibv_dealloc_pd");
	RESOLVE(reg_mr, "ibv_reg_mr");
	RESOLVE(dereg_mr, "ibv_dereg_mr");
	RESOLVE(create_comp_channel, "ibv_create_comp_channel");
	RESOLVE(destroy_comp_channel, "ibv_destroy_comp_channel");
	RESOLVE(create_cq, "ibv_create_cq");
	RESOLVE(destroy_cq, "ibv_destroy_cq");
	RESOLVE(get_cq_event, "ibv_get_cq_event");
	RESOLVE(ack_cq_events, "ibv_ack_cq_events");
	RESOLVE(create_qp, "ibv_create_qp");
	RESOLVE(modify_qp, "ibv_modify_qp");
	RESOLVE(destroy_qp, "ibv_destroy_qp");
	loaded = 1;
	return 0;
}

/* Capabilities the Rust side negotiates with. */
struct rgpu_caps {
	uint32_t max_qp_wr;
	uint32_t max_sge;
	uint32_t max_cqe;
	uint32_t max_msg_sz;
	uint32_t active_mtu; /* enum ibv_mtu value: 1=256 ... 5=4096 */
	uint32_t port_state;
	uint32_t link_layer;
	uint32_t gid_tbl_len;
	uint16_t lid;
	uint16_t pad;
	uint32_t max_inline; /* what the created QP reports */
	int32_t gid_index; /* the GID index in use, -1: none (InfiniBand LID routing) */
	uint32_t max_rd_atom; /* min(max_qp_rd_atom, max_qp_init_rd_atom): RDMA READs in flight */
};

/* Everything one endpoint owns. Opaque to Rust. */
struct rgpu_ep {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ibv_cq *cq;
	struct ibv_qp *qp;
	uint8_t port;
	unsigned int unacked_events;
};

/* Work completion reduced to what the Rust side needs. */
struct rgpu_wc {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t byte_len;
	uint32_t imm; /* host order; valid when has_imm */
	uint32_t has_imm;
	uint32_t vendor_err;
};

const char *rgpu_wc_status_str(uint32_t status)
{
	/* ibv_wc_status_str is exported, but a fixed table avoids one more
	 * symbol; the Rust side prints the number too. */
	switch (status) {
	case IBV_WC_SUCCESS: return "success";
	case IBV_WC_LOC_LEN_ERR: return "local length error";
	case IBV_WC_LOC_QP_OP_ERR: return "local QP operation error";
	case IBV_WC_LOC_PROT_ERR: return "local protection error";
	case IBV_WC_WR_FLUSH_ERR: return "work request flushed";
	case IBV_WC_REM_INV_REQ_ERR: return "remote invalid request";
	case IBV_WC_REM_ACCESS_ERR: return "remote access error";
	case IBV_WC_REM_OP_ERR: return "remote operation error";
	case IBV_WC_RETRY_EXC_ERR: return "transport retry counter exceeded";
	case IBV_WC_RNR_RETRY_EXC_ERR: return "RNR retry counter exceeded";
	default: return "other work completion error";
	}
}

static void ep_destroy(struct rgpu_ep *ep)
{
	if (ep->qp)
		F.destroy_qp(ep->qp);
	if (ep->cq) {
		if (ep->unacked_events)
			F.ack_cq_events(ep->cq, ep->unacked_events);
		F.destroy_cq(ep->cq);
	}
	if (ep->ch)
		F.destroy_comp_channel(ep->ch);
	if (ep->pd)
		F.dealloc_pd(ep->pd);
	if (ep->ctx)
		F.close_device(ep->ctx);
	free(ep);
}

/* Opens dev_name (NULL: first device), queries the device and port, reads
 * gid[gid_index] into gid_out, creates PD, completion channel, CQ and an RC
 * QP in RESET. max_inline is tried first, then 0 if the provider refuses.
 * Returns the endpoint or NULL with a message in err. */
struct rgpu_ep *rgpu_ep_open(const char *dev_name, uint8_t port, int gid_index,
			     uint32_t sq_depth, uint32_t rq_depth, uint32_t max_inline,
			     struct rgpu_caps *caps, uint8_t gid_out[16], uint32_t *qpn,
			     char *err, size_t err_len)
{
	struct ibv_device **list;
	struct ibv_device_attr da;
	struct ibv_port_attr pa;
	union ibv_gid gid;
	struct ibv_qp_init_attr ia;
	struct rgpu_ep *ep;
	int n = 0, i;

	if (!loaded) {
		snprintf(err, err_len, "libibverbs not loaded");
		return NULL;
	}
	ep = calloc(1, sizeof(*ep));
	if (!ep) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	ep->port = port;
	list = F.get_device_list(&n);
	if (!list || n == 0) {
		snprintf(err, err_len, "no RDMA device (ibv_get_device_list: %d devices, errno %d)", n, errno);
		if (list)
			F.free_device_list(list);
		free(ep);
		return NULL;
	}
	for (i = 0; i < n; i++)
		if (!dev_name || strcmp(F.get_device_name(list[i]), dev_name) == 0)
			break;
	if (i == n) {
		snprintf(err, err_len, "RDMA device %s not found among %d", dev_name, n);
		F.free_device_list(list);
		free(ep);
		return NULL;
	}
	ep->ctx = F.open_device(list[i]);
	F.free_device_list(list);
	if (!ep->ctx) {
		snprintf(err, err_len, "ibv_open_device: errno %d", errno);
		goto fail;
	}
	memset(&da, 0, sizeof(da));
	if (F.query_device(ep->ctx, &da)) {
		snprintf(err, err_len, "ibv_query_device: errno %d", errno);
		goto fail;
	}
	memset(&pa, 0, sizeof(pa));
	if (F.query_port(ep->ctx, port, &pa)) {
		snprintf(err, err_len, "ibv_query_port(%u): errno %d", port, errno);
		goto fail;
	}
	caps->max_qp_wr = (uint32_t)da.max_qp_wr;
	caps->max_sge = (uint32_t)da.max_sge;
	caps->max_cqe = (uint32_t)da.max_cqe;
	caps->max_rd_atom = (uint32_t)(da.max_qp_rd_atom < da.max_qp_init_rd_atom ? da.max_qp_rd_atom
										: da.max_qp_init_rd_atom);
	if ((int)caps->max_rd_atom < 0)
		caps->max_rd_atom = 0;
	caps->max_msg_sz = pa.max_msg_sz;
	caps->active_mtu = (uint32_t)pa.active_mtu;
	caps->port_state = (uint32_t)pa.state;
	caps->link_layer = pa.link_layer;
	caps->gid_tbl_len = (uint32_t)pa.gid_tbl_len;
	caps->lid = pa.lid;
	if (gid_index == -2) {
		/* auto: the first IPv4-mapped GID (::ffff:a.b.c.d), RoCE v2 on rxe */
		static const uint8_t v4map[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		for (i = 0; i < pa.gid_tbl_len && i < 256; i++)
			if (!F.query_gid(ep->ctx, port, i, &gid) && !memcmp(gid.raw, v4map, 12))
				break;
		gid_index = (i < pa.gid_tbl_len && i < 256) ? i : (pa.link_layer == IBV_LINK_LAYER_ETHERNET ? -3 : -1);
		if (gid_index == -3) {
			snprintf(err, err_len, "no IPv4-mapped GID on port %u; set gid_index", port);
			goto fail;
		}
	}
	caps->gid_index = gid_index;
	if (gid_index >= 0) {
		if (F.query_gid(ep->ctx, port, gid_index, &gid)) {
			snprintf(err, err_len, "ibv_query_gid(%d): errno %d", gid_index, errno);
			goto fail;
		}
		memcpy(gid_out, gid.raw, 16);
	} else {
		memset(gid_out, 0, 16);
	}
	if (sq_depth > caps->max_qp_wr || rq_depth > caps->max_qp_wr ||
	    sq_depth + rq_depth > caps->max_cqe) {
		snprintf(err, err_len, "queue depths %u/%u exceed device max_qp_wr %u / max_cqe %u",
			 sq_depth, rq_depth, caps->max_qp_wr, caps->max_cqe);
		goto fail;
	}
	ep->pd = F.alloc_pd(ep->ctx);
	if (!ep->pd) {
		snprintf(err, err_len, "ibv_alloc_pd: errno %d", errno);
		goto fail;
	}
	ep->ch = F.create_comp_channel(ep->ctx);
	if (!ep->ch) {
		snprintf(err, err_len, "ibv_create_comp_channel: errno %d", errno);
		goto fail;
	}
	ep->cq = F.create_cq(ep->ctx, (int)(sq_depth + rq_depth), NULL, ep->ch, 0);
	if (!ep->cq) {
		snprintf(err, err_len, "ibv_create_cq(%u): errno %d", sq_depth + rq_depth, errno);
		goto fail;
	}
	memset(&ia, 0, sizeof(ia));
	ia.send_cq = ep->cq;
	ia.recv_cq = ep->cq;
	ia.qp_type = IBV_QPT_RC;
	ia.sq_sig_all = 1;
	ia.cap.max_send_wr = sq_depth;
	ia.cap.max_recv_wr = rq_depth;
	ia.cap.max_send_sge = 1;
	ia.cap.max_recv_sge = 1;
	ia.cap.max_inline_data = max_inline;
	ep->qp = F.create_qp(ep->pd, &ia);
	if (!ep->qp && max_inline) {
		ia.cap.max_inline_data = 0;
		ep->qp = F.create_qp(ep->pd, &ia);
	}
	if (!ep->qp) {
		snprintf(err, err_len, "ibv_create_qp(RC, %u/%u WRs): errno %d", sq_depth, rq_depth, errno);
		goto fail;
	}
	caps->max_inline = ia.cap.max_inline_data;
	*qpn = ep->qp->qp_num;
	return ep;
fail:
	ep_destroy(ep);
	return NULL;
}

void rgpu_ep_close(struct rgpu_ep *ep)
{
	if (ep)
		ep_destroy(ep);
}

int rgpu_ep_channel_fd(struct rgpu_ep *ep)
{
	return ep->ch->fd;
}

/* Registers [addr, addr+len) with local write access plus, by the bits of
 * remote, remote write (1) and remote read (2). Returns the MR handle or NULL
 * (errno in *err_no). */
void *rgpu_ep_reg(struct rgpu_ep *ep, void *addr, size_t len, int remote,
		  uint32_t *lkey, uint32_t *rkey, int *err_no)
{
	int access = IBV_ACCESS_LOCAL_WRITE | ((remote & 1) ? IBV_ACCESS_REMOTE_WRITE : 0) |
		     ((remote & 2) ? IBV_ACCESS_REMOTE_READ : 0);
	struct ibv_mr *mr = F.reg_mr(ep->pd, addr, len, access);

	if (!mr) {
		*err_no = errno;
		return NULL;
	}
	*lkey = mr->lkey;
	*rkey = mr->rkey;
	return mr;
}

void rgpu_ep_dereg(void *mr)
{
	if (mr)
		F.dereg_mr((struct ibv_mr *)mr);
}

/* RESET -> INIT -> RTR -> RTS with the peer's QPN, PSN and GID. rd_atomic
 * RDMA READs may be in flight each way (0: none; the QP then refuses remote
 * reads). Returns 0 or the failing step (1..3) with errno in *err_no. */
int rgpu_ep_connect(struct rgpu_ep *ep, int gid_index, uint32_t mtu, uint32_t local_psn,
		    uint32_t remote_qpn, uint32_t remote_psn, const uint8_t remote_gid[16],
		    uint16_t remote_lid, uint8_t timeout, uint8_t retry_cnt, uint8_t rd_atomic,
		    int *err_no)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = ep->port;
	a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE |
			    (rd_atomic ? IBV_ACCESS_REMOTE_READ : 0);
	if (F.modify_qp(ep->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
		*err_no = errno;
		return 1;
	}
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = (enum ibv_mtu)mtu;
	a.dest_qp_num = remote_qpn;
	a.rq_psn = remote_psn;
	a.max_dest_rd_atomic = rd_atomic;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = remote_lid;
	a.ah_attr.port_num = ep->port;
	if (gid_index >= 0) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, remote_gid, 16);
		a.ah_attr.grh.sgid_index = (uint8_t)gid_index;
		a.ah_attr.grh.hop_limit = 1;
	}
	if (F.modify_qp(ep->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
				      IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) {
		*err_no = errno;
		return 2;
	}
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = timeout;
	a.retry_cnt = retry_cnt;
	a.rnr_retry = 0; /* credits guarantee a posted receive; an RNR is a bug */
	a.sq_psn = local_psn;
	a.max_rd_atomic = rd_atomic;
	if (F.modify_qp(ep->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
				      IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC)) {
		*err_no = errno;
		return 3;
	}
	return 0;
}

/* Destroys the QP early so registered regions can be deregistered before
 * the PD goes away in rgpu_ep_close. */
void rgpu_ep_destroy_qp(struct rgpu_ep *ep)
{
	if (ep->qp) {
		F.destroy_qp(ep->qp);
		ep->qp = NULL;
	}
}

/* Moves the QP to ERROR so every outstanding WR flushes (teardown). */
int rgpu_ep_to_error(struct rgpu_ep *ep)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_ERR;
	return F.modify_qp(ep->qp, &a, IBV_QP_STATE);
}

/* Posts one signaled send-queue WR with one SGE.
 * op: 0 = SEND, 1 = RDMA WRITE WITH IMM, 2 = RDMA WRITE, 3 = RDMA READ
 * (remote [raddr, raddr+len) into the local SGE).
 * Returns 0 or the provider's errno-style code. */
int rgpu_ep_post_send(struct rgpu_ep *ep, uint64_t wr_id, uint32_t op, uint64_t addr,
		      uint32_t len, uint32_t lkey, int inl, uint64_t raddr, uint32_t rkey,
		      uint32_t imm)
{
	struct ibv_sge sge;
	struct ibv_send_wr wr, *bad = NULL;

	memset(&wr, 0, sizeof(wr));
	sge.addr = addr;
	sge.length = len;
	sge.lkey = lkey;
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = len ? 1 : 0;
	wr.send_flags = IBV_SEND_SIGNALED | (inl ? IBV_SEND_INLINE : 0);
	switch (op) {
	case 0:
		wr.opcode = IBV_WR_SEND;
		break;
	case 1:
		wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
		wr.imm_data = htobe32(imm);
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
		break;
	case 2:
		wr.opcode = IBV_WR_RDMA_WRITE;
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
		break;
	case 3:
		if (inl)
			return EINVAL; /* a READ lands in registered memory, never inline */
		wr.opcode = IBV_WR_RDMA_READ;
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
		break;
	default:
		return EINVAL;
	}
	return ibv_post_send(ep->qp, &wr, &bad);
}

/* Posts one receive WR with one SGE (len 0: no buffer). */
int rgpu_ep_post_recv(struct rgpu_ep *ep, uint64_t wr_id, uint64_t addr, uint32_t len, uint32_t lkey)
{
	struct ibv_sge sge;
	struct ibv_recv_wr wr, *bad = NULL;

	sge.addr = addr;
	sge.length = len;
	sge.lkey = lkey;
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = len ? 1 : 0;
	return ibv_post_recv(ep->qp, &wr, &bad);
}

/* Polls up to n completions into out. Returns the count or -1. */
int rgpu_ep_poll(struct rgpu_ep *ep, struct rgpu_wc *out, int n)
{
	struct ibv_wc wc[16];
	int got, i;

	if (n > 16)
		n = 16;
	got = ibv_poll_cq(ep->cq, n, wc);
	for (i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].byte_len = wc[i].byte_len;
		out[i].has_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? 1 : 0;
		out[i].imm = out[i].has_imm ? be32toh(wc[i].imm_data) : 0;
		out[i].vendor_err = wc[i].vendor_err;
	}
	return got;
}

/* Arms the CQ for the next completion event. */
int rgpu_ep_arm(struct rgpu_ep *ep)
{
	return ibv_req_notify_cq(ep->cq, 0);
}

/* Consumes one completion event (the channel fd must be readable, else
 * this blocks). Events are acknowledged in batches. */
int rgpu_ep_take_event(struct rgpu_ep *ep)
{
	struct ibv_cq *cq;
	void *cq_ctx;

	if (F.get_cq_event(ep->ch, &cq, &cq_ctx))
		return -1;
	if (++ep->unacked_events >= 64) {
		F.ack_cq_events(ep->cq, ep->unacked_events);
		ep->unacked_events = 0;
	}
	return 0;
}

/* Opcode numbers the Rust side matches on. */
const uint32_t RGPU_WC_SEND = IBV_WC_SEND;
const uint32_t RGPU_WC_RDMA_WRITE = IBV_WC_RDMA_WRITE;
const uint32_t RGPU_WC_RECV = IBV_WC_RECV;
const uint32_t RGPU_WC_RECV_RDMA_WITH_IMM = IBV_WC_RECV_RDMA_WITH_IMM;
const uint32_t RGPU_PORT_ACTIVE = IBV_PORT_ACTIVE;
