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
#include "coord.h"
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

void dc_autotune_init(coord_t *c)
{
    const char *path = dc_config.autotune_log; /* or HOROVOD_AUTOTUNE_LOG */

    c->tune.enabled = dc_config.autotune && c->rank == 0 && c->cache.capacity > 0;
    c->tune.current = 255;
    if (!c->tune.enabled) {
        return;
    }
    c->tune.current = setting(0, A_DEFAULT);
    c->tune.best = -1;
    if (path[0] != '\0') {
        c->tune.log = fopen(path, "w");
        if (c->tune.log == NULL) {
            DC_WARN("autotune: cannot write DCOMM_AUTOTUNE_LOG '%s'", path);
        } else {
            fprintf(c->tune.log,
                    "sample,fusion_threshold,cycle_time_us,alpha_scale,bytes,seconds,gbs\n");
        }
    }
}

void dc_autotune_free(coord_t *c)
{
    if (c->tune.log != NULL) {
        fclose(c->tune.log);
        c->tune.log = NULL;
    }
}

/* Applies the agreed index (every rank, after the vector allreduce). */
void dc_autotune_apply(coord_t *c, int index)
{
    size_t g = (size_t)index % NG, a = (size_t)index / NG;

    if (index < 0 || a >= NA) {
        return;
    }
    c->fusion_threshold = thresholds[g / NC];
    c->cycle_ns = cycles_us[g % NC] * 1000ull;
    dc_select_set_alpha_scale(c->sel, alpha_scales[a]);
}

/* The next setting to try after the current one; -1 when all are done. The
 * grid first (alpha scale 1), then the other scales at the best grid point. */
static int next_setting(coord_t *c)
{
    size_t g = (size_t)c->tune.current % NG, a = (size_t)c->tune.current / NG;

    if (c->tune.phase == 0 && g + 1 < NG) {
        return setting(g + 1, A_DEFAULT);
    }
    a = c->tune.phase == 0 ? 0 : a + 1;
    c->tune.phase = 1;
    if (a == A_DEFAULT) {
        a++; /* measured in the grid */
    }
    return a < NA ? setting((size_t)c->tune.best % NG, a) : -1;
}

/* Rank 0, once per cycle: bytes executed this cycle and the cycle's length. */
void dc_autotune_sample(coord_t *c, uint64_t bytes, uint64_t ns)
{
    double gbs;
    int next;

    if (!c->tune.enabled || c->tune.done || bytes == 0) {
        return;
    }
    c->tune.bytes += bytes;
    c->tune.ns += ns;
    if (++c->tune.cycles < WINDOW_CYCLES) {
        return;
    }
    gbs = c->tune.ns ? (double)c->tune.bytes / (double)c->tune.ns : 0.0;
    if (c->tune.log != NULL) {
        fprintf(c->tune.log, "%d,%llu,%llu,%g,%llu,%.6f,%.4f\n", c->tune.current,
                (unsigned long long)c->fusion_threshold,
                (unsigned long long)(c->cycle_ns / 1000),
                alpha_scales[(size_t)c->tune.current / NG], (unsigned long long)c->tune.bytes,
                (double)c->tune.ns / 1e9, gbs);
        fflush(c->tune.log);
    }
    if (c->tune.best < 0 || gbs > c->tune.best_gbs) {
        c->tune.best = c->tune.current;
        c->tune.best_gbs = gbs;
    }
    c->tune.bytes = c->tune.ns = 0;
    c->tune.cycles = 0;
    next = next_setting(c);
    if (next >= 0) {
        c->tune.current = next;
        return;
    }
    c->tune.current = c->tune.best;
    c->tune.done = 1;
    DC_INFO("autotune: fusion threshold %llu, cycle time %llu us, allreduce alpha scale %g "
            "(%.2f GB/s)",
            (unsigned long long)thresholds[(size_t)c->tune.best % NG / NC],
            (unsigned long long)cycles_us[(size_t)c->tune.best % NG % NC],
            alpha_scales[(size_t)c->tune.best / NG], c->tune.best_gbs);
}
