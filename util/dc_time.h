/* Monotonic time, deadlines and the waits' adaptive spin. */
#ifndef DC_TIME_H
#define DC_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t dc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Deadline `ms` milliseconds from now; ms <= 0 means none (UINT64_MAX). */
static inline uint64_t dc_deadline_ms(int64_t ms)
{
    return ms <= 0 ? UINT64_MAX : dc_now_ns() + (uint64_t)ms * 1000000ull;
}

void dc_sleep_ns(uint64_t ns);

/* A peer that comes this long after a wait's spin ended was not running. */
#define DC_SPIN_LATE_NS 200000ull

/* The next spin budget of a wait (net.c, shm_group.c), in [min, max]: twice as
 * long when the spin paid off or the peer came soon after it (it is running,
 * only later than the spin lasted), a quarter when it came late: then it was
 * not running (other processes hold the cores) and spinning only kept a core
 * from it. */
static inline int dc_spin_next(int spin, int min, int max, int on_time)
{
    return on_time ? (2 * spin < max ? 2 * spin : max) : (spin / 4 > min ? spin / 4 : min);
}

#endif
