/* Sizing of a collective's result from per-rank element counts that peers supplied
 * (allgather's agreed counts, alltoall's received counts): overflow-checked and
 * bounded by what this host could ever allocate, before anything is allocated. */
#ifndef DC_RESULT_SIZE_H
#define DC_RESULT_SIZE_H

#include <stddef.h>

#include "status.h"

/* Sums counts[0..n) and multiplies by esize. On success sets *total_p (elements)
 * and *bytes_p. When the sum or the product overflows, or the bytes exceed
 * limit_bytes, returns DCOMM_ERR_INVALID_ARG with an error naming what (e.g.
 * "allgather 'grad'"), the rank whose count tipped it over, its count and the
 * limit. A pure function, for tests. */
dc_status_t dc_result_size(const char *what, const size_t *counts, int n, size_t esize,
                           size_t limit_bytes, size_t *total_p, size_t *bytes_p);

/* What a result may occupy at most on this host: its physical memory
 * (SIZE_MAX / 2 when that is unknown). */
size_t dc_result_size_limit(void);

#endif
