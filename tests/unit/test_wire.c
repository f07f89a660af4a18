/* Negotiation messages: round trips, and every kind of malformed input is
 * refused without reading out of bounds (run under ASan in CI). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire.h"

static dc_wire_req_t make_req(const char *name, int coll, uint64_t count)
{
    dc_wire_req_t r;

    memset(&r, 0, sizeof(r));
    snprintf(r.name, sizeof(r.name), "%s", name);
    r.coll = (uint8_t)coll;
    r.dtype = DCOMM_BFLOAT16;
    r.op = DCOMM_MAX;
    r.root = 3;
    r.comm = 0;
    r.count = count;
    return r;
}

static void test_reqs_roundtrip(void **state)
{
    dc_wire_req_t a = make_req("grad.conv1.weight", DC_COLL_ALLREDUCE, 1ull << 40);
    dc_wire_req_t b = make_req("b", DC_COLL_BROADCAST, 0);
    const dc_wire_req_t *list[] = {&a, &b};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    dc_wire_req_t out;
    uint32_t flags, n;

    (void)state;
    assert_int_equal(dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_SHUTDOWN, list, 2), DCOMM_OK);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(flags, DC_WIRE_FLAG_SHUTDOWN);
    assert_int_equal(n, 2);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_OK);
    assert_string_equal(out.name, a.name);
    assert_int_equal(out.count, a.count);
    assert_int_equal(out.dtype, DCOMM_BFLOAT16);
    assert_int_equal(out.op, DCOMM_MAX);
    assert_int_equal(out.root, 3);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_OK);
    assert_string_equal(out.name, "b");
    assert_int_equal(out.coll, DC_COLL_BROADCAST);
    /* Reading past the announced entries fails cleanly. */
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    dc_wire_buf_free(&buf);
}

static void test_resps_roundtrip(void **state)
{
    dc_wire_buf_t buf = {0};
    dc_wire_resp_t r, out = {0};
    dc_wire_reader_t rd;
    uint32_t flags, n;

    (void)state;
    memset(&r, 0, sizeof(r));
    r.req = make_req("t", DC_COLL_ALLREDUCE, 7);
    assert_int_equal(dc_wire_resps_begin_encode(&buf, 0), DCOMM_OK);
    assert_int_equal(dc_wire_resp_append(&buf, &r), DCOMM_OK);
    r.error = DCOMM_ERR_MISMATCH;
    snprintf(r.text, sizeof(r.text), "ranks disagree on the count");
    assert_int_equal(dc_wire_resp_append(&buf, &r), DCOMM_OK);
    dc_wire_set_flags(&buf, DC_WIRE_FLAG_SHUTDOWN | DC_WIRE_FLAG_RANK(5));
    assert_int_equal(dc_wire_resps_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(n, 2);
    assert_int_equal(DC_WIRE_FLAG_GET_RANK(flags), 5);
    assert_true(flags & DC_WIRE_FLAG_SHUTDOWN);
    assert_int_equal(dc_wire_resp_next(&rd, &out), DCOMM_OK);
    assert_int_equal(out.error, 0);
    assert_int_equal(dc_wire_resp_next(&rd, &out), DCOMM_OK);
    assert_int_equal(out.error, DCOMM_ERR_MISMATCH);
    assert_string_equal(out.text, "ranks disagree on the count");
    /* A request list is not a response list. */
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_ERR_TRANSPORT);
    dc_wire_buf_free(&buf);
}

/* Allgather responses carry per-rank counts; more than the reader's capacity,
 * or a truncated list, is refused. */
