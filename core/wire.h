/*
 * Negotiation messages between ranks and the comm's rank 0: request lists up,
 * response lists down. Fixed little-endian layout, length-checked on decode so
 * a truncated or hostile message is an error, never an out-of-bounds read.
 */
#ifndef DC_WIRE_H
#define DC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "dc_coll.h"
#include "status.h"

#define DC_WIRE_NAME_MAX  256        /* including the NUL */
#define DC_WIRE_ERROR_MAX 1024       /* error text of a response, including the NUL */
#define DC_WIRE_MSG_MAX   (64u << 20) /* a larger message is refused */
#define DC_WIRE_MAGIC     0x44434d31u /* "DCM1" */
#define DC_WIRE_DIMS_MAX  8          /* dimensions a request carries */
#define DC_WIRE_NDIMS_MAX 64         /* a tensor of more dimensions is refused */
#define DC_WIRE_NDIMS_UNKNOWN 0xffu  /* on the wire: the caller gave no shape */
#define DC_WIRE_WAITS_MAX 16384      /* entries of a wait section (a rank with more
                                        pending tensors does not report its waits) */


/* Where a request's buffers live (dc_wire_req_t.device): set by the API when
 * the cuda module is loaded. NOBUF: this rank has no buffer (nothing to send),
 * which agrees with either kind. */
enum { DC_WIRE_HOST = 0, DC_WIRE_DEVICE = 1, DC_WIRE_NOBUF = 2 };

/* What a rank asks for; identical on every rank for one tensor (else mismatch). */
typedef struct dc_wire_req {
    char name[DC_WIRE_NAME_MAX];
    uint8_t coll;
    uint8_t dtype;
    uint8_t op;
    uint8_t device;       /* DC_WIRE_HOST, _DEVICE or _NOBUF */
    int32_t root;
    int32_t comm;
    uint64_t count;
    /* The tensor's shape, when the caller gave one (dcomm_set_shape; a zeroed
     * request has none): ndims, then its first dimensions; past
     * DC_WIRE_DIMS_MAX the last entry holds the product of the remaining ones. */
    uint8_t has_shape;
    uint8_t ndims;
    uint64_t dims[DC_WIRE_DIMS_MAX];
} dc_wire_req_t;

/* Whether a and b have the same shape from dimension `from` on (1: the rows
 * of an allgather or alltoall may differ in number); unknown shapes match
 * only each other. */
int dc_wire_same_shape(const dc_wire_req_t *a, const dc_wire_req_t *b, int from);
/* "[2, 3, 4]", or "an unknown shape". */
void dc_wire_shape_text(const dc_wire_req_t *req, char *buf, size_t cap);
/* The dimension a shape check starts from for a collective (see same_shape). */
int dc_wire_shape_from(int coll);

/* Flags of a request list (rank -> rank 0) and of a response list (back). */
enum {
    DC_WIRE_FLAG_SHUTDOWN = 1u << 0, /* up: this rank called dcomm_shutdown;
                                        down: every rank did, stop after this list */
    DC_WIRE_FLAG_IDLE = 1u << 1,     /* down: nothing pending anywhere, go idle */
    DC_WIRE_FLAG_PENDING = 1u << 2,  /* up: this rank has requests not yet executed */
    DC_WIRE_FLAG_FATAL = 1u << 3,    /* down: the first entry is an error that ends the
                                        job on every rank (stall shutdown) */
    DC_WIRE_FLAG_WAITING = 1u << 4,  /* up: a user thread of this rank is blocked in a
                                        wait; a wait section follows the requests */
    DC_WIRE_FLAG_DEADLOCK = 1u << 5, /* down: the list fails a deadlock; its error entries
                                        may name tensors a rank never submitted (that
                                        rank skips them) */
};

/* Down: bits 8.. of the flags carry the rank that asked for shutdown. */
#define DC_WIRE_FLAG_RANK(r)     ((uint32_t)(r) << 8)
#define DC_WIRE_FLAG_GET_RANK(f) ((int)((f) >> 8))

typedef struct dc_wire_resp {
    dc_wire_req_t req;
    int32_t error;                   /* 0, or a negative dcomm status for this tensor */
    char text[DC_WIRE_ERROR_MAX];    /* why, when error != 0 */
    /* allgather: elements of each comm rank. Encode: ncounts entries of counts.
     * Decode: counts points to counts_cap entries of the caller's; more is an
     * error (malformed). */
    uint32_t ncounts, counts_cap;
    uint64_t *counts;
} dc_wire_resp_t;

/* A growable byte buffer, reused across cycles (no allocation in steady state). */
typedef struct dc_wire_buf {
    uint8_t *data;
    size_t len, cap;
} dc_wire_buf_t;

void dc_wire_buf_reset(dc_wire_buf_t *buf);
void dc_wire_buf_free(dc_wire_buf_t *buf);
dc_status_t dc_wire_buf_reserve(dc_wire_buf_t *buf, size_t cap);

/* Request list: header then each request. */
dc_status_t dc_wire_reqs_encode(dc_wire_buf_t *buf, uint32_t flags, const dc_wire_req_t *const *reqs,
                                uint32_t nreqs);
/* Decodes the header; *nreqs_p requests follow, read one by one with next. */
typedef struct dc_wire_reader {
    const uint8_t *pos, *end;
} dc_wire_reader_t;

dc_status_t dc_wire_reqs_begin(dc_wire_reader_t *rd, const void *data, size_t len,
                               uint32_t *flags_p, uint32_t *nreqs_p);
dc_status_t dc_wire_req_next(dc_wire_reader_t *rd, dc_wire_req_t *req);

/* The wait section of a request list with DC_WIRE_FLAG_WAITING, after its
 * requests: for how long (ms) the rank's wait state has not changed, then every
 * tensor the rank has submitted and not yet executed, each marked when a user
 * thread waits on it (waited: 0 or 1). Layout: age_ms u32, n u32, then n times
 * a request and waited u8. */
dc_status_t dc_wire_waits_encode(dc_wire_buf_t *buf, uint32_t age_ms,
                                 const dc_wire_req_t *const *reqs, const uint8_t *waited,
                                 uint32_t n);
/* Read after the list's requests: the section's header (n at most
 * DC_WIRE_WAITS_MAX), then n entries. */
dc_status_t dc_wire_waits_begin(dc_wire_reader_t *rd, uint32_t *age_ms_p, uint32_t *n_p);
dc_status_t dc_wire_wait_next(dc_wire_reader_t *rd, dc_wire_req_t *req, uint8_t *waited_p);

/* Response list, same scheme. */
dc_status_t dc_wire_resps_begin_encode(dc_wire_buf_t *buf, uint32_t flags);
/* Rewrites the flags of an encoded list (known only after its entries). */
void dc_wire_set_flags(dc_wire_buf_t *buf, uint32_t flags);
dc_status_t dc_wire_resp_append(dc_wire_buf_t *buf, const dc_wire_resp_t *resp);
dc_status_t dc_wire_resps_begin(dc_wire_reader_t *rd, const void *data, size_t len,
                                uint32_t *flags_p, uint32_t *nresps_p);
dc_status_t dc_wire_resp_next(dc_wire_reader_t *rd, dc_wire_resp_t *resp);

#endif
