/* The rdma_cm API's semantics through our librdmacm.so.1, both ends in one
 * process (two event channels): events and their statuses, the private
 * data a CONNECT_REQUEST carries once the rdma_cm IP header is stripped (56
 * of a REQ's 92 bytes), the addresses and ports of the ids, an O_NONBLOCK
 * channel (EAGAIN, then readable by poll), QPs moved for the user, REJECTED
 * for a port nobody listens on (status 8, invalid service ID) and for a
 * consumer's reject (status 28, with its private data), DISCONNECTED on
 * both ends with the QPs in error, rsockets failing with ENOSYS. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <rdma/rsocket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm.h"

static struct rdma_event_channel *cch, *sch;

static struct sockaddr_in sin_of(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port) };
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static struct ibv_qp_init_attr qp_attr(void)
{
	struct ibv_qp_init_attr a = { .qp_type = IBV_QPT_RC,
				      .cap = { .max_send_wr = 4,
					       .max_recv_wr = 4,
					       .max_send_sge = 1,
					       .max_recv_sge = 1 } };
	return a;
}

/* A client id with a QP, address and route resolved to 127.0.0.1:port. */
static struct rdma_cm_id *client(int port)
{
	struct rdma_cm_id *id;
	struct rdma_cm_event *ev;
	struct sockaddr_in dst = sin_of("127.0.0.1", port);
	struct ibv_qp_init_attr a = qp_attr();

	CHECK(rdma_create_id(cch, &id, NULL, RDMA_PS_TCP) == 0);
	CHECK(id->verbs == NULL);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&dst, 2000) == 0);
	ev = expect(cch, RDMA_CM_EVENT_ADDR_RESOLVED);
	CHECK(ev->id == id && ev->status == 0);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(id->verbs != NULL && id->port_num == 1);
	CHECK(rdma_get_dst_port(id) == htons(port));
	CHECK(rdma_get_src_port(id) != 0);
	CHECK(rdma_resolve_route(id, 2000) == 0);
	ev = expect(cch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_create_qp(id, NULL, &a) == 0);
	CHECK(id->qp && id->pd && id->send_cq && id->recv_cq);
	return id;
}