static void test_resp_counts(void **state)
{
    uint64_t counts[3] = {5, 0, 1ull << 40}, got[3] = {0}, small[2];
    dc_wire_buf_t buf = {0};
    dc_wire_resp_t r, out;
    dc_wire_reader_t rd;
    uint32_t flags, n;

    (void)state;
    memset(&r, 0, sizeof(r));
    r.req = make_req("ag", DC_COLL_ALLGATHER, 5);
    r.ncounts = 3;
    r.counts = counts;
    assert_int_equal(dc_wire_resps_begin_encode(&buf, 0), DCOMM_OK);
    assert_int_equal(dc_wire_resp_append(&buf, &r), DCOMM_OK);
    memset(&out, 0, sizeof(out));
    out.counts = got;
    out.counts_cap = 3;
    assert_int_equal(dc_wire_resps_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_resp_next(&rd, &out), DCOMM_OK);
    assert_int_equal(out.ncounts, 3);
    assert_memory_equal(got, counts, sizeof(counts));
    out.counts = small;
    out.counts_cap = 2;
    assert_int_equal(dc_wire_resps_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_resp_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    out.counts = got;
    out.counts_cap = 3;
    assert_int_equal(dc_wire_resps_begin(&rd, buf.data, buf.len - 1, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_resp_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    dc_wire_buf_free(&buf);
}

/* Every truncation of a valid message is refused or yields only whole entries. */
static void test_truncated(void **state)
{
    dc_wire_req_t a = make_req("some.tensor", DC_COLL_ALLREDUCE, 99);
    const dc_wire_req_t *list[] = {&a, &a, &a};
    dc_wire_buf_t buf = {0};

    (void)state;
    assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 3), DCOMM_OK);
    for (size_t len = 0; len < buf.len; len++) {
        uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan catches overreads */
        dc_wire_reader_t rd;
        dc_wire_req_t out;
        uint32_t flags, n;
        dc_status_t s;

        memcpy(copy, buf.data, len);
        s = dc_wire_reqs_begin(&rd, copy, len, &flags, &n);
        if (s == DCOMM_OK) {
            uint32_t ok = 0;

            while (ok < n && dc_wire_req_next(&rd, &out) == DCOMM_OK) {
                ok++;
            }
            assert_true(ok < n); /* something was missing, and it was noticed */
        }
        free(copy);
    }
    dc_wire_buf_free(&buf);
}

static void test_hostile(void **state)
{
    dc_wire_req_t a = make_req("x", DC_COLL_ALLREDUCE, 1);
    const dc_wire_req_t *list[] = {&a};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    dc_wire_req_t out;
    uint32_t flags, n;

    (void)state;
    assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 1), DCOMM_OK);
    /* Entry count far beyond what the length can hold. */
    buf.data[12] = 0xff;
    buf.data[13] = 0xff;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_ERR_TRANSPORT);
    buf.data[12] = 1;
    buf.data[13] = 0;
    /* Name length beyond the limit. */
    buf.data[16] = 0xff;
    buf.data[17] = 0xff;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    buf.data[16] = 1;
    buf.data[17] = 0;
    /* Unknown dtype. */
    buf.data[16 + 2 + 1 + 1] = 200;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    /* Bad magic, NULL data, oversized length. */
    buf.data[0] ^= 1;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_ERR_TRANSPORT);
    assert_int_equal(dc_wire_reqs_begin(&rd, NULL, 100, &flags, &n), DCOMM_ERR_TRANSPORT);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, (size_t)DC_WIRE_MSG_MAX + 1, &flags, &n),
                     DCOMM_ERR_TRANSPORT);
    /* Random bytes never crash the decoder. */
    srand(7);
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(rand() % 96);
        uint8_t *junk = malloc(len ? len : 1);

        for (size_t i = 0; i < len; i++) {
            junk[i] = (uint8_t)rand();
        }
        if (len >= 8 && round % 2) { /* a valid header now and then */
            memcpy(junk, buf.data, 8);
            junk[0] ^= 1;
            junk[0] ^= 1;
            junk[0] = (uint8_t)(DC_WIRE_MAGIC & 0xff);
        }
        if (dc_wire_resps_begin(&rd, junk, len, &flags, &n) == DCOMM_OK) {
            uint64_t counts[4];
            dc_wire_resp_t r = {.counts = counts, .counts_cap = 4};

            for (uint32_t i = 0; i < n && dc_wire_resp_next(&rd, &r) == DCOMM_OK; i++) {
            }
        }
        free(junk);
    }
    dc_wire_buf_free(&buf);
}

