/*
 * The data path of the tcp transport: per-endpoint FIFO queues of sends and
 * receives, messages framed as {tag, len} + payload, moved by progress() over
 * the edge-triggered epoll set (also the descriptor the core sleeps on);
 * payloads go straight between the socket and the posted buffers. A lost
 * connection fails its endpoint's requests with a message naming the peer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "dc_time.h"
#include "tcp_int.h"

#define TCP_SEND_BATCH     32        /* messages per sendmsg */
#define TCP_MAX_EVENTS     64

/* ---- requests and loss ------------------------------------------------ */

int dc_tcp_fail_queue(dc_request_t **head, dc_request_t **tail, dc_status_t status)
{
    int n = 0;

    while (*head != NULL) {
        dc_reqq_pop(head, tail)->status = status;
        n++;
    }
    return n;
}

/* Fails every request of a lost endpoint with a message naming the peer. */
static int ep_fail_pending(tcp_ep_t *ep)
{
    dc_status_t status;

    if (ep->sq == NULL && ep->rq == NULL) {
        return 0;
    }
    ep->lost_busy = 1;
    status = ep->lost_status == DCOMM_ERR_AUTH
                 ? dc_error_set(DCOMM_ERR_AUTH, "tcp: rank %d: encrypted stream from rank %d "
                                "broken: %s", ((dc_transport_t *)ep->super.tp)->rank,
                                ep->super.peer, ep->why)
                 : dc_error_set(DCOMM_ERR_PEER_LOST, "tcp: rank %d: connection closed (%s)",
                                ep->super.peer, ep->why);
    return dc_tcp_fail_queue(&ep->sq, &ep->sq_tail, status) +
           dc_tcp_fail_queue(&ep->rq, &ep->rq_tail, status);
}

static int ep_lost_as(dc_transport_t *tp, tcp_ep_t *ep, dc_status_t status, const char *why)
{
    if (ep->lost) {
        return 0;
    }
    ep->lost = 1;
    ep->lost_status = status;
    snprintf(ep->why, sizeof(ep->why), "%s", why);
    if (ep->fd >= 0) {
        (void)epoll_ctl(tp->epfd, EPOLL_CTL_DEL, ep->fd, NULL);
        close(ep->fd);
        ep->fd = -1;
    }
    if (status == DCOMM_ERR_AUTH) {
        DC_ERROR("tcp: rank %d: encrypted stream from rank %d broken: %s", tp->rank,
                 ep->super.peer, why);
        ep->lost_busy = 1; /* an attack or a bug: an error even with nothing pending */
    } else if (ep->sq != NULL || ep->rq != NULL) {
        DC_WARN("tcp: rank %d lost connection to rank %d (%s)", tp->rank, ep->super.peer, why);
    }
    return ep_fail_pending(ep);
}

static int ep_lost(dc_transport_t *tp, tcp_ep_t *ep, const char *why)
{
    return ep_lost_as(tp, ep, DCOMM_ERR_PEER_LOST, why);
}

static int ep_lost_errno(dc_transport_t *tp, tcp_ep_t *ep, int err)
{
    return ep_lost(tp, ep, strerror(err));
}

/* ---- data path ------------------------------------------------------------ */

/* Plain stream: the unsent bytes of up to TCP_SEND_BATCH queued messages,
 * headers built in hdrs. Returns the iovec count (0: nothing queued). */
static int plain_iov(const tcp_ep_t *ep, uint8_t hdrs[][DC_TCP_HDR_LEN], struct iovec *iov)
{
    int niov = 0, nreq = 0;

    for (dc_request_t *req = ep->sq; req != NULL && nreq < TCP_SEND_BATCH;
         req = req->next, nreq++) {
        size_t done = req->done;

        if (done < DC_TCP_HDR_LEN) {
            dc_tcp_put_u64(hdrs[nreq], req->tag);
            dc_tcp_put_u64(hdrs[nreq] + 8, req->len);
            iov[niov++] = (struct iovec){hdrs[nreq] + done, DC_TCP_HDR_LEN - done};
            done = DC_TCP_HDR_LEN;
        }
        if (done - DC_TCP_HDR_LEN < req->len) {
            iov[niov++] = (struct iovec){(char *)req->buf + done - DC_TCP_HDR_LEN,
                                         req->len - (done - DC_TCP_HDR_LEN)};
        }
    }
    return niov;
}

