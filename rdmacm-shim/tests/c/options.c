/* rdma_set_option and the listen backlog, enforced as the kernel's
 * rdma_cm does (cma.c's cma_check_port, rdma_set_reuseaddr/afonly,
 * ucma.c's backlog): REUSEADDR, AFONLY, TOS, ACK_TIMEOUT, each with its
 * errnos. Both ends in this process; ports PORT … PORT+5.
 *
 *   options PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm.h"

static struct rdma_event_channel *cch, *sch;

static struct sockaddr_storage sa(const char *ip, int port)
{
	struct sockaddr_storage s;
	memset(&s, 0, sizeof s);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		inet_pton(AF_INET6, ip, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&s;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		inet_pton(AF_INET, ip, &a->sin_addr);
	}
	return s;
}

static struct rdma_cm_id *id_on(struct rdma_event_channel *ch)
{
	struct rdma_cm_id *id;
	CHECK(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0);
	return id;
}

/* rdma_bind_addr's result: 0 or the errno. */
static int bind_to(struct rdma_cm_id *id, const char *ip, int port)
{
	struct sockaddr_storage s = sa(ip, port);
	return rdma_bind_addr(id, (struct sockaddr *)&s) ? errno : 0;
}

static int set_int(struct rdma_cm_id *id, int opt, int v)
{
	return rdma_set_option(id, RDMA_OPTION_ID, opt, &v, sizeof v) ? errno
								       : 0;
}

/* A client id resolved to 127.0.0.1:port with a QP; `setup` runs on it
 * before the route is resolved. */
static struct rdma_cm_id *client(int port, void (*setup)(struct rdma_cm_id *))
{
	struct rdma_cm_id *id = id_on(cch);
	struct sockaddr_storage dst = sa("127.0.0.1", port);
	struct ibv_qp_init_attr a = { .qp_type = IBV_QPT_RC,
				      .cap = { .max_send_wr = 1,
					       .max_recv_wr = 1,
					       .max_send_sge = 1,
					       .max_recv_sge = 1 } };

	if (setup)
		setup(id);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&dst, 2000) == 0);
	rdma_ack_cm_event(expect(cch, RDMA_CM_EVENT_ADDR_RESOLVED));
	CHECK(rdma_resolve_route(id, 2000) == 0);
	rdma_ack_cm_event(expect(cch, RDMA_CM_EVENT_ROUTE_RESOLVED));
	CHECK(rdma_create_qp(id, NULL, &a) == 0);
	return id;
}

static void connect_it(struct rdma_cm_id *id)
{
	struct rdma_conn_param p = { .retry_count = 7, .rnr_retry_count = 7 };
	CHECK(rdma_connect(id, &p) == 0);
}

/* The next client event, which must be `want` for `id` (status too). */
static void client_sees(struct rdma_cm_id *id, enum rdma_cm_event_type want,
			int status)
{
	struct rdma_cm_event *ev = expect(cch, want);
	if (ev->id != id || ev->status != status) {
		fprintf(stderr, "%s: status %d (want %d), id %s\n",
			rdma_event_str(want), ev->status, status,
			ev->id == id ? "right" : "wrong");
		exit(1);
	}
	rdma_ack_cm_event(ev);
}

