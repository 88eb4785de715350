/*
 * verbs_smoke: print the verbs capabilities of one RDMA device and fail if
 * it is not usable for RoCE v2.
 *
 * Why it exists: the rgpu RDMA transport sizes its queues, inline sends,
 * scatter lists and MTU from these numbers, so the soft-RoCE VM harness
 * (scripts/rdma-vm-test) records them on every run. It is also the
 * smallest possible "our own code talks to libibverbs inside the VM" test.
 *
 * Usage: verbs_smoke [DEVICE]   (default: $RGPU_RDMA_DEV, else the first
 * device). Output is "key: value" lines, one fact per line. Exit status 0
 * iff every query succeeded, port 1 is ACTIVE and the GID table holds an
 * IPv4-mapped RoCE v2 entry; 1 otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Port whose attributes are reported (rxe has exactly one). */
#define PORT_NUM 1
/* Upper bound on GID entries fetched, whatever the device claims. */
#define GID_ENTRIES_MAX 4096
/* Upper bound of the max_inline_data probe, in bytes. */
#define INLINE_PROBE_BYTES_MAX 65536
/* Queue depths of the probe QP and CQ (small: only creation matters). */
#define PROBE_QUEUE_DEPTH 16
/* Size of the memory region registered as a smoke check, in bytes. */
#define MR_PROBE_BYTES (1u << 20)

static const char *gid_type_str(uint32_t type)
{
	switch (type) {
	case IBV_GID_TYPE_IB:
		return "IB";
	case IBV_GID_TYPE_ROCE_V1:
		return "RoCE v1";
	case IBV_GID_TYPE_ROCE_V2:
		return "RoCE v2";
	default:
		return "unknown";
	}
}

static int mtu_bytes(enum ibv_mtu mtu)
{
	return mtu >= IBV_MTU_256 && mtu <= IBV_MTU_4096 ? 128 << mtu : -1;
}

/* An IPv4-mapped IPv6 address: ::ffff:a.b.c.d */
static int gid_is_ipv4_mapped(const union ibv_gid *gid)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	return memcmp(gid->raw, prefix, sizeof(prefix)) == 0;
}

/* Try to create an RC QP asking for `inline_bytes` of inline data. Returns
 * the cap the provider granted (>= 0) or -1 if creation was refused. */
static long try_rc_qp(struct ibv_pd *pd, struct ibv_cq *cq, uint32_t inline_bytes,
		      struct ibv_qp_cap *granted)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = cq,
		.recv_cq = cq,
		.qp_type = IBV_QPT_RC,
		.cap = {
			.max_send_wr = PROBE_QUEUE_DEPTH,
			.max_recv_wr = PROBE_QUEUE_DEPTH,
			.max_send_sge = 1,
			.max_recv_sge = 1,
			.max_inline_data = inline_bytes,
		},
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &attr);
	if (!qp)
		return -1;
	if (granted)
		*granted = attr.cap;
	long got = attr.cap.max_inline_data;
	if (ibv_destroy_qp(qp)) {
		perror("ibv_destroy_qp");
		return -1;
	}
	return got;
}

/* Largest max_inline_data an RC QP accepts, by bisection over
 * [0, INLINE_PROBE_BYTES_MAX] (at most ~17 QP creations). */
