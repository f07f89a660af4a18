/*
 * The data path of the shm transport: sends stream into our ring in the peer's
 * segment (messages larger than the ring go through it in pieces), receives are
 * taken in FIFO order from the peer's ring in ours, and each side rings the
 * other's doorbell futex when it has made room or data. A peer that is gone or
 * declared a failure still delivers what it left in our ring; the rest fails.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "shm_int.h"

#define SHM_CHUNK (256u << 10) /* publish head/tail this often while streaming */

static void ring_put(uint8_t *data, uint64_t mask, uint64_t pos, const void *src, size_t n)
{
    size_t off = (size_t)(pos & mask);
    size_t first = DC_MIN(n, (size_t)(mask + 1) - off);

    if (n == 0) {
        return;
    }
    memcpy(data + off, src, first);
    if (n > first) {
        memcpy(data, (const uint8_t *)src + first, n - first);
    }
}

static void ring_get(const uint8_t *data, uint64_t mask, uint64_t pos, void *dst, size_t n)
{
    size_t off = (size_t)(pos & mask);
    size_t first = DC_MIN(n, (size_t)(mask + 1) - off);

    if (n == 0) {
        return;
    }
    memcpy(dst, data + off, first);
    if (n > first) {
        memcpy((uint8_t *)dst + first, data, n - first);
    }
}

/* Streams queued sends into the peer's ring; returns the chunks moved. */
static int ep_send_move(shm_ep_t *ep)
{
    uint64_t size = ep->tx_mask + 1;
    uint64_t published = ep->tx_head;
    int events = 0, waiting = 0;

    while (ep->send_cur != NULL) {
        dc_request_t *req = ep->send_cur;
        uint64_t tail = atomic_load(&ep->tx->tail); /* seq_cst: pairs with sender_waiting */
        uint64_t space = size - (ep->tx_head - tail);

        if (space < (ep->send_hdr_done ? 1 : sizeof(dc_shm_msg_hdr_t))) {
            if (waiting) {
                break;
            }
            /* Ask for a doorbell when space frees up, then look once more:
             * the receiver stores tail before it reads the flag (seq_cst on
             * both sides), so one of us sees the other. */
            atomic_store(&ep->tx->sender_waiting, 1);
            waiting = 1;
            continue;
        }
        if (!ep->send_hdr_done) {
            dc_shm_msg_hdr_t hdr = {.tag = req->tag, .len = req->len};

            ring_put(ep->tx_data, ep->tx_mask, ep->tx_head, &hdr, sizeof(hdr));
            ep->tx_head += sizeof(hdr);
            space -= sizeof(hdr);
            ep->send_hdr_done = 1;
        }
        size_t n = (size_t)DC_MIN((uint64_t)(req->len - req->done), DC_MIN(space, SHM_CHUNK));
        ring_put(ep->tx_data, ep->tx_mask, ep->tx_head, (const uint8_t *)req->buf + req->done, n);
        ep->tx_head += n;
        req->done += n;
        if (ep->tx_head != published) {
            atomic_store_explicit(&ep->tx->head, ep->tx_head, memory_order_release);
            published = ep->tx_head;
            events++;
        }
        if (req->done == req->len) {
            ep->send_cur = req->next;
            ep->send_hdr_done = 0;
        }
    }
    if (events > 0) {
        dc_doorbell_ring(&ep->seg->doorbell);
    }
    return events;
}

static void ep_recv_complete(shm_ep_t *ep, dc_status_t status)
{
    dc_request_t *req = dc_reqq_pop(&ep->recvs, &ep->recvs_tail);

    if (status == DCOMM_OK) {
        req->len = (size_t)ep->rx_len;
    }
    req->status = status;
}

/* Takes the next message's header and matches it to the first posted receive. */
static void ep_recv_start(shm_ep_t *ep, dc_transport_t *tp, int *events)
{
    dc_request_t *req = ep->recvs;
    dc_shm_msg_hdr_t hdr;

    ring_get(ep->rx_data, ep->rx_mask, ep->rx_tail, &hdr, sizeof(hdr));
    ep->rx_tail += sizeof(hdr);
    ep->rx_active = 1;
    ep->rx_len = hdr.len;
    ep->rx_left = hdr.len;
    ep->rx_discard = 0;
    req->done = 0;
    if (hdr.tag != req->tag || hdr.len > req->len) {
        ep_recv_complete(ep, dc_error_set(DCOMM_ERR_INTERNAL,
                                          "shm: rank %d expected tag 0x%llx (<= %zu bytes) from "
                                          "rank %d, got tag 0x%llx (%llu bytes)",
                                          tp->rank, (unsigned long long)req->tag, req->len,
                                          ep->super.peer, (unsigned long long)hdr.tag,
                                          (unsigned long long)hdr.len));
        ep->rx_discard = 1;
        (*events)++;
    }
}

