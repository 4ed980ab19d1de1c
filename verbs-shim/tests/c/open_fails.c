/*
 * ibv_open_device when the process is out of descriptors (issue 19,
 * finding 11): NULL with errno (EMFILE), not an abort; once descriptors
 * are free again the device opens. Prints "OK <step>" per step and
 * "ALL OK"; exits 1 on a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <infiniband/verbs.h>

#include "check.h"

int main(void)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	CHECK(list && n > 0, "no device");
	struct rlimit old;
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0, "getrlimit");
	int fd = open("/dev/null", O_RDONLY);
	CHECK(fd >= 0, "open /dev/null");
	/* Room for 0, 1, 2 ... more descriptors: each stage of the open
	 * (sockets, userfaultfd, eventfd) fails in turn, until it succeeds. */
	int emfile = 0, failed = 0;
	struct ibv_context *ctx = NULL;
	for (int extra = 0; extra < 32 && !ctx; extra++) {
		struct rlimit low = { .rlim_cur = fd + 1 + extra, .rlim_max = old.rlim_max };
		CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit");
		errno = 0;
		ctx = ibv_open_device(list[0]);
		int e = errno;
		CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0, "restore the limit");
		if (!ctx) {
			CHECK(e != 0, "NULL without errno (%d spare)", extra);
			failed++;
			emfile += e == EMFILE;
		}
	}
	CHECK(failed > 0 && emfile > 0, "%d failed opens, %d with EMFILE", failed, emfile);
	CHECK(ctx, "never opened");
	CHECK(ibv_close_device(ctx) == 0, "close");
	printf("%d opens failed (%d EMFILE)\n", failed, emfile);
	OK("open without descriptors");
	ctx = ibv_open_device(list[0]);
	CHECK(ctx, "open afterwards: %s", strerror(errno));
	CHECK(ibv_close_device(ctx) == 0, "close");
	OK("open afterwards");
	ibv_free_device_list(list);
	printf("ALL OK\n");
	return 0;
}
