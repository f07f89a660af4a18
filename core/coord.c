/*
 * The coordinator thread: the only thread that communicates. Each cycle it
 * takes the queued requests, negotiates with the other ranks (slow path: every
 * rank sends its new requests to rank 0, which answers with the list of
 * responses that are ready everywhere, or errors for requests that disagree),
 * executes the responses in the agreed order and completes their handles.
 *
 * When a cycle finds nothing pending anywhere the ranks go idle: each sleeps
 * until its own queue gets work or a peer sends WAKE. A rank leaving idle sends
 * exactly one WAKE to every peer, so every posted WAKE receive is matched
 * before the next idle period, and per-peer FIFO order keeps the cycle messages
 * behind it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "coll.h"
#include "config.h"
#include "coord.h"
#include "dc_reduce.h"
#include "log.h"
#include "shm/shm_group.h"
#include "dc_time.h"

#define TAG_WAKE (0xffull << 56)

/* Rank 0's record of one tensor being negotiated. */
typedef struct neg_entry {
    dc_wire_req_t *per_rank; /* [size], valid where have[r] */
    uint8_t *have;
    int nhave;
    uint64_t first_ns;
} neg_entry_t;

static dc_status_t fail_all(coord_t *c, dc_status_t status, const char *msg);

static void coord_fatal(coord_t *c, dc_status_t status, const char *msg)
{
    dc_state_t *st = c->st;
    char text[1024];
    dc_net_t *net;

    snprintf(text, sizeof(text), "%s", msg); /* msg may live in this thread's error */
    pthread_mutex_lock(&st->lock);
    if (st->fatal_status == 0) {
        st->fatal_status = status;
        snprintf(st->fatal_msg, sizeof(st->fatal_msg), "%s", text);
    }
    net = st->net;
    st->net = NULL;
    pthread_mutex_unlock(&st->lock);
    DC_ERROR("%s (%s); failing every pending operation", text, dcomm_status_string(status));
    /* Close the network first: no transport may write into user buffers
     * after their handles complete. */
    if (net != NULL) {
        dc_net_close(net);
    }
    c->net = NULL;
    c->ctx.net = NULL;
    fail_all(c, status, text);
}

/* ---- local bookkeeping ---------------------------------------------------- */

static void take_queue(coord_t *c)
{
    dc_state_t *st = c->st;
    dc_op_t *op;

    pthread_mutex_lock(&st->lock);
    op = st->queue_head;
    st->queue_head = st->queue_tail = NULL;
    atomic_store(&st->queue_nonempty, 0);
    pthread_mutex_unlock(&st->lock);

    while (op != NULL) {
        dc_op_t *next = op->next;
        char key[DC_WIRE_NAME_MAX + 16];

        op->next = NULL;
        dc_op_key(key, sizeof(key), op->req.comm, op->req.name);
        if (dc_map_put(&c->local, key, op) != 1) {
            /* The user-side duplicate check makes this unreachable. */
            dc_handle_complete(st, op->handle, DCOMM_ERR_INTERNAL, "coordinator lost a request");
            dc_op_free(op);
        } else if (c->nnew < c->new_cap) {
            c->new_reqs[c->nnew++] = &op->req;
        } else {
            size_t cap = c->new_cap ? c->new_cap * 2 : 64;
            const dc_wire_req_t **r = realloc(c->new_reqs, cap * sizeof(*r));

            if (r == NULL) {
                dc_map_remove(&c->local, key);
                dc_handle_complete(st, op->handle, DCOMM_ERR_NO_MEMORY, "out of memory");
                dc_op_free(op);
            } else {
                c->new_reqs = r;
                c->new_cap = cap;
                c->new_reqs[c->nnew++] = &op->req;
            }
        }
        op = next;
    }
    if (atomic_load(&st->shutdown_requested)) {
        c->shutdown_flag = 1;
    }
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

    take_queue(c);
    c->nnew = 0;
    dc_map_foreach(&c->local, fail_one, &f);
    dc_map_free(&c->local);
    return status;
}

/* ---- rank 0: the negotiation table ----------------------------------------- */

static void neg_free(neg_entry_t *e)
{
    if (e != NULL) {
        free(e->per_rank);
        free(e->have);
        free(e);
    }
}

static void neg_free_cb(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    neg_free(value);
}

