/*
 * The ucx module (libdcomm-ucx.so): one UCP worker per process, tag send/receive,
 * worker addresses exchanged through the rendezvous store, and UCX's event fd
 * as wait_fd so an idle rank sleeps in poll() instead of spinning.
 *
 * Matching: a UCP tag carries the sender's rank, a per-pair sequence number and
 * the dcomm tag folded to 20 bits. Receives match rank and sequence exactly,
 * which gives transport.h's per-endpoint FIFO; the folded tag is then checked.
 * Requests complete only in progress(): UCX is told never to complete at once
 * (UCP_OP_ATTR_FLAG_NO_IMM_CMPL), so callbacks run inside ucp_worker_progress.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucp/api/ucp.h>

#include "dc_time.h"
#include "module_shim.h"

#define TAG_RANK_BITS 20
#define TAG_SEQ_BITS  24
#define TAG_FOLD_BITS 20
#define TAG_SEQ_SHIFT TAG_FOLD_BITS
#define TAG_RANK_SHIFT (TAG_FOLD_BITS + TAG_SEQ_BITS)
#define TAG_MATCH_MASK (~((1ull << TAG_FOLD_BITS) - 1))
#define TAG_SEQ_MASK   ((1ull << TAG_SEQ_BITS) - 1)
#define UCX_ADDR_MAX   (64u << 10)

typedef struct ucx_ep ucx_ep_t;

/* Our part of every UCP request (request_size, zeroed by request_init and
 * before each free): links it to its dcomm request and to its endpoint's list
 * of outstanding operations. UCX may run the callback inside the posting call;
 * such an early completion is parked (early, st, len, stag) and finished in the
 * next progress(). */
typedef struct ucx_priv {
    dc_request_t *req;
    ucx_ep_t *ep;
    struct ucx_priv *prev, *next;
    int is_recv, linked, early, has_info;
    ucs_status_t st;
    size_t len;
    ucp_tag_t stag;
} ucx_priv_t;

struct ucx_ep {
    dc_endpoint_t super;
    ucp_ep_h uep;
    uint32_t send_seq, recv_seq;
    ucx_priv_t *pending; /* outstanding operations */
    int failed;
};

struct dc_transport {
    int rank, size;
    ucp_context_h context;
    ucp_worker_h worker;
    int efd;
    dc_store_t *store;
    int timeout_ms;
    ucx_ep_t *eps;  /* [size] */
    int events;     /* completions seen by callbacks during one progress() */
    ucx_priv_t *early; /* completed inside their posting call, not yet reported */
    int failed_peer; /* first peer whose endpoint failed, -1 */
};

static dc_status_t ucx_error(ucs_status_t st, const char *what)
{
    return dc_error_set(DCOMM_ERR_TRANSPORT, "ucx: %s failed: %s", what, ucs_status_string(st));
}

static uint64_t ucp_tag(int rank, uint32_t seq, uint64_t tag)
{
    uint64_t fold = tag ^ (tag >> 20) ^ (tag >> 40) ^ (tag >> 60);

    return ((uint64_t)rank << TAG_RANK_SHIFT) | (((uint64_t)seq & TAG_SEQ_MASK) << TAG_SEQ_SHIFT) |
           (fold & ((1ull << TAG_FOLD_BITS) - 1));
}

static void priv_unlink(ucx_priv_t *p)
{
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        p->ep->pending = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
}

/* Sets the dcomm request's final status from a UCX completion. */
static void op_finish(ucx_priv_t *p)
{
    dc_request_t *req = p->req;
    dc_transport_t *tp = req->ep->tp;
    int peer = req->ep->peer;
    ucs_status_t st = p->st;

    tp->events++;
    if (st == UCS_OK && p->has_info) {
        uint64_t want = ucp_tag(peer, 0, req->tag) & ~TAG_MATCH_MASK;

        if ((p->stag & ~TAG_MATCH_MASK) != want) {
            req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                       "ucx: rank %d: message from rank %d carries another tag "
                                       "than the receive's 0x%llx: schedules disagree",
                                       tp->rank, peer, (unsigned long long)req->tag);
            return;
        }
        req->len = p->len;
    }
    if (st == UCS_OK) {
        req->done = req->len;
        req->status = DCOMM_OK;
    } else if (st == UCS_ERR_MESSAGE_TRUNCATED) {
        req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                   "ucx: rank %d: message from rank %d (tag 0x%llx) is longer "
                                   "than the %zu bytes posted",
                                   tp->rank, peer, (unsigned long long)req->tag, req->len);
    } else if (st == UCS_ERR_CANCELED && !((ucx_ep_t *)req->ep)->failed) {
        req->status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "ucx: transport closed");
    } else {
        req->status = dc_error_set(DCOMM_ERR_PEER_LOST, "ucx: rank %d: lost rank %d: %s",
                                   tp->rank, peer, ucs_status_string(st));
    }
}

