/*
 * Every collective algorithm of collectives/ on 1 to 5 ranks (threads of this
 * process over shm, coll_harness), for every dtype/op pair dc_reduce supports,
 * counts 0, 1, 7, 1001 and 1<<20, in and out of place: results against a
 * reference reduced locally in rank order, inputs left untouched, nothing
 * written past the result, and allreduce results bit-identical on all ranks.
 * Also where supported() must decline.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "coll_harness.h"
#include "dc_reduce.h"

#define BIG_COUNT   (1u << 20)
#define MAX_ELEMS   (BIG_COUNT + 4096) /* per buffer, beyond the biggest case */
#define MAX_ESIZE   8
#define GUARD       64   /* bytes after a result that must stay untouched */
#define GUARD_BYTE  0xA5

static const dcomm_dtype_t dtypes[] = {DCOMM_FLOAT32, DCOMM_FLOAT64, DCOMM_INT32, DCOMM_BFLOAT16,
                                       DCOMM_FLOAT16, DCOMM_UINT8,   DCOMM_INT8,  DCOMM_INT64};
static const dcomm_op_t ops[] = {DCOMM_SUM, DCOMM_AVG, DCOMM_MIN, DCOMM_MAX, DCOMM_PROD};
static const size_t small_counts[] = {0, 1, 7, 1001};
/* 1<<20 elements: a few pairs only, to keep the test short. */
static const struct {
    dcomm_dtype_t dtype;
    dcomm_op_t op;
} big_reductions[] = {{DCOMM_FLOAT32, DCOMM_SUM}, {DCOMM_FLOAT16, DCOMM_AVG}, {DCOMM_INT64, DCOMM_PROD}};

typedef enum kind { K_ALLREDUCE, K_REDSCAT, K_ALLGATHER, K_BCAST, K_ALLTOALL, K_BARRIER } kind_t;

typedef struct algo_case {
    kind_t kind;
    const dc_coll_algo_t *algo;
} algo_case_t;

static const algo_case_t algos[] = {
    {K_ALLREDUCE, &dc_allreduce_ring_algo},   {K_ALLREDUCE, &dc_allreduce_rd_algo},
    {K_ALLREDUCE, &dc_allreduce_rab_algo},    {K_ALLREDUCE, &dc_allreduce_dbtree_algo},
    {K_REDSCAT, &dc_reducescatter_ring_algo}, {K_REDSCAT, &dc_reducescatter_rhalving_algo},
    {K_ALLGATHER, &dc_allgather_ring_algo},   {K_ALLGATHER, &dc_allgather_bruck_algo},
    {K_BCAST, &dc_bcast_binomial_algo},       {K_BCAST, &dc_bcast_chain_algo},
    {K_ALLTOALL, &dc_alltoall_pairwise_algo}, {K_BARRIER, &dc_barrier_dissemination_algo},
};

static const char *const kind_names[] = {"allreduce", "reducescatter", "allgather",
                                         "broadcast", "alltoall",      "barrier"};

/* What the ranks of one world share while a plan runs. */
typedef struct shared {
    int big;              /* include the 1<<20 cases */
    char *ref, *tmp;      /* reference (rank 0 computes it) */
    _Atomic int arrived;  /* barrier test */
    _Atomic long cases;   /* collectives run (rank 0 counts) */
} shared_t;

/* Per-rank buffers. */
typedef struct bufs {
    char *send, *recv, *want;
    uint64_t tag;
    int failures;
    int zeros; /* inputs from gen_zeros */
} bufs_t;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Random floats (with a tolerance) only for FLOAT32/64 SUM and AVG; elsewhere
 * values whose results are exact in any order: +-{0.5, 1, 2, 4} for floating
 * types, any bits for integers (SUM and PROD wrap). */
static int random_floats(dcomm_dtype_t dt, dcomm_op_t op)
{
    return (dt == DCOMM_FLOAT32 || dt == DCOMM_FLOAT64) && (op == DCOMM_SUM || op == DCOMM_AVG);
}

