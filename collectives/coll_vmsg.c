/*
 * Length-prefixed messages between a root and every other rank (coll_vmsg.h).
 */
#include "coll_vmsg.h"

#include "coll_p2p.h"

/* Posts into v->reqs[*n] / v->wait[*n] (one slot per call). */
static dc_status_t post(const dc_coll_vmsg_t *v, int is_send, int peer, void *buf, size_t len,
                        int *n)
{
    dc_endpoint_t *ep = dc_coll_ep(v->ctx, peer);
    dc_status_t status = is_send ? dc_ep_isend(ep, buf, len, v->ctx->tag, &v->reqs[*n])
                                 : dc_ep_irecv(ep, buf, len, v->ctx->tag, &v->reqs[*n]);

    if (status == DCOMM_OK) {
        v->wait[*n] = &v->reqs[*n];
        (*n)++;
    }
    return status;
}

static dc_status_t wait_all(const dc_coll_vmsg_t *v, int n)
{
    return dc_net_wait(v->ctx->net, v->wait, n, NULL, NULL);
}

/* The buffer for a message of len bytes from rank, after bounding len. */
static dc_status_t reserve(const dc_coll_vmsg_t *v, int rank, uint64_t len, void **buf_p)
{
    if (len > v->max) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "rank %d announced a %llu-byte %s (at most %llu)",
                            v->ctx->ranks[rank], (unsigned long long)len, v->what,
                            (unsigned long long)v->max);
    }
    *buf_p = v->reserve(v->arg, rank, (size_t)len);
    return *buf_p != NULL ? DCOMM_OK : DCOMM_ERR_NO_MEMORY;
}

dc_status_t dc_coll_vmsg_gather_post(dc_coll_vmsg_t *v)
{
    dc_status_t status = DCOMM_OK;
    int n = 0;

    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        if (r != v->root) {
            status = post(v, 0, r, &v->lens[r], sizeof(uint64_t), &n);
        }
    }
    return status;
}

dc_status_t dc_coll_vmsg_gather_wait(dc_coll_vmsg_t *v)
{
    dc_status_t status = wait_all(v, v->ctx->size - 1);
    int n = 0;

    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        void *buf;

        if (r == v->root) {
            continue;
        }
        status = reserve(v, r, v->lens[r], &buf);
        if (status == DCOMM_OK) {
            status = post(v, 0, r, buf, (size_t)v->lens[r], &n);
        }
    }
    return status == DCOMM_OK ? wait_all(v, n) : status;
}

dc_status_t dc_coll_vmsg_bcast(dc_coll_vmsg_t *v, const void *data, uint64_t len)
{
    dc_status_t status = DCOMM_OK;
    int n = 0;

    v->lens[v->root] = len;
    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        if (r != v->root) {
            status = post(v, 1, r, &v->lens[v->root], sizeof(uint64_t), &n);
            if (status == DCOMM_OK) {
                status = post(v, 1, r, (void *)data, (size_t)len, &n);
            }
        }
    }
    return status == DCOMM_OK ? wait_all(v, n) : status;
}

dc_status_t dc_coll_vmsg_exchange(dc_coll_vmsg_t *v, const void *data, uint64_t len,
                                  uint64_t *down_len_p)
{
    int me = v->ctx->rank, n = 0;
    void *buf;
    dc_status_t status;

    v->lens[me] = len;
    DC_CHECK_GOTO(post(v, 1, v->root, &v->lens[me], sizeof(uint64_t), &n), status, out);
    DC_CHECK_GOTO(post(v, 1, v->root, (void *)data, (size_t)len, &n), status, out);
    DC_CHECK_GOTO(post(v, 0, v->root, &v->lens[v->root], sizeof(uint64_t), &n), status, out);
    DC_CHECK_GOTO(wait_all(v, n), status, out);
    DC_CHECK_GOTO(reserve(v, v->root, v->lens[v->root], &buf), status, out);
    n = 0;
    DC_CHECK_GOTO(post(v, 0, v->root, buf, (size_t)v->lens[v->root], &n), status, out);
    DC_CHECK_GOTO(wait_all(v, n), status, out);
    *down_len_p = v->lens[v->root];
out:
    return status;
}
