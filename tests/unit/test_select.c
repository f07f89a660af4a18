/*
 * Algorithm selection: the DCOMM_TUNE grammar (accepted specs, and every kind
 * of rejection with its message), the cost model's choice at chosen points
 * over a table holding every algorithm, forced rules and their ranges, and
 * calibration over real shm and tcp links between forked ranks (every rank
 * must end with the same model).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"
#include "net.h"
#include "select.h"
#include "store.h"

/* ---- a table with every algorithm, independent of which files are built --- */

#define FAKE(var, nm) static const dc_coll_algo_t var = {.name = nm, .doc = "test row"}
FAKE(ar_ring, "ring");
FAKE(ar_rab, "rab");
FAKE(ar_rd, "rd");
FAKE(ar_dbtree, "dbtree");
FAKE(ar_shmdirect, "shmdirect");
FAKE(ag_ring, "ring");
FAKE(ag_bruck, "bruck");
FAKE(bc_binomial, "binomial");
FAKE(bc_chain, "chain");
FAKE(rs_ring, "ring");
FAKE(rs_rhalving, "rhalving");
FAKE(a2a_pairwise, "pairwise");
FAKE(bar_dissemination, "dissemination");

static const dc_algo_row_t full_rows[] = {
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RING, &ar_ring},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RAB, &ar_rab},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_RD, &ar_rd},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_DBTREE, &ar_dbtree},
    {DC_COLL_ALLREDUCE, DC_COST_ALLREDUCE_SHMDIRECT, &ar_shmdirect},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_RING, &ag_ring},
    {DC_COLL_ALLGATHER, DC_COST_ALLGATHER_BRUCK, &ag_bruck},
    {DC_COLL_BROADCAST, DC_COST_BCAST_BINOMIAL, &bc_binomial},
    {DC_COLL_BROADCAST, DC_COST_BCAST_CHAIN, &bc_chain},
    {DC_COLL_REDUCESCATTER, DC_COST_REDUCESCATTER_RING, &rs_ring},
    {DC_COLL_REDUCESCATTER, DC_COST_REDUCESCATTER_RHALVING, &rs_rhalving},
    {DC_COLL_ALLTOALL, DC_COST_ALLTOALL_PAIRWISE, &a2a_pairwise},
    {DC_COLL_BARRIER, DC_COST_BARRIER_DISSEMINATION, &bar_dissemination},
};

static dc_select_t *make(const char *spec)
{
    dc_select_t *sel = NULL;

    assert_int_equal(dc_select_create_rows(spec, full_rows, (int)DC_ARRAY_SIZE(full_rows), &sel),
                     DCOMM_OK);
    assert_non_null(sel);
    return sel;
}

/* Name of the first candidate, "" when none. */
static const char *first(const dc_select_t *sel, int coll, size_t bytes, int nranks, int nhosts,
                         dc_link_class_t cls)
{
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    int n = dc_select_candidates(sel, coll, bytes, nranks, nhosts, cls, out, DC_SELECT_MAX_ROWS);

    return n > 0 ? out[0]->name : "";
}

/* ---- grammar -------------------------------------------------------------- */

static void test_accept(void **state)
{
    static const char *const good[] = {
        NULL,
        "",
        "allreduce:0-64K:rd#allreduce:64K-inf:ring",
        " allreduce : 0 - 64k : rd ",
        "broadcast:1M-2G:chain#allgather:0-inf:bruck#reducescatter:0-1:rhalving",
        "alltoall:0-inf:pairwise#barrier:0-inf:dissemination",
        "allreduce:0-18446744073709551615:shmdirect",
        "allreduce:17179869183G-inf:ring", /* 2^64 - 2^30 bytes, just fits */
    };

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_SIZE(good); i++) {
        dc_select_t *sel = NULL;
        dc_status_t st = dc_select_create_rows(good[i], full_rows, (int)DC_ARRAY_SIZE(full_rows),
                                               &sel);

        if (st != DCOMM_OK) {
            fail_msg("spec '%s' rejected: %s", good[i] ? good[i] : "(null)", dc_error_get());
        }
        dc_select_destroy(sel);
    }
}

