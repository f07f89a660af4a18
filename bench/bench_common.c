/*
 * The size loop, data, checks and report shared by dbench and mpi_bench
 * (bench_common.h). Columns and flags follow nccl-tests; bus bandwidth uses
 * the factors of its PERFORMANCE.md.
 */
#include "bench_common.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dc_half.h"

const char *const bench_coll_names[B_NCOLLS] = {"allreduce", "broadcast", "allgather",
                                                "reducescatter", "alltoall"};
const char *const bench_type_names[B_NTYPES] = {"int8", "uint8", "int32", "int64",
                                                "half", "bfloat16", "float", "double"};
const char *const bench_op_names[B_NOPS] = {"sum", "prod", "min", "max", "avg"};
static const size_t type_sizes[B_NTYPES] = {1, 1, 4, 8, 2, 2, 4, 8};

size_t bench_type_size(int dtype)
{
    return type_sizes[dtype];
}

static int is_float(int dtype)
{
    return dtype >= B_FLOAT16;
}

static int is_reduction(int coll)
{
    return coll == B_ALLREDUCE || coll == B_REDUCESCATTER;
}

/* ---- flags ---------------------------------------------------------------- */

static int parse_size(const char *s, size_t *v)
{
    char *end;
    double d = strtod(s, &end);
    double mul = 1;

    if (end == s || d < 0) {
        return -1;
    }
    switch (*end) {
    case 'K': case 'k': mul = 1024.0; end++; break;
    case 'M': case 'm': mul = 1024.0 * 1024; end++; break;
    case 'G': case 'g': mul = 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b') {
        end++;
    }
    if (*end != '\0') {
        return -1;
    }
    *v = (size_t)(d * mul);
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *v)
{
    char *end;
    long x = strtol(s, &end, 10);

    if (end == s || *end != '\0' || x < lo || x > hi) {
        return -1;
    }
    *v = (int)x;
    return 0;
}

/* "all" or one name of names[0 .. n-1] (plus aliases for types). */
static int parse_list(const char *s, const char *const *names, int n, int *out, int *nout)
{
    static const struct { const char *alias; int type; } aliases[] = {
        {"float32", B_FLOAT32}, {"float64", B_FLOAT64}, {"float16", B_FLOAT16},
        {"fp16", B_FLOAT16}, {"bf16", B_BFLOAT16}, {"int", B_INT32}, {"char", B_INT8}};

    if (strcmp(s, "all") == 0) {
        for (int i = 0; i < n; i++) {
            out[i] = i;
        }
        *nout = n;
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            out[0] = i;
            *nout = 1;
            return 0;
        }
    }
    if (names == bench_type_names) {
        for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
            if (strcmp(s, aliases[i].alias) == 0) {
                out[0] = aliases[i].type;
                *nout = 1;
                return 0;
            }
        }
    }
    return -1;
}

static void usage(const char *prog, int allow_direct)
{
    printf("usage: %s [flags]   (flags and columns of nccl-tests)\n"
           "  -b <bytes>   smallest size (default 32M; K, M, G suffixes)\n"
           "  -e <bytes>   largest size (default 32M)\n"
           "  -f <factor>  multiply the size by this each step (default 1: use -i)\n"
           "  -i <bytes>   add this to the size each step when -f is 1 (default 1M)\n"
           "  -n <iters>   timed iterations per size (default 20)\n"
           "  -w <iters>   warm-up iterations per size (default 5)\n"
           "  -c <0|1>     check the results (default 1); a wrong value fails the run\n"
           "  -o <coll>    allreduce, broadcast, allgather, reducescatter, alltoall, all\n"
           "  -d <type>    int8 uint8 int32 int64 half bfloat16 float double, all (default float)\n"
           "  -R <op>      sum prod min max avg, all (default sum)\n"
           "  -r <root>    broadcast root (default 0)\n"
           "  -a <0..3>    time over ranks: 0 rank 0, 1 average, 2 minimum, 3 maximum (default 1)\n"
           "  -J           also print one JSON object per row (lines starting with '{')\n"
           "%s",
           prog, allow_direct ? "  --direct     run the algorithm alone on the transport, without "
                                "the coordinator\n"
                                "  --blocking   allreduce, broadcast: the blocking calls (dcomm_allreduce)"
                                "\n               instead of _async then dcomm_wait\n" : "");
}

