/*
 * Every dtype x op x count {0, 1, 7, 1000003}, in place and out of place,
 * against a reference computed locally from every rank's (reproducible) input;
 * then the ranks compare a hash of each result, so results must be
 * bit-identical everywhere. Inputs are small integers so SUM/PROD/MIN/MAX are
 * exact in every dtype; AVG allows one rounding of the final scaling.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dc_reduce.h"
#include "rank_util.h"

static const size_t counts[] = {0, 1, 7, 1000003};
static const char *const dtype_names[] = {"uint8", "int8",     "int32",   "int64",
                                          "float16", "bfloat16", "float32", "float64"};
static const char *const op_names[] = {"sum", "avg", "min", "max", "prod"};

/* Input of rank r at element i, as a double; PROD gets values of magnitude <= 2. */
static double input(int r, size_t i, dcomm_dtype_t dt, dcomm_op_t op)
{
    long v = (long)((i * 7 + (size_t)r * 13 + (i >> 5)) % 11);

    if (op == DCOMM_PROD) {
        static const int pv[] = {1, 2, -1, 1, -2, 1, 2, 1, -1, 1, 2};
        v = pv[v];
        return dt == DCOMM_UINT8 ? (double)(v < 0 ? 3 : v) : (double)v;
    }
    return dt == DCOMM_UINT8 ? (double)v : (double)(v - 5);
}

static void store(void *buf, size_t i, dcomm_dtype_t dt, double v)
{
    switch (dt) {
    case DCOMM_UINT8: ((uint8_t *)buf)[i] = (uint8_t)(int)v; break;
    case DCOMM_INT8: ((int8_t *)buf)[i] = (int8_t)(int)v; break;
    case DCOMM_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case DCOMM_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case DCOMM_FLOAT16: ((uint16_t *)buf)[i] = dc_float_to_half((float)v); break;
    case DCOMM_BFLOAT16: ((uint16_t *)buf)[i] = dc_float_to_bf16((float)v); break;
    case DCOMM_FLOAT32: ((float *)buf)[i] = (float)v; break;
    default: ((double *)buf)[i] = v; break;
    }
}

static double load(const void *buf, size_t i, dcomm_dtype_t dt)
{
    switch (dt) {
    case DCOMM_UINT8: return ((const uint8_t *)buf)[i];
    case DCOMM_INT8: return ((const int8_t *)buf)[i];
    case DCOMM_INT32: return ((const int32_t *)buf)[i];
    case DCOMM_INT64: return (double)((const int64_t *)buf)[i];
    case DCOMM_FLOAT16: return dc_half_to_float(((const uint16_t *)buf)[i]);
    case DCOMM_BFLOAT16: return dc_bf16_to_float(((const uint16_t *)buf)[i]);
    case DCOMM_FLOAT32: return ((const float *)buf)[i];
    default: return ((const double *)buf)[i];
    }
}

/* Reference with the dtype's own wrap-around for integers. */
static double reference(int size, size_t i, dcomm_dtype_t dt, dcomm_op_t op)
{
    double acc = input(0, i, dt, op);

    for (int r = 1; r < size; r++) {
        double v = input(r, i, dt, op);

        switch (op) {
        case DCOMM_MIN: acc = v < acc ? v : acc; break;
        case DCOMM_MAX: acc = v > acc ? v : acc; break;
        case DCOMM_PROD: acc *= v; break;
        default: acc += v; break;
        }
    }
    if (op == DCOMM_AVG) {
        acc /= size;
    }
    /* Integers wrap: store/load through the dtype gives the wrapped value. */
    if (dt == DCOMM_UINT8) {
        return (double)(uint8_t)(int)acc;
    }
    if (dt == DCOMM_INT8) {
        return (double)(int8_t)(int)acc;
    }
    return acc;
}

static double tolerance(dcomm_dtype_t dt, dcomm_op_t op, double ref)
{
    static const double eps[] = {0, 0, 0, 0, 1.0 / 1024, 1.0 / 128, 1.0 / (1 << 23),
                                 1.0 / (1ull << 52)};

    return op == DCOMM_AVG ? fabs(ref) * eps[dt] + 1e-30 : 0.0;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

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
                for (int inplace = 0; inplace < 2; inplace++) {
                    size_t n = counts[c], es = dcomm_dtype_size((dcomm_dtype_t)dt), bad = 0;
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