typedef struct bad_case {
    const char *spec;
    const char *msg[3]; /* substrings the error message must contain */
} bad_case_t;

static void test_reject(void **state)
{
    static const bad_case_t bad[] = {
        {"#", {"rule 1 ''", "empty rule"}},
        {"allreduce:0-1K:ring#", {"rule 2 ''", "empty rule", "separated by '#'"}},
        {"allreduce:0-1K:ring## ", {"rule 2", "empty rule"}},
        {"allreduce:0-1K", {"'allreduce:0-1K'", "expected 3 fields collective:lo-hi:algorithm"}},
        {"allreduce", {"expected 3 fields"}},
        {"allreduce:0-1K:ring:x", {"expected 3 fields"}},
        {"allreduc:0-1K:ring", {"unknown collective 'allreduc'", "allreduce, allgather, "
                                "broadcast, reducescatter, alltoall, barrier"}},
        {":0-1K:ring", {"unknown collective ''"}},
        {"allreduce:0-1K:foo", {"unknown allreduce algorithm 'foo'",
                                "expected one of: ring, rab, rd, dbtree, shmdirect"}},
        {"broadcast:0-1K:ring", {"unknown broadcast algorithm 'ring'",
                                 "expected one of: binomial, chain"}},
        {"allreduce:0-1K:", {"unknown allreduce algorithm ''"}},
        {"allreduce:64K:ring", {"expected a byte range lo-hi", "got '64K'"}},
        {"allreduce:x-1K:ring", {"bad size 'x'", "optional K, M or G suffix"}},
        {"allreduce:1Q-2K:ring", {"bad size '1Q'"}},
        {"allreduce:-1K:ring", {"bad size ''"}},
        {"allreduce:0-:ring", {"bad size ''", "or inf"}},
        {"allreduce:inf-inf:ring", {"bad size 'inf'"}},
        {"allreduce:1KB-2K:ring", {"bad size '1KB'"}},
        {"allreduce:0-99999999999999999999:ring", {"bad size '99999999999999999999'"}},
        {"allreduce:0-18446744073709551616:ring", {"bad size '18446744073709551616'"}},
        {"allreduce:0-17179869184G:ring", {"bad size '17179869184G'"}}, /* 2^64: overflow */
        {"allreduce:64K-1K:ring", {"range start 65536 is not below its end 1024", "[lo, hi)"}},
        {"allreduce:1K-1K:ring", {"range start 1024 is not below its end 1024"}},
        {"allreduce:0-1K:rd#allgather:0-1K:rd", {"DCOMM_TUNE rule 2 'allgather:0-1K:rd'",
                                                 "unknown allgather algorithm 'rd'",
                                                 "ring, bruck"}},
    };

    (void)state;
    for (size_t i = 0; i < DC_ARRAY_SIZE(bad); i++) {
        dc_select_t *sel = (dc_select_t *)&bad[i]; /* must stay untouched */
        dc_status_t st;

        dc_error_clear();
        st = dc_select_create_rows(bad[i].spec, full_rows, (int)DC_ARRAY_SIZE(full_rows), &sel);
        if (st != DCOMM_ERR_INVALID_ARG) {
            fail_msg("spec '%s': status %d, expected DCOMM_ERR_INVALID_ARG", bad[i].spec, st);
        }
        assert_ptr_equal(sel, &bad[i]);
        if (strstr(dc_error_get(), "DCOMM_TUNE rule ") == NULL) {
            fail_msg("spec '%s': message '%s' does not name the rule", bad[i].spec,
                     dc_error_get());
        }
        for (int m = 0; m < 3 && bad[i].msg[m] != NULL; m++) {
            if (strstr(dc_error_get(), bad[i].msg[m]) == NULL) {
                fail_msg("spec '%s': message '%s' lacks '%s'", bad[i].spec, dc_error_get(),
                         bad[i].msg[m]);
            }
        }
    }
}

/* The built-in table: every row's name is the one its cost model describes,
 * and its collective matches the model's. */
