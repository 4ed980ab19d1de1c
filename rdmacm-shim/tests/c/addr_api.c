/* What libfabric's verbs provider relies on in librdmacm, beyond what
 * cm_api.c covers: rdma_getaddrinfo with no node and service (the hints'
 * own addresses), with an IPv6 node and no family, with a UD QP type; a
 * loopback bind, which attaches no device where the device has an address
 * of its own (the kernel binds loopback as a wildcard) but attaches it
 * where the device is on loopback (alone on a host), and listens either
 * way; and rdma_migrate_id of a synchronous id whose last event is still
 * held (libfabric resolves synchronously, then moves the id to its event
 * queue's channel). Usage: addr_api PORT device|wildcard. */
#include "cm.h"
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

static struct sockaddr_in sin_of(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port) };
	CHECK(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
	return a;
}

static int same_in(const struct sockaddr *s, const struct sockaddr_in *w)
{
	const struct sockaddr_in *a = (const struct sockaddr_in *)s;
	return s && a->sin_family == AF_INET && a->sin_port == w->sin_port &&
	       a->sin_addr.s_addr == w->sin_addr.s_addr;
}

static void getaddrinfo_cases(void)
{
	struct rdma_addrinfo h, *r;
	struct sockaddr_in src = sin_of("127.0.0.1", 7001);
	struct sockaddr_in dst = sin_of("127.0.0.1", 7002);
	struct sockaddr_in want = sin_of("127.0.0.1", 7471);

	errno = 0;
	CHECK(rdma_getaddrinfo(NULL, NULL, NULL, &r) == -1 && errno == EINVAL);

	/* Neither node nor service: the hints' attributes and addresses. */
	memset(&h, 0, sizeof(h));
	h.ai_flags = RAI_FAMILY;
	h.ai_family = AF_INET;
	h.ai_qp_type = IBV_QPT_RC;
	h.ai_port_space = RDMA_PS_TCP;
	h.ai_src_addr = (struct sockaddr *)&src;
	h.ai_src_len = sizeof(src);
	CHECK(rdma_getaddrinfo(NULL, NULL, &h, &r) == 0);
	CHECK(r->ai_family == AF_INET && r->ai_qp_type == IBV_QPT_RC &&
	      r->ai_port_space == RDMA_PS_TCP);
	CHECK(r->ai_src_len == sizeof(src) && same_in(r->ai_src_addr, &src));
	CHECK(r->ai_dst_addr == NULL && r->ai_dst_len == 0);
	rdma_freeaddrinfo(r);

	h.ai_dst_addr = (struct sockaddr *)&dst;
	h.ai_dst_len = sizeof(dst);
	CHECK(rdma_getaddrinfo(NULL, NULL, &h, &r) == 0);
	CHECK(same_in(r->ai_dst_addr, &dst) && same_in(r->ai_src_addr, &src));
	rdma_freeaddrinfo(r);

	/* A node and service: resolved as the destination; the hints'
	 * source fills the answer's. */
	h.ai_dst_addr = NULL;
	h.ai_dst_len = 0;
	CHECK(rdma_getaddrinfo("127.0.0.1", "7471", &h, &r) == 0);
	CHECK(same_in(r->ai_dst_addr, &want) && same_in(r->ai_src_addr, &src));
	CHECK(!(r->ai_flags & RAI_PASSIVE));
	rdma_freeaddrinfo(r);

	/* An IPv6 node with no family in the hints (libfabric asks so for
	 * each interface address). */
	memset(&h, 0, sizeof(h));
	h.ai_flags = RAI_PASSIVE | RAI_NUMERICHOST;
	CHECK(rdma_getaddrinfo("::1", NULL, &h, &r) == 0);
	CHECK(r->ai_family == AF_INET6 && (r->ai_flags & RAI_PASSIVE));
	CHECK(r->ai_src_len == sizeof(struct sockaddr_in6) &&
	      r->ai_src_addr->sa_family == AF_INET6 && r->ai_dst_addr == NULL);
	CHECK(r->ai_qp_type == IBV_QPT_RC && r->ai_port_space == RDMA_PS_TCP);
	rdma_freeaddrinfo(r);

	/* A UD QP type asks for datagrams: the UDP port space. */
	memset(&h, 0, sizeof(h));
	h.ai_qp_type = IBV_QPT_UD;
	CHECK(rdma_getaddrinfo("127.0.0.1", "7471", &h, &r) == 0);
	CHECK(r->ai_qp_type == IBV_QPT_UD && r->ai_port_space == RDMA_PS_UDP);
	rdma_freeaddrinfo(r);

	/* Not a number with RAI_NUMERICHOST: the resolver's error. */
	memset(&h, 0, sizeof(h));
	h.ai_flags = RAI_NUMERICHOST;
	CHECK(rdma_getaddrinfo("no-such-host.invalid", "1", &h, &r) != 0);
}

