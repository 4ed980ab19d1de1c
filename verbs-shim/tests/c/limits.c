/*
 * The device's limits through the shim, as rdma-core providers report them:
 * ibv_create_cq with cqe > max_cqe and ibv_create_qp with max_send_wr /
 * max_recv_wr > max_qp_wr (or max_send_sge > max_sge) return NULL with
 * errno EINVAL; ibv_modify_qp with max_rd_atomic / max_dest_rd_atomic above
 * max_qp_init_rd_atom / max_qp_rd_atom returns EINVAL; ibv_post_recv past
 * the receive queue's size returns ENOMEM with bad_wr naming the first WR
 * that did not fit. Prints "OK <step>" per step and "ALL OK"; exits 1 on a
 * failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

#include "check.h"

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open: %s", strerror(errno));
	struct ibv_device_attr da;
	CHECK(ibv_query_device(ctx, &da) == 0, "query_device");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");

	errno = 0;
	CHECK(ibv_create_cq(ctx, da.max_cqe + 1, NULL, NULL, 0) == NULL,
	      "cqe %d > max_cqe created", da.max_cqe + 1);
	CHECK(errno == EINVAL, "errno %d (%s), not EINVAL", errno, strerror(errno));
	struct ibv_cq *cq = ibv_create_cq(ctx, da.max_cqe, NULL, NULL, 0);
	CHECK(cq, "cqe = max_cqe: %s", strerror(errno));
	OK("create_cq max_cqe");

	struct ibv_qp_init_attr base = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 8, .max_recv_wr = 8,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp_init_attr a;
	a = base;
	a.cap.max_send_wr = da.max_qp_wr + 1;
	errno = 0;
	CHECK(ibv_create_qp(pd, &a) == NULL, "max_send_wr > max_qp_wr created");
	CHECK(errno == EINVAL, "send_wr: errno %d (%s)", errno, strerror(errno));
	a = base;
	a.cap.max_recv_wr = da.max_qp_wr + 1;
	errno = 0;
	CHECK(ibv_create_qp(pd, &a) == NULL, "max_recv_wr > max_qp_wr created");
	CHECK(errno == EINVAL, "recv_wr: errno %d (%s)", errno, strerror(errno));
	a = base;
	a.cap.max_send_sge = da.max_sge + 1;
	errno = 0;
	CHECK(ibv_create_qp(pd, &a) == NULL, "max_send_sge > max_sge created");
	CHECK(errno == EINVAL, "sge: errno %d (%s)", errno, strerror(errno));
	OK("create_qp caps");

	a = base;
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	CHECK(qp, "create_qp: %s", strerror(errno));
	struct ibv_qp_attr qa = { .max_rd_atomic = da.max_qp_init_rd_atom + 1 };
	int r = ibv_modify_qp(qp, &qa, IBV_QP_MAX_QP_RD_ATOMIC);
	CHECK(r == EINVAL, "max_rd_atomic %d: %d", qa.max_rd_atomic, r);
	memset(&qa, 0, sizeof(qa));
	qa.max_dest_rd_atomic = da.max_qp_rd_atom + 1;
	r = ibv_modify_qp(qp, &qa, IBV_QP_MAX_DEST_RD_ATOMIC);
	CHECK(r == EINVAL, "max_dest_rd_atomic %d: %d", qa.max_dest_rd_atomic, r);
	OK("modify_qp rd_atomic");

	memset(&qa, 0, sizeof(qa));
	qa.qp_state = IBV_QPS_INIT;
	qa.port_num = 1;
	qa.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
	r = ibv_modify_qp(qp, &qa,
			  IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
				  IBV_QP_ACCESS_FLAGS);
	CHECK(r == 0, "to INIT: %d", r);
	struct ibv_qp_init_attr got;
	CHECK(ibv_query_qp(qp, &qa, IBV_QP_CAP, &got) == 0, "query_qp");
	unsigned int k = got.cap.max_recv_wr;
	CHECK(k >= 8 && k < 4096, "max_recv_wr %u", k);
	struct ibv_recv_wr *wrs = calloc(k + 1, sizeof(*wrs));
	for (unsigned int i = 0; i <= k; i++) {
		wrs[i].wr_id = i;
		wrs[i].next = i < k ? &wrs[i + 1] : NULL;
	}
	struct ibv_recv_wr *bad = NULL;
	r = ibv_post_recv(qp, wrs, &bad);
	CHECK(r == ENOMEM, "post_recv past the queue: %d", r);
	CHECK(bad == &wrs[k], "bad_wr is WR %ld, not %u",
	      bad ? (long)(bad - wrs) : -1L, k);
	OK("post_recv past the queue");

	free(wrs);
	CHECK(ibv_destroy_qp(qp) == 0, "destroy_qp");
	CHECK(ibv_destroy_cq(cq) == 0, "destroy_cq");
	CHECK(ibv_dealloc_pd(pd) == 0, "dealloc_pd");
	CHECK(ibv_close_device(ctx) == 0, "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