static void gen(char *buf, size_t n, dcomm_dtype_t dt, dcomm_op_t op, uint64_t seed)
{
    static const float exact[8] = {0.5f, 1, 2, 4, -0.5f, -1, -2, -4};

    for (size_t i = 0; i < n; i++) {
        uint64_t h = mix(seed * 0x9e3779b97f4a7c15ull + i);
        double u = (double)(h >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        float e = exact[h & 7];
        uint16_t h16;

        switch (dt) {
        case DCOMM_FLOAT32: {
            float f = random_floats(dt, op) ? (float)u : e;
            memcpy(buf + i * 4, &f, 4);
            break;
        }
        case DCOMM_FLOAT64: {
            double d = random_floats(dt, op) ? u : e;
            memcpy(buf + i * 8, &d, 8);
            break;
        }
        case DCOMM_FLOAT16:
            h16 = dc_float_to_half(e);
            memcpy(buf + i * 2, &h16, 2);
            break;
        case DCOMM_BFLOAT16:
            h16 = dc_float_to_bf16(e);
            memcpy(buf + i * 2, &h16, 2);
            break;
        default:
            memcpy(buf + i * dc_reduce_dtype_size(dt), &h, dc_reduce_dtype_size(dt));
            break;
        }
    }
}

/* FLOAT32 values among +0, -0, 1, -1 (zeros mode): MIN and MAX of +0 and -0
 * depend on operand order, so only a schedule that reduces every element the
 * same way on every rank leaves all ranks with the same bits. */
static void gen_zeros(char *buf, size_t n, uint64_t seed)
{
    static const float vals[4] = {0.0f, -0.0f, 1.0f, -1.0f};

    for (size_t i = 0; i < n; i++) {
        float f = vals[mix(seed * 0x9e3779b97f4a7c15ull + i) & 3];

        memcpy(buf + i * 4, &f, 4);
    }
}

static double as_double(const char *p, dcomm_dtype_t dt)
{
    float f;
    double d;

    if (dt == DCOMM_FLOAT32) {
        memcpy(&f, p, 4);
        return f;
    }
    memcpy(&d, p, 8);
    return d;
}

__attribute__((format(printf, 9, 10))) static int
report(coll_rank_t *rk, bufs_t *b, const char *what, const algo_case_t *ac, dcomm_dtype_t dt,
       dcomm_op_t op, size_t count, int inplace, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (b->failures++ < 20) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* One write per line: ranks report concurrently. */
        fprintf(stderr, "np %d rank %d: %s %s dtype %d op %d count %zu %s: %s: %s\n", rk->size,
                rk->rank, kind_names[ac->kind], ac->algo->name, (int)dt, (int)op, count,
                inplace ? "in place" : "out of place", what, msg);
    }
    return -1;
}

/* Reduced inputs of all ranks in rank order, AVG scaled once. */
static void input(char *buf, size_t n, dcomm_dtype_t dt, dcomm_op_t op, uint64_t seed,
                  int zeros)
{
    if (zeros) {
        gen_zeros(buf, n, seed);
    } else {
        gen(buf, n, dt, op, seed);
    }
}

static void reference(shared_t *sh, int n, size_t count, dcomm_dtype_t dt, dcomm_op_t op,
                      uint64_t seed, int zeros)
{
    input(sh->ref, count, dt, op, seed, zeros);
    for (int q = 1; q < n; q++) {
        input(sh->tmp, count, dt, op, seed + (uint64_t)q, zeros);
        dc_reduce(sh->ref, sh->tmp, count, dt, op);
    }
    if (op == DCOMM_AVG) {
        dc_reduce_scale(sh->ref, count, dt, 1.0 / n);
    }
}

