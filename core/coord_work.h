/*
 * The work of one cycle: the operations every rank agreed on, in the order
 * every rank runs them. Negotiation appends (coord_neg*.c), execution runs and
 * completes them (coord_exec.c), the loop clears the list (coord.c).
 */
#ifndef DC_COORD_WORK_H
#define DC_COORD_WORK_H

#include "core.h"
#include "wire.h"

/* One agreed operation. */
typedef struct exec_item {
    dc_wire_req_t req;
    dc_op_t *op;          /* this rank's operation; NULL: not a member, joined, or done */
    int32_t error;        /* < 0: the tensor failed negotiation (text says why) */
    char *text;
    size_t counts_off;    /* allgather: per-rank counts, dc_work_counts */
    uint32_t ncounts;
    int bit;              /* cache bit when agreed on the fast path, else -1 */
    uint64_t ready_ns;
} exec_item_t;

typedef struct dc_work {
    exec_item_t *items;
    size_t n, cap;
    uint64_t *arena;      /* the items' counts */
    size_t arena_len, arena_cap;
} dc_work_t;

/* Appends an item (text copied when error != 0, counts into the arena). */
dc_status_t dc_work_add(dc_work_t *w, const dc_wire_req_t *req, dc_op_t *op, int32_t error,
                        const char *text, const uint64_t *counts, uint32_t ncounts, int bit);

static inline const uint64_t *dc_work_counts(const dc_work_t *w, const exec_item_t *it)
{
    return w->arena + it->counts_off;
}

/* Frees the op (when still there) and the text of items [i0, i1). */
void dc_work_done(dc_work_t *w, size_t i0, size_t i1);

/* Fails every item's op that is still there, then empties the list. */
void dc_work_fail(dc_work_t *w, dc_state_t *st, dc_status_t status, const char *msg);

/* Empties the list (items already done). */
void dc_work_clear(dc_work_t *w);
void dc_work_free(dc_work_t *w);

#endif