int bench_parse(int argc, char **argv, const char *prog, int allow_direct, bench_opts_t *o)
{
    *o = (bench_opts_t){.minbytes = 32u << 20, .maxbytes = 32u << 20, .stepbytes = 1u << 20,
                        .stepfactor = 1, .iters = 20, .warmup = 5, .check = 1, .average = 1,
                        .colls = {B_ALLREDUCE}, .ncolls = 1, .dtypes = {B_FLOAT32}, .ndtypes = 1,
                        .ops = {B_SUM}, .nops = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(prog, allow_direct);
            return 1;
        }
        if (allow_direct && strcmp(a, "--direct") == 0) {
            o->direct = 1;
            continue;
        }
        if (allow_direct && strcmp(a, "--blocking") == 0) {
            o->blocking = 1;
            continue;
        }
        if (strcmp(a, "-J") == 0) {
            o->json = 1;
            continue;
        }
        if (a[0] != '-' || a[1] == '\0' || a[2] != '\0' || v == NULL) {
            fprintf(stderr, "%s: unknown flag or missing value: '%s' (see -h)\n", prog, a);
            return -1;
        }
        i++;
        switch (a[1]) {
        case 'b': bad = parse_size(v, &o->minbytes); break;
        case 'e': bad = parse_size(v, &o->maxbytes); break;
        case 'i': bad = parse_size(v, &o->stepbytes); break;
        case 'f': {
            char *end;
            o->stepfactor = strtod(v, &end);
            bad = end == v || *end != '\0' || !(o->stepfactor >= 1);
            break;
        }
        case 'n': bad = parse_int(v, 1, 1 << 30, &o->iters); break;
        case 'w': bad = parse_int(v, 0, 1 << 30, &o->warmup); break;
        case 'c': bad = parse_int(v, 0, 1, &o->check); break;
        case 'r': bad = parse_int(v, 0, 1 << 30, &o->root); break;
        case 'a': bad = parse_int(v, 0, 3, &o->average); break;
        case 'o': bad = parse_list(v, bench_coll_names, B_NCOLLS, o->colls, &o->ncolls); break;
        case 'd': bad = parse_list(v, bench_type_names, B_NTYPES, o->dtypes, &o->ndtypes); break;
        case 'R': bad = parse_list(v, bench_op_names, B_NOPS, o->ops, &o->nops); break;
        default:
            fprintf(stderr, "%s: unknown flag '%s' (see -h)\n", prog, a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "%s: bad value '%s' for %s (see -h)\n", prog, v, a);
            return -1;
        }
    }
    if (o->minbytes > o->maxbytes || (o->stepfactor == 1 && o->stepbytes == 0)) {
        fprintf(stderr, "%s: need -b <= -e and a step (-f > 1 or -i > 0)\n", prog);
        return -1;
    }
    return 0;
}

/* ---- data ------------------------------------------------------------------ */

/* Small integers, exact in every type and every sum of a few ranks: value of
 * element i of source s; PROD uses 1 and 2 so that products stay exact. */
static double gen(int op, int s, size_t i)
{
    unsigned v = (unsigned)((i * 13u + (size_t)s * 7u + (size_t)(s >> 3)) & 7u);

    return op == B_PROD ? (v == 0 ? 2.0 : 1.0) : (double)v;
}

static void put(int dtype, void *buf, size_t i, double v)
{
    switch (dtype) {
    case B_INT8: ((int8_t *)buf)[i] = (int8_t)(int64_t)v; break;
    case B_UINT8: ((uint8_t *)buf)[i] = (uint8_t)(int64_t)v; break;
    case B_INT32: ((int32_t *)buf)[i] = (int32_t)(int64_t)v; break;
    case B_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case B_FLOAT16: ((uint16_t *)buf)[i] = dc_float_to_half_inl((float)v); break;
    case B_BFLOAT16: ((uint16_t *)buf)[i] = dc_float_to_bf16_inl((float)v); break;
    case B_FLOAT32: ((float *)buf)[i] = (float)v; break;
    default: ((double *)buf)[i] = v; break;
    }
}

static double get(int dtype, const void *buf, size_t i)
{
    switch (dtype) {
    case B_INT8: return ((const int8_t *)buf)[i];
    case B_UINT8: return ((const uint8_t *)buf)[i];
    case B_INT32: return ((const int32_t *)buf)[i];
    case B_INT64: return (double)((const int64_t *)buf)[i];
    case B_FLOAT16: return dc_half_to_float_inl(((const uint16_t *)buf)[i]);
    case B_BFLOAT16: return dc_bf16_to_float_inl(((const uint16_t *)buf)[i]);
    case B_FLOAT32: return ((const float *)buf)[i];
    default: return ((const double *)buf)[i];
    }
}

/* The value a stored v reads back as (integer wrap-around, rounding). */
static double stored(int dtype, double v)
{
    unsigned char tmp[8];

    put(dtype, tmp, 0, v);
    return get(dtype, tmp, 0);
}

