/* A rendezvous store for jobs started by a foreign launcher (mpirun): rank 0
 * serves the usual authenticated store from a thread of its own, and the
 * launcher's runtime (an MPI broadcast, handed in as a function) tells every
 * rank where it is and the job secret. */
#ifndef DC_RDV_LOCAL_H
#define DC_RDV_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "status.h"
#include "store.h"

/* Broadcast of len bytes from root to every rank; collective. */
typedef dc_status_t (*dc_bcast_fn_t)(void *buf, size_t len, int root);

/* Collective over all ranks. host_id says which host this rank is on (ranks on
 * rank 0's host reach it over loopback); timeout_ms bounds the connection.
 * Fills secret (chosen by rank 0) and returns a store whose close() also stops
 * rank 0's server. */
dc_status_t dc_rdv_local_open(int rank, dc_bcast_fn_t bcast, const char *host_id, int timeout_ms,
                              uint8_t secret[DC_AUTH_SECRET_LEN], dc_store_t **store_p);

/* This rank's IPv4 address as seen by the server, or NULL when store is not
 * one of these. */
const char *dc_rdv_local_addr(dc_store_t *store);

#endif