static void test_builtin_table(void **state)
{
    static const int model_coll[DC_COST_COUNT] = {
        [DC_COST_ALLREDUCE_RING] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLREDUCE_RD] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLREDUCE_RAB] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLREDUCE_DBTREE] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLREDUCE_SHMDIRECT] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLREDUCE_HIER] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLGATHER_RING] = DC_COLL_ALLGATHER,
        [DC_COST_ALLGATHER_BRUCK] = DC_COLL_ALLGATHER,
        [DC_COST_ALLGATHER_HIER] = DC_COLL_ALLGATHER,
        [DC_COST_BCAST_BINOMIAL] = DC_COLL_BROADCAST,
        [DC_COST_BCAST_CHAIN] = DC_COLL_BROADCAST,
        [DC_COST_REDUCESCATTER_RING] = DC_COLL_REDUCESCATTER,
        [DC_COST_REDUCESCATTER_RHALVING] = DC_COLL_REDUCESCATTER,
        [DC_COST_ALLTOALL_PAIRWISE] = DC_COLL_ALLTOALL,
        [DC_COST_BARRIER_DISSEMINATION] = DC_COLL_BARRIER,
        [DC_COST_ALLREDUCE_MPI] = DC_COLL_ALLREDUCE,
        [DC_COST_ALLGATHER_MPI] = DC_COLL_ALLGATHER,
        [DC_COST_BCAST_MPI] = DC_COLL_BROADCAST,
    };
    dc_select_t *sel = NULL;
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];

    (void)state;
    assert_true(dc_algo_table_len >= 2 && dc_algo_table_len <= DC_SELECT_MAX_ROWS);
    for (int i = 0; i < dc_algo_table_len; i++) {
        const dc_algo_row_t *row = &dc_algo_table[i];

        assert_non_null(row->algo);
        assert_non_null(row->algo->supported);
        assert_non_null(row->algo->run);
        assert_string_equal(row->algo->name, dc_cost_model_name(row->model));
        assert_int_equal(row->coll, model_coll[row->model]);
    }
    for (size_t i = 0; i < DC_ARRAY_SIZE(full_rows); i++) {
        assert_string_equal(full_rows[i].algo->name, dc_cost_model_name(full_rows[i].model));
        assert_int_equal(full_rows[i].coll, model_coll[full_rows[i].model]);
    }
    /* ring allreduce and binomial broadcast are always built in. */
    assert_int_equal(dc_select_create("allreduce:0-inf:ring#broadcast:0-inf:binomial", &sel),
                     DCOMM_OK);
    assert_true(dc_select_candidates(sel, DC_COLL_ALLREDUCE, 100, 4, 1, DC_LINK_SHM, out, 8) >=
                1);
    assert_string_equal(out[0]->name, "ring");
    assert_true(dc_select_candidates(sel, DC_COLL_BROADCAST, 100, 4, 1, DC_LINK_SHM, out, 8) >=
                1);
    assert_string_equal(out[0]->name, "binomial");
    dc_select_destroy(sel);
    assert_string_equal(dc_select_coll_name(DC_COLL_REDUCESCATTER), "reducescatter");
    assert_null(dc_select_coll_name(DC_SELECT_NCOLLS));
    assert_int_equal(dc_link_class_from_name("tcp"), DC_LINK_TCP);
    assert_int_equal(dc_link_class_from_name("shm"), DC_LINK_SHM);
    assert_int_equal(dc_link_class_from_name("carrier-pigeon"), -1);
}

/* ---- the model ------------------------------------------------------------ */

