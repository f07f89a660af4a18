/*
 * Deadlock detection (coord_neg.h).
 *
 * A user thread of a rank blocked in dcomm_wait (or a blocking call) cannot
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
 * state changing).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "coord_neg.h"
#include "dc_time.h"
#include "log.h"

void dc_neg_dl_free(dc_neg_t *ng)
{
    for (int r = 0; ng->dl_recs != NULL && r < ng->size; r++) {
        free(ng->dl_recs[r].reqs);
        free(ng->dl_recs[r].waited);
    }
    free(ng->dl_recs);
    free(ng->dl_dead);
    free(ng->dl_reqs);
    free(ng->dl_waited);
    ng->dl_recs = NULL;
    ng->dl_dead = NULL;
    ng->dl_reqs = NULL;
    ng->dl_waited = NULL;
}

static int dl_find(dc_neg_t *ng, uint64_t now);

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
static uint64_t dl_since(dc_neg_t *ng)
{
    uint64_t w = atomic_load(&ng->st->wait_change_ns);

    return DC_MAX(w, ng->dl_local_ns);
}

static int dl_want(dc_neg_t *ng, uint64_t now)
{
    return dc_config.deadlock_timeout_ms > 0 && ng->size > 1 &&
           atomic_load(&ng->st->nwaiters) > 0 && now >= dl_since(ng) + dl_debounce_ns();
}

int dc_neg_dl_report_due(dc_neg_t *ng, uint64_t now)
{
    return dl_want(ng, now) != ng->dl_sent;
}

void dc_neg_dl_idle_begin(dc_neg_t *ng, uint64_t now)
{
    ng->dl_idle_check_ns = now + 100000000ull;
}

void dc_neg_dl_local_changed(dc_neg_t *ng, uint64_t now)
{
    ng->dl_local_ns = now;
}

void dc_neg_dl_touch(dc_neg_t *ng, int32_t comm)
{
    ng->dl_touched[comm] = 1;
    ng->dl_any_touched = 1;
}

int dc_neg_dl_idle_stop(dc_neg_t *ng, uint64_t now)
{
    if (dc_neg_dl_report_due(ng, now)) {
        return 1;
    }
    /* Rank 0 looks at the reports now and then; it wakes the others only
     * to fail a deadlock. */
    if (ng->rank == 0 && dc_config.deadlock_timeout_ms > 0 && !ng->dl_due &&
        now > ng->dl_idle_check_ns) {
        ng->dl_idle_check_ns = now + 100000000ull;
        if (dl_find(ng, now) > 0) {
            ng->dl_due = 1;
            return 1;
        }
    }
    return 0;
}

static void dl_collect_one(const char *key, void *value, void *arg)
{
    dc_neg_t *ng = arg;
    dc_op_t *op = value;
    const dc_handle_slot_t *slot;

    (void)key;
    if (ng->dl_n < ng->dl_cap) {
        slot = dc_handle_lookup(ng->st, op->handle);
        ng->dl_reqs[ng->dl_n] = &op->req;
        ng->dl_waited[ng->dl_n] = slot != NULL && slot->waiters > 0;
        ng->dl_n++;
    }
}

dc_status_t dc_neg_encode_up(dc_neg_t *ng)
{
    uint64_t now = dc_now_ns(), since;
    uint32_t flags = ng->shutdown_flag ? DC_WIRE_FLAG_SHUTDOWN : 0;
    size_t nwaited = 0;
    dc_status_t status;

    ng->dl_n = 0;
    if (dl_want(ng, now) && ng->local.count > DC_WIRE_WAITS_MAX) {
        ng->dl_local_ns = now; /* too many to list: not reported (no detection) */
    } else if (dl_want(ng, now)) {
        if (ng->local.count > ng->dl_cap) {
            size_t cap = DC_MAX(ng->local.count, 2 * ng->dl_cap);
            const dc_wire_req_t **reqs = realloc(ng->dl_reqs, cap * sizeof(*reqs));
            uint8_t *waited;

            if (reqs == NULL) {
                return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a wait report");
            }
            ng->dl_reqs = reqs;
            waited = realloc(ng->dl_waited, cap);
            if (waited == NULL) {
                return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a wait report");
            }
            ng->dl_waited = waited;
            ng->dl_cap = cap;
        }
        pthread_mutex_lock(&ng->st->lock);
        dc_map_foreach(&ng->local, dl_collect_one, ng);
        pthread_mutex_unlock(&ng->st->lock);
        for (size_t i = 0; i < ng->dl_n; i++) {
            nwaited += ng->dl_waited[i];
        }
        if (nwaited == 0) {
            /* The waited handle is not ours yet (queued) or done: look again
             * after another debounce, not every cycle. */
            ng->dl_local_ns = now;
        }
    }
    ng->dl_sent = nwaited > 0;
    if (nwaited > 0) {
        flags |= DC_WIRE_FLAG_WAITING;
    }
    status = dc_wire_reqs_encode(&ng->up, flags, ng->new_reqs, (uint32_t)ng->nnew);
    if (status == DCOMM_OK && nwaited > 0) {
        uint64_t age_ms;

        since = dl_since(ng);
        age_ms = since < now ? (now - since) / 1000000 : 0;
        status = dc_wire_waits_encode(&ng->up, (uint32_t)DC_MIN(age_ms, UINT32_MAX), ng->dl_reqs,
                                      ng->dl_waited, (uint32_t)ng->dl_n);
    }
    return status;
}