/* The comm of a request (rank 0 and execution); NULL when unknown. Comms are
 * created and destroyed only through negotiated operations, so an entry does
 * not change while requests on it are in flight. */
static const dc_comm_t *coord_comm(coord_t *c, int32_t id)
{
    const dc_comm_t *cm = NULL;

    pthread_mutex_lock(&c->st->lock);
    if (id >= 0 && id < DC_MAX_COMMS && c->st->comms[id].in_use) {
        cm = &c->st->comms[id];
    }
    pthread_mutex_unlock(&c->st->lock);
    return cm;
}

static int comm_rank_of(const dc_comm_t *cm, int world_rank)
{
    for (int i = 0; i < cm->size; i++) {
        if (cm->ranks[i] == world_rank) {
            return i;
        }
    }
    return -1;
}

enum { F_COLL, F_DTYPE, F_OP, F_COUNT, F_ROOT, F_NFIELDS };

/* Does field f matter for collective coll? Allgather and alltoall counts may
 * differ per rank; only reductions have an op; only broadcast a root. */
static int field_checked(int f, int coll)
{
    switch (f) {
    case F_COLL: return 1;
    case F_DTYPE: return coll != DC_COLL_COMM_CREATE && coll != DC_COLL_COMM_DESTROY;
    case F_OP: return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_REDUCESCATTER;
    case F_COUNT:
        return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_BROADCAST ||
               coll == DC_COLL_REDUCESCATTER || coll == DC_COLL_COMM_CREATE;
    default: return coll == DC_COLL_BROADCAST;
    }
}

static int64_t field_value(const dc_wire_req_t *q, int f)
{
    int64_t v[F_NFIELDS] = {q->coll, q->dtype, q->op, (int64_t)q->count, q->root};

    return v[f];
}

static void field_text(const dc_wire_req_t *q, int f, char *buf, size_t cap)
{
    switch (f) {
    case F_COLL: snprintf(buf, cap, "%s", dc_coll_name(q->coll)); break;
    case F_DTYPE: snprintf(buf, cap, "dtype %d", q->dtype); break;
    case F_OP: snprintf(buf, cap, "op %d", q->op); break;
    case F_COUNT:
        if (q->coll == DC_COLL_COMM_CREATE) {
            snprintf(buf, cap, "a list of %d ranks (hash %016llx)", q->root,
                     (unsigned long long)q->count);
        } else {
            snprintf(buf, cap, "%llu", (unsigned long long)q->count);
        }
        break;
    default: snprintf(buf, cap, "%d", q->root); break;
    }
}

/* Describes how the members of cm differ in one field; 0 when they agree. */
static int describe_mismatch(const dc_comm_t *cm, const neg_entry_t *e, char *text, size_t cap)
{
    static const char *const fields[] = {"collective", "dtype", "op", "count", "root"};
    const dc_wire_req_t *ref = &e->per_rank[cm->ranks[0]];
    int field = -1;

    for (int f = 0; f < F_NFIELDS && field < 0; f++) {
        if (!field_checked(f, ref->coll)) {
            continue;
        }
        for (int i = 1; i < cm->size; i++) {
            if (field_value(&e->per_rank[cm->ranks[i]], f) != field_value(ref, f)) {
                field = f;
                break;
            }
        }
    }
    if (field < 0) {
        return 0;
    }
    size_t len = (size_t)snprintf(text, cap, "ranks disagree on the %s of tensor '%s':",
                                  ref->coll == DC_COLL_COMM_CREATE && field == F_COUNT
                                      ? "member list" : fields[field], ref->name);
    /* Group ranks by value, in rank order of first appearance. */
    uint8_t *listed = calloc((size_t)cm->size, 1);

    for (int i = 0; i < cm->size && listed != NULL && len < cap; i++) {
        const dc_wire_req_t *q = &e->per_rank[cm->ranks[i]];
        char value[96], group[256];
        size_t glen = 0;
        int members = 0;

        if (listed[i]) {
            continue;
        }
        field_text(q, field, value, sizeof(value));
        for (int j = i; j < cm->size && glen < sizeof(group); j++) {
            if (!listed[j] &&
                field_value(&e->per_rank[cm->ranks[j]], field) == field_value(q, field)) {
                listed[j] = 1;
                members++;
                glen += (size_t)snprintf(group + glen, sizeof(group) - glen, "%s%d",
                                         j == i ? "" : ",", cm->ranks[j]);
            }
        }
        len += (size_t)snprintf(text + len, cap - len, "%s %s %s", i ? ";" : "",
                                members > 1 ? "ranks" : "rank", group);
        if (len < cap) {
            len += (size_t)snprintf(text + len, cap - len, " sent %s", value);
        }
    }
    free(listed);
    return 1;
}

