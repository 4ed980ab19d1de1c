/*
 * Several contexts of the device in one process (pyverbs opens one per
 * resource set): QPs of different contexts talk to each other, and an
 * object of one context used with another's is refused as the kernel
 * refuses a handle it cannot find in the caller's file — EINVAL — or, for
 * an MR of another context's PD named in a work request, fails as a
 * protection error. Prints "OK <step>" per step and "ALL OK".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *a = ibv_open_device(list[0]);
	struct ibv_context *b = ibv_open_device(list[0]);
	CHECK(a && b && a != b, "two contexts: %s", strerror(errno));
	CHECK(a->cmd_fd >= 0 && b->cmd_fd >= 0 && a->cmd_fd != b->cmd_fd, "cmd_fds");
	union ibv_gid ga, gb;
	CHECK(!ibv_query_gid(a, 1, 1, &ga) && !ibv_query_gid(b, 1, 1, &gb) &&
		      !memcmp(&ga, &gb, sizeof ga),
	      "one device, one GID");
	OK("two contexts");

	struct ibv_pd *pa = ibv_alloc_pd(a), *pb = ibv_alloc_pd(b);
	struct ibv_cq *ca = ibv_create_cq(a, 64, NULL, NULL, 0);
	struct ibv_cq *cb = ibv_create_cq(b, 64, NULL, NULL, 0);
	CHECK(pa && pb && ca && cb, "PDs and CQs");
	struct ibv_qp *qa = rc_qp(pa, ca), *qb = rc_qp(pb, cb);
	rc_pair(qa, qb);
	static char src[4096], dst[4096], got[64];
	for (int i = 0; i < 4096; i++)
		src[i] = (char)(i * 7 + 3);
	struct ibv_mr *ma = ibv_reg_mr(pa, src, sizeof src, ALL_ACCESS);
	struct ibv_mr *mb = ibv_reg_mr(pb, dst, sizeof dst, ALL_ACCESS);
	struct ibv_mr *mg = ibv_reg_mr(pa, got, sizeof got, ALL_ACCESS);
	CHECK(ma && mb && mg, "reg_mr");
	rc_write(qa, src, 4096, ma->lkey, (uintptr_t)dst, mb->rkey);
	struct ibv_wc wc = rc_wait(ca);
	CHECK(wc.status == IBV_WC_SUCCESS, "WRITE a -> b: %s", ibv_wc_status_str(wc.status));
	CHECK(!memcmp(src, dst, sizeof src), "the WRITE's data");
	rc_recv(qa, 5, got, sizeof got, mg->lkey);
	rc_send(qb, 6, dst, 32, mb->lkey);
	wc = rc_wait(cb);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 6, "SEND b -> a");
	wc = rc_wait(ca);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 5 && wc.byte_len == 32 &&
		      !memcmp(got, src, 32),
	      "the receive on a");
	OK("QPs of two contexts talk");

	/* Objects of context a named with context b's. */
	struct ibv_qp_init_attr qi = {
		.send_cq = ca, .recv_cq = cb,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	errno = 0;
	CHECK(!ibv_create_qp(pb, &qi) && errno == EINVAL, "QP of b with a's send CQ: %d", errno);
	qi.send_cq = cb;
	qi.recv_cq = ca;
	errno = 0;
	CHECK(!ibv_create_qp(pb, &qi) && errno == EINVAL, "QP of b with a's recv CQ: %d", errno);
	struct ibv_comp_channel *cha = ibv_create_comp_channel(a);
	CHECK(cha, "comp channel");
	errno = 0;
	CHECK(!ibv_create_cq(b, 4, NULL, cha, 0) && errno == EINVAL, "CQ of b on a's channel");
	struct ibv_pd *pb2 = ibv_alloc_pd(b);
	CHECK(ibv_rereg_mr(ma, IBV_REREG_MR_CHANGE_PD, pb2, NULL, 0, 0) == IBV_REREG_MR_ERR_CMD &&
		      errno == EINVAL && ma->pd == pa,
	      "rereg of a's MR to b's PD");
	struct ibv_parent_domain_init_attr pda = { .pd = pa };
	errno = 0;
	CHECK(!ibv_alloc_parent_domain(b, &pda) && errno == EINVAL, "parent domain of b over a's PD");
	OK("another context's objects are EINVAL");

	/* A UD QP of b sending with an AH of a. */
	struct ibv_qp_init_attr ui = {
		.send_cq = cb, .recv_cq = cb,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_UD,
	};
	struct ibv_qp *ud = ibv_create_qp(pb, &ui);
	CHECK(ud, "UD QP");
	struct ibv_qp_attr at = { .qp_state = IBV_QPS_INIT, .port_num = 1, .qkey = 0x11 };
	CHECK(!ibv_modify_qp(ud, &at, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY), "INIT");
	at.qp_state = IBV_QPS_RTR;
	CHECK(!ibv_modify_qp(ud, &at, IBV_QP_STATE), "RTR");
	at.qp_state = IBV_QPS_RTS;
	CHECK(!ibv_modify_qp(ud, &at, IBV_QP_STATE | IBV_QP_SQ_PSN), "RTS");
	struct ibv_ah_attr aa = { .is_global = 1, .port_num = 1,
				  .grh = { .dgid = ga, .sgid_index = 1, .hop_limit = 1 } };
	struct ibv_ah *ah_a = ibv_create_ah(pa, &aa);
	CHECK(ah_a, "create_ah");
	struct ibv_sge sge = { .addr = (uintptr_t)dst, .length = 8, .lkey = mb->lkey };
	struct ibv_send_wr sw = { .wr_id = 9, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED,
				  .wr.ud = { .ah = ah_a, .remote_qpn = ud->qp_num, .remote_qkey = 0x11 } },
			   *bad = NULL;
	CHECK(ibv_post_send(ud, &sw, &bad) == EINVAL && bad == &sw, "UD send with a's AH");
	OK("another context's AH is EINVAL");

	/* An MR of a's PD in a WR of b's QP: the PDs differ (as the keys of
	 * another PD on one device): a local protection error. */
	rc_write(qb, src, 64, ma->lkey, (uintptr_t)dst, mb->rkey);
	wc = rc_wait(cb);
	CHECK(wc.status == IBV_WC_LOC_PROT_ERR, "b's WRITE from a's MR: %s",
	      ibv_wc_status_str(wc.status));
	OK("another context's MR is a protection error");

	CHECK(!ibv_destroy_ah(ah_a) && !ibv_destroy_qp(ud), "UD teardown");
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy QPs");
	CHECK(!ibv_dereg_mr(ma) && !ibv_dereg_mr(mb) && !ibv_dereg_mr(mg), "dereg");
	CHECK(!ibv_destroy_cq(ca) && !ibv_destroy_cq(cb), "destroy CQs");
	CHECK(!ibv_destroy_comp_channel(cha), "destroy channel");
	CHECK(!ibv_dealloc_pd(pa) && !ibv_dealloc_pd(pb) && !ibv_dealloc_pd(pb2), "dealloc PDs");
	CHECK(!ibv_close_device(a) && !ibv_close_device(b), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
