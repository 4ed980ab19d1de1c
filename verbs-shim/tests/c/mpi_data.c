/* Open MPI over the soft device, every byte checked: two ranks (run by
 * mpirun through `softrdma run`, the transports the environment's) do a
 * ping-pong from 1 B to 4 MiB, then MPI_Bcast, MPI_Allreduce, MPI_Alltoall,
 * MPI_Barrier and a ring of non-blocking Isend/Irecv, each message's bytes a
 * pattern of (sender, size, iteration) that the receiver checks in full.
 * Any mismatch aborts the job (non-zero exit).
 *
 * With an argument (the `softrdma` program), each rank at the end runs
 * `softrdma stats PID` on itself, while its device is still open, after
 * printing how many bytes it sent: the caller compares the two. */
#include <mpi.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "check.h"

#define MAXSZ (4u << 20)
#define ITERS 3

static int rank, nranks;
/* Payload bytes this rank handed to MPI to send to another rank. */
static unsigned long long sent;

/* A mismatch ends the whole job, with its place named. */
#define MUST(c, ...)                                                           \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "FAIL rank %d line %d: %s: ", rank,    \
				__LINE__, #c);                                 \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, "\n");                                 \
			MPI_Abort(MPI_COMM_WORLD, 3);                          \
		}                                                              \
	} while (0)

static uint8_t pattern(size_t i, int from, size_t size, int iter)
{
	return (uint8_t)(i * 131 + (i >> 12) + (unsigned)from * 61 + size * 7 +
			 (unsigned)iter * 13 + 1);
}

static void fill(uint8_t *p, size_t n, int from, size_t size, int iter)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(i, from, size, iter);
}

/* Every byte of p[0..n) as `from` filled it; what else is where. */
static void expect(const uint8_t *p, size_t n, int from, size_t size, int iter,
		   const char *what)
{
	for (size_t i = 0; i < n; i++)
		MUST(p[i] == pattern(i, from, size, iter),
		     "%s: size %zu iter %d from %d: byte %zu is %u, not %u",
		     what, size, iter, from, i, p[i],
		     pattern(i, from, size, iter));
}

static const size_t sizes[] = {1,     2,     3,      8,       100,
			       1023,  4096,  4097,   8192,    16385,
			       65536, 65537, 262144, 1u << 20, MAXSZ - 1,
			       MAXSZ};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void pingpong(uint8_t *out, uint8_t *in)
{
	int peer = 1 - rank;
	for (size_t s = 0; s < NSIZES; s++) {
		size_t n = sizes[s];
		for (int it = 0; it < ITERS; it++) {
			MPI_Status st;
			int count;
			memset(in, 0xee, n + 1);
			fill(out, n, rank, n, it);
			if (rank == 0) {
				MPI_Send(out, n, MPI_BYTE, peer, it, MPI_COMM_WORLD);
				MPI_Recv(in, MAXSZ, MPI_BYTE, peer, it,
					 MPI_COMM_WORLD, &st);
			} else {
				MPI_Recv(in, MAXSZ, MPI_BYTE, peer, it,
					 MPI_COMM_WORLD, &st);
				MPI_Send(out, n, MPI_BYTE, peer, it, MPI_COMM_WORLD);
			}
			sent += n;
			MPI_Get_count(&st, MPI_BYTE, &count);
			MUST((size_t)count == n, "ping-pong: %d bytes, not %zu",
			     count, n);
			expect(in, n, peer, n, it, "ping-pong");
			MUST(in[n] == 0xee, "ping-pong: byte past %zu written",
			     n);
		}
	}
}

static void bcast(uint8_t *buf)
{
	static const size_t bs[] = {1, 4096, 65537, 1u << 20, MAXSZ};
	for (size_t s = 0; s < sizeof(bs) / sizeof(bs[0]); s++)
		for (int it = 0; it < ITERS; it++) {
			int root = it % nranks;
			size_t n = bs[s];
			if (rank == root) {
				fill(buf, n, root, n, it);
				sent += n * (nranks - 1);
			} else
				memset(buf, 0, n);
			MPI_Bcast(buf, n, MPI_BYTE, root, MPI_COMM_WORLD);
			expect(buf, n, root, n, it, "bcast");
		}
}

static int64_t contribution(int r, size_t i, int it)
{
	return (int64_t)(i * 2654435761u) ^ ((int64_t)r << 40) ^ (it * 977);
}

static void allreduce(int64_t *in, int64_t *out)
{
	static const size_t cs[] = {1, 1000, 1u << 16, MAXSZ / 8};
	for (size_t s = 0; s < sizeof(cs) / sizeof(cs[0]); s++)
		for (int it = 0; it < ITERS; it++) {
			size_t n = cs[s];
			for (size_t i = 0; i < n; i++)
				in[i] = contribution(rank, i, it);
			memset(out, 0, n * 8);
			MPI_Allreduce(in, out, n, MPI_INT64_T, MPI_SUM,
				      MPI_COMM_WORLD);
			sent += n * 8;
			for (size_t i = 0; i < n; i++) {
				int64_t want = 0;
				for (int r = 0; r < nranks; r++)
					want += contribution(r, i, it);
				MUST(out[i] == want,
				     "allreduce: count %zu iter %d: [%zu] is %lld, not %lld",
				     n, it, i, (long long)out[i],
				     (long long)want);
			}
		}
}