/* Rank 0 takes one request of rank r; appends a response when every member
 * of the request's comm has sent it. */
static dc_status_t neg_add(coord_t *c, int r, const dc_wire_req_t *req)
{
    char key[DC_WIRE_NAME_MAX + 16];
    const dc_comm_t *cm = coord_comm(c, req->comm);
    neg_entry_t *e;
    dc_wire_resp_t *resp = &c->resp;
    dc_status_t status;

    if (cm == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d sent tensor '%s' on unknown comm %d",
                            r, req->name, req->comm);
    }
    if (comm_rank_of(cm, r) < 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL,
                            "rank %d sent tensor '%s' on comm %d, which it is not a member of",
                            r, req->name, req->comm);
    }
    dc_op_key(key, sizeof(key), req->comm, req->name);
    e = dc_map_get(&c->table, key);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e != NULL) {
            e->per_rank = calloc((size_t)c->size, sizeof(*e->per_rank));
            e->have = calloc((size_t)c->size, 1);
        }
        if (e == NULL || e->per_rank == NULL || e->have == NULL ||
            dc_map_put(&c->table, key, e) != 1) {
            neg_free(e);
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory in negotiation");
        }
        e->first_ns = dc_now_ns();
    }
    if (e->have[r]) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d sent tensor '%s' twice", r, req->name);
    }
    e->per_rank[r] = *req;
    e->have[r] = 1;
    if (++e->nhave < cm->size) {
        return DCOMM_OK;
    }
    memset(resp->text, 0, sizeof(resp->text));
    resp->req = e->per_rank[cm->ranks[0]];
    resp->error = 0;
    resp->ncounts = 0;
    if (describe_mismatch(cm, e, resp->text, sizeof(resp->text))) {
        resp->error = DCOMM_ERR_MISMATCH;
    } else if (req->coll == DC_COLL_ALLGATHER) {
        resp->ncounts = (uint32_t)cm->size;
        for (int i = 0; i < cm->size; i++) {
            resp->counts[i] = e->per_rank[cm->ranks[i]].count;
        }
    }
    status = dc_wire_resp_append(&c->down, resp);
    dc_map_remove(&c->table, key);
    neg_free(e);
    c->nresps++;
    return status;
}

