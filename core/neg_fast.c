/*
 * The fast path of negotiation (coord_neg.h): a tensor seen before has a bit
 * in the response cache (identical on every rank); a rank that submits it
 * again with the same parameters sets the bit, and one small allreduce (MIN
 * over bytes, i.e. a bitwise AND) of the bit vector tells every rank what is
 * ready, with no gather and no broadcast. The same vector carries flags
 * (ORed): some rank has requests for the slow path or is shutting down, or
 * invalidates a bit (a cached tensor submitted with other parameters); and
 * rank 0's autotune setting. After execution the cache learns the slow-path
 * responses, in the same order everywhere.
 */
#include <stdlib.h>
#include <string.h>

#include "coord_neg.h"
#include "coord_run.h"
#include "dc_time.h"
#include "log.h"

/* Flags of the fast-path vector, after the bits and the invalidations. Each
 * byte holds 1 - flag, so the MIN over ranks is the AND of "not flag". */
enum { VF_SLOW, VF_SHUTDOWN, VF_TUNE /* autotune: rank 0's choice */, VF_COUNT };

dc_status_t dc_neg_cache_init(dc_neg_t *ng, int capacity)
{
    dc_status_t status = dc_cache_init(&ng->cache, capacity);

    if (status == DCOMM_OK && capacity > 0) {
        ng->by_bit = calloc((size_t)capacity, sizeof(*ng->by_bit));
        ng->inval = calloc((size_t)capacity, 1);
        ng->vec_len = 2 * (size_t)capacity + VF_COUNT;
        ng->vec = calloc(ng->vec_len, 1);
        if (ng->by_bit == NULL || ng->inval == NULL || ng->vec == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the response cache");
        }
    }
    return status;
}

int dc_neg_cache_on(const dc_neg_t *ng)
{
    return ng->cache.capacity > 0;
}

const dc_cache_t *dc_neg_cache(const dc_neg_t *ng)
{
    return &ng->cache;
}

/* Takes the user's queue: each request is cached (it waits on its bit), or
 * goes to the slow path; a cached tensor with other parameters invalidates its
 * bit first. */
dc_status_t dc_neg_intake(dc_neg_t *ng)
{
    dc_state_t *st = ng->st;
    dc_status_t status = DCOMM_OK;
    dc_op_t *op;

    pthread_mutex_lock(&st->lock);
    op = st->queue_head;
    st->queue_head = st->queue_tail = NULL;
    atomic_store(&st->queue_nonempty, 0);
    pthread_mutex_unlock(&st->lock);
    if (op != NULL) {
        dc_neg_dl_local_changed(ng, dc_now_ns()); /* our wait state changed */
    }

    while (op != NULL) {
        dc_op_t *next = op->next;
        char key[DC_WIRE_NAME_MAX + 16];
        const dc_comm_t *cm = dc_comm_get(st, op->req.comm);
        int bit = -1, hit;

        op->next = NULL;
        dc_op_key(key, sizeof(key), op->req.comm, op->req.name);
        if (dc_map_put(&ng->local, key, op) != 1) {
            /* The user-side duplicate check makes this unreachable. */
            dc_handle_complete(st, op->handle, DCOMM_ERR_INTERNAL, "coordinator lost a request");
            dc_op_free(op);
            op = next;
            continue;
        }
        if (op->req.coll == DC_COLL_JOIN) {
            ng->local_joined[op->req.comm] = 1;
        }
        hit = dc_cache_lookup(&ng->cache, &op->req, cm ? cm->rank : -1, &bit);
        if (hit >= 0 && ng->by_bit[hit] == NULL) {
            ng->by_bit[hit] = op;
        } else {
            if (hit == DC_CACHE_CHANGED) {
                ng->inval[bit] = 1;
            }
            if (status == DCOMM_OK) {
                status = dc_neg_queue_slow(ng, &op->req);
            }
        }
        op = next;
    }
    if (atomic_load(&st->shutdown_requested)) {
        ng->shutdown_flag = 1;
    }
    return status;
}

