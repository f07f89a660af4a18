/*
 * What dbench (dcomm) and mpi_bench (Open MPI) share: nccl-tests' flags and
 * columns, verifiable data, the size loop and the report. A backend provides
 * the collectives; this file does everything else, so the two print the same
 * table for the same flags.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>

enum { B_ALLREDUCE, B_BROADCAST, B_ALLGATHER, B_REDUCESCATTER, B_ALLTOALL, B_NCOLLS };
enum { B_INT8, B_UINT8, B_INT32, B_INT64, B_FLOAT16, B_BFLOAT16, B_FLOAT32, B_FLOAT64, B_NTYPES };
enum { B_SUM, B_PROD, B_MIN, B_MAX, B_AVG, B_NOPS };
enum { B_AGG_SUM, B_AGG_MIN, B_AGG_MAX };

/* One collective call. count: allreduce, broadcast: elements of the buffer;
 * allgather: elements each rank sends (recvbuf holds count * size);
 * reducescatter: elements each rank receives (sendbuf holds count * size);
 * alltoall: elements per peer (both buffers hold count * size). */
typedef struct bench_call {
    int coll, dtype, op, root;
    int inplace;   /* allreduce only: sendbuf == recvbuf */
    size_t count;
    const void *sendbuf;
    void *recvbuf;
    const char *name; /* unique per (collective, size, dtype, op, placement) */
} bench_call_t;

typedef struct bench_backend {
    const char *name; /* "dcomm", "dcomm-direct", "openmpi" */
    int rank, size;
    void *ctx;
    /* 1 when this backend can run it; else 0 and *why says why */
    int (*supports)(void *ctx, int coll, int dtype, int op, const char **why);
    /* Runs one call to completion; recvbuf holds the result afterwards.
     * 0, or -1 after printing the error with the rank. */
    int (*run)(void *ctx, const bench_call_t *call);
    /* v combined over all ranks */
    double (*agg)(void *ctx, double v, int how);
    void (*barrier)(void *ctx);
    /* Algorithm of the last run, or NULL */
    const char *(*algo)(void *ctx);
    const char *info; /* extra header line text (transport, mode) or NULL */
} bench_backend_t;

typedef struct bench_opts {
    size_t minbytes, maxbytes, stepbytes;
    double stepfactor;
    int iters, warmup, check, root, average, json;
    int colls[B_NCOLLS], ncolls;
    int dtypes[B_NTYPES], ndtypes;
    int ops[B_NOPS], nops;
    int direct; /* dbench: --direct */
    int blocking; /* dbench: --blocking */
} bench_opts_t;

extern const char *const bench_coll_names[B_NCOLLS];
extern const char *const bench_type_names[B_NTYPES];
extern const char *const bench_op_names[B_NOPS];

/* Parses nccl-tests' flags; allow_direct: accept --direct. Returns 0, 1 after
 * printing help (exit 0), -1 after printing an error (exit 2). */
int bench_parse(int argc, char **argv, const char *prog, int allow_direct, bench_opts_t *o);

/* The whole benchmark; returns the process exit code (non-zero when any value
 * was wrong or a call failed). */
int bench_main(const bench_opts_t *o, const bench_backend_t *be);

size_t bench_type_size(int dtype);

#endif
