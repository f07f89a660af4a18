/*
 * An application that initializes MPI itself (thread level from argv[1]:
 * "funneled" or "serialized") and then uses dcomm under mpirun. dcomm must not
 * finalize MPI (the application does), must leave its mpi transport out when
 * the level is below SERIALIZED, and must still bootstrap through MPI. With
 * argv[2] == "expect-fail", dcomm_init must fail cleanly (a status and a
 * message, no crash or hang), e.g. when DCOMM_TRANSPORTS=mpi cannot be served.
 */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "dcomm.h"

int main(int argc, char **argv)
{
    int want = argc > 1 && strcmp(argv[1], "funneled") == 0 ? MPI_THREAD_FUNNELED
                                                            : MPI_THREAD_SERIALIZED;
    int expect_fail = argc > 2 && strcmp(argv[2], "expect-fail") == 0;
    int provided = 0, mrank = 0, rc = 0;
    double in, out = 0;
    dcomm_status_t s;

    MPI_Init_thread(&argc, &argv, want, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &mrank);
    s = dcomm_init();
    if (expect_fail) {
        if (s == DCOMM_OK) {
            fprintf(stderr, "rank %d: dcomm_init succeeded but should have failed\n", mrank);
            rc = 1;
            dcomm_shutdown();
        } else {
            printf("rank %d: dcomm_init failed as expected: %s\n", mrank, dcomm_last_error());
        }
    } else if (s != DCOMM_OK) {
        fprintf(stderr, "rank %d: dcomm_init: %s\n", mrank, dcomm_last_error());
        rc = 1;
    } else {
        in = dcomm_rank() + 1;
        s = dcomm_allreduce(DCOMM_COMM_WORLD, "x", &in, &out, 1, DCOMM_FLOAT64, DCOMM_SUM);
        int n = dcomm_size();
        if (s != DCOMM_OK || out != n * (n + 1) / 2.0 || dcomm_rank() != mrank) {
            fprintf(stderr, "rank %d: allreduce gave %g (%s)\n", mrank, out,
                    dcomm_status_string(s));
            rc = 1;
        }
        dcomm_shutdown();
    }
    /* MPI must still be usable: dcomm did not finalize it. */
    int flag = 0;
    MPI_Finalized(&flag);
    if (flag) {
        fprintf(stderr, "rank %d: MPI was finalized by dcomm\n", mrank);
        return 1;
    }
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    if (mrank == 0) {
        printf("%s (thread level provided %d)\n", rc ? "FAIL" : "PASS", provided);
    }
    return rc;
}