static dc_status_t neg_take_list(coord_t *c, int r, const void *data, size_t len)
{
    dc_wire_reader_t rd;
    uint32_t flags, n;
    dc_wire_req_t req;
    dc_status_t status = dc_wire_reqs_begin(&rd, data, len, &flags, &n);

    if (status < 0) {
        return dc_error_set(status, "from rank %d: %s", r, dc_error_get());
    }
    if ((flags & DC_WIRE_FLAG_SHUTDOWN) && c->shutdown_rank < 0) {
        c->shutdown_rank = r;
    }
    for (uint32_t i = 0; i < n; i++) {
        status = dc_wire_req_next(&rd, &req);
        if (status == DCOMM_OK) {
            status = neg_add(c, r, &req);
        }
        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

/* ---- one negotiation round ------------------------------------------------- */

static dc_status_t wait_reqs(coord_t *c, dc_request_t **reqs, int n)
{
    return dc_net_wait(c->net, reqs, n, NULL, NULL);
}

static dc_status_t negotiate_root(coord_t *c)
{
    dc_status_t status;
    int n = c->size, k = 0;
    uint32_t flags = 0;

    c->shutdown_rank = c->shutdown_flag ? 0 : -1;
    c->nresps = 0;
    DC_CHECK_GOTO(dc_wire_resps_begin_encode(&c->down, 0), status, out);
    /* Lengths first, then the lists, from every other rank. */
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(dc_ep_irecv(dc_net_ep(c->net, r), &c->rx_len[r], sizeof(uint64_t),
                                  c->tag, &c->reqs[k]), status, out);
        c->preqs[k] = &c->reqs[k];
        k++;
    }
    /* Our own list is taken while the others' are on their way. */
    DC_CHECK_GOTO(dc_wire_reqs_encode(&c->up, c->shutdown_flag ? DC_WIRE_FLAG_SHUTDOWN : 0,
                                      c->new_reqs, (uint32_t)c->nnew), status, out);
    DC_CHECK_GOTO(neg_take_list(c, 0, c->up.data, c->up.len), status, out);
    DC_CHECK_GOTO(wait_reqs(c, c->preqs, k), status, out);
    k = 0;
    for (int r = 1; r < n; r++) {
        if (c->rx_len[r] > DC_WIRE_MSG_MAX) {
            status = dc_error_set(DCOMM_ERR_TRANSPORT, "rank %d announced a %llu-byte list", r,
                                  (unsigned long long)c->rx_len[r]);
            goto out;
        }
        DC_CHECK_GOTO(dc_wire_buf_reserve(&c->rx[r], c->rx_len[r]), status, out);
        DC_CHECK_GOTO(dc_ep_irecv(dc_net_ep(c->net, r), c->rx[r].data, c->rx_len[r], c->tag,
                                  &c->reqs[k]), status, out);
        c->preqs[k] = &c->reqs[k];
        k++;
    }
    DC_CHECK_GOTO(wait_reqs(c, c->preqs, k), status, out);
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(neg_take_list(c, r, c->rx[r].data, c->rx_len[r]), status, out);
    }
    if (c->shutdown_rank >= 0) {
        flags |= DC_WIRE_FLAG_SHUTDOWN;
    } else if (c->nresps == 0 && c->table.count == 0) {
        flags |= DC_WIRE_FLAG_IDLE;
    }
    if (c->shutdown_rank >= 0) {
        flags |= DC_WIRE_FLAG_RANK(c->shutdown_rank);
    }
    dc_wire_set_flags(&c->down, flags);
    c->down_len = c->down.len;
    k = 0;
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(c->net, r), &c->down_len, sizeof(uint64_t), c->tag,
                                  &c->reqs[k]), status, out);
        c->preqs[k] = &c->reqs[k];
        k++;
        DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(c->net, r), c->down.data, c->down.len, c->tag,
                                  &c->reqs[k]), status, out);
        c->preqs[k] = &c->reqs[k];
        k++;
    }
    status = wait_reqs(c, c->preqs, k);
out:
    return status;
}

static dc_status_t negotiate_member(coord_t *c)
{
    dc_endpoint_t *root = dc_net_ep(c->net, 0);
    dc_status_t status;

    DC_CHECK_GOTO(dc_wire_reqs_encode(&c->up, c->shutdown_flag ? DC_WIRE_FLAG_SHUTDOWN : 0,
                                      c->new_reqs, (uint32_t)c->nnew), status, out);
    c->up_len = c->up.len;
    DC_CHECK_GOTO(dc_ep_isend(root, &c->up_len, sizeof(uint64_t), c->tag, &c->reqs[0]), status,
                  out);
    DC_CHECK_GOTO(dc_ep_isend(root, c->up.data, c->up.len, c->tag, &c->reqs[1]), status, out);
    DC_CHECK_GOTO(dc_ep_irecv(root, &c->down_len, sizeof(uint64_t), c->tag, &c->reqs[2]), status,
                  out);
    c->preqs[0] = &c->reqs[0];
    c->preqs[1] = &c->reqs[1];
    c->preqs[2] = &c->reqs[2];
    DC_CHECK_GOTO(wait_reqs(c, c->preqs, 3), status, out);
    if (c->down_len > DC_WIRE_MSG_MAX) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "rank 0 announced a %llu-byte response list",
                              (unsigned long long)c->down_len);
        goto out;
    }
    DC_CHECK_GOTO(dc_wire_buf_reserve(&c->down, c->down_len), status, out);
    DC_CHECK_GOTO(dc_ep_irecv(root, c->down.data, c->down_len, c->tag, &c->reqs[0]), status, out);
    c->preqs[0] = &c->reqs[0];
    DC_CHECK_GOTO(wait_reqs(c, c->preqs, 1), status, out);
    c->down.len = c->down_len;
out:
    return status;
}

/* ---- execution --------------------------------------------------------------- */

