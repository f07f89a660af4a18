/*
 * The encrypted stream of a tcp endpoint (DCOMM_TCP_ENCRYPT): queued sends are
 * sealed into records (record.c) in a send buffer, and received ciphertext is
 * opened record by record, straight into the posted buffer where it fits.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "dc_time.h"
#include "tcp_int.h"

/* Seals up to TCP_TX_RECS records from the sends not yet sealed; the queue's
 * head is the first of them (sealed ones leave the queue when written). A
 * record that lies within one payload is sealed straight from it; pieces of
 * several messages are gathered in tp->stage first. */
static void ep_seal(dc_transport_t *tp, tcp_ep_t *ep)
{
    dc_request_t *req = ep->sq;

    while (req != NULL && ep->tx_len + TCP_REC_SPAN <= TCP_TXB_LEN) {
        size_t fill = 0, hdr_left = req->done < DC_TCP_HDR_LEN ? DC_TCP_HDR_LEN - req->done : 0;
        const uint8_t *src;

        if (hdr_left == 0 && req->len - (req->done - DC_TCP_HDR_LEN) >= DC_TCP_REC_MAX) {
            src = (const uint8_t *)req->buf + (req->done - DC_TCP_HDR_LEN);
            fill = DC_TCP_REC_MAX;
            req->done += fill;
        } else {
            for (; req != NULL && fill < DC_TCP_REC_MAX; req = req->next) {
                if (req->done < DC_TCP_HDR_LEN) {
                    uint8_t hdr[DC_TCP_HDR_LEN];
                    size_t take = DC_MIN(DC_TCP_HDR_LEN - req->done, DC_TCP_REC_MAX - fill);

                    dc_tcp_put_u64(hdr, req->tag);
                    dc_tcp_put_u64(hdr + 8, req->len);
                    memcpy(tp->stage + fill, hdr + req->done, take);
                    fill += take;
                    req->done += take;
                }
                if (req->done >= DC_TCP_HDR_LEN) {
                    size_t off = req->done - DC_TCP_HDR_LEN;
                    size_t take = DC_MIN(req->len - off, DC_TCP_REC_MAX - fill);

                    if (take > 0) {
                        memcpy(tp->stage + fill, (const uint8_t *)req->buf + off, take);
                        fill += take;
                        req->done += take;
                    }
                }
                if (req->done < DC_TCP_HDR_LEN + req->len) {
                    break; /* the record is full */
                }
            }
            src = tp->stage;
        }
        ep->tx_len += dc_tcp_record_seal(&ep->tx, src, fill, ep->txb + ep->tx_len);
        while (req != NULL && req->done == DC_TCP_HDR_LEN + req->len) {
            req = req->next;
        }
    }
}

/* Encrypted counterpart of the plain framing in tcp_data.c: a send completes
 * when the last record holding its bytes is in the socket. */
int dc_tcp_ep_sealed(dc_transport_t *tp, tcp_ep_t *ep, struct iovec *iov, int *events_p)
{
    if (ep->tx_off == ep->tx_len) {
        ep->tx_off = ep->tx_len = 0;
        while (ep->sq != NULL && ep->sq->done == DC_TCP_HDR_LEN + ep->sq->len) {
            dc_reqq_pop(&ep->sq, &ep->sq_tail)->status = DCOMM_OK;
            (*events_p)++;
        }
        if (ep->sq == NULL) {
            return 0;
        }
        ep_seal(tp, ep);
    }
    iov[0] = (struct iovec){ep->txb + ep->tx_off, ep->tx_len - ep->tx_off};
    return 1;
}

/* Opens records as the caller asks for plaintext (see tcp_int.h). */
ssize_t dc_tcp_ep_read_crypt(tcp_ep_t *ep, void *dst, size_t want)
{
    if (ep->rxp_off < ep->rxp_len) {
        size_t n = DC_MIN(want, ep->rxp_len - ep->rxp_off);

        memcpy(dst, ep->rxp + ep->rxp_off, n);
        ep->rxp_off += n;
        return (ssize_t)n;
    }
    for (;;) {
        size_t avail = ep->rx_end - ep->rx_start, plain = 0, used = 0;
        int rc = dc_tcp_record_len(ep->rxb + ep->rx_start, avail, &plain);
        ssize_t n;

        if (rc == 1 && avail >= plain + DC_TCP_REC_OVERHEAD) {
            int direct = plain <= want;

            rc = dc_tcp_record_open(&ep->rx, ep->rxb + ep->rx_start, avail,
                                    direct ? dst : ep->rxp, direct ? want : DC_TCP_REC_MAX,
                                    &plain, &used);
            if (rc == 1) {
                ep->rx_start += used;
                if (ep->rx_start == ep->rx_end) {
                    ep->rx_start = ep->rx_end = 0;
                }
                if (direct) {
                    return (ssize_t)plain;
                }
                memcpy(dst, ep->rxp, want);
                ep->rxp_off = want;
                ep->rxp_len = plain;
                return (ssize_t)want;
            }
        }
        if (rc < 0) {
            return -2;
        }
        if (!ep->readable) {
            errno = EAGAIN;
            return -1;
        }
        if (TCP_RXB_LEN - ep->rx_end < TCP_REC_SPAN) {
            memmove(ep->rxb, ep->rxb + ep->rx_start, avail);
            ep->rx_start = 0;
            ep->rx_end = avail;
        }
        n = recv(ep->fd, ep->rxb + ep->rx_end, TCP_RXB_LEN - ep->rx_end, MSG_DONTWAIT);
        if (n <= 0) {
            return n;
        }
        ep->rx_end += (size_t)n;
    }
}
