/*
 * fork after the device is open (pyverbs' rdma_cm tests fork their two
 * players): each child opens the device again and gets one of its own (a
 * new GID), whose RC QPs carry traffic to the other child's (into an
 * on-demand-paged MR); an object
 * the parent made fails in a child with ENODEV, touching nothing of the
 * parent's; and the parent's own QPs still work once the children are
 * gone. Prints "OK <step>" per step and "ALL OK".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

#define LEN 4096

/* What a child tells the other to reach it. */
struct endpoint {
	union ibv_gid gid;
	uint32_t qpn;
	uint32_t rkey;
	uint64_t addr;
};

static void fill(char *p, int seed)
{
	for (int i = 0; i < LEN; i++)
		p[i] = (char)(i * 13 + seed);
}

/* The parent's objects in a child: refused with ENODEV, nothing sent. */
static void parent_objects_fail(struct ibv_pd *pd, struct ibv_cq *cq, struct ibv_qp *qp,
				struct ibv_mr *mr, char *buf, struct ibv_comp_channel *ch)
{
	/* Their descriptors are the parent's too: not read here. */
	struct ibv_cq *ecq;
	void *ectx;
	errno = 0;
	CHECK(ibv_get_cq_event(ch, &ecq, &ectx) == -1 && errno == ENODEV, "get_cq_event");
	struct ibv_async_event ae;
	errno = 0;
	CHECK(ibv_get_async_event(pd->context, &ae) == -1 && errno == ENODEV, "get_async_event");
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = 8, .lkey = mr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = 9, .sg_list = &sge, .num_sge = 1,
		.opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED,
	}, *bad = NULL;
	int r = ibv_post_send(qp, &wr, &bad);
	CHECK(r == ENODEV && bad == &wr, "post_send: %d %p %p", r, (void *)bad, (void *)&wr);
	struct ibv_recv_wr rwr = { .wr_id = 9, .sg_list = &sge, .num_sge = 1 }, *rbad = NULL;
	CHECK(ibv_post_recv(qp, &rwr, &rbad) == ENODEV && rbad == &rwr, "post_recv");
	struct ibv_wc wc;
	CHECK(ibv_poll_cq(cq, 1, &wc) < 0, "poll_cq");
	CHECK(ibv_req_notify_cq(cq, 0) == ENODEV, "req_notify_cq");
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };
	CHECK(ibv_modify_qp(qp, &a, IBV_QP_STATE) == ENODEV, "modify_qp");
	errno = 0;
	CHECK(!ibv_reg_mr(pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE) && errno == ENODEV, "reg_mr");
	errno = 0;
	CHECK(!ibv_create_cq(pd->context, 4, NULL, NULL, 0) && errno == ENODEV, "create_cq");
	errno = 0;
	CHECK(!ibv_alloc_pd(pd->context) && errno == ENODEV, "alloc_pd");
	errno = 0;
	CHECK(!ibv_alloc_mw(pd, IBV_MW_TYPE_2) && errno == ENODEV, "alloc_mw");
	errno = 0;
	struct ibv_qp_init_attr ia = {
		.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1 },
	};
	CHECK(!ibv_create_qp(pd, &ia) && errno == ENODEV, "create_qp");
	CHECK(ibv_destroy_qp(qp) == ENODEV, "destroy_qp");
	CHECK(ibv_dereg_mr(mr) == ENODEV, "dereg_mr");
	CHECK(ibv_destroy_cq(cq) == ENODEV, "destroy_cq");
	CHECK(ibv_dealloc_pd(pd) == ENODEV, "dealloc_pd");
}

/* A child: its own device, one RC QP to the other child. `writer` WRITEs
 * LEN bytes into the other's buffer then SENDs; the other checks both. */
