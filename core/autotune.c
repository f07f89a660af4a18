/*
 * Autotune (DCOMM_AUTOTUNE=1): rank 0 tries each (fusion threshold, cycle
 * time) pair of a small grid for a window of busy cycles, measures the bytes
 * the ranks reduced per second of wall time, and keeps the best pair; then,
 * with that pair, it tries scales of the cost model's latency term for
 * allreduce (which moves select.c's size thresholds between latency- and
 * bandwidth-optimal algorithms) and keeps the best. The choice travels in one
 * byte of the fast-path vector: rank 0 writes the setting's index, every other
 * rank 255, so the MIN over the ranks is rank 0's choice and every rank
 * switches in the same cycle. DCOMM_AUTOTUNE_LOG names a CSV file of the
 * samples. Needs the response cache (the fast path).
 */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "autotune.h"
#include "dc_time.h"
#include "log.h"

static const uint64_t thresholds[] = {1u << 20, 4u << 20, 16u << 20, 64u << 20, 128u << 20};
static const uint64_t cycles_us[] = {500, 1000, 2500, 5000};
static const double alpha_scales[] = {0.25, 0.5, 1.0, 2.0, 4.0};
#define NT (sizeof(thresholds) / sizeof(thresholds[0]))
#define NC (sizeof(cycles_us) / sizeof(cycles_us[0]))
#define NA (sizeof(alpha_scales) / sizeof(alpha_scales[0]))
#define NG (NT * NC)          /* the grid of (threshold, cycle time) pairs */
#define A_DEFAULT 2           /* alpha_scales[A_DEFAULT] == 1.0 */
#define WINDOW_CYCLES 5       /* busy cycles per sample */
_Static_assert(NG * NA < 255, "a setting's index fits the vector's byte, 255 aside");

/* A setting's index: grid point g with alpha scale a. */
static int setting(size_t g, size_t a)
{
    return (int)(g + NG * a);
}

void dc_autotune_init(dc_tune_t *t, int rank, int fast_path)
{
    const char *path = dc_config.autotune_log; /* or HOROVOD_AUTOTUNE_LOG */

    t->enabled = dc_config.autotune && rank == 0 && fast_path;
    t->current = 255;
    if (!t->enabled) {
        return;
    }
    t->current = setting(0, A_DEFAULT);
    t->best = -1;
    if (path[0] != '\0') {
        t->log = fopen(path, "w");
        if (t->log == NULL) {
            DC_WARN("autotune: cannot write DCOMM_AUTOTUNE_LOG '%s'", path);
        } else {
            fprintf(t->log,
                    "sample,fusion_threshold,cycle_time_us,alpha_scale,bytes,seconds,gbs\n");
        }
    }
}

void dc_autotune_free(dc_tune_t *t)
{
    if (t->log != NULL) {
        fclose(t->log);
        t->log = NULL;
    }
}

int dc_autotune_current(const dc_tune_t *t)
{
    return t->current;
}

int dc_autotune_setting(int index, dc_tune_setting_t *s_p)
{
    size_t g = (size_t)index % NG, a = (size_t)index / NG;

    if (index < 0 || a >= NA) {
        return 0;
    }
    s_p->fusion_threshold = thresholds[g / NC];
    s_p->cycle_ns = cycles_us[g % NC] * 1000ull;
    s_p->alpha_scale = alpha_scales[a];
    return 1;
}

/* The next setting to try after the current one; -1 when all are done. The
 * grid first (alpha scale 1), then the other scales at the best grid point. */
static int next_setting(dc_tune_t *t)
{
    size_t g = (size_t)t->current % NG, a = (size_t)t->current / NG;

    if (t->phase == 0 && g + 1 < NG) {
        return setting(g + 1, A_DEFAULT);
    }
    a = t->phase == 0 ? 0 : a + 1;
    t->phase = 1;
    if (a == A_DEFAULT) {
        a++; /* measured in the grid */
    }
    return a < NA ? setting((size_t)t->best % NG, a) : -1;
}

void dc_autotune_sample(dc_tune_t *t, uint64_t bytes, uint64_t ns)
{
    double gbs;
    int next;

    if (!t->enabled || t->done || bytes == 0) {
        return;
    }
    t->bytes += bytes;
    t->ns += ns;
    if (++t->cycles < WINDOW_CYCLES) {
        return;
    }
    gbs = t->ns ? (double)t->bytes / (double)t->ns : 0.0;
    if (t->log != NULL) {
        fprintf(t->log, "%d,%llu,%llu,%g,%llu,%.6f,%.4f\n", t->current,
                (unsigned long long)thresholds[(size_t)t->current % NG / NC],
                (unsigned long long)cycles_us[(size_t)t->current % NG % NC],
                alpha_scales[(size_t)t->current / NG], (unsigned long long)t->bytes,
                (double)t->ns / 1e9, gbs);
        fflush(t->log);
    }
    if (t->best < 0 || gbs > t->best_gbs) {
        t->best = t->current;
        t->best_gbs = gbs;
    }
    t->bytes = t->ns = 0;
    t->cycles = 0;
    next = next_setting(t);
    if (next >= 0) {
        t->current = next;
        return;
    }
    t->current = t->best;
    t->done = 1;
    DC_INFO("autotune: fusion threshold %llu, cycle time %llu us, allreduce alpha scale %g "
            "(%.2f GB/s)",
            (unsigned long long)thresholds[(size_t)t->best % NG / NC],
            (unsigned long long)cycles_us[(size_t)t->best % NG % NC],
            alpha_scales[(size_t)t->best / NG], t->best_gbs);
}
