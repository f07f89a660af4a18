/*
 * Autotune (autotune.c): rank 0's search for the fusion threshold, cycle time
 * and allreduce latency scale that move the most bytes per second. It only
 * chooses; the coordinator announces the choice and applies it on every rank.
 */
#ifndef DC_AUTOTUNE_H
#define DC_AUTOTUNE_H

#include <stdint.h>
#include <stdio.h>

typedef struct dc_tune {
    int enabled, done, current, best, cycles;
    int phase;                  /* 0: fusion/cycle grid, 1: alpha scales */
    double best_gbs;
    uint64_t bytes, ns;
    FILE *log;
} dc_tune_t;

/* What a setting's index stands for. */
typedef struct dc_tune_setting {
    uint64_t fusion_threshold;
    uint64_t cycle_ns;
    double alpha_scale;
} dc_tune_setting_t;

/* On rank 0 with DCOMM_AUTOTUNE, when the fast path (which carries the
 * choice) is on. */
void dc_autotune_init(dc_tune_t *t, int rank, int fast_path);
void dc_autotune_free(dc_tune_t *t);
/* The setting to announce this cycle: an index, or 255 for none. */
int dc_autotune_current(const dc_tune_t *t);
/* The setting of an agreed index; 0 when the index is out of range. */
int dc_autotune_setting(int index, dc_tune_setting_t *s_p);
/* Rank 0, once per cycle: bytes executed this cycle and the cycle's length. */
void dc_autotune_sample(dc_tune_t *t, uint64_t bytes, uint64_t ns);

#endif
