/*
 * The coordinator thread: the only thread that communicates. Each cycle it
 * takes the queued requests and agrees with the other ranks on what is ready
 * everywhere, then executes that work in the agreed order (coord_exec.c).
 *
 * Agreement has two paths. The fast path: a tensor seen before has a bit in
 * the response cache (identical on every rank); a rank that submits it again
 * with the same parameters sets the bit, and one small allreduce (MIN over
 * bytes, i.e. a bitwise AND) of the bit vector tells every rank what is ready,
 * with no gather and no broadcast. The same vector carries flags (ORed): some
 * rank has requests for the slow path or is shutting down, or invalidates a
 * bit (a cached tensor submitted with other parameters). The
 * slow path (coord_neg.c): requests go to rank 0, which answers with the list
 * of ready responses. With DCOMM_CACHE_CAPACITY=0 every cycle is a slow round.
 *
 * When a cycle runs nothing (the same on every rank) the ranks go idle: each sleeps until its own
 * queue gets work or a peer sends WAKE. A rank leaving idle sends exactly one
 * WAKE to every peer, so every posted WAKE receive is matched before the next
 * idle period, and per-peer FIFO order keeps the cycle messages behind it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "coord.h"
#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "shm/shm_group.h"

#define TAG_WAKE (0xffull << 56)

/* Flags of the fast-path vector, after the bits and the invalidations. Each
 * byte holds 1 - flag, so the MIN over ranks is the AND of "not flag". */
enum { VF_SLOW, VF_SHUTDOWN, VF_TUNE /* autotune: rank 0's choice */, VF_COUNT };

static dc_status_t fail_all(coord_t *c, dc_status_t status, const char *msg);

static int launcher_cause(coord_t *c, dc_status_t status, char *text, size_t cap)
{
    return dc_bootstrap_launcher_cause(c->st, status, text, cap);
}

#define CAUSE_WAIT_MS 250 /* for a peer's own cause, which it publishes as it fails */

/* Every rank that fails publishes why in the store, "Q|text": Q the rank it
 * waited on in vain (-1 when its cause was not a quiet peer). */
static int publish_cause(coord_t *c, int quiet, const char *text)
{
    char key[32], val[1100];
    int n;

    if (c->st->store == NULL) {
        return -1;
    }
    /* The store may be out of reach (a partition): give it half a second. */
    dc_store_set_op_timeout(c->st->store, 500);
    snprintf(key, sizeof(key), "fail/%d", c->rank);
    n = snprintf(val, sizeof(val), "%d|%s", quiet, text);
    return dc_store_set(c->st->store, key, val, (size_t)DC_MIN(n, (int)sizeof(val) - 1) + 1);
}

/* rank's published cause within CAUSE_WAIT_MS: 1 with its quiet peer and
 * text, 0 when it published none (a stopped or hung rank never does). */
static int read_cause(coord_t *c, int rank, int *quiet_p, char *text, size_t cap)
{
    char key[32], val[1100];
    size_t len;
    char *bar;

    snprintf(key, sizeof(key), "fail/%d", rank);
    if (dc_store_get(c->st->store, key, val, sizeof(val) - 1, &len, CAUSE_WAIT_MS) < 0) {
        return 0;
    }
    val[DC_MIN(len, sizeof(val) - 1)] = '\0';
    bar = strchr(val, '|');
    if (bar == NULL || sscanf(val, "%d", quiet_p) != 1) {
        return 0;
    }
    snprintf(text, cap, "%s", bar + 1);
    return 1;
}

/* Peers fail in a chain: a stopped rank S leaves rank B waiting on it, and
 * rank A waiting on B; A and B time out together, and A alone would blame B.
 * Follow the published causes from the rank we lost (it went silent, or
 * dlaunch said it exited on an error) to the first rank that published none, or to
 * one that failed for a reason of its own, and name that rank first. */