_Static_assert((int)DC_SELECT_ALLREDUCE == (int)DC_COLL_ALLREDUCE &&
                   (int)DC_SELECT_BROADCAST == (int)DC_COLL_BROADCAST &&
                   (int)DC_SELECT_ALLGATHER == (int)DC_COLL_ALLGATHER &&
                   (int)DC_SELECT_ALLTOALL == (int)DC_COLL_ALLTOALL &&
                   (int)DC_SELECT_REDUCESCATTER == (int)DC_COLL_REDUCESCATTER &&
                   (int)DC_SELECT_BARRIER == (int)DC_COLL_BARRIER,
               "select.h and wire.h number the collectives alike");

/* Candidate algorithms for one collective, best first: the cost model of the
 * comm's slowest link (a peer on another host when the comm spans hosts),
 * after DCOMM_TUNE. Depends only on values equal on every member. */
static int dc_coord_candidates(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                               const dc_coll_args_t *args, const dc_coll_algo_t **out, int max)
{
    size_t esize = dc_reduce_dtype_size(args->dtype), bytes = 0;
    dc_link_class_t cls = DC_LINK_SELF;

    for (int i = 0; i < ctx->size; i++) {
        if (i != ctx->rank && (ctx->nhosts == 1 || ctx->host_of[i] != ctx->host_of[ctx->rank])) {
            int k = dc_link_class_from_name(dc_net_transport_name(ctx->net, ctx->ranks[i]));

            cls = k >= 0 ? (dc_link_class_t)k : DC_LINK_TCP;
            break;
        }
    }
    switch (coll) {
    case DC_COLL_ALLGATHER:
        for (int i = 0; i < ctx->size; i++) {
            bytes += args->counts[i] * esize;
        }
        break;
    case DC_COLL_ALLTOALL:
        /* What one rank sends differs per rank: use the mean, the same everywhere. */
        for (int i = 0; i < ctx->size; i++) {
            bytes += args->recv_counts[i] * esize;
        }
        break;
    case DC_COLL_BARRIER:
        break;
    default:
        bytes = args->count * esize;
        break;
    }
    return dc_select_candidates(c->sel, coll, bytes, ctx->size, ctx->nhosts, cls, out, max);
}

/* The algorithm for one collective: the candidates in order of preference,
 * the first that accepts the arguments runs; declines are logged. */
static const dc_coll_algo_t *pick_algo(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                                       const dc_coll_args_t *args, const char *name)
{
    const dc_coll_algo_t *cand[DC_SELECT_MAX_ROWS];
    int n = dc_coord_candidates(c, coll, ctx, args, cand, DC_SELECT_MAX_ROWS);

    for (int i = 0; i < n; i++) {
        if (cand[i]->supported(ctx, args)) {
            DC_DEBUG("%s '%s': %s, %zu elements, %d ranks", dc_coll_name(coll), name,
                     cand[i]->name, args->count, ctx->size);
            return cand[i];
        }
        DC_DEBUG("%s '%s': algorithm '%s' declined, trying the next", dc_coll_name(coll), name,
                 cand[i]->name);
    }
    dc_error_set(DCOMM_ERR_INTERNAL, "no %s algorithm accepts tensor '%s'", dc_coll_name(coll),
                 name);
    return NULL;
}

static dc_status_t run_algo(coord_t *c, int coll, const dc_coll_ctx_t *ctx,
                            const dc_coll_args_t *args, const char *name)
{
    const dc_coll_algo_t *algo = pick_algo(c, coll, ctx, args, name);

    return algo != NULL ? algo->run(ctx, args) : DCOMM_ERR_INTERNAL;
}

/* Output buffer owned by the handle; at least one byte so that a result of
 * zero elements still has a valid pointer. */
static dc_status_t alloc_result(size_t count, size_t esize, int size, void **result_p,
                                size_t **counts_p)
{
    *result_p = malloc(count * esize > 0 ? count * esize : 1);
    *counts_p = calloc((size_t)size, sizeof(size_t));
    if (*result_p == NULL || *counts_p == NULL) {
        free(*result_p);
        free(*counts_p);
        *result_p = NULL;
        *counts_p = NULL;
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a %zu-element result",
                            count);
    }
    return DCOMM_OK;
}

