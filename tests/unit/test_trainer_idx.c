/* dtrain's IDX loader (trainer/idx.c): well-formed files load, plain and gzip;
 * a header that promises more data than the file holds is refused as truncated
 * without allocating what it promises (found by tests/fuzz/fuzz_idx). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"

/* A sanitizer's shadow memory needs terabytes of address space: no RLIMIT_AS then. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static char path[] = "/tmp/dcomm-test-idx-XXXXXX";

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An images file: header count x rows x cols, then `have` data bytes (i % 251). */
static void write_images(uint32_t count, uint32_t rows, uint32_t cols, size_t have, int gz)
{
    uint8_t hdr[16];
    uint8_t *data = malloc(have > 0 ? have : 1);

    assert_non_null(data);
    for (size_t i = 0; i < have; i++) {
        data[i] = (uint8_t)(i % 251);
    }
    put_be32(hdr, 0x803);
    put_be32(hdr + 4, count);
    put_be32(hdr + 8, rows);
    put_be32(hdr + 12, cols);
    if (gz) {
        gzFile f = gzopen(path, "wb");

        assert_non_null(f);
        assert_int_equal(gzwrite(f, hdr, sizeof(hdr)), (int)sizeof(hdr));
        if (have > 0) {
            assert_int_equal(gzwrite(f, data, (unsigned)have), (int)have);
        }
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");

        assert_non_null(f);
        assert_int_equal(fwrite(hdr, 1, sizeof(hdr), f), sizeof(hdr));
        assert_int_equal(fwrite(data, 1, have, f), have);
        assert_int_equal(fclose(f), 0);
    }
    free(data);
}

static void check_loads(uint32_t count, uint32_t rows, uint32_t cols, int gz)
{
    size_t len = (size_t)count * rows * cols;
    idx_data_t d = {0};
    char err[512] = "";

    write_images(count, rows, cols, len, gz);
    assert_int_equal(idx_load(path, 3, &d, err, sizeof(err)), 0);
    assert_int_equal(d.count, (int)count);
    assert_int_equal(d.rows, (int)rows);
    assert_int_equal(d.cols, (int)cols);
    for (size_t i = 0; i < len; i += 4093) {
        assert_int_equal(d.data[i], (uint8_t)(i % 251));
    }
    assert_int_equal(d.data[len - 1], (uint8_t)((len - 1) % 251));
    idx_free(&d);
}

static void test_loads(void **state)
{
    (void)state;
    check_loads(2, 3, 3, 0);
    check_loads(2, 3, 3, 1);
    /* Larger than the first read: the buffer grows while reading. */
    check_loads(3, 1024, 1024, 0);
    check_loads(3, 1024, 1024, 1);
}

static void check_truncated(uint32_t count, uint32_t rows, uint32_t cols, size_t have, int gz)
{
    idx_data_t d = {0};
    char err[512] = "", want[128];

    write_images(count, rows, cols, have, gz);
    assert_int_equal(idx_load(path, 3, &d, err, sizeof(err)), -1);
    assert_null(d.data);
    snprintf(want, sizeof(want), "header promises %zu bytes of data, file has %zu",
             (size_t)count * rows * cols, have);
    if (strstr(err, want) == NULL) {
        fail_msg("expected '...%s', got '%s'", want, err);
    }
}

static void test_truncated(void **state)
{
    struct rlimit lim = {.rlim_cur = 1ull << 30, .rlim_max = RLIM_INFINITY};
    struct rlimit old;

    (void)state;
    check_truncated(2, 3, 3, 10, 0);
    check_truncated(3, 1024, 1024, 1536 * 1024, 1);
    /* The largest header the loader accepts (2^50 bytes) over 10 bytes: an error
     * about the file, not an attempt to allocate a petabyte (which failed, as
     * "out of memory", before the buffer grew with the data), nor 8 GiB that a
     * 1 GiB address space cannot hold. */
    assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
    lim.rlim_max = old.rlim_max;
    if (!SANITIZED && (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > lim.rlim_cur)) {
        assert_int_equal(setrlimit(RLIMIT_AS, &lim), 0);
    }
    check_truncated(1u << 26, 4096, 4096, 10, 0);
    check_truncated(1u << 26, 4096, 4096, 10, 1);
    check_truncated(2048, 2048, 2048, 100, 0);
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
}

static void test_trailing(void **state)
{
    idx_data_t d = {0};
    char err[512] = "";

    (void)state;
    write_images(1, 2, 2, 5, 0);
    assert_int_equal(idx_load(path, 3, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "trailing bytes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing),
    };
    int fd = mkstemp(path), rc;

    if (fd < 0) {
        return 1;
    }
    close(fd);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(path);
    return rc;
}
