/* A rank as a Horovod user writes one: it finds its place in HOROVOD_RANK and
 * HOROVOD_SIZE (set by dlaunch beside DCOMM_*), checks that dcomm agrees, then
 * submits bursts of small allreduces at once, which dcomm fuses unless the
 * fusion threshold (DCOMM_FUSION_THRESHOLD or HOROVOD_FUSION_THRESHOLD) is 0.
 * Run with DCOMM_STATS=1 to see the fused groups. Exit 0 when every sum is
 * right. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcomm.h"

#define NTENSORS 16
#define COUNT    256
#define ROUNDS   5

static int env_int(const char *name)
{
    const char *text = getenv(name);
    char *end;
    long v;

    if (text == NULL) {
        fprintf(stderr, "%s is not set\n", name);
        exit(3);
    }
    v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0 || v > 1 << 20) {
        fprintf(stderr, "%s='%s' is not a rank number\n", name, text);
        exit(3);
    }
    return (int)v;
}

int main(void)
{
    static float bufs[NTENSORS][COUNT];
    dcomm_handle_t handles[NTENSORS];
    int rank = env_int("HOROVOD_RANK"), size = env_int("HOROVOD_SIZE");
    int local_rank = env_int("HOROVOD_LOCAL_RANK");

    if (dcomm_init() != DCOMM_OK) {
        fprintf(stderr, "dcomm_init: %s\n", dcomm_last_error());
        return 1;
    }
    if (dcomm_rank() != rank || dcomm_size() != size || dcomm_local_rank() != local_rank) {
        fprintf(stderr, "HOROVOD_RANK %d / SIZE %d / LOCAL_RANK %d, dcomm says %d / %d / %d\n",
                rank, size, local_rank, dcomm_rank(), dcomm_size(), dcomm_local_rank());
        return 1;
    }
    for (int round = 0; round < ROUNDS; round++) {
        for (int t = 0; t < NTENSORS; t++) {
            char name[32];

            for (int i = 0; i < COUNT; i++) {
                bufs[t][i] = (float)(rank + t + i);
            }
            snprintf(name, sizeof(name), "grad.%d", t);
            if (dcomm_allreduce_async(DCOMM_COMM_WORLD, name, bufs[t], bufs[t], COUNT,
                                      DCOMM_FLOAT32, DCOMM_SUM, &handles[t]) != DCOMM_OK) {
                fprintf(stderr, "allreduce %s: %s\n", name, dcomm_last_error());
                return 1;
            }
        }
        for (int t = 0; t < NTENSORS; t++) {
            if (dcomm_wait(handles[t]) != DCOMM_OK) {
                fprintf(stderr, "wait: %s\n", dcomm_last_error());
                return 1;
            }
            dcomm_release(handles[t]);
            for (int i = 0; i < COUNT; i++) {
                float want = (float)(size * (size - 1) / 2 + size * (t + i));

                if (bufs[t][i] != want) {
                    fprintf(stderr, "round %d tensor %d [%d] = %g, expected %g\n", round, t, i,
                            (double)bufs[t][i], (double)want);
                    return 1;
                }
            }
        }
    }
    printf("hvd rank %d of %d: %d allreduces right\n", rank, size, ROUNDS * NTENSORS);
    fflush(stdout);
    return dcomm_shutdown() == DCOMM_OK ? 0 : 1;
}
