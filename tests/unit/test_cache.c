/* The response cache: bits, parameter changes, allgather counts, LRU eviction
 * (deterministic, so identical on every rank), and what is never cached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"

static dc_wire_req_t req(const char *name, int coll, uint64_t count)
{
    dc_wire_req_t r;

    memset(&r, 0, sizeof(r));
    snprintf(r.name, sizeof(r.name), "%s", name);
    r.coll = (uint8_t)coll;
    r.dtype = DCOMM_FLOAT32;
    r.count = count;
    return r;
}

static void test_hit_miss_changed(void **state)
{
    dc_cache_t cache;
    dc_wire_req_t a = req("a", DC_COLL_ALLREDUCE, 10), a2 = req("a", DC_COLL_ALLREDUCE, 11);
    int bit = -1, evicted;

    (void)state;
    assert_int_equal(dc_cache_init(&cache, 4), DCOMM_OK);
    assert_int_equal(dc_cache_lookup(&cache, &a, 0, &bit), DC_CACHE_MISS);
    assert_int_equal(dc_cache_put(&cache, &a, NULL, 0, &evicted), 0);
    assert_int_equal(evicted, -1);
    assert_int_equal(dc_cache_lookup(&cache, &a, 0, &bit), 0);
    assert_int_equal(dc_cache_lookup(&cache, &a2, 0, &bit), DC_CACHE_CHANGED);
    assert_int_equal(bit, 0);
    dc_cache_erase(&cache, 0);
    assert_int_equal(dc_cache_lookup(&cache, &a, 0, &bit), DC_CACHE_MISS);
    assert_null(dc_cache_get(&cache, 0));
    dc_cache_free(&cache);
}

/* The buffer kind is a parameter: a host tensor cached, then submitted as
 * device memory, is renegotiated; a rank without a buffer fits either. */
static void test_device_kind(void **state)
{
    dc_cache_t cache;
    dc_wire_req_t h = req("t", DC_COLL_ALLREDUCE, 10), d = h, none = h;
    int bit = -1, evicted;

    (void)state;
    d.device = DC_WIRE_DEVICE;
    none.device = DC_WIRE_NOBUF;
    assert_int_equal(dc_cache_init(&cache, 2), DCOMM_OK);
    assert_int_equal(dc_cache_put(&cache, &h, NULL, 0, &evicted), 0);
    assert_int_equal(dc_cache_lookup(&cache, &h, 0, &bit), 0);
    assert_int_equal(dc_cache_lookup(&cache, &d, 0, &bit), DC_CACHE_CHANGED);
    assert_int_equal(dc_cache_lookup(&cache, &none, 0, &bit), 0);
    dc_cache_free(&cache);
}

static void test_allgather_counts(void **state)
{
    dc_cache_t cache;
    dc_wire_req_t g0 = req("g", DC_COLL_ALLGATHER, 3), g1 = req("g", DC_COLL_ALLGATHER, 5);
    uint64_t counts[2] = {3, 5};
    int bit, evicted;

    (void)state;
    assert_int_equal(dc_cache_init(&cache, 2), DCOMM_OK);
    assert_int_equal(dc_cache_put(&cache, &g0, counts, 2, &evicted), 0);
    /* Each rank compares its own count with what the entry holds for it. */
    assert_int_equal(dc_cache_lookup(&cache, &g0, 0, &bit), 0);
    assert_int_equal(dc_cache_lookup(&cache, &g1, 1, &bit), 0);
    assert_int_equal(dc_cache_lookup(&cache, &g1, 0, &bit), DC_CACHE_CHANGED);
    assert_int_equal(dc_cache_get(&cache, 0)->counts[1], 5);
    dc_cache_free(&cache);
}

static void test_lru_eviction(void **state)
{
    dc_cache_t cache;
    dc_wire_req_t t[4] = {req("t0", DC_COLL_ALLREDUCE, 1), req("t1", DC_COLL_ALLREDUCE, 1),
                          req("t2", DC_COLL_ALLREDUCE, 1), req("t3", DC_COLL_ALLREDUCE, 1)};
    int evicted, bit;

    (void)state;
    assert_int_equal(dc_cache_init(&cache, 3), DCOMM_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dc_cache_put(&cache, &t[i], NULL, 0, &evicted), i);
    }
    dc_cache_touch(&cache, 0); /* t1 is now the least recently used */
    assert_int_equal(dc_cache_put(&cache, &t[3], NULL, 0, &evicted), 1);
    assert_int_equal(evicted, 1);
    assert_int_equal(dc_cache_lookup(&cache, &t[1], 0, &bit), DC_CACHE_MISS);
    assert_int_equal(dc_cache_lookup(&cache, &t[3], 0, &bit), 1);
    dc_cache_free(&cache);
}

static void test_not_cached(void **state)
{
    dc_cache_t cache, off;
    dc_wire_req_t noname = req("allreduce.noname.3", DC_COLL_ALLREDUCE, 1);
    dc_wire_req_t bar = req("b", DC_COLL_BARRIER, 0), a = req("a", DC_COLL_ALLREDUCE, 1);
    int evicted, bit;

    (void)state;
    assert_int_equal(dc_cache_init(&cache, 2), DCOMM_OK);
    assert_int_equal(dc_cache_put(&cache, &noname, NULL, 0, &evicted), -1);
    assert_int_equal(dc_cache_put(&cache, &bar, NULL, 0, &evicted), -1);
    assert_int_equal(dc_cache_init(&off, 0), DCOMM_OK);
    assert_int_equal(dc_cache_put(&off, &a, NULL, 0, &evicted), -1);
    assert_int_equal(dc_cache_lookup(&off, &a, 0, &bit), DC_CACHE_MISS);
    dc_cache_free(&cache);
    dc_cache_free(&off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_changed), cmocka_unit_test(test_device_kind),
        cmocka_unit_test(test_allgather_counts),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_not_cached),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
