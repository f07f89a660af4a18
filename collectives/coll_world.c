/*
 * A standalone collective context over a dlaunch job (coll_world.h).
 */
#include "coll_world.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "dc_reduce.h"
#include "rdv.h"
#include "shm_group.h"
#include "store.h"

#define WORLD_HOST_ID_MAX 320

struct dc_coll_world {
    dc_coll_ctx_t ctx;
    dc_select_t *sel;
    dc_store_t *store;
    dc_net_t *net;
    dc_topo_t topo;
    int *ranks, *host_of, *local_rank_of;
    uint8_t secret[DC_AUTH_SECRET_LEN];
    dc_request_t reqs[DC_COLL_MAX_REQS];
    uint64_t tag;
};

static dc_status_t env_identity(int *rank_p, int *size_p)
{
    const char *r = getenv("DCOMM_RANK"), *s = getenv("DCOMM_SIZE");
    char *e1 = NULL, *e2 = NULL;
    long rank, size;

    if (r == NULL || s == NULL) {
        *rank_p = 0;
        *size_p = 1;
        return DCOMM_OK;
    }
    rank = strtol(r, &e1, 10);
    size = strtol(s, &e2, 10);
    if (*r == '\0' || *s == '\0' || *e1 != '\0' || *e2 != '\0' || size < 1 || rank < 0 ||
        rank >= size || size > 1 << 20) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "DCOMM_RANK='%s' / DCOMM_SIZE='%s' are not a "
                            "valid rank of a job", r, s);
    }
    *rank_p = (int)rank;
    *size_p = (int)size;
    return DCOMM_OK;
}

/* Host name plus network namespace: ranks in other namespaces count as other
 * hosts, as in core/bootstrap.c. */
static void world_host_id(char *buf, size_t cap)
{
    char name[256] = "";
    struct stat sb;

    gethostname(name, sizeof(name) - 1);
    if (stat("/proc/self/ns/net", &sb) != 0) {
        sb.st_ino = 0;
    }
    snprintf(buf, cap, "%s|%llu", name, (unsigned long long)sb.st_ino);
}

/* Host index of every rank (numbered by lowest rank) through the store. */
static dc_status_t world_hosts(dc_coll_world_t *w, int rank, int size, int timeout_ms)
{
    char (*ids)[WORLD_HOST_ID_MAX] = calloc((size_t)size, WORLD_HOST_ID_MAX);
    int *count_on = calloc((size_t)size, sizeof(int)), nhosts = 0;
    char key[64];
    size_t len;
    dc_status_t status = DCOMM_OK;

    if (ids == NULL || count_on == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "coll world: out of memory");
        goto out;
    }
    world_host_id(ids[rank], WORLD_HOST_ID_MAX);
    snprintf(key, sizeof(key), "cw.host/%d", rank);
    DC_CHECK_GOTO(dc_store_set(w->store, key, ids[rank], strlen(ids[rank]) + 1), status, out);
    for (int r = 0; r < size; r++) {
        if (r != rank) {
            snprintf(key, sizeof(key), "cw.host/%d", r);
            status = dc_store_get(w->store, key, ids[r], WORLD_HOST_ID_MAX - 1, &len, timeout_ms);
            if (status < 0) {
                status = dc_error_set(status, "rank %d: rank %d never registered its host (%s)",
                                      rank, r, dc_error_get());
                goto out;
            }
            ids[r][WORLD_HOST_ID_MAX - 1] = '\0';
        }
    }
    for (int r = 0; r < size; r++) {
        int h = -1;

        for (int q = 0; q < r && h < 0; q++) {
            if (strcmp(ids[q], ids[r]) == 0) {
                h = w->host_of[q];
            }
        }
        w->host_of[r] = h < 0 ? nhosts++ : h;
        w->local_rank_of[r] = count_on[w->host_of[r]]++;
    }
    w->topo.nhosts = nhosts;
    w->topo.local_size = count_on[w->host_of[rank]];
out:
    free(ids);
    free(count_on);
    return status;
}

static dc_status_t world_store(dc_coll_world_t *w, int rank, int timeout_ms)
{
    const char *rdv = getenv("DCOMM_RENDEZVOUS"), *hex = getenv("DCOMM_JOB_SECRET");

    if (rdv == NULL || *rdv == '\0' || hex == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rank %d has no rendezvous: start the job "
                            "with dlaunch", rank);
    }
    if (dc_auth_secret_from_hex(hex, w->secret) != 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG,
                            "DCOMM_JOB_SECRET must be 64 hexadecimal characters");
    }
    return dc_rdv_client_open(rdv, w->secret, rank, timeout_ms, &w->store);
}

static int world_cores(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        return CPU_COUNT(&set);
    }
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