static void reuseaddr(int port)
{
	struct rdma_cm_id *a = id_on(sch), *b = id_on(sch), *c = id_on(sch);
	unsigned char one = 1;

	/* Without it: a wildcard on either side is EADDRNOTAVAIL, the same
	 * address EADDRINUSE, another address of the host shares the port. */
	CHECK(bind_to(a, "0.0.0.0", port) == 0);
	CHECK(bind_to(b, "0.0.0.0", port) == EADDRNOTAVAIL);
	CHECK(bind_to(b, "127.0.0.1", port) == EADDRNOTAVAIL);
	rdma_destroy_id(a);
	a = id_on(sch);
	CHECK(bind_to(a, "127.0.0.1", port) == 0);
	CHECK(bind_to(b, "127.0.0.1", port) == EADDRINUSE);
	CHECK(bind_to(b, "127.0.0.2", port) == 0);
	rdma_destroy_id(a);
	rdma_destroy_id(b);

	/* The option is an int: another length is EINVAL. */
	a = id_on(sch);
	b = id_on(sch);
	CHECK(rdma_set_option(a, RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &one,
			      1) == -1 &&
	      errno == EINVAL);
	/* On both ids: both bind. On one only: not. */
	CHECK(set_int(a, RDMA_OPTION_ID_REUSEADDR, 1) == 0);
	CHECK(bind_to(a, "0.0.0.0", port + 1) == 0);
	CHECK(bind_to(c, "0.0.0.0", port + 1) == EADDRNOTAVAIL);
	CHECK(set_int(b, RDMA_OPTION_ID_REUSEADDR, 1) == 0);
	CHECK(bind_to(b, "0.0.0.0", port + 1) == 0);
	/* A bound id may not turn it off. */
	CHECK(set_int(b, RDMA_OPTION_ID_REUSEADDR, 0) == EINVAL);
	/* Listening needs the port alone, whatever REUSEADDR says. */
	CHECK(rdma_listen(a, 1) == -1 && errno == EADDRNOTAVAIL);
	rdma_destroy_id(b);
	CHECK(rdma_listen(a, 1) == 0);
	/* A listener no longer shares, nor may turn it on again. */
	CHECK(set_int(a, RDMA_OPTION_ID_REUSEADDR, 1) == EINVAL);
	CHECK(set_int(c, RDMA_OPTION_ID_REUSEADDR, 1) == 0);
	CHECK(bind_to(c, "0.0.0.0", port + 1) == EADDRNOTAVAIL);
	rdma_destroy_id(a);
	rdma_destroy_id(c);
}

/* Whether a client of 127.0.0.1:port gets a CONNECT_REQUEST (1) or is
 * rejected as nobody listens (0). */
static int v4_client_reaches(int port)
{
	struct rdma_cm_id *c = client(port, NULL);
	struct rdma_cm_event *ev;
	int reached;

	connect_it(c);
	struct pollfd ps[2] = { { .fd = sch->fd, .events = POLLIN },
				{ .fd = cch->fd, .events = POLLIN } };
	CHECK(poll(ps, 2, 10000) >= 1);
	if (ps[0].revents) {
		ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
		CHECK(rdma_reject(ev->id, NULL, 0) == 0);
		rdma_destroy_id(ev->id);
		rdma_ack_cm_event(ev);
		client_sees(c, RDMA_CM_EVENT_REJECTED, 28);
		reached = 1;
	} else {
		/* IB_CM_REJ_INVALID_SERVICE_ID */
		client_sees(c, RDMA_CM_EVENT_REJECTED, 8);
		reached = 0;
	}
	rdma_destroy_qp(c);
	rdma_destroy_id(c);
	return reached;
}

static void afonly(int port)
{
	struct rdma_cm_id *l6 = id_on(sch), *l4;

	/* An IPv6 wildcard listener takes IPv4 clients too… */
	CHECK(bind_to(l6, "::", port) == 0);
	CHECK(rdma_listen(l6, 4) == 0);
	CHECK(set_int(l6, RDMA_OPTION_ID_AFONLY, 1) == EINVAL);
	CHECK(v4_client_reaches(port));
	/* …and holds the port against an IPv4 wildcard (IPv4 ids are
	 * AF-only, the IPv6 one is not). */
	l4 = id_on(sch);
	CHECK(bind_to(l4, "0.0.0.0", port) == EADDRNOTAVAIL);
	rdma_destroy_id(l4);
	rdma_destroy_id(l6);

	/* …but not with AFONLY: then IPv4 is another family's port. */
	l6 = id_on(sch);
	CHECK(set_int(l6, RDMA_OPTION_ID_AFONLY, 1) == 0);
	CHECK(bind_to(l6, "::", port + 1) == 0);
	CHECK(set_int(l6, RDMA_OPTION_ID_AFONLY, 1) == 0); /* bound: still ok */
	CHECK(rdma_listen(l6, 4) == 0);
	CHECK(!v4_client_reaches(port + 1));
	l4 = id_on(sch);
	CHECK(bind_to(l4, "0.0.0.0", port + 1) == 0);
	CHECK(rdma_listen(l4, 4) == 0);
	CHECK(v4_client_reaches(port + 1));
	rdma_destroy_id(l4);
	rdma_destroy_id(l6);
}

static void tos_20(struct rdma_cm_id *id)
{
	unsigned char tos = 0x20;
	int four = 0x20;
	CHECK(rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_TOS, &four,
			      sizeof four) == -1 &&
	      errno == EINVAL);
	CHECK(rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_TOS, &tos,
			      1) == 0);
}

static void ack_timeout_18(struct rdma_cm_id *id)
{
	unsigned char t = 18;
	CHECK(rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT,
			      &t, 1) == 0);
}