/* Runs one agreed operation of this rank; completes its handle on success. */
static dc_status_t execute(coord_t *c, dc_op_t *op, const dc_comm_t *cm)
{
    dc_coll_ctx_t ctx = c->ctx;
    size_t esize = dc_reduce_dtype_size(op->req.dtype), total = 0, off, len;
    dc_coll_args_t args = {
        .sendbuf = op->sendbuf,
        .recvbuf = op->recvbuf,
        .count = op->req.count,
        .dtype = op->req.dtype,
        .op = op->req.op,
        .root = op->req.root,
    };
    void *result = NULL;
    size_t *counts = NULL;
    dc_status_t status;
    int coll = op->req.coll;

    ctx.tag = c->tag;
    ctx.rank = cm->rank;
    ctx.size = cm->size;
    ctx.ranks = cm->ranks;
    ctx.host_of = cm->host_of;
    ctx.nhosts = cm->nhosts;
    if (op->req.comm != DCOMM_COMM_WORLD) {
        ctx.shm_group = NULL; /* the shared segment spans COMM_WORLD */
    }
    switch (coll) {
    case DC_COLL_ALLREDUCE:
    case DC_COLL_BROADCAST:
    case DC_COLL_BARRIER:
        status = run_algo(c, coll, &ctx, &args, op->req.name);
        break;
    case DC_COLL_ALLGATHER:
        if (c->resp.ncounts != (uint32_t)cm->size) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "allgather '%s': %u counts for %d ranks",
                                op->req.name, c->resp.ncounts, cm->size);
        }
        for (int i = 0; i < cm->size; i++) {
            total += c->resp.counts[i];
        }
        DC_CHECK_GOTO(alloc_result(total, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            counts[i] = c->resp.counts[i];
        }
        args.count = counts[cm->rank];
        args.counts = counts;
        args.recvbuf = result;
        status = run_algo(c, coll, &ctx, &args, op->req.name);
        break;
    case DC_COLL_REDUCESCATTER:
        DC_CHECK_GOTO(alloc_result(0, esize, cm->size, &result, &counts), status, out);
        for (int i = 0; i < cm->size; i++) {
            dc_ring_segment(op->req.count, cm->size, i, &off, &len);
            counts[i] = len;
        }
        total = counts[cm->rank];
        free(result);
        result = malloc(total * esize > 0 ? total * esize : 1);
        if (result == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a result");
            goto out;
        }
        args.recvbuf = result;
        status = run_algo(c, coll, &ctx, &args, op->req.name);
        break;
    case DC_COLL_ALLTOALL: {
        size_t *recv = calloc((size_t)cm->size, sizeof(size_t));

        if (recv == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
            goto out;
        }
        status = dc_alltoall_counts(&ctx, op->counts, recv);
        for (int i = 0; status == DCOMM_OK && i < cm->size; i++) {
            total += recv[i];
        }
        if (status == DCOMM_OK) {
            status = alloc_result(total, esize, cm->size, &result, &counts);
        }
        if (status == DCOMM_OK) {
            memcpy(counts, recv, (size_t)cm->size * sizeof(size_t));
            args.counts = op->counts;
            args.recv_counts = counts;
            args.recvbuf = result;
            status = run_algo(c, coll, &ctx, &args, op->req.name);
        }
        free(recv);
        break;
    }
    case DC_COLL_COMM_CREATE:
    case DC_COLL_COMM_DESTROY:
        status = DCOMM_OK; /* agreement was the point; the caller updates its table */
        break;
    default:
        status = dc_error_set(DCOMM_ERR_INTERNAL, "no algorithm for %s", dc_coll_name(coll));
        break;
    }
out:
    if (status < 0) {
        free(result);
        free(counts);
        return status;
    }
    if (counts != NULL) {
        dc_handle_complete_result(c->st, op->handle, result, total, counts);
    } else {
        dc_handle_complete(c->st, op->handle, DCOMM_OK, NULL);
    }
    return DCOMM_OK;
}

