/* A peer killed with SIGKILL once connected sends no DREQ (its device
 * dies with it; a kernel would have sent one for it): the survivor must
 * still hear RDMA_CM_EVENT_DISCONNECTED in bounded time (the CM's liveness
 * probe), find its QP in IBV_QPS_ERR and its posted receives completed
 * with IBV_WC_WR_FLUSH_ERR. The child is the server and is killed; the
 * parent, the client, survives: idle ("idle": receives posted, nothing
 * sent) or sending ("send": SENDs kept in flight until the end).
 *
 *   killed_peer PORT idle|send
 *
 * Between two hosts the test harness plays the parent's part: it starts
 * "killed_peer PORT MODE server" on one (which writes 'l' listening, 'e'
 * established to stdout), "killed_peer PORT MODE client ADDR" on the
 * other, kills the server once established and then writes a byte to the
 * client's stdin. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cm.h"

enum { RECVS = 4, SENDS = 4, LEN = 64 };

static struct ibv_qp_init_attr qp_attr(void)
{
	struct ibv_qp_init_attr a = { .qp_type = IBV_QPT_RC,
				      .cap = { .max_send_wr = SENDS,
					       .max_recv_wr = RECVS,
					       .max_send_sge = 1,
					       .max_recv_sge = 1 } };
	return a;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* The server: accepts, says so, then waits to be killed (its receives
 * posted so that the client's SENDs succeed until then). */
static void __attribute__((noreturn)) server(int port, int to_parent)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listener, *s;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p = { .rnr_retry_count = 7 };
	struct ibv_qp_init_attr a = qp_attr();
	struct sockaddr_in any = { .sin_family = AF_INET,
				   .sin_port = htons(port) };
	static char buf[RECVS][LEN];
	struct ibv_mr *mr;

	CHECK((ch = rdma_create_event_channel()) != NULL);
	CHECK(rdma_create_id(ch, &listener, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_bind_addr(listener, (struct sockaddr *)&any) == 0);
	CHECK(rdma_listen(listener, 1) == 0);
	CHECK(write(to_parent, "l", 1) == 1);
	ev = expect(ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	s = ev->id;
	rdma_ack_cm_event(ev);
	CHECK(rdma_create_qp(s, NULL, &a) == 0);
	CHECK((mr = ibv_reg_mr(s->pd, buf, sizeof buf,
			       IBV_ACCESS_LOCAL_WRITE)) != NULL);
	for (int i = 0; i < RECVS; i++) {
		struct ibv_sge sge = { (uintptr_t)buf[i], LEN, mr->lkey };
		struct ibv_recv_wr wr = { .wr_id = i, .sg_list = &sge,
					  .num_sge = 1 },
				   *bad;
		CHECK(ibv_post_recv(s->qp, &wr, &bad) == 0);
	}
	CHECK(rdma_accept(s, &p) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ESTABLISHED));
	CHECK(write(to_parent, "e", 1) == 1);
	for (;;)
		pause();
}

static void post_send(struct rdma_cm_id *id, struct ibv_mr *mr, char *b)
{
	struct ibv_sge sge = { (uintptr_t)b, LEN, mr->lkey };
	struct ibv_send_wr wr = { .wr_id = 1000, .sg_list = &sge,
				  .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED },
			   *bad;
	CHECK(ibv_post_send(id->qp, &wr, &bad) == 0);
}

/* The server, a forked child, is killed now; or (child < 0) the harness
 * kills it and tells us on stdin. */
static void peer_dies(pid_t child)
{
	int st;
	char c;

	if (child < 0) {
		CHECK(read(0, &c, 1) == 1);
		return;
	}
	CHECK(kill(child, SIGKILL) == 0);
	CHECK(waitpid(child, &st, 0) == child && WIFSIGNALED(st));
}

/* The survivor: connects to `addr`, waits for `ready` to say the server
 * is established (-1: not asked), lets the server die, checks. */
