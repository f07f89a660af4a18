/* The self transport: messages from a rank to itself, matched in FIFO order and
 * copied in progress(). */
#include <stdlib.h>
#include <string.h>

#include "transport.h"

typedef struct self_ep {
    dc_endpoint_t super;
    dc_request_t *sends, *sends_tail;
    dc_request_t *recvs, *recvs_tail;
} self_ep_t;

struct dc_transport {
    self_ep_t ep;
    int rank;
};

static dc_status_t self_query(const dc_topo_t *topo, dc_transport_attr_t *attr_p)
{
    (void)topo;
    *attr_p = (dc_transport_attr_t){.usable = 1, .same_host_only = 1, .priority = 1000,
                                    .latency_us = 0.2, .bandwidth_gbs = 10.0};
    return DCOMM_OK;
}

static dc_status_t self_open(const dc_bootstrap_t *boot, dc_transport_t **tp_p)
{
    dc_transport_t *tp = calloc(1, sizeof(*tp));

    if (tp == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "self: out of memory");
    }
    tp->rank = boot->topo->rank;
    *tp_p = tp;
    return DCOMM_OK;
}

static dc_status_t self_connect(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p)
{
    if (peer != tp->rank) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "self: asked to reach rank %d from rank %d",
                            peer, tp->rank);
    }
    tp->ep.super.ops = &dc_transport_self_ops;
    tp->ep.super.tp = tp;
    tp->ep.super.peer = peer;
    *ep_p = &tp->ep.super;
    return DCOMM_OK;
}

static dc_status_t self_post(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                             dc_request_t *req, int is_send)
{
    self_ep_t *sep = (self_ep_t *)ep;

    dc_request_start(req, ep, buf, len, tag);
    if (is_send) {
        dc_reqq_push(&sep->sends, &sep->sends_tail, req);
    } else {
        dc_reqq_push(&sep->recvs, &sep->recvs_tail, req);
    }
    return DCOMM_OK;
}

static dc_status_t self_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                              dc_request_t *req)
{
    return self_post(ep, (void *)buf, len, tag, req, 1);
}

static dc_status_t self_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                              dc_request_t *req)
{
    return self_post(ep, buf, len, tag, req, 0);
}

static int self_progress(dc_transport_t *tp)
{
    self_ep_t *ep = &tp->ep;
    int events = 0;

    while (ep->sends != NULL && ep->recvs != NULL) {
        dc_request_t *s = dc_reqq_pop(&ep->sends, &ep->sends_tail);
        dc_request_t *r = dc_reqq_pop(&ep->recvs, &ep->recvs_tail);

        if (s->tag != r->tag || s->len > r->len) {
            r->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                     "self: rank %d expected tag 0x%llx (<= %zu bytes), got "
                                     "tag 0x%llx (%zu bytes)",
                                     tp->rank, (unsigned long long)r->tag, r->len,
                                     (unsigned long long)s->tag, s->len);
            s->status = r->status;
        } else {
            if (s->len > 0 && s->buf != r->buf) {
                memmove(r->buf, s->buf, s->len);
            }
            r->len = s->len;
            r->status = DCOMM_OK;
            s->status = DCOMM_OK;
        }
        events += 2;
    }
    return events;
}

static void self_close(dc_transport_t *tp)
{
    while (tp->ep.sends != NULL) {
        dc_reqq_pop(&tp->ep.sends, &tp->ep.sends_tail)->status = DCOMM_ERR_SHUT_DOWN;
    }
    while (tp->ep.recvs != NULL) {
        dc_reqq_pop(&tp->ep.recvs, &tp->ep.recvs_tail)->status = DCOMM_ERR_SHUT_DOWN;
    }
    free(tp);
}

const dc_transport_ops_t dc_transport_self_ops = {
    .abi_version = DC_TRANSPORT_ABI_VERSION,
    .name = "self",
    .query = self_query,
    .open = self_open,
    .connect = self_connect,
    .isend = self_isend,
    .irecv = self_irecv,
    .progress = self_progress,
    .wait_fd = NULL,
    .doorbell = NULL,
    .check = NULL,
    .close = self_close,
};