static int child(int writer, int out, int in, const union ibv_gid *parent_gid,
		 struct ibv_pd *ppd, struct ibv_cq *pcq, struct ibv_qp *pqp, struct ibv_mr *pmr,
		 char *pbuf, struct ibv_comp_channel *pch)
{
	parent_objects_fail(ppd, pcq, pqp, pmr, pbuf, pch);
	if (writer)
		OK("the parent's objects are ENODEV in a child");

	struct ibv_device **list = ibv_get_device_list(NULL);
	CHECK(list && list[0], "device list in the child");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open in the child: %s", strerror(errno));
	ibv_free_device_list(list);
	struct endpoint me, peer;
	memset(&me, 0, sizeof me);
	CHECK(!ibv_query_gid(ctx, 1, 1, &me.gid), "query_gid");
	CHECK(memcmp(&me.gid, parent_gid, sizeof me.gid), "the child's device is a new one");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_cq *cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	CHECK(pd && cq, "PD and CQ in the child");
	struct ibv_qp *qp = rc_qp(pd, cq);
	static char buf[LEN], msg[64];
	/* The receiver's buffer is on-demand paged: the child's address space
	 * needs a mirror of its own (the parent's userfaultfd watches the
	 * parent's). */
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, LEN,
				       ALL_ACCESS | (writer ? 0 : IBV_ACCESS_ON_DEMAND));
	struct ibv_mr *mm = ibv_reg_mr(pd, msg, sizeof msg, ALL_ACCESS);
	CHECK(mr && mm, "reg_mr in the child");
	me.qpn = qp->qp_num;
	me.rkey = mr->rkey;
	me.addr = (uintptr_t)buf;
	CHECK(write(out, &me, sizeof me) == sizeof me, "send the endpoint");
	CHECK(read(in, &peer, sizeof peer) == sizeof peer, "read the endpoint");
	CHECK(memcmp(&me.gid, &peer.gid, sizeof me.gid), "two children, two devices");
	rc_connect(qp, peer.qpn, &peer.gid);
	if (writer) {
		fill(buf, 5);
		memcpy(msg, "from the writer", 16);
		rc_write(qp, buf, LEN, mr->lkey, peer.addr, peer.rkey);
		struct ibv_wc wc = rc_wait(cq);
		CHECK(wc.status == IBV_WC_SUCCESS, "WRITE: %s", ibv_wc_status_str(wc.status));
		rc_send(qp, 2, msg, 16, mm->lkey);
		wc = rc_wait(cq);
		CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 2, "SEND: %s",
		      ibv_wc_status_str(wc.status));
		OK("a child's QP talks to another child's");
	} else {
		rc_recv(qp, 3, msg, sizeof msg, mm->lkey);
		struct ibv_wc wc = rc_wait(cq);
		CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 3 && wc.byte_len == 16,
		      "receive: %s", ibv_wc_status_str(wc.status));
		static char want[LEN];
		fill(want, 5);
		CHECK(!memcmp(buf, want, LEN), "the WRITE's data");
		CHECK(!strcmp(msg, "from the writer"), "the SEND's data");
		OK("the data arrived");
	}
	CHECK(!ibv_destroy_qp(qp) && !ibv_dereg_mr(mr) && !ibv_dereg_mr(mm) &&
		      !ibv_destroy_cq(cq) && !ibv_dealloc_pd(pd) && !ibv_close_device(ctx),
	      "teardown in the child");
	return 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	struct ibv_device **list = ibv_get_device_list(NULL);
	CHECK(list && list[0], "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open: %s", strerror(errno));
	union ibv_gid gid;
	CHECK(!ibv_query_gid(ctx, 1, 1, &gid), "query_gid");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_comp_channel *ch = ibv_create_comp_channel(ctx);
	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, ch, 0);
	CHECK(pd && ch && cq, "PD, channel and CQ");
	struct ibv_qp *qa = rc_qp(pd, cq), *qb = rc_qp(pd, cq);
	rc_pair(qa, qb);
	static char src[LEN], dst[LEN];
	struct ibv_mr *ms = ibv_reg_mr(pd, src, LEN, ALL_ACCESS);
	struct ibv_mr *md = ibv_reg_mr(pd, dst, LEN, ALL_ACCESS);
	CHECK(ms && md, "reg_mr");
	fill(src, 1);
	rc_write(qa, src, LEN, ms->lkey, (uintptr_t)dst, md->rkey);
	CHECK(rc_wait(cq).status == IBV_WC_SUCCESS && !memcmp(src, dst, LEN), "WRITE before fork");
	OK("the parent's QPs talk");

	int p12[2], p21[2];
	CHECK(!pipe(p12) && !pipe(p21), "pipes");
	pid_t kids[2];
	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		CHECK(kids[i] >= 0, "fork");
		if (kids[i] == 0) {
			int out = i == 0 ? p12[1] : p21[1], in = i == 0 ? p21[0] : p12[0];
			exit(child(i == 0, out, in, &gid, pd, cq, qa, ms, src, ch));
		}
	}
	for (int i = 0; i < 2; i++) {
		int st;
		CHECK(waitpid(kids[i], &st, 0) == kids[i], "waitpid");
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %#x", i, st);
	}
	OK("both children exited");

	/* Nothing of the parent's was touched: its QPs, CQ and MRs still work. */
	fill(src, 9);
	rc_write(qa, src, LEN, ms->lkey, (uintptr_t)dst, md->rkey);
	struct ibv_wc wc = rc_wait(cq);
	CHECK(wc.status == IBV_WC_SUCCESS, "WRITE after: %s", ibv_wc_status_str(wc.status));
	CHECK(!memcmp(src, dst, LEN), "the WRITE's data after the children");
	rc_recv(qb, 7, dst, 64, md->lkey);
	rc_send(qa, 8, src + 64, 64, ms->lkey);
	int seen = 0;
	for (int k = 0; k < 2; k++) {
		wc = rc_wait(cq);
		CHECK(wc.status == IBV_WC_SUCCESS, "SEND after: %s", ibv_wc_status_str(wc.status));
		seen |= wc.wr_id == 7 ? 1 : wc.wr_id == 8 ? 2 : 4;
	}
	CHECK(seen == 3 && !memcmp(dst, src + 64, 64), "SEND and receive after the children");
	OK("the parent's traffic after the children");
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb) && !ibv_dereg_mr(ms) &&
		      !ibv_dereg_mr(md) && !ibv_destroy_cq(cq) && !ibv_destroy_comp_channel(ch) &&
		      !ibv_dealloc_pd(pd) && !ibv_close_device(ctx),
	      "teardown");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