/* Consumes our inbound ring from this peer into posted receives. */
static int ep_recv_move(shm_ep_t *ep, dc_transport_t *tp)
{
    int events = 0, freed = 0;

    for (;;) {
        uint64_t head = atomic_load_explicit(&ep->rx->head, memory_order_acquire);
        uint64_t avail = head - ep->rx_tail;

        if (!ep->rx_active) {
            if (avail < sizeof(dc_shm_msg_hdr_t) || ep->recvs == NULL) {
                break; /* a message without a receive waits in the ring */
            }
            ep_recv_start(ep, tp, &events);
            avail -= sizeof(dc_shm_msg_hdr_t);
            freed = 1;
        }
        size_t n = (size_t)DC_MIN(ep->rx_left, DC_MIN(avail, SHM_CHUNK));
        if (!ep->rx_discard && ep->recvs == NULL) {
            ep->rx_discard = 1; /* its receive was failed meanwhile (ep_fail) */
        }
        if (!ep->rx_discard) {
            dc_request_t *req = ep->recvs;
            ring_get(ep->rx_data, ep->rx_mask, ep->rx_tail, (uint8_t *)req->buf + req->done, n);
            req->done += n;
        }
        ep->rx_tail += n;
        ep->rx_left -= n;
        if (n > 0 || freed) {
            atomic_store(&ep->rx->tail, ep->rx_tail); /* seq_cst: see ep_send_move */
            if (atomic_load(&ep->rx->sender_waiting) != 0 &&
                atomic_exchange(&ep->rx->sender_waiting, 0) != 0) {
                dc_doorbell_ring(&ep->seg->doorbell); /* the blocked sender may go on */
            }
            events += (n > 0);
            freed = 0;
        }
        if (ep->rx_left == 0) {
            ep->rx_active = 0;
            if (!ep->rx_discard) {
                ep_recv_complete(ep, DCOMM_OK);
                events++;
            }
            ep->rx_discard = 0;
        } else if (n == 0) {
            break;
        }
    }
    return events;
}

static int ep_send_complete(shm_ep_t *ep)
{
    int events = 0;

    while (ep->sends != NULL && ep->sends != ep->send_cur) {
        dc_reqq_pop(&ep->sends, &ep->sends_tail)->status = DCOMM_OK;
        events++;
    }
    return events;
}

static dc_status_t ep_lost_error(shm_ep_t *ep)
{
    if (ep->failed) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "shm: rank %d (pid %d) failed: %s",
                            ep->super.peer, (int)ep->pid, ep->why);
    }
    return dc_error_set(DCOMM_ERR_PEER_LOST, "shm: rank %d (pid %d) is gone", ep->super.peer,
                        (int)ep->pid);
}

static dc_status_t shm_post_check(dc_endpoint_t *ep, const void *buf, size_t len,
                                  dc_request_t *req)
{
    if (ep == NULL || req == NULL || (buf == NULL && len > 0)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: %s is NULL",
                            ep == NULL ? "endpoint" : req == NULL ? "request" : "buffer");
    }
    return DCOMM_OK;
}

dc_status_t dc_shm_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                         dc_request_t *req)
{
    dc_status_t status = shm_post_check(ep, buf, len, req);
    shm_ep_t *sep = (shm_ep_t *)ep;

    if (status < 0) {
        return status;
    }
    dc_request_start(req, ep, buf, len, tag);
    if (sep->gone) {
        sep->lost = 1;
        req->status = ep_lost_error(sep);
        return req->status;
    }
    dc_reqq_push(&sep->sends, &sep->sends_tail, req);
    if (sep->send_cur == NULL) {
        sep->send_cur = req;
        ep_send_move(sep); /* eager: the data moves now, completion in progress() */
    }
    return DCOMM_OK;
}

