/* UCX's UCP over the soft device, every byte checked: two processes (a fork,
 * addresses and remote keys over pipes) exchange tagged messages from 1 B to
 * 4 MiB (eager and rendezvous: RDMA READ on rc_verbs), then one PUTs into
 * and GETs from the other's mapped memory. The transports are the
 * environment's (UCX_TLS); run under `softrdma run` (the device's face). */
#include <stdint.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ucp/api/ucp.h>
#include "check.h"

#define BUF (4u << 20)
#define TAG_DATA 0x10
#define TAG_SYNC 0x20

static const size_t sizes[] = {1, 8, 100, 4096, 8192, 65536, 1u << 20, BUF};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

struct peer {
	ucp_context_h ctx;
	ucp_worker_h worker;
	ucp_ep_h ep;
	ucp_mem_h memh;
	void *buf;
	ucp_rkey_h rkey; /* the other side's buffer */
	uint64_t remote;
	int in, out;
};

static uint8_t pattern(size_t i, unsigned seed)
{
	return (uint8_t)(i * 131 + seed * 7 + (i >> 12));
}

static void fill(void *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)p)[i] = pattern(i, seed);
}

static size_t first_bad(const void *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (((const uint8_t *)p)[i] != pattern(i, seed))
			return i;
	return n;
}

static void put_blob(int fd, const void *p, size_t n)
{
	CHECK(write(fd, &n, sizeof(n)) == sizeof(n), "pipe");
	CHECK(write(fd, p, n) == (ssize_t)n, "pipe");
}

static void *get_blob(int fd, size_t *n)
{
	CHECK(read(fd, n, sizeof(*n)) == sizeof(*n), "pipe");
	void *p = malloc(*n);
	size_t got = 0;
	while (got < *n) {
		ssize_t r = read(fd, (char *)p + got, *n - got);
		CHECK(r > 0, "pipe");
		got += r;
	}
	return p;
}

/* Progress until the request (or immediate status) is done; its status. */
static ucs_status_t wait_req(struct peer *p, void *req)
{
	if (req == NULL)
		return UCS_OK;
	if (UCS_PTR_IS_ERR(req))
		return UCS_PTR_STATUS(req);
	ucs_status_t st;
	while ((st = ucp_request_check_status(req)) == UCS_INPROGRESS)
		ucp_worker_progress(p->worker);
	ucp_request_free(req);
	return st;
}

static void setup(struct peer *p)
{
	ucp_params_t params = {
		.field_mask = UCP_PARAM_FIELD_FEATURES,
		.features = UCP_FEATURE_TAG | UCP_FEATURE_RMA,
	};
	CHECK(ucp_init(&params, NULL, &p->ctx) == UCS_OK, "ucp_init");
	ucp_worker_params_t wp = {
		.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		.thread_mode = UCS_THREAD_MODE_SINGLE,
	};
	CHECK(ucp_worker_create(p->ctx, &wp, &p->worker) == UCS_OK, "worker");

	ucp_address_t *addr;
	size_t len;
	CHECK(ucp_worker_get_address(p->worker, &addr, &len) == UCS_OK, "address");
	put_blob(p->out, addr, len);
	ucp_worker_release_address(p->worker, addr);
	void *peer_addr = get_blob(p->in, &len);
	ucp_ep_params_t ep = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
		.address = peer_addr,
	};
	CHECK(ucp_ep_create(p->worker, &ep, &p->ep) == UCS_OK, "ep_create");
	free(peer_addr);

	ucp_mem_map_params_t mp = {
		.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH |
			      UCP_MEM_MAP_PARAM_FIELD_FLAGS,
		.length = BUF,
		.flags = UCP_MEM_MAP_ALLOCATE,
	};
	CHECK(ucp_mem_map(p->ctx, &mp, &p->memh) == UCS_OK, "mem_map");
	ucp_mem_attr_t ma = {.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS};
	CHECK(ucp_mem_query(p->memh, &ma) == UCS_OK, "mem_query");
	p->buf = ma.address;
	void *rk;
	CHECK(ucp_rkey_pack(p->ctx, p->memh, &rk, &len) == UCS_OK, "rkey_pack");
	uint64_t va = (uintptr_t)p->buf;
	put_blob(p->out, &va, sizeof(va));
	put_blob(p->out, rk, len);
	ucp_rkey_buffer_release(rk);
	uint64_t *rva = get_blob(p->in, &len);
	p->remote = *rva;
	free(rva);
	void *prk = get_blob(p->in, &len);
	CHECK(ucp_ep_rkey_unpack(p->ep, prk, &p->rkey) == UCS_OK, "rkey_unpack");
	free(prk);
}

static void send_tag(struct peer *p, const void *b, size_t n, ucp_tag_t tag)
{
	ucp_request_param_t rp = {0};
	CHECK(wait_req(p, ucp_tag_send_nbx(p->ep, b, n, tag, &rp)) == UCS_OK,
	      "tag send %zu", n);
}