dc_status_t dc_coll_world_open(int timeout_ms, dc_coll_world_t **w_p)
{
    dc_coll_world_t *w = calloc(1, sizeof(*w));
    dc_bootstrap_t boot = {0};
    int rank = 0, size = 1;
    dc_status_t status;

    if (w == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "coll world: out of memory");
    }
    DC_CHECK_GOTO(env_identity(&rank, &size), status, err);
    w->ranks = calloc((size_t)size, sizeof(int));
    w->host_of = calloc((size_t)size, sizeof(int));
    w->local_rank_of = calloc((size_t)size, sizeof(int));
    w->ctx.scratch = mmap(NULL, DC_COLL_SCRATCH_MIN, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (w->ctx.scratch == MAP_FAILED) {
        w->ctx.scratch = NULL;
    }
    if (w->ranks == NULL || w->host_of == NULL || w->local_rank_of == NULL ||
        w->ctx.scratch == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "coll world: out of memory");
        goto err;
    }
    for (int r = 0; r < size; r++) {
        w->ranks[r] = r;
    }
    w->topo = (dc_topo_t){.rank = rank, .size = size, .nhosts = 1, .host_of = w->host_of,
                          .local_rank_of = w->local_rank_of, .local_size = 1,
                          .ncores = world_cores()};
    if (size > 1) {
        DC_CHECK_GOTO(world_store(w, rank, timeout_ms), status, err);
        DC_CHECK_GOTO(world_hosts(w, rank, size, timeout_ms), status, err);
        boot.local_addr = dc_rdv_client_local_addr(w->store);
    }
    boot.topo = &w->topo;
    boot.store = w->store;
    boot.secret = w->secret;
    boot.timeout_ms = timeout_ms;
    DC_CHECK_GOTO(dc_net_open(&boot, getenv("DCOMM_TRANSPORTS"), &w->net), status, err);
    dc_net_set_timeout(w->net, timeout_ms);
    DC_CHECK_GOTO(dc_select_create(getenv("DCOMM_TUNE"), &w->sel), status, err);
    w->ctx = (dc_coll_ctx_t){.net = w->net, .rank = rank, .size = size, .ranks = w->ranks,
                             .host_of = w->host_of, .nhosts = w->topo.nhosts,
                             .scratch = w->ctx.scratch, .scratch_size = DC_COLL_SCRATCH_MIN,
                             .reqs = w->reqs};
    if (size > 1) {
        DC_CHECK_GOTO(dc_select_calibrate(w->sel, w->net, rank, size, w->tag++), status, err);
    }
    if (size > 1 && w->topo.nhosts == 1 &&
        strcmp(dc_net_transport_name(w->net, (rank + 1) % size), "shm") == 0) {
        DC_CHECK_GOTO(dc_shm_group_create(w->net, w->ranks, size, rank, 0, timeout_ms, w->tag++,
                                          &w->ctx.shm_group), status, err);
    }
    *w_p = w;
    return DCOMM_OK;

err:
    dc_coll_world_close(w);
    return status;
}

void dc_coll_world_close(dc_coll_world_t *w)
{
    if (w == NULL) {
        return;
    }
    dc_shm_group_destroy(w->ctx.shm_group);
    if (w->net != NULL) {
        dc_net_close(w->net);
    }
    dc_select_destroy(w->sel);
    if (w->store != NULL) {
        w->store->ops->close(w->store);
    }
    if (w->ctx.scratch != NULL) {
        munmap(w->ctx.scratch, DC_COLL_SCRATCH_MIN);
    }
    free(w->ranks);
    free(w->host_of);
    free(w->local_rank_of);
    free(w);
}

int dc_coll_world_rank(const dc_coll_world_t *w)
{
    return w->ctx.rank;
}

int dc_coll_world_size(const dc_coll_world_t *w)
{
    return w->ctx.size;
}

const char *dc_coll_world_transport(const dc_coll_world_t *w)
{
    return dc_net_transport_name(w->net, (w->ctx.rank + 1) % w->ctx.size);
}

const dc_coll_algo_t *dc_coll_world_pick(dc_coll_world_t *w, int coll,
                                         const dc_coll_args_t *args)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = 0;
    int k, n;

    switch (coll) {
    case DC_COLL_ALLGATHER:
        for (int i = 0; i < w->ctx.size; i++) {
            bytes += args->counts[i] * esize;
        }
        break;
    case DC_COLL_ALLTOALL:
        for (int i = 0; i < w->ctx.size; i++) {
            bytes += args->recv_counts[i] * esize;
        }
        break;
    case DC_COLL_BARRIER:
        break;
    default:
        bytes = args->count * esize;
        break;
    }
    k = w->ctx.size > 1 ? dc_link_class_from_name(dc_coll_world_transport(w)) : DC_LINK_SELF;
    n = dc_select_candidates(w->sel, coll, bytes, w->ctx.size, w->ctx.nhosts,
                             k >= 0 ? (dc_link_class_t)k : DC_LINK_TCP, cand,
                             DC_SELECT_MAX_ROWS);
    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(&w->ctx, args)) {
            return cand[i];
        }
    }
    dc_error_set(DCOMM_ERR_INTERNAL, "no %s algorithm accepts these arguments",
                 dc_select_coll_name(coll));
    return NULL;
}

dc_status_t dc_coll_world_run(dc_coll_world_t *w, const dc_coll_algo_t *algo,
                              const dc_coll_args_t *args)
{
    w->ctx.tag = w->tag++;
    return algo->run(&w->ctx, args);
}

dc_status_t dc_coll_world_alltoall_counts(dc_coll_world_t *w, const size_t *send_counts,
                                          size_t *recv_counts)
{
    w->ctx.tag = w->tag++;
    return dc_alltoall_counts(&w->ctx, send_counts, recv_counts);
}
