/*
 * The last rank kills itself with SIGKILL in a loop of allreduces. Every other
 * rank must see DCOMM_ERR_PEER_LOST within DCOMM_TIMEOUT and say so; SIGTERM
 * from dlaunch is ignored so that the library's own error path is what ends
 * the survivors. The driver (kill_test.sh) checks dlaunch's verdict.
 */
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rank_util.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void)
{
    static float buf[1 << 16];
    int rank, size;

    signal(SIGTERM, SIG_IGN);
    CHECK_OK(dcomm_init());
    rank = dcomm_rank();
    size = dcomm_size();
    for (int it = 0;; it++) {
        double t0 = now_s();
        dcomm_status_t s;

        if (rank == size - 1 && it == 20) {
            raise(SIGKILL);
        }
        s = dcomm_allreduce(DCOMM_COMM_WORLD, "kill.loop", buf, buf, sizeof(buf) / sizeof(float),
                            DCOMM_FLOAT32, DCOMM_SUM);
        if (s == DCOMM_OK) {
            continue;
        }
        printf("rank %d: iteration %d: %s after %.0f ms: %s\n", rank, it, dcomm_status_string(s),
               (now_s() - t0) * 1e3, dcomm_last_error());
        fflush(stdout);
        if (now_s() - t0 > 10.0) {
            fprintf(stderr, "rank %d: the error took longer than DCOMM_TIMEOUT\n", rank);
            return 1;
        }
        {
            /* The cause names the dead rank, here and in every later call,
             * which fails at once with DCOMM_ERR_SHUT_DOWN. */
            char dead[32];
            int named = 0;

            snprintf(dead, sizeof(dead), "rank %d", size - 1);
            named = strstr(dcomm_last_error(), dead) != NULL;
            s = dcomm_allreduce(DCOMM_COMM_WORLD, "kill.after", buf, buf, 4, DCOMM_FLOAT32,
                                DCOMM_SUM);
            printf("rank %d: next call: %s: %s\n", rank, dcomm_status_string(s),
                   dcomm_last_error());
            named = named && strstr(dcomm_last_error(), dead) != NULL;
            dcomm_shutdown();
            if (!named) {
                fprintf(stderr, "rank %d: the error does not name %s\n", rank, dead);
            }
            return s == DCOMM_ERR_SHUT_DOWN && named ? 0 : 1;
        }
    }
}