static void priv_release(ucx_priv_t *p)
{
    memset(p, 0, sizeof(*p));
    ucp_request_free(p);
}

static void op_done(void *request, ucs_status_t st, const ucp_tag_recv_info_t *info)
{
    ucx_priv_t *p = request;

    p->st = st;
    if (info != NULL) {
        p->has_info = 1;
        p->len = info->length;
        p->stag = info->sender_tag;
    }
    if (!p->linked) {
        p->early = 1; /* inside the posting call: ucx_post takes over */
        return;
    }
    priv_unlink(p);
    op_finish(p);
    priv_release(p);
}

static void send_cb(void *request, ucs_status_t st, void *user_data)
{
    (void)user_data;
    op_done(request, st, NULL);
}

static void recv_cb(void *request, ucs_status_t st, const ucp_tag_recv_info_t *info,
                    void *user_data)
{
    (void)user_data;
    op_done(request, st, info);
}

static void request_init(void *request)
{
    memset(request, 0, sizeof(ucx_priv_t));
}

static void ep_error_cb(void *arg, ucp_ep_h uep, ucs_status_t st)
{
    ucx_ep_t *ep = arg;
    dc_transport_t *tp = ep->super.tp;

    (void)uep;
    if (!ep->failed) {
        DC_WARN("ucx: rank %d: endpoint to rank %d failed: %s", tp->rank, ep->super.peer,
                ucs_status_string(st));
    }
    ep->failed = 1;
    if (tp->failed_peer < 0) {
        tp->failed_peer = ep->super.peer;
    }
}

static dc_status_t ucx_query(const dc_topo_t *topo, dc_transport_attr_t *attr_p)
{
    (void)topo;
    *attr_p = (dc_transport_attr_t){.usable = 1, .same_host_only = 0, .priority = 50,
                                    .latency_us = 3.0, .bandwidth_gbs = 10.0};
    return DCOMM_OK;
}

static void ucx_tp_free(dc_transport_t *tp)
{
    if (tp->worker != NULL) {
        ucp_worker_destroy(tp->worker);
    }
    if (tp->context != NULL) {
        ucp_cleanup(tp->context);
    }
    free(tp->eps);
    free(tp);
}

static dc_status_t ucx_open_worker(dc_transport_t *tp)
{
    ucp_params_t params = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE |
                      UCP_PARAM_FIELD_REQUEST_INIT,
        .features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP,
        .request_size = sizeof(ucx_priv_t),
        .request_init = request_init,
    };
    ucp_worker_params_t wparams = {
        .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        .thread_mode = UCS_THREAD_MODE_SERIALIZED, /* init thread, then the coordinator */
    };
    ucp_config_t *config;
    ucs_status_t st;

    st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) {
        return ucx_error(st, "ucp_config_read");
    }
    st = ucp_init(&params, config, &tp->context);
    ucp_config_release(config);
    if (st != UCS_OK) {
        tp->context = NULL;
        return ucx_error(st, "ucp_init");
    }
    st = ucp_worker_create(tp->context, &wparams, &tp->worker);
    if (st != UCS_OK) {
        tp->worker = NULL;
        return ucx_error(st, "ucp_worker_create");
    }
    st = ucp_worker_get_efd(tp->worker, &tp->efd);
    if (st != UCS_OK) {
        return ucx_error(st, "ucp_worker_get_efd");
    }
    return DCOMM_OK;
}

static dc_status_t ucx_open(const dc_bootstrap_t *boot, dc_transport_t **tp_p)
{
    const dc_topo_t *topo = boot->topo;
    ucp_address_t *addr;
    size_t addr_len;
    char key[64];
    dc_status_t status;
    ucs_status_t st;
    dc_transport_t *tp = calloc(1, sizeof(*tp));

    if (tp == NULL || (tp->eps = calloc((size_t)topo->size, sizeof(*tp->eps))) == NULL) {
        free(tp);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "ucx: out of memory");
    }
    tp->rank = topo->rank;
    tp->size = topo->size;
    tp->store = boot->store;
    tp->timeout_ms = boot->timeout_ms;
    tp->efd = -1;
    tp->failed_peer = -1;
    if (topo->size >= (1 << TAG_RANK_BITS)) {
        status = dc_error_set(DCOMM_ERR_UNSUPPORTED, "ucx: at most %d ranks",
                              (1 << TAG_RANK_BITS) - 1);
        goto err;
    }
    DC_CHECK_GOTO(ucx_open_worker(tp), status, err);
    st = ucp_worker_get_address(tp->worker, &addr, &addr_len);
    if (st != UCS_OK) {
        status = ucx_error(st, "ucp_worker_get_address");
        goto err;
    }
    snprintf(key, sizeof(key), "ucx/addr/%d", tp->rank);
    status = dc_store_set(boot->store, key, addr, addr_len);
    ucp_worker_release_address(tp->worker, addr);
    if (status < 0) {
        goto err;
    }
    *tp_p = tp;
    return DCOMM_OK;