static void cause_chain(coord_t *c, int lost, char *text, size_t cap)
{
    char other[1100], path[256], seen[1024];
    int at = lost, next, hops = 0;
    size_t plen = 0;

    if (c->st->store == NULL || lost < 0 || lost == c->rank) {
        return;
    }
    path[0] = '\0';
    while (hops++ < c->size) {
        if (!read_cause(c, at, &next, other, sizeof(other))) {
            break;            /* at never said why: it is the one */
        }
        if (next == c->rank) {
            return;           /* waits in a circle: no rank to single out */
        }
        if (next < 0 || next == at) {
            /* at failed for a reason of its own: that is the first cause */
            snprintf(seen, sizeof(seen), "%s", text);
            snprintf(text, cap, "rank %d failed first: %.600s (seen here as: %.300s)", at, other,
                     seen);
            return;
        }
        plen += (size_t)snprintf(path + plen, sizeof(path) - DC_MIN(plen, sizeof(path)),
                                 ", which waited on rank %d", next);
        at = next;
    }
    if (at == lost) {
        return;               /* the rank we lost said nothing more: the text stands */
    }
    snprintf(seen, sizeof(seen), "%s", text);
    snprintf(text, cap, "rank %d went quiet (no progress for DCOMM_TIMEOUT: stopped, hung or "
             "cut off); here rank %d lost rank %d%.200s (seen here as: %.500s)", at, c->rank,
             lost, path, seen);
}

static void coord_fatal(coord_t *c, dc_status_t status, const char *msg)
{
    dc_state_t *st = c->st;
    char text[1024];
    dc_net_t *net;

    int quiet = status == DCOMM_ERR_TIMEOUT ? dc_error_quiet_peer() : -1, ended;

    dc_error_set_quiet_peer(-1);
    snprintf(text, sizeof(text), "%s", msg); /* msg may live in this thread's error */
    ended = launcher_cause(c, status, text, sizeof(text));
    if (publish_cause(c, quiet, text) == DCOMM_OK) {
        cause_chain(c, quiet >= 0 ? quiet : ended, text, sizeof(text));
    }
    pthread_mutex_lock(&st->lock);
    if (st->fatal_status == 0) {
        st->fatal_status = status;
        snprintf(st->fatal_msg, sizeof(st->fatal_msg), "%s", text);
    }
    net = st->net;
    st->net = NULL;
    pthread_mutex_unlock(&st->lock);
    DC_ERROR("%s (%s); failing every pending operation", text, dcomm_status_string(status));
    /* Peers on this host learn the cause now, not at their DCOMM_TIMEOUT: this
     * process may live on after its failure (shm.c shm_fail, shm_group.c). */
    dc_shm_group_fail(c->ctx.shm_group, text);
    dc_shm_group_forget_net(c->ctx.shm_group);
    /* Close the network first: no transport may write into user buffers
     * after their handles complete. */
    if (net != NULL) {
        dc_net_fail(net, text);
        dc_net_close(net);
    }
    c->net = NULL;
    c->ctx.net = NULL;
    fail_all(c, status, text);
}

/* ---- comms --------------------------------------------------------------------- */

/* The comm of a request; NULL when unknown. Comms are created and destroyed
 * only through negotiated operations, so an entry does not change while
 * requests on it are in flight. */
const dc_comm_t *dc_coord_comm(coord_t *c, int32_t id)
{
    const dc_comm_t *cm = NULL;

    pthread_mutex_lock(&c->st->lock);
    if (id >= 0 && id < DC_MAX_COMMS && c->st->comms[id].in_use) {
        cm = &c->st->comms[id];
    }
    pthread_mutex_unlock(&c->st->lock);
    return cm;
}

int dc_coord_comm_rank_of(const dc_comm_t *cm, int world_rank)
{
    for (int i = 0; i < cm->size; i++) {
        if (cm->ranks[i] == world_rank) {
            return i;
        }
    }
    return -1;
}

/* ---- local bookkeeping ---------------------------------------------------- */

