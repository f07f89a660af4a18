/*
 * The thread-per-rank harness (coll_harness.h) and its in-memory store.
 */
#include "coll_harness.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "net.h"

#define HARNESS_TIMEOUT_MS 20000

/* ---- in-memory store: a list under a mutex, a condvar for waiting gets ---- */

typedef struct mem_entry {
    struct mem_entry *next;
    size_t len;
    char key[128];
    unsigned char val[];
} mem_entry_t;

typedef struct memstore {
    dc_store_t super;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mem_entry_t *head;
} memstore_t;

static mem_entry_t *mem_find(memstore_t *ms, const char *key)
{
    for (mem_entry_t *e = ms->head; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Replaces key's value; call with the mutex held. */
static dc_status_t mem_put(memstore_t *ms, const char *key, const void *val, size_t len)
{
    mem_entry_t *e = calloc(1, sizeof(*e) + len + 1), **pp;

    if (e == NULL || strlen(key) >= sizeof(e->key)) {
        free(e);
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "memstore: cannot store key '%s'", key);
    }
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->len = len;
    if (len > 0) {
        memcpy(e->val, val, len);
    }
    for (pp = &ms->head; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            e->next = (*pp)->next;
            free(*pp);
            *pp = e;
            pthread_cond_broadcast(&ms->cv);
            return DCOMM_OK;
        }
    }
    *pp = e;
    pthread_cond_broadcast(&ms->cv);
    return DCOMM_OK;
}

static dc_status_t mem_set(dc_store_t *s, const char *key, const void *val, size_t len)
{
    memstore_t *ms = (memstore_t *)s;
    dc_status_t status;

    pthread_mutex_lock(&ms->mu);
    status = mem_put(ms, key, val, len);
    pthread_mutex_unlock(&ms->mu);
    return status;
}

static dc_status_t mem_get(dc_store_t *s, const char *key, void *buf, size_t cap, size_t *len_p,
                           int timeout_ms)
{
    memstore_t *ms = (memstore_t *)s;
    struct timespec deadline;
    mem_entry_t *e;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ms->mu);
    while ((e = mem_find(ms, key)) == NULL) {
        if (timeout_ms <= 0 || pthread_cond_timedwait(&ms->cv, &ms->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&ms->mu);
            return dc_error_set(DCOMM_ERR_TIMEOUT, "memstore: key '%s' not set within %d ms",
                                key, timeout_ms);
        }
    }
    memcpy(buf, e->val, DC_MIN(cap, e->len));
    *len_p = e->len;
    pthread_mutex_unlock(&ms->mu);
    return DCOMM_OK;
}

static dc_status_t mem_add(dc_store_t *s, const char *key, int64_t delta, int64_t *value_p)
{
    memstore_t *ms = (memstore_t *)s;
    int64_t value = 0;
    mem_entry_t *e;
    dc_status_t status;

    pthread_mutex_lock(&ms->mu);
    e = mem_find(ms, key);
    if (e != NULL && e->len == sizeof(value)) {
        memcpy(&value, e->val, sizeof(value));
    }
    value += delta;
    status = mem_put(ms, key, &value, sizeof(value));
    pthread_mutex_unlock(&ms->mu);
    if (status == DCOMM_OK) {
        *value_p = value;
    }
    return status;
}

static void mem_close(dc_store_t *s)
{
    memstore_t *ms = (memstore_t *)s;

    while (ms->head != NULL) {
        mem_entry_t *e = ms->head;

        ms->head = e->next;
        free(e);
    }
    pthread_mutex_destroy(&ms->mu);
    pthread_cond_destroy(&ms->cv);
    free(ms);
}

static const dc_store_ops_t memstore_ops = {
    .set = mem_set,
    .get = mem_get,
    .add = mem_add,
    .close = mem_close,
};

/* ---- the world ---- */

struct coll_world {
    int size;
    const char *spec;
    memstore_t *store;
    dc_topo_t topo[COLL_MAX_RANKS];
    int local_rank_of[COLL_MAX_RANKS];
    coll_rank_t ranks[COLL_MAX_RANKS];
    uint8_t secret[DC_AUTH_SECRET_LEN];
    void *shared[COLL_MAX_RANKS];
    /* run: the job for the threads */
    int (*fn)(coll_rank_t *rk, void *arg);
    void *arg;
    int results[COLL_MAX_RANKS];
    /* sync */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived, generation, aborted;
};

typedef struct thread_arg {
    coll_world_t *world;
    int rank;
} thread_arg_t;

