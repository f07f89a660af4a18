/*
 * The shm transport's state, shared by its files and by no one else: shm.c
 * (the segment, mapping the peers' segments, open, connect, close, the ops
 * table) and shm_data.c (moving messages through the rings, progress, and
 * peers that fail or are gone). The segment's layout is in shm.h.
 */
#ifndef DC_SHM_INT_H
#define DC_SHM_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm.h"
#include "transport.h"

typedef struct shm_ep {
    dc_endpoint_t super;
    pid_t pid;
    int pidfd; /* -1: fall back to kill(pid, 0) */
    dc_shm_seg_t *seg; /* the peer's segment (ours for a self peer) */
    size_t seg_size;
    dc_shm_ring_t *tx; /* our ring in the peer's segment */
    uint8_t *tx_data;
    uint64_t tx_mask;
    uint64_t tx_head; /* producer's own copy */
    dc_shm_ring_t *rx; /* the peer's ring in our segment */
    uint8_t *rx_data;
    uint64_t rx_mask;
    uint64_t rx_tail; /* consumer's own copy */
    /* sends: [sends, send_cur) are fully in the ring, awaiting completion */
    dc_request_t *sends, *sends_tail, *send_cur;
    int send_hdr_done; /* send_cur's header is in the ring */
    dc_request_t *recvs, *recvs_tail;
    /* the inbound message being consumed */
    int rx_active;
    int rx_discard; /* its receive failed: drop the payload */
    uint64_t rx_len, rx_left;
    int connected;
    int gone; /* the peer's process has ended: only what it left in our ring remains */
    int lost; /* ... and that failed requests or was not a clean close */
    int closed; /* close() failed everything */
    int failed; /* the peer declared a failure (fail()) while alive: why says what */
    char why[DC_SHM_WHY_MAX];
} shm_ep_t;

struct dc_transport {
    int rank;
    int timeout_ms;
    dc_shm_seg_t *seg;
    size_t seg_size;
    int memfd;
    int npeers;
    shm_ep_t *eps; /* [npeers], in boot->peers order */
};

/* ---- shm_data.c ---- */

dc_status_t dc_shm_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
dc_status_t dc_shm_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                         dc_request_t *req);
int dc_shm_progress(dc_transport_t *tp);
dc_status_t dc_shm_check(dc_transport_t *tp);
void dc_shm_fail(dc_transport_t *tp, const char *why);
/* Completes every request still queued on ep with status; returns how many. */
int dc_shm_ep_fail(shm_ep_t *ep, dc_status_t status);

#endif
