/*
 * The collectives other than allreduce, against references computed locally:
 *  - allgather with counts that differ per rank (some zero),
 *  - reducescatter (every dtype x op; the split rule: count/size each, the
 *    first count%size ranks one more),
 *  - alltoall with per-peer counts,
 *  - broadcast from the first and the last rank, barrier,
 *  - process sets: the even ranks, and COMM_WORLD reversed; a non-member is
 *    refused with DCOMM_ERR_INVALID_ARG; collectives on two comms in flight at
 *    once.
 * usage: coll_matrix [allgather|reducescatter|alltoall|broadcast|comms ...]
 * (default: all). Which algorithm runs is up to DCOMM_TUNE.
 */
#include "matrix_util.h"

static const size_t counts[] = {0, 1, 7, 1001, 1000003};
#define NCOUNTS (sizeof(counts) / sizeof(counts[0]))

static int rank, size, failures, cases;

static void fail(const char *what, const char *name, size_t i, double got, double want)
{
    fprintf(stderr, "rank %d: %s '%s': element %zu is %g, want %g\n", rank, what, name, i, got,
            want);
    failures++;
}

/* Elements rank r contributes to an allgather of base count n. */
static size_t ag_count(int r, size_t n)
{
    return r % 2 == 0 ? n : n / 2 + (size_t)r;
}

static void check_allgather(dcomm_comm_t comm, int crank, int csize, const int *world_of,
                            char *send)
{
    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (size_t c = 0; c < NCOUNTS; c++) {
            size_t n = counts[c], mine = ag_count(world_of[crank], n), total, off = 0;
            dcomm_handle_t h;
            const void *data;
            const size_t *rc;
            char name[96];

            if (c == NCOUNTS - 1 && dt != DCOMM_FLOAT32 && dt != DCOMM_UINT8) {
                continue;
            }
            for (size_t i = 0; i < mine; i++) {
                store(send, i, (dcomm_dtype_t)dt,
                      input(world_of[crank], i, (dcomm_dtype_t)dt, DCOMM_SUM));
            }
            snprintf(name, sizeof(name), "ag.%d.%s.%zu", (int)comm, dtype_names[dt], n);
            CHECK_OK(dcomm_allgather_async(comm, name, send, mine, (dcomm_dtype_t)dt, &h));
            CHECK_OK(dcomm_wait(h));
            CHECK_OK(dcomm_result(h, &data, &total, &rc));
            cases++;
            for (int r = 0; r < csize; r++) {
                size_t want_n = ag_count(world_of[r], n);

                if (rc[r] != want_n) {
                    fprintf(stderr, "rank %d: %s: rank %d count %zu, want %zu\n", rank, name, r,
                            rc[r], want_n);
                    failures++;
                    break;
                }
                for (size_t i = 0; i < want_n; i++) {
                    double want = input(world_of[r], i, (dcomm_dtype_t)dt, DCOMM_SUM);
                    double got = load(data, off + i, (dcomm_dtype_t)dt);

                    if (got != want) {
                        fail("allgather", name, off + i, got, want);
                        break;
                    }
                }
                off += want_n;
            }
            if (off != total) {
                fprintf(stderr, "rank %d: %s: total %zu, want %zu\n", rank, name, total, off);
                failures++;
            }
            CHECK_OK(dcomm_release(h));
        }
    }
}

static void check_reducescatter(dcomm_comm_t comm, int crank, int csize, char *send)
{
    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (int op = 0; op < DCOMM_OP_COUNT; op++) {
            if (op == DCOMM_AVG && dt < DCOMM_FLOAT16) {
                continue;
            }
            for (size_t c = 0; c < NCOUNTS; c++) {
                size_t n = counts[c], base = n / (size_t)csize, extra = n % (size_t)csize;
                size_t off = (size_t)crank * base + ((size_t)crank < extra ? (size_t)crank : extra);
                size_t len = base + ((size_t)crank < extra), total;
                dcomm_handle_t h;
                const void *data;
                const size_t *rc;
                char name[96];

                if (c == NCOUNTS - 1 && op != DCOMM_SUM) {
                    continue;
                }
                for (size_t i = 0; i < n; i++) {
                    store(send, i, (dcomm_dtype_t)dt,
                          input(crank, i, (dcomm_dtype_t)dt, (dcomm_op_t)op));
                }
                snprintf(name, sizeof(name), "rs.%d.%s.%s.%zu", (int)comm, dtype_names[dt],
                         op_names[op], n);
                CHECK_OK(dcomm_reducescatter_async(comm, name, send, n, (dcomm_dtype_t)dt,
                                                   (dcomm_op_t)op, &h));
                CHECK_OK(dcomm_wait(h));
                CHECK_OK(dcomm_result(h, &data, &total, &rc));
                cases++;
                if (total != len || rc[crank] != len) {
                    fprintf(stderr, "rank %d: %s: %zu elements, want %zu\n", rank, name, total,
                            len);
                    failures++;
                }
                for (size_t i = 0; i < len && total == len; i++) {
                    double want = reference(csize, off + i, (dcomm_dtype_t)dt, (dcomm_op_t)op);
                    double got = load(data, i, (dcomm_dtype_t)dt);

                    if (!(fabs(got - want) <=
                          tolerance((dcomm_dtype_t)dt, (dcomm_op_t)op, want))) {
                        fail("reducescatter", name, off + i, got, want);
                        break;
                    }
                }
                CHECK_OK(dcomm_release(h));
            }
        }
    }
}

