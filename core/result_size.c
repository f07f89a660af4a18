/* Overflow-checked sizing of collective results from peer-supplied counts
 * (result_size.h): a hostile or corrupt count gives a clear error, not a small
 * buffer and a huge write. */
#include <stdint.h>
#include <unistd.h>

#include "result_size.h"

dc_status_t dc_result_size(const char *what, const size_t *counts, int n, size_t esize,
                           size_t limit_bytes, size_t *total_p, size_t *bytes_p)
{
    size_t total = 0;

    for (int i = 0; i < n; i++) {
        if (counts[i] > SIZE_MAX - total) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d's count %zu makes the "
                                "ranks' counts add up to more than %zu elements",
                                what, i, counts[i], SIZE_MAX);
        }
        total += counts[i];
        if (esize > 0 && total > limit_bytes / esize) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d's count %zu brings the "
                                "result to %zu elements of %zu bytes, over the %zu bytes this "
                                "host can allocate", what, i, counts[i], total, esize,
                                limit_bytes);
        }
    }
    *total_p = total;
    *bytes_p = total * esize; /* cannot overflow: total <= limit_bytes / esize */
    return DCOMM_OK;
}

size_t dc_result_size_limit(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

    if (pages <= 0 || page <= 0 || (unsigned long)pages > SIZE_MAX / (unsigned long)page) {
        return SIZE_MAX / 2;
    }
    return (size_t)pages * (size_t)page;
}