dc_status_t dc_neg_dl_take(dc_neg_t *ng, int r, dc_wire_reader_t *rd, int waiting)
{
    uint64_t now = dc_now_ns(), age_ns;
    uint32_t age_ms, n;
    dl_rec_t *rec;
    dc_status_t status;

    /* The rank's wait report replaces the last one; none: it is not blocked. */
    if (ng->dl_recs != NULL) {
        ng->dl_recs[r].valid = 0;
    }
    if (!waiting) {
        return DCOMM_OK;
    }
    if (ng->dl_recs == NULL) {
        ng->dl_recs = calloc((size_t)ng->size, sizeof(*ng->dl_recs));
        ng->dl_dead = calloc((size_t)ng->size, 1);
        if (ng->dl_recs == NULL || ng->dl_dead == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for wait reports");
        }
    }
    rec = &ng->dl_recs[r];
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
        cm = dc_comm_get(ng->st, rec->reqs[i].comm);
        if (cm == NULL || dc_comm_rank_of(cm, r) < 0) {
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
static int dl_present(dc_neg_t *ng, int m, const dc_wire_req_t *t)
{
    const dl_rec_t *rec = &ng->dl_recs[m];

    if (dc_neg_table_has(ng, m, t)) {
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
static int dl_possible(dc_neg_t *ng, const dc_wire_req_t *t)
{
    const dc_comm_t *cm = dc_comm_get(ng->st, t->comm);

    for (int i = 0; cm != NULL && i < cm->size; i++) {
        int m = cm->ranks[i];

        if (ng->dl_dead[m] && !dl_present(ng, m, t)) {
            return 0;
        }
    }
    return 1;
}

/* The deadlocked ranks into ng->dl_dead: the largest set of blocked ranks each
 * of whose waited tensors misses a rank of the set. Returns its size, or 0
 * when it is empty or some member's state is younger than the grace time. */
static int dl_find(dc_neg_t *ng, uint64_t now)
{
    int changed = 1, n = 0;

    if (ng->dl_recs == NULL) {
        return 0;
    }
    for (int r = 0; r < ng->size; r++) {
        const dl_rec_t *rec = &ng->dl_recs[r];

        ng->dl_dead[r] = 0;
        for (uint32_t i = 0; rec->valid && i < rec->n; i++) {
            ng->dl_dead[r] |= rec->waited[i];
        }
    }
    while (changed) {
        changed = 0;
        for (int r = 0; r < ng->size; r++) {
            const dl_rec_t *rec = &ng->dl_recs[r];

            for (uint32_t i = 0; ng->dl_dead[r] && i < rec->n; i++) {
                if (rec->waited[i] && dl_possible(ng, &rec->reqs[i])) {
                    ng->dl_dead[r] = 0; /* that wait may end: the rank may go on */
                    changed = 1;
                }
            }
        }
    }
    for (int r = 0; r < ng->size; r++) {
        if (ng->dl_dead[r]) {
            if (now - ng->dl_recs[r].since_ns < dl_grace_ns()) {
                return 0;
            }
            n++;
        }
    }
    return n;
}

void dc_neg_dl_check(dc_neg_t *ng)
{
    uint64_t now = dc_now_ns();

    if (ng->rank != 0 || dc_config.deadlock_timeout_ms == 0 || ng->dl_due ||
        now < ng->dl_next_check_ns) {
        return;
    }
    ng->dl_next_check_ns = now + 100000000ull; /* every 100 ms at most */
    if (dl_find(ng, now) > 0) {
        ng->dl_due = 1; /* the next slow round checks again with fresh reports */
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
static void dl_submitters(dc_neg_t *ng, const dc_wire_req_t *t, char *buf, size_t cap, int *n_p)
{
    const dc_comm_t *cm = dc_comm_get(ng->st, t->comm);
    size_t len = 0;

    buf[0] = '\0';
    *n_p = 0;
    for (int i = 0; cm != NULL && i < cm->size; i++) {
        if (dl_present(ng, cm->ranks[i], t)) {
            len = dl_append(buf, len, cap, "%s%d", *n_p ? "," : "", cm->ranks[i]);
            (*n_p)++;
        }
    }
}

static void dl_describe(dc_neg_t *ng, int ndead, char *text, size_t cap)
{
    size_t len = 0;
    int first = 1;

    if (ndead == ng->size) {
        len = dl_append(text, len, cap, "deadlock: every rank is waiting");
    } else {
        len = dl_append(text, len, cap, "deadlock: rank%s ", ndead > 1 ? "s" : "");
        for (int r = 0; r < ng->size; r++) {
            if (ng->dl_dead[r]) {
                len = dl_append(text, len, cap, "%s%d", first ? "" : ",", r);
                first = 0;
            }
        }
        len = dl_append(text, len, cap, ndead > 1 ? " are all waiting" : " is waiting");
    }
    len = dl_append(text, len, cap, " and the tensors %s on can never all be submitted: ",
                    ndead > 1 ? "they wait" : "it waits");
    first = 1;
    for (int r = 0; r < ng->size; r++) {
        const dl_rec_t *rec = &ng->dl_recs[r];

        for (uint32_t i = 0; ng->dl_dead[r] && i < rec->n; i++) {
            const dc_wire_req_t *t = &rec->reqs[i];
            char by[256], comm[32] = "";
            int nby;

            if (!rec->waited[i]) {
                continue;
            }
            dl_submitters(ng, t, by, sizeof(by), &nby);
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
dc_status_t dc_neg_dl_fail(dc_neg_t *ng, uint32_t *flags_p)
{
    int ndead = dl_find(ng, dc_now_ns());
    dc_wire_resp_t *resp = &ng->resp;
    dc_status_t status = DCOMM_OK;

    if (ndead == 0) {
        return DCOMM_OK;
    }
    memset(resp->text, 0, sizeof(resp->text));
    dl_describe(ng, ndead, resp->text, sizeof(resp->text));
    DC_ERROR("%s", resp->text);
    for (int r = 0; r < ng->size && status == DCOMM_OK; r++) {
        const dl_rec_t *rec = &ng->dl_recs[r];

        for (uint32_t i = 0; ng->dl_dead[r] && i < rec->n && status == DCOMM_OK; i++) {
            const dc_wire_req_t *t = &rec->reqs[i];
            int seen = 0;

            if (!rec->waited[i]) {
                continue;
            }
            /* Once per tensor, though several ranks wait on it. */
            for (int q = 0; q < r && !seen; q++) {
                for (uint32_t j = 0; ng->dl_dead[q] && j < ng->dl_recs[q].n && !seen; j++) {
                    seen = ng->dl_recs[q].waited[j] && ng->dl_recs[q].reqs[j].comm == t->comm &&
                           strcmp(ng->dl_recs[q].reqs[j].name, t->name) == 0;
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
            status = dc_wire_resp_append(&ng->down, resp);
            ng->nresps++;
            /* Its name is free again: a later submission starts afresh. */
            dc_neg_table_forget(ng, t);
        }
    }
    *flags_p |= DC_WIRE_FLAG_DEADLOCK;
    return status;
}

void dc_neg_dl_cycle_end(dc_neg_t *ng)
{
    int mine = 0;

    if (!ng->dl_any_touched) {
        return;
    }
    ng->dl_any_touched = 0;
    for (int id = 0; id < DC_MAX_COMMS; id++) {
        const dc_comm_t *cm;

        if (!ng->dl_touched[id]) {
            continue;
        }
        ng->dl_touched[id] = 0;
        cm = dc_comm_get(ng->st, id);
        for (int i = 0; i < (cm != NULL ? cm->size : ng->size); i++) {
            int m = cm != NULL ? cm->ranks[i] : i; /* a destroyed comm: everyone */

            if (ng->dl_recs != NULL) {
                ng->dl_recs[m].valid = 0;
            }
            mine |= m == ng->rank;
        }
    }
    if (mine) {
        ng->dl_sent = 0;
        ng->dl_local_ns = dc_now_ns();
    }
}