dc_status_t dc_coord_queue_slow(coord_t *c, const dc_wire_req_t *req)
{
    if (c->nnew == c->new_cap) {
        size_t cap = c->new_cap ? c->new_cap * 2 : 64;
        const dc_wire_req_t **r = realloc(c->new_reqs, cap * sizeof(*r));

        if (r == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        c->new_reqs = r;
        c->new_cap = cap;
    }
    c->new_reqs[c->nnew++] = req;
    return DCOMM_OK;
}

dc_status_t dc_coord_add_item(coord_t *c, const dc_wire_req_t *req, dc_op_t *op, int32_t error,
                              const char *text, const uint64_t *counts, uint32_t ncounts,
                              int bit)
{
    exec_item_t *it;

    if (c->nitems == c->items_cap) {
        size_t cap = c->items_cap ? c->items_cap * 2 : 64;
        exec_item_t *p = realloc(c->items, cap * sizeof(*p));

        if (p == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        c->items = p;
        c->items_cap = cap;
    }
    if (c->counts_len + ncounts > c->counts_cap) {
        size_t cap = DC_MAX(c->counts_cap * 2, c->counts_len + ncounts + 64);
        uint64_t *p = realloc(c->counts_arena, cap * sizeof(*p));

        if (p == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
        }
        c->counts_arena = p;
        c->counts_cap = cap;
    }
    it = &c->items[c->nitems++];
    memset(it, 0, sizeof(*it));
    it->req = *req;
    it->op = op;
    it->error = error;
    it->text = error != 0 && text != NULL ? strdup(text) : NULL;
    it->counts_off = c->counts_len;
    it->ncounts = ncounts;
    if (ncounts > 0) {
        memcpy(c->counts_arena + c->counts_len, counts, ncounts * sizeof(*counts));
        c->counts_len += ncounts;
    }
    it->bit = bit;
    it->ready_ns = dc_now_ns();
    return DCOMM_OK;
}

/* Takes the user's queue: each request is cached (it waits on its bit), or
 * goes to the slow path; a cached tensor with other parameters invalidates its
 * bit first. */
static dc_status_t take_queue(coord_t *c)
{
    dc_state_t *st = c->st;
    dc_status_t status = DCOMM_OK;
    dc_op_t *op;

    pthread_mutex_lock(&st->lock);
    op = st->queue_head;
    st->queue_head = st->queue_tail = NULL;
    atomic_store(&st->queue_nonempty, 0);
    pthread_mutex_unlock(&st->lock);
    if (op != NULL) {
        c->dl_local_ns = dc_now_ns(); /* our wait state changed (deadlock detection) */
    }

    while (op != NULL) {
        dc_op_t *next = op->next;
        char key[DC_WIRE_NAME_MAX + 16];
        const dc_comm_t *cm = dc_coord_comm(c, op->req.comm);
        int bit = -1, hit;

        op->next = NULL;
        dc_op_key(key, sizeof(key), op->req.comm, op->req.name);
        if (dc_map_put(&c->local, key, op) != 1) {
            /* The user-side duplicate check makes this unreachable. */
            dc_handle_complete(st, op->handle, DCOMM_ERR_INTERNAL, "coordinator lost a request");
            dc_op_free(op);
            op = next;
            continue;
        }
        if (op->req.coll == DC_COLL_JOIN) {
            c->local_joined[op->req.comm] = 1;
        }
        hit = dc_cache_lookup(&c->cache, &op->req, cm ? cm->rank : -1, &bit);
        if (hit >= 0 && c->by_bit[hit] == NULL) {
            c->by_bit[hit] = op;
        } else {
            if (hit == DC_CACHE_CHANGED) {
                c->inval[bit] = 1;
            }
            if (status == DCOMM_OK) {
                status = dc_coord_queue_slow(c, &op->req);
            }
        }
        op = next;
    }
    if (atomic_load(&st->shutdown_requested)) {
        c->shutdown_flag = 1;
    }
    return status;
}

typedef struct fail_ctx {
    coord_t *c;
    dc_status_t status;
    const char *msg;
} fail_ctx_t;

static void fail_one(const char *key, void *value, void *arg)
{
    fail_ctx_t *f = arg;
    dc_op_t *op = value;
    char text[1536];

    (void)key;
    snprintf(text, sizeof(text), "%s '%s': %s", dc_coll_name(op->req.coll), op->req.name,
             f->msg);
    dc_handle_complete(f->c->st, op->handle, f->status, text);
    dc_op_free(op);
}

/* Completes every local operation (taken or still queued) with status. */
static dc_status_t fail_all(coord_t *c, dc_status_t status, const char *msg)
{
    fail_ctx_t f = {c, status, msg};

    (void)take_queue(c);
    c->nnew = 0;
    for (int b = 0; b < c->cache.capacity; b++) {
        c->by_bit[b] = NULL;
    }
    for (size_t i = 0; i < c->nitems; i++) {
        /* taken out of the local map already */
        if (c->items[i].op != NULL) {
            fail_one(NULL, c->items[i].op, &f);
            c->items[i].op = NULL;
        }
        free(c->items[i].text);
        c->items[i].text = NULL;
    }
    c->nitems = 0;
    dc_map_foreach(&c->local, fail_one, &f);
    dc_map_free(&c->local);
    return status;
}

/* ---- the fast path ---------------------------------------------------------- */

/* One bit-vector allreduce; appends the tensors ready everywhere (bit order)
 * to the cycle's items. *slow_p: some rank needs a slow round this cycle. */
static dc_status_t fast_round(coord_t *c, int *slow_p, int *shutdown_p)
{
    int cap = c->cache.capacity, any_inval = 0;
    uint8_t *v = c->vec, *flags = c->vec + 2 * (size_t)cap;
    dc_coll_args_t args = {.sendbuf = v, .recvbuf = v, .count = c->vec_len,
                           .dtype = DCOMM_UINT8, .op = DCOMM_MIN};
    dc_coll_ctx_t ctx = c->ctx;
    dc_status_t status;
    uint64_t t0;

    for (int b = 0; b < cap; b++) {
        const dc_cache_entry_t *e = dc_cache_get(&c->cache, b);

        /* A joined rank takes part in allreduces (with zeros) and barriers
         * only: other cached collectives go back to rank 0, which fails them
         * while ranks have joined (coord_neg.c, describe_joined). */
        if (e != NULL && c->local_joined[e->req.comm] && c->by_bit[b] == NULL &&
            e->req.coll != DC_COLL_ALLREDUCE && e->req.coll != DC_COLL_BARRIER) {
            c->inval[b] = 1;
        }
        /* Ready here: we submitted it, or we joined its comm, or we are not a
         * member of its comm (the members alone decide). */
        v[b] = !c->inval[b] &&
               (c->by_bit[b] != NULL ||
                (e != NULL && (c->local_joined[e->req.comm] ||
                               c->st->comms[e->req.comm].rank < 0)));
        v[cap + b] = !c->inval[b];
        any_inval |= c->inval[b];
    }
    flags[VF_SLOW] = !(c->nnew > 0 || any_inval ||
                       (c->rank == 0 && (c->stall_fatal[0] || c->dl_due)) ||
                       dc_coord_dl_report_due(c, dc_now_ns()));
    flags[VF_SHUTDOWN] = !c->shutdown_flag;
    flags[VF_TUNE] = c->rank == 0 ? (uint8_t)c->tune.current : 255;
    ctx.tag = c->tag++;
    t0 = dc_now_ns();
    status = (c->size <= 1 ? DCOMM_OK
              : dc_allreduce_rd_algo.supported(&ctx, &args) ? dc_allreduce_rd_algo.run(&ctx, &args)
                                                             : dc_allreduce_ring_algo.run(&ctx, &args));
    if (status < 0) {
        return status;
    }
    c->stats.fast_rounds++;
    c->stats.negotiate_ns += dc_now_ns() - t0;
    *slow_p = !flags[VF_SLOW] || !flags[VF_SHUTDOWN];
    *shutdown_p = !flags[VF_SHUTDOWN];
    if (flags[VF_TUNE] != 255) {
        dc_autotune_apply(c, flags[VF_TUNE]);
    }
    /* Invalidated bits: gone everywhere; our op waiting on one goes slow. */
    for (int b = 0; b < cap; b++) {
        if (!v[cap + b]) {
            dc_op_t *op = c->by_bit[b];

            c->by_bit[b] = NULL;
            c->inval[b] = 0;
            v[b] = 0;
            dc_cache_erase(&c->cache, b);
            if (op != NULL) {
                DC_CHECK_GOTO(dc_coord_queue_slow(c, &op->req), status, out);
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
        e = dc_cache_get(&c->cache, b);
        op = c->by_bit[b];
        c->by_bit[b] = NULL;
        if (e == NULL) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "cache bit %d ready but empty", b);
        }
        c->dl_touched[e->req.comm] = 1;
        c->dl_any_touched = 1;
        if (op != NULL) {
            char key[DC_WIRE_NAME_MAX + 16];

            dc_op_key(key, sizeof(key), op->req.comm, op->req.name);
            dc_map_remove(&c->local, key);
        }
        DC_CHECK_GOTO(dc_coord_add_item(c, &e->req, op, 0, NULL, e->counts, e->ncounts, b),
                      status, out);
    }
out:
    return status;
}

/* ---- idle ------------------------------------------------------------------- */

static dc_status_t wait_reqs(coord_t *c, dc_request_t **reqs, int n)
{
    return dc_net_wait(c->net, reqs, n, NULL, NULL);
}

static int idle_stop(void *arg)
{
    coord_t *c = arg;

    if (atomic_load(&c->st->queue_nonempty) || atomic_load(&c->st->shutdown_requested)) {
        return 1;
    }
    /* Rank 0 looks at waiting tensors now and then (stall inspector); leaving
     * idle wakes the others for one round, then all go idle again. */
    if (c->rank == 0 && c->table.count > 0 && dc_now_ns() > c->idle_deadline_ns) {
        return 1;
    }
    /* Deadlock detection: report a wait that stands, or (rank 0) check. */
    if (dc_coord_dl_idle_stop(c, dc_now_ns())) {
        return 1;
    }
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank && c->wake_rx[r].status != DCOMM_INPROGRESS) {
            return 1;
        }
    }
    return 0;
}