static enum ibv_qp_state qp_state(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr i;
	CHECK(ibv_query_qp(qp, &a, IBV_QP_STATE, &i) == 0);
	return a.qp_state;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 20886;
	struct rdma_cm_id *listener, *c, *s;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p;
	struct sockaddr_in any = sin_of("0.0.0.0", port);
	struct sockaddr_in *sa;
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr a;
	int mask;

	alarm(60); /* a hang fails */
	CHECK(strcmp(rdma_event_str(RDMA_CM_EVENT_REJECTED),
		     "RDMA_CM_EVENT_REJECTED") == 0);
	errno = 0;
	CHECK(rsocket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENOSYS);
	CHECK((cch = rdma_create_event_channel()) != NULL);
	CHECK((sch = rdma_create_event_channel()) != NULL);

	/* Nobody listens on the port: REJECTED, invalid service ID (8). */
	c = client(port);
	memset(&p, 0, sizeof p);
	/* More than the device's 128 is EINVAL (255 would mean "the most"). */
	p.responder_resources = 200;
	errno = 0;
	CHECK(rdma_connect(c, &p) == -1 && errno == EINVAL);
	p.responder_resources = p.initiator_depth = 1;
	p.retry_count = 7;
	CHECK(rdma_connect(c, &p) == 0);
	ev = expect(cch, RDMA_CM_EVENT_REJECTED);
	CHECK(ev->status == 8);
	CHECK(rdma_ack_cm_event(ev) == 0);
	rdma_destroy_qp(c);
	CHECK(rdma_destroy_id(c) == 0);

	/* A listener on the wildcard address; its channel non-blocking. */
	CHECK(rdma_create_id(sch, &listener, (void *)0x1234, RDMA_PS_TCP) == 0);
	CHECK(rdma_bind_addr(listener, (struct sockaddr *)&any) == 0);
	CHECK(rdma_get_src_port(listener) == htons(port));
	CHECK(rdma_listen(listener, 8) == 0);
	CHECK(fcntl(sch->fd, F_SETFL, fcntl(sch->fd, F_GETFL) | O_NONBLOCK) == 0);
	errno = 0;
	CHECK(rdma_get_cm_event(sch, &ev) == -1 && errno == EAGAIN);

	/* Connect with private data; the request carries it after the
	 * stripped header: 56 bytes. */
	c = client(port);
	memset(&p, 0, sizeof p);
	p.private_data = "hello";
	p.private_data_len = 5;
	p.responder_resources = 1;
	p.initiator_depth = 2;
	p.retry_count = 7;
	p.rnr_retry_count = 7;
	CHECK(rdma_connect(c, &p) == 0);
	ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
	CHECK(ev->listen_id == listener && ev->id != listener);
	CHECK(ev->param.conn.private_data_len == 56);
	CHECK(memcmp(ev->param.conn.private_data, "hello", 5) == 0);
	/* Ours seen from there: its initiator depth is our responder
	 * resources, and the other way round. */
	CHECK(ev->param.conn.responder_resources == 2);
	CHECK(ev->param.conn.initiator_depth == 1);
	CHECK(ev->param.conn.qp_num == c->qp->qp_num);
	s = ev->id;
	CHECK(s->context == (void *)0x1234 && s->verbs && s->port_num == 1);
	sa = (struct sockaddr_in *)&s->route.addr.dst_addr;
	CHECK(sa->sin_family == AF_INET && sa->sin_port == rdma_get_src_port(c));
	CHECK(rdma_get_src_port(s) == htons(port));
	CHECK(rdma_ack_cm_event(ev) == 0);

	a = qp_attr();
	CHECK(rdma_create_qp(s, NULL, &a) == 0);
	CHECK(qp_state(s->qp) == IBV_QPS_INIT);
	qa.qp_state = IBV_QPS_RTR;
	CHECK(rdma_init_qp_attr(s, &qa, &mask) == 0);
	CHECK(qa.dest_qp_num == c->qp->qp_num && (mask & IBV_QP_AV));
	memset(&p, 0, sizeof p);
	p.private_data = "world";
	p.private_data_len = 5;
	p.responder_resources = 2;
	p.initiator_depth = 1;
	p.rnr_retry_count = 7;
	CHECK(rdma_accept(s, &p) == 0);
	CHECK(qp_state(s->qp) == IBV_QPS_RTS);
	/* The client's QP was moved and the RTU sent for it. */
	ev = expect(cch, RDMA_CM_EVENT_ESTABLISHED);
	CHECK(ev->id == c && ev->param.conn.private_data_len >= 5);
	CHECK(memcmp(ev->param.conn.private_data, "world", 5) == 0);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(qp_state(c->qp) == IBV_QPS_RTS);
	ev = expect(sch, RDMA_CM_EVENT_ESTABLISHED);
	CHECK(ev->id == s);
	CHECK(rdma_ack_cm_event(ev) == 0);

	/* Disconnect: both ends hear it, both QPs are in error. */
	CHECK(rdma_disconnect(c) == 0);
	ev = expect(sch, RDMA_CM_EVENT_DISCONNECTED);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(qp_state(s->qp) == IBV_QPS_ERR);
	ev = expect(cch, RDMA_CM_EVENT_DISCONNECTED);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(qp_state(c->qp) == IBV_QPS_ERR);
	rdma_destroy_qp(s);
	CHECK(rdma_destroy_id(s) == 0);
	rdma_destroy_qp(c);
	CHECK(rdma_destroy_id(c) == 0);

	/* A consumer's reject: REJECTED, consumer defined (28), with its
	 * private data. */
	c = client(port);
	memset(&p, 0, sizeof p);
	p.retry_count = 7;
	CHECK(rdma_connect(c, &p) == 0);
	ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
	s = ev->id;
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_reject(s, "no", 2) == 0);
	ev = expect(cch, RDMA_CM_EVENT_REJECTED);
	CHECK(ev->status == 28);
	CHECK(ev->param.conn.private_data_len >= 2 &&
	      memcmp(ev->param.conn.private_data, "no", 2) == 0);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_destroy_id(s) == 0);
	rdma_destroy_qp(c);
	CHECK(rdma_destroy_id(c) == 0);

	/* rdma_migrate_id: the id's events come on the new channel; its
	 * context is the one device rdma_get_devices lists. */
	{
		struct rdma_event_channel *other = rdma_create_event_channel();
		struct sockaddr_in dst = sin_of("127.0.0.1", port);
		struct ibv_context **devs;
		int n;
		CHECK(other != NULL);
		CHECK(rdma_create_id(cch, &c, NULL, RDMA_PS_TCP) == 0);
		CHECK(rdma_migrate_id(c, other) == 0 && c->channel == other);
		CHECK(rdma_resolve_addr(c, NULL, (struct sockaddr *)&dst, 2000) == 0);
		ev = expect(other, RDMA_CM_EVENT_ADDR_RESOLVED);
		CHECK(ev->id == c);
		CHECK(rdma_ack_cm_event(ev) == 0);
		CHECK((devs = rdma_get_devices(&n)) != NULL && n == 1);
		CHECK(devs[0] == c->verbs && devs[1] == NULL);
		rdma_free_devices(devs);
		CHECK(rdma_destroy_id(c) == 0);
		rdma_destroy_event_channel(other);
	}

	/* A second wildcard bind of the port: EADDRNOTAVAIL, as the kernel's
	 * cma_check_port (the same specific address: EADDRINUSE, options.c). */
	CHECK(rdma_create_id(sch, &c, NULL, RDMA_PS_TCP) == 0);
	errno = 0;
	CHECK(rdma_bind_addr(c, (struct sockaddr *)&any) == -1 &&
	      errno == EADDRNOTAVAIL);
	CHECK(rdma_destroy_id(c) == 0);

	CHECK(rdma_destroy_id(listener) == 0);
	rdma_destroy_event_channel(cch);
	rdma_destroy_event_channel(sch);
	printf("cm_api: ok\n");
	return 0;
}
