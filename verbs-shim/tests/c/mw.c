/*
 * Memory windows through verbs.h's inline functions (ibv_alloc_mw,
 * ibv_bind_mw, ibv_dealloc_mw call the context's ops) and ibv_post_send's
 * IBV_WR_BIND_MW / IBV_WR_LOCAL_INV / IBV_WR_SEND_WITH_INV, between two RC
 * QPs of one device: the target's MR has only local write and MW_BIND, so
 * every remote right comes from a window. Prints "OK <step>" per step and
 * "ALL OK"; exits 1 on a failure.
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

static struct ibv_wc poll1(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int n = ibv_poll_cq(cq, 1, &wc);
		CHECK(n >= 0, "poll_cq");
		if (n == 1)
			return wc;
		clock_gettime(CLOCK_MONOTONIC, &t);
		CHECK(t.tv_sec - t0.tv_sec < 10, "no completion in 10 s");
	}
}

static void connect_rc(struct ibv_qp *qp, uint32_t dest, union ibv_gid *gid)
{
	rc_connect_access(qp, dest, gid, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
}

static char src[4096], dst[4096], rbuf[256];

/* An RDMA WRITE of `len` bytes of src (offset 0) to `addr` under `rkey`. */
static void post_write(struct ibv_qp *qp, struct ibv_mr *mr, uint32_t rkey, void *addr,
		       uint32_t len)
{
	struct ibv_sge sge = { .addr = (uintptr_t)src, .length = len, .lkey = mr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = 7,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = (uintptr_t)addr, .rkey = rkey },
	}, *bad;
	CHECK(!ibv_post_send(qp, &wr, &bad), "post WRITE");
}

