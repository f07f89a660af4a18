/*
 * This rank's side of negotiation (coord_neg.h): the operations it has taken
 * from the user's queue and not yet executed, the requests waiting for the
 * next slow round, and the operations waiting on a cache bit.
 */
#include <stdlib.h>

#include "coord_neg.h"

dc_status_t dc_neg_queue_slow(dc_neg_t *ng, const dc_wire_req_t *req)
{
    if (ng->nnew == ng->new_cap) {
        size_t cap = ng->new_cap ? ng->new_cap * 2 : 64;
        const dc_wire_req_t **r = realloc(ng->new_reqs, cap * sizeof(*r));

        if (r == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        ng->new_reqs = r;
        ng->new_cap = cap;
    }
    ng->new_reqs[ng->nnew++] = req;
    return DCOMM_OK;
}

/* A deadlock's failed tensor may wait on a cache bit here (fast path): the
 * bit forgets it. A failed join ends this rank's join. */
void dc_neg_unbit(dc_neg_t *ng, dc_op_t *op)
{
    for (int b = 0; b < ng->cache.capacity; b++) {
        if (ng->by_bit[b] == op) {
            ng->by_bit[b] = NULL;
        }
    }
    if (op->req.coll == DC_COLL_JOIN) {
        ng->local_joined[op->req.comm] = 0;
    }
}

typedef struct fail_ctx {
    dc_state_t *st;
    dc_status_t status;
    const char *msg;
} fail_ctx_t;

static void fail_one(const char *key, void *value, void *arg)
{
    fail_ctx_t *f = arg;

    (void)key;
    dc_op_fail(f->st, value, f->status, f->msg);
}

void dc_neg_local_fail(dc_neg_t *ng, dc_status_t status, const char *msg)
{
    fail_ctx_t f = {ng->st, status, msg};

    ng->nnew = 0;
    for (int b = 0; b < ng->cache.capacity; b++) {
        ng->by_bit[b] = NULL;
    }
    dc_map_foreach(&ng->local, fail_one, &f);
    dc_map_free(&ng->local);
}