/* Completes the WAKE messages of the previous idle period. */
static dc_status_t idle_drain(coord_t *c)
{
    int k = 0;

    if (!c->wake_posted) {
        return DCOMM_OK;
    }
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank) {
            c->preqs[k++] = &c->wake_rx[r];
            c->preqs[k++] = &c->wake_tx[r];
        }
    }
    c->wake_posted = 0;
    return wait_reqs(c, c->preqs, k);
}

static dc_status_t idle_wait(coord_t *c)
{
    dc_status_t status = idle_drain(c);
    int k = 0;

    if (c->size == 1) { /* nobody to wake us: sleep until our own queue gets work */
        while (!idle_stop(c)) {
            dc_net_sleep_until(c->net, dc_now_ns() + 100000000ull);
        }
        return DCOMM_OK;
    }

    if (status < 0) {
        return status;
    }
    c->epoch++;
    for (int r = 0; r < c->size; r++) {
        if (r == c->rank) {
            continue;
        }
        status = dc_ep_irecv(dc_net_ep(c->net, r), NULL, 0, TAG_WAKE | c->epoch, &c->wake_rx[r]);
        if (status < 0) {
            return status;
        }
    }
    c->wake_posted = 1;
    DC_TRACE("idle (epoch %llu)", (unsigned long long)c->epoch);
    /* No deadline while idle (a stop function disables it); liveness checks
     * and dlaunch's events still end the wait when a peer dies. */
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank) {
            c->preqs[k++] = &c->wake_rx[r];
        }
    }
    status = dc_net_wait(c->net, c->preqs, k, idle_stop, c);
    if (status < 0) {
        return status;
    }
    for (int r = 0; r < c->size; r++) {
        if (r != c->rank) {
            status = dc_ep_isend(dc_net_ep(c->net, r), NULL, 0, TAG_WAKE | c->epoch,
                                 &c->wake_tx[r]);
            if (status < 0) {
                return status;
            }
        }
    }
    return DCOMM_OK;
}

