/*
 * The one numbering of the collectives, shared by every layer: the wire
 * (core/wire.h), the selector (collectives/select.h) and the transports'
 * native collectives (transports/transport.h). The data-moving collectives
 * come first (DC_COLL_ALLREDUCE .. DC_COLL_BARRIER: the selector's range);
 * the others only negotiate.
 */
#ifndef DC_COLL_KIND_H
#define DC_COLL_KIND_H

typedef enum dc_coll {
    DC_COLL_ALLREDUCE = 0,
    DC_COLL_BROADCAST,
    DC_COLL_ALLGATHER,
    DC_COLL_ALLTOALL,
    DC_COLL_REDUCESCATTER,
    DC_COLL_BARRIER,
    DC_COLL_JOIN,
    DC_COLL_COMM_CREATE,  /* internal: every rank agrees on a new comm (count: list hash) */
    DC_COLL_COMM_DESTROY, /* internal: every rank agrees to drop a comm */
    DC_COLL_COUNT
} dc_coll_t;

/* Collectives an algorithm runs (DC_COLL_ALLREDUCE .. DC_COLL_BARRIER). */
#define DC_COLL_NALGO (DC_COLL_BARRIER + 1)

/* "allreduce", "broadcast" ... (DCOMM_TUNE's names too); "unknown" out of range. */
const char *dc_coll_name(int coll);

#endif
