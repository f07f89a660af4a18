/*
 * The slow path of negotiation: every rank sends the requests it has not sent
 * yet to rank 0, which records them in its table, answers with the responses
 * that every member of their comm has submitted (or an error response naming
 * the tensor, the field and the ranks when they disagree), and watches for
 * stalls. The response list becomes this cycle's work items on every rank.
 */
#include <stdarg.h>
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
    for (int r = 0; c->dl_recs != NULL && r < c->size; r++) {
        free(c->dl_recs[r].reqs);
        free(c->dl_recs[r].waited);
    }
    free(c->dl_recs);
    free(c->dl_dead);
    free(c->dl_reqs);
    free(c->dl_waited);
    c->dl_recs = NULL;
    c->dl_dead = NULL;
    c->dl_reqs = NULL;
    c->dl_waited = NULL;
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
           (f == F_SHAPE && !q->has_shape);
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

/* As Horovod: while some members of comm have joined, only allreduce (they
 * add zeros) and barrier run; the other collectives would need data the
 * joined ranks no longer have. Such a request fails as soon as it arrives
 * (the ranks still running need not agree on its name: their unnamed
 * counters differ by the calls the joined ranks skipped). */
static int joined_refuses(const coord_t *c, int coll, int32_t comm)
{
    return c->njoined[comm] > 0 &&
           (coll == DC_COLL_ALLGATHER || coll == DC_COLL_ALLTOALL ||
            coll == DC_COLL_BROADCAST || coll == DC_COLL_REDUCESCATTER);
}