/* A loopback bind attaches the device if it is on loopback, else none
 * (as the kernel's wildcard); listening on it gets requests, on ids that
 * have the device. */
static void loopback_bind(int port, int device)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct rdma_cm_id *l, *c;
	struct rdma_cm_event *ev;
	struct sockaddr_in a = sin_of("127.0.0.1", port);

	CHECK(ch);
	CHECK(rdma_create_id(ch, &l, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_bind_addr(l, (struct sockaddr *)&a) == 0);
	CHECK(device ? l->verbs != NULL : l->verbs == NULL);
	CHECK(same_in(rdma_get_local_addr(l), &a));
	CHECK(rdma_listen(l, 4) == 0);

	CHECK(rdma_create_id(ch, &c, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_resolve_addr(c, NULL, (struct sockaddr *)&a, 2000) == 0);
	ev = expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(c->verbs != NULL);
	CHECK(rdma_resolve_route(c, 2000) == 0);
	ev = expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	CHECK(rdma_ack_cm_event(ev) == 0);
	struct rdma_conn_param p = { .qp_num = 0x123,
				     .retry_count = 1,
				     .rnr_retry_count = 1 };
	CHECK(rdma_connect(c, &p) == 0);
	ev = expect(ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	CHECK(ev->listen_id == l && ev->id->verbs != NULL);
	struct rdma_cm_id *s = ev->id;
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_reject(s, NULL, 0) == 0);
	ev = expect(ch, RDMA_CM_EVENT_REJECTED);
	CHECK(ev->id == c);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_destroy_id(s) == 0);
	CHECK(rdma_destroy_id(c) == 0);
	CHECK(rdma_destroy_id(l) == 0);
	rdma_destroy_event_channel(ch);
}

/* A synchronous id keeps its last event; migrating it acknowledges that
 * event (else the migration would wait for it forever). */
static void migrate_synchronous(int port)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct rdma_cm_id *id;
	struct rdma_cm_event *ev;
	struct sockaddr_in a = sin_of("127.0.0.1", port);

	CHECK(ch);
	CHECK(rdma_create_id(NULL, &id, NULL, RDMA_PS_TCP) == 0);
	CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&a, 2000) == 0);
	CHECK(id->event && id->event->event == RDMA_CM_EVENT_ADDR_RESOLVED);
	errno = 0;
	CHECK(rdma_migrate_id(id, NULL) == -1 && errno == EINVAL);
	CHECK(rdma_migrate_id(id, ch) == 0);
	CHECK(id->channel == ch && id->event == NULL);
	/* Now an id of the channel: its events arrive there. */
	CHECK(rdma_resolve_route(id, 2000) == 0);
	ev = expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
	CHECK(ev->id == id);
	CHECK(rdma_ack_cm_event(ev) == 0);
	CHECK(rdma_destroy_id(id) == 0);
	rdma_destroy_event_channel(ch);
}

int main(int argc, char **argv)
{
	CHECK(argc == 3);
	int port = atoi(argv[1]);
	int device = !strcmp(argv[2], "device");
	CHECK(device || !strcmp(argv[2], "wildcard"));
	alarm(60);
	getaddrinfo_cases();
	loopback_bind(port, device);
	migrate_synchronous(port + 1);
	printf("addr_api: ok\n");
	return 0;
}
