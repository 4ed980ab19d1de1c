/*
 * XRC through the shim's verbs_context ops: ibv_open_xrcd (a private
 * domain; a file's domain shared by every open of that file in the
 * process, from any context, counted; O_EXCL; no O_CREAT on a new file),
 * ibv_create_srq_ex (XRC and basic),
 * ibv_get_srq_num, ibv_create_qp_ex with IBV_QPT_XRC_RECV / _SEND,
 * ibv_open_qp, receives refused on both halves, ibv_close_xrcd EBUSY while
 * used; then traffic on the one device: a SEND through ibv_post_send's
 * remote_srqn and a WRITE with immediate through wr_set_xrc_srqn, landing
 * in the SRQ each names and completing on its CQ. Prints "OK <step>" per
 * step and "ALL OK"; exits 1 on a failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <infiniband/verbs.h>

#include "check.h"

static struct ibv_xrcd *open_xrcd(struct ibv_context *ctx, int fd, int oflags)
{
	struct ibv_xrcd_init_attr a = {
		.comp_mask = IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS,
		.fd = fd,
		.oflags = oflags,
	};
	return ibv_open_xrcd(ctx, &a);
}

static struct ibv_srq *xrc_srq(struct ibv_context *ctx, struct ibv_pd *pd,
			       struct ibv_xrcd *x, struct ibv_cq *cq)
{
	struct ibv_srq_init_attr_ex a = {
		.attr = { .max_wr = 16, .max_sge = 1 },
		.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD |
			     IBV_SRQ_INIT_ATTR_XRCD | IBV_SRQ_INIT_ATTR_CQ,
		.srq_type = IBV_SRQT_XRC,
		.pd = pd,
		.xrcd = x,
		.cq = cq,
	};
	return ibv_create_srq_ex(ctx, &a);
}

static struct ibv_qp *target(struct ibv_context *ctx, struct ibv_xrcd *x)
{
	struct ibv_qp_init_attr_ex a = {
		.qp_type = IBV_QPT_XRC_RECV,
		.comp_mask = IBV_QP_INIT_ATTR_XRCD,
		.xrcd = x,
	};
	return ibv_create_qp_ex(ctx, &a);
}

static void to_rts(struct ibv_qp *qp, uint32_t dest, union ibv_gid gid, int access)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.port_num = 1,
		.qp_access_flags = access,
	};
	CHECK(ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
			    IBV_QP_ACCESS_FLAGS) == 0, "INIT");
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = dest;
	a.rq_psn = 7;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 1;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = gid;
	a.ah_attr.grh.sgid_index = 1;
	a.ah_attr.port_num = 1;
	CHECK(ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			    IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) == 0,
	      "RTR");
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 7;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	CHECK(ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
			    IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			    IBV_QP_MAX_QP_RD_ATOMIC) == 0, "RTS");
}

static struct ibv_wc wait_one(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	for (long i = 0; i < 100000000; i++) {
		int n = ibv_poll_cq(cq, 1, &wc);
		CHECK(n >= 0, "poll_cq");
		if (n == 1)
			return wc;
	}
	CHECK(0, "no completion");
	return wc;
}

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open: %s", strerror(errno));
	struct ibv_device_attr da;
	CHECK(ibv_query_device(ctx, &da) == 0 && (da.device_cap_flags & IBV_DEVICE_XRC),
	      "IBV_DEVICE_XRC");

	/* Domains. */
	CHECK(!open_xrcd(ctx, -1, 0) && errno == EINVAL, "fd -1 needs O_CREAT");
	struct ibv_xrcd *priv = open_xrcd(ctx, -1, O_CREAT);
	CHECK(priv, "private domain: %s", strerror(errno));
	char path[] = "/tmp/softrdma-xrcd-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp");
	CHECK(!open_xrcd(ctx, fd, 0) && errno == EINVAL, "no domain on the file yet");
	struct ibv_xrcd *x = open_xrcd(ctx, fd, O_CREAT);
	CHECK(x, "file domain: %s", strerror(errno));
	int fd2 = open(path, O_RDONLY);
	CHECK(fd2 >= 0, "open the file again");
	struct ibv_xrcd *x2 = open_xrcd(ctx, fd2, 0);
	CHECK(x2 && x2 != x, "a second open of the file: %s", strerror(errno));
	struct ibv_context *ctx2 = ibv_open_device(list[0]);
	CHECK(ctx2, "a second context");
	struct ibv_xrcd *x3 = open_xrcd(ctx2, fd2, 0);
	CHECK(x3 && x3->context == ctx2, "the file's domain from another context");
	CHECK(!open_xrcd(ctx, fd2, O_CREAT | O_EXCL) && errno == EEXIST, "O_EXCL");
	CHECK(open_xrcd(ctx, -1, O_CREAT) != priv, "private domains are distinct");
	OK("open_xrcd");

	/* SRQs, QPs. */
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	struct ibv_cq *cq1 = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	struct ibv_cq *cq2 = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	CHECK(pd && cq && cq1 && cq2, "pd, cqs");
	struct ibv_srq *s1 = xrc_srq(ctx, pd, x, cq1);
	struct ibv_srq *s2 = xrc_srq(ctx, pd, x, cq2);
	CHECK(s1 && s2, "create_srq_ex XRC: %s", strerror(errno));
	uint32_t n1 = 0, n2 = 0;
	CHECK(ibv_get_srq_num(s1, &n1) == 0 && ibv_get_srq_num(s2, &n2) == 0 && n1 != n2,
	      "get_srq_num");
	struct ibv_srq_init_attr_ex ba = {
		.attr = { .max_wr = 4, .max_sge = 1 },
		.comp_mask = IBV_SRQ_INIT_ATTR_PD,
		.pd = pd,
	};
	struct ibv_srq *basic = ibv_create_srq_ex(ctx, &ba);
	CHECK(basic, "create_srq_ex basic: %s", strerror(errno));
	struct ibv_srq_init_attr_ex bad = {
		.attr = { .max_wr = 4, .max_sge = 1 },
		.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD,
		.srq_type = IBV_SRQT_XRC,
		.pd = pd,
	};
	CHECK(!ibv_create_srq_ex(ctx, &bad) && errno == EINVAL, "XRC SRQ without domain/CQ");
	OK("create_srq_ex get_srq_num");

	struct ibv_qp_init_attr_ex none = { .qp_type = IBV_QPT_XRC_RECV,
					    .comp_mask = IBV_QP_INIT_ATTR_XRCD };
	CHECK(!ibv_create_qp_ex(ctx, &none) && errno == EINVAL, "target without domain");
	struct ibv_qp *tgt = target(ctx, x);
	CHECK(tgt && tgt->qp_type == IBV_QPT_XRC_RECV, "target: %s", strerror(errno));
	struct ibv_qp_init_attr_ex ia = {
		.qp_type = IBV_QPT_XRC_SEND,
		.send_cq = cq,
		.cap = { .max_send_wr = 16, .max_send_sge = 1 },
		.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
		.pd = pd,
		.send_ops_flags = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM,
	};
	struct ibv_qp *ini = ibv_create_qp_ex(ctx, &ia);
	CHECK(ini, "initiator: %s", strerror(errno));
	struct ibv_qp_ex *iex = ibv_qp_to_qp_ex(ini);
	CHECK(iex && iex->wr_set_xrc_srqn, "wr_set_xrc_srqn");
	struct ibv_qp_open_attr oa = {
		.comp_mask = IBV_QP_OPEN_ATTR_NUM | IBV_QP_OPEN_ATTR_XRCD |
			     IBV_QP_OPEN_ATTR_TYPE,
		.qp_num = tgt->qp_num,
		.xrcd = x,
		.qp_type = IBV_QPT_XRC_RECV,
	};
	struct ibv_qp *opened = ibv_open_qp(ctx, &oa);
	CHECK(opened && opened != tgt && opened->qp_num == tgt->qp_num, "open_qp");
	/* The same domain through the other opens, in either context. */
	oa.xrcd = x2;
	struct ibv_qp *o2 = ibv_open_qp(ctx, &oa);
	CHECK(o2 && o2->qp_num == tgt->qp_num, "open_qp through a second open");
	oa.xrcd = x3;
	CHECK(!ibv_open_qp(ctx, &oa) && errno == EINVAL, "another context's domain");
	struct ibv_qp *o3 = ibv_open_qp(ctx2, &oa);
	CHECK(o3 && o3->qp_num == tgt->qp_num && o3->context == ctx2,
	      "open_qp from another context");
	CHECK(ibv_destroy_qp(o2) == 0 && ibv_destroy_qp(o3) == 0, "destroy them");
	oa.xrcd = priv;
	CHECK(!ibv_open_qp(ctx, &oa), "another domain's target");
	oa.xrcd = x;
	oa.qp_num = ini->qp_num;
	CHECK(!ibv_open_qp(ctx, &oa), "not a target");
	CHECK(ibv_destroy_qp(opened) == 0, "destroy the opened handle");
	OK("create_qp_ex open_qp");

	static char buf[8192];
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof buf,
				       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	CHECK(mr, "reg_mr");
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .length = 64, .lkey = mr->lkey };
	struct ibv_recv_wr rw = { .wr_id = 1, .sg_list = &sge, .num_sge = 1 }, *brw;
	CHECK(ibv_post_recv(ini, &rw, &brw) == EINVAL, "post_recv on an initiator");
	CHECK(ibv_post_recv(tgt, &rw, &brw) == EINVAL, "post_recv on a target");
	OK("receives refused");

	/* Busy domain: the second open's close is fine, the last is EBUSY. */
	CHECK(ibv_close_xrcd(x2) == 0 && ibv_close_xrcd(x3) == 0, "close two of three opens");
	CHECK(ibv_close_xrcd(x) == EBUSY, "close while SRQs and a target use it");
	OK("close_xrcd busy");

	/* Traffic on the one device. */
	union ibv_gid gid;
	CHECK(ibv_query_gid(ctx, 1, 1, &gid) == 0, "gid");
	int acc = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	to_rts(ini, tgt->qp_num, gid, 0);
	to_rts(tgt, ini->qp_num, gid, acc);
	for (int i = 0; i < 64; i++)
		buf[4096 + i] = (char)(i + 1);
	struct ibv_sge r1 = { .addr = (uintptr_t)buf, .length = 64, .lkey = mr->lkey };
	struct ibv_sge r2 = { .addr = (uintptr_t)buf + 1024, .length = 64, .lkey = mr->lkey };
	struct ibv_recv_wr w1 = { .wr_id = 11, .sg_list = &r1, .num_sge = 1 };
	struct ibv_recv_wr w2 = { .wr_id = 22, .sg_list = &r2, .num_sge = 1 };
	CHECK(ibv_post_srq_recv(s1, &w1, &brw) == 0 && ibv_post_srq_recv(s2, &w2, &brw) == 0,
	      "post_srq_recv");
	struct ibv_sge src = { .addr = (uintptr_t)buf + 4096, .length = 64, .lkey = mr->lkey };
	struct ibv_send_wr sw = { .wr_id = 5, .sg_list = &src, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED }, *bsw;
	sw.qp_type.xrc.remote_srqn = n2;
	CHECK(ibv_post_send(ini, &sw, &bsw) == 0, "post_send: %s", strerror(errno));
	struct ibv_wc wc = wait_one(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 5, "send completion %d", wc.status);
	wc = wait_one(cq2);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 22 && wc.byte_len == 64 &&
	      wc.qp_num == tgt->qp_num, "SRQ 2's completion");
	CHECK(memcmp(buf + 1024, buf + 4096, 64) == 0, "SRQ 2's data");
	CHECK(buf[0] == 0, "nothing in SRQ 1's buffer");

	ibv_wr_start(iex);
	iex->wr_id = 6;
	iex->wr_flags = IBV_SEND_SIGNALED;
	ibv_wr_rdma_write_imm(iex, mr->rkey, (uintptr_t)buf + 2048, htonl(0x1234));
	ibv_wr_set_xrc_srqn(iex, n1);
	ibv_wr_set_sge(iex, mr->lkey, (uintptr_t)buf + 4096, 64);
	CHECK(ibv_wr_complete(iex) == 0, "wr_complete");
	wc = wait_one(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 6, "write completion %d", wc.status);
	wc = wait_one(cq1);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 11 &&
	      wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM && ntohl(wc.imm_data) == 0x1234,
	      "SRQ 1's completion");
	CHECK(memcmp(buf + 2048, buf + 4096, 64) == 0, "written");
	/* A batch whose WR names no SRQ is refused. */
	ibv_wr_start(iex);
	ibv_wr_send(iex);
	ibv_wr_set_sge(iex, mr->lkey, (uintptr_t)buf + 4096, 64);
	CHECK(ibv_wr_complete(iex) == EINVAL, "a WR without an SRQ number");
	OK("traffic");

	CHECK(ibv_destroy_qp(ini) == 0 && ibv_destroy_qp(tgt) == 0, "destroy QPs");
	CHECK(ibv_close_xrcd(x) == EBUSY, "SRQs still use it");
	CHECK(ibv_destroy_srq(s1) == 0 && ibv_destroy_srq(s2) == 0 &&
	      ibv_destroy_srq(basic) == 0, "destroy SRQs");
	CHECK(ibv_close_xrcd(x) == 0 && ibv_close_xrcd(priv) == 0, "close_xrcd");
	OK("teardown");
	CHECK(ibv_close_device(ctx2) == 0, "close the second context");
	close(fd);
	close(fd2);
	unlink(path);
	printf("ALL OK\n");
	return 0;
}