static long probe_max_inline(struct ibv_pd *pd, struct ibv_cq *cq)
{
	if (try_rc_qp(pd, cq, 0, NULL) < 0)
		return -1;
	uint32_t lo = 0, hi = INLINE_PROBE_BYTES_MAX;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;
		if (try_rc_qp(pd, cq, mid, NULL) >= 0)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static int report_device(struct ibv_context *ctx)
{
	struct ibv_device_attr_ex ex = { 0 };
	if (ibv_query_device_ex(ctx, NULL, &ex)) {
		perror("ibv_query_device_ex");
		return -1;
	}
	const struct ibv_device_attr *a = &ex.orig_attr;
	printf("fw_ver: %s\n", a->fw_ver);
	printf("vendor_id: 0x%x\n", a->vendor_id);
	printf("vendor_part_id: %u\n", a->vendor_part_id);
	printf("max_mr_size: %llu\n", (unsigned long long)a->max_mr_size);
	printf("page_size_cap: 0x%llx\n", (unsigned long long)a->page_size_cap);
	printf("max_qp: %d\n", a->max_qp);
	printf("max_qp_wr: %d\n", a->max_qp_wr);
	printf("device_cap_flags: 0x%x\n", a->device_cap_flags);
	printf("max_sge: %d\n", a->max_sge);
	printf("max_sge_rd: %d\n", a->max_sge_rd);
	printf("max_cq: %d\n", a->max_cq);
	printf("max_cqe: %d\n", a->max_cqe);
	printf("max_mr: %d\n", a->max_mr);
	printf("max_pd: %d\n", a->max_pd);
	printf("max_qp_rd_atom: %d\n", a->max_qp_rd_atom);
	printf("max_qp_init_rd_atom: %d\n", a->max_qp_init_rd_atom);
	printf("atomic_cap: %d\n", a->atomic_cap);
	printf("max_mw: %d\n", a->max_mw);
	printf("max_srq: %d\n", a->max_srq);
	printf("max_srq_wr: %d\n", a->max_srq_wr);
	printf("max_srq_sge: %d\n", a->max_srq_sge);
	printf("max_pkeys: %u\n", a->max_pkeys);
	printf("phys_port_cnt: %u\n", a->phys_port_cnt);
	printf("odp_general_caps: 0x%llx\n", (unsigned long long)ex.odp_caps.general_caps);
	printf("odp_rc_caps: 0x%x\n", ex.odp_caps.per_transport_caps.rc_odp_caps);
	return a->phys_port_cnt;
}

static int report_port(struct ibv_context *ctx)
{
	struct ibv_port_attr p;
	if (ibv_query_port(ctx, PORT_NUM, &p)) {
		perror("ibv_query_port");
		return -1;
	}
	printf("port: %d\n", PORT_NUM);
	printf("port_state: %s\n", ibv_port_state_str(p.state));
	printf("link_layer: %s\n", p.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand");
	printf("max_mtu: %d\n", mtu_bytes(p.max_mtu));
	printf("active_mtu: %d\n", mtu_bytes(p.active_mtu));
	printf("max_msg_sz: %u\n", p.max_msg_sz);
	printf("gid_tbl_len: %d\n", p.gid_tbl_len);
	printf("port_cap_flags: 0x%x\n", p.port_cap_flags);
	printf("active_speed: %u\n", p.active_speed);
	printf("active_width: %u\n", p.active_width);
	return p.state == IBV_PORT_ACTIVE ? 0 : -1;
}

/* Prints every valid GID entry; returns how many are IPv4-mapped RoCE v2. */
static int report_gids(struct ibv_context *ctx, size_t entries_max)
{
	if (entries_max > GID_ENTRIES_MAX)
		entries_max = GID_ENTRIES_MAX;
	struct ibv_gid_entry *e = calloc(entries_max, sizeof(*e));
	if (!e) {
		perror("calloc");
		return -1;
	}
	ssize_t n = ibv_query_gid_table(ctx, e, entries_max, 0);
	if (n < 0) {
		fprintf(stderr, "ibv_query_gid_table: %s\n", strerror((int)-n));
		free(e);
		return -1;
	}
	int v4_roce_v2 = 0;
	printf("gid_entries: %zd\n", n);
	for (ssize_t i = 0; i < n; i++) {
		char text[INET6_ADDRSTRLEN];
		if (!inet_ntop(AF_INET6, e[i].gid.raw, text, sizeof(text)))
			snprintf(text, sizeof(text), "?");
		printf("gid[%u]: port=%u type=%s ifindex=%u gid=%s\n", e[i].gid_index,
		       e[i].port_num, gid_type_str(e[i].gid_type), e[i].ndev_ifindex, text);
		if (e[i].gid_type == IBV_GID_TYPE_ROCE_V2 && gid_is_ipv4_mapped(&e[i].gid))
			v4_roce_v2++;
	}
	free(e);
	return v4_roce_v2;
}

static int report_qp_and_mr(struct ibv_context *ctx)
{
	int rc = -1;
	struct ibv_pd *pd = NULL;
	struct ibv_cq *cq = NULL;
	struct ibv_mr *mr = NULL;
	void *buf = NULL;

	pd = ibv_alloc_pd(ctx);
	if (!pd) {
		perror("ibv_alloc_pd");
		goto out;
	}
	cq = ibv_create_cq(ctx, PROBE_QUEUE_DEPTH, NULL, NULL, 0);
	if (!cq) {
		perror("ibv_create_cq");
		goto out;
	}
	struct ibv_qp_cap granted;
	if (try_rc_qp(pd, cq, 0, &granted) < 0) {
		perror("ibv_create_qp(RC)");
		goto out;
	}
	printf("rc_qp_default_max_inline_data: %u\n", granted.max_inline_data);
	printf("rc_qp_granted_max_send_wr: %u (asked %d)\n", granted.max_send_wr, PROBE_QUEUE_DEPTH);
	long max_inline = probe_max_inline(pd, cq);
	if (max_inline < 0) {
		fprintf(stderr, "max_inline_data probe failed\n");
		goto out;
	}
	printf("rc_qp_max_inline_data: %ld%s\n", max_inline,
	       max_inline == INLINE_PROBE_BYTES_MAX ? " (probe limit)" : "");
	if (max_inline > 0 && try_rc_qp(pd, cq, (uint32_t)max_inline, &granted) >= 0)
		printf("rc_qp_granted_inline_at_max: %u\n", granted.max_inline_data);

	buf = calloc(1, MR_PROBE_BYTES);
	if (!buf) {
		perror("calloc");
		goto out;
	}
	mr = ibv_reg_mr(pd, buf, MR_PROBE_BYTES,
			IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	if (!mr) {
		perror("ibv_reg_mr");
		goto out;
	}
	printf("reg_mr_%u_bytes: ok\n", MR_PROBE_BYTES);
	rc = 0;
out:
	if (mr && ibv_dereg_mr(mr)) {
		perror("ibv_dereg_mr");
		rc = -1;
	}
	free(buf);
	if (cq && ibv_destroy_cq(cq)) {
		perror("ibv_destroy_cq");
		rc = -1;
	}
	if (pd && ibv_dealloc_pd(pd)) {
		perror("ibv_dealloc_pd");
		rc = -1;
	}
	return rc;
}

int main(int argc, char **argv)
{
	const char *want = argc > 1 ? argv[1] : getenv("RGPU_RDMA_DEV");
	int num = 0;
	struct ibv_device **list = ibv_get_device_list(&num);
	if (!list || num == 0) {
		fprintf(stderr, "verbs_smoke: no RDMA devices (%s)\n", strerror(errno));
		return 1;
	}
	struct ibv_device *dev = NULL;
	for (int i = 0; i < num; i++)
		if (!want || !*want || strcmp(ibv_get_device_name(list[i]), want) == 0) {
			dev = list[i];
			break;
		}
	if (!dev) {
		fprintf(stderr, "verbs_smoke: device %s not found\n", want);
		ibv_free_device_list(list);
		return 1;
	}
	printf("device: %s\n", ibv_get_device_name(dev));
	printf("node_type: %s\n", ibv_node_type_str(dev->node_type));
	struct ibv_context *ctx = ibv_open_device(dev);
	if (!ctx) {
		perror("ibv_open_device");
		ibv_free_device_list(list);
		return 1;
	}
	int failed = 0;
	int ports = report_device(ctx);
	if (ports < 1)
		failed = 1;
	if (report_port(ctx) < 0) {
		fprintf(stderr, "verbs_smoke: port %d is not ACTIVE\n", PORT_NUM);
		failed = 1;
	}
	struct ibv_port_attr p;
	size_t gid_max = 0;
	if (ports >= 1 && ibv_query_port(ctx, PORT_NUM, &p) == 0)
		gid_max = (size_t)p.gid_tbl_len * (size_t)ports;
	int v4 = report_gids(ctx, gid_max);
	if (v4 < 1) {
		fprintf(stderr, "verbs_smoke: no IPv4-mapped RoCE v2 GID\n");
		failed = 1;
	}
	if (report_qp_and_mr(ctx) < 0)
		failed = 1;
	if (ibv_close_device(ctx)) {
		perror("ibv_close_device");
		failed = 1;
	}
	ibv_free_device_list(list);
	printf("verbs_smoke: %s\n", failed ? "FAILED" : "ok");
	return failed;
}
