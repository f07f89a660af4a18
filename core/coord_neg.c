/*
 * Negotiation's state as a whole (coord_neg.h): set-up and release, and the
 * failure of everything this rank has pending.
 */
#include <stdlib.h>

#include "coord_neg.h"

dc_status_t dc_neg_init(dc_neg_t *ng, dc_state_t *st, int cache_capacity)
{
    size_t n = (size_t)st->size;

    ng->st = st;
    ng->rank = st->rank;
    ng->size = st->size;
    ng->shutdown_rank = -1;
    ng->rx = calloc(n, sizeof(*ng->rx));
    ng->rx_len = calloc(n, sizeof(*ng->rx_len));
    ng->reqs = calloc(2 * n + 2, sizeof(*ng->reqs));
    ng->preqs = calloc(2 * n + 2, sizeof(*ng->preqs));
    ng->resp_counts = calloc(n, sizeof(*ng->resp_counts));
    if (ng->rx == NULL || ng->rx_len == NULL || ng->reqs == NULL || ng->preqs == NULL ||
        ng->resp_counts == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the coordinator");
    }
    ng->resp.counts = ng->resp_counts;
    ng->resp.counts_cap = (uint32_t)n;
    return dc_neg_cache_init(ng, cache_capacity);
}

void dc_neg_free(dc_neg_t *ng)
{
    dc_neg_table_free(ng);
    dc_neg_dl_free(ng);
    dc_map_free(&ng->local);
    dc_wire_buf_free(&ng->up);
    dc_wire_buf_free(&ng->down);
    for (int r = 0; ng->rx != NULL && r < ng->size; r++) {
        dc_wire_buf_free(&ng->rx[r]);
    }
    free(ng->rx);
    free(ng->rx_len);
    free(ng->reqs);
    free(ng->preqs);
    free(ng->new_reqs);
    free(ng->resp_counts);
    free(ng->by_bit);
    free(ng->inval);
    free(ng->vec);
    dc_cache_free(&ng->cache);
}

void dc_neg_fail_all(dc_neg_t *ng, dc_work_t *w, dc_status_t status, const char *msg)
{
    (void)dc_neg_intake(ng);
    dc_work_fail(w, ng->st, status, msg);
    dc_neg_local_fail(ng, status, msg);
}