static void test_model_allreduce(void **state)
{
    dc_select_t *sel = make(NULL);
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    int n;

    (void)state;
    /* Small on many ranks: latency dominates, recursive doubling. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 8, 64, 8, DC_LINK_TCP), "rd");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 4096, 16, 1, DC_LINK_SHM), "rd");
    /* Large across hosts with 8 ranks each: the ring shares no host link. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 256u << 20, 64, 8, DC_LINK_TCP), "ring");
    /* Large, one rank per host, power of two: Rabenseifner (fewer alphas). */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 256u << 20, 16, 16, DC_LINK_TCP), "rab");
    /* Large, 6 ranks on 6 hosts: rab and rd pay for folding 2 ranks; ring. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 256u << 20, 6, 6, DC_LINK_TCP), "ring");
    /* Medium, 6 hosts: the double binary tree. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 64u << 10, 6, 6, DC_LINK_TCP), "dbtree");
    /* One host over shm, large: shm-direct. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 1, DC_LINK_SHM),
                        "shmdirect");
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 1, DC_LINK_SHM, out, 8);
    assert_int_equal(n, 5);
    /* Off a single shm host shm-direct is no candidate at all. */
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 2, DC_LINK_TCP, out, 8);
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++) {
        assert_string_not_equal(out[i]->name, "shmdirect");
    }
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 1, DC_LINK_TCP, out, 8);
    assert_int_equal(n, 4);
    /* max truncates the list. */
    assert_int_equal(dc_select_candidates(sel, DC_COLL_ALLREDUCE, 1, 4, 1, DC_LINK_SHM, out, 2),
                     2);
    assert_int_equal(dc_select_candidates(sel, DC_COLL_ALLREDUCE, 1, 4, 1, DC_LINK_SHM, out, 0),
                     0);
    /* One rank: every cost is 0, so table order. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 1u << 20, 1, 1, DC_LINK_SELF), "ring");
    /* Unknown collective: nothing. */
    assert_int_equal(dc_select_candidates(sel, 99, 1, 4, 1, DC_LINK_SHM, out, 8), 0);
    assert_int_equal(dc_select_candidates(sel, -1, 1, 4, 1, DC_LINK_SHM, out, 8), 0);
    dc_select_destroy(sel);
}

/* The ranking is sorted by the predictions it reports. */
static void test_model_sorted(void **state)
{
    static const size_t sizes[] = {0, 8, 4096, 65536, 1u << 20, 64u << 20, (size_t)1 << 34};
    static const int ranks[] = {1, 2, 3, 4, 7, 8, 64, 1000};
    dc_select_t *sel = make(NULL);

    (void)state;
    for (int coll = 0; coll < DC_SELECT_NCOLLS; coll++) {
        for (size_t s = 0; s < DC_ARRAY_SIZE(sizes); s++) {
            for (size_t r = 0; r < DC_ARRAY_SIZE(ranks); r++) {
                const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
                int hosts = ranks[r] >= 4 ? 2 : 1, n;
                double prev = 0.0;

                n = dc_select_candidates(sel, coll, sizes[s], ranks[r], hosts, DC_LINK_TCP, out,
                                         DC_SELECT_MAX_ROWS);
                assert_true(n >= 1);
                for (int i = 0; i < n; i++) {
                    double c = -1.0;

                    for (size_t k = 0; k < DC_ARRAY_SIZE(full_rows); k++) {
                        if (full_rows[k].algo == out[i]) {
                            c = dc_select_predict(sel, full_rows[k].model, sizes[s], ranks[r],
                                                  hosts, DC_LINK_TCP);
                        }
                    }
                    assert_true(c >= 0.0 && isfinite(c));
                    assert_true(c >= prev);
                    prev = c;
                }
            }
        }
    }
    dc_select_destroy(sel);
}

static void test_model_others(void **state)
{
    dc_select_t *sel = make(NULL);

    (void)state;
    assert_string_equal(first(sel, DC_COLL_ALLGATHER, 64, 32, 4, DC_LINK_TCP), "bruck");
    assert_string_equal(first(sel, DC_COLL_ALLGATHER, 256u << 20, 32, 4, DC_LINK_TCP), "ring");
    assert_string_equal(first(sel, DC_COLL_BROADCAST, 64, 32, 4, DC_LINK_TCP), "binomial");
    assert_string_equal(first(sel, DC_COLL_BROADCAST, 256u << 20, 32, 4, DC_LINK_TCP), "chain");
    /* Two ranks: the chain is one hop, no better than the tree; table order. */
    assert_string_equal(first(sel, DC_COLL_BROADCAST, 256u << 20, 2, 2, DC_LINK_TCP),
                        "binomial");
    assert_string_equal(first(sel, DC_COLL_REDUCESCATTER, 64, 16, 1, DC_LINK_SHM), "rhalving");
    assert_string_equal(first(sel, DC_COLL_REDUCESCATTER, 256u << 20, 12, 3, DC_LINK_TCP),
                        "ring");
    assert_string_equal(first(sel, DC_COLL_ALLTOALL, 1u << 20, 8, 2, DC_LINK_TCP), "pairwise");
    assert_string_equal(first(sel, DC_COLL_BARRIER, 0, 8, 2, DC_LINK_TCP), "dissemination");
    dc_select_destroy(sel);
}

