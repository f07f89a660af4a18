/*
 * The tcp transport's state, shared by its files and by no one else: tcp.c
 * (open, connect, close, the ops table), tcp_conn.c (connection set-up and
 * handshakes), tcp_data.c (framed sends and receives, progress, loss) and
 * tcp_crypt.c (an endpoint's encrypted stream). The wire format is in tcp.h.
 */
#ifndef DC_TCP_INT_H
#define DC_TCP_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "tcp.h"
#include "transport.h"

#define TCP_SCRATCH_LEN    (64 << 10) /* sink for payloads of mismatched messages */
#define TCP_ADDR_LEN       64
#define TCP_TX_RECS        4         /* encrypted: records sealed per refill of the send buffer */
#define TCP_REC_SPAN       (DC_TCP_REC_MAX + DC_TCP_REC_OVERHEAD)
#define TCP_TXB_LEN        (TCP_TX_RECS * TCP_REC_SPAN)
#define TCP_RXB_LEN        (4 * TCP_REC_SPAN)

typedef struct tcp_hs tcp_hs_t;

typedef enum tcp_rx_state {
    TCP_RX_HDR,     /* reading a header (only while a receive is posted) */
    TCP_RX_PAYLOAD, /* reading into the receive at the head of the queue */
    TCP_RX_DISCARD  /* draining the payload of a message that failed to match */
} tcp_rx_state_t;

typedef struct tcp_ep {
    dc_endpoint_t super;
    int served;   /* peer is in boot->peers */
    int fd;       /* -1 until connected, and after loss */
    int readable; /* edge seen, EAGAIN not yet */
    int writable;
    int lost;     /* connection gone: every request fails */
    int lost_busy;/* ... and some request was or is pending on it */
    dc_status_t lost_status; /* what its requests fail with: PEER_LOST, or AUTH */
    char why[160];
    dc_request_t *sq, *sq_tail; /* sends, head partially written */
    dc_request_t *rq, *rq_tail; /* receives, head possibly matched */
    tcp_rx_state_t rx_state;
    uint8_t rx_hdr[DC_TCP_HDR_LEN];
    size_t rx_hdr_done;
    size_t rx_len;     /* payload length of the matched message */
    uint64_t rx_discard; /* payload bytes left to drop */
    /* Encrypted stream (tp->encrypt): sealed records on their way out, and
     * ciphertext in / opened plaintext not yet consumed on the way in. The
     * sends whose bytes are all sealed complete once the buffer is written. */
    dc_tcp_crypt_t tx, rx;
    uint8_t *txb;                /* [TCP_TXB_LEN] */
    size_t tx_off, tx_len;
    uint8_t *rxb;                /* [TCP_RXB_LEN] ciphertext, rx_start..rx_end unread */
    size_t rx_start, rx_end;
    uint8_t *rxp;                /* [DC_TCP_REC_MAX] plaintext, rxp_off..rxp_len unread */
    size_t rxp_off, rxp_len;
} tcp_ep_t;

struct dc_transport {
    int rank, size;
    uint8_t secret[DC_AUTH_SECRET_LEN];
    int timeout_ms;
    int abort_fd; /* dc_bootstrap_t.abort_fd during set-up, else -1 */
    dc_store_t *store;
    int listen_fd;
    int epfd;
    tcp_ep_t *eps; /* [size], indexed by world rank */
    int *peers;    /* [npeers] ascending */
    int npeers;
    uint8_t *scratch;
    char addr[TCP_ADDR_LEN];
    tcp_hs_t *hs; /* [TCP_MAX_HANDSHAKES] accepted connections in their handshake */
    int nhs;
    int encrypt;             /* DCOMM_TCP_ENCRYPT */
    uint8_t *stage;          /* [DC_TCP_REC_MAX] a record gathered from several pieces */
    dc_status_t hs_fatal;    /* an authenticated peer disagrees on a setting */
    char hs_fatal_why[256];
};

/* ---- tcp_conn.c ---- */

/* Serves handshakes until `peer` (a lower rank) has a connection. */
dc_status_t dc_tcp_accept_until(dc_transport_t *tp, int peer, uint64_t deadline);
/* Connects to `peer` (a higher rank) and runs the client's handshake. */
dc_status_t dc_tcp_connect_to(dc_transport_t *tp, int peer, uint64_t deadline);
/* Drops every connection still in its handshake. */
void dc_tcp_hs_close_all(dc_transport_t *tp);

/* ---- tcp_data.c ---- */

/* Completes every request of a queue with status; returns how many. */
int dc_tcp_fail_queue(dc_request_t **head, dc_request_t **tail, dc_status_t status);
dc_status_t dc_tcp_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
dc_status_t dc_tcp_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
int dc_tcp_progress(dc_transport_t *tp);
dc_status_t dc_tcp_check(dc_transport_t *tp);

/* ---- tcp_crypt.c ---- */

/* The sealed bytes of an encrypted endpoint still to be written, as one iovec
 * in iov[0]: when the last ones are written, completes the sends they held
 * (counted in *events_p) and seals the next records. Returns 1, or 0 when
 * nothing is left to send. */
int dc_tcp_ep_sealed(dc_transport_t *tp, tcp_ep_t *ep, struct iovec *iov, int *events_p);
/* Encrypted counterpart of recv(): up to want bytes of the peer's plaintext.
 * A record that fits is opened straight into dst. Returns the bytes, 0 when
 * the peer closed, -1 with errno, or -2 when a record failed (dc_error_get()
 * says why; the caller then loses the endpoint with DCOMM_ERR_AUTH). */
ssize_t dc_tcp_ep_read_crypt(tcp_ep_t *ep, void *dst, size_t want);

#endif
