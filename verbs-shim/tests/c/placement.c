/*
 * ATOMIC WRITE and FLUSH through the extended QP API on the shim, between
 * two RC QPs of one device: the capability bits, registration with the
 * FLUSH access flags, ibv_wr_atomic_write and ibv_wr_flush with the data
 * and completions checked, and a FLUSH asking for what the MR does not
 * allow. Prints "OK <step>" per step and "ALL OK"; exits 1 on a failure.
 *
 * ibv_wr_flush arrived in rdma-core 45; built against older headers (the
 * Rust side passes -DHAVE_IBV_WR_FLUSH when the header has it) the test
 * declares what 45 adds, with 45's values and layout: the wr_flush member
 * right after wr_atomic_write, and the inline wrapper calling it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

#ifndef HAVE_IBV_WR_FLUSH
enum {
	IBV_WC_FLUSH = 8,
	IBV_QP_EX_WITH_FLUSH = 1 << 11,
	IBV_ACCESS_FLUSH_GLOBAL = 1 << 8,
	IBV_ACCESS_FLUSH_PERSISTENT = 1 << 9,
	IBV_FLUSH_GLOBAL = 1 << 0,
	IBV_FLUSH_PERSISTENT = 1 << 1,
	IBV_FLUSH_RANGE = 0,
	IBV_FLUSH_MR = 1,
};
#define IB_UVERBS_DEVICE_FLUSH_GLOBAL (1ULL << 38)
#define IB_UVERBS_DEVICE_FLUSH_PERSISTENT (1ULL << 39)
#define IB_UVERBS_DEVICE_ATOMIC_WRITE (1ULL << 40)

struct qp_ex_45 {
	struct ibv_qp_ex x;
	void (*wr_flush)(struct ibv_qp_ex *qp, uint32_t rkey, uint64_t remote_addr,
			 size_t len, uint8_t type, uint8_t level);
};

static inline void ibv_wr_flush(struct ibv_qp_ex *qp, uint32_t rkey, uint64_t remote_addr,
				size_t len, uint8_t type, uint8_t level)
{
	((struct qp_ex_45 *)qp)->wr_flush(qp, rkey, remote_addr, len, type, level);
}

static int has_wr_flush(struct ibv_qp_ex *qp)
{
	return ((struct qp_ex_45 *)qp)->wr_flush != NULL;
}
#else
static int has_wr_flush(struct ibv_qp_ex *qp)
{
	return qp->wr_flush != NULL;
}
#endif

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Exactly n completions (5 s at most). */
static void poll_n(struct ibv_cq *cq, struct ibv_wc *wc, int n)
{
	int got = 0;
	double end = now() + 5;
	while (got < n) {
		int r = ibv_poll_cq(cq, n - got, wc + got);
		CHECK(r >= 0, "poll_cq %d", r);
		got += r;
		CHECK(got == n || now() < end, "%d of %d completions", got, n);
	}
}

/* As rxe: a FLUSH needs its placement type's right on the QP too. */
static void connect_rc(struct ibv_qp *qp, uint32_t dest, union ibv_gid *gid)
{
	rc_connect_access(qp, dest, gid,
			  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
				  IBV_ACCESS_FLUSH_GLOBAL | IBV_ACCESS_FLUSH_PERSISTENT);
}

static struct ibv_qp *qp_ex(struct ibv_context *ctx, struct ibv_pd *pd, struct ibv_cq *cq,
			    uint64_t ops)
{
	struct ibv_qp_init_attr_ex a = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 2,
			 .max_recv_sge = 2 },
		.qp_type = IBV_QPT_RC,
		.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
		.pd = pd,
		.send_ops_flags = ops,
	};
	return ibv_create_qp_ex(ctx, &a);
}