static void tos_and_ack_timeout(int port)
{
	struct rdma_cm_id *l = id_on(sch), *c, *s, *u;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p = { .rnr_retry_count = 7 };
	struct ibv_qp_init_attr a = { .qp_type = IBV_QPT_RC,
				      .cap = { .max_send_wr = 1,
					       .max_recv_wr = 1,
					       .max_send_sge = 1,
					       .max_recv_sge = 1 } };
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	unsigned char t = 18;

	CHECK(bind_to(l, "0.0.0.0", port) == 0);
	CHECK(rdma_listen(l, 4) == 0);
	/* TOS: the route's traffic class. */
	c = client(port, tos_20);
	CHECK(c->route.path_rec && c->route.path_rec->traffic_class == 0x20);
	rdma_destroy_qp(c);
	rdma_destroy_id(c);

	/* ACK_TIMEOUT: the QP's timeout when librdmacm moves it to RTS. */
	c = client(port, ack_timeout_18);
	connect_it(c);
	ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
	s = ev->id;
	rdma_ack_cm_event(ev);
	CHECK(rdma_create_qp(s, NULL, &a) == 0);
	CHECK(rdma_accept(s, &p) == 0);
	client_sees(c, RDMA_CM_EVENT_ESTABLISHED, 0);
	rdma_ack_cm_event(expect(sch, RDMA_CM_EVENT_ESTABLISHED));
	CHECK(ibv_query_qp(c->qp, &qa, IBV_QP_TIMEOUT | IBV_QP_STATE, &qi) ==
	      0);
	CHECK(qa.qp_state == IBV_QPS_RTS && qa.timeout == 18);
	CHECK(rdma_disconnect(c) == 0);
	client_sees(c, RDMA_CM_EVENT_DISCONNECTED, 0);
	rdma_ack_cm_event(expect(sch, RDMA_CM_EVENT_DISCONNECTED));
	rdma_destroy_qp(c);
	rdma_destroy_id(c);
	rdma_destroy_qp(s);
	rdma_destroy_id(s);
	rdma_destroy_id(l);
	/* Not for a UD id. */
	CHECK(rdma_create_id(cch, &u, NULL, RDMA_PS_UDP) == 0);
	CHECK(rdma_set_option(u, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT,
			      &t, 1) == -1 &&
	      errno == EINVAL);
	rdma_destroy_id(u);
}

static void backlog(int port)
{
	struct rdma_cm_id *l = id_on(sch), *c1, *c2, *c3;
	struct rdma_cm_event *ev;

	CHECK(bind_to(l, "0.0.0.0", port) == 0);
	CHECK(rdma_listen(l, 1) == 0);
	/* One request waits on the listener's channel: the next is refused
	 * (REJ consumer defined, 28) until the first is taken. */
	c1 = client(port, NULL);
	c2 = client(port, NULL);
	c3 = client(port, NULL);
	connect_it(c1);
	usleep(300000);
	connect_it(c2);
	client_sees(c2, RDMA_CM_EVENT_REJECTED, 28);
	ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
	connect_it(c3);
	CHECK(rdma_reject(ev->id, NULL, 0) == 0);
	rdma_destroy_id(ev->id);
	rdma_ack_cm_event(ev);
	client_sees(c1, RDMA_CM_EVENT_REJECTED, 28);
	ev = expect(sch, RDMA_CM_EVENT_CONNECT_REQUEST);
	CHECK(rdma_reject(ev->id, NULL, 0) == 0);
	rdma_destroy_id(ev->id);
	rdma_ack_cm_event(ev);
	client_sees(c3, RDMA_CM_EVENT_REJECTED, 28);
	rdma_destroy_qp(c1);
	rdma_destroy_qp(c2);
	rdma_destroy_qp(c3);
	rdma_destroy_id(c1);
	rdma_destroy_id(c2);
	rdma_destroy_id(c3);
	rdma_destroy_id(l);
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 20930;

	alarm(60);
	CHECK((cch = rdma_create_event_channel()) != NULL);
	CHECK((sch = rdma_create_event_channel()) != NULL);
	reuseaddr(port);
	printf("reuseaddr: ok\n");
	afonly(port + 2);
	printf("afonly: ok\n");
	tos_and_ack_timeout(port + 4);
	printf("tos, ack_timeout: ok\n");
	backlog(port + 5);
	printf("backlog: ok\n");
	rdma_destroy_event_channel(cch);
	rdma_destroy_event_channel(sch);
	printf("options: ok\n");
	return 0;
}
