/*
 * Parent domains: a PD over a PD, usable wherever a PD is (QP, SRQ, MR, an
 * extended CQ's parent_domain) with the inner PD's protection; its
 * allocator provides the memory of each QP, SRQ and extended CQ made
 * through it (the object's pointer is what the allocator returned) and gets
 * it back at destruction; IBV_ALLOCATOR_USE_DEFAULT leaves it to the
 * library, NULL fails the creation with ENOMEM; the inner PD and the parent
 * domain are EBUSY while in use; bad attributes are EINVAL.
 * Prints "OK <step>" per step and "ALL OK".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

enum mode { OWN, DEFAULT, FAIL };

static struct {
	enum mode mode;
	int allocs, frees;
	void *last;
	size_t size, align;
	uint64_t type;
	void *freed;
} log_;

static void *alloc_cb(struct ibv_pd *pd, void *ctx, size_t size, size_t align, uint64_t type)
{
	CHECK(ctx == &log_, "pd_context passed");
	log_.allocs++;
	log_.size = size;
	log_.align = align;
	log_.type = type;
	if (log_.mode == DEFAULT)
		return IBV_ALLOCATOR_USE_DEFAULT;
	if (log_.mode == FAIL)
		return NULL;
	void *p = NULL;
	CHECK(!posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size), "memalign");
	memset(p, 0xa5, size);
	log_.last = p;
	return p;
}

static void free_cb(struct ibv_pd *pd, void *ctx, void *ptr, uint64_t type)
{
	log_.frees++;
	log_.freed = ptr;
	free(ptr);
}

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	CHECK(pd, "alloc_pd");

	struct ibv_parent_domain_init_attr bad = { .pd = NULL };
	errno = 0;
	CHECK(!ibv_alloc_parent_domain(ctx, &bad) && errno == EINVAL, "no PD");
	bad.pd = pd;
	bad.comp_mask = 1 << 5;
	errno = 0;
	CHECK(!ibv_alloc_parent_domain(ctx, &bad) && errno == EINVAL, "an unknown comp_mask bit");
	bad.comp_mask = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS;
	bad.alloc = alloc_cb;
	errno = 0;
	CHECK(!ibv_alloc_parent_domain(ctx, &bad) && errno == EINVAL, "alloc without free");
	OK("bad attributes");

	struct ibv_parent_domain_init_attr pa = {
		.pd = pd,
		.comp_mask = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS |
			     IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT,
		.alloc = alloc_cb,
		.free = free_cb,
		.pd_context = &log_,
	};
	struct ibv_pd *parent = ibv_alloc_parent_domain(ctx, &pa);
	CHECK(parent && parent != pd && parent->context == ctx, "alloc_parent_domain: %s",
	      strerror(errno));
	CHECK(ibv_dealloc_pd(pd) == EBUSY, "the inner PD under a parent domain");

	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	CHECK(cq, "create_cq");
	struct ibv_qp *qp = rc_qp(parent, cq);
	CHECK(log_.allocs == 1 && (void *)qp == log_.last && log_.type == 1 &&
		      log_.size >= sizeof(struct ibv_qp) && log_.align >= 8,
	      "the QP lives in the allocator's memory (allocs %d, type %lu)", log_.allocs,
	      (unsigned long)log_.type);
	CHECK(qp->pd == parent, "qp->pd");
	CHECK(ibv_dealloc_pd(parent) == EBUSY, "the parent domain with a QP");

	struct ibv_srq_init_attr sa = { .attr = { .max_wr = 8, .max_sge = 1 } };
	struct ibv_srq *srq = ibv_create_srq(parent, &sa);
	CHECK(srq && (void *)srq == log_.last && log_.type == 3, "the SRQ in the allocator's memory");
	struct ibv_cq_init_attr_ex ca = {
		.cqe = 16,
		.wc_flags = IBV_WC_STANDARD_FLAGS,
		.comp_mask = IBV_CQ_INIT_ATTR_MASK_PD,
		.parent_domain = parent,
	};
	struct ibv_cq_ex *cqx = ibv_create_cq_ex(ctx, &ca);
	CHECK(cqx && (void *)cqx == log_.last && log_.type == 2, "the extended CQ in the allocator's memory");
	ca.parent_domain = pd;
	errno = 0;
	CHECK(!ibv_create_cq_ex(ctx, &ca) && errno == EINVAL, "an extended CQ's PD must be a parent domain");
	OK("allocator places QP, SRQ, CQ");

	/* The parent domain's protection is the inner PD's: a QP on the
	 * parent domain and one on the inner PD exchange data through MRs of
	 * either. */
	struct ibv_qp *peer = rc_qp(pd, cq);
	rc_pair(qp, peer);
	static char a[256], b[256];
	for (int i = 0; i < 256; i++)
		a[i] = (char)i;
	struct ibv_mr *ma = ibv_reg_mr(parent, a, sizeof a, ALL_ACCESS);
	struct ibv_mr *mb = ibv_reg_mr(pd, b, sizeof b, ALL_ACCESS);
	CHECK(ma && mb && ma->pd == parent, "MRs on the parent domain and the inner PD");
	rc_write(qp, a, 256, ma->lkey, (uintptr_t)b, mb->rkey);
	struct ibv_wc wc = rc_wait(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && !memcmp(a, b, 256), "WRITE from the parent domain's QP: %s",
	      ibv_wc_status_str(wc.status));
	OK("traffic through the parent domain");

	void *qmem = (void *)qp;
	int frees = log_.frees;
	CHECK(!ibv_destroy_qp(qp), "destroy_qp");
	CHECK(log_.frees == frees + 1 && log_.freed == qmem, "the QP's memory given back");
	CHECK(!ibv_destroy_srq(srq) && !ibv_destroy_cq(ibv_cq_ex_to_cq(cqx)), "destroy SRQ, CQ");
	CHECK(log_.frees == frees + 3 && log_.allocs == 3, "every placement freed");

	log_.mode = DEFAULT;
	qp = rc_qp(parent, cq);
	CHECK(log_.allocs == 4 && !ibv_destroy_qp(qp) && log_.frees == frees + 3,
	      "USE_DEFAULT: the library's memory, not freed through the callback");
	log_.mode = FAIL;
	struct ibv_qp_init_attr qi = {
		.send_cq = cq, .recv_cq = cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	errno = 0;
	CHECK(!ibv_create_qp(parent, &qi) && errno == ENOMEM, "an allocator's NULL: ENOMEM");
	OK("default and failing allocators");

	/* Without allocators: the library's memory, and still held. */
	struct ibv_parent_domain_init_attr plain = { .pd = pd };
	struct ibv_pd *parent2 = ibv_alloc_parent_domain(ctx, &plain);
	CHECK(parent2, "a parent domain without allocators");
	struct ibv_qp *q2 = rc_qp(parent2, cq);
	CHECK(ibv_dealloc_pd(parent2) == EBUSY, "a parent domain without allocators, with a QP");
	CHECK(!ibv_destroy_qp(q2) && !ibv_dealloc_pd(parent2), "then free");
	OK("no allocators");

	CHECK(!ibv_dereg_mr(ma) && !ibv_dereg_mr(mb) && !ibv_destroy_qp(peer), "teardown");
	CHECK(!ibv_dealloc_pd(parent), "dealloc the parent domain");
	CHECK(!ibv_destroy_cq(cq) && !ibv_dealloc_pd(pd), "dealloc the inner PD");
	CHECK(!ibv_close_device(ctx), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