/* Elements rank s sends to rank d in an alltoall of base count n, and the
 * value of element i: small, exact in every dtype. */
static size_t a2a_count(int s, int d, size_t n)
{
    return n == 0 ? 0 : (n + (size_t)s + 2 * (size_t)d) % (n + 3);
}

static double a2a_value(int s, int d, size_t i)
{
    return (double)((s * 7 + d * 3 + (int)(i % 89)) % 97);
}

static void check_alltoall(dcomm_comm_t comm, int crank, int csize, char *send)
{
    size_t *sc = calloc((size_t)csize, sizeof(size_t));

    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (size_t c = 0; c < NCOUNTS - 1; c++) {
            size_t n = counts[c], off = 0, total;
            dcomm_handle_t h;
            const void *data;
            const size_t *rc;
            char name[96];

            for (int d = 0; d < csize; d++) {
                sc[d] = a2a_count(crank, d, n);
                for (size_t i = 0; i < sc[d]; i++) {
                    store(send, off + i, (dcomm_dtype_t)dt, a2a_value(crank, d, i));
                }
                off += sc[d];
            }
            snprintf(name, sizeof(name), "a2a.%d.%s.%zu", (int)comm, dtype_names[dt], n);
            CHECK_OK(dcomm_alltoall_async(comm, name, send, sc, (dcomm_dtype_t)dt, &h));
            CHECK_OK(dcomm_wait(h));
            CHECK_OK(dcomm_result(h, &data, &total, &rc));
            cases++;
            off = 0;
            for (int s = 0; s < csize; s++) {
                size_t want_n = a2a_count(s, crank, n);

                if (rc[s] != want_n) {
                    fprintf(stderr, "rank %d: %s: %zu elements from rank %d, want %zu\n", rank,
                            name, rc[s], s, want_n);
                    failures++;
                    break;
                }
                for (size_t i = 0; i < want_n; i++) {
                    double got = load(data, off + i, (dcomm_dtype_t)dt);

                    if (got != a2a_value(s, crank, i)) {
                        fail("alltoall", name, off + i, got, a2a_value(s, crank, i));
                        break;
                    }
                }
                off += want_n;
            }
            CHECK_OK(dcomm_release(h));
        }
    }
    free(sc);
}

