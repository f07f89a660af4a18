/*
 * Deadlock detection (DCOMM_DEADLOCK_TIMEOUT, default 5 s).
 *
 * "cross": rank 1 blocks in an allreduce of 'b', every other rank in one of
 * 'a': no tensor can ever complete. Every rank's call must fail with
 * DCOMM_ERR_MISMATCH naming each rank's wait, after the grace time and within
 * it plus 2 s; then the ranks submit matching tensors and succeed. Done twice:
 * first with new names (rank 0's negotiation table holds them), then with
 * names the response cache knows (the fast path, where rank 0 sees nothing of
 * the submissions but the wait reports). Then through dcomm_wait with a
 * pending tensor nobody waits on, which must not fail (cross_async).
 *
 * "slow": rank 1 computes (sleeps) for grace + 2 s before it submits 'a',
 * while the others wait on 'a': no rank may fail, the allreduce succeeds
 * (twice: new name, cached name). With 3 ranks or more, then a chain: rank 0
 * waits on 'a', rank 1 waits on 'c' of comm {1,2}, rank 2 computes for
 * grace + 2 s before it submits 'c', then 'a': rank 1's wait ends, so rank
 * 0's can, and nothing may fail.
 *
 * usage: deadlock cross|slow [GRACE_SECONDS]
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rank_util.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(int rank, const char *what)
{
    fprintf(stderr, "rank %d: FAIL: %s\n", rank, what);
    exit(1);
}

/* Every rank allreduces 'a' and 'b' (rank + 1 in every element): the names
 * the deadlock failed are free again and complete. */
static void matching(int rank, int size)
{
    float a[8], b[8], want = (float)(size * (size + 1) / 2);
    dcomm_handle_t ha, hb;

    for (int i = 0; i < 8; i++) {
        a[i] = b[i] = (float)(rank + 1);
    }
    CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "a", a, a, 8, DCOMM_FLOAT32, DCOMM_SUM,
                                   &ha));
    CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "b", b, b, 8, DCOMM_FLOAT32, DCOMM_SUM,
                                   &hb));
    CHECK_OK(dcomm_wait(ha));
    CHECK_OK(dcomm_wait(hb));
    CHECK_OK(dcomm_release(ha));
    CHECK_OK(dcomm_release(hb));
    for (int i = 0; i < 8; i++) {
        if (a[i] != want || b[i] != want) {
            fail(rank, "matching allreduce after the deadlock gave a wrong sum");
        }
    }
}

static void cross(int rank, int size, double grace, const char *round)
{
    float x[8] = {0};
    const char *mine = rank == 1 ? "b" : "a";
    char expect[64];
    double t0 = now_s(), dt;
    dcomm_status_t s;

    s = dcomm_allreduce(DCOMM_COMM_WORLD, mine, x, x, 8, DCOMM_FLOAT32, DCOMM_SUM);
    dt = now_s() - t0;
    printf("rank %d: %s: allreduce '%s' returned %s after %.2f s: %s\n", rank, round, mine,
           dcomm_status_string(s), dt, s < 0 ? dcomm_last_error() : "");
    fflush(stdout);
    if (s != DCOMM_ERR_MISMATCH) {
        fail(rank, "expected DCOMM_ERR_MISMATCH");
    }
    if (strstr(dcomm_last_error(), "deadlock") == NULL) {
        fail(rank, "the message does not say deadlock");
    }
    for (int r = 0; r < size; r++) {
        snprintf(expect, sizeof(expect), "rank %d waits on '%s' (allreduce", r,
                 r == 1 ? "b" : "a");
        if (strstr(dcomm_last_error(), expect) == NULL) {
            fprintf(stderr, "rank %d: missing \"%s\"\n", rank, expect);
            fail(rank, "the message does not name every rank's wait");
        }
    }
    if (dt < grace - 0.2 || dt > grace + 2.0) {
        fail(rank, "detection outside [grace, grace + 2 s]");
    }
}

/* The same through dcomm_wait on async handles, other collectives, and a
 * pending tensor nobody waits on: rank 1 submits 'p' (not waited) and 'b' and
 * waits on 'b'; the others wait on a broadcast 'c'. The waits fail; 'p' is
 * not failed and completes once the others submit it too. */