/* Says which ranks joined; 0 when the collective may run. */
static int describe_joined(const coord_t *c, const dc_comm_t *cm, const dc_wire_req_t *req,
                           char *text, size_t cap)
{
    size_t len;
    int n = 0;

    if (!joined_refuses(c, req->coll, req->comm)) {
        return 0;
    }
    len = (size_t)snprintf(text, cap, "%s of tensor '%s' is not supported while ranks have "
                           "joined (only allreduce is, as in Horovod); joined:",
                           dc_coll_name(req->coll), req->name);
    for (int i = 0; i < cm->size; i++) {
        if (c->joined[req->comm][cm->ranks[i]]) {
            n++;
            if (len < cap) {
                len += (size_t)snprintf(text + len, cap - len, " %d", cm->ranks[i]);
            }
        }
    }
    return n > 0;
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
    } else if (describe_joined(c, cm, &resp->req, resp->text, sizeof(resp->text))) {
        resp->error = DCOMM_ERR_UNSUPPORTED;
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
    if (neg_present(c, cm, e, req->comm) < cm->size && !joined_refuses(c, req->coll, req->comm)) {
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
    const dc_wire_req_t *req = NULL; /* a submitter's request: the comm and collective */
    const dc_comm_t *cm;

    for (int r = 0; r < rs->c->size && req == NULL; r++) {
        if (e->have[r]) {
            req = &e->per_rank[r];
        }
    }
    cm = req != NULL ? dc_coord_comm(rs->c, req->comm) : NULL;
    if (cm != NULL && rs->c->njoined[req->comm] > 0 &&
        (neg_present(rs->c, cm, e, req->comm) == cm->size ||
         joined_refuses(rs->c, req->coll, req->comm)) &&
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

static dc_status_t dl_take(coord_t *c, int r, dc_wire_reader_t *rd);

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
    /* The rank's wait report replaces the last one; none: it is not blocked. */
    if (c->dl_recs != NULL) {
        c->dl_recs[r].valid = 0;
    }
    if (flags & DC_WIRE_FLAG_WAITING) {
        return dl_take(c, r, &rd);
    }
    return DCOMM_OK;
}

static dc_status_t dl_fail(coord_t *c, uint32_t *flags_p);
static dc_status_t encode_up(coord_t *c);

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
    DC_CHECK_GOTO(encode_up(c), status, out);
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
    /* A deadlock rank 0 saw: fail it when it still holds with every rank's
     * report of this round, and nothing else happens in this cycle (fast-path
     * work already agreed is in c->items). */
    if (c->dl_due) {
        c->dl_due = 0;
        if (c->nresps == 0 && c->nitems == 0 && c->stall_fatal[0] == '\0' &&
            c->shutdown_rank < 0) {
            DC_CHECK_GOTO(dl_fail(c, &flags), status, out);
        }
    }
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

    DC_CHECK_GOTO(encode_up(c), status, out);
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

/* A deadlock's failed tensor may wait on a cache bit here (fast path): the
 * bit forgets it. A failed join ends this rank's join. */
static void dl_unbit(coord_t *c, dc_op_t *op)
{
    if (op == NULL || c->resp.error >= 0) {
        return;
    }
    for (int b = 0; b < c->cache.capacity; b++) {
        if (c->by_bit[b] == op) {
            c->by_bit[b] = NULL;
        }
    }
    if (op->req.coll == DC_COLL_JOIN) {
        c->local_joined[op->req.comm] = 0;
    }
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
        c->dl_touched[c->resp.req.comm] = 1;
        c->dl_any_touched = 1;
        if (cm->rank >= 0) {
            dc_op_key(key, sizeof(key), c->resp.req.comm, c->resp.req.name);
            op = dc_map_remove(&c->local, key);
            if ((*flags_p & DC_WIRE_FLAG_DEADLOCK) && op != NULL) {
                dl_unbit(c, op);
            }
            /* A failed tensor this rank never submitted (a deadlock's, or one
             * refused while ranks have joined) is still an item here: every
             * rank runs the same items, so their tags stay in step. */
            if (op == NULL &&
                (c->resp.req.coll == DC_COLL_JOIN || !c->local_joined[c->resp.req.comm]) &&
                !(c->resp.error < 0 && ((*flags_p & DC_WIRE_FLAG_DEADLOCK) ||
                                        c->resp.error == DCOMM_ERR_UNSUPPORTED))) {
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

/* ---- deadlock detection ------------------------------------------------------ */

/* A user thread of a rank blocked in dcomm_wait (or a blocking call) cannot
 * submit anything until that wait returns. When every rank among some set is
 * so blocked, and each tensor any of them waits on misses a rank of that set,
 * nothing can ever complete: rank 0 fails their waits with
 * DCOMM_ERR_MISMATCH naming each rank's wait (Horovod only warns, after 60 s).
 *
 * Each rank reports in the slow rounds while a wait of its own has stood
 * unchanged a while (a debounce, so waits that end soon cost nothing): every
 * tensor it has submitted and not executed (cached ones too, which rank 0's
 * table does not see), the waited ones marked, and how long that has held. A
 * report holds until the rank's next slow list, or until work on a comm of
 * the rank is agreed (the same on every rank, so rank 0 and the rank drop it
 * together). A rank that is computing, or whose other thread submits, is not
 * blocked (or its report changes), so it keeps the waits on it alive.
 *
 * Assumes that a rank whose thread waits submits nothing else meanwhile for
 * longer than DCOMM_DEADLOCK_TIMEOUT (a second thread submitting keeps the
 * state changing). */

static int dl_find(coord_t *c, uint64_t now);

static uint64_t dl_grace_ns(void)
{
    return dc_config.deadlock_timeout_ms * 1000000ull;
}

/* How long a wait stands before the rank reports it. */
static uint64_t dl_debounce_ns(void)
{
    return DC_MIN(dl_grace_ns() / 4, 500000000ull);
}

/* This rank's wait state (its waits, its pending tensors) unchanged since. */
static uint64_t dl_since(coord_t *c)
{
    uint64_t w = atomic_load(&c->st->wait_change_ns);

    return DC_MAX(w, c->dl_local_ns);
}

static int dl_want(coord_t *c, uint64_t now)
{
    return dc_config.deadlock_timeout_ms > 0 && c->size > 1 &&
           atomic_load(&c->st->nwaiters) > 0 && now >= dl_since(c) + dl_debounce_ns();
}

int dc_coord_dl_report_due(coord_t *c, uint64_t now)
{
    return dl_want(c, now) != c->dl_sent;
}

int dc_coord_dl_idle_stop(coord_t *c, uint64_t now)
{
    if (dc_coord_dl_report_due(c, now)) {
        return 1;
    }
    /* Rank 0 looks at the reports now and then; it wakes the others only
     * to fail a deadlock. */
    if (c->rank == 0 && dc_config.deadlock_timeout_ms > 0 && !c->dl_due &&
        now > c->idle_deadline_ns) {
        c->idle_deadline_ns = now + 100000000ull;
        if (dl_find(c, now) > 0) {
            c->dl_due = 1;
            return 1;
        }
    }
    return 0;
}

static void dl_collect_one(const char *key, void *value, void *arg)
{
    coord_t *c = arg;
    dc_op_t *op = value;
    const dc_handle_slot_t *slot;

    (void)key;
    if (c->dl_n < c->dl_cap) {
        slot = dc_handle_lookup(c->st, op->handle);
        c->dl_reqs[c->dl_n] = &op->req;
        c->dl_waited[c->dl_n] = slot != NULL && slot->waiters > 0;
        c->dl_n++;
    }
}

/* This rank's request list for rank 0, with its wait report when it is due. */
static dc_status_t encode_up(coord_t *c)
{
    uint64_t now = dc_now_ns(), since;
    uint32_t flags = c->shutdown_flag ? DC_WIRE_FLAG_SHUTDOWN : 0;
    size_t nwaited = 0;
    dc_status_t status;

    c->dl_n = 0;
    if (dl_want(c, now) && c->local.count > DC_WIRE_WAITS_MAX) {
        c->dl_local_ns = now; /* too many to list: not reported (no detection) */
    } else if (dl_want(c, now)) {
        if (c->local.count > c->dl_cap) {
            size_t cap = DC_MAX(c->local.count, 2 * c->dl_cap);
            const dc_wire_req_t **reqs = realloc(c->dl_reqs, cap * sizeof(*reqs));
            uint8_t *waited;

            if (reqs == NULL) {
                return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a wait report");
            }
            c->dl_reqs = reqs;
            waited = realloc(c->dl_waited, cap);
            if (waited == NULL) {
                return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a wait report");
            }
            c->dl_waited = waited;
            c->dl_cap = cap;
        }
        pthread_mutex_lock(&c->st->lock);
        dc_map_foreach(&c->local, dl_collect_one, c);
        pthread_mutex_unlock(&c->st->lock);
        for (size_t i = 0; i < c->dl_n; i++) {
            nwaited += c->dl_waited[i];
        }
        if (nwaited == 0) {
            /* The waited handle is not ours yet (queued) or done: look again
             * after another debounce, not every cycle. */
            c->dl_local_ns = now;
        }
    }
    c->dl_sent = nwaited > 0;
    if (nwaited > 0) {
        flags |= DC_WIRE_FLAG_WAITING;
    }
    status = dc_wire_reqs_encode(&c->up, flags, c->new_reqs, (uint32_t)c->nnew);
    if (status == DCOMM_OK && nwaited > 0) {
        uint64_t age_ms;

        since = dl_since(c);
        age_ms = since < now ? (now - since) / 1000000 : 0;
        status = dc_wire_waits_encode(&c->up, (uint32_t)DC_MIN(age_ms, UINT32_MAX), c->dl_reqs,
                                      c->dl_waited, (uint32_t)c->dl_n);
    }
    return status;
}

/* Rank 0 takes rank r's wait report. */
static dc_status_t dl_take(coord_t *c, int r, dc_wire_reader_t *rd)
{
    uint64_t now = dc_now_ns(), age_ns;
    uint32_t age_ms, n;
    dl_rec_t *rec;
    dc_status_t status;

    if (c->dl_recs == NULL) {
        c->dl_recs = calloc((size_t)c->size, sizeof(*c->dl_recs));
        c->dl_dead = calloc((size_t)c->size, 1);
        if (c->dl_recs == NULL || c->dl_dead == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for wait reports");
        }
    }
    rec = &c->dl_recs[r];
    rec->valid = 0;
    status = dc_wire_waits_begin(rd, &age_ms, &n);
    if (status < 0) {
        return dc_error_set(status, "from rank %d: %s", r, dc_error_get());
    }
    if (n > rec->cap) { /* n <= DC_WIRE_WAITS_MAX, checked by the decoder */
        dc_wire_req_t *reqs = realloc(rec->reqs, n * sizeof(*reqs));
        uint8_t *waited;

        if (reqs == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for wait reports");
        }
        rec->reqs = reqs;
        waited = realloc(rec->waited, n);
        if (waited == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for wait reports");
        }
        rec->waited = waited;
        rec->cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        const dc_comm_t *cm;

        status = dc_wire_wait_next(rd, &rec->reqs[i], &rec->waited[i]);
        if (status < 0) {
            return dc_error_set(status, "from rank %d: %s", r, dc_error_get());
        }
        cm = dc_coord_comm(c, rec->reqs[i].comm);
        if (cm == NULL || dc_coord_comm_rank_of(cm, r) < 0) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "rank %d reported tensor '%s' on comm %d, "
                                "which it is not a member of", r, rec->reqs[i].name,
                                rec->reqs[i].comm);
        }
    }
    rec->n = n;
    age_ns = (uint64_t)age_ms * 1000000ull;
    rec->since_ns = age_ns < now ? now - age_ns : 0;
    rec->valid = 1;
    return DCOMM_OK;
}

/* Has member m of t's comm submitted t (or joined the comm), as far as rank
 * 0 knows? Exact for a rank with a report (its whole pending set). */
static int dl_present(coord_t *c, int m, const dc_wire_req_t *t)
{
    char key[DC_WIRE_NAME_MAX + 16];
    const neg_entry_t *e;
    const dl_rec_t *rec = &c->dl_recs[m];

    if (c->joined[t->comm] != NULL && c->joined[t->comm][m]) {
        return 1;
    }
    dc_op_key(key, sizeof(key), t->comm, t->name);
    e = dc_map_get(&c->table, key);
    if (e != NULL && e->have[m]) {
        return 1;
    }
    for (uint32_t i = 0; rec->valid && i < rec->n; i++) {
        if (rec->reqs[i].comm == t->comm && strcmp(rec->reqs[i].name, t->name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Can t still complete when the ranks in dead never submit anything more? */
static int dl_possible(coord_t *c, const dc_wire_req_t *t)
{
    const dc_comm_t *cm = dc_coord_comm(c, t->comm);

    for (int i = 0; cm != NULL && i < cm->size; i++) {
        int m = cm->ranks[i];

        if (c->dl_dead[m] && !dl_present(c, m, t)) {
            return 0;
        }
    }
    return 1;
}

/* The deadlocked ranks into c->dl_dead: the largest set of blocked ranks each
 * of whose waited tensors misses a rank of the set. Returns its size, or 0
 * when it is empty or some member's state is younger than the grace time. */
static int dl_find(coord_t *c, uint64_t now)
{
    int changed = 1, n = 0;

    if (c->dl_recs == NULL) {
        return 0;
    }
    for (int r = 0; r < c->size; r++) {
        const dl_rec_t *rec = &c->dl_recs[r];

        c->dl_dead[r] = 0;
        for (uint32_t i = 0; rec->valid && i < rec->n; i++) {
            c->dl_dead[r] |= rec->waited[i];
        }
    }
    while (changed) {
        changed = 0;
        for (int r = 0; r < c->size; r++) {
            const dl_rec_t *rec = &c->dl_recs[r];

            for (uint32_t i = 0; c->dl_dead[r] && i < rec->n; i++) {
                if (rec->waited[i] && dl_possible(c, &rec->reqs[i])) {
                    c->dl_dead[r] = 0; /* that wait may end: the rank may go on */
                    changed = 1;
                }
            }
        }
    }
    for (int r = 0; r < c->size; r++) {
        if (c->dl_dead[r]) {
            if (now - c->dl_recs[r].since_ns < dl_grace_ns()) {
                return 0;
            }
            n++;
        }
    }
    return n;
}

void dc_coord_dl_check(coord_t *c)
{
    uint64_t now = dc_now_ns();

    if (c->rank != 0 || dc_config.deadlock_timeout_ms == 0 || c->dl_due ||
        now < c->dl_next_check_ns) {
        return;
    }
    c->dl_next_check_ns = now + 100000000ull; /* every 100 ms at most */
    if (dl_find(c, now) > 0) {
        c->dl_due = 1; /* the next slow round checks again with fresh reports */
    }
}

static size_t dl_append(char *text, size_t len, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (len >= cap) {
        return len;
    }
    va_start(ap, fmt);
    n = vsnprintf(text + len, cap - len, fmt, ap);
    va_end(ap);
    return n < 0 ? len : DC_MIN(len + (size_t)n, cap);
}

/* The ranks that submitted t as far as rank 0 knows, as "a,b,c". */
static void dl_submitters(coord_t *c, const dc_wire_req_t *t, char *buf, size_t cap, int *n_p)
{
    const dc_comm_t *cm = dc_coord_comm(c, t->comm);
    size_t len = 0;

    buf[0] = '\0';
    *n_p = 0;
    for (int i = 0; cm != NULL && i < cm->size; i++) {
        if (dl_present(c, cm->ranks[i], t)) {
            len = dl_append(buf, len, cap, "%s%d", *n_p ? "," : "", cm->ranks[i]);
            (*n_p)++;
        }
    }
}

static void dl_describe(coord_t *c, int ndead, char *text, size_t cap)
{
    size_t len = 0;
    int first = 1;

    if (ndead == c->size) {
        len = dl_append(text, len, cap, "deadlock: every rank is waiting");
    } else {
        len = dl_append(text, len, cap, "deadlock: rank%s ", ndead > 1 ? "s" : "");
        for (int r = 0; r < c->size; r++) {
            if (c->dl_dead[r]) {
                len = dl_append(text, len, cap, "%s%d", first ? "" : ",", r);
                first = 0;
            }
        }
        len = dl_append(text, len, cap, ndead > 1 ? " are all waiting" : " is waiting");
    }
    len = dl_append(text, len, cap, " and the tensors %s on can never all be submitted: ",
                    ndead > 1 ? "they wait" : "it waits");
    first = 1;
    for (int r = 0; r < c->size; r++) {
        const dl_rec_t *rec = &c->dl_recs[r];

        for (uint32_t i = 0; c->dl_dead[r] && i < rec->n; i++) {
            const dc_wire_req_t *t = &rec->reqs[i];
            char by[256], comm[32] = "";
            int nby;

            if (!rec->waited[i]) {
                continue;
            }
            dl_submitters(c, t, by, sizeof(by), &nby);
            if (t->comm != DCOMM_COMM_WORLD) {
                snprintf(comm, sizeof(comm), " on comm %d", t->comm);
            }
            len = dl_append(text, len, cap, "%srank %d waits on '%s' (%s%s, submitted by "
                            "rank%s %s)", first ? "" : ", ", r, t->name, dc_coll_name(t->coll),
                            comm, nby > 1 ? "s" : "", by);
            first = 0;
        }
    }
    len = dl_append(text, len, cap, " [no change for DCOMM_DEADLOCK_TIMEOUT=%.1fs]",
                    (double)dc_config.deadlock_timeout_ms / 1e3);
    if (len >= cap && cap > 4) {
        memcpy(text + cap - 4, "...", 4);
    }
}

/* Rank 0, in a slow round: when the deadlock holds with this round's reports,
 * every tensor a deadlocked rank waits on fails on the ranks that submitted
 * it, with one text naming every rank's waits. */
static dc_status_t dl_fail(coord_t *c, uint32_t *flags_p)
{
    int ndead = dl_find(c, dc_now_ns());
    dc_wire_resp_t *resp = &c->resp;
    dc_status_t status = DCOMM_OK;

    if (ndead == 0) {
        return DCOMM_OK;
    }
    memset(resp->text, 0, sizeof(resp->text));
    dl_describe(c, ndead, resp->text, sizeof(resp->text));
    DC_ERROR("%s", resp->text);
    for (int r = 0; r < c->size && status == DCOMM_OK; r++) {
        const dl_rec_t *rec = &c->dl_recs[r];

        for (uint32_t i = 0; c->dl_dead[r] && i < rec->n && status == DCOMM_OK; i++) {
            const dc_wire_req_t *t = &rec->reqs[i];
            char key[DC_WIRE_NAME_MAX + 16];
            int seen = 0;

            if (!rec->waited[i]) {
                continue;
            }
            /* Once per tensor, though several ranks wait on it. */
            for (int q = 0; q < r && !seen; q++) {
                for (uint32_t j = 0; c->dl_dead[q] && j < c->dl_recs[q].n && !seen; j++) {
                    seen = c->dl_recs[q].waited[j] && c->dl_recs[q].reqs[j].comm == t->comm &&
                           strcmp(c->dl_recs[q].reqs[j].name, t->name) == 0;
                }
            }
            for (uint32_t j = 0; j < i && !seen; j++) {
                seen = rec->waited[j] && rec->reqs[j].comm == t->comm &&
                       strcmp(rec->reqs[j].name, t->name) == 0;
            }
            if (seen) {
                continue;
            }
            resp->req = *t;
            resp->error = DCOMM_ERR_MISMATCH;
            resp->ncounts = 0;
            status = dc_wire_resp_append(&c->down, resp);
            c->nresps++;
            /* Its name is free again: a later submission starts afresh. */
            dc_op_key(key, sizeof(key), t->comm, t->name);
            neg_free(dc_map_remove(&c->table, key));
            if (t->coll == DC_COLL_JOIN && c->joined[t->comm] != NULL) {
                memset(c->joined[t->comm], 0, (size_t)c->size);
                c->njoined[t->comm] = 0;
            }
        }
    }
    *flags_p |= DC_WIRE_FLAG_DEADLOCK;
    return status;
}

void dc_coord_dl_cycle_end(coord_t *c)
{
    int mine = 0;

    if (!c->dl_any_touched) {
        return;
    }
    c->dl_any_touched = 0;
    for (int id = 0; id < DC_MAX_COMMS; id++) {
        const dc_comm_t *cm;

        if (!c->dl_touched[id]) {
            continue;
        }
        c->dl_touched[id] = 0;
        cm = dc_coord_comm(c, id);
        for (int i = 0; i < (cm != NULL ? cm->size : c->size); i++) {
            int m = cm != NULL ? cm->ranks[i] : i; /* a destroyed comm: everyone */

            if (c->dl_recs != NULL) {
                c->dl_recs[m].valid = 0;
            }
            mine |= m == c->rank;
        }
    }
    if (mine) {
        c->dl_sent = 0;
        c->dl_local_ns = dc_now_ns();
    }
}