static int compare(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac, dcomm_dtype_t dt,
                   dcomm_op_t op, size_t count, int inplace, const char *got, const char *want,
                   size_t n)
{
    size_t esize = dc_reduce_dtype_size(dt);

    if (b->zeros) { /* the sign of a zero depends on the order */
        for (size_t i = 0; i < n; i++) {
            double g = as_double(got + i * 4, DCOMM_FLOAT32);
            double w = as_double(want + i * 4, DCOMM_FLOAT32);

            if (g != w) {
                return report(rk, b, "wrong result", ac, dt, op, count, inplace,
                              "element %zu is %g, want %g", i, g, w);
            }
        }
        return 0;
    }
    if (random_floats(dt, op)) {
        double eps = dt == DCOMM_FLOAT32 ? 1.2e-7 : 2.3e-16, tol = 4.0 * rk->size * eps;

        for (size_t i = 0; i < n; i++) {
            double g = as_double(got + i * esize, dt), w = as_double(want + i * esize, dt);

            if (!(fabs(g - w) <= tol * (1.0 + fabs(w)))) {
                return report(rk, b, "wrong result", ac, dt, op, count, inplace,
                            "element %zu is %.17g, want %.17g", i, g, w);
            }
        }
        return 0;
    }
    for (size_t i = 0; i < n * esize; i++) {
        if (got[i] != want[i]) {
            return report(rk, b, "wrong result", ac, dt, op, count, inplace,
                        "byte %zu (element %zu) is 0x%02x, want 0x%02x", i, i / esize,
                        (unsigned char)got[i], (unsigned char)want[i]);
        }
    }
    return 0;
}

static int guard_ok(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac, dcomm_dtype_t dt,
                    dcomm_op_t op, size_t count, int inplace, const char *end)
{
    for (int i = 0; i < GUARD; i++) {
        if ((unsigned char)end[i] != GUARD_BYTE) {
            return report(rk, b, "wrote past the result", ac, dt, op, count, inplace,
                        "guard byte %d is 0x%02x", i, (unsigned char)end[i]);
        }
    }
    return 0;
}

static dc_status_t run_algo(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac,
                            const dc_coll_args_t *args, size_t chunk_bytes)
{
    rk->ctx.tag = ++b->tag;
    rk->ctx.chunk_bytes = chunk_bytes;
    if (!ac->algo->supported(&rk->ctx, args)) {
        fprintf(stderr, "np %d rank %d: %s %s declined dtype %d op %d count %zu\n", rk->size,
                rk->rank, kind_names[ac->kind], ac->algo->name, (int)args->dtype, (int)args->op,
                args->count);
        return DCOMM_ERR_UNSUPPORTED;
    }
    dc_status_t status = ac->algo->run(&rk->ctx, args);

    if (status < 0) {
        fprintf(stderr, "np %d rank %d: %s %s failed: %s\n", rk->size, rk->rank,
                kind_names[ac->kind], ac->algo->name, dc_error_get());
    }
    return status;
}

/* allreduce and reducescatter: one (dtype, op, count, placement) case. */
static int reduce_case(coll_rank_t *rk, shared_t *sh, bufs_t *b, const algo_case_t *ac,
                       dcomm_dtype_t dt, dcomm_op_t op, size_t count, int inplace)
{
    size_t esize = dc_reduce_dtype_size(dt), off = 0, len = count;
    uint64_t seed = b->tag * 1000;
    int n = rk->size, r = rk->rank;
    void **pub = coll_world_shared(rk->world);
    dc_coll_args_t args = {.sendbuf = b->send, .recvbuf = b->recv, .count = count, .dtype = dt,
                           .op = op};

    if (ac->kind == K_REDSCAT) {
        dc_ring_segment(count, n, r, &off, &len);
    }
    if (r == 0) {
        reference(sh, n, count, dt, op, seed, b->zeros);
    }
    input(b->send, count, dt, op, seed + (uint64_t)r, b->zeros);
    memset(b->recv, GUARD_BYTE, (inplace ? count : len) * esize + GUARD);
    if (inplace) {
        memcpy(b->recv, b->send, count * esize);
        args.sendbuf = b->recv;
    }
    if (coll_world_sync(rk) < 0 ||
        run_algo(rk, b, ac, &args, count == 1001 && !inplace ? 100 : 0) < 0) {
        return -1;
    }
    compare(rk, b, ac, dt, op, count, inplace, b->recv, sh->ref + off * esize, len);
    guard_ok(rk, b, ac, dt, op, count, inplace, b->recv + (inplace ? count : len) * esize);
    if (!inplace) {
        input(b->want, count, dt, op, seed + (uint64_t)r, b->zeros);
        if (memcmp(b->want, b->send, count * esize) != 0) {
            report(rk, b, "input modified", ac, dt, op, count, inplace, "sendbuf changed");
        }
    }
    /* Every rank's copy must be the same bits, not merely close. */
    pub[r] = b->recv;
    if (coll_world_sync(rk) < 0) {
        return -1;
    }
    if (ac->kind == K_ALLREDUCE && r > 0 && memcmp(pub[0], b->recv, count * esize) != 0) {
        report(rk, b, "ranks differ", ac, dt, op, count, inplace, "result differs from rank 0's");
    }
    return coll_world_sync(rk);
}

