/*
 * mpi_bench: the same flags, columns and checks as dbench (bench_common.h),
 * over Open MPI's collectives, for side-by-side comparison:
 *   mpirun -np 2 --mca pml ob1 --mca btl self,vader mpi_bench -b 8 -e 256M -f 2
 * float16, bfloat16 and avg have no MPI equivalent and are skipped.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"

static MPI_Datatype mpi_type(int dtype)
{
    switch (dtype) {
    case B_INT8: return MPI_INT8_T;
    case B_UINT8: return MPI_UINT8_T;
    case B_INT32: return MPI_INT32_T;
    case B_INT64: return MPI_INT64_T;
    case B_FLOAT32: return MPI_FLOAT;
    case B_FLOAT64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
    }
}

static MPI_Op mpi_op(int op)
{
    switch (op) {
    case B_SUM: return MPI_SUM;
    case B_PROD: return MPI_PROD;
    case B_MIN: return MPI_MIN;
    case B_MAX: return MPI_MAX;
    default: return MPI_OP_NULL;
    }
}

static int mpi_supports(void *ctx, int coll, int dtype, int op, const char **why)
{
    (void)ctx;
    if (mpi_type(dtype) == MPI_DATATYPE_NULL) {
        *why = "MPI has no standard type for it";
        return 0;
    }
    if ((coll == B_ALLREDUCE || coll == B_REDUCESCATTER) && mpi_op(op) == MPI_OP_NULL) {
        *why = "MPI has no such reduction";
        return 0;
    }
    return 1;
}

static int mpi_run(void *ctx, const bench_call_t *c)
{
    MPI_Datatype t = mpi_type(c->dtype);
    int count = (int)c->count, rc, rank;

    (void)ctx;
    if (c->count > (size_t)0x7fffffff) {
        fprintf(stderr, "mpi_bench: count %zu exceeds MPI's int\n", c->count);
        return -1;
    }
    switch (c->coll) {
    case B_ALLREDUCE:
        rc = MPI_Allreduce(c->inplace ? MPI_IN_PLACE : c->sendbuf, c->recvbuf, count, t,
                           mpi_op(c->op), MPI_COMM_WORLD);
        break;
    case B_BROADCAST:
        rc = MPI_Bcast(c->recvbuf, count, t, c->root, MPI_COMM_WORLD);
        break;
    case B_ALLGATHER:
        rc = MPI_Allgather(c->sendbuf, count, t, c->recvbuf, count, t, MPI_COMM_WORLD);
        break;
    case B_REDUCESCATTER:
        rc = MPI_Reduce_scatter_block(c->sendbuf, c->recvbuf, count, t, mpi_op(c->op),
                                      MPI_COMM_WORLD);
        break;
    default:
        rc = MPI_Alltoall(c->sendbuf, count, t, c->recvbuf, count, t, MPI_COMM_WORLD);
        break;
    }
    if (rc != MPI_SUCCESS) {
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        fprintf(stderr, "mpi_bench: rank %d: %s failed (MPI error %d)\n", rank,
                bench_coll_names[c->coll], rc);
        return -1;
    }
    return 0;
}

static double mpi_agg(void *ctx, double v, int how)
{
    static const MPI_Op ops[3] = {MPI_SUM, MPI_MIN, MPI_MAX};
    double out = v;

    (void)ctx;
    MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, ops[how], MPI_COMM_WORLD);
    return out;
}

static void mpi_barrier(void *ctx)
{
    (void)ctx;
    MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    bench_backend_t be = {.name = "openmpi", .supports = mpi_supports, .run = mpi_run,
                          .agg = mpi_agg, .barrier = mpi_barrier};
    char info[MPI_MAX_LIBRARY_VERSION_STRING + 16], lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0, rc;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &be.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &be.size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    rc = bench_parse(argc, argv, "mpi_bench", 0, &o);
    if (rc != 0) {
        MPI_Finalize();
        return rc > 0 ? 0 : 2;
    }
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, "\n,")] = '\0';
    snprintf(info, sizeof(info), "library: %s", lib);
    be.info = info;
    rc = bench_main(&o, &be);
    MPI_Finalize();
    return rc;
}
