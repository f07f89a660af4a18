/*
 * Hierarchical allgather(v) on threads-as-ranks (coll_harness over shm) with
 * the ranks split into pretend hosts through ctx->host_of: 2x2 (comm ranks
 * rotated too), 2x3 interleaved, 3+1 and 1+2+3 ranks per host. Per-rank counts
 * differ (zeros included, and every block empty), for 1-, 2-, 4- and 8-byte
 * dtypes, in place and out of place; the result must equal every rank's
 * pattern in rank order, and the bytes after it must stay untouched.
 * supported() must decline one host and missing counts; DCOMM_TUNE must be
 * able to force it; the cost model must prefer it for small messages over 2
 * hosts x 2 ranks on tcp and call it inapplicable on one host or with one
 * rank per host.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coll_harness.h"
#include "dc_reduce.h"
#include "select.h"

#define MAX_BLOCK (300u * 1000u) /* elements: several chain pieces for 8-byte types */
#define GUARD     64
#define GUARD_BYTE 0xA5

typedef struct agh_case {
    int np;
    int host_of[COLL_MAX_RANKS]; /* world rank -> pretend host */
    int nhosts;
} agh_case_t;

static const dcomm_dtype_t dtypes[] = {DCOMM_INT8, DCOMM_FLOAT16, DCOMM_FLOAT32, DCOMM_FLOAT64};

/* Per-rank counts of pattern k for world rank w: equal, uneven, zeros on odd
 * ranks, all empty, one big block. */
static size_t count_of(int k, int w)
{
    switch (k) {
    case 0: return 5;
    case 1: return 1 + (size_t)w * 37;
    case 2: return w % 2 ? 0 : 1000 + (size_t)w;
    case 3: return 0;
    default: return w == 1 ? MAX_BLOCK : (size_t)w * 3;
    }
}
#define NPATTERNS 5

static unsigned char byte_of(int w, size_t j)
{
    return (unsigned char)(w * 31 + j * 7 + (j >> 8));
}

static int one_case(coll_rank_t *rk, char *send, char *recv, dcomm_dtype_t dt, int pattern,
                    int in_place)
{
    size_t esize = dc_reduce_dtype_size(dt), counts[COLL_MAX_RANKS], total = 0, my_off = 0;
    int me = rk->ranks[rk->rank];
    dc_coll_args_t args = {.recvbuf = recv, .dtype = dt, .counts = counts};

    for (int c = 0; c < rk->size; c++) {
        counts[c] = count_of(pattern, rk->ranks[c]);
        my_off += c < rk->rank ? counts[c] : 0;
        total += counts[c];
    }
    memset(recv, GUARD_BYTE, total * esize + GUARD);
    args.sendbuf = in_place ? recv + my_off * esize : send;
    for (size_t j = 0; j < counts[rk->rank] * esize; j++) {
        ((unsigned char *)args.sendbuf)[j] = byte_of(me, j);
    }
    if (dc_allgather_hier_algo.run(&rk->ctx, &args) != DCOMM_OK) {
        fprintf(stderr, "rank %d: hier allgather failed: %s\n", me, dc_error_get());
        return -1;
    }
    for (int c = 0, off = 0; c < rk->size; off += (int)(counts[c] * esize), c++) {
        for (size_t j = 0; j < counts[c] * esize; j++) {
            if ((unsigned char)recv[off + j] != byte_of(rk->ranks[c], j)) {
                fprintf(stderr, "rank %d dtype %d pattern %d in_place %d: block %d byte %zu "
                        "wrong\n", me, (int)dt, pattern, in_place, c, j);
                return -1;
            }
        }
    }
    for (size_t j = 0; j < GUARD; j++) {
        if ((unsigned char)recv[total * esize + j] != GUARD_BYTE) {
            fprintf(stderr, "rank %d: wrote past the result (pattern %d)\n", me, pattern);
            return -1;
        }
    }
    return coll_world_sync(rk);
}

static int rank_main(coll_rank_t *rk, void *arg)
{
    const agh_case_t *ac = arg;
    size_t bytes = (MAX_BLOCK + 1000 * COLL_MAX_RANKS) * 8 + GUARD;
    char *send = malloc(bytes), *recv = malloc(bytes);
    int rc = send && recv ? 0 : -1;

    for (int c = 0; c < rk->size; c++) {
        rk->host_of[c] = ac->host_of[rk->ranks[c]];
    }
    rk->ctx.host_of = rk->host_of;
    rk->ctx.nhosts = ac->nhosts;
    rk->ctx.tag = 9;
    for (size_t d = 0; rc == 0 && d < DC_ARRAY_SIZE(dtypes); d++) {
        dc_coll_args_t probe = {.dtype = dtypes[d], .counts = (size_t[COLL_MAX_RANKS]){0}};

        if (!dc_allgather_hier_algo.supported(&rk->ctx, &probe)) {
            fprintf(stderr, "hier allgather declined a comm over %d hosts\n", ac->nhosts);
            rc = -1;
        }
        for (int p = 0; rc == 0 && p < NPATTERNS; p++) {
            for (int ip = 0; rc == 0 && ip < 2; ip++) {
                rc = one_case(rk, send, recv, dtypes[d], p, ip);
            }
        }
    }
    if (rc != 0) {
        coll_world_abort(rk->world);
    }
    free(send);
    free(recv);
    return rc;
}

