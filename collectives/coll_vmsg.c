/*
 * Length-prefixed messages between a root and every other rank (coll_vmsg.h).
 */
#include "coll_vmsg.h"

#include "coll_p2p.h"

/* v's context with v's request storage, for dc_coll_post. */
static dc_coll_ctx_t post_ctx(const dc_coll_vmsg_t *v)
{
    dc_coll_ctx_t c = *v->ctx;

    c.reqs = v->reqs;
    return c;
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
    dc_coll_ctx_t c = post_ctx(v);
    dc_status_t status = DCOMM_OK;
    int n = 0;

    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        if (r != v->root) {
            status = dc_coll_post(&c, 0, r, &v->lens[r], sizeof(uint64_t), v->wait, &n);
        }
    }
    return status;
}

dc_status_t dc_coll_vmsg_gather_wait(dc_coll_vmsg_t *v)
{
    dc_coll_ctx_t c = post_ctx(v);
    dc_status_t status = wait_all(v, v->ctx->size - 1);
    int n = 0;

    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        void *buf;

        if (r == v->root) {
            continue;
        }
        status = reserve(v, r, v->lens[r], &buf);
        if (status == DCOMM_OK) {
            status = dc_coll_post(&c, 0, r, buf, (size_t)v->lens[r], v->wait, &n);
        }
    }
    return status == DCOMM_OK ? wait_all(v, n) : status;
}

dc_status_t dc_coll_vmsg_bcast(dc_coll_vmsg_t *v, const void *data, uint64_t len)
{
    dc_coll_ctx_t c = post_ctx(v);
    dc_status_t status = DCOMM_OK;
    int n = 0;

    v->lens[v->root] = len;
    for (int r = 0; r < v->ctx->size && status == DCOMM_OK; r++) {
        if (r != v->root) {
            status = dc_coll_post(&c, 1, r, &v->lens[v->root], sizeof(uint64_t), v->wait, &n);
            if (status == DCOMM_OK) {
                status = dc_coll_post(&c, 1, r, (void *)data, (size_t)len, v->wait, &n);
            }
        }
    }
    return status == DCOMM_OK ? wait_all(v, n) : status;
}

dc_status_t dc_coll_vmsg_exchange(dc_coll_vmsg_t *v, const void *data, uint64_t len,
                                  uint64_t *down_len_p)
{
    dc_coll_ctx_t c = post_ctx(v);
    int me = v->ctx->rank, root = v->root, n = 0;
    void *buf;
    dc_status_t status;

    v->lens[me] = len;
    DC_CHECK_GOTO(dc_coll_post(&c, 1, root, &v->lens[me], sizeof(uint64_t), v->wait, &n),
                  status, out);
    DC_CHECK_GOTO(dc_coll_post(&c, 1, root, (void *)data, (size_t)len, v->wait, &n), status,
                  out);
    DC_CHECK_GOTO(dc_coll_post(&c, 0, root, &v->lens[root], sizeof(uint64_t), v->wait, &n),
                  status, out);
    DC_CHECK_GOTO(wait_all(v, n), status, out);
    DC_CHECK_GOTO(reserve(v, root, v->lens[root], &buf), status, out);
    n = 0;
    DC_CHECK_GOTO(dc_coll_post(&c, 0, root, buf, (size_t)v->lens[root], v->wait, &n), status,
                  out);
    DC_CHECK_GOTO(wait_all(v, n), status, out);
    *down_len_p = v->lens[root];
out:
    return status;
}