/* Appends the tensors ready everywhere in bit order. */
dc_status_t dc_neg_fast_round(dc_neg_t *ng, const dc_coll_ctx_t *base, uint64_t *tag_p,
                              dc_work_t *w, int tune, int *slow_p, int *shutdown_p, int *tune_p)
{
    int cap = ng->cache.capacity, any_inval = 0;
    uint8_t *v = ng->vec, *flags = ng->vec + 2 * (size_t)cap;
    dc_coll_args_t args = {.sendbuf = v, .recvbuf = v, .count = ng->vec_len,
                           .dtype = DCOMM_UINT8, .op = DCOMM_MIN};
    dc_coll_ctx_t ctx = *base;
    dc_status_t status;
    uint64_t t0;

    for (int b = 0; b < cap; b++) {
        const dc_cache_entry_t *e = dc_cache_get(&ng->cache, b);

        /* A joined rank takes part in allreduces (with zeros) and barriers
         * only: other cached collectives go back to rank 0, which fails them
         * while ranks have joined (coord_neg.c, describe_joined). */
        if (e != NULL && ng->local_joined[e->req.comm] && ng->by_bit[b] == NULL &&
            e->req.coll != DC_COLL_ALLREDUCE && e->req.coll != DC_COLL_BARRIER) {
            ng->inval[b] = 1;
        }
        /* Ready here: we submitted it, or we joined its comm, or we are not a
         * member of its comm (the members alone decide). */
        v[b] = !ng->inval[b] &&
               (ng->by_bit[b] != NULL ||
                (e != NULL && (ng->local_joined[e->req.comm] ||
                               ng->st->comms[e->req.comm].rank < 0)));
        v[cap + b] = !ng->inval[b];
        any_inval |= ng->inval[b];
    }
    flags[VF_SLOW] = !(ng->nnew > 0 || any_inval ||
                       (ng->rank == 0 && (ng->stall_fatal[0] || ng->dl_due)) ||
                       dc_neg_dl_report_due(ng, dc_now_ns()));
    flags[VF_SHUTDOWN] = !ng->shutdown_flag;
    flags[VF_TUNE] = ng->rank == 0 ? (uint8_t)tune : 255;
    ctx.tag = (*tag_p)++;
    t0 = dc_now_ns();
    status = ng->size <= 1 ? DCOMM_OK : dc_run_control(DC_COLL_ALLREDUCE, &ctx, &args);
    if (status < 0) {
        return status;
    }
    ng->stats.fast_rounds++;
    ng->stats.negotiate_ns += dc_now_ns() - t0;
    *slow_p = !flags[VF_SLOW] || !flags[VF_SHUTDOWN];
    *shutdown_p = !flags[VF_SHUTDOWN];
    *tune_p = flags[VF_TUNE];
    /* Invalidated bits: gone everywhere; our op waiting on one goes slow. */
    for (int b = 0; b < cap; b++) {
        if (!v[cap + b]) {
            dc_op_t *op = ng->by_bit[b];

            ng->by_bit[b] = NULL;
            ng->inval[b] = 0;
            v[b] = 0;
            dc_cache_erase(&ng->cache, b);
            if (op != NULL) {
                DC_CHECK_GOTO(dc_neg_queue_slow(ng, &op->req), status, out);
            }
            *slow_p = 1;
        }
    }
    for (int b = 0; b < cap; b++) {
        const dc_cache_entry_t *e;
        dc_op_t *op;

        if (!v[b]) {
            continue;
        }
        e = dc_cache_get(&ng->cache, b);
        op = ng->by_bit[b];
        ng->by_bit[b] = NULL;
        if (e == NULL) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "cache bit %d ready but empty", b);
        }
        dc_neg_dl_touch(ng, e->req.comm);
        if (op != NULL) {
            char key[DC_WIRE_NAME_MAX + 16];

            dc_op_key(key, sizeof(key), op->req.comm, op->req.name);
            dc_map_remove(&ng->local, key);
        }
        DC_CHECK_GOTO(dc_work_add(w, &e->req, op, 0, NULL, e->counts, e->ncounts, b), status,
                      out);
    }
out:
    return status;
}

/* The cache learns what ran, in the same order on every rank; an op of ours
 * that waited on an evicted bit goes to the slow path. */
static void cache_learn(dc_neg_t *ng, const dc_work_t *w, const exec_item_t *it)
{
    int evicted, bit;

    if (it->error != 0 || ng->cache.capacity == 0) {
        return;
    }
    if (it->req.coll == DC_COLL_COMM_DESTROY) {
        for (int b = 0; b < ng->cache.capacity; b++) {
            const dc_cache_entry_t *e = dc_cache_get(&ng->cache, b);

            if (e != NULL && e->req.comm == it->req.root) {
                dc_cache_erase(&ng->cache, b);
            }
        }
        return;
    }
    if (it->bit >= 0) {
        dc_cache_touch(&ng->cache, it->bit);
        return;
    }
    bit = dc_cache_put(&ng->cache, &it->req, dc_work_counts(w, it), it->ncounts, &evicted);
    if (evicted >= 0 && ng->by_bit[evicted] != NULL) {
        dc_op_t *op = ng->by_bit[evicted];

        ng->by_bit[evicted] = NULL;
        dc_neg_queue_slow(ng, &op->req);
    }
    (void)bit;
}

void dc_neg_learn(dc_neg_t *ng, const dc_work_t *w)
{
    for (size_t i = 0; i < w->n; i++) {
        const exec_item_t *it = &w->items[i];
        const dc_comm_t *cm;

        /* An agreed join is done here: this rank takes part in everything again. */
        if (it->error == 0 && it->req.coll == DC_COLL_JOIN &&
            (cm = dc_comm_get(ng->st, it->req.comm)) != NULL && cm->rank >= 0) {
            ng->local_joined[it->req.comm] = 0;
        }
        cache_learn(ng, w, it);
    }
}