static void *open_main(void *p)
{
    thread_arg_t *ta = p;
    coll_world_t *w = ta->world;
    coll_rank_t *rk = &w->ranks[ta->rank];
    dc_bootstrap_t boot = {
        .topo = &w->topo[ta->rank],
        .store = &w->store->super,
        .secret = w->secret,
        .local_addr = strcmp(w->spec, "tcp") == 0 ? "127.0.0.1" : NULL,
        .timeout_ms = HARNESS_TIMEOUT_MS,
    };

    if (dc_net_open(&boot, w->spec, &rk->net) < 0) {
        fprintf(stderr, "rank %d: dc_net_open(%s) failed: %s\n", ta->rank, w->spec,
                dc_error_get());
        w->results[ta->rank] = -1;
        rk->net = NULL;
        return NULL;
    }
    dc_net_set_timeout(rk->net, HARNESS_TIMEOUT_MS);
    for (int q = 0; q < w->size; q++) {
        const char *name = dc_net_transport_name(rk->net, q);

        if (q != ta->rank && strcmp(name, w->spec) != 0) {
            fprintf(stderr, "rank %d: rank %d is served by %s, not %s\n", ta->rank, q, name,
                    w->spec);
            w->results[ta->rank] = -1;
            return NULL;
        }
    }
    w->results[ta->rank] = 0;
    return NULL;
}

static void *run_main(void *p)
{
    thread_arg_t *ta = p;
    coll_world_t *w = ta->world;

    w->results[ta->rank] = w->fn(&w->ranks[ta->rank], w->arg);
    if (w->results[ta->rank] != 0) {
        coll_world_abort(w);
    }
    return NULL;
}

static int world_threads(coll_world_t *w, void *(*main_fn)(void *))
{
    pthread_t threads[COLL_MAX_RANKS];
    thread_arg_t args[COLL_MAX_RANKS];
    int failed = 0;

    for (int r = 0; r < w->size; r++) {
        args[r] = (thread_arg_t){.world = w, .rank = r};
        if (pthread_create(&threads[r], NULL, main_fn, &args[r]) != 0) {
            fprintf(stderr, "cannot start the thread of rank %d\n", r);
            abort();
        }
    }
    for (int r = 0; r < w->size; r++) {
        pthread_join(threads[r], NULL);
        failed += (w->results[r] != 0);
    }
    return failed;
}

int coll_world_open(int size, const char *spec, size_t scratch_size, int shift,
                    coll_world_t **world_p)
{
    coll_world_t *w = calloc(1, sizeof(*w));
    cpu_set_t set;
    int ncores = 1;

    if (w == NULL || size < 1 || size > COLL_MAX_RANKS) {
        free(w);
        return -1;
    }
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        ncores = CPU_COUNT(&set);
    }
    w->size = size;
    w->spec = spec;
    w->store = calloc(1, sizeof(*w->store));
    w->store->super.ops = &memstore_ops;
    pthread_mutex_init(&w->store->mu, NULL);
    pthread_cond_init(&w->store->cv, NULL);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int r = 0; r < size; r++) {
        coll_rank_t *rk = &w->ranks[r];

        /* Thread r is world rank r and comm rank (r - shift) mod size. */
        w->local_rank_of[r] = r;
        rk->rank = ((r - shift) % size + size) % size;
        rk->size = size;
        rk->world = w;
        for (int c = 0; c < size; c++) {
            rk->ranks[c] = (c + shift) % size;
            rk->host_of[c] = 0;
        }
        w->topo[r] = (dc_topo_t){.rank = r, .size = size, .nhosts = 1,
                                 .host_of = rk->host_of, .local_rank_of = w->local_rank_of,
                                 .local_size = size, .ncores = ncores};
        rk->ctx = (dc_coll_ctx_t){.rank = rk->rank, .size = size, .ranks = rk->ranks,
                                  .host_of = rk->host_of, .nhosts = 1, .tag = 1,
                                  .scratch = malloc(scratch_size), .scratch_size = scratch_size,
                                  .reqs = rk->reqs};
        if (rk->ctx.scratch == NULL) {
            coll_world_close(w);
            return -1;
        }
        memset(rk->ctx.scratch, 0, scratch_size); /* pre-fault, as the core does */
    }
    if (world_threads(w, open_main) != 0) {
        coll_world_close(w);
        return -1;
    }
    for (int r = 0; r < size; r++) {
        w->ranks[r].ctx.net = w->ranks[r].net;
    }
    *world_p = w;
    return 0;
}

void coll_world_close(coll_world_t *w)
{
    if (w == NULL) {
        return;
    }
    for (int r = 0; r < w->size; r++) {
        dc_net_close(w->ranks[r].net);
        free(w->ranks[r].ctx.scratch);
    }
    mem_close(&w->store->super);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int coll_world_run(coll_world_t *w, int (*fn)(coll_rank_t *rk, void *arg), void *arg)
{
    w->fn = fn;
    w->arg = arg;
    w->aborted = 0;
    w->arrived = 0;
    return world_threads(w, run_main);
}

int coll_world_sync(coll_rank_t *rk)
{
    coll_world_t *w = rk->world;
    int rc = 0;

    pthread_mutex_lock(&w->mu);
    if (!w->aborted) {
        int gen = w->generation;

        if (++w->arrived == w->size) {
            w->arrived = 0;
            w->generation++;
            pthread_cond_broadcast(&w->cv);
        } else {
            while (gen == w->generation && !w->aborted) {
                pthread_cond_wait(&w->cv, &w->mu);
            }
        }
    }
    rc = w->aborted ? -1 : 0;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void coll_world_abort(coll_world_t *w)
{
    pthread_mutex_lock(&w->mu);
    w->aborted = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void **coll_world_shared(coll_world_t *w)
{
    return w->shared;
}