/* Element i of op over sources 0 .. n-1 (source r: gen(op, base + r, i)). */
static double expect(int dtype, int op, int n, size_t i)
{
    double acc = gen(op, 0, i);

    for (int r = 1; r < n; r++) {
        double v = gen(op, r, i);

        switch (op) {
        case B_PROD: acc *= v; break;
        case B_MIN: acc = v < acc ? v : acc; break;
        case B_MAX: acc = v > acc ? v : acc; break;
        default: acc += v; break;
        }
    }
    if (op == B_AVG) {
        acc /= n;
    }
    return stored(dtype, acc);
}

static int matches(int dtype, double got, double want)
{
    static const double tol[B_NTYPES] = {0, 0, 0, 0, 2e-3, 1.6e-2, 1e-6, 1e-12};

    if (!is_float(dtype)) {
        return got == want;
    }
    return fabs(got - want) <= tol[dtype] * (fabs(want) > 1 ? fabs(want) : 1);
}

/* Fills the input of this rank for one call (and poisons the output). */
static void fill(const bench_backend_t *be, const bench_call_t *c, void *send, void *recv)
{
    int n = be->size, me = be->rank;
    size_t esize = type_sizes[c->dtype];

    switch (c->coll) {
    case B_ALLREDUCE:
        for (size_t i = 0; i < c->count; i++) {
            put(c->dtype, c->inplace ? recv : send, i, gen(c->op, me, i));
        }
        if (!c->inplace) {
            memset(recv, 0xA5, c->count * esize);
        }
        break;
    case B_BROADCAST:
        for (size_t i = 0; i < c->count; i++) {
            put(c->dtype, recv, i, me == c->root ? gen(B_SUM, c->root, i) : 99);
        }
        break;
    case B_ALLGATHER:
        for (size_t i = 0; i < c->count; i++) {
            put(c->dtype, send, i, gen(B_SUM, me, i));
        }
        memset(recv, 0xA5, c->count * (size_t)n * esize);
        break;
    case B_REDUCESCATTER:
        for (size_t i = 0; i < c->count * (size_t)n; i++) {
            put(c->dtype, send, i, gen(c->op, me, i));
        }
        memset(recv, 0xA5, c->count * esize);
        break;
    default: /* alltoall: block p of rank r holds gen(r, p * count + i) */
        for (size_t i = 0; i < c->count * (size_t)n; i++) {
            put(c->dtype, send, i, gen(B_SUM, me, i));
        }
        memset(recv, 0xA5, c->count * (size_t)n * esize);
        break;
    }
}

/* Wrong elements of this rank's result. */
static size_t verify(const bench_backend_t *be, const bench_call_t *c, const void *recv)
{
    int n = be->size, me = be->rank;
    size_t wrong = 0, total = c->count;

    if (c->coll == B_ALLGATHER || c->coll == B_ALLTOALL) {
        total = c->count * (size_t)n;
    }
    for (size_t k = 0; k < total; k++) {
        double want;
        size_t blk = c->count ? k / c->count : 0, i = c->count ? k % c->count : 0;

        switch (c->coll) {
        case B_ALLREDUCE: want = expect(c->dtype, c->op, n, k); break;
        case B_BROADCAST: want = stored(c->dtype, gen(B_SUM, c->root, k)); break;
        case B_ALLGATHER: want = stored(c->dtype, gen(B_SUM, (int)blk, i)); break;
        case B_REDUCESCATTER:
            want = expect(c->dtype, c->op, n, (size_t)me * c->count + k);
            break;
        default: want = stored(c->dtype, gen(B_SUM, (int)blk, (size_t)me * c->count + i)); break;
        }
        wrong += !matches(c->dtype, get(c->dtype, recv, k), want);
    }
    return wrong;
}