/* ---- the loop -------------------------------------------------------------- */

static void finish_shutdown(coord_t *c, uint32_t flags)
{
    char msg[256];

    snprintf(msg, sizeof(msg), "rank %d called dcomm_shutdown before every rank submitted it",
             DC_WIRE_FLAG_GET_RANK(flags));
    fail_all(c, DCOMM_ERR_SHUT_DOWN, msg);
}

/* dcomm_timeline_start/stop, or DCOMM_TIMELINE at start: rank 0 writes. */
static void timeline_control(coord_t *c)
{
    dc_state_t *st = c->st;
    int cmd = atomic_exchange(&st->timeline_cmd, 0);
    char path[sizeof(st->timeline_path)];

    if (cmd == 0 || c->rank != 0) {
        return;
    }
    pthread_mutex_lock(&st->lock);
    snprintf(path, sizeof(path), "%s", st->timeline_path);
    pthread_mutex_unlock(&st->lock);
    dc_timeline_close(c->tl);
    c->tl = NULL;
    if (cmd == 1 && dc_timeline_open(path, &c->tl) < 0) {
        DC_WARN("%s", dc_error_get());
    }
}

/* Nice levels are per thread on Linux. Without a boost the coordinator shares
 * its core evenly with a computing application thread: a collective that needs
 * every rank's coordinator at once (shm-direct hands chunks back and forth)
 * then advances only while all of them happen to hold their cores, and a 12 MB
 * allreduce that takes 2 ms alone took 10-20 ms inside a training step. Raised
 * above the application, the coordinator preempts it for its short bursts and
 * sleeps otherwise. An unprivileged process may not go below nice 0 (beyond
 * RLIMIT_NICE): then it goes as far as it may. */