/* The block rank `from` sends rank `to`: a pattern of both. */
static void alltoall(uint8_t *out, uint8_t *in)
{
	static const size_t bs[] = {1, 4096, 65537, MAXSZ / 2};
	for (size_t s = 0; s < sizeof(bs) / sizeof(bs[0]); s++)
		for (int it = 0; it < ITERS; it++) {
			size_t n = bs[s];
			for (int to = 0; to < nranks; to++)
				fill(out + to * n, n, rank, n, it * 16 + to);
			memset(in, 0, n * nranks);
			MPI_Alltoall(out, n, MPI_BYTE, in, n, MPI_BYTE,
				     MPI_COMM_WORLD);
			sent += n * (nranks - 1);
			for (int from = 0; from < nranks; from++)
				expect(in + from * n, n, from, n,
				       it * 16 + rank, "alltoall");
		}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* A barrier waits for the last rank: rank 0 comes 300 ms late, the others
 * may not leave before it. */
static void barrier(void)
{
	for (int it = 0; it < ITERS; it++) {
		MPI_Barrier(MPI_COMM_WORLD);
		double t = now();
		if (rank == 0)
			usleep(300 * 1000);
		MPI_Barrier(MPI_COMM_WORLD);
		double waited = now() - t;
		MUST(waited >= 0.25, "barrier: left after %.3f s, before rank 0",
		     waited);
	}
}

/* Every rank sends to its right and receives from its left, MSGS messages
 * of different tags and sizes in flight at once, completed in any order. */
#define MSGS 8
static void ring(uint8_t *out, uint8_t *in)
{
	int right = (rank + 1) % nranks, left = (rank + nranks - 1) % nranks;
	size_t slot = MAXSZ / MSGS;
	for (int it = 0; it < ITERS; it++) {
		MPI_Request req[2 * MSGS];
		MPI_Status st[2 * MSGS];
		size_t n[MSGS];
		memset(in, 0xee, MAXSZ);
		for (int m = 0; m < MSGS; m++) {
			n[m] = (size_t)1 << (m * 19 / (MSGS - 1));
			if (n[m] > slot)
				n[m] = slot;
			n[m] -= m % 2;
			if (n[m] == 0)
				n[m] = 1;
			MPI_Irecv(in + m * slot, slot, MPI_BYTE, left, m,
				  MPI_COMM_WORLD, &req[m]);
		}
		for (int m = MSGS - 1; m >= 0; m--) {
			fill(out + m * slot, n[m], rank, n[m], it * MSGS + m);
			MPI_Isend(out + m * slot, n[m], MPI_BYTE, right, m,
				  MPI_COMM_WORLD, &req[MSGS + m]);
			sent += n[m];
		}
		MPI_Waitall(2 * MSGS, req, st);
		for (int m = 0; m < MSGS; m++) {
			int count;
			MPI_Get_count(&st[m], MPI_BYTE, &count);
			MUST(st[m].MPI_SOURCE == left && st[m].MPI_TAG == m &&
				     (size_t)count == n[m],
			     "ring: message %d from %d tag %d, %d bytes", m,
			     st[m].MPI_SOURCE, st[m].MPI_TAG, count);
			expect(in + m * slot, n[m], left, n[m], it * MSGS + m,
			       "ring");
			MUST(in[m * slot + n[m]] == 0xee || n[m] == slot,
			     "ring: byte past message %d written", m);
		}
	}
}

static void step(const char *what)
{
	MPI_Barrier(MPI_COMM_WORLD);
	if (rank == 0) {
		OK(what);
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	MUST(nranks == 2, "run with 2 ranks, not %d", nranks);
	uint8_t *out = malloc(MAXSZ * 2 + 1), *in = malloc(MAXSZ * 2 + 1);
	MUST(out && in, "out of memory");

	pingpong(out, in);
	step("pingpong");
	bcast(in);
	step("bcast");
	allreduce((int64_t *)out, (int64_t *)in);
	step("allreduce");
	alltoall(out, in);
	step("alltoall");
	barrier();
	step("barrier");
	ring(out, in);
	step("ring");

	if (argc > 1) {
		/* One rank at a time, its counters published (every 200 ms)
		 * after its last send. */
		for (int r = 0; r < nranks; r++) {
			if (r == rank) {
				char cmd[4096];
				usleep(500 * 1000);
				printf("SENT rank %d bytes %llu\n", rank, sent);
				fflush(stdout);
				snprintf(cmd, sizeof(cmd),
					 "'%s' stats %d | sed 's/^/STATS rank %d /'",
					 argv[1], (int)getpid(), rank);
				MUST(system(cmd) == 0, "%s failed", cmd);
				fflush(stdout);
			}
			MPI_Barrier(MPI_COMM_WORLD);
		}
	}
	free(out);
	free(in);
	MPI_Finalize();
	if (rank == 0)
		OK("done");
	return 0;
}