static int allgather_case(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac, dcomm_dtype_t dt,
                          size_t base, int inplace)
{
    size_t esize = dc_reduce_dtype_size(dt), counts[COLL_MAX_RANKS], total = 0, displ = 0;
    uint64_t seed = b->tag * 1000;
    int n = rk->size, r = rk->rank;

    for (int q = 0; q < n; q++) {
        /* Uneven, and zero for some ranks. */
        counts[q] = (q + base) % 3 == 0 ? 0 : base + (size_t)q;
        displ += q < r ? counts[q] : 0;
    }
    for (int q = 0; q < n; q++) {
        gen(b->want + total * esize, counts[q], dt, DCOMM_SUM, seed + (uint64_t)q);
        total += counts[q];
    }
    dc_coll_args_t args = {.sendbuf = b->send, .recvbuf = b->recv, .count = counts[r],
                           .dtype = dt, .counts = counts};

    memset(b->recv, GUARD_BYTE, total * esize + GUARD);
    gen(b->send, counts[r], dt, DCOMM_SUM, seed + (uint64_t)r);
    if (inplace) {
        memcpy(b->recv + displ * esize, b->send, counts[r] * esize);
        args.sendbuf = b->recv + displ * esize;
    }
    if (run_algo(rk, b, ac, &args, 0) < 0) {
        return -1;
    }
    compare(rk, b, ac, dt, DCOMM_SUM, base, inplace, b->recv, b->want, total);
    guard_ok(rk, b, ac, dt, DCOMM_SUM, base, inplace, b->recv + total * esize);
    return 0;
}

static int bcast_case(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac, dcomm_dtype_t dt,
                      size_t count, int root)
{
    size_t esize = dc_reduce_dtype_size(dt);
    uint64_t seed = b->tag * 1000;
    dc_coll_args_t args = {.recvbuf = b->recv, .count = count, .dtype = dt, .root = root};

    gen(b->want, count, dt, DCOMM_SUM, seed);
    memset(b->recv, GUARD_BYTE, count * esize + GUARD);
    if (rk->rank == root) {
        memcpy(b->recv, b->want, count * esize);
    }
    if (run_algo(rk, b, ac, &args, count == 1001 ? 100 : 0) < 0) {
        return -1;
    }
    compare(rk, b, ac, dt, DCOMM_SUM, count, 1, b->recv, b->want, count);
    guard_ok(rk, b, ac, dt, DCOMM_SUM, count, 1, b->recv + count * esize);
    return 0;
}

static size_t a2a_count(int src, int dst, size_t unit)
{
    return (size_t)((src * 7 + dst * 3 + (int)unit) % 4) * unit; /* some zero */
}