/* Link and compute parameters move the choice. */
static void test_model_params(void **state)
{
    dc_select_t *sel = make(NULL);
    double before, after;

    (void)state;
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 1, DC_LINK_SHM),
                        "shmdirect");
    /* A shm link far faster than memory copies: the ring wins again. */
    dc_select_set_link(sel, DC_LINK_SHM, 2.0, 100.0);
    dc_select_set_compute(sel, 100.0, 1.0);
    assert_string_not_equal(first(sel, DC_COLL_ALLREDUCE, 64u << 20, 4, 1, DC_LINK_SHM),
                            "shmdirect");
    /* Invalid values are ignored. */
    before = dc_select_predict(sel, DC_COST_ALLREDUCE_RING, 1u << 20, 4, 1, DC_LINK_SHM);
    dc_select_set_link(sel, DC_LINK_SHM, -1.0, 5.0);
    dc_select_set_link(sel, DC_LINK_SHM, 1.0, 0.0);
    dc_select_set_link(sel, DC_LINK_SHM, NAN, 5.0);
    dc_select_set_link(sel, DC_LINK_COUNT, 1.0, 5.0);
    dc_select_set_compute(sel, 0.0, -3.0);
    after = dc_select_predict(sel, DC_COST_ALLREDUCE_RING, 1u << 20, 4, 1, DC_LINK_SHM);
    assert_true(before == after);
    /* The barrier costs L alpha exactly. */
    dc_select_set_link(sel, DC_LINK_TCP, 10.0, 1.0);
    assert_true(fabs(dc_select_predict(sel, DC_COST_BARRIER_DISSEMINATION, 0, 5, 5, DC_LINK_TCP) -
                     30e-6) < 1e-12);
    dc_select_destroy(sel);
}

/* MPI's native collectives: only where every link is mpi, and there ahead of
 * dcomm's own algorithms (priced at their cheapest, first in ties); forcible;
 * declined by supported() off the mpi transport. */
static void test_model_mpi(void **state)
{
    static const int colls[] = {DC_COLL_ALLREDUCE, DC_COLL_ALLGATHER, DC_COLL_BROADCAST};
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    int ranks[2] = {0, 1};
    size_t counts[2] = {1, 1};
    dc_coll_ctx_t ctx = {.rank = 0, .size = 1, .ranks = ranks};
    dc_coll_args_t args = {.count = 1, .dtype = DCOMM_FLOAT32, .op = DCOMM_SUM,
                           .counts = counts};
    dc_select_t *sel;
    int n;

    (void)state;
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    for (size_t c = 0; c < DC_ARRAY_SIZE(colls); c++) {
        for (size_t bytes = 8; bytes <= (64u << 20); bytes *= 64) {
            assert_string_equal(first(sel, colls[c], bytes, 4, 1, DC_LINK_MPI), "mpi");
            n = dc_select_candidates(sel, colls[c], bytes, 4, 2, DC_LINK_TCP, out,
                                     DC_SELECT_MAX_ROWS);
            for (int i = 0; i < n; i++) {
                assert_string_not_equal(out[i]->name, "mpi");
            }
        }
    }
    assert_true(isinf(dc_select_predict(sel, DC_COST_ALLREDUCE_MPI, 1024, 4, 1, DC_LINK_SHM)));
    dc_select_destroy(sel);
    assert_int_equal(dc_select_create("allgather:0-inf:mpi", &sel), DCOMM_OK);
    assert_string_equal(first(sel, DC_COLL_ALLGATHER, 1024, 4, 1, DC_LINK_SHM), "mpi");
    dc_select_destroy(sel);
    /* A single rank has no mpi peer: every mpi row declines. */
    assert_false(dc_allreduce_mpi_algo.supported(&ctx, &args));
    assert_false(dc_allgather_mpi_algo.supported(&ctx, &args));
    assert_false(dc_bcast_mpi_algo.supported(&ctx, &args));
}

