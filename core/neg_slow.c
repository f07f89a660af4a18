/*
 * The slow path of negotiation (coord_neg.h): every rank sends the requests
 * it has not sent yet to rank 0, which records them in its table
 * (neg_table.c) and answers with the responses that every member of their
 * comm has submitted. The response list becomes this cycle's work on every
 * rank.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "coll_vmsg.h"
#include "coord_neg.h"
#include "dc_time.h"
#include "log.h"

static dc_status_t neg_take_list(dc_neg_t *ng, int r, const void *data, size_t len,
                                 dc_timeline_t *tl)
{
    dc_wire_reader_t rd;
    uint32_t flags, n;
    dc_wire_req_t req;
    dc_status_t status = dc_wire_reqs_begin(&rd, data, len, &flags, &n);

    if (status < 0) {
        return dc_error_set(status, "from rank %d: %s", r, dc_error_get());
    }
    if ((flags & DC_WIRE_FLAG_SHUTDOWN) && ng->shutdown_rank < 0) {
        ng->shutdown_rank = r;
    }
    for (uint32_t i = 0; i < n; i++) {
        status = dc_wire_req_next(&rd, &req);
        if (status == DCOMM_OK) {
            status = dc_neg_table_add(ng, r, &req, tl);
        }
        if (status < 0) {
            return status;
        }
    }
    return dc_neg_dl_take(ng, r, &rd, (flags & DC_WIRE_FLAG_WAITING) != 0);
}

/* ---- one negotiation round ------------------------------------------------- */

/* The buffer of rank's list (rank 0's: the response list). */
static void *neg_buf(void *arg, int rank, size_t len)
{
    dc_neg_t *ng = arg;
    dc_wire_buf_t *buf = rank == 0 ? &ng->down : &ng->rx[rank];

    return dc_wire_buf_reserve(buf, len ? len : 1) == DCOMM_OK ? buf->data : NULL;
}

static dc_status_t negotiate_root(dc_neg_t *ng, dc_coll_vmsg_t *v, const dc_work_t *w,
                                  dc_timeline_t *tl)
{
    dc_status_t status;
    uint32_t flags = 0;

    ng->shutdown_rank = ng->shutdown_flag ? 0 : -1;
    ng->nresps = 0;
    DC_CHECK_GOTO(dc_wire_resps_begin_encode(&ng->down, 0), status, out);
    /* Our own list is taken while the others' are on their way. */
    DC_CHECK_GOTO(dc_coll_vmsg_gather_post(v), status, out);
    DC_CHECK_GOTO(dc_neg_encode_up(ng), status, out);
    DC_CHECK_GOTO(neg_take_list(ng, 0, ng->up.data, ng->up.len, tl), status, out);
    DC_CHECK_GOTO(dc_coll_vmsg_gather_wait(v), status, out);
    for (int r = 1; r < ng->size; r++) {
        DC_CHECK_GOTO(neg_take_list(ng, r, ng->rx[r].data, v->lens[r], tl), status, out);
    }
    DC_CHECK_GOTO(dc_neg_table_rescan(ng), status, out);
    /* A deadlock rank 0 saw: fail it when it still holds with every rank's
     * report of this round, and nothing else happens in this cycle (fast-path
     * work already agreed is in w). */
    if (ng->dl_due) {
        ng->dl_due = 0;
        if (ng->nresps == 0 && w->n == 0 && ng->stall_fatal[0] == '\0' &&
            ng->shutdown_rank < 0) {
            DC_CHECK_GOTO(dc_neg_dl_fail(ng, &flags), status, out);
        }
    }
    if (ng->stall_fatal[0] != '\0') {
        /* DCOMM_STALL_SHUTDOWN: the list becomes one fatal error for every rank. */
        DC_CHECK_GOTO(dc_wire_resps_begin_encode(&ng->down, 0), status, out);
        memset(&ng->resp, 0, offsetof(dc_wire_resp_t, ncounts));
        ng->resp.ncounts = 0;
        snprintf(ng->resp.req.name, sizeof(ng->resp.req.name), "stall");
        ng->resp.error = DCOMM_ERR_TIMEOUT;
        snprintf(ng->resp.text, sizeof(ng->resp.text), "%s", ng->stall_fatal);
        DC_CHECK_GOTO(dc_wire_resp_append(&ng->down, &ng->resp), status, out);
        flags |= DC_WIRE_FLAG_FATAL;
    } else if (ng->shutdown_rank >= 0) {
        flags |= DC_WIRE_FLAG_SHUTDOWN;
    } else if (ng->nresps == 0 && ng->table.count == 0) {
        flags |= DC_WIRE_FLAG_IDLE;
    }
    if (ng->shutdown_rank >= 0) {
        flags |= DC_WIRE_FLAG_RANK(ng->shutdown_rank);
    }
    dc_wire_set_flags(&ng->down, flags);
    status = dc_coll_vmsg_bcast(v, ng->down.data, ng->down.len);
out:
    return status;
}