static int alltoall_case(coll_rank_t *rk, bufs_t *b, const algo_case_t *ac, dcomm_dtype_t dt,
                         size_t unit)
{
    size_t esize = dc_reduce_dtype_size(dt), sc[COLL_MAX_RANKS], rc[COLL_MAX_RANKS];
    size_t soff = 0, roff = 0;
    uint64_t seed = b->tag * 1000;
    int n = rk->size, r = rk->rank;

    for (int q = 0; q < n; q++) {
        sc[q] = a2a_count(r, q, unit);
        gen(b->send + soff * esize, sc[q], dt, DCOMM_SUM, seed + (uint64_t)(r * 64 + q));
        soff += sc[q];
        rc[q] = (size_t)-1;
    }
    rk->ctx.tag = ++b->tag;
    if (dc_alltoall_counts(&rk->ctx, sc, rc) < 0) {
        fprintf(stderr, "rank %d: dc_alltoall_counts failed: %s\n", r, dc_error_get());
        return -1;
    }
    for (int q = 0; q < n; q++) {
        if (rc[q] != a2a_count(q, r, unit)) {
            report(rk, b, "counts prelude", ac, dt, DCOMM_SUM, unit, 0,
                 "rank %d sends %zu, prelude says %zu", q, a2a_count(q, r, unit), rc[q]);
        }
        gen(b->want + roff * esize, a2a_count(q, r, unit), dt, DCOMM_SUM,
            seed + (uint64_t)(q * 64 + r));
        roff += a2a_count(q, r, unit);
    }
    dc_coll_args_t args = {.sendbuf = b->send, .recvbuf = b->recv, .dtype = dt, .counts = sc,
                           .recv_counts = rc};

    memset(b->recv, GUARD_BYTE, roff * esize + GUARD);
    if (run_algo(rk, b, ac, &args, 0) < 0) {
        return -1;
    }
    compare(rk, b, ac, dt, DCOMM_SUM, unit, 0, b->recv, b->want, roff);
    guard_ok(rk, b, ac, dt, DCOMM_SUM, unit, 0, b->recv + roff * esize);
    return 0;
}

/* Nobody leaves round k before everyone has arrived at it; ranks arrive
 * staggered so a barrier that does not wait shows. */
static int barrier_cases(coll_rank_t *rk, shared_t *sh, bufs_t *b, const algo_case_t *ac)
{
    dc_coll_args_t args = {0};

    for (int round = 0; round < 20; round++) {
        struct timespec ts = {0, ((rk->rank + round) % 3) * 200000L};

        nanosleep(&ts, NULL);
        atomic_fetch_add(&sh->arrived, 1);
        if (run_algo(rk, b, ac, &args, 0) < 0) {
            return -1;
        }
        if (atomic_load(&sh->arrived) < (round + 1) * rk->size) {
            report(rk, b, "left early", ac, DCOMM_UINT8, DCOMM_SUM, 0, 0, "round %d: %d arrived",
                 round, atomic_load(&sh->arrived));
        }
    }
    return 0;
}