static int client(int port, const char *addr, int sending, int ready,
		  pid_t child)
{
	int flushed = 0, in_flight = 0, sends_ok = 0;
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct rdma_cm_event *ev;
	struct rdma_conn_param p = { .retry_count = 7, .rnr_retry_count = 7 };
	struct ibv_qp_init_attr a = qp_attr();
	struct sockaddr_in dst = { .sin_family = AF_INET,
				   .sin_port = htons(port) };
	static char buf[RECVS + 1][LEN];
	struct ibv_mr *mr;
	struct ibv_qp_attr qa;
	struct ibv_qp_init_attr qi;
	struct ibv_wc wc;
	double killed, took;
	char c;

	CHECK(inet_pton(AF_INET, addr, &dst.sin_addr) == 1);
	CHECK((ch = rdma_create_event_channel()) != NULL);
	CHECK(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&dst, 2000) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED));
	CHECK(rdma_resolve_route(id, 2000) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
	CHECK(rdma_create_qp(id, NULL, &a) == 0);
	CHECK((mr = ibv_reg_mr(id->pd, buf, sizeof buf,
			       IBV_ACCESS_LOCAL_WRITE)) != NULL);
	for (int i = 0; i < RECVS; i++) {
		struct ibv_sge sge = { (uintptr_t)buf[i], LEN, mr->lkey };
		struct ibv_recv_wr wr = { .wr_id = i, .sg_list = &sge,
					  .num_sge = 1 },
				   *bad;
		CHECK(ibv_post_recv(id->qp, &wr, &bad) == 0);
	}
	CHECK(rdma_connect(id, &p) == 0);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ESTABLISHED));
	if (ready >= 0)
		CHECK(read(ready, &c, 1) == 1 && c == 'e');
	if (sending) {
		/* Three SENDs land (the server posted four receives); the
		 * fourth is in flight across the kill. */
		for (int i = 0; i < 3; i++) {
			post_send(id, mr, buf[RECVS]);
			while (ibv_poll_cq(id->send_cq, 1, &wc) != 1)
				;
			CHECK(wc.status == IBV_WC_SUCCESS);
			sends_ok++;
		}
		post_send(id, mr, buf[RECVS]);
		in_flight = 1;
	}

	peer_dies(child);
	killed = now();
	/* Wait for DISCONNECTED; a sender keeps one SEND in flight (its
	 * completions may fail first: the transport's retries run out). */
	for (;;) {
		struct pollfd pf = { .fd = ch->fd, .events = POLLIN };
		CHECK(now() - killed < 15);
		while (in_flight && ibv_poll_cq(id->send_cq, 1, &wc) == 1) {
			CHECK(wc.wr_id == 1000);
			if (wc.status == IBV_WC_SUCCESS) {
				sends_ok++; /* before the peer died */
				post_send(id, mr, buf[RECVS]);
			} else {
				in_flight = 0; /* the QP is in error now */
			}
		}
		if (poll(&pf, 1, 10) == 1)
			break;
	}
	ev = expect(ch, RDMA_CM_EVENT_DISCONNECTED);
	took = now() - killed;
	rdma_ack_cm_event(ev);
	CHECK(ibv_query_qp(id->qp, &qa, IBV_QP_STATE, &qi) == 0);
	CHECK(qa.qp_state == IBV_QPS_ERR);
	/* Every receive posted completes, flushed. */
	for (double t0 = now(); flushed < RECVS && now() - t0 < 5;) {
		if (ibv_poll_cq(id->recv_cq, 1, &wc) != 1)
			continue;
		CHECK(wc.status == IBV_WC_WR_FLUSH_ERR);
		CHECK(wc.wr_id < RECVS);
		flushed++;
	}
	CHECK(flushed == RECVS);
	CHECK(!sending || sends_ok >= 3);
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_TIMEWAIT_EXIT));
	rdma_destroy_qp(id);
	CHECK(rdma_destroy_id(id) == 0);
	ibv_dereg_mr(mr);
	rdma_destroy_event_channel(ch);
	printf("killed_peer: ok: %s, DISCONNECTED %.2f s after the kill "
	       "(%d SENDs completed before)\n",
	       sending ? "sending" : "idle", took, sends_ok);
	return 0;
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 20912;
	int sending = argc > 2 && strcmp(argv[2], "send") == 0;
	const char *role = argc > 3 ? argv[3] : "both";
	int pipefd[2];
	pid_t pid;
	char c;

	alarm(60);
	if (strcmp(role, "server") == 0)
		server(port, 1);
	if (strcmp(role, "client") == 0)
		return client(port, argc > 4 ? argv[4] : "127.0.0.1", sending,
			      -1, -1);
	/* Fork first: the child opens its own device. */
	CHECK(pipe(pipefd) == 0);
	CHECK((pid = fork()) >= 0);
	if (pid == 0) {
		close(pipefd[0]);
		server(port, pipefd[1]);
	}
	close(pipefd[1]);
	CHECK(read(pipefd[0], &c, 1) == 1 && c == 'l');
	return client(port, "127.0.0.1", sending, pipefd[0], pid);
}