/* Plain stream: n bytes went out; completes the sends they finish. */
static int plain_sent(tcp_ep_t *ep, size_t n)
{
    int events = 0;

    for (size_t left = n; left > 0;) {
        size_t take = DC_MIN(left, DC_TCP_HDR_LEN + ep->sq->len - ep->sq->done);

        ep->sq->done += take;
        left -= take;
        if (ep->sq->done == DC_TCP_HDR_LEN + ep->sq->len) {
            dc_reqq_pop(&ep->sq, &ep->sq_tail)->status = DCOMM_OK;
            events++;
        }
    }
    return events;
}

/* Writes as much of the send queue as the socket takes: plain, several
 * messages per sendmsg; encrypted, the sealed records (tcp_crypt.c). */
static int ep_send(dc_transport_t *tp, tcp_ep_t *ep)
{
    uint8_t hdrs[TCP_SEND_BATCH][DC_TCP_HDR_LEN];
    struct iovec iov[2 * TCP_SEND_BATCH];
    int events = 0;

    while (ep->writable) {
        struct msghdr msg = {.msg_iov = iov};
        ssize_t n;

        msg.msg_iovlen = (size_t)(tp->encrypt ? dc_tcp_ep_sealed(tp, ep, iov, &events)
                                              : plain_iov(ep, hdrs, iov));
        if (msg.msg_iovlen == 0) {
            break;
        }
        n = sendmsg(ep->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ep->writable = 0;
                break;
            }
            return events + ep_lost_errno(tp, ep, errno);
        }
        events++;
        if (tp->encrypt) {
            ep->tx_off += (size_t)n;
        } else {
            events += plain_sent(ep, (size_t)n);
        }
    }
    return events;
}

/* Opened plaintext or received ciphertext waits in the endpoint's buffers. */
static int ep_rx_buffered(const tcp_ep_t *ep)
{
    return ep->rxp_off < ep->rxp_len || ep->rx_start < ep->rx_end;
}

/* A complete header arrived: match it to the receive at the head of the queue. */
static int ep_match(dc_transport_t *tp, tcp_ep_t *ep)
{
    uint64_t tag = dc_tcp_get_u64(ep->rx_hdr), len = dc_tcp_get_u64(ep->rx_hdr + 8);
    dc_request_t *req = ep->rq;

    ep->rx_hdr_done = 0;
    if (tag != req->tag || len > req->len) {
        dc_reqq_pop(&ep->rq, &ep->rq_tail);
        req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                   "tcp: rank %d expected tag 0x%llx (<= %zu bytes) from rank "
                                   "%d, got tag 0x%llx (%llu bytes)",
                                   tp->rank, (unsigned long long)req->tag, req->len,
                                   ep->super.peer, (unsigned long long)tag,
                                   (unsigned long long)len);
        ep->rx_discard = len;
        ep->rx_state = len > 0 ? TCP_RX_DISCARD : TCP_RX_HDR;
        return 1;
    }
    req->done = 0;
    ep->rx_len = (size_t)len;
    if (len == 0) {
        dc_reqq_pop(&ep->rq, &ep->rq_tail);
        req->len = 0;
        req->status = DCOMM_OK;
        return 1;
    }
    ep->rx_state = TCP_RX_PAYLOAD;
    return 0;
}

/* Reads while the socket has data and there is somewhere to put it. Payloads go
 * straight into the posted buffers; with no receive posted the socket is left
 * alone, so the sender is held back by TCP flow control. */
static int ep_recv(dc_transport_t *tp, tcp_ep_t *ep)
{
    int events = 0;

    while ((ep->readable || ep_rx_buffered(ep)) && ep->fd >= 0) {
        dc_request_t *req = ep->rq;
        void *dst;
        size_t want;
        ssize_t n;

        if (ep->rx_state == TCP_RX_HDR) {
            if (req == NULL) {
                break;
            }
            dst = ep->rx_hdr + ep->rx_hdr_done;
            want = DC_TCP_HDR_LEN - ep->rx_hdr_done;
        } else if (ep->rx_state == TCP_RX_PAYLOAD) {
            dst = (char *)req->buf + req->done;
            want = ep->rx_len - req->done;
        } else {
            dst = tp->scratch;
            want = (size_t)DC_MIN(ep->rx_discard, (uint64_t)TCP_SCRATCH_LEN);
        }
        n = tp->encrypt ? dc_tcp_ep_read_crypt(ep, dst, want)
                        : recv(ep->fd, dst, want, MSG_DONTWAIT);
        if (n == -2) {
            char why[sizeof(ep->why)];

            snprintf(why, sizeof(why), "%s", dc_error_get());
            ep_lost_as(tp, ep, DCOMM_ERR_AUTH, why);
            return events + 1;
        }
        if (n == 0) {
            return events + 1 + ep_lost(tp, ep, tp->encrypt && ep->rx_start < ep->rx_end
                                                    ? "closed by peer in the middle of an "
                                                      "encrypted record: stream truncated"
                                                    : "closed by peer");
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ep->readable = 0;
                break;
            }
            return events + 1 + ep_lost_errno(tp, ep, errno);
        }
        events++;
        if (ep->rx_state == TCP_RX_HDR) {
            ep->rx_hdr_done += (size_t)n;
            if (ep->rx_hdr_done == DC_TCP_HDR_LEN) {
                events += ep_match(tp, ep);
            }
        } else if (ep->rx_state == TCP_RX_PAYLOAD) {
            req->done += (size_t)n;
            if (req->done == ep->rx_len) {
                dc_reqq_pop(&ep->rq, &ep->rq_tail);
                req->len = ep->rx_len;
                req->status = DCOMM_OK;
                ep->rx_state = TCP_RX_HDR;
                events++;
            }
        } else {
            ep->rx_discard -= (uint64_t)n;
            if (ep->rx_discard == 0) {
                ep->rx_state = TCP_RX_HDR;
            }
        }
    }
    return events;
}

