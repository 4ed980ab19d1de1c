/* A process that exits with a connection open disconnects it, as the
 * kernel does when its rdma_cm file closes: the peer hears DISCONNECTED
 * (and its QP is in error) — not silence. The child connects and calls
 * exit(0) at once; the parent accepted and waits. Twice: the second time
 * the parent destroys its QP with ibv_destroy_qp first, as rping does,
 * leaving id->qp dangling when the DISCONNECTED comes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm.h"

static struct ibv_qp_init_attr qp_attr(void)
{
	struct ibv_qp_init_attr a = { .qp_type = IBV_QPT_RC,
				      .cap = { .max_send_wr = 2,
					       .max_recv_wr = 2,
					       .max_send_sge = 1,
					       .max_recv_sge = 1 } };
	return a;
}

static void child(int port, int ready)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct rdma_conn_param p = { .retry_count = 7 };
	struct ibv_qp_init_attr a = qp_attr();
	struct sockaddr_in dst = { .sin_family = AF_INET,
				   .sin_port = htons(port) };
	char c;

	CHECK(read(ready, &c, 1) == 1); /* the parent listens */
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
	CHECK((ch = rdma_create_event_channel()) != NULL);
	CHECK(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&dst, 2000) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED));
	CHECK(rdma_resolve_route(id, 2000) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
	CHECK(rdma_create_qp(id, NULL, &a) == 0);
	CHECK(rdma_connect(id, &p) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ESTABLISHED));
	exit(0); /* no rdma_disconnect, no rdma_destroy_id */
}

/* A child waiting for its go; forked before this process uses a device. */
static pid_t spawn(int port, int *go)
{
	int pipefd[2];
	pid_t pid;

	CHECK(pipe(pipefd) == 0);
	CHECK((pid = fork()) >= 0);
	if (pid == 0) {
		close(pipefd[1]);
		child(port, pipefd[0]);
	}
	close(pipefd[0]);
	*go = pipefd[1];
	return pid;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 20911;
	int st, dangle, go[2];
	pid_t pid[2];
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listener, *s;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p = { .rnr_retry_count = 7 };
	struct ibv_qp_init_attr a = qp_attr();
	struct sockaddr_in any = { .sin_family = AF_INET,
				   .sin_port = htons(port) };
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;

	alarm(60);
	pid[0] = spawn(port, &go[0]);
	pid[1] = spawn(port, &go[1]);
	CHECK((ch = rdma_create_event_channel()) != NULL);
	CHECK(rdma_create_id(ch, &listener, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_bind_addr(listener, (struct sockaddr *)&any) == 0);
	CHECK(rdma_listen(listener, 1) == 0);
	for (dangle = 0; dangle < 2; dangle++) {
		CHECK(write(go[dangle], "x", 1) == 1); /* we listen */
		ev = expect(ch, RDMA_CM_EVENT_CONNECT_REQUEST);
		s = ev->id;
		rdma_ack_cm_event(ev);
		a = qp_attr(); /* rdma_create_qp filled in last round's CQs */
		CHECK(rdma_create_qp(s, NULL, &a) == 0);
		CHECK(rdma_accept(s, &p) == 0);
		rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ESTABLISHED));
		if (dangle)
			CHECK(ibv_destroy_qp(s->qp) == 0); /* s->qp now dangles */
		CHECK(waitpid(pid[dangle], &st, 0) == pid[dangle] && WIFEXITED(st) &&
		      WEXITSTATUS(st) == 0);
		rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_DISCONNECTED));
		if (!dangle) {
			CHECK(ibv_query_qp(s->qp, &qa, IBV_QP_STATE, &qi) == 0);
			CHECK(qa.qp_state == IBV_QPS_ERR);
			rdma_destroy_qp(s);
		}
		CHECK(rdma_destroy_id(s) == 0);
	}
	CHECK(rdma_destroy_id(listener) == 0);
	rdma_destroy_event_channel(ch);
	printf("exit_disconnects: ok\n");
	return 0;
}