/* The alpha scale autotune sets: the crossover between the latency-optimal
 * (rd) and the bandwidth-optimal allreduce over tcp moves up with it, the
 * other collectives keep their costs, invalid scales are ignored. */
static void test_alpha_scale(void **state)
{
    dc_select_t *sel = make(NULL);
    size_t lo = 0, hi = 0;
    double bcast;

    (void)state;
    dc_select_set_link(sel, DC_LINK_TCP, 20.0, 1.0);
    bcast = dc_select_predict(sel, DC_COST_BCAST_BINOMIAL, 1u << 20, 4, 4, DC_LINK_TCP);
    for (double scale = 0.25; scale <= 4.0; scale *= 16) {
        size_t bytes = 8;

        dc_select_set_alpha_scale(sel, scale);
        while (bytes < (1u << 30) &&
               strcmp(first(sel, DC_COLL_ALLREDUCE, bytes, 4, 4, DC_LINK_TCP), "rd") == 0) {
            bytes *= 2;
        }
        *(scale < 1.0 ? &lo : &hi) = bytes;
        assert_true(dc_select_predict(sel, DC_COST_BCAST_BINOMIAL, 1u << 20, 4, 4,
                                      DC_LINK_TCP) == bcast);
    }
    assert_true(lo > 8 && hi > lo);
    dc_select_set_alpha_scale(sel, 0.0);
    dc_select_set_alpha_scale(sel, NAN);
    assert_true(strcmp(first(sel, DC_COLL_ALLREDUCE, hi / 2, 4, 4, DC_LINK_TCP), "rd") == 0);
    dc_select_destroy(sel);
}

/* ---- forced rules --------------------------------------------------------- */

static void test_forced(void **state)
{
    dc_select_t *sel = make("allreduce:0-64K:dbtree#allreduce:1M-inf:rd#broadcast:0-inf:chain");
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];
    int n;

    (void)state;
    /* In range: forced first, each other algorithm once after it. */
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 1024, 64, 8, DC_LINK_TCP, out, 8);
    assert_int_equal(n, 4);
    assert_string_equal(out[0]->name, "dbtree");
    assert_string_equal(out[1]->name, "rd"); /* the model's choice comes next */
    for (int i = 1; i < n; i++) {
        assert_string_not_equal(out[i]->name, "dbtree");
    }
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 0, 64, 8, DC_LINK_TCP), "dbtree");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 65535, 64, 8, DC_LINK_TCP), "dbtree");
    /* hi is exclusive, and 64K-1M has no rule: the model decides. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 65536, 4, 4, DC_LINK_TCP), "rab");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 512u << 10, 6, 6, DC_LINK_TCP), "ring");
    /* Forced against the model: large, where the model wants ring. */
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 1u << 20, 6, 6, DC_LINK_TCP), "rd");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, (size_t)1 << 40, 64, 8, DC_LINK_TCP),
                        "rd");
    /* Rules of one collective do not touch another. */
    assert_string_equal(first(sel, DC_COLL_BROADCAST, 8, 64, 8, DC_LINK_TCP), "chain");
    assert_string_equal(first(sel, DC_COLL_ALLGATHER, 8, 64, 8, DC_LINK_TCP), "bruck");
    dc_select_destroy(sel);

    /* The first matching rule wins; a forced inapplicable algorithm is still listed. */
    sel = make("allreduce:0-1M:shmdirect#allreduce:0-inf:ring");
    n = dc_select_candidates(sel, DC_COLL_ALLREDUCE, 1024, 8, 2, DC_LINK_TCP, out, 8);
    assert_int_equal(n, 5);
    assert_string_equal(out[0]->name, "shmdirect");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 1u << 20, 8, 2, DC_LINK_TCP), "ring");
    assert_string_equal(first(sel, DC_COLL_ALLREDUCE, 8, 8, 2, DC_LINK_TCP), "shmdirect");
    dc_select_destroy(sel);
}

