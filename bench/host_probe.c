/*
 * host_probe: how fast two cores of this machine can hand data to each other
 * right now, with no dcomm, MPI or Gloo code involved.
 *
 *     host_probe [rounds]     (default 200)
 *
 * Two threads, pinned to the first two cores we may use, take turns in
 * lockstep: each copies half of a 1 MiB buffer into a shared one, waits for
 * the other, copies the other's half out, and waits again. It prints the
 * median microseconds of a round. On a virtual machine whose virtual CPUs the
 * host moves around, the figure jumps several-fold for seconds at a time
 * (every lockstep job, ours, Open MPI's and Gloo's alike, slows down with it);
 * bench/compare and bench/train_compare.sh use it to tell such phases from
 * the code they measure. Exit status 2 when fewer than two cores are usable
 * or a wait runs past its deadline.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBE_BYTES       (1u << 20)
#define PROBE_ROUNDS      200
#define PROBE_DEADLINE_NS (5ull * 1000000000ull)

typedef struct probe_side {
    _Alignas(64) _Atomic uint32_t posted; /* rounds whose half is in the shared buffer */
    _Alignas(64) _Atomic uint32_t read;   /* rounds whose other half was copied out */
} probe_side_t;

typedef struct probe {
    probe_side_t side[2];
    uint8_t *shared;     /* PROBE_BYTES: half a side */
    uint8_t *priv[2];    /* each side's own PROBE_BYTES */
    int cpu[2];
    int rounds;
    double *round_us;    /* [rounds], side 0's */
    _Atomic int failed;
} probe_t;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Until *word reaches round; 0 past the deadline. */
static int wait_round(_Atomic uint32_t *word, uint32_t round, uint64_t deadline)
{
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(word, memory_order_acquire) >= round) {
            return 1;
        }
        if ((spins & 1023) == 0 && now_ns() > deadline) {
            return 0;
        }
    }
}

static void run_side(probe_t *p, int me)
{
    const size_t half = PROBE_BYTES / 2;
    const int other = 1 - me;
    const uint64_t deadline = now_ns() + PROBE_DEADLINE_NS;
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(p->cpu[me], &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    for (uint32_t r = 1; r <= (uint32_t)p->rounds && !p->failed; r++) {
        uint64_t t0 = now_ns();

        memcpy(p->shared + (size_t)me * half, p->priv[me] + (size_t)me * half, half);
        atomic_store_explicit(&p->side[me].posted, r, memory_order_release);
        if (!wait_round(&p->side[other].posted, r, deadline)) {
            p->failed = 1;
            return;
        }
        memcpy(p->priv[me] + (size_t)other * half, p->shared + (size_t)other * half, half);
        atomic_store_explicit(&p->side[me].read, r, memory_order_release);
        /* the other must be done reading our half before we overwrite it */
        if (!wait_round(&p->side[other].read, r, deadline)) {
            p->failed = 1;
            return;
        }
        if (me == 0) {
            p->round_us[r - 1] = (double)(now_ns() - t0) / 1000.0;
        }
    }
}

static void *side_one(void *arg)
{
    run_side(arg, 1);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    probe_t p = {.rounds = argc > 1 ? atoi(argv[1]) : PROBE_ROUNDS};
    cpu_set_t usable;
    pthread_t thread;
    int found = 0;

    if (p.rounds < 1 || p.rounds > 1000000) {
        fprintf(stderr, "host_probe: rounds must be 1..1000000, not '%s'\n", argv[1]);
        return 2;
    }
    sched_getaffinity(0, sizeof(usable), &usable);
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++) {
        if (CPU_ISSET(c, &usable)) {
            p.cpu[found++] = c;
        }
    }
    if (found < 2) {
        fprintf(stderr, "host_probe: needs two usable cores, this process has %d\n", found);
        return 2;
    }
    p.shared = aligned_alloc(4096, PROBE_BYTES);
    p.priv[0] = aligned_alloc(4096, PROBE_BYTES);
    p.priv[1] = aligned_alloc(4096, PROBE_BYTES);
    p.round_us = calloc((size_t)p.rounds, sizeof(double));
    if (!p.shared || !p.priv[0] || !p.priv[1] || !p.round_us) {
        fprintf(stderr, "host_probe: out of memory\n");
        return 2;
    }
    memset(p.shared, 0, PROBE_BYTES);
    memset(p.priv[0], 1, PROBE_BYTES);
    memset(p.priv[1], 2, PROBE_BYTES);
    if (pthread_create(&thread, NULL, side_one, &p) != 0) {
        fprintf(stderr, "host_probe: cannot start a thread\n");
        return 2;
    }
    run_side(&p, 0);
    pthread_join(thread, NULL);
    if (p.failed) {
        fprintf(stderr, "host_probe: a side waited more than %llu s for the other "
                "(cores %d and %d)\n", PROBE_DEADLINE_NS / 1000000000ull, p.cpu[0], p.cpu[1]);
        return 2;
    }
    qsort(p.round_us, (size_t)p.rounds, sizeof(double), cmp_double);
    printf("%.1f\n", p.round_us[p.rounds / 2]);
    free(p.round_us);
    free(p.priv[1]);
    free(p.priv[0]);
    free(p.shared);
    return 0;
}
