/*
 * What a rank needs from the launcher of its job: the job's store and its
 * event channel. Two kinds: dlaunch's rendezvous server, reached as a client
 * (rdv_client.c), and, for jobs a foreign launcher (mpirun) started, a store
 * rank 0 serves itself, found through the launcher's runtime (rdv_local.c).
 * Their wire protocol (rdv.h) is theirs and dlaunch's alone: the bootstrap
 * (core/bootstrap.c) sees only this header and store.h.
 */
#ifndef DC_JOB_STORE_H
#define DC_JOB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "status.h"
#include "store.h"

/* ---- dlaunch's rendezvous server, as a client ------------------------------- */

/* Connects to "host:port", authenticates with the job secret and returns a store
 * (set / get with timeout / add / close). timeout_ms bounds the connection and
 * handshake, and each later set/add (<= 0: 60 s). Thread-safe: one request at a
 * time per store (a waiting get holds the connection). A wrong secret gives
 * DCOMM_ERR_AUTH, an unreachable server DCOMM_ERR_TIMEOUT or _TRANSPORT. */
dc_status_t dc_rdv_client_open(const char *hostport, const uint8_t secret[DC_AUTH_SECRET_LEN],
                               int rank, int timeout_ms, dc_store_t **store_p);

/* The local IPv4 address of the client's socket, i.e. how this host reaches the
 * launcher's host ("127.0.0.1", "10.0.0.2"). Owned by the store. */
const char *dc_rdv_client_local_addr(dc_store_t *store);

/* A second authenticated connection on which the server pushes job events
 * ("rank 2 killed by signal 9 (Killed)"). *fd_p is non-blocking, for poll(); the
 * caller closes it. */
dc_status_t dc_rdv_events_open(const char *hostport, const uint8_t secret[DC_AUTH_SECRET_LEN],
                               int rank, int timeout_ms, int *fd_p);

/* Reads one pending event into msg (NUL-terminated, truncated to cap): 1 with a
 * message, 0 when none is pending, DCOMM_ERR_PEER_LOST when the launcher closed
 * the connection (or sent garbage). Never blocks. */
int dc_rdv_events_read(int fd, char *msg, size_t cap);

/* ---- A foreign launcher's job: rank 0 serves the store ----------------------- */

/* rank 0 serves the usual authenticated store from a thread of its own, and
 * the launcher's runtime (an MPI broadcast, handed in as a function) tells
 * every rank where it is and the job secret. */
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
