/*
 * Hierarchical allreduce on threads-as-ranks (coll_harness over shm) with the
 * ranks split into pretend hosts through ctx->host_of: 2x2, 2x3 and 3x2 ranks
 * (hosts x ranks per host), interleaved host numbering too; float32/int32/
 * float16 with SUM, AVG, MAX and PROD, counts 0 to 1<<18, in and out of place.
 * Results must equal a local reference (inputs are small integers, so sums are
 * exact in any order) and be bit-identical on every rank. supported() must
 * decline one host and uneven hosts; the cost model must prefer hier for big
 * messages over 2 hosts x 2 ranks on tcp and call it inapplicable on 1 host.
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

#define MAX_COUNT (1u << 18)

typedef struct hier_case {
    int np;
    int host_of[COLL_MAX_RANKS]; /* world rank -> pretend host */
    int nhosts;
} hier_case_t;

static const struct {
    dcomm_dtype_t dtype;
    dcomm_op_t op;
} reductions[] = {{DCOMM_FLOAT32, DCOMM_SUM}, {DCOMM_FLOAT32, DCOMM_AVG},
                  {DCOMM_INT32, DCOMM_MAX},   {DCOMM_FLOAT16, DCOMM_SUM},
                  {DCOMM_INT32, DCOMM_PROD}};
static const size_t counts[] = {0, 1, 7, 1001, MAX_COUNT};

/* Small integers, so every reduction order gives the same exact result. */
static double value(int rank, size_t i, dcomm_op_t op)
{
    if (op == DCOMM_PROD) {
        return (double)((rank + (int)i) % 3 == 0 ? 2 : 1);
    }
    return (double)((int)((rank * 7 + (int)i * 3) % 11) - 5);
}

static void put(void *buf, size_t i, dcomm_dtype_t dt, double v)
{
    if (dt == DCOMM_FLOAT32) {
        ((float *)buf)[i] = (float)v;
    } else if (dt == DCOMM_INT32) {
        ((int32_t *)buf)[i] = (int32_t)v;
    } else {
        ((uint16_t *)buf)[i] = dc_float_to_half((float)v);
    }
}

static double get(const void *buf, size_t i, dcomm_dtype_t dt)
{
    if (dt == DCOMM_FLOAT32) {
        return ((const float *)buf)[i];
    }
    if (dt == DCOMM_INT32) {
        return ((const int32_t *)buf)[i];
    }
    return dc_half_to_float(((const uint16_t *)buf)[i]);
}

static double expected(int np, size_t i, dcomm_op_t op)
{
    double acc = value(0, i, op);

    for (int r = 1; r < np; r++) {
        double v = value(r, i, op);

        acc = op == DCOMM_MAX ? fmax(acc, v) : op == DCOMM_PROD ? acc * v : acc + v;
    }
    return op == DCOMM_AVG ? acc / np : acc;
}

static int one_case(coll_rank_t *rk, char *send, char *recv, dcomm_dtype_t dt, dcomm_op_t op,
                    size_t count, int in_place)
{
    size_t esize = dc_reduce_dtype_size(dt);
    int me = rk->ranks[rk->rank];
    dc_coll_args_t args = {.sendbuf = send, .recvbuf = in_place ? send : recv, .count = count,
                           .dtype = dt, .op = op};
    void **shared = coll_world_shared(rk->world);
    char *out = args.recvbuf;

    for (size_t i = 0; i < count; i++) {
        put(send, i, dt, value(me, i, op));
    }
    if (dc_allreduce_hier_algo.run(&rk->ctx, &args) != DCOMM_OK) {
        fprintf(stderr, "rank %d: hier failed: %s\n", me, dc_error_get());
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        double want = expected(rk->size, i, op), got = get(out, i, dt);

        if (fabs(got - want) > (op == DCOMM_AVG ? 1e-6 * fabs(want) + 1e-6 : 0.0)) {
            fprintf(stderr, "rank %d dtype %d op %d count %zu: [%zu] = %g, want %g\n", me,
                    (int)dt, (int)op, count, i, got, want);
            return -1;
        }
    }
    shared[rk->rank] = out;
    if (coll_world_sync(rk) != 0) {
        return -1;
    }
    if (count > 0 && memcmp(out, shared[0], count * esize) != 0) {
        fprintf(stderr, "rank %d: result differs from rank 0's\n", me);
        return -1;
    }
    return coll_world_sync(rk);
}

