/*
 * Importing through the command descriptor (test_shared_pd's flow, and its
 * bad flows): ibv_import_device on a dup of cmd_fd is a context on the same
 * objects; ibv_import_pd/ibv_import_mr by handle give views with the same
 * handle and keys (the MR's address NULL); traffic through the imported
 * objects reaches the original MR's memory; objects of the original context
 * serve the imported one (one command file); unknown handles, a PD of
 * another handle, descriptors that are not command descriptors are refused;
 * an imported MR cannot be re-registered; closing the imported context
 * closes its descriptor; another process's command descriptor is EOPNOTSUPP.
 * Prints "OK <step>" per step and "ALL OK".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <infiniband/verbs.h>

#include "check.h"
#include "rc.h"

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct ibv_context *ctx = ibv_open_device(list[0]);
	CHECK(ctx && ctx->cmd_fd >= 0, "open");
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_pd *other = ibv_alloc_pd(ctx);
	static char buf[4096], src[4096];
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof buf, ALL_ACCESS);
	CHECK(pd && other && mr && pd->handle != other->handle, "PD, MR, handles");

	int fd = dup(ctx->cmd_fd);
	CHECK(fd >= 0, "dup");
	struct ibv_context *imp = ibv_import_device(fd);
	CHECK(imp && imp != ctx && imp->cmd_fd == fd, "import_device: %s", strerror(errno));
	struct ibv_pd *ipd = ibv_import_pd(imp, pd->handle);
	CHECK(ipd && ipd->handle == pd->handle && ipd->context == imp, "import_pd: %s",
	      strerror(errno));
	struct ibv_mr *imr = ibv_import_mr(ipd, mr->handle);
	CHECK(imr && imr->lkey == mr->lkey && imr->rkey == mr->rkey &&
		      imr->length == mr->length && imr->addr == NULL && imr->pd == ipd,
	      "import_mr: %s", strerror(errno));
	OK("import device, PD, MR");

	/* A QP of the imported context on the imported PD receives into the
	 * original MR's memory through the imported MR's key; a QP of the
	 * original context sends. The imported context uses a CQ of the
	 * original one: one command file. */
	struct ibv_cq *cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	struct ibv_cq *icq = ibv_create_cq(imp, 64, NULL, NULL, 0);
	CHECK(cq && icq, "CQs");
	struct ibv_qp *qs = rc_qp(pd, cq), *qr = rc_qp(ipd, icq);
	struct ibv_qp *mixed = rc_qp(ipd, cq);
	CHECK(!ibv_destroy_qp(mixed), "a QP of the imported context with the original's CQ");
	rc_pair(qs, qr);
	for (int i = 0; i < 4096; i++)
		src[i] = (char)(i * 11 + 5);
	struct ibv_mr *smr = ibv_reg_mr(pd, src, sizeof src, ALL_ACCESS);
	CHECK(smr, "reg src");
	rc_recv(qr, 1, buf, 4096, imr->lkey);
	rc_send(qs, 2, src, 4096, smr->lkey);
	struct ibv_wc wc = rc_wait(cq);
	CHECK(wc.status == IBV_WC_SUCCESS, "SEND: %s", ibv_wc_status_str(wc.status));
	wc = rc_wait(icq);
	CHECK(wc.status == IBV_WC_SUCCESS && wc.byte_len == 4096 && !memcmp(buf, src, 4096),
	      "the receive through the imported MR");
	rc_write(qr, buf, 16, imr->lkey, (uintptr_t)src + 100, smr->rkey);
	wc = rc_wait(icq);
	CHECK(wc.status == IBV_WC_SUCCESS && !memcmp(src + 100, buf, 16), "WRITE from the imported MR");
	OK("traffic through imported objects");

	errno = 0;
	CHECK(!ibv_import_pd(imp, 0xfffff) && errno == EINVAL, "import_pd of no handle");
	errno = 0;
	CHECK(!ibv_import_pd(imp, mr->handle) && errno == EINVAL, "import_pd of an MR's handle");
	errno = 0;
	CHECK(!ibv_import_mr(ipd, 0xfffff) && errno == EINVAL, "import_mr of no handle");
	struct ibv_pd *iother = ibv_import_pd(imp, other->handle);
	CHECK(iother, "import the other PD");
	errno = 0;
	CHECK(!ibv_import_mr(iother, mr->handle) && errno == EINVAL, "import_mr with another PD");
	ibv_unimport_pd(iother);
	errno = 0;
	CHECK(!ibv_import_device(-1) && errno == EBADF, "import_device(-1): %d", errno);
	int null = open("/dev/null", O_RDONLY);
	errno = 0;
	CHECK(!ibv_import_device(null) && errno == EINVAL, "import_device(/dev/null): %d", errno);
	close(null);
	/* What another process's command descriptor looks like here (passed
	 * over a unix socket): a command memfd naming no file of this process.
	 * Its objects live in that process: EOPNOTSUPP, never a crash. */
	int foreign = memfd_create("softrdma-cmd", MFD_CLOEXEC);
	CHECK(foreign >= 0, "memfd_create");
	errno = 0;
	CHECK(!ibv_import_device(foreign) && errno == EOPNOTSUPP, "another process's descriptor: %d",
	      errno);
	close(foreign);
	struct ibv_context *ctx2 = ibv_open_device(list[0]);
	CHECK(ctx2, "a second context");
	errno = 0;
	CHECK(!ibv_import_pd(ctx2, pd->handle) && errno == EINVAL, "handles are per file");
	CHECK(ibv_rereg_mr(imr, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0, IBV_ACCESS_LOCAL_WRITE) ==
			      IBV_REREG_MR_ERR_INPUT && errno == EINVAL,
	      "rereg of an imported MR");
	OK("bad imports");

	CHECK(!ibv_destroy_qp(qr) && !ibv_destroy_qp(qs), "destroy QPs");
	CHECK(!ibv_destroy_cq(icq) && !ibv_destroy_cq(cq), "destroy CQs");
	ibv_unimport_mr(imr);
	ibv_unimport_pd(ipd);
	CHECK(!ibv_close_device(imp), "close the imported context");
	CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "its descriptor is closed");
	/* The original objects are intact. */
	CHECK(mr->lkey && !ibv_dereg_mr(mr) && !ibv_dereg_mr(smr), "dereg");
	CHECK(!ibv_dealloc_pd(pd) && !ibv_dealloc_pd(other), "dealloc");
	CHECK(!ibv_close_device(ctx2) && !ibv_close_device(ctx), "close");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