static void test_explain(void **state)
{
    dc_select_t *sel = make("allreduce:0-1K:ring");
    char buf[512], tiny[16];

    (void)state;
    dc_select_explain(sel, DC_COLL_ALLREDUCE, 4194304, 4, 1, DC_LINK_SHM, buf, sizeof(buf));
    assert_non_null(strstr(buf, "allreduce 4194304 B, 4 ranks, 1 host, shm: shmdirect ("));
    assert_non_null(strstr(buf, " ms)"));
    assert_non_null(strstr(buf, ", ring ("));
    assert_non_null(strstr(buf, ", rd ("));
    dc_select_explain(sel, DC_COLL_ALLREDUCE, 8, 2, 2, DC_LINK_TCP, buf, sizeof(buf));
    assert_non_null(strstr(buf, "allreduce 8 B, 2 ranks, 2 hosts, tcp: ring (forced by "
                                "DCOMM_TUNE, model "));
    assert_null(strstr(buf, "shmdirect"));
    /* Truncation stays within the buffer and terminated. */
    memset(tiny, 'x', sizeof(tiny));
    dc_select_explain(sel, DC_COLL_ALLREDUCE, 8, 2, 2, DC_LINK_TCP, tiny, sizeof(tiny));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    dc_select_destroy(sel);
}

/* ---- calibration between forked ranks ------------------------------------- */

#define CAL_RANKS   3
#define CAL_WAIT_MS 60000

/* What each rank reports: the model after calibration, read through
 * predictions that isolate alpha (barrier of 2) and alpha + n/2 beta. */
typedef struct cal_report {
    int status;
    double ms;
    double pred[8];
} cal_report_t;

static void cal_fill(const dc_select_t *sel, double *pred)
{
    static const dc_link_class_t cls[] = {DC_LINK_SHM, DC_LINK_TCP, DC_LINK_UCX};

    for (int i = 0; i < 3; i++) {
        pred[2 * i] = dc_select_predict(sel, DC_COST_BARRIER_DISSEMINATION, 0, 2, 1, cls[i]);
        pred[2 * i + 1] = dc_select_predict(sel, DC_COST_ALLGATHER_RING, 2u << 20, 2, 1, cls[i]);
    }
    pred[6] = dc_select_predict(sel, DC_COST_ALLREDUCE_SHMDIRECT, 1u << 20, 2, 1, DC_LINK_SHM);
    pred[7] = dc_select_predict(sel, DC_COST_REDUCESCATTER_RHALVING, 1u << 20, 2, 1, DC_LINK_SHM);
}