static void test_name_limit(void **state)
{
    dc_wire_req_t a = make_req("", DC_COLL_ALLREDUCE, 1);
    const dc_wire_req_t *list[] = {&a};
    dc_wire_buf_t buf = {0};

    (void)state;
    memset(a.name, 'n', sizeof(a.name)); /* no NUL: too long */
    assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 1), DCOMM_ERR_INVALID_ARG);
    dc_wire_buf_free(&buf);
}

/* The buffer kind travels in the request; an unknown kind is malformed. */
static void test_device_kind(void **state)
{
    dc_wire_req_t a = make_req("d", DC_COLL_ALLGATHER, 5), out;
    const dc_wire_req_t *list[] = {&a};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    uint32_t flags, n;

    (void)state;
    for (uint8_t kind = DC_WIRE_HOST; kind <= DC_WIRE_NOBUF; kind++) {
        a.device = kind;
        assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 1), DCOMM_OK);
        assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_OK);
        assert_int_equal(out.device, kind);
    }
    a.device = DC_WIRE_NOBUF + 1;
    assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 1), DCOMM_OK);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_ERR_TRANSPORT);
    dc_wire_buf_free(&buf);
}

/* A request list with a wait section (DC_WIRE_FLAG_WAITING): the requests,
 * then the age and every pending tensor with its waited mark. */
static void test_waits_roundtrip(void **state)
{
    dc_wire_req_t a = make_req("new", DC_COLL_ALLREDUCE, 4);
    dc_wire_req_t p = make_req("pending.a", DC_COLL_ALLREDUCE, 8);
    dc_wire_req_t q = make_req("pending.b", DC_COLL_BARRIER, 0);
    const dc_wire_req_t *list[] = {&a}, *pend[] = {&p, &q};
    const uint8_t waited[] = {1, 0};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    dc_wire_req_t out;
    uint32_t flags, n, age;
    uint8_t w;

    (void)state;
    q.comm = 7;
    assert_int_equal(dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_WAITING, list, 1), DCOMM_OK);
    assert_int_equal(dc_wire_waits_encode(&buf, 4321, pend, waited, 2), DCOMM_OK);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(flags, DC_WIRE_FLAG_WAITING);
    assert_int_equal(n, 1);
    assert_int_equal(dc_wire_req_next(&rd, &out), DCOMM_OK);
    assert_string_equal(out.name, "new");
    assert_int_equal(dc_wire_waits_begin(&rd, &age, &n), DCOMM_OK);
    assert_int_equal(age, 4321);
    assert_int_equal(n, 2);
    assert_int_equal(dc_wire_wait_next(&rd, &out, &w), DCOMM_OK);
    assert_string_equal(out.name, "pending.a");
    assert_int_equal(out.count, 8);
    assert_int_equal(w, 1);
    assert_int_equal(dc_wire_wait_next(&rd, &out, &w), DCOMM_OK);
    assert_string_equal(out.name, "pending.b");
    assert_int_equal(out.coll, DC_COLL_BARRIER);
    assert_int_equal(out.comm, 7);
    assert_int_equal(w, 0);
    /* Nothing more: reading on fails cleanly. */
    assert_int_equal(dc_wire_wait_next(&rd, &out, &w), DCOMM_ERR_TRANSPORT);
    /* An empty section is valid. */
    assert_int_equal(dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_WAITING, list, 0), DCOMM_OK);
    assert_int_equal(dc_wire_waits_encode(&buf, 0, pend, waited, 0), DCOMM_OK);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_waits_begin(&rd, &age, &n), DCOMM_OK);
    assert_int_equal(n, 0);
    /* The encoder refuses more than DC_WIRE_WAITS_MAX entries. */
    assert_int_equal(dc_wire_waits_encode(&buf, 0, pend, waited, DC_WIRE_WAITS_MAX + 1),
                     DCOMM_ERR_INTERNAL);
    dc_wire_buf_free(&buf);
}