/* Runs the response list in c->down; returns the list's flags. */
static dc_status_t run_responses(coord_t *c, uint32_t *flags_p)
{
    dc_wire_reader_t rd;
    uint32_t n;
    dc_status_t status = dc_wire_resps_begin(&rd, c->down.data, c->down.len, flags_p, &n);

    if (status < 0) {
        return dc_error_set(status, "from rank 0: %s", dc_error_get());
    }
    for (uint32_t i = 0; i < n; i++) {
        char key[DC_WIRE_NAME_MAX + 16];
        const dc_comm_t *cm;
        dc_op_t *op;

        DC_CHECK_GOTO(dc_wire_resp_next(&rd, &c->resp), status, out);
        cm = coord_comm(c, c->resp.req.comm);
        if (cm == NULL) {
            status = dc_error_set(DCOMM_ERR_INTERNAL, "rank 0 answered tensor '%s' on comm %d, "
                                  "unknown here", c->resp.req.name, c->resp.req.comm);
            goto out;
        }
        if (cm->rank < 0) {
            c->tag++; /* every rank counts every response, members or not */
            continue;
        }
        dc_op_key(key, sizeof(key), c->resp.req.comm, c->resp.req.name);
        op = dc_map_remove(&c->local, key);
        if (op == NULL) {
            status = dc_error_set(DCOMM_ERR_INTERNAL,
                                  "rank 0 answered tensor '%s', which this rank never sent",
                                  c->resp.req.name);
            goto out;
        }
        if (c->resp.error != 0) {
            c->tag++;
            dc_handle_complete(c->st, op->handle, c->resp.error, c->resp.text);
            dc_op_free(op);
            continue;
        }
        status = execute(c, op, cm);
        c->tag++;
        if (status < 0) {
            /* A failed collective leaves the ranks out of step: fatal. */
            char text[1024];

            snprintf(text, sizeof(text), "%s '%s': %s", dc_coll_name(op->req.coll), op->req.name,
                     dc_error_get());
            dc_handle_complete(c->st, op->handle, status, text);
            dc_op_free(op);
            return dc_error_set(status, "%s", text);
        }
        dc_op_free(op);
    }
out:
    return status;
}

/* ---- idle ------------------------------------------------------------------- */

static int idle_stop(void *arg)
{
    coord_t *c = arg;

    if (atomic_load(&c->st->queue_nonempty) || atomic_load(&c->st->shutdown_requested)) {
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

static void *coord_main(void *arg)
{
    coord_t *c = arg;
    uint64_t cycle_ns = dc_config.cycle_time_us * 1000ull;
    uint32_t flags = 0;
    dc_status_t status;

    dc_log_set_rank(c->rank);
    for (;;) {
        uint64_t start = dc_now_ns();

        take_queue(c);
        status = c->rank == 0 ? negotiate_root(c) : negotiate_member(c);
        c->tag++;
        c->nnew = 0;
        if (status == DCOMM_OK) {
            status = run_responses(c, &flags);
        }
        if (status == DCOMM_OK && (flags & DC_WIRE_FLAG_SHUTDOWN)) {
            status = idle_drain(c);
            if (status == DCOMM_OK) {
                finish_shutdown(c, flags);
                break;
            }
        }
        if (status == DCOMM_OK && (flags & DC_WIRE_FLAG_IDLE)) {
            status = idle_wait(c);
            if (status == DCOMM_OK) {
                continue;
            }
        }
        if (status < 0) {
            coord_fatal(c, status, dc_error_get());
            break;
        }
        if (!atomic_load(&c->st->queue_nonempty) && cycle_ns > 0) {
            dc_net_sleep_until(c->net, start + cycle_ns);
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
    dc_map_foreach(&c->table, neg_free_cb, NULL);
    dc_map_free(&c->table);
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
    dc_shm_group_destroy(c->ctx.shm_group);
    dc_select_destroy(c->sel);
    if (c->ctx.scratch != NULL) {
        munmap(c->ctx.scratch, c->scratch_size);
    }
    free(c);
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
        c->resp_counts == NULL ||
        c->ctx.scratch == NULL) {
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
     * rank: calibration of the cost model, then the host's shared segment
     * for shm-direct allreduce (when every rank is on this host over shm). */
    if (dc_config.calibrate && st->size > 1) {
        status = dc_select_calibrate(c->sel, st->net, st->rank, st->size, c->tag++);
        if (status < 0) {
            coord_free(c);
            return status;
        }
    }
    if (st->size > 1 && st->cross_size == 1 &&
        strcmp(dc_net_transport_name(st->net, (st->rank + 1) % st->size), "shm") == 0 &&
        dc_shm_group_create(st->net, c->world_ranks, st->size, st->rank, 0,
                            (int)dc_config.timeout_ms, c->tag++, &c->ctx.shm_group) < 0) {
        DC_WARN("shm-direct allreduce disabled: %s", dc_error_get());
        c->ctx.shm_group = NULL;
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
