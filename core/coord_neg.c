/*
 * The slow path of negotiation: every rank sends the requests it has not sent
 * yet to rank 0, which records them in its table, answers with the responses
 * that every member of their comm has submitted (or an error response naming
 * the tensor, the field and the ranks when they disagree), and watches for
 * stalls. The response list becomes this cycle's work items on every rank.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "coord.h"
#include "log.h"
#include "dc_time.h"

/* Rank 0's record of one tensor being negotiated. */
typedef struct neg_entry {
    dc_wire_req_t *per_rank; /* [size], valid where have[r] */
    uint8_t *have;
    int nhave;
    int warned;
    uint64_t first_ns;
} neg_entry_t;

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

void dc_coord_neg_free(coord_t *c)
{
    dc_map_foreach(&c->table, neg_free_cb, NULL);
    dc_map_free(&c->table);
    for (int i = 0; i < DC_MAX_COMMS; i++) {
        free(c->joined[i]);
        c->joined[i] = NULL;
    }
}

/* The shape comes before the count: where both differ, it says more. */
enum { F_COLL, F_DTYPE, F_OP, F_SHAPE, F_COUNT, F_ROOT, F_DEVICE, F_NFIELDS };

/* Does field f matter for collective coll? Allgather and alltoall counts may
 * differ per rank; only reductions have an op; only broadcast a root; every
 * collective that moves data has buffers of one kind (host or device). */
static int field_checked(int f, int coll)
{
    switch (f) {
    case F_COLL: return 1;
    case F_DTYPE: return coll != DC_COLL_COMM_CREATE && coll != DC_COLL_COMM_DESTROY;
    case F_OP: return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_REDUCESCATTER;
    case F_COUNT:
        return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_BROADCAST ||
               coll == DC_COLL_REDUCESCATTER || coll == DC_COLL_COMM_CREATE;
    case F_ROOT: return coll == DC_COLL_BROADCAST;
    case F_SHAPE:
        return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_BROADCAST ||
               coll == DC_COLL_ALLGATHER || coll == DC_COLL_ALLTOALL ||
               coll == DC_COLL_REDUCESCATTER;
    default:
        return coll == DC_COLL_ALLREDUCE || coll == DC_COLL_BROADCAST ||
               coll == DC_COLL_ALLGATHER || coll == DC_COLL_ALLTOALL ||
               coll == DC_COLL_REDUCESCATTER;
    }
}

/* A rank without a buffer (nothing to send) agrees with either kind; a rank
 * that gave no shape agrees with any. */
static int field_ignored(const dc_wire_req_t *q, int f)
{
    return (f == F_DEVICE && q->device == DC_WIRE_NOBUF) ||
           (f == F_SHAPE && q->ndims == DC_WIRE_NDIMS_UNKNOWN);
}

/* FNV-1a over the dimensions that must agree (see dc_wire_same_shape). */
static int64_t shape_hash(const dc_wire_req_t *q)
{
    uint64_t h = 0xcbf29ce484222325ull ^ q->ndims;

    for (int i = dc_wire_shape_from(q->coll); i < DC_MIN(q->ndims, DC_WIRE_DIMS_MAX); i++) {
        h = (h ^ q->dims[i]) * 0x100000001b3ull;
    }
    return (int64_t)h;
}

static int64_t field_value(const dc_wire_req_t *q, int f)
{
    int64_t v[F_NFIELDS] = {q->coll, q->dtype, q->op, 0, (int64_t)q->count, q->root, q->device};

    return f == F_SHAPE ? shape_hash(q) : v[f];
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
    case F_ROOT: snprintf(buf, cap, "%d", q->root); break;
    case F_SHAPE: dc_wire_shape_text(q, buf, cap); break;
    default: snprintf(buf, cap, "%s memory", q->device == DC_WIRE_DEVICE ? "device" : "host");
    }
}

/* Describes how the members of cm that submitted the tensor differ in one
 * field; 0 when they agree. */