/* Every truncation of a list with a wait section is noticed; a hostile count
 * or waited mark is refused. */
static void test_waits_hostile(void **state)
{
    dc_wire_req_t p = make_req("pending", DC_COLL_ALLREDUCE, 8);
    const dc_wire_req_t *pend[] = {&p, &p, &p};
    const uint8_t waited[] = {0, 1, 0};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    dc_wire_req_t out;
    uint32_t flags, n, age;
    uint8_t w;
    size_t sec;

    (void)state;
    assert_int_equal(dc_wire_reqs_encode(&buf, DC_WIRE_FLAG_WAITING, pend, 0), DCOMM_OK);
    sec = buf.len; /* the section starts here */
    assert_int_equal(dc_wire_waits_encode(&buf, 1, pend, waited, 3), DCOMM_OK);
    for (size_t len = 16; len < buf.len; len++) {
        uint8_t *copy = malloc(len); /* exact size: ASan catches overreads */
        uint32_t ok = 0;

        memcpy(copy, buf.data, len);
        assert_int_equal(dc_wire_reqs_begin(&rd, copy, len, &flags, &n), DCOMM_OK);
        if (dc_wire_waits_begin(&rd, &age, &n) == DCOMM_OK) {
            while (ok < n && dc_wire_wait_next(&rd, &out, &w) == DCOMM_OK) {
                ok++;
            }
            assert_true(ok < 3); /* something was missing, and it was noticed */
        }
        free(copy);
    }
    /* A count the length cannot hold, and one beyond DC_WIRE_WAITS_MAX. */
    buf.data[sec + 4] = 4;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_waits_begin(&rd, &age, &n), DCOMM_ERR_TRANSPORT);
    buf.data[sec + 4] = 0xff;
    buf.data[sec + 5] = 0xff;
    buf.data[sec + 6] = 0xff;
    buf.data[sec + 7] = 0xff;
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_waits_begin(&rd, &age, &n), DCOMM_ERR_TRANSPORT);
    buf.data[sec + 4] = 3;
    buf.data[sec + 5] = buf.data[sec + 6] = buf.data[sec + 7] = 0;
    /* A waited mark other than 0 or 1 (the first entry's last byte). */
    buf.data[sec + 8 + 2 + strlen("pending") + 21] = 2; /* no shape: 21 fixed bytes */
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(dc_wire_waits_begin(&rd, &age, &n), DCOMM_OK);
    assert_int_equal(dc_wire_wait_next(&rd, &out, &w), DCOMM_ERR_TRANSPORT);
    /* Random bytes after a valid header never crash the decoder. */
    srand(11);
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(rand() % 96);
        uint8_t *junk = malloc(16 + len);

        memcpy(junk, buf.data, 16);
        junk[12] = junk[13] = junk[14] = junk[15] = 0; /* no requests */
        for (size_t i = 0; i < len; i++) {
            junk[16 + i] = (uint8_t)rand();
        }
        if (len >= 8 && round % 2) {
            junk[16 + 4] = (uint8_t)(rand() % 4);
            junk[16 + 5] = junk[16 + 6] = junk[16 + 7] = 0;
        }
        assert_int_equal(dc_wire_reqs_begin(&rd, junk, 16 + len, &flags, &n), DCOMM_OK);
        if (dc_wire_waits_begin(&rd, &age, &n) == DCOMM_OK) {
            for (uint32_t i = 0; i < n && dc_wire_wait_next(&rd, &out, &w) == DCOMM_OK; i++) {
                assert_true(w <= 1);
            }
        }
        free(junk);
    }
    dc_wire_buf_free(&buf);
}

/* Shapes travel with their request: none, a scalar, 3 dims and 10 dims (the
 * last carried entry is the product of the rest); a bad dimension count and a
 * truncated list of dimensions are refused; the comparison helpers. */
