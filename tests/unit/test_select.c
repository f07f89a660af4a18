/*
 * Algorithm selection: the DCOMM_TUNE grammar (accepted specs, and every kind
 * of rejection with its message), every built-in row's cost function, the
 * cost model's choice at chosen points over a table of dcomm's own flat
 * algorithms, forced rules and their ranges, and
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

/* ---- a table of dcomm's own flat algorithms (no mpi, no hier rows) -------- */

static const dc_algo_row_t full_rows[] = {
    {DC_COLL_ALLREDUCE, &dc_allreduce_ring_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_rab_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_rd_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_dbtree_algo},
    {DC_COLL_ALLREDUCE, &dc_allreduce_shmdirect_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_ring_algo},
    {DC_COLL_ALLGATHER, &dc_allgather_bruck_algo},
    {DC_COLL_BROADCAST, &dc_bcast_binomial_algo},
    {DC_COLL_BROADCAST, &dc_bcast_chain_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_ring_algo},
    {DC_COLL_REDUCESCATTER, &dc_reducescatter_rhalving_algo},
    {DC_COLL_ALLTOALL, &dc_alltoall_pairwise_algo},
    {DC_COLL_BARRIER, &dc_barrier_dissemination_algo},
};

/* The built-in row of coll named name. */
static const dc_algo_row_t *row_of(int coll, const char *name)
{
    for (int i = 0; i < dc_algo_table_len; i++) {
        if (dc_algo_table[i].coll == coll && strcmp(dc_algo_table[i].algo->name, name) == 0) {
            return &dc_algo_table[i];
        }
    }
    fail_msg("no built-in %s row '%s'", dc_select_coll_name(coll), name);
    return NULL;
}

/* Predicted seconds of the built-in row of coll named name. */
static double predict(const dc_select_t *sel, int coll, const char *name, size_t bytes, int nranks,
                      int nhosts, dc_link_class_t cls)
{
    return dc_select_predict(sel, row_of(coll, name), bytes, nranks, nhosts, cls);
}

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

/* The built-in table: every row can run and has a cost function, no collective
 * has two rows of one name (DCOMM_TUNE names a row), and the rows of the
 * test table are built-in rows of the same collective. */
