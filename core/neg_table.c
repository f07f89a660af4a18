/*
 * Rank 0's side of the slow path (coord_neg.h): the table of tensors being
 * negotiated, filled from every rank's request list; a tensor every member of
 * its comm has submitted becomes a response (or an error response naming the
 * tensor, the field and the ranks when they disagree); joins; and the stall
 * inspector, which warns about tensors that wait on some ranks.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "coord_neg.h"
#include "dc_time.h"
#include "log.h"

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

void dc_neg_table_free(dc_neg_t *ng)
{
    dc_map_foreach(&ng->table, neg_free_cb, NULL);
    dc_map_free(&ng->table);
    for (int i = 0; i < DC_MAX_COMMS; i++) {
        free(ng->joined[i]);
        ng->joined[i] = NULL;
    }
}

size_t dc_neg_table_count(const dc_neg_t *ng)
{
    return ng->table.count;
}

int dc_neg_table_has(dc_neg_t *ng, int m, const dc_wire_req_t *t)
{
    char key[DC_WIRE_NAME_MAX + 16];
    const neg_entry_t *e;

    if (ng->joined[t->comm] != NULL && ng->joined[t->comm][m]) {
        return 1;
    }
    dc_op_key(key, sizeof(key), t->comm, t->name);
    e = dc_map_get(&ng->table, key);
    return e != NULL && e->have[m];
}

void dc_neg_table_forget(dc_neg_t *ng, const dc_wire_req_t *t)
{
    char key[DC_WIRE_NAME_MAX + 16];

    dc_op_key(key, sizeof(key), t->comm, t->name);
    neg_free(dc_map_remove(&ng->table, key));
    if (t->coll == DC_COLL_JOIN && ng->joined[t->comm] != NULL) {
        memset(ng->joined[t->comm], 0, (size_t)ng->size);
        ng->njoined[t->comm] = 0;
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
static int neg_present(const dc_neg_t *ng, const dc_comm_t *cm, const neg_entry_t *e, int32_t comm)
{
    int n = 0;

    for (int i = 0; i < cm->size; i++) {
        int r = cm->ranks[i];

        n += e->have[r] || (ng->joined[comm] != NULL && ng->joined[comm][r]);
    }
    return n;
}

/* As Horovod: while some members of comm have joined, only allreduce (they
 * add zeros) and barrier run; the other collectives would need data the
 * joined ranks no longer have. Such a request fails as soon as it arrives
 * (the ranks still running need not agree on its name: their unnamed
 * counters differ by the calls the joined ranks skipped). */
static int joined_refuses(const dc_neg_t *ng, int coll, int32_t comm)
{
    return ng->njoined[comm] > 0 &&
           (coll == DC_COLL_ALLGATHER || coll == DC_COLL_ALLTOALL ||
            coll == DC_COLL_BROADCAST || coll == DC_COLL_REDUCESCATTER);
}

/* Says which ranks joined; 0 when the collective may run. */
static int describe_joined(const dc_neg_t *ng, const dc_comm_t *cm, const dc_wire_req_t *req,
                           char *text, size_t cap)
{
    size_t len;
    int n = 0;

    if (!joined_refuses(ng, req->coll, req->comm)) {
        return 0;
    }
    len = (size_t)snprintf(text, cap, "%s of tensor '%s' is not supported while ranks have "
                           "joined (only allreduce is, as in Horovod); joined:",
                           dc_coll_name(req->coll), req->name);
    for (int i = 0; i < cm->size; i++) {
        if (ng->joined[req->comm][cm->ranks[i]]) {
            n++;
            if (len < cap) {
                len += (size_t)snprintf(text + len, cap - len, " %d", cm->ranks[i]);
            }
        }
    }
    return n > 0;
}

/* Appends the response of a tensor every member has submitted. */
static dc_status_t neg_emit(dc_neg_t *ng, const char *key, neg_entry_t *e, const dc_comm_t *cm)
{
    dc_wire_resp_t *resp = &ng->resp;
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
    } else if (describe_joined(ng, cm, &resp->req, resp->text, sizeof(resp->text))) {
        resp->error = DCOMM_ERR_UNSUPPORTED;
    } else if (resp->req.coll == DC_COLL_ALLGATHER) {
        resp->ncounts = (uint32_t)cm->size;
        for (int i = 0; i < cm->size; i++) {
            int r = cm->ranks[i];

            resp->counts[i] = e->have[r] ? e->per_rank[r].count : 0; /* joined: nothing */
        }
    }
    status = dc_wire_resp_append(&ng->down, resp);
    dc_map_remove(&ng->table, key);
    neg_free(e);
    ng->nresps++;
    return status;
}

/* A rank joined comm: once every member has, the join completes everywhere
 * with the last rank to join as its result. */
static dc_status_t neg_join(dc_neg_t *ng, int r, const dc_wire_req_t *req, const dc_comm_t *cm)
{
    int32_t comm = req->comm;

    if (ng->joined[comm] == NULL) {
        ng->joined[comm] = calloc((size_t)ng->size, 1);
        if (ng->joined[comm] == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for join");
        }
    }
    if (ng->joined[comm][r]) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d joined comm %d twice", r, comm);
    }
    ng->joined[comm][r] = 1;
    ng->join_last[comm] = r;
    if (++ng->njoined[comm] < cm->size) {
        return DCOMM_OK;
    }
    memset(&ng->resp.text, 0, sizeof(ng->resp.text));
    ng->resp.req = *req;
    ng->resp.req.root = ng->join_last[comm];
    ng->resp.error = 0;
    ng->resp.ncounts = 0;
    memset(ng->joined[comm], 0, (size_t)ng->size);
    ng->njoined[comm] = 0;
    ng->nresps++;
    return dc_wire_resp_append(&ng->down, &ng->resp);
}