err:
    ucx_tp_free(tp);
    return status;
}

static const dc_transport_ops_t ucx_transport_ops;

static dc_status_t ucx_connect(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p)
{
    ucx_ep_t *ep = &tp->eps[peer];
    char key[64];
    size_t len;
    dc_status_t status;
    ucs_status_t st;
    void *addr = malloc(UCX_ADDR_MAX);

    if (addr == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "ucx: out of memory");
    }
    snprintf(key, sizeof(key), "ucx/addr/%d", peer);
    status = dc_store_get(tp->store, key, addr, UCX_ADDR_MAX, &len, tp->timeout_ms);
    if (status < 0 || len > UCX_ADDR_MAX) {
        free(addr);
        return dc_error_set(status < 0 ? status : DCOMM_ERR_TRANSPORT,
                            "ucx: rank %d: no worker address from rank %d: %s", tp->rank, peer,
                            status < 0 ? dc_error_get() : "too long");
    }
    ep->super = (dc_endpoint_t){.ops = &ucx_transport_ops, .tp = tp, .peer = peer};
    ucp_ep_params_t params = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER,
        .address = addr,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = ep_error_cb, .arg = ep},
    };
    st = ucp_ep_create(tp->worker, &params, &ep->uep);
    free(addr);
    if (st != UCS_OK) {
        ep->uep = NULL;
        return dc_error_set(DCOMM_ERR_TRANSPORT, "ucx: rank %d: cannot reach rank %d: %s",
                            tp->rank, peer, ucs_status_string(st));
    }
    *ep_p = &ep->super;
    return DCOMM_OK;
}

static dc_status_t ucx_post(ucx_ep_t *ep, ucs_status_ptr_t sp, dc_request_t *req, int is_recv)
{
    ucx_priv_t *p;

    if (UCS_PTR_IS_ERR(sp) || sp == NULL) {
        /* NULL cannot happen with NO_IMM_CMPL; treat as a failure to post. */
        return dc_error_set(DCOMM_ERR_TRANSPORT, "ucx: rank %d: cannot post a %s to rank %d: %s",
                            ep->super.tp->rank, is_recv ? "receive" : "send", ep->super.peer,
                            sp == NULL ? "no request" : ucs_status_string(UCS_PTR_STATUS(sp)));
    }
    p = sp;
    p->req = req;
    p->ep = ep;
    p->is_recv = is_recv;
    if (p->early) {
        p->next = ep->super.tp->early;
        ep->super.tp->early = p;
        return DCOMM_OK;
    }
    p->linked = 1;
    p->prev = NULL;
    p->next = ep->pending;
    if (ep->pending != NULL) {
        ep->pending->prev = p;
    }
    ep->pending = p;
    return DCOMM_OK;
}

static dc_status_t ucx_isend(dc_endpoint_t *dep, const void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    ucx_ep_t *ep = (ucx_ep_t *)dep;
    ucp_request_param_t param = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FLAG_NO_IMM_CMPL,
        .cb.send = send_cb,
    };

    if (ep->failed) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "ucx: rank %d: rank %d is lost",
                            dep->tp->rank, dep->peer);
    }
    dc_request_start(req, dep, buf, len, tag);
    return ucx_post(ep, ucp_tag_send_nbx(ep->uep, buf, len,
                                         ucp_tag(dep->tp->rank, ep->send_seq++, tag), &param),
                    req, 0);
}

static dc_status_t ucx_irecv(dc_endpoint_t *dep, void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    ucx_ep_t *ep = (ucx_ep_t *)dep;
    ucp_request_param_t param = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FLAG_NO_IMM_CMPL,
        .cb.recv = recv_cb,
    };

    if (ep->failed) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "ucx: rank %d: rank %d is lost",
                            dep->tp->rank, dep->peer);
    }
    dc_request_start(req, dep, buf, len, tag);
    return ucx_post(ep, ucp_tag_recv_nbx(dep->tp->worker, buf, len,
                                         ucp_tag(dep->peer, ep->recv_seq++, tag), TAG_MATCH_MASK,
                                         &param),
                    req, 1);
}