static void check_broadcast(dcomm_comm_t comm, int crank, int csize, char *buf)
{
    int roots[2] = {0, csize - 1};

    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (size_t c = 0; c < NCOUNTS; c++) {
            for (int k = 0; k < 2; k++) {
                size_t n = counts[c];
                char name[96];

                if (c == NCOUNTS - 1 && dt != DCOMM_FLOAT64) {
                    continue;
                }
                for (size_t i = 0; i < n; i++) {
                    store(buf, i, (dcomm_dtype_t)dt,
                          crank == roots[k] ? input(roots[k], i, (dcomm_dtype_t)dt, DCOMM_SUM)
                                            : 99);
                }
                snprintf(name, sizeof(name), "bc.%d.%s.%zu.%d", (int)comm, dtype_names[dt], n,
                         roots[k]);
                CHECK_OK(dcomm_broadcast(comm, name, buf, n, (dcomm_dtype_t)dt, roots[k]));
                cases++;
                for (size_t i = 0; i < n; i++) {
                    double want = input(roots[k], i, (dcomm_dtype_t)dt, DCOMM_SUM);

                    if (load(buf, i, (dcomm_dtype_t)dt) != want) {
                        fail("broadcast", name, i, load(buf, i, (dcomm_dtype_t)dt), want);
                        break;
                    }
                }
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(dcomm_barrier(comm));
        cases++;
    }
}

/* Process sets: the even ranks, and the world reversed; two comms in flight. */
static void check_comms(char *send, char *recv)
{
    int neven = (size + 1) / 2, *even = malloc(sizeof(int) * (size_t)neven);
    int *rev = malloc(sizeof(int) * (size_t)size);
    dcomm_comm_t ce, cr;
    dcomm_handle_t h1 = 0, h2 = 0;
    float *a = (float *)send, *b = (float *)recv;
    size_t n = 100003;

    for (int i = 0; i < neven; i++) {
        even[i] = 2 * i;
    }
    for (int i = 0; i < size; i++) {
        rev[i] = size - 1 - i;
    }
    CHECK_OK(dcomm_comm_create(even, neven, &ce));
    CHECK_OK(dcomm_comm_create(rev, size, &cr));
    if (dcomm_comm_size(ce) != neven || dcomm_comm_rank(ce) != (rank % 2 ? -1 : rank / 2) ||
        dcomm_comm_size(cr) != size || dcomm_comm_rank(cr) != size - 1 - rank) {
        fprintf(stderr, "rank %d: comm rank/size wrong: even %d/%d, reversed %d/%d\n", rank,
                dcomm_comm_rank(ce), dcomm_comm_size(ce), dcomm_comm_rank(cr),
                dcomm_comm_size(cr));
        failures++;
    }
    /* Two comms in flight at once. */
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)(rank + 1);
        b[i] = (float)(rank * 2);
    }
    if (rank % 2 == 0) {
        CHECK_OK(dcomm_allreduce_async(ce, "even.sum", a, a, n, DCOMM_FLOAT32, DCOMM_SUM, &h1));
    } else {
        dcomm_status_t s = dcomm_allreduce_async(ce, "even.sum", a, a, n, DCOMM_FLOAT32,
                                                 DCOMM_SUM, &h1);
        if (s != DCOMM_ERR_INVALID_ARG) {
            fprintf(stderr, "rank %d: a non-member's allreduce gave %d, want INVALID_ARG\n", rank,
                    s);
            failures++;
        }
    }
    CHECK_OK(dcomm_allreduce_async(cr, "rev.max", b, b, n, DCOMM_FLOAT32, DCOMM_MAX, &h2));
    if (rank % 2 == 0) {
        float want = (float)(neven * neven); /* sum of 2i+1 over i < neven */

        CHECK_OK(dcomm_wait(h1));
        CHECK_OK(dcomm_release(h1));
        for (size_t i = 0; i < n; i++) {
            if (a[i] != want) {
                fail("allreduce on even ranks", "even.sum", i, a[i], want);
                break;
            }
        }
    }
    CHECK_OK(dcomm_wait(h2));
    CHECK_OK(dcomm_release(h2));
    for (size_t i = 0; i < n; i++) {
        if (b[i] != (float)(2 * (size - 1))) {
            fail("allreduce on reversed world", "rev.max", i, b[i], 2.0 * (size - 1));
            break;
        }
    }
    cases += 2;
    /* Every collective on the sub-comms. */
    if (rank % 2 == 0) {
        check_allgather(ce, rank / 2, neven, even, send);
        check_broadcast(ce, rank / 2, neven, send);
    }
    check_reducescatter(cr, size - 1 - rank, size, send);
    check_alltoall(cr, size - 1 - rank, size, send);
    /* Bad calls. */
    if (dcomm_comm_destroy(DCOMM_COMM_WORLD) != DCOMM_ERR_INVALID_ARG ||
        dcomm_comm_destroy(77) != DCOMM_ERR_INVALID_ARG ||
        dcomm_comm_create((int[]){0, 0}, 2, &(dcomm_comm_t){0}) != DCOMM_ERR_INVALID_ARG ||
        dcomm_comm_create((int[]){size}, 1, &(dcomm_comm_t){0}) != DCOMM_ERR_INVALID_ARG) {
        fprintf(stderr, "rank %d: a bad comm call was not refused\n", rank);
        failures++;
    }
    CHECK_OK(dcomm_comm_destroy(ce));
    CHECK_OK(dcomm_comm_destroy(cr));
    if (dcomm_comm_size(ce) != -1) {
        fprintf(stderr, "rank %d: a destroyed comm still has a size\n", rank);
        failures++;
    }
    free(even);
    free(rev);
}

static int wanted(int argc, char **argv, const char *what)
{
    if (argc < 2) {
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], what) == 0) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t maxbytes = 8 * (counts[NCOUNTS - 1] + 64) * 5;
    char *send = malloc(maxbytes), *recv = malloc(maxbytes);
    int *world;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    world = malloc(sizeof(int) * (size_t)size);
    for (int r = 0; r < size; r++) {
        world[r] = r;
    }
    if (wanted(argc, argv, "allgather")) {
        check_allgather(DCOMM_COMM_WORLD, rank, size, world, send);
    }
    if (wanted(argc, argv, "reducescatter")) {
        check_reducescatter(DCOMM_COMM_WORLD, rank, size, send);
    }
    if (wanted(argc, argv, "alltoall")) {
        check_alltoall(DCOMM_COMM_WORLD, rank, size, send);
    }
    if (wanted(argc, argv, "broadcast")) {
        check_broadcast(DCOMM_COMM_WORLD, rank, size, send);
    }
    if (wanted(argc, argv, "comms")) {
        check_comms(send, recv);
    }
    {
        int64_t f = failures, total = 0;

        CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "failures", &f, &total, 1, DCOMM_INT64,
                                 DCOMM_SUM));
        if (rank == 0) {
            printf("collective matrix: %d cases on %d ranks, %lld failures on all ranks\n",
                   cases, size, (long long)total);
        }
        failures = total != 0;
    }
    CHECK_OK(dcomm_shutdown());
    free(world);
    free(send);
    free(recv);
    return failures ? 1 : 0;
}
