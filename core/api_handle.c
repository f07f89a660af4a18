/*
 * Handles through the public C ABI: poll, wait, result, release, and the
 * blocking forms (async + wait + release).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dcomm_internal.h"
#include "config.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "module.h"

static dc_status_t bad_handle(dcomm_handle_t handle, const char *fn)
{
    return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: handle %#llx is not valid (zero, unknown "
                                               "or already released)",
                        fn, (unsigned long long)handle);
}

DCOMM_API dcomm_status_t dcomm_poll(dcomm_handle_t handle, int *done_p)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    if (done_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_poll: done_p is NULL");
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_poll");
    } else {
        *done_p = atomic_load(&slot->done);
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_wait(dcomm_handle_t handle)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    dc_coord_drive(st, handle);
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_wait_locked(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_wait");
    } else {
        status = slot->status;
        if (status < 0) {
            dc_error_set(status, "%s", slot->error ? slot->error : dcomm_status_string(status));
        }
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_result(dcomm_handle_t handle, const void **data_p,
                                      size_t *count_p, const size_t **rank_counts_p)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    if (data_p == NULL || count_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_result: data_p and count_p are "
                                                   "required");
    }
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_lookup(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_result");
    } else if (!atomic_load(&slot->done)) {
        status = dc_error_set(DCOMM_INPROGRESS, "dcomm_result: the operation is not done");
    } else if (slot->status < 0) {
        status = dc_error_set(slot->status, "%s", slot->error ? slot->error : "failed");
    } else if (slot->result == NULL) {
        status = dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_result: this operation has no "
                                                     "result buffer (allreduce and broadcast "
                                                     "write into the user's buffer)");
    } else {
        *data_p = slot->result;
        *count_p = slot->result_count;
        if (rank_counts_p != NULL) {
            *rank_counts_p = slot->rank_counts;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

DCOMM_API dcomm_status_t dcomm_release(dcomm_handle_t handle)
{
    dc_state_t *st = dc_state;
    dc_handle_slot_t *slot;
    dc_status_t status = DCOMM_OK;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    dc_coord_drive(st, handle);
    pthread_mutex_lock(&st->lock);
    slot = dc_handle_wait_locked(st, handle);
    if (slot == NULL) {
        status = bad_handle(handle, "dcomm_release");
    } else {
        dc_handle_free_slot(st, slot);
    }
    pthread_mutex_unlock(&st->lock);
    return status;
}

/* ---- blocking forms ------------------------------------------------------------- */

/* The caller waits at once: its submission need not wake the coordinator
 * thread, since the wait runs the cycles itself (or wakes the thread when it
 * cannot; dc_coord_drive). */
_Thread_local int dc_api_wait_follows;

DC_INTERNAL_API void dc_api_hint_wait_follows(int on)
{
    dc_api_wait_follows = on != 0;
}

dc_status_t dc_api_wait_release(dc_status_t status, dcomm_handle_t handle)
{
    if (status < 0) {
        return status;
    }
    status = dcomm_wait(handle);
    {
        /* Keep the operation's message: release succeeds and would not touch it,
         * but copy defensively in case it does. */
        char msg[1536];

        snprintf(msg, sizeof(msg), "%s", dc_error_get());
        dcomm_release(handle);
        if (status < 0) {
            dc_error_set(status, "%s", msg);
        }
    }
    return status;
}

DCOMM_API dcomm_status_t dcomm_allreduce(dcomm_comm_t comm, const char *name, const void *sendbuf,
                                         void *recvbuf, size_t count, dcomm_dtype_t dtype,
                                         dcomm_op_t op)
{
    dcomm_handle_t h = 0;
    dc_status_t status;

    dc_api_wait_follows = 1;
    status = dcomm_allreduce_async(comm, name, sendbuf, recvbuf, count, dtype, op, &h);
    dc_api_wait_follows = 0;

    return dc_api_wait_release(status, h);
}

DCOMM_API dcomm_status_t dcomm_broadcast(dcomm_comm_t comm, const char *name, void *buf,
                                         size_t count, dcomm_dtype_t dtype, int root)
{
    dcomm_handle_t h = 0;
    dc_status_t status;

    dc_api_wait_follows = 1;
    status = dcomm_broadcast_async(comm, name, buf, count, dtype, root, &h);
    dc_api_wait_follows = 0;

    return dc_api_wait_release(status, h);
}

DCOMM_API dcomm_status_t dcomm_barrier(dcomm_comm_t comm)
{
    dcomm_handle_t h = 0;
    dc_status_t status;

    dc_api_wait_follows = 1;
    status = dcomm_barrier_async(comm, &h);
    dc_api_wait_follows = 0;

    return dc_api_wait_release(status, h);
}