/* IBV_WR_BIND_MW of a type 2 window over dst[off, off+len) under `rkey`. */
static void post_bind2(struct ibv_qp *qp, struct ibv_mw *mw, struct ibv_mr *mr, uint32_t rkey,
		       size_t off, size_t len)
{
	struct ibv_send_wr wr = {
		.wr_id = 0xb2,
		.opcode = IBV_WR_BIND_MW,
		.send_flags = IBV_SEND_SIGNALED,
		.bind_mw = {
			.mw = mw,
			.rkey = rkey,
			.bind_info = { .mr = mr, .addr = (uintptr_t)dst + off, .length = len,
				       .mw_access_flags = IBV_ACCESS_REMOTE_WRITE },
		},
	}, *bad;
	CHECK(!ibv_post_send(qp, &wr, &bad), "post BIND_MW");
}

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open: %s", strerror(errno));
	union ibv_gid gid;
	CHECK(!ibv_query_gid(ctx, 1, 1, &gid), "query_gid");

	struct ibv_device_attr da;
	CHECK(!ibv_query_device(ctx, &da), "query_device");
	CHECK(da.device_cap_flags & IBV_DEVICE_MEM_WINDOW, "MEM_WINDOW");
	CHECK(da.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B, "MEM_WINDOW_TYPE_2B");
	CHECK(da.max_mw > 0, "max_mw %d", da.max_mw);
	OK("device caps");

	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");
	errno = 0;
	CHECK(!ibv_alloc_mw(pd, (enum ibv_mw_type)3) && errno == EINVAL,
	      "a type 3 window: %s", strerror(errno));
	OK("alloc_mw wrong type");

	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	CHECK(cq, "create_cq");
	struct ibv_qp_init_attr qi = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qa = ibv_create_qp(pd, &qi), *qb = ibv_create_qp(pd, &qi);
	CHECK(qa && qb, "create_qp");
	connect_rc(qa, qb->qp_num, &gid);
	connect_rc(qb, qa->qp_num, &gid);
	for (int i = 0; i < (int)sizeof src; i++)
		src[i] = (char)(i * 7 + 1);
	struct ibv_mr *smr = ibv_reg_mr(pd, src, sizeof src,
					IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	struct ibv_mr *mr = ibv_reg_mr(pd, dst, sizeof dst,
				       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
	struct ibv_mr *rmr = ibv_reg_mr(pd, rbuf, sizeof rbuf, IBV_ACCESS_LOCAL_WRITE);
	CHECK(smr && mr && rmr, "reg_mr: %s", strerror(errno));

	/* Type 1: ibv_bind_mw posts the bind and hands out the next key. */
	struct ibv_mw *mw1 = ibv_alloc_mw(pd, IBV_MW_TYPE_1);
	CHECK(mw1 && mw1->type == IBV_MW_TYPE_1 && mw1->pd == pd, "alloc_mw type 1");
	uint32_t k0 = mw1->rkey;
	CHECK(k0 >> 8 != mr->rkey >> 8, "a window's key index is its own");
	struct ibv_mw_bind b = {
		.wr_id = 0xb1,
		.send_flags = IBV_SEND_SIGNALED,
		.bind_info = { .mr = mr, .addr = (uintptr_t)dst + 64, .length = 128,
			       .mw_access_flags = IBV_ACCESS_REMOTE_WRITE },
	};
	CHECK(!ibv_bind_mw(qb, mw1, &b), "bind_mw");
	CHECK(mw1->rkey == ibv_inc_rkey(k0), "the new key: %#x after %#x", mw1->rkey, k0);
	struct ibv_wc wc = poll1(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_BIND_MW && wc.wr_id == 0xb1,
	      "bind completion: %s opcode %d", ibv_wc_status_str(wc.status), wc.opcode);
	post_write(qa, smr, mw1->rkey, dst + 64, 100);
	wc = poll1(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RDMA_WRITE, "WRITE: %s",
	      ibv_wc_status_str(wc.status));
	CHECK(!memcmp(dst + 64, src, 100), "the window's bytes");
	OK("ibv_bind_mw type 1");

	/* The inline function's own checks. */
	struct ibv_pd *pd2 = ibv_alloc_pd(ctx);
	struct ibv_mr *mr2 = ibv_reg_mr(pd2, dst, sizeof dst,
					IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND);
	CHECK(pd2 && mr2, "a second PD and MR");
	b.bind_info.mr = mr2;
	CHECK(ibv_bind_mw(qb, mw1, &b) == EPERM, "bind to another PD's MR");
	b.bind_info.mr = NULL;
	CHECK(ibv_bind_mw(qb, mw1, &b) == EINVAL, "a NULL MR with a range");
	struct ibv_mw *mw2 = ibv_alloc_mw(pd, IBV_MW_TYPE_2);
	CHECK(mw2 && mw2->type == IBV_MW_TYPE_2, "alloc_mw type 2");
	b.bind_info.mr = mr;
	CHECK(ibv_bind_mw(qb, mw2, &b) == EINVAL, "ibv_bind_mw of a type 2 window");
	CHECK(ibv_dereg_mr(mr) == EBUSY, "dereg_mr with a window bound");
	CHECK(ibv_dealloc_pd(pd) == EBUSY, "dealloc_pd with windows");
	OK("ibv_bind_mw checks, dereg_mr EBUSY");

	/* Type 2: IBV_WR_BIND_MW, then a peer's SEND with invalidate. */
	uint32_t k2 = ibv_inc_rkey(mw2->rkey);
	post_bind2(qb, mw2, mr, k2, 1024, 512);
	wc = poll1(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_BIND_MW, "type 2 bind: %s",
	      ibv_wc_status_str(wc.status));
	post_write(qa, smr, k2, dst + 1024, 256);
	wc = poll1(cq);
	CHECK(wc.status == IBV_WC_SUCCESS, "WRITE type 2: %s", ibv_wc_status_str(wc.status));
	CHECK(!memcmp(dst + 1024, src, 256), "the type 2 window's bytes");
	struct ibv_sge rs = { .addr = (uintptr_t)rbuf, .length = sizeof rbuf, .lkey = rmr->lkey };
	struct ibv_recv_wr rw = { .wr_id = 0x5e, .sg_list = &rs, .num_sge = 1 }, *rbad;
	CHECK(!ibv_post_recv(qb, &rw, &rbad), "post_recv");
	struct ibv_sge ss = { .addr = (uintptr_t)src, .length = 16, .lkey = smr->lkey };
	struct ibv_send_wr sw = {
		.wr_id = 0x51,
		.sg_list = &ss,
		.num_sge = 1,
		.opcode = IBV_WR_SEND_WITH_INV,
		.send_flags = IBV_SEND_SIGNALED,
		.invalidate_rkey = k2,
	}, *sbad;
	CHECK(!ibv_post_send(qa, &sw, &sbad), "post SEND_WITH_INV");
	int seen = 0;
	for (int i = 0; i < 2; i++) {
		wc = poll1(cq);
		CHECK(wc.status == IBV_WC_SUCCESS, "SEND_WITH_INV: %s", ibv_wc_status_str(wc.status));
		if (wc.opcode == IBV_WC_RECV) {
			CHECK((wc.wc_flags & IBV_WC_WITH_INV) && wc.invalidated_rkey == k2,
			      "the receive names the key: flags %#x key %#x", wc.wc_flags,
			      wc.invalidated_rkey);
			seen++;
		}
	}
	CHECK(seen == 1, "one receive");
	OK("IBV_WR_BIND_MW type 2, SEND_WITH_INV");

	/* Bound again under the next key, invalidated locally, bound again. */
	k2 = ibv_inc_rkey(k2);
	post_bind2(qb, mw2, mr, k2, 1024, 512);
	CHECK(poll1(cq).status == IBV_WC_SUCCESS, "type 2 rebind");
	struct ibv_send_wr iw = {
		.wr_id = 0x1a,
		.opcode = IBV_WR_LOCAL_INV,
		.send_flags = IBV_SEND_SIGNALED,
		.invalidate_rkey = k2,
	}, *ibad;
	CHECK(!ibv_post_send(qb, &iw, &ibad), "post LOCAL_INV");
	wc = poll1(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_LOCAL_INV && wc.wr_id == 0x1a,
	      "LOCAL_INV: %s", ibv_wc_status_str(wc.status));
	k2 = ibv_inc_rkey(k2);
	post_bind2(qb, mw2, mr, k2, 2048, 512);
	CHECK(poll1(cq).status == IBV_WC_SUCCESS, "type 2 bound after LOCAL_INV");
	OK("IBV_WR_LOCAL_INV");

	/* Type 1 unbound by a bind of length 0; deallocation; a bound type 2
	 * window deallocated: its key reaches nothing, nothing is written. */
	b.bind_info.length = 0;
	b.bind_info.addr = 0;
	b.bind_info.mw_access_flags = 0;
	CHECK(!ibv_bind_mw(qb, mw1, &b), "unbind type 1");
	CHECK(poll1(cq).status == IBV_WC_SUCCESS, "unbind completion");
	CHECK(!ibv_dealloc_mw(mw1), "dealloc_mw type 1");
	CHECK(!ibv_dealloc_mw(mw2), "dealloc_mw of a bound type 2 window");
	char before[sizeof dst];
	memcpy(before, dst, sizeof dst);
	post_write(qa, smr, k2, dst + 2048, 64);
	wc = poll1(cq);
	CHECK(wc.status == IBV_WC_REM_ACCESS_ERR, "WRITE through a deallocated window: %s",
	      ibv_wc_status_str(wc.status));
	CHECK(!memcmp(before, dst, sizeof dst), "nothing written");
	CHECK(!ibv_dereg_mr(mr), "dereg_mr without windows");
	OK("dealloc_mw");

	/* The extended QP's builders, as rxe offers them: RC and UC, not UD. */
	struct ibv_qp_init_attr_ex xa = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1,
			 .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
		.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
		.pd = pd,
		.send_ops_flags = IBV_QP_EX_WITH_BIND_MW | IBV_QP_EX_WITH_LOCAL_INV,
	};
	struct ibv_qp *xq = ibv_create_qp_ex(ctx, &xa);
	CHECK(xq, "create_qp_ex with BIND_MW and LOCAL_INV: %s", strerror(errno));
	struct ibv_qp_ex *x = ibv_qp_to_qp_ex(xq);
	CHECK(x && x->wr_bind_mw && x->wr_local_inv && !x->wr_send, "the builders asked for");
	CHECK(!ibv_destroy_qp(xq), "destroy_qp");
	xa.qp_type = IBV_QPT_UD;
	errno = 0;
	CHECK(!ibv_create_qp_ex(ctx, &xa) && errno == EOPNOTSUPP, "UD with BIND_MW: %s",
	      strerror(errno));
	OK("qp_ex builders");

	ibv_destroy_qp(qa);
	ibv_destroy_qp(qb);
	ibv_dereg_mr(smr);
	ibv_dereg_mr(rmr);
	ibv_dereg_mr(mr2);
	ibv_destroy_cq(cq);
	CHECK(!ibv_dealloc_pd(pd2) && !ibv_dealloc_pd(pd), "dealloc_pd");
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