static void run_case(const agh_case_t *ac, int shift)
{
    coll_world_t *w;

    assert_int_equal(coll_world_open(ac->np, "shm", 4u << 20, shift, &w), 0);
    assert_int_equal(coll_world_run(w, rank_main, (void *)ac), 0);
    coll_world_close(w);
}

static void test_2x2(void **state)
{
    agh_case_t ac = {.np = 4, .host_of = {0, 0, 1, 1}, .nhosts = 2};

    (void)state;
    run_case(&ac, 0);
    run_case(&ac, 1); /* comm ranks rotated against world ranks: hosts interleave */
}

static void test_2x3_interleaved(void **state)
{
    agh_case_t ac = {.np = 6, .host_of = {0, 1, 0, 1, 0, 1}, .nhosts = 2};

    (void)state;
    run_case(&ac, 0);
}

static void test_uneven_hosts(void **state)
{
    agh_case_t three_one = {.np = 4, .host_of = {0, 0, 1, 0}, .nhosts = 2};
    agh_case_t one_two_three = {.np = 6, .host_of = {0, 1, 1, 2, 2, 2}, .nhosts = 3};

    (void)state;
    run_case(&three_one, 0);
    run_case(&one_two_three, 2);
}

static void test_declines(void **state)
{
    int ranks[4] = {0, 1, 2, 3}, one[4] = {0}, two[4] = {0, 0, 1, 1};
    size_t counts[4] = {1, 2, 3, 4};
    dc_coll_ctx_t ctx = {.rank = 0, .size = 4, .ranks = ranks, .host_of = one, .nhosts = 1};
    dc_coll_args_t args = {.dtype = DCOMM_FLOAT32, .counts = counts};

    (void)state;
    assert_false(dc_allgather_hier_algo.supported(&ctx, &args));
    ctx.host_of = NULL;
    ctx.nhosts = 2;
    assert_false(dc_allgather_hier_algo.supported(&ctx, &args));
    ctx.host_of = two;
    assert_true(dc_allgather_hier_algo.supported(&ctx, &args));
    args.counts = NULL;
    assert_false(dc_allgather_hier_algo.supported(&ctx, &args));
    /* run() called anyway on one host fails cleanly instead of misbehaving. */
    ctx.host_of = one;
    ctx.nhosts = 1;
    args.counts = counts;
    assert_int_equal(dc_allgather_hier_algo.run(&ctx, &args), DCOMM_ERR_INTERNAL);
}

static void test_select(void **state)
{
    static const dc_algo_row_t hier = {DC_COLL_ALLGATHER, &dc_allgather_hier_algo};
    static const dc_algo_row_t ring = {DC_COLL_ALLGATHER, &dc_allgather_ring_algo};
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    dc_select_t *sel;
    int n;

    (void)state;
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    n = dc_select_candidates(sel, DC_COLL_ALLGATHER, 4096, 4, 2, DC_LINK_TCP, out,
                             DC_SELECT_MAX_ROWS);
    assert_true(n >= 1);
    assert_string_equal(out[0]->name, "hier");
    n = dc_select_candidates(sel, DC_COLL_ALLGATHER, 4096, 4, 1, DC_LINK_SHM, out,
                             DC_SELECT_MAX_ROWS);
    for (int i = 0; i < n; i++) {
        assert_string_not_equal(out[i]->name, "hier");
    }
    assert_true(isinf(dc_select_predict(sel, &hier, 4096, 4, 1, DC_LINK_SHM)));
    assert_true(isinf(dc_select_predict(sel, &hier, 4096, 2, 2, DC_LINK_TCP)));
    assert_true(dc_select_predict(sel, &hier, 4096, 8, 2, DC_LINK_TCP) <
                dc_select_predict(sel, &ring, 4096, 8, 2, DC_LINK_TCP));
    dc_select_destroy(sel);

    /* Forced, it comes first whatever the model says (even on one host). */
    assert_int_equal(dc_select_create("allgather:0-inf:hier", &sel), DCOMM_OK);
    n = dc_select_candidates(sel, DC_COLL_ALLGATHER, 64u << 20, 4, 1, DC_LINK_SHM, out,
                             DC_SELECT_MAX_ROWS);
    assert_true(n >= 2);
    assert_string_equal(out[0]->name, "hier");
    dc_select_destroy(sel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declines),     cmocka_unit_test(test_select),
        cmocka_unit_test(test_2x2),          cmocka_unit_test(test_2x3_interleaved),
        cmocka_unit_test(test_uneven_hosts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