static void test_builtin_table(void **state)
{
    dc_select_t *sel = NULL;
    const dc_coll_algo_t *out[DC_SELECT_MAX_ROWS];

    (void)state;
    assert_true(dc_algo_table_len >= 2 && dc_algo_table_len <= DC_SELECT_MAX_ROWS);
    for (int i = 0; i < dc_algo_table_len; i++) {
        const dc_algo_row_t *row = &dc_algo_table[i];

        assert_non_null(row->algo);
        assert_non_null(row->algo->supported);
        assert_non_null(row->algo->run);
        if (row->algo->cost == NULL) {
            fail_msg("%s row '%s' has no cost function", dc_select_coll_name(row->coll),
                     row->algo->name);
        }
        assert_ptr_equal(row_of(row->coll, row->algo->name), row);
    }
    for (size_t i = 0; i < DC_ARRAY_SIZE(full_rows); i++) {
        assert_ptr_equal(row_of(full_rows[i].coll, full_rows[i].algo->name)->algo,
                         full_rows[i].algo);
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

/* Every built-in cost function, over ranks, hosts, sizes and link classes:
 * seconds >= 0 or INFINITY, never NaN or negative; 0 or INFINITY with one
 * rank; INFINITY with no cost function. */
static void test_builtin_costs(void **state)
{
    static const size_t sizes[] = {0, 1, 7, 4096, 65537, 1u << 20, 64u << 20, (size_t)1 << 34};
    dc_select_t *sel = NULL;
    const dc_algo_row_t bare = {DC_COLL_ALLREDUCE, &(dc_coll_algo_t){.name = "bare"}};

    (void)state;
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    for (int i = 0; i < dc_algo_table_len; i++) {
        for (int cls = 0; cls < DC_LINK_COUNT; cls++) {
            for (int p = 1; p <= 17; p++) {
                for (int h = 1; h <= 4 && h <= p; h++) {
                    for (size_t s = 0; s < DC_ARRAY_SIZE(sizes); s++) {
                        double c = dc_select_predict(sel, &dc_algo_table[i], sizes[s], p, h,
                                                     (dc_link_class_t)cls);

                        if (!(c >= 0.0) || (p == 1 && c != 0.0 && !isinf(c))) {
                            fail_msg("%s %s: %.17g s for %zu B, %d ranks, %d hosts, %s",
                                     dc_select_coll_name(dc_algo_table[i].coll),
                                     dc_algo_table[i].algo->name, c, sizes[s], p, h,
                                     dc_link_class_name((dc_link_class_t)cls));
                        }
                    }
                }
            }
        }
    }
    assert_true(isinf(dc_select_predict(sel, &bare, 1024, 4, 1, DC_LINK_SHM)));
    dc_select_destroy(sel);
}

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
                            c = dc_select_predict(sel, &full_rows[k], sizes[s], ranks[r], hosts,
                                                  DC_LINK_TCP);
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
    before = predict(sel, DC_COLL_ALLREDUCE, "ring", 1u << 20, 4, 1, DC_LINK_SHM);
    dc_select_set_link(sel, DC_LINK_SHM, -1.0, 5.0);
    dc_select_set_link(sel, DC_LINK_SHM, 1.0, 0.0);
    dc_select_set_link(sel, DC_LINK_SHM, NAN, 5.0);
    dc_select_set_link(sel, DC_LINK_COUNT, 1.0, 5.0);
    dc_select_set_compute(sel, 0.0, -3.0);
    after = predict(sel, DC_COLL_ALLREDUCE, "ring", 1u << 20, 4, 1, DC_LINK_SHM);
    assert_true(before == after);
    /* The barrier costs L alpha exactly. */
    dc_select_set_link(sel, DC_LINK_TCP, 10.0, 1.0);
    assert_true(fabs(predict(sel, DC_COLL_BARRIER, "dissemination", 0, 5, 5, DC_LINK_TCP) -
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
    assert_true(isinf(predict(sel, DC_COLL_ALLREDUCE, "mpi", 1024, 4, 1, DC_LINK_SHM)));
    /* Over mpi, the price of the cheapest flat schedule: not hier's, though
     * cheaper for 32 KiB over 2 hosts. */
    for (size_t bytes = 8; bytes <= (64u << 20); bytes *= 64) {
        static const char *const flat[] = {"ring", "rd", "rab", "dbtree"};
        double best = INFINITY;

        for (size_t i = 0; i < DC_ARRAY_SIZE(flat); i++) {
            best = fmin(best, predict(sel, DC_COLL_ALLREDUCE, flat[i], bytes, 8, 2, DC_LINK_MPI));
        }
        assert_true(predict(sel, DC_COLL_ALLREDUCE, "mpi", bytes, 8, 2, DC_LINK_MPI) == best);
    }
    assert_true(predict(sel, DC_COLL_ALLREDUCE, "hier", 32u << 10, 8, 2, DC_LINK_MPI) <
                predict(sel, DC_COLL_ALLREDUCE, "mpi", 32u << 10, 8, 2, DC_LINK_MPI));
    dc_select_destroy(sel);
    assert_int_equal(dc_select_create("allgather:0-inf:mpi", &sel), DCOMM_OK);
    assert_string_equal(first(sel, DC_COLL_ALLGATHER, 1024, 4, 1, DC_LINK_SHM), "mpi");
    dc_select_destroy(sel);
    /* A single rank has no mpi peer: every mpi row declines. */
    assert_false(dc_allreduce_mpi_algo.supported(&ctx, &args));
    assert_false(dc_allgather_mpi_algo.supported(&ctx, &args));
    assert_false(dc_bcast_mpi_algo.supported(&ctx, &args));
}

/* One rank costs 0, but only where the algorithm applies: mpi off the mpi
 * class and shmdirect off one shm host stay inapplicable; hier, which needs
 * 2 hosts, is not asked (0 on one host too). */
static void test_model_one_rank(void **state)
{
    dc_select_t *sel = NULL;

    (void)state;
    assert_int_equal(dc_select_create(NULL, &sel), DCOMM_OK);
    for (int p = -1; p <= 1; p++) {
        assert_true(isinf(predict(sel, DC_COLL_ALLREDUCE, "mpi", 1024, p, 1, DC_LINK_SHM)));
        assert_true(isinf(predict(sel, DC_COLL_BROADCAST, "mpi", 1024, p, 1, DC_LINK_TCP)));
        assert_true(predict(sel, DC_COLL_ALLGATHER, "mpi", 1024, p, 1, DC_LINK_MPI) == 0.0);
        assert_true(isinf(predict(sel, DC_COLL_ALLREDUCE, "shmdirect", 1024, p, 1, DC_LINK_TCP)));
        assert_true(isinf(predict(sel, DC_COLL_ALLREDUCE, "shmdirect", 1024, p, 2, DC_LINK_SHM)));
        assert_true(predict(sel, DC_COLL_ALLREDUCE, "shmdirect", 1024, p, 1, DC_LINK_SHM) == 0.0);
        assert_true(predict(sel, DC_COLL_ALLREDUCE, "hier", 1024, p, 1, DC_LINK_TCP) == 0.0);
        assert_true(predict(sel, DC_COLL_ALLGATHER, "hier", 1024, p, 1, DC_LINK_TCP) == 0.0);
        assert_true(predict(sel, DC_COLL_ALLREDUCE, "dbtree", 1024, p, 1, DC_LINK_TCP) == 0.0);
    }
    assert_true(isinf(predict(sel, DC_COLL_ALLREDUCE, "hier", 1024, 2, 1, DC_LINK_TCP)));
    dc_select_destroy(sel);
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
    bcast = predict(sel, DC_COLL_BROADCAST, "binomial", 1u << 20, 4, 4, DC_LINK_TCP);
    for (double scale = 0.25; scale <= 4.0; scale *= 16) {
        size_t bytes = 8;

        dc_select_set_alpha_scale(sel, scale);
        while (bytes < (1u << 30) &&
               strcmp(first(sel, DC_COLL_ALLREDUCE, bytes, 4, 4, DC_LINK_TCP), "rd") == 0) {
            bytes *= 2;
        }
        *(scale < 1.0 ? &lo : &hi) = bytes;
        assert_true(predict(sel, DC_COLL_BROADCAST, "binomial", 1u << 20, 4, 4,
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
        pred[2 * i] = predict(sel, DC_COLL_BARRIER, "dissemination", 0, 2, 1, cls[i]);
        pred[2 * i + 1] = predict(sel, DC_COLL_ALLGATHER, "ring", 2u << 20, 2, 1, cls[i]);
    }
    pred[6] = predict(sel, DC_COLL_ALLREDUCE, "shmdirect", 1u << 20, 2, 1, DC_LINK_SHM);
    pred[7] = predict(sel, DC_COLL_REDUCESCATTER, "rhalving", 1u << 20, 2, 1, DC_LINK_SHM);
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
        cmocka_unit_test(test_builtin_costs),
        cmocka_unit_test(test_model_allreduce),
        cmocka_unit_test(test_model_sorted),
        cmocka_unit_test(test_model_others),
        cmocka_unit_test(test_model_params),
        cmocka_unit_test(test_model_mpi),
        cmocka_unit_test(test_model_one_rank),
        cmocka_unit_test(test_alpha_scale),
        cmocka_unit_test(test_forced),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_calibrate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