static void coord_raise_priority(int64_t boost)
{
    const id_t self = (id_t)syscall(SYS_gettid);
    struct rlimit lim;
    int base, target, floor = 20;

    if (boost <= 0) {
        return;
    }
    errno = 0;
    base = getpriority(PRIO_PROCESS, self);
    if (errno != 0) {
        DC_DEBUG("coordinator priority: getpriority: %s", strerror(errno));
        return;
    }
    target = boost > base + 20 ? -20 : base - (int)boost;
    if (target >= base) {
        return;
    }
    if (setpriority(PRIO_PROCESS, self, target) == 0) {
        DC_DEBUG("coordinator thread at nice %d (application thread %d)", target, base);
        return;
    }
    int err = errno;
    /* RLIMIT_NICE's soft limit r allows nice down to 20 - r without privilege */
    if (getrlimit(RLIMIT_NICE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur <= 40) {
        floor = 20 - (int)lim.rlim_cur;
    }
    int got = floor > target && floor < base && setpriority(PRIO_PROCESS, self, floor) == 0 ?
              floor : base;
    DC_INFO("coordinator priority: nice %d not allowed (%s), running at nice %d beside the "
            "application's %d (DCOMM_COORD_PRIORITY)", target, strerror(err), got, base);
}

static void *coord_main(void *arg)
{
    coord_t *c = arg;
    uint32_t flags = 0;
    dc_status_t status;

    dc_log_set_rank(c->rank);
    pthread_setname_np(pthread_self(), "dcomm-coord"); /* for top -H, gdb and tests */
    coord_raise_priority(dc_config.coord_priority);
    for (;;) {
        uint64_t start = dc_now_ns();
        int slow = 1, shutdown = 0, idle, ran = 0;

        c->stats.cycles++;
        timeline_control(c);
        if (c->tl != NULL && dc_config.timeline_mark_cycles) {
            dc_timeline_tick(c->tl, "coordinator", "CYCLE_START", start, NULL);
        }
        status = take_queue(c);
        dc_coord_stall_check(c);
        dc_coord_dl_check(c);
        flags = 0;
        if (status == DCOMM_OK && c->cache.capacity > 0) {
            status = fast_round(c, &slow, &shutdown);
        }
        if (status == DCOMM_OK && slow) {
            status = dc_coord_negotiate(c, &flags);
        }
        if (status == DCOMM_OK) {
            c->cycle_bytes = 0;
            ran = c->nitems > 0;
            status = dc_coord_execute(c);
            dc_coord_dl_cycle_end(c);
            dc_autotune_sample(c, c->cycle_bytes, dc_now_ns() - start);
        }
        if (status == DCOMM_OK && (flags & DC_WIRE_FLAG_SHUTDOWN)) {
            status = idle_drain(c);
            if (status == DCOMM_OK) {
                finish_shutdown(c, flags);
                break;
            }
        }
        /* Fast path: a cycle that ran nothing goes idle on every rank (the
         * condition is the same everywhere), also with work pending: the
         * rank whose submission completes it wakes the others at once, so
         * no rank waits out a sleeping peer's cycle time. */
        idle = c->cache.capacity > 0 ? !ran && !slow && !shutdown
                                     : (flags & DC_WIRE_FLAG_IDLE) != 0;
        if (status == DCOMM_OK && idle) {
            c->stats.idle_periods++;
            c->idle_deadline_ns = dc_now_ns() + 100000000ull;
            status = idle_wait(c);
            if (status == DCOMM_OK) {
                continue;
            }
        }
        if (status < 0) {
            coord_fatal(c, status, dc_error_get());
            break;
        }
        if (!atomic_load(&c->st->queue_nonempty) && c->cycle_ns > 0) {
            dc_net_sleep_until(c->net, start + c->cycle_ns);
        }
    }
    atomic_store(&c->st->coord_exited, 1);
    return NULL;
}

static void coord_free(coord_t *c)
{
    if (c == NULL) {
        return;
    }
    dc_coord_neg_free(c);
    dc_map_free(&c->local);
    dc_wire_buf_free(&c->up);
    dc_wire_buf_free(&c->down);
    for (int r = 0; c->rx != NULL && r < c->size; r++) {
        dc_wire_buf_free(&c->rx[r]);
    }
    free(c->rx);
    free(c->rx_len);
    free(c->reqs);
    free(c->preqs);
    free(c->wake_rx);
    free(c->wake_tx);
    free(c->new_reqs);
    free(c->world_ranks);
    free(c->resp_counts);
    free(c->items);
    free(c->counts_arena);
    free(c->by_bit);
    free(c->inval);
    free(c->vec);
    dc_cache_free(&c->cache);
    dc_autotune_free(c);
    dc_timeline_close(c->tl);
    dc_shm_group_destroy(c->ctx.shm_group);
    dc_coord_dev_free(c);
    dc_select_destroy(c->sel);
    if (c->ctx.scratch != NULL) {
        munmap(c->ctx.scratch, c->scratch_size);
    }
    if (c->fusion != NULL) {
        munmap(c->fusion, c->fusion_size);
    }
    free(c->segs);
    c->segs = NULL;
    if (c->zeros != NULL) {
        munmap(c->zeros, c->zeros_size);
    }
    free(c);
}

/* Settings that must be equal everywhere come from rank 0. */
static dc_status_t agree_settings(coord_t *c)
{
    uint64_t v[4] = {dc_config.fusion_threshold, dc_config.cycle_time_us,
                     (uint64_t)(dc_config.cache_capacity > 0 ? dc_config.cache_capacity : 0),
                     dc_config.fusion_bypass};
    uint64_t mine[4] = {v[0], v[1], v[2], v[3]};
    dc_coll_args_t args = {.sendbuf = v, .recvbuf = v, .count = 4, .dtype = DCOMM_INT64,
                           .root = 0};
    dc_coll_ctx_t ctx = c->ctx;
    dc_status_t status = DCOMM_OK;

    ctx.tag = c->tag++;
    if (c->size > 1) {
        status = dc_bcast_binomial_algo.run(&ctx, &args);
    }
    if (status < 0) {
        return status;
    }
    if (memcmp(v, mine, sizeof(v)) != 0) {
        DC_WARN("DCOMM_FUSION_THRESHOLD, DCOMM_CYCLE_TIME, DCOMM_CACHE_CAPACITY or "
                "DCOMM_FUSION_BYPASS differ from rank 0's; using rank 0's");
    }
    if (v[2] > 1u << 20) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "DCOMM_CACHE_CAPACITY %llu is too large "
                            "(at most %u)", (unsigned long long)v[2], 1u << 20);
    }
    c->fusion_threshold = v[0];
    /* DCOMM_FUSION_BYPASS's default, 1 MiB, was measured with bench/step_bench
     * (ResNet-50 sizes, 2 ranks over shm): fusing only tensors up to 1 MiB beats
     * fusing everything by 1.3-1.4x. Groups must be the same on every rank. */
    c->bypass_bytes = (size_t)v[3];
    c->cycle_ns = v[1] * 1000ull;
    DC_CHECK_GOTO(dc_cache_init(&c->cache, (int)v[2]), status, out);
    if (v[2] > 0) {
        c->by_bit = calloc(v[2], sizeof(*c->by_bit));
        c->inval = calloc(v[2], 1);
        c->vec_len = 2 * v[2] + VF_COUNT;
        c->vec = calloc(c->vec_len, 1);
        if (c->by_bit == NULL || c->inval == NULL || c->vec == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the response cache");
        }
    }
