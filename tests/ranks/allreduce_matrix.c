/*
 * Every dtype x op x count {0, 1, 7, 1000003 (prime)}, plus 4 MiB of data for
 * SUM and AVG, in place and out of place,
 * against a reference computed locally from every rank's (reproducible) input;
 * then the ranks compare a hash of each result, so results must be
 * bit-identical everywhere. Inputs are small integers so SUM/PROD/MIN/MAX are
 * exact in every dtype; AVG allows one rounding of the final scaling.
 */
#include "matrix_util.h"

static const size_t counts[] = {0, 1, 7, 1000003, 0 /* 4 MiB of data */};

int main(void)
{
    size_t maxbytes = counts[3] * 8;
    char *send = malloc(maxbytes), *recv = malloc(maxbytes);
    int rank, size, cases = 0, failures = 0;

    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    for (int dt = 0; dt < DCOMM_DTYPE_COUNT; dt++) {
        for (int op = 0; op < DCOMM_OP_COUNT; op++) {
            if (op == DCOMM_AVG && dt < DCOMM_FLOAT16) {
                /* Refused by the call itself. */
                dcomm_status_t s = dcomm_allreduce(DCOMM_COMM_WORLD, "avg.int", send, recv, 1,
                                                   (dcomm_dtype_t)dt, DCOMM_AVG);
                if (s != DCOMM_ERR_INVALID_ARG) {
                    fprintf(stderr, "rank %d: AVG on %s gave %d\n", rank, dtype_names[dt], s);
                    failures++;
                }
                continue;
            }
            for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
                if (c == 4 && op != DCOMM_SUM && op != DCOMM_AVG) {
                    continue;
                }
                for (int inplace = 0; inplace < 2; inplace++) {
                    size_t es = dcomm_dtype_size((dcomm_dtype_t)dt), bad = 0;
                    size_t n = c == 4 ? (4u << 20) / es : counts[c];
                    char name[128];
                    void *out = inplace ? send : recv;
                    int64_t h, hmin, hmax;

                    for (size_t i = 0; i < n; i++) {
                        store(send, i, (dcomm_dtype_t)dt,
                              input(rank, i, (dcomm_dtype_t)dt, (dcomm_op_t)op));
                    }
                    memset(recv, 0x5a, n * es);
                    snprintf(name, sizeof(name), "m.%s.%s.%zu.%s", dtype_names[dt], op_names[op],
                             n, inplace ? "in" : "out");
                    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, name, send, out, n,
                                             (dcomm_dtype_t)dt, (dcomm_op_t)op));
                    for (size_t i = 0; i < n; i++) {
                        double want = reference(size, i, (dcomm_dtype_t)dt, (dcomm_op_t)op);
                        double got = load(out, i, (dcomm_dtype_t)dt);

                        if (!(fabs(got - want) <= tolerance((dcomm_dtype_t)dt, (dcomm_op_t)op,
                                                            want))) {
                            if (bad++ < 3) {
                                fprintf(stderr, "rank %d: %s: element %zu is %g, want %g\n",
                                        rank, name, i, got, want);
                            }
                        }
                    }
                    h = (int64_t)hash_bytes(out, n * es);
                    hmin = hmax = h;
                    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "hash.min", &h, &hmin, 1,
                                             DCOMM_INT64, DCOMM_MIN));
                    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "hash.max", &h, &hmax, 1,
                                             DCOMM_INT64, DCOMM_MAX));
                    if (hmin != hmax) {
                        fprintf(stderr, "rank %d: %s: results differ between ranks\n", rank,
                                name);
                        bad++;
                    }
                    failures += bad != 0;
                    cases++;
                }
            }
        }
    }
    if (failures == 0 && rank == 0) {
        printf("allreduce matrix: %d cases correct and bit-identical on %d ranks\n", cases, size);
    }
    CHECK_OK(dcomm_shutdown());
    free(send);
    free(recv);
    return failures ? 1 : 0;
}
