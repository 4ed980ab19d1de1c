/* Multicast through our librdmacm.so.1, one process: rdma_join_multicast(_ex)
 * errnos (no device yet, a TCP id, the zero address, bad join flags), the
 * MULTICAST_JOIN event's param.ud as the kernel fills it for RoCE (the
 * context, QPN 0xFFFFFF, RDMA_UDP_QKEY, an AH to the IPv4-mapped group),
 * the id's QP attached (it hears its own datagram to the group), leaving
 * (detached; again: EADDRNOTAVAIL), a send-only join attaching nothing,
 * a unicast address failing the attach: MULTICAST_ERROR, and a synchronous
 * id's join returning with its event. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm.h"

static struct rdma_event_channel *ch;

static struct sockaddr_in sin_of(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void resolve(struct rdma_cm_id *id, const char *dst)
{
	struct sockaddr_in d = sin_of(dst);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&d, 2000) == 0);
	struct rdma_cm_event *ev = expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	CHECK(rdma_ack_cm_event(ev) == 0);
}

/* One completion of `cq`, within 5 s. */
static struct ibv_wc one(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	for (int i = 0; i < 5000; i++) {
		int n = ibv_poll_cq(cq, 1, &wc);
		CHECK(n >= 0);
		if (n == 1)
			return wc;
		usleep(1000);
	}
	CHECK(!"a completion");
	return wc;
}

