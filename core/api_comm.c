/*
 * Communicators (process sets) through the public C ABI: created and
 * destroyed by negotiated operations that every rank submits alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "config.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "module.h"

/* FNV-1a over the member list: ranks that pass different lists disagree on it
 * in negotiation, and every rank gets DCOMM_ERR_MISMATCH. */
static uint64_t ranks_hash(const int *ranks, int n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ranks[i];

        for (int b = 0; b < 4; b++) {
            h = (h ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
        }
    }
    return h;
}

DCOMM_API dcomm_status_t dcomm_comm_create(const int *ranks, int nranks, dcomm_comm_t *comm_p)
{
    static const char fn[] = "dcomm_comm_create";
    dc_state_t *st = dc_state;
    dc_wire_req_t req = {.coll = DC_COLL_COMM_CREATE, .comm = DCOMM_COMM_WORLD};
    char name[64];
    dcomm_handle_t h = 0;
    dc_status_t status;
    int id;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    if (ranks == NULL || comm_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                            ranks == NULL ? "ranks" : "comm_p");
    }
    if (nranks < 1 || nranks > st->size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: nranks %d is not in 1..%d", fn, nranks,
                            st->size);
    }
    for (int i = 0; i < nranks; i++) {
        if (ranks[i] < 0 || ranks[i] >= st->size) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: ranks[%d] = %d is not a rank of "
                                "COMM_WORLD (size %d)", fn, i, ranks[i], st->size);
        }
        for (int j = 0; j < i; j++) {
            if (ranks[j] == ranks[i]) {
                return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d is listed twice "
                                    "(ranks[%d] and ranks[%d])", fn, ranks[i], j, i);
            }
        }
    }
    /* Every rank creates comms in the same order, so the lowest free id is the
     * same everywhere; negotiation checks that the lists agree. */
    pthread_mutex_lock(&st->lock);
    for (id = 1; id < DC_MAX_COMMS && st->comms[id].in_use; id++) {
    }
    if (id == DC_MAX_COMMS) {
        pthread_mutex_unlock(&st->lock);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: all %d comms are in use", fn,
                            DC_MAX_COMMS - 1);
    }
    status = dc_comm_fill(st, &st->comms[id], ranks, nranks);
    pthread_mutex_unlock(&st->lock);
    if (status < 0) {
        return status;
    }
    snprintf(name, sizeof(name), "comm.create.%d", id);
    req.count = ranks_hash(ranks, nranks);
    req.root = nranks;
    status = dc_api_submit(&req, name, NULL, NULL, NULL, &h, fn);
    status = dc_api_wait_release(status, h);
    if (status < 0) {
        pthread_mutex_lock(&st->lock);
        dc_comm_clear(&st->comms[id]);
        pthread_mutex_unlock(&st->lock);
        return status;
    }
    *comm_p = id;
    return DCOMM_OK;
}

typedef struct inflight_count {
    const char *prefix;
    size_t len;
    int n;
} inflight_count_t;

static void count_prefix(const char *key, void *value, void *arg)
{
    inflight_count_t *ic = arg;

    (void)value;
    if (strncmp(key, ic->prefix, ic->len) == 0) {
        ic->n++;
    }
}

DCOMM_API dcomm_status_t dcomm_comm_destroy(dcomm_comm_t comm)
{
    static const char fn[] = "dcomm_comm_destroy";
    dc_state_t *st = dc_state;
    dc_wire_req_t req = {.coll = DC_COLL_COMM_DESTROY, .comm = DCOMM_COMM_WORLD};
    char name[64], prefix[32];
    inflight_count_t ic = {prefix, 0, 0};
    dcomm_handle_t h = 0;
    dc_status_t status;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    if (comm == DCOMM_COMM_WORLD) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: COMM_WORLD cannot be destroyed", fn);
    }
    pthread_mutex_lock(&st->lock);
    if (comm < 0 || comm >= DC_MAX_COMMS || !st->comms[comm].in_use) {
        pthread_mutex_unlock(&st->lock);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: comm %d is unknown", fn, (int)comm);
    }
    snprintf(prefix, sizeof(prefix), "%d:", (int)comm);
    ic.len = strlen(prefix);
    dc_map_foreach(&st->inflight, count_prefix, &ic);
    pthread_mutex_unlock(&st->lock);
    if (ic.n > 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: comm %d has %d operations in flight; "
                            "wait for them first", fn, (int)comm, ic.n);
    }
    snprintf(name, sizeof(name), "comm.destroy.%d", (int)comm);
    req.root = comm; /* every rank drops the comm's cached tensors */
    status = dc_api_submit(&req, name, NULL, NULL, NULL, &h, fn);
    status = dc_api_wait_release(status, h);
    if (status < 0) {
        return status;
    }
    pthread_mutex_lock(&st->lock);
    dc_comm_clear(&st->comms[comm]);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}
