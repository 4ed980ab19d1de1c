/* What the rdma_cm C tests share: CHECK (fails the program with the line,
 * the condition and errno) and expect (the next event of a channel, which
 * must be of the given type). */
#ifndef SOFTRDMA_TEST_CM_H
#define SOFTRDMA_TEST_CM_H

#include <errno.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d)\n",  \
				__FILE__, __LINE__, #c, errno);                \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* The next event of a channel, waiting by poll (the channel may be
 * non-blocking), which must be `want`; 10 s at most. */
static inline struct rdma_cm_event *expect(struct rdma_event_channel *ch,
					   enum rdma_cm_event_type want)
{
	struct rdma_cm_event *ev;
	struct pollfd p = { .fd = ch->fd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
	CHECK(rdma_get_cm_event(ch, &ev) == 0);
	if (ev->event != want) {
		fprintf(stderr, "got %s (status %d), want %s\n",
			rdma_event_str(ev->event), ev->status,
			rdma_event_str(want));
		exit(1);
	}
	return ev;
}

#endif