static void test_shapes(void **state)
{
    dc_wire_req_t none = make_req("none", DC_COLL_ALLREDUCE, 6);
    dc_wire_req_t scalar = make_req("scalar", DC_COLL_ALLREDUCE, 1);
    dc_wire_req_t cube = make_req("cube", DC_COLL_ALLGATHER, 24);
    dc_wire_req_t deep = make_req("deep", DC_COLL_ALLREDUCE, 1);
    const dc_wire_req_t *list[] = {&none, &scalar, &cube, &deep};
    dc_wire_buf_t buf = {0};
    dc_wire_reader_t rd;
    dc_wire_req_t out[4], other;
    uint32_t flags, n;
    char text[128];

    (void)state;
    scalar.has_shape = 1;
    cube.has_shape = 1;
    cube.ndims = 3;
    cube.dims[0] = 2;
    cube.dims[1] = 3;
    cube.dims[2] = 4;
    deep.has_shape = 1;
    deep.ndims = 10;
    for (int i = 0; i < DC_WIRE_DIMS_MAX; i++) {
        deep.dims[i] = (uint64_t)i + 1;
    }
    assert_int_equal(dc_wire_reqs_encode(&buf, 0, list, 4), DCOMM_OK);
    assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
    assert_int_equal(n, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dc_wire_req_next(&rd, &out[i]), DCOMM_OK);
        assert_int_equal(out[i].has_shape, list[i]->has_shape);
        assert_true(dc_wire_same_shape(&out[i], list[i], 0));
    }
    assert_int_equal(out[3].ndims, 10);
    assert_int_equal(out[3].dims[DC_WIRE_DIMS_MAX - 1], DC_WIRE_DIMS_MAX);
    dc_wire_shape_text(&out[2], text, sizeof(text));
    assert_string_equal(text, "[2, 3, 4]");
    dc_wire_shape_text(&out[0], text, sizeof(text));
    assert_string_equal(text, "an unknown shape");
    /* Other rows, same trailing dimensions: equal for allgather only. */
    other = cube;
    other.dims[0] = 7;
    assert_false(dc_wire_same_shape(&other, &cube, 0));
    assert_true(dc_wire_same_shape(&other, &cube, dc_wire_shape_from(DC_COLL_ALLGATHER)));
    other.dims[2] = 5;
    assert_false(dc_wire_same_shape(&other, &cube, 1));
    assert_false(dc_wire_same_shape(&none, &scalar, 0));
    /* The third entry's ndims byte: more than 64 dimensions is malformed. */
    {
        size_t off = 16, at;

        for (int i = 0; i < 2; i++) {
            off += 2 + strlen(list[i]->name) + 21 + 8 * (size_t)list[i]->ndims;
        }
        at = off + 2 + strlen("cube") + 20;
        assert_int_equal(buf.data[at], 3);
        buf.data[at] = 65;
        assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, buf.len, &flags, &n), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out[0]), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out[1]), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out[2]), DCOMM_ERR_TRANSPORT);
        /* Dimensions announced but cut off by the end of the message (the
         * header then counts two entries, which the length can hold). */
        buf.data[at] = 3;
        buf.data[12] = 2;
        assert_int_equal(dc_wire_reqs_begin(&rd, buf.data, at + 1 + 8, &flags, &n), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out[0]), DCOMM_OK);
        assert_int_equal(dc_wire_req_next(&rd, &out[1]), DCOMM_OK);
        rd.end = buf.data + at + 1 + 8;
        buf.data[12] = 3;
        assert_int_equal(dc_wire_req_next(&rd, &out[2]), DCOMM_ERR_TRANSPORT);
    }
    dc_wire_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reqs_roundtrip), cmocka_unit_test(test_resps_roundtrip),
        cmocka_unit_test(test_resp_counts),
        cmocka_unit_test(test_truncated),      cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_name_limit),     cmocka_unit_test(test_device_kind),
        cmocka_unit_test(test_waits_roundtrip), cmocka_unit_test(test_waits_hostile),
        cmocka_unit_test(test_shapes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
