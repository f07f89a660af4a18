/*
 * Autotune (DCOMM_AUTOTUNE=1): rank 0 tries each (fusion threshold, cycle
 * time) pair of a small grid for a window of busy cycles, measures the bytes
 * the ranks reduced per second of wall time, and keeps the best pair. The
 * choice travels in one byte of the fast-path vector: rank 0 writes the
 * pair's index, every other rank 255, so the MIN over the ranks is rank 0's
 * choice and every rank switches in the same cycle. DCOMM_AUTOTUNE_LOG names
 * a CSV file of the samples. Needs the response cache (the fast path).
 */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "coord.h"
#include "dc_time.h"
#include "log.h"

static const uint64_t thresholds[] = {1u << 20, 4u << 20, 16u << 20, 64u << 20, 128u << 20};
static const uint64_t cycles_us[] = {500, 1000, 2500, 5000};
#define NT (sizeof(thresholds) / sizeof(thresholds[0]))
#define NC (sizeof(cycles_us) / sizeof(cycles_us[0]))
#define WINDOW_CYCLES 5 /* busy cycles per sample */

void dc_autotune_init(coord_t *c)
{
    const char *path = getenv("DCOMM_AUTOTUNE_LOG");

    c->tune.enabled = dc_config.autotune && c->rank == 0 && c->cache.capacity > 0;
    c->tune.current = 255;
    if (!c->tune.enabled) {
        return;
    }
    c->tune.current = 0;
    c->tune.best = -1;
    if (path != NULL && path[0] != '\0') {
        c->tune.log = fopen(path, "w");
        if (c->tune.log == NULL) {
            DC_WARN("autotune: cannot write DCOMM_AUTOTUNE_LOG '%s'", path);
        } else {
            fprintf(c->tune.log, "sample,fusion_threshold,cycle_time_us,bytes,seconds,gbs\n");
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
    if (index < 0 || (size_t)index >= NT * NC) {
        return;
    }
    c->fusion_threshold = thresholds[(size_t)index / NC];
    c->cycle_ns = cycles_us[(size_t)index % NC] * 1000ull;
}

/* Rank 0, once per cycle: bytes executed this cycle and the cycle's length. */
void dc_autotune_sample(coord_t *c, uint64_t bytes, uint64_t ns)
{
    double gbs;

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
        fprintf(c->tune.log, "%d,%llu,%llu,%llu,%.6f,%.4f\n", c->tune.current,
                (unsigned long long)c->fusion_threshold,
                (unsigned long long)(c->cycle_ns / 1000), (unsigned long long)c->tune.bytes,
                (double)c->tune.ns / 1e9, gbs);
        fflush(c->tune.log);
    }
    if (c->tune.best < 0 || gbs > c->tune.best_gbs) {
        c->tune.best = c->tune.current;
        c->tune.best_gbs = gbs;
    }
    c->tune.bytes = c->tune.ns = 0;
    c->tune.cycles = 0;
    if ((size_t)c->tune.current + 1 < NT * NC) {
        c->tune.current++;
        return;
    }
    c->tune.current = c->tune.best;
    c->tune.done = 1;
    DC_INFO("autotune: fusion threshold %llu, cycle time %llu us (%.2f GB/s)",
            (unsigned long long)thresholds[(size_t)c->tune.best / NC],
            (unsigned long long)cycles_us[(size_t)c->tune.best % NC], c->tune.best_gbs);
}
