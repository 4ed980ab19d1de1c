/*
 * ibv_rereg_mr, ibv_resize_cq and the GID queries through the shim, as
 * rdma-core answers them.
 *
 * rereg: rdma-core's own input checks are IBV_REREG_MR_ERR_INPUT (errno
 * EINVAL); the command's refusals IBV_REREG_MR_ERR_CMD with the kernel's
 * errno; a new translation keeps the keys, and a WRITE through the rkey
 * lands in the new range; a PD change moves the MR's use of the PD.
 * resize: rxe's sizes, completions waiting kept in order.
 * GIDs: rxe's table (1024 entries, 0 and 1 populated, RoCE v2).
 * Prints "OK <step>" per step and "ALL OK".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

/* rdma-core's private export (driver.h): 1 = RoCE v2. */
int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num, unsigned int index,
		       int *type);

static char src[8192], old_buf[4096], new_buf[8192];

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open");
	struct ibv_device_attr da;
	CHECK(!ibv_query_device(ctx, &da), "query_device");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	CHECK(pd && cq, "PD, CQ");
	struct ibv_qp *qa = rc_qp(pd, cq), *qb = rc_qp(pd, cq);
	rc_pair(qa, qb);
	for (unsigned i = 0; i < sizeof src; i++)
		src[i] = (char)(i * 13 + 1);
	struct ibv_mr *smr = ibv_reg_mr(pd, src, sizeof src, ALL_ACCESS);
	struct ibv_mr *mr = ibv_reg_mr(pd, old_buf, sizeof old_buf, ALL_ACCESS);
	CHECK(smr && mr, "reg_mr");

	/* rdma-core's input checks. */
	errno = 0;
	CHECK(ibv_rereg_mr(mr, 1 << 3, NULL, NULL, 0, 0) == IBV_REREG_MR_ERR_INPUT && errno == EINVAL,
	      "an unknown flag");
	errno = 0;
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, NULL, NULL, 4096, 0) ==
			      IBV_REREG_MR_ERR_INPUT && errno == EINVAL,
	      "a translation without an address");
	errno = 0;
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, NULL, new_buf, 0, 0) ==
			      IBV_REREG_MR_ERR_INPUT && errno == EINVAL,
	      "a translation without a length");
	errno = 0;
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_ACCESS, NULL, new_buf, 0, ALL_ACCESS) ==
			      IBV_REREG_MR_ERR_INPUT && errno == EINVAL,
	      "an address without a translation");
	/* The command's. */
	errno = 0;
	CHECK(ibv_rereg_mr(mr, 0, NULL, NULL, 0, 0) == IBV_REREG_MR_ERR_CMD && errno == EINVAL,
	      "no flag");
	errno = 0;
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0, IBV_ACCESS_REMOTE_WRITE) ==
			      IBV_REREG_MR_ERR_CMD && errno == EINVAL,
	      "remote write without local write");
	errno = 0;
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_PD, NULL, NULL, 0, 0) == IBV_REREG_MR_ERR_CMD &&
		      errno == EINVAL,
	      "a NULL PD");
	CHECK(mr->addr == old_buf && mr->length == sizeof old_buf && mr->pd == pd, "unchanged");
	OK("rereg bad flows");

	uint32_t lkey = mr->lkey, rkey = mr->rkey;
	CHECK(!ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, NULL, new_buf, sizeof new_buf, 0),
	      "rereg translation: %s", strerror(errno));
	CHECK(mr->addr == new_buf && mr->length == sizeof new_buf && mr->lkey == lkey &&
		      mr->rkey == rkey,
	      "the C struct follows, keys kept");
	rc_write(qa, src, 8192, smr->lkey, (uintptr_t)new_buf, rkey);
	struct ibv_wc wc = rc_wait(cq);
	CHECK(wc.status == IBV_WC_SUCCESS && !memcmp(new_buf, src, 8192),
	      "WRITE into the new range: %s", ibv_wc_status_str(wc.status));
	rc_write(qa, src, 64, smr->lkey, (uintptr_t)old_buf, rkey);
	wc = rc_wait(cq);
	CHECK(wc.status == IBV_WC_REM_ACCESS_ERR, "WRITE into the old range: %s",
	      ibv_wc_status_str(wc.status));
	for (unsigned i = 0; i < sizeof old_buf; i++)
		CHECK(old_buf[i] == 0, "the old range untouched at %u", i);
	OK("rereg translation");

	struct ibv_pd *pd2 = ibv_alloc_pd(ctx);
	CHECK(pd2, "PD 2");
	CHECK(!ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_PD | IBV_REREG_MR_CHANGE_ACCESS, pd2, NULL, 0,
			    IBV_ACCESS_LOCAL_WRITE),
	      "rereg PD and access: %s", strerror(errno));
	CHECK(mr->pd == pd2, "mr->pd");
	CHECK(ibv_dealloc_pd(pd2) == EBUSY, "the new PD is in use");
	CHECK(!ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_PD, pd, NULL, 0, 0), "back to the first PD");
	CHECK(!ibv_dealloc_pd(pd2), "the second PD is free again");
	OK("rereg PD");

	/* resize: qa and qb are in error after the failed WRITE; a new pair. */
	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy QPs");
	while (ibv_poll_cq(cq, 1, &wc) > 0)
		;
	struct ibv_cq *small = ibv_create_cq(ctx, 4, NULL, NULL, 0);
	CHECK(small, "a CQ of 4");
	CHECK(ibv_resize_cq(small, 0) == EINVAL, "resize to 0");
	CHECK(ibv_resize_cq(small, da.max_cqe + 1) == EINVAL, "resize above max_cqe");
	CHECK(!ibv_resize_cq(small, 1) && small->cqe == 1, "shrink to 1");
	CHECK(!ibv_resize_cq(small, 16) && small->cqe == 16, "grow to 16");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, 0, NULL, NULL, 0) && errno == EINVAL, "create_cq with 0 entries");
	errno = 0;
	CHECK(!ibv_create_cq(ctx, 4, NULL, NULL, ctx->num_comp_vectors) && errno == EINVAL,
	      "create_cq on a comp_vector beyond num_comp_vectors");
	qa = rc_qp(pd, small);
	qb = rc_qp(pd, cq);
	rc_pair(qa, qb);
	for (int i = 0; i < 6; i++)
		rc_recv(qb, i, new_buf, 64, mr->lkey);
	for (int i = 0; i < 6; i++)
		rc_send(qa, 100 + i, src, 8, smr->lkey);
	for (int i = 0; i < 6; i++)
		CHECK(rc_wait(cq).status == IBV_WC_SUCCESS, "receive %d", i);
	/* The six send completions reach `small` (never polled) when their
	 * ACKs are handled, right after the receives; a resize is the only
	 * look at them that does not poll, and a shrink that succeeded would
	 * lose one: wait generously instead. */
	struct timespec pause = { 0, 300 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	struct ibv_wc wcs[6];
	int waiting;
	CHECK(ibv_resize_cq(small, 5) == EINVAL, "shrinking below the 6 waiting");
	CHECK(!ibv_resize_cq(small, 6) && small->cqe == 6, "shrinking to the 6 waiting");
	waiting = ibv_poll_cq(small, 6, wcs);
	CHECK(waiting == 6, "6 completions: %d", waiting);
	for (int i = 0; i < 6; i++)
		CHECK(wcs[i].wr_id == (uint64_t)(100 + i) && wcs[i].status == IBV_WC_SUCCESS,
		      "completion %d in order", i);
	OK("resize");

	/* GIDs. */
	struct ibv_port_attr pa;
	CHECK(!ibv_query_port(ctx, 1, &pa) && pa.gid_tbl_len == 1024, "gid_tbl_len %d", pa.gid_tbl_len);
	union ibv_gid g0, g1, g2, zero = { 0 };
	CHECK(!ibv_query_gid(ctx, 1, 0, &g0) && g0.raw[0] == 0xfe && g0.raw[1] == 0x80, "GID 0");
	CHECK(!ibv_query_gid(ctx, 1, 1, &g1) && g1.raw[10] == 0xff && g1.raw[11] == 0xff, "GID 1");
	CHECK(!ibv_query_gid(ctx, 1, 2, &g2) && !memcmp(&g2, &zero, sizeof zero), "GID 2 empty");
	CHECK(ibv_query_gid(ctx, 1, 1024, &g2) == -1, "GID 1024 beyond the table");
	struct ibv_gid_entry e;
	CHECK(!ibv_query_gid_ex(ctx, 1, 1, &e, 0) && e.gid_type == IBV_GID_TYPE_ROCE_V2 &&
		      e.gid_index == 1 && !memcmp(&e.gid, &g1, sizeof g1),
	      "gid_ex 1");
	CHECK(e.ndev_ifindex == if_nametoindex("lo"), "the GID's netdev is lo: %u", e.ndev_ifindex);
	CHECK(ibv_query_gid_ex(ctx, 1, 2, &e, 0) == ENODATA, "gid_ex of an empty entry");
	CHECK(ibv_query_gid_ex(ctx, 1, 1024, &e, 0) == EINVAL, "gid_ex beyond the table");
	struct ibv_gid_entry tbl[4];
	CHECK(ibv_query_gid_table(ctx, tbl, 1, 0) == -EINVAL, "gid_table too small");
	CHECK(ibv_query_gid_table(ctx, tbl, 4, 0) == 2 && tbl[0].gid_index == 0 &&
		      tbl[1].gid_index == 1 && tbl[0].gid_type == IBV_GID_TYPE_ROCE_V2 &&
		      tbl[1].gid_type == IBV_GID_TYPE_ROCE_V2,
	      "gid_table");
	int ty = -1;
	CHECK(!ibv_query_gid_type(ctx, 1, 0, &ty) && ty == 1, "gid_type 0");
	CHECK(ibv_query_gid_type(ctx, 1, 2, &ty) == -1 && errno == ENODATA, "gid_type 2");
	OK("gids");

	CHECK(!ibv_destroy_qp(qa) && !ibv_destroy_qp(qb), "destroy QPs");
	CHECK(!ibv_destroy_cq(small) && !ibv_destroy_cq(cq), "destroy CQs");
	CHECK(!ibv_dereg_mr(mr) && !ibv_dereg_mr(smr), "dereg");
	CHECK(!ibv_dealloc_pd(pd), "dealloc");
	CHECK(!ibv_close_device(ctx), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