out:
    return status;
}

static coord_t *the_coord;

dc_status_t dc_coord_start(dc_state_t *st)
{
    coord_t *c = calloc(1, sizeof(*c));
    dc_status_t status;
    size_t n;

    if (c == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the coordinator");
    }
    c->st = st;
    c->net = st->net;
    c->rank = st->rank;
    c->size = st->size;
    n = (size_t)st->size;
    c->rx = calloc(n, sizeof(*c->rx));
    c->rx_len = calloc(n, sizeof(*c->rx_len));
    c->reqs = calloc(2 * n + 2, sizeof(*c->reqs));
    c->preqs = calloc(2 * n + 2, sizeof(*c->preqs));
    c->wake_rx = calloc(n, sizeof(*c->wake_rx));
    c->wake_tx = calloc(n, sizeof(*c->wake_tx));
    c->world_ranks = calloc(n, sizeof(*c->world_ranks));
    c->resp_counts = calloc(n, sizeof(*c->resp_counts));
    c->resp.counts = c->resp_counts;
    c->resp.counts_cap = (uint32_t)n;
    /* Scratch is allocated once and pre-faulted: page faults cost ~12 us here. */
    c->scratch_size = DC_COLL_SCRATCH_MIN;
    c->ctx.scratch = mmap(NULL, c->scratch_size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (c->ctx.scratch == MAP_FAILED) {
        c->ctx.scratch = NULL;
    }
    if (c->rx == NULL || c->rx_len == NULL || c->reqs == NULL || c->preqs == NULL ||
        c->wake_rx == NULL || c->wake_tx == NULL || c->world_ranks == NULL ||
        c->resp_counts == NULL || c->ctx.scratch == NULL) {
        coord_free(c);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the coordinator");
    }
    for (int r = 0; r < c->size; r++) {
        c->world_ranks[r] = r;
    }
    c->ctx.net = st->net;
    c->ctx.rank = st->rank;
    c->ctx.size = st->size;
    c->ctx.ranks = c->world_ranks;
    c->ctx.host_of = st->host_of;
    c->ctx.nhosts = st->cross_size;
    c->ctx.scratch_size = c->scratch_size;
    c->ctx.reqs = c->coll_reqs;
    c->shutdown_rank = -1;
    status = dc_select_create(dc_config.tune, &c->sel);
    if (status < 0) {
        status = dc_error_set(status, "DCOMM_TUNE: %s", dc_error_get());
        coord_free(c);
        return status;
    }
    /* Collective set-up before the thread starts, in the same order on every
     * rank: the settings that must agree, calibration of the cost model, then
     * the host's shared segment for shm-direct allreduce (when every rank is
     * on this host over shm). */
    status = agree_settings(c);
    if (status == DCOMM_OK && dc_config.calibrate && st->size > 1) {
        status = dc_select_calibrate(c->sel, st->net, st->rank, st->size, c->tag++);
    }
    if (status < 0) {
        /* A failed exchange may leave requests posted into c's buffers: the
         * transports let go of them when the network closes, so close it
         * first (init fails anyway). */
        dc_net_close(st->net);
        st->net = NULL;
        coord_free(c);
        return status;
    }
    if (st->size > 1 && st->cross_size == 1 &&
        strcmp(dc_net_transport_name(st->net, (st->rank + 1) % st->size), "shm") == 0 &&
        dc_shm_group_create(st->net, c->world_ranks, st->size, st->rank, 0,
                            (int)dc_config.timeout_ms, c->tag++, &c->ctx.shm_group) < 0) {
        DC_WARN("shm-direct allreduce disabled: %s", dc_error_get());
        c->ctx.shm_group = NULL;
    }
    dc_autotune_init(c);
    if (dc_config.timeline[0] != '\0') {
        snprintf(st->timeline_path, sizeof(st->timeline_path), "%s", dc_config.timeline);
        atomic_store(&st->timeline_cmd, 1);
    }
    if (pthread_create(&st->coord_thread, NULL, coord_main, c) != 0) {
        coord_free(c);
        return dc_error_set(DCOMM_ERR_INTERNAL, "cannot start the coordinator thread");
    }
    the_coord = c;
    return DCOMM_OK;
}

void dc_coord_stop(dc_state_t *st)
{
    pthread_mutex_lock(&st->lock);
    atomic_store(&st->shutdown_requested, 1);
    dc_coord_wake(st);
    pthread_mutex_unlock(&st->lock);
    pthread_join(st->coord_thread, NULL);
    /* Requests queued after the coordinator left. */
    if (the_coord != NULL) {
        fail_all(the_coord, DCOMM_ERR_SHUT_DOWN, "dcomm has shut down");
        if (dc_config.stats) {
            dc_coord_print_stats(the_coord);
        }
        coord_free(the_coord);
        the_coord = NULL;
    }
}

void dc_coord_enqueue(dc_state_t *st, dc_op_t *op)
{
    op->next = NULL;
    if (st->queue_tail != NULL) {
        st->queue_tail->next = op;
    } else {
        st->queue_head = op;
    }
    st->queue_tail = op;
    atomic_store(&st->queue_nonempty, 1);
}

/* Lock held: the coordinator clears st->net under it before closing. */
void dc_coord_wake(dc_state_t *st)
{
    if (st->net != NULL) {
        dc_net_wake(st->net);
    }
}
