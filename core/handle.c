/*
 * The handle table: a handle is (generation << 32 | slot + 1), so a released or
 * forged handle is recognised and refused instead of touching another
 * operation's state. Guarded by dc_state->lock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "dc_time.h"
#include "log.h"

void dc_op_key(char *buf, size_t cap, dcomm_comm_t comm, const char *name)
{
    snprintf(buf, cap, "%d:%s", (int)comm, name);
}

static dcomm_handle_t make_handle(uint32_t idx, uint32_t gen)
{
    return ((uint64_t)gen << 32) | (uint64_t)(idx + 1);
}

dc_status_t dc_handle_alloc(dc_state_t *st, const char *key, dcomm_handle_t *handle_p)
{
    uint32_t idx = st->nslots;
    dc_handle_slot_t *slot;

    for (uint32_t i = 0; i < st->nslots; i++) {
        uint32_t j = (st->free_hint + i) % st->nslots;

        if (!st->slots[j].in_use) {
            idx = j;
            break;
        }
    }
    if (idx == st->nslots) {
        uint32_t n = st->nslots ? st->nslots * 2 : 64;
        dc_handle_slot_t *slots;

        if (n > (1u << 30)) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "more than 2^30 handles are unreleased");
        }
        slots = realloc(st->slots, n * sizeof(*slots));
        if (slots == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the handle table");
        }
        memset(slots + st->nslots, 0, (n - st->nslots) * sizeof(*slots));
        for (uint32_t j = st->nslots; j < n; j++) {
            slots[j].gen = 1;
        }
        st->slots = slots;
        st->nslots = n;
    }
    slot = &st->slots[idx];
    slot->in_use = 1;
    atomic_store(&slot->done, 0);
    slot->status = DCOMM_INPROGRESS;
    slot->error = NULL;
    slot->result = NULL;
    slot->result_count = 0;
    slot->rank_counts = NULL;
    slot->waiters = 0;
    snprintf(slot->key, sizeof(slot->key), "%s", key);
    st->free_hint = idx + 1;
    *handle_p = make_handle(idx, slot->gen);
    return DCOMM_OK;
}

dc_handle_slot_t *dc_handle_lookup(dc_state_t *st, dcomm_handle_t handle)
{
    uint32_t low = (uint32_t)handle, gen = (uint32_t)(handle >> 32);

    if (low == 0 || low > st->nslots) {
        return NULL;
    }
    if (!st->slots[low - 1].in_use || st->slots[low - 1].gen != gen) {
        return NULL;
    }
    return &st->slots[low - 1];
}

void dc_handle_complete(dc_state_t *st, dcomm_handle_t handle, dc_status_t status,
                        const char *msg)
{
    dc_handle_slot_t *slot;

    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL || atomic_load(&slot->done)) {
        pthread_mutex_unlock(&st->lock);
        DC_ERROR("completion of unknown handle %#llx", (unsigned long long)handle);
        return;
    }
    slot->status = status;
    if (status < 0 && msg != NULL) {
        slot->error = strdup(msg);
    }
    dc_map_remove(&st->inflight, slot->key);
    atomic_store(&slot->done, 1);
    pthread_cond_broadcast(&st->done_cond);
    pthread_mutex_unlock(&st->lock);
}

void dc_handle_complete_result(dc_state_t *st, dcomm_handle_t handle, void *result,
                               size_t count, size_t *rank_counts)
{
    dc_handle_slot_t *slot;

    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL || atomic_load(&slot->done)) {
        pthread_mutex_unlock(&st->lock);
        DC_ERROR("completion of unknown handle %#llx", (unsigned long long)handle);
        free(result);
        free(rank_counts);
        return;
    }
    slot->result = result;
    slot->result_count = count;
    slot->rank_counts = rank_counts;
    pthread_mutex_unlock(&st->lock);
    dc_handle_complete(st, handle, DCOMM_OK, NULL);
}

int dc_handle_wait_begin(dc_state_t *st, dcomm_handle_t handle)
{
    dc_handle_slot_t *slot = dc_handle_lookup(st, handle);

    if (slot == NULL || atomic_load(&slot->done)) {
        return 0;
    }
    /* This thread is blocked on the handle: the coordinator tells rank 0 when
     * it stays so (deadlock detection, coord_neg.c). */
    slot->waiters++;
    atomic_fetch_add(&st->nwaiters, 1);
    atomic_store(&st->wait_change_ns, dc_now_ns());
    return 1;
}

void dc_handle_wait_end(dc_state_t *st, dcomm_handle_t handle)
{
    dc_handle_slot_t *slot = dc_handle_lookup(st, handle);

    if (slot != NULL && slot->waiters > 0) {
        slot->waiters--;
    }
    atomic_fetch_sub(&st->nwaiters, 1);
    atomic_store(&st->wait_change_ns, dc_now_ns());
}

dc_handle_slot_t *dc_handle_wait_locked(dc_state_t *st, dcomm_handle_t handle)
{
    dc_handle_slot_t *slot;

    if (!dc_handle_wait_begin(st, handle)) {
        return dc_handle_lookup(st, handle);
    }
    /* The table may be reallocated (or the handle released by another thread)
     * while we sleep: look the slot up again each time. */
    slot = dc_handle_lookup(st, handle);
    while (slot != NULL && !atomic_load(&slot->done)) {
        pthread_cond_wait(&st->done_cond, &st->lock);
        slot = dc_handle_lookup(st, handle);
    }
    dc_handle_wait_end(st, handle);
    return slot;
}

void dc_handle_free_slot(dc_state_t *st, dc_handle_slot_t *slot)
{
    free(slot->error);
    free(slot->result);
    free(slot->rank_counts);
    slot->error = NULL;
    slot->result = NULL;
    slot->rank_counts = NULL;
    slot->in_use = 0;
    slot->gen = (slot->gen + 1) ? slot->gen + 1 : 1;
    st->free_hint = (uint32_t)(slot - st->slots);
}

void dc_handle_table_free(dc_state_t *st)
{
    for (uint32_t i = 0; i < st->nslots; i++) {
        if (st->slots[i].in_use) {
            dc_handle_free_slot(st, &st->slots[i]);
        }
    }
    free(st->slots);
    st->slots = NULL;
    st->nslots = 0;
}

void dc_op_fail(dc_state_t *st, dc_op_t *op, dc_status_t status, const char *msg)
{
    char text[1536];

    snprintf(text, sizeof(text), "%s '%s': %s", dc_coll_name(op->req.coll), op->req.name, msg);
    dc_handle_complete(st, op->handle, status, text);
    dc_op_free(op);
}