static int describe_mismatch(const dc_comm_t *cm, const neg_entry_t *e, char *text, size_t cap)
{
    static const char *const fields[] = {"collective", "dtype", "op", "shape", "count",
                                         "root", "device"};
    const dc_wire_req_t *ref = NULL;
    int field = -1;

    for (int i = 0; i < cm->size && ref == NULL; i++) {
        if (e->have[cm->ranks[i]]) {
            ref = &e->per_rank[cm->ranks[i]];
        }
    }
    for (int f = 0; ref != NULL && f < F_NFIELDS && field < 0; f++) {
        const dc_wire_req_t *fref = NULL;

        if (!field_checked(f, ref->coll)) {
            continue;
        }
        for (int i = 0; i < cm->size; i++) {
            const dc_wire_req_t *q = &e->per_rank[cm->ranks[i]];

            if (!e->have[cm->ranks[i]] || field_ignored(q, f)) {
                continue;
            }
            if (fref == NULL) {
                fref = q;
            } else if (field_value(q, f) != field_value(fref, f)) {
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
    int first = 1;

    for (int i = 0; i < cm->size && listed != NULL && len < cap; i++) {
        const dc_wire_req_t *q = &e->per_rank[cm->ranks[i]];
        char value[96], group[256];
        size_t glen = 0;
        int members = 0;

        if (listed[i] || !e->have[cm->ranks[i]] || field_ignored(q, field)) {
            continue;
        }
        field_text(q, field, value, sizeof(value));
        for (int j = i; j < cm->size && glen < sizeof(group); j++) {
            if (!listed[j] && e->have[cm->ranks[j]] &&
                !field_ignored(&e->per_rank[cm->ranks[j]], field) &&
                field_value(&e->per_rank[cm->ranks[j]], field) == field_value(q, field)) {
                listed[j] = 1;
                members++;
                glen += (size_t)snprintf(group + glen, sizeof(group) - glen, "%s%d",
                                         j == i ? "" : ",", cm->ranks[j]);
            }
        }
        len += (size_t)snprintf(text + len, cap - len, "%s %s %s", first ? "" : ";",
                                members > 1 ? "ranks" : "rank", group);
        first = 0;
        if (len < cap) {
            len += (size_t)snprintf(text + len, cap - len, " sent %s", value);
        }
    }
    free(listed);
    return 1;
}

/* Members that count as present: submitted, or joined (they take part with
 * zeros or nothing). */
static int neg_present(const coord_t *c, const dc_comm_t *cm, const neg_entry_t *e, int32_t comm)
{
    int n = 0;

    for (int i = 0; i < cm->size; i++) {
        int r = cm->ranks[i];

        n += e->have[r] || (c->joined[comm] != NULL && c->joined[comm][r]);
    }
    return n;
}

/* Appends the response of a tensor every member has submitted. */
static dc_status_t neg_emit(coord_t *c, const char *key, neg_entry_t *e, const dc_comm_t *cm)
{
    dc_wire_resp_t *resp = &c->resp;
    dc_status_t status;

    for (int i = 0; i < cm->size; i++) {
        if (e->have[cm->ranks[i]]) {
            resp->req = e->per_rank[cm->ranks[i]];
            break;
        }
    }
    memset(resp->text, 0, sizeof(resp->text));
    resp->error = 0;
    resp->ncounts = 0;
    /* The agreed kind: device when any member's buffers are (the others agree
     * or have no buffer). */
    for (int i = 0; i < cm->size && resp->req.device != DC_WIRE_DEVICE; i++) {
        int r = cm->ranks[i];

        resp->req.device = e->have[r] && e->per_rank[r].device == DC_WIRE_DEVICE
                               ? DC_WIRE_DEVICE : DC_WIRE_HOST;
    }
    if (describe_mismatch(cm, e, resp->text, sizeof(resp->text))) {
        resp->error = DCOMM_ERR_MISMATCH;
    } else if (resp->req.coll == DC_COLL_ALLGATHER) {
        resp->ncounts = (uint32_t)cm->size;
        for (int i = 0; i < cm->size; i++) {
            int r = cm->ranks[i];

            resp->counts[i] = e->have[r] ? e->per_rank[r].count : 0; /* joined: nothing */
        }
    }
    status = dc_wire_resp_append(&c->down, resp);
    dc_map_remove(&c->table, key);
    neg_free(e);
    c->nresps++;
    return status;
}

/* A rank joined comm: once every member has, the join completes everywhere
 * with the last rank to join as its result. */
static dc_status_t neg_join(coord_t *c, int r, const dc_wire_req_t *req, const dc_comm_t *cm)
{
    int32_t comm = req->comm;

    if (c->joined[comm] == NULL) {
        c->joined[comm] = calloc((size_t)c->size, 1);
        if (c->joined[comm] == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for join");
        }
    }
    if (c->joined[comm][r]) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d joined comm %d twice", r, comm);
    }
    c->joined[comm][r] = 1;
    c->join_last[comm] = r;
    if (++c->njoined[comm] < cm->size) {
        return DCOMM_OK;
    }
    memset(&c->resp.text, 0, sizeof(c->resp.text));
    c->resp.req = *req;
    c->resp.req.root = c->join_last[comm];
    c->resp.error = 0;
    c->resp.ncounts = 0;
    memset(c->joined[comm], 0, (size_t)c->size);
    c->njoined[comm] = 0;
    c->nresps++;
    return dc_wire_resp_append(&c->down, &c->resp);
}

/* Rank 0 takes one request of rank r; appends a response when every member
 * of the request's comm has sent it. */
static dc_status_t neg_add(coord_t *c, int r, const dc_wire_req_t *req)
{
    char key[DC_WIRE_NAME_MAX + 16];
    const dc_comm_t *cm = dc_coord_comm(c, req->comm);
    neg_entry_t *e;

    if (cm == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d sent tensor '%s' on unknown comm %d",
                            r, req->name, req->comm);
    }
    if (dc_coord_comm_rank_of(cm, r) < 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL,
                            "rank %d sent tensor '%s' on comm %d, which it is not a member of",
                            r, req->name, req->comm);
    }
    if (c->tl != NULL) {
        char what[32];

        snprintf(what, sizeof(what), "rank %d ready", r);
        dc_timeline_tick(c->tl, req->name, what, dc_now_ns(), NULL);
    }
    if (req->coll == DC_COLL_JOIN) {
        return neg_join(c, r, req, cm);
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
    e->nhave++;
    if (neg_present(c, cm, e, req->comm) < cm->size) {
        return DCOMM_OK;
    }
    return neg_emit(c, key, e, cm);
}

typedef struct ready_scan {
    coord_t *c;
    char (*keys)[DC_WIRE_NAME_MAX + 16];
    size_t n, cap;
} ready_scan_t;

static void scan_one(const char *key, void *value, void *arg)
{
    ready_scan_t *rs = arg;
    neg_entry_t *e = value;
    const dc_comm_t *cm;
    int32_t comm = -1;

    for (int r = 0; r < rs->c->size; r++) {
        if (e->have[r]) {
            comm = e->per_rank[r].comm;
            break;
        }
    }
    cm = comm >= 0 ? dc_coord_comm(rs->c, comm) : NULL;
    if (cm != NULL && rs->c->njoined[comm] > 0 && neg_present(rs->c, cm, e, comm) == cm->size &&
        rs->n < rs->cap) {
        snprintf(rs->keys[rs->n++], sizeof(rs->keys[0]), "%s", key);
    }
}

/* After joins: tensors that now have every member present. */
static dc_status_t neg_rescan(coord_t *c)
{
    ready_scan_t rs = {c, NULL, 0, c->table.count};
    dc_status_t status = DCOMM_OK;
    int any = 0;

    for (int i = 0; i < DC_MAX_COMMS; i++) {
        any |= c->njoined[i] > 0;
    }
    if (!any || rs.cap == 0) {
        return DCOMM_OK;
    }
    rs.keys = malloc(rs.cap * sizeof(*rs.keys));
    if (rs.keys == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory in negotiation");
    }
    dc_map_foreach(&c->table, scan_one, &rs);
    for (size_t i = 0; i < rs.n && status == DCOMM_OK; i++) {
        neg_entry_t *e = dc_map_get(&c->table, rs.keys[i]);
        const dc_comm_t *cm = NULL;

        for (int r = 0; e != NULL && r < c->size && cm == NULL; r++) {
            if (e->have[r]) {
                cm = dc_coord_comm(c, e->per_rank[r].comm);
            }
        }
        if (e != NULL && cm != NULL) {
            status = neg_emit(c, rs.keys[i], e, cm);
        }
    }
    free(rs.keys);
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
    DC_CHECK_GOTO(neg_rescan(c), status, out);
    if (c->stall_fatal[0] != '\0') {
        /* DCOMM_STALL_SHUTDOWN: the list becomes one fatal error for every rank. */
        DC_CHECK_GOTO(dc_wire_resps_begin_encode(&c->down, 0), status, out);
        memset(&c->resp, 0, offsetof(dc_wire_resp_t, ncounts));
        c->resp.ncounts = 0;
        snprintf(c->resp.req.name, sizeof(c->resp.req.name), "stall");
        c->resp.error = DCOMM_ERR_TIMEOUT;
        snprintf(c->resp.text, sizeof(c->resp.text), "%s", c->stall_fatal);
        DC_CHECK_GOTO(dc_wire_resp_append(&c->down, &c->resp), status, out);
        flags |= DC_WIRE_FLAG_FATAL;
    } else if (c->shutdown_rank >= 0) {
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

/* Turns the response list in c->down into this cycle's work items. */
static dc_status_t take_responses(coord_t *c, uint32_t *flags_p)
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
        dc_op_t *op = NULL;

        DC_CHECK_GOTO(dc_wire_resp_next(&rd, &c->resp), status, out);
        if (i == 0 && (*flags_p & DC_WIRE_FLAG_FATAL)) {
            return dc_error_set(c->resp.error < 0 ? c->resp.error : DCOMM_ERR_TIMEOUT, "%s",
                                c->resp.text);
        }
        cm = dc_coord_comm(c, c->resp.req.comm);
        if (cm == NULL) {
            status = dc_error_set(DCOMM_ERR_INTERNAL, "rank 0 answered tensor '%s' on comm %d, "
                                  "unknown here", c->resp.req.name, c->resp.req.comm);
            goto out;
        }
        if (cm->rank >= 0) {
            dc_op_key(key, sizeof(key), c->resp.req.comm, c->resp.req.name);
            op = dc_map_remove(&c->local, key);
            if (op == NULL && (c->resp.req.coll == DC_COLL_JOIN ||
                               !c->local_joined[c->resp.req.comm])) {
                status = dc_error_set(DCOMM_ERR_INTERNAL,
                                      "rank 0 answered tensor '%s', which this rank never sent",
                                      c->resp.req.name);
                goto out;
            }
        }
        DC_CHECK_GOTO(dc_coord_add_item(c, &c->resp.req, op, c->resp.error, c->resp.text,
                                        c->resp.counts, c->resp.ncounts, -1), status, out);
    }
out:
    return status;
}

dc_status_t dc_coord_negotiate(coord_t *c, uint32_t *flags_p)
{
    uint64_t t0 = dc_now_ns();
    dc_status_t status = c->rank == 0 ? negotiate_root(c) : negotiate_member(c);

    c->tag++;
    c->nnew = 0;
    c->stats.slow_rounds++;
    if (!c->shutdown_flag) { /* a shutdown always ends with a slow round */
        c->stats.last_slow_cycle = c->stats.cycles;
    }
    c->stats.negotiate_ns += dc_now_ns() - t0;
    if (status == DCOMM_OK) {
        status = take_responses(c, flags_p);
    }
    return status;
}

/* ---- stall inspector (rank 0) --------------------------------------------------- */

typedef struct stall_scan {
    coord_t *c;
    uint64_t now;
    char *text;
    size_t len, cap;
    int nstalled;
    char fatal[DC_WIRE_ERROR_MAX];
} stall_scan_t;

static void stall_one(const char *key, void *value, void *arg)
{
    stall_scan_t *ss = arg;
    neg_entry_t *e = value;
    coord_t *c = ss->c;
    uint64_t age_ms = (ss->now - e->first_ns) / 1000000;
    const dc_wire_req_t *req = NULL;
    const dc_comm_t *cm;
    char missing[256], sent[256];
    size_t ml = 0, sl = 0;

    (void)key;
    if (age_ms < dc_config.stall_warning_ms && (dc_config.stall_shutdown_ms == 0 ||
                                                age_ms < dc_config.stall_shutdown_ms)) {
        return;
    }
    for (int r = 0; r < c->size && req == NULL; r++) {
        if (e->have[r]) {
            req = &e->per_rank[r];
        }
    }
    cm = req != NULL ? dc_coord_comm(c, req->comm) : NULL;
    if (cm == NULL) {
        return;
    }
    missing[0] = sent[0] = '\0';
    for (int i = 0; i < cm->size; i++) {
        int r = cm->ranks[i];

        if (e->have[r]) {
            sl += (size_t)snprintf(sent + sl, sl < sizeof(sent) ? sizeof(sent) - sl : 0, "%s%d",
                                   sl ? "," : "", r);
        } else if (c->joined[req->comm] == NULL || !c->joined[req->comm][r]) {
            ml += (size_t)snprintf(missing + ml, ml < sizeof(missing) ? sizeof(missing) - ml : 0,
                                   "%s%d", ml ? "," : "", r);
        }
    }
    if (dc_config.stall_shutdown_ms > 0 && age_ms >= dc_config.stall_shutdown_ms &&
        ss->fatal[0] == '\0') {
        snprintf(ss->fatal, sizeof(ss->fatal),
                 "stall: %s '%s' waited %.1f s for rank%s %s, which never submitted it "
                 "(submitted by %s; DCOMM_STALL_SHUTDOWN=%llums)",
                 dc_coll_name(req->coll), req->name, (double)age_ms / 1e3,
                 strchr(missing, ',') ? "s" : "", missing, sent,
                 (unsigned long long)dc_config.stall_shutdown_ms);
    }
    if (!e->warned && age_ms >= dc_config.stall_warning_ms && ss->len < ss->cap) {
        e->warned = 1;
        ss->nstalled++;
        ss->len += (size_t)snprintf(ss->text + ss->len, ss->cap - ss->len,
                                    "%s'%s' waits for rank%s %s (submitted by %s)",
                                    ss->nstalled > 1 ? "; " : "", req->name,
                                    strchr(missing, ',') ? "s" : "", missing, sent);
    }
}

void dc_coord_stall_check(coord_t *c)
{
    char text[2048];
    stall_scan_t ss = {c, dc_now_ns(), text, 0, sizeof(text), 0, {0}};

    if (c->rank != 0 || c->table.count == 0 || ss.now < c->next_stall_check_ns) {
        return;
    }
    c->next_stall_check_ns = ss.now + 100000000ull; /* every 100 ms at most */
    text[0] = '\0';
    dc_map_foreach(&c->table, stall_one, &ss);
    if (ss.nstalled > 0) {
        DC_WARN("stall: %d tensor%s waited more than %.1f s on some ranks: %s", ss.nstalled,
                ss.nstalled > 1 ? "s have" : " has", (double)dc_config.stall_warning_ms / 1e3,
                text);
    }
    if (ss.fatal[0] != '\0' && c->stall_fatal[0] == '\0') {
        snprintf(c->stall_fatal, sizeof(c->stall_fatal), "%s", ss.fatal);
    }
}
