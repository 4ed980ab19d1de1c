/*
 * The extended verbs through the shim, in one process: ibv_cq_ex
 * (start/next/end_poll and every ibv_wc_read_*) and ibv_qp_ex (every wr_*
 * builder and setter, batches, wr_abort, errors) between two RC QPs and two
 * UD QPs of one device, with the data and the completion fields checked.
 * Prints "OK <step>" per step and "ALL OK" at the end; exits 1 on a failure.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

struct comp {
	uint64_t wr_id;
	enum ibv_wc_status status;
	enum ibv_wc_opcode opcode;
	uint32_t vendor_err, byte_len, imm, qp_num, src_qp, slid;
	unsigned int wc_flags;
	uint8_t sl, dlid_path_bits;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void read_one(struct ibv_cq_ex *cq, struct comp *c)
{
	c->wr_id = cq->wr_id;
	c->status = cq->status;
	c->opcode = ibv_wc_read_opcode(cq);
	c->vendor_err = ibv_wc_read_vendor_err(cq);
	c->byte_len = ibv_wc_read_byte_len(cq);
	c->wc_flags = ibv_wc_read_wc_flags(cq);
	c->imm = 0;
	if (c->wc_flags & IBV_WC_WITH_IMM)
		c->imm = be32toh(ibv_wc_read_imm_data(cq));
	else if (c->wc_flags & IBV_WC_WITH_INV)
		c->imm = ibv_wc_read_invalidated_rkey(cq);
	c->qp_num = ibv_wc_read_qp_num(cq);
	c->src_qp = ibv_wc_read_src_qp(cq);
	c->slid = ibv_wc_read_slid(cq);
	c->sl = ibv_wc_read_sl(cq);
	c->dlid_path_bits = ibv_wc_read_dlid_path_bits(cq);
}

/* Exactly n completions through start/next/end_poll (5 s at most). */
static void poll_ex(struct ibv_cq_ex *cq, struct comp *out, int n)
{
	struct ibv_poll_cq_attr attr = {};
	int got = 0;
	double end = now() + 5;

	while (got < n) {
		int r = ibv_start_poll(cq, &attr);
		if (r == ENOENT) {
			CHECK(now() < end, "%d of %d completions", got, n);
			continue;
		}
		CHECK(r == 0, "start_poll %d", r);
		do {
			CHECK(got < n, "more completions than the %d expected", n);
			read_one(cq, &out[got++]);
		} while (got < n && ibv_next_poll(cq) == 0);
		ibv_end_poll(cq);
	}
}

static void connect_rc(struct ibv_qp *qp, uint32_t dest, union ibv_gid *gid)
{
	rc_connect_access(qp, dest, gid, ALL_ACCESS);
}

static void connect_ud(struct ibv_qp *qp)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = 1, .qkey = 0x11111111,
	};
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
					     IBV_QP_QKEY), "UD INIT");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE), "UD RTR");
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 0;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN), "UD RTS");
}

static void post_recv(struct ibv_qp *qp, uint64_t wr_id, void *buf, uint32_t len, uint32_t lkey)
{
	struct ibv_sge s = { .addr = (uintptr_t)buf, .length = len, .lkey = lkey };
	struct ibv_recv_wr wr = { .wr_id = wr_id, .sg_list = &s, .num_sge = 1 }, *bad;
	CHECK(!ibv_post_recv(qp, &wr, &bad), "post_recv");
}

static struct ibv_qp *qp_ex(struct ibv_context *ctx, struct ibv_pd *pd, struct ibv_cq_ex *cq,
			    enum ibv_qp_type t, uint64_t ops)
{
	struct ibv_qp_init_attr_ex a = {
		.send_cq = ibv_cq_ex_to_cq(cq),
		.recv_cq = ibv_cq_ex_to_cq(cq),
		.cap = { .max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 2,
			 .max_recv_sge = 2, .max_inline_data = 64 },
		.qp_type = t,
		.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
		.pd = pd,
		.send_ops_flags = ops,
	};
	return ibv_create_qp_ex(ctx, &a);
}