dc_status_t dc_shm_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                         dc_request_t *req)
{
    dc_status_t status = shm_post_check(ep, buf, len, req);
    shm_ep_t *sep = (shm_ep_t *)ep;

    if (status < 0) {
        return status;
    }
    dc_request_start(req, ep, buf, len, tag);
    /* even from a departed peer: its last messages may still sit in our ring */
    dc_reqq_push(&sep->recvs, &sep->recvs_tail, req);
    return DCOMM_OK;
}

static int ep_gone_progress(shm_ep_t *ep, dc_transport_t *tp);

int dc_shm_progress(dc_transport_t *tp)
{
    int events = 0;

    for (int i = 0; i < tp->npeers; i++) {
        shm_ep_t *ep = &tp->eps[i];

        if (ep->gone) {
            events += ep_gone_progress(ep, tp);
            continue;
        }
        events += ep_recv_move(ep, tp);
        events += ep_send_move(ep);
        events += ep_send_complete(ep);
    }
    return events;
}

static int peer_gone(shm_ep_t *ep)
{
    if (ep->pid == getpid()) {
        return 0;
    }
    if (ep->pidfd >= 0) {
        struct pollfd pfd = {.fd = ep->pidfd, .events = POLLIN};
        return poll(&pfd, 1, 0) > 0;
    }
    return kill(ep->pid, 0) != 0 && errno == ESRCH;
}

int dc_shm_ep_fail(shm_ep_t *ep, dc_status_t status)
{
    int failed = 0;

    if (ep->rx_active) {
        ep->rx_discard = 1; /* the rest of the message in flight has no receive now */
    }
    while (ep->recvs != NULL) {
        dc_reqq_pop(&ep->recvs, &ep->recvs_tail)->status = status;
        failed++;
    }
    while (ep->sends != NULL) {
        dc_reqq_pop(&ep->sends, &ep->sends_tail)->status = status;
        failed++;
    }
    ep->send_cur = NULL;
    return failed;
}

/* The peer is gone: deliver what it left in our ring (its sends completed when
 * the data was there), then fail what can never complete. */
static int ep_gone_progress(shm_ep_t *ep, dc_transport_t *tp)
{
    int events = ep_recv_move(ep, tp) + ep_send_complete(ep);

    if (ep->recvs != NULL || ep->sends != NULL) {
        int failed = dc_shm_ep_fail(ep, ep_lost_error(ep));

        DC_WARN("shm: rank %d (pid %d) %s; %d requests failed", ep->super.peer, (int)ep->pid,
                ep->failed ? "failed" : "is gone", failed);
        ep->lost = 1;
        events += failed;
    }
    return events;
}

dc_status_t dc_shm_check(dc_transport_t *tp)
{
    dc_status_t first = DCOMM_OK;

    for (int i = 0; i < tp->npeers; i++) {
        shm_ep_t *ep = &tp->eps[i];

        if (!ep->gone && !ep->closed && ep->seg != tp->seg &&
            atomic_load_explicit(&ep->seg->failed, memory_order_acquire) != 0) {
            /* Alive but failed: what it sent still arrives, the rest fails with
             * its cause. The text is the peer's: bounded and terminated here. */
            memcpy(ep->why, ep->seg->why, sizeof(ep->why));
            ep->why[sizeof(ep->why) - 1] = '\0';
            ep->failed = 1;
            ep->gone = 1;
            ep->lost = 1;
            ep_gone_progress(ep, tp);
        }
        if (!ep->gone && !ep->closed && peer_gone(ep)) {
            ep->gone = 1;
            /* a crash, not the end of a job whose last messages we already have */
            ep->lost = atomic_load(&ep->seg->closed) == 0;
            ep_gone_progress(ep, tp);
        }
        if (ep->lost && first == DCOMM_OK) {
            first = ep_lost_error(ep);
        }
    }
    return first;
}

/* This process failed but lives on: the cause goes into our segment, then the
 * flag (release: a peer that sees it sees the text), then every peer's
 * doorbell, so that a sleeping peer checks at once. */
void dc_shm_fail(dc_transport_t *tp, const char *why)
{
    if (tp->seg == NULL || atomic_load(&tp->seg->failed) != 0) {
        return;
    }
    snprintf(tp->seg->why, sizeof(tp->seg->why), "%s", why != NULL ? why : "(no reason)");
    atomic_store_explicit(&tp->seg->failed, 1, memory_order_release);
    for (int i = 0; i < tp->npeers; i++) {
        if (tp->eps[i].seg != NULL && tp->eps[i].seg != tp->seg) {
            dc_doorbell_ring(&tp->eps[i].seg->doorbell);
        }
    }
}
