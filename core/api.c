/*
 * The public C ABI's life cycle: dcomm_init and dcomm_shutdown, identity
 * (also within a comm), the timeline switch. Submission is in api_submit.c, communicators in
 * api_comm.c, handles in api_handle.c. User threads only validate, queue a
 * request and get a handle; the coordinator thread does the rest (coord.c).
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

dc_state_t *dc_state;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

dc_status_t dc_api_not_initialized(void)
{
    return dc_error_set(DCOMM_ERR_NOT_INITIALIZED, "dcomm_init has not been called (or "
                                                   "dcomm_shutdown already was)");
}

static void state_free(dc_state_t *st)
{
    for (int i = 0; i < DC_MAX_COMMS; i++) {
        dc_comm_clear(&st->comms[i]);
    }
    dc_bootstrap_close(st);
    dc_handle_table_free(st);
    dc_map_free(&st->inflight);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->done_cond);
    free(st);
}

DCOMM_API dcomm_status_t dcomm_init(void)
{
    dc_state_t *st;
    dc_status_t status;

    pthread_mutex_lock(&init_lock);
    if (dc_state != NULL) {
        pthread_mutex_unlock(&init_lock);
        return DCOMM_OK;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        pthread_mutex_unlock(&init_lock);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->done_cond, NULL);
    st->events_fd = -1;
    atomic_store(&st->cuda_device, -1);
    DC_CHECK_GOTO(dc_config_load(), status, err);
    dc_reduce_set_isa(dc_reduce_isa_choose(dc_config.reduce_isa[0] ? dc_config.reduce_isa : NULL));
    DC_CHECK_GOTO(dc_bootstrap_identity(st), status, err);
    dc_log_set_rank(st->rank);
    DC_CHECK_GOTO(dc_bootstrap_connect(st), status, err); /* loads the modules */
    dc_log_set_rank(st->rank); /* an elastic worker learns its rank there */
    if (dc_module_find("cuda") != NULL) {
        st->cuda = dc_module_find("cuda")->cuda;
    }
    {
        int *world = malloc((size_t)st->size * sizeof(int));

        if (world == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
            goto err;
        }
        for (int r = 0; r < st->size; r++) {
            world[r] = r;
        }
        status = dc_comm_fill(st, &st->comms[0], world, st->size);
        free(world);
        if (status < 0) {
            goto err;
        }
    }
    DC_CHECK_GOTO(dc_coord_start(st), status, err);
    dc_state = st;
    pthread_mutex_unlock(&init_lock);
    DC_INFO("initialized: rank %d of %d, local %d of %d, host %d of %d", st->rank, st->size,
            st->local_rank, st->local_size, st->cross_rank, st->cross_size);
    return DCOMM_OK;
err:
    {
        char msg[1024];

        snprintf(msg, sizeof(msg), "%s", dc_error_get());
        /* A peer that failed first may have taken down the one this rank
         * was talking to: name what dlaunch saw first. */
        (void)dc_bootstrap_launcher_cause(st, status, msg, sizeof(msg));
        DC_ERROR("dcomm_init failed: %s", msg);
        state_free(st);
        pthread_mutex_unlock(&init_lock);
        return dc_error_set(status, "%s", msg);
    }
}

DCOMM_API dcomm_status_t dcomm_shutdown(void)
{
    dc_state_t *st;

    pthread_mutex_lock(&init_lock);
    st = dc_state;
    if (st == NULL) {
        pthread_mutex_unlock(&init_lock);
        return dc_api_not_initialized();
    }
    dc_coord_stop(st);
    /* Handles stay readable until now; the state goes away with them. */
    dc_state = NULL;
    state_free(st);
    pthread_mutex_unlock(&init_lock);
    return DCOMM_OK;
}

DCOMM_API dcomm_status_t dcomm_hosts_updated(uint64_t *stamp_p, int *result_p)
{
    dc_state_t *st;

    if (stamp_p == NULL || result_p == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_hosts_updated: stamp_p and result_p "
                            "must not be NULL");
    }
    dc_status_t status;

    /* Under init_lock: a shutdown on another thread must not free st meanwhile. */
    pthread_mutex_lock(&init_lock);
    st = dc_state;
    status = st != NULL ? dc_bootstrap_hosts_notice(st, stamp_p, result_p)
                        : dc_api_not_initialized();
    pthread_mutex_unlock(&init_lock);
    return status;
}

DCOMM_API int dcomm_is_initialized(void)
{
    return dc_state != NULL;
}

#define IDENTITY(fn, field)                                                                \
    DCOMM_API int fn(void)                                                                 \
    {                                                                                      \
        dc_state_t *st = dc_state;                                                         \
        return st != NULL ? st->field : -1;                                                \
    }
IDENTITY(dcomm_rank, rank)
IDENTITY(dcomm_size, size)
IDENTITY(dcomm_local_rank, local_rank)
IDENTITY(dcomm_local_size, local_size)
IDENTITY(dcomm_cross_rank, cross_rank)
IDENTITY(dcomm_cross_size, cross_size)

static int comm_field(dcomm_comm_t comm, int want_size)
{
    dc_state_t *st = dc_state;
    int v = -1;

    if (st == NULL || comm < 0 || comm >= DC_MAX_COMMS) {
        return -1;
    }
    pthread_mutex_lock(&st->lock);
    if (st->comms[comm].in_use) {
        v = want_size ? st->comms[comm].size : st->comms[comm].rank;
    }
    pthread_mutex_unlock(&st->lock);
    return v;
}

DCOMM_API int dcomm_comm_rank(dcomm_comm_t comm)
{
    return comm_field(comm, 0);
}

DCOMM_API int dcomm_comm_size(dcomm_comm_t comm)
{
    return comm_field(comm, 1);
}

/* The one table of dtype sizes is the kernels' (dc_reduce_dtype_size). */
DCOMM_API size_t dcomm_dtype_size(dcomm_dtype_t dtype)
{
    return dc_reduce_dtype_size(dtype);
}

DCOMM_API dcomm_status_t dcomm_timeline_start(const char *path)
{
    dc_state_t *st = dc_state;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(st->timeline_path)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dcomm_timeline_start: path must be 1 to "
                            "%zu bytes", sizeof(st->timeline_path) - 1);
    }
    pthread_mutex_lock(&st->lock);
    snprintf(st->timeline_path, sizeof(st->timeline_path), "%s", path);
    atomic_store(&st->timeline_cmd, 1);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}

DCOMM_API dcomm_status_t dcomm_timeline_stop(void)
{
    dc_state_t *st = dc_state;

    if (st == NULL) {
        return dc_api_not_initialized();
    }
    pthread_mutex_lock(&st->lock);
    atomic_store(&st->timeline_cmd, 2);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    return DCOMM_OK;
}