/* Two threads building batches of two WRs on one QP at once. */
struct racer {
	struct ibv_qp_ex *x;
	uint32_t lkey, rkey;
	uint64_t laddr, raddr;
	uint64_t id;
};

enum { RACE_BATCHES = 100 };

static void *race(void *arg)
{
	struct racer *r = arg;
	for (uint64_t i = 0; i < RACE_BATCHES; i++) {
		for (;;) {
			ibv_wr_start(r->x);
			r->x->wr_flags = IBV_SEND_SIGNALED;
			for (uint64_t k = 0; k < 2; k++) {
				r->x->wr_id = r->id << 32 | (2 * i + k);
				ibv_wr_rdma_write(r->x, r->rkey, r->raddr);
				ibv_wr_set_sge(r->x, r->lkey, r->laddr, 8);
				sched_yield(); /* let the other thread try to start */
			}
			int e = ibv_wr_complete(r->x);
			if (e == 0)
				break;
			CHECK(e == ENOSPC, "racing wr_complete: %d", e);
			sched_yield();
		}
	}
	return NULL;
}

int main(void)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	CHECK(list && list[0], "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open_device: %s", strerror(errno));
	union ibv_gid gid;
	CHECK(!ibv_query_gid(ctx, 1, 1, &gid), "query_gid");
	struct ibv_device_attr_ex dx;
	CHECK(!ibv_query_device_ex(ctx, NULL, &dx), "query_device_ex");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");

	/* --- ibv_cq_ex creation rules --- */
	struct ibv_cq_init_attr_ex ca = { .cqe = 1024, .wc_flags = IBV_WC_STANDARD_FLAGS };
	CHECK(dx.completion_timestamp_mask == 0, "the device advertises no timestamps");
	ca.wc_flags = IBV_WC_EX_WITH_COMPLETION_TIMESTAMP;
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ca) && errno == EOPNOTSUPP, "timestamp: errno %d", errno);
	ca.wc_flags = IBV_WC_STANDARD_FLAGS | IBV_WC_EX_WITH_FLOW_TAG;
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ca) && errno == EOPNOTSUPP, "flow tag: errno %d", errno);
	ca.wc_flags = IBV_WC_STANDARD_FLAGS;
	ca.comp_mask = IBV_CQ_INIT_ATTR_MASK_FLAGS;
	ca.flags = IBV_CREATE_CQ_ATTR_IGNORE_OVERRUN;
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ca) && errno == EOPNOTSUPP, "ignore overrun: errno %d", errno);
	ca.flags = IBV_CREATE_CQ_ATTR_SINGLE_THREADED;
	struct ibv_cq_ex *cqa = ibv_create_cq_ex(ctx, &ca);
	CHECK(cqa, "create_cq_ex: %s", strerror(errno));
	CHECK(cqa->read_byte_len && cqa->read_imm_data && cqa->read_qp_num &&
	      cqa->read_src_qp && cqa->read_slid && cqa->read_sl && cqa->read_dlid_path_bits,
	      "every standard read_* is set");
	CHECK(!cqa->read_completion_ts, "no read_completion_ts");
	ca.comp_mask = 0;
	ca.wc_flags = IBV_WC_EX_WITH_BYTE_LEN;
	struct ibv_cq_ex *small = ibv_create_cq_ex(ctx, &ca);
	CHECK(small && small->read_byte_len && !small->read_imm_data && !small->read_qp_num &&
	      small->read_opcode && small->read_wc_flags && small->read_vendor_err,
	      "read_* follow wc_flags");
	CHECK(!ibv_destroy_cq(ibv_cq_ex_to_cq(small)), "destroy small");
	ca.wc_flags = IBV_WC_STANDARD_FLAGS;
	struct ibv_cq_ex *cqb = ibv_create_cq_ex(ctx, &ca);
	CHECK(cqb, "create_cq_ex b");
	struct ibv_poll_cq_attr pa = {};
	errno = 0;
	CHECK(ibv_start_poll(cqa, &pa) == ENOENT && errno == ENOENT, "empty CQ: ENOENT");
	OK("cq_ex_create");

	/* --- ibv_qp_ex creation rules --- */
	uint64_t rc_ops = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM |
			  IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM |
			  IBV_QP_EX_WITH_RDMA_READ | IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP |
			  IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD | IBV_QP_EX_WITH_SEND_WITH_INV;
	/* Memory windows' builders: mw.c; atomic write and flush: placement.c. */
	uint64_t unsupported[] = { IBV_QP_EX_WITH_TSO };
	for (unsigned i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		errno = 0;
		CHECK(!qp_ex(ctx, pd, cqa, IBV_QPT_RC, IBV_QP_EX_WITH_SEND | unsupported[i]) &&
		      errno == EOPNOTSUPP, "op %#llx: errno %d",
		      (unsigned long long)unsupported[i], errno);
	}
	errno = 0;
	CHECK(!qp_ex(ctx, pd, cqa, IBV_QPT_UD, IBV_QP_EX_WITH_RDMA_WRITE) && errno == EOPNOTSUPP,
	      "UD write: errno %d", errno);
	errno = 0;
	CHECK(!qp_ex(ctx, pd, cqa, IBV_QPT_UC, IBV_QP_EX_WITH_RDMA_READ) && errno == EOPNOTSUPP,
	      "UC read: errno %d", errno);
	struct ibv_qp *qa = qp_ex(ctx, pd, cqa, IBV_QPT_RC, rc_ops);
	CHECK(qa, "create_qp_ex: %s", strerror(errno));
	struct ibv_qp_ex *x = ibv_qp_to_qp_ex(qa);
	CHECK(x && &x->qp_base == qa, "qp_to_qp_ex");
	CHECK(x->wr_send && x->wr_send_imm && x->wr_send_inv && x->wr_rdma_write &&
	      x->wr_rdma_write_imm && x->wr_rdma_read && x->wr_atomic_cmp_swp &&
	      x->wr_atomic_fetch_add && x->wr_set_sge && x->wr_set_sge_list &&
	      x->wr_set_inline_data && x->wr_set_inline_data_list && x->wr_set_ud_addr &&
	      x->wr_start && x->wr_complete && x->wr_abort, "builders and setters set");
	CHECK(!x->wr_bind_mw && !x->wr_local_inv && !x->wr_send_tso && !x->wr_set_xrc_srqn &&
	      !x->wr_atomic_write, "unsupported builders NULL");
	struct ibv_qp_init_attr pia = {
		.send_cq = ibv_cq_ex_to_cq(cqb), .recv_cq = ibv_cq_ex_to_cq(cqb),
		.cap = { .max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 2,
			 .max_recv_sge = 2 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qb = ibv_create_qp(pd, &pia);
	CHECK(qb, "create_qp");
	CHECK(!ibv_qp_to_qp_ex(qb), "a plain QP is no qp_ex");
	struct ibv_qp_attr qattr;
	struct ibv_qp_init_attr qinit;
	CHECK(!ibv_query_qp(qa, &qattr, IBV_QP_CAP, &qinit) && qinit.cap.max_inline_data >= 64,
	      "max_inline_data %u", qinit.cap.max_inline_data);
	OK("qp_ex_create");

	connect_rc(qa, qb->qp_num, &gid);
	connect_rc(qb, qa->qp_num, &gid);

	enum { N = 4096 };
	uint8_t *la = aligned_alloc(4096, N), *rb = aligned_alloc(4096, N);
	for (int i = 0; i < N; i++) {
		la[i] = (uint8_t)(i * 7 + 1);
		rb[i] = 0;
	}
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
		  IBV_ACCESS_REMOTE_ATOMIC;
	struct ibv_mr *mra = ibv_reg_mr(pd, la, N, acc), *mrb = ibv_reg_mr(pd, rb, N, acc);
	CHECK(mra && mrb, "reg_mr");
	struct comp c[8];

	/* --- one batch of three sends: sge, inline, sge list --- */
	post_recv(qb, 101, rb, 256, mrb->lkey);
	post_recv(qb, 102, rb + 256, 256, mrb->lkey);
	post_recv(qb, 103, rb + 512, 256, mrb->lkey);
	char msg[] = "inline payload";
	ibv_wr_start(x);
	x->wr_id = 1;
	x->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_send(x);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 100);
	x->wr_id = 2;
	ibv_wr_send_imm(x, htobe32(0xabcdef01));
	ibv_wr_set_inline_data(x, msg, sizeof(msg));
	memset(msg, 'X', sizeof(msg) - 1); /* inline data was copied at the call */
	x->wr_id = 3;
	ibv_wr_send(x);
	struct ibv_sge two[2] = { { (uintptr_t)(la + 1000), 10, mra->lkey },
				  { (uintptr_t)(la + 2000), 20, mra->lkey } };
	ibv_wr_set_sge_list(x, 2, two);
	CHECK(ibv_wr_complete(x) == 0, "wr_complete");
	poll_ex(cqa, c, 3);
	for (int i = 0; i < 3; i++) {
		CHECK(c[i].wr_id == (uint64_t)i + 1 && c[i].status == IBV_WC_SUCCESS &&
		      c[i].opcode == IBV_WC_SEND && c[i].qp_num == qa->qp_num && c[i].vendor_err == 0,
		      "send completion %d: wr_id %llu status %d opcode %d qp %u", i,
		      (unsigned long long)c[i].wr_id, c[i].status, c[i].opcode, c[i].qp_num);
	}
	poll_ex(cqb, c, 3);
	CHECK(c[0].wr_id == 101 && c[0].opcode == IBV_WC_RECV && c[0].byte_len == 100 &&
	      c[0].qp_num == qb->qp_num && /* src_qp: UD only (rxe: 0) */
	      !(c[0].wc_flags & (IBV_WC_WITH_IMM | IBV_WC_WITH_INV)) && c[0].slid == 0 &&
	      c[0].sl == 0 && c[0].dlid_path_bits == 0,
	      "recv 1: wr_id %llu opcode %d len %u qp %u src %u flags %#x",
	      (unsigned long long)c[0].wr_id, c[0].opcode, c[0].byte_len, c[0].qp_num,
	      c[0].src_qp, c[0].wc_flags);
	CHECK(!memcmp(rb, la, 100), "send data");
	CHECK(c[1].wr_id == 102 && c[1].opcode == IBV_WC_RECV && c[1].byte_len == sizeof(msg) &&
	      (c[1].wc_flags & IBV_WC_WITH_IMM) && c[1].imm == 0xabcdef01,
	      "recv 2: len %u flags %#x imm %#x", c[1].byte_len, c[1].wc_flags, c[1].imm);
	CHECK(!memcmp(rb + 256, "inline payload", sizeof(msg)), "inline data");
	CHECK(c[2].wr_id == 103 && c[2].byte_len == 30 &&
	      !(c[2].wc_flags & (IBV_WC_WITH_IMM | IBV_WC_WITH_INV)),
	      "recv 3: len %u flags %#x", c[2].byte_len, c[2].wc_flags);
	CHECK(!memcmp(rb + 512, la + 1000, 10) && !memcmp(rb + 522, la + 2000, 20),
	      "sge list data");
	OK("wr_send wr_send_imm wr_set_sge wr_set_inline_data wr_set_sge_list");

	/* --- RDMA and atomics in one batch --- */
	uint64_t *cnt = (uint64_t *)(rb + 2048), *res = (uint64_t *)(la + 3072);
	*cnt = 40;
	post_recv(qb, 104, rb + 4000, 0, mrb->lkey);
	char p1[] = "hello ", p2[] = "world";
	struct ibv_data_buf bufs[2] = { { p1, 6 }, { p2, 5 } };
	ibv_wr_start(x);
	x->wr_flags = IBV_SEND_SIGNALED;
	x->wr_id = 11;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 1024));
	ibv_wr_set_inline_data_list(x, 2, bufs);
	x->wr_id = 12;
	ibv_wr_rdma_write_imm(x, mrb->rkey, (uintptr_t)(rb + 1100), htobe32(77));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)(la + 100), 300);
	x->wr_id = 13;
	ibv_wr_rdma_read(x, mrb->rkey, (uintptr_t)(rb + 1024));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)(la + 3500), 11);
	x->wr_id = 14;
	ibv_wr_atomic_fetch_add(x, mrb->rkey, (uintptr_t)cnt, 2);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)res, 8);
	x->wr_id = 15;
	ibv_wr_atomic_cmp_swp(x, mrb->rkey, (uintptr_t)cnt, 42, 1000);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)(res + 1), 8);
	CHECK(ibv_wr_complete(x) == 0, "wr_complete rdma");
	poll_ex(cqa, c, 5);
	enum ibv_wc_opcode want[5] = { IBV_WC_RDMA_WRITE, IBV_WC_RDMA_WRITE, IBV_WC_RDMA_READ,
				       IBV_WC_FETCH_ADD, IBV_WC_COMP_SWAP };
	for (int i = 0; i < 5; i++)
		CHECK(c[i].wr_id == (uint64_t)i + 11 && c[i].status == IBV_WC_SUCCESS &&
		      c[i].opcode == want[i], "completion %d: wr_id %llu status %d opcode %d", i,
		      (unsigned long long)c[i].wr_id, c[i].status, c[i].opcode);
	CHECK(c[2].byte_len == 11, "read byte_len %u", c[2].byte_len);
	CHECK(!memcmp(rb + 1024, "hello world", 11), "inline list write");
	CHECK(!memcmp(rb + 1100, la + 100, 300), "write_imm data");
	CHECK(!memcmp(la + 3500, "hello world", 11), "read data");
	CHECK(res[0] == 40 && res[1] == 42 && *cnt == 1000, "atomics: %llu %llu %llu",
	      (unsigned long long)res[0], (unsigned long long)res[1], (unsigned long long)*cnt);
	/* the responder's completion, through ibv_poll_cq on the same CQ */
	struct ibv_wc wc;
	double end = now() + 5;
	int n;
	while ((n = ibv_poll_cq(ibv_cq_ex_to_cq(cqb), 1, &wc)) == 0)
		CHECK(now() < end, "no write_imm completion");
	CHECK(n == 1 && wc.wr_id == 104 && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM &&
	      (wc.wc_flags & IBV_WC_WITH_IMM) && be32toh(wc.imm_data) == 77 && wc.byte_len == 300,
	      "write_imm recv: opcode %d flags %#x len %u", wc.opcode, wc.wc_flags, wc.byte_len);
	OK("wr_rdma_write wr_rdma_write_imm wr_rdma_read wr_atomic_fetch_add wr_atomic_cmp_swp "
	   "wr_set_inline_data_list ibv_poll_cq");

	/* --- unsignaled WRs, wr_abort and refused batches post nothing --- */
	ibv_wr_start(x);
	x->wr_id = 20;
	x->wr_flags = 0;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3000));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	ibv_wr_abort(x);
	x->wr_flags = IBV_SEND_SIGNALED;
	/* a setter error sticks: ENOSPC, the good WR before it not posted */
	ibv_wr_start(x);
	x->wr_id = 21;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3000));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	x->wr_id = 22;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3000));
	struct ibv_sge three[3] = { two[0], two[1], two[0] };
	ibv_wr_set_sge_list(x, 3, three);
	CHECK(ibv_wr_complete(x) == ENOSPC, "too many SGEs: ENOSPC");
	static char big[4096];
	ibv_wr_start(x);
	x->wr_id = 23;
	ibv_wr_send(x);
	ibv_wr_set_inline_data(x, big, qinit.cap.max_inline_data + 1);
	CHECK(ibv_wr_complete(x) == ENOSPC, "inline too long: ENOSPC");
	ibv_wr_start(x);
	for (unsigned i = 0; i <= qinit.cap.max_send_wr; i++) {
		x->wr_id = 24;
		ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3000));
		ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	}
	CHECK(ibv_wr_complete(x) == ENOSPC, "more WRs than the send queue holds: ENOSPC");
	/* refused by the device (an atomic needs 8 bytes): EINVAL, nothing posted */
	ibv_wr_start(x);
	x->wr_id = 25;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3000));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	x->wr_id = 26;
	ibv_wr_atomic_fetch_add(x, mrb->rkey, (uintptr_t)cnt, 1);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)res, 4);
	CHECK(ibv_wr_complete(x) == EINVAL, "bad atomic: EINVAL");
	ibv_wr_start(x);
	x->wr_id = 26;
	ibv_wr_rdma_read(x, mrb->rkey, (uintptr_t)(rb + 3000));
	ibv_wr_set_inline_data(x, msg, 8);
	CHECK(ibv_wr_complete(x) == EINVAL, "inline data on a READ: EINVAL");
	/* an unsignaled WR then a signaled one: only the latter completes */
	ibv_wr_start(x);
	x->wr_id = 27;
	x->wr_flags = 0;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3100));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	x->wr_id = 28;
	x->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_rdma_write(x, mrb->rkey, (uintptr_t)(rb + 3200));
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 8);
	CHECK(ibv_wr_complete(x) == 0, "wr_complete");
	poll_ex(cqa, c, 1);
	CHECK(c[0].wr_id == 28 && c[0].status == IBV_WC_SUCCESS, "first completion %llu",
	      (unsigned long long)c[0].wr_id);
	CHECK(ibv_start_poll(cqa, &pa) == ENOENT, "nothing else on the CQ");
	for (int i = 3000; i < 3008; i++)
		CHECK(rb[i] == 0, "a refused or aborted WR wrote");
	CHECK(!memcmp(rb + 3100, la, 8) && !memcmp(rb + 3200, la, 8), "the posted writes");
	CHECK(*cnt == 1000, "a refused atomic ran");
	OK("wr_abort wr_complete_errors unsignaled");

	/* --- two threads: each batch whole and in order, none lost --- */
	{
		struct racer r[2];
		pthread_t t[2];
		for (int i = 0; i < 2; i++) {
			r[i] = (struct racer){ x, mra->lkey, mrb->rkey, (uintptr_t)la,
					       (uintptr_t)(rb + 3300 + 8 * i), (uint64_t)i + 1 };
			CHECK(!pthread_create(&t[i], NULL, race, &r[i]), "pthread_create");
		}
		uint64_t next[2] = { 0, 0 };
		for (int k = 0; k < 2 * 2 * RACE_BATCHES; k += 2) {
			poll_ex(cqa, c, 2);
			uint64_t who = c[0].wr_id >> 32;
			CHECK((who == 1 || who == 2) && c[1].wr_id >> 32 == who &&
			      (uint32_t)c[0].wr_id == next[who - 1] &&
			      (uint32_t)c[1].wr_id == next[who - 1] + 1 &&
			      c[0].status == IBV_WC_SUCCESS && c[1].status == IBV_WC_SUCCESS,
			      "batch split or lost: %#llx %#llx", (unsigned long long)c[0].wr_id,
			      (unsigned long long)c[1].wr_id);
			next[who - 1] += 2;
		}
		for (int i = 0; i < 2; i++)
			CHECK(!pthread_join(t[i], NULL), "join");
		CHECK(ibv_start_poll(cqa, &pa) == ENOENT, "nothing more");
	}
	OK("wr_start_from_two_threads");

	/* --- UD: wr_set_ud_addr --- */
	struct ibv_qp *ua = qp_ex(ctx, pd, cqa, IBV_QPT_UD,
				  IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM);
	CHECK(ua, "UD create_qp_ex: %s", strerror(errno));
	struct ibv_qp_ex *ux = ibv_qp_to_qp_ex(ua);
	CHECK(ux && !ux->wr_rdma_write && !ux->wr_send_inv, "UD builders");
	pia.qp_type = IBV_QPT_UD;
	struct ibv_qp *ub = ibv_create_qp(pd, &pia);
	CHECK(ub, "UD create_qp");
	connect_ud(ua);
	connect_ud(ub);
	struct ibv_ah_attr aa = { .is_global = 1, .port_num = 1 };
	aa.grh.dgid = gid;
	aa.grh.sgid_index = 1;
	aa.grh.hop_limit = 1;
	struct ibv_ah *ah = ibv_create_ah(pd, &aa);
	CHECK(ah, "create_ah");
	memset(rb, 0, 512);
	post_recv(ub, 201, rb, 512, mrb->lkey);
	ibv_wr_start(ux);
	ux->wr_id = 31;
	ux->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_send_imm(ux, htobe32(5));
	ibv_wr_set_ud_addr(ux, ah, ub->qp_num, 0x11111111);
	ibv_wr_set_sge(ux, mra->lkey, (uintptr_t)la, 200);
	CHECK(ibv_wr_complete(ux) == 0, "UD wr_complete");
	poll_ex(cqa, c, 1);
	CHECK(c[0].wr_id == 31 && c[0].status == IBV_WC_SUCCESS && c[0].opcode == IBV_WC_SEND &&
	      c[0].qp_num == ua->qp_num, "UD send completion: status %d", c[0].status);
	poll_ex(cqb, c, 1);
	CHECK(c[0].wr_id == 201 && c[0].status == IBV_WC_SUCCESS && c[0].byte_len == 240 &&
	      (c[0].wc_flags & IBV_WC_GRH) && (c[0].wc_flags & IBV_WC_WITH_IMM) && c[0].imm == 5 &&
	      c[0].src_qp == ua->qp_num && c[0].qp_num == ub->qp_num,
	      "UD recv: status %d len %u flags %#x imm %u src %u", c[0].status, c[0].byte_len,
	      c[0].wc_flags, c[0].imm, c[0].src_qp);
	CHECK(!memcmp(rb + 40, la, 200), "UD data");
	OK("wr_set_ud_addr");

	/* --- wr_send_inv: a plain MR cannot be invalidated by a peer (the
	 * device has no memory windows), so both sides fail as on rxe --- */
	post_recv(qb, 301, rb, 256, mrb->lkey);
	ibv_wr_start(x);
	x->wr_id = 41;
	x->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_send_inv(x, mrb->rkey);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)la, 16);
	CHECK(ibv_wr_complete(x) == 0, "send_inv wr_complete");
	poll_ex(cqa, c, 1);
	CHECK(c[0].wr_id == 41 && c[0].status == IBV_WC_REM_INV_REQ_ERR,
	      "send_inv completion: wr_id %llu status %d", (unsigned long long)c[0].wr_id,
	      c[0].status);
	poll_ex(cqb, c, 1);
	CHECK(c[0].wr_id == 301 && c[0].status == IBV_WC_REM_INV_REQ_ERR,
	      "send_inv receive: wr_id %llu status %d", (unsigned long long)c[0].wr_id,
	      c[0].status);
	OK("wr_send_inv");

	CHECK(!ibv_destroy_ah(ah), "destroy_ah");
	CHECK(!ibv_destroy_qp(ua) && !ibv_destroy_qp(ub), "destroy UD QPs");
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy QPs");
	CHECK(!ibv_dereg_mr(mra) && !ibv_dereg_mr(mrb), "dereg");
	CHECK(!ibv_destroy_cq(ibv_cq_ex_to_cq(cqa)) && !ibv_destroy_cq(ibv_cq_ex_to_cq(cqb)),
	      "destroy CQs");
	CHECK(!ibv_dealloc_pd(pd), "dealloc_pd");
	CHECK(!ibv_close_device(ctx), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