int main(void)
{
	static char buf[40 + 64];
	int marker;
	struct rdma_cm_id *u, *t;
	struct rdma_cm_event *ev;
	struct sockaddr_in g = sin_of("239.9.9.9"), g2 = sin_of("239.9.9.10");
	struct sockaddr_in zero = sin_of("0.0.0.0"), uni = sin_of("10.1.2.3");

	CHECK((ch = rdma_create_event_channel()) != NULL);
	CHECK(rdma_create_id(ch, &u, NULL, RDMA_PS_UDP) == 0);
	/* No device yet (neither bound nor resolved). */
	errno = 0;
	CHECK(rdma_join_multicast(u, (struct sockaddr *)&g, NULL) == -1 && errno == EINVAL);
	/* A connected port space's id cannot join. */
	CHECK(rdma_create_id(ch, &t, NULL, RDMA_PS_TCP) == 0);
	resolve(t, "127.0.0.1");
	errno = 0;
	CHECK(rdma_join_multicast(t, (struct sockaddr *)&g, NULL) == -1 && errno == EINVAL);
	CHECK(rdma_destroy_id(t) == 0);

	/* To a group: no route needed. */
	resolve(u, "239.9.9.9");
	CHECK(u->verbs != NULL);
	errno = 0;
	CHECK(rdma_join_multicast(u, (struct sockaddr *)&zero, NULL) == -1 && errno == EINVAL);
	struct rdma_cm_join_mc_attr_ex x = { .comp_mask = RDMA_CM_JOIN_MC_ATTR_ADDRESS,
					     .addr = (struct sockaddr *)&g };
	errno = 0;
	CHECK(rdma_join_multicast_ex(u, &x, NULL) == -1 && errno == EINVAL);
	x.comp_mask |= RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS;
	x.join_flags = RDMA_MC_JOIN_FLAG_RESERVED;
	errno = 0;
	CHECK(rdma_join_multicast_ex(u, &x, NULL) == -1 && errno == EINVAL);

	struct ibv_qp_init_attr qa = { .qp_type = IBV_QPT_UD,
				       .cap = { .max_send_wr = 4, .max_recv_wr = 4,
						.max_send_sge = 1, .max_recv_sge = 1 } };
	CHECK(rdma_create_qp(u, NULL, &qa) == 0);

	CHECK(rdma_join_multicast(u, (struct sockaddr *)&g, &marker) == 0);
	ev = expect(ch, RDMA_CM_EVENT_MULTICAST_JOIN);
	struct rdma_ud_param p = ev->param.ud;
	CHECK(ev->id == u && ev->status == 0);
	CHECK(p.private_data == &marker && p.qp_num == 0xffffff && p.qkey == RDMA_UDP_QKEY);
	union ibv_gid mgid = { .raw = { [10] = 0xff, [11] = 0xff, 239, 9, 9, 9 } };
	CHECK(p.ah_attr.is_global == 1 && p.ah_attr.port_num == 1);
	CHECK(memcmp(p.ah_attr.grh.dgid.raw, mgid.raw, 16) == 0);
	CHECK(rdma_ack_cm_event(ev) == 0);

	/* Attached: the QP hears its own datagram to the group. */
	struct ibv_mr *mr = ibv_reg_mr(u->pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE);
	CHECK(mr != NULL);
	struct ibv_sge rs = { (uintptr_t)buf, sizeof buf, mr->lkey };
	struct ibv_recv_wr rw = { .wr_id = 7, .sg_list = &rs, .num_sge = 1 }, *brw;
	CHECK(ibv_post_recv(u->qp, &rw, &brw) == 0);
	struct ibv_ah *ah = ibv_create_ah(u->pd, &p.ah_attr);
	CHECK(ah != NULL);
	static char msg[64] = "to the group";
	struct ibv_mr *smr = ibv_reg_mr(u->pd, msg, sizeof msg, 0);
	struct ibv_sge ss = { (uintptr_t)msg, sizeof msg, smr->lkey };
	struct ibv_send_wr sw = { .wr_id = 8, .sg_list = &ss, .num_sge = 1,
				  .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED },
			   *bsw;
	sw.wr.ud.ah = ah;
	sw.wr.ud.remote_qpn = p.qp_num;
	sw.wr.ud.remote_qkey = p.qkey;
	CHECK(ibv_post_send(u->qp, &sw, &bsw) == 0);
	struct ibv_wc wc = one(u->send_cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 8);
	wc = one(u->recv_cq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.wr_id == 7 && wc.src_qp == u->qp->qp_num);
	CHECK(memcmp(buf + 24, mgid.raw, 16) == 0 && strcmp(buf + 40, msg) == 0);

	/* Leaving detaches; twice: no such join. */
	CHECK(rdma_leave_multicast(u, (struct sockaddr *)&g) == 0);
	CHECK(ibv_detach_mcast(u->qp, &mgid, 0) == EINVAL);
	errno = 0;
	CHECK(rdma_leave_multicast(u, (struct sockaddr *)&g) == -1 && errno == EADDRNOTAVAIL);

	/* Send-only: joined, nothing attached. */
	x.addr = (struct sockaddr *)&g2;
	x.join_flags = RDMA_MC_JOIN_FLAG_SENDONLY_FULLMEMBER;
	CHECK(rdma_join_multicast_ex(u, &x, NULL) == 0);
	ev = expect(ch, RDMA_CM_EVENT_MULTICAST_JOIN);
	union ibv_gid mgid2 = mgid;
	mgid2.raw[15] = 10;
	CHECK(memcmp(ev->param.ud.ah_attr.grh.dgid.raw, mgid2.raw, 16) == 0);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(ibv_detach_mcast(u->qp, &mgid2, 0) == EINVAL);
	CHECK(rdma_leave_multicast(u, (struct sockaddr *)&g2) == 0);

	/* Not a group: the join is reported, the QP's attach fails. */
	CHECK(rdma_join_multicast(u, (struct sockaddr *)&uni, &marker) == 0);
	ev = expect(ch, RDMA_CM_EVENT_MULTICAST_ERROR);
	CHECK(ev->status == -1 && ev->param.ud.private_data == &marker);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_leave_multicast(u, (struct sockaddr *)&uni) == 0);

	CHECK(ibv_destroy_ah(ah) == 0);
	CHECK(ibv_dereg_mr(mr) == 0 && ibv_dereg_mr(smr) == 0);
	rdma_destroy_qp(u);
	CHECK(rdma_destroy_id(u) == 0);
	rdma_destroy_event_channel(ch);

	/* A synchronous id (no channel): the join returns with its event. */
	struct rdma_cm_id *y;
	struct sockaddr_in d = sin_of("239.9.9.11");
	CHECK(rdma_create_id(NULL, &y, NULL, RDMA_PS_UDP) == 0);
	CHECK(rdma_resolve_addr(y, NULL, (struct sockaddr *)&d, 2000) == 0);
	CHECK(rdma_join_multicast(y, (struct sockaddr *)&d, &marker) == 0);
	CHECK(y->event && y->event->event == RDMA_CM_EVENT_MULTICAST_JOIN);
	CHECK(y->event->param.ud.private_data == &marker);
	CHECK(rdma_leave_multicast(y, (struct sockaddr *)&d) == 0);
	CHECK(rdma_destroy_id(y) == 0);
	printf("mcast_api: ok\n");
	return 0;
}
