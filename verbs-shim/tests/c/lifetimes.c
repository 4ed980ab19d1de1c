/*
 * Object lifetimes and hostile arguments through the shim (issue 19,
 * finding 11), as rdma-core answers them: ibv_dealloc_pd of a PD with an
 * MR, QP or SRQ, ibv_destroy_cq of a CQ a QP uses and ibv_destroy_srq of an
 * SRQ a QP uses return EBUSY and leave the object working; a num_sge above
 * the queue's max_sge is EINVAL before the list is read (the list here is
 * one entry long: reading 2^30 would crash); a QP with another context's
 * SRQ or CQ is NULL with EINVAL. Prints "OK <step>" per step and "ALL OK";
 * exits 1 on a failure.
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
	struct ibv_context *ctx2 = ibv_open_device(list[0]);
	CHECK(ctx2, "open a second context: %s", strerror(errno));
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");
	static char buf[4096];
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE);
	CHECK(mr, "reg_mr: %s", strerror(errno));
	CHECK(ibv_dealloc_pd(pd) == EBUSY, "dealloc_pd with an MR");
	struct ibv_cq *cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	CHECK(cq, "create_cq");
	struct ibv_srq_init_attr sa = { .attr = { .max_wr = 8, .max_sge = 1 } };
	struct ibv_srq *srq = ibv_create_srq(pd, &sa);
	CHECK(srq, "create_srq: %s", strerror(errno));
	struct ibv_qp_init_attr qa = {
		.send_cq = cq,
		.recv_cq = cq,
		.srq = srq,
		.cap = { .max_send_wr = 8, .max_recv_wr = 8,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &qa);
	CHECK(qp, "create_qp: %s", strerror(errno));
	CHECK(ibv_dereg_mr(mr) == 0, "dereg_mr");
	CHECK(ibv_dealloc_pd(pd) == EBUSY, "dealloc_pd with a QP and an SRQ");
	CHECK(ibv_destroy_cq(cq) == EBUSY, "destroy_cq with a QP");
	CHECK(ibv_destroy_srq(srq) == EBUSY, "destroy_srq with a QP");
	/* Still alive and working. */
	struct ibv_srq_attr sq;
	CHECK(ibv_query_srq(srq, &sq) == 0 && sq.max_wr >= 8, "query_srq");
	struct ibv_wc wc;
	CHECK(ibv_poll_cq(cq, 1, &wc) == 0, "poll_cq");
	OK("busy objects");

	mr = ibv_reg_mr(pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE);
	CHECK(mr, "reg_mr again");
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = 8, .lkey = mr->lkey };
	struct ibv_recv_wr rwr = { .wr_id = 1, .sg_list = &sge, .num_sge = 1 << 30 };
	struct ibv_recv_wr *rbad = NULL;
	CHECK(ibv_post_srq_recv(srq, &rwr, &rbad) == EINVAL && rbad == &rwr,
	      "post_srq_recv with num_sge 2^30");
	struct ibv_send_wr swr = { .wr_id = 2, .sg_list = &sge, .num_sge = 1 << 30,
				   .opcode = IBV_WR_SEND };
	struct ibv_send_wr *sbad = NULL;
	CHECK(ibv_post_send(qp, &swr, &sbad) == EINVAL && sbad == &swr,
	      "post_send with num_sge 2^30");
	swr.num_sge = 2; /* above the QP's max_send_sge of 1 */
	CHECK(ibv_post_send(qp, &swr, &sbad) == EINVAL, "post_send with num_sge 2");
	rwr.num_sge = 1;
	CHECK(ibv_post_srq_recv(srq, &rwr, &rbad) == 0, "post_srq_recv");
	OK("num_sge checked first");

	struct ibv_pd *pd2 = ibv_alloc_pd(ctx2);
	CHECK(pd2, "alloc_pd on the second context");
	struct ibv_cq *cq2 = ibv_create_cq(ctx2, 16, NULL, NULL, 0);
	CHECK(cq2, "create_cq on the second context");
	struct ibv_qp_init_attr qb = qa;
	qb.send_cq = qb.recv_cq = cq2;
	errno = 0;
	CHECK(ibv_create_qp(pd2, &qb) == NULL && errno == EINVAL,
	      "a QP with another context's SRQ: errno %d", errno);
	qb.srq = NULL;
	qb.send_cq = cq;
	errno = 0;
	CHECK(ibv_create_qp(pd2, &qb) == NULL && errno == EINVAL,
	      "a QP with another context's CQ: errno %d", errno);
	OK("another context's objects");

	CHECK(ibv_destroy_qp(qp) == 0, "destroy_qp");
	CHECK(ibv_destroy_srq(srq) == 0, "destroy_srq");
	CHECK(ibv_destroy_cq(cq) == 0, "destroy_cq");
	CHECK(ibv_dealloc_pd(pd) == EBUSY, "dealloc_pd with an MR again");
	CHECK(ibv_dereg_mr(mr) == 0, "dereg_mr");
	CHECK(ibv_dealloc_pd(pd) == 0, "dealloc_pd");
	CHECK(ibv_destroy_cq(cq2) == 0 && ibv_dealloc_pd(pd2) == 0, "second context");
	CHECK(ibv_close_device(ctx2) == 0 && ibv_close_device(ctx) == 0, "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