dc_status_t dc_neg_table_add(dc_neg_t *ng, int r, const dc_wire_req_t *req, dc_timeline_t *tl)
{
    char key[DC_WIRE_NAME_MAX + 16];
    const dc_comm_t *cm = dc_comm_get(ng->st, req->comm);
    neg_entry_t *e;

    if (cm == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d sent tensor '%s' on unknown comm %d",
                            r, req->name, req->comm);
    }
    if (dc_comm_rank_of(cm, r) < 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL,
                            "rank %d sent tensor '%s' on comm %d, which it is not a member of",
                            r, req->name, req->comm);
    }
    if (tl != NULL) {
        char what[32];

        snprintf(what, sizeof(what), "rank %d ready", r);
        dc_timeline_tick(tl, req->name, what, dc_now_ns(), NULL);
    }
    if (req->coll == DC_COLL_JOIN) {
        return neg_join(ng, r, req, cm);
    }
    dc_op_key(key, sizeof(key), req->comm, req->name);
    e = dc_map_get(&ng->table, key);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e != NULL) {
            e->per_rank = calloc((size_t)ng->size, sizeof(*e->per_rank));
            e->have = calloc((size_t)ng->size, 1);
        }
        if (e == NULL || e->per_rank == NULL || e->have == NULL ||
            dc_map_put(&ng->table, key, e) != 1) {
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
    if (neg_present(ng, cm, e, req->comm) < cm->size && !joined_refuses(ng, req->coll, req->comm)) {
        return DCOMM_OK;
    }
    return neg_emit(ng, key, e, cm);
}

typedef struct ready_scan {
    dc_neg_t *ng;
    char (*keys)[DC_WIRE_NAME_MAX + 16];
    size_t n, cap;
} ready_scan_t;

static void scan_one(const char *key, void *value, void *arg)
{
    ready_scan_t *rs = arg;
    neg_entry_t *e = value;
    const dc_wire_req_t *req = NULL; /* a submitter's request: the comm and collective */
    const dc_comm_t *cm;

    for (int r = 0; r < rs->ng->size && req == NULL; r++) {
        if (e->have[r]) {
            req = &e->per_rank[r];
        }
    }
    cm = req != NULL ? dc_comm_get(rs->ng->st, req->comm) : NULL;
    if (cm != NULL && rs->ng->njoined[req->comm] > 0 &&
        (neg_present(rs->ng, cm, e, req->comm) == cm->size ||
         joined_refuses(rs->ng, req->coll, req->comm)) &&
        rs->n < rs->cap) {
        snprintf(rs->keys[rs->n++], sizeof(rs->keys[0]), "%s", key);
    }
}

dc_status_t dc_neg_table_rescan(dc_neg_t *ng)
{
    ready_scan_t rs = {ng, NULL, 0, ng->table.count};
    dc_status_t status = DCOMM_OK;
    int any = 0;

    for (int i = 0; i < DC_MAX_COMMS; i++) {
        any |= ng->njoined[i] > 0;
    }
    if (!any || rs.cap == 0) {
        return DCOMM_OK;
    }
    rs.keys = malloc(rs.cap * sizeof(*rs.keys));
    if (rs.keys == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory in negotiation");
    }
    dc_map_foreach(&ng->table, scan_one, &rs);
    for (size_t i = 0; i < rs.n && status == DCOMM_OK; i++) {
        neg_entry_t *e = dc_map_get(&ng->table, rs.keys[i]);
        const dc_comm_t *cm = NULL;

        for (int r = 0; e != NULL && r < ng->size && cm == NULL; r++) {
            if (e->have[r]) {
                cm = dc_comm_get(ng->st, e->per_rank[r].comm);
            }
        }
        if (e != NULL && cm != NULL) {
            status = neg_emit(ng, rs.keys[i], e, cm);
        }
    }
    free(rs.keys);
    return status;
}

/* ---- stall inspector ------------------------------------------------------------ */

typedef struct stall_scan {
    dc_neg_t *ng;
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
    dc_neg_t *ng = ss->ng;
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
    for (int r = 0; r < ng->size && req == NULL; r++) {
        if (e->have[r]) {
            req = &e->per_rank[r];
        }
    }
    cm = req != NULL ? dc_comm_get(ng->st, req->comm) : NULL;
    if (cm == NULL) {
        return;
    }
    missing[0] = sent[0] = '\0';
    for (int i = 0; i < cm->size; i++) {
        int r = cm->ranks[i];

        if (e->have[r]) {
            sl += (size_t)snprintf(sent + sl, sl < sizeof(sent) ? sizeof(sent) - sl : 0, "%s%d",
                                   sl ? "," : "", r);
        } else if (ng->joined[req->comm] == NULL || !ng->joined[req->comm][r]) {
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

void dc_neg_stall_check(dc_neg_t *ng)
{
    char text[2048];
    stall_scan_t ss = {ng, dc_now_ns(), text, 0, sizeof(text), 0, {0}};

    if (ng->rank != 0 || ng->table.count == 0 || ss.now < ng->next_stall_check_ns) {
        return;
    }
    ng->next_stall_check_ns = ss.now + 100000000ull; /* every 100 ms at most */
    text[0] = '\0';
    dc_map_foreach(&ng->table, stall_one, &ss);
    if (ss.nstalled > 0) {
        DC_WARN("stall: %d tensor%s waited more than %.1f s on some ranks: %s", ss.nstalled,
                ss.nstalled > 1 ? "s have" : " has", (double)dc_config.stall_warning_ms / 1e3,
                text);
    }
    if (ss.fatal[0] != '\0' && ng->stall_fatal[0] == '\0') {
        snprintf(ng->stall_fatal, sizeof(ng->stall_fatal), "%s", ss.fatal);
    }
}