/* Receives from a failed peer never match: cancel them (their callbacks then
 * complete them with DCOMM_ERR_PEER_LOST). */
static void cancel_failed(dc_transport_t *tp)
{
    for (int r = 0; r < tp->size; r++) {
        ucx_ep_t *ep = &tp->eps[r];

        for (ucx_priv_t *p = ep->failed ? ep->pending : NULL, *next; p != NULL; p = next) {
            next = p->next; /* a cancelled receive completes (and is freed) at once */
            if (p->is_recv) {
                ucp_request_cancel(tp->worker, p);
            }
        }
    }
}

static int ucx_progress(dc_transport_t *tp)
{
    ucs_status_t st;

    tp->events = 0;
    while (tp->early != NULL) {
        ucx_priv_t *p = tp->early;

        tp->early = p->next;
        op_finish(p);
        priv_release(p);
    }
    while (ucp_worker_progress(tp->worker) != 0) {
    }
    if (tp->failed_peer >= 0) {
        cancel_failed(tp);
        while (ucp_worker_progress(tp->worker) != 0) {
        }
    }
    if (tp->events > 0) {
        return tp->events;
    }
    /* Idle: arm the event fd so the sleeper's poll() wakes on the next event.
     * BUSY means events arrived meanwhile: report one so the caller goes on. */
    st = ucp_worker_arm(tp->worker);
    return st == UCS_ERR_BUSY ? 1 : 0;
}

static dc_status_t ucx_wait_fd(dc_transport_t *tp, int *fd_p)
{
    *fd_p = tp->efd;
    return DCOMM_OK;
}

static dc_status_t ucx_check(dc_transport_t *tp)
{
    if (tp->failed_peer >= 0) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "ucx: rank %d lost its connection to rank %d",
                            tp->rank, tp->failed_peer);
    }
    return DCOMM_OK;
}

static void ucx_close(dc_transport_t *tp)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags = UCP_EP_CLOSE_FLAG_FORCE};
    uint64_t deadline = dc_deadline_ms(DC_MAX(tp->timeout_ms, 1000));

    for (int r = 0; r < tp->size; r++) {
        ucx_ep_t *ep = &tp->eps[r];

        for (ucx_priv_t *p = ep->pending, *next; p != NULL; p = next) {
            next = p->next;
            if (p->is_recv) {
                ucp_request_cancel(tp->worker, p);
            }
        }
        if (ep->uep != NULL) {
            ucs_status_ptr_t sp = ucp_ep_close_nbx(ep->uep, &param);

            while (sp != NULL && !UCS_PTR_IS_ERR(sp) && ucp_request_check_status(sp) ==
                   UCS_INPROGRESS && dc_now_ns() < deadline) {
                ucp_worker_progress(tp->worker);
            }
            if (sp != NULL && !UCS_PTR_IS_ERR(sp)) {
                ucp_request_free(sp);
            }
            ep->uep = NULL;
        }
    }
    while (ucp_worker_progress(tp->worker) != 0) {
    }
    while (tp->early != NULL) {
        ucx_priv_t *p = tp->early;

        tp->early = p->next;
        op_finish(p);
        priv_release(p);
    }
    /* Anything UCX did not complete is failed here, never left in progress. */
    for (int r = 0; r < tp->size; r++) {
        for (ucx_priv_t *p = tp->eps[r].pending; p != NULL; p = p->next) {
            p->req->status = dc_error_set(DCOMM_ERR_SHUT_DOWN, "ucx: transport closed");
        }
    }
    ucx_tp_free(tp);
}

static const dc_transport_ops_t ucx_transport_ops = {
    .abi_version = DC_TRANSPORT_ABI_VERSION,
    .name = "ucx",
    .query = ucx_query,
    .open = ucx_open,
    .connect = ucx_connect,
    .isend = ucx_isend,
    .irecv = ucx_irecv,
    .progress = ucx_progress,
    .wait_fd = ucx_wait_fd,
    .check = ucx_check,
    .close = ucx_close,
};

static dc_status_t ucx_module_init(const dc_module_host_t *host)
{
    dc_module_shim_init(host);
    return DCOMM_OK;
}

__attribute__((visibility("default"))) const dc_module_t dcomm_module_v1_ucx = {
    .abi_version = DC_MODULE_ABI_VERSION,
    .name = "ucx",
    .init = ucx_module_init,
    .transport = &ucx_transport_ops,
};