static void recv_tag(struct peer *p, void *b, size_t n, ucp_tag_t tag)
{
	ucp_tag_recv_info_t info;
	ucp_request_param_t rp = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_RECV_INFO,
		.recv_info.tag_info = &info,
	};
	void *req = ucp_tag_recv_nbx(p->worker, b, n, tag, (ucp_tag_t)-1, &rp);
	CHECK(wait_req(p, req) == UCS_OK, "tag recv %zu", n);
}

static void sync_with(struct peer *p, int first)
{
	char c = 's';
	if (first) {
		send_tag(p, &c, 1, TAG_SYNC);
		recv_tag(p, &c, 1, TAG_SYNC);
	} else {
		recv_tag(p, &c, 1, TAG_SYNC);
		send_tag(p, &c, 1, TAG_SYNC);
	}
}

static void flush(struct peer *p)
{
	ucp_request_param_t rp = {0};
	CHECK(wait_req(p, ucp_ep_flush_nbx(p->ep, &rp)) == UCS_OK, "flush");
}

static void teardown(struct peer *p)
{
	ucp_request_param_t rp = {
		.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
		.flags = 0, /* flush, then close */
	};
	ucp_rkey_destroy(p->rkey);
	wait_req(p, ucp_ep_close_nbx(p->ep, &rp));
	ucp_mem_unmap(p->ctx, p->memh);
	ucp_worker_destroy(p->worker);
	/* UCX 1.13.1's md close hands its implicit-ODP handle to mem_dereg as
	 * if it were the parameters and crashes, whatever the device (and its
	 * crash handler can take half a minute symbolising a backtrace): with
	 * implicit ODP the context is left to the process's exit. */
	const char *m = getenv("UCX_IB_REG_METHODS");
	if (!(m && strstr(m, "odp")))
		ucp_cleanup(p->ctx);
}

/* The sender: tagged messages, then PUT into the receiver, then GET. */
static void client(struct peer *p)
{
	for (unsigned k = 0; k < NSIZES; k++) {
		fill(p->buf, sizes[k], k);
		send_tag(p, p->buf, sizes[k], TAG_DATA + k);
	}
	sync_with(p, 1);
	OK("tag");
	for (unsigned k = 0; k < NSIZES; k++) {
		size_t off = k * 64; /* unaligned remote offsets too */
		size_t n = sizes[k] + off > BUF ? BUF - off : sizes[k];
		fill(p->buf, n, 100 + k);
		ucp_request_param_t rp = {0};
		void *req = ucp_put_nbx(p->ep, p->buf, n, p->remote + off,
					p->rkey, &rp);
		CHECK(wait_req(p, req) == UCS_OK, "put %zu", n);
		flush(p);
		sync_with(p, 1); /* the receiver checks */
	}
	OK("put");
	sync_with(p, 1); /* the receiver has filled its buffer */
	for (unsigned k = 0; k < NSIZES; k++) {
		memset(p->buf, 0, sizes[k]);
		ucp_request_param_t rp = {0};
		void *req = ucp_get_nbx(p->ep, p->buf, sizes[k], p->remote,
					p->rkey, &rp);
		CHECK(wait_req(p, req) == UCS_OK, "get %zu", sizes[k]);
		flush(p);
		size_t bad = first_bad(p->buf, sizes[k], 200);
		CHECK(bad == sizes[k], "get of %zu: byte %zu differs", sizes[k],
		      bad);
	}
	OK("get");
	sync_with(p, 1);
}

static void server(struct peer *p)
{
	for (unsigned k = 0; k < NSIZES; k++) {
		memset(p->buf, 0, sizes[k]);
		recv_tag(p, p->buf, sizes[k], TAG_DATA + k);
		size_t bad = first_bad(p->buf, sizes[k], k);
		CHECK(bad == sizes[k], "tag of %zu: byte %zu differs", sizes[k],
		      bad);
	}
	sync_with(p, 0);
	for (unsigned k = 0; k < NSIZES; k++) {
		size_t off = k * 64;
		size_t n = sizes[k] + off > BUF ? BUF - off : sizes[k];
		char c;
		recv_tag(p, &c, 1, TAG_SYNC); /* the PUT is flushed */
		size_t bad = first_bad((char *)p->buf + off, n, 100 + k);
		CHECK(bad == n, "put of %zu at %zu: byte %zu differs", n, off,
		      bad);
		send_tag(p, &c, 1, TAG_SYNC); /* checked: the next may come */
	}
	fill(p->buf, BUF, 200);
	sync_with(p, 0);
	sync_with(p, 0);
}

int main(void)
{
	int a[2], b[2];
	CHECK(pipe(a) == 0 && pipe(b) == 0, "pipe");
	setvbuf(stdout, NULL, _IONBF, 0);
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	struct peer p = {0};
	if (pid == 0) {
		/* A failed or killed parent takes the client with it. */
		CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "prctl");
		CHECK(getppid() != 1, "orphaned");
		p.in = a[0];
		p.out = b[1];
		setup(&p);
		client(&p);
		teardown(&p);
		return 0;
	}
	p.in = b[0];
	p.out = a[1];
	setup(&p);
	server(&p);
	teardown(&p);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client status %#x", st);
	OK("done");
	return 0;
}