static void cross_async(int rank, int size, double grace)
{
    float x[8] = {0}, p[8];
    dcomm_handle_t h, hp = 0;
    char expect[64];
    double t0 = now_s(), dt;
    dcomm_status_t s;

    for (int i = 0; i < 8; i++) {
        p[i] = 1.0f;
    }
    if (rank == 1) {
        CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "p", p, p, 8, DCOMM_FLOAT32,
                                       DCOMM_SUM, &hp));
        CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "b", x, x, 8, DCOMM_FLOAT32,
                                       DCOMM_SUM, &h));
    } else {
        CHECK_OK(dcomm_broadcast_async(DCOMM_COMM_WORLD, "c", x, 8, DCOMM_FLOAT32, 0, &h));
    }
    s = dcomm_wait(h);
    dt = now_s() - t0;
    printf("rank %d: async: wait returned %s after %.2f s: %s\n", rank, dcomm_status_string(s),
           dt, s < 0 ? dcomm_last_error() : "");
    fflush(stdout);
    if (s != DCOMM_ERR_MISMATCH || strstr(dcomm_last_error(), "deadlock") == NULL ||
        strstr(dcomm_last_error(), "'p'") != NULL) {
        fail(rank, "expected DCOMM_ERR_MISMATCH for a deadlock, not naming 'p'");
    }
    for (int r = 0; r < size; r++) {
        snprintf(expect, sizeof(expect), "rank %d waits on '%s' (%s", r, r == 1 ? "b" : "c",
                 r == 1 ? "allreduce" : "broadcast");
        if (strstr(dcomm_last_error(), expect) == NULL) {
            fprintf(stderr, "rank %d: missing \"%s\"\n", rank, expect);
            fail(rank, "the message does not name every rank's wait");
        }
    }
    if (dt < grace - 0.2 || dt > grace + 2.0) {
        fail(rank, "detection outside [grace, grace + 2 s]");
    }
    CHECK_OK(dcomm_release(h));
    if (rank != 1) {
        CHECK_OK(dcomm_allreduce_async(DCOMM_COMM_WORLD, "p", p, p, 8, DCOMM_FLOAT32,
                                       DCOMM_SUM, &hp));
    }
    CHECK_OK(dcomm_wait(hp));
    CHECK_OK(dcomm_release(hp));
    if (p[0] != (float)size) {
        fail(rank, "the pending tensor 'p' gave a wrong sum");
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "cross";
    double grace = argc > 2 ? atof(argv[2]) : 5.0;
    int rank, size;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    if (size < 2) {
        fail(rank, "needs at least 2 ranks");
    }
    if (strcmp(mode, "cross") == 0) {
        cross(rank, size, grace, "new names");
        matching(rank, size);
        cross(rank, size, grace, "cached names");
        matching(rank, size);
        cross_async(rank, size, grace);
    } else if (strcmp(mode, "slow") == 0) {
        float x[8];
        double t0 = now_s();

        for (int i = 0; i < 8; i++) {
            x[i] = (float)(rank + 1);
        }
        if (rank == 1) {
            usleep((useconds_t)((grace + 2.0) * 1e6));
        }
        CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "a", x, x, 8, DCOMM_FLOAT32, DCOMM_SUM));
        printf("rank %d: slow: allreduce 'a' succeeded after %.2f s\n", rank, now_s() - t0);
        if (x[0] != (float)(size * (size + 1) / 2)) {
            fail(rank, "wrong sum");
        }
        /* Once more with the name cached: the fast path. */
        t0 = now_s();
        if (rank == 1) {
            usleep((useconds_t)((grace + 2.0) * 1e6));
        }
        CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "a", x, x, 8, DCOMM_FLOAT32, DCOMM_SUM));
        printf("rank %d: slow: cached allreduce 'a' succeeded after %.2f s\n", rank,
               now_s() - t0);
        if (size >= 3) {
            int pair[2] = {1, 2};
            float y[8] = {1, 1, 1, 1, 1, 1, 1, 1};
            dcomm_comm_t sub;

            CHECK_OK(dcomm_comm_create(pair, 2, &sub));
            t0 = now_s();
            if (rank == 1 || rank == 2) {
                if (rank == 2) {
                    usleep((useconds_t)((grace + 2.0) * 1e6));
                }
                CHECK_OK(dcomm_allreduce(sub, "c", y, y, 8, DCOMM_FLOAT32, DCOMM_SUM));
                if (y[0] != 2.0f) {
                    fail(rank, "wrong sum of 'c'");
                }
            }
            CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "a2", x, x, 8, DCOMM_FLOAT32,
                                     DCOMM_SUM));
            printf("rank %d: chain: allreduce 'a2' succeeded after %.2f s\n", rank,
                   now_s() - t0);
            CHECK_OK(dcomm_comm_destroy(sub));
        }
    } else {
        fail(rank, "unknown mode");
    }
    CHECK_OK(dcomm_barrier(DCOMM_COMM_WORLD));
    fflush(stdout);
    CHECK_OK(dcomm_shutdown());
    return 0;
}
