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

static dc_status_t wait_reqs(dc_net_t *net, dc_request_t **reqs, int n)
{
    return dc_net_wait(net, reqs, n, NULL, NULL);
}

static dc_status_t negotiate_root(dc_neg_t *ng, dc_net_t *net, uint64_t tag, const dc_work_t *w,
                                  dc_timeline_t *tl)
{
    dc_status_t status;
    int n = ng->size, k = 0;
    uint32_t flags = 0;

    ng->shutdown_rank = ng->shutdown_flag ? 0 : -1;
    ng->nresps = 0;
    DC_CHECK_GOTO(dc_wire_resps_begin_encode(&ng->down, 0), status, out);
    /* Lengths first, then the lists, from every other rank. */
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(dc_ep_irecv(dc_net_ep(net, r), &ng->rx_len[r], sizeof(uint64_t),
                                  tag, &ng->reqs[k]), status, out);
        ng->preqs[k] = &ng->reqs[k];
        k++;
    }
    /* Our own list is taken while the others' are on their way. */
    DC_CHECK_GOTO(dc_neg_encode_up(ng), status, out);
    DC_CHECK_GOTO(neg_take_list(ng, 0, ng->up.data, ng->up.len, tl), status, out);
    DC_CHECK_GOTO(wait_reqs(net, ng->preqs, k), status, out);
    k = 0;
    for (int r = 1; r < n; r++) {
        if (ng->rx_len[r] > DC_WIRE_MSG_MAX) {
            status = dc_error_set(DCOMM_ERR_TRANSPORT, "rank %d announced a %llu-byte list", r,
                                  (unsigned long long)ng->rx_len[r]);
            goto out;
        }
        DC_CHECK_GOTO(dc_wire_buf_reserve(&ng->rx[r], ng->rx_len[r]), status, out);
        DC_CHECK_GOTO(dc_ep_irecv(dc_net_ep(net, r), ng->rx[r].data, ng->rx_len[r], tag,
                                  &ng->reqs[k]), status, out);
        ng->preqs[k] = &ng->reqs[k];
        k++;
    }
    DC_CHECK_GOTO(wait_reqs(net, ng->preqs, k), status, out);
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(neg_take_list(ng, r, ng->rx[r].data, ng->rx_len[r], tl), status, out);
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
    ng->down_len = ng->down.len;
    k = 0;
    for (int r = 1; r < n; r++) {
        DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(net, r), &ng->down_len, sizeof(uint64_t), tag,
                                  &ng->reqs[k]), status, out);
        ng->preqs[k] = &ng->reqs[k];
        k++;
        DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(net, r), ng->down.data, ng->down.len, tag,
                                  &ng->reqs[k]), status, out);
        ng->preqs[k] = &ng->reqs[k];
        k++;
    }
    status = wait_reqs(net, ng->preqs, k);
out:
    return status;
}

static dc_status_t negotiate_member(dc_neg_t *ng, dc_net_t *net, uint64_t tag)
{
    dc_endpoint_t *root = dc_net_ep(net, 0);
    dc_status_t status;

    DC_CHECK_GOTO(dc_neg_encode_up(ng), status, out);
    ng->up_len = ng->up.len;
    DC_CHECK_GOTO(dc_ep_isend(root, &ng->up_len, sizeof(uint64_t), tag, &ng->reqs[0]), status,
                  out);
    DC_CHECK_GOTO(dc_ep_isend(root, ng->up.data, ng->up.len, tag, &ng->reqs[1]), status, out);
    DC_CHECK_GOTO(dc_ep_irecv(root, &ng->down_len, sizeof(uint64_t), tag, &ng->reqs[2]), status,
                  out);
    ng->preqs[0] = &ng->reqs[0];
    ng->preqs[1] = &ng->reqs[1];
    ng->preqs[2] = &ng->reqs[2];
    DC_CHECK_GOTO(wait_reqs(net, ng->preqs, 3), status, out);
    if (ng->down_len > DC_WIRE_MSG_MAX) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "rank 0 announced a %llu-byte response list",
                              (unsigned long long)ng->down_len);
        goto out;
    }
    DC_CHECK_GOTO(dc_wire_buf_reserve(&ng->down, ng->down_len), status, out);
    DC_CHECK_GOTO(dc_ep_irecv(root, ng->down.data, ng->down_len, tag, &ng->reqs[0]), status, out);
    ng->preqs[0] = &ng->reqs[0];
    DC_CHECK_GOTO(wait_reqs(net, ng->preqs, 1), status, out);
    ng->down.len = ng->down_len;
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
    uint64_t t0 = dc_now_ns();
    dc_status_t status = ng->rank == 0 ? negotiate_root(ng, net, tag, w, tl)
                                       : negotiate_member(ng, net, tag);

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
