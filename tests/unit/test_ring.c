/* The ring schedule: segments tile the buffer, and after the reduce-scatter
 * steps every segment has been reduced exactly once per rank, ending at its
 * owner (r + 1) % size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "coll.h"

static void test_segments(void **state)
{
    static const size_t counts[] = {0, 1, 7, 8, 1000003};

    (void)state;
    for (int size = 1; size <= 9; size++) {
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
            size_t next = 0;

            for (int i = 0; i < size; i++) {
                size_t off, len;

                dc_ring_segment(counts[c], size, i, &off, &len);
                assert_int_equal(off, next);
                /* The first count % size segments get one element more. */
                assert_int_equal(len, counts[c] / size + ((size_t)i < counts[c] % size));
                next = off + len;
            }
            assert_int_equal(next, counts[c]);
        }
    }
}

/* Simulates the schedule: contributions[seg][rank] counts how often rank's
 * input reached the copy of seg held by each rank. */
static void test_schedule(void **state)
{
    (void)state;
    for (int n = 2; n <= 8; n++) {
        int have[8][8]; /* have[r][seg]: number of inputs folded into rank r's copy */

        for (int r = 0; r < n; r++) {
            for (int s = 0; s < n; s++) {
                have[r][s] = 1;
            }
        }
        for (int step = 0; step < n - 1; step++) {
            int snap[8][8];

            memcpy(snap, have, sizeof(snap));
            for (int r = 0; r < n; r++) {
                int send, recv, left = (r - 1 + n) % n, lsend, lrecv;

                dc_ring_rs_step(r, n, step, &send, &recv);
                dc_ring_rs_step(left, n, step, &lsend, &lrecv);
                /* What the left neighbour sends is what we receive. */
                assert_int_equal(lsend, recv);
                have[r][recv] = snap[r][recv] + snap[left][lsend];
            }
        }
        for (int r = 0; r < n; r++) {
            assert_int_equal(have[r][(r + 1) % n], n);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_schedule),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