/* Two connected RC QPs of `ctx` with the placement builders: *a sends. */
static void pair(struct ibv_context *ctx, struct ibv_pd *pd, struct ibv_cq *cq,
		 union ibv_gid *gid, struct ibv_qp **a, struct ibv_qp **b)
{
	uint64_t ops = IBV_QP_EX_WITH_ATOMIC_WRITE | IBV_QP_EX_WITH_FLUSH |
		       IBV_QP_EX_WITH_RDMA_WRITE;
	*a = qp_ex(ctx, pd, cq, ops);
	*b = qp_ex(ctx, pd, cq, ops);
	CHECK(*a && *b, "create_qp_ex: %s", strerror(errno));
	connect_rc(*a, (*b)->qp_num, gid);
	connect_rc(*b, (*a)->qp_num, gid);
}

int main(void)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	CHECK(list && list[0], "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open_device: %s", strerror(errno));
	union ibv_gid gid;
	CHECK(!ibv_query_gid(ctx, 1, 1, &gid), "query_gid");

	/* --- what the device announces --- */
	struct ibv_device_attr_ex dx;
	CHECK(!ibv_query_device_ex(ctx, NULL, &dx), "query_device_ex");
	CHECK(dx.device_cap_flags_ex & IB_UVERBS_DEVICE_ATOMIC_WRITE, "ATOMIC_WRITE cap");
	CHECK(dx.device_cap_flags_ex & IB_UVERBS_DEVICE_FLUSH_GLOBAL, "FLUSH_GLOBAL cap");
	CHECK(!(dx.device_cap_flags_ex & IB_UVERBS_DEVICE_FLUSH_PERSISTENT),
	      "no persistent memory, no FLUSH_PERSISTENT");
	CHECK((dx.device_cap_flags_ex & 0xffffffffull) == dx.orig_attr.device_cap_flags,
	      "the low bits are device_cap_flags");
	OK("device caps");

	/* --- registration with the FLUSH access flags --- */
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");
	static uint8_t local[4096], remote[4096];
	for (int i = 0; i < 4096; i++) {
		local[i] = (uint8_t)(i * 7);
		remote[i] = 0xee;
	}
	struct ibv_mr *mra = ibv_reg_mr(pd, local, sizeof(local), IBV_ACCESS_LOCAL_WRITE);
	CHECK(mra, "reg local: %s", strerror(errno));
	int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	errno = 0;
	CHECK(!ibv_reg_mr(pd, remote, sizeof(remote), rw | IBV_ACCESS_FLUSH_PERSISTENT) &&
	      errno == EOPNOTSUPP, "persistent: errno %d", errno);
	struct ibv_mr *mrb = ibv_reg_mr(pd, remote, sizeof(remote), rw | IBV_ACCESS_FLUSH_GLOBAL);
	CHECK(mrb, "reg FLUSH_GLOBAL: %s", strerror(errno));
	OK("reg_mr flush access");

	/* --- the builders: set when asked for, NULL otherwise --- */
	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	CHECK(cq, "create_cq");
	struct ibv_qp *plain = qp_ex(ctx, pd, cq, IBV_QP_EX_WITH_SEND);
	CHECK(plain, "plain qp_ex");
	struct ibv_qp_ex *px = ibv_qp_to_qp_ex(plain);
	CHECK(!px->wr_atomic_write && !has_wr_flush(px), "builders not asked for are NULL");
	CHECK(!ibv_destroy_qp(plain), "destroy plain");
	struct ibv_qp *qa, *qb;
	pair(ctx, pd, cq, &gid, &qa, &qb);
	struct ibv_qp_ex *x = ibv_qp_to_qp_ex(qa);
	CHECK(x->wr_atomic_write && has_wr_flush(x), "wr_atomic_write and wr_flush set");
	OK("qp_ex builders");

	/* --- one batch: ATOMIC WRITE, WRITE, FLUSH of the range, of the MR --- */
	uint64_t rbase = (uintptr_t)remote;
	uint8_t word[8] = { 'a', 't', 'o', 'm', 'i', 'c', '!', '!' };
	ibv_wr_start(x);
	x->wr_flags = IBV_SEND_SIGNALED;
	x->wr_id = 1;
	ibv_wr_atomic_write(x, mrb->rkey, rbase + 4088, word);
	memset(word, 0, sizeof(word)); /* copied at the call */
	x->wr_id = 2;
	ibv_wr_rdma_write(x, mrb->rkey, rbase);
	ibv_wr_set_sge(x, mra->lkey, (uintptr_t)local, 1024);
	x->wr_id = 3;
	ibv_wr_flush(x, mrb->rkey, rbase, 1024, IBV_FLUSH_GLOBAL, IBV_FLUSH_RANGE);
	x->wr_id = 4;
	ibv_wr_flush(x, mrb->rkey, 0, 0, IBV_FLUSH_GLOBAL, IBV_FLUSH_MR);
	CHECK(!ibv_wr_complete(x), "wr_complete");
	struct ibv_wc wc[4];
	poll_n(cq, wc, 4);
	int want_op[4] = { IBV_WC_ATOMIC_WRITE, IBV_WC_RDMA_WRITE, IBV_WC_FLUSH, IBV_WC_FLUSH };
	for (int i = 0; i < 4; i++)
		CHECK(wc[i].wr_id == (uint64_t)i + 1 && wc[i].status == IBV_WC_SUCCESS &&
		      (int)wc[i].opcode == want_op[i], "wc %d: id %llu status %s opcode %d", i,
		      (unsigned long long)wc[i].wr_id, ibv_wc_status_str(wc[i].status),
		      wc[i].opcode);
	CHECK(!memcmp(remote + 4088, "atomic!!", 8), "the 8 bytes landed");
	CHECK(!memcmp(remote, local, 1024), "the WRITE landed");
	for (int i = 1024; i < 4088; i++)
		CHECK(remote[i] == 0xee, "byte %d untouched", i);
	OK("wr_atomic_write wr_flush");

	/* --- a batch error sticks: a FLUSH longer than a RETH can say --- */
	ibv_wr_start(x);
	x->wr_id = 5;
	ibv_wr_flush(x, mrb->rkey, rbase, 1ull << 32, IBV_FLUSH_GLOBAL, IBV_FLUSH_RANGE);
	CHECK(ibv_wr_complete(x) == EINVAL, "4 GiB FLUSH refused");
	CHECK(ibv_poll_cq(cq, 1, wc) == 0, "nothing posted");
	OK("wr_flush length");

	/* --- persistence asked of an MR registered for visibility only --- */
	ibv_wr_start(x);
	x->wr_flags = IBV_SEND_SIGNALED;
	x->wr_id = 6;
	ibv_wr_flush(x, mrb->rkey, rbase, 64, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE);
	CHECK(!ibv_wr_complete(x), "wr_complete");
	poll_n(cq, wc, 1);
	CHECK(wc[0].wr_id == 6 && wc[0].status == IBV_WC_REM_ACCESS_ERR, "status %s",
	      ibv_wc_status_str(wc[0].status));
	OK("flush type not allowed");

	/* --- a misaligned ATOMIC WRITE, on a fresh pair --- */
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy");
	while (ibv_poll_cq(cq, 4, wc) > 0)
		; /* the responder's flushes, if any */
	pair(ctx, pd, cq, &gid, &qa, &qb);
	x = ibv_qp_to_qp_ex(qa);
	memcpy(word, "misalign", 8);
	ibv_wr_start(x);
	x->wr_flags = IBV_SEND_SIGNALED;
	x->wr_id = 7;
	ibv_wr_atomic_write(x, mrb->rkey, rbase + 2052, word);
	CHECK(!ibv_wr_complete(x), "wr_complete");
	poll_n(cq, wc, 1);
	CHECK(wc[0].wr_id == 7 && wc[0].status == IBV_WC_REM_INV_REQ_ERR, "status %s",
	      ibv_wc_status_str(wc[0].status));
	for (int i = 1024; i < 4088; i++)
		CHECK(remote[i] == 0xee, "byte %d untouched", i);
	OK("misaligned atomic write");

	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy");
	CHECK(!ibv_destroy_cq(cq), "destroy cq");
	CHECK(!ibv_dereg_mr(mra) && !ibv_dereg_mr(mrb), "dereg");
	CHECK(!ibv_dealloc_pd(pd), "dealloc pd");
	CHECK(!ibv_close_device(ctx), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