int dc_tcp_progress(dc_transport_t *tp)
{
    struct epoll_event evs[TCP_MAX_EVENTS];
    int events = 0, n;

    n = epoll_wait(tp->epfd, evs, TCP_MAX_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        tcp_ep_t *ep = evs[i].data.ptr;
        uint32_t e = evs[i].events;

        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            ep->readable = 1;
        }
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            ep->writable = 1;
        }
        if ((e & EPOLLERR) && ep->fd >= 0) {
            int err = 0;
            socklen_t len = sizeof(err);

            (void)getsockopt(ep->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            events += 1 + ep_lost_errno(tp, ep, err != 0 ? err : ECONNRESET);
        }
    }
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];

        if (ep->lost) {
            events += ep_fail_pending(ep);
            continue;
        }
        if (ep->fd < 0) {
            continue; /* not connected yet: requests wait */
        }
        if (ep->sq != NULL && ep->writable) {
            events += ep_send(tp, ep);
        }
        if ((ep->readable || ep_rx_buffered(ep)) && ep->fd >= 0 &&
            (ep->rq != NULL || ep->rx_state != TCP_RX_HDR)) {
            events += ep_recv(tp, ep);
        }
    }
    return events;
}

static dc_status_t tcp_post(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                            dc_request_t *req, int is_send)
{
    tcp_ep_t *tep = (tcp_ep_t *)ep;

    if (req == NULL || (buf == NULL && len > 0)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: %s to rank %d: NULL %s",
                            is_send ? "isend" : "irecv", ep->peer, req ? "buffer" : "request");
    }
    dc_request_start(req, ep, buf, len, tag);
    if (is_send) {
        dc_reqq_push(&tep->sq, &tep->sq_tail, req);
    } else {
        dc_reqq_push(&tep->rq, &tep->rq_tail, req);
    }
    return DCOMM_OK;
}

dc_status_t dc_tcp_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                         dc_request_t *req)
{
    return tcp_post(ep, (void *)buf, len, tag, req, 1);
}

dc_status_t dc_tcp_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                         dc_request_t *req)
{
    return tcp_post(ep, buf, len, tag, req, 0);
}

/* ---- liveness -------------------------------------------------------------- */

/* A peer that closed with nothing pending on it is only noted: a rank that
 * finished its part and exited is not an error until somebody needs it. */
dc_status_t dc_tcp_check(dc_transport_t *tp)
{
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];
        char byte;
        ssize_t n;

        if (ep->fd >= 0 && ep->rx_state == TCP_RX_HDR && !ep_rx_buffered(ep)) {
            n = recv(ep->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0) {
                ep_lost(tp, ep, "closed by peer");
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                ep_lost_errno(tp, ep, errno);
                ep->lost_busy = 1;
            }
        }
        if (ep->lost) {
            ep_fail_pending(ep);
        }
    }
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];

        if (ep->lost && ep->lost_busy) {
            return ep->lost_status == DCOMM_ERR_AUTH
                       ? dc_error_set(DCOMM_ERR_AUTH, "tcp: rank %d: encrypted stream from "
                                      "rank %d broken: %s", tp->rank, ep->super.peer, ep->why)
                       : dc_error_set(DCOMM_ERR_PEER_LOST, "tcp: rank %d: connection closed "
                                      "(%s)", ep->super.peer, ep->why);
        }
    }
    return DCOMM_OK;
}