static int algo_cases(coll_rank_t *rk, shared_t *sh, bufs_t *b, const algo_case_t *ac)
{
    int n = rk->size;

    switch (ac->kind) {
    case K_ALLREDUCE:
    case K_REDSCAT:
        for (size_t d = 0; d < DC_ARRAY_SIZE(dtypes); d++) {
            for (size_t o = 0; o < DC_ARRAY_SIZE(ops); o++) {
                if (!dc_reduce_supported(dtypes[d], ops[o])) {
                    continue;
                }
                for (size_t c = 0; c < DC_ARRAY_SIZE(small_counts); c++) {
                    for (int inplace = 0; inplace <= (ac->kind == K_ALLREDUCE); inplace++) {
                        if (reduce_case(rk, sh, b, ac, dtypes[d], ops[o], small_counts[c],
                                        inplace) < 0) {
                            return -1;
                        }
                    }
                }
            }
        }
        b->zeros = 1;
        for (int mm = 0; mm < 2; mm++) {
            for (int inplace = 0; inplace <= (ac->kind == K_ALLREDUCE); inplace++) {
                if (reduce_case(rk, sh, b, ac, DCOMM_FLOAT32, mm ? DCOMM_MAX : DCOMM_MIN, 1001,
                                inplace) < 0) {
                    return -1;
                }
            }
        }
        b->zeros = 0;
        for (size_t k = 0; sh->big && k < DC_ARRAY_SIZE(big_reductions); k++) {
            /* rd takes vectors up to the scratch size only (test_declines). */
            if (ac->algo == &dc_allreduce_rd_algo &&
                BIG_COUNT * dc_reduce_dtype_size(big_reductions[k].dtype) >
                    rk->ctx.scratch_size) {
                continue;
            }
            for (int inplace = 0; inplace <= (ac->kind == K_ALLREDUCE); inplace++) {
                if (reduce_case(rk, sh, b, ac, big_reductions[k].dtype, big_reductions[k].op,
                                BIG_COUNT, inplace) < 0) {
                    return -1;
                }
            }
        }
        return 0;
    case K_ALLGATHER:
        for (size_t d = 0; d < DC_ARRAY_SIZE(dtypes); d++) {
            for (size_t c = 0; c < DC_ARRAY_SIZE(small_counts); c++) {
                for (int inplace = 0; inplace <= 1; inplace++) {
                    if (allgather_case(rk, b, ac, dtypes[d], small_counts[c], inplace) < 0) {
                        return -1;
                    }
                }
            }
        }
        return sh->big ? allgather_case(rk, b, ac, DCOMM_FLOAT32, BIG_COUNT / 8, 0) : 0;
    case K_BCAST:
        for (size_t d = 0; d < DC_ARRAY_SIZE(dtypes); d++) {
            for (size_t c = 0; c < DC_ARRAY_SIZE(small_counts); c++) {
                if (bcast_case(rk, b, ac, dtypes[d], small_counts[c], (int)(d + c) % n) < 0) {
                    return -1;
                }
            }
        }
        return sh->big ? bcast_case(rk, b, ac, DCOMM_FLOAT32, BIG_COUNT, n - 1) : 0;
    case K_ALLTOALL:
        for (size_t d = 0; d < DC_ARRAY_SIZE(dtypes); d++) {
            for (size_t c = 1; c < DC_ARRAY_SIZE(small_counts); c++) {
                if (alltoall_case(rk, b, ac, dtypes[d], small_counts[c]) < 0) {
                    return -1;
                }
            }
        }
        return sh->big ? alltoall_case(rk, b, ac, DCOMM_FLOAT32, BIG_COUNT / 16) : 0;
    case K_BARRIER:
        return barrier_cases(rk, sh, b, ac);
    }
    return -1;
}

static int rank_main(coll_rank_t *rk, void *arg)
{
    shared_t *sh = arg;
    size_t bytes = (size_t)MAX_ELEMS * MAX_ESIZE + GUARD;
    bufs_t b = {.send = malloc(bytes), .recv = malloc(bytes), .want = malloc(bytes)};
    int rc = 0;

    if (b.send == NULL || b.recv == NULL || b.want == NULL) {
        rc = -1;
    }
    for (size_t a = 0; a < DC_ARRAY_SIZE(algos) && rc == 0; a++) {
        rc = algo_cases(rk, sh, &b, &algos[a]);
        /* Keep ranks in step between algorithms, as the tags are. */
        if (rc == 0) {
            rc = coll_world_sync(rk);
        }
    }
    if (rk->rank == 0) {
        atomic_store(&sh->cases, (long)b.tag);
    }
    free(b.send);
    free(b.recv);
    free(b.want);
    return rc != 0 || b.failures != 0;
}

