/* Deadline arithmetic of device operations (dev_deadline.h says why it is what
 * it is): saturating, and "0 = never" honoured. */
#include <limits.h>

#include "dev_deadline.h"

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return (b != 0 && a > UINT64_MAX / b) ? UINT64_MAX : a * b;
}

uint64_t dc_dev_op_deadline(uint64_t start_ns, uint64_t timeout_ms, size_t bytes)
{
    /* bytes / rate seconds, in ns, without overflowing the product first */
    uint64_t allow_ns = sat_add(sat_mul(bytes / DC_DEV_FLOOR_BYTES_PER_S, 1000000000ull),
                                (bytes % DC_DEV_FLOOR_BYTES_PER_S) * 1000000000ull /
                                    DC_DEV_FLOOR_BYTES_PER_S);

    if (timeout_ms == 0) {
        return DC_DEV_NO_DEADLINE;
    }
    return sat_add(sat_add(start_ns, sat_mul(timeout_ms, 1000000ull)), allow_ns);
}

int dc_dev_wait_ms(uint64_t timeout_ms)
{
    return (timeout_ms == 0 || timeout_ms > INT_MAX) ? INT_MAX : (int)timeout_ms;
}