/* ---- timing and report ------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double bus_factor(int coll, int n)
{
    switch (coll) {
    case B_ALLREDUCE: return 2.0 * (n - 1) / n;
    case B_BROADCAST: return 1.0;
    default: return (double)(n - 1) / n;
    }
}

typedef struct col_result {
    int ran;
    double time_us, algbw, busbw;
    double wrong;
    int failed;
} col_result_t;

/* One column: check run, warm-up, timed iterations, aggregation over ranks. */
static col_result_t run_column(const bench_opts_t *o, const bench_backend_t *be,
                               bench_call_t *c, void *send, void *recv, size_t bytes)
{
    col_result_t r = {.ran = 1};
    int fail = 0;
    double t0, t, local_wrong = 0;

    if (c->inplace) {
        c->sendbuf = recv;
    } else {
        c->sendbuf = send;
    }
    c->recvbuf = recv;
    if (o->check) {
        fill(be, c, send, recv);
        fail |= be->run(be->ctx, c) != 0;
        local_wrong = fail ? 0 : (double)verify(be, c, recv);
    }
    for (int i = 0; i < o->warmup && !fail; i++) {
        fail |= be->run(be->ctx, c) != 0;
    }
    be->barrier(be->ctx);
    t0 = now_s();
    for (int i = 0; i < o->iters && !fail; i++) {
        fail |= be->run(be->ctx, c) != 0;
    }
    t = (now_s() - t0) / o->iters;
    r.failed = be->agg(be->ctx, fail, B_AGG_MAX) > 0;
    switch (o->average) {
    case 0: r.time_us = be->agg(be->ctx, be->rank == 0 ? t : 0, B_AGG_SUM); break;
    case 2: r.time_us = be->agg(be->ctx, t, B_AGG_MIN); break;
    case 3: r.time_us = be->agg(be->ctx, t, B_AGG_MAX); break;
    default: r.time_us = be->agg(be->ctx, t, B_AGG_SUM) / be->size; break;
    }
    r.time_us *= 1e6;
    r.wrong = o->check ? be->agg(be->ctx, local_wrong, B_AGG_SUM) : -1;
    r.algbw = (double)bytes / (r.time_us * 1e-6) / 1e9;
    r.busbw = r.algbw * bus_factor(c->coll, be->size);
    return r;
}

