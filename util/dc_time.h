/* Monotonic time and deadlines. */
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

#endif
