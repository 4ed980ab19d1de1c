/* rdma_cm across fork: an id and a channel the parent made fail in the
 * child with ENODEV (their CM is the parent's: no agent thread in the
 * child, the parent's socket), while the child's own channel and ids work
 * (a listener and a connecting id of its own reach each other), and the
 * parent's id still works once the child is gone. Prints "fork_ids: ok". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm.h"

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

/* The next event of `ch`, which must be `t`, acknowledged. */
static void expect_ack(struct rdma_event_channel *ch, enum rdma_cm_event_type t)
{
	CHECK(!rdma_ack_cm_event(expect(ch, t)));
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 20917;
	struct rdma_event_channel *pch = rdma_create_event_channel();
	CHECK(pch);
	struct rdma_cm_id *pid;
	CHECK(!rdma_create_id(pch, &pid, NULL, RDMA_PS_TCP));
	struct sockaddr_in a = loopback(port);
	CHECK(!rdma_bind_addr(pid, (struct sockaddr *)&a));

	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0) {
		struct sockaddr_in d = loopback(port + 1);
		errno = 0;
		CHECK(rdma_resolve_addr(pid, NULL, (struct sockaddr *)&d, 1000) == -1 &&
		      errno == ENODEV);
		errno = 0;
		CHECK(rdma_listen(pid, 1) == -1 && errno == ENODEV);
		struct rdma_cm_event *e;
		errno = 0;
		CHECK(rdma_get_cm_event(pch, &e) == -1 && errno == ENODEV);
		errno = 0;
		CHECK(rdma_destroy_id(pid) == -1 && errno == ENODEV);

		/* Its own: a listener and an id that resolves its address. */
		struct rdma_event_channel *ch = rdma_create_event_channel();
		CHECK(ch);
		struct rdma_cm_id *l, *c;
		CHECK(!rdma_create_id(ch, &l, NULL, RDMA_PS_TCP));
		CHECK(!rdma_create_id(ch, &c, NULL, RDMA_PS_TCP));
		CHECK(!rdma_bind_addr(l, (struct sockaddr *)&d));
		CHECK(!rdma_listen(l, 1));
		CHECK(!rdma_resolve_addr(c, NULL, (struct sockaddr *)&d, 1000));
		expect_ack(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
		CHECK(c->verbs && c->pd);
		CHECK(!rdma_resolve_route(c, 1000));
		expect_ack(ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
		CHECK(!rdma_destroy_id(c) && !rdma_destroy_id(l));
		rdma_destroy_event_channel(ch);
		exit(0);
	}
	int st;
	CHECK(waitpid(kid, &st, 0) == kid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* The parent's id is untouched: it still listens and resolves. */
	CHECK(!rdma_listen(pid, 1));
	struct rdma_cm_id *c;
	CHECK(!rdma_create_id(pch, &c, NULL, RDMA_PS_TCP));
	CHECK(!rdma_resolve_addr(c, NULL, (struct sockaddr *)&a, 1000));
	expect_ack(pch, RDMA_CM_EVENT_ADDR_RESOLVED);
	CHECK(!rdma_destroy_id(c) && !rdma_destroy_id(pid));
	rdma_destroy_event_channel(pch);
	printf("fork_ids: ok\n");
	return 0;
}
