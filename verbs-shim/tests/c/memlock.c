/* Pinned registration against RLIMIT_MEMLOCK, as ib_umem_get charges it:
 * the pages of the process's pinned MRs count, ODP MRs do not, and
 * CAP_IPC_LOCK exempts. Run with an 8 MiB limit (prlimit --memlock=8388608):
 *   memlock limited   without CAP_IPC_LOCK (setpriv to nobody): 16 MiB
 *                     pinned fails ENOMEM, 4 + 4 MiB fit, one more page
 *                     fails, and fits again once an MR is deregistered;
 *                     64 MiB of ODP (explicit and implicit) registers;
 *   memlock exempt    with CAP_IPC_LOCK (root): 16 MiB pinned registers.
 * Prints "memlock: ok" when every expectation held. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <infiniband/verbs.h>

#define MiB (1024UL * 1024)
#define CHECK(c, ...)                                                   \
    do {                                                                \
        if (!(c)) {                                                     \
            fprintf(stderr, "memlock: %s:%d: ", __FILE__, __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                               \
            fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno)); \
            exit(1);                                                    \
        }                                                               \
    } while (0)

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap %zu", len);
    return p;
}

static const int RW = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

int main(int argc, char **argv)
{
    CHECK(argc == 2 && (!strcmp(argv[1], "limited") || !strcmp(argv[1], "exempt")),
          "usage: memlock limited|exempt");
    int limited = !strcmp(argv[1], "limited");
    struct ibv_device **list = ibv_get_device_list(NULL);
    CHECK(list && list[0], "no device");
    struct ibv_context *ctx = ibv_open_device(list[0]);
    CHECK(ctx, "open");
    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    CHECK(pd, "alloc_pd");
    char *big = map(16 * MiB);

    errno = 0;
    struct ibv_mr *mr = ibv_reg_mr(pd, big, 16 * MiB, RW);
    if (!limited) {
        CHECK(mr, "16 MiB pinned with CAP_IPC_LOCK");
        CHECK(!ibv_dereg_mr(mr), "dereg");
        puts("memlock: ok");
        return 0;
    }
    CHECK(!mr && errno == ENOMEM, "16 MiB pinned past an 8 MiB limit: mr %p", (void *)mr);

    struct ibv_mr *a = ibv_reg_mr(pd, big, 4 * MiB, RW);
    CHECK(a, "first 4 MiB pinned");
    struct ibv_mr *b = ibv_reg_mr(pd, big + 4 * MiB, 4 * MiB, RW);
    CHECK(b, "second 4 MiB pinned (8 MiB: the limit exactly)");
    errno = 0;
    struct ibv_mr *c = ibv_reg_mr(pd, big + 8 * MiB, 4096, RW);
    CHECK(!c && errno == ENOMEM, "one page past the limit: mr %p", (void *)c);
    CHECK(!ibv_dereg_mr(b), "dereg");
    c = ibv_reg_mr(pd, big + 8 * MiB, 4 * MiB, RW);
    CHECK(c, "4 MiB pinned once the other 4 MiB was deregistered");

    char *odp = map(64 * MiB);
    struct ibv_mr *o = ibv_reg_mr(pd, odp, 64 * MiB, RW | IBV_ACCESS_ON_DEMAND);
    CHECK(o, "64 MiB ODP with 8 MiB pinned at an 8 MiB limit");
    struct ibv_mr *imp = ibv_reg_mr(pd, NULL, SIZE_MAX, RW | IBV_ACCESS_ON_DEMAND);
    CHECK(imp, "implicit ODP");
    /* The device faults all of it in: nothing is charged for that either. */
    CHECK(!ibv_advise_mr(pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH,
                         &(struct ibv_sge){.addr = (uintptr_t)odp, .length = 64 * MiB, .lkey = o->lkey}, 1),
          "prefetch 64 MiB of ODP");

    CHECK(!ibv_dereg_mr(imp) && !ibv_dereg_mr(o) && !ibv_dereg_mr(c) && !ibv_dereg_mr(a), "dereg");
    CHECK(!ibv_dealloc_pd(pd) && !ibv_close_device(ctx), "close");
    ibv_free_device_list(list);
    puts("memlock: ok");
    return 0;
}