static void print_col(const col_result_t *r)
{
    char wrong[32];

    if (!r->ran) {
        printf("  %8s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
        return;
    }
    if (r->failed) {
        printf("  %8s  %6s  %6s  %6s", "failed", "-", "-", "-");
        return;
    }
    if (r->wrong < 0) {
        snprintf(wrong, sizeof(wrong), "N/A");
    } else {
        snprintf(wrong, sizeof(wrong), "%.0f", r->wrong);
    }
    printf("  %8.*f  %6.2f  %6.2f  %6s", r->time_us >= 10000 ? 0 : 2, r->time_us, r->algbw,
           r->busbw, wrong);
}

static void json_col(const char *key, const col_result_t *r)
{
    if (!r->ran || r->failed) {
        printf(",\"%s\":null", key);
        return;
    }
    printf(",\"%s\":{\"time_us\":%.3f,\"algbw\":%.6g,\"busbw\":%.6g,\"wrong\":%.0f}", key,
           r->time_us, r->algbw, r->busbw, r->wrong);
}

static void *alloc_buf(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

static void print_header(const bench_opts_t *o, const bench_backend_t *be)
{
    printf("# %s: nranks %d, minBytes %zu maxBytes %zu step: %g(%s) warmup iters: %d iters: %d "
           "validation: %d\n", be->name, be->size, o->minbytes, o->maxbytes,
           o->stepfactor > 1 ? o->stepfactor : (double)o->stepbytes,
           o->stepfactor > 1 ? "factor" : "bytes", o->warmup, o->iters, o->check);
    if (be->info != NULL) {
        printf("# %s\n", be->info);
    }
}

static void print_columns(void)
{
    printf("#\n#%60s%-36s%s\n", "", "out-of-place", "in-place");
    printf("#%12s  %12s  %8s  %6s  %5s  %8s  %6s  %6s  %6s  %8s  %6s  %6s  %6s\n", "size",
           "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
           "algbw", "busbw", "#wrong");
    printf("#%12s  %12s  %8s  %6s  %5s  %8s  %6s  %6s  %6s  %8s  %6s  %6s  %6s\n", "(B)",
           "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)",
           "");
}

typedef struct totals {
    double busbw_sum;
    int nbw;
    double wrong;
    int failed;
} totals_t;

/* One row: one size of one collective, dtype and op. */
static void run_row(const bench_opts_t *o, const bench_backend_t *be, int coll, int dtype,
                    int op, size_t bytes, void *send, void *recv, totals_t *tot)
{
    size_t esize = type_sizes[dtype], n = (size_t)be->size, count;
    bench_call_t c = {.coll = coll, .dtype = dtype, .op = op, .root = o->root};
    col_result_t cols[2] = {{0}, {0}};
    char name[128];
    const char *algo = NULL;

    count = (coll == B_ALLREDUCE || coll == B_BROADCAST) ? bytes / esize : bytes / esize / n;
    if (count == 0) {
        return; /* fewer bytes than one element per rank */
    }
    c.count = count;
    bytes = (coll == B_ALLREDUCE || coll == B_BROADCAST) ? count * esize : count * n * esize;
    for (int ip = 0; ip < 2; ip++) {
        /* dcomm's API, MPI and Gloo share one in-place form: allreduce's; broadcast
         * works in one buffer and reports in the first column. */
        if (ip == 1 && coll != B_ALLREDUCE) {
            continue;
        }
        snprintf(name, sizeof(name), "bench.%s.%zu.%s.%s.%s", bench_coll_names[coll], count,
                 bench_type_names[dtype], bench_op_names[op], ip ? "ip" : "oop");
        c.inplace = ip;
        c.name = name;
        cols[ip] = run_column(o, be, &c, send, recv, bytes);
        if (algo == NULL && be->algo != NULL) {
            algo = be->algo(be->ctx);
        }
        if (cols[ip].failed) {
            tot->failed = 1;
        } else {
            tot->busbw_sum += cols[ip].busbw;
            tot->nbw++;
            tot->wrong += cols[ip].wrong > 0 ? cols[ip].wrong : 0;
        }
    }
    if (be->rank != 0) {
        return;
    }
    printf(" %12zu  %12zu  %8s  %6s  %5d", bytes, count * ((coll == B_ALLREDUCE ||
           coll == B_BROADCAST) ? 1 : n), bench_type_names[dtype],
           is_reduction(coll) ? bench_op_names[op] : "none", coll == B_BROADCAST ? o->root : -1);
    print_col(&cols[0]);
    print_col(&cols[1]);
    printf("\n");
    if (o->json) {
        printf("{\"backend\":\"%s\",\"coll\":\"%s\",\"nranks\":%d,\"size\":%zu,\"count\":%zu,"
               "\"type\":\"%s\",\"redop\":\"%s\",\"root\":%d,\"algo\":\"%s\"", be->name,
               bench_coll_names[coll], be->size, bytes, count, bench_type_names[dtype],
               is_reduction(coll) ? bench_op_names[op] : "none",
               coll == B_BROADCAST ? o->root : -1, algo ? algo : "");
        json_col("oop", &cols[0]);
        json_col("ip", &cols[1]);
        printf("}\n");
    }
    fflush(stdout);
}

int bench_main(const bench_opts_t *o, const bench_backend_t *be)
{
    size_t maxbytes = o->maxbytes, bytes;
    void *send = NULL, *recv = NULL;
    totals_t tot = {0};
    const char *why;

    if (o->root >= be->size) {
        if (be->rank == 0) {
            fprintf(stderr, "%s: root %d is not a rank of %d\n", be->name, o->root, be->size);
        }
        return 2;
    }
    send = alloc_buf(maxbytes + 64);
    recv = alloc_buf(maxbytes + 64);
    if (send == NULL || recv == NULL) {
        fprintf(stderr, "%s: rank %d cannot allocate 2 x %zu bytes\n", be->name, be->rank,
                maxbytes);
        return 2;
    }
    if (be->rank == 0) {
        print_header(o, be);
        print_columns();
    }
    for (int ci = 0; ci < o->ncolls; ci++) {
        int coll = o->colls[ci];

        for (int di = 0; di < o->ndtypes; di++) {
            for (int oi = 0; oi < (is_reduction(coll) ? o->nops : 1); oi++) {
                int dtype = o->dtypes[di], op = is_reduction(coll) ? o->ops[oi] : B_SUM;

                if (!be->supports(be->ctx, coll, dtype, op, &why)) {
                    if (be->rank == 0) {
                        printf("# %s %s %s: skipped (%s)\n", bench_coll_names[coll],
                               bench_type_names[dtype], bench_op_names[op], why);
                    }
                    continue;
                }
                for (bytes = o->minbytes; bytes <= maxbytes;) {
                    run_row(o, be, coll, dtype, op, bytes, send, recv, &tot);
                    if (o->stepfactor > 1) {
                        size_t next = (size_t)((double)bytes * o->stepfactor);
                        bytes = next > bytes ? next : bytes + 1;
                    } else {
                        bytes += o->stepbytes;
                    }
                }
            }
        }
    }
    if (be->rank == 0) {
        printf("# Out of bounds values : %.0f %s\n", tot.wrong,
               tot.wrong == 0 && !tot.failed ? "OK" : "FAILED");
        printf("# Avg bus bandwidth    : %g \n#\n", tot.nbw ? tot.busbw_sum / tot.nbw : 0.0);
        fflush(stdout);
    }
    munmap(send, maxbytes + 64);
    munmap(recv, maxbytes + 64);
    return tot.wrong > 0 || tot.failed ? 1 : 0;
}