static int rank_main(coll_rank_t *rk, void *arg)
{
    const hier_case_t *hc = arg;
    size_t bytes = MAX_COUNT * sizeof(float);
    char *send = malloc(bytes), *recv = malloc(bytes);
    int rc = 0;

    for (int c = 0; c < rk->size; c++) {
        rk->host_of[c] = hc->host_of[rk->ranks[c]];
    }
    rk->ctx.host_of = rk->host_of;
    rk->ctx.nhosts = hc->nhosts;
    rk->ctx.tag = 7;
    for (size_t d = 0; rc == 0 && d < DC_ARRAY_SIZE(reductions); d++) {
        for (size_t c = 0; rc == 0 && c < DC_ARRAY_SIZE(counts); c++) {
            dc_coll_args_t probe = {.dtype = reductions[d].dtype, .op = reductions[d].op};

            if (!dc_allreduce_hier_algo.supported(&rk->ctx, &probe)) {
                fprintf(stderr, "hier declined a uniform layout\n");
                rc = -1;
                break;
            }
            for (int ip = 0; rc == 0 && ip < 2; ip++) {
                rc = one_case(rk, send, recv, reductions[d].dtype, reductions[d].op, counts[c],
                              ip);
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

static void run_case(const hier_case_t *hc, int shift)
{
    coll_world_t *w;

    assert_int_equal(coll_world_open(hc->np, "shm", 4u << 20, shift, &w), 0);
    assert_int_equal(coll_world_run(w, rank_main, (void *)hc), 0);
    coll_world_close(w);
}

static void test_2x2(void **state)
{
    hier_case_t hc = {.np = 4, .host_of = {0, 0, 1, 1}, .nhosts = 2};

    (void)state;
    run_case(&hc, 0);
    run_case(&hc, 1); /* comm ranks rotated against world ranks */
}

static void test_2x3_interleaved(void **state)
{
    hier_case_t hc = {.np = 6, .host_of = {0, 1, 0, 1, 0, 1}, .nhosts = 2};

    (void)state;
    run_case(&hc, 0);
}

static void test_3x2(void **state)
{
    hier_case_t hc = {.np = 6, .host_of = {0, 0, 1, 1, 2, 2}, .nhosts = 3};

    (void)state;
    run_case(&hc, 0);
}

static void test_declines(void **state)
{
    int ranks[5] = {0, 1, 2, 3, 4}, one[5] = {0}, uneven[5] = {0, 0, 0, 1, 1};
    dc_coll_ctx_t ctx = {.rank = 0, .size = 5, .ranks = ranks, .host_of = one, .nhosts = 1};
    dc_coll_args_t args = {.count = 10, .dtype = DCOMM_FLOAT32, .op = DCOMM_SUM};

    (void)state;
    assert_false(dc_allreduce_hier_algo.supported(&ctx, &args));
    ctx.host_of = uneven;
    ctx.nhosts = 2;
    assert_false(dc_allreduce_hier_algo.supported(&ctx, &args));
    ctx.size = 4; /* 2 + 2 */
    ctx.host_of = (int[]){0, 0, 1, 1};
    assert_true(dc_allreduce_hier_algo.supported(&ctx, &args));
    args.dtype = DCOMM_INT32;
    args.op = DCOMM_AVG;
    assert_false(dc_allreduce_hier_algo.supported(&ctx, &args));
}

static void test_model(void **state)
{
    static const dc_algo_row_t hier = {DC_COLL_ALLREDUCE, &dc_allreduce_hier_algo};
    static const dc_algo_row_t ring = {DC_COLL_ALLREDUCE, &dc_allreduce_ring_algo};
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    dc_select_t *sel;
    int n;

    (void)state;
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 2, DC_LINK_TCP, out,
                             DC_SELECT_MAX_ROWS);
    assert_true(n >= 1);
    assert_string_equal(out[0]->name, "hier");
    assert_true(isinf(dc_select_predict(sel, &hier, 1 << 20, 4, 1, DC_LINK_SHM)));
    assert_true(isinf(dc_select_predict(sel, &hier, 1 << 20, 5, 2, DC_LINK_TCP)));
    assert_true(isinf(dc_select_predict(sel, &hier, 1 << 20, 2, 2, DC_LINK_TCP)));
    assert_true(dc_select_predict(sel, &hier, 64u << 20, 8, 2, DC_LINK_TCP) <
                dc_select_predict(sel, &ring, 64u << 20, 8, 2, DC_LINK_TCP));
    dc_select_destroy(sel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declines),        cmocka_unit_test(test_model),
        cmocka_unit_test(test_2x2),             cmocka_unit_test(test_2x3_interleaved),
        cmocka_unit_test(test_3x2),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