/* Ranks 0 and 1 share host 0 (shm); rank 2 is alone on host 1 (tcp). */
static void cal_child(int rank, const char *dir, int fd)
{
    static const int host_of[CAL_RANKS] = {0, 0, 1}, local_rank_of[CAL_RANKS] = {0, 1, 0};
    dc_topo_t topo = {.rank = rank, .size = CAL_RANKS, .nhosts = 2, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = rank < 2 ? 2 : 1,
                      .ncores = 2};
    uint8_t secret[32] = {7};
    dc_bootstrap_t boot = {.topo = &topo, .secret = secret, .timeout_ms = 20000};
    cal_report_t rep = {0};
    dc_store_t *store = NULL;
    dc_net_t *net = NULL;
    dc_select_t *sel = NULL;
    uint64_t t0;

    rep.status = dc_filestore_open(dir, &store);
    if (rep.status == DCOMM_OK) {
        boot.store = store;
        rep.status = dc_net_open(&boot, NULL, &net);
    }
    if (rep.status == DCOMM_OK) {
        rep.status = dc_select_create(NULL, &sel);
    }
    if (rep.status == DCOMM_OK) {
        t0 = dc_now_ns();
        rep.status = dc_select_calibrate(sel, net, rank, CAL_RANKS, 77);
        rep.ms = (double)(dc_now_ns() - t0) * 1e-6;
        cal_fill(sel, rep.pred);
    }
    if (rep.status != DCOMM_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, dc_error_get());
    }
    if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
        _exit(4);
    }
    dc_select_destroy(sel);
    dc_net_close(net);
    if (store != NULL) {
        store->ops->close(store);
    }
    _exit(rep.status == DCOMM_OK ? 0 : 3);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void test_calibrate(void **state)
{
    char dir[] = "/tmp/dcomm-test-select-XXXXXX";
    int fds[CAL_RANKS][2];
    pid_t pids[CAL_RANKS];
    cal_report_t rep[CAL_RANKS];
    double defaults[8];
    dc_select_t *sel = make(NULL);
    uint64_t deadline = dc_deadline_ms(CAL_WAIT_MS);
    int left = CAL_RANKS;

    (void)state;
    /* A single rank has nothing to measure and needs no network. */
    assert_int_equal(dc_select_calibrate(sel, NULL, 0, 1, 1), DCOMM_OK);
    dc_select_destroy(sel);
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    cal_fill(sel, defaults);
    dc_select_destroy(sel);

    assert_non_null(mkdtemp(dir));
    fflush(NULL);
    for (int r = 0; r < CAL_RANKS; r++) {
        assert_int_equal(pipe(fds[r]), 0);
        pids[r] = fork();
        assert_true(pids[r] >= 0);
        if (pids[r] == 0) {
            close(fds[r][0]);
            cal_child(r, dir, fds[r][1]);
        }
        close(fds[r][1]);
    }
    while (left > 0) {
        int wstatus;
        pid_t pid = waitpid(-1, &wstatus, WNOHANG);

        for (int r = 0; pid > 0 && r < CAL_RANKS; r++) {
            if (pids[r] == pid) {
                if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
                    fprintf(stderr, "rank %d ended with status 0x%x\n", r, wstatus);
                }
                pids[r] = -1;
                left--;
            }
        }
        if (pid <= 0 && dc_now_ns() >= deadline) {
            for (int r = 0; r < CAL_RANKS; r++) {
                if (pids[r] > 0) {
                    kill(pids[r], SIGKILL);
                    waitpid(pids[r], NULL, 0);
                }
            }
            fail_msg("calibration did not end within %d ms", CAL_WAIT_MS);
        }
        if (pid <= 0) {
            usleep(1000);
        }
    }
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    for (int r = 0; r < CAL_RANKS; r++) {
        assert_int_equal(read(fds[r][0], &rep[r], sizeof(rep[r])), (ssize_t)sizeof(rep[r]));
        close(fds[r][0]);
        assert_int_equal(rep[r].status, DCOMM_OK);
    }
    fprintf(stderr, "calibration: %.1f / %.1f / %.1f ms; shm alpha %.2f us, tcp alpha %.2f us\n",
            rep[0].ms, rep[1].ms, rep[2].ms, rep[0].pred[0] * 1e6, rep[0].pred[2] * 1e6);
    /* Every rank ends with the same model, bit for bit. */
    assert_memory_equal(rep[0].pred, rep[1].pred, sizeof(rep[0].pred));
    assert_memory_equal(rep[0].pred, rep[2].pred, sizeof(rep[0].pred));
    /* shm and tcp were measured (a measurement never lands exactly on a
     * default); ucx, served to nobody, kept its default. */
    for (int i = 0; i < 8; i++) {
        assert_true(rep[0].pred[i] > 0.0 && isfinite(rep[0].pred[i]));
    }
    assert_true(rep[0].pred[0] != defaults[0] && rep[0].pred[1] != defaults[1]);
    assert_true(rep[0].pred[2] != defaults[2] && rep[0].pred[3] != defaults[3]);
    assert_true(rep[0].pred[4] == defaults[4] && rep[0].pred[5] == defaults[5]);
    /* The compute rates were measured too. */
    assert_true(rep[0].pred[6] != defaults[6]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept),
        cmocka_unit_test(test_reject),
        cmocka_unit_test(test_builtin_table),
        cmocka_unit_test(test_model_allreduce),
        cmocka_unit_test(test_model_sorted),
        cmocka_unit_test(test_model_others),
        cmocka_unit_test(test_model_params),
        cmocka_unit_test(test_model_mpi),
        cmocka_unit_test(test_alpha_scale),
        cmocka_unit_test(test_forced),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_calibrate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