static void run_world(int np, const char *spec, int shift, int big)
{
    size_t bytes = (size_t)MAX_ELEMS * MAX_ESIZE;
    shared_t sh = {.big = big, .ref = malloc(bytes), .tmp = malloc(bytes)};
    coll_world_t *world;
    struct timespec t0, t1;

    assert_non_null(sh.ref);
    assert_non_null(sh.tmp);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(coll_world_open(np, spec, DC_COLL_SCRATCH_MIN, shift, &world), 0);
    assert_int_equal(coll_world_run(world, rank_main, &sh), 0);
    coll_world_close(world);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("np %d over %s, comm rotated by %d: %ld collectives in %.2f s\n", np, spec, shift, (long)atomic_load(&sh.cases),
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    free(sh.ref);
    free(sh.tmp);
}

static void test_np1(void **state)
{
    (void)state;
    run_world(1, "shm", 0, 1);
}

static void test_np2(void **state)
{
    (void)state;
    run_world(2, "shm", 1, 1);
}

static void test_np3(void **state)
{
    (void)state;
    run_world(3, "shm", 0, 1);
}

static void test_np4(void **state)
{
    (void)state;
    run_world(4, "shm", 3, 1);
}

static void test_np5(void **state)
{
    (void)state;
    run_world(5, "shm", 2, 1);
}

/* The same schedules over tcp (loopback), small counts only. Worlds other
 * than np 1 and 3 rotate comm ranks against world ranks. */
static void test_np3_tcp(void **state)
{
    (void)state;
    run_world(3, "tcp", 1, 0);
}

/* supported() declines what an algorithm cannot do, and only that. */
static void test_declines(void **state)
{
    dc_coll_ctx_t ctx = {.size = 4, .scratch_size = DC_COLL_SCRATCH_MIN};
    dc_coll_args_t args = {.dtype = DCOMM_FLOAT32, .op = DCOMM_SUM};
    const dc_coll_algo_t *allreduce[] = {&dc_allreduce_ring_algo, &dc_allreduce_rd_algo,
                                         &dc_allreduce_rab_algo, &dc_allreduce_dbtree_algo};

    (void)state;
    /* rd receives the whole vector into the scratch. */
    args.count = DC_COLL_SCRATCH_MIN / 4;
    assert_true(dc_allreduce_rd_algo.supported(&ctx, &args));
    args.count++;
    assert_false(dc_allreduce_rd_algo.supported(&ctx, &args));
    args.dtype = DCOMM_FLOAT64;
    args.count = DC_COLL_SCRATCH_MIN / 8 + 1;
    assert_false(dc_allreduce_rd_algo.supported(&ctx, &args));
    ctx.scratch_size = 2 * DC_COLL_SCRATCH_MIN;
    assert_true(dc_allreduce_rd_algo.supported(&ctx, &args));
    /* The others work in pieces: any count. */
    args.count = (size_t)1 << 30;
    for (size_t i = 0; i < DC_ARRAY_SIZE(allreduce); i++) {
        args.op = DCOMM_SUM;
        args.dtype = DCOMM_FLOAT32;
        assert_int_equal(allreduce[i]->supported(&ctx, &args), i != 1);
        /* AVG of integers is not an operation. */
        args.op = DCOMM_AVG;
        args.dtype = DCOMM_INT32;
        args.count = 7;
        assert_false(allreduce[i]->supported(&ctx, &args));
        args.count = (size_t)1 << 30;
    }
    args = (dc_coll_args_t){.dtype = DCOMM_FLOAT32, .op = DCOMM_SUM, .count = (size_t)1 << 30};
    assert_true(dc_reducescatter_ring_algo.supported(&ctx, &args));
    assert_true(dc_reducescatter_rhalving_algo.supported(&ctx, &args));
    args.op = DCOMM_AVG;
    args.dtype = DCOMM_INT8;
    assert_false(dc_reducescatter_ring_algo.supported(&ctx, &args));
    assert_false(dc_reducescatter_rhalving_algo.supported(&ctx, &args));
    /* rhalving packs a piece of every segment into the scratch. */
    args.op = DCOMM_SUM;
    args.dtype = DCOMM_FLOAT32;
    ctx.size = 1 << 20;
    assert_false(dc_reducescatter_rhalving_algo.supported(&ctx, &args));
    /* A root outside the comm. */
    ctx.size = 4;
    args.root = 4;
    assert_false(dc_bcast_chain_algo.supported(&ctx, &args));
    assert_false(dc_bcast_binomial_algo.supported(&ctx, &args));
    args.root = 3;
    assert_true(dc_bcast_chain_algo.supported(&ctx, &args));
    /* allgather/alltoall need their count arrays. */
    args.counts = NULL;
    assert_false(dc_allgather_ring_algo.supported(&ctx, &args));
    assert_false(dc_allgather_bruck_algo.supported(&ctx, &args));
    assert_false(dc_alltoall_pairwise_algo.supported(&ctx, &args));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declines), cmocka_unit_test(test_np1),
        cmocka_unit_test(test_np2),      cmocka_unit_test(test_np3),
        cmocka_unit_test(test_np4),      cmocka_unit_test(test_np5),
        cmocka_unit_test(test_np3_tcp),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
