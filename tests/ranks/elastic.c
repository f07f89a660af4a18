/* The elastic re-init loop of a C program, run by elastic_test.sh through
 * dlaunch --min-np: the worker that started as rank VICTIM dies (SIGKILL, or
 * exit code 3 with "exit") at step KILL_STEP of its first round; the others'
 * allreduce fails with DCOMM_ERR_PEER_LOST naming the lost rank, and they
 * dcomm_shutdown + dcomm_init into the next round, with new rank numbers and
 * a smaller size, where every allreduce must again sum correctly. The step
 * counter is the committed state: rank 0 broadcasts it after each init.
 * usage: elastic STEPS VICTIM KILL_STEP [kill|exit] */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rank_util.h"

#define MAX_ROUNDS 8
#define COUNT      4099 /* not a multiple of any rank count */

/* One step: every rank contributes rank + 1 + step at each index; the sum is
 * known. Returns DCOMM_OK, DCOMM_ERR_PEER_LOST, or exits on a wrong sum. */
static dcomm_status_t step_once(int step, int32_t *buf)
{
    int size = dcomm_size(), rank = dcomm_rank();
    int64_t want = (int64_t)size * (size + 1) / 2 + (int64_t)size * step;
    dcomm_status_t s;

    for (int i = 0; i < COUNT; i++) {
        buf[i] = rank + 1 + step;
    }
    s = dcomm_allreduce(DCOMM_COMM_WORLD, "elastic.step", buf, buf, COUNT, DCOMM_INT32,
                        DCOMM_SUM);
    if (s != DCOMM_OK) {
        return s;
    }
    for (int i = 0; i < COUNT; i++) {
        if (buf[i] != want) {
            fprintf(stderr, "rank %d of %d: step %d: element %d is %d, not %lld\n", rank, size,
                    step, i, (int)buf[i], (long long)want);
            exit(1);
        }
    }
    return DCOMM_OK;
}

int main(int argc, char **argv)
{
    int32_t *buf = malloc(COUNT * sizeof(int32_t));
    const char *hvd_rank = getenv("HOROVOD_RANK");
    int steps, victim, kill_step, start_rank, committed = 0;

    if (argc < 4 || buf == NULL || hvd_rank == NULL) {
        fprintf(stderr, "usage: elastic STEPS VICTIM KILL_STEP [kill|exit] (under dlaunch)\n");
        return 2;
    }
    steps = atoi(argv[1]);
    victim = atoi(argv[2]);
    kill_step = atoi(argv[3]);
    start_rank = atoi(hvd_rank);
    for (int round = 1; round <= MAX_ROUNDS; round++) {
        dcomm_status_t s = DCOMM_OK;

        CHECK_OK(dcomm_init());
        /* The committed state comes from rank 0, the longest-lived worker. */
        CHECK_OK(dcomm_broadcast(DCOMM_COMM_WORLD, "elastic.commit", &committed, 1, DCOMM_INT32,
                                 0));
        printf("start_rank %d: round %d: rank %d of %d from step %d\n", start_rank, round,
               dcomm_rank(), dcomm_size(), committed);
        fflush(stdout);
        for (; committed < steps && s == DCOMM_OK; committed += s == DCOMM_OK) {
            if (start_rank == victim && round == 1 && committed == kill_step) {
                if (argc > 4 && strcmp(argv[4], "exit") == 0) {
                    fprintf(stderr, "start_rank %d: failing on purpose\n", start_rank);
                    exit(3);
                }
                raise(SIGKILL);
            }
            s = step_once(committed, buf);
        }
        if (s == DCOMM_OK) {
            printf("start_rank %d: done: rank %d of %d, %d steps\n", start_rank, dcomm_rank(),
                   dcomm_size(), committed);
            CHECK_OK(dcomm_shutdown());
            free(buf);
            return 0;
        }
        if (s != DCOMM_ERR_PEER_LOST) {
            fprintf(stderr, "start_rank %d: step %d: %s (%s)\n", start_rank, committed,
                    dcomm_status_string(s), dcomm_last_error());
            return 1;
        }
        printf("start_rank %d: peer lost at step %d: %s\n", start_rank, committed,
               dcomm_last_error());
        fflush(stdout);
        CHECK_OK(dcomm_shutdown());
    }
    fprintf(stderr, "start_rank %d: still failing after %d rounds\n", start_rank, MAX_ROUNDS);
    return 1;
}