static dc_status_t negotiate_member(dc_neg_t *ng, dc_coll_vmsg_t *v)
{
    uint64_t down_len = 0;
    dc_status_t status;

    DC_CHECK_GOTO(dc_neg_encode_up(ng), status, out);
    DC_CHECK_GOTO(dc_coll_vmsg_exchange(v, ng->up.data, ng->up.len, &down_len), status, out);
    ng->down.len = (size_t)down_len;
out:
    return status;
}

/* Turns the response list in ng->down into this cycle's work items. */
static dc_status_t take_responses(dc_neg_t *ng, dc_work_t *w, uint32_t *flags_p)
{
    dc_wire_reader_t rd;
    uint32_t n;
    dc_status_t status = dc_wire_resps_begin(&rd, ng->down.data, ng->down.len, flags_p, &n);

    if (status < 0) {
        return dc_error_set(status, "from rank 0: %s", dc_error_get());
    }
    for (uint32_t i = 0; i < n; i++) {
        char key[DC_WIRE_NAME_MAX + 16];
        const dc_comm_t *cm;
        dc_op_t *op = NULL;

        DC_CHECK_GOTO(dc_wire_resp_next(&rd, &ng->resp), status, out);
        if (i == 0 && (*flags_p & DC_WIRE_FLAG_FATAL)) {
            return dc_error_set(ng->resp.error < 0 ? ng->resp.error : DCOMM_ERR_TIMEOUT, "%s",
                                ng->resp.text);
        }
        cm = dc_comm_get(ng->st, ng->resp.req.comm);
        if (cm == NULL) {
            status = dc_error_set(DCOMM_ERR_INTERNAL, "rank 0 answered tensor '%s' on comm %d, "
                                  "unknown here", ng->resp.req.name, ng->resp.req.comm);
            goto out;
        }
        dc_neg_dl_touch(ng, ng->resp.req.comm);
        if (cm->rank >= 0) {
            dc_op_key(key, sizeof(key), ng->resp.req.comm, ng->resp.req.name);
            op = dc_map_remove(&ng->local, key);
            if ((*flags_p & DC_WIRE_FLAG_DEADLOCK) && op != NULL && ng->resp.error < 0) {
                dc_neg_unbit(ng, op);
            }
            /* A failed tensor this rank never submitted (a deadlock's, or one
             * refused while ranks have joined) is still an item here: every
             * rank runs the same items, so their tags stay in step. */
            if (op == NULL &&
                (ng->resp.req.coll == DC_COLL_JOIN || !ng->local_joined[ng->resp.req.comm]) &&
                !(ng->resp.error < 0 && ((*flags_p & DC_WIRE_FLAG_DEADLOCK) ||
                                        ng->resp.error == DCOMM_ERR_UNSUPPORTED))) {
                status = dc_error_set(DCOMM_ERR_INTERNAL,
                                      "rank 0 answered tensor '%s', which this rank never sent",
                                      ng->resp.req.name);
                goto out;
            }
        }
        DC_CHECK_GOTO(dc_work_add(w, &ng->resp.req, op, ng->resp.error, ng->resp.text,
                                        ng->resp.counts, ng->resp.ncounts, -1), status, out);
    }
out:
    return status;
}

dc_status_t dc_neg_slow_round(dc_neg_t *ng, dc_net_t *net, uint64_t tag, dc_work_t *w,
                              dc_timeline_t *tl, uint64_t cycle, uint32_t *flags_p)
{
    const dc_comm_t *world = dc_comm_get(ng->st, 0);
    dc_coll_ctx_t ctx = {.net = net, .rank = ng->rank, .size = ng->size, .ranks = world->ranks,
                         .tag = tag};
    /* Each list goes up to rank 0 and the response list back down. */
    dc_coll_vmsg_t v = {.ctx = &ctx, .root = 0, .max = DC_WIRE_MSG_MAX,
                        .what = ng->rank == 0 ? "request list" : "response list",
                        .reserve = neg_buf, .arg = ng, .lens = ng->rx_len, .reqs = ng->reqs,
                        .wait = ng->preqs};
    uint64_t t0 = dc_now_ns();
    dc_status_t status = ng->rank == 0 ? negotiate_root(ng, &v, w, tl) : negotiate_member(ng, &v);

    ng->nnew = 0;
    ng->stats.slow_rounds++;
    if (!ng->shutdown_flag) { /* a shutdown always ends with a slow round */
        ng->stats.last_slow_cycle = cycle;
    }
    ng->stats.negotiate_ns += dc_now_ns() - t0;
    if (status == DCOMM_OK) {
        status = take_responses(ng, w, flags_p);
    }
    return status;
}
