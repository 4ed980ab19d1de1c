/* RC QPs on the soft device for the C tests: create, connect (GID index
 * 1), post a WRITE or SEND, wait for a completion. Fails the program with
 * CHECK on any error. */
#ifndef SOFTRDMA_TEST_RC_H
#define SOFTRDMA_TEST_RC_H

#include <string.h>
#include <time.h>
#include <infiniband/verbs.h>

#include "check.h"

#define ALL_ACCESS                                                             \
	(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |                    \
	 IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)

static inline struct ibv_qp *rc_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr a = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 32, .max_recv_wr = 32,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	CHECK(qp, "create_qp");
	return qp;
}

/* Bring `qp` to RTS towards QP `dest` of the device whose GID 1 is `gid`,
 * granting peers `access` (PSNs 0, MTU 1024, 4 reads/atomics each way). */
static inline void rc_connect_access(struct ibv_qp *qp, uint32_t dest,
				     const union ibv_gid *gid, unsigned int access)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.port_num = 1,
		.qp_access_flags = access,
	};
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
					     IBV_QP_ACCESS_FLAGS), "INIT");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = dest;
	a.max_dest_rd_atomic = 4;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = *gid;
	a.ah_attr.grh.sgid_index = 1;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = 1;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
					     IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
					     IBV_QP_MAX_DEST_RD_ATOMIC |
					     IBV_QP_MIN_RNR_TIMER), "RTR");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 4;
	CHECK(!ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
					     IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
					     IBV_QP_MAX_QP_RD_ATOMIC), "RTS");
}

/* rc_connect_access with every remote right. */
static inline void rc_connect(struct ibv_qp *qp, uint32_t dest, const union ibv_gid *gid)
{
	rc_connect_access(qp, dest, gid, ALL_ACCESS);
}

/* Connect `a` and `b` to each other (both on this process's device). */
static inline void rc_pair(struct ibv_qp *a, struct ibv_qp *b)
{
	union ibv_gid gid;
	CHECK(!ibv_query_gid(a->context, 1, 1, &gid), "query_gid");
	rc_connect(a, b->qp_num, &gid);
	rc_connect(b, a->qp_num, &gid);
}

/* Poll `cq` for one completion (10 s deadline). */
static inline struct ibv_wc rc_wait(struct ibv_cq *cq)
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

/* Signaled RDMA WRITE of `len` bytes at `src` (lkey) to `raddr` (rkey). */
static inline void rc_write(struct ibv_qp *qp, void *src, uint32_t len, uint32_t lkey,
			    uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)src, .length = len, .lkey = lkey };
	struct ibv_send_wr wr = {
		.wr_id = 1, .sg_list = &sge, .num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE, .send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = raddr, .rkey = rkey },
	}, *bad;
	CHECK(!ibv_post_send(qp, &wr, &bad), "post_send WRITE");
}

/* Signaled SEND of `len` bytes at `src` (lkey). */
static inline void rc_send(struct ibv_qp *qp, uint64_t wr_id, void *src, uint32_t len,
			   uint32_t lkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)src, .length = len, .lkey = lkey };
	struct ibv_send_wr wr = {
		.wr_id = wr_id, .sg_list = &sge, .num_sge = 1,
		.opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED,
	}, *bad;
	CHECK(!ibv_post_send(qp, &wr, &bad), "post_send SEND");
}

static inline void rc_recv(struct ibv_qp *qp, uint64_t wr_id, void *dst, uint32_t len,
			   uint32_t lkey)
{
	struct ibv_sge sge = { .addr = (uintptr_t)dst, .length = len, .lkey = lkey };
	struct ibv_recv_wr wr = { .wr_id = wr_id, .sg_list = &sge, .num_sge = 1 }, *bad;
	CHECK(!ibv_post_recv(qp, &wr, &bad), "post_recv");
}

#endif
